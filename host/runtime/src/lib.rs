//! The sandboxed plugin runtime.
//!
//! Owns the wasmtime [`Engine`] (pooling allocator, epoch interruption), the
//! on-disk cache of compiled components, the one `bindgen!` over `wit/`, and
//! the per-call sandbox: a fresh [`Store`] with an empty WASI context, a
//! memory cap, a deadline re-armed per call, and `wasi:http` requests checked
//! against the plugin's grants.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod cache;
mod http;
mod sandbox;
mod transfer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lifeboat_contract as contract;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use http::{HostPattern, HttpAnswer, HttpStub};
pub use sandbox::{CallError, LogSink, Phase, Policy};

/// The one place the WIT contract becomes Rust.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// Errors of the runtime itself (loading and compiling plugins).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("could not set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("plugin `{plugin}` is not a valid WebAssembly component: {cause}")]
    Compile { plugin: String, cause: String },
    #[error(
        "plugin `{plugin}` is not a lifeboat plugin: it exports no `{package}/steps` interface (its exports: {exports})"
    )]
    NotAPlugin {
        plugin: String,
        package: &'static str,
        exports: String,
    },
    #[error(
        "plugin `{plugin}` targets world `{package}/{world}@{found}`, but this host supports {package}@{supported}; rebuild the plugin against {package}@{supported}"
    )]
    Version {
        plugin: String,
        package: &'static str,
        world: &'static str,
        found: String,
        supported: String,
    },
    #[error("plugin `{plugin}` needs an import this host does not provide: {cause}")]
    Link { plugin: String, cause: String },
    #[error("plugin `{plugin}` failed in describe: {cause}")]
    Describe { plugin: String, cause: String },
    #[error("cannot read plugin file {path}: {cause}")]
    Read { path: PathBuf, cause: String },
}

/// Settings of a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// How many plugin instances may be live at once (sizes the pool).
    pub max_instances: u32,
    /// Largest memory any plugin may ever be granted.
    pub max_memory: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: default_cache_dir(),
            max_instances: 32,
            max_memory: 1 << 30,
        }
    }
}

/// `$LIFEBOAT_CACHE_DIR`, else `$XDG_CACHE_HOME/lifeboat`, else `~/.cache/lifeboat`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("LIFEBOAT_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("lifeboat"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("lifeboat"))
}

/// Default per-call limits when a workflow sets none.
pub const DEFAULT_MEMORY: u64 = 128 << 20;
/// Default per-call deadline when a workflow sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Epoch tick length: the granularity of deadlines.
const TICK: Duration = Duration::from_millis(5);

/// The plugin runtime: one per process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<sandbox::HostState>,
    cache: cache::ComponentCache,
    max_memory: u64,
    stop_ticker: Arc<AtomicBool>,
    pooling: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("max_memory", &self.max_memory)
            .finish_non_exhaustive()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

fn engine_config(pooling: Option<&RuntimeConfig>) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    // The `component-model-async` feature stays off (not compiled in): plugins
    // are plain components and it costs per-call time (0.3 µs vs 1.2 µs).
    config.max_wasm_stack(2 << 20);
    if let Some(rc) = pooling {
        let mut pool = PoolingAllocationConfig::new();
        let n = rc.max_instances.max(1);
        pool.total_component_instances(n);
        pool.total_core_instances(n * 8);
        pool.max_core_instances_per_component(16);
        pool.total_memories(n * 2);
        pool.max_memories_per_component(2);
        pool.total_tables(n * 4);
        pool.max_tables_per_component(4);
        pool.total_stacks(n);
        pool.max_memory_size(usize::try_from(rc.max_memory).unwrap_or(usize::MAX));
        pool.max_unused_warm_slots(n.min(8));
        // Reset small, hot slots with memset instead of madvise: plugin
        // calls are short and touch little memory.
        pool.linear_memory_keep_resident(128 << 10);
        pool.table_keep_resident(16 << 10);
        pool.async_stack_keep_resident(64 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        config.memory_reservation(rc.max_memory);
    }
    config
}

impl Runtime {
    /// Build the engine, the linker with every host import, and the ticker.
    pub fn new(rc: RuntimeConfig) -> Result<Self, RuntimeError> {
        let mut pooling = true;
        let engine = match Engine::new(&engine_config(Some(&rc))) {
            Ok(e) => e,
            Err(pool_err) => {
                // Some sandboxes forbid large virtual reservations: fall back
                // to on-demand allocation rather than refuse to run.
                tracing::warn!(error = %pool_err, "pooling allocator unavailable, using on-demand instances");
                pooling = false;
                Engine::new(&engine_config(None))
                    .map_err(|e| RuntimeError::Engine(e.to_string()))?
            }
        };
        let mut linker: Linker<sandbox::HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        bindings::Plugin::add_to_linker::<sandbox::HostState, HasSelf<sandbox::HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| RuntimeError::Engine(e.to_string()))?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("lifeboat-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        }
        let cache = cache::ComponentCache::new(&engine, rc.cache_dir.clone());
        Ok(Runtime {
            engine,
            linker,
            cache,
            max_memory: rc.max_memory,
            stop_ticker,
            pooling,
        })
    }

