//! `${{ … }}` expressions: parsing, references, evaluation.

use std::fmt;

use miette::SourceSpan;
use serde_json::Value;

use crate::error::{EvalError, WorkflowError, describe};
use crate::suggest;
use crate::yaml::SpanMap;

/// The names an expression may start with.
pub const ROOTS: &[&str] = &["inputs", "vars", "secrets", "steps", "item", "index"];

/// A parsed expression: its syntax tree, its source text (without the
/// `${{ }}` delimiters) and its span in the workflow file.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    ast: Ast,
    text: String,
    span: SourceSpan,
}

/// A value, or a placeholder for one that is only known after apply.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Known(Value),
    /// The reference whose value is not known yet, e.g. `steps.create.outputs.vm_id`.
    Unknown(String),
}

impl Val {
    /// The value, when known.
    pub fn known(&self) -> Option<&Value> {
        match self {
            Val::Known(v) => Some(v),
            Val::Unknown(_) => None,
        }
    }
}

/// What expressions can see.
///
/// `root` is one of `inputs`, `vars`, `secrets`, `steps`, `item`, `index`;
/// `path` is the fixed part of the reference after it: `[NAME]` for
/// `inputs`/`vars`/`secrets`, `[ID, "outputs", NAME]` for `steps`, and empty
/// for `item` and `index`. Anything after that (`item.name`,
/// `steps.a.outputs.vms[0]`) is navigated by the evaluator in the value the
/// scope returns. Returning `None` makes evaluation fail with
/// [`WorkflowError::Undefined`] naming the reference.
pub trait Scope {
    fn lookup(&self, root: &str, path: &[String]) -> Option<Val>;
}

/// A reference in an expression: root, fixed path, and the span of each segment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ref {
    pub(crate) root: String,
    pub(crate) path: Vec<String>,
    /// Span of the whole reference (root to last fixed segment).
    pub(crate) span: SourceSpan,
    /// Span of each segment: `[root, path...]`.
    pub(crate) segs: Vec<SourceSpan>,
}

impl Ref {
    pub(crate) fn dotted(&self) -> String {
        let mut s = self.root.clone();
        for p in &self.path {
            s.push('.');
            s.push_str(p);
        }
        s
    }

    pub(crate) fn full(&self) -> Vec<String> {
        std::iter::once(self.root.clone())
            .chain(self.path.iter().cloned())
            .collect()
    }

    pub(crate) fn seg(&self, i: usize) -> SourceSpan {
        self.segs.get(i).copied().unwrap_or(self.span)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Eq,
    Ne,
    And,
    Or,
}

impl BinOp {
    fn as_str(self) -> &'static str {
        match self {
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Ast {
    Lit(Value),
    Ref(Ref),
    Field(Box<Ast>, String),
    Index(Box<Ast>, Box<Ast>),
    Not(Box<Ast>),
    Bin(BinOp, Box<Ast>, Box<Ast>),
}

/// A syntax error inside an expression, with byte offsets in the string value
/// the expression came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub(crate) message: String,
    pub(crate) label: String,
    pub(crate) help: String,
    pub(crate) span: SourceSpan,
    /// Byte offset in the parsed text (for stand-alone parsing).
    pub(crate) offset: usize,
}

impl Expr {
    /// Parse a stand-alone expression (the text between `${{` and `}}`).
    /// Spans are byte offsets in `text`.
    pub fn parse(text: &str) -> Result<Expr, WorkflowError> {
        let map = SpanMap::identity(text);
        parse_in(text, 0, &map).map_err(|e| WorkflowError::Syntax {
            message: e.message,
            offset: e.offset,
        })
    }

    /// A literal expression (used for `if: true` written as a YAML boolean).
    pub(crate) fn literal(value: Value, text: String, span: SourceSpan) -> Expr {
        Expr {
            ast: Ast::Lit(value),
            text,
            span,
        }
    }

    /// The expression's source text, without `${{ }}`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Where the expression is in the workflow file.
    pub fn span(&self) -> SourceSpan {
        self.span
    }

