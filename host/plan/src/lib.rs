//! From a validated workflow and the plugins' answers to a deterministic,
//! versioned [`Plan`]; and the text rendering of a plan.
//!
//! The same expansion code ([`expand`]) is used at plan time and, for steps
//! whose inputs were only known after apply, by the engine at apply time.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod redact;
mod render;
pub mod scope;

use std::collections::BTreeSet;

use indexmap::IndexMap;
use lifeboat_contract::{self as contract, Action, ActionKind, CallContext, PlanResult};
use lifeboat_workflow::{EvalError, Step, Template, Val, Workflow, WorkflowError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use redact::Redactor;
pub use render::render_text;
pub use scope::{StepOutputs, WorkflowScope};

/// Version of the plan document format. Bumped on incompatible change.
pub const PLAN_VERSION: u32 = 1;

/// Errors while planning.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Input(#[from] WorkflowError),
    #[error(
        "secret `{name}` reads environment variable `{env}`, which is not set; export {env} before running"
    )]
    MissingSecret { name: String, env: String },
    #[error("step `{step}`: {source}")]
    Eval { step: String, source: EvalError },
    #[error("step `{step}`: `for_each` must give a list, but it gave {found}")]
    NotAList { step: String, found: String },
    #[error("step `{step}`: `if` must give a boolean, but it gave {found}")]
    NotABool { step: String, found: String },
    #[error("step `{step}`: {message}")]
    Plugin { step: String, message: String },
    #[error("{} step(s) could not be planned:\n{}", .0.len(), .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Many(Vec<PlanError>),
}

/// A failed plugin call, as the planner and engine see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    /// Names plugin, step and cause.
    pub message: String,
    /// Whether trying again may help.
    pub retryable: bool,
}

/// How the planner and the engine reach plugins: implemented by the CLI over
/// the wasm runtime, and by fakes in tests.
pub trait PluginCalls: Sync {
    /// Ask plugin `alias` to plan `step` with `inputs`.
    fn plan(
        &self,
        alias: &str,
        ctx: &CallContext,
        step: &str,
        inputs: &Value,
        timeout: std::time::Duration,
    ) -> impl Future<Output = Result<PlanResult, CallFailure>> + Send;

    /// Ask plugin `alias` to apply one planned action of `step`.
    fn apply(
        &self,
        alias: &str,
        ctx: &CallContext,
        step: &str,
        inputs: &Value,
        action: &Action,
        timeout: std::time::Duration,
    ) -> impl Future<Output = Result<Vec<(String, Value)>, CallFailure>> + Send;
}

/// A plan: what a run would do, exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub plan_version: u32,
    /// `lifeboat:plugin@VERSION` the plan was made against.
    pub contract: String,
    pub workflow: WorkflowRef,
    /// Bound workflow inputs.
    pub inputs: IndexMap<String, Value>,
    /// Declared secrets: names and where they come from, never values.
    pub secrets: IndexMap<String, String>,
    pub plugins: IndexMap<String, PluginRef>,
    /// Declared sites (inputs and vars substituted; relative folders are
    /// relative to the workflow file).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub sites: IndexMap<String, SiteRef>,
    /// The vault, if declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultRef>,
    pub steps: Vec<PlannedStep>,
    pub summary: Summary,
}

/// A site as planned: a folder, or an Azure Blob container and where its key
/// comes from (never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SiteRef {
    Folder(String),
    Azblob {
        url: String,
        key: String,
        /// Whether the endpoint is reached over TLS (`https://`).
        #[serde(default = "yes")]
        encrypted: bool,
        /// Extra CA certificates trusted for it (a PEM file).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_file: Option<String>,
    },
}

fn yes() -> bool {
    true
}

impl std::fmt::Display for SiteRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SiteRef::Folder(p) => write!(f, "{p}"),
            SiteRef::Azblob {
                url,
                key,
                encrypted,
                ca_file,
            } => {
                write!(f, "{url} (Azure Blob; ")?;
                match (encrypted, ca_file) {
                    (true, Some(ca)) => write!(f, "TLS, also trusting the CA in {ca}")?,
                    (true, None) => write!(f, "TLS")?,
                    (false, _) => write!(f, "NOT ENCRYPTED: plain http, allowed by insecure_http")?,
                }
                write!(f, "; key from {key})")
            }
        }
    }
}

