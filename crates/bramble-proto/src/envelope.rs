//! The encrypted envelope: the payload of every encrypted packet between the
//! server and a device (see [`ContentType::is_encrypted`]).
//!
//! Compress first (raw deflate, flate2), then encrypt with AES-256-GCM under
//! a fresh random 256-bit message key; the message key is wrapped with the
//! device transport key using AES key wrap (RFC 3394). The transport key's
//! id is in the authenticated header, so the receiver picks the right key
//! (current, pending or previous) and a message in flight during a key
//! change still opens. All primitives are openssl's.
//!
//! ```text
//! offset size  field
//!  0     1     version (1)
//!  1     1     flags (bit 0: payload is deflate-compressed)
//!  2     4     transport key id (big-endian)
//!  6     40    wrapped message key (AES-256 key wrap of 32 bytes)
//! 46     12    GCM nonce
//! 58     n     ciphertext
//! 58+n   16    GCM tag
//! ```
//!
//! Associated data: `"BRAMBLE-ENV1" || content type (1) || PIN (4) ||
//! RefID (8) || bytes 0..58`, which binds the envelope to its packet's
//! header: moved to another RefID, PIN or content type, it does not open.

use std::cell::RefCell;
use std::io::Read;

use flate2::read::DeflateDecoder;
use flate2::{Compress, Compression, FlushCompress, Status};
use openssl::aes::{unwrap_key, wrap_key, AesKey};
use openssl::rand::rand_bytes;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};

use crate::{ContentType, Pin, RefId};

pub const ENVELOPE_VERSION: u8 = 1;
const FLAG_COMPRESSED: u8 = 0b0000_0001;
const KEY_LEN: usize = 32;
const WRAPPED_LEN: usize = KEY_LEN + 8;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes before the ciphertext.
pub const HEADER_LEN: usize = 1 + 1 + 4 + WRAPPED_LEN + NONCE_LEN;
/// Smallest possible envelope (empty ciphertext).
pub const MIN_LEN: usize = HEADER_LEN + TAG_LEN;
const AAD_LABEL: &[u8] = b"BRAMBLE-ENV1";
/// Below this many bytes a payload is sent uncompressed.
const MIN_COMPRESS: usize = 64;

/// A device transport key: 256 bits and the id both sides know it by.
#[derive(Clone, PartialEq, Eq)]
pub struct TransportKey {
    pub id: u32,
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for TransportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TransportKey {{ id: {}, key: <redacted> }}", self.id)
    }
}

impl TransportKey {
    pub fn new(id: u32, key: [u8; KEY_LEN]) -> TransportKey {
        TransportKey { id, key }
    }

    /// A fresh random key.
    pub fn generate(id: u32) -> Result<TransportKey, EnvelopeError> {
        let mut key = [0u8; KEY_LEN];
        rand_bytes(&mut key).map_err(crypto)?;
        Ok(TransportKey { id, key })
    }

    pub fn from_slice(id: u32, bytes: &[u8]) -> Option<TransportKey> {
        bytes.try_into().ok().map(|key| TransportKey { id, key })
    }

    /// The key material, for sealing it at rest.
    pub fn secret(&self) -> &[u8; KEY_LEN] {
        &self.key
    }
}

/// Why an envelope could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope of {0} bytes is shorter than the minimum of {MIN_LEN}")]
    TooShort(usize),
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown envelope flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("no transport key with id {0} is known for this device")]
    UnknownKey(u32),
    #[error("the message cannot be decrypted with this device's key (wrong key, or the message was altered)")]
    Undecryptable,
    #[error("the decrypted message is not valid compressed data")]
    BadCompression,
    #[error("the message expands to more than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("cryptography failed: {0}")]
    Crypto(String),
}

fn crypto(e: openssl::error::ErrorStack) -> EnvelopeError {
    EnvelopeError::Crypto(e.to_string())
}

fn aad(content_type: ContentType, pin: Pin, ref_id: RefId, header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + 13 + header.len());
    aad.extend_from_slice(AAD_LABEL);
    aad.push(content_type as u8);
    aad.extend_from_slice(&pin.0.to_be_bytes());
    aad.extend_from_slice(&ref_id.0.to_be_bytes());
    aad.extend_from_slice(header);
    aad
}

thread_local! {
    /// One compressor per thread, reset between messages: setting up
    /// deflate's window and tables costs more than compressing a 2 KB
    /// e-mail, so reusing them matters on the server and on devices.
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
}

