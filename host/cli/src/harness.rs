//! `lifeboat plugin test`: the local plugin harness.
//!
//! Runs a plugin's steps against case files (`tests/*.yaml`) with no cloud and
//! no vault: sites are fixture folders, every `transfer` call and HTTP request
//! goes to a recording host that answers from the case file, and every call is
//! recorded. Each case checks the contract rules — the plan is the same when
//! asked twice, applying an action twice gives the same result, an action
//! planned as `read` changes nothing, outputs are declared — and its result is
//! compared with a snapshot (`tests/snapshots/CASE.snap`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::anyhow;
use indexmap::IndexMap;
use lifeboat_caps::{Access, Capabilities, SiteSpec};
use lifeboat_contract::transfer::{
    BootReport, DiskInfo, Extent, Fut, PointInfo, PruneResult, RestoreRequest, RestoreResult,
    ShipRequest, ShipResult, Transfer,
};
use lifeboat_contract::{Action, ActionKind, CallContext, StepError};
use lifeboat_runtime::{HostPattern, HttpAnswer, HttpStub, LogSink, Plugin, Policy, Runtime};
use serde::Deserialize;

use crate::load::Failure;

/// One case file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// The step to run.
    step: String,
    /// Its inputs.
    #[serde(default)]
    with: serde_json::Map<String, serde_json::Value>,
    /// `plan` (plan only) or `apply` (plan, then apply every action; default).
    #[serde(default)]
    phase: Option<String>,
    /// Fixture folders standing in for sites (read-only), relative to the case file.
    #[serde(default)]
    sites: IndexMap<String, PathBuf>,
    /// Canned answers of the recording host, by `transfer` function.
    #[serde(default)]
    answers: Answers,
    /// Canned HTTP answers, by `METHOD URL` (one, or a list told apart by
    /// `when`); granting their hosts.
    #[serde(default)]
    http: BTreeMap<String, OneOrMany>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answers {
    /// `points(vm)`: VM name → its points.
    #[serde(default)]
    points: BTreeMap<String, Vec<PointInfo>>,
    #[serde(default)]
    ship: Option<ShipResult>,
    #[serde(default)]
    seal: Option<PointInfo>,
    #[serde(default)]
    restore: Option<RestoreResult>,
    #[serde(default)]
    prune: Option<PruneResult>,
    #[serde(default, rename = "boot-check")]
    boot_check: Option<BootReport>,
    /// `snapshot-disk`: the id it answers (without it: `unsupported`, as on a folder site).
    #[serde(default, rename = "snapshot-disk")]
    snapshot_disk: Option<String>,
    /// `changed-extents`: the extents it answers (without it: `unsupported`).
    #[serde(default, rename = "changed-extents")]
    changed_extents: Option<Vec<Extent>>,
    /// Any function → an error it answers with instead: `{code, message, retryable}`.
    #[serde(default)]
    errors: BTreeMap<String, StepError>,
}

/// The answers to one `METHOD URL`: one, or several told apart by `when`
/// (e.g. SOAP requests to one endpoint).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(CannedHttp),
    Many(Vec<CannedHttp>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CannedHttp {
    /// Only for a request whose body contains this text.
    #[serde(default)]
    when: Option<String>,
    #[serde(default = "ok_status")]
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
}

fn ok_status() -> u16 {
    200
}

/// Calls the recording host saw, in order.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl Recorder {
    fn push(&self, s: String) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(s);
        }
    }
    fn take(&self) -> Vec<String> {
        self.calls
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }
}

/// Functions of `transfer` that change the world.
const WRITING: &[&str] = &[
    "write-file",
    "ship",
    "seal",
    "prune",
    "restore",
    "boot-check",
    "snapshot-disk",
    "delete-snapshot",
];

struct RecordingHost {
    rec: Arc<Recorder>,
    sites: Option<Arc<dyn Transfer>>,
    answers: Answers,
    alias: String,
}

fn short_hash(v: &impl serde::Serialize) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    blake3::hash(&bytes).to_hex()[..12].to_string()
}

