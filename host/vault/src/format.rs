//! On-storage formats: config, key check, packs, index, tables, manifests.
//! docs/vault-format.md is the specification; keep both in step.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::crypto::KdfParams;
use crate::error::{Result, VaultError};

pub(crate) const CONFIG: &str = "config";
pub(crate) const KEYCHECK: &str = "keycheck";
pub(crate) const FORMAT_NAME: &str = "lifeboat-vault";
pub(crate) const FORMAT_VERSION: u32 = 1;

pub(crate) const AAD_KEYCHECK: &[u8] = b"lifeboat keycheck v1";
pub(crate) const AAD_PACK_HEADER: &[u8] = b"lifeboat pack header v1";
pub(crate) const AAD_INDEX: &[u8] = b"lifeboat index v1";

/// Blob kinds stored in packs.
pub(crate) const KIND_CHUNK: u8 = 0;
pub(crate) const KIND_TABLE: u8 = 1;
/// First byte of a blob's plaintext: how the rest is stored.
pub(crate) const STORED_RAW: u8 = 0;
pub(crate) const STORED_ZSTD: u8 = 1;

pub(crate) type Id = [u8; 32];
/// Table slot value for a chunk that reads as zeros (never stored).
pub(crate) const ZERO_ID: Id = [0u8; 32];

/// AAD of a blob: its kind and its id, so a blob cannot be served for another.
pub(crate) fn blob_aad(kind: u8, id: &Id) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[0] = kind;
    a[1..].copy_from_slice(id);
    a
}

pub(crate) fn point_aad(id: &str) -> Vec<u8> {
    format!("lifeboat point v1 {id}").into_bytes()
}
pub(crate) fn lock_aad(id: &str) -> Vec<u8> {
    format!("lifeboat lock v1 {id}").into_bytes()
}

pub(crate) fn pack_path(id: &Id) -> String {
    let h = hex::encode(id);
    format!("packs/{}/{}", &h[..2], h)
}
pub(crate) fn point_path(id: &str) -> String {
    format!("points/{id}")
}
pub(crate) fn staged_aad(id: &str) -> Vec<u8> {
    format!("lifeboat staged v1 {id}").into_bytes()
}
pub(crate) fn staged_path(id: &str) -> String {
    format!("staged/{id}")
}

/// The vault's plaintext configuration (`config`), authenticated by the key check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    pub format: String,
    pub version: u32,
    /// 32 hex digits, random at init; mixed into every sub-key.
    pub id: String,
    /// Chunk size in bytes (a power of two, 4 KiB–4 MiB).
    pub chunk_size: u32,
    /// Chunk slots per table blob.
    pub table_slots: u32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    pub compression: Compression,
    pub kdf: KdfParams,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Compression {
    pub algorithm: String,
    pub level: i32,
}

/// Plaintext of the key-check object.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct KeyCheck {
    pub vault_id: String,
    /// Hex BLAKE3 of the exact `config` bytes: the key check authenticates the config.
    pub config_blake3: String,
}

/// One entry of a pack header or index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlobEntry {
    pub kind: u8,
    pub id: Id,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
}

pub(crate) struct Writer(pub Vec<u8>);
impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v)
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes())
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v)
    }
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    object: &'a str,
}
impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], object: &'a str) -> Self {
        Reader {
            buf,
            pos: 0,
            object,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end))
            .ok_or_else(|| VaultError::corrupt(self.object, "truncated"))?;
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    pub fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub fn id(&mut self) -> Result<Id> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(a)
    }
    pub fn magic(&mut self, m: &[u8; 4], version: u8) -> Result<()> {
        if self.take(4)? != m {
            return Err(VaultError::corrupt(self.object, "bad magic"));
        }
        let v = self.u8()?;
        if v != version {
            return Err(VaultError::Unsupported {
                object: self.object.to_string(),
                reason: format!("version {v} (this build reads {version})"),
            });
        }
        Ok(())
    }
    pub fn count(&mut self, per_item: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(per_item) > self.buf.len().saturating_sub(self.pos) {
            return Err(VaultError::corrupt(
                self.object,
                "count exceeds object size",
            ));
        }
        Ok(n)
    }
    pub fn finish(self) -> Result<()> {
        if self.pos != self.buf.len() {
            return Err(VaultError::corrupt(self.object, "trailing bytes"));
        }
        Ok(())
    }
}

