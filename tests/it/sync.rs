//! The Synchronization Service against a real Radicale (CalDAV/CardDAV)
//! with reference devices on the LAN path: the slow sync merges both sides
//! and deletes nothing, edits and deletions flow both ways without echoes,
//! conflicts follow the configured resolution, a database turned off stops
//! syncing, the organizer server going down loses nothing, an unreadable
//! vCard is reported and skipped, and a backup restores onto a new device.

use std::time::Duration;

use bramble::config::Settings;
use bramble::db::ids::UserId;
use bramble::db::models::activation_password::record_status;
use bramble::db::models::device::Device as DeviceRow;
use bramble::db::models::sync::{
    ErrorSide, SyncItem, SyncItemError, SyncSetting, SyncState, SyncStatus,
};
use bramble::db::models::user::{ActivationStatus, User};
use bramble::db::Database;
use bramble::server::Listeners;
use bramble::sync::convert::unescape;
use bramble::sync::dav::{DavClient, Kind, Precondition};
use bramble::sync::{slow_sync_progress, SyncSettings};
use bramble::{Server, ServerHandle};
use bramble_device::organizer::SyncClient;
use bramble_device::{Connection, Device, DeviceConfig, KeyStore};
use bramble_proto::envelope::TransportKey;
use bramble_proto::sync::{
    Change, ConflictResolution, Contact, Diagnostics, Event, Item, Memo, OrganizerDatabase,
    Outcome, Record, Side, Sync, SyncDirection, Task,
};
use bramble_proto::{ContentType, Pin, RefId};
use bramble_testbed::radicale::Radicale;
use bramble_testbed::{pilot, TestUser, Testbed, TestbedOptions};

/// Guards against a hang; never a performance assertion.
const PATIENCE: Duration = Duration::from_secs(60);
pub(crate) const CONTACTS: OrganizerDatabase = OrganizerDatabase::Contacts;

pub(crate) struct Bed {
    _dir: tempfile::TempDir,
    radicale: Radicale,
    pub(crate) server: ServerHandle,
    pub(crate) users: Vec<(UserId, Pin)>,
    logins: Vec<String>,
    dav: DavClient,
}

impl Bed {
    pub(crate) fn db(&self) -> &Database {
        &self.server.state().db
    }

    /// The device `pin` with a fresh transport key, linked on the LAN.
    async fn phone_with_pin(&self, pin: Pin) -> (Connection, SyncClient) {
        let key = TransportKey::generate(1).unwrap();
        bramble_testbed::provision::into_server(&self.server, vec![(pin, key.clone())])
            .await
            .unwrap();
        let device = Device::new(DeviceConfig::new(pin), KeyStore::new(key));
        let conn = crate::fixture::plug_in(&self.server, &device, PATIENCE).await;
        (conn, SyncClient::default())
    }

    async fn phone(&self, n: usize) -> (Connection, SyncClient) {
        self.phone_with_pin(self.users[n].1).await
    }

    fn collection(&self, n: usize, name: &str) -> String {
        format!("/{}/{name}/", self.logins[n])
    }

    /// Writes a vCard on the server as the organization's other clients would.
    pub(crate) async fn put_card(&self, n: usize, uid: &str, fn_: &str, extra: &str) -> String {
        let href = format!("{}{uid}.vcf", self.collection(n, "contacts"));
        let text = format!(
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{fn_}\r\nN:{fn_};;;;\r\n{extra}END:VCARD\r\n"
        );
        self.dav
            .put(&href, text, Kind::Card, Precondition::Overwrite)
            .await
            .unwrap();
        href
    }

