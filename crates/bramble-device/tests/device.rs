//! The device against a hand-played relay or Router on loopback TCP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use bramble_device::{Connection, Device, DeviceConfig, DeviceError, KeyStore, Path};
use bramble_proto::control::{lan_proof, nonce, proofs_match, Control, ErrorReport};
use bramble_proto::envelope::{self, TransportKey};
use bramble_proto::frame::{split, Frame, Reassembler, MAX_PAYLOAD};
use bramble_proto::io::{read_frame, write_frame};
use bramble_proto::{ContentType, Pin, RefId};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const PIN: Pin = Pin(0x2A3B_4C5D);
const LIMIT: usize = 16 * 1024 * 1024;
const WAIT: Duration = Duration::from_secs(10);

fn key(id: u32) -> TransportKey {
    TransportKey::generate(id).unwrap()
}

fn device(keys: KeyStore) -> Device {
    let mut config = DeviceConfig::new(PIN);
    config.srp_id = Some("S12345678".to_owned());
    config.model = "9700".to_owned();
    config.os_version = "5.0.0.1036".to_owned();
    config.handshake_timeout = Duration::from_secs(5);
    Device::new(config, keys)
}

/// The server or relay side of one device link.
struct Peer {
    stream: TcpStream,
}

impl Peer {
    async fn read(&mut self) -> Frame {
        timeout(WAIT, read_frame(&mut self.stream))
            .await
            .expect("peer read timed out")
            .unwrap()
            .expect("device closed the link")
    }

    async fn read_control(&mut self) -> Control {
        Control::from_frame(&self.read().await).unwrap()
    }

