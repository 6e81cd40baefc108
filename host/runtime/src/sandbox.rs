//! One sandboxed call: a fresh store with nothing granted but what the policy
//! says, a memory cap, and a deadline re-armed for this call.

#![allow(clippy::result_large_err)] // CallError is the cold path of every call

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lifeboat_contract as contract;
use lifeboat_contract::transfer::Transfer;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostWallClock, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::lifeboat::plugin::{log, types as wit};
use crate::http::{GrantHooks, HostPattern};
use crate::{Plugin, Runtime};

/// Plan calls are read-only; apply calls may change the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Describe,
    Plan,
    Apply,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Describe => "describe",
            Phase::Plan => "plan",
            Phase::Apply => "apply",
        }
    }
}

/// What a plugin call is granted.
#[derive(Clone)]
pub struct Policy {
    /// Hosts the plugin may reach through `wasi:http`.
    pub http: Vec<HostPattern>,
    /// Plain `http://` allowed to granted loopback hosts (an emulator on
    /// 127.0.0.1); otherwise only `https://` requests leave.
    pub insecure_http: bool,
    /// Linear memory cap in bytes.
    pub memory: u64,
    /// Deadline for one call (CPU and waiting alike).
    pub timeout: Duration,
    /// Sites and vault (the `transfer` interface), with the plugin's grants
    /// applied; `None`: nothing granted.
    pub transfer: Option<Arc<dyn Transfer>>,
    /// Answers HTTP instead of the network (the plugin harness); `None`: real HTTP.
    pub http_stub: Option<Arc<dyn crate::http::HttpStub>>,
    /// Also receives the plugin's log lines (the plugin harness records them).
    pub log_sink: Option<Arc<dyn LogSink>>,
}

/// Receives a plugin's log lines besides `tracing`.
pub trait LogSink: Send + Sync {
    fn log(&self, level: &str, message: &str, fields: &[(String, String)]);
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("http", &self.http)
            .field("insecure_http", &self.insecure_http)
            .field("memory", &self.memory)
            .field("timeout", &self.timeout)
            .field("transfer", &self.transfer.is_some())
            .finish()
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            http: vec![],
            insecure_http: false,
            memory: crate::DEFAULT_MEMORY,
            timeout: crate::DEFAULT_TIMEOUT,
            transfer: None,
            http_stub: None,
            log_sink: None,
        }
    }
}

/// Why a plugin call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The plugin returned an error: the sandbox worked as intended.
    #[error("plugin `{plugin}` step `{step}` failed: {error}{denied}")]
    Step {
        plugin: String,
        step: String,
        error: contract::StepError,
        denied: Denied,
    },
    /// The call ran past its deadline and was stopped.
    #[error("plugin `{plugin}` step `{step}` was stopped after its {limit:?} time limit ({phase})")]
    Timeout {
        plugin: String,
        step: String,
        phase: &'static str,
        limit: Duration,
    },
    /// The plugin tried to grow its memory past its cap.
    #[error(
        "plugin `{plugin}` step `{step}` exceeded its memory limit of {limit_mib} MiB ({phase})"
    )]
    Memory {
        plugin: String,
        step: String,
        phase: &'static str,
        limit_mib: u64,
    },
    /// The plugin trapped (a panic, an abort, a bug in the plugin).
    #[error("plugin `{plugin}` step `{step}` crashed ({phase}): {cause}{denied}")]
    Trap {
        plugin: String,
        step: String,
        phase: &'static str,
        cause: String,
        denied: Denied,
    },
    /// The host failed (a bug in lifeboat, not in the plugin).
    #[error("host error while running plugin `{plugin}` step `{step}` ({phase}): {cause}")]
    Host {
        plugin: String,
        step: String,
        phase: &'static str,
        cause: String,
    },
}

impl CallError {
    /// Whether retrying the same call may help.
    pub fn retryable(&self) -> bool {
        match self {
            CallError::Step { error, .. } => error.retryable,
            CallError::Timeout { .. } => true,
            _ => false,
        }
    }
}

/// HTTP requests the sandbox denied during a call, shown with its error.
#[derive(Debug, Clone, Default)]
pub struct Denied(pub Vec<String>);

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in &self.0 {
            write!(f, "; denied by the sandbox: {d}")?;
        }
        Ok(())
    }
}

