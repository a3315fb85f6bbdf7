//! The relay keys of devices, registered with the relay over the SRP link
//! (`device_keys`), so the relay can check that a device holds its
//! transport key before it gives the device anything or lets it displace
//! another connection (docs/protocol.md, "Device ⇄ relay").
//!
//! Every key is registered again, after a reset, each time the SRP link
//! comes up (the relay keeps them in memory only); a device whose keys
//! change (activation, key change, wipe) is registered again at once,
//! before anything that depends on it is sent on the same link.

use bramble_proto::control::{Control, DeviceRelayKeys, DEVICE_KEYS_PER_PACKET};
use bramble_proto::{Pin, RefId};
use tracing::{debug, info, warn};

use super::Dispatcher;

impl Dispatcher {
    /// A device's keys changed: forget them from the cache and tell the
    /// relay. Call it before sending anything the device will answer under
    /// its new key (the relay reads the SRP link in order).
    pub async fn keys_changed(&self, pin: Pin) {
        self.keys().invalidate(pin);
        if !self.router().is_link_up() {
            return;
        }
        match self.keys().relay_keys(pin).await {
            Ok(entry) => {
                let count = entry.keys.len();
                if self.send_keys(false, vec![entry]).await {
                    debug!(target: "bramble::dispatcher", %pin, keys = count, "relay keys registered");
                }
            }
            Err(e) => {
                warn!(target: "bramble::dispatcher", %pin, "the relay could not be told of the device's new key ({e}); it will be on the next link")
            }
        }
    }

    /// Registers every device's relay keys after a reset: the first thing
    /// on a new SRP link (also for many devices whose keys changed at once).
    pub async fn register_all_relay_keys(&self) {
        let all = match self.keys().all_relay_keys().await {
            Ok(all) => all,
            Err(e) => {
                warn!(target: "bramble::dispatcher", "the devices' keys could not be read for the relay ({e}); devices cannot connect through it until the next link");
                return;
            }
        };
        let devices = all.len();
        if self.send_keys(true, all).await {
            info!(target: "bramble::dispatcher", devices, "device keys registered with the relay");
        }
    }

    /// `device_keys` packets for `entries`, the first with `reset`.
    async fn send_keys(&self, reset: bool, entries: Vec<DeviceRelayKeys>) -> bool {
        let mut frames = Vec::new();
        let mut chunks = entries.chunks(DEVICE_KEYS_PER_PACKET).peekable();
        if chunks.peek().is_none() && reset {
            frames.push(
                Control::DeviceKeys {
                    reset,
                    devices: Vec::new(),
                }
                .frame(Pin(0), RefId(0)),
            );
        }
        for (i, chunk) in chunks.enumerate() {
            frames.push(
                Control::DeviceKeys {
                    reset: reset && i == 0,
                    devices: chunk.to_vec(),
                }
                .frame(Pin(0), RefId(0)),
            );
        }
        if frames.is_empty() {
            return true;
        }
        match self.router().send_relay(frames).await {
            Ok(()) => true,
            Err(e) => {
                debug!(target: "bramble::dispatcher", "device keys not sent to the relay: {e}");
                false
            }
        }
    }
}
