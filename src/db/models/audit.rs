//! The audit log: who changed what, when, with the state before and after.
//! Entries are hash-chained — each entry's hash covers the previous entry's
//! hash and its own fields — so changing, removing or inserting an entry in
//! the database file is detected by [`verify_chain`]. (Removing the newest
//! entries cannot be told from the chain alone; compare the newest hash with
//! one kept elsewhere for that.)
//!
//! `hash = hex(HMAC-SHA-256(audit key, prev_hash || canonical))`, where
//! `prev_hash` is the previous entry's hash as 64 hex digits (64 zeros for
//! the first entry) and `canonical` is the JSON array
//! `[id, at, actor, action, target, before_state, after_state]` with `at` as
//! `YYYY-MM-DDTHH:MM:SS.fffffffff` (UTC) and the states as stored (JSON text
//! or null).
//!
//! The audit key ([`crate::db::seal::AuditKey`]) is kept in a file beside
//! the master key, never in the database, so whoever can write the database
//! but not read that file cannot recompute a chain after changing it.
//! Entries written before the log was keyed (ids below the key's
//! `keyed_from`, which the key file records) keep their plain
//! `hex(SHA-256(prev_hash || canonical))` and are verified that way; the
//! first keyed entry's HMAC covers the last of them, so they cannot be
//! rewritten either without breaking the keyed chain. Each pooled
//! connection computes the keyed hash through the SQL function
//! `bramble_audit_mac(id, input)` the pool registers (`crate::db`), which
//! answers NULL for an entry before `keyed_from`.

use diesel::prelude::*;
use serde::Serialize;
use time::PrimitiveDateTime;

use crate::db::ids::AuditEntryId;
use crate::db::schema::audit_log;
use crate::db::{now, Conn, DbError, DbResult};

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How many entries [`verify_chain`] reads at a time.
const VERIFY_BATCH: i64 = 500;

#[derive(Queryable, Selectable)]
#[diesel(table_name = audit_log, check_for_backend(diesel::sqlite::Sqlite))]
struct AuditRow {
    id: AuditEntryId,
    at: PrimitiveDateTime,
    actor: String,
    action: String,
    target: String,
    before_state: Option<String>,
    after_state: Option<String>,
    prev_hash: String,
    hash: String,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: AuditEntryId,
    pub at: PrimitiveDateTime,
    /// Who: an administrator's login, or a component's name.
    pub actor: String,
    /// What, e.g. `user.update`.
    pub action: String,
    /// On what, e.g. `user/42`.
    pub target: String,
    /// The state before and after; a stored state that is not JSON (which
    /// only tampering produces) is shown as a string.
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub prev_hash: String,
    pub hash: String,
}

fn state(text: Option<String>) -> Option<serde_json::Value> {
    text.map(|text| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> Self {
        AuditEntry {
            id: row.id,
            at: row.at,
            actor: row.actor,
            action: row.action,
            target: row.target,
            before: state(row.before_state),
            after: state(row.after_state),
            prev_hash: row.prev_hash,
            hash: row.hash,
        }
    }
}

/// Where [`verify_chain`] found the chain broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("audit log entry {id} has been tampered with: {reason}")]
pub struct AuditTamper {
    pub id: AuditEntryId,
    pub reason: String,
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

struct Fields<'a> {
    id: AuditEntryId,
    at: PrimitiveDateTime,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    before_state: Option<&'a str>,
    after_state: Option<&'a str>,
}

diesel::define_sql_function! {
    /// Registered on every pooled connection by `crate::db`: the keyed
    /// hash of `input` for entry `id`, or NULL before the log was keyed.
    fn bramble_audit_mac(id: diesel::sql_types::BigInt, input: diesel::sql_types::Binary) -> diesel::sql_types::Nullable<diesel::sql_types::Text>;
}

/// Registers [`bramble_audit_mac`] on `conn` with `key`.
pub(crate) fn register_mac(
    conn: &mut Conn,
    key: std::sync::Arc<crate::db::seal::AuditKey>,
) -> diesel::QueryResult<()> {
    bramble_audit_mac_utils::register_impl(conn, move |id: i64, input: Vec<u8>| {
        if id < key.keyed_from() {
            return None;
        }
        // HMAC fails only if openssl cannot allocate; the entry then
        // cannot be written (NOT NULL) nor verified, which is said.
        key.mac(&input).ok().map(|mac| hex(&mac))
    })
}

impl Fields<'_> {
    fn hash(&self, conn: &mut Conn, prev_hash: &str) -> DbResult<String> {
        let input = self.input(prev_hash)?;
        let keyed: Option<String> =
            diesel::select(bramble_audit_mac(self.id.0, input.clone())).get_result(conn)?;
        Ok(keyed.unwrap_or_else(|| hex(&openssl::sha::sha256(&input))))
    }

    /// `prev_hash || canonical`, what the hash covers.
    fn input(&self, prev_hash: &str) -> DbResult<Vec<u8>> {
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]"
        );
        let at = self.at.format(&format).map_err(|e| DbError::Encoding {
            what: "format the audit time",
            message: e.to_string(),
        })?;
        let canonical = serde_json::to_string(&(
            self.id.0,
            at,
            self.actor,
            self.action,
            self.target,
            self.before_state,
            self.after_state,
        ))
        .map_err(|e| DbError::Encoding {
            what: "encode the audit entry",
            message: e.to_string(),
        })?;
        let mut input = Vec::with_capacity(prev_hash.len() + canonical.len());
        input.extend_from_slice(prev_hash.as_bytes());
        input.extend_from_slice(canonical.as_bytes());
        Ok(input)
    }
}

