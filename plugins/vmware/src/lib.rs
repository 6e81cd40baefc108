//! The VMware source plugin.
//!
//! A *folder site* holds a VM's own files: its `.vmx` and VMDKs. `discover`
//! reads the `.vmx`, `capture` works out what changed per disk (a changed-area
//! list in the shape vSphere's `QueryChangedDiskAreas` returns, else the
//! allocation map for the first copy, else hash comparison with the latest
//! recovery point), `ship` moves those extents into the workflow's vault, and
//! `snapshot` seals them into one recovery point holding the VM's
//! configuration; `retention` (the SDK's) keeps the newest N points. The host
//! reads the disks and moves the bytes; this plugin only names them.
//!
//! In *vCenter mode* (the `vcenter` and `password` inputs) `discover` reads
//! the VM's inventory from vCenter instead of a `.vmx`, and finds its disks in
//! a folder site that holds the datastores (`DATASTORE/folder/file.vmdk`);
//! `capture` turns changed-block tracking on, takes a replication snapshot and
//! asks vCenter what changed since the changeId recorded with the latest
//! point (hash comparison when vCenter cannot say); `snapshot` records the
//! new changeIds with the point and removes the VMware snapshot. See
//! [`vcenter`].

mod vcenter;
mod vmx;

use lifeboat_plugin_sdk::prelude::*;
use lifeboat_plugin_sdk::replication::{
    Ship, capture_action, check_mode, consistency, mib, previous_point,
};
use lifeboat_plugin_sdk::retention::Retention;
use lifeboat_plugin_sdk::transfer::{self, Changes, Extent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use vcenter::{Replication, Route, Session, SnapshotPlan, SnapshotRef, VcenterIn};
pub use vmx::{Disk, Nic, VcenterFacts, VmConfig};

/// The folder of a site path: `a/b/c.vmx` → `a/b`.
fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

fn join(dir: &str, file: &str) -> String {
    if dir.is_empty() {
        file.to_string()
    } else {
        format!("{dir}/{file}")
    }
}

// ------------------------------------------------------------------ discover

#[derive(Deserialize)]
struct DiscoverIn {
    site: String,
    /// Folder mode: the `.vmx` in the site.
    #[serde(default)]
    vmx: Option<String>,
    /// vCenter mode: where the VM lives.
    #[serde(default)]
    vcenter: Option<VcenterIn>,
    /// vCenter mode: the password (a sensitive input).
    #[serde(default)]
    password: Option<String>,
    /// NIC name (`ethernet0`) or MAC → static IP to keep at the recovery site.
    #[serde(default)]
    ips: BTreeMap<String, String>,
}

/// Which source `discover` reads.
enum Source<'a> {
    Vmx(&'a str),
    Vcenter(&'a VcenterIn, &'a str),
}

impl DiscoverIn {
    fn source(&self) -> Result<Source<'_>, StepError> {
        match (&self.vmx, &self.vcenter) {
            (Some(vmx), None) => Ok(Source::Vmx(vmx)),
            (None, Some(vc)) => {
                vc.check(self.password.as_deref(), true)?;
                Ok(Source::Vcenter(vc, self.password.as_deref().unwrap_or("")))
            }
            (Some(_), Some(_)) => Err(StepError::invalid_input(
                "give either `vmx` (a folder site holding the VM's files) or `vcenter` (read the VM from vCenter), not both",
            )),
            (None, None) => Err(StepError::invalid_input(
                "give `vmx` (the .vmx in a folder site) or `vcenter` ({url, user, vm} with the `password` input)",
            )),
        }
    }
}

/// Sets the static IPs of `ips` on the VM's NICs.
fn apply_ips(cfg: &mut VmConfig, ips: &BTreeMap<String, String>) -> Result<(), StepError> {
    for (k, ip) in ips {
        let k = k.to_ascii_lowercase();
        let Some(n) = cfg.nics.iter_mut().find(|n| n.name == k || n.mac == k) else {
            let names: Vec<&str> = cfg.nics.iter().map(|n| n.name.as_str()).collect();
            return Err(StepError::invalid_input(format!(
                "`ips` names NIC {k:?}, which the VM does not have (NICs: {})",
                names.join(", ")
            )));
        };
        n.ip = Some(ip.clone());
    }
    Ok(())
}

