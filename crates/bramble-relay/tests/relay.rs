//! The relay over real TCP on loopback: enterprise servers through
//! `bramble_relay::client` (TLS with the relay's certificate pinned),
//! devices as plain framed TCP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use bramble_proto::control::{
    device_proof, hex, relay_key, srp_relay_proof, Control, DeviceRelayKeys, ErrorReport,
    RelayKeyEntry, TransportStatus,
};
use bramble_proto::frame::{split, Frame, MAX_PAYLOAD};
use bramble_proto::io::{read_frame, write_frame};
use bramble_proto::{ContentType, Pin, RefId};
use bramble_relay::client::{
    connect_srp, connect_tls, ClientTls, LinkError, LinkReader, LinkWriter,
};
use bramble_relay::{reject, run, Relay, RelayConfig, RelayHandle, RelayStats, SrpAccount};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout, Instant};

const S1_KEY: &[u8] = b"s1-authentication-key";
const S2_KEY: &[u8] = b"s2-authentication-key";
const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

fn config() -> RelayConfig {
    RelayConfig {
        server_listen: "127.0.0.1:0".parse().unwrap(),
        device_listen: "127.0.0.1:0".parse().unwrap(),
        srp_accounts: vec![SrpAccount::new("S1", S1_KEY), SrpAccount::new("S2", S2_KEY)],
        ..RelayConfig::default()
    }
}

async fn start(config: RelayConfig) -> RelayHandle {
    Relay::start(config).await.unwrap()
}

fn info(name: &str) -> Control {
    Control::ServerInfo {
        server_name: name.into(),
        version: "5.0.0".into(),
    }
}

async fn wait_for(relay: &RelayHandle, what: &str, test: impl Fn(&RelayStats) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = relay.stats();
        if test(&stats) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {stats:?}"
        );
        sleep(Duration::from_millis(10)).await;
    }
}

async fn recv_from<R: AsyncRead + Unpin>(r: &mut R, who: &str) -> Frame {
    timeout(WAIT, read_frame(r))
        .await
        .unwrap_or_else(|_| panic!("{who}: nothing arrived"))
        .unwrap_or_else(|e| panic!("{who}: {e}"))
        .unwrap_or_else(|| panic!("{who}: closed"))
}

async fn quiet<R: AsyncRead + Unpin>(r: &mut R, who: &str) {
    if let Ok(read) = timeout(QUIET, read_frame(r)).await {
        panic!("{who} should have received nothing, got {read:?}");
    }
}

/// True once the peer has closed (clean end or error), ignoring frames.
async fn closed<R: AsyncRead + Unpin>(r: &mut R) -> bool {
    timeout(WAIT, async {
        loop {
            match read_frame(r).await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return true,
            }
        }
    })
    .await
    .unwrap_or(false)
}

async fn send_to<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) {
    write_frame(w, frame).await.unwrap();
    w.flush().await.unwrap();
}

fn cmime(pin: Pin, ref_id: u64, text: &str) -> Frame {
    Frame::single(
        ContentType::Cmime,
        pin,
        RefId(ref_id),
        text.as_bytes().to_vec(),
    )
}

struct Server {
    r: LinkReader,
    w: LinkWriter,
}

async fn try_server(relay: &RelayHandle, srp_id: &str, key: &[u8]) -> Result<Server, LinkError> {
    let (r, w) = connect_srp(
        &relay.server_addr().to_string(),
        ClientTls::pinned(relay.certificate_pem()),
        srp_id,
        key,
        info("BES-test"),
    )
    .await?;
    Ok(Server { r, w })
}

async fn server(relay: &RelayHandle, srp_id: &str, key: &[u8]) -> Server {
    let s = try_server(relay, srp_id, key).await.unwrap();
    // The link is registered once the relay has read the basic information
    // packet; wait for it so tests see live routing, not the store.
    wait_for(relay, "the server link", |st| st.servers_connected >= 1).await;
    s
}

impl Server {
    async fn send(&mut self, frame: &Frame) {
        send_to(&mut self.w, frame).await;
    }

    async fn recv(&mut self) -> Frame {
        recv_from(&mut self.r, "server").await
    }

    async fn report(&mut self, pin: Pin, ref_id: u64) -> TransportStatus {
        let f = self.recv().await;
        assert_eq!(
            (f.pin, f.ref_id),
            (pin, RefId(ref_id)),
            "report header: {f:?}"
        );
        match Control::from_frame(&f).unwrap() {
            Control::Transport { status } => status,
            other => panic!("expected a transport report, got {other:?}"),
        }
    }

    async fn quiet(&mut self) {
        quiet(&mut self.r, "server").await;
    }

    /// Registers the test keys of `pins` with the relay, and waits until
    /// the relay has them (a ping sent after is answered after).
    async fn register(&mut self, pins: &[u32]) {
        let devices = pins.iter().map(|p| registration(Pin(*p))).collect();
        self.send(
            &Control::DeviceKeys {
                reset: false,
                devices,
            }
            .frame(Pin(0), RefId(0)),
        )
        .await;
        self.send(&Control::Ping.frame(Pin(0), RefId(0xBEEF))).await;
        let pong = self.recv().await;
        assert_eq!(
            (Control::from_frame(&pong).unwrap(), pong.ref_id),
            (Control::Pong, RefId(0xBEEF))
        );
    }
}

struct Device {
    r: tokio::net::tcp::OwnedReadHalf,
    w: tokio::net::tcp::OwnedWriteHalf,
    pin: Pin,
    /// The relay's challenge of this connection.
    nonce: String,
}

/// Id of every test device's transport key.
const KEY_ID: u32 = 7;

/// The transport key a test device holds: its own, derived from its PIN.
fn transport_key(pin: Pin) -> Vec<u8> {
    let mut seed = b"test transport key ".to_vec();
    seed.extend_from_slice(&pin.0.to_be_bytes());
    openssl::sha::sha256(&seed).to_vec()
}

/// What the device's server registers for it.
fn registration(pin: Pin) -> DeviceRelayKeys {
    DeviceRelayKeys {
        pin,
        keys: vec![RelayKeyEntry {
            key_id: KEY_ID,
            key: hex(&relay_key(&transport_key(pin)).unwrap()),
        }],
    }
}

/// How a test device answers the relay's challenge.
enum Answer {
    /// Proves the key it holds.
    Prove,
    /// Proves with this (wrong) key.
    ProveWith(Vec<u8>),
    /// Has no key: activation only.
    ActivationOnly,
}

