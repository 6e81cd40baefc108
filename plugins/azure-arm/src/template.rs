//! Building the deployment document.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{Map, Value, json};

use crate::validate::{self, Cidr};
use crate::{ArmError, DiskSpec, Firmware, NicSpec, TestNetwork, VmSpec};

/// `$schema` of the generated template (resource-group scope).
pub const TEMPLATE_SCHEMA: &str =
    "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#";
/// `apiVersion` of `Microsoft.Compute/virtualMachines`.
pub const COMPUTE_VMS_API_VERSION: &str = "2024-07-01";
/// `apiVersion` of `Microsoft.Compute/disks`.
pub const COMPUTE_DISKS_API_VERSION: &str = "2024-03-02";
/// `apiVersion` of `Microsoft.Network/networkInterfaces` and
/// `Microsoft.Network/virtualNetworks`.
pub const NETWORK_API_VERSION: &str = "2024-03-01";

const DISKS: &str = "Microsoft.Compute/disks";
const NICS: &str = "Microsoft.Network/networkInterfaces";
const VNETS: &str = "Microsoft.Network/virtualNetworks";
const SUBNETS: &str = "Microsoft.Network/virtualNetworks/subnets";
const VMS: &str = "Microsoft.Compute/virtualMachines";
/// The tag recording a NIC's source MAC address.
const MAC_TAG: &str = "lifeboat-source-mac";

/// The ARM deployment that fails `spec` over to Azure; with `test_network`,
/// a test failover into a new isolated virtual network.
///
/// The result is the body of `PUT …/resourceGroups/G/providers/
/// Microsoft.Resources/deployments/NAME`:
/// `{"properties": {"mode": "Incremental", "template": {…}}}`. Its
/// resources, in order:
///
/// 1. for a test failover, the `Microsoft.Network/virtualNetworks` with its
///    one subnet;
/// 2. one `Microsoft.Compute/disks` per disk, in `spec.disks` order,
///    imported (`createOption` `Import`) from its VHD blob; the OS disk
///    carries `osType` (when known) and `hyperVGeneration` (`V2` for UEFI,
///    `V1` for BIOS);
/// 3. one `Microsoft.Network/networkInterfaces` per NIC, in `spec.nics`
///    order, on its production subnet (or the test subnet), static when
///    the IP is kept, dynamic otherwise;
/// 4. the `Microsoft.Compute/virtualMachines`, attaching the OS disk, the
///    data disks at LUN 0, 1, … in order, and the NICs (the first primary),
///    depending on all of them.
///
/// No `securityProfile` is set: an imported disk is Standard security, and
/// Trusted Launch (Secure Boot, vTPM) would need the disk imported with a
/// VM guest state, which a replicated VHD does not have. A UEFI VM is a
/// plain generation 2 VM.
///
/// References between resources are `[resourceId('TYPE', 'NAME')]`
/// expressions; string values that look like expressions are escaped. The
/// same input always yields the same document, key order included.
///
/// # Errors
/// Any input that Azure would refuse (see [`validate()`](crate::validate())), and a VM
/// that no size in [`crate::VM_SIZES`] fits.
pub fn deployment(spec: &VmSpec, test_network: Option<&TestNetwork>) -> Result<Value, ArmError> {
    let checked = validate::check(spec, test_network)?;
    let test = match (test_network, checked.test_subnet) {
        (Some(net), Some(subnet)) => Some((net, subnet)),
        _ => None,
    };

    let mut resources = Vec::new();
    if let Some((net, _)) = test {
        resources.push(vnet_resource(spec, net));
    }
    for disk in &spec.disks {
        resources.push(disk_resource(spec, disk));
    }
    let mut kept_in_test = BTreeSet::new();
    for (i, nic) in spec.nics.iter().enumerate() {
        resources.push(nic_resource(spec, i, nic, test, &mut kept_in_test)?);
    }
    resources.push(vm_resource(spec, checked.size));

    Ok(json!({
        "properties": {
            "mode": "Incremental",
            "template": {
                "$schema": TEMPLATE_SCHEMA,
                "contentVersion": "1.0.0.0",
                "resources": resources,
            }
        }
    }))
}

