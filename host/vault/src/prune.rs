//! Prune: apply retention (keep the newest N points per VM), then remove every pack no
//! remaining point needs. Runs under an exclusive lock, so no ship can add references
//! to chunks meanwhile. Crash-safe order: manifests are deleted first; packs holding
//! both live and dead blobs (more than 20 % dead) are rewritten (blobs copied as they
//! are, still encrypted); one new index listing every kept blob is written; only then
//! are old index files and unneeded packs deleted. An interruption at any step leaves
//! every remaining point restorable.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::error::{Result, VaultError};
use crate::format::{
    AAD_INDEX, BlobEntry, Id, KIND_TABLE, PackRecord, ZERO_ID, decode_index, decode_table,
    pack_path, point_path,
};
use crate::pack::{Packer, read_pack_header};
use crate::restore::parse_id;
use crate::{Vault, lock};

/// What `prune` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub points_removed: Vec<String>,
    pub points_kept: usize,
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub packs_written: usize,
    pub unindexed_packs_deleted: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

pub(crate) async fn prune(
    vault: &Vault,
    vm: Option<&str>,
    keep_last: usize,
) -> Result<PruneReport> {
    if keep_last == 0 {
        return Err(VaultError::InvalidRequest(
            "keep_last must be at least 1".into(),
        ));
    }
    let guard = lock::acquire(&vault.inner, true).await?;
    let r = prune_locked(vault, vm, keep_last).await;
    let rel = guard.release().await;
    let rep = r?;
    rel?;
    Ok(rep)
}

