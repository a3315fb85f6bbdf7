//! IT administration commands and their delivery to each device.
//!
//! A command (lock with a new password, delete all device data optionally
//! after a delay, delete only work data, generate a new encryption key) is
//! stored once in `admin_commands`; each target device has a row in
//! `admin_command_targets` that moves queued → sent → acknowledged, or to
//! failed / expired. The Policy Service sends queued targets and records
//! what happened; administrators see the rows.
//!
//! A lock command's password is never kept in `parameters`: [`AdminCommand::create`]
//! takes it out and seals it (`admin_commands/<id>/password`), the Policy
//! Service reads it with [`AdminCommand::lock_password`] when it sends the
//! command, and it is cleared as soon as no device waits for the command
//! any more (every target acknowledged, failed or expired). Commands
//! queued before passwords were sealed keep theirs in `parameters` until
//! they are done, then lose it the same way.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use time::PrimitiveDateTime;

use crate::db::ids::{AdminCommandId, DeviceId};
use crate::db::models::user::text_enum;
use crate::db::schema::{admin_command_targets, admin_commands, devices};
use crate::db::{Conn, DbError, DbResult, Sealer};

/// The key of a lock command's password in the parameters given to
/// [`AdminCommand::create`].
pub const PASSWORD: &str = "password";

fn password_context(command: AdminCommandId) -> String {
    format!("admin_commands/{}/password", command.0)
}

/// What a command does on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// Set a device password and lock the device.
    Lock,
    /// Delete all device data (and remove the device from its user).
    WipeAll,
    /// Delete only work data.
    WipeWork,
    /// Generate a new transport key.
    NewKey,
}
text_enum!(CommandKind { Lock => "lock", WipeAll => "wipe_all", WipeWork => "wipe_work", NewKey => "new_key" });

/// Where a command stands for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    Queued,
    Sent,
    Acknowledged,
    Failed,
    Expired,
}
text_enum!(TargetState { Queued => "queued", Sent => "sent", Acknowledged => "acknowledged", Failed => "failed", Expired => "expired" });

/// A stored command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminCommand {
    pub id: AdminCommandId,
    pub kind: CommandKind,
    pub parameters: serde_json::Value,
    pub requested_by: String,
    pub created_at: PrimitiveDateTime,
}

/// One device's copy of a command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandTarget {
    pub command_id: AdminCommandId,
    pub device_id: DeviceId,
    pub pin: String,
    pub kind: CommandKind,
    pub parameters: serde_json::Value,
    pub state: TargetState,
    pub ref_id: Option<String>,
    pub detail: String,
    pub updated_at: PrimitiveDateTime,
}

type TargetRow = (
    AdminCommandId,
    DeviceId,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    PrimitiveDateTime,
);

fn target(row: TargetRow) -> DbResult<CommandTarget> {
    let (command_id, device_id, pin, kind, parameters, state, ref_id, detail, updated_at) = row;
    Ok(CommandTarget {
        command_id,
        device_id,
        pin,
        kind: CommandKind::parse(&kind).ok_or_else(|| {
            DbError::Damaged(format!("command {command_id} has an unknown kind `{kind}`"))
        })?,
        parameters: serde_json::from_str(&parameters).unwrap_or(serde_json::Value::Null),
        state: TargetState::parse(&state).ok_or_else(|| {
            DbError::Damaged(format!(
                "command {command_id} has an unknown state `{state}`"
            ))
        })?,
        ref_id,
        detail,
        updated_at,
    })
}

macro_rules! target_query {
    () => {
        admin_command_targets::table
            .inner_join(admin_commands::table)
            .inner_join(devices::table)
            .select((
                admin_command_targets::command_id,
                admin_command_targets::device_id,
                devices::pin,
                admin_commands::kind,
                admin_commands::parameters,
                admin_command_targets::state,
                admin_command_targets::ref_id,
                admin_command_targets::detail,
                admin_command_targets::updated_at,
            ))
    };
}