/// Raw deflate of `input`.
fn deflate(input: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let run = |c: &mut Compress| -> Result<Vec<u8>, EnvelopeError> {
        c.reset();
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(64));
            }
            let consumed = usize::try_from(c.total_in())
                .unwrap_or(input.len())
                .min(input.len());
            match c.compress_vec(&input[consumed..], &mut out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) => out.reserve(out.capacity().max(64)),
                Err(e) => return Err(EnvelopeError::Crypto(format!("compression failed: {e}"))),
            }
        }
    };
    DEFLATE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut c) => run(&mut c),
        Err(_) => run(&mut Compress::new(Compression::fast(), false)),
    })
}

/// Compresses and encrypts `plaintext` for the packet (`content_type`,
/// `pin`, `ref_id`) under `key`.
pub fn seal(
    key: &TransportKey,
    content_type: ContentType,
    pin: Pin,
    ref_id: RefId,
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    // Tiny payloads (delivery confirmations are empty) and incompressible
    // data go as they are, sparing both ends the compressor's set-up.
    let compressed = if plaintext.len() >= MIN_COMPRESS {
        deflate(plaintext)?
    } else {
        Vec::new()
    };
    let (flags, body) = if !compressed.is_empty() && compressed.len() < plaintext.len() {
        (FLAG_COMPRESSED, compressed.as_slice())
    } else {
        (0, plaintext)
    };

    let mut message_key = [0u8; KEY_LEN];
    rand_bytes(&mut message_key).map_err(crypto)?;
    let mut nonce = [0u8; NONCE_LEN];
    rand_bytes(&mut nonce).map_err(crypto)?;
    let kek = AesKey::new_encrypt(&key.key)
        .map_err(|_| EnvelopeError::Crypto("bad transport key".into()))?;
    let mut wrapped = [0u8; WRAPPED_LEN];
    wrap_key(&kek, None, &mut wrapped, &message_key)
        .map_err(|_| EnvelopeError::Crypto("key wrap failed".into()))?;

    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
    out.push(ENVELOPE_VERSION);
    out.push(flags);
    out.extend_from_slice(&key.id.to_be_bytes());
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(&nonce);
    let aad = aad(content_type, pin, ref_id, &out);
    let mut tag = [0u8; TAG_LEN];
    let ciphertext = encrypt_aead(
        Cipher::aes_256_gcm(),
        &message_key,
        Some(&nonce),
        &aad,
        body,
        &mut tag,
    )
    .map_err(crypto)?;
    out.extend_from_slice(&ciphertext);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The transport key id an envelope names, so the receiver can look it up.
pub fn key_id(envelope: &[u8]) -> Result<u32, EnvelopeError> {
    if envelope.len() < MIN_LEN {
        return Err(EnvelopeError::TooShort(envelope.len()));
    }
    if envelope[0] != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(envelope[0]));
    }
    Ok(u32::from_be_bytes([
        envelope[2],
        envelope[3],
        envelope[4],
        envelope[5],
    ]))
}

