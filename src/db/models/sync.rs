//! The Synchronization Service's records:
//! - [`SyncSetting`]: per organizer database, whether it is synchronized,
//!   which way and who wins a conflict (what the device is told first).
//! - [`SyncState`]: per user and database, slow sync / in sync / error,
//!   with the organizer server's change marker (sync token or CTag).
//! - [`SyncItem`]: each record the user's device holds, by UID, with its
//!   href, the server's ETag and a digest of what the device was given.
//! - [`SyncItemError`]: records that could not be synchronized, in words.
//! - [`DeviceBackup`]: wireless backups of a device's settings and data.

use bramble_proto::sync::{ConflictResolution, DatabaseConfig, OrganizerDatabase, SyncDirection};
use bramble_proto::Pin;
use diesel::prelude::*;
use serde::Serialize;
use time::PrimitiveDateTime;

use crate::db::ids::UserId;
use crate::db::models::user::text_enum;
use crate::db::schema::{device_backups, sync_item_errors, sync_items, sync_settings, sync_states};
use crate::db::{now, Conn, DbError, DbResult};

fn database(text: &str) -> DbResult<OrganizerDatabase> {
    OrganizerDatabase::parse(text)
        .ok_or_else(|| DbError::Invalid(format!("`{text}` is not an organizer database")))
}

fn direction_str(d: SyncDirection) -> &'static str {
    match d {
        SyncDirection::ServerToDevice => "server_to_device",
        SyncDirection::DeviceToServer => "device_to_server",
        SyncDirection::Bidirectional => "bidirectional",
    }
}

fn parse_direction(text: &str) -> DbResult<SyncDirection> {
    match text {
        "server_to_device" => Ok(SyncDirection::ServerToDevice),
        "device_to_server" => Ok(SyncDirection::DeviceToServer),
        "bidirectional" => Ok(SyncDirection::Bidirectional),
        other => Err(DbError::Invalid(format!(
            "`{other}` is not a synchronization direction"
        ))),
    }
}

fn conflict_str(c: ConflictResolution) -> &'static str {
    match c {
        ConflictResolution::ServerWins => "server_wins",
        ConflictResolution::DeviceWins => "device_wins",
    }
}

fn parse_conflict(text: &str) -> DbResult<ConflictResolution> {
    match text {
        "server_wins" => Ok(ConflictResolution::ServerWins),
        "device_wins" => Ok(ConflictResolution::DeviceWins),
        other => Err(DbError::Invalid(format!(
            "`{other}` is not a conflict resolution"
        ))),
    }
}

/// How one organizer database is synchronized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SyncSetting {
    pub database: OrganizerDatabase,
    pub enabled: bool,
    pub direction: SyncDirection,
    pub conflict: ConflictResolution,
}

impl From<SyncSetting> for DatabaseConfig {
    fn from(s: SyncSetting) -> DatabaseConfig {
        DatabaseConfig {
            database: s.database,
            enabled: s.enabled,
            direction: s.direction,
            conflict: s.conflict,
        }
    }
}

impl SyncSetting {
    /// All four databases, in [`OrganizerDatabase::ALL`] order.
    pub fn find_all(conn: &mut Conn) -> DbResult<Vec<SyncSetting>> {
        let rows: Vec<(String, bool, String, String)> = sync_settings::table
            .select((
                sync_settings::database,
                sync_settings::enabled,
                sync_settings::direction,
                sync_settings::conflict,
            ))
            .load(conn)?;
        let mut settings = rows
            .into_iter()
            .map(|(d, enabled, direction, conflict)| {
                Ok(SyncSetting {
                    database: database(&d)?,
                    enabled,
                    direction: parse_direction(&direction)?,
                    conflict: parse_conflict(&conflict)?,
                })
            })
            .collect::<DbResult<Vec<_>>>()?;
        settings.sort_by_key(|s| s.database);
        Ok(settings)
    }

    pub fn find(conn: &mut Conn, db: OrganizerDatabase) -> DbResult<SyncSetting> {
        Self::find_all(conn)?
            .into_iter()
            .find(|s| s.database == db)
            .ok_or_else(|| DbError::Invalid(format!("no synchronization setting for {db}")))
    }

