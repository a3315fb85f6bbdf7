//! Wireless enterprise activation on the wire (seed: "Activating a
//! BlackBerry smartphone over the wireless network", steps 3–9).
//!
//! ```text
//! device                     relay              mail server        server (Messaging Agent → Policy Service)
//!   │ send_mail{etp.dat} ──────▶ │ ── SMTP ──────▶ │ ◀──── IMAP ──────── │ finds the request, removes it
//!   │ ◀──────────── activation: challenge {spake, server_key, key_id, request} ──── │ remembers the exchange
//!   │ ──────────── activation: confirm {confirm} ───────────────────────────────▶ │ checks it, stores the key
//!   │ ◀──────────── activation: verified {confirm} ─────────────────────────────── │ then IT policy, service books
//! ```
//!
//! **Password-authenticated key exchange.** SPAKE2 over Ed25519 (the
//! `spake2` crate). The password enters only through a memory-hard secret,
//! `w = argon2id(password, salt = SHA-256("bramble-activation/1" ‖
//! lower(e-mail))[..16])`, which is what the server keeps (sealed) instead
//! of the password. The device is side A with identity `device <PIN>`, the
//! server side B with identity `server <e-mail>`. A passive eavesdropper who
//! captures `etp.dat` and every packet learns nothing to test password
//! guesses against: every value derived from the password is masked by a
//! Diffie-Hellman secret it does not know. The device confirms first and
//! the server's own confirmation comes only in `verified`, so whoever sent
//! a request learns nothing from the challenge either: a password guess is
//! tested only by a confirmation the server checks, one guess per
//! exchange, and the server counts a wrong one against the password's five
//! attempts.
//!
//! **Transport key with forward secrecy.** Each side also brings an
//! ephemeral X25519 key; both are thrown away after the exchange. The keys
//! are derived with HKDF-SHA256 from `K_spake ‖ X25519(shared)`, salted with
//! the transcript hash `SHA-256(etp.dat ‖ spake_b ‖ server_key ‖ key_id)`:
//! `confirm server`, `confirm device` (HMAC-SHA256 keys for the two
//! confirmations) and `transport key` (the AES-256-GCM key of
//! [`crate::envelope`]). Learning the password later does not open recorded
//! traffic. Key regeneration ([`ActivationMessage::Rekey`]) runs the same
//! ephemeral agreement under the current key.

use hkdf::Hkdf;
use openssl::derive::Deriver;
use openssl::pkey::{Id, PKey, Private};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::control::{hex, hmac_hex, proofs_match};
use crate::envelope::TransportKey;
use crate::frame::Frame;
use crate::{ContentType, Pin, RefId};

/// Name of the attachment that carries the request.
pub const ETP_FILE: &str = "etp.dat";
/// Subject of the activation request e-mail.
pub const REQUEST_SUBJECT: &str = "Bramble enterprise activation request";
/// `format` of [`EtpRequest`].
pub const ETP_FORMAT: &str = "bramble-etp/1";
/// Largest `etp.dat` accepted.
pub const MAX_ETP_LEN: usize = 8 * 1024;

/// The contents of `etp.dat` (JSON): who the device is, how to reach it,
/// its ephemeral public key and the first PAKE message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtpRequest {
    pub format: String,
    pub pin: Pin,
    /// The address the user typed; the server checks it is the mailbox the
    /// request arrived in.
    pub email: String,
    /// Routing information: the device is reached by its PIN through the
    /// relay it is connected to.
    pub relay: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub os_version: String,
    /// The device's ephemeral X25519 public key (hex).
    pub device_key: String,
    /// SPAKE2 message of side A (hex).
    pub spake: String,
}

impl EtpRequest {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<EtpRequest, ActivationError> {
        if bytes.len() > MAX_ETP_LEN {
            return Err(ActivationError::Malformed(format!(
                "etp.dat of {} bytes exceeds {MAX_ETP_LEN}",
                bytes.len()
            )));
        }
        let request: EtpRequest = serde_json::from_slice(bytes)
            .map_err(|e| ActivationError::Malformed(format!("etp.dat is not readable: {e}")))?;
        if request.format != ETP_FORMAT {
            return Err(ActivationError::Malformed(format!(
                "etp.dat has format `{}`, expected `{ETP_FORMAT}`",
                request.format
            )));
        }
        Ok(request)
    }
}

