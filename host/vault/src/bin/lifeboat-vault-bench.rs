//! Vault benchmark and a small ship tool.
//!
//! ```text
//! lifeboat-vault-bench bench BASE.img INCR.img CHANGED-EXTENTS.txt [--work DIR] [--no-anchors]
//! lifeboat-vault-bench ship VAULT IMAGE VM DISK [--list CHANGED | --since POINT]
//! lifeboat-vault-bench restore VAULT POINT|latest OUT.raw   (VM "vm"; keys from LIFEBOAT_VAULT_KEY)
//! ```
//! `bench` ships BASE in full, then INCR with the change list and (into a copy of the
//! vault) by hash comparison, restores the latest point, checks it with `qemu-img
//! compare`, and times restic, borg and rsync on the same files as anchors. It prints
//! one table. Peak memory is the process's high-water mark per phase (reset through
//! /proc/self/clear_refs); anchors are measured with GNU time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use lifeboat_vault::extents::parse_extent_list;
use lifeboat_vault::{ChangedSource, Key, ShipRequest, Vault, WriteFormat};

type Res<T> = Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio: {e}");
            std::process::exit(2);
        }
    };
    let r = match args.first().map(String::as_str) {
        Some("bench") => rt.block_on(bench(&args[1..])),
        Some("ship") => rt.block_on(ship_cmd(&args[1..])),
        Some("restore") => rt.block_on(restore_cmd(&args[1..])),
        _ => Err("usage: lifeboat-vault-bench bench BASE INCR CHANGED [--work DIR] [--no-anchors]\n       lifeboat-vault-bench ship VAULT IMAGE VM DISK [--list CHANGED | --since POINT]\n       lifeboat-vault-bench restore VAULT POINT|latest OUT.raw".into()),
    };
    if let Err(e) = r {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn ship_cmd(a: &[String]) -> Res<()> {
    let usage = "ship VAULT IMAGE VM DISK [--list CHANGED-EXTENTS.txt | --since POINT]";
    let (vault, image, vm, disk, changed) = match a {
        [v, i, m, d] => (v, i, m, d, ChangedSource::Full),
        [v, i, m, d, flag, arg] if flag == "--list" => {
            let text = std::fs::read_to_string(arg).map_err(|e| format!("{arg}: {e}"))?;
            let list = parse_extent_list(&text).map_err(|e| e.to_string())?;
            (v, i, m, d, ChangedSource::List(list))
        }
        [v, i, m, d, flag, arg] if flag == "--since" => {
            (v, i, m, d, ChangedSource::SincePoint(arg.clone()))
        }
        _ => return Err(usage.into()),
    };
    let key = Key::from_env_or_file(None).map_err(|e| e.to_string())?;
    let v = match Vault::open(vault, &key).await {
        Ok(v) => v,
        Err(lifeboat_vault::VaultError::NotAVault { .. }) => {
            Vault::init(vault, &key).await.map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    let r = v
        .ship(ShipRequest::new(vm, disk, image, changed))
        .await
        .map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    Ok(())
}

async fn restore_cmd(a: &[String]) -> Res<()> {
    let [vault, point, out] = a else {
        return Err("restore VAULT POINT|latest OUT.raw (VM vm)".into());
    };
    let key = Key::from_env_or_file(None).map_err(|e| e.to_string())?;
    let v = Vault::open(vault, &key).await.map_err(|e| e.to_string())?;
    let r = v
        .restore(Some("vm"), point, Path::new(out), WriteFormat::Raw)
        .await
        .map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    Ok(())
}

/// Flushes dirty pages (untimed) so that one phase's writeback does not land in the next
/// phase's fsyncs (ext4 data=ordered commits flush every dirty file).
fn settle() {
    let _ = Command::new("sync").status();
}

fn reset_peak() {
    settle();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

/// CPU seconds (user + system, all threads) this process has used so far: with other
/// work on the machine, wall time shows how much CPU the scheduler gave us, and this
/// how much work a phase is.
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0) // USER_HZ
        })
        .unwrap_or(f64::NAN)
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => {
                    use std::os::unix::fs::MetadataExt;
                    total += m.blocks() * 512;
                }
                Err(_) => {}
            }
        }
    }
    total
}

