//! Individual and global statistics (seed): how many messages were
//! forwarded, filtered, delivered, sent, expired or failed, and how many are
//! pending, per user and for the whole server. The global row has no user.
//!
//! [`Statistics::increment`] changes a user's row and the global row in the
//! same transaction with `column = column + delta` upserts, so concurrent
//! Messaging Agent threads never lose a count and the global totals always
//! equal what was counted for users (plus what was counted for no user).

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Timestamp};
use serde::{Deserialize, Serialize};
use time::PrimitiveDateTime;

use crate::db::ids::UserId;
use crate::db::models::user::text_enum;
use crate::db::schema::statistics;
use crate::db::write_transaction;
use crate::db::{now, Conn, DbResult};

/// One of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Counter {
    Forwarded,
    Filtered,
    /// Goes up when a message waits for the device and down when it is
    /// delivered, expires or fails.
    Pending,
    Delivered,
    Expired,
    Failed,
    Sent,
}

text_enum!(Counter {
    Forwarded => "forwarded",
    Filtered => "filtered",
    Pending => "pending",
    Delivered => "delivered",
    Expired => "expired",
    Failed => "failed",
    Sent => "sent",
});

impl Counter {
    pub const ALL: [Counter; 7] = [
        Counter::Forwarded,
        Counter::Filtered,
        Counter::Pending,
        Counter::Delivered,
        Counter::Expired,
        Counter::Failed,
        Counter::Sent,
    ];
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = statistics, check_for_backend(diesel::sqlite::Sqlite))]
struct StatisticsRow {
    user_id: Option<UserId>,
    forwarded: i64,
    filtered: i64,
    pending: i64,
    delivered: i64,
    expired: i64,
    failed: i64,
    sent: i64,
    updated_at: PrimitiveDateTime,
}

/// The counters of one user, or the global ones (`user_id` None). All zero
/// with no `updated_at` when nothing was counted yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statistics {
    pub user_id: Option<UserId>,
    pub forwarded: i64,
    pub filtered: i64,
    pub pending: i64,
    pub delivered: i64,
    pub expired: i64,
    pub failed: i64,
    pub sent: i64,
    pub updated_at: Option<PrimitiveDateTime>,
}

impl Statistics {
    fn zero(user_id: Option<UserId>) -> Statistics {
        Statistics {
            user_id,
            forwarded: 0,
            filtered: 0,
            pending: 0,
            delivered: 0,
            expired: 0,
            failed: 0,
            sent: 0,
            updated_at: None,
        }
    }

    /// The value of one counter.
    pub fn get(&self, counter: Counter) -> i64 {
        match counter {
            Counter::Forwarded => self.forwarded,
            Counter::Filtered => self.filtered,
            Counter::Pending => self.pending,
            Counter::Delivered => self.delivered,
            Counter::Expired => self.expired,
            Counter::Failed => self.failed,
            Counter::Sent => self.sent,
        }
    }
}

impl From<StatisticsRow> for Statistics {
    fn from(row: StatisticsRow) -> Self {
        Statistics {
            user_id: row.user_id,
            forwarded: row.forwarded,
            filtered: row.filtered,
            pending: row.pending,
            delivered: row.delivered,
            expired: row.expired,
            failed: row.failed,
            sent: row.sent,
            updated_at: Some(row.updated_at),
        }
    }
}

impl Statistics {
    /// Adds `by` (negative to subtract, e.g. for `pending`) to `counter` of
    /// `user`'s row, if a user is given, and of the global row, creating the
    /// rows as needed; both or neither change.
    pub fn increment(
        conn: &mut Conn,
        user: Option<UserId>,
        counter: Counter,
        by: i64,
    ) -> DbResult<()> {
        // Column names come from the enum, never from input.
        let column = counter.as_str();
        let at = now();
        write_transaction(conn, |conn| {
            if let Some(user) = user {
                diesel::sql_query(format!(
                    "INSERT INTO statistics (user_id, {column}, updated_at) VALUES (?, ?, ?) \
                     ON CONFLICT (user_id) DO UPDATE SET {column} = {column} + excluded.{column}, \
                     updated_at = excluded.updated_at"
                ))
                .bind::<Nullable<BigInt>, _>(Some(user.0))
                .bind::<BigInt, _>(by)
                .bind::<Timestamp, _>(at)
                .execute(conn)?;
            }
            diesel::sql_query(format!(
                "INSERT INTO statistics (user_id, {column}, updated_at) VALUES (NULL, ?, ?) \
                 ON CONFLICT ((user_id IS NULL)) WHERE user_id IS NULL DO UPDATE SET {column} = {column} + excluded.{column}, \
                 updated_at = excluded.updated_at"
            ))
            .bind::<BigInt, _>(by)
            .bind::<Timestamp, _>(at)
            .execute(conn)?;
            Ok(())
        })
    }

    /// The server-wide counters.
    pub fn find_global(conn: &mut Conn) -> DbResult<Statistics> {
        Ok(statistics::table
            .filter(statistics::user_id.is_null())
            .select(StatisticsRow::as_select())
            .first(conn)
            .optional()?
            .map_or_else(|| Statistics::zero(None), Statistics::from))
    }

    /// One user's counters.
    pub fn find_by_user(conn: &mut Conn, user: UserId) -> DbResult<Statistics> {
        Ok(statistics::table
            .filter(statistics::user_id.eq(user))
            .select(StatisticsRow::as_select())
            .first(conn)
            .optional()?
            .map_or_else(|| Statistics::zero(Some(user)), Statistics::from))
    }

