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

//! ```
//! use std::collections::HashMap;
//! use indexmap::IndexMap;
//! use lifeboat_workflow::{Field, FieldType, PluginInfo, Scope, SourceFile, StepInfo, Val};
//!
//! let text = "\
//! name: hello
//! inputs:
//!   site: { required: true }
//! plugins:
//!   demo: { source: builtin:demo }
//! steps:
//!   - id: discover
//!     uses: demo/inventory
//!     with: { site: \"dc-${{ inputs.site }}\" }
//! ";
//! let doc = lifeboat_workflow::parse(SourceFile::new("hello.yaml", text)).unwrap();
//!
//! // The caller loads the plugins named by `doc.plugin_sources()`; here, a fixed contract.
//! let field = |name: &str| Field {
//!     name: name.into(), ty: FieldType::String, required: true, sensitive: false, doc: String::new(),
//! };
//! let demo = PluginInfo {
//!     name: "demo".into(), version: "0.1.0".into(), doc: String::new(),
//!     steps: vec![StepInfo {
//!         name: "inventory".into(), doc: String::new(),
//!         inputs: vec![field("site")], outputs: vec![],
//!     }],
//! };
//! let catalog = HashMap::from([("demo".to_string(), demo)]);
//! let wf = lifeboat_workflow::validate(doc, &catalog).unwrap_or_else(|d| panic!("{}", d.render()));
//!
//! let inputs = wf.bind_inputs(&IndexMap::from([("site".into(), "west".into())])).unwrap();
//! struct Inputs(IndexMap<String, serde_json::Value>);
//! impl Scope for Inputs {
//!     fn lookup(&self, root: &str, path: &[String]) -> Option<Val> {
//!         (root == "inputs").then(|| self.0.get(path.first()?).cloned().map(Val::Known))?
//!     }
//! }
//! let site = wf.steps[0].with["site"].eval(&Inputs(inputs)).unwrap();
//! assert_eq!(site, Val::Known(serde_json::json!("dc-west")));
//! ```

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
    Access, DEFAULT_BACKOFF, Grants, InputDecl, Limits, PluginDecl, PluginSource, Retry,
    SecretDecl, SiteDecl, Step, VaultDecl, Workflow,
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
