//! The device's transport keys and the key-store file.
//!
//! A device holds up to three transport keys, each known to the server by a
//! 32-bit id carried in every envelope header:
//! - **current**: seals everything the device sends (messages, delivery
//!   confirmations) and proves the key on the LAN path;
//! - **pending**: installed by a key change that has not been confirmed
//!   yet; the server may already use it;
//! - **previous**: the key before the last change, so messages sealed just
//!   before the change still open.
//!
//! **Provisioning.** Until wireless enterprise activation lands, nothing
//! in Bramble negotiates these keys with the server: tests and benchmarks
//! provision the same keys on both sides directly (the test path), and the
//! `bramble device` command reads them from a key-store file (`--keys
//! FILE`) written by whoever provisioned the server side.
//!
//! File format (JSON, UTF-8), one device per file:
//!
//! ```json
//! {
//!   "format": "bramble-device-keys/1",
//!   "pin": "2A3B4C5D",
//!   "keys": {
//!     "current":  { "id": 2, "key": "<64 hex digits>" },
//!     "pending":  null,
//!     "previous": { "id": 1, "key": "<64 hex digits>" }
//!   }
//! }
//! ```
//!
//! An activated device also keeps `"domain_key"` (hex, from its first IT
//! policy), `"service_books"` (as received, see `docs/protocol.md`) and
//! `"signed"`, what it remembers of the signed documents it acted on
//! ([`SignedHistory`]: `{"policy_issued_at": 1800000000, "commands":
//! [[12, 1800604800]]}`, command id and expiry), so a recorded command or
//! an older policy played to it again after a restart is refused. Save the
//! whole state with [`DeviceFile`] (or `Device::save`).
//! Absent slots may be `null` or left out. The file holds secrets: on Unix
//! it is written with mode 0600, through a temporary file renamed into
//! place so a crash never leaves half a key store.

use std::io::Write;
use std::path::{Path, PathBuf};

use bramble_proto::envelope::TransportKey;
use bramble_proto::policy::ServiceBooks;
use bramble_proto::Pin;
use serde::{Deserialize, Serialize};

use crate::seen::SignedHistory;

/// The `format` value of key-store files this crate reads and writes.
pub const KEY_FILE_FORMAT: &str = "bramble-device-keys/1";

/// A device's transport keys by slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyStore {
    pub current: Option<TransportKey>,
    pub pending: Option<TransportKey>,
    pub previous: Option<TransportKey>,
}

impl KeyStore {
    /// A key store holding only a current key.
    pub fn new(current: TransportKey) -> KeyStore {
        KeyStore {
            current: Some(current),
            pending: None,
            previous: None,
        }
    }

    /// The key the server named by `id` in an envelope header: current
    /// first, then pending, then previous.
    pub fn get(&self, id: u32) -> Option<&TransportKey> {
        [&self.current, &self.pending, &self.previous]
            .into_iter()
            .flatten()
            .find(|k| k.id == id)
    }

    /// The key that seals what the device sends.
    pub fn current(&self) -> Option<&TransportKey> {
        self.current.as_ref()
    }

    /// Installs the next key; it opens messages at once and becomes current
    /// at [`promote`](KeyStore::promote). Replaces an earlier pending key.
    pub fn install_pending(&mut self, key: TransportKey) {
        self.pending = Some(key);
    }

    /// Pending becomes current and current becomes previous (the old
    /// previous is forgotten). Returns `false`, changing nothing, when no
    /// key is pending.
    pub fn promote(&mut self) -> bool {
        let Some(next) = self.pending.take() else {
            return false;
        };
        self.previous = self.current.replace(next);
        true
    }

    /// Whether the store holds no key at all.
    pub fn is_empty(&self) -> bool {
        self.current.is_none() && self.pending.is_none() && self.previous.is_none()
    }

    /// The key-store file's text for this device.
    pub fn to_json(&self, pin: Pin) -> String {
        self.to_json_with(pin, None)
    }

