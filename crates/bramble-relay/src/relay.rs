//! The relay itself: listeners, links, routing by PIN and store and forward.
//!
//! One task per connection reads packets and routes them under a single
//! lock on the routing table; each link has a writer task fed by a bounded
//! queue, filled without waiting while the lock is held, so the order in
//! which the relay decides is the order on the wire (the welcome, then the
//! stored packets, then live ones). A link whose queue is full is not
//! reading: it is closed and its traffic is stored as for an offline peer.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bramble_proto::control::{
    device_proof_matches, nonce, proofs_match, reject_code, srp_relay_proof, srp_server_proof,
    unhex, Control, DeviceRelayKeys, ErrorReport, TransportStatus,
};
use bramble_proto::frame::Frame;
use bramble_proto::io::{read_frame, write_frame, ReadError};
use bramble_proto::{ContentType, Pin, RefId};
use openssl::ssl::SslAcceptor;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::RelayConfig;
use crate::limits::{Gate, Permit, Refusal};
use crate::lockout::{Lockout, Policy};
use crate::mail::{MailGate, MailLimits};
use crate::store::{is_last, Pushed, Store, Stored};
use crate::tls::{self, Identity};
use crate::{reject, RelayError, TARGET};

/// Packets a link may have queued beyond a full store before it counts as
/// not reading.
const LINK_QUEUE: usize = 1024;
/// Longest time spent closing a link politely.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Longest SRP ID or nonce accepted in a hello.
const MAX_HELLO_FIELD: usize = 256;
/// Most (source address, SRP ID) pairs whose failures are remembered at
/// once; beyond it the failures of new pairs are counted but not tracked
/// (logged), so a flood from many addresses cannot grow the table.
const MAX_ADDR_LOCKOUTS: usize = 4096;

/// Most relay keys kept per PIN (a device's current, pending and previous
/// transport keys).
const MAX_KEYS_PER_DEVICE: usize = 3;

/// `ErrorReport` code: the device's packet has nowhere to go.
pub const NO_SERVER: &str = "NO_SERVER";
/// `ErrorReport` code: the device's server is disconnected and the relay
/// holds as many packets for it as it may; this one was dropped.
pub const STORE_FULL: &str = "STORE_FULL";
/// `ErrorReport` code: a packet other than activation on a link whose
/// device has not proved its key; dropped.
pub const NOT_AUTHENTICATED: &str = "NOT_AUTHENTICATED";
/// `ErrorReport` code: too much activation traffic from this connection or
/// address; dropped.
pub const ACTIVATION_LIMIT: &str = "ACTIVATION_LIMIT";

/// Counters since start (packets, not messages, unless stated), and the
/// links up now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Packets handed straight to the peer's link, either direction.
    pub routed: u64,
    /// Packets stored for an offline device or disconnected server.
    pub stored: u64,
    /// Stored packets handed over when the peer connected.
    pub delivered_from_store: u64,
    /// Stored packets dropped for age.
    pub expired: u64,
    /// Device messages with no known, registered home server.
    pub unknown_pin: u64,
    /// Failed SRP authentications (unknown SRP ID, wrong key, abandoned
    /// handshake, no basic information packet).
    pub auth_failures: u64,
    /// Lockouts started.
    pub lockouts: u64,
    /// Connections refused because a port, an address or the PIN table had
    /// as many as the relay accepts.
    pub connections_refused: u64,
    /// Device connections closed for silence (no answer to the relay's ping).
    pub idle_closed: u64,
    /// Device connections refused because the device did not prove its key.
    pub device_auth_failures: u64,
    /// Packets dropped from activation-only links (not activation traffic,
    /// or over the activation limits).
    pub unauthenticated_dropped: u64,
    /// PINs whose relay keys a server has registered.
    pub devices_with_keys: usize,
    /// Most connections open at once on the device port since start.
    pub device_connections_peak: usize,
    /// PINs in the relay's table now.
    pub device_entries: usize,
    pub servers_connected: usize,
    pub devices_connected: usize,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    store_cap: usize,
    expiry: Duration,
    policy: Policy,
    handshake: Duration,
    device_idle: Duration,
    max_device_entries: usize,
    store_total: usize,
    activation_per_connection: u32,
    activation_per_address: u32,
    activation_window: Duration,
}

/// The sending end of a link.
#[derive(Clone)]
struct LinkTx {
    id: u64,
    peer: SocketAddr,
    tx: mpsc::Sender<Frame>,
    cancel: CancellationToken,
}

impl LinkTx {
    /// Queues a packet without waiting; gives it back if the link is gone
    /// or not reading (and then closes the link).
    fn push(&self, frame: Frame) -> Result<(), Frame> {
        match self.tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(frame)) => {
                warn!(target: TARGET, peer = %self.peer, "the peer is not reading its link; closing it");
                self.cancel.cancel();
                Err(frame)
            }
            Err(TrySendError::Closed(frame)) => Err(frame),
        }
    }
}

struct ServerEntry {
    key: Vec<u8>,
    link: Option<LinkTx>,
    store: Store,
    lockout: Lockout,
}

struct DeviceEntry {
    /// Relay keys by transport key id, registered by `registered_by`.
    keys: Vec<(u32, [u8; 32])>,
    /// The server that registered the device's keys: its home.
    registered_by: Option<String>,
    /// The last server that sent to this PIN (activation traffic goes
    /// there while no server has registered keys).
    learned_srp: Option<String>,
    /// The connection of the device that proved its key.
    link: Option<LinkTx>,
    /// The newest connection for this PIN that has not proved a key: it
    /// gets activation packets only.
    activation_link: Option<LinkTx>,
    store: Store,
    /// Last connection, disconnection or packet from a server.
    touched: Instant,
}

impl DeviceEntry {
    fn new(now: Instant) -> DeviceEntry {
        DeviceEntry {
            keys: Vec::new(),
            registered_by: None,
            learned_srp: None,
            link: None,
            activation_link: None,
            store: Store::default(),
            touched: now,
        }
    }

    /// Nothing would be lost by forgetting it now but the server learned
    /// for it.
    fn evictable(&self) -> bool {
        self.link.is_none()
            && self.activation_link.is_none()
            && self.store.is_empty()
            && self.keys.is_empty()
    }

    /// Where the device's traffic goes: the server that registered its
    /// keys, else the last one that sent to it. Never what a device says.
    fn home(&self) -> Option<&str> {
        self.registered_by
            .as_deref()
            .or(self.learned_srp.as_deref())
    }

