//! The MailStore Service against a real OpenLDAP server (slapd on
//! loopback): first import, changes, renames, removals, group membership,
//! paging past the server's size limit, address lookup and the coded errors.

use std::process::Command;

use bramble::db::models::directory::{Directory, SyncRun};
use bramble::db::models::group::Group;
use bramble::db::models::user::{AccountStatus, User};
use bramble::db::Database;
use bramble::mailstore::{self, DirectorySettings, Progress, SyncReport};
use bramble_testbed::slapd::{Slapd, SUFFIX};

use crate::fixture;

const READER_DN: &str = "cn=reader,dc=example,dc=com";
const READER_PASSWORD: &str = "readerpw";
/// Everyone but the root DN gets at most 5 entries per search; paged
/// searches may go on past it (as on most production servers).
const SIZE_LIMIT: &str = "limits * size.soft=5 size.hard=5 size.prtotal=unlimited";

fn people(count: usize) -> String {
    let mut ldif = format!(
        "dn: cn=reader,{SUFFIX}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: reader\nuserPassword: {READER_PASSWORD}\n\n\
         dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n"
    );
    for i in 1..=count {
        ldif.push_str(&format!(
            "dn: uid=user{i:02},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: user{i:02}\ncn: User {i:02}\nsn: {i:02}\nmail: user{i:02}@example.com\n\n"
        ));
    }
    ldif.push_str(&format!(
        "dn: cn=sales,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: sales\nmember: uid=user01,ou=people,{SUFFIX}\nmember: uid=user02,ou=people,{SUFFIX}\n\n\
         dn: cn=ops,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: ops\nmember: uid=user03,ou=people,{SUFFIX}\n\n"
    ));
    ldif
}

fn settings(slapd: &Slapd) -> DirectorySettings {
    DirectorySettings {
        name: "corp".into(),
        url: slapd.url(),
        bind_dn: READER_DN.into(),
        bind_password: READER_PASSWORD.into(),
        base_dn: SUFFIX.into(),
        page_size: 3,
        timeout_secs: 5,
        ..DirectorySettings::default()
    }
}

fn database() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_path(&dir.path().join("bramble.db"), 2, 5_000).unwrap();
    (dir, db)
}

async fn sync(db: &Database, s: &DirectorySettings, full: bool) -> SyncReport {
    let (tx, _rx) = tokio::sync::watch::channel(Progress::default());
    mailstore::sync(db, s, full, &tx).await.unwrap()
}

fn user(db: &Database, email: &str) -> User {
    let email = email.to_owned();
    db.run_blocking(|conn| User::find_by_email(conn, &email))
        .unwrap()
        .unwrap_or_else(|| panic!("no user {email}"))
}

fn members(db: &Database, group: &str) -> Vec<String> {
    let group = group.to_owned();
    db.run_blocking(|conn| {
        let g = Group::find_by_name(conn, &group)?.unwrap();
        let mut emails = Vec::new();
        for id in Group::find_member_ids(conn, g.id)? {
            emails.push(User::find_by_id(conn, id)?.unwrap().email);
        }
        emails.sort();
        Ok(emails)
    })
    .unwrap()
}

fn user_count(db: &Database) -> i64 {
    db.run_blocking(|conn| User::search(conn, "", 0, 1).map(|(_, total)| total))
        .unwrap()
}

#[tokio::test]
async fn directory_first_import_pages_past_the_size_limit() {
    let slapd = Slapd::start(&people(12), SIZE_LIMIT).unwrap();
    // The limit is real: a plain search as the reader stops at 5 entries.
    let plain = Command::new("ldapsearch")
        .args([
            "-x",
            "-H",
            &slapd.url(),
            "-D",
            READER_DN,
            "-w",
            READER_PASSWORD,
        ])
        .args(["-b", SUFFIX, "(objectClass=inetOrgPerson)", "uid"])
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(4), "sizeLimitExceeded expected");

    let (_dir, db) = database();
    let s = settings(&slapd);
    let (tx, rx) = tokio::sync::watch::channel(Progress::default());
    let report = mailstore::sync(&db, &s, false, &tx).await.unwrap();
    assert_eq!(report.run.kind, "full", "the first sync is full");
    assert_eq!(report.run.outcome, "succeeded");
    assert_eq!(report.run.created, 14, "12 users and 2 groups");
    assert_eq!(report.run.entries_read, 14);
    assert_eq!(report.run.errors, 0);
    assert_eq!(rx.borrow().entries_read, 14);
    assert_eq!(rx.borrow().phase, mailstore::Phase::Done);
    assert_eq!(user_count(&db), 12);
    let u12 = user(&db, "user12@example.com");
    assert_eq!(u12.display_name, "User 12");
    assert_eq!(u12.mailbox_login, "user12");
    assert_eq!(u12.directory_id, Some(report.run.directory_id));
    assert!(u12.directory_guid.is_some());
    assert_eq!(
        members(&db, "sales"),
        ["user01@example.com", "user02@example.com"]
    );
    assert_eq!(members(&db, "ops"), ["user03@example.com"]);

    // Syncing again changes nothing and duplicates nothing.
    let again = sync(&db, &s, true).await;
    assert_eq!(
        (again.run.created, again.run.updated, again.run.removed),
        (0, 0, 0)
    );
    assert_eq!(user_count(&db), 12);
}

