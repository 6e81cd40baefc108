//! The validated workflow model.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use lifeboat_contract::FieldType;
use miette::SourceSpan;
use serde_json::Value;

use crate::diag::SourceFile;
use crate::error::{WorkflowError, describe};
use crate::expr::Expr;
use crate::suggest;
use crate::template::Template;

/// A validated workflow: every reference resolves, every step's plugin and
/// inputs were checked against the plugin catalog, and the dependency graph
/// has no cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub source: Arc<SourceFile>,
    pub name: String,
    pub description: Option<String>,
    pub inputs: IndexMap<String, InputDecl>,
    pub vars: IndexMap<String, Template>,
    pub secrets: IndexMap<String, SecretDecl>,
    pub plugins: IndexMap<String, PluginDecl>,
    /// Named folders plugins may be granted (`sites:`).
    pub sites: IndexMap<String, SiteDecl>,
    /// Where recovery points are kept (`vault:`).
    pub vault: Option<VaultDecl>,
    /// In file order.
    pub steps: Vec<Step>,
}

/// A site (`sites:`): a folder holding a platform's files (a VMware VM's
/// `.vmx` and VMDKs, a storage account laid out as folders), or an Azure Blob
/// Storage container. Exactly one of `path` and `url` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteDecl {
    /// The folder; relative paths are relative to the workflow file. May use
    /// `${{ inputs.NAME }}` and `${{ vars.NAME }}`.
    pub path: Option<Template>,
    /// An Azure Blob container URL (`https://ACCOUNT.blob.core.windows.net/CONTAINER`,
    /// or Azurite's `http://127.0.0.1:PORT/ACCOUNT/CONTAINER`). May use inputs and vars.
    pub url: Option<Template>,
    /// The declared secret holding the storage account key (with `url`).
    pub key: Option<String>,
    /// With `url`: a PEM file of CA certificates to trust for the endpoint,
    /// besides the system's (relative to the workflow file; inputs and vars).
    pub ca_file: Option<Template>,
    /// With `url`: allow plain `http://`, for an emulator on 127.0.0.1 only.
    pub insecure_http: bool,
    pub doc: String,
}

/// The vault (`vault:`).
#[derive(Debug, Clone, PartialEq)]
pub struct VaultDecl {
    /// A folder, `s3://…` or `azblob://…` URL (see docs/vault-format.md); relative
    /// folders are relative to the workflow file. May use inputs and vars.
    pub url: Template,
    /// A declared secret holding the vault key.
    pub key: Option<String>,
    /// A file holding the vault key (relative to the workflow file; may use
    /// inputs and vars). With neither `key` nor `key_file`: `LIFEBOAT_VAULT_KEY`
    /// or `LIFEBOAT_VAULT_KEY_FILE`.
    pub key_file: Option<Template>,
}

/// How much of a site or of the vault a plugin may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Read files and disks, list points.
    Read,
    /// Also write: files and restored images into a site; ship and seal into the vault.
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// A declared input (`inputs:`), given on the CLI as `--input NAME=VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct InputDecl {
    pub ty: FieldType,
    pub required: bool,
    pub default: Option<Value>,
    pub doc: String,
}

/// A declared secret: its value comes from an environment variable at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretDecl {
    pub env: String,
}

/// Where a plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PluginSource {
    /// `builtin:NAME`: a plugin bundled with the host.
    Builtin(String),
    /// A `.wasm` component, as written in the file (relative paths are
    /// relative to the workflow file; not resolved here).
    Path(PathBuf),
}

impl fmt::Display for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginSource::Builtin(n) => write!(f, "builtin:{n}"),
            PluginSource::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A plugin alias (`plugins:`).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginDecl {
    pub alias: String,
    pub source: PluginSource,
    pub grants: Grants,
    pub limits: Limits,
}

/// What a plugin may use. Nothing is granted by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Allowed outbound hosts: `host`, `host:port`, `*.domain` or
    /// `*.domain:port`, lower-cased.
    pub http: Vec<String>,
    /// Names of declared secrets the plugin may receive.
    pub secrets: Vec<String>,
    /// Declared sites the plugin may use, and how.
    pub sites: IndexMap<String, Access>,
    /// Whether and how the plugin may use the workflow's vault.
    pub vault: Option<Access>,
    /// Plain `http://` allowed to the granted loopback hosts (an emulator on
    /// 127.0.0.1); otherwise every request must be `https://`.
    pub insecure_http: bool,
}

/// Per-plugin resource limits (unset: the host's defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of linear memory.
    pub memory: Option<u64>,
    /// Default CPU/wall deadline of one plugin call.
    pub timeout: Option<Duration>,
}

/// Retry policy of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Total attempts, at least 1 (1 = no retry).
    pub attempts: u32,
    /// Wait before the second attempt; doubles for each further attempt.
    pub backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 1,
            backoff: DEFAULT_BACKOFF,
        }
    }
}

/// `retry.backoff` when not given.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

