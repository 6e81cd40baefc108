//! Values that may hold `${{ }}` expressions.

use indexmap::IndexMap;
use serde_json::Value;

use crate::error::{EvalError, WorkflowError};
use crate::expr::{Expr, Ref, Scope, SyntaxError, Val, compact, parse_in};
use crate::yaml::{Node, SpanMap, Value as Y};

/// A value from the workflow file that may contain expressions.
///
/// Values without any `${{` are [`Template::Literal`]; a string that is exactly
/// one `${{ expr }}` is [`Template::Expr`] and keeps the expression's type; any
/// other string with expressions is [`Template::Interpolate`]; lists and
/// mappings containing expressions are [`Template::List`] / [`Template::Object`].
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    Literal(Value),
    Expr(Expr),
    Interpolate(Vec<Part>),
    List(Vec<Template>),
    Object(IndexMap<String, Template>),
}

/// A piece of an interpolated string.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Expr(Expr),
}

impl Template {
    /// Parse a stand-alone string (as it would appear in a workflow file).
    /// Spans are byte offsets in `text`.
    pub fn parse_str(text: &str) -> Result<Template, WorkflowError> {
        let map = SpanMap::identity(text);
        parse_string(text, &map).map_err(|mut errs| {
            let e = errs.remove(0);
            WorkflowError::Syntax {
                message: e.message,
                offset: e.offset,
            }
        })
    }

    /// Every reference inside, in order (see [`Expr::references`]).
    pub fn references(&self) -> Vec<Vec<String>> {
        self.refs().iter().map(|r| r.full()).collect()
    }

    pub(crate) fn refs(&self) -> Vec<&Ref> {
        let mut out = Vec::new();
        self.visit_exprs(&mut |e| out.extend(e.refs()));
        out
    }

    /// Call `f` on every expression inside, in order.
    pub fn visit_exprs<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        match self {
            Template::Literal(_) => {}
            Template::Expr(e) => f(e),
            Template::Interpolate(parts) => {
                for p in parts {
                    if let Part::Expr(e) = p {
                        f(e);
                    }
                }
            }
            Template::List(items) => {
                for t in items {
                    t.visit_exprs(f);
                }
            }
            Template::Object(map) => {
                for t in map.values() {
                    t.visit_exprs(f);
                }
            }
        }
    }

    /// The literal value, if the template has no expressions.
    pub fn as_literal(&self) -> Option<&Value> {
        match self {
            Template::Literal(v) => Some(v),
            _ => None,
        }
    }

    /// Evaluate. Interpolated parts that are not strings are rendered as
    /// compact JSON. If anything inside is unknown, the whole result is
    /// [`Val::Unknown`] carrying the first unknown reference; errors win over
    /// unknowns.
    pub fn eval(&self, scope: &dyn Scope) -> Result<Val, EvalError> {
        let mut unknown = None;
        let v = self.eval_inner(scope, &mut unknown)?;
        Ok(match unknown {
            Some(u) => Val::Unknown(u),
            None => Val::Known(v),
        })
    }

    fn eval_inner(
        &self,
        scope: &dyn Scope,
        unknown: &mut Option<String>,
    ) -> Result<Value, EvalError> {
        let take = |v: Val, unknown: &mut Option<String>| match v {
            Val::Known(v) => v,
            Val::Unknown(u) => {
                unknown.get_or_insert(u);
                Value::Null
            }
        };
        Ok(match self {
            Template::Literal(v) => v.clone(),
            Template::Expr(e) => take(e.eval(scope)?, unknown),
            Template::Interpolate(parts) => {
                let mut s = String::new();
                for p in parts {
                    match p {
                        Part::Text(t) => s.push_str(t),
                        Part::Expr(e) => match take(e.eval(scope)?, unknown) {
                            Value::String(v) => s.push_str(&v),
                            other => s.push_str(&compact(&other)),
                        },
                    }
                }
                Value::String(s)
            }
            Template::List(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.eval_inner(scope, unknown))
                    .collect::<Result<_, _>>()?,
            ),
            Template::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, t)| Ok((k.clone(), t.eval_inner(scope, unknown)?)))
                    .collect::<Result<_, EvalError>>()?,
            ),
        })
    }

    /// The template as it would be written in YAML (expressions as
    /// `${{ … }}` strings).
    pub fn to_source(&self) -> Value {
        match self {
            Template::Literal(v) => v.clone(),
            Template::Expr(e) => Value::String(e.to_string()),
            Template::Interpolate(parts) => {
                let mut s = String::new();
                for p in parts {
                    match p {
                        Part::Text(t) => s.push_str(&t.replace("${{", "$${{")),
                        Part::Expr(e) => s.push_str(&e.to_string()),
                    }
                }
                Value::String(s)
            }
            Template::List(items) => Value::Array(items.iter().map(Template::to_source).collect()),
            Template::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, t)| (k.clone(), t.to_source()))
                    .collect(),
            ),
        }
    }
}