#[tokio::test]
async fn directory_changes_renames_removals_and_membership_follow() {
    let slapd = Slapd::start(&people(4), "").unwrap();
    let (_dir, db) = database();
    let s = settings(&slapd);
    let first = sync(&db, &s, false).await;
    assert_eq!(first.run.created, 6);
    let alice_before = user(&db, "user01@example.com");
    let bob_before = user(&db, "user02@example.com");

    // Modify: new mail and cn.
    slapd
        .modify(&format!(
            "dn: uid=user01,ou=people,{SUFFIX}\nchangetype: modify\nreplace: mail\nmail: alice@example.com\n-\nreplace: cn\ncn: Alice Example\n"
        ))
        .unwrap();
    // Rename and move (modrdn with a new superior): same entry, new DN.
    slapd
        .modify(&format!(
            "dn: ou=staff,{SUFFIX}\nchangetype: add\nobjectClass: organizationalUnit\nou: staff\n\n\
             dn: uid=user02,ou=people,{SUFFIX}\nchangetype: modrdn\nnewrdn: uid=bob\ndeleteoldrdn: 1\nnewsuperior: ou=staff,{SUFFIX}\n\n\
             dn: cn=sales,ou=groups,{SUFFIX}\nchangetype: modify\nreplace: member\nmember: uid=user01,ou=people,{SUFFIX}\nmember: uid=bob,ou=staff,{SUFFIX}\n"
        ))
        .unwrap();
    // Delete one user; move ops from user03 to user04.
    slapd
        .modify(&format!(
            "dn: uid=user03,ou=people,{SUFFIX}\nchangetype: delete\n\n\
             dn: cn=ops,ou=groups,{SUFFIX}\nchangetype: modify\nreplace: member\nmember: uid=user04,ou=people,{SUFFIX}\n"
        ))
        .unwrap();

    let second = sync(&db, &s, false).await;
    assert_eq!(second.run.kind, "incremental");
    assert_eq!(second.run.created, 0, "{second:?}");
    // Membership follows already on the incremental read: both groups
    // changed; bob is found under his new DN.
    assert_eq!(
        members(&db, "sales"),
        ["alice@example.com", "user02@example.com"]
    );
    assert_eq!(members(&db, "ops"), ["user04@example.com"]);
    assert_eq!(
        second.run.removed, 0,
        "an incremental read cannot see removals: {second:?}"
    );
    assert_eq!(
        user(&db, "user03@example.com").account_status,
        AccountStatus::Active
    );
    // The scheduled (or on-demand) full read does.
    let removal = sync(&db, &s, true).await;
    assert_eq!(removal.run.kind, "full");
    assert_eq!(removal.run.removed, 1, "{removal:?}");

    let alice = user(&db, "alice@example.com");
    assert_eq!(
        alice.id, alice_before.id,
        "a modified entry updates the same user"
    );
    assert_eq!(alice.display_name, "Alice Example");

    let bob = user(&db, "user02@example.com");
    assert_eq!(bob.id, bob_before.id, "a renamed entry is the same user");
    assert_eq!(bob.mailbox_login, "bob");
    assert_eq!(user_count(&db), 4, "nothing duplicated, nothing deleted");

    let gone = user(&db, "user03@example.com");
    assert_eq!(gone.account_status, AccountStatus::RemovedInDirectory);

    assert_eq!(
        members(&db, "sales"),
        ["alice@example.com", "user02@example.com"]
    );
    assert_eq!(members(&db, "ops"), ["user04@example.com"]);

    // A full sync on demand finds everything already in place.
    let full = sync(&db, &s, true).await;
    assert_eq!(full.run.kind, "full");
    assert_eq!(
        (full.run.created, full.run.updated, full.run.removed),
        (0, 0, 0),
        "{full:?}"
    );
    let runs = db
        .run_blocking(|conn| {
            let d = Directory::find_by_name(conn, "corp")?.unwrap();
            assert!(d.high_water_mark.is_some());
            assert!(d.last_full_sync_at.is_some());
            SyncRun::find_recent(conn, d.id, 10)
        })
        .unwrap();
    assert_eq!(runs.len(), 4);
    assert!(runs.iter().all(|r| r.finished_at.is_some()));
}

