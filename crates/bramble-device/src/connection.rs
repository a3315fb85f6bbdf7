//! A running link: one background task reads packets, reassembles,
//! decrypts, de-duplicates and confirms; callers take messages and error
//! reports from small queues and send through a shared writer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bramble_proto::activation::ActivationMessage;
use bramble_proto::control::{Control, ErrorReport};
use bramble_proto::envelope::{self, EnvelopeError, TransportKey};
use bramble_proto::frame::{split, Frame, FrameError, Message, Reassembler, MAX_PAYLOAD};
use bramble_proto::io::{read_frame, ReadError};
use bramble_proto::policy::{
    CommandDocument, ServiceBooks, Signed, SignedError, KIND_ADMIN_COMMAND, KIND_IT_POLICY,
};
use bramble_proto::{ContentType, Pin, RefId};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::device::{DeviceInner, Path};
use crate::keys::KeyStore;
use crate::DeviceError;

/// Messages waiting for [`Connection::recv`]; when full the link stops
/// reading (back-pressure to the sender) rather than drop or grow.
pub const INBOX_LEN: usize = 16;
/// Error reports waiting for [`Connection::next_error`]; when full the
/// oldest is dropped (they are counted in [`DeviceStats::errors`] anyway).
pub const ERROR_QUEUE_LEN: usize = 32;
/// Messages half-received at once.
const MAX_PARTIALS: usize = 8;
/// A message whose fragments stop arriving is forgotten after this long.
const PARTIAL_TTL: Duration = Duration::from_secs(300);
/// Envelopes at least this large are opened or sealed on the blocking
/// pool, so a big message does not stall other links on the runtime.
const OFFLOAD_FROM: usize = 128 * 1024;

/// A message the device has shown its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub ref_id: RefId,
    pub content_type: ContentType,
    pub plaintext: Vec<u8>,
    pub received_at: Instant,
}

/// Counters of one link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// New messages surfaced to [`Connection::recv`].
    pub received: u64,
    /// Messages that opened but whose RefID had been shown already.
    pub duplicates: u64,
    /// Delivery confirmations written (for new messages and duplicates).
    pub confirmations_sent: u64,
    /// Envelopes that did not open (unknown key, wrong key, altered);
    /// never confirmed.
    pub undecryptable: u64,
    /// Error packets received.
    pub errors: u64,
    /// Messages sent with [`Connection::send`].
    pub sent: u64,
    /// Authenticated delivery confirmations received from the server.
    pub confirmations_received: u64,
    /// Packets skipped whole (unknown type or flags, bad fragment
    /// position) and fragments dropped by the reassembler.
    pub malformed: u64,
    /// IT policies and commands refused: bad signature, or not signed by
    /// the domain that activated the device. Never confirmed.
    pub rejected: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    duplicates: AtomicU64,
    confirmations_sent: AtomicU64,
    undecryptable: AtomicU64,
    errors: AtomicU64,
    sent: AtomicU64,
    confirmations_received: AtomicU64,
    malformed: AtomicU64,
    rejected: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A plain packet about activation: from the relay (the request was
/// e-mailed) or from the server (the exchange).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plain {
    MailSent { to: String },
    Activation(ActivationMessage),
}

/// Plain activation packets waiting for [`Connection::next_plain`].
const PLAIN_QUEUE_LEN: usize = 16;

#[derive(Default)]
struct Queues {
    messages: VecDeque<Received>,
    errors: VecDeque<(RefId, ErrorReport)>,
    plain: VecDeque<(RefId, Plain)>,
    /// Set once the reading task has stopped: why.
    end: Option<Result<(), DeviceError>>,
}

/// The state of one link shared by its task and its [`Connection`].
struct Link {
    pin: Pin,
    writer: tokio::sync::Mutex<Option<OwnedWriteHalf>>,
    write_timeout: Duration,
    queues: Mutex<Queues>,
    /// A message, an error report or the end arrived.
    arrived: Notify,
    /// A message was taken from a full inbox.
    space: Notify,
    stats: Counters,
}

enum Pushed {
    New,
    Duplicate,
}

