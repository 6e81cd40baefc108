//! Readers checked against qemu-img/qemu-io: images made by qemu, patterns written by
//! qemu-io, our full read compared byte for byte with `qemu-img convert -O raw`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use lifeboat_disk::{Format, detect, open};

/// Writes that hit the first byte, odd offsets and lengths, cluster/grain/block edges
/// and the last bytes of a `size`-byte disk.
fn writes_for(size: u64) -> Vec<W> {
    vec![
        w(0, 4096, 0xaa),
        w(65536 - 512, 1024, 0xbb), // straddles a 64 KiB cluster/grain edge
        w(3 * MIB + 512, 7 * 512, 0xcc), // odd length inside a block
        w(2 * MIB - 512, 512 * 3, 0xdd), // straddles a 2 MiB VHD block edge
        w(size - 65536, 65536, 0xee), // the last cluster
        w(size - 512, 512, 0x5a),   // the last sector
    ]
}

struct Case<'a> {
    fmt: &'a str,
    opts: &'a [&'a str],
    size: u64,
    expect: Format,
}

fn check(case: Case<'_>, writes: &[W], untouched: &[(u64, u64)]) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let raw = dir.path().join("disk.raw");
    let mut args = vec!["create", "-q", "-f", case.fmt];
    for o in case.opts {
        args.extend(["-o", o]);
    }
    let size_s = case.size.to_string();
    args.extend([img.to_str().unwrap(), size_s.as_str()]);
    run("qemu-img", &args);
    qemu_io_writes(case.fmt, &img, writes);
    convert_and_check(case.fmt, &img, &raw, case.expect, writes, untouched);
}

fn convert_and_check(
    fmt: &str,
    img: &Path,
    raw: &Path,
    expect: Format,
    writes: &[W],
    untouched: &[(u64, u64)],
) {
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            fmt,
            "-O",
            "raw",
            img.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    assert_eq!(detect(img).unwrap(), expect);
    let mut r = open(img).unwrap();
    assert_eq!(r.format(), expect);
    let qemu_size = info(Some(fmt), img)["virtual-size"].as_u64().unwrap();
    assert_eq!(
        r.virtual_size(),
        qemu_size,
        "virtual size differs from qemu-img info"
    );
    assert_same_as_raw(r.as_mut(), raw);
    assert_allocation(r.as_mut(), writes, untouched);
}

#[test]
fn qcow2_v3() {
    let size = 64 * MIB + 3 * 512; // not a multiple of the cluster size
    check(
        Case {
            fmt: "qcow2",
            opts: &[],
            size,
            expect: Format::Qcow2 { version: 3 },
        },
        &writes_for(size),
        &[(8 * MIB, 40 * MIB)],
    );
}

#[test]
fn qcow2_v2_small_clusters() {
    let size = 32 * MIB;
    check(
        Case {
            fmt: "qcow2",
            opts: &["compat=0.10", "cluster_size=4096"],
            size,
            expect: Format::Qcow2 { version: 2 },
        },
        &writes_for(size),
        &[(8 * MIB, 16 * MIB)],
    );
}

#[test]
fn qcow2_beyond_4gib_sparse() {
    let size = 6 * GIB + 4 * MIB;
    let writes = [
        w(0, 512, 0x11),
        w(4 * GIB - 700, 1400, 0x22),
        w(5 * GIB + 12345, 100_000, 0x33),
        w(size - 4096, 4096, 0x44),
    ];
    check(
        Case {
            fmt: "qcow2",
            opts: &["cluster_size=2M"],
            size,
            expect: Format::Qcow2 { version: 3 },
        },
        &writes,
        &[
            (16 * MIB, 4 * GIB - 32 * MIB),
            (4 * GIB + 16 * MIB, GIB - 32 * MIB),
        ],
    );
}

#[test]
fn qcow2_zero_clusters_are_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("z.qcow2");
    let raw = dir.path().join("z.raw");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "16M"],
    );
    qemu_io_writes("qcow2", &img, &[w(0, 2 * MIB, 0x77)]);
    // Zero a range that was data: qemu marks those clusters with the zero flag.
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -z 0 1M", img.to_str().unwrap()],
    );
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            img.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    let mut r = open(&img).unwrap();
    assert_same_as_raw(r.as_mut(), &raw);
    let map = r.allocation().unwrap();
    assert!(covered(&map, MIB, MIB), "{map:?}");
    assert!(
        !covered(&map, 0, 4096),
        "zeroed cluster reported as data: {map:?}"
    );
}

