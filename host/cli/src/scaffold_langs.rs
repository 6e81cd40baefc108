//! Python (componentize-py) and JavaScript (componentize-js) plugin projects:
//! their templates and builds. Each build is one command run in the project
//! folder, producing `target/plugin.wasm`; a missing tool is an error that says
//! exactly what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::anyhow;

use crate::load::Failure;
use crate::scaffold::{TemplateFile, find_tool, missing, run};

macro_rules! template {
    ($lang:literal: $($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../../plugins/templates/", $lang, "/", $path)))),*]
    };
}

pub const PYTHON: &[TemplateFile] = template!("python":
    "app.py", "requirements.txt", "README.md", ".gitignore",
    "tests/check.yaml", "tests/bad-input.yaml",
    "tests/snapshots/check.snap", "tests/snapshots/bad-input.snap",
);

pub const JS: &[TemplateFile] = template!("js":
    "package.json", "src/plugin.js", "README.md", ".gitignore",
    "tests/check.yaml", "tests/bad-input.yaml",
    "tests/snapshots/check.snap", "tests/snapshots/bad-input.snap",
);

/// The project's own tool (in `.venv` or `node_modules`), else one on PATH.
fn tool(local: PathBuf, name: &str) -> Option<PathBuf> {
    if local.is_file() {
        Some(local)
    } else {
        find_tool(name)
    }
}

/// `componentize-py -d wit -w plugin componentize app -o target/plugin.wasm`.
pub fn build_python(dir: &Path, out: &Path) -> Result<(), Failure> {
    let venv = dir.join(".venv");
    let Some(cpy) = tool(venv.join("bin/componentize-py"), "componentize-py") else {
        return Err(missing(
            "componentize-py",
            "in the project folder: `python3 -m venv .venv && .venv/bin/pip install -r requirements.txt` (Python 3.9+; on Debian also `apt-get install python3-venv`)",
        ));
    };
    let mut cmd = Command::new(&cpy);
    cmd.current_dir(dir)
        .args(["-d", "wit", "-w", "plugin", "componentize", "app", "-o"])
        .arg(out.strip_prefix(dir).unwrap_or(out))
        .env("RUST_BACKTRACE", "0");
    // pure-Python packages installed in the project's .venv are bundled
    if venv.is_dir() {
        cmd.env("VIRTUAL_ENV", venv.canonicalize().unwrap_or(venv));
    }
    run(&mut cmd, "componentize-py").map_err(Failure::Failed)?;
    Ok(())
}

/// `componentize-js src/plugin.js --wit wit --world-name plugin -o target/plugin.wasm`.
pub fn build_js(dir: &Path, out: &Path) -> Result<(), Failure> {
    let Some(cjs) = tool(
        dir.join("node_modules/.bin/componentize-js"),
        "componentize-js",
    ) else {
        return Err(missing(
            "componentize-js",
            "in the project folder: `npm install` (Node.js 20+; it installs @bytecodealliance/componentize-js from package.json)",
        ));
    };
    let mut cmd = Command::new(&cjs);
    cmd.current_dir(dir)
        .args([
            "src/plugin.js",
            "--wit",
            "wit",
            "--world-name",
            "plugin",
            "-o",
        ])
        .arg(out.strip_prefix(dir).unwrap_or(out));
    run(&mut cmd, "componentize-js").map_err(|e| Failure::Failed(anyhow!("{e}")))?;
    Ok(())
}
