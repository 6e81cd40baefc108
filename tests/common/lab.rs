//! Demo-lab helpers shared by the scenario tests (VMware, Hyper-V, vCenter,
//! failover, recovery): a run's outputs, the vault's points, and restoring a
//! point's disk to compare it with qemu-img.

use std::path::Path;
use std::process::Command;

use super::{lifeboat, ok};

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
