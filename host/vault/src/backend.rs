//! Storage backends on opendal: a local folder (default), S3 and Azure Blob.
//!
//! A local folder also has a direct path (plain `std::fs`, see [`Local`]) for reading and
//! writing objects: the data path then costs a few vectored `write`s (or one `pread`)
//! per object instead of a buffered copy and a blocking-pool round trip per part. Listing,
//! stat and delete stay on opendal. Both paths use the same layout: an object is written
//! to `.tmp/`, fsynced, then renamed into place.

use std::io::{IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use opendal::Operator;

use crate::error::{Result, VaultError};

/// How durable a written object must be when the write returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    /// No fsync: the object only matters while this process lives (locks).
    Volatile,
    /// The object's data is on stable storage before it appears under its name (packs,
    /// index files): a crash leaves the old state or the whole object, never a torn one.
    Data,
    /// As `Data`, and the directory entry is synced too, so the object is there after a
    /// crash (manifests, config). On journaling file systems this also commits every
    /// rename done before it (the packs and index files the manifest needs).
    Named,
}

/// Thin wrapper over an opendal [`Operator`] that maps errors to [`VaultError`].
#[derive(Clone, Debug)]
pub(crate) struct Backend {
    op: Operator,
    local: Option<Arc<Local>>,
}

/// The direct path to a local folder vault.
#[derive(Debug)]
pub(crate) struct Local {
    root: PathBuf,
    tmp: PathBuf,
}

fn local_err(op: &'static str, path: &str, e: std::io::Error) -> VaultError {
    VaultError::Backend {
        op,
        path: path.to_string(),
        source: Box::new(opendal::raw::new_std_io_error(e)),
    }
}

/// The file of object `path` in the folder `root`.
fn object_file(root: &Path, path: &str) -> Result<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(VaultError::Internal(format!("bad object path {path:?}")));
    }
    Ok(root.join(rel))
}

impl Local {
    fn abs(&self, path: &str) -> Result<PathBuf> {
        object_file(&self.root, path)
    }

    /// Reads a whole object.
    pub(crate) fn read(&self, path: &str) -> Result<Vec<u8>> {
        std::fs::read(self.abs(path)?).map_err(|e| local_err("read", path, e))
    }

    /// Opens an object for ranged reads ([`Local::read_at`]).
    pub(crate) fn open(&self, path: &str) -> Result<std::fs::File> {
        std::fs::File::open(self.abs(path)?).map_err(|e| local_err("read", path, e))
    }

    /// Fills `buf` from `offset` of an open object; a short object is corrupt.
    pub(crate) fn read_at(
        file: &std::fs::File,
        path: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                VaultError::corrupt(
                    path,
                    format!("short read: {} bytes at offset {offset}", buf.len()),
                )
            } else {
                local_err("read", path, e)
            }
        })
    }

    /// Writes an object from `parts` (vectored writes, no copy): to `.tmp/`, synced as
    /// `durability` asks, then renamed into place.
    pub(crate) fn write(&self, path: &str, parts: &[&[u8]], durability: Durability) -> Result<()> {
        let name = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut t = self.create_tmp(&name, path)?;
        t.append(parts)?;
        t.commit(path, durability)
    }

    /// Starts an object in `.tmp/` whose content is appended piece by piece and whose
    /// name is given only when it is committed ([`TmpObject::commit`]); `hint` names the
    /// temporary file, `what` the object in errors. Dropped uncommitted, the temporary
    /// file is removed.
    pub(crate) fn create_tmp(&self, hint: &str, what: &str) -> Result<TmpObject> {
        let tmp = self
            .tmp
            .join(format!("{hint}.{}", crate::crypto::random_hex(8)?));
        let open = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
        };
        let file = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.tmp).and_then(|()| open())
            }
            r => r,
        }
        .map_err(|e| local_err("write", what, e))?;
        Ok(TmpObject {
            file: Some(file),
            tmp,
            root: self.root.clone(),
            what: what.to_string(),
            synced: false,
        })
    }
}

/// An object being written to `.tmp/` (see [`Local::create_tmp`]).
#[derive(Debug)]
pub(crate) struct TmpObject {
    file: Option<std::fs::File>,
    tmp: PathBuf,
    root: PathBuf,
    what: String,
    /// Its data was synced ([`TmpObject::sync_data`]) and not written since.
    synced: bool,
}

