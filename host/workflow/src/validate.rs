//! Checks against the plugins' contracts: [`Document`] -> [`Workflow`].

use std::collections::HashMap;

use lifeboat_contract::{FieldType, PluginInfo, StepInfo};
use serde_json::Value;

use crate::diag::{Diagnostics, Sink};
use crate::error::{article, describe};
use crate::expr::Ref;
use crate::model::Workflow;
use crate::parse::Document;
use crate::suggest;
use crate::template::Template;

/// What [`validate`] asks about plugins.
pub trait Catalog {
    /// The contract of the plugin declared under `alias`. `Err(message)`: the
    /// plugin could not be loaded; it is reported at the plugin's `source`.
    fn plugin(&self, alias: &str) -> Result<&PluginInfo, String>;
}

/// A catalog that is just a map from alias to plugin contract (aliases
/// missing from the map "could not be loaded").
impl Catalog for HashMap<String, PluginInfo> {
    fn plugin(&self, alias: &str) -> Result<&PluginInfo, String> {
        self.get(alias)
            .ok_or_else(|| format!("no plugin is registered for alias `{alias}`"))
    }
}

/// Check a parsed document against its plugins' contracts.
pub fn validate(doc: Document, catalog: &dyn Catalog) -> Result<Workflow, Diagnostics> {
    let Document {
        wf,
        plugin_spans,
        steps: syntax,
    } = doc;
    let mut sink = Sink::new(&wf.source);

    let mut plugins: HashMap<&str, &PluginInfo> = HashMap::new();
    for alias in wf.plugins.keys() {
        match catalog.plugin(alias) {
            Ok(info) => {
                plugins.insert(alias, info);
            }
            Err(msg) => {
                let span = plugin_spans
                    .get(alias)
                    .copied()
                    .unwrap_or_else(|| miette::SourceSpan::new(0.into(), 0));
                let d = sink.error(
                    "plugin-load-failed",
                    span,
                    format!("plugin `{alias}` could not be loaded: {msg}"),
                    "this plugin failed to load",
                );
                d.set_help("check the plugin's `source`: a bundled plugin (`builtin:NAME`) or a path to a WebAssembly component, relative to the workflow file");
            }
        }
    }

    // The contract of each step.
    let mut infos: HashMap<&str, (&str, &StepInfo)> = HashMap::new();
    for (step, syn) in wf.steps.iter().zip(&syntax) {
        let Some(p) = plugins.get(step.plugin.as_str()) else {
            continue;
        };
        match p.step(&step.step) {
            Some(si) => {
                infos.insert(step.id.as_str(), (step.plugin.as_str(), si));
            }
            None => {
                let names: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
                let d = sink.error(
                    "unknown-step",
                    syn.step_name,
                    format!(
                        "plugin `{}` ({} {}) has no step `{}`",
                        step.plugin, p.name, p.version, step.step
                    ),
                    "unknown step",
                );
                d.set_help(suggest::help(
                    &step.step,
                    &format!("steps of `{}`", step.plugin),
                    &names,
                ));
            }
        }
    }

    let ty_of = |r: &Ref| -> Option<FieldType> {
        match r.root.as_str() {
            "inputs" => wf.inputs.get(r.path.first()?).map(|d| d.ty),
            "vars" => match wf.vars.get(r.path.first()?)? {
                Template::Literal(v) => literal_type(v),
                Template::Interpolate(_) => Some(FieldType::String),
                _ => None,
            },
            "secrets" => Some(FieldType::String),
            "index" => Some(FieldType::Integer),
            "steps" => {
                let target = r.path.first()?;
                // A for_each step's outputs are lists, one entry per item.
                if wf.step(target)?.for_each.is_some() {
                    return Some(FieldType::List);
                }
                let (_, si) = infos.get(target.as_str())?;
                si.output(r.path.get(2)?).map(|f| f.ty)
            }
            _ => None,
        }
    };

    for (step, syn) in wf.steps.iter().zip(&syntax) {
        let label = format!("step `{}`", step.id);
        // Outputs referenced from this step.
        let mut refs: Vec<&Ref> = step.with.values().flat_map(Template::refs).collect();
        if let Some(c) = &step.condition {
            refs.extend(c.refs());
        }
        if let Some(fe) = &step.for_each {
            refs.extend(fe.refs());
        }
        for r in refs {
            if r.root != "steps" {
                continue;
            }
            let (Some(target), Some(name)) = (r.path.first(), r.path.get(2)) else {
                continue;
            };
            let Some((alias, si)) = infos.get(target.as_str()) else {
                continue;
            };
            if si.output(name).is_none() {
                let names: Vec<&str> = si.outputs.iter().map(|f| f.name.as_str()).collect();
                let d = sink.error(
                    "unknown-output",
                    r.seg(3),
                    format!(
                        "step `{target}` ({alias}/{}) has no output `{name}`",
                        si.name
                    ),
                    "unknown output",
                );
                d.set_help(suggest::help(
                    name,
                    &format!("outputs of {alias}/{}", si.name),
                    &names,
                ));
            }
        }

        if let Some(c) = &step.condition
            && let Some(t) = c.static_type(&ty_of)
            && !compatible(FieldType::Boolean, t)
        {
            let span = syn.condition.unwrap_or(c.span());
            let d = sink.error(
                "bad-condition",
                span,
                format!(
                    "`if` of {label} gives {} {}, not a boolean",
                    article(t.as_str()),
                    t.as_str()
                ),
                "not a boolean",
            );
            let from_for_each = c.refs().iter().any(|r| {
                r.root == "steps"
                    && r.path
                        .first()
                        .and_then(|t| wf.step(t))
                        .is_some_and(|s| s.for_each.is_some())
            });
            d.set_help(if from_for_each {
                "outputs of a `for_each` step are lists (one entry per item): pick one with `[i]`, or compare to get a boolean"
            } else {
                "compare it to get a boolean, e.g. `${{ inputs.kind == 'test' }}`"
            });
        }
        if let Some(fe) = &step.for_each
            && let Some(t) = template_type(fe, &ty_of)
            && !compatible(FieldType::List, t)
        {
            let span = syn.for_each.unwrap_or(step.span);
            let d = sink.error(
                "bad-for-each",
                span,
                format!(
                    "`for_each` of {label} gives {} {}, not a list",
                    article(t.as_str()),
                    t.as_str()
                ),
                "not a list",
            );
            d.set_help("`for_each` needs a list; use an output or input of type list");
        }

        let Some((alias, si)) = infos.get(step.id.as_str()) else {
            continue;
        };
        let uses = format!("{alias}/{}", si.name);
        let names: Vec<&str> = si.inputs.iter().map(|f| f.name.as_str()).collect();
        for (key, t) in &step.with {
            let (key_span, value_span) =
                syn.with.get(key).copied().unwrap_or((step.span, step.span));
            let Some(field) = si.input(key) else {
                let d = sink.error(
                    "unknown-step-input",
                    key_span,
                    format!("{uses} has no input `{key}`"),
                    "unknown input",
                );
                d.set_help(suggest::help(key, &format!("inputs of {uses}"), &names));
                continue;
            };
            let wrong = match t {
                Template::Literal(v) => (!field.ty.accepts(v)).then(|| describe(v)),
                other => template_type(other, &ty_of)
                    .filter(|found| !compatible(field.ty, *found))
                    .map(|found| format!("{} {}", article(found.as_str()), found.as_str())),
            };
            if let Some(found) = wrong {
                let expected = format!("{} {}", article(field.ty.as_str()), field.ty.as_str());
                let d = sink.error(
                    "step-input-type",
                    value_span,
                    format!("input `{key}` of {uses} must be {expected}, but this is {found}"),
                    format!("{found}, expected {expected}"),
                );
                let mut help = String::new();
                if field.ty == FieldType::String
                    && matches!(t, Template::Literal(v) if v.is_number() || v.is_boolean())
                {
                    help.push_str("write the value in quotes to pass it as text");
                } else {
                    help.push_str(&format!("give {expected}"));
                }
                if !field.doc.is_empty() {
                    help.push_str(&format!(" (`{key}`: {})", field.doc));
                }
                d.set_help(help);
            }
        }
        for field in si.inputs.iter().filter(|f| f.required) {
            if !step.with.contains_key(&field.name) && !syn.with.contains_key(&field.name) {
                let d = sink.error(
                    "missing-step-input",
                    syn.uses,
                    format!(
                        "{label} does not give the required input `{}` of {uses}",
                        field.name
                    ),
                    format!("{uses} needs `{}`", field.name),
                );
                let mut help = format!(
                    "add `{}: …` ({} {}) under `with:`",
                    field.name,
                    article(field.ty.as_str()),
                    field.ty.as_str()
                );
                if !field.doc.is_empty() {
                    help.push_str(&format!("; {}", field.doc));
                }
                d.set_help(help);
            }
        }
    }

    if sink.is_empty() {
        Ok(wf)
    } else {
        Err(sink.finish())
    }
}

fn literal_type(v: &Value) -> Option<FieldType> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(_) => FieldType::Boolean,
        Value::Number(n) if n.is_i64() || n.is_u64() => FieldType::Integer,
        Value::Number(_) => FieldType::Number,
        Value::String(_) => FieldType::String,
        Value::Array(_) => FieldType::List,
        Value::Object(_) => FieldType::Object,
    })
}

fn template_type(t: &Template, ty_of: &dyn Fn(&Ref) -> Option<FieldType>) -> Option<FieldType> {
    match t {
        Template::Literal(v) => literal_type(v),
        Template::Expr(e) => e.static_type(ty_of),
        Template::Interpolate(_) => Some(FieldType::String),
        Template::List(_) => Some(FieldType::List),
        Template::Object(_) => Some(FieldType::Object),
    }
}

/// Whether a value of type `found` can go where `expected` is wanted.
fn compatible(expected: FieldType, found: FieldType) -> bool {
    expected == FieldType::Any
        || found == FieldType::Any
        || expected == found
        || (expected == FieldType::Number && found == FieldType::Integer)
}
