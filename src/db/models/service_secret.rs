//! Passwords of the accounts Bramble itself signs in with — the IMAP
//! service account, SMTP submission, each directory's bind DN, the
//! organizer (DAV) service account — stored sealed with the master key
//! ([`Sealer`]), bound to their name (`service_secrets/<name>`), and held in
//! clear only in memory. Which names exist and when a stored password is
//! used is the settings' business (`crate::config`); this model stores any
//! name it is given.

use diesel::prelude::*;

use crate::db::schema::service_secrets;
use crate::db::{now, Conn, DbError, DbResult, Sealer};

fn context(name: &str) -> String {
    format!("service_secrets/{name}")
}

/// Seals `value` under `name`, replacing any earlier value.
pub fn set(conn: &mut Conn, sealer: &Sealer, name: &str, value: &str) -> DbResult<()> {
    if name.trim().is_empty() {
        return Err(DbError::Invalid("a stored password needs a name".into()));
    }
    if value.is_empty() {
        return Err(DbError::Invalid(format!(
            "the password for `{name}` is empty; nothing was stored"
        )));
    }
    let sealed = sealer.seal(&context(name), value.as_bytes())?;
    diesel::replace_into(service_secrets::table)
        .values((
            service_secrets::name.eq(name),
            service_secrets::sealed_value.eq(sealed),
            service_secrets::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(())
}

/// The password stored under `name`, if any.
pub fn get(conn: &mut Conn, sealer: &Sealer, name: &str) -> DbResult<Option<String>> {
    let sealed: Option<Vec<u8>> = service_secrets::table
        .find(name)
        .select(service_secrets::sealed_value)
        .first(conn)
        .optional()?;
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let clear = sealer.unseal(&context(name), &sealed)?;
    String::from_utf8(clear)
        .map(Some)
        .map_err(|_| DbError::Damaged(format!("the stored password `{name}` is not text")))
}

/// Removes the password stored under `name`; whether there was one.
pub fn delete(conn: &mut Conn, name: &str) -> DbResult<bool> {
    Ok(diesel::delete(service_secrets::table.find(name)).execute(conn)? > 0)
}

/// The names that have a stored password, in order.
pub fn names(conn: &mut Conn) -> DbResult<Vec<String>> {
    Ok(service_secrets::table
        .order(service_secrets::name.asc())
        .select(service_secrets::name)
        .load(conn)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;

    #[test]
    fn sealed_at_rest_bound_to_the_name_and_replaced() {
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        db.run_blocking(|conn| {
            assert_eq!(get(conn, &sealer, "imap")?, None);
            set(conn, &sealer, "imap", "s3cret-imap")?;
            set(conn, &sealer, "dav", "s3cret-dav")?;
            assert_eq!(get(conn, &sealer, "imap")?.as_deref(), Some("s3cret-imap"));
            set(conn, &sealer, "imap", "rotated")?;
            assert_eq!(get(conn, &sealer, "imap")?.as_deref(), Some("rotated"));
            assert_eq!(names(conn)?, ["dav", "imap"]);
            let raw: Vec<Vec<u8>> = service_secrets::table
                .select(service_secrets::sealed_value)
                .load(conn)?;
            assert!(raw
                .iter()
                .all(|v| !v.windows(7).any(|w| w == b"rotated" || w == b"s3cret-")));
            // A sealed value moved to another name does not open.
            diesel::sql_query(
                "UPDATE service_secrets SET sealed_value = (SELECT sealed_value FROM service_secrets WHERE name = 'imap') WHERE name = 'dav'",
            )
            .execute(conn)?;
            assert!(matches!(get(conn, &sealer, "dav"), Err(DbError::Seal(_))));
            assert!(delete(conn, "imap")?);
            assert!(!delete(conn, "imap")?);
            assert!(set(conn, &sealer, "smtp", "").is_err());
            Ok(())
        })
        .unwrap();
    }
}
