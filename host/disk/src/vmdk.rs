//! VMDK: a text descriptor listing extents, each either a flat file region or a hosted
//! sparse extent ("KDMV" header, little-endian, grain directory → grain tables → grains).
//! streamOptimized extents hold zlib-compressed grains behind grain markers and may keep
//! their grain directory at the end, found through the footer.

use std::fs::File;
use std::path::{Path, PathBuf};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::chain::Opts;
use crate::raw::check_range;
use crate::util::{self, Assembler, Ctx, ExtentList, UnitSink, div_ceil, le16, le32, le64};
use crate::{DiskError, DiskReader, DiskWriter, Extent, ExtentKind, Format};

const GD_AT_END: u64 = u64::MAX;
const FLAG_NL_DETECT: u32 = 1;
const FLAG_RGD: u32 = 1 << 1;
const FLAG_ZEROED_GRAIN: u32 = 1 << 2;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const MAX_DESCRIPTOR: u64 = 1 << 20;
const GT_CACHE: usize = 16;

// ---------------------------------------------------------------- descriptor

#[derive(Debug)]
struct Descriptor {
    create_type: String,
    parent_cid: Option<String>,
    parent_hint: Option<String>,
    extents: Vec<ExtentLine>,
}

#[derive(Debug)]
struct ExtentLine {
    sectors: u64,
    kind: String,
    file: String,
    offset: u64,
}

fn parse_descriptor(ctx: &Ctx, text: &str) -> Result<Descriptor, DiskError> {
    let mut d = Descriptor {
        create_type: String::new(),
        parent_cid: None,
        parent_hint: None,
        extents: Vec::new(),
    };
    for line in text.lines() {
        let line = line.trim().trim_end_matches('\0');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
            let mut rest = line[first.len()..].trim_start();
            let sectors_s = rest.split_whitespace().next().unwrap_or("");
            rest = rest[sectors_s.len()..].trim_start();
            let kind = rest.split_whitespace().next().unwrap_or("").to_string();
            rest = rest[kind.len()..].trim_start();
            let sectors = sectors_s.parse::<u64>().map_err(|_| {
                ctx.corrupt(format!("descriptor extent line has a bad size: {line:?}"))
            })?;
            let (file, after) = if kind == "ZERO" {
                (String::new(), "")
            } else {
                let r = rest.strip_prefix('"').ok_or_else(|| {
                    ctx.corrupt(format!(
                        "descriptor extent line lacks a quoted file name: {line:?}"
                    ))
                })?;
                let end = r.find('"').ok_or_else(|| {
                    ctx.corrupt(format!(
                        "descriptor extent line has an unterminated file name: {line:?}"
                    ))
                })?;
                (r[..end].to_string(), r[end + 1..].trim())
            };
            let offset = if after.is_empty() {
                0
            } else {
                after
                    .split_whitespace()
                    .next()
                    .unwrap_or("0")
                    .parse::<u64>()
                    .map_err(|_| {
                        ctx.corrupt(format!("descriptor extent line has a bad offset: {line:?}"))
                    })?
            };
            d.extents.push(ExtentLine {
                sectors,
                kind,
                file,
                offset,
            });
        } else if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "createType" => d.create_type = v,
                "parentCID" => d.parent_cid = Some(v),
                "parentFileNameHint" => d.parent_hint = Some(v),
                _ => {}
            }
        }
    }
    if let Some(cid) = &d.parent_cid
        && !cid.eq_ignore_ascii_case("ffffffff")
    {
        return Err(ctx.backing(
            d.parent_hint
                .clone()
                .unwrap_or_else(|| format!("(parentCID {cid})")),
        ));
    }
    Ok(d)
}

// ---------------------------------------------------------------- sparse extent

enum Grain {
    Unallocated,
    Zero,
    At(u64),
}

struct Sparse {
    ctx: Ctx,
    file: File,
    file_len: u64,
    capacity: u64,
    grain_bytes: u64,
    gtes: u64,
    gd: Vec<u32>,
    flags: u32,
    gt_cache: Vec<(usize, Vec<u32>)>,
    grain_cache: Option<(u64, Vec<u8>)>,
    inflate_in: Vec<u8>,
}

struct Header {
    version: u32,
    flags: u32,
    capacity: u64,
    grain: u64,
    desc_off: u64,
    desc_size: u64,
    gtes: u32,
    gd_off: u64,
    compress: u16,
}

fn parse_header(h: &[u8]) -> Header {
    Header {
        version: le32(h, 4),
        flags: le32(h, 8),
        capacity: le64(h, 12),
        grain: le64(h, 20),
        desc_off: le64(h, 28),
        desc_size: le64(h, 36),
        gtes: le32(h, 44),
        gd_off: le64(h, 56),
        compress: le16(h, 77),
    }
}