/// `'text'` as an ARM expression string literal.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `[resourceId('TYPE', 'NAME', …)]`.
fn resource_id(ty: &str, names: &[&str]) -> String {
    let mut args = vec![quoted(ty)];
    args.extend(names.iter().map(|n| quoted(n)));
    format!("[resourceId({})]", args.join(", "))
}

/// A literal string value: ARM evaluates a string that starts with `[`
/// and ends with `]` as an expression; `[[` escapes it.
fn literal(text: &str) -> Value {
    if text.starts_with('[') && text.ends_with(']') {
        Value::String(format!("[{text}"))
    } else {
        Value::String(text.to_owned())
    }
}

fn tags_value(tags: &BTreeMap<String, String>) -> Value {
    Value::Object(
        tags.iter()
            .map(|(k, v)| (k.clone(), literal(v)))
            .collect::<Map<_, _>>(),
    )
}

/// `type`, `apiVersion`, `name`, `location` and (when any) `tags`, in that
/// order.
fn head(
    ty: &str,
    api: &str,
    name: &str,
    location: &str,
    tags: &BTreeMap<String, String>,
) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("type".into(), ty.into());
    r.insert("apiVersion".into(), api.into());
    r.insert("name".into(), name.into());
    r.insert("location".into(), literal(location));
    if !tags.is_empty() {
        r.insert("tags".into(), tags_value(tags));
    }
    r
}

fn vnet_resource(spec: &VmSpec, net: &TestNetwork) -> Value {
    let mut r = head(
        VNETS,
        NETWORK_API_VERSION,
        &net.name,
        &spec.location,
        &spec.tags,
    );
    r.insert(
        "properties".into(),
        json!({
            "addressSpace": { "addressPrefixes": [net.address_prefix] },
            "subnets": [{
                "name": net.subnet_name,
                "properties": { "addressPrefix": net.subnet_prefix }
            }]
        }),
    );
    Value::Object(r)
}

fn disk_resource(spec: &VmSpec, disk: &DiskSpec) -> Value {
    let mut r = head(
        DISKS,
        COMPUTE_DISKS_API_VERSION,
        &disk.name,
        &spec.location,
        &spec.tags,
    );
    r.insert("sku".into(), json!({ "name": disk.sku.as_str() }));
    let mut props = Map::new();
    if disk.os {
        if let Some(os) = spec.os_type {
            props.insert("osType".into(), os.as_str().into());
        }
        let generation = match spec.firmware {
            Firmware::Bios => "V1",
            Firmware::Uefi => "V2",
        };
        props.insert("hyperVGeneration".into(), generation.into());
    }
    props.insert(
        "creationData".into(),
        json!({
            "createOption": "Import",
            "storageAccountId": spec.storage_account_id,
            "sourceUri": disk.blob_uri,
        }),
    );
    r.insert("properties".into(), Value::Object(props));
    Value::Object(r)
}

