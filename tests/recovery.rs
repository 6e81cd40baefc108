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

fn output<'a>(run: &'a str, name: &str) -> &'a str {
    let key = format!("    {name} = ");
    run.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no output {name} in:\n{run}"))
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

fn to_vmdk(raw: &Path, vmdk: &Path) {
    let _ = std::fs::remove_file(vmdk);
    sh(Command::new("qemu-img")
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=monolithicSparse",
        ])
        .arg(raw)
        .arg(vmdk));
}

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
    c.output().unwrap()
}

#[test]
fn vmware_to_azure_boot_verified() {
    let d = tempfile::tempdir().unwrap();
    let lab = d.path().join("lab");
    ok(&lifeboat()
        .args(["demo", "init"])
        .arg(&lab)
        .output()
        .unwrap());
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
    let az = common::azurite::Azurite::start();
    let failover = d.path().join("failover.yaml");
    let text =
        std::fs::read_to_string(root().join("workflows/vmware-to-azure/failover.yaml")).unwrap();
    let site = "    path: \"${{ inputs.lab }}/azure\"\n";
    assert!(
        text.contains(site),
        "failover.yaml's azure site changed: update this test"
    );
    let text = text.replace(
        site,
        &format!(
            "    url: \"{}\"\n    key: storage_key\n",
            az.container_url("vhds")
        ),
    );
    // the site is the `vhds` container itself: blob names carry no container
    let text = text.replace(
        "      container: vhds\n",
        "      container: vhds\n      site_layout: container\n",
    );
    assert!(text.contains("site_layout: container"));
    let text = if text.contains("\nsecrets:\n") {
        text.replace(
            "\nsecrets:\n",
            "\nsecrets:\n  storage_key: { env: TEST_STORAGE_KEY }\n",
        )
    } else {
        text.replace(
            "\nsites:\n",
            "\nsecrets:\n  storage_key: { env: TEST_STORAGE_KEY }\n\nsites:\n",
        )
    };
    std::fs::write(&failover, text).unwrap();

    let mut report = vec![
        format!("replicate full: {full_s:.1} s"),
        format!("replicate incremental: {inc_s:.1} s ({changed} bytes changed, {changed} shipped)"),
    ];
    for (point, want) in [("latest", "state=second"), (p1.as_str(), "state=first")] {
        let t = Instant::now();
        let out = run(
            &failover,
            &lab,
            &d.path().join(format!("f-{point}")),
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
    eprintln!("{}", report.join("\n"));
}
