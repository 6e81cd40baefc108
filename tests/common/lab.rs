//! Demo-lab helpers shared by the scenario tests (VMware, Hyper-V, vCenter,
//! failover, recovery): a run's outputs, the vault's points, and restoring a
//! point's disk to compare it with qemu-img.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{lifeboat, ok, root, text};

/// The value of the last output line `    NAME = VALUE` of a run's result.
pub fn output<'a>(run: &'a str, name: &str) -> &'a str {
    let key = format!("    {name} = ");
    run.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no output {name} in:\n{run}"))
}

/// The recovery points in a demo lab's vault (of one VM, or all), oldest first.
pub fn points(lab: &Path, vm: Option<&str>) -> Vec<serde_json::Value> {
    let mut c = lifeboat();
    c.args(["vault", "points", "--json"]);
    if let Some(vm) = vm {
        c.args(["--vm", vm]);
    }
    let o = c
        .arg("--key-file")
        .arg(lab.join("vault.key"))
        .arg(lab.join("vault"))
        .output()
        .unwrap();
    serde_json::from_str::<serde_json::Value>(&ok(&o))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The ids of [`points`].
pub fn point_ids(lab: &Path, vm: Option<&str>) -> Vec<String> {
    points(lab, vm)
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

/// Restores disk `disk` of `vm`'s point `point` from the lab's vault as VHDX
/// and checks with `qemu-img compare` that it equals `want` (format `want_fmt`).
pub fn restore_and_compare(
    lab: &Path,
    vm: &str,
    point: &str,
    disk: &str,
    want: &Path,
    want_fmt: &str,
) {
    let out = lab.join(format!("restored-{point}-{}.vhdx", disk.replace(':', "-")));
    ok(&lifeboat()
        .args([
            "vault",
            "restore",
            "--vm",
            vm,
            "--point",
            point,
            "--disk-name",
            disk,
        ])
        .args(["--format", "vhdx", "--out"])
        .arg(&out)
        .arg("--key-file")
        .arg(lab.join("vault.key"))
        .arg(lab.join("vault"))
        .output()
        .unwrap());
    let cmp = Command::new("qemu-img")
        .args(["compare", "-f", want_fmt, "-F", "vhdx"])
        .arg(want)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "{vm} point {point} disk {disk} differs from {}: {}{}",
        want.display(),
        String::from_utf8_lossy(&cmp.stdout),
        String::from_utf8_lossy(&cmp.stderr)
    );
}

/// The ARM oracle (Microsoft's SDK models), set up once per test process.
pub fn arm_oracle(files: &[&Path]) -> (bool, String) {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let python = READY.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("tests/oracle/setup.sh"))
            .output()
            .map_err(|e| format!("cannot run tests/oracle/setup.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!("tests/oracle/setup.sh failed:\n{}", text(&out)));
        }
        Ok(root().join("target/tools/arm-oracle/bin/python"))
    });
    let python = python
        .as_ref()
        .unwrap_or_else(|e| panic!("ARM oracle unavailable: {e}"));
    let o = Command::new(python)
        .arg(root().join("tests/oracle/arm_check.py"))
        .args(files)
        .output()
        .unwrap();
    match o.status.code() {
        Some(0) => (true, text(&o)),
        Some(1) => (false, text(&o)),
        other => panic!("oracle crashed ({other:?}): {}", text(&o)),
    }
}

/// A fresh demo lab (`lifeboat demo init`) in a temporary folder: the folder
/// (keep it alive) and the lab's path inside it.
pub fn demo_lab() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let lab = d.path().join("lab");
    ok(&lifeboat()
        .args(["demo", "init"])
        .arg(&lab)
        .output()
        .unwrap());
    (d, lab)
}

/// Copies `files` of `from` into the new folder `to`: the disks of one
/// generation, to compare its recovery point with later.
pub fn keep_copies(from: &Path, files: &[&str], to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in files {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}
