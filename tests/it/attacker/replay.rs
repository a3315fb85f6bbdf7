//! See [`super`]: recorded packets played again, to the server and to the
//! device, are not acted on twice, also across restarts.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bramble::db::models::mailbox::OutboxEntry;
use bramble::router::{RouterEvent, Via};
use bramble::server::Listeners;
use bramble::Server;
use bramble_device::{Device, DeviceConfig, DeviceFile, KeyStore, Path};
use bramble_proto::cmime::{Cmime, Compose, SendState};
use bramble_proto::control::{Control, ErrorReport};
use bramble_proto::envelope::{self, TransportKey};
use bramble_proto::frame::Frame;
use bramble_proto::io::{read_frame, write_frame};
use bramble_proto::policy::{codes, Binding, Command, CommandDocument, Signed};
use bramble_proto::{ContentType, Pin, RefId};
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use tokio::net::{TcpListener, TcpStream};

use crate::mail::{bed, folder, next, wait_folder};

/// Guards against a hang; never a performance assertion.
const PATIENCE: Duration = Duration::from_secs(60);

/// A recording wiretap between a device and the Router's LAN listener:
/// what the device sends is kept (as an attacker on the network keeps it)
/// and passed on unchanged.
struct Tap {
    addr: SocketAddr,
    recorded: Arc<Mutex<Vec<Frame>>>,
}

impl Tap {
    async fn new(upstream: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let keep = recorded.clone();
        tokio::spawn(async move {
            while let Ok((device, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mut from_device, mut to_server) = (device.into_split(), server.into_split());
                let keep = keep.clone();
                tokio::spawn(async move {
                    while let Ok(Some(frame)) = read_frame(&mut from_device.0).await {
                        keep.lock().unwrap().push(frame.clone());
                        if write_frame(&mut to_server.1, &frame).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut to_server.0, &mut from_device.1).await;
                });
            }
        });
        Tap { addr, recorded }
    }

    fn frames_of(&self, ref_id: RefId, content_type: ContentType) -> Vec<Frame> {
        self.recorded
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f.ref_id == ref_id && f.content_type == content_type)
            .cloned()
            .collect()
    }
}

/// The next `send_status` about `of` on the device, skipping the rest.
async fn status_of(conn: &bramble_device::Connection, of: RefId) -> SendState {
    loop {
        if let (
            _,
            Cmime::SendStatus {
                of: about, status, ..
            },
        ) = next(conn).await
        {
            if about == of {
                return status;
            }
        }
    }
}

/// Plays recorded frames into the server's Dispatcher as if they arrived
/// on the device's LAN connection. The Router's LAN path admits only a
/// connection that proves the device's key, and the relay is gaining
/// device authentication, so an attacker who only recorded the frames
/// cannot open such a connection: this models one who can inject into
/// the device's authenticated stream, at the point where the stream's
/// packets reach the Dispatcher.
async fn inject(server: &bramble::ServerHandle, frames: &[Frame]) {
    for frame in frames {
        server
            .dispatcher()
            .handle(RouterEvent::Frame {
                frame: frame.clone(),
                via: Via::Lan,
            })
            .await
            .unwrap();
    }
}