impl Sparse {
    fn open(ctx: Ctx, file: File) -> Result<(Self, Option<String>), DiskError> {
        let file_len = ctx.file_len(&file)?;
        let mut hb = [0u8; 512];
        ctx.read_exact_at(&file, &mut hb, 0, "sparse extent header")?;
        if !hb.starts_with(b"KDMV") {
            return Err(ctx.corrupt("sparse extent lacks the \"KDMV\" magic"));
        }
        let mut h = parse_header(&hb);
        if !(1..=3).contains(&h.version) {
            return Err(ctx.unsupported(format!("sparse extent version {}", h.version)));
        }
        if h.gd_off == GD_AT_END {
            // streamOptimized: the footer (a header copy with the real grain directory
            // offset) sits before the end-of-stream marker.
            if file_len < 1536 {
                return Err(ctx.corrupt(
                    "truncated: grain directory is at the end but the file has no footer",
                ));
            }
            let mut fb = [0u8; 512];
            ctx.read_exact_at(&file, &mut fb, file_len - 1024, "footer")?;
            if !fb.starts_with(b"KDMV") {
                return Err(ctx.corrupt("grain directory is at the end but there is no footer before the end-of-stream marker (truncated stream?)"));
            }
            let f = parse_header(&fb);
            if f.gd_off == GD_AT_END {
                return Err(ctx.corrupt("footer does not give a grain directory offset"));
            }
            h.gd_off = f.gd_off;
        }
        let grain_sectors = h.grain;
        if !grain_sectors.is_power_of_two() || grain_sectors > 32768 {
            return Err(ctx.corrupt(format!(
                "grain size of {grain_sectors} sectors is not a power of two up to 16 MiB"
            )));
        }
        let gtes = u64::from(h.gtes);
        if !gtes.is_power_of_two() || gtes > 65536 {
            return Err(ctx.corrupt(format!(
                "{gtes} entries per grain table is not a power of two up to 65536"
            )));
        }
        let compressed = h.flags & FLAG_COMPRESSED != 0;
        if compressed && h.compress != 1 {
            return Err(ctx.unsupported(format!(
                "compression algorithm {} (only 1 = deflate is defined)",
                h.compress
            )));
        }
        if compressed && h.flags & FLAG_MARKERS == 0 {
            return Err(ctx.unsupported("compressed grains without grain markers"));
        }
        let capacity = h
            .capacity
            .checked_mul(512)
            .ok_or_else(|| ctx.corrupt(format!("capacity of {} sectors overflows", h.capacity)))?;
        let grain_bytes = grain_sectors * 512;
        let num_gts = div_ceil(h.capacity, grain_sectors * gtes);
        let gd_bytes = util::table_len(&ctx, num_gts, 4, util::TABLE_LIMIT, "grain directory")?;
        let gd_at = h
            .gd_off
            .checked_mul(512)
            .filter(|o| o.saturating_add(gd_bytes as u64) <= file_len);
        let Some(gd_at) = gd_at else {
            return Err(ctx.corrupt(format!(
                "grain directory at sector {} ({gd_bytes} bytes) lies beyond the end of the file ({file_len} bytes)",
                h.gd_off
            )));
        };
        let mut raw = vec![0u8; gd_bytes];
        ctx.read_exact_at(&file, &mut raw, gd_at, "grain directory")?;
        let mut gd = Vec::with_capacity(raw.len() / 4);
        for (i, c) in raw.chunks_exact(4).enumerate() {
            let e = le32(c, 0);
            if e != 0 && u64::from(e) * 512 + gtes * 4 > file_len {
                return Err(ctx.corrupt(format!(
                    "grain directory entry {i} points to a grain table at sector {e}, beyond the end of the file ({file_len} bytes)"
                )));
            }
            gd.push(e);
        }
        let mut descriptor = None;
        if h.desc_off != 0 && h.desc_size != 0 {
            let len = h.desc_size.saturating_mul(512).min(MAX_DESCRIPTOR);
            let mut d = vec![0u8; len as usize];
            ctx.read_exact_at(
                &file,
                &mut d,
                h.desc_off.saturating_mul(512),
                "embedded descriptor",
            )?;
            let end = d.iter().position(|&b| b == 0).unwrap_or(d.len());
            descriptor = Some(String::from_utf8_lossy(&d[..end]).into_owned());
        }
        let s = Sparse {
            ctx,
            file,
            file_len,
            capacity,
            grain_bytes,
            gtes,
            gd,
            flags: h.flags,
            gt_cache: Vec::new(),
            grain_cache: None,
            inflate_in: Vec::new(),
        };
        Ok((s, descriptor))
    }

    fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    fn gt(&mut self, gd_idx: usize) -> Result<&[u32], DiskError> {
        if let Some(pos) = self.gt_cache.iter().position(|(i, _)| *i == gd_idx) {
            let item = self.gt_cache.remove(pos);
            self.gt_cache.push(item);
        } else {
            let sector = self.gd.get(gd_idx).copied().unwrap_or(0);
            let mut raw = vec![0u8; (self.gtes * 4) as usize];
            self.ctx
                .read_exact_at(&self.file, &mut raw, u64::from(sector) * 512, "grain table")?;
            let t = raw.chunks_exact(4).map(|c| le32(c, 0)).collect();
            if self.gt_cache.len() >= GT_CACHE {
                self.gt_cache.remove(0);
            }
            self.gt_cache.push((gd_idx, t));
        }
        Ok(self
            .gt_cache
            .last()
            .map(|(_, t)| t.as_slice())
            .unwrap_or_default())
    }

    fn decode(&self, gte: u32) -> Grain {
        match gte {
            0 => Grain::Unallocated,
            1 if self.flags & FLAG_ZEROED_GRAIN != 0 => Grain::Zero,
            s => Grain::At(u64::from(s) * 512),
        }
    }

    fn lookup(&mut self, grain: u64) -> Result<Grain, DiskError> {
        let gd_idx = (grain / self.gtes) as usize;
        if self.gd.get(gd_idx).copied().unwrap_or(0) == 0 {
            return Ok(Grain::Unallocated);
        }
        let slot = (grain % self.gtes) as usize;
        let gte = self.gt(gd_idx)?.get(slot).copied().unwrap_or(0);
        let g = self.decode(gte);
        if let Grain::At(off) = g
            && off >= self.file_len
        {
            return Err(self.ctx.corrupt(format!(
                "grain {grain} is at offset {off}, beyond the end of the file ({} bytes)",
                self.file_len
            )));
        }
        Ok(g)
    }

    fn allocation(&mut self, base: u64, list: &mut ExtentList) -> Result<(), DiskError> {
        for gd_idx in 0..self.gd.len() {
            if self.gd[gd_idx] == 0 {
                continue;
            }
            let table = self.gt(gd_idx)?.to_vec();
            for (j, &gte) in table.iter().enumerate() {
                let start = (gd_idx as u64 * self.gtes + j as u64) * self.grain_bytes;
                if start >= self.capacity {
                    break;
                }
                let len = self.grain_bytes.min(self.capacity - start);
                match self.decode(gte) {
                    Grain::Unallocated => {}
                    Grain::Zero => list.push(base + start, len, ExtentKind::Cleared),
                    Grain::At(_) => list.push(base + start, len, ExtentKind::Data),
                }
            }
        }
        Ok(())
    }

