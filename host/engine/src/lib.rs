//! Applies a [`Plan`]: steps whose needs are done run concurrently (bounded),
//! each action is journaled before and after it runs, failed calls are
//! retried with backoff when the plugin says that may help, and a resumed run
//! skips every action the journal marks done.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod journal;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use indexmap::IndexMap;
use lifeboat_contract::{Action, CallContext, StepInfo};
use lifeboat_plan::{
    Disposition, InstanceState, Plan, PlanError, PluginCalls, Redactor, StepOutputs, WorkflowScope,
    is_placeholder,
};
use lifeboat_workflow::{Step, Val, Workflow};
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

pub use journal::{Journal, Record, Replay};

/// Errors of the engine itself (not of a step: those are in the report).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal: {0}")]
    Journal(String),
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error("the plan does not match the workflow any more: {0}")]
    Mismatch(String),
}

impl EngineError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Something the engine did, for progress displays and logs.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    StepStarted {
        step: &'a str,
    },
    /// A deferred step was planned during apply: one line per action
    /// (`sigil resource  summary`, secrets redacted).
    StepPlanned {
        step: &'a str,
        actions: &'a [String],
    },
    ActionReused {
        step: &'a str,
        index: usize,
        action: &'a Action,
    },
    ActionStarted {
        step: &'a str,
        index: usize,
        action: &'a Action,
        attempt: u32,
    },
    ActionDone {
        step: &'a str,
        index: usize,
        action: &'a Action,
    },
    ActionRetry {
        step: &'a str,
        index: usize,
        error: &'a str,
        delay: Duration,
    },
    StepDone {
        step: &'a str,
    },
    StepFailed {
        step: &'a str,
        error: &'a str,
    },
    StepSkipped {
        step: &'a str,
        reason: &'a str,
    },
}

/// Receives [`Event`]s.
pub trait Reporter: Sync {
    fn event(&self, e: &Event<'_>);
}

/// A reporter that ignores everything.
#[derive(Debug, Default)]
pub struct Quiet;
impl Reporter for Quiet {
    fn event(&self, _: &Event<'_>) {}
}

/// How one step instance ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Done,
    Failed,
    Skipped,
    /// Not run because a step it needs failed.
    Blocked,
}

/// One step instance in the report.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub id: String,
    pub status: Status,
    /// Actions applied in this run.
    pub applied: usize,
    /// Actions found done in the journal and not applied again.
    pub reused: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Redacted outputs.
    pub outputs: IndexMap<String, Value>,
}

/// The result of applying a plan.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub ok: bool,
    pub steps: Vec<StepReport>,
}

/// Everything apply needs.
pub struct Apply<'a, P: PluginCalls> {
    pub workflow: &'a Workflow,
    pub plan: &'a Plan,
    /// Secret values by name.
    pub secrets: &'a IndexMap<String, String>,
    /// Step infos by `alias/step`.
    pub step_infos: &'a IndexMap<String, StepInfo>,
    pub calls: &'a P,
    /// Most step instances in flight at once.
    pub max_parallel: usize,
    pub reporter: &'a dyn Reporter,
    /// The journal file of this run (created if missing).
    pub journal: &'a Path,
}

struct Shared {
    journal: Mutex<Journal>,
    replay: Replay,
    reports: Mutex<Vec<StepReport>>,
}

impl Shared {
    fn record(&self, r: &Record) -> Result<(), EngineError> {
        match self.journal.lock() {
            Ok(mut j) => j.write(r),
            Err(_) => Err(EngineError::Journal("journal lock poisoned".into())),
        }
    }
    fn report(&self, r: StepReport) {
        if let Ok(mut v) = self.reports.lock() {
            v.push(r);
        }
    }
}

