//! Ready-made replication steps for source plugins: `ship` (a capture step's
//! disks into the vault, staged) and `snapshot` (seal them into one recovery
//! point recording the VM's configuration). A source plugin writes `discover`
//! and `capture` for its platform and lists [`Ship`] and [`Snapshot`] (and
//! [`crate::retention::Retention`]) among its steps, so every source has the
//! same replication shape: discover → capture → ship → snapshot → retention.

use serde::{Deserialize, Serialize};

use crate::transfer::{self, Changes};
use crate::{Action, Context, Outputs, Plan, Step, StepError, StepInfo, field};

/// Bytes as MiB (GiB from 10 GiB), for summaries.
pub fn mib(b: u64) -> String {
    if b >= 10 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

/// One disk as a capture step found it. Capture steps may add fields of their
/// own; these are the ones `ship` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapturedDisk {
    /// The disk's name inside recovery points, e.g. `scsi0:0`.
    pub name: String,
    /// The image's path inside the site.
    pub path: String,
    /// Where its changes come from.
    pub changes: Changes,
    /// Bytes the host will read (an upper bound for hash comparison).
    pub bytes: u64,
    /// One human line: where the changes come from.
    pub source: String,
}

/// The `read` action a capture step plans for one disk: where its changes come
/// from and how much the host will read (the caller attaches its payload).
pub fn capture_action(vm: &str, disk: &str, path: &str, source: &str, bytes: u64) -> Action {
    Action::read(
        format!("vm/{vm}/disk/{disk}"),
        format!("{disk} ({path}): {source}, {} to read", mib(bytes)),
    )
}

/// A capture step's `mode` input: `auto` (or empty), `full` or `hash`.
pub fn check_mode(mode: &str) -> Result<(), StepError> {
    if ["", "auto", "full", "hash"].contains(&mode) {
        Ok(())
    } else {
        Err(StepError::invalid_input(format!(
            "mode {mode:?} is not one of auto, full, hash"
        )))
    }
}

/// The VM's latest point (of `points`, oldest first) holding disk `disk` at
/// `size` bytes: what an incremental capture of that disk builds on.
pub fn previous_point<'a>(
    points: &'a [transfer::PointInfo],
    disk: &str,
    size: u64,
) -> Option<&'a transfer::PointInfo> {
    points.iter().rev().find(|p| {
        p.disks
            .iter()
            .any(|x| x.name == disk && x.virtual_size == size)
    })
}

/// The name of a VM given as `discover` returns it (an object with `name`) or as a string.
pub fn vm_name(vm: &serde_json::Value) -> Result<String, StepError> {
    match vm {
        serde_json::Value::String(s) if !s.is_empty() => Ok(s.clone()),
        serde_json::Value::Object(o) => match o.get("name") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(StepError::invalid_input(
                "`vm` is an object without a `name`; give what `discover` returns",
            )),
        },
        _ => Err(StepError::invalid_input(
            "`vm` must be what `discover` returns (an object with a `name`)",
        )),
    }
}

/// Inputs of [`Ship`].
#[derive(Deserialize)]
pub struct ShipIn {
    site: String,
    vm: serde_json::Value,
    disks: Vec<CapturedDisk>,
}

/// `ship`: the captured extents of every disk into the vault, staged until `snapshot`.
pub struct Ship;

impl Step for Ship {
    type Input = ShipIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "ship",
            "Ship the captured extents of every disk into the workflow's vault (staged until `snapshot`)",
        )
        .input(field::string("site").required().doc("The site holding the VM's disks"))
        .input(field::object("vm").required().doc("The VM, as `discover` returns it"))
        .input(field::list("disks").required().doc("What `capture` found"))
        .output(field::list("staged").doc("Staged disk ids, for `snapshot`"))
        .output(field::integer("bytes_read").doc("Bytes read from the disks"))
        .output(field::integer("bytes_new").doc("Bytes the vault did not hold yet"))
        .output(field::integer("bytes_stored").doc("Bytes written to the vault (compressed, encrypted)"))
    }
    fn plan(_: &Context, i: ShipIn) -> Result<Plan, StepError> {
        let vm = vm_name(&i.vm)?;
        if i.disks.is_empty() {
            return Err(StepError::invalid_input("no disks to ship"));
        }
        let total: u64 = i.disks.iter().map(|d| d.bytes).sum();
        let parts: Vec<String> = i
            .disks
            .iter()
            .map(|d| format!("{} {}", d.name, mib(d.bytes)))
            .collect();
        Ok(Plan::new()
            .action(
                Action::transfer(
                    format!("vault/{vm}"),
                    format!(
                        "ship {} disks of {vm} into the vault, up to {} ({})",
                        i.disks.len(),
                        mib(total),
                        parts.join(", ")
                    ),
                )
                .payload(&i.disks),
            )
            .output_after_apply("staged")
            .output_after_apply("bytes_read")
            .output_after_apply("bytes_new")
            .output_after_apply("bytes_stored"))
    }
    fn apply(_: &Context, i: ShipIn, _: &Action) -> Result<Outputs, StepError> {
        let vm = vm_name(&i.vm)?;
        let (mut staged, mut read, mut new, mut stored) = (Vec::new(), 0u64, 0u64, 0u64);
        for d in &i.disks {
            let r = transfer::ship(&vm, &d.name, &i.site, &d.path, &d.changes)?;
            crate::log::info(
                "shipped",
                &[
                    ("vm", &vm),
                    ("disk", &d.name),
                    ("bytes_read", &r.bytes_read.to_string()),
                    ("bytes_new", &r.bytes_new.to_string()),
                    ("bytes_stored", &r.bytes_stored.to_string()),
                ],
            );
            staged.push(r.staged);
            read += r.bytes_read;
            new += r.bytes_new;
            stored += r.bytes_stored;
        }
        Ok(Outputs::new()
            .set("staged", &staged)
            .set("bytes_read", read)
            .set("bytes_new", new)
            .set("bytes_stored", stored))
    }
}

