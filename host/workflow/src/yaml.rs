//! YAML text -> a spanned syntax tree, through serde-saphyr.
//!
//! This is the only module that knows the YAML parser; everything else works
//! on [`Node`]s, so the parser can be swapped.

use std::fmt;
use std::sync::Arc;

use miette::SourceSpan;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Budget, Location, Options, Spanned};

use crate::diag::{Diagnostic, SourceFile};

/// Workflow files larger than this are refused before parsing.
pub(crate) const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// Most YAML nodes (scalars, lists, mappings, after alias expansion).
pub(crate) const MAX_NODES: usize = 100_000;

/// A YAML value with the byte span of its text in the file.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) value: Value,
    /// The node's own token (a scalar; `{`/`[` or the first entry of a collection).
    pub(crate) span: SourceSpan,
    /// From the node's start to the end of its last descendant.
    pub(crate) full: SourceSpan,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub(crate) fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// The span to point at when something is missing inside this node:
    /// for a mapping its first key (or `{`), otherwise the node itself.
    pub(crate) fn head(&self) -> SourceSpan {
        match &self.value {
            Value::Map(entries) => match entries.first() {
                Some((k, _)) if k.span.offset() <= self.span.offset() => k.span,
                _ => self.span,
            },
            _ => self.span,
        }
    }

    /// The span to underline for a problem with the whole node: all of it
    /// when it fits on one line, else its first token (or first key).
    pub(crate) fn label_span(&self, text: &str) -> SourceSpan {
        let (a, b) = (self.full.offset(), self.full.offset() + self.full.len());
        if text.get(a..b).is_some_and(|s| !s.contains('\n')) && !self.full.is_empty() {
            return self.full;
        }
        self.head()
    }

    /// The value as JSON (keys rendered as strings).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_text(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// A key as text (strings as they are, other scalars rendered).
    pub(crate) fn key_text(&self) -> String {
        match &self.value {
            Value::Str(s) => s.clone(),
            Value::Null => "null".to_owned(),
            _ => self.to_json().to_string(),
        }
    }

    /// Whether any string inside contains `${{`.
    pub(crate) fn has_expr(&self) -> bool {
        match &self.value {
            Value::Str(s) => s.contains("${{"),
            Value::Seq(items) => items.iter().any(Node::has_expr),
            Value::Map(entries) => entries.iter().any(|(_, v)| v.has_expr()),
            _ => false,
        }
    }
}

/// Parse the file into a tree, or the one diagnostic for its syntax error.
pub(crate) fn load(source: &Arc<SourceFile>) -> Result<Node, Diagnostic> {
    let text = source.text.as_str();
    if text.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::new(
            source,
            "too-large",
            SourceSpan::new(0.into(), 0),
            format!(
                "the workflow file is too large ({} bytes; at most {MAX_FILE_BYTES})",
                text.len()
            ),
            "this file",
        )
        .with_help("split the work into several workflow files"));
    }
    let mut options = Options::default();
    options.strict_booleans = true;
    options.with_snippet = false;
    let mut budget = Budget::default();
    budget.max_nodes = MAX_NODES;
    budget.max_events = 4 * MAX_NODES;
    budget.max_depth = 64;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_documents = 2;
    budget.max_total_scalar_bytes = MAX_FILE_BYTES;
    options.budget = Some(budget);
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options) {
        Ok(raw) => Ok(convert(text, raw)),
        Err(e) => Err(syntax_diagnostic(source, &e)),
    }
}

fn syntax_diagnostic(source: &Arc<SourceFile>, err: &serde_saphyr::Error) -> Diagnostic {
    use serde_saphyr::{Error as E, MessageFormatter, UserMessageFormatter};
    let mut inner = err;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let text = &source.text;
    let span = err
        .location()
        .map_or(SourceSpan::new(text.len().into(), 0), |l| span_of(text, l));
    let raw = UserMessageFormatter.format_message(inner);
    let message: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match inner {
        E::Budget { .. }
        | E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => Diagnostic::new(
            source,
            "too-large",
            span,
            "the workflow is too large or expands too much",
            "expanding this went over the limit",
        )
        .with_help(format!(
            "workflow files may hold at most {MAX_NODES} values after expanding aliases, nested at most 64 deep \
             ({}); avoid deeply nested anchors and aliases",
            message.trim_start_matches("YAML document too large or too complex: ")
        )),
        E::DuplicateMappingKey { key, .. } => Diagnostic::new(
            source,
            "duplicate-key",
            span,
            match key {
                Some(k) => format!("duplicate key `{k}`"),
                None => "duplicate key".to_owned(),
            },
            "this key appears earlier in the same mapping",
        )
        .with_help("remove one of the two entries"),
        E::MultipleDocuments { .. } => Diagnostic::new(
            source,
            "yaml-syntax",
            span,
            "a workflow file holds exactly one YAML document",
            "a second document starts here",
        )
        .with_help("remove the `---` separator, or put the second workflow in its own file"),
        _ => Diagnostic::new(
            source,
            "yaml-syntax",
            span,
            format!("invalid YAML: {message}"),
            message,
        )
        .with_help("fix the YAML syntax; strings that contain `: `, ` #`, `{` or `[` may need quotes"),
    }
}