#[test]
fn vhd_dynamic() {
    let size = 40 * MIB;
    let dir_size = {
        // qemu rounds a VHD to CHS geometry: take its real size for the writes.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("probe.vhd");
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "vpc",
                p.to_str().unwrap(),
                &size.to_string(),
            ],
        );
        info(Some("vpc"), &p)["virtual-size"].as_u64().unwrap()
    };
    check(
        Case {
            fmt: "vpc",
            opts: &[],
            size,
            expect: Format::VhdDynamic,
        },
        &writes_for(dir_size),
        &[(6 * MIB, 20 * MIB)],
    );
}

#[test]
fn vhd_fixed_azure_size() {
    let size = 48 * MIB;
    check(
        Case {
            fmt: "vpc",
            opts: &["subformat=fixed", "force_size=on"],
            size,
            expect: Format::VhdFixed,
        },
        &writes_for(size),
        &[(6 * MIB, 20 * MIB)],
    );
}

#[test]
fn vhdx_dynamic_beyond_4gib() {
    let size = 5 * GIB;
    let mut writes = writes_for(size);
    writes.push(w(4 * GIB + 333, 70_000, 0x66));
    check(
        Case {
            fmt: "vhdx",
            opts: &[],
            size,
            expect: Format::VhdxDynamic,
        },
        &writes,
        &[(64 * MIB, 4 * GIB - 128 * MIB)],
    );
}

#[test]
fn vhdx_fixed() {
    let size = 48 * MIB;
    check(
        Case {
            fmt: "vhdx",
            opts: &["subformat=fixed"],
            size,
            expect: Format::VhdxFixed,
        },
        &writes_for(size),
        &[(8 * MIB, 20 * MIB)],
    );
}

#[test]
fn vhdx_1mib_blocks_block_state_zero_off() {
    let size = 40 * MIB;
    check(
        Case {
            fmt: "vhdx",
            opts: &["block_size=1M", "log_size=1M", "block_state_zero=off"],
            size,
            expect: Format::VhdxDynamic,
        },
        &writes_for(size),
        &[(6 * MIB, 20 * MIB)],
    );
}

#[test]
fn vmdk_monolithic_sparse() {
    let size = 64 * MIB;
    check(
        Case {
            fmt: "vmdk",
            opts: &["subformat=monolithicSparse"],
            size,
            expect: Format::VmdkMonolithicSparse,
        },
        &writes_for(size),
        &[(8 * MIB, 40 * MIB)],
    );
}

#[test]
fn vmdk_monolithic_flat() {
    let size = 32 * MIB;
    check(
        Case {
            fmt: "vmdk",
            opts: &["subformat=monolithicFlat"],
            size,
            expect: Format::VmdkMonolithicFlat,
        },
        &writes_for(size),
        &[(8 * MIB, 16 * MIB)],
    );
}

#[test]
fn vmdk_two_gb_max_extent_sparse() {
    let size = 5 * GIB;
    let writes = [
        w(0, 4096, 0x12),
        w(2 * GIB - 1000, 2000, 0x34),
        w(4 * GIB + 77, 5000, 0x56),
        w(size - 512, 512, 0x78),
    ];
    check(
        Case {
            fmt: "vmdk",
            opts: &["subformat=twoGbMaxExtentSparse"],
            size,
            expect: Format::VmdkTwoGbMaxExtentSparse,
        },
        &writes,
        &[(16 * MIB, 2 * GIB - 32 * MIB)],
    );
}

#[test]
fn vmdk_two_gb_max_extent_flat() {
    let size = 2 * GIB + 64 * MIB;
    let writes = [
        w(0, 4096, 0x21),
        w(2 * GIB - 10, 20, 0x43),
        w(size - 512, 512, 0x65),
    ];
    check(
        Case {
            fmt: "vmdk",
            opts: &["subformat=twoGbMaxExtentFlat"],
            size,
            expect: Format::VmdkTwoGbMaxExtentFlat,
        },
        &writes,
        &[(16 * MIB, GIB)],
    );
}

#[test]
fn vmdk_stream_optimized() {
    // qemu's streamOptimized writer only takes whole grains: make the patterns in a raw
    // file and let qemu-img convert compress them.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let img = dir.path().join("disk.vmdk");
    let raw = dir.path().join("back.raw");
    let size = 64 * MIB;
    let writes = writes_for(size);
    make_raw(&src, size, &writes);
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            src.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    );
    convert_and_check(
        "vmdk",
        &img,
        &raw,
        Format::VmdkStreamOptimized,
        &writes,
        &[(8 * MIB, 40 * MIB)],
    );
}

