//! vcsim (the vCenter simulator built by tests/lab/vcsim/build.sh from
//! Debian's govmomi library) for tests: built once per test binary, started
//! on 127.0.0.1 with the given credentials, stopped by its PID on drop. A
//! vcsim that cannot be built fails the test with the reason.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds vcsim once per test binary and returns its path, or panics saying
/// why it cannot be had.
pub fn vcsim_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BINARY.get_or_init(|| {
        let script = root().join("tests/lab/vcsim/build.sh");
        let go = match Command::new("go").arg("version").output() {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            }
            _ => "not installed".to_owned(),
        };
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}); Go: {go}.\n\
                 vcsim needs Go and govmomi's simulator library (Debian: golang-go, \
                 golang-github-vmware-govmomi-dev); tests/lab/vcsim/build.sh installs them \
                 with apt-get when run as root.\n--- build.sh stderr ---\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = stdout
            .lines()
            .last()
            .map(|l| PathBuf::from(l.trim()))
            .ok_or_else(|| format!("{} printed no binary path", script.display()))?;
        if !path.is_file() {
            return Err(format!(
                "{} said {} but there is no such file",
                script.display(),
                path.display()
            ));
        }
        Ok(path)
    });
    match built {
        Ok(path) => path,
        Err(why) => panic!(
            "vcsim is not available, so the vCenter tests cannot run (build it with tests/lab/vcsim/build.sh):\n{why}"
        ),
    }
}

/// A running vcsim; stopped by its PID on drop (so also when a test panics).
pub struct Vcsim {
    child: Child,
    /// `http://127.0.0.1:PORT/sdk`.
    pub url: String,
}

impl Vcsim {
    /// Starts vcsim accepting only `user` / `password`.
    pub fn start(user: &str, password: &str) -> Vcsim {
        let binary = vcsim_binary();
        let mut child = Command::new(binary)
            .args(["-username", user, "-password", password])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vcsim's standard output was not captured");
        };
        // From here on the guard stops the process whatever happens.
        let mut sim = Vcsim {
            child,
            url: String::new(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let first = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => panic!("vcsim exited before printing its URL"),
            Err(_) => panic!("vcsim did not print its URL within 60 s"),
        };
        assert!(
            first.starts_with("http://127.0.0.1:") && first.ends_with("/sdk"),
            "unexpected first line from vcsim: {first:?}"
        );
        sim.url = first;
        sim
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        let pid = self.child.id();
        // SIGTERM first: vcsim then removes its temporary datastore folders.
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
