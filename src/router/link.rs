//! The outbound SRP link to the relay.
//!
//! Reads the wireless-network connection (SRP ID, SRP key, relay address)
//! from the Configuration Database, connects out with TLS, proves the SRP
//! key (and checks the relay's proof first), sends the basic information
//! packet, then carries packets both ways. On any failure it waits — one
//! second at first, doubling to a minute, with ±25 % jitter so many servers
//! do not reconnect in step — and tries again. An idle link is pinged; a
//! link silent for three keepalive periods is treated as dead.

use std::time::Duration;

use bramble_proto::control::Control;
use bramble_proto::frame::Frame;
use bramble_proto::io::{read_frame, write_frame};
use bramble_proto::{ContentType, Pin, RefId};
use bramble_relay::client::{connect_srp, ClientTls};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{RouterEvent, RouterHandle, Via};
use crate::db::models::srp_connection::SrpConnection;
use crate::db::Database;
use crate::router::RouterSettings;

const WRITE_QUEUE: usize = 1024;
/// How often to look again when no SRP connection is configured.
const UNCONFIGURED_POLL: Duration = Duration::from_secs(15);

/// Keeps the SRP link up until `shutdown`.
pub async fn run(
    settings: RouterSettings,
    server_name: String,
    db: Database,
    router: RouterHandle,
    events: mpsc::Sender<RouterEvent>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let min = Duration::from_millis(settings.reconnect_min_ms.max(10));
    let max = Duration::from_millis(settings.reconnect_max_ms.max(settings.reconnect_min_ms));
    let mut backoff = min;
    let mut told_unconfigured = false;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let connection = db.run_sealed(SrpConnection::find_current).await;
        let connection = match connection {
            Ok(Some(c)) => c,
            Ok(None) => {
                if !told_unconfigured {
                    info!(target: "bramble::router", "no wireless network connection is configured (SRP ID, key, relay); set one in the console (Servers, Wireless network) or with `bramble srp set` — the LAN path works meanwhile");
                    told_unconfigured = true;
                }
                router.update_status(|s| {
                    s.last_error = Some("no wireless network connection configured".into())
                });
                if sleep_or_stop(UNCONFIGURED_POLL, &shutdown, &router).await {
                    return Ok(());
                }
                continue;
            }
            Err(e) => {
                warn!(target: "bramble::router", "cannot read the wireless network connection: {e}");
                if sleep_or_stop(backoff, &shutdown, &router).await {
                    return Ok(());
                }
                continue;
            }
        };
        told_unconfigured = false;
        // Read each time: an administrator may fix the file without a restart.
        let pinned = match &settings.relay_certificate {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    let message = format!(
                        "cannot read the relay certificate {} ({e}); fix `[router] relay_certificate`",
                        path.display()
                    );
                    warn!(target: "bramble::router", "{message}");
                    router.update_status(|s| s.last_error = Some(message));
                    if sleep_or_stop(jitter(backoff), &shutdown, &router).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(max);
                    continue;
                }
            },
            None => None,
        };
        let relay = format!("{}:{}", connection.relay_host, connection.relay_port);
        let info = Control::ServerInfo {
            server_name: server_name.clone(),
            version: crate::VERSION.to_owned(),
        };
        let tls = ClientTls {
            pinned_cert_pem: pinned,
            ..ClientTls::default()
        };
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            attempt = connect_srp(&relay, tls, &connection.srp_id, connection.srp_key.expose().as_bytes(), info) => attempt,
        };
        match attempt {
            Ok((reader, writer)) => {
                backoff = min;
                info!(target: "bramble::router", srp_id = %connection.srp_id, %relay, "SRP link to the relay is up");
                router.update_status(|s| {
                    s.connected = true;
                    s.srp_id = Some(connection.srp_id.clone());
                    s.relay = Some(relay.clone());
                    s.since = Some(time::OffsetDateTime::now_utc());
                    s.last_error = None;
                });
                let outcome = carry(reader, writer, &settings, &router, &events, &shutdown).await;
                router.set_relay(None);
                router.update_status(|s| {
                    s.connected = false;
                    s.since = Some(time::OffsetDateTime::now_utc());
                    s.reconnects += 1;
                    if let Err(e) = &outcome {
                        s.last_error = Some(e.to_string());
                    }
                });
                let _ = events.send(RouterEvent::LinkDown).await;
                match outcome {
                    Ok(()) if shutdown.is_cancelled() => return Ok(()),
                    Ok(()) => {
                        warn!(target: "bramble::router", %relay, "the relay closed the SRP link; reconnecting")
                    }
                    Err(e) => {
                        warn!(target: "bramble::router", %relay, "SRP link lost: {e}; reconnecting")
                    }
                }
            }
            Err(e) => {
                warn!(target: "bramble::router", srp_id = %connection.srp_id, %relay, "cannot open the SRP link: {e}");
                router.update_status(|s| {
                    s.connected = false;
                    s.last_error = Some(e.to_string());
                });
            }
        }
        if sleep_or_stop(jitter(backoff), &shutdown, &router).await {
            return Ok(());
        }
        backoff = (backoff * 2).min(max);
    }
}