/// Hello, challenge, answer; then the relay's verdict: `Ok` on `welcome`,
/// `Err` with the reason of a `refused` (or why nothing came).
async fn handshake(tcp: TcpStream, pin: Pin, answer: Answer) -> Result<Device, String> {
    let (r, w) = tcp.into_split();
    let mut d = Device {
        r,
        w,
        pin,
        nonce: String::new(),
    };
    let hello = Control::DeviceHello {
        pin,
        srp_id: Some("S1".into()),
        model: "8900".into(),
        os_version: "5.0.0.411".into(),
    };
    d.send(&hello.frame(pin, RefId(0))).await;
    let first = timeout(WAIT, read_frame(&mut d.r)).await;
    let nonce = match first {
        Ok(Ok(Some(frame))) => match Control::from_frame(&frame) {
            Ok(Control::DeviceChallenge { nonce }) => nonce,
            Ok(Control::Refused { reason }) => return Err(reason),
            other => return Err(format!("expected a challenge, got {other:?}")),
        },
        other => return Err(format!("no challenge: {other:?}")),
    };
    d.nonce = nonce.clone();
    let reply = match answer {
        Answer::Prove => Control::DeviceProof {
            key_id: KEY_ID,
            proof: device_proof(&relay_key(&transport_key(pin)).unwrap(), pin, &nonce),
        },
        Answer::ProveWith(key) => Control::DeviceProof {
            key_id: KEY_ID,
            proof: device_proof(&relay_key(&key).unwrap(), pin, &nonce),
        },
        Answer::ActivationOnly => Control::ActivationOnly,
    };
    d.send(&reply.frame(pin, RefId(0))).await;
    match timeout(WAIT, read_frame(&mut d.r)).await {
        Ok(Ok(Some(frame))) => match Control::from_frame(&frame) {
            Ok(Control::Welcome) => Ok(d),
            Ok(Control::Refused { reason }) => Err(reason),
            other => Err(format!("expected welcome, got {other:?}")),
        },
        other => Err(format!("no welcome: {other:?}")),
    }
}

/// A device that proves its key (its server must have registered it).
async fn device(relay: &RelayHandle, pin: u32) -> Device {
    let tcp = TcpStream::connect(relay.device_addr()).await.unwrap();
    handshake(tcp, Pin(pin), Answer::Prove)
        .await
        .unwrap_or_else(|why| panic!("device {pin:#x} refused: {why}"))
}

/// A device with no key yet: an activation-only link.
async fn activating(relay: &RelayHandle, pin: u32) -> Device {
    let tcp = TcpStream::connect(relay.device_addr()).await.unwrap();
    handshake(tcp, Pin(pin), Answer::ActivationOnly)
        .await
        .unwrap_or_else(|why| panic!("device {pin:#x} refused: {why}"))
}

impl Device {
    async fn send(&mut self, frame: &Frame) {
        send_to(&mut self.w, frame).await;
    }

    async fn recv(&mut self) -> Frame {
        recv_from(&mut self.r, "device").await
    }

    async fn quiet(&mut self) {
        quiet(&mut self.r, "device").await;
    }
}

#[tokio::test]
async fn srp_handshake_and_delivery_with_reports() {
    let relay = start(config()).await;
    let mut s = server(&relay, "S1", S1_KEY).await;
    s.register(&[0x2A3B4C5D]).await;
    let mut d = device(&relay, 0x2A3B4C5D).await;

    let mail = cmime(d.pin, 1, "encrypted envelope");
    s.send(&mail).await;
    assert_eq!(d.recv().await, mail);
    assert_eq!(s.report(d.pin, 1).await, TransportStatus::DeliveredToDevice);

    // A three-packet message: relayed as packets in order, one report.
    let payload = vec![0x5A; 2 * MAX_PAYLOAD + 10];
    let frames = split(ContentType::Sync, 0, d.pin, RefId(2), &payload).unwrap();
    assert_eq!(frames.len(), 3);
    for f in &frames {
        s.send(f).await;
    }
    for f in &frames {
        assert_eq!(&d.recv().await, f);
    }
    assert_eq!(s.report(d.pin, 2).await, TransportStatus::DeliveredToDevice);
    s.quiet().await;

    // Ping → pong on both links, with the ping's header.
    s.send(&Control::Ping.frame(Pin(0), RefId(7))).await;
    let pong = s.recv().await;
    assert_eq!(
        (Control::from_frame(&pong).unwrap(), pong.ref_id),
        (Control::Pong, RefId(7))
    );
    d.send(&Control::Ping.frame(d.pin, RefId(8))).await;
    let pong = d.recv().await;
    assert_eq!(
        (Control::from_frame(&pong).unwrap(), pong.ref_id),
        (Control::Pong, RefId(8))
    );

    let stats = relay.stats();
    assert_eq!(stats.routed, 4);
    assert_eq!((stats.servers_connected, stats.devices_connected), (1, 1));
    assert_eq!(stats.auth_failures, 0);
    relay.shutdown().await;
}

#[tokio::test]
async fn wrong_key_is_refused_and_counted() {
    let relay = start(config()).await;
    // The relay proves itself first; with a different key its proof does
    // not verify and the server never answers.
    let err = try_server(&relay, "S1", b"not the key")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, LinkError::RelayProofInvalid { .. }), "{err}");
    assert!(
        err.to_string().contains("Settings → Wireless network"),
        "{err}"
    );
    wait_for(&relay, "the failure to be counted", |st| {
        st.auth_failures == 1
    })
    .await;

    // A server that answers with a wrong proof is rejected explicitly.
    let mut tls = connect_tls(
        &relay.server_addr().to_string(),
        &ClientTls::pinned(relay.certificate_pem()),
    )
    .await
    .unwrap();
    let hello = Control::SrpHello {
        srp_id: "S1".into(),
        nonce: "00ff".into(),
    };
    send_to(&mut tls, &hello.frame(Pin(0), RefId(0))).await;
    let challenge = Control::from_frame(&recv_from(&mut tls, "raw server").await).unwrap();
    assert!(
        matches!(challenge, Control::SrpChallenge { .. }),
        "{challenge:?}"
    );
    send_to(
        &mut tls,
        &Control::SrpResponse {
            proof: "ab".repeat(32),
        }
        .frame(Pin(0), RefId(0)),
    )
    .await;
    match Control::from_frame(&recv_from(&mut tls, "raw server").await).unwrap() {
        Control::SrpRejected { reason, code } => {
            assert!(reason.starts_with(reject::BAD_KEY), "{reason}");
            assert_eq!(code.as_deref(), Some("BAD_KEY"));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(closed(&mut tls).await);
    wait_for(&relay, "the second failure", |st| st.auth_failures == 2).await;
    assert_eq!(relay.stats().servers_connected, 0);
    relay.shutdown().await;
}

/// A stand-in relay for testing the server side: accepts TLS, then runs
/// `script` on the stream; returns the address and the certificate.
async fn fake_relay<F, Fut>(script: F) -> (SocketAddr, String, tokio::task::JoinHandle<Fut::Output>)
where
    F: FnOnce(tokio_openssl::SslStream<TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let identity = bramble_relay::tls::self_signed().unwrap();
    let acceptor = identity.acceptor().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let stream = bramble_relay::tls::accept(&acceptor, tcp).await.unwrap();
        script(stream).await
    });
    (addr, identity.certificate_pem(), task)
}

