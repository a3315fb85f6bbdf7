//! Address lookup (the ALP service book) end to end: a reference device on
//! the LAN path asks the running server, whose MailStore Service searches a
//! real OpenLDAP server (slapd on loopback) — or Bramble's own users when
//! there is no directory. At most 20 people come back, `truncated` says
//! there were more, and each refusal is in words: no ALP book on the
//! device, ALP turned off for the user, a query too short, the directory
//! unreachable.

use std::time::Duration;

use bramble::config::Settings;
use bramble::db::ids::UserId;
use bramble::db::models::user_service::UserServices;
use bramble::mailstore::DirectorySettings;
use bramble::policy::service::service_books;
use bramble::policy::PolicySettings;
use bramble::server::Listeners;
use bramble::{Server, ServerHandle};
use bramble_device::{Connection, Device, DeviceConfig, DeviceError, KeyStore};
use bramble_proto::envelope::TransportKey;
use bramble_proto::lookup::{codes, LookupReply};
use bramble_proto::Pin;
use bramble_testbed::slapd::{Slapd, ROOT_DN, ROOT_PASSWORD, SUFFIX};
use bramble_testbed::{pilot, TestUser};

use crate::fixture;

/// Guards against a hang; never a performance assertion.
const PATIENCE: Duration = Duration::from_secs(30);

struct Bed {
    dir: tempfile::TempDir,
    server: ServerHandle,
    users: Vec<(UserId, Pin)>,
}

/// `count` people `User NN <userNN@example.com>` in the directory.
fn people(count: usize) -> String {
    let mut ldif =
        format!("dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n");
    for i in 1..=count {
        ldif.push_str(&format!(
            "dn: uid=user{i:02},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: user{i:02}\ncn: User {i:02}\nsn: {i:02}\nmail: user{i:02}@example.com\n\n"
        ));
    }
    ldif
}

fn directory(url: String) -> DirectorySettings {
    DirectorySettings {
        name: "corp".into(),
        url,
        bind_dn: ROOT_DN.into(),
        bind_password: ROOT_PASSWORD.into(),
        base_dn: SUFFIX.into(),
        timeout_secs: 5,
        ..DirectorySettings::default()
    }
}

/// A server core with these directories and `users` enrolled users
/// (`personNN@example.org`, each with a device).
async fn bed(directories: Vec<DirectorySettings>, users: usize) -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::load_from(None, &[]).unwrap().settings;
    settings.data_dir = dir.path().join("data");
    settings.admin.listen = "127.0.0.1:0".parse().unwrap();
    settings.router.lan_listen = Some("127.0.0.1:0".parse().unwrap());
    settings.directories = directories;
    let people: Vec<TestUser> = (1..=users)
        .map(|i| TestUser {
            login: format!("person{i:02}"),
            address: format!("person{i:02}@example.org"),
            password: String::new(),
        })
        .collect();
    let db = bramble::db::Database::open(&settings.database()).unwrap();
    let enrolled = pilot::enroll(&db, &people, 0x4000_0001).unwrap();
    drop(db);
    let listeners = Listeners::bind(&settings).await.unwrap();
    let components = Server::default_components(&settings);
    let server = Server::start_with(settings, listeners, components)
        .await
        .unwrap();
    Bed {
        dir,
        server,
        users: enrolled,
    }
}

impl Bed {
    /// User `n`'s device with a fresh transport key (the test path),
    /// holding the service books the Policy Service would send.
    async fn phone(&self, n: usize) -> (Device, Connection) {
        let pin = self.users[n].1;
        let key = TransportKey::generate(1).unwrap();
        bramble_testbed::provision::into_server(&self.server, vec![(pin, key.clone())])
            .await
            .unwrap();
        let device = Device::new(DeviceConfig::new(pin), KeyStore::new(key));
        device.set_service_books(Some(books(n)));
        let conn = crate::fixture::plug_in(&self.server, &device, PATIENCE).await;
        (device, conn)
    }

    async fn set_alp(&self, n: usize, enabled: bool) {
        let user = self.users[n].0;
        self.server
            .state()
            .db
            .write(move |conn| UserServices::set(conn, user, "ALP", enabled))
            .await
            .unwrap();
    }
}

fn books(n: usize) -> bramble_proto::policy::ServiceBooks {
    service_books(
        &PolicySettings::default(),
        "bes01",
        &format!("person{:02}@example.org", n + 1),
        &Default::default(),
    )
}

async fn lookup(device: &Device, conn: &Connection, query: &str) -> LookupReply {
    device.lookup(conn, query, PATIENCE).await.unwrap()
}

