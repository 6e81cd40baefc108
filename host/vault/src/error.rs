//! The one error type of the crate.

use lifeboat_disk::DiskError;

/// Everything that can go wrong in the vault. Each message names the object or file and
/// what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The vault URL could not be understood or the backend could not be set up.
    #[error("vault URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    /// The storage backend failed (network, permissions, missing object, …).
    #[error("vault storage: {op} {path}: {source}")]
    Backend {
        op: &'static str,
        path: String,
        #[source]
        source: Box<opendal::Error>,
    },
    /// No vault at that URL (no `config` object).
    #[error("no vault at {url}: {reason}")]
    NotAVault { url: String, reason: String },
    /// `init` found an existing vault.
    #[error("a vault already exists at {0}")]
    AlreadyExists(String),
    /// The key does not open this vault.
    #[error(
        "wrong key: the vault's key check does not decrypt with this key (check LIFEBOAT_VAULT_KEY or the key file)"
    )]
    WrongKey,
    /// No usable key was supplied, or the key text is malformed.
    #[error("vault key: {0}")]
    Key(String),
    /// A stored object failed authentication, decoding or hashing.
    #[error("corrupt vault object {object}: {reason}")]
    Corrupt { object: String, reason: String },
    /// A vault object was written by a newer version of the format.
    #[error("unsupported vault object {object}: {reason}")]
    Unsupported { object: String, reason: String },
    /// A point, VM or disk that does not exist, or an ambiguous name.
    #[error("{0}")]
    NotFound(String),
    /// The request is inconsistent (e.g. a change list without a previous point).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Another process holds a conflicting lock.
    #[error("vault is locked: {0}")]
    Locked(String),
    /// Reading the source or writing the target disk failed.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A helper tool (qemu-nbd, qemu-img) failed.
    #[error("{tool}: {reason}")]
    Tool { tool: String, reason: String },
    /// Local I/O failed (key file, sockets, temp files).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A worker thread or task stopped unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
}

impl VaultError {
    pub(crate) fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        VaultError::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        VaultError::Io {
            context: context.into(),
            source,
        }
    }
    /// True when the backend reported that the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, VaultError::Backend { source, .. } if source.kind() == opendal::ErrorKind::NotFound)
    }
}

pub type Result<T, E = VaultError> = std::result::Result<T, E>;
