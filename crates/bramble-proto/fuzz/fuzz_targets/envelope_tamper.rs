//! A genuine envelope, sealed by bramble-proto from fuzzer-chosen plaintext,
//! opens to that plaintext; after fuzzer-driven changes (bytes flipped, set,
//! inserted, removed, truncated, extended, parts spliced from another
//! envelope, or the packet's PIN, RefID or content type changed) it must
//! not open — unless the splices rebuilt that other genuine envelope whole.
//!
//! Input: n = byte 0 % 16 mutations of 4 bytes each (kind, position high,
//! position low, value), then the plaintext.
#![no_main]

use bramble_proto::envelope;
use bramble_proto::{ContentType, Pin, RefId};
use bramble_proto_fuzz::{transport_key, CONTENT_TYPE, MAX_PLAINTEXT, PIN, REF_ID};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len() / 4);
    let (ops, plaintext) = rest.split_at(n * 4);
    let key = transport_key();
    let sealed = envelope::seal(&key, CONTENT_TYPE, PIN, REF_ID, plaintext).expect("seal");
    let opened = envelope::open(
        |_| Some(&key),
        CONTENT_TYPE,
        PIN,
        REF_ID,
        &sealed,
        MAX_PLAINTEXT,
    );
    assert_eq!(
        opened.as_deref(),
        Ok(plaintext),
        "a sealed envelope does not open to its plaintext"
    );

    let mut env = sealed.clone();
    let (mut content_type, mut pin, mut ref_id) = (CONTENT_TYPE, PIN, REF_ID);
    let mut other: Option<Vec<u8>> = None;
    for op in ops.chunks_exact(4) {
        let (kind, value) = (op[0], op[3]);
        let pos = usize::from(u16::from_be_bytes([op[1], op[2]]));
        let at = if env.is_empty() { 0 } else { pos % env.len() };
        match kind % 10 {
            0 => {
                if let Some(b) = env.get_mut(at) {
                    *b ^= value.max(1);
                }
            }
            1 => {
                if let Some(b) = env.get_mut(at) {
                    *b = value;
                }
            }
            2 => env.insert(at.min(env.len()), value),
            3 => {
                if at < env.len() {
                    env.remove(at);
                }
            }
            4 => env.truncate(pos % (env.len() + 1)),
            5 => env.extend(std::iter::repeat_n(value, 1 + pos % 32)),
            6 => pin = Pin(pin.0 ^ u32::from(value.max(1))),
            7 => ref_id = RefId(ref_id.0 ^ (1u64 << (pos % 64))),
            8 => {
                let to = ContentType::ALL[usize::from(value) % ContentType::ALL.len()];
                content_type = to;
            }
            _ => {
                // Splice a span from another envelope sealed under the same
                // key for the same packet (say, a wrapped key or a nonce).
                let other = other.get_or_insert_with(|| {
                    envelope::seal(&key, CONTENT_TYPE, PIN, REF_ID, plaintext).expect("seal")
                });
                let len = 1 + usize::from(value) % 64;
                let from = pos % other.len();
                for (i, b) in other[from..].iter().take(len).enumerate() {
                    if let Some(slot) = env.get_mut(from + i) {
                        *slot = *b;
                    }
                }
            }
        }
    }
    // Splicing can rebuild the other envelope whole: that one is genuine too.
    let genuine = env == sealed || other.as_ref() == Some(&env);
    let changed = !genuine || (content_type, pin, ref_id) != (CONTENT_TYPE, PIN, REF_ID);
    let result = envelope::open(
        |_| Some(&key),
        content_type,
        pin,
        ref_id,
        &env,
        MAX_PLAINTEXT,
    );
    if changed {
        assert!(result.is_err(), "an altered envelope opened: {result:?}");
    } else {
        assert_eq!(result.as_deref(), Ok(plaintext));
    }
});