/// Activation packets between server and device (content type
/// `activation`, plain JSON: nothing in them is secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActivationMessage {
    /// Server → device: the PAKE answer, the server's ephemeral key, the id
    /// the new transport key will have, and the request it answers
    /// ([`request_digest`] of its `etp.dat`). It carries no key
    /// confirmation: that would let whoever made the request test a
    /// password guess offline.
    Challenge {
        spake: String,
        server_key: String,
        key_id: u32,
        request: String,
    },
    /// Device → server, on the challenge's RefID: the device's key
    /// confirmation, sent before the device trusts the key.
    Confirm { confirm: String },
    /// Obsolete (devices sent it when the challenge carried the server's
    /// confirmation). A server logs it and changes nothing: anyone can send
    /// it under any PIN.
    Mismatch,
    /// Server → device: the transport key is stored; services follow.
    /// `confirm` is the server's key confirmation, which the device checks
    /// before it keeps the key.
    Verified { confirm: String },
    /// Server → device: the request or the confirmation was not accepted;
    /// `message` is for the user (expired or exhausted password, unknown
    /// address, …). `request` names the request refused ([`request_digest`]),
    /// `confirm` the confirmation refused, so a device ignores refusals of
    /// what someone else sent under its PIN.
    Refused {
        code: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        confirm: Option<String>,
    },
    /// Inside the server only: a request that arrived by e-mail, handed
    /// from the Messaging Agent to the Policy Service.
    Request { mailbox: String, etp: String },
    /// Key regeneration, server → device, sealed with the current key: the
    /// server's ephemeral key and the id of the next key.
    Rekey { server_key: String, key_id: u32 },
    /// Key regeneration, device → server, sealed with the current key: the
    /// device's ephemeral key and its confirmation under the new key.
    RekeyReply {
        device_key: String,
        key_id: u32,
        confirm: String,
    },
    /// Device → server, sealed: the user asked for a new key.
    RekeyRequest,
    /// Key regeneration, server → device, sealed with the new key: the
    /// server uses it from now on; the device makes it current.
    RekeyDone { key_id: u32 },
}

/// Largest activation packet accepted.
pub const MAX_ACTIVATION_LEN: usize = 16 * 1024;

impl ActivationMessage {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<ActivationMessage, ActivationError> {
        if bytes.len() > MAX_ACTIVATION_LEN {
            return Err(ActivationError::Malformed(format!(
                "activation packet of {} bytes exceeds {MAX_ACTIVATION_LEN}",
                bytes.len()
            )));
        }
        serde_json::from_slice(bytes)
            .map_err(|e| ActivationError::Malformed(format!("activation packet: {e}")))
    }

    /// A plain activation packet about (`pin`, `ref_id`).
    pub fn frame(&self, pin: Pin, ref_id: RefId) -> Frame {
        Frame::single(ContentType::Activation, pin, ref_id, self.to_bytes())
    }
}

/// Why an activation step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivationError {
    #[error("malformed activation data: {0}")]
    Malformed(String),
    #[error(
        "the key confirmation does not match: the activation password is not the one that was set"
    )]
    Mismatch,
    #[error("cryptographic failure: {0}")]
    Crypto(String),
}

fn crypto<E: std::fmt::Display>(e: E) -> ActivationError {
    ActivationError::Crypto(e.to_string())
}

fn unhex(text: &str, what: &str) -> Result<Vec<u8>, ActivationError> {
    crate::control::unhex(text)
        .ok_or_else(|| ActivationError::Malformed(format!("{what} is not hex")))
}

/// Names a request in the challenge and refusals that answer it: the
/// SHA-256 of its `etp.dat`, hex.
pub fn request_digest(etp: &[u8]) -> String {
    hex(&Sha256::digest(etp))
}

