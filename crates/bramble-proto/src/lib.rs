//! # bramble-proto — the wire
//!
//! Everything that crosses a socket between the Bramble server, the relay
//! (the BlackBerry Infrastructure and wireless network) and a device, so the
//! three agree by construction. `docs/protocol.md` specifies the same wire
//! in prose for anyone writing another device.
//!
//! Layout:
//! - [`Pin`], [`RefId`], [`ContentType`]: what every packet carries.
//! - [`frame`]: versioned, length-prefixed packets of at most 64 KiB, and
//!   [`frame::split`] / [`frame::Reassembler`] for larger messages.
//! - [`envelope`]: compress (flate2) then encrypt (AES-256-GCM, a fresh key
//!   per message wrapped by the device transport key with AES key wrap),
//!   and the reverse. All cryptography is openssl's.
//! - [`cmime`]: the e-mail service's messages (new mail, "More", attachments,
//!   read/deleted state, mail written on the device), JSON in `Cmime` envelopes.
//! - [`sync`]: the Synchronization Service's messages (configuration, slow
//!   sync, changelists both ways, backup and restore, diagnostics), JSON in
//!   `Sync` envelopes.
//! - [`lookup`]: Address lookup (the ALP service book): a device's search
//!   of the directory and the server's answer, JSON in `Lookup` envelopes.
//! - [`catalog`]: the IT policy rules (type, range, default, which value
//!   restricts more) and their validation, shared by server and device.
//! - [`control`]: the plain messages of links (SRP authentication, device
//!   hello, delivery reports) encoded as JSON inside control packets.
//! - [`io`]: reading and writing frames on tokio streams.
//!
//! Decoding never panics and never allocates more than the declared limits;
//! every failure is a typed error.

pub mod activation;
pub mod catalog;
pub mod cmime;
pub mod control;
pub mod envelope;
pub mod frame;
pub mod io;
pub mod lookup;
pub mod policy;
pub mod sync;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Version of the frame format this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// A device's PIN: 32 bits, written as 8 hexadecimal digits (`2A3B4C5D`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pin(pub u32);

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

/// Why text is not a PIN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a PIN: a PIN is 8 hexadecimal digits, such as 2A3B4C5D")]
pub struct PinError(pub String);

impl FromStr for Pin {
    type Err = PinError;
    fn from_str(s: &str) -> Result<Pin, PinError> {
        let t = s.trim();
        if t.len() != 8 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PinError(s.to_owned()));
        }
        u32::from_str_radix(t, 16)
            .map(Pin)
            .map_err(|_| PinError(s.to_owned()))
    }
}

impl TryFrom<String> for Pin {
    type Error = PinError;
    fn try_from(s: String) -> Result<Pin, PinError> {
        s.parse()
    }
}

impl From<Pin> for String {
    fn from(pin: Pin) -> String {
        pin.to_string()
    }
}

/// Reference Identifier: names one message end to end (seed: "identifies
/// the email message with a unique RefID"). 64 bits, written as 16 hex
/// digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RefId(pub u64);

impl RefId {
    /// A fresh random RefID (unique with overwhelming probability).
    pub fn random() -> RefId {
        let mut bytes = [0u8; 8];
        // openssl's CSPRNG; fall back to time if it is unavailable.
        if openssl::rand::rand_bytes(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            bytes = nanos.to_be_bytes();
        }
        RefId(u64::from_be_bytes(bytes))
    }
}

impl fmt::Display for RefId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl fmt::Debug for RefId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RefId({self})")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a RefID: a RefID is 16 hexadecimal digits")]
pub struct RefIdError(pub String);

impl FromStr for RefId {
    type Err = RefIdError;
    fn from_str(s: &str) -> Result<RefId, RefIdError> {
        let t = s.trim();
        if t.is_empty() || t.len() > 16 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RefIdError(s.to_owned()));
        }
        u64::from_str_radix(t, 16)
            .map(RefId)
            .map_err(|_| RefIdError(s.to_owned()))
    }
}

