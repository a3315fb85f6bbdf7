//! `bramble bench transport`: the wireless path end to end.
//!
//! Starts a relay and a server in this process and N reference devices in
//! a child process (`bramble bench transport-devices`, so each side has its
//! own open-file limit), all on loopback, has the Dispatcher send M messages of the given size spread
//! over the devices, and waits until every device has shown its messages
//! and every delivery confirmation is back (the outbound queue is empty).
//!
//! Figures: `msgs_per_s` (M over the time from the first send to the last
//! message shown on a device), latency from `Dispatcher::send` to the device
//! showing the message (`p50_ms`, `p99_ms`, wall clock across the two
//! processes), `rss_kib_per_device` (growth of the device process's resident
//! memory from connecting its devices, divided by N),
//! `limit_msgs_per_s` (compress + AES-256-GCM of the same payloads in a
//! tight loop on one core, measured in the same run), `ratio`, `lost` and
//! `duplicates` (messages shown twice).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bramble_device::{Device, DeviceConfig, KeyStore, Path};
use bramble_proto::envelope::{self, TransportKey};
use bramble_proto::{ContentType, Pin, RefId};
use bramble_relay::{Relay, RelayConfig, SrpAccount, TlsIdentity};
use serde::Serialize;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use bramble::config::Settings;
use bramble::db::models::outbound::OutboundPacket;
use bramble::db::models::srp_connection::{SrpConnection, SrpKey, SrpSettings};
use bramble::db::Database;
use bramble::dispatcher::Outgoing;
use bramble::server::{Listeners, Server};

#[derive(Debug, Clone)]
pub struct TransportOptions {
    pub devices: usize,
    pub messages: usize,
    pub size: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TransportFigures {
    pub devices: usize,
    pub messages: usize,
    pub msgs_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub rss_kib_per_device: f64,
    pub limit_msgs_per_s: f64,
    pub ratio: f64,
    pub lost: usize,
    pub duplicates: usize,
}

const SRP_ID: &str = "S-BENCH";
const SRP_KEY: &str = "bench-srp-key-0123456789abcdef";
const BATCH: usize = 500;
const CONNECT_AT_ONCE: usize = 256;

/// An e-mail-like payload of `size` bytes, different for each message.
fn payload(index: usize, size: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "quarterly",
        "meeting",
        "budget",
        "the",
        "review",
        "please",
        "attached",
        "schedule",
        "team",
        "update",
        "customer",
        "and",
        "for",
        "project",
        "deadline",
        "thanks",
        "regards",
        "next",
        "week",
        "call",
    ];
    let mut text = format!("Message {index}: ");
    let mut i = index;
    while text.len() < size {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        text.push_str(WORDS[(i >> 33) % WORDS.len()]);
        text.push(' ');
    }
    text.truncate(size);
    text.into_bytes()
}

