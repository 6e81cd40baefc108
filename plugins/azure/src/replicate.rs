//! Azure as a source: protect a VM of one region so it can fail over to
//! another (ASR's Azure → Azure).
//!
//! `discover` reads the VM's ARM export (see [`crate::export`]) and finds each
//! disk's page blob in the source storage site; `capture` takes a snapshot of
//! every disk blob at once (the point in time the recovery point holds) and
//! works out what changed since the snapshot the VM's latest point recorded:
//! Get Page Ranges with `prevsnapshot` (written and cleared ranges), the
//! allocation map for the first copy, and hash comparison when there is no
//! trustworthy diff (a folder site, an emulator, a baseline snapshot that is
//! gone) — said aloud. Then the SDK's `ship`, `snapshot` and `retention`, and
//! `release-snapshots`, which deletes the baseline snapshots the new point
//! replaced.

use std::collections::BTreeMap;

use lifeboat_azure_arm::VM_SIZES;
use lifeboat_plugin_sdk::prelude::*;
use lifeboat_plugin_sdk::replication::{
    CapturedDisk, Found, check_mode, find_disk, mac, mib, previous_point,
};
use lifeboat_plugin_sdk::transfer::{self, Changes, Extent, ExtentKind, PointInfo};
use serde::{Deserialize, Serialize};

use crate::export::{self, AzureDisk, AzureNic, AzureVm};

fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

// ------------------------------------------------------------------ discover

/// Reading the VM live from Azure Resource Manager: the `arm` input of `discover`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmSource {
    /// `https://management.azure.com` (or a stand-in).
    endpoint: String,
    /// An ARM access token (`az account get-access-token`), sent as
    /// `Authorization: Bearer …`; give it through a secret.
    token: String,
    subscription: String,
    resource_group: String,
    /// The VM's name in the resource group.
    vm: String,
}

/// Query of the `Microsoft.Compute/virtualMachines` GET: with the instance view.
const VM_QUERY: &str = "$expand=instanceView&api-version=2024-07-01";
/// Query of the `Microsoft.Network/networkInterfaces` GET.
const NIC_QUERY: &str = "api-version=2024-05-01";

impl ArmSource {
    fn base(&self) -> Result<String, StepError> {
        let e = self.endpoint.trim().trim_end_matches('/');
        if !e.starts_with("https://") && !e.starts_with("http://") {
            return Err(StepError::invalid_input(format!(
                "arm.endpoint {:?} is not an https URL such as https://management.azure.com",
                self.endpoint
            )));
        }
        if self.token.trim().is_empty() {
            return Err(StepError::invalid_input(
                "arm.token is empty; pass an ARM access token through a secret (`${{ secrets.NAME }}`)",
            ));
        }
        for (f, v) in [
            ("arm.subscription", &self.subscription),
            ("arm.resource_group", &self.resource_group),
            ("arm.vm", &self.vm),
        ] {
            if v.is_empty() || v.contains(['/', '?', '#', ' ']) {
                return Err(StepError::invalid_input(format!(
                    "{f} {v:?} is empty or holds /, ?, # or a space"
                )));
            }
        }
        Ok(e.to_string())
    }

