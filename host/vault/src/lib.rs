//! lifeboat's vault: an encrypted, deduplicated store of recovery points on any opendal
//! backend (local folder, S3, Azure Blob).
//!
//! Layers, bottom up: backend (opendal operator from a URL) → crypto (AES-256-GCM,
//! keyed BLAKE3 ids, keys derived from a master key) → chunker (fixed, block-aligned
//! chunks with a zero fast path, driven by changed extents) → packer/index (blobs packed
//! into large objects, an index mapping ids to pack locations) → repository (manifests,
//! ship, restore, check, prune, locks). The on-storage format is specified in
//! docs/vault-format.md.

mod backend;
mod check;
mod crypto;
pub mod endpoint;
mod error;
pub mod extents;
mod format;
mod lock;
mod pack;
mod prune;
mod restore;
mod ship;
mod timing;

use std::sync::Arc;

use serde::Serialize;

pub use check::CheckReport;
pub use crypto::{KEY_ENV, KdfParams, Key};
pub use error::VaultError;
pub use extents::{Extent, ExtentKind};
pub use format::{
    ChangeRecord, Compression, Config, Consistency, DiskManifest, ExtentRecord, Manifest,
};
pub use lifeboat_disk::WriteFormat;
pub use prune::PruneReport;
pub use restore::RestoreReport;
pub use ship::{ChangedSource, Progress, ProgressFn, ShipReport, ShipRequest};

use crate::backend::{Backend, Durability};
use crate::crypto::{Crypto, NonceGen};
use crate::error::Result;
use crate::format::{
    AAD_INDEX, AAD_KEYCHECK, CONFIG, FORMAT_NAME, FORMAT_VERSION, Id, Index, KEYCHECK, KeyCheck,
    PackRecord, decode_index, encode_index, point_aad, point_path, staged_aad, staged_path,
};

/// Default chunk size: 64 KiB (see docs/vault-format.md, "Chunk size", for the measurement).
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Default target pack size: 16 MiB.
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
/// Default zstd level.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
/// Chunk slots per table blob (1 GiB of disk at 64 KiB chunks).
pub const TABLE_SLOTS: u32 = 16384;

/// Options fixed when a vault is created.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub chunk_size: u32,
    pub pack_size: u32,
    pub zstd_level: i32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            pack_size: DEFAULT_PACK_SIZE,
            zstd_level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

/// One line of `points`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PointSummary {
    pub id: String,
    pub vm: String,
    pub created: String,
    pub consistency: Consistency,
    pub parent: Option<String>,
    pub disks: Vec<DiskSummary>,
    /// What the sealer recorded (the VM's configuration), when anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DiskSummary {
    pub name: String,
    pub virtual_size: u64,
    pub data_bytes: u64,
    pub changes: String,
}

/// A held vault lock (see [`Vault::lock`]).
pub struct VaultLock(lock::LockGuard);

impl std::fmt::Debug for VaultLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultLock")
    }
}

impl VaultLock {
    /// Removes the lock object.
    pub async fn release(self) -> Result<()> {
        self.0.release().await
    }
}

/// An open vault.
#[derive(Debug, Clone)]
pub struct Vault {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) backend: Backend,
    pub(crate) config: Config,
    pub(crate) crypto: Crypto,
}

impl Vault {
    /// Creates a new vault at `url` with the default options.
    pub async fn init(url: &str, key: &Key) -> Result<Vault> {
        Vault::init_with(url, key, InitOptions::default()).await
    }

    /// Creates a new vault at `url`.
    pub async fn init_with(url: &str, key: &Key, opts: InitOptions) -> Result<Vault> {
        if !opts.chunk_size.is_power_of_two() || !(4096..=4 << 20).contains(&opts.chunk_size) {
            return Err(VaultError::InvalidRequest(format!(
                "chunk size {} must be a power of two between 4 KiB and 4 MiB",
                opts.chunk_size
            )));
        }
        if !(1 << 20..=1 << 30).contains(&opts.pack_size) {
            return Err(VaultError::InvalidRequest(
                "pack size must be 1 MiB–1 GiB".into(),
            ));
        }
        let backend = Backend::open(url)?;
        if backend.exists(CONFIG).await? {
            return Err(VaultError::AlreadyExists(url.to_string()));
        }
        let config = Config {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            id: crypto::random_hex(16)?,
            chunk_size: opts.chunk_size,
            table_slots: TABLE_SLOTS,
            pack_size: opts.pack_size,
            compression: Compression {
                algorithm: "zstd".into(),
                level: opts.zstd_level,
            },
            kdf: KdfParams::fresh()?,
        };
        let mut config_bytes = serde_json::to_vec_pretty(&config)
            .map_err(|e| VaultError::Internal(format!("config: {e}")))?;
        config_bytes.push(b'\n');
        let master = key.master(&config.kdf)?;
        let crypto = Crypto::new(&master, &config.id)?;
        let kc = KeyCheck {
            vault_id: config.id.clone(),
            config_blake3: blake3::hash(&config_bytes).to_hex().to_string(),
        };
        let kc_plain = serde_json::to_vec(&kc).map_err(|e| VaultError::Internal(e.to_string()))?;
        let kc_env = crypto.seal(&mut NonceGen::new()?, AAD_KEYCHECK, &kc_plain)?;
        // key check first: a config without one is not a vault yet
        backend.write(KEYCHECK, kc_env).await?;
        backend.write(CONFIG, config_bytes).await?;
        Ok(Vault {
            inner: Arc::new(Inner {
                backend,
                config,
                crypto,
            }),
        })
    }