async fn refused(device: &Device, conn: &Connection, query: &str) -> (String, String) {
    match device.lookup(conn, query, PATIENCE).await {
        Err(DeviceError::Lookup { code, message }) => (code, message),
        other => panic!("expected a refusal for {query:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn lookup_searches_the_directory_at_most_twenty_and_refuses_in_words() {
    let slapd = Slapd::start(&people(25), "").unwrap();
    let bed = bed(vec![directory(slapd.url())], 1).await;
    let (device, conn) = bed.phone(0).await;

    let one = lookup(&device, &conn, "User 07").await;
    assert_eq!(one.results.len(), 1, "{one:?}");
    assert_eq!(one.results[0].name, "User 07");
    assert_eq!(one.results[0].email, "user07@example.com");
    assert_eq!(one.results[0].login, "user07");
    assert!(!one.truncated);
    let by_mail = lookup(&device, &conn, "USER13@example").await;
    assert_eq!(by_mail.results.len(), 1, "any case: {by_mail:?}");
    assert_eq!(by_mail.results[0].name, "User 13");
    let none = lookup(&device, &conn, "*)(uid=*").await;
    assert!(none.results.is_empty(), "the query is escaped: {none:?}");

    // 25 match: exactly 20 come back, sorted, and the device is told.
    let many = lookup(&device, &conn, "user").await;
    assert_eq!(many.results.len(), 20, "{many:?}");
    assert!(many.truncated);
    let names: Vec<&str> = many.results.iter().map(|p| p.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let ten = lookup(&device, &conn, "User 1").await;
    assert_eq!(ten.results.len(), 10, "User 10–19: {ten:?}");
    assert!(!ten.truncated);

    let (code, message) = refused(&device, &conn, "u").await;
    assert_eq!(code, codes::QUERY_TOO_SHORT);
    assert!(message.contains("at least 2 characters"), "{message}");

    // Turned off for the user (bramble user services --disable ALP).
    bed.set_alp(0, false).await;
    let (code, message) = refused(&device, &conn, "user").await;
    assert_eq!(code, codes::DISABLED);
    assert!(
        message.contains("address lookup is turned off for person01@example.org"),
        "{message}"
    );
    bed.set_alp(0, true).await;
    assert_eq!(lookup(&device, &conn, "User 07").await.results.len(), 1);

    // The directory goes away: the error names it and what to check.
    drop(slapd);
    let (code, message) = refused(&device, &conn, "user").await;
    assert_eq!(code, codes::DIRECTORY_FAILED);
    assert!(
        message.contains("cannot reach directory `corp`")
            && message.contains("check url of directory corp"),
        "{message}"
    );

    // A device without the ALP service book does not even ask.
    device.set_service_books(None);
    let (code, message) = refused(&device, &conn, "user").await;
    assert_eq!(code, "NO_SERVICE_BOOK");
    assert!(
        message.contains("Address lookup (ALP) service book"),
        "{message}"
    );
    let mut no_alp = books(0);
    no_alp.books.retain(|b| b.cid != "ALP");
    device.set_service_books(Some(no_alp));
    assert_eq!(refused(&device, &conn, "user").await.0, "NO_SERVICE_BOOK");

    conn.close().await;
    bed.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_directories_lookup_searches_brambles_users_and_the_command_prints_a_table() {
    let bed = bed(Vec::new(), 25).await;
    let (device, conn) = bed.phone(0).await;
    let one = lookup(&device, &conn, "person07").await;
    assert_eq!(one.results.len(), 1, "{one:?}");
    assert_eq!(one.results[0].email, "person07@example.org");
    let many = lookup(&device, &conn, "example.org").await;
    assert_eq!(many.results.len(), 20);
    assert!(many.truncated);
    conn.close().await;

    // `bramble device lookup` with the device's key file.
    let keys = bed.dir.path().join("device.json");
    device
        .keys()
        .save_full(device.pin(), &keys, None, device.service_books().as_ref())
        .unwrap();
    let lan = bed.server.lan_addr().unwrap().to_string();
    let cli = bed.dir.path().join("cli");
    let run = |query: &'static str| {
        let (cli, keys, lan) = (cli.clone(), keys.clone(), lan.clone());
        tokio::task::spawn_blocking(move || {
            fixture::bramble(
                &cli,
                &[
                    "device",
                    "lookup",
                    "--keys",
                    keys.to_str().unwrap(),
                    "--lan",
                    &lan,
                    query,
                ],
            )
        })
    };
    let out = run("person").await.unwrap();
    let text = fixture::text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("NAME"), "{text}");
    assert!(
        text.contains("person01@example.org") && !text.contains("person21@example.org"),
        "{text}"
    );
    assert!(
        text.contains("20 found; more people match"),
        "the truncation note: {text}"
    );
    let out = run("p").await.unwrap();
    assert!(!out.status.success());
    assert!(
        fixture::text(&out).contains("error[LOOKUP_QUERY_TOO_SHORT]"),
        "{}",
        fixture::text(&out)
    );
    bed.server.shutdown().await.unwrap();
}
