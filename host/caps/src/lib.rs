//! Host side of the plugin capabilities: the `transfer` interface over granted
//! sites (folders) and the workflow's vault.
//!
//! [`Capabilities`] holds what a workflow declares (its sites, resolved to
//! folders, and its vault, opened on first use); [`Capabilities::for_plugin`]
//! gives one plugin a [`lifeboat_contract::transfer::Transfer`] with that
//! plugin's grants applied. Paths a plugin names are confined to the site's
//! folder: absolute paths, `..` and symlinks leading out are refused.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod azblob;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use lifeboat_contract::StepError;
use lifeboat_contract::transfer::{
    BootReport, Changes, DiskInfo, Extent, ExtentKind, Fut, PointDisk, PointInfo, PruneResult,
    RestoreRequest, RestoreResult, ShipRequest, ShipResult, Transfer,
};
use lifeboat_vault::{ChangedSource, Consistency, Key, Vault, VaultError, WriteFormat};
use tokio::sync::OnceCell;

/// Largest file `read-file` returns.
pub const MAX_READ_FILE: u64 = 1 << 20;

/// What a plugin may do with a site or the vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// Where the vault key comes from.
#[derive(Clone)]
pub enum KeySource {
    /// A secret's value (the workflow's `vault.key`).
    Secret { name: String, value: String },
    /// A key file (the workflow's `vault.key_file`).
    File(PathBuf),
    /// `LIFEBOAT_VAULT_KEY`, or the file named by `LIFEBOAT_VAULT_KEY_FILE`.
    Environment,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Secret { name, .. } => write!(f, "Secret({name}, redacted)"),
            KeySource::File(p) => write!(f, "File({})", p.display()),
            KeySource::Environment => f.write_str("Environment"),
        }
    }
}

impl KeySource {
    fn key(&self) -> Result<Key, VaultError> {
        match self {
            KeySource::Secret { name, value } => Key::parse(value).map_err(|e| match e {
                VaultError::Key(m) => VaultError::Key(format!("secret `{name}`: {m}")),
                other => other,
            }),
            KeySource::File(p) => Key::from_env_or_file(Some(p)),
            KeySource::Environment => {
                if std::env::var_os(lifeboat_vault::KEY_ENV).is_none()
                    && let Some(f) = std::env::var_os("LIFEBOAT_VAULT_KEY_FILE")
                {
                    return Key::from_env_or_file(Some(Path::new(&f)));
                }
                Key::from_env_or_file(None)
            }
        }
    }
}

/// The vault a workflow declares, opened on first use.
#[derive(Debug)]
struct VaultSlot {
    url: String,
    key: KeySource,
    vault: OnceCell<Vault>,
}

/// Where a site is.
#[derive(Clone)]
pub enum SiteSpec {
    /// A folder (resolved against the workflow's folder).
    Folder(PathBuf),
    /// An Azure Blob container, with the storage account key.
    /// `ca`: PEM CA certificates trusted for the endpoint besides the system's.
    Azblob {
        url: String,
        key: String,
        ca: Option<Vec<u8>>,
    },
}

impl std::fmt::Debug for SiteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SiteSpec::Folder(p) => write!(f, "Folder({})", p.display()),
            SiteSpec::Azblob { url, .. } => write!(f, "Azblob({url}, key redacted)"),
        }
    }
}

/// A site ready to use.
#[derive(Debug)]
enum Site {
    Folder(PathBuf),
    /// The client, or why it could not be made (reported when the site is used).
    Blob(Result<azblob::AzBlob, String>),
}

/// The account of a container URL: `https://ACCOUNT.blob.…/C` or Azurite's
/// path style `http://HOST:PORT/ACCOUNT/C`.
fn account_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str()?;
    if let Some((acct, _)) = host.split_once(".blob.") {
        return Some(acct.to_string());
    }
    u.path_segments()?
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Sites and vault of one workflow run.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    sites: Arc<IndexMap<String, Site>>,
    vault: Option<Arc<VaultSlot>>,
}

impl Capabilities {
    /// `sites`: name → where. Sites are checked when used, so a plan can show
    /// a site still to be made.
    pub fn new(sites: IndexMap<String, SiteSpec>, vault: Option<(String, KeySource)>) -> Self {
        let sites = sites
            .into_iter()
            .map(|(name, spec)| {
                let site = match spec {
                    SiteSpec::Folder(p) => Site::Folder(p),
                    SiteSpec::Azblob { url, key, ca } => Site::Blob(match account_of(&url) {
                        Some(acct) => azblob::AzBlob::with_ca(&url, &acct, &key, ca.as_deref())
                            .map_err(|e| e.to_string()),
                        None => Err(format!(
                            "{url} is not an Azure Blob container URL (https://ACCOUNT.blob.core.windows.net/CONTAINER)"
                        )),
                    }),
                };
                (name, site)
            })
            .collect();
        Capabilities {
            sites: Arc::new(sites),
            vault: vault.map(|(url, key)| {
                Arc::new(VaultSlot {
                    url,
                    key,
                    vault: OnceCell::new(),
                })
            }),
        }
    }