    /// Opens the vault at `url`; a wrong key is [`VaultError::WrongKey`].
    pub async fn open(url: &str, key: &Key) -> Result<Vault> {
        let backend = Backend::open(url)?;
        let config_bytes = match backend.read(CONFIG).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(VaultError::NotAVault {
                    url: url.into(),
                    reason: "no config object (run init first)".into(),
                });
            }
            Err(e) => return Err(e),
        };
        let config: Config =
            serde_json::from_slice(&config_bytes).map_err(|e| VaultError::NotAVault {
                url: url.into(),
                reason: format!("config is not a lifeboat vault config: {e}"),
            })?;
        if config.format != FORMAT_NAME {
            return Err(VaultError::NotAVault {
                url: url.into(),
                reason: format!("config format is {:?}", config.format),
            });
        }
        if config.version != FORMAT_VERSION {
            return Err(VaultError::Unsupported {
                object: CONFIG.into(),
                reason: format!(
                    "vault format version {} (this build reads {FORMAT_VERSION})",
                    config.version
                ),
            });
        }
        if !config.chunk_size.is_power_of_two()
            || !(4096..=4 << 20).contains(&config.chunk_size)
            || config.table_slots == 0
            || config.table_slots > 1 << 20
            || !(1 << 20..=1 << 30).contains(&config.pack_size)
        {
            return Err(VaultError::corrupt(
                CONFIG,
                "chunk, table or pack size out of range",
            ));
        }
        let master = key.master(&config.kdf)?;
        let crypto = Crypto::new(&master, &config.id)?;
        let kc_env = backend.read(KEYCHECK).await?;
        let kc_plain = crypto
            .open(KEYCHECK, AAD_KEYCHECK, &kc_env)
            .map_err(|_| VaultError::WrongKey)?;
        let kc: KeyCheck = serde_json::from_slice(&kc_plain)
            .map_err(|e| VaultError::corrupt(KEYCHECK, e.to_string()))?;
        if kc.vault_id != config.id
            || kc.config_blake3 != blake3::hash(&config_bytes).to_hex().as_str()
        {
            return Err(VaultError::corrupt(
                CONFIG,
                "config does not match the key check (modified after init?)",
            ));
        }
        Ok(Vault {
            inner: Arc::new(Inner {
                backend,
                config,
                crypto,
            }),
        })
    }

    /// The vault's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Ships one disk into a new recovery point.
    pub async fn ship(&self, req: ShipRequest) -> Result<ShipReport> {
        ship::ship(self, req).await
    }

    /// Seals staged disks (see [`ShipRequest::stage`]) into one immutable recovery
    /// point of `vm`. Idempotent: the point id is derived from the staged ids, so
    /// sealing the same set again returns the point sealed the first time. The
    /// parent is the VM's latest point before this one.
    /// `meta` (a JSON object, e.g. the VM's configuration) is stored in the point.
    pub async fn seal(
        &self,
        vm: &str,
        staged: &[String],
        consistency: Consistency,
        meta: Option<serde_json::Value>,
    ) -> Result<Manifest> {
        if staged.is_empty() {
            return Err(VaultError::InvalidRequest(
                "nothing to seal: no staged disks were given".into(),
            ));
        }
        let mut ids: Vec<&str> = staged.iter().map(String::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in &ids {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(VaultError::InvalidRequest(format!(
                    "{id:?} is not a staged disk id"
                )));
            }
        }
        let id = blake3::hash(ids.join(",").as_bytes()).to_hex()[..16].to_string();
        let lock = lock::acquire(&self.inner, false).await?;
        let r = self.seal_locked(vm, &ids, &id, consistency, meta).await;
        let rel = lock.release().await;
        let m = r?;
        rel?;
        Ok(m)
    }

    async fn seal_locked(
        &self,
        vm: &str,
        ids: &[&str],
        id: &str,
        consistency: Consistency,
        meta: Option<serde_json::Value>,
    ) -> Result<Manifest> {
        let inner = &self.inner;
        if inner.backend.exists(&point_path(id)).await? {
            return inner.read_manifest(id).await;
        }
        let mut disks: Vec<DiskManifest> = Vec::new();
        for sid in ids {
            let m = inner.read_staged(sid).await?;
            if m.vm != vm {
                return Err(VaultError::InvalidRequest(format!(
                    "staged disk {sid} belongs to VM {:?}, not {vm:?}",
                    m.vm
                )));
            }
            for d in m.disks {
                if disks.iter().any(|x| x.name == d.name) {
                    return Err(VaultError::InvalidRequest(format!(
                        "two staged disks are both named {:?}: a point holds each disk once",
                        d.name
                    )));
                }
                disks.push(d);
            }
        }
        let parent = inner.manifests(Some(vm)).await?.pop().map(|m| m.id);
        let manifest = Manifest {
            version: 1,
            id: id.to_string(),
            vm: vm.to_string(),
            created: now_rfc3339(),
            consistency,
            parent,
            disks,
            meta,
        };
        let plain =
            serde_json::to_vec(&manifest).map_err(|e| VaultError::Internal(e.to_string()))?;
        inner
            .write_sealed(&point_path(id), &point_aad(id), &plain)
            .await?;
        for sid in ids {
            // The point now holds these disks; a leftover staged object only costs space.
            if let Err(e) = inner.backend.delete(&staged_path(sid)).await {
                tracing::warn!(staged = sid, error = %e, "could not remove a sealed staged disk");
            }
        }
        Ok(manifest)
    }

    /// Recovery points, oldest first, optionally of one VM only.
    pub async fn points(&self, vm: Option<&str>) -> Result<Vec<PointSummary>> {
        Ok(self
            .manifests(vm)
            .await?
            .into_iter()
            .map(|m| PointSummary {
                disks: m
                    .disks
                    .iter()
                    .map(|d| DiskSummary {
                        name: d.name.clone(),
                        virtual_size: d.virtual_size,
                        data_bytes: d.data_bytes,
                        changes: d.changes.source.clone(),
                    })
                    .collect(),
                id: m.id,
                vm: m.vm,
                created: m.created,
                consistency: m.consistency,
                parent: m.parent,
                meta: m.meta,
            })
            .collect())
    }

    /// A point's manifest by id, unique id prefix, or `latest` (of `vm`).
    pub async fn point(&self, vm: Option<&str>, point: &str) -> Result<Manifest> {
        self.inner.resolve(vm, point).await
    }

    /// Restores the (only) disk of a point into a new image at `out`.
    pub async fn restore(
        &self,
        vm: Option<&str>,
        point: &str,
        out: &std::path::Path,
        format: WriteFormat,
    ) -> Result<RestoreReport> {
        restore::restore(self, vm, point, None, out, format).await
    }

    /// Restores the disk named `disk` of a point into a new image at `out`.
    pub async fn restore_disk(
        &self,
        vm: Option<&str>,
        point: &str,
        disk: &str,
        out: &std::path::Path,
        format: WriteFormat,
    ) -> Result<RestoreReport> {
        restore::restore(self, vm, point, Some(disk), out, format).await
    }

    /// Verifies the vault's structure; with `read_data`, also decrypts and hashes every blob.
    pub async fn check(&self, read_data: bool) -> Result<CheckReport> {
        check::check(self, read_data).await
    }

    /// Keeps the newest `keep_last` points of each VM, deletes the others and every
    /// pack no remaining point needs (under an exclusive lock).
    pub async fn prune(&self, keep_last: usize) -> Result<PruneReport> {
        prune::prune(self, None, keep_last).await
    }

    /// Retention for one VM: keeps its newest `keep_last` points and deletes its older
    /// ones (other VMs' points are untouched), then every pack no remaining point needs.
    /// `points_kept` in the report counts this VM's points.
    pub async fn prune_vm(&self, vm: &str, keep_last: usize) -> Result<PruneReport> {
        prune::prune(self, Some(vm), keep_last).await
    }

    /// Takes a vault lock and holds it until [`VaultLock::release`]: shared locks (as
    /// ship takes) exclude prune; an exclusive lock (as prune takes) excludes everything.
    pub async fn lock(&self, exclusive: bool) -> Result<VaultLock> {
        Ok(VaultLock(lock::acquire(&self.inner, exclusive).await?))
    }

    /// Manifests, oldest first (by creation time, then id).
    pub(crate) async fn manifests(&self, vm: Option<&str>) -> Result<Vec<Manifest>> {
        self.inner.manifests(vm).await
    }
}