    /// Every reference, as `[root, path...]` (e.g. `["steps", "create",
    /// "outputs", "vm_id"]`, `["item"]`), in order of appearance.
    pub fn references(&self) -> Vec<Vec<String>> {
        self.refs().iter().map(|r| r.full()).collect()
    }

    pub(crate) fn refs(&self) -> Vec<&Ref> {
        let mut out = Vec::new();
        collect_refs(&self.ast, &mut out);
        out
    }

    /// Evaluate in `scope`. See [`Val`] and the crate docs for the rules.
    pub fn eval(&self, scope: &dyn Scope) -> Result<Val, EvalError> {
        eval(&self.ast, scope)
    }

    /// The value of a literal expression (`${{ 'x' }}`, `if: true`).
    pub fn as_literal(&self) -> Option<&Value> {
        match &self.ast {
            Ast::Lit(v) => Some(v),
            _ => None,
        }
    }

    /// The static type of the expression when it can be known, given the
    /// types of references.
    pub(crate) fn static_type(
        &self,
        ty_of: &dyn Fn(&Ref) -> Option<lifeboat_contract::FieldType>,
    ) -> Option<lifeboat_contract::FieldType> {
        static_type(&self.ast, ty_of)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${{{{ {} }}}}", self.text)
    }
}

impl serde::Serialize for Expr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn collect_refs<'a>(ast: &'a Ast, out: &mut Vec<&'a Ref>) {
    match ast {
        Ast::Lit(_) => {}
        Ast::Ref(r) => out.push(r),
        Ast::Field(b, _) | Ast::Not(b) => collect_refs(b, out),
        Ast::Index(a, b) | Ast::Bin(_, a, b) => {
            collect_refs(a, out);
            collect_refs(b, out);
        }
    }
}

fn static_type(
    ast: &Ast,
    ty_of: &dyn Fn(&Ref) -> Option<lifeboat_contract::FieldType>,
) -> Option<lifeboat_contract::FieldType> {
    use lifeboat_contract::FieldType as T;
    match ast {
        Ast::Lit(v) => Some(match v {
            Value::Null => return None,
            Value::Bool(_) => T::Boolean,
            Value::Number(n) if n.is_i64() || n.is_u64() => T::Integer,
            Value::Number(_) => T::Number,
            Value::String(_) => T::String,
            Value::Array(_) => T::List,
            Value::Object(_) => T::Object,
        }),
        Ast::Ref(r) => ty_of(r),
        Ast::Not(_) | Ast::Bin(..) => Some(T::Boolean),
        Ast::Field(..) | Ast::Index(..) => None,
    }
}

// ---------------------------------------------------------------- display

impl fmt::Display for Ast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ast::Lit(Value::String(s)) => write!(f, "'{}'", s.replace('\'', "''")),
            Ast::Lit(v) => write!(f, "{v}"),
            Ast::Ref(r) => f.write_str(&r.dotted()),
            Ast::Field(b, name) => write!(f, "{b}.{name}"),
            Ast::Index(b, i) => write!(f, "{b}[{i}]"),
            Ast::Not(b) => match **b {
                Ast::Bin(..) => write!(f, "!({b})"),
                _ => write!(f, "!{b}"),
            },
            Ast::Bin(op, a, b) => {
                let side = |f: &mut fmt::Formatter<'_>, x: &Ast| match x {
                    Ast::Bin(..) => write!(f, "({x})"),
                    _ => write!(f, "{x}"),
                };
                side(f, a)?;
                write!(f, " {} ", op.as_str())?;
                side(f, b)
            }
        }
    }
}

// ---------------------------------------------------------------- evaluation

