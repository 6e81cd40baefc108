//! Plain Rust mirror of the types in `wit/plugin.wit`.
//!
//! Host crates (workflow validation, planning, the engine) speak these types;
//! only `lifeboat-runtime` knows the generated bindings and converts.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use serde::{Deserialize, Serialize};

/// The WIT package this host implements.
pub const WIT_PACKAGE: &str = "lifeboat:plugin";
/// The WIT package version this host implements.
pub const WIT_VERSION: &str = "0.1.0";
/// The world every plugin implements.
pub const WIT_WORLD: &str = "plugin";

/// Type of a step input or output field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Integer,
    Number,
    Boolean,
    List,
    Object,
    Any,
}

impl FieldType {
    /// The name used in docs and diagnostics.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::List => "list",
            FieldType::Object => "object",
            FieldType::Any => "any",
        }
    }

    /// Whether a JSON value has this type.
    pub fn accepts(self, v: &serde_json::Value) -> bool {
        match self {
            FieldType::String => v.is_string(),
            FieldType::Integer => v.is_i64() || v.is_u64(),
            FieldType::Number => v.is_number(),
            FieldType::Boolean => v.is_boolean(),
            FieldType::List => v.is_array(),
            FieldType::Object => v.is_object(),
            FieldType::Any => true,
        }
    }
}

/// One named input or output of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
    pub required: bool,
    pub sensitive: bool,
    pub doc: String,
}

/// A step a plugin offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepInfo {
    pub name: String,
    pub doc: String,
    pub inputs: Vec<Field>,
    pub outputs: Vec<Field>,
}

impl StepInfo {
    pub fn input(&self, name: &str) -> Option<&Field> {
        self.inputs.iter().find(|f| f.name == name)
    }
    pub fn output(&self, name: &str) -> Option<&Field> {
        self.outputs.iter().find(|f| f.name == name)
    }
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub doc: String,
    pub steps: Vec<StepInfo>,
}

impl PluginInfo {
    pub fn step(&self, name: &str) -> Option<&StepInfo> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// What an action does to the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Read,
    Create,
    Update,
    Delete,
    Transfer,
    Run,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Read => "read",
            ActionKind::Create => "create",
            ActionKind::Update => "update",
            ActionKind::Delete => "delete",
            ActionKind::Transfer => "transfer",
            ActionKind::Run => "run",
        }
    }
    /// The one-character marker used by the text plan.
    pub fn sigil(self) -> char {
        match self {
            ActionKind::Read => '=',
            ActionKind::Create => '+',
            ActionKind::Update => '~',
            ActionKind::Delete => '-',
            ActionKind::Transfer => '>',
            ActionKind::Run => '*',
        }
    }
}

/// One unit of work produced by `plan`, carried out by `apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub kind: ActionKind,
    pub resource: String,
    pub summary: String,
    /// The plugin's own JSON document, handed back unchanged to apply.
    pub payload: serde_json::Value,
}

/// An output value: `None` when only known after apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub name: String,
    pub value: Option<serde_json::Value>,
}

/// What `plan` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanResult {
    pub actions: Vec<Action>,
    pub outputs: Vec<Output>,
}

/// An error a plugin step returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if self.retryable {
            write!(f, " (retryable)")?;
        }
        Ok(())
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallContext {
    pub workflow: String,
    pub step_id: String,
    pub action_index: u32,
    pub attempt: u32,
}