    /// Decompresses grain `grain` stored behind the marker at `off` into the grain cache.
    fn load_compressed(&mut self, grain: u64, off: u64) -> Result<(), DiskError> {
        if self.grain_cache.as_ref().map(|(g, _)| *g) == Some(grain) {
            return Ok(());
        }
        let mut m = [0u8; 12];
        self.ctx
            .read_exact_at(&self.file, &mut m, off, "grain marker")?;
        let lba = le64(&m, 0);
        let size = u64::from(le32(&m, 8));
        let expect = grain * (self.grain_bytes / 512);
        if lba != expect {
            return Err(self.ctx.corrupt(format!(
                "grain marker at offset {off} names sector {lba} but the grain table maps sector {expect} there"
            )));
        }
        if size == 0 || size > self.grain_bytes * 2 + 4096 {
            return Err(self.ctx.corrupt(format!(
                "grain marker at offset {off} has an implausible compressed size {size}"
            )));
        }
        self.inflate_in.resize(size as usize, 0);
        self.ctx.read_exact_at(
            &self.file,
            &mut self.inflate_in,
            off + 12,
            "compressed grain",
        )?;
        let mut out = match self.grain_cache.take() {
            Some((_, v)) => v,
            None => Vec::new(),
        };
        out.clear();
        out.resize(self.grain_bytes as usize, 0);
        let mut z = Decompress::new(true);
        let status = z.decompress(&self.inflate_in, &mut out, FlushDecompress::Finish);
        match status {
            Ok(Status::StreamEnd) => {}
            Ok(_) => {
                return Err(self.ctx.corrupt(format!(
                    "compressed grain at offset {off} does not end within one grain ({} bytes)",
                    self.grain_bytes
                )));
            }
            Err(e) => {
                return Err(self
                    .ctx
                    .corrupt(format!("compressed grain at offset {off}: {e}")));
            }
        }
        let produced = z.total_out() as usize;
        if let Some(rest) = out.get_mut(produced..) {
            rest.fill(0);
        }
        self.grain_cache = Some((grain, out));
        Ok(())
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let gb = self.grain_bytes;
        let mut pos = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let grain = pos / gb;
            let within = pos % gb;
            let n = rest.len().min((gb - within) as usize);
            let (chunk, tail) = rest.split_at_mut(n);
            match self.lookup(grain)? {
                Grain::Unallocated | Grain::Zero => chunk.fill(0),
                Grain::At(off) if self.compressed() => {
                    self.load_compressed(grain, off)?;
                    let src = self
                        .grain_cache
                        .as_ref()
                        .and_then(|(_, v)| v.get(within as usize..within as usize + n));
                    match src {
                        Some(s) => chunk.copy_from_slice(s),
                        None => chunk.fill(0),
                    }
                }
                Grain::At(off) => {
                    let at = off + within;
                    let avail = self.file_len.saturating_sub(at).min(n as u64) as usize;
                    let (have, missing) = chunk.split_at_mut(avail);
                    self.ctx.read_exact_at(&self.file, have, at, "grain")?;
                    missing.fill(0);
                }
            }
            rest = tail;
            pos += n as u64;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- reader

enum PartKind {
    Flat { ctx: Ctx, file: File, offset: u64 },
    Sparse(Box<Sparse>),
    Zero,
}

struct Part {
    start: u64,
    len: u64,
    kind: PartKind,
}

pub(crate) struct VmdkReader {
    ctx: Ctx,
    format: Format,
    size: u64,
    parts: Vec<Part>,
}

fn format_of(ctx: &Ctx, create_type: &str) -> Result<Format, DiskError> {
    Ok(match create_type {
        "monolithicSparse" => Format::VmdkMonolithicSparse,
        "streamOptimized" => Format::VmdkStreamOptimized,
        "monolithicFlat" => Format::VmdkMonolithicFlat,
        "twoGbMaxExtentSparse" => Format::VmdkTwoGbMaxExtentSparse,
        "twoGbMaxExtentFlat" => Format::VmdkTwoGbMaxExtentFlat,
        "" => return Err(ctx.corrupt("descriptor has no createType")),
        other => return Err(ctx.unsupported(format!("createType {other:?}"))),
    })
}

pub(crate) fn open(
    path: &Path,
    file: File,
    head: &[u8],
    opts: &Opts,
) -> Result<Box<dyn DiskReader>, DiskError> {
    let ctx = Ctx::new(path, "VMDK");
    if head.starts_with(b"KDMV") {
        let (sparse, desc) = Sparse::open(ctx.clone(), file)?;
        let format = match desc.as_deref() {
            Some(text) => {
                let d = parse_descriptor(&ctx, text)?;
                let f = format_of(&ctx, &d.create_type)?;
                if !matches!(
                    f,
                    Format::VmdkMonolithicSparse | Format::VmdkStreamOptimized
                ) {
                    return Err(ctx.corrupt(format!(
                        "a hosted sparse extent claims createType {:?}",
                        d.create_type
                    )));
                }
                if d.extents.len() > 1 {
                    return Err(ctx.unsupported("embedded descriptor lists more than one extent"));
                }
                f
            }
            None if sparse.compressed() => Format::VmdkStreamOptimized,
            None => Format::VmdkMonolithicSparse,
        };
        let size = sparse.capacity;
        let parts = vec![Part {
            start: 0,
            len: size,
            kind: PartKind::Sparse(Box::new(sparse)),
        }];
        return Ok(Box::new(VmdkReader {
            ctx,
            format,
            size,
            parts,
        }));
    }
    // A descriptor file.
    let len = ctx.file_len(&file)?;
    if len > MAX_DESCRIPTOR {
        return Err(ctx.corrupt(format!(
            "descriptor file of {len} bytes is implausibly large"
        )));
    }
    let mut text = vec![0u8; len as usize];
    ctx.read_exact_at(&file, &mut text, 0, "descriptor")?;
    let text = String::from_utf8_lossy(&text);
    let d = parse_descriptor(&ctx, &text)?;
    let format = format_of(&ctx, &d.create_type)?;
    if matches!(
        format,
        Format::VmdkMonolithicSparse | Format::VmdkStreamOptimized
    ) {
        return Err(ctx.corrupt(format!(
            "a descriptor file claims createType {:?}, which needs an embedded descriptor",
            d.create_type
        )));
    }
    if d.extents.is_empty() {
        return Err(ctx.corrupt("descriptor lists no extents"));
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut parts = Vec::new();
    let mut start = 0u64;
    for e in &d.extents {
        let len = e
            .sectors
            .checked_mul(512)
            .ok_or_else(|| ctx.corrupt(format!("extent of {} sectors overflows", e.sectors)))?;
        // Extent files must sit beside the descriptor: an image from elsewhere must not
        // make us read arbitrary host files.
        let rel = Path::new(&e.file);
        if e.kind != "ZERO"
            && (rel.is_absolute()
                || rel
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_))))
        {
            return Err(ctx.unsupported(format!(
                "extent file {:?} is not in the descriptor's directory",
                e.file
            )));
        }
        let epath: PathBuf = dir.join(rel);
        if e.kind != "ZERO" {
            opts.admit(path, &epath)?;
        }
        let kind = match e.kind.as_str() {
            "ZERO" => PartKind::Zero,
            "FLAT" => {
                let ectx = Ctx::new(&epath, "VMDK");
                let f = util::open_ro(&epath)?;
                let offset = e
                    .offset
                    .checked_mul(512)
                    .ok_or_else(|| ctx.corrupt("flat extent offset overflows"))?;
                let flen = ectx.file_len(&f)?;
                if offset.saturating_add(len) > flen {
                    return Err(ectx.corrupt(format!(
                        "truncated: flat extent needs {} bytes from offset {offset} but the file has {flen}",
                        len
                    )));
                }
                PartKind::Flat {
                    ctx: ectx,
                    file: f,
                    offset,
                }
            }
            "SPARSE" => {
                let f = util::open_ro(&epath)?;
                let (s, _) = Sparse::open(Ctx::new(&epath, "VMDK"), f)?;
                if s.compressed() {
                    return Err(ctx.unsupported(
                        "compressed sparse extent referenced from a descriptor file",
                    ));
                }
                if s.capacity < len {
                    return Err(ctx.corrupt(format!(
                        "sparse extent {} holds {} bytes but the descriptor gives it {len}",
                        e.file, s.capacity
                    )));
                }
                PartKind::Sparse(Box::new(s))
            }
            other => return Err(ctx.unsupported(format!("extent type {other:?}"))),
        };
        parts.push(Part { start, len, kind });
        start = start
            .checked_add(len)
            .ok_or_else(|| ctx.corrupt("total extent size overflows"))?;
    }
    Ok(Box::new(VmdkReader {
        ctx,
        format,
        size: start,
        parts,
    }))
}

