//! VMware folder site → vault through the bundled vmware plugin and the demo
//! lab: full replication, a guest change, an incremental that ships only the
//! changed areas (counted), both points restored identical (qemu-img), and bad
//! input — a missing or corrupt .vmx, a missing disk, a bad change list — each a
//! clear error before anything moves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Output;

use common::lab::{output, restore_and_compare};
use common::{lifeboat, ok, root};

const WF: &str = "workflows/vmware-to-azure/replicate.yaml";

fn replicate(lab: &Path, state: &Path) -> Output {
    lifeboat()
        .args(["run", "--state-dir"])
        .arg(state)
        .arg(WF)
        .arg("--input")
        .arg(format!("lab={}", lab.display()))
        .output()
        .unwrap()
}

#[test]
fn full_then_incremental_ships_only_changed_areas() {
    let (d, lab) = common::lab::demo_lab();
    let vm = lab.join("vmware/web01");
    let keep = d.path().join("gen1");
    common::lab::keep_copies(&vm, &["web01.vmdk", "web01_1.vmdk"], &keep);

    let first = ok(&replicate(&lab, &d.path().join("s1")));
    let pts = common::lab::points(&lab, None);
    assert_eq!(pts.len(), 1);
    let p1 = pts[0]["id"].as_str().unwrap().to_string();
    assert_eq!(output(&first, "bytes_read"), "14680064", "{first}");

    // the guest writes: 3 areas, 256 KiB + 64 KiB + 128 KiB
    ok(&lifeboat()
        .args(["demo", "change"])
        .arg(&lab)
        .output()
        .unwrap());
    let second = ok(&replicate(&lab, &d.path().join("s2")));
    assert!(
        second.contains("changed-block tracking: 2 areas since point"),
        "{second}"
    );
    let changed = (256 + 64 + 128) << 10;
    assert_eq!(
        output(&second, "bytes_read"),
        changed.to_string(),
        "{second}"
    );
    let pts = common::lab::points(&lab, None);
    assert_eq!(pts.len(), 2);
    let p2 = pts[1]["id"].as_str().unwrap().to_string();
    assert_eq!(pts[1]["parent"], p1.as_str());
    for disk in pts[1]["disks"].as_array().unwrap() {
        assert_eq!(disk["changes"], "list", "{disk}");
    }

    // each point restores to exactly the disks of its time
    restore_and_compare(
        &lab,
        "web01",
        &p1,
        "scsi0:0",
        &keep.join("web01.vmdk"),
        "vmdk",
    );
    restore_and_compare(
        &lab,
        "web01",
        &p1,
        "scsi0:1",
        &keep.join("web01_1.vmdk"),
        "vmdk",
    );
    restore_and_compare(
        &lab,
        "web01",
        &p2,
        "scsi0:0",
        &vm.join("web01.vmdk"),
        "vmdk",
    );
    restore_and_compare(
        &lab,
        "web01",
        &p2,
        "scsi0:1",
        &vm.join("web01_1.vmdk"),
        "vmdk",
    );

    // no change list at all: hash comparison still finds only what changed
    std::fs::remove_dir_all(vm.join("cbt")).unwrap();
    let wf = d.path().join("nocbt.yaml");
    let text = std::fs::read_to_string(root().join(WF))
        .unwrap()
        .replace("      changed_areas:\n        \"scsi0:0\": web01/cbt/scsi0-0.json\n        \"scsi0:1\": web01/cbt/scsi0-1.json\n", "");
    assert!(!text.contains("changed_areas:\n"));
    std::fs::write(&wf, text).unwrap();
    let third = lifeboat()
        .args(["run", "--state-dir"])
        .arg(d.path().join("s3"))
        .arg(&wf)
        .arg("--input")
        .arg(format!("lab={}", lab.display()))
        .output()
        .unwrap();
    let third = ok(&third);
    assert!(third.contains("hash comparison with point"), "{third}");
    assert_eq!(output(&third, "bytes_new"), "0", "{third}");

    // retention: a fourth run keeping 2 deletes the two oldest, names them in its
    // plan, and leaves the newest restorable; a fifth deletes exactly one
    let run = |state: &str, keep: &str| {
        lifeboat()
            .args(["run", "--state-dir"])
            .arg(d.path().join(state))
            .arg(&wf)
            .arg("--input")
            .arg(format!("lab={}", lab.display()))
            .arg("--input")
            .arg(format!("keep_last={keep}"))
            .output()
            .unwrap()
    };
    let p3 = common::lab::points(&lab, None)[2]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let fourth = ok(&run("s4", "2"));
    assert!(
        fourth.contains(&format!(
            "delete 2 of web01's 4 recovery points, keeping the newest 2: {p1}, {p2}"
        )),
        "{fourth}"
    );
    assert_eq!(output(&fourth, "removed"), format!("[\"{p1}\",\"{p2}\"]"));
    assert_eq!(output(&fourth, "kept"), "2", "{fourth}");
    let pts = common::lab::points(&lab, None);
    let ids: Vec<&str> = pts.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], p3, "{ids:?}");
    restore_and_compare(
        &lab,
        "web01",
        ids[1],
        "scsi0:0",
        &vm.join("web01.vmdk"),
        "vmdk",
    );
    restore_and_compare(
        &lab,
        "web01",
        ids[1],
        "scsi0:1",
        &vm.join("web01_1.vmdk"),
        "vmdk",
    );
    let fifth = ok(&run("s5", "2"));
    assert_eq!(output(&fifth, "removed"), format!("[\"{p3}\"]"), "{fifth}");
    // keep_last 0 would delete everything: refused, nothing lost
    let o = run("s6", "0");
    assert_eq!(o.status.code(), Some(1), "{}", common::text(&o));
    assert!(
        common::text(&o).contains("`keep_last` is 0; it must be at least 1"),
        "{}",
        common::text(&o)
    );
    assert_eq!(common::lab::points(&lab, None).len(), 3);
}

