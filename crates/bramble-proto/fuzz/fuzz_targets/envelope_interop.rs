//! What another device would send: an envelope built by the independent
//! implementation of docs/protocol.md (RustCrypto), with a fuzzer-chosen
//! body that may or may not be valid deflate data and a fuzzer-chosen
//! plaintext limit. bramble-proto's `open` must agree with the reference
//! on every such envelope: same plaintext, or the same error (bad
//! compression, over the limit). This reaches the decompression path,
//! which random envelopes never do (they fail authentication first).
//!
//! Input: byte 0 (bit 0: compressed flag, bit 1: deflate the body first,
//! bit 2: seal for another PIN), bytes 1-2 the plaintext limit (big-endian),
//! then the body.
#![no_main]

use bramble_proto::envelope::{self, EnvelopeError};
use bramble_proto_fuzz::{
    reference, transport_key, CONTENT_TYPE, PIN, REF_ID, TRANSPORT_KEY, TRANSPORT_KEY_ID,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let mode = data[0];
    let limit = usize::from(u16::from_be_bytes([data[1], data[2]]));
    let body = &data[3..];
    let flags = mode & reference::FLAG_COMPRESSED;
    let sent = if mode & 2 != 0 {
        reference::deflate(body)
    } else {
        body.to_vec()
    };
    let pin = if mode & 4 != 0 { PIN.0 ^ 1 } else { PIN.0 };
    let context = (CONTENT_TYPE as u8, pin, REF_ID.0);
    let env = reference::seal_with(
        &TRANSPORT_KEY,
        TRANSPORT_KEY_ID,
        flags,
        &[0x42; 32],
        &[0x24; 12],
        context,
        &sent,
    );

    let key = transport_key();
    let got = envelope::open(|_| Some(&key), CONTENT_TYPE, PIN, REF_ID, &env, limit);
    let expected = reference::open(
        &TRANSPORT_KEY,
        (CONTENT_TYPE as u8, PIN.0, REF_ID.0),
        &env,
        limit,
    )
    .map(|o| o.plaintext);
    assert_eq!(got, expected);

    if mode & 4 != 0 {
        // Sealed for another packet: never opens. An uncompressed body over
        // the limit is refused for its size first, before any decryption.
        if flags == 0 && sent.len() > limit {
            assert_eq!(got, Err(EnvelopeError::TooLarge(limit)));
        } else {
            assert_eq!(
                got,
                Err(EnvelopeError::Undecryptable),
                "sealed for another PIN yet opened"
            );
        }
    } else if (flags != 0) == (mode & 2 != 0) {
        // Well-formed (compressed exactly when flagged): it opens to the
        // body unless the body is over the limit.
        if body.len() <= limit {
            assert_eq!(got.as_deref(), Ok(body));
        } else {
            assert_eq!(got, Err(EnvelopeError::TooLarge(limit)));
        }
    }
});
