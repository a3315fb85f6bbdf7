//! The device: configuration, keys, the RefIDs it has shown, and making a
//! link (hello, LAN proof, welcome).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::Duration;

use bramble_proto::control::{device_proof, lan_proof, relay_key, Control};
use bramble_proto::envelope::TransportKey;
use bramble_proto::frame::{Frame, DEFAULT_MAX_MESSAGE};
use bramble_proto::io::{read_frame, write_frame};
use bramble_proto::lookup::{Lookup, LookupReply, LookupRequest, MAX_RESULTS};
use bramble_proto::policy::{Command, CommandDocument, ServiceBooks};
use bramble_proto::{ContentType, Pin, RefId};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, warn};

use crate::connection::Connection;
use crate::keys::{DeviceFile, KeyFileError, KeyStore};
use crate::seen::{SeenRefs, SignedHistory};
use crate::DeviceError;

/// The relay's default port for device links.
pub const DEFAULT_RELAY_PORT: u16 = 3102;

/// RefID of link-control packets (hello, proof, pong) that are about no
/// message.
pub const LINK_REF_ID: RefId = RefId(0);

/// Who the device is and the limits it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    pub pin: Pin,
    /// The SRP ID of the device's enterprise server, once activation has
    /// told it; the relay routes the device's traffic there.
    pub srp_id: Option<String>,
    pub model: String,
    pub os_version: String,
    /// Largest message accepted or sent, after decompression (default 16 MiB).
    pub max_message: usize,
    /// How many RefIDs are remembered to show each message once (default 10 000).
    pub dedupe_window: usize,
    /// Limit on connecting and the hello exchange (default 10 s).
    pub handshake_timeout: Duration,
    /// Limit on writing one packet to the peer (default 30 s); a peer that
    /// stops reading for longer loses the link.
    pub write_timeout: Duration,
}

impl DeviceConfig {
    /// A reference device with the default limits.
    pub fn new(pin: Pin) -> DeviceConfig {
        DeviceConfig {
            pin,
            srp_id: None,
            model: "Bramble reference device".to_owned(),
            os_version: "5.0.0".to_owned(),
            max_message: DEFAULT_MAX_MESSAGE,
            dedupe_window: 10_000,
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Where a device connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// Over the wireless network: the relay's device port (plain TCP,
    /// [`DEFAULT_RELAY_PORT`]); the relay answers the hello with `welcome`.
    Relay(SocketAddr),
    /// Connected to the organization's network: the Router's LAN listener,
    /// which challenges the device to prove its transport key.
    Lan(SocketAddr),
}

impl Path {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Path::Relay(addr) | Path::Lan(addr) => *addr,
        }
    }
}

/// What every link of one device shares.
pub(crate) struct DeviceInner {
    pub(crate) config: DeviceConfig,
    keys: RwLock<KeyStore>,
    seen: Mutex<SeenRefs>,
    /// The domain key (hex) of the first IT policy; afterwards policies and
    /// commands signed by any other key are rejected.
    pub(crate) domain_key: Mutex<Option<String>>,
    administered: Mutex<Administered>,
    /// The signed documents acted on (kept in the key file).
    signed: Mutex<SignedHistory>,
    /// The service books last received (None: none yet).
    pub(crate) service_books: Mutex<Option<ServiceBooks>>,
}

/// What IT administration commands did to the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Administered {
    /// Locked with a password set by the administrator.
    pub locked: bool,
    pub password: Option<String>,
    /// All device data deleted (keys, policy, messages): the device must be
    /// activated again.
    pub wiped_all: bool,
    /// Work data deleted; the device stays activated.
    pub wiped_work: bool,
    /// The commands applied, by number.
    pub applied: Vec<i64>,
}

impl DeviceInner {
    pub(crate) fn keys(&self) -> RwLockReadGuard<'_, KeyStore> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn seen(&self) -> MutexGuard<'_, SeenRefs> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn signed(&self) -> MutexGuard<'_, SignedHistory> {
        self.signed.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn install_pending(&self, key: TransportKey) {
        self.with_keys_mut(|k| k.install_pending(key));
    }

    pub(crate) fn promote(&self) -> bool {
        self.with_keys_mut(KeyStore::promote)
    }