/// The wall clock a plugin sees: always the Unix epoch. Plugins get no time
/// of day, so plans cannot depend on it.
struct EpochZeroClock;

impl HostWallClock for EpochZeroClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// The `T` of every plugin store.
pub(crate) struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: GrantHooks,
    limiter: MemoryCap,
    deadline: Instant,
    timed_out: bool,
    pub(crate) plugin: String,
    step: String,
    pub(crate) phase: Phase,
    pub(crate) transfer: Option<Arc<dyn Transfer>>,
    log_sink: Option<Arc<dyn LogSink>>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Marker error: the memory cap was hit.
#[derive(Debug)]
struct MemoryLimitHit;

impl std::fmt::Display for MemoryLimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "memory limit reached")
    }
}
impl std::error::Error for MemoryLimitHit {}

struct MemoryCap {
    limit: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Err(wasmtime::Error::new(MemoryLimitHit));
        }
        Ok(true)
    }
    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

impl wit::Host for HostState {}

impl log::Host for HostState {
    async fn log(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        if let Some(sink) = &self.log_sink {
            let l = match level {
                log::Level::Trace => "trace",
                log::Level::Debug => "debug",
                log::Level::Info => "info",
                log::Level::Warn => "warn",
                log::Level::Error => "error",
            };
            sink.log(l, &message, &fields);
        }
        let fields = fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let (plugin, step) = (&self.plugin, &self.step);
        match level {
            log::Level::Trace => tracing::trace!(plugin, step, fields, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, step, fields, "{message}"),
            log::Level::Info => tracing::info!(plugin, step, fields, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, step, fields, "{message}"),
            log::Level::Error => tracing::error!(plugin, step, fields, "{message}"),
        }
        Ok(())
    }
}

struct Call {
    store: Store<HostState>,
    stderr: MemoryOutputPipe,
    denied: Arc<Mutex<Vec<String>>>,
    phase: Phase,
    policy_memory: u64,
    timeout: Duration,
}

fn new_call(rt: &Runtime, plugin: &Plugin, policy: &Policy, phase: Phase, step: &str) -> Call {
    let stderr = MemoryOutputPipe::new(64 * 1024);
    let mut b = WasiCtx::builder();
    b.stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .wall_clock(EpochZeroClock);
    let denied = Arc::new(Mutex::new(Vec::new()));
    let memory = policy.memory.min(rt.max_memory);
    let state = HostState {
        wasi: b.build(),
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        hooks: GrantHooks {
            allow: policy.http.clone().into(),
            insecure_http: policy.insecure_http,
            stub: policy.http_stub.clone(),
            phase,
            denied: denied.clone(),
        },
        limiter: MemoryCap {
            limit: usize::try_from(memory).unwrap_or(usize::MAX),
            hit: false,
        },
        deadline: Instant::now() + policy.timeout,
        timed_out: false,
        plugin: plugin.name().to_string(),
        step: step.to_string(),
        phase,
        transfer: policy.transfer.clone(),
        log_sink: policy.log_sink.clone(),
    };
    let mut store = Store::new(&rt.engine, state);
    store.limiter(|s| &mut s.limiter);
    // Re-armed per call: check the wall deadline at every epoch tick and
    // yield to the executor in between so other steps keep running.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        if Instant::now() >= ctx.data().deadline {
            ctx.data_mut().timed_out = true;
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    Call {
        store,
        stderr,
        denied,
        phase,
        policy_memory: memory,
        timeout: policy.timeout,
    }
}

impl Call {
    fn denied(&self) -> Denied {
        Denied(self.denied.lock().map(|d| d.clone()).unwrap_or_default())
    }