    pub fn save(&self, conn: &mut Conn) -> DbResult<()> {
        diesel::insert_into(sync_settings::table)
            .values((
                sync_settings::database.eq(self.database.as_str()),
                sync_settings::enabled.eq(self.enabled),
                sync_settings::direction.eq(direction_str(self.direction)),
                sync_settings::conflict.eq(conflict_str(self.conflict)),
                sync_settings::updated_at.eq(now()),
            ))
            .on_conflict(sync_settings::database)
            .do_update()
            .set((
                sync_settings::enabled.eq(self.enabled),
                sync_settings::direction.eq(direction_str(self.direction)),
                sync_settings::conflict.eq(conflict_str(self.conflict)),
                sync_settings::updated_at.eq(now()),
            ))
            .execute(conn)?;
        Ok(())
    }
}

/// A change to how one database is synchronized; what is left out stays.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncSettingChange {
    pub enabled: Option<bool>,
    pub direction: Option<SyncDirection>,
    pub conflict: Option<ConflictResolution>,
}

/// A setting as the audit log and the console write it.
pub fn setting_json(s: &SyncSetting) -> serde_json::Value {
    serde_json::json!({
        "database": s.database.as_str(),
        "enabled": s.enabled,
        "direction": direction_str(s.direction),
        "conflict": conflict_str(s.conflict),
    })
}

/// Parses `server_to_device`, `device_to_server` or `bidirectional`.
pub fn direction_from_str(text: &str) -> DbResult<SyncDirection> {
    parse_direction(text).map_err(|_| {
        DbError::Invalid(format!(
            "`{text}` is not a synchronization direction; use server_to_device, device_to_server or bidirectional"
        ))
    })
}

/// Parses `server_wins` or `device_wins`.
pub fn conflict_from_str(text: &str) -> DbResult<ConflictResolution> {
    parse_conflict(text).map_err(|_| {
        DbError::Invalid(format!(
            "`{text}` is not a conflict resolution; use server_wins or device_wins"
        ))
    })
}

/// Parses an organizer database's name, in words when it is none.
pub fn database_from_str(text: &str) -> DbResult<OrganizerDatabase> {
    OrganizerDatabase::parse(text).ok_or_else(|| {
        DbError::Invalid(format!(
            "`{text}` is not an organizer database; use contacts, calendar, tasks or memos"
        ))
    })
}

impl SyncSetting {
    /// Changes one database's setting and writes the audit entry (before
    /// and after, by `actor`) in the same transaction; the console and
    /// `bramble sync set` both come here.
    pub fn change(
        conn: &mut Conn,
        actor: &str,
        db: OrganizerDatabase,
        change: SyncSettingChange,
    ) -> DbResult<SyncSetting> {
        crate::db::write_transaction(conn, |conn| {
            let before = SyncSetting::find(conn, db)?;
            let mut after = before;
            if let Some(on) = change.enabled {
                after.enabled = on;
            }
            if let Some(d) = change.direction {
                after.direction = d;
            }
            if let Some(c) = change.conflict {
                after.conflict = c;
            }
            after.save(conn)?;
            crate::db::models::audit::append(
                conn,
                actor,
                "sync.setting",
                &format!("sync/{}", db.as_str()),
                Some(setting_json(&before)),
                Some(setting_json(&after)),
            )?;
            Ok(after)
        })
    }
}

/// How many users' databases stand where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SyncCounts {
    pub users: i64,
    pub in_sync: i64,
    pub slow_sync: i64,
    pub error: i64,
    /// Records that could not be synchronized.
    pub item_errors: i64,
}

impl SyncCounts {
    pub fn count(conn: &mut Conn) -> DbResult<SyncCounts> {
        let by_state = |conn: &mut Conn, state: SyncStatus| -> DbResult<i64> {
            Ok(sync_states::table
                .filter(sync_states::state.eq(state.as_str()))
                .count()
                .get_result(conn)?)
        };
        Ok(SyncCounts {
            users: sync_states::table
                .select(diesel::dsl::count(sync_states::user_id).aggregate_distinct())
                .first(conn)?,
            in_sync: by_state(conn, SyncStatus::InSync)?,
            slow_sync: by_state(conn, SyncStatus::SlowSync)?,
            error: by_state(conn, SyncStatus::Error)?,
            item_errors: sync_item_errors::table.count().get_result(conn)?,
        })
    }