impl DiskReader for VmdkReader {
    fn format(&self) -> Format {
        self.format
    }
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn files(&self) -> Vec<PathBuf> {
        let mut out = vec![self.ctx.path.clone()];
        for p in &self.parts {
            let path = match &p.kind {
                PartKind::Flat { ctx, .. } => &ctx.path,
                PartKind::Sparse(s) => &s.ctx.path,
                PartKind::Zero => continue,
            };
            if !out.contains(path) {
                out.push(path.clone());
            }
        }
        out
    }
    fn allocation(&mut self) -> Result<Vec<Extent>, DiskError> {
        let mut list = ExtentList::default();
        for p in &mut self.parts {
            match &mut p.kind {
                PartKind::Zero => {}
                PartKind::Flat { ctx, file, offset } => {
                    for (s, e) in util::file_data_ranges(ctx, file, *offset, *offset + p.len)? {
                        list.push(p.start + (s - *offset), e - s, ExtentKind::Data);
                    }
                }
                PartKind::Sparse(s) => {
                    let mut sub = ExtentList::default();
                    s.allocation(0, &mut sub)?;
                    for e in sub.list {
                        if e.offset < p.len {
                            list.push(p.start + e.offset, e.length.min(p.len - e.offset), e.kind);
                        }
                    }
                }
            }
        }
        Ok(list.list)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&self.ctx, offset, buf.len(), self.size)?;
        let mut pos = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let Some(p) = self
                .parts
                .iter_mut()
                .find(|p| pos >= p.start && pos < p.start + p.len)
            else {
                return Err(self.ctx.invalid(format!("offset {pos} is in no extent")));
            };
            let within = pos - p.start;
            let n = rest.len().min((p.len - within) as usize);
            let (chunk, tail) = rest.split_at_mut(n);
            match &mut p.kind {
                PartKind::Zero => chunk.fill(0),
                PartKind::Flat { ctx, file, offset } => {
                    ctx.read_exact_at(file, chunk, *offset + within, "flat extent")?
                }
                PartKind::Sparse(s) => s.read_at(within, chunk)?,
            }
            rest = tail;
            pos += n as u64;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- writers

const W_GRAIN_SECTORS: u64 = 128;
const W_GRAIN: u64 = W_GRAIN_SECTORS * 512;
const W_GTES: u64 = 512;
const W_DESC_SECTORS: u64 = 20;

fn descriptor_text(
    ctx: &Ctx,
    path: &Path,
    create_type: &str,
    size: u64,
) -> Result<Vec<u8>, DiskError> {
    let cid = u32::from_le_bytes(util::random_bytes::<4>(ctx)?) | 1;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.contains('"') {
        return Err(
            ctx.invalid("file name contains a double quote, which a VMDK descriptor cannot hold")
        );
    }
    let sectors = size / 512;
    let cyls = (sectors / (255 * 63)).clamp(1, 65535);
    let text = format!(
        "# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID=ffffffff\ncreateType=\"{create_type}\"\n\n\
         # Extent description\nRW {sectors} SPARSE \"{name}\"\n\n\
         # The Disk Data Base\n#DDB\n\n\
         ddb.virtualHWVersion = \"4\"\nddb.adapterType = \"lsilogic\"\n\
         ddb.geometry.cylinders = \"{cyls}\"\nddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\n\
         ddb.toolsVersion = \"0\"\nddb.comment = \"written by lifeboat\"\n"
    );
    let bytes = text.into_bytes();
    if bytes.len() as u64 > W_DESC_SECTORS * 512 {
        return Err(ctx.invalid("descriptor too long (file name too long?)"));
    }
    Ok(bytes)
}

#[allow(clippy::too_many_arguments)]
fn header_bytes(
    version: u32,
    flags: u32,
    capacity_sectors: u64,
    rgd: u64,
    gd: u64,
    overhead: u64,
    compress: u16,
) -> [u8; 512] {
    let mut h = [0u8; 512];
    util::put(&mut h, 0, b"KDMV");
    util::put(&mut h, 4, &version.to_le_bytes());
    util::put(&mut h, 8, &flags.to_le_bytes());
    util::put(&mut h, 12, &capacity_sectors.to_le_bytes());
    util::put(&mut h, 20, &W_GRAIN_SECTORS.to_le_bytes());
    util::put(&mut h, 28, &1u64.to_le_bytes());
    util::put(&mut h, 36, &W_DESC_SECTORS.to_le_bytes());
    util::put(&mut h, 44, &(W_GTES as u32).to_le_bytes());
    util::put(&mut h, 48, &rgd.to_le_bytes());
    util::put(&mut h, 56, &gd.to_le_bytes());
    util::put(&mut h, 64, &overhead.to_le_bytes());
    util::put(&mut h, 73, b"\n \r\n");
    util::put(&mut h, 77, &compress.to_le_bytes());
    h
}

fn round_size(ctx: &Ctx, size: u64) -> Result<u64, DiskError> {
    size.checked_next_multiple_of(512)
        .ok_or_else(|| ctx.invalid("virtual size too large"))
}

fn gd_len(ctx: &Ctx, size: u64) -> Result<u64, DiskError> {
    let n = div_ceil(size, W_GRAIN * W_GTES);
    util::table_len(ctx, n, 4, util::TABLE_LIMIT, "grain directory")?;
    if n > u64::from(u32::MAX) / 4 {
        return Err(ctx.invalid(format!(
            "virtual size {size} is too large for a VMDK sparse extent"
        )));
    }
    Ok(n)
}

/// A metadata marker sector: `val` sectors of metadata of `kind` follow.
fn marker(val: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    util::put(&mut m, 0, &val.to_le_bytes());
    util::put(&mut m, 12, &kind.to_le_bytes());
    m
}

struct StreamSink {
    ctx: Ctx,
    file: File,
    next_sector: u64,
    gd: Vec<u32>,
    cur_gt: Option<(usize, Vec<u8>)>,
    z: Compress,
    zbuf: Vec<u8>,
}

impl StreamSink {
    fn sector_offset(&self) -> Result<u32, DiskError> {
        u32::try_from(self.next_sector).map_err(|_| {
            self.ctx
                .invalid("stream grows beyond 2 TiB of sectors addressable by a grain table")
        })
    }

