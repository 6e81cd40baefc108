//! `lifeboat demo`: a recovery lab on this machine, made by one command — a
//! VMware folder site (a VM's `.vmx` and VMDKs), an Azure storage account laid
//! out as a folder, and an initialised vault with its key file. `demo change`
//! plays the guest writing to its disks and records the changed areas the way
//! VMware's changed-block tracking reports them.

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

/// Write generation `g` of every disk (monolithicSparse VMDKs).
fn write_disks(vm_dir: &Path, g: u32) -> anyhow::Result<()> {
    let w = writes(g);
    for (i, (_, file, size)) in DISKS.iter().enumerate() {
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
        let mut out = lifeboat_disk::create(&tmp, WriteFormat::VmdkMonolithicSparse, *size)
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
            write_disks(&vm_dir, 1)?;
            write_cbt(&vm_dir, 1)?;
            let key_hex = Key::generate_hex().map_err(|e| anyhow!("{e}"))?;
            let key_path = dir.join("vault.key");
            write_private(&key_path, &key_hex)?;
            let key = Key::parse(&key_hex).map_err(|e| anyhow!("{e}"))?;
            Vault::init(&dir.join("vault").display().to_string(), &key)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            println!("demo lab ready in {}", dir.display());
            println!("  vmware/{VM}/   VMware folder site: {VM}.vmx, 2 VMDKs, cbt/ change lists");
            println!("  azure/         Azure storage account (folder)");
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
            write_disks(&vm_dir, g + 1)?;
            write_cbt(&vm_dir, g + 1)?;
            let n = writes(g + 1).len() - writes(g).len();
            println!(
                "the guest of {VM} wrote {n} more areas (generation {}); changed areas are in vmware/{VM}/cbt/",
                g + 1
            );
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