    async fn put_ics(&self, n: usize, collection: &str, uid: &str, component: &str) {
        let href = format!("{}{uid}.ics", self.collection(n, collection));
        let text = format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n{component}END:VCALENDAR\r\n"
        );
        self.dav
            .put(&href, text, Kind::Calendar, Precondition::Overwrite)
            .await
            .unwrap();
    }

    /// The FN of every vCard in user `n`'s address book, sorted.
    pub(crate) async fn server_names(&self, n: usize) -> Vec<String> {
        let report = self
            .dav
            .sync_collection(&self.collection(n, "contacts"), None, Kind::Card)
            .await
            .unwrap();
        let mut names: Vec<String> = report
            .changed
            .iter()
            .filter_map(|r| {
                r.data
                    .as_deref()?
                    .lines()
                    .find_map(|l| l.strip_prefix("FN:").map(|s| unescape(s.trim())))
            })
            .collect();
        names.sort();
        names
    }

    pub(crate) async fn set(&self, database: OrganizerDatabase, f: impl FnOnce(&mut SyncSetting)) {
        let mut setting = self
            .db()
            .run(move |conn| SyncSetting::find(conn, database))
            .await
            .unwrap();
        f(&mut setting);
        self.db().run(move |conn| setting.save(conn)).await.unwrap();
    }

    async fn state(&self, n: usize, database: OrganizerDatabase) -> Option<SyncState> {
        let user = self.users[n].0;
        self.db()
            .run(move |conn| SyncState::find(conn, user, database))
            .await
            .unwrap()
    }

    /// The service's record of what user `n`'s device holds under `uid`.
    async fn item(&self, n: usize, uid: &str) -> Option<SyncItem> {
        let user = self.users[n].0;
        let uid = uid.to_owned();
        self.db()
            .run(move |conn| SyncItem::find(conn, user, CONTACTS, &uid))
            .await
            .unwrap()
    }

    /// Waits until a round of server changes has left the record of `uid`
    /// as `done` wants it.
    async fn wait_item(&self, n: usize, uid: &str, done: impl Fn(Option<SyncItem>) -> bool) {
        tokio::time::timeout(PATIENCE, async {
            while !done(self.item(n, uid).await) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("no round of server changes came");
    }

    pub(crate) async fn stop(self) {
        self.server.shutdown().await.unwrap();
        drop(self.radicale);
    }
}

fn test_users(n: usize) -> Vec<TestUser> {
    (1..=n)
        .map(|i| TestUser {
            login: format!("user{i}"),
            address: format!("user{i}@example.com"),
            password: format!("pass{i}"),
        })
        .collect()
}

/// A lone Radicale with `users` users and a server core whose
/// Synchronization Service reaches it (checked every second).
pub(crate) async fn bed(users: usize) -> Bed {
    bed_with(users, |_| {}).await
}

/// [`bed`] with the `[sync]` settings changed by `tweak`.
async fn bed_with(users: usize, tweak: impl FnOnce(&mut SyncSettings)) -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let people = test_users(users);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let radicale_dir = dir.path().join("radicale");
    let service_password = "service-secret".to_owned();
    let radicale = {
        let people = people.clone();
        let password = service_password.clone();
        tokio::task::spawn_blocking(move || {
            Radicale::start_in(&radicale_dir, port, &people, "bramble", &password)
        })
        .await
        .unwrap()
        .unwrap()
    };
    let url = format!("http://127.0.0.1:{port}/");
    let mut settings = Settings::load_from(None, &[]).unwrap().settings;
    settings.data_dir = dir.path().join("data");
    settings.admin.listen = "127.0.0.1:0".parse().unwrap();
    settings.router.lan_listen = Some("127.0.0.1:0".parse().unwrap());
    settings.sync = SyncSettings {
        url: Some(url.clone()),
        service_login: "bramble".into(),
        service_password: service_password.clone(),
        poll_secs: 1,
        request_timeout_secs: 10,
        ..SyncSettings::default()
    };
    tweak(&mut settings.sync);
    let db = Database::open(&settings.database()).unwrap();
    let enrolled = pilot::enroll(&db, &people, 0x3000_0001).unwrap();
    drop(db);
    let listeners = Listeners::bind(&settings).await.unwrap();
    let components = Server::default_components(&settings);
    let server = Server::start_with(settings, listeners, components)
        .await
        .unwrap();
    let dav = DavClient::new(&url, "bramble", &service_password, PATIENCE).unwrap();
    Bed {
        _dir: dir,
        radicale,
        server,
        users: enrolled,
        logins: people.into_iter().map(|u| u.login).collect(),
        dav,
    }
}

pub(crate) fn contact(name: &str) -> Record {
    Record::Contact(Contact {
        full_name: name.into(),
        family_name: name.into(),
        ..Contact::default()
    })
}

fn name_of(record: &Record) -> String {
    record.title().to_owned()
}

/// The device's contact names, sorted.
fn device_names(client: &SyncClient) -> Vec<String> {
    let mut names: Vec<String> = client
        .organizer()
        .records(CONTACTS)
        .iter()
        .map(|(_, r)| name_of(r))
        .collect();
    names.sort();
    names
}

/// Receives on the device until `done` holds.
async fn wait_device(conn: &Connection, client: &SyncClient, done: impl Fn(&SyncClient) -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !done(client) {
            client
                .receive(conn, Duration::from_millis(200))
                .await
                .unwrap();
        }
    })
    .await
    .expect("the device never reached the expected state");
}

/// Configuration, then the slow sync of every enabled database.
pub(crate) async fn activate(conn: &Connection, client: &SyncClient) {
    client.request_config(conn).await.unwrap();
    client.slow_sync(conn).await.unwrap();
}

