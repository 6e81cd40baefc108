//! `docs/workflow.schema.json` must equal `json_schema()` (rewrite with
//! `LIFEBOAT_BLESS=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

#[test]
fn checked_in_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/workflow.schema.json");
    let mut expected =
        serde_json::to_string_pretty(&lifeboat_workflow::json_schema()).expect("json");
    expected.push('\n');
    if common::bless() {
        std::fs::write(&path, &expected).expect("write schema");
        return;
    }
    let actual = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with LIFEBOAT_BLESS=1)", path.display()));
    assert!(
        actual == expected,
        "{} is out of date; run `LIFEBOAT_BLESS=1 cargo test -p lifeboat-workflow --test schema`",
        path.display()
    );
}
