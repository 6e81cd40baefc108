//! The deployments checked by an independent oracle: Microsoft's Python SDK
//! models (tests/oracle/arm_check.py, installed by tests/oracle/setup.sh).
//!
//! The oracle must accept what we build, and must reject the same bodies
//! with one key misspelt or a required field removed: otherwise it checks
//! nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use lifeboat_azure_arm::deployment;
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The oracle's Python, set up once per test process. Runs
/// tests/oracle/setup.sh, which is idempotent (a second run only checks).
fn oracle_python() -> &'static Path {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = PYTHON.get_or_init(|| {
        let root = repo_root();
        let python = root.join("target/tools/arm-oracle/bin/python");
        let has_python3 = Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !has_python3 && !python.exists() {
            return Err(
                "python3 is missing, and the ARM oracle needs it: run `bash tests/oracle/setup.sh` \
                 (as root it installs python3 and python3-venv with apt, then the pinned Azure SDK)"
                    .into(),
            );
        }
        let out = Command::new("bash")
            .arg(root.join("tests/oracle/setup.sh"))
            .output()
            .map_err(|e| format!("cannot run tests/oracle/setup.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "tests/oracle/setup.sh failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if python.exists() {
            Ok(python)
        } else {
            Err(format!(
                "tests/oracle/setup.sh left no {}",
                python.display()
            ))
        }
    });
    match result {
        Ok(p) => p,
        Err(e) => panic!("ARM oracle unavailable: {e}"),
    }
}

/// Writes each document to a file in a directory of its own and runs the
/// oracle on all of them: (passed, output).
fn run_oracle(test: &str, docs: &[(&str, &Value)]) -> (bool, String) {
    let python = oracle_python();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("arm-oracle")
        .join(test);
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (name, doc) in docs {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(doc).unwrap()).unwrap();
        files.push(path);
    }
    let started = std::time::Instant::now();
    let out = Command::new(python)
        .arg(repo_root().join("tests/oracle/arm_check.py"))
        .args(&files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "oracle ({test}, {} file(s), {:.2?}):\n{text}",
        files.len(),
        started.elapsed()
    );
    match out.status.code() {
        Some(0) => (true, text),
        Some(1) => (false, text),
        other => panic!("oracle crashed (exit {other:?}):\n{text}"),
    }
}

fn resources_mut(doc: &mut Value) -> &mut Vec<Value> {
    doc["properties"]["template"]["resources"]
        .as_array_mut()
        .unwrap()
}

