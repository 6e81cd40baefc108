//! Storage backends on opendal: a local folder (default), S3 and Azure Blob.

use std::sync::Once;

use opendal::Operator;

use crate::error::{Result, VaultError};

/// Thin wrapper over an opendal [`Operator`] that maps errors to [`VaultError`].
#[derive(Clone, Debug)]
pub(crate) struct Backend {
    op: Operator,
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
    pub(crate) fn open(url: &str) -> Result<Backend> {
        install_tls_and_transport();
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
            for (k, v) in u.query_pairs() {
                match k.as_ref() {
                    "endpoint" => endpoint = Some(v.to_string()),
                    "region" => region = Some(v.to_string()),
                    other => return Err(url_err(url, format!("unknown parameter {other:?}"))),
                }
            }
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
            Operator::new(b).map_err(|e| url_err(url, e.to_string()))?
        };
        let op = op.layer(opendal::layers::RetryLayer::new().with_max_times(4));
        Ok(Backend { op })
    }

    pub(crate) async fn read(&self, path: &str) -> Result<Vec<u8>> {
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

    pub(crate) async fn write(&self, path: &str, data: Vec<u8>) -> Result<()> {
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

    pub(crate) async fn write_parts(&self, path: &str, parts: Vec<bytes::Bytes>) -> Result<()> {
        self.op
            .write(path, opendal::Buffer::from(parts))
            .await
            .map(|_| ())
            .map_err(|source| VaultError::Backend {
                op: "write",
                path: path.to_string(),
                source: Box::new(source),
            })
    }

    pub(crate) async fn exists(&self, path: &str) -> Result<bool> {
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