    /// The `limit` users with the most messages (forwarded to and sent
    /// from their devices), busiest first.
    pub fn find_busiest(conn: &mut Conn, limit: i64) -> DbResult<Vec<Statistics>> {
        Ok(statistics::table
            .filter(statistics::user_id.is_not_null())
            .order((
                (statistics::forwarded + statistics::sent).desc(),
                statistics::user_id.asc(),
            ))
            .limit(limit)
            .select(StatisticsRow::as_select())
            .load(conn)?
            .into_iter()
            .map(Statistics::from)
            .collect())
    }

    /// Starts a user's counters again from zero (the global ones keep
    /// their totals).
    pub fn delete_by_user(conn: &mut Conn, user: UserId) -> DbResult<bool> {
        Ok(
            diesel::delete(statistics::table.filter(statistics::user_id.eq(user))).execute(conn)?
                > 0,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;
    use crate::db::models::user::{NewUser, User};
    use crate::db::DbError;

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
    fn counts_per_user_and_globally() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let alice = user(conn, "alice");
            let bob = user(conn, "bob");
            assert_eq!(Statistics::find_global(conn)?, Statistics::zero(None));
            assert_eq!(Statistics::find_by_user(conn, alice.id)?.forwarded, 0);

            Statistics::increment(conn, Some(alice.id), Counter::Forwarded, 1)?;
            Statistics::increment(conn, Some(alice.id), Counter::Forwarded, 2)?;
            Statistics::increment(conn, Some(bob.id), Counter::Forwarded, 1)?;
            Statistics::increment(conn, Some(alice.id), Counter::Pending, 3)?;
            Statistics::increment(conn, Some(alice.id), Counter::Pending, -2)?;
            Statistics::increment(conn, None, Counter::Filtered, 5)?;

            let a = Statistics::find_by_user(conn, alice.id)?;
            assert_eq!((a.forwarded, a.pending, a.filtered), (3, 1, 0));
            assert!(a.updated_at.is_some());
            let global = Statistics::find_global(conn)?;
            assert_eq!(global.get(Counter::Forwarded), 4);
            assert_eq!(global.get(Counter::Pending), 1);
            assert_eq!(
                global.get(Counter::Filtered),
                5,
                "counted for no user: global only"
            );
            assert_eq!(
                statistics::table.count().get_result::<i64>(conn)?,
                3,
                "one row per user plus the global row"
            );
            for counter in Counter::ALL {
                Statistics::increment(conn, Some(bob.id), counter, 1)?;
            }
            let b = Statistics::find_by_user(conn, bob.id)?;
            assert!(Counter::ALL.iter().all(|c| b.get(*c) >= 1));

            // An unknown user is refused and the global row is left alone.
            assert!(Statistics::increment(conn, Some(UserId(9_999)), Counter::Sent, 1).is_err());
            assert_eq!(Statistics::find_global(conn)?.sent, 1);

            // Deleting a user deletes their row, not the global one.
            User::delete_by_id(conn, alice.id)?;
            assert_eq!(
                Statistics::find_by_user(conn, alice.id)?,
                Statistics::zero(Some(alice.id))
            );
            assert_eq!(
                Statistics::find_global(conn)?.forwarded,
                5,
                "alice 3 + bob 2"
            );
            assert!(Statistics::delete_by_user(conn, bob.id)?);
            assert_eq!(statistics::table.count().get_result::<i64>(conn)?, 1);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn increments_join_the_callers_transaction() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let alice = user(conn, "alice");
            let rolled_back: Result<(), DbError> = conn.transaction(|conn| {
                Statistics::increment(conn, Some(alice.id), Counter::Delivered, 1)?;
                assert_eq!(Statistics::find_by_user(conn, alice.id)?.delivered, 1);
                Err(DbError::Invalid("the caller gives up".into()))
            });
            assert!(rolled_back.is_err());
            assert_eq!(Statistics::find_by_user(conn, alice.id)?.delivered, 0);
            assert_eq!(
                Statistics::find_global(conn)?.delivered,
                0,
                "both rows or neither"
            );
            conn.transaction(|conn| {
                Statistics::increment(conn, Some(alice.id), Counter::Delivered, 1)
            })?;
            assert_eq!(Statistics::find_global(conn)?.delivered, 1);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn concurrent_increments_are_not_lost() {
        let (_dir, db) = test_db();
        let alice = db.run_blocking(|conn| Ok(user(conn, "alice"))).unwrap();
        std::thread::scope(|scope| {
            for _ in 0..2 {
                let db = db.clone();
                scope.spawn(move || {
                    for _ in 0..50 {
                        db.run_blocking(|conn| {
                            Statistics::increment(conn, Some(alice.id), Counter::Forwarded, 1)
                        })
                        .unwrap();
                        db.run_blocking(|conn| {
                            Statistics::increment(conn, None, Counter::Forwarded, 1)
                        })
                        .unwrap();
                    }
                });
            }
        });
        db.run_blocking(|conn| {
            assert_eq!(Statistics::find_by_user(conn, alice.id)?.forwarded, 100);
            assert_eq!(Statistics::find_global(conn)?.forwarded, 200);
            assert_eq!(statistics::table.count().get_result::<i64>(conn)?, 2);
            Ok(())
        })
        .unwrap();
    }
}