fn index_of(doc: &Value, ty: &str) -> usize {
    doc["properties"]["template"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .position(|r| r["type"] == ty)
        .unwrap()
}

fn rename_key(obj: &mut Value, from: &str, to: &str) {
    let map = obj.as_object_mut().unwrap();
    let value = map.remove(from).unwrap();
    map.insert(to.into(), value);
}

const VM: &str = "Microsoft.Compute/virtualMachines";
const DISK: &str = "Microsoft.Compute/disks";

#[test]
fn oracle_accepts_every_generated_deployment() {
    let (spec, net) = test_failover();
    let bios = deployment(&bios_one_disk(), None).unwrap();
    let uefi = deployment(&uefi_three_disks(), None).unwrap();
    let test = deployment(&spec, Some(&net)).unwrap();
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/uefi-3-disks-2-nics.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let (ok, out) = run_oracle(
        "accepts",
        &[
            ("bios-1-disk-1-nic", &bios),
            ("uefi-3-disks-2-nics", &uefi),
            ("test-failover", &test),
            ("golden", &golden),
        ],
    );
    assert!(ok, "the oracle rejected a generated deployment:\n{out}");
    assert!(
        out.contains("arm_check: 4 file(s), 21 resource(s), 0 problem(s)"),
        "{out}"
    );
}

#[test]
fn oracle_accepts_a_single_resource() {
    let doc = deployment(&uefi_three_disks(), None).unwrap();
    let disk = doc["properties"]["template"]["resources"][0].clone();
    let (ok, out) = run_oracle("single-resource", &[("disk", &disk)]);
    assert!(ok, "{out}");
}

#[test]
fn oracle_rejects_a_misspelt_vm_key() {
    let mut doc = deployment(&bios_one_disk(), None).unwrap();
    let i = index_of(&doc, VM);
    rename_key(
        &mut resources_mut(&mut doc)[i]["properties"],
        "hardwareProfile",
        "hardwareProfil",
    );
    let (ok, out) = run_oracle("typo-vm", &[("vm-typo", &doc)]);
    assert!(!ok, "the oracle missed a misspelt key:\n{out}");
    let path = format!("$.properties.template.resources[{i}].properties.hardwareProfil");
    assert!(out.contains(&format!("unknown key {path}")), "{out}");
    assert!(
        out.contains("Microsoft.Compute/virtualMachines 'web01'"),
        "names the resource: {out}"
    );
}

#[test]
fn oracle_rejects_a_misspelt_creation_data_key() {
    let mut doc = deployment(&uefi_three_disks(), None).unwrap();
    let i = index_of(&doc, DISK);
    rename_key(
        &mut resources_mut(&mut doc)[i]["properties"]["creationData"],
        "sourceUri",
        "sourceUrl",
    );
    let (ok, out) = run_oracle("typo-creation-data", &[("disk-typo", &doc)]);
    assert!(!ok, "{out}");
    let base = format!("$.properties.template.resources[{i}].properties.creationData");
    assert!(
        out.contains(&format!("unknown key {base}.sourceUrl")),
        "{out}"
    );
    assert!(
        out.contains(&format!("missing required {base}.sourceUri")),
        "{out}"
    );
}

#[test]
fn oracle_rejects_a_missing_location() {
    let mut doc = deployment(&bios_one_disk(), None).unwrap();
    let i = index_of(&doc, VM);
    resources_mut(&mut doc)[i]
        .as_object_mut()
        .unwrap()
        .remove("location");
    let (ok, out) = run_oracle("missing-location", &[("no-location", &doc)]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "missing required $.properties.template.resources[{i}].location"
        )),
        "{out}"
    );
    assert!(out.contains("VirtualMachine.location is required"), "{out}");
}

#[test]
fn oracle_rejects_bad_values_and_wiring() {
    let mut doc = deployment(&uefi_three_disks(), None).unwrap();
    let vm = index_of(&doc, VM);
    let disk = index_of(&doc, DISK);
    let res = resources_mut(&mut doc);
    res[vm]["properties"]["hardwareProfile"]["vmSize"] = "Standard_D3s_v5".into();
    res[disk]["properties"]["creationData"]["createOption"] = "Imports".into();
    res[vm]["properties"]["diagnosticsProfile"]["bootDiagnostics"]["enabled"] = "true".into();
    res[vm]["dependsOn"].as_array_mut().unwrap().pop(); // the last NIC
    let (ok, out) = run_oracle("bad-values", &[("bad-values", &doc)]);
    assert!(!ok, "{out}");
    let at = |i: usize| format!("$.properties.template.resources[{i}]");
    for want in [
        format!("bad value {}.properties.hardwareProfile.vmSize", at(vm)),
        format!(
            "bad value {}.properties.creationData.createOption",
            at(disk)
        ),
        format!(
            "wrong type {}.properties.diagnosticsProfile.bootDiagnostics.enabled",
            at(vm)
        ),
        format!(
            "missing dependsOn {}.properties.networkProfile.networkInterfaces[1].id",
            at(vm)
        ),
    ] {
        assert!(out.contains(&want), "expected {want:?} in:\n{out}");
    }
}

#[test]
fn oracle_rejects_unknown_types() {
    let mut doc = deployment(&bios_one_disk(), None).unwrap();
    let vm = index_of(&doc, VM);
    resources_mut(&mut doc)[vm]["type"] = "Microsoft.Compute/virtualMachine".into();
    let (ok, out) = run_oracle("unknown-type", &[("unknown-type", &doc)]);
    assert!(!ok, "{out}");
    assert!(out.contains("unknown type"), "{out}");
}
