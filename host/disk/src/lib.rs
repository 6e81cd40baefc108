//! VM disk formats for lifeboat's native data path: raw, VMDK, VHD, VHDX and qcow2.
//!
//! * [`detect`] identifies an image by its content (never by its file name).
//! * [`open`] gives a streaming [`DiskReader`] with an allocation map, so callers read
//!   only what is allocated; unallocated regions read as zeros and are never read from
//!   the file. A differencing VHDX or VHD is opened with its whole parent chain;
//!   [`open_confined`] refuses any file of an image outside a root directory, and
//!   [`chain`] lists the files an image is made of.
//! * [`create`] gives a [`DiskWriter`] that takes data in **ascending offset order**
//!   (each write must start at or after the end of the previous one) and never writes
//!   holes: units (clusters, grains, blocks) that stay all-zero are not allocated.
//! * [`copy_to`] streams the allocated extents of a reader into a writer with a bounded
//!   buffer.
//! * [`create_vhdx_differencing`] and [`create_vhd_differencing`] make a differencing
//!   child of a VHDX or VHD (for labs and tests: Hyper-V checkpoints without Hyper-V).
//!
//! Memory is bounded: readers keep only their top-level tables plus a small cache of
//! second-level tables; writers hold one unit and one second-level table at a time.
//! See `docs/disk-formats.md` for the format facts relied on and the known limits.

mod chain;
mod error;
mod qcow2;
mod raw;
mod util;
mod vhd;
mod vhd_diff;
mod vhdx;
mod vhdx_diff;
mod vmdk;

use std::path::{Path, PathBuf};

use chain::Opts;

pub use error::DiskError;
pub use vhd_diff::create_vhd_differencing;
pub use vhdx_diff::{VhdxChildOptions, create_vhdx_differencing, create_vhdx_differencing_with};

/// A readable disk image format (with its sub-format), as found by [`detect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Raw,
    /// qcow2 version 2 or 3.
    Qcow2 {
        version: u32,
    },
    VhdFixed,
    VhdDynamic,
    /// A differencing VHD (a Virtual PC / Hyper-V child disk, often `.avhd`), read
    /// through its whole parent chain.
    VhdDifferencing,
    VhdxFixed,
    VhdxDynamic,
    /// A differencing VHDX (a Hyper-V checkpoint or child disk, often `.avhdx`), read
    /// through its whole parent chain.
    VhdxDifferencing,
    VmdkMonolithicSparse,
    VmdkStreamOptimized,
    VmdkMonolithicFlat,
    VmdkTwoGbMaxExtentSparse,
    VmdkTwoGbMaxExtentFlat,
}

impl Format {
    /// The format name qemu-img uses (`raw`, `qcow2`, `vpc`, `vhdx`, `vmdk`).
    pub fn qemu_name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 { .. } => "qcow2",
            Format::VhdFixed | Format::VhdDynamic | Format::VhdDifferencing => "vpc",
            Format::VhdxFixed | Format::VhdxDynamic | Format::VhdxDifferencing => "vhdx",
            Format::VmdkMonolithicSparse
            | Format::VmdkStreamOptimized
            | Format::VmdkMonolithicFlat
            | Format::VmdkTwoGbMaxExtentSparse
            | Format::VmdkTwoGbMaxExtentFlat => "vmdk",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Format::Raw => write!(f, "raw"),
            Format::Qcow2 { version } => write!(f, "qcow2 (v{version})"),
            Format::VhdFixed => write!(f, "VHD (fixed)"),
            Format::VhdDynamic => write!(f, "VHD (dynamic)"),
            Format::VhdDifferencing => write!(f, "VHD (differencing)"),
            Format::VhdxFixed => write!(f, "VHDX (fixed)"),
            Format::VhdxDynamic => write!(f, "VHDX (dynamic)"),
            Format::VhdxDifferencing => write!(f, "VHDX (differencing)"),
            Format::VmdkMonolithicSparse => write!(f, "VMDK (monolithicSparse)"),
            Format::VmdkStreamOptimized => write!(f, "VMDK (streamOptimized)"),
            Format::VmdkMonolithicFlat => write!(f, "VMDK (monolithicFlat)"),
            Format::VmdkTwoGbMaxExtentSparse => write!(f, "VMDK (twoGbMaxExtentSparse)"),
            Format::VmdkTwoGbMaxExtentFlat => write!(f, "VMDK (twoGbMaxExtentFlat)"),
        }
    }
}

