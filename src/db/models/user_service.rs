//! Per-user exceptions to the services the server enables (`[policy]
//! services`): one row turns one service book on or off for one user.
//! [`service_enabled`] says whether a service is on for a user; the Policy
//! Service sends the books of those that are, and the MailStore Service
//! answers address lookups only for users with ALP on.

use std::collections::BTreeMap;

use diesel::prelude::*;

use crate::db::ids::UserId;
use crate::db::schema::user_services;
use crate::db::{Conn, DbResult};

/// Every service book the Policy Service knows (seed: "What is a service
/// book?").
pub const SERVICES: [&str; 7] = [
    "CMIME",
    "CICAL",
    "SYNC",
    "IPPP",
    "BrowserConfig",
    "ALP",
    "BBIM",
];

/// Whether `service` is on for a user: the user's own exception if there
/// is one (see [`UserServices::find`]), else the server's list `enabled`.
pub fn service_enabled(
    enabled: &[String],
    exceptions: &BTreeMap<String, bool>,
    service: &str,
) -> bool {
    exceptions
        .get(service)
        .copied()
        .unwrap_or_else(|| enabled.iter().any(|s| s == service))
}

/// The user's exceptions, by service (`CMIME`, `BBIM`, …).
#[derive(Debug)]
pub struct UserServices;

impl UserServices {
    pub fn find(conn: &mut Conn, user: UserId) -> DbResult<BTreeMap<String, bool>> {
        Ok(user_services::table
            .filter(user_services::user_id.eq(user))
            .select((user_services::service, user_services::enabled))
            .load::<(String, bool)>(conn)?
            .into_iter()
            .collect())
    }

    /// Turns `service` on or off for `user` (replacing an earlier choice).
    pub fn set(conn: &mut Conn, user: UserId, service: &str, enabled: bool) -> DbResult<()> {
        diesel::insert_into(user_services::table)
            .values((
                user_services::user_id.eq(user),
                user_services::service.eq(service),
                user_services::enabled.eq(enabled),
            ))
            .on_conflict((user_services::user_id, user_services::service))
            .do_update()
            .set(user_services::enabled.eq(enabled))
            .execute(conn)?;
        Ok(())
    }

    /// Back to the server's default for `service`.
    pub fn clear(conn: &mut Conn, user: UserId, service: &str) -> DbResult<bool> {
        Ok(diesel::delete(
            user_services::table
                .filter(user_services::user_id.eq(user))
                .filter(user_services::service.eq(service)),
        )
        .execute(conn)?
            > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;
    use crate::db::models::user::NewUser;

    #[test]
    fn exceptions_are_set_replaced_and_cleared() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let user = NewUser {
                display_name: "A".into(),
                email: "a@example.com".into(),
                mailbox_login: "a".into(),
            }
            .save(conn)?;
            UserServices::set(conn, user.id, "BBIM", false)?;
            UserServices::set(conn, user.id, "BBIM", true)?;
            UserServices::set(conn, user.id, "ALP", false)?;
            let found = UserServices::find(conn, user.id)?;
            assert_eq!(found.get("BBIM"), Some(&true));
            assert_eq!(found.get("ALP"), Some(&false));
            assert!(UserServices::clear(conn, user.id, "ALP")?);
            assert_eq!(UserServices::find(conn, user.id)?.len(), 1);
            Ok(())
        })
        .unwrap();
    }
}
