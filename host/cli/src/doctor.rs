//! `lifeboat doctor`: is this machine ready for workflows and plugin builds?

use std::path::Path;
use std::process::Command;

/// One thing checked.
struct Check {
    what: &'static str,
    why: &'static str,
    fix: &'static str,
    /// Missing optional things are reported but do not fail the doctor.
    needed: bool,
    found: Result<String, String>,
}

fn version_of(cmd: &str, args: &[&str]) -> Result<String, String> {
    match Command::new(cmd).args(args).output() {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let text = if text.trim().is_empty() {
                String::from_utf8_lossy(&o.stderr).to_string()
            } else {
                text.to_string()
            };
            Ok(text.lines().next().unwrap_or("").trim().to_string())
        }
        Ok(o) => Err(format!("`{cmd}` failed ({})", o.status)),
        Err(_) => Err(format!("`{cmd}` not found")),
    }
}

fn wasm_target() -> Result<String, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    match Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
    {
        Ok(o) if o.status.success() => {
            let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if Path::new(&dir).is_dir() {
                Ok("installed".into())
            } else {
                Err("not installed".into())
            }
        }
        Ok(_) => Err("not installed".into()),
        Err(_) => Err("`rustc` not found".into()),
    }
}

fn writable(dir: Option<std::path::PathBuf>) -> Result<String, String> {
    let dir = dir.ok_or_else(|| "no cache folder (set LIFEBOAT_CACHE_DIR or HOME)".to_string())?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let probe = dir.join(".doctor-probe");
    std::fs::write(&probe, b"ok").map_err(|e| format!("{}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(dir.display().to_string())
}

/// Print the report; the exit code is 1 when something needed is missing.
pub fn run() -> u8 {
    let checks = [
        Check {
            what: "component cache",
            why: "compiled plugins are cached here",
            fix: "set LIFEBOAT_CACHE_DIR to a writable folder",
            needed: true,
            found: writable(lifeboat_runtime::default_cache_dir()),
        },
        Check {
            what: "cargo",
            why: "building plugins",
            fix: "install Rust with rustup",
            needed: true,
            found: version_of("cargo", &["--version"]),
        },
        Check {
            what: "wasm32-wasip2 target",
            why: "building plugins as components",
            fix: "rustup target add wasm32-wasip2",
            needed: true,
            found: wasm_target(),
        },
        Check {
            what: "qemu-img",
            why: "disk format checks and conversions",
            fix: "apt-get install qemu-utils",
            needed: true,
            found: version_of("qemu-img", &["--version"]),
        },
        Check {
            what: "qemu-nbd",
            why: "changed-block tracking from qcow2 dirty bitmaps",
            fix: "apt-get install qemu-utils",
            needed: true,
            found: version_of("qemu-nbd", &["--version"]),
        },
        Check {
            what: "qemu-system-x86_64",
            why: "boot verification of recovered disks (optional)",
            fix: "apt-get install -t bookworm-backports qemu-system-x86 qemu-utils",
            needed: false,
            found: version_of("qemu-system-x86_64", &["--version"]),
        },
        Check {
            what: "python3",
            why: "Python plugins and the S3 test server (optional)",
            fix: "apt-get install python3 python3-venv",
            needed: false,
            found: version_of("python3", &["--version"]),
        },
        Check {
            what: "npm",
            why: "JavaScript plugins and the Azure Blob test server (optional)",
            fix: "apt-get install npm",
            needed: false,
            found: version_of("npm", &["--version"]),
        },
        Check {
            what: "componentize-py",
            why: "building Python plugins (optional; a project's .venv has its own)",
            fix: "python3 -m venv .venv && .venv/bin/pip install componentize-py==0.25.1",
            needed: false,
            found: version_of("componentize-py", &["--version"]),
        },
        Check {
            what: "componentize-js",
            why: "building JavaScript plugins (optional; `npm install` in a project installs it)",
            fix: "npm install @bytecodealliance/componentize-js@0.23.0",
            needed: false,
            found: version_of("componentize-js", &["--version"]),
        },
    ];
    let mut missing = 0;
    for c in &checks {
        match &c.found {
            Ok(v) => println!("ok       {:<20} {v}", c.what),
            Err(e) => {
                let tag = if c.needed { "MISSING " } else { "optional" };
                if c.needed {
                    missing += 1;
                }
                println!(
                    "{tag} {:<20} {e}: needed for {}; fix: {}",
                    c.what, c.why, c.fix
                );
            }
        }
    }
    if missing == 0 {
        println!("\nready: everything lifeboat needs is here");
        0
    } else {
        println!("\n{missing} needed item(s) missing: see the fixes above");
        crate::EXIT_FAILED
    }
}