    /// [`KeyStore::to_json`] with the device's domain key.
    pub fn to_json_with(&self, pin: Pin, domain_key: Option<&str>) -> String {
        self.to_json_full(pin, domain_key, None)
    }

    /// [`KeyStore::to_json_with`] and the service books the device holds.
    pub fn to_json_full(
        &self,
        pin: Pin,
        domain_key: Option<&str>,
        service_books: Option<&ServiceBooks>,
    ) -> String {
        DeviceFile {
            pin,
            keys: self.clone(),
            domain_key: domain_key.map(str::to_owned),
            service_books: service_books.cloned(),
            signed: SignedHistory::default(),
        }
        .to_json()
    }

    /// Reads a key-store file's text: the device's PIN and its keys.
    pub fn from_json(text: &str) -> Result<(Pin, KeyStore), KeyFileError> {
        Self::from_json_with(text).map(|(pin, store, _)| (pin, store))
    }

    /// [`KeyStore::from_json`] and the domain key, if the file has one.
    pub fn from_json_with(text: &str) -> Result<(Pin, KeyStore, Option<String>), KeyFileError> {
        DeviceFile::from_json(text).map(|f| (f.pin, f.keys, f.domain_key))
    }

    /// The service books kept in a key-store file's text, if any.
    pub fn service_books_from_json(text: &str) -> Result<Option<ServiceBooks>, KeyFileError> {
        let file: KeyFile =
            serde_json::from_str(text).map_err(|e| KeyFileError::Invalid(e.to_string()))?;
        Ok(file.service_books)
    }

    /// The service books kept in a key-store file, if any.
    pub fn load_service_books(path: &Path) -> Result<Option<ServiceBooks>, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        KeyStore::service_books_from_json(&text)
    }

    /// Loads a key-store file.
    pub fn load(path: &Path) -> Result<(Pin, KeyStore), KeyFileError> {
        Self::load_with(path).map(|(pin, store, _)| (pin, store))
    }

    /// [`KeyStore::load`] and the domain key, if the file has one.
    pub fn load_with(path: &Path) -> Result<(Pin, KeyStore, Option<String>), KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        KeyStore::from_json_with(&text)
    }

    /// Writes the key-store file for `pin`, replacing any earlier one
    /// atomically (owner-only permissions on Unix).
    pub fn save(&self, pin: Pin, path: &Path) -> Result<(), KeyFileError> {
        self.save_with(pin, path, None)
    }

    /// [`KeyStore::save`] with the device's domain key.
    pub fn save_with(
        &self,
        pin: Pin,
        path: &Path,
        domain_key: Option<&str>,
    ) -> Result<(), KeyFileError> {
        self.save_full(pin, path, domain_key, None)
    }

    /// [`KeyStore::save_with`] and the service books the device holds.
    pub fn save_full(
        &self,
        pin: Pin,
        path: &Path,
        domain_key: Option<&str>,
        service_books: Option<&ServiceBooks>,
    ) -> Result<(), KeyFileError> {
        write_private(path, &self.to_json_full(pin, domain_key, service_books))
    }
}

/// Everything a device keeps across restarts, as its key file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFile {
    pub pin: Pin,
    pub keys: KeyStore,
    pub domain_key: Option<String>,
    pub service_books: Option<ServiceBooks>,
    pub signed: SignedHistory,
}

