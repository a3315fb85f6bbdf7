//! `bramble bench sync`: the Synchronization Service with many contacts.
//!
//! Starts a Radicale (real CalDAV/CardDAV) holding N contacts for one
//! user, a server in this process whose Synchronization Service reaches
//! it, and one reference device on the LAN path. Times the slow sync of an
//! empty device (configuration request to the device answering `in_sync`
//! for every database), then one changelist of 100 edits made on the
//! device, until the outcome of each is back on the device.
//!
//! Figures: `contacts`, `slow_sync_s`, `incremental_ms`, and the organizer
//! server's own share measured in the same run: `limit_slow_sync_s` (one
//! listing of every contact with its data) and `limit_incremental_ms` (100
//! reads and conditional writes straight to Radicale, what each device
//! edit needs at least). Both sides are
//! checked to hold N contacts afterwards. Radicale's own cache is warmed
//! before timing (its first listing of a new collection parses every
//! item), so the figures are of a server in service, not of Radicale's
//! first start.

use std::time::{Duration, Instant};

use anyhow::Context;
use bramble_device::organizer::SyncClient;
use bramble_device::{Device, DeviceConfig, KeyStore, Path};
use bramble_proto::envelope::TransportKey;
use bramble_proto::sync::{OrganizerDatabase, Outcome, Record};
use serde::Serialize;

use crate::radicale::Radicale;
use crate::{pilot, TestUser};
use bramble::config::Settings;
use bramble::db::Database;
use bramble::server::{Listeners, Server};
use bramble::sync::dav::{DavClient, Kind, Precondition};
use bramble::sync::SyncSettings;

/// Edits in the incremental changelist.
pub const INCREMENTAL_CHANGES: usize = 100;

#[derive(Debug, Clone, Serialize)]
pub struct SyncFigures {
    pub contacts: usize,
    pub slow_sync_s: f64,
    pub incremental_ms: f64,
    /// Radicale alone, same run: one listing of every contact with its data.
    pub limit_slow_sync_s: f64,
    /// Radicale alone, same run: 100 reads and conditional writes in a row.
    pub limit_incremental_ms: f64,
}