impl Retry {
    /// The wait before attempt `attempt` (2-based: the first retry is attempt 2):
    /// `backoff * 2^(attempt-2)`, saturating.
    pub fn delay_before(&self, attempt: u32) -> Duration {
        if attempt < 2 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(attempt - 2).unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor)
    }
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: String,
    /// The plugin alias (the part of `uses` before `/`).
    pub plugin: String,
    /// The plugin's step (the part of `uses` after `/`).
    pub step: String,
    pub with: IndexMap<String, Template>,
    /// Explicit `needs` plus steps referenced as `steps.X` anywhere in the
    /// step; deduplicated and sorted.
    pub needs: Vec<String>,
    /// `if:`. With `for_each`, evaluated once per item (`item`/`index` bound).
    pub condition: Option<Expr>,
    pub for_each: Option<Template>,
    /// Overrides the plugin's `limits.timeout` for this step's calls.
    pub timeout: Option<Duration>,
    pub retry: Retry,
    /// The span of the step's `id` value in the file.
    pub span: SourceSpan,
}

impl Workflow {
    /// Hex blake3 of the source text.
    pub fn digest(&self) -> String {
        blake3::hash(self.source.text.as_bytes())
            .to_hex()
            .to_string()
    }

    /// A step by id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Check CLI-given inputs (raw strings) against `inputs:` and fill in
    /// defaults. Values of `string` inputs are taken verbatim; other types
    /// are read as YAML scalars / flow collections (JSON works too).
    /// Optional inputs that are neither given nor defaulted are `null`.
    /// The result is in declaration order.
    pub fn bind_inputs(
        &self,
        given: &IndexMap<String, String>,
    ) -> Result<IndexMap<String, Value>, WorkflowError> {
        for name in given.keys() {
            if !self.inputs.contains_key(name) {
                let declared: Vec<String> = self.inputs.keys().cloned().collect();
                return Err(WorkflowError::UnknownInput {
                    name: name.clone(),
                    suggestion: suggest::closest(name, declared.iter().map(String::as_str))
                        .map(str::to_owned),
                    declared,
                });
            }
        }
        let mut out = IndexMap::new();
        for (name, decl) in &self.inputs {
            let value = match given.get(name) {
                Some(raw) => parse_input(name, decl.ty, raw)?,
                None => match (&decl.default, decl.required) {
                    (Some(d), _) => d.clone(),
                    (None, true) => {
                        return Err(WorkflowError::MissingInput {
                            name: name.clone(),
                            ty: decl.ty,
                        });
                    }
                    (None, false) => Value::Null,
                },
            };
            out.insert(name.clone(), value);
        }
        Ok(out)
    }

    /// The steps in an order where every step comes after all its needs;
    /// among steps that are ready at the same time, file order.
    pub fn topo_order(&self) -> Vec<&Step> {
        let n = self.steps.len();
        let index: HashMap<&str, usize> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let mut waiting = vec![0usize; n];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, s) in self.steps.iter().enumerate() {
            let needs: HashSet<usize> = s
                .needs
                .iter()
                .filter_map(|need| index.get(need.as_str()).copied())
                .filter(|&t| t != i)
                .collect();
            waiting[i] = needs.len();
            for t in needs {
                dependents[t].push(i);
            }
        }
        // Always take the ready step that comes first in the file.
        let mut ready: BinaryHeap<Reverse<usize>> =
            (0..n).filter(|&i| waiting[i] == 0).map(Reverse).collect();
        let mut done = vec![false; n];
        let mut out: Vec<&Step> = Vec::with_capacity(n);
        while let Some(Reverse(i)) = ready.pop() {
            done[i] = true;
            out.push(&self.steps[i]);
            for &d in &dependents[i] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    ready.push(Reverse(d));
                }
            }
        }
        // Only for a hand-built workflow with a cycle: keep the rest in file
        // order rather than losing steps.
        out.extend(
            self.steps
                .iter()
                .zip(done)
                .filter(|(_, d)| !d)
                .map(|(s, _)| s),
        );
        out
    }
}

/// Read a CLI value for an input of type `ty`.
pub(crate) fn parse_input(name: &str, ty: FieldType, raw: &str) -> Result<Value, WorkflowError> {
    if ty == FieldType::String {
        return Ok(Value::String(raw.to_owned()));
    }
    let parsed = read_scalar(raw);
    let value = match (ty, parsed) {
        (FieldType::Any, None) => Value::String(raw.to_owned()),
        (_, Some(v)) => v,
        (_, None) => Value::String(raw.to_owned()),
    };
    if ty.accepts(&value) {
        Ok(value)
    } else {
        Err(WorkflowError::InputType {
            name: name.to_owned(),
            expected: ty,
            given: raw.to_owned(),
            found: if raw.trim().is_empty() {
                "empty".to_owned()
            } else {
                describe(&value)
            },
        })
    }
}

/// Parse a short YAML text (a scalar, `[a, b]`, `{k: v}` or JSON) into JSON.
fn read_scalar(raw: &str) -> Option<Value> {
    if raw.len() > 1024 * 1024 {
        return None;
    }
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.with_snippet = false;
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = 10_000;
    budget.max_depth = 32;
    budget.max_documents = 1;
    options.budget = Some(budget);
    serde_saphyr::from_str_with_options::<Value>(raw, options).ok()
}
