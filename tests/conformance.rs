//! One provider conformance suite, run against every source plugin with the
//! same assertions: VMware, Hyper-V and Azure (region A as a source), each on
//! its demo folder site. For each:
//! `discover` gives the common VM shape (name, cpus, memory, firmware, disks
//! with sizes, NICs with their networks); the first replication reads the
//! allocation map; after the same guest writes, the incremental reads exactly
//! the changed bytes from the platform's change tracking (Azure's folder site
//! has no blob snapshots to diff: it compares hashes, and stores only the
//! changed chunks); both points restore
//! identical to the disks of their time (qemu-img); and a test failover to
//! Azure gives page-blob VHDs equal to the disks and an ARM deployment that
//! passes Microsoft's SDK models.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::lab::{arm_oracle, output, points, restore_and_compare};
use common::{lifeboat, ok, root};

/// A source plugin's scenario in the demo lab.
struct Source {
    scenario: &'static str,
    vm: &'static str,
    /// The VM's folder in the lab and its disks there: (name, file, qemu format).
    dir: &'static str,
    disks: [(&'static str, &'static str, &'static str); 2],
    /// How the plan names the platform's change tracking.
    tracking: &'static str,
    /// Whether the incremental reads only the changed bytes (a change list),
    /// or reads everything and stores only the changed chunks (hashes).
    exact: bool,
    /// The lab folder the failover writes into.
    target: &'static str,
}

const SOURCES: &[Source] = &[
    Source {
        scenario: "vmware-to-azure",
        vm: "web01",
        dir: "vmware/web01",
        disks: [
            ("scsi0:0", "web01.vmdk", "vmdk"),
            ("scsi0:1", "web01_1.vmdk", "vmdk"),
        ],
        tracking: "changed-block tracking",
        exact: true,
        target: "azure",
    },
    Source {
        scenario: "hyperv-to-azure",
        vm: "web02",
        dir: "hyperv/web02/Virtual Hard Disks",
        disks: [
            ("scsi0:0", "web02.vhdx", "vhdx"),
            ("scsi0:1", "web02_data.vhdx", "vhdx"),
        ],
        tracking: "resilient change tracking",
        exact: true,
        target: "azure",
    },
    Source {
        scenario: "azure-to-azure",
        vm: "web03",
        dir: "azure-region-a/vhds",
        disks: [
            ("os", "web03-os.vhd", "vpc"),
            ("lun0", "web03-data.vhd", "vpc"),
        ],
        tracking: "hash comparison",
        exact: false,
        target: "azure-region-b",
    },
];

fn run(wf: &str, lab: &Path, state: &Path) -> String {
    ok(&lifeboat()
        .args(["run", "--state-dir"])
        .arg(state)
        .arg(root().join(wf))
        .arg("--input")
        .arg(format!("lab={}", lab.display()))
        .output()
        .unwrap())
}

fn json(run: &str, name: &str) -> serde_json::Value {
    serde_json::from_str(output(run, name)).unwrap()
}

fn same(a: &Path, fa: &str, b: &Path, fb: &str) -> bool {
    Command::new("qemu-img")
        .args(["compare", "-f", fa, "-F", fb])
        .arg(a)
        .arg(b)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn every_source_plugin_conforms() {
    for s in SOURCES {
        let (d, lab) = common::lab::demo_lab();
        let dir = lab.join(s.dir);
        let gen1 = d.path().join("gen1");
        let files: Vec<&str> = s.disks.iter().map(|(_, f, _)| *f).collect();
        common::lab::keep_copies(&dir, &files, &gen1);
        let replicate = format!("workflows/{}/replicate.yaml", s.scenario);

        // discover: the common VM shape every failover reads
        let first = run(&replicate, &lab, &d.path().join("r1"));
        let vm = json(&first, "vm");
        assert_eq!(vm["name"], s.vm, "{}", s.scenario);
        assert!(
            vm["cpus"].as_u64().unwrap() >= 1 && vm["memory_mib"].as_u64().unwrap() >= 256,
            "{vm}"
        );
        assert!(
            ["bios", "uefi"].contains(&vm["firmware"].as_str().unwrap()),
            "{vm}"
        );
        let disks = vm["disks"].as_array().unwrap();
        assert_eq!(disks.len(), 2, "{vm}");
        for (i, (name, _, _)) in s.disks.iter().enumerate() {
            assert_eq!(disks[i]["name"], *name, "{vm}");
            assert!(disks[i]["size_bytes"].as_u64().unwrap() > 0, "{vm}");
        }
        let nics = vm["nics"].as_array().unwrap();
        assert!(
            nics.len() == 2
                && nics
                    .iter()
                    .all(|n| n["network"].is_string() && n["mac"].is_string()),
            "{vm}"
        );
        // the first copy reads the allocation map: 14 MiB of the demo's writes
        assert!(
            first.contains("first copy: allocation map"),
            "{}: {first}",
            s.scenario
        );
        assert_eq!(
            output(&first, "bytes_read"),
            (14u64 << 20).to_string(),
            "{}",
            s.scenario
        );
        let p1 = output(&first, "point").trim_matches('"').to_string();

        // the same guest writes: 256 + 64 KiB on the OS disk, 128 KiB on the data disk
        ok(&lifeboat()
            .args(["demo", "change"])
            .arg(&lab)
            .output()
            .unwrap());
        let second = run(&replicate, &lab, &d.path().join("r2"));
        assert!(second.contains(s.tracking), "{}: {second}", s.scenario);
        let changed = (256 + 64 + 128) << 10;
        if s.exact {
            assert_eq!(
                output(&second, "bytes_read"),
                changed.to_string(),
                "{}",
                s.scenario
            );
        } else {
            // every allocated byte read, only chunks holding changed bytes stored
            let new: u64 = output(&second, "bytes_new").parse().unwrap();
            assert!(
                (changed..=2 * changed).contains(&new),
                "{}: {new} new bytes for {changed} changed: {second}",
                s.scenario
            );
        }
        let pts = points(&lab, Some(s.vm));
        assert_eq!(pts.len(), 2, "{}", s.scenario);
        assert_eq!(pts[1]["parent"], p1.as_str(), "{}", s.scenario);
        let p2 = pts[1]["id"].as_str().unwrap().to_string();
        for (name, f, fmt) in &s.disks {
            restore_and_compare(&lab, s.vm, &p1, name, &gen1.join(f), fmt);
            restore_and_compare(&lab, s.vm, &p2, name, &dir.join(f), fmt);
        }

        // a test failover: page-blob VHDs equal to the disks, a valid ARM body
        let fo = run(
            &format!("workflows/{}/failover.yaml", s.scenario),
            &lab,
            &d.path().join("f"),
        );
        let blobs = json(&fo, "blobs");
        for (i, (_, f, fmt)) in s.disks.iter().enumerate() {
            let vhd = lab.join(s.target).join(blobs[i]["path"].as_str().unwrap());
            assert!(
                same(&dir.join(f), fmt, &vhd, "vpc"),
                "{}: {} differs",
                s.scenario,
                vhd.display()
            );
        }
        let dep = lab.join(format!(
            "{}/deployments/lifeboat-failover-{}-test.json",
            s.target, s.vm
        ));
        let (passed, report) = arm_oracle(&[&dep]);
        assert!(
            passed,
            "{}: the ARM body fails the SDK models:\n{report}",
            s.scenario
        );
    }
}
