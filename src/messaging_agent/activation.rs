//! The Messaging Agent's part of wireless activation (seed: "Activating a
//! BlackBerry smartphone over the wireless network", steps 6–8; wire in
//! [`bramble_proto::activation`]).
//!
//! The watcher ([`super::watcher`]) finds the request e-mail in the user's
//! inbox, has it answered here and removes it; the device's later packets
//! arrive through the Dispatcher. Here the agent
//! 1. checks the request was addressed to this mailbox, that the PIN is
//!    not another user's device, and that the user's activation password
//!    is usable — counting the exchange against its five attempts;
//! 2. answers with SPAKE2 (from the sealed secret the password stands for)
//!    and an ephemeral X25519 key, and its key confirmation;
//! 3. on the device's confirmation stores the new transport key as the
//!    device's current key (sealed), deletes the password, records
//!    "Activating" then "Encryption verified", tells the device `verified`
//!    and announces [`DeliveryEvent::KeyEstablished`] for the Policy
//!    Service (step 9).
//!
//! A wrong password shows as a confirmation that does not check, on either
//! side: the attempt stays counted and the device is told. An exchange not
//! confirmed within [`EXCHANGE_TTL`] is forgotten (the device starts again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bramble_proto::activation::{
    fresh_key_id, server_answer, ActivationMessage, EtpRequest, SessionKeys,
};
use bramble_proto::{Pin, RefId};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::db::ids::UserId;
use crate::db::models::activation_password::{record_status, ActivationPassword, Verification};
use crate::db::models::device::{Device, NewDevice};
use crate::db::models::device_key::DeviceKey;
use crate::db::models::user::{ActivationStatus, User};
use crate::db::DbError;
use crate::dispatcher::{DeliveryEvent, Inbound};

use super::Shared;

/// How long the agent waits for the device's confirmation.
pub const EXCHANGE_TTL: Duration = Duration::from_secs(600);

/// An exchange waiting for the device's confirmation.
struct Pending {
    user: UserId,
    email: String,
    keys: SessionKeys,
    model: String,
    os_version: String,
    started: Instant,
}

/// Exchanges in progress by PIN, and the requests already answered (by
/// the SHA-256 of their `etp.dat`), so a replayed request is refused
/// without costing the user an attempt.
#[derive(Default)]
struct Table {
    pending: HashMap<Pin, Pending>,
    answered: HashMap<[u8; 32], Instant>,
}

/// Activation packets handled at once.
const CONCURRENT: usize = 16;

/// The Messaging Agent's activations: the exchanges in progress, shared by
/// the watchers that find requests and the task that serves the devices'
/// packets, and the limit on how many are handled at once.
pub(crate) struct Exchanges {
    table: Mutex<Table>,
    limit: Arc<Semaphore>,
}

impl Default for Exchanges {
    fn default() -> Self {
        Exchanges {
            table: Mutex::default(),
            limit: Arc::new(Semaphore::new(CONCURRENT)),
        }
    }
}

impl Exchanges {
    /// Forgets exchanges never confirmed and requests too old to matter.
    fn forget_old(&self) {
        if let Ok(mut t) = self.table.lock() {
            t.pending.retain(|_, p| p.started.elapsed() < EXCHANGE_TTL);
            // A request older than the password's longest life is useless.
            t.answered
                .retain(|_, at| at.elapsed() < Duration::from_secs(721 * 3600));
        }
    }

    fn take(&self, pin: Pin) -> Option<Pending> {
        self.table
            .lock()
            .ok()
            .and_then(|mut t| t.pending.remove(&pin))
    }
}

/// Answers an activation request found in `mailbox` (the attached
/// `etp.dat`): the SPAKE2 answer, or a refusal that says why.
pub(crate) async fn answer_request(shared: &Arc<Shared>, mailbox: &str, etp: Vec<u8>) {
    shared.exchanges.forget_old();
    let Ok(_permit) = shared.exchanges.limit.clone().acquire_owned().await else {
        return;
    };
    answer(shared, &Clock::new(), mailbox, Some(etp)).await;
}

/// Serves activation packets from devices, several at once.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut inbound: mpsc::Receiver<Inbound>,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return,
            m = inbound.recv() => match m { Some(m) => m, None => return },
        };
        shared.exchanges.forget_old();
        let Ok(permit) = shared.exchanges.limit.clone().acquire_owned().await else {
            return;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            handle(&shared, message).await;
            drop(permit);
        });
    }
}

