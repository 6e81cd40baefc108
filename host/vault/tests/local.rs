//! Local-folder vault: full / change-list / hash-comparison ships, restore of every point
//! into every writable format (checked with `qemu-img compare`), check, wrong key,
//! a flipped bit, prune and locks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::FileExt;

use common::*;
use lifeboat_vault::{ChangedSource, Extent, ExtentKind, Key, ShipRequest, Vault, VaultError};

const SIZE: u64 = (40 << 20) + 1536;

fn write_random(path: &std::path::Path, offset: u64, len: usize, seed: u64) {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut buf = vec![0u8; len];
    for (i, b) in buf.iter_mut().enumerate() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // half compressible: text-like bytes in some 4 KiB blocks
        *b = if (i / 4096) % 2 == 0 {
            (x >> 24) as u8
        } else {
            b"lifeboat "[(x % 9) as usize]
        };
    }
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&buf, offset).unwrap();
}

fn new_image(dir: &std::path::Path) -> std::path::PathBuf {
    let img = p(dir, "disk.raw");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(SIZE).unwrap();
    write_random(&img, 0, 3 << 20, 1);
    write_random(&img, (10 << 20) + 4096, 100 << 10, 2);
    qemu_io("raw", &img, &["write -P 0xaa 20M 1M"]);
    write_random(&img, SIZE - 1000, 1000, 3);
    img
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_list_and_hash_ships_restore_into_every_format() {
    let d = tmp();
    let img = new_image(d.path());
    let url = p(d.path(), "vault").display().to_string();
    let vault = Vault::init(&url, &key()).await.unwrap();

    let r1 = vault
        .ship(ShipRequest::new("vm1", "disk0", &img, ChangedSource::Full))
        .await
        .unwrap();
    assert_eq!(r1.virtual_size, SIZE);
    assert!(
        r1.bytes_read >= (4 << 20) && r1.bytes_read < (5 << 20),
        "{r1:?}"
    );
    snapshot(&img, &p(d.path(), "s1.raw"));

    // change list: new data inside one chunk, and a cleared (zeroed) 512 KiB range
    write_random(&img, (5 << 20) + 100, 10_000, 4);
    qemu_io("raw", &img, &["write -z 20M 512k"]);
    let changes = vec![
        Extent {
            offset: (5 << 20) + 100,
            length: 10_000,
            kind: ExtentKind::Data,
        },
        Extent {
            offset: 20 << 20,
            length: 512 << 10,
            kind: ExtentKind::Cleared,
        },
    ];
    let r2 = vault
        .ship(ShipRequest::new(
            "vm1",
            "disk0",
            &img,
            ChangedSource::List(changes),
        ))
        .await
        .unwrap();
    assert_eq!(r2.parent.as_deref(), Some(r1.point.as_str()));
    assert_eq!(
        r2.bytes_read,
        64 << 10,
        "only the one touched chunk is read: {r2:?}"
    );
    assert_eq!(r2.chunks_new, 1);
    snapshot(&img, &p(d.path(), "s2.raw"));

    // no change list: hash comparison against the vault
    write_random(&img, 30 << 20, 200 << 10, 5);
    let r3 = vault
        .ship(ShipRequest::new(
            "vm1",
            "disk0",
            &img,
            ChangedSource::SincePoint(r2.point.clone()),
        ))
        .await
        .unwrap();
    assert!(r3.bytes_new <= 256 << 10, "{r3:?}");
    assert!(r3.bytes_deduped > 3 << 20, "{r3:?}");
    snapshot(&img, &p(d.path(), "s3.raw"));

    let pts = vault.points(Some("vm1")).await.unwrap();
    assert_eq!(pts.len(), 3);
    assert_eq!(
        vault.point(Some("vm1"), "latest").await.unwrap().id,
        r3.point
    );
    let m2 = vault.point(None, &r2.point[..6]).await.unwrap();
    assert_eq!(m2.disks[0].changes.source, "list");
    assert_eq!(m2.disks[0].changes.extents.len(), 2);

    for (point, snap) in [
        (&r1.point, "s1.raw"),
        (&r2.point, "s2.raw"),
        (&r3.point, "s3.raw"),
    ] {
        for f in ALL_FORMATS {
            let out = p(d.path(), &format!("restored.{}", qemu_fmt(f)));
            let rep = vault.restore(Some("vm1"), point, &out, f).await.unwrap();
            assert!(rep.verified);
            assert_same(&p(d.path(), snap), "raw", &out, qemu_fmt(f));
            std::fs::remove_file(&out).unwrap();
        }
    }
    let c = vault.check(true).await.unwrap();
    assert!(c.ok, "{c:?}");
    assert!(c.warnings.is_empty(), "{c:?}");
    assert_eq!(c.points, 3);

    // re-open with the same key works; a change list without a previous point is refused
    let v2 = Vault::open(&url, &key()).await.unwrap();
    let e = v2
        .ship(ShipRequest::new(
            "vm2",
            "disk0",
            &img,
            ChangedSource::List(vec![]),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, VaultError::InvalidRequest(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_a_clear_error() {
    let d = tmp();
    let url = p(d.path(), "vault").display().to_string();
    Vault::init(&url, &key()).await.unwrap();
    let e = Vault::open(&url, &Key::parse(&"77".repeat(32)).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, VaultError::WrongKey), "{e}");
    assert!(e.to_string().contains("wrong key"));
    // passphrase vaults: argon2id with the stored salt
    let url2 = p(d.path(), "vault2").display().to_string();
    Vault::init(&url2, &Key::parse("correct horse battery").unwrap())
        .await
        .unwrap();
    Vault::open(&url2, &Key::parse("correct horse battery").unwrap())
        .await
        .unwrap();
    let e = Vault::open(&url2, &Key::parse("correct horse battery!").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, VaultError::WrongKey), "{e}");
    // key files: hex or passphrase, surrounding whitespace ignored
    let kf = p(d.path(), "key");
    std::fs::write(&kf, format!("  {}\n", "5a".repeat(32))).unwrap();
    Vault::open(&url, &Key::from_env_or_file(Some(&kf)).unwrap())
        .await
        .unwrap();
    std::fs::write(&kf, "correct horse battery\n").unwrap();
    Vault::open(&url2, &Key::from_env_or_file(Some(&kf)).unwrap())
        .await
        .unwrap();
    std::fs::write(&kf, "short").unwrap();
    let e = Key::from_env_or_file(Some(&kf)).unwrap_err();
    assert!(e.to_string().contains("key file"), "{e}");
    let e = Vault::init(&url, &key()).await.unwrap_err();
    assert!(matches!(e, VaultError::AlreadyExists(_)), "{e}");
    let e = Vault::open(&p(d.path(), "none").display().to_string(), &key())
        .await
        .unwrap_err();
    assert!(matches!(e, VaultError::NotAVault { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bit_is_found_by_check_and_refused_by_restore() {
    let d = tmp();
    let img = new_image(d.path());
    let vdir = p(d.path(), "vault");
    let url = vdir.display().to_string();
    let vault = Vault::init(&url, &key()).await.unwrap();
    let r = vault
        .ship(ShipRequest::new("vm1", "disk0", &img, ChangedSource::Full))
        .await
        .unwrap();
    assert!(vault.check(true).await.unwrap().ok);
    let flipped = flip_bit_in_largest(&vdir.join("packs"));
    let c = vault.check(false).await.unwrap();
    assert!(c.ok, "structure alone does not read data: {c:?}");
    let c = vault.check(true).await.unwrap();
    assert!(!c.ok);
    let name = flipped.file_name().unwrap().to_string_lossy().to_string();
    assert!(c.errors.iter().any(|e| e.contains(&name)), "{c:?}");
    let out = p(d.path(), "out.qcow2");
    let e = vault
        .restore(
            Some("vm1"),
            &r.point,
            &out,
            lifeboat_vault::WriteFormat::Qcow2,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, VaultError::Corrupt { .. }), "{e}");
    assert!(!out.exists(), "a failed restore leaves no image behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_keeps_what_live_points_need_and_respects_locks() {
    let d = tmp();
    let img = new_image(d.path());
    let url = p(d.path(), "vault").display().to_string();
    let vault = Vault::init(&url, &key()).await.unwrap();
    let mut points = Vec::new();
    for i in 0..3u64 {
        write_random(&img, 30 << 20, 1 << 20, 10 + i);
        let r = vault
            .ship(ShipRequest::new("vm1", "disk0", &img, ChangedSource::Full))
            .await
            .unwrap();
        points.push(r.point);
    }
    snapshot(&img, &p(d.path(), "last.raw"));
    let other = vault
        .ship(ShipRequest::new("vm2", "disk0", &img, ChangedSource::Full))
        .await
        .unwrap();

    // a live shared lock (a ship in progress) blocks prune; an exclusive one blocks ship
    let l = vault.lock(false).await.unwrap();
    let e = vault.prune(1).await.unwrap_err();
    assert!(matches!(e, VaultError::Locked(_)), "{e}");
    l.release().await.unwrap();
    let l = vault.lock(true).await.unwrap();
    let e = vault
        .ship(ShipRequest::new("vm1", "disk0", &img, ChangedSource::Full))
        .await
        .unwrap_err();
    assert!(matches!(e, VaultError::Locked(_)), "{e}");
    l.release().await.unwrap();

    // retention of one VM: vm1 keeps its newest two, vm2 is not touched
    let rep1 = vault.prune_vm("vm1", 2).await.unwrap();
    assert_eq!(rep1.points_removed, vec![points[0].clone()], "{rep1:?}");
    assert_eq!(rep1.points_kept, 2, "{rep1:?}");
    let rep = vault.prune_vm("vm2", 1).await.unwrap();
    assert!(rep.points_removed.is_empty(), "{rep:?}");
    assert_eq!(rep.points_kept, 1, "{rep:?}");
    assert!(matches!(
        vault.prune_vm("vm1", 0).await.unwrap_err(),
        VaultError::InvalidRequest(_)
    ));

    let rep = vault.prune(1).await.unwrap();
    assert_eq!(rep.points_removed, vec![points[1].clone()], "{rep:?}");
    assert_eq!(rep.points_kept, 2);
    assert!(rep.bytes_after < rep.bytes_before, "{rep:?}");
    assert!(rep.packs_deleted >= 1, "{rep:?}");
    // vm1's three points share packs: dropping them rewrites the partly dead ones
    assert!(
        rep1.packs_repacked + rep.packs_repacked >= 1,
        "{rep1:?} {rep:?}"
    );
    let left: Vec<String> = vault
        .points(None)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert!(
        left.contains(&points[2]) && left.contains(&other.point),
        "{left:?}"
    );
    let c = vault.check(true).await.unwrap();
    assert!(c.ok && c.warnings.is_empty(), "{c:?}");
    for pt in [&points[2], &other.point] {
        let out = p(d.path(), "r.qcow2");
        vault
            .restore(None, pt, &out, lifeboat_vault::WriteFormat::Qcow2)
            .await
            .unwrap();
        assert_same(&p(d.path(), "last.raw"), "raw", &out, "qcow2");
    }
    // pruning again changes nothing
    let rep = vault.prune(1).await.unwrap();
    assert!(
        rep.points_removed.is_empty() && rep.packs_deleted == 0,
        "{rep:?}"
    );
}

/// Two disks shipped as staged disks, sealed into one point: idempotent seal, prune keeps
/// staged data, incremental staged ships apply to the sealed point, restores identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_disks_seal_into_one_multi_disk_point() {
    let d = tmp();
    let os = new_image(d.path());
    let data = p(d.path(), "data.raw");
    std::fs::File::create(&data)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    write_random(&data, 1 << 20, 512 << 10, 7);
    let url = p(d.path(), "vault").display().to_string();
    let vault = Vault::init(&url, &key()).await.unwrap();
    let stage = |disk: &str, img: &std::path::Path, changed| {
        let mut r = ShipRequest::new("vm1", disk, img, changed);
        r.stage = true;
        r
    };
    let a = vault
        .ship(stage("os", &os, ChangedSource::Full))
        .await
        .unwrap();
    // prune while a disk is staged but not sealed: its data must survive
    vault.prune(1).await.unwrap();
    let b = vault
        .ship(stage("data", &data, ChangedSource::Full))
        .await
        .unwrap();
    assert!(a.staged && b.staged);
    assert!(vault.points(Some("vm1")).await.unwrap().is_empty());
    let staged = vec![a.point.clone(), b.point.clone()];
    let m1 = vault
        .seal(
            "vm1",
            &staged,
            lifeboat_vault::Consistency::App,
            Some(serde_json::json!({"cpus": 2})),
        )
        .await
        .unwrap();
    assert_eq!(m1.disks.len(), 2);
    assert_eq!(m1.parent, None);
    assert_eq!(m1.meta, Some(serde_json::json!({"cpus": 2})));
    // sealing the same staged set again is the same point (apply is idempotent)
    let again = vault
        .seal(
            "vm1",
            &[b.point.clone(), a.point.clone()],
            lifeboat_vault::Consistency::App,
            None,
        )
        .await
        .unwrap();
    assert_eq!(again.id, m1.id);
    assert_eq!(vault.points(Some("vm1")).await.unwrap().len(), 1);
    snapshot(&data, &p(d.path(), "data1.raw"));

    // incremental: change the data disk only, ship its change list, seal
    write_random(&data, 6 << 20, 64 << 10, 8);
    let inc = vault
        .ship(stage(
            "data",
            &data,
            ChangedSource::List(vec![Extent {
                offset: 6 << 20,
                length: 64 << 10,
                kind: ExtentKind::Data,
            }]),
        ))
        .await
        .unwrap();
    assert_eq!(inc.bytes_read, 64 << 10);
    let m2 = vault
        .seal(
            "vm1",
            std::slice::from_ref(&inc.point),
            lifeboat_vault::Consistency::Crash,
            None,
        )
        .await
        .unwrap();
    assert_eq!(m2.parent.as_deref(), Some(m1.id.as_str()));
    // errors: unknown staged id, a staged disk of another VM, nothing to seal
    let e = vault
        .seal("vm1", &["00ff".into()], Default::default(), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no staged disk"), "{e}");
    let other = vault
        .ship({
            let mut r = ShipRequest::new("vm2", "os", &os, ChangedSource::Full);
            r.stage = true;
            r
        })
        .await
        .unwrap();
    let e = vault
        .seal("vm1", &[other.point], Default::default(), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("belongs to VM \"vm2\""), "{e}");
    assert!(
        vault
            .seal("vm1", &[], Default::default(), None)
            .await
            .is_err()
    );

    for (pt, disk, want) in [
        (&m1.id, "os", os.clone()),
        (&m1.id, "data", p(d.path(), "data1.raw")),
        (&m2.id, "data", data.clone()),
    ] {
        let out = p(d.path(), "r.vhd");
        let _ = std::fs::remove_file(&out);
        vault
            .restore_disk(
                Some("vm1"),
                pt,
                disk,
                &out,
                lifeboat_vault::WriteFormat::VhdFixed,
            )
            .await
            .unwrap();
        assert_same(&want, "raw", &out, "vpc");
    }
    let c = vault.check(true).await.unwrap();
    assert!(c.ok, "{c:?}");
}
