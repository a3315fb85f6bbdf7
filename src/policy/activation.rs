//! Activation passwords as the Policy Service hands them out (seed:
//! "Activating a BlackBerry smartphone over the wireless network", step 1).
//!
//! An administrator sets a password or has one generated (default 8
//! characters from an alphabet without look-alikes, drawn from openssl's
//! CSPRNG). It lives 48 hours by default and 720 hours at most, is stored
//! only as an argon2 hash, stops working after 5 wrong guesses and is
//! deleted once used ([`crate::db::models::activation_password`]). Times
//! come from a [`Clock`], so tests drive expiry with a paused clock.
//!
//! The later steps (Encryption verified … Completed) are moved on in order
//! by [`crate::db::models::activation_password::advance`].

use time::Duration;

use crate::clock::Clock;
use crate::db::ids::UserId;
use crate::db::models::activation_password::{
    ActivationPassword, ActivationPasswordInfo, Verification,
};
use crate::db::models::user::User;
use crate::db::{Conn, DbError, DbResult, Sealer};

/// Lifetime of a password unless the administrator says otherwise.
pub const DEFAULT_LIFETIME_HOURS: u32 = 48;
/// The longest lifetime an administrator may choose.
pub const MAX_LIFETIME_HOURS: u32 = 720;
/// Length of a generated password unless the administrator says otherwise.
pub const DEFAULT_LENGTH: usize = 8;
/// Shortest and longest accepted passwords, set or generated.
pub const MIN_LENGTH: usize = 4;
pub const MAX_LENGTH: usize = 64;
/// Letters and digits that cannot be mistaken for one another when read
/// aloud or typed on a small keyboard (no 0/o, 1/l/i).
pub const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// Why an activation password was not set.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("an activation password can live at most {MAX_LIFETIME_HOURS} hours; got {0}")]
    LifetimeTooLong(u32),
    #[error("an activation password must live at least 1 hour; got 0")]
    LifetimeZero,
    #[error("an activation password must have between {MIN_LENGTH} and {MAX_LENGTH} characters; got {0}")]
    Length(usize),
    #[error("no user has the e-mail address {0}; add the user first")]
    UnknownUser(String),
    #[error("cannot generate a random password: {0}")]
    Random(#[from] openssl::error::ErrorStack),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for ActivationError {
    fn from(e: diesel::result::Error) -> Self {
        ActivationError::Db(e.into())
    }
}

impl ActivationError {
    /// Stable code for administrators and the console.
    pub fn code(&self) -> &'static str {
        match self {
            ActivationError::LifetimeTooLong(_) | ActivationError::LifetimeZero => {
                "ACTIVATION_LIFETIME_INVALID"
            }
            ActivationError::Length(_) => "ACTIVATION_PASSWORD_LENGTH",
            ActivationError::UnknownUser(_) => "USER_NOT_FOUND",
            ActivationError::Random(_) => "RANDOM_FAILED",
            ActivationError::Db(e) => e.code(),
        }
    }
}

/// The lifetime in hours, checked; `None` is the default.
pub fn lifetime(hours: Option<u32>) -> Result<Duration, ActivationError> {
    match hours.unwrap_or(DEFAULT_LIFETIME_HOURS) {
        0 => Err(ActivationError::LifetimeZero),
        h if h > MAX_LIFETIME_HOURS => Err(ActivationError::LifetimeTooLong(h)),
        h => Ok(Duration::hours(i64::from(h))),
    }
}

/// A random password of `length` characters from [`ALPHABET`]. Bytes that
/// would bias the choice (the tail above the largest multiple of the
/// alphabet's size) are drawn again.
pub fn generate(length: usize) -> Result<String, ActivationError> {
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
        return Err(ActivationError::Length(length));
    }
    let size = ALPHABET.len();
    let limit = 256 - 256 % size;
    let mut out = String::with_capacity(length);
    let mut buf = [0u8; 64];
    while out.len() < length {
        openssl::rand::rand_bytes(&mut buf)?;
        for &byte in buf.iter().filter(|&&b| usize::from(b) < limit) {
            if out.len() == length {
                break;
            }
            if let Some(&c) = ALPHABET.get(usize::from(byte) % size) {
                out.push(char::from(c));
            }
        }
    }
    Ok(out)
}

fn user_by_email(conn: &mut Conn, email: &str) -> Result<User, ActivationError> {
    User::find_by_email(conn, email.trim())?
        .ok_or_else(|| ActivationError::UnknownUser(email.trim().to_owned()))
}