    fn flush_gt(&mut self) -> Result<(), DiskError> {
        if let Some((idx, gt)) = self.cur_gt.take() {
            let at = self.next_sector * 512;
            self.ctx
                .write_all_at(&self.file, &marker(W_GTES * 4 / 512, 1), at)?;
            self.ctx.write_all_at(&self.file, &gt, at + 512)?;
            self.next_sector += 1;
            let s = self.sector_offset()?;
            if let Some(e) = self.gd.get_mut(idx) {
                *e = s;
            }
            self.next_sector += W_GTES * 4 / 512;
        }
        Ok(())
    }
}

impl UnitSink for StreamSink {
    fn put_unit(&mut self, index: u64, data: &[u8]) -> Result<(), DiskError> {
        let gd_idx = (index / W_GTES) as usize;
        if self.cur_gt.as_ref().map(|(i, _)| *i) != Some(gd_idx) {
            self.flush_gt()?;
            self.cur_gt = Some((gd_idx, vec![0u8; (W_GTES * 4) as usize]));
        }
        self.zbuf.clear();
        self.zbuf
            .extend_from_slice(&(index * W_GRAIN_SECTORS).to_le_bytes());
        self.zbuf.extend_from_slice(&[0u8; 4]);
        self.z.reset();
        loop {
            match self
                .z
                .compress_vec(data, &mut self.zbuf, FlushCompress::Finish)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => self.zbuf.reserve(W_GRAIN as usize),
                Err(e) => return Err(self.ctx.io("deflate", std::io::Error::other(e))),
            }
        }
        let csize = (self.zbuf.len() - 12) as u32;
        util::put(&mut self.zbuf, 8, &csize.to_le_bytes());
        let padded = (self.zbuf.len() as u64).next_multiple_of(512);
        self.zbuf.resize(padded as usize, 0);
        let sector = self.sector_offset()?;
        self.ctx
            .write_all_at(&self.file, &self.zbuf, self.next_sector * 512)?;
        self.next_sector += padded / 512;
        if let Some((_, gt)) = self.cur_gt.as_mut() {
            util::put(gt, (index % W_GTES) as usize * 4, &sector.to_le_bytes());
        }
        Ok(())
    }
}