impl Link {
    fn queues(&self) -> MutexGuard<'_, Queues> {
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes packets back to back; a failure leaves the writer unusable
    /// (half a packet may be on the wire).
    async fn write(&self, frames: &[Frame]) -> Result<(), DeviceError> {
        let mut guard = self.writer.lock().await;
        let writer = guard.as_mut().ok_or(DeviceError::Closed)?;
        let mut bytes = Vec::new();
        let mut result = Ok(());
        for frame in frames {
            bytes.clear();
            if let Err(e) = frame.encode_into(&mut bytes) {
                // Nothing of this packet was written; the link is fine.
                return Err(e.into());
            }
            result = match tokio::time::timeout(self.write_timeout, writer.write_all(&bytes)).await
            {
                Err(_) => Err(DeviceError::WriteTimeout(self.write_timeout)),
                Ok(Err(e)) => Err(e.into()),
                Ok(Ok(())) => Ok(()),
            };
            if result.is_err() {
                break;
            }
        }
        if result.is_err() {
            *guard = None;
        }
        result
    }

    /// Queues a new message, waiting while the inbox is full; a RefID
    /// already shown is not queued.
    async fn push_message(&self, message: Received, device: &DeviceInner) -> Pushed {
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut queues = self.queues();
                if queues.messages.len() < INBOX_LEN {
                    if !device.seen().insert(message.ref_id.0) {
                        return Pushed::Duplicate;
                    }
                    queues.messages.push_back(message);
                    drop(queues);
                    self.arrived.notify_waiters();
                    return Pushed::New;
                }
            }
            space.await;
        }
    }

    fn push_plain(&self, ref_id: RefId, plain: Plain) {
        let mut queues = self.queues();
        if queues.plain.len() >= PLAIN_QUEUE_LEN {
            warn!(pin = %self.pin, "activation queue full; oldest packet dropped");
            queues.plain.pop_front();
        }
        queues.plain.push_back((ref_id, plain));
        drop(queues);
        self.arrived.notify_waiters();
    }

    fn push_error(&self, ref_id: RefId, report: ErrorReport) {
        let mut queues = self.queues();
        if queues.errors.len() >= ERROR_QUEUE_LEN {
            if let Some((old, dropped)) = queues.errors.pop_front() {
                warn!(pin = %self.pin, ref_id = %old, code = %dropped.code, "error queue full; oldest report dropped");
            }
        }
        queues.errors.push_back((ref_id, report));
        drop(queues);
        self.arrived.notify_waiters();
    }

    fn finish(&self, result: Result<(), DeviceError>) {
        self.queues().end = Some(result);
        self.arrived.notify_waiters();
    }

    /// Waits until `take` finds something, or returns `None` once the link
    /// has ended and nothing is left.
    async fn wait_for<T>(&self, mut take: impl FnMut(&mut Queues) -> Option<T>) -> Option<T> {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let mut queues = self.queues();
                if let Some(item) = take(&mut queues) {
                    return Some(item);
                }
                if queues.end.is_some() {
                    return None;
                }
            }
            arrived.await;
        }
    }
}

/// A link that is up. Dropping it stops the link at once; [`close`]
/// also tells the peer.
///
/// [`close`]: Connection::close
pub struct Connection {
    link: Arc<Link>,
    device: Arc<DeviceInner>,
    path: Path,
    /// The relay's challenge of this link's handshake (relay path only),
    /// for [`Connection::prove_key`].
    relay_nonce: Option<String>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("pin", &self.link.pin)
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub(crate) fn start(
        device: Arc<DeviceInner>,
        path: Path,
        reader: OwnedReadHalf,
        writer: OwnedWriteHalf,
        relay_nonce: Option<String>,
    ) -> Connection {
        let link = Arc::new(Link {
            pin: device.config.pin,
            writer: tokio::sync::Mutex::new(Some(writer)),
            write_timeout: device.config.write_timeout,
            queues: Mutex::new(Queues::default()),
            arrived: Notify::new(),
            space: Notify::new(),
            stats: Counters::default(),
        });
        let task = tokio::spawn(run(reader, link.clone(), device.clone()));
        Connection {
            link,
            device,
            path,
            relay_nonce,
            task: Some(task),
        }
    }

