//! Workflow files: YAML → spanned syntax tree → validated [`Workflow`].
//!
//! ```text
//! parse(SourceFile) ──► Document ──validate(Catalog)──► Workflow
//!        │                               │
//!        └──── Diagnostics (miette) ◄────┘
//! ```
//!
//! - [`parse`] reads the YAML (with serde-saphyr, spans on every value) and
//!   checks everything that needs no plugin: the shape of the file, names,
//!   durations, sizes, grants, expressions and their references, `needs`
//!   and dependency cycles.
//! - [`validate`] checks the steps against the plugins' contracts, asked
//!   through a [`Catalog`]: the step exists, its `with` inputs exist, have the
//!   right type and the required ones are given, and referenced outputs are
//!   declared.
//! - Each reports **all** problems it finds, sorted by position, as
//!   [`Diagnostics`], pointing at the offending value with a help line.
//!
//! Expressions (`${{ … }}`) are parsed into [`Expr`]s inside [`Template`]s and
//! evaluated against a [`Scope`]; values only known after apply are
//! [`Val::Unknown`] and make whatever uses them unknown.
//!
//! The format is documented in `docs/workflow-format.md`; [`json_schema`]
//! gives the JSON Schema for editors (checked in as
//! `docs/workflow.schema.json`).

mod diag;
mod error;
mod expr;
mod model;
mod parse;
mod schema;
mod suggest;
mod template;
mod units;
mod validate;
mod yaml;

pub use diag::{Diagnostic, Diagnostics, SourceFile};
pub use error::{EvalError, WorkflowError};
pub use expr::{Expr, ROOTS, Scope, Val};
pub use model::{
    DEFAULT_BACKOFF, Grants, InputDecl, Limits, PluginDecl, PluginSource, Retry, SecretDecl, Step,
    Workflow,
};
pub use parse::{Document, MAX_ATTEMPTS, parse};
pub use schema::json_schema;
pub use template::{Part, Template};
pub use validate::{Catalog, validate};

/// Re-exported for implementors of [`Catalog`].
pub use lifeboat_contract::{Field, FieldType, PluginInfo, StepInfo};

/// Parse and validate in one go.
pub fn load(
    source: std::sync::Arc<SourceFile>,
    catalog: &dyn Catalog,
) -> Result<Workflow, Diagnostics> {
    validate(parse(source)?, catalog)
}
