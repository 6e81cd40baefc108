//! VMware → Azure, end to end and boot-verified: a bootable Linux disk (built by
//! tests/lab/make-boot-disk.sh from Debian packages) is the VMDK of a VMware
//! folder site; it is replicated in full, the guest's data changes, an
//! incremental replication ships only the changed areas (counted against the
//! true difference), and a test failover materialises the point as a fixed-VHD
//! page blob in Azurite, deploys the VM's ARM document, and boots the blob in
//! QEMU: the latest point shows the second state, the first point the first.
//! Stage times are printed (run with --nocapture to see them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use common::lab::output;
use common::{lifeboat, ok, root, sh};

const SETUP_HINT: &str =
    "run `sudo bash tests/lab/setup-qemu.sh` to install QEMU and the lab tools";

fn lab_script(script: &str, args: &[&std::ffi::OsStr]) {
    let path = root().join("tests/lab").join(script);
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP_HINT}", path.display()));
    assert!(
        out.status.success(),
        "tests/lab/{script} failed:\n{}{}\n({SETUP_HINT})",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The 64 KiB blocks that differ between two raw images, merged into runs:
/// what VMware's changed-block tracking would report for the guest's writes.
fn changed_areas(old: &Path, new: &Path) -> Vec<(u64, u64)> {
    const B: usize = 64 << 10;
    let (a, b) = (std::fs::read(old).unwrap(), std::fs::read(new).unwrap());
    assert_eq!(a.len(), b.len());
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (i, (x, y)) in a.chunks(B).zip(b.chunks(B)).enumerate() {
        if x != y {
            let off = (i * B) as u64;
            match out.last_mut() {
                Some((s, l)) if *s + *l == off => *l += y.len() as u64,
                _ => out.push((off, y.len() as u64)),
            }
        }
    }
    out
}

/// `raw` converted by qemu-img into `out` (replaced) in format `fmt` with `opts`.
fn convert(raw: &Path, out: &Path, fmt: &str, opts: &str) {
    let _ = std::fs::remove_file(out);
    sh(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", fmt, "-o", opts])
        .arg(raw)
        .arg(out));
}

fn to_vmdk(raw: &Path, vmdk: &Path) {
    convert(raw, vmdk, "vmdk", "subformat=monolithicSparse");
}

/// Region B's own storage account in the Azure → Azure test, and its key.
const REGION_B_ACCOUNT: &str = "lbprodne01";
const REGION_B_KEY: &str = "bGlmZWJvYXQgcmVnaW9uIEIgdGVzdCBrZXkgLSBub3QgYSByZWFsIG9uZSEhISE=";

fn run(wf: &Path, lab: &Path, state: &Path, extra: &[&str]) -> Output {
    let mut c = lifeboat();
    c.args(["run", "--state-dir"])
        .arg(state)
        .arg(wf)
        .arg("--input")
        .arg(format!("lab={}", lab.display()));
    for e in extra {
        c.args(["--input", e]);
    }
    c.env("TEST_STORAGE_KEY", common::azurite::KEY);
    c.env("TEST_STORAGE_KEY_B", REGION_B_KEY);
    c.output().unwrap()
}

/// The scenario's failover workflow with its `azure` site turned into the
/// Azurite container `vhds` (page blobs) over HTTPS, trusting the test's CA,
/// written next to the lab.
fn azurite_failover(
    az: &common::azurite::Azurite,
    scenario: &str,
    dir: &Path,
) -> std::path::PathBuf {
    azurite_site(
        az,
        scenario,
        "failover",
        "azure",
        (common::azurite::ACCOUNT, "vhds"),
        dir,
    )
}

/// Workflow `workflows/{scenario}/{workflow}.yaml` with its site at
/// `${{ inputs.lab }}/{lab_dir}` turned into Azurite container `container`
/// over HTTPS, trusting the test's CA, written into `dir`.
fn azurite_site(
    az: &common::azurite::Azurite,
    scenario: &str,
    workflow: &str,
    lab_dir: &str,
    (account, container): (&str, &str),
    dir: &Path,
) -> std::path::PathBuf {
    let failover = dir.join(format!("{workflow}.yaml"));
    let text =
        std::fs::read_to_string(root().join(format!("workflows/{scenario}/{workflow}.yaml")))
            .unwrap();
    let site = format!("    path: \"${{{{ inputs.lab }}}}/{lab_dir}\"\n");
    assert!(
        text.contains(&site),
        "{workflow}.yaml's {lab_dir} site changed: update this test"
    );
    let text = text.replace(
        &site,
        &format!(
            "    url: \"{}\"\n    key: storage_key\n    ca_file: \"{}\"\n",
            az.account_container_url(account, container),
            az.ca_file().display()
        ),
    );
    let key_env = if account == common::azurite::ACCOUNT {
        "TEST_STORAGE_KEY"
    } else {
        "TEST_STORAGE_KEY_B"
    };
    // the site is the `vhds` container itself: blob names carry no container
    let text = text.replace(
        "      container: vhds\n",
        "      container: vhds\n      site_layout: container\n",
    );
    assert!(workflow != "failover" || text.contains("site_layout: container"));
    let text = if text.contains("\nsecrets:\n") {
        text.replace(
            "\nsecrets:\n",
            &format!("\nsecrets:\n  storage_key: {{ env: {key_env} }}\n"),
        )
    } else {
        text.replace(
            "\nsites:\n",
            &format!("\nsecrets:\n  storage_key: {{ env: {key_env} }}\n\nsites:\n"),
        )
    };
    std::fs::write(&failover, text).unwrap();
    failover
}

/// Test failovers of the latest point and of `p1`, each booted: the latest
/// shows the second state, `p1` the first.
fn boot_points(failover: &Path, lab: &Path, dir: &Path, p1: &str, report: &mut Vec<String>) {
    for (point, want) in [("latest", "state=second"), (p1, "state=first")] {
        let t = Instant::now();
        let out = run(
            failover,
            lab,
            &dir.join(format!("f-{point}")),
            &[&format!("point={point}"), "boot=true"],
        );
        let out = ok(&out);
        let line = output(&out, "line");
        assert!(line.contains(want), "failover of {point}: {line}\n{out}");
        assert!(
            !out.contains(common::azurite::KEY),
            "the storage key leaked"
        );
        report.push(format!(
            "failover {point} (restore + ARM + boot): {:.1} s, boot to health {} s",
            t.elapsed().as_secs_f64(),
            output(&out, "seconds")
        ));
    }
}

#[test]
fn vmware_to_azure_boot_verified() {
    let (d, lab) = common::lab::demo_lab();
    let vm = lab.join("vmware/web01");

    // the VM's OS disk is a bootable Linux whose health line shows its state
    let raw = d.path().join("os.raw");
    lab_script("make-boot-disk.sh", &[raw.as_os_str(), "first".as_ref()]);
    to_vmdk(&raw, &vm.join("web01.vmdk"));
    let vmx = std::fs::read_to_string(vm.join("web01.vmx")).unwrap();
    std::fs::write(
        vm.join("web01.vmx"),
        vmx.replace("firmware = \"efi\"", "firmware = \"bios\""),
    )
    .unwrap();

    let replicate = root().join("workflows/vmware-to-azure/replicate.yaml");
    let t = Instant::now();
    let full = ok(&run(&replicate, &lab, &d.path().join("r1"), &[]));
    let full_s = t.elapsed().as_secs_f64();
    let p1 = output(&full, "point").trim_matches('"').to_string();

    // the guest changes its data; CBT reports exactly the blocks it wrote
    let before = d.path().join("os-first.raw");
    std::fs::copy(&raw, &before).unwrap();
    lab_script("set-state.sh", &[raw.as_os_str(), "second".as_ref()]);
    let areas = changed_areas(&before, &raw);
    let changed: u64 = areas.iter().map(|a| a.1).sum();
    assert!(changed > 0 && changed < 4 << 20, "{areas:?}");
    to_vmdk(&raw, &vm.join("web01.vmdk"));
    let list: Vec<serde_json::Value> = areas
        .iter()
        .map(|(s, l)| serde_json::json!({"start": s, "length": l}))
        .collect();
    std::fs::write(
        vm.join("cbt/scsi0-0.json"),
        serde_json::json!({"startOffset": 0, "length": 64u64 << 20, "changedArea": list})
            .to_string(),
    )
    .unwrap();
    let t = Instant::now();
    let inc = ok(&run(&replicate, &lab, &d.path().join("r2"), &[]));
    let inc_s = t.elapsed().as_secs_f64();
    assert_eq!(output(&inc, "bytes_read"), changed.to_string(), "{inc}");
    let p2 = output(&inc, "point").trim_matches('"').to_string();
    assert_ne!(p1, p2);

    // the recovery site: an Azure storage account (Azurite), page blobs
    let az = common::azurite::Azurite::start_https();
    let failover = azurite_failover(&az, "vmware-to-azure", d.path());

    let mut report = vec![
        format!("replicate full: {full_s:.1} s"),
        format!("replicate incremental: {inc_s:.1} s ({changed} bytes changed, {changed} shipped)"),
    ];
    boot_points(&failover, &lab, d.path(), &p1, &mut report);
    eprintln!("{}", report.join("\n"));
}

/// Hyper-V → Azure, end to end and boot-verified, through a differencing
/// chain: the bootable disk is the VM's VHDX; after the first replication a
/// checkpoint makes a differencing child (`.avhdx`) that takes the guest's
/// writes, RCT reports the ranges written, the incremental ships exactly those
/// from the chain, and test failovers boot the second state (latest) and the
/// first (the first point).
#[test]
fn hyperv_chain_to_azure_boot_verified() {
    let (d, lab) = common::lab::demo_lab();
    let vm = lab.join("hyperv/web02");
    let disks = vm.join("Virtual Hard Disks");

    // the OS disk: a bootable Linux (BIOS: a generation 1 VM) as VHDX
    let raw = d.path().join("os.raw");
    lab_script("make-boot-disk.sh", &[raw.as_os_str(), "first".as_ref()]);
    let base = disks.join("web02.vhdx");
    std::fs::remove_file(&base).unwrap();
    sh(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "vhdx"])
        .arg(&raw)
        .arg(&base));
    let config = std::fs::read_to_string(vm.join("vm.json")).unwrap();
    let config = config.replace("\"Generation\": 2", "\"Generation\": 1");
    std::fs::write(vm.join("vm.json"), &config).unwrap();

    let replicate = root().join("workflows/hyperv-to-azure/replicate.yaml");
    let t = Instant::now();
    let full = ok(&run(&replicate, &lab, &d.path().join("r1"), &[]));
    let full_s = t.elapsed().as_secs_f64();
    let p1 = output(&full, "point").trim_matches('"').to_string();

    // a checkpoint: the guest now writes into a differencing child of the base
    let before = d.path().join("os-first.raw");
    std::fs::copy(&raw, &before).unwrap();
    lab_script("set-state.sh", &[raw.as_os_str(), "second".as_ref()]);
    let areas = changed_areas(&before, &raw);
    let changed: u64 = areas.iter().map(|a| a.1).sum();
    assert!(changed > 0 && changed < 4 << 20, "{areas:?}");
    let new = std::fs::read(&raw).unwrap();
    let writes: Vec<(u64, Vec<u8>)> = areas
        .iter()
        .map(|&(o, l)| (o, new[o as usize..(o + l) as usize].to_vec()))
        .collect();
    let child = disks.join("web02_6E3C1C2A-5B7D-4E8F-9A0B-1C2D3E4F5A6B.avhdx");
    lifeboat_disk::create_vhdx_differencing(&child, &base, "web02.vhdx", &writes).unwrap();
    std::fs::write(
        vm.join("vm.json"),
        config.replace(
            "Virtual Hard Disks\\\\web02.vhdx",
            "Virtual Hard Disks\\\\web02_6E3C1C2A-5B7D-4E8F-9A0B-1C2D3E4F5A6B.avhdx",
        ),
    )
    .unwrap();
    // RCT: the OS disk's ranges since the id the first point recorded; no change on the data disk
    let rct = |slot: &str, size: u64, ranges: &[(u64, u64)]| {
        serde_json::json!({
            "LimitId": format!("rct:web02-{slot}:1"),
            "CurrentId": format!("rct:web02-{slot}:2"),
            "ByteOffset": 0,
            "ProcessedByteLength": size,
            "ChangedByteOffsets": ranges.iter().map(|r| r.0).collect::<Vec<_>>(),
            "ChangedByteLengths": ranges.iter().map(|r| r.1).collect::<Vec<_>>(),
        })
        .to_string()
    };
    let os_size = std::fs::metadata(&raw).unwrap().len();
    std::fs::write(vm.join("rct/scsi0-0.json"), rct("scsi0-0", os_size, &areas)).unwrap();
    std::fs::write(vm.join("rct/scsi0-1.json"), rct("scsi0-1", 32 << 20, &[])).unwrap();

    let t = Instant::now();
    let inc = ok(&run(&replicate, &lab, &d.path().join("r2"), &[]));
    let inc_s = t.elapsed().as_secs_f64();
    assert!(inc.contains("\"format\":\"VHDX (differencing)\""), "{inc}");
    assert!(inc.contains("resilient change tracking"), "{inc}");
    assert_eq!(output(&inc, "bytes_read"), changed.to_string(), "{inc}");
    let p2 = output(&inc, "point").trim_matches('"').to_string();
    assert_ne!(p1, p2);

    let az = common::azurite::Azurite::start_https();
    let failover = azurite_failover(&az, "hyperv-to-azure", d.path());
    let mut report = vec![
        format!("hyper-v replicate full: {full_s:.1} s"),
        format!(
            "hyper-v replicate incremental (chain): {inc_s:.1} s ({changed} bytes changed, {changed} shipped)"
        ),
    ];
    boot_points(&failover, &lab, d.path(), &p1, &mut report);
    eprintln!("{}", report.join("\n"));
}

