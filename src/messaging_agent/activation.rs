//! The Messaging Agent's part of wireless activation (seed: "Activating a
//! BlackBerry smartphone over the wireless network", steps 6–8; wire in
//! [`bramble_proto::activation`]).
//!
//! The watcher ([`super::watcher`]) finds the request e-mail in the user's
//! inbox, has it answered here and removes it; the device's later packets
//! arrive through the Dispatcher. Here the agent
//! 1. checks the request was addressed to this mailbox, was not answered
//!    before, that the PIN is not another user's device and that the
//!    user's activation password is usable — answering costs no attempt,
//!    because the challenge carries nothing to test a guess against;
//! 2. answers with SPAKE2 (from the sealed secret the password stands for)
//!    and an ephemeral X25519 key, and stores the exchange, sealed, in the
//!    Configuration Database ([`ActivationExchange`]) under the PIN and
//!    the challenge's RefID;
//! 3. on the device's confirmation — in one write transaction — finds the
//!    exchange and checks the confirmation before anything changes. A
//!    right one stores the new transport key as the device's current key
//!    (sealed), deletes the password, records "Activating" then
//!    "Encryption verified", answers `verified` with the server's own
//!    confirmation and announces [`DeliveryEvent::KeyEstablished`] for the
//!    Policy Service (step 9). A wrong one is a tested guess: it costs one
//!    attempt per exchange, and the exchange stays open until it expires,
//!    so a stranger's forged confirmation cannot abort the genuine device's.
//!
//! Activation packets are plain and anyone can send them under any PIN;
//! the obsolete `mismatch` changes nothing.

use std::sync::Arc;

use base64::Engine;
use bramble_proto::activation::{
    fresh_key_id, request_digest, server_answer, ActivationMessage, EtpRequest,
};
use bramble_proto::control::proofs_match;
use bramble_proto::{Pin, RefId};
use time::PrimitiveDateTime;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::db::ids::UserId;
use crate::db::models::activation_exchange::{
    ActivationExchange, AnsweredRequest, ExchangeKeys, NewExchange, OpenExchange,
    MAX_EXCHANGES_PER_USER,
};
use crate::db::models::activation_password::{record_status, ActivationPassword, Verification};
use crate::db::models::device::{Device, NewDevice};
use crate::db::models::device_key::DeviceKey;
use crate::db::models::user::{ActivationStatus, User};
use crate::db::{Conn, DbResult, Sealer};
use crate::dispatcher::{DeliveryEvent, Inbound};

use super::Shared;

pub use crate::db::models::activation_exchange::EXCHANGE_TTL;

/// Activation packets handled at once.
const CONCURRENT: usize = 16;

/// The Messaging Agent's activations: the limit on how many requests and
/// confirmations are handled at once (the exchanges themselves are in the
/// Configuration Database).
pub(crate) struct Exchanges {
    limit: Arc<Semaphore>,
}

impl Default for Exchanges {
    fn default() -> Self {
        Exchanges {
            limit: Arc::new(Semaphore::new(CONCURRENT)),
        }
    }
}

/// Answers an activation request found in `mailbox` (the attached
/// `etp.dat`): the SPAKE2 answer, or a refusal that says why.
pub(crate) async fn answer_request(shared: &Arc<Shared>, mailbox: &str, etp: Vec<u8>) {
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
            confirmed(shared, &clock, pin, ref_id, confirm).await;
        }
        ActivationMessage::Mismatch => {
            // Devices no longer send it, and anyone can send it under any
            // PIN: it must not end the genuine device's exchange.
            info!(target: "bramble::messaging_agent", %pin, %ref_id, "an obsolete `mismatch` activation packet arrived; nothing changes");
        }
        other => {
            warn!(target: "bramble::messaging_agent", %pin, "activation packet {other:?} is not for the server; ignored")
        }
    }
}

/// What a device's confirmation led to.
enum Outcome {
    Verified {
        user: UserId,
        email: String,
        server_confirmation: String,
    },
    Refused {
        code: &'static str,
        message: String,
    },
}

