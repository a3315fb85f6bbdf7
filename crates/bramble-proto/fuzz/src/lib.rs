//! # bramble-proto-fuzz — fuzz targets for the wire, and their oracle
//!
//! The targets in `fuzz_targets/` feed bramble-proto's decoders with
//! libFuzzer's inputs; this library holds what they share:
//! - the fixed transport key and packet context the envelope targets use;
//! - [`reference`]: a second, independent implementation of the envelope as
//!   `docs/protocol.md` specifies it (RustCrypto's AES-GCM and AES key wrap
//!   rather than openssl), so a target can check not only "no panic" but
//!   "accepts exactly what the specification accepts";
//! - [`poll_ready`], to drive `bramble_proto::io` on an in-memory reader
//!   without a runtime.
//!
//! `examples/make-corpus.rs` writes the seed corpus from real encoded
//! samples; `examples/wire-examples.rs` prints the worked examples of
//! `docs/protocol.md`. `scripts/fuzz.sh` runs everything.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bramble_proto::envelope::TransportKey;
use bramble_proto::{ContentType, Pin, RefId};

/// The transport key of the envelope targets and the worked example.
pub const TRANSPORT_KEY: [u8; 32] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
];
/// Its id.
pub const TRANSPORT_KEY_ID: u32 = 7;
/// The packet an envelope of the targets belongs to.
pub const CONTENT_TYPE: ContentType = ContentType::Cmime;
pub const PIN: Pin = Pin(0x2A3B_4C5D);
pub const REF_ID: RefId = RefId(0x0123_4567_89AB_CDEF);
/// The plaintext limit the envelope targets open with.
pub const MAX_PLAINTEXT: usize = 64 * 1024;

pub fn transport_key() -> TransportKey {
    TransportKey::new(TRANSPORT_KEY_ID, TRANSPORT_KEY)
}

/// Runs a future that never waits (I/O on an in-memory slice) to its end.
/// `None` if it returned `Pending`, which such a future must not do.
pub fn poll_ready<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// The envelope of `docs/protocol.md`, implemented from the document with
/// different cryptographic libraries than bramble-proto's.
/// The device's proof to the relay as `docs/protocol.md` specifies it,
/// with RustCrypto's HMAC rather than openssl's or the `hkdf` crate.
pub mod reference_relay {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// HKDF-Expand(PRK = transport key, "bramble relay key", 32): one block.
    pub fn relay_key(transport_key: &[u8]) -> [u8; 32] {
        hmac(transport_key, &[b"bramble relay key", &[1]])
    }

    /// HMAC(relay key, "relay-device" || PIN as 8 upper-case hex || nonce), hex.
    pub fn device_proof(relay_key: &[u8], pin: u32, nonce: &str) -> String {
        hmac(
            relay_key,
            &[b"relay-device", format!("{pin:08X}").as_bytes(), nonce.as_bytes()],
        )
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
    }
}

pub mod reference {
    use std::io::{Read, Write};

    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use aes_gcm::{Aes256Gcm, Nonce};
    use aes_kw::KekAes256;
    use bramble_proto::envelope::EnvelopeError;
    use flate2::read::DeflateDecoder;
    use flate2::write::DeflateEncoder;
    use flate2::Compression;

    pub const VERSION: u8 = 1;
    pub const FLAG_COMPRESSED: u8 = 0x01;
    pub const HEADER_LEN: usize = 58;
    pub const TAG_LEN: usize = 16;
    pub const MIN_LEN: usize = HEADER_LEN + TAG_LEN;
    pub const AAD_LABEL: &[u8; 12] = b"BRAMBLE-ENV1";

    /// The associated data: label, content type, PIN, RefID, header.
    pub fn aad(content_type: u8, pin: u32, ref_id: u64, header: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(25 + header.len());
        aad.extend_from_slice(AAD_LABEL);
        aad.push(content_type);
        aad.extend_from_slice(&pin.to_be_bytes());
        aad.extend_from_slice(&ref_id.to_be_bytes());
        aad.extend_from_slice(header);
        aad
    }