    /// GET an ARM resource (`path` from `/subscriptions/…`, `query` with its
    /// `api-version`), as text.
    fn get(&self, path: &str, query: &str, what: &str) -> Result<String, StepError> {
        let url = format!("{}{path}?{query}", self.base()?);
        let auth = format!("Bearer {}", self.token.trim());
        let r = lifeboat_plugin_sdk::http::send(
            "GET",
            &url,
            &[
                ("authorization", auth.as_str()),
                ("accept", "application/json"),
            ],
            &[],
        )?;
        let body = r.text();
        let arm_message = || {
            serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    let e = &v["error"];
                    Some(format!(
                        "{}: {}",
                        e["code"].as_str()?,
                        e["message"].as_str().unwrap_or("")
                    ))
                })
                .unwrap_or_else(|| body.chars().take(200).collect())
        };
        match r.status {
            200 => Ok(body),
            401 | 403 => Err(StepError::new(
                "denied",
                format!(
                    "ARM refused to read {what} (HTTP {}: {}); check the token and that it may read the resource group",
                    r.status,
                    arm_message()
                ),
            )),
            404 => Err(StepError::new(
                "not-found",
                format!("ARM has no {what} (HTTP 404: {})", arm_message()),
            )),
            429 | 500..=599 => Err(StepError::retryable(
                "unavailable",
                format!(
                    "ARM answered HTTP {} reading {what}: {}",
                    r.status,
                    arm_message()
                ),
            )),
            s => Err(StepError::new(
                "io",
                format!("ARM answered HTTP {s} reading {what}: {}", arm_message()),
            )),
        }
    }
}

#[derive(Deserialize)]
pub struct DiscoverIn {
    /// The source region's storage site (the disks' page blobs).
    site: String,
    /// Read the VM from ARM instead of an export in a site.
    #[serde(default)]
    arm: Option<ArmSource>,
    /// The site holding the ARM export (default: `site`).
    #[serde(default)]
    export_site: Option<String>,
    /// Path of `vm.json` in the export site (without `arm`).
    #[serde(default)]
    config: String,
    /// Path of `nics.json` (default: next to `vm.json`).
    #[serde(default)]
    nics: Option<String>,
    /// Disk (`os`, `lun0`, …) → its page blob's path in `site`, overriding the
    /// one derived from the disk's URI (e.g. a managed disk copied to a blob).
    #[serde(default)]
    disks: BTreeMap<String, String>,
}

fn read_export(site: &str, path: &str) -> Result<String, StepError> {
    let text = transfer::read_file(site, path)?;
    Ok(text.trim_start_matches('\u{feff}').to_string())
}

