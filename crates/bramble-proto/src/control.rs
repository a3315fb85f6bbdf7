//! Plain messages between neighbours on a link, carried as JSON in
//! [`ContentType::Control`](crate::ContentType::Control) packets, and the
//! [`ErrorReport`] of [`ContentType::Error`](crate::ContentType::Error)
//! packets. They are not end-to-end encrypted: the server↔relay link is TLS,
//! and nothing here is secret.
//!
//! SRP link authentication (server → relay, after TLS is up):
//! 1. server: `srp_hello {srp_id, nonce}` (32 random bytes, hex)
//! 2. relay: `srp_challenge {nonce, proof}` with
//!    `proof = HMAC-SHA256(srp_key, "relay" || srp_id || server_nonce || relay_nonce)`
//!    — the relay proves it knows the key first, so a server never answers
//!    an impostor.
//! 3. server checks it, then: `srp_response {proof}` with
//!    `proof = HMAC-SHA256(srp_key, "server" || srp_id || server_nonce || relay_nonce)`
//! 4. relay: `srp_accepted` or `srp_rejected {reason}` and closes.
//! 5. server: `server_info {…}` (the "basic information packet").
//!
//! Device link (device → relay, or device → Router on the LAN):
//! `device_hello {pin, …}`; the Router (LAN) answers `lan_challenge
//! {nonce}` and the device proves it holds its transport key with
//! `lan_proof {key_id, proof = HMAC-SHA256(transport_key, "lan" || PIN (8
//! hex digits) || nonce)}`; then `welcome`. The relay answers
//! `device_challenge {nonce}`, and the device proves it holds its
//! transport key with `device_proof {key_id, proof}` under the key's
//! [`relay_key`] (which its server registered with the relay through
//! `device_keys`), or, with no key yet, asks for an `activation_only`
//! link; then `welcome`.

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use serde::{Deserialize, Serialize};

use crate::frame::Frame;
use crate::{ContentType, Pin, RefId};

/// Largest control or error payload accepted.
pub const MAX_CONTROL_LEN: usize = 16 * 1024;

/// What happened to a packet in the relay (reported to the server with the
/// packet's PIN and RefID in the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportStatus {
    /// Handed to the device's connection.
    DeliveredToDevice,
    /// The device is offline; stored until it connects or the entry expires.
    StoredForOfflineDevice,
    /// Stored too long; dropped.
    Expired,
    /// No device has ever registered this PIN.
    UnknownPin,
    /// The device's store is full; dropped.
    StoreFull,
}

/// Link control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    SrpHello {
        srp_id: String,
        nonce: String,
    },
    SrpChallenge {
        nonce: String,
        proof: String,
    },
    SrpResponse {
        proof: String,
    },
    SrpAccepted,
    SrpRejected {
        /// For a person; not to be parsed.
        reason: String,
        /// For programs: one of [`reject_code`]. Absent from older relays.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
    /// The server's basic information packet, sent first on a new link.
    ServerInfo {
        server_name: String,
        version: String,
    },
    DeviceHello {
        pin: Pin,
        /// The SRP ID of the device's enterprise server, once it has one
        /// (from activation); informative: the relay routes by the keys
        /// servers register.
        #[serde(default)]
        srp_id: Option<String>,
        #[serde(default)]
        model: String,
        #[serde(default)]
        os_version: String,
    },
    LanChallenge {
        nonce: String,
    },
    LanProof {
        key_id: u32,
        proof: String,
    },
    /// Relay → device, after `device_hello`: prove the key.
    DeviceChallenge {
        nonce: String,
    },
    /// Device → relay: [`device_proof`] of the relay key derived from the
    /// transport key `key_id`; in the handshake, or later on an
    /// activation-only link to make it a full one.
    DeviceProof {
        key_id: u32,
        proof: String,
    },
    /// Device → relay, answering `device_challenge`: the device has no
    /// transport key yet; the link carries activation traffic only.
    ActivationOnly,
    /// Server → relay over the SRP link: the relay keys of devices, each
    /// entry replacing what the relay held for that PIN (no keys: the
    /// relay forgets them). `reset`: the relay first forgets every key
    /// this server registered before (sent first after the link is up).
    DeviceKeys {
        #[serde(default)]
        reset: bool,
        devices: Vec<DeviceRelayKeys>,
    },
    Welcome,
    /// The link is refused; the reason is for a person.
    Refused {
        reason: String,
    },
    /// Relay → server, about the packet whose PIN and RefID are in the header.
    Transport {
        status: TransportStatus,
    },
    /// Device → relay: e-mail an activation request to the address the
    /// user typed (seed step 5). `attachment` is base64.
    SendMail {
        to: String,
        subject: String,
        attachment_name: String,
        attachment: String,
    },
    /// Relay → device: the mail server accepted the request for `to`. A
    /// refusal comes as an error packet `MAIL_NOT_SENT` on the same RefID.
    MailSent {
        to: String,
    },
    Ping,
    Pong,
}

