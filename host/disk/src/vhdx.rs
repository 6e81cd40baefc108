//! VHDX (MS-VHDX). Little-endian; a 1 MiB header area (file identifier, two headers and
//! two region tables, each protected by CRC-32C) points to the BAT and metadata regions.
//! The BAT interleaves one sector-bitmap entry after every `chunk_ratio` payload entries.
//! A differencing VHDX (HasParent) is opened with its parent chain: blocks it does not
//! hold, and sectors a partially present block's bitmap leaves clear, read from the
//! parent, found through the parent locator and checked by its DataWriteGuid.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::chain::{self, Opts, Seen, overlay, sector_runs};
use crate::raw::check_range;
use crate::util::{self, Assembler, Ctx, ExtentList, UnitSink, crc32c, div_ceil, le16, le32, le64};
use crate::{DiskError, DiskReader, DiskWriter, Extent, ExtentKind, Format};

pub(crate) const MIB: u64 = 1 << 20;
const KIB64: u64 = 64 << 10;

/// A GUID in its on-disk (mixed-endian) form.
const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

const BAT_GUID: [u8; 16] = guid(
    0x2DC2_7766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
const METADATA_GUID: [u8; 16] = guid(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
pub(crate) const FILE_PARAMS: [u8; 16] = guid(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
pub(crate) const VIRTUAL_SIZE: [u8; 16] = guid(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
pub(crate) const PAGE83: [u8; 16] = guid(
    0xBECA_12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
pub(crate) const LOGICAL_SECTOR: [u8; 16] = guid(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);
pub(crate) const PHYSICAL_SECTOR: [u8; 16] = guid(
    0xCDA3_48C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);
pub(crate) const PARENT_LOCATOR: [u8; 16] = guid(
    0xA8D3_5F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);

const NOT_PRESENT: u64 = 0;
const UNDEFINED: u64 = 1;
const ZERO: u64 = 2;
const UNMAPPED: u64 = 3;
pub(crate) const FULLY_PRESENT: u64 = 6;
pub(crate) const PARTIALLY_PRESENT: u64 = 7;

fn checksum_ok(buf: &[u8]) -> bool {
    let stored = le32(buf, 4);
    let mut copy = buf.to_vec();
    util::put(&mut copy, 4, &[0; 4]);
    crc32c(&copy) == stored
}

fn set_checksum(buf: &mut [u8]) {
    util::put(buf, 4, &[0; 4]);
    let c = crc32c(buf);
    util::put(buf, 4, &c.to_le_bytes());
}

pub(crate) struct VhdxReader {
    ctx: Ctx,
    file: VFile,
    fixed: bool,
    size: u64,
    block_size: u64,
    /// Logical sector size.
    lss: u64,
    /// Physical sector size.
    pss: u32,
    chunk_ratio: u64,
    /// Virtual disk id (page 83).
    page83: [u8; 16],
    /// DataWriteGuid of the current header: a child's parent_linkage names it.
    data_write: [u8; 16],
    /// Payload BAT entries only (sector bitmap entries dropped).
    bat: Vec<u64>,
    /// Sector bitmap BAT entries, one per chunk (differencing disks only).
    sb: Vec<u64>,
    /// The opened parent of a differencing disk.
    parent: Option<Box<VhdxReader>>,
    /// The sector bitmap bits of the last partially present block looked at.
    bitmap: Option<(u64, Vec<u8>)>,
}

/// The image file as seen after log replay: the file's bytes, extended with zeros up to
/// the log's LastFileOffset, with the replayed writes of the active log sequence laid
/// over it in order. The file itself is never modified.
struct VFile {
    file: File,
    /// Effective length.
    len: u64,
    real_len: u64,
    ops: Vec<LogOp>,
}

enum LogOp {
    Data { off: u64, sector: Vec<u8> },
    Zero { off: u64, len: u64 },
}

impl VFile {
    fn read(&self, ctx: &Ctx, buf: &mut [u8], off: u64, what: &str) -> Result<(), DiskError> {
        let end = off.checked_add(buf.len() as u64).filter(|&e| e <= self.len).ok_or_else(|| {
            ctx.corrupt(format!(
                "truncated: {what} ({} bytes at offset {off}) lies beyond the end of the file ({} bytes)",
                buf.len(),
                self.len
            ))
        })?;
        let in_file = self.real_len.saturating_sub(off).min(buf.len() as u64) as usize;
        let (have, past) = buf.split_at_mut(in_file);
        ctx.read_exact_at(&self.file, have, off, what)?;
        past.fill(0);
        for op in &self.ops {
            let (o, l) = match op {
                LogOp::Data { off, sector } => (*off, sector.len() as u64),
                LogOp::Zero { off, len } => (*off, *len),
            };
            let (s, e) = (o.max(off), (o + l).min(end));
            if s >= e {
                continue;
            }
            let dst = buf
                .get_mut((s - off) as usize..(e - off) as usize)
                .unwrap_or_default();
            match op {
                LogOp::Data { sector, .. } => dst.copy_from_slice(
                    sector
                        .get((s - o) as usize..(e - o) as usize)
                        .unwrap_or_default(),
                ),
                LogOp::Zero { .. } => dst.fill(0),
            }
        }
        Ok(())
    }

    /// Data ranges of `[start, end)`: the host file's data, plus whatever the log wrote.
    fn data_ranges(&self, ctx: &Ctx, start: u64, end: u64) -> Result<Vec<(u64, u64)>, DiskError> {
        let mut r = util::file_data_ranges(ctx, &self.file, start, end.min(self.real_len))?;
        let touched = self.ops.iter().any(|op| match op {
            LogOp::Data { off, sector } => *off < end && start < off + sector.len() as u64,
            LogOp::Zero { off, len } => *off < end && start < off + len,
        });
        if touched {
            r = vec![(start, end)];
        }
        Ok(r)
    }
}

/// A parsed, checksummed log entry.
struct LogEntry {
    start: u64,
    sectors: u64,
    tail: u64,
    seq: u64,
    flushed: u64,
    last: u64,
    ops: Vec<LogOp>,
}

const LOG_SECTOR: u64 = 4096;
const MAX_LOG: u64 = 64 * MIB;

/// Parses the log entry starting at sector `start` of the circular log, if it is valid.
fn parse_entry(log: &[u8], start: u64, guid: &[u8]) -> Option<LogEntry> {
    let n = log.len() as u64 / LOG_SECTOR;
    let sector = |i: u64| -> &[u8] {
        let at = ((start + i) % n * LOG_SECTOR) as usize;
        log.get(at..at + LOG_SECTOR as usize).unwrap_or_default()
    };
    let h = sector(0);
    if !h.starts_with(b"loge") || h.get(32..48) != Some(guid) {
        return None;
    }
    let len = u64::from(le32(h, 8));
    let tail = u64::from(le32(h, 12));
    let seq = le64(h, 16);
    let count = u64::from(le32(h, 24));
    if len == 0
        || !len.is_multiple_of(LOG_SECTOR)
        || len > log.len() as u64
        || !tail.is_multiple_of(LOG_SECTOR)
        || tail >= log.len() as u64
    {
        return None;
    }
    let sectors = len / LOG_SECTOR;
    let desc_sectors = (64 + 32 * count).div_ceil(LOG_SECTOR);
    if desc_sectors > sectors {
        return None;
    }
    // Checksum over the whole entry (which may wrap around the end of the log).
    let mut whole = Vec::with_capacity(len as usize);
    for i in 0..sectors {
        whole.extend_from_slice(sector(i));
    }
    util::put(&mut whole, 4, &[0; 4]);
    if crc32c(&whole) != le32(h, 4) {
        return None;
    }
    let mut ops = Vec::new();
    let mut data_idx = desc_sectors;
    for d in 0..count {
        let e = (64 + 32 * d) as usize;
        let sig = whole.get(e..e + 4)?;
        let file_off = le64(&whole, e + 16);
        if le64(&whole, e + 24) != seq {
            return None;
        }
        if sig == b"zero" {
            let zlen = le64(&whole, e + 8);
            if !zlen.is_multiple_of(LOG_SECTOR)
                || !file_off.is_multiple_of(LOG_SECTOR)
                || file_off.checked_add(zlen).is_none()
            {
                return None;
            }
            ops.push(LogOp::Zero {
                off: file_off,
                len: zlen,
            });
        } else if sig == b"desc" {
            if data_idx >= sectors
                || !file_off.is_multiple_of(LOG_SECTOR)
                || file_off.checked_add(LOG_SECTOR).is_none()
            {
                return None;
            }
            let ds = sector(data_idx);
            data_idx += 1;
            let ds_seq = (u64::from(le32(ds, 4)) << 32) | u64::from(le32(ds, 4092));
            if !ds.starts_with(b"data") || ds_seq != seq {
                return None;
            }
            let mut full = Vec::with_capacity(LOG_SECTOR as usize);
            full.extend_from_slice(whole.get(e + 8..e + 16)?); // leading bytes
            full.extend_from_slice(ds.get(8..4092)?);
            full.extend_from_slice(whole.get(e + 4..e + 8)?); // trailing bytes
            ops.push(LogOp::Data {
                off: file_off,
                sector: full,
            });
        } else {
            return None;
        }
    }
    if data_idx != sectors {
        return None;
    }
    Some(LogEntry {
        start,
        sectors,
        tail: tail / LOG_SECTOR,
        seq,
        flushed: le64(h, 48),
        last: le64(h, 56),
        ops,
    })
}

/// Finds the active log sequence (the valid sequence whose head has the highest sequence
/// number and whose entries run contiguously from the head's tail to the head) and lays
/// its writes over the file, in memory.
fn replay_log(ctx: &Ctx, vf: &mut VFile, h: &[u8]) -> Result<(), DiskError> {
    let guid = h.get(48..64).unwrap_or_default().to_vec();
    let (log_version, log_len, log_off) = (le16(h, 64), u64::from(le32(h, 68)), le64(h, 72));
    if log_version != 0 {
        return Err(ctx.unsupported(format!("log version {log_version}")));
    }
    if log_len == 0
        || !log_len.is_multiple_of(MIB)
        || !log_off.is_multiple_of(MIB)
        || log_off < MIB
        || log_off.saturating_add(log_len) > vf.real_len
    {
        return Err(ctx.corrupt(format!(
            "the log must be replayed but its region (offset {log_off}, {log_len} bytes) is invalid or beyond the end of the file"
        )));
    }
    if log_len > MAX_LOG {
        return Err(ctx.unsupported(format!(
            "the log must be replayed but it is {log_len} bytes, above the {MAX_LOG}-byte replay limit; replay it with `qemu-img check -r all` or Hyper-V"
        )));
    }
    let mut log = vec![0u8; log_len as usize];
    ctx.read_exact_at(&vf.file, &mut log, log_off, "log")?;
    let n = log_len / LOG_SECTOR;
    let mut heads: Vec<(u64, u64)> = (0..n)
        .filter_map(|s| parse_entry(&log, s, &guid).map(|e| (e.seq, s)))
        .collect();
    heads.sort_unstable_by(|a, b| b.cmp(a));
    for &(_, head_start) in heads.iter().take(64) {
        let Some(head) = parse_entry(&log, head_start, &guid) else {
            continue;
        };
        let mut seq_entries = Vec::new();
        let mut cur = head.tail;
        let mut ok = false;
        for _ in 0..n {
            let Some(e) = parse_entry(&log, cur, &guid) else {
                break;
            };
            if let Some(prev) = seq_entries.last().map(|p: &LogEntry| p.seq)
                && e.seq != prev + 1
            {
                break;
            }
            let (start, sectors, is_head) = (
                e.start,
                e.sectors,
                e.start == head.start && e.seq == head.seq,
            );
            seq_entries.push(e);
            if is_head {
                ok = true;
                break;
            }
            cur = (start + sectors) % n;
        }
        if !ok {
            continue;
        }
        if vf.real_len < head.flushed {
            return Err(ctx.corrupt(format!(
                "truncated: the log says the file held at least {} bytes but it has {}",
                head.flushed, vf.real_len
            )));
        }
        vf.len = vf.real_len.max(head.last);
        for e in seq_entries {
            vf.ops.extend(e.ops);
        }
        return Ok(());
    }
    Err(ctx.corrupt(
        "the header says the log must be replayed but the log holds no valid entry sequence",
    ))
}

fn utf16le(b: &[u8]) -> String {
    let units: Vec<u16> = b.chunks_exact(2).map(|c| le16(c, 0)).collect();
    String::from_utf16_lossy(&units)
}

/// The VHDX parent locator type (the only one MS-VHDX defines).
pub(crate) const VHDX_LOCATOR: [u8; 16] = guid(
    0xB04A_EFB7,
    0xD19E,
    0x4A81,
    [0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13],
);
pub(crate) const SB_PRESENT: u64 = 6;

/// A GUID in its text form, lowercase, without braces.
pub(crate) fn guid_string(b: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        le32(b, 0),
        le16(b, 4),
        le16(b, 6),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

fn norm_guid(s: &str) -> String {
    s.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_ascii_lowercase()
}

/// A parsed VHDX parent locator (MS-VHDX 2.6.2.6).
pub(crate) struct Locator {
    /// `parent_linkage` and `parent_linkage2`, normalised (lowercase, no braces).
    linkage: Vec<String>,
    relative: Option<String>,
    volume: Option<String>,
    absolute: Option<String>,
}

impl Locator {
    /// The parent path as recorded, for messages.
    fn recorded(&self) -> String {
        self.relative
            .as_ref()
            .or(self.absolute.as_ref())
            .or(self.volume.as_ref())
            .cloned()
            .unwrap_or_default()
    }
}

fn parse_locator(ctx: &Ctx, item: &[u8]) -> Result<Locator, DiskError> {
    if item.len() < 20 {
        return Err(ctx.corrupt(format!(
            "parent locator of {} bytes is shorter than its 20-byte header",
            item.len()
        )));
    }
    let ty: [u8; 16] = util::bytes(item, 0);
    if ty != VHDX_LOCATOR {
        return Err(ctx.unsupported(format!(
            "parent locator type {{{}}} is not the VHDX locator type {{{}}}: only VHDX parents are supported",
            guid_string(&ty),
            guid_string(&VHDX_LOCATOR)
        )));
    }
    let count = le16(item, 18) as usize;
    if 20 + count * 12 > item.len() {
        return Err(ctx.corrupt(format!(
            "parent locator claims {count} entries but holds only {} bytes",
            item.len()
        )));
    }
    let mut loc = Locator {
        linkage: Vec::new(),
        relative: None,
        volume: None,
        absolute: None,
    };
    let mut has_linkage = false;
    for i in 0..count {
        let e = 20 + i * 12;
        let (ko, vo) = (le32(item, e) as usize, le32(item, e + 4) as usize);
        let (kl, vl) = (le16(item, e + 8) as usize, le16(item, e + 10) as usize);
        let (Some(k), Some(v)) = (
            item.get(ko..ko.saturating_add(kl)),
            item.get(vo..vo.saturating_add(vl)),
        ) else {
            return Err(ctx.corrupt(format!(
                "parent locator entry {i} lies outside the locator item"
            )));
        };
        let value = utf16le(v);
        match utf16le(k).as_str() {
            "parent_linkage" => {
                has_linkage = true;
                loc.linkage.push(norm_guid(&value));
            }
            "parent_linkage2" => loc.linkage.push(norm_guid(&value)),
            "relative_path" => loc.relative = Some(value),
            "volume_path" => loc.volume = Some(value),
            "absolute_win32_path" => loc.absolute = Some(value),
            _ => {}
        }
    }
    if !has_linkage {
        return Err(ctx.corrupt("parent locator lacks its parent_linkage entry"));
    }
    if loc.relative.is_none() && loc.volume.is_none() && loc.absolute.is_none() {
        return Err(ctx.corrupt(
            "parent locator has no relative_path, volume_path or absolute_win32_path entry",
        ));
    }
    Ok(loc)
}

/// See [`VhdxReader::identity`].
pub(crate) struct ParentIdentity {
    pub size: u64,
    pub lss: u64,
    pub pss: u32,
    pub page83: [u8; 16],
    pub data_write: [u8; 16],
}

impl VhdxReader {
    /// Opens a VHDX and, when it is a differencing disk, its whole parent chain.
    pub fn open(path: &Path, file: File, opts: &Opts) -> Result<Self, DiskError> {
        let (top, loc) = Self::parse(path, file)?;
        let Some(loc) = loc else {
            return Ok(top);
        };
        let mut seen = Seen::default();
        seen.add(path, chain::canonical(path)?, "VHDX")?;
        let mut next = Some(loc);
        let mut levels = vec![top];
        while let Some(loc) = next.take() {
            let Some(child) = levels.last() else {
                break;
            };
            let (parent, ploc) = child.open_parent(&loc, opts, &mut seen)?;
            levels.push(parent);
            next = ploc;
        }
        let mut below: Option<Box<VhdxReader>> = None;
        while let Some(mut r) = levels.pop() {
            r.parent = below;
            below = Some(Box::new(r));
        }
        match below {
            Some(top) => Ok(*top),
            None => Err(Ctx::new(path, "VHDX").corrupt("empty chain")),
        }
    }

    /// Finds, checks and parses the parent `loc` describes (not yet its own parent).
    fn open_parent(
        &self,
        loc: &Locator,
        opts: &Opts,
        seen: &mut Seen,
    ) -> Result<(VhdxReader, Option<Locator>), DiskError> {
        let child = &self.ctx.path;
        let tried = chain::candidates(
            child,
            loc.relative.as_deref(),
            &[loc.volume.as_deref(), loc.absolute.as_deref()],
        );
        let Some(found) = tried.iter().find(|p| p.is_file()).cloned() else {
            return Err(DiskError::MissingParent {
                path: child.clone(),
                format: "VHDX",
                parent: loc.recorded(),
                tried,
            });
        };
        opts.admit(child, &found)?;
        seen.add(child, chain::canonical(&found)?, "VHDX")?;
        let mismatch = |what: String| DiskError::ParentMismatch {
            path: child.clone(),
            format: "VHDX",
            parent: found.clone(),
            what,
        };
        let file = util::open_ro(&found)?;
        let mut sig = [0u8; 8];
        if Ctx::new(&found, "VHDX").file_len(&file)? < 8
            || file.read_exact_at(&mut sig, 0).is_err()
            || &sig != b"vhdxfile"
        {
            return Err(mismatch("it is not a VHDX file".into()));
        }
        let (p, ploc) = VhdxReader::parse(&found, file)?;
        let dw = guid_string(&p.data_write);
        if !loc.linkage.contains(&dw) {
            return Err(mismatch(format!(
                "the child records parent_linkage {{{}}} but the parent's DataWriteGuid is {{{dw}}}",
                loc.linkage.join("}, {")
            )));
        }
        if p.size != self.size {
            return Err(mismatch(format!(
                "the child's virtual size is {} bytes but the parent's is {}",
                self.size, p.size
            )));
        }
        if p.lss != self.lss {
            return Err(mismatch(format!(
                "the child's logical sector size is {} bytes but the parent's is {}",
                self.lss, p.lss
            )));
        }
        Ok((p, ploc))
    }

    /// Parses one VHDX file; a differencing disk's parent is not opened (`parent` stays
    /// `None`) and its locator is returned instead.
    fn parse(path: &Path, file: File) -> Result<(Self, Option<Locator>), DiskError> {
        let ctx = Ctx::new(path, "VHDX");
        let file_len = ctx.file_len(&file)?;
        if file_len < MIB {
            return Err(ctx.corrupt(format!(
                "truncated: {file_len} bytes is shorter than the 1 MiB header area"
            )));
        }
        // Headers: the valid one with the highest sequence number is current.
        let mut current: Option<Vec<u8>> = None;
        for off in [KIB64, 2 * KIB64] {
            let mut h = vec![0u8; 4096];
            ctx.read_exact_at(&file, &mut h, off, "header")?;
            if !h.starts_with(b"head") || !checksum_ok(&h) {
                continue;
            }
            if current.as_ref().is_none_or(|c| le64(&h, 8) > le64(c, 8)) {
                current = Some(h);
            }
        }
        let Some(h) = current else {
            return Err(ctx.corrupt(
                "neither header (at 64 KiB and 128 KiB) has a valid signature and CRC-32C checksum",
            ));
        };
        if le16(&h, 66) != 1 {
            return Err(ctx.unsupported(format!("header version {}", le16(&h, 66))));
        }
        let data_write: [u8; 16] = util::bytes(&h, 32);
        let mut vf = VFile {
            file,
            len: file_len,
            real_len: file_len,
            ops: Vec::new(),
        };
        if !util::is_zero(h.get(48..64).unwrap_or_default()) {
            replay_log(&ctx, &mut vf, &h)?;
        }
        // Region table.
        let mut regions: Option<Vec<u8>> = None;
        for off in [3 * KIB64, 4 * KIB64] {
            let mut r = vec![0u8; KIB64 as usize];
            vf.read(&ctx, &mut r, off, "region table")?;
            if r.starts_with(b"regi") && checksum_ok(&r) {
                regions = Some(r);
                break;
            }
        }
        let Some(r) = regions else {
            return Err(ctx.corrupt("neither region table (at 192 KiB and 256 KiB) has a valid signature and CRC-32C checksum"));
        };
        let count = le32(&r, 8);
        if count > 2047 {
            return Err(ctx.corrupt(format!(
                "region table has {count} entries (at most 2047 allowed)"
            )));
        }
        let (mut bat_region, mut meta_region) = (None, None);
        for i in 0..count as usize {
            let e = 16 + i * 32;
            let id: [u8; 16] = util::bytes(&r, e);
            let (off, len, required) = (
                le64(&r, e + 16),
                u64::from(le32(&r, e + 24)),
                le32(&r, e + 28) & 1 != 0,
            );
            if off.saturating_add(len) > vf.len || off < MIB {
                return Err(ctx.corrupt(format!(
                    "region {i} at offset {off} ({len} bytes) overlaps the header area or lies beyond the end of the file ({file_len} bytes)"
                )));
            }
            if id == BAT_GUID {
                bat_region = Some((off, len));
            } else if id == METADATA_GUID {
                meta_region = Some((off, len));
            } else if required {
                return Err(ctx.unsupported(format!("unknown required region {id:02x?}")));
            }
        }
        let (Some((bat_off, bat_len)), Some((meta_off, meta_len))) = (bat_region, meta_region)
        else {
            return Err(ctx.corrupt("region table lacks the BAT or the metadata region"));
        };
        // Metadata.
        if meta_len < KIB64 {
            return Err(ctx.corrupt(format!(
                "metadata region of {meta_len} bytes is smaller than its 64 KiB table"
            )));
        }
        let mut m = vec![0u8; KIB64 as usize];
        vf.read(&ctx, &mut m, meta_off, "metadata table")?;
        if !m.starts_with(b"metadata") {
            return Err(ctx.corrupt("metadata table lacks its \"metadata\" signature"));
        }
        let mcount = le16(&m, 10);
        if mcount > 2047 {
            return Err(ctx.corrupt(format!(
                "metadata table has {mcount} entries (at most 2047 allowed)"
            )));
        }
        let mut items: Vec<([u8; 16], Vec<u8>)> = Vec::new();
        for i in 0..mcount as usize {
            let e = 32 + i * 32;
            let id: [u8; 16] = util::bytes(&m, e);
            let (ioff, ilen, flags) = (
                u64::from(le32(&m, e + 16)),
                u64::from(le32(&m, e + 20)),
                le32(&m, e + 24),
            );
            let known = [
                FILE_PARAMS,
                VIRTUAL_SIZE,
                PAGE83,
                LOGICAL_SECTOR,
                PHYSICAL_SECTOR,
                PARENT_LOCATOR,
            ]
            .contains(&id);
            if !known {
                if flags & 4 != 0 {
                    return Err(
                        ctx.unsupported(format!("unknown required metadata item {id:02x?}"))
                    );
                }
                continue;
            }
            if ilen > MIB || (ilen > 0 && (ioff < KIB64 || ioff + ilen > meta_len)) {
                return Err(ctx.corrupt(format!("metadata item {i} (offset {ioff}, {ilen} bytes) lies outside the metadata region")));
            }
            let mut data = vec![0u8; ilen as usize];
            vf.read(&ctx, &mut data, meta_off + ioff, "metadata item")?;
            items.push((id, data));
        }
        let item = |id: [u8; 16]| {
            items
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, d)| d.as_slice())
        };
        let need = |id: [u8; 16], name: &str, len: usize| -> Result<&[u8], DiskError> {
            match item(id) {
                Some(d) if d.len() >= len => Ok(d),
                _ => Err(ctx.corrupt(format!(
                    "required metadata item {name} is missing or too short"
                ))),
            }
        };
        let fp = need(FILE_PARAMS, "file parameters", 8)?;
        let block_size = u64::from(le32(fp, 0));
        let fp_flags = le32(fp, 4);
        let has_parent = fp_flags & 2 != 0;
        let locator = if has_parent {
            let Some(item) = item(PARENT_LOCATOR) else {
                return Err(ctx.corrupt(
                    "the file parameters say the disk has a parent but there is no parent locator",
                ));
            };
            Some(parse_locator(&ctx, item)?)
        } else {
            None
        };
        if !block_size.is_power_of_two() || !(MIB..=256 * MIB).contains(&block_size) {
            return Err(ctx.corrupt(format!(
                "block size {block_size} is not a power of two between 1 MiB and 256 MiB"
            )));
        }
        let size = le64(need(VIRTUAL_SIZE, "virtual disk size", 8)?, 0);
        let lss = u64::from(le32(need(LOGICAL_SECTOR, "logical sector size", 4)?, 0));
        if lss != 512 && lss != 4096 {
            return Err(ctx.corrupt(format!("logical sector size {lss} is neither 512 nor 4096")));
        }
        let pss = le32(need(PHYSICAL_SECTOR, "physical sector size", 4)?, 0);
        let page83: [u8; 16] = util::bytes(need(PAGE83, "virtual disk id", 16)?, 0);
        if size > 64 << 40 {
            return Err(ctx.corrupt(format!(
                "virtual size {size} exceeds the 64 TiB VHDX maximum"
            )));
        }
        let chunk_ratio = (1u64 << 23) * lss / block_size;
        let blocks = div_ceil(size, block_size);
        let chunks = div_ceil(blocks, chunk_ratio);
        // Entries up to the last payload block; a differencing disk also has the sector
        // bitmap entry of its last chunk (MS-VHDX 2.5), read when the region holds it.
        let needed = if blocks == 0 {
            0
        } else {
            blocks + (blocks - 1) / chunk_ratio
        };
        let total = if has_parent {
            (chunks * (chunk_ratio + 1)).min(bat_len / 8).max(needed)
        } else {
            needed
        };
        let bat_bytes = util::table_len(&ctx, total, 8, util::TABLE_LIMIT, "BAT")?;
        if bat_bytes as u64 > bat_len {
            return Err(ctx.corrupt(format!(
                "BAT needs {bat_bytes} bytes but its region has {bat_len}"
            )));
        }
        let mut raw = vec![0u8; bat_bytes];
        vf.read(&ctx, &mut raw, bat_off, "BAT")?;
        let entry = |idx: u64| le64(&raw, idx as usize * 8);
        // (file offset, length) of every block the BAT places, to refuse overlaps.
        let mut seen: Vec<(u64, u64)> = Vec::new();
        let mut sb = Vec::new();
        if has_parent {
            for c in 0..chunks {
                let e = entry(c * (chunk_ratio + 1) + chunk_ratio);
                match e & 7 {
                    NOT_PRESENT => {}
                    SB_PRESENT => {
                        let off = e & !(MIB - 1);
                        if off < MIB || off.saturating_add(MIB) > vf.len {
                            return Err(ctx.corrupt(format!(
                                "BAT entry for the sector bitmap of chunk {c} points to offset {off}, inside the header area or beyond the end of the file ({file_len} bytes)"
                            )));
                        }
                        seen.push((off, MIB));
                    }
                    s => {
                        return Err(ctx.corrupt(format!(
                            "BAT entry for the sector bitmap of chunk {c} has invalid state {s}"
                        )));
                    }
                }
                sb.push(e);
            }
        }
        let mut bat = Vec::with_capacity(blocks as usize);
        for b in 0..blocks {
            let e = entry(b + b / chunk_ratio);
            let state = e & 7;
            match state {
                NOT_PRESENT | UNDEFINED | ZERO | UNMAPPED => {}
                FULLY_PRESENT | PARTIALLY_PRESENT => {
                    if state == PARTIALLY_PRESENT && !has_parent {
                        return Err(ctx.corrupt(format!(
                            "block {b} is partially present but the disk has no parent"
                        )));
                    }
                    if state == PARTIALLY_PRESENT
                        && sb.get((b / chunk_ratio) as usize).map(|s| s & 7) != Some(SB_PRESENT)
                    {
                        return Err(ctx.corrupt(format!(
                            "block {b} is partially present but the sector bitmap block of its chunk is not"
                        )));
                    }
                    let off = e & !(MIB - 1);
                    if off < MIB || off.saturating_add(block_size) > vf.len {
                        return Err(ctx.corrupt(format!(
                            "BAT entry for block {b} points to offset {off}, inside the header area or beyond the end of the file ({file_len} bytes)"
                        )));
                    }
                    seen.push((off, block_size));
                }
                s => {
                    return Err(
                        ctx.corrupt(format!("BAT entry for block {b} has invalid state {s}"))
                    );
                }
            }
            bat.push(e);
        }
        drop(raw);
        seen.sort_unstable();
        if seen.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
            return Err(ctx.corrupt("two BAT entries map overlapping file ranges"));
        }
        drop(seen);
        let fixed = fp_flags & 1 != 0 && !has_parent;
        Ok((
            VhdxReader {
                ctx,
                file: vf,
                fixed,
                size,
                block_size,
                lss,
                pss,
                chunk_ratio,
                page83,
                data_write,
                bat,
                sb,
                parent: None,
                bitmap: None,
            },
            locator,
        ))
    }

    /// What a new child must copy or link to: the virtual size, the logical and
    /// physical sector sizes, the virtual disk id and the DataWriteGuid.
    pub(crate) fn identity(&self) -> ParentIdentity {
        ParentIdentity {
            size: self.size,
            lss: self.lss,
            pss: self.pss,
            page83: self.page83,
            data_write: self.data_write,
        }
    }

    /// Loads the sector bitmap bits of payload block `b` (a partially present block).
    fn load_bitmap(&mut self, b: u64) -> Result<(), DiskError> {
        if self.bitmap.as_ref().map(|(x, _)| *x) == Some(b) {
            return Ok(());
        }
        let spb = self.block_size / self.lss;
        let sb_off = self
            .sb
            .get((b / self.chunk_ratio) as usize)
            .copied()
            .unwrap_or(0)
            & !(MIB - 1);
        let at = sb_off + (b % self.chunk_ratio) * spb / 8;
        let mut bits = vec![0u8; (spb / 8) as usize];
        self.file.read(&self.ctx, &mut bits, at, "sector bitmap")?;
        self.bitmap = Some((b, bits));
        Ok(())
    }

    fn own_allocation(&mut self) -> Result<Vec<Extent>, DiskError> {
        let mut list = ExtentList::default();
        for (b, &e) in self.bat.iter().enumerate() {
            let start = b as u64 * self.block_size;
            let len = self.block_size.min(self.size - start);
            match e & 7 {
                FULLY_PRESENT => {
                    // Within a present block, the host file's holes are known zeros.
                    let off = e & !(MIB - 1);
                    for (s, t) in self.file.data_ranges(&self.ctx, off, off + len)? {
                        list.push(start + (s - off), t - s, ExtentKind::Data);
                    }
                }
                ZERO => list.push(start, len, ExtentKind::Cleared),
                _ => {}
            }
        }
        Ok(list.list)
    }

    /// Reads `chunk` at `within` bytes into partially present block `b`: sectors whose
    /// bitmap bit is set from this file, the others from the parent.
    fn read_partial(
        &mut self,
        b: u64,
        e: u64,
        within: u64,
        chunk: &mut [u8],
    ) -> Result<(), DiskError> {
        self.load_bitmap(b)?;
        let bits = self
            .bitmap
            .as_ref()
            .map(|(_, v)| v.as_slice())
            .unwrap_or_default();
        let runs = sector_runs(bits, self.lss, within, chunk.len() as u64, false);
        let block_start = b * self.block_size;
        for (off, len, present) in runs {
            let dst = chunk
                .get_mut((off - within) as usize..(off - within + len) as usize)
                .unwrap_or_default();
            if present {
                self.file
                    .read(&self.ctx, dst, (e & !(MIB - 1)) + off, "payload block")?;
            } else if let Some(p) = self.parent.as_mut() {
                p.read_at(block_start + off, dst)?;
            } else {
                dst.fill(0);
            }
        }
        Ok(())
    }
}

impl DiskReader for VhdxReader {
    fn format(&self) -> Format {
        if self.parent.is_some() {
            Format::VhdxDifferencing
        } else if self.fixed {
            Format::VhdxFixed
        } else {
            Format::VhdxDynamic
        }
    }
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn files(&self) -> Vec<PathBuf> {
        let mut out = vec![self.ctx.path.clone()];
        if let Some(p) = &self.parent {
            out.extend(p.files());
        }
        out
    }
    fn allocation(&mut self) -> Result<Vec<Extent>, DiskError> {
        let below = match self.parent.as_mut() {
            Some(p) => p.allocation()?,
            None => return self.own_allocation(),
        };
        // What this level decides overrides the chain below it; the rest shows through.
        let mut list = ExtentList::default();
        let mut cur = 0usize;
        for b in 0..self.bat.len() as u64 {
            let e = self.bat.get(b as usize).copied().unwrap_or(0);
            let start = b * self.block_size;
            let len = self.block_size.min(self.size - start);
            match e & 7 {
                NOT_PRESENT => overlay(&mut list, &below, &mut cur, start, start + len),
                FULLY_PRESENT => {
                    let off = e & !(MIB - 1);
                    for (s, t) in self.file.data_ranges(&self.ctx, off, off + len)? {
                        list.push(start + (s - off), t - s, ExtentKind::Data);
                    }
                }
                PARTIALLY_PRESENT => {
                    self.load_bitmap(b)?;
                    let bits = self
                        .bitmap
                        .as_ref()
                        .map(|(_, v)| v.as_slice())
                        .unwrap_or_default();
                    for (off, n, present) in sector_runs(bits, self.lss, 0, len, false) {
                        if present {
                            list.push(start + off, n, ExtentKind::Data);
                        } else {
                            overlay(&mut list, &below, &mut cur, start + off, start + off + n);
                        }
                    }
                }
                // ZERO reads as zeros; UNMAPPED and UNDEFINED may, and do here. All three
                // hide the parent.
                _ => list.push(start, len, ExtentKind::Cleared),
            }
        }
        Ok(list.list)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&self.ctx, offset, buf.len(), self.size)?;
        let bs = self.block_size;
        let mut pos = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let b = pos / bs;
            let within = pos % bs;
            let n = rest.len().min((bs - within) as usize);
            let (chunk, tail) = rest.split_at_mut(n);
            let e = self.bat.get(b as usize).copied().unwrap_or(0);
            match e & 7 {
                FULLY_PRESENT => {
                    self.file
                        .read(&self.ctx, chunk, (e & !(MIB - 1)) + within, "payload block")?;
                }
                PARTIALLY_PRESENT => self.read_partial(b, e, within, chunk)?,
                NOT_PRESENT => match self.parent.as_mut() {
                    Some(p) => p.read_at(pos, chunk)?,
                    None => chunk.fill(0),
                },
                _ => chunk.fill(0),
            }
            rest = tail;
            pos += n as u64;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- writer

const W_BLOCK: u64 = 32 * MIB;
const W_UNIT: u64 = MIB;
const W_LSS: u64 = 512;
const W_PSS: u32 = 4096;
const W_CHUNK_RATIO: u64 = (1 << 23) * W_LSS / W_BLOCK;
const LOG_OFF: u64 = MIB;
const LOG_LEN: u64 = MIB;
const META_OFF: u64 = 2 * MIB;
const META_LEN: u64 = MIB;
pub(crate) const BAT_OFF: u64 = 3 * MIB;

struct VhdxSink {
    ctx: Ctx,
    file: File,
    bat: Vec<u64>,
    next_free: u64,
}

impl UnitSink for VhdxSink {
    fn put_unit(&mut self, index: u64, data: &[u8]) -> Result<(), DiskError> {
        let per_block = W_BLOCK / W_UNIT;
        let b = index / per_block;
        let slot = (b + b / W_CHUNK_RATIO) as usize;
        let cur = self.bat.get(slot).copied().unwrap_or(0);
        let block_off = if cur & 7 == FULLY_PRESENT {
            cur & !(MIB - 1)
        } else {
            let off = self.next_free;
            self.next_free += W_BLOCK;
            if let Some(e) = self.bat.get_mut(slot) {
                *e = off | FULLY_PRESENT;
            }
            off
        };
        self.ctx
            .write_all_at(&self.file, data, block_off + (index % per_block) * W_UNIT)
    }
}

pub(crate) struct VhdxWriter {
    size: u64,
    asm: Assembler,
    sink: VhdxSink,
}

impl VhdxWriter {
    pub fn create(path: &Path, size: u64) -> Result<Self, DiskError> {
        let ctx = Ctx::new(path, "VHDX");
        let size = size
            .checked_next_multiple_of(W_LSS)
            .ok_or_else(|| ctx.invalid("virtual size too large"))?;
        if size > 64 << 40 {
            return Err(ctx.invalid(format!(
                "virtual size {size} exceeds the 64 TiB VHDX maximum"
            )));
        }
        let blocks = div_ceil(size, W_BLOCK);
        let total = if blocks == 0 {
            0
        } else {
            blocks + (blocks - 1) / W_CHUNK_RATIO
        };
        let bat_len = util::table_len(&ctx, total, 8, util::TABLE_LIMIT, "BAT")? / 8;
        let bat_region = ((bat_len as u64) * 8).next_multiple_of(MIB).max(MIB);
        let file = util::create_rw(path)?;
        Ok(VhdxWriter {
            size,
            asm: Assembler::new(ctx.clone(), W_UNIT, size)?,
            sink: VhdxSink {
                ctx,
                file,
                bat: vec![0; bat_len],
                next_free: BAT_OFF + bat_region,
            },
        })
    }
}

impl DiskWriter for VhdxWriter {
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.asm.write_at(&mut self.sink, offset, data)
    }
    fn finish(mut self: Box<Self>) -> Result<(), DiskError> {
        self.asm.flush(&mut self.sink)?;
        let s = &mut self.sink;
        let ctx = s.ctx.clone();
        let bat_region = ((s.bat.len() as u64) * 8).next_multiple_of(MIB).max(MIB);
        // BAT.
        let mut raw = vec![0u8; s.bat.len() * 8];
        for (i, e) in s.bat.iter().enumerate() {
            util::put(&mut raw, i * 8, &e.to_le_bytes());
        }
        ctx.write_all_at(&s.file, &raw, BAT_OFF)?;
        drop(raw);
        let page83 = util::random_bytes::<16>(&ctx)?;
        let items = [
            (
                FILE_PARAMS,
                [(W_BLOCK as u32).to_le_bytes(), 0u32.to_le_bytes()].concat(),
                4,
            ),
            (VIRTUAL_SIZE, self.size.to_le_bytes().to_vec(), 2 | 4),
            (PAGE83, page83.to_vec(), 2 | 4),
            (LOGICAL_SECTOR, (W_LSS as u32).to_le_bytes().to_vec(), 2 | 4),
            (PHYSICAL_SECTOR, W_PSS.to_le_bytes().to_vec(), 2 | 4),
        ];
        write_structures(&ctx, &s.file, &items, bat_region)?;
        s.file
            .set_len(s.next_free)
            .map_err(|e| ctx.io("set_len", e))?;
        s.file.sync_all().map_err(|e| ctx.io("fsync", e))
    }
}

/// Writes everything of a VHDX but the BAT and the blocks: the metadata region at
/// 2 MiB (table, then `items` — `(id, data, flags)` — from 64 KiB on), the two region
/// tables (BAT at 3 MiB of `bat_region` bytes, metadata), the two headers (sequence
/// numbers 1 and 2, random write GUIDs, an empty 1 MiB log at 1 MiB, log GUID zero) and
/// last the file identifier, creator `lifeboat`.
pub(crate) fn write_structures(
    ctx: &Ctx,
    file: &File,
    items: &[([u8; 16], Vec<u8>, u32)],
    bat_region: u64,
) -> Result<(), DiskError> {
    let items_len: usize = items
        .iter()
        .map(|(_, d, _)| d.len().next_multiple_of(8))
        .sum();
    if items_len as u64 > META_LEN - KIB64 {
        return Err(ctx.invalid("metadata items do not fit in the metadata region"));
    }
    let mut meta = vec![0u8; (KIB64 as usize + items_len).max(2 * KIB64 as usize)];
    util::put(&mut meta, 0, b"metadata");
    util::put(&mut meta, 10, &(items.len() as u16).to_le_bytes());
    let mut item_off = KIB64 as usize;
    for (i, (id, data, flags)) in items.iter().enumerate() {
        let e = 32 + i * 32;
        util::put(&mut meta, e, id);
        util::put(&mut meta, e + 16, &(item_off as u32).to_le_bytes());
        util::put(&mut meta, e + 20, &(data.len() as u32).to_le_bytes());
        util::put(&mut meta, e + 24, &flags.to_le_bytes());
        util::put(&mut meta, item_off, data);
        item_off += data.len().next_multiple_of(8);
    }
    ctx.write_all_at(file, &meta, META_OFF)?;
    // Region tables (two identical copies).
    let mut rt = vec![0u8; KIB64 as usize];
    util::put(&mut rt, 0, b"regi");
    util::put(&mut rt, 8, &2u32.to_le_bytes());
    for (i, (id, off, len)) in [
        (BAT_GUID, BAT_OFF, bat_region),
        (METADATA_GUID, META_OFF, META_LEN),
    ]
    .iter()
    .enumerate()
    {
        let e = 16 + i * 32;
        util::put(&mut rt, e, id);
        util::put(&mut rt, e + 16, &off.to_le_bytes());
        util::put(&mut rt, e + 24, &(*len as u32).to_le_bytes());
        util::put(&mut rt, e + 28, &1u32.to_le_bytes());
    }
    set_checksum(&mut rt);
    ctx.write_all_at(file, &rt, 3 * KIB64)?;
    ctx.write_all_at(file, &rt, 4 * KIB64)?;
    // Headers (sequence numbers 1 and 2; the log is empty and inactive).
    let file_write = util::random_bytes::<16>(ctx)?;
    let data_write = util::random_bytes::<16>(ctx)?;
    for (seq, off) in [(1u64, KIB64), (2u64, 2 * KIB64)] {
        let mut h = vec![0u8; 4096];
        util::put(&mut h, 0, b"head");
        util::put(&mut h, 8, &seq.to_le_bytes());
        util::put(&mut h, 16, &file_write);
        util::put(&mut h, 32, &data_write);
        util::put(&mut h, 66, &1u16.to_le_bytes());
        util::put(&mut h, 68, &(LOG_LEN as u32).to_le_bytes());
        util::put(&mut h, 72, &LOG_OFF.to_le_bytes());
        set_checksum(&mut h);
        ctx.write_all_at(file, &h, off)?;
    }
    // File type identifier last.
    let mut ident = vec![0u8; 520];
    util::put(&mut ident, 0, b"vhdxfile");
    let creator: Vec<u8> = "lifeboat"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    util::put(&mut ident, 8, &creator);
    ctx.write_all_at(file, &ident, 0)
}
