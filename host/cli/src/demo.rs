//! `lifeboat demo`: a recovery lab on this machine, made by one command — a
//! VMware folder site (a VM's `.vmx` and VMDKs), a Hyper-V folder site (a VM's
//! Get-VM export and VHDX disks), an Azure storage account laid out as a
//! folder, an Azure VM's region (page blobs as fixed VHD files and the VM's ARM
//! export) with a second region to recover into, and an initialised vault with its key file. `demo change` plays the
//! guests writing to their disks and records the changes the way VMware's
//! changed-block tracking and Hyper-V's resilient change tracking report them.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::Subcommand;
use lifeboat_vault::{Key, Vault, WriteFormat};

use crate::load::Failure;

/// Where `lifeboat demo init` puts the lab by default (the example workflows'
/// default `lab` input points here, relative to the repository).
pub const DEFAULT_LAB: &str = ".lifeboat/lab";

#[derive(Subcommand, Debug)]
pub enum DemoCommand {
    /// Make the demo lab: VMware folder site, Azure storage folder, vault and key.
    Init {
        /// Where (default .lifeboat/lab).
        #[arg(default_value = DEFAULT_LAB)]
        dir: PathBuf,
        /// Replace an existing lab.
        #[arg(long)]
        force: bool,
    },
    /// The guest writes to its disks: the next replication is incremental.
    Change {
        /// The lab (default .lifeboat/lab).
        #[arg(default_value = DEFAULT_LAB)]
        dir: PathBuf,
    },
}

const VM: &str = "web01";

/// The demo VM's disks: controller slot, file, size.
const DISKS: &[(&str, &str, u64)] = &[
    ("scsi0:0", "web01.vmdk", 64 << 20),
    ("scsi0:1", "web01_1.vmdk", 32 << 20),
];

/// The Hyper-V demo VM (generation 2) and its disks, in `Virtual Hard Disks/`.
const HV_VM: &str = "web02";
const HV_DISKS: &[(&str, &str, u64)] = &[
    ("scsi0:0", "web02.vhdx", 64 << 20),
    ("scsi0:1", "web02_data.vhdx", 32 << 20),
];

/// The Azure demo VM (generation 2, region A) and its disks: page blobs (fixed
/// VHD) in `azure-region-a/vhds/`.
const AZ_VM: &str = "web03";
const AZ_DISKS: &[(&str, &str, u64)] = &[
    ("os", "web03-os.vhd", 64 << 20),
    ("lun0", "web03-data.vhd", 32 << 20),
];
const AZ_SUB: &str = "/subscriptions/6a1c2f0e-4b7d-4f3a-9c2e-1d5b8e7f0a11/resourceGroups/prod-we";

/// What generation `g` of the guest wrote: (disk index, offset, length, seed).
fn writes(g: u32) -> Vec<(usize, u64, u64, u64)> {
    let mut w = vec![
        (0, 0, 1 << 20, 1),
        (0, 4 << 20, 8 << 20, 2),
        (0, 40 << 20, 3 << 20, 3),
        (1, 0, 2 << 20, 4),
    ];
    for n in 2..=g {
        let n64 = u64::from(n);
        w.push((0, (5 << 20) + (n64 << 16), 256 << 10, 100 + n64));
        w.push((0, (20 << 20) + (n64 << 20), 64 << 10, 200 + n64));
        w.push((1, (1 << 20) + (n64 << 17), 128 << 10, 300 + n64));
    }
    w
}

fn fill(seed: u64, buf: &mut [u8]) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for (i, b) in buf.iter_mut().enumerate() {
        if i % 4096 < 64 {
            // a readable header per block: what wrote it
            *b = b"lifeboat demo block "[(i % 4096) % 20];
            continue;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 32) as u8 & 0x3f | 0x20;
    }
}

