//! The real binary: exit code, stdout and stderr pinned.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{insta_settings, lifeboat, transcript};

fn run(args: &[&str]) -> String {
    let out = lifeboat().args(args).output().unwrap();
    transcript(&out)
}

macro_rules! pin {
    ($name:expr, $value:expr) => {
        insta_settings().bind(|| insta::assert_snapshot!($name, $value))
    };
}

#[test]
fn help() {
    pin!("cli-help", run(&["--help"]));
    pin!("cli-plan-help", run(&["plan", "--help"]));
    pin!("cli-vault-help", run(&["vault", "--help"]));
}

#[test]
fn validate_ok_and_invalid() {
    pin!(
        "cli-validate-ok",
        run(&["validate", "workflows/quickstart.yaml"])
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: bad\nplugins:\n  demo: { source: builtin:demo }\nsteps:\n  - id: inv\n    uses: demo/inventry\n").unwrap();
    let out = lifeboat().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    pin!("cli-validate-invalid", transcript(&out));
    pin!(
        "cli-missing-file",
        run(&["validate", "workflows/nope.yaml"])
    );
}

#[test]
fn plan_input_errors() {
    pin!(
        "cli-plan-unknown-input",
        run(&["plan", "workflows/quickstart.yaml", "--input", "knd=test"])
    );
    pin!(
        "cli-plan-bad-kind",
        run(&[
            "plan",
            "workflows/quickstart.yaml",
            "--input",
            "kind=sideways"
        ])
    );
    pin!(
        "cli-plan-bad-input-syntax",
        run(&["plan", "workflows/quickstart.yaml", "--input", "kind"])
    );
}

#[test]
fn run_quickstart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    pin!(
        "cli-run-quickstart",
        run(&[
            "run",
            "--jobs",
            "1",
            "--state-dir",
            state,
            "workflows/quickstart.yaml",
            "--input",
            "kind=planned"
        ])
    );
    pin!(
        "cli-run-quickstart-json",
        run(&[
            "run",
            "--jobs",
            "1",
            "--format",
            "json",
            "--state-dir",
            state,
            "workflows/quickstart.yaml"
        ])
    );
    pin!("cli-resume-nothing", run(&["resume", "--state-dir", state]));
}

#[test]
fn apply_saved_plan_and_refuse_changes() {
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join("wf.yaml");
    std::fs::copy(common::root().join("workflows/quickstart.yaml"), &wf).unwrap();
    let plan = dir.path().join("plan.json");
    let state = dir.path().join("state");
    let out = lifeboat()
        .arg("plan")
        .arg(&wf)
        .arg("--out")
        .arg(&plan)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = lifeboat()
        .args(["apply", "--jobs", "1", "--state-dir"])
        .arg(&state)
        .arg(&plan)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Result: ok — 7 action(s) applied"));
    // the workflow changes: the plan is refused
    let text = std::fs::read_to_string(&wf)
        .unwrap()
        .replace("web-02", "web-03");
    std::fs::write(&wf, text).unwrap();
    let out = lifeboat()
        .args(["apply", "--state-dir"])
        .arg(&state)
        .arg(&plan)
        .output()
        .unwrap();
    pin!("cli-apply-changed-workflow", transcript(&out));
    // not a plan
    std::fs::write(&plan, "{}").unwrap();
    let out = lifeboat().arg("apply").arg(&plan).output().unwrap();
    pin!("cli-apply-not-a-plan", transcript(&out));
}

#[test]
fn plugins() {
    pin!("cli-plugin-list", run(&["plugin", "list"]));
    pin!(
        "cli-plugin-inspect",
        run(&["plugin", "inspect", "builtin:demo"])
    );
    pin!(
        "cli-plugin-inspect-missing",
        run(&["plugin", "inspect", "builtin:nope"])
    );
}

#[test]
fn doctor() {
    let out = lifeboat().arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("ok       qemu-img"), "{text}");
    assert!(text.contains("ready:"), "{text}");
    // a machine without qemu-utils is told what to install, with exit code 1
    let empty = tempfile::tempdir().unwrap();
    let cargo_bin = std::path::Path::new(env!("CARGO"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = std::env::join_paths([cargo_bin, empty.path().to_path_buf()]).unwrap();
    let out = lifeboat().arg("doctor").env("PATH", path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("MISSING  qemu-img"), "{text}");
    assert!(text.contains("fix: apt-get install qemu-utils"), "{text}");
    assert!(text.contains("optional componentize-py"), "{text}");
}

/// Encryption in transit for the vault: an object-store vault with a plain
/// `http://` endpoint is refused before anything runs, unless its URL opts in
/// for an emulator on this machine; the plan then says NOT ENCRYPTED, and an
/// `https://` endpoint says TLS.
#[test]
fn vault_endpoints_need_tls() {
    let d = tempfile::tempdir().unwrap();
    let wf = |name: &str, url: &str| {
        let p = d.path().join(format!("{name}.yaml"));
        std::fs::write(
            &p,
            format!(
                "name: {name}\nvault:\n  url: \"{url}\"\nplugins:\n  demo: {{ source: \"builtin:demo\" }}\nsteps:\n  - id: hello\n    uses: demo/inventory\n    with: {{ site: lab }}\n"
            ),
        )
        .unwrap();
        p
    };
    let plan = |p: &std::path::Path| {
        lifeboat()
            .env("LIFEBOAT_VAULT_KEY", "00".repeat(32))
            .args(["plan"])
            .arg(p)
            .output()
            .unwrap()
    };
    let o = plan(&wf("plain", "s3://b/p?endpoint=http://127.0.0.1:9000"));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("error: vault s3://b/p?endpoint=http://127.0.0.1:9000: endpoint http://127.0.0.1:9000 is plain http: the vault's signed requests would travel unencrypted; use https://, or for an emulator on this machine add `&insecure_http=true`"),
        "{err}"
    );
    let o = plan(&wf(
        "remote",
        "s3://b/p?endpoint=http://s3.example.com&insecure_http=true",
    ));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let o = plan(&wf(
        "emulator",
        "s3://b/p?endpoint=http://127.0.0.1:9000&insecure_http=true",
    ));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(out.contains("NOT ENCRYPTED in transit: plain http to http://127.0.0.1:9000, allowed by insecure_http"), "{out}");
    let o = plan(&wf("tls", "s3://b/p?endpoint=https://s3.example.com"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(out.contains("; TLS to https://s3.example.com)"), "{out}");
}
