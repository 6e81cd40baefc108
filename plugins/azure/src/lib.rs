//! The Azure recovery-site plugin: fail a protected VM over to Azure.
//!
//! The steps of a recovery workflow, in order (ASR's failover, step by step):
//!
//! 1. `recovery-point` picks the point to recover (`latest`, an id or a unique
//!    prefix) from the workflow's vault and hands on the VM's configuration
//!    recorded with it.
//! 2. `reconfigure-network` maps each source NIC onto an Azure subnet
//!    (`network_map`), keeps or replaces its static IP, and for a *test*
//!    failover puts every NIC on an isolated test network instead.
//! 3. `create-vm` materialises each disk of the point as a fixed VHD page blob
//!    in the storage site (`transfer` actions: the host moves the bytes) and
//!    deploys the VM through one ARM deployment (managed disks imported from
//!    the blobs, NICs, the VM; `lifeboat_azure_arm::deployment`): submitted
//!    to ARM's REST API when `arm` is given, else written to the site as
//!    `deployments/NAME.json`.
//! 4. `boot-verify` boots the OS disk in the recovery lab and waits for the
//!    guest's health line.
//!
//! Plans are read-only and deterministic: everything `create-vm` will do,
//! including the whole deployment document, is in its plan.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod arm;
mod deploy;
mod export;
mod network;
mod points;
mod replicate;
mod source;

use lifeboat_azure_arm::TestNetwork;
use lifeboat_plugin_sdk::prelude::*;
use lifeboat_plugin_sdk::transfer;
use serde::Deserialize;

use deploy::{Built, CreateVmIn, DeployPayload, RestorePayload};
use network::{IpMode, Kind};
use points::Chosen;
use source::SourceVm;

fn mib(b: u64) -> String {
    if b >= 10 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

// ------------------------------------------------------------ recovery-point

#[derive(Deserialize)]
struct RecoveryPointIn {
    vm: String,
    #[serde(default)]
    point: Option<String>,
}

fn describe_point(c: &Chosen, vm: &str, of: usize, asked: &str) -> String {
    let disks: Vec<String> = c
        .disks
        .iter()
        .map(|d| format!("{} {}", d.name, mib(d.virtual_size)))
        .collect();
    let which = if asked.is_empty() || asked == "latest" {
        format!("latest of {of}")
    } else {
        format!("asked for {asked:?}; {of} in the vault")
    };
    format!(
        "use recovery point {} of {vm} ({which}): sealed {}, {}-consistent, {} disks ({})",
        c.id,
        c.created,
        c.consistency,
        c.disks.len(),
        disks.join(", ")
    )
}

struct RecoveryPoint;

impl Step for RecoveryPoint {
    type Input = RecoveryPointIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "recovery-point",
            "Pick the recovery point to fail over to from the vault (latest, an id or a unique prefix) with the VM's recorded configuration",
        )
        .input(field::string("vm").required().doc("The protected VM's name, e.g. web01"))
        .input(field::string("point").doc("latest (default), a point id or a unique prefix of one"))
        .output(field::object("point").doc(
            "The point: id, created, consistency, disks [{name, virtual_size}], vm (its configuration)",
        ))
    }
    fn plan(_: &Context, i: RecoveryPointIn) -> Result<Plan, StepError> {
        let asked = i.point.unwrap_or_default();
        let all = transfer::points(&i.vm)?;
        let p = points::choose(&i.vm, &all, &asked)?;
        let c = points::chosen(p)?;
        Ok(Plan::new()
            .action(
                Action::read(
                    format!("point/{}/{}", i.vm, c.id),
                    describe_point(&c, &i.vm, all.len(), asked.trim()),
                )
                .payload(json!({ "id": c.id })),
            )
            .output("point", &c))
    }
    /// Check the point planned is still in the vault (nothing pruned it).
    fn apply(_: &Context, i: RecoveryPointIn, a: &Action) -> Result<Outputs, StepError> {
        #[derive(Deserialize)]
        struct Planned {
            id: String,
        }
        let planned: Planned = a.payload_as()?;
        let all = transfer::points(&i.vm)?;
        let p = all.iter().find(|p| p.id == planned.id).ok_or_else(|| {
            StepError::new(
                "not-found",
                format!(
                    "recovery point {} of VM {} was planned but is no longer in the vault (pruned?); plan again",
                    planned.id, i.vm
                ),
            )
        })?;
        Ok(Outputs::new().set("point", points::chosen(p)?))
    }
}

// ------------------------------------------------------- reconfigure-network

