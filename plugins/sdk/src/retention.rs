//! A ready-made `retention` step: keep the newest N recovery points of a VM.
//!
//! Any plugin that seals points can offer it by listing [`Retention`] in its
//! `plugin!` steps. Give it `after: ${{ steps.snapshot.outputs.point }}` so it
//! runs once this run's point is sealed; it is then planned during apply, when
//! the vault holds that point, and its plan names exactly the points it deletes.
//! Apply refuses to delete a point the plan did not name (the vault changed
//! in between), and running it again deletes nothing.

use serde::Deserialize;
use serde_json::json;

use crate::transfer;
use crate::{Action, Context, Outputs, Plan, Step, StepError, StepInfo, field};

/// Inputs of the `retention` step.
#[derive(Debug, Deserialize)]
pub struct RetentionIn {
    /// The VM: its name, or an object with a `name` (what `discover` returns).
    pub vm: serde_json::Value,
    /// Points to keep (at least 1).
    pub keep_last: i64,
    /// The point this run sealed; it must be in the vault.
    #[serde(default)]
    pub after: Option<String>,
}

impl RetentionIn {
    fn vm_name(&self) -> Result<String, StepError> {
        crate::replication::vm_name(&self.vm)
    }

    fn keep(&self) -> Result<u32, StepError> {
        match u32::try_from(self.keep_last) {
            Ok(k) if k >= 1 => Ok(k),
            _ => Err(StepError::invalid_input(format!(
                "`keep_last` is {}; it must be at least 1 (the newest point is always kept)",
                self.keep_last
            ))),
        }
    }

    /// Point ids due for deletion now, oldest first.
    fn due(&self, vm: &str, keep: u32) -> Result<(Vec<String>, usize), StepError> {
        let points = transfer::points(vm)?;
        if let Some(after) = &self.after
            && !points.iter().any(|p| &p.id == after)
        {
            return Err(StepError::new(
                "not-found",
                format!(
                    "retention runs after point {after}, but the vault has no such point of {vm}; pass `${{{{ steps.<snapshot step>.outputs.point }}}}`"
                ),
            ));
        }
        let due = transfer::due_for_retention(&points, keep);
        Ok((due, points.len()))
    }
}

/// The `retention` step (see the module documentation).
pub struct Retention;

impl Step for Retention {
    type Input = RetentionIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "retention",
            "Keep the newest `keep_last` recovery points of the VM in the vault; delete the older ones and the data only they used",
        )
        .input(field::any("vm").required().doc("The VM: its name, or what `discover` returns"))
        .input(field::integer("keep_last").required().doc("Recovery points to keep (at least 1)"))
        .input(field::string("after").doc("The point this run sealed, e.g. ${{ steps.snapshot.outputs.point }}: retention waits for it and never deletes it"))
        .output(field::list("removed").doc("Point ids deleted, oldest first"))
        .output(field::integer("kept").doc("Points of the VM left in the vault"))
        .output(field::integer("bytes_freed").doc("Vault bytes freed"))
    }

    fn plan(_: &Context, i: RetentionIn) -> Result<Plan, StepError> {
        let vm = i.vm_name()?;
        let keep = i.keep()?;
        let (due, total) = i.due(&vm, keep)?;
        if due.is_empty() {
            return Ok(Plan::new()
                .output("removed", Vec::<String>::new())
                .output("kept", total)
                .output("bytes_freed", 0));
        }
        let summary = format!(
            "delete {} of {}'s {} recovery points, keeping the newest {keep}: {}",
            due.len(),
            vm,
            total,
            due.join(", ")
        );
        Ok(Plan::new()
            .action(
                Action::delete(format!("vault/{vm}/points"), summary)
                    .payload(json!({ "due": due })),
            )
            .output_after_apply("removed")
            .output_after_apply("kept")
            .output_after_apply("bytes_freed"))
    }

    fn apply(_: &Context, i: RetentionIn, a: &Action) -> Result<Outputs, StepError> {
        let vm = i.vm_name()?;
        let keep = i.keep()?;
        #[derive(Deserialize)]
        struct Planned {
            due: Vec<String>,
        }
        let planned: Planned = a.payload_as()?;
        let (due, _) = i.due(&vm, keep)?;
        let unplanned: Vec<&String> = due.iter().filter(|d| !planned.due.contains(d)).collect();
        if !unplanned.is_empty() {
            return Err(StepError::new(
                "conflict",
                format!(
                    "the vault changed since this step was planned: point(s) {} of {vm} would be deleted too; run the workflow again to plan retention afresh",
                    unplanned
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let r = transfer::prune(&vm, keep)?;
        crate::log::info(
            "retention",
            &[
                ("vm", &vm),
                ("removed", &r.removed.len().to_string()),
                ("kept", &r.kept.to_string()),
            ],
        );
        Ok(Outputs::new()
            .set("removed", &r.removed)
            .set("kept", r.kept)
            .set("bytes_freed", r.bytes_before.saturating_sub(r.bytes_after)))
    }
}
