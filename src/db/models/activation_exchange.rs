//! Wireless activations waiting for the device's key confirmation, and the
//! activation requests already answered (wire in
//! [`bramble_proto::activation`], flow in the Messaging Agent).
//!
//! An exchange is named by the device's PIN and the RefID of the server's
//! challenge; it holds the session's transport key and both key
//! confirmations sealed with the master key (bound to user, PIN, RefID and
//! key id), so a restart between challenge and confirmation loses nothing.
//! Exchanges live [`EXCHANGE_TTL`] by the database clock; a user has at
//! most [`MAX_EXCHANGES_PER_USER`] (a new one replaces the oldest), so
//! requests mailed by strangers can neither pile up nor push the genuine
//! one out before it had [`MAX_EXCHANGES_PER_USER`]` - 1` newer rivals.
//!
//! Answered requests are remembered by the SHA-256 of their `etp.dat` for
//! [`ANSWERED_KEPT`] (longer than any activation password lives), so the
//! same request e-mailed again is refused without costing an attempt.

use bramble_proto::control::{hex, unhex};
use bramble_proto::envelope::TransportKey;
use bramble_proto::{Pin, RefId};
use diesel::prelude::*;
use time::{Duration, PrimitiveDateTime};

use crate::db::ids::UserId;
use crate::db::models::device::parse_pin;
use crate::db::schema::{activation_exchanges, answered_activation_requests};
use crate::db::{Conn, DbError, DbResult, Sealer};

/// How long the server waits for the device's confirmation.
pub const EXCHANGE_TTL: Duration = Duration::minutes(10);
/// Exchanges one user may have waiting at once.
pub const MAX_EXCHANGES_PER_USER: i64 = 8;
/// How long an answered request is remembered: longer than an activation
/// password can live (720 hours), so a request can never be answered twice.
pub const ANSWERED_KEPT: Duration = Duration::hours(721);

/// The secrets of one exchange: the transport key it establishes and the
/// two key confirmations (hex, as on the wire).
pub struct ExchangeKeys {
    pub transport: TransportKey,
    pub device_confirmation: String,
    pub server_confirmation: String,
}

impl std::fmt::Debug for ExchangeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeKeys")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl ExchangeKeys {
    pub fn from_session(keys: &bramble_proto::activation::SessionKeys) -> ExchangeKeys {
        ExchangeKeys {
            transport: keys.transport.clone(),
            device_confirmation: keys.device_confirmation(),
            server_confirmation: keys.server_confirmation(),
        }
    }

    /// Transport key ‖ device confirmation ‖ server confirmation, 96 bytes.
    fn to_bytes(&self) -> DbResult<Vec<u8>> {
        let mut out = self.transport.secret().to_vec();
        for confirmation in [&self.device_confirmation, &self.server_confirmation] {
            match unhex(confirmation) {
                Some(bytes) if bytes.len() == 32 => out.extend_from_slice(&bytes),
                _ => {
                    return Err(DbError::Invalid(
                        "a key confirmation is not 32 bytes of hex".into(),
                    ))
                }
            }
        }
        Ok(out)
    }

    fn from_bytes(key_id: u32, bytes: &[u8]) -> DbResult<ExchangeKeys> {
        let damaged =
            || DbError::Damaged("an activation exchange has keys of the wrong length".into());
        if bytes.len() != 96 {
            return Err(damaged());
        }
        Ok(ExchangeKeys {
            transport: TransportKey::from_slice(key_id, &bytes[..32]).ok_or_else(damaged)?,
            device_confirmation: hex(&bytes[32..64]),
            server_confirmation: hex(&bytes[64..]),
        })
    }
}

/// An exchange to store when the server sends its challenge.
#[derive(Debug)]
pub struct NewExchange<'a> {
    pub user: UserId,
    pub pin: Pin,
    /// The RefID the challenge is sent with (and the device confirms on).
    pub ref_id: RefId,
    pub keys: &'a ExchangeKeys,
    pub model: &'a str,
    pub os_version: &'a str,
}

/// A waiting exchange, its keys unsealed.
#[derive(Debug)]
pub struct OpenExchange {
    pub id: i64,
    pub user: UserId,
    pub pin: Pin,
    pub ref_id: RefId,
    pub keys: ExchangeKeys,
    pub model: String,
    pub os_version: String,
    pub started_at: PrimitiveDateTime,
    /// A wrong confirmation of this exchange already cost an attempt.
    pub attempt_counted: bool,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = activation_exchanges, check_for_backend(diesel::sqlite::Sqlite))]
