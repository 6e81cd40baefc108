//! Readers of the answers the client asks for. Each takes the
//! `<{method}Response>` element and returns owned data.

use std::collections::HashMap;

use roxmltree::Node;

use crate::error::VmwareError;
use crate::types::{ChangedAreas, Disk, MoRef, Nic, ServiceContent, UserSession, VmInventory};
use crate::xml::{child, child_text, children, fault_type_of, moref, number, text, xsi_type};

/// The `returnval` of an answer, required.
fn returnval<'a, 'i>(method: &str, node: Node<'a, 'i>) -> Result<Node<'a, 'i>, VmwareError> {
    child(node, "returnval").ok_or_else(|| VmwareError::parse(method, "<returnval> is missing"))
}

/// A required managed object reference child.
fn required_moref(method: &str, node: Node<'_, '_>, name: &str) -> Result<MoRef, VmwareError> {
    child(node, name).and_then(moref).ok_or_else(|| {
        VmwareError::parse(method, format!("<{name}> is missing or not a reference"))
    })
}

/// The managed object reference a method returns, e.g. the task of a `*_Task`.
pub(crate) fn returned_moref(method: &str, node: Node<'_, '_>) -> Result<MoRef, VmwareError> {
    required_moref(method, node, "returnval")
}

/// `RetrieveServiceContent`.
pub(crate) fn service_content(node: Node<'_, '_>) -> Result<ServiceContent, VmwareError> {
    const M: &str = "RetrieveServiceContent";
    let rv = returnval(M, node)?;
    let about = child(rv, "about");
    let about_text = |name: &str| {
        about
            .and_then(|a| child_text(a, name))
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    Ok(ServiceContent {
        root_folder: required_moref(M, rv, "rootFolder")?,
        property_collector: required_moref(M, rv, "propertyCollector")?,
        view_manager: child(rv, "viewManager").and_then(moref),
        session_manager: required_moref(M, rv, "sessionManager")?,
        search_index: child(rv, "searchIndex").and_then(moref),
        full_name: about_text("fullName"),
        api_type: about_text("apiType"),
        api_version: about_text("apiVersion"),
    })
}

/// `Login`.
pub(crate) fn user_session(node: Node<'_, '_>) -> Result<UserSession, VmwareError> {
    const M: &str = "Login";
    let rv = returnval(M, node)?;
    Ok(UserSession {
        key: child_text(rv, "key").unwrap_or("").trim().to_owned(),
        user_name: child_text(rv, "userName").unwrap_or("").trim().to_owned(),
    })
}

/// The properties of one object of a `RetrievePropertiesEx` answer.
struct Props<'a, 'i> {
    obj: MoRef,
    values: HashMap<&'a str, Node<'a, 'i>>,
    /// Property path → fault type, for the properties the server could not read.
    missing: HashMap<&'a str, String>,
}

impl<'a, 'i> Props<'a, 'i> {
    fn read(method: &str, objects: Node<'a, 'i>) -> Result<Self, VmwareError> {
        let obj = required_moref(method, objects, "obj")?;
        let mut values = HashMap::new();
        for prop in children(objects, "propSet") {
            if let (Some(name), Some(val)) = (child_text(prop, "name"), child(prop, "val")) {
                values.insert(name.trim(), val);
            }
        }
        let mut missing = HashMap::new();
        for m in children(objects, "missingSet") {
            if let Some(path) = child_text(m, "path") {
                let fault = child(m, "fault")
                    .and_then(|f| child(f, "fault").or(Some(f)))
                    .map(fault_type_of)
                    .unwrap_or_else(|| "unknown fault".to_owned());
                missing.insert(path.trim(), fault);
            }
        }
        Ok(Props {
            obj,
            values,
            missing,
        })
    }

    fn get(&self, path: &str) -> Option<Node<'a, 'i>> {
        self.values.get(path).copied()
    }

    fn text(&self, path: &str) -> Option<&'a str> {
        self.get(path).map(|v| text(v).trim())
    }

    fn required(&self, method: &str, path: &str) -> Result<Node<'a, 'i>, VmwareError> {
        self.get(path).ok_or_else(|| {
            let why = match self.missing.get(path) {
                Some(fault) => format!("vCenter could not read it: {fault}"),
                None => "not in the answer".to_owned(),
            };
            VmwareError::parse(method, format!("property {path} of {}: {why}", self.obj))
        })
    }

    fn required_number<N: std::str::FromStr>(
        &self,
        method: &str,
        path: &str,
    ) -> Result<N, VmwareError> {
        let raw = text(self.required(method, path)?).trim();
        raw.parse().map_err(|_| {
            VmwareError::parse(method, format!("property {path} is not a number: {raw:?}"))
        })
    }
}

