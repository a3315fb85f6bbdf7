//! The BlackBerry Dispatcher.
//!
//! Seed: it compresses and encrypts all data sent to the smartphones,
//! decrypts and decompresses all data received from them, manages the
//! connection to the BlackBerry Infrastructure through the Router, assigns
//! users to Messaging Agents and directs data traffic between components.
//!
//! - Outbound ([`Dispatcher::send`]): seal each message for its device
//!   (`bramble_proto::envelope`, the device's current transport key), write
//!   it to the outbound queue in the Configuration Database, then hand its
//!   packets to the Router. A message stays queued until the device
//!   confirms delivery; it is sent again when the SRP link returns
//!   (if the relay may not have it), when a LAN connection that carried it
//!   drops, and when no confirmation arrives within the resend timeout
//!   (seed: four hours). At-least-once on the wire; the device removes
//!   duplicates by RefID, so its user sees each message once.
//! - Inbound ([`Dispatcher::run`]): reassemble packets, open envelopes with
//!   the device's keys (current, pending or previous, by the key id in the
//!   header), and direct each content type to the component registered for
//!   it ([`Dispatcher::register`]). A message that cannot be decrypted is
//!   ignored and the device is told (seed: "the BlackBerry Enterprise Server
//!   ignores the message and sends an error message to the smartphone").
//!   Before a message is handed over, its (PIN, key id, content type,
//!   RefID) is recorded in the replay window
//!   ([`crate::db::models::replay`]); a message recorded before is a
//!   replay or a resend and is not acted on as new: it goes, marked
//!   [`Inbound::repeated`], only to components that asked for repeats
//!   ([`Dispatcher::register_with_repeats`]).
//! - [`assignment`]: users to Messaging Agents, at most 500 each by default.
//! - [`keys`]: the transport keys of devices, cached from the database.
//! - `relay_keys`: the keys' relay keys, registered with the relay so it
//!   admits only devices that prove their key.

pub mod assignment;
pub mod keys;
mod relay_keys;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bramble_proto::control::{Control, ErrorReport, TransportStatus};
use bramble_proto::envelope::{self, EnvelopeError};
use bramble_proto::frame::{self, Frame, Message, Reassembler};
use bramble_proto::{ContentType, Pin, RefId};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::db::ids::OutboundId;
use crate::db::models::outbound::{NewOutbound, OutboundPacket, OutboundState};
use crate::db::models::replay::{Arrival, ReplayWindow};
use crate::db::{Database, DbError};
use crate::router::{RouterEvent, RouterHandle, Via};
use keys::KeyCache;

/// Dispatcher settings (`[dispatcher]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DispatcherSettings {
    /// Send again when a device has not confirmed within this time (seed: four hours).
    pub resend_after_secs: u64,
    /// Give up on a message not confirmed within this time; it counts as expired.
    pub expire_after_secs: u64,
    /// Largest message accepted from a device, after decompression.
    pub max_message_bytes: usize,
    /// How often the queue is checked for messages to resend or expire.
    pub resend_check_secs: u64,
}

impl Default for DispatcherSettings {
    fn default() -> Self {
        DispatcherSettings {
            resend_after_secs: 4 * 60 * 60,
            expire_after_secs: 7 * 24 * 60 * 60,
            max_message_bytes: frame::DEFAULT_MAX_MESSAGE,
            resend_check_secs: 60,
        }
    }
}

/// A decrypted message from a device, for the component that handles its
/// content type.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub pin: Pin,
    pub ref_id: RefId,
    pub content_type: ContentType,
    pub plaintext: Vec<u8>,
    pub via: Via,
    /// The server has had this message before (same PIN, key, content
    /// type and RefID): a replay, or the device sending it again. Only
    /// components registered with [`Dispatcher::register_with_repeats`]
    /// receive such messages, and must not act on them as new.
    pub repeated: bool,
}

/// A message for a device.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub pin: Pin,
    pub content_type: ContentType,
    pub plaintext: Vec<u8>,
    /// "Forward with priority".
    pub priority: bool,
    /// Keep the caller's RefID (e.g. the Messaging Agent's); else a new one.
    pub ref_id: Option<RefId>,
}

