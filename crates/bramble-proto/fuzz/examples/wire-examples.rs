//! Prints the worked examples of docs/protocol.md, made by bramble-proto
//! itself: a packet, an envelope taken apart (the message key is recovered
//! by unwrapping it with the transport key), a delivery confirmation, every
//! control message's JSON and the handshake proofs. It checks each against
//! the independent implementation before printing, so the document cannot
//! show bytes that the code would not produce or accept.
//!
//! `cargo run --example wire-examples`. Envelopes hold a fresh random message
//! key and nonce, so each run prints different envelope bytes; any run's
//! output is a valid example.

use bramble_proto::control::{self, Control, ErrorReport, TransportStatus};
use bramble_proto::envelope;
use bramble_proto::frame::Frame;
use bramble_proto::{ContentType, PROTOCOL_VERSION};
use bramble_proto_fuzz::{
    reference, transport_key, CONTENT_TYPE, MAX_PLAINTEXT, PIN, REF_ID, TRANSPORT_KEY,
};

const PLAINTEXT: &str =
    "Subject: Lunch?\r\n\r\nNoon at the usual place? Noon at the usual place.\r\n";

fn hex(bytes: &[u8]) -> String {
    control::hex(bytes)
}

/// Hex in lines of 32 bytes, for a code block.
fn hex_block(bytes: &[u8]) -> String {
    bytes.chunks(32).map(hex).collect::<Vec<_>>().join("\n")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = transport_key();
    let context = (CONTENT_TYPE as u8, PIN.0, REF_ID.0);

    println!("## Packet\n");
    let frame = Frame::single(
        ContentType::Control,
        PIN,
        REF_ID,
        Control::Ping.to_payload(),
    );
    let bytes = frame.encode()?;
    assert_eq!(Frame::decode(&bytes)?, (frame.clone(), bytes.len()));
    println!(
        "Control packet carrying `{}` (PIN {PIN}, RefID {REF_ID}):\n",
        String::from_utf8_lossy(&frame.payload)
    );
    println!("```text\n{}\n```\n", hex_block(&bytes));
    println!("length {:08x}, version {:02x}, type {:02x}, flags 00, reserved 00, PIN {}, RefID {}, index 0000, count 0001\n",
        bytes.len() - 4, PROTOCOL_VERSION, ContentType::Control as u8, hex(&bytes[8..12]), hex(&bytes[12..20]));

    println!("## Envelope\n");
    let sealed = envelope::seal(&key, CONTENT_TYPE, PIN, REF_ID, PLAINTEXT.as_bytes())?;
    let opened = envelope::open(
        |id| (id == key.id).then_some(&key),
        CONTENT_TYPE,
        PIN,
        REF_ID,
        &sealed,
        MAX_PLAINTEXT,
    )?;
    assert_eq!(opened, PLAINTEXT.as_bytes());
    let parts = reference::open(&TRANSPORT_KEY, context, &sealed, MAX_PLAINTEXT)?;
    assert_eq!(parts.plaintext, PLAINTEXT.as_bytes());
    // Rebuilt from the parts by the independent implementation: identical.
    let rebuilt = reference::seal_with(
        &TRANSPORT_KEY,
        parts.key_id,
        parts.flags,
        &parts.message_key,
        &parts.nonce,
        context,
        &parts.body,
    );
    assert_eq!(rebuilt, sealed);
    let n = sealed.len() - reference::MIN_LEN;
    println!("transport key (id {}): {}", key.id, hex(&TRANSPORT_KEY));
    println!(
        "packet: content type {} (cmime), PIN {PIN}, RefID {REF_ID}",
        CONTENT_TYPE as u8
    );
    println!("plaintext ({} bytes): {:?}", PLAINTEXT.len(), PLAINTEXT);
    println!(
        "deflated body ({} bytes): {}",
        parts.body.len(),
        hex(&parts.body)
    );
    println!(
        "message key (fresh, recovered by unwrapping): {}",
        hex(&parts.message_key)
    );
    println!(
        "version {:02x}, flags {:02x}, key id {}",
        sealed[0],
        sealed[1],
        hex(&sealed[2..6])
    );
    println!("wrapped message key: {}", hex(&sealed[6..46]));
    println!("nonce: {}", hex(&sealed[46..58]));
    println!("AAD ({} bytes): {}", parts.aad.len(), hex(&parts.aad));
    println!("ciphertext ({n} bytes): {}", hex(&sealed[58..58 + n]));
    println!("tag: {}", hex(&sealed[58 + n..]));
    println!(
        "envelope ({} bytes):\n```text\n{}\n```",
        sealed.len(),
        hex_block(&sealed)
    );
    let packet = Frame::single(CONTENT_TYPE, PIN, REF_ID, sealed).encode()?;
    println!(
        "packet ({} bytes):\n```text\n{}\n```\n",
        packet.len(),
        hex_block(&packet)
    );

    println!("## Delivery confirmation\n");
    let confirm = envelope::seal(&key, ContentType::DeliveryConfirmation, PIN, REF_ID, b"")?;
    assert_eq!(confirm.len(), reference::MIN_LEN);
    assert!(envelope::open(
        |_| Some(&key),
        ContentType::DeliveryConfirmation,
        PIN,
        REF_ID,
        &confirm,
        0
    )?
    .is_empty());
    let packet = Frame::single(ContentType::DeliveryConfirmation, PIN, REF_ID, confirm).encode()?;
    println!(
        "packet ({} bytes):\n```text\n{}\n```\n",
        packet.len(),
        hex_block(&packet)
    );

    println!("## Control messages\n");
    let srp_key = b"example SRP key";
    let (srp_id, server_nonce, relay_nonce) = ("S12345678", "11".repeat(32), "22".repeat(32));
    let relay_proof = control::srp_relay_proof(srp_key, srp_id, &server_nonce, &relay_nonce);
    let server_proof = control::srp_server_proof(srp_key, srp_id, &server_nonce, &relay_nonce);
    let lan_nonce = "33".repeat(32);
    let lan = control::lan_proof(&TRANSPORT_KEY, PIN, &lan_nonce);
    let relay_nonce_device = "44".repeat(32);
    let relay_key = control::relay_key(&TRANSPORT_KEY).ok_or("no relay key")?;
    assert_eq!(relay_key, bramble_proto_fuzz::reference_relay::relay_key(&TRANSPORT_KEY));
    let device_proof = control::device_proof(&relay_key, PIN, &relay_nonce_device);
    assert_eq!(
        device_proof,
        bramble_proto_fuzz::reference_relay::device_proof(&relay_key, PIN.0, &relay_nonce_device)
    );
    println!("relay key of the transport key: {}", control::hex(&relay_key));
    println!("device proof for nonce 44…44: {device_proof}\n");
    let all = [
        Control::SrpHello {
            srp_id: srp_id.into(),
            nonce: server_nonce.clone(),
        },
        Control::SrpChallenge {
            nonce: relay_nonce.clone(),
            proof: relay_proof.clone(),
        },
        Control::SrpResponse {
            proof: server_proof.clone(),
        },
        Control::SrpAccepted,
        Control::SrpRejected {
            reason: "the SRP authentication key does not match".into(),
            code: Some("BAD_KEY".into()),
        },
        Control::ServerInfo {
            server_name: "bes01".into(),
            version: "0.1.0".into(),
        },
        Control::DeviceHello {
            pin: PIN,
            srp_id: Some(srp_id.into()),
            model: "9700".into(),
            os_version: "5.0.0".into(),
        },
        Control::LanChallenge {
            nonce: lan_nonce.clone(),
        },
        Control::LanProof {
            key_id: key.id,
            proof: lan.clone(),
        },
        Control::DeviceChallenge {
            nonce: relay_nonce_device.clone(),
        },
        Control::DeviceProof {
            key_id: key.id,
            proof: device_proof.clone(),
        },
        Control::ActivationOnly,
        Control::DeviceKeys {
            reset: true,
            devices: vec![control::DeviceRelayKeys {
                pin: PIN,
                keys: vec![control::RelayKeyEntry {
                    key_id: key.id,
                    key: control::hex(&relay_key),
                }],
            }],
        },
        Control::Welcome,
        Control::Refused {
            reason: "this PIN is not activated on this server".into(),
        },
        Control::Transport {
            status: TransportStatus::DeliveredToDevice,
        },
        Control::Transport {
            status: TransportStatus::StoredForOfflineDevice,
        },
        Control::Transport {
            status: TransportStatus::Expired,
        },
        Control::Transport {
            status: TransportStatus::UnknownPin,
        },
        Control::Transport {
            status: TransportStatus::StoreFull,
        },
        Control::Ping,
        Control::Pong,
    ];
    for c in &all {
        let json = c.to_payload();
        assert_eq!(&Control::from_payload(&json)?, c);
        println!("{}", String::from_utf8(json)?);
    }
    let minimal = br#"{"type":"device_hello","pin":"2A3B4C5D"}"#;
    println!(
        "minimal device_hello decodes as {:?}",
        Control::from_payload(minimal)?
    );
    let report = ErrorReport {
        code: ErrorReport::UNDECRYPTABLE.into(),
        message: "The server could not decrypt your message; it was not delivered.".into(),
    };
    println!(
        "error report: {}",
        String::from_utf8(report.frame(PIN, REF_ID).payload)?
    );

    println!("\n## Proofs\n");
    println!(
        "SRP key {:?} (hex {}), SRP ID {srp_id}",
        String::from_utf8_lossy(srp_key),
        hex(srp_key)
    );
    println!("server nonce {server_nonce}\nrelay nonce {relay_nonce}");
    println!("relay proof  = HMAC-SHA256(key, \"relay\" || srp_id || server_nonce || relay_nonce) = {relay_proof}");
    println!("server proof = HMAC-SHA256(key, \"server\" || srp_id || server_nonce || relay_nonce) = {server_proof}");
    println!("LAN nonce {lan_nonce}");
    println!("LAN proof = HMAC-SHA256(transport key, \"lan\" || \"{PIN}\" || nonce) = {lan}");
    Ok(())
}
