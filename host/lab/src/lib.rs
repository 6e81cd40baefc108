//! The recovery lab: boot a recovered disk in QEMU and read its health line.
//!
//! [`boot_verify`] starts `qemu-system-x86_64` under software emulation (TCG,
//! so no KVM is needed) with no network, no display, the serial console
//! written to a log file and `-snapshot`, so the disk image itself is never
//! modified. It then waits for a console line that starts with a marker
//! (by default [`DEFAULT_MARKER`], `LIFEBOAT-HEALTH`), stops QEMU and
//! returns that line.
//!
//! QEMU is always stopped by its PID before `boot_verify` returns, and also
//! when the returned future is dropped before it finishes.
//!
//! The test disks are built by `tests/lab/make-boot-disk.sh`; QEMU and the
//! tools those scripts need are installed by `tests/lab/setup-qemu.sh`.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// The console line prefix that a lab disk prints when it is healthy.
pub const DEFAULT_MARKER: &str = "LIFEBOAT-HEALTH";

/// Guest memory used unless [`BootOptions::memory_mib`] says otherwise.
pub const DEFAULT_MEMORY_MIB: u32 = 256;

/// How long [`BootOptions::new`] lets a boot take. Software emulation on a
/// loaded machine is slow, so this is generous.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The QEMU system emulator that the lab runs.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";

/// How to install QEMU where it is missing.
pub const QEMU_INSTALL_HINT: &str = "apt-get install -t bookworm-backports qemu-system-x86 qemu-utils \
     (as root; or run `bash tests/lab/setup-qemu.sh`, which also adds bookworm-backports)";

/// How many console lines an error or a report keeps.
const TAIL_LINES: usize = 40;
/// Longest console line kept in a tail, in characters.
const TAIL_LINE_CHARS: usize = 400;
/// How often the console log is read.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long to wait for QEMU to go away after SIGKILL.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);

/// The image format of a disk, as QEMU's `-drive format=` knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskFormat {
    /// A raw image (`raw`).
    Raw,
    /// A VHD image, fixed or dynamic (`vpc`), as Azure and Hyper-V use.
    Vpc,
    /// A VHDX image (`vhdx`).
    Vhdx,
    /// A VMDK image (`vmdk`), as VMware uses.
    Vmdk,
    /// A QCOW2 image (`qcow2`).
    Qcow2,
}

impl DiskFormat {
    /// Every format, in declaration order.
    pub const ALL: [DiskFormat; 5] = [
        DiskFormat::Raw,
        DiskFormat::Vpc,
        DiskFormat::Vhdx,
        DiskFormat::Vmdk,
        DiskFormat::Qcow2,
    ];

    /// The name QEMU uses for this format (`-drive format=…`, `qemu-img -O …`).
    pub fn qemu_name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Vpc => "vpc",
            DiskFormat::Vhdx => "vhdx",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.qemu_name())
    }
}

impl FromStr for DiskFormat {
    type Err = LabError;

    /// Parses QEMU's format names, case-insensitively; `vhd` means `vpc`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        if lower == "vhd" {
            return Ok(DiskFormat::Vpc);
        }
        DiskFormat::ALL
            .into_iter()
            .find(|f| f.qemu_name() == lower)
            .ok_or_else(|| LabError::UnknownFormat(s.to_owned()))
    }
}

/// What to boot and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOptions {
    /// The disk image to boot. It is opened with `-snapshot`: never written.
    pub disk: PathBuf,
    /// The image format of [`BootOptions::disk`].
    pub format: DiskFormat,
    /// How long to wait for the health line, from QEMU's start.
    pub timeout: Duration,
    /// The prefix of the console line to wait for ([`DEFAULT_MARKER`]).
    pub marker: String,
    /// Guest memory in MiB ([`DEFAULT_MEMORY_MIB`]).
    pub memory_mib: u32,
}

impl BootOptions {
    /// Options for booting `disk` in `format` with the default timeout,
    /// marker and memory.
    pub fn new(disk: impl Into<PathBuf>, format: DiskFormat) -> Self {
        BootOptions {
            disk: disk.into(),
            format,
            timeout: DEFAULT_TIMEOUT,
            marker: DEFAULT_MARKER.to_owned(),
            memory_mib: DEFAULT_MEMORY_MIB,
        }
    }

