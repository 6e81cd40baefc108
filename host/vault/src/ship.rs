//! Ship: read changed chunks of a disk, dedup, compress, encrypt, pack, upload, and seal
//! a recovery point — all stages in parallel with bounded memory.
//!
//! ```text
//!  N workers (one per core) ──results──► collector (tables) ─┐
//!   each: read 256 KiB of the      fills tables,             │ table blobs
//!   source (own reader), zero      finishes them ────────────┤
//!   check, keyed BLAKE3, dedup,                              ▼
//!   zstd, AES-GCM ──────────── chunk blobs ────────────► packer ──packs──► 4 uploaders
//!                                                                        (pack, then index)
//! ```
//! Memory: per-worker read buffers, bounded channels, and at most a few packs in flight,
//! whatever the disk size; tables (16384 slots) are held only while being filled. For a
//! local folder the packer appends each blob to its pack's temporary file as it
//! arrives and hands the buffer straight back to the workers (warm, and no fresh pages
//! to fault in); the uploaders then only sync and rename closed packs. The last pack is
//! synced together with the last index file and the manifest
//! ([`crate::Inner::commit_ship`]). For object stores the packer collects a pack's blob
//! buffers and an uploader sends them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::backend::{Durability, TmpObject};
use crate::error::{Result, VaultError};
use crate::extents::{Action, Extent, ExtentKind, plan_chunks, qcow2_dirty_extents};
use crate::format::{
    ChangeRecord, Consistency, DiskManifest, ExtentRecord, Id, Index, KIND_CHUNK, KIND_TABLE,
    Manifest, PackRecord, ZERO_ID, decode_table, encode_table, pack_path, point_aad, point_path,
    staged_aad, staged_path,
};
use crate::pack::{BlobEncoder, Packer};
use crate::timing::Timing;
use crate::{Inner, Vault, lock};

/// Where the changed extents of a ship come from.
#[derive(Debug, Clone)]
pub enum ChangedSource {
    /// First full copy: every allocated extent of the source (its allocation map).
    Full,
    /// Changed extents supplied by the caller (VMware CBT, Hyper-V RCT, Azure page-range
    /// diff, …), applied to the latest point of the same VM and disk.
    List(Vec<Extent>),
    /// No change list: read every allocated extent and compare chunk hashes with the
    /// vault (the given point is recorded as the parent).
    SincePoint(String),
    /// The dirty extents of a qcow2 persistent bitmap, read through qemu-nbd block
    /// status, applied to the latest point of the same VM and disk.
    Bitmap { name: String },
}

/// Progress of a ship: bytes of planned chunks processed so far.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Progress {
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// Progress callback (called from a worker thread; keep it short).
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// What to ship.
#[derive(Clone)]
pub struct ShipRequest {
    pub vm: String,
    pub disk_name: String,
    /// Path of the source image (any format lifeboat-disk reads).
    pub source: PathBuf,
    pub changed: ChangedSource,
    pub consistency: Consistency,
    pub progress: Option<ProgressFn>,
    /// Stage the disk (`staged/<id>`) instead of sealing a one-disk point; several
    /// staged disks become one recovery point with [`crate::Vault::seal`].
    pub stage: bool,
}

impl std::fmt::Debug for ShipRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShipRequest")
            .field("vm", &self.vm)
            .field("disk_name", &self.disk_name)
            .field("source", &self.source)
            .field("changed", &self.changed)
            .field("consistency", &self.consistency)
            .finish_non_exhaustive()
    }
}

impl ShipRequest {
    /// A crash-consistent ship without progress reporting.
    pub fn new(
        vm: &str,
        disk_name: &str,
        source: impl Into<PathBuf>,
        changed: ChangedSource,
    ) -> ShipRequest {
        ShipRequest {
            vm: vm.to_string(),
            disk_name: disk_name.to_string(),
            source: source.into(),
            changed,
            consistency: Consistency::Crash,
            progress: None,
            stage: false,
        }
    }
}

