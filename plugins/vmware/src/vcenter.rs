//! vCenter mode: the VM is read from vCenter's SOAP API (`/sdk`) and its disks
//! from a folder site holding the datastores, `DATASTORE/folder/file.vmdk`.
//!
//! vCenter is reached with [`lifeboat_vmware_api`] over the host's HTTP
//! ([`HostHttp`]): only from `apply`, because the host allows POST (SOAP)
//! only there. The password is an input of its own, declared sensitive, and
//! never enters a payload, an output, a log line or an error message.

use std::collections::BTreeMap;
use std::time::Duration;

use lifeboat_plugin_sdk::StepError;
use lifeboat_plugin_sdk::http;
use lifeboat_plugin_sdk::transfer::{Changes, DiskInfo, Extent, PointInfo};
use lifeboat_vmware_api::{Client, MoRef, Response, Transport, VmInventory, VmwareError};
use serde::{Deserialize, Serialize};

use crate::vmx::{Disk, Nic, VcenterFacts, VmConfig};
use crate::{Captured, mib};

/// How many times a vCenter task (reconfigure, snapshot) is polled; with
/// [`HostHttp::pause`] that is a little over ten minutes.
const MAX_TASK_POLLS: u32 = 320;

// ------------------------------------------------------------------ inputs

/// The `vcenter` input: where the VM lives and who logs in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VcenterIn {
    /// The SDK endpoint, `https://vc.example.com/sdk`.
    pub url: String,
    pub user: String,
    /// The VM's inventory name (needed by `discover`).
    #[serde(default)]
    pub vm: String,
    /// Refused: the password is the step's sensitive `password` input, so
    /// that plans hide it. Never serialized.
    #[serde(default, skip_serializing)]
    pub password: Option<serde_json::Value>,
}

