//! Sealing secrets at rest (device transport keys, the SRP key, service
//! and lock passwords), and the audit log's key ([`AuditKey`]).
//!
//! AES-256-GCM from openssl with a random 96-bit nonce per secret and the
//! secret's place in the database (table, row, slot) as associated data, so
//! a sealed value copied to another row does not open. The 256-bit master
//! key lives in a file beside the database, readable by its owner only;
//! losing it makes the sealed secrets unreadable (devices then need a new
//! transport key), so back it up with the database.
//!
//! The key is created only for a database that holds no sealed secret yet
//! ([`Sealer::open`] is told which): a key file missing beside sealed data
//! is an error ([`SealError::KeyMissing`]), never a reason to make a new key
//! that opens none of them. On Unix a key file that its group or anyone
//! else may read is refused ([`SealError::KeyExposed`]) rather than
//! tightened: whoever could read it may have copied it, which the
//! administrator should hear about and decide on.
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
    /// The key file is gone while the database holds secrets sealed with it.
    #[error("the master key file {path} is missing, but the Configuration Database beside it holds secrets sealed with that key. Restore {path} from the backup made together with the database (the two belong together), then start again. Bramble did not create a new key and changed nothing: a new key would open none of the stored secrets.")]
    KeyMissing { path: PathBuf },
    /// The key file may be read by its group or by anyone.
    #[error("the key file {path} may be read by other users (permissions {mode:03o}); Bramble refuses to use a key others may have copied. Make it readable by its owner only (`chmod 600 {path}`), and if someone else may have read it, treat the sealed secrets as exposed. Then start again.")]
    KeyExposed { path: PathBuf, mode: u32 },
    /// The audit key file is gone while the audit log holds entries keyed
    /// with it.
    #[error("the audit key file {path} is missing, but the audit log of the Configuration Database beside it was kept with that key. Restore {path} from the backup made together with the database (it belongs with the database and its master key), then start again. Bramble did not create a new key and changed nothing: without it the audit log cannot be verified.")]
    AuditKeyMissing { path: PathBuf },
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
        Sealer::open(path, true)
    }

    /// Reads the master key; when the file does not exist, creates one
    /// (owner-only permissions) if `may_create`, else fails with
    /// [`SealError::KeyMissing`]. A key file others may read is refused.
    pub fn open(path: &Path, may_create: bool) -> Result<Sealer, SealError> {
        let key_file = |message: String| SealError::KeyFile {
            path: path.to_path_buf(),
            message,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                check_private(path)?;
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !may_create => {
                Err(SealError::KeyMissing {
                    path: path.to_path_buf(),
                })
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

/// Refuses a key file its group or anyone else may read or write (Unix; on
/// other systems the folder's access rules decide).
fn check_private(path: &Path) -> Result<(), SealError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| SealError::KeyFile {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(SealError::KeyExposed {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The key of the audit log's chain (HMAC-SHA-256), kept in a file beside
/// the master key and never in the database, and the first entry it keys:
/// entries before it were written before the audit log was keyed and are
/// verified as they were written (plain SHA-256). Both are in the file, so
/// that whoever can change the database cannot move the boundary.
///
/// File layout: `key (32) || first keyed entry id (8, big-endian)`.
pub struct AuditKey {
    key: [u8; KEY_LEN],
    keyed_from: i64,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("keyed_from", &self.keyed_from)
            .finish_non_exhaustive()
    }
}

impl AuditKey {
    /// Reads the audit key; when the file does not exist, creates one
    /// keying entries from `create_from` on, or fails with
    /// [`SealError::AuditKeyMissing`] when `create_from` is `None`. A key
    /// file others may read is refused.
    pub fn open(path: &Path, create_from: Option<i64>) -> Result<AuditKey, SealError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                check_private(path)?;
                if bytes.len() != KEY_LEN + 8 {
                    return Err(SealError::KeyLength {
                        path: path.to_path_buf(),
                        found: bytes.len(),
                    });
                }
                let mut key = [0u8; KEY_LEN];
                key.copy_from_slice(&bytes[..KEY_LEN]);
                let mut from = [0u8; 8];
                from.copy_from_slice(&bytes[KEY_LEN..]);
                Ok(AuditKey {
                    key,
                    keyed_from: i64::from_be_bytes(from),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let Some(keyed_from) = create_from else {
                    return Err(SealError::AuditKeyMissing {
                        path: path.to_path_buf(),
                    });
                };
                let mut key = [0u8; KEY_LEN];
                rand_bytes(&mut key)?;
                let mut bytes = key.to_vec();
                bytes.extend_from_slice(&keyed_from.to_be_bytes());
                write_private(path, &bytes).map_err(|e| SealError::KeyFile {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
                Ok(AuditKey { key, keyed_from })
            }
            Err(e) => Err(SealError::KeyFile {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        }
    }

    /// An audit key with a given key; for tests.
    pub fn from_key(key: [u8; KEY_LEN], keyed_from: i64) -> AuditKey {
        AuditKey { key, keyed_from }
    }

    /// The id of the first entry this key keys.
    pub fn keyed_from(&self) -> i64 {
        self.keyed_from
    }

    /// HMAC-SHA-256 of `input` under the key.
    pub fn mac(&self, input: &[u8]) -> Result<Vec<u8>, SealError> {
        let pkey = openssl::pkey::PKey::hmac(&self.key)?;
        let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey)?;
        signer.update(input)?;
        Ok(signer.sign_to_vec()?)
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

    #[test]
    fn a_missing_key_is_created_only_when_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bramble.db.key");
        let e = Sealer::open(&path, false).unwrap_err();
        assert!(matches!(e, SealError::KeyMissing { .. }), "{e}");
        assert!(e.to_string().contains("bramble.db.key"), "{e}");
        assert!(!path.exists(), "nothing is created");
        Sealer::open(&path, true).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        Sealer::open(&path, false).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_may_read_is_refused_and_left_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bramble.db.key");
        Sealer::open(&path, true).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = Sealer::open(&path, true).unwrap_err();
            assert!(matches!(e, SealError::KeyExposed { .. }), "{mode:o}: {e}");
            assert!(e.to_string().contains("chmod 600"), "{e}");
            let left = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(left, mode, "the file is not changed");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        Sealer::open(&path, false).unwrap();
    }
}
