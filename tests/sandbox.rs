//! Sandbox policy: hostile plugins built in the test tree each fail only
//! their own step, within their limits, with a message naming plugin, step
//! and cause; the host and the other steps go on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, lifeboat, testkit_wasm};
use lifeboat_contract::CallContext;
use lifeboat_runtime::{CallError, HostPattern, Policy, Runtime, RuntimeConfig};
use serde_json::json;

fn ctx() -> CallContext {
    CallContext {
        workflow: "t".into(),
        step_id: "s".into(),
        action_index: 0,
        attempt: 1,
    }
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(common::root().join("target").join("test-cache")),
        ..RuntimeConfig::default()
    })
    .unwrap()
}

async fn plan_err(rt: &Runtime, step: &str, policy: &Policy, url: &str) -> CallError {
    let bytes = std::fs::read(testkit_wasm()).unwrap();
    let p = rt.load("testkit", &bytes).await.unwrap();
    rt.plan(
        &p,
        policy,
        &ctx(),
        step,
        &json!({"when": "plan", "url": url}),
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn endless_loop_is_stopped_at_its_deadline() {
    let rt = runtime();
    let policy = Policy {
        timeout: Duration::from_millis(300),
        ..Policy::default()
    };
    let t = Instant::now();
    let e = plan_err(&rt, "spin", &policy, "").await;
    let took = t.elapsed();
    assert!(matches!(e, CallError::Timeout { .. }), "{e}");
    assert!(took < Duration::from_secs(3), "stopped after {took:?}");
    assert_eq!(
        e.to_string(),
        "plugin `testkit` step `spin` was stopped after its 300ms time limit (plan)"
    );
}

#[tokio::test]
async fn memory_bomb_hits_its_cap() {
    let rt = runtime();
    let policy = Policy {
        memory: 32 << 20,
        ..Policy::default()
    };
    let e = plan_err(&rt, "balloon", &policy, "").await;
    assert!(matches!(e, CallError::Memory { limit_mib: 32, .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "plugin `testkit` step `balloon` exceeded its memory limit of 32 MiB (plan)"
    );
}

#[tokio::test]
async fn panic_is_a_trap_with_the_panic_message() {
    let rt = runtime();
    let e = plan_err(&rt, "panic", &Policy::default(), "").await;
    let msg = e.to_string();
    assert!(matches!(e, CallError::Trap { .. }), "{msg}");
    assert!(
        msg.starts_with("plugin `testkit` step `panic` crashed (plan):"),
        "{msg}"
    );
    assert!(msg.contains("testkit panics on purpose"), "{msg}");
}

#[tokio::test]
async fn files_env_and_sockets_are_not_there() {
    let rt = runtime();
    let e = plan_err(&rt, "read-passwd", &Policy::default(), "")
        .await
        .to_string();
    assert!(e.contains("cannot read /etc/passwd"), "{e}");
    assert!(!e.contains("root:"), "{e}");
    // The test process has PATH, HOME, … in its environment; the plugin must see none of it.
    let e = plan_err(&rt, "env", &Policy::default(), "")
        .await
        .to_string();
    assert!(e.contains("no-env: the environment is empty"), "{e}");
    let server = Server::start();
    let e = plan_err(
        &rt,
        "tcp",
        &Policy::default(),
        &format!("127.0.0.1:{}", server.port),
    )
    .await
    .to_string();
    assert!(e.contains("cannot connect to 127.0.0.1:"), "{e}");
    assert_eq!(server.count("/"), 0);
}

#[tokio::test]
async fn http_only_to_granted_hosts_and_only_reads_while_planning() {
    let rt = runtime();
    let server = Server::start();
    let other = Server::start();
    let bytes = std::fs::read(testkit_wasm()).unwrap();
    let p = rt.load("testkit", &bytes).await.unwrap();
    let tls_only = Policy {
        http: vec![HostPattern::parse(&format!("127.0.0.1:{}", server.port)).unwrap()],
        ..Policy::default()
    };
    // granted, but plain http:// without `insecure_http`: refused, never sent
    let e = rt
        .plan(
            &p,
            &tls_only,
            &ctx(),
            "fetch",
            &json!({"when": "plan", "url": format!("{}/plain", server.url())}),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("plain http:// is not encrypted and is refused; use https://, or for an emulator on this machine add `insecure_http: true` to the plugin's grants"),
        "{e}"
    );
    assert_eq!(server.count("/plain"), 0);
    let policy = Policy {
        insecure_http: true,
        ..tls_only
    };
    // granted: goes through
    let r = rt
        .plan(
            &p,
            &policy,
            &ctx(),
            "fetch",
            &json!({"when": "plan", "url": format!("{}/hello", server.url())}),
        )
        .await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(server.count("/hello"), 1);
    // not granted: denied, and the server never sees it
    let e = rt
        .plan(
            &p,
            &policy,
            &ctx(),
            "fetch",
            &json!({"when": "plan", "url": format!("{}/x", other.url())}),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("denied"), "{e}");
    assert!(
        e.contains(&format!(
            "host `127.0.0.1:{}` is not granted to this plugin",
            other.port
        )),
        "{e}"
    );
    assert_eq!(other.count("/x"), 0);
    // granted host, but POST while planning: denied; while applying: allowed
    let input = json!({"when": "plan", "url": format!("{}/post", server.url())});
    let e = rt
        .plan(&p, &policy, &ctx(), "post", &input)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("only GET and HEAD are allowed while planning"),
        "{e}"
    );
    assert_eq!(server.count("/post"), 0);
    let plan = rt
        .plan(
            &p,
            &policy,
            &ctx(),
            "post",
            &json!({"url": format!("{}/post", server.url())}),
        )
        .await
        .unwrap();
    let out = rt
        .apply(
            &p,
            &policy,
            &ctx(),
            "post",
            &json!({"url": format!("{}/post", server.url())}),
            &plan.actions[0],
        )
        .await
        .unwrap();
    assert_eq!(out, vec![("status".to_string(), json!(200))]);
    assert_eq!(server.count("/post"), 1);
}

#[test]
fn hostile_steps_fail_alone_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start();
    let wf = dir.path().join("hostile.yaml");
    std::fs::write(
        &wf,
        format!(
            r#"name: hostile
plugins:
  kit:
    source: {wasm}
    grants: {{ http: ["127.0.0.1:{port}"], insecure_http: true }}
    limits: {{ memory: 32MiB, timeout: 2s }}
steps:
  - {{ id: spin, uses: kit/spin, timeout: 300ms }}
  - {{ id: balloon, uses: kit/balloon }}
  - {{ id: panic, uses: kit/panic }}
  - {{ id: passwd, uses: kit/read-passwd }}
  - {{ id: env, uses: kit/env }}
  - {{ id: tcp, uses: kit/tcp, with: {{ url: "127.0.0.1:{port}" }} }}
  - {{ id: denied, uses: kit/fetch, with: {{ url: "http://127.0.0.1:1/" }} }}
  - {{ id: fine, uses: kit/fetch, with: {{ url: "{url}/fine" }} }}
  - {{ id: after, uses: kit/fetch, needs: [spin], with: {{ url: "{url}/after" }} }}
"#,
            wasm = testkit_wasm().display(),
            port = server.port,
            url = server.url()
        ),
    )
    .unwrap();
    let t = Instant::now();
    let out = lifeboat()
        .env("LIFEBOAT_SECRET_SAUCE", "x")
        .args(["run", "--state-dir"])
        .arg(dir.path().join("s"))
        .arg(&wf)
        .output()
        .unwrap();
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let expect = [
        "spin: failed\n    error: plugin `kit` step `spin` was stopped after its 300ms time limit (apply)",
        "balloon: failed\n    error: plugin `kit` step `balloon` exceeded its memory limit of 32 MiB (apply)",
        "panic: failed\n    error: plugin `kit` step `panic` crashed (apply)",
        "passwd: failed\n    error: plugin `kit` step `read-passwd` failed: io: cannot read /etc/passwd",
        "env: failed\n    error: plugin `kit` step `env` failed: no-env: the environment is empty",
        "tcp: failed\n    error: plugin `kit` step `tcp` failed: io: cannot connect to 127.0.0.1:",
        "denied: failed\n    error: plugin `kit` step `fetch` failed: denied:",
        "fine: done\n    status = 200",
        "after: blocked\n    error: step `spin` did not succeed",
    ];
    for e in expect {
        assert!(stdout.contains(e), "missing {e:?} in\n{stdout}");
    }
    assert_eq!(server.count("/fine"), 1);
    assert_eq!(server.count("/after"), 0);
    assert!(took < Duration::from_secs(60), "took {took:?}");
}