fn nic_resource(
    spec: &VmSpec,
    index: usize,
    nic: &NicSpec,
    test: Option<(&TestNetwork, Cidr)>,
    kept_in_test: &mut BTreeSet<Ipv4Addr>,
) -> Result<Value, ArmError> {
    let mut tags = spec.tags.clone();
    if let Some(mac) = &nic.mac {
        tags.insert(MAC_TAG.into(), validate::normalize_mac(mac));
        if tags.len() > 50 {
            return Err(ArmError::Invalid {
                field: "tags".into(),
                reason: format!(
                    "NIC {:?} would carry {} tags with {MAC_TAG}; Azure allows at most 50",
                    nic.name,
                    tags.len()
                ),
            });
        }
    }
    let mut r = head(NICS, NETWORK_API_VERSION, &nic.name, &spec.location, &tags);

    let (subnet, ip) = match test {
        None => (Value::String(nic.subnet_id.clone()), nic.private_ip.clone()),
        Some((net, prefix)) => {
            r.insert(
                "dependsOn".into(),
                json!([resource_id(VNETS, &[&net.name])]),
            );
            // Keep a static IP only where it is valid on the test subnet
            // and not already taken there by an earlier NIC.
            let mut kept = None;
            if let Some(text) = &nic.private_ip {
                let addr = validate::ipv4(&format!("nics[{index}].private_ip"), text)?;
                if prefix.usable_host(addr) && kept_in_test.insert(addr) {
                    kept = Some(text.clone());
                }
            }
            (
                Value::String(resource_id(SUBNETS, &[&net.name, &net.subnet_name])),
                kept,
            )
        }
    };

    let mut ip_props = Map::new();
    ip_props.insert("primary".into(), true.into());
    match ip {
        Some(addr) => {
            ip_props.insert("privateIPAllocationMethod".into(), "Static".into());
            ip_props.insert("privateIPAddress".into(), addr.into());
        }
        None => {
            ip_props.insert("privateIPAllocationMethod".into(), "Dynamic".into());
        }
    }
    ip_props.insert("subnet".into(), json!({ "id": subnet }));
    r.insert(
        "properties".into(),
        json!({
            "ipConfigurations": [{ "name": "ipconfig1", "properties": ip_props }]
        }),
    );
    Ok(Value::Object(r))
}

fn vm_resource(spec: &VmSpec, size: &str) -> Value {
    let mut r = head(
        VMS,
        COMPUTE_VMS_API_VERSION,
        &spec.name,
        &spec.location,
        &spec.tags,
    );
    let disk_id = |d: &DiskSpec| resource_id(DISKS, &[&d.name]);
    let nic_id = |n: &NicSpec| resource_id(NICS, &[&n.name]);

    let depends: Vec<Value> = spec
        .disks
        .iter()
        .map(|d| disk_id(d).into())
        .chain(spec.nics.iter().map(|n| nic_id(n).into()))
        .collect();
    r.insert("dependsOn".into(), Value::Array(depends));

    let mut storage = Map::new();
    if let Some(os) = spec.disks.iter().find(|d| d.os) {
        let mut os_disk = Map::new();
        if let Some(t) = spec.os_type {
            os_disk.insert("osType".into(), t.as_str().into());
        }
        os_disk.insert("createOption".into(), "Attach".into());
        os_disk.insert("managedDisk".into(), json!({ "id": disk_id(os) }));
        storage.insert("osDisk".into(), Value::Object(os_disk));
    }
    let data: Vec<Value> = spec
        .disks
        .iter()
        .filter(|d| !d.os)
        .enumerate()
        .map(|(lun, d)| {
            json!({
                "lun": lun,
                "createOption": "Attach",
                "managedDisk": { "id": disk_id(d) }
            })
        })
        .collect();
    if !data.is_empty() {
        storage.insert("dataDisks".into(), Value::Array(data));
    }

    let nics: Vec<Value> = spec
        .nics
        .iter()
        .enumerate()
        .map(|(i, n)| json!({ "id": nic_id(n), "properties": { "primary": i == 0 } }))
        .collect();

    r.insert(
        "properties".into(),
        json!({
            "hardwareProfile": { "vmSize": size },
            "storageProfile": storage,
            "networkProfile": { "networkInterfaces": nics },
            "diagnosticsProfile": { "bootDiagnostics": { "enabled": spec.boot_diagnostics } }
        }),
    );
    Value::Object(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_quote_and_escape() {
        assert_eq!(
            resource_id(DISKS, &["d1"]),
            "[resourceId('Microsoft.Compute/disks', 'd1')]"
        );
        assert_eq!(
            resource_id(SUBNETS, &["v", "s"]),
            "[resourceId('Microsoft.Network/virtualNetworks/subnets', 'v', 's')]"
        );
        assert_eq!(quoted("it's"), "'it''s'");
        assert_eq!(literal("[prod]"), Value::String("[[prod]".into()));
        assert_eq!(literal("[prod"), Value::String("[prod".into()));
        assert_eq!(literal("prod"), Value::String("prod".into()));
    }
}
