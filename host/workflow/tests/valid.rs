//! Valid workflows: parse, validate, dependency order, inputs.

mod common;

use indexmap::IndexMap;
use lifeboat_workflow::{FieldType, PluginSource, Template, WorkflowError};
use serde_json::json;

#[test]
fn valid_fixtures_validate() {
    let files = common::fixtures("valid");
    assert!(!files.is_empty());
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        if let Err(d) = common::load(&path.display().to_string(), &text) {
            panic!("{} should be valid:\n{}", path.display(), d.render());
        }
    }
}

fn quickstart() -> lifeboat_workflow::Workflow {
    let text = include_str!("fixtures/valid/quickstart.yaml");
    common::load("quickstart.yaml", text).unwrap_or_else(|d| panic!("{}", d.render()))
}
