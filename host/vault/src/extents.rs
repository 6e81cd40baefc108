//! Changed extents: the one [`Extent`] type (`{offset, length, kind: Data | Cleared}`,
//! from lifeboat-disk) and its sources — caller lists in the shapes platform CBT APIs
//! return, and qcow2 persistent dirty bitmaps read through `qemu-nbd` block status.
//! The other two sources (allocation map, hash comparison) live in the ship pipeline.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use lifeboat_disk::{Extent, ExtentKind};

use crate::error::{Result, VaultError};

/// Parses a text list of extents: one `OFFSET LENGTH [data|cleared]` per line (bytes,
/// decimal or 0x-hex), `#` comments and blank lines ignored. This is the format of the
/// benchmark workload's `changed-extents.txt`.
pub fn parse_extent_list(text: &str) -> Result<Vec<Extent>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut f = line.split_whitespace();
        let bad = |what: &str| {
            VaultError::InvalidRequest(format!("extent list line {}: {what}: {line:?}", i + 1))
        };
        let num = |s: Option<&str>| -> Option<u64> {
            let s = s?;
            match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => s.parse().ok(),
            }
        };
        let offset = num(f.next()).ok_or_else(|| bad("bad offset"))?;
        let length = num(f.next()).ok_or_else(|| bad("bad length"))?;
        let kind = match f.next() {
            None | Some("data") => ExtentKind::Data,
            Some("cleared") | Some("zero") => ExtentKind::Cleared,
            Some(_) => return Err(bad("kind must be data or cleared")),
        };
        if f.next().is_some() {
            return Err(bad("too many fields"));
        }
        out.push(Extent {
            offset,
            length,
            kind,
        });
    }
    Ok(out)
}

/// VMware `QueryChangedDiskAreas` → `changedArea[{start, length}]` (all pages appended).
pub fn from_vmware_changed_areas(areas: &[(u64, u64)]) -> Vec<Extent> {
    areas
        .iter()
        .map(|&(offset, length)| Extent {
            offset,
            length,
            kind: ExtentKind::Data,
        })
        .collect()
}

/// Hyper-V RCT (`GetVirtualDiskChanges`) → parallel `ChangedByteOffsets[]` and
/// `ChangedByteLengths[]`.
pub fn from_hyperv_rct(offsets: &[u64], lengths: &[u64]) -> Result<Vec<Extent>> {
    if offsets.len() != lengths.len() {
        return Err(VaultError::InvalidRequest(format!(
            "RCT answer has {} offsets but {} lengths",
            offsets.len(),
            lengths.len()
        )));
    }
    Ok(offsets
        .iter()
        .zip(lengths)
        .map(|(&offset, &length)| Extent {
            offset,
            length,
            kind: ExtentKind::Data,
        })
        .collect())
}

/// Azure Get Page Ranges with `prevsnapshot` → `PageRange{Start, End}` (changed) and
/// `ClearRange{Start, End}` (to be zeroed), **End inclusive**.
pub fn from_azure_page_ranges(pages: &[(u64, u64)], clears: &[(u64, u64)]) -> Result<Vec<Extent>> {
    let conv = |&(s, e): &(u64, u64), kind| {
        if e < s {
            return Err(VaultError::InvalidRequest(format!(
                "Azure range {s}-{e}: End before Start"
            )));
        }
        Ok(Extent {
            offset: s,
            length: e - s + 1,
            kind,
        })
    };
    let mut out = Vec::with_capacity(pages.len() + clears.len());
    for p in pages {
        out.push(conv(p, ExtentKind::Data)?);
    }
    for c in clears {
        out.push(conv(c, ExtentKind::Cleared)?);
    }
    out.sort_by_key(|e| e.offset);
    Ok(out)
}

/// What to do with a run of chunk slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Read,
    Zero,
}

fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        if s >= e {
            continue;
        }
        match out.last_mut() {
            Some(l) if s <= l.1 => l.1 = l.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Turns byte extents into sorted, disjoint runs of chunk slots `[start, end)` to read or
/// to zero. Data extents and partly cleared chunks are read (the source reads as zeros
/// in a cleared range); chunks wholly inside cleared extents are zeroed without reading.
pub(crate) fn plan_chunks(
    extents: &[Extent],
    virtual_size: u64,
    chunk: u64,
) -> Result<Vec<(u64, u64, Action)>> {
    let mut reads = Vec::new();
    let mut zeros = Vec::new();
    for e in extents {
        let end = e
            .offset
            .checked_add(e.length)
            .filter(|&end| end <= virtual_size)
            .ok_or_else(|| {
                VaultError::InvalidRequest(format!(
                    "extent {}+{} lies beyond the disk's {} bytes",
                    e.offset, e.length, virtual_size
                ))
            })?;
        if e.length == 0 {
            continue;
        }
        let first = e.offset / chunk;
        let last = end.div_ceil(chunk);
        match e.kind {
            ExtentKind::Data => reads.push((first, last)),
            ExtentKind::Cleared => {
                let full_first = e.offset.div_ceil(chunk);
                // the disk's last chunk may be short: it is whole if the extent reaches the end
                let full_last = if end == virtual_size {
                    last
                } else {
                    end / chunk
                };
                if full_first < full_last {
                    zeros.push((full_first, full_last));
                    if first < full_first {
                        reads.push((first, full_first));
                    }
                    if full_last < last {
                        reads.push((full_last, last));
                    }
                } else {
                    reads.push((first, last));
                }
            }
        }
    }
    let reads = merge(reads);
    let zeros = merge(zeros);
    // subtract reads from zeros, then interleave
    let mut out: Vec<(u64, u64, Action)> =
        reads.iter().map(|&(s, e)| (s, e, Action::Read)).collect();
    let mut ri = 0;
    for (mut s, e) in zeros {
        while s < e {
            while ri < reads.len() && reads[ri].1 <= s {
                ri += 1;
            }
            match reads.get(ri) {
                Some(&(rs, re)) if rs < e => {
                    if s < rs {
                        out.push((s, rs, Action::Zero));
                    }
                    s = re.max(s);
                }
                _ => {
                    out.push((s, e, Action::Zero));
                    s = e;
                }
            }
        }
    }
    out.sort_unstable_by_key(|r| r.0);
    Ok(out)
}

/// Reads the dirty extents of the persistent bitmap `bitmap` of the qcow2 image `image`:
/// exports the image read-only with `qemu-nbd -B`, asks `qemu-img map` for the block
/// status of the `qemu:dirty-bitmap:NAME` meta-context (where dirty ranges appear as
/// `"data": false`), and stops qemu-nbd.
pub fn qcow2_dirty_extents(image: &Path, bitmap: &str) -> Result<Vec<Extent>> {
    if bitmap.is_empty() || bitmap.contains([',', ':', '/']) {
        return Err(VaultError::InvalidRequest(format!(
            "bad bitmap name {bitmap:?}"
        )));
    }
    let dir = std::env::temp_dir().join(format!("lifeboat-nbd-{}", crate::crypto::random_hex(8)?));
    std::fs::create_dir_all(&dir)
        .map_err(|e| VaultError::io(format!("creating {}", dir.display()), e))?;
    let sock = dir.join("nbd.sock");
    let result = (|| {
        let mut child = Command::new("qemu-nbd")
            .arg("--read-only")
            .arg("--persistent")
            .arg("--shared=2")
            .arg("-B")
            .arg(bitmap)
            .arg("-k")
            .arg(&sock)
            .arg("-f")
            .arg("qcow2")
            .arg(image)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| VaultError::Tool {
                tool: "qemu-nbd".into(),
                reason: format!("cannot start (is qemu-utils installed?): {e}"),
            })?;
        let r = (|| {
            let t0 = Instant::now();
            while !sock.exists() {
                if let Ok(Some(st)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    return Err(VaultError::Tool {
                        tool: "qemu-nbd".into(),
                        reason: format!("exited with {st}: {}", err.trim()),
                    });
                }
                if t0.elapsed() > Duration::from_secs(20) {
                    return Err(VaultError::Tool {
                        tool: "qemu-nbd".into(),
                        reason: "socket did not appear within 20 s".into(),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let opts = format!(
                "driver=nbd,server.type=unix,server.path={},x-dirty-bitmap=qemu:dirty-bitmap:{bitmap}",
                sock.display()
            );
            let out = Command::new("qemu-img")
                .args(["map", "--output=json", "--image-opts"])
                .arg(&opts)
                .output()
                .map_err(|e| VaultError::Tool {
                    tool: "qemu-img".into(),
                    reason: format!("cannot start: {e}"),
                })?;
            if !out.status.success() {
                // qemu-nbd refuses an unknown bitmap only when the client connects: prefer its words
                std::thread::sleep(Duration::from_millis(100));
                if let Ok(Some(_)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    if !err.trim().is_empty() {
                        return Err(VaultError::Tool {
                            tool: "qemu-nbd".into(),
                            reason: err.trim().to_string(),
                        });
                    }
                }
                return Err(VaultError::Tool {
                    tool: "qemu-img map".into(),
                    reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            parse_dirty_map(&out.stdout)
        })();
        let _ = child.kill();
        let _ = child.wait();
        r
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn parse_dirty_map(json: &[u8]) -> Result<Vec<Extent>> {
    let bad = |m: &str| VaultError::Tool {
        tool: "qemu-img map".into(),
        reason: format!("unexpected output: {m}"),
    };
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| bad(&e.to_string()))?;
    let arr = v.as_array().ok_or_else(|| bad("not a JSON array"))?;
    let mut out: Vec<Extent> = Vec::new();
    for item in arr {
        let start = item
            .get("start")
            .and_then(|x| x.as_u64())
            .ok_or_else(|| bad("no start"))?;
        let length = item
            .get("length")
            .and_then(|x| x.as_u64())
            .ok_or_else(|| bad("no length"))?;
        let data = item
            .get("data")
            .and_then(|x| x.as_bool())
            .ok_or_else(|| bad("no data flag"))?;
        if data || length == 0 {
            continue; // clean
        }
        match out.last_mut() {
            Some(l) if l.offset + l.length == start => l.length += length,
            _ => out.push(Extent {
                offset: start,
                length,
                kind: ExtentKind::Data,
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_mixes_reads_and_zeros() {
        let cs = 100;
        let ex = [
            Extent {
                offset: 50,
                length: 100,
                kind: ExtentKind::Data,
            },
            Extent {
                offset: 250,
                length: 400,
                kind: ExtentKind::Cleared,
            },
            Extent {
                offset: 420,
                length: 10,
                kind: ExtentKind::Data,
            },
        ];
        let p = plan_chunks(&ex, 1000, cs).unwrap();
        assert_eq!(
            p,
            vec![
                (0, 3, Action::Read),
                (3, 4, Action::Zero),
                (4, 5, Action::Read),
                (5, 6, Action::Zero),
                (6, 7, Action::Read)
            ]
        );
        assert!(plan_chunks(&ex, 500, cs).is_err());
    }

    #[test]
    fn parsers() {
        let l = parse_extent_list("# x\n0 4096\n0x2000 512 cleared\n").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].offset, 0x2000);
        assert_eq!(l[1].kind, ExtentKind::Cleared);
        assert!(parse_extent_list("1 2 3").is_err());
        let a = from_azure_page_ranges(&[(0, 511)], &[(1024, 2047)]).unwrap();
        assert_eq!(a[0].length, 512);
        assert_eq!(a[1].length, 1024);
        assert!(from_hyperv_rct(&[1], &[]).is_err());
        let m = parse_dirty_map(br#"[{"start":0,"length":65536,"data":false},{"start":65536,"length":10,"data":false},{"start":65546,"length":5,"data":true}]"#).unwrap();
        assert_eq!(
            m,
            vec![Extent {
                offset: 0,
                length: 65546,
                kind: ExtentKind::Data
            }]
        );
    }
}
