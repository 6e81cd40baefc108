//! Write lifeboat plugins in Rust.
//!
//! A plugin is a set of [`Step`]s. Each step is two typed functions: `plan`
//! (read-only: say what you would do, as a list of [`Action`]s) and `apply`
//! (carry out one planned action, idempotently). The [`plugin!`] macro turns
//! them into a WebAssembly component that implements `lifeboat:plugin`.
//!
//! ```ignore
//! use lifeboat_plugin_sdk::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct HelloIn { name: String }
//!
//! struct Hello;
//! impl Step for Hello {
//!     type Input = HelloIn;
//!     fn info() -> StepInfo {
//!         StepInfo::new("hello", "Say hello").input(field::string("name").required())
//!     }
//!     fn plan(_: &Context, i: HelloIn) -> Result<Plan, StepError> {
//!         Ok(Plan::new().action(Action::run(format!("greeting/{}", i.name), "say hello")))
//!     }
//!     fn apply(_: &Context, i: HelloIn, _: &Action) -> Result<Outputs, StepError> {
//!         Ok(Outputs::new().set("greeting", format!("hello {}", i.name)))
//!     }
//! }
//! lifeboat_plugin_sdk::plugin!(name: "hello", version: "0.1.0", doc: "Greets", steps: [Hello]);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "lifeboat_plugin_sdk::bindings",
    });
}

pub mod http;
pub mod log;
pub mod replication;
pub mod retention;
pub mod transfer;

use bindings::exports::lifeboat::plugin::steps as wsteps;
use bindings::lifeboat::plugin::types as wit;

#[doc(hidden)]
pub use serde_json as __json;

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{
        Action, ActionKind, Context, Field, Outputs, Plan, Step, StepError, StepInfo, field,
    };
    pub use serde_json::json;
}

/// Who is calling and why.
#[derive(Debug, Clone)]
pub struct Context {
    /// The workflow's name.
    pub workflow: String,
    /// The step instance, e.g. `create[web-01]`.
    pub step_id: String,
    /// The action's index within the step's plan (0 while planning).
    pub action_index: u32,
    /// 1 for the first try.
    pub attempt: u32,
}

/// An error returned to the host. `code` is a stable kebab-case id.
#[derive(Debug, Clone)]
pub struct StepError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl StepError {
    /// A non-retryable error.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        StepError {
            code: code.into(),
            message: message.into(),
            retryable: false,
        }
    }
    /// An error worth retrying (a timeout, a 503...).
    pub fn retryable(code: &str, message: impl Into<String>) -> Self {
        StepError {
            code: code.into(),
            message: message.into(),
            retryable: true,
        }
    }
    /// Bad input: the workflow must change.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new("invalid-input", message)
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// What an action does to the world.
pub use wit::ActionKind;

/// A field of a step's inputs or outputs.
#[derive(Debug, Clone)]
pub struct Field(wit::Field);

/// Field constructors: `field::string("site").required().doc("...")`.
pub mod field {
    use super::{Field, wit};
    fn new(name: &str, ty: wit::FieldType) -> Field {
        Field(wit::Field {
            name: name.into(),
            type_: ty,
            required: false,
            sensitive: false,
            doc: String::new(),
        })
    }
    pub fn string(name: &str) -> Field {
        new(name, wit::FieldType::String)
    }
    pub fn integer(name: &str) -> Field {
        new(name, wit::FieldType::Integer)
    }
    pub fn number(name: &str) -> Field {
        new(name, wit::FieldType::Number)
    }
    pub fn boolean(name: &str) -> Field {
        new(name, wit::FieldType::Boolean)
    }
    pub fn list(name: &str) -> Field {
        new(name, wit::FieldType::List)
    }
    pub fn object(name: &str) -> Field {
        new(name, wit::FieldType::Object)
    }
    pub fn any(name: &str) -> Field {
        new(name, wit::FieldType::Any)
    }
}

impl Field {
    /// The workflow must set this input.
    pub fn required(mut self) -> Self {
        self.0.required = true;
        self
    }
    /// A secret: the host redacts it everywhere.
    pub fn sensitive(mut self) -> Self {
        self.0.sensitive = true;
        self
    }
    /// One line of documentation.
    pub fn doc(mut self, doc: &str) -> Self {
        self.0.doc = doc.into();
        self
    }
}

/// Name, documentation, inputs and outputs of a step.
#[derive(Debug, Clone)]
pub struct StepInfo(wit::StepInfo);

