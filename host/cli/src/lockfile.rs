//! `lifeboat plugin lock`: the plugins of a workflow pinned by content digest,
//! in `NAME.lock` next to `NAME.yaml` (like Cargo.lock). When the lockfile
//! exists, loading the workflow (plan, run, apply) refuses a plugin whose bytes
//! changed, and a plugin the lockfile does not list.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use lifeboat_runtime::{Plugin, Policy};
use lifeboat_workflow::{PluginSource, Workflow};
use serde::{Deserialize, Serialize};

use crate::load::Failure;

const NOTE: &str =
    "written by `lifeboat plugin lock`; plan and run refuse a plugin whose digest differs";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LockFile {
    note: String,
    version: u32,
    plugins: IndexMap<String, Locked>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Locked {
    source: String,
    /// `blake3:` and the hex digest of the component's bytes.
    digest: String,
    /// The contract the plugin was built against.
    contract: String,
}

/// `replicate.yaml` → `replicate.lock`.
pub fn path_of(workflow: &Path) -> PathBuf {
    workflow.with_extension("lock")
}

fn source_text(s: &PluginSource) -> String {
    match s {
        PluginSource::Builtin(n) => format!("builtin:{n}"),
        PluginSource::Path(p) => p.display().to_string(),
    }
}

fn entries(
    workflow: &Workflow,
    plugins: &IndexMap<String, (Plugin, Policy)>,
) -> IndexMap<String, Locked> {
    plugins
        .iter()
        .map(|(alias, (p, _))| {
            let source = workflow
                .plugins
                .get(alias)
                .map(|d| source_text(&d.source))
                .unwrap_or_default();
            (
                alias.clone(),
                Locked {
                    source,
                    digest: format!("blake3:{}", p.digest()),
                    contract: format!(
                        "{}@{}",
                        lifeboat_contract::WIT_PACKAGE,
                        p.contract_version()
                    ),
                },
            )
        })
        .collect()
}

/// Writes the lockfile; returns its path and how many plugins it pins.
pub fn write(
    file: &Path,
    workflow: &Workflow,
    plugins: &IndexMap<String, (Plugin, Policy)>,
) -> Result<(PathBuf, usize), Failure> {
    let lock = LockFile {
        note: NOTE.into(),
        version: 1,
        plugins: entries(workflow, plugins),
    };
    let path = path_of(file);
    let text = serde_json::to_string_pretty(&lock).unwrap_or_default() + "\n";
    std::fs::write(&path, text)
        .map_err(|e| Failure::Failed(anyhow::anyhow!("cannot write {}: {e}", path.display())))?;
    Ok((path, lock.plugins.len()))
}

/// Refuses plugins that differ from the lockfile, when there is one.
pub fn check(
    file: &Path,
    workflow: &Workflow,
    plugins: &IndexMap<String, (Plugin, Policy)>,
) -> Result<(), Failure> {
    let path = path_of(file);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let fix = format!("`lifeboat plugin lock {}`", file.display());
    let lock: LockFile = serde_json::from_str(&text).map_err(|e| {
        Failure::Invalid(format!(
            "error: {}: {e}\n  help: the lockfile is written by {fix}; write it again",
            path.display()
        ))
    })?;
    let mut problems = Vec::new();
    for (alias, now) in entries(workflow, plugins) {
        match lock.plugins.get(&alias) {
            None => problems.push(format!(
                "plugin `{alias}` ({}) is not in the lockfile",
                now.source
            )),
            Some(l) if l.source != now.source => problems.push(format!(
                "plugin `{alias}` comes from {} but the lockfile pins {}",
                now.source, l.source
            )),
            Some(l) if l.digest != now.digest => problems.push(format!(
                "plugin `{alias}` ({}) changed: its digest is {}, the lockfile pins {}",
                now.source, now.digest, l.digest
            )),
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Failure::Invalid(format!(
        "error: {} does not match the plugins of {}:\n{}\n  help: if the change is intended, review it and run {fix}; nothing was planned or applied",
        path.display(),
        file.display(),
        problems
            .iter()
            .map(|p| format!("  - {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    )))
}
