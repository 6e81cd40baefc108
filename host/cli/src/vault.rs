//! `lifeboat vault …`: the native data path from the command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::anyhow;
use clap::{Subcommand, ValueEnum};
use lifeboat_vault::{ChangedSource, Consistency, Extent, Key, ShipRequest, Vault, WriteFormat};
use serde::Serialize;
use serde_json::Value;

use crate::load::Failure;

#[derive(Subcommand, Debug)]
pub enum VaultCommand {
    /// Print a new random vault key (hex) for LIFEBOAT_VAULT_KEY or a key file.
    Keygen,
    /// Create a vault: a folder path or file:// URL, s3://BUCKET/PREFIX?endpoint=…, azblob://CONTAINER/PREFIX?endpoint=…
    Init {
        url: String,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Ship a disk into the vault and seal a recovery point; prints the point id.
    Ship {
        url: String,
        /// The protected VM.
        #[arg(long)]
        vm: String,
        /// The disk image (raw, VMDK, VHD, VHDX or qcow2; detected by content).
        #[arg(long)]
        disk: PathBuf,
        /// Name of the disk within the VM (default: the file name).
        #[arg(long)]
        disk_name: Option<String>,
        /// Changed extents since the last point: a text list (`OFFSET LENGTH [data|cleared]`
        /// per line) or JSON (VMware changedArea, Hyper-V RCT, Azure page ranges, or
        /// [{offset, length, kind}]).
        #[arg(long, conflicts_with_all = ["since_point", "bitmap"])]
        changed: Option<PathBuf>,
        /// No change list: compare chunk hashes with this point (or `latest`).
        #[arg(long, conflicts_with = "bitmap")]
        since_point: Option<String>,
        /// Read the dirty extents of this qcow2 persistent bitmap (through qemu-nbd).
        #[arg(long)]
        bitmap: Option<String>,
        #[arg(long, value_enum, default_value_t = ConsistencyArg::Crash)]
        consistency: ConsistencyArg,
        #[command(flatten)]
        key: KeyArgs,
        #[arg(long)]
        json: bool,
    },
    /// List recovery points.
    Points {
        url: String,
        #[arg(long)]
        vm: Option<String>,
        #[command(flatten)]
        key: KeyArgs,
        #[arg(long)]
        json: bool,
    },
    /// Restore a point's disk into a new image.
    Restore {
        url: String,
        #[arg(long)]
        vm: String,
        /// A point id (or unique prefix), or `latest`.
        #[arg(long, default_value = "latest")]
        point: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum)]
        format: FormatArg,
        /// Which disk of the point (default: its only disk).
        #[arg(long)]
        disk_name: Option<String>,
        #[command(flatten)]
        key: KeyArgs,
        #[arg(long)]
        json: bool,
    },
    /// Verify the vault's structure; with --read-data decrypt and hash every chunk.
    Check {
        url: String,
        #[arg(long)]
        read_data: bool,
        #[command(flatten)]
        key: KeyArgs,
        #[arg(long)]
        json: bool,
    },
    /// Keep the newest N points of each VM; delete the rest and unneeded data.
    Prune {
        url: String,
        #[arg(long)]
        keep_last: usize,
        #[command(flatten)]
        key: KeyArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct KeyArgs {
    /// A file holding the vault key (else LIFEBOAT_VAULT_KEY).
    #[arg(long, env = "LIFEBOAT_VAULT_KEY_FILE")]
    key_file: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ConsistencyArg {
    Crash,
    App,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FormatArg {
    Raw,
    Vhd,
    Vhdx,
    Vmdk,
    VmdkSparse,
    Qcow2,
}

impl FormatArg {
    fn write_format(self) -> WriteFormat {
        match self {
            FormatArg::Raw => WriteFormat::Raw,
            FormatArg::Vhd => WriteFormat::VhdFixed,
            FormatArg::Vhdx => WriteFormat::VhdxDynamic,
            FormatArg::Vmdk => WriteFormat::VmdkStreamOptimized,
            FormatArg::VmdkSparse => WriteFormat::VmdkMonolithicSparse,
            FormatArg::Qcow2 => WriteFormat::Qcow2,
        }
    }
}

fn key(k: &KeyArgs) -> Result<Key, Failure> {
    Key::from_env_or_file(k.key_file.as_deref())
        .map_err(|e| Failure::Invalid(format!("error: {e}")))
}

fn vault_err(e: lifeboat_vault::VaultError) -> Failure {
    Failure::Failed(anyhow!(e))
}

fn print<T: Serialize>(json: bool, v: &T, text: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print!("{}", text());
    }
}

/// Read a change list in any of the shapes platforms return.
pub fn read_changed(path: &Path) -> Result<Vec<Extent>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Invalid(format!("error: cannot read {}: {e}", path.display())))?;
    let bad = |e: String| Failure::Invalid(format!("error: {}: {e}", path.display()));
    if !text.trim_start().starts_with(['[', '{']) {
        return lifeboat_vault::extents::parse_extent_list(&text).map_err(|e| bad(e.to_string()));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let num = |v: &Value, k: &str| -> Result<u64, Failure> {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(format!("an entry has no numeric `{k}`: {v}")))
    };
    if let Some(list) = v.as_array() {
        let mut out = Vec::new();
        for e in list {
            let kind = match e.get("kind").and_then(Value::as_str) {
                None | Some("data") => lifeboat_vault::ExtentKind::Data,
                Some("cleared") => lifeboat_vault::ExtentKind::Cleared,
                Some(k) => return Err(bad(format!("kind `{k}` is not data or cleared"))),
            };
            out.push(Extent {
                offset: num(e, "offset")?,
                length: num(e, "length")?,
                kind,
            });
        }
        return Ok(out);
    }
    if let Some(areas) = v.get("changedArea").and_then(Value::as_array) {
        let pairs = areas
            .iter()
            .map(|a| Ok((num(a, "start")?, num(a, "length")?)))
            .collect::<Result<Vec<_>, Failure>>()?;
        return Ok(lifeboat_vault::extents::from_vmware_changed_areas(&pairs));
    }
    if let (Some(o), Some(l)) = (v.get("ChangedByteOffsets"), v.get("ChangedByteLengths")) {
        let nums = |x: &Value| -> Result<Vec<u64>, Failure> {
            x.as_array()
                .ok_or_else(|| bad("RCT fields must be lists".into()))?
                .iter()
                .map(|n| {
                    n.as_u64()
                        .ok_or_else(|| bad(format!("`{n}` is not a byte offset")))
                })
                .collect()
        };
        return lifeboat_vault::extents::from_hyperv_rct(&nums(o)?, &nums(l)?)
            .map_err(|e| bad(e.to_string()));
    }
    if v.get("PageRange").is_some() || v.get("ClearRange").is_some() {
        let ranges = |k: &str| -> Result<Vec<(u64, u64)>, Failure> {
            match v.get(k) {
                None => Ok(vec![]),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|r| Ok((num(r, "Start")?, num(r, "End")?)))
                    .collect(),
                Some(_) => Err(bad(format!("`{k}` must be a list"))),
            }
        };
        return lifeboat_vault::extents::from_azure_page_ranges(
            &ranges("PageRange")?,
            &ranges("ClearRange")?,
        )
        .map_err(|e| bad(e.to_string()));
    }
    Err(bad("unknown change-list shape; expected a list of {offset, length, kind}, VMware `changedArea`, Hyper-V `ChangedByteOffsets`/`ChangedByteLengths` or Azure `PageRange`/`ClearRange`".into()))
}

