//! VHD differencing chains. qemu cannot make differencing VHDs, so the children come from
//! our writer (`create_vhd_differencing`); qemu makes the bases, and the oracle is a raw
//! copy of the base with the children's writes applied by plain file writes, compared
//! with `qemu-img compare` against the chain as our reader flattens it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};

use common::*;
use lifeboat_disk::{DiskError, Format, chain, create_vhd_differencing, open, open_confined};

/// qemu makes a raw image with the pattern writes and converts it to a VHD of
/// `subformat` with the exact size (`force_size`). Returns (vhd, raw).
fn base(dir: &Path, name: &str, size: u64, subformat: &str, writes: &[W]) -> (PathBuf, PathBuf) {
    let raw = dir.join(format!("{name}.raw"));
    let vhd = dir.join(format!("{name}.vhd"));
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
    let o = format!("subformat={subformat},force_size=on");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vpc",
            "-o",
            &o,
            raw.to_str().unwrap(),
            vhd.to_str().unwrap(),
        ],
    );
    let i = info(Some("vpc"), &vhd);
    assert_eq!(i["virtual-size"].as_u64().unwrap(), size);
    (vhd, raw)
}

const BLOCK: u64 = 2 * MIB;

#[test]
fn two_level_chain_over_a_dynamic_base() {
    let d = tempfile::tempdir().unwrap();
    let size = 32 * MIB;
    let bw = vec![
        w(0, 3 * MIB, 0x21),
        w(9 * MIB + 512, 8192, 0x22),
        w(31 * MIB, MIB, 0x23),
    ];
    let (b, braw) = base(d.path(), "base", size, "dynamic", &bw);
    let child = d.path().join("child.avhd");
    let cw: Writes = vec![
        wr(BLOCK, BLOCK),          // a whole block over base data
        wr(4096, 4096),            // partial over base data
        wr(9 * MIB + 100, 300),    // inside a sector, completed from the parent
        wr(12 * MIB - 700, 1400),  // straddles a block edge, over zeros
        wr(20 * MIB, BLOCK + 512), // a block and one sector of the next
        wr(4096 + 1000, 10),       // overlaps an earlier write: later wins
        wr(32 * MIB - 512, 512),   // the last sector
    ];
    create_vhd_differencing(&child, &b, "base.vhd", &cw).unwrap();
    let exp = d.path().join("expected.raw");
    expected(&braw, &exp, &[&cw]);
    check_chain(Format::VhdDifferencing, &child, &exp, &[&cw], &bw);
    assert_eq!(Format::VhdDifferencing.qemu_name(), "vpc");
    assert_eq!(Format::VhdDifferencing.to_string(), "VHD (differencing)");
    let canon = |p: &Path| p.canonicalize().unwrap();
    assert_eq!(chain(&child).unwrap(), vec![canon(&child), canon(&b)]);
    // Exact to the sector where the parent holds nothing.
    let map = open(&child).unwrap().allocation().unwrap();
    assert!(
        map.iter()
            .any(|e| e.offset == 12 * MIB - 1024 && e.length == 2048),
        "{map:?}"
    );
    assert!(!overlaps(&map, 24 * MIB, 6 * MIB), "{map:?}");
}

#[test]
fn three_level_chain_over_a_fixed_base() {
    let d = tempfile::tempdir().unwrap();
    let size = 16 * MIB;
    std::fs::create_dir_all(d.path().join("base")).unwrap();
    std::fs::create_dir_all(d.path().join("vm")).unwrap();
    let bw = vec![w(0, 16 * MIB, 0x31)];
    let (b, braw) = base(&d.path().join("base"), "base", size, "fixed", &bw);
    let mid = d.path().join("vm").join("mid.avhd");
    let mw: Writes = vec![wr(0, 512), wr(3 * MIB + 1, 5000), wr(8 * MIB, 3 * MIB)];
    create_vhd_differencing(&mid, &b, r"..\base\base.vhd", &mw).unwrap();
    let top = d.path().join("vm").join("top.avhd");
    let tw: Writes = vec![wr(256, 512), wr(3 * MIB + 2048, 100), wr(9 * MIB, 4096)];
    create_vhd_differencing(&top, &mid, "mid.avhd", &tw).unwrap();
    let exp = d.path().join("expected.raw");
    expected(&braw, &exp, &[&mw, &tw]);
    check_chain(Format::VhdDifferencing, &top, &exp, &[&mw, &tw], &bw);
    assert_eq!(
        open(&top).unwrap().files(),
        vec![
            top.clone(),
            mid.clone(),
            d.path().join("vm").join(r"../base/base.vhd")
        ]
    );
}

/// qemu opens our differencing VHD as a dynamic one (it ignores the parent and the
/// sector bitmaps): it checks our footer, header, BAT and block layout, and reads the
/// child's own sectors.
#[test]
fn qemu_reads_the_child_container() {
    let d = tempfile::tempdir().unwrap();
    let size = 16 * MIB;
    let (b, _) = base(d.path(), "base", size, "dynamic", &[w(0, size, 0x41)]);
    let child = d.path().join("child.vhd");
    let cw: Writes = vec![wr(4096, 8192), wr(3 * MIB, BLOCK), wr(15 * MIB + 512, 1024)];
    create_vhd_differencing(&child, &b, "base.vhd", &cw).unwrap();
    let i = info(Some("vpc"), &child);
    assert_eq!(i["virtual-size"].as_u64().unwrap(), size);
    let qraw = d.path().join("q.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "vpc",
            "-O",
            "raw",
            child.to_str().unwrap(),
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
fn missing_mismatched_and_outside_parents() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("site");
    std::fs::create_dir_all(&root).unwrap();
    let (b, braw) = base(&root, "base", 8 * MIB, "dynamic", &[w(0, 4096, 1)]);
    let child = root.join("child.avhd");
    create_vhd_differencing(&child, &b, "base.vhd", &[wr(0, 512)]).unwrap();
    assert!(open_confined(&child, &root).is_ok());
    // Missing.
    std::fs::rename(&b, root.join("away.vhd")).unwrap();
    let e = open(&child).err().expect("opened without its parent");
    assert!(
        matches!(&e, DiskError::MissingParent { path, tried, .. } if path == &child && tried == &vec![root.join("base.vhd")]),
        "{e:?}"
    );
    assert!(e.to_string().contains("not found"), "{e}");
    // Another disk under the parent's name: its unique id differs.
    let vpc = [
        "convert",
        "-f",
        "raw",
        "-O",
        "vpc",
        "-o",
        "force_size=on",
        braw.to_str().unwrap(),
        b.to_str().unwrap(),
    ];
    run("qemu-img", &vpc);
    let e = open(&child).err().expect("wrong parent accepted");
    assert!(
        matches!(&e, DiskError::ParentMismatch { what, .. } if what.contains("unique id")),
        "{e:?}"
    );
    // Outside the root.
    std::fs::remove_file(&b).unwrap();
    let outside = d.path().join("away.vhd");
    std::fs::rename(root.join("away.vhd"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &b).unwrap();
    assert!(open(&child).is_ok());
    assert!(matches!(
        open_confined(&child, &root),
        Err(DiskError::OutsideRoot { file, .. }) if file == outside.canonicalize().unwrap()
    ));
}