fn discover(i: &DiscoverIn, vmx_path: &str) -> Result<VmConfig, StepError> {
    let text = transfer::read_file(&i.site, vmx_path).map_err(|e| {
        if e.code == "not-found" {
            StepError::new(
                "not-found",
                format!(
                    "no .vmx at {:?} in site `{}`: {}; check the `vmx` input",
                    vmx_path, i.site, e.message
                ),
            )
        } else {
            e
        }
    })?;
    let bad = |e: vmx::VmxError| {
        StepError::invalid_input(if e.line > 0 {
            format!("{}:{}: {} (site `{}`)", vmx_path, e.line, e.message, i.site)
        } else {
            format!("{}: {} (site `{}`)", vmx_path, e.message, i.site)
        })
    };
    let parsed = vmx::Vmx::parse(&text).map_err(bad)?;
    let (mut cfg, disks) = vmx::read(&parsed).map_err(bad)?;
    if disks.is_empty() {
        return Err(StepError::invalid_input(format!(
            "{}: the VM has no virtual disks (no scsiX:Y/sataX:Y/ideX:Y/nvmeX:Y .fileName ending in .vmdk)",
            vmx_path
        )));
    }
    let base = dir_of(vmx_path);
    for d in disks {
        if d.file.starts_with('/') || d.file.contains("..") {
            return Err(StepError::invalid_input(format!(
                "{}:{}: disk {} is {:?}, outside the VM's folder; a folder site holds the VM's own files",
                vmx_path, d.line, d.name, d.file
            )));
        }
        let path = join(base, &d.file);
        let info = transfer::inspect_disk(&i.site, &path).map_err(|e| {
            StepError::new(
                &e.code,
                format!(
                    "{}:{}: disk {} ({}): {}",
                    vmx_path, d.line, d.name, d.file, e.message
                ),
            )
        })?;
        cfg.disks.push(Disk {
            name: d.name,
            path,
            format: info.format,
            size_bytes: info.virtual_size,
            key: None,
            datastore_path: None,
            change_id: None,
        });
    }
    apply_ips(&mut cfg, &i.ips)?;
    Ok(cfg)
}

/// vCenter mode: log in, find the VM, read its inventory, find its disks in
/// the datastore site (apply only: SOAP is POST).
fn discover_vcenter(i: &DiscoverIn, vc: &VcenterIn, password: &str) -> Result<VmConfig, StepError> {
    let mut s = Session::open(vc, password)?;
    let found = s.vc.find_vm(&vc.vm);
    let vm = found.map_err(|e| s.error("find the VM", e))?;
    let inv = s.vc.vm_inventory(&vm);
    let inv = inv.map_err(|e| s.error(&format!("read the inventory of {}", vc.vm), e))?;
    s.close();
    let mut cfg = vcenter::vm_config(&vc.url, &vm, &inv, &i.site, |path| {
        transfer::inspect_disk(&i.site, path)
    })?;
    apply_ips(&mut cfg, &i.ips)?;
    let size: u64 = cfg.disks.iter().map(|d| d.size_bytes).sum();
    lifeboat_plugin_sdk::log::info(
        "read the VM from vCenter",
        &[
            ("vm", &cfg.name),
            ("moref", &vm.value),
            ("cpus", &cfg.cpus.to_string()),
            ("memory_mib", &cfg.memory_mib.to_string()),
            ("disks", &format!("{} ({})", cfg.disks.len(), mib(size))),
            ("nics", &cfg.nics.len().to_string()),
            ("change_tracking", &inv.change_tracking.to_string()),
        ],
    );
    Ok(cfg)
}

struct Discover;