fn js(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl RecordingHost {
    fn record<T: serde::Serialize>(&self, call: String, r: &Result<T, StepError>) {
        let res = match r {
            Ok(v) => format!("-> {}", js(v)),
            Err(e) => format!("-> error {}: {}", e.code, e.message),
        };
        self.rec.push(format!("transfer.{call} {res}"));
    }
    fn canned_error(&self, f: &str) -> Option<StepError> {
        self.answers.errors.get(f).cloned()
    }
    fn sites(&self) -> Result<&Arc<dyn Transfer>, StepError> {
        self.sites.as_ref().ok_or_else(|| {
            StepError::new(
                "not-granted",
                format!(
                    "the case gives plugin `{}` no sites; add `sites: {{ NAME: fixtures/FOLDER }}` to it",
                    self.alias
                ),
            )
        })
    }
}

impl Transfer for RecordingHost {
    fn read_file<'a>(&'a self, site: &'a str, path: &'a str) -> Fut<'a, String> {
        Box::pin(async move {
            let r = match self.canned_error("read-file") {
                Some(e) => Err(e),
                None => match self.sites() {
                    Ok(s) => s.read_file(site, path).await,
                    Err(e) => Err(e),
                },
            };
            let shown = r
                .as_ref()
                .map(|t| format!("{} bytes", t.len()))
                .map_err(Clone::clone);
            self.record(format!("read-file({site}, {path})"), &shown);
            r
        })
    }
    fn list_dir<'a>(&'a self, site: &'a str, path: &'a str) -> Fut<'a, Vec<String>> {
        Box::pin(async move {
            let r = match self.canned_error("list-dir") {
                Some(e) => Err(e),
                None => match self.sites() {
                    Ok(s) => s.list_dir(site, path).await,
                    Err(e) => Err(e),
                },
            };
            self.record(format!("list-dir({site}, {path})"), &r);
            r
        })
    }
    fn write_file<'a>(&'a self, site: &'a str, path: &'a str, contents: String) -> Fut<'a, ()> {
        Box::pin(async move {
            let r = match self.canned_error("write-file") {
                Some(e) => Err(e),
                None => Ok(()),
            };
            self.record(
                format!(
                    "write-file({site}, {path}, {} bytes {})",
                    contents.len(),
                    js(&contents)
                ),
                &r,
            );
            r
        })
    }
    fn inspect_disk<'a>(&'a self, site: &'a str, path: &'a str) -> Fut<'a, DiskInfo> {
        Box::pin(async move {
            let r = match self.canned_error("inspect-disk") {
                Some(e) => Err(e),
                None => match self.sites() {
                    Ok(s) => s.inspect_disk(site, path).await,
                    Err(e) => Err(e),
                },
            };
            self.record(format!("inspect-disk({site}, {path})"), &r);
            r
        })
    }
    fn allocated_extents<'a>(&'a self, site: &'a str, path: &'a str) -> Fut<'a, Vec<Extent>> {
        Box::pin(async move {
            let r = match self.canned_error("allocated-extents") {
                Some(e) => Err(e),
                None => match self.sites() {
                    Ok(s) => s.allocated_extents(site, path).await,
                    Err(e) => Err(e),
                },
            };
            self.record(format!("allocated-extents({site}, {path})"), &r);
            r
        })
    }
    fn points<'a>(&'a self, vm: &'a str) -> Fut<'a, Vec<PointInfo>> {
        Box::pin(async move {
            let r = match self.canned_error("points") {
                Some(e) => Err(e),
                None => Ok(self.answers.points.get(vm).cloned().unwrap_or_default()),
            };
            let shown = r
                .as_ref()
                .map(|v| v.iter().map(|p| p.id.clone()).collect::<Vec<_>>())
                .map_err(Clone::clone);
            self.record(format!("points({vm})"), &shown);
            r
        })
    }
    fn ship(&self, request: ShipRequest) -> Fut<'_, ShipResult> {
        Box::pin(async move {
            let r = match self.canned_error("ship") {
                Some(e) => Err(e),
                None => Ok(self.answers.ship.clone().unwrap_or(ShipResult {
                    // the same request gets the same staged id
                    staged: format!("staged-{}", short_hash(&request)),
                    virtual_size: 0,
                    bytes_read: 0,
                    bytes_new: 0,
                    bytes_stored: 0,
                    extents: 0,
                })),
            };
            self.record(format!("ship({})", js(&request)), &r);
            r
        })
    }
    fn seal<'a>(
        &'a self,
        vm: &'a str,
        staged: Vec<String>,
        consistency: &'a str,
        meta: serde_json::Value,
    ) -> Fut<'a, PointInfo> {
        Box::pin(async move {
            let mut sorted = staged.clone();
            sorted.sort();
            let r = match self.canned_error("seal") {
                Some(e) => Err(e),
                None => Ok(self.answers.seal.clone().unwrap_or(PointInfo {
                    id: format!("point-{}", short_hash(&sorted)),
                    vm: vm.to_string(),
                    created: "1970-01-01T00:00:00Z".into(),
                    consistency: if consistency.is_empty() {
                        "crash"
                    } else {
                        consistency
                    }
                    .to_string(),
                    parent: None,
                    disks: vec![],
                    meta: meta.clone(),
                })),
            };
            self.record(
                format!("seal({vm}, {}, {consistency}, {})", js(&staged), js(&meta)),
                &r.as_ref().map(|p| p.id.clone()).map_err(Clone::clone),
            );
            r
        })
    }
    fn restore(&self, request: RestoreRequest) -> Fut<'_, RestoreResult> {
        Box::pin(async move {
            let r = match self.canned_error("restore") {
                Some(e) => Err(e),
                None => Ok(self.answers.restore.clone().unwrap_or(RestoreResult {
                    point: request.point.clone(),
                    virtual_size: 0,
                    file_size: 0,
                    bytes_written: 0,
                })),
            };
            self.record(format!("restore({})", js(&request)), &r);
            r
        })
    }
    fn prune<'a>(&'a self, vm: &'a str, keep_last: u32) -> Fut<'a, PruneResult> {
        Box::pin(async move {
            let r = match self.canned_error("prune") {
                Some(e) => Err(e),
                None => Ok(self.answers.prune.clone().unwrap_or(PruneResult {
                    removed: vec![],
                    kept: keep_last,
                    bytes_before: 0,
                    bytes_after: 0,
                })),
            };
            self.record(format!("prune({vm}, {keep_last})"), &r);
            r
        })
    }
    fn snapshot_disk<'a>(&'a self, site: &'a str, path: &'a str) -> Fut<'a, String> {
        Box::pin(async move {
            let r = match (
                self.canned_error("snapshot-disk"),
                &self.answers.snapshot_disk,
            ) {
                (Some(e), _) => Err(e),
                (None, Some(id)) => Ok(id.clone()),
                (None, None) => Err(StepError::new(
                    "unsupported",
                    format!(
                        "site `{site}` is a folder: it has no snapshots (give the case `answers: {{ snapshot-disk: ID }}`)"
                    ),
                )),
            };
            self.record(format!("snapshot-disk({site}, {path})"), &r);
            r
        })
    }
    fn changed_extents<'a>(
        &'a self,
        site: &'a str,
        path: &'a str,
        since: &'a str,
    ) -> Fut<'a, Vec<Extent>> {
        Box::pin(async move {
            let r = match (
                self.canned_error("changed-extents"),
                &self.answers.changed_extents,
            ) {
                (Some(e), _) => Err(e),
                (None, Some(l)) => Ok(l.clone()),
                (None, None) => Err(StepError::new(
                    "unsupported",
                    format!(
                        "site `{site}` is a folder: it has no snapshots to compare (give the case `answers: {{ changed-extents: [...] }}`)"
                    ),
                )),
            };
            self.record(format!("changed-extents({site}, {path}, {since})"), &r);
            r
        })
    }
    fn delete_snapshot<'a>(
        &'a self,
        site: &'a str,
        path: &'a str,
        snapshot: &'a str,
    ) -> Fut<'a, ()> {
        Box::pin(async move {
            let r = match self.canned_error("delete-snapshot") {
                Some(e) => Err(e),
                None => Ok(()),
            };
            self.record(format!("delete-snapshot({site}, {path}, {snapshot})"), &r);
            r
        })
    }
    fn boot_check<'a>(
        &'a self,
        site: &'a str,
        path: &'a str,
        format: &'a str,
        marker: &'a str,
        timeout: std::time::Duration,
    ) -> Fut<'a, BootReport> {
        Box::pin(async move {
            let r = match self.canned_error("boot-check") {
                Some(e) => Err(e),
                None => Ok(self.answers.boot_check.clone().unwrap_or(BootReport {
                    line: format!(
                        "{} ok",
                        if marker.is_empty() {
                            "LIFEBOAT-HEALTH"
                        } else {
                            marker
                        }
                    ),
                    seconds: 0.0,
                })),
            };
            self.record(
                format!(
                    "boot-check({site}, {path}, {format}, {marker}, {} ms)",
                    timeout.as_millis()
                ),
                &r,
            );
            r
        })
    }
}

