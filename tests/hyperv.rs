//! Hyper-V folder site → vault → Azure through the bundled hyperv and azure
//! plugins and the demo lab: the first copy by allocation map, a guest change,
//! an incremental that ships only the RCT ranges (counted), both points
//! restored identical (qemu-img), a stale RCT baseline falling back to hash
//! comparison (and saying so), a test failover whose ARM body is generation 2,
//! and bad input — a vm.json with missing fields, a disk not in the site, an
//! RCT answer that does not cover the disk — each a clear error before anything
//! moves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::lab::{output, restore_and_compare};
use common::{lifeboat, ok, root, text};

const WF: &str = "workflows/hyperv-to-azure/replicate.yaml";

fn run(wf: &Path, lab: &Path, state: &Path, extra: &[&str]) -> Output {
    lifeboat()
        .args(["run", "--state-dir"])
        .arg(state)
        .arg(wf)
        .arg("--input")
        .arg(format!("lab={}", lab.display()))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn replicate_by_rct_then_fail_over_to_azure() {
    let (d, lab) = common::lab::demo_lab();
    let disks = lab.join("hyperv/web02/Virtual Hard Disks");
    let gen1 = d.path().join("gen1");
    common::lab::keep_copies(&disks, &["web02.vhdx", "web02_data.vhdx"], &gen1);
    for f in ["web02.vhdx", "web02_data.vhdx"] {
        // the lab's disks are valid VHDX files, per qemu
        let c = Command::new("qemu-img")
            .args(["check", "-f", "vhdx"])
            .arg(disks.join(f))
            .output()
            .unwrap();
        assert!(c.status.success(), "{f}: {}", text(&c));
    }
    let wf = root().join(WF);

    let first = ok(&run(&wf, &lab, &d.path().join("s1"), &[]));
    assert!(first.contains("first copy: allocation map"), "{first}");
    assert!(
        first.contains("\"generation\":2") && first.contains("\"firmware\":\"uefi\""),
        "{first}"
    );
    assert!(
        first.contains("\"network\":\"Backend\",\"vlan\":20,\"ip\":\"10.20.0.25\""),
        "{first}"
    );
    let p1 = common::lab::points(&lab, Some("web02"))[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // the guest writes 256 KiB + 64 KiB to the OS disk and 128 KiB to the data disk
    ok(&lifeboat()
        .args(["demo", "change"])
        .arg(&lab)
        .output()
        .unwrap());
    let second = ok(&run(&wf, &lab, &d.path().join("s2"), &[]));
    assert!(
        second.contains("resilient change tracking: 2 ranges since rct:web02-scsi0-0:1"),
        "{second}"
    );
    assert_eq!(
        output(&second, "bytes_read"),
        ((256 + 64 + 128) << 10).to_string(),
        "{second}"
    );
    let pts = common::lab::points(&lab, Some("web02"));
    assert_eq!(pts.len(), 2);
    let p2 = pts[1]["id"].as_str().unwrap().to_string();
    assert_eq!(pts[1]["parent"], p1.as_str());
    // the point records the VM and each disk's RCT id: the next capture's baseline
    assert_eq!(pts[1]["meta"]["generation"], 2, "{}", pts[1]);
    assert_eq!(
        pts[1]["meta"]["disks"][0]["rct_id"], "rct:web02-scsi0-0:2",
        "{}",
        pts[1]
    );

    restore_and_compare(
        &lab,
        "web02",
        &p1,
        "scsi0:0",
        &gen1.join("web02.vhdx"),
        "vhdx",
    );
    restore_and_compare(
        &lab,
        "web02",
        &p1,
        "scsi0:1",
        &gen1.join("web02_data.vhdx"),
        "vhdx",
    );
    restore_and_compare(
        &lab,
        "web02",
        &p2,
        "scsi0:0",
        &disks.join("web02.vhdx"),
        "vhdx",
    );
    restore_and_compare(
        &lab,
        "web02",
        &p2,
        "scsi0:1",
        &disks.join("web02_data.vhdx"),
        "vhdx",
    );

    // two guest changes between runs: the RCT answer's baseline is not the one
    // the last point recorded → hash comparison, said in the plan and run
    ok(&lifeboat()
        .args(["demo", "change"])
        .arg(&lab)
        .output()
        .unwrap());
    ok(&lifeboat()
        .args(["demo", "change"])
        .arg(&lab)
        .output()
        .unwrap());
    let third = ok(&run(&wf, &lab, &d.path().join("s3"), &[]));
    assert!(
        third.contains("RCT id rct:web02-scsi0-0:3 is not the baseline point")
            && third
                .contains("(rct:web02-scsi0-0:2): the reference point is gone; hash comparison"),
        "{third}"
    );
    // only what changed is new to the vault: the two generations' writes
    // overlap on the OS disk (256 KiB at 5 MiB + 192 KiB and + 256 KiB), so
    // 320 + 64 + 64 KiB there and 2 × 128 KiB on the data disk: 704 KiB
    assert_eq!(
        output(&third, "bytes_new"),
        (704 << 10).to_string(),
        "{third}"
    );

    // test failover: generation 2 → hyperVGeneration V2, switches mapped
    let fo = ok(&run(
        &root().join("workflows/hyperv-to-azure/failover.yaml"),
        &lab,
        &d.path().join("s4"),
        &[],
    ));
    assert!(fo.contains("nic1 (Backend) → isolated test subnet"), "{fo}");
    let dep =
        std::fs::read_to_string(lab.join("azure/deployments/lifeboat-failover-web02-test.json"))
            .unwrap();
    assert!(dep.contains("\"hyperVGeneration\": \"V2\""), "{dep}");
    let vhd = lab.join("azure/vhds/web02-test-scsi0-1.vhd");
    let cmp = Command::new("qemu-img")
        .args(["compare", "-f", "vhdx", "-F", "vpc"])
        .arg(disks.join("web02_data.vhdx"))
        .arg(&vhd)
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "{}",
        String::from_utf8_lossy(&cmp.stdout)
    );
    // fixed VHD, 1 MiB aligned, for an Azure page blob
    let len = std::fs::metadata(&vhd).unwrap().len();
    assert_eq!((len - 512) % (1 << 20), 0, "{len}");
}

#[test]
fn bad_input_is_a_clear_error_before_anything_moves() {
    let (d, lab) = common::lab::demo_lab();
    let vm_json = lab.join("hyperv/web02/vm.json");
    let good = std::fs::read_to_string(&vm_json).unwrap();
    let wf = root().join(WF);
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "missing-fields",
            Box::new(|| {
                std::fs::write(&vm_json, good.replace("\"ProcessorCount\": 2,", "")).unwrap()
            }),
            "not the JSON of the documented Get-VM export",
        ),
        (
            "missing-disk",
            Box::new(|| {
                std::fs::rename(
                    lab.join("hyperv/web02/Virtual Hard Disks/web02_data.vhdx"),
                    lab.join("hyperv/web02/gone.vhdx"),
                )
                .unwrap()
            }),
            "disk scsi0:1 of web02 (C:\\Hyper-V\\web02\\Virtual Hard Disks\\web02_data.vhdx) is not in site `hyperv`",
        ),
    ];
    for (name, break_it, want) in cases {
        break_it();
        let o = run(&wf, &lab, &d.path().join(name), &[]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {t}");
        assert!(t.contains(want), "{name}: expected {want:?} in:\n{t}");
        assert!(
            common::lab::points(&lab, Some("web02")).is_empty(),
            "{name}: something was shipped"
        );
        // put it back
        std::fs::write(&vm_json, &good).unwrap();
        let gone = lab.join("hyperv/web02/gone.vhdx");
        if gone.exists() {
            std::fs::rename(
                &gone,
                lab.join("hyperv/web02/Virtual Hard Disks/web02_data.vhdx"),
            )
            .unwrap();
        }
    }
    // an RCT answer that stops short of the end of the disk
    ok(&run(&wf, &lab, &d.path().join("first"), &[]));
    let rct = lab.join("hyperv/web02/rct/scsi0-1.json");
    let short = std::fs::read_to_string(&rct).unwrap().replace(
        "\"ProcessedByteLength\": 33554432",
        "\"ProcessedByteLength\": 1048576",
    );
    std::fs::write(&rct, short).unwrap();
    let o = run(&wf, &lab, &d.path().join("short"), &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("call GetVirtualDiskChanges until ProcessedByteLength covers the whole disk"),
        "{t}"
    );
    assert_eq!(common::lab::points(&lab, Some("web02")).len(), 1);
}