impl DeviceFile {
    /// The key file's text.
    pub fn to_json(&self) -> String {
        let file = KeyFile {
            domain_key: self.domain_key.clone(),
            service_books: self.service_books.clone(),
            signed: self.signed.clone(),
            format: KEY_FILE_FORMAT.to_owned(),
            pin: self.pin,
            keys: Slots {
                current: self.keys.current.as_ref().map(KeyEntry::from_key),
                pending: self.keys.pending.as_ref().map(KeyEntry::from_key),
                previous: self.keys.previous.as_ref().map(KeyEntry::from_key),
            },
        };
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// Reads a key file's text, whatever it holds besides the keys.
    pub fn from_json(text: &str) -> Result<DeviceFile, KeyFileError> {
        let file: KeyFile =
            serde_json::from_str(text).map_err(|e| KeyFileError::Invalid(e.to_string()))?;
        if file.format != KEY_FILE_FORMAT {
            return Err(KeyFileError::Format(file.format));
        }
        let slot =
            |name: &'static str, entry: Option<KeyEntry>| entry.map(|e| e.to_key(name)).transpose();
        Ok(DeviceFile {
            pin: file.pin,
            keys: KeyStore {
                current: slot("current", file.keys.current)?,
                pending: slot("pending", file.keys.pending)?,
                previous: slot("previous", file.keys.previous)?,
            },
            domain_key: file.domain_key,
            service_books: file.service_books,
            signed: file.signed,
        })
    }

    /// Loads a key file.
    pub fn load(path: &Path) -> Result<DeviceFile, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        DeviceFile::from_json(&text)
    }

    /// Writes the key file, replacing any earlier one atomically
    /// (owner-only permissions on Unix).
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        write_private(path, &self.to_json())
    }
}

