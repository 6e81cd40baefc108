//! Loading a workflow: parse, load its plugins into the sandbox runtime,
//! validate against what the plugins describe, and plan.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use indexmap::IndexMap;
use lifeboat_caps::{Access as CapAccess, Capabilities, KeySource, SiteSpec};
use lifeboat_contract::{self as contract, PluginInfo, StepInfo};
use lifeboat_plan::{
    CallFailure, GrantsRef, LimitsRef, Plan, PlanSetup, PluginCalls, PluginRef, SiteRef, VaultRef,
};
use lifeboat_runtime::{HostPattern, Plugin, Policy, Runtime, RuntimeConfig};
use lifeboat_workflow::{Catalog, PluginSource, SourceFile, Workflow};

/// How a command fails: invalid input (exit 2) or a failure (exit 1).
pub enum Failure {
    Invalid(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Failed(e)
    }
}

/// The runtime with the default configuration.
pub fn runtime() -> Result<Runtime, Failure> {
    Runtime::new(RuntimeConfig::default()).map_err(|e| Failure::Failed(anyhow!(e)))
}

/// Bytes of a plugin named `builtin:NAME` or by a path (relative to `base`).
pub fn plugin_bytes(spec: &str, base: &Path) -> Result<(String, Vec<u8>), Failure> {
    if let Some(name) = spec.strip_prefix("builtin:") {
        let b = lifeboat_bundled::get(name).ok_or_else(|| {
            let names: Vec<&str> = lifeboat_bundled::ALL.iter().map(|b| b.name).collect();
            Failure::Invalid(format!(
                "error: no bundled plugin `{name}`; bundled: {}",
                names.join(", ")
            ))
        })?;
        return Ok((name.to_string(), b.wasm.to_vec()));
    }
    let path = base.join(spec);
    let bytes = std::fs::read(&path).map_err(|e| {
        Failure::Invalid(format!("error: cannot read plugin {}: {e}", path.display()))
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| spec.to_string());
    Ok((name, bytes))
}

fn cap_access(a: lifeboat_workflow::Access) -> CapAccess {
    match a {
        lifeboat_workflow::Access::Read => CapAccess::Read,
        lifeboat_workflow::Access::Write => CapAccess::Write,
    }
}

/// A vault URL, with a relative folder taken relative to the workflow's folder.
fn vault_url(base: &Path, url: &str) -> String {
    if url.contains("://") || Path::new(url).is_absolute() {
        url.to_string()
    } else {
        base.join(url).display().to_string()
    }
}

/// A validated workflow with its plugins loaded.
pub struct Loaded {
    /// The workflow file's folder: relative sites and vault folders start here.
    pub base: PathBuf,
    pub runtime: Runtime,
    pub workflow: Workflow,
    pub plugins: IndexMap<String, (Plugin, Policy)>,
}

struct LoadCatalog {
    results: IndexMap<String, Result<Plugin, String>>,
}

impl Catalog for LoadCatalog {
    fn plugin(&self, alias: &str) -> Result<&PluginInfo, String> {
        match self.results.get(alias) {
            Some(Ok(p)) => Ok(p.info()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("plugin `{alias}` was not loaded")),
        }
    }
}

impl Loaded {
    /// Parse, load plugins, validate, and check them against the workflow's
    /// lockfile when it has one. Problems with the file are diagnostics (exit 2).
    pub async fn load(file: &Path) -> Result<Loaded, Failure> {
        let l = Self::load_unlocked(file).await?;
        crate::lockfile::check(file, &l.workflow, &l.plugins)?;
        Ok(l)
    }

    /// [`Loaded::load`] without the lockfile check (for `plugin lock`).
    pub async fn load_unlocked(file: &Path) -> Result<Loaded, Failure> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Failure::Invalid(format!(
                "error: cannot read workflow {}: {e}",
                file.display()
            ))
        })?;
        let source = SourceFile::new(file.display().to_string(), text);
        let doc = lifeboat_workflow::parse(Arc::clone(&source))
            .map_err(|d| Failure::Invalid(d.render()))?;
        let runtime = runtime()?;
        let base = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut results = IndexMap::new();
        for (alias, src, _span) in doc.plugin_sources() {
            let r = match &src {
                PluginSource::Builtin(name) => match lifeboat_bundled::get(name) {
                    Some(b) => runtime
                        .load(&alias, b.wasm)
                        .await
                        .map_err(|e| e.to_string()),
                    None => {
                        let names: Vec<&str> =
                            lifeboat_bundled::ALL.iter().map(|b| b.name).collect();
                        Err(format!(
                            "no bundled plugin `{name}` (bundled: {})",
                            names.join(", ")
                        ))
                    }
                },
                PluginSource::Path(p) => {
                    let path = base.join(p);
                    runtime
                        .load_file(&alias, &path)
                        .await
                        .map_err(|e| e.to_string())
                }
            };
            results.insert(alias, r);
        }
        let catalog = LoadCatalog { results };
        let workflow =
            lifeboat_workflow::validate(doc, &catalog).map_err(|d| Failure::Invalid(d.render()))?;
        let mut plugins = IndexMap::new();
        for (alias, r) in catalog.results {
            let Ok(plugin) = r else { continue };
            let Some(decl) = workflow.plugins.get(&alias) else {
                continue;
            };
            let mut http = Vec::new();
            for g in &decl.grants.http {
                http.push(HostPattern::parse(g).map_err(|e| {
                    Failure::Invalid(format!("error: plugin `{alias}`: http grant {e}"))
                })?);
            }
            let policy = Policy {
                http,
                insecure_http: decl.grants.insecure_http,
                memory: decl
                    .limits
                    .memory
                    .unwrap_or(lifeboat_runtime::DEFAULT_MEMORY),
                timeout: decl
                    .limits
                    .timeout
                    .unwrap_or(lifeboat_runtime::DEFAULT_TIMEOUT),
                transfer: None,
                http_stub: None,
                log_sink: None,
            };
            plugins.insert(alias, (plugin, policy));
        }
        Ok(Loaded {
            base,
            runtime,
            workflow,
            plugins,
        })
    }

    /// Secret values from the environment.
    pub fn secrets(&self) -> Result<IndexMap<String, String>, Failure> {
        lifeboat_plan::read_secrets(&self.workflow, |k| std::env::var(k).ok())
            .map_err(|e| Failure::Invalid(format!("error: {e}")))
    }

    /// Step infos by `alias/step`.
    pub fn step_infos(&self) -> IndexMap<String, StepInfo> {
        let mut out = IndexMap::new();
        for (alias, (p, _)) in &self.plugins {
            for s in &p.info().steps {
                out.insert(format!("{alias}/{}", s.name), s.clone());
            }
        }
        out
    }

    fn plugin_refs(&self) -> IndexMap<String, PluginRef> {
        self.plugins
            .iter()
            .map(|(alias, (p, pol))| {
                let decl = self.workflow.plugins.get(alias);
                (
                    alias.clone(),
                    PluginRef {
                        source: decl.map(|d| d.source.to_string()).unwrap_or_default(),
                        name: p.info().name.clone(),
                        version: p.info().version.clone(),
                        digest: p.digest().to_string(),
                        grants: GrantsRef {
                            insecure_http: pol.insecure_http,
                            http: pol.http.iter().map(|h| h.to_string()).collect(),
                            secrets: decl.map(|d| d.grants.secrets.clone()).unwrap_or_default(),
                            sites: decl
                                .map(|d| {
                                    d.grants
                                        .sites
                                        .iter()
                                        .map(|(k, a)| (k.clone(), a.as_str().to_string()))
                                        .collect()
                                })
                                .unwrap_or_default(),
                            vault: decl
                                .and_then(|d| d.grants.vault)
                                .map(|a| a.as_str().to_string()),
                        },
                        limits: LimitsRef {
                            memory_mib: pol.memory >> 20,
                            timeout_ms: pol.timeout.as_millis() as u64,
                        },
                    },
                )
            })
            .collect()
    }

    /// Give each plugin its granted sites and the vault (the `transfer`
    /// interface), from the sites and vault as the plan shows them.
    pub fn attach_capabilities(
        &mut self,
        sites: &IndexMap<String, SiteRef>,
        vault: Option<&VaultRef>,
    ) -> Result<(), Failure> {
        let mut resolved: IndexMap<String, SiteSpec> = IndexMap::new();
        for (k, s) in sites {
            let spec = match s {
                SiteRef::Folder(p) => SiteSpec::Folder(self.base.join(p)),
                SiteRef::Azblob {
                    url, key, ca_file, ..
                } => {
                    let ca = match ca_file {
                        None => None,
                        Some(f) => {
                            let path = self.base.join(f);
                            Some(std::fs::read(&path).map_err(|e| {
                                Failure::Invalid(format!(
                                    "error: site `{k}`: cannot read its ca_file {}: {e}",
                                    path.display()
                                ))
                            })?)
                        }
                    };
                    let name = key.strip_prefix("secret ").unwrap_or(key);
                    let secrets = self.secrets()?;
                    let value = secrets.get(name).cloned().ok_or_else(|| {
                        Failure::Invalid(format!(
                            "error: the key of site `{k}` is secret `{name}`, which is not set"
                        ))
                    })?;
                    SiteSpec::Azblob {
                        url: url.clone(),
                        key: value,
                        ca,
                    }
                }
            };
            resolved.insert(k.clone(), spec);
        }
        let vault = match (vault, &self.workflow.vault) {
            (Some(v), Some(decl)) => {
                let key = match &decl.key {
                    Some(name) => {
                        let secrets = self.secrets()?;
                        let value = secrets.get(name).cloned().ok_or_else(|| {
                            Failure::Invalid(format!(
                                "error: the vault key secret `{name}` is not set"
                            ))
                        })?;
                        KeySource::Secret {
                            name: name.clone(),
                            value,
                        }
                    }
                    None => match v.key.strip_prefix("file ") {
                        Some(f) => KeySource::File(self.base.join(f)),
                        None => KeySource::Environment,
                    },
                };
                Some((vault_url(&self.base, &v.url), key))
            }
            _ => None,
        };
        let caps = Capabilities::new(resolved, vault);
        for (alias, (_, policy)) in self.plugins.iter_mut() {
            let Some(decl) = self.workflow.plugins.get(alias) else {
                continue;
            };
            let sites: IndexMap<String, CapAccess> = decl
                .grants
                .sites
                .iter()
                .map(|(k, a)| (k.clone(), cap_access(*a)))
                .collect();
            policy.transfer = caps.for_plugin(alias, &sites, decl.grants.vault.map(cap_access));
        }
        Ok(())
    }

    /// Make the plan.
    pub async fn plan(
        &mut self,
        file: &Path,
        inputs: &IndexMap<String, String>,
    ) -> Result<Plan, Failure> {
        let inputs = self
            .workflow
            .bind_inputs(inputs)
            .map_err(|e| Failure::Invalid(format!("error: {e}")))?;
        let (sites, vault) =
            lifeboat_plan::sites_and_vault(&self.workflow, &inputs, &self.secrets()?)
                .map_err(|e| Failure::Invalid(format!("error: {e}")))?;
        let transport = vault
            .as_ref()
            .map(|v| vault_transport(&v.url))
            .transpose()?;
        self.attach_capabilities(&sites, vault.as_ref())?;
        let setup = PlanSetup {
            file: file.display().to_string(),
            inputs,
            secrets: self.secrets()?,
            plugins: self.plugin_refs(),
            steps: self.step_infos(),
        };
        let mut plan = lifeboat_plan::make_plan(&self.workflow, &setup, &self.calls())
            .await
            .map_err(|e| match e {
                lifeboat_plan::PlanError::Input(_)
                | lifeboat_plan::PlanError::MissingSecret { .. } => {
                    Failure::Invalid(format!("error: {e}"))
                }
                other => Failure::Failed(anyhow!("planning failed: {other}")),
            })?;
        if let Some(v) = plan.vault.as_mut() {
            v.transport = transport.flatten();
        }
        Ok(plan)
    }

    /// Refuse a plan whose workflow or plugins changed since it was made;
    /// attach the plan's sites and vault to the plugins.
    pub fn check_plan(&mut self, plan: &Plan) -> Result<(), Failure> {
        self.attach_capabilities(&plan.sites, plan.vault.as_ref())?;
        let digest = self.workflow.digest();
        if digest != plan.workflow.digest {
            return Err(Failure::Invalid(format!(
                "error: the workflow {} changed since the plan was made (digest {} in the plan, {} now); make the plan again",
                plan.workflow.file,
                &plan.workflow.digest[..12.min(plan.workflow.digest.len())],
                &digest[..12]
            )));
        }
        let now = self.plugin_refs();
        for (alias, planned) in &plan.plugins {
            match now.get(alias) {
                Some(p) if p.digest == planned.digest => {}
                Some(p) => {
                    return Err(Failure::Invalid(format!(
                        "error: plugin `{alias}` ({}) changed since the plan was made (digest {} in the plan, {} now); make the plan again",
                        p.source,
                        &planned.digest[..12.min(planned.digest.len())],
                        &p.digest[..12.min(p.digest.len())]
                    )));
                }
                None => {
                    return Err(Failure::Invalid(format!(
                        "error: plugin `{alias}` of the plan is gone from the workflow"
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn calls(&self) -> Calls<'_> {
        Calls {
            runtime: &self.runtime,
            plugins: &self.plugins,
        }
    }
}

/// Plugin calls through the sandbox runtime.
pub struct Calls<'a> {
    runtime: &'a Runtime,
    plugins: &'a IndexMap<String, (Plugin, Policy)>,
}

impl Calls<'_> {
    fn get(&self, alias: &str, timeout: Duration) -> Result<(&Plugin, Policy), CallFailure> {
        let (p, pol) = self.plugins.get(alias).ok_or_else(|| CallFailure {
            message: format!("plugin `{alias}` is not loaded"),
            retryable: false,
        })?;
        let mut pol = pol.clone();
        pol.timeout = timeout;
        Ok((p, pol))
    }
}

fn failure(e: lifeboat_runtime::CallError) -> CallFailure {
    CallFailure {
        retryable: e.retryable(),
        message: e.to_string(),
    }
}

impl PluginCalls for Calls<'_> {
    async fn plan(
        &self,
        alias: &str,
        ctx: &contract::CallContext,
        step: &str,
        inputs: &serde_json::Value,
        timeout: Duration,
    ) -> Result<contract::PlanResult, CallFailure> {
        let (p, pol) = self.get(alias, timeout)?;
        self.runtime
            .plan(p, &pol, ctx, step, inputs)
            .await
            .map_err(failure)
    }

    async fn apply(
        &self,
        alias: &str,
        ctx: &contract::CallContext,
        step: &str,
        inputs: &serde_json::Value,
        action: &contract::Action,
        timeout: Duration,
    ) -> Result<Vec<(String, serde_json::Value)>, CallFailure> {
        let (p, pol) = self.get(alias, timeout)?;
        self.runtime
            .apply(p, &pol, ctx, step, inputs, action)
            .await
            .map_err(failure)
    }
}

/// `lifeboat plugin inspect` text.
pub fn describe_text(p: &Plugin) -> String {
    use std::fmt::Write;
    let i = p.info();
    let mut o = String::new();
    let _ = writeln!(o, "{} {} — {}", i.name, i.version, i.doc);
    let built = p.contract_version();
    let _ = write!(o, "contract: {}@{built}", contract::WIT_PACKAGE);
    if built != contract::WIT_VERSION {
        let _ = write!(o, " (this host implements {})", contract::WIT_VERSION);
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "digest: {}", p.digest());
    for s in &i.steps {
        let _ = writeln!(o, "\nstep {} — {}", s.name, s.doc);
        for f in &s.inputs {
            let req = if f.required { ", required" } else { "" };
            let sens = if f.sensitive { ", sensitive" } else { "" };
            let _ = writeln!(
                o,
                "  in  {}: {}{req}{sens}  {}",
                f.name,
                f.ty.as_str(),
                f.doc
            );
        }
        for f in &s.outputs {
            let _ = writeln!(o, "  out {}: {}  {}", f.name, f.ty.as_str(), f.doc);
        }
    }
    o
}

/// How an object-store vault's data travels, for the plan (`None` for a
/// folder); plain http that its URL does not opt into is refused here.
fn vault_transport(url: &str) -> Result<Option<String>, Failure> {
    match lifeboat_vault::endpoint::transport(url) {
        Ok(lifeboat_vault::endpoint::Transport::Local) => Ok(None),
        Ok(t) => Ok(Some(t.to_string())),
        Err(e) => Err(Failure::Invalid(format!("error: vault {url}: {e}"))),
    }
}