fn drop_caches_note() -> &'static str {
    "warm page cache (images read once before the lifeboat phases)"
}

/// Reads the images once (untimed) so that every phase runs with them in the page
/// cache, as the goals are stated ("warm"); otherwise the first phase to touch
/// INCR would pay for reading it from the disk.
fn warm(paths: &[&Path]) {
    use std::io::Read;
    let mut buf = vec![0u8; 1 << 20];
    for p in paths {
        if let Ok(mut f) = std::fs::File::open(p) {
            while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}

#[derive(Default, Clone)]
struct Row {
    secs: Option<f64>,
    peak_mib: Option<f64>,
    note: String,
}

struct Tool {
    name: &'static str,
    full: Row,
    incr_list: Row,
    incr_hash: Row,
    restore: Row,
    size: Option<u64>,
}

impl Tool {
    fn new(name: &'static str) -> Tool {
        Tool {
            name,
            full: Row::default(),
            incr_list: Row::default(),
            incr_hash: Row::default(),
            restore: Row::default(),
            size: None,
        }
    }
}

/// Runs a command under GNU time; returns (seconds, peak MiB).
fn timed(cmd: &mut Command) -> Res<(f64, f64)> {
    settle();
    let tf = std::env::temp_dir().join(format!("lbv-time-{}", std::process::id()));
    let prog = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let envs: Vec<_> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
        .collect();
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&tf)
        .arg(&prog)
        .args(&args)
        .envs(envs);
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    let t0 = Instant::now();
    let out = c.output().map_err(|e| format!("{prog:?}: {e}"))?;
    let secs = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "{prog:?} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let kib: f64 = std::fs::read_to_string(&tf)
        .ok()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or(f64::NAN);
    let _ = std::fs::remove_file(&tf);
    Ok((secs, kib / 1024.0))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn cp_sparse(a: &Path, b: &Path) -> Res<()> {
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(a)
        .arg(b)
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("cp {} {}", a.display(), b.display()));
    }
    Ok(())
}