impl AuditRow {
    fn fields(&self) -> Fields<'_> {
        Fields {
            id: self.id,
            at: self.at,
            actor: &self.actor,
            action: &self.action,
            target: &self.target,
            before_state: self.before_state.as_deref(),
            after_state: self.after_state.as_deref(),
        }
    }
}

/// Appends an entry to the chain. Inside the caller's transaction it
/// commits or rolls back with the audited change; otherwise it takes the
/// write lock first, so concurrent appends queue and never fork the chain
/// (two entries claiming the same predecessor would also collide on the
/// next id).
pub fn append(
    conn: &mut Conn,
    actor: &str,
    action: &str,
    target: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> DbResult<AuditEntry> {
    let before_state = before.as_ref().map(serde_json::Value::to_string);
    let after_state = after.as_ref().map(serde_json::Value::to_string);
    crate::db::write_transaction(conn, |conn| {
        let last: Option<(AuditEntryId, String)> = audit_log::table
            .order(audit_log::id.desc())
            .select((audit_log::id, audit_log::hash))
            .first(conn)
            .optional()?;
        let (id, prev_hash) = match last {
            Some((id, hash)) => (AuditEntryId(id.0 + 1), hash),
            None => (AuditEntryId(1), GENESIS_HASH.to_string()),
        };
        let at = now();
        let hash = Fields {
            id,
            at,
            actor,
            action,
            target,
            before_state: before_state.as_deref(),
            after_state: after_state.as_deref(),
        }
        .hash(conn, &prev_hash)?;
        diesel::insert_into(audit_log::table)
            .values((
                audit_log::id.eq(id),
                audit_log::at.eq(at),
                audit_log::actor.eq(actor),
                audit_log::action.eq(action),
                audit_log::target.eq(target),
                audit_log::before_state.eq(&before_state),
                audit_log::after_state.eq(&after_state),
                audit_log::prev_hash.eq(&prev_hash),
                audit_log::hash.eq(&hash),
            ))
            .execute(conn)?;
        Ok(AuditEntry {
            id,
            at,
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            before,
            after,
            prev_hash,
            hash,
        })
    })
}

/// One page of the log, newest first, with the number of entries.
pub fn find_page(conn: &mut Conn, offset: i64, limit: i64) -> DbResult<(Vec<AuditEntry>, i64)> {
    let total = audit_log::table.count().get_result(conn)?;
    let rows = audit_log::table
        .order(audit_log::id.desc())
        .offset(offset)
        .limit(limit)
        .select(AuditRow::as_select())
        .load(conn)?;
    Ok((rows.into_iter().map(AuditEntry::from).collect(), total))
}

/// Walks the whole chain from the first entry. `Ok(Err(tamper))` names the
/// first entry whose link or contents do not match; the outer error is a
/// database failure.
pub fn verify_chain(conn: &mut Conn) -> DbResult<Result<(), AuditTamper>> {
    let mut expected_prev = GENESIS_HASH.to_string();
    let mut after_id = AuditEntryId(i64::MIN);
    loop {
        let rows = audit_log::table
            .filter(audit_log::id.gt(after_id))
            .order(audit_log::id.asc())
            .limit(VERIFY_BATCH)
            .select(AuditRow::as_select())
            .load(conn)?;
        let Some(last) = rows.last() else {
            return Ok(Ok(()));
        };
        after_id = last.id;
        for row in rows {
            if row.prev_hash != expected_prev {
                return Ok(Err(AuditTamper {
                    id: row.id,
                    reason: "it does not link to the entry before it (an entry was removed, inserted or its link changed)"
                        .into(),
                }));
            }
            if row.fields().hash(conn, &row.prev_hash)? != row.hash {
                return Ok(Err(AuditTamper {
                    id: row.id,
                    reason: "its contents do not match its hash (the entry was changed)".into(),
                }));
            }
            expected_prev = row.hash;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;
    use serde_json::json;

    fn three_entries(conn: &mut Conn) -> DbResult<Vec<AuditEntry>> {
        Ok(vec![
            append(
                conn,
                "admin",
                "user.create",
                "user/1",
                None,
                Some(json!({"email": "alice@example.com"})),
            )?,
            append(
                conn,
                "admin",
                "user.update",
                "user/1",
                Some(json!({"name": "Alice"})),
                Some(json!({"name": "Alice E."})),
            )?,
            append(
                conn,
                "helpdesk",
                "user.delete",
                "user/1",
                Some(json!({"name": "Alice E."})),
                None,
            )?,
        ])
    }

    #[test]
    fn chain_links_and_pages() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            assert_eq!(verify_chain(conn)?, Ok(()), "an empty log verifies");
            let entries = three_entries(conn)?;
            assert_eq!(entries[0].prev_hash, GENESIS_HASH);
            assert_eq!(entries[1].prev_hash, entries[0].hash);
            assert_eq!(entries[2].prev_hash, entries[1].hash);
            assert_eq!(entries[0].hash.len(), 64);
            assert!(entries[0].hash.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(verify_chain(conn)?, Ok(()));

            let (page, total) = find_page(conn, 0, 2)?;
            assert_eq!(total, 3);
            assert_eq!(
                page.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
                ["user.delete", "user.update"]
            );
            assert_eq!(
                page[1], entries[1],
                "what is read back is what was appended"
            );
            let (page, _) = find_page(conn, 2, 2)?;
            assert_eq!(page[0].after, Some(json!({"email": "alice@example.com"})));
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn editing_any_field_of_a_middle_entry_is_detected() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let entries = three_entries(conn)?;
            let middle = entries[1].id;
            let edits = [
                "UPDATE audit_log SET actor = 'mallory' WHERE id = 2",
                "UPDATE audit_log SET action = 'user.read' WHERE id = 2",
                "UPDATE audit_log SET target = 'user/2' WHERE id = 2",
                "UPDATE audit_log SET at = '2000-01-01 00:00:00' WHERE id = 2",
                "UPDATE audit_log SET before_state = NULL WHERE id = 2",
                "UPDATE audit_log SET after_state = '{\"name\":\"Mallory\"}' WHERE id = 2",
                "UPDATE audit_log SET prev_hash = hash WHERE id = 2",
                "UPDATE audit_log SET hash = 'x' || substr(hash, 2) WHERE id = 2",
            ];
            for edit in edits {
                let outcome: Result<(), diesel::result::Error> = conn.transaction(|conn| {
                    assert_eq!(diesel::sql_query(edit).execute(conn)?, 1);
                    let tamper = verify_chain(conn).unwrap().unwrap_err();
                    assert_eq!(tamper.id, middle, "{edit}");
                    assert!(tamper.to_string().contains("entry 2"), "{tamper}");
                    Err(diesel::result::Error::RollbackTransaction)
                });
                assert!(outcome.is_err());
                assert_eq!(verify_chain(conn)?, Ok(()), "rolled back: {edit}");
            }

            // Removing the middle entry breaks the next entry's link.
            diesel::sql_query("DELETE FROM audit_log WHERE id = 2").execute(conn)?;
            let tamper = verify_chain(conn)?.unwrap_err();
            assert_eq!(tamper.id, entries[2].id);
            assert!(tamper.reason.contains("does not link"));
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn appends_join_the_callers_transaction() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let rolled_back: DbResult<()> = conn.transaction(|conn| {
                append(conn, "admin", "policy.update", "it_policy/1", None, None)?;
                Err(DbError::Invalid("the audited change failed".into()))
            });
            assert!(rolled_back.is_err());
            assert_eq!(
                find_page(conn, 0, 10)?.1,
                0,
                "no entry for a change that did not happen"
            );
            conn.transaction(|conn| {
                append(conn, "admin", "policy.update", "it_policy/1", None, None)
            })?;
            assert_eq!(find_page(conn, 0, 10)?.1, 1);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn concurrent_appends_do_not_fork_the_chain() {
        let (_dir, db) = test_db();
        std::thread::scope(|scope| {
            for worker in 0..2 {
                let db = db.clone();
                scope.spawn(move || {
                    for n in 0..25 {
                        db.run_blocking(|conn| {
                            append(
                                conn,
                                &format!("worker{worker}"),
                                "test.append",
                                &format!("n/{n}"),
                                None,
                                Some(json!(n)),
                            )
                        })
                        .unwrap();
                    }
                });
            }
        });
        db.run_blocking(|conn| {
            assert_eq!(find_page(conn, 0, 1)?.1, 50);
            assert_eq!(verify_chain(conn)?, Ok(()));
            Ok(())
        })
        .unwrap();
    }

    /// What someone who can write the database but lacks the audit key
    /// could compute: the unkeyed hash of a row.
    fn unkeyed_hash(conn: &mut Conn, id: i64) -> DbResult<(String, String)> {
        let row = audit_log::table
            .find(AuditEntryId(id))
            .select(AuditRow::as_select())
            .first(conn)?;
        let input = row.fields().input(&row.prev_hash)?;
        Ok((hex(&openssl::sha::sha256(&input)), row.hash))
    }

    /// Rewrites entries `from..=to` with unkeyed hashes, relinking each.
    fn rechain_unkeyed(conn: &mut Conn, from: i64, to: i64) -> DbResult<()> {
        for id in from..=to {
            if id > from {
                diesel::sql_query(format!(
                    "UPDATE audit_log SET prev_hash = (SELECT hash FROM audit_log WHERE id = {}) WHERE id = {id}",
                    id - 1
                ))
                .execute(conn)?;
            }
            let (unkeyed, _) = unkeyed_hash(conn, id)?;
            diesel::update(audit_log::table.find(AuditEntryId(id)))
                .set(audit_log::hash.eq(unkeyed))
                .execute(conn)?;
        }
        Ok(())
    }

    #[test]
    fn a_keyed_chain_cannot_be_rewritten_without_the_key() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            three_entries(conn)?;
            let (unkeyed, stored) = unkeyed_hash(conn, 1)?;
            assert_ne!(unkeyed, stored, "entries are keyed, not plain SHA-256");
            // Change the middle entry and recompute its hash and the next
            // one's as the unkeyed chain was computed.
            diesel::sql_query("UPDATE audit_log SET actor = 'mallory' WHERE id = 2")
                .execute(conn)?;
            rechain_unkeyed(conn, 2, 3)?;
            let tamper = verify_chain(conn)?.unwrap_err();
            assert_eq!(tamper.id, AuditEntryId(2));
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn entries_from_before_the_key_are_verified_the_old_way_and_covered_by_the_first_keyed_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bramble.db");
        // A database whose log was written before it was keyed: two
        // entries with plain SHA-256 hashes, no audit key.
        {
            let db = crate::db::Database::open_path(&path, 1, 5_000).unwrap();
            db.run_blocking(|conn| {
                append(
                    conn,
                    "admin",
                    "user.create",
                    "user/1",
                    None,
                    Some(json!({"n": 1})),
                )?;
                append(
                    conn,
                    "admin",
                    "user.update",
                    "user/1",
                    None,
                    Some(json!({"n": 2})),
                )?;
                rechain_unkeyed(conn, 1, 2)?;
                diesel::sql_query("DELETE FROM audit_keying").execute(conn)?;
                Ok(())
            })
            .unwrap();
        }
        std::fs::remove_file(crate::db::audit_key_path(&path)).unwrap();
        let db = crate::db::Database::open_path(&path, 1, 5_000).unwrap();
        db.run_blocking(|conn| {
            assert_eq!(verify_chain(conn)?, Ok(()), "old entries verify as written");
            let third = append(conn, "admin", "user.delete", "user/1", None, None)?;
            assert_eq!(third.id, AuditEntryId(3));
            let (unkeyed, stored) = unkeyed_hash(conn, 3)?;
            assert_ne!(unkeyed, stored, "new entries are keyed");
            let (unkeyed, stored) = unkeyed_hash(conn, 2)?;
            assert_eq!(unkeyed, stored, "old entries keep their hashes");
            assert_eq!(verify_chain(conn)?, Ok(()));
            // Rewriting the old entries consistently still breaks the link
            // the first keyed entry's HMAC covers.
            diesel::sql_query("UPDATE audit_log SET actor = 'mallory' WHERE id = 1").execute(conn)?;
            rechain_unkeyed(conn, 1, 2)?;
            diesel::sql_query(
                "UPDATE audit_log SET prev_hash = (SELECT hash FROM audit_log WHERE id = 2) WHERE id = 3",
            )
            .execute(conn)?;
            let tamper = verify_chain(conn)?.unwrap_err();
            assert_eq!(tamper.id, AuditEntryId(3));
            Ok(())
        })
        .unwrap();
        // Moving the boundary in the database changes nothing: it is read
        // from the key file.
        db.run_blocking(|conn| {
            diesel::sql_query("UPDATE audit_keying SET keyed_from = 100").execute(conn)?;
            Ok(())
        })
        .unwrap();
        drop(db);
        let db = crate::db::Database::open_path(&path, 1, 5_000).unwrap();
        db.run_blocking(|conn| {
            assert_eq!(verify_chain(conn)?.unwrap_err().id, AuditEntryId(3));
            Ok(())
        })
        .unwrap();
    }
}