/// Attack: a `compose` recorded on the wire and played again under the
/// device's PIN, after it was sent and again after a server restart, is
/// submitted once; the device that sends it again (its `accepted` lost)
/// is told it was sent, and the recipient has exactly one copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_compose_is_mailed_once_also_after_a_restart() {
    let mut bed = bed(2, |_| {}).await;
    let (user, pin) = bed.users[0];
    let tap = Tap::new(bed.server.lan_addr().unwrap()).await;
    let device = Device::new(DeviceConfig::new(pin), KeyStore::new(bed.keys[0].clone()));
    let conn = device.connect(Path::Lan(tap.addr)).await.unwrap();
    let to = bed.info().users[1].address.clone();
    let subject = format!("Replayed {}", RefId::random());
    let compose = Cmime::Compose(Compose {
        to: vec![to],
        subject: subject.clone(),
        text: "Once, please.".into(),
        ..Compose::default()
    });
    let ref_id = RefId::random();
    conn.send(ContentType::Cmime, ref_id, &compose.to_bytes())
        .await
        .unwrap();
    assert_eq!(status_of(&conn, ref_id).await, SendState::Accepted);
    assert_eq!(status_of(&conn, ref_id).await, SendState::Sent);
    let recorded = tap.frames_of(ref_id, ContentType::Cmime);
    assert!(!recorded.is_empty(), "the tap saw the compose");

    // Played again once it was sent and its outbox entry is gone: the
    // answer is its outcome, and nothing is stored to send again.
    inject(&bed.server, &recorded).await;
    assert_eq!(status_of(&conn, ref_id).await, SendState::Sent);
    let waiting = bed
        .db()
        .run(|conn| OutboxEntry::find_due(conn, bramble::db::now() + time::Duration::days(1), 10))
        .await
        .unwrap();
    assert!(waiting.is_empty(), "nothing waits to be sent: {waiting:?}");
    conn.close().await;

    // The server restarts; the device comes back and sends its compose
    // again (same RefID); the attacker plays the recording again too.
    bed.server.shutdown().await.unwrap();
    let listeners = Listeners::bind(&bed.settings).await.unwrap();
    let components = Server::default_components(&bed.settings);
    bed.server = Server::start_with(bed.settings.clone(), listeners, components)
        .await
        .unwrap();
    let conn = crate::fixture::plug_in(&bed.server, &device, PATIENCE).await;
    conn.send(ContentType::Cmime, ref_id, &compose.to_bytes())
        .await
        .unwrap();
    assert_eq!(status_of(&conn, ref_id).await, SendState::Sent);
    inject(&bed.server, &recorded).await;
    assert_eq!(status_of(&conn, ref_id).await, SendState::Sent);
    let waiting = bed
        .db()
        .run(|conn| OutboxEntry::find_due(conn, bramble::db::now() + time::Duration::days(1), 10))
        .await
        .unwrap();
    assert!(waiting.is_empty(), "nothing waits to be sent: {waiting:?}");
    assert_eq!(bed.stats(0).await.sent, 1, "one SMTP submission for {user}");
    // Nothing is left to be sent, so what the recipient has now is final.
    let login = bed.info().users[1].login.clone();
    wait_folder(bed.info(), &login, "INBOX", 1).await;
    let copies = folder(bed.info(), &login, "INBOX")
        .await
        .into_iter()
        .filter(|m| m.contains(&subject))
        .count();
    assert_eq!(copies, 1, "the recipient got the message once");
    conn.close().await;
    bed.stop().await;
}

/// The domain key a test server signs with, and documents signed with it
/// exactly as the Policy Service signs them.
struct Domain {
    key: PKey<Private>,
}

impl Domain {
    fn new() -> Domain {
        Domain {
            key: PKey::generate_ed25519().unwrap(),
        }
    }

