//! Restore: stream a point's chunks, in disk order, into any writable format.
//!
//! ```text
//! planner ──batches──► N workers ─────────decoded batches─────────► writer
//!  (tables, one at      ranged reads (adjacent blobs     (other formats: puts batches
//!   a time; ≤ 8 MiB     of a pack in one read), AES-GCM   back in disk order and writes
//!   per batch)          open (bound to the chunk id),     them through lifeboat-disk)
//!                       zstd, length check, into the
//!                       batch's output buffer; raw: into
//!                       a 256 KiB buffer, written (pwrite)
//!                       by the worker as soon as it fills
//! ```
//! Chunks are not re-hashed: AES-GCM with the id in the AAD already authenticates them
//! (docs/vault-format.md, "Blobs"); `check --read-data` re-hashes.
//! Batch output buffers come from a fixed pool that the planner draws from before it hands a
//! batch out, so memory is bounded whatever the disk size. A flusher starts writeback
//! every 32 MiB so that the disk works during the restore, not only in the final sync.
//! Zero chunks are never written, so every target stays sparse.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::error::{Result, VaultError};
use crate::format::{BlobLoc, Id, Index, KIND_CHUNK, KIND_TABLE, ZERO_ID, decode_table, pack_path};
use crate::pack::{decode_blob_into, new_dctx};
use crate::ship::Failure;
use crate::timing::Timing;
use crate::{Inner, Vault, WriteFormat};

/// The outcome of a restore.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub point: String,
    pub vm: String,
    pub disk: String,
    pub format: String,
    pub path: String,
    pub virtual_size: u64,
    /// Bytes of non-zero chunks written.
    pub bytes_written: u64,
    pub chunks: u64,
    /// Every chunk was authenticated (AES-GCM, bound to its id) and had its length.
    pub verified: bool,
    pub seconds: f64,
}

const BATCH_BYTES: u64 = 8 << 20;
/// Bytes per write call to the target.
const WRITE_CALL: usize = 256 << 10;
/// The flusher starts writeback after every this many bytes written.
const FLUSH_EVERY: u64 = 32 << 20;
/// A ranged read covers at most this many bytes of adjacent blobs: from an object store
/// (a request is costly)…
const MAX_RUN: u64 = 16 << 20;
/// …and from a local folder (a `pread` is cheap, and a short run is still in the cache
/// when its blobs are decrypted and decompressed).
const MAX_RUN_LOCAL: u64 = 512 << 10;

struct Item {
    offset: u64,
    id: Id,
    loc: BlobLoc,
}

pub(crate) fn parse_id(h: &str, what: &str) -> Result<Id> {
    let mut id = [0u8; 32];
    hex::decode_to_slice(h, &mut id)
        .map_err(|_| VaultError::corrupt(what, format!("bad id {h:?}")))?;
    Ok(id)
}

pub(crate) async fn restore(
    vault: &Vault,
    vm: Option<&str>,
    point: &str,
    disk: Option<&str>,
    out: &Path,
    format: WriteFormat,
) -> Result<RestoreReport> {
    // a shared lock: prune must not delete or rewrite packs while they are being read
    let lock = crate::lock::acquire(&vault.inner, false).await?;
    let r = restore_locked(vault, vm, point, disk, out, format).await;
    let rel = lock.release().await;
    let rep = r?;
    rel?;
    Ok(rep)
}