/// Byte span of a serde-saphyr location (character-based when the parser had no byte offsets).
pub(crate) fn span_of(text: &str, loc: Location) -> SourceSpan {
    let s = loc.span();
    if let (Some(off), Some(len)) = (s.byte_offset(), s.byte_len())
        && let (Ok(off), Ok(len)) = (usize::try_from(off), usize::try_from(len))
        && off.saturating_add(len) <= text.len()
    {
        return SourceSpan::new(off.into(), len);
    }
    let char_off = usize::try_from(s.offset()).unwrap_or(usize::MAX);
    let char_len = usize::try_from(s.len()).unwrap_or(0);
    let mut it = text.char_indices().map(|(i, _)| i).chain([text.len()]);
    let start = it.nth(char_off).unwrap_or(text.len());
    let end = if char_len == 0 {
        start
    } else {
        it.nth(char_len - 1).unwrap_or(text.len())
    };
    SourceSpan::new(start.into(), end.saturating_sub(start))
}

fn convert(text: &str, raw: Spanned<Raw>) -> Node {
    let span = span_of(text, raw.referenced);
    let start = span.offset();
    let mut end = start + span.len();
    let value = match raw.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(i) => Value::Int(i),
        Raw::UInt(u) => Value::UInt(u),
        Raw::Float(f) => Value::Float(f),
        Raw::Str(s) => Value::Str(s),
        Raw::Seq(items) => Value::Seq(
            items
                .into_iter()
                .map(|i| {
                    let n = convert(text, i);
                    end = end.max(n.full.offset() + n.full.len());
                    n
                })
                .collect(),
        ),
        Raw::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let k = convert(text, k);
                    let v = convert(text, v);
                    end = end.max(k.full.offset() + k.full.len());
                    end = end.max(v.full.offset() + v.full.len());
                    (k, v)
                })
                .collect(),
        ),
    };
    let opener = text.get(start..).and_then(|t| t.chars().next());
    let closer = match (opener, &value) {
        (Some('['), Value::Seq(_)) => Some(']'),
        (Some('{'), Value::Map(_)) => Some('}'),
        _ => None,
    };
    if let Some(closer) = closer
        && let Some(rest) = text.get(end..)
    {
        let skipped = rest
            .char_indices()
            .find(|(_, c)| !(c.is_whitespace() || *c == ','));
        if let Some((i, c)) = skipped
            && c == closer
        {
            end += i + 1;
        }
    }
    Node {
        value,
        span,
        full: SourceSpan::new(start.into(), end - start),
    }
}

/// What serde-saphyr deserializes into: any YAML value, every node spanned.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        i64::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        u64::try_from(v)
            .map(Raw::UInt)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Raw, E> {
        Ok(Raw::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = a.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = a.next_key::<Spanned<Raw>>()? {
            let v = a.next_value::<Spanned<Raw>>()?;
            entries.push((k, v));
        }
        Ok(Raw::Map(entries))
    }
}

/// Maps byte ranges of a string value back to the file, so that problems
/// inside a string (an expression) can be pointed at precisely.
#[derive(Debug, Clone)]
pub(crate) struct SpanMap {
    /// For each byte index of the value (and one past the end), the byte
    /// offset in the file; `None` when the value cannot be aligned with its
    /// source text (escapes, folding), then the whole value span is used.
    offsets: Option<Vec<usize>>,
    whole: SourceSpan,
}

impl SpanMap {
    /// A map for a string value whose source token is `span` in `text`.
    pub(crate) fn new(text: &str, span: SourceSpan, value: &str) -> SpanMap {
        SpanMap {
            offsets: align(text, span, value),
            whole: span,
        }
    }