#[test]
fn raw_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    let copy = dir.path().join("copy.raw");
    // qemu rounds raw sizes up to a sector (we report the exact file size), so keep
    // this one a sector multiple but not a cluster multiple.
    let size = 64 * MIB + 1536;
    let writes = [
        w(0, 4096, 0x1),
        w(10 * MIB + 3, 5000, 0x2),
        w(size - 1000, 1000, 0x3),
    ];
    make_raw(&img, size, &writes);
    convert_and_check(
        "raw",
        &img,
        &copy,
        Format::Raw,
        &writes,
        &[(11 * MIB, 40 * MIB)],
    );
}

/// A VHDX whose log must be replayed. qemu logs every BAT update and applies it at once;
/// `qemu-io abort` then leaves those entries in the log. We re-arm the log (its GUID back
/// in both headers) and wipe the BAT sector the log rewrites, so only a correct replay
/// finds the data. The oracle replays a copy with `qemu-img check -r all`.
#[test]
fn vhdx_log_replay() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dirty.vhdx");
    let copy = dir.path().join("replayed.vhdx");
    let raw = dir.path().join("replayed.raw");
    let size = 64 * MIB;
    let writes = [w(0, MIB, 0xaa), w(40 * MIB + 3, 100_000, 0xbb)];
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vhdx",
            img.to_str().unwrap(),
            &size.to_string(),
        ],
    );
    let mut args = vec!["-f".to_string(), "vhdx".into()];
    for x in &writes {
        args.extend([
            "-c".into(),
            format!("write -P {:#x} {} {}", x.pat, x.off, x.len),
        ]);
    }
    args.extend(["-c".into(), "abort".into(), img.to_str().unwrap().into()]);
    let _ = std::process::Command::new("qemu-io")
        .args(&args)
        .output()
        .unwrap(); // aborts by design

    let mut bytes = std::fs::read(&img).unwrap();
    let h = 64 * 1024;
    let log_off = u64::from_le_bytes(bytes[h + 72..h + 80].try_into().unwrap()) as usize;
    // qemu gives each log write a fresh log GUID: re-arm the newest entry's.
    let newest = (0..256)
        .map(|s| log_off + s * 4096)
        .filter(|&o| &bytes[o..o + 4] == b"loge")
        .max_by_key(|&o| u64::from_le_bytes(bytes[o + 16..o + 24].try_into().unwrap()))
        .expect("qemu left no log entry");
    let guid: [u8; 16] = bytes[newest + 32..newest + 48].try_into().unwrap();
    for off in [64 * 1024usize, 128 * 1024] {
        let hdr = &mut bytes[off..off + 4096];
        hdr[48..64].copy_from_slice(&guid);
        hdr[4..8].fill(0);
        let c = crc32c(hdr);
        hdr[4..8].copy_from_slice(&c.to_le_bytes());
    }
    // Find the BAT in the region table and wipe its first sector.
    let rt = 192 * 1024;
    let count = u32::from_le_bytes(bytes[rt + 8..rt + 12].try_into().unwrap()) as usize;
    let bat_guid = [
        0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a,
        0x08,
    ];
    let bat = (0..count)
        .map(|i| rt + 16 + i * 32)
        .find(|&e| bytes[e..e + 16] == bat_guid)
        .map(|e| u64::from_le_bytes(bytes[e + 16..e + 24].try_into().unwrap()) as usize)
        .unwrap();
    bytes[bat..bat + 4096].fill(0);
    std::fs::write(&img, &bytes).unwrap();
    std::fs::write(&copy, &bytes).unwrap();

    // qemu refuses to read it without replay; `check -r all` replays the copy.
    let (code, _) = status(
        "qemu-img",
        &[
            "convert",
            "-f",
            "vhdx",
            "-O",
            "raw",
            img.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    assert_ne!(
        code, 0,
        "qemu read a VHDX with an active log without replaying it"
    );
    run(
        "qemu-img",
        &[
            "check",
            "-q",
            "-r",
            "all",
            "-f",
            "vhdx",
            copy.to_str().unwrap(),
        ],
    );
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "vhdx",
            "-O",
            "raw",
            copy.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );

    let mut r = open(&img).unwrap();
    assert_eq!(r.format(), Format::VhdxDynamic);
    assert_same_as_raw(r.as_mut(), &raw);
    assert_allocation(r.as_mut(), &writes, &[(16 * MIB, 16 * MIB)]);
    // The source file is left as it was.
    assert_eq!(std::fs::read(&img).unwrap(), bytes);
}
