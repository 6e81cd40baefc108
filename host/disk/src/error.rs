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
    /// The image depends on a backing (parent) file in a format whose chains are not
    /// followed (qcow2, VMDK, VHD). VHDX differencing chains are followed instead.
    #[error(
        "{}: {format} image has backing file {backing:?}; backing chains are not supported for this format (flatten it first, e.g. `qemu-img convert`)",
        path.display()
    )]
    BackingFile {
        path: PathBuf,
        format: &'static str,
        backing: String,
    },
    /// A differencing image's parent is in none of the places its parent locator allows.
    #[error(
        "{}: the parent of this differencing {format} image was not found: it records {parent:?}; tried {}. Put the parent file at one of those paths (keep a chain's files together in one folder, as Hyper-V exports them), or merge the chain into one disk first (Hyper-V: Edit Disk → Merge, or Merge-VHD)",
        path.display(),
        tried.iter().map(|p| format!("{:?}", p.display().to_string())).collect::<Vec<_>>().join(", ")
    )]
    MissingParent {
        /// The child whose parent is missing.
        path: PathBuf,
        format: &'static str,
        /// The parent path as the child records it.
        parent: String,
        /// The host paths looked at, in order.
        tried: Vec<PathBuf>,
    },
    /// A differencing image's parent was found but is not the disk the child was made
    /// from (its identity or geometry differs).
    #[error(
        "{}: parent {} does not belong to this differencing {format} image: {what}. The parent was changed after the child was made (e.g. written to, or a checkpoint was merged), or it is another disk with the same name; restore the chain's files together from the same export or backup, or merge the chain into one disk first",
        path.display(),
        parent.display()
    )]
    ParentMismatch {
        /// The child.
        path: PathBuf,
        format: &'static str,
        /// The parent file that was found.
        parent: PathBuf,
        what: String,
    },
    /// [`crate::open_confined`]: a file the image needs lies outside the allowed root.
    #[error(
        "{}: refusing to read {}, a file this image needs, because it lies outside {}",
        path.display(),
        file.display(),
        root.display()
    )]
    OutsideRoot {
        /// The image file that refers to `file` (`file` itself for the top image).
        path: PathBuf,
        /// The offending file, canonical.
        file: PathBuf,
        /// The root, canonical.
        root: PathBuf,
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
