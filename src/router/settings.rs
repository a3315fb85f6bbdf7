//! `[router]` settings: the LAN path and the SRP link's timing.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The BlackBerry Router. The SRP ID, SRP key and relay address are in the
/// Configuration Database (`bramble srp set`, the console).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RouterSettings {
    /// Where devices connected to this computer reach the Router directly
    /// (the LAN path). Loopback by default; unset to turn the path off.
    pub lan_listen: Option<SocketAddr>,
    /// PEM certificate of the relay to trust (pinned). Unset: the system's
    /// certificate authorities.
    pub relay_certificate: Option<PathBuf>,
    /// First wait before reconnecting a lost SRP link; doubles up to the maximum.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// A ping on an idle SRP link this often; no traffic for three times as
    /// long means the link is dead.
    pub keepalive_secs: u64,
    /// A connection (the SRP link or a device's LAN connection) that does
    /// not take the packets written to it for this long is closed: a peer
    /// that stops reading cannot hold the Router's writer for ever.
    pub write_timeout_secs: u64,
    /// Packets waiting for one LAN device. When its queue is full (the
    /// device does not read), its messages stay in the Dispatcher's queue
    /// and other devices' mail goes on.
    pub lan_queue_packets: usize,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            lan_listen: Some(SocketAddr::from(([127, 0, 0, 1], 3103))),
            relay_certificate: None,
            reconnect_min_ms: 1_000,
            reconnect_max_ms: 60_000,
            keepalive_secs: 30,
            write_timeout_secs: 30,
            lan_queue_packets: 512,
        }
    }
}