async fn restore_locked(
    vault: &Vault,
    vm: Option<&str>,
    point: &str,
    disk: Option<&str>,
    out: &Path,
    format: WriteFormat,
) -> Result<RestoreReport> {
    let t0 = Instant::now();
    let inner = vault.inner.clone();
    let m = inner.resolve(vm, point).await?;
    let d = match disk {
        Some(n) => m
            .disks
            .iter()
            .find(|d| d.name == n)
            .ok_or_else(|| VaultError::NotFound(format!("point {} has no disk {n:?}", m.id)))?,
        None => match m.disks.as_slice() {
            [one] => one,
            _ => {
                let names: Vec<&str> = m.disks.iter().map(|d| d.name.as_str()).collect();
                return Err(VaultError::InvalidRequest(format!(
                    "point {} has {} disks ({}): name one",
                    m.id,
                    names.len(),
                    names.join(", ")
                )));
            }
        },
    }
    .clone();
    let index = Arc::new(inner.load_index().await?);
    let r = restore_disk(&inner, &index, &d, out, format).await;
    match r {
        Ok((bytes_written, chunks)) => Ok(RestoreReport {
            point: m.id,
            vm: m.vm,
            disk: d.name,
            format: format!("{format:?}"),
            path: out.display().to_string(),
            virtual_size: d.virtual_size,
            bytes_written,
            chunks,
            verified: true,
            seconds: t0.elapsed().as_secs_f64(),
        }),
        Err(e) => {
            let _ = std::fs::remove_file(out);
            Err(e)
        }
    }
}

async fn restore_disk(
    inner: &Arc<Inner>,
    index: &Arc<Index>,
    d: &crate::DiskManifest,
    out: &Path,
    format: WriteFormat,
) -> Result<(u64, u64)> {
    let cs = u64::from(d.chunk_size);
    let ts = u64::from(d.table_slots);
    let vs = d.virtual_size;
    if cs == 0 || ts == 0 {
        return Err(VaultError::corrupt(
            "manifest",
            "zero chunk size or table size",
        ));
    }
    let nslots = vs.div_ceil(cs);
    if d.tables.len() as u64 != nslots.div_ceil(ts) {
        return Err(VaultError::corrupt(
            "manifest",
            format!("{} tables for a {vs}-byte disk", d.tables.len()),
        ));
    }
    let inner = inner.clone();
    let index = index.clone();
    let d = d.clone();
    let out = out.to_path_buf();
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || pipeline(&inner, &index, &d, &out, format, &rt))
        .await
        .map_err(|e| VaultError::Internal(format!("restore pipeline: {e}")))?
}

/// A batch of chunks to restore, with the output buffer it is decoded into.
struct Job {
    seq: u64,
    items: Vec<Item>,
    buf: Vec<u8>,
}

/// A decoded batch: `pieces` are (disk offset, start in `buf`, length), in disk order.
struct Decoded {
    seq: u64,
    pieces: Vec<(u64, usize, usize)>,
    buf: Vec<u8>,
}

/// The target: raw images are written directly (one `pwrite` per run of adjacent
/// chunks, like lifeboat-disk's raw writer: created or truncated, sized, synced at the
/// end); every other format goes through lifeboat-disk.
enum Target {
    Raw(std::fs::File, std::path::PathBuf),
    Disk(Box<dyn lifeboat_disk::DiskWriter>),
}

impl Target {
    fn create(out: &Path, format: WriteFormat, vs: u64) -> Result<Target> {
        if format == WriteFormat::Raw {
            let ctx = || format!("creating raw image {}", out.display());
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(out)
                .map_err(|e| VaultError::io(ctx(), e))?;
            f.set_len(vs).map_err(|e| VaultError::io(ctx(), e))?;
            return Ok(Target::Raw(f, out.to_path_buf()));
        }
        let w = lifeboat_disk::create(out, format, vs)?;
        if w.virtual_size() < vs {
            return Err(VaultError::InvalidRequest(format!(
                "target holds {} bytes, the disk {vs}",
                w.virtual_size()
            )));
        }
        Ok(Target::Disk(w))
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        match self {
            Target::Raw(f, p) => raw_write_at(f, p, offset, data),
            Target::Disk(w) => Ok(w.write_at(offset, data)?),
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Target::Raw(f, p) => f
                .sync_all()
                .map_err(|e| VaultError::io(format!("syncing {}", p.display()), e)),
            Target::Disk(w) => Ok(w.finish()?),
        }
    }
}

fn raw_write_at(f: &std::fs::File, p: &Path, offset: u64, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(data, offset)
        .map_err(|e| VaultError::io(format!("writing {} at offset {offset}", p.display()), e))
}