/// All `objects` of a `RetrievePropertiesEx`/`ContinueRetrievePropertiesEx`
/// answer (none when the answer has no `returnval`) and the paging token.
fn objects<'a, 'i>(
    method: &str,
    node: Node<'a, 'i>,
) -> Result<(Vec<Props<'a, 'i>>, Option<String>), VmwareError> {
    let Some(rv) = child(node, "returnval") else {
        return Ok((Vec::new(), None));
    };
    let token = child_text(rv, "token")
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let objs = children(rv, "objects")
        .map(|o| Props::read(method, o))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((objs, token))
}

/// Objects with their names, and the token of the next page if any.
pub(crate) type NamesPage = (Vec<(MoRef, String)>, Option<String>);

/// The `name` of every object of a property collector answer, and its token.
pub(crate) fn object_names(method: &str, node: Node<'_, '_>) -> Result<NamesPage, VmwareError> {
    let (objs, token) = objects(method, node)?;
    let names = objs
        .into_iter()
        .filter_map(|p| {
            let name = p.text("name")?.to_owned();
            Some((p.obj, name))
        })
        .collect();
    Ok((names, token))
}

/// Where a network adapter's backing points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NetRef {
    /// A standard port group: its `Network` and the backing's device name.
    Network {
        network: Option<MoRef>,
        device_name: String,
    },
    /// A distributed port group, by key.
    Portgroup { key: String },
    /// An NSX opaque network, by id.
    Opaque { id: String },
    /// No network backing.
    None,
}

/// A VM's inventory before network names are known.
pub(crate) struct VmProperties {
    pub(crate) inventory: VmInventory,
    /// One entry per `inventory.nics`, same order.
    pub(crate) nic_networks: Vec<NetRef>,
    /// The VM's `network` property.
    pub(crate) networks: Vec<MoRef>,
}

/// The property paths [`vm_properties`] reads.
pub(crate) const VM_PATHS: &[&str] = &[
    "name",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.firmware",
    "config.guestId",
    "config.changeTrackingEnabled",
    "config.hardware.device",
    "network",
];

/// Device types of network adapters.
const NIC_TYPES: &[&str] = &[
    "VirtualE1000",
    "VirtualE1000e",
    "VirtualPCNet32",
    "VirtualVmxnet",
    "VirtualVmxnet2",
    "VirtualVmxnet3",
    "VirtualVmxnet3Vrdma",
    "VirtualSriovEthernetCard",
];

/// The short name of a controller type, as in `scsi0:1`.
fn controller_kind(device_type: &str) -> &str {
    match device_type {
        "VirtualIDEController" => "ide",
        "VirtualAHCIController" | "VirtualSATAController" => "sata",
        "VirtualNVMEController" => "nvme",
        "VirtualLsiLogicController"
        | "VirtualLsiLogicSASController"
        | "ParaVirtualSCSIController"
        | "VirtualBusLogicController"
        | "VirtualSCSIController" => "scsi",
        other => other,
    }
}

