//! The demo site: a pretend platform for the quick start. It needs no cloud:
//! the "site" is described by the workflow itself, and failed-over VMs get
//! deterministic ids, so plans and results are reproducible.

use lifeboat_plugin_sdk::prelude::*;
use serde::Deserialize;

/// A VM of the demo site, as the workflow lists it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
struct Vm {
    name: String,
    #[serde(default = "one")]
    cpus: u32,
    #[serde(default = "default_memory")]
    memory_mib: u32,
}

fn one() -> u32 {
    1
}
fn default_memory() -> u32 {
    1024
}

#[derive(Deserialize)]
struct InventoryIn {
    site: String,
    #[serde(default)]
    vms: Vec<Vm>,
}

/// Reads the demo site's inventory.
struct Inventory;

impl Step for Inventory {
    type Input = InventoryIn;
    fn info() -> StepInfo {
        StepInfo::new("inventory", "List the VMs of a demo site")
            .input(
                field::string("site")
                    .required()
                    .doc("Name of the demo site"),
            )
            .input(field::list("vms").doc("VMs of the site: {name, cpus, memory_mib}"))
            .output(field::list("vms").doc("Names of the VMs found"))
            .output(field::integer("count").doc("How many VMs were found"))
    }
    fn plan(_: &Context, i: InventoryIn) -> Result<Plan, StepError> {
        check_name("site", &i.site)?;
        let names: Vec<&str> = i.vms.iter().map(|v| v.name.as_str()).collect();
        for n in &names {
            check_name("vm name", n)?;
        }
        Ok(Plan::new()
            .action(
                Action::read(
                    format!("site/{}", i.site),
                    format!(
                        "read the inventory of demo site `{}` ({} VMs)",
                        i.site,
                        names.len()
                    ),
                )
                .payload(&i.vms),
            )
            .output("vms", &names)
            .output("count", names.len()))
    }
    fn apply(_: &Context, i: InventoryIn, _: &Action) -> Result<Outputs, StepError> {
        let names: Vec<&str> = i.vms.iter().map(|v| v.name.as_str()).collect();
        Ok(Outputs::new().set("vms", &names).set("count", names.len()))
    }
}

#[derive(Deserialize)]
struct FailoverIn {
    vm: String,
    #[serde(default = "test_kind")]
    kind: String,
    #[serde(default = "default_network")]
    network: String,
}

fn test_kind() -> String {
    "test".into()
}
fn default_network() -> String {
    "recovery-net".into()
}

/// Creates a VM's replica at the recovery site.
struct Failover;

impl Step for Failover {
    type Input = FailoverIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "failover",
            "Create a VM's replica at the demo recovery site",
        )
        .input(
            field::string("vm")
                .required()
                .doc("Name of the protected VM"),
        )
        .input(field::string("kind").doc("test | planned | unplanned (default test)"))
        .input(field::string("network").doc("Recovery network (default recovery-net)"))
        .output(field::string("vm_id").doc("Id of the new VM, known after apply"))
        .output(field::string("network").doc("The network the VM was attached to"))
    }
    fn plan(_: &Context, i: FailoverIn) -> Result<Plan, StepError> {
        check_name("vm", &i.vm)?;
        check_kind(&i.kind)?;
        let network = if i.kind == "test" {
            format!("{}-test", i.network)
        } else {
            i.network.clone()
        };
        Ok(Plan::new()
            .action(
                Action::create(
                    format!("vm/{}-replica", i.vm),
                    format!(
                        "create a {} failover replica of `{}` on network `{network}`",
                        i.kind, i.vm
                    ),
                )
                .payload(json!({ "vm": i.vm, "kind": i.kind, "network": network })),
            )
            .output_after_apply("vm_id")
            .output("network", network))
    }
    fn apply(ctx: &Context, i: FailoverIn, action: &Action) -> Result<Outputs, StepError> {
        let network: String = action
            .payload
            .get("network")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| StepError::new("invalid-payload", "payload has no network"))?;
        lifeboat_plugin_sdk::log::info("replica created", &[("vm", &i.vm), ("step", &ctx.step_id)]);
        // Deterministic id: the same failover always yields the same replica,
        // which is what makes this apply idempotent.
        let id = format!(
            "demo-{:08x}",
            fnv1a(format!("{}/{}/{}", i.vm, i.kind, network).as_bytes())
        );
        Ok(Outputs::new().set("vm_id", id).set("network", network))
    }
}

#[derive(Deserialize)]
struct ProbeIn {
    vm_id: String,
}

/// Checks that a recovered VM answers.
struct Probe;

impl Step for Probe {
    type Input = ProbeIn;
    fn info() -> StepInfo {
        StepInfo::new("probe", "Check that a recovered VM is healthy")
            .input(
                field::string("vm_id")
                    .required()
                    .doc("Id of the recovered VM"),
            )
            .output(field::boolean("healthy").doc("Whether the VM answered"))
    }
    fn plan(_: &Context, i: ProbeIn) -> Result<Plan, StepError> {
        Ok(Plan::new()
            .action(Action::run(
                format!("vm/{}", i.vm_id),
                format!("probe the health of `{}`", i.vm_id),
            ))
            .output_after_apply("healthy"))
    }
    fn apply(_: &Context, i: ProbeIn, _: &Action) -> Result<Outputs, StepError> {
        if !i.vm_id.starts_with("demo-") {
            return Err(StepError::new(
                "not-found",
                format!("no demo VM `{}`", i.vm_id),
            ));
        }
        Ok(Outputs::new().set("healthy", true))
    }
}

fn check_name(what: &str, s: &str) -> Result<(), StepError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StepError::invalid_input(format!(
            "{what} `{s}` must be 1-63 characters of a-z, 0-9 and -"
        )))
    }
}

fn check_kind(k: &str) -> Result<(), StepError> {
    match k {
        "test" | "planned" | "unplanned" => Ok(()),
        _ => Err(StepError::invalid_input(format!(
            "failover kind `{k}` is not one of test, planned, unplanned"
        ))),
    }
}

fn fnv1a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

lifeboat_plugin_sdk::plugin!(
    name: "demo",
    version: env!("CARGO_PKG_VERSION"),
    doc: "A pretend platform for the quick start: no cloud needed",
    steps: [Inventory, Failover, Probe],
);
