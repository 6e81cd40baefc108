//! VHDX differencing chains. qemu can neither make nor read differencing VHDX, so the
//! children are made by our own writer (`create_vhdx_differencing*`); qemu makes and
//! checks the bases, and the oracle is a raw copy of the base with the children's writes
//! applied by plain file writes, compared with `qemu-img compare` against the chain as
//! our reader flattens it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;
use lifeboat_disk::{
    DiskError, ExtentKind, Format, VhdxChildOptions, chain, create_vhdx_differencing,
    create_vhdx_differencing_with, detect, open, open_confined,
};

/// qemu makes a raw image with the pattern writes and converts it to VHDX; qemu-img
/// check and info accept the VHDX. Returns (vhdx, raw).
fn base(dir: &Path, name: &str, size: u64, opts: &[&str], writes: &[W]) -> (PathBuf, PathBuf) {
    let raw = dir.join(format!("{name}.raw"));
    let vhdx = dir.join(format!("{name}.vhdx"));
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "raw",
            raw.to_str().unwrap(),
            &size.to_string(),
        ],
    );
    qemu_io_writes("raw", &raw, writes);
    let mut args = vec!["convert", "-f", "raw", "-O", "vhdx"];
    for o in opts {
        args.extend(["-o", o]);
    }
    args.extend([raw.to_str().unwrap(), vhdx.to_str().unwrap()]);
    run("qemu-img", &args);
    run(
        "qemu-img",
        &["check", "-q", "-f", "vhdx", vhdx.to_str().unwrap()],
    );
    let i = info(Some("vhdx"), &vhdx);
    assert_eq!(i["format"], "vhdx");
    assert_eq!(i["virtual-size"].as_u64().unwrap(), size);
    (vhdx, raw)
}

const BLOCK: u64 = 2 * MIB; // the children's default block size

fn base_writes() -> Vec<W> {
    vec![
        w(0, 4 * MIB, 0x11),
        w(9 * MIB, 3 * MIB, 0x22),
        w(20 * MIB + 512, 4096, 0x33),
        w(63 * MIB, MIB, 0x44),
    ]
}

/// Child writes: a whole block, sub-block 4 KiB- and 512 B-granular writes, writes not
/// aligned to sectors (completed from the parent), one straddling a block edge, one
/// over the base's data, one overlapping an earlier child write, the last sector.
fn child_writes() -> Writes {
    vec![
        wr(BLOCK, BLOCK),                    // block 1, fully present, over base data
        wr(9 * MIB + 4096, 8192),            // partial over base data, 4 KiB granular
        wr(10 * MIB + 100, 300),             // inside one sector, parent completes it
        wr(14 * MIB - 1000, 3000),           // straddles blocks 6 and 7, over zeros
        wr(20 * MIB, 1024),                  // half over the base's write at +512
        wr(30 * MIB, BLOCK + 512),           // block 15 full, block 16 one sector
        wr(9 * MIB + 6000, 100),             // overlaps the second write: later wins
        wr(64 * MIB - 512, 512),             // the last sector
        wr(40 * MIB + 7 * 512, 5 * 512 + 1), // odd sector run, ragged end
    ]
}

#[test]
fn two_level_chain_matches_the_oracle() {
    let d = tempfile::tempdir().unwrap();
    let size = 64 * MIB;
    let bw = base_writes();
    let (b, braw) = base(d.path(), "base", size, &["block_size=1M"], &bw);
    let child = d.path().join("child.avhdx");
    let cw = child_writes();
    create_vhdx_differencing(&child, &b, "base.vhdx", &cw).unwrap();
    let exp = d.path().join("expected.raw");
    expected(&braw, &exp, &[&cw]);
    check_chain(Format::VhdxDifferencing, &child, &exp, &[&cw], &bw);
    assert_eq!(Format::VhdxDifferencing.qemu_name(), "vhdx");
    assert_eq!(Format::VhdxDifferencing.to_string(), "VHDX (differencing)");

    // The chain's files, canonical, child first.
    let files = chain(&child).unwrap();
    assert_eq!(
        files,
        vec![child.canonicalize().unwrap(), b.canonicalize().unwrap()]
    );
    assert_eq!(
        open(&child).unwrap().files(),
        vec![child.clone(), b.clone()]
    );
    assert_eq!(chain(&b).unwrap(), vec![b.canonicalize().unwrap()]);

    // The map is exact to the sector where the parent holds nothing: the straddling
    // write covers sectors [14 MiB - 1024, 14 MiB + 2048) and nothing else nearby.
    let map = open(&child).unwrap().allocation().unwrap();
    assert!(
        map.iter()
            .any(|e| e.offset == 14 * MIB - 1024 && e.length == 3072 && e.kind == ExtentKind::Data),
        "{map:?}"
    );
    assert!(!overlaps(&map, 44 * MIB, 16 * MIB), "{map:?}");
    // The base is untouched by all this, and qemu still likes it.
    run(
        "qemu-img",
        &["check", "-q", "-f", "vhdx", b.to_str().unwrap()],
    );
}