/// The outcome of a ship.
#[derive(Debug, Clone, Serialize)]
pub struct ShipReport {
    /// The new point's id, or the staged disk's id when the request staged it.
    pub point: String,
    /// Whether `point` names a staged disk (see [`ShipRequest::stage`]).
    pub staged: bool,
    pub vm: String,
    pub disk: String,
    pub parent: Option<String>,
    /// `full`, `list`, `since-point` or `bitmap`.
    pub changes: String,
    pub virtual_size: u64,
    /// Extents the change source gave.
    pub extents: usize,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes read that were all zeros (not stored).
    pub bytes_zero: u64,
    /// Bytes of chunks the vault already held.
    pub bytes_deduped: u64,
    /// Bytes of new chunks (before compression).
    pub bytes_new: u64,
    /// Bytes written to the vault (packs, compressed and encrypted).
    pub bytes_stored: u64,
    pub chunks_read: u64,
    pub chunks_new: u64,
    pub packs: u64,
    pub seconds: f64,
}

#[derive(Default)]
struct Stats {
    bytes_read: AtomicU64,
    bytes_zero: AtomicU64,
    bytes_deduped: AtomicU64,
    bytes_new: AtomicU64,
    bytes_stored: AtomicU64,
    chunks_read: AtomicU64,
    chunks_new: AtomicU64,
    packs: AtomicU64,
}

fn check_name(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > 200 || s.chars().any(|c| c.is_control()) {
        return Err(VaultError::InvalidRequest(format!("bad {what} name {s:?}")));
    }
    Ok(())
}

pub(crate) async fn ship(vault: &Vault, req: ShipRequest) -> Result<ShipReport> {
    check_name("VM", &req.vm)?;
    check_name("disk", &req.disk_name)?;
    let lock = lock::acquire(&vault.inner, false).await?;
    let r = ship_locked(vault, req).await;
    let rel = lock.release().await;
    let report = r?;
    rel?;
    Ok(report)
}

enum Mode {
    Allocation,
    List(Vec<Extent>),
    Bitmap(String),
}