/// Moves packets until the link fails or `shutdown`.
async fn carry<R, W>(
    mut reader: R,
    writer: W,
    settings: &RouterSettings,
    router: &RouterHandle,
    events: &mpsc::Sender<RouterEvent>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut writer = BufWriter::new(writer);
    let (tx, mut rx) = mpsc::channel::<Frame>(WRITE_QUEUE);
    router.set_relay(Some(tx));
    let _ = events.send(RouterEvent::LinkUp).await;
    let keepalive = Duration::from_secs(settings.keepalive_secs.max(1));
    let write_timeout = Duration::from_secs(settings.write_timeout_secs.max(1));
    let mut ping = tokio::time::interval(keepalive);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = router.settings_changed() => {
                anyhow::bail!("the wireless network connection was changed; opening the link again with the new settings");
            }
            outgoing = rx.recv() => {
                let Some(frame) = outgoing else { return Ok(()) };
                super::write_batch(&mut writer, frame, &mut rx, write_timeout).await?;
            }
            incoming = read_frame(&mut reader) => {
                let Some(frame) = incoming? else { return Ok(()) };
                last_heard = tokio::time::Instant::now();
                if frame.content_type == ContentType::Control {
                    match Control::from_frame(&frame) {
                        Ok(Control::Ping) => {
                            super::within(write_timeout, async {
                                write_frame(&mut writer, &Control::Pong.frame(Pin(0), frame.ref_id)).await.map_err(std::io::Error::other)?;
                                writer.flush().await
                            }).await?;
                            continue;
                        }
                        Ok(Control::Pong) => continue,
                        _ => {}
                    }
                }
                if events.send(RouterEvent::Frame { frame, via: Via::Relay }).await.is_err() {
                    return Ok(());
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > keepalive * 3 {
                    anyhow::bail!("no traffic from the relay for {}s", last_heard.elapsed().as_secs());
                }
                super::within(write_timeout, async {
                    write_frame(&mut writer, &Control::Ping.frame(Pin(0), RefId(0))).await.map_err(std::io::Error::other)?;
                    writer.flush().await
                }).await?;
            }
        }
    }
}

/// Waits `duration`, or less when the connection settings change; true
/// when the server stops.
async fn sleep_or_stop(
    duration: Duration,
    shutdown: &CancellationToken,
    router: &RouterHandle,
) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(duration) => false,
        _ = router.settings_changed() => false,
    }
}

/// `base` ± 25 %.
fn jitter(base: Duration) -> Duration {
    let mut byte = [0u8; 2];
    let _ = openssl::rand::rand_bytes(&mut byte);
    let unit = f64::from(u16::from_be_bytes(byte)) / f64::from(u16::MAX); // 0..=1
    base.mul_f64(0.75 + unit * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_secs(8));
            assert!(
                d >= Duration::from_secs(6) && d <= Duration::from_secs(10),
                "{d:?}"
            );
        }
    }
}