#[test]
fn three_level_chain_across_folders_and_block_sizes() {
    let d = tempfile::tempdir().unwrap();
    let size = 48 * MIB;
    std::fs::create_dir_all(d.path().join("disks")).unwrap();
    std::fs::create_dir_all(d.path().join("vm")).unwrap();
    let bw = vec![
        w(0, MIB, 0x51),
        w(5 * MIB + 512, 70_000, 0x52),
        w(47 * MIB, MIB, 0x53),
    ];
    let (b, braw) = base(&d.path().join("disks"), "base", size, &[], &bw);
    // mid: 1 MiB blocks, parent one folder over, Windows-style relative path.
    let mid = d.path().join("vm").join("mid.avhdx");
    let mw: Writes = vec![
        wr(0, 4096),
        wr(3 * MIB, 3 * MIB),
        wr(5 * MIB + 1000, 10_000),
        wr(20 * MIB + 512, 512),
        wr(33 * MIB - 10, 20),
    ];
    let mut o = VhdxChildOptions::new(r"..\disks\base.vhdx");
    o.block_size = 1 << 20;
    create_vhdx_differencing_with(&mid, &b, &o, &mw).unwrap();
    // top: 2 MiB blocks, over mid's partial blocks and the base's data.
    let top = d.path().join("vm").join("top.avhdx");
    let tw: Writes = vec![
        wr(2048, 4096),
        wr(4 * MIB + 4096, MIB),
        wr(5 * MIB + 5000, 512),
        wr(20 * MIB, 2048),
        wr(33 * MIB, 4),
        wr(46 * MIB, 2 * MIB),
    ];
    create_vhdx_differencing(&top, &mid, r".\mid.avhdx", &tw).unwrap();
    let exp = d.path().join("expected.raw");
    expected(&braw, &exp, &[&mw, &tw]);
    check_chain(Format::VhdxDifferencing, &top, &exp, &[&mw, &tw], &bw);
    // The middle level alone is a chain of two.
    let exp_mid = d.path().join("expected-mid.raw");
    expected(&braw, &exp_mid, &[&mw]);
    check_chain(Format::VhdxDifferencing, &mid, &exp_mid, &[&mw], &bw);
    let canon = |p: &Path| p.canonicalize().unwrap();
    assert_eq!(
        chain(&top).unwrap(),
        vec![canon(&top), canon(&mid), canon(&b)]
    );
}

#[test]
fn parent_found_by_file_name_when_the_recorded_paths_do_not_exist() {
    let d = tempfile::tempdir().unwrap();
    let bw = vec![w(0, MIB, 0x61)];
    let (b, braw) = base(d.path(), "base", 8 * MIB, &[], &bw);
    let child = d.path().join("child.avhdx");
    let cw: Writes = vec![wr(4096, 4096)];
    let mut o = VhdxChildOptions::new(r"..\Hyper-V\Virtual Hard Disks\base.vhdx");
    o.absolute_win32_path = Some(r"\\?\D:\Hyper-V\Virtual Hard Disks\base.vhdx".into());
    create_vhdx_differencing_with(&child, &b, &o, &cw).unwrap();
    let exp = d.path().join("expected.raw");
    expected(&braw, &exp, &[&cw]);
    check_chain(Format::VhdxDifferencing, &child, &exp, &[&cw], &bw);
}

