//! The Hyper-V *host site*: a VM's configuration read live from the Hyper-V
//! host through WMI over WinRM (WS-Management, `root\virtualization\v2`),
//! turned into the same [`HyperVExport`] the folder site's `vm.json` gives.
//!
//! Each WMI class is one WS-Management `Enumerate` with a WQL filter and
//! `OptimizeEnumeration` (the instances come back in the answer; `Pull`
//! follows while the host says there are more). The requests are SOAP
//! `POST`s to the host's WinRM listener, over HTTPS with Basic authentication
//! (a local account; the host's WinRM must allow Basic over HTTPS), through
//! the host's allow-listed HTTP. The classes read:
//!
//! | class | what it gives |
//! |---|---|
//! | `Msvm_ComputerSystem` | the VM's id (`Name`) from its name (`ElementName`) |
//! | `Msvm_VirtualSystemSettingData` | generation (`VirtualSystemSubType`), Secure Boot |
//! | `Msvm_ProcessorSettingData` | vCPUs (`VirtualQuantity`) |
//! | `Msvm_MemorySettingData` | startup memory in MiB (`VirtualQuantity`) |
//! | `Msvm_ResourceAllocationSettingData` | disk controllers and drives (slots) |
//! | `Msvm_StorageAllocationSettingData` | each drive's virtual disk file (`HostResource`) |
//! | `Msvm_SyntheticEthernetPortSettingData` | adapters: name, MAC (`Address`) |
//! | `Msvm_EthernetPortAllocationSettingData` | each adapter's switch (`HostResource`) |
//! | `Msvm_VirtualEthernetSwitch` | switch names |
//!
//! The parsing is tested on WS-Management answers kept in `tests/` (written
//! after the MS-WSMV protocol and Hyper-V WMI documentation, labelled as
//! recordings); no WinRM server runs on Linux.

use std::collections::BTreeMap;

use lifeboat_plugin_sdk::StepError;
use lifeboat_plugin_sdk::http;
use serde::{Deserialize, Serialize};

use crate::config::{HvDrive, HvNic, HvVm, HyperVExport};

/// The `host` input of `discover`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostIn {
    /// The WinRM listener, e.g. `https://hv01.example.com:5986/wsman`.
    pub url: String,
    /// A local account of the host with rights to read Hyper-V's WMI.
    pub user: String,
    /// The VM's name on the host.
    pub vm: String,
}

/// One WMI instance: its class and its properties (arrays as several values;
/// a `xsi:nil` property as none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub class: String,
    pub props: BTreeMap<String, Vec<String>>,
}

