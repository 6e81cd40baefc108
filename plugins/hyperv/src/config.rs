//! A Hyper-V VM's configuration as Hyper-V's own PowerShell emits it, turned
//! into the VM shape every source plugin records with its points.
//!
//! The user runs, on the Hyper-V host (PowerShell 5.1 or 7):
//!
//! ```powershell
//! $vm = Get-VM -Name web02
//! [pscustomobject]@{
//!   VM              = $vm | Select-Object Name, Id, Generation, ProcessorCount, MemoryStartup
//!   HardDrives      = @(Get-VMHardDiskDrive -VM $vm | Select-Object ControllerType, ControllerNumber, ControllerLocation, Path)
//!   NetworkAdapters = @(Get-VMNetworkAdapter -VM $vm | Select-Object Name, SwitchName, MacAddress,
//!                       @{n='VlanId'; e={(Get-VMNetworkAdapterVlan -VMNetworkAdapter $_).AccessVlanId}})
//!   Firmware        = if ($vm.Generation -eq 2) { Get-VMFirmware -VM $vm | Select-Object SecureBoot } else { $null }
//! } | ConvertTo-Json -Depth 4 | Set-Content -Encoding utf8 vm.json
//! ```
//!
//! `ConvertTo-Json` writes enums as numbers (`ControllerType` 0 = IDE, 1 = SCSI)
//! and sizes in bytes; `-Depth 4` keeps the nested objects. A one-element array
//! may come out as a bare object (PowerShell 5.1 unrolls it) — both are read.

use serde::{Deserialize, Deserializer, Serialize};

/// `vm.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HyperVExport {
    #[serde(rename = "VM")]
    pub vm: HvVm,
    #[serde(default, deserialize_with = "one_or_many")]
    pub hard_drives: Vec<HvDrive>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub network_adapters: Vec<HvNic>,
    #[serde(default)]
    pub firmware: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HvVm {
    pub name: String,
    #[serde(default)]
    pub id: Option<String>,
    pub generation: u8,
    pub processor_count: u32,
    /// Bytes.
    pub memory_startup: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HvDrive {
    /// 0 = IDE, 1 = SCSI (or the names).
    pub controller_type: serde_json::Value,
    pub controller_number: u32,
    pub controller_location: u32,
    /// The disk's path on the Hyper-V host, e.g. `C:\Hyper-V\web02\Virtual Hard Disks\web02.vhdx`.
    pub path: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HvNic {
    pub name: String,
    #[serde(default)]
    pub switch_name: Option<String>,
    /// 12 hex digits, no separators (`00155D010203`).
    #[serde(default)]
    pub mac_address: String,
    #[serde(default)]
    pub vlan_id: Option<u32>,
}

fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
        Null(()),
    }
    Ok(match OneOrMany::<T>::deserialize(d)? {
        OneOrMany::Many(v) => v,
        OneOrMany::One(t) => vec![t],
        OneOrMany::Null(()) => vec![],
    })
}

/// A disk of the VM: its name inside recovery points and its file in the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// The controller slot, e.g. `scsi0:0` or `ide0:1`.
    pub name: String,
    /// The image's path inside the site (the top of its differencing chain).
    pub path: String,
    /// Image format as the host detected it.
    pub format: String,
    pub size_bytes: u64,
    /// The path on the Hyper-V host, as `vm.json` gives it.
    pub host_path: String,
    /// The disk's Resilient Change Tracking id when its changes were last
    /// captured: recorded with the point, the baseline of the next capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rct_id: Option<String>,
}

/// A network adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// `nic0`, `nic1`, … in adapter order (Hyper-V adapter names repeat).
    pub name: String,
    /// The adapter's name in Hyper-V.
    pub label: String,
    /// `00:15:5d:01:02:03`.
    pub mac: String,
    /// The virtual switch: the network the failover maps.
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// The VM as recorded with its points (the shape the azure plugin reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// Generation 1 → `bios`, generation 2 → `uefi`.
    pub firmware: String,
    pub generation: u8,
    /// Generation 2: Secure Boot on (Get-VMFirmware `SecureBoot` 0 / `On`).
    #[serde(default)]
    pub secure_boot: bool,
    /// Hyper-V's id of the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperv_id: Option<String>,
    #[serde(default)]
    pub guest_os: String,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
}