async fn ship_locked(vault: &Vault, req: ShipRequest) -> Result<ShipReport> {
    let t0 = Instant::now();
    let phases = Timing::new("ship phases");
    let mut watch = phases.watch();
    let inner = vault.inner.clone();
    let index = Arc::new(inner.load_index().await?);
    watch.lap("load index");
    let mans = inner.manifests(Some(&req.vm)).await?;
    watch.lap("read manifests");
    let latest = mans
        .iter()
        .rev()
        .find(|m| m.disks.iter().any(|d| d.name == req.disk_name))
        .cloned();
    let disk_of = |m: &Manifest| m.disks.iter().find(|d| d.name == req.disk_name).cloned();
    let (parent, base, mode, kind) = match req.changed {
        ChangedSource::Full => (latest, None, Mode::Allocation, "full"),
        ChangedSource::SincePoint(p) => {
            let m = inner.resolve(Some(&req.vm), &p).await?;
            if disk_of(&m).is_none() {
                return Err(VaultError::NotFound(format!(
                    "point {} has no disk {:?}",
                    m.id, req.disk_name
                )));
            }
            (Some(m), None, Mode::Allocation, "since-point")
        }
        ChangedSource::List(_) | ChangedSource::Bitmap { .. } if latest.is_none() => {
            return Err(VaultError::InvalidRequest(format!(
                "VM {:?} disk {:?} has no previous point to apply changed extents to: ship it in full first",
                req.vm, req.disk_name
            )));
        }
        ChangedSource::List(l) => {
            let b = latest.as_ref().and_then(disk_of);
            (latest, b, Mode::List(l), "list")
        }
        ChangedSource::Bitmap { name } => {
            let b = latest.as_ref().and_then(disk_of);
            (latest, b, Mode::Bitmap(name), "bitmap")
        }
    };
    let stats = Arc::new(Stats::default());
    let rt = tokio::runtime::Handle::current();
    let out = {
        let inner = inner.clone();
        let stats = stats.clone();
        let source = req.source.clone();
        let progress = req.progress.clone();
        tokio::task::spawn_blocking(move || {
            pipeline(&inner, &index, &source, mode, base, progress, &stats, &rt)
        })
        .await
        .map_err(|e| VaultError::Internal(format!("ship pipeline: {e}")))??
    };
    watch.lap("pipeline");
    let cfg = &inner.config;
    let id = crate::crypto::random_hex(8)?;
    let manifest = Manifest {
        version: 1,
        id: id.clone(),
        vm: req.vm.clone(),
        created: crate::now_rfc3339(),
        consistency: req.consistency,
        parent: parent.as_ref().map(|p| p.id.clone()),
        meta: None,
        disks: vec![DiskManifest {
            name: req.disk_name.clone(),
            source_format: out.format,
            virtual_size: out.virtual_size,
            sector_size: 512,
            chunk_size: cfg.chunk_size,
            table_slots: cfg.table_slots,
            data_bytes: out.data_bytes,
            changes: ChangeRecord {
                source: kind.to_string(),
                bitmap: out.bitmap,
                extents: out
                    .extents
                    .iter()
                    .map(|e| ExtentRecord {
                        offset: e.offset,
                        length: e.length,
                        kind: match e.kind {
                            ExtentKind::Data => "data".into(),
                            ExtentKind::Cleared => "cleared".into(),
                        },
                    })
                    .collect(),
            },
            tables: out.tables.iter().map(hex::encode).collect(),
        }],
    };
    let plain = serde_json::to_vec(&manifest).map_err(|e| VaultError::Internal(e.to_string()))?;
    let (path, aad) = if req.stage {
        (staged_path(&id), staged_aad(&id))
    } else {
        (point_path(&id), point_aad(&id))
    };
    inner
        .commit_ship(out.last_pack, out.unindexed, path, aad, plain)
        .await?;
    watch.lap("write manifest");
    drop(watch);
    phases.report();
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Ok(ShipReport {
        point: id,
        staged: req.stage,
        vm: req.vm,
        disk: req.disk_name,
        parent: manifest.parent,
        changes: kind.into(),
        virtual_size: out.virtual_size,
        extents: out.extents.len(),
        bytes_read: g(&stats.bytes_read),
        bytes_zero: g(&stats.bytes_zero),
        bytes_deduped: g(&stats.bytes_deduped),
        bytes_new: g(&stats.bytes_new),
        bytes_stored: g(&stats.bytes_stored),
        chunks_read: g(&stats.chunks_read),
        chunks_new: g(&stats.chunks_new),
        packs: g(&stats.packs),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// A closed pack on its way to storage.
enum PackOut {
    /// Its parts (blobs, header, trailer), for an object store.
    Parts(Vec<Vec<u8>>, PackRecord),
    /// A local folder's pack, already written to its temporary file by the packer: it
    /// still has to be synced and renamed. The ship's last pack (`true`) is left to
    /// [`crate::Inner::commit_ship`], which syncs it together with the last index file
    /// and the manifest.
    Streamed(TmpObject, PackRecord, bool),
}

const UPLOADERS: usize = 4;
/// A local folder's open pack is synced in the background after every this many bytes.
const PACK_FLUSH_EVERY: usize = 4 << 20;
/// Stored packs are listed in a new index file every this many packs.
const INDEX_EVERY: usize = 8;

struct PipeOut {
    virtual_size: u64,
    format: String,
    extents: Vec<Extent>,
    bitmap: Option<String>,
    tables: Vec<Id>,
    data_bytes: u64,
    /// Stored packs that no index file lists yet.
    unindexed: Vec<PackRecord>,
    /// A local folder's last pack, written but not synced or named yet.
    last_pack: Option<(TmpObject, PackRecord)>,
}

/// Chunks read with one call (256 KiB at 64 KiB chunks: small enough to stay in the
/// worker's L2 cache until they are hashed and compressed).
const JOB_CHUNKS: u64 = 4;

/// Hands out the planned reads in plan order, up to [`JOB_CHUNKS`] chunks at a time.
struct Jobs<'a> {
    plan: &'a [(u64, u64, Action)],
    /// Current plan entry, and the next slot to read in it (`None`: its start).
    i: usize,
    at: Option<u64>,
}

impl Jobs<'_> {
    /// The next read: first slot and number of slots.
    fn next(&mut self) -> Option<(u64, u64)> {
        loop {
            let &(s, e, a) = self.plan.get(self.i)?;
            let from = self.at.unwrap_or(s);
            if a != Action::Read || from >= e {
                self.i += 1;
                self.at = None;
                continue;
            }
            let n = JOB_CHUNKS.min(e - from);
            self.at = Some(from + n);
            return Some((from, n));
        }
    }
}

struct Done {
    slot: u64,
    id: Id,
    len: u64,
}
struct Blob {
    kind: u8,
    id: Id,
    env: Vec<u8>,
    raw_len: u32,
}

pub(crate) fn is_zero(b: &[u8]) -> bool {
    let mut it = b.chunks_exact(256);
    for c in &mut it {
        if c.iter().fold(0u8, |a, &x| a | x) != 0 {
            return false;
        }
    }
    it.remainder().iter().all(|&x| x == 0)
}

/// First error wins; everyone else stops.
pub(crate) struct Failure {
    cancel: AtomicBool,
    first: Mutex<Option<VaultError>>,
}
impl Failure {
    pub(crate) fn new() -> Failure {
        Failure {
            cancel: AtomicBool::new(false),
            first: Mutex::new(None),
        }
    }
    /// The first error, if any.
    pub(crate) fn take(&self) -> Option<VaultError> {
        self.first.lock().ok().and_then(|mut f| f.take())
    }
    pub(crate) fn set(&self, e: VaultError) {
        if let Ok(mut f) = self.first.lock()
            && f.is_none()
        {
            *f = Some(e);
        }
        self.cancel.store(true, Ordering::SeqCst);
    }
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

#[allow(clippy::too_many_arguments)]
fn pipeline(
    inner: &Inner,
    index: &Index,
    source: &std::path::Path,
    mode: Mode,
    base: Option<DiskManifest>,
    progress: Option<ProgressFn>,
    stats: &Stats,
    rt: &tokio::runtime::Handle,
) -> Result<PipeOut> {
    let cfg = &inner.config;
    let cs = u64::from(cfg.chunk_size);
    let ts = u64::from(cfg.table_slots);
    let mut disk = lifeboat_disk::open(source)?;
    let vs = disk.virtual_size();
    let format = disk.format().to_string();
    if let Some(b) = &base {
        if b.virtual_size != vs {
            return Err(VaultError::InvalidRequest(format!(
                "the disk's size changed ({} → {vs} bytes) since the previous point: ship it in full",
                b.virtual_size
            )));
        }
        if u64::from(b.chunk_size) != cs || u64::from(b.table_slots) != ts {
            return Err(VaultError::InvalidRequest(
                "previous point uses another chunk layout: ship in full".into(),
            ));
        }
    }
    let mut bitmap = None;
    let extents: Vec<Extent> = match mode {
        Mode::Allocation => disk
            .allocation()?
            .into_iter()
            .filter(|e| e.kind == ExtentKind::Data)
            .collect(),
        Mode::List(l) => l,
        Mode::Bitmap(name) => {
            let l = qcow2_dirty_extents(source, &name)?;
            bitmap = Some(name);
            l
        }
    };
    let plan = plan_chunks(&extents, vs, cs)?;
    let nslots = vs.div_ceil(cs);
    let ntables = usize::try_from(nslots.div_ceil(ts))
        .map_err(|_| VaultError::InvalidRequest("disk too large".into()))?;
    let slot_len = |slot: u64| cs.min(vs - slot * cs);
    let mut pending = vec![0u32; ntables];
    let mut touched = vec![false; ntables];
    let mut total = 0u64;
    for &(s, e, a) in &plan {
        let mut t = s / ts;
        while t * ts < e {
            let lo = s.max(t * ts);
            let hi = e.min((t + 1) * ts);
            touched[t as usize] = true;
            if a == Action::Read {
                pending[t as usize] += (hi - lo) as u32;
            }
            t += 1;
        }
        if a == Action::Read {
            total += (s..e).map(slot_len).sum::<u64>();
        }
    }
    let base_tables: Vec<Id> = match &base {
        Some(b) => {
            if b.tables.len() != ntables {
                return Err(VaultError::corrupt(
                    "previous point",
                    format!("{} tables for {ntables} expected", b.tables.len()),
                ));
            }
            b.tables
                .iter()
                .map(|h| {
                    let mut id = [0u8; 32];
                    hex::decode_to_slice(h, &mut id).map_err(|_| {
                        VaultError::corrupt("previous point", format!("bad table id {h:?}"))
                    })?;
                    Ok(id)
                })
                .collect::<Result<_>>()?
        }
        None => Vec::new(),
    };

    let workers = crate::timing::workers();
    // every worker reads its own jobs through its own reader: reads run in parallel,
    // and a job's bytes are still in that core's cache when they are hashed and
    // compressed (no reader thread handing buffers over)
    let mut readers = vec![disk];
    for _ in 1..workers {
        readers.push(lifeboat_disk::open(source)?);
    }
    let jobs = Mutex::new(Jobs {
        plan: &plan,
        i: 0,
        at: None,
    });
    // deep queues (a few MiB): a worker must not stall whenever the packer or the
    // collector is not scheduled, which on a busy machine is most of the time
    let (res_tx, res_rx) = crossbeam_channel::bounded::<Vec<Done>>(workers * 32);
    let (blob_tx, blob_rx) = crossbeam_channel::bounded::<Blob>(workers * 64);
    // blob buffers go back to the workers once their pack is stored
    let (blob_free_tx, blob_free_rx) = crossbeam_channel::bounded::<Vec<u8>>(workers * 64 + 16);
    let (pack_tx, pack_rx) = crossbeam_channel::bounded::<PackOut>(1);
    let fail = Failure {
        cancel: AtomicBool::new(false),
        first: Mutex::new(None),
    };
    let new_ids: Mutex<HashSet<Id>> = Mutex::new(HashSet::new());
    // stored packs not yet listed in an index file (shared by the uploaders)
    let unindexed: Mutex<Vec<crate::format::PackRecord>> = Mutex::new(Vec::new());
    // a local folder's last pack, written but not yet synced (see PackOut::Streamed)
    let last_pack: Mutex<Option<(TmpObject, PackRecord)>> = Mutex::new(None);
    let crypto = &inner.crypto;
    let level = cfg.compression.level;
    let timing = Timing::new("ship");

    let collected = std::thread::scope(|sc| {
        // workers: read, zero check, keyed BLAKE3, dedup, zstd, AES-GCM
        for mut disk in readers {
            let res_tx = res_tx.clone();
            let blob_tx = blob_tx.clone();
            let blob_free_rx = blob_free_rx.clone();
            let fail = &fail;
            let new_ids = &new_ids;
            let jobs = &jobs;
            let timing = &timing;
            sc.spawn(move || {
                let mut w = timing.watch();
                let r = (|| -> Result<()> {
                    let mut enc = BlobEncoder::new(level)?;
                    let mut buf = vec![0u8; (cs * JOB_CHUNKS) as usize];
                    loop {
                        if fail.cancelled() {
                            return Ok(());
                        }
                        let job = jobs.lock().ok().and_then(|mut j| j.next());
                        let Some((slot, n)) = job else { return Ok(()) };
                        let len = (((slot + n) * cs).min(vs) - slot * cs) as usize;
                        w.lap("wait");
                        disk.read_at(slot * cs, &mut buf[..len])?;
                        w.lap("read");
                        let mut done = Vec::with_capacity(n as usize);
                        let (mut zero, mut dedup, mut new, mut nnew) = (0u64, 0u64, 0u64, 0u64);
                        for (k, data) in buf[..len].chunks(cs as usize).enumerate() {
                            let dlen = data.len() as u64;
                            let id = if is_zero(data) {
                                zero += dlen;
                                ZERO_ID
                            } else {
                                let id = crypto.id(data);
                                w.lap("hash");
                                let fresh = !index.blobs.contains_key(&id)
                                    && new_ids.lock().map(|mut s| s.insert(id)).unwrap_or(false);
                                if fresh {
                                    let mut env = blob_free_rx.try_recv().unwrap_or_default();
                                    enc.encode_into(crypto, KIND_CHUNK, &id, data, &mut env)?;
                                    w.lap("compress+encrypt");
                                    new += dlen;
                                    nnew += 1;
                                    blob_tx
                                        .send(Blob {
                                            kind: KIND_CHUNK,
                                            id,
                                            env,
                                            raw_len: data.len() as u32,
                                        })
                                        .map_err(|_| {
                                            VaultError::Internal("packer stopped".into())
                                        })?;
                                    w.lap("wait");
                                } else {
                                    dedup += dlen;
                                }
                                id
                            };
                            done.push(Done {
                                slot: slot + k as u64,
                                id,
                                len: dlen,
                            });
                        }
                        stats.bytes_read.fetch_add(len as u64, Ordering::Relaxed);
                        stats.chunks_read.fetch_add(n, Ordering::Relaxed);
                        stats.bytes_zero.fetch_add(zero, Ordering::Relaxed);
                        stats.bytes_deduped.fetch_add(dedup, Ordering::Relaxed);
                        stats.bytes_new.fetch_add(new, Ordering::Relaxed);
                        stats.chunks_new.fetch_add(nnew, Ordering::Relaxed);
                        res_tx
                            .send(done)
                            .map_err(|_| VaultError::Internal("collector stopped".into()))?;
                        w.lap("wait");
                    }
                })();
                if let Err(e) = r {
                    fail.set(e);
                }
            });
        }
        drop(res_tx);
        drop(blob_free_rx);
        // packer: for a local folder it writes each blob into the pack's temporary file
        // as it arrives (the buffer goes straight back to the workers, still warm, and
        // the pack is mostly written when it closes); otherwise it collects the blobs
        // for the uploaders
        {
            let fail = &fail;
            let timing = &timing;
            let blob_free_tx = blob_free_tx.clone();
            let local = inner.backend.local().cloned();
            // flusher: syncs the open pack every PACK_FLUSH_EVERY bytes through a second
            // handle, so that the disk writes while the workers compute and the sync
            // that closes a pack (the last one is on the critical path) finds little left
            let (flush_tx, flush_rx) = crossbeam_channel::bounded::<std::fs::File>(1);
            sc.spawn(move || {
                for f in flush_rx.iter() {
                    let _ = f.sync_data(); // errors surface in the pack's own sync
                }
            });
            sc.spawn(move || {
                let mut w = timing.watch();
                let r = (|| -> Result<()> {
                    let mut packer = Packer::new(cfg.pack_size as usize)?;
                    let mut tmp: Option<TmpObject> = None;
                    let mut unflushed = 0usize;
                    let finish_streamed = |packer: &mut Packer,
                                           tmp: &mut Option<TmpObject>,
                                           last: bool|
                     -> Result<_> {
                        let Some((parts, rec)) = packer.finish(crypto)? else {
                            return Ok(None);
                        };
                        let Some(mut t) = tmp.take() else {
                            return Err(VaultError::Internal("pack file missing".into()));
                        };
                        let slices: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
                        t.append(&slices)?;
                        Ok(Some(PackOut::Streamed(t, rec, last)))
                    };
                    let send = |p: PackOut| {
                        pack_tx
                            .send(p)
                            .map_err(|_| VaultError::Internal("uploader stopped".into()))
                    };
                    for b in blob_rx.iter() {
                        w.lap("packer wait");
                        let p = match &local {
                            Some(l) => {
                                let t = match tmp.as_mut() {
                                    Some(t) => t,
                                    None => tmp.insert(l.create_tmp("pack", "pack")?),
                                };
                                t.append(&[&b.env])?;
                                unflushed += b.env.len();
                                if unflushed >= PACK_FLUSH_EVERY {
                                    unflushed = 0;
                                    if let Some(f) = t.try_clone_file() {
                                        let _ = flush_tx.try_send(f);
                                    }
                                }
                                let full =
                                    packer.add_entry(b.kind, b.id, b.env.len(), b.raw_len)?;
                                let mut env = b.env;
                                env.clear();
                                let _ = blob_free_tx.try_send(env);
                                if full {
                                    finish_streamed(&mut packer, &mut tmp, false)?
                                } else {
                                    None
                                }
                            }
                            None => packer
                                .add(crypto, b.kind, b.id, b.env, b.raw_len)?
                                .map(|(parts, rec)| PackOut::Parts(parts, rec)),
                        };
                        w.lap("pack");
                        if let Some(p) = p {
                            send(p)?;
                            w.lap("packer wait");
                        }
                    }
                    if !fail.cancelled() {
                        let p = match &local {
                            Some(_) => finish_streamed(&mut packer, &mut tmp, true)?,
                            None => packer
                                .finish(crypto)?
                                .map(|(parts, rec)| PackOut::Parts(parts, rec)),
                        };
                        if let Some(p) = p {
                            send(p)?;
                        }
                    }
                    Ok(())
                })();
                if let Err(e) = r {
                    fail.set(e);
                }
            });
        }
        // uploaders: a pack is indexed only after it is stored (and, for a local folder,
        // fsynced); several in flight so that storage latency overlaps with compute
        for _ in 0..UPLOADERS {
            let pack_rx = pack_rx.clone();
            let blob_free_tx = blob_free_tx.clone();
            let fail = &fail;
            let unindexed = &unindexed;
            let last_pack = &last_pack;
            let timing = &timing;
            sc.spawn(move || {
                let mut w = timing.watch();
                let r = (|| -> Result<()> {
                    for p in pack_rx.iter() {
                        w.lap("uploader wait");
                        let rec = match p {
                            PackOut::Parts(parts, rec) => {
                                let back = inner.backend.write_pack_blocking(
                                    rt,
                                    &pack_path(&rec.id),
                                    parts,
                                )?;
                                // the blob buffers go back to the workers
                                for mut b in back.into_iter().flatten() {
                                    b.clear();
                                    if blob_free_tx.try_send(b).is_err() {
                                        break;
                                    }
                                }
                                rec
                            }
                            PackOut::Streamed(t, rec, false) => {
                                t.commit(&pack_path(&rec.id), Durability::Data)?;
                                rec
                            }
                            PackOut::Streamed(t, rec, true) => {
                                stats.bytes_stored.fetch_add(rec.size, Ordering::Relaxed);
                                stats.packs.fetch_add(1, Ordering::Relaxed);
                                match last_pack.lock() {
                                    Ok(mut l) => *l = Some((t, rec)),
                                    Err(_) => {
                                        return Err(VaultError::Internal(
                                            "last pack poisoned".into(),
                                        ));
                                    }
                                }
                                continue;
                            }
                        };
                        w.lap("store pack");
                        stats.bytes_stored.fetch_add(rec.size, Ordering::Relaxed);
                        stats.packs.fetch_add(1, Ordering::Relaxed);
                        let batch = match unindexed.lock() {
                            Ok(mut u) => {
                                u.push(rec);
                                if u.len() >= INDEX_EVERY {
                                    std::mem::take(&mut *u)
                                } else {
                                    Vec::new()
                                }
                            }
                            Err(_) => {
                                return Err(VaultError::Internal("index list poisoned".into()));
                            }
                        };
                        if !batch.is_empty() {
                            rt.block_on(inner.write_index(&batch, Durability::Data))?;
                            w.lap("store index");
                        }
                    }
                    Ok(())
                })();
                if let Err(e) = r {
                    fail.set(e);
                }
            });
        }
        drop(pack_rx);
        drop(blob_free_tx);

        // collector (this thread)
        let r = (|| -> Result<(Vec<Id>, u64)> {
            let res_rx = res_rx;
            let mut enc = BlobEncoder::new(level)?;
            let mut table_ids: Vec<Option<Id>> = vec![None; ntables];
            let mut open: HashMap<usize, (Vec<Id>, u32)> = HashMap::new();
            let mut data_bytes = base.as_ref().map(|b| b.data_bytes).unwrap_or(0);
            let mut stored_tables: HashSet<Id> = HashSet::new();
            let table_range = |t: usize| {
                let first = t as u64 * ts;
                (first, nslots.min(first + ts))
            };
            let mut finish_table =
                |t: usize, slots: &[Id], table_ids: &mut Vec<Option<Id>>| -> Result<()> {
                    let (first, _) = table_range(t);
                    let plain = encode_table(cs as u32, first, slots);
                    let id = crypto.id(&plain);
                    if !index.blobs.contains_key(&id) && stored_tables.insert(id) {
                        let env = enc.encode(crypto, KIND_TABLE, &id, &plain)?;
                        blob_tx
                            .send(Blob {
                                kind: KIND_TABLE,
                                id,
                                env,
                                raw_len: plain.len() as u32,
                            })
                            .map_err(|_| VaultError::Internal("packer stopped".into()))?;
                    }
                    table_ids[t] = Some(id);
                    Ok(())
                };
            // a touched table starts from the base table (or zeros) with Zero runs applied
            let init_table = |t: usize, data_bytes: &mut u64| -> Result<Vec<Id>> {
                let (first, end) = table_range(t);
                let count = (end - first) as usize;
                let mut slots = match base_tables.get(t) {
                    Some(bid) => {
                        let plain = rt.block_on(inner.read_blob(index, KIND_TABLE, bid))?;
                        decode_table(
                            &plain,
                            &format!("table {}", hex::encode(bid)),
                            cs as u32,
                            first,
                            count,
                        )?
                    }
                    None => vec![ZERO_ID; count],
                };
                let i0 = plan.partition_point(|r| r.1 <= first);
                for &(s, e, a) in plan[i0..].iter().take_while(|r| r.0 < end) {
                    if a != Action::Zero {
                        continue;
                    }
                    for slot in s.max(first)..e.min(end) {
                        let old = &mut slots[(slot - first) as usize];
                        if *old != ZERO_ID {
                            *data_bytes = data_bytes.saturating_sub(slot_len(slot));
                            *old = ZERO_ID;
                        }
                    }
                }
                Ok(slots)
            };
            for t in 0..ntables {
                if touched[t] && pending[t] == 0 {
                    let slots = init_table(t, &mut data_bytes)?;
                    finish_table(t, &slots, &mut table_ids)?;
                } else if !touched[t] {
                    if let Some(bid) = base_tables.get(t) {
                        table_ids[t] = Some(*bid);
                    } else {
                        let (first, end) = table_range(t);
                        finish_table(t, &vec![ZERO_ID; (end - first) as usize], &mut table_ids)?;
                    }
                }
            }
            let mut done_bytes = 0u64;
            let mut next_report = 0u64;
            for d in res_rx.iter().flatten() {
                let t = (d.slot / ts) as usize;
                if let std::collections::hash_map::Entry::Vacant(v) = open.entry(t) {
                    v.insert((init_table(t, &mut data_bytes)?, pending[t]));
                }
                let Some((slots, left)) = open.get_mut(&t) else {
                    return Err(VaultError::Internal("table bookkeeping".into()));
                };
                let i = (d.slot - t as u64 * ts) as usize;
                if slots[i] != ZERO_ID {
                    data_bytes = data_bytes.saturating_sub(d.len);
                }
                if d.id != ZERO_ID {
                    data_bytes += d.len;
                }
                slots[i] = d.id;
                *left -= 1;
                if *left == 0
                    && let Some((slots, _)) = open.remove(&t)
                {
                    finish_table(t, &slots, &mut table_ids)?;
                }
                done_bytes += d.len;
                if let Some(p) = &progress
                    && (done_bytes >= next_report || done_bytes == total)
                {
                    p(&Progress {
                        bytes_done: done_bytes,
                        bytes_total: total,
                    });
                    next_report = done_bytes + (64 << 20);
                }
            }
            drop(blob_tx);
            if fail.cancelled() {
                return Err(VaultError::Internal("cancelled".into()));
            }
            if !open.is_empty() {
                return Err(VaultError::Internal("tables left unfinished".into()));
            }
            let ids = table_ids
                .into_iter()
                .map(|t| t.ok_or_else(|| VaultError::Internal("table not finished".into())))
                .collect::<Result<Vec<Id>>>()?;
            Ok((ids, data_bytes))
        })();
        match r {
            Err(VaultError::Internal(m)) if m == "cancelled" => Err(VaultError::Internal(m)),
            Err(e) => {
                fail.set(e);
                Err(VaultError::Internal("cancelled".into()))
            }
            ok => ok,
        }
    });
    timing.report();
    let rest = unindexed
        .lock()
        .map(|mut u| std::mem::take(&mut *u))
        .unwrap_or_default();
    let last = last_pack.lock().ok().and_then(|mut l| l.take());
    if fail.cancelled() {
        // index what was stored, even after a failure: the next ship reuses it (the
        // unsynced last pack is dropped, which removes its temporary file)
        drop(last);
        if !rest.is_empty()
            && let Err(e) = rt.block_on(inner.write_index(&rest, Durability::Data))
        {
            fail.set(e);
        }
        return Err(fail
            .take()
            .unwrap_or_else(|| VaultError::Internal("ship cancelled".into())));
    }
    let (tables, data_bytes) = collected?;
    Ok(PipeOut {
        virtual_size: vs,
        format,
        extents,
        bitmap,
        tables,
        data_bytes,
        unindexed: rest,
        last_pack: last,
    })
}
