//! What the Policy Service sends a device (seed: "BlackBerry Policy
//! Service", activation steps 9–12, "What is a service book?"), inside the
//! encrypted envelope.
//!
//! - **IT policy** (content type `it_policy`) and **IT admin command**
//!   (`admin_command`): a [`Signed`] document — canonical JSON, the domain
//!   key's Ed25519 signature over it and that public key. A device accepts
//!   the first policy, keeps its domain key, and from then on rejects any
//!   policy or command not signed by that key ([`Signed::check`]): the
//!   policy is read-only and can be changed only by the same domain.
//! - **Service books** (`service_book`): the records that turn services on,
//!   one per enabled service ([`ServiceBooks`]).

use std::collections::BTreeMap;

use openssl::pkey::{Id, PKey, Public};
use openssl::sign::Verifier;
use serde::{Deserialize, Serialize};

use crate::control::{hex, unhex};
use crate::Pin;

/// Kind of a signed IT policy.
pub const KIND_IT_POLICY: &str = "it_policy";
/// Kind of a signed IT administration command.
pub const KIND_ADMIN_COMMAND: &str = "admin_command";

/// Label and version that open every signed encoding
/// ([`Signed::signed_bytes`]): a signature made for anything else never
/// verifies as a Bramble signed document, nor one of another version.
pub const SIGNED_LABEL: &[u8; 16] = b"BRAMBLE-SIGNED/1";

/// How far a device's clock may run behind the server's: a document
/// issued up to this many seconds in the device's future is taken.
pub const CLOCK_SKEW_SECS: u64 = 300;

/// Refusal codes a device sends for a signed document it will not act on
/// (see `docs/protocol.md`, "IT policy").
pub mod codes {
    /// Not signed by the device's domain key, or not signed at all.
    pub const SIGNATURE_REJECTED: &str = "SIGNATURE_REJECTED";
    /// Signed for another use: its kind is not the packet's content type.
    pub const SIGNED_WRONG_KIND: &str = "SIGNED_WRONG_KIND";
    /// Signed for other devices: this device's PIN is not a target.
    pub const SIGNED_WRONG_DEVICE: &str = "SIGNED_WRONG_DEVICE";
    /// Outside its validity: expired, or issued in the device's future.
    pub const SIGNED_EXPIRED: &str = "SIGNED_EXPIRED";
    /// A command the device has already applied.
    pub const SIGNED_REPLAYED: &str = "SIGNED_REPLAYED";
    /// An IT policy issued before the one the device applied last.
    pub const SIGNED_OUTDATED: &str = "SIGNED_OUTDATED";
}

/// A document signed by the domain key, bound to its use: the signature
/// covers the kind, the target devices, the validity period and an id as
/// well as the document ([`Signed::signed_bytes`]), so a signed document
/// cannot be moved to another device, another content type or another
/// time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// `it_policy` or `admin_command`.
    pub kind: String,
    /// The devices the document is for.
    pub targets: Vec<Pin>,
    /// When the server signed it (Unix seconds).
    pub issued_at: u64,
    /// After this (Unix seconds) no device acts on it.
    pub expires_at: u64,
    /// The command's number for a command; a fresh random number for a
    /// policy.
    pub id: u64,
    /// Canonical JSON (keys sorted, no whitespace) of the policy's rules or
    /// of the command.
    pub document: String,
    /// Ed25519 signature over [`Signed::signed_bytes`], hex.
    pub signature: String,
    /// The domain's public key, hex.
    pub domain_key: String,
}

/// What a signature is made over, before signing ([`Signed::seal`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub kind: String,
    pub targets: Vec<Pin>,
    pub issued_at: u64,
    pub expires_at: u64,
    pub id: u64,
}

/// Why a device refuses a signed document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedError {
    #[error("not a signed document: {0}")]
    Malformed(String),
    #[error("the signature does not match the document")]
    BadSignature,
    #[error("signed by another domain's key; this device takes policy only from the domain that activated it")]
    OtherDomain,
    #[error("signed as `{signed}` but delivered as `{delivered}`")]
    WrongKind { signed: String, delivered: String },
    #[error("signed for other devices, not for {0}")]
    WrongDevice(Pin),
    #[error("expired at {expires_at} (Unix time); the device's clock says {now}")]
    Expired { expires_at: u64, now: u64 },
    #[error("issued at {issued_at} (Unix time), later than the device's clock ({now}) allows")]
    NotYetValid { issued_at: u64, now: u64 },
    #[error("command {0} was already applied on this device; it is not applied again")]
    Replayed(u64),
    #[error("issued at {issued_at} (Unix time), before the IT policy the device applied last (issued at {applied})")]
    Outdated { issued_at: u64, applied: u64 },
}