fn refused(code: &'static str, message: impl Into<String>) -> Outcome {
    Outcome::Refused {
        code,
        message: message.into(),
    }
}

/// The words for a password that no longer opens.
fn unusable(why: Verification) -> Outcome {
    match why {
        Verification::Expired => refused(
            "PASSWORD_EXPIRED",
            "The activation password has expired. Ask your administrator for a new one.",
        ),
        Verification::Exhausted => refused(
            "PASSWORD_EXHAUSTED",
            "The activation password was guessed wrong too often. Ask your administrator for a new one.",
        ),
        _ => refused(
            "NO_PASSWORD",
            "There is no activation password for this address any more (it was used or removed). Ask your administrator to set one.",
        ),
    }
}

/// Handles a device's key confirmation on (`pin`, `ref_id`) and answers it.
async fn confirmed(shared: &Arc<Shared>, clock: &Clock, pin: Pin, ref_id: RefId, confirm: String) {
    let now = clock.now_db();
    let given = confirm.clone();
    let outcome = shared
        .db
        .write_sealed(move |conn, sealer| {
            crate::db::write_transaction(conn, |conn| {
                decide(conn, sealer, pin, ref_id, &given, now)
            })
        })
        .await;
    let reply = match outcome {
        Ok(Outcome::Verified {
            user,
            email,
            server_confirmation,
        }) => {
            shared.dispatcher.keys_changed(pin).await;
            info!(target: "bramble::messaging_agent", %pin, user = %email, "encryption verified: the device's transport key is stored");
            send(
                shared,
                pin,
                ref_id,
                ActivationMessage::Verified {
                    confirm: server_confirmation,
                },
            )
            .await;
            shared
                .dispatcher
                .announce(DeliveryEvent::KeyEstablished { pin, user });
            return;
        }
        Ok(Outcome::Refused { code, message }) => (code, message),
        Err(e) => {
            warn!(target: "bramble::messaging_agent", %pin, "a key confirmation could not be handled: {e}");
            (
                "SERVER_ERROR",
                format!("The server could not finish the activation ({e}). Try again."),
            )
        }
    };
    send(
        shared,
        pin,
        ref_id,
        ActivationMessage::Refused {
            code: reply.0.to_owned(),
            message: reply.1,
            request: None,
            confirm: Some(confirm),
        },
    )
    .await;
}

/// Everything a confirmation may change, inside the caller's write
/// transaction: the exchange is looked up and the confirmation checked
/// before any state changes.
fn decide(
    conn: &mut Conn,
    sealer: &Sealer,
    pin: Pin,
    ref_id: RefId,
    confirm: &str,
    now: PrimitiveDateTime,
) -> DbResult<Outcome> {
    let Some(exchange) = ActivationExchange::find(conn, sealer, pin, ref_id, now)? else {
        warn!(target: "bramble::messaging_agent", %pin, %ref_id, "a key confirmation arrived for no activation in progress (expired, replaced, or never started); the device must start again");
        return Ok(refused(
            "NO_EXCHANGE",
            "The server has no activation in progress for this device (it waits 10 minutes for the confirmation). Start the activation again.",
        ));
    };
    let email = User::find_by_id(conn, exchange.user)?
        .map(|u| u.email)
        .unwrap_or_default();
    if let Err(why) = ActivationPassword::usable(conn, exchange.user, now)? {
        warn!(target: "bramble::messaging_agent", %pin, user = %email, "a key confirmation arrived but the activation password no longer opens ({why:?})");
        return Ok(unusable(why));
    }
    if proofs_match(&exchange.keys.device_confirmation, confirm) {
        complete(conn, sealer, &exchange, now)?;
        return Ok(Outcome::Verified {
            user: exchange.user,
            email,
            server_confirmation: exchange.keys.server_confirmation.clone(),
        });
    }
    // A tested guess, by the device with a wrong password or by a stranger.
    let left = if ActivationExchange::count_attempt(conn, exchange.id)? {
        match ActivationPassword::count_failed_exchange(conn, exchange.user, now)? {
            Ok(left) => {
                warn!(target: "bramble::messaging_agent", %pin, user = %email, attempts_left = left, "a key confirmation does not match: wrong activation password (one attempt counted; the exchange stays open until it expires)");
                left
            }
            Err(why) => return Ok(unusable(why)),
        }
    } else {
        warn!(target: "bramble::messaging_agent", %pin, user = %email, "another wrong key confirmation for the same exchange (not counted again)");
        match ActivationPassword::usable(conn, exchange.user, now)? {
            Ok(left) => left,
            Err(why) => return Ok(unusable(why)),
        }
    };
    Ok(refused(
        "WRONG_PASSWORD",
        if left == 0 {
            "The activation password is not correct, and it has now been guessed wrong too often. Ask your administrator for a new one.".to_owned()
        } else {
            format!("The activation password is not correct. {left} attempt(s) left before it stops working.")
        },
    ))
}