impl TmpObject {
    /// Appends `parts` (vectored writes of about [`WRITE_CALL`] bytes).
    pub(crate) fn append(&mut self, parts: &[&[u8]]) -> Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Err(VaultError::Internal(format!(
                "{} already committed",
                self.what
            )));
        };
        self.synced = false;
        write_all_vectored(f, parts).map_err(|e| local_err("write", &self.what, e))
    }

    /// A second handle on the temporary file, for a thread that starts its writeback
    /// ([`std::fs::File::sync_data`]) while more is appended.
    pub(crate) fn try_clone_file(&self) -> Option<std::fs::File> {
        self.file.as_ref().and_then(|f| f.try_clone().ok())
    }

    /// Syncs the data written so far (`fdatasync`), still under the temporary name:
    /// several objects can be synced at once, then committed in order.
    pub(crate) fn sync_data(&mut self) -> Result<()> {
        let Some(f) = self.file.as_ref() else {
            return Err(VaultError::Internal(format!(
                "{} already committed",
                self.what
            )));
        };
        f.sync_data()
            .map_err(|e| local_err("write", &self.what, e))?;
        self.synced = true;
        Ok(())
    }

    /// Syncs the data as `durability` asks, then renames the object to `path` (and, for
    /// [`Durability::Named`], syncs its directory).
    pub(crate) fn commit(mut self, path: &str, durability: Durability) -> Result<()> {
        let target = object_file(&self.root, path)?;
        let Some(f) = self.file.take() else {
            return Err(VaultError::Internal(format!(
                "{} already committed",
                self.what
            )));
        };
        let tmp = &self.tmp;
        let synced = self.synced;
        let r = (|| -> std::io::Result<()> {
            if durability != Durability::Volatile && !synced {
                f.sync_data()?;
            }
            drop(f);
            match std::fs::rename(tmp, &target) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(dir) = target.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    std::fs::rename(tmp, &target)?;
                }
                r => r?,
            }
            if durability == Durability::Named
                && let Some(dir) = target.parent()
            {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        match r {
            Ok(()) => {
                self.tmp = PathBuf::new();
                Ok(())
            }
            Err(e) => Err(local_err("write", path, e)),
        }
    }
}

impl Drop for TmpObject {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Bytes per `writev` call: on ext4 one 16 MiB call costs about 60 % more kernel time
/// than the same bytes in calls of a few blobs each (measured; see the bench README).
const WRITE_CALL: usize = 128 << 10;

fn write_all_vectored(f: &mut std::fs::File, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut i = 0;
    while i < parts.len() {
        // a group of whole parts of about WRITE_CALL bytes (at least one part)
        let mut j = i + 1;
        let mut bytes = parts[i].len();
        while let Some(p) = parts.get(j) {
            if bytes + p.len() > WRITE_CALL || j - i >= 64 {
                break;
            }
            bytes += p.len();
            j += 1;
        }
        let mut slices: Vec<IoSlice<'_>> = parts[i..j].iter().map(|p| IoSlice::new(p)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match f.write_vectored(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        i = j;
    }
    Ok(())
}

fn install_tls_and_transport() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // reqwest is built without a bundled provider: use ring (no aws-lc build).
        let _ = rustls::crypto::ring::default_provider().install_default();
        opendal_http_transport_reqwest::install_default();
    });
}

fn url_err(url: &str, reason: impl Into<String>) -> VaultError {
    VaultError::Url {
        url: url.to_string(),
        reason: reason.into(),
    }
}

fn env(name: &str, url: &str) -> Result<String> {
    std::env::var(name).map_err(|_| url_err(url, format!("{name} is not set")))
}

