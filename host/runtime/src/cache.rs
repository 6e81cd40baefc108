//! Compiled components, cached in memory and on disk.
//!
//! The disk key is the component's blake3 digest together with the engine's
//! precompile-compatibility hash (wasmtime version, target, settings), so an
//! artefact is only ever loaded by the engine configuration that wrote it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Mutex;

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::RuntimeError;

pub(crate) struct ComponentCache {
    dir: Option<PathBuf>,
    engine_key: String,
    memory: Mutex<HashMap<String, Component>>,
}

impl ComponentCache {
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = format!("{:016x}", h.finish());
        ComponentCache {
            dir,
            engine_key,
            memory: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, digest: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| {
            d.join("components").join(format!(
                "{}-{}.cwasm",
                &digest[..32.min(digest.len())],
                self.engine_key
            ))
        })
    }

    pub(crate) fn get_or_compile(
        &self,
        engine: &Engine,
        name: &str,
        wasm: &[u8],
        digest: &str,
    ) -> Result<Component, RuntimeError> {
        if let Ok(mem) = self.memory.lock()
            && let Some(c) = mem.get(digest)
        {
            return Ok(c.clone());
        }
        let path = self.path(digest);
        let mut component = None;
        if let Some(p) = &path
            && p.exists()
        {
            // SAFETY: the file name carries the content digest and the engine's
            // compatibility hash, and only this cache writes into its folder,
            // so the artefact was produced by this wasmtime with this config
            // from exactly these bytes.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(engine, p) } {
                Ok(c) => component = Some(c),
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "ignoring unusable cache entry")
                }
            }
        }
        let component = match component {
            Some(c) => c,
            None => {
                let bytes =
                    engine
                        .precompile_component(wasm)
                        .map_err(|e| RuntimeError::Compile {
                            plugin: name.to_string(),
                            cause: crate::root_cause(&e),
                        })?;
                if let Some(p) = &path {
                    store_atomically(p, &bytes);
                }
                // SAFETY: these bytes were produced just above by this engine.
                #[allow(unsafe_code)]
                let c = unsafe { Component::deserialize(engine, &bytes) }.map_err(|e| {
                    RuntimeError::Compile {
                        plugin: name.to_string(),
                        cause: crate::root_cause(&e),
                    }
                })?;
                c
            }
        };
        if let Ok(mut mem) = self.memory.lock() {
            mem.insert(digest.to_string(), component.clone());
        }
        Ok(component)
    }
}

/// Write via a temporary file and rename, so readers never see half a file.
/// A cache that cannot be written is only a slower start, never an error.
fn store_atomically(path: &std::path::Path, bytes: &[u8]) {
    let Some(dir) = path.parent() else { return };
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::debug!(error = %e, "component cache not writable");
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .is_err()
    {
        let _ = std::fs::remove_file(&tmp);
    }
}
