//! `bramble bench activation`: N devices activated at once, end to end.
//!
//! Starts a testbed (real Dovecot and Postfix) with N users, a relay that
//! e-mails activation requests through the testbed's Postfix, and a server
//! in this process linked to the relay. Every user gets an activation
//! password; once every mailbox is watched, N reference devices activate
//! concurrently over the relay: request e-mail, key exchange, signed IT
//! policy, service books.
//!
//! Latency runs from the moment a device sends its request (after it has
//! derived its key material, which a real device does on its own CPU)
//! through the key exchange, the IT policy, the service books, the
//! synchronization settings and the slow sync of every enabled database
//! (against the testbed's CalDAV/CardDAV server, empty organizers) to the
//! device finishing; `completed` counts users the server then records as
//! `until` (Completed). `completed` counts devices that got there; `failed`
//! those that got an error or ran out of time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bramble_device::organizer::{Organizer, SyncClient};
use bramble_device::{Device, DeviceConfig, KeyStore};
use bramble_relay::{Relay, RelayConfig, SrpAccount, TlsIdentity};
use diesel::prelude::*;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::{pilot, Testbed, TestbedOptions};
use bramble::clock::Clock;
use bramble::config::Settings;
use bramble::db::models::mailbox::{MailboxState, WatchState};
use bramble::db::models::srp_connection::{SrpConnection, SrpKey, SrpSettings};
use bramble::db::models::user::{ActivationStatus, NewUser};
use bramble::db::schema::users;
use bramble::db::{Database, DbError};
use bramble::server::{Listeners, Server};

const SRP_ID: &str = "S80009999";
const SRP_KEY: &str = "bench-activation-srp-key-0123456789";
/// The status a finished activation reaches in this build.
pub const FINAL_STATUS: ActivationStatus = ActivationStatus::Completed;

