//! Corrupt, truncated, unsupported and hostile inputs give clear errors, never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use lifeboat_disk::{DiskError, WriteFormat, create, detect, open};

fn make(dir: &Path, name: &str, fmt: &str, opts: &[&str], size: &str, writes: &[W]) -> PathBuf {
    let p = dir.join(name);
    let mut args = vec!["create", "-q", "-f", fmt];
    for o in opts {
        args.extend(["-o", o]);
    }
    args.extend([p.to_str().unwrap(), size]);
    run("qemu-img", &args);
    if !writes.is_empty() {
        qemu_io_writes(fmt, &p, writes);
    }
    p
}

/// Opens and reads the whole (small) image; returns the first error.
fn open_and_read(p: &Path) -> Result<(), DiskError> {
    let mut r = open(p)?;
    r.allocation()?;
    let mut buf = vec![0u8; 256 * 1024];
    let size = r.virtual_size().min(8 * MIB);
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(buf.len() as u64) as usize;
        r.read_at(pos, &mut buf[..n])?;
        pos += n as u64;
    }
    Ok(())
}

fn expect_err(p: &Path, needles: &[&str]) -> DiskError {
    let e = open_and_read(p).expect_err("corrupt image was accepted");
    let msg = e.to_string();
    let name = p.file_name().unwrap().to_str().unwrap();
    assert!(msg.contains(name), "error does not name the file: {msg}");
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} lacks {n:?}");
    }
    e
}

fn patch(p: &Path, off: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

fn truncate(p: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn qcow2_backing_file_is_named() {
    let d = tempfile::tempdir().unwrap();
    let base = make(d.path(), "base.qcow2", "qcow2", &[], "8M", &[]);
    let over = d.path().join("over.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            "-F",
            "qcow2",
            over.to_str().unwrap(),
        ],
    );
    let e = detect(&over).unwrap_err();
    assert!(
        matches!(&e, DiskError::BackingFile { backing, .. } if backing.ends_with("base.qcow2")),
        "{e}"
    );
    assert!(e.to_string().contains("base.qcow2"));
}

#[test]
fn vmdk_backing_file_is_named() {
    let d = tempfile::tempdir().unwrap();
    let base = make(d.path(), "base.vmdk", "vmdk", &[], "8M", &[]);
    let over = d.path().join("child.vmdk");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-b",
            base.to_str().unwrap(),
            "-F",
            "vmdk",
            over.to_str().unwrap(),
        ],
    );
    let e = detect(&over).unwrap_err();
    assert!(e.to_string().contains("base.vmdk"), "{e}");
}

#[test]
fn qcow2_compressed_clusters_are_refused_clearly() {
    let d = tempfile::tempdir().unwrap();
    let src = make(
        d.path(),
        "plain.qcow2",
        "qcow2",
        &[],
        "4M",
        &[w(0, MIB, 0x61)],
    );
    let comp = d.path().join("comp.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            src.to_str().unwrap(),
            comp.to_str().unwrap(),
        ],
    );
    let e = expect_err(&comp, &["qcow2", "compressed"]);
    assert!(matches!(e, DiskError::Unsupported { .. }), "{e}");
}

#[test]
fn qcow2_truncated_and_pointing_beyond_the_file() {
    let d = tempfile::tempdir().unwrap();
    let p = make(
        d.path(),
        "t.qcow2",
        "qcow2",
        &[],
        "16M",
        &[w(8 * MIB, MIB, 0x61)],
    );
    let len = std::fs::metadata(&p).unwrap().len();
    truncate(&p, len - 600 * 1024);
    expect_err(&p, &["corrupt qcow2", "beyond the end of the file"]);
    truncate(&p, 50);
    expect_err(&p, &["truncated"]);

    let p = make(d.path(), "l1.qcow2", "qcow2", &[], "16M", &[w(0, 4096, 1)]);
    let bytes = std::fs::read(&p).unwrap();
    let l1 = u64::from_be_bytes(bytes[40..48].try_into().unwrap());
    patch(&p, l1, &(0x8000_0000_7000_0000u64).to_be_bytes());
    expect_err(&p, &["L1 entry 0", "beyond the end of the file"]);
}

