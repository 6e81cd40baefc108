//! Real changed-block tracking: a qcow2 persistent dirty bitmap, writes through qemu-io,
//! an incremental ship of only the dirty extents (read through qemu-nbd block status),
//! and restores identical per `qemu-img compare`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lifeboat_vault::{ChangedSource, ShipRequest, Vault, WriteFormat};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qcow2_dirty_bitmap_ships_only_dirty_extents() {
    let d = tmp();
    let img = p(d.path(), "vm.qcow2");
    let img_s = img.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", img_s, "32M"]);
    qemu_io(
        "qcow2",
        &img,
        &[
            "write -P 0xa1 0 3M",
            "write -P 0xb2 8M 5M",
            "write -P 0xc3 30M 2M",
        ],
    );
    qemu_img(&["bitmap", "--add", img_s, "lifeboat-0"]);

    let url = p(d.path(), "vault").display().to_string();
    let vault = Vault::init(&url, &key()).await.unwrap();
    let r1 = vault
        .ship(ShipRequest::new("vm", "disk0", &img, ChangedSource::Full))
        .await
        .unwrap();
    assert_eq!(r1.bytes_read, 10 << 20, "{r1:?}");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        img_s,
        p(d.path(), "s1.raw").to_str().unwrap(),
    ]);

    // guest writes, tracked by the bitmap (a write of zeros is a change too)
    qemu_io(
        "qcow2",
        &img,
        &[
            "write -P 0x11 1M 4k",
            "write -P 0x22 9M 200k",
            "write -z 2M 64k",
            "write -P 0x33 20M 100k",
        ],
    );
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        img_s,
        p(d.path(), "s2.raw").to_str().unwrap(),
    ]);

    let r2 = vault
        .ship(ShipRequest::new(
            "vm",
            "disk0",
            &img,
            ChangedSource::Bitmap {
                name: "lifeboat-0".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(r2.changes, "bitmap");
    assert_eq!(r2.parent.as_deref(), Some(r1.point.as_str()));
    // dirty granularity is 64 KiB: 4k + 256k + 64k + 128k = 7 chunks
    assert!(
        r2.bytes_read <= 8 * 65536,
        "only dirty chunks are read: {r2:?}"
    );
    assert!(r2.bytes_read >= 7 * 65536, "{r2:?}");
    let m = vault.point(Some("vm"), &r2.point).await.unwrap();
    assert_eq!(m.disks[0].changes.bitmap.as_deref(), Some("lifeboat-0"));
    assert!(!m.disks[0].changes.extents.is_empty());

    for (pt, snap) in [(&r1.point, "s1.raw"), (&r2.point, "s2.raw")] {
        for f in [
            WriteFormat::Qcow2,
            WriteFormat::Raw,
            WriteFormat::VhdxDynamic,
        ] {
            let out = p(d.path(), "out.img");
            vault.restore(Some("vm"), pt, &out, f).await.unwrap();
            assert_same(&p(d.path(), snap), "raw", &out, qemu_fmt(f));
            std::fs::remove_file(&out).unwrap();
        }
    }
    assert!(vault.check(true).await.unwrap().ok);

    // an unknown bitmap is a clear error from qemu-nbd
    let e = vault
        .ship(ShipRequest::new(
            "vm",
            "disk0",
            &img,
            ChangedSource::Bitmap {
                name: "nope".into(),
            },
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("qemu-nbd"), "{e}");
}