/// One device's entry in `device_keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRelayKeys {
    pub pin: Pin,
    pub keys: Vec<RelayKeyEntry>,
}

/// A relay key by the id of the transport key it is derived from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayKeyEntry {
    pub key_id: u32,
    /// 32 bytes as 64 hex digits.
    pub key: String,
}

/// Devices per `device_keys` packet (a device with three keys takes about
/// 300 bytes of JSON, well inside [`MAX_CONTROL_LEN`]).
pub const DEVICE_KEYS_PER_PACKET: usize = 40;

/// Machine-readable codes of `srp_rejected`.
pub mod reject_code {
    /// The server's proof does not match: the SRP keys differ.
    pub const BAD_KEY: &str = "BAD_KEY";
    /// The relay has no account for this SRP ID.
    pub const UNKNOWN_SRP_ID: &str = "UNKNOWN_SRP_ID";
    /// Too many failed or flapping connections; try again later.
    pub const LOCKED_OUT: &str = "LOCKED_OUT";
    /// The handshake did not follow the protocol.
    pub const PROTOCOL: &str = "PROTOCOL";
}

/// Why a control payload is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("control payload of {0} bytes exceeds {MAX_CONTROL_LEN}")]
    TooLarge(usize),
    #[error("control payload is not valid: {0}")]
    Invalid(String),
    #[error("expected a control packet, got {0:?}")]
    WrongType(ContentType),
}

impl Control {
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_payload(payload: &[u8]) -> Result<Control, ControlError> {
        if payload.len() > MAX_CONTROL_LEN {
            return Err(ControlError::TooLarge(payload.len()));
        }
        serde_json::from_slice(payload).map_err(|e| ControlError::Invalid(e.to_string()))
    }

    /// A control packet about (`pin`, `ref_id`).
    pub fn frame(&self, pin: Pin, ref_id: RefId) -> Frame {
        Frame::single(ContentType::Control, pin, ref_id, self.to_payload())
    }

    /// The control message in `frame`.
    pub fn from_frame(frame: &Frame) -> Result<Control, ControlError> {
        if frame.content_type != ContentType::Control {
            return Err(ControlError::WrongType(frame.content_type));
        }
        Control::from_payload(&frame.payload)
    }
}

/// The payload of an error packet: what went wrong with the packet whose
/// RefID is in the header, in words for the device's user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub code: String,
    pub message: String,
}

impl ErrorReport {
    pub const UNDECRYPTABLE: &'static str = "UNDECRYPTABLE";
    /// The relay could not e-mail an activation request.
    pub const MAIL_NOT_SENT: &'static str = "MAIL_NOT_SENT";
    /// The device refused an IT policy or command not signed by its
    /// enterprise domain (sent as a [`crate::ContentType::Refusal`]).
    pub const SIGNATURE_REJECTED: &'static str = "SIGNATURE_REJECTED";

    pub fn frame(&self, pin: Pin, ref_id: RefId) -> Frame {
        Frame::single(
            ContentType::Error,
            pin,
            ref_id,
            serde_json::to_vec(self).unwrap_or_default(),
        )
    }

    pub fn from_payload(payload: &[u8]) -> Result<ErrorReport, ControlError> {
        if payload.len() > MAX_CONTROL_LEN {
            return Err(ControlError::TooLarge(payload.len()));
        }
        serde_json::from_slice(payload).map_err(|e| ControlError::Invalid(e.to_string()))
    }
}

/// 32 random bytes as hex, for challenge nonces. If the system's random
/// source fails, the nonce is empty, which every peer refuses — never a
/// predictable one.
pub fn nonce() -> String {
    let mut bytes = [0u8; 32];
    match openssl::rand::rand_bytes(&mut bytes) {
        Ok(()) => hex(&bytes),
        Err(_) => String::new(),
    }
}

/// HMAC-SHA256 over the parts, as hex.
pub fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mac = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let pkey = PKey::hmac(key)?;
        let mut signer = Signer::new(MessageDigest::sha256(), &pkey)?;
        for part in parts {
            signer.update(part)?;
        }
        signer.sign_to_vec()
    };
    mac().map(|m| hex(&m)).unwrap_or_default()
}

/// Compares two proofs in constant time.
pub fn proofs_match(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && openssl::memcmp::eq(a.as_bytes(), b.as_bytes())
}

/// The relay's proof in the SRP handshake.
pub fn srp_relay_proof(key: &[u8], srp_id: &str, server_nonce: &str, relay_nonce: &str) -> String {
    hmac_hex(
        key,
        &[
            b"relay",
            srp_id.as_bytes(),
            server_nonce.as_bytes(),
            relay_nonce.as_bytes(),
        ],
    )
}

/// The server's proof in the SRP handshake.
pub fn srp_server_proof(key: &[u8], srp_id: &str, server_nonce: &str, relay_nonce: &str) -> String {
    hmac_hex(
        key,
        &[
            b"server",
            srp_id.as_bytes(),
            server_nonce.as_bytes(),
            relay_nonce.as_bytes(),
        ],
    )
}

