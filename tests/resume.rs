//! A run killed with SIGKILL mid-apply resumes: actions journaled as done are
//! not applied again; the one interrupted mid-apply is applied again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Server, lifeboat, testkit_wasm};

fn workflow(dir: &std::path::Path, server: &Server, items: u32) -> std::path::PathBuf {
    let wf = dir.join("count.yaml");
    std::fs::write(
        &wf,
        format!(
            "name: count\nplugins:\n  kit:\n    source: {wasm}\n    grants:\n      http: [\"127.0.0.1:{port}\"]\n      insecure_http: true\nsteps:\n  - id: count\n    uses: kit/count\n    with: {{ url: \"{url}\", items: {items} }}\n",
            wasm = testkit_wasm().display(),
            port = server.port,
            url = server.url(),
        ),
    )
    .unwrap();
    wf
}

#[test]
fn killed_run_resumes_without_redoing_finished_actions() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let wf = workflow(dir.path(), &server, 5);
    let state = dir.path().join("state");
    let held = server.hold("/apply/2");
    let mut child = lifeboat()
        .args(["run", "--jobs", "1", "--state-dir"])
        .arg(&state)
        .arg(&wf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Action 2 is in flight: kill -9 the run right there.
    held.recv_timeout(Duration::from_secs(120))
        .expect("action 2 never started");
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.code().is_none(),
        "the run should have died by SIGKILL, got {status}"
    );
    assert_eq!(
        (
            server.count("/apply/0"),
            server.count("/apply/1"),
            server.count("/apply/2")
        ),
        (1, 1, 1)
    );
    assert_eq!(server.count("/apply/3"), 0);

    let out = lifeboat()
        .args(["resume", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "resume failed:\n{stdout}\n{stderr}"
    );
    // done before the kill: not again; interrupted: again; the rest: once.
    for (n, want) in [(0, 1), (1, 1), (2, 2), (3, 1), (4, 1)] {
        assert_eq!(
            server.count(&format!("/apply/{n}")),
            want,
            "action {n}\n{stderr}"
        );
    }
    assert!(stdout.contains("3 action(s) applied, 2 reused"), "{stdout}");
    assert!(stderr.contains("reused   count  ~ item/0"), "{stderr}");

    // A finished run is not resumed again.
    let again = lifeboat()
        .args(["resume", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no unfinished run"));
}

#[test]
fn retryable_errors_are_retried_with_backoff() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join("flaky.yaml");
    std::fs::write(
        &wf,
        format!(
            "name: flaky\nplugins:\n  kit:\n    source: {}\n    grants: {{ http: [\"127.0.0.1:{}\"], insecure_http: true }}\nsteps:\n  - id: flaky\n    uses: kit/flaky\n    with: {{ url: \"{}\" }}\n    retry: {{ attempts: 3, backoff: 10ms }}\n  - id: hopeless\n    uses: kit/flaky\n    with: {{ url: \"{}/never\" }}\n    retry: {{ attempts: 2, backoff: 10ms }}\n",
            testkit_wasm().display(),
            server.port,
            server.url(),
            server.url()
        ),
    )
    .unwrap();
    server.fail("/flaky", 2);
    server.fail("/never/flaky", 100);
    let out = lifeboat()
        .args(["run", "--state-dir"])
        .arg(dir.path().join("s"))
        .arg(&wf)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(server.count("/flaky"), 3);
    assert_eq!(server.count("/never/flaky"), 2);
    assert!(stdout.contains("flaky: done\n    attempt = 3"), "{stdout}");
    assert!(stdout.contains("gave up after 2 attempts"), "{stdout}");
}