fn progress_bar(total_hint: u64) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total_hint);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}

pub async fn run(cmd: VaultCommand) -> Result<u8, Failure> {
    match cmd {
        VaultCommand::Keygen => {
            println!("{}", Key::generate_hex().map_err(vault_err)?);
        }
        VaultCommand::Init { url, key: k } => {
            let key = key(&k)?;
            Vault::init(&url, &key).await.map_err(vault_err)?;
            println!("initialised vault {url}");
        }
        VaultCommand::Ship {
            url,
            vm,
            disk,
            disk_name,
            changed,
            since_point,
            bitmap,
            consistency,
            key: k,
            json,
        } => {
            let key = key(&k)?;
            let changed = match (changed, since_point, bitmap) {
                (Some(f), _, _) => ChangedSource::List(read_changed(&f)?),
                (_, Some(p), _) => ChangedSource::SincePoint(p),
                (_, _, Some(b)) => ChangedSource::Bitmap { name: b },
                _ => ChangedSource::Full,
            };
            let disk_name = disk_name.unwrap_or_else(|| {
                disk.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_else(|| "disk".into())
            });
            let vault = Vault::open(&url, &key).await.map_err(vault_err)?;
            let bar = progress_bar(0);
            let progress = bar.clone().map(|b| {
                Arc::new(move |p: &lifeboat_vault::Progress| {
                    b.set_length(p.bytes_total);
                    b.set_position(p.bytes_done);
                }) as lifeboat_vault::ProgressFn
            });
            let report = vault
                .ship(ShipRequest {
                    vm,
                    disk_name,
                    source: disk,
                    changed,
                    consistency: match consistency {
                        ConsistencyArg::Crash => Consistency::Crash,
                        ConsistencyArg::App => Consistency::App,
                    },
                    progress,
                    stage: false,
                })
                .await
                .map_err(vault_err)?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            print(json, &report, || format!("{}\n", report.point));
            if !json {
                eprintln!(
                    "shipped {} ({}): read {} bytes, {} new, {} deduplicated, {} stored in {:.2}s",
                    report.disk,
                    report.changes,
                    report.bytes_read,
                    report.bytes_new,
                    report.bytes_deduped,
                    report.bytes_stored,
                    report.seconds
                );
            }
        }
        VaultCommand::Points {
            url,
            vm,
            key: k,
            json,
        } => {
            let vault = Vault::open(&url, &key(&k)?).await.map_err(vault_err)?;
            let points = vault.points(vm.as_deref()).await.map_err(vault_err)?;
            print(json, &points, || {
                let mut o = String::new();
                for p in &points {
                    let disks: Vec<String> = p
                        .disks
                        .iter()
                        .map(|d| format!("{} ({} bytes, {})", d.name, d.virtual_size, d.changes))
                        .collect();
                    o.push_str(&format!(
                        "{}  {}  {}  {:?}  {}\n",
                        p.id,
                        p.vm,
                        p.created,
                        p.consistency,
                        disks.join(", ")
                    ));
                }
                o
            });
        }
        VaultCommand::Restore {
            url,
            vm,
            point,
            out,
            format,
            disk_name,
            key: k,
            json,
        } => {
            let vault = Vault::open(&url, &key(&k)?).await.map_err(vault_err)?;
            let report = match disk_name {
                Some(d) => {
                    vault
                        .restore_disk(Some(&vm), &point, &d, &out, format.write_format())
                        .await
                }
                None => {
                    vault
                        .restore(Some(&vm), &point, &out, format.write_format())
                        .await
                }
            }
            .map_err(vault_err)?;
            print(json, &report, || format!("restored to {}\n", out.display()));
        }
        VaultCommand::Check {
            url,
            read_data,
            key: k,
            json,
        } => {
            let vault = Vault::open(&url, &key(&k)?).await.map_err(vault_err)?;
            let report = vault.check(read_data).await.map_err(vault_err)?;
            print(json, &report, || {
                let mut o = format!(
                    "{}: {} points, {} packs, {} blobs, {} chunks referenced{}\n",
                    if report.ok { "ok" } else { "DAMAGED" },
                    report.points,
                    report.packs,
                    report.blobs,
                    report.chunks_referenced,
                    if report.read_data {
                        format!(", {} bytes decrypted and verified", report.bytes_verified)
                    } else {
                        String::new()
                    }
                );
                for e in &report.errors {
                    o.push_str(&format!("  error: {e}\n"));
                }
                for w in &report.warnings {
                    o.push_str(&format!("  warning: {w}\n"));
                }
                o
            });
            if !report.ok {
                return Ok(crate::EXIT_FAILED);
            }
        }
        VaultCommand::Prune {
            url,
            keep_last,
            key: k,
            json,
        } => {
            let vault = Vault::open(&url, &key(&k)?).await.map_err(vault_err)?;
            let report = vault.prune(keep_last).await.map_err(vault_err)?;
            print(json, &report, || {
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                )
            });
        }
    }
    Ok(0)
}
