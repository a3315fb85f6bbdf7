//! The relay's check of a device's answer to its challenge, on arbitrary
//! keys, PINs, nonces and answers: bramble-proto must derive the same relay
//! key and proof as the independent reference written from
//! docs/protocol.md, accept the genuine proof, and accept an answer exactly
//! when it is a `device_proof` carrying that proof — never a panic, never
//! a near miss (another case, a LAN proof, a truncated or empty proof).
#![no_main]

use bramble_proto::control::{device_proof, device_proof_matches, relay_key, Control};
use bramble_proto::Pin;
use bramble_proto_fuzz::reference_relay;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 37 {
        return;
    }
    let (key, rest) = data.split_at(32);
    let pin = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let nonce_len = usize::from(rest[4]).min(rest.len() - 5);
    let nonce = String::from_utf8_lossy(&rest[5..5 + nonce_len]).into_owned();
    let answer = &rest[5 + nonce_len..];

    let ours = relay_key(key).expect("any 32 bytes make a relay key");
    assert_eq!(ours, reference_relay::relay_key(key));
    let genuine = device_proof(&ours, Pin(pin), &nonce);
    assert_eq!(genuine, reference_relay::device_proof(&ours, pin, &nonce));
    assert!(device_proof_matches(&ours, Pin(pin), &nonce, &genuine));

    if let Ok(Control::DeviceProof { proof, .. }) = Control::from_payload(answer) {
        assert_eq!(
            device_proof_matches(&ours, Pin(pin), &nonce, &proof),
            proof == genuine,
            "proof {proof:?} against {genuine:?}"
        );
    }
    // Any string taken from the answer bytes is judged the same way.
    let text = String::from_utf8_lossy(answer);
    assert_eq!(
        device_proof_matches(&ours, Pin(pin), &nonce, &text),
        text == genuine
    );
});
