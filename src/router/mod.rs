//! The BlackBerry Router.
//!
//! Seed: "The BlackBerry Router routes data to and from the BlackBerry
//! smartphones through the wireless network or through the organization's
//! network. As BlackBerry smartphones are connected and disconnected from
//! computers […], the BlackBerry Router dynamically switches between sending
//! and receiving data wirelessly or through the organization's LAN."
//!
//! Two paths:
//! - [`link`]: the outbound SRP link to the relay (TCP 3101, TLS, SRP
//!   authentication), sending the basic information packet first and
//!   reconnecting with exponential backoff and jitter. While it is down,
//!   nothing is lost: the Dispatcher's outbound queue in the Configuration
//!   Database holds every message, and it sends them again when the link
//!   returns.
//! - [`lan`]: devices connected directly (a device plugged into a desktop)
//!   prove their transport key and are then served over that connection;
//!   when it closes the device's traffic goes back to the relay.
//!
//! The Router moves packets only: it hands what arrives to the Dispatcher
//! as [`RouterEvent`]s and sends what the Dispatcher gives it through
//! [`RouterHandle::send`], choosing the LAN connection of a device when
//! there is one.

pub mod lan;
pub mod link;
pub mod settings;

pub use settings::RouterSettings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bramble_proto::frame::Frame;
use bramble_proto::Pin;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::mpsc;

/// Which path a packet took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Relay,
    Lan,
}

/// What the Router tells the Dispatcher.
#[derive(Debug)]
pub enum RouterEvent {
    /// A packet from a device (or the relay about a device).
    Frame { frame: Frame, via: Via },
    /// The SRP link is up (again).
    LinkUp,
    /// The SRP link went down.
    LinkDown,
    /// A device connected on the LAN path.
    LanAttached(Pin),
    /// A device's LAN connection closed; its traffic goes by the relay.
    LanDetached(Pin),
}

/// Why packets were not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotSent {
    #[error("the SRP link to the relay is down and the device is not connected on the LAN")]
    NoPath,
    /// The device's LAN connection has a full queue: it is not reading.
    #[error("the device's LAN connection is not taking packets (its queue is full)")]
    DeviceBusy,
}

/// The SRP link as the console shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkStatus {
    pub connected: bool,
    pub srp_id: Option<String>,
    pub relay: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    pub reconnects: u64,
}

#[derive(Default)]
struct Shared {
    relay: Mutex<Option<mpsc::Sender<Frame>>>,
    lan: Mutex<HashMap<Pin, (u64, mpsc::Sender<Frame>)>>,
    status: Mutex<LinkStatus>,
    next_lan_id: std::sync::atomic::AtomicU64,
    /// Woken when the wireless network connection is changed in the
    /// console: the link is opened again with the new settings.
    settings_changed: tokio::sync::Notify,
}

/// Sends packets on the best path; cheap to clone.
#[derive(Clone, Default)]
pub struct RouterHandle {
    shared: Arc<Shared>,
}

impl RouterHandle {
    pub fn new() -> RouterHandle {
        RouterHandle::default()
    }

    /// Sends one message's packets to `pin`: over its LAN connection when
    /// it has one, else over the SRP link.
    ///
    /// A LAN connection never makes the caller wait: the whole message is
    /// queued at once or, when the device's queue is full because it does
    /// not read, not at all ([`NotSent::DeviceBusy`]; the Dispatcher keeps
    /// it queued and tries again), so one stalled device cannot hold up
    /// another's mail. The SRP link, shared by every device, passes its
    /// back-pressure on; its writer is bounded by `write_timeout_secs`.
    pub async fn send(&self, pin: Pin, frames: Vec<Frame>) -> Result<Via, NotSent> {
        let lan = self.lan_sender(pin);
        if let Some(tx) = lan {
            match tx.try_reserve_many(frames.len()) {
                Ok(permits) => {
                    for (permit, frame) in permits.zip(frames) {
                        permit.send(frame);
                    }
                    return Ok(Via::Lan);
                }
                Err(mpsc::error::TrySendError::Full(())) => return Err(NotSent::DeviceBusy),
                // Closed meanwhile: the relay takes it.
                Err(mpsc::error::TrySendError::Closed(())) => {}
            }
        }
        let relay = self.shared.relay.lock().ok().and_then(|r| r.clone());
        match relay {
            Some(tx) if send_all(&tx, &frames).await => Ok(Via::Relay),
            _ => Err(NotSent::NoPath),
        }
    }

