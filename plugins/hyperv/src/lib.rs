//! The Hyper-V source plugin.
//!
//! A *folder site* holds what a Hyper-V host has for a VM: its disks (VHDX or
//! VHD, differencing chains included) and `vm.json`, the VM's configuration as
//! the documented PowerShell command exports it (see [`config`]). `discover`
//! reads `vm.json` and inspects each disk; `capture` works out what changed per
//! disk with Resilient Change Tracking — the answer of
//! `Msvm_ImageManagementService.GetVirtualDiskChanges` since the RCT id recorded
//! with the VM's latest point — the allocation map for the first copy, and hash
//! comparison when there is no RCT answer or its baseline is not the one the
//! last point recorded; then the SDK's `ship`, `snapshot` and `retention`.

mod config;
mod winrm;

use std::collections::BTreeMap;

use lifeboat_plugin_sdk::prelude::*;
use lifeboat_plugin_sdk::replication::{
    self, CapturedDisk, Found, Ship, Snapshot, capture_action, check_mode, mib, previous_point,
};
use lifeboat_plugin_sdk::retention::Retention;
use lifeboat_plugin_sdk::transfer::{self, Changes, Extent};
use serde::Deserialize;

use config::{Disk, HyperVExport, Nic, VmConfig};

/// The folder of a site path: `a/b/vm.json` → `a/b`.
fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

// ------------------------------------------------------------------ discover

#[derive(Deserialize)]
struct DiscoverIn {
    site: String,
    /// Path of `vm.json` in the site (folder mode).
    #[serde(default)]
    config: String,
    /// Host mode: read the VM from the Hyper-V host over WinRM.
    #[serde(default)]
    host: Option<winrm::HostIn>,
    /// Host mode: the account's password (a secret).
    #[serde(default)]
    password: Option<String>,
    /// The host folder that corresponds to the site's root, e.g. `C:\Hyper-V`.
    #[serde(default)]
    windows_root: Option<String>,
    /// The guest OS (Hyper-V's export does not say), e.g. `ubuntu22-64`, `windows2022srv-64`.
    #[serde(default)]
    guest_os: String,
    /// Adapter (`nic0`, …) → static IPv4 address it keeps.
    #[serde(default)]
    ips: BTreeMap<String, String>,
}

fn discover(i: &DiscoverIn) -> Result<VmConfig, StepError> {
    let (e, source) = match &i.host {
        Some(h) => (
            winrm::export(h, i.password.as_deref().unwrap_or(""))?,
            format!("WinRM {} ({})", h.url, h.vm),
        ),
        None if i.config.is_empty() => {
            return Err(StepError::invalid_input(
                "give `config` (the VM's Get-VM export in the site) or `host` (read it from the Hyper-V host over WinRM)",
            ));
        }
        None => {
            let text = transfer::read_file(&i.site, &i.config)?;
            // PowerShell's Set-Content -Encoding utf8 writes a byte-order mark
            let text = text.trim_start_matches('\u{feff}');
            let e: HyperVExport = serde_json::from_str(text)
                .map_err(|e| StepError::invalid_input(config::problem(&i.config, e)))?;
            (e, i.config.clone())
        }
    };
    from_export(i, e, &source)
}