/// Waits until the server has recorded the device's `in_sync` for every
/// enabled database.
pub(crate) async fn wait_in_sync(bed: &Bed, n: usize) {
    let user = bed.users[n].0;
    tokio::time::timeout(PATIENCE, async {
        while !slow_sync_progress(bed.db(), user).await.unwrap().complete {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the slow sync never completed on the server");
}

fn days_from_today(days: i64) -> String {
    let d = time::OffsetDateTime::now_utc().date() + time::Duration::days(days);
    format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_sync_merges_both_sides_deletes_nothing_and_completes_activation() {
    let bed = bed(1).await;
    let user = bed.users[0].0;
    bed.db()
        .run(move |conn| {
            for s in [
                ActivationStatus::Initializing,
                ActivationStatus::Activating,
                ActivationStatus::EncryptionVerified,
                ActivationStatus::PolicyApplied,
                ActivationStatus::ServicesReceived,
            ] {
                record_status(conn, user, s, bramble::db::now())?;
            }
            Ok(())
        })
        .await
        .unwrap();
    // Server: Ann (only there), Cat (same on both), Dan (differs).
    bed.put_card(0, "ann", "Ann", "EMAIL:ann@example.com\r\n")
        .await;
    bed.put_card(0, "cat", "Cat", "").await;
    bed.put_card(0, "dan", "Dan server", "").await;
    let recent = days_from_today(-3);
    let old = days_from_today(-40);
    bed.put_ics(0, "calendar", "recent", &format!("BEGIN:VEVENT\r\nUID:recent\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:Review\r\nDTSTART:{recent}T090000Z\r\nDTEND:{recent}T100000Z\r\nEND:VEVENT\r\n")).await;
    bed.put_ics(0, "calendar", "old", &format!("BEGIN:VEVENT\r\nUID:old\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:Long ago\r\nDTSTART:{old}T090000Z\r\nEND:VEVENT\r\n")).await;
    bed.put_ics(0, "tasks", "t1", "BEGIN:VTODO\r\nUID:t1\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:File report\r\nSTATUS:NEEDS-ACTION\r\nEND:VTODO\r\n").await;

    let (conn, client) = bed.phone(0).await;
    {
        let mut org = client.organizer();
        org.edit("bob", contact("Bob"));
        org.edit("cat", contact("Cat"));
        org.edit("dan", contact("Dan device"));
        org.add(Record::Memo(Memo {
            title: "Ideas".into(),
            body: "one\ntwo".into(),
        }));
    }
    // The device's records count as accepted once the slow sync merged them.
    let config = client.request_config(&conn).await.unwrap();
    assert_eq!(config.len(), 4);
    assert!(config.iter().all(|c| c.enabled
        && c.direction == SyncDirection::Bidirectional
        && c.conflict == ConflictResolution::ServerWins));
    let status = bed
        .db()
        .run(move |conn| User::find_by_id(conn, user))
        .await
        .unwrap()
        .unwrap()
        .activation_status;
    assert_eq!(status, ActivationStatus::Synchronizing, "seed step 13");
    let synced = client.slow_sync(&conn).await.unwrap();
    assert_eq!(synced.len(), 4);
    wait_in_sync(&bed, 0).await;

    // Both sides hold everything; the server's Dan won (server wins).
    assert_eq!(device_names(&client), ["Ann", "Bob", "Cat", "Dan server"]);
    assert_eq!(
        bed.server_names(0).await,
        ["Ann", "Bob", "Cat", "Dan server"]
    );
    {
        let org = client.organizer();
        let Record::Contact(ann) = &org.get(CONTACTS, "ann").unwrap().record else {
            panic!()
        };
        assert_eq!(ann.emails, ["ann@example.com"]);
        let events: Vec<String> = org
            .records(OrganizerDatabase::Calendar)
            .iter()
            .map(|(_, r)| name_of(r))
            .collect();
        assert_eq!(events, ["Review"], "the window is 31 days back");
        assert_eq!(org.len(OrganizerDatabase::Tasks), 1);
        assert!(org.get(CONTACTS, "ann").unwrap().rev.is_some());
        assert!(org.get(CONTACTS, "cat").unwrap().rev.is_some());
    }
    let memos = bed.dav.list(&bed.collection(0, "memos")).await.unwrap();
    assert_eq!(memos.len(), 1, "the device's memo reached the server");
    let status = bed
        .db()
        .run(move |conn| User::find_by_id(conn, user))
        .await
        .unwrap()
        .unwrap()
        .activation_status;
    assert_eq!(status, ActivationStatus::Completed, "seed step 15");

    // An edit on each side.
    {
        let mut org = client.organizer();
        let Record::Contact(mut bob) = org.get(CONTACTS, "bob").unwrap().record.clone() else {
            panic!()
        };
        bob.full_name = "Robert".into();
        bob.phones.push(bramble_proto::sync::Phone {
            kind: "cell".into(),
            number: "555 0100".into(),
        });
        org.edit("bob", Record::Contact(bob));
    }
    let results = client.push(&conn, CONTACTS).await.unwrap();
    assert!(
        matches!(results[0].outcome, Outcome::Applied { .. }),
        "{results:?}"
    );
    assert!(bed.server_names(0).await.contains(&"Robert".to_owned()));
    bed.put_card(0, "ann", "Ann Smith", "EMAIL:ann@example.com\r\n")
        .await;
    wait_device(&conn, &client, |c| {
        device_names(c).contains(&"Ann Smith".to_owned())
    })
    .await;
    // Our own write is not sent back: a few rounds bring no change to Bob.
    let quiet = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < quiet {
        if let Some(Sync::Changes { changes, .. }) = client
            .receive(&conn, Duration::from_millis(200))
            .await
            .unwrap()
        {
            assert!(
                changes.iter().all(|c| c.uid() != "bob"),
                "the device's own edit came back: {changes:?}"
            );
        }
    }
    assert_eq!(
        device_names(&client),
        ["Ann Smith", "Cat", "Dan server", "Robert"]
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_follow_the_resolution_setting_and_deletions_flow_both_ways() {
    let bed = bed(1).await;
    bed.put_card(0, "x", "X", "").await;
    bed.put_card(0, "y", "Y", "").await;
    bed.put_card(0, "gone-on-server", "Gone on server", "")
        .await;
    bed.put_card(0, "gone-on-device", "Gone on device", "")
        .await;
    let (conn, client) = bed.phone(0).await;
    activate(&conn, &client).await;
    wait_in_sync(&bed, 0).await;

    // Server wins (the default): both change X, the device ends with the server's.
    bed.put_card(0, "x", "X by server", "").await;
    client.organizer().edit("x", contact("X by device"));
    let results = client.push(&conn, CONTACTS).await.unwrap();
    assert!(
        matches!(
            results[0].outcome,
            Outcome::Conflict {
                kept: Side::Server,
                ..
            }
        ),
        "{results:?}"
    );
    assert!(device_names(&client).contains(&"X by server".to_owned()));
    assert!(bed
        .server_names(0)
        .await
        .contains(&"X by server".to_owned()));

    // Device wins: both change Y, the server ends with the device's.
    bed.set(CONTACTS, |s| s.conflict = ConflictResolution::DeviceWins)
        .await;
    let before = bed.item(0, "y").await.unwrap().etag;
    bed.put_card(0, "y", "Y by server", "").await;
    // Let a round deliver the server's Y first: held back, the edit is pending.
    client.organizer().edit("y", contact("Y by device"));
    bed.wait_item(0, "y", |i| i.is_some_and(|i| i.etag != before))
        .await;
    let _ = client
        .receive(&conn, Duration::from_millis(500))
        .await
        .unwrap();
    let results = client.push(&conn, CONTACTS).await.unwrap();
    assert!(
        matches!(
            results[0].outcome,
            Outcome::Conflict {
                kept: Side::Device,
                ..
            }
        ),
        "{results:?}"
    );
    let names = bed.server_names(0).await;
    assert!(names.contains(&"Y by device".to_owned()), "{names:?}");
    assert!(!names.contains(&"Y by server".to_owned()));
    assert!(device_names(&client).contains(&"Y by device".to_owned()));

    // Deletions after the slow sync, each way.
    bed.dav
        .delete(
            &format!("{}gone-on-server.vcf", bed.collection(0, "contacts")),
            None,
        )
        .await
        .unwrap();
    wait_device(&conn, &client, |c| {
        c.organizer().get(CONTACTS, "gone-on-server").is_none()
    })
    .await;
    client.organizer().delete(CONTACTS, "gone-on-device");
    let results = client.push(&conn, CONTACTS).await.unwrap();
    assert!(matches!(results[0].outcome, Outcome::Applied { .. }));
    assert_eq!(
        bed.server_names(0).await,
        ["X by server", "Y by device"],
        "both deletions reached the other side"
    );
    assert_eq!(device_names(&client), ["X by server", "Y by device"]);
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_turned_off_midway_stops_syncing_and_the_others_go_on() {
    let bed = bed(1).await;
    bed.put_card(0, "a", "A", "").await;
    let (conn, client) = bed.phone(0).await;
    activate(&conn, &client).await;
    wait_in_sync(&bed, 0).await;

    bed.set(CONTACTS, |s| s.enabled = false).await;
    // The device is told.
    wait_device(&conn, &client, |c| !c.organizer().enabled(CONTACTS)).await;
    assert!(client.organizer().enabled(OrganizerDatabase::Tasks));

    bed.put_card(0, "a", "A changed", "").await;
    bed.put_ics(
        0,
        "tasks",
        "t",
        "BEGIN:VTODO\r\nUID:t\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:Still synced\r\nEND:VTODO\r\n",
    )
    .await;
    wait_device(&conn, &client, |c| {
        c.organizer().len(OrganizerDatabase::Tasks) == 1
    })
    .await;
    // A few more rounds: the contact change never comes.
    for _ in 0..10 {
        client
            .receive(&conn, Duration::from_millis(200))
            .await
            .unwrap();
    }
    assert_eq!(device_names(&client), ["A"]);
    // A device that sends anyway is told why, and its change stays with it.
    client.organizer().edit("a", contact("A on device"));
    let results = client.push(&conn, CONTACTS).await.unwrap();
    let Outcome::Rejected { code, message } = &results[0].outcome else {
        panic!("{results:?}")
    };
    assert_eq!(code, "SYNC_DATABASE_OFF");
    assert!(message.contains("turned off"), "{message}");
    assert_eq!(bed.server_names(0).await, ["A changed"]);
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_organizer_server_down_then_back_loses_nothing() {
    let mut bed = bed(1).await;
    bed.put_card(0, "a", "A", "").await;
    let (conn, client) = bed.phone(0).await;
    activate(&conn, &client).await;
    wait_in_sync(&bed, 0).await;

    tokio::task::block_in_place(|| bed.radicale.stop());
    client.organizer().edit("a", contact("A offline edit"));
    let results = client.push(&conn, CONTACTS).await.unwrap();
    let Outcome::Retry { message } = &results[0].outcome else {
        panic!("{results:?}")
    };
    assert!(message.contains("cannot be reached"), "{message}");
    // The administrator sees why.
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(s) = bed.state(0, CONTACTS).await {
                if s.state == SyncStatus::Error {
                    assert!(s.error.unwrap().contains("cannot be reached"));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();

    tokio::task::block_in_place(|| bed.radicale.restart()).unwrap();
    // The edit kept on the device goes through now.
    let results = client.push(&conn, CONTACTS).await.unwrap();
    assert!(
        matches!(results[0].outcome, Outcome::Applied { .. }),
        "{results:?}"
    );
    assert_eq!(bed.server_names(0).await, ["A offline edit"]);
    bed.put_card(0, "b", "B after the outage", "").await;
    wait_device(&conn, &client, |c| {
        c.organizer().get(CONTACTS, "b").is_some()
    })
    .await;
    tokio::time::timeout(PATIENCE, async {
        while bed.state(0, CONTACTS).await.unwrap().state != SyncStatus::InSync {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_vcard_is_reported_and_skipped_and_the_rest_syncs() {
    let bed = bed(1).await;
    bed.put_card(0, "good1", "Good one", "").await;
    let bad = bed
        .put_card(0, "bad", "Bad birthday", "BDAY:notadate\r\n")
        .await;
    bed.put_card(0, "good2", "Good two", "").await;
    let (conn, client) = bed.phone(0).await;
    client.request_config(&conn).await.unwrap();
    client.slow_sync(&conn).await.unwrap();
    assert_eq!(device_names(&client), ["Good one", "Good two"]);
    let user = bed.users[0].0;
    let errors = bed
        .db()
        .run(move |conn| SyncItemError::find_by_user(conn, user))
        .await
        .unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].item, bad);
    assert_eq!(errors[0].side, ErrorSide::Server);
    assert!(
        errors[0].message.contains("`notadate` is not a date"),
        "{}",
        errors[0].message
    );
    wait_in_sync(&bed, 0).await;

    // Incremental: another bad one and a good one in the same round.
    bed.put_card(0, "bad2", "Also bad", "BDAY:31/02/2020\r\n")
        .await;
    bed.put_card(0, "good3", "Good three", "").await;
    wait_device(&conn, &client, |c| {
        device_names(c).contains(&"Good three".to_owned())
    })
    .await;
    let errors = bed
        .db()
        .run(move |conn| SyncItemError::find_by_user(conn, user))
        .await
        .unwrap();
    assert_eq!(errors.len(), 2);
    // Fixed on the server: it syncs and its error is gone.
    bed.put_card(0, "bad", "Bad birthday", "BDAY:1990-05-01\r\n")
        .await;
    wait_device(&conn, &client, |c| {
        device_names(c).contains(&"Bad birthday".to_owned())
    })
    .await;
    let errors = bed
        .db()
        .run(move |conn| SyncItemError::find_by_user(conn, user))
        .await
        .unwrap();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].item.ends_with("bad2.vcf"));
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_onto_a_new_device_without_duplicates_and_diagnostics_are_kept() {
    let bed = bed(1).await;
    bed.put_card(0, "a", "A", "").await;
    let (conn, client) = bed.phone(0).await;
    client.organizer().settings = serde_json::json!({ "ringtone": "Bells", "font": 8 });
    client.organizer().add(Record::Task(Task {
        summary: "Call back".into(),
        ..Task::default()
    }));
    activate(&conn, &client).await;
    wait_in_sync(&bed, 0).await;
    let stored = client.backup(&conn).await.unwrap();
    assert_eq!(stored, 2);
    client
        .report_diagnostics(
            &conn,
            Diagnostics {
                model: "9700".into(),
                os_version: "5.0.0.405".into(),
                battery_percent: 81,
                signal_dbm: -79,
                free_memory_bytes: 31_000_000,
                applications: vec![bramble_proto::sync::Application {
                    name: "Maps".into(),
                    version: "3.1".into(),
                }],
            },
        )
        .await
        .unwrap();
    let pin = bed.users[0].1;
    let reports = tokio::time::timeout(PATIENCE, async {
        loop {
            let reports = bed
                .db()
                .run(move |conn| {
                    let device = DeviceRow::find_by_pin(conn, &pin)?.unwrap();
                    DeviceRow::find_diagnostics(conn, device.id, 10)
                })
                .await
                .unwrap();
            if !reports.is_empty() {
                return reports;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(reports[0].report["battery_percent"], 81);
    assert_eq!(reports[0].report["applications"][0]["name"], "Maps");
    conn.close().await;

    // A replacement device for the same user.
    let user = bed.users[0].0;
    let new_pin = Pin(0x3000_0100);
    bed.db()
        .run(move |conn| {
            DeviceRow::create(
                conn,
                &bramble::db::models::device::NewDevice {
                    pin: new_pin,
                    user_id: Some(user),
                    model: "9800".into(),
                    os_version: "6.0".into(),
                    carrier: "loopback".into(),
                },
            )
        })
        .await
        .unwrap();
    let (conn, fresh) = bed.phone_with_pin(new_pin).await;
    assert!(fresh.restore(&conn).await.unwrap());
    assert_eq!(
        fresh.organizer().settings,
        serde_json::json!({ "ringtone": "Bells", "font": 8 })
    );
    assert_eq!(device_names(&fresh), ["A"]);
    assert_eq!(fresh.organizer().len(OrganizerDatabase::Tasks), 1);
    activate(&conn, &fresh).await;
    // Same records on both sides, none twice.
    assert_eq!(device_names(&fresh), ["A"]);
    assert_eq!(bed.server_names(0).await, ["A"]);
    assert_eq!(fresh.organizer().len(OrganizerDatabase::Tasks), 1);
    assert_eq!(
        bed.dav
            .list(&bed.collection(0, "tasks"))
            .await
            .unwrap()
            .len(),
        1
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appointments_tasks_and_memos_edited_on_the_device_keep_what_it_does_not_know() {
    let bed = bed(1).await;
    let day = days_from_today(2);
    bed.put_ics(0, "calendar", "meet", &format!("BEGIN:VEVENT\r\nUID:meet\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:Meeting\r\nDTSTART:{day}T090000Z\r\nDTEND:{day}T100000Z\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:Reminder\r\nTRIGGER:-PT15M\r\nEND:VALARM\r\nEND:VEVENT\r\n")).await;
    let (conn, client) = bed.phone(0).await;
    activate(&conn, &client).await;
    {
        let mut org = client.organizer();
        let Record::Event(mut e) = org
            .get(OrganizerDatabase::Calendar, "meet")
            .unwrap()
            .record
            .clone()
        else {
            panic!()
        };
        e.location = "Room 4".into();
        org.edit("meet", Record::Event(e));
        org.add(Record::Event(Event {
            summary: "Lunch".into(),
            start: format!("{day}T120000Z"),
            end: Some(format!("{day}T130000Z")),
            ..Event::default()
        }));
    }
    let results = client
        .push(&conn, OrganizerDatabase::Calendar)
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    assert!(results
        .iter()
        .all(|r| matches!(r.outcome, Outcome::Applied { .. })));
    let (text, _) = bed
        .dav
        .get(&format!("{}meet.ics", bed.collection(0, "calendar")))
        .await
        .unwrap()
        .unwrap();
    assert!(text.contains("LOCATION:Room 4"), "{text}");
    assert!(text.contains("BEGIN:VALARM"), "the alarm is kept: {text}");
    assert_eq!(
        bed.dav
            .list(&bed.collection(0, "calendar"))
            .await
            .unwrap()
            .len(),
        2
    );
    // One record that cannot go where it was sent is refused alone; the
    // rest of the batch goes through.
    let batch = 9_999;
    let message = Sync::DeviceChanges {
        database: OrganizerDatabase::Calendar,
        batch,
        changes: vec![
            Change::Upsert(Item {
                uid: "misfiled".into(),
                rev: None,
                record: contact("Not an appointment"),
            }),
            Change::Upsert(Item {
                uid: "dinner".into(),
                rev: None,
                record: Record::Event(Event {
                    summary: "Dinner".into(),
                    start: format!("{day}T190000Z"),
                    ..Event::default()
                }),
            }),
        ],
    };
    conn.send(ContentType::Sync, RefId::random(), &message.to_bytes())
        .await
        .unwrap();
    let results = client
        .until(&conn, "results", |m| match m {
            Sync::Results {
                batch: b, results, ..
            } if *b == batch => Some(results.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert!(
        matches!(&results[0].outcome, Outcome::Rejected { code, .. } if code == "SYNC_WRONG_DATABASE"),
        "{results:?}"
    );
    assert!(matches!(results[1].outcome, Outcome::Applied { .. }));
    assert_eq!(
        bed.dav
            .list(&bed.collection(0, "calendar"))
            .await
            .unwrap()
            .len(),
        3
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_testbed_runs_radicale_and_writes_the_sync_settings() {
    let dir = tempfile::tempdir().unwrap();
    let tb_dir = dir.path().join("testbed");
    let testbed = tokio::task::spawn_blocking(move || {
        let mut options = TestbedOptions::new(tb_dir);
        options.users = 2;
        Testbed::start(options)
    })
    .await
    .unwrap()
    .unwrap();
    let info = testbed.info().clone();
    let settings = Settings::load_from(Some(&testbed.dir().join("bramble.toml")), &[])
        .unwrap()
        .settings;
    assert_eq!(settings.sync.url.as_deref(), Some(info.dav_url.as_str()));
    assert_eq!(settings.sync.service_login, info.dav_service_login);
    let dav = DavClient::new(
        &info.dav_url,
        &settings.sync.service_login,
        &settings.sync.service_password,
        PATIENCE,
    )
    .unwrap();
    for login in ["user1", "user2"] {
        for name in ["contacts", "calendar", "tasks", "memos"] {
            let markers = dav.markers(&format!("/{login}/{name}/")).await.unwrap();
            assert!(markers.sync_token.is_some(), "{login}/{name}");
        }
    }
    // A user reaches only their own collections.
    let user1 = DavClient::new(&info.dav_url, "user1", "pass1", PATIENCE).unwrap();
    assert!(user1.markers("/user1/contacts/").await.is_ok());
    let refused = user1.markers("/user2/contacts/").await.unwrap_err();
    assert_eq!(refused.code(), "SYNC_SERVER_FORBIDDEN");
    drop(testbed);
}

#[test]
fn the_command_line_sets_and_shows_the_per_database_settings() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::fixture::bramble(
        dir.path(),
        &["sync", "set", "--database", "tasks", "--enabled", "false"],
    );
    assert!(out.status.success(), "{}", crate::fixture::text(&out));
    let out = crate::fixture::bramble(
        dir.path(),
        &[
            "sync",
            "set",
            "--database",
            "contacts",
            "--direction",
            "server-to-device",
            "--conflict",
            "device-wins",
        ],
    );
    assert!(out.status.success(), "{}", crate::fixture::text(&out));
    let out = crate::fixture::bramble(dir.path(), &["sync", "status"]);
    let text = crate::fixture::text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("wireless synchronization is off"),
        "no [sync] url: {text}"
    );
    assert!(
        text.contains("contacts  on, server to device, device wins"),
        "{text}"
    );
    assert!(text.contains("tasks     off"), "{text}");
    assert!(
        text.contains("calendar  on, both ways, server wins"),
        "{text}"
    );
    let out = crate::fixture::bramble(dir.path(), &["sync", "set", "--database", "notes"]);
    assert!(!out.status.success());
    // Each change is in the audit log, before and after.
    let mut settings = Settings::load_from(None, &[]).unwrap().settings;
    settings.data_dir = dir.path().to_path_buf();
    let db = Database::open(&settings.database()).unwrap();
    let (entries, _) = db
        .run_blocking(|conn| bramble::db::models::audit::find_page(conn, 0, 10))
        .unwrap();
    let changes: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "sync.setting")
        .collect();
    assert_eq!(changes.len(), 2, "{entries:?}");
    assert!(changes.iter().all(|e| e.actor == "bramble sync set"));
    assert!(
        changes.iter().any(|e| e.target == "sync/tasks"),
        "{changes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_moved_on_the_server_stays_one_record_on_both_sides() {
    let bed = bed(1).await;
    let old = bed.put_card(0, "m", "Moving", "").await;
    let (conn, client) = bed.phone(0).await;
    activate(&conn, &client).await;
    wait_in_sync(&bed, 0).await;

    // Another client moves it: the same UID under a new name.
    bed.dav.delete(&old, None).await.unwrap();
    let moved = format!("{}elsewhere.vcf", bed.collection(0, "contacts"));
    bed.dav
        .put(
            &moved,
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:m\r\nFN:Moved\r\nN:Moved;;;;\r\nEND:VCARD\r\n"
                .into(),
            Kind::Card,
            Precondition::IfNoneMatch,
        )
        .await
        .unwrap();
    wait_device(&conn, &client, |c| device_names(c) == ["Moved"]).await;
    assert!(client.organizer().get(CONTACTS, "m").is_some());

    // The device's edit goes where the record is now; nothing reappears at
    // the old name.
    client.organizer().edit("m", contact("Moved and edited"));
    let results = client.push(&conn, CONTACTS).await.unwrap();
    assert!(
        matches!(results[0].outcome, Outcome::Applied { .. }),
        "{results:?}"
    );
    let listed = bed.dav.list(&bed.collection(0, "contacts")).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].0.ends_with("elsewhere.vcf"));
    assert_eq!(bed.server_names(0).await, ["Moved and edited"]);
    assert_eq!(device_names(&client), ["Moved and edited"]);
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_webdav_sync_the_ctag_and_etags_find_every_change() {
    let bed = bed_with(1, |s| s.webdav_sync = false).await;
    bed.put_card(0, "a", "A", "").await;
    let gone = bed.put_card(0, "b", "B", "").await;
    let (conn, client) = bed.phone(0).await;
    activate(&conn, &client).await;
    wait_in_sync(&bed, 0).await;
    let state = bed.state(0, CONTACTS).await.unwrap();
    assert_eq!(state.sync_token, None);
    assert!(
        state.ctag.is_some(),
        "the CTag marks where the server side was read"
    );

    bed.put_card(0, "a", "A changed", "").await;
    bed.put_card(0, "c", "C", "").await;
    bed.dav.delete(&gone, None).await.unwrap();
    wait_device(&conn, &client, |c| device_names(c) == ["A changed", "C"]).await;

    // The device's own edit is not sent back.
    client.organizer().edit("c", contact("C on device"));
    let results = client.push(&conn, CONTACTS).await.unwrap();
    assert!(matches!(results[0].outcome, Outcome::Applied { .. }));
    let quiet = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < quiet {
        if let Some(Sync::Changes { changes, .. }) = client
            .receive(&conn, Duration::from_millis(200))
            .await
            .unwrap()
        {
            assert!(changes.iter().all(|c| c.uid() != "c"), "{changes:?}");
        }
    }
    assert_eq!(bed.server_names(0).await, ["A changed", "C on device"]);
    assert_eq!(device_names(&client), ["A changed", "C on device"]);
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_databases_take_changes_from_one_side_only() {
    let bed = bed(1).await;
    bed.set(CONTACTS, |s| s.direction = SyncDirection::DeviceToServer)
        .await;
    bed.set(OrganizerDatabase::Memos, |s| {
        s.direction = SyncDirection::ServerToDevice
    })
    .await;
    bed.put_card(0, "server-only", "Server only", "").await;
    bed.put_ics(0, "memos", "note", "BEGIN:VJOURNAL\r\nUID:note\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:From the server\r\nEND:VJOURNAL\r\n").await;
    let (conn, client) = bed.phone(0).await;
    client.organizer().edit("mine", contact("Mine"));
    activate(&conn, &client).await;
    // Contacts go device → server only; memos server → device only.
    assert_eq!(device_names(&client), ["Mine"]);
    assert_eq!(bed.server_names(0).await, ["Mine", "Server only"]);
    assert_eq!(client.organizer().len(OrganizerDatabase::Memos), 1);

    client.organizer().edit("mine", contact("Mine, edited"));
    let results = client.push(&conn, CONTACTS).await.unwrap();
    assert!(matches!(results[0].outcome, Outcome::Applied { .. }));
    assert_eq!(bed.server_names(0).await, ["Mine, edited", "Server only"]);

    let uid = client
        .organizer()
        .find(OrganizerDatabase::Memos, "From the server")
        .unwrap();
    client.organizer().edit(
        &uid,
        Record::Memo(Memo {
            title: "Edited on the device".into(),
            body: String::new(),
        }),
    );
    let results = client.push(&conn, OrganizerDatabase::Memos).await.unwrap();
    let Outcome::Rejected { code, .. } = &results[0].outcome else {
        panic!("{results:?}")
    };
    assert_eq!(code, "SYNC_SERVER_TO_DEVICE_ONLY");
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_a_record_the_server_deleted_follows_the_resolution() {
    let bed = bed(1).await;
    let first = bed.put_card(0, "first", "First", "").await;
    let second = bed.put_card(0, "second", "Second", "").await;
    let (conn, client) = bed.phone(0).await;
    activate(&conn, &client).await;
    wait_in_sync(&bed, 0).await;

    // Server wins: the deletion stands, on the device too.
    client.organizer().edit("first", contact("First, edited"));
    bed.dav.delete(&first, None).await.unwrap();
    bed.wait_item(0, "first", |i| i.is_none()).await;
    let results = client.push(&conn, CONTACTS).await.unwrap();
    assert!(
        matches!(
            results[0].outcome,
            Outcome::Conflict {
                kept: Side::Server,
                item: None,
                ..
            }
        ),
        "{results:?}"
    );
    assert!(client.organizer().get(CONTACTS, "first").is_none());

    // Device wins: the record comes back on the server.
    bed.set(CONTACTS, |s| s.conflict = ConflictResolution::DeviceWins)
        .await;
    client.organizer().edit("second", contact("Second, edited"));
    bed.dav.delete(&second, None).await.unwrap();
    bed.wait_item(0, "second", |i| i.is_none()).await;
    let results = client.push(&conn, CONTACTS).await.unwrap();
    assert!(
        matches!(results[0].outcome, Outcome::Applied { .. }),
        "{results:?}"
    );
    assert_eq!(bed.server_names(0).await, ["Second, edited"]);
    assert_eq!(device_names(&client), ["Second, edited"]);
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_database_off_activation_completes_at_the_configuration_request() {
    let bed = bed(1).await;
    for database in OrganizerDatabase::ALL {
        bed.set(database, |s| s.enabled = false).await;
    }
    let user = bed.users[0].0;
    bed.db()
        .run(move |conn| {
            for s in [
                ActivationStatus::Initializing,
                ActivationStatus::Activating,
                ActivationStatus::EncryptionVerified,
                ActivationStatus::PolicyApplied,
                ActivationStatus::ServicesReceived,
            ] {
                record_status(conn, user, s, bramble::db::now())?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let (conn, client) = bed.phone(0).await;
    let config = client.request_config(&conn).await.unwrap();
    assert!(config.iter().all(|c| !c.enabled));
    assert!(client.slow_sync(&conn).await.unwrap().is_empty());
    let status = bed
        .db()
        .run(move |conn| User::find_by_id(conn, user))
        .await
        .unwrap()
        .unwrap()
        .activation_status;
    assert_eq!(status, ActivationStatus::Completed);
    bed.stop().await;
}

/// An organizer server whose answer would be 2 GiB (a local server that
/// streams it chunked, as no real server can be made to): the client reads
/// up to `max_response_bytes`, drops the connection and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organizer_answer_longer_than_the_limit_is_cut_off() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TOTAL: u64 = 2 * 1024 * 1024 * 1024;
    const LIMIT: u64 = 1024 * 1024;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let server = tokio::spawn({
        let written = written.clone();
        async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = vec![0u8; 8192];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tcp.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before asking");
                request.extend_from_slice(&buf[..n]);
            }
            tcp.write_all(
                b"HTTP/1.1 207 Multi-Status\r\nContent-Type: application/xml\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
            let data = vec![b' '; 64 * 1024];
            let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
            chunk.extend_from_slice(&data);
            chunk.extend_from_slice(b"\r\n");
            while written.load(Ordering::Relaxed) < TOTAL {
                if tcp.write_all(&chunk).await.is_err() {
                    return;
                }
                written.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            let _ = tcp.write_all(b"0\r\n\r\n").await;
        }
    });
    let dav = DavClient::new(&format!("http://{addr}/"), "bramble", "secret", PATIENCE)
        .unwrap()
        .with_max_response_bytes(LIMIT);
    let error = dav.markers("/user1/contacts/").await.unwrap_err();
    assert_eq!(error.code(), "SYNC_ANSWER_TOO_LARGE", "{error}");
    let text = error.to_string();
    assert!(
        text.contains("longer than 1 MiB") && text.contains("max_response_bytes"),
        "{text}"
    );
    // The server's writes fail once the client has dropped the connection.
    tokio::time::timeout(PATIENCE, server)
        .await
        .expect("the client kept the connection open")
        .unwrap();
    let sent = written.load(Ordering::Relaxed);
    // What the client did not read stays in the sockets' buffers: far
    // less than the answer.
    assert!(
        sent < 256 * 1024 * 1024,
        "the client read on past its limit: {sent} bytes were sent"
    );
    eprintln!(
        "the server wrote {} KiB of a 2 GiB answer before the client (limit {} KiB) dropped it",
        sent / 1024,
        LIMIT / 1024
    );
}
