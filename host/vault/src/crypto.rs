//! Keys and encryption: master key → sub-keys, AES-256-GCM with unique nonces, keyed
//! BLAKE3 chunk ids. See docs/vault-format.md, "Keys and encryption".

use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::error::{Result, VaultError};

/// Name of the environment variable that holds the key (or passphrase).
pub const KEY_ENV: &str = "LIFEBOAT_VAULT_KEY";
/// Bytes an AES-GCM envelope adds: 12-byte nonce + 16-byte tag.
pub const ENVELOPE_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
pub(crate) const TAG_LEN: usize = 16;

/// The secret that opens a vault: either 32 raw bytes (given as 64 hex digits) or a
/// passphrase, stretched with Argon2id using the salt and costs stored in the vault's
/// config.
pub struct Key(KeyInner);

enum KeyInner {
    Raw(Zeroizing<[u8; 32]>),
    Passphrase(Zeroizing<String>),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            KeyInner::Raw(_) => f.write_str("Key(raw, redacted)"),
            KeyInner::Passphrase(_) => f.write_str("Key(passphrase, redacted)"),
        }
    }
}

impl Key {
    /// Reads the key from `file` if given, otherwise from `LIFEBOAT_VAULT_KEY`.
    /// Surrounding whitespace is ignored. 64 hex digits are taken as a raw 32-byte key;
    /// anything else is a passphrase.
    pub fn from_env_or_file(file: Option<&Path>) -> Result<Key> {
        match file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| VaultError::io(format!("reading key file {}", p.display()), e))?;
                Key::parse(&text).map_err(|e| match e {
                    VaultError::Key(m) => VaultError::Key(format!("key file {}: {m}", p.display())),
                    other => other,
                })
            }
            None => match std::env::var(KEY_ENV) {
                Ok(v) => Key::parse(&v).map_err(|e| match e {
                    VaultError::Key(m) => VaultError::Key(format!("{KEY_ENV}: {m}")),
                    other => other,
                }),
                Err(_) => Err(VaultError::Key(format!(
                    "no key: set {KEY_ENV} (64 hex digits or a passphrase) or pass a key file"
                ))),
            },
        }
    }

    /// Parses key text: 64 hex digits → raw key, otherwise a passphrase (at least 8 characters).
    pub fn parse(text: &str) -> Result<Key> {
        let t = text.trim();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut k = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(t, &mut k[..]).map_err(|e| VaultError::Key(e.to_string()))?;
            return Ok(Key(KeyInner::Raw(k)));
        }
        if t.chars().count() < 8 {
            return Err(VaultError::Key(
                "too short: give 64 hex digits or a passphrase of at least 8 characters".into(),
            ));
        }
        Ok(Key(KeyInner::Passphrase(Zeroizing::new(t.to_string()))))
    }

    /// A raw 32-byte key.
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(KeyInner::Raw(Zeroizing::new(bytes)))
    }

    /// A fresh random raw key (e.g. for `lifeboat vault keygen`), as 64 hex digits.
    pub fn generate_hex() -> Result<String> {
        let mut k = Zeroizing::new([0u8; 32]);
        random(&mut k[..])?;
        Ok(hex::encode(&k[..]))
    }

    /// True for a passphrase (stretched with Argon2id), false for a raw key.
    pub fn is_passphrase(&self) -> bool {
        matches!(self.0, KeyInner::Passphrase(_))
    }

    /// The 32-byte master key: raw keys as they are, passphrases through Argon2id.
    pub(crate) fn master(&self, kdf: &KdfParams) -> Result<Zeroizing<[u8; 32]>> {
        match &self.0 {
            KeyInner::Raw(k) => Ok(k.clone()),
            KeyInner::Passphrase(p) => {
                let salt = hex::decode(&kdf.salt)
                    .map_err(|e| VaultError::corrupt("config", format!("kdf salt: {e}")))?;
                let params = argon2::Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(32))
                    .map_err(|e| VaultError::corrupt("config", format!("kdf parameters: {e}")))?;
                let a = argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    params,
                );
                let mut out = Zeroizing::new([0u8; 32]);
                a.hash_password_into(p.as_bytes(), &salt, &mut out[..])
                    .map_err(|e| VaultError::Key(format!("argon2: {e}")))?;
                Ok(out)
            }
        }
    }
}

/// Argon2id parameters stored in the config (used only for passphrase keys).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub algorithm: String,
    /// Hex salt, 16 random bytes.
    pub salt: String,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl KdfParams {
    pub(crate) fn fresh() -> Result<KdfParams> {
        let mut salt = [0u8; 16];
        random(&mut salt)?;
        Ok(KdfParams {
            algorithm: "argon2id-v19".into(),
            salt: hex::encode(salt),
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        })
    }
}

pub(crate) fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| VaultError::Internal(format!("no OS randomness: {e}")))
}

pub(crate) fn random_hex(n: usize) -> Result<String> {
    let mut b = vec![0u8; n];
    random(&mut b)?;
    Ok(hex::encode(b))
}

/// Sub-keys derived from the master key and the vault id.
pub(crate) struct Crypto {
    /// Key for keyed BLAKE3 chunk and table ids.
    id_key: Zeroizing<[u8; 32]>,
    aead: LessSafeKey,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crypto(redacted)")
    }
}