/// `https://` is required; `http://` only with `insecure_http` and a loopback host.
fn check_endpoint(site: &str, url: &str, insecure_http: bool) -> Result<bool, PlanError> {
    let bad = |message: String| PlanError::Plugin {
        step: format!("sites.{site}.url"),
        message,
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        bad(format!(
            "`{url}` is not a URL; give https://ACCOUNT.blob.core.windows.net/CONTAINER"
        ))
    })?;
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    match scheme {
        "https" => Ok(true),
        "http" if !insecure_http => Err(bad(format!(
            "`{url}` is plain http: the storage traffic and its signed requests would travel unencrypted; use https:// (for a local emulator on 127.0.0.1, `insecure_http: true` allows it)"
        ))),
        "http" if ["127.0.0.1", "localhost", "[::1]"].contains(&host) => Ok(false),
        "http" => Err(bad(format!(
            "`insecure_http` only allows plain http to 127.0.0.1 (an emulator on this machine), not to `{host}`; use https://"
        ))),
        other => Err(bad(format!(
            "`{url}`: the scheme must be https, not {other}"
        ))),
    }
}

/// The workflow's vault as planned: where, and where its key comes from (never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultRef {
    pub url: String,
    /// `secret NAME`, `file PATH` or `env:LIFEBOAT_VAULT_KEY`.
    pub key: String,
    /// For an object-store vault: how its data travels (`TLS to …`, or
    /// `NOT ENCRYPTED in transit: …`); none for a local folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
}

/// Which workflow file, by content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRef {
    pub name: String,
    pub file: String,
    pub digest: String,
}

/// A plugin as planned: source, identity, digest, grants, limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRef {
    pub source: String,
    pub name: String,
    pub version: String,
    pub digest: String,
    pub grants: GrantsRef,
    pub limits: LimitsRef,
}

/// What a plugin was granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantsRef {
    pub http: Vec<String>,
    pub secrets: Vec<String>,
    /// Site name → `read` or `write`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub sites: IndexMap<String, String>,
    /// `read` or `write`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<String>,
    /// Plain `http://` allowed to the (loopback) `http` hosts: not encrypted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_http: bool,
}

/// Limits of one plugin call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsRef {
    pub memory_mib: u64,
    pub timeout_ms: u64,
}

/// What a step instance will do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Disposition {
    /// Planned now: `actions` are exactly what apply will do.
    Planned,
    /// Inputs depend on values known only after apply: planned during apply.
    Deferred { waiting_on: Vec<String> },
    /// `if` was false.
    Skipped { reason: String },
}

/// One step instance (a step, or one item of a `for_each` step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// Instance id: `failover` or `failover[web-01]`.
    pub id: String,
    /// The workflow step it comes from.
    pub step: String,
    /// `alias/step`.
    pub uses: String,
    pub needs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    #[serde(flatten)]
    pub disposition: Disposition,
    /// Inputs as the plugin sees them, redacted; unknowns are placeholders.
    pub inputs: IndexMap<String, Value>,
    pub actions: Vec<Action>,
    /// Outputs; values known only after apply are placeholders.
    pub outputs: IndexMap<String, Value>,
    pub timeout_ms: u64,
    pub retry: RetryRef,
}

/// Retry policy as planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryRef {
    pub attempts: u32,
    pub backoff_ms: u64,
}

/// Counts of what the plan does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub read: usize,
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub transfer: usize,
    pub run: usize,
    pub deferred: usize,
    pub skipped: usize,
}

impl Summary {
    fn count(&mut self, k: ActionKind) {
        match k {
            ActionKind::Read => self.read += 1,
            ActionKind::Create => self.create += 1,
            ActionKind::Update => self.update += 1,
            ActionKind::Delete => self.delete += 1,
            ActionKind::Transfer => self.transfer += 1,
            ActionKind::Run => self.run += 1,
        }
    }
}

/// The placeholder for a value known only after apply.
pub fn placeholder(reference: &str) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("$after_apply".into(), Value::String(reference.into()));
    Value::Object(m)
}

/// Whether `v` is a placeholder.
pub fn is_placeholder(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.len() == 1 && m.contains_key("$after_apply"))
}

