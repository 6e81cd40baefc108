//! Locks: `locks/<id>` objects. Ship, restore and check take shared locks, prune an
//! exclusive one. A lock is written first, then all locks are listed; on a conflict the
//! new lock is removed again, so two racing processes both back off rather than both
//! proceed. Locks are refreshed every minute; one not refreshed for 10 minutes, or held
//! by a dead process on this host, is stale and ignored.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Inner;
use crate::backend::Durability;
use crate::error::{Result, VaultError};
use crate::format::lock_aad;

pub(crate) const STALE_SECS: i64 = 600;
const REFRESH_SECS: u64 = 60;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LockInfo {
    pub exclusive: bool,
    pub host: String,
    pub pid: u32,
    pub created: String,
    /// Unix seconds of the last refresh.
    pub refreshed: i64,
}

pub(crate) struct LockGuard {
    inner: Arc<Inner>,
    path: String,
    refresher: tokio::task::JoinHandle<()>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl LockInfo {
    pub(crate) fn is_stale(&self) -> bool {
        if now_unix() - self.refreshed > STALE_SECS {
            return true;
        }
        self.host == hostname()
            && self.pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
    fn describe(&self, path: &str) -> String {
        format!(
            "{} lock {path} held by pid {} on {} since {}",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared"
            },
            self.pid,
            self.host,
            self.created
        )
    }
}

pub(crate) async fn read_lock(inner: &Inner, path: &str) -> Result<LockInfo> {
    let id = path.trim_start_matches("locks/");
    let plain = inner.read_sealed(path, &lock_aad(id)).await?;
    serde_json::from_slice(&plain).map_err(|e| VaultError::corrupt(path, e.to_string()))
}

async fn write_lock(inner: &Inner, path: &str, info: &LockInfo) -> Result<()> {
    let id = path.trim_start_matches("locks/");
    let plain = serde_json::to_vec(info).map_err(|e| VaultError::Internal(e.to_string()))?;
    // a lock only matters while its process lives: no fsync
    inner
        .write_sealed_with(path, &lock_aad(id), &plain, Durability::Volatile)
        .await
}

pub(crate) async fn acquire(inner: &Arc<Inner>, exclusive: bool) -> Result<LockGuard> {
    let path = format!("locks/{}", crate::crypto::random_hex(8)?);
    let mut info = LockInfo {
        exclusive,
        host: hostname(),
        pid: std::process::id(),
        created: crate::now_rfc3339(),
        refreshed: now_unix(),
    };
    write_lock(inner, &path, &info).await?;
    let conflict = async {
        for other in inner.backend.list("locks/").await? {
            if other == path {
                continue;
            }
            let o = match read_lock(inner, &other).await {
                Ok(o) => o,
                Err(e) if e.is_not_found() => continue, // released meanwhile
                Err(e) => return Err(e),
            };
            if o.is_stale() {
                continue;
            }
            if exclusive || o.exclusive {
                return Ok(Some(o.describe(&other)));
            }
        }
        Ok(None)
    }
    .await;
    match conflict {
        Ok(None) => {}
        Ok(Some(why)) => {
            let _ = inner.backend.delete(&path).await;
            return Err(VaultError::Locked(why));
        }
        Err(e) => {
            let _ = inner.backend.delete(&path).await;
            return Err(e);
        }
    }
    let refresher = {
        let inner = inner.clone();
        let path = path.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(REFRESH_SECS)).await;
                info.refreshed = now_unix();
                if let Err(e) = write_lock(&inner, &path, &info).await {
                    tracing::warn!("refreshing vault lock {path}: {e}");
                }
            }
        })
    };
    Ok(LockGuard {
        inner: inner.clone(),
        path,
        refresher,
    })
}

impl LockGuard {
    pub(crate) async fn release(self) -> Result<()> {
        self.refresher.abort();
        let _ = self.refresher.await;
        self.inner.backend.delete(&self.path).await
    }
}
