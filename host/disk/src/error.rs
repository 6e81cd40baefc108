//! The crate's single error type.

use std::path::PathBuf;

/// Every failure of this crate. Each variant names the file and, where known, the
/// format, and says what is wrong in words a DR engineer can act on.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The operating system refused an operation on the file.
    #[error("{}: {op} failed: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The image is truncated or its metadata is inconsistent (bad checksum, a table
    /// pointing beyond the end of the file, overlapping or looping structures…).
    #[error("{}: corrupt {format} image: {what}", path.display())]
    Corrupt {
        path: PathBuf,
        format: &'static str,
        what: String,
    },
    /// The image is valid but uses a feature this crate does not implement.
    #[error("{}: unsupported {format} image: {what}", path.display())]
    Unsupported {
        path: PathBuf,
        format: &'static str,
        what: String,
    },
    /// The image depends on a backing (parent) file; chains are not followed.
    #[error(
        "{}: {format} image has backing file {backing:?}; backing chains are not supported (flatten it first, e.g. `qemu-img convert`)",
        path.display()
    )]
    BackingFile {
        path: PathBuf,
        format: &'static str,
        backing: String,
    },
    /// The caller asked for something impossible: a read past the end of the disk, a write
    /// out of ascending order, a size the format cannot hold.
    #[error("{}: invalid request on {format} image: {what}", path.display())]
    InvalidRequest {
        path: PathBuf,
        format: &'static str,
        what: String,
    },
    /// [`crate::copy_to`] was given a target smaller than its source.
    #[error(
        "cannot copy a {source_format} disk of {source_size} bytes into a target of {target_size} bytes"
    )]
    TargetTooSmall {
        source_format: crate::Format,
        source_size: u64,
        target_size: u64,
    },
}