#[tokio::test]
async fn directory_incremental_reads_only_changed_entries() {
    // A group listing an entry that does not exist yet (no referential
    // integrity on the server), loaded last.
    let ldif = format!(
        "{}dn: cn=newcomers,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: newcomers\nmember: uid=user01,ou=people,{SUFFIX}\nmember: uid=newcomer,ou=people,{SUFFIX}\n\n",
        people(6)
    );
    let slapd = Slapd::start(&ldif, SIZE_LIMIT).unwrap();
    let (_dir, db) = database();
    let s = settings(&slapd);
    let first = sync(&db, &s, false).await;
    assert_eq!(first.run.created, 9, "6 users, 3 groups: {first:?}");
    let mark = db
        .run_blocking(|conn| Directory::find_by_name(conn, "corp"))
        .unwrap()
        .unwrap()
        .high_water_mark
        .unwrap();
    assert!(mark.starts_with("entryCSN="), "{mark}");

    slapd
        .modify(&format!(
            "dn: uid=user02,ou=people,{SUFFIX}\nchangetype: modify\nreplace: cn\ncn: Bob Example\n\n\
             dn: uid=newcomer,ou=people,{SUFFIX}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: newcomer\ncn: New Comer\nsn: Comer\nmail: newcomer@example.com\n"
        ))
        .unwrap();
    let second = sync(&db, &s, false).await;
    assert_eq!(second.run.kind, "incremental");
    // user02, the newcomer, and the two unchanged groups naming one of
    // them (newcomers, sales): nothing else of the 9 entries.
    assert_eq!(second.run.entries_read, 4, "{second:?}");
    assert_eq!(
        (second.run.created, second.run.updated, second.run.removed),
        (1, 2, 0),
        "{second:?}"
    );
    assert_eq!(user(&db, "user02@example.com").display_name, "Bob Example");
    assert_eq!(
        members(&db, "newcomers"),
        ["newcomer@example.com", "user01@example.com"]
    );
    assert_eq!(
        members(&db, "sales"),
        ["user01@example.com", "user02@example.com"]
    );

    // Nothing changed since: the next incremental read finds only the
    // newest entry again (the mark is inclusive: others may share a CSN's
    // time) and the group naming it, and writes nothing.
    let third = sync(&db, &s, false).await;
    assert_eq!(third.run.entries_read, 2, "{third:?}");
    assert_eq!(
        (third.run.created, third.run.updated, third.run.removed),
        (0, 0, 0)
    );
    // A full read agrees with what the incremental ones wrote.
    let full = sync(&db, &s, true).await;
    assert_eq!(
        (full.run.created, full.run.updated, full.run.removed),
        (0, 0, 0),
        "{full:?}"
    );
}