/// Apply the plan (or continue it, when the journal already has records).
pub async fn apply<P: PluginCalls>(a: Apply<'_, P>) -> Result<RunReport, EngineError> {
    let records = Journal::read(a.journal)?;
    let replay = Replay::from_records(&records);
    let digest = a.plan.digest();
    if let Some(d) = &replay.plan_digest
        && d != &digest
    {
        return Err(EngineError::Mismatch(format!(
            "journal {} belongs to another plan",
            a.journal.display()
        )));
    }
    let shared = Shared {
        journal: Mutex::new(Journal::open(a.journal)?),
        replay,
        reports: Mutex::new(Vec::new()),
    };
    if shared.replay.plan_digest.is_none() {
        shared.record(&Record::RunStarted {
            plan_digest: digest,
        })?;
    }
    let vars = lifeboat_plan::scope::eval_vars(a.workflow, &a.plan.inputs, a.secrets)?;
    let redactor = Redactor::new(a.secrets);

    let order = a.workflow.topo_order();
    let mut outputs = StepOutputs::default();
    let mut finished: HashMap<String, bool> = HashMap::new(); // step -> ok
    let mut started: HashSet<String> = HashSet::new();
    let mut running = FuturesUnordered::new();
    let max = a.max_parallel.max(1);
    loop {
        // Start every step whose needs are settled.
        for step in &order {
            if started.contains(&step.id) || running.len() >= max {
                continue;
            }
            if !step.needs.iter().all(|n| finished.contains_key(n)) {
                continue;
            }
            started.insert(step.id.clone());
            if let Some(bad) = step.needs.iter().find(|n| finished.get(*n) == Some(&false)) {
                let reason = format!("step `{bad}` did not succeed");
                a.reporter.event(&Event::StepSkipped {
                    step: &step.id,
                    reason: &reason,
                });
                shared.report(StepReport {
                    id: step.id.clone(),
                    status: Status::Blocked,
                    applied: 0,
                    reused: 0,
                    error: Some(reason),
                    outputs: IndexMap::new(),
                });
                finished.insert(step.id.clone(), false);
                outputs.set_deferred(&step.id);
                continue;
            }
            let snapshot = outputs.clone();
            let ctx = StepCtx {
                a: &a,
                shared: &shared,
                redactor: &redactor,
                vars: &vars,
            };
            let span = tracing::info_span!("step", workflow = %a.workflow.name, step = %step.id);
            running.push(async move {
                let r = run_step(ctx, step, snapshot).instrument(span).await;
                (step.id.clone(), step.for_each.is_some(), r)
            });
        }
        let Some((id, for_each, result)) = running.next().await else {
            break;
        };
        match result {
            Ok(StepOutcome { ok, instances }) => {
                outputs.set_instances(&id, for_each, instances);
                finished.insert(id, ok);
            }
            Err(e) => return Err(e),
        }
    }
    let ok = finished.values().all(|v| *v);
    shared.record(&Record::RunFinished { ok })?;
    drop(running);
    let mut steps = shared.reports.lock().map(|v| v.clone()).unwrap_or_default();
    // Report in plan order, then anything planned only during apply.
    let pos: HashMap<&str, usize> = a
        .workflow
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    steps.sort_by_key(|r| {
        let base = r.id.split('[').next().unwrap_or(&r.id);
        (
            pos.get(base).copied().unwrap_or(usize::MAX),
            instance_rank(a.plan, &r.id),
        )
    });
    Ok(RunReport { ok, steps })
}

fn instance_rank(plan: &Plan, id: &str) -> usize {
    plan.steps
        .iter()
        .position(|s| s.id == id)
        .unwrap_or(usize::MAX)
}

struct StepCtx<'r, 'a, P: PluginCalls> {
    a: &'r Apply<'a, P>,
    shared: &'r Shared,
    redactor: &'r Redactor,
    vars: &'r IndexMap<String, Val>,
}

impl<P: PluginCalls> Clone for StepCtx<'_, '_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: PluginCalls> Copy for StepCtx<'_, '_, P> {}

struct StepOutcome {
    ok: bool,
    instances: Vec<Option<IndexMap<String, Val>>>,
}

