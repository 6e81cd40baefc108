//! A deliberately hostile plugin for the sandbox tests, plus a counting step
//! for the resume test. Never bundled with the host.
//!
//! Each hostile step misbehaves in `plan` when `when: plan`, else in `apply`.

use lifeboat_plugin_sdk::prelude::*;
use serde::Deserialize;
use std::hint::black_box;

#[derive(Deserialize)]
struct HostileIn {
    #[serde(default)]
    when: String,
    #[serde(default)]
    url: String,
}

fn misbehave(step: &str, i: &HostileIn) -> Result<Outputs, StepError> {
    match step {
        "spin" => {
            let mut x: u64 = black_box(1);
            loop {
                x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                if black_box(x) == 0 {
                    break;
                }
            }
            Ok(Outputs::new().set("x", x))
        }
        "balloon" => {
            let mut v: Vec<Vec<u8>> = Vec::new();
            for _ in 0..4096 {
                v.push(black_box(vec![1u8; 1 << 20]));
            }
            Ok(Outputs::new().set("mib", v.len()))
        }
        "panic" => panic!("testkit panics on purpose"),
        "read-passwd" => match std::fs::read_to_string("/etc/passwd") {
            Ok(s) => Ok(Outputs::new().set("leaked", s)),
            Err(e) => Err(StepError::new(
                "io",
                format!("cannot read /etc/passwd: {e}"),
            )),
        },
        "env" => {
            let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            if vars.is_empty() {
                Err(StepError::new("no-env", "the environment is empty"))
            } else {
                Ok(Outputs::new().set("leaked", vars))
            }
        }
        "tcp" => match std::net::TcpStream::connect(i.url.as_str()) {
            Ok(_) => Ok(Outputs::new().set("connected", true)),
            Err(e) => Err(StepError::new(
                "io",
                format!("cannot connect to {}: {e}", i.url),
            )),
        },
        "fetch" => {
            let r = lifeboat_plugin_sdk::http::get(&i.url)?;
            Ok(Outputs::new().set("status", r.status).set("body", r.text()))
        }
        "post" => {
            let r = lifeboat_plugin_sdk::http::post(&i.url, b"change")?;
            Ok(Outputs::new().set("status", r.status))
        }
        other => Err(StepError::invalid_input(format!(
            "unknown misbehaviour {other}"
        ))),
    }
}

macro_rules! hostile {
    ($ty:ident, $name:literal, $doc:literal) => {
        struct $ty;
        impl Step for $ty {
            type Input = HostileIn;
            fn info() -> StepInfo {
                StepInfo::new($name, $doc)
                    .input(field::string("when").doc("plan | apply (default apply)"))
                    .input(field::string("url").doc("target for tcp/fetch"))
                    .output(field::any("leaked"))
                    .output(field::any("status"))
                    .output(field::any("body"))
            }
            fn plan(_: &Context, i: HostileIn) -> Result<Plan, StepError> {
                if i.when == "plan" {
                    misbehave($name, &i)?;
                }
                Ok(Plan::new().action(Action::run(concat!("hostile/", $name), $doc)))
            }
            fn apply(_: &Context, i: HostileIn, _: &Action) -> Result<Outputs, StepError> {
                misbehave($name, &i)
            }
        }
    };
}

hostile!(Spin, "spin", "loop forever");
hostile!(Balloon, "balloon", "allocate 4 GiB");
hostile!(Panic, "panic", "panic");
hostile!(ReadPasswd, "read-passwd", "read /etc/passwd");
hostile!(Env, "env", "read environment variables");
hostile!(Tcp, "tcp", "open a TCP socket");
hostile!(Fetch, "fetch", "HTTP GET a URL");
hostile!(Post, "post", "HTTP POST to a URL");

#[derive(Deserialize)]
struct CountIn {
    url: String,
    items: u32,
}

/// `items` actions; applying action i POSTs to `{url}/apply/{i}` so the test
/// server counts how often each was applied.
struct Count;