#[tokio::test]
async fn directory_errors_name_the_setting_and_change_nothing() {
    let slapd = Slapd::start(&people(3), "").unwrap();
    let (_dir, db) = database();
    let (tx, _rx) = tokio::sync::watch::channel(Progress::default());

    let mut wrong_password = settings(&slapd);
    wrong_password.bind_password = "nope".into();
    let err = mailstore::sync(&db, &wrong_password, false, &tx)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "DIRECTORY_BIND_FAILED");
    assert!(
        err.to_string().contains("bind_password of directory corp"),
        "{err}"
    );

    let mut unreachable = settings(&slapd);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    unreachable.url = format!("ldap://{}", closed.local_addr().unwrap());
    drop(closed);
    let err = mailstore::sync(&db, &unreachable, false, &tx)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "DIRECTORY_UNREACHABLE");
    assert!(err.to_string().contains("check url"), "{err}");

    let mut bad_filter = settings(&slapd);
    bad_filter.user_filter = Some("(&(objectClass=inetOrgPerson)(uid=".into());
    let err = mailstore::sync(&db, &bad_filter, false, &tx)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "DIRECTORY_BAD_FILTER");
    assert!(err.to_string().contains("user_filter"), "{err}");

    let mut bad_base = settings(&slapd);
    bad_base.base_dn = format!("ou=nowhere,{SUFFIX}");
    let err = mailstore::sync(&db, &bad_base, false, &tx)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "DIRECTORY_BAD_BASE_DN");
    assert!(err.to_string().contains("check base_dn"), "{err}");

    let mut bad_url = settings(&slapd);
    bad_url.url = "http://127.0.0.1:1".into();
    let err = mailstore::sync(&db, &bad_url, false, &tx)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "DIRECTORY_BAD_URL");
    assert!(err.to_string().contains("check url"), "{err}");

    // Failed runs are recorded; nothing else changed.
    assert_eq!(user_count(&db), 0);
    let runs = db
        .run_blocking(|conn| {
            let d = Directory::find_by_name(conn, "corp")?.unwrap();
            assert!(d.high_water_mark.is_none());
            SyncRun::find_recent(conn, d.id, 10)
        })
        .unwrap();
    assert_eq!(runs.len(), 5);
    assert!(runs.iter().all(|r| r.outcome == "failed" && r.errors == 1));
    assert!(runs[2].message.starts_with("DIRECTORY_BAD_FILTER"));
}

#[tokio::test]
async fn directory_size_limit_on_paged_results_is_explained() {
    // A server that caps even paged searches at 5 entries.
    let slapd = Slapd::start(
        &people(12),
        "limits * size.soft=5 size.hard=5 size.prtotal=5",
    )
    .unwrap();
    let (_dir, db) = database();
    let (tx, _rx) = tokio::sync::watch::channel(Progress::default());
    let err = mailstore::sync(&db, &settings(&slapd), false, &tx)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "DIRECTORY_SIZE_LIMIT", "{err}");
    assert!(
        err.to_string().contains("bind_dn of directory corp"),
        "{err}"
    );
    assert_eq!(user_count(&db), 0, "a partial read writes nothing");
}

#[tokio::test]
async fn directory_more_entries_than_max_entries_stops_the_read() {
    let slapd = Slapd::start(&people(12), "").unwrap();
    let (_dir, db) = database();
    let mut s = settings(&slapd);
    s.max_entries = 5;
    let (tx, _rx) = tokio::sync::watch::channel(Progress::default());
    let err = mailstore::sync(&db, &s, false, &tx).await.unwrap_err();
    assert_eq!(err.code(), "DIRECTORY_TOO_MANY_ENTRIES", "{err}");
    assert!(
        err.to_string()
            .contains("more than 5 entries matching user_filter"),
        "{err}"
    );
    assert_eq!(user_count(&db), 0, "a stopped read writes nothing");
    s.max_entries = 12;
    sync(&db, &s, false).await;
    assert_eq!(user_count(&db), 12);
}

#[tokio::test]
async fn directory_lookup_returns_at_most_twenty() {
    let slapd = Slapd::start(&people(25), "").unwrap();
    let s = settings(&slapd);
    let all = mailstore::lookup(&s, "user").await.unwrap();
    assert_eq!(all.len(), mailstore::LOOKUP_LIMIT);
    let one = mailstore::lookup(&s, "User 07").await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].email, "user07@example.com");
    let by_mail = mailstore::lookup(&s, "user13@example").await.unwrap();
    assert_eq!(by_mail[0].display_name, "User 13");
    assert!(
        mailstore::lookup(&s, "*)(uid=*").await.unwrap().is_empty(),
        "the query is escaped"
    );
}