async fn run_step<P: PluginCalls>(
    cx: StepCtx<'_, '_, P>,
    step: &Step,
    outputs: StepOutputs,
) -> Result<StepOutcome, EngineError> {
    let a = cx.a;
    a.reporter.event(&Event::StepStarted { step: &step.id });
    let scope = WorkflowScope::new(&a.plan.inputs, cx.vars, a.secrets, &outputs);
    let instances = match lifeboat_plan::expand(step, &scope) {
        Ok(Some(i)) => i,
        Ok(None) => {
            return Err(EngineError::Mismatch(format!(
                "step `{}`: `for_each` is still unknown after the steps it needs finished",
                step.id
            )));
        }
        Err(e) => {
            let msg = e.to_string();
            a.reporter.event(&Event::StepFailed {
                step: &step.id,
                error: &msg,
            });
            cx.shared.report(StepReport {
                id: step.id.clone(),
                status: Status::Failed,
                applied: 0,
                reused: 0,
                error: Some(msg),
                outputs: IndexMap::new(),
            });
            return Ok(StepOutcome {
                ok: false,
                instances: vec![],
            });
        }
    };
    // Every instance the plan fixed must still be there.
    let ids: HashSet<&str> = instances.iter().map(|i| i.id.as_str()).collect();
    for planned in a.plan.steps.iter().filter(|s| s.step == step.id) {
        if planned.disposition == Disposition::Planned && !ids.contains(planned.id.as_str()) {
            return Err(EngineError::Mismatch(format!(
                "step instance `{}` was planned but the workflow no longer produces it",
                planned.id
            )));
        }
    }
    // Instances run concurrently up to the same bound, results in order.
    let results: Vec<_> = futures_util::stream::iter(
        instances
            .into_iter()
            .map(|inst| run_instance(cx, step, inst)),
    )
    .buffered(a.max_parallel.max(1))
    .collect()
    .await;
    let mut ok = true;
    let mut outs = Vec::with_capacity(results.len());
    for r in results {
        let (inst_ok, o) = r?;
        ok &= inst_ok;
        outs.push(o);
    }
    if ok {
        a.reporter.event(&Event::StepDone { step: &step.id });
    }
    Ok(StepOutcome {
        ok,
        instances: outs,
    })
}