pub(crate) struct StreamWriter {
    path: PathBuf,
    size: u64,
    asm: Assembler,
    sink: StreamSink,
}

impl StreamWriter {
    pub fn create(path: &Path, size: u64) -> Result<Self, DiskError> {
        let ctx = Ctx::new(path, "VMDK");
        let size = round_size(&ctx, size)?;
        let num_gts = gd_len(&ctx, size)?;
        let file = util::create_rw(path)?;
        let sink = StreamSink {
            ctx: ctx.clone(),
            file,
            next_sector: W_GRAIN_SECTORS, // overhead: header + descriptor, grain-aligned
            gd: vec![0; num_gts as usize],
            cur_gt: None,
            z: Compress::new(Compression::default(), true),
            zbuf: Vec::with_capacity(W_GRAIN as usize + 4096),
        };
        Ok(StreamWriter {
            path: path.to_path_buf(),
            size,
            asm: Assembler::new(ctx, W_GRAIN, size)?,
            sink,
        })
    }
}

impl DiskWriter for StreamWriter {
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.asm.write_at(&mut self.sink, offset, data)
    }
    fn finish(mut self: Box<Self>) -> Result<(), DiskError> {
        self.asm.flush(&mut self.sink)?;
        let s = &mut self.sink;
        s.flush_gt()?;
        let ctx = s.ctx.clone();
        let capacity = self.size / 512;
        let flags = FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS;
        // Grain directory.
        let gd_sectors = div_ceil(s.gd.len() as u64 * 4, 512).max(1);
        let mut gd = vec![0u8; (gd_sectors * 512) as usize];
        for (i, e) in s.gd.iter().enumerate() {
            util::put(&mut gd, i * 4, &e.to_le_bytes());
        }
        let mut at = s.next_sector * 512;
        ctx.write_all_at(&s.file, &marker(gd_sectors, 2), at)?;
        let gd_sector = s.next_sector + 1;
        ctx.write_all_at(&s.file, &gd, at + 512)?;
        at += 512 + gd.len() as u64;
        // Footer marker, footer, end-of-stream marker.
        ctx.write_all_at(&s.file, &marker(1, 3), at)?;
        let footer = header_bytes(3, flags, capacity, 0, gd_sector, W_GRAIN_SECTORS, 1);
        ctx.write_all_at(&s.file, &footer, at + 512)?;
        ctx.write_all_at(&s.file, &[0u8; 512], at + 1024)?;
        // Descriptor and header.
        let desc = descriptor_text(&ctx, &self.path, "streamOptimized", self.size)?;
        ctx.write_all_at(&s.file, &desc, 512)?;
        let header = header_bytes(3, flags, capacity, 0, GD_AT_END, W_GRAIN_SECTORS, 1);
        ctx.write_all_at(&s.file, &header, 0)?;
        s.file.sync_all().map_err(|e| ctx.io("fsync", e))
    }
}

struct SparseSink {
    ctx: Ctx,
    file: File,
    next_sector: u64,
    gt_sector: u64,
    rgt_sector: u64,
    cur_gt: Option<(usize, Vec<u8>)>,
}