/// Compress + encrypt throughput of one core on the same payloads.
fn limit(messages: usize, size: usize) -> anyhow::Result<f64> {
    let key = TransportKey::generate(1)?;
    let payloads: Vec<Vec<u8>> = (0..messages.clamp(1, 2_000))
        .map(|i| payload(i, size))
        .collect();
    let started = Instant::now();
    let mut done = 0usize;
    while started.elapsed() < Duration::from_secs(2) {
        for (i, p) in payloads.iter().enumerate() {
            let sealed = envelope::seal(&key, ContentType::Cmime, Pin(1), RefId(i as u64), p)?;
            std::hint::black_box(sealed);
            done += 1;
        }
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

pub async fn run(
    options: TransportOptions,
    progress: impl Fn(&str),
) -> anyhow::Result<TransportFigures> {
    let TransportOptions {
        devices,
        messages,
        size,
    } = options;
    anyhow::ensure!(
        devices > 0 && messages > 0,
        "devices and messages must be at least 1"
    );
    if let Err(e) = rlimit::increase_nofile_limit(u64::from(u32::MAX)) {
        progress(&format!(
            "could not raise the open-file limit ({e}); many devices may fail to connect"
        ));
    }
    let dir = tempfile::tempdir()?;

    progress("measuring the compress + encrypt limit on one core");
    let limit_msgs_per_s = tokio::task::spawn_blocking(move || limit(messages, size)).await??;

    progress("starting the relay and the server");
    let relay_config = super::relay_for_bench(
        RelayConfig {
            srp_accounts: vec![SrpAccount::new(SRP_ID, SRP_KEY.as_bytes().to_vec())],
            tls: TlsIdentity {
                cert: Some(dir.path().join("relay.crt")),
                key: Some(dir.path().join("relay.key")),
                generate_if_missing: true,
            },
            store_per_device: messages.max(1000),
            ..RelayConfig::default()
        },
        devices,
        messages,
    );
    let relay = Relay::start_with(
        relay_config,
        TcpListener::bind("127.0.0.1:0").await?,
        TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    let mut settings = Settings::load_from(None, &[])?.settings;
    settings.data_dir = dir.path().join("server");
    settings.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.router.lan_listen = None;
    settings.router.relay_certificate = Some(dir.path().join("relay.crt"));
    settings.router.reconnect_min_ms = 50;
    settings.logging.level = "warn".into();
    let db = Database::open(&settings.database())?;
    let srp = SrpSettings {
        srp_id: SRP_ID.into(),
        srp_key: SrpKey::new(SRP_KEY),
        relay_host: "127.0.0.1".into(),
        relay_port: i32::from(relay.server_addr().port()),
        cal_licences: devices as i32,
    };
    db.run_blocking(|conn| SrpConnection::save(conn, db.sealer(), &srp))?;
    drop(db);
    let listeners = Listeners::bind(&settings).await?;
    let server = {
        let components = Server::default_components(&settings);
        Server::start_with(settings, listeners, components)
    }
    .await?;
    let started = Instant::now();
    while !server.dispatcher().router().is_link_up() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the SRP link did not come up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    progress(&format!("provisioning {devices} device keys (test path)"));
    let pins: Vec<Pin> = (0..devices).map(|i| Pin(0x1000_0000 + i as u32)).collect();
    let keys: Vec<TransportKey> = (0..devices)
        .map(|_| TransportKey::generate(1))
        .collect::<Result<_, _>>()?;
    crate::provision::into_server(
        &server,
        pins.iter().copied().zip(keys.iter().cloned()).collect(),
    )
    .await?;

    progress(&format!(
        "connecting {devices} devices (in a child process)"
    ));
    let key_file = dir.path().join("devices.txt");
    let lines: Vec<String> = pins
        .iter()
        .zip(keys.iter())
        .map(|(pin, key)| format!("{pin} {}", bramble_proto::control::hex(key.secret())))
        .collect();
    std::fs::write(&key_file, lines.join("\n"))?;
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args(["bench", "transport-devices", "--srp-id", SRP_ID, "--relay"])
        .arg(relay.device_addr().to_string())
        .arg("--keys")
        .arg(&key_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no output from the device process"))?;
    let mut reports = tokio::io::BufReader::new(stdout).lines();
    let rss_kib_per_device = loop {
        let line = reports.next_line().await?.ok_or_else(|| {
            anyhow::anyhow!("the device process ended before its devices connected")
        })?;
        if let Some(rest) = line.strip_prefix("READY ") {
            let rss: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            break match rss.as_slice() {
                [before, after] => after.saturating_sub(*before) as f64 / devices as f64,
                _ => 0.0,
            };
        }
    };

    progress(&format!("sending {messages} messages of {size} bytes"));
    let mut sent_at: HashMap<RefId, u128> = HashMap::with_capacity(messages);
    let first_send = unix_nanos();
    for start in (0..messages).step_by(BATCH) {
        let batch: Vec<Outgoing> = (start..(start + BATCH).min(messages))
            .map(|i| Outgoing {
                pin: pins[i % devices],
                content_type: ContentType::Cmime,
                plaintext: payload(i, size),
                priority: false,
                ref_id: Some(RefId(0xB000_0000_0000_0000 | i as u64)),
            })
            .collect();
        let now = unix_nanos();
        for out in &batch {
            if let Some(ref_id) = out.ref_id {
                sent_at.insert(ref_id, now);
            }
        }
        server.dispatcher().send_all(batch).await?;
    }

    let mut latencies = Vec::with_capacity(messages);
    let mut distinct: HashSet<RefId> = HashSet::with_capacity(messages);
    let mut duplicates = 0usize;
    let mut last_seen = first_send;
    let deadline = Instant::now() + Duration::from_secs(120 + messages as u64 / 100);
    while distinct.len() < messages && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), reports.next_line()).await {
            Ok(Ok(Some(line))) => {
                let mut parts = line.split_whitespace();
                let (Some("M"), Some(ref_id), Some(at)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let (Ok(ref_id), Ok(at)) = (ref_id.parse::<RefId>(), at.parse::<u128>()) else {
                    continue;
                };
                if distinct.insert(ref_id) {
                    if let Some(sent) = sent_at.get(&ref_id) {
                        latencies.push(at.saturating_sub(*sent) as f64 / 1e6);
                    }
                    last_seen = last_seen.max(at);
                } else {
                    duplicates += 1;
                }
            }
            Ok(_) => break,
            Err(_) => progress(&format!(
                "waiting: {} of {messages} shown so far",
                distinct.len()
            )),
        }
    }
    let elapsed = (last_seen.saturating_sub(first_send) as f64 / 1e9).max(1e-9);

    progress("waiting for the last delivery confirmations");
    let db = server.state().db.clone();
    let confirm_deadline = Instant::now() + Duration::from_secs(60);
    while db.run(OutboundPacket::count).await? > 0 && Instant::now() < confirm_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let unconfirmed = db.run(OutboundPacket::count).await?;
    if unconfirmed > 0 {
        progress(&format!(
            "{unconfirmed} messages still unconfirmed at the end"
        ));
    }

    latencies.sort_by(f64::total_cmp);
    let msgs_per_s = distinct.len() as f64 / elapsed;
    let figures = TransportFigures {
        devices,
        messages,
        msgs_per_s: round(msgs_per_s),
        p50_ms: round(super::quantile(&latencies, 0.50)),
        p99_ms: round(super::quantile(&latencies, 0.99)),
        rss_kib_per_device: round(rss_kib_per_device),
        limit_msgs_per_s: round(limit_msgs_per_s),
        ratio: (msgs_per_s / limit_msgs_per_s * 1000.0).round() / 1000.0,
        lost: messages - distinct.len(),
        duplicates,
    };

    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    server.shutdown().await.ok();
    relay.shutdown().await;
    Ok(figures)
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Raises this process's open-file limit to `needed` if it can; says what
/// to do when the system does not allow it.
fn raise_open_files(needed: u64) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(needed);
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    anyhow::ensure!(
        soft >= needed,
        "this needs about {needed} open files per process but the limit is {soft}; raise it (ulimit -n) and try again"
    );
    Ok(())
}

/// The device side of the benchmark (`bramble bench transport-devices`):
/// connects one device per line of `keys` (`PIN KEY-HEX`) to the relay,
/// prints `READY <rss before> <rss after>` (KiB), then `M <RefID> <unix
/// nanoseconds>` for each message shown, until standard input closes.
pub async fn devices(
    relay: SocketAddr,
    srp_id: &str,
    keys: &std::path::Path,
) -> anyhow::Result<()> {
    use std::io::Write;
    let text = std::fs::read_to_string(keys)?;
    let mut devices = Vec::new();
    for line in text.lines() {
        let Some((pin, key)) = line.split_once(' ') else {
            continue;
        };
        let pin: Pin = pin.parse()?;
        let bytes: Vec<u8> = (0..key.len() / 2)
            .filter_map(|i| u8::from_str_radix(key.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        let key = TransportKey::from_slice(1, &bytes)
            .ok_or_else(|| anyhow::anyhow!("bad key for {pin}"))?;
        let mut config = DeviceConfig::new(pin);
        config.srp_id = Some(srp_id.to_owned());
        devices.push(Device::new(config, KeyStore::new(key)));
    }
    raise_open_files(devices.len() as u64 + 256)?;
    let rss_before = super::rss_kib();
    let mut connections = Vec::with_capacity(devices.len());
    for chunk in devices.chunks(CONNECT_AT_ONCE) {
        let attempts = chunk
            .iter()
            .map(|device| device.connect(Path::Relay(relay)));
        for conn in futures::future::join_all(attempts).await {
            connections.push(Arc::new(conn?));
        }
    }
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(RefId, u128)>();
    for conn in &connections {
        let (conn, tx) = (conn.clone(), seen_tx.clone());
        tokio::spawn(async move {
            while let Some(m) = conn.recv().await {
                if tx.send((m.ref_id, unix_nanos())).is_err() {
                    break;
                }
            }
        });
    }
    drop(seen_tx);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_after = super::rss_kib();
    println!("READY {rss_before} {rss_after}");
    let mut stdin_closed = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut out = std::io::BufWriter::new(std::io::stdout());
    loop {
        tokio::select! {
            line = stdin_closed.next_line() => {
                if !matches!(line, Ok(Some(_))) {
                    break;
                }
            }
            seen = seen_rx.recv() => {
                let Some((ref_id, at)) = seen else { break };
                writeln!(out, "M {ref_id} {at}")?;
                while let Ok((ref_id, at)) = seen_rx.try_recv() {
                    writeln!(out, "M {ref_id} {at}")?;
                }
                out.flush()?;
            }
        }
    }
    for conn in connections {
        if let Ok(conn) = Arc::try_unwrap(conn) {
            conn.close().await;
        }
    }
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
