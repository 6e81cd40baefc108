//! `lifeboat plugin new` and `lifeboat plugin build`: a plugin project from a
//! template kept under plugins/templates/ (versioned with the WIT package), and
//! its build into a component at `target/plugin.wasm`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::load::Failure;

/// The project file `plugin new` writes and `build`/`test` read.
pub const MANIFEST: &str = "lifeboat-plugin.yaml";
/// Where `plugin build` leaves the component, inside the project.
pub const OUTPUT: &str = "target/plugin.wasm";

/// A template file: path inside the project, contents with `{{name}}`,
/// `{{name_snake}}` and `{{wit_version}}` placeholders.
pub type TemplateFile = (&'static str, &'static str);

macro_rules! template {
    ($lang:literal: $($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../../plugins/templates/", $lang, "/", $path)))),*]
    };
}

const RUST: &[TemplateFile] = template!("rust":
    "Cargo.toml", "src/lib.rs", "README.md", ".gitignore",
    "tests/check.yaml", "tests/bad-input.yaml",
    "tests/snapshots/check.snap", "tests/snapshots/bad-input.snap",
);

/// The contract every project gets a copy of.
const WIT: &str = include_str!("../../../wit/plugin.wit");

/// The Rust SDK, copied into Rust projects as `sdk/` (it is not on crates.io).
const SDK: &[TemplateFile] = &[
    (
        "sdk/src/lib.rs",
        include_str!("../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "sdk/src/http.rs",
        include_str!("../../../plugins/sdk/src/http.rs"),
    ),
    (
        "sdk/src/log.rs",
        include_str!("../../../plugins/sdk/src/log.rs"),
    ),
    (
        "sdk/src/replication.rs",
        include_str!("../../../plugins/sdk/src/replication.rs"),
    ),
    (
        "sdk/src/retention.rs",
        include_str!("../../../plugins/sdk/src/retention.rs"),
    ),
    (
        "sdk/src/transfer.rs",
        include_str!("../../../plugins/sdk/src/transfer.rs"),
    ),
];

/// The SDK's manifest in a project: the workspace's versions, written out.
const SDK_MANIFEST: &str = r#"[package]
name = "lifeboat-plugin-sdk"
description = "Write lifeboat plugins in Rust (copied here by `lifeboat plugin new`; matches ../wit/plugin.wit)"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
wit-bindgen = "0.63.0"
wasip2 = "2.0.1"
serde = { version = "1", features = ["derive"] }
serde_json = { version = "1", features = ["preserve_order"] }
"#;

/// A plugin's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    fn files(self) -> &'static [TemplateFile] {
        match self {
            Lang::Rust => RUST,
            Lang::Python => crate::scaffold_langs::PYTHON,
            Lang::Js => crate::scaffold_langs::JS,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }
}

/// `lifeboat-plugin.yaml`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub lang: Lang,
    /// The contract the project was made for, e.g. `lifeboat:plugin@0.1.3`.
    pub contract: String,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest, Failure> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Failure::Invalid(format!(
                "error: {} is not a plugin project: cannot read {}: {e}\n  help: make one with `lifeboat plugin new NAME`",
                dir.display(),
                path.display()
            ))
        })?;
        serde_saphyr::from_str(&text).map_err(|e| {
            Failure::Invalid(format!(
                "error: {}: {e}\n  help: it holds `name`, `lang` (rust, python or js) and `contract`",
                path.display()
            ))
        })
    }
}

fn check_name(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Failure::Invalid(format!(
            "error: `{name}` is not a plugin name\n  help: use lowercase letters, digits and single dashes, starting with a letter (at most 40), e.g. `http-health-probe`"
        )))
    }
}

/// `dir/rel`, without a leading `./` when `dir` is `.`.
fn under(dir: &Path, rel: &str) -> PathBuf {
    if dir == Path::new(".") || dir.as_os_str().is_empty() {
        PathBuf::from(rel)
    } else {
        dir.join(rel)
    }
}

fn render(text: &str, name: &str) -> String {
    text.replace("{{name}}", name)
        .replace("{{name_snake}}", &name.replace('-', "_"))
        .replace("{{wit_version}}", lifeboat_contract::WIT_VERSION)
}

