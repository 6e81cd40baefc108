//! Small shared helpers: bounds-checked byte decoding, positioned I/O with clear errors,
//! CRC-32C, sparse-file probing, extent merging and the ascending-write unit assembler.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{DiskError, Extent, ExtentKind};

/// Identifies a file and its format in errors.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub path: PathBuf,
    pub format: &'static str,
}

impl Ctx {
    pub fn new(path: &Path, format: &'static str) -> Self {
        Ctx {
            path: path.to_path_buf(),
            format,
        }
    }
    pub fn corrupt(&self, what: impl Into<String>) -> DiskError {
        DiskError::Corrupt {
            path: self.path.clone(),
            format: self.format,
            what: what.into(),
        }
    }
    pub fn unsupported(&self, what: impl Into<String>) -> DiskError {
        DiskError::Unsupported {
            path: self.path.clone(),
            format: self.format,
            what: what.into(),
        }
    }
    pub fn invalid(&self, what: impl Into<String>) -> DiskError {
        DiskError::InvalidRequest {
            path: self.path.clone(),
            format: self.format,
            what: what.into(),
        }
    }
    pub fn io(&self, op: &'static str, source: std::io::Error) -> DiskError {
        DiskError::Io {
            path: self.path.clone(),
            op,
            source,
        }
    }
    pub fn backing(&self, backing: impl Into<String>) -> DiskError {
        DiskError::BackingFile {
            path: self.path.clone(),
            format: self.format,
            backing: backing.into(),
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`; a short file is reported as truncation.
    pub fn read_exact_at(
        &self,
        file: &File,
        buf: &mut [u8],
        offset: u64,
        what: &str,
    ) -> Result<(), DiskError> {
        match file.read_exact_at(buf, offset) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(self.corrupt(format!(
                "truncated: {what} ({} bytes at offset {offset}) lies beyond the end of the file",
                buf.len()
            ))),
            Err(e) => Err(self.io("read", e)),
        }
    }

    pub fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        file.write_all_at(buf, offset)
            .map_err(|e| self.io("write", e))
    }

    pub fn file_len(&self, file: &File) -> Result<u64, DiskError> {
        use std::io::Seek;
        // Seek rather than metadata so block devices report their size too.
        let mut f = file;
        f.seek(std::io::SeekFrom::End(0))
            .map_err(|e| self.io("seek", e))
    }
}

pub(crate) fn open_ro(path: &Path) -> Result<File, DiskError> {
    File::open(path).map_err(|e| DiskError::Io {
        path: path.to_path_buf(),
        op: "open",
        source: e,
    })
}

pub(crate) fn create_rw(path: &Path) -> Result<File, DiskError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| DiskError::Io {
            path: path.to_path_buf(),
            op: "create",
            source: e,
        })
}

// ---- bounds-checked decoding (slices are always long enough by construction, but a
// ---- missing byte yields zero rather than a panic).

fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(s) = b.get(off..off.saturating_add(N)) {
        out.copy_from_slice(s);
    }
    out
}
pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(arr(b, off))
}
pub(crate) fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(arr(b, off))
}
pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(arr(b, off))
}
pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(arr(b, off))
}
pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(arr(b, off))
}
pub(crate) fn bytes<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    arr(b, off)
}
pub(crate) fn put(b: &mut [u8], off: usize, v: &[u8]) {
    if let Some(s) = b.get_mut(off..off.saturating_add(v.len())) {
        s.copy_from_slice(v);
    }
}

pub(crate) fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

pub(crate) fn div_ceil(a: u64, b: u64) -> u64 {
    if b == 0 { 0 } else { a.div_ceil(b) }
}

/// Converts a table size to a `usize` allocation, refusing anything above `limit` bytes so
/// a corrupt header cannot make us allocate unbounded memory.
pub(crate) fn table_len(
    ctx: &Ctx,
    entries: u64,
    entry_size: u64,
    limit: u64,
    what: &str,
) -> Result<usize, DiskError> {
    let bytes = entries
        .checked_mul(entry_size)
        .ok_or_else(|| ctx.corrupt(format!("{what} size overflows")))?;
    if bytes > limit {
        return Err(ctx.unsupported(format!(
            "{what} of {bytes} bytes exceeds the {limit}-byte limit for in-memory tables"
        )));
    }
    usize::try_from(bytes).map_err(|_| ctx.corrupt(format!("{what} size does not fit in memory")))
}

/// Limit for any one metadata table held in memory.
pub(crate) const TABLE_LIMIT: u64 = 256 << 20;

// ---- CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), used by VHDX.

const fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}
static CRC32C: [u32; 256] = crc32c_table();

pub(crate) fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC32C[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

// ---- sparse files

/// Data ranges of a host file within `[start, end)`, found with SEEK_DATA/SEEK_HOLE.
/// Filesystems without hole support report everything as data.
pub(crate) fn file_data_ranges(
    ctx: &Ctx,
    file: &File,
    start: u64,
    end: u64,
) -> Result<Vec<(u64, u64)>, DiskError> {
    use rustix::fs::{SeekFrom, seek};
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let data = match seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOTSUP) if out.is_empty() => {
                out.push((start, end));
                return Ok(out);
            }
            Err(e) => return Err(ctx.io("seek(SEEK_DATA)", e.into())),
        };
        if data >= end {
            break;
        }
        let hole = match seek(file, SeekFrom::Hole(data)) {
            Ok(h) => h,
            Err(rustix::io::Errno::NXIO) => end,
            Err(e) => return Err(ctx.io("seek(SEEK_HOLE)", e.into())),
        };
        let hole = hole.min(end);
        if hole <= data {
            break;
        }
        out.push((data, hole));
        pos = hole;
    }
    Ok(out)
}

/// Collects extents, merging each one with the previous when they touch and share a kind.
#[derive(Debug, Default)]
pub(crate) struct ExtentList {
    pub list: Vec<Extent>,
}

impl ExtentList {
    pub fn push(&mut self, offset: u64, length: u64, kind: ExtentKind) {
        if length == 0 {
            return;
        }
        if let Some(last) = self.list.last_mut()
            && last.kind == kind
            && last.offset + last.length == offset
        {
            last.length += length;
            return;
        }
        self.list.push(Extent {
            offset,
            length,
            kind,
        });
    }
}

/// Random bytes for GUIDs and unique ids.
pub(crate) fn random_bytes<const N: usize>(ctx: &Ctx) -> Result<[u8; N], DiskError> {
    let mut out = [0u8; N];
    let f = File::open("/dev/urandom").map_err(|e| ctx.io("open /dev/urandom", e))?;
    f.read_exact_at(&mut out, 0)
        .map_err(|e| ctx.io("read /dev/urandom", e))?;
    Ok(out)
}

// ---- writers: ascending-order unit assembly

/// Receives whole units (clusters, grains, chunks) in ascending order; a unit is always
/// `unit` bytes long, zero-filled where nothing was written, and never all zeros.
pub(crate) trait UnitSink {
    fn put_unit(&mut self, index: u64, data: &[u8]) -> Result<(), DiskError>;
}

/// Turns ascending `write_at` calls of any size and alignment into whole units, holding at
/// most one unit in memory. Units that end up all zeros are dropped: holes stay holes.
#[derive(Debug)]
pub(crate) struct Assembler {
    pub ctx: Ctx,
    unit: u64,
    virtual_size: u64,
    cur: Option<u64>,
    buf: Vec<u8>,
    next_min: u64,
}

impl Assembler {
    pub fn new(ctx: Ctx, unit: u64, virtual_size: u64) -> Result<Self, DiskError> {
        let len =
            usize::try_from(unit).map_err(|_| ctx.invalid("unit size does not fit in memory"))?;
        Ok(Assembler {
            ctx,
            unit,
            virtual_size,
            cur: None,
            buf: vec![0; len],
            next_min: 0,
        })
    }

    pub fn write_at(
        &mut self,
        sink: &mut dyn UnitSink,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DiskError> {
        let len = data.len() as u64;
        if offset < self.next_min {
            return Err(self.ctx.invalid(format!(
                "write at offset {offset} is out of order: writes must be in ascending offset order and not overlap (next allowed offset is {})",
                self.next_min
            )));
        }
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.virtual_size)
            .ok_or_else(|| {
                self.ctx.invalid(format!(
                    "write of {len} bytes at offset {offset} goes beyond the virtual size {}",
                    self.virtual_size
                ))
            })?;
        if len == 0 {
            return Ok(());
        }
        self.next_min = end;
        let mut pos = offset;
        let mut src = data;
        while !src.is_empty() {
            let idx = pos / self.unit;
            if self.cur != Some(idx) {
                self.flush(sink)?;
                self.cur = Some(idx);
            }
            let within = (pos % self.unit) as usize;
            let n = src.len().min(self.buf.len() - within);
            let (head, rest) = src.split_at(n);
            if let Some(dst) = self.buf.get_mut(within..within + n) {
                dst.copy_from_slice(head);
            }
            src = rest;
            pos += n as u64;
        }
        Ok(())
    }

    /// Emits the pending unit, if any.
    pub fn flush(&mut self, sink: &mut dyn UnitSink) -> Result<(), DiskError> {
        if let Some(idx) = self.cur.take() {
            if !is_zero(&self.buf) {
                sink.put_unit(idx, &self.buf)?;
            }
            self.buf.fill(0);
        }
        Ok(())
    }
}