    /// Whether `proof` answers `nonce` under one of the registered keys.
    fn proves(&self, pin: Pin, key_id: u32, proof: &str, nonce: &str) -> bool {
        self.keys
            .iter()
            .find(|(id, _)| *id == key_id)
            .is_some_and(|(_, key)| device_proof_matches(key, pin, nonce, proof))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Live,
    Stored,
    Full,
}

struct State {
    servers: HashMap<String, ServerEntry>,
    /// Activation packets from activation-only links per source address
    /// in the current window: (window start, count).
    activation_counts: HashMap<IpAddr, (Instant, u32)>,
    /// Failed authentications per source address and SRP ID.
    addr_lockouts: HashMap<(IpAddr, String), Lockout>,
    devices: HashMap<Pin, DeviceEntry>,
    /// Packets in all stores together.
    stored_total: usize,
    stats: RelayStats,
}

/// A report owed to a server.
type Report = (String, Pin, RefId, TransportStatus);

fn locked_reason(until: Instant, now: Instant) -> String {
    let left = until.saturating_duration_since(now);
    let wall = time::OffsetDateTime::now_utc() + left;
    let wall = wall
        .replace_nanosecond(0)
        .ok()
        .and_then(|w| {
            w.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "later".to_owned());
    format!(
        "{} {wall} ({} s from now)",
        reject::LOCKED_OUT,
        left.as_secs().max(1)
    )
}

impl State {
    fn new(config: &RelayConfig) -> State {
        let servers = config
            .srp_accounts
            .iter()
            .map(|a| {
                (
                    a.srp_id.clone(),
                    ServerEntry {
                        key: a.key.clone(),
                        link: None,
                        store: Store::default(),
                        lockout: Lockout::default(),
                    },
                )
            })
            .collect();
        State {
            servers,
            activation_counts: HashMap::new(),
            addr_lockouts: HashMap::new(),
            devices: HashMap::new(),
            stored_total: 0,
            stats: RelayStats::default(),
        }
    }

    fn stats(&self) -> RelayStats {
        RelayStats {
            servers_connected: self.servers.values().filter(|s| s.link.is_some()).count(),
            devices_connected: self.devices.values().filter(|d| d.link.is_some()).count(),
            device_entries: self.devices.len(),
            devices_with_keys: self.devices.values().filter(|d| !d.keys.is_empty()).count(),
            ..self.stats
        }
    }

    // ---- SRP accounts and lockout ----

    /// The key for `srp_id`, or why it may not connect now from `ip`.
    fn srp_key(&mut self, srp_id: &str, ip: IpAddr, now: Instant) -> Result<Vec<u8>, String> {
        let Some(server) = self.servers.get_mut(srp_id) else {
            self.stats.auth_failures += 1;
            return Err(format!(
                "{} {srp_id}: no enterprise server with this SRP ID is registered with this relay",
                reject::UNKNOWN_SRP_ID
            ));
        };
        if let Some(until) = server.lockout.locked_until(now) {
            return Err(locked_reason(until, now));
        }
        let key = server.key.clone();
        let ip = crate::limits::source(ip);
        if let Some(lockout) = self.addr_lockouts.get_mut(&(ip, srp_id.to_owned())) {
            if let Some(until) = lockout.locked_until(now) {
                return Err(locked_reason(until, now));
            }
        }
        Ok(key)
    }

    /// A failed authentication for `srp_id` from `ip`: counted against
    /// that address only, so a stranger cannot lock the genuine server out.
    fn srp_failure(&mut self, limits: &Limits, srp_id: &str, ip: IpAddr, now: Instant) {
        self.stats.auth_failures += 1;
        if !self.servers.contains_key(srp_id) || limits.policy.limit == 0 {
            return;
        }
        let ip = crate::limits::source(ip);
        let key = (ip, srp_id.to_owned());
        if !self.addr_lockouts.contains_key(&key) && self.addr_lockouts.len() >= MAX_ADDR_LOCKOUTS {
            let window = limits.policy.window;
            self.addr_lockouts.retain(|_, l| !l.is_idle(now, window));
            if self.addr_lockouts.len() >= MAX_ADDR_LOCKOUTS {
                warn!(
                    target: TARGET,
                    srp_id, %ip,
                    "failed authentication for SRP ID {srp_id} from {ip} not tracked for lockout: \
                     failures from {MAX_ADDR_LOCKOUTS} other addresses are being tracked already"
                );
                return;
            }
        }
        let lockout = self.addr_lockouts.entry(key).or_default();
        if lockout.failure(now, limits.policy) {
            self.stats.lockouts += 1;
            warn!(
                target: TARGET,
                srp_id, %ip,
                "SRP ID {srp_id} locked out for {:?} for connections from {ip} after {} failed \
                 authentications from there within {:?} (other addresses are not affected)",
                limits.policy.duration,
                limits.policy.limit,
                limits.policy.window
            );
        }
    }

    /// Records an authenticated connection; refuses it if it is one too
    /// many (flapping) or a lockout began meanwhile.
    fn srp_opened(&mut self, limits: &Limits, srp_id: &str, now: Instant) -> Result<(), String> {
        let Some(server) = self.servers.get_mut(srp_id) else {
            return Err(format!("{} {srp_id}", reject::UNKNOWN_SRP_ID));
        };
        if let Some(until) = server.lockout.locked_until(now) {
            return Err(locked_reason(until, now));
        }
        if server.lockout.opened(now, limits.policy) {
            self.stats.lockouts += 1;
            warn!(
                target: TARGET,
                srp_id,
                "SRP ID {srp_id} locked out for {:?}: more than {} connections within {:?} (flapping; \
                 is the same SRP ID configured on two servers?)",
                limits.policy.duration,
                limits.policy.limit,
                limits.policy.window
            );
            let until = server
                .lockout
                .locked_until(now)
                .unwrap_or(now + limits.policy.duration);
            return Err(locked_reason(until, now));
        }
        Ok(())
    }

    // ---- links ----

    fn register_server(&mut self, limits: &Limits, srp_id: &str, link: &LinkTx, now: Instant) {
        let Some(server) = self.servers.get_mut(srp_id) else {
            link.cancel.cancel();
            return;
        };
        if let Some(old) = server.link.replace(link.clone()) {
            info!(
                target: TARGET,
                srp_id,
                "SRP ID {srp_id}: a new link from {} was accepted; dropping the earlier link from {}",
                link.peer,
                old.peer
            );
            old.cancel.cancel();
        }
        let mut pending = server.store.take_all();
        let mut flushed = 0u64;
        let mut expired = 0u64;
        while let Some(item) = pending.pop_front() {
            if now.duration_since(item.at) >= limits.expiry {
                expired += 1;
                continue;
            }
            match link.push(item.frame) {
                Ok(()) => flushed += 1,
                Err(frame) => {
                    pending.push_front(Stored { frame, ..item });
                    server.store.restore_front(pending);
                    server.link = None;
                    break;
                }
            }
        }
        if flushed > 0 || expired > 0 {
            info!(
                target: TARGET,
                srp_id, "SRP ID {srp_id}: handed over {flushed} stored packets ({expired} had expired)"
            );
        }
        self.stats.delivered_from_store += flushed;
        self.stats.expired += expired;
        self.stored_total = self
            .stored_total
            .saturating_sub((flushed + expired) as usize);
    }

    /// A device link after its handshake: `authenticated` when the device
    /// proved its key (it replaces any earlier connection for the PIN and
    /// gets everything stored), else an activation-only link (it replaces
    /// only an earlier activation-only link and gets stored activation
    /// packets only; a stranger cannot displace the device this way).
    fn attach_device(
        &mut self,
        limits: &Limits,
        pin: Pin,
        link: &LinkTx,
        authenticated: bool,
        now: Instant,
    ) {
        let device = self
            .devices
            .entry(pin)
            .or_insert_with(|| DeviceEntry::new(now));
        device.touched = now;
        let slot = if authenticated {
            &mut device.link
        } else {
            &mut device.activation_link
        };
        if let Some(old) = slot.replace(link.clone()) {
            info!(
                target: TARGET,
                %pin, "PIN {pin}: a new connection from {} replaces the one from {}", link.peer, old.peer
            );
            old.cancel.cancel();
        }
        if authenticated
            && device
                .activation_link
                .as_ref()
                .is_some_and(|l| l.id == link.id)
        {
            device.activation_link = None;
        }
        if link.push(Control::Welcome.frame(pin, RefId(0))).is_err() {
            if authenticated {
                device.link = None;
            } else {
                device.activation_link = None;
            }
            return;
        }
        self.flush_device(limits, pin, link, authenticated, now);
    }

    /// Hands what is stored for `pin` to `link`: everything, or only
    /// activation packets for an activation-only link.
    fn flush_device(
        &mut self,
        limits: &Limits,
        pin: Pin,
        link: &LinkTx,
        authenticated: bool,
        now: Instant,
    ) {
        let Some(device) = self.devices.get_mut(&pin) else {
            return;
        };
        let mut pending = if authenticated {
            device.store.take_all()
        } else {
            device
                .store
                .take_where(|s| s.frame.content_type == ContentType::Activation)
        };
        let mut reports: Vec<Report> = Vec::new();
        let mut flushed = 0u64;
        let mut expired = 0u64;
        while let Some(item) = pending.pop_front() {
            let last = is_last(&item.frame);
            let (ref_id, origin) = (item.frame.ref_id, item.origin.clone());
            if now.duration_since(item.at) >= limits.expiry {
                expired += 1;
                if let (true, Some(origin)) = (last, origin) {
                    reports.push((origin, pin, ref_id, TransportStatus::Expired));
                }
                continue;
            }
            match link.push(item.frame) {
                Ok(()) => {
                    flushed += 1;
                    if let (true, Some(origin)) = (last, origin) {
                        reports.push((origin, pin, ref_id, TransportStatus::DeliveredToDevice));
                    }
                }
                Err(frame) => {
                    pending.push_front(Stored { frame, ..item });
                    device.store.restore_front(pending);
                    if authenticated {
                        device.link = None;
                    } else {
                        device.activation_link = None;
                    }
                    break;
                }
            }
        }
        if flushed > 0 || expired > 0 {
            info!(
                target: TARGET,
                %pin, "PIN {pin}: handed over {flushed} stored packets ({expired} had expired)"
            );
        }
        self.stats.delivered_from_store += flushed;
        self.stats.expired += expired;
        self.stored_total = self
            .stored_total
            .saturating_sub((flushed + expired) as usize);
        for report in reports {
            self.report(limits, report, now);
        }
    }

    /// Whether `proof` answers `nonce` for `pin` under a registered key.
    fn device_proves(&mut self, pin: Pin, key_id: u32, proof: &str, nonce: &str) -> bool {
        let proved = self
            .devices
            .get(&pin)
            .is_some_and(|d| d.proves(pin, key_id, proof, nonce));
        if !proved {
            self.stats.device_auth_failures += 1;
        }
        proved
    }

    /// `device_keys` from the server `srp_id`: each entry replaces the
    /// keys of its PIN; an entry without keys removes them (and closes the
    /// device's proved connection: its server no longer knows it).
    fn register_keys(
        &mut self,
        limits: &Limits,
        srp_id: &str,
        reset: bool,
        devices: Vec<DeviceRelayKeys>,
        now: Instant,
    ) {
        if reset {
            for device in self.devices.values_mut() {
                if device.registered_by.as_deref() == Some(srp_id) {
                    device.keys.clear();
                    device.registered_by = None;
                }
            }
        }
        let (mut registered, mut refused) = (0usize, 0usize);
        for entry in devices {
            let pin = entry.pin;
            let mut keys: Vec<(u32, [u8; 32])> = Vec::new();
            for key in entry.keys.iter().take(MAX_KEYS_PER_DEVICE) {
                match unhex(&key.key).and_then(|k| <[u8; 32]>::try_from(k).ok()) {
                    Some(bytes) => keys.push((key.key_id, bytes)),
                    None => warn!(
                        target: TARGET,
                        %pin, "SRP ID {srp_id} registered key {} of PIN {pin} that is not 32 bytes of hex; ignored",
                        key.key_id
                    ),
                }
            }
            if keys.is_empty() {
                if let Some(device) = self.devices.get_mut(&pin) {
                    if device.registered_by.as_deref() == Some(srp_id) {
                        device.keys.clear();
                        device.registered_by = None;
                        if let Some(link) = device.link.take() {
                            info!(
                                target: TARGET,
                                %pin, "PIN {pin}: its server {srp_id} removed its keys; closing its connection"
                            );
                            link.cancel.cancel();
                        }
                    }
                }
                continue;
            }
            if !self.make_room(limits, pin) {
                refused += 1;
                continue;
            }
            let device = self
                .devices
                .entry(pin)
                .or_insert_with(|| DeviceEntry::new(now));
            if let Some(other) = device.registered_by.as_deref().filter(|o| *o != srp_id) {
                info!(
                    target: TARGET,
                    %pin, "PIN {pin} moves from SRP ID {other} to SRP ID {srp_id}, which registered its keys"
                );
            }
            device.keys = keys;
            device.registered_by = Some(srp_id.to_owned());
            device.touched = now;
            registered += 1;
        }
        debug!(target: TARGET, srp_id, registered, "device keys registered");
        if refused > 0 {
            warn!(
                target: TARGET,
                srp_id,
                "SRP ID {srp_id}: the keys of {refused} devices were not registered: the relay's table of {} PINs is full",
                limits.max_device_entries
            );
        }
    }

    /// Counts one activation packet from an activation-only link at `ip`;
    /// `false` when the address has sent as many as it may in the window.
    fn admit_activation(&mut self, limits: &Limits, ip: IpAddr, now: Instant) -> bool {
        let ip = crate::limits::source(ip);
        let window = limits.activation_window;
        if !self.activation_counts.contains_key(&ip)
            && self.activation_counts.len() >= MAX_ADDR_LOCKOUTS
        {
            self.activation_counts
                .retain(|_, (start, _)| now.duration_since(*start) < window);
            if self.activation_counts.len() >= MAX_ADDR_LOCKOUTS {
                return false;
            }
        }
        let (start, count) = self.activation_counts.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= window {
            *start = now;
            *count = 0;
        }
        if *count >= limits.activation_per_address {
            return false;
        }
        *count += 1;
        true
    }

    fn unregister_server(&mut self, srp_id: &str, link_id: u64) {
        if let Some(server) = self.servers.get_mut(srp_id) {
            if server.link.as_ref().is_some_and(|l| l.id == link_id) {
                server.link = None;
            }
        }
    }

    /// Forgets a disconnected device's link; the entry itself only stays
    /// while packets are stored for it, its keys are registered or a
    /// server is known to send to it.
    fn unregister_device(&mut self, pin: Pin, link_id: u64, now: Instant) {
        if let Some(device) = self.devices.get_mut(&pin) {
            let mut was = false;
            if device.link.as_ref().is_some_and(|l| l.id == link_id) {
                device.link = None;
                was = true;
            }
            if device
                .activation_link
                .as_ref()
                .is_some_and(|l| l.id == link_id)
            {
                device.activation_link = None;
                was = true;
            }
            if was {
                device.touched = now;
                if device.evictable() && device.learned_srp.is_none() {
                    self.devices.remove(&pin);
                }
            }
        }
    }

    /// Whether `pin` has, or can be given, an entry in the table: when it
    /// is full, disconnected entries with nothing stored are forgotten,
    /// oldest first, down to nine tenths of the bound (so a flood of new
    /// PINs pays for the scan only once in a while).
    fn make_room(&mut self, limits: &Limits, pin: Pin) -> bool {
        let max = limits.max_device_entries;
        if self.devices.contains_key(&pin) || self.devices.len() < max {
            return true;
        }
        let mut evictable: Vec<(Instant, Pin)> = self
            .devices
            .iter()
            .filter(|(_, d)| d.evictable())
            .map(|(p, d)| (d.touched, *p))
            .collect();
        evictable.sort_unstable();
        let target = (max - max / 10).min(max - 1);
        let excess = self.devices.len().saturating_sub(target);
        for (_, old) in evictable.into_iter().take(excess) {
            self.devices.remove(&old);
        }
        if self.devices.len() < max {
            info!(
                target: TARGET,
                "the PIN table was full ({max} entries): forgot the oldest disconnected PINs with nothing stored"
            );
            true
        } else {
            false
        }
    }

    // ---- delivery ----

    /// To a server's link, or its store. `None`: no such server.
    fn deliver_to_server(
        &mut self,
        limits: &Limits,
        srp_id: &str,
        frame: Frame,
        now: Instant,
    ) -> Option<Outcome> {
        let server = self.servers.get_mut(srp_id)?;
        let frame = match &server.link {
            Some(link) => match link.push(frame) {
                Ok(()) => return Some(Outcome::Live),
                Err(frame) => {
                    server.link = None;
                    frame
                }
            },
            None => frame,
        };
        let stored = Stored {
            frame,
            at: now,
            origin: None,
        };
        Some(
            match push_counted(&mut server.store, &mut self.stored_total, stored, limits) {
                Pushed::Stored => Outcome::Stored,
                Pushed::Full => Outcome::Full,
            },
        )
    }

    /// To a device's link, or its store.
    fn deliver_to_device(
        &mut self,
        limits: &Limits,
        origin: &str,
        frame: Frame,
        now: Instant,
    ) -> Outcome {
        if !self.make_room(limits, frame.pin) {
            warn!(
                target: TARGET,
                pin = %frame.pin,
                "PIN {}: the relay's table of {} PINs is full of connected devices and stored packets; \
                 dropped RefID {} from SRP ID {origin}",
                frame.pin,
                limits.max_device_entries,
                frame.ref_id
            );
            return Outcome::Full;
        }
        let device = self
            .devices
            .entry(frame.pin)
            .or_insert_with(|| DeviceEntry::new(now));
        device.touched = now;
        if device.learned_srp.as_deref() != Some(origin) {
            device.learned_srp = Some(origin.to_owned());
        }
        // Activation packets go to the device still activating, if any;
        // everything else only to the device that proved its key.
        let activation = frame.content_type == ContentType::Activation;
        let slot = if activation && device.activation_link.is_some() {
            &mut device.activation_link
        } else {
            &mut device.link
        };
        let frame = match slot.as_ref() {
            Some(link) => match link.push(frame) {
                Ok(()) => return Outcome::Live,
                Err(frame) => {
                    *slot = None;
                    frame
                }
            },
            None => frame,
        };
        let stored = Stored {
            frame,
            at: now,
            origin: Some(origin.to_owned()),
        };
        match push_counted(&mut device.store, &mut self.stored_total, stored, limits) {
            Pushed::Stored => Outcome::Stored,
            Pushed::Full => Outcome::Full,
        }
    }

    fn report(&mut self, limits: &Limits, (srp_id, pin, ref_id, status): Report, now: Instant) {
        let frame = Control::Transport { status }.frame(pin, ref_id);
        match self.deliver_to_server(limits, &srp_id, frame, now) {
            None => {
                debug!(target: TARGET, "no server {srp_id} for the {status:?} report of {pin}/{ref_id}")
            }
            Some(Outcome::Full) => warn!(
                target: TARGET,
                srp_id = %srp_id,
                "report {status:?} for PIN {pin} RefID {ref_id} dropped: SRP ID {srp_id} is disconnected and its store is full"
            ),
            Some(_) => {}
        }
    }

    /// A non-control packet from the server `srp_id`, for the PIN in its header.
    fn route_from_server(&mut self, limits: &Limits, srp_id: &str, frame: Frame, now: Instant) {
        let (pin, ref_id, last) = (frame.pin, frame.ref_id, is_last(&frame));
        let status = match self.deliver_to_device(limits, srp_id, frame, now) {
            Outcome::Live => {
                self.stats.routed += 1;
                TransportStatus::DeliveredToDevice
            }
            Outcome::Stored => {
                self.stats.stored += 1;
                debug!(target: TARGET, %pin, "PIN {pin} is offline: stored RefID {ref_id}");
                TransportStatus::StoredForOfflineDevice
            }
            Outcome::Full => {
                warn!(target: TARGET, %pin, "PIN {pin} is offline and its store is full: dropped RefID {ref_id}");
                TransportStatus::StoreFull
            }
        };
        if last {
            self.report(limits, (srp_id.to_owned(), pin, ref_id, status), now);
        }
    }

    /// A non-control packet from the device `pin`; returns an error packet
    /// for the device when the message cannot go anywhere.
    fn route_from_device(
        &mut self,
        limits: &Limits,
        pin: Pin,
        frame: Frame,
        now: Instant,
    ) -> Option<Frame> {
        let (ref_id, last) = (frame.ref_id, is_last(&frame));
        let home = self
            .devices
            .get(&pin)
            .and_then(|d| d.home())
            .map(str::to_owned);
        let no_server = |message: String| {
            ErrorReport {
                code: NO_SERVER.to_owned(),
                message,
            }
            .frame(pin, ref_id)
        };
        let Some(home) = home else {
            if !last {
                return None;
            }
            self.stats.unknown_pin += 1;
            info!(target: TARGET, %pin, "PIN {pin} has no known enterprise server: RefID {ref_id} refused");
            return Some(no_server(format!(
                "No enterprise server is known for PIN {pin}; activate the device with its enterprise server first."
            )));
        };
        match self.deliver_to_server(limits, &home, frame, now) {
            None => {
                if !last {
                    return None;
                }
                self.stats.unknown_pin += 1;
                info!(target: TARGET, %pin, "PIN {pin}: its server {home} is not registered with this relay");
                Some(no_server(format!(
                    "The enterprise server {home} of PIN {pin} is not registered with this relay."
                )))
            }
            Some(Outcome::Live) => {
                self.stats.routed += 1;
                None
            }
            Some(Outcome::Stored) => {
                self.stats.stored += 1;
                None
            }
            Some(Outcome::Full) => {
                if !last {
                    return None;
                }
                warn!(target: TARGET, %pin, "SRP ID {home} is disconnected and its store is full: dropped RefID {ref_id} from PIN {pin}");
                Some(
                    ErrorReport {
                        code: STORE_FULL.to_owned(),
                        message: format!(
                            "The enterprise server {home} is not connected and the relay cannot hold more for it; try again later."
                        ),
                    }
                    .frame(pin, ref_id),
                )
            }
        }
    }

    /// Drops stored packets that are too old, reporting them.
    fn sweep(&mut self, limits: &Limits, now: Instant) {
        let mut reports: Vec<Report> = Vec::new();
        let mut expired = 0u64;
        for (pin, device) in &mut self.devices {
            for item in device.store.expire(now, limits.expiry) {
                expired += 1;
                if let (true, Some(origin)) = (is_last(&item.frame), item.origin) {
                    reports.push((origin, *pin, item.frame.ref_id, TransportStatus::Expired));
                }
            }
        }
        for (srp_id, server) in &mut self.servers {
            let old = server.store.expire(now, limits.expiry);
            if !old.is_empty() {
                warn!(target: TARGET, srp_id = %srp_id, "dropped {} packets stored too long for SRP ID {srp_id}", old.len());
                expired += old.len() as u64;
            }
        }
        // A PIN the relay only remembers the server of is forgotten after
        // as long as a packet would have been kept for it.
        self.devices.retain(|_, d| {
            !d.evictable()
                || (d.learned_srp.is_some() && now.duration_since(d.touched) < limits.expiry)
        });
        let window = limits.policy.window;
        self.addr_lockouts.retain(|_, l| !l.is_idle(now, window));
        self.stored_total = self.devices.values().map(|d| d.store.len()).sum::<usize>()
            + self.servers.values().map(|s| s.store.len()).sum::<usize>();
        if expired > 0 {
            info!(target: TARGET, "{expired} stored packets expired");
        }
        self.stats.expired += expired;
        for report in reports {
            self.report(limits, report, now);
        }
    }
}

/// Stores a packet within both bounds: `store_per_device` for this store
/// and `store_total` for all of them, keeping the running total.
fn push_counted(store: &mut Store, total: &mut usize, item: Stored, limits: &Limits) -> Pushed {
    let before = store.len();
    let room = limits.store_total.saturating_sub(*total);
    let cap = limits.store_cap.min(before.saturating_add(room));
    let pushed = store.push(item, cap);
    *total = (*total + store.len()).saturating_sub(before);
    if pushed == Pushed::Full && room == 0 {
        warn!(
            target: TARGET,
            "the relay holds {} stored packets, as many as store_total allows: dropping new ones",
            limits.store_total
        );
    }
    pushed
}

struct Shared {
    limits: Limits,
    server_gate: Arc<Gate>,
    device_gate: Arc<Gate>,
    refused: AtomicU64,
    idle_closed: AtomicU64,
    /// Woken whenever a server registers device keys.
    keys_registered: tokio::sync::Notify,
    /// Where activation requests go, and their bounds.
    mail: MailGate,
    state: Mutex<State>,
    acceptor: SslAcceptor,
    cancel: CancellationToken,
    tracker: TaskTracker,
    next_link: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts relays.
pub struct Relay;

impl Relay {
    /// Binds the two configured ports and starts.
    pub async fn start(config: RelayConfig) -> Result<RelayHandle, RelayError> {
        config.validate()?;
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| RelayError::Bind { what, addr, source })
        };
        let servers = bind("enterprise servers", config.server_listen).await?;
        let devices = bind("devices", config.device_listen).await?;
        Relay::start_with(config, servers, devices).await
    }

    /// Starts on listeners bound by the caller (the `*_listen` addresses
    /// of `config` are not used).
    pub async fn start_with(
        config: RelayConfig,
        server_listener: TcpListener,
        device_listener: TcpListener,
    ) -> Result<RelayHandle, RelayError> {
        config.validate()?;
        let identity = Identity::from_config(&config.tls)?;
        let acceptor = identity.acceptor().map_err(|e| {
            RelayError::Tls(format!(
                "the certificate and key cannot be used for TLS: {e}"
            ))
        })?;
        let server_addr = server_listener.local_addr()?;
        let device_addr = device_listener.local_addr()?;
        let limits = Limits {
            store_cap: config.store_per_device,
            expiry: config.store_expiry,
            policy: Policy {
                limit: config.lockout_failures,
                window: config.lockout_window,
                duration: config.lockout_duration,
            },
            handshake: config.handshake_timeout,
            device_idle: config.device_idle_timeout,
            max_device_entries: config.max_device_entries,
            store_total: config.store_total,
            activation_per_connection: config.activation_per_connection,
            activation_per_address: config.activation_per_address,
            activation_window: config.activation_window,
        };
        let device_budget = device_budget(&config, open_file_limit());
        let shared = Arc::new(Shared {
            limits,
            server_gate: Gate::new(
                config.max_server_connections,
                config.max_connections_per_address,
            ),
            device_gate: Gate::new(device_budget, config.max_connections_per_address),
            refused: AtomicU64::new(0),
            idle_closed: AtomicU64::new(0),
            keys_registered: tokio::sync::Notify::new(),
            mail: MailGate::new(
                config.smtp.clone(),
                config.mail_from.clone(),
                MailLimits {
                    per_address: config.mail_per_address,
                    per_connection: config.mail_per_connection,
                    window: config.mail_window,
                    concurrent: config.mail_concurrency,
                    queued: config.mail_queue,
                },
            ),
            state: Mutex::new(State::new(&config)),
            acceptor,
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            next_link: AtomicU64::new(1),
        });
        shared
            .tracker
            .spawn(accept_loop(shared.clone(), server_listener, Port::Server));
        shared
            .tracker
            .spawn(accept_loop(shared.clone(), device_listener, Port::Device));
        shared.tracker.spawn(sweeper(shared.clone()));
        let fingerprint = identity.fingerprint();
        info!(
            target: TARGET,
            "relay listening: enterprise servers on {server_addr} (TLS, certificate SHA-256 {fingerprint}), \
             devices on {device_addr}; {} SRP accounts",
            config.srp_accounts.len()
        );
        Ok(RelayHandle {
            shared,
            server_addr,
            device_addr,
            certificate_pem: identity.certificate_pem(),
            fingerprint,
        })
    }
}

/// A running relay. Dropping it stops the relay without waiting; prefer
/// [`RelayHandle::shutdown`].
pub struct RelayHandle {
    shared: Arc<Shared>,
    server_addr: SocketAddr,
    device_addr: SocketAddr,
    certificate_pem: String,
    fingerprint: String,
}

impl RelayHandle {
    /// Where enterprise servers connect.
    pub fn server_addr(&self) -> SocketAddr {
        self.server_addr
    }