/// The VM shape from a Get-VM export (read from `vm.json` or built from WMI):
/// `source` names where it came from, for messages.
fn from_export(i: &DiscoverIn, e: HyperVExport, source: &str) -> Result<VmConfig, StepError> {
    if e.vm.name.is_empty() {
        return Err(StepError::invalid_input(config::problem(
            source,
            "VM.Name is empty",
        )));
    }
    let firmware = match e.vm.generation {
        1 => "bios",
        2 => "uefi",
        g => {
            return Err(StepError::invalid_input(format!(
                "{source}: VM.Generation is {g}; Hyper-V VMs are generation 1 or 2"
            )));
        }
    };
    if e.hard_drives.is_empty() {
        return Err(StepError::invalid_input(format!(
            "{}: VM {} has no HardDrives; export them with Get-VMHardDiskDrive (see the plugin's documentation)",
            source, e.vm.name
        )));
    }
    let vm_dir = dir_of(&i.config);
    let mut disks = Vec::new();
    for d in &e.hard_drives {
        let name =
            config::slot(d).map_err(|m| StepError::invalid_input(format!("{source}: {m}")))?;
        let candidates = config::site_candidates(&d.path, vm_dir, i.windows_root.as_deref());
        let (path, info) = match replication::find_disk(&i.site, &candidates)? {
            Found::Disk(path, info) => (path, info),
            Found::Missing(last) => {
                return Err(StepError::new(
                    "not-found",
                    format!(
                        "disk {name} of {} ({}) is not in site `{}`: looked for {}{}; copy the disk there or set `windows_root` to the host folder the site mirrors",
                        e.vm.name,
                        d.path,
                        i.site,
                        candidates.join(", "),
                        last.map(|m| format!(" ({m})")).unwrap_or_default()
                    ),
                ));
            }
        };
        disks.push(Disk {
            name,
            path,
            format: info.format,
            size_bytes: info.virtual_size,
            host_path: d.path.clone(),
            rct_id: None,
        });
    }
    let mut nics = Vec::new();
    for (n, a) in e.network_adapters.iter().enumerate() {
        let name = format!("nic{n}");
        let mac = replication::mac("MacAddress", &a.mac_address).map_err(|m| {
            StepError::invalid_input(format!("{}: adapter {}: {m}", source, a.name))
        })?;
        let network = a.switch_name.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
            StepError::invalid_input(format!(
                "{}: adapter {} ({name}) is not connected to a virtual switch; connect it or remove it",
                source, a.name
            ))
        })?;
        nics.push(Nic {
            ip: i.ips.get(&name).cloned(),
            name,
            label: a.name.clone(),
            mac,
            network,
            vlan: a.vlan_id.filter(|v| *v != 0),
        });
    }
    for k in i.ips.keys() {
        if !nics.iter().any(|n| &n.name == k) {
            return Err(StepError::invalid_input(format!(
                "`ips` names adapter {k:?}, but {} has {} adapter(s): nic0…",
                e.vm.name,
                nics.len()
            )));
        }
    }
    Ok(VmConfig {
        name: e.vm.name,
        cpus: e.vm.processor_count,
        memory_mib: e.vm.memory_startup >> 20,
        firmware: firmware.into(),
        generation: e.vm.generation,
        secure_boot: config::secure_boot(&e.firmware),
        hyperv_id: e.vm.id.clone(),
        guest_os: i.guest_os.clone(),
        disks,
        nics,
    })
}

struct Discover;

impl Step for Discover {
    type Input = DiscoverIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "discover",
            "Read a Hyper-V VM's configuration (Get-VM export, or WMI over WinRM from the host) and inspect its disks",
        )
        .input(field::string("site").required().doc("The folder site holding the VM's files"))
        .input(field::string("config").doc("Folder mode: path of the VM's vm.json (the documented Get-VM export) in the site"))
        .input(field::object("host").doc("Host mode: {url: https://HOST:5986/wsman, user, vm: NAME}: read the VM over WinRM (WMI root\\virtualization\\v2) during apply"))
        .input(field::string("password").sensitive().doc("Host mode: the account's password, e.g. ${{ secrets.hyperv_password }}"))
        .input(field::string("windows_root").doc("The host folder the site mirrors, e.g. C:\\Hyper-V (default: find disks next to vm.json)"))
        .input(field::string("guest_os").doc("The guest OS id, e.g. ubuntu22-64 (Hyper-V's export does not carry it)"))
        .input(field::object("ips").doc("Adapter (nic0, nic1, …) → static IPv4 address it keeps"))
        .output(field::object("vm").doc("The VM: name, cpus, memory_mib, firmware, generation, disks, nics"))
    }
    fn plan(_: &Context, i: DiscoverIn) -> Result<Plan, StepError> {
        if let Some(h) = &i.host {
            // WS-Management is SOAP over POST: run during apply, read-only queries
            return Ok(Plan::new()
                .action(Action::run(
                    format!("vm/{}", h.vm),
                    format!(
                        "query VM {} on Hyper-V host {} as {} over WinRM (read-only WMI queries of root\\virtualization\\v2: system, settings, processor, memory, drives, adapters, switches); find its disks in site `{}`",
                        h.vm, h.url, h.user, i.site
                    ),
                ))
                .output_after_apply("vm"));
        }
        let vm = discover(&i)?;
        let total: u64 = vm.disks.iter().map(|d| d.size_bytes).sum();
        Ok(Plan::new()
            .action(
                Action::read(
                    format!("vm/{}", vm.name),
                    format!(
                        "read {}: generation {} ({}), {} vCPU, {} MiB, {} disks ({}), {} NICs",
                        i.config,
                        vm.generation,
                        vm.firmware,
                        vm.cpus,
                        vm.memory_mib,
                        vm.disks.len(),
                        mib(total),
                        vm.nics.len()
                    ),
                )
                .payload(&vm),
            )
            .output("vm", &vm))
    }
    fn apply(_: &Context, i: DiscoverIn, _: &Action) -> Result<Outputs, StepError> {
        Ok(Outputs::new().set("vm", discover(&i)?))
    }
}

