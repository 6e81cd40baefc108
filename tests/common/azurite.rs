//! Azurite (the Azure Blob emulator) for tests: started in memory on
//! 127.0.0.1 with a free port and killed by its PID when dropped. Installed by
//! host/vault/tests/setup-servers.sh into target/tools (or `LIFEBOAT_AZURITE`
//! names an `azurite-blob` binary); a missing Azurite fails the test.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The emulator's well-known development account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Its published key (Azurite's documentation).
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// An `azurite-blob` process, in memory, killed (by PID) on drop.
pub struct Azurite {
    child: Child,
    pub port: u16,
    _cwd: tempfile::TempDir,
}

impl Azurite {
    pub fn start() -> Azurite {
        let bin = std::env::var_os("LIFEBOAT_AZURITE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../target/tools/node_modules/.bin/azurite-blob")
            });
        assert!(
            bin.exists(),
            "Azurite not found at {}: install it with host/vault/tests/setup-servers.sh \
             (or set LIFEBOAT_AZURITE to an azurite-blob binary)",
            bin.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cwd = tempfile::tempdir().unwrap();
        let mut child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args([
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--silent",
            ])
            .current_dir(cwd.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("azurite-blob exited during start-up: {status}");
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("azurite-blob did not listen on port {port} within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Azurite {
            child,
            port,
            _cwd: cwd,
        }
    }

    /// Path-style container URL (account in the path, as Azurite wants).
    pub fn container_url(&self, container: &str) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}/{container}", self.port)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
