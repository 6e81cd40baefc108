//! Compile plugin crates of this workspace to WebAssembly components.
//!
//! Used by `host/bundled`'s build script (first-party plugins embedded in the
//! binary) and by the end-to-end tests (hostile test plugins). Builds go to
//! `target/wasm` so they never wait on the outer cargo's lock.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target plugins are built for.
pub const TARGET: &str = "wasm32-wasip2";
/// The cargo profile plugins are built with (see the root Cargo.toml).
pub const PROFILE: &str = "plugin";

/// The workspace root, from a crate directory two levels down.
pub fn workspace_root(manifest_dir: &Path) -> PathBuf {
    manifest_dir
        .ancestors()
        .nth(2)
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

/// Build `packages` (cdylib crates) and return the component path of each, in order.
pub fn build(root: &Path, packages: &[&str]) -> Result<Vec<PathBuf>, String> {
    check_target()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = root.join("target").join("wasm");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .arg("build")
        .arg("--quiet")
        .arg("--target")
        .arg(TARGET)
        .arg("--profile")
        .arg(PROFILE)
        .arg("--target-dir")
        .arg(&target_dir);
    for p in packages {
        cmd.arg("-p").arg(p);
    }
    // Flags meant for the host build must not leak into the wasm build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_LLVM_COV",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building plugins {packages:?} for {TARGET} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(packages
        .iter()
        .map(|p| {
            target_dir
                .join(TARGET)
                .join(PROFILE)
                .join(format!("{}.wasm", p.replace('-', "_")))
        })
        .collect())
}

/// Fail early, with the fix, when the wasm target is missing.
fn check_target() -> Result<(), String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !dir.exists() {
        return Err(format!(
            "the Rust target {TARGET} is not installed; run `rustup target add {TARGET}`"
        ));
    }
    Ok(())
}