// ------------------------------------------------------------------ capture

/// `GetVirtualDiskChanges`'s answer as JSON, with the RCT ids around it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RctChanges {
    /// The baseline the changes are since (the method's `LimitId`).
    limit_id: String,
    /// The disk's RCT id now: the next capture's baseline.
    current_id: String,
    #[serde(default)]
    byte_offset: u64,
    processed_byte_length: u64,
    #[serde(default)]
    changed_byte_offsets: Vec<u64>,
    #[serde(default)]
    changed_byte_lengths: Vec<u64>,
}

fn read_rct(site: &str, path: &str, disk: &Disk) -> Result<(RctChanges, Vec<Extent>), StepError> {
    let text = transfer::read_file(site, path)?;
    let text = text.trim_start_matches('\u{feff}');
    let c: RctChanges = serde_json::from_str(text).map_err(|e| {
        StepError::invalid_input(format!(
            "{path} (site `{site}`): not a GetVirtualDiskChanges answer ({{\"LimitId\", \"CurrentId\", \"ByteOffset\", \"ProcessedByteLength\", \"ChangedByteOffsets\": [], \"ChangedByteLengths\": []}}): {e}"
        ))
    })?;
    if c.changed_byte_offsets.len() != c.changed_byte_lengths.len() {
        return Err(StepError::invalid_input(format!(
            "{path}: {} ChangedByteOffsets but {} ChangedByteLengths",
            c.changed_byte_offsets.len(),
            c.changed_byte_lengths.len()
        )));
    }
    if c.byte_offset != 0 || c.processed_byte_length < disk.size_bytes {
        return Err(StepError::invalid_input(format!(
            "{path}: the answer covers {}..{} but disk {} is {} bytes; call GetVirtualDiskChanges until ProcessedByteLength covers the whole disk",
            c.byte_offset,
            c.byte_offset + c.processed_byte_length,
            disk.name,
            disk.size_bytes
        )));
    }
    let mut out = Vec::new();
    for (&o, &l) in c.changed_byte_offsets.iter().zip(&c.changed_byte_lengths) {
        if o.checked_add(l).is_none_or(|end| end > disk.size_bytes) {
            return Err(StepError::invalid_input(format!(
                "{path}: changed range {o}+{l} lies beyond the end of disk {} ({} bytes)",
                disk.name, disk.size_bytes
            )));
        }
        if l > 0 {
            out.push(Extent::data(o, l));
        }
    }
    Ok((c, out))
}

#[derive(Deserialize)]
struct CaptureIn {
    site: String,
    vm: VmConfig,
    /// Disk name → path (in the site) of its `GetVirtualDiskChanges` answer.
    #[serde(default)]
    rct: BTreeMap<String, String>,
    /// `auto` (default), `full` or `hash`.
    #[serde(default)]
    mode: String,
}