fn eval(ast: &Ast, scope: &dyn Scope) -> Result<Val, EvalError> {
    match ast {
        Ast::Lit(v) => Ok(Val::Known(v.clone())),
        Ast::Ref(r) => scope
            .lookup(&r.root, &r.path)
            .ok_or_else(|| WorkflowError::Undefined {
                reference: r.dotted(),
            }),
        Ast::Field(base, name) => match eval(base, scope)? {
            Val::Unknown(u) => Ok(Val::Unknown(u)),
            Val::Known(Value::Object(m)) => match m.get(name) {
                Some(v) => Ok(Val::Known(v.clone())),
                None => Err(WorkflowError::NoField {
                    target: base.to_string(),
                    field: name.clone(),
                }),
            },
            Val::Known(other) => Err(WorkflowError::NotAnObject {
                target: base.to_string(),
                field: name.clone(),
                found: describe(&other),
            }),
        },
        Ast::Index(base, index) => {
            let b = eval(base, scope)?;
            let i = eval(index, scope)?;
            let (b, i) = match (b, i) {
                (Val::Unknown(u), _) | (_, Val::Unknown(u)) => return Ok(Val::Unknown(u)),
                (Val::Known(b), Val::Known(i)) => (b, i),
            };
            index_value(base, b, i)
        }
        Ast::Not(inner) => match eval(inner, scope)? {
            Val::Unknown(u) => Ok(Val::Unknown(u)),
            Val::Known(Value::Bool(b)) => Ok(Val::Known(Value::Bool(!b))),
            Val::Known(other) => Err(not_boolean("!", inner, &other)),
        },
        Ast::Bin(op @ (BinOp::And | BinOp::Or), a, b) => {
            let short = *op == BinOp::Or;
            let left = eval(a, scope)?;
            match &left {
                Val::Known(Value::Bool(x)) if *x == short => return Ok(left),
                Val::Known(Value::Bool(_)) | Val::Unknown(_) => {}
                Val::Known(other) => return Err(not_boolean(op.as_str(), a, other)),
            }
            let right = eval(b, scope)?;
            match (&left, right) {
                (_, Val::Known(other)) if !other.is_boolean() => {
                    Err(not_boolean(op.as_str(), b, &other))
                }
                (Val::Unknown(u), _) => Ok(Val::Unknown(u.clone())),
                (_, right) => Ok(right),
            }
        }
        Ast::Bin(op, a, b) => {
            let left = eval(a, scope)?;
            let right = eval(b, scope)?;
            match (left, right) {
                (Val::Unknown(u), _) | (_, Val::Unknown(u)) => Ok(Val::Unknown(u)),
                (Val::Known(x), Val::Known(y)) => {
                    let eq = json_eq(&x, &y);
                    Ok(Val::Known(Value::Bool(if *op == BinOp::Eq {
                        eq
                    } else {
                        !eq
                    })))
                }
            }
        }
    }
}

fn not_boolean(op: &'static str, what: &Ast, found: &Value) -> WorkflowError {
    WorkflowError::NotBoolean {
        op,
        what: format!("`{what}`"),
        found: format!("{} ({})", describe(found), compact(found)),
    }
}

fn index_value(base: &Ast, b: Value, i: Value) -> Result<Val, EvalError> {
    let bad = |b: &Value, i: &Value| WorkflowError::BadIndex {
        target: base.to_string(),
        found: describe(b),
        index: compact(i),
    };
    match (&b, &i) {
        (Value::Array(items), Value::Number(n)) => {
            let Some(k) = n.as_i64() else {
                return Err(bad(&b, &i));
            };
            let len = items.len();
            let pos = if k < 0 {
                usize::try_from(k.unsigned_abs())
                    .ok()
                    .and_then(|back| len.checked_sub(back))
            } else {
                usize::try_from(k).ok().filter(|p| *p < len)
            };
            match pos.and_then(|p| items.get(p)) {
                Some(v) => Ok(Val::Known(v.clone())),
                None => Err(WorkflowError::IndexOutOfRange {
                    target: base.to_string(),
                    index: k,
                    len,
                }),
            }
        }
        (Value::Object(m), Value::String(k)) => match m.get(k) {
            Some(v) => Ok(Val::Known(v.clone())),
            None => Err(WorkflowError::NoField {
                target: base.to_string(),
                field: k.clone(),
            }),
        },
        _ => Err(bad(&b, &i)),
    }
}