impl SparseSink {
    fn flush_gt(&mut self) -> Result<(), DiskError> {
        if let Some((idx, gt)) = self.cur_gt.take() {
            let off = idx as u64 * W_GTES * 4;
            self.ctx
                .write_all_at(&self.file, &gt, self.gt_sector * 512 + off)?;
            self.ctx
                .write_all_at(&self.file, &gt, self.rgt_sector * 512 + off)?;
        }
        Ok(())
    }
}

impl UnitSink for SparseSink {
    fn put_unit(&mut self, index: u64, data: &[u8]) -> Result<(), DiskError> {
        let gd_idx = (index / W_GTES) as usize;
        if self.cur_gt.as_ref().map(|(i, _)| *i) != Some(gd_idx) {
            self.flush_gt()?;
            self.cur_gt = Some((gd_idx, vec![0u8; (W_GTES * 4) as usize]));
        }
        let sector = u32::try_from(self.next_sector).map_err(|_| {
            self.ctx
                .invalid("image grows beyond the sectors a grain table can address")
        })?;
        self.ctx
            .write_all_at(&self.file, data, self.next_sector * 512)?;
        self.next_sector += W_GRAIN_SECTORS;
        if let Some((_, gt)) = self.cur_gt.as_mut() {
            util::put(gt, (index % W_GTES) as usize * 4, &sector.to_le_bytes());
        }
        Ok(())
    }
}

pub(crate) struct SparseWriter {
    path: PathBuf,
    size: u64,
    num_gts: u64,
    gd_sector: u64,
    rgd_sector: u64,
    overhead: u64,
    asm: Assembler,
    sink: SparseSink,
}

impl SparseWriter {
    pub fn create(path: &Path, size: u64) -> Result<Self, DiskError> {
        let ctx = Ctx::new(path, "VMDK");
        let size = round_size(&ctx, size)?;
        let num_gts = gd_len(&ctx, size)?;
        let gd_sectors = div_ceil(num_gts * 4, 512).max(1);
        let gt_sectors = num_gts * W_GTES * 4 / 512;
        let rgd_sector = 1 + W_DESC_SECTORS;
        let rgt_sector = rgd_sector + gd_sectors;
        let gd_sector = rgt_sector + gt_sectors;
        let gt_sector = gd_sector + gd_sectors;
        let overhead = (gt_sector + gt_sectors).next_multiple_of(W_GRAIN_SECTORS);
        let file = util::create_rw(path)?;
        file.set_len(overhead * 512)
            .map_err(|e| ctx.io("set_len", e))?;
        let sink = SparseSink {
            ctx: ctx.clone(),
            file,
            next_sector: overhead,
            gt_sector,
            rgt_sector,
            cur_gt: None,
        };
        Ok(SparseWriter {
            path: path.to_path_buf(),
            size,
            num_gts,
            gd_sector,
            rgd_sector,
            overhead,
            asm: Assembler::new(ctx, W_GRAIN, size)?,
            sink,
        })
    }
}

impl DiskWriter for SparseWriter {
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.asm.write_at(&mut self.sink, offset, data)
    }
    fn finish(mut self: Box<Self>) -> Result<(), DiskError> {
        self.asm.flush(&mut self.sink)?;
        let s = &mut self.sink;
        s.flush_gt()?;
        let ctx = s.ctx.clone();
        // Grain directories point at every (preallocated) grain table.
        let gd_sectors = div_ceil(self.num_gts * 4, 512).max(1);
        let mut gd = vec![0u8; (gd_sectors * 512) as usize];
        let mut rgd = gd.clone();
        for i in 0..self.num_gts {
            let at = i as usize * 4;
            util::put(&mut gd, at, &((s.gt_sector + i * 4) as u32).to_le_bytes());
            util::put(&mut rgd, at, &((s.rgt_sector + i * 4) as u32).to_le_bytes());
        }
        ctx.write_all_at(&s.file, &gd, self.gd_sector * 512)?;
        ctx.write_all_at(&s.file, &rgd, self.rgd_sector * 512)?;
        let desc = descriptor_text(&ctx, &self.path, "monolithicSparse", self.size)?;
        ctx.write_all_at(&s.file, &desc, 512)?;
        let flags = FLAG_NL_DETECT | FLAG_RGD;
        let header = header_bytes(
            1,
            flags,
            self.size / 512,
            self.rgd_sector,
            self.gd_sector,
            self.overhead,
            0,
        );
        ctx.write_all_at(&s.file, &header, 0)?;
        s.file.sync_all().map_err(|e| ctx.io("fsync", e))
    }
}