#[test]
fn missing_parent_names_the_child_and_the_paths_tried() {
    let d = tempfile::tempdir().unwrap();
    let (b, _) = base(d.path(), "base", 8 * MIB, &[], &[w(0, 4096, 1)]);
    let child = d.path().join("child.avhdx");
    let mut o = VhdxChildOptions::new("base.vhdx");
    o.absolute_win32_path = Some(r"\\?\C:\VMs\disk0.vhdx".into());
    create_vhdx_differencing_with(&child, &b, &o, &[wr(0, 512)]).unwrap();
    std::fs::rename(&b, d.path().join("moved.vhdx")).unwrap();
    let e = open(&child).err().expect("opened without its parent");
    let msg = e.to_string();
    match &e {
        DiskError::MissingParent {
            path,
            parent,
            tried,
            ..
        } => {
            assert_eq!(path, &child);
            assert_eq!(parent, "base.vhdx");
            assert_eq!(
                tried,
                &vec![d.path().join("base.vhdx"), d.path().join("disk0.vhdx")]
            );
        }
        other => panic!("wrong error {other:?}"),
    }
    for needle in [
        "child.avhdx",
        "not found",
        "base.vhdx",
        "disk0.vhdx",
        "merge",
    ] {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    assert!(matches!(
        detect(&child),
        Err(DiskError::MissingParent { .. })
    ));
    assert!(matches!(
        chain(&child),
        Err(DiskError::MissingParent { .. })
    ));
}

#[test]
fn parent_written_after_the_child_was_made_is_a_linkage_mismatch() {
    let d = tempfile::tempdir().unwrap();
    let (b, _) = base(d.path(), "base", 8 * MIB, &[], &[w(0, 4096, 1)]);
    let child = d.path().join("child.avhdx");
    create_vhdx_differencing(&child, &b, "base.vhdx", &[wr(MIB, 4096)]).unwrap();
    assert!(open(&child).is_ok());
    // qemu gives the parent a new DataWriteGuid on its first write, as Hyper-V does.
    qemu_io_writes("vhdx", &b, &[w(2 * MIB, 4096, 0x77)]);
    let e = open(&child).err().expect("stale parent accepted");
    assert!(
        matches!(&e, DiskError::ParentMismatch { path, parent, .. } if path == &child && parent == &b),
        "{e:?}"
    );
    let msg = e.to_string();
    for needle in [
        "child.avhdx",
        "parent_linkage",
        "DataWriteGuid",
        "base.vhdx",
    ] {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    // Another disk under the parent's name is refused too: by its DataWriteGuid, and
    // by its size even when it carries the right DataWriteGuid.
    let (other, _) = base(d.path(), "other", 16 * MIB, &[], &[]);
    let c2 = d.path().join("c2.avhdx");
    create_vhdx_differencing(&c2, &b, "other.vhdx", &[]).unwrap();
    let e = open(&c2).err().expect("wrong parent accepted");
    assert!(
        matches!(&e, DiskError::ParentMismatch { parent, what, .. } if parent == &other && what.contains("DataWriteGuid")),
        "{e:?}"
    );
    set_data_write_guid(&other, &data_write_guid(&b));
    let e = open(&c2).err().expect("wrong parent accepted");
    assert!(
        matches!(&e, DiskError::ParentMismatch { what, .. } if what.contains("virtual size")),
        "{e:?}"
    );
    // A raw file in the parent's place is not a VHDX.
    std::fs::write(d.path().join("other.vhdx"), vec![0u8; 4096]).unwrap();
    let e = open(&c2).err().unwrap();
    assert!(e.to_string().contains("not a VHDX"), "{e}");
}

#[test]
fn confinement_refuses_parents_outside_the_root() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("site");
    let outside = d.path().join("outside");
    for p in [
        root.join("vm"),
        root.join("vm2"),
        root.join("disks"),
        outside.clone(),
    ] {
        std::fs::create_dir_all(p).unwrap();
    }
    let (ob, _) = base(&outside, "base", 8 * MIB, &[], &[w(0, 4096, 1)]);
    let (ib, _) = base(&root.join("disks"), "base", 8 * MIB, &[], &[w(0, 4096, 2)]);
    // A relative path leading out of the site.
    let c1 = root.join("vm").join("c1.avhdx");
    create_vhdx_differencing(&c1, &ob, r"..\..\outside\base.vhdx", &[wr(0, 512)]).unwrap();
    assert!(open(&c1).is_ok());
    let e = open_confined(&c1, &root).err().expect("escaped the root");
    match &e {
        DiskError::OutsideRoot {
            path,
            file,
            root: r,
        } => {
            assert_eq!(path, &c1);
            assert_eq!(file, &ob.canonicalize().unwrap());
            assert_eq!(r, &root.canonicalize().unwrap());
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(e.to_string().contains("outside"), "{e}");
    // A symlink in the site pointing out of it.
    std::os::unix::fs::symlink(&ob, root.join("vm2").join("base.vhdx")).unwrap();
    let c2 = root.join("vm2").join("c2.avhdx");
    create_vhdx_differencing(&c2, root.join("vm2").join("base.vhdx"), "base.vhdx", &[]).unwrap();
    assert!(matches!(
        open_confined(&c2, &root),
        Err(DiskError::OutsideRoot { file, .. }) if file == ob.canonicalize().unwrap()
    ));
    // A chain wholly inside the site opens; the top image itself must be inside too.
    let c3 = root.join("vm").join("c3.avhdx");
    create_vhdx_differencing(&c3, &ib, r"..\disks\base.vhdx", &[wr(0, 512)]).unwrap();
    let r = open_confined(&c3, &root).unwrap();
    assert_eq!(r.format(), Format::VhdxDifferencing);
    assert!(matches!(
        open_confined(&ob, &root),
        Err(DiskError::OutsideRoot { .. })
    ));
    // Other formats still open confined.
    assert!(open_confined(&ib, &root).is_ok());
}

#[test]
fn vmdk_extent_symlinked_outside_the_root_is_refused_when_confined() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("site");
    std::fs::create_dir_all(&root).unwrap();
    let desc = root.join("flat.vmdk");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=monolithicFlat",
            desc.to_str().unwrap(),
            "4M",
        ],
    );
    let extent = root.join("flat-flat.vmdk");
    let moved = d.path().join("secret-flat.vmdk");
    std::fs::rename(&extent, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &extent).unwrap();
    assert!(open(&desc).is_ok());
    assert_eq!(
        chain(&desc).unwrap(),
        vec![desc.canonicalize().unwrap(), moved.canonicalize().unwrap()]
    );
    assert!(matches!(
        open_confined(&desc, &root),
        Err(DiskError::OutsideRoot { file, .. }) if file == moved.canonicalize().unwrap()
    ));
}