fn anchors(base: &Path, incr: &Path, work: &Path) -> Vec<Tool> {
    let mut out = Vec::new();
    let src = work.join("anchor-src");
    let _ = std::fs::create_dir_all(&src);
    let disk = src.join("disk.img");
    let stage = |img: &Path| cp_sparse(img, &disk);

    if have("restic") {
        let mut t = Tool::new("restic");
        let repo = work.join("restic-repo");
        let env = |c: &mut Command| {
            c.env("RESTIC_PASSWORD", "bench")
                .env("RESTIC_REPOSITORY", &repo);
        };
        let r = (|| -> Res<()> {
            let mut c = Command::new("restic");
            env(&mut c);
            c.args(["init", "-q"]);
            timed(&mut c)?;
            stage(base)?;
            let mut c = Command::new("restic");
            env(&mut c);
            c.args(["backup", "-q", "--host", "bench"]).arg(&src);
            let (s, m) = timed(&mut c)?;
            t.full = Row {
                secs: Some(s),
                peak_mib: Some(m),
                note: String::new(),
            };
            stage(incr)?;
            let mut c = Command::new("restic");
            env(&mut c);
            c.args(["backup", "-q", "--host", "bench"]).arg(&src);
            let (s, m) = timed(&mut c)?;
            t.incr_hash = Row {
                secs: Some(s),
                peak_mib: Some(m),
                note: "rereads file (CDC)".into(),
            };
            t.size = Some(dir_size(&repo));
            let target = work.join("restic-restore");
            let mut c = Command::new("restic");
            env(&mut c);
            c.args(["restore", "-q", "latest", "--target"]).arg(&target);
            let (s, m) = timed(&mut c)?;
            t.restore = Row {
                secs: Some(s),
                peak_mib: Some(m),
                note: String::new(),
            };
            let _ = std::fs::remove_dir_all(&target);
            Ok(())
        })();
        if let Err(e) = r {
            t.full.note = format!("failed: {e}");
        }
        let _ = std::fs::remove_dir_all(&repo);
        out.push(t);
    }
    if have("borg") {
        let mut t = Tool::new("borg");
        let repo = work.join("borg-repo");
        let env = |c: &mut Command| {
            c.env("BORG_PASSPHRASE", "bench")
                .env("BORG_REPO", &repo)
                .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
                .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes")
                .env("BORG_BASE_DIR", work.join("borg-home"));
        };
        let r = (|| -> Res<()> {
            let mut c = Command::new("borg");
            env(&mut c);
            c.args(["init", "-e", "repokey-blake2"]);
            timed(&mut c)?;
            stage(base)?;
            let mut c = Command::new("borg");
            env(&mut c);
            c.args(["create", "--compression", "zstd,1", "::a"])
                .arg(&src);
            let (s, m) = timed(&mut c)?;
            t.full = Row {
                secs: Some(s),
                peak_mib: Some(m),
                note: String::new(),
            };
            stage(incr)?;
            let mut c = Command::new("borg");
            env(&mut c);
            c.args(["create", "--compression", "zstd,1", "::b"])
                .arg(&src);
            let (s, m) = timed(&mut c)?;
            t.incr_hash = Row {
                secs: Some(s),
                peak_mib: Some(m),
                note: "rereads file (CDC)".into(),
            };
            t.size = Some(dir_size(&repo));
            let target = work.join("borg-restore");
            let _ = std::fs::create_dir_all(&target);
            let mut c = Command::new("borg");
            env(&mut c);
            c.current_dir(&target).args(["extract", "--sparse", "::b"]);
            let (s, m) = timed(&mut c)?;
            t.restore = Row {
                secs: Some(s),
                peak_mib: Some(m),
                note: String::new(),
            };
            let _ = std::fs::remove_dir_all(&target);
            Ok(())
        })();
        if let Err(e) = r {
            t.full.note = format!("failed: {e}");
        }
        let _ = std::fs::remove_dir_all(&repo);
        let _ = std::fs::remove_dir_all(work.join("borg-home"));
        out.push(t);
    }
    if have("rsync") {
        let mut t = Tool::new("rsync");
        let dst = work.join("rsync-dst");
        let r = (|| -> Res<()> {
            let _ = std::fs::create_dir_all(&dst);
            let d = dst.join("disk.img");
            let (s, m) = timed(Command::new("rsync").arg("--sparse").arg(base).arg(&d))?;
            t.full = Row {
                secs: Some(s),
                peak_mib: Some(m),
                note: "plain copy, no compression/encryption".into(),
            };
            let (s, m) = timed(
                Command::new("rsync")
                    .args(["--inplace", "--no-whole-file"])
                    .arg(incr)
                    .arg(&d),
            )?;
            t.incr_hash = Row {
                secs: Some(s),
                peak_mib: Some(m),
                note: "delta algorithm".into(),
            };
            t.size = Some(dir_size(&dst));
            let back = work.join("rsync-back.img");
            let (s, m) = timed(Command::new("rsync").arg("--sparse").arg(&d).arg(&back))?;
            t.restore = Row {
                secs: Some(s),
                peak_mib: Some(m),
                note: String::new(),
            };
            let _ = std::fs::remove_file(&back);
            Ok(())
        })();
        if let Err(e) = r {
            t.full.note = format!("failed: {e}");
        }
        let _ = std::fs::remove_dir_all(&dst);
        out.push(t);
    }
    let _ = std::fs::remove_dir_all(&src);
    out
}