/// Everything the planner needs besides the workflow.
#[derive(Debug, Clone)]
pub struct PlanSetup {
    /// The workflow file as the user named it (shown in the plan).
    pub file: String,
    pub inputs: IndexMap<String, Value>,
    /// Secret values by name (from the environment).
    pub secrets: IndexMap<String, String>,
    pub plugins: IndexMap<String, PluginRef>,
    /// Step infos by `alias/step` (for sensitive fields).
    pub steps: IndexMap<String, contract::StepInfo>,
}

/// Read each declared secret from its environment variable.
pub fn read_secrets(
    wf: &Workflow,
    env: impl Fn(&str) -> Option<String>,
) -> Result<IndexMap<String, String>, PlanError> {
    let mut out = IndexMap::new();
    let mut missing = vec![];
    for (name, decl) in &wf.secrets {
        match env(&decl.env) {
            Some(v) => {
                out.insert(name.clone(), v);
            }
            None => missing.push(PlanError::MissingSecret {
                name: name.clone(),
                env: decl.env.clone(),
            }),
        }
    }
    match missing.len() {
        0 => Ok(out),
        1 => Err(missing.remove(0)),
        _ => Err(PlanError::Many(missing)),
    }
}

/// One instance of a step after expansion.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub item: Option<Value>,
    pub index: Option<usize>,
    pub state: InstanceState,
}

/// What expansion found for one instance.
#[derive(Debug, Clone)]
pub enum InstanceState {
    /// Inputs fully known: ready to plan.
    Ready(IndexMap<String, Value>),
    /// Some input or the condition depends on an unknown value.
    Deferred(Vec<String>),
    Skipped(String),
}

/// Expand a step into instances for the current scope: `for_each` items,
/// `if`, and inputs. `Err` for evaluation errors; a `for_each` over an
/// unknown list gives `Ok(None)`.
pub fn expand(step: &Step, scope: &WorkflowScope<'_>) -> Result<Option<Vec<Instance>>, PlanError> {
    let eval_err = |source| PlanError::Eval {
        step: step.id.clone(),
        source,
    };
    let items: Vec<Option<(Value, usize)>> = match &step.for_each {
        None => vec![None],
        Some(t) => match t.eval(scope).map_err(eval_err)? {
            Val::Unknown(_) => return Ok(None),
            Val::Known(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| Some((v, i)))
                .collect(),
            Val::Known(other) => {
                return Err(PlanError::NotAList {
                    step: step.id.clone(),
                    found: short(&other),
                });
            }
        },
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let scope = match &item {
            Some((v, i)) => scope.with_item(v, *i),
            None => scope.clone(),
        };
        let id = match &item {
            Some((v, i)) => instance_id(&step.id, v, *i),
            None => step.id.clone(),
        };
        let (item_v, index) = match &item {
            Some((v, i)) => (Some(v.clone()), Some(*i)),
            None => (None, None),
        };
        let state = match step
            .condition
            .as_ref()
            .map(|c| c.eval(&scope))
            .transpose()
            .map_err(eval_err)?
        {
            Some(Val::Unknown(r)) => InstanceState::Deferred(vec![r]),
            Some(Val::Known(Value::Bool(false))) => InstanceState::Skipped(format!(
                "`if: {}` is false",
                step.condition.as_ref().map(|c| c.text()).unwrap_or("")
            )),
            Some(Val::Known(Value::Bool(true))) | None => {
                let mut inputs = IndexMap::new();
                let mut waiting = BTreeSet::new();
                for (k, t) in &step.with {
                    match t.eval(&scope).map_err(eval_err)? {
                        Val::Known(v) => {
                            inputs.insert(k.clone(), v);
                        }
                        Val::Unknown(r) => {
                            waiting.insert(r);
                        }
                    }
                }
                if waiting.is_empty() {
                    InstanceState::Ready(inputs)
                } else {
                    InstanceState::Deferred(waiting.into_iter().collect())
                }
            }
            Some(Val::Known(other)) => {
                return Err(PlanError::NotABool {
                    step: step.id.clone(),
                    found: short(&other),
                });
            }
        };
        out.push(Instance {
            id,
            item: item_v,
            index,
            state,
        });
    }
    Ok(Some(out))
}

