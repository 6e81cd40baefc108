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
    /// Over HTTPS: the test CA that signed its certificate (PEM).
    ca: Option<PathBuf>,
    _cwd: tempfile::TempDir,
}

/// A CA made for this test and a certificate for 127.0.0.1 signed by it, in `dir`
/// (`ca.pem`, `cert.pem`, `key.pem`), made with the openssl command.
fn make_test_ca(dir: &Path) {
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl ({e}): apt-get install openssl"));
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec[..],
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=lifeboat test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ][..],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec[..],
        &[
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ][..],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

impl Azurite {
    pub fn start() -> Azurite {
        Self::launch(false, &[])
    }

    /// Over HTTPS, with a certificate signed by a CA made for the test
    /// ([`Azurite::ca_file`]): nothing trusts it unless told to.
    pub fn start_https() -> Azurite {
        Self::launch(true, &[])
    }

    /// [`Azurite::start_https`] with more storage accounts besides
    /// [`ACCOUNT`]: `(name, base64 key)` each (Azurite's `AZURITE_ACCOUNTS`).
    pub fn start_https_with_accounts(accounts: &[(&str, &str)]) -> Azurite {
        Self::launch(true, accounts)
    }

    /// The test CA's certificate (PEM), when started over HTTPS.
    pub fn ca_file(&self) -> &Path {
        self.ca
            .as_deref()
            .expect("Azurite was started over plain HTTP")
    }

    fn launch(https: bool, accounts: &[(&str, &str)]) -> Azurite {
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
        let mut cmd = Command::new(&bin);
        if !accounts.is_empty() {
            // naming accounts replaces the default one: keep it
            let mut all = vec![format!("{ACCOUNT}:{KEY}")];
            all.extend(accounts.iter().map(|(n, k)| format!("{n}:{k}")));
            cmd.env("AZURITE_ACCOUNTS", all.join(";"));
        }
        let ca = if https {
            make_test_ca(cwd.path());
            cmd.args(["--cert", "cert.pem", "--key", "key.pem"]);
            Some(cwd.path().join("ca.pem"))
        } else {
            None
        };
        let mut child = cmd
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
            ca,
            _cwd: cwd,
        }
    }

    /// Path-style container URL (account in the path, as Azurite wants).
    pub fn container_url(&self, container: &str) -> String {
        self.account_container_url(ACCOUNT, container)
    }

    /// Path-style URL of a container of another account.
    pub fn account_container_url(&self, account: &str, container: &str) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{account}/{container}", self.port)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