#[derive(Debug, Clone, Serialize)]
pub struct ActivationFigures {
    pub devices: usize,
    pub completed: usize,
    pub failed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The activation step latency is measured to.
    pub until: &'static str,
    pub max_ms: f64,
    pub watch_s: f64,
    /// Medians of where the time goes, from the same start: the key
    /// exchange finished (the device verified the server), and the service
    /// books arrived (after the signed IT policy was confirmed).
    pub key_p50_ms: f64,
    pub books_p50_ms: f64,
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub async fn run(
    devices: usize,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<ActivationFigures> {
    let n = devices.max(1);
    if let Err(e) = rlimit::increase_nofile_limit(u64::from(u32::MAX)) {
        progress(&format!("cannot raise the open-file limit: {e}"));
    }
    let dir = tempfile::tempdir()?;
    let tb_dir = dir.path().join("testbed");
    progress(&format!("starting the testbed with {n} users"));
    let testbed = tokio::task::spawn_blocking(move || {
        let mut o = TestbedOptions::new(tb_dir);
        o.users = n;
        Testbed::start(o)
    })
    .await??;
    let info = testbed.info().clone();
    let relay = Relay::start_with(
        super::relay_for_bench(
            RelayConfig {
                srp_accounts: vec![SrpAccount::new(SRP_ID, SRP_KEY.as_bytes().to_vec())],
                tls: TlsIdentity {
                    cert: Some(dir.path().join("relay.crt")),
                    key: Some(dir.path().join("relay.key")),
                    generate_if_missing: true,
                },
                smtp: Some(info.smtp_addr().to_string()),
                store_per_device: 1000,
                ..RelayConfig::default()
            },
            n,
            n,
        ),
        TcpListener::bind("127.0.0.1:0").await?,
        TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;

    let mut settings = Settings::load_from(None, &[])?.settings;
    settings.data_dir = dir.path().join("data");
    settings.admin.listen = "127.0.0.1:0".parse()?;
    settings.router.lan_listen = None;
    settings.router.relay_certificate = Some(dir.path().join("relay.crt"));
    settings.logging.level = "warn".into();
    settings.mail = pilot::mail_settings(&info);
    settings.mail.refresh_users_secs = 1;
    settings.sync = pilot::sync_settings(&info);
    settings.messaging_agents = n.div_ceil(500);
    let db = Database::open(&settings.database())?;
    let srp = SrpSettings {
        srp_id: SRP_ID.into(),
        srp_key: SrpKey::new(SRP_KEY),
        relay_host: "127.0.0.1".into(),
        relay_port: i32::from(relay.server_addr().port()),
        cal_licences: i32::try_from(n).unwrap_or(i32::MAX),
    };
    db.run_blocking(|conn| SrpConnection::save(conn, db.sealer(), &srp))?;
    progress(&format!("setting {n} activation passwords"));
    let passwords: Vec<String> = (0..n).map(|i| format!("bench-{i:05}")).collect();
    let sealer = db.shared_sealer();
    let clock = Clock::new();
    for (user, password) in info.users.iter().zip(&passwords) {
        let user = user.clone();
        let password = password.clone();
        db.run_blocking(|conn| {
            NewUser {
                display_name: user.login.clone(),
                email: user.address.clone(),
                mailbox_login: user.login.clone(),
            }
            .save(conn)?;
            bramble::policy::activation::set(conn, &sealer, &clock, &user.address, &password, None)
                .map_err(|e| DbError::Invalid(e.to_string()))?;
            Ok(())
        })?;
    }
    drop(db);
    let listeners = Listeners::bind(&settings).await?;
    let components = Server::default_components(&settings);
    let server = Server::start_with(settings, listeners, components).await?;
    let db = server.state().db.clone();

    let watch_started = Instant::now();
    loop {
        let watching = db
            .run(|conn| MailboxState::find_in_state(conn, WatchState::Watching))
            .await?
            .len();
        if watching >= n && server.dispatcher().router().is_link_up() {
            break;
        }
        if watch_started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("only {watching} of {n} mailboxes were watched after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let watch_s = watch_started.elapsed().as_secs_f64();
    progress(&format!(
        "{n} mailboxes watched in {watch_s:.1} s; activating {n} devices at once"
    ));

    // Every device derives its request first (a real device does this on
    // its own CPU), then all send at once.
    progress(&format!("{n} devices prepare their requests"));
    let relay_addr = relay.device_addr();
    let mut prepared = Vec::with_capacity(n);
    for (i, (user, password)) in info.users.iter().zip(&passwords).enumerate() {
        let pin = bramble_proto::Pin(0x5000_0000 + i as u32);
        let device = Device::new(DeviceConfig::new(pin), KeyStore::default());
        let request = device
            .prepare_activation(relay_addr, &user.address, password)
            .await?;
        prepared.push((device, request));
    }
    progress(&format!("activating {n} devices at once"));
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; n]));
    let limit = Duration::from_secs(120);
    let mut tasks = Vec::with_capacity(n);
    for (i, (device, request)) in prepared.into_iter().enumerate() {
        let sent_at = sent_at.clone();
        tasks.push(tokio::spawn(async move {
            let conn = device
                .activate_prepared(request, limit, |step| {
                    if step == bramble_device::activation::SENDING {
                        if let Ok(mut s) = sent_at.lock() {
                            s[i] = Some(Instant::now());
                        }
                    }
                })
                .await?;
            let verified = Instant::now();
            // The device shows "Services Received" when the books arrive,
            // then asks for the synchronization settings and slow-syncs
            // every enabled database (seed steps 13–15).
            tokio::time::timeout(limit, async {
                while let Some(m) = conn.recv().await {
                    if m.content_type == bramble_proto::ContentType::ServiceBook {
                        return Some(());
                    }
                }
                None
            })
            .await
            .ok()
            .flatten()
            .ok_or_else(|| bramble_device::DeviceError::activation_timeout(limit))?;
            let books = Instant::now();
            let client = SyncClient::new(Organizer::new());
            let synced = async {
                client.request_config(&conn).await?;
                client.slow_sync(&conn).await
            }
            .await;
            if let Err(e) = synced {
                return Err(bramble_device::DeviceError::Unexpected(format!(
                    "synchronization: {e}"
                )));
            }
            let done = Instant::now();
            Ok::<_, bramble_device::DeviceError>((conn, [verified, books, done]))
        }));
    }

    let mut connections = Vec::new();
    let mut done_at: Vec<Option<Instant>> = vec![None; n];
    let mut phases: Vec<Option<[Instant; 3]>> = vec![None; n];
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(Ok((conn, at))) => {
                done_at[i] = Some(at[2]);
                phases[i] = Some(at);
                connections.push(conn);
            }
            Ok(Err(e)) => progress(&format!("an activation failed: {e}")),
            Err(e) => progress(&format!("an activation task failed: {e}")),
        }
    }
    // Every user the server says reached the last step.
    let final_text = FINAL_STATUS.as_str();
    let emails: Vec<String> = info.users.iter().map(|u| u.address.clone()).collect();
    let mut finished: Vec<String> = Vec::new();
    for _ in 0..100 {
        finished = db
            .run(move |conn| {
                Ok(users::table
                    .filter(users::activation_status.eq(final_text))
                    .select(users::email)
                    .load::<String>(conn)?)
            })
            .await?;
        if finished.len() >= connections.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = sent_at.lock().map(|s| s.clone()).unwrap_or_default();
    let mut latencies: Vec<f64> = (0..n)
        .filter(|i| finished.contains(&emails[*i]))
        .filter_map(|i| Some(done_at[i]?.duration_since(sent[i]?).as_secs_f64() * 1000.0))
        .collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let completed = latencies.len();
    let phase_p50 = |phase: usize| {
        let mut ms: Vec<f64> = (0..n)
            .filter_map(|i| Some(phases[i]?[phase].duration_since(sent[i]?).as_secs_f64() * 1000.0))
            .collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        round(super::quantile(&ms, 0.5))
    };
    if let (Some(first), Some(last_sent), Some(last_done)) = (
        sent.iter().flatten().min(),
        sent.iter().flatten().max(),
        done_at.iter().flatten().max(),
    ) {
        let first_done = done_at.iter().flatten().min().copied().unwrap_or(*first);
        progress(&format!(
            "requests sent over {:.0} ms; first finished {:.0} ms and last {:.0} ms after the first request",
            last_sent.duration_since(*first).as_secs_f64() * 1000.0,
            first_done.duration_since(*first).as_secs_f64() * 1000.0,
            last_done.duration_since(*first).as_secs_f64() * 1000.0
        ));
    }
    let figures = ActivationFigures {
        devices: n,
        completed,
        failed: n - completed,
        p50_ms: round(super::quantile(&latencies, 0.5)),
        p99_ms: round(super::quantile(&latencies, 0.99)),
        until: final_text,
        max_ms: round(latencies.last().copied().unwrap_or(0.0)),
        watch_s: round(watch_s),
        key_p50_ms: phase_p50(0),
        books_p50_ms: phase_p50(1),
    };
    for conn in connections {
        conn.close().await;
    }
    server.shutdown().await?;
    relay.shutdown().await;
    drop(testbed);
    Ok(figures)
}