/// Pack header plaintext: `LBPH` v1, count, then per blob kind, id, stored_len, raw_len.
/// Blobs are laid out back to back from offset 0 in header order.
pub(crate) fn encode_pack_header(entries: &[BlobEntry]) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(9 + entries.len() * 41));
    w.bytes(b"LBPH");
    w.u8(1);
    w.u32(entries.len() as u32);
    for e in entries {
        w.u8(e.kind);
        w.bytes(&e.id);
        w.u32(e.stored_len);
        w.u32(e.raw_len);
    }
    w.0
}

pub(crate) fn decode_pack_header(
    plain: &[u8],
    object: &str,
    data_len: u64,
) -> Result<Vec<BlobEntry>> {
    let mut r = Reader::new(plain, object);
    r.magic(b"LBPH", 1)?;
    let n = r.count(41)?;
    let mut out = Vec::with_capacity(n);
    let mut off = 0u64;
    for _ in 0..n {
        let kind = r.u8()?;
        let id = r.id()?;
        let stored_len = r.u32()?;
        let raw_len = r.u32()?;
        out.push(BlobEntry {
            kind,
            id,
            offset: off,
            stored_len,
            raw_len,
        });
        off += u64::from(stored_len);
    }
    r.finish()?;
    if off != data_len {
        return Err(VaultError::corrupt(
            object,
            format!("pack header covers {off} bytes but the pack holds {data_len} bytes of blobs"),
        ));
    }
    Ok(out)
}

/// A pack's contents as listed in an index file.
#[derive(Debug, Clone)]
pub(crate) struct PackRecord {
    pub id: Id,
    pub size: u64,
    pub blobs: Vec<BlobEntry>,
}

pub(crate) fn encode_index(packs: &[PackRecord]) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.bytes(b"LBIX");
    w.u8(1);
    w.u32(packs.len() as u32);
    for p in packs {
        w.bytes(&p.id);
        w.u64(p.size);
        w.u32(p.blobs.len() as u32);
        for b in &p.blobs {
            w.u8(b.kind);
            w.bytes(&b.id);
            w.u64(b.offset);
            w.u32(b.stored_len);
            w.u32(b.raw_len);
        }
    }
    w.0
}

pub(crate) fn decode_index(plain: &[u8], object: &str) -> Result<Vec<PackRecord>> {
    let mut r = Reader::new(plain, object);
    r.magic(b"LBIX", 1)?;
    let n = r.count(44)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.id()?;
        let size = r.u64()?;
        let m = r.count(49)?;
        let mut blobs = Vec::with_capacity(m);
        for _ in 0..m {
            let kind = r.u8()?;
            let bid = r.id()?;
            let offset = r.u64()?;
            let stored_len = r.u32()?;
            let raw_len = r.u32()?;
            if offset.saturating_add(u64::from(stored_len)) > size {
                return Err(VaultError::corrupt(
                    object,
                    "blob lies beyond the end of its pack",
                ));
            }
            blobs.push(BlobEntry {
                kind,
                id: bid,
                offset,
                stored_len,
                raw_len,
            });
        }
        out.push(PackRecord { id, size, blobs });
    }
    r.finish()?;
    Ok(out)
}

/// Where a blob lives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlobLoc {
    pub pack: u32,
    pub kind: u8,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
}