pub(crate) const CTX_ID: &str = "lifeboat vault v1 chunk-id key";
pub(crate) const CTX_ENC: &str = "lifeboat vault v1 AES-256-GCM key";

impl Crypto {
    pub(crate) fn new(master: &[u8; 32], vault_id: &str) -> Result<Crypto> {
        let mut material = Zeroizing::new(Vec::with_capacity(32 + vault_id.len()));
        material.extend_from_slice(master);
        material.extend_from_slice(vault_id.as_bytes());
        let id_key = Zeroizing::new(blake3::derive_key(CTX_ID, &material));
        let enc = Zeroizing::new(blake3::derive_key(CTX_ENC, &material));
        let unbound = UnboundKey::new(&AES_256_GCM, &enc[..])
            .map_err(|_| VaultError::Internal("AES-256-GCM key setup failed".into()))?;
        Ok(Crypto {
            id_key,
            aead: LessSafeKey::new(unbound),
        })
    }

    /// Keyed BLAKE3 of `data`: the id of a chunk or table.
    #[inline]
    pub(crate) fn id(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id_key, data).as_bytes()
    }

    /// Encrypts `buf[NONCE_LEN..]` in place (the caller reserved the first 12 bytes for
    /// the nonce) and appends the tag: `nonce ‖ ciphertext ‖ tag`.
    pub(crate) fn seal_in_place(
        &self,
        nonces: &mut NonceGen,
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let n = nonces.next()?;
        let body = buf
            .get_mut(..)
            .and_then(|b| b.get_mut(NONCE_LEN..))
            .ok_or_else(|| VaultError::Internal("seal: buffer shorter than a nonce".into()))?;
        let tag = self
            .aead
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(n), Aad::from(aad), body)
            .map_err(|_| VaultError::Internal("AES-GCM seal failed".into()))?;
        if let Some(h) = buf.get_mut(..NONCE_LEN) {
            h.copy_from_slice(&n);
        }
        buf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Encrypts `plain` into a new envelope.
    pub(crate) fn seal(&self, nonces: &mut NonceGen, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(plain.len() + ENVELOPE_OVERHEAD);
        buf.extend_from_slice(&[0u8; NONCE_LEN]);
        buf.extend_from_slice(plain);
        self.seal_in_place(nonces, aad, &mut buf)?;
        Ok(buf)
    }

    /// Authenticates and decrypts an envelope in place; returns the plaintext slice.
    pub(crate) fn open_in_place<'a>(&self, aad: &[u8], env: &'a mut [u8]) -> Option<&'a mut [u8]> {
        if env.len() < ENVELOPE_OVERHEAD {
            return None;
        }
        let (n, body) = env.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(n).ok()?;
        self.aead
            .open_in_place(nonce, Aad::from(aad), body)
            .ok()
            .map(|p| &mut *p)
    }

    /// Decrypts an envelope into a new buffer, naming `object` in the error.
    pub(crate) fn open(&self, object: &str, aad: &[u8], env: &[u8]) -> Result<Vec<u8>> {
        let mut buf = env.to_vec();
        let len = self
            .open_in_place(aad, &mut buf)
            .map(|p| p.len())
            .ok_or_else(|| {
                VaultError::corrupt(object, "authentication failed (AES-GCM tag mismatch)")
            })?;
        buf.copy_within(NONCE_LEN..NONCE_LEN + len, 0);
        buf.truncate(len);
        Ok(buf)
    }
}

/// Unique nonces: 8 random bytes chosen per generator, then a 32-bit counter. A generator
/// draws a new random prefix before its counter would wrap, so within a generator no
/// nonce repeats; across generators a repeat needs two equal random 64-bit prefixes.
#[derive(Debug)]
pub(crate) struct NonceGen {
    prefix: [u8; 8],
    counter: u32,
}

impl NonceGen {
    pub(crate) fn new() -> Result<NonceGen> {
        let mut prefix = [0u8; 8];
        random(&mut prefix)?;
        Ok(NonceGen { prefix, counter: 0 })
    }

    fn next(&mut self) -> Result<[u8; NONCE_LEN]> {
        if self.counter == u32::MAX {
            random(&mut self.prefix)?;
            self.counter = 0;
        }
        let mut n = [0u8; NONCE_LEN];
        n[..8].copy_from_slice(&self.prefix);
        n[8..].copy_from_slice(&self.counter.to_be_bytes());
        self.counter += 1;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_aad() {
        let c = Crypto::new(&[7u8; 32], "v").unwrap();
        let mut g = NonceGen::new().unwrap();
        let env = c.seal(&mut g, b"a", b"hello").unwrap();
        assert_eq!(c.open("x", b"a", &env).unwrap(), b"hello");
        assert!(c.open("x", b"b", &env).is_err());
        let mut bad = env.clone();
        bad[14] ^= 1;
        assert!(c.open("x", b"a", &bad).is_err());
        let env2 = c.seal(&mut g, b"a", b"hello").unwrap();
        assert_ne!(env[..12], env2[..12]);
    }

    #[test]
    fn key_parsing() {
        assert!(
            Key::parse(&"ab".repeat(32))
                .unwrap()
                .master(&KdfParams::fresh().unwrap())
                .is_ok()
        );
        assert!(Key::parse("short").is_err());
        assert!(Key::parse("a long passphrase").unwrap().is_passphrase());
    }
}