#[test]
fn bad_input_is_a_clear_error_before_anything_moves() {
    let (d, lab) = common::lab::demo_lab();
    let vm = lab.join("vmware/web01");
    let vmx = std::fs::read_to_string(vm.join("web01.vmx")).unwrap();
    let run = |state: &str| {
        let o = replicate(&lab, &d.path().join(state));
        (
            o.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "missing-vmx",
            Box::new(|| std::fs::remove_file(vm.join("web01.vmx")).unwrap()),
            "no .vmx at \"web01/web01.vmx\" in site `vmware`",
        ),
        (
            "corrupt-vmx",
            Box::new(|| {
                std::fs::write(
                    vm.join("web01.vmx"),
                    vmx.replace("memSize = \"4096\"", "memSize 4096"),
                )
                .unwrap()
            }),
            "web01/web01.vmx:8: expected `key = \"value\"`, found \"memSize 4096\"",
        ),
        (
            "missing-disk",
            Box::new(|| {
                std::fs::write(vm.join("web01.vmx"), &vmx).unwrap();
                std::fs::rename(vm.join("web01_1.vmdk"), vm.join("gone.vmdk")).unwrap();
            }),
            "web01/web01.vmx:14: disk scsi0:1 (web01_1.vmdk): site `vmware` has no \"web01/web01_1.vmdk\"",
        ),
    ];
    for (name, setup, want) in &cases {
        setup();
        let (code, text) = run(name);
        assert_eq!(code, Some(1), "{name}: {text}");
        assert!(text.contains(want), "{name}: expected {want:?} in:\n{text}");
    }
    assert!(
        common::lab::points(&lab, None).is_empty(),
        "nothing may be shipped"
    );

    // a change list that does not cover the disk: refused before shipping
    std::fs::rename(vm.join("gone.vmdk"), vm.join("web01_1.vmdk")).unwrap();
    ok(&replicate(&lab, &d.path().join("ok")));
    std::fs::write(
        vm.join("cbt/scsi0-0.json"),
        r#"{"startOffset": 0, "length": 1048576, "changedArea": []}"#,
    )
    .unwrap();
    let (code, text) = run("short-cbt");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("page through the whole disk"), "{text}");
    assert_eq!(common::lab::points(&lab, None).len(), 1);
}