#[test]
fn qcow2_unknown_version_and_features() {
    let d = tempfile::tempdir().unwrap();
    let p = make(d.path(), "v.qcow2", "qcow2", &[], "4M", &[]);
    patch(&p, 4, &9u32.to_be_bytes());
    let e = expect_err(&p, &["unsupported qcow2", "version 9"]);
    assert!(matches!(e, DiskError::Unsupported { .. }));
    let p = make(d.path(), "f.qcow2", "qcow2", &[], "4M", &[]);
    patch(&p, 72, &(1u64 << 40).to_be_bytes());
    expect_err(&p, &["unknown incompatible features"]);
}

#[test]
fn vhd_bad_checksums_and_truncation() {
    let d = tempfile::tempdir().unwrap();
    let p = make(
        d.path(),
        "f.vhd",
        "vpc",
        &["subformat=fixed", "force_size=on"],
        "4M",
        &[w(0, 512, 1)],
    );
    let len = std::fs::metadata(&p).unwrap().len();
    patch(&p, len - 512 + 48, &[0x12]); // current size changed: checksum no longer matches
    expect_err(&p, &["corrupt VHD", "footer checksum mismatch"]);

    let p = make(d.path(), "d.vhd", "vpc", &[], "8M", &[w(0, 512, 1)]);
    patch(&p, 512 + 16, &[0xee]); // BAT offset in the dynamic header
    expect_err(&p, &["dynamic header checksum mismatch"]);

    let p = make(
        d.path(),
        "t.vhd",
        "vpc",
        &[],
        "8M",
        &[w(0, 512, 1), w(6 * MIB, 512, 2)],
    );
    let len = std::fs::metadata(&p).unwrap().len();
    truncate(&p, len - 1024);
    // The footer at the end is gone; the copy at offset 0 is found but the end is not.
    expect_err(&p, &["corrupt VHD"]);
}

#[test]
fn vhdx_bad_crc_and_active_log() {
    let d = tempfile::tempdir().unwrap();
    let p = make(d.path(), "h.vhdx", "vhdx", &[], "8M", &[w(0, 512, 1)]);
    patch(&p, 64 * 1024 + 8, &[0xff; 8]);
    patch(&p, 128 * 1024 + 8, &[0xff; 8]);
    expect_err(&p, &["corrupt VHDX", "CRC-32C"]);

    // An active log whose log holds nothing: set the log GUID in our own writer's
    // headers and re-seal them with a correct CRC-32C.
    let p = d.path().join("log.vhdx");
    let wr = create(&p, WriteFormat::VhdxDynamic, 8 * MIB).unwrap();
    wr.finish().unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    for off in [64 * 1024usize, 128 * 1024] {
        let h = &mut bytes[off..off + 4096];
        h[48..64].copy_from_slice(&[0x42; 16]);
        h[4..8].fill(0);
        let c = crc32c(h);
        h[4..8].copy_from_slice(&c.to_le_bytes());
    }
    std::fs::write(&p, &bytes).unwrap();
    // The log region is empty: there is nothing valid to replay.
    let e = expect_err(
        &p,
        &[
            "corrupt VHDX",
            "log must be replayed",
            "no valid entry sequence",
        ],
    );
    assert!(matches!(e, DiskError::Corrupt { .. }));
}

#[test]
fn vmdk_truncated_stream_and_bad_grain_table() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("s.raw");
    make_raw(&src, 8 * MIB, &[w(0, MIB, 0x11)]);
    let mut r = open(&src).unwrap();
    let p = d.path().join("s.vmdk");
    let mut wr = create(&p, WriteFormat::VmdkStreamOptimized, 8 * MIB).unwrap();
    lifeboat_disk::copy_to(r.as_mut(), wr.as_mut()).unwrap();
    wr.finish().unwrap();
    let len = std::fs::metadata(&p).unwrap().len();
    truncate(&p, len - 1536);
    expect_err(&p, &["corrupt VMDK", "footer"]);

    let p = make(d.path(), "g.vmdk", "vmdk", &[], "8M", &[w(0, 512, 1)]);
    let bytes = std::fs::read(&p).unwrap();
    let gd = u64::from_le_bytes(bytes[56..64].try_into().unwrap()) * 512;
    patch(&p, gd, &0x00ff_ffffu32.to_le_bytes());
    expect_err(
        &p,
        &["grain directory entry 0", "beyond the end of the file"],
    );
}

#[test]
fn unsupported_vmdk_create_type() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("v.vmdk");
    std::fs::write(
        &p,
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"vmfsSparse\"\nRW 100 VMFSSPARSE \"x.vmdk\"\n",
    )
    .unwrap();
    expect_err(&p, &["unsupported VMDK", "vmfsSparse"]);
}

