//! The vault on real object-store servers on 127.0.0.1: S3 (moto server) and Azure Blob
//! (Azurite), started and stopped (by PID) by this test. Install them with
//! host/vault/tests/setup-servers.sh, or point LIFEBOAT_MOTO / LIFEBOAT_AZURITE (and
//! LIFEBOAT_TOOLS_PYTHON) at existing installs. A missing server FAILS the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(unsafe_code)] // std::env::set_var before any other thread reads the environment

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lifeboat_vault::{
    ChangedSource, Extent, ExtentKind, Key, ShipRequest, Vault, VaultError, WriteFormat,
};

const AZURITE_ACCOUNT: &str = "devstoreaccount1";
// Azurite's well-known development key (published in its documentation).
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools")
}

fn find(env: &str, rel: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let p = tools().join(rel);
    assert!(
        p.exists(),
        "{} not found: run host/vault/tests/setup-servers.sh (or set {env})",
        p.display()
    );
    p
}

fn python() -> PathBuf {
    find("LIFEBOAT_TOOLS_PYTHON", "venv/bin/python")
}

struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, child: &mut Child, what: &str) {
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{what} exited during start-up"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{what} did not listen on {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_moto() -> (Server, u16) {
    let bin = find("LIFEBOAT_MOTO", "venv/bin/moto_server");
    let dir = tmp();
    let port = free_port();
    let mut child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    wait_port(port, &mut child, "moto_server");
    (Server { child, _dir: dir }, port)
}

fn start_azurite() -> (Server, u16) {
    let bin = find("LIFEBOAT_AZURITE", "node_modules/.bin/azurite-blob");
    let dir = tmp();
    let port = free_port();
    let mut child = Command::new(bin)
        .args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--location",
        ])
        .arg(dir.path())
        .args(["--disableTelemetry", "--skipApiVersionCheck", "--silent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start azurite-blob");
    wait_port(port, &mut child, "azurite-blob");
    (Server { child, _dir: dir }, port)
}

fn py(script: &str) {
    run(Command::new(python()).arg("-c").arg(script));
}

/// Full + incremental ship, restore of both points, check --read-data, prune, wrong key.
async fn exercise(url: &str) {
    let d = tmp();
    let img = p(d.path(), "disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "24M"]);
    qemu_io(
        "qcow2",
        &img,
        &["write -P 0x5c 0 2M", "write -P 0x7e 10M 3M"],
    );
    let vault = Vault::init(url, &key()).await.unwrap();
    let r1 = vault
        .ship(ShipRequest::new("vm", "disk0", &img, ChangedSource::Full))
        .await
        .unwrap();
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        img.to_str().unwrap(),
        p(d.path(), "s1.raw").to_str().unwrap(),
    ]);
    qemu_io("qcow2", &img, &["write -P 0x99 1M 100k"]);
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        img.to_str().unwrap(),
        p(d.path(), "s2.raw").to_str().unwrap(),
    ]);
    let ext = vec![Extent {
        offset: 1 << 20,
        length: 100 << 10,
        kind: ExtentKind::Data,
    }];
    let r2 = vault
        .ship(ShipRequest::new(
            "vm",
            "disk0",
            &img,
            ChangedSource::List(ext),
        ))
        .await
        .unwrap();
    assert!(r2.bytes_read <= 3 * 65536, "{r2:?}");

    let v = Vault::open(url, &key()).await.unwrap();
    assert_eq!(v.points(Some("vm")).await.unwrap().len(), 2);
    for (pt, snap) in [(&r1.point, "s1.raw"), (&r2.point, "s2.raw")] {
        let out = p(d.path(), "out.vhdx");
        v.restore(Some("vm"), pt, &out, WriteFormat::VhdxDynamic)
            .await
            .unwrap();
        assert_same(&p(d.path(), snap), "raw", &out, "vhdx");
    }
    let c = v.check(true).await.unwrap();
    assert!(c.ok && c.warnings.is_empty(), "{c:?}");
    let rep = v.prune(1).await.unwrap();
    assert_eq!(rep.points_removed, vec![r1.point.clone()]);
    assert!(v.check(true).await.unwrap().ok);
    let out = p(d.path(), "out.raw");
    v.restore(Some("vm"), "latest", &out, WriteFormat::Raw)
        .await
        .unwrap();
    assert_same(&p(d.path(), "s2.raw"), "raw", &out, "raw");
    let e = Vault::open(url, &Key::parse(&"01".repeat(32)).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, VaultError::WrongKey), "{e}");
}

#[test]
fn vault_on_s3_moto_and_azure_blob_azurite() {
    let (_moto, s3_port) = start_moto();
    let (_azurite, az_port) = start_azurite();
    let s3_endpoint = format!("http://127.0.0.1:{s3_port}");
    let az_endpoint = format!("http://127.0.0.1:{az_port}/{AZURITE_ACCOUNT}");
    // SAFETY: no other thread exists yet that could read the environment concurrently.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "lifeboat-test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "lifeboat-test-secret");
        std::env::set_var("AZURE_STORAGE_ACCOUNT", AZURITE_ACCOUNT);
        std::env::set_var("AZURE_STORAGE_KEY", AZURITE_KEY);
    }
    py(&format!(
        "import boto3; boto3.client('s3', endpoint_url='{s3_endpoint}', region_name='us-east-1', \
         aws_access_key_id='x', aws_secret_access_key='y').create_bucket(Bucket='lifeboat')"
    ));
    py(&format!(
        "from azure.storage.blob import BlobServiceClient; \
         BlobServiceClient(account_url='{az_endpoint}', credential={{'account_name': '{AZURITE_ACCOUNT}', \
         'account_key': '{AZURITE_KEY}'}}).create_container('lifeboat')"
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        exercise(&format!(
            "s3://lifeboat/vaults/one?endpoint={s3_endpoint}&region=us-east-1&insecure_http=true"
        ))
        .await;
        exercise(&format!(
            "azblob://lifeboat/vaults/one?endpoint={az_endpoint}&insecure_http=true"
        ))
        .await;
        // a bad endpoint parameter is a clear URL error
        let e = Vault::open("s3://lifeboat/x?bogus=1", &key())
            .await
            .unwrap_err();
        assert!(matches!(e, VaultError::Url { .. }), "{e}");
        // plain http to the same running server without the opt-in: refused, nothing sent
        let e = Vault::open(
            &format!("s3://lifeboat/vaults/one?endpoint={s3_endpoint}&region=us-east-1"),
            &key(),
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string().contains("is plain http") && e.to_string().contains("insecure_http=true"),
            "{e}"
        );
    });
}
