//! Arbitrary bytes opened as an envelope with a fixed transport key: never
//! a panic, and the same answer as the independent implementation of
//! docs/protocol.md (tests/reference in the fuzz crate), error for error.
//! In particular `open` returns Ok only for a genuinely sealed envelope
//! (the seed corpus holds some; random input never is one).
#![no_main]

use std::cell::Cell;

use bramble_proto::envelope::{self, EnvelopeError};
use bramble_proto_fuzz::{
    reference, transport_key, CONTENT_TYPE, MAX_PLAINTEXT, PIN, REF_ID, TRANSPORT_KEY,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = transport_key();
    let asked = Cell::new(None);
    // Every key id finds the key, so the fuzzer gets past the lookup; the
    // id is authenticated, so this must not make anything open.
    let got = envelope::open(
        |id| {
            asked.set(Some(id));
            Some(&key)
        },
        CONTENT_TYPE,
        PIN,
        REF_ID,
        data,
        MAX_PLAINTEXT,
    );
    let context = (CONTENT_TYPE as u8, PIN.0, REF_ID.0);
    let expected =
        reference::open(&TRANSPORT_KEY, context, data, MAX_PLAINTEXT).map(|o| o.plaintext);
    assert_eq!(got, expected);

    match envelope::key_id(data) {
        Ok(id) => {
            let reached_lookup = !matches!(got, Err(EnvelopeError::UnknownFlags(_)));
            if reached_lookup {
                assert_eq!(
                    asked.get(),
                    Some(id),
                    "looked up another key than the header names"
                );
            }
        }
        Err(e) => assert_eq!(got, Err(e)),
    }

    // Without the key, nothing opens and the error says so.
    if envelope::key_id(data).is_ok() && data[1] & !1 == 0 {
        let none = envelope::open(|_| None, CONTENT_TYPE, PIN, REF_ID, data, MAX_PLAINTEXT);
        assert!(
            matches!(none, Err(EnvelopeError::UnknownKey(_))),
            "{none:?}"
        );
    }
});
