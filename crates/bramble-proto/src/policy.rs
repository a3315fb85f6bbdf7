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

/// A document signed by the domain key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// `it_policy` or `admin_command`.
    pub kind: String,
    /// Canonical JSON (keys sorted, no whitespace) of the policy's rules or
    /// of the command.
    pub document: String,
    /// Ed25519 signature over `document`, hex.
    pub signature: String,
    /// The domain's public key, hex.
    pub domain_key: String,
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
}

impl Signed {
    pub fn new(kind: &str, document: String, signature: &[u8], domain_key: &[u8]) -> Signed {
        Signed {
            kind: kind.to_owned(),
            document,
            signature: hex(signature),
            domain_key: hex(domain_key),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Signed, SignedError> {
        serde_json::from_slice(bytes).map_err(|e| SignedError::Malformed(e.to_string()))
    }

    /// Checks the signature, and that the key is `trusted` when the device
    /// already has a domain key.
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
        let ok = Verifier::new_without_digest(&key)
            .and_then(|mut v| v.verify_oneshot(&signature, self.document.as_bytes()))
            .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(SignedError::BadSignature)
        }
    }
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

    fn signed(document: &str) -> (Signed, String) {
        let key = PKey::generate_ed25519().unwrap();
        let mut signer = Signer::new_without_digest(&key).unwrap();
        let signature = signer.sign_oneshot_to_vec(document.as_bytes()).unwrap();
        let public = key.raw_public_key().unwrap();
        let s = Signed::new("it_policy", document.to_owned(), &signature, &public);
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
}
