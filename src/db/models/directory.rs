//! The organization's directories the MailStore Service reads (one row per
//! `[[directories]]` entry of the settings, matched by name) and the record
//! of every sync run.

use diesel::prelude::*;
use serde::Serialize;
use time::PrimitiveDateTime;

use crate::db::schema::{directories, directory_sync_runs};
use crate::db::{now, Conn, DbResult};

/// Values per `IN (…)` query when looking links up in batches (well under
/// SQLite's limit of bound parameters).
pub const LOOKUP_BATCH: usize = 500;

/// A DN in the form that compares equal however it was spelt: lower case,
/// no spaces around `,` and `=`. Stored beside the DN of a linked user
/// (`directory_dn_key`) so a group's members are found by an index.
pub fn dn_key(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| rdn.split('=').map(str::trim).collect::<Vec<_>>().join("="))
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

/// A directory as the Configuration Database remembers it between syncs.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = directories, check_for_backend(diesel::sqlite::Sqlite))]
pub struct Directory {
    pub id: i64,
    pub name: String,
    /// Newest value of the change attribute seen, as `attribute=value`
    /// (`entryCSN=…`, `uSNChanged=…`; a bare value is a `modifyTimestamp`);
    /// the next incremental sync starts here.
    pub high_water_mark: Option<String>,
    pub last_full_sync_at: Option<PrimitiveDateTime>,
    pub created_at: PrimitiveDateTime,
}

impl Directory {
    pub fn find_by_name(conn: &mut Conn, name: &str) -> DbResult<Option<Directory>> {
        Ok(directories::table
            .filter(directories::name.eq(name))
            .select(Directory::as_select())
            .first(conn)
            .optional()?)
    }

    /// The row for the settings entry `name`, created on first use.
    pub fn find_or_create(conn: &mut Conn, name: &str) -> DbResult<Directory> {
        diesel::insert_or_ignore_into(directories::table)
            .values((
                directories::name.eq(name),
                directories::created_at.eq(now()),
            ))
            .execute(conn)?;
        Ok(directories::table
            .filter(directories::name.eq(name))
            .select(Directory::as_select())
            .first(conn)?)
    }

    /// Remembers how far the directory has been read.
    pub fn save_progress(
        conn: &mut Conn,
        id: i64,
        high_water_mark: Option<&str>,
        full: bool,
    ) -> DbResult<()> {
        diesel::update(directories::table.find(id))
            .set(directories::high_water_mark.eq(high_water_mark))
            .execute(conn)?;
        if full {
            diesel::update(directories::table.find(id))
                .set(directories::last_full_sync_at.eq(Some(now())))
                .execute(conn)?;
        }
        Ok(())
    }
}

/// One sync run: when, how much, and how it ended.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = directory_sync_runs, check_for_backend(diesel::sqlite::Sqlite))]
pub struct SyncRun {
    pub id: i64,
    pub directory_id: i64,
    /// `full` or `incremental`.
    pub kind: String,
    pub started_at: PrimitiveDateTime,
    pub finished_at: Option<PrimitiveDateTime>,
    pub entries_read: i64,
    pub created: i64,
    pub updated: i64,
    pub removed: i64,
    pub errors: i64,
    /// `running`, `succeeded` or `failed`.
    pub outcome: String,
    pub message: String,
}

/// The figures of a finished run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncFigures {
    pub entries_read: i64,
    pub created: i64,
    pub updated: i64,
    pub removed: i64,
    pub errors: i64,
}

impl SyncRun {
    /// Records that a run started.
    pub fn start(conn: &mut Conn, directory_id: i64, full: bool) -> DbResult<SyncRun> {
        Ok(diesel::insert_into(directory_sync_runs::table)
            .values((
                directory_sync_runs::directory_id.eq(directory_id),
                directory_sync_runs::kind.eq(if full { "full" } else { "incremental" }),
                directory_sync_runs::started_at.eq(now()),
            ))
            .returning(SyncRun::as_returning())
            .get_result(conn)?)
    }

    /// Records how a run ended.
    pub fn finish(
        conn: &mut Conn,
        id: i64,
        figures: &SyncFigures,
        outcome: &str,
        message: &str,
    ) -> DbResult<SyncRun> {
        Ok(diesel::update(directory_sync_runs::table.find(id))
            .set((
                directory_sync_runs::finished_at.eq(Some(now())),
                directory_sync_runs::entries_read.eq(figures.entries_read),
                directory_sync_runs::created.eq(figures.created),
                directory_sync_runs::updated.eq(figures.updated),
                directory_sync_runs::removed.eq(figures.removed),
                directory_sync_runs::errors.eq(figures.errors),
                directory_sync_runs::outcome.eq(outcome),
                directory_sync_runs::message.eq(message),
            ))
            .returning(SyncRun::as_returning())
            .get_result(conn)?)
    }

    /// The newest runs of a directory, newest first.
    pub fn find_recent(conn: &mut Conn, directory_id: i64, limit: i64) -> DbResult<Vec<SyncRun>> {
        Ok(directory_sync_runs::table
            .filter(directory_sync_runs::directory_id.eq(directory_id))
            .order(directory_sync_runs::id.desc())
            .limit(limit)
            .select(SyncRun::as_select())
            .load(conn)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_compare_however_spelt() {
        assert_eq!(
            dn_key("CN=Sales, OU=Groups ,DC=Example,DC=com"),
            dn_key("cn=sales,ou=groups,dc=example,dc=com")
        );
    }
}