async fn prune_locked(vault: &Vault, vm: Option<&str>, keep_last: usize) -> Result<PruneReport> {
    let inner = &vault.inner;
    let mut rep = PruneReport::default();
    let all = inner.manifests(None).await?;
    let mut by_vm: HashMap<&str, Vec<&crate::Manifest>> = HashMap::new();
    for m in &all {
        by_vm.entry(m.vm.as_str()).or_default().push(m);
    }
    let mut keep = Vec::new();
    for (name, ms) in by_vm {
        if vm.is_some_and(|v| v != name) {
            // another VM's points: not ours to drop, but live all the same
            keep.extend(ms);
            continue;
        }
        let n = ms.len();
        for (i, m) in ms.into_iter().enumerate() {
            if i + keep_last >= n {
                keep.push(m);
            } else {
                rep.points_removed.push(m.id.clone());
            }
        }
    }
    if vm.is_none() {
        rep.points_removed.sort(); // VMs interleave; one VM's stay oldest first
    }
    rep.points_kept = match vm {
        Some(v) => keep.iter().filter(|m| m.vm == v).count(),
        None => keep.len(),
    };
    // staged disks (shipped, not sealed yet) are live too
    let staged = inner.staged().await?;
    keep.extend(staged.iter());

    // read every index file (all records, duplicates included) before changing anything
    let mut index = crate::format::Index::default();
    let mut records: HashMap<Id, PackRecord> = HashMap::new();
    let index_files = inner.backend.list("index/").await?;
    for name in &index_files {
        let plain = inner.read_sealed(name, AAD_INDEX).await?;
        for rec in decode_index(&plain, name)? {
            index.add(&rec);
            let e = records.entry(rec.id).or_insert_with(|| PackRecord {
                id: rec.id,
                size: rec.size,
                blobs: Vec::new(),
            });
            for b in rec.blobs {
                if !e.blobs.contains(&b) {
                    e.blobs.push(b);
                }
            }
        }
    }
    // live set: tables of kept points and their chunks
    let mut live: HashSet<Id> = HashSet::new();
    for m in &keep {
        for d in &m.disks {
            let cs = u64::from(d.chunk_size);
            let ts = u64::from(d.table_slots);
            let nslots = d.virtual_size.div_ceil(cs.max(1));
            for (t, h) in d.tables.iter().enumerate() {
                let tid = parse_id(h, "manifest table")?;
                if !live.insert(tid) {
                    continue;
                }
                let first = t as u64 * ts;
                let count = (nslots.min(first + ts) - first) as usize;
                let plain = inner.read_blob(&index, KIND_TABLE, &tid).await?;
                for id in decode_table(&plain, &format!("table {h}"), d.chunk_size, first, count)? {
                    if id != ZERO_ID {
                        live.insert(id);
                    }
                }
            }
        }
    }
    for id in &rep.points_removed {
        inner.backend.delete(&point_path(id)).await?;
    }

    // classify packs; a blob is live in the one pack the index resolves it to
    let mut keep_recs: Vec<PackRecord> = Vec::new();
    let mut to_delete: Vec<Id> = Vec::new();
    let mut to_repack: Vec<(PackRecord, Vec<BlobEntry>)> = Vec::new();
    for (pid, rec) in records {
        rep.bytes_before += rec.size;
        let pos = index.packs.iter().position(|p| p.0 == pid);
        let live_blobs: Vec<BlobEntry> = rec
            .blobs
            .iter()
            .filter(|b| {
                live.contains(&b.id)
                    && index
                        .blobs
                        .get(&b.id)
                        .is_some_and(|l| Some(l.pack as usize) == pos && l.offset == b.offset)
            })
            .copied()
            .collect();
        let live_bytes: u64 = live_blobs.iter().map(|b| u64::from(b.stored_len)).sum();
        let blob_bytes: u64 = rec.blobs.iter().map(|b| u64::from(b.stored_len)).sum();
        if live_blobs.is_empty() {
            to_delete.push(pid);
        } else if (blob_bytes - live_bytes.min(blob_bytes)) * 5 > blob_bytes {
            to_repack.push((rec, live_blobs));
        } else {
            rep.bytes_after += rec.size;
            keep_recs.push(rec);
        }
    }
    let mut packer = Packer::new(inner.config.pack_size as usize)?;
    let mut written: Vec<PackRecord> = Vec::new();
    for (rec, live_blobs) in &to_repack {
        let path = pack_path(&rec.id);
        let bytes = inner.backend.read(&path).await?;
        read_pack_header(&inner.crypto, &rec.id, &path, &bytes)?;
        for b in live_blobs {
            let a = b.offset as usize;
            let env = bytes
                .get(a..a + b.stored_len as usize)
                .ok_or_else(|| VaultError::corrupt(&path, "blob beyond the end of the pack"))?;
            if let Some((data, r)) =
                packer.add(&inner.crypto, b.kind, b.id, env.to_vec(), b.raw_len)?
            {
                inner.backend.write_pack(&pack_path(&r.id), data).await?;
                written.push(r);
            }
        }
        rep.packs_repacked += 1;
    }
    if let Some((data, r)) = packer.finish(&inner.crypto)? {
        inner.backend.write_pack(&pack_path(&r.id), data).await?;
        written.push(r);
    }
    rep.packs_written = written.len();
    rep.bytes_after += written.iter().map(|r| r.size).sum::<u64>();
    let mut all_recs = keep_recs;
    all_recs.extend(written);
    let new_index = inner
        .write_index(&all_recs, crate::backend::Durability::Named)
        .await?;
    for f in &index_files {
        if *f != new_index {
            inner.backend.delete(f).await?;
        }
    }
    for pid in to_delete.iter().chain(to_repack.iter().map(|(r, _)| &r.id)) {
        inner.backend.delete(&pack_path(pid)).await?;
    }
    rep.packs_deleted = to_delete.len();
    // packs that no index lists: interrupted ships (no ship runs now: we hold the lock)
    let indexed: HashSet<String> = all_recs.iter().map(|r| pack_path(&r.id)).collect();
    for p in inner.backend.list("packs/").await? {
        if !indexed.contains(&p) {
            inner.backend.delete(&p).await?;
            rep.unindexed_packs_deleted += 1;
        }
    }
    // partial objects of killed writers (local folders write through .tmp/, then rename)
    for f in inner.backend.list(".tmp/").await? {
        inner.backend.delete(&f).await?;
    }
    Ok(rep)
}
