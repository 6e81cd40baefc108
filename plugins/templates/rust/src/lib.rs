//! The `{{name}}` lifeboat plugin.
//!
//! One step, `check`: `plan` says what it would do (read-only), `apply` does it
//! and returns outputs. Apply must be idempotent: the host applies an action
//! again after a crash.

use lifeboat_plugin_sdk::prelude::*;
use serde::Deserialize;

/// The inputs of `check`, as the workflow's `with:` gives them.
#[derive(Deserialize)]
struct CheckIn {
    target: String,
    #[serde(default)]
    expect: Option<String>,
}

struct Check;

impl Step for Check {
    type Input = CheckIn;

    fn info() -> StepInfo {
        StepInfo::new("check", "Check a target (the template's example step)")
            .input(field::string("target").required().doc("What to check"))
            .input(field::string("expect").doc("What the check should find (optional)"))
            .output(field::string("target").doc("The target checked"))
            .output(field::boolean("ok").doc("Whether the check passed"))
    }

    fn plan(_: &Context, i: CheckIn) -> Result<Plan, StepError> {
        if i.target.is_empty() {
            return Err(StepError::invalid_input("`target` must not be empty"));
        }
        let summary = match &i.expect {
            Some(e) => format!("check {} (expect {e})", i.target),
            None => format!("check {}", i.target),
        };
        Ok(Plan::new()
            .action(Action::run(format!("check/{}", i.target), summary))
            .output("target", &i.target)
            .output_after_apply("ok"))
    }

    fn apply(_: &Context, i: CheckIn, _: &Action) -> Result<Outputs, StepError> {
        lifeboat_plugin_sdk::log::info("checked", &[("target", &i.target)]);
        Ok(Outputs::new().set("target", &i.target).set("ok", true))
    }
}

lifeboat_plugin_sdk::plugin!(
    name: "{{name}}",
    version: "0.1.0",
    doc: "{{name}}: a lifeboat plugin",
    steps: [Check],
);