    /// Proves the device's current transport key to the relay on this
    /// link, which then carries all its traffic: for a link opened
    /// activation-only, once activation has given the device a key. The
    /// relay answers `welcome`, or `refused` and closes the link.
    pub async fn prove_key(&self) -> Result<(), DeviceError> {
        let Some(nonce) = self.relay_nonce.as_deref() else {
            return Err(DeviceError::Unexpected(
                "only a link to the relay proves the key to it".to_owned(),
            ));
        };
        let proof = {
            let keys = self.device.keys();
            let key = keys.current().ok_or(DeviceError::NoKey)?;
            crate::device::relay_proof(key, self.link.pin, nonce)?
        };
        self.link
            .write(&[proof.frame(self.link.pin, RefId(0))])
            .await
    }

    pub fn path(&self) -> Path {
        self.path
    }

    /// The next new message, in arrival order; `None` once the link has
    /// ended and every message has been taken. Duplicates (by RefID) are
    /// confirmed again on the wire but never returned.
    ///
    /// Cancel-safe: a message is only taken when this returns it.
    pub async fn recv(&self) -> Option<Received> {
        let message = self
            .link
            .wait_for(|queues| {
                let message = queues.messages.pop_front();
                if message.is_some() && queues.messages.is_empty() {
                    // An idle device keeps no inbox memory.
                    queues.messages.shrink_to_fit();
                }
                message
            })
            .await;
        if message.is_some() {
            self.link.space.notify_one();
        }
        message
    }

    /// The next error packet from the server or relay (the RefID it is
    /// about and the report), such as `UNDECRYPTABLE` for a message the
    /// server could not open; `None` once the link has ended and every
    /// report has been taken. Cancel-safe.
    pub async fn next_error(&self) -> Option<(RefId, ErrorReport)> {
        self.link
            .wait_for(|queues| {
                let report = queues.errors.pop_front();
                if report.is_some() && queues.errors.is_empty() {
                    queues.errors.shrink_to_fit();
                }
                report
            })
            .await
    }

    /// The next plain activation packet (from the relay or the server);
    /// `None` once the link has ended and none is left. Cancel-safe.
    pub async fn next_plain(&self) -> Option<(RefId, Plain)> {
        self.link.wait_for(|queues| queues.plain.pop_front()).await
    }

    /// Writes one plain packet (a control message for the relay, or an
    /// activation message for the server).
    pub async fn send_plain(&self, frame: Frame) -> Result<(), DeviceError> {
        if frame.content_type.is_encrypted() || frame.pin != self.link.pin {
            return Err(DeviceError::NotAMessage(frame.content_type));
        }
        self.link.write(&[frame]).await
    }

    /// Seals `plaintext` with the current key for (`content_type`, this
    /// device's PIN, `ref_id`), splits it into packets and writes them.
    pub async fn send(
        &self,
        content_type: ContentType,
        ref_id: RefId,
        plaintext: &[u8],
    ) -> Result<(), DeviceError> {
        if !content_type.is_encrypted() {
            return Err(DeviceError::NotAMessage(content_type));
        }
        let limit = self.device.config.max_message;
        if plaintext.len() > limit {
            return Err(DeviceError::TooLarge {
                size: plaintext.len(),
                limit,
            });
        }
        if self.is_closed() {
            return Err(DeviceError::Closed);
        }
        let pin = self.link.pin;
        let sealed = if plaintext.len() < OFFLOAD_FROM {
            let keys = self.device.keys();
            let sealed = seal_current(&keys, content_type, pin, ref_id, plaintext);
            drop(keys);
            sealed
        } else {
            let keys = self.device.keys().clone();
            let plaintext = plaintext.to_vec();
            tokio::task::spawn_blocking(move || {
                seal_current(&keys, content_type, pin, ref_id, &plaintext)
            })
            .await
            .unwrap_or_else(|e| Err(DeviceError::Envelope(EnvelopeError::Crypto(e.to_string()))))
        }?;
        let frames = split(content_type, 0, pin, ref_id, &sealed)?;
        self.link.write(&frames).await?;
        bump(&self.link.stats.sent);
        Ok(())
    }

    pub fn stats(&self) -> DeviceStats {
        let s = &self.link.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DeviceStats {
            received: get(&s.received),
            duplicates: get(&s.duplicates),
            confirmations_sent: get(&s.confirmations_sent),
            undecryptable: get(&s.undecryptable),
            errors: get(&s.errors),
            sent: get(&s.sent),
            confirmations_received: get(&s.confirmations_received),
            malformed: get(&s.malformed),
            rejected: get(&s.rejected),
        }
    }

    /// Whether the link has ended (the peer closed it or it broke).
    pub fn is_closed(&self) -> bool {
        self.link.queues().end.is_some()
    }

