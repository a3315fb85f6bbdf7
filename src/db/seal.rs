//! Sealing secrets at rest (device transport keys, the SRP key).
//!
//! AES-256-GCM from openssl with a random 96-bit nonce per secret and the
//! secret's place in the database (table, row, slot) as associated data, so
//! a sealed value copied to another row does not open. The 256-bit master
//! key lives in a file beside the database, readable by its owner only;
//! losing it makes the sealed secrets unreadable (devices then need a new
//! transport key), so back it up with the database.
//!
//! Sealed layout: `version (1) || nonce (12) || ciphertext || tag (16)`.

use std::path::{Path, PathBuf};

use openssl::rand::rand_bytes;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the master key file {path} cannot be read or created: {message}")]
    KeyFile { path: PathBuf, message: String },
    #[error("the master key file {path} is damaged (expected {KEY_LEN} bytes, found {found})")]
    KeyLength { path: PathBuf, found: usize },
    #[error("a sealed secret is damaged or belongs to another database or row")]
    Unseal,
    #[error("cryptography failed: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

/// Holds the master key; seals and unseals secrets.
pub struct Sealer {
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// Reads the master key, or creates one (owner-only permissions).
    pub fn load_or_create(path: &Path) -> Result<Sealer, SealError> {
        let key_file = |message: String| SealError::KeyFile {
            path: path.to_path_buf(),
            message,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; KEY_LEN] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| SealError::KeyLength {
                            path: path.to_path_buf(),
                            found: bytes.len(),
                        })?;
                Ok(Sealer { key })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_LEN];
                rand_bytes(&mut key)?;
                write_private(path, &key).map_err(|e| key_file(e.to_string()))?;
                Ok(Sealer { key })
            }
            Err(e) => Err(key_file(e.to_string())),
        }
    }

    /// A sealer with a given key; for tests.
    pub fn from_key(key: [u8; KEY_LEN]) -> Sealer {
        Sealer { key }
    }

    /// Encrypts `secret`, bound to `context` (e.g. `device_keys/7/current`).
    pub fn seal(&self, context: &str, secret: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand_bytes(&mut nonce)?;
        let mut tag = [0u8; TAG_LEN];
        let ciphertext = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.key,
            Some(&nonce),
            context.as_bytes(),
            secret,
            &mut tag,
        )?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Decrypts what [`Sealer::seal`] produced for the same `context`.
    pub fn unseal(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != VERSION {
            return Err(SealError::Unseal);
        }
        let nonce = &sealed[1..1 + NONCE_LEN];
        let (ciphertext, tag) =
            sealed[1 + NONCE_LEN..].split_at(sealed.len() - 1 - NONCE_LEN - TAG_LEN);
        decrypt_aead(
            Cipher::aes_256_gcm(),
            &self.key,
            Some(nonce),
            context.as_bytes(),
            ciphertext,
            tag,
        )
        .map_err(|_| SealError::Unseal)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn seals_and_binds_to_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bramble.db.key");
        let sealer = Sealer::load_or_create(&path).unwrap();
        let sealed = sealer
            .seal("device_keys/1/current", b"transport key")
            .unwrap();
        assert!(!sealed.windows(13).any(|w| w == b"transport key"));
        assert_eq!(
            sealer.unseal("device_keys/1/current", &sealed).unwrap(),
            b"transport key"
        );
        assert!(matches!(
            sealer.unseal("device_keys/2/current", &sealed),
            Err(SealError::Unseal)
        ));
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(
            again.unseal("device_keys/1/current", &sealed).unwrap(),
            b"transport key"
        );
        let other = Sealer::from_key([7u8; 32]);
        assert!(other.unseal("device_keys/1/current", &sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(sealer.unseal("device_keys/1/current", &tampered).is_err());
    }
}
