//! qcow2 (versions 2 and 3). Big-endian header; a two-level table (L1 → L2 → cluster)
//! maps guest clusters to host clusters; refcounts track host cluster use.
//! Reading ignores refcounts (so a "dirty" lazy-refcount image is readable); writing
//! produces version 3 with exact refcounts.

use std::fs::File;
use std::path::Path;

use crate::raw::check_range;
use crate::util::{self, Assembler, Ctx, ExtentList, UnitSink, be32, be64, div_ceil};
use crate::{DiskError, DiskReader, DiskWriter, Extent, ExtentKind, Format};

const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
const L2_CACHE: usize = 16;

enum Cluster {
    Unallocated,
    Zero,
    Data(u64),
    Compressed,
}

pub(crate) struct Qcow2Reader {
    ctx: Ctx,
    file: File,
    file_len: u64,
    version: u32,
    cluster_bits: u32,
    size: u64,
    l1: Vec<u64>,
    l2_cache: Vec<(usize, Vec<u64>)>,
}

impl Qcow2Reader {
    pub fn open(path: &Path, file: File) -> Result<Self, DiskError> {
        let ctx = Ctx::new(path, "qcow2");
        let file_len = ctx.file_len(&file)?;
        let mut h = [0u8; 104];
        let hlen = if file_len >= 104 { 104 } else { 72 };
        ctx.read_exact_at(&file, &mut h[..hlen], 0, "header")?;
        let version = be32(&h, 4);
        if version != 2 && version != 3 {
            return Err(ctx.unsupported(format!("version {version} (only 2 and 3 are known)")));
        }
        if version == 3 && hlen < 104 {
            return Err(ctx.corrupt("truncated: the version 3 header needs 104 bytes"));
        }
        let cluster_bits = be32(&h, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(ctx.corrupt(format!("cluster_bits {cluster_bits} is outside 9..=21")));
        }
        let cs = 1u64 << cluster_bits;
        let size = be64(&h, 24);
        if be32(&h, 32) != 0 {
            return Err(ctx.unsupported(format!("encrypted image (crypt_method {})", be32(&h, 32))));
        }
        if version == 3 {
            let incompat = be64(&h, 72);
            if incompat & 2 != 0 {
                return Err(ctx.corrupt("the image is marked corrupt (incompatible feature bit 1); repair it with `qemu-img check -r all`"));
            }
            if incompat & 4 != 0 {
                return Err(ctx.unsupported("external data file (incompatible feature bit 2)"));
            }
            if incompat & 16 != 0 {
                return Err(ctx.unsupported(
                    "extended L2 entries / subclusters (incompatible feature bit 4)",
                ));
            }
            let unknown = incompat & !(1 | 2 | 4 | 8 | 16);
            if unknown != 0 {
                return Err(ctx.unsupported(format!("unknown incompatible features {unknown:#x}")));
            }
        }
        let backing_off = be64(&h, 8);
        if backing_off != 0 {
            let blen = be32(&h, 16).min(1023) as usize;
            let mut name = vec![0u8; blen];
            ctx.read_exact_at(&file, &mut name, backing_off, "backing file name")?;
            return Err(ctx.backing(String::from_utf8_lossy(&name)));
        }
        let l1_size = u64::from(be32(&h, 36));
        let l1_off = be64(&h, 40);
        let l2_entries = cs / 8;
        let needed = div_ceil(size, cs * l2_entries);
        if l1_size < needed {
            return Err(ctx.corrupt(format!(
                "L1 table has {l1_size} entries but a {size}-byte disk needs {needed}"
            )));
        }
        let l1_bytes = util::table_len(&ctx, l1_size, 8, util::TABLE_LIMIT, "L1 table")?;
        if l1_size > 0
            && (!l1_off.is_multiple_of(cs) || l1_off.saturating_add(l1_bytes as u64) > file_len)
        {
            return Err(ctx.corrupt(format!(
                "L1 table at offset {l1_off} ({l1_bytes} bytes) is misaligned or beyond the end of the file ({file_len} bytes)"
            )));
        }
        let mut raw = vec![0u8; l1_bytes];
        ctx.read_exact_at(&file, &mut raw, l1_off, "L1 table")?;
        let mut l1 = Vec::with_capacity(l1_size as usize);
        for (i, c) in raw.chunks_exact(8).enumerate() {
            let e = be64(c, 0);
            let off = e & OFFSET_MASK;
            if e & L1_RESERVED != 0 {
                return Err(ctx.corrupt(format!("L1 entry {i} has reserved bits set ({e:#x})")));
            }
            if off != 0 && (!off.is_multiple_of(cs) || off.saturating_add(cs) > file_len) {
                return Err(ctx.corrupt(format!(
                    "L1 entry {i} points to an L2 table at offset {off}, misaligned or beyond the end of the file ({file_len} bytes)"
                )));
            }
            if off != 0 && off == l1_off {
                return Err(ctx.corrupt(format!("L1 entry {i} points back at the L1 table")));
            }
            l1.push(off);
        }
        Ok(Qcow2Reader {
            ctx,
            file,
            file_len,
            version,
            cluster_bits,
            size,
            l1,
            l2_cache: Vec::new(),
        })
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn l2(&mut self, l1_idx: usize) -> Result<&[u64], DiskError> {
        if let Some(pos) = self.l2_cache.iter().position(|(i, _)| *i == l1_idx) {
            let item = self.l2_cache.remove(pos);
            self.l2_cache.push(item);
        } else {
            let off = self.l1.get(l1_idx).copied().unwrap_or(0);
            let mut raw = vec![0u8; self.cluster_size() as usize];
            self.ctx
                .read_exact_at(&self.file, &mut raw, off, "L2 table")?;
            let table = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
            if self.l2_cache.len() >= L2_CACHE {
                self.l2_cache.remove(0);
            }
            self.l2_cache.push((l1_idx, table));
        }
        Ok(self
            .l2_cache
            .last()
            .map(|(_, t)| t.as_slice())
            .unwrap_or_default())
    }

    fn decode(&self, vcl: u64, e: u64) -> Result<Cluster, DiskError> {
        if e & COMPRESSED != 0 {
            return Ok(Cluster::Compressed);
        }
        if self.version >= 3 && e & 1 != 0 {
            return Ok(Cluster::Zero);
        }
        let off = e & OFFSET_MASK;
        if off == 0 {
            return Ok(Cluster::Unallocated);
        }
        if !off.is_multiple_of(self.cluster_size()) || off >= self.file_len {
            return Err(self.ctx.corrupt(format!(
                "guest cluster {vcl} maps to host offset {off}, misaligned or beyond the end of the file ({} bytes)",
                self.file_len
            )));
        }
        Ok(Cluster::Data(off))
    }

    fn lookup(&mut self, vcl: u64) -> Result<Cluster, DiskError> {
        let l2_entries = self.cluster_size() / 8;
        let l1_idx = (vcl / l2_entries) as usize;
        if self.l1.get(l1_idx).copied().unwrap_or(0) == 0 {
            return Ok(Cluster::Unallocated);
        }
        let e = self
            .l2(l1_idx)?
            .get((vcl % l2_entries) as usize)
            .copied()
            .unwrap_or(0);
        self.decode(vcl, e)
    }
}

impl DiskReader for Qcow2Reader {
    fn format(&self) -> Format {
        Format::Qcow2 {
            version: self.version,
        }
    }
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn files(&self) -> Vec<std::path::PathBuf> {
        vec![self.ctx.path.clone()]
    }
    fn allocation(&mut self) -> Result<Vec<Extent>, DiskError> {
        let cs = self.cluster_size();
        let l2_entries = cs / 8;
        let mut list = ExtentList::default();
        for l1_idx in 0..self.l1.len() {
            if self.l1[l1_idx] == 0 {
                continue;
            }
            let table: Vec<u64> = self.l2(l1_idx)?.to_vec();
            for (j, &e) in table.iter().enumerate() {
                let vcl = l1_idx as u64 * l2_entries + j as u64;
                let start = vcl * cs;
                if start >= self.size {
                    break;
                }
                let len = cs.min(self.size - start);
                match self.decode(vcl, e)? {
                    Cluster::Unallocated => {}
                    Cluster::Zero => list.push(start, len, ExtentKind::Cleared),
                    Cluster::Data(_) | Cluster::Compressed => {
                        list.push(start, len, ExtentKind::Data)
                    }
                }
            }
        }
        Ok(list.list)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&self.ctx, offset, buf.len(), self.size)?;
        let cs = self.cluster_size();
        let mut pos = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let vcl = pos / cs;
            let within = pos % cs;
            let n = rest.len().min((cs - within) as usize);
            let (chunk, tail) = rest.split_at_mut(n);
            match self.lookup(vcl)? {
                Cluster::Unallocated | Cluster::Zero => chunk.fill(0),
                Cluster::Data(host) => {
                    // qemu may leave the last cluster of the file short: read what is
                    // there and treat the rest as zeros.
                    let at = host + within;
                    let avail = self.file_len.saturating_sub(at).min(n as u64) as usize;
                    let (have, missing) = chunk.split_at_mut(avail);
                    self.ctx
                        .read_exact_at(&self.file, have, at, "data cluster")?;
                    missing.fill(0);
                }
                Cluster::Compressed => {
                    return Err(self.ctx.unsupported(format!(
                        "guest offset {} is in a compressed cluster; compressed clusters are not supported (decompress with `qemu-img convert`)",
                        vcl * cs
                    )));
                }
            }
            rest = tail;
            pos += n as u64;
        }
        Ok(())
    }
}