/// JSON equality, with numbers compared by value (`1 == 1.0`).
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(p), Some(q)) => p == q,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(p), Some(q)) => p == q,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Compact JSON text of a value.
pub(crate) fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

// ---------------------------------------------------------------- lexing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Int(i64),
    Float(f64),
    Str(String),
    Dot,
    LBracket,
    RBracket,
    LParen,
    RParen,
    Not,
    EqEq,
    NotEq,
    AndAnd,
    OrOr,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Int(i) => format!("`{i}`"),
            Tok::Float(f) => format!("`{f}`"),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Dot => "`.`".to_owned(),
            Tok::LBracket => "`[`".to_owned(),
            Tok::RBracket => "`]`".to_owned(),
            Tok::LParen => "`(`".to_owned(),
            Tok::RParen => "`)`".to_owned(),
            Tok::Not => "`!`".to_owned(),
            Tok::EqEq => "`==`".to_owned(),
            Tok::NotEq => "`!=`".to_owned(),
            Tok::AndAnd => "`&&`".to_owned(),
            Tok::OrOr => "`||`".to_owned(),
            Tok::End => "the end of the expression".to_owned(),
        }
    }
}

struct Lexed {
    tok: Tok,
    start: usize,
    end: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

struct LexError {
    message: String,
    label: String,
    help: String,
    start: usize,
    end: usize,
}

fn lex(text: &str) -> Result<Vec<Lexed>, LexError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |message: &str, label: &str, help: &str, start: usize, end: usize| LexError {
        message: message.to_owned(),
        label: label.to_owned(),
        help: help.to_owned(),
        start,
        end,
    };
    while i < text.len() {
        let Some(c) = text[i..].chars().next() else {
            break;
        };
        let start = i;
        let two = text.get(i..i + 2).unwrap_or("");
        let tok = if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(d) = text[i..].chars().next() else {
                    return Err(err(
                        "unterminated string literal",
                        "this string is never closed",
                        "close the string with `'` (write `''` for a quote inside it)",
                        start,
                        text.len(),
                    ));
                };
                i += d.len_utf8();
                if d == '\'' {
                    if bytes.get(i) == Some(&b'\'') {
                        s.push('\'');
                        i += 1;
                    } else {
                        break;
                    }
                } else {
                    s.push(d);
                }
            }
            Tok::Str(s)
        } else if c == '"' {
            return Err(err(
                "strings in expressions use single quotes",
                "double quote",
                "write 'text' instead of \"text\"",
                start,
                start + 1,
            ));
        } else if c.is_ascii_digit()
            || (c == '-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            i += 1;
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            let mut float = false;
            if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                float = true;
                i += 1;
                while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            if matches!(bytes.get(i), Some(b'e' | b'E')) {
                let mut j = i + 1;
                if matches!(bytes.get(j), Some(b'+' | b'-')) {
                    j += 1;
                }
                if bytes.get(j).is_some_and(u8::is_ascii_digit) {
                    float = true;
                    i = j;
                    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                        i += 1;
                    }
                }
            }
            if text[i..].chars().next().is_some_and(is_ident_char) {
                return Err(err(
                    "invalid number",
                    "not a number",
                    "numbers are written like 3, -1 or 2.5",
                    start,
                    i + 1,
                ));
            }
            let lit = &text[start..i];
            if float {
                match lit.parse::<f64>() {
                    Ok(f) if f.is_finite() => Tok::Float(f),
                    _ => {
                        return Err(err("number out of range", "too large", "", start, i));
                    }
                }
            } else {
                match lit.parse::<i64>() {
                    Ok(n) => Tok::Int(n),
                    Err(_) => {
                        return Err(err(
                            "integer out of range",
                            "does not fit in 64 bits",
                            "",
                            start,
                            i,
                        ));
                    }
                }
            }
        } else if is_ident_start(c) {
            while text[i..].chars().next().is_some_and(is_ident_char) {
                i += 1;
            }
            Tok::Ident(text[start..i].to_owned())
        } else if two == "==" {
            i += 2;
            Tok::EqEq
        } else if two == "!=" {
            i += 2;
            Tok::NotEq
        } else if two == "&&" {
            i += 2;
            Tok::AndAnd
        } else if two == "||" {
            i += 2;
            Tok::OrOr
        } else {
            i += c.len_utf8();
            match c {
                '.' => Tok::Dot,
                '[' => Tok::LBracket,
                ']' => Tok::RBracket,
                '(' => Tok::LParen,
                ')' => Tok::RParen,
                '!' => Tok::Not,
                '=' => {
                    return Err(err(
                        "`=` is not an operator",
                        "single `=`",
                        "compare with `==`",
                        start,
                        i,
                    ));
                }
                '&' => {
                    return Err(err(
                        "`&` is not an operator",
                        "single `&`",
                        "write `&&` for \"and\"",
                        start,
                        i,
                    ));
                }
                '|' => {
                    return Err(err(
                        "`|` is not an operator",
                        "single `|`",
                        "write `||` for \"or\"",
                        start,
                        i,
                    ));
                }
                _ => {
                    return Err(err(
                        &format!("unexpected character `{c}` in expression"),
                        "not allowed here",
                        "expressions support literals, references (inputs.X, vars.X, secrets.X, \
                         steps.ID.outputs.NAME, item, index), `[ ]`, `==`, `!=`, `!`, `&&`, `||` and parentheses",
                        start,
                        i,
                    ));
                }
            }
        };
        out.push(Lexed { tok, start, end: i });
    }
    out.push(Lexed {
        tok: Tok::End,
        start: text.len(),
        end: text.len(),
    });
    Ok(out)
}

