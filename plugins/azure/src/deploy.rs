//! `create-vm`'s plan, as pure functions: the VHD page blobs each disk of the
//! point becomes, Azure names, and the ARM deployment document.

use std::collections::BTreeMap;

use lifeboat_azure_arm::{
    ArmError, DiskSku, DiskSpec, Firmware, NicSpec, OsType, TestNetwork, VmSpec, choose_size_for,
    deployment,
};
use lifeboat_plugin_sdk::StepError;
use serde::{Deserialize, Serialize};

use crate::arm::{self, ArmTarget};
use crate::network::{Kind, MappedNic};
use crate::points::Chosen;
use crate::source::SourceVm;

const MIB: u64 = 1 << 20;

/// The inputs of `create-vm`.
#[derive(Debug, Deserialize)]
pub struct CreateVmIn {
    /// The storage site the VHD blobs and (without `arm`) the deployment go to.
    pub site: String,
    #[serde(default)]
    pub container: Option<String>,
    /// What the site's root is: `account` (default: the storage account,
    /// blobs at `{container}/{blob}`) or `container` (an Azure Blob site
    /// bound to `container` itself: blobs at `{blob}`).
    #[serde(default)]
    pub site_layout: Option<String>,
    /// The VM's configuration; defaults to the one recorded with the point.
    #[serde(default)]
    pub vm: Option<serde_json::Value>,
    pub point: Chosen,
    pub nics: Vec<MappedNic>,
    #[serde(default)]
    pub test_network: Option<TestNetwork>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub location: String,
    pub subscription: String,
    pub resource_group: String,
    pub storage_account: String,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub os_disk: Option<String>,
    #[serde(default)]
    pub os_type: Option<String>,
    #[serde(default)]
    pub disk_sku: Option<String>,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub arm: Option<ArmTarget>,
}

/// One disk of the point as a fixed VHD page blob: the `blobs` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    /// The disk's name in the point, e.g. `scsi0:0`.
    pub disk: String,
    /// Path of the VHD in the storage site: `{container}/{blob}` (or `{blob}`
    /// when the site is the container).
    pub path: String,
    /// The page blob's URI in the storage account.
    pub uri: String,
    /// Virtual size of the VHD (the disk's, rounded up to 1 MiB).
    pub size_bytes: u64,
    /// Whether it is the OS disk.
    pub os: bool,
    /// The LUN of a data disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lun: Option<u32>,
}

/// What a `transfer` action restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePayload {
    pub vm: String,
    pub point: String,
    pub disk: String,
    pub path: String,
    pub format: String,
}

/// What the `create` action submits or writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployPayload {
    pub deployment: String,
    /// Where it goes: `arm` or `site`.
    pub target: String,
    /// The site path (`deployments/NAME.json`) or the ARM URL.
    pub location: String,
    /// The deployment body.
    pub body: serde_json::Value,
}

/// Everything `create-vm` plans.
#[derive(Debug, Clone)]
pub struct Built {
    pub name: String,
    pub blobs: Vec<Blob>,
    pub deployment: String,
    pub document: serde_json::Value,
    pub vm_id: String,
    /// The ARM endpoint (without a trailing `/`) when submitting there.
    pub endpoint: Option<String>,
    pub summary: String,
}

/// `scsi0:0` → `scsi0-0`: a name part Azure accepts.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The default Azure VM name: the source name with characters Azure
/// refuses replaced by `-`, plus `-test` for a test failover.
pub fn default_name(source: &str, kind: Kind) -> Result<String, StepError> {
    let mut base: String = source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let suffix = if kind == Kind::Test { "-test" } else { "" };
    let max = 64 - suffix.len();
    if base.len() > max {
        base.truncate(max);
    }
    let base = base
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .trim_end_matches(['-', '.']);
    if base.is_empty() {
        return Err(StepError::invalid_input(format!(
            "VM name {source:?} has no letters or digits Azure accepts; set `name`"
        )));
    }
    Ok(format!("{base}{suffix}"))
}