    async fn write(&mut self, frame: &Frame) {
        write_frame(&mut self.stream, frame).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    async fn control(&mut self, control: Control) {
        self.write(&control.frame(PIN, RefId(0))).await;
    }

    /// Seals and sends one message (split if it must be).
    async fn send_message(
        &mut self,
        key: &TransportKey,
        content_type: ContentType,
        ref_id: RefId,
        text: &[u8],
    ) {
        let sealed = envelope::seal(key, content_type, PIN, ref_id, text).unwrap();
        for frame in split(content_type, 0, PIN, ref_id, &sealed).unwrap() {
            self.write(&frame).await;
        }
    }

    /// Reads a delivery confirmation and checks it opens with `key`.
    async fn expect_confirmation(&mut self, key: &TransportKey, ref_id: RefId) {
        let frame = self.read().await;
        assert_eq!(frame.content_type, ContentType::DeliveryConfirmation);
        assert_eq!(frame.ref_id, ref_id);
        assert_eq!(frame.pin, PIN);
        let opened = envelope::open(
            |id| (id == key.id).then_some(key),
            ContentType::DeliveryConfirmation,
            PIN,
            ref_id,
            &frame.payload,
            LIMIT,
        )
        .expect("the confirmation is sealed with the device key");
        assert!(opened.is_empty());
    }

    /// Nothing more arrives for a moment (the device did not answer).
    async fn expect_silence(&mut self) {
        let got = timeout(Duration::from_millis(300), read_frame(&mut self.stream)).await;
        assert!(got.is_err(), "unexpected packet: {got:?}");
    }
}

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Accepts the device, checks its hello and welcomes it.
async fn accept_and_welcome(listener: &TcpListener) -> Peer {
    let (stream, _) = listener.accept().await.unwrap();
    let mut peer = Peer { stream };
    match peer.read_control().await {
        Control::DeviceHello { pin, .. } => assert_eq!(pin, PIN),
        other => panic!("expected a hello, got {other:?}"),
    }
    peer.control(Control::Welcome).await;
    peer
}

/// A device linked to a hand-played relay.
async fn linked(keys: KeyStore) -> (Device, Connection, Peer) {
    let (listener, addr) = listen().await;
    let device = device(keys);
    let (connection, peer) = tokio::join!(
        device.connect(Path::Relay(addr)),
        accept_and_welcome(&listener)
    );
    (device, connection.unwrap(), peer)
}

async fn recv(connection: &Connection) -> bramble_device::Received {
    timeout(WAIT, connection.recv())
        .await
        .expect("recv timed out")
        .expect("link ended")
}

#[tokio::test]
async fn hello_and_welcome_over_the_relay() {
    let (listener, addr) = listen().await;
    let device = device(KeyStore::new(key(1)));
    let relay = async {
        let (stream, _) = listener.accept().await.unwrap();
        let mut peer = Peer { stream };
        let hello = peer.read().await;
        assert_eq!(hello.content_type, ContentType::Control);
        assert_eq!(hello.pin, PIN);
        assert_eq!(
            Control::from_frame(&hello).unwrap(),
            Control::DeviceHello {
                pin: PIN,
                srp_id: Some("S12345678".to_owned()),
                model: "9700".to_owned(),
                os_version: "5.0.0.1036".to_owned(),
            }
        );
        peer.control(Control::Welcome).await;
        peer
    };
    let (connection, _peer) = tokio::join!(device.connect(Path::Relay(addr)), relay);
    let connection = connection.unwrap();
    assert_eq!(connection.path(), Path::Relay(addr));
    assert!(!connection.is_closed());
    assert_eq!(connection.stats(), Default::default());
    connection.close().await;
}

#[tokio::test]
async fn refused_by_the_relay() {
    let (listener, addr) = listen().await;
    let device = device(KeyStore::new(key(1)));
    let relay = async {
        let (stream, _) = listener.accept().await.unwrap();
        let mut peer = Peer { stream };
        peer.read_control().await;
        peer.control(Control::Refused {
            reason: "unknown SRP ID".to_owned(),
        })
        .await;
        peer
    };
    let (result, _peer) = tokio::join!(device.connect(Path::Relay(addr)), relay);
    match result {
        Err(DeviceError::Refused(reason)) => assert_eq!(reason, "unknown SRP ID"),
        other => panic!("expected refused, got {other:?}"),
    }
}

#[tokio::test]
async fn no_answer_times_out_and_nobody_listening_fails() {
    let (listener, addr) = listen().await;
    let mut config = DeviceConfig::new(PIN);
    config.handshake_timeout = Duration::from_millis(200);
    let device = Device::new(config, KeyStore::new(key(1)));
    let silent = async {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        stream
    };
    let (result, _stream) = tokio::join!(device.connect(Path::Relay(addr)), silent);
    assert!(
        matches!(result, Err(DeviceError::HandshakeTimeout(_))),
        "{result:?}"
    );

    drop(listener);
    let result = device.connect(Path::Relay(addr)).await;
    assert!(
        matches!(
            result,
            Err(DeviceError::Connect { .. }) | Err(DeviceError::HandshakeTimeout(_))
        ),
        "{result:?}"
    );
}

/// Plays the Router's LAN listener: challenge, check the proof with
/// `router_key`, then welcome or refuse.
async fn lan_router(listener: &TcpListener, router_key: &TransportKey) -> (Peer, bool) {
    let (stream, _) = listener.accept().await.unwrap();
    let mut peer = Peer { stream };
    assert!(matches!(
        peer.read_control().await,
        Control::DeviceHello { pin: PIN, .. }
    ));
    let challenge = nonce();
    peer.control(Control::LanChallenge {
        nonce: challenge.clone(),
    })
    .await;
    let Control::LanProof { key_id, proof } = peer.read_control().await else {
        panic!("expected a LAN proof");
    };
    let expected = lan_proof(router_key.secret(), PIN, &challenge);
    let good = key_id == router_key.id && proofs_match(&proof, &expected);
    if good {
        peer.control(Control::Welcome).await;
    } else {
        peer.control(Control::Refused {
            reason: "the device did not prove its key".to_owned(),
        })
        .await;
    }
    (peer, good)
}

#[tokio::test]
async fn lan_challenge_and_proof() {
    let (listener, addr) = listen().await;
    let k = key(4);
    let device = device(KeyStore::new(k.clone()));
    let (connection, (mut peer, good)) =
        tokio::join!(device.connect(Path::Lan(addr)), lan_router(&listener, &k));
    assert!(good);
    let connection = connection.unwrap();
    // The LAN link carries messages like the relay link.
    peer.send_message(&k, ContentType::Cmime, RefId(77), b"over the LAN")
        .await;
    assert_eq!(recv(&connection).await.plaintext, b"over the LAN");
    peer.expect_confirmation(&k, RefId(77)).await;
}

#[tokio::test]
async fn lan_wrong_key_is_refused() {
    let (listener, addr) = listen().await;
    let router_key = key(4);
    let device = device(KeyStore::new(TransportKey::generate(4).unwrap()));
    let (result, (_peer, good)) = tokio::join!(
        device.connect(Path::Lan(addr)),
        lan_router(&listener, &router_key)
    );
    assert!(!good);
    assert!(matches!(result, Err(DeviceError::Refused(_))), "{result:?}");
}

#[tokio::test]
async fn lan_challenge_is_not_answered_on_the_relay_path_or_without_a_key() {
    let (listener, addr) = listen().await;
    let device = device(KeyStore::new(key(1)));
    let relay = async {
        let (stream, _) = listener.accept().await.unwrap();
        let mut peer = Peer { stream };
        peer.read_control().await;
        peer.control(Control::LanChallenge { nonce: nonce() }).await;
        peer
    };
    let (result, mut peer) = tokio::join!(device.connect(Path::Relay(addr)), relay);
    assert!(
        matches!(result, Err(DeviceError::Unexpected(_))),
        "{result:?}"
    );
    assert!(
        timeout(WAIT, read_frame(&mut peer.stream))
            .await
            .unwrap()
            .unwrap()
            .is_none(),
        "no proof, just closed"
    );

    let unkeyed = self::device(KeyStore::default());
    let router = async {
        let (stream, _) = listener.accept().await.unwrap();
        let mut peer = Peer { stream };
        peer.read_control().await;
        peer.control(Control::LanChallenge { nonce: nonce() }).await;
        peer
    };
    let (result, _peer) = tokio::join!(unkeyed.connect(Path::Lan(addr)), router);
    assert!(matches!(result, Err(DeviceError::NoKey)), "{result:?}");
}

#[tokio::test]
async fn message_is_shown_once_and_confirmed() {
    let k = key(1);
    let (device, connection, mut peer) = linked(KeyStore::new(k.clone())).await;
    let text = "Subject: Q3\r\n\r\nNumbers attached. ".repeat(40);
    peer.send_message(&k, ContentType::Cmime, RefId(0xABCD), text.as_bytes())
        .await;
    peer.expect_confirmation(&k, RefId(0xABCD)).await;
    let got = recv(&connection).await;
    assert_eq!(got.ref_id, RefId(0xABCD));
    assert_eq!(got.content_type, ContentType::Cmime);
    assert_eq!(got.plaintext, text.as_bytes());
    let stats = connection.stats();
    assert_eq!(
        (stats.received, stats.confirmations_sent, stats.duplicates),
        (1, 1, 0)
    );
    assert_eq!(device.remembered(), 1);
}

#[tokio::test]
async fn same_ref_id_twice_is_shown_once_and_confirmed_twice() {
    let k = key(1);
    let (_device, connection, mut peer) = linked(KeyStore::new(k.clone())).await;
    // Sealed twice, as a server resending after a lost confirmation would.
    peer.send_message(&k, ContentType::Cmime, RefId(5), b"hello")
        .await;
    peer.send_message(&k, ContentType::Cmime, RefId(5), b"hello")
        .await;
    peer.send_message(&k, ContentType::Cmime, RefId(6), b"next")
        .await;
    peer.expect_confirmation(&k, RefId(5)).await;
    peer.expect_confirmation(&k, RefId(5)).await;
    peer.expect_confirmation(&k, RefId(6)).await;
    assert_eq!(recv(&connection).await.ref_id, RefId(5));
    assert_eq!(recv(&connection).await.ref_id, RefId(6));
    let stats = connection.stats();
    assert_eq!(
        (stats.received, stats.duplicates, stats.confirmations_sent),
        (2, 1, 3)
    );
}

#[tokio::test]
async fn duplicates_are_recognised_across_reconnects() {
    let k = key(1);
    let (listener, addr) = listen().await;
    let device = device(KeyStore::new(k.clone()));
    let (first, peer) = tokio::join!(
        device.connect(Path::Relay(addr)),
        accept_and_welcome(&listener)
    );
    let (first, mut peer) = (first.unwrap(), peer);
    peer.send_message(&k, ContentType::Cmime, RefId(9), b"once")
        .await;
    peer.expect_confirmation(&k, RefId(9)).await;
    assert_eq!(recv(&first).await.ref_id, RefId(9));
    first.close().await;

    let (second, peer) = tokio::join!(
        device.connect(Path::Relay(addr)),
        accept_and_welcome(&listener)
    );
    let (second, mut peer) = (second.unwrap(), peer);
    peer.send_message(&k, ContentType::Cmime, RefId(9), b"once")
        .await;
    peer.expect_confirmation(&k, RefId(9)).await;
    peer.send_message(&k, ContentType::Cmime, RefId(10), b"twice")
        .await;
    peer.expect_confirmation(&k, RefId(10)).await;
    assert_eq!(
        recv(&second).await.ref_id,
        RefId(10),
        "RefID 9 is not shown again"
    );
    assert_eq!(second.stats().duplicates, 1);
}

#[tokio::test]
async fn previous_and_pending_keys_open() {
    let (previous, current, pending) = (key(1), key(2), key(3));
    let keys = KeyStore {
        current: Some(current.clone()),
        pending: Some(pending.clone()),
        previous: Some(previous.clone()),
    };
    let (device, connection, mut peer) = linked(keys).await;
    peer.send_message(&previous, ContentType::Cmime, RefId(1), b"old key")
        .await;
    peer.send_message(&pending, ContentType::ServiceBook, RefId(2), b"new key")
        .await;
    // Confirmations are always sealed with the current key.
    peer.expect_confirmation(&current, RefId(1)).await;
    peer.expect_confirmation(&current, RefId(2)).await;
    assert_eq!(recv(&connection).await.plaintext, b"old key");
    assert_eq!(recv(&connection).await.plaintext, b"new key");

    // After the change the old current key is the previous one and still opens.
    assert!(device.promote_keys());
    peer.send_message(&current, ContentType::Cmime, RefId(3), b"in flight")
        .await;
    peer.expect_confirmation(&pending, RefId(3)).await;
    assert_eq!(recv(&connection).await.plaintext, b"in flight");
    // The forgotten key no longer does.
    peer.send_message(&previous, ContentType::Cmime, RefId(4), b"too old")
        .await;
    peer.expect_silence().await;
    assert_eq!(connection.stats().undecryptable, 1);
}

#[tokio::test]
async fn tampered_envelope_is_not_confirmed_and_the_link_stays_up() {
    let k = key(1);
    let (_device, connection, mut peer) = linked(KeyStore::new(k.clone())).await;
    let mut sealed = envelope::seal(&k, ContentType::Cmime, PIN, RefId(1), b"genuine").unwrap();
    let last = sealed.len() - 1;
    sealed[last] ^= 0x40;
    peer.write(&Frame::single(ContentType::Cmime, PIN, RefId(1), sealed))
        .await;
    // Sealed with a key the device does not have, and for another PIN.
    peer.send_message(&key(9), ContentType::Cmime, RefId(2), b"stranger")
        .await;
    let other =
        envelope::seal(&k, ContentType::Cmime, Pin(1), RefId(3), b"someone else's").unwrap();
    peer.write(&Frame::single(ContentType::Cmime, PIN, RefId(3), other))
        .await;
    peer.write(&Frame::single(
        ContentType::Cmime,
        PIN,
        RefId(4),
        b"short".to_vec(),
    ))
    .await;
    peer.expect_silence().await;
    assert_eq!(connection.stats().undecryptable, 4);
    assert_eq!(connection.stats().confirmations_sent, 0);
    assert!(!connection.is_closed());

    peer.send_message(&k, ContentType::Cmime, RefId(1), b"genuine")
        .await;
    peer.expect_confirmation(&k, RefId(1)).await;
    assert_eq!(recv(&connection).await.plaintext, b"genuine");
}

#[tokio::test]
async fn large_message_arrives_whole_and_large_send_is_split() {
    let k = key(1);
    let (_device, connection, mut peer) = linked(KeyStore::new(k.clone())).await;
    // 200 KB that does not compress, so the envelope needs 4 packets.
    let mut big = vec![0u8; 200_000];
    let mut state = 0x1234_5678u32;
    for byte in &mut big {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        *byte = state as u8;
    }
    let sealed = envelope::seal(&k, ContentType::Mds, PIN, RefId(7), &big).unwrap();
    let frames = split(ContentType::Mds, 0, PIN, RefId(7), &sealed).unwrap();
    assert_eq!(frames.len(), 4);
    // Interleave a small message between the fragments.
    for (i, frame) in frames.iter().enumerate() {
        peer.write(frame).await;
        if i == 1 {
            peer.send_message(&k, ContentType::Im, RefId(8), b"hi")
                .await;
        }
    }
    peer.expect_confirmation(&k, RefId(8)).await;
    peer.expect_confirmation(&k, RefId(7)).await;
    assert_eq!(recv(&connection).await.ref_id, RefId(8));
    let got = recv(&connection).await;
    assert_eq!(got.ref_id, RefId(7));
    assert_eq!(got.plaintext, big);

    // And the other way.
    connection
        .send(ContentType::Sync, RefId(70), &big)
        .await
        .unwrap();
    let mut reassembler = Reassembler::default();
    let mut packets = 0;
    let message = loop {
        let frame = peer.read().await;
        assert!(frame.payload.len() <= MAX_PAYLOAD);
        packets += 1;
        if let Some(message) = reassembler.push(frame).unwrap() {
            break message;
        }
    };
    assert_eq!(packets, 4);
    let opened = envelope::open(
        |_| Some(&k),
        ContentType::Sync,
        PIN,
        RefId(70),
        &message.payload,
        LIMIT,
    )
    .unwrap();
    assert_eq!(opened, big);
}

#[tokio::test]
async fn send_produces_an_envelope_the_server_opens() {
    let (previous, current) = (key(1), key(2));
    let keys = KeyStore {
        current: Some(current.clone()),
        pending: None,
        previous: Some(previous),
    };
    let (_device, connection, mut peer) = linked(keys).await;
    let text = b"To: alice@example.com\r\nSubject: from the road\r\n\r\nOn my way.";
    connection
        .send(ContentType::Cmime, RefId(0x51), text)
        .await
        .unwrap();
    let frame = peer.read().await;
    assert_eq!(
        (frame.content_type, frame.pin, frame.ref_id),
        (ContentType::Cmime, PIN, RefId(0x51))
    );
    assert_eq!(
        envelope::key_id(&frame.payload).unwrap(),
        current.id,
        "sealed with the current key"
    );
    let opened = envelope::open(
        |id| (id == current.id).then_some(&current),
        ContentType::Cmime,
        PIN,
        RefId(0x51),
        &frame.payload,
        LIMIT,
    )
    .unwrap();
    assert_eq!(opened, text);
    assert_eq!(connection.stats().sent, 1);

    // The server confirms it; the device checks and counts that.
    let confirmation = envelope::seal(
        &current,
        ContentType::DeliveryConfirmation,
        PIN,
        RefId(0x51),
        b"",
    )
    .unwrap();
    peer.write(&Frame::single(
        ContentType::DeliveryConfirmation,
        PIN,
        RefId(0x51),
        confirmation,
    ))
    .await;
    // Control and error packets are not messages.
    assert!(matches!(
        connection.send(ContentType::Control, RefId(1), b"{}").await,
        Err(DeviceError::NotAMessage(ContentType::Control))
    ));
    // A ping/pong round trip orders things: the confirmation was handled before.
    peer.write(&Control::Ping.frame(PIN, RefId(42))).await;
    let pong = peer.read().await;
    assert_eq!(Control::from_frame(&pong).unwrap(), Control::Pong);
    assert_eq!(pong.ref_id, RefId(42));
    assert_eq!(connection.stats().confirmations_received, 1);
}

#[tokio::test]
async fn send_without_a_key_or_too_large_fails_cleanly() {
    let (_device, connection, mut peer) = linked(KeyStore::default()).await;
    assert!(matches!(
        connection.send(ContentType::Cmime, RefId(1), b"x").await,
        Err(DeviceError::NoKey)
    ));
    let (listener, addr) = listen().await;
    let mut config = DeviceConfig::new(PIN);
    config.max_message = 1000;
    let small = Device::new(config, KeyStore::new(key(1)));
    let (c, _p) = tokio::join!(
        small.connect(Path::Relay(addr)),
        accept_and_welcome(&listener)
    );
    assert!(matches!(
        c.unwrap()
            .send(ContentType::Cmime, RefId(1), &[0; 1001])
            .await,
        Err(DeviceError::TooLarge {
            size: 1001,
            limit: 1000
        })
    ));
    peer.expect_silence().await;
}

#[tokio::test]
async fn error_packets_reach_next_error() {
    let k = key(1);
    let (_device, connection, mut peer) = linked(KeyStore::new(k.clone())).await;
    let report = ErrorReport {
        code: ErrorReport::UNDECRYPTABLE.to_owned(),
        message: "The server could not decrypt your message.".to_owned(),
    };
    peer.write(&report.frame(PIN, RefId(0x99))).await;
    peer.write(&Frame::single(
        ContentType::Error,
        PIN,
        RefId(0x9A),
        b"not json".to_vec(),
    ))
    .await;
    let (ref_id, got) = timeout(WAIT, connection.next_error())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((ref_id, got), (RefId(0x99), report));
    let (ref_id, got) = timeout(WAIT, connection.next_error())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ref_id, RefId(0x9A));
    assert_eq!(got.code, "MALFORMED");
    assert_eq!(connection.stats().errors, 2);
    // Errors are not messages and are not confirmed.
    peer.expect_silence().await;
}