fn pipeline(
    inner: &Inner,
    index: &Index,
    d: &crate::DiskManifest,
    out: &Path,
    format: WriteFormat,
    rt: &tokio::runtime::Handle,
) -> Result<(u64, u64)> {
    let cs = u64::from(d.chunk_size);
    let ts = u64::from(d.table_slots);
    let vs = d.virtual_size;
    let nslots = vs.div_ceil(cs);
    // remote reads wait on the network: more workers keep more requests in flight.
    // Local reads do not wait, and the workers write the target themselves: one per
    // core, because an extra one only adds contention for the target's inode lock
    // (measured on tmpfs: 2.8 instead of 4.0 CPU-seconds on two cores).
    let workers = if inner.backend.local().is_some() {
        crate::timing::workers_or(crate::timing::cores())
    } else {
        crate::timing::workers().max(4)
    };
    let nbufs = workers * 2 + 2;
    let buf_len = (BATCH_BYTES + cs) as usize;
    let (pool_tx, pool_rx) = crossbeam_channel::bounded::<Vec<u8>>(nbufs);
    for _ in 0..nbufs {
        let _ = pool_tx.send(Vec::new());
    }
    let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(workers);
    let (res_tx, res_rx) = crossbeam_channel::bounded::<Decoded>(nbufs);
    let fail = Failure::new();
    let timing = Timing::new("restore");
    // a raw target is written by the workers themselves (positioned writes, each batch
    // as ascending runs): no writer thread in the way. Other formats need their writes
    // in order, through the writer thread.
    let (raw, mut target) = match Target::create(out, format, vs)? {
        Target::Raw(f, p) => (Some((f, p)), None),
        t => (None, Some(t)),
    };
    let raw = raw.as_ref();
    // bytes written since the last writeback request (see the flusher)
    let unflushed = AtomicU64::new(0);

    // true: start a writeback; false: stop
    let (flush_tx, flush_rx) = crossbeam_channel::bounded::<bool>(1);
    // after every FLUSH_EVERY bytes written, ask the flusher for a writeback
    let wrote = |n: u64| {
        if unflushed.fetch_add(n, Ordering::Relaxed) + n >= FLUSH_EVERY {
            unflushed.store(0, Ordering::Relaxed);
            let _ = flush_tx.try_send(true);
        }
    };
    let wrote = &wrote;

    let counted = std::thread::scope(|sc| {
        for _ in 0..workers {
            let job_rx = job_rx.clone();
            let res_tx = res_tx.clone();
            let fail = &fail;
            let timing = &timing;
            sc.spawn(move || {
                let mut w = timing.watch();
                let mut dctx = match new_dctx() {
                    Ok(c) => Some(c),
                    Err(e) => {
                        fail.set(e);
                        None
                    }
                };
                let mut rbuf: Vec<u8> = Vec::new();
                let mut open: Option<(u32, std::fs::File)> = None;
                // raw target: chunks are decoded into this small buffer and written as
                // soon as a run of adjacent chunks fills it, while they are still in
                // this core's cache (not via an 8 MiB batch buffer read back cold)
                let mut stage = match raw {
                    Some(_) => vec![0u8; WRITE_CALL + cs as usize],
                    None => Vec::new(),
                };
                for mut job in job_rx.iter() {
                    w.lap("worker wait");
                    let mut pieces = Vec::new();
                    if !fail.cancelled()
                        && let Some(dctx) = dctx.as_mut()
                    {
                        let mut direct = raw.map(|(f, p)| Direct {
                            file: f,
                            path: p,
                            stage: &mut stage,
                            at: 0,
                            used: 0,
                            wrote,
                        });
                        let r = decode_job(
                            inner,
                            index,
                            rt,
                            &mut job,
                            dctx,
                            &mut rbuf,
                            &mut open,
                            direct.as_mut(),
                            &mut w,
                        );
                        match r {
                            Ok(p) => pieces = p,
                            Err(e) => fail.set(e),
                        }
                    }
                    if raw.is_some() {
                        w.lap("decode+write");
                    } else {
                        let dec = Decoded {
                            seq: job.seq,
                            pieces,
                            buf: job.buf,
                        };
                        // every job answers, even a failed one, so the writer never
                        // waits for a batch that will not come
                        let _ = res_tx.send(dec);
                        w.lap("worker wait");
                    }
                }
            });
        }
        drop(job_rx);
        drop(res_tx);
        // flusher: starts writeback of what was written so far (fdatasync through its own
        // descriptor) while the writes go on, so that the disk works during the
        // restore instead of all of it landing in the final sync
        match std::fs::File::open(out) {
            Ok(f) => {
                let timing = &timing;
                sc.spawn(move || {
                    let mut w = timing.watch();
                    while let Ok(true) = flush_rx.recv() {
                        w.lap("flusher wait");
                        let _ = f.sync_data(); // errors surface in the final sync
                        w.lap("flush");
                    }
                });
            }
            Err(_) => drop(flush_rx),
        }
        // writer: batches back in disk order
        let writer = {
            let fail = &fail;
            let timing = &timing;
            let target = &mut target;
            sc.spawn(move || {
                let mut w = timing.watch();
                let mut next = 0u64;
                let mut pending: BTreeMap<u64, Decoded> = BTreeMap::new();
                for dec in res_rx.iter() {
                    w.lap("writer wait");
                    pending.insert(dec.seq, dec);
                    while let Some(dec) = pending.remove(&next) {
                        next += 1;
                        if !fail.cancelled()
                            && let Some(t) = target.as_mut()
                        {
                            match write_pieces(&mut |off, data| t.write_at(off, data), &dec) {
                                Ok(n) => wrote(n),
                                Err(e) => fail.set(e),
                            }
                        }
                        let _ = pool_tx.send(dec.buf);
                        w.lap("write");
                    }
                }
                if !fail.cancelled() && !pending.is_empty() {
                    fail.set(VaultError::Internal("restore batches out of order".into()));
                }
            })
        };
        // planner (this thread)
        let r = (|| -> Result<(u64, u64)> {
            let mut w = timing.watch();
            let mut bytes = 0u64;
            let mut chunks = 0u64;
            let mut seq = 0u64;
            for (t, h) in d.tables.iter().enumerate() {
                if fail.cancelled() {
                    break;
                }
                let tid = parse_id(h, "manifest table")?;
                let first = t as u64 * ts;
                let count = (nslots.min(first + ts) - first) as usize;
                let plain = rt.block_on(inner.read_blob(index, KIND_TABLE, &tid))?;
                let slots =
                    decode_table(&plain, &format!("table {h}"), d.chunk_size, first, count)?;
                w.lap("tables");
                let mut cur: Vec<Item> = Vec::new();
                let mut cur_bytes = 0u64;
                let mut send = |items: Vec<Item>| -> Result<()> {
                    // a raw target is written from the workers' own small buffers
                    let buf = if raw.is_some() {
                        Vec::new()
                    } else {
                        let Ok(mut buf) = pool_rx.recv() else {
                            return Err(VaultError::Internal("restore writer stopped".into()));
                        };
                        w.lap("planner wait");
                        if buf.len() < buf_len {
                            buf.resize(buf_len, 0);
                        }
                        buf
                    };
                    job_tx
                        .send(Job { seq, items, buf })
                        .map_err(|_| VaultError::Internal("restore workers stopped".into()))?;
                    seq += 1;
                    w.lap("planner wait");
                    Ok(())
                };
                for (i, id) in slots.iter().enumerate() {
                    if *id == ZERO_ID {
                        continue;
                    }
                    let slot = first + i as u64;
                    let offset = slot * cs;
                    let len = cs.min(vs - offset);
                    let loc = *index.blobs.get(id).ok_or_else(|| {
                        VaultError::corrupt(
                            format!("chunk {}", hex::encode(id)),
                            format!("needed at offset {offset} but missing from the index"),
                        )
                    })?;
                    if loc.kind != KIND_CHUNK || u64::from(loc.raw_len) != len {
                        return Err(VaultError::corrupt(
                            format!("chunk {}", hex::encode(id)),
                            "index entry has the wrong kind or length",
                        ));
                    }
                    cur.push(Item {
                        offset,
                        id: *id,
                        loc,
                    });
                    cur_bytes += len;
                    chunks += 1;
                    bytes += len;
                    if cur_bytes >= BATCH_BYTES {
                        if fail.cancelled() {
                            break;
                        }
                        send(std::mem::take(&mut cur))?;
                        cur_bytes = 0;
                    }
                }
                if !cur.is_empty() && !fail.cancelled() {
                    send(cur)?;
                }
            }
            Ok((bytes, chunks))
        })();
        let r = r.map_err(|e| fail.set(e));
        drop(job_tx);
        // the writer ends once every worker has ended: nothing more to flush
        let _ = writer.join();
        let _ = flush_tx.send(false);
        r
    });
    if let Some(e) = fail.take() {
        return Err(e);
    }
    // all written: the target is synced (and finished) only after a complete restore
    {
        let mut w = timing.watch();
        match (raw, target) {
            (Some((f, p)), _) => f
                .sync_all()
                .map_err(|e| VaultError::io(format!("syncing {}", p.display()), e))?,
            (None, Some(t)) => t.finish()?,
            (None, None) => return Err(VaultError::Internal("restore target".into())),
        }
        w.lap("final sync");
    }
    let (bytes, chunks) = counted.map_err(|()| VaultError::Internal("restore failed".into()))?;
    timing.report();
    Ok((bytes, chunks))
}