#[derive(Deserialize)]
struct NetworkIn {
    vm: serde_json::Value,
    network_map: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    test_network: Option<TestNetwork>,
}

struct ReconfigureNetwork;

impl Step for ReconfigureNetwork {
    type Input = NetworkIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "reconfigure-network",
            "Map each NIC's source network onto an Azure subnet, keep or replace static IPs, and isolate a test failover in its own network (decides only: create-vm creates the NICs)",
        )
        .input(field::object("vm").required().doc("The VM's configuration (recovery-point's point.vm)"))
        .input(field::object("network_map").required().doc(
            "Source network name → ARM id of the target subnet (or {subnet_id})",
        ))
        .input(field::string("kind").doc("test (default), planned or unplanned"))
        .input(field::string("ip").doc("keep (default: static IPs retained) or dynamic (re-IP from the subnet)"))
        .input(field::object("test_network").doc(
            "For kind test: the isolated VNet {name, address_prefix, subnet_name, subnet_prefix}; ignored otherwise",
        ))
        .output(field::list("nics").doc("Per NIC: name, mac, subnet_id, private_ip (null: dynamic), network"))
        .output(field::any("test_network").doc("The isolated network of a test failover, else null"))
        .output(field::list("mapping").doc("One line per NIC: where it goes and what IP it gets"))
    }
    /// Pure decisions: no actions (nothing changes until create-vm), every
    /// output known now.
    fn plan(_: &Context, i: NetworkIn) -> Result<Plan, StepError> {
        let vm = SourceVm::from_value("`vm`", &i.vm)?;
        let kind = Kind::parse(i.kind.as_deref().unwrap_or(""))?;
        let ip = IpMode::parse(i.ip.as_deref().unwrap_or(""))?;
        let m = network::map(&vm, &i.network_map, kind, ip, i.test_network)?;
        Ok(Plan::new()
            .output("nics", &m.nics)
            .output("test_network", &m.test_network)
            .output("mapping", &m.lines))
    }
    fn apply(_: &Context, _: NetworkIn, _: &Action) -> Result<Outputs, StepError> {
        Err(StepError::new(
            "internal",
            "reconfigure-network plans no actions, so there is nothing to apply",
        ))
    }
}

// ------------------------------------------------------------------ create-vm

struct CreateVm;

fn os_disk_path(b: &Built) -> String {
    b.blobs
        .iter()
        .find(|x| x.os)
        .map(|x| x.path.clone())
        .unwrap_or_default()
}