impl StepInfo {
    pub fn new(name: &str, doc: &str) -> Self {
        StepInfo(wit::StepInfo {
            name: name.into(),
            doc: doc.into(),
            inputs: vec![],
            outputs: vec![],
        })
    }
    pub fn input(mut self, f: Field) -> Self {
        self.0.inputs.push(f.0);
        self
    }
    pub fn output(mut self, f: Field) -> Self {
        self.0.outputs.push(f.0);
        self
    }
}

/// One unit of work.
#[derive(Debug, Clone)]
pub struct Action {
    pub kind: ActionKind,
    pub resource: String,
    pub summary: String,
    pub payload: serde_json::Value,
}

impl Action {
    pub fn new(kind: ActionKind, resource: impl Into<String>, summary: impl Into<String>) -> Self {
        Action {
            kind,
            resource: resource.into(),
            summary: summary.into(),
            payload: serde_json::Value::Null,
        }
    }
    pub fn read(resource: impl Into<String>, summary: impl Into<String>) -> Self {
        Self::new(ActionKind::Read, resource, summary)
    }
    pub fn create(resource: impl Into<String>, summary: impl Into<String>) -> Self {
        Self::new(ActionKind::Create, resource, summary)
    }
    pub fn update(resource: impl Into<String>, summary: impl Into<String>) -> Self {
        Self::new(ActionKind::Update, resource, summary)
    }
    pub fn delete(resource: impl Into<String>, summary: impl Into<String>) -> Self {
        Self::new(ActionKind::Delete, resource, summary)
    }
    pub fn transfer(resource: impl Into<String>, summary: impl Into<String>) -> Self {
        Self::new(ActionKind::Transfer, resource, summary)
    }
    pub fn run(resource: impl Into<String>, summary: impl Into<String>) -> Self {
        Self::new(ActionKind::Run, resource, summary)
    }
    /// Attach the plugin's own data; `apply` gets it back unchanged.
    pub fn payload(mut self, payload: impl Serialize) -> Self {
        self.payload = serde_json::to_value(payload).unwrap_or(serde_json::Value::Null);
        self
    }
    /// Read the payload back as a typed value.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        serde_json::from_value(self.payload.clone())
            .map_err(|e| StepError::new("invalid-payload", format!("action payload: {e}")))
    }
}

/// What `plan` returns: actions, and outputs that are known now or later.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    actions: Vec<Action>,
    outputs: Vec<(String, Option<serde_json::Value>)>,
}

impl Plan {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn action(mut self, a: Action) -> Self {
        self.actions.push(a);
        self
    }
    /// An output known at plan time.
    pub fn output(mut self, name: &str, value: impl Serialize) -> Self {
        self.outputs
            .push((name.into(), serde_json::to_value(value).ok()));
        self
    }
    /// An output only known after apply: the plan shows a placeholder.
    pub fn output_after_apply(mut self, name: &str) -> Self {
        self.outputs.push((name.into(), None));
        self
    }
}

/// Output values returned by `apply`.
#[derive(Debug, Clone, Default)]
pub struct Outputs(Vec<(String, serde_json::Value)>);

impl Outputs {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(mut self, name: &str, value: impl Serialize) -> Self {
        self.0.push((
            name.into(),
            serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
        ));
        self
    }
}

/// One step of a plugin: typed input, plan and apply.
pub trait Step {
    /// The step's inputs, deserialized from the workflow's `with:`.
    type Input: DeserializeOwned;
    /// Name, documentation, inputs and outputs.
    fn info() -> StepInfo;
    /// Read-only: what would this step do?
    fn plan(ctx: &Context, input: Self::Input) -> Result<Plan, StepError>;
    /// Carry out one planned action. Must be idempotent.
    fn apply(ctx: &Context, input: Self::Input, action: &Action) -> Result<Outputs, StepError>;
}

#[doc(hidden)]
pub struct Entry {
    pub info: fn() -> StepInfo,
    pub plan: fn(&Context, &str) -> Result<Plan, StepError>,
    pub apply: fn(&Context, &str, &Action) -> Result<Outputs, StepError>,
}

fn parse_input<T: DeserializeOwned>(inputs: &str) -> Result<T, StepError> {
    serde_json::from_str(inputs).map_err(|e| StepError::invalid_input(format!("step inputs: {e}")))
}

#[doc(hidden)]
pub fn entry<S: Step>() -> Entry {
    Entry {
        info: S::info,
        plan: |ctx, inputs| S::plan(ctx, parse_input(inputs)?),
        apply: |ctx, inputs, action| S::apply(ctx, parse_input(inputs)?, action),
    }
}

