//! Check: structure (config, key check, index, packs present with the right size,
//! manifests, tables, every referenced chunk indexed) and, with `read_data`, every pack
//! read, its name hash and header verified and every blob decrypted, decompressed and
//! hashed.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::error::Result;
use crate::format::{
    AAD_INDEX, BlobEntry, Id, Index, KIND_CHUNK, KIND_TABLE, ZERO_ID, decode_index, decode_table,
    pack_path,
};
use crate::pack::{decode_blob, new_dctx, read_pack_header};
use crate::restore::parse_id;
use crate::{Vault, lock};

/// What `check` found. `ok` is false when `errors` is not empty.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub read_data: bool,
    pub points: usize,
    pub index_files: usize,
    pub packs: usize,
    pub blobs: usize,
    pub chunks_referenced: usize,
    /// Bytes of packs read and verified (with `read_data`).
    pub bytes_verified: u64,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

pub(crate) async fn check(vault: &Vault, read_data: bool) -> Result<CheckReport> {
    // a shared lock: a concurrent prune would make packs vanish under the check
    let lock = lock::acquire(&vault.inner, false).await?;
    let r = check_locked(vault, read_data).await;
    let rel = lock.release().await;
    let rep = r?;
    rel?;
    Ok(rep)
}

async fn check_locked(vault: &Vault, read_data: bool) -> Result<CheckReport> {
    let inner = &vault.inner;
    let mut rep = CheckReport {
        read_data,
        ..Default::default()
    };
    // index files, one by one so that a bad one is reported, not fatal
    let mut index = Index::default();
    for name in inner.backend.list("index/").await? {
        match inner
            .read_sealed(&name, AAD_INDEX)
            .await
            .and_then(|p| decode_index(&p, &name))
        {
            Ok(recs) => {
                for r in &recs {
                    index.add(r);
                }
                index.files.push(name);
            }
            Err(e) => rep.errors.push(format!("{e}")),
        }
    }
    rep.index_files = index.files.len();
    rep.blobs = index.blobs.len();
    rep.packs = index.packs.len();
    // packs present
    let mut present: HashMap<String, ()> = HashMap::new();
    for p in inner.backend.list("packs/").await? {
        present.insert(p, ());
    }
    for (id, size) in &index.packs {
        let path = pack_path(id);
        if present.remove(&path).is_none() {
            rep.errors
                .push(format!("pack {path} is in the index but missing"));
            continue;
        }
        match inner.backend.size(&path).await {
            Ok(s) if s == *size => {}
            Ok(s) => rep.errors.push(format!(
                "pack {path} holds {s} bytes, the index says {size}"
            )),
            Err(e) => rep.errors.push(format!("{e}")),
        }
    }
    for p in present.keys() {
        rep.warnings.push(format!(
            "pack {p} is not in any index (left by an interrupted ship; prune removes it)"
        ));
    }
    // manifests and tables
    let mut referenced: HashSet<Id> = HashSet::new();
    let mut tables_seen: HashSet<Id> = HashSet::new();
    for name in inner.backend.list("points/").await? {
        let id = name.trim_start_matches("points/");
        let m = match inner.read_manifest(id).await {
            Ok(m) => m,
            Err(e) => {
                rep.errors.push(format!("{e}"));
                continue;
            }
        };
        rep.points += 1;
        for d in &m.disks {
            let cs = u64::from(d.chunk_size);
            let ts = u64::from(d.table_slots);
            if cs == 0 || ts == 0 {
                rep.errors
                    .push(format!("point {id} disk {}: zero chunk/table size", d.name));
                continue;
            }
            let nslots = d.virtual_size.div_ceil(cs);
            if d.tables.len() as u64 != nslots.div_ceil(ts) {
                rep.errors.push(format!(
                    "point {id} disk {}: wrong number of tables",
                    d.name
                ));
                continue;
            }
            for (t, h) in d.tables.iter().enumerate() {
                let tid = match parse_id(h, "manifest table") {
                    Ok(t) => t,
                    Err(e) => {
                        rep.errors.push(format!("point {id}: {e}"));
                        continue;
                    }
                };
                let first = t as u64 * ts;
                let count = (nslots.min(first + ts) - first) as usize;
                let slots = match inner
                    .read_blob(&index, KIND_TABLE, &tid)
                    .await
                    .and_then(|p| {
                        decode_table(&p, &format!("table {h}"), d.chunk_size, first, count)
                    }) {
                    Ok(s) => s,
                    Err(e) => {
                        rep.errors.push(format!("point {id} disk {}: {e}", d.name));
                        continue;
                    }
                };
                if !tables_seen.insert(tid) {
                    continue;
                }
                for (i, cid) in slots.iter().enumerate() {
                    if *cid == ZERO_ID {
                        continue;
                    }
                    let off = (first + i as u64) * cs;
                    let len = cs.min(d.virtual_size - off);
                    match index.blobs.get(cid) {
                        Some(l) if l.kind == KIND_CHUNK && u64::from(l.raw_len) == len => {}
                        Some(_) => rep.errors.push(format!(
                            "point {id} disk {} offset {off}: chunk {} indexed with the wrong kind or length",
                            d.name,
                            hex::encode(cid)
                        )),
                        None => rep.errors.push(format!(
                            "point {id} disk {} offset {off}: chunk {} is missing",
                            d.name,
                            hex::encode(cid)
                        )),
                    }
                    referenced.insert(*cid);
                }
            }
        }
    }
    rep.chunks_referenced = referenced.len();
    for l in inner.backend.list("locks/").await? {
        match lock::read_lock(inner, &l).await {
            Ok(info) if info.is_stale() => rep.warnings.push(format!(
                "stale lock {l} (pid {} on {})",
                info.pid, info.host
            )),
            Ok(_) => {}
            Err(e) => rep.warnings.push(format!("unreadable lock: {e}")),
        }
    }
    if read_data {
        let mut by_pack: HashMap<u32, Vec<(Id, BlobEntry)>> = HashMap::new();
        for (id, loc) in &index.blobs {
            by_pack.entry(loc.pack).or_default().push((
                *id,
                BlobEntry {
                    kind: loc.kind,
                    id: *id,
                    offset: loc.offset,
                    stored_len: loc.stored_len,
                    raw_len: loc.raw_len,
                },
            ));
        }
        for (pos, (pid, _)) in index.packs.iter().enumerate() {
            let path = pack_path(pid);
            let bytes = match inner.backend.read(&path).await {
                Ok(b) => b,
                Err(e) => {
                    rep.errors.push(format!("{e}"));
                    continue;
                }
            };
            rep.bytes_verified += bytes.len() as u64;
            let expected = by_pack.remove(&(pos as u32)).unwrap_or_default();
            let crypto_inner = vault.inner.clone();
            let pid = *pid;
            let errs = tokio::task::spawn_blocking(move || {
                let mut errs = Vec::new();
                let mut bytes = bytes;
                let header = match read_pack_header(&crypto_inner.crypto, &pid, &path, &bytes) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        errs.push(format!("{e}"));
                        None
                    }
                };
                if let Some(h) = &header {
                    let set: HashSet<(Id, u64, u32)> =
                        h.iter().map(|e| (e.id, e.offset, e.stored_len)).collect();
                    for (id, e) in &expected {
                        if !set.contains(&(*id, e.offset, e.stored_len)) {
                            errs.push(format!(
                                "{path}: index entry for blob {} not in the pack header",
                                hex::encode(id)
                            ));
                        }
                    }
                }
                let mut dctx = match new_dctx() {
                    Ok(d) => d,
                    Err(e) => return vec![format!("{e}")],
                };
                let mut out = Vec::new();
                for (id, e) in &expected {
                    let a = e.offset as usize;
                    let b = a + e.stored_len as usize;
                    let name = || format!("{path} blob {}", hex::encode(id));
                    match bytes.get_mut(a..b) {
                        Some(env) => {
                            let mut env = env.to_vec();
                            if let Err(err) = decode_blob(
                                &crypto_inner.crypto,
                                &mut dctx,
                                e.kind,
                                id,
                                e.raw_len,
                                &mut env,
                                &mut out,
                                &name,
                            ) {
                                errs.push(format!("{err}"));
                            }
                        }
                        None => errs.push(format!("{}: beyond the end of the pack", name())),
                    }
                }
                errs
            })
            .await
            .unwrap_or_else(|e| vec![format!("check worker: {e}")]);
            rep.errors.extend(errs);
        }
    }
    rep.ok = rep.errors.is_empty();
    Ok(rep)
}