#[tokio::test]
async fn truncated_packet_closes_the_link_with_an_error() {
    let k = key(1);
    let (_device, connection, mut peer) = linked(KeyStore::new(k.clone())).await;
    peer.send_message(&k, ContentType::Cmime, RefId(1), b"before")
        .await;
    let bytes = Frame::single(ContentType::Cmime, PIN, RefId(2), vec![0; 500])
        .encode()
        .unwrap();
    peer.stream.write_all(&bytes[..100]).await.unwrap();
    peer.stream.shutdown().await.unwrap();
    let end = timeout(WAIT, connection.closed()).await.unwrap();
    assert!(matches!(end, Err(DeviceError::Truncated)), "{end:?}");
    assert!(connection.is_closed());
    // What arrived before is still there, then the end.
    assert_eq!(recv(&connection).await.plaintext, b"before");
    assert!(connection.recv().await.is_none());
    assert!(connection.next_error().await.is_none());
    assert!(matches!(
        connection.send(ContentType::Cmime, RefId(3), b"x").await,
        Err(DeviceError::Closed)
    ));
}

#[tokio::test]
async fn oversized_packet_or_other_version_closes_the_link_with_an_error() {
    let k = key(1);
    let other_version = {
        let mut bad = Frame::single(ContentType::Cmime, PIN, RefId(2), vec![1])
            .encode()
            .unwrap();
        bad[4] = 2;
        bad
    };
    for garbage in [
        vec![0xFF, 0xFF, 0xFF, 0xFF, 0, 0],
        vec![0, 0, 0, 3],
        other_version,
    ] {
        let (_device, connection, mut peer) = linked(KeyStore::new(k.clone())).await;
        peer.stream.write_all(&garbage).await.unwrap();
        let end = timeout(WAIT, connection.closed()).await.unwrap();
        assert!(matches!(end, Err(DeviceError::Malformed(_))), "{end:?}");
        assert!(connection.recv().await.is_none());
        drop(connection);
        // The device's side is gone: the peer reads end-of-stream.
        let tail = timeout(WAIT, read_frame(&mut peer.stream)).await.unwrap();
        assert!(tail.unwrap_or(None).is_none());
    }
}