impl TryFrom<String> for RefId {
    type Error = RefIdError;
    fn try_from(s: String) -> Result<RefId, RefIdError> {
        s.parse()
    }
}

impl From<RefId> for String {
    fn from(id: RefId) -> String {
        id.to_string()
    }
}

/// What a packet holds; the Dispatcher directs each type to its component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum ContentType {
    /// E-mail in CMIME form (Messaging Agent). Encrypted.
    Cmime = 1,
    /// "Delivered" from the device for the packet's RefID. Encrypted.
    DeliveryConfirmation = 2,
    /// An error about the packet's RefID, in plain JSON ([`control::ErrorReport`]).
    Error = 3,
    /// IT policy (Policy Service). Encrypted.
    ItPolicy = 4,
    /// Service book records (Policy Service). Encrypted.
    ServiceBook = 5,
    /// IT administration command (Policy Service). Encrypted.
    AdminCommand = 6,
    /// Organizer data, backup, diagnostics (Synchronization Service). Encrypted.
    Sync = 7,
    /// Browsing and push (MDS Connection Service). Encrypted.
    Mds = 8,
    /// Instant messaging (Collaboration Service). Encrypted.
    Im = 9,
    /// Link control between neighbours, plain JSON ([`control::Control`]).
    Control = 10,
    /// Wireless activation between server and device, plain JSON
    /// ([`activation::ActivationMessage`]): there is no key yet.
    Activation = 11,
    /// Transport key regeneration ([`activation::ActivationMessage`]'s
    /// `rekey*` messages) under the current key. Encrypted.
    KeyChange = 12,
    /// Address lookup in the directory (MailStore Service), the
    /// [`lookup::Lookup`] messages. Encrypted.
    Lookup = 13,
    /// The device opened a message but refused it (e.g. an IT policy not
    /// signed by its domain): a [`control::ErrorReport`] for the refused
    /// message's RefID, in its header. Encrypted, so that only the device
    /// can make the server stop sending something.
    Refusal = 14,
}

impl ContentType {
    pub const ALL: [ContentType; 14] = [
        ContentType::Cmime,
        ContentType::DeliveryConfirmation,
        ContentType::Error,
        ContentType::ItPolicy,
        ContentType::ServiceBook,
        ContentType::AdminCommand,
        ContentType::Sync,
        ContentType::Mds,
        ContentType::Im,
        ContentType::Control,
        ContentType::Activation,
        ContentType::KeyChange,
        ContentType::Lookup,
        ContentType::Refusal,
    ];

    pub fn from_u8(value: u8) -> Option<ContentType> {
        ContentType::ALL.into_iter().find(|t| *t as u8 == value)
    }

    /// Whether the payload is an encrypted [`envelope`] (end to end between
    /// server and device) rather than plain JSON for a neighbour.
    pub fn is_encrypted(self) -> bool {
        !matches!(
            self,
            ContentType::Error | ContentType::Control | ContentType::Activation
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pin_text() {
        let pin: Pin = "2a3b4c5d".parse().unwrap();
        assert_eq!(pin, Pin(0x2A3B4C5D));
        assert_eq!(pin.to_string(), "2A3B4C5D");
        assert!("2A3B4C5".parse::<Pin>().is_err());
        assert!("2A3B4C5G".parse::<Pin>().is_err());
        assert!("+2A3B4C5".parse::<Pin>().is_err());
        assert_eq!(serde_json::to_string(&pin).unwrap(), "\"2A3B4C5D\"");
    }

    #[test]
    fn ref_id_text() {
        let id = RefId(0xABCD);
        assert_eq!(id.to_string(), "000000000000ABCD");
        assert_eq!(id.to_string().parse::<RefId>().unwrap(), id);
        assert_ne!(RefId::random(), RefId::random());
    }

    #[test]
    fn content_types_round_trip() {
        for t in ContentType::ALL {
            assert_eq!(ContentType::from_u8(t as u8), Some(t));
        }
        assert_eq!(ContentType::from_u8(0), None);
        assert_eq!(ContentType::from_u8(15), None);
    }
}