    /// A map for text that is not in a file: offsets are positions in the text.
    pub(crate) fn identity(value: &str) -> SpanMap {
        SpanMap {
            offsets: Some((0..=value.len()).collect()),
            whole: SourceSpan::new(0.into(), value.len()),
        }
    }

    /// The file span of value bytes `start..end`.
    pub(crate) fn span(&self, start: usize, end: usize) -> SourceSpan {
        match &self.offsets {
            Some(o) => {
                let (Some(&a), Some(&b)) = (o.get(start), o.get(end.max(start))) else {
                    return self.whole;
                };
                SourceSpan::new(a.into(), b.saturating_sub(a))
            }
            None => self.whole,
        }
    }
}

fn align(text: &str, span: SourceSpan, value: &str) -> Option<Vec<usize>> {
    let start = span.offset();
    let raw = text.get(start..start + span.len())?;
    let mut offsets = vec![0usize; value.len() + 1];
    let mut raw_chars = raw.char_indices().peekable();
    // A quoted scalar's opening quote is never part of the value.
    if let Some(&(_, q)) = raw_chars.peek()
        && (q == '"' || q == '\'')
    {
        raw_chars.next();
    }
    let mut after = start;
    for (vi, vc) in value.char_indices() {
        loop {
            let (ri, rc) = raw_chars.next()?;
            if rc == vc {
                for b in 0..vc.len_utf8() {
                    offsets[vi + b] = start + ri + b;
                }
                after = start + ri + rc.len_utf8();
                break;
            }
        }
    }
    // Whatever is left must be closing quotes or whitespace, else we lost track.
    if raw_chars.any(|(_, c)| !(c.is_whitespace() || c == '"' || c == '\'')) {
        return None;
    }
    offsets[value.len()] = after;
    Some(offsets)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn first_value(text: &str) -> Node {
        let src = SourceFile::new("t.yaml", text);
        let root = load(&src).expect("parses");
        let Value::Map(entries) = root.value else {
            panic!("not a map")
        };
        entries.into_iter().next().expect("an entry").1
    }

    /// The file text at the span that `value[start..end]` maps to.
    fn mapped(text: &str, start: usize, end: usize) -> String {
        let node = first_value(text);
        let value = node.as_str().expect("a string").to_owned();
        let span = SpanMap::new(text, node.span, &value).span(start, end);
        text[span.offset()..span.offset() + span.len()].to_owned()
    }

    #[test]
    fn spans_inside_strings() {
        // plain, single- and double-quoted: exact positions
        assert_eq!(mapped("k: ab ${{ x }}\n", 3, 11), "${{ x }}");
        assert_eq!(mapped("k: 'it''s ${{ x }}'\n", 5, 13), "${{ x }}");
        assert_eq!(mapped("k: \"a\\\"b ${{ x }}\"\n", 4, 12), "${{ x }}");
        // non-ASCII before the expression
        assert_eq!(mapped("k: \"é ${{ x }}\"\n", 3, 11), "${{ x }}");
        // folded block scalars are followed across lines
        assert_eq!(mapped("k: >-\n  a\n  ${{ x }}\n", 2, 10), "${{ x }}");
    }

    #[test]
    fn escapes_that_cannot_be_aligned_use_the_whole_value() {
        let text = "k: \"a\\tb ${{ x }}\"\n";
        let node = first_value(text);
        let value = node.as_str().expect("a string").to_owned();
        assert_eq!(value, "a\tb ${{ x }}");
        let span = SpanMap::new(text, node.span, &value).span(5, 13);
        assert_eq!(span, node.span);
    }

    #[test]
    fn spans_of_collections_cover_their_brackets() {
        let text = "k: [a, b]\nm: { x: 1 }\n";
        let src = SourceFile::new("t.yaml", text);
        let root = load(&src).expect("parses");
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        let at = |n: &Node| text[n.full.offset()..n.full.offset() + n.full.len()].to_owned();
        assert_eq!(at(&entries[0].1), "[a, b]");
        assert_eq!(at(&entries[1].1), "{ x: 1 }");
        assert_eq!(entries[1].1.label_span(text), entries[1].1.full);
    }

    #[test]
    fn syntax_errors_are_located() {
        let src = SourceFile::new("t.yaml", "a: [1, 2\n");
        let d = load(&src).expect_err("invalid");
        assert_eq!(d.code, "lifeboat::workflow::yaml-syntax");
        assert_eq!(d.line_col(), (1, 4));
    }
}