/// A random id for a new transport key: positive as a database integer
/// (31 bits) and never 0.
pub fn fresh_key_id() -> Result<u32, ActivationError> {
    let mut bytes = [0u8; 4];
    openssl::rand::rand_bytes(&mut bytes).map_err(crypto)?;
    Ok((u32::from_be_bytes(bytes) & 0x7fff_ffff).max(1))
}

/// The memory-hard secret a password stands for in the exchange (what the
/// server stores, sealed, instead of the password).
pub fn password_secret(password: &str, email: &str) -> Result<[u8; 32], ActivationError> {
    let mut salt_hash = Sha256::new();
    salt_hash.update(b"bramble-activation/1");
    salt_hash.update(email.trim().to_lowercase().as_bytes());
    let salt = salt_hash.finalize();
    let mut out = [0u8; 32];
    argon2::Argon2::default()
        .hash_password_into(password.as_bytes(), &salt[..16], &mut out)
        .map_err(crypto)?;
    Ok(out)
}

fn identities(pin: Pin, email: &str) -> (Identity, Identity) {
    (
        Identity::new(format!("device {pin}").as_bytes()),
        Identity::new(format!("server {}", email.trim().to_lowercase()).as_bytes()),
    )
}

/// An ephemeral X25519 key pair.
pub struct Ephemeral(PKey<Private>);

impl std::fmt::Debug for Ephemeral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ephemeral(<redacted>)")
    }
}

impl Ephemeral {
    pub fn generate() -> Result<Ephemeral, ActivationError> {
        PKey::generate_x25519().map(Ephemeral).map_err(crypto)
    }

    /// The public half, hex.
    pub fn public_hex(&self) -> Result<String, ActivationError> {
        self.0.raw_public_key().map(|k| hex(&k)).map_err(crypto)
    }

    /// X25519 with the peer's public key (hex).
    pub fn agree(&self, peer_hex: &str) -> Result<Vec<u8>, ActivationError> {
        let peer = unhex(peer_hex, "the peer's key")?;
        let peer = PKey::public_key_from_raw_bytes(&peer, Id::X25519).map_err(|_| {
            ActivationError::Malformed("the peer's key is not an X25519 key".into())
        })?;
        let mut deriver = Deriver::new(&self.0).map_err(crypto)?;
        deriver.set_peer(&peer).map_err(crypto)?;
        // OpenSSL refuses low-order points itself; the check below is for
        // builds that do not.
        let shared = deriver.derive_to_vec().map_err(|_| {
            ActivationError::Malformed("the peer's key is a low-order point".into())
        })?;
        if shared.iter().all(|b| *b == 0) {
            return Err(ActivationError::Malformed(
                "the peer's key is a low-order point".into(),
            ));
        }
        Ok(shared)
    }
}

/// The keys both sides derive from one exchange.
pub struct SessionKeys {
    confirm_server: [u8; 32],
    confirm_device: [u8; 32],
    pub transport: TransportKey,
    transcript: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    fn derive(
        shared: &[u8],
        transcript: [u8; 32],
        key_id: u32,
    ) -> Result<SessionKeys, ActivationError> {
        let hk = Hkdf::<Sha256>::new(Some(&transcript), shared);
        let mut confirm_server = [0u8; 32];
        let mut confirm_device = [0u8; 32];
        let mut transport = [0u8; 32];
        hk.expand(b"bramble confirm server", &mut confirm_server)
            .map_err(crypto)?;
        hk.expand(b"bramble confirm device", &mut confirm_device)
            .map_err(crypto)?;
        hk.expand(b"bramble transport key", &mut transport)
            .map_err(crypto)?;
        Ok(SessionKeys {
            confirm_server,
            confirm_device,
            transport: TransportKey::new(key_id, transport),
            transcript,
        })
    }

    /// The server's confirmation.
    pub fn server_confirmation(&self) -> String {
        hmac_hex(&self.confirm_server, &[b"server", &self.transcript])
    }

    /// The device's confirmation.
    pub fn device_confirmation(&self) -> String {
        hmac_hex(&self.confirm_device, &[b"device", &self.transcript])
    }