    /// Carries out an IT administration command (after confirming it),
    /// once: its id is remembered until `expires_at` (Unix seconds), also
    /// across restarts when the device's state is saved.
    pub(crate) fn apply(self: &DeviceInner, command: CommandDocument, expires_at: u64, now: u64) {
        let id = command.id;
        {
            let mut signed = self.signed();
            let number = u64::try_from(id).unwrap_or(0);
            if signed.applied(number) {
                return;
            }
            signed.record_command(number, expires_at, now);
        }
        match command.command {
            Command::Lock { password } => {
                let mut a = self.administered.lock().unwrap_or_else(|p| p.into_inner());
                a.locked = true;
                a.password = Some(password);
                a.applied.push(id);
            }
            Command::WipeWork => {
                let mut a = self.administered.lock().unwrap_or_else(|p| p.into_inner());
                a.wiped_work = true;
                a.applied.push(id);
            }
            // The server holds a delayed wipe back until its time.
            Command::WipeAll { .. } => self.wipe_all(id),
        }
    }

    fn wipe_all(&self, id: i64) {
        self.with_keys_mut(|k| *k = KeyStore::default());
        *self.domain_key.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.service_books.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // A new activation may bring a new domain; the commands applied
        // stay remembered.
        self.signed().policy_issued_at = None;
        let mut a = self.administered.lock().unwrap_or_else(|p| p.into_inner());
        a.wiped_all = true;
        a.locked = false;
        a.password = None;
        a.applied.push(id);
    }

    fn with_keys_mut<T>(&self, f: impl FnOnce(&mut KeyStore) -> T) -> T {
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut keys)
    }
}

/// One smartphone: a PIN, its keys, and the messages it has shown.
///
/// Cheap to clone (the clones are the same device). The RefIDs already
/// shown belong to the device, not to a link, so a message sent again
/// after a reconnect is still shown once.
#[derive(Clone)]
pub struct Device {
    pub(crate) inner: Arc<DeviceInner>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("pin", &self.inner.config.pin)
            .finish_non_exhaustive()
    }
}

impl Device {
    pub fn new(config: DeviceConfig, keys: KeyStore) -> Device {
        let seen = SeenRefs::new(config.dedupe_window);
        Device {
            inner: Arc::new(DeviceInner {
                config,
                keys: RwLock::new(keys),
                seen: Mutex::new(seen),
                domain_key: Mutex::new(None),
                administered: Mutex::new(Administered::default()),
                signed: Mutex::new(SignedHistory::default()),
                service_books: Mutex::new(None),
            }),
        }
    }

    /// The device as it was saved ([`Device::save`]): its keys, domain key,
    /// service books and the signed documents it acted on.
    pub fn from_file(config: DeviceConfig, file: DeviceFile) -> Device {
        let device = Device::new(config, file.keys);
        device.set_domain_key(file.domain_key);
        device.set_service_books(file.service_books);
        device.set_signed_history(file.signed);
        device
    }

    /// Everything the device keeps across restarts.
    pub fn to_file(&self) -> DeviceFile {
        DeviceFile {
            pin: self.pin(),
            keys: self.keys(),
            domain_key: self.domain_key(),
            service_books: self.service_books(),
            signed: self.signed_history(),
        }
    }

    /// Writes [`Device::to_file`] to the key file at `path`.
    pub fn save(&self, path: &std::path::Path) -> Result<(), KeyFileError> {
        self.to_file().save(path)
    }

    /// What the device remembers of the signed documents it acted on.
    pub fn signed_history(&self) -> SignedHistory {
        self.inner.signed().clone()
    }

    /// Restores [`Device::signed_history`] kept from an earlier run.
    pub fn set_signed_history(&self, history: SignedHistory) {
        *self.inner.signed() = history;
    }

    pub fn pin(&self) -> Pin {
        self.inner.config.pin
    }

    pub fn config(&self) -> &DeviceConfig {
        &self.inner.config
    }

    /// A copy of the key store as it is now.
    pub fn keys(&self) -> KeyStore {
        self.inner.keys().clone()
    }

    /// Replaces all keys (links already up use the new ones at once).
    pub fn set_keys(&self, keys: KeyStore) {
        self.inner.with_keys_mut(|k| *k = keys);
    }

    /// See [`KeyStore::install_pending`].
    pub fn install_pending_key(&self, key: TransportKey) {
        self.inner.with_keys_mut(|k| k.install_pending(key));
    }