#[tokio::test]
async fn server_side_refuses_a_relay_with_a_wrong_proof() {
    let (addr, pem, fake) = fake_relay(|mut stream| async move {
        let Control::SrpHello { srp_id, nonce } =
            Control::from_frame(&recv_from(&mut stream, "fake").await).unwrap()
        else {
            panic!("expected a hello")
        };
        let relay_nonce = "11".repeat(32);
        let proof = srp_relay_proof(b"impostor's guess", &srp_id, &nonce, &relay_nonce);
        let challenge = Control::SrpChallenge {
            nonce: relay_nonce,
            proof,
        };
        send_to(&mut stream, &challenge.frame(Pin(0), RefId(0))).await;
        // What the server does next: it must not send its proof.
        timeout(WAIT, read_frame(&mut stream)).await.unwrap()
    })
    .await;
    let err = connect_srp(
        &addr.to_string(),
        ClientTls::pinned(pem),
        "S1",
        S1_KEY,
        info("BES"),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, LinkError::RelayProofInvalid { .. }), "{err}");
    assert!(err.to_string().contains("not the genuine relay"), "{err}");
    let after = fake.await.unwrap();
    assert!(
        !matches!(after, Ok(Some(_))),
        "the server answered an impostor: {after:?}"
    );
}

#[tokio::test]
async fn server_side_reports_a_key_the_relay_refuses() {
    let (addr, pem, fake) = fake_relay(|mut stream| async move {
        let Control::SrpHello { srp_id, nonce } =
            Control::from_frame(&recv_from(&mut stream, "fake").await).unwrap()
        else {
            panic!("expected a hello")
        };
        let relay_nonce = "22".repeat(32);
        let proof = srp_relay_proof(S1_KEY, &srp_id, &nonce, &relay_nonce);
        let challenge = Control::SrpChallenge {
            nonce: relay_nonce,
            proof,
        };
        send_to(&mut stream, &challenge.frame(Pin(0), RefId(0))).await;
        let response = Control::from_frame(&recv_from(&mut stream, "fake").await).unwrap();
        assert!(
            matches!(response, Control::SrpResponse { .. }),
            "{response:?}"
        );
        let rejected = Control::SrpRejected {
            reason: reject::BAD_KEY.into(),
            code: None,
        };
        send_to(&mut stream, &rejected.frame(Pin(0), RefId(0))).await;
    })
    .await;
    let err = connect_srp(
        &addr.to_string(),
        ClientTls::pinned(pem),
        "S1",
        S1_KEY,
        info("BES"),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, LinkError::WrongKey { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "the relay refused SRP ID S1: the SRP authentication key does not match; check Settings → Wireless network"
    );
    fake.await.unwrap();
}

#[tokio::test]
async fn server_side_refuses_a_certificate_that_is_not_pinned() {
    let relay = start(config()).await;
    let other = bramble_relay::tls::self_signed().unwrap().certificate_pem();
    let err = connect_srp(
        &relay.server_addr().to_string(),
        ClientTls::pinned(other),
        "S1",
        S1_KEY,
        info("BES"),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, LinkError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("not the pinned one"), "{err}");
    // Without a pin or CA the self-signed certificate is not trusted.
    let err = connect_srp(
        &relay.server_addr().to_string(),
        ClientTls::default(),
        "S1",
        S1_KEY,
        info("BES"),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, LinkError::Tls { .. }), "{err}");
    // As a CA (it is its own issuer, and names 127.0.0.1) it is.
    let s = connect_srp(
        &relay.server_addr().to_string(),
        ClientTls::with_ca(relay.certificate_pem()),
        "S1",
        S1_KEY,
        info("BES"),
    )
    .await;
    assert!(s.is_ok(), "{:?}", s.err());
    relay.shutdown().await;
}

#[tokio::test]
async fn unknown_srp_id_is_rejected() {
    let relay = start(config()).await;
    let err = try_server(&relay, "S9", S1_KEY).await.err().unwrap();
    match &err {
        LinkError::Rejected { srp_id, reason } => {
            assert_eq!(srp_id, "S9");
            assert!(reason.starts_with(reject::UNKNOWN_SRP_ID), "{reason}");
        }
        other => panic!("expected a rejection, got {other}"),
    }
    assert_eq!(relay.stats().auth_failures, 1);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_second_link_for_an_srp_id_drops_the_first() {
    let relay = start(config()).await;
    let mut first = server(&relay, "S1", S1_KEY).await;
    let mut second = try_server(&relay, "S1", S1_KEY).await.unwrap();
    assert!(closed(&mut first.r).await, "the first link stays open");
    wait_for(&relay, "one link", |st| st.servers_connected == 1).await;

    second.register(&[0x100]).await;
    let mut d = device(&relay, 0x100).await;
    let reply = cmime(d.pin, 3, "reply");
    d.send(&reply).await;
    assert_eq!(second.recv().await, reply);

    // Likewise a newer connection for a PIN replaces the older one.
    let mut newer = device(&relay, 0x100).await;
    assert!(
        closed(&mut d.r).await,
        "the older device connection stays open"
    );
    second.send(&cmime(newer.pin, 4, "to the newer")).await;
    assert_eq!(newer.recv().await.ref_id, RefId(4));
    assert_eq!(
        second.report(newer.pin, 4).await,
        TransportStatus::DeliveredToDevice
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn repeated_failures_lock_an_srp_id_out_for_a_while() {
    let lockout = Duration::from_millis(1500);
    let relay = start(RelayConfig {
        lockout_failures: 3,
        lockout_duration: lockout,
        ..config()
    })
    .await;
    for n in 1..=3 {
        let err = try_server(&relay, "S1", b"wrong").await.err().unwrap();
        assert!(matches!(err, LinkError::RelayProofInvalid { .. }), "{err}");
        wait_for(&relay, "the failure", |st| st.auth_failures == n).await;
    }
    assert_eq!(relay.stats().lockouts, 1);
    let locked_at = Instant::now();
    let err = try_server(&relay, "S1", S1_KEY).await.err().unwrap();
    match &err {
        LinkError::LockedOut { srp_id, reason } => {
            assert_eq!(srp_id, "S1");
            assert!(reason.starts_with(reject::LOCKED_OUT), "{reason}");
        }
        other => panic!("expected a lockout, got {other}"),
    }
    // Another SRP ID is not affected.
    server(&relay, "S2", S2_KEY).await;

    // The lockout runs on the relay's (tokio) clock: move it past the end
    // instead of waiting it out.
    tokio::time::pause();
    tokio::time::advance(lockout.saturating_sub(locked_at.elapsed()) + Duration::from_millis(100))
        .await;
    tokio::time::resume();
    try_server(&relay, "S1", S1_KEY).await.unwrap();
    relay.shutdown().await;
}

/// A TCP connection to `to` from the loopback address `from` (another
/// "machine" as far as the relay's per-address limits go).
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse().unwrap(), 0))?;
    socket.connect(to).await
}

/// TLS to the relay's server port from `from`, without checking the
/// certificate (a stranger does not care).
async fn stranger_tls(relay: &RelayHandle, from: &str) -> tokio_openssl::SslStream<TcpStream> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let tcp = connect_from(from, relay.server_addr()).await.unwrap();
    let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
    builder.set_verify(SslVerifyMode::NONE);
    let ssl = builder
        .build()
        .configure()
        .unwrap()
        .verify_hostname(false)
        .into_ssl("relay")
        .unwrap();
    let mut stream = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut stream).connect().await.unwrap();
    stream
}