    /// One page of the users who have synchronized, by id, with their
    /// total.
    pub fn users_page(conn: &mut Conn, offset: i64, limit: i64) -> DbResult<(Vec<UserId>, i64)> {
        let total = sync_states::table
            .select(diesel::dsl::count(sync_states::user_id).aggregate_distinct())
            .first(conn)?;
        let ids = sync_states::table
            .select(sync_states::user_id)
            .distinct()
            .order(sync_states::user_id.asc())
            .offset(offset)
            .limit(limit)
            .load(conn)?;
        Ok((ids, total))
    }
}

/// Where one user's database stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    /// The slow sync (merge) is running.
    SlowSync,
    InSync,
    /// The last attempt failed; `error` says why. Retried.
    Error,
}

text_enum!(SyncStatus { SlowSync => "slow_sync", InSync => "in_sync", Error => "error" });

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncState {
    pub user_id: UserId,
    pub database: OrganizerDatabase,
    pub state: SyncStatus,
    pub sync_token: Option<String>,
    pub ctag: Option<String>,
    pub error: Option<String>,
    pub error_at: Option<PrimitiveDateTime>,
    pub last_sync_at: Option<PrimitiveDateTime>,
}

type StateRow = (
    UserId,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<PrimitiveDateTime>,
    Option<PrimitiveDateTime>,
);

fn state_from(row: StateRow) -> DbResult<SyncState> {
    Ok(SyncState {
        user_id: row.0,
        database: database(&row.1)?,
        state: SyncStatus::parse(&row.2).unwrap_or(SyncStatus::Error),
        sync_token: row.3,
        ctag: row.4,
        error: row.5,
        error_at: row.6,
        last_sync_at: row.7,
    })
}

const STATE_COLUMNS: (
    sync_states::user_id,
    sync_states::database,
    sync_states::state,
    sync_states::sync_token,
    sync_states::ctag,
    sync_states::error,
    sync_states::error_at,
    sync_states::last_sync_at,
) = (
    sync_states::user_id,
    sync_states::database,
    sync_states::state,
    sync_states::sync_token,
    sync_states::ctag,
    sync_states::error,
    sync_states::error_at,
    sync_states::last_sync_at,
);

impl SyncState {
    pub fn find(
        conn: &mut Conn,
        user: UserId,
        db: OrganizerDatabase,
    ) -> DbResult<Option<SyncState>> {
        sync_states::table
            .find((user, db.as_str()))
            .select(STATE_COLUMNS)
            .first::<StateRow>(conn)
            .optional()?
            .map(state_from)
            .transpose()
    }

    pub fn find_by_user(conn: &mut Conn, user: UserId) -> DbResult<Vec<SyncState>> {
        let mut states = sync_states::table
            .filter(sync_states::user_id.eq(user))
            .select(STATE_COLUMNS)
            .load::<StateRow>(conn)?
            .into_iter()
            .map(state_from)
            .collect::<DbResult<Vec<_>>>()?;
        states.sort_by_key(|s| s.database);
        Ok(states)
    }

    /// Every user with a database whose slow sync has finished (in sync or
    /// failing since), for the incremental rounds.
    pub fn find_synchronized(conn: &mut Conn) -> DbResult<Vec<SyncState>> {
        sync_states::table
            .filter(sync_states::state.ne(SyncStatus::SlowSync.as_str()))
            .filter(sync_states::last_sync_at.is_not_null())
            .order((sync_states::user_id.asc(), sync_states::database.asc()))
            .select(STATE_COLUMNS)
            .load::<StateRow>(conn)?
            .into_iter()
            .map(state_from)
            .collect()
    }

    /// Each user's state per database, as (user, state) pairs.
    pub fn find_all_states(conn: &mut Conn) -> DbResult<Vec<(UserId, String)>> {
        Ok(sync_states::table
            .select((sync_states::user_id, sync_states::state))
            .load::<(UserId, String)>(conn)?)
    }

    /// The PINs of devices whose user synchronizes organizer data.
    pub fn find_syncing_pins(conn: &mut Conn) -> DbResult<Vec<Pin>> {
        use crate::db::schema::devices;
        let pins: Vec<String> = devices::table
            .inner_join(sync_states::table.on(sync_states::user_id.nullable().eq(devices::user_id)))
            .select(devices::pin)
            .distinct()
            .load(conn)?;
        pins.iter()
            .map(|p| crate::db::models::device::parse_pin(p))
            .collect()
    }