/// `lifeboat plugin new`: writes the project into `parent/NAME`.
pub fn new(name: &str, lang: Lang, parent: &Path) -> Result<PathBuf, Failure> {
    check_name(name)?;
    let dir = under(parent, name);
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Failure::Invalid(format!(
            "error: {} already exists and is not empty; nothing was written\n  help: pick another name, or remove the folder",
            dir.display()
        )));
    }
    let mut files: Vec<(String, String)> = lang
        .files()
        .iter()
        .map(|(p, t)| (p.to_string(), render(t, name)))
        .collect();
    files.push(("wit/plugin.wit".into(), WIT.to_string()));
    if lang == Lang::Rust {
        files.push(("sdk/Cargo.toml".into(), SDK_MANIFEST.to_string()));
        for (p, t) in SDK {
            // the SDK finds the WIT at ../wit inside a project
            files.push((p.to_string(), t.replace("\"../../wit\"", "\"../wit\"")));
        }
    }
    let manifest = format!(
        "# Made by `lifeboat plugin new`; read by `lifeboat plugin build` and `lifeboat plugin test`.\nname: {name}\nlang: {}\ncontract: {}@{}\n",
        lang.as_str(),
        lifeboat_contract::WIT_PACKAGE,
        lifeboat_contract::WIT_VERSION
    );
    files.push((MANIFEST.into(), manifest));
    for (p, text) in files {
        let path = dir.join(&p);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Failure::Failed(anyhow!("cannot create {}: {e}", parent.display())))?;
        }
        std::fs::write(&path, text)
            .map_err(|e| Failure::Failed(anyhow!("cannot write {}: {e}", path.display())))?;
    }
    Ok(dir)
}

/// A tool a build needs is missing: what to install, exactly.
pub fn missing(tool: &str, install: &str) -> Failure {
    Failure::Failed(anyhow!(
        "`{tool}` is needed to build this plugin and was not found\n  help: {install}\n  (`lifeboat doctor` checks every tool)"
    ))
}

pub fn run(cmd: &mut Command, what: &str) -> anyhow::Result<std::process::Output> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Is `tool` on PATH (or at that path)?
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let p = Path::new(tool);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|c| c.is_file())
    })
}

/// Is the Rust target for plugins installed?
pub fn wasm_target_installed() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    Command::new(rustc)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_dir())
        .unwrap_or(false)
}

/// `lifeboat plugin build`: builds the project in `dir`; returns the component's path.
pub fn build(dir: &Path) -> Result<PathBuf, Failure> {
    let m = Manifest::read(dir)?;
    let out = under(dir, OUTPUT);
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Failure::Failed(anyhow!("cannot create {}: {e}", parent.display())))?;
    }
    match m.lang {
        Lang::Rust => build_rust(dir, &out)?,
        Lang::Python => crate::scaffold_langs::build_python(dir, &out)?,
        Lang::Js => crate::scaffold_langs::build_js(dir, &out)?,
    }
    Ok(out)
}

fn build_rust(dir: &Path, out: &Path) -> Result<(), Failure> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if find_tool(&cargo).is_none() {
        return Err(missing(
            "cargo",
            "install Rust with rustup (https://rustup.rs), then `rustup target add wasm32-wasip2`",
        ));
    }
    if !wasm_target_installed() {
        return Err(missing(
            "the wasm32-wasip2 Rust target",
            "run `rustup target add wasm32-wasip2`",
        ));
    }
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(dir).args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--message-format=json-render-diagnostics",
    ]);
    // flags meant for a host build must not leak into the plugin's
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_DIR",
    ] {
        cmd.env_remove(var);
    }
    let o = run(&mut cmd, "cargo build").map_err(Failure::Failed)?;
    // the cdylib's .wasm, wherever the target folder is
    let mut wasm = None;
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        if let Some(files) = v["filenames"].as_array() {
            for f in files.iter().filter_map(|f| f.as_str()) {
                if f.ends_with(".wasm") && !f.contains("/deps/") {
                    wasm = Some(PathBuf::from(f));
                }
            }
        }
    }
    let wasm = wasm.ok_or_else(|| {
        Failure::Failed(anyhow!(
            "cargo build produced no .wasm; is `[lib] crate-type = [\"cdylib\"]` still in Cargo.toml?"
        ))
    })?;
    std::fs::copy(&wasm, out).map_err(|e| {
        Failure::Failed(anyhow!(
            "cannot copy {} to {}: {e}",
            wasm.display(),
            out.display()
        ))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "http-health-probe", "p2v", "x-1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "-a",
            "a-",
            "a--b",
            "a_b",
            "1a",
            "a b",
            &"a".repeat(41),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    /// The SDK manifest written into projects pins what the workspace pins.
    #[test]
    fn sdk_versions_follow_the_workspace() {
        let root = include_str!("../../../Cargo.toml");
        for dep in ["wit-bindgen", "wasip2"] {
            let ws = root
                .lines()
                .find(|l| l.starts_with(&format!("{dep} = ")))
                .unwrap_or_default();
            assert!(!ws.is_empty() && SDK_MANIFEST.contains(ws), "{dep}: {ws}");
        }
        let sdk = include_str!("../../../plugins/sdk/Cargo.toml");
        for dep in ["wit-bindgen", "wasip2", "serde", "serde_json"] {
            assert!(sdk.contains(&format!("{dep}.workspace = true")), "{dep}");
            assert!(SDK_MANIFEST.contains(&format!("\n{dep} = ")), "{dep}");
        }
        // every SDK source file is copied
        let n = std::fs::read_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../plugins/sdk/src"
        ))
        .map(|d| d.count())
        .unwrap_or(0);
        assert_eq!(n, SDK.len());
    }
}