    /// Sends over the SRP link only (link-level packets).
    pub async fn send_relay(&self, frames: Vec<Frame>) -> Result<(), NotSent> {
        let relay = self.shared.relay.lock().ok().and_then(|r| r.clone());
        match relay {
            Some(tx) if send_all(&tx, &frames).await => Ok(()),
            _ => Err(NotSent::NoPath),
        }
    }

    fn lan_sender(&self, pin: Pin) -> Option<mpsc::Sender<Frame>> {
        self.shared
            .lan
            .lock()
            .ok()
            .and_then(|lan| lan.get(&pin).map(|(_, tx)| tx.clone()))
    }

    pub fn link_status(&self) -> LinkStatus {
        self.shared
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Devices connected on the LAN path now.
    pub fn lan_devices(&self) -> Vec<Pin> {
        let mut pins: Vec<Pin> = self
            .shared
            .lan
            .lock()
            .map(|lan| lan.keys().copied().collect())
            .unwrap_or_default();
        pins.sort();
        pins
    }

    /// The wireless network connection changed: the SRP link is closed and
    /// opened again with the new settings, without waiting for its next
    /// look at the database.
    pub fn reconnect(&self) {
        self.shared.settings_changed.notify_one();
    }

    /// Resolves when [`RouterHandle::reconnect`] was called.
    pub(crate) async fn settings_changed(&self) {
        self.shared.settings_changed.notified().await;
    }

    pub fn is_link_up(&self) -> bool {
        self.shared
            .relay
            .lock()
            .map(|r| r.is_some())
            .unwrap_or(false)
    }

    pub(crate) fn set_relay(&self, tx: Option<mpsc::Sender<Frame>>) {
        if let Ok(mut relay) = self.shared.relay.lock() {
            *relay = tx;
        }
    }

    fn update_status(&self, f: impl FnOnce(&mut LinkStatus)) {
        if let Ok(mut status) = self.shared.status.lock() {
            f(&mut status);
        }
    }

    /// Registers a LAN connection for `pin`, replacing an older one; returns
    /// its id for [`RouterHandle::detach_lan`].
    pub(crate) fn attach_lan(&self, pin: Pin, tx: mpsc::Sender<Frame>) -> u64 {
        let id = self
            .shared
            .next_lan_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut lan) = self.shared.lan.lock() {
            lan.insert(pin, (id, tx));
        }
        id
    }

    /// Removes the LAN connection `id` of `pin` if it is still the current
    /// one; returns whether it was.
    pub(crate) fn detach_lan(&self, pin: Pin, id: u64) -> bool {
        let Ok(mut lan) = self.shared.lan.lock() else {
            return false;
        };
        if lan.get(&pin).map(|(current, _)| *current) == Some(id) {
            lan.remove(&pin);
            true
        } else {
            false
        }
    }
}

/// Writes `first` and whatever else is already queued, then flushes once:
/// one system call for a burst of packets. Fails when the peer has not
/// taken it all within `timeout`.
async fn write_batch<W>(
    writer: &mut W,
    first: Frame,
    queue: &mut mpsc::Receiver<Frame>,
    timeout: std::time::Duration,
) -> std::io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let written = async {
        let mut frame = first;
        loop {
            bramble_proto::io::write_frame(writer, &frame)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            match queue.try_recv() {
                Ok(next) => frame = next,
                Err(_) => break,
            }
        }
        writer.flush().await
    };
    within(timeout, written).await
}

/// `io`, failed as timed out when the peer does not take the data within
/// `timeout` (it stopped reading).
async fn within<T>(
    timeout: std::time::Duration,
    io: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(timeout, io).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the peer took no data for {} s (it stopped reading); closing the connection",
                timeout.as_secs()
            ),
        ))
    })
}

async fn send_all(tx: &mpsc::Sender<Frame>, frames: &[Frame]) -> bool {
    for frame in frames {
        if tx.send(frame.clone()).await.is_err() {
            return false;
        }
    }
    true
}