fn check_subscription(s: &str) -> Result<(), StepError> {
    let groups: Vec<&str> = s.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(StepError::invalid_input(format!(
            "subscription {s:?} is not a subscription id like 6a1c2f0e-4b7d-4f3a-9c2e-1d5b8e7f0a11"
        )))
    }
}

fn check_resource_group(rg: &str) -> Result<(), StepError> {
    let ok = (1..=90).contains(&rg.chars().count())
        && rg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
        && !rg.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(StepError::invalid_input(format!(
            "resource_group {rg:?} is not a resource group name: 1 to 90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'"
        )))
    }
}

fn check_container(c: &str) -> Result<(), StepError> {
    let ok = (3..=63).contains(&c.len())
        && c.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
        && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        && !c.ends_with('-')
        && !c.contains("--");
    if ok {
        Ok(())
    } else {
        Err(StepError::invalid_input(format!(
            "container {c:?} is not a blob container name: 3 to 63 lowercase letters, digits and single '-', starting with a letter or digit"
        )))
    }
}

/// An [`ArmError`] as an input error that says which input to change.
fn arm_error(e: ArmError) -> StepError {
    let hint = match &e {
        ArmError::InvalidName { kind: "VM", .. } => "; set `name`",
        ArmError::InvalidName { kind: "NIC", .. } | ArmError::Duplicate { kind: "NIC", .. } => {
            "; NICs are named VMNAME-NIC: set `name`"
        }
        ArmError::InvalidName { kind: "disk", .. } | ArmError::Duplicate { kind: "disk", .. } => {
            "; disks are named VMNAME-DISK: set `name`"
        }
        ArmError::NoSize { .. } => "",
        ArmError::SizeLimit { .. } => "; set a bigger `size`",
        ArmError::Invalid { field, .. } if field == "location" => "; fix `location`",
        ArmError::Invalid { field, .. } if field == "storage_account_id" => {
            "; fix `storage_account`"
        }
        ArmError::Invalid { field, .. } if field == "size" => "; fix `size`",
        ArmError::Invalid { field, .. } if field.starts_with("nics[") => {
            "; fix `network_map` or the VM's NIC settings"
        }
        ArmError::Invalid { field, .. } if field.starts_with("tags") => "; fix `tags`",
        ArmError::Invalid { field, .. } if field.starts_with("test_network") => {
            "; fix `test_network`"
        }
        _ => "",
    };
    StepError::invalid_input(format!("{e}{hint}"))
}

fn mib(b: u64) -> String {
    if b >= 10 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b as f64 / MIB as f64)
    }
}