impl Step for CreateVm {
    type Input = CreateVmIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "create-vm",
            "Materialise each disk of the point as a fixed VHD page blob in the storage site, then deploy the VM through ARM (managed disks imported from the blobs, NICs, VM): submitted to ARM with `arm`, else written to the site as deployments/NAME.json",
        )
        .input(field::string("site").required().doc("The storage site (the storage account's blobs) the VHDs go to; granted write"))
        .input(field::string("container").doc("Blob container of the VHDs (default vhds)"))
        .input(field::string("site_layout").doc(
            "account (default: the site is the storage account, VHDs at CONTAINER/BLOB) or container (the site is that container: VHDs at BLOB)",
        ))
        .input(field::object("vm").doc("The VM's configuration (default: the one recorded with the point)"))
        .input(field::object("point").required().doc("recovery-point's point"))
        .input(field::list("nics").required().doc("reconfigure-network's nics"))
        .input(field::any("test_network").doc("reconfigure-network's test_network (used for kind test)"))
        .input(field::string("kind").doc("test (default), planned or unplanned"))
        .input(field::string("name").doc("The Azure VM's name (default: the source VM's, with -test for a test failover)"))
        .input(field::string("location").required().doc("Azure region, e.g. westeurope"))
        .input(field::string("subscription").required().doc("Subscription id of the recovery resource group"))
        .input(field::string("resource_group").required().doc("Resource group the VM is created in"))
        .input(field::string("storage_account").required().doc("Storage account (in that resource group) holding the VHD blobs"))
        .input(field::string("size").doc("Azure VM size; default: the smallest that fits the source's CPUs, memory, disks and NICs"))
        .input(field::string("os_disk").doc("The disk that boots, e.g. scsi0:0 (default: the first)"))
        .input(field::string("os_type").doc("linux or windows (default: from the guest OS id)"))
        .input(field::string("disk_sku").doc("Standard_LRS (default) or Premium_LRS"))
        .input(field::object("tags").doc("Tags on every resource, besides lifeboat's own"))
        .input(field::object("arm").sensitive().doc(
            "Submit through ARM's REST API: {endpoint, token, poll_seconds?, wait_seconds?}; needs the endpoint in grants.http",
        ))
        .output(field::list("blobs").doc("Per disk: disk, path (in the site), uri, size_bytes, os, lun"))
        .output(field::string("os_disk").doc("Site path of the OS disk's VHD (for boot-verify)"))
        .output(field::string("name").doc("The Azure VM's name"))
        .output(field::string("deployment").doc("The ARM deployment's name"))
        .output(field::string("vm_id").doc("ARM id of the VM"))
    }
    fn plan(_: &Context, i: CreateVmIn) -> Result<Plan, StepError> {
        let b = deploy::build(&i)?;
        // the vault knows the VM by the name recorded with its point
        let source = SourceVm::from_value("`point.vm`", &i.point.vm)?.name;
        let mut p = Plan::new();
        for blob in &b.blobs {
            p = p.action(
                Action::transfer(
                    format!("blob/{}", blob.path),
                    deploy::restore_summary(&i.point.id, blob),
                )
                .payload(deploy::restore_payload(&source, &i.point.id, blob)),
            );
        }
        p = p.action(
            Action::create(format!("deployment/{}", b.deployment), &b.summary)
                .payload(deploy::deploy_payload(&i, &b)),
        );
        Ok(p.output("blobs", &b.blobs)
            .output("os_disk", os_disk_path(&b))
            .output("name", &b.name)
            .output("deployment", &b.deployment)
            .output("vm_id", &b.vm_id))
    }
    fn apply(_: &Context, i: CreateVmIn, a: &Action) -> Result<Outputs, StepError> {
        match a.kind {
            ActionKind::Transfer => {
                let r: RestorePayload = a.payload_as()?;
                let done =
                    transfer::restore(&r.vm, &r.point, &r.disk, &i.site, &r.path, &r.format)?;
                lifeboat_plugin_sdk::log::info(
                    "materialised",
                    &[
                        ("disk", &r.disk),
                        ("point", &done.point),
                        ("path", &r.path),
                        ("virtual_size", &done.virtual_size.to_string()),
                        ("bytes_written", &done.bytes_written.to_string()),
                    ],
                );
                Ok(Outputs::new())
            }
            ActionKind::Create => {
                let d: DeployPayload = a.payload_as()?;
                match d.target.as_str() {
                    "arm" => {
                        let target = i.arm.as_ref().ok_or_else(|| {
                            StepError::invalid_input(
                                "the plan submits to ARM but the `arm` input is gone; plan again",
                            )
                        })?;
                        target.check()?;
                        let body = serde_json::to_string(&d.body)
                            .map_err(|e| StepError::new("internal", e.to_string()))?;
                        let polls = arm::submit(target, &d.location, &body, &d.deployment)?;
                        lifeboat_plugin_sdk::log::info(
                            "ARM deployment succeeded",
                            &[("deployment", &d.deployment), ("polls", &polls.to_string())],
                        );
                    }
                    _ => {
                        let text = serde_json::to_string_pretty(&d.body)
                            .map_err(|e| StepError::new("internal", e.to_string()))?;
                        transfer::write_file(&i.site, &d.location, &format!("{text}\n"))?;
                    }
                }
                Ok(Outputs::new())
            }
            other => Err(StepError::new(
                "internal",
                format!("create-vm plans no {other:?} action"),
            )),
        }
    }
}

// ---------------------------------------------------------------- boot-verify

#[derive(Deserialize)]
struct BootIn {
    site: String,
    path: String,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    marker: Option<String>,
    #[serde(default)]
    timeout: Option<u64>,
}

#[derive(Debug)]
struct Boot {
    format: String,
    marker: String,
    timeout_s: u64,
}

fn boot_settings(i: &BootIn) -> Result<Boot, StepError> {
    let format = i.format.clone().unwrap_or_else(|| "vhd".into());
    if !["raw", "vhd", "vhdx", "vmdk", "qcow2"].contains(&format.as_str()) {
        return Err(StepError::invalid_input(format!(
            "format {format:?} is not one of raw, vhd, vhdx, vmdk, qcow2"
        )));
    }
    if i.path.trim().is_empty() {
        return Err(StepError::invalid_input(
            "`path` is empty; pass create-vm's os_disk",
        ));
    }
    let marker = i
        .marker
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "LIFEBOAT-HEALTH".into());
    let timeout_s = i.timeout.unwrap_or(180);
    if !(1..=3600).contains(&timeout_s) {
        return Err(StepError::invalid_input(format!(
            "timeout {timeout_s} s is outside 1..=3600"
        )));
    }
    Ok(Boot {
        format,
        marker,
        timeout_s,
    })
}