    /// Where devices connect.
    pub fn device_addr(&self) -> SocketAddr {
        self.device_addr
    }

    /// The relay's TLS certificate (PEM), for a server to pin.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// SHA-256 of the certificate, colon-separated hex.
    pub fn certificate_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn stats(&self) -> RelayStats {
        RelayStats {
            connections_refused: self.shared.refused.load(Ordering::Relaxed),
            idle_closed: self.shared.idle_closed.load(Ordering::Relaxed),
            device_connections_peak: self.shared.device_gate.peak(),
            ..self.shared.lock().stats()
        }
    }

    /// Stops listening, closes every link and waits for the tasks to end.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        info!(target: TARGET, "relay stopped");
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

/// Runs a relay until `shutdown` completes (for `bramble relay`).
pub async fn run<F>(config: RelayConfig, shutdown: F) -> Result<(), RelayError>
where
    F: std::future::Future<Output = ()>,
{
    let handle = Relay::start(config).await?;
    shutdown.await;
    info!(target: TARGET, "relay shutting down");
    handle.shutdown().await;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Port {
    Server,
    Device,
}

impl Port {
    fn name(self) -> &'static str {
        match self {
            Port::Server => "server",
            Port::Device => "device",
        }
    }
}

/// First pause after a failed accept; doubled on each failure in a row.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause after failed accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(2);

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, port: Port) {
    let gate = match port {
        Port::Server => shared.server_gate.clone(),
        Port::Device => shared.device_gate.clone(),
    };
    let mut backoff = ACCEPT_BACKOFF;
    let mut failing = false;
    loop {
        let accepted = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                if failing {
                    info!(target: TARGET, "accepting connections on the {} port works again", port.name());
                    failing = false;
                    backoff = ACCEPT_BACKOFF;
                }
                let permit = match gate.admit(peer.ip(), Instant::now()) {
                    Ok(permit) => permit,
                    Err((refusal, log)) => {
                        refuse(&shared, tcp, peer, port, refusal, log, gate.open());
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let task = shared.clone();
                match port {
                    Port::Server => shared
                        .tracker
                        .spawn(server_connection(task, tcp, peer, permit)),
                    Port::Device => shared
                        .tracker
                        .spawn(device_connection(task, tcp, peer, permit)),
                };
            }
            Err(e) => {
                // Most often the process is out of file descriptors
                // (EMFILE): pause, longer each time, instead of spinning;
                // the connections already open keep being served.
                if !failing {
                    warn!(
                        target: TARGET,
                        "accepting a connection on the {} port failed: {e}; pausing accepts there \
                         (if the process is out of open files, lower max_device_connections or raise \
                         the open-file limit)",
                        port.name()
                    );
                    failing = true;
                } else {
                    debug!(target: TARGET, "accepting on the {} port failed again: {e}", port.name());
                }
                tokio::select! {
                    _ = shared.cancel.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// Closes a connection over the bounds: on the device port with a
/// `refused` packet saying why (written only if it fits the socket's
/// buffer at once; the relay never waits for a refused peer).
fn refuse(
    shared: &Shared,
    tcp: TcpStream,
    peer: SocketAddr,
    port: Port,
    refusal: Refusal,
    log: bool,
    open: usize,
) {
    shared.refused.fetch_add(1, Ordering::Relaxed);
    let reason = refusal.reason();
    if log {
        warn!(
            target: TARGET,
            %peer,
            "refusing connections from {} on the {} port: {reason} ({open} open on the port; \
             further refusals for this address are not logged for {:?})",
            peer.ip(),
            port.name(),
            crate::limits::REFUSAL_LOG_INTERVAL
        );
    }
    if let Port::Device = port {
        if let Ok(bytes) = (Control::Refused { reason })
            .frame(Pin(0), RefId(0))
            .encode()
        {
            let _ = tcp.try_write(&bytes);
        }
    }
    drop(tcp);
}

/// Files kept free besides the two ports' budgets: listeners, SMTP
/// connections, logs and the like.
const SPARE_FILES: usize = 64;

/// The device port's budget within the process's open-file limit: when
/// `max_server_connections + max_device_connections` and some spare
/// exceed it, the device port gets what is left (warned), so a full device
/// port never leaves the server port without files.
fn device_budget(config: &RelayConfig, open_file_limit: Option<usize>) -> usize {
    let wanted = config.max_device_connections;
    let Some(soft) = open_file_limit else {
        return wanted;
    };
    let left = soft
        .saturating_sub(config.max_server_connections)
        .saturating_sub(SPARE_FILES);
    if wanted <= left {
        return wanted;
    }
    let budget = left.max(1);
    warn!(
        target: TARGET,
        "the process may open {soft} files: max_server_connections ({}) + max_device_connections ({wanted}) \
         + {SPARE_FILES} spare do not fit, so the device port takes at most {budget} connections; raise \
         the open-file limit (e.g. LimitNOFILE) to allow more",
        config.max_server_connections
    );
    budget
}

/// The soft open-file limit of this process, where the system tells it.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok())
}

async fn sweeper(shared: Arc<Shared>) {
    let period =
        (shared.limits.expiry / 4).clamp(Duration::from_millis(20), Duration::from_secs(60));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => break,
            _ = tick.tick() => shared.lock().sweep(&shared.limits, Instant::now()),
        }
    }
}

async fn send_control<S: AsyncWrite + Unpin>(
    stream: &mut S,
    control: &Control,
    pin: Pin,
) -> Result<(), ReadError> {
    write_frame(stream, &control.frame(pin, RefId(0))).await?;
    stream.flush().await?;
    Ok(())
}

/// What came during a link's set-up.
enum Got {
    Control(Control),
    /// A packet that is not a readable control message.
    Other(String),
}

impl std::fmt::Display for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Got::Control(control) => write!(f, "{control:?}"),
            Got::Other(what) => write!(f, "a packet that is not a control message ({what})"),
        }
    }
}

