//! The VMware source plugin.
//!
//! A *folder site* holds a VM's own files: its `.vmx` and VMDKs. `discover`
//! reads the `.vmx`, `capture` works out what changed per disk (a changed-area
//! list in the shape vSphere's `QueryChangedDiskAreas` returns, else the
//! allocation map for the first copy, else hash comparison with the latest
//! recovery point), `ship` moves those extents into the workflow's vault, and
//! `snapshot` seals them into one recovery point holding the VM's
//! configuration. The host reads the disks and moves the bytes; this plugin
//! only names them.

mod vmx;

use lifeboat_plugin_sdk::prelude::*;
use lifeboat_plugin_sdk::transfer::{self, Changes, Extent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use vmx::{Disk, Nic, VmConfig};

fn mib(b: u64) -> String {
    if b >= 10 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

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
    vmx: String,
    /// NIC name (`ethernet0`) or MAC → static IP to keep at the recovery site.
    #[serde(default)]
    ips: BTreeMap<String, String>,
}

fn discover(i: &DiscoverIn) -> Result<VmConfig, StepError> {
    let text = transfer::read_file(&i.site, &i.vmx).map_err(|e| {
        if e.code == "not-found" {
            StepError::new(
                "not-found",
                format!(
                    "no .vmx at {:?} in site `{}`: {}; check the `vmx` input",
                    i.vmx, i.site, e.message
                ),
            )
        } else {
            e
        }
    })?;
    let bad = |e: vmx::VmxError| {
        StepError::invalid_input(if e.line > 0 {
            format!("{}:{}: {} (site `{}`)", i.vmx, e.line, e.message, i.site)
        } else {
            format!("{}: {} (site `{}`)", i.vmx, e.message, i.site)
        })
    };
    let parsed = vmx::Vmx::parse(&text).map_err(bad)?;
    let (mut cfg, disks) = vmx::read(&parsed).map_err(bad)?;
    if disks.is_empty() {
        return Err(StepError::invalid_input(format!(
            "{}: the VM has no virtual disks (no scsiX:Y/sataX:Y/ideX:Y/nvmeX:Y .fileName ending in .vmdk)",
            i.vmx
        )));
    }
    let base = dir_of(&i.vmx);
    for d in disks {
        if d.file.starts_with('/') || d.file.contains("..") {
            return Err(StepError::invalid_input(format!(
                "{}:{}: disk {} is {:?}, outside the VM's folder; a folder site holds the VM's own files",
                i.vmx, d.line, d.name, d.file
            )));
        }
        let path = join(base, &d.file);
        let info = transfer::inspect_disk(&i.site, &path).map_err(|e| {
            StepError::new(
                &e.code,
                format!(
                    "{}:{}: disk {} ({}): {}",
                    i.vmx, d.line, d.name, d.file, e.message
                ),
            )
        })?;
        cfg.disks.push(Disk {
            name: d.name,
            path,
            format: info.format,
            size_bytes: info.virtual_size,
        });
    }
    for (k, ip) in &i.ips {
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
    Ok(cfg)
}

struct Discover;

impl Step for Discover {
    type Input = DiscoverIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "discover",
            "Read a VM's configuration from its .vmx in a folder site: CPUs, memory, firmware, disks, NICs",
        )
        .input(field::string("site").required().doc("The folder site holding the VM's files"))
        .input(field::string("vmx").required().doc("Path of the .vmx inside the site"))
        .input(field::object("ips").doc("Static IPs to keep: NIC name or MAC → address"))
        .output(field::object("vm").doc("The VM: name, cpus, memory_mib, firmware, guest_os, disks, nics"))
    }
    fn plan(_: &Context, i: DiscoverIn) -> Result<Plan, StepError> {
        let vm = discover(&i)?;
        let size: u64 = vm.disks.iter().map(|d| d.size_bytes).sum();
        Ok(Plan::new()
            .action(
                Action::read(
                    format!("vm/{}", vm.name),
                    format!(
                        "read {}: {} vCPU, {} MiB, {}, {} disks ({}), {} NICs",
                        i.vmx,
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
    fn apply(_: &Context, _: DiscoverIn, a: &Action) -> Result<Outputs, StepError> {
        let vm: VmConfig = a.payload_as()?;
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
    if !["", "auto", "full", "hash"].contains(&i.mode.as_str()) {
        return Err(StepError::invalid_input(format!(
            "mode {:?} is not one of auto, full, hash",
            i.mode
        )));
    }
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
        let previous = points.iter().rev().find(|p| {
            p.disks
                .iter()
                .any(|x| x.name == d.name && x.virtual_size == d.size_bytes)
        });
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
            },
            ("hash", Some(p), _) | (_, Some(p), None) => Captured {
                name: d.name.clone(),
                path: d.path.clone(),
                changes: Changes::HashCompare,
                bytes: allocated()?,
                source: format!("no change list: hash comparison with point {}", p.id),
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
        .output(field::list("disks").doc("Per disk: name, path, changes, bytes, source — the input of `ship`"))
        .output(field::integer("bytes_to_move").doc("Bytes the host will read (an upper bound for hash comparison)"))
    }
    fn plan(_: &Context, i: CaptureIn) -> Result<Plan, StepError> {
        let disks = capture(&i)?;
        let total: u64 = disks.iter().map(|d| d.bytes).sum();
        let mut p = Plan::new();
        for d in &disks {
            p = p.action(
                Action::read(
                    format!("vm/{}/disk/{}", i.vm.name, d.name),
                    format!(
                        "{} ({}): {}, {} to read",
                        d.name,
                        d.path,
                        d.source,
                        mib(d.bytes)
                    ),
                )
                .payload(d),
            );
        }
        Ok(p.output("disks", &disks).output("bytes_to_move", total))
    }
    fn apply(_: &Context, i: CaptureIn, _: &Action) -> Result<Outputs, StepError> {
        // read-only: the plan's answer stands; recompute so outputs match
        let disks = capture(&i)?;
        let total: u64 = disks.iter().map(|d| d.bytes).sum();
        Ok(Outputs::new()
            .set("disks", &disks)
            .set("bytes_to_move", total))
    }
}

// ------------------------------------------------------------------ ship

#[derive(Deserialize)]
struct ShipIn {
    site: String,
    vm: VmConfig,
    disks: Vec<Captured>,
}

struct Ship;

impl Step for Ship {
    type Input = ShipIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "ship",
            "Ship the captured extents of every disk into the workflow's vault (staged until `snapshot`)",
        )
        .input(field::string("site").required().doc("The folder site holding the VM's files"))
        .input(field::object("vm").required().doc("The VM, as `discover` returns it"))
        .input(field::list("disks").required().doc("What `capture` found"))
        .output(field::list("staged").doc("Staged disk ids, for `snapshot`"))
        .output(field::integer("bytes_read").doc("Bytes read from the disks"))
        .output(field::integer("bytes_new").doc("Bytes the vault did not hold yet"))
        .output(field::integer("bytes_stored").doc("Bytes written to the vault (compressed, encrypted)"))
    }
    fn plan(_: &Context, i: ShipIn) -> Result<Plan, StepError> {
        if i.disks.is_empty() {
            return Err(StepError::invalid_input("no disks to ship"));
        }
        let total: u64 = i.disks.iter().map(|d| d.bytes).sum();
        let parts: Vec<String> = i
            .disks
            .iter()
            .map(|d| format!("{} {}", d.name, mib(d.bytes)))
            .collect();
        Ok(Plan::new()
            .action(
                Action::transfer(
                    format!("vault/{}", i.vm.name),
                    format!(
                        "ship {} disks of {} into the vault, up to {} ({})",
                        i.disks.len(),
                        i.vm.name,
                        mib(total),
                        parts.join(", ")
                    ),
                )
                .payload(&i.disks),
            )
            .output_after_apply("staged")
            .output_after_apply("bytes_read")
            .output_after_apply("bytes_new")
            .output_after_apply("bytes_stored"))
    }
    fn apply(_: &Context, i: ShipIn, _: &Action) -> Result<Outputs, StepError> {
        let (mut staged, mut read, mut new, mut stored) = (Vec::new(), 0u64, 0u64, 0u64);
        for d in &i.disks {
            let r = transfer::ship(&i.vm.name, &d.name, &i.site, &d.path, &d.changes)?;
            lifeboat_plugin_sdk::log::info(
                "shipped",
                &[
                    ("vm", &i.vm.name),
                    ("disk", &d.name),
                    ("bytes_read", &r.bytes_read.to_string()),
                    ("bytes_new", &r.bytes_new.to_string()),
                    ("bytes_stored", &r.bytes_stored.to_string()),
                ],
            );
            staged.push(r.staged);
            read += r.bytes_read;
            new += r.bytes_new;
            stored += r.bytes_stored;
        }
        Ok(Outputs::new()
            .set("staged", &staged)
            .set("bytes_read", read)
            .set("bytes_new", new)
            .set("bytes_stored", stored))
    }
}

// ------------------------------------------------------------------ snapshot

#[derive(Deserialize)]
struct SnapshotIn {
    vm: VmConfig,
    staged: Vec<String>,
    #[serde(default)]
    consistency: String,
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
        .output(field::string("point").doc("The recovery point's id"))
        .output(field::string("created").doc("When it was sealed (RFC 3339)"))
    }
    fn plan(_: &Context, i: SnapshotIn) -> Result<Plan, StepError> {
        let c = match i.consistency.as_str() {
            "" | "crash" => "crash",
            "app" => "app",
            other => {
                return Err(StepError::invalid_input(format!(
                    "consistency {other:?} is neither `crash` nor `app`"
                )));
            }
        };
        Ok(Plan::new()
            .action(Action::create(
                format!("point/{}", i.vm.name),
                format!(
                    "seal a {c}-consistent recovery point of {} ({} disks)",
                    i.vm.name,
                    i.staged.len()
                ),
            ))
            .output_after_apply("point")
            .output_after_apply("created"))
    }
    fn apply(_: &Context, i: SnapshotIn, _: &Action) -> Result<Outputs, StepError> {
        let c = if i.consistency == "app" {
            "app"
        } else {
            "crash"
        };
        let meta =
            serde_json::to_value(&i.vm).map_err(|e| StepError::new("internal", e.to_string()))?;
        let p = transfer::seal(&i.vm.name, &i.staged, c, &meta)?;
        Ok(Outputs::new()
            .set("point", &p.id)
            .set("created", &p.created))
    }
}

lifeboat_plugin_sdk::plugin!(
    name: "vmware",
    version: "0.1.0",
    doc: "VMware source: discover a VM from its .vmx, capture changed extents, ship and snapshot into the vault",
    steps: [Discover, Capture, Ship, Snapshot],
);