impl serde::Serialize for Template {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_source().serialize(s)
    }
}

/// Build a template from a YAML node; collects every expression syntax error.
pub(crate) fn from_node(text: &str, node: &Node) -> Result<Template, Vec<SyntaxError>> {
    if !node.has_expr() {
        return Ok(Template::Literal(node.to_json()));
    }
    match &node.value {
        Y::Str(s) => parse_string(s, &SpanMap::new(text, node.span, s)),
        Y::Seq(items) => {
            let mut errs = Vec::new();
            let mut out = Vec::new();
            for i in items {
                match from_node(text, i) {
                    Ok(t) => out.push(t),
                    Err(e) => errs.extend(e),
                }
            }
            if errs.is_empty() {
                Ok(Template::List(out))
            } else {
                Err(errs)
            }
        }
        Y::Map(entries) => {
            let mut errs = Vec::new();
            let mut out = IndexMap::new();
            for (k, v) in entries {
                match from_node(text, v) {
                    Ok(t) => {
                        out.insert(k.key_text(), t);
                    }
                    Err(e) => errs.extend(e),
                }
            }
            if errs.is_empty() {
                Ok(Template::Object(out))
            } else {
                Err(errs)
            }
        }
        _ => Ok(Template::Literal(node.to_json())),
    }
}

/// Split a string into text and `${{ }}` parts. `$${{` is a literal `${{`.
pub(crate) fn parse_string(s: &str, map: &SpanMap) -> Result<Template, Vec<SyntaxError>> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut errs = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        if rest.starts_with("$${{") {
            text.push_str("${{");
            i += 4;
            continue;
        }
        if rest.starts_with("${{") {
            let open = i;
            let inner_start = i + 3;
            match find_close(s, inner_start) {
                Some(close) => {
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    match parse_in(&s[inner_start..close], inner_start, map) {
                        Ok(e) => parts.push(Part::Expr(e)),
                        Err(e) => errs.push(e),
                    }
                    i = close + 2;
                }
                None if s[inner_start..].contains("}}") => {
                    // The `}}` is inside an unclosed string literal: let the
                    // expression parser say so.
                    match parse_in(&s[inner_start..], inner_start, map) {
                        Err(e) => errs.push(e),
                        Ok(_) => errs.push(SyntaxError {
                            message: "unterminated `${{`".to_owned(),
                            label: "this `${{` is never closed".to_owned(),
                            help: "close the expression with `}}`".to_owned(),
                            span: map.span(open, open + 3),
                            offset: open,
                        }),
                    }
                    break;
                }
                None => {
                    errs.push(SyntaxError {
                        message: "unterminated `${{`".to_owned(),
                        label: "this `${{` is never closed".to_owned(),
                        help: "close the expression with `}}`, or write `$${{` for a literal `${{`"
                            .to_owned(),
                        span: map.span(open, open + 3),
                        offset: open,
                    });
                    break;
                }
            }
            continue;
        }
        let Some(c) = rest.chars().next() else {
            break;
        };
        text.push(c);
        i += c.len_utf8();
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(match parts.len() {
        0 => Template::Literal(Value::String(String::new())),
        1 => match parts.pop() {
            Some(Part::Expr(e)) => Template::Expr(e),
            Some(Part::Text(t)) => Template::Literal(Value::String(t)),
            None => Template::Literal(Value::String(String::new())),
        },
        _ => Template::Interpolate(parts),
    })
}

/// The byte offset of the `}}` closing an expression that starts at `from`,
/// skipping `'…'` string literals.
fn find_close(s: &str, from: usize) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = from;
    let mut in_str = false;
    while i < b.len() {
        if in_str {
            if b[i] == b'\'' {
                if b.get(i + 1) == Some(&b'\'') {
                    i += 1;
                } else {
                    in_str = false;
                }
            }
        } else if b[i] == b'\'' {
            in_str = true;
        } else if b[i] == b'}' && b.get(i + 1) == Some(&b'}') {
            return Some(i);
        }
        i += 1;
    }
    None
}
