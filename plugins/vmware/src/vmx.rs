//! VMware's `.vmx`: `key = "value"` lines. Only what a recovery needs is read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A parse problem with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmxError {
    pub line: usize,
    pub message: String,
}

/// The keys of a `.vmx`, lower-cased, with the line each came from.
#[derive(Debug, Default)]
pub struct Vmx {
    pub keys: BTreeMap<String, (String, usize)>,
}

impl Vmx {
    pub fn parse(text: &str) -> Result<Vmx, VmxError> {
        let mut keys = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(VmxError {
                    line: i + 1,
                    message: format!("expected `key = \"value\"`, found {line:?}"),
                });
            };
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            let v = if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
                &v[1..v.len() - 1]
            } else if v.starts_with('"') {
                return Err(VmxError {
                    line: i + 1,
                    message: format!("unterminated quoted value for `{k}`"),
                });
            } else {
                v
            };
            if k.is_empty() || k.contains(char::is_whitespace) {
                return Err(VmxError {
                    line: i + 1,
                    message: format!("{k:?} is not a valid key"),
                });
            }
            keys.insert(k, (v.to_string(), i + 1));
        }
        Ok(Vmx { keys })
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.keys.get(k).map(|(v, _)| v.as_str())
    }

    pub fn line(&self, k: &str) -> usize {
        self.keys.get(k).map(|(_, l)| *l).unwrap_or(0)
    }

    fn truthy(&self, k: &str) -> bool {
        self.get(k)
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("yes"))
    }
}

/// A disk of the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// The controller slot, e.g. `scsi0:0`: the disk's name in recovery points.
    pub name: String,
    /// The image's path inside the site.
    pub path: String,
    /// Image format as the host detected it.
    pub format: String,
    pub size_bytes: u64,
    /// vCenter mode: the disk's device key (`QueryChangedDiskAreas` asks by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<i32>,
    /// vCenter mode: the backing file as vCenter names it, `[DATASTORE] folder/file.vmdk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore_path: Option<String>,
    /// vCenter mode: the changed-block tracking id of the disk's state, when
    /// vCenter reports one. In a recovery point's `meta` it is the id read
    /// just before the point's VMware snapshot was taken, so that the next
    /// capture asks `QueryChangedDiskAreas` for everything changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
}

/// A network adapter of the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// e.g. `ethernet0`.
    pub name: String,
    pub mac: String,
    /// The port group / network name.
    pub network: String,
    /// A static IP declared to the workflow, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// What a failover needs to know about the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// `bios` or `uefi`.
    pub firmware: String,
    pub guest_os: String,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    /// Set when the VM was discovered through vCenter rather than a `.vmx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcenter: Option<VcenterFacts>,
}

/// What vCenter said about the VM, beyond what a recovery needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcenterFacts {
    /// The SDK endpoint the VM was read from (`https://vc.example.com/sdk`).
    pub url: String,
    /// The VM's managed object id, e.g. `vm-42`.
    pub moref: String,
    /// Whether changed-block tracking was on (`config.changeTrackingEnabled`).
    pub change_tracking: bool,
}

/// A disk as the `.vmx` names it (before the host inspected it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRef {
    pub name: String,
    pub file: String,
    pub line: usize,
}