/// `RetrievePropertiesEx` of [`VM_PATHS`] on one VM.
pub(crate) fn vm_properties(node: Node<'_, '_>) -> Result<VmProperties, VmwareError> {
    const M: &str = "RetrievePropertiesEx";
    let (objs, _) = objects(M, node)?;
    let props = objs
        .into_iter()
        .next()
        .ok_or_else(|| VmwareError::parse(M, "the virtual machine is not in the answer"))?;

    let name = text(props.required(M, "name")?).trim().to_owned();
    let cpus = props.required_number(M, "config.hardware.numCPU")?;
    let memory_mib = props.required_number(M, "config.hardware.memoryMB")?;
    let firmware = props
        .text("config.firmware")
        .filter(|f| !f.is_empty())
        .unwrap_or("bios")
        .to_owned();
    let guest_id = props.text("config.guestId").unwrap_or("").to_owned();
    let change_tracking = props.text("config.changeTrackingEnabled") == Some("true");
    let devices: Vec<Node<'_, '_>> = props
        .required(M, "config.hardware.device")?
        .children()
        .filter(|c| c.is_element())
        .collect();
    let networks = props
        .get("network")
        .map(|n| {
            n.children()
                .filter(|c| c.is_element())
                .filter_map(moref)
                .collect()
        })
        .unwrap_or_default();

    // Controllers by device key: (kind, bus number).
    let mut controllers: HashMap<i32, (&str, u32)> = HashMap::new();
    for dev in &devices {
        if let (Some(key), Some(bus)) = (child_text(*dev, "key"), child_text(*dev, "busNumber"))
            && let (Ok(key), Ok(bus)) = (key.trim().parse(), bus.trim().parse())
        {
            controllers.insert(key, (controller_kind(xsi_type(*dev).unwrap_or("")), bus));
        }
    }

    let mut disks = Vec::new();
    let mut nics = Vec::new();
    let mut nic_networks = Vec::new();
    for dev in devices {
        let dev_type = xsi_type(dev).unwrap_or("");
        let backing = child(dev, "backing");
        let label = child(dev, "deviceInfo")
            .and_then(|d| child_text(d, "label"))
            .unwrap_or("")
            .trim()
            .to_owned();
        if dev_type == "VirtualDisk" {
            disks.push(disk(dev, backing, label)?);
            continue;
        }
        let ethernet_backing = backing
            .and_then(xsi_type)
            .is_some_and(|t| t.starts_with("VirtualEthernetCard"));
        if NIC_TYPES.contains(&dev_type) || ethernet_backing {
            nics.push(Nic {
                label,
                mac: child_text(dev, "macAddress")
                    .unwrap_or("")
                    .trim()
                    .to_owned(),
                network: String::new(),
            });
            nic_networks.push(backing.map_or(NetRef::None, net_ref));
        }
    }

    let disks = disks
        .into_iter()
        .map(|(mut d, controller_key, unit)| {
            let (kind, bus) = controllers.get(&controller_key).ok_or_else(|| {
                VmwareError::parse(
                    M,
                    format!(
                        "disk {} sits on controller {controller_key}, which the VM does not have",
                        d.key
                    ),
                )
            })?;
            d.controller = format!("{kind}{bus}:{unit}");
            Ok(d)
        })
        .collect::<Result<Vec<_>, VmwareError>>()?;

    Ok(VmProperties {
        inventory: VmInventory {
            name,
            cpus,
            memory_mib,
            firmware,
            guest_id,
            change_tracking,
            disks,
            nics,
        },
        nic_networks,
        networks,
    })
}