/// A format [`create`] can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteFormat {
    /// Sparse raw file (holes are never written).
    Raw,
    /// Fixed VHD, ready to upload as an Azure page blob: the virtual size is rounded up
    /// to a multiple of 1 MiB.
    VhdFixed,
    /// Dynamic VHDX (32 MiB blocks, 512-byte logical / 4096-byte physical sectors, no log).
    VhdxDynamic,
    /// streamOptimized VMDK: deflate-compressed grains with markers, grain tables after
    /// their grains, grain directory and footer at the end.
    VmdkStreamOptimized,
    /// monolithicSparse VMDK (hosted sparse extent with redundant grain directory).
    VmdkMonolithicSparse,
    /// qcow2 version 3, 64 KiB clusters, 16-bit refcounts, no compression.
    Qcow2,
}

/// What an [`Extent`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtentKind {
    /// Allocated data: read it.
    Data,
    /// Known to read as zeros although the format records it explicitly (a qcow2 zero
    /// cluster, a VMDK zeroed grain, a VHDX zero block), or — in a change list — a range
    /// that must be zeroed on a replica. Reading it yields zeros; [`copy_to`] skips it
    /// because a new image reads as zeros there already.
    Cleared,
}

/// A byte range of the virtual disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub kind: ExtentKind,
}

/// A disk image opened for reading.
pub trait DiskReader: Send {
    fn format(&self) -> Format;
    /// Size of the virtual disk in bytes.
    fn virtual_size(&self) -> u64;
    /// Every host file this reader reads, as opened (not canonicalised): the image's own
    /// file first, then a differencing VHDX's or VHD's parents from the nearest to the
    /// base, or a VMDK descriptor's extent files. [`chain`] gives them canonical.
    fn files(&self) -> Vec<PathBuf>;
    /// Allocated ranges, ascending, non-overlapping, adjacent ranges of one kind merged.
    /// Everything not listed reads as zeros. For a differencing VHDX or VHD this is the
    /// map of the whole chain: what the child holds, and what each parent holds where
    /// the levels above it leave the range to it.
    fn allocation(&mut self) -> Result<Vec<Extent>, DiskError>;
    /// Fills `buf` with the virtual disk's bytes at `offset`; the range must lie within
    /// the virtual size.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError>;
}

/// A disk image being written. Writes must come in ascending offset order: each
/// `write_at` starts at or after the end of the previous one. Unwritten ranges read as
/// zeros. Nothing is valid until [`DiskWriter::finish`] returns.
pub trait DiskWriter: Send {
    /// Size of the virtual disk being written (after any rounding the format needs).
    fn virtual_size(&self) -> u64;
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError>;
    /// Writes the remaining metadata and flushes the file to stable storage.
    fn finish(self: Box<Self>) -> Result<(), DiskError>;
}

/// Identifies the format of the image at `path` by its content, checking its metadata
/// (checksums, table bounds) so that a corrupt or unsupported image is reported here.
pub fn detect(path: impl AsRef<Path>) -> Result<Format, DiskError> {
    Ok(open(path)?.format())
}

/// Opens the image at `path` for reading, whatever its format. A differencing VHDX or
/// VHD is opened with its whole parent chain (see `docs/disk-formats.md` for where
/// parents are looked for and how they are checked); other formats' backing files are
/// refused with [`DiskError::BackingFile`]. Parents are not confined: see
/// [`open_confined`].
pub fn open(path: impl AsRef<Path>) -> Result<Box<dyn DiskReader>, DiskError> {
    open_with(path.as_ref(), &Opts::default())
}

/// Like [`open`], but every file the image is made of — the image itself, a
/// differencing VHDX's or VHD's parents, a VMDK descriptor's extent files — must have its
/// canonical path (symlinks resolved) inside `root`; otherwise the open fails with
/// [`DiskError::OutsideRoot`] naming the file, before that file is read.
pub fn open_confined(
    path: impl AsRef<Path>,
    root: impl AsRef<Path>,
) -> Result<Box<dyn DiskReader>, DiskError> {
    let path = path.as_ref();
    let opts = Opts {
        root: Some(chain::canonical(root.as_ref())?),
    };
    opts.admit(path, path)?;
    open_with(path, &opts)
}

/// The files the image at `path` is made of, canonical, the image first: for a
/// differencing VHDX or VHD its parents follow from the nearest to the base; for a VMDK
/// descriptor, its extent files. The image is fully opened (and checked) to find them.
pub fn chain(path: impl AsRef<Path>) -> Result<Vec<PathBuf>, DiskError> {
    open(path)?
        .files()
        .iter()
        .map(|p| chain::canonical(p))
        .collect()
}