/// The VM's settings, disks (controller order) and NICs from a `.vmx`.
pub fn read(vmx: &Vmx) -> Result<(VmConfig, Vec<DiskRef>), VmxError> {
    let num = |k: &str, default: u64| -> Result<u64, VmxError> {
        match vmx.get(k) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| VmxError {
                line: vmx.line(k),
                message: format!("`{k}` must be a number, found {v:?}"),
            }),
        }
    };
    let name = vmx
        .get("displayname")
        .filter(|n| !n.is_empty())
        .ok_or(VmxError {
            line: 0,
            message: "no `displayName`: is this a VMware .vmx file?".into(),
        })?
        .to_string();
    let cpus = num("numvcpus", 1)?;
    let memory_mib = num("memsize", 0)?;
    if memory_mib == 0 {
        return Err(VmxError {
            line: vmx.line("memsize"),
            message: "no `memsize` (memory in MiB)".into(),
        });
    }
    let firmware = match vmx.get("firmware") {
        Some("efi") => "uefi",
        None | Some("bios") => "bios",
        Some(other) => {
            return Err(VmxError {
                line: vmx.line("firmware"),
                message: format!("unknown firmware {other:?} (expected `bios` or `efi`)"),
            });
        }
    }
    .to_string();
    let mut disks = Vec::new();
    for (k, (v, line)) in &vmx.keys {
        let Some(slot) = k.strip_suffix(".filename") else {
            continue;
        };
        let Some((bus, _unit)) = slot.split_once(':') else {
            continue;
        };
        if !["scsi", "sata", "ide", "nvme"]
            .iter()
            .any(|b| bus.starts_with(b) && bus[b.len()..].chars().all(|c| c.is_ascii_digit()))
        {
            continue;
        }
        // absent `present` means present; disks only (not CD images)
        if vmx.get(&format!("{slot}.present")).is_some() && !vmx.truthy(&format!("{slot}.present"))
        {
            continue;
        }
        let dev = vmx.get(&format!("{slot}.devicetype")).unwrap_or("disk");
        if dev.contains("cdrom") || !v.to_ascii_lowercase().ends_with(".vmdk") {
            continue;
        }
        disks.push(DiskRef {
            name: slot.to_string(),
            file: v.clone(),
            line: *line,
        });
    }
    let mut nics = Vec::new();
    for n in 0..10 {
        let p = format!("ethernet{n}");
        if !vmx.truthy(&format!("{p}.present")) {
            continue;
        }
        let mac = vmx
            .get(&format!("{p}.generatedaddress"))
            .or_else(|| vmx.get(&format!("{p}.address")))
            .unwrap_or("")
            .to_ascii_lowercase();
        let network = vmx
            .get(&format!("{p}.networkname"))
            .unwrap_or("")
            .to_string();
        if network.is_empty() {
            return Err(VmxError {
                line: vmx.line(&format!("{p}.present")),
                message: format!("`{p}` has no `{p}.networkName`"),
            });
        }
        nics.push(Nic {
            name: p,
            mac,
            network,
            ip: None,
        });
    }
    Ok((
        VmConfig {
            name,
            cpus: u32::try_from(cpus).unwrap_or(u32::MAX),
            memory_mib,
            firmware,
            guest_os: vmx.get("guestos").unwrap_or("other").to_string(),
            disks: Vec::new(),
            nics,
            vcenter: None,
        },
        disks,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const VMX: &str = r#".encoding = "UTF-8"
config.version = "8"
displayName = "web01"
numvcpus = "2"
memSize = "4096"
firmware = "efi"
guestOS = "debian12-64"
scsi0.present = "TRUE"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "web01.vmdk"
scsi0:1.fileName = "web01_1.vmdk"
ide1:0.present = "TRUE"
ide1:0.deviceType = "cdrom-image"
ide1:0.fileName = "debian.iso"
ethernet0.present = "TRUE"
ethernet0.networkName = "VM Network"
ethernet0.addressType = "generated"
ethernet0.generatedAddress = "00:50:56:AB:CD:EF"
ethernet1.present = "FALSE"
"#;

    #[test]
    fn reads_a_vmx() {
        let (c, disks) = read(&Vmx::parse(VMX).unwrap()).unwrap();
        assert_eq!((c.name.as_str(), c.cpus, c.memory_mib), ("web01", 2, 4096));
        assert_eq!(c.firmware, "uefi");
        let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["scsi0:0", "scsi0:1"]);
        assert_eq!(c.nics.len(), 1);
        assert_eq!(c.nics[0].mac, "00:50:56:ab:cd:ef");
        assert_eq!(c.nics[0].network, "VM Network");
    }

    #[test]
    fn corrupt_lines_name_their_line() {
        let e = Vmx::parse("displayName = \"a\"\nthis is not a vmx line\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e =
            read(&Vmx::parse("displayName = \"a\"\nmemsize = \"lots\"\n").unwrap()).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("memsize"));
        let e = read(&Vmx::parse("numvcpus = \"1\"\n").unwrap()).unwrap_err();
        assert!(e.message.contains("displayName"));
    }
}