/// A disk device, with its controller key and unit number (the controller
/// string is filled in once all controllers are known).
fn disk(
    dev: Node<'_, '_>,
    backing: Option<Node<'_, '_>>,
    label: String,
) -> Result<(Disk, i32, u32), VmwareError> {
    const M: &str = "RetrievePropertiesEx";
    let key: i32 = number(M, dev, "key")?;
    let capacity_bytes = match child_text(dev, "capacityInBytes") {
        Some(_) => number::<u64>(M, dev, "capacityInBytes")?,
        None => number::<u64>(M, dev, "capacityInKB")?
            .checked_mul(1024)
            .ok_or_else(|| VmwareError::parse(M, format!("disk {key}: capacity overflows")))?,
    };
    let controller_key: i32 = number(M, dev, "controllerKey")?;
    let unit: u32 = number(M, dev, "unitNumber")?;
    let file_name = backing
        .and_then(|b| child_text(b, "fileName"))
        .unwrap_or("")
        .trim()
        .to_owned();
    let change_id = backing
        .and_then(|b| child_text(b, "changeId"))
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    Ok((
        Disk {
            key,
            label,
            capacity_bytes,
            file_name,
            controller: String::new(),
            change_id,
        },
        controller_key,
        unit,
    ))
}

/// Where a network adapter's backing points.
fn net_ref(backing: Node<'_, '_>) -> NetRef {
    if let Some(key) = child(backing, "port").and_then(|p| child_text(p, "portgroupKey")) {
        return NetRef::Portgroup {
            key: key.trim().to_owned(),
        };
    }
    if let Some(id) = child_text(backing, "opaqueNetworkId") {
        return NetRef::Opaque {
            id: id.trim().to_owned(),
        };
    }
    let network = child(backing, "network").and_then(moref);
    let device_name = child_text(backing, "deviceName")
        .unwrap_or("")
        .trim()
        .to_owned();
    if network.is_none() && device_name.is_empty() {
        return NetRef::None;
    }
    NetRef::Network {
        network,
        device_name,
    }
}

/// A network object's name and the ids backings use to point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NetworkName {
    pub(crate) network: MoRef,
    pub(crate) name: String,
    /// A distributed port group's key.
    pub(crate) portgroup_key: Option<String>,
    /// An opaque network's id.
    pub(crate) opaque_id: Option<String>,
}

/// The property paths [`network_names`] reads, by network type.
pub(crate) fn network_paths(kind: &str) -> &'static [&'static str] {
    match kind {
        "DistributedVirtualPortgroup" => &["name", "key"],
        "OpaqueNetwork" => &["name", "summary"],
        _ => &["name"],
    }
}

/// `RetrievePropertiesEx` of [`network_paths`] on networks.
pub(crate) fn network_names(node: Node<'_, '_>) -> Result<Vec<NetworkName>, VmwareError> {
    let (objs, _) = objects("RetrievePropertiesEx", node)?;
    Ok(objs
        .into_iter()
        .filter_map(|p| {
            let name = p.text("name")?.to_owned();
            let portgroup_key = p.text("key").map(str::to_owned);
            let opaque_id = p
                .get("summary")
                .and_then(|s| child_text(s, "opaqueNetworkId"))
                .map(|s| s.trim().to_owned());
            Some(NetworkName {
                network: p.obj,
                name,
                portgroup_key,
                opaque_id,
            })
        })
        .collect())
}

/// The network name a backing points at.
pub(crate) fn resolve_network(net: &NetRef, names: &[NetworkName]) -> String {
    let found = |pred: &dyn Fn(&NetworkName) -> bool| {
        names.iter().find(|n| pred(n)).map(|n| n.name.clone())
    };
    match net {
        NetRef::Network {
            network,
            device_name,
        } => network
            .as_ref()
            .and_then(|m| found(&|n| &n.network == m))
            .unwrap_or_else(|| {
                if device_name.is_empty() {
                    network
                        .as_ref()
                        .map(|m| m.value.clone())
                        .unwrap_or_default()
                } else {
                    device_name.clone()
                }
            }),
        NetRef::Portgroup { key } => found(&|n| n.portgroup_key.as_deref() == Some(key.as_str()))
            .or_else(|| {
                found(&|n| {
                    n.network.kind == "DistributedVirtualPortgroup" && &n.network.value == key
                })
            })
            .unwrap_or_else(|| key.clone()),
        NetRef::Opaque { id } => {
            found(&|n| n.opaque_id.as_deref() == Some(id.as_str())).unwrap_or_else(|| id.clone())
        }
        NetRef::None => String::new(),
    }
}