struct BootVerify;

impl Step for BootVerify {
    type Input = BootIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "boot-verify",
            "Boot the recovered OS disk in the recovery lab (QEMU, no network, the image untouched) and wait for the guest's health line on the serial console; give the step a `timeout` above `timeout`",
        )
        .input(field::string("site").required().doc("The site holding the image; granted read"))
        .input(field::string("path").required().doc("The OS disk image in the site (create-vm's os_disk)"))
        .input(field::string("format").doc("vhd (default), raw, vhdx, vmdk or qcow2"))
        .input(field::string("marker").doc("Start of the health line (default LIFEBOAT-HEALTH)"))
        .input(field::integer("timeout").doc("Seconds to wait for it (default 180)"))
        .output(field::string("line").doc("The health line the guest printed"))
        .output(field::number("seconds").doc("From power-on to the health line"))
    }
    fn plan(_: &Context, i: BootIn) -> Result<Plan, StepError> {
        let b = boot_settings(&i)?;
        Ok(Plan::new()
            .action(Action::run(
                format!("boot/{}/{}", i.site, i.path),
                format!(
                    "boot {} ({}) of site `{}` in the recovery lab and wait up to {} s for a console line starting with {}",
                    i.path, b.format, i.site, b.timeout_s, b.marker
                ),
            ))
            .output_after_apply("line")
            .output_after_apply("seconds"))
    }
    fn apply(_: &Context, i: BootIn, _: &Action) -> Result<Outputs, StepError> {
        let b = boot_settings(&i)?;
        let ms = u32::try_from(b.timeout_s * 1000).unwrap_or(u32::MAX);
        let r = transfer::boot_check(&i.site, &i.path, &b.format, &b.marker, ms)?;
        Ok(Outputs::new()
            .set("line", &r.line)
            .set("seconds", r.seconds))
    }
}

lifeboat_plugin_sdk::plugin!(
    name: "azure",
    version: "0.2.0",
    doc: "Azure: as a recovery site, pick a recovery point, map networks, materialise disks as page-blob VHDs, deploy the VM through ARM and boot-verify; as a source (region to region), discover a VM, snapshot and diff its page blobs, ship and seal points",
    steps: [
        RecoveryPoint,
        ReconfigureNetwork,
        CreateVm,
        BootVerify,
        replicate::Discover,
        replicate::Capture,
        lifeboat_plugin_sdk::replication::Ship,
        lifeboat_plugin_sdk::replication::Snapshot,
        lifeboat_plugin_sdk::retention::Retention,
        replicate::ReleaseSnapshots,
    ],
);

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(format: Option<&str>, timeout: Option<u64>) -> BootIn {
        BootIn {
            site: "azure".into(),
            path: "vhds/web01-test-scsi0-0.vhd".into(),
            format: format.map(Into::into),
            marker: None,
            timeout,
        }
    }

    #[test]
    fn boot_settings_default_and_refuse() {
        let b = boot_settings(&boot(None, None)).unwrap();
        assert_eq!(
            (b.format.as_str(), b.marker.as_str(), b.timeout_s),
            ("vhd", "LIFEBOAT-HEALTH", 180)
        );
        assert!(
            boot_settings(&boot(Some("iso"), None))
                .unwrap_err()
                .message
                .contains("\"iso\"")
        );
        assert!(
            boot_settings(&boot(None, Some(0)))
                .unwrap_err()
                .message
                .contains("outside 1..=3600")
        );
        let mut empty = boot(None, None);
        empty.path = " ".into();
        assert!(
            boot_settings(&empty)
                .unwrap_err()
                .message
                .contains("`path` is empty")
        );
    }

    #[test]
    fn point_lines() {
        let c = Chosen {
            id: "0123456789abcdef".into(),
            created: "2025-01-01T00:00:00Z".into(),
            consistency: "crash".into(),
            disks: vec![points::ChosenDisk {
                name: "scsi0:0".into(),
                virtual_size: 64 << 20,
            }],
            vm: json!({}),
        };
        assert_eq!(
            describe_point(&c, "web01", 2, "latest"),
            "use recovery point 0123456789abcdef of web01 (latest of 2): sealed 2025-01-01T00:00:00Z, crash-consistent, 1 disks (scsi0:0 64.0 MiB)"
        );
        assert!(
            describe_point(&c, "web01", 2, "0123").contains("asked for \"0123\"; 2 in the vault")
        );
    }
}