fn to_wit_error(e: StepError) -> wit::StepError {
    wit::StepError {
        code: e.code,
        message: e.message,
        retryable: e.retryable,
    }
}

fn ctx_from(c: wit::CallContext) -> Context {
    Context {
        workflow: c.workflow,
        step_id: c.step_id,
        action_index: c.action_index,
        attempt: c.attempt,
    }
}

fn find<'a>(steps: &'a [Entry], name: &str) -> Result<&'a Entry, wit::StepError> {
    steps
        .iter()
        .find(|e| (e.info)().0.name == name)
        .ok_or_else(|| wit::StepError {
            code: "unknown-step".into(),
            message: format!("this plugin has no step `{name}`"),
            retryable: false,
        })
}

#[doc(hidden)]
pub fn __describe(name: &str, version: &str, doc: &str, steps: &[Entry]) -> wit::PluginInfo {
    wit::PluginInfo {
        name: name.into(),
        version: version.into(),
        doc: doc.into(),
        steps: steps.iter().map(|e| (e.info)().0).collect(),
    }
}

#[doc(hidden)]
pub fn __plan(
    steps: &[Entry],
    ctx: wit::CallContext,
    step: String,
    inputs: String,
) -> Result<wit::PlanResult, wit::StepError> {
    let e = find(steps, &step)?;
    let plan = (e.plan)(&ctx_from(ctx), &inputs).map_err(to_wit_error)?;
    Ok(wit::PlanResult {
        actions: plan
            .actions
            .into_iter()
            .map(|a| wit::Action {
                kind: a.kind,
                resource: a.resource,
                summary: a.summary,
                payload: a.payload.to_string(),
            })
            .collect(),
        outputs: plan
            .outputs
            .into_iter()
            .map(|(name, v)| wit::Output {
                name,
                value: v.map(|v| v.to_string()),
            })
            .collect(),
    })
}

#[doc(hidden)]
pub fn __apply(
    steps: &[Entry],
    ctx: wit::CallContext,
    step: String,
    inputs: String,
    action: wit::Action,
) -> Result<Vec<wit::Output>, wit::StepError> {
    let e = find(steps, &step)?;
    let payload = if action.payload.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&action.payload).map_err(|err| {
            to_wit_error(StepError::new(
                "invalid-payload",
                format!("action payload: {err}"),
            ))
        })?
    };
    let action = Action {
        kind: action.kind,
        resource: action.resource,
        summary: action.summary,
        payload,
    };
    let out = (e.apply)(&ctx_from(ctx), &inputs, &action).map_err(to_wit_error)?;
    Ok(out
        .0
        .into_iter()
        .map(|(name, v)| wit::Output {
            name,
            value: Some(v.to_string()),
        })
        .collect())
}

#[doc(hidden)]
pub use wit::{
    Action as __WitAction, CallContext as __WitCallContext, Output as __WitOutput,
    PlanResult as __WitPlanResult, PluginInfo as __WitPluginInfo, StepError as __WitStepError,
};
#[doc(hidden)]
pub use wsteps::Guest as __Guest;

/// Declare the plugin: its name, version, documentation and steps.
#[macro_export]
macro_rules! plugin {
    (name: $name:expr, version: $version:expr, doc: $doc:expr, steps: [$($step:ty),* $(,)?] $(,)?) => {
        struct __LifeboatPlugin;

        fn __lifeboat_steps() -> ::std::vec::Vec<$crate::Entry> {
            ::std::vec![$($crate::entry::<$step>()),*]
        }

        impl $crate::__Guest for __LifeboatPlugin {
            fn describe() -> $crate::__WitPluginInfo {
                $crate::__describe($name, $version, $doc, &__lifeboat_steps())
            }
            fn plan(
                ctx: $crate::__WitCallContext,
                step: ::std::string::String,
                inputs: ::std::string::String,
            ) -> ::std::result::Result<$crate::__WitPlanResult, $crate::__WitStepError> {
                $crate::__plan(&__lifeboat_steps(), ctx, step, inputs)
            }
            fn apply(
                ctx: $crate::__WitCallContext,
                step: ::std::string::String,
                inputs: ::std::string::String,
                action: $crate::__WitAction,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::__WitOutput>, $crate::__WitStepError> {
                $crate::__apply(&__lifeboat_steps(), ctx, step, inputs, action)
            }
        }

        $crate::bindings::__export_plugin!(__LifeboatPlugin with_types_in $crate::bindings);
    };
}