#[test]
fn reads_beyond_the_end_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = make(d.path(), "e.qcow2", "qcow2", &[], "1M", &[]);
    let mut r = open(&p).unwrap();
    let mut buf = [0u8; 2];
    let e = r.read_at(MIB - 1, &mut buf).unwrap_err();
    assert!(matches!(e, DiskError::InvalidRequest { .. }), "{e}");
    assert!(r.read_at(u64::MAX, &mut buf).is_err());
}

// ---- fuzz-ish: truncations, bit flips and byte smashes over every format's metadata

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Opens and reads a mutant within bounds; errors are fine, panics are not.
fn poke(p: &Path) -> bool {
    let Ok(mut r) = open(p) else { return false };
    let size = r.virtual_size();
    let mut buf = vec![0u8; 64 * 1024];
    if let Ok(map) = r.allocation() {
        let mut budget = 4 * MIB;
        for e in map.iter().take(64) {
            let n = e.length.min(buf.len() as u64).min(budget);
            budget -= n;
            let _ = r.read_at(e.offset, &mut buf[..n as usize]);
        }
    }
    let mut pos = 0;
    while pos < size.min(4 * MIB) {
        let n = (size - pos).min(buf.len() as u64) as usize;
        if r.read_at(pos, &mut buf[..n]).is_err() {
            break;
        }
        pos += n as u64;
    }
    let _ = r.read_at(size.saturating_sub(1), &mut buf[..1]);
    true
}

#[test]
fn fuzz_truncated_and_bit_flipped_headers() {
    let d = tempfile::tempdir().unwrap();
    let ws = [
        w(0, 4096, 0x11),
        w(MIB + 100, 70_000, 0x22),
        w(3 * MIB, 4096, 0x33),
    ];
    let mut seeds: Vec<PathBuf> = vec![
        make(d.path(), "a.qcow2", "qcow2", &[], "4M", &ws),
        make(
            d.path(),
            "b.qcow2",
            "qcow2",
            &["compat=0.10", "cluster_size=4096"],
            "4M",
            &ws,
        ),
        make(d.path(), "c.vhd", "vpc", &[], "4M", &ws),
        make(
            d.path(),
            "d.vhd",
            "vpc",
            &["subformat=fixed", "force_size=on"],
            "4M",
            &ws,
        ),
        make(d.path(), "e.vhdx", "vhdx", &["block_size=1M"], "4M", &ws),
        make(d.path(), "f.vmdk", "vmdk", &[], "4M", &ws),
    ];
    let src = d.path().join("src.raw");
    make_raw(&src, 4 * MIB, &ws);
    for (name, fmt) in [
        ("g.vmdk", WriteFormat::VmdkStreamOptimized),
        ("h.vhdx", WriteFormat::VhdxDynamic),
        ("i.qcow2", WriteFormat::Qcow2),
    ] {
        let p = d.path().join(name);
        let mut r = open(&src).unwrap();
        let mut wr = create(&p, fmt, 4 * MIB).unwrap();
        lifeboat_disk::copy_to(r.as_mut(), wr.as_mut()).unwrap();
        wr.finish().unwrap();
        seeds.push(p);
    }
    // Differencing children of e.vhdx (fully and partially present blocks, a sector
    // bitmap block, a parent locator) and of c.vhd; their mutants sit beside the
    // parents too.
    let child = d.path().join("j.avhdx");
    lifeboat_disk::create_vhdx_differencing(
        &child,
        d.path().join("e.vhdx"),
        "e.vhdx",
        &[
            (0, vec![0x44; 2 * MIB as usize]),
            (2 * MIB + 4096, vec![0x55; 8192]),
            (3 * MIB + 100, vec![0x66; 1000]),
        ],
    )
    .unwrap();
    seeds.push(child);
    let child = d.path().join("k.avhd");
    lifeboat_disk::create_vhd_differencing(
        &child,
        d.path().join("c.vhd"),
        "c.vhd",
        &[
            (512, vec![0x77; 3000]),
            (2 * MIB, vec![0x88; 2 * MIB as usize]),
        ],
    )
    .unwrap();
    seeds.push(child);
    let mutant = d.path().join("mutant");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut opened = 0;
    let mut total = 0;
    for seed in &seeds {
        let orig = std::fs::read(seed).unwrap();
        let len = orig.len() as u64;
        assert!(poke(seed), "seed {} does not open", seed.display());
        // Truncations.
        for cut in [
            0,
            1,
            7,
            511,
            512,
            513,
            4096,
            65536,
            200_000,
            len / 2,
            len - 1536,
            len - 513,
            len - 512,
            len - 1,
        ] {
            let cut = cut.min(len) as usize;
            std::fs::write(&mutant, &orig[..cut]).unwrap();
            opened += usize::from(poke(&mutant));
            total += 1;
        }
        // Bit flips and byte smashes, mostly where metadata lives: the first 8 KiB,
        // the VHDX header area / metadata / BAT, the last 2 KiB, or anywhere. Each is
        // patched into a copy of the seed and undone afterwards.
        std::fs::write(&mutant, &orig).unwrap();
        for i in 0..150 {
            let pos = match rng.below(4) {
                0 => rng.below(8192.min(len)),
                1 => rng.below((4 * MIB).min(len)),
                2 => len - 1 - rng.below(2048.min(len)),
                _ => rng.below(len),
            } as usize;
            let end = (pos + 8).min(orig.len());
            let mut m = orig[pos..end].to_vec();
            if i % 3 == 0 {
                for b in m.iter_mut() {
                    *b = if rng.below(2) == 0 {
                        0xff
                    } else {
                        rng.next() as u8
                    };
                }
            } else {
                m[0] ^= 1 << rng.below(8);
            }
            patch(&mutant, pos as u64, &m);
            opened += usize::from(poke(&mutant));
            total += 1;
            patch(&mutant, pos as u64, &orig[pos..end]);
        }
    }
    // Mutations must be noticed often, and some (data bytes) are harmless.
    assert!(opened < total, "{opened} of {total} mutants opened");
    assert!(opened > 0, "no mutant opened at all");
}