impl Backend {
    /// Opens a backend from a vault URL:
    /// * `file:///abs/path` or a plain path — a local folder (created if missing);
    /// * `s3://bucket/prefix?endpoint=URL&region=R` — credentials from
    ///   `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`;
    /// * `azblob://container/prefix?endpoint=URL` — account from `AZURE_STORAGE_ACCOUNT` /
    ///   `AZURE_STORAGE_KEY`; the endpoint defaults to `https://ACCOUNT.blob.core.windows.net`.
    ///
    /// Object stores are reached over TLS: an `http://` endpoint needs
    /// `&insecure_http=true` and must be this machine ([`crate::endpoint`]).
    pub(crate) fn open(url: &str) -> Result<Backend> {
        install_tls_and_transport();
        let mut local = None;
        let op = if url.starts_with("s3://") || url.starts_with("azblob://") {
            let u = url::Url::parse(url).map_err(|e| url_err(url, e.to_string()))?;
            let bucket = u
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| url_err(url, "missing bucket/container name"))?
                .to_string();
            let prefix = format!("/{}", u.path().trim_matches('/'));
            let mut endpoint = None;
            let mut region = None;
            let mut insecure = false;
            for (k, v) in u.query_pairs() {
                match k.as_ref() {
                    "endpoint" => endpoint = Some(v.to_string()),
                    "region" => region = Some(v.to_string()),
                    "insecure_http" => {
                        insecure = match v.as_ref() {
                            "true" => true,
                            "false" => false,
                            other => {
                                return Err(url_err(
                                    url,
                                    format!("insecure_http={other:?}: give true or false"),
                                ));
                            }
                        }
                    }
                    other => return Err(url_err(url, format!("unknown parameter {other:?}"))),
                }
            }
            // encryption in transit: https, or plain http to an emulator on 127.0.0.1 by opt-in
            crate::endpoint::check(endpoint.as_deref(), insecure).map_err(|e| url_err(url, e))?;
            if u.scheme() == "s3" {
                let mut b = opendal::services::S3::default()
                    .bucket(&bucket)
                    .root(&prefix)
                    .region(region.as_deref().unwrap_or("us-east-1"))
                    .access_key_id(&env("AWS_ACCESS_KEY_ID", url)?)
                    .secret_access_key(&env("AWS_SECRET_ACCESS_KEY", url)?)
                    .disable_config_load()
                    .disable_ec2_metadata();
                if let Some(e) = &endpoint {
                    b = b.endpoint(e);
                }
                Operator::new(b).map_err(|e| url_err(url, e.to_string()))?
            } else {
                if region.is_some() {
                    return Err(url_err(url, "azblob URLs take no region"));
                }
                let account = env("AZURE_STORAGE_ACCOUNT", url)?;
                let endpoint =
                    endpoint.unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"));
                let b = opendal::services::Azblob::default()
                    .container(&bucket)
                    .root(&prefix)
                    .endpoint(&endpoint)
                    .account_name(&account)
                    .account_key(&env("AZURE_STORAGE_KEY", url)?);
                Operator::new(b).map_err(|e| url_err(url, e.to_string()))?
            }
        } else {
            let path = if let Some(rest) = url.strip_prefix("file://") {
                if !rest.starts_with('/') {
                    return Err(url_err(
                        url,
                        "file URLs need an absolute path (file:///path)",
                    ));
                }
                rest.to_string()
            } else if url.contains("://") {
                return Err(url_err(
                    url,
                    "unsupported scheme (use a path, file://, s3:// or azblob://)",
                ));
            } else {
                url.to_string()
            };
            if path.is_empty() {
                return Err(url_err(url, "empty path"));
            }
            let abs = std::path::absolute(&path).map_err(|e| url_err(url, e.to_string()))?;
            std::fs::create_dir_all(&abs).map_err(|e| url_err(url, e.to_string()))?;
            let root = abs.to_string_lossy().to_string();
            let tmp = abs.join(".tmp");
            let b = opendal::services::Fs::default()
                .root(&root)
                .atomic_write_dir(&tmp.to_string_lossy());
            local = Some(Arc::new(Local {
                root: abs.clone(),
                tmp: tmp.clone(),
            }));
            Operator::new(b).map_err(|e| url_err(url, e.to_string()))?
        };
        let op = op.layer(opendal::layers::RetryLayer::new().with_max_times(4));
        Ok(Backend { op, local })
    }

    /// The direct path, for a local folder vault.
    pub(crate) fn local(&self) -> Option<&Arc<Local>> {
        self.local.as_ref()
    }

    pub(crate) async fn read(&self, path: &str) -> Result<Vec<u8>> {
        if let Some(l) = &self.local {
            let l = l.clone();
            let path = path.to_string();
            return blocking(move || l.read(&path)).await;
        }
        self.op
            .read(path)
            .await
            .map(|b| b.to_vec())
            .map_err(|source| VaultError::Backend {
                op: "read",
                path: path.to_string(),
                source: Box::new(source),
            })
    }

    pub(crate) async fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if let Some(l) = &self.local {
            let l = l.clone();
            let path = path.to_string();
            return blocking(move || {
                let n = usize::try_from(len)
                    .map_err(|_| VaultError::corrupt(&path, "range too large"))?;
                let mut buf = vec![0u8; n];
                Local::read_at(&l.open(&path)?, &path, offset, &mut buf)?;
                Ok(buf)
            })
            .await;
        }
        let buf = self
            .op
            .read_with(path)
            .range(offset..offset + len)
            .await
            .map_err(|source| VaultError::Backend {
                op: "read",
                path: path.to_string(),
                source: Box::new(source),
            })?;
        if buf.len() as u64 != len {
            return Err(VaultError::corrupt(
                path,
                format!(
                    "short read: {} of {len} bytes at offset {offset}",
                    buf.len()
                ),
            ));
        }
        Ok(buf.to_vec())
    }

    /// Writes a whole object, durable (and named) when this returns.
    pub(crate) async fn write(&self, path: &str, data: Vec<u8>) -> Result<()> {
        self.write_with(path, data, Durability::Named).await
    }

    pub(crate) async fn write_with(
        &self,
        path: &str,
        data: Vec<u8>,
        durability: Durability,
    ) -> Result<()> {
        if let Some(l) = &self.local {
            let l = l.clone();
            let path = path.to_string();
            return blocking(move || l.write(&path, &[&data], durability)).await;
        }
        self.op
            .write(path, data)
            .await
            .map(|_| ())
            .map_err(|source| VaultError::Backend {
                op: "write",
                path: path.to_string(),
                source: Box::new(source),
            })
    }

    /// Writes a pack from its parts; its data is durable when this returns.
    pub(crate) async fn write_pack(&self, path: &str, parts: Vec<Vec<u8>>) -> Result<()> {
        if let Some(l) = &self.local {
            let l = l.clone();
            let path = path.to_string();
            return blocking(move || {
                let slices: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
                l.write(&path, &slices, Durability::Data)
            })
            .await;
        }
        self.write_remote(path, parts).await
    }

    async fn write_remote(&self, path: &str, parts: Vec<Vec<u8>>) -> Result<()> {
        let buf: Vec<bytes::Bytes> = parts.into_iter().map(bytes::Bytes::from).collect();
        self.op
            .write(path, opendal::Buffer::from(buf))
            .await
            .map(|_| ())
            .map_err(|source| VaultError::Backend {
                op: "write",
                path: path.to_string(),
                source: Box::new(source),
            })
    }

    /// Writes a pack from a plain (non-runtime) thread: directly for a local folder
    /// (and then hands the parts back for reuse), through `rt` otherwise.
    pub(crate) fn write_pack_blocking(
        &self,
        rt: &tokio::runtime::Handle,
        path: &str,
        parts: Vec<Vec<u8>>,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        match &self.local {
            Some(l) => {
                let slices: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
                l.write(path, &slices, Durability::Data)?;
                Ok(Some(parts))
            }
            None => {
                rt.block_on(self.write_remote(path, parts))?;
                Ok(None)
            }
        }
    }

    pub(crate) async fn exists(&self, path: &str) -> Result<bool> {
        if let Some(l) = &self.local {
            let p = l.abs(path)?;
            return match std::fs::symlink_metadata(&p) {
                Ok(m) => Ok(!m.is_dir()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(local_err("stat", path, e)),
            };
        }
        self.op
            .exists(path)
            .await
            .map_err(|source| VaultError::Backend {
                op: "stat",
                path: path.to_string(),
                source: Box::new(source),
            })
    }

    pub(crate) async fn size(&self, path: &str) -> Result<u64> {
        self.op
            .stat(path)
            .await
            .map(|m| m.content_length())
            .map_err(|source| VaultError::Backend {
                op: "stat",
                path: path.to_string(),
                source: Box::new(source),
            })
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<()> {
        self.op
            .delete(path)
            .await
            .map_err(|source| VaultError::Backend {
                op: "delete",
                path: path.to_string(),
                source: Box::new(source),
            })
    }

    /// Names (paths relative to the vault root) of the files under `dir` (recursive).
    pub(crate) async fn list(&self, dir: &str) -> Result<Vec<String>> {
        let entries = match self.op.list_with(dir).recursive(true).await {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(VaultError::Backend {
                    op: "list",
                    path: dir.to_string(),
                    source: Box::new(source),
                });
            }
        };
        let mut out: Vec<String> = entries
            .into_iter()
            .filter(|e| !e.path().ends_with('/'))
            .map(|e| e.path().to_string())
            .collect();
        out.sort();
        Ok(out)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| VaultError::Internal(format!("storage task: {e}")))?
}