fn open_with(path: &Path, opts: &Opts) -> Result<Box<dyn DiskReader>, DiskError> {
    let file = util::open_ro(path)?;
    let probe = util::Ctx::new(path, "disk");
    let len = probe.file_len(&file)?;
    let mut head = [0u8; 512];
    let n = usize::try_from(len.min(512)).unwrap_or(0);
    if let Some(h) = head.get_mut(..n) {
        probe.read_exact_at(&file, h, 0, "first sector")?;
    }
    if head.starts_with(b"QFI\xfb") {
        return Ok(Box::new(qcow2::Qcow2Reader::open(path, file)?));
    }
    if head.starts_with(b"KDMV") || head.starts_with(b"# Disk DescriptorFile") {
        return vmdk::open(path, file, &head, opts);
    }
    if head.starts_with(b"COWD") {
        return Err(util::Ctx::new(path, "VMDK")
            .unsupported("VMware 3 (COWD) sparse extents are not supported"));
    }
    if head.starts_with(b"vhdxfile") {
        return Ok(Box::new(vhdx::VhdxReader::open(path, file, opts)?));
    }
    if head.starts_with(b"conectix") {
        return Ok(Box::new(vhd::VhdReader::open(path, file, len, opts)?));
    }
    if len >= 512 {
        let mut tail = [0u8; 512];
        probe.read_exact_at(&file, &mut tail, len - 512, "last sector")?;
        if tail.starts_with(b"conectix") {
            return Ok(Box::new(vhd::VhdReader::open(path, file, len, opts)?));
        }
    }
    Ok(Box::new(raw::RawReader::open(path, file)?))
}

/// Creates a new image at `path` (replacing any file there) of `virtual_size` bytes.
/// Formats with sector granularity round the size up to a multiple of 512 bytes, and a
/// fixed VHD up to a multiple of 1 MiB; [`DiskWriter::virtual_size`] tells the result.
pub fn create(
    path: impl AsRef<Path>,
    format: WriteFormat,
    virtual_size: u64,
) -> Result<Box<dyn DiskWriter>, DiskError> {
    let path = path.as_ref();
    Ok(match format {
        WriteFormat::Raw => Box::new(raw::RawWriter::create(path, virtual_size)?),
        WriteFormat::VhdFixed => Box::new(vhd::VhdFixedWriter::create(path, virtual_size)?),
        WriteFormat::VhdxDynamic => Box::new(vhdx::VhdxWriter::create(path, virtual_size)?),
        WriteFormat::VmdkStreamOptimized => {
            Box::new(vmdk::StreamWriter::create(path, virtual_size)?)
        }
        WriteFormat::VmdkMonolithicSparse => {
            Box::new(vmdk::SparseWriter::create(path, virtual_size)?)
        }
        WriteFormat::Qcow2 => Box::new(qcow2::Qcow2Writer::create(path, virtual_size)?),
    })
}

/// Size of the buffer [`copy_to`] streams through.
pub const COPY_BUFFER: usize = 1 << 20;

/// Streams every allocated data extent of `reader` into `writer` (in ascending order,
/// through one [`COPY_BUFFER`]-sized buffer) and returns the number of bytes copied.
/// Unallocated and [`ExtentKind::Cleared`] ranges are skipped: a new image reads as zeros
/// there. The writer is not finished; call [`DiskWriter::finish`] afterwards.
pub fn copy_to(reader: &mut dyn DiskReader, writer: &mut dyn DiskWriter) -> Result<u64, DiskError> {
    if reader.virtual_size() > writer.virtual_size() {
        return Err(DiskError::TargetTooSmall {
            source_format: reader.format(),
            source_size: reader.virtual_size(),
            target_size: writer.virtual_size(),
        });
    }
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut copied = 0u64;
    for ext in reader.allocation()? {
        if ext.kind != ExtentKind::Data {
            continue;
        }
        let mut pos = ext.offset;
        let end = ext.offset + ext.length;
        while pos < end {
            let n = usize::try_from(end - pos)
                .unwrap_or(COPY_BUFFER)
                .min(COPY_BUFFER);
            let chunk = &mut buf[..n];
            reader.read_at(pos, chunk)?;
            writer.write_at(pos, chunk)?;
            pos += n as u64;
            copied += n as u64;
        }
    }
    Ok(copied)
}
