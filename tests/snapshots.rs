//! Every workflow in workflows/ plans to a pinned, byte-identical document,
//! in text and in JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};

use common::{insta_settings, lifeboat, root};

fn workflows() -> Vec<String> {
    let mut out = vec![];
    let mut dirs = vec![root().join("workflows")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p.strip_prefix(root()).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Workflows of the recovery scenarios read a demo lab (`inputs.lab`): give
/// each a fresh one under target/, named relative to the workflow file so the
/// plan holds no machine-specific path. A failover workflow (one with a
/// `recovery-point` step) needs a recovery point to plan: its lab is
/// replicated once per test process with the `replicate.yaml` beside it, so
/// every plan of it sees the same point (its id and time are redacted by the
/// shared insta filters).
fn lab_args(file: &str, lab: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    if text.contains("builtin:http-health-probe") {
        // a health endpoint on 127.0.0.1 for the run (the plan keeps the default)
        if lab != "run" {
            return vec![];
        }
        static SERVER: OnceLock<common::Server> = OnceLock::new();
        let s = SERVER.get_or_init(common::Server::start);
        return vec!["--input".into(), format!("url={}/health", s.url())];
    }
    if !text.contains("inputs.lab") {
        return vec![];
    }
    let needs_point = text.contains("/recovery-point");
    let dir = if needs_point {
        // one replicated lab per scenario folder (its replicate.yaml)
        let scenario = std::path::Path::new(file)
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        format!("target/test-labs/{lab}-{scenario}-replicated")
    } else {
        format!("target/test-labs/{lab}")
    };
    static REPLICATED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut replicated = REPLICATED.lock().unwrap();
    if !needs_point || !replicated.contains(&dir) {
        let out = lifeboat()
            .args(["demo", "init", "--force", &dir])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if needs_point && replicated.insert(dir.clone()) {
        let replicate = std::path::Path::new(file).with_file_name("replicate.yaml");
        let state = tempfile::tempdir().unwrap();
        let out = lifeboat()
            .args(["run", "--state-dir"])
            .arg(state.path())
            .arg(&replicate)
            .arg("--input")
            .arg(format!("lab={}", root().join(&dir).display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file} needs a point: {}: {}{}",
            replicate.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let depth = std::path::Path::new(file).components().count() - 1;
    vec![
        "--input".into(),
        format!("lab={}{dir}", "../".repeat(depth)),
    ]
}

fn plan(file: &str, format: &str) -> String {
    let out = lifeboat()
        // replicate-vcenter.yaml's secret: a plan needs it set, never shows it
        .env("VCENTER_PASSWORD", "not-a-real-password")
        .args(["plan", "--format", format, file])
        .args(lab_args(file, "plan"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_workflow_plans_deterministically() {
    let files = workflows();
    assert!(!files.is_empty());
    for file in files {
        let name = file
            .trim_start_matches("workflows/")
            .trim_end_matches(".yaml")
            .replace('/', "__");
        for format in ["text", "json"] {
            let first = plan(&file, format);
            let second = plan(&file, format);
            assert_eq!(first, second, "{file}: two plans differ ({format})");
            assert!(!first.contains("/tmp/"), "{file}: temp path in the plan");
            insta_settings()
                .bind(|| insta::assert_snapshot!(format!("plan-{name}-{format}"), first));
        }
    }
}

#[test]
fn every_workflow_runs() {
    for file in workflows() {
        // needs a vCenter: tests/vcenter.rs runs it against vcsim
        if file.ends_with("/replicate-vcenter.yaml") {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = lifeboat()
            .args(["run", "--state-dir"])
            .arg(dir.path())
            .arg(&file)
            .args(lab_args(&file, "run"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("\nResult: ok"), "{file}:\n{stdout}");
    }
}

#[test]
fn secrets_never_appear_in_plans() {
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join("secret.yaml");
    std::fs::write(
        &wf,
        "name: secret\nsecrets:\n  token: { env: DEMO_TOKEN }\nplugins:\n  demo:\n    source: builtin:demo\n    grants: { secrets: [token] }\nsteps:\n  - id: inventory\n    uses: demo/inventory\n    with: { site: \"${{ secrets.token }}\" }\n",
    )
    .unwrap();
    let out = lifeboat()
        .env("DEMO_TOKEN", "hunter-two")
        .args(["plan", "--format", "json"])
        .arg(&wf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("hunter-two"), "{text}");
    assert!(text.contains("(secret token)"), "{text}");
    // and the secret is required from the environment
    let out = lifeboat()
        .env_remove("DEMO_TOKEN")
        .args(["plan"])
        .arg(&wf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("export DEMO_TOKEN"));
}