/// Apply one instance; returns (ok, outputs; `None` when skipped).
async fn run_instance<P: PluginCalls>(
    cx: StepCtx<'_, '_, P>,
    step: &Step,
    inst: lifeboat_plan::Instance,
) -> Result<(bool, Option<IndexMap<String, Val>>), EngineError> {
    let a = cx.a;
    let fail = |error: String, applied, reused| {
        a.reporter.event(&Event::StepFailed {
            step: &inst.id,
            error: &error,
        });
        cx.shared.report(StepReport {
            id: inst.id.clone(),
            status: Status::Failed,
            applied,
            reused,
            error: Some(error),
            outputs: IndexMap::new(),
        });
    };
    let inputs = match &inst.state {
        InstanceState::Skipped(reason) => {
            a.reporter.event(&Event::StepSkipped {
                step: &inst.id,
                reason,
            });
            cx.shared.record(&Record::StepSkipped {
                step: inst.id.clone(),
                reason: reason.clone(),
            })?;
            cx.shared.report(StepReport {
                id: inst.id.clone(),
                status: Status::Skipped,
                applied: 0,
                reused: 0,
                error: None,
                outputs: IndexMap::new(),
            });
            return Ok((true, None));
        }
        InstanceState::Deferred(waiting) => {
            fail(
                format!("inputs still unknown: {}", waiting.join(", ")),
                0,
                0,
            );
            return Ok((false, None));
        }
        InstanceState::Ready(inputs) => inputs.clone(),
    };
    let uses = format!("{}/{}", step.plugin, step.step);
    let info = a.step_infos.get(&uses);
    let plugin = a.plan.plugins.get(&step.plugin);
    let timeout = Duration::from_millis(
        plugin
            .map(|p| lifeboat_plan::step_timeout_ms(step, p))
            .unwrap_or(60_000),
    );
    let input_value = Value::Object(inputs.clone().into_iter().collect());
    let planned = a.plan.steps.iter().find(|s| s.id == inst.id);

    // The actions: from the plan, from the journal, or planned now.
    let (actions, mut outs): (Vec<Action>, IndexMap<String, Value>) = match planned {
        Some(p) if p.disposition == Disposition::Planned => {
            let shown = cx.redactor.redact_inputs(&inputs, info);
            if shown != p.inputs {
                return Err(EngineError::Mismatch(format!(
                    "the inputs of `{}` differ from the plan; make the plan again",
                    inst.id
                )));
            }
            let known = p
                .outputs
                .iter()
                .filter(|(_, v)| !is_placeholder(v))
                .map(|(k, v)| (k.clone(), v.clone()));
            (p.actions.clone(), known.collect())
        }
        _ => match cx.shared.replay.planned.get(&inst.id) {
            Some((actions, outs)) => (actions.clone(), outs.clone()),
            None => {
                let ctx = CallContext {
                    workflow: a.workflow.name.clone(),
                    step_id: inst.id.clone(),
                    action_index: 0,
                    attempt: 1,
                };
                match a
                    .calls
                    .plan(&step.plugin, &ctx, &step.step, &input_value, timeout)
                    .await
                {
                    Ok(r) => {
                        let outs: IndexMap<String, Value> = r
                            .outputs
                            .iter()
                            .filter_map(|o| o.value.clone().map(|v| (o.name.clone(), v)))
                            .collect();
                        cx.shared.record(&Record::StepPlanned {
                            step: inst.id.clone(),
                            actions: r.actions.clone(),
                            outputs: outs.clone(),
                        })?;
                        let lines: Vec<String> = r
                            .actions
                            .iter()
                            .map(|x| {
                                format!(
                                    "{} {}  {}",
                                    x.kind.sigil(),
                                    x.resource,
                                    cx.redactor.redact_str(&x.summary)
                                )
                            })
                            .collect();
                        a.reporter.event(&Event::StepPlanned {
                            step: &inst.id,
                            actions: &lines,
                        });
                        (r.actions, outs)
                    }
                    Err(f) => {
                        fail(cx.redactor.redact_str(&f.message), 0, 0);
                        return Ok((false, None));
                    }
                }
            }
        },
    };

    let (mut applied, mut reused) = (0, 0);
    for (index, action) in actions.iter().enumerate() {
        if let Some(done) = cx.shared.replay.done.get(&(inst.id.clone(), index)) {
            a.reporter.event(&Event::ActionReused {
                step: &inst.id,
                index,
                action,
            });
            outs.extend(done.clone());
            reused += 1;
            continue;
        }
        let mut attempt = 1;
        loop {
            cx.shared.record(&Record::ActionStarted {
                step: inst.id.clone(),
                action: index,
                attempt,
            })?;
            a.reporter.event(&Event::ActionStarted {
                step: &inst.id,
                index,
                action,
                attempt,
            });
            let ctx = CallContext {
                workflow: a.workflow.name.clone(),
                step_id: inst.id.clone(),
                action_index: u32::try_from(index).unwrap_or(u32::MAX),
                attempt,
            };
            let span = tracing::info_span!("action", index, attempt, resource = %action.resource);
            let r = a
                .calls
                .apply(
                    &step.plugin,
                    &ctx,
                    &step.step,
                    &input_value,
                    action,
                    timeout,
                )
                .instrument(span)
                .await;
            match r {
                Ok(o) => {
                    let o: IndexMap<String, Value> = o.into_iter().collect();
                    cx.shared.record(&Record::ActionDone {
                        step: inst.id.clone(),
                        action: index,
                        outputs: o.clone(),
                    })?;
                    a.reporter.event(&Event::ActionDone {
                        step: &inst.id,
                        index,
                        action,
                    });
                    outs.extend(o);
                    applied += 1;
                    break;
                }
                Err(f) => {
                    let msg = cx.redactor.redact_str(&f.message);
                    cx.shared.record(&Record::ActionFailed {
                        step: inst.id.clone(),
                        action: index,
                        attempt,
                        error: msg.clone(),
                    })?;
                    if f.retryable && attempt < step.retry.attempts {
                        attempt += 1;
                        let delay = step.retry.delay_before(attempt);
                        a.reporter.event(&Event::ActionRetry {
                            step: &inst.id,
                            index,
                            error: &msg,
                            delay,
                        });
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    let note = if f.retryable && step.retry.attempts > 1 {
                        format!(" (gave up after {attempt} attempts)")
                    } else {
                        String::new()
                    };
                    fail(format!("{msg}{note}"), applied, reused);
                    return Ok((false, None));
                }
            }
        }
    }
    let shown: IndexMap<String, Value> = outs
        .iter()
        .map(|(k, v)| {
            let sensitive = info.and_then(|i| i.output(k)).is_some_and(|f| f.sensitive);
            (
                k.clone(),
                if sensitive {
                    Value::String("(sensitive)".into())
                } else {
                    cx.redactor.redact(v)
                },
            )
        })
        .collect();
    cx.shared.report(StepReport {
        id: inst.id.clone(),
        status: Status::Done,
        applied,
        reused,
        error: None,
        outputs: shown,
    });
    Ok((
        true,
        Some(outs.into_iter().map(|(k, v)| (k, Val::Known(v))).collect()),
    ))
}