impl SignedError {
    /// The refusal code a device sends for this error ([`codes`]).
    pub fn code(&self) -> &'static str {
        match self {
            SignedError::Malformed(_) | SignedError::BadSignature | SignedError::OtherDomain => {
                codes::SIGNATURE_REJECTED
            }
            SignedError::WrongKind { .. } => codes::SIGNED_WRONG_KIND,
            SignedError::WrongDevice(_) => codes::SIGNED_WRONG_DEVICE,
            SignedError::Expired { .. } | SignedError::NotYetValid { .. } => codes::SIGNED_EXPIRED,
            SignedError::Replayed(_) => codes::SIGNED_REPLAYED,
            SignedError::Outdated { .. } => codes::SIGNED_OUTDATED,
        }
    }
}

impl Signed {
    /// `document` bound to `binding`, with `signature` (over
    /// [`Signed::signed_bytes`] of the result) and the domain's public key.
    pub fn new(binding: Binding, document: String, signature: &[u8], domain_key: &[u8]) -> Signed {
        Signed {
            kind: binding.kind,
            targets: binding.targets,
            issued_at: binding.issued_at,
            expires_at: binding.expires_at,
            id: binding.id,
            document,
            signature: hex(signature),
            domain_key: hex(domain_key),
        }
    }

    /// Binds `document` and signs it with `sign` (given the bytes to sign,
    /// it returns the signature).
    pub fn seal<E>(
        binding: Binding,
        document: String,
        domain_key: &[u8],
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<Signed, E> {
        let bytes = signed_bytes(
            &binding.kind,
            &binding.targets,
            binding.issued_at,
            binding.expires_at,
            binding.id,
            &document,
        );
        let signature = sign(&bytes)?;
        Ok(Signed::new(binding, document, &signature, domain_key))
    }

    /// The bytes the signature covers: a domain-separated, length-prefixed
    /// encoding of every bound field and the document.
    ///
    /// ```text
    /// "BRAMBLE-SIGNED/1"                  16 bytes, ASCII
    /// len(kind)   u8,  kind               UTF-8
    /// count       u16 BE, then each target PIN as u32 BE
    /// issued_at   u64 BE
    /// expires_at  u64 BE
    /// id          u64 BE
    /// len(doc)    u32 BE, document        UTF-8
    /// ```
    pub fn signed_bytes(&self) -> Vec<u8> {
        signed_bytes(
            &self.kind,
            &self.targets,
            self.issued_at,
            self.expires_at,
            self.id,
            &self.document,
        )
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Signed, SignedError> {
        serde_json::from_slice(bytes).map_err(|e| SignedError::Malformed(e.to_string()))
    }

    /// Checks the signature over every bound field, and that the key is
    /// `trusted` when the device already has a domain key.
    pub fn check(&self, trusted: Option<&str>) -> Result<(), SignedError> {
        if let Some(trusted) = trusted {
            if !trusted.eq_ignore_ascii_case(&self.domain_key) {
                return Err(SignedError::OtherDomain);
            }
        }
        let (Some(key), Some(signature)) = (unhex(&self.domain_key), unhex(&self.signature)) else {
            return Err(SignedError::Malformed("key or signature is not hex".into()));
        };
        let Ok(key): Result<PKey<Public>, _> = PKey::public_key_from_raw_bytes(&key, Id::ED25519)
        else {
            return Err(SignedError::Malformed("not an Ed25519 key".into()));
        };
        if self.kind.len() > usize::from(u8::MAX)
            || self.targets.len() > usize::from(u16::MAX)
            || u32::try_from(self.document.len()).is_err()
        {
            return Err(SignedError::Malformed("a field is too long".into()));
        }
        let ok = Verifier::new_without_digest(&key)
            .and_then(|mut v| v.verify_oneshot(&signature, &self.signed_bytes()))
            .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(SignedError::BadSignature)
        }
    }

    /// [`Signed::check`], then that the document is meant for this use:
    /// delivered as `kind`, to `pin`, at `now` (Unix seconds) within its
    /// validity, allowing [`CLOCK_SKEW_SECS`] before `issued_at`.
    pub fn check_for(
        &self,
        trusted: Option<&str>,
        kind: &str,
        pin: Pin,
        now: u64,
    ) -> Result<(), SignedError> {
        self.check(trusted)?;
        if self.kind != kind {
            return Err(SignedError::WrongKind {
                signed: self.kind.clone(),
                delivered: kind.to_owned(),
            });
        }
        if !self.targets.contains(&pin) {
            return Err(SignedError::WrongDevice(pin));
        }
        if now > self.expires_at {
            return Err(SignedError::Expired {
                expires_at: self.expires_at,
                now,
            });
        }
        if self.issued_at > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(SignedError::NotYetValid {
                issued_at: self.issued_at,
                now,
            });
        }
        Ok(())
    }
}

