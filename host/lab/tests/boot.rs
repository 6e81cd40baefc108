//! Real boots in QEMU (TCG) of disks built by `tests/lab/make-boot-disk.sh`.
//!
//! These tests need QEMU and the disk-building tools: when one is missing
//! they fail and say to run `tests/lab/setup-qemu.sh` (as root). The first
//! run downloads a Debian kernel package into `target/tools/lab`.
//!
//! Boots are slow under software emulation on a shared machine, so the
//! tests take turns (one QEMU at a time) and allow 90 s per boot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lifeboat_lab::{BootOptions, DiskFormat, LabError, boot_verify, qemu_available};

/// One QEMU at a time: the machine has two cores.
static BOOT_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const SETUP_HINT: &str =
    "run `sudo bash tests/lab/setup-qemu.sh` to install QEMU and the lab tools";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn require_qemu() {
    assert!(
        qemu_available().is_some(),
        "qemu-system-x86_64 is not installed: {SETUP_HINT}"
    );
}

/// Runs one of the tests/lab scripts; panics with its output on failure.
fn lab_script(script: &str, args: &[&std::ffi::OsStr]) {
    let path = repo_root().join("tests/lab").join(script);
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash {}: {e}; {SETUP_HINT}", path.display()));
    assert!(
        out.status.success(),
        "tests/lab/{script} failed ({}):\n{}\n{}\n({SETUP_HINT})",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

fn make_boot_disk(dir: &Path, state: &str) -> PathBuf {
    let disk = dir.join("lab.raw");
    lab_script(
        "make-boot-disk.sh",
        &[disk.as_os_str(), std::ffi::OsStr::new(state)],
    );
    disk
}

fn set_state(disk: &Path, state: &str) {
    lab_script(
        "set-state.sh",
        &[disk.as_os_str(), std::ffi::OsStr::new(state)],
    );
}

async fn boot_ok(disk: &Path, format: DiskFormat) -> lifeboat_lab::BootReport {
    let opts = BootOptions::new(disk, format).with_timeout(BOOT_TIMEOUT);
    let report = boot_verify(&opts)
        .await
        .unwrap_or_else(|e| panic!("booting {} ({format}) failed: {e}", disk.display()));
    eprintln!(
        "booted {} ({format}) in {:.1} s: {}",
        disk.display(),
        report.elapsed.as_secs_f64(),
        report.line
    );
    report
}

/// PIDs of running (not zombie) processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .filter(|pid| is_running(*pid))
        .collect()
}

/// Whether `pid` exists and is not a zombie.
fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Waits until a QEMU process for `disk` shows up and returns its PID.
async fn qemu_pid_for(disk: &Path) -> u32 {
    let needle = format!("file={}", disk.display());
    loop {
        if let Some(pid) = processes_mentioning(&needle).first() {
            return *pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_disk_reports_its_state_and_the_changed_state() {
    require_qemu();
    let dir = tempfile::tempdir().unwrap();
    let disk = make_boot_disk(dir.path(), "first");
    let before = std::fs::read(&disk).unwrap();

    let _turn = BOOT_TURN.lock().await;
    let report = boot_ok(&disk, DiskFormat::Raw).await;
    assert_eq!(report.line, "LIFEBOAT-HEALTH ok state=first");
    assert_eq!(report.console_tail.last(), Some(&report.line));
    assert!(report.elapsed < BOOT_TIMEOUT);
    assert!(
        std::fs::read(&disk).unwrap() == before,
        "booting must not modify the disk (-snapshot)"
    );

    // The guest's data changes: the next boot must show it.
    set_state(&disk, "second");
    let report = boot_ok(&disk, DiskFormat::Raw).await;
    assert_eq!(report.line, "LIFEBOAT-HEALTH ok state=second");

    // The wrong format: QEMU refuses the disk at once, and says why.
    let opts = BootOptions::new(&disk, DiskFormat::Qcow2).with_timeout(BOOT_TIMEOUT);
    match boot_verify(&opts).await {
        Err(LabError::Exited {
            status,
            console_tail,
        }) => {
            assert!(!status.success(), "{status}");
            assert!(
                console_tail
                    .iter()
                    .any(|l| l.starts_with("qemu: ") && l.contains("qcow2")),
                "QEMU's complaint is missing from {console_tail:?}"
            );
        }
        other => panic!("expected QEMU to exit on a raw disk opened as qcow2, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_vhd_conversion_boots_as_vpc() {
    require_qemu();
    let dir = tempfile::tempdir().unwrap();
    let raw = make_boot_disk(dir.path(), "vhd-copy");
    let vhd = dir.path().join("lab.vhd");
    let out = Command::new("qemu-img")
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            "vpc",
            "-o",
            "subformat=fixed,force_size=on",
        ])
        .arg(&raw)
        .arg(&vhd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run qemu-img: {e}; {SETUP_HINT}"));
    assert!(
        out.status.success(),
        "qemu-img convert failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A fixed VHD is the raw data plus a 512-byte footer.
    let raw_len = std::fs::metadata(&raw).unwrap().len();
    assert_eq!(std::fs::metadata(&vhd).unwrap().len(), raw_len + 512);

    let _turn = BOOT_TURN.lock().await;
    let report = boot_ok(&vhd, DiskFormat::Vpc).await;
    assert_eq!(report.line, "LIFEBOAT-HEALTH ok state=vhd-copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_disk_times_out_and_leaves_no_qemu_behind() {
    require_qemu();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("zeros.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(16 * 1024 * 1024)
        .unwrap();

    let _turn = BOOT_TURN.lock().await;

    // 1. The timeout runs out: Timeout, and QEMU is gone by the time
    //    boot_verify returns.
    let timeout = Duration::from_secs(8);
    let opts = BootOptions::new(&disk, DiskFormat::Raw).with_timeout(timeout);
    let started = Instant::now();
    let watcher = tokio::spawn({
        let disk = disk.clone();
        async move { qemu_pid_for(&disk).await }
    });
    let result = boot_verify(&opts).await;
    let took = started.elapsed();
    match &result {
        Err(LabError::Timeout { seconds, .. }) => assert_eq!(*seconds, 8),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        took >= timeout,
        "returned after {took:?}, before the timeout"
    );
    assert!(
        took < timeout + Duration::from_secs(15),
        "returned only after {took:?}"
    );
    let pid = tokio::time::timeout(Duration::from_secs(1), watcher)
        .await
        .expect("the QEMU process was never seen running")
        .unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU (pid {pid}) is still there (running or not reaped) after boot_verify returned"
    );

    // 2. The future is dropped while QEMU runs (kill_on_drop).
    let opts = BootOptions::new(&disk, DiskFormat::Raw).with_timeout(BOOT_TIMEOUT);
    let pid = tokio::select! {
        r = boot_verify(&opts) => panic!("boot_verify of a blank disk returned {r:?}"),
        pid = qemu_pid_for(&disk) => pid,
    };
    // boot_verify's future is dropped here: QEMU gets SIGKILL at once, and
    // tokio reaps it in the background.
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc_dir.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !is_running(pid),
        "QEMU (pid {pid}) still runs 5 s after the boot future was dropped"
    );
    assert!(
        !proc_dir.exists(),
        "QEMU (pid {pid}) was killed but not reaped 5 s after the boot future was dropped"
    );
    assert!(
        processes_mentioning(&format!("file={}", disk.display())).is_empty(),
        "a QEMU for {} is left behind",
        disk.display()
    );
}