    pub fn check_server(&self, confirm: &str) -> Result<(), ActivationError> {
        if proofs_match(&self.server_confirmation(), confirm) {
            Ok(())
        } else {
            Err(ActivationError::Mismatch)
        }
    }

    pub fn check_device(&self, confirm: &str) -> Result<(), ActivationError> {
        if proofs_match(&self.device_confirmation(), confirm) {
            Ok(())
        } else {
            Err(ActivationError::Mismatch)
        }
    }
}

fn transcript(etp: &[u8], spake_b: &str, server_key: &str, key_id: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [etp, spake_b.as_bytes(), server_key.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(key_id.to_be_bytes());
    h.finalize().into()
}

/// The device's half of an exchange in progress.
pub struct DeviceExchange {
    spake: Spake2<Ed25519Group>,
    ephemeral: Ephemeral,
    /// `etp.dat` exactly as sent.
    pub etp: Vec<u8>,
}

impl std::fmt::Debug for DeviceExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceExchange(<secret>)")
    }
}

impl DeviceExchange {
    /// Starts an activation: `etp.dat` for the request e-mail.
    pub fn start(
        password: &str,
        email: &str,
        pin: Pin,
        relay: &str,
        model: &str,
        os_version: &str,
    ) -> Result<DeviceExchange, ActivationError> {
        let w = password_secret(password, email)?;
        let (id_a, id_b) = identities(pin, email);
        let (spake, message) = Spake2::<Ed25519Group>::start_a(&Password::new(w), &id_a, &id_b);
        let ephemeral = Ephemeral::generate()?;
        let request = EtpRequest {
            format: ETP_FORMAT.to_owned(),
            pin,
            email: email.trim().to_owned(),
            relay: relay.to_owned(),
            model: model.to_owned(),
            os_version: os_version.to_owned(),
            device_key: ephemeral.public_hex()?,
            spake: hex(&message),
        };
        Ok(DeviceExchange {
            spake,
            ephemeral,
            etp: request.to_bytes(),
        })
    }

    /// The digest a challenge for this request names ([`request_digest`]).
    pub fn request(&self) -> String {
        request_digest(&self.etp)
    }

    /// Finishes with the server's challenge (check its `request` with
    /// [`DeviceExchange::request`] first): the session keys, not yet
    /// trusted. The device sends [`SessionKeys::device_confirmation`] and
    /// keeps the transport key only once the server's confirmation in
    /// `verified` checks ([`SessionKeys::check_server`]).
    pub fn finish(
        self,
        spake_b: &str,
        server_key: &str,
        key_id: u32,
    ) -> Result<SessionKeys, ActivationError> {
        let k = self
            .spake
            .finish(&unhex(spake_b, "the server's PAKE message")?)
            .map_err(|e| ActivationError::Malformed(format!("the server's PAKE message: {e:?}")))?;
        let dh = self.ephemeral.agree(server_key)?;
        SessionKeys::derive(
            &[k.as_slice(), dh.as_slice()].concat(),
            transcript(&self.etp, spake_b, server_key, key_id),
            key_id,
        )
    }
}

/// The server's answer to a request: the challenge to send, and the keys
/// to keep until the device's confirmation arrives.
#[derive(Debug)]
pub struct ServerAnswer {
    pub challenge: ActivationMessage,
    pub keys: SessionKeys,
}

/// The server's half: answers `etp` (as received) with the stored secret.
pub fn server_answer(
    secret: &[u8; 32],
    etp: &[u8],
    key_id: u32,
) -> Result<ServerAnswer, ActivationError> {
    let request = EtpRequest::from_bytes(etp)?;
    let (id_a, id_b) = identities(request.pin, &request.email);
    let (spake, message) = Spake2::<Ed25519Group>::start_b(&Password::new(secret), &id_a, &id_b);
    let k = spake
        .finish(&unhex(&request.spake, "the device's PAKE message")?)
        .map_err(|e| ActivationError::Malformed(format!("the device's PAKE message: {e:?}")))?;
    let ephemeral = Ephemeral::generate()?;
    let server_key = ephemeral.public_hex()?;
    let dh = ephemeral.agree(&request.device_key)?;
    let spake_b = hex(&message);
    let keys = SessionKeys::derive(
        &[k.as_slice(), dh.as_slice()].concat(),
        transcript(etp, &spake_b, &server_key, key_id),
        key_id,
    )?;
    Ok(ServerAnswer {
        challenge: ActivationMessage::Challenge {
            spake: spake_b,
            server_key,
            key_id,
            request: request_digest(etp),
        },
        keys,
    })
}