async fn lifeboat_phases(
    label: &'static str,
    work: &Path,
    base: &Path,
    incr: &Path,
    list: &[lifeboat_vault::Extent],
) -> Res<(Tool, String)> {
    let mut lb = Tool::new(label);
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).map_err(|e| e.to_string())?;
    let e = |e: lifeboat_vault::VaultError| e.to_string();
    let key = Key::from_bytes([0x42; 32]);
    let vs = std::fs::metadata(base).map_err(|e| e.to_string())?.len() as f64;
    let gbps = |s: f64| vs / s / 1e9;
    warm(&[base, incr]);
    let va = work.join("vault-a");
    let vault = Vault::init(&va.display().to_string(), &key)
        .await
        .map_err(e)?;
    reset_peak();
    let c0 = cpu_secs();
    let r1 = vault
        .ship(ShipRequest::new("vm", "disk0", base, ChangedSource::Full))
        .await
        .map_err(e)?;
    lb.full = Row {
        secs: Some(r1.seconds),
        peak_mib: Some(peak_mib()),
        note: format!(
            "{:.2} GB/s, stored {:.0} MB, cpu {:.2} s",
            gbps(r1.seconds),
            r1.bytes_stored as f64 / 1e6,
            cpu_secs() - c0
        ),
    };
    // copy of the vault after the full ship, for the hash-comparison incremental
    let vb = work.join("vault-b");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&va)
        .arg(&vb)
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err("cp -a vault".into());
    }
    reset_peak();
    let c0 = cpu_secs();
    let r2 = vault
        .ship(ShipRequest::new(
            "vm",
            "disk0",
            incr,
            ChangedSource::List(list.to_vec()),
        ))
        .await
        .map_err(e)?;
    lb.incr_list = Row {
        secs: Some(r2.seconds),
        peak_mib: Some(peak_mib()),
        note: format!(
            "{} extents, read {:.0} MB, stored {:.0} MB, cpu {:.2} s",
            list.len(),
            r2.bytes_read as f64 / 1e6,
            r2.bytes_stored as f64 / 1e6,
            cpu_secs() - c0
        ),
    };
    lb.size = Some(dir_size(&va));
    let vault_b = Vault::open(&vb.display().to_string(), &key)
        .await
        .map_err(e)?;
    reset_peak();
    let c0 = cpu_secs();
    let r3 = vault_b
        .ship(ShipRequest::new(
            "vm",
            "disk0",
            incr,
            ChangedSource::SincePoint(r1.point.clone()),
        ))
        .await
        .map_err(e)?;
    lb.incr_hash = Row {
        secs: Some(r3.seconds),
        peak_mib: Some(peak_mib()),
        note: format!(
            "read {:.0} MB, stored {:.0} MB, cpu {:.2} s",
            r3.bytes_read as f64 / 1e6,
            r3.bytes_stored as f64 / 1e6,
            cpu_secs() - c0
        ),
    };
    drop(vault_b);
    let _ = std::fs::remove_dir_all(&vb);
    let out = work.join("restored.raw");
    reset_peak();
    let c0 = cpu_secs();
    let rr = vault
        .restore(Some("vm"), &r2.point, &out, WriteFormat::Raw)
        .await
        .map_err(e)?;
    let restore_cpu = cpu_secs() - c0;
    let identical = Command::new("qemu-img")
        .args(["compare", "-q", "-f", "raw", "-F", "raw"])
        .arg(incr)
        .arg(&out)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    lb.restore = Row {
        secs: Some(rr.seconds),
        peak_mib: Some(peak_mib()),
        note: format!(
            "{:.2} GB/s, cpu {restore_cpu:.2} s, {}",
            gbps(rr.seconds),
            if identical {
                "identical (qemu-img compare)"
            } else {
                "DIFFERENT"
            }
        ),
    };
    let _ = std::fs::remove_file(&out);
    let out_q = work.join("restored.qcow2");
    let rq = vault
        .restore(Some("vm"), &r2.point, &out_q, WriteFormat::Qcow2)
        .await
        .map_err(e)?;
    let _ = std::fs::remove_file(&out_q);
    let check_t0 = Instant::now();
    let chk = vault.check(true).await.map_err(e)?;
    let check_secs = check_t0.elapsed().as_secs_f64();

    let note = format!(
        "{label} restore into qcow2: {:.2} s ({:.2} GB/s); check --read-data: {:.2} s, {}",
        rq.seconds,
        gbps(rq.seconds),
        check_secs,
        if chk.ok { "ok" } else { "ERRORS" }
    );
    drop(vault);
    let _ = std::fs::remove_dir_all(work);
    Ok((lb, note))
}

