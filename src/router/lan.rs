//! The LAN path: devices connected directly to the Router.
//!
//! A device says `device_hello`, the Router answers `lan_challenge`, the
//! device proves it holds its current transport key with `lan_proof`; only
//! then is the connection used for that PIN (a stranger on the LAN cannot
//! divert a device's traffic). While connected, the device's packets go
//! this way; when the connection closes they go by the relay again, and the
//! Dispatcher re-sends what was in flight on the LAN.

use std::time::Duration;

use bramble_proto::control::{lan_proof, nonce, proofs_match, Control};
use bramble_proto::frame::Frame;
use bramble_proto::io::{read_frame, write_frame};
use bramble_proto::{ContentType, RefId};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use std::sync::Arc;

use bramble_proto::envelope::TransportKey;
use bramble_proto::Pin;
use futures::future::BoxFuture;

use super::{RouterEvent, RouterHandle, Via};

/// What the LAN path needs to check a device's proof: the device's
/// transport key by id. The Dispatcher's key cache provides it; the Router
/// itself never reads keys from the Configuration Database.
pub trait DeviceKeys: Send + Sync + 'static {
    fn key(&self, pin: Pin, key_id: u32) -> BoxFuture<'_, Option<TransportKey>>;
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// One message's packets at most (16 MiB in 64 KiB packets), so a queue of
/// at least this many always takes a whole message.
const MIN_QUEUE: usize = 260;

/// How each LAN connection is bounded (from [`super::RouterSettings`]).
#[derive(Debug, Clone, Copy)]
pub struct LanLimits {
    /// A device that takes no written data for this long is disconnected.
    pub write_timeout: Duration,
    /// Packets waiting for one device.
    pub queue_packets: usize,
}

impl LanLimits {
    pub fn of(settings: &super::RouterSettings) -> LanLimits {
        LanLimits {
            write_timeout: Duration::from_secs(settings.write_timeout_secs.max(1)),
            queue_packets: settings.lan_queue_packets.max(MIN_QUEUE),
        }
    }
}

/// Accepts LAN connections until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    limits: LanLimits,
    router: RouterHandle,
    keys: Arc<dyn DeviceKeys>,
    events: mpsc::Sender<RouterEvent>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    info!(target: "bramble::router", addr = ?listener.local_addr().ok(), "LAN path listening");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(target: "bramble::router", "LAN accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (router, keys, events, shutdown) = (router.clone(), keys.clone(), events.clone(), shutdown.clone());
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, limits, router, keys, events, shutdown).await {
                        warn!(target: "bramble::router", %peer, "LAN connection ended: {e}");
                    }
                });
            }
        }
    }
}

async fn connection(
    stream: TcpStream,
    limits: LanLimits,
    router: RouterHandle,
    keys: Arc<dyn DeviceKeys>,
    events: mpsc::Sender<RouterEvent>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let mut writer = BufWriter::new(writer);

    let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut reader)).await??;
    let pin = match hello.as_ref().map(Control::from_frame) {
        Some(Ok(Control::DeviceHello { pin, .. })) => pin,
        _ => anyhow::bail!("the first packet was not a device hello"),
    };
    let challenge = nonce();
    anyhow::ensure!(
        !challenge.is_empty(),
        "the system's random source failed; cannot challenge device {pin}"
    );
    let timeout = limits.write_timeout;
    let challenge_frame = Control::LanChallenge {
        nonce: challenge.clone(),
    }
    .frame(pin, RefId(0));
    super::within(timeout, write_now(&mut writer, &challenge_frame)).await?;
    let proof = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut reader)).await??;
    let accepted = match proof.as_ref().map(Control::from_frame) {
        Some(Ok(Control::LanProof { key_id, proof })) => match keys.key(pin, key_id).await {
            Some(key) => proofs_match(&proof, &lan_proof(key.secret(), pin, &challenge)),
            None => false,
        },
        _ => false,
    };
    if !accepted {
        let refusal = Control::Refused {
            reason: format!(
                "device {pin} could not prove it holds its transport key; activate it first"
            ),
        };
        super::within(
            timeout,
            write_now(&mut writer, &refusal.frame(pin, RefId(0))),
        )
        .await?;
        anyhow::bail!("device {pin} failed the LAN key proof");
    }
    super::within(
        timeout,
        write_now(&mut writer, &Control::Welcome.frame(pin, RefId(0))),
    )
    .await?;

    let (tx, mut rx) = mpsc::channel::<Frame>(limits.queue_packets);
    let id = router.attach_lan(pin, tx);
    info!(target: "bramble::router", %pin, "device connected on the LAN path");
    let _ = events.send(RouterEvent::LanAttached(pin)).await;

    let outcome: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                outgoing = rx.recv() => {
                    let Some(frame) = outgoing else { return Ok(()) };
                    super::write_batch(&mut writer, frame, &mut rx, timeout).await?;
                }
                incoming = read_frame(&mut reader) => {
                    let Some(frame) = incoming? else { return Ok(()) };
                    if frame.pin != pin {
                        warn!(target: "bramble::router", %pin, claimed = %frame.pin, "LAN device sent a packet for another PIN; dropped");
                        continue;
                    }
                    if frame.content_type == ContentType::Control {
                        if let Ok(Control::Ping) = Control::from_frame(&frame) {
                            super::within(timeout, write_now(&mut writer, &Control::Pong.frame(pin, frame.ref_id))).await?;
                        }
                        continue;
                    }
                    if events.send(RouterEvent::Frame { frame, via: Via::Lan }).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;

    if router.detach_lan(pin, id) {
        info!(target: "bramble::router", %pin, "LAN connection closed; the device's traffic goes by the relay");
        let _ = events.send(RouterEvent::LanDetached(pin)).await;
    }
    outcome
}

/// Writes one packet and flushes it.
async fn write_now<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &Frame,
) -> std::io::Result<()> {
    write_frame(writer, frame)
        .await
        .map_err(std::io::Error::other)?;
    writer.flush().await
}