/// Writes a decoded batch, one call per run of adjacent chunks (which lie adjacent in
/// the buffer too); returns the bytes written.
fn write_pieces(write_at: &mut dyn FnMut(u64, &[u8]) -> Result<()>, dec: &Decoded) -> Result<u64> {
    let mut i = 0;
    let mut total = 0u64;
    while i < dec.pieces.len() {
        let (off, start, mut len) = dec.pieces[i];
        let mut j = i + 1;
        while let Some(&(o, s, l)) = dec.pieces.get(j) {
            if o != off + len as u64 || s != start + len {
                break;
            }
            len += l;
            j += 1;
        }
        let data = dec
            .buf
            .get(start..start + len)
            .ok_or_else(|| VaultError::Internal("restore buffer bookkeeping".into()))?;
        // calls of at most WRITE_CALL bytes: on ext4 very large buffered writes cost
        // noticeably more kernel time than the same bytes in smaller calls
        let mut at = off;
        for part in data.chunks(WRITE_CALL) {
            write_at(at, part)?;
            at += part.len() as u64;
        }
        total += len as u64;
        i = j;
    }
    Ok(total)
}

/// A raw target written by a worker: chunks are decoded into `stage` and written
/// (one `pwrite`) when the next chunk is not adjacent on the disk or `stage` is full.
struct Direct<'a> {
    file: &'a std::fs::File,
    path: &'a Path,
    stage: &'a mut Vec<u8>,
    /// Disk offset of `stage[0]`, and the bytes of `stage` in use.
    at: u64,
    used: usize,
    wrote: &'a (dyn Fn(u64) + Sync),
}