impl Step for Count {
    type Input = CountIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "count",
            "Apply numbered actions, each reported to a counting server",
        )
        .input(field::string("url").required())
        .input(field::integer("items").required())
        .output(field::integer("last"))
    }
    fn plan(_: &Context, i: CountIn) -> Result<Plan, StepError> {
        let mut p = Plan::new();
        for n in 0..i.items {
            p = p.action(Action::update(format!("item/{n}"), format!("count item {n}")).payload(n));
        }
        Ok(p.output_after_apply("last"))
    }
    fn apply(_: &Context, i: CountIn, a: &Action) -> Result<Outputs, StepError> {
        let n: u32 = a.payload_as()?;
        let r = lifeboat_plugin_sdk::http::post(&format!("{}/apply/{n}", i.url), b"")?;
        if r.status != 200 {
            return Err(StepError::retryable(
                "unavailable",
                format!("counter said {}", r.status),
            ));
        }
        Ok(Outputs::new().set("last", n))
    }
}

/// Fails `fail_times` times (counted by the server) before succeeding.
struct Flaky;

#[derive(Deserialize)]
struct FlakyIn {
    url: String,
}

impl Step for Flaky {
    type Input = FlakyIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "flaky",
            "Fail with a retryable error until the server says ok",
        )
        .input(field::string("url").required())
        .output(field::integer("attempt"))
    }
    fn plan(_: &Context, _: FlakyIn) -> Result<Plan, StepError> {
        Ok(Plan::new().action(Action::run("flaky/1", "try until it works")))
    }
    fn apply(ctx: &Context, i: FlakyIn, _: &Action) -> Result<Outputs, StepError> {
        let r = lifeboat_plugin_sdk::http::post(&format!("{}/flaky", i.url), b"")?;
        if r.status != 200 {
            return Err(StepError::retryable(
                "unavailable",
                format!("flaky server said {}", r.status),
            ));
        }
        Ok(Outputs::new().set("attempt", ctx.attempt))
    }
}

#[derive(Deserialize)]
struct TransferIn {
    op: String,
    #[serde(default)]
    args: serde_json::Value,
    #[serde(default)]
    when: String,
}

fn arg<'a>(i: &'a TransferIn, k: &str) -> &'a str {
    i.args.get(k).and_then(|v| v.as_str()).unwrap_or("")
}

/// Call one `transfer` function with `args`; the result becomes output `result`.
fn transfer_op(i: &TransferIn) -> Result<serde_json::Value, StepError> {
    use lifeboat_plugin_sdk::transfer as t;
    let json = |v: Result<serde_json::Value, serde_json::Error>| {
        v.map_err(|e| StepError::new("internal", e.to_string()))
    };
    match i.op.as_str() {
        "read-file" => Ok(t::read_file(arg(i, "site"), arg(i, "path"))?.into()),
        "list-dir" => Ok(t::list_dir(arg(i, "site"), arg(i, "path"))?.into()),
        "write-file" => {
            t::write_file(arg(i, "site"), arg(i, "path"), arg(i, "contents"))?;
            Ok(serde_json::Value::Null)
        }
        "inspect-disk" => json(serde_json::to_value(t::inspect_disk(
            arg(i, "site"),
            arg(i, "path"),
        )?)),
        "allocated-extents" => json(serde_json::to_value(t::allocated_extents(
            arg(i, "site"),
            arg(i, "path"),
        )?)),
        "points" => json(serde_json::to_value(t::points(arg(i, "vm"))?)),
        "ship" => {
            let changes: t::Changes = match i.args.get("changes") {
                Some(c) => serde_json::from_value(c.clone())
                    .map_err(|e| StepError::invalid_input(e.to_string()))?,
                None => t::Changes::Full,
            };
            json(serde_json::to_value(t::ship(
                arg(i, "vm"),
                arg(i, "disk"),
                arg(i, "site"),
                arg(i, "path"),
                &changes,
            )?))
        }
        "seal" => {
            let staged: Vec<String> = i
                .args
                .get("staged")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            let meta = i.args.get("meta").cloned().unwrap_or(serde_json::json!({}));
            json(serde_json::to_value(t::seal(
                arg(i, "vm"),
                &staged,
                arg(i, "consistency"),
                &meta,
            )?))
        }
        "restore" => json(serde_json::to_value(t::restore(
            arg(i, "vm"),
            arg(i, "point"),
            arg(i, "disk"),
            arg(i, "site"),
            arg(i, "path"),
            arg(i, "format"),
        )?)),
        "prune" => json(serde_json::to_value(t::prune(
            arg(i, "vm"),
            i.args
                .get("keep_last")
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
        )?)),
        other => Err(StepError::invalid_input(format!("unknown op {other}"))),
    }
}