async fn handle(shared: &Arc<Shared>, message: Inbound) {
    let clock = Clock::new();
    let (pin, ref_id) = (message.pin, message.ref_id);
    let pending = &shared.exchanges;
    let parsed = match ActivationMessage::from_bytes(&message.plaintext) {
        Ok(m) => m,
        Err(e) => {
            warn!(target: "bramble::messaging_agent", %pin, "unreadable activation packet ignored: {e}");
            return;
        }
    };
    match parsed {
        ActivationMessage::Request { mailbox, etp } => {
            let etp = base64::engine::general_purpose::STANDARD.decode(etp).ok();
            answer(shared, &clock, &mailbox, etp).await;
        }
        ActivationMessage::Confirm { confirm } => {
            let Some(exchange) = pending.take(pin) else {
                warn!(target: "bramble::messaging_agent", %pin, "a key confirmation arrived for no activation in progress (expired, or the server restarted); the device must start again");
                let refused = ActivationMessage::Refused {
                    code: "NO_EXCHANGE".into(),
                    message: "The server has no activation in progress for this device. Start the activation again.".into(),
                };
                send(shared, pin, ref_id, refused).await;
                return;
            };
            if exchange.keys.check_device(&confirm).is_err() {
                warn!(target: "bramble::messaging_agent", %pin, user = %exchange.email, "the device's key confirmation does not match: wrong activation password (the attempt counts)");
                let refused = ActivationMessage::Refused {
                    code: "WRONG_PASSWORD".into(),
                    message: "The activation password is not correct.".into(),
                };
                send(shared, pin, ref_id, refused).await;
                return;
            }
            match complete(shared, &clock, pin, &exchange).await {
                Ok(()) => {
                    info!(target: "bramble::messaging_agent", %pin, user = %exchange.email, "encryption verified: the device's transport key is stored");
                    send(shared, pin, ref_id, ActivationMessage::Verified).await;
                    shared.dispatcher.announce(DeliveryEvent::KeyEstablished {
                        pin,
                        user: exchange.user,
                    });
                }
                Err(e) => {
                    warn!(target: "bramble::messaging_agent", %pin, user = %exchange.email, "the transport key could not be stored: {e}");
                    let refused = ActivationMessage::Refused {
                        code: "SERVER_ERROR".into(),
                        message: format!(
                            "The server could not finish the activation ({e}). Try again."
                        ),
                    };
                    send(shared, pin, ref_id, refused).await;
                }
            }
        }
        ActivationMessage::Mismatch => {
            if let Some(exchange) = pending.take(pin) {
                warn!(target: "bramble::messaging_agent", %pin, user = %exchange.email, "the device reports a wrong activation password (the attempt counts)");
            }
        }
        other => {
            warn!(target: "bramble::messaging_agent", %pin, "activation packet {other:?} is not for the server; ignored")
        }
    }
}