#[tokio::test]
async fn a_strangers_failures_do_not_lock_out_the_genuine_server() {
    let relay = start(RelayConfig {
        lockout_failures: 3,
        ..config()
    })
    .await;
    // The SRP ID travels in clear in device hellos; a stranger at another
    // address fails on purpose, as often as it takes.
    for n in 1..=3 {
        let mut tls = stranger_tls(&relay, "127.0.0.2").await;
        let err =
            bramble_relay::client::srp_handshake(&mut tls, "relay", "S1", b"guess", &info("x"))
                .await
                .err()
                .unwrap();
        assert!(matches!(err, LinkError::RelayProofInvalid { .. }), "{err}");
        drop(tls);
        wait_for(&relay, "the failure", |st| st.auth_failures == n).await;
    }
    assert_eq!(relay.stats().lockouts, 1);
    // The stranger's address is locked out, even with the right key …
    let mut tls = stranger_tls(&relay, "127.0.0.2").await;
    let err = bramble_relay::client::srp_handshake(&mut tls, "relay", "S1", S1_KEY, &info("x"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, LinkError::LockedOut { .. }), "{err}");
    // … the genuine server, from its own address, is not.
    let mut s = server(&relay, "S1", S1_KEY).await;
    s.register(&[0x60]).await;
    let mut d = device(&relay, 0x60).await;
    s.send(&cmime(d.pin, 1, "still in touch")).await;
    assert_eq!(d.recv().await.ref_id, RefId(1));
    relay.shutdown().await;
}

#[tokio::test]
async fn flapping_locks_an_srp_id_out() {
    let relay = start(RelayConfig {
        lockout_failures: 2,
        ..config()
    })
    .await;
    let _a = try_server(&relay, "S1", S1_KEY).await.unwrap();
    let _b = try_server(&relay, "S1", S1_KEY).await.unwrap();
    let err = try_server(&relay, "S1", S1_KEY).await.err().unwrap();
    assert!(matches!(err, LinkError::LockedOut { .. }), "{err}");
    let err = try_server(&relay, "S1", S1_KEY).await.err().unwrap();
    assert!(matches!(err, LinkError::LockedOut { .. }), "{err}");
    assert_eq!(relay.stats().lockouts, 1);
    relay.shutdown().await;
}