/// What happened to outbound messages; for statistics, the console and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryEvent {
    Sent {
        pin: Pin,
        ref_id: RefId,
        via: Via,
    },
    Relay {
        pin: Pin,
        ref_id: RefId,
        status: TransportStatus,
    },
    /// The device confirmed: the message is delivered.
    Confirmed {
        pin: Pin,
        ref_id: RefId,
    },
    Resent {
        pin: Pin,
        ref_id: RefId,
        reason: ResendReason,
    },
    Expired {
        pin: Pin,
        ref_id: RefId,
    },
    /// The device opened a message and refused it (e.g. an IT policy not
    /// signed by its domain), in its own words; it is no longer sent.
    Refused {
        pin: Pin,
        ref_id: RefId,
        code: String,
        message: String,
    },
    /// A device's message could not be decrypted; the device was told.
    Undecryptable {
        pin: Pin,
        ref_id: RefId,
    },
    /// A device's message had been received before (a replay or a resend):
    /// it was not handed over as new.
    Repeated {
        pin: Pin,
        ref_id: RefId,
        content_type: ContentType,
    },
    /// A device and the server now share a transport key: activation
    /// (Messaging Agent, seed step 8), after which the Policy Service sends
    /// the IT policy and service books (step 9).
    KeyEstablished {
        pin: Pin,
        user: crate::db::ids::UserId,
    },
    /// An IT policy, or where one applies, changed: the Policy Service
    /// pushes the policy to every device whose resolved policy differs.
    PolicyChanged,
    /// The console asks for a user's IT policy or service books to be sent
    /// again to the user's activated device, now.
    ResendRequested {
        pin: Pin,
        user: crate::db::ids::UserId,
        what: Resend,
    },
}

/// What an administrator can have sent again to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// The user's resolved IT policy, signed.
    Policy,
    /// The service books of the services enabled for the user.
    ServiceBooks,
}

