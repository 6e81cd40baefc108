//! VHD (Microsoft Virtual Hard Disk, "vpc"). A 512-byte big-endian footer closes the file
//! (and is copied at offset 0 in dynamic disks); fixed disks are the raw data followed by
//! the footer, dynamic disks add a header, a block allocation table (BAT) and blocks that
//! each start with a sector bitmap.

use std::fs::File;
use std::path::Path;

use crate::raw::check_range;
use crate::util::{self, Assembler, Ctx, ExtentList, UnitSink, be32, be64, div_ceil};
use crate::{DiskError, DiskReader, DiskWriter, Extent, ExtentKind, Format};

const FIXED: u32 = 2;
const DYNAMIC: u32 = 3;
const DIFFERENCING: u32 = 4;
const UNALLOCATED: u32 = 0xffff_ffff;

/// One's complement of the byte sum, skipping the 4-byte checksum field at `skip`.
fn checksum(b: &[u8], skip: usize) -> u32 {
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

impl VhdReader {
    pub fn open(path: &Path, file: File, len: u64) -> Result<Self, DiskError> {
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
                    let name: Vec<u16> = h[64..576]
                        .chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .take_while(|&c| c != 0)
                        .collect();
                    return Err(ctx.backing(String::from_utf16_lossy(&name)));
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
        Ok(VhdReader {
            ctx,
            file,
            size,
            kind,
        })
    }
}

impl DiskReader for VhdReader {
    fn format(&self) -> Format {
        match self.kind {
            Kind::Fixed => Format::VhdFixed,
            Kind::Dynamic { .. } => Format::VhdDynamic,
        }
    }
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn allocation(&mut self) -> Result<Vec<Extent>, DiskError> {
        let mut list = ExtentList::default();
        match &self.kind {
            Kind::Fixed => {
                for (s, e) in util::file_data_ranges(&self.ctx, &self.file, 0, self.size)? {
                    list.push(s, e - s, ExtentKind::Data);
                }
            }
            Kind::Dynamic {
                block_size, bat, ..
            } => {
                for (i, &e) in bat.iter().enumerate() {
                    let start = i as u64 * block_size;
                    if e != UNALLOCATED && start < self.size {
                        list.push(
                            start,
                            (*block_size).min(self.size - start),
                            ExtentKind::Data,
                        );
                    }
                }
            }
        }
        Ok(list.list)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&self.ctx, offset, buf.len(), self.size)?;
        match &mut self.kind {
            Kind::Fixed => self.ctx.read_exact_at(&self.file, buf, offset, "data"),
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
                        UNALLOCATED => chunk.fill(0),
                        sector => {
                            let start = u64::from(sector) * 512;
                            self.ctx.read_exact_at(
                                &self.file,
                                chunk,
                                start + *bitmap_size + within,
                                "data block",
                            )?;
                            // Sectors whose bitmap bit is clear hold no data: zeros.
                            if bitmap.as_ref().map(|(b, _)| *b) != Some(blk) {
                                let mut bm = vec![0u8; *bitmap_size as usize];
                                self.ctx.read_exact_at(
                                    &self.file,
                                    &mut bm,
                                    start,
                                    "sector bitmap",
                                )?;
                                *bitmap = Some((blk, bm));
                            }
                            let bm = bitmap
                                .as_ref()
                                .map(|(_, v)| v.as_slice())
                                .unwrap_or_default();
                            mask_absent(bm, within, chunk);
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

/// Zeroes the parts of `chunk` (starting `within` bytes into its block) whose sectors
/// are marked absent (bit clear, most significant bit first) in the block's bitmap.
fn mask_absent(bitmap: &[u8], within: u64, chunk: &mut [u8]) {
    let mut pos = 0usize;
    while pos < chunk.len() {
        let abs = within + pos as u64;
        let sector = abs / 512;
        let n = chunk.len().min(pos + (512 - (abs % 512)) as usize) - pos;
        let byte = bitmap.get((sector / 8) as usize).copied().unwrap_or(0);
        if byte & (0x80 >> (sector % 8)) == 0
            && let Some(s) = chunk.get_mut(pos..pos + n)
        {
            s.fill(0);
        }
        pos += n;
    }
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
