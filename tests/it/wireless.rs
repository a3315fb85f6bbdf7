//! The wireless path over real TCP on loopback: the server core's Router
//! and Dispatcher, the relay (TLS, SRP authentication) and reference
//! devices, started side by side in one test process.

use std::collections::HashSet;
use std::net::SocketAddr;

use std::time::Duration;

use bramble::config::Settings;
use bramble::db::models::srp_connection::{SrpConnection, SrpKey, SrpSettings};
use bramble::db::Database;
use bramble::dispatcher::{DeliveryEvent, Outgoing};
use bramble::server::Listeners;
use bramble::{Server, ServerHandle};
use bramble_device::{Connection, Device, DeviceConfig, KeyStore, Path};
use bramble_proto::envelope::TransportKey;
use bramble_proto::frame::Frame;
use bramble_proto::{ContentType, Pin, RefId};
use bramble_relay::{Relay, RelayConfig, RelayHandle, SrpAccount, TlsIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

pub(crate) const SRP_ID: &str = "S80001234";
const SRP_KEY: &str = "f1e2d3c4b5a6978877665544332211aa";
/// Guards against a hang; never a performance assertion.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) struct Bed {
    dir: tempfile::TempDir,
    pub(crate) relay_config: RelayConfig,
    relay_server_port: u16,
    relay_device_port: u16,
}

impl Bed {
    pub(crate) fn new() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let relay_config = RelayConfig {
            srp_accounts: vec![SrpAccount::new(SRP_ID, SRP_KEY.as_bytes().to_vec())],
            tls: TlsIdentity {
                cert: Some(dir.path().join("relay.crt")),
                key: Some(dir.path().join("relay.key")),
                generate_if_missing: true,
            },
            ..RelayConfig::default()
        };
        Bed {
            dir,
            relay_config,
            relay_server_port: free_port(),
            relay_device_port: free_port(),
        }
    }

    pub(crate) async fn relay(&self) -> RelayHandle {
        let servers = TcpListener::bind(("127.0.0.1", self.relay_server_port))
            .await
            .unwrap();
        let devices = TcpListener::bind(("127.0.0.1", self.relay_device_port))
            .await
            .unwrap();
        Relay::start_with(self.relay_config.clone(), servers, devices)
            .await
            .unwrap()
    }

    fn relay_device_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.relay_device_port))
    }

    /// Settings of a server whose data lives in `name` under the bed.
    fn settings(&self, name: &str, srp_key: &str) -> Settings {
        let mut s = Settings::load_from(None, &[]).unwrap().settings;
        s.data_dir = self.dir.path().join(name);
        s.admin.listen = "127.0.0.1:0".parse().unwrap();
        s.router.lan_listen = Some("127.0.0.1:0".parse().unwrap());
        s.router.relay_certificate = Some(self.dir.path().join("relay.crt"));
        s.router.reconnect_min_ms = 50;
        s.router.reconnect_max_ms = 400;
        let db = Database::open(&s.database()).unwrap();
        let srp = SrpSettings {
            srp_id: SRP_ID.into(),
            srp_key: SrpKey::new(srp_key),
            relay_host: "127.0.0.1".into(),
            relay_port: i32::from(self.relay_server_port),
            cal_licences: 100,
        };
        db.run_blocking(|conn| SrpConnection::save(conn, db.sealer(), &srp))
            .unwrap();
        s
    }

    pub(crate) async fn server(&self, name: &str) -> ServerHandle {
        start(self.settings(name, SRP_KEY)).await
    }
}

/// A relay and a server whose SRP link is up.
pub(crate) async fn linked() -> (Bed, RelayHandle, ServerHandle) {
    let bed = Bed::new();
    let relay = bed.relay().await;
    let server = bed.server("server").await;
    wait_link(&server, true).await;
    (bed, relay, server)
}

/// A registered device connected through the relay.
pub(crate) async fn online(
    server: &ServerHandle,
    relay: &RelayHandle,
    pin: u32,
) -> (Device, Connection) {
    let phone = device(server, pin).await;
    let conn = phone
        .connect(Path::Relay(relay.device_addr()))
        .await
        .unwrap();
    (phone, conn)
}

