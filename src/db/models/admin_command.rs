//! IT administration commands and their delivery to each device.
//!
//! A command (lock with a new password, delete all device data optionally
//! after a delay, delete only work data, generate a new encryption key) is
//! stored once in `admin_commands`; each target device has a row in
//! `admin_command_targets` that moves queued → sent → acknowledged, or to
//! failed / expired. The Policy Service sends queued targets and records
//! what happened; administrators see the rows.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use time::PrimitiveDateTime;

use crate::db::ids::{AdminCommandId, DeviceId};
use crate::db::models::user::text_enum;
use crate::db::schema::{admin_command_targets, admin_commands, devices};
use crate::db::{Conn, DbError, DbResult};

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
    /// Stores a command once for every device in `targets` (queued).
    pub fn create(
        conn: &mut Conn,
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
                parameters: parameters.clone(),
                requested_by: requested_by.to_owned(),
                created_at: now,
            })
        })
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

    /// Moves one target on.
    pub fn set_state(
        conn: &mut Conn,
        command: AdminCommandId,
        device: DeviceId,
        state: TargetState,
        ref_id: Option<&str>,
        detail: &str,
        now: PrimitiveDateTime,
    ) -> DbResult<bool> {
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
        Ok(changed > 0)
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
        db.run_blocking(|conn| {
            let devices: Vec<DeviceId> = (1..=3)
                .map(|i| {
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
                .collect::<DbResult<_>>()?;
            let t0 = datetime!(2026-11-27 08:00);
            let command = AdminCommand::create(
                conn,
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
            assert_eq!(queued[0].parameters["password"], "s3cret");
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
}