impl Instance {
    fn get(&self, p: &str) -> Option<&str> {
        self.props
            .get(p)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

const NS_V2: &str = "http://schemas.microsoft.com/wbem/wsman/1/wmi/root/virtualization/v2/*";
const WQL: &str = "http://schemas.microsoft.com/wbem/wsman/1/WQL";

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A deterministic message id per request (WS-Addressing only needs it unique
/// per conversation).
fn message_id(n: u32) -> String {
    format!("uuid:6c1f5a3e-0000-4000-8000-{n:012x}")
}

fn envelope(url: &str, action: &str, n: u32, body: &str) -> String {
    format!(
        r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Header><a:To>{}</a:To><w:ResourceURI s:mustUnderstand="true">{NS_V2}</w:ResourceURI><a:ReplyTo><a:Address s:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo><a:Action s:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/09/enumeration/{action}</a:Action><w:MaxEnvelopeSize s:mustUnderstand="true">512000</w:MaxEnvelopeSize><a:MessageID>{}</a:MessageID><w:OperationTimeout>PT60S</w:OperationTimeout></s:Header><s:Body>{body}</s:Body></s:Envelope>"#,
        xml_escape(url),
        message_id(n)
    )
}

/// An `Enumerate` of the instances a WQL query selects.
pub fn enumerate_request(url: &str, n: u32, wql: &str) -> String {
    envelope(
        url,
        "Enumerate",
        n,
        &format!(
            r#"<n:Enumerate><w:OptimizeEnumeration/><w:MaxElements>512</w:MaxElements><w:Filter Dialect="{WQL}">{}</w:Filter></n:Enumerate>"#,
            xml_escape(wql)
        ),
    )
}

fn pull_request(url: &str, n: u32, context: &str) -> String {
    envelope(
        url,
        "Pull",
        n,
        &format!(
            "<n:Pull><n:EnumerationContext>{}</n:EnumerationContext><n:MaxElements>512</n:MaxElements></n:Pull>",
            xml_escape(context)
        ),
    )
}

/// What an `EnumerateResponse` or `PullResponse` carries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<Instance>,
    /// Set while the host has more to give (`Pull` with it).
    pub context: Option<String>,
}

/// Parse an `EnumerateResponse` / `PullResponse`, or turn a SOAP fault into
/// a message naming the WS-Management / WMI error.
pub fn parse_page(xml: &str) -> Result<Page, String> {
    let doc = roxmltree::Document::parse(xml.trim_start_matches('\u{feff}'))
        .map_err(|e| format!("not XML: {e}"))?;
    let body = doc
        .descendants()
        .find(|n| n.has_tag_name(("http://www.w3.org/2003/05/soap-envelope", "Body")))
        .ok_or("no SOAP Body")?;
    if let Some(f) = body.children().find(|n| n.tag_name().name() == "Fault") {
        let text = |name: &str| {
            f.descendants()
                .find(|n| n.tag_name().name() == name)
                .and_then(|n| {
                    n.descendants()
                        .filter(|d| d.is_text())
                        .map(|d| d.text().unwrap_or("").trim())
                        .find(|t| !t.is_empty())
                })
                .unwrap_or("")
                .to_string()
        };
        let code = f
            .descendants()
            .filter(|n| n.tag_name().name() == "Value")
            .filter_map(|n| n.text())
            .next_back()
            .unwrap_or("")
            .to_string();
        let wmi = f
            .descendants()
            .find(|n| n.tag_name().name() == "WSManFault")
            .and_then(|n| n.attribute("Code"))
            .map(|c| format!(" (WSManFault {c})"))
            .unwrap_or_default();
        return Err(format!("SOAP fault {code}{wmi}: {}", text("Text")));
    }
    let resp = body
        .children()
        .find(|n| n.is_element())
        .ok_or("an empty SOAP Body")?;
    let name = resp.tag_name().name();
    if name != "EnumerateResponse" && name != "PullResponse" {
        return Err(format!("expected an EnumerateResponse, got {name}"));
    }
    let mut page = Page::default();
    let mut end = false;
    for c in resp.children().filter(|n| n.is_element()) {
        match c.tag_name().name() {
            "EnumerationContext" => page.context = c.text().map(|t| t.trim().to_string()),
            "EndOfSequence" => end = true,
            "Items" => {
                for item in c.children().filter(|n| n.is_element()) {
                    let mut props: BTreeMap<String, Vec<String>> = BTreeMap::new();
                    for p in item.children().filter(|n| n.is_element()) {
                        let nil = p
                            .attributes()
                            .any(|a| a.name() == "nil" && a.value() == "true");
                        let e = props.entry(p.tag_name().name().to_string()).or_default();
                        if !nil {
                            e.push(p.text().unwrap_or("").to_string());
                        }
                    }
                    page.items.push(Instance {
                        class: item.tag_name().name().to_string(),
                        props,
                    });
                }
            }
            _ => {}
        }
    }
    if end {
        page.context = None;
    }
    Ok(page)
}

/// A WS-Management session with one host.
struct Session<'a> {
    host: &'a HostIn,
    auth: String,
    n: u32,
}

impl Session<'_> {
    fn post(&mut self, body: &str, what: &str) -> Result<Page, StepError> {
        let r = http::send(
            "POST",
            &self.host.url,
            &[
                ("authorization", self.auth.as_str()),
                ("content-type", "application/soap+xml;charset=UTF-8"),
            ],
            body.as_bytes(),
        )?;
        let text = r.text();
        match r.status {
            401 | 403 => Err(StepError::new(
                "denied",
                format!(
                    "WinRM at {} refused user {} (HTTP {}) reading {what}; check the password and that the host allows Basic authentication over HTTPS",
                    self.host.url, self.host.user, r.status
                ),
            )),
            200 | 400 | 500 => parse_page(&text).map_err(|m| {
                let code = if m.contains("AccessDenied") {
                    "denied"
                } else if r.status == 200 {
                    "io"
                } else {
                    "unavailable"
                };
                let hint = if code == "denied" {
                    "; the account needs to be in the host's Hyper-V Administrators group"
                } else {
                    ""
                };
                StepError::new(
                    code,
                    format!("WinRM at {} reading {what}: {m}{hint}", self.host.url),
                )
            }),
            s => Err(StepError::retryable(
                "unavailable",
                format!(
                    "WinRM at {} answered HTTP {s} reading {what}",
                    self.host.url
                ),
            )),
        }
    }

