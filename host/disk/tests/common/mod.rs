//! Shared helpers for the qemu-img / qemu-io oracle tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use lifeboat_disk::{DiskReader, Extent, ExtentKind, Format, WriteFormat, copy_to, create};

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

// ---- differencing chains

pub type Writes = Vec<(u64, Vec<u8>)>;

/// Position-dependent bytes, so that a block or sector read from the wrong place shows.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn wr(off: u64, len: u64) -> (u64, Vec<u8>) {
    (off, bytes(off ^ (len << 40), len as usize))
}

/// The flat image a chain must read as: the base's raw bytes with each level's writes
/// applied in order, by plain file writes.
pub fn expected(base_raw: &Path, out: &Path, levels: &[&Writes]) {
    std::fs::copy(base_raw, out).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(out).unwrap();
    for level in levels {
        for (off, data) in level.iter() {
            f.write_all_at(data, *off).unwrap();
        }
    }
}

/// Our reader's flattening of the chain, through `copy_to` (so through the allocation
/// map) into a raw file.
pub fn ours(r: &mut dyn DiskReader, out: &Path) {
    let mut w = create(out, WriteFormat::Raw, r.virtual_size()).unwrap();
    copy_to(r, w.as_mut()).unwrap();
    w.finish().unwrap();
}

pub fn qemu_identical(a: &Path, b: &Path) {
    let out = run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
    );
    assert!(out.contains("identical"), "{out}");
}

/// Checks the chain against the oracle three ways: qemu-img compare of our flattened
/// copy, our reads in odd-sized pieces, and every level's writes covered by the map.
pub fn check_chain(
    fmt: Format,
    top: &Path,
    expect_raw: &Path,
    all_writes: &[&Writes],
    base_writes: &[W],
) {
    assert_eq!(lifeboat_disk::detect(top).unwrap(), fmt);
    let mut r = lifeboat_disk::open(top).unwrap();
    assert_eq!(r.format(), fmt);
    let flat = top.with_extension("ours.raw");
    ours(r.as_mut(), &flat);
    qemu_identical(expect_raw, &flat);
    assert_same_as_raw(r.as_mut(), expect_raw);
    let map = assert_allocation(r.as_mut(), base_writes, &[]);
    for level in all_writes {
        for (off, data) in level.iter() {
            assert!(
                covered(&map, *off, data.len() as u64),
                "write at {off} (+{}) not covered: {map:?}",
                data.len()
            );
        }
    }
}
