//! `lifeboat vault …` through the real binary, checked with qemu-img.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::lifeboat;

const KEY: &str = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn vault(args: &[&str]) -> std::process::Output {
    lifeboat()
        .env("LIFEBOAT_VAULT_KEY", KEY)
        .arg("vault")
        .args(args)
        .output()
        .unwrap()
}

/// `vault ship URL --vm VM --disk IMG [extra…]`.
fn ship(url: &str, vm: &str, img: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["ship", url, "--vm", vm, "--disk", img.to_str().unwrap()];
    args.extend_from_slice(extra);
    vault(&args)
}

fn ok(out: std::process::Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn qemu_io(img: &Path, cmd: &str) {
    sh(Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", cmd])
        .arg(img));
}

fn compare(a: &Path, fa: &str, b: &Path, fb: &str) -> bool {
    Command::new("qemu-img")
        .args(["compare", "-f", fa, "-F", fb])
        .arg(a)
        .arg(b)
        .status()
        .unwrap()
        .success()
}

#[test]
fn full_and_incremental_ship_restore_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = d.join("web-01.qcow2");
    let url = d.join("vault");
    let url = url.to_str().unwrap();
    sh(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("64M"));
    qemu_io(&img, "write -P 0xaa 0 1M");
    qemu_io(&img, "write -P 0xbb 40M 3M");
    let v1 = d.join("v1.raw");
    sh(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&img)
        .arg(&v1));

    ok(vault(&["init", url]));
    let p1 = ok(ship(url, "web-01", &img, &[])).trim().to_string();
    assert!(!p1.is_empty());

    // the guest changes 64 KiB; the change list says exactly that
    qemu_io(&img, "write -P 0xcc 1M 64k");
    std::fs::write(
        d.join("changed.json"),
        r#"{"changedArea":[{"start":1048576,"length":65536}]}"#,
    )
    .unwrap();
    let out = ship(
        url,
        "web-01",
        &img,
        &[
            "--changed",
            d.join("changed.json").to_str().unwrap(),
            "--json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(report["bytes_read"], 65536, "{report}");
    let p2 = report["point"].as_str().unwrap().to_string();

    let points: serde_json::Value =
        serde_json::from_str(&ok(vault(&["points", url, "--vm", "web-01", "--json"]))).unwrap();
    assert_eq!(points.as_array().unwrap().len(), 2);

    // latest = the changed disk; the first point = the first state
    let out2 = d.join("latest.vhd");
    ok(vault(&[
        "restore",
        url,
        "--vm",
        "web-01",
        "--point",
        "latest",
        "--out",
        out2.to_str().unwrap(),
        "--format",
        "vhd",
    ]));
    assert!(
        compare(&img, "qcow2", &out2, "vpc"),
        "latest restore differs"
    );
    let out1 = d.join("first.qcow2");
    ok(vault(&[
        "restore",
        url,
        "--vm",
        "web-01",
        "--point",
        &p1,
        "--out",
        out1.to_str().unwrap(),
        "--format",
        "qcow2",
    ]));
    assert!(
        compare(&v1, "raw", &out1, "qcow2"),
        "first-point restore differs"
    );
    assert!(
        Command::new("qemu-img")
            .arg("check")
            .arg(&out1)
            .status()
            .unwrap()
            .success()
    );
    assert_ne!(p1, p2);

    let check = ok(vault(&["check", url, "--read-data"]));
    assert!(check.starts_with("ok:"), "{check}");

    // a wrong key is a clear error, not garbage
    let wrong = lifeboat()
        .env("LIFEBOAT_VAULT_KEY", KEY.replace("8", "9"))
        .args(["vault", "points", url])
        .output()
        .unwrap();
    assert_ne!(wrong.status.code(), Some(0));
    let msg = String::from_utf8_lossy(&wrong.stderr).to_lowercase();
    assert!(msg.contains("key"), "{msg}");
}

#[test]
fn change_lists_in_every_platform_shape() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = d.join("d.qcow2");
    let url = d.join("vault");
    let url = url.to_str().unwrap();
    sh(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("16M"));
    qemu_io(&img, "write -P 0x11 0 2M");
    ok(vault(&["init", url]));
    ok(ship(url, "vm", &img, &[]));
    qemu_io(&img, "write -P 0x22 4M 128k");
    let shapes = [
        (
            "hyperv.json",
            r#"{"ChangedByteOffsets":[4194304],"ChangedByteLengths":[131072]}"#,
        ),
        (
            "azure.json",
            r#"{"PageRange":[{"Start":4194304,"End":4325375}],"ClearRange":[]}"#,
        ),
        ("list.txt", "4194304 131072 data\n"),
        (
            "list.json",
            r#"[{"offset":4194304,"length":131072,"kind":"data"}]"#,
        ),
    ];
    for (name, text) in shapes {
        std::fs::write(d.join(name), text).unwrap();
        let out = ship(
            url,
            "vm",
            &img,
            &["--changed", d.join(name).to_str().unwrap(), "--json"],
        );
        let r: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
        assert_eq!(r["bytes_read"], 131072, "{name}: {r}");
    }
    std::fs::write(d.join("bad.json"), r#"{"weird":1}"#).unwrap();
    let out = ship(
        url,
        "vm",
        &img,
        &["--changed", d.join("bad.json").to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown change-list shape"));
    let restored = d.join("r.raw");
    ok(vault(&[
        "restore",
        url,
        "--vm",
        "vm",
        "--out",
        restored.to_str().unwrap(),
        "--format",
        "raw",
    ]));
    assert!(compare(&img, "qcow2", &restored, "raw"));
}
