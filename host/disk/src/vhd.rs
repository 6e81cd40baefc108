//! VHD (Microsoft Virtual Hard Disk, "vpc"). A 512-byte big-endian footer closes the file
//! (and is copied at offset 0 in dynamic disks); fixed disks are the raw data followed by
//! the footer, dynamic disks add a header, a block allocation table (BAT) and blocks that
//! each start with a sector bitmap. A differencing disk is opened with its parent chain:
//! unallocated blocks and sectors whose bitmap bit is clear read from the parent, found
//! through the parent locators and checked by its unique id.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::chain::{self, Opts, Seen, overlay, sector_runs};
use crate::raw::check_range;
use crate::util::{self, Assembler, Ctx, ExtentList, UnitSink, be32, be64, div_ceil};
use crate::{DiskError, DiskReader, DiskWriter, Extent, ExtentKind, Format};

const FIXED: u32 = 2;
const DYNAMIC: u32 = 3;
pub(crate) const DIFFERENCING: u32 = 4;
const UNALLOCATED: u32 = 0xffff_ffff;

/// One's complement of the byte sum, skipping the 4-byte checksum field at `skip`.
pub(crate) fn checksum(b: &[u8], skip: usize) -> u32 {
    let mut sum = 0u32;
    for (i, &x) in b.iter().enumerate() {
        if i < skip || i >= skip + 4 {
            sum = sum.wrapping_add(u32::from(x));
        }
    }
    !sum
}

pub(crate) struct VhdReader {
    ctx: Ctx,
    file: File,
    size: u64,
    kind: Kind,
    /// The footer's unique id: a child's header names its parent by it.
    unique_id: [u8; 16],
    /// The footer's timestamp (seconds since 2000-01-01).
    timestamp: u32,
    /// The footer's CHS geometry bytes.
    geometry: [u8; 4],
    /// The opened parent of a differencing disk.
    parent: Option<Box<VhdReader>>,
}

enum Kind {
    Fixed,
    Dynamic {
        block_size: u64,
        bitmap_size: u64,
        bat: Vec<u32>,
        /// The sector bitmap of the last block read.
        bitmap: Option<(u64, Vec<u8>)>,
    },
}

/// Where a differencing VHD's parent is and who it is (dynamic header, VHD spec).
pub(crate) struct VhdLocator {
    /// The parent's footer unique id.
    parent_id: [u8; 16],
    /// Parent Unicode Name (the parent's file name).
    name: String,
    /// `W2ru` (relative Windows path) and `W2ku` (absolute) locators, and `MacX`.
    relative: Option<String>,
    absolute: Option<String>,
    mac: Option<String>,
}

impl VhdLocator {
    fn recorded(&self) -> String {
        self.relative
            .as_ref()
            .or(self.absolute.as_ref())
            .cloned()
            .unwrap_or_else(|| self.name.clone())
    }
}

const W2RU: u32 = u32::from_be_bytes(*b"W2ru");
const W2KU: u32 = u32::from_be_bytes(*b"W2ku");
const MACX: u32 = u32::from_be_bytes(*b"MacX");
/// Largest parent locator we read.
const MAX_LOCATOR: u64 = 64 << 10;