/// One packet within `limit`; `Err` when none came (timeout, closed,
/// malformed).
async fn read_control<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Result<Got, String> {
    match timeout(limit, read_frame(stream)).await {
        Err(_) => Err(format!("nothing within {limit:?}")),
        Ok(Ok(None)) => Err("the peer closed the connection".to_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(Some(frame))) => Ok(match Control::from_frame(&frame) {
            Ok(control) => Got::Control(control),
            Err(e) => Got::Other(e.to_string()),
        }),
    }
}

/// Sends a last message and closes.
async fn close_with<S: AsyncWrite + Unpin>(stream: &mut S, control: &Control, pin: Pin) {
    let _ = timeout(CLOSE_GRACE, async {
        let _ = send_control(stream, control, pin).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn server_connection(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, permit: Permit) {
    let _permit = permit;
    let cancel = shared.cancel.clone();
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = server_connection_inner(shared, tcp, peer) => {}
    }
}

async fn server_connection_inner(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let limits = shared.limits;
    let mut stream = match timeout(limits.handshake, tls::accept(&shared.acceptor, tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            info!(target: TARGET, %peer, "TLS handshake with {peer} on the server port failed: {e}");
            return;
        }
        Err(_) => {
            info!(target: TARGET, %peer, "TLS handshake with {peer} on the server port timed out");
            return;
        }
    };
    let Some(srp_id) = authenticate(&shared, &mut stream, peer).await else {
        return;
    };
    match read_control(&mut stream, limits.handshake).await {
        Ok(Got::Control(Control::ServerInfo {
            server_name,
            version,
        })) => {
            info!(
                target: TARGET,
                srp_id = %srp_id, %peer,
                "SRP link up: SRP ID {srp_id} from {peer}, server {server_name:?} version {version:?}"
            );
        }
        other => {
            let what = match other {
                Ok(got) => got.to_string(),
                Err(e) => e,
            };
            warn!(
                target: TARGET,
                srp_id = %srp_id, %peer,
                "SRP ID {srp_id} from {peer}: expected the basic information packet first, got {what}; closing"
            );
            shared
                .lock()
                .srp_failure(&limits, &srp_id, peer.ip(), Instant::now());
            let _ = timeout(CLOSE_GRACE, stream.shutdown()).await;
            return;
        }
    }
    run_link(shared, stream, peer, Side::Server(srp_id)).await;
}

/// The relay's side of the SRP handshake; the SRP ID on success.
async fn authenticate<S>(shared: &Shared, stream: &mut S, peer: SocketAddr) -> Option<String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = shared.limits;
    let rejected = |reason: String| {
        let code = if reason.starts_with(reject::BAD_KEY) {
            reject_code::BAD_KEY
        } else if reason.starts_with(reject::UNKNOWN_SRP_ID) {
            reject_code::UNKNOWN_SRP_ID
        } else if reason.starts_with(reject::LOCKED_OUT) {
            reject_code::LOCKED_OUT
        } else {
            reject_code::PROTOCOL
        };
        Control::SrpRejected {
            reason,
            code: Some(code.to_owned()),
        }
    };
    let (srp_id, server_nonce) = match read_control(stream, limits.handshake).await {
        Ok(Got::Control(Control::SrpHello { srp_id, nonce })) => (srp_id, nonce),
        Ok(other) => {
            warn!(target: TARGET, %peer, "{peer} on the server port sent {other} instead of an SRP hello; closing");
            shared.lock().stats.auth_failures += 1;
            close_with(stream, &rejected("expected srp_hello".to_owned()), Pin(0)).await;
            return None;
        }
        Err(why) => {
            info!(target: TARGET, %peer, "{peer} on the server port sent no SRP hello ({why}); closing");
            return None;
        }
    };
    if srp_id.len() > MAX_HELLO_FIELD
        || server_nonce.is_empty()
        || server_nonce.len() > MAX_HELLO_FIELD
    {
        warn!(target: TARGET, %peer, "{peer} sent a malformed SRP hello; closing");
        shared.lock().stats.auth_failures += 1;
        close_with(stream, &rejected("malformed srp_hello".to_owned()), Pin(0)).await;
        return None;
    }
    let key = shared.lock().srp_key(&srp_id, peer.ip(), Instant::now());
    let key = match key {
        Ok(key) => key,
        Err(reason) => {
            warn!(target: TARGET, %peer, "SRP ID {srp_id:?} from {peer} refused: {reason}");
            close_with(stream, &rejected(reason), Pin(0)).await;
            return None;
        }
    };
    let relay_nonce = nonce();
    let challenge = Control::SrpChallenge {
        nonce: relay_nonce.clone(),
        proof: srp_relay_proof(&key, &srp_id, &server_nonce, &relay_nonce),
    };
    if let Err(e) = send_control(stream, &challenge, Pin(0)).await {
        info!(target: TARGET, %peer, "SRP ID {srp_id} from {peer}: sending the challenge failed: {e}");
        shared
            .lock()
            .srp_failure(&limits, &srp_id, peer.ip(), Instant::now());
        return None;
    }
    match read_control(stream, limits.handshake).await {
        Ok(Got::Control(Control::SrpResponse { proof })) => {
            if !proofs_match(
                &proof,
                &srp_server_proof(&key, &srp_id, &server_nonce, &relay_nonce),
            ) {
                warn!(
                    target: TARGET,
                    srp_id = %srp_id, %peer,
                    "SRP ID {srp_id} from {peer} refused: its SRP authentication key does not match"
                );
                shared
                    .lock()
                    .srp_failure(&limits, &srp_id, peer.ip(), Instant::now());
                close_with(stream, &rejected(reject::BAD_KEY.to_owned()), Pin(0)).await;
                return None;
            }
        }
        Ok(other) => {
            warn!(target: TARGET, %peer, "SRP ID {srp_id} from {peer} answered the challenge with {other}; closing");
            shared
                .lock()
                .srp_failure(&limits, &srp_id, peer.ip(), Instant::now());
            close_with(
                stream,
                &rejected("expected srp_response".to_owned()),
                Pin(0),
            )
            .await;
            return None;
        }
        Err(why) => {
            warn!(
                target: TARGET,
                srp_id = %srp_id, %peer,
                "SRP ID {srp_id} from {peer} did not answer the challenge ({why}); \
                 the server probably holds a different SRP authentication key"
            );
            shared
                .lock()
                .srp_failure(&limits, &srp_id, peer.ip(), Instant::now());
            return None;
        }
    }
    let opened = shared.lock().srp_opened(&limits, &srp_id, Instant::now());
    if let Err(reason) = opened {
        close_with(stream, &rejected(reason), Pin(0)).await;
        return None;
    }
    if let Err(e) = send_control(stream, &Control::SrpAccepted, Pin(0)).await {
        info!(target: TARGET, %peer, "SRP ID {srp_id} from {peer}: the link failed after authentication: {e}");
        return None;
    }
    info!(target: TARGET, srp_id = %srp_id, %peer, "SRP ID {srp_id} authenticated from {peer}");
    Some(srp_id)
}

async fn device_connection(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, permit: Permit) {
    let _permit = permit;
    let cancel = shared.cancel.clone();
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = device_connection_inner(shared, tcp, peer) => {}
    }
}