pub async fn run(contacts: usize, progress: impl Fn(&str)) -> anyhow::Result<SyncFigures> {
    let dir = tempfile::tempdir()?;
    let user = TestUser {
        login: "user1".into(),
        address: "user1@example.com".into(),
        password: "pass1".into(),
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let service_password = "bench-service".to_owned();
    progress("starting Radicale …");
    let radicale = {
        let users = vec![user.clone()];
        let path = dir.path().join("radicale");
        let password = service_password.clone();
        tokio::task::spawn_blocking(move || {
            Radicale::start_in(&path, port, &users, "bramble", &password)
        })
        .await??
    };
    let url = format!("http://127.0.0.1:{port}/");
    let dav = DavClient::new(&url, "bramble", &service_password, Duration::from_secs(600))?;
    progress(&format!(
        "writing {contacts} contacts to the address book …"
    ));
    let mut book = String::with_capacity(contacts * 200);
    for i in 0..contacts {
        book.push_str(&format!(
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:contact-{i}\r\nFN:Contact {i}\r\nN:{i};Contact;;;\r\nEMAIL;TYPE=INTERNET:contact{i}@example.com\r\nTEL;TYPE=WORK:+1 555 {i:07}\r\nORG:Example {}\r\nEND:VCARD\r\n",
            i % 97
        ));
    }
    // Radicale takes a whole address book in one PUT on the collection.
    dav.put(
        "/user1/contacts/",
        book,
        Kind::Card,
        Precondition::Overwrite,
    )
    .await
    .context("uploading the contacts to Radicale")?;
    // Radicale parses every item the first time a collection is listed and
    // caches the result; a server in service has that cache warm.
    progress("warming Radicale's cache …");
    dav.sync_collection("/user1/contacts/", None, Kind::Card)
        .await
        .context("listing the contacts on Radicale")?;

    let mut settings = Settings::load_from(None, &[])?.settings;
    settings.data_dir = dir.path().join("data");
    settings.admin.listen = "127.0.0.1:0".parse()?;
    settings.router.lan_listen = Some("127.0.0.1:0".parse()?);
    settings.logging.level = "warn".into();
    settings.sync = SyncSettings {
        url: Some(url),
        service_login: "bramble".into(),
        service_password,
        poll_secs: 5,
        request_timeout_secs: 600,
        ..SyncSettings::default()
    };
    let db = Database::open(&settings.database())?;
    let enrolled = pilot::enroll(&db, std::slice::from_ref(&user), 0x4000_0001)?;
    drop(db);
    let pin = enrolled
        .first()
        .map(|(_, pin)| *pin)
        .context("no user was enrolled")?;
    let listeners = Listeners::bind(&settings).await?;
    let components = Server::default_components(&settings);
    let server = Server::start_with(settings, listeners, components).await?;
    let key = TransportKey::generate(1)?;
    crate::provision::into_server(&server, vec![(pin, key.clone())]).await?;
    let lan = server.lan_addr().context("the LAN path is off")?;
    let device = Device::new(DeviceConfig::new(pin), KeyStore::new(key));
    let conn = device.connect(Path::Lan(lan)).await?;
    while !server.dispatcher().router().lan_devices().contains(&pin) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut client = SyncClient::default();
    client.patience = Duration::from_secs(1800);

    progress("slow sync …");
    let started = Instant::now();
    client.request_config(&conn).await?;
    client.slow_sync(&conn).await?;
    let slow_sync_s = started.elapsed().as_secs_f64();
    let held = client.organizer().len(OrganizerDatabase::Contacts);
    anyhow::ensure!(
        held == contacts,
        "the device holds {held} contacts after the slow sync, not {contacts}"
    );

    progress(&format!(
        "{INCREMENTAL_CHANGES} edits on the device in one changelist …"
    ));
    {
        let mut org = client.organizer();
        let records = org.records(OrganizerDatabase::Contacts);
        for (uid, record) in records.into_iter().take(INCREMENTAL_CHANGES) {
            if let Record::Contact(mut c) = record {
                c.full_name.push_str(" (edited)");
                c.note = "changed on the device".into();
                org.edit(&uid, Record::Contact(c));
            }
        }
    }
    let started = Instant::now();
    let results = client.push(&conn, OrganizerDatabase::Contacts).await?;
    let incremental_ms = started.elapsed().as_secs_f64() * 1000.0;
    let applied = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Applied { .. }))
        .count();
    anyhow::ensure!(
        applied == INCREMENTAL_CHANGES.min(contacts),
        "{applied} of {} edits were applied: {:?}",
        INCREMENTAL_CHANGES.min(contacts),
        results
            .iter()
            .find(|r| !matches!(r.outcome, Outcome::Applied { .. }))
    );
    // Radicale alone: the floor under both figures.
    let started = Instant::now();
    dav.sync_collection("/user1/contacts/", None, Kind::Card)
        .await?;
    let limit_slow_sync_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for i in 0..INCREMENTAL_CHANGES.min(contacts) {
        let href = format!("/user1/contacts/contact-{i}.vcf");
        if let Some((text, etag)) = dav.get(&href).await? {
            let text = text.replace("END:VCARD", "NOTE:again\r\nEND:VCARD");
            dav.put(&href, text, Kind::Card, Precondition::IfMatch(&etag))
                .await?;
        }
    }
    let limit_incremental_ms = started.elapsed().as_secs_f64() * 1000.0;
    let on_server = dav.list("/user1/contacts/").await?.len();
    anyhow::ensure!(
        on_server == contacts,
        "the server holds {on_server} contacts, not {contacts}"
    );
    conn.close().await;
    server.shutdown().await?;
    drop(radicale);
    Ok(SyncFigures {
        contacts,
        slow_sync_s: (slow_sync_s * 100.0).round() / 100.0,
        incremental_ms: incremental_ms.round(),
        limit_slow_sync_s: (limit_slow_sync_s * 100.0).round() / 100.0,
        limit_incremental_ms: limit_incremental_ms.round(),
    })
}