// ---------------------------------------------------------------- parsing

const MAX_DEPTH: usize = 48;
/// Longest expression, in tokens; also bounds the depth of left-nested
/// chains (`a && b && …`, `x.a.b…`) and so of evaluation.
const MAX_TOKENS: usize = 400;

/// Parse `text`, which starts at byte `base` of a string value whose file
/// positions are given by `map`.
pub(crate) fn parse_in(text: &str, base: usize, map: &SpanMap) -> Result<Expr, SyntaxError> {
    let trimmed_start = text.len() - text.trim_start().len();
    let trimmed = text.trim();
    let whole = map.span(base + trimmed_start, base + trimmed_start + trimmed.len());
    let mk = |message: String, label: String, help: String, start: usize, end: usize| SyntaxError {
        message,
        label,
        help,
        span: map.span(base + start, base + end.max(start)),
        offset: start,
    };
    if trimmed.is_empty() {
        return Err(SyntaxError {
            message: "empty expression".to_owned(),
            label: "nothing between `${{` and `}}`".to_owned(),
            help: "write an expression such as `${{ inputs.name }}`, or remove the braces"
                .to_owned(),
            span: map.span(base, base + text.len()),
            offset: 0,
        });
    }
    let toks = lex(text).map_err(|e| mk(e.message, e.label, e.help, e.start, e.end))?;
    if toks.len() > MAX_TOKENS {
        let t = &toks[MAX_TOKENS];
        let (s, e) = (t.start, t.end);
        return Err(mk(
            format!("expression is too long (more than {MAX_TOKENS} tokens)"),
            "the limit is reached here".to_owned(),
            "split it into several vars or steps".to_owned(),
            s,
            e,
        ));
    }
    let mut p = Parser {
        toks,
        pos: 0,
        base,
        map,
        depth: 0,
    };
    let ast = p
        .expr()
        .map_err(|e| mk(e.message, e.label, e.help, e.start, e.end))?;
    if !matches!(p.peek(), Tok::End) {
        let t = &p.toks[p.pos];
        let msg = format!(
            "unexpected {} after the end of the expression",
            t.tok.describe()
        );
        let (s, e) = (t.start, t.end);
        return Err(mk(
            msg,
            "expected an operator or the end here".to_owned(),
            "join conditions with `&&` or `||`, compare with `==` or `!=`".to_owned(),
            s,
            e,
        ));
    }
    Ok(Expr {
        ast,
        text: trimmed.to_owned(),
        span: whole,
    })
}