struct Http {
    rec: Arc<Recorder>,
    canned: BTreeMap<String, OneOrMany>,
}

impl HttpStub for Http {
    fn answer(&self, method: &str, uri: &str, _: &[(String, String)], body: &[u8]) -> HttpAnswer {
        let key = format!("{method} {uri}");
        let text = String::from_utf8_lossy(body);
        let fits = |c: &&CannedHttp| c.when.as_deref().is_none_or(|w| text.contains(w));
        let found = match self.canned.get(&key) {
            Some(OneOrMany::One(c)) => Some(c).filter(fits),
            Some(OneOrMany::Many(l)) => l.iter().find(fits),
            None => None,
        };
        let a = match found {
            Some(c) => HttpAnswer {
                status: c.status,
                headers: c
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                body: c.body.clone().into_bytes(),
            },
            None => HttpAnswer {
                status: 599,
                headers: vec![],
                body: format!(
                    "lifeboat plugin test: the case has no answer for `{key}` with this body; add it under `http:`"
                )
                .into_bytes(),
            },
        };
        let b = if body.is_empty() {
            String::new()
        } else {
            format!(" body {}", js(&String::from_utf8_lossy(body)))
        };
        self.rec.push(format!("http {key}{b} -> {}", a.status));
        a
    }
}