#[tokio::test]
async fn well_framed_but_unknown_packets_are_skipped() {
    let k = key(1);
    let (_device, connection, mut peer) = linked(KeyStore::new(k.clone())).await;
    let good = Frame::single(ContentType::Cmime, PIN, RefId(2), vec![1; 10])
        .encode()
        .unwrap();
    let mut unknown_type = good.clone();
    unknown_type[5] = 200;
    let mut unknown_flags = good.clone();
    unknown_flags[6] = 0x80;
    let mut bad_fragment = good;
    bad_fragment[20..24].copy_from_slice(&[0, 3, 0, 2]);
    for packet in [unknown_type, unknown_flags, bad_fragment] {
        peer.stream.write_all(&packet).await.unwrap();
    }
    // A lone fragment claiming more than the size limit allows.
    let mut huge = Frame::single(ContentType::Cmime, PIN, RefId(3), vec![0; 10]);
    huge.fragment_count = u16::MAX;
    peer.write(&huge).await;
    peer.send_message(&k, ContentType::Cmime, RefId(4), b"still here")
        .await;
    peer.expect_confirmation(&k, RefId(4)).await;
    assert_eq!(recv(&connection).await.plaintext, b"still here");
    assert_eq!(connection.stats().malformed, 4);
    assert!(!connection.is_closed());
}