async fn device_connection_inner(shared: Arc<Shared>, mut tcp: TcpStream, peer: SocketAddr) {
    let hello = read_control(&mut tcp, shared.limits.handshake).await;
    let (pin, srp_id) = match hello {
        Ok(Got::Control(Control::DeviceHello {
            pin,
            srp_id,
            model,
            os_version,
        })) => {
            if srp_id.as_ref().is_some_and(|s| s.len() > MAX_HELLO_FIELD) {
                close_with(
                    &mut tcp,
                    &Control::Refused {
                        reason: "the SRP ID is too long".into(),
                    },
                    pin,
                )
                .await;
                return;
            }
            if !shared.lock().make_room(&shared.limits, pin) {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                warn!(
                    target: TARGET,
                    %pin, %peer,
                    "device {pin} from {peer} refused: the relay's table of {} PINs is full of \
                     connected devices and stored packets",
                    shared.limits.max_device_entries
                );
                let refused = Control::Refused {
                    reason: "the relay cannot take more devices now; try again later".into(),
                };
                close_with(&mut tcp, &refused, pin).await;
                return;
            }
            info!(
                target: TARGET,
                %pin, %peer,
                "device {pin} connected from {peer} (model {model:?}, OS {os_version:?}, server {})",
                srp_id.as_deref().unwrap_or("not named")
            );
            (pin, srp_id)
        }
        Ok(other) => {
            warn!(target: TARGET, %peer, "{peer} on the device port sent {other} before device_hello; closing");
            let refused = Control::Refused {
                reason: "the first packet must be device_hello".into(),
            };
            close_with(&mut tcp, &refused, Pin(0)).await;
            return;
        }
        Err(why) => {
            info!(target: TARGET, %peer, "{peer} on the device port sent no hello ({why}); closing");
            return;
        }
    };
    let _ = srp_id;
    // The device proves it holds a transport key its server registered,
    // or asks for an activation-only link.
    let challenge = nonce();
    if challenge.is_empty() {
        warn!(target: TARGET, %peer, "no random nonce for device {pin}'s challenge (the system's random source failed); closing");
        return;
    }
    let sent = timeout(
        shared.limits.handshake,
        send_control(
            &mut tcp,
            &Control::DeviceChallenge {
                nonce: challenge.clone(),
            },
            pin,
        ),
    )
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        info!(target: TARGET, %peer, "device {pin} at {peer} did not take its challenge; closing");
        return;
    }
    let authenticated = match read_control(&mut tcp, shared.limits.handshake).await {
        Ok(Got::Control(Control::DeviceProof { key_id, proof })) => {
            if !proves_soon(&shared, pin, key_id, &proof, &challenge).await {
                warn!(
                    target: TARGET,
                    %pin, %peer,
                    "device {pin} at {peer} did not prove transport key {key_id} (no such key is \
                     registered for this PIN, or the proof is wrong); refused"
                );
                let refused = Control::Refused {
                    reason: format!(
                        "the relay could not verify this device's key {key_id}: its enterprise \
                         server has not registered it (the server may not be connected yet, or \
                         the device was removed or must be activated again)"
                    ),
                };
                close_with(&mut tcp, &refused, pin).await;
                return;
            }
            true
        }
        Ok(Got::Control(Control::ActivationOnly)) => false,
        Ok(other) => {
            warn!(target: TARGET, %peer, "device {pin} at {peer} answered its challenge with {other}; closing");
            let refused = Control::Refused {
                reason: "the answer to device_challenge must be device_proof or activation_only"
                    .into(),
            };
            close_with(&mut tcp, &refused, pin).await;
            return;
        }
        Err(why) => {
            info!(target: TARGET, %peer, "device {pin} at {peer} did not answer its challenge ({why}); closing");
            return;
        }
    };
    run_link(
        shared,
        tcp,
        peer,
        Side::Device {
            pin,
            nonce: challenge,
            authenticated,
        },
    )
    .await;
}