    /// The same options with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// What a successful boot showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootReport {
    /// The whole console line that starts with the marker.
    pub line: String,
    /// Time from QEMU's start until the line was seen.
    pub elapsed: Duration,
    /// The last console lines, ending with [`BootReport::line`].
    pub console_tail: Vec<String>,
}

/// Everything that can go wrong in the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// `qemu-system-x86_64` is not installed (or not on `PATH`).
    #[error("{QEMU_BINARY} was not found: install it with {QEMU_INSTALL_HINT}")]
    QemuMissing,
    /// No line with the marker was seen in time; QEMU has been stopped.
    #[error("no health line within {seconds} s; QEMU was stopped{}", show_tail(.console_tail))]
    Timeout {
        /// The timeout that ran out, in whole seconds.
        seconds: u64,
        /// The last console lines (and QEMU's own messages, as `qemu: …`).
        console_tail: Vec<String>,
    },
    /// QEMU stopped before a line with the marker was seen (the guest
    /// powered off or rebooted, or QEMU refused the disk).
    #[error("QEMU stopped ({status}) before the health line{}", show_tail(.console_tail))]
    Exited {
        /// QEMU's exit status.
        status: ExitStatus,
        /// The last console lines (and QEMU's own messages, as `qemu: …`).
        console_tail: Vec<String>,
    },
    /// The options cannot be used.
    #[error("invalid boot options: {0}")]
    InvalidOptions(String),
    /// A disk format name that QEMU does not know.
    #[error("unknown disk format {0:?} (expected raw, vpc, vhdx, vmdk or qcow2)")]
    UnknownFormat(String),
    /// An I/O error while preparing, running or watching QEMU.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl LabError {
    /// The console lines captured before the failure, if any.
    pub fn console_tail(&self) -> &[String] {
        match self {
            LabError::Timeout { console_tail, .. } | LabError::Exited { console_tail, .. } => {
                console_tail
            }
            _ => &[],
        }
    }
}

fn show_tail(tail: &[String]) -> String {
    if tail.is_empty() {
        "; the console printed nothing".to_owned()
    } else {
        let mut s = String::from("; last console lines:");
        for line in tail {
            s.push_str("\n  | ");
            s.push_str(line);
        }
        s
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> LabError {
    let context = context.into();
    move |source| LabError::Io { context, source }
}

/// The first line of `qemu-system-x86_64 --version`, or `None` when QEMU
/// cannot be run. For a `doctor` check.
pub fn qemu_available() -> Option<String> {
    let out = std::process::Command::new(QEMU_BINARY)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

/// Boots `opts.disk` in QEMU (TCG, no network, `-snapshot`) and waits for a
/// console line starting with `opts.marker`.
///
/// Returns that line with the time it took. QEMU is killed (SIGKILL, by its
/// PID) and reaped before this returns, whatever the outcome; if the future
/// is dropped early, QEMU is killed too.
///
/// # Errors
///
/// [`LabError::QemuMissing`] when QEMU is not installed,
/// [`LabError::Timeout`] when the line did not come in `opts.timeout`,
/// [`LabError::Exited`] when QEMU stopped first, [`LabError::InvalidOptions`]
/// for an empty marker, no memory or a missing disk, and [`LabError::Io`]
/// for I/O failures.
pub async fn boot_verify(opts: &BootOptions) -> Result<BootReport, LabError> {
    boot_verify_with(QEMU_BINARY, opts).await
}

async fn boot_verify_with(qemu: &str, opts: &BootOptions) -> Result<BootReport, LabError> {
    validate(opts)?;
    let work = tempfile::Builder::new()
        .prefix("lifeboat-lab-")
        .tempdir()
        .map_err(io_err(
            "creating a temporary directory for the QEMU console log",
        ))?;
    let log_path = work.path().join("console.log");
    let stderr_path = work.path().join("qemu-stderr.log");
    std::fs::File::create(&log_path).map_err(io_err(format!(
        "creating console log {}",
        log_path.display()
    )))?;
    let stderr_file = std::fs::File::create(&stderr_path)
        .map_err(io_err(format!("creating {}", stderr_path.display())))?;

    let mut cmd = Command::new(qemu);
    cmd.args(qemu_args(opts, &log_path)?)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr_file))
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(LabError::QemuMissing),
        Err(e) => return Err(io_err(format!("starting {qemu}"))(e)),
    };

    let outcome = watch(&mut child, opts, &log_path, started).await;
    let reaped = stop(&mut child).await;
    let outcome = match outcome {
        Ok(report) => Ok(report),
        Err(Watch::Lab(e)) => Err(e),
        Err(Watch::Timeout(mut tail)) => {
            tail.extend(qemu_stderr(&stderr_path).await);
            Err(LabError::Timeout {
                seconds: opts.timeout.as_secs(),
                console_tail: tail,
            })
        }
        Err(Watch::Exited(status, mut tail)) => {
            tail.extend(qemu_stderr(&stderr_path).await);
            Err(LabError::Exited {
                status,
                console_tail: tail,
            })
        }
    };
    // A failure to reap matters only when everything else went well.
    match (outcome, reaped) {
        (Ok(_), Err(e)) => Err(e),
        (outcome, _) => outcome,
    }
}