    /// The transfer interface for one plugin with its grants, or `None` when it
    /// was granted no site and no vault.
    pub fn for_plugin(
        &self,
        plugin: &str,
        sites: &IndexMap<String, Access>,
        vault: Option<Access>,
    ) -> Option<Arc<dyn Transfer>> {
        if sites.is_empty() && vault.is_none() {
            return None;
        }
        Some(Arc::new(PluginCaps {
            plugin: plugin.to_string(),
            caps: self.clone(),
            sites: sites.clone(),
            vault,
        }))
    }
}

/// One plugin's view.
struct PluginCaps {
    plugin: String,
    caps: Capabilities,
    sites: IndexMap<String, Access>,
    vault: Option<Access>,
}

fn step_err(code: &str, message: impl Into<String>) -> StepError {
    StepError::new(code, message)
}

fn vault_err(e: VaultError) -> StepError {
    let (code, retryable) = match &e {
        VaultError::NotFound(_) => ("not-found", false),
        VaultError::InvalidRequest(_) => ("invalid-input", false),
        VaultError::Locked(_) | VaultError::Backend { .. } => ("unavailable", true),
        VaultError::WrongKey | VaultError::Key(_) => ("vault-key", false),
        VaultError::Corrupt { .. } => ("corrupt", false),
        _ => ("vault-error", false),
    };
    StepError {
        code: code.into(),
        message: e.to_string(),
        retryable,
    }
}

fn disk_err(path: &str, e: lifeboat_disk::DiskError) -> StepError {
    let code = match &e {
        lifeboat_disk::DiskError::OutsideRoot { .. } => "denied",
        _ => "bad-disk",
    };
    step_err(code, format!("{path}: {e}"))
}

/// `p` with symlinks resolved; `code` names the error when it cannot be.
fn canonical(p: &Path, site: &str, code: &str) -> Result<PathBuf, StepError> {
    p.canonicalize()
        .map_err(|e| step_err(code, format!("site `{site}`: {e}")))
}

/// `real` (canonical) when it lies inside the site's canonical root, else `denied`.
fn inside(real_root: &Path, real: PathBuf, site: &str, path: &str) -> Result<PathBuf, StepError> {
    if real.starts_with(real_root) {
        Ok(real)
    } else {
        Err(step_err(
            "denied",
            format!("{path:?} in site `{site}` leads outside the site"),
        ))
    }
}

/// A relative path with only normal components.
fn clean_rel(path: &str) -> Result<PathBuf, StepError> {
    let p = Path::new(path);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(step_err(
                    "invalid-input",
                    format!(
                        "path {path:?} must be relative to the site and stay inside it (no `/` at the start, no `..`)"
                    ),
                ));
            }
        }
    }
    Ok(out)
}

impl PluginCaps {
    fn site_kind(&self, site: &str) -> Result<&Site, StepError> {
        self.caps.sites.get(site).ok_or_else(|| {
            step_err(
                "not-found",
                format!("the workflow declares no site `{site}`"),
            )
        })
    }

    /// The granted site, folder or blob.
    fn granted(&self, site: &str, need: Access) -> Result<&Site, StepError> {
        match self.sites.get(site) {
            None => Err(step_err(
                "not-granted",
                format!(
                    "plugin `{}` is not granted site `{site}`; add it to the plugin's `grants.sites` ({site}: {})",
                    self.plugin,
                    need.as_str()
                ),
            )),
            Some(g) if *g < need => Err(step_err(
                "not-granted",
                format!(
                    "plugin `{}` may only read site `{site}`; grant `{site}: write` to let it write there",
                    self.plugin
                ),
            )),
            Some(_) => self.site_kind(site),
        }
    }

