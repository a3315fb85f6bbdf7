//! Wireless enterprise activation end to end, against the real testbed:
//! the reference device e-mails its request through the relay (SMTP into
//! Postfix, delivered by Dovecot), the Messaging Agent finds and removes it,
//! the PAKE and the key agreement run over the relay, the Policy Service
//! sends the signed IT policy and the service books, and mail then flows
//! under the new key. Wrong passwords count against the five attempts, and
//! a policy from another domain is refused by the device.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use bramble::clock::Clock;
use bramble::config::Settings;
use bramble::db::ids::AdminCommandId;
use bramble::db::ids::UserId;
use bramble::db::models::activation_password::ActivationPassword;
use bramble::db::models::admin_command::{AdminCommand, CommandKind, TargetState};
use bramble::db::models::device::Device as DeviceRow;
use bramble::db::models::device_key::{DeviceKey, KeySlot};
use bramble::db::models::srp_connection::{SrpConnection, SrpKey, SrpSettings};
use bramble::db::models::user::{ActivationStatus, NewUser, User};
use bramble::db::Database;
use bramble::dispatcher::Outgoing;
use bramble::server::Listeners;
use bramble::{Server, ServerHandle};
use bramble_device::{Device, DeviceConfig, DeviceError, KeyStore};
use bramble_proto::activation::ActivationMessage;
use bramble_proto::cmime::Cmime;
use bramble_proto::policy::{ServiceBooks, Signed};
use bramble_proto::{ContentType, Pin};
use bramble_relay::{Relay, RelayConfig, RelayHandle, SrpAccount, TlsIdentity};
use bramble_testbed::lmtp::Lmtp;
use bramble_testbed::{pilot, Testbed, TestbedOptions};
use tokio::net::TcpListener;

const SRP_ID: &str = "S80005678";
const SRP_KEY: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
/// Guards against a hang; never a performance assertion.
pub(crate) const PATIENCE: Duration = Duration::from_secs(90);

/// A testbed (Postfix, Dovecot), a relay and a server linked to it, with
/// one Bramble user per testbed user; shared with [`crate::attacker`].
pub(crate) struct Bed {
    _dir: tempfile::TempDir,
    pub(crate) testbed: Testbed,
    relay: RelayHandle,
    pub(crate) server: ServerHandle,
    settings: Settings,
    pub(crate) users: Vec<UserId>,
}

impl Bed {
    pub(crate) async fn start(users: usize) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let tb_dir = dir.path().join("testbed");
        let testbed = tokio::task::spawn_blocking(move || {
            let mut options = TestbedOptions::new(tb_dir);
            options.users = users;
            Testbed::start(options)
        })
        .await
        .unwrap()
        .unwrap();
        let relay_config = RelayConfig {
            srp_accounts: vec![SrpAccount::new(SRP_ID, SRP_KEY.as_bytes().to_vec())],
            tls: TlsIdentity {
                cert: Some(dir.path().join("relay.crt")),
                key: Some(dir.path().join("relay.key")),
                generate_if_missing: true,
            },
            smtp: Some(testbed.info().smtp_addr().to_string()),
            ..RelayConfig::default()
        };
        let relay = Relay::start_with(
            relay_config,
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
        .await
        .unwrap();

        let mut settings = Settings::load_from(None, &[]).unwrap().settings;
        settings.data_dir = dir.path().join("data");
        settings.admin.listen = "127.0.0.1:0".parse().unwrap();
        settings.router.lan_listen = Some("127.0.0.1:0".parse().unwrap());
        settings.router.relay_certificate = Some(dir.path().join("relay.crt"));
        settings.router.reconnect_min_ms = 50;
        settings.router.reconnect_max_ms = 400;
        settings.mail = pilot::mail_settings(testbed.info());
        settings.mail.refresh_users_secs = 1;
        let db = Database::open(&settings.database()).unwrap();
        let srp = SrpSettings {
            srp_id: SRP_ID.into(),
            srp_key: SrpKey::new(SRP_KEY),
            relay_host: "127.0.0.1".into(),
            relay_port: i32::from(relay.server_addr().port()),
            cal_licences: 100,
        };
        db.run_blocking(|conn| SrpConnection::save(conn, db.sealer(), &srp))
            .unwrap();
        let ids = db
            .run_blocking(|conn| {
                testbed
                    .info()
                    .users
                    .iter()
                    .map(|u| {
                        Ok(NewUser {
                            display_name: u.login.clone(),
                            email: u.address.clone(),
                            mailbox_login: u.login.clone(),
                        }
                        .save(conn)?
                        .id)
                    })
                    .collect()
            })
            .unwrap();
        drop(db);
        let server = start_server(&settings).await;
        Bed {
            _dir: dir,
            testbed,
            relay,
            server,
            settings,
            users: ids,
        }
    }

