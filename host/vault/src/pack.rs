//! Blobs (compressed + encrypted chunks and tables) and packs (many blobs in one object).

use ring::aead::NONCE_LEN;

use crate::crypto::{Crypto, NonceGen, TAG_LEN};
use crate::error::{Result, VaultError};
use crate::format::{
    AAD_PACK_HEADER, BlobEntry, Id, PackRecord, STORED_RAW, STORED_ZSTD, blob_aad,
    decode_pack_header, encode_pack_header,
};

/// zstd's minimum match length at level 1 (zstd's own default there is 6).
const MIN_MATCH_LEVEL_1: u32 = 7;

/// Per-thread encoder: a zstd context and a nonce generator.
pub(crate) struct BlobEncoder {
    comp: zstd::bulk::Compressor<'static>,
    nonces: NonceGen,
}

impl BlobEncoder {
    pub(crate) fn new(level: i32) -> Result<BlobEncoder> {
        let zerr = |e: std::io::Error| VaultError::Internal(format!("zstd: {e}"));
        let mut comp = zstd::bulk::Compressor::new(level).map_err(zerr)?;
        if level == 1 {
            // Level 1 with matches of at least 7 bytes instead of 6: on 64 KiB chunks of
            // the standard workload zstd takes about a third less CPU for 0.3 % more
            // bytes (host/vault/bench/README.md). Readers are unaffected: the frames
            // are ordinary zstd frames.
            comp.set_parameter(zstd::zstd_safe::CParameter::MinMatch(MIN_MATCH_LEVEL_1))
                .map_err(zerr)?;
        }
        Ok(BlobEncoder {
            comp,
            nonces: NonceGen::new()?,
        })
    }

    /// `nonce ‖ AES-GCM(flag ‖ payload, AAD = kind ‖ id) ‖ tag`, where the payload is
    /// the zstd frame if it saves at least 1/32 of the size, the raw bytes otherwise.
    pub(crate) fn encode(
        &mut self,
        crypto: &Crypto,
        kind: u8,
        id: &Id,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.encode_into(crypto, kind, id, data, &mut out)?;
        Ok(out)
    }

    /// [`BlobEncoder::encode`] into `out` (cleared first), so that a caller can reuse one
    /// buffer for every blob.
    pub(crate) fn encode_into(
        &mut self,
        crypto: &Crypto,
        kind: u8,
        id: &Id,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let head = NONCE_LEN + 1;
        // room for the worst case (raw + tag): no reallocation, and no zeroing since zstd
        // writes into the spare capacity after the header
        out.clear();
        out.reserve(head + data.len() + TAG_LEN);
        out.extend_from_slice(&[0u8; NONCE_LEN + 1]);
        let limit = data.len() - data.len() / 32;
        let n = {
            let mut cur = std::io::Cursor::new(&mut *out);
            cur.set_position(head as u64);
            self.comp.compress_to_buffer(data, &mut cur).ok()
        };
        match n {
            Some(n) if n < limit && out.len() == head + n => out[NONCE_LEN] = STORED_ZSTD,
            _ => {
                out.truncate(head);
                out[NONCE_LEN] = STORED_RAW;
                out.extend_from_slice(data);
            }
        }
        crypto.seal_in_place(&mut self.nonces, &blob_aad(kind, id), out)
    }
}

/// Decrypts, decompresses and verifies a blob into `out` (cleared first).
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode_blob(
    crypto: &Crypto,
    dctx: &mut zstd::bulk::Decompressor<'static>,
    kind: u8,
    id: &Id,
    raw_len: u32,
    env: &mut [u8],
    out: &mut Vec<u8>,
    object: &dyn Fn() -> String,
) -> Result<()> {
    let plain = crypto
        .open_in_place(&blob_aad(kind, id), env)
        .ok_or_else(|| {
            VaultError::corrupt(object(), "authentication failed (AES-GCM tag mismatch)")
        })?;
    let (flag, payload) = plain
        .split_first()
        .ok_or_else(|| VaultError::corrupt(object(), "empty blob"))?;
    out.clear();
    match *flag {
        STORED_RAW => out.extend_from_slice(payload),
        STORED_ZSTD => {
            out.reserve(raw_len as usize);
            dctx.decompress_to_buffer(payload, out)
                .map_err(|e| VaultError::corrupt(object(), format!("zstd: {e}")))?;
        }
        f => {
            return Err(VaultError::corrupt(
                object(),
                format!("unknown storage flag {f}"),
            ));
        }
    }
    if out.len() != raw_len as usize {
        return Err(VaultError::corrupt(
            object(),
            format!("decoded to {} bytes, expected {raw_len}", out.len()),
        ));
    }
    if crypto.id(out) != *id {
        return Err(VaultError::corrupt(
            object(),
            "content does not match its id (keyed BLAKE3)",
        ));
    }
    Ok(())
}