/// Rewrites both headers' DataWriteGuid (and CRC-32C) of a VHDX.
fn set_data_write_guid(p: &Path, guid: &[u8]) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    for off in [64 * 1024u64, 128 * 1024] {
        let mut h = vec![0u8; 4096];
        f.read_exact_at(&mut h, off).unwrap();
        h[32..48].copy_from_slice(guid);
        h[4..8].fill(0);
        let c = crc32c(&h);
        h[4..8].copy_from_slice(&c.to_le_bytes());
        f.write_all_at(&h, off).unwrap();
    }
}

/// The DataWriteGuid of a VHDX's current header.
fn data_write_guid(p: &Path) -> Vec<u8> {
    let f = File::open(p).unwrap();
    let mut best = (0u64, vec![]);
    for off in [64 * 1024u64, 128 * 1024] {
        let mut h = vec![0u8; 4096];
        f.read_exact_at(&mut h, off).unwrap();
        let seq = u64::from_le_bytes(h[8..16].try_into().unwrap());
        if &h[..4] == b"head" && seq >= best.0 {
            best = (seq, h[32..48].to_vec());
        }
    }
    best.1
}

#[test]
fn parent_chain_loops_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let (b, _) = base(d.path(), "base", 8 * MIB, &[], &[w(0, 4096, 1)]);
    // c1 → base; c2 → c1. Then c2, given base's identity, replaces base: c1 → c2 → c1.
    let c1 = d.path().join("c1.vhdx");
    let c2 = d.path().join("c2.vhdx");
    create_vhdx_differencing(&c1, &b, "base.vhdx", &[wr(0, 512)]).unwrap();
    create_vhdx_differencing(&c2, &c1, "c1.vhdx", &[wr(512, 512)]).unwrap();
    set_data_write_guid(&c2, &data_write_guid(&b));
    std::fs::rename(&c2, &b).unwrap();
    let e = open(&c1).err().expect("loop accepted");
    assert!(
        matches!(&e, DiskError::Corrupt { what, .. } if what.contains("loops")),
        "{e:?}"
    );
    // A parent that is a symlink to the child itself.
    let (b2, _) = base(d.path(), "b2", 8 * MIB, &[], &[]);
    let c3 = d.path().join("c3.vhdx");
    create_vhdx_differencing(&c3, &b2, "b2.vhdx", &[]).unwrap();
    std::fs::remove_file(&b2).unwrap();
    std::os::unix::fs::symlink(&c3, &b2).unwrap();
    let e = open(&c3).err().expect("self loop accepted");
    assert!(e.to_string().contains("loops"), "{e}");
}