    /// Whether instances come from the pooling allocator (else on demand).
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// The wasmtime engine (for benchmarks and tools).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Load a plugin from a file.
    pub async fn load_file(
        &self,
        name: &str,
        path: &std::path::Path,
    ) -> Result<Plugin, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|e| RuntimeError::Read {
            path: path.to_path_buf(),
            cause: e.to_string(),
        })?;
        self.load(name, &bytes).await
    }

    /// Compile (or fetch from the cache), check the contract version, link
    /// and describe a plugin. `name` is how errors refer to it.
    pub async fn load(&self, name: &str, wasm: &[u8]) -> Result<Plugin, RuntimeError> {
        let digest = blake3::hash(wasm).to_hex().to_string();
        let component = self
            .cache
            .get_or_compile(&self.engine, name, wasm, &digest)?;
        let contract_version = check_contract(name, &component, &self.engine)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| RuntimeError::Link {
                plugin: name.to_string(),
                cause: root_cause(&e),
            })?;
        let pre = bindings::PluginPre::new(pre).map_err(|e| RuntimeError::Link {
            plugin: name.to_string(),
            cause: root_cause(&e),
        })?;
        let mut plugin = Plugin {
            inner: Arc::new(PluginInner {
                name: name.to_string(),
                digest,
                contract_version,
                info: contract::PluginInfo {
                    name: name.to_string(),
                    version: String::new(),
                    doc: String::new(),
                    steps: vec![],
                },
                pre,
            }),
        };
        let info = sandbox::describe(self, &plugin)
            .await
            .map_err(|e| RuntimeError::Describe {
                plugin: name.to_string(),
                cause: e.to_string(),
            })?;
        if let Some(inner) = Arc::get_mut(&mut plugin.inner) {
            inner.info = info;
        }
        Ok(plugin)
    }

    /// Plan one step instance. Read-only: HTTP is limited to GET/HEAD.
    pub async fn plan(
        &self,
        plugin: &Plugin,
        policy: &Policy,
        ctx: &contract::CallContext,
        step: &str,
        inputs: &serde_json::Value,
    ) -> Result<contract::PlanResult, CallError> {
        sandbox::plan(self, plugin, policy, ctx, step, inputs).await
    }

    /// Apply one planned action.
    pub async fn apply(
        &self,
        plugin: &Plugin,
        policy: &Policy,
        ctx: &contract::CallContext,
        step: &str,
        inputs: &serde_json::Value,
        action: &contract::Action,
    ) -> Result<Vec<(String, serde_json::Value)>, CallError> {
        sandbox::apply(self, plugin, policy, ctx, step, inputs, action).await
    }
}

/// A loaded, linked plugin: cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    name: String,
    digest: String,
    contract_version: String,
    info: contract::PluginInfo,
    pre: bindings::PluginPre<sandbox::HostState>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.name)
            .field("digest", &self.inner.digest)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// The name the workflow gave it (or the file name).
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// Hex blake3 of the component bytes.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }
    /// The contract version the plugin was built against (this host's or an
    /// older one of the same track).
    pub fn contract_version(&self) -> &str {
        &self.inner.contract_version
    }
    /// What the plugin said about itself.
    pub fn info(&self) -> &contract::PluginInfo {
        &self.inner.info
    }
}

/// The export every plugin must have, without its version.
const STEPS_EXPORT: &str = "lifeboat:plugin/steps";

/// Check the component exports a compatible `lifeboat:plugin/steps`; returns the
/// contract version it was built against.
fn check_contract(
    name: &str,
    component: &Component,
    engine: &Engine,
) -> Result<String, RuntimeError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let found = exports.iter().find_map(|e| {
        e.strip_prefix(STEPS_EXPORT)
            .map(|rest| rest.strip_prefix('@').unwrap_or("").to_string())
    });
    let Some(found) = found else {
        return Err(RuntimeError::NotAPlugin {
            plugin: name.to_string(),
            package: contract::WIT_PACKAGE,
            exports: if exports.is_empty() {
                "none".into()
            } else {
                exports.join(", ")
            },
        });
    };
    if !compatible(&found, contract::WIT_VERSION) {
        return Err(RuntimeError::Version {
            plugin: name.to_string(),
            package: contract::WIT_PACKAGE,
            world: contract::WIT_WORLD,
            found: if found.is_empty() {
                "unversioned".into()
            } else {
                found
            },
            supported: contract::WIT_VERSION.to_string(),
        });
    }
    Ok(found)
}

/// The contract's versioning rule: the package only grows, so a plugin built
/// against an older or equal version of the same compatible track works. The
/// track is Cargo's and wasmtime's: the first non-zero number of the version
/// (`1.x.y` → `1`, `0.1.y` → `0.1`, `0.0.y` is only itself).
fn compatible(plugin: &str, host: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let mut it = v.split(['.', '-', '+']);
        Some((
            it.next()?.parse().ok()?,
            it.next()?.parse().ok()?,
            it.next()?.parse().ok()?,
        ))
    };
    match (parse(plugin), parse(host)) {
        (Some(p), Some(h)) if p.0 != 0 => p.0 == h.0 && (p.1, p.2) <= (h.1, h.2),
        (Some(p), Some(h)) if p.1 != 0 => h.0 == 0 && p.1 == h.1 && p.2 <= h.2,
        (Some(p), Some(h)) => p == h,
        _ => false,
    }
}

/// The most specific message in a wasmtime error chain.
pub(crate) fn root_cause(e: &wasmtime::Error) -> String {
    let mut msgs: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    msgs.dedup();
    msgs.join(": ")
}

#[cfg(test)]
mod tests {
    use super::compatible;

    #[test]
    fn contract_versions() {
        assert!(compatible("0.1.0", "0.1.0"));
        assert!(compatible("0.1.0", "0.1.3"));
        assert!(!compatible("0.1.4", "0.1.3"));
        assert!(!compatible("0.1.0", "0.2.0"));
        assert!(compatible("0.1.0", "0.1.1"));
        assert!(!compatible("0.0.1", "0.0.2"));
        assert!(!compatible("0.2.0", "0.1.0"));
        assert!(!compatible("1.0.0", "0.1.0"));
        assert!(compatible("1.0.0", "1.2.0"));
        assert!(!compatible("2.0.0", "1.2.0"));
        assert!(!compatible("", "0.1.0"));
    }
}