/// The merged in-memory index of all index files.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub packs: Vec<(Id, u64)>,
    pack_pos: HashMap<Id, u32>,
    pub blobs: HashMap<Id, BlobLoc>,
    /// Names of the index files merged.
    pub files: Vec<String>,
}

impl Index {
    pub(crate) fn add(&mut self, rec: &PackRecord) {
        let pos = *self.pack_pos.entry(rec.id).or_insert_with(|| {
            self.packs.push((rec.id, rec.size));
            (self.packs.len() - 1) as u32
        });
        for b in &rec.blobs {
            self.blobs.entry(b.id).or_insert(BlobLoc {
                pack: pos,
                kind: b.kind,
                offset: b.offset,
                stored_len: b.stored_len,
                raw_len: b.raw_len,
            });
        }
    }
    pub(crate) fn pack_id(&self, loc: &BlobLoc) -> Id {
        self.packs
            .get(loc.pack as usize)
            .map(|p| p.0)
            .unwrap_or(ZERO_ID)
    }
}

/// Table plaintext: `LBTB` v1, chunk_size, first slot, count, then count × 32-byte ids
/// (all-zero id = a chunk that reads as zeros).
pub(crate) fn encode_table(chunk_size: u32, first_slot: u64, slots: &[Id]) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(21 + slots.len() * 32));
    w.bytes(b"LBTB");
    w.u8(1);
    w.u32(chunk_size);
    w.u64(first_slot);
    w.u32(slots.len() as u32);
    for s in slots {
        w.bytes(s);
    }
    w.0
}

pub(crate) fn decode_table(
    plain: &[u8],
    object: &str,
    chunk_size: u32,
    first_slot: u64,
    count: usize,
) -> Result<Vec<Id>> {
    let mut r = Reader::new(plain, object);
    r.magic(b"LBTB", 1)?;
    let cs = r.u32()?;
    let first = r.u64()?;
    let n = r.count(32)?;
    if cs != chunk_size || first != first_slot || n != count {
        return Err(VaultError::corrupt(
            object,
            format!(
                "table describes slots {first}+{n} of {cs}-byte chunks, expected {first_slot}+{count} of {chunk_size}"
            ),
        ));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(r.id()?);
    }
    r.finish()?;
    Ok(out)
}

/// Crash- or application-consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    #[default]
    Crash,
    App,
}

/// A changed extent as recorded in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtentRecord {
    pub offset: u64,
    pub length: u64,
    /// `data` or `cleared`.
    pub kind: String,
}

/// How the changes of a disk were found for a point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// `full` (allocation map), `list` (caller's changed extents), `since-point` (hash
    /// comparison with the parent), `bitmap` (qcow2 dirty bitmap via qemu-nbd).
    pub source: String,
    /// Bitmap name for `bitmap`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bitmap: Option<String>,
    /// The extents read from the source: the allocation map for `full` and `since-point`,
    /// the changed extents for `list` and `bitmap`.
    pub extents: Vec<ExtentRecord>,
}

/// One disk of a recovery point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskManifest {
    pub name: String,
    /// Source image format as detected (e.g. `qcow2 (v3)`).
    pub source_format: String,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// Logical sector size assumed by the restore targets.
    pub sector_size: u32,
    pub chunk_size: u32,
    pub table_slots: u32,
    /// Bytes in non-zero chunks.
    pub data_bytes: u64,
    pub changes: ChangeRecord,
    /// Hex ids of the table blobs, in slot order.
    pub tables: Vec<String>,
}

/// An immutable recovery point manifest (`points/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub id: String,
    pub vm: String,
    /// RFC 3339 UTC time the point was sealed.
    pub created: String,
    pub consistency: Consistency,
    /// The point this one was derived from (incremental), if any.
    pub parent: Option<String>,
    pub disks: Vec<DiskManifest>,
    /// What the caller recorded about the VM when sealing (its configuration:
    /// CPUs, memory, firmware, NICs), so a failover can rebuild it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}