impl Step for Discover {
    type Input = DiscoverIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "discover",
            "Read a VM's configuration from its .vmx in a folder site, or from vCenter: CPUs, memory, firmware, disks, NICs",
        )
        .input(field::string("site").required().doc("The folder site holding the VM's files (vCenter mode: the datastores, as DATASTORE/folder/file.vmdk)"))
        .input(field::string("vmx").doc("Folder mode: path of the .vmx inside the site"))
        .input(field::object("vcenter").doc("vCenter mode: {url: https://HOST/sdk, user, vm: NAME}; read during apply"))
        .input(field::string("password").sensitive().doc("vCenter mode: the password, e.g. ${{ secrets.vcenter_password }}"))
        .input(field::object("ips").doc("Static IPs to keep: NIC name or MAC → address"))
        .output(field::object("vm").doc("The VM: name, cpus, memory_mib, firmware, guest_os, disks, nics (vCenter mode: also vcenter facts, disk keys and changeIds)"))
    }
    fn plan(_: &Context, i: DiscoverIn) -> Result<Plan, StepError> {
        let vmx_path = match i.source()? {
            Source::Vmx(path) => path,
            Source::Vcenter(vc, _) => {
                let ips = if i.ips.is_empty() {
                    String::new()
                } else {
                    format!("; static IPs for {}", i.ips.len())
                };
                return Ok(Plan::new()
                    .action(
                        Action::read(
                            format!("vm/{}", vc.vm),
                            format!(
                                "read the inventory of VM {} from vCenter {} as {}: CPUs, memory, firmware, disks, NICs, change tracking; its disks from site `{}` (DATASTORE/folder/file.vmdk){ips}",
                                vc.vm, vc.url, vc.user, i.site
                            ),
                        )
                        .payload(vc),
                    )
                    .output_after_apply("vm"));
            }
        };
        let vm = discover(&i, vmx_path)?;
        let size: u64 = vm.disks.iter().map(|d| d.size_bytes).sum();
        Ok(Plan::new()
            .action(
                Action::read(
                    format!("vm/{}", vm.name),
                    format!(
                        "read {}: {} vCPU, {} MiB, {}, {} disks ({}), {} NICs",
                        vmx_path,
                        vm.cpus,
                        vm.memory_mib,
                        vm.firmware,
                        vm.disks.len(),
                        mib(size),
                        vm.nics.len()
                    ),
                )
                .payload(&vm),
            )
            .output("vm", &vm))
    }
    fn apply(_: &Context, i: DiscoverIn, a: &Action) -> Result<Outputs, StepError> {
        let vm: VmConfig = match i.source()? {
            Source::Vmx(_) => a.payload_as()?,
            Source::Vcenter(vc, password) => discover_vcenter(&i, vc, password)?,
        };
        Ok(Outputs::new().set("vm", &vm))
    }
}

// ------------------------------------------------------------------ capture

/// What `capture` found for one disk: the input of `ship`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Captured {
    name: String,
    path: String,
    changes: Changes,
    /// Bytes the host will read (an upper bound for hash comparison).
    bytes: u64,
    /// One human line: where the changes come from.
    source: String,
    /// vCenter mode: the replication snapshot the changes were found
    /// against, which `snapshot` removes after sealing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snapshot: Option<SnapshotRef>,
    /// vCenter mode: the disk's changeId read just before that snapshot was
    /// taken, which `snapshot` records with the point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    change_id: Option<String>,
}

/// vSphere's `DiskChangeInfo` (the answer of `QueryChangedDiskAreas`) as JSON.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiskChangeInfo {
    #[serde(default)]
    start_offset: u64,
    length: u64,
    #[serde(default)]
    changed_area: Vec<ChangedArea>,
}

#[derive(Deserialize)]
struct ChangedArea {
    start: u64,
    length: u64,
}