impl VcenterIn {
    /// Checks the input before anything is planned; `need_vm` for `discover`.
    pub fn check(&self, password: Option<&str>, need_vm: bool) -> Result<(), StepError> {
        if self.password.is_some() {
            return Err(StepError::invalid_input(
                "`vcenter` must not hold the password: give it as the step's `password` input \
                 (declared sensitive, so plans hide it), e.g. `password: ${{ secrets.vcenter_password }}`",
            ));
        }
        let rest = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"))
            .ok_or_else(|| {
                StepError::invalid_input(format!(
                    "`vcenter.url` {:?} is not an http(s) URL; give the SDK endpoint, e.g. https://vc.example.com/sdk",
                    self.url
                ))
            })?;
        if rest.is_empty() || rest.starts_with('/') || rest.contains('@') {
            return Err(StepError::invalid_input(format!(
                "`vcenter.url` {:?} names no host (credentials do not belong in the URL)",
                self.url
            )));
        }
        if self.user.trim().is_empty() {
            return Err(StepError::invalid_input("`vcenter.user` is empty"));
        }
        if need_vm && self.vm.trim().is_empty() {
            return Err(StepError::invalid_input(
                "`vcenter.vm` is empty: give the VM's name as vCenter shows it",
            ));
        }
        if password.is_none_or(str::is_empty) {
            return Err(StepError::invalid_input(
                "vCenter mode needs the `password` input, e.g. `password: ${{ secrets.vcenter_password }}`",
            ));
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ transport

/// [`Transport`] over the host's HTTP (`wasi:http`): the workflow's
/// `grants.http` must name vCenter's host. Keeps the last error of the SDK so
/// that its code (`denied`, `unavailable`) survives the vSphere client.
#[derive(Debug, Default)]
pub struct HostHttp {
    last_error: Option<StepError>,
}

impl Transport for HostHttp {
    fn post(
        &mut self,
        url: &str,
        headers: &[(String, String)],
        body: &str,
    ) -> Result<Response, String> {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match http::send("POST", url, &headers, body.as_bytes()) {
            Ok(r) => {
                self.last_error = None;
                Ok(Response {
                    status: r.status,
                    body: String::from_utf8_lossy(&r.body).into_owned(),
                    headers: r.headers,
                })
            }
            Err(e) => {
                let message = e.message.clone();
                self.last_error = Some(e);
                Err(message)
            }
        }
    }

    fn pause(&mut self, attempt: u32) {
        // 100 ms, growing to 2 s
        let ms = (100u64 << attempt.min(5)).min(2000);
        std::thread::sleep(Duration::from_millis(ms));
    }
}

// ------------------------------------------------------------------ errors

/// `text` without the password (raw or XML-escaped).
pub fn scrub(text: &str, password: &str) -> String {
    if password.is_empty() {
        return text.to_string();
    }
    let escaped = lifeboat_vmware_api::xml_escape(password);
    text.replace(password, "********")
        .replace(&escaped, "********")
}

/// A vSphere error as a step error, in the user's terms. `transport` is the
/// SDK's error of the last request, if it failed.
pub fn step_error(
    doing: &str,
    url: &str,
    e: VmwareError,
    transport: Option<StepError>,
    password: &str,
) -> StepError {
    let mut out = match e {
        VmwareError::Transport { message, .. } => match transport {
            Some(t) => StepError {
                code: t.code,
                message: format!("{doing}: cannot reach vCenter at {url}: {}", t.message),
                retryable: t.retryable,
            },
            None => StepError::retryable(
                "unavailable",
                format!("{doing}: cannot reach vCenter at {url}: {message}"),
            ),
        },
        VmwareError::Login {
            user,
            fault_type,
            message,
        } => StepError::new(
            "login-failed",
            format!(
                "vCenter at {url} refused the login of {user:?} ({fault_type}: {message}); \
                 check `vcenter.user` and the password"
            ),
        ),
        VmwareError::NotFound { kind, name } => StepError::new(
            "not-found",
            format!("{doing}: vCenter at {url} has no {kind} named {name:?}; check `vcenter.vm`"),
        ),
        e @ VmwareError::Ambiguous { .. } => StepError::new(
            "conflict",
            format!("{doing}: {e}; rename the VM in vCenter so that its name is unique"),
        ),
        VmwareError::Fault {
            fault_type,
            message,
        } => {
            let retry = matches!(
                fault_type.as_str(),
                "TaskInProgress" | "HostCommunication" | "HostNotConnected"
            );
            let text = format!("{doing}: vCenter answered {fault_type}: {message}");
            if retry {
                StepError::retryable("vcenter-busy", text)
            } else {
                StepError::new("vcenter-fault", text)
            }
        }
        e @ VmwareError::Http { status, .. } => {
            let text = format!("{doing}: {e}");
            if matches!(status, 429 | 502 | 503 | 504) {
                StepError::retryable("unavailable", text)
            } else {
                StepError::new("vcenter-error", text)
            }
        }
        e @ VmwareError::TaskFailed { .. } => {
            StepError::new("vcenter-task-failed", format!("{doing}: {e}"))
        }
        e @ VmwareError::TaskTimeout { .. } => {
            StepError::retryable("timeout", format!("{doing}: {e}"))
        }
        e @ VmwareError::Parse { .. } => StepError::new("vcenter-error", format!("{doing}: {e}")),
    };
    out.message = scrub(&out.message, password);
    out
}

// ------------------------------------------------------------------ session

/// A logged-in vCenter session.
pub struct Session {
    pub vc: Client<HostHttp>,
    url: String,
    password: String,
}

impl Session {
    /// Logs in (the session cookie is kept for the following calls).
    pub fn open(v: &VcenterIn, password: &str) -> Result<Session, StepError> {
        let mut s = Session {
            vc: Client::new(HostHttp::default(), v.url.clone()).with_max_task_polls(MAX_TASK_POLLS),
            url: v.url.clone(),
            password: password.to_string(),
        };
        if let Err(e) = s.vc.login(&v.user, password) {
            return Err(s.error("log in to vCenter", e));
        }
        Ok(s)
    }

    /// A vSphere error of this session as a step error, password scrubbed.
    pub fn error(&mut self, doing: &str, e: VmwareError) -> StepError {
        let transport = self.vc.transport_mut().last_error.take();
        step_error(doing, &self.url, e, transport, &self.password)
    }

    /// Ends the session; a failure to log out only costs a session slot.
    pub fn close(mut self) {
        let _ = self.vc.logout();
    }
}

// ------------------------------------------------------------------ discover

/// `[DATASTORE] folder/file.vmdk` → `DATASTORE/folder/file.vmdk`: where the
/// datastore site holds the file.
pub fn site_path(datastore_path: &str) -> Result<String, String> {
    let bad = |why: &str| format!("backing file {datastore_path:?}: {why}");
    let rest = datastore_path
        .trim()
        .strip_prefix('[')
        .ok_or_else(|| bad("not of the form `[DATASTORE] folder/file.vmdk`"))?;
    let (ds, file) = rest
        .split_once(']')
        .ok_or_else(|| bad("no `]` after the datastore name"))?;
    let (ds, file) = (ds.trim(), file.trim());
    if ds.is_empty() || ds == "." || ds == ".." || ds.contains(['/', '\\']) {
        return Err(bad("the datastore name cannot be a folder of the site"));
    }
    if file.is_empty()
        || file.starts_with('/')
        || file.contains('\\')
        || file.split('/').any(|c| c.is_empty() || c == "..")
    {
        return Err(bad("the file is not a relative path inside its datastore"));
    }
    Ok(format!("{ds}/{file}"))
}

/// The VM as the other steps know it, from vCenter's inventory; each disk's
/// image is looked up in the datastore site with `inspect`.
pub fn vm_config(
    url: &str,
    moref: &MoRef,
    inv: &VmInventory,
    site: &str,
    mut inspect: impl FnMut(&str) -> Result<DiskInfo, StepError>,
) -> Result<VmConfig, StepError> {
    if inv.disks.is_empty() {
        return Err(StepError::invalid_input(format!(
            "vCenter VM {} ({}) has no virtual disks",
            inv.name, moref.value
        )));
    }
    let mut disks = Vec::new();
    for d in &inv.disks {
        let name = if d.controller.is_empty() {
            format!("disk{}", d.key)
        } else {
            d.controller.clone()
        };
        let path = site_path(&d.file_name).map_err(|e| {
            StepError::invalid_input(format!("{} disk {name} ({}): {e}", inv.name, d.label))
        })?;
        let info = inspect(&path).map_err(|e| {
            StepError::new(
                &e.code,
                format!(
                    "{} disk {name} ({}, {}): {}; the site `{site}` must hold the datastores as folders, DATASTORE/folder/file.vmdk",
                    inv.name, d.label, d.file_name, e.message
                ),
            )
        })?;
        if info.virtual_size != d.capacity_bytes {
            return Err(StepError::invalid_input(format!(
                "{} disk {name} ({}): vCenter says {} bytes, but {path} in site `{site}` is {} bytes ({}); the site does not hold this disk",
                inv.name, d.file_name, d.capacity_bytes, info.virtual_size, info.format
            )));
        }
        disks.push(Disk {
            name,
            path,
            format: info.format,
            size_bytes: info.virtual_size,
            key: Some(d.key),
            datastore_path: Some(d.file_name.clone()),
            change_id: d.change_id.clone(),
        });
    }
    let nics = inv
        .nics
        .iter()
        .enumerate()
        .map(|(i, n)| Nic {
            name: format!("ethernet{i}"),
            mac: n.mac.to_ascii_lowercase(),
            network: n.network.clone(),
            ip: None,
        })
        .collect();
    Ok(VmConfig {
        name: inv.name.clone(),
        cpus: inv.cpus,
        memory_mib: inv.memory_mib,
        firmware: match inv.firmware.as_str() {
            "efi" => "uefi".to_string(),
            "" => "bios".to_string(),
            other => other.to_string(),
        },
        guest_os: inv.guest_id.clone(),
        disks,
        nics,
        vcenter: Some(VcenterFacts {
            url: url.to_string(),
            moref: moref.value.clone(),
            change_tracking: inv.change_tracking,
        }),
    })
}

// ------------------------------------------------------------------ capture

/// How one disk's changes will be found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "route", rename_all = "kebab-case")]
pub enum Route {
    /// No earlier point: the allocation map (or `mode: full`).
    Full { why: String },
    /// Hash comparison with `point`, for the reason `why`.
    Hash { point: String, why: String },
    /// `QueryChangedDiskAreas` since the changeId recorded with `point`.
    Cbt { point: String, change_id: String },
}

impl Route {
    /// One line for a plan.
    pub fn describe(&self) -> String {
        match self {
            Route::Full { why } => why.clone(),
            Route::Hash { point, why } => format!("{why}: hash comparison with point {point}"),
            Route::Cbt { point, .. } => format!(
                "QueryChangedDiskAreas since point {point}'s changeId (hash comparison if vCenter cannot answer)"
            ),
        }
    }
}

/// The changeId recorded for `disk` in a point's `meta`, if its device key
/// is still the disk's.
fn recorded_change_id(p: &PointInfo, disk: &Disk) -> Option<String> {
    let d = p.meta.get("disks")?.as_array()?.iter().find(|d| {
        d.get("name").and_then(|n| n.as_str()) == Some(disk.name.as_str())
            && d.get("key").and_then(|k| k.as_i64()) == disk.key.map(i64::from)
    })?;
    d.get("change_id")
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

/// Which way `disk`'s changes are found, given the VM's points.
pub fn route(mode: &str, disk: &Disk, points: &[PointInfo]) -> Route {
    let previous = points.iter().rev().find(|p| {
        p.disks
            .iter()
            .any(|x| x.name == disk.name && x.virtual_size == disk.size_bytes)
    });
    let Some(p) = previous else {
        return Route::Full {
            why: "first copy: allocation map".into(),
        };
    };
    if mode == "full" {
        return Route::Full {
            why: "full copy (mode: full)".into(),
        };
    }
    if mode == "hash" {
        return Route::Hash {
            point: p.id.clone(),
            why: "mode: hash".into(),
        };
    }
    match recorded_change_id(p, disk) {
        Some(change_id) => Route::Cbt {
            point: p.id.clone(),
            change_id,
        },
        None => Route::Hash {
            point: p.id.clone(),
            why: format!("no changeId recorded with point {}", p.id),
        },
    }
}

/// Faults that say vCenter cannot answer `QueryChangedDiskAreas` at all.
const NO_METHOD: &[&str] = &["MethodNotFound", "NotImplemented", "NotSupported"];

/// Faults that say the recorded changeId cannot be used (tracking was reset,
/// the disk was replaced or resized).
const BAD_CHANGE_ID: &[&str] = &["FileFault", "InvalidArgument", "InvalidState"];

/// Finds one disk's changes against the replication snapshot `snapshot`.
/// `allocated` gives the bytes a full copy or a hash comparison reads.
/// Errors other than "cannot answer" and "bad changeId" are returned.
pub fn capture_disk<T: Transport>(
    vc: &mut Client<T>,
    vm: &MoRef,
    snapshot: &MoRef,
    disk: &Disk,
    route: &Route,
    allocated: impl FnOnce() -> Result<u64, StepError>,
) -> Result<Result<Captured, VmwareError>, StepError> {
    let hash = |point: &str, why: String, allocated: u64| Captured {
        name: disk.name.clone(),
        path: disk.path.clone(),
        changes: Changes::HashCompare,
        bytes: allocated,
        source: format!("{why}: hash comparison with point {point}"),
        snapshot: None,
        change_id: None,
    };
    let c = match route {
        Route::Full { why } => Captured {
            name: disk.name.clone(),
            path: disk.path.clone(),
            changes: Changes::Full,
            bytes: allocated()?,
            source: why.clone(),
            snapshot: None,
            change_id: None,
        },
        Route::Hash { point, why } => hash(point, why.clone(), allocated()?),
        Route::Cbt { point, change_id } => {
            let key = disk.key.ok_or_else(|| {
                StepError::invalid_input(format!(
                    "disk {} has no vCenter device key; discover the VM through vCenter",
                    disk.name
                ))
            })?;
            match vc.query_all_changed_disk_areas(vm, snapshot, key, disk.size_bytes, change_id) {
                Ok(areas) => {
                    let mut list = Vec::new();
                    for (start, length) in areas {
                        if start
                            .checked_add(length)
                            .is_none_or(|end| end > disk.size_bytes)
                        {
                            return Err(StepError::new(
                                "vcenter-error",
                                format!(
                                    "QueryChangedDiskAreas: changed area {start}+{length} lies beyond the end of disk {} ({} bytes)",
                                    disk.name, disk.size_bytes
                                ),
                            ));
                        }
                        if length > 0 {
                            list.push(Extent::data(start, length));
                        }
                    }
                    let bytes = list.iter().map(|e| e.length).sum();
                    Captured {
                        name: disk.name.clone(),
                        path: disk.path.clone(),
                        source: format!(
                            "changed-block tracking: {} areas since point {point} (QueryChangedDiskAreas)",
                            list.len()
                        ),
                        changes: Changes::Extents(list),
                        bytes,
                        snapshot: None,
                        change_id: None,
                    }
                }
                Err(VmwareError::Fault { fault_type, .. })
                    if NO_METHOD.contains(&fault_type.as_str()) =>
                {
                    hash(
                        point,
                        format!("vCenter cannot answer QueryChangedDiskAreas ({fault_type})"),
                        allocated()?,
                    )
                }
                Err(VmwareError::Fault {
                    fault_type,
                    message,
                }) if BAD_CHANGE_ID.contains(&fault_type.as_str()) => hash(
                    point,
                    format!(
                        "vCenter refused the changeId recorded with point {point} ({fault_type}: {message})"
                    ),
                    allocated()?,
                ),
                Err(e) => return Ok(Err(e)),
            }
        }
    };
    Ok(Ok(c))
}

/// The payload of capture's snapshot action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotPlan {
    pub op: String,
    pub name: String,
    pub quiesce: bool,
    pub routes: BTreeMap<String, Route>,
}

/// A replication snapshot: taken by `capture`, removed by `snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The VMware snapshot's name, `lifeboat-N`.
    pub name: String,
    /// Its managed object id, e.g. `snapshot-42`.
    pub moref: String,
    /// The VM's managed object id.
    pub vm: String,
}

/// What `snapshot` does in vCenter mode, from capture's `disks`.
#[derive(Debug, Clone)]
pub struct Replication {
    pub snapshot: SnapshotRef,
    /// Per disk, the changeId read just before the snapshot was taken (none
    /// when vCenter reported none).
    pub change_ids: BTreeMap<String, Option<String>>,
}

/// The summary of capture's snapshot action.
pub fn snapshot_summary(vm: &VmConfig, plan: &SnapshotPlan) -> String {
    let disks: Vec<String> = vm
        .disks
        .iter()
        .map(|d| {
            let how = plan
                .routes
                .get(&d.name)
                .map(Route::describe)
                .unwrap_or_default();
            format!("{} ({}) {how}", d.name, mib(d.size_bytes))
        })
        .collect();
    format!(
        "take the replication snapshot {} of {} ({}), then per disk: {}",
        plan.name,
        vm.name,
        if plan.quiesce {
            "quiesced: app-consistent"
        } else {
            "not quiesced: crash-consistent"
        },
        disks.join("; ")
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use lifeboat_plugin_sdk::transfer::PointDisk;

    #[test]
    fn datastore_paths_map_into_the_site() {
        assert_eq!(
            site_path("[LocalDS_0] DC0_H0_VM0/disk1.vmdk").unwrap(),
            "LocalDS_0/DC0_H0_VM0/disk1.vmdk"
        );
        assert_eq!(
            site_path("[datastore 1] web 01/web01_1.vmdk").unwrap(),
            "datastore 1/web 01/web01_1.vmdk"
        );
        for bad in [
            "LocalDS_0/disk.vmdk",
            "[LocalDS_0 disk.vmdk",
            "[] vm/disk.vmdk",
            "[..] vm/disk.vmdk",
            "[a/b] vm/disk.vmdk",
            "[ds] ../etc/passwd",
            "[ds] /vmfs/volumes/x.vmdk",
            "[ds] ",
            "[ds] vm//disk.vmdk",
        ] {
            assert!(site_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_password_is_scrubbed() {
        assert_eq!(scrub("a s3cr&t b", "s3cr&t"), "a ******** b");
        assert_eq!(scrub("a s3cr&amp;t b", "s3cr&t"), "a ******** b");
        let e = step_error(
            "log in",
            "http://127.0.0.1:1/sdk",
            VmwareError::Parse {
                method: "Login".into(),
                detail: "echo pw=s3cr&t".into(),
            },
            None,
            "s3cr&t",
        );
        assert!(!e.message.contains("s3cr&t"), "{}", e.message);
    }

    fn inventory() -> VmInventory {
        VmInventory {
            name: "DC0_H0_VM0".into(),
            cpus: 2,
            memory_mib: 2048,
            firmware: "efi".into(),
            guest_id: "otherGuest".into(),
            change_tracking: true,
            disks: vec![lifeboat_vmware_api::Disk {
                key: 204,
                label: "Hard disk 1".into(),
                capacity_bytes: 1 << 20,
                file_name: "[LocalDS_0] DC0_H0_VM0/disk1.vmdk".into(),
                controller: "scsi0:0".into(),
                change_id: Some("52 aa/3".into()),
            }],
            nics: vec![lifeboat_vmware_api::Nic {
                label: "Network adapter 1".into(),
                mac: "00:0C:29:01:02:03".into(),
                network: "DC0_DVPG0".into(),
            }],
        }
    }

    #[test]
    fn inventory_becomes_the_vm_config() {
        let vm = MoRef::new("VirtualMachine", "vm-57");
        let mut asked = vec![];
        let cfg = vm_config("http://vc/sdk", &vm, &inventory(), "ds", |p| {
            asked.push(p.to_string());
            Ok(DiskInfo {
                format: "VMDK (monolithicSparse)".into(),
                virtual_size: 1 << 20,
                allocated: 65536,
            })
        })
        .unwrap();
        assert_eq!(asked, ["LocalDS_0/DC0_H0_VM0/disk1.vmdk"]);
        assert_eq!(cfg.firmware, "uefi");
        assert_eq!(cfg.disks[0].name, "scsi0:0");
        assert_eq!(cfg.disks[0].key, Some(204));
        assert_eq!(cfg.nics[0].name, "ethernet0");
        assert_eq!(cfg.nics[0].mac, "00:0c:29:01:02:03");
        let facts = cfg.vcenter.as_ref().unwrap();
        assert_eq!(
            (facts.moref.as_str(), facts.change_tracking),
            ("vm-57", true)
        );

        let err = vm_config("http://vc/sdk", &vm, &inventory(), "ds", |_| {
            Ok(DiskInfo {
                format: "raw".into(),
                virtual_size: 2 << 20,
                allocated: 0,
            })
        })
        .unwrap_err();
        assert!(
            err.message.contains("does not hold this disk"),
            "{}",
            err.message
        );
    }

    fn disk() -> Disk {
        Disk {
            name: "scsi0:0".into(),
            path: "LocalDS_0/DC0_H0_VM0/disk1.vmdk".into(),
            format: "VMDK".into(),
            size_bytes: 17_179_869_184,
            key: Some(2000),
            datastore_path: None,
            change_id: None,
        }
    }

    fn point(change_id: Option<&str>) -> PointInfo {
        PointInfo {
            id: "0123456789abcdef".into(),
            vm: "web01".into(),
            created: "2026-01-01T00:00:00Z".into(),
            consistency: "crash".into(),
            parent: None,
            disks: vec![PointDisk {
                name: "scsi0:0".into(),
                virtual_size: 17_179_869_184,
                data_bytes: 0,
                changes: "full".into(),
            }],
            meta: serde_json::json!({"disks": [{"name": "scsi0:0", "key": 2000, "change_id": change_id}]}),
        }
    }

    #[test]
    fn routes() {
        assert!(matches!(route("", &disk(), &[]), Route::Full { .. }));
        assert_eq!(
            route("", &disk(), &[point(Some("52 3c/4417"))]),
            Route::Cbt {
                point: "0123456789abcdef".into(),
                change_id: "52 3c/4417".into()
            }
        );
        assert!(matches!(
            route("", &disk(), &[point(None)]),
            Route::Hash { .. }
        ));
        assert!(matches!(
            route("hash", &disk(), &[point(Some("x"))]),
            Route::Hash { .. }
        ));
        // another device key: the changeId is not this disk's
        let mut other = disk();
        other.key = Some(2001);
        assert!(matches!(
            route("", &other, &[point(Some("x"))]),
            Route::Hash { .. }
        ));
    }

    /// Answers every request with one canned SOAP answer.
    struct Canned(u16, String);

    impl Transport for Canned {
        fn post(&mut self, _: &str, _: &[(String, String)], _: &str) -> Result<Response, String> {
            Ok(Response {
                status: self.0,
                headers: vec![],
                body: self.1.clone(),
            })
        }
    }

    fn recording(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/recordings/vmware")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn capture_with(status: u16, body: String) -> Result<Captured, VmwareError> {
        let mut vc = Client::new(Canned(status, body), "http://vc/sdk");
        let route = route("", &disk(), &[point(Some("52 3c/4417"))]);
        capture_disk(
            &mut vc,
            &MoRef::new("VirtualMachine", "vm-1"),
            &MoRef::new("VirtualMachineSnapshot", "snapshot-2"),
            &disk(),
            &route,
            || Ok(4096),
        )
        .unwrap()
    }

    #[test]
    fn a_change_list_is_used_when_vcenter_answers() {
        let c = capture_with(200, recording("query-changed-disk-areas-empty.xml")).unwrap();
        assert_eq!(c.changes, Changes::Extents(vec![]));
        assert!(
            c.source.starts_with("changed-block tracking: 0 areas"),
            "{}",
            c.source
        );
    }

    #[test]
    fn falls_back_to_hash_comparison() {
        // vcsim's answer, verbatim: it has no QueryChangedDiskAreas
        let missing = concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
            r#"<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode>"#,
            r#"<faultstring>VirtualMachine:vm-57 does not implement: QueryChangedDiskAreas</faultstring>"#,
            r#"<detail><MethodNotFoundFault xmlns="urn:vim25" xsi:type="MethodNotFound"><receiver type="VirtualMachine">vm-57</receiver>"#,
            r#"<method>QueryChangedDiskAreas</method></MethodNotFoundFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#
        );
        let c = capture_with(500, missing.into()).unwrap();
        assert_eq!(c.changes, Changes::HashCompare);
        assert_eq!(c.bytes, 4096);
        assert!(
            c.source
                .starts_with("vCenter cannot answer QueryChangedDiskAreas (MethodNotFound)"),
            "{}",
            c.source
        );

        let c = capture_with(500, recording("query-changed-disk-areas-filefault.xml")).unwrap();
        assert_eq!(c.changes, Changes::HashCompare);
        assert!(c.source.contains("refused the changeId"), "{}", c.source);

        // anything else is an error, not a silent fallback
        let e = capture_with(503, "busy".into()).unwrap_err();
        assert!(matches!(e, VmwareError::Http { status: 503, .. }), "{e:?}");
    }
}