/// Exercises the `transfer` interface: `op` with `args`, in plan when
/// `when: plan`, else from apply.
struct Transfer;

impl Step for Transfer {
    type Input = TransferIn;
    fn info() -> StepInfo {
        StepInfo::new("transfer", "Call one transfer function (tests)")
            .input(field::string("op").required())
            .input(field::object("args"))
            .input(field::string("when"))
            .output(field::any("result"))
    }
    fn plan(_: &Context, i: TransferIn) -> Result<Plan, StepError> {
        if i.when == "plan" {
            return Ok(Plan::new().output("result", transfer_op(&i)?));
        }
        Ok(Plan::new()
            .action(Action::update(
                format!("transfer/{}", i.op),
                format!("call {}", i.op),
            ))
            .output_after_apply("result"))
    }
    fn apply(_: &Context, i: TransferIn, _: &Action) -> Result<Outputs, StepError> {
        Ok(Outputs::new().set("result", transfer_op(&i)?))
    }
}

/// A number that differs on every call (std's hasher seeds from WASI random).
fn noise() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[derive(Deserialize)]
struct BrokenIn {
    #[serde(default)]
    target: String,
}

/// Breaks a contract rule on purpose, for the plugin harness's tests:
/// `plan-drift` plans differently every time, `apply-drift` returns different
/// outputs every time, `sneaky-read` plans a `read` and writes a file in apply,
/// `undeclared` returns an output it never declared.
struct Broken;

impl Step for Broken {
    type Input = BrokenIn;
    fn info() -> StepInfo {
        StepInfo::new("broken", "Break a contract rule (harness tests)")
            .input(field::string("target").required())
            .output(field::integer("n"))
    }
    fn plan(_: &Context, i: BrokenIn) -> Result<Plan, StepError> {
        let (kind, summary) = match i.target.as_str() {
            "plan-drift" => (ActionKind::Run, format!("roll {}", noise() % 1000)),
            "sneaky-read" => (ActionKind::Read, "only look".to_string()),
            _ => (ActionKind::Run, format!("do {}", i.target)),
        };
        Ok(Plan::new()
            .action(Action::new(kind, format!("broken/{}", i.target), summary))
            .output_after_apply("n"))
    }
    fn apply(_: &Context, i: BrokenIn, _: &Action) -> Result<Outputs, StepError> {
        match i.target.as_str() {
            "apply-drift" => Ok(Outputs::new().set("n", noise() % 1000)),
            "sneaky-read" => {
                lifeboat_plugin_sdk::transfer::write_file("dst", "note.txt", "written")?;
                Ok(Outputs::new().set("n", 1))
            }
            "undeclared" => Ok(Outputs::new().set("n", 1).set("extra", 2)),
            _ => Ok(Outputs::new().set("n", 1)),
        }
    }
}

lifeboat_plugin_sdk::plugin!(
    name: "testkit",
    version: "0.1.0",
    doc: "Hostile and counting steps for lifeboat's own tests",
    steps: [Spin, Balloon, Panic, ReadPasswd, Env, Tcp, Fetch, Post, Count, Flaky, Transfer, Broken],
);