    fn sign(&self, kind: &str, targets: Vec<Pin>, issued_at: u64, id: u64, doc: String) -> Signed {
        let public = self.key.raw_public_key().unwrap();
        let binding = Binding {
            kind: kind.to_owned(),
            targets,
            issued_at,
            expires_at: issued_at + 7 * 24 * 3600,
            id,
        };
        Signed::seal(binding, doc, &public, |bytes| {
            Signer::new_without_digest(&self.key).and_then(|mut s| s.sign_oneshot_to_vec(bytes))
        })
        .unwrap()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The Router's side of the LAN path, played by the test (it holds the
/// device's key, as the server does): challenges the device, welcomes it,
/// and then sends it whatever frames the test gives, reading the device's
/// sealed answers.
struct FakeRouter {
    listener: TcpListener,
    key: TransportKey,
}

struct Session {
    stream: TcpStream,
    key: TransportKey,
}

impl FakeRouter {
    async fn new(key: TransportKey) -> FakeRouter {
        FakeRouter {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            key,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    async fn accept(&self) -> Session {
        let (mut stream, _) = self.listener.accept().await.unwrap();
        let hello = read_frame(&mut stream).await.unwrap().unwrap();
        let pin = hello.pin;
        let challenge = Control::LanChallenge {
            nonce: "33".repeat(32),
        };
        write_frame(&mut stream, &challenge.frame(pin, RefId(0)))
            .await
            .unwrap();
        let proof = read_frame(&mut stream).await.unwrap().unwrap();
        assert!(matches!(
            Control::from_frame(&proof),
            Ok(Control::LanProof { .. })
        ));
        write_frame(&mut stream, &Control::Welcome.frame(pin, RefId(0)))
            .await
            .unwrap();
        Session {
            stream,
            key: self.key.clone(),
        }
    }
}

impl Session {
    /// Sends `frame` and returns the device's answer about it: `None` for
    /// a delivery confirmation, the report for a refusal.
    async fn play(&mut self, frame: &Frame) -> Option<ErrorReport> {
        write_frame(&mut self.stream, frame).await.unwrap();
        loop {
            let answer = tokio::time::timeout(PATIENCE, read_frame(&mut self.stream))
                .await
                .expect("the device answered")
                .unwrap()
                .expect("the device stayed connected");
            if answer.ref_id != frame.ref_id {
                continue;
            }
            let opened = envelope::open(
                |_| Some(&self.key),
                answer.content_type,
                answer.pin,
                answer.ref_id,
                &answer.payload,
                1 << 16,
            )
            .unwrap();
            match answer.content_type {
                ContentType::DeliveryConfirmation => return None,
                ContentType::Refusal => return Some(ErrorReport::from_payload(&opened).unwrap()),
                _ => continue,
            }
        }
    }
}

/// A signed document sealed for the device, as the server sends it.
fn sealed(key: &TransportKey, pin: Pin, content_type: ContentType, signed: &Signed) -> Frame {
    let ref_id = RefId::random();
    let payload = envelope::seal(key, content_type, pin, ref_id, &signed.to_bytes()).unwrap();
    Frame::single(content_type, pin, ref_id, payload)
}

/// Attack on the device: a Lock command recorded on the wire and played
/// to the device after it restarted (its state reloaded from its key
/// file) is refused as replayed and not applied again; a policy older
/// than the one applied, and a document signed for another PIN, are
/// refused with their own codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_refuses_replayed_and_misdirected_signed_documents_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("device.json");
    let pin = Pin(0x2A3B_4C5D);
    let key = TransportKey::generate(1).unwrap();
    let router = FakeRouter::new(key.clone()).await;
    let domain = Domain::new();
    let now = unix_now();

    let device = Device::new(DeviceConfig::new(pin), KeyStore::new(key.clone()));
    let (conn, mut session) =
        tokio::join!(device.connect(Path::Lan(router.addr())), router.accept());
    let conn = conn.unwrap();
    let policy = domain.sign("it_policy", vec![pin], now, 1, r#"{"rules":{}}"#.into());
    assert_eq!(
        session
            .play(&sealed(&key, pin, ContentType::ItPolicy, &policy))
            .await,
        None
    );
    let lock = CommandDocument {
        id: 12,
        command: Command::Lock {
            password: "correct horse".into(),
        },
    };
    let lock = domain.sign(
        "admin_command",
        vec![pin],
        now,
        12,
        serde_json::to_string(&lock).unwrap(),
    );
    // The attacker records the command on its way to the device.
    let recorded = sealed(&key, pin, ContentType::AdminCommand, &lock);
    assert_eq!(session.play(&recorded).await, None, "applied once");
    assert!(device.administered().locked);
    conn.close().await;
    device.save(&file).unwrap();
    drop(device);

    // The device restarts from its key file; its user unlocks it (a new
    // process starts unlocked). The recording is played to it again.
    let device = Device::from_file(DeviceConfig::new(pin), DeviceFile::load(&file).unwrap());
    let (conn, mut session) =
        tokio::join!(device.connect(Path::Lan(router.addr())), router.accept());
    let conn = conn.unwrap();
    let refused = session.play(&recorded).await.expect("refused");
    assert_eq!(refused.code, codes::SIGNED_REPLAYED, "{refused:?}");
    assert!(!device.administered().locked, "not applied again");
    assert!(device.administered().applied.is_empty());

    // The same command signed again but as a policy, or for another
    // device, or a policy older than the applied one: refused.
    let as_policy = Signed {
        kind: "it_policy".into(),
        ..lock.clone()
    };
    let refused = session
        .play(&sealed(&key, pin, ContentType::ItPolicy, &as_policy))
        .await
        .expect("refused");
    assert_eq!(
        refused.code,
        codes::SIGNATURE_REJECTED,
        "the kind is signed: {refused:?}"
    );
    let refused = session
        .play(&sealed(&key, pin, ContentType::ItPolicy, &lock))
        .await
        .expect("refused");
    assert_eq!(refused.code, codes::SIGNED_WRONG_KIND, "{refused:?}");
    let elsewhere = domain.sign(
        "admin_command",
        vec![Pin(0x1111_1111)],
        now,
        13,
        r#"{"id":13,"command":"wipe_work"}"#.into(),
    );
    let refused = session
        .play(&sealed(&key, pin, ContentType::AdminCommand, &elsewhere))
        .await
        .expect("refused");
    assert_eq!(refused.code, codes::SIGNED_WRONG_DEVICE, "{refused:?}");
    let older = domain.sign(
        "it_policy",
        vec![pin],
        now - 60,
        2,
        r#"{"rules":{"x":1}}"#.into(),
    );
    let refused = session
        .play(&sealed(&key, pin, ContentType::ItPolicy, &older))
        .await
        .expect("refused");
    assert_eq!(refused.code, codes::SIGNED_OUTDATED, "{refused:?}");
    // A new command for this device is still applied: the refusals above
    // are about the documents, not the device.
    let work = domain.sign(
        "admin_command",
        vec![pin],
        now,
        14,
        r#"{"id":14,"command":"wipe_work"}"#.into(),
    );
    assert_eq!(
        session
            .play(&sealed(&key, pin, ContentType::AdminCommand, &work))
            .await,
        None
    );
    assert!(device.administered().wiped_work);
    conn.close().await;
}

/// Attack: a `device_changes` recorded on the wire and played again after
/// the record was changed on the server since is not applied again, even
/// where the device's side wins conflicts (where a replay would otherwise
/// overwrite the newer server record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_sync_change_is_not_applied_again() {
    use crate::sync::{activate, bed, contact, wait_in_sync, CONTACTS};
    use bramble_device::organizer::SyncClient;
    use bramble_proto::sync::{ConflictResolution, Outcome};

    let bed = bed(1).await;
    bed.set(CONTACTS, |s| s.conflict = ConflictResolution::DeviceWins)
        .await;
    bed.put_card(0, "r", "Original", "").await;
    let pin = bed.users[0].1;
    let key = TransportKey::generate(1).unwrap();
    bramble_testbed::provision::into_server(&bed.server, vec![(pin, key.clone())])
        .await
        .unwrap();
    let tap = Tap::new(bed.server.lan_addr().unwrap()).await;
    let device = Device::new(DeviceConfig::new(pin), KeyStore::new(key));
    let conn = device.connect(Path::Lan(tap.addr)).await.unwrap();
    let client = SyncClient::default();
    activate(&conn, &client).await;
    wait_in_sync(&bed, 0).await;

    // The device's user edits the record; the attacker records the change.
    let before = tap.recorded.lock().unwrap().len();
    client.organizer().edit("r", contact("By device"));
    let results = client.push(&conn, CONTACTS).await.unwrap();
    assert!(
        matches!(results[0].outcome, Outcome::Applied { .. }),
        "{results:?}"
    );
    let recorded: Vec<Frame> = tap.recorded.lock().unwrap()[before..]
        .iter()
        .filter(|f| f.content_type == ContentType::Sync)
        .cloned()
        .collect();
    assert!(!recorded.is_empty(), "the tap saw the change");

    // The record changes on the server since; then the recording is
    // played again, followed by a genuine change of another record. The
    // Synchronization Service serves one device's messages in order, so
    // once the genuine change is answered the replay has been dealt with.
    bed.put_card(0, "r", "Changed on the server since", "")
        .await;
    bed.put_card(0, "m", "Marker", "").await;
    inject(&bed.server, &recorded).await;
    tokio::time::timeout(PATIENCE, async {
        while client.organizer().get(CONTACTS, "m").is_none() {
            client
                .receive(&conn, Duration::from_millis(200))
                .await
                .unwrap();
        }
    })
    .await
    .expect("the marker reached the device");
    client.organizer().edit("m", contact("Marker by device"));
    let results = client.push(&conn, CONTACTS).await.unwrap();
    assert!(
        results
            .iter()
            .all(|r| !matches!(r.outcome, Outcome::Rejected { .. })),
        "{results:?}"
    );
    let names = bed.server_names(0).await;
    assert!(names.contains(&"Marker by device".to_owned()), "{names:?}");
    assert!(
        names.contains(&"Changed on the server since".to_owned()),
        "the replayed change was not applied again: {names:?}"
    );
    assert!(!names.contains(&"By device".to_owned()), "{names:?}");
    conn.close().await;
    bed.stop().await;
}