/// Sets the activation password of the user with `email`, valid for
/// `hours` (default 48, at most 720). The user becomes "Initializing".
pub fn set(
    conn: &mut Conn,
    sealer: &Sealer,
    clock: &Clock,
    email: &str,
    password: &str,
    hours: Option<u32>,
) -> Result<(User, ActivationPasswordInfo), ActivationError> {
    let length = password.chars().count();
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
        return Err(ActivationError::Length(length));
    }
    let lifetime = lifetime(hours)?;
    let user = user_by_email(conn, email)?;
    let now = clock.now_db();
    let info = ActivationPassword::set(conn, sealer, user.id, password, now, now + lifetime)?;
    Ok((user, info))
}

/// Generates a password of `length` characters (default 8) for the user
/// with `email` and sets it; returns the password, to be shown once.
pub fn generate_for(
    conn: &mut Conn,
    sealer: &Sealer,
    clock: &Clock,
    email: &str,
    length: Option<usize>,
    hours: Option<u32>,
) -> Result<(User, ActivationPasswordInfo, String), ActivationError> {
    let password = generate(length.unwrap_or(DEFAULT_LENGTH))?;
    let (user, info) = set(conn, sealer, clock, email, &password, hours)?;
    Ok((user, info, password))
}

/// Checks a device's guess of the user's activation password now;
/// attempts are counted atomically (see [`ActivationPassword::verify`]).
pub fn verify(
    conn: &mut Conn,
    clock: &Clock,
    user: UserId,
    candidate: &str,
) -> DbResult<Verification> {
    ActivationPassword::verify(conn, user, candidate, clock.now_db())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::activation_password::{advance, ActivationStepError};
    use crate::db::models::test_db;
    use crate::db::models::user::{ActivationStatus, NewUser};

    fn alice(conn: &mut Conn) -> User {
        NewUser {
            display_name: "Alice".into(),
            email: "alice@example.com".into(),
            mailbox_login: "alice".into(),
        }
        .save(conn)
        .unwrap()
    }

    #[test]
    fn generated_passwords_use_the_alphabet_and_length() {
        let first = generate(DEFAULT_LENGTH).unwrap();
        assert_eq!(first.len(), 8);
        assert!(first.bytes().all(|b| ALPHABET.contains(&b)), "{first}");
        let long = generate(40).unwrap();
        assert_eq!(long.len(), 40);
        assert!(!long.contains(['0', 'o', '1', 'l', 'i']), "{long}");
        assert_ne!(generate(12).unwrap(), generate(12).unwrap());
        assert!(matches!(generate(3), Err(ActivationError::Length(3))));
        assert!(matches!(generate(65), Err(ActivationError::Length(65))));
        // Every character of the alphabet turns up: no position is stuck.
        let many: String = (0..20).map(|_| generate(64).unwrap()).collect();
        for &c in ALPHABET {
            assert!(
                many.contains(char::from(c)),
                "{} never drawn",
                char::from(c)
            );
        }
    }

    #[test]
    fn lifetimes_default_to_48_hours_and_stop_at_720() {
        assert_eq!(lifetime(None).unwrap(), Duration::hours(48));
        assert_eq!(lifetime(Some(720)).unwrap(), Duration::hours(720));
        let err = lifetime(Some(721)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "an activation password can live at most 720 hours; got 721"
        );
        assert_eq!(err.code(), "ACTIVATION_LIFETIME_INVALID");
        assert!(lifetime(Some(0)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn expires_by_the_clock() {
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        let clock = Clock::new();
        let (user, password) = db
            .run_blocking(|conn| {
                let user = alice(conn);
                let (_, info, password) =
                    generate_for(conn, &sealer, &clock, "alice@example.com", None, Some(2))
                        .map_err(|e| DbError::Invalid(e.to_string()))?;
                assert_eq!(info.expires_at - info.created_at, Duration::hours(2));
                Ok((user, password))
            })
            .unwrap();
        assert_eq!(
            db.run_blocking(|conn| User::find_by_id(conn, user.id))
                .unwrap()
                .unwrap()
                .activation_status,
            ActivationStatus::Initializing
        );
        tokio::time::advance(std::time::Duration::from_secs(2 * 3600)).await;
        let outcome = db
            .run_blocking(|conn| verify(conn, &clock, user.id, &password))
            .unwrap();
        assert_eq!(outcome, Verification::Expired);
    }

    #[tokio::test(start_paused = true)]
    async fn works_until_just_before_expiry() {
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        let clock = Clock::new();
        let user = db
            .run_blocking(|conn| {
                let user = alice(conn);
                set(conn, &sealer, &clock, "alice@example.com", "kx7m2qpa", None)
                    .map_err(|e| DbError::Invalid(e.to_string()))?;
                Ok(user)
            })
            .unwrap();
        tokio::time::advance(std::time::Duration::from_secs(48 * 3600 - 1)).await;
        let outcome = db
            .run_blocking(|conn| verify(conn, &clock, user.id, "kx7m2qpa"))
            .unwrap();
        assert_eq!(outcome, Verification::Accepted);
    }

    #[tokio::test(start_paused = true)]
    async fn steps_are_recorded_in_order_with_their_times() {
        use crate::db::models::activation_password::ActivationEvent;
        use ActivationStatus::*;
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        let clock = Clock::new();
        let user = db.run_blocking(|conn| Ok(alice(conn))).unwrap();
        let step = |to| {
            db.run_blocking(|conn| Ok(advance(conn, user.id, to, clock.now_db())))
                .unwrap()
        };
        assert!(
            matches!(
                step(EncryptionVerified),
                Err(ActivationStepError::OutOfOrder { .. })
            ),
            "no skipping ahead from not activated"
        );
        db.run_blocking(|conn| {
            set(conn, &sealer, &clock, "alice@example.com", "kx7m2qpa", None)
                .map_err(|e| DbError::Invalid(e.to_string()))?;
            Ok(())
        })
        .unwrap();
        tokio::time::advance(std::time::Duration::from_secs(60)).await;
        assert_eq!(
            db.run_blocking(|conn| verify(conn, &clock, user.id, "kx7m2qpa"))
                .unwrap(),
            Verification::Accepted
        );
        let skipped = step(PolicyApplied).unwrap_err();
        assert_eq!(skipped.code(), "ACTIVATION_OUT_OF_ORDER");
        assert_eq!(
            skipped.to_string(),
            format!(
                "user {} is activating; the activation cannot move to policy_applied from there",
                user.id
            )
        );
        for to in [
            EncryptionVerified,
            PolicyApplied,
            ServicesReceived,
            Synchronizing,
            Completed,
        ] {
            tokio::time::advance(std::time::Duration::from_secs(1)).await;
            step(to).unwrap();
        }
        assert!(
            step(Failed).is_err(),
            "a completed activation does not fail"
        );
        let events = db
            .run_blocking(|conn| ActivationEvent::find_for_user(conn, user.id))
            .unwrap();
        let statuses: Vec<_> = events.iter().map(|e| e.status).collect();
        assert_eq!(
            statuses,
            [
                Initializing,
                Activating,
                EncryptionVerified,
                PolicyApplied,
                ServicesReceived,
                Synchronizing,
                Completed
            ]
        );
        assert_eq!(
            events[1].at - events[0].at,
            Duration::seconds(60),
            "times come from the clock"
        );
        assert_eq!(events[6].at - events[1].at, Duration::seconds(5));
        assert_eq!(
            db.run_blocking(|conn| User::find_by_id(conn, user.id))
                .unwrap()
                .unwrap()
                .activation_status,
            Completed
        );
    }

    #[test]
    fn a_step_in_progress_can_fail() {
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        let clock = Clock::new();
        db.run_blocking(|conn| {
            let user = alice(conn);
            set(conn, &sealer, &clock, "alice@example.com", "kx7m2qpa", None)
                .map_err(|e| DbError::Invalid(e.to_string()))?;
            advance(conn, user.id, ActivationStatus::Failed, clock.now_db())
                .map_err(|e| DbError::Invalid(e.to_string()))?;
            assert_eq!(
                User::find_by_id(conn, user.id)?.unwrap().activation_status,
                ActivationStatus::Failed
            );
            assert!(advance(
                conn,
                UserId(9_999),
                ActivationStatus::Failed,
                clock.now_db()
            )
            .is_err());
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn bad_requests_change_nothing() {
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        let clock = Clock::new();
        db.run_blocking(|conn| {
            let user = alice(conn);
            let too_long = set(
                conn,
                &sealer,
                &clock,
                "alice@example.com",
                "kx7m2qpa",
                Some(721),
            );
            assert!(matches!(
                too_long,
                Err(ActivationError::LifetimeTooLong(721))
            ));
            assert!(matches!(
                set(conn, &sealer, &clock, "alice@example.com", "abc", None),
                Err(ActivationError::Length(3))
            ));
            let unknown =
                set(conn, &sealer, &clock, "bob@example.com", "kx7m2qpa", None).unwrap_err();
            assert_eq!(unknown.code(), "USER_NOT_FOUND");
            assert!(ActivationPassword::find_by_user(conn, user.id)?.is_none());
            assert_eq!(
                User::find_by_id(conn, user.id)?.unwrap().activation_status,
                ActivationStatus::NotActivated
            );
            Ok(())
        })
        .unwrap();
    }
}
