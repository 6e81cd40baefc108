//! One deployment pinned byte for byte. Re-bless with
//! `LIFEBOAT_BLESS=1 cargo test -p lifeboat-azure-arm --test golden`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use lifeboat_azure_arm::deployment;

/// The golden file, shared with the oracle test (which checks it too).
pub fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/uefi-3-disks-2-nics.json")
}

#[test]
fn uefi_three_disks_two_nics_matches_golden() {
    let doc = deployment(&common::uefi_three_disks(), None).unwrap();
    let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    let path = golden_path();
    if std::env::var_os("LIFEBOAT_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with LIFEBOAT_BLESS=1 cargo test -p lifeboat-azure-arm --test golden",
            path.display()
        )
    });
    if text != want {
        let line = text
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| text.lines().count().min(want.lines().count()))
            + 1;
        panic!(
            "deployment differs from {} from line {line}:\n  got:  {:?}\n  want: {:?}\n\
             If the change is intended, re-bless with LIFEBOAT_BLESS=1 cargo test -p lifeboat-azure-arm --test golden",
            path.display(),
            text.lines().nth(line - 1).unwrap_or(""),
            want.lines().nth(line - 1).unwrap_or(""),
        );
    }
}