/// Secure Boot from `Firmware.SecureBoot` (0 or "On" means on).
pub fn secure_boot(firmware: &Option<serde_json::Value>) -> bool {
    match firmware.as_ref().and_then(|f| f.get("SecureBoot")) {
        Some(serde_json::Value::Number(n)) => n.as_u64() == Some(0),
        Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("on"),
        _ => false,
    }
}

/// What was wrong with `vm.json`.
pub fn problem(path: &str, e: impl std::fmt::Display) -> String {
    format!(
        "{path}: not the JSON of the documented Get-VM export (VM.Name, VM.Generation, VM.ProcessorCount, VM.MemoryStartup, HardDrives[ControllerType, ControllerNumber, ControllerLocation, Path], NetworkAdapters[Name, SwitchName, MacAddress]): {e}"
    )
}

/// The disk's name inside recovery points: `scsi0:1`, `ide1:0`.
pub fn slot(d: &HvDrive) -> Result<String, String> {
    let kind = match &d.controller_type {
        serde_json::Value::Number(n) if n.as_u64() == Some(0) => "ide",
        serde_json::Value::Number(n) if n.as_u64() == Some(1) => "scsi",
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("ide") => "ide",
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("scsi") => "scsi",
        other => {
            return Err(format!(
                "ControllerType {other} is neither IDE (0) nor SCSI (1)"
            ));
        }
    };
    Ok(format!(
        "{kind}{}:{}",
        d.controller_number, d.controller_location
    ))
}

/// Candidate site paths for a Hyper-V host path: with `windows_root` stripped
/// when given, else the VM folder plus the path's last two and last one components.
pub fn site_candidates(host_path: &str, vm_dir: &str, windows_root: Option<&str>) -> Vec<String> {
    let norm = host_path.replace('\\', "/");
    let mut out = Vec::new();
    if let Some(root) = windows_root {
        let r = root.replace('\\', "/");
        let r = r.trim_end_matches('/');
        if norm.len() > r.len() && norm[..r.len()].eq_ignore_ascii_case(r) {
            out.push(norm[r.len()..].trim_start_matches('/').to_string());
        }
    }
    let parts: Vec<&str> = norm.split('/').filter(|p| !p.is_empty()).collect();
    let join = |rest: &[&str]| {
        if vm_dir.is_empty() || vm_dir == "." {
            rest.join("/")
        } else {
            format!("{vm_dir}/{}", rest.join("/"))
        }
    };
    if parts.len() >= 2 {
        out.push(join(&parts[parts.len() - 2..]));
    }
    if let Some(last) = parts.last() {
        out.push(join(&[last]));
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_macs_and_paths() {
        let d = HvDrive {
            controller_type: serde_json::json!(1),
            controller_number: 0,
            controller_location: 2,
            path: String::new(),
        };
        assert_eq!(slot(&d).as_deref(), Ok("scsi0:2"));
        let ide = HvDrive {
            controller_type: serde_json::json!("IDE"),
            ..d
        };
        assert_eq!(slot(&ide).as_deref(), Ok("ide0:2"));
        use lifeboat_plugin_sdk::replication::mac;
        assert_eq!(
            mac("MacAddress", "00155D010203").as_deref(),
            Ok("00:15:5d:01:02:03")
        );
        assert_eq!(
            mac("macAddress", "00-0D-3A-2B-4C-5D").as_deref(),
            Ok("00:0d:3a:2b:4c:5d")
        );
        assert!(mac("MacAddress", "00155D0102").is_err());
        assert_eq!(
            site_candidates(
                r"C:\Hyper-V\web02\Virtual Hard Disks\web02.vhdx",
                "web02",
                None
            ),
            vec!["web02/Virtual Hard Disks/web02.vhdx", "web02/web02.vhdx"]
        );
        assert_eq!(
            site_candidates(r"D:\VMs\web02\Disks\a.avhdx", "web02", Some(r"d:\VMs")),
            vec!["web02/Disks/a.avhdx", "web02/a.avhdx"]
        );
    }

    #[test]
    fn powershell_5_unrolls_single_arrays() {
        let one = r#"{"VM":{"Name":"a","Generation":1,"ProcessorCount":1,"MemoryStartup":1073741824},
            "HardDrives":{"ControllerType":0,"ControllerNumber":0,"ControllerLocation":0,"Path":"C:\\a.vhd"},
            "NetworkAdapters":null,"Firmware":null}"#;
        let e: HyperVExport = serde_json::from_str(one).unwrap();
        assert_eq!(e.hard_drives.len(), 1);
        assert!(e.network_adapters.is_empty());
    }
}