/// Longest a device's proof waits for its keys when none are registered
/// for its PIN yet (its server's link has just come up and is registering).
const KEYS_GRACE: Duration = Duration::from_secs(5);

/// Whether the device proves its key; when no key is registered for its
/// PIN at all, waits up to [`KEYS_GRACE`] (within the handshake limit) for
/// its server to register some, so devices that reconnect as a relay or
/// server restarts are not refused for arriving first.
async fn proves_soon(shared: &Shared, pin: Pin, key_id: u32, proof: &str, nonce: &str) -> bool {
    let deadline = Instant::now() + KEYS_GRACE.min(shared.limits.handshake);
    loop {
        let registered = shared.keys_registered.notified();
        tokio::pin!(registered);
        registered.as_mut().enable();
        {
            let mut state = shared.lock();
            let has_keys = state.devices.get(&pin).is_some_and(|d| !d.keys.is_empty());
            if has_keys || Instant::now() >= deadline {
                return state.device_proves(pin, key_id, proof, nonce);
            }
        }
        if timeout(
            deadline.saturating_duration_since(Instant::now()),
            registered,
        )
        .await
        .is_err()
        {
            return shared.lock().device_proves(pin, key_id, proof, nonce);
        }
    }
}

enum Side {
    Server(String),
    /// A device; `nonce` is the challenge of its handshake, which a device
    /// on an activation-only link answers later with `device_proof`.
    Device {
        pin: Pin,
        nonce: String,
        authenticated: bool,
    },
}