type Refusal = (Pin, &'static str, String);

/// Answers a request (`None`: its `etp.dat` could not be decoded) with the
/// challenge or a refusal naming the request.
async fn answer(shared: &Arc<Shared>, clock: &Clock, mailbox: &str, etp: Option<Vec<u8>>) {
    let digest = etp.as_deref().map(request_digest);
    let (pin, ref_id, reply) = match request(shared, clock, mailbox, etp).await {
        Ok((pin, ref_id, challenge)) => (pin, ref_id, challenge),
        Err((pin, code, text)) => {
            warn!(target: "bramble::messaging_agent", %pin, user = %mailbox, code, "activation request refused: {text}");
            (
                pin,
                RefId::random(),
                ActivationMessage::Refused {
                    code: code.to_owned(),
                    message: text,
                    request: digest,
                    confirm: None,
                },
            )
        }
    };
    send(shared, pin, ref_id, reply).await;
}

/// Checks a request and, if it passes, stores the exchange and returns the
/// challenge with the RefID it goes out on. Nothing is counted against the
/// password, and nothing is recorded for a request that is refused.
async fn request(
    shared: &Arc<Shared>,
    clock: &Clock,
    mailbox: &str,
    etp: Option<Vec<u8>>,
) -> Result<(Pin, RefId, ActivationMessage), Refusal> {
    let etp = etp.ok_or_else(|| {
        (
            Pin(0),
            "MALFORMED",
            "the activation request is damaged".to_owned(),
        )
    })?;
    let request = EtpRequest::from_bytes(&etp).map_err(|e| (Pin(0), "MALFORMED", e.to_string()))?;
    let pin = request.pin;
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
    let ref_id = RefId::random();
    let (challenge, dropped) = shared
        .db
        .write_sealed(move |conn, sealer| {
            crate::db::write_transaction(conn, |conn| {
                exchange_for(conn, sealer, &email, &etp, &request, ref_id, now)
            })
        })
        .await
        .map_err(|e| (pin, "SERVER_ERROR", e.to_string()))?
        .map_err(|(code, text)| (pin, code, text))?;
    if dropped > 0 {
        warn!(target: "bramble::messaging_agent", %pin, user = %mailbox, "more than {MAX_EXCHANGES_PER_USER} activations are waiting for this user's confirmation; the oldest was dropped. Someone may be flooding this address with activation requests");
    }
    info!(target: "bramble::messaging_agent", %pin, user = %mailbox, "activation request accepted; answering the device");
    Ok((pin, ref_id, challenge))
}

/// The checks of a request and, if they pass, the exchange stored and the
/// request recorded as answered, in the caller's write transaction.
/// Returns the challenge and how many older exchanges it pushed out.
#[allow(clippy::type_complexity)]
fn exchange_for(
    conn: &mut Conn,
    sealer: &Sealer,
    email: &str,
    etp: &[u8],
    request: &EtpRequest,
    ref_id: RefId,
    now: PrimitiveDateTime,
) -> DbResult<Result<(ActivationMessage, usize), (&'static str, String)>> {
    let pin = request.pin;
    let digest = request_digest(etp);
    if AnsweredRequest::was_answered(conn, &digest, now)? {
        return Ok(Err((
            "REPLAYED",
            "this activation request was answered before; start a new activation on the device"
                .to_owned(),
        )));
    }
    let Some(user) = User::find_by_email(conn, email)? else {
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
    let secret = match ActivationPassword::exchange_secret(conn, sealer, user.id, now)? {
        Ok(secret) => secret,
        Err(Verification::Expired) => return Ok(Err((
            "PASSWORD_EXPIRED",
            "the activation password has expired; ask your administrator for a new one".to_owned(),
        ))),
        Err(Verification::Exhausted) => return Ok(Err((
            "PASSWORD_EXHAUSTED",
            "the activation password was guessed wrong too often; ask your administrator for a new one".to_owned(),
        ))),
        Err(_) => return Ok(Err((
            "NO_PASSWORD",
            "there is no activation password for this address; ask your administrator to set one".to_owned(),
        ))),
    };
    let key_id = match fresh_key_id() {
        Ok(id) => id,
        Err(e) => return Ok(Err(("SERVER_ERROR", e.to_string()))),
    };
    // SPAKE2 and X25519 take well under a millisecond: no reason to let go
    // of the transaction for them.
    let answer = match server_answer(&secret, etp, key_id) {
        Ok(answer) => answer,
        Err(e) => return Ok(Err(("MALFORMED", e.to_string()))),
    };
    if !AnsweredRequest::record(conn, &digest, now)? {
        return Ok(Err((
            "REPLAYED",
            "this activation request was answered before; start a new activation on the device"
                .to_owned(),
        )));
    }
    let keys = ExchangeKeys::from_session(&answer.keys);
    let dropped = ActivationExchange::start(
        conn,
        sealer,
        &NewExchange {
            user: user.id,
            pin,
            ref_id,
            keys: &keys,
            model: &request.model,
            os_version: &request.os_version,
        },
        now,
    )?;
    Ok(Ok((answer.challenge, dropped)))
}

/// Stores the key, uses up the password, moves the user on and ends the
/// user's exchanges (in the caller's transaction).
fn complete(
    conn: &mut Conn,
    sealer: &Sealer,
    exchange: &OpenExchange,
    now: PrimitiveDateTime,
) -> DbResult<()> {
    let (pin, user) = (exchange.pin, exchange.user);
    let (model, os_version) = (exchange.model.clone(), exchange.os_version.clone());
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
    DeviceKey::save_current(conn, sealer, device.id, &exchange.keys.transport)?;
    ActivationPassword::consume(conn, user, now)?;
    record_status(conn, user, ActivationStatus::EncryptionVerified, now)?;
    // The password is used up: no other exchange of the user can complete.
    ActivationExchange::delete_for_user(conn, user)?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::db::models::test_db;
    use crate::db::models::user::NewUser;
    use crate::db::Database;
    use bramble_proto::activation::DeviceExchange;

    const EMAIL: &str = "alice@example.com";

    /// A user with the password `right`, a request made with `typed`
    /// answered, and the device's confirmation of it.
    fn answered(db: &Database, typed: &str) -> (UserId, Pin, RefId, String) {
        let sealer = db.shared_sealer();
        let now = crate::db::now();
        let pin = Pin(0x2A3B_4C5D);
        let user = db
            .run_blocking(|conn| {
                let user = NewUser {
                    display_name: "alice".into(),
                    email: EMAIL.into(),
                    mailbox_login: "alice".into(),
                }
                .save(conn)?;
                ActivationPassword::set(
                    conn,
                    &sealer,
                    user.id,
                    "right",
                    now,
                    now + time::Duration::hours(1),
                )?;
                Ok(user.id)
            })
            .unwrap();
        let device = DeviceExchange::start(typed, EMAIL, pin, "relay", "9700", "5.0").unwrap();
        let request = EtpRequest::from_bytes(&device.etp).unwrap();
        let ref_id = RefId::random();
        let (challenge, dropped) = db
            .run_blocking(|conn| {
                crate::db::write_transaction(conn, |conn| {
                    exchange_for(conn, &sealer, EMAIL, &device.etp, &request, ref_id, now)
                })
            })
            .unwrap()
            .unwrap();
        assert_eq!(dropped, 0);
        let ActivationMessage::Challenge {
            spake,
            server_key,
            key_id,
            ..
        } = challenge
        else {
            panic!("{challenge:?}");
        };
        let keys = device.finish(&spake, &server_key, key_id).unwrap();
        (user, pin, ref_id, keys.device_confirmation())
    }

    /// `decide` for the same confirmation from two threads at once, each
    /// in its own write transaction as the agent runs it.
    fn twice_at_once(db: &Database, pin: Pin, ref_id: RefId, confirm: &str) -> Vec<Outcome> {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let db = db.clone();
                    let sealer = db.shared_sealer();
                    scope.spawn(move || {
                        db.run_blocking(|conn| {
                            crate::db::write_transaction(conn, |conn| {
                                decide(conn, &sealer, pin, ref_id, confirm, crate::db::now())
                            })
                        })
                        .unwrap()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        })
    }

    fn codes(outcomes: &[Outcome]) -> Vec<&'static str> {
        let mut codes: Vec<&'static str> = outcomes
            .iter()
            .map(|o| match o {
                Outcome::Verified { .. } => "VERIFIED",
                Outcome::Refused { code, .. } => code,
            })
            .collect();
        codes.sort_unstable();
        codes
    }

    #[test]
    fn two_right_confirmations_at_once_complete_once() {
        let (_dir, db) = test_db();
        let (user, pin, ref_id, confirm) = answered(&db, "right");
        let outcomes = twice_at_once(&db, pin, ref_id, &confirm);
        assert_eq!(codes(&outcomes), ["NO_EXCHANGE", "VERIFIED"]);
        let keys = db
            .run_blocking(|conn| {
                let device = Device::find_by_pin(conn, &pin)?.unwrap();
                assert_eq!(device.user_id, Some(user));
                DeviceKey::find_all_for_device(conn, device.id)
            })
            .unwrap();
        assert_eq!(keys.len(), 1);
        assert!(db
            .run_blocking(|conn| ActivationPassword::find_by_user(conn, user))
            .unwrap()
            .is_none());
    }

    #[test]
    fn two_wrong_confirmations_at_once_count_once_and_keep_the_exchange() {
        let (_dir, db) = test_db();
        let (user, pin, ref_id, confirm) = answered(&db, "wrong");
        let outcomes = twice_at_once(&db, pin, ref_id, &confirm);
        assert_eq!(codes(&outcomes), ["WRONG_PASSWORD", "WRONG_PASSWORD"]);
        let (failed, waiting) = db
            .run_blocking(|conn| {
                Ok((
                    ActivationPassword::find_by_user(conn, user)?
                        .unwrap()
                        .failed_attempts,
                    ActivationExchange::count_for_user(conn, user, crate::db::now())?,
                ))
            })
            .unwrap();
        assert_eq!((failed, waiting), (1, 1));
    }

    #[test]
    fn a_new_password_ends_the_exchanges_of_the_old_one() {
        let (_dir, db) = test_db();
        let (user, pin, ref_id, confirm) = answered(&db, "right");
        let sealer = db.shared_sealer();
        let now = crate::db::now();
        db.run_blocking(|conn| {
            ActivationPassword::set(
                conn,
                &sealer,
                user,
                "newer",
                now,
                now + time::Duration::hours(1),
            )
        })
        .unwrap();
        let outcome = db
            .run_blocking(|conn| {
                crate::db::write_transaction(conn, |conn| {
                    decide(conn, &sealer, pin, ref_id, &confirm, now)
                })
            })
            .unwrap();
        assert_eq!(codes(&[outcome]), ["NO_EXCHANGE"]);
    }
}