struct Logs(Arc<Recorder>);

impl LogSink for Logs {
    fn log(&self, level: &str, message: &str, fields: &[(String, String)]) {
        let f: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let f = if f.is_empty() {
            String::new()
        } else {
            format!(" {}", f.join(" "))
        };
        self.0.push(format!("log {level} {message}{f}"));
    }
}

/// How a case ended.
pub struct CaseResult {
    pub name: String,
    /// Contract violations found (each a clear failure).
    pub problems: Vec<String>,
    /// The snapshot text.
    pub snapshot: String,
}

fn yaml_err(path: &Path, e: impl std::fmt::Display) -> Failure {
    Failure::Invalid(format!(
        "error: {}: {e}\n  help: a case holds `step`, `with`, and optionally `phase` (plan | apply), `sites`, `answers`, `http`",
        path.display()
    ))
}

fn show_action(i: usize, a: &Action) -> String {
    let payload = if a.payload.is_null() {
        String::new()
    } else {
        format!("\n      payload: {}", js(&a.payload))
    };
    format!(
        "  {i}: {} {}  {}{payload}",
        a.kind.sigil(),
        a.resource,
        a.summary
    )
}

fn show_calls(o: &mut String, calls: &[String]) {
    if calls.is_empty() {
        let _ = writeln!(o, "  calls: none");
    } else {
        let _ = writeln!(o, "  calls:");
        for c in calls {
            let _ = writeln!(o, "    {c}");
        }
    }
}

fn show_outputs(o: &mut String, outs: &[(String, Option<serde_json::Value>)]) {
    for (name, v) in outs {
        match v {
            Some(v) => {
                let _ = writeln!(o, "  -> {name} = {}", js(v));
            }
            None => {
                let _ = writeln!(o, "  -> {name} = (known after apply)");
            }
        }
    }
}