    fn ensure(conn: &mut Conn, user: UserId, db: OrganizerDatabase) -> DbResult<()> {
        diesel::insert_into(sync_states::table)
            .values((
                sync_states::user_id.eq(user),
                sync_states::database.eq(db.as_str()),
                sync_states::state.eq(SyncStatus::SlowSync.as_str()),
                sync_states::updated_at.eq(now()),
            ))
            .on_conflict_do_nothing()
            .execute(conn)?;
        Ok(())
    }

    /// A slow sync of the database begins: forget the change marker.
    pub fn start_slow_sync(conn: &mut Conn, user: UserId, db: OrganizerDatabase) -> DbResult<()> {
        Self::ensure(conn, user, db)?;
        diesel::update(sync_states::table.find((user, db.as_str())))
            .set((
                sync_states::state.eq(SyncStatus::SlowSync.as_str()),
                sync_states::sync_token.eq(None::<String>),
                sync_states::ctag.eq(None::<String>),
                sync_states::last_sync_at.eq(None::<PrimitiveDateTime>),
                sync_states::updated_at.eq(now()),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// The server side is read up to this change marker.
    pub fn set_marker(
        conn: &mut Conn,
        user: UserId,
        db: OrganizerDatabase,
        sync_token: Option<&str>,
        ctag: Option<&str>,
    ) -> DbResult<()> {
        Self::ensure(conn, user, db)?;
        diesel::update(sync_states::table.find((user, db.as_str())))
            .set((
                sync_states::sync_token.eq(sync_token),
                sync_states::ctag.eq(ctag),
                sync_states::updated_at.eq(now()),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// Both sides hold the same records; any earlier error is cleared.
    pub fn set_in_sync(conn: &mut Conn, user: UserId, db: OrganizerDatabase) -> DbResult<()> {
        Self::ensure(conn, user, db)?;
        let at = now();
        diesel::update(sync_states::table.find((user, db.as_str())))
            .set((
                sync_states::state.eq(SyncStatus::InSync.as_str()),
                sync_states::error.eq(None::<String>),
                sync_states::last_sync_at.eq(Some(at)),
                sync_states::updated_at.eq(at),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// A round failed; `error` says why in an administrator's words.
    pub fn set_error(
        conn: &mut Conn,
        user: UserId,
        db: OrganizerDatabase,
        error: &str,
    ) -> DbResult<()> {
        Self::ensure(conn, user, db)?;
        let at = now();
        diesel::update(sync_states::table.find((user, db.as_str())))
            .set((
                sync_states::state.eq(SyncStatus::Error.as_str()),
                sync_states::error.eq(Some(error)),
                sync_states::error_at.eq(Some(at)),
                sync_states::updated_at.eq(at),
            ))
            .execute(conn)?;
        Ok(())
    }
}

/// One record the device holds, as the organizer server knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncItem {
    pub uid: String,
    pub href: String,
    pub etag: String,
    /// Digest of the record as the device was last given it (or gave it).
    pub digest: String,
}

impl SyncItem {
    pub fn find_by_user(
        conn: &mut Conn,
        user: UserId,
        db: OrganizerDatabase,
    ) -> DbResult<Vec<SyncItem>> {
        Ok(sync_items::table
            .filter(sync_items::user_id.eq(user))
            .filter(sync_items::database.eq(db.as_str()))
            .order(sync_items::uid.asc())
            .select((
                sync_items::uid,
                sync_items::href,
                sync_items::etag,
                sync_items::digest,
            ))
            .load::<(String, String, String, String)>(conn)?
            .into_iter()
            .map(|(uid, href, etag, digest)| SyncItem {
                uid,
                href,
                etag,
                digest,
            })
            .collect())
    }

    pub fn find(
        conn: &mut Conn,
        user: UserId,
        db: OrganizerDatabase,
        uid: &str,
    ) -> DbResult<Option<SyncItem>> {
        Ok(sync_items::table
            .find((user, db.as_str(), uid))
            .select((
                sync_items::uid,
                sync_items::href,
                sync_items::etag,
                sync_items::digest,
            ))
            .first::<(String, String, String, String)>(conn)
            .optional()?
            .map(|(uid, href, etag, digest)| SyncItem {
                uid,
                href,
                etag,
                digest,
            }))
    }

    /// Inserts or replaces each item.
    pub fn save_all(
        conn: &mut Conn,
        user: UserId,
        db: OrganizerDatabase,
        items: &[SyncItem],
    ) -> DbResult<()> {
        crate::db::write_transaction(conn, |conn| {
            for item in items {
                diesel::replace_into(sync_items::table)
                    .values((
                        sync_items::user_id.eq(user),
                        sync_items::database.eq(db.as_str()),
                        sync_items::uid.eq(&item.uid),
                        sync_items::href.eq(&item.href),
                        sync_items::etag.eq(&item.etag),
                        sync_items::digest.eq(&item.digest),
                    ))
                    .execute(conn)?;
            }
            Ok(())
        })
    }

    pub fn delete_by_uids(
        conn: &mut Conn,
        user: UserId,
        db: OrganizerDatabase,
        uids: &[String],
    ) -> DbResult<usize> {
        let mut n = 0;
        for chunk in uids.chunks(500) {
            n += diesel::delete(
                sync_items::table
                    .filter(sync_items::user_id.eq(user))
                    .filter(sync_items::database.eq(db.as_str()))
                    .filter(sync_items::uid.eq_any(chunk)),
            )
            .execute(conn)?;
        }
        Ok(n)
    }

    /// Forgets every record of the database (a slow sync starts over).
    pub fn delete_by_database(
        conn: &mut Conn,
        user: UserId,
        db: OrganizerDatabase,
    ) -> DbResult<usize> {
        Ok(diesel::delete(
            sync_items::table
                .filter(sync_items::user_id.eq(user))
                .filter(sync_items::database.eq(db.as_str())),
        )
        .execute(conn)?)
    }
}

/// Which side a record that could not be synchronized came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorSide {
    Server,
    Device,
}

text_enum!(ErrorSide { Server => "server", Device => "device" });

/// A record that could not be synchronized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncItemError {
    pub database: OrganizerDatabase,
    /// The server's href, or the record's UID for a device record.
    pub item: String,
    pub side: ErrorSide,
    pub message: String,
    pub at: PrimitiveDateTime,
}

impl SyncItemError {
    /// Records (or refreshes) the error of one item.
    pub fn record(
        conn: &mut Conn,
        user: UserId,
        db: OrganizerDatabase,
        item: &str,
        side: ErrorSide,
        message: &str,
    ) -> DbResult<()> {
        diesel::replace_into(sync_item_errors::table)
            .values((
                sync_item_errors::user_id.eq(user),
                sync_item_errors::database.eq(db.as_str()),
                sync_item_errors::item.eq(item),
                sync_item_errors::side.eq(side.as_str()),
                sync_item_errors::message.eq(message),
                sync_item_errors::at.eq(now()),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// The item synchronized after all: its error is gone.
    pub fn clear(conn: &mut Conn, user: UserId, db: OrganizerDatabase, item: &str) -> DbResult<()> {
        diesel::delete(
            sync_item_errors::table
                .filter(sync_item_errors::user_id.eq(user))
                .filter(sync_item_errors::database.eq(db.as_str()))
                .filter(sync_item_errors::item.eq(item)),
        )
        .execute(conn)?;
        Ok(())
    }

    /// The items of one user's database that have an error now.
    pub fn find_items(
        conn: &mut Conn,
        user: UserId,
        db: OrganizerDatabase,
    ) -> DbResult<Vec<String>> {
        Ok(sync_item_errors::table
            .filter(sync_item_errors::user_id.eq(user))
            .filter(sync_item_errors::database.eq(db.as_str()))
            .select(sync_item_errors::item)
            .load(conn)?)
    }

    /// The user's errors, newest first.
    pub fn find_by_user(conn: &mut Conn, user: UserId) -> DbResult<Vec<SyncItemError>> {
        sync_item_errors::table
            .filter(sync_item_errors::user_id.eq(user))
            .order((sync_item_errors::at.desc(), sync_item_errors::id.desc()))
            .select((
                sync_item_errors::database,
                sync_item_errors::item,
                sync_item_errors::side,
                sync_item_errors::message,
                sync_item_errors::at,
            ))
            .load::<(String, String, String, String, PrimitiveDateTime)>(conn)?
            .into_iter()
            .map(|(d, item, side, message, at)| {
                Ok(SyncItemError {
                    database: database(&d)?,
                    item,
                    side: ErrorSide::parse(&side).unwrap_or(ErrorSide::Server),
                    message,
                    at,
                })
            })
            .collect()
    }
}

/// A wireless backup of one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceBackup {
    pub user_id: UserId,
    /// The device it was taken from.
    pub pin: Pin,
    pub taken_at: PrimitiveDateTime,
    pub settings: serde_json::Value,
    /// The organizer records, as `bramble_proto::sync::Item` JSON.
    pub items: serde_json::Value,
    pub item_count: i32,
}

/// Backups kept per user; older ones are removed.
pub const BACKUPS_KEPT: i64 = 3;

impl DeviceBackup {
    /// Stores a backup and keeps only the newest [`BACKUPS_KEPT`].
    pub fn save(&self, conn: &mut Conn) -> DbResult<()> {
        diesel::insert_into(device_backups::table)
            .values((
                device_backups::user_id.eq(self.user_id),
                device_backups::pin.eq(self.pin.to_string()),
                device_backups::taken_at.eq(self.taken_at),
                device_backups::settings.eq(self.settings.to_string()),
                device_backups::items.eq(self.items.to_string()),
                device_backups::item_count.eq(self.item_count),
            ))
            .execute(conn)?;
        let keep: Vec<i64> = device_backups::table
            .filter(device_backups::user_id.eq(self.user_id))
            .order((device_backups::taken_at.desc(), device_backups::id.desc()))
            .limit(BACKUPS_KEPT)
            .select(device_backups::id)
            .load(conn)?;
        diesel::delete(
            device_backups::table
                .filter(device_backups::user_id.eq(self.user_id))
                .filter(device_backups::id.ne_all(keep)),
        )
        .execute(conn)?;
        Ok(())
    }

    /// The user's newest backup, from whichever device.
    pub fn find_latest(conn: &mut Conn, user: UserId) -> DbResult<Option<DeviceBackup>> {
        let row: Option<(String, PrimitiveDateTime, String, String, i32)> = device_backups::table
            .filter(device_backups::user_id.eq(user))
            .order((device_backups::taken_at.desc(), device_backups::id.desc()))
            .select((
                device_backups::pin,
                device_backups::taken_at,
                device_backups::settings,
                device_backups::items,
                device_backups::item_count,
            ))
            .first(conn)
            .optional()?;
        row.map(|(pin, taken_at, settings, items, item_count)| {
            let json = |text: &str| {
                serde_json::from_str(text).map_err(|e| {
                    DbError::Damaged(format!("a stored backup of user {user} is not JSON: {e}"))
                })
            };
            Ok(DeviceBackup {
                user_id: user,
                pin: crate::db::models::device::parse_pin(&pin)?,
                taken_at,
                settings: json(&settings)?,
                items: json(&items)?,
                item_count,
            })
        })
        .transpose()
    }
}

impl SyncState {
    /// Every user with a synchronization state for any database (a device
    /// of theirs has synchronized at least once), for `bramble sync status`.
    pub fn find_users(conn: &mut Conn) -> DbResult<Vec<UserId>> {
        Ok(sync_states::table
            .select(sync_states::user_id)
            .distinct()
            .load::<i64>(conn)?
            .into_iter()
            .map(UserId)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;
    use crate::db::models::user::{NewUser, User};
    use serde_json::json;

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
    fn every_database_starts_enabled_bidirectional_server_wins() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let all = SyncSetting::find_all(conn)?;
            assert_eq!(
                all.iter().map(|s| s.database).collect::<Vec<_>>(),
                OrganizerDatabase::ALL
            );
            for s in &all {
                assert!(s.enabled);
                assert_eq!(s.direction, SyncDirection::Bidirectional);
                assert_eq!(s.conflict, ConflictResolution::ServerWins);
            }
            SyncSetting {
                database: OrganizerDatabase::Tasks,
                enabled: false,
                direction: SyncDirection::ServerToDevice,
                conflict: ConflictResolution::DeviceWins,
            }
            .save(conn)?;
            let tasks = SyncSetting::find(conn, OrganizerDatabase::Tasks)?;
            assert!(!tasks.enabled);
            assert_eq!(tasks.direction, SyncDirection::ServerToDevice);
            assert_eq!(tasks.conflict, ConflictResolution::DeviceWins);
            assert!(SyncSetting::find(conn, OrganizerDatabase::Memos)?.enabled);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn users_with_a_state_are_found_once() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let user = alice(conn).id;
            assert!(SyncState::find_users(conn)?.is_empty());
            SyncState::start_slow_sync(conn, user, OrganizerDatabase::Contacts)?;
            SyncState::start_slow_sync(conn, user, OrganizerDatabase::Calendar)?;
            assert_eq!(SyncState::find_users(conn)?, vec![user]);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn states_items_and_errors_follow_the_user() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let user = alice(conn).id;
            let contacts = OrganizerDatabase::Contacts;
            assert_eq!(SyncState::find(conn, user, contacts)?, None);
            SyncState::start_slow_sync(conn, user, contacts)?;
            assert!(SyncState::find_synchronized(conn)?.is_empty());
            SyncState::set_marker(conn, user, contacts, Some("token-1"), None)?;
            SyncState::set_in_sync(conn, user, contacts)?;
            let state = SyncState::find(conn, user, contacts)?.unwrap();
            assert_eq!(state.state, SyncStatus::InSync);
            assert_eq!(state.sync_token.as_deref(), Some("token-1"));
            assert_eq!(SyncState::find_synchronized(conn)?.len(), 1);
            SyncState::set_error(conn, user, contacts, "the server is down")?;
            let state = SyncState::find(conn, user, contacts)?.unwrap();
            assert_eq!(
                (state.state, state.error.as_deref()),
                (SyncStatus::Error, Some("the server is down"))
            );
            assert_eq!(SyncState::find_synchronized(conn)?.len(), 1, "retried");

            let item = |uid: &str, etag: &str| SyncItem {
                uid: uid.into(),
                href: format!("/alice/contacts/{uid}.vcf"),
                etag: etag.into(),
                digest: "d".into(),
            };
            SyncItem::save_all(conn, user, contacts, &[item("a", "1"), item("b", "1")])?;
            SyncItem::save_all(conn, user, contacts, &[item("a", "2")])?;
            assert_eq!(
                SyncItem::find(conn, user, contacts, "a")?.unwrap().etag,
                "2"
            );
            assert_eq!(SyncItem::find_by_user(conn, user, contacts)?.len(), 2);
            assert_eq!(
                SyncItem::find_by_user(conn, user, OrganizerDatabase::Tasks)?.len(),
                0
            );
            SyncItem::delete_by_uids(conn, user, contacts, &["b".into()])?;
            assert_eq!(SyncItem::find_by_user(conn, user, contacts)?.len(), 1);

            SyncItemError::record(conn, user, contacts, "/x.vcf", ErrorSide::Server, "bad")?;
            SyncItemError::record(conn, user, contacts, "/x.vcf", ErrorSide::Server, "worse")?;
            let errors = SyncItemError::find_by_user(conn, user)?;
            assert_eq!(errors.len(), 1, "one row per item");
            assert_eq!(errors[0].message, "worse");
            SyncItemError::clear(conn, user, contacts, "/x.vcf")?;
            assert!(SyncItemError::find_by_user(conn, user)?.is_empty());

            User::delete_by_id(conn, user)?;
            assert_eq!(SyncState::find(conn, user, contacts)?, None);
            assert!(SyncItem::find_by_user(conn, user, contacts)?.is_empty());
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn backups_newest_first_and_only_a_few_kept() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let user = alice(conn).id;
            assert_eq!(DeviceBackup::find_latest(conn, user)?, None);
            let start = now();
            for n in 0..5i64 {
                DeviceBackup {
                    user_id: user,
                    pin: Pin(0x1000_0000),
                    taken_at: start + time::Duration::seconds(n),
                    settings: json!({ "ringtone": n }),
                    items: json!([]),
                    item_count: 0,
                }
                .save(conn)?;
            }
            let latest = DeviceBackup::find_latest(conn, user)?.unwrap();
            assert_eq!(latest.settings, json!({ "ringtone": 4 }));
            let kept: i64 = device_backups::table.count().get_result(conn)?;
            assert_eq!(kept, BACKUPS_KEPT);
            Ok(())
        })
        .unwrap();
    }
}
