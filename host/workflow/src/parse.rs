//! Shape checking: syntax tree -> [`Document`], with every problem that can be
//! found without loading plugins.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use lifeboat_contract::FieldType;
use miette::SourceSpan;
use serde_json::Value;

use crate::diag::{Diagnostics, Sink, SourceFile};
use crate::expr::{Expr, Ref, SyntaxError};
use crate::model::{
    Access, DEFAULT_BACKOFF, Grants, InputDecl, Limits, PluginDecl, PluginSource, Retry,
    SecretDecl, SiteDecl, Step, VaultDecl, Workflow,
};
use crate::suggest;
use crate::template::{Template, from_node};
use crate::units;
use crate::yaml::{self, Node, Value as Y};

pub(crate) const TOP_FIELDS: &[&str] = &[
    "name",
    "description",
    "inputs",
    "vars",
    "secrets",
    "plugins",
    "sites",
    "vault",
    "steps",
];
pub(crate) const INPUT_FIELDS: &[&str] = &["type", "required", "default", "doc"];
pub(crate) const SECRET_FIELDS: &[&str] = &["env"];
pub(crate) const PLUGIN_FIELDS: &[&str] = &["source", "grants", "limits"];
pub(crate) const GRANT_FIELDS: &[&str] = &["http", "insecure_http", "secrets", "sites", "vault"];
pub(crate) const SITE_FIELDS: &[&str] = &["path", "url", "key", "ca_file", "insecure_http", "doc"];
pub(crate) const VAULT_FIELDS: &[&str] = &["url", "key", "key_file"];
pub(crate) const ACCESS_NAMES: &[&str] = &["read", "write"];
pub(crate) const LIMIT_FIELDS: &[&str] = &["memory", "timeout"];
pub(crate) const STEP_FIELDS: &[&str] = &[
    "id", "uses", "with", "needs", "if", "for_each", "timeout", "retry",
];
pub(crate) const RETRY_FIELDS: &[&str] = &["attempts", "backoff"];
pub(crate) const TYPE_NAMES: &[&str] = &[
    "string", "integer", "number", "boolean", "list", "object", "any",
];
/// Most attempts a retry policy may ask for.
pub const MAX_ATTEMPTS: u32 = 100;

/// A parsed, shape-checked workflow file, not yet checked against plugins.
#[derive(Debug, Clone)]
pub struct Document {
    pub(crate) wf: Workflow,
    pub(crate) plugin_spans: IndexMap<String, SourceSpan>,
    /// Parallel to `wf.steps`.
    pub(crate) steps: Vec<StepSyntax>,
}

/// Where the parts of a step are, for the checks against plugins.
#[derive(Debug, Clone)]
pub(crate) struct StepSyntax {
    pub(crate) uses: SourceSpan,
    pub(crate) step_name: SourceSpan,
    /// Key and value span of each `with` entry.
    pub(crate) with: IndexMap<String, (SourceSpan, SourceSpan)>,
    pub(crate) for_each: Option<SourceSpan>,
    pub(crate) condition: Option<SourceSpan>,
}

impl Document {
    /// The workflow's `name`.
    pub fn name(&self) -> &str {
        &self.wf.name
    }

    /// The file.
    pub fn source(&self) -> &Arc<SourceFile> {
        &self.wf.source
    }

    /// Plugin aliases in file order with their declared source and the span
    /// of the `source` value.
    pub fn plugin_sources(&self) -> Vec<(String, PluginSource, SourceSpan)> {
        self.wf
            .plugins
            .iter()
            .map(|(alias, p)| {
                let span = self
                    .plugin_spans
                    .get(alias)
                    .copied()
                    .unwrap_or_else(|| SourceSpan::new(0.into(), 0));
                (alias.clone(), p.source.clone(), span)
            })
            .collect()
    }

    /// The workflow as parsed, before the checks against plugins.
    pub fn workflow(&self) -> &Workflow {
        &self.wf
    }
}

/// Parse and shape-check a workflow file.
pub fn parse(source: Arc<SourceFile>) -> Result<Document, Diagnostics> {
    let root = match yaml::load(&source) {
        Ok(n) => n,
        Err(d) => return Err(Diagnostics::new(&source, vec![d])),
    };
    let mut c = Checker {
        text: &source.text,
        sink: Sink::new(&source),
        declared_aliases: HashSet::new(),
    };
    let doc = c.document(&root);
    match doc {
        Some(doc) if c.sink.is_empty() => Ok(doc),
        _ => {
            if c.sink.is_empty() {
                c.sink
                    .error("invalid", root.head(), "the workflow is invalid", "here");
            }
            Err(c.sink.finish())
        }
    }
}

/// The entries of a mapping, checked against the allowed field names.
struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// The value, if present and not null.
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, v)| *k == name && !v.is_null())
            .map(|(_, _, v)| *v)
    }

    /// The value even if null.
    fn raw(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, _, v)| *v)
    }

    fn key(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, k, _)| *k)
    }
}

struct Checker<'t> {
    text: &'t str,
    sink: Sink,
    /// Every alias under `plugins:`, also those whose declaration is invalid.
    declared_aliases: HashSet<String>,
}

/// What a step's expressions may see, for reference checks.
struct RefCtx<'a> {
    inputs: &'a IndexMap<String, InputDecl>,
    vars: &'a IndexMap<String, Template>,
    secrets: &'a IndexMap<String, SecretDecl>,
    plugins: &'a IndexMap<String, PluginDecl>,
    step_ids: &'a [String],
    /// Position of each id in `step_ids`.
    step_index: &'a HashMap<String, usize>,
}