fn utf16(b: &[u8], big_endian: bool) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| {
            let pair = [c[0], c[1]];
            if big_endian {
                u16::from_be_bytes(pair)
            } else {
                u16::from_le_bytes(pair)
            }
        })
        .take_while(|&c| c != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

fn check_footer(ctx: &Ctx, f: &[u8]) -> Result<(), DiskError> {
    if !f.starts_with(b"conectix") {
        return Err(ctx.corrupt(
            "no footer (\"conectix\" cookie) in the last 512 bytes: the file is truncated",
        ));
    }
    let stored = be32(f, 64);
    let computed = checksum(f, 64);
    if stored != computed {
        return Err(ctx.corrupt(format!(
            "footer checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        )));
    }
    Ok(())
}

fn parse_locator(ctx: &Ctx, file: &File, len: u64, h: &[u8]) -> Result<VhdLocator, DiskError> {
    let mut loc = VhdLocator {
        parent_id: util::bytes(h, 40),
        name: utf16(h.get(64..576).unwrap_or_default(), true),
        relative: None,
        absolute: None,
        mac: None,
    };
    for i in 0..8 {
        let e = 576 + i * 24;
        let code = be32(h, e);
        let data_len = u64::from(be32(h, e + 8));
        let data_off = be64(h, e + 16);
        if code == 0 || data_len == 0 || !matches!(code, W2RU | W2KU | MACX) {
            continue;
        }
        if data_len > MAX_LOCATOR || data_off.saturating_add(data_len) > len {
            return Err(ctx.corrupt(format!(
                "parent locator {i} ({data_len} bytes at offset {data_off}) is too large or lies beyond the end of the file"
            )));
        }
        let mut data = vec![0u8; data_len as usize];
        ctx.read_exact_at(file, &mut data, data_off, "parent locator")?;
        match code {
            W2RU => loc.relative = Some(utf16(&data, false)),
            W2KU => loc.absolute = Some(utf16(&data, false)),
            _ => loc.mac = Some(String::from_utf8_lossy(&data).trim_end_matches('\0').into()),
        }
    }
    if loc.relative.is_none() && loc.absolute.is_none() && loc.mac.is_none() && loc.name.is_empty()
    {
        return Err(ctx.corrupt(
            "differencing disk names no parent (no W2ru, W2ku or MacX locator and no parent name)",
        ));
    }
    Ok(loc)
}

/// Whether the file at `path` (of `len` bytes) ends in a VHD footer.
fn is_vhd(file: &File, len: u64) -> bool {
    let mut f = [0u8; 8];
    len >= 512 && file.read_exact_at(&mut f, len - 512).is_ok() && &f == b"conectix"
}

impl VhdReader {
    /// Opens a VHD and, when it is a differencing disk, its whole parent chain.
    pub fn open(path: &Path, file: File, len: u64, opts: &Opts) -> Result<Self, DiskError> {
        let (top, loc) = Self::parse(path, file, len)?;
        let Some(loc) = loc else {
            return Ok(top);
        };
        let mut seen = Seen::default();
        seen.add(path, chain::canonical(path)?, "VHD")?;
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
        let mut below: Option<Box<VhdReader>> = None;
        while let Some(mut r) = levels.pop() {
            r.parent = below;
            below = Some(Box::new(r));
        }
        match below {
            Some(top) => Ok(*top),
            None => Err(Ctx::new(path, "VHD").corrupt("empty chain")),
        }
    }

    /// Finds, checks and parses the parent `loc` describes (not yet its own parent).
    fn open_parent(
        &self,
        loc: &VhdLocator,
        opts: &Opts,
        seen: &mut Seen,
    ) -> Result<(VhdReader, Option<VhdLocator>), DiskError> {
        let child = &self.ctx.path;
        let tried = chain::candidates(
            child,
            loc.relative.as_deref(),
            &[
                loc.absolute.as_deref(),
                Some(loc.name.as_str()).filter(|n| !n.is_empty()),
                loc.mac.as_deref(),
            ],
        );
        let Some(found) = tried.iter().find(|p| p.is_file()).cloned() else {
            return Err(DiskError::MissingParent {
                path: child.clone(),
                format: "VHD",
                parent: loc.recorded(),
                tried,
            });
        };
        opts.admit(child, &found)?;
        seen.add(child, chain::canonical(&found)?, "VHD")?;
        let mismatch = |what: String| DiskError::ParentMismatch {
            path: child.clone(),
            format: "VHD",
            parent: found.clone(),
            what,
        };
        let file = util::open_ro(&found)?;
        let len = Ctx::new(&found, "VHD").file_len(&file)?;
        if !is_vhd(&file, len) {
            return Err(mismatch("it is not a VHD file".into()));
        }
        let (p, ploc) = VhdReader::parse(&found, file, len)?;
        if p.unique_id != loc.parent_id {
            return Err(mismatch(format!(
                "the child records parent unique id {} but the parent's is {}",
                hex(&loc.parent_id),
                hex(&p.unique_id)
            )));
        }
        if p.size != self.size {
            return Err(mismatch(format!(
                "the child's virtual size is {} bytes but the parent's is {}",
                self.size, p.size
            )));
        }
        Ok((p, ploc))
    }

    /// Parses one VHD file; a differencing disk's parent is not opened (`parent` stays
    /// `None`) and its locator is returned instead.
    fn parse(path: &Path, file: File, len: u64) -> Result<(Self, Option<VhdLocator>), DiskError> {
        let ctx = Ctx::new(path, "VHD");
        if len < 512 {
            return Err(ctx.corrupt(format!(
                "truncated: the file is only {len} bytes, shorter than a footer"
            )));
        }
        let mut footer = [0u8; 512];
        ctx.read_exact_at(&file, &mut footer, len - 512, "footer")?;
        check_footer(&ctx, &footer)?;
        let size = be64(&footer, 48);
        let disk_type = be32(&footer, 60);
        let mut locator = None;
        let kind = match disk_type {
            FIXED => {
                if size > len - 512 {
                    return Err(ctx.corrupt(format!(
                        "truncated: fixed disk of {size} bytes but only {} data bytes before the footer",
                        len - 512
                    )));
                }
                Kind::Fixed
            }
            DYNAMIC | DIFFERENCING => {
                let hdr_off = be64(&footer, 16);
                let mut h = [0u8; 1024];
                if hdr_off.saturating_add(1024) > len - 512 {
                    return Err(ctx.corrupt(format!(
                        "dynamic header offset {hdr_off} lies beyond the end of the file"
                    )));
                }
                ctx.read_exact_at(&file, &mut h, hdr_off, "dynamic disk header")?;
                if !h.starts_with(b"cxsparse") {
                    return Err(ctx.corrupt(format!(
                        "no dynamic disk header (\"cxsparse\") at offset {hdr_off}"
                    )));
                }
                let (stored, computed) = (be32(&h, 36), checksum(&h, 36));
                if stored != computed {
                    return Err(ctx.corrupt(format!(
                        "dynamic header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                    )));
                }
                if disk_type == DIFFERENCING {
                    locator = Some(parse_locator(&ctx, &file, len, &h)?);
                }
                let bat_off = be64(&h, 16);
                let entries = u64::from(be32(&h, 28));
                let block_size = u64::from(be32(&h, 32));
                if !block_size.is_power_of_two() || !(512..=(256 << 20)).contains(&block_size) {
                    return Err(ctx.corrupt(format!(
                        "block size {block_size} is not a power of two between 512 B and 256 MiB"
                    )));
                }
                let needed = div_ceil(size, block_size);
                if entries < needed {
                    return Err(ctx.corrupt(format!(
                        "BAT has {entries} entries but {size} bytes need {needed}"
                    )));
                }
                let bat_bytes = util::table_len(&ctx, needed, 4, util::TABLE_LIMIT, "BAT")?;
                if bat_off.saturating_add(bat_bytes as u64) > len {
                    return Err(ctx.corrupt(format!(
                        "BAT at offset {bat_off} lies beyond the end of the file ({len} bytes)"
                    )));
                }
                let mut raw = vec![0u8; bat_bytes];
                ctx.read_exact_at(&file, &mut raw, bat_off, "BAT")?;
                let bitmap_size = div_ceil(block_size / 512, 8).next_multiple_of(512);
                let mut bat = Vec::with_capacity(raw.len() / 4);
                for (i, c) in raw.chunks_exact(4).enumerate() {
                    let e = be32(c, 0);
                    if e != UNALLOCATED {
                        let end = u64::from(e) * 512 + bitmap_size + block_size;
                        if end > len {
                            return Err(ctx.corrupt(format!(
                                "BAT entry {i} points to a block at sector {e} that ends at {end}, beyond the end of the file ({len} bytes)"
                            )));
                        }
                    }
                    bat.push(e);
                }
                Kind::Dynamic {
                    block_size,
                    bitmap_size,
                    bat,
                    bitmap: None,
                }
            }
            other => return Err(ctx.corrupt(format!("unknown disk type {other}"))),
        };
        Ok((
            VhdReader {
                ctx,
                file,
                size,
                kind,
                unique_id: util::bytes(&footer, 68),
                timestamp: be32(&footer, 24),
                geometry: util::bytes(&footer, 56),
                parent: None,
            },
            locator,
        ))
    }

    /// What a new child must copy or link to: size, unique id, timestamp, geometry.
    pub(crate) fn identity(&self) -> (u64, [u8; 16], u32, [u8; 4]) {
        (self.size, self.unique_id, self.timestamp, self.geometry)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl DiskReader for VhdReader {
    fn format(&self) -> Format {
        match self.kind {
            Kind::Fixed => Format::VhdFixed,
            Kind::Dynamic { .. } if self.parent.is_some() => Format::VhdDifferencing,
            Kind::Dynamic { .. } => Format::VhdDynamic,
        }
    }
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn files(&self) -> Vec<std::path::PathBuf> {
        let mut out = vec![self.ctx.path.clone()];
        if let Some(p) = &self.parent {
            out.extend(p.files());
        }
        out
    }
    fn allocation(&mut self) -> Result<Vec<Extent>, DiskError> {
        let below = match self.parent.as_mut() {
            Some(p) => Some(p.allocation()?),
            None => None,
        };
        let mut list = ExtentList::default();
        let VhdReader {
            ctx,
            file,
            size,
            kind,
            ..
        } = self;
        match kind {
            Kind::Fixed => {
                for (s, e) in util::file_data_ranges(ctx, file, 0, *size)? {
                    list.push(s, e - s, ExtentKind::Data);
                }
            }
            Kind::Dynamic {
                block_size,
                bitmap_size,
                bat,
                bitmap,
            } => {
                let mut cur = 0usize;
                for (i, &e) in bat.iter().enumerate() {
                    let start = i as u64 * *block_size;
                    if start >= *size {
                        break;
                    }
                    let len = (*block_size).min(*size - start);
                    match (&below, e) {
                        (None, UNALLOCATED) => {}
                        (None, _) => list.push(start, len, ExtentKind::Data),
                        (Some(b), UNALLOCATED) => {
                            overlay(&mut list, b, &mut cur, start, start + len)
                        }
                        (Some(b), sector) => {
                            // A differencing block: its own sectors, the parent's for the rest.
                            let bm =
                                load_bitmap(ctx, file, bitmap, i as u64, sector, *bitmap_size)?;
                            for (off, n, present) in sector_runs(bm, 512, 0, len, true) {
                                if present {
                                    list.push(start + off, n, ExtentKind::Data);
                                } else {
                                    overlay(&mut list, b, &mut cur, start + off, start + off + n);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(list.list)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&self.ctx, offset, buf.len(), self.size)?;
        let VhdReader {
            ctx,
            file,
            kind,
            parent,
            ..
        } = self;
        match kind {
            Kind::Fixed => ctx.read_exact_at(file, buf, offset, "data"),
            Kind::Dynamic {
                block_size,
                bitmap_size,
                bat,
                bitmap,
            } => {
                let bs = *block_size;
                let mut pos = offset;
                let mut rest = buf;
                while !rest.is_empty() {
                    let blk = pos / bs;
                    let within = pos % bs;
                    let n = rest.len().min((bs - within) as usize);
                    let (chunk, tail) = rest.split_at_mut(n);
                    match bat.get(blk as usize).copied().unwrap_or(UNALLOCATED) {
                        UNALLOCATED => match parent.as_mut() {
                            Some(p) => p.read_at(pos, chunk)?,
                            None => chunk.fill(0),
                        },
                        sector => {
                            let start = u64::from(sector) * 512;
                            ctx.read_exact_at(
                                file,
                                chunk,
                                start + *bitmap_size + within,
                                "data block",
                            )?;
                            // Sectors whose bitmap bit is clear hold no data here: the
                            // parent's, or zeros without one.
                            let bm = load_bitmap(ctx, file, bitmap, blk, sector, *bitmap_size)?;
                            for (off, len, present) in sector_runs(bm, 512, within, n as u64, true)
                            {
                                if present {
                                    continue;
                                }
                                let dst = chunk
                                    .get_mut((off - within) as usize..(off - within + len) as usize)
                                    .unwrap_or_default();
                                match parent.as_mut() {
                                    Some(p) => p.read_at(blk * bs + off, dst)?,
                                    None => dst.fill(0),
                                }
                            }
                        }
                    }
                    rest = tail;
                    pos += n as u64;
                }
                Ok(())
            }
        }
    }
}

/// The sector bitmap of block `blk` (at `sector`), from the one-block cache.
fn load_bitmap<'a>(
    ctx: &Ctx,
    file: &File,
    cache: &'a mut Option<(u64, Vec<u8>)>,
    blk: u64,
    sector: u32,
    bitmap_size: u64,
) -> Result<&'a [u8], DiskError> {
    if cache.as_ref().map(|(b, _)| *b) != Some(blk) {
        let mut bm = vec![0u8; bitmap_size as usize];
        ctx.read_exact_at(file, &mut bm, u64::from(sector) * 512, "sector bitmap")?;
        *cache = Some((blk, bm));
    }
    Ok(cache
        .as_ref()
        .map(|(_, v)| v.as_slice())
        .unwrap_or_default())
}

/// CHS geometry per the VHD specification's algorithm.
pub(crate) fn chs(size: u64) -> (u16, u8, u8) {
    let mut total = size / 512;
    if total > 65535 * 16 * 255 {
        total = 65535 * 16 * 255;
    }
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    ((cth / heads).min(65535) as u16, heads as u8, spt as u8)
}

const FIXED_UNIT: u64 = 64 << 10;

struct FixedSink {
    ctx: Ctx,
    file: File,
}

impl UnitSink for FixedSink {
    fn put_unit(&mut self, index: u64, data: &[u8]) -> Result<(), DiskError> {
        // The size is a multiple of 1 MiB, so every unit is whole.
        self.ctx.write_all_at(&self.file, data, index * FIXED_UNIT)
    }
}

pub(crate) struct VhdFixedWriter {
    size: u64,
    asm: Assembler,
    sink: FixedSink,
}

/// Builds a fixed-disk footer for `size` bytes.
pub(crate) fn fixed_footer(size: u64, unique_id: [u8; 16], timestamp: u32) -> [u8; 512] {
    let mut f = [0u8; 512];
    util::put(&mut f, 0, b"conectix");
    util::put(&mut f, 8, &2u32.to_be_bytes()); // features: reserved bit always set
    util::put(&mut f, 12, &0x0001_0000u32.to_be_bytes());
    util::put(&mut f, 16, &u64::MAX.to_be_bytes()); // fixed disks have no header
    util::put(&mut f, 24, &timestamp.to_be_bytes());
    util::put(&mut f, 28, b"lboa");
    util::put(&mut f, 32, &0x0001_0000u32.to_be_bytes());
    util::put(&mut f, 36, b"Wi2k");
    util::put(&mut f, 40, &size.to_be_bytes());
    util::put(&mut f, 48, &size.to_be_bytes());
    let (c, h, s) = chs(size);
    // When CHS cannot express the size exactly, store the maximum geometry: readers
    // (qemu, Hyper-V, Azure) then take the size from the footer, not from CHS.
    let (c, h, s) = if u64::from(c) * u64::from(h) * u64::from(s) * 512 == size {
        (c, h, s)
    } else {
        (65535, 16, 255)
    };
    util::put(&mut f, 56, &c.to_be_bytes());
    util::put(&mut f, 58, &[h, s]);
    util::put(&mut f, 60, &FIXED.to_be_bytes());
    util::put(&mut f, 68, &unique_id);
    let sum = checksum(&f, 64);
    util::put(&mut f, 64, &sum.to_be_bytes());
    f
}

impl VhdFixedWriter {
    pub fn create(path: &Path, size: u64) -> Result<Self, DiskError> {
        let ctx = Ctx::new(path, "VHD");
        let size = size
            .checked_next_multiple_of(1 << 20)
            .ok_or_else(|| ctx.invalid("virtual size too large"))?;
        if size > 2040 * (1 << 30) {
            return Err(ctx.invalid(format!(
                "virtual size {size} exceeds the VHD limit of 2040 GiB"
            )));
        }
        let file = util::create_rw(path)?;
        file.set_len(size + 512).map_err(|e| ctx.io("set_len", e))?;
        Ok(VhdFixedWriter {
            size,
            asm: Assembler::new(ctx.clone(), FIXED_UNIT, size)?,
            sink: FixedSink { ctx, file },
        })
    }
}

impl DiskWriter for VhdFixedWriter {
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.asm.write_at(&mut self.sink, offset, data)
    }
    fn finish(mut self: Box<Self>) -> Result<(), DiskError> {
        self.asm.flush(&mut self.sink)?;
        let ctx = self.sink.ctx.clone();
        let id = util::random_bytes::<16>(&ctx)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let ts = now.saturating_sub(946_684_800) as u32; // seconds since 2000-01-01
        ctx.write_all_at(&self.sink.file, &fixed_footer(self.size, id, ts), self.size)?;
        self.sink.file.sync_all().map_err(|e| ctx.io("fsync", e))
    }
}