/// `step[item]` for simple string/number items, else `step[index]`.
fn instance_id(step: &str, item: &Value, index: usize) -> String {
    let simple = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    match item {
        Value::String(s) if simple(s) => format!("{step}[{s}]"),
        Value::Number(n) => format!("{step}[{n}]"),
        Value::Object(m) => match m.get("name").and_then(Value::as_str) {
            Some(s) if simple(s) => format!("{step}[{s}]"),
            _ => format!("{step}[{index}]"),
        },
        _ => format!("{step}[{index}]"),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    if s.len() > 40 {
        kind.to_string()
    } else {
        format!("{kind} ({s})")
    }
}

/// The deadline of one call of a step: step `timeout`, else the plugin's.
pub fn step_timeout_ms(step: &Step, plugin: &PluginRef) -> u64 {
    step.timeout
        .map(|d| d.as_millis() as u64)
        .unwrap_or(plugin.limits.timeout_ms)
}

/// Make the plan: evaluate every step in dependency order, ask plugins to
/// plan what is known, defer what is not. All planning errors are reported.
pub async fn make_plan<P: PluginCalls>(
    wf: &Workflow,
    setup: &PlanSetup,
    calls: &P,
) -> Result<Plan, PlanError> {
    let redactor = Redactor::new(&setup.secrets);
    let mut scope_outputs = StepOutputs::default();
    let vars = scope::eval_vars(wf, &setup.inputs, &setup.secrets)?;
    let (sites, vault) = eval_setup(wf, &setup.inputs, &vars, &setup.secrets)?;
    let mut steps_out: Vec<PlannedStep> = Vec::new();
    let mut errors = Vec::new();
    let mut summary = Summary::default();
    for step in wf.topo_order() {
        let scope = WorkflowScope::new(&setup.inputs, &vars, &setup.secrets, &scope_outputs);
        let Some(plugin) = setup.plugins.get(&step.plugin) else {
            errors.push(PlanError::Plugin {
                step: step.id.clone(),
                message: format!("plugin `{}` is not loaded", step.plugin),
            });
            continue;
        };
        let uses = format!("{}/{}", step.plugin, step.step);
        let info = setup.steps.get(&uses);
        let base = |id: String, item, index, disposition, inputs, actions, outputs| PlannedStep {
            id,
            step: step.id.clone(),
            uses: uses.clone(),
            needs: step.needs.clone(),
            item,
            index,
            disposition,
            inputs,
            actions,
            outputs,
            timeout_ms: step_timeout_ms(step, plugin),
            retry: RetryRef {
                attempts: step.retry.attempts,
                backoff_ms: step.retry.backoff.as_millis() as u64,
            },
        };
        let instances = match expand(step, &scope) {
            Ok(i) => i,
            Err(e) => {
                errors.push(e);
                scope_outputs.set_deferred(&step.id);
                continue;
            }
        };
        let Some(instances) = instances else {
            let waiting = step.for_each.as_ref().map(unknown_refs).unwrap_or_default();
            summary.deferred += 1;
            steps_out.push(base(
                step.id.clone(),
                None,
                None,
                Disposition::Deferred {
                    waiting_on: waiting,
                },
                template_placeholders(step, &redactor),
                vec![],
                declared_outputs(info, &step.id),
            ));
            scope_outputs.set_deferred(&step.id);
            continue;
        };
        let mut per_instance = Vec::with_capacity(instances.len());
        let mut failed = false;
        for inst in instances {
            match inst.state {
                InstanceState::Skipped(reason) => {
                    summary.skipped += 1;
                    per_instance.push(None);
                    steps_out.push(base(
                        inst.id,
                        inst.item,
                        inst.index,
                        Disposition::Skipped { reason },
                        IndexMap::new(),
                        vec![],
                        IndexMap::new(),
                    ));
                }
                InstanceState::Deferred(waiting) => {
                    summary.deferred += 1;
                    per_instance.push(Some(
                        info.map(|i| i.outputs.as_slice())
                            .unwrap_or_default()
                            .iter()
                            .map(|f| {
                                let r = format!("steps.{}.outputs.{}", step.id, f.name);
                                (f.name.clone(), Val::Unknown(r))
                            })
                            .collect(),
                    ));
                    steps_out.push(base(
                        inst.id,
                        inst.item,
                        inst.index,
                        Disposition::Deferred {
                            waiting_on: waiting,
                        },
                        template_placeholders(step, &redactor),
                        vec![],
                        declared_outputs(info, &step.id),
                    ));
                }
                InstanceState::Ready(inputs) => {
                    let ctx = CallContext {
                        workflow: wf.name.clone(),
                        step_id: inst.id.clone(),
                        action_index: 0,
                        attempt: 1,
                    };
                    let input_value = Value::Object(inputs.clone().into_iter().collect());
                    let timeout = std::time::Duration::from_millis(step_timeout_ms(step, plugin));
                    match calls
                        .plan(&step.plugin, &ctx, &step.step, &input_value, timeout)
                        .await
                    {
                        Err(failure) => {
                            errors.push(PlanError::Plugin {
                                step: inst.id.clone(),
                                message: redactor.redact_str(&failure.message),
                            });
                            failed = true;
                        }
                        Ok(result) => {
                            for a in &result.actions {
                                summary.count(a.kind);
                            }
                            let mut outs: IndexMap<String, Val> = IndexMap::new();
                            let mut shown: IndexMap<String, Value> =
                                declared_outputs(info, &step.id);
                            for o in &result.outputs {
                                match &o.value {
                                    Some(v) => {
                                        outs.insert(o.name.clone(), Val::Known(v.clone()));
                                        shown.insert(o.name.clone(), v.clone());
                                    }
                                    None => {
                                        shown.insert(
                                            o.name.clone(),
                                            placeholder(&format!(
                                                "steps.{}.outputs.{}",
                                                step.id, o.name
                                            )),
                                        );
                                    }
                                }
                            }
                            for (k, v) in &shown {
                                if is_placeholder(v) {
                                    outs.entry(k.clone()).or_insert_with(|| {
                                        Val::Unknown(format!("steps.{}.outputs.{k}", step.id))
                                    });
                                }
                            }
                            per_instance.push(Some(outs));
                            let actions = result
                                .actions
                                .into_iter()
                                .map(|a| Action {
                                    kind: a.kind,
                                    resource: redactor.redact_str(&a.resource),
                                    summary: redactor.redact_str(&a.summary),
                                    payload: redactor.redact(&a.payload),
                                })
                                .collect();
                            let inputs = redactor.redact_inputs(&inputs, info);
                            let shown = shown
                                .into_iter()
                                .map(|(k, v)| {
                                    let sensitive = info
                                        .and_then(|i| i.output(&k))
                                        .is_some_and(|f| f.sensitive);
                                    (
                                        k,
                                        if sensitive && !is_placeholder(&v) {
                                            Value::String("(sensitive)".into())
                                        } else {
                                            redactor.redact(&v)
                                        },
                                    )
                                })
                                .collect();
                            steps_out.push(base(
                                inst.id,
                                inst.item,
                                inst.index,
                                Disposition::Planned,
                                inputs,
                                actions,
                                shown,
                            ));
                        }
                    }
                }
            }
        }
        if failed {
            // Steps after a failed one are not planned on made-up values.
            scope_outputs.set_deferred(&step.id);
        } else {
            scope_outputs.set_instances(&step.id, step.for_each.is_some(), per_instance);
        }
    }
    if !errors.is_empty() {
        return Err(if errors.len() == 1 {
            errors.remove(0)
        } else {
            PlanError::Many(errors)
        });
    }
    Ok(Plan {
        plan_version: PLAN_VERSION,
        contract: format!("{}@{}", contract::WIT_PACKAGE, contract::WIT_VERSION),
        workflow: WorkflowRef {
            name: wf.name.clone(),
            file: setup.file.clone(),
            digest: wf.digest(),
        },
        inputs: setup.inputs.clone(),
        secrets: wf
            .secrets
            .iter()
            .map(|(k, d)| (k.clone(), format!("env:{}", d.env)))
            .collect(),
        plugins: setup.plugins.clone(),
        sites,
        vault,
        steps: steps_out,
        summary,
    })
}

/// Sites and vault of a workflow with inputs and vars substituted, as the
/// plan shows them.
pub fn sites_and_vault(
    wf: &Workflow,
    inputs: &IndexMap<String, Value>,
    secrets: &IndexMap<String, String>,
) -> Result<(IndexMap<String, SiteRef>, Option<VaultRef>), PlanError> {
    let vars = scope::eval_vars(wf, inputs, secrets)?;
    eval_setup(wf, inputs, &vars, secrets)
}

/// Sites and vault with inputs and vars substituted.
fn eval_setup(
    wf: &Workflow,
    inputs: &IndexMap<String, Value>,
    vars: &IndexMap<String, lifeboat_workflow::Val>,
    secrets: &IndexMap<String, String>,
) -> Result<(IndexMap<String, SiteRef>, Option<VaultRef>), PlanError> {
    let none = StepOutputs::default();
    let scope = WorkflowScope::new(inputs, vars, secrets, &none);
    let text = |what: String, t: &lifeboat_workflow::Template| -> Result<String, PlanError> {
        let v = t.eval(&scope).map_err(|source| PlanError::Eval {
            step: what.clone(),
            source,
        })?;
        match v.known() {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(PlanError::Plugin {
                step: what,
                message: format!("must be a string, but it is {other}"),
            }),
            None => Err(PlanError::Plugin {
                step: what,
                message: "is not known before apply".into(),
            }),
        }
    };
    let mut sites = IndexMap::new();
    for (name, d) in &wf.sites {
        let site = match (&d.path, &d.url) {
            (Some(p), _) => SiteRef::Folder(text(format!("sites.{name}.path"), p)?),
            (None, Some(u)) => {
                let url = text(format!("sites.{name}.url"), u)?;
                let encrypted = check_endpoint(name, &url, d.insecure_http)?;
                SiteRef::Azblob {
                    url,
                    key: format!("secret {}", d.key.as_deref().unwrap_or("?")),
                    encrypted,
                    ca_file: match &d.ca_file {
                        Some(c) => Some(text(format!("sites.{name}.ca_file"), c)?),
                        None => None,
                    },
                }
            }
            (None, None) => continue,
        };
        sites.insert(name.clone(), site);
    }
    let vault = match &wf.vault {
        None => None,
        Some(v) => Some(VaultRef {
            url: text("vault.url".into(), &v.url)?,
            key: match (&v.key, &v.key_file) {
                (Some(k), _) => format!("secret {k}"),
                (None, Some(f)) => format!("file {}", text("vault.key_file".into(), f)?),
                (None, None) => "env:LIFEBOAT_VAULT_KEY".into(),
            },
            transport: None,
        }),
    };
    Ok((sites, vault))
}

/// Outputs the step declares, each as a placeholder known after apply.
fn declared_outputs(info: Option<&contract::StepInfo>, step: &str) -> IndexMap<String, Value> {
    info.map(|i| {
        i.outputs
            .iter()
            .map(|f| {
                (
                    f.name.clone(),
                    placeholder(&format!("steps.{step}.outputs.{}", f.name)),
                )
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Inputs of a deferred step: the expressions as written.
fn template_placeholders(step: &Step, redactor: &Redactor) -> IndexMap<String, Value> {
    step.with
        .iter()
        .map(|(k, t)| (k.clone(), redactor.redact(&template_shape(t))))
        .collect()
}

fn template_shape(t: &Template) -> Value {
    match t {
        Template::Literal(v) => v.clone(),
        Template::Expr(e) => Value::String(format!("${{{{ {} }}}}", e.text())),
        Template::Interpolate(parts) => Value::String(
            parts
                .iter()
                .map(|p| match p {
                    lifeboat_workflow::Part::Text(s) => s.clone(),
                    lifeboat_workflow::Part::Expr(e) => format!("${{{{ {} }}}}", e.text()),
                })
                .collect(),
        ),
        Template::List(items) => Value::Array(items.iter().map(template_shape).collect()),
        Template::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), template_shape(v)))
                .collect(),
        ),
    }
}

fn unknown_refs(t: &Template) -> Vec<String> {
    t.references()
        .into_iter()
        .map(|r| r.join("."))
        .filter(|r| r.starts_with("steps."))
        .collect()
}

impl Plan {
    /// Deterministic JSON (pretty, newline-terminated).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Read a plan written by [`Plan::to_json`].
    pub fn from_json(text: &str) -> Result<Plan, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not a plan file: {e}"))?;
        match v.get("plan_version").and_then(Value::as_u64) {
            Some(n) if n == u64::from(PLAN_VERSION) => {}
            Some(n) => {
                return Err(format!(
                    "plan format version {n} is not supported (this lifeboat reads version {PLAN_VERSION}); make the plan again with this lifeboat"
                ));
            }
            None => return Err("not a plan file: no `plan_version`".into()),
        }
        serde_json::from_value(v).map_err(|e| format!("malformed plan file: {e}"))
    }

    /// Blake3 of the JSON form: identifies a plan in the journal.
    pub fn digest(&self) -> String {
        blake3::hash(self.to_json().as_bytes()).to_hex().to_string()
    }
}
