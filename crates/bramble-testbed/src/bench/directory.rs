//! `bramble bench directory --entries N`: a slapd on loopback loaded with N
//! users, synced into an empty Configuration Database; then an incremental
//! sync after 10 changes. Figures for sizing the MailStore Service.

use std::time::Instant;

use serde::Serialize;
use tokio::sync::watch;

use crate::slapd::{Slapd, SUFFIX};
use bramble::db::Database;
use bramble::mailstore::{DirectorySettings, Progress};

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct DirectoryBenchFigures {
    pub entries: usize,
    /// Full sync of every entry into an empty database, in seconds.
    pub full_s: f64,
    /// Incremental sync after 10 changes, in milliseconds.
    pub incremental_ms: f64,
    /// Of which reading the directory (connect, bind, searches)…
    pub incremental_read_ms: f64,
    /// …and writing the Configuration Database.
    pub incremental_write_ms: f64,
    /// Entries the incremental sync read.
    pub incremental_entries_read: i64,
    /// Users created by the full sync.
    pub created: i64,
    /// Users updated by the incremental sync.
    pub updated: i64,
    /// Loading the directory itself (slapadd), in seconds.
    pub load_s: f64,
    pub entries_per_s: f64,
}

const READER_DN: &str = "cn=reader,dc=example,dc=com";
const READER_PASSWORD: &str = "readerpw";

/// Runs the benchmark; `say` gets progress lines.
pub async fn run(entries: usize, say: impl Fn(&str)) -> anyhow::Result<DirectoryBenchFigures> {
    let mut ldif = format!(
        "dn: cn=reader,{SUFFIX}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: reader\nuserPassword: {READER_PASSWORD}\n\n\
         dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n"
    );
    for i in 0..entries {
        ldif.push_str(&format!(
            "dn: uid=u{i},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: u{i}\ncn: User {i}\nsn: {i}\nmail: u{i}@example.com\n\n"
        ));
    }
    say(&format!("loading {entries} entries into slapd"));
    let started = Instant::now();
    // The server's usual size limit applies to the reader; paging goes past it.
    let slapd = tokio::task::spawn_blocking(move || {
        Slapd::start(
            &ldif,
            "limits * size.soft=500 size.hard=500 size.prtotal=unlimited",
        )
    })
    .await??;
    let load_secs = started.elapsed().as_secs_f64();

    let folder = tempfile::tempdir()?;
    let db = Database::open_path(&folder.path().join("bramble.db"), 4, 30_000)?;
    let settings = DirectorySettings {
        name: "bench".into(),
        url: slapd.url(),
        bind_dn: READER_DN.into(),
        bind_password: READER_PASSWORD.into(),
        base_dn: SUFFIX.into(),
        page_size: 500,
        timeout_secs: 600,
        // The bench reads however many entries it was asked to load.
        max_entries: entries.saturating_add(1_000),
        ..DirectorySettings::default()
    };
    let (tx, mut rx) = watch::channel(Progress::default());
    let reporter = async {
        let mut shown = 0u64;
        while rx.changed().await.is_ok() {
            let now = *rx.borrow_and_update();
            if now.entries_read >= shown + 10_000 {
                shown = now.entries_read;
                say(&format!(
                    "{:?}: {} entries read",
                    now.phase, now.entries_read
                ));
            }
        }
    };
    say("full sync");
    let started = Instant::now();
    let full = {
        let sync = bramble::mailstore::sync(&db, &settings, true, &tx);
        tokio::pin!(sync);
        tokio::pin!(reporter);
        tokio::select! {
            result = &mut sync => result?,
            _ = &mut reporter => sync.await?,
        }
    };
    let full_sync_secs = started.elapsed().as_secs_f64();

    say("10 changes, then an incremental sync");
    let changes: Vec<String> = (0..10.min(entries))
        .map(|i| {
            format!("dn: uid=u{i},ou=people,{SUFFIX}\nchangetype: modify\nreplace: cn\ncn: Renamed User {i}\n")
        })
        .collect();
    slapd.modify(&changes.join("\n"))?;
    let started = Instant::now();
    let incremental = bramble::mailstore::sync(&db, &settings, false, &tx).await?;
    let incremental_sync_secs = started.elapsed().as_secs_f64();

    Ok(DirectoryBenchFigures {
        entries,
        full_s: round(full_sync_secs, 3),
        incremental_ms: round(incremental_sync_secs * 1000.0, 1),
        incremental_read_ms: round(incremental.timings.read_ms, 1),
        incremental_write_ms: round(incremental.timings.write_ms, 1),
        incremental_entries_read: incremental.run.entries_read,
        created: full.run.created,
        updated: incremental.run.updated,
        load_s: round(load_secs, 3),
        entries_per_s: round(entries as f64 / full_sync_secs.max(f64::EPSILON), 1),
    })
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}