    /// Turn a wasmtime error into a [`CallError`] naming plugin, step and cause.
    fn classify(&self, e: wasmtime::Error) -> CallError {
        let s = self.store.data();
        let (plugin, step, phase) = (s.plugin.clone(), s.step.clone(), self.phase.as_str());
        if s.limiter.hit || e.is::<MemoryLimitHit>() {
            return CallError::Memory {
                plugin,
                step,
                phase,
                limit_mib: self.policy_memory >> 20,
            };
        }
        if s.timed_out || matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return CallError::Timeout {
                plugin,
                step,
                phase,
                limit: self.timeout,
            };
        }
        let stderr = String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_string();
        let trap = e.downcast_ref::<Trap>().map(|t| t.to_string());
        let cause = match (trap, stderr.is_empty()) {
            (Some(t), false) => format!("{t}; plugin said: {}", last_lines(&stderr, 3)),
            (Some(t), true) => t,
            (None, false) => format!(
                "{}; plugin said: {}",
                crate::root_cause(&e),
                last_lines(&stderr, 3)
            ),
            (None, true) => crate::root_cause(&e),
        };
        CallError::Trap {
            plugin,
            step,
            phase,
            cause,
            denied: self.denied(),
        }
    }

    fn host_error(&self, cause: String) -> CallError {
        let s = self.store.data();
        CallError::Host {
            plugin: s.plugin.clone(),
            step: s.step.clone(),
            phase: self.phase.as_str(),
            cause,
        }
    }

    fn step_error(&self, e: wit::StepError) -> CallError {
        let s = self.store.data();
        CallError::Step {
            plugin: s.plugin.clone(),
            step: s.step.clone(),
            error: contract::StepError {
                code: e.code,
                message: e.message,
                retryable: e.retryable,
            },
            denied: self.denied(),
        }
    }

    /// The outcome of a call: its value, or why it failed.
    fn settle<T>(
        &self,
        r: Result<wasmtime::Result<Result<T, wit::StepError>>, tokio::time::error::Elapsed>,
    ) -> Result<T, CallError> {
        match r {
            Err(_) => Err(self.timeout_error()),
            Ok(Err(e)) => Err(self.classify(e)),
            Ok(Ok(Err(e))) => Err(self.step_error(e)),
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }

    fn timeout_error(&self) -> CallError {
        let s = self.store.data();
        CallError::Timeout {
            plugin: s.plugin.clone(),
            step: s.step.clone(),
            phase: self.phase.as_str(),
            limit: self.timeout,
        }
    }
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Host-side waits (HTTP) are bounded too: the epoch only fires while wasm runs.
fn outer_limit(timeout: Duration) -> Duration {
    timeout + Duration::from_millis(250)
}

pub(crate) async fn describe(
    rt: &Runtime,
    plugin: &Plugin,
) -> Result<contract::PluginInfo, CallError> {
    let mut call = new_call(rt, plugin, &Policy::default(), Phase::Describe, "describe");
    let fut = async {
        let inst = plugin.inner.pre.instantiate_async(&mut call.store).await?;
        inst.lifeboat_plugin_steps()
            .call_describe(&mut call.store)
            .await
    };
    let r = tokio::time::timeout(outer_limit(crate::DEFAULT_TIMEOUT), fut).await;
    match r {
        Err(_) => Err(call.timeout_error()),
        Ok(Err(e)) => Err(call.classify(e)),
        Ok(Ok(info)) => Ok(contract::PluginInfo {
            name: info.name,
            version: info.version,
            doc: info.doc,
            steps: info
                .steps
                .into_iter()
                .map(|s| contract::StepInfo {
                    name: s.name,
                    doc: s.doc,
                    inputs: s.inputs.into_iter().map(field).collect(),
                    outputs: s.outputs.into_iter().map(field).collect(),
                })
                .collect(),
        }),
    }
}

fn field(f: wit::Field) -> contract::Field {
    contract::Field {
        name: f.name,
        ty: match f.type_ {
            wit::FieldType::String => contract::FieldType::String,
            wit::FieldType::Integer => contract::FieldType::Integer,
            wit::FieldType::Number => contract::FieldType::Number,
            wit::FieldType::Boolean => contract::FieldType::Boolean,
            wit::FieldType::List => contract::FieldType::List,
            wit::FieldType::Object => contract::FieldType::Object,
            wit::FieldType::Any => contract::FieldType::Any,
        },
        required: f.required,
        sensitive: f.sensitive,
        doc: f.doc,
    }
}

fn kind_from_wit(k: wit::ActionKind) -> contract::ActionKind {
    match k {
        wit::ActionKind::Read => contract::ActionKind::Read,
        wit::ActionKind::Create => contract::ActionKind::Create,
        wit::ActionKind::Update => contract::ActionKind::Update,
        wit::ActionKind::Delete => contract::ActionKind::Delete,
        wit::ActionKind::Transfer => contract::ActionKind::Transfer,
        wit::ActionKind::Run => contract::ActionKind::Run,
    }
}

fn kind_to_wit(k: contract::ActionKind) -> wit::ActionKind {
    match k {
        contract::ActionKind::Read => wit::ActionKind::Read,
        contract::ActionKind::Create => wit::ActionKind::Create,
        contract::ActionKind::Update => wit::ActionKind::Update,
        contract::ActionKind::Delete => wit::ActionKind::Delete,
        contract::ActionKind::Transfer => wit::ActionKind::Transfer,
        contract::ActionKind::Run => wit::ActionKind::Run,
    }
}

fn ctx_to_wit(c: &contract::CallContext) -> wit::CallContext {
    wit::CallContext {
        workflow: c.workflow.clone(),
        step_id: c.step_id.clone(),
        action_index: c.action_index,
        attempt: c.attempt,
    }
}

/// Parse a JSON document the plugin produced; its fault if it is not JSON.
fn plugin_json(call: &Call, what: &str, text: &str) -> Result<serde_json::Value, CallError> {
    if text.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(text).map_err(|e| {
        call.step_error(wit::StepError {
            code: "invalid-output".into(),
            message: format!("the plugin returned {what} that is not JSON ({e})"),
            retryable: false,
        })
    })
}

pub(crate) async fn plan(
    rt: &Runtime,
    plugin: &Plugin,
    policy: &Policy,
    ctx: &contract::CallContext,
    step: &str,
    inputs: &serde_json::Value,
) -> Result<contract::PlanResult, CallError> {
    let mut call = new_call(rt, plugin, policy, Phase::Plan, step);
    let inputs = serde_json::to_string(inputs).map_err(|e| call.host_error(e.to_string()))?;
    let wctx = ctx_to_wit(ctx);
    let fut = async {
        let inst = plugin.inner.pre.instantiate_async(&mut call.store).await?;
        inst.lifeboat_plugin_steps()
            .call_plan(&mut call.store, &wctx, step, &inputs)
            .await
    };
    let r = tokio::time::timeout(outer_limit(policy.timeout), fut).await;
    let res = call.settle(r)?;
    let mut actions = Vec::with_capacity(res.actions.len());
    for a in res.actions {
        actions.push(contract::Action {
            kind: kind_from_wit(a.kind),
            resource: a.resource,
            summary: a.summary,
            payload: plugin_json(&call, "an action payload", &a.payload)?,
        });
    }
    let mut outputs = Vec::with_capacity(res.outputs.len());
    for o in res.outputs {
        let value = match o.value {
            Some(v) => Some(plugin_json(&call, "an output", &v)?),
            None => None,
        };
        outputs.push(contract::Output {
            name: o.name,
            value,
        });
    }
    Ok(contract::PlanResult { actions, outputs })
}

pub(crate) async fn apply(
    rt: &Runtime,
    plugin: &Plugin,
    policy: &Policy,
    ctx: &contract::CallContext,
    step: &str,
    inputs: &serde_json::Value,
    action: &contract::Action,
) -> Result<Vec<(String, serde_json::Value)>, CallError> {
    let mut call = new_call(rt, plugin, policy, Phase::Apply, step);
    let inputs = serde_json::to_string(inputs).map_err(|e| call.host_error(e.to_string()))?;
    let waction = wit::Action {
        kind: kind_to_wit(action.kind),
        resource: action.resource.clone(),
        summary: action.summary.clone(),
        payload: serde_json::to_string(&action.payload)
            .map_err(|e| call.host_error(e.to_string()))?,
    };
    let wctx = ctx_to_wit(ctx);
    let fut = async {
        let inst = plugin.inner.pre.instantiate_async(&mut call.store).await?;
        inst.lifeboat_plugin_steps()
            .call_apply(&mut call.store, &wctx, step, &inputs, &waction)
            .await
    };
    let r = tokio::time::timeout(outer_limit(policy.timeout), fut).await;
    let res = call.settle(r)?;
    let mut out = Vec::with_capacity(res.len());
    for o in res {
        let v = match o.value {
            Some(v) => plugin_json(&call, "an output", &v)?,
            None => serde_json::Value::Null,
        };
        out.push((o.name, v));
    }
    Ok(out)
}
