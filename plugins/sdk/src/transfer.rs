//! Sites and the vault: the host moves the bytes, the plugin names them.
//!
//! Needs the workflow to grant the plugin sites (`grants.sites`) and the vault
//! (`grants.vault`). Reads work while planning; [`ship`], [`seal`], [`prune`],
//! [`snapshot_disk`], [`delete_snapshot`],
//! [`restore`], [`write_file`] and [`boot_check`] only from `apply` (the host
//! refuses them in `plan`).
//!
//! The types are serde-ready, so a `capture` step can hand its extents to a
//! `ship` step through outputs.

use serde::{Deserialize, Serialize};

use crate::StepError;
use crate::bindings::lifeboat::plugin::transfer as w;
use crate::bindings::lifeboat::plugin::types as wit;

fn err(e: wit::StepError) -> StepError {
    StepError {
        code: e.code,
        message: e.message,
        retryable: e.retryable,
    }
}

/// New content to copy, or a range that now reads as zeros.
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

impl Extent {
    /// A `data` extent.
    pub fn data(offset: u64, length: u64) -> Extent {
        Extent {
            offset,
            length,
            kind: ExtentKind::Data,
        }
    }
}

fn extent_in(e: w::Extent) -> Extent {
    Extent {
        offset: e.offset,
        length: e.length,
        kind: match e.kind {
            w::ExtentKind::Data => ExtentKind::Data,
            w::ExtentKind::Cleared => ExtentKind::Cleared,
        },
    }
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
    /// What was recorded at seal time (`{}` if nothing).
    pub meta: serde_json::Value,
}

fn point_in(p: w::PointInfo) -> PointInfo {
    PointInfo {
        id: p.id,
        vm: p.vm,
        created: p.created,
        consistency: p.consistency,
        parent: p.parent,
        meta: serde_json::from_str(&p.meta)
            .unwrap_or_else(|_| serde_json::Value::Object(Default::default())),
        disks: p
            .disks
            .into_iter()
            .map(|d| PointDisk {
                name: d.name,
                virtual_size: d.virtual_size,
                data_bytes: d.data_bytes,
                changes: d.changes,
            })
            .collect(),
    }
}