    /// Raw deflate (RFC 1951), as a sender compresses.
    pub fn deflate(data: &[u8]) -> Vec<u8> {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::fast());
        // Writing to a Vec cannot fail.
        let _ = encoder.write_all(data);
        encoder.finish().unwrap_or_default()
    }

    /// What a receiver inflates, at most `limit + 1` bytes so a larger
    /// result is seen without holding it.
    pub fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>, EnvelopeError> {
        let mut out = Vec::new();
        DeflateDecoder::new(data)
            .take((limit as u64).saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|_| EnvelopeError::BadCompression)?;
        if out.len() > limit {
            return Err(EnvelopeError::TooLarge(limit));
        }
        Ok(out)
    }

    /// Builds an envelope with a chosen message key and nonce around
    /// `body` (already compressed when `flags` says so).
    #[allow(clippy::too_many_arguments)]
    pub fn seal_with(
        transport_key: &[u8; 32],
        key_id: u32,
        flags: u8,
        message_key: &[u8; 32],
        nonce: &[u8; 12],
        context: (u8, u32, u64),
        body: &[u8],
    ) -> Vec<u8> {
        let kek = KekAes256::from(*transport_key);
        let mut wrapped = [0u8; 40];
        // Wrapping 32 bytes into 40 cannot fail.
        let _ = kek.wrap(message_key, &mut wrapped);
        let mut out = Vec::with_capacity(MIN_LEN + body.len());
        out.push(VERSION);
        out.push(flags);
        out.extend_from_slice(&key_id.to_be_bytes());
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(nonce);
        let aad = aad(context.0, context.1, context.2, &out);
        let gcm = Aes256Gcm::new(message_key.into());
        let sealed = gcm
            .encrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        out.extend_from_slice(&sealed);
        out
    }

    /// The parts of an envelope, for the worked example.
    pub struct Opened {
        pub flags: u8,
        pub key_id: u32,
        pub message_key: [u8; 32],
        pub nonce: [u8; 12],
        pub aad: Vec<u8>,
        /// The decrypted body, still compressed when flagged.
        pub body: Vec<u8>,
        pub plaintext: Vec<u8>,
    }

    /// Opens an envelope as the document says, checking in its order.
    /// The key is looked up by id by the caller; here it is given.
    pub fn open(
        transport_key: &[u8; 32],
        context: (u8, u32, u64),
        envelope: &[u8],
        max_plaintext: usize,
    ) -> Result<Opened, EnvelopeError> {
        if envelope.len() < MIN_LEN {
            return Err(EnvelopeError::TooShort(envelope.len()));
        }
        let version = envelope[0];
        if version != VERSION {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        let flags = envelope[1];
        if flags & !FLAG_COMPRESSED != 0 {
            return Err(EnvelopeError::UnknownFlags(flags));
        }
        let key_id = u32::from_be_bytes([envelope[2], envelope[3], envelope[4], envelope[5]]);
        let header = &envelope[..HEADER_LEN];
        let sealed = &envelope[HEADER_LEN..];
        if flags & FLAG_COMPRESSED == 0 && sealed.len() - TAG_LEN > max_plaintext {
            return Err(EnvelopeError::TooLarge(max_plaintext));
        }
        let kek = KekAes256::from(*transport_key);
        let mut message_key = [0u8; 32];
        kek.unwrap(&header[6..46], &mut message_key)
            .map_err(|_| EnvelopeError::Undecryptable)?;
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&header[46..58]);
        let aad = aad(context.0, context.1, context.2, header);
        let gcm = Aes256Gcm::new((&message_key).into());
        let body = gcm
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| EnvelopeError::Undecryptable)?;
        let plaintext = if flags & FLAG_COMPRESSED != 0 {
            inflate(&body, max_plaintext)?
        } else {
            body.clone()
        };
        Ok(Opened {
            flags,
            key_id,
            message_key,
            nonce,
            aad,
            body,
            plaintext,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::envelope;

    fn context() -> (u8, u32, u64) {
        (CONTENT_TYPE as u8, PIN.0, REF_ID.0)
    }

    #[test]
    fn reference_opens_what_bramble_seals() {
        let key = transport_key();
        for text in [
            &b""[..],
            b"hello",
            "Quarterly numbers. ".repeat(50).as_bytes(),
        ] {
            let env = envelope::seal(&key, CONTENT_TYPE, PIN, REF_ID, text).expect("seal");
            let opened =
                reference::open(&TRANSPORT_KEY, context(), &env, MAX_PLAINTEXT).expect("open");
            assert_eq!(opened.plaintext, text);
            assert_eq!(opened.key_id, TRANSPORT_KEY_ID);
        }
    }

    #[test]
    fn bramble_opens_what_reference_seals() {
        let key = transport_key();
        let body = reference::deflate(b"from another device");
        let env = reference::seal_with(&TRANSPORT_KEY, 7, 1, &[9; 32], &[3; 12], context(), &body);
        let opened = envelope::open(
            |_| Some(&key),
            CONTENT_TYPE,
            PIN,
            REF_ID,
            &env,
            MAX_PLAINTEXT,
        );
        assert_eq!(opened.as_deref(), Ok(&b"from another device"[..]));
    }

    #[test]
    fn poll_ready_reads_a_frame_from_a_slice() {
        let frame = bramble_proto::frame::Frame::single(ContentType::Control, PIN, REF_ID, vec![1]);
        let bytes = frame.encode().expect("encode");
        let mut reader = &bytes[..];
        let read = poll_ready(bramble_proto::io::read_frame(&mut reader)).expect("ready");
        assert_eq!(read.expect("read"), Some(frame));
    }

    /// Claims docs/protocol.md makes about control JSON.
    #[test]
    fn control_json_as_documented() {
        use bramble_proto::control::{Control, ErrorReport};
        let minimal = Control::from_payload(br#"{"type":"device_hello","pin":"2A3B4C5D"}"#);
        assert_eq!(
            minimal,
            Ok(Control::DeviceHello {
                pin: PIN,
                srp_id: None,
                model: String::new(),
                os_version: String::new()
            })
        );
        let null_srp =
            Control::from_payload(br#"{"pin":"2a3b4c5d","srp_id":null,"type":"device_hello"}"#);
        assert_eq!(
            null_srp, minimal,
            "any member order, lower-case PIN, null srp_id"
        );
        assert_eq!(
            Control::from_payload(br#"{"type":"ping","extra":1}"#),
            Ok(Control::Ping),
            "unknown members are ignored"
        );
        assert!(
            Control::from_payload(br#"{"type":"srp_rejected","reason":"a","reason":"b"}"#).is_err()
        );
        assert!(Control::from_payload(br#"{"type":"srp_response"}"#).is_err());
        assert!(Control::from_payload(br#"{"type":"nope"}"#).is_err());
        assert!(ErrorReport::from_payload(br#"{"code":"UNDECRYPTABLE"}"#).is_err());
    }

    /// Claims docs/protocol.md makes about packets and the envelope.
    #[test]
    fn sizes_as_documented() {
        use bramble_proto::frame::{Frame, MAX_PACKET, MAX_PAYLOAD};
        assert_eq!((MAX_PACKET, MAX_PAYLOAD), (65_536, 65_512));
        assert_eq!(
            Frame::single(CONTENT_TYPE, PIN, REF_ID, vec![])
                .encode()
                .map(|b| b.len()),
            Ok(24)
        );
        assert_eq!(envelope::MIN_LEN, 74);
        assert_eq!(envelope::HEADER_LEN, reference::HEADER_LEN);
        let key = transport_key();
        let empty = envelope::seal(&key, ContentType::DeliveryConfirmation, PIN, REF_ID, b"")
            .expect("seal");
        assert_eq!(
            (empty.len(), empty[1]),
            (74, 0),
            "empty plaintext: 74 bytes, not compressed"
        );
        assert_eq!(reference::aad(1, PIN.0, REF_ID.0, &empty[..58]).len(), 83);
    }

    /// What docs/protocol.md says of incomplete deflate streams and bytes
    /// after the final block.
    #[test]
    fn inflate_as_documented() {
        use bramble_proto::envelope::EnvelopeError;
        let key = transport_key();
        let context = (CONTENT_TYPE as u8, PIN.0, REF_ID.0);
        let text = "Noon at the usual place. ".repeat(40);
        let full = reference::deflate(text.as_bytes());
        let open = |body: &[u8]| {
            let env = reference::seal_with(&TRANSPORT_KEY, 7, 1, &[5; 32], &[6; 12], context, body);
            envelope::open(
                |_| Some(&key),
                CONTENT_TYPE,
                PIN,
                REF_ID,
                &env,
                MAX_PLAINTEXT,
            )
        };
        assert_eq!(open(&full).as_deref(), Ok(text.as_bytes()));
        for cut in [1, full.len() / 2, full.len() - 1] {
            assert_eq!(
                open(&full[..cut]),
                Err(EnvelopeError::BadCompression),
                "cut at {cut}"
            );
        }
        // Bytes after the final block are ignored.
        let trailing = open(&[&full[..], b"trailing"].concat());
        assert_eq!(trailing.as_deref(), Ok(text.as_bytes()));
    }

    // Regression tests for bugs found in bramble-proto (fixed there).

    /// `open` with `max_plaintext = usize::MAX` (say, a limit meaning "no
    /// limit"): `max_plaintext as u64 + 1` overflows. Debug builds panic;
    /// release builds wrap to `take(0)` and a compressed envelope opens to
    /// an empty plaintext, silently.
    #[test]
    fn open_with_no_limit_keeps_the_plaintext() {
        let key = transport_key();
        let text = "Noon at the usual place. ".repeat(10);
        let env = envelope::seal(&key, CONTENT_TYPE, PIN, REF_ID, text.as_bytes()).expect("seal");
        assert_eq!(env[1] & 1, 1, "compressed");
        let opened = std::panic::catch_unwind(|| {
            envelope::open(|_| Some(&key), CONTENT_TYPE, PIN, REF_ID, &env, usize::MAX)
        });
        assert_eq!(opened.ok(), Some(Ok(text.into_bytes())));
    }

    /// A hand-made frame (the fields are public) with index >= count, or
    /// count 0, makes `Reassembler::push` index out of bounds and panic;
    /// `Frame::decode` never produces one, so the wire cannot reach it.
    #[test]
    fn push_refuses_an_invalid_frame() {
        use bramble_proto::frame::{Frame, Reassembler};
        for (index, count) in [(2u16, 2u16), (0, 0)] {
            let mut frame = Frame::single(CONTENT_TYPE, PIN, REF_ID, vec![1]);
            frame.fragment_index = index;
            frame.fragment_count = count;
            let mut r = Reassembler::default();
            let pushed = std::panic::catch_unwind(move || r.push(frame).is_err());
            assert_eq!(pushed.ok(), Some(true), "index {index} of {count}");
        }
    }
}