async fn bench(a: &[String]) -> Res<()> {
    let mut pos = Vec::new();
    let mut work: Option<PathBuf> = None;
    let mut do_anchors = true;
    let mut it = a.iter();
    while let Some(x) = it.next() {
        match x.as_str() {
            "--work" => work = it.next().map(PathBuf::from),
            "--no-anchors" => do_anchors = false,
            _ => pos.push(PathBuf::from(x)),
        }
    }
    let [base, incr, changed] = pos.as_slice() else {
        return Err("bench BASE INCR CHANGED-EXTENTS [--work DIR] [--no-anchors]".into());
    };
    let work = work.unwrap_or_else(|| {
        base.parent()
            .unwrap_or(Path::new("."))
            .join("vault-bench-work")
    });
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let e = |e: lifeboat_vault::VaultError| e.to_string();
    let list = parse_extent_list(&std::fs::read_to_string(changed).map_err(|e| e.to_string())?)
        .map_err(e)?;
    let vs = std::fs::metadata(base).map_err(|e| e.to_string())?.len() as f64;

    let mut tools = vec![];
    let mut extra = Vec::new();
    let (t, x) = lifeboat_phases("lifeboat", &work.join("lifeboat"), base, incr, &list).await?;
    tools.push(t);
    extra.push(x);
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let w = shm.join(format!("lifeboat-vault-bench-{}", std::process::id()));
        let r = lifeboat_phases("lifeboat/tmpfs", &w, base, incr, &list).await;
        let _ = std::fs::remove_dir_all(&w);
        let (t, x) = r?;
        tools.push(t);
        extra.push(x);
    }
    if do_anchors {
        tools.extend(anchors(base, incr, &work));
    }

    println!();
    println!(
        "workload: {} ({:.2} GiB virtual), {} changed extents; {}; {} cores",
        base.display(),
        vs / (1u64 << 30) as f64,
        list.len(),
        drop_caches_note(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let fmt_row = |r: &Row| match r.secs {
        Some(s) => format!("{s:>7.2} s {:>5.0} MiB", r.peak_mib.unwrap_or(f64::NAN)),
        None => format!("{:>17}", "—"),
    };
    print!("{:<34}", "phase (time, peak memory)");
    for t in &tools {
        print!(" | {:>17}", t.name);
    }
    println!(" | goal");
    let sep = "-".repeat(34 + tools.len() * 20 + 30);
    println!("{sep}");
    type Phase = (&'static str, fn(&Tool) -> &Row, &'static str);
    let phases: [Phase; 4] = [
        (
            "full ship of base.img",
            |t| &t.full,
            "≥ 1.0 GB/s, ≤ 512 MiB",
        ),
        (
            "incremental, changed-extent list",
            |t| &t.incr_list,
            "< 0.3 s",
        ),
        (
            "incremental, no list (hash cmp)",
            |t| &t.incr_hash,
            "≤ 2 s warm",
        ),
        ("restore latest point (raw)", |t| &t.restore, "≥ 1.3 GB/s"),
    ];
    for (name, get, goal) in phases {
        print!("{name:<34}");
        for t in &tools {
            print!(" | {}", fmt_row(get(t)));
        }
        println!(" | {goal}");
    }
    print!("{:<34}", "store size after both points");
    for t in &tools {
        match t.size {
            Some(s) => print!(" | {:>14.3} GB", s as f64 / 1e9),
            None => print!(" | {:>17}", "—"),
        }
    }
    println!(" | ≤ 1.1 GB");
    println!("{sep}");
    for t in &tools {
        for (n, r) in [
            ("full", &t.full),
            ("list", &t.incr_list),
            ("hash", &t.incr_hash),
            ("restore", &t.restore),
        ] {
            if !r.note.is_empty() {
                println!("  {} {n}: {}", t.name, r.note);
            }
        }
    }
    for x in &extra {
        println!("  {x}");
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