/// Writes `text` to `path` through a temporary file renamed into place,
/// owner-only on Unix.
fn write_private(path: &Path, text: &str) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    let temp = path.with_file_name(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = (|| {
        let mut file = options.open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map_err(io)
}

/// Why a key-store file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key store {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a key store: {0}")]
    Invalid(String),
    #[error("key store format `{0}` is not supported (this version reads {KEY_FILE_FORMAT})")]
    Format(String),
    #[error("the {slot} key is not 64 hexadecimal digits")]
    BadKey { slot: &'static str },
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    format: String,
    pin: Pin,
    keys: Slots,
    /// The domain key the device took from its first IT policy (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    domain_key: Option<String>,
    /// The service books the device received (address lookup needs ALP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service_books: Option<ServiceBooks>,
    /// The signed documents the device acted on.
    #[serde(default, skip_serializing_if = "is_default")]
    signed: SignedHistory,
}

fn is_default(history: &SignedHistory) -> bool {
    *history == SignedHistory::default()
}

#[derive(Serialize, Deserialize)]
struct Slots {
    #[serde(default)]
    current: Option<KeyEntry>,
    #[serde(default)]
    pending: Option<KeyEntry>,
    #[serde(default)]
    previous: Option<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    id: u32,
    key: String,
}

impl KeyEntry {
    fn from_key(key: &TransportKey) -> KeyEntry {
        KeyEntry {
            id: key.id,
            key: bramble_proto::control::hex(key.secret()),
        }
    }

    fn to_key(&self, slot: &'static str) -> Result<TransportKey, KeyFileError> {
        unhex(&self.key)
            .and_then(|bytes| TransportKey::from_slice(self.id, &bytes))
            .ok_or(KeyFileError::BadKey { slot })
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn key(id: u32, byte: u8) -> TransportKey {
        TransportKey::new(id, [byte; 32])
    }

    #[test]
    fn lookup_and_rotation() {
        let mut keys = KeyStore::new(key(1, 1));
        assert!(!keys.promote(), "nothing pending");
        assert_eq!(keys.get(1), Some(&key(1, 1)));
        assert_eq!(keys.get(2), None);
        keys.install_pending(key(2, 2));
        assert_eq!(keys.get(2), Some(&key(2, 2)), "pending opens at once");
        assert_eq!(keys.current().map(|k| k.id), Some(1));
        assert!(keys.promote());
        assert_eq!(keys.current().map(|k| k.id), Some(2));
        assert_eq!(keys.previous.as_ref().map(|k| k.id), Some(1));
        assert!(keys.pending.is_none());
        keys.install_pending(key(3, 3));
        assert!(keys.promote());
        assert_eq!(keys.get(1), None, "the oldest key is forgotten");
        assert!(keys.get(2).is_some() && keys.get(3).is_some());
    }

    #[test]
    fn file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.keys");
        let mut keys = KeyStore::new(key(7, 0xA5));
        keys.previous = Some(key(6, 0x01));
        keys.save(Pin(0x2A3B4C5D), &path).unwrap();
        let (pin, loaded) = KeyStore::load(&path).unwrap();
        assert_eq!(pin, Pin(0x2A3B4C5D));
        assert_eq!(loaded, keys);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"2A3B4C5D\"") && text.contains(&"a5".repeat(32)),
            "{text}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "owner only: {mode:o}");
        }
        assert!(!dir.path().join("device.keys.tmp").exists());
    }

    #[test]
    fn service_books_are_kept_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.keys");
        let store = KeyStore::new(key(1, 1));
        store.save(Pin(1), &path).unwrap();
        assert_eq!(KeyStore::load_service_books(&path).unwrap(), None);
        let books = ServiceBooks {
            email: "a@example.com".into(),
            books: vec![bramble_proto::policy::ServiceBook {
                cid: "ALP".into(),
                name: "Address lookup".into(),
                uid: "bes01".into(),
                settings: [("max_results".to_owned(), "20".to_owned())].into(),
            }],
        };
        store
            .save_full(Pin(1), &path, Some("ab"), Some(&books))
            .unwrap();
        assert_eq!(
            KeyStore::load_service_books(&path).unwrap(),
            Some(books),
            "kept as received"
        );
        let (pin, loaded, domain) = KeyStore::load_with(&path).unwrap();
        assert_eq!(
            (pin, loaded, domain.as_deref()),
            (Pin(1), store, Some("ab"))
        );
    }

    #[test]
    fn bad_files_are_refused() {
        let ok = KeyStore::new(key(1, 1)).to_json(Pin(1));
        assert!(KeyStore::from_json(&ok).is_ok());
        let minimal = r#"{"format":"bramble-device-keys/1","pin":"00000001","keys":{}}"#;
        let (_, empty) = KeyStore::from_json(minimal).unwrap();
        assert!(empty.is_empty());
        assert!(matches!(
            KeyStore::from_json(&ok.replace(KEY_FILE_FORMAT, "other/9")),
            Err(KeyFileError::Format(_))
        ));
        assert!(matches!(
            KeyStore::from_json(&ok.replace(&"01".repeat(32), &"01".repeat(31))),
            Err(KeyFileError::BadKey { slot: "current" })
        ));
        assert!(matches!(
            KeyStore::from_json(&ok.replace(&"01".repeat(32), &"zz".repeat(32))),
            Err(KeyFileError::BadKey { .. })
        ));
        assert!(matches!(
            KeyStore::from_json("{"),
            Err(KeyFileError::Invalid(_))
        ));
        assert!(matches!(
            KeyStore::load(Path::new("/nonexistent/keys.json")),
            Err(KeyFileError::Io { .. })
        ));
    }

    #[test]
    fn the_signed_history_survives_a_save_and_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.json");
        let mut signed = SignedHistory::default();
        signed.record_policy(1_800_000_000);
        signed.record_command(12, 1_800_604_800, 1_800_000_000);
        let file = DeviceFile {
            pin: Pin(0x2A3B_4C5D),
            keys: KeyStore::new(key(3, 7)),
            domain_key: Some("ab".repeat(32)),
            service_books: None,
            signed,
        };
        file.save(&path).unwrap();
        let loaded = DeviceFile::load(&path).unwrap();
        assert_eq!(loaded, file);
        assert!(loaded.signed.applied(12));
        // Older files without it read as a device that applied nothing yet,
        // and the older readers still read the keys.
        let (pin, keys, domain) = KeyStore::load_with(&path).unwrap();
        assert_eq!((pin, keys), (file.pin, file.keys.clone()));
        assert_eq!(domain, file.domain_key);
        let bare = KeyStore::new(key(3, 7)).to_json(Pin(1));
        assert!(!bare.contains("signed"));
        assert_eq!(
            DeviceFile::from_json(&bare).unwrap().signed,
            SignedHistory::default()
        );
    }
}
