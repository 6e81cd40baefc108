//! Writers checked against qemu-img: copy a patterned raw source into each format, then
//! `qemu-img check` (where the format has it), `qemu-img compare` and `qemu-img info`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use lifeboat_disk::{DiskError, Format, WriteFormat, copy_to, create, open};

fn qemu_name(f: WriteFormat) -> &'static str {
    match f {
        WriteFormat::Raw => "raw",
        WriteFormat::VhdFixed => "vpc",
        WriteFormat::VhdxDynamic => "vhdx",
        WriteFormat::VmdkStreamOptimized | WriteFormat::VmdkMonolithicSparse => "vmdk",
        WriteFormat::Qcow2 => "qcow2",
    }
}

fn read_format(f: WriteFormat) -> Format {
    match f {
        WriteFormat::Raw => Format::Raw,
        WriteFormat::VhdFixed => Format::VhdFixed,
        WriteFormat::VhdxDynamic => Format::VhdxDynamic,
        WriteFormat::VmdkStreamOptimized => Format::VmdkStreamOptimized,
        WriteFormat::VmdkMonolithicSparse => Format::VmdkMonolithicSparse,
        WriteFormat::Qcow2 => Format::Qcow2 { version: 3 },
    }
}

/// Checks `out` (written as `fmt`, `vsize` bytes) against the raw `src` with qemu-img.
fn oracle(fmt: WriteFormat, src: &Path, out: &Path, vsize: u64) -> serde_json::Value {
    let q = qemu_name(fmt);
    let out_s = out.to_str().unwrap();
    if matches!(q, "qcow2" | "vmdk" | "vhdx") {
        let (code, text) = status("qemu-img", &["check", "-f", q, out_s]);
        assert_eq!(code, 0, "qemu-img check failed:\n{text}");
    }
    let (code, text) = status(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            src.to_str().unwrap(),
            "-F",
            q,
            out_s,
        ],
    );
    assert_eq!(code, 0, "qemu-img compare: {text}");
    let info = info(Some(q), out);
    assert_eq!(info["format"], q);
    // qemu reports a raw file's size rounded up to a sector.
    let expect = if q == "raw" {
        vsize.next_multiple_of(512)
    } else {
        vsize
    };
    assert_eq!(info["virtual-size"].as_u64().unwrap(), expect, "{info}");
    info
}

fn roundtrip(
    fmt: WriteFormat,
    size: u64,
    writes: &[W],
) -> (tempfile::TempDir, PathBuf, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let out = dir.path().join("out.img");
    make_raw(&src, size, writes);
    let mut r = open(&src).unwrap();
    let mut wr = create(&out, fmt, size).unwrap();
    let vsize = wr.virtual_size();
    let copied = copy_to(r.as_mut(), wr.as_mut()).unwrap();
    wr.finish().unwrap();
    let total: u64 = writes.iter().map(|x| x.len).sum();
    assert!(copied >= total, "copied {copied} < written {total}");
    let info = oracle(fmt, &src, &out, vsize);
    // Our own reader sees the same disk and the same allocation.
    let mut back = open(&out).unwrap();
    assert_eq!(back.format(), read_format(fmt));
    assert_eq!(back.virtual_size(), vsize);
    if vsize == size {
        assert_same_as_raw(back.as_mut(), &src);
    }
    assert_allocation(back.as_mut(), writes, &[]);
    (dir, out, info)
}

fn writes_for(size: u64) -> Vec<W> {
    vec![
        w(0, 4096, 0xaa),
        w(65536 - 512, 1024, 0xbb),
        w(3 * MIB + 512, 7 * 512, 0xcc),
        w(33 * MIB - 512, 4096, 0xdd), // straddles a 32 MiB VHDX block edge
        w(size - 65536, 65536, 0xee),
        w(size - 512, 512, 0x5a),
    ]
}

fn host_bytes(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks() * 512
}