pub fn discover(i: &DiscoverIn) -> Result<AzureVm, StepError> {
    let xsite = i.export_site.as_deref().unwrap_or(&i.site);
    // where the VM's description comes from, for messages
    let (vm_text, source) = match &i.arm {
        Some(a) => {
            let path = format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
                a.subscription, a.resource_group, a.vm
            );
            (
                a.get(
                    &path,
                    VM_QUERY,
                    &format!("VM {} in resource group {}", a.vm, a.resource_group),
                )?,
                format!("ARM {path}"),
            )
        }
        None if i.config.is_empty() => {
            return Err(StepError::invalid_input(
                "give `config` (the VM's export in a site) or `arm` (read it from Azure Resource Manager)",
            ));
        }
        None => (read_export(xsite, &i.config)?, i.config.clone()),
    };
    let vm: export::ArmVm = serde_json::from_str(&vm_text)
        .map_err(|e| StepError::invalid_input(export::problem(&source, e)))?;
    let p = &vm.properties;
    let bad = |m: String| StepError::invalid_input(format!("{source}: {m}"));
    if vm.name.is_empty() {
        return Err(bad("`name` is empty".into()));
    }
    let generation = match p
        .instance_view
        .as_ref()
        .and_then(|v| v.hyper_v_generation.as_deref())
    {
        Some(g) if g.eq_ignore_ascii_case("V1") => 1,
        Some(g) if g.eq_ignore_ascii_case("V2") => 2,
        Some(g) => {
            return Err(bad(format!(
                "properties.instanceView.hyperVGeneration is {g:?}; expected V1 or V2"
            )));
        }
        None if p
            .security_profile
            .as_ref()
            .is_some_and(|s| s.get("uefiSettings").is_some()) =>
        {
            2
        }
        None => {
            return Err(bad(
                "no properties.instanceView.hyperVGeneration: export the VM with `az vm get-instance-view` (not `az vm show`), which includes the instance view".into(),
            ));
        }
    };
    let size = VM_SIZES
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(&p.hardware_profile.vm_size))
        .ok_or_else(|| {
            bad(format!(
                "VM size {:?} is not one lifeboat knows ({} …); a failover needs its vCPUs and memory",
                p.hardware_profile.vm_size,
                VM_SIZES
                    .iter()
                    .take(4)
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let guest_os = match p.storage_profile.os_disk.os_type.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("linux") => "linux",
        Some(t) if t.eq_ignore_ascii_case("windows") => "windows",
        other => {
            return Err(bad(format!(
                "storageProfile.osDisk.osType is {other:?}; expected Linux or Windows"
            )));
        }
    };
    // OS disk first, then data disks by LUN
    let mut arm_disks = vec![("os".to_string(), &p.storage_profile.os_disk)];
    let mut data: Vec<_> = p.storage_profile.data_disks.iter().collect();
    data.sort_by_key(|d| d.lun);
    for d in data {
        let lun = d.lun.ok_or_else(|| {
            bad(format!(
                "data disk {} has no `lun`; the export is incomplete",
                d.name
            ))
        })?;
        arm_disks.push((format!("lun{lun}"), d));
    }
    for k in i.disks.keys() {
        if !arm_disks.iter().any(|(n, _)| n == k) {
            let names: Vec<&str> = arm_disks.iter().map(|(n, _)| n.as_str()).collect();
            return Err(StepError::invalid_input(format!(
                "`disks` names {k:?}, which VM {} does not have (disks: {})",
                vm.name,
                names.join(", ")
            )));
        }
    }
    let mut disks = Vec::new();
    for (name, d) in arm_disks {
        let uri = d.vhd.as_ref().map(|v| v.uri.clone()).unwrap_or_default();
        let candidates = match (i.disks.get(&name), d.vhd.as_ref()) {
            (Some(p), _) => vec![p.clone()],
            (None, Some(v)) => export::blob_candidates(&v.uri).ok_or_else(|| {
                bad(format!(
                    "disk {} has vhd.uri {:?}, which names no blob",
                    d.name, v.uri
                ))
            })?,
            (None, None) if d.managed_disk.is_some() => {
                return Err(StepError::invalid_input(format!(
                    "{source}: disk {} ({name}) is a managed disk; export it to a page blob of site `{}` (`az disk grant-access` gives a SAS URL to copy from) and name that blob in `disks: {{ {name}: PATH }}`",
                    d.name, i.site
                )));
            }
            (None, None) => {
                return Err(bad(format!(
                    "disk {} has neither vhd.uri nor managedDisk",
                    d.name
                )));
            }
        };
        let (path, info) = match find_disk(&i.site, &candidates)? {
            Found::Disk(path, info) => (path, info),
            Found::Missing(last) => {
                return Err(StepError::new(
                    "not-found",
                    format!(
                        "disk {name} of {} ({}) is not in site `{}`: looked for {}{}",
                        vm.name,
                        if uri.is_empty() { &d.name } else { &uri },
                        i.site,
                        candidates.join(", "),
                        last.map(|m| format!(" ({m})")).unwrap_or_default()
                    ),
                ));
            }
        };
        disks.push(AzureDisk {
            name,
            arm_name: d.name.clone(),
            path,
            uri,
            size_bytes: info.virtual_size,
            snapshot: None,
        });
    }
    let nics_path = i.nics.clone().unwrap_or_else(|| match dir_of(&i.config) {
        "" => "nics.json".to_string(),
        d => format!("{d}/nics.json"),
    });
    let (arm_nics, nics_path) = match (&i.arm, p.network_profile.network_interfaces.is_empty()) {
        (_, true) => (Vec::new(), nics_path),
        (Some(a), false) => {
            let mut v = Vec::new();
            for r in &p.network_profile.network_interfaces {
                let text = a.get(&r.id, NIC_QUERY, &format!("network interface {}", r.id))?;
                v.extend(export::nics(&text).map_err(|e| {
                    StepError::invalid_input(export::problem(&format!("ARM {}", r.id), e))
                })?);
            }
            (v, "ARM networkInterfaces".to_string())
        }
        (None, false) => (
            export::nics(&read_export(xsite, &nics_path)?)
                .map_err(|e| StepError::invalid_input(export::problem(&nics_path, e)))?,
            nics_path,
        ),
    };
    let mut nics = Vec::new();
    for (n, r) in p.network_profile.network_interfaces.iter().enumerate() {
        let a = arm_nics
            .iter()
            .find(|a| a.id.eq_ignore_ascii_case(&r.id))
            .ok_or_else(|| {
                StepError::invalid_input(format!(
                    "{nics_path}: has no NIC {} (the VM's network interface {n}); export every NIC of the VM",
                    r.id
                ))
            })?;
        let ipc = a
            .properties
            .ip_configurations
            .iter()
            .find(|c| c.properties.primary.unwrap_or(false))
            .or(a.properties.ip_configurations.first())
            .ok_or_else(|| {
                StepError::invalid_input(format!(
                    "{nics_path}: NIC {} has no ipConfigurations",
                    a.name
                ))
            })?;
        let network = export::network_of(&ipc.properties.subnet.id).ok_or_else(|| {
            StepError::invalid_input(format!(
                "{nics_path}: NIC {}: subnet id {:?} is not …/virtualNetworks/VNET/subnets/SUBNET",
                a.name, ipc.properties.subnet.id
            ))
        })?;
        let mac = match a.properties.mac_address.as_deref() {
            Some(m) if !m.is_empty() => mac("macAddress", m).map_err(|m| {
                StepError::invalid_input(format!("{nics_path}: NIC {}: {m}", a.name))
            })?,
            _ => String::new(),
        };
        let is_static = ipc
            .properties
            .private_ip_allocation_method
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case("static"));
        nics.push(AzureNic {
            name: format!("nic{n}"),
            label: a.name.clone(),
            mac,
            network,
            subnet_id: ipc.properties.subnet.id.clone(),
            ip: ipc
                .properties
                .private_ip_address
                .clone()
                .filter(|_| is_static),
        });
    }
    Ok(AzureVm {
        name: vm.name,
        cpus: size.vcpus,
        memory_mib: size.memory_mib,
        firmware: if generation == 2 { "uefi" } else { "bios" }.into(),
        generation,
        guest_os: guest_os.into(),
        vm_size: size.name.into(),
        location: vm.location,
        resource_id: vm.id,
        disks,
        nics,
    })
}

pub struct Discover;

impl Step for Discover {
    type Input = DiscoverIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "discover",
            "Read an Azure VM's ARM export (az vm get-instance-view + NICs) and find its disks' page blobs in the source storage site",
        )
        .input(field::string("site").required().doc("The source region's storage site holding the disks' page blobs"))
        .input(field::string("export_site").doc("The site holding vm.json and nics.json (default: `site`)"))
        .input(field::string("config").doc("Path of vm.json (`az vm get-instance-view -g RG -n NAME`) in the export site"))
        .input(field::object("arm").sensitive().doc("Read the VM and its NICs from Azure Resource Manager instead: {endpoint, token, subscription, resource_group, vm} (give the token through a secret)"))
        .input(field::string("nics").doc("Path of nics.json (`az network nic show --ids …`; default: next to vm.json)"))
        .input(field::object("disks").doc("Disk (os, lun0, …) → its page blob's path in `site`, instead of the one in its URI"))
        .output(field::object("vm").doc("The VM: name, cpus, memory_mib, firmware, generation, vm_size, location, disks, nics"))
    }
    fn plan(_: &Context, i: DiscoverIn) -> Result<Plan, StepError> {
        let vm = discover(&i)?;
        let total: u64 = vm.disks.iter().map(|d| d.size_bytes).sum();
        Ok(Plan::new()
            .action(
                Action::read(
                    format!("vm/{}", vm.name),
                    format!(
                        "read {}: {} in {}, generation {} ({}), {} disks ({}), {} NICs",
                        match &i.arm {
                            Some(a) => format!("{} from ARM", a.vm),
                            None => i.config.clone(),
                        },
                        vm.vm_size,
                        vm.location,
                        vm.generation,
                        vm.firmware,
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

#[derive(Deserialize)]
pub struct CaptureIn {
    site: String,
    vm: AzureVm,
    /// `auto` (default), `full` or `hash`.
    #[serde(default)]
    mode: String,
}

/// How one disk's changes will be found, decided in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "kebab-case")]
enum Route {
    Full { why: String },
    Hash { point: String, why: String },
    Diff { point: String, since: String },
}

/// A baseline snapshot the new point replaces: deleted by `release-snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    disk: String,
    path: String,
    snapshot: String,
    point: String,
}

/// The snapshot a point recorded for disk `disk`.
fn recorded_snapshot(p: &PointInfo, disk: &str) -> Option<String> {
    p.meta["disks"]
        .as_array()?
        .iter()
        .find(|x| x["name"] == disk)?["snapshot"]
        .as_str()
        .map(str::to_string)
}

fn routes(i: &CaptureIn, points: &[PointInfo]) -> Result<BTreeMap<String, Route>, StepError> {
    check_mode(&i.mode)?;
    let mut out = BTreeMap::new();
    for d in &i.vm.disks {
        let previous = previous_point(points, &d.name, d.size_bytes);
        let route = match (i.mode.as_str(), previous) {
            (_, None) => Route::Full {
                why: "first copy: allocation map".into(),
            },
            ("full", Some(_)) => Route::Full {
                why: "full copy (mode: full)".into(),
            },
            ("hash", Some(p)) => Route::Hash {
                point: p.id.clone(),
                why: "mode: hash".into(),
            },
            (_, Some(p)) => match recorded_snapshot(p, &d.name) {
                None => Route::Hash {
                    point: p.id.clone(),
                    why: format!("point {} recorded no snapshot of {}", p.id, d.name),
                },
                // ask now whether the storage can diff against that snapshot
                Some(since) => match transfer::changed_extents(&i.site, &d.path, &since) {
                    Ok(_) => Route::Diff {
                        point: p.id.clone(),
                        since,
                    },
                    Err(e) if ["unsupported", "not-found"].contains(&e.code.as_str()) => {
                        Route::Hash {
                            point: p.id.clone(),
                            why: e.message,
                        }
                    }
                    Err(e) => return Err(e),
                },
            },
        };
        out.insert(d.name.clone(), route);
    }
    Ok(out)
}

fn route_line(r: &Route) -> String {
    match r {
        Route::Full { why } => why.clone(),
        Route::Hash { point, why } => format!("hash comparison with point {point} ({why})"),
        Route::Diff { point, since } => {
            format!("page-range diff since snapshot {since} (point {point})")
        }
    }
}

#[derive(Serialize, Deserialize)]
struct CapturePlan {
    routes: BTreeMap<String, Route>,
}

/// Only the ranges inside the disk: a fixed VHD page blob ends with its
/// 512-byte footer, which is not guest data.
fn clamp(list: Vec<Extent>, size: u64) -> Vec<Extent> {
    list.into_iter()
        .filter(|e| e.offset < size && e.length > 0)
        .map(|mut e| {
            e.length = e.length.min(size - e.offset);
            e
        })
        .collect()
}

pub struct Capture;

impl Step for Capture {
    type Input = CaptureIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "capture",
            "Snapshot every disk blob at once, then find each disk's changes: page-range diff since the last point's snapshot, the allocation map for the first copy, else hash comparison",
        )
        .input(field::string("site").required().doc("The source region's storage site"))
        .input(field::object("vm").required().doc("The VM, as `discover` returns it"))
        .input(field::string("mode").doc("auto (default), full or hash"))
        .output(field::list("disks").doc("Per disk: name, path (its snapshot), changes, bytes, source — the input of `ship`"))
        .output(field::object("vm").doc("The VM with each disk's snapshot id: give it to `snapshot`, so the next capture has its baseline"))
        .output(field::list("previous").doc("The baseline snapshots the new point replaces: give them to `release-snapshots`"))
        .output(field::integer("bytes_to_move").doc("Bytes the host will read (an upper bound for hash comparison)"))
    }
    fn plan(_: &Context, i: CaptureIn) -> Result<Plan, StepError> {
        let points = transfer::points(&i.vm.name)?;
        let routes = routes(&i, &points)?;
        let lines: Vec<String> =
            i.vm.disks
                .iter()
                .map(|d| {
                    format!(
                        "{} ({}, {}): {}",
                        d.name,
                        d.path,
                        mib(d.size_bytes),
                        routes.get(&d.name).map(route_line).unwrap_or_default()
                    )
                })
                .collect();
        Ok(Plan::new()
            .action(
                Action::create(
                    format!("vm/{}/snapshot", i.vm.name),
                    format!(
                        "snapshot the {} disk blobs of {} together, then read them: {}",
                        i.vm.disks.len(),
                        i.vm.name,
                        lines.join("; ")
                    ),
                )
                .payload(CapturePlan { routes }),
            )
            .output_after_apply("disks")
            .output_after_apply("vm")
            .output_after_apply("previous")
            .output_after_apply("bytes_to_move"))
    }
    fn apply(_: &Context, i: CaptureIn, a: &Action) -> Result<Outputs, StepError> {
        let plan: CapturePlan = a.payload_as()?;
        let points = transfer::points(&i.vm.name)?;
        // all snapshots first, close together: one point in time for the VM
        let mut vm = i.vm.clone();
        let mut snapshots = Vec::new();
        for d in &mut vm.disks {
            match transfer::snapshot_disk(&i.site, &d.path) {
                Ok(id) => {
                    d.snapshot = Some(id.clone());
                    snapshots.push(Some(id));
                }
                Err(e) if e.code == "unsupported" => {
                    lifeboat_plugin_sdk::log::warn(
                        "no snapshot: the disk is read as it is (stop its writer for a consistent copy)",
                        &[("vm", &i.vm.name), ("disk", &d.name), ("why", &e.message)],
                    );
                    snapshots.push(None);
                }
                Err(e) => return Err(e),
            }
        }
        let mut disks = Vec::new();
        let mut previous = Vec::new();
        for (d, snap) in vm.disks.iter().zip(&snapshots) {
            let read = match snap {
                Some(id) => transfer::snapshot_path(&d.path, id),
                None => d.path.clone(),
            };
            let route = plan.routes.get(&d.name).cloned().unwrap_or(Route::Full {
                why: "no route planned".into(),
            });
            let allocated = || -> Result<u64, StepError> {
                Ok(transfer::inspect_disk(&i.site, &read)?.allocated)
            };
            let (changes, bytes, source) = match &route {
                Route::Full { .. } => (Changes::Full, allocated()?, route_line(&route)),
                Route::Hash { .. } => (Changes::HashCompare, allocated()?, route_line(&route)),
                Route::Diff { point, since } => {
                    match transfer::changed_extents(&i.site, &read, since) {
                        Ok(list) => {
                            let list = clamp(list, d.size_bytes);
                            let written = list
                                .iter()
                                .filter(|e| e.kind == ExtentKind::Data)
                                .map(|e| e.length)
                                .sum();
                            let cleared = list
                                .iter()
                                .filter(|e| e.kind == ExtentKind::Cleared)
                                .count();
                            let line = format!(
                                "page-range diff since snapshot {since} (point {point}): {} ranges written, {cleared} cleared",
                                list.len() - cleared
                            );
                            (Changes::Extents(list), written, line)
                        }
                        Err(e) => {
                            let line = format!(
                                "hash comparison with point {point}: the page-range diff failed ({})",
                                e.message
                            );
                            lifeboat_plugin_sdk::log::warn(
                                "no page-range diff: hash comparison",
                                &[("vm", &i.vm.name), ("disk", &d.name), ("why", &e.message)],
                            );
                            (Changes::HashCompare, allocated()?, line)
                        }
                    }
                }
            };
            if let Route::Hash { why, .. } = &route {
                lifeboat_plugin_sdk::log::info(
                    "hash comparison",
                    &[("vm", &i.vm.name), ("disk", &d.name), ("why", why)],
                );
            }
            // the snapshot the latest point recorded: replaced by this one
            if snap.is_some()
                && let Some(p) = previous_point(&points, &d.name, d.size_bytes)
                && let Some(s) = recorded_snapshot(p, &d.name)
            {
                previous.push(Baseline {
                    disk: d.name.clone(),
                    path: d.path.clone(),
                    snapshot: s,
                    point: p.id.clone(),
                });
            }
            disks.push(CapturedDisk {
                name: d.name.clone(),
                path: read,
                changes,
                bytes,
                source,
            });
        }
        let total: u64 = disks.iter().map(|d| d.bytes).sum();
        Ok(Outputs::new()
            .set("disks", &disks)
            .set("vm", &vm)
            .set("previous", &previous)
            .set("bytes_to_move", total))
    }
}

// --------------------------------------------------------- release-snapshots

#[derive(Deserialize)]
pub struct ReleaseIn {
    site: String,
    previous: Vec<Baseline>,
    /// The new point (`steps.snapshot.outputs.point`): only once it is sealed
    /// are the old baselines free to go.
    #[serde(default)]
    #[allow(dead_code)]
    after: Option<String>,
}

pub struct ReleaseSnapshots;

impl Step for ReleaseSnapshots {
    type Input = ReleaseIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "release-snapshots",
            "Delete the disk snapshots the new recovery point replaced as the next capture's baseline",
        )
        .input(field::string("site").required().doc("The source region's storage site"))
        .input(field::list("previous").required().doc("`capture`'s previous output"))
        .input(field::string("after").doc("The new point (steps.snapshot.outputs.point): run once it is sealed"))
        .output(field::integer("released").doc("Snapshots deleted"))
    }
    fn plan(_: &Context, i: ReleaseIn) -> Result<Plan, StepError> {
        let mut p = Plan::new();
        for b in &i.previous {
            p = p.action(
                Action::delete(
                    format!("blob/{}/{}?snapshot={}", i.site, b.path, b.snapshot),
                    format!(
                        "delete snapshot {} of {} ({}): point {}'s baseline, replaced by the new point's snapshot",
                        b.snapshot, b.path, b.disk, b.point
                    ),
                )
                .payload(b),
            );
        }
        Ok(p.output("released", i.previous.len()))
    }
    fn apply(_: &Context, i: ReleaseIn, a: &Action) -> Result<Outputs, StepError> {
        let b: Baseline = a.payload_as()?;
        transfer::delete_snapshot(&i.site, &b.path, &b.snapshot)?;
        Ok(Outputs::new().set("released", i.previous.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_is_not_guest_data() {
        let l = clamp(
            vec![
                Extent::data(0, 512),
                Extent::data(1024, 1024),
                Extent::data(2048, 512),
                Extent {
                    offset: 512,
                    length: 512,
                    kind: ExtentKind::Cleared,
                },
            ],
            1536,
        );
        assert_eq!(
            l.iter().map(|e| (e.offset, e.length)).collect::<Vec<_>>(),
            [(0, 512), (1024, 512), (512, 512)]
        );
    }

    #[test]
    fn route_lines() {
        assert_eq!(
            route_line(&Route::Diff {
                point: "p1".into(),
                since: "2026-01-01T00:00:00.0000000Z".into()
            }),
            "page-range diff since snapshot 2026-01-01T00:00:00.0000000Z (point p1)"
        );
        assert!(
            route_line(&Route::Hash {
                point: "p1".into(),
                why: "gone".into()
            })
            .starts_with("hash comparison with point p1 (gone)")
        );
    }
}