impl Direct<'_> {
    /// The slot for a chunk of `len` bytes at disk offset `offset` (writing out what
    /// `stage` holds first unless the chunk continues it and fits).
    fn slot(&mut self, offset: u64, len: usize) -> Result<&mut [u8]> {
        if self.used > 0 && (offset != self.at + self.used as u64 || self.used + len > WRITE_CALL) {
            self.flush()?;
        }
        if self.used == 0 {
            self.at = offset;
        }
        if self.stage.len() < self.used + len {
            self.stage.resize(self.used + len, 0);
        }
        let s = &mut self.stage[self.used..self.used + len];
        self.used += len;
        Ok(s)
    }

    fn flush(&mut self) -> Result<()> {
        if self.used > 0 {
            raw_write_at(self.file, self.path, self.at, &self.stage[..self.used])?;
            (self.wrote)(self.used as u64);
            self.used = 0;
        }
        Ok(())
    }
}

/// Fetches and decodes one batch: into its buffer (returns the pieces to write), or,
/// with `direct`, straight to a raw target (returns no pieces).
#[allow(clippy::too_many_arguments)]
fn decode_job(
    inner: &Inner,
    index: &Index,
    rt: &tokio::runtime::Handle,
    job: &mut Job,
    dctx: &mut zstd::bulk::Decompressor<'static>,
    rbuf: &mut Vec<u8>,
    open: &mut Option<(u32, std::fs::File)>,
    mut direct: Option<&mut Direct<'_>>,
    w: &mut crate::timing::Watch<'_>,
) -> Result<Vec<(u64, usize, usize)>> {
    let items = &job.items;
    // runs of blobs adjacent in one pack → one ranged read each
    let max_run = if inner.backend.local().is_some() {
        MAX_RUN_LOCAL
    } else {
        MAX_RUN
    };
    let mut runs: Vec<(u32, u64, u64, usize, usize)> = Vec::new(); // pack, start, end, first item, n
    for (i, it) in items.iter().enumerate() {
        let end = it.loc.offset + u64::from(it.loc.stored_len);
        match runs.last_mut() {
            Some(r) if r.0 == it.loc.pack && r.2 == it.loc.offset && r.2 - r.1 < max_run => {
                r.2 = end;
                r.4 += 1;
            }
            _ => runs.push((it.loc.pack, it.loc.offset, end, i, 1)),
        }
    }
    let mut pieces = Vec::with_capacity(items.len());
    let mut pos = 0usize;
    for (pack, start, end, first, n) in runs {
        let pid = index
            .packs
            .get(pack as usize)
            .map(|p| p.0)
            .unwrap_or(ZERO_ID);
        let path = pack_path(&pid);
        let len = usize::try_from(end - start)
            .map_err(|_| VaultError::corrupt(&path, "range too large"))?;
        let fetched;
        let bytes: &mut [u8] = match inner.backend.local() {
            Some(l) => {
                if open.as_ref().map(|o| o.0) != Some(pack) {
                    *open = Some((pack, l.open(&path)?));
                }
                let Some((_, f)) = open.as_ref() else {
                    return Err(VaultError::Internal("pack file".into()));
                };
                if rbuf.len() < len {
                    rbuf.resize(len, 0);
                }
                crate::backend::Local::read_at(f, &path, start, &mut rbuf[..len])?;
                &mut rbuf[..len]
            }
            None => {
                fetched = rt.block_on(inner.backend.read_range(&path, start, end - start));
                *rbuf = fetched?;
                &mut rbuf[..]
            }
        };
        w.lap("fetch");
        for it in &items[first..first + n] {
            let a = (it.loc.offset - start) as usize;
            let b = a + it.loc.stored_len as usize;
            let env = bytes
                .get_mut(a..b)
                .ok_or_else(|| VaultError::corrupt(&path, "blob beyond the bytes read"))?;
            let raw = it.loc.raw_len as usize;
            let out = match direct.as_deref_mut() {
                Some(d) => d.slot(it.offset, raw)?,
                None => job.buf.get_mut(pos..pos + raw).ok_or_else(|| {
                    VaultError::Internal("restore batch larger than its buffer".into())
                })?,
            };
            let name = || {
                format!(
                    "{path} blob {} (disk offset {})",
                    hex::encode(it.id),
                    it.offset
                )
            };
            // authenticated by AES-GCM bound to its id; not re-hashed (see
            // docs/vault-format.md, "Blobs": check --read-data re-hashes)
            decode_blob_into(
                &inner.crypto,
                dctx,
                KIND_CHUNK,
                &it.id,
                env,
                out,
                false,
                &name,
            )?;
            if direct.is_none() {
                pieces.push((it.offset, pos, raw));
                pos += raw;
            }
        }
        w.lap("decode");
    }
    if let Some(d) = direct {
        d.flush()?;
    }
    Ok(pieces)
}