/// Runs one case file.
pub async fn run_case(
    rt: &Runtime,
    plugin: &Plugin,
    case_path: &Path,
) -> Result<CaseResult, Failure> {
    let name = case_path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let text = std::fs::read_to_string(case_path).map_err(|e| yaml_err(case_path, e))?;
    let case: Case = serde_saphyr::from_str(&text).map_err(|e| yaml_err(case_path, e))?;
    let base = case_path.parent().unwrap_or(Path::new("."));
    let alias = plugin.info().name.clone();
    let Some(info) = plugin.info().steps.iter().find(|s| s.name == case.step) else {
        let names: Vec<&str> = plugin
            .info()
            .steps
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        return Err(Failure::Invalid(format!(
            "error: {}: plugin `{alias}` has no step `{}`\n  help: its steps: {}",
            case_path.display(),
            case.step,
            names.join(", ")
        )));
    };
    let mut problems = Vec::new();
    // inputs: the host checks these before planning; so does the harness
    for f in info.inputs.iter().filter(|f| f.required) {
        if !case.with.contains_key(&f.name) {
            problems.push(format!(
                "input `{}` is required by step `{}` but the case does not set it",
                f.name, case.step
            ));
        }
    }
    for k in case.with.keys() {
        if !info.inputs.iter().any(|f| &f.name == k) {
            problems.push(format!(
                "input `{k}` is not declared by step `{}`",
                case.step
            ));
        }
    }
    let apply_too = match case.phase.as_deref() {
        None | Some("apply") => true,
        Some("plan") => false,
        Some(other) => {
            return Err(yaml_err(
                case_path,
                format!("phase `{other}` is neither `plan` nor `apply`"),
            ));
        }
    };

    let rec = Arc::new(Recorder::default());
    let sites = if case.sites.is_empty() {
        None
    } else {
        let specs: IndexMap<String, SiteSpec> = case
            .sites
            .iter()
            .map(|(k, p)| (k.clone(), SiteSpec::Folder(base.join(p))))
            .collect();
        let grants: IndexMap<String, Access> = case
            .sites
            .keys()
            .map(|k| (k.clone(), Access::Read))
            .collect();
        Capabilities::new(specs, None).for_plugin(&alias, &grants, None)
    };
    let mut http_hosts = Vec::new();
    for key in case.http.keys() {
        let uri = key.split_once(' ').map(|(_, u)| u).unwrap_or(key);
        let host = uri
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(""))
            .filter(|h| !h.is_empty());
        match host.map(HostPattern::parse) {
            Some(Ok(p)) => http_hosts.push(p),
            _ => {
                return Err(yaml_err(
                    case_path,
                    format!(
                        "http: `{key}` is not `METHOD URL`, e.g. `GET http://app.internal/health`"
                    ),
                ));
            }
        }
    }
    let policy = Policy {
        http: http_hosts,
        transfer: Some(Arc::new(RecordingHost {
            rec: Arc::clone(&rec),
            sites,
            answers: case.answers,
            alias: alias.clone(),
        })),
        http_stub: Some(Arc::new(Http {
            rec: Arc::clone(&rec),
            canned: case.http,
        })),
        log_sink: Some(Arc::new(Logs(Arc::clone(&rec)))),
        ..Policy::default()
    };
    let inputs = serde_json::Value::Object(case.with.clone());
    let ctx = |i: usize| CallContext {
        workflow: "plugin-test".into(),
        step_id: name.clone(),
        action_index: u32::try_from(i).unwrap_or(u32::MAX),
        attempt: 1,
    };

    let mut o = String::new();
    let _ = writeln!(o, "step: {}", case.step);
    // inputs the plugin declares sensitive are not written into snapshots
    let mut shown = case.with.clone();
    for (k, v) in shown.iter_mut() {
        if info.input(k).is_some_and(|f| f.sensitive) {
            *v = serde_json::Value::String("(sensitive)".into());
        }
    }
    let _ = writeln!(o, "with: {}", js(&shown));
    // plan, twice: the same inputs must give the same plan
    let p1 = rt.plan(plugin, &policy, &ctx(0), &case.step, &inputs).await;
    let calls1 = rec.take();
    let p2 = rt.plan(plugin, &policy, &ctx(0), &case.step, &inputs).await;
    let calls2 = rec.take();
    let plan = match (p1, p2) {
        (Ok(a), Ok(b)) => {
            if a != b {
                problems.push(format!(
                    "plan is not deterministic: the same inputs gave two different plans\n      first:  {}\n      second: {}",
                    js(&a), js(&b)
                ));
            }
            if calls1 != calls2 {
                problems.push(format!(
                    "plan is not deterministic: it made different calls the second time\n      first:  {calls1:?}\n      second: {calls2:?}"
                ));
            }
            a
        }
        (Err(e1), Err(e2)) => {
            let (m1, m2) = (e1.to_string(), e2.to_string());
            if m1 != m2 {
                problems.push(format!("plan failed differently when asked twice:\n      first:  {m1}\n      second: {m2}"));
            }
            if let lifeboat_runtime::CallError::Step { .. } = e1 {
                let _ = writeln!(o, "plan: error");
                let _ = writeln!(
                    o,
                    "  {}",
                    e1.to_string().replace(&format!("plugin `{alias}` "), "")
                );
                show_calls(&mut o, &calls1);
                return Ok(CaseResult {
                    name,
                    problems,
                    snapshot: o,
                });
            }
            problems.push(format!(
                "plan crashed (a plugin bug, not a step error): {m1}"
            ));
            return Ok(CaseResult {
                name,
                problems,
                snapshot: o,
            });
        }
        (a, b) => {
            problems.push(format!(
                "plan is not deterministic: once {} and once {}",
                if a.is_ok() { "ok" } else { "failed" },
                if b.is_ok() { "ok" } else { "failed" }
            ));
            return Ok(CaseResult {
                name,
                problems,
                snapshot: o,
            });
        }
    };
    let _ = writeln!(o, "plan: {} action(s)", plan.actions.len());
    for (i, a) in plan.actions.iter().enumerate() {
        let _ = writeln!(o, "{}", show_action(i, a));
    }
    let outs: Vec<(String, Option<serde_json::Value>)> = plan
        .outputs
        .iter()
        .map(|x| (x.name.clone(), x.value.clone()))
        .collect();
    show_outputs(&mut o, &outs);
    show_calls(&mut o, &calls1);
    for (n, _) in &outs {
        if !info.outputs.iter().any(|f| &f.name == n) {
            problems.push(format!(
                "plan returns output `{n}`, which step `{}` does not declare",
                case.step
            ));
        }
    }
    if !apply_too {
        return Ok(CaseResult {
            name,
            problems,
            snapshot: o,
        });
    }

    // apply every action, each twice: apply must be idempotent
    let mut set: Vec<String> = Vec::new();
    let mut all_ok = true;
    for (i, a) in plan.actions.iter().enumerate() {
        let r1 = rt
            .apply(plugin, &policy, &ctx(i), &case.step, &inputs, a)
            .await;
        let c1 = rec.take();
        let r2 = rt
            .apply(plugin, &policy, &ctx(i), &case.step, &inputs, a)
            .await;
        let c2 = rec.take();
        let _ = writeln!(o, "apply {i}: {} {}", a.kind.sigil(), a.resource);
        match (&r1, &r2) {
            (Ok(x), Ok(y)) => {
                if x != y {
                    problems.push(format!(
                        "apply is not idempotent: action {i} ({}) returned different outputs when applied again\n      first:  {}\n      second: {}",
                        a.resource, js(x), js(y)
                    ));
                }
                for (n, v) in x {
                    let _ = writeln!(o, "  -> {n} = {}", js(v));
                    if !info.outputs.iter().any(|f| &f.name == n) {
                        problems.push(format!("apply of action {i} sets output `{n}`, which step `{}` does not declare", case.step));
                    }
                    set.push(n.clone());
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                all_ok = false;
                let _ = writeln!(
                    o,
                    "  error: {}",
                    e.to_string().replace(&format!("plugin `{alias}` "), "")
                );
                if r1.is_ok() != r2.is_ok() {
                    problems.push(format!("apply is not idempotent: action {i} ({}) succeeded once and failed once: {e}", a.resource));
                }
            }
        }
        show_calls(&mut o, &c1);
        if c1 != c2 {
            problems.push(format!(
                "apply is not idempotent: action {i} ({}) made different calls when applied again\n      first:  {c1:?}\n      second: {c2:?}",
                a.resource
            ));
        }
        if a.kind == ActionKind::Read {
            for c in &c1 {
                let changes = WRITING
                    .iter()
                    .any(|w| c.starts_with(&format!("transfer.{w}(")))
                    || (c.starts_with("http ")
                        && !c.starts_with("http GET ")
                        && !c.starts_with("http HEAD "));
                if changes {
                    problems.push(format!(
                        "action {i} ({}) was planned as `read`, but apply changed the world: {c}\n      plan it as the action it is (create, update, delete, transfer or run), so the plan shows it",
                        a.resource
                    ));
                }
            }
        }
    }
    for (n, v) in &outs {
        if all_ok && v.is_none() && !set.contains(n) {
            problems.push(format!(
                "output `{n}` was planned as known after apply, but no apply set it"
            ));
        }
    }
    Ok(CaseResult {
        name,
        problems,
        snapshot: o,
    })
}