/// Plan `create-vm`: blobs, names and the deployment, all checked.
pub fn build(i: &CreateVmIn) -> Result<Built, StepError> {
    let kind = Kind::parse(i.kind.as_deref().unwrap_or(""))?;
    let vm = match &i.vm {
        Some(v) => SourceVm::from_value("`vm`", v)?,
        None => SourceVm::from_value(&format!("the `vm` of point {}", i.point.id), &i.point.vm)?,
    };
    let firmware = vm.firmware()?;
    let os_type = match i.os_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => vm.os_type(),
        Some("linux") => Some(OsType::Linux),
        Some("windows") => Some(OsType::Windows),
        Some(other) => {
            return Err(StepError::invalid_input(format!(
                "os_type {other:?} is neither `linux` nor `windows`"
            )));
        }
    };
    let sku = match i.disk_sku.as_deref() {
        None | Some("") => DiskSku::StandardLrs,
        Some(s) => serde_json::from_value(serde_json::Value::String(s.into())).map_err(|_| {
            StepError::invalid_input(format!(
                "disk_sku {s:?} is neither `Standard_LRS` nor `Premium_LRS`"
            ))
        })?,
    };
    let name = match i.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => default_name(&vm.name, kind)?,
    };
    let container = i.container.clone().unwrap_or_else(|| "vhds".into());
    check_container(&container)?;
    let in_site = |blob: &str| -> Result<String, StepError> {
        match i.site_layout.as_deref() {
            None | Some("") | Some("account") => Ok(format!("{container}/{blob}")),
            Some("container") => Ok(blob.to_string()),
            Some(other) => Err(StepError::invalid_input(format!(
                "site_layout {other:?} is neither `account` (the site is the storage account) \
                 nor `container` (the site is the blob container `{container}`)"
            ))),
        }
    };
    check_subscription(&i.subscription)?;
    check_resource_group(&i.resource_group)?;
    let test_network = match (kind, &i.test_network) {
        (Kind::Test, Some(n)) => Some(n.clone()),
        (Kind::Test, None) => {
            return Err(StepError::invalid_input(
                "a test failover needs `test_network` (the isolated network `reconfigure-network` outputs)",
            ));
        }
        // only a test failover uses it
        (_, _) => None,
    };
    if i.nics.is_empty() {
        return Err(StepError::invalid_input(
            "`nics` is empty; an Azure VM needs at least one NIC (pass `reconfigure-network`'s `nics`)",
        ));
    }
    let endpoint = i.arm.as_ref().map(ArmTarget::check).transpose()?;

    // Disks: the VM's in controller order, then any others the point holds.
    let mut order: Vec<&str> = Vec::new();
    for d in &vm.disks {
        if !i.point.disks.iter().any(|p| p.name == d.name) {
            let have: Vec<&str> = i.point.disks.iter().map(|p| p.name.as_str()).collect();
            return Err(StepError::invalid_input(format!(
                "disk {} of VM {} is not in point {} (it holds {})",
                d.name,
                vm.name,
                i.point.id,
                have.join(", ")
            )));
        }
        order.push(&d.name);
    }
    for p in &i.point.disks {
        if !order.contains(&p.name.as_str()) {
            order.push(&p.name);
        }
    }
    if order.is_empty() {
        return Err(StepError::invalid_input(format!(
            "point {} holds no disks",
            i.point.id
        )));
    }
    let os_name = match i.os_disk.as_deref() {
        Some(d) if !d.is_empty() => {
            if !order.contains(&d) {
                return Err(StepError::invalid_input(format!(
                    "os_disk {d:?} is not a disk of point {} ({})",
                    i.point.id,
                    order.join(", ")
                )));
            }
            d
        }
        _ => order[0],
    };
    let account = &i.storage_account;
    let mut blobs = Vec::new();
    let mut disks = Vec::new();
    let mut lun = 0u32;
    for d in &order {
        let size = i
            .point
            .disks
            .iter()
            .find(|p| p.name == *d)
            .map(|p| p.virtual_size)
            .unwrap_or(0);
        let size = size.div_ceil(MIB) * MIB;
        let disk_name = format!("{name}-{}", slug(d));
        let blob = format!("{disk_name}.vhd");
        let uri = format!("https://{account}.blob.core.windows.net/{container}/{blob}");
        let os = *d == os_name;
        blobs.push(Blob {
            disk: d.to_string(),
            path: in_site(&blob)?,
            uri: uri.clone(),
            size_bytes: size,
            os,
            lun: (!os).then(|| {
                lun += 1;
                lun - 1
            }),
        });
        disks.push(DiskSpec {
            name: disk_name,
            size_bytes: size,
            blob_uri: uri,
            os,
            sku,
        });
    }
    let nics: Vec<NicSpec> = i
        .nics
        .iter()
        .map(|n| NicSpec {
            name: format!("{name}-{}", slug(&n.name)),
            mac: n.mac.clone(),
            subnet_id: n.subnet_id.clone(),
            private_ip: n.private_ip.clone(),
        })
        .collect();
    let mut tags = i.tags.clone().unwrap_or_default();
    tags.insert("lifeboat-failover".into(), kind.as_str().into());
    tags.insert("lifeboat-source-vm".into(), vm.name.clone());
    tags.insert("lifeboat-recovery-point".into(), i.point.id.clone());
    let rg_id = format!(
        "/subscriptions/{}/resourceGroups/{}",
        i.subscription, i.resource_group
    );
    let spec = VmSpec {
        name: name.clone(),
        location: i.location.clone(),
        cpus: vm.cpus,
        memory_mib: vm.memory_mib,
        firmware,
        os_type,
        size: i
            .size
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| vm.vm_size.clone().filter(|s| !s.is_empty())),
        disks,
        nics,
        storage_account_id: format!(
            "{rg_id}/providers/Microsoft.Storage/storageAccounts/{account}"
        ),
        boot_diagnostics: true,
        tags,
    };
    let document = deployment(&spec, test_network.as_ref()).map_err(arm_error)?;
    let size = match &spec.size {
        Some(s) => s.clone(),
        None => choose_size_for(
            spec.cpus,
            spec.memory_mib,
            spec.disks.len() - 1,
            spec.nics.len(),
        )
        .map_err(arm_error)?
        .name
        .to_string(),
    };
    let deployment_name = deployment_name(&name);
    let vm_id = format!("{rg_id}/providers/Microsoft.Compute/virtualMachines/{name}");

    let network = match &test_network {
        Some(n) => format!(
            "on isolated test network {} ({}, subnet {} {})",
            n.name, n.address_prefix, n.subnet_name, n.subnet_prefix
        ),
        None => "on the mapped production subnets".into(),
    };
    let generation = match firmware {
        Firmware::Bios => "BIOS → generation 1",
        Firmware::Uefi => "UEFI → generation 2",
    };
    let os = os_type
        .map(|o| format!(", {}", o.as_str()))
        .unwrap_or_default();
    let total: u64 = blobs.iter().map(|b| b.size_bytes).sum();
    let target = match &endpoint {
        Some(e) => format!("submit to ARM at {e} and wait until it succeeds"),
        None => format!(
            "write it to site `{}` as deployments/{deployment_name}.json",
            i.site
        ),
    };
    let summary = format!(
        "{} failover of {} from point {}: VM {name} ({size}, {} vCPU, {} MiB, {generation}{os}) in {}, \
         {} managed disks imported from the VHDs ({}), {} NICs {network}; {target}",
        kind.as_str(),
        vm.name,
        i.point.id,
        vm.cpus,
        vm.memory_mib,
        i.location,
        blobs.len(),
        mib(total),
        spec.nics.len(),
    );
    Ok(Built {
        name,
        blobs,
        deployment: deployment_name,
        document,
        vm_id,
        endpoint,
        summary,
    })
}