    /// Stops the server and starts it again on the same database and
    /// relay; the testbed and the relay keep running.
    pub(crate) async fn restart_server(self) -> Bed {
        let Bed {
            _dir,
            testbed,
            relay,
            server,
            settings,
            users,
        } = self;
        server.shutdown().await.unwrap();
        let server = start_server(&settings).await;
        Bed {
            _dir,
            testbed,
            relay,
            server,
            settings,
            users,
        }
    }

    pub(crate) fn db(&self) -> &Database {
        &self.server.state().db
    }

    pub(crate) fn email(&self, n: usize) -> String {
        self.testbed.info().users[n].address.clone()
    }

    pub(crate) fn relay_addr(&self) -> SocketAddr {
        self.relay.device_addr()
    }

    pub(crate) async fn set_password(&self, n: usize, password: &str) {
        let email = self.email(n);
        let password = password.to_owned();
        self.db()
            .run_sealed(move |conn, sealer| {
                bramble::policy::activation::set(
                    conn,
                    sealer,
                    &Clock::new(),
                    &email,
                    &password,
                    None,
                )
                .map_err(|e| bramble::db::DbError::Invalid(e.to_string()))
            })
            .await
            .unwrap();
    }

    pub(crate) async fn status(&self, n: usize) -> ActivationStatus {
        let user = self.users[n];
        self.db()
            .run(move |conn| User::find_by_id(conn, user))
            .await
            .unwrap()
            .unwrap()
            .activation_status
    }