/// A task's `info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskInfo {
    pub(crate) name: String,
    /// `queued`, `running`, `success` or `error`.
    pub(crate) state: String,
    pub(crate) result: Option<MoRef>,
    pub(crate) fault_type: String,
    pub(crate) message: String,
}

/// `RetrievePropertiesEx` of `info` on a task.
pub(crate) fn task_info(node: Node<'_, '_>) -> Result<TaskInfo, VmwareError> {
    const M: &str = "RetrievePropertiesEx";
    let (objs, _) = objects(M, node)?;
    let props = objs
        .into_iter()
        .next()
        .ok_or_else(|| VmwareError::parse(M, "the task is not in the answer"))?;
    let info = props.required(M, "info")?;
    let state = child_text(info, "state")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| VmwareError::parse(M, format!("task {} has no state", props.obj)))?
        .to_owned();
    let name = child_text(info, "name")
        .or_else(|| child_text(info, "descriptionId"))
        .unwrap_or("")
        .trim()
        .to_owned();
    let error = child(info, "error");
    let fault_type = error
        .and_then(|e| child(e, "fault"))
        .map(fault_type_of)
        .unwrap_or_default();
    let message = error
        .and_then(|e| child_text(e, "localizedMessage"))
        .unwrap_or("")
        .trim()
        .to_owned();
    Ok(TaskInfo {
        name,
        state,
        result: child(info, "result").and_then(moref),
        fault_type,
        message,
    })
}