/// A differencing disk whose parent is missing is a clear error naming the
/// parent and where it was looked for; a parent outside the site is refused.
#[test]
fn broken_or_escaping_differencing_chains_are_refused() {
    let (d, lab) = common::lab::demo_lab();
    let vm = lab.join("hyperv/web02");
    let disks = vm.join("Virtual Hard Disks");
    let child = disks.join("web02_CHILD.avhdx");
    lifeboat_disk::create_vhdx_differencing(
        &child,
        disks.join("web02.vhdx"),
        "web02.vhdx",
        &[(0, vec![7u8; 4096])],
    )
    .unwrap();
    let config = std::fs::read_to_string(vm.join("vm.json")).unwrap();
    std::fs::write(
        vm.join("vm.json"),
        config.replace(
            "Virtual Hard Disks\\\\web02.vhdx",
            "Virtual Hard Disks\\\\web02_CHILD.avhdx",
        ),
    )
    .unwrap();
    let wf = root().join(WF);

    // the parent moved out of the site (a symlink left in its place)
    let outside = d.path().join("outside.vhdx");
    std::fs::rename(disks.join("web02.vhdx"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, disks.join("web02.vhdx")).unwrap();
    let o = run(&wf, &lab, &d.path().join("s1"), &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("denied") && t.contains("outside"), "{t}");

    // the parent is gone
    std::fs::remove_file(disks.join("web02.vhdx")).unwrap();
    let o = run(&wf, &lab, &d.path().join("s2"), &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("bad-disk") && t.contains("web02.vhdx"), "{t}");
    assert!(
        common::lab::points(&lab, Some("web02")).is_empty(),
        "nothing may be shipped"
    );
}