async fn start(settings: Settings) -> ServerHandle {
    let listeners = Listeners::bind(&settings).await.unwrap();
    {
        let components = Server::default_components(&settings);
        Server::start_with(settings, listeners, components)
    }
    .await
    .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) async fn wait_link(server: &ServerHandle, up: bool) {
    tokio::time::timeout(PATIENCE, async {
        while server.dispatcher().router().is_link_up() != up {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "link never became {}: {:?}",
            if up { "up" } else { "down" },
            server.dispatcher().router().link_status()
        )
    });
}

/// A device with a fresh key, registered with the server (test path).
pub(crate) async fn device(server: &ServerHandle, pin: u32) -> Device {
    let key = TransportKey::generate(1).unwrap();
    bramble_testbed::provision::into_server(server, vec![(Pin(pin), key.clone())])
        .await
        .unwrap();
    let mut config = DeviceConfig::new(Pin(pin));
    config.srp_id = Some(SRP_ID.into());
    Device::new(config, KeyStore::new(key))
}

pub(crate) fn mail(pin: u32, text: String) -> Outgoing {
    Outgoing {
        pin: Pin(pin),
        content_type: ContentType::Cmime,
        plaintext: text.into_bytes(),
        priority: false,
        ref_id: None,
    }
}

/// Receives until `want` distinct messages arrived; returns their texts.
async fn collect(conn: &Connection, want: usize) -> Vec<String> {
    let mut texts = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while texts.len() < want {
            match conn.recv().await {
                Some(m) => texts.push(String::from_utf8(m.plaintext).unwrap()),
                None => break,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {want} messages arrived", texts.len()));
    texts
}

async fn confirmations(events: &mut broadcast::Receiver<DeliveryEvent>, refs: &HashSet<RefId>) {
    let mut left = refs.clone();
    tokio::time::timeout(PATIENCE, async {
        while !left.is_empty() {
            if let Ok(DeliveryEvent::Confirmed { ref_id, .. }) = events.recv().await {
                left.remove(&ref_id);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} messages never confirmed", left.len()));
}

async fn queued(server: &ServerHandle) -> i64 {
    server
        .state()
        .db
        .run(bramble::db::models::outbound::OutboundPacket::count)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_to_device_and_back() {
    let (_bed, relay, server) = linked().await;
    let (_phone, conn) = online(&server, &relay, 0x2A3B_4C5D).await;

    let mut events = server.dispatcher().subscribe();
    let ref_id = server
        .dispatcher()
        .send(mail(0x2A3B_4C5D, "Board meeting moved to 3pm".into()))
        .await
        .unwrap();
    let got = tokio::time::timeout(PATIENCE, conn.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.ref_id, ref_id);
    assert_eq!(got.plaintext, b"Board meeting moved to 3pm");
    confirmations(&mut events, &HashSet::from([ref_id])).await;
    assert_eq!(
        queued(&server).await,
        0,
        "confirmed messages leave the queue"
    );

    // From the device: decrypted and handed to the component for CMIME.
    let mut inbox = server.dispatcher().register(ContentType::Cmime, 16);
    conn.send(ContentType::Cmime, RefId(0xBEEF), b"On my way")
        .await
        .unwrap();
    let inbound = tokio::time::timeout(PATIENCE, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (inbound.pin, inbound.ref_id),
        (Pin(0x2A3B_4C5D), RefId(0xBEEF))
    );
    assert_eq!(inbound.plaintext, b"On my way");

    // The console sees the link.
    let (status, body) = crate::fixture::http_get(server.admin_addr(), "/health").await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["wireless"]["connected"], true, "{health}");
    assert_eq!(health["wireless"]["srp_id"], SRP_ID);

    conn.close().await;
    server.shutdown().await.unwrap();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_path_switching_mid_stream() {
    let (_bed, relay, server) = linked().await;
    let pin = 0x0000_0A0A;
    let (phone, wireless) = online(&server, &relay, pin).await;
    let mut events = server.dispatcher().subscribe();
    let mut refs = HashSet::new();

    for i in 0..10 {
        refs.insert(
            server
                .dispatcher()
                .send(mail(pin, format!("wireless {i}")))
                .await
                .unwrap(),
        );
    }
    let mut texts = collect(&wireless, 10).await;

    // Plugged into the desktop: the Router switches this device to the LAN.
    let lan = phone
        .connect(Path::Lan(server.lan_addr().unwrap()))
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, async {
        while server.dispatcher().router().lan_devices() != vec![Pin(pin)] {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    for i in 0..10 {
        refs.insert(
            server
                .dispatcher()
                .send(mail(pin, format!("lan {i}")))
                .await
                .unwrap(),
        );
    }
    texts.extend(collect(&lan, 10).await);
    assert_eq!(
        wireless.stats().received,
        10,
        "nothing went by the relay while on the LAN"
    );

    // Unplugged: back to the relay, dynamically.
    lan.close().await;
    tokio::time::timeout(PATIENCE, async {
        while !server.dispatcher().router().lan_devices().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    for i in 0..10 {
        refs.insert(
            server
                .dispatcher()
                .send(mail(pin, format!("wireless again {i}")))
                .await
                .unwrap(),
        );
    }
    texts.extend(collect(&wireless, 10).await);

    let distinct: HashSet<&String> = texts.iter().collect();
    assert_eq!(texts.len(), 30);
    assert_eq!(distinct.len(), 30, "each message shown once");
    confirmations(&mut events, &refs).await;
    wireless.close().await;
    server.shutdown().await.unwrap();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_restarted_mid_stream_loses_and_duplicates_nothing() {
    let (bed, relay, server) = linked().await;
    let pin = 0x00C0_FFEE;
    let phone = device(&server, pin).await;
    let mut events = server.dispatcher().subscribe();
    let mut refs = HashSet::new();

    // The device is offline: the relay stores these…
    for i in 0..15 {
        refs.insert(
            server
                .dispatcher()
                .send(mail(pin, format!("stored {i}")))
                .await
                .unwrap(),
        );
    }
    crate::fixture::wait_until(PATIENCE, "the relay stored the 15 messages", || async {
        relay.stats().stored >= 15
    })
    .await;
    // …and then the relay goes down, taking its store with it.
    relay.shutdown().await;
    wait_link(&server, false).await;
    for i in 0..15 {
        refs.insert(
            server
                .dispatcher()
                .send(mail(pin, format!("during outage {i}")))
                .await
                .unwrap(),
        );
    }
    assert_eq!(queued(&server).await, 30);

    let relay = bed.relay().await;
    wait_link(&server, true).await;
    let conn = phone
        .connect(Path::Relay(bed.relay_device_addr()))
        .await
        .unwrap();
    let texts = collect(&conn, 30).await;
    let distinct: HashSet<&String> = texts.iter().collect();
    assert_eq!(distinct.len(), 30, "nothing lost, nothing shown twice");
    confirmations(&mut events, &refs).await;
    assert_eq!(queued(&server).await, 0);
    // Late duplicates must not be surfaced. Any still on their way are
    // ahead of a packet the server sends now along the same path (an error
    // report, which the device counts apart from messages): count once it
    // is in.
    let errors = conn.stats().errors;
    let marker = bramble_proto::control::ErrorReport {
        code: "FLUSH".into(),
        message: "nothing follows".into(),
    };
    server
        .dispatcher()
        .send_plain(marker.frame(Pin(pin), RefId(0xF1_05)))
        .await
        .unwrap();
    crate::fixture::wait_until(
        PATIENCE,
        "the device got the server's last packet",
        || async { conn.stats().errors > errors },
    )
    .await;
    assert_eq!(conn.stats().received, 30);

    conn.close().await;
    server.shutdown().await.unwrap();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restarted_with_messages_pending() {
    let bed = Bed::new();
    // No relay yet: everything waits in the outbound queue.
    let server = bed.server("server").await;
    let pin = 0x0001_0001;
    let phone = device(&server, pin).await;
    for i in 0..10 {
        server
            .dispatcher()
            .send(mail(pin, format!("pending {i}")))
            .await
            .unwrap();
    }
    assert_eq!(queued(&server).await, 10);
    server.shutdown().await.unwrap();

    let relay = bed.relay().await;
    let server = start(bed.settings("server", SRP_KEY)).await;
    let conn = phone
        .connect(Path::Relay(relay.device_addr()))
        .await
        .unwrap();
    let texts = collect(&conn, 10).await;
    assert_eq!(texts.iter().collect::<HashSet<_>>().len(), 10);
    tokio::time::timeout(PATIENCE, async {
        while queued(&server).await > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    conn.close().await;
    server.shutdown().await.unwrap();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_srp_key_is_reported_and_nothing_flows() {
    let bed = Bed::new();
    let relay = bed.relay().await;
    let server = start(bed.settings("server", "not-the-key")).await;
    let status = tokio::time::timeout(PATIENCE, async {
        loop {
            let status = server.dispatcher().router().link_status();
            if status.last_error.is_some() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert!(!status.connected);
    let error = status.last_error.unwrap().to_lowercase();
    assert!(error.contains("key"), "{error}");
    assert!(!server.dispatcher().router().is_link_up());
    server.shutdown().await.unwrap();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_with_the_same_srp_id_drops_the_first() {
    let bed = Bed::new();
    let relay = bed.relay().await;
    let first = bed.server("first").await;
    wait_link(&first, true).await;
    let second = bed.server("second").await;
    wait_link(&second, true).await;
    tokio::time::timeout(PATIENCE, async {
        while first.dispatcher().router().link_status().reconnects == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the first link was dropped");
    second.shutdown().await.unwrap();
    first.shutdown().await.unwrap();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecryptable_message_gets_an_error_back_and_nothing_else() {
    let (_bed, relay, server) = linked().await;
    let pin = 0x0BAD_0BAD;
    let registered = device(&server, pin).await;
    // A device that proves its key to the relay, then seals with a key the
    // server does not know (its keys went out of step with the server's).
    let conn = registered
        .connect(Path::Relay(relay.device_addr()))
        .await
        .unwrap();
    registered.set_keys(KeyStore::new(TransportKey::generate(1).unwrap()));
    let mut inbox = server.dispatcher().register(ContentType::Cmime, 16);
    conn.send(ContentType::Cmime, RefId(0x51), b"can you read me?")
        .await
        .unwrap();
    let (ref_id, report) = tokio::time::timeout(PATIENCE, conn.next_error())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ref_id, RefId(0x51));
    assert_eq!(report.code, "UNDECRYPTABLE");
    assert!(
        report.message.contains("could not be decrypted"),
        "{}",
        report.message
    );
    assert!(inbox.try_recv().is_err(), "the message was ignored");

    // A PIN the server has never heard of does not get through the relay
    // at all, and sending to it is refused with words, not queued.
    let mut config = DeviceConfig::new(Pin(0x0000_9999));
    config.srp_id = Some(SRP_ID.into());
    let stranger = Device::new(config, KeyStore::new(TransportKey::generate(1).unwrap()));
    let refused = stranger
        .connect(Path::Relay(relay.device_addr()))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("could not verify"),
        "{refused}"
    );
    let err = server
        .dispatcher()
        .send(mail(0x0000_9999, "x".into()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("activated"), "{err}");

    conn.close().await;
    server.shutdown().await.unwrap();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_only_their_connection() {
    let (_bed, relay, server) = linked().await;
    let pin = 0x0000_7777;
    let (_phone, conn) = online(&server, &relay, pin).await;

    for garbage in [
        vec![0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3], // oversized length
        Frame::single(ContentType::Cmime, Pin(pin), RefId(1), vec![0; 100])
            .encode()
            .unwrap()[..40]
            .to_vec(), // truncated
    ] {
        for target in [relay.device_addr(), server.lan_addr().unwrap()] {
            let mut raw = TcpStream::connect(target).await.unwrap();
            raw.write_all(&garbage).await.unwrap();
            raw.shutdown().await.unwrap();
            let mut sink = Vec::new();
            let closed = tokio::time::timeout(PATIENCE, raw.read_to_end(&mut sink)).await;
            assert!(
                closed.is_ok(),
                "the peer closes a connection that sent garbage"
            );
        }
    }
    // Everyone else is unaffected.
    let ref_id = server
        .dispatcher()
        .send(mail(pin, "still here".into()))
        .await
        .unwrap();
    let got = tokio::time::timeout(PATIENCE, conn.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.ref_id, ref_id);
    assert!(server.dispatcher().router().is_link_up());
    conn.close().await;
    server.shutdown().await.unwrap();
    relay.shutdown().await;
}

/// A connection changed in the console (`RouterHandle::reconnect`) is used
/// at once: a link that is up is closed and opened with the new settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_connection_is_used_at_once_by_a_running_router() {
    let (_bed, relay, server) = linked().await;
    let save = |key: &'static str| {
        let db = server.state().db.clone();
        let port = i32::from(relay.server_addr().port());
        async move {
            db.write_sealed(move |conn, sealer| {
                SrpConnection::save(
                    conn,
                    sealer,
                    &SrpSettings {
                        srp_id: SRP_ID.into(),
                        srp_key: SrpKey::new(key),
                        relay_host: "127.0.0.1".into(),
                        relay_port: port,
                        cal_licences: 100,
                    },
                )
            })
            .await
            .unwrap();
        }
    };
    // A wrong key: the healthy link is dropped and refused with it.
    save("not-the-key").await;
    server.dispatcher().router().reconnect();
    wait_link(&server, false).await;
    tokio::time::timeout(PATIENCE, async {
        loop {
            let status = server.dispatcher().router().link_status();
            if !status.connected
                && status
                    .last_error
                    .is_some_and(|e| e.to_lowercase().contains("key"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the new, wrong key was never tried");
    // The right one again.
    save(SRP_KEY).await;
    server.dispatcher().router().reconnect();
    wait_link(&server, true).await;
    server.shutdown().await.unwrap();
    relay.shutdown().await;
}

/// 60 KiB that compression cannot shrink (the wire compresses before it
/// encrypts).
fn incompressible(i: usize) -> Vec<u8> {
    let mut text = format!("big {i} ").into_bytes();
    let mut noise = vec![0u8; 60 * 1024];
    openssl::rand::rand_bytes(&mut noise).unwrap();
    text.extend(noise);
    text
}

/// A device on the LAN path that proves its key, is welcomed, and then
/// never reads again (its receive buffer kept small).
async fn stalled_lan_device(server: &ServerHandle, pin: Pin) -> TcpStream {
    use bramble_proto::control::{lan_proof, Control};
    use bramble_proto::io::{read_frame, write_frame};
    let key = TransportKey::generate(1).unwrap();
    bramble_testbed::provision::into_server(server, vec![(pin, key.clone())])
        .await
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.lan_addr().unwrap()).await.unwrap();
    let hello = Control::DeviceHello {
        pin,
        srp_id: None,
        model: "stalled".into(),
        os_version: String::new(),
    };
    write_frame(&mut stream, &hello.frame(pin, RefId(0)))
        .await
        .unwrap();
    let challenge = read_frame(&mut stream).await.unwrap().unwrap();
    let Ok(Control::LanChallenge { nonce }) = Control::from_frame(&challenge) else {
        panic!("no challenge: {challenge:?}");
    };
    let proof = Control::LanProof {
        key_id: 1,
        proof: lan_proof(key.secret(), pin, &nonce),
    };
    write_frame(&mut stream, &proof.frame(pin, RefId(0)))
        .await
        .unwrap();
    let welcome = read_frame(&mut stream).await.unwrap().unwrap();
    assert!(matches!(
        Control::from_frame(&welcome),
        Ok(Control::Welcome)
    ));
    stream
}

/// Attack (or a broken phone): a LAN device that stops reading. Its queue
/// fills and stays full; another device's mail is all delivered and
/// confirmed meanwhile (asserted by order: the stalled device is still
/// connected with mail waiting when the other's last confirmation is in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_lan_reader_does_not_delay_another_device() {
    use bramble::db::models::outbound::{OutboundPacket, OutboundState};
    let bed = Bed::new();
    let _relay = bed.relay().await;
    let mut settings = bed.settings("server", SRP_KEY);
    // Long enough that the stalled connection outlives the test.
    settings.router.write_timeout_secs = 3600;
    settings.router.lan_queue_packets = 0; // the least: one whole message
    let server = start(settings).await;
    let (stalled_pin, other_pin) = (Pin(0x0057_A11D), Pin(0x0000_0B0B));
    let _stalled = stalled_lan_device(&server, stalled_pin).await;

    // More than the device's queue and the sockets' buffers hold.
    let dispatcher = server.dispatcher().clone();
    let flood = tokio::spawn(async move {
        for i in 0..600 {
            let text = incompressible(i);
            dispatcher
                .send(Outgoing {
                    pin: stalled_pin,
                    content_type: ContentType::Cmime,
                    plaintext: text,
                    priority: false,
                    ref_id: None,
                })
                .await
                .unwrap();
        }
    });
    tokio::time::timeout(Duration::from_secs(120), flood)
        .await
        .expect("queuing mail for a device that does not read never blocks the sender")
        .unwrap();
    let waiting = |server: &ServerHandle| {
        let db = server.state().db.clone();
        async move {
            db.run(move |conn| {
                OutboundPacket::find_by_pin(conn, stalled_pin, &[OutboundState::Queued])
            })
            .await
            .unwrap()
            .len()
        }
    };
    assert!(
        waiting(&server).await > 0,
        "the stalled device's queue is full: some of its mail waits in the outbound queue"
    );

    // Another device on the LAN gets all of its mail, confirmed.
    let phone = device(&server, other_pin.0).await;
    let lan = phone
        .connect(Path::Lan(server.lan_addr().unwrap()))
        .await
        .unwrap();
    crate::fixture::wait_until(PATIENCE, "both devices are on the LAN path", || async {
        server.dispatcher().router().lan_devices().len() == 2
    })
    .await;
    let mut events = server.dispatcher().subscribe();
    let mut refs = HashSet::new();
    for i in 0..20 {
        refs.insert(
            server
                .dispatcher()
                .send(mail(other_pin.0, format!("meanwhile {i}")))
                .await
                .unwrap(),
        );
    }
    assert_eq!(collect(&lan, 20).await.len(), 20);
    confirmations(&mut events, &refs).await;
    assert!(
        server
            .dispatcher()
            .router()
            .lan_devices()
            .contains(&stalled_pin),
        "the stalled device was still connected"
    );
    assert!(waiting(&server).await > 0, "and still had mail waiting");
    lan.close().await;
    server.shutdown().await.unwrap();
}

/// A LAN device that takes nothing for `write_timeout_secs` is
/// disconnected; its mail stays queued for the relay path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lan_device_that_stops_reading_is_disconnected() {
    let bed = Bed::new();
    let _relay = bed.relay().await;
    let mut settings = bed.settings("server", SRP_KEY);
    settings.router.write_timeout_secs = 1;
    let server = start(settings).await;
    let pin = Pin(0x0057_A11E);
    let _stalled = stalled_lan_device(&server, pin).await;
    let mut refs = HashSet::new();
    for i in 0..300 {
        let text = incompressible(i);
        refs.insert(
            server
                .dispatcher()
                .send(Outgoing {
                    pin,
                    content_type: ContentType::Cmime,
                    plaintext: text,
                    priority: false,
                    ref_id: None,
                })
                .await
                .unwrap(),
        );
    }
    crate::fixture::wait_until(
        PATIENCE,
        "the device that does not read is disconnected",
        || async { server.dispatcher().router().lan_devices().is_empty() },
    )
    .await;
    assert_eq!(
        queued(&server).await,
        300,
        "nothing it did not confirm is dropped"
    );
    server.shutdown().await.unwrap();
}
