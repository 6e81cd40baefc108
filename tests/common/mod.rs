//! Shared by the end-to-end tests: the real `lifeboat` binary, the test-tree
//! plugins, a tiny HTTP server on 127.0.0.1, and the one insta setup.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The `lifeboat` binary with a clean environment: no inherited LIFEBOAT_*
/// or RUST_LOG, a shared component cache under target/, run from the repo root.
pub fn lifeboat() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    c.current_dir(root());
    for (k, _) in std::env::vars() {
        if k.starts_with("LIFEBOAT_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.env(
        "LIFEBOAT_CACHE_DIR",
        root().join("target").join("test-cache"),
    );
    c.env("NO_COLOR", "1");
    c
}

/// The hostile/counting test plugin, built once per test process.
pub fn testkit_wasm() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let paths = lifeboat_wasm_build::build(&root(), &["lifeboat-plugin-testkit"])
            .unwrap_or_else(|e| panic!("{e}"));
        paths[0].clone()
    })
    .clone()
}

/// stdout then stderr of a finished command.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// [`text`], asserting the command succeeded (the text is the failure message).
pub fn ok(o: &Output) -> String {
    let t = text(o);
    assert!(o.status.success(), "{t}");
    t
}

/// Run a tool (qemu-img, qemu-io, …) and assert it succeeded.
pub fn sh(cmd: &mut std::process::Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Exit code, stdout and stderr in one text, for snapshots.
pub fn transcript(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status
            .code()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "signal".into()),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The one insta configuration: snapshots in tests/snapshots, and the
/// things that must vary (run ids, temp paths, plugin digests that change
/// with the compiler, recovery point ids and times) redacted the same way
/// everywhere.
pub fn insta_settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(root().join("tests").join("snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s.add_filter(
        r"run \d+-[a-z0-9-]+-\d+ \(state in [^)]*\)",
        "run [RUN] (state in [STATE])",
    );
    s.add_filter(r"resuming run \d+-[a-z0-9-]+-\d+", "resuming run [RUN]");
    s.add_filter(r"/tmp/[A-Za-z0-9._/-]+", "[TMP]");
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    s.add_filter(r"\(digest [0-9a-f]{12}\)", "(digest [PLUGIN])");
    s.add_filter(r#""digest": "[0-9a-f]{64}""#, r#""digest": "[DIGEST]""#);
    s.add_filter(r"digest: [0-9a-f]{64}", "digest: [DIGEST]");
    // recovery points: ids derive from random staged-disk ids, and the time
    // a point was sealed (RFC 3339)
    s.add_filter(r"\b[0-9a-f]{16}\b", "[POINT]");
    s.add_filter(
        r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
        "[TIME]",
    );
    s
}

/// A tiny HTTP server on 127.0.0.1 for plugins to call: counts requests per
/// path, can hold one path (to kill the caller mid-request) and can fail a
/// path a number of times with 503.
pub struct Server {
    pub port: u16,
    pub counts: Arc<Mutex<HashMap<String, u32>>>,
    state: Arc<Mutex<ServerState>>,
}

#[derive(Default)]
struct ServerState {
    hold: Option<String>,
    held: Option<std::sync::mpsc::Sender<()>>,
    fail: HashMap<String, u32>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("addr").port();
        let counts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let state: Arc<Mutex<ServerState>> = Arc::default();
        let (c, st) = (counts.clone(), state.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (c, st) = (c.clone(), st.clone());
                std::thread::spawn(move || handle(conn, &c, &st));
            }
        });
        Server {
            port,
            counts,
            state,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next request to `path` is counted, reported on the returned
    /// channel, and never answered.
    pub fn hold(&self, path: &str) -> std::sync::mpsc::Receiver<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut s = self.state.lock().unwrap();
        s.hold = Some(path.to_string());
        s.held = Some(tx);
        rx
    }

    /// Answer 503 to the first `n` requests to `path`.
    pub fn fail(&self, path: &str, n: u32) {
        self.state.lock().unwrap().fail.insert(path.to_string(), n);
    }

    pub fn count(&self, path: &str) -> u32 {
        self.counts.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn handle(mut conn: TcpStream, counts: &Mutex<HashMap<String, u32>>, state: &Mutex<ServerState>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut line = String::new();
    let (mut chunked, mut length) = (false, 0usize);
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    // Read the whole body, so closing the connection never resets it.
    if chunked {
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0u8; n + 2];
            if std::io::Read::read_exact(&mut reader, &mut chunk).is_err() || n == 0 {
                break;
            }
        }
    } else if length > 0 {
        let mut body = vec![0u8; length];
        let _ = std::io::Read::read_exact(&mut reader, &mut body);
    }
    *counts.lock().unwrap().entry(path.clone()).or_default() += 1;
    let (hold, fail) = {
        let mut s = state.lock().unwrap();
        let hold = s.hold.as_deref() == Some(path.as_str());
        if hold {
            s.hold = None;
            if let Some(tx) = s.held.take() {
                let _ = tx.send(());
            }
        }
        let fail = match s.fail.get_mut(&path) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        (hold, fail)
    };
    if hold {
        // Never answer: the caller is killed while waiting.
        std::thread::sleep(std::time::Duration::from_secs(60));
        return;
    }
    let (status, body) = if fail {
        ("503 Service Unavailable", "busy")
    } else {
        ("200 OK", "ok")
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
pub mod azurite;
pub mod lab;
pub mod vcsim;