/// A device's proof of its transport key on the LAN path.
pub fn lan_proof(transport_key: &[u8], pin: Pin, nonce: &str) -> String {
    hmac_hex(
        transport_key,
        &[b"lan", pin.to_string().as_bytes(), nonce.as_bytes()],
    )
}

/// The key a device proves to the relay, derived one way from its
/// transport key: HKDF-Expand-SHA256 (RFC 5869) with the transport key as
/// the pseudorandom key, info `"bramble relay key"`, 32 bytes — that is,
/// HMAC-SHA256(transport key, "bramble relay key" || 0x01). The relay holds
/// it and can check proofs, but cannot derive the transport key from it,
/// open envelopes or answer a LAN challenge.
pub fn relay_key(transport_key: &[u8]) -> Option<[u8; 32]> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::from_prk(transport_key).ok()?;
    let mut out = [0u8; 32];
    hk.expand(b"bramble relay key", &mut out).ok()?;
    Some(out)
}

/// A device's proof to the relay: HMAC-SHA256(relay key, "relay-device" ||
/// PIN (8 upper-case hex digits) || nonce (the 64 hex digits received)).
pub fn device_proof(relay_key: &[u8], pin: Pin, nonce: &str) -> String {
    hmac_hex(
        relay_key,
        &[
            b"relay-device",
            pin.to_string().as_bytes(),
            nonce.as_bytes(),
        ],
    )
}

/// Whether `proof` is the device's proof for `nonce` under `relay_key`
/// (constant time; an empty proof never matches).
pub fn device_proof_matches(relay_key: &[u8], pin: Pin, nonce: &str, proof: &str) -> bool {
    proofs_match(proof, &device_proof(relay_key, pin, nonce))
}

/// Bytes from lower- or upper-case hex; `None` if it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn control_json_is_tagged() {
        let c = Control::Transport {
            status: TransportStatus::DeliveredToDevice,
        };
        let text = String::from_utf8(c.to_payload()).unwrap();
        assert_eq!(
            text,
            r#"{"type":"transport","status":"delivered_to_device"}"#
        );
        assert_eq!(Control::from_payload(text.as_bytes()).unwrap(), c);
        let f = c.frame(Pin(1), RefId(2));
        assert_eq!(Control::from_frame(&f).unwrap(), c);
        assert!(Control::from_payload(b"{\"type\":\"nope\"}").is_err());
        assert!(Control::from_payload(&vec![b' '; MAX_CONTROL_LEN + 1]).is_err());
    }

    #[test]
    fn relay_keys_and_device_proofs() {
        let transport: Vec<u8> = (0u8..32).collect();
        let key = relay_key(&transport).unwrap();
        // HKDF-Expand with one block is HMAC(prk, info || 0x01).
        assert_eq!(
            hex(&key),
            hmac_hex(&transport, &[b"bramble relay key", &[1]])
        );
        assert_ne!(&key[..], &transport[..]);
        let nonce = "33".repeat(32);
        let proof = device_proof(&key, Pin(0x2A3B_4C5D), &nonce);
        assert_eq!(proof.len(), 64);
        // Not a LAN proof, and bound to the PIN and the nonce.
        assert_ne!(proof, lan_proof(&transport, Pin(0x2A3B_4C5D), &nonce));
        assert_ne!(proof, lan_proof(&key, Pin(0x2A3B_4C5D), &nonce));
        assert_ne!(proof, device_proof(&key, Pin(0x2A3B_4C5E), &nonce));
        assert_ne!(
            proof,
            device_proof(&key, Pin(0x2A3B_4C5D), &"34".repeat(32))
        );
        // The worked example of docs/protocol.md.
        assert_eq!(
            hex(&key),
            "7cef444a75808a00b714fc307066fc5df3640a71b472d1e670f8ae3b157fe09a"
        );
        assert_eq!(
            device_proof(&key, Pin(0x2A3B_4C5D), &"44".repeat(32)),
            "1d575d10f3307a566127a691b1b42ba8d78991dd14726cd0797584b82a394e70"
        );
        let keys = Control::DeviceKeys {
            reset: true,
            devices: vec![DeviceRelayKeys {
                pin: Pin(0x2A3B_4C5D),
                keys: vec![RelayKeyEntry {
                    key_id: 7,
                    key: hex(&key),
                }],
            }],
        };
        assert_eq!(Control::from_payload(&keys.to_payload()).unwrap(), keys);
        assert!(Control::from_payload(br#"{"type":"device_proof","key_id":7}"#).is_err());
    }

    #[test]
    fn srp_proofs_differ_by_role_and_key() {
        let a = srp_relay_proof(b"key", "S1", "n1", "n2");
        let b = srp_server_proof(b"key", "S1", "n1", "n2");
        let c = srp_relay_proof(b"other", "S1", "n1", "n2");
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert!(proofs_match(&a, &srp_relay_proof(b"key", "S1", "n1", "n2")));
        assert!(!proofs_match(&a, &c));
        assert!(!proofs_match("", ""));
    }
}
