//! Writes the seed corpus: real encoded samples made by bramble-proto, one
//! file each, under `corpus/<target>/`. Existing files are kept (envelopes
//! hold random keys and nonces, so a rerun would only churn them); pass
//! `--force` to rewrite. `cargo run --example make-corpus [-- --force] [DIR]`.

use std::path::{Path, PathBuf};

use bramble_proto::control::{self, Control, ErrorReport, TransportStatus};
use bramble_proto::envelope;
use bramble_proto::frame::{split, Frame, FLAG_PRIORITY};
use bramble_proto::{ContentType, Pin, RefId};
use bramble_proto_fuzz::{transport_key, CONTENT_TYPE, PIN, REF_ID, TRANSPORT_KEY};

const MAIL: &str = "From: alice@example.com\r\nTo: bob@example.com\r\nSubject: Lunch?\r\n\r\n\
Noon at the usual place? Noon at the usual place works for me.\r\n";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let force = args.iter().any(|a| a == "--force");
    let root = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut out = Corpus {
        root,
        force,
        written: 0,
        kept: 0,
    };
    let key = transport_key();

    // frame_decode: packets as links carry them.
    let sealed = envelope::seal(&key, CONTENT_TYPE, PIN, REF_ID, MAIL.as_bytes())?;
    let cmime = Frame::single(CONTENT_TYPE, PIN, REF_ID, sealed.clone()).encode()?;
    out.put("frame_decode", "cmime-single", &cmime)?;
    let hello = Control::SrpHello {
        srp_id: "S12345678".into(),
        nonce: control::nonce(),
    };
    out.put(
        "frame_decode",
        "control-srp-hello",
        &hello.frame(Pin(0), RefId(1)).encode()?,
    )?;
    let mut urgent = Frame::single(
        ContentType::AdminCommand,
        PIN,
        RefId(2),
        b"\x01\x02\x03".to_vec(),
    );
    urgent.flags = FLAG_PRIORITY;
    out.put("frame_decode", "priority-flag", &urgent.encode()?)?;
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let frames = split(ContentType::Sync, 0, PIN, RefId(3), &big)?;
    // The second fragment only, cut short: the first is near the size cap.
    let mut second = frames[1].clone();
    second.payload.truncate(64);
    out.put("frame_decode", "fragment-2-of-2", &second.encode()?)?;
    let confirm = envelope::seal(&key, ContentType::DeliveryConfirmation, PIN, REF_ID, b"")?;
    let mut stream =
        Frame::single(ContentType::DeliveryConfirmation, PIN, REF_ID, confirm).encode()?;
    stream.extend(
        ErrorReport {
            code: ErrorReport::UNDECRYPTABLE.into(),
            message: "cannot decrypt".into(),
        }
        .frame(PIN, RefId(4))
        .encode()?,
    );
    out.put("frame_decode", "stream-confirmation-then-error", &stream)?;
    out.put("frame_decode", "truncated", &cmime[..30])?;

    // reassembly: limits byte, then operations (see fuzz_targets/reassembly.rs).
    // Limits 0x0B: messages up to 4 packets, 2 half-received at once.
    let three_out_of_order = [
        &[0x0B][..],
        &[0x21, 0x12],
        b"cc", // RefID 1, count 3, index 2
        &[0x21, 0x02],
        b"aa", // index 0
        &[0x21, 0x0A],
        b"bb", // index 1: complete
    ]
    .concat();
    out.put("reassembly", "three-out-of-order", &three_out_of_order)?;
    let dup_and_changed_count = [
        &[0x0B][..],
        &[0x12, 0x41],
        b"x", // RefID 2, count 2, index 0, priority
        &[0x12, 0x01],
        b"y", // the same index again: ignored
        &[0x12, 0x02],
        b"z", // count 3 now: inconsistent, dropped
        &[0x13, 0x09],
        b"w", // RefID 3, count 2, index 1
        &[0x13, 0x01],
        b"v", // index 0: complete
    ]
    .concat();
    out.put(
        "reassembly",
        "duplicate-and-changed-count",
        &dup_and_changed_count,
    )?;
    let eviction = [
        &[0x01][..], // 1 half-received message at most
        &[0x10, 0x01],
        b"a", // RefID 0 starts
        &[0x11, 0x01],
        b"b", // RefID 1 starts: RefID 0 dropped
        &[0x10, 0x09],
        b"c",          // RefID 0 again from its second half
        &[0xF0],       // expire everything
        &[0x00, 0x00], // single packet, empty
        &[0x1C, 0x07],
        b"8", // Sync, other PIN, count 8: too large
    ]
    .concat();
    out.put("reassembly", "eviction-expiry-too-large", &eviction)?;

    // envelope_open: genuine envelopes for the targets' packet.
    out.put("envelope_open", "cmime-compressed", &sealed)?;
    let noise: Vec<u8> = (0..300u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    out.put(
        "envelope_open",
        "uncompressed",
        &envelope::seal(&key, CONTENT_TYPE, PIN, REF_ID, &noise)?,
    )?;
    out.put(
        "envelope_open",
        "empty",
        &envelope::seal(&key, CONTENT_TYPE, PIN, REF_ID, b"")?,
    )?;

    // envelope_tamper: mutation count, mutations, plaintext.
    out.put(
        "envelope_tamper",
        "no-change",
        &[&[0u8][..], MAIL.as_bytes()].concat(),
    )?;
    out.put(
        "envelope_tamper",
        "flip-flag",
        &[&[1u8, 0, 0, 1, 1][..], MAIL.as_bytes()].concat(),
    )?;
    out.put(
        "envelope_tamper",
        "other-refid",
        &[&[1u8, 7, 0, 5, 0][..], b"short"].concat(),
    )?;
    out.put(
        "envelope_tamper",
        "splice-wrapped-key",
        &[&[1u8, 9, 0, 6, 39][..], b"hello"].concat(),
    )?;

    // envelope_interop: mode, limit, body.
    out.put(
        "envelope_interop",
        "deflated",
        &[&[3u8, 0x10, 0x00][..], MAIL.as_bytes()].concat(),
    )?;
    out.put(
        "envelope_interop",
        "raw",
        &[&[0u8, 0x00, 0x40][..], MAIL.as_bytes()].concat(),
    )?;
    out.put(
        "envelope_interop",
        "flagged-not-deflate",
        &[&[1u8, 0x10, 0x00][..], b"not deflate"].concat(),
    )?;
    let bomb = vec![0u8; 5000];
    out.put(
        "envelope_interop",
        "over-limit",
        &[&[3u8, 0x04, 0x00][..], &bomb[..]].concat(),
    )?;

    // control_decode: every control message, and an error report.
    let key_bytes = b"srp key of the enterprise server";
    let controls = [
        ("srp_hello", hello.clone()),
        (
            "srp_challenge",
            Control::SrpChallenge {
                nonce: "ab".repeat(32),
                proof: control::srp_relay_proof(key_bytes, "S12345678", "n1", "n2"),
            },
        ),
        (
            "srp_response",
            Control::SrpResponse {
                proof: control::srp_server_proof(key_bytes, "S12345678", "n1", "n2"),
            },
        ),
        ("srp_accepted", Control::SrpAccepted),
        (
            "srp_rejected",
            Control::SrpRejected {
                reason: "unknown SRP ID".into(),
                code: Some("UNKNOWN_SRP_ID".into()),
            },
        ),
        (
            "server_info",
            Control::ServerInfo {
                server_name: "bes01".into(),
                version: "0.1.0".into(),
            },
        ),
        (
            "device_hello",
            Control::DeviceHello {
                pin: PIN,
                srp_id: Some("S12345678".into()),
                model: "9700".into(),
                os_version: "5.0".into(),
            },
        ),
        (
            "lan_challenge",
            Control::LanChallenge {
                nonce: "cd".repeat(32),
            },
        ),
        (
            "lan_proof",
            Control::LanProof {
                key_id: 7,
                proof: control::lan_proof(key.secret(), PIN, "n"),
            },
        ),
        ("welcome", Control::Welcome),
        (
            "refused",
            Control::Refused {
                reason: "this PIN is not activated".into(),
            },
        ),
        (
            "transport",
            Control::Transport {
                status: TransportStatus::StoredForOfflineDevice,
            },
        ),
        ("ping", Control::Ping),
        ("pong", Control::Pong),
    ];
    for (name, c) in controls {
        out.put("control_decode", name, &c.to_payload())?;
    }
    // device_handshake: transport key (32) || PIN (4) || nonce length (1)
    // || nonce || the device's answer.
    let nonce = "44".repeat(32);
    let relay_key = control::relay_key(&TRANSPORT_KEY).ok_or("no relay key")?;
    for (name, answer) in [
        (
            "genuine-proof",
            Control::DeviceProof {
                key_id: 7,
                proof: control::device_proof(&relay_key, PIN, &nonce),
            },
        ),
        (
            "lan-proof-replayed",
            Control::DeviceProof {
                key_id: 7,
                proof: control::lan_proof(&TRANSPORT_KEY, PIN, &nonce),
            },
        ),
        ("activation-only", Control::ActivationOnly),
    ] {
        let mut input = TRANSPORT_KEY.to_vec();
        input.extend_from_slice(&PIN.0.to_be_bytes());
        input.push(nonce.len() as u8);
        input.extend_from_slice(nonce.as_bytes());
        input.extend_from_slice(&answer.to_payload());
        out.put("device_handshake", name, &input)?;
    }
    out.put(
        "control_decode",
        "device_hello-minimal",
        br#"{"type":"device_hello","pin":"2A3B4C5D"}"#,
    )?;
    let report = ErrorReport {
        code: ErrorReport::UNDECRYPTABLE.into(),
        message: "The server could not decrypt your message.".into(),
    };
    out.put(
        "control_decode",
        "error_report",
        &report.frame(PIN, REF_ID).payload,
    )?;

    println!(
        "corpus: {} written, {} kept, in {}",
        out.written,
        out.kept,
        out.root.display()
    );
    Ok(())
}

struct Corpus {
    root: PathBuf,
    force: bool,
    written: usize,
    kept: usize,
}

impl Corpus {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("seed-{name}"));
        if path.exists() && !self.force {
            self.kept += 1;
            return Ok(());
        }
        std::fs::write(path, bytes)?;
        self.written += 1;
        Ok(())
    }
}