// ---- writer

const W_BITS: u32 = 16;
const W_CS: u64 = 1 << W_BITS;
const W_L2_ENTRIES: u64 = W_CS / 8;
/// 16-bit refcounts: entries per refcount block.
const RC_PER_BLOCK: u64 = W_CS * 8 / 16;

struct Qcow2Sink {
    ctx: Ctx,
    file: File,
    l1: Vec<u64>,
    cur_l2: Option<(usize, Vec<u8>)>,
    next_free: u64,
}

impl Qcow2Sink {
    fn flush_l2(&mut self) -> Result<(), DiskError> {
        if let Some((idx, table)) = self.cur_l2.take() {
            let off = self.next_free;
            self.ctx.write_all_at(&self.file, &table, off)?;
            self.next_free += W_CS;
            if let Some(e) = self.l1.get_mut(idx) {
                *e = off | COPIED;
            }
        }
        Ok(())
    }
}

impl UnitSink for Qcow2Sink {
    fn put_unit(&mut self, index: u64, data: &[u8]) -> Result<(), DiskError> {
        let l1_idx = (index / W_L2_ENTRIES) as usize;
        if self.cur_l2.as_ref().map(|(i, _)| *i) != Some(l1_idx) {
            self.flush_l2()?;
            self.cur_l2 = Some((l1_idx, vec![0u8; W_CS as usize]));
        }
        let off = self.next_free;
        self.ctx.write_all_at(&self.file, data, off)?;
        self.next_free += W_CS;
        if let Some((_, t)) = self.cur_l2.as_mut() {
            util::put(
                t,
                (index % W_L2_ENTRIES) as usize * 8,
                &(off | COPIED).to_be_bytes(),
            );
        }
        Ok(())
    }
}

