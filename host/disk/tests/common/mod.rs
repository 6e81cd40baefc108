//! Shared helpers for the qemu-img / qemu-io oracle tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use lifeboat_disk::{DiskReader, Extent, ExtentKind};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns its exit code and combined output.
pub fn status(cmd: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A pattern write: `qemu-io write -P pattern offset len`.
#[derive(Clone, Copy, Debug)]
pub struct W {
    pub off: u64,
    pub len: u64,
    pub pat: u8,
}

pub const fn w(off: u64, len: u64, pat: u8) -> W {
    W { off, len, pat }
}

pub fn qemu_io_writes(fmt: &str, img: &Path, writes: &[W]) {
    let mut args: Vec<String> = vec!["-f".into(), fmt.into()];
    for x in writes {
        args.push("-c".into());
        args.push(format!("write -P {:#x} {} {}", x.pat, x.off, x.len));
    }
    args.push(img.to_str().unwrap().into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("qemu-io", &refs);
    assert!(!out.contains("failed"), "qemu-io: {out}");
}

pub fn info(fmt: Option<&str>, img: &Path) -> serde_json::Value {
    let mut args = vec!["info", "--output=json"];
    if let Some(f) = fmt {
        args.extend(["-f", f]);
    }
    args.push(img.to_str().unwrap());
    serde_json::from_str(&run("qemu-img", &args)).unwrap()
}

/// Compares the reader's whole virtual disk with a raw file, byte for byte, reading in
/// odd-sized pieces so that cluster, grain and block boundaries are crossed mid-read.
/// Where the raw file has a hole (found with SEEK_DATA/SEEK_HOLE), our bytes must be
/// zeros and the raw file is not read.
pub fn assert_same_as_raw(reader: &mut dyn DiskReader, raw: &Path) {
    let f = File::open(raw).unwrap();
    let raw_len = f.metadata().unwrap().len();
    assert_eq!(
        reader.virtual_size(),
        raw_len,
        "virtual size differs from qemu-img's raw conversion"
    );
    let data = raw_data_ranges(&f, raw_len);
    let chunk = (MIB + 4097) as usize;
    let mut a = vec![0u8; chunk];
    let mut b = vec![0u8; chunk];
    let mut pos = 0u64;
    while pos < raw_len {
        let n = chunk.min((raw_len - pos) as usize);
        reader.read_at(pos, &mut a[..n]).unwrap();
        let end = pos + n as u64;
        if data.iter().any(|&(s, e)| s < end && pos < e) {
            f.read_exact_at(&mut b[..n], pos).unwrap();
        } else {
            b[..n].fill(0);
        }
        if a[..n] != b[..n] {
            let i = a[..n]
                .iter()
                .zip(&b[..n])
                .position(|(x, y)| x != y)
                .unwrap();
            panic!(
                "first difference at byte {}: ours {:#x}, qemu {:#x}",
                pos + i as u64,
                a[i],
                b[i]
            );
        }
        pos += n as u64;
    }
}

/// Data ranges of a host file, straight from the kernel.
fn raw_data_ranges(f: &File, len: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{SeekFrom, seek};
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let Ok(d) = seek(f, SeekFrom::Data(pos)) else {
            break;
        };
        let h = seek(f, SeekFrom::Hole(d)).unwrap_or(len);
        out.push((d, h));
        pos = h;
    }
    out
}

pub fn covered(map: &[Extent], off: u64, len: u64) -> bool {
    // Every byte of [off, off+len) lies in some Data extent.
    let mut pos = off;
    let end = off + len;
    for e in map.iter().filter(|e| e.kind == ExtentKind::Data) {
        if e.offset <= pos && pos < e.offset + e.length {
            pos = e.offset + e.length;
            if pos >= end {
                return true;
            }
        }
    }
    pos >= end
}

pub fn overlaps(map: &[Extent], off: u64, len: u64) -> bool {
    map.iter()
        .any(|e| e.kind == ExtentKind::Data && e.offset < off + len && off < e.offset + e.length)
}

/// Checks the allocation map: sorted, non-overlapping, within the disk, covering every
/// write, and leaving the untouched ranges out of its data extents.
pub fn assert_allocation(
    reader: &mut dyn DiskReader,
    writes: &[W],
    untouched: &[(u64, u64)],
) -> Vec<Extent> {
    let map = reader.allocation().unwrap();
    for pair in map.windows(2) {
        assert!(
            pair[0].offset + pair[0].length <= pair[1].offset,
            "extents overlap or unsorted: {pair:?}"
        );
    }
    if let Some(last) = map.last() {
        assert!(
            last.offset + last.length <= reader.virtual_size(),
            "extent beyond the disk: {last:?}"
        );
    }
    for x in writes {
        assert!(
            covered(&map, x.off, x.len),
            "write {x:?} not covered by allocation {map:?}"
        );
    }
    for &(off, len) in untouched {
        assert!(
            !overlaps(&map, off, len),
            "untouched range {off}+{len} reported allocated: {map:?}"
        );
    }
    map
}

/// Makes a sparse raw file of `size` bytes with the pattern writes.
pub fn make_raw(path: &Path, size: u64, writes: &[W]) {
    // Not `qemu-img create`: it rounds raw sizes up to a sector.
    File::create(path).unwrap().set_len(size).unwrap();
    qemu_io_writes("raw", path, writes);
}

/// CRC-32C (Castagnoli), bitwise: for re-sealing VHDX structures a test modifies.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
    }
    !c
}
