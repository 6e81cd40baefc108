//! Plain Rust mirror of the types in `wit/plugin.wit`.
//!
//! Host crates (workflow validation, planning, the engine) speak these types;
//! only `lifeboat-runtime` knows the generated bindings and converts.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use serde::{Deserialize, Serialize};

/// The WIT package this host implements.
pub const WIT_PACKAGE: &str = "lifeboat:plugin";
/// The WIT package version this host implements.
pub const WIT_VERSION: &str = "0.1.3";
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

impl StepError {
    /// A step error with `retryable: false`.
    pub fn new(code: &str, message: impl Into<String>) -> StepError {
        StepError {
            code: code.to_string(),
            message: message.into(),
            retryable: false,
        }
    }
}

/// The `transfer` interface (since 0.1.1): sites, disks and the vault. Mirrors the
/// WIT records; the runtime converts.
pub mod transfer {
    use std::future::Future;
    use std::pin::Pin;

    use serde::{Deserialize, Serialize};

    use super::StepError;

    /// Changed content to copy, or a range that now reads as zeros.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum ExtentKind {
        Data,
        Cleared,
    }

    /// A byte range of a disk.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Extent {
        pub offset: u64,
        pub length: u64,
        pub kind: ExtentKind,
    }

    /// A disk image as the host read it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DiskInfo {
        pub format: String,
        pub virtual_size: u64,
        pub allocated: u64,
    }

    /// One disk of a recovery point.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PointDisk {
        pub name: String,
        pub virtual_size: u64,
        pub data_bytes: u64,
        pub changes: String,
    }

    /// A sealed recovery point.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PointInfo {
        pub id: String,
        pub vm: String,
        pub created: String,
        pub consistency: String,
        pub parent: Option<String>,
        pub disks: Vec<PointDisk>,
        /// JSON object recorded at seal time (`{}` if none).
        pub meta: serde_json::Value,
    }

    /// Where the changes of a disk come from.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    pub enum Changes {
        Full,
        Extents(Vec<Extent>),
        HashCompare,
        Bitmap(String),
    }

    /// What to ship.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ShipRequest {
        pub vm: String,
        pub disk: String,
        pub site: String,
        pub path: String,
        pub changes: Changes,
    }

    /// What a ship did.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ShipResult {
        pub staged: String,
        pub virtual_size: u64,
        pub bytes_read: u64,
        pub bytes_new: u64,
        pub bytes_stored: u64,
        pub extents: u32,
    }

    /// What to restore.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RestoreRequest {
        pub vm: String,
        pub point: String,
        pub disk: String,
        pub site: String,
        pub path: String,
        pub format: String,
    }

    /// What a restore wrote.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RestoreResult {
        pub point: String,
        pub virtual_size: u64,
        pub file_size: u64,
        pub bytes_written: u64,
    }

    /// What a retention pass did (since 0.1.2).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PruneResult {
        /// Point ids deleted, oldest first.
        pub removed: Vec<String>,
        /// Points of the VM that remain.
        pub kept: u32,
        pub bytes_before: u64,
        pub bytes_after: u64,
    }

    /// What a boot check saw.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct BootReport {
        pub line: String,
        pub seconds: f64,
    }

    /// A boxed future, so [`Transfer`] can be used as a trait object.
    pub type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T, StepError>> + Send + 'a>>;

    /// The host side of the `transfer` interface for one plugin: the grants are
    /// already applied (a site the plugin was not granted is `not-granted`). The
    /// runtime refuses the writing calls during `plan` before they get here.
    pub trait Transfer: Send + Sync {
        fn read_file<'a>(&'a self, site: &'a str, path: &'a str) -> Fut<'a, String>;
        fn list_dir<'a>(&'a self, site: &'a str, path: &'a str) -> Fut<'a, Vec<String>>;
        fn write_file<'a>(&'a self, site: &'a str, path: &'a str, contents: String) -> Fut<'a, ()>;
        fn inspect_disk<'a>(&'a self, site: &'a str, path: &'a str) -> Fut<'a, DiskInfo>;
        fn allocated_extents<'a>(&'a self, site: &'a str, path: &'a str) -> Fut<'a, Vec<Extent>>;
        fn points<'a>(&'a self, vm: &'a str) -> Fut<'a, Vec<PointInfo>>;
        fn ship(&self, request: ShipRequest) -> Fut<'_, ShipResult>;
        fn seal<'a>(
            &'a self,
            vm: &'a str,
            staged: Vec<String>,
            consistency: &'a str,
            meta: serde_json::Value,
        ) -> Fut<'a, PointInfo>;
        fn restore(&self, request: RestoreRequest) -> Fut<'_, RestoreResult>;
        /// Retention for one VM: keep its newest `keep_last` points.
        fn prune<'a>(&'a self, vm: &'a str, keep_last: u32) -> Fut<'a, PruneResult>;
        /// Snapshot a disk of a site; returns the snapshot's id (since 0.1.3).
        fn snapshot_disk<'a>(&'a self, site: &'a str, path: &'a str) -> Fut<'a, String>;
        /// Extents changed on `path` since its snapshot `since` (since 0.1.3).
        fn changed_extents<'a>(
            &'a self,
            site: &'a str,
            path: &'a str,
            since: &'a str,
        ) -> Fut<'a, Vec<Extent>>;
        /// Delete snapshot `snapshot` of a disk; gone already is fine (since 0.1.3).
        fn delete_snapshot<'a>(
            &'a self,
            site: &'a str,
            path: &'a str,
            snapshot: &'a str,
        ) -> Fut<'a, ()>;
        fn boot_check<'a>(
            &'a self,
            site: &'a str,
            path: &'a str,
            format: &'a str,
            marker: &'a str,
            timeout: std::time::Duration,
        ) -> Fut<'a, BootReport>;
    }
}
