//! `bramble bench mail`: the e-mail path to the smartphone end to end.
//!
//! Starts a testbed (real Dovecot and Postfix) with U users, a server in
//! this process whose Messaging Agent watches every mailbox (IMAP IDLE),
//! and U reference devices on the LAN path. Once every mailbox is watched,
//! messages are delivered over LMTP at R per second for S seconds, spread
//! over the users; each device records when each message arrives (the
//! moment it sends its delivery confirmation).
//!
//! Figures: `delivered`, latency from the LMTP server accepting a message
//! to the device confirming it (`p50_ms`, `p99_ms`), `lost` (delivered to a
//! mailbox but never shown on the device) and `duplicates` (shown twice),
//! and `achieved_rate` (what the LMTP side managed to deliver per second).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bramble_device::{Connection, Device, DeviceConfig, KeyStore, Path};
use bramble_proto::cmime::Cmime;
use bramble_proto::envelope::TransportKey;
use serde::Serialize;

use crate::lmtp::Lmtp;
use crate::{pilot, Testbed, TestbedOptions};
use bramble::config::Settings;
use bramble::db::models::mailbox::{MailboxState, WatchState};
use bramble::db::Database;
use bramble::server::{Listeners, Server};

#[derive(Debug, Clone)]
pub struct MailOptions {
    pub users: usize,
    pub rate: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MailFigures {
    pub users: usize,
    pub rate: f64,
    pub delivered: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub lost: usize,
    pub duplicates: usize,
    pub achieved_rate: f64,
    pub watch_s: f64,
    /// From LMTP acceptance to the Messaging Agent queueing the message.
    pub agent_p50_ms: f64,
    pub agent_p99_ms: f64,
}

/// LMTP connections delivering in parallel.
const LMTP_CONNECTIONS: usize = 8;

type Arrivals = Arc<Mutex<HashMap<u64, Vec<Instant>>>>;

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub async fn run(options: MailOptions) -> anyhow::Result<MailFigures> {
    let users = options.users.max(1);
    if let Err(e) = rlimit::increase_nofile_limit(u64::from(u32::MAX)) {
        eprintln!("cannot raise the open-file limit: {e}");
    }
    let dir = tempfile::tempdir()?;
    let tb_dir = dir.path().join("testbed");
    eprintln!("starting the testbed with {users} users …");
    let testbed = tokio::task::spawn_blocking(move || {
        let mut o = TestbedOptions::new(tb_dir);
        o.users = users;
        Testbed::start(o)
    })
    .await??;
    let info = testbed.info().clone();

    let mut settings = Settings::load_from(None, &[])?.settings;
    settings.data_dir = dir.path().join("data");
    settings.admin.listen = "127.0.0.1:0".parse()?;
    settings.router.lan_listen = Some("127.0.0.1:0".parse()?);
    settings.logging.level = "warn".into();
    settings.mail = pilot::mail_settings(&info);
    // Every user on one server: agents of at most 500 users each.
    settings.messaging_agents = users.div_ceil(500);
    let db = Database::open(&settings.database())?;
    let enrolled = pilot::enroll(&db, &info.users, 0x3000_0001)?;
    drop(db);
    let listeners = Listeners::bind(&settings).await?;
    let components = Server::default_components(&settings);
    let server = Server::start_with(settings, listeners, components).await?;
    let keys: Vec<TransportKey> = enrolled
        .iter()
        .map(|_| TransportKey::generate(1))
        .collect::<Result<_, _>>()?;
    crate::provision::into_server(
        &server,
        enrolled
            .iter()
            .zip(&keys)
            .map(|((_, pin), key)| (*pin, key.clone()))
            .collect(),
    )
    .await?;

    // Devices on the LAN path, each recording arrivals by message number.
    let lan = server
        .lan_addr()
        .ok_or_else(|| anyhow::anyhow!("the server has no LAN listener"))?;
    let arrivals: Arrivals = Arc::new(Mutex::new(HashMap::new()));
    let mut connections: Vec<Connection> = Vec::with_capacity(users);
    for ((_, pin), key) in enrolled.iter().zip(&keys) {
        let device = Device::new(DeviceConfig::new(*pin), KeyStore::new(key.clone()));
        connections.push(device.connect(Path::Lan(lan)).await?);
    }
    let mut readers = Vec::new();
    for conn in connections {
        let arrivals = arrivals.clone();
        readers.push(tokio::spawn(async move {
            while let Some(m) = conn.recv().await {
                if let Ok(Cmime::Mail(item)) = Cmime::from_bytes(&m.plaintext) {
                    if let Some(n) = item
                        .subject
                        .strip_prefix("bench ")
                        .and_then(|n| n.parse::<u64>().ok())
                    {
                        if let Ok(mut a) = arrivals.lock() {
                            a.entry(n).or_default().push(m.received_at);
                        }
                    }
                }
            }
        }));
    }

    // Every mailbox watched before the first message.
    let watch_started = Instant::now();
    let db = server.state().db.clone();
    loop {
        let watching = db
            .run(|conn| MailboxState::find_in_state(conn, WatchState::Watching))
            .await?
            .len();
        if watching >= users {
            break;
        }
        if watch_started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("only {watching} of {users} mailboxes were watched after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let watch_s = watch_started.elapsed().as_secs_f64();
    eprintln!("{users} mailboxes watched in {watch_s:.1} s; delivering …");

    // Deliver at the rate over LMTP, recording when each was accepted.
    let total = (options.rate * options.seconds).round().max(1.0) as u64;
    let accepted: Arc<Mutex<HashMap<u64, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let accepted_at: Arc<Mutex<HashMap<u64, time::OffsetDateTime>>> =
        Arc::new(Mutex::new(HashMap::new()));
    let started = Instant::now();
    let mut senders = Vec::new();
    for c in 0..LMTP_CONNECTIONS as u64 {
        let accepted = accepted.clone();
        let accepted_at = accepted_at.clone();
        let addresses: Vec<String> = info.users.iter().map(|u| u.address.clone()).collect();
        let lmtp_addr = info.lmtp_addr();
        let rate = options.rate;
        senders.push(tokio::spawn(async move {
            let mut lmtp = Lmtp::connect(lmtp_addr).await?;
            let mut n = c;
            while n < total {
                let due = started + Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let to = &addresses[(n as usize) % addresses.len()];
                let raw = format!(
                    "From: load@example.org\r\nTo: {to}\r\nSubject: bench {n}\r\nMessage-ID: <bench-{n}@example.org>\r\n\r\nMessage {n} of the mail benchmark.\r\n"
                );
                lmtp.deliver("load@example.org", to, raw.as_bytes()).await?;
                if let Ok(mut a) = accepted.lock() {
                    a.insert(n, Instant::now());
                }
                if let Ok(mut a) = accepted_at.lock() {
                    a.insert(n, time::OffsetDateTime::now_utc());
                }
                n += LMTP_CONNECTIONS as u64;
            }
            anyhow::Ok(())
        }));
    }
    for s in senders {
        s.await??;
    }
    let sent_for = started.elapsed().as_secs_f64();
    let sent = accepted.lock().map(|a| a.len()).unwrap_or(0);

    // Wait for the stragglers (bounded), then count.
    let drain = Instant::now();
    loop {
        let shown = arrivals.lock().map(|a| a.len()).unwrap_or(0);
        if shown >= sent || drain.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let accepted = accepted.lock().map(|a| a.clone()).unwrap_or_default();
    let arrivals = arrivals.lock().map(|a| a.clone()).unwrap_or_default();
    let mut latencies: Vec<f64> = Vec::with_capacity(arrivals.len());
    let mut duplicates = 0;
    for (n, times) in &arrivals {
        duplicates += times.len().saturating_sub(1);
        if let (Some(at), Some(first)) = (accepted.get(n), times.iter().min()) {
            latencies.push(first.saturating_duration_since(*at).as_secs_f64() * 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let delivered = arrivals.len();
    // Where the time goes: the Messaging Agent's record of each message.
    let recorded: Vec<(String, time::PrimitiveDateTime)> = db
        .run(|conn| {
            use bramble::db::schema::messages;
            use diesel::prelude::*;
            Ok(messages::table
                .select((messages::subject, messages::created_at))
                .load(conn)?)
        })
        .await?;
    let accepted_at = accepted_at.lock().map(|a| a.clone()).unwrap_or_default();
    let mut agent: Vec<f64> = recorded
        .iter()
        .filter_map(|(subject, at)| {
            let n = subject.strip_prefix("bench ")?.parse::<u64>().ok()?;
            let lmtp = accepted_at.get(&n)?;
            Some((at.assume_utc() - *lmtp).as_seconds_f64() * 1000.0)
        })
        .collect();
    agent.sort_by(f64::total_cmp);
    let figures = MailFigures {
        users,
        rate: options.rate,
        delivered,
        p50_ms: round(super::quantile(&latencies, 0.5)),
        p99_ms: round(super::quantile(&latencies, 0.99)),
        lost: sent.saturating_sub(delivered),
        duplicates,
        achieved_rate: round(sent as f64 / sent_for),
        watch_s: round(watch_s),
        agent_p50_ms: round(super::quantile(&agent, 0.5)),
        agent_p99_ms: round(super::quantile(&agent, 0.99)),
    };
    for r in readers {
        r.abort();
    }
    server.shutdown().await.ok();
    drop(testbed);
    Ok(figures)
}