struct ExchangeRow {
    id: i64,
    user_id: UserId,
    pin: String,
    ref_id: String,
    key_id: i64,
    sealed_keys: Vec<u8>,
    model: String,
    os_version: String,
    started_at: PrimitiveDateTime,
    attempt_counted: bool,
}

fn context(user: UserId, pin: Pin, ref_id: RefId, key_id: i64) -> String {
    format!("activation_exchanges/{user}/{pin}/{ref_id}/{key_id}")
}

/// The activation exchanges waiting for a device's confirmation.
#[derive(Debug)]
pub struct ActivationExchange;

impl ActivationExchange {
    /// Stores a new exchange at `now`, forgetting expired ones. If the user
    /// then has more than [`MAX_EXCHANGES_PER_USER`], the oldest go; returns
    /// how many were pushed out that way.
    pub fn start(
        conn: &mut Conn,
        sealer: &Sealer,
        new: &NewExchange<'_>,
        now: PrimitiveDateTime,
    ) -> DbResult<usize> {
        let key_id = i64::from(new.keys.transport.id);
        let mut plain = new.keys.to_bytes()?;
        let sealed = sealer.seal(&context(new.user, new.pin, new.ref_id, key_id), &plain);
        plain.fill(0);
        let sealed = sealed?;
        crate::db::write_transaction(conn, |conn| {
            Self::forget_expired(conn, now)?;
            diesel::insert_into(activation_exchanges::table)
                .values((
                    activation_exchanges::user_id.eq(new.user),
                    activation_exchanges::pin.eq(new.pin.to_string()),
                    activation_exchanges::ref_id.eq(new.ref_id.to_string()),
                    activation_exchanges::key_id.eq(key_id),
                    activation_exchanges::sealed_keys.eq(&sealed),
                    activation_exchanges::model.eq(new.model),
                    activation_exchanges::os_version.eq(new.os_version),
                    activation_exchanges::started_at.eq(now),
                    activation_exchanges::attempt_counted.eq(false),
                ))
                .execute(conn)?;
            let keep: Vec<i64> = activation_exchanges::table
                .filter(activation_exchanges::user_id.eq(new.user))
                .order((
                    activation_exchanges::started_at.desc(),
                    activation_exchanges::id.desc(),
                ))
                .limit(MAX_EXCHANGES_PER_USER)
                .select(activation_exchanges::id)
                .load(conn)?;
            let dropped = diesel::delete(
                activation_exchanges::table
                    .filter(activation_exchanges::user_id.eq(new.user))
                    .filter(activation_exchanges::id.ne_all(keep)),
            )
            .execute(conn)?;
            Ok(dropped)
        })
    }

    /// The exchange named by (`pin`, `ref_id`), if it has not expired at
    /// `now`.
    pub fn find(
        conn: &mut Conn,
        sealer: &Sealer,
        pin: Pin,
        ref_id: RefId,
        now: PrimitiveDateTime,
    ) -> DbResult<Option<OpenExchange>> {
        let row: Option<ExchangeRow> = activation_exchanges::table
            .filter(activation_exchanges::pin.eq(pin.to_string()))
            .filter(activation_exchanges::ref_id.eq(ref_id.to_string()))
            .filter(activation_exchanges::started_at.gt(now - EXCHANGE_TTL))
            .select(ExchangeRow::as_select())
            .first(conn)
            .optional()?;
        let Some(row) = row else {
            return Ok(None);
        };
        let row_pin = parse_pin(&row.pin)?;
        let row_ref: RefId = row.ref_id.parse().map_err(|_| {
            DbError::Damaged(format!(
                "an activation exchange has an unreadable RefID `{}`",
                row.ref_id
            ))
        })?;
        let key_id = u32::try_from(row.key_id).map_err(|_| {
            DbError::Damaged(format!(
                "an activation exchange has the key id {}, out of range",
                row.key_id
            ))
        })?;
        let mut plain = sealer.unseal(
            &context(row.user_id, row_pin, row_ref, row.key_id),
            &row.sealed_keys,
        )?;
        let keys = ExchangeKeys::from_bytes(key_id, &plain);
        plain.fill(0);
        Ok(Some(OpenExchange {
            id: row.id,
            user: row.user_id,
            pin: row_pin,
            ref_id: row_ref,
            keys: keys?,
            model: row.model,
            os_version: row.os_version,
            started_at: row.started_at,
            attempt_counted: row.attempt_counted,
        }))
    }