#[tokio::test]
async fn clean_close_by_the_peer_and_by_the_device() {
    let (_device, connection, peer) = linked(KeyStore::new(key(1))).await;
    drop(peer);
    assert!(timeout(WAIT, connection.closed()).await.unwrap().is_ok());
    assert!(connection.recv().await.is_none());

    let (_device, connection, mut peer) = linked(KeyStore::new(key(1))).await;
    connection.close().await;
    assert!(timeout(WAIT, read_frame(&mut peer.stream))
        .await
        .unwrap()
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn refused_mid_link_ends_it() {
    let (_device, connection, mut peer) = linked(KeyStore::new(key(1))).await;
    peer.control(Control::Refused {
        reason: "device disabled".to_owned(),
    })
    .await;
    let end = timeout(WAIT, connection.closed()).await.unwrap();
    assert!(
        matches!(end, Err(DeviceError::Refused(ref r)) if r == "device disabled"),
        "{end:?}"
    );
}

#[tokio::test]
async fn a_full_inbox_holds_back_reading_until_recv() {
    let k = key(1);
    let (_device, connection, mut peer) = linked(KeyStore::new(k.clone())).await;
    let total = bramble_device::INBOX_LEN as u64 + 4;
    for id in 0..total {
        peer.send_message(&k, ContentType::Im, RefId(id), format!("m{id}").as_bytes())
            .await;
    }
    // The inbox takes INBOX_LEN; the next message waits, unconfirmed.
    for id in 0..bramble_device::INBOX_LEN as u64 {
        peer.expect_confirmation(&k, RefId(id)).await;
    }
    peer.expect_silence().await;
    for id in 0..total {
        let got = recv(&connection).await;
        assert_eq!(got.ref_id, RefId(id));
        assert_eq!(got.plaintext, format!("m{id}").as_bytes());
    }
    for id in bramble_device::INBOX_LEN as u64..total {
        peer.expect_confirmation(&k, RefId(id)).await;
    }
    assert_eq!(connection.stats().received, total);
}