impl Inner {
    pub(crate) async fn read_sealed(&self, path: &str, aad: &[u8]) -> Result<Vec<u8>> {
        let env = self.backend.read(path).await?;
        self.crypto.open(path, aad, &env)
    }

    /// Encrypts and writes an object, durable and named when this returns.
    pub(crate) async fn write_sealed(&self, path: &str, aad: &[u8], plain: &[u8]) -> Result<()> {
        self.write_sealed_with(path, aad, plain, Durability::Named)
            .await
    }

    pub(crate) async fn write_sealed_with(
        &self,
        path: &str,
        aad: &[u8],
        plain: &[u8],
        durability: Durability,
    ) -> Result<()> {
        let env = self.crypto.seal(&mut NonceGen::new()?, aad, plain)?;
        self.backend.write_with(path, env, durability).await
    }

    /// Loads and merges every index file.
    pub(crate) async fn load_index(&self) -> Result<Index> {
        let mut idx = Index::default();
        for name in self.backend.list("index/").await? {
            let plain = self.read_sealed(&name, AAD_INDEX).await?;
            for rec in decode_index(&plain, &name)? {
                idx.add(&rec);
            }
            idx.files.push(name);
        }
        Ok(idx)
    }

    /// Writes one index file listing `packs`; returns its name. A ship's index files
    /// need only be synced (the manifest's directory sync names them); prune's new index
    /// is named before the old ones are deleted.
    pub(crate) async fn write_index(
        &self,
        packs: &[PackRecord],
        durability: Durability,
    ) -> Result<String> {
        let name = format!("index/{}", crypto::random_hex(16)?);
        self.write_sealed_with(&name, AAD_INDEX, &encode_index(packs), durability)
            .await?;
        Ok(name)
    }

