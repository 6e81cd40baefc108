//! Faults: `kill -9` in the middle of a ship, then ship again: no corrupt point, nothing
//! lost, the dead process's lock is stale, prune removes the orphans.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use lifeboat_vault::{ChangedSource, ShipRequest, Vault, WriteFormat};

fn count_files(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            if e.path().is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_ship_then_ship_again() {
    let d = tmp();
    let img = p(d.path(), "big.raw");
    let f = std::fs::File::create(&img).unwrap();
    let size: u64 = 320 << 20;
    f.set_len(size).unwrap();
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut buf = vec![0u8; 1 << 20];
    for mib in 0..(size >> 20) {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all_at(&buf, mib << 20).unwrap();
    }
    drop(f);
    let vdir = p(d.path(), "vault");
    let url = vdir.display().to_string();
    let hex_key = "5a".repeat(32);

    let mut child = Command::new(env!("CARGO_BIN_EXE_lifeboat-vault-bench"))
        .args(["ship", &url, img.to_str().unwrap(), "vm", "disk0"])
        .env("LIFEBOAT_VAULT_KEY", &hex_key)
        .spawn()
        .unwrap();
    // wait until some packs are indexed (8 packs = 128 MiB), then kill -9
    let t0 = Instant::now();
    while count_files(&vdir.join("index")) == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "ship finished before it could be killed"
        );
        assert!(t0.elapsed() < Duration::from_secs(120), "no index appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(count_files(&vdir.join("points")), 0, "no point was sealed");
    assert_eq!(
        count_files(&vdir.join("locks")),
        1,
        "the dead ship's lock is left behind"
    );

    let vault = Vault::open(&url, &key()).await.unwrap();
    assert!(vault.points(None).await.unwrap().is_empty());
    let c = vault.check(true).await.unwrap();
    assert!(c.ok, "what was stored is intact: {c:?}");
    assert!(c.warnings.iter().any(|w| w.contains("stale lock")), "{c:?}");

    let r = vault
        .ship(ShipRequest::new("vm", "disk0", &img, ChangedSource::Full))
        .await
        .unwrap();
    assert!(
        r.bytes_deduped >= 128 << 20,
        "indexed chunks of the killed ship are reused: {r:?}"
    );
    let out = p(d.path(), "out.raw");
    vault
        .restore(Some("vm"), "latest", &out, WriteFormat::Raw)
        .await
        .unwrap();
    assert_same(&img, "raw", &out, "raw");

    // the stale lock does not block prune, which removes the orphans
    let rep = vault.prune(1).await.unwrap();
    assert_eq!(rep.points_kept, 1);
    let c = vault.check(true).await.unwrap();
    assert!(c.ok, "{c:?}");
    assert!(
        !c.warnings.iter().any(|w| w.contains("not in any index")),
        "{c:?}"
    );
    vault
        .restore(Some("vm"), "latest", &out, WriteFormat::Qcow2)
        .await
        .unwrap();
    assert_same(&img, "raw", &out, "qcow2");
}
