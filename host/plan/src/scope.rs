//! What expressions see: inputs, vars, secrets, step outputs, `item`/`index`.

use std::collections::HashMap;

use indexmap::IndexMap;
use lifeboat_workflow::{Scope, Val, Workflow};
use serde_json::Value;

use crate::PlanError;

/// Outputs of the steps evaluated so far.
#[derive(Debug, Clone, Default)]
pub struct StepOutputs {
    steps: HashMap<String, StepState>,
}

#[derive(Debug, Clone)]
enum StepState {
    /// Not known until apply.
    Deferred,
    /// One entry per instance; `None` for a skipped instance.
    Instances {
        for_each: bool,
        outputs: Vec<Option<IndexMap<String, Val>>>,
    },
}

impl StepOutputs {
    /// All of this step's outputs are unknown.
    pub fn set_deferred(&mut self, step: &str) {
        self.steps.insert(step.to_string(), StepState::Deferred);
    }

    /// Outputs of each instance (`None`: skipped).
    pub fn set_instances(
        &mut self,
        step: &str,
        for_each: bool,
        outputs: Vec<Option<IndexMap<String, Val>>>,
    ) {
        self.steps
            .insert(step.to_string(), StepState::Instances { for_each, outputs });
    }

    /// `steps.STEP.outputs.NAME`: for a `for_each` step a list over its
    /// instances; `null` for skipped instances.
    pub fn get(&self, step: &str, name: &str) -> Option<Val> {
        let reference = || format!("steps.{step}.outputs.{name}");
        match self.steps.get(step)? {
            StepState::Deferred => Some(Val::Unknown(reference())),
            StepState::Instances { for_each, outputs } => {
                let one = |o: &Option<IndexMap<String, Val>>| match o {
                    None => Val::Known(Value::Null),
                    Some(m) => m.get(name).cloned().unwrap_or(Val::Known(Value::Null)),
                };
                if !*for_each {
                    return Some(outputs.first().map(one).unwrap_or(Val::Known(Value::Null)));
                }
                let mut list = Vec::with_capacity(outputs.len());
                for o in outputs {
                    match one(o) {
                        Val::Known(v) => list.push(v),
                        Val::Unknown(_) => return Some(Val::Unknown(reference())),
                    }
                }
                Some(Val::Known(Value::Array(list)))
            }
        }
    }
}

/// The scope expressions are evaluated in.
#[derive(Debug, Clone)]
pub struct WorkflowScope<'a> {
    inputs: &'a IndexMap<String, Value>,
    vars: &'a IndexMap<String, Val>,
    secrets: &'a IndexMap<String, String>,
    steps: &'a StepOutputs,
    item: Option<(&'a Value, usize)>,
}

impl<'a> WorkflowScope<'a> {
    pub fn new(
        inputs: &'a IndexMap<String, Value>,
        vars: &'a IndexMap<String, Val>,
        secrets: &'a IndexMap<String, String>,
        steps: &'a StepOutputs,
    ) -> Self {
        WorkflowScope {
            inputs,
            vars,
            secrets,
            steps,
            item: None,
        }
    }

    /// The same scope with `item` and `index` bound.
    pub fn with_item(&self, item: &'a Value, index: usize) -> Self {
        WorkflowScope {
            item: Some((item, index)),
            ..self.clone()
        }
    }
}

impl Scope for WorkflowScope<'_> {
    fn lookup(&self, root: &str, path: &[String]) -> Option<Val> {
        match root {
            "inputs" => self.inputs.get(path.first()?).cloned().map(Val::Known),
            "vars" => self.vars.get(path.first()?).cloned(),
            "secrets" => self
                .secrets
                .get(path.first()?)
                .cloned()
                .map(|s| Val::Known(Value::String(s))),
            "steps" => match path {
                [step, outputs, name] if outputs == "outputs" => self.steps.get(step, name),
                _ => None,
            },
            "item" => self.item.map(|(v, _)| Val::Known(v.clone())),
            "index" => self.item.map(|(_, i)| Val::Known(Value::from(i))),
            _ => None,
        }
    }
}

/// Evaluate `vars:` in order; each may use inputs, secrets and earlier vars.
pub fn eval_vars(
    wf: &Workflow,
    inputs: &IndexMap<String, Value>,
    secrets: &IndexMap<String, String>,
) -> Result<IndexMap<String, Val>, PlanError> {
    let mut vars = IndexMap::new();
    let none = StepOutputs::default();
    for (name, t) in &wf.vars {
        let v = {
            let scope = WorkflowScope::new(inputs, &vars, secrets, &none);
            t.eval(&scope).map_err(|source| PlanError::Eval {
                step: format!("vars.{name}"),
                source,
            })?
        };
        vars.insert(name.clone(), v);
    }
    Ok(vars)
}
