//! Golden diagnostics: every `fixtures/invalid/NAME.yaml` must fail, and its
//! rendered report must equal `NAME.err` (rewrite with `LIFEBOAT_BLESS=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

fn display_name(path: &Path) -> String {
    format!(
        "fixtures/invalid/{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("?")
    )
}

#[test]
fn invalid_fixtures_render_as_pinned() {
    let files = common::fixtures("invalid");
    assert!(
        files.len() >= 18,
        "expected at least 18 invalid fixtures, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read fixture");
        let diags = match common::load(&display_name(path), &text) {
            Ok(_) => {
                failures.push(format!("{}: unexpectedly valid", path.display()));
                continue;
            }
            Err(d) => d,
        };
        assert!(!diags.is_empty());
        let rendered = diags.render();
        // Rendering is deterministic.
        assert_eq!(rendered, diags.render());
        let err_path = path.with_extension("err");
        if common::bless() {
            std::fs::write(&err_path, &rendered).expect("write .err");
            continue;
        }
        match std::fs::read_to_string(&err_path) {
            Ok(expected) if expected == rendered => {}
            Ok(expected) => failures.push(format!(
                "{}: rendered diagnostics differ from {}\n--- expected\n{expected}\n--- actual\n{rendered}",
                path.display(),
                err_path.display()
            )),
            Err(_) => failures.push(format!(
                "{}: missing {} (run with LIFEBOAT_BLESS=1)\n{rendered}",
                path.display(),
                err_path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_err_file_has_a_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    for entry in std::fs::read_dir(dir).expect("dir") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|e| e == "err") {
            assert!(p.with_extension("yaml").exists(), "stale {}", p.display());
        }
    }
}