/// Key regeneration: the new key from an ephemeral agreement bound to the
/// current key (both sides call this with their own ephemeral key and the
/// peer's public key).
pub fn rekey(
    current: &TransportKey,
    ephemeral: &Ephemeral,
    peer_key: &str,
    server_key: &str,
    device_key: &str,
    key_id: u32,
) -> Result<SessionKeys, ActivationError> {
    let dh = ephemeral.agree(peer_key)?;
    let mut h = Sha256::new();
    h.update(b"bramble rekey");
    h.update(current.id.to_be_bytes());
    h.update(server_key.as_bytes());
    h.update(device_key.as_bytes());
    h.update(key_id.to_be_bytes());
    SessionKeys::derive(
        &[current.secret().as_slice(), dh.as_slice()].concat(),
        h.finalize().into(),
        key_id,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    const EMAIL: &str = "Alice@Example.org";

    fn challenge(message: &ActivationMessage) -> (String, String, u32, String) {
        let ActivationMessage::Challenge {
            spake,
            server_key,
            key_id,
            request,
        } = message.clone()
        else {
            panic!("not a challenge: {message:?}");
        };
        (spake, server_key, key_id, request)
    }

    fn exchange(device_password: &str, server_password: &str) -> Result<(), ActivationError> {
        let device =
            DeviceExchange::start(device_password, EMAIL, Pin(0x2A3B_4C5D), "relay", "m", "1")?;
        let secret = password_secret(server_password, "alice@example.org")?;
        let answer = server_answer(&secret, &device.etp, 7)?;
        let (spake, server_key, key_id, request) = challenge(&answer.challenge);
        assert_eq!(request, device.request(), "the challenge names the request");
        let keys = device.finish(&spake, &server_key, key_id)?;
        // The device confirms first; the server answers with its own.
        answer.keys.check_device(&keys.device_confirmation())?;
        keys.check_server(&answer.keys.server_confirmation())?;
        assert_eq!(keys.transport, answer.keys.transport);
        assert_eq!(keys.transport.id, 7);
        Ok(())
    }

    #[test]
    fn the_same_password_gives_both_sides_the_same_key() {
        exchange("kx7m2qpa", "kx7m2qpa").unwrap();
    }

    #[test]
    fn a_wrong_password_is_a_mismatch() {
        assert_eq!(
            exchange("kx7m2qpb", "kx7m2qpa").unwrap_err(),
            ActivationError::Mismatch
        );
    }

    #[test]
    fn the_challenge_names_its_request_and_carries_no_confirmation() {
        let device = DeviceExchange::start("p", EMAIL, Pin(1), "relay", "", "").unwrap();
        let secret = password_secret("p", EMAIL).unwrap();
        let answer = server_answer(&secret, &device.etp, 3).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&answer.challenge.to_bytes()).unwrap();
        let mut fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(fields, ["key_id", "request", "server_key", "spake", "type"]);
        assert_eq!(
            json["request"].as_str(),
            Some(hex(&Sha256::digest(&device.etp)).as_str())
        );
        // Another request's digest differs, so a device tells a challenge
        // for someone else's request apart.
        let other = DeviceExchange::start("p", EMAIL, Pin(1), "relay", "", "").unwrap();
        assert_ne!(other.request(), device.request());
    }

    #[test]
    fn a_requester_with_a_wrong_guess_cannot_check_it_against_the_challenge() {
        // The requester knows its own scalar and ephemeral key, so it can
        // finish the exchange; with the wrong password its keys differ from
        // the server's and only a confirmation the server checks (and
        // counts) tells it so.
        let device = DeviceExchange::start("guess", EMAIL, Pin(1), "relay", "", "").unwrap();
        let secret = password_secret("right", EMAIL).unwrap();
        let answer = server_answer(&secret, &device.etp, 1).unwrap();
        let (spake, server_key, key_id, _) = challenge(&answer.challenge);
        let keys = device.finish(&spake, &server_key, key_id).unwrap();
        assert_ne!(keys.transport, answer.keys.transport);
        assert_eq!(
            answer.keys.check_device(&keys.device_confirmation()),
            Err(ActivationError::Mismatch)
        );
    }

    #[test]
    fn an_eavesdropper_cannot_tell_a_right_guess_from_a_wrong_one() {
        // Everything on the wire of one exchange with the right password.
        let device = DeviceExchange::start("right", EMAIL, Pin(1), "relay", "", "").unwrap();
        let etp = device.etp.clone();
        let secret = password_secret("right", EMAIL).unwrap();
        let answer = server_answer(&secret, &etp, 1).unwrap();
        let (spake, server_key, key_id, _) = challenge(&answer.challenge);
        let keys = device.finish(&spake, &server_key, key_id).unwrap();
        let device_confirm = keys.device_confirmation();
        let server_confirm = answer.keys.server_confirmation();
        // The eavesdropper replays the device's side with each guess, but
        // has neither the device's PAKE scalar nor its X25519 key: neither
        // recorded confirmation checks, for the right guess as for a wrong
        // one.
        for guess in ["right", "wrong"] {
            let attacker = DeviceExchange::start(guess, EMAIL, Pin(1), "relay", "", "").unwrap();
            let attacker = DeviceExchange {
                etp: etp.clone(),
                ..attacker
            };
            let guessed = attacker.finish(&spake, &server_key, key_id).unwrap();
            assert_eq!(
                guessed.check_server(&server_confirm),
                Err(ActivationError::Mismatch)
            );
            assert_ne!(guessed.device_confirmation(), device_confirm);
        }
    }

    #[test]
    fn refusals_name_what_they_refuse_only_when_told() {
        let plain = ActivationMessage::Refused {
            code: "NO_PASSWORD".into(),
            message: "m".into(),
            request: None,
            confirm: None,
        };
        assert_eq!(
            String::from_utf8(plain.to_bytes()).unwrap(),
            r#"{"type":"refused","code":"NO_PASSWORD","message":"m"}"#
        );
        let named = ActivationMessage::from_bytes(
            br#"{"type":"refused","code":"WRONG_PASSWORD","message":"m","confirm":"ab"}"#,
        )
        .unwrap();
        assert!(
            matches!(named, ActivationMessage::Refused { confirm: Some(c), request: None, .. } if c == "ab")
        );
    }

    #[test]
    fn malformed_requests_are_refused_in_words() {
        let secret = [0u8; 32];
        for bad in [&b"not json"[..], br#"{"format":"other"}"#] {
            assert!(matches!(
                server_answer(&secret, bad, 1),
                Err(ActivationError::Malformed(_))
            ));
        }
        let mut request = EtpRequest::from_bytes(
            &DeviceExchange::start("p", EMAIL, Pin(1), "", "", "")
                .unwrap()
                .etp,
        )
        .unwrap();
        request.device_key = "00".repeat(32);
        let err = server_answer(&secret, &request.to_bytes(), 1).unwrap_err();
        assert!(matches!(err, ActivationError::Malformed(_)), "{err}");
    }

    #[test]
    fn rekey_gives_both_sides_a_new_key() {
        let current = TransportKey::new(1, [9u8; 32]);
        let server = Ephemeral::generate().unwrap();
        let device = Ephemeral::generate().unwrap();
        let s_pub = server.public_hex().unwrap();
        let d_pub = device.public_hex().unwrap();
        let a = rekey(&current, &server, &d_pub, &s_pub, &d_pub, 2).unwrap();
        let b = rekey(&current, &device, &s_pub, &s_pub, &d_pub, 2).unwrap();
        assert_eq!(a.transport, b.transport);
        assert_ne!(a.transport.secret(), current.secret());
        a.check_device(&b.device_confirmation()).unwrap();
    }
}