    /// See [`KeyStore::promote`].
    pub fn promote_keys(&self) -> bool {
        self.inner.with_keys_mut(KeyStore::promote)
    }

    /// The domain key the device took from its first IT policy (hex).
    pub fn domain_key(&self) -> Option<String> {
        self.inner
            .domain_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Restores the domain key kept from an earlier IT policy (a device
    /// that restarts keeps it).
    pub fn set_domain_key(&self, key: Option<String>) {
        *self
            .inner
            .domain_key
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = key;
    }

    /// The service books the device holds (the last ones received, or
    /// those restored with [`Device::set_service_books`]).
    pub fn service_books(&self) -> Option<ServiceBooks> {
        self.inner
            .service_books
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Restores the service books kept from an earlier activation (a
    /// device that restarts keeps them).
    pub fn set_service_books(&self, books: Option<ServiceBooks>) {
        *self
            .inner
            .service_books
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = books;
    }

    /// Address lookup (the ALP service book): asks the enterprise server
    /// for the people whose name, e-mail address or login contains `query`
    /// and waits up to `patience` for the answer — at most the book's
    /// `max_results` (20) people, `truncated` when more matched.
    ///
    /// Refused locally, without asking, when the device holds no ALP
    /// service book (code `NO_SERVICE_BOOK`); the server's refusals (query
    /// too short, lookup turned off, directory unreachable, …) come back
    /// as [`DeviceError::Lookup`] with its code and words. Other messages
    /// that arrive on `conn` while waiting are taken off the link and
    /// dropped (they are confirmed to the server as usual).
    pub async fn lookup(
        &self,
        conn: &Connection,
        query: &str,
        patience: Duration,
    ) -> Result<LookupReply, DeviceError> {
        let max = {
            let books = self
                .inner
                .service_books
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let alp = books
                .as_ref()
                .and_then(|b| b.books.iter().find(|b| b.cid == "ALP"));
            let Some(alp) = alp else {
                return Err(DeviceError::Lookup {
                    code: "NO_SERVICE_BOOK".to_owned(),
                    message: "address lookup is not available on this device: it has no Address lookup (ALP) service book from its enterprise server".to_owned(),
                });
            };
            alp.settings
                .get("max_results")
                .and_then(|m| m.parse::<u32>().ok())
                .unwrap_or(MAX_RESULTS)
        };
        let id = RefId::random().0;
        let request = Lookup::Request(LookupRequest {
            id,
            query: query.to_owned(),
            max,
        });
        conn.send(ContentType::Lookup, RefId::random(), &request.to_bytes())
            .await?;
        let answer = tokio::time::timeout(patience, async {
            while let Some(received) = conn.recv().await {
                if received.content_type != ContentType::Lookup {
                    continue;
                }
                match Lookup::from_bytes(&received.plaintext) {
                    Ok(m) if m.id() == id => return Some(m),
                    _ => continue,
                }
            }
            None
        })
        .await;
        match answer {
            Ok(Some(Lookup::Results(reply))) => Ok(reply),
            Ok(Some(Lookup::Refused(r))) => Err(DeviceError::Lookup {
                code: r.code,
                message: r.message,
            }),
            Ok(Some(Lookup::Request(_))) => Err(DeviceError::Unexpected(
                "the server sent a lookup request".to_owned(),
            )),
            Ok(None) => Err(DeviceError::Closed),
            Err(_) => Err(DeviceError::Lookup {
                code: "TIMEOUT".to_owned(),
                message: format!("no answer from the enterprise server within {patience:?}"),
            }),
        }
    }

    /// What IT administration commands did to the device.
    pub fn administered(&self) -> Administered {
        self.inner
            .administered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many RefIDs the device remembers having shown.
    pub fn remembered(&self) -> usize {
        self.inner.seen().len()
    }

    /// Connects, says hello, answers the LAN challenge on [`Path::Lan`],
    /// and waits for `welcome` or `refused`, all within
    /// [`DeviceConfig::handshake_timeout`]. Then a background task runs
    /// the link until the peer closes it or [`Connection::close`].
    pub async fn connect(&self, path: Path) -> Result<Connection, DeviceError> {
        let config = &self.inner.config;
        let addr = path.addr();
        let limit = config.handshake_timeout;
        let deadline = Instant::now() + limit;
        let stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(DeviceError::HandshakeTimeout(limit)),
            Ok(Err(e)) => {
                return Err(DeviceError::Connect {
                    addr,
                    source: Arc::new(e),
                })
            }
            Ok(Ok(stream)) => stream,
        };
        // Small packets (confirmations, proofs) must not wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let (mut reader, mut writer) = stream.into_split();
        let pin = config.pin;
        let hello = Control::DeviceHello {
            pin,
            srp_id: config.srp_id.clone(),
            model: config.model.clone(),
            os_version: config.os_version.clone(),
        };
        handshake_write(&mut writer, hello.frame(pin, LINK_REF_ID), deadline, limit).await?;
        let mut relay_nonce = None;
        loop {
            let frame = match timeout_at(deadline, read_frame(&mut reader)).await {
                Err(_) => return Err(DeviceError::HandshakeTimeout(limit)),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(None)) => return Err(DeviceError::HandshakeClosed),
                Ok(Ok(Some(frame))) => frame,
            };
            if frame.content_type != ContentType::Control {
                debug!(%pin, content_type = ?frame.content_type, ref_id = %frame.ref_id,
                       "packet before welcome ignored");
                continue;
            }
            match Control::from_frame(&frame) {
                Ok(Control::Welcome) => break,
                Ok(Control::Refused { reason }) => return Err(DeviceError::Refused(reason)),
                Ok(Control::LanChallenge { nonce }) => {
                    if let Path::Relay(_) = path {
                        // A proof is only for the Router: answering on the
                        // relay path would let anyone on it collect proofs.
                        return Err(DeviceError::Unexpected(
                            "a LAN challenge on the relay path".to_owned(),
                        ));
                    }
                    let proof = {
                        let keys = self.inner.keys();
                        let key = keys.current().ok_or(DeviceError::NoKey)?;
                        Control::LanProof {
                            key_id: key.id,
                            proof: lan_proof(key.secret(), pin, &nonce),
                        }
                    };
                    handshake_write(&mut writer, proof.frame(pin, LINK_REF_ID), deadline, limit)
                        .await?;
                }
                Ok(Control::DeviceChallenge { nonce }) => {
                    if let Path::Lan(_) = path {
                        return Err(DeviceError::Unexpected(
                            "a relay challenge on the LAN path".to_owned(),
                        ));
                    }
                    // With a key, prove it; without one (not activated
                    // yet) the link carries activation traffic only.
                    let answer = match self.inner.keys().current() {
                        Some(key) => relay_proof(key, pin, &nonce)?,
                        None => Control::ActivationOnly,
                    };
                    handshake_write(&mut writer, answer.frame(pin, LINK_REF_ID), deadline, limit)
                        .await?;
                    relay_nonce = Some(nonce);
                }
                Ok(Control::Ping) => {
                    handshake_write(
                        &mut writer,
                        Control::Pong.frame(pin, frame.ref_id),
                        deadline,
                        limit,
                    )
                    .await?
                }
                Ok(other) => debug!(%pin, control = ?other, "control before welcome ignored"),
                Err(e) => {
                    warn!(%pin, error = %e, "unreadable control packet before welcome ignored")
                }
            }
        }
        debug!(%pin, ?path, "link up");
        Ok(Connection::start(
            self.inner.clone(),
            path,
            reader,
            writer,
            relay_nonce,
        ))
    }
}

/// `device_proof` for the relay's challenge `nonce`, under `key`.
pub(crate) fn relay_proof(
    key: &TransportKey,
    pin: Pin,
    nonce: &str,
) -> Result<Control, DeviceError> {
    let relay_key = relay_key(key.secret()).ok_or(DeviceError::NoKey)?;
    Ok(Control::DeviceProof {
        key_id: key.id,
        proof: device_proof(&relay_key, pin, nonce),
    })
}

async fn handshake_write(
    writer: &mut OwnedWriteHalf,
    frame: Frame,
    deadline: Instant,
    limit: Duration,
) -> Result<(), DeviceError> {
    let write = async {
        write_frame(writer, &frame).await?;
        writer.flush().await?;
        Ok::<(), DeviceError>(())
    };
    timeout_at(deadline, write)
        .await
        .unwrap_or(Err(DeviceError::HandshakeTimeout(limit)))
}
