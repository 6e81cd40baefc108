//! The protected VM as the source plugin recorded it in its recovery points
//! (`meta` of `transfer.seal`): what a failover needs to rebuild it.

use lifeboat_azure_arm::{Firmware, OsType};
use lifeboat_plugin_sdk::StepError;
use serde::{Deserialize, Serialize};

/// The VM's configuration (`VmConfig` of the VMware plugin; any source
/// plugin that records the same fields works). Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceVm {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// `bios` or `uefi` (`efi` is read as `uefi`).
    #[serde(default)]
    pub firmware: String,
    /// The platform's guest OS id, e.g. `debian12-64` or `windows2019srv-64`.
    #[serde(default)]
    pub guest_os: String,
    /// In controller order: data disks get their LUNs in this order.
    #[serde(default)]
    pub disks: Vec<SourceDisk>,
    #[serde(default)]
    pub nics: Vec<SourceNic>,
    /// The Azure size the VM had, when its source is Azure: a failover to
    /// another region keeps it unless `size` says otherwise.
    #[serde(default)]
    pub vm_size: Option<String>,
}

/// A disk of the source VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceDisk {
    /// Its name inside recovery points, e.g. `scsi0:0`.
    pub name: String,
    #[serde(default)]
    pub size_bytes: u64,
}

/// A network adapter of the source VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceNic {
    /// e.g. `ethernet0`.
    pub name: String,
    #[serde(default)]
    pub mac: String,
    /// The source network (VMware port group) it is connected to.
    pub network: String,
    /// A static IPv4 address the VM keeps, if it has one.
    #[serde(default)]
    pub ip: Option<String>,
}

impl SourceVm {
    /// Read the `vm` input (or a point's `meta`), naming what is wrong.
    pub fn from_value(what: &str, v: &serde_json::Value) -> Result<SourceVm, StepError> {
        serde_json::from_value(v.clone()).map_err(|e| {
            StepError::invalid_input(format!(
                "{what} is not a VM configuration {{name, cpus, memory_mib, firmware, guest_os, disks: [{{name, size_bytes}}], nics: [{{name, mac, network, ip?}}]}}: {e}"
            ))
        })
    }

    /// UEFI VMs become Azure generation 2 VMs, BIOS VMs generation 1.
    pub fn firmware(&self) -> Result<Firmware, StepError> {
        match self.firmware.to_ascii_lowercase().as_str() {
            "" | "bios" => Ok(Firmware::Bios),
            "uefi" | "efi" => Ok(Firmware::Uefi),
            other => Err(StepError::invalid_input(format!(
                "VM {} has firmware {other:?}; expected `bios` or `uefi`",
                self.name
            ))),
        }
    }

    /// The guest OS family Azure records on the OS disk, when the guest id
    /// tells it (`None` for ids such as `other` or `freebsd`).
    pub fn os_type(&self) -> Option<OsType> {
        os_type_of(&self.guest_os)
    }
}

/// Windows or Linux from a hypervisor's guest OS id (VMware's `guestOS`,
/// e.g. `windows2019srv-64`, `debian12-64`, `rhel9-64`, `other5xlinux-64`).
pub fn os_type_of(guest_os: &str) -> Option<OsType> {
    let g = guest_os.to_ascii_lowercase();
    if g.starts_with("win") || g.contains("windows") {
        return Some(OsType::Windows);
    }
    const LINUX: &[&str] = &[
        "linux",
        "debian",
        "ubuntu",
        "rhel",
        "centos",
        "sles",
        "suse",
        "oracle",
        "fedora",
        "alma",
        "rocky",
        "coreos",
        "photon",
        "amazonlinux",
        "asianux",
        "mandrake",
        "mandriva",
        "turbolinux",
        "redhat",
        "flatcar",
    ];
    if LINUX.iter().any(|l| g.contains(l)) {
        return Some(OsType::Linux);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_ids() {
        for (id, want) in [
            ("debian12-64", Some(OsType::Linux)),
            ("rhel9-64", Some(OsType::Linux)),
            ("other5xLinux-64", Some(OsType::Linux)),
            ("ubuntu-64", Some(OsType::Linux)),
            ("windows2019srv-64", Some(OsType::Windows)),
            ("windows9-64", Some(OsType::Windows)),
            ("winNetEnterprise", Some(OsType::Windows)),
            ("other", None),
            ("freebsd13-64", None),
            ("", None),
        ] {
            assert_eq!(os_type_of(id), want, "{id}");
        }
    }

    #[test]
    fn firmware_and_parse_errors() {
        let v = serde_json::json!({"name": "web01", "cpus": 2, "memory_mib": 4096, "firmware": "efi",
            "disks": [{"name": "scsi0:0", "path": "x", "format": "raw", "size_bytes": 1}],
            "nics": [], "extra": true});
        let vm = SourceVm::from_value("`vm`", &v).unwrap();
        assert_eq!(vm.firmware().unwrap(), Firmware::Uefi);
        let mut bad = vm.clone();
        bad.firmware = "coreboot".into();
        let e = bad.firmware().unwrap_err();
        assert!(e.message.contains("\"coreboot\""), "{e}");
        let e = SourceVm::from_value("`vm`", &serde_json::json!({"name": "x"})).unwrap_err();
        assert_eq!(e.code, "invalid-input");
        assert!(
            e.message.starts_with("`vm` is not a VM configuration"),
            "{e}"
        );
        assert!(e.message.contains("cpus"), "{e}");
    }
}