    /// Marks that a wrong confirmation of exchange `id` cost an attempt.
    /// Returns false, changing nothing, if one already had (or the exchange
    /// is gone): the caller then counts nothing.
    pub fn count_attempt(conn: &mut Conn, id: i64) -> DbResult<bool> {
        let updated = diesel::update(
            activation_exchanges::table
                .filter(activation_exchanges::id.eq(id))
                .filter(activation_exchanges::attempt_counted.eq(false)),
        )
        .set(activation_exchanges::attempt_counted.eq(true))
        .execute(conn)?;
        Ok(updated == 1)
    }

    /// The user's waiting exchanges at `now`.
    pub fn count_for_user(conn: &mut Conn, user: UserId, now: PrimitiveDateTime) -> DbResult<i64> {
        Ok(activation_exchanges::table
            .filter(activation_exchanges::user_id.eq(user))
            .filter(activation_exchanges::started_at.gt(now - EXCHANGE_TTL))
            .count()
            .get_result(conn)?)
    }

    /// Ends every exchange of the user (activated, or a new password).
    pub fn delete_for_user(conn: &mut Conn, user: UserId) -> DbResult<usize> {
        Ok(diesel::delete(
            activation_exchanges::table.filter(activation_exchanges::user_id.eq(user)),
        )
        .execute(conn)?)
    }

    /// Deletes exchanges older than [`EXCHANGE_TTL`] at `now`.
    pub fn forget_expired(conn: &mut Conn, now: PrimitiveDateTime) -> DbResult<usize> {
        Ok(diesel::delete(
            activation_exchanges::table
                .filter(activation_exchanges::started_at.le(now - EXCHANGE_TTL)),
        )
        .execute(conn)?)
    }
}

/// Activation requests already answered, by the SHA-256 of their `etp.dat`
/// (hex, [`bramble_proto::activation::request_digest`]).
#[derive(Debug)]
pub struct AnsweredRequest;

impl AnsweredRequest {
    /// Whether the request was answered within [`ANSWERED_KEPT`] of `now`.
    pub fn was_answered(conn: &mut Conn, digest: &str, now: PrimitiveDateTime) -> DbResult<bool> {
        let found: i64 = answered_activation_requests::table
            .filter(answered_activation_requests::digest.eq(digest))
            .filter(answered_activation_requests::answered_at.gt(now - ANSWERED_KEPT))
            .count()
            .get_result(conn)?;
        Ok(found > 0)
    }