pub(crate) struct Qcow2Writer {
    size: u64,
    asm: Assembler,
    sink: Qcow2Sink,
}

impl Qcow2Writer {
    pub fn create(path: &Path, size: u64) -> Result<Self, DiskError> {
        let ctx = Ctx::new(path, "qcow2");
        let size = size
            .checked_next_multiple_of(512)
            .ok_or_else(|| ctx.invalid("virtual size too large"))?;
        let l1_size = div_ceil(size, W_CS * W_L2_ENTRIES);
        if l1_size > u64::from(u32::MAX) {
            return Err(ctx.invalid(format!("virtual size {size} is too large for qcow2")));
        }
        let l1_len = util::table_len(&ctx, l1_size, 8, util::TABLE_LIMIT, "L1 table")? / 8;
        let file = util::create_rw(path)?;
        Ok(Qcow2Writer {
            size,
            asm: Assembler::new(ctx.clone(), W_CS, size)?,
            sink: Qcow2Sink {
                ctx,
                file,
                l1: vec![0; l1_len],
                cur_l2: None,
                next_free: W_CS,
            },
        })
    }
}

impl DiskWriter for Qcow2Writer {
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.asm.write_at(&mut self.sink, offset, data)
    }
    fn finish(mut self: Box<Self>) -> Result<(), DiskError> {
        self.asm.flush(&mut self.sink)?;
        let s = &mut self.sink;
        s.flush_l2()?;
        let ctx = s.ctx.clone();
        // L1 table.
        let l1_off = s.next_free;
        let l1_clusters = div_ceil(s.l1.len() as u64 * 8, W_CS).max(1);
        let mut raw = vec![0u8; (l1_clusters * W_CS) as usize];
        for (i, e) in s.l1.iter().enumerate() {
            util::put(&mut raw, i * 8, &e.to_be_bytes());
        }
        ctx.write_all_at(&s.file, &raw, l1_off)?;
        drop(raw);
        // Refcount table and blocks cover every cluster including themselves.
        let used = l1_off / W_CS + l1_clusters;
        let (mut blocks, mut tclusters) = (1u64, 1u64);
        loop {
            let total = used + blocks + tclusters;
            let b = div_ceil(total, RC_PER_BLOCK);
            let t = div_ceil(b * 8, W_CS);
            if b == blocks && t == tclusters {
                break;
            }
            blocks = b;
            tclusters = t;
        }
        let total = used + blocks + tclusters;
        let rt_off = used * W_CS;
        let rb_off = rt_off + tclusters * W_CS;
        let mut table = vec![0u8; W_CS as usize];
        for tc in 0..tclusters {
            table.fill(0);
            for j in 0..(W_CS / 8) {
                let b = tc * (W_CS / 8) + j;
                if b >= blocks {
                    break;
                }
                util::put(
                    &mut table,
                    j as usize * 8,
                    &(rb_off + b * W_CS).to_be_bytes(),
                );
            }
            ctx.write_all_at(&s.file, &table, rt_off + tc * W_CS)?;
        }
        let mut block = vec![0u8; W_CS as usize];
        for b in 0..blocks {
            block.fill(0);
            for j in 0..RC_PER_BLOCK {
                if b * RC_PER_BLOCK + j >= total {
                    break;
                }
                util::put(&mut block, j as usize * 2, &1u16.to_be_bytes());
            }
            ctx.write_all_at(&s.file, &block, rb_off + b * W_CS)?;
        }
        // Header last, so an interrupted write never looks like a valid image.
        let mut h = vec![0u8; 112];
        util::put(&mut h, 0, b"QFI\xfb");
        util::put(&mut h, 4, &3u32.to_be_bytes());
        util::put(&mut h, 20, &W_BITS.to_be_bytes());
        util::put(&mut h, 24, &self.size.to_be_bytes());
        util::put(&mut h, 36, &(s.l1.len() as u32).to_be_bytes());
        util::put(&mut h, 40, &l1_off.to_be_bytes());
        util::put(&mut h, 48, &rt_off.to_be_bytes());
        util::put(&mut h, 56, &(tclusters as u32).to_be_bytes());
        util::put(&mut h, 96, &4u32.to_be_bytes());
        util::put(&mut h, 100, &104u32.to_be_bytes());
        // Bytes 104..112 stay zero: the header extension end marker.
        ctx.write_all_at(&s.file, &h, 0)?;
        s.file.sync_all().map_err(|e| ctx.io("fsync", e))
    }
}