impl Checker<'_> {
    // ------------------------------------------------------------ helpers

    fn wrong_type(&mut self, node: &Node, what: &str, expected: &str, help: &str) {
        let d = self.sink.error(
            "wrong-type",
            node.label_span(self.text),
            format!("{what} must be {expected}, but it is {}", node.kind()),
            format!("expected {expected}"),
        );
        d.set_help(help);
    }

    /// A mapping's entries, reporting non-string keys and unknown fields.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&str],
        help: &str,
    ) -> Option<Fields<'n>> {
        let Y::Map(entries) = &node.value else {
            self.wrong_type(node, what, "a mapping", help);
            return None;
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            let Some(name) = k.as_str() else {
                self.sink.error(
                    "wrong-type",
                    k.span,
                    format!(
                        "keys of {what} must be strings, but this key is {}",
                        k.kind()
                    ),
                    "not a string",
                );
                continue;
            };
            // `x-…` keys at the top level are ignored: a place for anchors.
            if allowed == TOP_FIELDS && name.starts_with("x-") {
                continue;
            }
            if !allowed.contains(&name) {
                let d = self.sink.error(
                    "unknown-field",
                    k.span,
                    format!("unknown field `{name}` in {what}"),
                    "unknown field",
                );
                d.set_help(suggest::help(name, "valid fields", allowed));
                continue;
            }
            out.push((name, k, v));
        }
        Some(Fields { entries: out })
    }

    /// A mapping with free-form string keys (inputs, vars, plugins, with...).
    fn map_entries<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        help: &str,
    ) -> Vec<(&'n str, &'n Node, &'n Node)> {
        let Y::Map(entries) = &node.value else {
            self.wrong_type(node, what, "a mapping", help);
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            match k.as_str() {
                Some(name) => out.push((name, k, v)),
                None => {
                    self.sink.error(
                        "wrong-type",
                        k.span,
                        format!(
                            "keys of {what} must be strings, but this key is {}",
                            k.kind()
                        ),
                        "not a string",
                    );
                }
            }
        }
        out
    }

    fn string<'n>(&mut self, node: &'n Node, what: &str, help: &str) -> Option<&'n str> {
        match node.as_str() {
            Some(s) => Some(s),
            None => {
                self.wrong_type(node, what, "a string", help);
                None
            }
        }
    }

    fn required<'n>(
        &mut self,
        f: &Fields<'n>,
        parent: &Node,
        name: &str,
        what: &str,
        help: &str,
    ) -> Option<&'n Node> {
        match f.get(name) {
            Some(v) => Some(v),
            None => {
                let span = f.key(name).map_or(parent.head(), |k| k.span);
                let d = self.sink.error(
                    "missing-field",
                    span,
                    match f.raw(name) {
                        Some(_) => format!("`{name}` of {what} has no value"),
                        None => format!("{what} has no `{name}`"),
                    },
                    format!("`{name}` is required"),
                );
                d.set_help(help);
                None
            }
        }
    }

    fn string_list<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        help: &str,
    ) -> Vec<(&'n str, &'n Node)> {
        match &node.value {
            Y::Seq(items) => items
                .iter()
                .filter_map(|i| {
                    self.string(i, &format!("each entry of {what}"), help)
                        .map(|s| (s, i))
                })
                .collect(),
            _ => {
                self.wrong_type(node, what, "a list of strings", help);
                Vec::new()
            }
        }
    }

    fn template(&mut self, node: &Node) -> Option<Template> {
        match from_node(self.text, node) {
            Ok(t) => Some(t),
            Err(errs) => {
                for e in errs {
                    self.syntax(e);
                }
                None
            }
        }
    }

    fn syntax(&mut self, e: SyntaxError) {
        let d = self.sink.error(
            "expr-syntax",
            e.span,
            format!("invalid expression: {}", e.message),
            e.label,
        );
        d.set_help(e.help);
    }

    fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let raw = match &node.value {
            Y::Str(s) => s.clone(),
            Y::Int(_) | Y::UInt(_) | Y::Float(_) => node.to_json().to_string(),
            _ => {
                self.wrong_type(
                    node,
                    what,
                    "a duration such as `30s`",
                    "write a number and a unit, e.g. `500ms`, `30s`, `5m`, `1h 30m`",
                );
                return None;
            }
        };
        match units::parse_duration(&raw) {
            Ok(d) => Some(d),
            Err(e) => {
                let d = self.sink.error(
                    "bad-duration",
                    node.span,
                    format!("`{raw}` is not a valid duration for {what}: {e}"),
                    "not a duration",
                );
                d.set_help("write a number and a unit, e.g. `500ms`, `30s`, `5m`, `1h 30m`");
                None
            }
        }
    }

    // ------------------------------------------------------------ document

    fn document(&mut self, root: &Node) -> Option<Document> {
        if root.is_null() {
            let d = self.sink.error(
                "missing-field",
                root.span,
                "the workflow file is empty",
                "nothing here",
            );
            d.set_help("a workflow needs at least `name:`, `plugins:` and `steps:`");
            return None;
        }
        let f = self.fields(
            root,
            "the workflow",
            TOP_FIELDS,
            "a workflow file is a mapping with `name:`, `plugins:`, `steps:` and optionally `description:`, `inputs:`, `vars:`, `secrets:`",
        )?;

        let name = self
            .required(&f, root, "name", "the workflow", "add `name: my-workflow` at the top of the file")
            .and_then(|n| {
                let s = self.string(n, "`name`", "write a name such as `name: failover-site-a`")?;
                if !units::is_workflow_name(s) {
                    let d = self.sink.error(
                        "bad-name",
                        n.span,
                        format!("`{s}` is not a valid workflow name"),
                        "invalid name",
                    );
                    d.set_help("a workflow name uses lower-case letters, digits and `-`, and starts with a letter or digit");
                }
                Some(s.to_owned())
            });

        let description = f.get("description").and_then(|n| {
            self.string(
                n,
                "`description`",
                "write one line of text; use `description: >` for a longer text",
            )
            .map(str::to_owned)
        });

        let inputs = f.get("inputs").map(|n| self.inputs(n)).unwrap_or_default();
        let vars = f
            .get("vars")
            .map(|n| self.vars(n, &inputs))
            .unwrap_or_default();
        let secrets = f
            .get("secrets")
            .map(|n| self.secrets(n))
            .unwrap_or_default();
        let sites = f
            .get("sites")
            .map(|n| self.sites(n, &inputs, &vars, &secrets))
            .unwrap_or_default();
        let vault = f
            .get("vault")
            .and_then(|n| self.vault(n, &inputs, &vars, &secrets));
        let (plugins, plugin_spans) = f
            .get("plugins")
            // a broken `vault:` (reported) still counts as declared for grants
            .map(|n| self.plugins(n, &secrets, &sites, f.get("vault").is_some()))
            .unwrap_or_default();

        let (steps, syntax) = match self.required(
            &f,
            root,
            "steps",
            "the workflow",
            "add `steps:` with a list of steps, each with `id:` and `uses:`",
        ) {
            Some(n) => self.steps(n, &inputs, &vars, &secrets, &plugins),
            None => (Vec::new(), Vec::new()),
        };

        let wf = Workflow {
            source: Arc::clone(&self.sink.source),
            name: name?,
            description,
            inputs,
            vars,
            secrets,
            plugins,
            sites,
            vault,
            steps,
        };
        Some(Document {
            wf,
            plugin_spans,
            steps: syntax,
        })
    }

    fn inputs(&mut self, node: &Node) -> IndexMap<String, InputDecl> {
        let mut out = IndexMap::new();
        let help = "declare inputs as `NAME: { type: string, required: true }`";
        for (name, k, v) in self.map_entries(node, "`inputs`", help) {
            if !units::is_ident(name) {
                let d = self.sink.error(
                    "bad-identifier",
                    k.span,
                    format!("`{name}` cannot be used as an input name"),
                    "invalid name",
                );
                d.set_help("names start with a letter or `_` and use letters, digits, `_` and `-`, so that `${{ inputs.NAME }}` works");
                continue;
            }
            let what = format!("input `{name}`");
            let decl = if v.is_null() {
                Some(InputDecl {
                    ty: FieldType::String,
                    required: false,
                    default: None,
                    doc: String::new(),
                })
            } else {
                self.input_decl(v, &what)
            };
            if let Some(decl) = decl {
                out.insert(name.to_owned(), decl);
            }
        }
        out
    }

    fn input_decl(&mut self, v: &Node, what: &str) -> Option<InputDecl> {
        let f = self.fields(
            v,
            what,
            INPUT_FIELDS,
            "declare an input as `{ type: string, required: true, default: ..., doc: ... }`",
        )?;
        let mut ok = true;
        let ty = match f.get("type") {
            None => FieldType::String,
            Some(t) => match t.as_str().and_then(field_type) {
                Some(ty) => ty,
                None => {
                    let shown = t
                        .as_str()
                        .map_or_else(|| t.to_json().to_string(), str::to_owned);
                    let d = self.sink.error(
                        "bad-input",
                        t.span,
                        format!("unknown type `{shown}` for {what}"),
                        "unknown type",
                    );
                    d.set_help(suggest::help(&shown, "types", TYPE_NAMES));
                    ok = false;
                    FieldType::Any
                }
            },
        };
        let required = match f.get("required") {
            None => false,
            Some(n) => match n.value {
                Y::Bool(b) => b,
                _ => {
                    self.wrong_type(n, &format!("`required` of {what}"), "true or false", "");
                    ok = false;
                    false
                }
            },
        };
        let doc = f
            .get("doc")
            .and_then(|n| self.string(n, &format!("`doc` of {what}"), ""))
            .unwrap_or("")
            .to_owned();
        let default = match f.raw("default") {
            None => None,
            Some(d) => {
                let value = d.to_json();
                if d.has_expr() {
                    let e = self.sink.error(
                        "bad-default",
                        d.span,
                        format!("the default of {what} cannot use expressions"),
                        "expression in a default",
                    );
                    e.set_help("defaults are literal values; compute derived values in `vars:`");
                    ok = false;
                } else if !ty.accepts(&value) {
                    let e = self.sink.error(
                        "bad-default",
                        d.span,
                        format!(
                            "the default of {what} must be {} {}, but it is {}",
                            crate::error::article(ty.as_str()),
                            ty.as_str(),
                            d.kind()
                        ),
                        format!("not {} {}", crate::error::article(ty.as_str()), ty.as_str()),
                    );
                    e.set_help(format!(
                        "change the default or the input's `type` (now `{}`)",
                        ty.as_str()
                    ));
                    ok = false;
                }
                if required {
                    if let Some(k) = f.key("required") {
                        let e = self.sink.error(
                            "bad-input",
                            k.span,
                            format!("{what} is required and also has a default"),
                            "required here",
                        );
                        e.set_help("a default is only used when the input is not given: remove `required: true` or the default");
                    }
                    ok = false;
                }
                Some(value)
            }
        };
        // Keep the declaration even when it has problems (they are reported),
        // so that references to it are not reported as undefined too.
        let _ = ok;
        Some(InputDecl {
            ty,
            required,
            default,
            doc,
        })
    }

    fn vars(
        &mut self,
        node: &Node,
        inputs: &IndexMap<String, InputDecl>,
    ) -> IndexMap<String, Template> {
        let entries = self.map_entries(node, "`vars`", "declare vars as `NAME: value`");
        let names: Vec<&str> = entries.iter().map(|(n, _, _)| *n).collect();
        let mut out: IndexMap<String, Template> = IndexMap::new();
        for (i, (name, k, v)) in entries.iter().enumerate() {
            if !units::is_ident(name) {
                let d = self.sink.error(
                    "bad-identifier",
                    k.span,
                    format!("`{name}` cannot be used as a var name"),
                    "invalid name",
                );
                d.set_help("names start with a letter or `_` and use letters, digits, `_` and `-`, so that `${{ vars.NAME }}` works");
                continue;
            }
            let Some(t) = self.template(v) else {
                // Keep the name declared so uses of it are not reported too.
                out.insert((*name).to_owned(), Template::Literal(Value::Null));
                continue;
            };
            for r in t.refs() {
                let Some(target) = r.path.first() else {
                    continue;
                };
                match r.root.as_str() {
                    "inputs" => {
                        if !inputs.contains_key(target) {
                            self.undefined(
                                r,
                                "input",
                                inputs.keys().map(String::as_str).collect(),
                                "inputs",
                            );
                        }
                    }
                    "vars" if target == name => {
                        let d = self.sink.error(
                            "bad-var-reference",
                            r.span,
                            format!("var `{name}` refers to itself"),
                            "self-reference",
                        );
                        d.set_help("a var may only use inputs and vars declared before it");
                    }
                    "vars" => {
                        match names.iter().position(|n| n == target) {
                            Some(j) if j < i => {}
                            Some(_) => {
                                let d = self.sink.error(
                                "bad-var-reference",
                                r.span,
                                format!("var `{name}` uses `vars.{target}`, which is declared after it"),
                                "declared later",
                            );
                                d.set_help(format!("move `{target}` above `{name}` in `vars:`"));
                            }
                            None => {
                                self.undefined(r, "var", names[..i].to_vec(), "vars");
                            }
                        }
                    }
                    other => {
                        let d = self.sink.error(
                            "bad-var-reference",
                            r.span,
                            format!("vars cannot use `{other}`"),
                            format!("`{other}` is not available in vars"),
                        );
                        d.set_help(match other {
                            "secrets" => "vars are shown in plans; pass secrets directly in a step's `with:` (the step's plugin needs the grant)",
                            "steps" => "vars are computed before any step runs; use the step output directly in the `with:` of a later step",
                            _ => "vars may only use `inputs.NAME` and earlier `vars.NAME`",
                        });
                    }
                }
            }
            out.insert((*name).to_owned(), t);
        }
        out
    }

    fn undefined(&mut self, r: &Ref, what: &str, known: Vec<&str>, section: &str) {
        let name = r.path.first().map_or("", String::as_str);
        let d = self.sink.error(
            &format!("undefined-{what}"),
            r.seg(1),
            format!("`{}` is not defined: no {what} `{name}`", r.dotted()),
            format!("no such {what}"),
        );
        let mut help = String::new();
        if let Some(c) = suggest::closest(name, known.iter().copied()) {
            help.push_str(&format!("did you mean `{c}`? "));
        }
        if known.is_empty() {
            help.push_str(&format!("declare it under `{section}:`"));
        } else {
            help.push_str(&format!(
                "declared {section}: {}",
                suggest::list(known.iter().copied())
            ));
        }
        d.set_help(help);
    }

    fn secrets(&mut self, node: &Node) -> IndexMap<String, SecretDecl> {
        let mut out = IndexMap::new();
        let help = "declare secrets as `NAME: { env: ENV_VAR }`";
        for (name, k, v) in self.map_entries(node, "`secrets`", help) {
            if !units::is_ident(name) {
                let d = self.sink.error(
                    "bad-identifier",
                    k.span,
                    format!("`{name}` cannot be used as a secret name"),
                    "invalid name",
                );
                d.set_help("names start with a letter or `_` and use letters, digits, `_` and `-`");
                continue;
            }
            let what = format!("secret `{name}`");
            // A declaration with problems (reported) still declares the name,
            // so that uses and grants of it are not reported as undefined too.
            let broken = SecretDecl { env: String::new() };
            let Some(f) = self.fields(v, &what, SECRET_FIELDS, help) else {
                out.insert(name.to_owned(), broken);
                continue;
            };
            let Some(env_node) = self.required(
                &f,
                v,
                "env",
                &what,
                "name the environment variable: `env: MY_TOKEN`",
            ) else {
                out.insert(name.to_owned(), broken);
                continue;
            };
            let Some(env) = self.string(env_node, &format!("`env` of {what}"), "") else {
                out.insert(name.to_owned(), broken);
                continue;
            };
            if !units::is_env_name(env) {
                let d = self.sink.error(
                    "bad-env",
                    env_node.span,
                    format!("`{env}` is not a valid environment variable name"),
                    "invalid name",
                );
                d.set_help("use letters, digits and `_`, not starting with a digit");
                out.insert(name.to_owned(), broken);
                continue;
            }
            out.insert(
                name.to_owned(),
                SecretDecl {
                    env: env.to_owned(),
                },
            );
        }
        out
    }

    /// A path or URL that may use inputs and vars (sites, vault).
    fn setup_template(
        &mut self,
        node: &Node,
        what: &str,
        inputs: &IndexMap<String, InputDecl>,
        vars: &IndexMap<String, Template>,
    ) -> Option<Template> {
        self.string(
            node,
            what,
            "write a path, e.g. `./lab/site-a` or `${{ inputs.lab }}/site-a`",
        )?;
        let t = self.template(node)?;
        let mut ok = true;
        for r in t.refs() {
            let target = r.path.first().map(String::as_str).unwrap_or("");
            match r.root.as_str() {
                "inputs" if !inputs.contains_key(target) => {
                    self.undefined(
                        r,
                        "input",
                        inputs.keys().map(String::as_str).collect(),
                        "inputs",
                    );
                    ok = false;
                }
                "vars" if !vars.contains_key(target) => {
                    self.undefined(r, "var", vars.keys().map(String::as_str).collect(), "vars");
                    ok = false;
                }
                "inputs" | "vars" => {}
                other => {
                    let d = self.sink.error(
                        "bad-reference",
                        r.span,
                        format!("{what} cannot use `{other}`"),
                        format!("`{other}` is not available here"),
                    );
                    d.set_help("sites and the vault are fixed before any step runs: use `inputs.NAME` or `vars.NAME`");
                    ok = false;
                }
            }
        }
        ok.then_some(t)
    }

    fn sites(
        &mut self,
        node: &Node,
        inputs: &IndexMap<String, InputDecl>,
        vars: &IndexMap<String, Template>,
        secrets: &IndexMap<String, SecretDecl>,
    ) -> IndexMap<String, SiteDecl> {
        let mut out = IndexMap::new();
        let help = "declare sites as `NAME: { path: FOLDER }` or `NAME: { url: CONTAINER_URL, key: SECRET }`";
        for (name, k, v) in self.map_entries(node, "`sites`", help) {
            if !units::is_step_id(name) {
                let d = self.sink.error(
                    "bad-identifier",
                    k.span,
                    format!("`{name}` cannot be used as a site name"),
                    "invalid name",
                );
                d.set_help("a site name uses lower-case letters, digits, `_` and `-`, and starts with a letter");
                continue;
            }
            let what = format!("site `{name}`");
            // A broken declaration still declares the name, so grants of it
            // are not reported as undefined too.
            let mut decl = SiteDecl {
                path: None,
                url: None,
                key: None,
                ca_file: None,
                insecure_http: false,
                doc: String::new(),
            };
            let Some(f) = self.fields(v, &what, SITE_FIELDS, help) else {
                out.insert(name.to_owned(), decl);
                continue;
            };
            decl.doc = f
                .get("doc")
                .and_then(|n| self.string(n, &format!("`doc` of {what}"), "one line of text"))
                .unwrap_or("")
                .to_owned();
            match (f.get("path"), f.get("url")) {
                (Some(_), Some(u)) => {
                    let d = self.sink.error(
                        "conflicting-fields",
                        u.span,
                        format!("{what} has both `path` and `url`"),
                        "one of the two",
                    );
                    d.set_help("a site is a folder (`path:`) or an Azure Blob container (`url:` with `key:`), not both");
                }
                (None, None) => {
                    let d = self.sink.error(
                        "missing-field",
                        k.span,
                        format!("{what} has no `path` and no `url`"),
                        "`path` or `url` is required",
                    );
                    d.set_help("give the site's folder: `path: ./lab/site-a` (relative to the workflow file), or an Azure Blob container: `url: https://ACCOUNT.blob.core.windows.net/CONTAINER` with `key: SECRET`");
                }
                (Some(p), None) => {
                    decl.path = self.setup_template(p, &format!("`path` of {what}"), inputs, vars);
                    for field in ["key", "ca_file", "insecure_http"] {
                        if let Some(kn) = f.key(field) {
                            let d = self.sink.error(
                                "unknown-field",
                                kn.span,
                                format!(
                                    "`{field}` of {what} only applies to Azure Blob sites (`url:`)"
                                ),
                                "not for a folder",
                            );
                            d.set_help(format!("drop `{field}:`; a folder site has no endpoint"));
                        }
                    }
                }
                (None, Some(u)) => {
                    decl.url = self.setup_template(u, &format!("`url` of {what}"), inputs, vars);
                    if let Some(c) = f.get("ca_file") {
                        decl.ca_file =
                            self.setup_template(c, &format!("`ca_file` of {what}"), inputs, vars);
                    }
                    if let Some(n) = f.get("insecure_http") {
                        match n.value {
                            crate::yaml::Value::Bool(b) => decl.insecure_http = b,
                            _ => self.wrong_type(
                                n,
                                &format!("`insecure_http` of {what}"),
                                "a boolean",
                                "`insecure_http: true` allows plain http:// to an emulator on 127.0.0.1",
                            ),
                        }
                    }
                    match f.get("key") {
                        None => {
                            let d = self.sink.error(
                                "missing-field",
                                u.span,
                                format!("{what} is an Azure Blob container but has no `key`"),
                                "needs `key`",
                            );
                            d.set_help("name the secret holding the storage account key: `key: STORAGE_KEY` (declared under `secrets:`)");
                        }
                        Some(kn) => {
                            if let Some(s) = self.string(
                                kn,
                                &format!("`key` of {what}"),
                                "name a declared secret",
                            ) {
                                if secrets.contains_key(s) {
                                    decl.key = Some(s.to_owned());
                                } else {
                                    let known: Vec<&str> =
                                        secrets.keys().map(String::as_str).collect();
                                    let d = self.sink.error(
                                        "undefined-secret",
                                        kn.span,
                                        format!("the key of {what} is secret `{s}`, which is not declared"),
                                        "no such secret",
                                    );
                                    d.set_help(if known.is_empty() {
                                        format!("declare it under `secrets:`, e.g. `{s}: {{ env: AZURE_STORAGE_KEY }}`")
                                    } else {
                                        suggest::help(s, "declared secrets", &known)
                                    });
                                }
                            }
                        }
                    }
                }
            }
            out.insert(name.to_owned(), decl);
        }
        out
    }

    fn vault(
        &mut self,
        node: &Node,
        inputs: &IndexMap<String, InputDecl>,
        vars: &IndexMap<String, Template>,
        secrets: &IndexMap<String, SecretDecl>,
    ) -> Option<VaultDecl> {
        let help = "declare the vault as `vault: { url: FOLDER_OR_URL, key: SECRET }`";
        let f = self.fields(node, "`vault`", VAULT_FIELDS, help)?;
        let url = self
            .required(
                &f,
                node,
                "url",
                "`vault`",
                "give a folder or an `s3://` / `azblob://` URL: `url: ./lab/vault`",
            )
            .and_then(|u| self.setup_template(u, "`url` of `vault`", inputs, vars));
        let key = match f.get("key") {
            None => None,
            Some(k) => {
                let name = self.string(
                    k,
                    "`key` of `vault`",
                    "name a secret declared under `secrets:`",
                )?;
                if !secrets.contains_key(name) {
                    let known: Vec<&str> = secrets.keys().map(String::as_str).collect();
                    let d = self.sink.error(
                        "undefined-secret",
                        k.span,
                        format!("the vault key is secret `{name}`, which is not declared"),
                        "no such secret",
                    );
                    d.set_help(if known.is_empty() {
                        format!("declare it under `secrets:`, e.g. `{name}: {{ env: VAULT_KEY }}`, or drop `key:` to use LIFEBOAT_VAULT_KEY")
                    } else {
                        suggest::help(name, "declared secrets", &known)
                    });
                    return None;
                }
                Some(name.to_owned())
            }
        };
        let key_file = match f.get("key_file") {
            None => None,
            Some(n) => {
                if let (Some(_), Some(k)) = (&key, f.key("key")) {
                    let d = self.sink.error(
                        "conflicting-fields",
                        k.span,
                        "the vault has both `key` and `key_file`",
                        "one of the two",
                    );
                    d.set_help("keep `key: SECRET` (the key from an environment variable) or `key_file: PATH`, not both");
                    return None;
                }
                Some(self.setup_template(n, "`key_file` of `vault`", inputs, vars)?)
            }
        };
        Some(VaultDecl {
            url: url?,
            key,
            key_file,
        })
    }

    fn access(&mut self, node: &Node, what: &str) -> Option<Access> {
        let s = self.string(node, what, "write `read` or `write`")?;
        match s {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            other => {
                let d = self.sink.error(
                    "bad-access",
                    node.span,
                    format!("`{other}` is not an access level for {what}"),
                    "expected `read` or `write`",
                );
                d.set_help(suggest::help(other, "access levels", ACCESS_NAMES));
                None
            }
        }
    }

    fn plugins(
        &mut self,
        node: &Node,
        secrets: &IndexMap<String, SecretDecl>,
        sites: &IndexMap<String, SiteDecl>,
        has_vault: bool,
    ) -> (IndexMap<String, PluginDecl>, IndexMap<String, SourceSpan>) {
        let mut out = IndexMap::new();
        self.declared_aliases.clear();
        let mut spans = IndexMap::new();
        let help = "declare plugins as `ALIAS: { source: builtin:NAME }`";
        for (alias, k, v) in self.map_entries(node, "`plugins`", help) {
            if !units::is_step_id(alias) {
                let d = self.sink.error(
                    "bad-alias",
                    k.span,
                    format!("`{alias}` is not a valid plugin alias"),
                    "invalid alias",
                );
                d.set_help("an alias uses lower-case letters, digits, `_` and `-`, and starts with a letter");
                continue;
            }
            self.declared_aliases.insert(alias.to_owned());
            let what = format!("plugin `{alias}`");
            let Some(f) = self.fields(v, &what, PLUGIN_FIELDS, help) else {
                continue;
            };
            let source = self
                .required(&f, v, "source", &what, "say where the plugin comes from: `source: builtin:NAME` or `source: path/to/plugin.wasm`")
                .and_then(|s| self.plugin_source(s, &what).map(|p| (p, s.span)));
            let grants = f
                .get("grants")
                .map(|g| self.grants(g, &what, secrets, sites, has_vault))
                .unwrap_or_default();
            let limits = f
                .get("limits")
                .map(|l| self.limits(l, &what))
                .unwrap_or_default();
            if let Some((source, span)) = source {
                spans.insert(alias.to_owned(), span);
                out.insert(
                    alias.to_owned(),
                    PluginDecl {
                        alias: alias.to_owned(),
                        source,
                        grants,
                        limits,
                    },
                );
            }
        }
        (out, spans)
    }

    fn plugin_source(&mut self, node: &Node, what: &str) -> Option<PluginSource> {
        let s = self.string(node, &format!("`source` of {what}"), "")?;
        if let Some(name) = s.strip_prefix("builtin:") {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                let d = self.sink.error(
                    "bad-source",
                    node.span,
                    format!("`{s}` does not name a bundled plugin"),
                    "invalid builtin name",
                );
                d.set_help("write `builtin:NAME`, e.g. `builtin:demo`");
                return None;
            }
            return Some(PluginSource::Builtin(name.to_owned()));
        }
        if !s.ends_with(".wasm") {
            let d = self.sink.error(
                "bad-source",
                node.span,
                format!("plugin source `{s}` is neither `builtin:NAME` nor a `.wasm` file"),
                "unknown kind of source",
            );
            d.set_help(if s.contains(':') {
                "bundled plugins are written `builtin:NAME`".to_owned()
            } else {
                "give the path of a WebAssembly component ending in `.wasm` (relative to the workflow file), or `builtin:NAME`".to_owned()
            });
            return None;
        }
        Some(PluginSource::Path(PathBuf::from(s)))
    }

    fn grants(
        &mut self,
        node: &Node,
        what: &str,
        secrets: &IndexMap<String, SecretDecl>,
        sites: &IndexMap<String, SiteDecl>,
        has_vault: bool,
    ) -> Grants {
        let mut g = Grants::default();
        let gwhat = format!("`grants` of {what}");
        let Some(f) = self.fields(
            node,
            &gwhat,
            GRANT_FIELDS,
            "grants are `http: [HOST, ...]`, `insecure_http: true`, `secrets: [NAME, ...]`, `sites: { NAME: read|write }` and `vault: read|write`",
        ) else {
            return g;
        };
        if let Some(n) = f.get("insecure_http") {
            match n.value {
                crate::yaml::Value::Bool(b) => g.insecure_http = b,
                _ => self.wrong_type(
                    n,
                    &format!("`grants.insecure_http` of {what}"),
                    "a boolean",
                    "`insecure_http: true` allows plain http:// to granted hosts on 127.0.0.1",
                ),
            }
        }
        if let Some(s) = f.get("sites") {
            let swhat = format!("`grants.sites` of {what}");
            for (name, k, v) in self.map_entries(
                s,
                &swhat,
                "grant sites as `sites: { NAME: read }` or `write`",
            ) {
                if !sites.contains_key(name) {
                    let known: Vec<&str> = sites.keys().map(String::as_str).collect();
                    let d = self.sink.error(
                        "undefined-site",
                        k.span,
                        format!("{what} is granted site `{name}`, which is not declared"),
                        "no such site",
                    );
                    d.set_help(if known.is_empty() {
                        format!(
                            "declare it under `sites:`, e.g. `{name}: {{ path: ./lab/{name} }}`"
                        )
                    } else {
                        suggest::help(name, "declared sites", &known)
                    });
                    continue;
                }
                if let Some(a) = self.access(v, &format!("site `{name}` in {swhat}")) {
                    g.sites.insert(name.to_owned(), a);
                }
            }
        }
        if let Some(v) = f.get("vault")
            && let Some(a) = self.access(v, &format!("`grants.vault` of {what}"))
        {
            if has_vault {
                g.vault = Some(a);
            } else {
                let d = self.sink.error(
                    "undefined-vault",
                    v.span,
                    format!("{what} is granted the vault, but the workflow declares no `vault:`"),
                    "no vault declared",
                );
                d.set_help("declare it at the top level: `vault: { url: ./lab/vault }`");
            }
        }
        if let Some(h) = f.get("http") {
            for (pat, n) in self.string_list(
                h,
                &format!("`grants.http` of {what}"),
                "list hosts, e.g. `http: [\"api.example.com\", \"127.0.0.1:8080\"]`",
            ) {
                match units::parse_http_grant(pat) {
                    Ok(p) if g.insecure_http && !units::is_loopback_grant(&p) => {
                        let d = self.sink.error(
                            "insecure-http",
                            n.span,
                            format!(
                                "{what} may use plain http:// (`insecure_http: true`), but `{pat}` is not on this machine"
                            ),
                            "not a loopback host",
                        );
                        d.set_help("plain http:// is only for an emulator on 127.0.0.1: grant only `127.0.0.1`, `[::1]` or `localhost` (with a port if you like), or drop `insecure_http` and use https://");
                    }
                    Ok(p) => g.http.push(p),
                    Err(e) => {
                        let d = self.sink.error(
                            "bad-http-grant",
                            n.span,
                            format!("`{pat}` is not a valid http grant: {e}"),
                            "invalid host pattern",
                        );
                        d.set_help("write `host`, `host:port`, `*.domain` or `*.domain:port`, e.g. `api.example.com:443`");
                    }
                }
            }
        }
        if let Some(s) = f.get("secrets") {
            for (name, n) in self.string_list(
                s,
                &format!("`grants.secrets` of {what}"),
                "list secret names declared under `secrets:`",
            ) {
                if secrets.contains_key(name) {
                    if !g.secrets.iter().any(|x| x == name) {
                        g.secrets.push(name.to_owned());
                    }
                } else {
                    let known: Vec<&str> = secrets.keys().map(String::as_str).collect();
                    let d = self.sink.error(
                        "undefined-secret",
                        n.span,
                        format!("{what} is granted secret `{name}`, which is not declared"),
                        "no such secret",
                    );
                    d.set_help(if known.is_empty() {
                        format!("declare it under `secrets:`, e.g. `{name}: {{ env: ENV_VAR }}`")
                    } else {
                        suggest::help(name, "declared secrets", &known)
                    });
                }
            }
        }
        g
    }

    fn limits(&mut self, node: &Node, what: &str) -> Limits {
        let mut l = Limits::default();
        let lwhat = format!("`limits` of {what}");
        let Some(f) = self.fields(
            node,
            &lwhat,
            LIMIT_FIELDS,
            "limits are `memory: 64MiB` and `timeout: 30s`",
        ) else {
            return l;
        };
        if let Some(m) = f.get("memory") {
            let raw = match &m.value {
                Y::Str(s) => Some(s.clone()),
                Y::Int(_) | Y::UInt(_) | Y::Float(_) => Some(m.to_json().to_string()),
                _ => None,
            };
            match raw.as_deref().map(units::parse_memory) {
                Some(Ok(b)) => l.memory = Some(b),
                Some(Err(e)) => {
                    let d = self.sink.error(
                        "bad-memory",
                        m.span,
                        format!(
                            "`{}` is not a valid memory size: {e}",
                            raw.unwrap_or_default()
                        ),
                        "invalid size",
                    );
                    d.set_help("write a whole number and a unit: B, KiB, MiB or GiB, e.g. `64MiB`");
                }
                None => self.wrong_type(
                    m,
                    &format!("`memory` of {what}"),
                    "a size such as `64MiB`",
                    "units are B, KiB, MiB and GiB",
                ),
            }
        }
        if let Some(t) = f.get("timeout") {
            l.timeout = self.duration(t, &format!("`timeout` of {what}"));
        }
        l
    }

    // ------------------------------------------------------------ steps

    fn steps(
        &mut self,
        node: &Node,
        inputs: &IndexMap<String, InputDecl>,
        vars: &IndexMap<String, Template>,
        secrets: &IndexMap<String, SecretDecl>,
        plugins: &IndexMap<String, PluginDecl>,
    ) -> (Vec<Step>, Vec<StepSyntax>) {
        let Y::Seq(items) = &node.value else {
            self.wrong_type(
                node,
                "`steps`",
                "a list of steps",
                "write each step as a list item: `- id: NAME` then `uses: ALIAS/STEP`",
            );
            return (Vec::new(), Vec::new());
        };
        if items.is_empty() {
            let d = self.sink.error(
                "no-steps",
                node.span,
                "the workflow has no steps",
                "empty list",
            );
            d.set_help("add at least one step with `id:` and `uses:`");
            return (Vec::new(), Vec::new());
        }

        // First pass: ids, so that steps can refer to later steps.
        let mut ids: Vec<Option<(String, SourceSpan)>> = Vec::new();
        let mut first_seen: HashMap<String, SourceSpan> = HashMap::new();
        for item in items {
            let id = match &item.value {
                Y::Map(entries) => entries
                    .iter()
                    .find(|(k, _)| k.as_str() == Some("id"))
                    .and_then(|(_, v)| v.as_str().map(|s| (s.to_owned(), v.span))),
                _ => None,
            };
            let id = id.and_then(|(id, span)| {
                if !units::is_step_id(&id) {
                    let d = self.sink.error(
                        "bad-step-id",
                        span,
                        format!("`{id}` is not a valid step id"),
                        "invalid id",
                    );
                    d.set_help("a step id uses lower-case letters, digits, `_` and `-`, and starts with a letter");
                    return None;
                }
                if let Some(prev) = first_seen.get(&id) {
                    let (line, _) = self.sink.source.line_col(prev.offset());
                    let d = self.sink.error(
                        "duplicate-step-id",
                        span,
                        format!("step id `{id}` is used twice"),
                        format!("already used by the step on line {line}"),
                    );
                    d.set_help("step ids must be unique; rename one of the steps");
                    return None;
                }
                first_seen.insert(id.clone(), span);
                Some((id, span))
            });
            ids.push(id);
        }
        let all_ids: Vec<String> = ids.iter().flatten().map(|(id, _)| id.clone()).collect();
        let step_index: HashMap<String, usize> = all_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        let ctx = RefCtx {
            inputs,
            vars,
            secrets,
            plugins,
            step_ids: &all_ids,
            step_index: &step_index,
        };

        let mut steps = Vec::new();
        let mut syntax = Vec::new();
        // edges[i] = (target step index, span where the dependency is written)
        let mut edges: Vec<Vec<(usize, SourceSpan)>> = Vec::new();
        for (item, id) in items.iter().zip(&ids) {
            if let Some((step, syn, deps)) = self.step(item, id.as_ref(), &ctx) {
                steps.push(step);
                syntax.push(syn);
                edges.push(deps);
            }
        }
        // Resolve edges into indexes of `steps`.
        let pos: HashMap<&str, usize> = steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let graph: Vec<Vec<(usize, SourceSpan)>> = edges
            .iter()
            .map(|deps| {
                deps.iter()
                    .filter_map(|(t, sp)| pos.get(all_ids[*t].as_str()).map(|i| (*i, *sp)))
                    .collect()
            })
            .collect();
        self.cycles(&steps, &graph);
        (steps, syntax)
    }

    /// Checks one step. Returns the step, its spans, and its dependencies as
    /// (index into the file's step ids, span).
    fn step(
        &mut self,
        node: &Node,
        id: Option<&(String, SourceSpan)>,
        ctx: &RefCtx<'_>,
    ) -> Option<(Step, StepSyntax, Deps)> {
        let raw_id = match &node.value {
            Y::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some("id"))
                .and_then(|(_, v)| v.as_str()),
            _ => None,
        };
        let label = match raw_id {
            Some(id) => format!("step `{id}`"),
            None => "a step".to_owned(),
        };
        let f = self.fields(
            node,
            &label,
            STEP_FIELDS,
            "a step is a mapping with `id:`, `uses:` and optionally `with:`, `needs:`, `if:`, `for_each:`, `timeout:`, `retry:`",
        )?;
        let id_node = self.required(
            &f,
            node,
            "id",
            &label,
            "give the step an id: `- id: my-step`",
        );
        if let Some(n) = id_node
            && n.as_str().is_none()
        {
            self.wrong_type(n, "a step `id`", "a string", "");
        }
        let uses = self
            .required(
                &f,
                node,
                "uses",
                &label,
                "say which plugin step runs: `uses: ALIAS/STEP`",
            )
            .and_then(|u| self.uses(u, &label, ctx.plugins));

        let mut with = IndexMap::new();
        let mut with_spans = IndexMap::new();
        if let Some(w) = f.get("with") {
            for (k, kn, v) in self.map_entries(
                w,
                &format!("`with` of {label}"),
                "write the plugin step's inputs as `NAME: value`",
            ) {
                with_spans.insert(k.to_owned(), (kn.span, v.span));
                if let Some(t) = self.template(v) {
                    with.insert(k.to_owned(), t);
                }
            }
        }

        let condition = f.get("if").and_then(|c| self.condition(c));
        let for_each = f.get("for_each").and_then(|n| self.for_each(n));
        let timeout = f
            .get("timeout")
            .and_then(|t| self.duration(t, &format!("`timeout` of {label}")));
        let retry = f
            .get("retry")
            .map_or_else(Retry::default, |r| self.retry(r, &label));

        // Dependencies.
        let own = id.map(|(s, _)| s.as_str());
        let mut deps: Vec<(usize, SourceSpan)> = Vec::new();
        let mut needs: Vec<String> = Vec::new();
        if let Some(n) = f.get("needs") {
            let list: Vec<(&str, &Node)> = match &n.value {
                Y::Str(s) => vec![(s.as_str(), n)],
                _ => self.string_list(
                    n,
                    &format!("`needs` of {label}"),
                    "list step ids: `needs: [other-step]`",
                ),
            };
            for (need, nn) in list {
                if Some(need) == own {
                    let d = self.sink.error(
                        "self-dependency",
                        nn.span,
                        format!("{label} needs itself"),
                        "the step's own id",
                    );
                    d.set_help("remove it from `needs`");
                    continue;
                }
                match ctx.step_index.get(need).copied() {
                    Some(i) => {
                        deps.push((i, nn.span));
                        needs.push(need.to_owned());
                    }
                    None => {
                        let known: Vec<&str> = ctx
                            .step_ids
                            .iter()
                            .map(String::as_str)
                            .filter(|s| Some(*s) != own)
                            .collect();
                        let d = self.sink.error(
                            "unknown-need",
                            nn.span,
                            format!("{label} needs `{need}`, but there is no step with that id"),
                            "no such step",
                        );
                        d.set_help(suggest::help(need, "steps", &known));
                    }
                }
            }
        }

        // References in with / if / for_each.
        let alias = uses.as_ref().map(|(a, _, _, _)| a.as_str());
        let mut refs: Vec<(&Ref, Place)> = Vec::new();
        for t in with.values() {
            refs.extend(t.refs().into_iter().map(|r| (r, Place::With)));
        }
        if let Some((c, _)) = &condition {
            refs.extend(c.refs().into_iter().map(|r| (r, Place::If)));
        }
        if let Some((fe, _)) = &for_each {
            refs.extend(fe.refs().into_iter().map(|r| (r, Place::ForEach)));
        }
        for (r, place) in refs {
            self.check_ref(
                r,
                place,
                &label,
                own,
                alias,
                for_each.is_some(),
                ctx,
                &mut deps,
                &mut needs,
            );
        }

        needs.sort();
        needs.dedup();
        let (id, id_span) = id.cloned()?;
        let (plugin, step, uses_span, step_name) = uses?;
        let step = Step {
            id,
            plugin,
            step,
            with,
            needs,
            condition: condition.map(|(e, _)| e),
            for_each: for_each.as_ref().map(|(t, _)| t.clone()),
            timeout,
            retry,
            span: id_span,
        };
        let syn = StepSyntax {
            uses: uses_span,
            step_name,
            with: with_spans,
            for_each: for_each.map(|(_, s)| s),
            condition: f.get("if").map(|n| n.span),
        };
        Some((step, syn, deps))
    }

    #[allow(clippy::too_many_arguments)]
    fn check_ref(
        &mut self,
        r: &Ref,
        place: Place,
        label: &str,
        own: Option<&str>,
        alias: Option<&str>,
        has_for_each: bool,
        ctx: &RefCtx<'_>,
        deps: &mut Vec<(usize, SourceSpan)>,
        needs: &mut Vec<String>,
    ) {
        let target = r.path.first().map_or("", String::as_str);
        match r.root.as_str() {
            "inputs" if !ctx.inputs.contains_key(target) => {
                self.undefined(
                    r,
                    "input",
                    ctx.inputs.keys().map(String::as_str).collect(),
                    "inputs",
                );
            }
            "vars" if !ctx.vars.contains_key(target) => {
                self.undefined(
                    r,
                    "var",
                    ctx.vars.keys().map(String::as_str).collect(),
                    "vars",
                );
            }
            "secrets" => {
                if !ctx.secrets.contains_key(target) {
                    self.undefined(
                        r,
                        "secret",
                        ctx.secrets.keys().map(String::as_str).collect(),
                        "secrets",
                    );
                } else if let Some(alias) = alias
                    && let Some(p) = ctx.plugins.get(alias)
                    && !p.grants.secrets.iter().any(|s| s == target)
                {
                    let d = self.sink.error(
                        "missing-grant",
                        r.span,
                        format!(
                            "{label} uses secret `{target}`, but plugin `{alias}` is not granted it"
                        ),
                        "secret not granted",
                    );
                    d.set_help(format!(
                        "add `{target}` to `grants.secrets` of plugin `{alias}` (plugins.{alias}.grants.secrets: [{target}])"
                    ));
                }
            }
            "steps" => {
                if Some(target) == own {
                    let d = self.sink.error(
                        "self-dependency",
                        r.seg(1),
                        format!("{label} uses its own output `{}`", r.dotted()),
                        "this step itself",
                    );
                    d.set_help(
                        "a step's outputs are only known after it ran; use them in a later step",
                    );
                    return;
                }
                match ctx.step_index.get(target).copied() {
                    Some(i) => {
                        deps.push((i, r.seg(1)));
                        needs.push(target.to_owned());
                    }
                    None => {
                        let known: Vec<&str> = ctx
                            .step_ids
                            .iter()
                            .map(String::as_str)
                            .filter(|s| Some(*s) != own)
                            .collect();
                        let d = self.sink.error(
                            "undefined-step",
                            r.seg(1),
                            format!(
                                "`{}` refers to step `{target}`, which does not exist",
                                r.dotted()
                            ),
                            "no such step",
                        );
                        d.set_help(suggest::help(target, "steps", &known));
                    }
                }
            }
            root @ ("item" | "index") => {
                if place == Place::ForEach {
                    let d = self.sink.error(
                        "item-outside-for-each",
                        r.span,
                        format!("`{root}` cannot be used in `for_each` itself"),
                        format!("`{root}` is not bound yet"),
                    );
                    d.set_help("`item` and `index` are bound by `for_each` for the step's `with:` and `if:`");
                } else if !has_for_each {
                    let d = self.sink.error(
                        "item-outside-for-each",
                        r.span,
                        format!("`{root}` is used in {label}, which has no `for_each`"),
                        format!("`{root}` is only bound in a `for_each` step"),
                    );
                    d.set_help("add `for_each:` with a list (or an expression giving a list) to the step, or remove the reference");
                }
            }
            _ => {}
        }
    }

    fn uses(
        &mut self,
        node: &Node,
        label: &str,
        plugins: &IndexMap<String, PluginDecl>,
    ) -> Option<(String, String, SourceSpan, SourceSpan)> {
        let s = self.string(
            node,
            &format!("`uses` of {label}"),
            "write `uses: ALIAS/STEP`",
        )?;
        let map = yaml::SpanMap::new(self.text, node.span, s);
        let parts: Vec<&str> = s.split('/').collect();
        let [alias, step] = parts.as_slice() else {
            let d = self.sink.error(
                "bad-uses",
                node.span,
                format!("`uses: {s}` is not of the form ALIAS/STEP"),
                "expected ALIAS/STEP",
            );
            d.set_help(format!(
                "name a plugin alias declared under `plugins:` and one of its steps, e.g. `uses: {}/STEP`",
                plugins.keys().next().map_or("ALIAS", String::as_str)
            ));
            return None;
        };
        let alias_span = map.span(0, alias.len());
        let step_span = map.span(alias.len() + 1, s.len());
        if alias.is_empty() || step.is_empty() || step.trim() != *step || alias.trim() != *alias {
            let d = self.sink.error(
                "bad-uses",
                node.span,
                format!("`uses: {s}` is not of the form ALIAS/STEP"),
                "expected ALIAS/STEP",
            );
            d.set_help("both the plugin alias and the step name must be given, without spaces");
            return None;
        }
        if !plugins.contains_key(*alias) {
            if self.declared_aliases.contains(*alias) {
                // Declared, but its declaration has problems (already reported).
                return None;
            }
            let known: Vec<&str> = plugins.keys().map(String::as_str).collect();
            let d = self.sink.error(
                "unknown-plugin",
                alias_span,
                format!("{label} uses plugin `{alias}`, which is not declared"),
                "unknown plugin alias",
            );
            d.set_help(if known.is_empty() {
                format!(
                    "declare it under `plugins:`, e.g. `{alias}: {{ source: builtin:{alias} }}`"
                )
            } else {
                suggest::help(alias, "declared plugins", &known)
            });
            return None;
        }
        Some((
            (*alias).to_owned(),
            (*step).to_owned(),
            node.span,
            step_span,
        ))
    }

    fn condition(&mut self, node: &Node) -> Option<(Expr, SourceSpan)> {
        let help =
            "write a condition as `if: ${{ inputs.kind == 'test' }}`, or `if: true` / `if: false`";
        match &node.value {
            Y::Bool(b) => Some((
                Expr::literal(Value::Bool(*b), b.to_string(), node.span),
                node.span,
            )),
            Y::Str(_) => match self.template(node)? {
                Template::Expr(e) => Some((e, node.span)),
                _ => {
                    let d = self.sink.error(
                        "bad-condition",
                        node.span,
                        "`if` must be a single `${{ … }}` expression",
                        "not a single expression",
                    );
                    d.set_help(help);
                    None
                }
            },
            _ => {
                self.wrong_type(node, "`if`", "a boolean or a `${{ … }}` expression", help);
                None
            }
        }
    }

    fn for_each(&mut self, node: &Node) -> Option<(Template, SourceSpan)> {
        let help = "give a list (`for_each: [a, b]`) or one expression that gives a list (`for_each: ${{ steps.discover.outputs.vms }}`)";
        match &node.value {
            Y::Seq(_) => self.template(node).map(|t| (t, node.span)),
            Y::Str(_) => match self.template(node)? {
                t @ Template::Expr(_) => Some((t, node.span)),
                _ => {
                    let d = self.sink.error(
                        "bad-for-each",
                        node.span,
                        "`for_each` must be a list or a single `${{ … }}` expression",
                        "not a list",
                    );
                    d.set_help(help);
                    None
                }
            },
            _ => {
                self.wrong_type(
                    node,
                    "`for_each`",
                    "a list or a `${{ … }}` expression",
                    help,
                );
                None
            }
        }
    }

    fn retry(&mut self, node: &Node, label: &str) -> Retry {
        let mut retry = Retry::default();
        let attempts_node = match &node.value {
            Y::Int(_) | Y::UInt(_) => Some(node),
            Y::Map(_) => {
                let Some(f) = self.fields(
                    node,
                    &format!("`retry` of {label}"),
                    RETRY_FIELDS,
                    "write `retry: 3` or `retry: { attempts: 3, backoff: 1s }`",
                ) else {
                    return retry;
                };
                if let Some(b) = f.get("backoff") {
                    retry.backoff = self
                        .duration(b, "`retry.backoff`")
                        .unwrap_or(DEFAULT_BACKOFF);
                }
                f.get("attempts")
            }
            _ => {
                self.wrong_type(
                    node,
                    &format!("`retry` of {label}"),
                    "a number of attempts or a mapping",
                    "write `retry: 3` or `retry: { attempts: 3, backoff: 1s }`",
                );
                return retry;
            }
        };
        if let Some(a) = attempts_node {
            let n = match a.value {
                Y::Int(i) => u32::try_from(i).ok(),
                Y::UInt(u) => u32::try_from(u).ok(),
                _ => None,
            };
            match n {
                Some(n) if (1..=MAX_ATTEMPTS).contains(&n) => retry.attempts = n,
                _ => {
                    let d = self.sink.error(
                        "bad-retry",
                        a.span,
                        format!("retry attempts must be a whole number from 1 to {MAX_ATTEMPTS}"),
                        "invalid number of attempts",
                    );
                    d.set_help(
                        "`attempts` counts every try: 1 means no retry, 3 means up to two retries",
                    );
                }
            }
        }
        retry
    }

    /// Report dependency cycles, each once, naming the steps in it.
    fn cycles(&mut self, steps: &[Step], graph: &[Vec<(usize, SourceSpan)>]) {
        let n = steps.len();
        // Kahn: drop every step that does not (transitively) wait on a cycle.
        let mut waiting: Vec<usize> = graph.iter().map(Vec::len).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, deps) in graph.iter().enumerate() {
            for (t, _) in deps {
                dependents[*t].push(i);
            }
        }
        let mut remaining: Vec<bool> = vec![true; n];
        let mut ready: Vec<usize> = (0..n).filter(|i| waiting[*i] == 0).collect();
        while let Some(i) = ready.pop() {
            remaining[i] = false;
            for d in &dependents[i] {
                waiting[*d] -= 1;
                if waiting[*d] == 0 {
                    ready.push(*d);
                }
            }
        }
        let mut reported: HashSet<usize> = HashSet::new();
        for start in 0..n {
            if !remaining[start] || reported.contains(&start) {
                continue;
            }
            // Walk along remaining dependencies until a step repeats.
            let mut path: Vec<usize> = vec![start];
            let mut seen: HashMap<usize, usize> = HashMap::from([(start, 0)]);
            let cycle = loop {
                let Some(&cur) = path.last() else { break None };
                let Some((next, _)) = graph[cur].iter().find(|(t, _)| remaining[*t]) else {
                    break None;
                };
                if let Some(&at) = seen.get(next) {
                    break Some(path[at..].to_vec());
                }
                seen.insert(*next, path.len());
                path.push(*next);
            };
            let Some(mut cycle) = cycle else { continue };
            if cycle.iter().any(|c| reported.contains(c)) {
                continue;
            }
            reported.extend(cycle.iter().copied());
            // Start at the step that comes first in the file.
            if let Some(min_pos) = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| **s)
                .map(|(p, _)| p)
            {
                cycle.rotate_left(min_pos);
            }
            let first = cycle[0];
            let second = cycle.get(1).copied().unwrap_or(first);
            let span = graph[first]
                .iter()
                .find(|(t, _)| *t == second)
                .map_or(steps[first].span, |(_, s)| *s);
            let mut names: Vec<&str> = cycle.iter().map(|i| steps[*i].id.as_str()).collect();
            names.push(steps[first].id.as_str());
            let d = self.sink.error(
                "cycle",
                span,
                format!("dependency cycle: {}", names.join(" → ")),
                format!("`{}` needs `{}` here", steps[first].id, steps[second].id),
            );
            d.set_help("steps cannot depend on themselves, even indirectly; remove one of these dependencies (a `needs` entry or a `steps.ID.outputs` reference)");
        }
    }
}

/// A step's dependencies: (index into the file's step ids, where it is written).
type Deps = Vec<(usize, SourceSpan)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    With,
    If,
    ForEach,
}

/// A type name as written in `inputs:` and plugin contracts.
pub(crate) fn field_type(s: &str) -> Option<FieldType> {
    Some(match s {
        "string" => FieldType::String,
        "integer" => FieldType::Integer,
        "number" => FieldType::Number,
        "boolean" => FieldType::Boolean,
        "list" => FieldType::List,
        "object" => FieldType::Object,
        "any" => FieldType::Any,
        _ => return None,
    })
}
