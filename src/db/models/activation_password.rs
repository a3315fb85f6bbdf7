//! Activation passwords and the activation steps of a user.
//!
//! A user has at most one activation password. It is stored only as an
//! argon2 hash, with its expiry and the number of failed attempts; after
//! [`MAX_FAILED_ATTEMPTS`] wrong guesses it no longer opens, and a correct
//! guess deletes it. Attempts are counted by conditional statements
//! (`… WHERE failed_attempts < 5`), so concurrent guesses can never count
//! past the limit nor use one password twice.
//!
//! Setting a password puts the user in "Initializing"; every later step
//! (Activating … Completed) is recorded in `activation_events` with its time
//! by [`record_status`]; [`advance`] moves an activation on only in order
//! (the Policy Service and the Synchronization Service both use it).
//! Lifetimes and generated passwords are the Policy Service's choice.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use diesel::prelude::*;
use serde::Serialize;
use time::PrimitiveDateTime;

use crate::db::ids::UserId;
use crate::db::models::user::{ActivationStatus, User};
use crate::db::schema::{activation_events, activation_passwords, users};
use crate::db::{Conn, DbError, DbResult, Sealer};

/// Wrong guesses after which an activation password no longer opens.
pub const MAX_FAILED_ATTEMPTS: i32 = 5;

/// An activation password without its hash: what the console shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivationPasswordInfo {
    pub user_id: UserId,
    pub created_at: PrimitiveDateTime,
    pub expires_at: PrimitiveDateTime,
    pub failed_attempts: i32,
}

/// The answer to a guess of a user's activation password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Verification {
    /// The password was right; it is deleted and the user is "Activating".
    Accepted,
    /// The password was wrong; the attempt is counted.
    Wrong { attempts_left: u32 },
    /// The password's lifetime is over; the guess was not checked or counted.
    Expired,
    /// Too many wrong guesses; the guess was not checked.
    Exhausted,
    /// The user has no activation password (never set, or already used).
    NoPassword,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = activation_passwords, check_for_backend(diesel::sqlite::Sqlite))]
struct PasswordRow {
    user_id: UserId,
    password_hash: String,
    created_at: PrimitiveDateTime,
    expires_at: PrimitiveDateTime,
    failed_attempts: i32,
}

impl From<&PasswordRow> for ActivationPasswordInfo {
    fn from(row: &PasswordRow) -> Self {
        ActivationPasswordInfo {
            user_id: row.user_id,
            created_at: row.created_at,
            expires_at: row.expires_at,
            failed_attempts: row.failed_attempts,
        }
    }
}

/// One step of a user's activation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivationEvent {
    pub user_id: UserId,
    pub status: ActivationStatus,
    pub at: PrimitiveDateTime,
}

fn hash(password: &str) -> DbResult<String> {
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).map_err(|e| DbError::Seal(e.into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| DbError::Encoding {
        what: "salt the activation password",
        message: e.to_string(),
    })?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| DbError::Encoding {
            what: "hash the activation password",
            message: e.to_string(),
        })?
        .to_string())
}

fn attempts_left(failed: i32) -> u32 {
    u32::try_from((MAX_FAILED_ATTEMPTS - failed).max(0)).unwrap_or(0)
}

fn secret_context(user: UserId) -> String {
    format!("activation_passwords/{user}/secret")
}

