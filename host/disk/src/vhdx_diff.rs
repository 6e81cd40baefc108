//! Making differencing VHDX files: a child of a given VHDX parent holding a list of
//! writes, laid out as Hyper-V would store them (MS-VHDX): payload blocks that a write
//! covers sector by sector are PAYLOAD_BLOCK_FULLY_PRESENT, the others
//! PAYLOAD_BLOCK_PARTIALLY_PRESENT with their sectors marked in the chunk's sector
//! bitmap block; untouched blocks stay PAYLOAD_BLOCK_NOT_PRESENT (read from the parent).

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::chain::{self, Opts};
use crate::util::{self, Ctx, div_ceil};
use crate::vhdx::{
    BAT_OFF, FILE_PARAMS, FULLY_PRESENT, LOGICAL_SECTOR, MIB, PAGE83, PARENT_LOCATOR,
    PARTIALLY_PRESENT, PHYSICAL_SECTOR, SB_PRESENT, VHDX_LOCATOR, VIRTUAL_SIZE, VhdxReader,
    guid_string, write_structures,
};
use crate::{DiskError, DiskReader};

/// How [`create_vhdx_differencing_with`] makes a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdxChildOptions {
    /// The parent locator's `relative_path`: the parent's path relative to the child's
    /// folder, Windows style (`base.vhdx`, `..\disks\base.vhdx`); `/` is written as `\`.
    pub relative_path: String,
    /// The parent locator's `absolute_win32_path` (e.g. `\\?\D:\VMs\base.vhdx`), if
    /// any. Readers here use only its file name, looked for in the child's folder.
    pub absolute_win32_path: Option<String>,
    /// Payload block size: a power of two from 1 MiB to 256 MiB. Hyper-V makes
    /// differencing disks with 2 MiB blocks, the default.
    pub block_size: u32,
}

impl VhdxChildOptions {
    /// 2 MiB blocks, the given `relative_path`, no `absolute_win32_path`.
    pub fn new(relative_path: impl Into<String>) -> Self {
        VhdxChildOptions {
            relative_path: relative_path.into(),
            absolute_win32_path: None,
            block_size: 2 << 20,
        }
    }
}

/// Creates `child` (replacing any file there), a differencing VHDX whose parent is the
/// VHDX at `parent` (itself possibly differencing), recorded in the child as
/// `relative_parent` (relative to the child's folder, e.g. `base.vhdx`), holding
/// `writes` — `(virtual offset, bytes)`, in any order, later ones winning where they
/// overlap. 2 MiB blocks; see [`create_vhdx_differencing_with`].
pub fn create_vhdx_differencing(
    child: impl AsRef<Path>,
    parent: impl AsRef<Path>,
    relative_parent: &str,
    writes: &[(u64, Vec<u8>)],
) -> Result<(), DiskError> {
    create_vhdx_differencing_with(
        child,
        parent,
        &VhdxChildOptions::new(relative_parent),
        writes,
    )
}

