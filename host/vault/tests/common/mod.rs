//! Shared helpers: images made and compared with qemu-img / qemu-io (the oracle).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use lifeboat_vault::{Key, WriteFormat};

pub fn key() -> Key {
    Key::parse(&"5a".repeat(32)).unwrap()
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn qemu_img(args: &[&str]) -> String {
    run(Command::new("qemu-img").args(args))
}

/// Runs qemu-io commands (e.g. `write -P 0xaa 0 64k`) on an image.
pub fn qemu_io(fmt: &str, img: &Path, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.arg("-f").arg(fmt);
    for x in cmds {
        c.arg("-c").arg(x);
    }
    c.arg(img);
    run(&mut c);
}

pub fn qemu_fmt(f: WriteFormat) -> &'static str {
    match f {
        WriteFormat::Raw => "raw",
        WriteFormat::VhdFixed => "vpc",
        WriteFormat::VhdxDynamic => "vhdx",
        WriteFormat::VmdkStreamOptimized | WriteFormat::VmdkMonolithicSparse => "vmdk",
        WriteFormat::Qcow2 => "qcow2",
    }
}

pub const ALL_FORMATS: [WriteFormat; 6] = [
    WriteFormat::Raw,
    WriteFormat::Qcow2,
    WriteFormat::VhdFixed,
    WriteFormat::VhdxDynamic,
    WriteFormat::VmdkMonolithicSparse,
    WriteFormat::VmdkStreamOptimized,
];

/// `qemu-img compare` (exit 0 = identical).
pub fn assert_same(a: &Path, afmt: &str, b: &Path, bfmt: &str) {
    let out = Command::new("qemu-img")
        .args(["compare", "-f", afmt, "-F", bfmt])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img compare {} {} : {}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn snapshot(src: &Path, dst: &Path) {
    run(Command::new("cp").arg("--sparse=always").arg(src).arg(dst));
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("lifeboat-vault-test")
        .tempdir()
        .unwrap()
}

pub fn p(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Flips one bit in the middle of the largest file under `dir`.
pub fn flip_bit_in_largest(dir: &Path) -> PathBuf {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if best.as_ref().is_none_or(|b| m.len() > b.0) {
                best = Some((m.len(), e.path()));
            }
        }
    }
    let (len, path) = best.unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(len / 2) as usize] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();
    path
}