    /// A blob site's client and the blob name for `path`; `None` for a folder
    /// site. `PATH?snapshot=ID` names a snapshot of a blob (read-only): the
    /// client returned reads that snapshot.
    fn blob(
        &self,
        site: &str,
        path: &str,
        need: Access,
    ) -> Result<Option<(azblob::AzBlob, String)>, StepError> {
        let (path, snapshot) = split_snapshot(path)?;
        match self.granted(site, need)? {
            Site::Folder(_) if snapshot.is_some() => Err(step_err(
                "unsupported",
                format!(
                    "site `{site}` is a folder: it has no snapshots, so {path:?} has no `?snapshot=`; name the file itself"
                ),
            )),
            Site::Folder(_) => Ok(None),
            Site::Blob(Err(e)) => Err(step_err("invalid-input", format!("site `{site}`: {e}"))),
            Site::Blob(Ok(c)) => {
                let rel = clean_rel(path)?;
                let name = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().to_string())
                    .collect::<Vec<_>>()
                    .join("/");
                if name.is_empty() {
                    return Err(step_err("invalid-input", "an empty path names no blob"));
                }
                match snapshot {
                    None => Ok(Some((c.clone(), name))),
                    Some(_) if need == Access::Write => Err(step_err(
                        "denied",
                        format!(
                            "site `{site}`: {path:?} at a snapshot is read-only; write the blob itself"
                        ),
                    )),
                    Some(snap) => Ok(Some((c.at_snapshot(snap), name))),
                }
            }
        }
    }

    fn site_root(&self, site: &str, need: Access) -> Result<PathBuf, StepError> {
        let root = match self.granted(site, need)? {
            Site::Folder(p) => p,
            Site::Blob(_) => {
                return Err(step_err(
                    "unsupported",
                    format!(
                        "site `{site}` is an Azure Blob container; this call works on folder sites only"
                    ),
                ));
            }
        };
        if !root.is_dir() {
            return Err(step_err(
                "not-found",
                format!(
                    "site `{site}`: folder {} does not exist; create it or fix `sites.{site}.path`",
                    root.display()
                ),
            ));
        }
        Ok(root.clone())
    }

    /// An existing path inside a site (symlinks resolved and checked).
    fn existing(&self, site: &str, path: &str, need: Access) -> Result<PathBuf, StepError> {
        let root = self.site_root(site, need)?;
        let real_root = canonical(&root, site, "not-found")?;
        let full = root.join(clean_rel(path)?);
        let real = full
            .canonicalize()
            .map_err(|e| step_err("not-found", format!("site `{site}` has no {path:?}: {e}")))?;
        inside(&real_root, real, site, path)
    }

    /// A path to create inside a site granted write (parents created).
    fn writable(&self, site: &str, path: &str) -> Result<PathBuf, StepError> {
        let root = self.site_root(site, Access::Write)?;
        let rel = clean_rel(path)?;
        if rel.as_os_str().is_empty() {
            return Err(step_err("invalid-input", "an empty path names no file"));
        }
        let full = root.join(&rel);
        let parent = full.parent().unwrap_or(&root).to_path_buf();
        let real_root = canonical(&root, site, "io")?;
        // before creating folders: the deepest existing ancestor must be inside
        // the site (a symlink in the path could lead out of it)
        let mut existing = parent.as_path();
        while !existing.exists() {
            existing = existing.parent().unwrap_or(&root);
        }
        inside(&real_root, canonical(existing, site, "io")?, site, path)?;
        std::fs::create_dir_all(&parent).map_err(|e| {
            step_err(
                "io",
                format!("site `{site}`: creating {}: {e}", parent.display()),
            )
        })?;
        let real_parent = inside(&real_root, canonical(&parent, site, "io")?, site, path)?;
        match full.file_name() {
            Some(n) => Ok(real_parent.join(n)),
            None => Err(step_err("invalid-input", format!("{path:?} names no file"))),
        }
    }

    async fn vault(&self, need: Access, what: &str) -> Result<&Vault, StepError> {
        match self.vault {
            Some(a) if a >= need => {}
            Some(_) => {
                return Err(step_err(
                    "not-granted",
                    format!(
                        "plugin `{}` may only read the vault; {what} needs `grants.vault: write`",
                        self.plugin
                    ),
                ));
            }
            None => {
                return Err(step_err(
                    "not-granted",
                    format!(
                        "plugin `{}` is not granted the vault; {what} needs `grants.vault: {}`",
                        self.plugin,
                        need.as_str()
                    ),
                ));
            }
        }
        let slot = self.caps.vault.as_ref().ok_or_else(|| {
            step_err(
                "not-found",
                "the workflow declares no `vault:`; add `vault: { url: ./vault }`",
            )
        })?;
        slot.vault
            .get_or_try_init(|| async {
                let key = slot.key.key().map_err(vault_err)?;
                Vault::open(&slot.url, &key).await.map_err(vault_err)
            })
            .await
    }
}

fn blob_err(site: &str, path: &str, e: azblob::BlobError) -> StepError {
    let code = match e.status() {
        Some(404) => "not-found",
        Some(401 | 403) => "denied",
        Some(s) if s >= 500 => "unavailable",
        None => "unavailable",
        _ => "io",
    };
    StepError {
        code: code.into(),
        message: format!("{site}:{path}: {e}"),
        retryable: code == "unavailable",
    }
}

