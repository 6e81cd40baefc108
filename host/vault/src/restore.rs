//! Restore: stream a point's chunks, in disk order, into any writable format.
//!
//! Tables are read one at a time; their non-zero slots are cut into batches of up to
//! 8 MiB, each fetched with ranged reads (adjacent blobs of one pack in one read) and
//! decoded (AES-GCM open, zstd, keyed-BLAKE3 check) on the blocking pool, four batches
//! in flight; a writer thread takes them in order. Zero chunks are never written, so
//! every target stays sparse.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;

use crate::error::{Result, VaultError};
use crate::format::{BlobLoc, Id, Index, KIND_CHUNK, KIND_TABLE, ZERO_ID, decode_table, pack_path};
use crate::pack::{decode_blob, new_dctx};
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
    /// Every chunk was authenticated and matched its keyed BLAKE3 id.
    pub verified: bool,
    pub seconds: f64,
}

const BATCH_BYTES: u64 = 8 << 20;
const IN_FLIGHT: usize = 4;

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
    let (wtx, mut wrx) = tokio::sync::mpsc::channel::<Vec<(u64, Vec<u8>)>>(3);
    let out_path = out.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut w = lifeboat_disk::create(&out_path, format, vs)?;
        if w.virtual_size() < vs {
            return Err(VaultError::InvalidRequest(format!(
                "target holds {} bytes, the disk {vs}",
                w.virtual_size()
            )));
        }
        let mut ok = true;
        while let Some(batch) = wrx.blocking_recv() {
            if batch.is_empty() {
                ok = false; // abort marker
                break;
            }
            for (off, data) in batch {
                w.write_at(off, &data)?;
            }
        }
        if ok {
            w.finish()?;
        }
        Ok(())
    });
    let produce = async {
        let mut bytes = 0u64;
        let mut chunks = 0u64;
        for (t, h) in d.tables.iter().enumerate() {
            let tid = parse_id(h, "manifest table")?;
            let first = t as u64 * ts;
            let count = (nslots.min(first + ts) - first) as usize;
            let plain = inner.read_blob(index, KIND_TABLE, &tid).await?;
            let slots = decode_table(&plain, &format!("table {h}"), d.chunk_size, first, count)?;
            let mut batches: Vec<Vec<Item>> = Vec::new();
            let mut cur: Vec<Item> = Vec::new();
            let mut cur_bytes = 0u64;
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
                if cur_bytes >= BATCH_BYTES {
                    batches.push(std::mem::take(&mut cur));
                    cur_bytes = 0;
                }
            }
            if !cur.is_empty() {
                batches.push(cur);
            }
            let mut s = futures::stream::iter(batches)
                .map(|b| fetch_decode(inner.clone(), index.clone(), b))
                .buffered(IN_FLIGHT);
            while let Some(r) = s.next().await {
                let v = r?;
                chunks += v.len() as u64;
                bytes += v.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
                if wtx.send(v).await.is_err() {
                    return Err(VaultError::Internal("restore writer stopped".into()));
                }
            }
        }
        Ok::<_, VaultError>((bytes, chunks))
    };
    let r = produce.await;
    if r.is_err() {
        let _ = wtx.send(Vec::new()).await;
    }
    drop(wtx);
    let w = writer
        .await
        .map_err(|e| VaultError::Internal(format!("restore writer: {e}")))?;
    match (r, w) {
        (Err(VaultError::Internal(m)), Err(e)) if m == "restore writer stopped" => Err(e),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        (Ok(v), Ok(())) => Ok(v),
    }
}

thread_local! {
    static DCTX: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

async fn fetch_decode(
    inner: Arc<Inner>,
    index: Arc<Index>,
    items: Vec<Item>,
) -> Result<Vec<(u64, Vec<u8>)>> {
    // runs of blobs adjacent in one pack → one ranged read each
    let mut runs: Vec<(u32, u64, u64, usize, usize)> = Vec::new(); // pack, start, end, first item, n
    for (i, it) in items.iter().enumerate() {
        let end = it.loc.offset + u64::from(it.loc.stored_len);
        match runs.last_mut() {
            Some(r) if r.0 == it.loc.pack && r.2 == it.loc.offset && r.2 - r.1 < (16 << 20) => {
                r.2 = end;
                r.4 += 1;
            }
            _ => runs.push((it.loc.pack, it.loc.offset, end, i, 1)),
        }
    }
    let mut bufs = Vec::with_capacity(runs.len());
    for &(pack, start, end, _, _) in &runs {
        let pid = index
            .packs
            .get(pack as usize)
            .map(|p| p.0)
            .unwrap_or(ZERO_ID);
        let path = pack_path(&pid);
        bufs.push((
            path.clone(),
            inner.backend.read_range(&path, start, end - start).await?,
        ));
    }
    tokio::task::spawn_blocking(move || {
        DCTX.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                *cell = Some(new_dctx()?);
            }
            let Some(dctx) = cell.as_mut() else {
                return Err(VaultError::Internal("zstd context".into()));
            };
            let mut out = Vec::with_capacity(items.len());
            for ((_, start, _, first, n), (path, mut buf)) in runs.into_iter().zip(bufs) {
                for it in &items[first..first + n] {
                    let a = (it.loc.offset - start) as usize;
                    let b = a + it.loc.stored_len as usize;
                    let env = buf
                        .get_mut(a..b)
                        .ok_or_else(|| VaultError::corrupt(&path, "blob beyond the bytes read"))?;
                    let mut data = Vec::new();
                    let name = || {
                        format!(
                            "{path} blob {} (disk offset {})",
                            hex::encode(it.id),
                            it.offset
                        )
                    };
                    decode_blob(
                        &inner.crypto,
                        dctx,
                        KIND_CHUNK,
                        &it.id,
                        it.loc.raw_len,
                        env,
                        &mut data,
                        &name,
                    )?;
                    out.push((it.offset, data));
                }
            }
            Ok(out)
        })
    })
    .await
    .map_err(|e| VaultError::Internal(format!("restore decoder: {e}")))?
}