#[tokio::test]
async fn offline_device_gets_its_stored_packets_in_order_on_connecting() {
    let relay = start(config()).await;
    let mut s = server(&relay, "S1", S1_KEY).await;
    let pin = Pin(0x0BAD_CAFE);
    // A PIN the relay has never seen: stored all the same.
    let first = cmime(pin, 1, "one");
    let two = split(
        ContentType::Cmime,
        0,
        pin,
        RefId(2),
        &vec![2; MAX_PAYLOAD + 1],
    )
    .unwrap();
    let third = Frame::single(ContentType::ItPolicy, pin, RefId(3), b"policy".to_vec());
    s.send(&first).await;
    for f in &two {
        s.send(f).await;
    }
    s.send(&third).await;
    for ref_id in 1..=3 {
        assert_eq!(
            s.report(pin, ref_id).await,
            TransportStatus::StoredForOfflineDevice
        );
    }
    s.quiet().await;

    s.register(&[pin.0]).await;
    let mut d = device(&relay, pin.0).await;
    let mut expected = vec![first];
    expected.extend(two);
    expected.push(third);
    for f in &expected {
        assert_eq!(&d.recv().await, f);
    }
    for ref_id in 1..=3 {
        assert_eq!(
            s.report(pin, ref_id).await,
            TransportStatus::DeliveredToDevice
        );
    }
    let stats = relay.stats();
    assert_eq!(
        (stats.stored, stats.delivered_from_store, stats.routed),
        (4, 4, 0)
    );

    // The store was handed over once; the device's traffic goes to the
    // server that registered its key.
    d.quiet().await;
    let reply = cmime(pin, 9, "got it");
    d.send(&reply).await;
    assert_eq!(s.recv().await, reply);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_full_store_drops_new_packets() {
    let relay = start(RelayConfig {
        store_per_device: 2,
        ..config()
    })
    .await;
    let mut s = server(&relay, "S1", S1_KEY).await;
    let pin = Pin(0x77);
    for ref_id in 1..=3 {
        s.send(&cmime(pin, ref_id, "x")).await;
    }
    assert_eq!(
        s.report(pin, 1).await,
        TransportStatus::StoredForOfflineDevice
    );
    assert_eq!(
        s.report(pin, 2).await,
        TransportStatus::StoredForOfflineDevice
    );
    assert_eq!(s.report(pin, 3).await, TransportStatus::StoreFull);

    s.register(&[pin.0]).await;
    let mut d = device(&relay, pin.0).await;
    assert_eq!(d.recv().await.ref_id, RefId(1));
    assert_eq!(d.recv().await.ref_id, RefId(2));
    d.quiet().await;
    assert_eq!(s.report(pin, 1).await, TransportStatus::DeliveredToDevice);
    assert_eq!(s.report(pin, 2).await, TransportStatus::DeliveredToDevice);
    relay.shutdown().await;
}

#[tokio::test]
async fn stored_packets_expire_with_a_report() {
    let relay = start(RelayConfig {
        store_expiry: Duration::from_millis(300),
        ..config()
    })
    .await;
    let mut s = server(&relay, "S1", S1_KEY).await;
    let pin = Pin(0x55);
    s.send(&cmime(pin, 1, "stale")).await;
    assert_eq!(
        s.report(pin, 1).await,
        TransportStatus::StoredForOfflineDevice
    );
    assert_eq!(s.report(pin, 1).await, TransportStatus::Expired);
    assert_eq!(relay.stats().expired, 1);

    s.register(&[pin.0]).await;
    let mut d = device(&relay, pin.0).await;
    d.quiet().await;
    relay.shutdown().await;
}

#[tokio::test]
async fn devices_reach_their_home_server() {
    let relay = start(config()).await;
    let mut s1 = server(&relay, "S1", S1_KEY).await;

    // Home: the server that registered the device's key.
    s1.register(&[0x10]).await;
    let mut registered = device(&relay, 0x10).await;
    let mut frame = cmime(registered.pin, 1, "reply");
    frame.content_type = ContentType::DeliveryConfirmation;
    registered.send(&frame).await;
    assert_eq!(s1.recv().await, frame);

    // A device still activating: its activation packets go to the server
    // that last sent it one.
    let mut learning = activating(&relay, 0x11).await;
    let challenge = Frame::single(
        ContentType::Activation,
        learning.pin,
        RefId(2),
        b"{}".to_vec(),
    );
    s1.send(&challenge).await;
    assert_eq!(learning.recv().await, challenge);
    assert_eq!(
        s1.report(learning.pin, 2).await,
        TransportStatus::DeliveredToDevice
    );
    let answer = Frame::single(
        ContentType::Activation,
        learning.pin,
        RefId(2),
        b"{}".to_vec(),
    );
    learning.send(&answer).await;
    assert_eq!(s1.recv().await, answer);

    // A disconnected home server: stored, handed over when it connects.
    let mut s2 = try_server(&relay, "S2", S2_KEY).await.unwrap();
    s2.register(&[0x12]).await;
    drop(s2);
    wait_for(&relay, "S2 to go", |st| st.servers_connected == 1).await;
    let mut waiting = device(&relay, 0x12).await;
    let a = cmime(waiting.pin, 4, "first");
    let b = cmime(waiting.pin, 5, "second");
    waiting.send(&a).await;
    waiting.send(&b).await;
    wait_for(&relay, "two stored packets", |st| st.stored == 2).await;
    let mut s2 = try_server(&relay, "S2", S2_KEY).await.unwrap();
    assert_eq!(s2.recv().await, a);
    assert_eq!(s2.recv().await, b);
    waiting.quiet().await;
    assert_eq!(relay.stats().delivered_from_store, 2);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_device_without_a_server_gets_no_server() {
    let relay = start(config()).await;
    let mut d = activating(&relay, 0x20).await;
    let request = Frame::single(ContentType::Activation, d.pin, RefId(42), b"{}".to_vec());
    d.send(&request).await;
    let error = d.recv().await;
    assert_eq!(error.content_type, ContentType::Error);
    assert_eq!((error.pin, error.ref_id), (d.pin, RefId(42)));
    let report = ErrorReport::from_payload(&error.payload).unwrap();
    assert_eq!(report.code, bramble_relay::NO_SERVER);
    assert!(!report.message.is_empty());
    assert_eq!(relay.stats().unknown_pin, 1);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_device_cannot_speak_for_another_pin() {
    let relay = start(config()).await;
    let mut s = server(&relay, "S1", S1_KEY).await;
    s.register(&[0x30]).await;
    let mut d = device(&relay, 0x30).await;
    d.send(&cmime(Pin(0x31), 1, "forged")).await;
    let genuine = cmime(d.pin, 2, "genuine");
    d.send(&genuine).await;
    // Only the genuine packet arrives, and the link stays up.
    assert_eq!(s.recv().await, genuine);
    s.quiet().await;
    d.send(&Control::Ping.frame(d.pin, RefId(3))).await;
    assert_eq!(Control::from_frame(&d.recv().await).unwrap(), Control::Pong);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_malformed_packet_closes_only_its_connection() {
    let relay = start(config()).await;
    let mut s1 = server(&relay, "S1", S1_KEY).await;
    let mut s2 = try_server(&relay, "S2", S2_KEY).await.unwrap();
    s1.register(&[0x40, 0x41, 0x42]).await;
    let mut good = device(&relay, 0x40).await;
    let mut oversized = device(&relay, 0x41).await;
    let mut bad_version = device(&relay, 0x42).await;

    // A length beyond the 64 KiB limit.
    oversized
        .w
        .write_all(&[0xFF, 0xFF, 0xFF, 0xFF])
        .await
        .unwrap();
    assert!(closed(&mut oversized.r).await);
    // An unsupported version.
    let mut bytes = cmime(bad_version.pin, 1, "x").encode().unwrap();
    bytes[4] = 9;
    bad_version.w.write_all(&bytes).await.unwrap();
    assert!(closed(&mut bad_version.r).await);
    // Garbage on a server link.
    s2.w.write_all(&[0, 0, 0, 1, 0]).await.unwrap();
    s2.w.flush().await.unwrap();
    assert!(closed(&mut s2.r).await);

    // Everyone else carries on, and new connections are served.
    s1.send(&cmime(good.pin, 5, "still here")).await;
    assert_eq!(good.recv().await.ref_id, RefId(5));
    assert_eq!(
        s1.report(good.pin, 5).await,
        TransportStatus::DeliveredToDevice
    );
    let mut again = device(&relay, 0x41).await;
    again.send(&cmime(again.pin, 6, "back")).await;
    assert_eq!(s1.recv().await.ref_id, RefId(6));
    wait_for(&relay, "S2 to be gone", |st| st.servers_connected == 1).await;
    relay.shutdown().await;
}

#[tokio::test]
async fn the_device_port_wants_a_hello_first() {
    let relay = start(config()).await;
    let tcp = TcpStream::connect(relay.device_addr()).await.unwrap();
    let (mut r, mut w) = tcp.into_split();
    send_to(&mut w, &cmime(Pin(1), 1, "no hello")).await;
    let refused = Control::from_frame(&recv_from(&mut r, "device").await).unwrap();
    assert!(matches!(refused, Control::Refused { .. }), "{refused:?}");
    assert!(closed(&mut r).await);
    relay.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_links() {
    let relay = start(config()).await;
    let mut s = server(&relay, "S1", S1_KEY).await;
    s.register(&[0x50]).await;
    let mut d = device(&relay, 0x50).await;
    let (server_addr, device_addr) = (relay.server_addr(), relay.device_addr());
    timeout(WAIT, relay.shutdown())
        .await
        .expect("shutdown hangs");
    assert!(closed(&mut s.r).await);
    assert!(closed(&mut d.r).await);
    assert!(TcpStream::connect(device_addr).await.is_err());
    assert!(TcpStream::connect(server_addr).await.is_err());
}

#[tokio::test]
async fn run_stops_when_told() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(run(config(), async {
        let _ = rx.await;
    }));
    // Told only once it is up: with the clock paused, the sleep ends when
    // the runtime has nothing left to do, i.e. the relay is listening.
    tokio::time::pause();
    sleep(Duration::from_millis(50)).await;
    tokio::time::resume();
    tx.send(()).unwrap();
    timeout(WAIT, relay).await.unwrap().unwrap().unwrap();

    let busy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = run(
        RelayConfig {
            server_listen: busy.local_addr().unwrap(),
            ..config()
        },
        async {},
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("cannot listen"), "{err}");
}

/// Reads from a connection until the relay closes it; the first packet, if
/// one came.
async fn first_then_closed<R: AsyncRead + Unpin>(r: &mut R) -> Option<Control> {
    let mut first = None;
    loop {
        match read_frame(r).await {
            Ok(Some(frame)) => {
                if first.is_none() {
                    first = Some(Control::from_frame(&frame).unwrap());
                }
            }
            Ok(None) | Err(_) => return first,
        }
    }
}

/// [`first_then_closed`], failing if the relay keeps the connection open.
async fn first_then_closed_soon<R: AsyncRead + Unpin>(r: &mut R) -> Option<Control> {
    timeout(Duration::from_secs(30), first_then_closed(r))
        .await
        .expect("the relay kept the connection open")
}

#[tokio::test]
async fn connections_are_capped_per_address_and_others_still_get_in() {
    let relay = start(RelayConfig {
        max_connections_per_address: 50,
        // The admitted connections stay open for the whole test.
        handshake_timeout: Duration::from_secs(600),
        ..config()
    })
    .await;
    // 300 idle connections from one address: 50 are admitted, the others
    // are refused at once, with a reason.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut held = Vec::new();
    for i in 0..300 {
        let tcp = connect_from("127.0.0.2", relay.device_addr())
            .await
            .unwrap();
        let (mut r, w) = tcp.into_split();
        held.push(w);
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            let first = first_then_closed(&mut r).await;
            let _ = done_tx.send((i, first));
        });
    }
    let mut refused = 0;
    while refused < 250 {
        let (_, first) = timeout(Duration::from_secs(30), done_rx.recv())
            .await
            .expect("the relay leaves more than 50 connections from one address open")
            .unwrap();
        match first {
            Some(Control::Refused { reason }) => {
                assert!(reason.contains("from this address"), "{reason}");
                refused += 1;
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    wait_for(&relay, "the refusals to be counted", |st| {
        st.connections_refused == 250
    })
    .await;
    // A device from another address and the server still get in, while
    // the 50 are held open.
    let mut s = server(&relay, "S1", S1_KEY).await;
    s.register(&[0x70]).await;
    let tcp = connect_from("127.0.0.3", relay.device_addr())
        .await
        .unwrap();
    let mut d = handshake(tcp, Pin(0x70), Answer::Prove).await.unwrap();
    s.send(&cmime(d.pin, 1, "through")).await;
    assert_eq!(d.recv().await.ref_id, RefId(1));
    assert!(
        done_rx.try_recv().is_err(),
        "an admitted connection was closed"
    );
    assert_eq!(relay.stats().connections_refused, 250);
    drop(held);
    relay.shutdown().await;
}

#[tokio::test]
async fn silent_connections_are_closed_and_pinged_devices_stay() {
    // Short enough for a quick test, long enough that a loaded machine
    // still answers a ping in time.
    let relay = start(RelayConfig {
        handshake_timeout: Duration::from_secs(1),
        device_idle_timeout: Duration::from_secs(1),
        ..config()
    })
    .await;
    // No hello at all: closed after the handshake timeout.
    let mut mute = TcpStream::connect(relay.device_addr()).await.unwrap();
    assert_eq!(first_then_closed_soon(&mut mute).await, None);

    // A device that answers the relay's pings stays connected …
    let mut d = activating(&relay, 0x80).await;
    for _ in 0..2 {
        let ping = d.recv().await;
        assert_eq!(Control::from_frame(&ping).unwrap(), Control::Ping);
        d.send(&Control::Pong.frame(d.pin, ping.ref_id)).await;
    }
    // … until it stops answering.
    assert_eq!(Control::from_frame(&d.recv().await).unwrap(), Control::Ping);
    assert!(closed(&mut d.r).await);
    wait_for(&relay, "the idle close", |st| {
        st.idle_closed == 1 && st.devices_connected == 0
    })
    .await;
    relay.shutdown().await;
}

#[tokio::test]
async fn random_pins_do_not_grow_the_table() {
    let relay = start(RelayConfig {
        max_device_entries: 20,
        ..config()
    })
    .await;
    // Hellos naming an SRP ID with random PINs, then gone: nothing is kept.
    for pin in 0..100u32 {
        let d = activating(&relay, 0x1000 + pin * 7919).await;
        drop(d);
    }
    wait_for(&relay, "the devices to go", |st| st.devices_connected == 0).await;
    wait_for(&relay, "an empty table", |st| st.device_entries == 0).await;

    // Held open, the table fills to its bound and further PINs are refused.
    let mut open = Vec::new();
    for pin in 0..20u32 {
        open.push(activating(&relay, 0x9000 + pin).await);
    }
    let tcp = TcpStream::connect(relay.device_addr()).await.unwrap();
    let (mut r, mut w) = tcp.into_split();
    let hello = Control::DeviceHello {
        pin: Pin(0x9999),
        srp_id: Some("S1".into()),
        model: "8900".into(),
        os_version: "5.0".into(),
    };
    send_to(&mut w, &hello.frame(Pin(0x9999), RefId(0))).await;
    match first_then_closed_soon(&mut r).await {
        Some(Control::Refused { reason }) => assert!(reason.contains("more devices"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(relay.stats().device_entries, 20);
    // A server's packets for a PIN the relay remembers nothing of are
    // stored while there is room; with the table full, store_full.
    let mut s = server(&relay, "S1", S1_KEY).await;
    s.send(&cmime(Pin(0x9999), 1, "x")).await;
    assert_eq!(s.report(Pin(0x9999), 1).await, TransportStatus::StoreFull);
    drop(open);
    wait_for(&relay, "the devices to go", |st| st.devices_connected == 0).await;
    s.send(&cmime(Pin(0x9999), 2, "x")).await;
    assert_eq!(
        s.report(Pin(0x9999), 2).await,
        TransportStatus::StoredForOfflineDevice
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn the_stores_are_bounded_all_together() {
    let relay = start(RelayConfig {
        store_total: 3,
        ..config()
    })
    .await;
    let mut s = server(&relay, "S1", S1_KEY).await;
    let (a, b) = (Pin(0xA1), Pin(0xB2));
    for (pin, ref_id) in [(a, 1), (a, 2), (b, 3)] {
        s.send(&cmime(pin, ref_id, "x")).await;
        assert_eq!(
            s.report(pin, ref_id).await,
            TransportStatus::StoredForOfflineDevice
        );
    }
    s.send(&cmime(b, 4, "x")).await;
    assert_eq!(s.report(b, 4).await, TransportStatus::StoreFull);
    // Handing a store over makes room again.
    s.register(&[a.0]).await;
    let mut d = device(&relay, a.0).await;
    assert_eq!(d.recv().await.ref_id, RefId(1));
    assert_eq!(d.recv().await.ref_id, RefId(2));
    assert_eq!(s.report(a, 1).await, TransportStatus::DeliveredToDevice);
    assert_eq!(s.report(a, 2).await, TransportStatus::DeliveredToDevice);
    s.send(&cmime(b, 5, "x")).await;
    assert_eq!(
        s.report(b, 5).await,
        TransportStatus::StoredForOfflineDevice
    );
    relay.shutdown().await;
}

/// A small SMTP server that accepts everything and counts the messages.
async fn smtp_sink() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, BufReader};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let (r, mut w) = tcp.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply: &[u8] = if in_data {
                        if line != "." {
                            continue;
                        }
                        in_data = false;
                        counter.fetch_add(1, Ordering::SeqCst);
                        b"250 queued\r\n"
                    } else {
                        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                        match verb.as_str() {
                            "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                            "DATA" => {
                                in_data = true;
                                b"354 go on\r\n"
                            }
                            "QUIT" => {
                                let _ = w.write_all(b"221 bye\r\n").await;
                                return;
                            }
                            _ => b"250 ok\r\n",
                        }
                    };
                    if w.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, count)
}

fn activation_request(pin: Pin, email: &str) -> String {
    use base64::Engine;
    let etp = bramble_proto::activation::EtpRequest {
        format: bramble_proto::activation::ETP_FORMAT.into(),
        pin,
        email: email.into(),
        relay: "relay".into(),
        model: "8900".into(),
        os_version: "5.0".into(),
        device_key: "00".into(),
        spake: "00".into(),
    };
    base64::engine::general_purpose::STANDARD.encode(etp.to_bytes())
}

fn send_mail(pin: Pin, ref_id: u64, to: &str, attachment: String) -> Frame {
    Control::SendMail {
        to: to.into(),
        subject: "anything at all".into(),
        attachment_name: "etp.dat".into(),
        attachment,
    }
    .frame(pin, RefId(ref_id))
}

/// The answer to a `send_mail`: Ok, or the `MAIL_NOT_SENT` message.
async fn mail_answer(d: &mut Device, ref_id: u64) -> Result<(), String> {
    let (got, answer) = any_mail_answer(d).await;
    assert_eq!(got, ref_id);
    answer
}

/// The next answer to a `send_mail`, with its RefID (refusals come at
/// once, mails sent when the SMTP server has them: in any order).
async fn any_mail_answer(d: &mut Device) -> (u64, Result<(), String>) {
    let f = d.recv().await;
    (f.ref_id.0, mail_result(&f))
}

fn mail_result(f: &Frame) -> Result<(), String> {
    if f.content_type == ContentType::Error {
        let report = ErrorReport::from_payload(&f.payload).unwrap();
        assert_eq!(report.code, ErrorReport::MAIL_NOT_SENT);
        return Err(report.message);
    }
    match Control::from_frame(f).unwrap() {
        Control::MailSent { .. } => Ok(()),
        other => panic!("expected mail_sent, got {other:?}"),
    }
}

/// A device with no key yet from the address `from`.
async fn device_from(relay: &RelayHandle, from: &str, pin: u32) -> Device {
    let tcp = connect_from(from, relay.device_addr()).await.unwrap();
    handshake(tcp, Pin(pin), Answer::ActivationOnly)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_relay_mails_only_activation_requests_and_not_too_many() {
    use std::sync::atomic::Ordering;
    let (smtp, mailed) = smtp_sink().await;
    let relay = start(RelayConfig {
        smtp: Some(smtp.to_string()),
        mail_per_address: 3,
        mail_per_connection: 2,
        ..config()
    })
    .await;
    let to = "alice@example.com";

    // Not an activation request, or not the device's own, or not to the
    // address in it: refused with the reason, nothing mailed.
    let mut d = device_from(&relay, "127.0.0.2", 0x90).await;
    let junk = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b"Buy cheap watches!")
    };
    d.send(&send_mail(d.pin, 1, "victim@example.com", junk))
        .await;
    let err = mail_answer(&mut d, 1).await.unwrap_err();
    assert!(err.contains("only e-mails activation requests"), "{err}");
    d.send(&send_mail(
        d.pin,
        2,
        "victim@example.com",
        activation_request(d.pin, to),
    ))
    .await;
    let err = mail_answer(&mut d, 2).await.unwrap_err();
    assert!(err.contains("goes only to the address in it"), "{err}");
    d.send(&send_mail(d.pin, 3, to, activation_request(Pin(0x91), to)))
        .await;
    let err = mail_answer(&mut d, 3).await.unwrap_err();
    assert!(err.contains("not for this device's PIN"), "{err}");

    // A flood of genuine-looking requests from one address: two per
    // connection, three per address.
    for ref_id in 10..15 {
        d.send(&send_mail(d.pin, ref_id, to, activation_request(d.pin, to)))
            .await;
    }
    let mut answers = std::collections::BTreeMap::new();
    for _ in 10..15 {
        let (ref_id, answer) = any_mail_answer(&mut d).await;
        answers.insert(ref_id, answer);
    }
    let answers: Vec<_> = answers.into_values().collect();
    assert_eq!(
        answers.iter().filter(|a| a.is_ok()).count(),
        2,
        "{answers:?}"
    );
    assert!(
        answers[2]
            .as_ref()
            .unwrap_err()
            .contains("for one connection"),
        "{answers:?}"
    );
    let mut again = device_from(&relay, "127.0.0.2", 0x92).await;
    for ref_id in 20..25 {
        again
            .send(&send_mail(
                again.pin,
                ref_id,
                to,
                activation_request(again.pin, to),
            ))
            .await;
    }
    let mut answers = std::collections::BTreeMap::new();
    for _ in 20..25 {
        let (ref_id, answer) = any_mail_answer(&mut again).await;
        answers.insert(ref_id, answer);
    }
    let answers: Vec<_> = answers.into_values().collect();
    assert_eq!(
        answers.iter().filter(|a| a.is_ok()).count(),
        1,
        "{answers:?}"
    );
    assert!(
        answers[1]
            .as_ref()
            .unwrap_err()
            .contains("from this address"),
        "{answers:?}"
    );
    assert_eq!(mailed.load(Ordering::SeqCst), 3);

    // Another address is not held back.
    let mut other = device_from(&relay, "127.0.0.3", 0x93).await;
    other
        .send(&send_mail(
            other.pin,
            30,
            to,
            activation_request(other.pin, to),
        ))
        .await;
    mail_answer(&mut other, 30).await.unwrap();
    assert_eq!(mailed.load(Ordering::SeqCst), 4);

    // A connection that keeps sending refused requests is closed.
    let mut pest = device_from(&relay, "127.0.0.4", 0x94).await;
    for ref_id in 40..60 {
        if pest
            .w
            .write_all(
                &send_mail(pest.pin, ref_id, "victim@example.com", String::new())
                    .encode()
                    .unwrap(),
            )
            .await
            .is_err()
        {
            break;
        }
    }
    assert!(closed(&mut pest.r).await);
    assert_eq!(mailed.load(Ordering::SeqCst), 4);
    relay.shutdown().await;
}

// ---- A stranger on the device port (issue: devices authenticated at the relay) ----

/// The proof `pin`'s genuine key gives for this connection's challenge.
fn genuine_proof(d: &Device) -> Control {
    Control::DeviceProof {
        key_id: KEY_ID,
        proof: device_proof(&relay_key(&transport_key(d.pin)).unwrap(), d.pin, &d.nonce),
    }
}

#[tokio::test]
async fn a_stranger_without_the_key_gets_nothing_and_displaces_no_one() {
    let relay = start(config()).await;
    let mut s = server(&relay, "S1", S1_KEY).await;
    let pin = 0xA0;
    s.register(&[pin]).await;
    let mut genuine = device(&relay, pin).await;

    // A hello for the PIN with a proof under any other key: refused, and
    // the genuine connection stays.
    let tcp = connect_from("127.0.0.2", relay.device_addr())
        .await
        .unwrap();
    let why = handshake(tcp, Pin(pin), Answer::ProveWith(vec![0x42; 32]))
        .await
        .err()
        .expect("a wrong key was accepted");
    assert!(why.contains("could not verify"), "{why}");
    // A proof for a key id that is not registered, with the right bytes.
    let tcp = connect_from("127.0.0.2", relay.device_addr())
        .await
        .unwrap();
    let (r, w) = tcp.into_split();
    let mut replayed = Device {
        r,
        w,
        pin: Pin(pin),
        nonce: String::new(),
    };
    replayed
        .send(
            &Control::DeviceHello {
                pin: Pin(pin),
                srp_id: None,
                model: String::new(),
                os_version: String::new(),
            }
            .frame(Pin(pin), RefId(0)),
        )
        .await;
    let _challenge = replayed.recv().await;
    // The genuine device's proof from its own handshake, replayed: bound
    // to that connection's nonce, it does not check on this one.
    replayed
        .send(&genuine_proof(&genuine).frame(Pin(pin), RefId(0)))
        .await;
    assert!(matches!(
        Control::from_frame(&replayed.recv().await).unwrap(),
        Control::Refused { .. }
    ));
    assert!(closed(&mut replayed.r).await);

    // Activation only: admitted, but it displaces no one and gets nothing.
    let tcp = connect_from("127.0.0.2", relay.device_addr())
        .await
        .unwrap();
    let mut stranger = handshake(tcp, Pin(pin), Answer::ActivationOnly)
        .await
        .unwrap();
    s.send(&cmime(Pin(pin), 1, "for the genuine device")).await;
    assert_eq!(genuine.recv().await.ref_id, RefId(1));
    assert_eq!(
        s.report(Pin(pin), 1).await,
        TransportStatus::DeliveredToDevice
    );
    stranger.quiet().await;

    // With the genuine device offline, what is stored for it stays stored.
    drop(genuine);
    wait_for(&relay, "the genuine device to go", |st| {
        st.devices_connected == 1
    })
    .await;
    s.send(&cmime(Pin(pin), 2, "stored")).await;
    assert_eq!(
        s.report(Pin(pin), 2).await,
        TransportStatus::StoredForOfflineDevice
    );
    stranger.quiet().await;
    // What the stranger sends other than activation is not forwarded.
    stranger.send(&cmime(Pin(pin), 3, "forged")).await;
    let error = stranger.recv().await;
    assert_eq!(
        ErrorReport::from_payload(&error.payload).unwrap().code,
        bramble_relay::NOT_AUTHENTICATED
    );
    s.quiet().await;
    // The genuine device comes back and gets it.
    let mut genuine = device(&relay, pin).await;
    assert_eq!(genuine.recv().await.ref_id, RefId(2));
    assert_eq!(
        s.report(Pin(pin), 2).await,
        TransportStatus::DeliveredToDevice
    );
    let stats = relay.stats();
    assert_eq!(stats.device_auth_failures, 2);
    assert_eq!(stats.unauthenticated_dropped, 1);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_hello_cannot_repoint_a_device_to_another_server() {
    let relay = start(config()).await;
    let mut s1 = server(&relay, "S1", S1_KEY).await;
    let mut s2 = try_server(&relay, "S2", S2_KEY).await.unwrap();
    // S2 registered the device; its hello (and a stranger's) names S1.
    s2.register(&[0xA1]).await;
    let mut d = device(&relay, 0xA1).await;
    let reply = cmime(d.pin, 1, "to my server");
    d.send(&reply).await;
    assert_eq!(s2.recv().await, reply);
    let _stranger = activating(&relay, 0xA1).await;
    d.send(&cmime(d.pin, 2, "still")).await;
    assert_eq!(s2.recv().await.ref_id, RefId(2));
    s1.quiet().await;
    relay.shutdown().await;
}

#[tokio::test]
async fn an_activation_only_link_is_bounded_and_becomes_full_with_a_proof() {
    let relay = start(RelayConfig {
        activation_per_connection: 3,
        activation_per_address: 5,
        ..config()
    })
    .await;
    let mut s = server(&relay, "S1", S1_KEY).await;
    let pin = Pin(0xA2);
    let mut d = activating(&relay, pin.0).await;
    // The server answers an activation request: the device learns its
    // server, and the server stores a policy for after activation.
    s.send(&Frame::single(
        ContentType::Activation,
        pin,
        RefId(1),
        b"{}".to_vec(),
    ))
    .await;
    assert_eq!(d.recv().await.ref_id, RefId(1));
    assert_eq!(s.report(pin, 1).await, TransportStatus::DeliveredToDevice);
    s.send(&Frame::single(
        ContentType::ItPolicy,
        pin,
        RefId(2),
        b"p".to_vec(),
    ))
    .await;
    assert_eq!(
        s.report(pin, 2).await,
        TransportStatus::StoredForOfflineDevice
    );
    // Three activation packets pass, the fourth is dropped.
    for ref_id in 10..14 {
        d.send(&Frame::single(
            ContentType::Activation,
            pin,
            RefId(ref_id),
            b"{}".to_vec(),
        ))
        .await;
    }
    for ref_id in 10..13 {
        assert_eq!(s.recv().await.ref_id, RefId(ref_id));
    }
    let error = d.recv().await;
    assert_eq!(error.ref_id, RefId(13));
    assert_eq!(
        ErrorReport::from_payload(&error.payload).unwrap().code,
        bramble_relay::ACTIVATION_LIMIT
    );
    // Per address: two more from another connection, then no more.
    let mut other = activating(&relay, 0xA3).await;
    for ref_id in 20..23 {
        other
            .send(&Frame::single(
                ContentType::Activation,
                other.pin,
                RefId(ref_id),
                b"{}".to_vec(),
            ))
            .await;
    }
    // (0xA3 has no server: the two admitted get NO_SERVER, the third the limit.)
    let codes: Vec<String> = {
        let mut codes = Vec::new();
        for _ in 0..3 {
            let e = other.recv().await;
            codes.push(ErrorReport::from_payload(&e.payload).unwrap().code);
        }
        codes
    };
    assert_eq!(
        codes,
        [
            bramble_relay::NO_SERVER,
            bramble_relay::NO_SERVER,
            bramble_relay::ACTIVATION_LIMIT
        ]
    );

    // Activation done: the server registers the key, the device proves it
    // on the same link and gets what was stored for it.
    s.register(&[pin.0]).await;
    d.send(&genuine_proof(&d).frame(pin, RefId(0))).await;
    assert_eq!(
        Control::from_frame(&d.recv().await).unwrap(),
        Control::Welcome
    );
    assert_eq!(d.recv().await.ref_id, RefId(2));
    assert_eq!(s.report(pin, 2).await, TransportStatus::DeliveredToDevice);
    let mail = cmime(pin, 30, "now anything goes");
    d.send(&mail).await;
    assert_eq!(s.recv().await, mail);
    relay.shutdown().await;
}

#[tokio::test]
async fn keys_removed_by_the_server_close_the_device_and_keep_it_out() {
    let relay = start(config()).await;
    let mut s = server(&relay, "S1", S1_KEY).await;
    s.register(&[0xA4]).await;
    let mut d = device(&relay, 0xA4).await;
    s.send(
        &Control::DeviceKeys {
            reset: false,
            devices: vec![DeviceRelayKeys {
                pin: Pin(0xA4),
                keys: Vec::new(),
            }],
        }
        .frame(Pin(0), RefId(0)),
    )
    .await;
    assert!(closed(&mut d.r).await);
    let tcp = TcpStream::connect(relay.device_addr()).await.unwrap();
    assert!(handshake(tcp, Pin(0xA4), Answer::Prove).await.is_err());
    // A new link's reset forgets every key the server registered before.
    s.register(&[0xA5]).await;
    let _d = device(&relay, 0xA5).await;
    drop(s);
    let mut s = server(&relay, "S1", S1_KEY).await;
    s.send(
        &Control::DeviceKeys {
            reset: true,
            devices: Vec::new(),
        }
        .frame(Pin(0), RefId(0)),
    )
    .await;
    s.register(&[]).await;
    assert_eq!(relay.stats().devices_with_keys, 0);
    relay.shutdown().await;
}