/// Creates `child` (replacing any file there), a differencing VHDX of the VHDX at
/// `parent`, holding `writes` (`(virtual offset, bytes)`, any order, later ones winning).
///
/// The child links to the parent's current DataWriteGuid (`parent_linkage`) and copies
/// its virtual size, sector sizes and virtual disk id. A block a write covers in whole
/// sectors is fully present; otherwise it is partially present, its written sectors
/// marked in the sector bitmap. Sectors a write covers only in part are completed from
/// the parent (copy on write). The parent is only read; writing to the parent later
/// changes its DataWriteGuid only if the writer does (Hyper-V does), which the child's
/// reader then reports as a mismatch.
pub fn create_vhdx_differencing_with(
    child: impl AsRef<Path>,
    parent: impl AsRef<Path>,
    opts: &VhdxChildOptions,
    writes: &[(u64, Vec<u8>)],
) -> Result<(), DiskError> {
    let (child, parent) = (child.as_ref(), parent.as_ref());
    let ctx = Ctx::new(child, "VHDX");
    let bs = u64::from(opts.block_size);
    if !bs.is_power_of_two() || !(MIB..=256 * MIB).contains(&bs) {
        return Err(ctx.invalid(format!(
            "block size {bs} is not a power of two between 1 MiB and 256 MiB"
        )));
    }
    let pfile = util::open_ro(parent)?;
    let mut sig = [0u8; 8];
    if pfile.read_exact_at(&mut sig, 0).is_err() || &sig != b"vhdxfile" {
        return Err(ctx.invalid(format!(
            "the parent {} is not a VHDX file",
            parent.display()
        )));
    }
    let mut p = VhdxReader::open(parent, pfile, &Opts::default())?;
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
    let id = p.identity();
    let (size, lss) = (id.size, id.lss);
    for (off, data) in writes {
        if off.checked_add(data.len() as u64).is_none_or(|e| e > size) {
            return Err(ctx.invalid(format!(
                "write of {} bytes at offset {off} goes beyond the virtual size {size}",
                data.len()
            )));
        }
    }
    let chunk_ratio = (1u64 << 23) * lss / bs;
    let blocks = div_ceil(size, bs);
    let chunks = div_ceil(blocks, chunk_ratio);
    // Every chunk's sector bitmap entry, the last one included (MS-VHDX 2.5).
    let entries = chunks * (chunk_ratio + 1);
    let bat_len = util::table_len(&ctx, entries, 8, util::TABLE_LIMIT, "BAT")?;
    let bat_region = (bat_len as u64).next_multiple_of(MIB).max(MIB);
    let mut bat = vec![0u64; bat_len / 8];
    let file = util::create_rw(child)?;
    let mut next_free = BAT_OFF + bat_region;

    let touched: BTreeSet<u64> = writes
        .iter()
        .filter(|(_, d)| !d.is_empty())
        .flat_map(|(off, d)| (off / bs)..=((off + d.len() as u64 - 1) / bs))
        .collect();
    let spb = bs / lss; // sectors per (whole) block
    for b in touched {
        let start = b * bs;
        let len = bs.min(size - start);
        let mut buf = vec![0u8; len as usize];
        let mut present = vec![false; div_ceil(len, lss) as usize];
        for (off, data) in writes {
            let (a, z) = (
                (*off).max(start),
                (off + data.len() as u64).min(start + len),
            );
            if a >= z {
                continue;
            }
            // Sectors the write touches but does not cover start as the parent's data.
            for s in (a - start) / lss..=(z - start - 1) / lss {
                let (ss, se) = (s * lss, ((s + 1) * lss).min(len));
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
        let at = next_free;
        next_free += bs;
        // Leave 1 MiB runs of zeros as holes: they read as zeros.
        for (i, piece) in buf.chunks(MIB as usize).enumerate() {
            if !util::is_zero(piece) {
                ctx.write_all_at(&file, piece, at + i as u64 * MIB)?;
            }
        }
        let full = present.iter().all(|&x| x);
        let slot = (b + b / chunk_ratio) as usize;
        if let Some(e) = bat.get_mut(slot) {
            *e = at
                | if full {
                    FULLY_PRESENT
                } else {
                    PARTIALLY_PRESENT
                };
        }
        if full {
            continue;
        }
        let c = b / chunk_ratio;
        let sb_slot = (c * (chunk_ratio + 1) + chunk_ratio) as usize;
        let sb_entry = bat.get(sb_slot).copied().unwrap_or(0);
        let sb_off = if sb_entry & 7 == SB_PRESENT {
            sb_entry & !(MIB - 1)
        } else {
            let off = next_free;
            next_free += MIB;
            if let Some(e) = bat.get_mut(sb_slot) {
                *e = off | SB_PRESENT;
            }
            off
        };
        // Bit s (LSB first) of the block's slice of the chunk's bitmap: sector s is here.
        let mut bits = vec![0u8; (spb / 8) as usize];
        for (s, _) in present.iter().enumerate().filter(|(_, p)| **p) {
            if let Some(byte) = bits.get_mut(s / 8) {
                *byte |= 1 << (s % 8);
            }
        }
        ctx.write_all_at(&file, &bits, sb_off + (b % chunk_ratio) * spb / 8)?;
    }

    let mut raw = vec![0u8; bat_len];
    for (i, e) in bat.iter().enumerate() {
        util::put(&mut raw, i * 8, &e.to_le_bytes());
    }
    ctx.write_all_at(&file, &raw, BAT_OFF)?;
    drop(raw);

    let mut locator = vec![
        (
            "parent_linkage",
            format!("{{{}}}", guid_string(&id.data_write)),
        ),
        ("relative_path", opts.relative_path.replace('/', "\\")),
    ];
    if let Some(abs) = &opts.absolute_win32_path {
        locator.push(("absolute_win32_path", abs.clone()));
    }
    let items = [
        (
            FILE_PARAMS,
            [opts.block_size.to_le_bytes(), 2u32.to_le_bytes()].concat(), // HasParent
            4,
        ),
        (VIRTUAL_SIZE, size.to_le_bytes().to_vec(), 2 | 4),
        (PAGE83, id.page83.to_vec(), 2 | 4),
        (LOGICAL_SECTOR, (lss as u32).to_le_bytes().to_vec(), 2 | 4),
        (PHYSICAL_SECTOR, id.pss.to_le_bytes().to_vec(), 2 | 4),
        (PARENT_LOCATOR, locator_item(&ctx, &locator)?, 4),
    ];
    write_structures(&ctx, &file, &items, bat_region)?;
    file.set_len(next_free).map_err(|e| ctx.io("set_len", e))?;
    file.sync_all().map_err(|e| ctx.io("fsync", e))
}

/// A VHDX parent locator item (MS-VHDX 2.6.2.6): a 20-byte header (the VHDX locator
/// type, the entry count), 12-byte entries, then the UTF-16LE keys and values.
fn locator_item(ctx: &Ctx, entries: &[(&str, String)]) -> Result<Vec<u8>, DiskError> {
    let utf16 = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    let head = 20 + 12 * entries.len();
    let mut item = vec![0u8; head];
    util::put(&mut item, 0, &VHDX_LOCATOR);
    util::put(&mut item, 18, &(entries.len() as u16).to_le_bytes());
    for (i, (k, v)) in entries.iter().enumerate() {
        let (kb, vb) = (utf16(k), utf16(v));
        if vb.is_empty() || vb.len() > usize::from(u16::MAX) {
            return Err(ctx.invalid(format!(
                "parent locator value for {k} must be 1 to 32767 UTF-16 units long"
            )));
        }
        let ko = item.len();
        item.extend_from_slice(&kb);
        let vo = item.len();
        item.extend_from_slice(&vb);
        let e = 20 + 12 * i;
        util::put(&mut item, e, &(ko as u32).to_le_bytes());
        util::put(&mut item, e + 4, &(vo as u32).to_le_bytes());
        util::put(&mut item, e + 8, &(kb.len() as u16).to_le_bytes());
        util::put(&mut item, e + 10, &(vb.len() as u16).to_le_bytes());
    }
    if item.len() > 64 << 10 {
        return Err(ctx.invalid("parent locator over 64 KiB"));
    }
    Ok(item)
}
