//! Progress: a bar on a terminal, plain lines otherwise (both on stderr).

use std::fmt::Write as _;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lifeboat_engine::{Event, Reporter, RunReport, Status};
use lifeboat_plan::{Plan, is_placeholder};

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(plan: &Plan) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let total: usize = plan.steps.iter().map(|s| s.actions.len()).sum();
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} actions  {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress { bar: Some(bar) }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn line(&self, s: String) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }
}

impl Reporter for Progress {
    fn event(&self, e: &Event<'_>) {
        match e {
            Event::StepStarted { step } => {
                if let Some(b) = &self.bar {
                    b.set_message(step.to_string());
                }
            }
            Event::StepPlanned { step, actions } => {
                if let Some(b) = &self.bar {
                    b.inc_length(actions.len() as u64);
                }
                self.line(format!(
                    "  planned  {step}: {} action(s), deferred until now",
                    actions.len()
                ));
                for a in actions.iter() {
                    self.line(format!("             {a}"));
                }
            }
            Event::ActionReused { step, action, .. } => {
                if let Some(b) = &self.bar {
                    b.inc(1);
                }
                self.line(format!(
                    "  reused   {step}  {} {}  (done in an earlier attempt)",
                    action.kind.sigil(),
                    action.resource
                ));
            }
            Event::ActionStarted { step, action, .. } => {
                if let Some(b) = &self.bar {
                    b.set_message(format!("{step}: {}", action.summary));
                }
            }
            Event::ActionDone { step, action, .. } => {
                if let Some(b) = &self.bar {
                    b.inc(1);
                }
                self.line(format!(
                    "  applied  {step}  {} {}",
                    action.kind.sigil(),
                    action.resource
                ));
            }
            Event::ActionRetry {
                step, error, delay, ..
            } => {
                self.line(format!(
                    "  retry    {step}: {error} (next attempt in {} ms)",
                    delay.as_millis()
                ));
            }
            Event::StepDone { .. } => {}
            Event::StepFailed { step, error } => self.line(format!("  FAILED   {step}: {error}")),
            Event::StepSkipped { step, reason } => {
                self.line(format!("  skipped  {step}: {reason}"))
            }
        }
    }
}

/// The result for stdout.
pub fn render_report(r: &RunReport) -> String {
    let mut o = String::new();
    let applied: usize = r.steps.iter().map(|s| s.applied).sum();
    let reused: usize = r.steps.iter().map(|s| s.reused).sum();
    let failed = r
        .steps
        .iter()
        .filter(|s| s.status == Status::Failed)
        .count();
    let _ = writeln!(
        o,
        "Result: {} — {applied} action(s) applied, {reused} reused from an earlier attempt, {failed} step(s) failed",
        if r.ok { "ok" } else { "FAILED" }
    );
    for s in &r.steps {
        let status = match s.status {
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Blocked => "blocked",
        };
        let _ = writeln!(o, "  {}: {status}", s.id);
        if let Some(e) = &s.error {
            let _ = writeln!(o, "    error: {e}");
        }
        for (k, v) in &s.outputs {
            let v = if is_placeholder(v) {
                "(unknown)".to_string()
            } else {
                v.to_string()
            };
            let _ = writeln!(o, "    {k} = {v}");
        }
    }
    o
}