impl Side {
    fn describe(&self, peer: SocketAddr) -> String {
        match self {
            Side::Server(srp_id) => format!("SRP ID {srp_id} at {peer}"),
            Side::Device {
                pin,
                authenticated: true,
                ..
            } => format!("device {pin} at {peer}"),
            Side::Device { pin, .. } => format!("device {pin} (activation only) at {peer}"),
        }
    }
}

/// A link after its set-up: register it, route what it sends, unregister.
async fn run_link<S>(shared: Arc<Shared>, stream: S, peer: SocketAddr, mut side: Side)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let limits = shared.limits;
    let who = side.describe(peer);
    let (mut reader, writer) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(LINK_QUEUE + limits.store_cap);
    let cancel = shared.cancel.child_token();
    let link = LinkTx {
        id: shared.next_link.fetch_add(1, Ordering::Relaxed),
        peer,
        tx,
        cancel: cancel.clone(),
    };
    let writer_task = shared
        .tracker
        .spawn(write_loop(writer, rx, cancel.clone(), who.clone()));
    {
        let mut state = shared.lock();
        match &side {
            Side::Server(srp_id) => state.register_server(&limits, srp_id, &link, Instant::now()),
            Side::Device {
                pin, authenticated, ..
            } => state.attach_device(&limits, *pin, &link, *authenticated, Instant::now()),
        }
    }
    let is_device = matches!(side, Side::Device { .. });
    let mut who = who;
    // Activation requests this connection has had e-mailed.
    let mut mails = MailCount::default();
    // Activation packets from this connection while it is activation-only,
    // and packets dropped from it.
    let mut activation_sent = 0u32;
    let mut dropped = 0u32;
    loop {
        // A device silent for `device_idle` is pinged; silent as long
        // again, it is closed. The read goes on across the ping (a packet
        // half read is not lost), and a packet sent a byte at a time does
        // not count as activity until it is whole.
        let read = read_frame(&mut reader);
        tokio::pin!(read);
        let mut idle_deadline = Instant::now() + limits.device_idle;
        let mut pinged = false;
        let read = loop {
            tokio::select! {
                _ = cancel.cancelled() => break None,
                read = &mut read => break Some(read),
                _ = tokio::time::sleep_until(idle_deadline), if is_device => {
                    if pinged {
                        break None;
                    }
                    pinged = true;
                    idle_deadline = Instant::now() + limits.device_idle;
                    if let Side::Device { pin, .. } = &side {
                        let _ = link.push(Control::Ping.frame(*pin, RefId(0)));
                    }
                }
            }
        };
        let Some(read) = read else {
            if cancel.is_cancelled() {
                debug!(target: TARGET, "closing the link of {who}");
            } else {
                shared.idle_closed.fetch_add(1, Ordering::Relaxed);
                info!(
                    target: TARGET,
                    %peer,
                    "closing the link of {who}: silent for {:?} and no answer to a ping",
                    limits.device_idle * 2
                );
            }
            break;
        };
        let frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                info!(target: TARGET, %peer, "{who} closed its link");
                break;
            }
            Err(e) => {
                warn!(target: TARGET, %peer, "closing the link of {who}: {e}");
                break;
            }
        };
        if frame.content_type == ContentType::Control {
            let control = Control::from_frame(&frame);
            match (&mut side, control) {
                (Side::Server(srp_id), Ok(Control::DeviceKeys { reset, devices })) => {
                    shared
                        .lock()
                        .register_keys(&limits, srp_id, reset, devices, Instant::now());
                    shared.keys_registered.notify_waiters();
                }
                (
                    Side::Device {
                        pin,
                        nonce,
                        authenticated,
                    },
                    Ok(Control::DeviceProof { key_id, proof }),
                ) => {
                    if *authenticated {
                        debug!(target: TARGET, "{who} proved its key again; nothing to do");
                        continue;
                    }
                    let mut state = shared.lock();
                    if state.device_proves(*pin, key_id, &proof, nonce) {
                        *authenticated = true;
                        info!(target: TARGET, %peer, "{who} proved its transport key {key_id}: the link now carries all its traffic");
                        state.attach_device(&limits, *pin, &link, true, Instant::now());
                        who = side.describe(peer);
                    } else {
                        warn!(target: TARGET, %peer, "{who} did not prove transport key {key_id}; closing");
                        let _ = link.push(
                            Control::Refused {
                                reason: format!(
                                    "the relay could not verify this device's key {key_id}"
                                ),
                            }
                            .frame(*pin, RefId(0)),
                        );
                        drop(state);
                        break;
                    }
                }
                _ => {
                    let device = match &side {
                        Side::Device { pin, .. } => Some((*pin, &mut mails)),
                        Side::Server(_) => None,
                    };
                    handle_control(&shared, &link, &frame, &who, device);
                }
            }
            continue;
        }
        let now = Instant::now();
        let mut state = shared.lock();
        match &side {
            Side::Server(srp_id) => state.route_from_server(&limits, srp_id, frame, now),
            Side::Device {
                pin, authenticated, ..
            } => {
                if !authenticated {
                    let refusal = if frame.content_type != ContentType::Activation {
                        Some((
                            NOT_AUTHENTICATED,
                            "This connection carries activation traffic only: the device has not proved its key to the relay.",
                        ))
                    } else if activation_sent >= limits.activation_per_connection
                        || !state.admit_activation(&limits, peer.ip(), now)
                    {
                        Some((
                            ACTIVATION_LIMIT,
                            "Too much activation traffic from this connection or address; try again later.",
                        ))
                    } else {
                        activation_sent += 1;
                        None
                    };
                    if let Some((code, message)) = refusal {
                        state.stats.unauthenticated_dropped += 1;
                        warn!(
                            target: TARGET,
                            %peer,
                            "{who} sent a {:?} packet (RefID {}): dropped ({code})",
                            frame.content_type,
                            frame.ref_id
                        );
                        if is_last(&frame) {
                            let _ = link.push(
                                ErrorReport {
                                    code: code.to_owned(),
                                    message: message.to_owned(),
                                }
                                .frame(*pin, frame.ref_id),
                            );
                        }
                        // A connection that keeps trying is closed.
                        dropped += 1;
                        if dropped >= MAX_MAIL_REFUSALS {
                            warn!(target: TARGET, %peer, "closing the link of {who}: {dropped} of its packets were dropped");
                            break;
                        }
                        continue;
                    }
                }
                if frame.pin != *pin {
                    warn!(
                        target: TARGET,
                        %peer,
                        "{who} sent a packet for PIN {} (RefID {}): dropped, a device speaks only for its own PIN",
                        frame.pin,
                        frame.ref_id
                    );
                    continue;
                }
                if let Some(reply) = state.route_from_device(&limits, *pin, frame, now) {
                    let _ = link.push(reply);
                }
            }
        }
    }
    {
        let mut state = shared.lock();
        match &side {
            Side::Server(srp_id) => state.unregister_server(srp_id, link.id),
            Side::Device { pin, .. } => state.unregister_device(*pin, link.id, Instant::now()),
        }
    }
    cancel.cancel();
    let _ = writer_task.await;
}