    /// Every instance a WQL query selects (following `Pull`).
    fn query(&mut self, wql: &str, what: &str) -> Result<Vec<Instance>, StepError> {
        self.n += 1;
        let mut page = self.post(&enumerate_request(&self.host.url, self.n, wql), what)?;
        let mut out = std::mem::take(&mut page.items);
        let mut pulls = 0;
        while let Some(ctx) = page.context.take() {
            pulls += 1;
            if pulls > 1000 {
                return Err(StepError::new(
                    "io",
                    format!("WinRM at {} kept paging {what}", self.host.url),
                ));
            }
            self.n += 1;
            page = self.post(&pull_request(&self.host.url, self.n, &ctx), what)?;
            out.append(&mut page.items);
        }
        Ok(out)
    }
}

/// The value of `KEY="…"` in a WMI object path, unescaped.
fn path_key(path: &str, key: &str) -> Option<String> {
    // the key follows `.` (the first) or `,` (the others): `Name` must not
    // match inside `CreationClassName`
    let start = [".", ","]
        .iter()
        .find_map(|sep| path.find(&format!("{sep}{key}=\"")))?
        + key.len()
        + 3;
    let mut out = String::new();
    let mut chars = path[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

fn wql_quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Read the VM's configuration from the host.
pub fn export(host: &HostIn, password: &str) -> Result<HyperVExport, StepError> {
    if !host.url.starts_with("https://") && !host.url.starts_with("http://") {
        return Err(StepError::invalid_input(format!(
            "host.url {:?} is not a WinRM URL such as https://hv01.example.com:5986/wsman",
            host.url
        )));
    }
    let mut s = Session {
        host,
        auth: format!(
            "Basic {}",
            base64(format!("{}:{password}", host.user).as_bytes())
        ),
        n: 0,
    };
    let vm_name = &host.vm;
    let systems = s.query(
        &format!(
            "SELECT * FROM Msvm_ComputerSystem WHERE ElementName='{}'",
            wql_quote(vm_name)
        ),
        "Msvm_ComputerSystem",
    )?;
    let vm = match systems.as_slice() {
        [one] => one,
        [] => {
            return Err(StepError::new(
                "not-found",
                format!(
                    "the Hyper-V host at {} has no VM named {vm_name:?}",
                    host.url
                ),
            ));
        }
        many => {
            return Err(StepError::invalid_input(format!(
                "the Hyper-V host at {} has {} VMs named {vm_name:?}; rename one",
                host.url,
                many.len()
            )));
        }
    };
    let id = vm.get("Name").unwrap_or("").to_string();
    if id.is_empty() {
        return Err(StepError::new(
            "io",
            format!("Msvm_ComputerSystem of {vm_name} has no Name (its id)"),
        ));
    }
    let of_vm = |class: &str| {
        format!(
            "SELECT * FROM {class} WHERE InstanceID LIKE 'Microsoft:{}%'",
            wql_quote(&id)
        )
    };
    let missing = |class: &str, what: &str| {
        StepError::new(
            "io",
            format!("{class} of VM {vm_name} ({id}) has no {what}"),
        )
    };
    let vssd = s.query(
        &format!(
            "SELECT * FROM Msvm_VirtualSystemSettingData WHERE VirtualSystemIdentifier='{}' AND VirtualSystemType='Microsoft:Hyper-V:System:Realized'",
            wql_quote(&id)
        ),
        "Msvm_VirtualSystemSettingData",
    )?;
    let vssd = vssd
        .first()
        .ok_or_else(|| missing("Msvm_VirtualSystemSettingData", "realized settings"))?;
    let generation = match vssd.get("VirtualSystemSubType") {
        Some("Microsoft:Hyper-V:SubType:1") => 1,
        Some("Microsoft:Hyper-V:SubType:2") => 2,
        other => {
            return Err(StepError::new(
                "io",
                format!("VM {vm_name}: VirtualSystemSubType {other:?} is not generation 1 or 2"),
            ));
        }
    };
    let number = |i: &Instance, p: &str, class: &str| -> Result<u64, StepError> {
        i.get(p)
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| missing(class, p))
    };
    let cpu = s.query(
        &of_vm("Msvm_ProcessorSettingData"),
        "Msvm_ProcessorSettingData",
    )?;
    let cpus = number(
        cpu.first()
            .ok_or_else(|| missing("Msvm_ProcessorSettingData", "instance"))?,
        "VirtualQuantity",
        "Msvm_ProcessorSettingData",
    )?;
    let mem = s.query(&of_vm("Msvm_MemorySettingData"), "Msvm_MemorySettingData")?;
    let mem_mib = number(
        mem.first()
            .ok_or_else(|| missing("Msvm_MemorySettingData", "instance"))?,
        "VirtualQuantity",
        "Msvm_MemorySettingData",
    )?;

    // drives: storage → drive → controller
    let rasd = s.query(
        &of_vm("Msvm_ResourceAllocationSettingData"),
        "Msvm_ResourceAllocationSettingData",
    )?;
    let sasd = s.query(
        &of_vm("Msvm_StorageAllocationSettingData"),
        "Msvm_StorageAllocationSettingData",
    )?;
    let by_id = |list: &[Instance], path: &str| -> Option<usize> {
        let want = path_key(path, "InstanceID")?;
        list.iter()
            .position(|i| i.get("InstanceID") == Some(want.as_str()))
    };
    let controllers: Vec<&Instance> = rasd
        .iter()
        .filter(|r| {
            r.get("ResourceSubType")
                .is_some_and(|t| t.contains("SCSI Controller") || t.contains("IDE Controller"))
        })
        .collect();
    let mut hard_drives = Vec::new();
    for d in sasd
        .iter()
        .filter(|d| d.get("ResourceSubType") == Some("Microsoft:Hyper-V:Virtual Hard Disk"))
    {
        let path = d.get("HostResource").unwrap_or("").to_string();
        let drive = d
            .get("Parent")
            .and_then(|p| by_id(&rasd, p))
            .map(|i| &rasd[i])
            .ok_or_else(|| missing("Msvm_StorageAllocationSettingData", "Parent drive"))?;
        let ctrl = drive
            .get("Parent")
            .and_then(|p| path_key(p, "InstanceID"))
            .and_then(|id| {
                controllers
                    .iter()
                    .find(|c| c.get("InstanceID") == Some(id.as_str()))
            })
            .ok_or_else(|| missing("Msvm_ResourceAllocationSettingData", "drive controller"))?;
        let subtype = ctrl.get("ResourceSubType").unwrap_or("");
        let is_scsi = subtype.contains("SCSI");
        // SCSI controllers carry no address: number them in their order
        let number = match ctrl.get("Address").and_then(|a| a.parse::<u32>().ok()) {
            Some(n) if !is_scsi => n,
            _ => controllers
                .iter()
                .filter(|c| c.get("ResourceSubType") == Some(subtype))
                .position(|c| c.get("InstanceID") == ctrl.get("InstanceID"))
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(0),
        };
        let location = drive
            .get("AddressOnParent")
            .and_then(|a| a.parse::<u32>().ok())
            .ok_or_else(|| missing("Msvm_ResourceAllocationSettingData", "AddressOnParent"))?;
        hard_drives.push(HvDrive {
            controller_type: serde_json::json!(if is_scsi { 1 } else { 0 }),
            controller_number: number,
            controller_location: location,
            path,
        });
    }
    hard_drives.sort_by_key(|d| {
        (
            d.controller_type.as_u64(),
            d.controller_number,
            d.controller_location,
        )
    });

    // adapters: port settings → allocation (switch) → switch name
    let ports = s.query(
        &of_vm("Msvm_SyntheticEthernetPortSettingData"),
        "Msvm_SyntheticEthernetPortSettingData",
    )?;
    let epasd = s.query(
        &of_vm("Msvm_EthernetPortAllocationSettingData"),
        "Msvm_EthernetPortAllocationSettingData",
    )?;
    let switches = if epasd.is_empty() {
        Vec::new()
    } else {
        s.query(
            "SELECT * FROM Msvm_VirtualEthernetSwitch",
            "Msvm_VirtualEthernetSwitch",
        )?
    };
    let mut network_adapters = Vec::new();
    for p in &ports {
        let pid = p.get("InstanceID").unwrap_or("");
        let alloc = epasd.iter().find(|a| {
            a.get("Parent")
                .and_then(|x| path_key(x, "InstanceID"))
                .is_some_and(|x| x == pid)
        });
        let switch_name = alloc
            .and_then(|a| a.get("HostResource"))
            .and_then(|h| path_key(h, "Name"))
            .and_then(|guid| {
                switches
                    .iter()
                    .find(|w| w.get("Name") == Some(guid.as_str()))
                    .and_then(|w| w.get("ElementName"))
                    .map(str::to_string)
            });
        network_adapters.push(HvNic {
            name: p
                .get("ElementName")
                .unwrap_or("Network Adapter")
                .to_string(),
            switch_name,
            mac_address: p.get("Address").unwrap_or("").to_string(),
            vlan_id: None,
        });
    }
    let firmware = (generation == 2).then(|| {
        let on = vssd
            .get("SecureBootEnabled")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        serde_json::json!({ "SecureBoot": if on { 0 } else { 1 } })
    });
    Ok(HyperVExport {
        vm: HvVm {
            name: vm.get("ElementName").unwrap_or(vm_name).to_string(),
            id: Some(id.clone()),
            generation,
            processor_count: u32::try_from(cpus).unwrap_or(u32::MAX),
            memory_startup: mem_mib << 20,
        },
        hard_drives,
        network_adapters,
        firmware,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_and_base64() {
        let p = r#"\\HV01\root\virtualization\v2:Msvm_ResourceAllocationSettingData.InstanceID="Microsoft:6E3C\\83F8\\0\\0\\D""#;
        assert_eq!(
            path_key(p, "InstanceID").unwrap(),
            r"Microsoft:6E3C\83F8\0\0\D"
        );
        assert_eq!(path_key(p, "Name"), None);
        let sw = r#"\\HV01\root\virtualization\v2:Msvm_VirtualEthernetSwitch.CreationClassName="Msvm_VirtualEthernetSwitch",Name="B4E3""#;
        assert_eq!(path_key(sw, "Name").unwrap(), "B4E3");
        assert_eq!(
            path_key(sw, "CreationClassName").unwrap(),
            "Msvm_VirtualEthernetSwitch"
        );
        assert_eq!(base64(b"lifeboat:pw"), "bGlmZWJvYXQ6cHc=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(wql_quote("o'brien"), "o\\'brien");
    }

    #[test]
    fn faults_and_pages() {
        let fault = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>w:InvalidSelectors</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">The WS-Management service cannot process the request because the WQL query is invalid.</s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2150858778"/></s:Detail></s:Fault></s:Body></s:Envelope>"#;
        let e = parse_page(fault).unwrap_err();
        assert!(e.contains("w:InvalidSelectors"), "{e}");
        assert!(e.contains("WSManFault 2150858778"), "{e}");
        assert!(e.contains("WQL query is invalid"), "{e}");
        let page = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><s:Body><n:EnumerateResponse><n:EnumerationContext>uuid:1</n:EnumerationContext><w:Items><p:Msvm_X xmlns:p="urn:x"><p:A>1</p:A><p:B xsi:nil="true"/><p:C>x</p:C><p:C>y</p:C></p:Msvm_X></w:Items></n:EnumerateResponse></s:Body></s:Envelope>"#;
        let p = parse_page(page).unwrap();
        assert_eq!(p.context.as_deref(), Some("uuid:1"));
        assert_eq!(p.items[0].class, "Msvm_X");
        assert_eq!(p.items[0].props["C"], ["x", "y"]);
        assert!(p.items[0].props["B"].is_empty());
        assert!(parse_page("<x/>").is_err());
    }
}