fn signed_bytes(
    kind: &str,
    targets: &[Pin],
    issued_at: u64,
    expires_at: u64,
    id: u64,
    document: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + kind.len() + 4 * targets.len() + document.len());
    out.extend_from_slice(SIGNED_LABEL);
    // Lengths beyond the prefixes are refused by `check`; saturating here
    // only keeps the encoding total.
    out.push(u8::try_from(kind.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(
        &u16::try_from(targets.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    for pin in targets {
        out.extend_from_slice(&pin.0.to_be_bytes());
    }
    out.extend_from_slice(&issued_at.to_be_bytes());
    out.extend_from_slice(&expires_at.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(
        &u32::try_from(document.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(document.as_bytes());
    out
}

/// An IT administration command, the `document` of a [`Signed`] of kind
/// `admin_command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandDocument {
    /// The command's number on the server.
    pub id: i64,
    #[serde(flatten)]
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Set the device password and lock the device.
    Lock { password: String },
    /// Delete all device data, after `delay_secs`.
    WipeAll {
        #[serde(default)]
        delay_secs: u64,
    },
    /// Delete only work data (enterprise mail and organizer data); the
    /// device stays activated.
    WipeWork,
}

impl CommandDocument {
    pub fn from_document(document: &str) -> Result<CommandDocument, SignedError> {
        serde_json::from_str(document).map_err(|e| SignedError::Malformed(e.to_string()))
    }
}

/// The service book records a device receives after its IT policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceBooks {
    /// The user's address, for "Your email address … is now enabled".
    pub email: String,
    pub books: Vec<ServiceBook>,
}

/// One service book record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceBook {
    /// The service: `CMIME`, `CICAL`, `SYNC`, `IPPP`, `BrowserConfig`,
    /// `ALP` or `BBIM`.
    pub cid: String,
    /// A name for the user.
    pub name: String,
    /// The enterprise server the service belongs to.
    pub uid: String,
    /// What the service needs (addresses, limits, homepage, …).
    pub settings: BTreeMap<String, String>,
}

impl ServiceBooks {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<ServiceBooks, SignedError> {
        serde_json::from_slice(bytes).map_err(|e| SignedError::Malformed(e.to_string()))
    }

    /// What the device shows once they are installed (seed step 12).
    pub fn enabled_message(&self) -> String {
        format!(
            "Services Received. Your email address, {} is now enabled.",
            self.email
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use openssl::sign::Signer;

    const NOW: u64 = 1_800_000_000;

    fn binding(kind: &str) -> Binding {
        Binding {
            kind: kind.to_owned(),
            targets: vec![Pin(0x2A3B_4C5D)],
            issued_at: NOW,
            expires_at: NOW + 3600,
            id: 42,
        }
    }

    fn signed_with(key: &PKey<openssl::pkey::Private>, binding: Binding, document: &str) -> Signed {
        let public = key.raw_public_key().unwrap();
        Signed::seal(binding, document.to_owned(), &public, |bytes| {
            Signer::new_without_digest(key).and_then(|mut s| s.sign_oneshot_to_vec(bytes))
        })
        .unwrap()
    }

    fn signed(document: &str) -> (Signed, String) {
        let key = PKey::generate_ed25519().unwrap();
        let s = signed_with(&key, binding(KIND_IT_POLICY), document);
        let trusted = s.domain_key.clone();
        (s, trusted)
    }

    #[test]
    fn first_policy_is_taken_then_only_the_same_domain() {
        let (first, trusted) = signed(r#"{"rules":{}}"#);
        first.check(None).unwrap();
        first.check(Some(&trusted)).unwrap();
        let (other, _) = signed(r#"{"rules":{"camera":false}}"#);
        assert_eq!(other.check(Some(&trusted)), Err(SignedError::OtherDomain));
        let mut altered = first.clone();
        altered.document = r#"{"rules":{"x":1}}"#.into();
        assert_eq!(
            altered.check(Some(&trusted)),
            Err(SignedError::BadSignature)
        );
    }

    #[test]
    fn every_bound_field_is_covered_by_the_signature() {
        let (good, trusted) = signed(r#"{"rules":{}}"#);
        good.check(Some(&trusted)).unwrap();
        type Change = Box<dyn Fn(&mut Signed)>;
        let changes: Vec<(&str, Change)> = vec![
            ("kind", Box::new(|s| s.kind = KIND_ADMIN_COMMAND.into())),
            ("targets", Box::new(|s| s.targets = vec![Pin(1)])),
            ("added target", Box::new(|s| s.targets.push(Pin(1)))),
            ("issued_at", Box::new(|s| s.issued_at += 1)),
            ("expires_at", Box::new(|s| s.expires_at += 1)),
            ("id", Box::new(|s| s.id += 1)),
            ("document", Box::new(|s| s.document.push(' '))),
        ];
        for (field, change) in changes {
            let mut altered = good.clone();
            change(&mut altered);
            assert_eq!(
                altered.check(Some(&trusted)),
                Err(SignedError::BadSignature),
                "changing {field} must break the signature"
            );
        }
    }

    #[test]
    fn the_encoding_is_domain_separated_and_unambiguous() {
        let (s, _) = signed("{}");
        let bytes = s.signed_bytes();
        assert!(bytes.starts_with(SIGNED_LABEL));
        // A kind that swallows the next field's bytes encodes differently.
        let mut shifted = s.clone();
        shifted.kind = format!("{}\u{0}", s.kind);
        assert_ne!(shifted.signed_bytes(), bytes);
        // The bare document (what version 0 signed) is never what is signed.
        assert_ne!(bytes, s.document.as_bytes());
    }

    #[test]
    fn use_checks_name_what_is_wrong() {
        let key = PKey::generate_ed25519().unwrap();
        let s = signed_with(&key, binding(KIND_ADMIN_COMMAND), "{}");
        let pin = Pin(0x2A3B_4C5D);
        s.check_for(None, KIND_ADMIN_COMMAND, pin, NOW).unwrap();
        let e = s.check_for(None, KIND_IT_POLICY, pin, NOW).unwrap_err();
        assert_eq!(e.code(), codes::SIGNED_WRONG_KIND, "{e}");
        let e = s
            .check_for(None, KIND_ADMIN_COMMAND, Pin(7), NOW)
            .unwrap_err();
        assert_eq!(e.code(), codes::SIGNED_WRONG_DEVICE, "{e}");
        let e = s
            .check_for(None, KIND_ADMIN_COMMAND, pin, NOW + 3601)
            .unwrap_err();
        assert_eq!(e.code(), codes::SIGNED_EXPIRED, "{e}");
        s.check_for(None, KIND_ADMIN_COMMAND, pin, NOW + 3600)
            .unwrap();
        // A device clock up to the skew margin behind is fine; further is not.
        s.check_for(None, KIND_ADMIN_COMMAND, pin, NOW - CLOCK_SKEW_SECS)
            .unwrap();
        let e = s
            .check_for(None, KIND_ADMIN_COMMAND, pin, NOW - CLOCK_SKEW_SECS - 1)
            .unwrap_err();
        assert_eq!(e.code(), codes::SIGNED_EXPIRED, "{e}");
        let mut unsigned = s.clone();
        unsigned.signature = "00".repeat(64);
        let e = unsigned
            .check_for(None, KIND_ADMIN_COMMAND, pin, NOW)
            .unwrap_err();
        assert_eq!(e.code(), codes::SIGNATURE_REJECTED, "{e}");
    }
}