/// Refused activation requests (or packets dropped from an activation-only
/// link) after which a device's connection is closed (so one connection
/// cannot fill the log with refusals).
const MAX_MAIL_REFUSALS: u32 = 10;

/// Activation requests of one device connection.
#[derive(Debug, Default)]
struct MailCount {
    /// E-mailed (or being sent).
    sent: u32,
    refused: u32,
}

fn handle_control(
    shared: &Arc<Shared>,
    link: &LinkTx,
    frame: &Frame,
    who: &str,
    device: Option<(Pin, &mut MailCount)>,
) {
    match Control::from_frame(frame) {
        Ok(Control::SendMail {
            to,
            subject,
            attachment_name,
            attachment,
        }) if device.is_some() => {
            let Some((pin, mails)) = device else {
                return;
            };
            let ref_id = frame.ref_id;
            let mut not_sent = |message: String| {
                warn!(
                    target: TARGET,
                    peer = %link.peer,
                    "{who}: activation request for {to:?} refused: {message}"
                );
                let _ = link.push(
                    ErrorReport {
                        code: ErrorReport::MAIL_NOT_SENT.to_owned(),
                        message,
                    }
                    .frame(pin, ref_id),
                );
                mails.refused += 1;
                if mails.refused >= MAX_MAIL_REFUSALS {
                    warn!(
                        target: TARGET,
                        peer = %link.peer,
                        "closing the link of {who}: {MAX_MAIL_REFUSALS} of its activation requests were refused"
                    );
                    link.cancel.cancel();
                }
            };
            let Some(smtp) = shared.mail.smtp.clone() else {
                not_sent("this relay does not forward activation requests by e-mail (no smtp server is configured)".to_owned());
                return;
            };
            let checked = match crate::mail::check_request(pin, &to, &attachment) {
                Ok(checked) => checked,
                Err(message) => return not_sent(message),
            };
            if subject != bramble_proto::activation::REQUEST_SUBJECT
                || attachment_name != bramble_proto::activation::ETP_FILE
            {
                debug!(
                    target: TARGET,
                    "{who}: activation request with subject {subject:?} and attachment {attachment_name:?}: \
                     sent with the relay's own"
                );
            }
            let queued = match shared
                .mail
                .admit(link.peer.ip(), mails.sent, Instant::now())
            {
                Ok(queued) => queued,
                Err(message) => return not_sent(message),
            };
            mails.sent += 1;
            let from = shared.mail.from.clone();
            let link = link.clone();
            let who = who.to_owned();
            shared.tracker.spawn(async move {
                let turn = queued.turn().await;
                let result = crate::mail::forward_checked(&smtp, &from, &to, checked).await;
                drop((turn, queued));
                let reply = match result {
                    Ok(()) => {
                        info!(target: TARGET, "{who}: activation request e-mailed to {to}");
                        Control::MailSent { to }.frame(pin, ref_id)
                    }
                    Err(message) => {
                        warn!(target: TARGET, "{who}: activation request for {to} not sent: {message}");
                        ErrorReport {
                            code: ErrorReport::MAIL_NOT_SENT.to_owned(),
                            message,
                        }
                        .frame(pin, ref_id)
                    }
                };
                let _ = link.push(reply);
            });
        }
        Ok(Control::Ping) => {
            let _ = link.push(Control::Pong.frame(frame.pin, frame.ref_id));
        }
        Ok(Control::Pong) => {}
        Ok(Control::ServerInfo {
            server_name,
            version,
        }) => {
            info!(target: TARGET, "{who} updated its information: server {server_name:?} version {version:?}");
        }
        Ok(other) => debug!(target: TARGET, "{who} sent {other:?} on an open link; ignored"),
        Err(e) => warn!(target: TARGET, "{who} sent an unreadable control packet ({e}); ignored"),
    }
}

async fn write_loop<S>(
    writer: WriteHalf<S>,
    mut rx: mpsc::Receiver<Frame>,
    cancel: CancellationToken,
    who: String,
) where
    S: AsyncWrite,
{
    let mut out = BufWriter::new(writer);
    loop {
        let first = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            frame = rx.recv() => match frame {
                Some(frame) => frame,
                None => break,
            },
        };
        let written = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            written = write_batch(&mut out, first, &mut rx) => written,
        };
        if let Err(e) = written {
            info!(target: TARGET, "writing to {who} failed: {e}");
            cancel.cancel();
            break;
        }
    }
    let _ = timeout(CLOSE_GRACE, out.shutdown()).await;
}

/// Writes `first` and whatever else is queued (up to a batch), then flushes.
async fn write_batch<W: AsyncWrite + Unpin>(
    out: &mut BufWriter<W>,
    first: Frame,
    rx: &mut mpsc::Receiver<Frame>,
) -> Result<(), ReadError> {
    write_frame(out, &first).await?;
    let mut batch = VecDeque::new();
    while batch.len() < 64 {
        match rx.try_recv() {
            Ok(frame) => batch.push_back(frame),
            Err(_) => break,
        }
    }
    for frame in batch {
        write_frame(out, &frame).await?;
    }
    out.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_port_fits_in_what_the_server_port_leaves() {
        let config = RelayConfig {
            max_server_connections: 100,
            max_device_connections: 10_000,
            ..RelayConfig::default()
        };
        assert_eq!(device_budget(&config, None), 10_000);
        assert_eq!(device_budget(&config, Some(1_000_000)), 10_000);
        assert_eq!(device_budget(&config, Some(1024)), 1024 - 100 - SPARE_FILES);
        assert_eq!(device_budget(&config, Some(10)), 1);
    }
}