#[test]
fn raw_writer_is_sparse() {
    let size = 64 * MIB + 1000;
    let writes = [
        w(0, 4096, 1),
        w(10 * MIB + 3, 5000, 2),
        w(size - 1000, 1000, 3),
    ];
    let (_d, out, _) = roundtrip(WriteFormat::Raw, size, &writes);
    assert!(
        host_bytes(&out) < 4 * MIB,
        "raw output not sparse: {} bytes",
        host_bytes(&out)
    );
}

#[test]
fn qcow2_writer_beyond_4gib() {
    let size = 6 * GIB + 512;
    let mut writes = writes_for(size);
    writes.extend([w(4 * GIB - 100, 200, 0x42), w(5 * GIB + 1, 3 * MIB, 0x43)]);
    let (_d, out, info) = roundtrip(WriteFormat::Qcow2, size, &writes);
    assert_eq!(info["format-specific"]["data"]["compat"], "1.1", "{info}");
    assert!(std::fs::metadata(&out).unwrap().len() < 16 * MIB);
}

#[test]
fn qcow2_writer_many_clusters_need_two_refcount_blocks() {
    // > 32768 host clusters (2 GiB at 64 KiB) needs a second refcount block; use a
    // pattern every 64 KiB over 2.1 GiB but write it sparsely through write_at.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big.qcow2");
    let size = 2200 * MIB;
    let mut wr = create(&out, WriteFormat::Qcow2, size).unwrap();
    let buf = [0x5cu8; 512];
    let mut off = 0;
    while off < size {
        wr.write_at(off, &buf).unwrap();
        off += 65536;
    }
    wr.finish().unwrap();
    let (code, text) = status("qemu-img", &["check", "-f", "qcow2", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = status(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "read -P 0x5c 2147483648 512",
            "-c",
            "read -P 0 2147484160 1024",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        code == 0 && !text.contains("Pattern verification failed"),
        "{text}"
    );
}

#[test]
fn vhd_fixed_writer_azure_ready() {
    let size = 48 * MIB;
    let (_d, out, _) = roundtrip(WriteFormat::VhdFixed, size, &writes_for(size));
    let len = std::fs::metadata(&out).unwrap().len();
    assert_eq!(len, size + 512, "fixed VHD is data plus a 512-byte footer");
    assert_eq!((len - 512) % MIB, 0, "Azure needs a 1 MiB multiple");
    let bytes = std::fs::read(&out).unwrap();
    let footer = &bytes[bytes.len() - 512..];
    assert_eq!(&footer[0..8], b"conectix");
    assert_eq!(&footer[28..32], b"lboa");
    assert_eq!(
        u32::from_be_bytes(footer[60..64].try_into().unwrap()),
        2,
        "disk type fixed"
    );
    assert!(
        host_bytes(&out) < 4 * MIB,
        "fixed VHD should stay sparse on the host"
    );
}

#[test]
fn vhd_fixed_writer_rounds_up_to_mib() {
    let size = 20 * MIB + 1000;
    let (_d, out, _) = roundtrip(
        WriteFormat::VhdFixed,
        size,
        &[w(0, 512, 1), w(size - 1000, 1000, 2)],
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 21 * MIB + 512);
}

#[test]
fn vhdx_writer_beyond_4gib() {
    let size = 5 * GIB;
    let mut writes = writes_for(size);
    writes.push(w(4 * GIB + 5, 100, 0x99));
    let (_d, out, _) = roundtrip(WriteFormat::VhdxDynamic, size, &writes);
    assert!(host_bytes(&out) < 32 * MIB, "{}", host_bytes(&out));
}

#[test]
fn vmdk_stream_optimized_writer() {
    let size = 200 * MIB;
    let (_d, out, info) = roundtrip(WriteFormat::VmdkStreamOptimized, size, &writes_for(size));
    assert_eq!(
        info["format-specific"]["data"]["create-type"], "streamOptimized",
        "{info}"
    );
    let ext = &info["format-specific"]["data"]["extents"][0];
    assert_eq!(ext["compressed"], true, "{info}");
    // Only the written grains are stored, compressed.
    assert!(std::fs::metadata(&out).unwrap().len() < MIB);
}

#[test]
fn vmdk_monolithic_sparse_writer_beyond_4gib() {
    let size = 5 * GIB;
    let mut writes = writes_for(size);
    writes.push(w(4 * GIB + 64 * 1024 - 10, 20, 0x31));
    let (_d, _out, info) = roundtrip(WriteFormat::VmdkMonolithicSparse, size, &writes);
    assert_eq!(
        info["format-specific"]["data"]["create-type"], "monolithicSparse",
        "{info}"
    );
}

/// Direct `write_at` calls of odd sizes, straddling units, in ascending order: every
/// format must equal the raw file qemu-io builds from the same writes.
#[test]
fn direct_unaligned_writes_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let size = 70 * MIB;
    let writes = [
        w(1, 10, 0x01),
        w(65535, 2, 0x02),
        w(65537, 200_000, 0x03),
        w(MIB - 7, 14, 0x04),
        w(32 * MIB - 3, 6, 0x05),
        w(size - 3, 3, 0x06),
    ];
    let src = dir.path().join("src.raw");
    make_raw(&src, size, &writes);
    for fmt in [
        WriteFormat::Raw,
        WriteFormat::Qcow2,
        WriteFormat::VhdFixed,
        WriteFormat::VhdxDynamic,
        WriteFormat::VmdkStreamOptimized,
        WriteFormat::VmdkMonolithicSparse,
    ] {
        let out = dir.path().join(format!("direct-{}", qemu_name(fmt)));
        let mut wr = create(&out, fmt, size).unwrap();
        for x in &writes {
            wr.write_at(x.off, &vec![x.pat; x.len as usize]).unwrap();
        }
        let vsize = wr.virtual_size();
        wr.finish().unwrap();
        oracle(fmt, &src, &out, vsize);
    }
}

#[test]
fn writes_out_of_order_or_beyond_the_end_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for fmt in [
        WriteFormat::Raw,
        WriteFormat::Qcow2,
        WriteFormat::VmdkStreamOptimized,
    ] {
        let out = dir.path().join(format!("o-{}", qemu_name(fmt)));
        let mut wr = create(&out, fmt, 4 * MIB).unwrap();
        wr.write_at(MIB, &[1; 100]).unwrap();
        let e = wr.write_at(MIB + 50, &[1; 10]).unwrap_err();
        assert!(matches!(e, DiskError::InvalidRequest { .. }), "{e}");
        assert!(e.to_string().contains("ascending"), "{e}");
        let e = wr.write_at(4 * MIB - 1, &[1; 2]).unwrap_err();
        assert!(e.to_string().contains("beyond the virtual size"), "{e}");
        wr.finish().unwrap();
    }
}

#[test]
fn copy_between_formats_chain() {
    // qcow2 (qemu) → VHDX (ours) → streamOptimized (ours) → qcow2 (ours): still equal.
    let dir = tempfile::tempdir().unwrap();
    let size = 96 * MIB;
    let src = dir.path().join("src.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            src.to_str().unwrap(),
            &size.to_string(),
        ],
    );
    qemu_io_writes("qcow2", &src, &writes_for(size));
    let mut prev = src.clone();
    for (i, fmt) in [
        WriteFormat::VhdxDynamic,
        WriteFormat::VmdkStreamOptimized,
        WriteFormat::Qcow2,
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.path().join(format!("step{i}"));
        let mut r = open(&prev).unwrap();
        let mut wr = create(&out, fmt, r.virtual_size()).unwrap();
        copy_to(r.as_mut(), wr.as_mut()).unwrap();
        wr.finish().unwrap();
        prev = out;
    }
    let (code, text) = status(
        "qemu-img",
        &[
            "compare",
            "-f",
            "qcow2",
            src.to_str().unwrap(),
            "-F",
            "qcow2",
            prev.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{text}");
}