fn validate(opts: &BootOptions) -> Result<(), LabError> {
    if opts.marker.is_empty() {
        return Err(LabError::InvalidOptions("the marker is empty".into()));
    }
    if opts.marker.contains(['\n', '\r']) {
        return Err(LabError::InvalidOptions(
            "the marker must not contain a line break".into(),
        ));
    }
    if opts.memory_mib == 0 {
        return Err(LabError::InvalidOptions("memory_mib is 0".into()));
    }
    if opts.timeout.is_zero() {
        return Err(LabError::InvalidOptions("the timeout is 0".into()));
    }
    match std::fs::metadata(&opts.disk) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(LabError::InvalidOptions(format!(
            "disk {} is not a file",
            opts.disk.display()
        ))),
        Err(e) => Err(io_err(format!("disk {}", opts.disk.display()))(e)),
    }
}

/// QEMU's arguments (without the program name).
fn qemu_args(opts: &BootOptions, log_path: &Path) -> Result<Vec<String>, LabError> {
    let disk = opts.disk.to_str().ok_or_else(|| {
        LabError::InvalidOptions(format!(
            "disk path {} is not valid UTF-8",
            opts.disk.display()
        ))
    })?;
    let log = log_path.to_str().ok_or_else(|| {
        LabError::InvalidOptions(format!(
            "log path {} is not valid UTF-8",
            log_path.display()
        ))
    })?;
    Ok(vec![
        "-accel".into(),
        "tcg".into(),
        "-m".into(),
        opts.memory_mib.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-name".into(),
        "lifeboat-lab".into(),
        "-nic".into(),
        "none".into(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        format!("file:{log}"),
        "-no-reboot".into(),
        "-snapshot".into(),
        "-drive".into(),
        format!(
            "file={},format={},if=ide,media=disk",
            escape_opt_value(disk),
            opts.format.qemu_name()
        ),
    ])
}

/// QEMU option values double their commas.
fn escape_opt_value(value: &str) -> String {
    value.replace(',', ",,")
}

/// Why watching stopped without a report.
enum Watch {
    Timeout(Vec<String>),
    Exited(ExitStatus, Vec<String>),
    Lab(LabError),
}

async fn watch(
    child: &mut Child,
    opts: &BootOptions,
    log_path: &Path,
    started: Instant,
) -> Result<BootReport, Watch> {
    let mut log = tokio::fs::File::open(log_path)
        .await
        .map_err(|e| Watch::Lab(io_err(format!("opening {}", log_path.display()))(e)))?;
    let mut console = Console::new(&opts.marker);
    let mut buf = Vec::new();
    let deadline = started + opts.timeout;
    loop {
        // Has QEMU stopped? Ask before reading, so that everything it wrote
        // is read below.
        let exited = child
            .try_wait()
            .map_err(|e| Watch::Lab(io_err("waiting for QEMU")(e)))?;
        buf.clear();
        log.read_to_end(&mut buf)
            .await
            .map_err(|e| Watch::Lab(io_err(format!("reading {}", log_path.display()))(e)))?;
        if let Some(line) = console.push(&buf) {
            return Ok(BootReport {
                line,
                elapsed: started.elapsed(),
                console_tail: console.tail(),
            });
        }
        if let Some(status) = exited {
            if let Some(line) = console.finish() {
                return Ok(BootReport {
                    line,
                    elapsed: started.elapsed(),
                    console_tail: console.tail(),
                });
            }
            return Err(Watch::Exited(status, console.tail()));
        }
        let now = Instant::now();
        if now >= deadline {
            console.finish();
            return Err(Watch::Timeout(console.tail()));
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// Kills QEMU by its PID (if it still runs) and reaps it.
async fn stop(child: &mut Child) -> Result<(), LabError> {
    if let Ok(Some(_)) = child.try_wait() {
        return Ok(());
    }
    // start_kill fails only when the process is already gone.
    let _ = child.start_kill();
    match tokio::time::timeout(REAP_TIMEOUT, child.wait()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(io_err("waiting for the killed QEMU")(e)),
        Err(_) => Err(LabError::Io {
            context: format!(
                "QEMU (pid {}) did not stop within {} s of SIGKILL",
                child.id().map_or_else(|| "?".to_owned(), |p| p.to_string()),
                REAP_TIMEOUT.as_secs()
            ),
            source: io::Error::from(io::ErrorKind::TimedOut),
        }),
    }
}

/// QEMU's own messages, as `qemu: …` lines.
async fn qemu_stderr(path: &Path) -> Vec<String> {
    let text = tokio::fs::read(path).await.unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .rev()
        .take(TAIL_LINES)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|l| format!("qemu: {}", clip(l)))
        .collect()
}

fn clip(line: &str) -> String {
    match line.char_indices().nth(TAIL_LINE_CHARS) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_owned(),
    }
}

/// Splits the serial console output into lines, keeps the last few and
/// looks for the marker.
struct Console<'m> {
    marker: &'m str,
    partial: Vec<u8>,
    tail: VecDeque<String>,
}

impl<'m> Console<'m> {
    fn new(marker: &'m str) -> Self {
        Console {
            marker,
            partial: Vec::new(),
            tail: VecDeque::with_capacity(TAIL_LINES),
        }
    }

    /// Adds console bytes; returns the first complete line that starts with
    /// the marker.
    fn push(&mut self, bytes: &[u8]) -> Option<String> {
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..nl]);
            rest = &rest[nl + 1..];
            let raw = std::mem::take(&mut self.partial);
            if let Some(line) = self.line(&raw) {
                return Some(line);
            }
        }
        self.partial.extend_from_slice(rest);
        None
    }

    /// Ends the output: the unfinished last line counts as a line.
    fn finish(&mut self) -> Option<String> {
        let raw = std::mem::take(&mut self.partial);
        self.line(&raw)
    }

    fn line(&mut self, raw: &[u8]) -> Option<String> {
        let text = String::from_utf8_lossy(raw);
        // Serial output ends lines with "\r\n"; a "\r" inside a line returns
        // the cursor, so the text after the last one is what shows.
        let text = text.trim_end_matches('\r');
        let shown = text.rsplit('\r').next().unwrap_or(text);
        let shown = shown.trim_end();
        if shown.is_empty() {
            return None;
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(clip(shown));
        shown.starts_with(self.marker).then(|| shown.to_owned())
    }

    fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_use_qemu_names_and_parse_back() {
        let names: Vec<_> = DiskFormat::ALL.iter().map(|f| f.qemu_name()).collect();
        assert_eq!(names, ["raw", "vpc", "vhdx", "vmdk", "qcow2"]);
        for f in DiskFormat::ALL {
            assert_eq!(f.to_string().parse::<DiskFormat>().unwrap(), f);
        }
        assert_eq!("VHD".parse::<DiskFormat>().unwrap(), DiskFormat::Vpc);
        assert!(matches!(
            "iso".parse::<DiskFormat>(),
            Err(LabError::UnknownFormat(s)) if s == "iso"
        ));
    }

    #[test]
    fn console_finds_whole_marker_line_across_chunks() {
        let mut c = Console::new(DEFAULT_MARKER);
        assert_eq!(c.push(b"\r\nSYSLINUX 6.04\r\n[  1.0] boot"), None);
        assert_eq!(c.push(b"ing\r\nLIFEBOAT-HEALTH ok sta"), None);
        assert_eq!(
            c.push(b"te=first\r\nmore\r\n").as_deref(),
            Some("LIFEBOAT-HEALTH ok state=first")
        );
        assert_eq!(
            c.tail(),
            [
                "SYSLINUX 6.04",
                "[  1.0] booting",
                "LIFEBOAT-HEALTH ok state=first"
            ]
        );
    }

    #[test]
    fn console_marker_must_start_the_line() {
        let mut c = Console::new("LIFEBOAT-HEALTH");
        assert_eq!(c.push(b"echo LIFEBOAT-HEALTH ok\n"), None);
        assert_eq!(c.push(b"LIFEBOAT-HEALTH ok state=x"), None);
        assert_eq!(
            c.finish().as_deref(),
            Some("LIFEBOAT-HEALTH ok state=x"),
            "an unfinished last line counts once QEMU has stopped"
        );
    }

    #[test]
    fn console_tail_is_bounded() {
        let mut c = Console::new(DEFAULT_MARKER);
        for i in 0..(TAIL_LINES + 10) {
            assert_eq!(c.push(format!("line {i}\n").as_bytes()), None);
        }
        let tail = c.tail();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail[0], "line 10");
        assert_eq!(
            tail.last().map(String::as_str),
            Some(format!("line {}", TAIL_LINES + 9).as_str())
        );
    }

    #[test]
    fn drive_argument_escapes_commas_and_names_format() {
        let opts = BootOptions::new("/tmp/a,b.vhd", DiskFormat::Vpc);
        let args = qemu_args(&opts, Path::new("/tmp/log")).unwrap();
        let drive = args
            .iter()
            .position(|a| a == "-drive")
            .map(|i| args[i + 1].clone())
            .unwrap();
        assert_eq!(drive, "file=/tmp/a,,b.vhd,format=vpc,if=ide,media=disk");
        for flag in ["-snapshot", "-no-reboot", "tcg", "file:/tmp/log", "256"] {
            assert!(args.iter().any(|a| a == flag), "{flag} missing in {args:?}");
        }
    }

    #[tokio::test]
    async fn missing_qemu_is_reported_with_the_install_hint() {
        let disk = tempfile::NamedTempFile::new().unwrap();
        let opts = BootOptions::new(disk.path(), DiskFormat::Raw);
        let err = boot_verify_with("lifeboat-no-such-qemu-binary", &opts)
            .await
            .unwrap_err();
        assert!(matches!(err, LabError::QemuMissing), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("apt-get install -t bookworm-backports qemu-system-x86 qemu-utils"),
            "{msg}"
        );
        assert!(msg.contains("tests/lab/setup-qemu.sh"), "{msg}");
    }

    #[tokio::test]
    async fn bad_options_are_refused_before_starting_qemu() {
        let disk = tempfile::NamedTempFile::new().unwrap();
        let mut opts = BootOptions::new(disk.path(), DiskFormat::Raw);
        opts.marker.clear();
        assert!(matches!(
            boot_verify_with("lifeboat-no-such-qemu-binary", &opts).await,
            Err(LabError::InvalidOptions(_))
        ));
        let opts = BootOptions::new("/nonexistent/lifeboat/disk.raw", DiskFormat::Raw);
        let err = boot_verify_with("lifeboat-no-such-qemu-binary", &opts)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, LabError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(err.to_string().contains("/nonexistent/lifeboat/disk.raw"));
    }

    #[test]
    fn errors_show_the_console_tail() {
        let err = LabError::Timeout {
            seconds: 8,
            console_tail: vec!["SYSLINUX 6.04".into(), "Boot failed".into()],
        };
        let msg = err.to_string();
        assert!(msg.contains("within 8 s"), "{msg}");
        assert!(msg.contains("  | Boot failed"), "{msg}");
        assert_eq!(err.console_tail().len(), 2);
    }
}