/// `lifeboat-failover-{vm}`, cut to the 64 characters ARM allows.
pub fn deployment_name(vm: &str) -> String {
    let mut n = format!("lifeboat-failover-{vm}");
    n.truncate(64);
    n.trim_end_matches(['.', '-']).to_string()
}

/// The `transfer` action of one blob.
pub fn restore_payload(vm: &str, point: &str, b: &Blob) -> RestorePayload {
    RestorePayload {
        vm: vm.into(),
        point: point.into(),
        disk: b.disk.clone(),
        path: b.path.clone(),
        format: "vhd".into(),
    }
}

/// The human line of one blob's `transfer` action.
pub fn restore_summary(point: &str, b: &Blob) -> String {
    let role = match b.lun {
        Some(l) => format!("data disk, LUN {l}"),
        None => "OS disk".into(),
    };
    format!(
        "materialise {} of point {point} as fixed VHD page blob {} ({role}), {}",
        b.disk,
        b.path,
        mib(b.size_bytes)
    )
}

/// The `create` action's payload.
pub fn deploy_payload(i: &CreateVmIn, b: &Built) -> DeployPayload {
    match &b.endpoint {
        Some(e) => DeployPayload {
            deployment: b.deployment.clone(),
            target: "arm".into(),
            location: arm::deployment_url(e, &i.subscription, &i.resource_group, &b.deployment),
            body: b.document.clone(),
        },
        None => DeployPayload {
            deployment: b.deployment.clone(),
            target: "site".into(),
            location: format!("deployments/{}.json", b.deployment),
            body: b.document.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::points::ChosenDisk;
    use serde_json::json;

    const SUB: &str = "6a1c2f0e-4b7d-4f3a-9c2e-1d5b8e7f0a11";

    fn subnet(s: &str) -> String {
        format!(
            "/subscriptions/{SUB}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/prod/subnets/{s}"
        )
    }

    fn input(kind: &str) -> CreateVmIn {
        let vm = json!({"name": "web01", "cpus": 2, "memory_mib": 4096, "firmware": "uefi",
            "guest_os": "debian12-64",
            "disks": [{"name": "scsi0:0", "size_bytes": 67108864}, {"name": "scsi0:1", "size_bytes": 33554432}],
            "nics": [{"name": "ethernet0", "mac": "00:50:56:8a:10:01", "network": "VM Network"}]});
        serde_json::from_value(json!({
            "site": "azure",
            "vm": vm.clone(),
            "point": {"id": "0123456789abcdef", "created": "2025-01-01T00:00:00Z", "consistency": "crash",
                "disks": [{"name": "scsi0:0", "virtual_size": 67108864}, {"name": "scsi0:1", "virtual_size": 33554432 + 1}],
                "vm": vm},
            "nics": [{"name": "ethernet0", "mac": "00:50:56:8a:10:01", "subnet_id": subnet("web"),
                "private_ip": null, "network": "VM Network"}],
            "test_network": if kind == "test" { json!({"name": "drill", "address_prefix": "10.20.0.0/16",
                "subnet_name": "isolated", "subnet_prefix": "10.20.0.0/24"}) } else { json!(null) },
            "kind": kind,
            "location": "westeurope",
            "subscription": SUB,
            "resource_group": "lifeboat-dr",
            "storage_account": "lbdrcache01",
        }))
        .unwrap()
    }

    #[test]
    fn test_failover_plan() {
        let b = build(&input("test")).unwrap();
        assert_eq!(b.name, "web01-test");
        assert_eq!(b.deployment, "lifeboat-failover-web01-test");
        assert_eq!(
            b.vm_id,
            format!(
                "/subscriptions/{SUB}/resourceGroups/lifeboat-dr/providers/Microsoft.Compute/virtualMachines/web01-test"
            )
        );
        assert_eq!(b.blobs.len(), 2);
        assert_eq!(b.blobs[0].path, "vhds/web01-test-scsi0-0.vhd");
        assert_eq!(
            b.blobs[0].uri,
            "https://lbdrcache01.blob.core.windows.net/vhds/web01-test-scsi0-0.vhd"
        );
        assert!(b.blobs[0].os && b.blobs[0].lun.is_none());
        assert_eq!(b.blobs[1].lun, Some(0));
        // rounded up to whole MiB, as Azure imports need
        assert_eq!(b.blobs[1].size_bytes, 33 << 20);
        let res = b.document["properties"]["template"]["resources"]
            .as_array()
            .unwrap();
        assert_eq!(res[0]["type"], "Microsoft.Network/virtualNetworks");
        let os = &res[1];
        assert_eq!(os["properties"]["hyperVGeneration"], "V2");
        assert_eq!(os["properties"]["osType"], "Linux");
        assert_eq!(
            os["properties"]["creationData"]["storageAccountId"],
            format!(
                "/subscriptions/{SUB}/resourceGroups/lifeboat-dr/providers/Microsoft.Storage/storageAccounts/lbdrcache01"
            )
        );
        assert_eq!(os["tags"]["lifeboat-recovery-point"], "0123456789abcdef");
        let vm = res.last().unwrap();
        assert_eq!(
            vm["properties"]["hardwareProfile"]["vmSize"],
            "Standard_B2s"
        );
        assert_eq!(
            vm["properties"]["diagnosticsProfile"]["bootDiagnostics"]["enabled"],
            true
        );
        assert!(
            b.summary.contains("UEFI → generation 2, Linux"),
            "{}",
            b.summary
        );
        assert!(
            b.summary.contains("isolated test network drill"),
            "{}",
            b.summary
        );
        assert!(
            b.summary
                .contains("deployments/lifeboat-failover-web01-test.json"),
            "{}",
            b.summary
        );
        assert_eq!(
            restore_summary("0123456789abcdef", &b.blobs[1]),
            "materialise scsi0:1 of point 0123456789abcdef as fixed VHD page blob vhds/web01-test-scsi0-1.vhd (data disk, LUN 0), 33.0 MiB"
        );
    }

    #[test]
    fn options_and_errors() {
        let mut i = input("planned");
        i.os_disk = Some("scsi0:1".into());
        i.size = Some("Standard_D4s_v5".into());
        i.container = Some("replica".into());
        let b = build(&i).unwrap();
        assert_eq!(b.name, "web01");
        assert!(b.blobs[1].os && b.blobs[0].lun == Some(0));
        assert_eq!(b.blobs[0].path, "replica/web01-scsi0-0.vhd");
        i.site_layout = Some("container".into());
        let b = build(&i).unwrap();
        assert_eq!(b.blobs[0].path, "web01-scsi0-0.vhd");
        assert_eq!(
            b.blobs[0].uri,
            "https://lbdrcache01.blob.core.windows.net/replica/web01-scsi0-0.vhd"
        );
        let res = b.document["properties"]["template"]["resources"]
            .as_array()
            .unwrap();
        assert_eq!(res[0]["type"], "Microsoft.Compute/disks");
        assert!(b.summary.contains("Standard_D4s_v5"));

        type Change = Box<dyn Fn(&mut CreateVmIn)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|i| i.kind = Some("drill".into())),
                "kind \"drill\"",
            ),
            (Box::new(|i| i.test_network = None), "needs `test_network`"),
            (
                Box::new(|i| i.os_disk = Some("ide0:0".into())),
                "os_disk \"ide0:0\" is not a disk",
            ),
            (
                Box::new(|i| i.subscription = "sub".into()),
                "subscription \"sub\"",
            ),
            (
                Box::new(|i| i.resource_group = "rg.".into()),
                "resource_group \"rg.\"",
            ),
            (
                Box::new(|i| i.site_layout = Some("bucket".into())),
                "site_layout \"bucket\"",
            ),
            (
                Box::new(|i| i.container = Some("VHDs".into())),
                "container \"VHDs\"",
            ),
            (
                Box::new(|i| i.storage_account = "Bad_Account".into()),
                "fix `storage_account`",
            ),
            (
                Box::new(|i| i.location = "west europe!".into()),
                "fix `location`",
            ),
            (Box::new(|i| i.name = Some("web_01".into())), "set `name`"),
            (
                Box::new(|i| {
                    i.size = Some("Standard_B1s".into());
                    let n = i.nics[0].clone();
                    i.nics = (0..3)
                        .map(|k| MappedNic {
                            name: format!("eth{k}"),
                            ..n.clone()
                        })
                        .collect();
                }),
                "allows at most 2 NICs, the VM has 3; set a bigger `size`",
            ),
            (
                Box::new(|i| i.disk_sku = Some("Ultra".into())),
                "disk_sku \"Ultra\"",
            ),
            (
                Box::new(|i| i.os_type = Some("bsd".into())),
                "os_type \"bsd\"",
            ),
            (Box::new(|i| i.nics.clear()), "`nics` is empty"),
            (
                Box::new(|i| {
                    i.point.disks = vec![ChosenDisk {
                        name: "scsi0:0".into(),
                        virtual_size: 1 << 20,
                    }]
                }),
                "disk scsi0:1 of VM web01 is not in point 0123456789abcdef (it holds scsi0:0)",
            ),
        ];
        for (change, want) in cases {
            let mut i = input("test");
            change(&mut i);
            let e = build(&i).unwrap_err();
            assert_eq!(e.code, "invalid-input");
            assert!(e.message.contains(want), "want {want:?}: {e}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(default_name("web01", Kind::Test).unwrap(), "web01-test");
        assert_eq!(
            default_name("Web Server_1", Kind::Planned).unwrap(),
            "Web-Server-1"
        );
        assert_eq!(default_name("-x-", Kind::Unplanned).unwrap(), "x");
        assert!(
            default_name("__", Kind::Test)
                .unwrap_err()
                .message
                .contains("set `name`")
        );
        assert_eq!(default_name(&"a".repeat(80), Kind::Test).unwrap().len(), 64);
        assert_eq!(deployment_name(&"b".repeat(64)).len(), 64);
        assert_eq!(slug("scsi0:0"), "scsi0-0");
    }
}
