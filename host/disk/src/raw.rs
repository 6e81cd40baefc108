//! Raw images: the file is the disk. Allocation comes from the host file's holes
//! (SEEK_DATA / SEEK_HOLE).

use std::fs::File;
use std::path::Path;

use crate::util::{self, Assembler, Ctx, ExtentList, UnitSink};
use crate::{DiskError, DiskReader, DiskWriter, Extent, ExtentKind, Format};

pub(crate) struct RawReader {
    ctx: Ctx,
    file: File,
    size: u64,
}

impl RawReader {
    pub fn open(path: &Path, file: File) -> Result<Self, DiskError> {
        let ctx = Ctx::new(path, "raw");
        let size = ctx.file_len(&file)?;
        Ok(RawReader { ctx, file, size })
    }
}

/// Checks that `[offset, offset + len)` lies within a disk of `size` bytes.
pub(crate) fn check_range(ctx: &Ctx, offset: u64, len: usize, size: u64) -> Result<(), DiskError> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(ctx.invalid(format!(
            "read of {len} bytes at offset {offset} goes beyond the virtual size {size}"
        ))),
    }
}

impl DiskReader for RawReader {
    fn format(&self) -> Format {
        Format::Raw
    }
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn files(&self) -> Vec<std::path::PathBuf> {
        vec![self.ctx.path.clone()]
    }
    fn allocation(&mut self) -> Result<Vec<Extent>, DiskError> {
        let mut list = ExtentList::default();
        for (s, e) in util::file_data_ranges(&self.ctx, &self.file, 0, self.size)? {
            list.push(s, e - s, ExtentKind::Data);
        }
        Ok(list.list)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(&self.ctx, offset, buf.len(), self.size)?;
        self.ctx.read_exact_at(&self.file, buf, offset, "data")
    }
}

const RAW_UNIT: u64 = 64 << 10;

struct RawSink {
    ctx: Ctx,
    file: File,
    size: u64,
}

impl UnitSink for RawSink {
    fn put_unit(&mut self, index: u64, data: &[u8]) -> Result<(), DiskError> {
        let off = index * RAW_UNIT;
        let n = usize::try_from((self.size - off).min(data.len() as u64)).unwrap_or(0);
        self.ctx
            .write_all_at(&self.file, data.get(..n).unwrap_or_default(), off)
    }
}

pub(crate) struct RawWriter {
    asm: Assembler,
    sink: RawSink,
}

impl RawWriter {
    pub fn create(path: &Path, size: u64) -> Result<Self, DiskError> {
        let ctx = Ctx::new(path, "raw");
        let file = util::create_rw(path)?;
        file.set_len(size).map_err(|e| ctx.io("set_len", e))?;
        Ok(RawWriter {
            asm: Assembler::new(ctx.clone(), RAW_UNIT, size)?,
            sink: RawSink { ctx, file, size },
        })
    }
}

impl DiskWriter for RawWriter {
    fn virtual_size(&self) -> u64 {
        self.sink.size
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.asm.write_at(&mut self.sink, offset, data)
    }
    fn finish(mut self: Box<Self>) -> Result<(), DiskError> {
        self.asm.flush(&mut self.sink)?;
        self.sink
            .file
            .sync_all()
            .map_err(|e| self.sink.ctx.io("fsync", e))
    }
}