/// Decrypts and decompresses an envelope, taking the transport key from
/// `keys` by the id in its header. The result is at most `max_plaintext`
/// bytes; a larger one is refused without being held in memory.
pub fn open<'k>(
    keys: impl Fn(u32) -> Option<&'k TransportKey>,
    content_type: ContentType,
    pin: Pin,
    ref_id: RefId,
    envelope: &[u8],
    max_plaintext: usize,
) -> Result<Vec<u8>, EnvelopeError> {
    let id = key_id(envelope)?;
    let flags = envelope[1];
    if flags & !FLAG_COMPRESSED != 0 {
        return Err(EnvelopeError::UnknownFlags(flags));
    }
    let key = keys(id).ok_or(EnvelopeError::UnknownKey(id))?;
    let (header, rest) = envelope.split_at(HEADER_LEN);
    let wrapped = &header[6..6 + WRAPPED_LEN];
    let nonce = &header[6 + WRAPPED_LEN..];
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    if flags & FLAG_COMPRESSED == 0 && ciphertext.len() > max_plaintext {
        return Err(EnvelopeError::TooLarge(max_plaintext));
    }

    let kek = AesKey::new_decrypt(&key.key)
        .map_err(|_| EnvelopeError::Crypto("bad transport key".into()))?;
    let mut message_key = [0u8; KEY_LEN];
    unwrap_key(&kek, None, &mut message_key, wrapped).map_err(|_| EnvelopeError::Undecryptable)?;
    let aad = aad(content_type, pin, ref_id, header);
    let body = decrypt_aead(
        Cipher::aes_256_gcm(),
        &message_key,
        Some(nonce),
        &aad,
        ciphertext,
        tag,
    )
    .map_err(|_| EnvelopeError::Undecryptable)?;
    if flags & FLAG_COMPRESSED == 0 {
        return Ok(body);
    }
    let mut plaintext = Vec::with_capacity(body.len().saturating_mul(3).min(max_plaintext));
    DeflateDecoder::new(body.as_slice())
        .take((max_plaintext as u64).saturating_add(1))
        .read_to_end(&mut plaintext)
        .map_err(|_| EnvelopeError::BadCompression)?;
    if plaintext.len() > max_plaintext {
        return Err(EnvelopeError::TooLarge(max_plaintext));
    }
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const LIMIT: usize = 1 << 20;

    fn key(id: u32) -> TransportKey {
        TransportKey::generate(id).unwrap()
    }

    #[test]
    fn round_trip_compressed_and_not() {
        let k = key(1);
        let text = "Quarterly numbers attached. ".repeat(100);
        let env = seal(&k, ContentType::Cmime, Pin(5), RefId(6), text.as_bytes()).unwrap();
        assert!(env.len() < text.len(), "compressed before encryption");
        let opened = open(
            |id| (id == 1).then_some(&k),
            ContentType::Cmime,
            Pin(5),
            RefId(6),
            &env,
            LIMIT,
        )
        .unwrap();
        assert_eq!(opened, text.as_bytes());

        let mut noise = vec![0u8; 3000];
        rand_bytes(&mut noise).unwrap();
        let env = seal(&k, ContentType::Cmime, Pin(5), RefId(6), &noise).unwrap();
        assert_eq!(env[1] & FLAG_COMPRESSED, 0);
        assert_eq!(
            open(
                |_| Some(&k),
                ContentType::Cmime,
                Pin(5),
                RefId(6),
                &env,
                LIMIT
            )
            .unwrap(),
            noise
        );
        let empty = seal(&k, ContentType::DeliveryConfirmation, Pin(5), RefId(6), b"").unwrap();
        assert!(open(
            |_| Some(&k),
            ContentType::DeliveryConfirmation,
            Pin(5),
            RefId(6),
            &empty,
            LIMIT
        )
        .unwrap()
        .is_empty());
    }

    #[test]
    fn fresh_key_per_message() {
        let k = key(1);
        let a = seal(&k, ContentType::Cmime, Pin(5), RefId(6), b"same").unwrap();
        let b = seal(&k, ContentType::Cmime, Pin(5), RefId(6), b"same").unwrap();
        assert_ne!(a[6..46], b[6..46], "different wrapped message keys");
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_key_tampering_and_rebinding_fail() {
        let k = key(1);
        let other = key(1);
        let env = seal(&k, ContentType::Cmime, Pin(5), RefId(6), b"secret plans").unwrap();
        assert_eq!(
            open(
                |_| Some(&other),
                ContentType::Cmime,
                Pin(5),
                RefId(6),
                &env,
                LIMIT
            )
            .unwrap_err(),
            EnvelopeError::Undecryptable
        );
        assert_eq!(
            open(|_| None, ContentType::Cmime, Pin(5), RefId(6), &env, LIMIT).unwrap_err(),
            EnvelopeError::UnknownKey(1)
        );
        for i in 0..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 0x01;
            assert!(
                open(
                    |_| Some(&k),
                    ContentType::Cmime,
                    Pin(5),
                    RefId(6),
                    &bad,
                    LIMIT
                )
                .is_err(),
                "byte {i}"
            );
        }
        assert!(open(
            |_| Some(&k),
            ContentType::Cmime,
            Pin(5),
            RefId(7),
            &env,
            LIMIT
        )
        .is_err());
        assert!(open(
            |_| Some(&k),
            ContentType::Cmime,
            Pin(4),
            RefId(6),
            &env,
            LIMIT
        )
        .is_err());
        assert!(open(
            |_| Some(&k),
            ContentType::ItPolicy,
            Pin(5),
            RefId(6),
            &env,
            LIMIT
        )
        .is_err());
        assert_eq!(
            open(
                |_| Some(&k),
                ContentType::Cmime,
                Pin(5),
                RefId(6),
                &env[..MIN_LEN - 1],
                LIMIT
            )
            .unwrap_err(),
            EnvelopeError::TooShort(MIN_LEN - 1)
        );
    }

    #[test]
    fn expansion_is_bounded() {
        let k = key(3);
        let bomb = vec![0u8; 4 * 1024 * 1024];
        let env = seal(&k, ContentType::Cmime, Pin(1), RefId(1), &bomb).unwrap();
        assert!(env.len() < 64 * 1024);
        assert_eq!(
            open(
                |_| Some(&k),
                ContentType::Cmime,
                Pin(1),
                RefId(1),
                &env,
                1024 * 1024
            )
            .unwrap_err(),
            EnvelopeError::TooLarge(1024 * 1024)
        );
    }

    #[test]
    fn debug_hides_the_key() {
        let k = TransportKey::new(9, [0xAB; 32]);
        let shown = format!("{k:?}");
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("ab, "),
            "{shown}"
        );
    }
}
