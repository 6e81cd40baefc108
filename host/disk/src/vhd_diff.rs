//! Making differencing VHD files: a child of a given VHD parent holding a list of writes.
//! Layout: footer copy at 0, dynamic header at 512, BAT at 1536, the `W2ru` parent
//! locator, then 2 MiB blocks (each a 512-byte sector bitmap, MSB first, then the data),
//! then the footer. Written sectors have their bit set; the others read from the parent.

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::chain::{self, Opts};
use crate::util::{self, Ctx, div_ceil};
use crate::vhd::{DIFFERENCING, VhdReader, checksum};
use crate::{DiskError, DiskReader};

const BLOCK: u64 = 2 << 20;
const BITMAP: u64 = 512; // 4096 sectors, one bit each, padded to a sector
const BAT_OFF: u64 = 1536;

/// Creates `child` (replacing any file there), a differencing VHD whose parent is the
/// VHD at `parent` (fixed, dynamic or itself differencing), recorded in the child as
/// `relative_parent` (a `W2ru` locator relative to the child's folder, e.g. `base.vhd`;
/// `/` is written as `\`) and by file name (Parent Unicode Name), holding `writes` —
/// `(virtual offset, bytes)`, any order, later ones winning where they overlap.
///
/// The child links to the parent's footer unique id and timestamp and copies its size
/// and geometry; it has 2 MiB blocks. Sectors a write covers only in part are completed
/// from the parent (copy on write).
pub fn create_vhd_differencing(
    child: impl AsRef<Path>,
    parent: impl AsRef<Path>,
    relative_parent: &str,
    writes: &[(u64, Vec<u8>)],
) -> Result<(), DiskError> {
    let (child, parent) = (child.as_ref(), parent.as_ref());
    let ctx = Ctx::new(child, "VHD");
    let pfile = util::open_ro(parent)?;
    let plen = Ctx::new(parent, "VHD").file_len(&pfile)?;
    let mut sig = [0u8; 8];
    if plen < 512 || pfile.read_exact_at(&mut sig, plen - 512).is_err() || &sig != b"conectix" {
        return Err(ctx.invalid(format!("the parent {} is not a VHD file", parent.display())));
    }
    let mut p = VhdReader::open(parent, pfile, plen, &Opts::default())?;
    if child.exists() {
        let real = chain::canonical(child)?;
        for f in p.files() {
            if chain::canonical(&f)? == real {
                return Err(ctx.invalid(format!(
                    "the child would replace {}, a file of its own parent chain",
                    f.display()
                )));
            }
        }
    }
    let (size, parent_id, parent_ts, geometry) = p.identity();
    for (off, data) in writes {
        if off.checked_add(data.len() as u64).is_none_or(|e| e > size) {
            return Err(ctx.invalid(format!(
                "write of {} bytes at offset {off} goes beyond the virtual size {size}",
                data.len()
            )));
        }
    }
    let blocks = div_ceil(size, BLOCK);
    let bat_len = util::table_len(&ctx, blocks, 4, util::TABLE_LIMIT, "BAT")?;
    let mut bat = vec![u32::MAX; bat_len / 4];
    let rel = relative_parent.replace('/', "\\");
    let loc: Vec<u8> = rel.encode_utf16().flat_map(u16::to_le_bytes).collect();
    if loc.is_empty() || loc.len() > 32 << 10 {
        return Err(ctx.invalid("the parent's relative path must be 1 to 16384 UTF-16 units"));
    }
    let loc_off = BAT_OFF + (bat_len as u64).next_multiple_of(512);
    let loc_space = (loc.len() as u64).next_multiple_of(512);
    let file = util::create_rw(child)?;
    ctx.write_all_at(&file, &loc, loc_off)?;
    let mut next = loc_off + loc_space;

    let touched: BTreeSet<u64> = writes
        .iter()
        .filter(|(_, d)| !d.is_empty())
        .flat_map(|(off, d)| (off / BLOCK)..=((off + d.len() as u64 - 1) / BLOCK))
        .collect();
    for b in touched {
        let start = b * BLOCK;
        let len = BLOCK.min(size - start);
        let mut buf = vec![0u8; len as usize];
        let mut present = vec![false; div_ceil(len, 512) as usize];
        for (off, data) in writes {
            let (a, z) = (
                (*off).max(start),
                (off + data.len() as u64).min(start + len),
            );
            if a >= z {
                continue;
            }
            for s in (a - start) / 512..=(z - start - 1) / 512 {
                let (ss, se) = (s * 512, ((s + 1) * 512).min(len));
                let Some(flag) = present.get_mut(s as usize) else {
                    continue;
                };
                if !*flag && (a > start + ss || z < start + se) {
                    let dst = buf.get_mut(ss as usize..se as usize).unwrap_or_default();
                    p.read_at(start + ss, dst)?;
                }
                *flag = true;
            }
            if let (Some(dst), Some(src)) = (
                buf.get_mut((a - start) as usize..(z - start) as usize),
                data.get((a - off) as usize..(z - off) as usize),
            ) {
                dst.copy_from_slice(src);
            }
        }
        let mut bits = vec![0u8; BITMAP as usize];
        for (s, _) in present.iter().enumerate().filter(|(_, p)| **p) {
            if let Some(byte) = bits.get_mut(s / 8) {
                *byte |= 0x80 >> (s % 8);
            }
        }
        let sector = u32::try_from(next / 512)
            .map_err(|_| ctx.invalid("the child grows beyond the VHD's 2 TiB addressing"))?;
        if let Some(e) = bat.get_mut(b as usize) {
            *e = sector;
        }
        ctx.write_all_at(&file, &bits, next)?;
        for (i, piece) in buf.chunks(1 << 20).enumerate() {
            if !util::is_zero(piece) {
                ctx.write_all_at(&file, piece, next + BITMAP + ((i as u64) << 20))?;
            }
        }
        next += BITMAP + BLOCK;
    }

    let mut raw = vec![0u8; (bat_len as u64).next_multiple_of(512) as usize];
    raw.fill(0xff);
    for (i, e) in bat.iter().enumerate() {
        util::put(&mut raw, i * 4, &e.to_be_bytes());
    }
    ctx.write_all_at(&file, &raw, BAT_OFF)?;
    drop(raw);

    // Dynamic disk header.
    let mut h = [0u8; 1024];
    util::put(&mut h, 0, b"cxsparse");
    util::put(&mut h, 8, &u64::MAX.to_be_bytes());
    util::put(&mut h, 16, &BAT_OFF.to_be_bytes());
    util::put(&mut h, 24, &0x0001_0000u32.to_be_bytes());
    util::put(&mut h, 28, &(blocks as u32).to_be_bytes());
    util::put(&mut h, 32, &(BLOCK as u32).to_be_bytes());
    util::put(&mut h, 40, &parent_id);
    util::put(&mut h, 56, &parent_ts.to_be_bytes());
    let name = rel.rsplit('\\').next().unwrap_or_default();
    let name: Vec<u8> = name
        .encode_utf16()
        .take(255)
        .flat_map(u16::to_be_bytes)
        .collect();
    util::put(&mut h, 64, &name);
    util::put(&mut h, 576, b"W2ru");
    util::put(&mut h, 580, &((loc_space / 512) as u32).to_be_bytes()); // sectors
    util::put(&mut h, 584, &(loc.len() as u32).to_be_bytes());
    util::put(&mut h, 592, &loc_off.to_be_bytes());
    let sum = checksum(&h, 36);
    util::put(&mut h, 36, &sum.to_be_bytes());
    ctx.write_all_at(&file, &h, 512)?;

    // Footer, at the end and (as in every dynamic disk) at 0.
    let mut f = [0u8; 512];
    util::put(&mut f, 0, b"conectix");
    util::put(&mut f, 8, &2u32.to_be_bytes());
    util::put(&mut f, 12, &0x0001_0000u32.to_be_bytes());
    util::put(&mut f, 16, &512u64.to_be_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    util::put(
        &mut f,
        24,
        &(now.saturating_sub(946_684_800) as u32).to_be_bytes(),
    );
    util::put(&mut f, 28, b"lboa");
    util::put(&mut f, 32, &0x0001_0000u32.to_be_bytes());
    util::put(&mut f, 36, b"Wi2k");
    util::put(&mut f, 40, &size.to_be_bytes());
    util::put(&mut f, 48, &size.to_be_bytes());
    util::put(&mut f, 56, &geometry);
    util::put(&mut f, 60, &DIFFERENCING.to_be_bytes());
    util::put(&mut f, 68, &util::random_bytes::<16>(&ctx)?);
    let sum = checksum(&f, 64);
    util::put(&mut f, 64, &sum.to_be_bytes());
    ctx.write_all_at(&file, &f, next)?;
    ctx.write_all_at(&file, &f, 0)?;
    file.sync_all().map_err(|e| ctx.io("fsync", e))
}
