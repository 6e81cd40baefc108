//! Per-step overhead of the sandbox, and planning cost. Prints one table.
//!
//!   cargo bench -p lifeboat --bench overhead
//!
//! Goals (issue #3): instantiate + plan + apply round trip < 100 µs warm,
//! < 5 ms cold from the on-disk cache; planning 500 steps < 1 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use lifeboat_contract::{Action, CallContext, PlanResult, PluginInfo};
use lifeboat_plan::{CallFailure, GrantsRef, LimitsRef, PlanSetup, PluginCalls, PluginRef};
use lifeboat_runtime::{Plugin, Policy, Runtime, RuntimeConfig};
use lifeboat_workflow::SourceFile;
use serde_json::{Value, json};

struct Calls<'a> {
    rt: &'a Runtime,
    plugin: &'a Plugin,
}

impl PluginCalls for Calls<'_> {
    async fn plan(
        &self,
        _: &str,
        ctx: &CallContext,
        step: &str,
        inputs: &Value,
        _: Duration,
    ) -> Result<PlanResult, CallFailure> {
        self.rt
            .plan(self.plugin, &Policy::default(), ctx, step, inputs)
            .await
            .map_err(|e| CallFailure {
                message: e.to_string(),
                retryable: false,
            })
    }
    async fn apply(
        &self,
        _: &str,
        ctx: &CallContext,
        step: &str,
        inputs: &Value,
        a: &Action,
        _: Duration,
    ) -> Result<Vec<(String, Value)>, CallFailure> {
        self.rt
            .apply(self.plugin, &Policy::default(), ctx, step, inputs, a)
            .await
            .map_err(|e| CallFailure {
                message: e.to_string(),
                retryable: false,
            })
    }
}

/// Plan then apply one failover action; returns (time to plan, total time).
async fn plan_apply(
    rt: &Runtime,
    p: &Plugin,
    ctx: &CallContext,
    inputs: &Value,
) -> (Duration, Duration) {
    let t = Instant::now();
    let plan = rt
        .plan(p, &Policy::default(), ctx, "failover", inputs)
        .await
        .unwrap();
    let planned = t.elapsed();
    rt.apply(
        p,
        &Policy::default(),
        ctx,
        "failover",
        inputs,
        &plan.actions[0],
    )
    .await
    .unwrap();
    (planned, t.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn row(what: &str, took: Duration, goal: &str) {
    let us = took.as_secs_f64() * 1e6;
    let shown = if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    };
    println!("| {what:<52} | {shown:>10} | {goal:<10} |");
}

#[tokio::main]
async fn main() {
    let cache = tempfile::tempdir().unwrap();
    let wasm = lifeboat_bundled::get("demo").unwrap().wasm;
    let cfg = RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let ctx = CallContext {
        workflow: "bench".into(),
        step_id: "s".into(),
        action_index: 0,
        attempt: 1,
    };
    let inputs = json!({"vm": "web-01", "kind": "test"});

    println!(
        "| {:<52} | {:>10} | {:<10} |",
        "measure (median)", "time", "goal"
    );
    println!("|{}|{}|{}|", "-".repeat(54), "-".repeat(12), "-".repeat(12));

    // Compile from scratch (no cache yet).
    let rt = Runtime::new(cfg.clone()).unwrap();
    let t = Instant::now();
    rt.load("demo", wasm).await.unwrap();
    row(
        "load: compile component + describe (no cache)",
        t.elapsed(),
        "-",
    );
    drop(rt);

    // Cold from the disk cache: a new runtime (empty memory cache), then
    // load + instantiate + plan + apply once.
    let mut cold = vec![];
    let mut cold_load = vec![];
    for _ in 0..10 {
        let rt = Runtime::new(cfg.clone()).unwrap();
        let t = Instant::now();
        let p = rt.load("demo", wasm).await.unwrap();
        cold_load.push(t.elapsed());
        let (_, round_trip) = plan_apply(&rt, &p, &ctx, &inputs).await;
        cold.push(cold_load[cold_load.len() - 1] + round_trip);
    }
    row(
        "cold: load from disk cache + describe",
        median(cold_load),
        "-",
    );
    row(
        "cold: load from cache + plan + apply round trip",
        median(cold),
        "< 5 ms",
    );

    // Warm: a loaded plugin; each call instantiates a fresh sandbox.
    let rt = Runtime::new(cfg.clone()).unwrap();
    let p = rt.load("demo", wasm).await.unwrap();
    let mut warm = vec![];
    let mut warm_plan = vec![];
    for _ in 0..5000 {
        let (planned, total) = plan_apply(&rt, &p, &ctx, &inputs).await;
        warm_plan.push(planned);
        warm.push(total);
    }
    row(
        "warm: instantiate + plan (one call)",
        median(warm_plan),
        "-",
    );
    row(
        "warm: instantiate + plan + apply round trip",
        median(warm),
        "< 100 µs",
    );

    // Planning a workflow of 500 steps (independent failover steps).
    let mut yaml = String::from("name: big\nplugins:\n  demo: { source: builtin:demo }\nsteps:\n");
    for i in 0..500 {
        yaml.push_str(&format!(
            "  - id: s{i}\n    uses: demo/failover\n    with: {{ vm: vm-{i} }}\n"
        ));
    }
    let mut catalog: HashMap<String, PluginInfo> = HashMap::new();
    catalog.insert("demo".into(), p.info().clone());
    let t = Instant::now();
    let wf = lifeboat_workflow::load(SourceFile::new("big.yaml", yaml), &catalog).unwrap();
    let parsed = t.elapsed();
    let setup = PlanSetup {
        file: "big.yaml".into(),
        inputs: IndexMap::new(),
        secrets: IndexMap::new(),
        plugins: [(
            "demo".to_string(),
            PluginRef {
                source: "builtin:demo".into(),
                name: "demo".into(),
                version: p.info().version.clone(),
                digest: p.digest().into(),
                grants: GrantsRef {
                    http: vec![],
                    secrets: vec![],
                    sites: Default::default(),
                    vault: None,
                    insecure_http: false,
                },
                limits: LimitsRef {
                    memory_mib: 128,
                    timeout_ms: 60_000,
                },
            },
        )]
        .into_iter()
        .collect(),
        steps: p
            .info()
            .steps
            .iter()
            .map(|s| (format!("demo/{}", s.name), s.clone()))
            .collect(),
    };
    let plan = lifeboat_plan::make_plan(
        &wf,
        &setup,
        &Calls {
            rt: &rt,
            plugin: &p,
        },
    )
    .await
    .unwrap();
    let total = t.elapsed();
    assert_eq!(plan.steps.len(), 500);
    row("500 steps: parse + validate", parsed, "-");
    row(
        "500 steps: parse + validate + plan (500 plugin calls)",
        total,
        "< 1 s",
    );
    let t = Instant::now();
    let text = lifeboat_plan::render_text(&plan);
    let json = plan.to_json();
    row("500 steps: render text + JSON", t.elapsed(), "-");
    println!(
        "\n(pooling allocator: {}; machine: {} cores)",
        rt.pooling(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "(plan: {} bytes JSON, {} bytes text; demo component {} KiB)",
        json.len(),
        text.len(),
        wasm.len() / 1024
    );
}