type Refusal = (Pin, &'static str, String);

/// Answers a request (`None`: its `etp.dat` could not be decoded) with the
/// challenge or a refusal.
async fn answer(shared: &Arc<Shared>, clock: &Clock, mailbox: &str, etp: Option<Vec<u8>>) {
    let (pin, reply) = match request(shared, clock, mailbox, etp).await {
        Ok((pin, challenge)) => (pin, challenge),
        Err((pin, code, text)) => {
            warn!(target: "bramble::messaging_agent", %pin, user = %mailbox, code, "activation request refused: {text}");
            (
                pin,
                ActivationMessage::Refused {
                    code: code.to_owned(),
                    message: text,
                },
            )
        }
    };
    send(shared, pin, RefId::random(), reply).await;
}

async fn request(
    shared: &Arc<Shared>,
    clock: &Clock,
    mailbox: &str,
    etp: Option<Vec<u8>>,
) -> Result<(Pin, ActivationMessage), Refusal> {
    let pending = &shared.exchanges;
    let etp = etp.ok_or_else(|| {
        (
            Pin(0),
            "MALFORMED",
            "the activation request is damaged".to_owned(),
        )
    })?;
    let request = EtpRequest::from_bytes(&etp).map_err(|e| (Pin(0), "MALFORMED", e.to_string()))?;
    let pin = request.pin;
    let digest: [u8; 32] = openssl::sha::sha256(&etp);
    let replayed = pending
        .table
        .lock()
        .map(|mut t| t.answered.insert(digest, Instant::now()).is_some())
        .unwrap_or(false);
    if replayed {
        return Err((
            pin,
            "REPLAYED",
            "this activation request was answered before; start a new activation on the device"
                .to_owned(),
        ));
    }
    if !request.email.trim().eq_ignore_ascii_case(mailbox.trim()) {
        return Err((
            pin,
            "WRONG_ADDRESS",
            format!(
                "the request names {} but arrived in the mailbox of {mailbox}",
                request.email
            ),
        ));
    }
    let email = mailbox.to_owned();
    let now = clock.now_db();
    let found = shared
        .db
        .write_sealed(move |conn, sealer| {
            let Some(user) = User::find_by_email(conn, &email)? else {
                return Ok(Err((
                    "UNKNOWN_USER",
                    format!("no user has the address {email}"),
                )));
            };
            if let Some(device) = Device::find_by_pin(conn, &pin)? {
                if device.user_id.is_some_and(|owner| owner != user.id) {
                    return Ok(Err((
                        "PIN_TAKEN",
                        format!("the device {pin} belongs to another user; an administrator must remove it first"),
                    )));
                }
            }
            Ok(match ActivationPassword::begin_exchange(conn, sealer, user.id, now)? {
                Ok(secret) => Ok((user.id, secret)),
                Err(Verification::Expired) => Err((
                    "PASSWORD_EXPIRED",
                    "the activation password has expired; ask your administrator for a new one".to_owned(),
                )),
                Err(Verification::Exhausted) => Err((
                    "PASSWORD_EXHAUSTED",
                    "the activation password was guessed wrong too often; ask your administrator for a new one".to_owned(),
                )),
                Err(_) => Err((
                    "NO_PASSWORD",
                    "there is no activation password for this address; ask your administrator to set one".to_owned(),
                )),
            })
        })
        .await
        .map_err(|e| (pin, "SERVER_ERROR", e.to_string()))?;
    let (user, secret) = found.map_err(|(code, text)| (pin, code, text))?;
    let key_id = fresh_key_id().map_err(|e| (pin, "SERVER_ERROR", e.to_string()))?;
    let answer = tokio::task::spawn_blocking(move || server_answer(&secret, &etp, key_id))
        .await
        .map_err(|e| (pin, "SERVER_ERROR", e.to_string()))?
        .map_err(|e| (pin, "MALFORMED", e.to_string()))?;
    let Ok(mut exchanges) = pending.table.lock() else {
        return Err((
            pin,
            "SERVER_ERROR",
            "the exchange table is unusable".to_owned(),
        ));
    };
    exchanges.pending.insert(
        pin,
        Pending {
            user,
            email: mailbox.to_owned(),
            keys: answer.keys,
            model: request.model,
            os_version: request.os_version,
            started: Instant::now(),
        },
    );
    info!(target: "bramble::messaging_agent", %pin, user = %mailbox, "activation request accepted; answering the device");
    Ok((pin, answer.challenge))
}

/// Stores the key, uses up the password, moves the user on.
async fn complete(
    shared: &Arc<Shared>,
    clock: &Clock,
    pin: Pin,
    exchange: &Pending,
) -> Result<(), DbError> {
    let user = exchange.user;
    let key = exchange.keys.transport.clone();
    let (model, os_version) = (exchange.model.clone(), exchange.os_version.clone());
    let now = clock.now_db();
    shared
        .db
        .write_sealed(move |conn, sealer| {
            crate::db::write_transaction(conn, |conn| {
                let mut device = match Device::find_by_pin(conn, &pin)? {
                    Some(device) => device,
                    None => Device::create(
                        conn,
                        &NewDevice {
                            pin,
                            user_id: Some(user),
                            model: model.clone(),
                            os_version: os_version.clone(),
                            carrier: String::new(),
                        },
                    )?,
                };
                device.user_id = Some(user);
                if !model.is_empty() {
                    device.model = model;
                }
                if !os_version.is_empty() {
                    device.os_version = os_version;
                }
                device.save(conn)?;
                // A reactivated device starts from the new key alone.
                DeviceKey::delete_for_device(conn, device.id)?;
                DeviceKey::save_current(conn, sealer, device.id, &key)?;
                ActivationPassword::consume(conn, user, now)?;
                record_status(conn, user, ActivationStatus::EncryptionVerified, now)?;
                Ok(())
            })
        })
        .await?;
    shared.dispatcher.keys_changed(pin).await;
    Ok(())
}

async fn send(shared: &Arc<Shared>, pin: Pin, ref_id: RefId, message: ActivationMessage) {
    if pin == Pin(0) {
        return;
    }
    if let Err(e) = shared
        .dispatcher
        .send_plain(message.frame(pin, ref_id))
        .await
    {
        warn!(target: "bramble::messaging_agent", %pin, "cannot answer the device: {e}");
    }
}