fn capture(i: &CaptureIn) -> Result<(Vec<CapturedDisk>, VmConfig), StepError> {
    check_mode(&i.mode)?;
    for k in i.rct.keys() {
        if !i.vm.disks.iter().any(|d| &d.name == k) {
            let names: Vec<&str> = i.vm.disks.iter().map(|d| d.name.as_str()).collect();
            return Err(StepError::invalid_input(format!(
                "`rct` names disk {k:?}, which VM {} does not have (disks: {})",
                i.vm.name,
                names.join(", ")
            )));
        }
    }
    let points = transfer::points(&i.vm.name)?;
    let mut vm = i.vm.clone();
    let mut out = Vec::new();
    for d in &mut vm.disks {
        let previous = previous_point(&points, &d.name, d.size_bytes);
        // the RCT id the previous point recorded for this disk
        let baseline = previous.and_then(|p| {
            p.meta["disks"]
                .as_array()?
                .iter()
                .find(|x| x["name"] == d.name.as_str())?["rct_id"]
                .as_str()
                .map(str::to_string)
        });
        let rct = match i.rct.get(&d.name) {
            Some(path) => Some(read_rct(&i.site, path, d)?),
            None => None,
        };
        d.rct_id = rct.as_ref().map(|(c, _)| c.current_id.clone());
        let allocated = || -> Result<u64, StepError> {
            Ok(transfer::inspect_disk(&i.site, &d.path)?.allocated)
        };
        let (changes, bytes, source) = match (i.mode.as_str(), previous, rct) {
            ("full", _, _) | (_, None, _) => (
                Changes::Full,
                allocated()?,
                if previous.is_none() {
                    "first copy: allocation map".to_string()
                } else {
                    "full copy (mode: full)".to_string()
                },
            ),
            ("hash", Some(p), _) => (
                Changes::HashCompare,
                allocated()?,
                format!("hash comparison with point {} (mode: hash)", p.id),
            ),
            (_, Some(p), None) => (
                Changes::HashCompare,
                allocated()?,
                format!("no RCT answer: hash comparison with point {}", p.id),
            ),
            (_, Some(p), Some((c, list))) if baseline.as_deref() == Some(c.limit_id.as_str()) => {
                let bytes = list.iter().map(|e| e.length).sum();
                (
                    Changes::Extents(list.clone()),
                    bytes,
                    format!(
                        "resilient change tracking: {} ranges since {} (point {})",
                        list.len(),
                        c.limit_id,
                        p.id
                    ),
                )
            }
            (_, Some(p), Some((c, _))) => (
                Changes::HashCompare,
                allocated()?,
                format!(
                    "RCT id {} is not the baseline point {} recorded ({}): the reference point is gone; hash comparison with point {}",
                    c.limit_id,
                    p.id,
                    baseline.as_deref().unwrap_or("none"),
                    p.id
                ),
            ),
        };
        out.push(CapturedDisk {
            name: d.name.clone(),
            path: d.path.clone(),
            changes,
            bytes,
            source,
        });
    }
    Ok((out, vm))
}

struct Capture;

impl Step for Capture {
    type Input = CaptureIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "capture",
            "Work out each disk's changed ranges: Resilient Change Tracking since the last point, the allocation map for the first copy, else hash comparison",
        )
        .input(field::string("site").required().doc("The folder site holding the VM's files"))
        .input(field::object("vm").required().doc("The VM, as `discover` returns it"))
        .input(field::object("rct").doc("Disk name → path in the site of its GetVirtualDiskChanges answer (JSON)"))
        .input(field::string("mode").doc("auto (default), full or hash"))
        .output(field::list("disks").doc("Per disk: name, path, changes, bytes, source — the input of `ship`"))
        .output(field::object("vm").doc("The VM with each disk's current RCT id: give it to `snapshot`, so the next capture has its baseline"))
        .output(field::integer("bytes_to_move").doc("Bytes the host will read (an upper bound for hash comparison)"))
    }
    fn plan(_: &Context, i: CaptureIn) -> Result<Plan, StepError> {
        let (disks, vm) = capture(&i)?;
        let total: u64 = disks.iter().map(|d| d.bytes).sum();
        let mut p = Plan::new();
        for d in &disks {
            p = p.action(
                capture_action(&i.vm.name, &d.name, &d.path, &d.source, d.bytes).payload(d),
            );
        }
        Ok(p.output("disks", &disks)
            .output("vm", &vm)
            .output("bytes_to_move", total))
    }
    fn apply(_: &Context, i: CaptureIn, _: &Action) -> Result<Outputs, StepError> {
        let (disks, vm) = capture(&i)?;
        let total: u64 = disks.iter().map(|d| d.bytes).sum();
        Ok(Outputs::new()
            .set("disks", &disks)
            .set("vm", &vm)
            .set("bytes_to_move", total))
    }
}

lifeboat_plugin_sdk::plugin!(
    name: "hyperv",
    version: "0.1.0",
    doc: "Hyper-V source: discover a VM from its Get-VM export, capture changes by Resilient Change Tracking, ship and snapshot into the vault, apply retention",
    steps: [Discover, Capture, Ship, Snapshot, Retention],
);