#[test]
fn directory_sync_command_prints_progress_and_figures() {
    let slapd = Slapd::start(&people(3), SIZE_LIMIT).unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("bramble.toml");
    std::fs::write(
        &config,
        format!(
            "[[directories]]\nname = \"corp\"\nurl = \"{}\"\nbind_dn = \"{READER_DN}\"\nbind_password = \"{READER_PASSWORD}\"\nbase_dn = \"{SUFFIX}\"\npage_size = 2\n",
            slapd.url()
        ),
    )
    .unwrap();
    let out = fixture::bramble(
        data.path(),
        &["--config", config.to_str().unwrap(), "directory", "sync"],
    );
    let text = fixture::text(&out);
    assert!(out.status.success(), "{text}");
    // Progress lines name the phase; a quick run may skip straight past
    // "reading users" between two looks, but always shows where it ended.
    assert!(text.contains("directory: done, 5 entries read"), "{text}");
    assert!(
        text.contains("full sync succeeded") && text.contains("created 5"),
        "{text}"
    );

    let out = fixture::bramble(
        data.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "directory",
            "sync",
            "--full",
        ],
    );
    let text = fixture::text(&out);
    assert!(
        text.contains("full sync succeeded") && text.contains("created 0"),
        "{text}"
    );

    std::fs::write(
        &config,
        format!(
            "[[directories]]\nname = \"corp\"\nurl = \"{}\"\nbind_dn = \"{READER_DN}\"\nbind_password = \"wrong\"\nbase_dn = \"{SUFFIX}\"\n",
            slapd.url()
        ),
    )
    .unwrap();
    let out = fixture::bramble(
        data.path(),
        &["--config", config.to_str().unwrap(), "directory", "sync"],
    );
    let text = fixture::text(&out);
    assert!(!out.status.success());
    assert!(text.contains("error[DIRECTORY_BIND_FAILED]"), "{text}");
    assert!(text.contains("bind_password of directory corp"), "{text}");

    let out = fixture::bramble(
        data.path(),
        &["--config", config.to_str().unwrap(), "directory", "runs"],
    );
    let text = fixture::text(&out);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains("failed") && lines[0].contains("DIRECTORY_BIND_FAILED"),
        "{text}"
    );
    assert!(
        lines[2].contains("full succeeded") && lines[2].contains("created 5"),
        "{text}"
    );
}

#[tokio::test]
async fn directory_mailstore_component_syncs_on_schedule_and_beats() {
    use bramble::controller::component::{Component, ComponentContext, ComponentId, Heartbeat};
    use bramble::controller::StatusBoard;

    let slapd = Slapd::start(&people(3), "").unwrap();
    let (_dir, db) = database();
    let mut s = settings(&slapd);
    s.sync_interval_secs = 1;
    let (heartbeat, mut beats) =
        Heartbeat::channel(ComponentId::MailStoreService, StatusBoard::default());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ctx = ComponentContext {
        db: db.clone(),
        heartbeat,
        heartbeat_interval: std::time::Duration::from_secs(600),
        shutdown: shutdown.clone(),
        dispatcher: None,
    };
    let store = mailstore::MailStore::new(vec![s]);
    let progress = store.progress();
    let task = tokio::spawn(store.run(ctx));

    // A beat at start, and another after the first run: the users are there.
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        beats.changed().await.unwrap();
        while user_count(&db) < 3 {
            beats.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    assert_eq!(user_count(&db), 3);
    assert_eq!(progress.borrow().phase, mailstore::Phase::Done);

    // The next run comes on the interval and sees a new entry.
    slapd
        .modify(&format!(
            "dn: uid=late,ou=people,{SUFFIX}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: late\ncn: Late Comer\nsn: Comer\nmail: late@example.com\n"
        ))
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while user_count(&db) < 4 {
        assert!(std::time::Instant::now() < deadline, "no scheduled sync");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(user(&db, "late@example.com").display_name, "Late Comer");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn directory_over_ldaps_and_starttls() {
    let slapd = Slapd::start_tls(&people(2), "").unwrap();
    let (_dir, db) = database();

    let mut ldaps = settings(&slapd);
    ldaps.url = slapd.ldaps_url().unwrap();
    // Without the private CA the server's certificate is refused.
    let (tx, _rx) = tokio::sync::watch::channel(Progress::default());
    let err = mailstore::sync(&db, &ldaps, false, &tx).await.unwrap_err();
    assert_eq!(err.code(), "DIRECTORY_TLS_FAILED", "{err}");
    assert!(err.to_string().contains("tls_ca_file"), "{err}");

    ldaps.tls_ca_file = Some(slapd.certificate());
    let report = sync(&db, &ldaps, false).await;
    assert_eq!(report.run.created, 4, "{report:?}");

    let mut starttls = settings(&slapd);
    starttls.starttls = true;
    starttls.tls_ca_file = Some(slapd.certificate());
    let report = sync(&db, &starttls, true).await;
    assert_eq!(report.run.outcome, "succeeded");
    assert_eq!(user_count(&db), 2);
}