/// What to do with snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapMode {
    /// Compare; a difference fails and leaves `CASE.snap.new`.
    Check,
    /// Write the new snapshots.
    Accept,
}

fn header(name: &str) -> String {
    format!("---\ncase: tests/{name}.yaml\n---\n")
}

/// Compares or writes a case's snapshot; `Some(diff)` when it differs.
fn snapshot(dir: &Path, r: &CaseResult, mode: SnapMode) -> Result<Option<String>, Failure> {
    let snaps = dir.join("snapshots");
    let path = snaps.join(format!("{}.snap", r.name));
    let new_path = snaps.join(format!("{}.snap.new", r.name));
    let want = format!("{}{}", header(&r.name), r.snapshot);
    let io = |p: &Path, e: std::io::Error| Failure::Failed(anyhow!("{}: {e}", p.display()));
    std::fs::create_dir_all(&snaps).map_err(|e| io(&snaps, e))?;
    if mode == SnapMode::Accept {
        std::fs::write(&path, &want).map_err(|e| io(&path, e))?;
        let _ = std::fs::remove_file(&new_path);
        return Ok(None);
    }
    let have = std::fs::read_to_string(&path).ok();
    if have.as_deref() == Some(want.as_str()) {
        let _ = std::fs::remove_file(&new_path);
        return Ok(None);
    }
    std::fs::write(&new_path, &want).map_err(|e| io(&new_path, e))?;
    let old = have.unwrap_or_default();
    Ok(Some(diff(&old, &want)))
}