#[test]
fn chains_deeper_than_64_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let (b, _) = base(d.path(), "l0", 4 * MIB, &[], &[w(0, 512, 9)]);
    let mut parent = b;
    for i in 1..64 {
        let c = d.path().join(format!("l{i}.vhdx"));
        let rel = parent.file_name().unwrap().to_str().unwrap().to_string();
        create_vhdx_differencing(&c, &parent, &rel, &[wr(i * 512, 512)]).unwrap();
        parent = c;
    }
    // 64 files: fine, and every level's sector reads back.
    let mut r = open(&parent).unwrap();
    assert_eq!(r.files().len(), 64);
    let mut buf = vec![0u8; 64 * 512];
    r.read_at(0, &mut buf).unwrap();
    assert_eq!(buf[..512], [9u8; 512]);
    for i in 1..64u64 {
        let s = (i * 512) as usize;
        assert_eq!(buf[s..s + 512], wr(i * 512, 512).1[..], "level {i}");
    }
    let c = d.path().join("l64.vhdx");
    create_vhdx_differencing(&c, &parent, "l63.vhdx", &[]).unwrap();
    let e = open(&c).err().expect("65 files accepted");
    assert!(
        matches!(&e, DiskError::Unsupported { what, .. } if what.contains("64")),
        "{e:?}"
    );
}

const BAT: u64 = 3 * MIB; // where our writer puts the BAT
const CHUNK_RATIO: u64 = 2048; // 2^23 × 512 / 2 MiB

fn set_state(p: &Path, index: u64, state: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let mut e = [0u8; 8];
    f.read_exact_at(&mut e, BAT + index * 8).unwrap();
    let v = (u64::from_le_bytes(e) & !7) | state;
    f.write_all_at(&v.to_le_bytes(), BAT + index * 8).unwrap();
}

#[test]
fn block_states_over_a_parent() {
    let d = tempfile::tempdir().unwrap();
    let (b, braw) = base(d.path(), "base", 16 * MIB, &[], &[w(0, 16 * MIB, 0x3c)]);
    let child = d.path().join("child.avhdx");
    let cw: Writes = vec![wr(BLOCK, BLOCK), wr(4 * BLOCK + 512, 512)];
    create_vhdx_differencing(&child, &b, "base.vhdx", &cw).unwrap();
    let base_bytes = std::fs::read(&braw).unwrap();
    let read = |p: &Path, off: u64, len: usize| {
        let mut r = open(p).unwrap();
        let mut buf = vec![0u8; len];
        r.read_at(off, &mut buf).unwrap();
        buf
    };
    assert_eq!(read(&child, BLOCK, BLOCK as usize), cw[0].1);
    // ZERO reads zeros (MUST); UNMAPPED and UNDEFINED may read zeros, and do here. All
    // three hide the parent, and the map says Cleared rather than the parent's data.
    for state in [2, 3, 1] {
        set_state(&child, 1, state);
        assert!(read(&child, BLOCK, BLOCK as usize).iter().all(|&x| x == 0));
        let map = open(&child).unwrap().allocation().unwrap();
        assert!(
            map.iter()
                .any(|e| e.offset == BLOCK && e.length == BLOCK && e.kind == ExtentKind::Cleared),
            "state {state}: {map:?}"
        );
        assert!(!overlaps(&map, BLOCK, BLOCK), "state {state}: {map:?}");
    }
    // NOT_PRESENT reads the parent.
    set_state(&child, 1, 0);
    assert_eq!(
        read(&child, BLOCK, BLOCK as usize),
        base_bytes[BLOCK as usize..2 * BLOCK as usize]
    );
    // A partially present block whose chunk has no sector bitmap block is corrupt.
    set_state(&child, CHUNK_RATIO, 0);
    let e = open(&child).err().expect("accepted");
    assert!(e.to_string().contains("sector bitmap"), "{e}");
    // An invalid sector bitmap state too.
    set_state(&child, CHUNK_RATIO, 3);
    let e = open(&child).err().expect("accepted");
    assert!(e.to_string().contains("invalid state 3"), "{e}");
    set_state(&child, CHUNK_RATIO, 6);
    assert!(open(&child).is_ok());
    // A parent locator of an unknown type is refused as unsupported. Our writer puts
    // it after the other five items: 64 KiB + 8 + 8 + 16 + 8 + 8 into the metadata.
    let loc = 2 * MIB + 64 * 1024 + 48;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&child)
        .unwrap();
    f.write_all_at(&[0x42], loc).unwrap();
    let e = open(&child).err().expect("accepted");
    assert!(
        matches!(&e, DiskError::Unsupported { what, .. } if what.contains("locator type")),
        "{e:?}"
    );
}