/// Decrypts and decompresses a blob into `out`, which must be exactly `raw_len` bytes
/// long (a slot of a larger buffer: no allocation per blob).
///
/// The blob is always authenticated: AES-GCM with AAD `kind ‖ id` fails for a wrong
/// key, a flipped bit or a blob served in place of another. With `rehash` the keyed
/// BLAKE3 of the plaintext is also compared with `id`, which catches a writer that
/// sealed the wrong bytes under an id (`check --read-data` does this); restore relies on
/// the AEAD alone (docs/vault-format.md, "Blobs").
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode_blob_into(
    crypto: &Crypto,
    dctx: &mut zstd::bulk::Decompressor<'static>,
    kind: u8,
    id: &Id,
    env: &mut [u8],
    out: &mut [u8],
    rehash: bool,
    object: &dyn Fn() -> String,
) -> Result<()> {
    let plain = crypto
        .open_in_place(&blob_aad(kind, id), env)
        .ok_or_else(|| {
            VaultError::corrupt(object(), "authentication failed (AES-GCM tag mismatch)")
        })?;
    let (flag, payload) = plain
        .split_first()
        .ok_or_else(|| VaultError::corrupt(object(), "empty blob"))?;
    let n = match *flag {
        STORED_RAW => {
            if payload.len() == out.len() {
                out.copy_from_slice(payload);
            }
            payload.len()
        }
        STORED_ZSTD => dctx
            .decompress_to_buffer(payload, &mut *out)
            .map_err(|e| VaultError::corrupt(object(), format!("zstd: {e}")))?,
        f => {
            return Err(VaultError::corrupt(
                object(),
                format!("unknown storage flag {f}"),
            ));
        }
    };
    if n != out.len() {
        return Err(VaultError::corrupt(
            object(),
            format!("decoded to {n} bytes, expected {}", out.len()),
        ));
    }
    if rehash && crypto.id(out) != *id {
        return Err(VaultError::corrupt(
            object(),
            "content does not match its id (keyed BLAKE3)",
        ));
    }
    Ok(())
}

pub(crate) fn new_dctx() -> Result<zstd::bulk::Decompressor<'static>> {
    zstd::bulk::Decompressor::new().map_err(|e| VaultError::Internal(format!("zstd: {e}")))
}

/// Collects blobs into packs of about `target` bytes. Blobs stay in their own buffers
/// (no copying): a local folder writes a pack with vectored writes, and the buffers
/// can then go back to the encoders.
pub(crate) struct Packer {
    parts: Vec<Vec<u8>>,
    len: usize,
    entries: Vec<BlobEntry>,
    target: usize,
    nonces: NonceGen,
}

/// A finished pack: its parts (blobs, then header and trailer) and what the index records.
pub(crate) type FinishedPack = (Vec<Vec<u8>>, PackRecord);

impl Packer {
    pub(crate) fn new(target: usize) -> Result<Packer> {
        Ok(Packer {
            parts: Vec::new(),
            len: 0,
            entries: Vec::new(),
            target,
            nonces: NonceGen::new()?,
        })
    }

    pub(crate) fn add(
        &mut self,
        crypto: &Crypto,
        kind: u8,
        id: Id,
        env: Vec<u8>,
        raw_len: u32,
    ) -> Result<Option<FinishedPack>> {
        if self.add_entry(kind, id, env.len(), raw_len)? {
            self.parts.push(env);
            return self.finish(crypto);
        }
        self.parts.push(env);
        Ok(None)
    }

    /// Records a blob of `stored_len` bytes whose bytes the caller writes itself (a
    /// streamed pack: the parts of [`Packer::finish`] are then only the header and its
    /// length); true when the pack is full and should be finished.
    pub(crate) fn add_entry(
        &mut self,
        kind: u8,
        id: Id,
        stored_len: usize,
        raw_len: u32,
    ) -> Result<bool> {
        self.entries.push(BlobEntry {
            kind,
            id,
            offset: self.len as u64,
            stored_len: u32::try_from(stored_len)
                .map_err(|_| VaultError::Internal("blob too large".into()))?,
            raw_len,
        });
        self.len += stored_len;
        Ok(self.len >= self.target)
    }

    /// Appends the encrypted header and its length; the pack's id is the BLAKE3 of
    /// the encrypted header (which lists every blob's id and length, and is
    /// authenticated), so the name commits to the whole content.
    pub(crate) fn finish(&mut self, crypto: &Crypto) -> Result<Option<FinishedPack>> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        let entries = std::mem::take(&mut self.entries);
        let mut parts = std::mem::take(&mut self.parts);
        let header = crypto.seal(
            &mut self.nonces,
            AAD_PACK_HEADER,
            &encode_pack_header(&entries),
        )?;
        let id = *blake3::hash(&header).as_bytes();
        let hlen = u32::try_from(header.len())
            .map_err(|_| VaultError::Internal("pack header too large".into()))?;
        let size = (self.len + header.len() + 4) as u64;
        self.len = 0;
        parts.push(header);
        parts.push(hlen.to_le_bytes().to_vec());
        Ok(Some((
            parts,
            PackRecord {
                id,
                size,
                blobs: entries,
            },
        )))
    }
}

/// Parses a whole pack: checks its name against the BLAKE3 of the encrypted header and
/// decrypts the header (blobs are authenticated one by one when decoded).
pub(crate) fn read_pack_header(
    crypto: &Crypto,
    id: &Id,
    object: &str,
    pack: &[u8],
) -> Result<Vec<BlobEntry>> {
    let n = pack.len();
    if n < 4 {
        return Err(VaultError::corrupt(object, "too short"));
    }
    let mut l = [0u8; 4];
    l.copy_from_slice(&pack[n - 4..]);
    let hlen = u32::from_le_bytes(l) as usize;
    let hstart = n
        .checked_sub(4 + hlen)
        .ok_or_else(|| VaultError::corrupt(object, "header length beyond the start of the pack"))?;
    let henv = &pack[hstart..n - 4];
    if *blake3::hash(henv).as_bytes() != *id {
        return Err(VaultError::corrupt(
            object,
            "header does not match the pack's name (BLAKE3)",
        ));
    }
    let plain = crypto.open(&format!("{object} (header)"), AAD_PACK_HEADER, henv)?;
    decode_pack_header(&plain, object, hstart as u64)
}