    /// Records that the request is being answered at `now`, forgetting
    /// requests older than [`ANSWERED_KEPT`]. Returns false, changing
    /// nothing, if it was answered already.
    pub fn record(conn: &mut Conn, digest: &str, now: PrimitiveDateTime) -> DbResult<bool> {
        crate::db::write_transaction(conn, |conn| {
            diesel::delete(
                answered_activation_requests::table
                    .filter(answered_activation_requests::answered_at.le(now - ANSWERED_KEPT)),
            )
            .execute(conn)?;
            let inserted = diesel::insert_or_ignore_into(answered_activation_requests::table)
                .values((
                    answered_activation_requests::digest.eq(digest),
                    answered_activation_requests::answered_at.eq(now),
                ))
                .execute(conn)?;
            Ok(inserted == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;
    use crate::db::models::user::NewUser;
    use time::macros::datetime;

    const T0: PrimitiveDateTime = datetime!(2026-12-04 08:00);

    fn keys(n: u8) -> ExchangeKeys {
        ExchangeKeys {
            transport: TransportKey::new(u32::from(n) + 1, [n; 32]),
            device_confirmation: hex(&[n ^ 1; 32]),
            server_confirmation: hex(&[n ^ 2; 32]),
        }
    }

    fn start(
        conn: &mut Conn,
        sealer: &Sealer,
        user: UserId,
        n: u8,
        at: PrimitiveDateTime,
    ) -> DbResult<usize> {
        ActivationExchange::start(
            conn,
            sealer,
            &NewExchange {
                user,
                pin: Pin(0x1000 + u32::from(n)),
                ref_id: RefId(u64::from(n) + 100),
                keys: &keys(n),
                model: "9700",
                os_version: "5.0",
            },
            at,
        )
    }

    #[test]
    fn an_exchange_is_found_by_pin_and_ref_id_until_it_expires() {
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        db.run_blocking(|conn| {
            let alice = NewUser {
                display_name: "alice".into(),
                email: "alice@example.com".into(),
                mailbox_login: "alice".into(),
            }
            .save(conn)?
            .id;
            assert_eq!(start(conn, &sealer, alice, 3, T0)?, 0);
            let found =
                ActivationExchange::find(conn, &sealer, Pin(0x1003), RefId(103), T0)?.unwrap();
            assert_eq!(found.user, alice);
            assert_eq!(found.keys.transport, keys(3).transport);
            assert_eq!(found.keys.device_confirmation, keys(3).device_confirmation);
            assert_eq!(found.keys.server_confirmation, keys(3).server_confirmation);
            assert_eq!(
                (found.model.as_str(), found.attempt_counted),
                ("9700", false)
            );
            assert!(
                ActivationExchange::find(conn, &sealer, Pin(0x1003), RefId(104), T0)?.is_none(),
                "another RefID names another exchange"
            );
            // One wrong confirmation counts, a second does not.
            assert!(ActivationExchange::count_attempt(conn, found.id)?);
            assert!(!ActivationExchange::count_attempt(conn, found.id)?);
            let later = T0 + EXCHANGE_TTL - Duration::seconds(1);
            assert!(
                ActivationExchange::find(conn, &sealer, Pin(0x1003), RefId(103), later)?
                    .unwrap()
                    .attempt_counted
            );
            let expired = T0 + EXCHANGE_TTL;
            assert!(
                ActivationExchange::find(conn, &sealer, Pin(0x1003), RefId(103), expired)?
                    .is_none()
            );
            assert_eq!(ActivationExchange::forget_expired(conn, expired)?, 1);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_flood_of_exchanges_keeps_the_newest_eight() {
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        db.run_blocking(|conn| {
            let alice = NewUser {
                display_name: "alice".into(),
                email: "alice@example.com".into(),
                mailbox_login: "alice".into(),
            }
            .save(conn)?
            .id;
            let mut dropped = Vec::new();
            for n in 0..10u8 {
                dropped.push(start(
                    conn,
                    &sealer,
                    alice,
                    n,
                    T0 + Duration::seconds(i64::from(n)),
                )?);
            }
            assert_eq!(dropped, [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
            let at = T0 + Duration::seconds(10);
            assert_eq!(ActivationExchange::count_for_user(conn, alice, at)?, 8);
            for (n, kept) in [(0u8, false), (1, false), (2, true), (9, true)] {
                let found = ActivationExchange::find(
                    conn,
                    &sealer,
                    Pin(0x1000 + u32::from(n)),
                    RefId(u64::from(n) + 100),
                    at,
                )?;
                assert_eq!(found.is_some(), kept, "exchange {n}");
            }
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_sealed_exchange_moved_to_another_name_does_not_open() {
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        db.run_blocking(|conn| {
            let alice = NewUser {
                display_name: "alice".into(),
                email: "alice@example.com".into(),
                mailbox_login: "alice".into(),
            }
            .save(conn)?
            .id;
            start(conn, &sealer, alice, 1, T0)?;
            diesel::update(activation_exchanges::table)
                .set(activation_exchanges::ref_id.eq(RefId(999).to_string()))
                .execute(conn)?;
            assert!(ActivationExchange::find(conn, &sealer, Pin(0x1001), RefId(999), T0).is_err());
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn an_answered_request_is_remembered_for_the_longest_password_life() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            assert!(!AnsweredRequest::was_answered(conn, "ab", T0)?);
            assert!(AnsweredRequest::record(conn, "ab", T0)?);
            assert!(!AnsweredRequest::record(conn, "ab", T0)?, "only once");
            let late = T0 + Duration::hours(720);
            assert!(AnsweredRequest::was_answered(conn, "ab", late)?);
            let gone = T0 + ANSWERED_KEPT;
            assert!(!AnsweredRequest::was_answered(conn, "ab", gone)?);
            // Recording another request then prunes the old one.
            assert!(AnsweredRequest::record(conn, "cd", gone)?);
            let left: i64 = answered_activation_requests::table
                .count()
                .get_result(conn)?;
            assert_eq!(left, 1);
            Ok(())
        })
        .unwrap();
    }
}