/// With HasParent cleared and the parent locator dropped, a child holding only fully
/// present blocks is a plain dynamic VHDX: qemu then checks our container (headers, region tables, metadata, BAT,
/// checksums) and reads the child's own blocks.
#[test]
fn qemu_accepts_the_child_container() {
    let d = tempfile::tempdir().unwrap();
    let size = 40 * MIB;
    let (b, _) = base(d.path(), "base", size, &[], &[w(0, size, 0x5a)]);
    let child = d.path().join("child.avhdx");
    let cw: Writes = vec![wr(0, BLOCK), wr(6 * MIB, 2 * BLOCK), wr(38 * MIB, BLOCK)];
    create_vhdx_differencing(&child, &b, "base.vhdx", &cw).unwrap();
    let copy = d.path().join("standalone.vhdx");
    std::fs::copy(&child, &copy).unwrap();
    // File parameters: the first item, 64 KiB into the metadata region at 2 MiB; the
    // parent locator is the last of 6 table entries, which qemu refuses: drop it.
    let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
    f.write_all_at(&0u32.to_le_bytes(), 2 * MIB + 64 * 1024 + 4)
        .unwrap();
    f.write_all_at(&5u16.to_le_bytes(), 2 * MIB + 10).unwrap();
    run("qemu-img", &["check", "-f", "vhdx", copy.to_str().unwrap()]);
    assert_eq!(
        info(Some("vhdx"), &copy)["virtual-size"].as_u64().unwrap(),
        size
    );
    let qraw = d.path().join("standalone.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "vhdx",
            "-O",
            "raw",
            copy.to_str().unwrap(),
            qraw.to_str().unwrap(),
        ],
    );
    let zeros = d.path().join("zeros.raw");
    File::create(&zeros).unwrap().set_len(size).unwrap();
    let exp = d.path().join("expected.raw");
    expected(&zeros, &exp, &[&cw]);
    qemu_identical(&exp, &qraw);
}

#[test]
fn writer_refuses_bad_requests() {
    let d = tempfile::tempdir().unwrap();
    let (b, _) = base(d.path(), "base", 4 * MIB, &[], &[]);
    let c = d.path().join("c.avhdx");
    assert!(matches!(
        create_vhdx_differencing(&c, &b, "base.vhdx", &[wr(4 * MIB - 100, 200)]),
        Err(DiskError::InvalidRequest { .. })
    ));
    // Never over a file of its own chain.
    assert!(matches!(
        create_vhdx_differencing(&b, &b, "base.vhdx", &[]),
        Err(DiskError::InvalidRequest { .. })
    ));
    run(
        "qemu-img",
        &["check", "-q", "-f", "vhdx", b.to_str().unwrap()],
    );
    let mut o = VhdxChildOptions::new("base.vhdx");
    o.block_size = 3 << 20;
    assert!(matches!(
        create_vhdx_differencing_with(&c, &b, &o, &[]),
        Err(DiskError::InvalidRequest { .. })
    ));
    // The parent must be a VHDX.
    let raw = d.path().join("x.raw");
    File::create(&raw).unwrap().set_len(4 * MIB).unwrap();
    assert!(matches!(
        create_vhdx_differencing(&c, &raw, "x.raw", &[]),
        Err(DiskError::InvalidRequest { .. })
    ));
}