#[derive(Deserialize)]
struct CaptureIn {
    site: String,
    vm: VmConfig,
    /// Disk name → path (in the site) of its `QueryChangedDiskAreas` answer as JSON.
    #[serde(default)]
    changed_areas: BTreeMap<String, String>,
    /// `auto` (default), `full` or `hash`.
    #[serde(default)]
    mode: String,
    /// vCenter mode: where the VM lives (the VM must have been discovered there).
    #[serde(default)]
    vcenter: Option<VcenterIn>,
    /// vCenter mode: the password (a sensitive input).
    #[serde(default)]
    password: Option<String>,
    /// vCenter mode: `crash` (default) or `app` (a quiesced snapshot).
    #[serde(default)]
    consistency: String,
}

/// vCenter mode of `capture`: the inputs checked, with the VM's facts.
fn vcenter_capture(i: &CaptureIn) -> Result<Option<(&VcenterIn, &str, &VcenterFacts)>, StepError> {
    let Some(vc) = &i.vcenter else {
        return Ok(None);
    };
    vc.check(i.password.as_deref(), false)?;
    let facts = i.vm.vcenter.as_ref().ok_or_else(|| {
        StepError::invalid_input(format!(
            "`vcenter` is given, but VM {} was not discovered through vCenter (it has no vCenter facts); give `discover` the `vcenter` input",
            i.vm.name
        ))
    })?;
    if facts.url != vc.url {
        return Err(StepError::invalid_input(format!(
            "VM {} was discovered at {}, but `vcenter.url` is {}",
            i.vm.name, facts.url, vc.url
        )));
    }
    if !i.changed_areas.is_empty() {
        return Err(StepError::invalid_input(
            "`changed_areas` is for folder sites; in vCenter mode capture asks vCenter (QueryChangedDiskAreas) itself",
        ));
    }
    Ok(Some((vc, i.password.as_deref().unwrap_or(""), facts)))
}

/// vCenter mode: turn on change tracking (if off) and take the replication
/// snapshot, then find each disk's changes against it.
fn vcenter_capture_plan(i: &CaptureIn, facts: &VcenterFacts) -> Result<Plan, StepError> {
    check_mode(&i.mode)?;
    let quiesce = consistency(&i.consistency)? == "app";
    let points = transfer::points(&i.vm.name)?;
    let plan = SnapshotPlan {
        op: "snapshot".into(),
        name: format!("lifeboat-{}", points.len() + 1),
        quiesce,
        routes: i
            .vm
            .disks
            .iter()
            .map(|d| (d.name.clone(), vcenter::route(&i.mode, d, &points)))
            .collect(),
    };
    let mut p = Plan::new();
    if !facts.change_tracking {
        p = p.action(
            Action::update(
                format!("vm/{}/change-tracking", i.vm.name),
                format!(
                    "enable changed-block tracking on {} ({}); it counts from the next snapshot",
                    i.vm.name, facts.moref
                ),
            )
            .payload(json!({"op": "change-tracking"})),
        );
    }
    Ok(p.action(
        Action::create(
            format!("vm/{}/snapshot/{}", i.vm.name, plan.name),
            vcenter::snapshot_summary(&i.vm, &plan),
        )
        .payload(&plan),
    )
    .output_after_apply("disks")
    .output_after_apply("bytes_to_move"))
}

