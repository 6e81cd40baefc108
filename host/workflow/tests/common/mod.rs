//! A fixture plugin catalog shared by the tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use lifeboat_workflow::{
    Catalog, Diagnostics, Document, Field, FieldType, PluginInfo, PluginSource, SourceFile,
    StepInfo, Workflow,
};

fn field(name: &str, ty: FieldType, required: bool, doc: &str) -> Field {
    Field {
        name: name.to_owned(),
        ty,
        required,
        sensitive: false,
        doc: doc.to_owned(),
    }
}

/// The fake `demo` plugin's contract.
pub fn demo() -> PluginInfo {
    PluginInfo {
        name: "demo".to_owned(),
        version: "0.1.0".to_owned(),
        doc: "A demo platform".to_owned(),
        steps: vec![
            StepInfo {
                name: "inventory".to_owned(),
                doc: "List the VMs of a site".to_owned(),
                inputs: vec![
                    field("site", FieldType::String, true, "the site to list"),
                    field("vms", FieldType::List, false, "only these VMs"),
                    field("token", FieldType::String, false, "API token"),
                ],
                outputs: vec![
                    field("vms", FieldType::List, false, "the VMs found"),
                    field("count", FieldType::Integer, false, "how many"),
                ],
            },
            StepInfo {
                name: "failover".to_owned(),
                doc: "Fail one VM over".to_owned(),
                inputs: vec![
                    field("vm", FieldType::String, true, "the VM to fail over"),
                    field(
                        "kind",
                        FieldType::String,
                        false,
                        "test | planned | unplanned",
                    ),
                ],
                outputs: vec![
                    field("vm_id", FieldType::String, false, "the new VM's id"),
                    field("ok", FieldType::Boolean, false, "whether it booted"),
                ],
            },
            StepInfo {
                name: "verify".to_owned(),
                doc: "Check a recovered VM".to_owned(),
                inputs: vec![
                    field("vm_id", FieldType::String, true, "the VM to check"),
                    field("label", FieldType::String, false, ""),
                    field("note", FieldType::String, false, ""),
                    field("attempts", FieldType::Integer, false, "how often to probe"),
                ],
                outputs: vec![field("healthy", FieldType::Boolean, false, "")],
            },
        ],
    }
}

/// Serves `builtin:demo` for any alias that declares it; every other source
/// fails to load.
pub struct FixtureCatalog {
    plugins: HashMap<String, Result<PluginInfo, String>>,
}

impl FixtureCatalog {
    pub fn for_doc(doc: &Document) -> FixtureCatalog {
        let plugins = doc
            .plugin_sources()
            .into_iter()
            .map(|(alias, source, _)| {
                let r = match source {
                    PluginSource::Builtin(n) if n == "demo" => Ok(demo()),
                    PluginSource::Builtin(n) => Err(format!("no bundled plugin is called `{n}`")),
                    PluginSource::Path(p) => Err(format!(
                        "cannot read {}: No such file or directory",
                        p.display()
                    )),
                };
                (alias, r)
            })
            .collect();
        FixtureCatalog { plugins }
    }
}

impl Catalog for FixtureCatalog {
    fn plugin(&self, alias: &str) -> Result<&PluginInfo, String> {
        match self.plugins.get(alias) {
            Some(Ok(p)) => Ok(p),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("alias `{alias}` was never loaded")),
        }
    }
}

pub fn source(name: &str, text: &str) -> Arc<SourceFile> {
    SourceFile::new(name, text)
}

/// parse + validate with the fixture catalog.
pub fn load(name: &str, text: &str) -> Result<Workflow, Diagnostics> {
    let doc = lifeboat_workflow::parse(source(name, text))?;
    let catalog = FixtureCatalog::for_doc(&doc);
    lifeboat_workflow::validate(doc, &catalog)
}

pub fn fixtures(kind: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    out.sort();
    out
}

pub fn bless() -> bool {
    std::env::var_os("LIFEBOAT_BLESS").is_some_and(|v| v == "1")
}
