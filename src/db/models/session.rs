//! Sessions of the console. A session token is 32 random bytes handed to
//! the administrator once (as a cookie, or a bearer token for the desktop
//! window); the database keeps only its SHA-256, so reading the database
//! file does not let anyone sign in. A session expires after a period
//! without use, and at the latest a fixed time after sign-in.

use diesel::prelude::*;
use time::{Duration, PrimitiveDateTime};

use crate::db::ids::{AdministratorId, SessionId};
use crate::db::schema::admin_sessions;
use crate::db::{now, Conn, DbError, DbResult};

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLifetime {
    /// A session unused for this long has expired.
    pub idle: Duration,
    /// No session lasts longer than this after sign-in.
    pub absolute: Duration,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = admin_sessions, check_for_backend(diesel::sqlite::Sqlite))]
pub struct Session {
    pub id: SessionId,
    pub administrator_id: AdministratorId,
    #[diesel(column_name = token_hash)]
    token_hash: String,
    pub created_at: PrimitiveDateTime,
    pub expires_at: PrimitiveDateTime,
    pub last_seen_at: PrimitiveDateTime,
}

/// What a presented token turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Valid(Session),
    Expired,
    Unknown,
}

/// The stored form of a token.
fn token_hash(token: &str) -> String {
    hex(&openssl::sha::sha256(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_token() -> DbResult<String> {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes).map_err(|e| DbError::Encoding {
        what: "draw a random session token",
        message: e.to_string(),
    })?;
    Ok(hex(&bytes))
}

impl Session {
    /// Opens a session for `administrator`; returns the token (shown once)
    /// and the stored session.
    pub fn create(
        conn: &mut Conn,
        administrator: AdministratorId,
        lifetime: SessionLifetime,
    ) -> DbResult<(String, Session)> {
        let token = new_token()?;
        let at = now();
        let session = diesel::insert_into(admin_sessions::table)
            .values((
                admin_sessions::administrator_id.eq(administrator),
                admin_sessions::token_hash.eq(token_hash(&token)),
                admin_sessions::created_at.eq(at),
                admin_sessions::expires_at.eq(at + lifetime.idle.min(lifetime.absolute)),
                admin_sessions::last_seen_at.eq(at),
            ))
            .returning(Session::as_returning())
            .get_result(conn)?;
        Ok((token, session))
    }

    /// Finds the session a token belongs to and, when it is valid, extends
    /// it by the idle period (at most once a minute, so a busy console does
    /// not write on every request; never past the absolute limit).
    pub fn find_by_token(
        conn: &mut Conn,
        token: &str,
        lifetime: SessionLifetime,
    ) -> DbResult<Lookup> {
        let found = admin_sessions::table
            .filter(admin_sessions::token_hash.eq(token_hash(token)))
            .select(Session::as_select())
            .first(conn)
            .optional()?;
        let Some(mut session) = found else {
            return Ok(Lookup::Unknown);
        };
        let at = now();
        if session.expires_at <= at {
            diesel::delete(admin_sessions::table.find(session.id)).execute(conn)?;
            return Ok(Lookup::Expired);
        }
        if at - session.last_seen_at >= Duration::minutes(1) {
            let expires_at = (at + lifetime.idle).min(session.created_at + lifetime.absolute);
            diesel::update(admin_sessions::table.find(session.id))
                .set((
                    admin_sessions::last_seen_at.eq(at),
                    admin_sessions::expires_at.eq(expires_at),
                ))
                .execute(conn)?;
            session.last_seen_at = at;
            session.expires_at = expires_at;
        }
        Ok(Lookup::Valid(session))
    }

    /// Ends the session holding `token`; false when there was none.
    pub fn delete_by_token(conn: &mut Conn, token: &str) -> DbResult<bool> {
        Ok(diesel::delete(
            admin_sessions::table.filter(admin_sessions::token_hash.eq(token_hash(token))),
        )
        .execute(conn)?
            > 0)
    }

    /// Ends every session of an administrator (password change, disabling).
    pub fn delete_by_administrator(
        conn: &mut Conn,
        administrator: AdministratorId,
    ) -> DbResult<usize> {
        Ok(diesel::delete(
            admin_sessions::table.filter(admin_sessions::administrator_id.eq(administrator)),
        )
        .execute(conn)?)
    }

    /// Removes sessions that have expired.
    pub fn delete_expired(conn: &mut Conn) -> DbResult<usize> {
        Ok(
            diesel::delete(admin_sessions::table.filter(admin_sessions::expires_at.le(now())))
                .execute(conn)?,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::db::models::administrator::{Administrator, NewAdministrator};
    use crate::db::models::test_db;

    const LIFETIME: SessionLifetime = SessionLifetime {
        idle: Duration::minutes(30),
        absolute: Duration::hours(8),
    };

    #[test]
    fn tokens_are_stored_hashed_and_expire() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let admin = Administrator::create_security_administrator(
                conn,
                &NewAdministrator {
                    login: "sa".into(),
                    display_name: "SA".into(),
                    password: "long enough".into(),
                },
            )?;
            let (token, session) = Session::create(conn, admin.id, LIFETIME)?;
            assert_eq!(token.len(), 64);
            assert_ne!(session.token_hash, token, "the token itself is not stored");
            assert_eq!(session.expires_at - session.created_at, LIFETIME.idle);
            match Session::find_by_token(conn, &token, LIFETIME)? {
                Lookup::Valid(found) => assert_eq!(found.id, session.id),
                other => panic!("expected a valid session, got {other:?}"),
            }
            assert_eq!(
                Session::find_by_token(conn, "not-a-token", LIFETIME)?,
                Lookup::Unknown
            );

            // Expired: reported as such once, then gone.
            diesel::update(admin_sessions::table.find(session.id))
                .set(admin_sessions::expires_at.eq(now() - Duration::seconds(1)))
                .execute(conn)?;
            assert_eq!(
                Session::find_by_token(conn, &token, LIFETIME)?,
                Lookup::Expired
            );
            assert_eq!(
                Session::find_by_token(conn, &token, LIFETIME)?,
                Lookup::Unknown
            );

            // Use extends the idle period, never past the absolute limit.
            let (token, session) = Session::create(conn, admin.id, LIFETIME)?;
            diesel::update(admin_sessions::table.find(session.id))
                .set((
                    admin_sessions::created_at.eq(now() - Duration::minutes(470)),
                    admin_sessions::last_seen_at.eq(now() - Duration::minutes(5)),
                ))
                .execute(conn)?;
            let Lookup::Valid(extended) = Session::find_by_token(conn, &token, LIFETIME)? else {
                panic!("still valid");
            };
            assert_eq!(extended.expires_at, extended.created_at + LIFETIME.absolute);

            assert!(Session::delete_by_token(conn, &token)?);
            assert!(!Session::delete_by_token(conn, &token)?);
            Session::create(conn, admin.id, LIFETIME)?;
            assert_eq!(Session::delete_by_administrator(conn, admin.id)?, 1);
            assert_eq!(Session::delete_expired(conn)?, 0);
            Ok(())
        })
        .unwrap();
    }
}