fn diff(old: &str, new: &str) -> String {
    let d = similar::TextDiff::from_lines(old, new);
    let mut o = String::new();
    for op in d.ops() {
        for change in d.iter_changes(op) {
            let sign = match change.tag() {
                similar::ChangeTag::Delete => "-",
                similar::ChangeTag::Insert => "+",
                similar::ChangeTag::Equal => " ",
            };
            let _ = write!(o, "    {sign} {change}");
        }
    }
    o
}

/// The case files of a folder, sorted.
pub fn cases(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        Failure::Invalid(format!(
            "error: cannot read the test cases in {}: {e}\n  help: a plugin's cases are `tests/NAME.yaml` files (`step:` and `with:`)",
            dir.display()
        ))
    })?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    v.sort();
    if v.is_empty() {
        return Err(Failure::Invalid(format!(
            "error: no test cases in {}\n  help: add `tests/NAME.yaml` files with `step:` and `with:`",
            dir.display()
        )));
    }
    Ok(v)
}

/// `plugin test --review`: the pending `.snap.new` files, as diffs.
pub fn review(dir: &Path) -> Result<u8, Failure> {
    let snaps = dir.join("snapshots");
    let mut pending: Vec<PathBuf> = std::fs::read_dir(&snaps)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    pending.retain(|p| p.to_string_lossy().ends_with(".snap.new"));
    pending.sort();
    if pending.is_empty() {
        println!("no snapshots to review in {}", snaps.display());
        return Ok(0);
    }
    for p in &pending {
        let new = std::fs::read_to_string(p).unwrap_or_default();
        let old_path = PathBuf::from(p.to_string_lossy().trim_end_matches(".new"));
        let old = std::fs::read_to_string(&old_path).unwrap_or_default();
        println!("{}:\n{}", old_path.display(), diff(&old, &new));
    }
    println!(
        "{} snapshot(s) to review; `lifeboat plugin test --accept` takes them",
        pending.len()
    );
    Ok(1)
}

/// Runs every case of `tests` against `plugin`; prints a line per case.
pub async fn run_all(
    rt: &Runtime,
    plugin: &Plugin,
    tests: &Path,
    mode: SnapMode,
) -> Result<u8, Failure> {
    let files = cases(tests)?;
    println!(
        "plugin {} {} (contract {}@{}), {} case(s)",
        plugin.info().name,
        plugin.info().version,
        lifeboat_contract::WIT_PACKAGE,
        plugin.contract_version(),
        files.len()
    );
    let (mut passed, mut failed) = (0, 0);
    for f in &files {
        let r = run_case(rt, plugin, f).await?;
        let d = snapshot(tests, &r, mode)?;
        if r.problems.is_empty() && d.is_none() {
            passed += 1;
            println!("  {} ... ok", r.name);
            continue;
        }
        failed += 1;
        println!("  {} ... FAILED", r.name);
        for p in &r.problems {
            println!("    {p}");
        }
        if let Some(d) = d {
            println!(
                "    snapshot tests/snapshots/{}.snap differs (new result in {}.snap.new):\n{d}",
                r.name, r.name
            );
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 && mode == SnapMode::Check {
        println!("  help: review with `lifeboat plugin test --review`, accept with `--accept`");
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