impl Resend {
    pub fn parse(text: &str) -> Option<Resend> {
        match text {
            "policy" => Some(Resend::Policy),
            "service_books" => Some(Resend::ServiceBooks),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Resend::Policy => "policy",
            Resend::ServiceBooks => "service_books",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResendReason {
    LinkRestored,
    LanClosed,
    NoConfirmation,
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("device {0} has no transport key; it must be activated first")]
    NoKey(Pin),
    #[error("cannot encrypt the message: {0}")]
    Envelope(#[from] EnvelopeError),
    #[error("cannot packetize the message: {0}")]
    Frame(#[from] frame::FrameError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("device {0} is not reachable now (no relay link and not on the LAN)")]
    NoPath(Pin),
    /// The shared queue write a send waited for did not happen; nothing of
    /// it was stored.
    #[error("the message was not queued: {0}")]
    NotQueued(String),
}

/// A send waiting for the group commit.
struct PendingWrite {
    queued: Vec<NewOutbound>,
    record: RecordFn,
    done: tokio::sync::oneshot::Sender<Result<(), DispatchError>>,
}

type RecordFn = Box<dyn FnOnce(&mut crate::db::Conn, &[RefId]) -> Result<(), DbError> + Send>;

struct Inner {
    pending: Mutex<Vec<PendingWrite>>,
    commit_turn: tokio::sync::Mutex<()>,
    db: Database,
    clock: Clock,
    settings: DispatcherSettings,
    keys: KeyCache,
    router: RouterHandle,
    handlers: RwLock<HashMap<ContentType, Handler>>,
    reassembler: Mutex<Reassembler>,
    events: broadcast::Sender<DeliveryEvent>,
}

/// A component's inbox for one content type.
#[derive(Clone)]
struct Handler {
    tx: mpsc::Sender<Inbound>,
    /// Receives repeated messages too (marked), to answer them.
    repeats: bool,
}

/// A message from a device waiting for the replay window's write before
/// it is handed over.
struct Arrived {
    inbound: Inbound,
    /// `None` for what is not recorded (activation: plain, no key).
    record: Option<Arrival>,
}

/// How often rows of keys no longer held leave the replay window.
const REPLAY_PRUNE_SECS: u64 = 60 * 60;

/// The Dispatcher; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl Dispatcher {
    pub fn new(
        db: Database,
        keys: KeyCache,
        router: RouterHandle,
        settings: DispatcherSettings,
        clock: Clock,
    ) -> Dispatcher {
        let reassembler = Reassembler::new(settings.max_message_bytes, 4096);
        let (events, _) = broadcast::channel(4096);
        Dispatcher {
            inner: Arc::new(Inner {
                pending: Mutex::new(Vec::new()),
                commit_turn: tokio::sync::Mutex::new(()),
                db,
                clock,
                settings,
                keys,
                router,
                handlers: RwLock::new(HashMap::new()),
                reassembler: Mutex::new(reassembler),
                events,
            }),
        }
    }

    /// Delivery events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DeliveryEvent> {
        self.inner.events.subscribe()
    }

    pub fn keys(&self) -> &KeyCache {
        &self.inner.keys
    }

    pub fn router(&self) -> &RouterHandle {
        &self.inner.router
    }

    /// The component for `content_type` receives decrypted messages from
    /// devices here. A later registration replaces an earlier one.
    /// Messages the server has had before are not delivered
    /// ([`Inbound::repeated`]).
    pub fn register(&self, content_type: ContentType, capacity: usize) -> mpsc::Receiver<Inbound> {
        self.register_as(content_type, capacity, false)
    }

    /// [`Dispatcher::register`], and messages the server has had before
    /// are delivered too, marked [`Inbound::repeated`], for a component
    /// that answers a resend (the Messaging Agent answers a `compose` sent
    /// again with what became of it).
    pub fn register_with_repeats(
        &self,
        content_type: ContentType,
        capacity: usize,
    ) -> mpsc::Receiver<Inbound> {
        self.register_as(content_type, capacity, true)
    }

    fn register_as(
        &self,
        content_type: ContentType,
        capacity: usize,
        repeats: bool,
    ) -> mpsc::Receiver<Inbound> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        if let Ok(mut handlers) = self.inner.handlers.write() {
            handlers.insert(content_type, Handler { tx, repeats });
        }
        rx
    }

    /// Deletes the replay window's rows of keys no device holds any more
    /// (after a key change, a reactivation, a wipe, a device removed);
    /// returns how many. Runs every hour; a message under such a key does
    /// not open any more, so its row is not needed.
    pub async fn prune_replays(&self) -> Result<usize, DispatchError> {
        Ok(self.inner.db.write(ReplayWindow::prune).await?)
    }

    /// Whether a component has registered for `content_type` (packets of
    /// a type nobody handles yet are dropped; a restarted server's callers
    /// wait for this).
    pub fn handles(&self, content_type: ContentType) -> bool {
        self.inner
            .handlers
            .read()
            .map(|h| h.contains_key(&content_type))
            .unwrap_or(false)
    }

    fn emit(&self, event: DeliveryEvent) {
        let _ = self.inner.events.send(event);
    }

    /// Tells every subscriber about something a component did (e.g.
    /// [`DeliveryEvent::KeyEstablished`]).
    pub fn announce(&self, event: DeliveryEvent) {
        self.emit(event);
    }

    /// Seals, queues and sends one message; returns its RefID once the
    /// message is safely queued (it will reach the device even if no path
    /// is up right now).
    pub async fn send(&self, message: Outgoing) -> Result<RefId, DispatchError> {
        let mut ids = self.send_all(vec![message]).await?;
        ids.pop()
            .ok_or_else(|| DispatchError::NotQueued("nothing was queued".into()))
    }

    /// [`Dispatcher::send`] for many messages with one database write.
    pub async fn send_all(&self, messages: Vec<Outgoing>) -> Result<Vec<RefId>, DispatchError> {
        self.send_recorded(messages, |_, _| Ok(())).await
    }

    /// [`Dispatcher::send_all`], and `record` in the same database
    /// transaction as the queue write (given the RefIDs, in order): a
    /// component's own record of what it sent (e.g. the Messaging Agent's
    /// position in a mailbox) is written if and only if the messages are
    /// queued, so a crash between the two can neither lose nor repeat one.
    pub async fn send_recorded<F>(
        &self,
        messages: Vec<Outgoing>,
        record: F,
    ) -> Result<Vec<RefId>, DispatchError>
    where
        F: FnOnce(&mut crate::db::Conn, &[RefId]) -> Result<(), DbError> + Send + 'static,
    {
        let mut queued = Vec::with_capacity(messages.len());
        for m in messages {
            let ring = self
                .inner
                .keys
                .ring(m.pin)
                .await?
                .ok_or(DispatchError::NoKey(m.pin))?;
            let key = ring.current().ok_or(DispatchError::NoKey(m.pin))?;
            let ref_id = m.ref_id.unwrap_or_else(RefId::random);
            let sealed = envelope::seal(key, m.content_type, m.pin, ref_id, &m.plaintext)?;
            queued.push(NewOutbound {
                ref_id,
                pin: m.pin,
                content_type: m.content_type,
                priority: m.priority,
                envelope: sealed,
            });
        }
        let ref_ids: Vec<RefId> = queued.iter().map(|q| q.ref_id).collect();
        let (done, result) = tokio::sync::oneshot::channel();
        if let Ok(mut pending) = self.inner.pending.lock() {
            pending.push(PendingWrite {
                queued,
                record: Box::new(record),
                done,
            });
        }
        self.commit_pending().await?;
        match result.await {
            Ok(outcome) => outcome.map(|()| ref_ids),
            Err(_) => Err(DispatchError::NotQueued(
                "the queue write was abandoned".into(),
            )),
        }
    }

    /// Group commit: whoever gets the turn writes every send waiting at
    /// that moment in one transaction (each in its own savepoint, so one
    /// failing record fails only its own send), tells each caller, then
    /// hands all the messages to the Router with one state update. Under
    /// load this turns one transaction per message into one per batch.
    async fn commit_pending(&self) -> Result<(), DispatchError> {
        let _turn = self.inner.commit_turn.lock().await;
        let batch: Vec<PendingWrite> = match self.inner.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => Vec::new(),
        };
        if batch.is_empty() {
            return Ok(());
        }
        let at = self.inner.clock.now_db();
        let (writes, waiters): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|p| ((p.queued, p.record), p.done))
            .unzip();
        let outcome = self
            .inner
            .db
            .write(move |conn| {
                crate::db::write_transaction(conn, |conn| {
                    Ok(writes
                        .into_iter()
                        .map(|(queued, record)| {
                            let ref_ids: Vec<RefId> = queued.iter().map(|q| q.ref_id).collect();
                            let result = crate::db::write_transaction(conn, |conn| {
                                NewOutbound::save_all(conn, &queued, at)?;
                                record(conn, &ref_ids)
                            });
                            (queued, result)
                        })
                        .collect::<Vec<_>>())
                })
            })
            .await;
        let results = match outcome {
            Ok(results) => results,
            Err(e) => {
                let text = e.to_string();
                for done in waiters {
                    let _ = done.send(Err(DispatchError::NotQueued(text.clone())));
                }
                return Err(e.into());
            }
        };
        let mut to_send = Vec::new();
        for ((queued, result), done) in results.into_iter().zip(waiters) {
            if result.is_ok() {
                to_send.extend(queued);
            }
            let _ = done.send(result.map_err(DispatchError::Db));
        }
        self.transmit(
            to_send
                .into_iter()
                .map(|q| (q.pin, q.ref_id, q.content_type, q.priority, q.envelope)),
        )
        .await
    }

    /// Hands queued messages to the Router and records where they went.
    async fn transmit(
        &self,
        messages: impl Iterator<Item = (Pin, RefId, ContentType, bool, Vec<u8>)>,
    ) -> Result<(), DispatchError> {
        let mut by_state: HashMap<&'static str, (OutboundState, Vec<RefId>)> = HashMap::new();
        for (pin, ref_id, content_type, priority, sealed) in messages {
            let flags = if priority { frame::FLAG_PRIORITY } else { 0 };
            let frames = frame::split(content_type, flags, pin, ref_id, &sealed)?;
            match self.inner.router.send(pin, frames).await {
                Ok(via) => {
                    let state = match via {
                        Via::Relay => OutboundState::AtRelay,
                        Via::Lan => OutboundState::SentLan,
                    };
                    by_state
                        .entry(state.as_str())
                        .or_insert((state, Vec::new()))
                        .1
                        .push(ref_id);
                    self.emit(DeliveryEvent::Sent { pin, ref_id, via });
                }
                Err(why) => {
                    debug!(target: "bramble::dispatcher", %pin, %ref_id, "not sent now ({why}); the message stays queued")
                }
            }
        }
        let at = self.inner.clock.now_db();
        for (_, (state, ref_ids)) in by_state {
            self.inner
                .db
                .write(move |conn| OutboundPacket::mark_sent(conn, &ref_ids, state, at))
                .await?;
        }
        Ok(())
    }

    /// Sends again the queued messages in `states` (all devices, or one).
    async fn resend(
        &self,
        states: &'static [OutboundState],
        pin: Option<Pin>,
        reason: ResendReason,
    ) -> Result<usize, DispatchError> {
        const PAGE: i64 = 500;
        let mut after = OutboundId(0);
        let mut total = 0;
        loop {
            // One device's queue is small: one read. The whole queue is paged.
            let batch = match pin {
                Some(pin) => {
                    self.inner
                        .db
                        .run(move |conn| OutboundPacket::find_by_pin(conn, pin, states))
                        .await?
                }
                None => {
                    self.inner
                        .db
                        .run(move |conn| OutboundPacket::find_in_states(conn, states, after, PAGE))
                        .await?
                }
            };
            let last_page = pin.is_some() || (batch.len() as i64) < PAGE;
            if let Some(last) = batch.last() {
                after = last.id;
            }
            total += batch.len();
            for p in &batch {
                self.emit(DeliveryEvent::Resent {
                    pin: p.pin,
                    ref_id: p.ref_id,
                    reason,
                });
            }
            self.transmit(
                batch
                    .into_iter()
                    .map(|p| (p.pin, p.ref_id, p.content_type, p.priority, p.envelope)),
            )
            .await?;
            if last_page {
                break;
            }
        }
        if total > 0 {
            info!(target: "bramble::dispatcher", count = total, ?reason, "messages sent again");
        }
        Ok(total)
    }

    /// Resends what waited longer than the resend timeout without a
    /// confirmation, and expires what is too old. Returns (resent, expired).
    pub async fn check_queue(&self) -> Result<(usize, usize), DispatchError> {
        let now = self.inner.clock.now_db();
        let expire_cutoff =
            now - time::Duration::seconds(self.inner.settings.expire_after_secs as i64);
        let expired = self
            .inner
            .db
            .write(move |conn| OutboundPacket::delete_created_before(conn, expire_cutoff))
            .await?;
        for p in &expired {
            warn!(target: "bramble::dispatcher", pin = %p.pin, ref_id = %p.ref_id, "message expired without a delivery confirmation");
            self.emit(DeliveryEvent::Expired {
                pin: p.pin,
                ref_id: p.ref_id,
            });
        }
        let resend_cutoff =
            now - time::Duration::seconds(self.inner.settings.resend_after_secs as i64);
        let mut resent = 0;
        loop {
            let due = self
                .inner
                .db
                .run(move |conn| OutboundPacket::find_due_for_resend(conn, resend_cutoff, 500))
                .await?;
            if due.is_empty() {
                break;
            }
            resent += due.len();
            for p in &due {
                self.emit(DeliveryEvent::Resent {
                    pin: p.pin,
                    ref_id: p.ref_id,
                    reason: ResendReason::NoConfirmation,
                });
            }
            let before = due.len();
            self.transmit(
                due.into_iter()
                    .map(|p| (p.pin, p.ref_id, p.content_type, p.priority, p.envelope)),
            )
            .await?;
            if !self.inner.router.is_link_up() || before < 500 {
                // Nothing more can move now; the link's return resends the rest.
                break;
            }
        }
        if resent > 0 {
            info!(target: "bramble::dispatcher", count = resent, "messages without a delivery confirmation sent again");
        }
        Ok((resent, expired.len()))
    }

    /// Handles the Router's events and the queue timers until `shutdown`.
    pub async fn run(
        self,
        mut events: mpsc::Receiver<RouterEvent>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut check = tokio::time::interval(Duration::from_secs(
            self.inner.settings.resend_check_secs.max(1),
        ));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(Duration::from_secs(REPLAY_PRUNE_SECS));
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = prune.tick() => {
                    match self.prune_replays().await {
                        Ok(0) => {}
                        Ok(n) => debug!(target: "bramble::dispatcher", rows = n, "replay window: rows of keys no longer held removed"),
                        Err(e) => warn!(target: "bramble::dispatcher", "pruning the replay window failed: {e}"),
                    }
                }
                _ = check.tick() => {
                    if let Err(e) = self.check_queue().await {
                        warn!(target: "bramble::dispatcher", "checking the outbound queue failed: {e}");
                    }
                }
                event = events.recv() => {
                    let Some(event) = event else { return Ok(()) };
                    // Take what else is waiting too: one database write for
                    // a batch of confirmations and relay reports.
                    let mut batch = vec![event];
                    while batch.len() < EVENT_BATCH {
                        match events.try_recv() {
                            Ok(event) => batch.push(event),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = self.handle_batch(batch).await {
                        warn!(target: "bramble::dispatcher", "{e}");
                    }
                }
            }
        }
    }

    /// Handles one event from the Router.
    pub async fn handle(&self, event: RouterEvent) -> Result<(), DispatchError> {
        self.handle_batch(vec![event]).await
    }

    /// Handles events in order; queue updates from packets are written
    /// together, before any link event that depends on them.
    pub async fn handle_batch(&self, events: Vec<RouterEvent>) -> Result<(), DispatchError> {
        let mut updates = Vec::new();
        let mut arrived = Vec::new();
        for event in events {
            match event {
                RouterEvent::Frame { frame, via } => {
                    self.inbound(frame, via, &mut updates, &mut arrived).await?
                }
                link => {
                    self.apply(std::mem::take(&mut updates), std::mem::take(&mut arrived))
                        .await?;
                    self.link_event(link).await?;
                }
            }
        }
        self.apply(updates, arrived).await
    }

    /// Writes queue updates and the replay window in one transaction, then
    /// tells subscribers and hands the messages that arrived over, in
    /// order. If the write fails nothing is handed over (a message cannot
    /// be told new from replayed): the device sends it again.
    async fn apply(
        &self,
        updates: Vec<QueueUpdate>,
        arrived: Vec<Arrived>,
    ) -> Result<(), DispatchError> {
        if updates.is_empty() && arrived.is_empty() {
            return Ok(());
        }
        let records: Vec<Option<Arrival>> = arrived.iter().map(|a| a.record).collect();
        let at = self.inner.clock.now_db();
        let (outcomes, new) = self
            .inner
            .db
            .write(move |conn| {
                crate::db::write_transaction(conn, |conn| {
                    let new = records
                        .iter()
                        .map(|record| match record {
                            Some(arrival) => ReplayWindow::record(conn, arrival, at),
                            None => Ok(true),
                        })
                        .collect::<Result<Vec<bool>, DbError>>()?;
                    let outcomes = updates
                        .into_iter()
                        .map(|update| {
                            let done = match &update {
                                QueueUpdate::Confirmed { pin, ref_id }
                                | QueueUpdate::Refused { pin, ref_id, .. } => {
                                    OutboundPacket::delete_confirmed(conn, *pin, *ref_id)?.is_some()
                                }
                                QueueUpdate::Relay {
                                    pin,
                                    ref_id,
                                    status,
                                } => match relay_state(*status) {
                                    Some(state) => {
                                        OutboundPacket::set_state(conn, *pin, *ref_id, state)?
                                    }
                                    None => false,
                                },
                            };
                            Ok((update, done))
                        })
                        .collect::<Result<Vec<_>, DbError>>()?;
                    Ok((outcomes, new))
                })
            })
            .await?;
        for (update, done) in outcomes {
            match update {
                QueueUpdate::Confirmed { pin, ref_id } if done => {
                    self.emit(DeliveryEvent::Confirmed { pin, ref_id })
                }
                QueueUpdate::Confirmed { pin, ref_id } => {
                    debug!(target: "bramble::dispatcher", %pin, %ref_id, "confirmation for a message no longer queued");
                }
                QueueUpdate::Refused {
                    pin,
                    ref_id,
                    report,
                } => {
                    warn!(target: "bramble::dispatcher", %pin, %ref_id, code = %report.code, "the device refused a message: {}", report.message);
                    self.emit(DeliveryEvent::Refused {
                        pin,
                        ref_id,
                        code: report.code,
                        message: report.message,
                    });
                }
                QueueUpdate::Relay {
                    pin,
                    ref_id,
                    status,
                } => {
                    if status == TransportStatus::UnknownPin {
                        warn!(target: "bramble::dispatcher", %pin, %ref_id, "the relay does not know this PIN");
                    }
                    self.emit(DeliveryEvent::Relay {
                        pin,
                        ref_id,
                        status,
                    });
                }
            }
        }
        for (mut arrived, new) in arrived.into_iter().zip(new) {
            arrived.inbound.repeated = !new;
            self.hand_over(arrived.inbound).await;
        }
        Ok(())
    }

    async fn link_event(&self, event: RouterEvent) -> Result<(), DispatchError> {
        match event {
            RouterEvent::LinkUp => {
                self.register_all_relay_keys().await;
                const AFTER_LINK: &[OutboundState] = &[
                    OutboundState::Queued,
                    OutboundState::AtRelay,
                    OutboundState::StoredAtRelay,
                ];
                self.resend(AFTER_LINK, None, ResendReason::LinkRestored)
                    .await?;
            }
            RouterEvent::LinkDown => {}
            RouterEvent::LanAttached(pin) => {
                const WAITING: &[OutboundState] =
                    &[OutboundState::Queued, OutboundState::StoredAtRelay];
                self.resend(WAITING, Some(pin), ResendReason::LinkRestored)
                    .await?;
            }
            RouterEvent::LanDetached(pin) => {
                const ON_LAN: &[OutboundState] = &[OutboundState::SentLan, OutboundState::Queued];
                self.resend(ON_LAN, Some(pin), ResendReason::LanClosed)
                    .await?;
            }
            RouterEvent::Frame { frame, via } => {
                let (mut updates, mut arrived) = (Vec::new(), Vec::new());
                self.inbound(frame, via, &mut updates, &mut arrived).await?;
                self.apply(updates, arrived).await?;
            }
        }
        Ok(())
    }

    async fn inbound(
        &self,
        frame: Frame,
        via: Via,
        updates: &mut Vec<QueueUpdate>,
        arrived: &mut Vec<Arrived>,
    ) -> Result<(), DispatchError> {
        if frame.content_type == ContentType::Control {
            if let Ok(Control::Transport { status }) = Control::from_frame(&frame) {
                updates.push(QueueUpdate::Relay {
                    pin: frame.pin,
                    ref_id: frame.ref_id,
                    status,
                });
            }
            return Ok(());
        }
        let message = {
            let Ok(mut reassembler) = self.inner.reassembler.lock() else {
                return Ok(());
            };
            match reassembler.push(frame) {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(()),
                Err(e) => {
                    warn!(target: "bramble::dispatcher", "dropped a partial message: {e}");
                    return Ok(());
                }
            }
        };
        if message.content_type == ContentType::Activation {
            // Plain: the device has no key yet, nothing to record by.
            arrived.push(Arrived {
                inbound: Inbound {
                    pin: message.pin,
                    ref_id: message.ref_id,
                    content_type: message.content_type,
                    plaintext: message.payload,
                    via,
                    repeated: false,
                },
                record: None,
            });
            return Ok(());
        }
        if message.content_type == ContentType::Error {
            let report = ErrorReport::from_payload(&message.payload);
            warn!(target: "bramble::dispatcher", pin = %message.pin, ref_id = %message.ref_id, ?report, "error reported about a message");
            return Ok(());
        }
        let plaintext = match self.open(&message).await {
            Ok(plaintext) => plaintext,
            Err(e) => {
                warn!(target: "bramble::dispatcher", pin = %message.pin, ref_id = %message.ref_id, "ignored a message that cannot be decrypted ({e}); telling the device");
                let report = ErrorReport {
                    code: ErrorReport::UNDECRYPTABLE.to_owned(),
                    message: "Your message could not be decrypted by the server and was not delivered. \
                              If this repeats, generate a new encryption key or reactivate the device."
                        .to_owned(),
                };
                let _ = self
                    .inner
                    .router
                    .send(message.pin, vec![report.frame(message.pin, message.ref_id)])
                    .await;
                self.emit(DeliveryEvent::Undecryptable {
                    pin: message.pin,
                    ref_id: message.ref_id,
                });
                return Ok(());
            }
        };
        if message.content_type == ContentType::DeliveryConfirmation {
            updates.push(QueueUpdate::Confirmed {
                pin: message.pin,
                ref_id: message.ref_id,
            });
            return Ok(());
        }
        if message.content_type == ContentType::Refusal {
            let report = ErrorReport::from_payload(&plaintext).unwrap_or_else(|e| ErrorReport {
                code: "REFUSED".to_owned(),
                message: format!("the device refused the message (its reason cannot be read: {e})"),
            });
            updates.push(QueueUpdate::Refused {
                pin: message.pin,
                ref_id: message.ref_id,
                report,
            });
            return Ok(());
        }
        // Confirmations and refusals above are not recorded: each can only
        // name a message already sent to the device, and acting on one
        // twice changes nothing. Everything else is, before it is acted on.
        arrived.push(Arrived {
            record: envelope::key_id(&message.payload)
                .ok()
                .map(|key_id| Arrival {
                    pin: message.pin,
                    key_id,
                    content_type: message.content_type,
                    ref_id: message.ref_id,
                }),
            inbound: Inbound {
                pin: message.pin,
                ref_id: message.ref_id,
                content_type: message.content_type,
                plaintext,
                via,
                repeated: false,
            },
        });
        Ok(())
    }

    /// Gives a message that arrived from a device to the component
    /// registered for its content type; a repeated one only to a component
    /// that asked for repeats.
    async fn hand_over(&self, inbound: Inbound) {
        let handler = self
            .inner
            .handlers
            .read()
            .ok()
            .and_then(|h| h.get(&inbound.content_type).cloned());
        if inbound.repeated {
            debug!(target: "bramble::dispatcher", pin = %inbound.pin, ref_id = %inbound.ref_id, content_type = ?inbound.content_type, "a message received before (replayed or sent again); not acted on as new");
            self.emit(DeliveryEvent::Repeated {
                pin: inbound.pin,
                ref_id: inbound.ref_id,
                content_type: inbound.content_type,
            });
        }
        match handler {
            Some(Handler { repeats: false, .. }) if inbound.repeated => {}
            Some(Handler { tx, .. }) => {
                let content_type = inbound.content_type;
                if tx.send(inbound).await.is_err() {
                    warn!(target: "bramble::dispatcher", ?content_type, "the component for this content type has stopped; message dropped");
                }
            }
            None => {
                warn!(target: "bramble::dispatcher", pin = %inbound.pin, content_type = ?inbound.content_type, "no component handles this content type yet; message dropped");
            }
        }
    }

    /// Sends one plain packet (activation) to a device now, without
    /// queueing: the exchange it belongs to is retried by the device.
    pub async fn send_plain(&self, frame: Frame) -> Result<Via, DispatchError> {
        let pin = frame.pin;
        self.inner
            .router
            .send(pin, vec![frame])
            .await
            .map_err(|_| DispatchError::NoPath(pin))
    }

    async fn open(&self, message: &Message) -> Result<Vec<u8>, EnvelopeError> {
        let ring = match self.inner.keys.ring(message.pin).await {
            Ok(Some(ring)) => ring,
            _ => {
                return Err(EnvelopeError::UnknownKey(
                    envelope::key_id(&message.payload).unwrap_or(0),
                ))
            }
        };
        envelope::open(
            |id| ring.by_id(id),
            message.content_type,
            message.pin,
            message.ref_id,
            &message.payload,
            self.inner.settings.max_message_bytes,
        )
    }
}

/// A change to the outbound queue learned from a packet.
#[derive(Debug, Clone)]
enum QueueUpdate {
    /// The device confirmed delivery.
    Confirmed { pin: Pin, ref_id: RefId },
    /// The device refused the message: it leaves the queue.
    Refused {
        pin: Pin,
        ref_id: RefId,
        report: ErrorReport,
    },
    /// The relay reported what it did with a message.
    Relay {
        pin: Pin,
        ref_id: RefId,
        status: TransportStatus,
    },
}

/// Router events handled per database write, at most.
const EVENT_BATCH: usize = 512;

/// The queue state a relay report means.
fn relay_state(status: TransportStatus) -> Option<OutboundState> {
    match status {
        TransportStatus::DeliveredToDevice => Some(OutboundState::DeliveredToDevice),
        TransportStatus::StoredForOfflineDevice => Some(OutboundState::StoredAtRelay),
        // The relay dropped it: back to queued, so the next chance sends it.
        TransportStatus::Expired | TransportStatus::StoreFull => Some(OutboundState::Queued),
        TransportStatus::UnknownPin => None,
    }
}

#[cfg(test)]
mod tests;