    /// Waits for the link to end: `Ok` when the peer closed it cleanly
    /// between packets, otherwise why it broke (a malformed or truncated
    /// packet, a failed write, `refused` from the peer).
    pub async fn closed(&self) -> Result<(), DeviceError> {
        let end = self.link.wait_for(|queues| queues.end.clone()).await;
        end.unwrap_or(Err(DeviceError::Closed))
    }

    /// Ends the link: shuts down the sending side (the peer reads
    /// end-of-stream) and stops the task.
    pub async fn close(mut self) {
        if let Some(mut writer) = self.link.writer.lock().await.take() {
            let _ = tokio::time::timeout(self.link.write_timeout, writer.shutdown()).await;
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn seal_current(
    keys: &KeyStore,
    content_type: ContentType,
    pin: Pin,
    ref_id: RefId,
    plaintext: &[u8],
) -> Result<Vec<u8>, DeviceError> {
    let key = keys.current().ok_or(DeviceError::NoKey)?;
    Ok(envelope::seal(key, content_type, pin, ref_id, plaintext)?)
}

/// Opens an envelope with the key its header names; returns the plaintext
/// and that key's id.
fn open_with(
    keys: &KeyStore,
    content_type: ContentType,
    pin: Pin,
    ref_id: RefId,
    payload: &[u8],
    max: usize,
) -> Result<(Vec<u8>, u32), EnvelopeError> {
    let plaintext = envelope::open(|id| keys.get(id), content_type, pin, ref_id, payload, max)?;
    Ok((plaintext, envelope::key_id(payload)?))
}

async fn open_message(
    device: &DeviceInner,
    message: Message,
) -> Result<(Vec<u8>, u32), EnvelopeError> {
    let (content_type, ref_id) = (message.content_type, message.ref_id);
    // This device's PIN, not the header's: the envelope binds the PIN, so a
    // packet meant for another device does not open here.
    let pin = device.config.pin;
    let max = device.config.max_message;
    if message.payload.len() < OFFLOAD_FROM {
        let keys = device.keys();
        let opened = open_with(&keys, content_type, pin, ref_id, &message.payload, max);
        drop(keys);
        return opened;
    }
    let keys = device.keys().clone();
    tokio::task::spawn_blocking(move || {
        open_with(&keys, content_type, pin, ref_id, &message.payload, max)
    })
    .await
    .unwrap_or_else(|e| Err(EnvelopeError::Crypto(e.to_string())))
}

/// An IT policy or admin command must carry a valid signature; the first
/// policy's domain key is kept, and later documents must be signed by it
/// (seed step 10). It must also be signed for this use: its kind is the
/// packet's content type, this device is a target, and it is within its
/// validity ([`Signed::check_for`]). A document not `shown_before` (the
/// device has not confirmed this RefID in this run) must moreover be new:
/// a command not applied before, a policy not issued before the last one
/// applied ([`crate::seen::SignedHistory`], kept across restarts). Gives
/// back a command to apply, with its expiry.
fn check_signed(
    device: &DeviceInner,
    content_type: ContentType,
    plaintext: &[u8],
    shown_before: bool,
) -> Result<Option<(CommandDocument, u64)>, SignedError> {
    let signed = Signed::from_bytes(plaintext)?;
    let kind = if content_type == ContentType::ItPolicy {
        KIND_IT_POLICY
    } else {
        KIND_ADMIN_COMMAND
    };
    let mut trusted = device.domain_key.lock().unwrap_or_else(|p| p.into_inner());
    signed.check_for(trusted.as_deref(), kind, device.config.pin, unix_now())?;
    if trusted.is_none() && kind != KIND_IT_POLICY {
        return Err(SignedError::Malformed(
            "a command before the first IT policy".into(),
        ));
    }
    let command = if kind == KIND_ADMIN_COMMAND {
        let document = CommandDocument::from_document(&signed.document)?;
        if u64::try_from(document.id).ok() != Some(signed.id) {
            return Err(SignedError::Malformed(
                "the command's number is not the one signed".into(),
            ));
        }
        if !shown_before && device.signed().applied(signed.id) {
            return Err(SignedError::Replayed(signed.id));
        }
        Some((document, signed.expires_at))
    } else {
        if !shown_before {
            let mut history = device.signed();
            if let Some(applied) = history.outdated(signed.issued_at) {
                return Err(SignedError::Outdated {
                    issued_at: signed.issued_at,
                    applied,
                });
            }
            history.record_policy(signed.issued_at);
        }
        None
    };
    if trusted.is_none() {
        *trusted = Some(signed.domain_key);
    }
    Ok(command)
}

/// The device's clock, in Unix seconds.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Largest reassembled envelope: the plaintext limit plus the envelope's
/// overhead, rounded up to whole packets (the reassembler bounds a message
/// by its fragment count).
fn reassembly_limit(max_message: usize) -> usize {
    max_message
        .saturating_add(envelope::MIN_LEN)
        .div_ceil(MAX_PAYLOAD)
        .saturating_mul(MAX_PAYLOAD)
}

async fn run(mut reader: OwnedReadHalf, link: Arc<Link>, device: Arc<DeviceInner>) {
    let result = read_loop(&mut reader, &link, &device).await;
    match &result {
        Ok(()) => debug!(pin = %link.pin, "peer closed the link"),
        Err(e) => warn!(pin = %link.pin, error = %e, "link ended"),
    }
    link.finish(result);
}

async fn read_loop(
    reader: &mut OwnedReadHalf,
    link: &Link,
    device: &DeviceInner,
) -> Result<(), DeviceError> {
    let mut reassembler =
        Reassembler::new(reassembly_limit(device.config.max_message), MAX_PARTIALS);
    loop {
        let frame = match read_frame(reader).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            // read_frame checks the length before reading and reads the
            // whole body before decoding it, so a packet with a sound length
            // but an unknown type, flags or fragment position has been
            // consumed: skip it, the stream is still framed.
            Err(ReadError::Frame(
                e @ (FrameError::UnknownContentType(_)
                | FrameError::UnknownFlags(_)
                | FrameError::Reserved(_)
                | FrameError::BadFragment { .. }),
            )) => {
                bump(&link.stats.malformed);
                warn!(pin = %link.pin, error = %e, "malformed packet skipped");
                continue;
            }
            // A bad length, a packet cut short, another protocol version or
            // a failed socket: the link ends.
            Err(e) => return Err(e.into()),
        };
        if frame.fragment_count > 1 && reassembler.pending() > 0 {
            reassembler.expire(PARTIAL_TTL);
        }
        let message = match reassembler.push(frame) {
            Ok(Some(message)) => message,
            Ok(None) => continue,
            Err(e) => {
                bump(&link.stats.malformed);
                warn!(pin = %link.pin, error = %e, "fragments dropped");
                continue;
            }
        };
        match message.content_type {
            ContentType::Control => control(link, message).await?,
            ContentType::Error => error_report(link, message),
            ContentType::DeliveryConfirmation => confirmation(link, device, message).await,
            ContentType::Activation => match ActivationMessage::from_bytes(&message.payload) {
                Ok(m) => link.push_plain(message.ref_id, Plain::Activation(m)),
                Err(e) => {
                    bump(&link.stats.malformed);
                    warn!(pin = %link.pin, error = %e, "unreadable activation packet skipped");
                }
            },
            _ => deliver(link, device, message).await?,
        }
    }
}

async fn control(link: &Link, message: Message) -> Result<(), DeviceError> {
    match Control::from_payload(&message.payload) {
        Ok(Control::Ping) => {
            link.write(&[Control::Pong.frame(link.pin, message.ref_id)])
                .await
        }
        Ok(Control::Refused { reason }) => Err(DeviceError::Refused(reason)),
        Ok(Control::MailSent { to }) => {
            link.push_plain(message.ref_id, Plain::MailSent { to });
            Ok(())
        }
        Ok(other) => {
            debug!(pin = %link.pin, control = ?other, "control packet ignored");
            Ok(())
        }
        Err(e) => {
            warn!(pin = %link.pin, error = %e, "unreadable control packet ignored");
            Ok(())
        }
    }
}

fn error_report(link: &Link, message: Message) {
    bump(&link.stats.errors);
    let report = ErrorReport::from_payload(&message.payload).unwrap_or_else(|e| ErrorReport {
        code: "MALFORMED".to_owned(),
        message: format!("unreadable error report: {e}"),
    });
    debug!(pin = %link.pin, ref_id = %message.ref_id, code = %report.code, "error report");
    link.push_error(message.ref_id, report);
}

/// A delivery confirmation from the server (for something the device
/// sent): counted once it proves genuine.
async fn confirmation(link: &Link, device: &DeviceInner, message: Message) {
    let ref_id = message.ref_id;
    match open_message(device, message).await {
        Ok(_) => {
            bump(&link.stats.confirmations_received);
            debug!(pin = %link.pin, %ref_id, "delivery confirmed by the server");
        }
        Err(e) => {
            bump(&link.stats.undecryptable);
            warn!(pin = %link.pin, %ref_id, error = %e, "delivery confirmation does not open; ignored");
        }
    }
}

async fn deliver(link: &Link, device: &DeviceInner, message: Message) -> Result<(), DeviceError> {
    let (ref_id, content_type) = (message.ref_id, message.content_type);
    let (plaintext, opened_with) = match open_message(device, message).await {
        Ok(opened) => opened,
        Err(e) => {
            bump(&link.stats.undecryptable);
            warn!(pin = %link.pin, %ref_id, ?content_type, error = %e, "message does not open; not confirmed");
            return Ok(());
        }
    };
    let shown_before = device.seen().contains(ref_id.0);
    let mut command = None;
    if matches!(
        content_type,
        ContentType::ItPolicy | ContentType::AdminCommand
    ) {
        match check_signed(device, content_type, &plaintext, shown_before) {
            Ok(checked) => command = checked.filter(|_| !shown_before),
            Err(e) => {
                bump(&link.stats.rejected);
                warn!(pin = %link.pin, %ref_id, ?content_type, error = %e, "rejected: not confirmed");
                // Tell the server, so it stops sending it and says why.
                let what = if content_type == ContentType::ItPolicy {
                    "IT policy"
                } else {
                    "IT admin command"
                };
                let report = ErrorReport {
                    code: e.code().to_owned(),
                    message: format!("the device refused the {what}: {e}"),
                };
                let payload = serde_json::to_vec(&report).unwrap_or_default();
                reply_sealed(
                    link,
                    device,
                    opened_with,
                    ContentType::Refusal,
                    ref_id,
                    &payload,
                )
                .await?;
                return Ok(());
            }
        }
    }
    if content_type == ContentType::ServiceBook && !shown_before {
        // The device keeps its service books (address lookup needs ALP).
        match ServiceBooks::from_bytes(&plaintext) {
            Ok(books) => {
                *device
                    .service_books
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(books)
            }
            Err(e) => warn!(pin = %link.pin, %ref_id, error = %e, "unreadable service books"),
        }
    }
    if content_type == ContentType::KeyChange {
        // Handled by the device itself, never shown; confirmed below.
        if !shown_before {
            device.seen().insert(ref_id.0);
            if let Err(e) = key_change(link, device, &plaintext).await {
                warn!(pin = %link.pin, %ref_id, error = %e, "key change not applied");
            }
        }
    }
    let duplicate = shown_before || content_type == ContentType::KeyChange || {
        let received = Received {
            ref_id,
            content_type,
            plaintext,
            received_at: Instant::now(),
        };
        matches!(link.push_message(received, device).await, Pushed::Duplicate)
    };
    if duplicate {
        bump(&link.stats.duplicates);
        debug!(pin = %link.pin, %ref_id, "duplicate; confirmed again, not shown");
    } else {
        bump(&link.stats.received);
    }
    // Confirmed after it is queued: a link lost in between means the server
    // sends it again, and the device then confirms the duplicate.
    if reply_sealed(
        link,
        device,
        opened_with,
        ContentType::DeliveryConfirmation,
        ref_id,
        b"",
    )
    .await?
    {
        bump(&link.stats.confirmations_sent);
    }
    // A command takes effect once confirmed (a wipe removes the keys the
    // confirmation needs).
    if let Some((command, expires_at)) = command {
        device.apply(command, expires_at, unix_now());
    }
    Ok(())
}

/// Sends the server `payload` as `content_type` about message `ref_id`,
/// sealed with the current key (else the one the message came under).
/// Returns whether it was written; a reply that cannot be sealed is logged.
async fn reply_sealed(
    link: &Link,
    device: &DeviceInner,
    opened_with: u32,
    content_type: ContentType,
    ref_id: RefId,
    payload: &[u8],
) -> Result<bool, DeviceError> {
    let sealed = {
        let keys = device.keys();
        let key: Option<&TransportKey> = keys.current().or_else(|| keys.get(opened_with));
        key.map(|key| envelope::seal(key, content_type, link.pin, ref_id, payload))
    };
    match sealed {
        Some(Ok(sealed)) => {
            link.write(&[Frame::single(content_type, link.pin, ref_id, sealed)])
                .await?;
            Ok(true)
        }
        Some(Err(e)) => {
            warn!(pin = %link.pin, %ref_id, ?content_type, error = %e, "cannot seal the reply");
            Ok(false)
        }
        None => {
            warn!(pin = %link.pin, %ref_id, ?content_type, "no key to seal the reply");
            Ok(false)
        }
    }
}

/// The device's side of a key change (see
/// [`bramble_proto::activation::rekey`]): answer a `rekey` with its own
/// ephemeral key and confirmation, installing the new key as pending; make
/// it current on `rekey_done`.
async fn key_change(
    link: &Link,
    device: &DeviceInner,
    plaintext: &[u8],
) -> Result<(), DeviceError> {
    use bramble_proto::activation::{rekey, ActivationMessage, Ephemeral};
    let protocol = |e: bramble_proto::activation::ActivationError| {
        DeviceError::Unexpected(format!("key change: {e}"))
    };
    match ActivationMessage::from_bytes(plaintext).map_err(protocol)? {
        ActivationMessage::Rekey { server_key, key_id } => {
            let current = device.keys().current().cloned().ok_or(DeviceError::NoKey)?;
            let ephemeral = Ephemeral::generate().map_err(protocol)?;
            let device_key = ephemeral.public_hex().map_err(protocol)?;
            let keys = rekey(
                &current,
                &ephemeral,
                &server_key,
                &server_key,
                &device_key,
                key_id,
            )
            .map_err(protocol)?;
            device.install_pending(keys.transport.clone());
            let reply = ActivationMessage::RekeyReply {
                device_key,
                key_id,
                confirm: keys.device_confirmation(),
            };
            let ref_id = RefId::random();
            let sealed = envelope::seal(
                &current,
                ContentType::KeyChange,
                link.pin,
                ref_id,
                &reply.to_bytes(),
            )?;
            let frames = split(ContentType::KeyChange, 0, link.pin, ref_id, &sealed)?;
            link.write(&frames).await?;
            debug!(pin = %link.pin, key_id, "new key installed as pending; reply sent");
        }
        ActivationMessage::RekeyDone { key_id } => {
            if device
                .keys()
                .pending
                .as_ref()
                .is_some_and(|k| k.id == key_id)
            {
                device.promote();
                debug!(pin = %link.pin, key_id, "new key is current");
            }
        }
        other => debug!(pin = %link.pin, ?other, "key change message ignored"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::{DeviceConfig, KeyStore};
    use bramble_proto::frame::DEFAULT_MAX_MESSAGE;

    #[test]
    fn reassembly_limit_covers_the_largest_envelope() {
        let limit = reassembly_limit(DEFAULT_MAX_MESSAGE);
        assert!(limit >= DEFAULT_MAX_MESSAGE + envelope::MIN_LEN);
        assert_eq!(limit % MAX_PAYLOAD, 0);
        assert_eq!(reassembly_limit(0), MAX_PAYLOAD);
    }

    /// What one link costs besides the socket: printed, and bounded so a
    /// change that bloats it shows up here.
    #[tokio::test]
    async fn per_link_state_is_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (reader, writer) = stream.into_split();
        let device = crate::Device::new(DeviceConfig::new(Pin(1)), KeyStore::default());
        let inner = device.inner.clone();
        let link = Arc::new(Link {
            pin: Pin(1),
            writer: tokio::sync::Mutex::new(Some(writer)),
            write_timeout: Duration::from_secs(1),
            queues: Mutex::new(Queues::default()),
            arrived: Notify::new(),
            space: Notify::new(),
            stats: Counters::default(),
        });
        let task = run(reader, link, inner);
        let future = std::mem::size_of_val(&task);
        let link = std::mem::size_of::<Link>();
        let connection = std::mem::size_of::<Connection>();
        println!("task future {future} B, link {link} B, connection handle {connection} B");
        assert!(future <= 2048, "task future is {future} bytes");
        assert!(link <= 512, "link state is {link} bytes");
    }
}