struct Parser<'m> {
    toks: Vec<Lexed>,
    pos: usize,
    base: usize,
    map: &'m SpanMap,
    depth: usize,
}

type PResult<T> = Result<T, LexError>;

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map_or(&Tok::End, |t| &t.tok)
    }

    fn cur(&self) -> (usize, usize) {
        self.toks.get(self.pos).map_or((0, 0), |t| (t.start, t.end))
    }

    fn bump(&mut self) -> (Tok, usize, usize) {
        match self.toks.get(self.pos) {
            Some(t) => {
                let r = (t.tok.clone(), t.start, t.end);
                if !matches!(t.tok, Tok::End) {
                    self.pos += 1;
                }
                r
            }
            None => (Tok::End, 0, 0),
        }
    }

    fn span(&self, start: usize, end: usize) -> SourceSpan {
        self.map.span(self.base + start, self.base + end)
    }

    fn unexpected(&self, wanted: &str, help: &str) -> LexError {
        let (s, e) = self.cur();
        LexError {
            message: format!("expected {wanted}, found {}", self.peek().describe()),
            label: format!("expected {wanted}"),
            help: help.to_owned(),
            start: s,
            end: e,
        }
    }

    fn expr(&mut self) -> PResult<Ast> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let (s, e) = self.cur();
            return Err(LexError {
                message: "expression nested too deeply".to_owned(),
                label: "too deep".to_owned(),
                help: format!("expressions may nest at most {MAX_DEPTH} levels"),
                start: s,
                end: e,
            });
        }
        let r = self.or();
        self.depth -= 1;
        r
    }

    fn or(&mut self) -> PResult<Ast> {
        let mut left = self.and()?;
        while matches!(self.peek(), Tok::OrOr) {
            self.bump();
            let right = self.and()?;
            left = Ast::Bin(BinOp::Or, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> PResult<Ast> {
        let mut left = self.equality()?;
        while matches!(self.peek(), Tok::AndAnd) {
            self.bump();
            let right = self.equality()?;
            left = Ast::Bin(BinOp::And, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn equality(&mut self) -> PResult<Ast> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::EqEq => BinOp::Eq,
                Tok::NotEq => BinOp::Ne,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.unary()?;
            left = Ast::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> PResult<Ast> {
        if matches!(self.peek(), Tok::Not) {
            self.bump();
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(self.unexpected("less nesting", "simplify the expression"));
            }
            let inner = self.unary();
            self.depth -= 1;
            return Ok(Ast::Not(Box::new(inner?)));
        }
        self.postfix()
    }

    fn postfix(&mut self) -> PResult<Ast> {
        let mut base = self.primary()?;
        loop {
            match self.peek() {
                Tok::Dot => {
                    self.bump();
                    if !matches!(self.peek(), Tok::Ident(_)) {
                        return Err(self.unexpected(
                            "a field name after `.`",
                            "read a field as `.name`, or index as `[0]` / `['name']`",
                        ));
                    }
                    if let (Tok::Ident(name), _, _) = self.bump() {
                        base = Ast::Field(Box::new(base), name);
                    }
                }
                Tok::LBracket => {
                    self.bump();
                    let index = self.expr()?;
                    if !matches!(self.peek(), Tok::RBracket) {
                        return Err(self.unexpected("`]`", "close the index with `]`"));
                    }
                    self.bump();
                    base = Ast::Index(Box::new(base), Box::new(index));
                }
                _ => return Ok(base),
            }
        }
    }

    fn primary(&mut self) -> PResult<Ast> {
        let (tok, start, end) = self.bump();
        match tok {
            Tok::Int(i) => Ok(Ast::Lit(Value::from(i))),
            Tok::Float(f) => Ok(Ast::Lit(
                serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
            )),
            Tok::Str(s) => Ok(Ast::Lit(Value::String(s))),
            Tok::LParen => {
                let inner = self.expr()?;
                if !matches!(self.peek(), Tok::RParen) {
                    return Err(self.unexpected("`)`", "close the parenthesis with `)`"));
                }
                self.bump();
                Ok(inner)
            }
            Tok::Ident(name) => match name.as_str() {
                "true" => Ok(Ast::Lit(Value::Bool(true))),
                "false" => Ok(Ast::Lit(Value::Bool(false))),
                "null" => Ok(Ast::Lit(Value::Null)),
                _ => self.reference(name, start, end),
            },
            _ => {
                if !matches!(tok, Tok::End) {
                    self.pos = self.pos.saturating_sub(1);
                }
                Err(self.unexpected(
                    "a value",
                    "a value is a literal ('text', 3, true, null) or a reference such as inputs.NAME",
                ))
            }
        }
    }

    /// `.NAME` after a root; returns the name and its span.
    fn segment(
        &mut self,
        after: &str,
        what: &str,
        example: &str,
    ) -> PResult<(String, usize, usize)> {
        if !matches!(self.peek(), Tok::Dot) {
            return Err(self.unexpected(
                &format!("`.` and {what} after `{after}`"),
                &format!("write `{example}`"),
            ));
        }
        self.bump();
        if !matches!(self.peek(), Tok::Ident(_)) {
            return Err(self.unexpected(what, &format!("write `{example}`")));
        }
        match self.bump() {
            (Tok::Ident(n), s, e) => Ok((n, s, e)),
            _ => Err(self.unexpected(what, &format!("write `{example}`"))),
        }
    }

    fn reference(&mut self, root: String, start: usize, end: usize) -> PResult<Ast> {
        let mut segs = vec![self.span(start, end)];
        let mut path = Vec::new();
        let mut last = end;
        match root.as_str() {
            "inputs" | "vars" | "secrets" => {
                let (n, s, e) = self.segment(&root, "a name", &format!("{root}.NAME"))?;
                segs.push(self.span(s, e));
                path.push(n);
                last = e;
            }
            "steps" => {
                let (id, s, e) = self.segment("steps", "a step id", "steps.ID.outputs.NAME")?;
                segs.push(self.span(s, e));
                path.push(id.clone());
                let (outputs, s2, e2) = self.segment(
                    &format!("steps.{id}"),
                    "`outputs`",
                    &format!("steps.{id}.outputs.NAME"),
                )?;
                if outputs != "outputs" {
                    return Err(LexError {
                        message: format!(
                            "expected `outputs` after `steps.{id}`, found `{outputs}`"
                        ),
                        label: "expected `outputs`".to_owned(),
                        help: format!("a step's values are read as `steps.{id}.outputs.NAME`"),
                        start: s2,
                        end: e2,
                    });
                }
                segs.push(self.span(s2, e2));
                path.push(outputs);
                let (name, s3, e3) = self.segment(
                    &format!("steps.{id}.outputs"),
                    "an output name",
                    &format!("steps.{id}.outputs.NAME"),
                )?;
                segs.push(self.span(s3, e3));
                path.push(name);
                last = e3;
            }
            "item" | "index" => {}
            _ => {
                let help = match suggest::closest(&root, ROOTS.iter().copied()) {
                    Some(s) => format!(
                        "did you mean `{s}`? Expressions start with one of: {}; strings are written in single quotes",
                        ROOTS.join(", ")
                    ),
                    None => format!(
                        "expressions start with one of: {}; strings are written in single quotes ('{root}')",
                        ROOTS.join(", ")
                    ),
                };
                return Err(LexError {
                    message: format!("unknown name `{root}` in expression"),
                    label: "not a known name".to_owned(),
                    help,
                    start,
                    end,
                });
            }
        }
        Ok(Ast::Ref(Ref {
            root,
            path,
            span: self.span(start, last),
            segs,
        }))
    }
}