/// `QueryChangedDiskAreas`.
pub(crate) fn changed_areas(node: Node<'_, '_>) -> Result<ChangedAreas, VmwareError> {
    const M: &str = "QueryChangedDiskAreas";
    let rv = returnval(M, node)?;
    let areas = children(rv, "changedArea")
        .map(|a| Ok((number(M, a, "start")?, number(M, a, "length")?)))
        .collect::<Result<Vec<(u64, u64)>, VmwareError>>()?;
    Ok(ChangedAreas {
        start_offset: number(M, rv, "startOffset")?,
        length: number(M, rv, "length")?,
        areas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::read_answer;

    const ENV_START: &str = r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>"#;
    const ENV_END: &str = "</soapenv:Body></soapenv:Envelope>";

    fn answer(inner: &str) -> String {
        format!("{ENV_START}{inner}{ENV_END}")
    }

    #[test]
    fn vm_with_sata_disk_std_network_and_efi() {
        let body = answer(
            r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects>
            <obj type="VirtualMachine">vm-1</obj>
            <propSet><name>name</name><val xsi:type="xsd:string">web%2f01</val></propSet>
            <propSet><name>config.hardware.numCPU</name><val xsi:type="xsd:int">4</val></propSet>
            <propSet><name>config.hardware.memoryMB</name><val xsi:type="xsd:int">8192</val></propSet>
            <propSet><name>config.firmware</name><val xsi:type="xsd:string">efi</val></propSet>
            <propSet><name>config.guestId</name><val xsi:type="xsd:string">ubuntu64Guest</val></propSet>
            <propSet><name>config.changeTrackingEnabled</name><val xsi:type="xsd:boolean">true</val></propSet>
            <propSet><name>config.hardware.device</name><val xsi:type="ArrayOfVirtualDevice">
              <VirtualDevice xsi:type="VirtualAHCIController"><key>15000</key><busNumber>0</busNumber></VirtualDevice>
              <VirtualDevice xsi:type="VirtualDisk"><key>16000</key><deviceInfo><label>Hard disk 1</label></deviceInfo>
                <backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds &amp; co] web/web.vmdk</fileName><changeId>52 aa/3</changeId></backing>
                <controllerKey>15000</controllerKey><unitNumber>2</unitNumber><capacityInKB>1</capacityInKB><capacityInBytes>17179869184</capacityInBytes></VirtualDevice>
              <VirtualDevice xsi:type="VirtualVmxnet3"><key>4000</key><deviceInfo><label>Network adapter 1</label></deviceInfo>
                <backing xsi:type="VirtualEthernetCardNetworkBackingInfo"><deviceName>VM Network</deviceName><network type="Network">network-7</network></backing>
                <macAddress>00:50:56:aa:bb:cc</macAddress></VirtualDevice>
            </val></propSet>
            <propSet><name>network</name><val xsi:type="ArrayOfManagedObjectReference"><ManagedObjectReference type="Network">network-7</ManagedObjectReference></val></propSet>
            </objects></returnval></RetrievePropertiesExResponse>"#,
        );
        let props = read_answer("RetrievePropertiesEx", 200, &body, vm_properties).unwrap();
        let inv = &props.inventory;
        assert_eq!(inv.name, "web%2f01");
        assert_eq!((inv.cpus, inv.memory_mib), (4, 8192));
        assert_eq!(inv.firmware, "efi");
        assert!(inv.change_tracking);
        assert_eq!(inv.disks.len(), 1);
        assert_eq!(inv.disks[0].capacity_bytes, 17_179_869_184);
        assert_eq!(inv.disks[0].controller, "sata0:2");
        assert_eq!(inv.disks[0].file_name, "[ds & co] web/web.vmdk");
        assert_eq!(inv.disks[0].change_id.as_deref(), Some("52 aa/3"));
        assert_eq!(props.networks, vec![MoRef::new("Network", "network-7")]);
        let names = vec![NetworkName {
            network: MoRef::new("Network", "network-7"),
            name: "VM Network".into(),
            portgroup_key: None,
            opaque_id: None,
        }];
        assert_eq!(
            resolve_network(&props.nic_networks[0], &names),
            "VM Network"
        );
    }

    #[test]
    fn missing_property_names_the_fault() {
        let body = answer(
            r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects>
            <obj type="VirtualMachine">vm-1</obj>
            <propSet><name>name</name><val>x</val></propSet>
            <missingSet><path>config.hardware.numCPU</path><fault><fault xsi:type="NoPermission"/></fault></missingSet>
            </objects></returnval></RetrievePropertiesExResponse>"#,
        );
        let err = read_answer("RetrievePropertiesEx", 200, &body, vm_properties)
            .err()
            .unwrap();
        assert!(err.to_string().contains("NoPermission"), "{err}");
    }

    #[test]
    fn task_error_info() {
        let body = answer(
            r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects>
            <obj type="Task">task-9</obj><propSet><name>info</name><val xsi:type="TaskInfo">
            <name>CreateSnapshot_Task</name><state>error</state>
            <error><fault xsi:type="InvalidPowerState"/><localizedMessage>bad state</localizedMessage></error>
            </val></propSet></objects></returnval></RetrievePropertiesExResponse>"#,
        );
        let info = read_answer("RetrievePropertiesEx", 200, &body, task_info).unwrap();
        assert_eq!(info.state, "error");
        assert_eq!(info.fault_type, "InvalidPowerState");
        assert_eq!(info.message, "bad state");
    }

    #[test]
    fn portgroup_resolution_falls_back_to_key() {
        let net = NetRef::Portgroup {
            key: "dvportgroup-9".into(),
        };
        assert_eq!(resolve_network(&net, &[]), "dvportgroup-9");
        let names = vec![NetworkName {
            network: MoRef::new("DistributedVirtualPortgroup", "dvportgroup-9"),
            name: "Prod".into(),
            portgroup_key: Some("dvportgroup-9".into()),
            opaque_id: None,
        }];
        assert_eq!(resolve_network(&net, &names), "Prod");
    }
}