    pub(crate) async fn wait_status(&self, n: usize, want: ActivationStatus) {
        tokio::time::timeout(PATIENCE, async {
            while self.status(n).await != want {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("user {n} never reached {want:?}"));
    }

    pub(crate) async fn inbox_len(&self, n: usize) -> usize {
        let info = self.testbed.info();
        let tcp = tokio::net::TcpStream::connect(info.imap_addr())
            .await
            .unwrap();
        let mut client = async_imap::Client::new(tcp);
        client.read_response().await.unwrap();
        let mut session = client
            .login(
                info.master_login_for(&info.users[n].login),
                &info.master_password,
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        session.select("INBOX").await.unwrap();
        let all: Vec<_> = session.search("ALL").await.unwrap().into_iter().collect();
        let _ = session.logout().await;
        all.len()
    }

    /// Delivers a message with `subject` to user `n`'s mailbox and returns
    /// the subject of the first e-mail the device then receives.
    pub(crate) async fn mail_to(
        &self,
        n: usize,
        conn: &bramble_device::Connection,
        subject: &str,
    ) -> String {
        let mut lmtp = Lmtp::connect(self.testbed.info().lmtp_addr())
            .await
            .unwrap();
        lmtp.deliver(
            "boss@example.org",
            &self.email(n),
            format!("Subject: {subject}\r\n\r\nHello.\r\n").as_bytes(),
        )
        .await
        .unwrap();
        tokio::time::timeout(PATIENCE, async {
            loop {
                let m = conn.recv().await.unwrap();
                if let Ok(Cmime::Mail(item)) = Cmime::from_bytes(&m.plaintext) {
                    return item.subject;
                }
            }
        })
        .await
        .expect("no mail reached the device")
    }

    /// The user's activation password's failed attempts (`None`: there
    /// is none).
    pub(crate) async fn failed_attempts(&self, n: usize) -> Option<i32> {
        let user = self.users[n];
        self.db()
            .run(move |conn| ActivationPassword::find_by_user(conn, user))
            .await
            .unwrap()
            .map(|info| info.failed_attempts)
    }

    /// E-mails `etp` to user `n` as an activation request, straight into
    /// the mailbox (LMTP), as anyone who knows the address can.
    pub(crate) async fn mail_request(&self, n: usize, from: &str, etp: &[u8]) {
        let mail = format!(
            "Subject: {}\r\nX-Bramble-Activation: 1\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
             Content-Type: application/octet-stream\r\n\
             Content-Disposition: attachment; filename=etp.dat\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
            bramble_proto::activation::REQUEST_SUBJECT,
            base64::engine::general_purpose::STANDARD.encode(etp)
        );
        let mut lmtp = Lmtp::connect(self.testbed.info().lmtp_addr())
            .await
            .unwrap();
        lmtp.deliver(from, &self.email(n), mail.as_bytes())
            .await
            .unwrap();
    }

    pub(crate) async fn stop(self) {
        self.server.shutdown().await.unwrap();
        self.relay.shutdown().await;
        drop(self.testbed);
    }
}

async fn start_server(settings: &Settings) -> ServerHandle {
    let listeners = Listeners::bind(settings).await.unwrap();
    let components = Server::default_components(settings);
    let server = Server::start_with(settings.clone(), listeners, components)
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, async {
        while !server.dispatcher().router().is_link_up()
            || !server.dispatcher().handles(ContentType::Activation)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the SRP link never came up, or the Messaging Agent never took activation packets");
    server
}

pub(crate) fn phone(pin: u32) -> Device {
    Device::new(DeviceConfig::new(Pin(pin)), KeyStore::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_activates_by_email_through_the_relay_and_mail_then_flows() {
    let bed = Bed::start(1).await;
    bed.set_password(0, "kx7m2qpa").await;
    assert_eq!(bed.status(0).await, ActivationStatus::Initializing);
    // This user has no enterprise messenger.
    let user = bed.users[0];
    bed.db()
        .run(move |conn| {
            bramble::db::models::user_service::UserServices::set(conn, user, "BBIM", false)
        })
        .await
        .unwrap();

    let device = phone(0x3000_0001);
    let mut shown = Vec::new();
    let request = device
        .prepare_activation(bed.relay_addr(), &bed.email(0), "kx7m2qpa")
        .await
        .unwrap();
    let etp = request.etp().to_vec();
    let conn = device
        .activate_prepared(request, PATIENCE, |s| shown.push(s.to_owned()))
        .await
        .unwrap();
    assert_eq!(
        shown.last().map(String::as_str),
        Some("Encryption Verified. Waiting for Services.")
    );
    assert!(device.keys().current().is_some());

    // The signed IT policy, then the service books.
    let first = tokio::time::timeout(PATIENCE, conn.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.content_type, ContentType::ItPolicy);
    let policy = Signed::from_bytes(&first.plaintext).unwrap();
    assert_eq!(policy.kind, "it_policy");
    assert_eq!(device.domain_key(), Some(policy.domain_key.clone()));
    let second = tokio::time::timeout(PATIENCE, conn.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.content_type, ContentType::ServiceBook);
    let books = ServiceBooks::from_bytes(&second.plaintext).unwrap();
    let cids: Vec<&str> = books.books.iter().map(|b| b.cid.as_str()).collect();
    assert_eq!(
        cids,
        ["CMIME", "CICAL", "SYNC", "IPPP", "BrowserConfig", "ALP"],
        "every service the server enables, less the one turned off for this user"
    );
    assert_eq!(
        books.enabled_message(),
        format!(
            "Services Received. Your email address, {} is now enabled.",
            bed.email(0)
        )
    );
    bed.wait_status(0, ActivationStatus::ServicesReceived).await;
    // Seed step 13: the device asks for the synchronization settings; with
    // no organizer server configured there is nothing to slow-sync.
    let sync =
        bramble_device::organizer::SyncClient::new(bramble_device::organizer::Organizer::new());
    sync.request_config(&conn).await.unwrap();
    bed.wait_status(0, ActivationStatus::Completed).await;

    // The server side: key stored, password used up, request removed from
    // the mailbox, each step recorded.
    let user = bed.users[0];
    let (password, keys, events) = bed
        .db()
        .run(move |conn| {
            let device = DeviceRow::find_by_pin(conn, &Pin(0x3000_0001))?.unwrap();
            assert_eq!(device.user_id, Some(user));
            Ok((
                ActivationPassword::find_by_user(conn, user)?,
                DeviceKey::find_all_for_device(conn, device.id)?,
                bramble::db::models::activation_password::ActivationEvent::find_for_user(
                    conn, user,
                )?,
            ))
        })
        .await
        .unwrap();
    assert!(password.is_none(), "the password is deleted once used");
    assert_eq!(keys.len(), 1);
    assert_eq!(
        keys[0].key_id,
        i64::from(device.keys().current().unwrap().id)
    );
    let steps: Vec<ActivationStatus> = events.iter().map(|e| e.status).collect();
    assert_eq!(
        steps,
        [
            ActivationStatus::Initializing,
            ActivationStatus::Activating,
            ActivationStatus::EncryptionVerified,
            ActivationStatus::PolicyApplied,
            ActivationStatus::ServicesReceived,
            ActivationStatus::Synchronizing,
            ActivationStatus::Completed,
        ]
    );
    assert_eq!(bed.inbox_len(0).await, 0, "the request left the mailbox");

    // Mail now reaches the device under the new key, over the relay.
    assert_eq!(bed.mail_to(0, &conn, "Welcome").await, "Welcome");

    // The same request e-mailed again (a replay) is refused in words and
    // changes nothing.
    bed.mail_request(0, "attacker@example.org", &etp).await;
    let refused = tokio::time::timeout(PATIENCE, conn.next_plain())
        .await
        .unwrap()
        .unwrap();
    match refused.1 {
        bramble_device::Plain::Activation(
            bramble_proto::activation::ActivationMessage::Refused {
                code,
                message,
                request,
                ..
            },
        ) => {
            assert_eq!(code, "REPLAYED");
            assert!(message.contains("answered before"), "{message}");
            assert_eq!(
                request,
                Some(bramble_proto::activation::request_digest(&etp)),
                "the refusal names the request it refuses"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(bed.status(0).await, ActivationStatus::Completed);
    assert_eq!(bed.inbox_len(0).await, 1, "only the Welcome mail is left");

    // A policy signed by another domain is refused, never confirmed.
    let other = openssl::pkey::PKey::generate_ed25519().unwrap();
    let document = r#"{"rules":{"password_required":false}}"#;
    let issued_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let binding = bramble_proto::policy::Binding {
        kind: "it_policy".into(),
        targets: vec![Pin(0x3000_0001)],
        issued_at,
        expires_at: issued_at + 3600,
        id: 1,
    };
    let forged = Signed::seal(
        binding,
        document.to_owned(),
        &other.raw_public_key().unwrap(),
        |bytes| {
            openssl::sign::Signer::new_without_digest(&other)
                .and_then(|mut s| s.sign_oneshot_to_vec(bytes))
        },
    )
    .unwrap();
    let mut events = bed.server.dispatcher().subscribe();
    let forged_ref = bed
        .server
        .dispatcher()
        .send(Outgoing {
            pin: Pin(0x3000_0001),
            content_type: ContentType::ItPolicy,
            plaintext: forged.to_bytes(),
            priority: false,
            ref_id: None,
        })
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, async {
        while conn.stats().rejected == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the forged policy was not refused");
    assert_eq!(device.domain_key(), Some(policy.domain_key));
    // The device says so, under its transport key; the server stops
    // sending it and has the device's words.
    let (code, message) = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(bramble::dispatcher::DeliveryEvent::Refused {
                ref_id,
                code,
                message,
                ..
            }) = events.recv().await
            {
                if ref_id == forged_ref {
                    return (code, message);
                }
            }
        }
    })
    .await
    .expect("the server never heard of the refusal");
    assert_eq!(code, "SIGNATURE_REJECTED");
    assert!(message.contains("refused the IT policy"), "{message}");
    let queued = bed
        .db()
        .run(move |conn| {
            bramble::db::models::outbound::OutboundPacket::find_by_ref_id(conn, forged_ref)
        })
        .await
        .unwrap();
    assert!(queued.is_none(), "a refused policy is no longer queued");

    conn.close().await;
    bed.stop().await;
}

/// Activates device `pin` for user `n` and takes its policy and books.
async fn activated(bed: &Bed, n: usize, pin: u32) -> (Device, bramble_device::Connection) {
    bed.set_password(n, "kx7m2qpa").await;
    let device = phone(pin);
    let conn = device
        .activate(
            bed.relay_addr(),
            &bed.email(n),
            "kx7m2qpa",
            PATIENCE,
            |_| {},
        )
        .await
        .unwrap();
    for want in [ContentType::ItPolicy, ContentType::ServiceBook] {
        let m = tokio::time::timeout(PATIENCE, conn.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.content_type, want);
    }
    bed.wait_status(n, ActivationStatus::ServicesReceived).await;
    (device, conn)
}

async fn command(
    bed: &Bed,
    pin: u32,
    kind: CommandKind,
    parameters: serde_json::Value,
) -> AdminCommandId {
    bed.db()
        .run_sealed(move |conn, sealer| {
            let device = DeviceRow::find_by_pin(conn, &Pin(pin))?.unwrap();
            Ok(AdminCommand::create(
                conn,
                sealer,
                kind,
                &parameters,
                "test",
                &[device.id],
                bramble::db::now(),
            )?
            .id)
        })
        .await
        .unwrap()
}

#[derive(diesel::QueryableByName)]
struct StoredCommand {
    #[diesel(sql_type = diesel::sql_types::Text)]
    parameters: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Binary>)]
    sealed_password: Option<Vec<u8>>,
}

async fn wait_command(bed: &Bed, id: AdminCommandId, want: TargetState) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let targets = bed
                .db()
                .run(move |conn| AdminCommand::targets_of(conn, id))
                .await
                .unwrap();
            if targets.iter().all(|t| t.state == want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("command {id} never reached {want:?}"));
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never: {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_new_keys_lock_and_wipe_are_tracked_to_the_device() {
    let bed = Bed::start(1).await;
    let pin = 0x3000_0401;
    let (device, conn) = activated(&bed, 0, pin).await;
    let first = device.keys().current().unwrap().clone();

    // A new key on the administrator's request: the old one becomes the
    // previous key on both sides.
    let id = command(&bed, pin, CommandKind::NewKey, serde_json::json!({})).await;
    wait_command(&bed, id, TargetState::Acknowledged).await;
    wait_until("the device uses the new key", || {
        device.keys().current().is_some_and(|k| k.id != first.id)
    })
    .await;
    let keys = device.keys();
    assert_eq!(keys.previous.as_ref().map(|k| k.id), Some(first.id));
    let second = keys.current.clone().unwrap();
    let slots = bed
        .db()
        .run(move |conn| {
            let d = DeviceRow::find_by_pin(conn, &Pin(pin))?.unwrap();
            DeviceKey::find_all_for_device(conn, d.id)
        })
        .await
        .unwrap();
    let ids: Vec<(KeySlot, i64)> = slots.iter().map(|k| (k.slot, k.key_id)).collect();
    assert_eq!(
        ids,
        [
            (KeySlot::Current, i64::from(second.id)),
            (KeySlot::Previous, i64::from(first.id))
        ]
    );

    // The device asks for a new key itself.
    conn.send(
        ContentType::KeyChange,
        bramble_proto::RefId::random(),
        &ActivationMessage::RekeyRequest.to_bytes(),
    )
    .await
    .unwrap();
    wait_until("the device's own request gives a third key", || {
        device.keys().current().is_some_and(|k| k.id != second.id)
    })
    .await;

    // A policy assigned to the user reaches the device, signed by the same
    // domain, without a new activation.
    let user = bed.users[0];
    bed.db()
        .run(move |conn| {
            let policy = bramble::db::models::it_policy::ItPolicy::create(conn, "Sales", "")?;
            bramble::db::models::it_policy::ItPolicy::set_rule(
                conn,
                policy.id,
                "MinimumPasswordLength",
                &serde_json::json!(9),
            )?;
            bramble::db::models::it_policy::ItPolicy::assign_to_user(conn, policy.id, user)?;
            Ok(())
        })
        .await
        .unwrap();
    bed.server
        .dispatcher()
        .announce(bramble::dispatcher::DeliveryEvent::PolicyChanged);
    let pushed = tokio::time::timeout(PATIENCE, async {
        loop {
            let m = conn.recv().await.unwrap();
            if m.content_type == ContentType::ItPolicy {
                return Signed::from_bytes(&m.plaintext).unwrap();
            }
        }
    })
    .await
    .unwrap();
    assert!(
        pushed.document.contains(r#""MinimumPasswordLength":9"#),
        "{}",
        pushed.document
    );
    assert_eq!(device.domain_key(), Some(pushed.domain_key));
    assert_eq!(conn.stats().rejected, 0);

    // Lock with a password.
    let id = command(
        &bed,
        pin,
        CommandKind::Lock,
        serde_json::json!({"password": "0000x"}),
    )
    .await;
    wait_command(&bed, id, TargetState::Acknowledged).await;
    let state = device.administered();
    assert!(state.locked);
    assert_eq!(state.password.as_deref(), Some("0000x"));
    // Acknowledged: the password is gone from the server.
    let (password, raw) = bed
        .db()
        .run_sealed(move |conn, sealer| {
            use diesel::prelude::*;
            let password = AdminCommand::lock_password(conn, sealer, id)?;
            let raw: Vec<(String, Option<Vec<u8>>)> =
                diesel::sql_query("SELECT parameters, sealed_password FROM admin_commands")
                    .load::<StoredCommand>(conn)?
                    .into_iter()
                    .map(|r| (r.parameters, r.sealed_password))
                    .collect();
            Ok((password, raw))
        })
        .await
        .unwrap();
    assert_eq!(password, None);
    assert!(
        raw.iter().all(|(p, s)| !p.contains("0000x") && s.is_none()),
        "{raw:?}"
    );

    // The server loses its domain key (a database restored without it) and
    // makes a new one: the device refuses a command signed by it, and the
    // command fails in the device's words instead of being sent forever.
    bed.db()
        .write(|conn| {
            use diesel::connection::SimpleConnection;
            conn.batch_execute(
                "CREATE TABLE saved_domain_keys AS SELECT * FROM domain_keys; DELETE FROM domain_keys;",
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let id = command(
        &bed,
        pin,
        CommandKind::Lock,
        serde_json::json!({"password": "1111y"}),
    )
    .await;
    wait_command(&bed, id, TargetState::Failed).await;
    let detail = bed
        .db()
        .run(move |conn| AdminCommand::targets_of(conn, id))
        .await
        .unwrap()[0]
        .detail
        .clone();
    assert!(detail.contains("refused the IT admin command"), "{detail}");
    assert_eq!(device.administered().password.as_deref(), Some("0000x"));
    bed.db()
        .write(|conn| {
            use diesel::connection::SimpleConnection;
            conn.batch_execute(
                "DELETE FROM domain_keys; INSERT INTO domain_keys SELECT * FROM saved_domain_keys;",
            )?;
            Ok(())
        })
        .await
        .unwrap();

    // Wipe: the device deletes everything, and leaves its user.
    let id = command(
        &bed,
        pin,
        CommandKind::WipeAll,
        serde_json::json!({"delay_secs": 0}),
    )
    .await;
    wait_command(&bed, id, TargetState::Acknowledged).await;
    assert!(device.administered().wiped_all);
    assert!(device.keys().current().is_none());
    let (owner, keys) = bed
        .db()
        .run(move |conn| {
            let d = DeviceRow::find_by_pin(conn, &Pin(pin))?.unwrap();
            Ok((d.user_id, DeviceKey::find_all_for_device(conn, d.id)?.len()))
        })
        .await
        .unwrap();
    assert_eq!((owner, keys), (None, 0));
    assert_eq!(bed.status(0).await, ActivationStatus::NotActivated);
    conn.close().await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_count_and_the_sixth_try_is_refused() {
    let bed = Bed::start(1).await;
    bed.set_password(0, "right-one").await;
    for attempt in 1..=5 {
        let err = phone(0x3000_0100 + attempt)
            .activate(
                bed.relay_addr(),
                &bed.email(0),
                "wrong-one",
                PATIENCE,
                |_| {},
            )
            .await
            .unwrap_err();
        match err {
            DeviceError::Activation { code, message } => {
                assert_eq!(code, "WRONG_PASSWORD", "attempt {attempt}");
                if attempt < 5 {
                    let left = format!("{} attempt(s) left", 5 - attempt);
                    assert!(message.contains(&left), "attempt {attempt}: {message}");
                }
            }
            other => panic!("attempt {attempt}: {other}"),
        }
    }
    let user = bed.users[0];
    let info = bed
        .db()
        .run(move |conn| ActivationPassword::find_by_user(conn, user))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.failed_attempts, 5);
    // Even the right password is refused now, in words.
    let err = phone(0x3000_0200)
        .activate(
            bed.relay_addr(),
            &bed.email(0),
            "right-one",
            PATIENCE,
            |_| {},
        )
        .await
        .unwrap_err();
    match err {
        DeviceError::Activation { code, message } => {
            assert_eq!(code, "REFUSED");
            assert!(message.contains("PASSWORD_EXHAUSTED"), "{message}");
            assert!(message.contains("ask your administrator"), "{message}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(bed.status(0).await, ActivationStatus::Initializing);
    let keyed = bed
        .db()
        .run(|conn| {
            let mut n = 0;
            for pin in (0x3000_0101..=0x3000_0105).chain([0x3000_0200]) {
                if let Some(d) = DeviceRow::find_by_pin(conn, &Pin(pin))? {
                    n += DeviceKey::find_all_for_device(conn, d.id)?.len();
                }
            }
            Ok(n)
        })
        .await
        .unwrap();
    assert_eq!(keyed, 0, "no key was stored for a failed activation");
    assert_eq!(bed.inbox_len(0).await, 0, "every request left the mailbox");
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_mail_says_so() {
    let relay = Relay::start_with(
        RelayConfig::default(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let err = phone(0x3000_0300)
        .activate(
            relay.device_addr(),
            "someone@example.org",
            "whatever",
            PATIENCE,
            |_| {},
        )
        .await
        .unwrap_err();
    match err {
        DeviceError::Activation { code, message } => {
            assert_eq!(code, "MAIL_NOT_SENT");
            assert!(
                message.contains("no smtp server is configured"),
                "{message}"
            );
        }
        other => panic!("{other}"),
    }
    relay.shutdown().await;
}

/// With no IT policy assigned and no default policy, the device gets the
/// catalog's default values; its confirmation is recorded all the same
/// (time, and no named policy), and a named one replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_a_device_confirms_is_recorded_even_the_default() {
    let bed = Bed::start(1).await;
    let pin = 0x3000_0501;
    let (_device, conn) = activated(&bed, 0, pin).await;
    let (policy, at) = applied(&bed, pin).await;
    assert_eq!(policy, None, "no named policy applies");
    assert!(
        at.is_some(),
        "the default policy's confirmation is recorded"
    );

    let user = bed.users[0];
    let named = bed
        .db()
        .run(move |conn| {
            let policy = bramble::db::models::it_policy::ItPolicy::create(conn, "Field", "")?;
            bramble::db::models::it_policy::ItPolicy::assign_to_user(conn, policy.id, user)?;
            Ok(policy.id)
        })
        .await
        .unwrap();
    bed.server
        .dispatcher()
        .announce(bramble::dispatcher::DeliveryEvent::PolicyChanged);
    tokio::time::timeout(PATIENCE, async {
        while applied(&bed, pin).await.0 != Some(named) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the named policy's confirmation was never recorded");
    conn.close().await;
    bed.stop().await;
}

/// The IT policy the device last confirmed, and when.
async fn applied(
    bed: &Bed,
    pin: u32,
) -> (
    Option<bramble::db::ids::ItPolicyId>,
    Option<time::PrimitiveDateTime>,
) {
    bed.db()
        .run(move |conn| {
            let d = DeviceRow::find_by_pin(conn, &Pin(pin))?.unwrap();
            Ok((d.applied_policy_id, d.policy_applied_at))
        })
        .await
        .unwrap()
}

/// Key regeneration by age, end to end: a current key older than
/// `[policy] key_lifetime_days` (30) is replaced by the Policy Service's
/// sweep without anyone asking; the old key becomes the previous one on
/// both sides, and the new one is not due again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_older_than_its_lifetime_is_replaced_on_both_sides() {
    let bed = Bed::start(1).await;
    let pin = 0x3000_0701;
    let (device, conn) = activated(&bed, 0, pin).await;
    let first = device.keys().current().unwrap().clone();
    bed.db()
        .write(|conn| {
            use diesel::connection::SimpleConnection;
            conn.batch_execute(
                "UPDATE device_keys SET created_at = datetime('now', '-31 days') WHERE slot = 'current';",
            )?;
            Ok(())
        })
        .await
        .unwrap();
    wait_until("the device uses a new key", || {
        device.keys().current().is_some_and(|k| k.id != first.id)
    })
    .await;
    let second = device.keys().current().unwrap().clone();
    assert_eq!(
        device.keys().previous.as_ref().map(|k| k.id),
        Some(first.id)
    );
    let server_side = || async {
        bed.db()
            .run(move |conn| {
                let d = DeviceRow::find_by_pin(conn, &Pin(pin))?.unwrap();
                DeviceKey::find_all_for_device(conn, d.id)
            })
            .await
            .unwrap()
            .iter()
            .map(|k| (k.slot, k.key_id))
            .collect::<Vec<_>>()
    };
    tokio::time::timeout(PATIENCE, async {
        while server_side().await
            != [
                (KeySlot::Current, i64::from(second.id)),
                (KeySlot::Previous, i64::from(first.id)),
            ]
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the server's slots never showed the new key as current");
    // Mail still flows, under the new key.
    assert_eq!(
        bed.mail_to(0, &conn, "After the new key").await,
        "After the new key"
    );
    conn.close().await;
    bed.stop().await;
}

/// "Resend IT policy" and "Resend service books" from the console: the
/// activated device receives the signed policy (it checks the signature)
/// and the books again, without a new activation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_resends_the_policy_and_the_service_books_to_the_device() {
    use bramble::db::models::administrator::{Administrator, NewAdministrator, Role};
    use bramble::db::models::session::Session;
    let bed = Bed::start(1).await;
    let pin = 0x3000_0601;
    let (device, conn) = activated(&bed, 0, pin).await;
    let lifetime = bramble::admin::auth::lifetime(&bed.server.state().settings);
    let token = bed
        .db()
        .run(move |conn| {
            let admin = NewAdministrator {
                login: "help".into(),
                display_name: "Help".into(),
                password: "long enough password".into(),
            }
            .save(conn)?;
            let role = Role::find_by_name(conn, "Senior Helpdesk")?.unwrap();
            Administrator::add_role(conn, admin.id, role.id)?;
            Session::create(conn, admin.id, lifetime)
        })
        .await
        .unwrap()
        .0;
    let first_applied = applied(&bed, pin).await.1.unwrap();
    // The times are stored to the second: wait until a new one has begun.
    crate::fixture::wait_until(
        PATIENCE,
        "the second of the first confirmation has passed",
        || async { bramble::db::now() >= first_applied + time::Duration::seconds(1) },
    )
    .await;
    let path = format!("/api/users/{}/resend", bed.users[0].0);
    for (what, want) in [
        ("policy", ContentType::ItPolicy),
        ("service_books", ContentType::ServiceBook),
    ] {
        let (status, body) = crate::fixture::http_request(
            bed.server.admin_addr(),
            "POST",
            &path,
            Some(&token),
            Some(&serde_json::json!({ "what": what })),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        assert!(body.contains(&Pin(pin).to_string()), "{body}");
        let m = tokio::time::timeout(PATIENCE, async {
            loop {
                let m = conn.recv().await.unwrap();
                if m.content_type == want {
                    return m;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the {what} never arrived"));
        if want == ContentType::ItPolicy {
            let policy = Signed::from_bytes(&m.plaintext).unwrap();
            assert_eq!(device.domain_key(), Some(policy.domain_key));
        } else {
            let books = ServiceBooks::from_bytes(&m.plaintext).unwrap();
            assert_eq!(books.email, bed.email(0));
        }
    }
    assert_eq!(conn.stats().rejected, 0);
    tokio::time::timeout(PATIENCE, async {
        while applied(&bed, pin).await.1 == Some(first_applied) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the resent policy's confirmation was never recorded");
    conn.close().await;
    bed.stop().await;
}
