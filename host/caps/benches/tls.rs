//! What encryption in transit costs: the same dense page blob uploaded to and
//! downloaded from Azurite over plain HTTP and over HTTPS (a test CA), in one
//! run, alternating, three rounds each; prints one table (medians).
//!
//! `cargo bench -p lifeboat-caps --bench tls` (Azurite from
//! host/vault/tests/setup-servers.sh, openssl for the test CA). Set
//! `LIFEBOAT_TLS_BENCH_MIB` to change the blob size (default 256).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/common/azurite.rs"]
mod azurite;

use std::time::{Duration, Instant};

use azurite::{ACCOUNT, Azurite, KEY};
use lifeboat_caps::azblob::AzBlob;

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (fields 14 and 15)
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mib: u64 = std::env::var("LIFEBOAT_TLS_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let size = mib << 20;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dense.raw");
    let mut data = vec![0u8; size as usize];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for c in data.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&img, &data).unwrap();
    drop(data);

    let plain = Azurite::start();
    let tls = Azurite::start_https();
    let ca = std::fs::read(tls.ca_file()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let clients = [
        (
            "http",
            AzBlob::new(&plain.container_url("bench"), ACCOUNT, KEY).unwrap(),
        ),
        (
            "https",
            AzBlob::with_ca(&tls.container_url("bench"), ACCOUNT, KEY, Some(&ca)).unwrap(),
        ),
    ];
    let mut times: Vec<(Vec<Duration>, Vec<Duration>, f64)> = vec![(vec![], vec![], 0.0); 2];
    rt.block_on(async {
        for (_, c) in &clients {
            c.create_container_if_missing().await.unwrap();
        }
        for round in 0..3 {
            for (i, (_, c)) in clients.iter().enumerate() {
                let name = format!("dense-{round}.raw");
                let cpu = cpu_seconds();
                let t = Instant::now();
                c.upload_page_blob(&name, &img).await.unwrap();
                times[i].0.push(t.elapsed());
                let back = dir.path().join("back.raw");
                let t = Instant::now();
                c.download_to_file(&name, &back).await.unwrap();
                times[i].1.push(t.elapsed());
                times[i].2 += cpu_seconds() - cpu;
                assert_eq!(std::fs::metadata(&back).unwrap().len(), size);
                c.delete(&name).await.unwrap();
            }
        }
    });
    let mbps = |d: Duration| size as f64 / 1e6 / d.as_secs_f64();
    println!("Azurite page blob, {mib} MiB dense, median of 3 rounds (same run, alternating)");
    println!(
        "| transport | upload s | upload MB/s | download s | download MB/s | client CPU s / round |"
    );
    println!("|---|---|---|---|---|---|");
    let mut med = Vec::new();
    for (i, (name, _)) in clients.iter().enumerate() {
        let (up, down) = (median(times[i].0.clone()), median(times[i].1.clone()));
        med.push((up, down));
        println!(
            "| {name} | {:.2} | {:.0} | {:.2} | {:.0} | {:.2} |",
            up.as_secs_f64(),
            mbps(up),
            down.as_secs_f64(),
            mbps(down),
            times[i].2 / 3.0
        );
    }
    println!(
        "TLS cost: upload {:+.0} %, download {:+.0} % (wall time, https vs http)",
        (med[1].0.as_secs_f64() / med[0].0.as_secs_f64() - 1.0) * 100.0,
        (med[1].1.as_secs_f64() / med[0].1.as_secs_f64() - 1.0) * 100.0
    );
}