impl AdminCommand {
    /// Stores a command once for every device in `targets` (queued). A
    /// `password` among the parameters is sealed, not stored with them.
    pub fn create(
        conn: &mut Conn,
        sealer: &Sealer,
        kind: CommandKind,
        parameters: &serde_json::Value,
        requested_by: &str,
        targets: &[DeviceId],
        now: PrimitiveDateTime,
    ) -> DbResult<AdminCommand> {
        if targets.is_empty() {
            return Err(DbError::Invalid(
                "a command needs at least one device".into(),
            ));
        }
        let mut parameters = parameters.clone();
        let password = match parameters.as_object_mut().and_then(|p| p.remove(PASSWORD)) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(p)) => Some(p),
            Some(_) => return Err(DbError::Invalid("a lock password must be text".into())),
        };
        crate::db::write_transaction(conn, |conn| {
            let id: AdminCommandId = diesel::insert_into(admin_commands::table)
                .values((
                    admin_commands::kind.eq(kind.as_str()),
                    admin_commands::parameters.eq(parameters.to_string()),
                    admin_commands::requested_by.eq(requested_by),
                    admin_commands::created_at.eq(now),
                ))
                .returning(admin_commands::id)
                .get_result(conn)?;
            if let Some(password) = &password {
                let sealed = sealer.seal(&password_context(id), password.as_bytes())?;
                diesel::update(admin_commands::table.find(id))
                    .set(admin_commands::sealed_password.eq(Some(sealed)))
                    .execute(conn)?;
            }
            let rows: Vec<_> = targets
                .iter()
                .map(|device| {
                    (
                        admin_command_targets::command_id.eq(id),
                        admin_command_targets::device_id.eq(*device),
                        admin_command_targets::state.eq(TargetState::Queued.as_str()),
                        admin_command_targets::updated_at.eq(now),
                    )
                })
                .collect();
            diesel::insert_into(admin_command_targets::table)
                .values(&rows)
                .execute(conn)?;
            Ok(AdminCommand {
                id,
                kind,
                parameters,
                requested_by: requested_by.to_owned(),
                created_at: now,
            })
        })
    }

    /// The lock password of `command`, while a device still waits for it;
    /// `None` once cleared (or for a command without one).
    pub fn lock_password(
        conn: &mut Conn,
        sealer: &Sealer,
        command: AdminCommandId,
    ) -> DbResult<Option<String>> {
        let row: Option<(Option<Vec<u8>>, String)> = admin_commands::table
            .find(command)
            .select((admin_commands::sealed_password, admin_commands::parameters))
            .first(conn)
            .optional()?;
        let Some((sealed, parameters)) = row else {
            return Ok(None);
        };
        if let Some(sealed) = sealed {
            let clear = sealer.unseal(&password_context(command), &sealed)?;
            return String::from_utf8(clear).map(Some).map_err(|_| {
                DbError::Damaged(format!(
                    "the lock password of command {command} is not text"
                ))
            });
        }
        // Queued before passwords were sealed.
        Ok(serde_json::from_str::<serde_json::Value>(&parameters)
            .ok()
            .and_then(|p| p.get(PASSWORD).and_then(|v| v.as_str().map(str::to_owned))))
    }

    /// Clears the password of `command` when no device waits for it any
    /// more; whether it did.
    fn clear_password_when_done(conn: &mut Conn, command: AdminCommandId) -> DbResult<bool> {
        let waiting: i64 = admin_command_targets::table
            .filter(admin_command_targets::command_id.eq(command))
            .filter(
                admin_command_targets::state
                    .eq_any([TargetState::Queued.as_str(), TargetState::Sent.as_str()]),
            )
            .count()
            .get_result(conn)?;
        if waiting > 0 {
            return Ok(false);
        }
        diesel::update(admin_commands::table.find(command))
            .set(admin_commands::sealed_password.eq(None::<Vec<u8>>))
            .execute(conn)?;
        diesel::sql_query(
            "UPDATE admin_commands SET parameters = json_remove(parameters, '$.password') \
             WHERE id = ? AND json_valid(parameters) AND json_type(parameters, '$.password') IS NOT NULL",
        )
        .bind::<diesel::sql_types::BigInt, _>(command.0)
        .execute(conn)?;
        Ok(true)
    }

    /// Targets in `state`, oldest first.
    pub fn targets_in_state(
        conn: &mut Conn,
        state: TargetState,
        limit: i64,
    ) -> DbResult<Vec<CommandTarget>> {
        target_query!()
            .filter(admin_command_targets::state.eq(state.as_str()))
            .order(admin_command_targets::updated_at.asc())
            .limit(limit)
            .load::<TargetRow>(conn)?
            .into_iter()
            .map(target)
            .collect()
    }

    /// Every target of one command.
    pub fn targets_of(conn: &mut Conn, command: AdminCommandId) -> DbResult<Vec<CommandTarget>> {
        target_query!()
            .filter(admin_command_targets::command_id.eq(command))
            .order(admin_command_targets::device_id.asc())
            .load::<TargetRow>(conn)?
            .into_iter()
            .map(target)
            .collect()
    }

    /// The latest commands' targets for one device, newest first.
    pub fn targets_for_device(
        conn: &mut Conn,
        device: DeviceId,
        limit: i64,
    ) -> DbResult<Vec<CommandTarget>> {
        target_query!()
            .filter(admin_command_targets::device_id.eq(device))
            .order(admin_command_targets::command_id.desc())
            .limit(limit)
            .load::<TargetRow>(conn)?
            .into_iter()
            .map(target)
            .collect()
    }

    /// The target sent with `ref_id`, if any.
    pub fn target_by_ref(conn: &mut Conn, ref_id: &str) -> DbResult<Option<CommandTarget>> {
        target_query!()
            .filter(admin_command_targets::ref_id.eq(ref_id))
            .first::<TargetRow>(conn)
            .optional()?
            .map(target)
            .transpose()
    }

    /// Moves one target on. Once no target waits any more (each is
    /// acknowledged, failed or expired), the command's password is cleared.
    pub fn set_state(
        conn: &mut Conn,
        command: AdminCommandId,
        device: DeviceId,
        state: TargetState,
        ref_id: Option<&str>,
        detail: &str,
        now: PrimitiveDateTime,
    ) -> DbResult<bool> {
        crate::db::write_transaction(conn, |conn| {
            let changed = diesel::update(admin_command_targets::table.find((command, device)))
                .set((
                    admin_command_targets::state.eq(state.as_str()),
                    admin_command_targets::detail.eq(detail),
                    admin_command_targets::updated_at.eq(now),
                ))
                .execute(conn)?;
            if let Some(ref_id) = ref_id {
                diesel::update(admin_command_targets::table.find((command, device)))
                    .set(admin_command_targets::ref_id.eq(ref_id))
                    .execute(conn)?;
            }
            if !matches!(state, TargetState::Queued | TargetState::Sent) {
                Self::clear_password_when_done(conn, command)?;
            }
            Ok(changed > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::device::{Device, NewDevice};
    use crate::db::models::test_db;
    use bramble_proto::Pin;
    use time::macros::datetime;

    #[test]
    fn stored_once_tracked_per_device() {
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        db.run_blocking(|conn| {
            let devices = devices(conn, 1..=3)?;
            let t0 = datetime!(2026-11-27 08:00);
            let command = AdminCommand::create(
                conn,
                &sealer,
                CommandKind::Lock,
                &serde_json::json!({"password": "s3cret"}),
                "admin",
                &devices,
                t0,
            )?;
            let stored: i64 = admin_commands::table.count().get_result(conn)?;
            assert_eq!(stored, 1, "the command is stored once");
            let queued = AdminCommand::targets_in_state(conn, TargetState::Queued, 10)?;
            assert_eq!(queued.len(), 3);
            assert_eq!(queued[0].parameters.get("password"), None);
            assert_eq!(
                AdminCommand::lock_password(conn, &sealer, command.id)?.as_deref(),
                Some("s3cret")
            );
            AdminCommand::set_state(
                conn,
                command.id,
                devices[1],
                TargetState::Sent,
                Some("00000000000000AB"),
                "",
                t0,
            )?;
            let by_ref = AdminCommand::target_by_ref(conn, "00000000000000AB")?.unwrap();
            assert_eq!(
                (by_ref.device_id, by_ref.state),
                (devices[1], TargetState::Sent)
            );
            assert_eq!(AdminCommand::targets_of(conn, command.id)?.len(), 3);
            assert!(AdminCommand::create(
                conn,
                &sealer,
                CommandKind::WipeAll,
                &serde_json::json!({}),
                "a",
                &[],
                t0
            )
            .is_err());
            Ok(())
        })
        .unwrap();
    }

    fn devices(conn: &mut Conn, pins: std::ops::RangeInclusive<u32>) -> DbResult<Vec<DeviceId>> {
        pins.map(|i| {
            Device::create(
                conn,
                &NewDevice {
                    pin: Pin(i),
                    user_id: None,
                    model: String::new(),
                    os_version: String::new(),
                    carrier: String::new(),
                },
            )
            .map(|d| d.id)
        })
        .collect()
    }

    #[test]
    fn a_lock_password_is_sealed_and_cleared_once_no_device_waits_for_it() {
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        db.run_blocking(|conn| {
            let devices = devices(conn, 1..=2)?;
            let t0 = datetime!(2026-11-27 08:00);
            let command = AdminCommand::create(
                conn,
                &sealer,
                CommandKind::Lock,
                &serde_json::json!({"password": "Lock-Me-7"}),
                "admin",
                &devices,
                t0,
            )?;
            let (parameters, sealed): (String, Option<Vec<u8>>) = admin_commands::table
                .find(command.id)
                .select((admin_commands::parameters, admin_commands::sealed_password))
                .first(conn)?;
            assert!(!parameters.contains("Lock-Me-7"), "{parameters}");
            let sealed = sealed.unwrap();
            assert!(!sealed.windows(9).any(|w| w == b"Lock-Me-7"));
            assert!(
                crate::db::Sealer::from_key([3; 32])
                    .unseal(&password_context(command.id), &sealed)
                    .is_err(),
                "only the master key opens it"
            );

            let set = |conn: &mut Conn, device, state| {
                AdminCommand::set_state(conn, command.id, device, state, None, "", t0)
            };
            set(conn, devices[0], TargetState::Sent)?;
            set(conn, devices[0], TargetState::Acknowledged)?;
            assert_eq!(
                AdminCommand::lock_password(conn, &sealer, command.id)?.as_deref(),
                Some("Lock-Me-7"),
                "the second device still waits for it"
            );
            set(conn, devices[1], TargetState::Sent)?;
            set(conn, devices[1], TargetState::Acknowledged)?;
            assert_eq!(
                AdminCommand::lock_password(conn, &sealer, command.id)?,
                None
            );
            let sealed: Option<Vec<u8>> = admin_commands::table
                .find(command.id)
                .select(admin_commands::sealed_password)
                .first(conn)?;
            assert_eq!(sealed, None, "cleared from the database");
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_password_queued_before_sealing_is_used_then_removed() {
        let (_dir, db) = test_db();
        let sealer = db.shared_sealer();
        db.run_blocking(|conn| {
            let devices = devices(conn, 1..=1)?;
            let t0 = datetime!(2026-11-27 08:00);
            let command = AdminCommand::create(
                conn,
                &sealer,
                CommandKind::Lock,
                &serde_json::json!({}),
                "admin",
                &devices,
                t0,
            )?;
            // As an older Bramble stored it.
            diesel::update(admin_commands::table.find(command.id))
                .set(admin_commands::parameters.eq(r#"{"password":"old-1234"}"#))
                .execute(conn)?;
            assert_eq!(
                AdminCommand::lock_password(conn, &sealer, command.id)?.as_deref(),
                Some("old-1234")
            );
            AdminCommand::set_state(
                conn,
                command.id,
                devices[0],
                TargetState::Expired,
                None,
                "",
                t0,
            )?;
            assert_eq!(
                AdminCommand::lock_password(conn, &sealer, command.id)?,
                None
            );
            let parameters: String = admin_commands::table
                .find(command.id)
                .select(admin_commands::parameters)
                .first(conn)?;
            assert_eq!(parameters, "{}");
            Ok(())
        })
        .unwrap();
    }
}
