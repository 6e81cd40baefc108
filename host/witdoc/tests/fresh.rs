//! The committed reference page must match the WIT it documents.

use std::fs;
use std::path::Path;

use lifeboat_witdoc::{DEFAULT_OUT, DEFAULT_WIT_DIR, render, stale_message};

#[test]
fn committed_contract_reference_is_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let expected = render(&root.join(DEFAULT_WIT_DIR)).expect("wit/ renders");
    let committed = fs::read_to_string(root.join(DEFAULT_OUT)).unwrap_or_default();
    if committed != expected {
        let first_diff = committed
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(expected.lines().count()));
        panic!(
            "{}\n(first difference at line {})",
            stale_message(DEFAULT_OUT, "wit/plugin.wit"),
            first_diff + 1
        );
    }
}
