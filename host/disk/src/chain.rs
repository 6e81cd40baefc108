//! Following parent (backing) chains: where a parent may be, confinement to a root
//! directory, and the guards against loops and absurd depth.

use std::path::{Path, PathBuf};

use crate::util::ExtentList;
use crate::{DiskError, Extent};

/// Most files one chain may have (the image itself included).
pub(crate) const MAX_CHAIN: usize = 64;

/// How images are opened.
#[derive(Debug, Default, Clone)]
pub(crate) struct Opts {
    /// Canonical root every file must lie in ([`crate::open_confined`]).
    pub root: Option<PathBuf>,
}

impl Opts {
    /// Refuses `file` (needed by the image `by`) unless its canonical path lies inside
    /// the root. Without a root every file is admitted.
    pub fn admit(&self, by: &Path, file: &Path) -> Result<(), DiskError> {
        let Some(root) = &self.root else {
            return Ok(());
        };
        let real = canonical(file)?;
        if real.starts_with(root) {
            Ok(())
        } else {
            Err(DiskError::OutsideRoot {
                path: by.to_path_buf(),
                file: real,
                root: root.clone(),
            })
        }
    }
}

pub(crate) fn canonical(p: &Path) -> Result<PathBuf, DiskError> {
    p.canonicalize().map_err(|e| DiskError::Io {
        path: p.to_path_buf(),
        op: "resolve the path of",
        source: e,
    })
}

/// Turns a Windows relative path (`\` separators, `..`, a leading `.\`) into a host one.
/// `None` when it is not relative (a drive letter, a UNC or rooted path).
fn windows_relative(p: &str) -> Option<PathBuf> {
    let s = p.replace('\\', "/");
    if s.starts_with('/') || s.as_bytes().get(1) == Some(&b':') || s.is_empty() {
        return None;
    }
    let mut out = PathBuf::new();
    for part in s.split('/') {
        match part {
            "" | "." => {}
            other => out.push(other),
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// The last component of a Windows path (`\\?\D:\VMs\base.vhdx` → `base.vhdx`).
fn windows_file_name(p: &str) -> Option<&str> {
    p.rsplit(['\\', '/'])
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != ".." && !n.contains(':'))
}

/// Host paths where the parent of `child` may be, in the order to try them: the
/// relative path from the child's folder, then the file name of each recorded path
/// (relative, volume, absolute) in the child's folder. Duplicates are dropped.
pub(crate) fn candidates(
    child: &Path,
    relative: Option<&str>,
    others: &[Option<&str>],
) -> Vec<PathBuf> {
    let dir = child.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut out: Vec<PathBuf> = Vec::new();
    let mut add = |p: PathBuf| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    if let Some(rel) = relative.and_then(windows_relative) {
        add(dir.join(rel));
    }
    for name in std::iter::once(relative)
        .chain(others.iter().copied())
        .flatten()
        .filter_map(windows_file_name)
    {
        add(dir.join(name));
    }
    out
}

/// Sector runs of `[within, within + len)` in a block: `(offset in block, length,
/// present here)`. Bit `s` of `bits` is set when sector `s` (of `sector` bytes) of the
/// block is present in this file; bits run from the least significant (VHDX) or, with
/// `msb_first`, from the most significant (VHD) bit of each byte.
pub(crate) fn sector_runs(
    bits: &[u8],
    sector: u64,
    within: u64,
    len: u64,
    msb_first: bool,
) -> Vec<(u64, u64, bool)> {
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    let end = within + len;
    let mut pos = within;
    while pos < end {
        let s = pos / sector;
        let next = ((s + 1) * sector).min(end);
        let byte = bits.get((s / 8) as usize).copied().unwrap_or(0);
        let bit = if msb_first { 7 - s % 8 } else { s % 8 };
        let present = byte >> bit & 1 != 0;
        match out.last_mut() {
            Some(last) if last.2 == present => last.1 += next - pos,
            _ => out.push((pos, next - pos, present)),
        }
        pos = next;
    }
    out
}

/// Adds to `list` the extents of `below` (a parent's map) that fall in `[s, e)`. Calls
/// must come in ascending order of `s`; `cur` keeps where the search got to.
pub(crate) fn overlay(list: &mut ExtentList, below: &[Extent], cur: &mut usize, s: u64, e: u64) {
    while below.get(*cur).is_some_and(|x| x.offset + x.length <= s) {
        *cur += 1;
    }
    let mut i = *cur;
    while let Some(x) = below.get(i) {
        if x.offset >= e {
            break;
        }
        let (a, z) = (x.offset.max(s), (x.offset + x.length).min(e));
        if a < z {
            list.push(a, z - a, x.kind);
        }
        i += 1;
    }
}

/// Tracks the files of a chain being opened: refuses loops and chains over
/// [`MAX_CHAIN`] files.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    files: Vec<PathBuf>,
}

impl Seen {
    /// Records `file` (canonical), the parent of `child`.
    pub fn add(
        &mut self,
        child: &Path,
        file: PathBuf,
        format: &'static str,
    ) -> Result<(), DiskError> {
        if self.files.contains(&file) {
            return Err(DiskError::Corrupt {
                path: child.to_path_buf(),
                format,
                what: format!(
                    "the parent chain loops: its parent {} is already in the chain",
                    file.display()
                ),
            });
        }
        if self.files.len() >= MAX_CHAIN {
            return Err(DiskError::Unsupported {
                path: child.to_path_buf(),
                format,
                what: format!("the parent chain has more than {MAX_CHAIN} files"),
            });
        }
        self.files.push(file);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_paths() {
        assert_eq!(
            windows_relative(r".\base.vhdx"),
            Some(PathBuf::from("base.vhdx"))
        );
        assert_eq!(
            windows_relative(r"..\..\p2\parent.vhdx"),
            Some(PathBuf::from("../../p2/parent.vhdx"))
        );
        assert_eq!(windows_relative(r"C:\x\y.vhdx"), None);
        assert_eq!(windows_relative(r"\\?\C:\x\y.vhdx"), None);
        assert_eq!(
            windows_file_name(r"\\?\D:\VMs\base.vhdx"),
            Some("base.vhdx")
        );
        assert_eq!(windows_file_name(r"C:"), None);
        assert_eq!(
            windows_file_name("file://localhost/x/base.vhd"),
            Some("base.vhd")
        );
        // Sectors 0 and 3 present, 1, 2 and 4 absent: LSB first and MSB first.
        assert_eq!(
            sector_runs(&[0b1001], 512, 100, 2000, false),
            vec![
                (100, 412, true),
                (512, 1024, false),
                (1536, 512, true),
                (2048, 52, false)
            ]
        );
        assert_eq!(
            sector_runs(&[0b1001_0000], 512, 0, 2048, true),
            vec![(0, 512, true), (512, 1024, false), (1536, 512, true)]
        );
        let c = candidates(
            Path::new("/s/vm/child.avhdx"),
            Some(r"..\disks\base.vhdx"),
            &[None, Some(r"\\?\D:\VMs\base.vhdx")],
        );
        assert_eq!(
            c,
            vec![
                PathBuf::from("/s/vm/../disks/base.vhdx"),
                PathBuf::from("/s/vm/base.vhdx")
            ]
        );
    }
}