/// `crash` or `app`, from a `consistency` input.
pub fn consistency(c: &str) -> Result<&'static str, StepError> {
    match c {
        "" | "crash" => Ok("crash"),
        "app" => Ok("app"),
        other => Err(StepError::invalid_input(format!(
            "consistency {other:?} is neither `crash` nor `app`"
        ))),
    }
}

/// Inputs of [`Snapshot`].
#[derive(Deserialize)]
pub struct SnapshotIn {
    vm: serde_json::Value,
    staged: Vec<String>,
    #[serde(default)]
    consistency: String,
}

/// `snapshot`: seal the staged disks into one recovery point whose `meta` is
/// the VM as `discover` returned it (what a failover rebuilds it from).
pub struct Snapshot;

impl Step for Snapshot {
    type Input = SnapshotIn;
    fn info() -> StepInfo {
        StepInfo::new(
            "snapshot",
            "Seal the shipped disks into one immutable recovery point that records the VM's configuration",
        )
        .input(field::object("vm").required().doc("The VM, as `discover` returns it"))
        .input(field::list("staged").required().doc("`ship`'s staged disk ids"))
        .input(field::string("consistency").doc("crash (default) or app"))
        .output(field::string("point").doc("The recovery point's id"))
        .output(field::string("created").doc("When it was sealed (RFC 3339)"))
    }
    fn plan(_: &Context, i: SnapshotIn) -> Result<Plan, StepError> {
        let vm = vm_name(&i.vm)?;
        let c = consistency(&i.consistency)?;
        Ok(Plan::new()
            .action(Action::create(
                format!("point/{vm}"),
                format!(
                    "seal a {c}-consistent recovery point of {vm} ({} disks)",
                    i.staged.len()
                ),
            ))
            .output_after_apply("point")
            .output_after_apply("created"))
    }
    fn apply(_: &Context, i: SnapshotIn, _: &Action) -> Result<Outputs, StepError> {
        let vm = vm_name(&i.vm)?;
        let c = consistency(&i.consistency)?;
        let p = transfer::seal(&vm, &i.staged, c, &i.vm)?;
        Ok(Outputs::new()
            .set("point", &p.id)
            .set("created", &p.created))
    }
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`, from any platform's spelling
/// (`00155D010203`, `00-0D-3A-2B-4C-5D`, `00:50:56:…`); the error names `field`.
pub fn mac(field: &str, raw: &str) -> Result<String, String> {
    let hex: String = raw.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    if hex.len() != 12
        || raw
            .chars()
            .any(|c| !c.is_ascii_hexdigit() && c != ':' && c != '-')
    {
        return Err(format!("{field} {raw:?} is not 12 hex digits"));
    }
    let lower = hex.to_ascii_lowercase();
    Ok((0..6)
        .map(|i| &lower[i * 2..i * 2 + 2])
        .collect::<Vec<_>>()
        .join(":"))
}

/// What [`find_disk`] found.
pub enum Found {
    /// The first candidate the host could open: its site path and description.
    Disk(String, transfer::DiskInfo),
    /// None exists; the host's message for the last one, if any.
    Missing(Option<String>),
}

/// The first of `candidates` (site paths, most likely first) that is a disk
/// image in `site`. Only `not-found` moves on to the next candidate; any
/// other error (a broken image, a denied path) is returned as it is.
pub fn find_disk(site: &str, candidates: &[String]) -> Result<Found, StepError> {
    let mut last = None;
    for c in candidates {
        match transfer::inspect_disk(site, c) {
            Ok(info) => return Ok(Found::Disk(c.clone(), info)),
            Err(e) if e.code == "not-found" => last = Some(e.message),
            Err(e) => return Err(e),
        }
    }
    Ok(Found::Missing(last))
}