/// Write generation `g` of every disk (`disks`, in `format`).
fn write_disks(
    vm_dir: &Path,
    disks: &[(&str, &str, u64)],
    format: WriteFormat,
    g: u32,
) -> anyhow::Result<()> {
    let w = writes(g);
    for (i, (_, file, size)) in disks.iter().enumerate() {
        // later writes win: apply in order into an in-memory map of regions
        let mut regions: Vec<(u64, Vec<u8>)> = Vec::new();
        for &(d, off, len, seed) in &w {
            if d != i {
                continue;
            }
            let mut buf = vec![0u8; len as usize];
            fill(seed, &mut buf);
            regions.push((off, buf));
        }
        let path = vm_dir.join(file);
        let tmp = vm_dir.join(format!(".{file}.new"));
        let mut out = lifeboat_disk::create(&tmp, format, *size)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // merge overlapping writes into 64 KiB-aligned grains, in ascending order
        let grain = 64u64 << 10;
        let mut grains: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
        for (off, data) in &regions {
            let mut pos = *off;
            let end = off + data.len() as u64;
            while pos < end {
                let g0 = pos / grain * grain;
                let e = grains
                    .entry(g0)
                    .or_insert_with(|| vec![0u8; grain as usize]);
                let upto = end.min(g0 + grain);
                let src = &data[(pos - off) as usize..(upto - off) as usize];
                e[(pos - g0) as usize..(upto - g0) as usize].copy_from_slice(src);
                pos = upto;
            }
        }
        for (off, data) in grains {
            let len = (size - off).min(grain) as usize;
            out.write_at(off, &data[..len])
                .with_context(|| format!("writing {}", tmp.display()))?;
        }
        out.finish()
            .with_context(|| format!("finishing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    }
    Ok(())
}

/// `changedArea` list of every disk since the lab was made (a superset of the
/// changes since any later recovery point, which is what CBT guarantees too).
fn write_cbt(vm_dir: &Path, g: u32) -> anyhow::Result<()> {
    let dir = vm_dir.join("cbt");
    std::fs::create_dir_all(&dir)?;
    let base = writes(1).len();
    for (i, (slot, _, size)) in DISKS.iter().enumerate() {
        let mut areas: Vec<(u64, u64)> = writes(g)
            .into_iter()
            .skip(base)
            .filter(|w| w.0 == i)
            .map(|w| (w.1, w.2))
            .collect();
        areas.sort_unstable();
        let json = serde_json::json!({
            "startOffset": 0,
            "length": size,
            "changedArea": areas.iter().map(|(s, l)| serde_json::json!({"start": s, "length": l})).collect::<Vec<_>>(),
        });
        let name = format!("{}.json", slot.replace(':', "-"));
        std::fs::write(dir.join(name), serde_json::to_string_pretty(&json)? + "\n")?;
    }
    std::fs::write(vm_dir.join("cbt").join("generation"), format!("{g}\n"))?;
    Ok(())
}

/// What `Msvm_ImageManagementService.GetVirtualDiskChanges` answers for each
/// Hyper-V disk since the previous generation's RCT id, as JSON (see
/// plugins/hyperv): the writes of generation `g` alone.
fn write_rct(vm_dir: &Path, g: u32) -> anyhow::Result<()> {
    let dir = vm_dir.join("rct");
    std::fs::create_dir_all(&dir)?;
    let before = writes(g.saturating_sub(1).max(1)).len();
    let now = writes(g);
    for (i, (slot, _, size)) in HV_DISKS.iter().enumerate() {
        let mut ranges: Vec<(u64, u64)> = if g <= 1 {
            now.iter()
                .filter(|w| w.0 == i)
                .map(|w| (w.1, w.2))
                .collect()
        } else {
            now.iter()
                .skip(before)
                .filter(|w| w.0 == i)
                .map(|w| (w.1, w.2))
                .collect()
        };
        ranges.sort_unstable();
        let id = |n: u32| format!("rct:{HV_VM}-{}:{n}", slot.replace(':', "-"));
        let json = serde_json::json!({
            "Path": format!("C:\\Hyper-V\\{HV_VM}\\Virtual Hard Disks\\{}", HV_DISKS[i].1),
            "LimitId": id(g.saturating_sub(1)),
            "CurrentId": id(g),
            "ByteOffset": 0,
            "ByteLength": size,
            "ProcessedByteLength": size,
            "ChangedByteOffsets": ranges.iter().map(|r| r.0).collect::<Vec<_>>(),
            "ChangedByteLengths": ranges.iter().map(|r| r.1).collect::<Vec<_>>(),
        });
        let name = format!("{}.json", slot.replace(':', "-"));
        std::fs::write(dir.join(name), serde_json::to_string_pretty(&json)? + "\n")?;
    }
    std::fs::write(dir.join("generation"), format!("{g}\n"))?;
    Ok(())
}

/// `vm.json`: the Get-VM export of the documented PowerShell command.
fn vm_json() -> String {
    let drives: Vec<serde_json::Value> = HV_DISKS
        .iter()
        .enumerate()
        .map(|(n, (_, file, _))| {
            serde_json::json!({
                "ControllerType": 1,
                "ControllerNumber": 0,
                "ControllerLocation": n,
                "Path": format!("C:\\Hyper-V\\{HV_VM}\\Virtual Hard Disks\\{file}"),
            })
        })
        .collect();
    let v = serde_json::json!({
        "VM": {
            "Name": HV_VM,
            "Id": "6e3c1c2a-5b7d-4e8f-9a0b-1c2d3e4f5a6b",
            "Generation": 2,
            "ProcessorCount": 2,
            "MemoryStartup": 2147483648u64,
        },
        "HardDrives": drives,
        "NetworkAdapters": [
            {"Name": "Network Adapter", "SwitchName": "External", "MacAddress": "00155D0A1001", "VlanId": 0},
            {"Name": "Network Adapter", "SwitchName": "Backend", "MacAddress": "00155D0A1002", "VlanId": 20},
        ],
        "Firmware": {"SecureBoot": 0},
    });
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

/// `vm.json` of the Azure VM: ARM's answer to `GET …/virtualMachines/web03?$expand=instanceView`
/// (what `az vm get-instance-view` prints), trimmed to realistic essentials.
fn azure_vm_json() -> String {
    let blob = |file: &str| format!("https://lbprodwe01.blob.core.windows.net/vhds/{file}");
    let v = serde_json::json!({
        "id": format!("{AZ_SUB}/providers/Microsoft.Compute/virtualMachines/{AZ_VM}"),
        "name": AZ_VM,
        "type": "Microsoft.Compute/virtualMachines",
        "location": "westeurope",
        "properties": {
            "vmId": "0f4c1d6e-2a3b-4c5d-8e9f-a0b1c2d3e4f5",
            "hardwareProfile": {"vmSize": "Standard_B2s"},
            "storageProfile": {
                "osDisk": {"osType": "Linux", "name": "web03-os", "createOption": "Attach",
                    "caching": "ReadWrite", "vhd": {"uri": blob(AZ_DISKS[0].1)}, "diskSizeGB": 1},
                "dataDisks": [{"lun": 0, "name": "web03-data", "createOption": "Attach",
                    "caching": "None", "vhd": {"uri": blob(AZ_DISKS[1].1)}, "diskSizeGB": 1}]
            },
            "securityProfile": {"uefiSettings": {"secureBootEnabled": false, "vTpmEnabled": false}},
            "networkProfile": {"networkInterfaces": [
                {"id": format!("{AZ_SUB}/providers/Microsoft.Network/networkInterfaces/web03-nic0"),
                 "properties": {"primary": true}},
                {"id": format!("{AZ_SUB}/providers/Microsoft.Network/networkInterfaces/web03-nic1"),
                 "properties": {"primary": false}}
            ]},
            "provisioningState": "Succeeded",
            "instanceView": {
                "computerName": AZ_VM,
                "osName": "ubuntu",
                "osVersion": "22.04",
                "hyperVGeneration": "V2",
                "statuses": [{"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"}]
            }
        }
    });
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

/// `nics.json`: ARM's NICs (what `az network nic show --ids …` prints for two ids).
fn azure_nics_json() -> String {
    let nic = |n: u32, mac: &str, ip: &str, method: &str, subnet: &str| {
        serde_json::json!({
            "id": format!("{AZ_SUB}/providers/Microsoft.Network/networkInterfaces/web03-nic{n}"),
            "name": format!("web03-nic{n}"),
            "type": "Microsoft.Network/networkInterfaces",
            "location": "westeurope",
            "properties": {
                "macAddress": mac,
                "primary": n == 0,
                "ipConfigurations": [{
                    "name": "ipconfig1",
                    "properties": {
                        "privateIPAddress": ip,
                        "privateIPAllocationMethod": method,
                        "privateIPAddressVersion": "IPv4",
                        "primary": true,
                        "subnet": {"id": format!("{AZ_SUB}/providers/Microsoft.Network/virtualNetworks/prod-we-vnet/subnets/{subnet}")}
                    }
                }]
            }
        })
    };
    let v = serde_json::json!([
        nic(0, "00-0D-3A-2B-4C-5D", "10.1.0.4", "Static", "app"),
        nic(1, "00-0D-3A-2B-4C-5E", "10.1.1.4", "Dynamic", "db"),
    ]);
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

fn vmx() -> String {
    let mut s = String::from(
        ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"19\"\ndisplayName = \"web01\"\nguestOS = \"debian12-64\"\nfirmware = \"efi\"\nnumvcpus = \"2\"\nmemSize = \"4096\"\nscsi0.present = \"TRUE\"\nscsi0.virtualDev = \"pvscsi\"\n",
    );
    for (slot, file, _) in DISKS {
        s.push_str(&format!(
            "{slot}.present = \"TRUE\"\n{slot}.fileName = \"{file}\"\n"
        ));
    }
    s.push_str("ethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"vmxnet3\"\nethernet0.networkName = \"VM Network\"\nethernet0.addressType = \"generated\"\nethernet0.generatedAddress = \"00:50:56:8a:10:01\"\n");
    s.push_str("ethernet1.present = \"TRUE\"\nethernet1.virtualDev = \"vmxnet3\"\nethernet1.networkName = \"Backend\"\nethernet1.addressType = \"static\"\nethernet1.address = \"00:50:56:00:20:02\"\n");
    s
}

pub async fn run(cmd: DemoCommand) -> Result<u8, Failure> {
    match cmd {
        DemoCommand::Init { dir, force } => {
            if dir.exists()
                && std::fs::read_dir(&dir)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false)
            {
                if !force {
                    return Err(Failure::Invalid(format!(
                        "error: {} exists and is not empty; pass --force to replace the lab",
                        dir.display()
                    )));
                }
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| anyhow!("removing {}: {e}", dir.display()))?;
            }
            let vm_dir = dir.join("vmware").join(VM);
            std::fs::create_dir_all(&vm_dir)
                .map_err(|e| anyhow!("creating {}: {e}", vm_dir.display()))?;
            std::fs::create_dir_all(dir.join("azure"))
                .map_err(|e| anyhow!("creating azure: {e}"))?;
            std::fs::write(vm_dir.join(format!("{VM}.vmx")), vmx()).map_err(|e| anyhow!("{e}"))?;
            write_disks(&vm_dir, DISKS, WriteFormat::VmdkMonolithicSparse, 1)?;
            write_cbt(&vm_dir, 1)?;
            let hv_dir = dir.join("hyperv").join(HV_VM);
            std::fs::create_dir_all(hv_dir.join("Virtual Hard Disks"))
                .map_err(|e| anyhow!("creating {}: {e}", hv_dir.display()))?;
            std::fs::write(hv_dir.join("vm.json"), vm_json()).map_err(|e| anyhow!("{e}"))?;
            write_disks(
                &hv_dir.join("Virtual Hard Disks"),
                HV_DISKS,
                WriteFormat::VhdxDynamic,
                1,
            )?;
            write_rct(&hv_dir, 1)?;
            let az_a = dir.join("azure-region-a");
            for d in [
                az_a.join("vhds"),
                az_a.join("export").join(AZ_VM),
                dir.join("azure-region-b"),
            ] {
                std::fs::create_dir_all(&d)
                    .map_err(|e| anyhow!("creating {}: {e}", d.display()))?;
            }
            let export = az_a.join("export").join(AZ_VM);
            std::fs::write(export.join("vm.json"), azure_vm_json()).map_err(|e| anyhow!("{e}"))?;
            std::fs::write(export.join("nics.json"), azure_nics_json())
                .map_err(|e| anyhow!("{e}"))?;
            write_disks(&az_a.join("vhds"), AZ_DISKS, WriteFormat::VhdFixed, 1)?;
            let key_hex = Key::generate_hex().map_err(|e| anyhow!("{e}"))?;
            let key_path = dir.join("vault.key");
            write_private(&key_path, &key_hex)?;
            let key = Key::parse(&key_hex).map_err(|e| anyhow!("{e}"))?;
            Vault::init(&dir.join("vault").display().to_string(), &key)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            println!("demo lab ready in {}", dir.display());
            println!("  vmware/{VM}/   VMware folder site: {VM}.vmx, 2 VMDKs, cbt/ change lists");
            println!(
                "  hyperv/{HV_VM}/   Hyper-V folder site: vm.json (Get-VM export), 2 VHDX, rct/ change lists"
            );
            println!("  azure/         Azure storage account (folder)");
            println!(
                "  azure-region-a/  Azure source region (folder): {AZ_VM}'s page blobs in vhds/, its ARM export in export/{AZ_VM}/"
            );
            println!("  azure-region-b/  Azure recovery region's storage account (folder)");
            println!("  vault/         vault (key in vault.key)");
            println!("next: lifeboat run workflows/vmware-to-azure/replicate.yaml");
            Ok(0)
        }
        DemoCommand::Change { dir } => {
            let vm_dir = dir.join("vmware").join(VM);
            let gen_file = vm_dir.join("cbt").join("generation");
            let g: u32 = std::fs::read_to_string(&gen_file)
                .map_err(|e| {
                    Failure::Invalid(format!(
                        "error: {} is not a demo lab ({e}); make one with `lifeboat demo init`",
                        dir.display()
                    ))
                })?
                .trim()
                .parse()
                .map_err(|e| anyhow!("{}: {e}", gen_file.display()))?;
            write_disks(&vm_dir, DISKS, WriteFormat::VmdkMonolithicSparse, g + 1)?;
            write_cbt(&vm_dir, g + 1)?;
            let n = writes(g + 1).len() - writes(g).len();
            println!(
                "the guest of {VM} wrote {n} more areas (generation {}); changed areas are in vmware/{VM}/cbt/",
                g + 1
            );
            let hv_dir = dir.join("hyperv").join(HV_VM);
            if hv_dir.is_dir() {
                write_disks(
                    &hv_dir.join("Virtual Hard Disks"),
                    HV_DISKS,
                    WriteFormat::VhdxDynamic,
                    g + 1,
                )?;
                write_rct(&hv_dir, g + 1)?;
                println!(
                    "the guest of {HV_VM} wrote {n} more areas (generation {}); changed ranges are in hyperv/{HV_VM}/rct/",
                    g + 1
                );
            }
            let az_a = dir.join("azure-region-a");
            if az_a.is_dir() {
                write_disks(&az_a.join("vhds"), AZ_DISKS, WriteFormat::VhdFixed, g + 1)?;
                println!(
                    "the guest of {AZ_VM} wrote {n} more areas (generation {}) to its page blobs in azure-region-a/vhds/",
                    g + 1
                );
            }
            Ok(0)
        }
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{text}")?;
    Ok(())
}