#[test]
fn vmdk_extent_outside_the_descriptor_directory_is_refused() {
    let d = tempfile::tempdir().unwrap();
    for name in ["../secret", "/etc/passwd"] {
        let p = d.path().join("v.vmdk");
        std::fs::write(
            &p,
            format!("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"{name}\" 0\n"),
        )
        .unwrap();
        let e = expect_err(
            &p,
            &["unsupported VMDK", "not in the descriptor's directory"],
        );
        assert!(matches!(e, DiskError::Unsupported { .. }));
    }
}

#[test]
fn copy_into_a_smaller_target_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let src = make(d.path(), "big.qcow2", "qcow2", &[], "8M", &[w(0, 512, 1)]);
    let mut r = open(&src).unwrap();
    let mut wr = create(d.path().join("small.raw"), WriteFormat::Raw, 4 * MIB).unwrap();
    let e = lifeboat_disk::copy_to(r.as_mut(), wr.as_mut()).unwrap_err();
    assert!(
        matches!(e, DiskError::TargetTooSmall { source_size, .. } if source_size == 8 * MIB),
        "{e}"
    );
}

/// The VHD specification says a dynamic disk's sectors whose bitmap bit is clear hold
/// no data; qemu ignores the bitmap (it sets every bit when it allocates a block), so
/// this one is checked against the specification, not qemu.
#[test]
fn vhd_sector_bitmap_is_honoured() {
    let d = tempfile::tempdir().unwrap();
    let p = make(d.path(), "b.vhd", "vpc", &[], "8M", &[w(0, 4096, 0x77)]);
    let mut r = open(&p).unwrap();
    let mut buf = [0u8; 1024];
    r.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0x77));
    drop(r);
    // Find block 0 through the BAT and clear the bit of its second sector.
    let bytes = std::fs::read(&p).unwrap();
    let hdr = u64::from_be_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let bat = u64::from_be_bytes(bytes[hdr + 16..hdr + 24].try_into().unwrap()) as usize;
    let blk = u32::from_be_bytes(bytes[bat..bat + 4].try_into().unwrap()) as u64 * 512;
    assert_eq!(bytes[blk as usize], 0xff, "qemu sets every bitmap bit");
    patch(&p, blk, &[0b1011_1111]);
    let mut r = open(&p).unwrap();
    r.read_at(0, &mut buf).unwrap();
    assert!(buf[..512].iter().all(|&b| b == 0x77));
    assert!(
        buf[512..].iter().all(|&b| b == 0),
        "absent sector must read as zeros"
    );
}