fn vcenter_capture_apply(
    i: &CaptureIn,
    vc: &VcenterIn,
    password: &str,
    facts: &VcenterFacts,
    a: &Action,
) -> Result<Outputs, StepError> {
    let vm = lifeboat_vmware_api::MoRef::new("VirtualMachine", facts.moref.clone());
    if a.payload.get("op").and_then(|o| o.as_str()) == Some("change-tracking") {
        let mut s = Session::open(vc, password)?;
        let done = s.vc.enable_change_tracking(&vm);
        done.map_err(|e| {
            s.error(
                &format!("enable changed-block tracking on {}", i.vm.name),
                e,
            )
        })?;
        s.close();
        lifeboat_plugin_sdk::log::info(
            "changed-block tracking enabled",
            &[("vm", &i.vm.name), ("moref", &facts.moref)],
        );
        return Ok(Outputs::new());
    }
    let plan: SnapshotPlan = a.payload_as()?;
    let mut s = Session::open(vc, password)?;
    // The changeIds are read before the snapshot is taken: asking later for
    // the changes since them may return a little more than needed, never less.
    let inv = s.vc.vm_inventory(&vm);
    let inv = inv.map_err(|e| s.error(&format!("read the disks of {}", i.vm.name), e))?;
    if inv.name != i.vm.name {
        return Err(StepError::new(
            "conflict",
            format!(
                "{} in vCenter is now {:?}, not {}; discover the VM again",
                facts.moref, inv.name, i.vm.name
            ),
        ));
    }
    let snap = s.vc.create_snapshot(&vm, &plan.name, plan.quiesce);
    let snap = snap.map_err(|e| {
        s.error(
            &format!(
                "take the replication snapshot {} of {}",
                plan.name, i.vm.name
            ),
            e,
        )
    })?;
    let mut disks = Vec::new();
    let mut failure = None;
    for d in &i.vm.disks {
        let route = plan.routes.get(&d.name).cloned().unwrap_or(Route::Hash {
            point: "latest".into(),
            why: "no route planned".into(),
        });
        let allocated = || -> Result<u64, StepError> {
            Ok(transfer::inspect_disk(&i.site, &d.path)?.allocated)
        };
        match vcenter::capture_disk(&mut s.vc, &vm, &snap, d, &route, allocated) {
            Ok(Ok(mut c)) => {
                c.snapshot = Some(SnapshotRef {
                    name: plan.name.clone(),
                    moref: snap.value.clone(),
                    vm: facts.moref.clone(),
                });
                c.change_id = inv
                    .disks
                    .iter()
                    .find(|x| Some(x.key) == d.key)
                    .and_then(|x| x.change_id.clone());
                if matches!(route, Route::Cbt { .. }) && c.changes == Changes::HashCompare {
                    lifeboat_plugin_sdk::log::warn(
                        "no change list from vCenter: hash comparison",
                        &[("vm", &i.vm.name), ("disk", &d.name), ("why", &c.source)],
                    );
                }
                disks.push(c);
            }
            Ok(Err(e)) => {
                failure = Some(s.error(
                    &format!(
                        "ask vCenter what changed on disk {} of {}",
                        d.name, i.vm.name
                    ),
                    e,
                ));
                break;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(e) = failure {
        // do not leave the snapshot behind: it grows with every guest write
        let _ = s.vc.remove_snapshot(&snap);
        s.close();
        return Err(e);
    }
    s.close();
    let total: u64 = disks.iter().map(|d| d.bytes).sum();
    lifeboat_plugin_sdk::log::info(
        "replication snapshot taken",
        &[
            ("vm", &i.vm.name),
            ("snapshot", &plan.name),
            ("moref", &snap.value),
            ("bytes_to_move", &total.to_string()),
        ],
    );
    Ok(Outputs::new()
        .set("disks", &disks)
        .set("bytes_to_move", total))
}

fn changed_list(site: &str, path: &str, disk: &Disk) -> Result<Vec<Extent>, StepError> {
    let text = transfer::read_file(site, path)?;
    let info: DiskChangeInfo = serde_json::from_str(&text).map_err(|e| {
        StepError::invalid_input(format!(
            "{path} (site `{site}`): not a QueryChangedDiskAreas answer ({{\"startOffset\", \"length\", \"changedArea\": [{{\"start\", \"length\"}}]}}): {e}"
        ))
    })?;
    if info.start_offset != 0 || info.length < disk.size_bytes {
        return Err(StepError::invalid_input(format!(
            "{path}: the change list covers {}..{} but disk {} is {} bytes; page through the whole disk (startOffset from 0)",
            info.start_offset,
            info.start_offset + info.length,
            disk.name,
            disk.size_bytes
        )));
    }
    let mut out = Vec::new();
    for a in info.changed_area {
        if a.start
            .checked_add(a.length)
            .is_none_or(|end| end > disk.size_bytes)
        {
            return Err(StepError::invalid_input(format!(
                "{path}: changed area {}+{} lies beyond the end of disk {} ({} bytes)",
                a.start, a.length, disk.name, disk.size_bytes
            )));
        }
        if a.length > 0 {
            out.push(Extent::data(a.start, a.length));
        }
    }
    Ok(out)
}

fn capture(i: &CaptureIn) -> Result<Vec<Captured>, StepError> {
    check_mode(&i.mode)?;
    for k in i.changed_areas.keys() {
        if !i.vm.disks.iter().any(|d| &d.name == k) {
            let names: Vec<&str> = i.vm.disks.iter().map(|d| d.name.as_str()).collect();
            return Err(StepError::invalid_input(format!(
                "`changed_areas` names disk {k:?}, which VM {} does not have (disks: {})",
                i.vm.name,
                names.join(", ")
            )));
        }
    }
    let points = transfer::points(&i.vm.name)?;
    let mut out = Vec::new();
    for d in &i.vm.disks {
        let previous = previous_point(&points, &d.name, d.size_bytes);
        let allocated = || -> Result<u64, StepError> {
            Ok(transfer::inspect_disk(&i.site, &d.path)?.allocated)
        };
        let c = match (i.mode.as_str(), previous, i.changed_areas.get(&d.name)) {
            ("full", _, _) | (_, None, _) => Captured {
                name: d.name.clone(),
                path: d.path.clone(),
                changes: Changes::Full,
                bytes: allocated()?,
                source: if previous.is_none() {
                    "first copy: allocation map".into()
                } else {
                    "full copy (mode: full)".into()
                },
                snapshot: None,
                change_id: None,
            },
            ("hash", Some(p), _) | (_, Some(p), None) => Captured {
                name: d.name.clone(),
                path: d.path.clone(),
                changes: Changes::HashCompare,
                bytes: allocated()?,
                source: format!("no change list: hash comparison with point {}", p.id),
                snapshot: None,
                change_id: None,
            },
            (_, Some(p), Some(path)) => {
                let list = changed_list(&i.site, path, d)?;
                let bytes = list.iter().map(|e| e.length).sum();
                Captured {
                    name: d.name.clone(),
                    path: d.path.clone(),
                    source: format!(
                        "changed-block tracking: {} areas since point {}",
                        list.len(),
                        p.id
                    ),
                    changes: Changes::Extents(list),
                    bytes,
                    snapshot: None,
                    change_id: None,
                }
            }
        };
        out.push(c);
    }
    Ok(out)
}

struct Capture;

impl Step for Capture {
    type Input = CaptureIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "capture",
            "Work out each disk's changed extents: a QueryChangedDiskAreas list when given, the allocation map for the first copy, else hash comparison",
        )
        .input(field::string("site").required().doc("The folder site holding the VM's files"))
        .input(field::object("vm").required().doc("The VM, as `discover` returns it"))
        .input(field::object("changed_areas").doc("Disk name → path in the site of its QueryChangedDiskAreas answer (JSON)"))
        .input(field::string("mode").doc("auto (default), full or hash"))
        .input(field::object("vcenter").doc("vCenter mode: {url, user}; enables change tracking, takes the replication snapshot and asks vCenter what changed"))
        .input(field::string("password").sensitive().doc("vCenter mode: the password, e.g. ${{ secrets.vcenter_password }}"))
        .input(field::string("consistency").doc("vCenter mode: crash (default) or app (a quiesced snapshot)"))
        .output(field::list("disks").doc("Per disk: name, path, changes, bytes, source (vCenter mode: also the replication snapshot and the changeId read before it) — the input of `ship`, and of `snapshot`'s `captured`"))
        .output(field::integer("bytes_to_move").doc("Bytes the host will read (an upper bound for hash comparison)"))
    }
    fn plan(_: &Context, i: CaptureIn) -> Result<Plan, StepError> {
        if let Some((_, _, facts)) = vcenter_capture(&i)? {
            return vcenter_capture_plan(&i, facts);
        }
        let disks = capture(&i)?;
        let total: u64 = disks.iter().map(|d| d.bytes).sum();
        let mut p = Plan::new();
        for d in &disks {
            p = p.action(
                capture_action(&i.vm.name, &d.name, &d.path, &d.source, d.bytes).payload(d),
            );
        }
        Ok(p.output("disks", &disks).output("bytes_to_move", total))
    }
    fn apply(_: &Context, i: CaptureIn, a: &Action) -> Result<Outputs, StepError> {
        if let Some((vc, password, facts)) = vcenter_capture(&i)? {
            return vcenter_capture_apply(&i, vc, password, facts, a);
        }
        // read-only: the plan's answer stands; recompute so outputs match
        let disks = capture(&i)?;
        let total: u64 = disks.iter().map(|d| d.bytes).sum();
        Ok(Outputs::new()
            .set("disks", &disks)
            .set("bytes_to_move", total))
    }
}

// ------------------------------------------------------------------ snapshot

#[derive(Deserialize)]
struct SnapshotIn {
    vm: VmConfig,
    staged: Vec<String>,
    #[serde(default)]
    consistency: String,
    /// vCenter mode: what `capture` found (its `disks`): the replication
    /// snapshot to remove after sealing and the changeIds to record.
    #[serde(default)]
    captured: Vec<Captured>,
    #[serde(default)]
    vcenter: Option<VcenterIn>,
    #[serde(default)]
    password: Option<String>,
}

impl SnapshotIn {
    /// vCenter mode: the replication snapshot and changeIds of `captured`.
    fn replication(&self) -> Result<Option<Replication>, StepError> {
        let mut snapshots: Vec<&SnapshotRef> = Vec::new();
        for s in self.captured.iter().filter_map(|c| c.snapshot.as_ref()) {
            if !snapshots.contains(&s) {
                snapshots.push(s);
            }
        }
        let snapshot = match snapshots.as_slice() {
            [] => return Ok(None),
            [one] => (*one).clone(),
            many => {
                let names: Vec<&str> = many.iter().map(|s| s.name.as_str()).collect();
                return Err(StepError::invalid_input(format!(
                    "`captured` names {} replication snapshots ({}); give the `disks` of one `capture`",
                    many.len(),
                    names.join(", ")
                )));
            }
        };
        Ok(Some(Replication {
            change_ids: self
                .captured
                .iter()
                .map(|c| (c.name.clone(), c.change_id.clone()))
                .collect(),
            snapshot,
        }))
    }

    /// vCenter mode: the replication snapshot to remove, with where and how.
    fn vcenter(&self) -> Result<Option<(Replication, &VcenterIn, &str)>, StepError> {
        let Some(r) = self.replication()? else {
            return Ok(None);
        };
        let vc = self.vcenter.as_ref().ok_or_else(|| {
            StepError::invalid_input(format!(
                "`captured` comes with the replication snapshot {}, but `vcenter` and `password`, which removing it needs, are not given",
                r.snapshot.name
            ))
        })?;
        vc.check(self.password.as_deref(), false)?;
        Ok(Some((r, vc, self.password.as_deref().unwrap_or(""))))
    }

    /// What the point records: the VM, with the changeIds read before the
    /// replication snapshot in vCenter mode.
    fn meta(&self) -> Result<VmConfig, StepError> {
        let mut vm = self.vm.clone();
        if let Some(r) = self.replication()? {
            for d in &mut vm.disks {
                d.change_id = r.change_ids.get(&d.name).cloned().flatten();
            }
        }
        Ok(vm)
    }
}

struct Snapshot;

impl Step for Snapshot {
    type Input = SnapshotIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "snapshot",
            "Seal the shipped disks into one immutable recovery point that records the VM's configuration",
        )
        .input(field::object("vm").required().doc("The VM, as `discover` returns it"))
        .input(field::list("staged").required().doc("`ship`'s staged disk ids"))
        .input(field::string("consistency").doc("crash (default); app needs a quiesced snapshot"))
        .input(field::list("captured").doc("vCenter mode: capture's `disks`; their changeIds go into the point, then their replication snapshot is removed"))
        .input(field::object("vcenter").doc("vCenter mode: {url, user}, to remove the replication snapshot"))
        .input(field::string("password").sensitive().doc("vCenter mode: the password, e.g. ${{ secrets.vcenter_password }}"))
        .output(field::string("point").doc("The recovery point's id"))
        .output(field::string("created").doc("When it was sealed (RFC 3339)"))
    }
    fn plan(_: &Context, i: SnapshotIn) -> Result<Plan, StepError> {
        let c = consistency(&i.consistency)?;
        let replication = i.vcenter()?;
        let seal = Action::create(
            format!("point/{}", i.vm.name),
            format!(
                "seal a {c}-consistent recovery point of {} ({} disks)",
                i.vm.name,
                i.staged.len()
            ),
        );
        let mut p = Plan::new();
        match replication {
            None => p = p.action(seal),
            Some((r, vc, _)) => {
                let ids = r.change_ids.values().filter(|c| c.is_some()).count();
                p = p
                    .action(
                        Action::create(
                            seal.resource,
                            format!(
                                "{}, recording the changeIds of {ids} of {} disks (read before snapshot {})",
                                seal.summary,
                                r.change_ids.len(),
                                r.snapshot.name
                            ),
                        )
                        .payload(json!({"op": "seal"})),
                    )
                    .action(
                        Action::delete(
                            format!("vm/{}/snapshot/{}", i.vm.name, r.snapshot.name),
                            format!(
                                "remove the replication snapshot {} ({}) of {} in vCenter {}",
                                r.snapshot.name, r.snapshot.moref, i.vm.name, vc.url
                            ),
                        )
                        .payload(json!({"op": "remove-snapshot"})),
                    );
            }
        }
        Ok(p.output_after_apply("point").output_after_apply("created"))
    }
    fn apply(_: &Context, i: SnapshotIn, a: &Action) -> Result<Outputs, StepError> {
        if a.payload.get("op").and_then(|o| o.as_str()) == Some("remove-snapshot") {
            let Some((r, vc, password)) = i.vcenter()? else {
                return Err(StepError::invalid_input(
                    "`captured` names no replication snapshot to remove",
                ));
            };
            let mut s = Session::open(vc, password)?;
            let snap =
                lifeboat_vmware_api::MoRef::new("VirtualMachineSnapshot", r.snapshot.moref.clone());
            match s.vc.remove_snapshot(&snap) {
                Ok(()) => {}
                // already removed (a resumed run): done
                Err(lifeboat_vmware_api::VmwareError::Fault { fault_type, .. })
                    if fault_type == "ManagedObjectNotFound" => {}
                Err(e) => {
                    return Err(s.error(
                        &format!(
                            "remove the replication snapshot {} of {}",
                            r.snapshot.name, i.vm.name
                        ),
                        e,
                    ));
                }
            }
            s.close();
            lifeboat_plugin_sdk::log::info(
                "replication snapshot removed",
                &[
                    ("vm", &i.vm.name),
                    ("snapshot", &r.snapshot.name),
                    ("moref", &r.snapshot.moref),
                ],
            );
            return Ok(Outputs::new());
        }
        let c = consistency(&i.consistency)?;
        let meta = serde_json::to_value(i.meta()?)
            .map_err(|e| StepError::new("internal", e.to_string()))?;
        let p = transfer::seal(&i.vm.name, &i.staged, c, &meta)?;
        Ok(Outputs::new()
            .set("point", &p.id)
            .set("created", &p.created))
    }
}

lifeboat_plugin_sdk::plugin!(
    name: "vmware",
    version: "0.1.0",
    doc: "VMware source: discover a VM from its .vmx, capture changed extents, ship and snapshot into the vault, apply retention",
    steps: [Discover, Capture, Ship, Snapshot, Retention],
);