    /// Makes a ship durable: its last pack (a local folder's, written but not yet
    /// synced), an index file listing that pack and `unindexed`, then the manifest (or
    /// staged disk) `path`. Each object's data is durable before its name, and every
    /// name before the manifest's. A local folder syncs the data of all three at once,
    /// renames them in that order and syncs the manifest's directory: one round of
    /// syncs instead of three in a row (docs/vault-format.md, "Durability").
    pub(crate) async fn commit_ship(
        &self,
        last_pack: Option<(backend::TmpObject, PackRecord)>,
        mut unindexed: Vec<PackRecord>,
        path: String,
        aad: Vec<u8>,
        plain: Vec<u8>,
    ) -> Result<()> {
        let local = match (self.backend.local(), last_pack) {
            (Some(l), last) => (l.clone(), last),
            (None, Some(_)) => {
                return Err(VaultError::Internal(
                    "an unsynced pack outside a local folder".into(),
                ));
            }
            (None, None) => {
                if !unindexed.is_empty() {
                    self.write_index(&unindexed, Durability::Data).await?;
                }
                return self.write_sealed(&path, &aad, &plain).await;
            }
        };
        let (l, last) = local;
        let mut pack = None;
        if let Some((t, rec)) = last {
            pack = Some((t, format::pack_path(&rec.id)));
            unindexed.push(rec);
        }
        let index_env = if unindexed.is_empty() {
            None
        } else {
            Some(
                self.crypto
                    .seal(&mut NonceGen::new()?, AAD_INDEX, &encode_index(&unindexed))?,
            )
        };
        let man_env = self.crypto.seal(&mut NonceGen::new()?, &aad, &plain)?;
        let index_name = format!("index/{}", crypto::random_hex(16)?);
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut index = match &index_env {
                Some(env) => {
                    let mut t = l.create_tmp("index", &index_name)?;
                    t.append(&[env])?;
                    Some((t, index_name))
                }
                None => None,
            };
            let mut man = l.create_tmp("manifest", &path)?;
            man.append(&[&man_env])?;
            // all data synced at once: the file system can commit them together
            std::thread::scope(|s| -> Result<()> {
                let syncs: Vec<_> = pack
                    .iter_mut()
                    .chain(index.iter_mut())
                    .map(|(t, _)| s.spawn(move || t.sync_data()))
                    .collect();
                let r = man.sync_data();
                for h in syncs {
                    h.join()
                        .map_err(|_| VaultError::Internal("sync thread panicked".into()))??;
                }
                r
            })?;
            // then the names, in order: a name is durable only with those before it
            if let Some((t, name)) = pack {
                t.commit(&name, Durability::Data)?;
            }
            if let Some((t, name)) = index {
                t.commit(&name, Durability::Data)?;
            }
            man.commit(&path, Durability::Named)
        })
        .await
        .map_err(|e| VaultError::Internal(format!("commit task: {e}")))?
    }

    pub(crate) async fn read_manifest(&self, id: &str) -> Result<Manifest> {
        let path = point_path(id);
        let plain = self.read_sealed(&path, &point_aad(id)).await?;
        let m: Manifest = serde_json::from_slice(&plain)
            .map_err(|e| VaultError::corrupt(&path, format!("manifest: {e}")))?;
        if m.id != id {
            return Err(VaultError::corrupt(
                &path,
                format!("manifest names itself {:?}", m.id),
            ));
        }
        Ok(m)
    }

    pub(crate) async fn read_staged(&self, id: &str) -> Result<Manifest> {
        let path = staged_path(id);
        if !self.backend.exists(&path).await? {
            return Err(VaultError::NotFound(format!(
                "no staged disk {id:?} (it was sealed into a point already, or never shipped)"
            )));
        }
        let plain = self.read_sealed(&path, &staged_aad(id)).await?;
        let m: Manifest = serde_json::from_slice(&plain)
            .map_err(|e| VaultError::corrupt(&path, format!("staged disk: {e}")))?;
        if m.id != id {
            return Err(VaultError::corrupt(
                &path,
                format!("staged disk names itself {:?}", m.id),
            ));
        }
        Ok(m)
    }

    /// Staged disks not yet sealed: live roots for prune and check.
    pub(crate) async fn staged(&self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for name in self.backend.list("staged/").await? {
            out.push(self.read_staged(name.trim_start_matches("staged/")).await?);
        }
        Ok(out)
    }

    pub(crate) async fn manifests(&self, vm: Option<&str>) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for name in self.backend.list("points/").await? {
            let id = name.trim_start_matches("points/");
            let m = self.read_manifest(id).await?;
            if vm.is_none_or(|v| v == m.vm) {
                out.push(m);
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    pub(crate) async fn resolve(&self, vm: Option<&str>, point: &str) -> Result<Manifest> {
        if point == "latest" {
            let vm =
                vm.ok_or_else(|| VaultError::InvalidRequest("\"latest\" needs a VM name".into()))?;
            return self
                .manifests(Some(vm))
                .await?
                .pop()
                .ok_or_else(|| VaultError::NotFound(format!("VM {vm:?} has no recovery points")));
        }
        if point.is_empty() || !point.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(VaultError::NotFound(format!(
                "no recovery point {point:?} (ids are hex)"
            )));
        }
        let names = self.backend.list("points/").await?;
        let hits: Vec<&str> = names
            .iter()
            .map(|n| n.trim_start_matches("points/"))
            .filter(|id| id.starts_with(point))
            .collect();
        let m = match hits.as_slice() {
            [one] => self.read_manifest(one).await?,
            [] => return Err(VaultError::NotFound(format!("no recovery point {point:?}"))),
            many => {
                return Err(VaultError::NotFound(format!(
                    "recovery point prefix {point:?} is ambiguous ({} matches)",
                    many.len()
                )));
            }
        };
        if let Some(v) = vm
            && m.vm != v
        {
            return Err(VaultError::NotFound(format!(
                "point {} belongs to VM {:?}, not {v:?}",
                m.id, m.vm
            )));
        }
        Ok(m)
    }

    /// Reads one blob (a table or chunk) by id.
    pub(crate) async fn read_blob(&self, index: &Index, kind: u8, id: &Id) -> Result<Vec<u8>> {
        let loc = index
            .blobs
            .get(id)
            .ok_or_else(|| VaultError::corrupt(hex::encode(id), "blob missing from the index"))?;
        if loc.kind != kind {
            return Err(VaultError::corrupt(
                hex::encode(id),
                "blob has the wrong kind",
            ));
        }
        let pack = format::pack_path(&index.pack_id(loc));
        let mut env = self
            .backend
            .read_range(&pack, loc.offset, u64::from(loc.stored_len))
            .await?;
        let mut out = Vec::new();
        let mut dctx = pack::new_dctx()?;
        let name = || format!("{pack} blob {}", hex::encode(id));
        pack::decode_blob(
            &self.crypto,
            &mut dctx,
            kind,
            id,
            loc.raw_len,
            &mut env,
            &mut out,
            &name,
        )?;
        Ok(out)
    }
}

pub(crate) fn now_rfc3339() -> String {
    format!("{:.6}", jiff::Timestamp::now())
}