fn matches(password_hash: &str, candidate: &str) -> bool {
    PasswordHash::new(password_hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(candidate.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Moves the user to `status` and records the step with its time. Returns
/// false, recording nothing, if there is no such user.
pub fn record_status(
    conn: &mut Conn,
    user: UserId,
    status: ActivationStatus,
    at: PrimitiveDateTime,
) -> DbResult<bool> {
    crate::db::write_transaction(conn, |conn| {
        let updated = diesel::update(users::table.find(user))
            .set((
                users::activation_status.eq(status.as_str()),
                users::updated_at.eq(at),
            ))
            .execute(conn)?;
        if updated == 0 {
            return Ok(false);
        }
        diesel::insert_into(activation_events::table)
            .values((
                activation_events::user_id.eq(user),
                activation_events::status.eq(status.as_str()),
                activation_events::at.eq(at),
            ))
            .execute(conn)?;
        Ok(true)
    })
}

/// Why an activation did not move on ([`advance`]).
#[derive(Debug, thiserror::Error)]
pub enum ActivationStepError {
    #[error(
        "user {user} is {}; the activation cannot move to {} from there",
        .from.as_str(),
        .to.as_str()
    )]
    OutOfOrder {
        user: UserId,
        from: ActivationStatus,
        to: ActivationStatus,
    },
    #[error("there is no user {0}")]
    NoUser(UserId),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for ActivationStepError {
    fn from(e: diesel::result::Error) -> Self {
        ActivationStepError::Db(e.into())
    }
}

impl ActivationStepError {
    /// Stable code for administrators and the console.
    pub fn code(&self) -> &'static str {
        match self {
            ActivationStepError::OutOfOrder { .. } => "ACTIVATION_OUT_OF_ORDER",
            ActivationStepError::NoUser(_) => "USER_NOT_FOUND",
            ActivationStepError::Db(e) => e.code(),
        }
    }
}

/// Moves the user's activation one step on, to `to`, recorded at `at`.
/// Only the next step of a successful activation (see
/// [`ActivationStatus::next`]) or `Failed` from a step in progress is
/// accepted; "Initializing" and "Activating" are reached by setting and
/// using an activation password ([`ActivationPassword`]). Anything else
/// changes nothing.
pub fn advance(
    conn: &mut Conn,
    user: UserId,
    to: ActivationStatus,
    at: PrimitiveDateTime,
) -> Result<(), ActivationStepError> {
    crate::db::write_transaction(conn, |conn| {
        let from = User::find_by_id(conn, user)?
            .ok_or(ActivationStepError::NoUser(user))?
            .activation_status;
        let allowed = match to {
            ActivationStatus::Failed => from.next().is_some(),
            ActivationStatus::NotActivated
            | ActivationStatus::Initializing
            | ActivationStatus::Activating => false,
            _ => from.next() == Some(to),
        };
        if !allowed {
            return Err(ActivationStepError::OutOfOrder { user, from, to });
        }
        record_status(conn, user, to, at)?;
        Ok(())
    })
}

impl ActivationEvent {
    /// The user's activation steps, oldest first.
    pub fn find_for_user(conn: &mut Conn, user: UserId) -> DbResult<Vec<ActivationEvent>> {
        let rows: Vec<(String, PrimitiveDateTime)> = activation_events::table
            .filter(activation_events::user_id.eq(user))
            .order(activation_events::id.asc())
            .select((activation_events::status, activation_events::at))
            .load(conn)?;
        rows.into_iter()
            .map(|(status, at)| {
                let status = ActivationStatus::parse(&status).ok_or_else(|| {
                    DbError::Damaged(format!(
                        "user {user} has an activation step in an unknown status `{status}`"
                    ))
                })?;
                Ok(ActivationEvent {
                    user_id: user,
                    status,
                    at,
                })
            })
            .collect()
    }
}

/// The activation passwords of users.
#[derive(Debug)]
pub struct ActivationPassword;

impl ActivationPassword {
    /// Hashes `password` and stores it as the user's activation password
    /// (replacing an earlier one and its failed attempts), valid from `now`
    /// until `expires_at`; the user becomes "Initializing". Checks of length
    /// and lifetime belong to the caller.
    pub fn set(
        conn: &mut Conn,
        sealer: &Sealer,
        user: UserId,
        password: &str,
        now: PrimitiveDateTime,
        expires_at: PrimitiveDateTime,
    ) -> DbResult<ActivationPasswordInfo> {
        if password.is_empty() {
            return Err(DbError::Invalid(
                "an activation password cannot be empty".into(),
            ));
        }
        if expires_at <= now {
            return Err(DbError::Invalid(
                "an activation password must expire after it is set".into(),
            ));
        }
        // Hash before taking the write lock: argon2 is slow on purpose.
        let password_hash = hash(password)?;
        let email: Option<String> = users::table
            .find(user)
            .select(users::email)
            .first(conn)
            .optional()?;
        let email = email.ok_or_else(|| DbError::Invalid(format!("there is no user {user}")))?;
        let secret = bramble_proto::activation::password_secret(password, &email).map_err(|e| {
            DbError::Encoding {
                what: "derive the activation secret",
                message: e.to_string(),
            }
        })?;
        let sealed_secret = sealer.seal(&secret_context(user), &secret)?;
        crate::db::write_transaction(conn, |conn| {
            let row = diesel::insert_into(activation_passwords::table)
                .values((
                    activation_passwords::user_id.eq(user),
                    activation_passwords::password_hash.eq(&password_hash),
                    activation_passwords::created_at.eq(now),
                    activation_passwords::expires_at.eq(expires_at),
                    activation_passwords::failed_attempts.eq(0),
                    activation_passwords::sealed_secret.eq(&sealed_secret),
                ))
                .on_conflict(activation_passwords::user_id)
                .do_update()
                .set((
                    activation_passwords::password_hash.eq(&password_hash),
                    activation_passwords::created_at.eq(now),
                    activation_passwords::expires_at.eq(expires_at),
                    activation_passwords::failed_attempts.eq(0),
                    activation_passwords::sealed_secret.eq(&sealed_secret),
                ))
                .returning(PasswordRow::as_returning())
                .get_result(conn)
                .map_err(|e| match e {
                    diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                        _,
                    ) => DbError::Invalid(format!("there is no user {user}")),
                    other => other.into(),
                })?;
            // Exchanges answered with the old password must not complete.
            crate::db::models::activation_exchange::ActivationExchange::delete_for_user(
                conn, user,
            )?;
            record_status(conn, user, ActivationStatus::Initializing, now)?;
            Ok(ActivationPasswordInfo::from(&row))
        })
    }

    /// The user's activation password, without its hash.
    pub fn find_by_user(conn: &mut Conn, user: UserId) -> DbResult<Option<ActivationPasswordInfo>> {
        Ok(Self::row(conn, user)?
            .as_ref()
            .map(ActivationPasswordInfo::from))
    }

    fn row(conn: &mut Conn, user: UserId) -> DbResult<Option<PasswordRow>> {
        Ok(activation_passwords::table
            .find(user)
            .select(PasswordRow::as_select())
            .first(conn)
            .optional()?)
    }

    /// Checks `candidate` against the user's activation password at `now`.
    /// A wrong guess counts against [`MAX_FAILED_ATTEMPTS`]; a right one
    /// deletes the password and moves the user to "Activating", in one
    /// transaction. Expired and exhausted passwords are not checked at all.
    pub fn verify(
        conn: &mut Conn,
        user: UserId,
        candidate: &str,
        now: PrimitiveDateTime,
    ) -> DbResult<Verification> {
        // A concurrent guess or a new password can change the row between
        // reading it and the conditional write; then look again.
        for _ in 0..3 {
            let Some(row) = Self::row(conn, user)? else {
                return Ok(Verification::NoPassword);
            };
            if row.failed_attempts >= MAX_FAILED_ATTEMPTS {
                return Ok(Verification::Exhausted);
            }
            if now >= row.expires_at {
                return Ok(Verification::Expired);
            }
            let same_row = activation_passwords::user_id
                .eq(user)
                .and(activation_passwords::password_hash.eq(row.password_hash.clone()))
                .and(activation_passwords::failed_attempts.lt(MAX_FAILED_ATTEMPTS))
                .and(activation_passwords::expires_at.gt(now));
            if matches(&row.password_hash, candidate) {
                let used = crate::db::write_transaction(conn, |conn| {
                    let deleted = diesel::delete(activation_passwords::table.filter(same_row))
                        .execute(conn)?;
                    if deleted == 1 {
                        record_status(conn, user, ActivationStatus::Activating, now)?;
                    }
                    DbResult::Ok(deleted == 1)
                })?;
                if used {
                    return Ok(Verification::Accepted);
                }
            } else {
                let counted: Option<i32> = diesel::update(activation_passwords::table)
                    .filter(same_row)
                    .set(
                        activation_passwords::failed_attempts
                            .eq(activation_passwords::failed_attempts + 1),
                    )
                    .returning(activation_passwords::failed_attempts)
                    .get_result(conn)
                    .optional()?;
                if let Some(failed) = counted {
                    let left = (MAX_FAILED_ATTEMPTS - failed).max(0);
                    return Ok(Verification::Wrong {
                        attempts_left: u32::try_from(left).unwrap_or(0),
                    });
                }
            }
        }
        Err(DbError::Invalid(format!(
            "the activation password of user {user} keeps changing; try again"
        )))
    }

    /// Whether the password can still open at `now`: the attempts it has
    /// left, or why not. Changes nothing.
    pub fn usable(
        conn: &mut Conn,
        user: UserId,
        now: PrimitiveDateTime,
    ) -> DbResult<Result<u32, Verification>> {
        let Some(row) = Self::row(conn, user)? else {
            return Ok(Err(Verification::NoPassword));
        };
        if row.failed_attempts >= MAX_FAILED_ATTEMPTS {
            return Ok(Err(Verification::Exhausted));
        }
        if now >= row.expires_at {
            return Ok(Err(Verification::Expired));
        }
        Ok(Ok(attempts_left(row.failed_attempts)))
    }

    /// A device asks to activate: if the password is usable now, the
    /// secret the exchange runs with; otherwise why not. Answering a request
    /// costs no attempt: the challenge lets nobody test a guess, only a
    /// wrong key confirmation does ([`ActivationPassword::count_failed_exchange`]).
    pub fn exchange_secret(
        conn: &mut Conn,
        sealer: &Sealer,
        user: UserId,
        now: PrimitiveDateTime,
    ) -> DbResult<Result<[u8; 32], Verification>> {
        if let Err(why) = Self::usable(conn, user, now)? {
            return Ok(Err(why));
        }
        let sealed: Option<Option<Vec<u8>>> = activation_passwords::table
            .find(user)
            .select(activation_passwords::sealed_secret)
            .first(conn)
            .optional()?;
        let Some(sealed) = sealed else {
            return Ok(Err(Verification::NoPassword));
        };
        let Some(sealed) = sealed else {
            return Err(DbError::Invalid(format!(
                "the activation password of user {user} was set by an older version; set it again"
            )));
        };
        let secret = sealer.unseal(&secret_context(user), &sealed)?;
        let secret: [u8; 32] = secret
            .try_into()
            .map_err(|_| DbError::Damaged("the activation secret has the wrong length".into()))?;
        Ok(Ok(secret))
    }

    /// A device's key confirmation did not check: a tested guess. Counts
    /// one failed attempt if the password is usable at `now` and returns
    /// the attempts left, or says why it was not counted. The caller counts
    /// at most once per exchange.
    pub fn count_failed_exchange(
        conn: &mut Conn,
        user: UserId,
        now: PrimitiveDateTime,
    ) -> DbResult<Result<u32, Verification>> {
        let counted: Option<i32> = diesel::update(activation_passwords::table)
            .filter(activation_passwords::user_id.eq(user))
            .filter(activation_passwords::failed_attempts.lt(MAX_FAILED_ATTEMPTS))
            .filter(activation_passwords::expires_at.gt(now))
            .set(
                activation_passwords::failed_attempts.eq(activation_passwords::failed_attempts + 1),
            )
            .returning(activation_passwords::failed_attempts)
            .get_result(conn)
            .optional()?;
        match counted {
            Some(failed) => Ok(Ok(attempts_left(failed))),
            None => Ok(Self::usable(conn, user, now)?.and(Err(Verification::Exhausted))),
        }
    }

    /// The exchange was confirmed: the password is used up (deleted) and
    /// the user is "Activating". Returns false if it was already gone.
    pub fn consume(conn: &mut Conn, user: UserId, now: PrimitiveDateTime) -> DbResult<bool> {
        crate::db::write_transaction(conn, |conn| {
            let deleted = diesel::delete(activation_passwords::table.find(user)).execute(conn)? > 0;
            record_status(conn, user, ActivationStatus::Activating, now)?;
            Ok(deleted)
        })
    }

    /// Removes the user's activation password; returns whether there was one.
    pub fn delete_for_user(conn: &mut Conn, user: UserId) -> DbResult<bool> {
        Ok(diesel::delete(activation_passwords::table.find(user)).execute(conn)? > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;
    use crate::db::models::user::{NewUser, User};
    use time::macros::datetime;
    use time::Duration;

    const T0: PrimitiveDateTime = datetime!(2026-11-27 08:00);

    fn user(conn: &mut Conn, name: &str) -> User {
        NewUser {
            display_name: name.into(),
            email: format!("{name}@example.com"),
            mailbox_login: name.into(),
        }
        .save(conn)
        .unwrap()
    }

    #[test]
    fn stored_as_hash_and_deleted_once_used() {
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        db.run_blocking(|conn| {
            let alice = user(conn, "alice");
            let info = ActivationPassword::set(
                conn,
                &sealer,
                alice.id,
                "kx7m2qpa",
                T0,
                T0 + Duration::hours(48),
            )?;
            assert_eq!(info.failed_attempts, 0);
            let stored: String = activation_passwords::table
                .select(activation_passwords::password_hash)
                .first(conn)?;
            assert!(stored.starts_with("$argon2"), "{stored}");
            assert!(!stored.contains("kx7m2qpa"));
            assert_eq!(
                User::find_by_id(conn, alice.id)?.unwrap().activation_status,
                ActivationStatus::Initializing
            );

            assert_eq!(
                ActivationPassword::verify(conn, alice.id, "kx7m2qpa", T0 + Duration::hours(1))?,
                Verification::Accepted
            );
            assert!(ActivationPassword::find_by_user(conn, alice.id)?.is_none());
            assert_eq!(
                ActivationPassword::verify(conn, alice.id, "kx7m2qpa", T0 + Duration::hours(1))?,
                Verification::NoPassword,
                "used once only"
            );
            let steps: Vec<_> = ActivationEvent::find_for_user(conn, alice.id)?
                .into_iter()
                .map(|e| (e.status, e.at))
                .collect();
            assert_eq!(
                steps,
                [
                    (ActivationStatus::Initializing, T0),
                    (ActivationStatus::Activating, T0 + Duration::hours(1)),
                ]
            );
            assert_eq!(
                User::find_by_id(conn, alice.id)?.unwrap().activation_status,
                ActivationStatus::Activating
            );
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn five_wrong_guesses_exhaust_it() {
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        db.run_blocking(|conn| {
            let alice = user(conn, "alice");
            ActivationPassword::set(
                conn,
                &sealer,
                alice.id,
                "right",
                T0,
                T0 + Duration::hours(48),
            )?;
            for left in (0..5).rev() {
                assert_eq!(
                    ActivationPassword::verify(conn, alice.id, "wrong", T0)?,
                    Verification::Wrong {
                        attempts_left: left
                    }
                );
            }
            assert_eq!(
                ActivationPassword::verify(conn, alice.id, "right", T0)?,
                Verification::Exhausted,
                "even the right password no longer opens"
            );
            assert_eq!(
                ActivationPassword::find_by_user(conn, alice.id)?
                    .unwrap()
                    .failed_attempts,
                5,
                "not counted past the limit"
            );
            // A new password starts afresh.
            ActivationPassword::set(
                conn,
                &sealer,
                alice.id,
                "again",
                T0,
                T0 + Duration::hours(1),
            )?;
            assert_eq!(
                ActivationPassword::verify(conn, alice.id, "again", T0)?,
                Verification::Accepted
            );
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn expiry_and_unknown_users() {
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        db.run_blocking(|conn| {
            let alice = user(conn, "alice");
            let bob = user(conn, "bob");
            ActivationPassword::set(
                conn,
                &sealer,
                alice.id,
                "right",
                T0,
                T0 + Duration::hours(48),
            )?;
            let end = T0 + Duration::hours(48);
            assert_eq!(
                ActivationPassword::verify(conn, alice.id, "wrong", end)?,
                Verification::Expired
            );
            assert_eq!(
                ActivationPassword::verify(conn, alice.id, "right", end)?,
                Verification::Expired
            );
            assert_eq!(
                ActivationPassword::find_by_user(conn, alice.id)?
                    .unwrap()
                    .failed_attempts,
                0,
                "guesses at an expired password are not counted"
            );
            assert_eq!(
                ActivationPassword::verify(conn, bob.id, "right", T0)?,
                Verification::NoPassword
            );
            assert!(matches!(
                ActivationPassword::set(conn, &sealer, UserId(9_999), "x", T0, end),
                Err(DbError::Invalid(_))
            ));
            assert!(matches!(
                ActivationPassword::set(conn, &sealer, bob.id, "x", T0, T0),
                Err(DbError::Invalid(_))
            ));
            assert!(ActivationPassword::find_by_user(conn, bob.id)?.is_none());
            assert!(ActivationPassword::delete_for_user(conn, alice.id)?);
            assert!(!ActivationPassword::delete_for_user(conn, alice.id)?);

            ActivationPassword::set(conn, &sealer, bob.id, "bobs", T0, T0 + Duration::hours(1))?;
            User::delete_by_id(conn, bob.id)?;
            let left: i64 = activation_passwords::table.count().get_result(conn)?;
            assert_eq!(left, 0, "the password goes with the user");
            let steps: i64 = activation_events::table
                .filter(activation_events::user_id.eq(bob.id))
                .count()
                .get_result(conn)?;
            assert_eq!(steps, 0, "and so do the user's activation steps");
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn answering_an_exchange_costs_nothing_and_wrong_confirmations_stop_at_five() {
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        db.run_blocking(|conn| {
            let alice = user(conn, "alice");
            let end = T0 + Duration::hours(48);
            ActivationPassword::set(conn, &sealer, alice.id, "right", T0, end)?;
            for _ in 0..10 {
                assert!(ActivationPassword::exchange_secret(conn, &sealer, alice.id, T0)?.is_ok());
            }
            assert_eq!(ActivationPassword::usable(conn, alice.id, T0)?, Ok(5));
            for left in (0..5).rev() {
                assert_eq!(
                    ActivationPassword::count_failed_exchange(conn, alice.id, T0)?,
                    Ok(left)
                );
            }
            assert_eq!(
                ActivationPassword::count_failed_exchange(conn, alice.id, T0)?,
                Err(Verification::Exhausted)
            );
            assert_eq!(
                ActivationPassword::exchange_secret(conn, &sealer, alice.id, T0)?,
                Err(Verification::Exhausted)
            );
            ActivationPassword::set(conn, &sealer, alice.id, "again", T0, end)?;
            assert_eq!(
                ActivationPassword::count_failed_exchange(conn, alice.id, end)?,
                Err(Verification::Expired),
                "an expired password counts nothing"
            );
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn concurrent_wrong_guesses_never_count_past_the_limit() {
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        let alice = db
            .run_blocking(|conn| {
                let alice = user(conn, "alice");
                ActivationPassword::set(
                    conn,
                    &sealer,
                    alice.id,
                    "right",
                    T0,
                    T0 + Duration::hours(48),
                )?;
                Ok(alice)
            })
            .unwrap();
        let outcomes: Vec<Verification> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let db = db.clone();
                    scope.spawn(move || {
                        (0..4)
                            .map(|_| {
                                db.run_blocking(|conn| {
                                    ActivationPassword::verify(conn, alice.id, "wrong", T0)
                                })
                                .unwrap()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        let wrong = outcomes
            .iter()
            .filter(|o| matches!(o, Verification::Wrong { .. }))
            .count();
        let exhausted = outcomes
            .iter()
            .filter(|o| **o == Verification::Exhausted)
            .count();
        assert_eq!((wrong, exhausted), (5, 3), "{outcomes:?}");
        let mut left: Vec<u32> = outcomes
            .iter()
            .filter_map(|o| match o {
                Verification::Wrong { attempts_left } => Some(*attempts_left),
                _ => None,
            })
            .collect();
        left.sort_unstable();
        assert_eq!(left, [0, 1, 2, 3, 4], "each attempt counted once");
    }
}
