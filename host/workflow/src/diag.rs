//! Located diagnostics about a workflow file, rendered with miette.

use std::fmt;
use std::sync::Arc;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents,
    SourceCode, SourceSpan, SpanContents,
};

/// A workflow file's text and the name the user gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path as the user gave it (shown in diagnostics).
    pub name: String,
    /// The whole text of the file.
    pub text: String,
}

impl SourceFile {
    /// A shared source file.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Arc<SourceFile> {
        Arc::new(SourceFile {
            name: name.into(),
            text: text.into(),
        })
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, col)
    }
}

impl SourceCode for SourceFile {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let inner = self
            .text
            .read_span(span, context_lines_before, context_lines_after)?;
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            inner.column(),
            inner.line_count(),
        )))
    }
}

/// One problem in a workflow file, pointing at the offending value.
#[derive(Clone)]
pub struct Diagnostic {
    /// Stable code, e.g. `lifeboat::workflow::unknown-step`.
    pub code: String,
    /// What is wrong.
    pub message: String,
    /// Where (byte offsets in the file).
    pub span: SourceSpan,
    /// Text of the label under the span.
    pub label: String,
    /// How to fix it.
    pub help: Option<String>,
    source: Arc<SourceFile>,
}

impl Diagnostic {
    /// A diagnostic in `source`. `code` is the part after `lifeboat::workflow::`
    /// (a full code starting with `lifeboat::` is kept as is).
    pub fn new(
        source: &Arc<SourceFile>,
        code: &str,
        span: SourceSpan,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> Diagnostic {
        let code = if code.starts_with("lifeboat::") {
            code.to_owned()
        } else {
            format!("lifeboat::workflow::{code}")
        };
        Diagnostic {
            code,
            message: message.into(),
            span: clamp(span, &source.text),
            label: label.into(),
            help: None,
            source: Arc::clone(source),
        }
    }

    /// The same diagnostic with a help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        let help = help.into();
        self.help = if help.is_empty() { None } else { Some(help) };
        self
    }

    /// The file this diagnostic is about.
    pub fn source(&self) -> &Arc<SourceFile> {
        &self.source
    }

    /// 1-based line and column of the start of the span.
    pub fn line_col(&self) -> (usize, usize) {
        self.source.line_col(self.span.offset())
    }

    /// Deterministic plain-text rendering of this one diagnostic.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if handler().render_report(&mut out, self).is_err() {
            let (line, col) = self.line_col();
            out = format!(
                "{}: {} ({}:{line}:{col})\n",
                self.code, self.message, self.source.name
            );
        }
        out
    }
}

/// Keep a span inside the text, on character boundaries, and at least one
/// character wide when the text allows it (miette draws empty spans poorly).
fn clamp(span: SourceSpan, text: &str) -> SourceSpan {
    let mut start = span.offset().min(text.len());
    while start > 0 && !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (span.offset() + span.len()).clamp(start, text.len());
    while end < text.len() && !text.is_char_boundary(end) {
        end += 1;
    }
    if end == start
        && let Some(c) = text.get(start..).and_then(|s| s.chars().next())
        && c != '\n'
    {
        end = start + c.len_utf8();
    }
    SourceSpan::new(start.into(), end - start)
}

fn handler() -> GraphicalReportHandler {
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .with_links(false)
        .with_urls(false)
        .with_context_lines(1)
        .tab_width(4)
}

impl fmt::Debug for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.line_col();
        f.debug_struct("Diagnostic")
            .field("code", &self.code)
            .field("message", &self.message)
            .field("at", &format_args!("{}:{line}:{col}", self.source.name))
            .field("span", &self.span)
            .field("label", &self.label)
            .field("help", &self.help)
            .finish()
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(&self.code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display + 'a>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&*self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(
            LabeledSpan::new_primary_with_span(Some(self.label.clone()), self.span),
        )))
    }
}

/// All problems found in one workflow file, sorted by position.
///
/// As a [`miette::Diagnostic`], the first problem is the main report and the
/// others are `related()`. [`Diagnostics::render`] gives deterministic plain
/// text (no colours, no terminal detection, width 100).
#[derive(Clone)]
pub struct Diagnostics {
    source: Arc<SourceFile>,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Problems in `source`, sorted by position (stable for equal positions).
    /// Exact duplicates are dropped.
    pub fn new(source: &Arc<SourceFile>, mut items: Vec<Diagnostic>) -> Diagnostics {
        items.sort_by_key(|d| (d.span.offset(), d.span.len()));
        items.dedup_by(|a, b| a.span == b.span && a.code == b.code && a.message == b.message);
        Diagnostics {
            source: Arc::clone(source),
            items,
        }
    }

    /// The file the problems are in.
    pub fn source(&self) -> &Arc<SourceFile> {
        &self.source
    }

    /// The problems, sorted by position.
    pub fn items(&self) -> &[Diagnostic] {
        &self.items
    }

    /// How many problems.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none (never true for an `Err` of this crate).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The codes of all problems, in order (handy in tests).
    pub fn codes(&self) -> Vec<&str> {
        self.items.iter().map(|d| d.code.as_str()).collect()
    }

    /// Deterministic plain text: every problem with `file:line:column`, the
    /// snippet, the labelled span and the help, then a count.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.items {
            out.push_str(&d.render());
            out.push('\n');
        }
        let n = self.items.len();
        out.push_str(&format!(
            "{n} problem{} in {}\n",
            if n == 1 { "" } else { "s" },
            self.source.name
        ));
        out
    }
}

impl fmt::Debug for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Diagnostics")
            .field("file", &self.source.name)
            .field("items", &self.items)
            .finish()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.items.as_slice() {
            [] => write!(f, "no problems in {}", self.source.name),
            [one] => f.write_str(&one.message),
            [first, rest @ ..] => write!(
                f,
                "{} (and {} more problem{})",
                first.message,
                rest.len(),
                if rest.len() == 1 { "" } else { "s" }
            ),
        }
    }
}

impl std::error::Error for Diagnostics {}

impl miette::Diagnostic for Diagnostics {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.items.first().and_then(miette::Diagnostic::code)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.items.first().and_then(miette::Diagnostic::help)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&*self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.items.first().and_then(miette::Diagnostic::labels)
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        if self.items.len() <= 1 {
            return None;
        }
        Some(Box::new(
            self.items[1..].iter().map(|d| d as &dyn miette::Diagnostic),
        ))
    }
}

/// Collects diagnostics while checking a file.
pub(crate) struct Sink {
    pub(crate) source: Arc<SourceFile>,
    pub(crate) items: Vec<Diagnostic>,
}

impl Sink {
    pub(crate) fn new(source: &Arc<SourceFile>) -> Sink {
        Sink {
            source: Arc::clone(source),
            items: Vec::new(),
        }
    }

    /// Add a problem; returns it for adding help.
    pub(crate) fn error(
        &mut self,
        code: &str,
        span: SourceSpan,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> &mut Diagnostic {
        self.items
            .push(Diagnostic::new(&self.source, code, span, message, label));
        let last = self.items.len() - 1;
        &mut self.items[last]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn finish(self) -> Diagnostics {
        Diagnostics::new(&self.source, self.items)
    }
}

impl Diagnostic {
    /// Set the help line in place (for use through [`Sink::error`]).
    pub(crate) fn set_help(&mut self, help: impl Into<String>) -> &mut Diagnostic {
        let help = help.into();
        self.help = if help.is_empty() { None } else { Some(help) };
        self
    }
}
