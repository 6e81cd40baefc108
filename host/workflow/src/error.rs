//! The crate's one error type, for everything that is not a diagnostic about
//! the user's file: evaluating expressions and binding CLI inputs.

use lifeboat_contract::FieldType;

/// Errors of evaluation ([`crate::Expr::eval`], [`crate::Template::eval`]),
/// of parsing a stand-alone expression ([`crate::Expr::parse`]) and of
/// binding CLI inputs ([`crate::Workflow::bind_inputs`]).
///
/// Problems in a workflow file are never reported with this type: they are
/// [`crate::Diagnostics`], located in the file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// The scope has no value for a reference.
    #[error("`{reference}` is not defined")]
    Undefined { reference: String },
    /// `!`, `&&` or `||` applied to a value that is not a boolean.
    #[error("`{op}` needs a boolean, but {what} is {found}")]
    NotBoolean {
        op: &'static str,
        what: String,
        found: String,
    },
    /// `.field` on an object that has no such field.
    #[error("`{target}` has no field `{field}`")]
    NoField { target: String, field: String },
    /// `.field` on a value that is not an object.
    #[error("cannot read field `{field}` of `{target}`: it is {found}, not an object")]
    NotAnObject {
        target: String,
        field: String,
        found: String,
    },
    /// `[i]` past the end of a list.
    #[error("index {index} is out of range: `{target}` has {len} item(s)")]
    IndexOutOfRange {
        target: String,
        index: i64,
        len: usize,
    },
    /// `[x]` with an index that does not fit the value.
    #[error("cannot index `{target}` ({found}) with {index}")]
    BadIndex {
        target: String,
        found: String,
        index: String,
    },
    /// A stand-alone expression or template did not parse.
    #[error("invalid expression at byte {offset}: {message}")]
    Syntax { message: String, offset: usize },
    /// `--input` names no declared input.
    #[error("unknown input `{name}`{}; declared inputs: {}", did_you_mean(.suggestion), list_or_none(.declared))]
    UnknownInput {
        name: String,
        suggestion: Option<String>,
        declared: Vec<String>,
    },
    /// A required input was not given.
    #[error("missing required input `{name}` ({}); give it with `--input {name}=VALUE`", .ty.as_str())]
    MissingInput { name: String, ty: FieldType },
    /// A given input does not have the declared type.
    #[error("input `{name}` must be {} {}, but `{given}` is {found}", article(.expected.as_str()), .expected.as_str())]
    InputType {
        name: String,
        expected: FieldType,
        given: String,
        found: String,
    },
}

/// Errors of evaluation; the same type as [`WorkflowError`] (one error enum for
/// the crate).
pub type EvalError = WorkflowError;

fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(crate) fn article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// A short description of a JSON value's type, for messages ("a string", "null").
pub(crate) fn describe(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer".to_owned(),
        Value::Number(_) => "a number".to_owned(),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}