/// A file of a site on the local disk: the file itself for a folder site, a
/// downloaded copy (removed when dropped) for a blob site.
struct Local {
    path: PathBuf,
    /// What a disk's parent chain must stay inside: the site's folder (or the
    /// temporary folder of a downloaded blob).
    root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl PluginCaps {
    /// A disk that is a fixed-VHD page blob (as Azure keeps VM disks),
    /// described from the service without downloading it: its footer (the
    /// last 512 bytes) and Get Page Ranges. Returns the virtual size and the
    /// written ranges inside it as `(offset, length)`; `None` for a folder
    /// site or any other blob (those are downloaded and read as files).
    async fn fixed_vhd_blob(
        &self,
        site: &str,
        path: &str,
    ) -> Result<Option<(u64, Vec<(u64, u64)>)>, StepError> {
        let Some((c, name)) = self.blob(site, path, Access::Read)? else {
            return Ok(None);
        };
        let err = |e| blob_err(site, path, e);
        let Some(props) = c.properties(&name).await.map_err(err)? else {
            return Ok(None);
        };
        if props.blob_type != azblob::BlobType::Page || props.size < 1024 || props.size % 512 != 0 {
            return Ok(None);
        }
        let virtual_size = props.size - 512;
        let footer = c
            .read_range(&name, virtual_size, props.size - 1)
            .await
            .map_err(err)?;
        if !is_fixed_vhd_footer(&footer, virtual_size) {
            return Ok(None);
        }
        let ranges = c.page_ranges(&name, None).await.map_err(err)?;
        let data = ranges
            .pages
            .iter()
            .filter(|(s, _)| *s < virtual_size)
            .map(|&(s, e)| (s, e.min(virtual_size - 1) - s + 1))
            .collect();
        Ok(Some((virtual_size, data)))
    }

    async fn local(&self, site: &str, path: &str, need: Access) -> Result<Local, StepError> {
        match self.blob(site, path, need)? {
            None => Ok(Local {
                path: self.existing(site, path, need)?,
                root: canonical(&self.site_root(site, need)?, site, "not-found")?,
                _tmp: None,
            }),
            Some((c, name)) => {
                let tmp = tempfile::Builder::new()
                    .prefix("lifeboat-blob-")
                    .tempdir()
                    .map_err(|e| step_err("io", format!("temporary folder: {e}")))?;
                let file = tmp.path().join("blob");
                c.download_to_file(&name, &file)
                    .await
                    .map_err(|e| blob_err(site, path, e))?;
                Ok(Local {
                    path: file,
                    root: tmp.path().to_path_buf(),
                    _tmp: Some(tmp),
                })
            }
        }
    }
}

/// A fixed VHD's footer for a disk of `virtual_size` bytes: the cookie, disk
/// type 2 (fixed), the current size and the checksum (the ones' complement of
/// the sum of every byte but the checksum's own four).
fn is_fixed_vhd_footer(f: &[u8], virtual_size: u64) -> bool {
    let be32 = |o: usize| {
        f.get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    let be64 = |o: usize| {
        f.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    let sum: u32 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .map(|(_, b)| u32::from(*b))
        .sum();
    f.len() == 512
        && f.starts_with(b"conectix")
        && be32(60) == Some(2)
        && be64(48) == Some(virtual_size)
        && be32(64) == Some(!sum)
}

/// `PATH?snapshot=ID` → (`PATH`, `Some(ID)`); a snapshot id is an Azure
/// snapshot timestamp (digits, letters, `-`, `:`, `.`).
fn split_snapshot(path: &str) -> Result<(&str, Option<&str>), StepError> {
    match path.split_once("?snapshot=") {
        None => Ok((path, None)),
        Some((p, id))
            if !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.')) =>
        {
            Ok((p, Some(id)))
        }
        Some((p, id)) => Err(step_err(
            "invalid-input",
            format!(
                "{p:?}: snapshot id {id:?} is not a snapshot timestamp such as 2026-11-26T04:20:57.1234567Z"
            ),
        )),
    }
}

fn point_info(m: &lifeboat_vault::Manifest) -> PointInfo {
    PointInfo {
        id: m.id.clone(),
        vm: m.vm.clone(),
        created: m.created.clone(),
        consistency: match m.consistency {
            Consistency::Crash => "crash".into(),
            Consistency::App => "app".into(),
        },
        parent: m.parent.clone(),
        meta: m
            .meta
            .clone()
            .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
        disks: m
            .disks
            .iter()
            .map(|d| PointDisk {
                name: d.name.clone(),
                virtual_size: d.virtual_size,
                data_bytes: d.data_bytes,
                changes: d.changes.source.clone(),
            })
            .collect(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StepError> + Send + 'static,
) -> Result<T, StepError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| step_err("host-error", format!("worker failed: {e}")))?
}

fn write_format(s: &str) -> Result<WriteFormat, StepError> {
    Ok(match s {
        "raw" => WriteFormat::Raw,
        "vhd" => WriteFormat::VhdFixed,
        "vhdx" => WriteFormat::VhdxDynamic,
        "vmdk" => WriteFormat::VmdkStreamOptimized,
        "qcow2" => WriteFormat::Qcow2,
        other => {
            return Err(step_err(
                "invalid-input",
                format!("unknown image format {other:?}; use raw, vhd, vhdx, vmdk or qcow2"),
            ));
        }
    })
}

/// `raw`, `vhd`, `vhdx`, `vmdk` or `qcow2` → the lab's format.
fn lab_format(s: &str) -> Result<lifeboat_lab::DiskFormat, StepError> {
    Ok(match s {
        "raw" => lifeboat_lab::DiskFormat::Raw,
        "vhd" => lifeboat_lab::DiskFormat::Vpc,
        "vhdx" => lifeboat_lab::DiskFormat::Vhdx,
        "vmdk" => lifeboat_lab::DiskFormat::Vmdk,
        "qcow2" => lifeboat_lab::DiskFormat::Qcow2,
        other => {
            return Err(step_err(
                "invalid-input",
                format!("unknown image format {other:?}; use raw, vhd, vhdx, vmdk or qcow2"),
            ));
        }
    })
}

impl Transfer for PluginCaps {
    fn snapshot_disk<'a>(&'a self, site: &'a str, path: &'a str) -> Fut<'a, String> {
        Box::pin(async move {
            let Some((c, name)) = self.blob(site, path, Access::Read)? else {
                return Err(step_err(
                    "unsupported",
                    format!(
                        "site `{site}` is a folder: it has no snapshots; {path} is read as it is"
                    ),
                ));
            };
            if path.contains("?snapshot=") {
                return Err(step_err(
                    "invalid-input",
                    format!("{site}:{path} is a snapshot already; snapshot the blob itself"),
                ));
            }
            let id = c
                .snapshot(&name)
                .await
                .map_err(|e| blob_err(site, path, e))?;
            tracing::info!(plugin = %self.plugin, site = %site, path = %path, snapshot = %id, "snapshot taken");
            Ok(id)
        })
    }

    fn changed_extents<'a>(
        &'a self,
        site: &'a str,
        path: &'a str,
        since: &'a str,
    ) -> Fut<'a, Vec<Extent>> {
        Box::pin(async move {
            let Some((c, name)) = self.blob(site, path, Access::Read)? else {
                return Err(step_err(
                    "unsupported",
                    format!(
                        "site `{site}` is a folder: it has no snapshots to compare; compare hashes instead"
                    ),
                ));
            };
            split_snapshot(&format!("x?snapshot={since}"))?;
            let r = c.changed_pages(&name, since).await.map_err(|e| match e {
                azblob::BlobError::Untrusted { .. } => step_err(
                    "unsupported",
                    format!("{site}:{path}: {e}; compare hashes instead"),
                ),
                e if e.error_code() == Some("PreviousSnapshotNotFound")
                    || e.status() == Some(404) =>
                {
                    step_err(
                        "not-found",
                        format!(
                            "{site}:{path}: the snapshot {since} to compare with is gone ({e})"
                        ),
                    )
                }
                e => blob_err(site, path, e),
            })?;
            let mut out: Vec<Extent> = Vec::with_capacity(r.pages.len() + r.clears.len());
            for (list, kind) in [
                (&r.pages, ExtentKind::Data),
                (&r.clears, ExtentKind::Cleared),
            ] {
                for &(start, end) in list {
                    if end < start {
                        return Err(step_err(
                            "io",
                            format!(
                                "{site}:{path}: Get Page Ranges answered the range {start}-{end}, which ends before it starts"
                            ),
                        ));
                    }
                    // Azure's ends are inclusive
                    out.push(Extent {
                        offset: start,
                        length: end - start + 1,
                        kind,
                    });
                }
            }
            out.sort_by_key(|e| e.offset);
            Ok(out)
        })
    }

    fn delete_snapshot<'a>(
        &'a self,
        site: &'a str,
        path: &'a str,
        snapshot: &'a str,
    ) -> Fut<'a, ()> {
        Box::pin(async move {
            let Some((c, name)) = self.blob(site, path, Access::Read)? else {
                return Err(step_err(
                    "unsupported",
                    format!("site `{site}` is a folder: it has no snapshots"),
                ));
            };
            split_snapshot(&format!("x?snapshot={snapshot}"))?;
            let existed = c
                .delete_snapshot(&name, snapshot)
                .await
                .map_err(|e| blob_err(site, path, e))?;
            tracing::info!(plugin = %self.plugin, site = %site, path = %path, snapshot = %snapshot, existed, "snapshot deleted");
            Ok(())
        })
    }

    fn boot_check<'a>(
        &'a self,
        site: &'a str,
        path: &'a str,
        format: &'a str,
        marker: &'a str,
        timeout: std::time::Duration,
    ) -> Fut<'a, BootReport> {
        Box::pin(async move {
            let fmt = lab_format(format)?;
            let disk = self.local(site, path, Access::Read).await?;
            let mut opts =
                lifeboat_lab::BootOptions::new(disk.path.clone(), fmt).with_timeout(timeout);
            if !marker.is_empty() {
                opts.marker = marker.to_string();
            }
            let r = lifeboat_lab::boot_verify(&opts).await.map_err(|e| {
                let code = match &e {
                    lifeboat_lab::LabError::QemuMissing => "unavailable",
                    lifeboat_lab::LabError::Timeout { .. } => "boot-timeout",
                    lifeboat_lab::LabError::Exited { .. } => "boot-failed",
                    _ => "boot-failed",
                };
                step_err(code, format!("booting {site}:{path}: {e}"))
            })?;
            tracing::info!(plugin = %self.plugin, site, path, seconds = r.elapsed.as_secs_f64(), line = %r.line, "boot check");
            Ok(BootReport {
                line: r.line,
                seconds: r.elapsed.as_secs_f64(),
            })
        })
    }

    fn read_file<'a>(&'a self, site: &'a str, path: &'a str) -> Fut<'a, String> {
        Box::pin(async move {
            if let Some((c, name)) = self.blob(site, path, Access::Read)? {
                match c
                    .properties(&name)
                    .await
                    .map_err(|e| blob_err(site, path, e))?
                {
                    None => {
                        return Err(step_err(
                            "not-found",
                            format!("site `{site}` has no {path:?}"),
                        ));
                    }
                    Some(p) if p.size > MAX_READ_FILE => {
                        return Err(step_err(
                            "too-large",
                            format!(
                                "{site}:{path} is {} bytes; read-file returns at most {MAX_READ_FILE}",
                                p.size
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
            let local = self.local(site, path, Access::Read).await?;
            let p = local.path.clone();
            let label = format!("{site}:{path}");
            blocking(move || {
                let meta = std::fs::metadata(&p)
                    .map_err(|e| step_err("not-found", format!("{label}: {e}")))?;
                if !meta.is_file() {
                    return Err(step_err("invalid-input", format!("{label} is not a file")));
                }
                if meta.len() > MAX_READ_FILE {
                    return Err(step_err(
                        "too-large",
                        format!(
                            "{label} is {} bytes; read-file returns at most {MAX_READ_FILE}",
                            meta.len()
                        ),
                    ));
                }
                let bytes =
                    std::fs::read(&p).map_err(|e| step_err("io", format!("{label}: {e}")))?;
                String::from_utf8(bytes)
                    .map_err(|_| step_err("invalid-input", format!("{label} is not UTF-8 text")))
            })
            .await
        })
    }

    fn list_dir<'a>(&'a self, site: &'a str, path: &'a str) -> Fut<'a, Vec<String>> {
        Box::pin(async move {
            if let Site::Blob(_) = self.granted(site, Access::Read)? {
                let (c, prefix) = match self.blob(site, &format!("{path}/x"), Access::Read)? {
                    Some((c, n)) => (c, n.trim_end_matches('x').to_string()),
                    None => return Err(step_err("internal", "site kind changed")),
                };
                let prefix = if prefix == "/" { String::new() } else { prefix };
                let mut names: Vec<String> = c
                    .list(&prefix)
                    .await
                    .map_err(|e| blob_err(site, path, e))?
                    .iter()
                    .filter_map(|n| n.strip_prefix(&prefix))
                    .map(|rest| match rest.split_once('/') {
                        Some((dir, _)) => format!("{dir}/"),
                        None => rest.to_string(),
                    })
                    .collect();
                names.sort();
                names.dedup();
                return Ok(names);
            }
            let p = self.existing(site, path, Access::Read)?;
            let label = format!("{site}:{path}");
            blocking(move || {
                let rd = std::fs::read_dir(&p)
                    .map_err(|e| step_err("not-found", format!("{label}: {e}")))?;
                let mut names = Vec::new();
                for e in rd.flatten() {
                    let mut n = e.file_name().to_string_lossy().to_string();
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        n.push('/');
                    }
                    names.push(n);
                }
                names.sort();
                Ok(names)
            })
            .await
        })
    }

    fn write_file<'a>(&'a self, site: &'a str, path: &'a str, contents: String) -> Fut<'a, ()> {
        Box::pin(async move {
            if let Some((c, name)) = self.blob(site, path, Access::Write)? {
                c.create_container_if_missing()
                    .await
                    .map_err(|e| blob_err(site, path, e))?;
                let ty = if name.ends_with(".json") {
                    "application/json"
                } else {
                    "text/plain"
                };
                return c
                    .upload_block_blob(&name, contents.into_bytes(), ty)
                    .await
                    .map_err(|e| blob_err(site, path, e));
            }
            let p = self.writable(site, path)?;
            let label = format!("{site}:{path}");
            blocking(move || {
                let tmp = p.with_extension("lifeboat-partial");
                std::fs::write(&tmp, contents.as_bytes())
                    .and_then(|()| std::fs::rename(&tmp, &p))
                    .map_err(|e| step_err("io", format!("{label}: {e}")))
            })
            .await
        })
    }

    fn inspect_disk<'a>(&'a self, site: &'a str, path: &'a str) -> Fut<'a, DiskInfo> {
        Box::pin(async move {
            if let Some((size, data)) = self.fixed_vhd_blob(site, path).await? {
                return Ok(DiskInfo {
                    format: lifeboat_disk::Format::VhdFixed.to_string(),
                    virtual_size: size,
                    allocated: data.iter().map(|e| e.1).sum(),
                });
            }
            let local = self.local(site, path, Access::Read).await?;
            let (p, root) = (local.path.clone(), local.root.clone());
            let label = format!("{site}:{path}");
            blocking(move || {
                let mut r =
                    lifeboat_disk::open_confined(&p, &root).map_err(|e| disk_err(&label, e))?;
                let alloc = r.allocation().map_err(|e| disk_err(&label, e))?;
                Ok(DiskInfo {
                    format: r.format().to_string(),
                    virtual_size: r.virtual_size(),
                    allocated: alloc
                        .iter()
                        .filter(|e| e.kind == lifeboat_disk::ExtentKind::Data)
                        .map(|e| e.length)
                        .sum(),
                })
            })
            .await
            .inspect(|_| drop(local))
        })
    }

    fn allocated_extents<'a>(&'a self, site: &'a str, path: &'a str) -> Fut<'a, Vec<Extent>> {
        Box::pin(async move {
            if let Some((_, data)) = self.fixed_vhd_blob(site, path).await? {
                return Ok(data
                    .into_iter()
                    .map(|(offset, length)| Extent {
                        offset,
                        length,
                        kind: ExtentKind::Data,
                    })
                    .collect());
            }
            let local = self.local(site, path, Access::Read).await?;
            let (p, root) = (local.path.clone(), local.root.clone());
            let label = format!("{site}:{path}");
            blocking(move || {
                let mut r =
                    lifeboat_disk::open_confined(&p, &root).map_err(|e| disk_err(&label, e))?;
                Ok(r.allocation()
                    .map_err(|e| disk_err(&label, e))?
                    .into_iter()
                    .filter(|e| e.kind == lifeboat_disk::ExtentKind::Data)
                    .map(|e| Extent {
                        offset: e.offset,
                        length: e.length,
                        kind: ExtentKind::Data,
                    })
                    .collect())
            })
            .await
            .inspect(|_| drop(local))
        })
    }

    fn points<'a>(&'a self, vm: &'a str) -> Fut<'a, Vec<PointInfo>> {
        Box::pin(async move {
            let v = self.vault(Access::Read, "listing points").await?;
            let mut out = Vec::new();
            for p in v.points(Some(vm)).await.map_err(vault_err)? {
                let m = v.point(Some(vm), &p.id).await.map_err(vault_err)?;
                out.push(point_info(&m));
            }
            Ok(out)
        })
    }

    fn ship(&self, req: ShipRequest) -> Fut<'_, ShipResult> {
        Box::pin(async move {
            let v = self.vault(Access::Write, "ship").await?;
            let source = self.local(&req.site, &req.path, Access::Read).await?;
            // every file of a differencing chain must lie inside the site
            let (p, root, label) = (
                source.path.clone(),
                source.root.clone(),
                format!("{}:{}", req.site, req.path),
            );
            blocking(move || {
                lifeboat_disk::open_confined(&p, &root)
                    .map(drop)
                    .map_err(|e| disk_err(&label, e))
            })
            .await?;
            let changed = match req.changes {
                Changes::Full => ChangedSource::Full,
                Changes::Extents(l) => ChangedSource::List(
                    l.into_iter()
                        .map(|e| lifeboat_vault::Extent {
                            offset: e.offset,
                            length: e.length,
                            kind: match e.kind {
                                ExtentKind::Data => lifeboat_vault::ExtentKind::Data,
                                ExtentKind::Cleared => lifeboat_vault::ExtentKind::Cleared,
                            },
                        })
                        .collect(),
                ),
                Changes::HashCompare => {
                    let pts = v.points(Some(&req.vm)).await.map_err(vault_err)?;
                    match pts
                        .iter()
                        .rev()
                        .find(|p| p.disks.iter().any(|d| d.name == req.disk))
                    {
                        Some(p) => ChangedSource::SincePoint(p.id.clone()),
                        None => ChangedSource::Full,
                    }
                }
                Changes::Bitmap(name) => ChangedSource::Bitmap { name },
            };
            let mut sr =
                lifeboat_vault::ShipRequest::new(&req.vm, &req.disk, source.path.clone(), changed);
            sr.stage = true;
            let r = v.ship(sr).await.map_err(vault_err)?;
            tracing::info!(
                plugin = %self.plugin, vm = %req.vm, disk = %req.disk, changes = %r.changes,
                bytes_read = r.bytes_read, bytes_new = r.bytes_new, bytes_stored = r.bytes_stored,
                "shipped"
            );
            Ok(ShipResult {
                staged: r.point,
                virtual_size: r.virtual_size,
                bytes_read: r.bytes_read,
                bytes_new: r.bytes_new,
                bytes_stored: r.bytes_stored,
                extents: u32::try_from(r.extents).unwrap_or(u32::MAX),
            })
        })
    }

    fn seal<'a>(
        &'a self,
        vm: &'a str,
        staged: Vec<String>,
        consistency: &'a str,
        meta: serde_json::Value,
    ) -> Fut<'a, PointInfo> {
        Box::pin(async move {
            let c = match consistency {
                "crash" | "" => Consistency::Crash,
                "app" => Consistency::App,
                other => {
                    return Err(step_err(
                        "invalid-input",
                        format!("consistency {other:?} is neither `crash` nor `app`"),
                    ));
                }
            };
            let v = self.vault(Access::Write, "seal").await?;
            let meta = match meta {
                serde_json::Value::Object(o) if o.is_empty() => None,
                other => Some(other),
            };
            let m = v.seal(vm, &staged, c, meta).await.map_err(vault_err)?;
            Ok(point_info(&m))
        })
    }

    fn prune<'a>(&'a self, vm: &'a str, keep_last: u32) -> Fut<'a, PruneResult> {
        Box::pin(async move {
            if keep_last == 0 {
                return Err(step_err(
                    "invalid-input",
                    format!(
                        "retention for `{vm}`: keep-last must be at least 1 (0 would delete every point)"
                    ),
                ));
            }
            let v = self.vault(Access::Write, "prune").await?;
            let r = v
                .prune_vm(vm, keep_last as usize)
                .await
                .map_err(vault_err)?;
            tracing::info!(
                plugin = %self.plugin, vm = %vm, keep_last, removed = r.points_removed.len(),
                kept = r.points_kept, bytes_before = r.bytes_before, bytes_after = r.bytes_after,
                "pruned"
            );
            Ok(PruneResult {
                removed: r.points_removed,
                kept: u32::try_from(r.points_kept).unwrap_or(u32::MAX),
                bytes_before: r.bytes_before,
                bytes_after: r.bytes_after,
            })
        })
    }

    fn restore(&self, req: RestoreRequest) -> Fut<'_, RestoreResult> {
        Box::pin(async move {
            let format = write_format(&req.format)?;
            let v = self.vault(Access::Read, "restore").await?;
            if let Some((c, name)) = self.blob(&req.site, &req.path, Access::Write)? {
                if format != WriteFormat::VhdFixed {
                    return Err(step_err(
                        "invalid-input",
                        format!(
                            "site `{}` is an Azure Blob container: disks go there as fixed VHD page blobs (format `vhd`), not {:?}",
                            req.site, req.format
                        ),
                    ));
                }
                let tmp = tempfile::Builder::new()
                    .prefix("lifeboat-restore-")
                    .tempdir()
                    .map_err(|e| step_err("io", format!("temporary folder: {e}")))?;
                let file = tmp.path().join("disk.vhd");
                let r = v
                    .restore_disk(Some(&req.vm), &req.point, &req.disk, &file, format)
                    .await
                    .map_err(vault_err)?;
                c.create_container_if_missing()
                    .await
                    .map_err(|e| blob_err(&req.site, &req.path, e))?;
                let up = c
                    .upload_page_blob(&name, &file)
                    .await
                    .map_err(|e| blob_err(&req.site, &req.path, e))?;
                tracing::info!(plugin = %self.plugin, site = %req.site, blob = %name, size = up.size, bytes_sent = up.bytes_sent, "page blob uploaded");
                return Ok(RestoreResult {
                    point: r.point,
                    virtual_size: r.virtual_size,
                    file_size: up.size,
                    bytes_written: up.bytes_sent,
                });
            }
            let out = self.writable(&req.site, &req.path)?;
            // written beside the target, then renamed: a re-run never sees half an image
            let mut tmp = out.clone().into_os_string();
            tmp.push(".lifeboat-partial");
            let tmp = PathBuf::from(tmp);
            let r = v
                .restore_disk(Some(&req.vm), &req.point, &req.disk, &tmp, format)
                .await
                .map_err(vault_err)?;
            std::fs::rename(&tmp, &out)
                .map_err(|e| step_err("io", format!("{}:{}: {e}", req.site, req.path)))?;
            let file_size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            Ok(RestoreResult {
                point: r.point,
                virtual_size: r.virtual_size,
                file_size,
                bytes_written: r.bytes_written,
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{is_fixed_vhd_footer, split_snapshot};

    #[test]
    fn fixed_vhd_footers() {
        let mut f = [0u8; 512];
        f[..8].copy_from_slice(b"conectix");
        f[48..56].copy_from_slice(&(1u64 << 20).to_be_bytes());
        f[60..64].copy_from_slice(&2u32.to_be_bytes());
        let sum: u32 = f.iter().map(|b| u32::from(*b)).sum();
        f[64..68].copy_from_slice(&(!sum).to_be_bytes());
        assert!(is_fixed_vhd_footer(&f, 1 << 20));
        assert!(!is_fixed_vhd_footer(&f, 2 << 20));
        let mut flipped = f;
        flipped[100] ^= 1;
        assert!(!is_fixed_vhd_footer(&flipped, 1 << 20));
        let mut dynamic = f;
        dynamic[63] = 3;
        assert!(!is_fixed_vhd_footer(&dynamic, 1 << 20));
        // a fixed VHD made by qemu-img (the Azure plugin's test fixture)
        let made = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../plugins/azure/tests/fixtures/region-a/vhds/web04-os.vhd"),
        )
        .unwrap();
        assert!(is_fixed_vhd_footer(&made[made.len() - 512..], 1 << 20));
    }

    #[test]
    fn snapshot_paths() {
        assert_eq!(split_snapshot("vhds/a.vhd").unwrap(), ("vhds/a.vhd", None));
        assert_eq!(
            split_snapshot("vhds/a.vhd?snapshot=2026-11-26T04:20:57.1234567Z").unwrap(),
            ("vhds/a.vhd", Some("2026-11-26T04:20:57.1234567Z"))
        );
        for bad in [
            "a.vhd?snapshot=",
            "a.vhd?snapshot=x&comp=list",
            "a.vhd?snapshot=a b",
        ] {
            let e = split_snapshot(bad).unwrap_err();
            assert_eq!(e.code, "invalid-input", "{bad}");
            assert!(e.message.contains("not a snapshot timestamp"), "{e:?}");
        }
    }
}