/// Where the changes of a disk come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "source", content = "value")]
pub enum Changes {
    /// The whole allocation map (first copy).
    Full,
    /// Changed extents the platform reported.
    Extents(Vec<Extent>),
    /// Hash comparison with the VM's latest point.
    HashCompare,
    /// A qcow2 persistent dirty bitmap.
    Bitmap(String),
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

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreResult {
    pub point: String,
    pub virtual_size: u64,
    pub file_size: u64,
    pub bytes_written: u64,
}

/// Read a small text file (≤ 1 MiB) of a site, e.g. a `.vmx`.
pub fn read_file(site: &str, path: &str) -> Result<String, StepError> {
    w::read_file(site, path).map_err(err)
}

/// Names in a folder of a site, sorted; folders end with `/`.
pub fn list_dir(site: &str, path: &str) -> Result<Vec<String>, StepError> {
    w::list_dir(site, path).map_err(err)
}

/// Write a small text file into a site granted `write` (apply only).
pub fn write_file(site: &str, path: &str, contents: &str) -> Result<(), StepError> {
    w::write_file(site, path, contents).map_err(err)
}

/// Open a disk image of a site and describe it.
pub fn inspect_disk(site: &str, path: &str) -> Result<DiskInfo, StepError> {
    w::inspect_disk(site, path)
        .map(|d| DiskInfo {
            format: d.format,
            virtual_size: d.virtual_size,
            allocated: d.allocated,
        })
        .map_err(err)
}

/// The allocated extents of a disk image.
pub fn allocated_extents(site: &str, path: &str) -> Result<Vec<Extent>, StepError> {
    w::allocated_extents(site, path)
        .map(|v| v.into_iter().map(extent_in).collect())
        .map_err(err)
}

/// Recovery points of a VM, oldest first.
pub fn points(vm: &str) -> Result<Vec<PointInfo>, StepError> {
    w::points(vm)
        .map(|v| v.into_iter().map(point_in).collect())
        .map_err(err)
}

/// Ship one disk's changes into the vault as a staged disk (apply only).
pub fn ship(
    vm: &str,
    disk: &str,
    site: &str,
    path: &str,
    changes: &Changes,
) -> Result<ShipResult, StepError> {
    let ext = |e: &Extent| w::Extent {
        offset: e.offset,
        length: e.length,
        kind: match e.kind {
            ExtentKind::Data => w::ExtentKind::Data,
            ExtentKind::Cleared => w::ExtentKind::Cleared,
        },
    };
    let req = w::ShipRequest {
        vm: vm.into(),
        disk: disk.into(),
        site: site.into(),
        path: path.into(),
        changes: match changes {
            Changes::Full => w::Changes::Full,
            Changes::Extents(l) => w::Changes::Extents(l.iter().map(ext).collect()),
            Changes::HashCompare => w::Changes::HashCompare,
            Changes::Bitmap(b) => w::Changes::Bitmap(b.clone()),
        },
    };
    w::ship(&req)
        .map(|r| ShipResult {
            staged: r.staged,
            virtual_size: r.virtual_size,
            bytes_read: r.bytes_read,
            bytes_new: r.bytes_new,
            bytes_stored: r.bytes_stored,
            extents: r.extents,
        })
        .map_err(err)
}

/// Seal staged disks into one recovery point (apply only). `consistency` is
/// `crash` or `app`; `meta` (a JSON object, e.g. the VM's configuration) is
/// stored with the point. Sealing the same staged disks again returns the same point.
pub fn seal(
    vm: &str,
    staged: &[String],
    consistency: &str,
    meta: &serde_json::Value,
) -> Result<PointInfo, StepError> {
    w::seal(vm, staged, consistency, &meta.to_string())
        .map(point_in)
        .map_err(err)
}

/// Materialise a disk of a point (`latest` or an id) as an image in a site
/// granted `write` (apply only). `format`: raw, vhd, vhdx, vmdk or qcow2.
pub fn restore(
    vm: &str,
    point: &str,
    disk: &str,
    site: &str,
    path: &str,
    format: &str,
) -> Result<RestoreResult, StepError> {
    let req = w::RestoreRequest {
        vm: vm.into(),
        point: point.into(),
        disk: disk.into(),
        site: site.into(),
        path: path.into(),
        format: format.into(),
    };
    w::restore(&req)
        .map(|r| RestoreResult {
            point: r.point,
            virtual_size: r.virtual_size,
            file_size: r.file_size,
            bytes_written: r.bytes_written,
        })
        .map_err(err)
}

/// What a retention pass did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneResult {
    /// Point ids deleted, oldest first.
    pub removed: Vec<String>,
    /// Points of the VM that remain.
    pub kept: u32,
    /// Vault storage (every VM's packs) before and after, in bytes.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Retention (apply only, vault granted `write`; contract 0.1.2): keep the newest
/// `keep_last` (≥ 1) points of `vm` and delete its older ones, with every chunk no
/// remaining point needs. Other VMs are never touched; calling it again is a no-op.
pub fn prune(vm: &str, keep_last: u32) -> Result<PruneResult, StepError> {
    w::prune(vm, keep_last)
        .map(|r| PruneResult {
            removed: r.removed,
            kept: r.kept,
            bytes_before: r.bytes_before,
            bytes_after: r.bytes_after,
        })
        .map_err(err)
}

/// Which points of `points` (oldest first, as [`points`] returns them) a retention
/// of `keep_last` deletes: the rule [`prune`] applies, for plans.
pub fn due_for_retention(points: &[PointInfo], keep_last: u32) -> Vec<String> {
    let keep = keep_last.max(1) as usize;
    let drop = points.len().saturating_sub(keep);
    points[..drop].iter().map(|p| p.id.clone()).collect()
}

/// What a boot check saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootReport {
    /// The health line the guest printed.
    pub line: String,
    /// Seconds from power-on to the health line.
    pub seconds: f64,
}

/// Boot a disk image of a site in the recovery lab (QEMU, no network, the
/// image never modified) and wait for a console line starting with `marker`
/// (apply only). `format`: raw, vhd, vhdx, vmdk or qcow2.
pub fn boot_check(
    site: &str,
    path: &str,
    format: &str,
    marker: &str,
    timeout_ms: u32,
) -> Result<BootReport, StepError> {
    w::boot_check(site, path, format, marker, timeout_ms)
        .map(|r| BootReport {
            line: r.line,
            seconds: r.seconds,
        })
        .map_err(err)
}

/// Take a point-in-time snapshot of a disk of a site (apply only; contract
/// 0.1.3) and return its id. On an Azure Blob site the snapshot reads as
/// [`snapshot_path`]`(path, id)`. Folder sites answer `unsupported`.
pub fn snapshot_disk(site: &str, path: &str) -> Result<String, StepError> {
    w::snapshot_disk(site, path).map_err(err)
}

/// The site path of snapshot `id` of the disk at `path`: `PATH?snapshot=ID`.
pub fn snapshot_path(path: &str, id: &str) -> String {
    format!("{path}?snapshot={id}")
}

/// What changed on `path` (a disk or [`snapshot_path`]) since its older
/// snapshot `since` (contract 0.1.3): written ranges as `data`, cleared ones as
/// `cleared`. `not-found` when `since` is gone; `unsupported` where no diff can
/// be trusted (folder sites, emulators): compare hashes then.
pub fn changed_extents(site: &str, path: &str, since: &str) -> Result<Vec<Extent>, StepError> {
    w::changed_extents(site, path, since)
        .map(|v| v.into_iter().map(extent_in).collect())
        .map_err(err)
}

/// Delete snapshot `snapshot` of the disk at `path` (apply only; contract
/// 0.1.3). Already gone is fine.
pub fn delete_snapshot(site: &str, path: &str, snapshot: &str) -> Result<(), StepError> {
    w::delete_snapshot(site, path, snapshot).map_err(err)
}