/// Azure → Azure, region to region: the bootable disk is web03's OS disk, a
/// fixed-VHD page blob in region A's storage (an Azurite container over
/// HTTPS, beside the VM's ARM export); replication snapshots the blobs, the
/// guest changes, an incremental replication compares hashes (Azurite's
/// page-range diff cannot be trusted, and the plan says so) and releases the
/// first run's snapshots; a test failover materialises the points into region
/// B's container with region B's VNet, and each boots to its own state.
#[test]
fn azure_to_azure_boot_verified() {
    use lifeboat_caps::azblob::AzBlob;
    let (d, lab) = common::lab::demo_lab();
    // each region its own storage account
    let az =
        common::azurite::Azurite::start_https_with_accounts(&[(REGION_B_ACCOUNT, REGION_B_KEY)]);
    let ca = std::fs::read(az.ca_file()).unwrap();
    let region_a = AzBlob::with_ca(
        &az.container_url("region-a"),
        common::azurite::ACCOUNT,
        common::azurite::KEY,
        Some(&ca),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // the OS disk: a bootable Linux, as Azure stores it (fixed VHD, 1 MiB aligned)
    let raw = d.path().join("os.raw");
    lab_script("make-boot-disk.sh", &[raw.as_os_str(), "first".as_ref()]);
    // as Azure keeps it: a fixed VHD, 1 MiB aligned
    let to_vhd = |raw: &Path, vhd: &Path| convert(raw, vhd, "vpc", "subformat=fixed,force_size=on");
    let os_vhd = d.path().join("web03-os.vhd");
    to_vhd(&raw, &os_vhd);
    let a_dir = lab.join("azure-region-a");
    rt.block_on(async {
        region_a.create_container_if_missing().await.unwrap();
        region_a
            .upload_page_blob("vhds/web03-os.vhd", &os_vhd)
            .await
            .unwrap();
        region_a
            .upload_page_blob("vhds/web03-data.vhd", &a_dir.join("vhds/web03-data.vhd"))
            .await
            .unwrap();
        for f in ["vm.json", "nics.json"] {
            let text = std::fs::read_to_string(a_dir.join("export/web03").join(f)).unwrap();
            // the boot disk is BIOS-bootable (syslinux): a generation 1 VM
            let text = text.replace(
                "\"hyperVGeneration\": \"V2\"",
                "\"hyperVGeneration\": \"V1\"",
            );
            let text = text.into_bytes();
            region_a
                .upload_block_blob(&format!("export/web03/{f}"), text, "application/json")
                .await
                .unwrap();
        }
    });
    let replicate = azurite_site(
        &az,
        "azure-to-azure",
        "replicate",
        "azure-region-a",
        (common::azurite::ACCOUNT, "region-a"),
        d.path(),
    );

    let t = Instant::now();
    let full = ok(&run(&replicate, &lab, &d.path().join("r1"), &[]));
    let full_s = t.elapsed().as_secs_f64();
    let p1 = output(&full, "point").trim_matches('"').to_string();
    assert!(full.contains("first copy: allocation map"), "{full}");
    assert!(full.contains("\"generation\":1,"), "{full}");
    // each disk was read from a snapshot of its blob, recorded with the point
    let snaps: Vec<String> = full
        .match_indices("?snapshot=")
        .map(|(i, _)| full[i + 10..].split('"').next().unwrap().to_string())
        .collect();
    assert!(snaps.len() >= 2, "no snapshot paths in {full}");

    // the guest writes: the blob's pages change in place
    let before = d.path().join("os-first.raw");
    std::fs::copy(&raw, &before).unwrap();
    lab_script("set-state.sh", &[raw.as_os_str(), "second".as_ref()]);
    let areas = changed_areas(&before, &raw);
    let changed: u64 = areas.iter().map(|a| a.1).sum();
    assert!(changed > 0 && changed < 4 << 20, "{areas:?}");
    to_vhd(&raw, &os_vhd);
    rt.block_on(region_a.upload_page_blob("vhds/web03-os.vhd", &os_vhd))
        .unwrap();

    let t = Instant::now();
    let inc = ok(&run(&replicate, &lab, &d.path().join("r2"), &[]));
    let inc_s = t.elapsed().as_secs_f64();
    // Azurite's diff is refused, visibly, and hashes are compared instead
    assert!(inc.contains("page-range diff is not implemented"), "{inc}");
    assert!(
        inc.contains(&format!("hash comparison with point {p1}")),
        "{inc}"
    );
    let bytes_new: u64 = output(&inc, "bytes_new").parse().unwrap();
    assert!(
        bytes_new > 0 && bytes_new <= changed + (2 << 20),
        "shipped {bytes_new} new bytes for {changed} changed"
    );
    assert_eq!(output(&inc, "released"), "2", "{inc}");
    let p2 = output(&inc, "point").trim_matches('"').to_string();
    assert_ne!(p1, p2);
    // the first run's snapshots are gone; the blob itself stays
    rt.block_on(async {
        for s in &snaps[..2] {
            let name = if full.contains(&format!("vhds/web03-os.vhd?snapshot={s}")) {
                "vhds/web03-os.vhd"
            } else {
                "vhds/web03-data.vhd"
            };
            assert_eq!(
                region_a.at_snapshot(s).properties(name).await.unwrap(),
                None,
                "{name}@{s}"
            );
        }
        assert!(
            region_a
                .properties("vhds/web03-os.vhd")
                .await
                .unwrap()
                .is_some()
        );
    });

    let failover = azurite_site(
        &az,
        "azure-to-azure",
        "failover",
        "azure-region-b",
        (REGION_B_ACCOUNT, "vhds"),
        d.path(),
    );
    let mut report = vec![
        format!("azure replicate full: {full_s:.1} s"),
        format!(
            "azure replicate incremental (hash comparison): {inc_s:.1} s ({changed} bytes changed, {bytes_new} new bytes shipped)"
        ),
    ];
    boot_points(&failover, &lab, d.path(), &p1, &mut report);
    // region B: its own VNet and location, the source's size and generation
    let plan = ok(&run(&failover, &lab, &d.path().join("f-plan"), &[]));
    assert!(plan.contains("prod-ne-vnet/subnets/app"), "{plan}");
    assert!(!plan.contains(REGION_B_KEY), "region B's key leaked");
    // the recovered disks are in region B's account, not region A's
    let region_b = AzBlob::with_ca(
        &az.account_container_url(REGION_B_ACCOUNT, "vhds"),
        REGION_B_ACCOUNT,
        REGION_B_KEY,
        Some(&ca),
    )
    .unwrap();
    rt.block_on(async {
        assert!(
            region_b
                .properties("web03-test-os.vhd")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            region_a
                .list("")
                .await
                .unwrap()
                .iter()
                .all(|n| !n.contains("-test-"))
        );
    });
    eprintln!("{}", report.join("\n"));
}
