//! BlackBerry smartphones, known by their PIN: owner, model, OS version,
//! carrier, which IT policy was applied and when, the last contact, and the
//! diagnostics reports the devices send (seed: the Synchronization Service
//! gathers device diagnostics).
//!
//! A device outlives its owner's account (it is kept without an owner) and
//! its applied policy (kept with none applied); its diagnostics, transport
//! keys and service books go with it.

use diesel::prelude::*;
use serde::Serialize;
use time::PrimitiveDateTime;

use crate::db::ids::{DeviceId, DiagnosticsId, ItPolicyId, UserId};
use crate::db::schema::{device_diagnostics, devices};
use crate::db::{now, Conn, DbError, DbResult};

/// A BlackBerry PIN, as on the wire (stored as 8 upper-case hex digits,
/// so `2a3b4c5d` finds the same device).
pub use bramble_proto::Pin;

/// Reads a PIN typed by a person or stored in the database.
pub fn parse_pin(text: &str) -> DbResult<Pin> {
    text.parse()
        .map_err(|e: bramble_proto::PinError| DbError::Invalid(e.to_string()))
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = devices, check_for_backend(diesel::sqlite::Sqlite))]
struct DeviceRow {
    id: DeviceId,
    pin: String,
    user_id: Option<UserId>,
    model: String,
    os_version: String,
    carrier: String,
    applied_policy_id: Option<ItPolicyId>,
    policy_applied_at: Option<PrimitiveDateTime>,
    last_contact_at: Option<PrimitiveDateTime>,
    created_at: PrimitiveDateTime,
}

/// A BlackBerry smartphone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    pub id: DeviceId,
    pub pin: Pin,
    /// None once the owner's account is deleted.
    pub user_id: Option<UserId>,
    pub model: String,
    pub os_version: String,
    pub carrier: String,
    /// The IT policy the device last confirmed, and when.
    pub applied_policy_id: Option<ItPolicyId>,
    pub policy_applied_at: Option<PrimitiveDateTime>,
    pub last_contact_at: Option<PrimitiveDateTime>,
    pub created_at: PrimitiveDateTime,
}

impl TryFrom<DeviceRow> for Device {
    type Error = DbError;

    fn try_from(row: DeviceRow) -> DbResult<Device> {
        Ok(Device {
            id: row.id,
            pin: parse_pin(&row.pin)?,
            user_id: row.user_id,
            model: row.model,
            os_version: row.os_version,
            carrier: row.carrier,
            applied_policy_id: row.applied_policy_id,
            policy_applied_at: row.policy_applied_at,
            last_contact_at: row.last_contact_at,
            created_at: row.created_at,
        })
    }
}

/// A device not yet saved (at activation, or entered by an administrator).
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub pin: Pin,
    pub user_id: Option<UserId>,
    pub model: String,
    pub os_version: String,
    pub carrier: String,
}

/// One diagnostics report of a device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceDiagnostics {
    pub id: DiagnosticsId,
    pub device_id: DeviceId,
    pub reported_at: PrimitiveDateTime,
    /// The JSON document as the device reported it.
    pub report: serde_json::Value,
}

fn pin_taken(pin: &Pin) -> impl FnOnce(diesel::result::Error) -> DbError + '_ {
    move |e| match e {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ) => DbError::Invalid(format!("a device with the PIN {pin} already exists")),
        other => other.into(),
    }
}

impl Device {
    /// The device with this PIN, made (with no owner and nothing known of
    /// it) if there is none.
    pub fn find_or_create(conn: &mut Conn, pin: Pin) -> DbResult<Device> {
        match Device::find_by_pin(conn, &pin)? {
            Some(device) => Ok(device),
            None => Device::create(
                conn,
                &NewDevice {
                    pin,
                    user_id: None,
                    model: String::new(),
                    os_version: String::new(),
                    carrier: String::new(),
                },
            ),
        }
    }

    pub fn create(conn: &mut Conn, new: &NewDevice) -> DbResult<Device> {
        diesel::insert_into(devices::table)
            .values((
                devices::pin.eq(new.pin.to_string()),
                devices::user_id.eq(new.user_id),
                devices::model.eq(&new.model),
                devices::os_version.eq(&new.os_version),
                devices::carrier.eq(&new.carrier),
                devices::created_at.eq(now()),
            ))
            .returning(DeviceRow::as_returning())
            .get_result(conn)
            .map_err(pin_taken(&new.pin))?
            .try_into()
    }

    pub fn find_by_id(conn: &mut Conn, id: DeviceId) -> DbResult<Option<Device>> {
        devices::table
            .find(id)
            .select(DeviceRow::as_select())
            .first(conn)
            .optional()?
            .map(Device::try_from)
            .transpose()
    }

    pub fn find_by_pin(conn: &mut Conn, pin: &Pin) -> DbResult<Option<Device>> {
        devices::table
            .filter(devices::pin.eq(pin.to_string()))
            .select(DeviceRow::as_select())
            .first(conn)
            .optional()?
            .map(Device::try_from)
            .transpose()
    }

    /// The device with this PIN and the user it belongs to; `None` when
    /// there is no such device or it belongs to nobody.
    pub fn find_with_owner(
        conn: &mut Conn,
        pin: &Pin,
    ) -> DbResult<Option<(Device, crate::db::models::user::User)>> {
        let Some(device) = Device::find_by_pin(conn, pin)? else {
            return Ok(None);
        };
        let Some(user_id) = device.user_id else {
            return Ok(None);
        };
        Ok(crate::db::models::user::User::find_by_id(conn, user_id)?.map(|user| (device, user)))
    }

    /// The devices of a user, oldest first.
    pub fn find_by_user(conn: &mut Conn, user: UserId) -> DbResult<Vec<Device>> {
        devices::table
            .filter(devices::user_id.eq(user))
            .order((devices::created_at.asc(), devices::id.asc()))
            .select(DeviceRow::as_select())
            .load(conn)?
            .into_iter()
            .map(Device::try_from)
            .collect()
    }

    /// Records that the device was heard from at `at`.
    pub fn touch_last_contact(
        conn: &mut Conn,
        id: DeviceId,
        at: PrimitiveDateTime,
    ) -> DbResult<bool> {
        Ok(diesel::update(devices::table.find(id))
            .set(devices::last_contact_at.eq(at))
            .execute(conn)?
            > 0)
    }

    /// Records that the device confirmed an IT policy at `at`: `policy`
    /// names it, `None` for the catalog's defaults (no policy assigned and
    /// no default policy).
    pub fn record_policy_applied(
        conn: &mut Conn,
        id: DeviceId,
        policy: Option<ItPolicyId>,
        at: PrimitiveDateTime,
    ) -> DbResult<bool> {
        Ok(diesel::update(devices::table.find(id))
            .set((
                devices::applied_policy_id.eq(policy),
                devices::policy_applied_at.eq(at),
            ))
            .execute(conn)?
            > 0)
    }

    /// Writes the PIN, owner, model, OS version and carrier back.
    pub fn save(&self, conn: &mut Conn) -> DbResult<()> {
        diesel::update(devices::table.find(self.id))
            .set((
                devices::pin.eq(self.pin.to_string()),
                devices::user_id.eq(self.user_id),
                devices::model.eq(&self.model),
                devices::os_version.eq(&self.os_version),
                devices::carrier.eq(&self.carrier),
            ))
            .execute(conn)
            .map_err(pin_taken(&self.pin))?;
        Ok(())
    }

    /// Deletes the device with its diagnostics, transport keys and service
    /// books; its messages are kept without a device.
    pub fn delete_by_id(conn: &mut Conn, id: DeviceId) -> DbResult<bool> {
        Ok(diesel::delete(devices::table.find(id)).execute(conn)? > 0)
    }

    /// Stores a diagnostics report received now.
    pub fn add_diagnostics(
        conn: &mut Conn,
        device: DeviceId,
        report: &serde_json::Value,
    ) -> DbResult<DeviceDiagnostics> {
        let (id, reported_at) = diesel::insert_into(device_diagnostics::table)
            .values((
                device_diagnostics::device_id.eq(device),
                device_diagnostics::reported_at.eq(now()),
                device_diagnostics::report.eq(report.to_string()),
            ))
            .returning((device_diagnostics::id, device_diagnostics::reported_at))
            .get_result(conn)?;
        Ok(DeviceDiagnostics {
            id,
            device_id: device,
            reported_at,
            report: report.clone(),
        })
    }

    /// The device's latest `limit` reports, newest first.
    pub fn find_diagnostics(
        conn: &mut Conn,
        device: DeviceId,
        limit: i64,
    ) -> DbResult<Vec<DeviceDiagnostics>> {
        let rows: Vec<(DiagnosticsId, PrimitiveDateTime, String)> = device_diagnostics::table
            .filter(device_diagnostics::device_id.eq(device))
            .order((
                device_diagnostics::reported_at.desc(),
                device_diagnostics::id.desc(),
            ))
            .limit(limit)
            .select((
                device_diagnostics::id,
                device_diagnostics::reported_at,
                device_diagnostics::report,
            ))
            .load(conn)?;
        rows.into_iter()
            .map(|(id, reported_at, text)| {
                let report = serde_json::from_str(&text).map_err(|e| {
                    DbError::Damaged(format!(
                        "diagnostics report {id} of device {device} is not JSON: {e}"
                    ))
                })?;
                Ok(DeviceDiagnostics {
                    id,
                    device_id: device,
                    reported_at,
                    report,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::it_policy::ItPolicy;
    use crate::db::models::test_db;
    use crate::db::models::user::{NewUser, User};
    use serde_json::json;

    fn new_device(pin: &str, user: Option<UserId>) -> NewDevice {
        NewDevice {
            pin: parse_pin(pin).unwrap(),
            user_id: user,
            model: "9700".into(),
            os_version: "5.0.0.405".into(),
            carrier: "Example Wireless".into(),
        }
    }

    #[test]
    fn pins_are_eight_hex_digits_in_upper_case() {
        assert_eq!(parse_pin(" 2a3b4c5d ").unwrap().to_string(), "2A3B4C5D");
        assert_eq!(parse_pin("2A3B4C5D").unwrap().0, 0x2A3B_4C5D);
        for bad in [
            "",
            "2A3B4C5",
            "2A3B4C5D6",
            "2A3B4C5G",
            "0x2A3B4C",
            "2A3B 4C5",
        ] {
            let err = parse_pin(bad).unwrap_err();
            assert!(matches!(err, DbError::Invalid(_)));
            assert!(err.to_string().contains("8 hexadecimal digits"), "{err}");
        }
        let pin: Pin = serde_json::from_str("\"abcdef01\"").unwrap();
        assert_eq!(serde_json::to_string(&pin).unwrap(), "\"ABCDEF01\"");
        assert!(serde_json::from_str::<Pin>("\"nope\"").is_err());
    }

    #[test]
    fn devices_owner_policy_and_contact() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let alice = NewUser {
                display_name: "Alice".into(),
                email: "alice@example.com".into(),
                mailbox_login: "alice".into(),
            }
            .save(conn)?;
            let first = Device::create(conn, &new_device("2a3b4c5d", Some(alice.id)))?;
            let second = Device::create(conn, &new_device("10000001", Some(alice.id)))?;
            assert_eq!(first.pin.to_string(), "2A3B4C5D");
            let dup = Device::create(conn, &new_device("2A3B4C5D", None)).unwrap_err();
            assert!(
                dup.to_string().contains("already exists"),
                "PINs are unique: {dup}"
            );

            let found = Device::find_by_pin(conn, &parse_pin("2A3B4C5D")?)?.unwrap();
            assert_eq!(found, first);
            let ids: Vec<_> = Device::find_by_user(conn, alice.id)?
                .into_iter()
                .map(|d| d.id)
                .collect();
            assert_eq!(ids, [first.id, second.id]);

            let at = now();
            assert!(Device::touch_last_contact(conn, first.id, at)?);
            let policy = ItPolicy::create(conn, "Standard", "")?;
            assert!(Device::record_policy_applied(
                conn,
                first.id,
                Some(policy.id),
                at
            )?);
            let mut reread = Device::find_by_id(conn, first.id)?.unwrap();
            assert_eq!(reread.last_contact_at, Some(at));
            assert_eq!(
                (reread.applied_policy_id, reread.policy_applied_at),
                (Some(policy.id), Some(at))
            );
            assert!(!Device::touch_last_contact(conn, DeviceId(9_999), at)?);

            reread.os_version = "5.0.0.500".into();
            reread.carrier = "Other Wireless".into();
            reread.save(conn)?;
            assert_eq!(
                Device::find_by_id(conn, first.id)?.unwrap().os_version,
                "5.0.0.500"
            );
            reread.pin = parse_pin("10000001")?;
            assert!(
                reread.save(conn).is_err(),
                "cannot take another device's PIN"
            );

            // Deleting the policy leaves the device with no applied policy.
            ItPolicy::delete_by_id(conn, policy.id)?;
            assert_eq!(
                Device::find_by_id(conn, first.id)?
                    .unwrap()
                    .applied_policy_id,
                None
            );
            // Deleting the owner keeps the devices without an owner.
            User::delete_by_id(conn, alice.id)?;
            let orphan = Device::find_by_id(conn, first.id)?.unwrap();
            assert_eq!(orphan.user_id, None);
            assert!(Device::delete_by_id(conn, second.id)?);
            assert!(!Device::delete_by_id(conn, second.id)?);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn diagnostics_newest_first_and_removed_with_the_device() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let device = Device::create(conn, &new_device("2A3B4C5D", None))?;
            let other = Device::create(conn, &new_device("0000FFFF", None))?;
            for n in 0..5 {
                Device::add_diagnostics(conn, device.id, &json!({ "battery": n, "signal": -80 }))?;
            }
            Device::add_diagnostics(conn, other.id, &json!({ "battery": 99 }))?;
            let latest = Device::find_diagnostics(conn, device.id, 3)?;
            let batteries: Vec<_> = latest.iter().map(|d| d.report["battery"].clone()).collect();
            assert_eq!(batteries, [json!(4), json!(3), json!(2)]);
            assert!(latest[0].reported_at >= latest[1].reported_at);
            assert_eq!(Device::find_diagnostics(conn, device.id, 100)?.len(), 5);

            Device::delete_by_id(conn, device.id)?;
            let left: i64 = device_diagnostics::table.count().get_result(conn)?;
            assert_eq!(left, 1, "diagnostics go with their device");
            Ok(())
        })
        .unwrap();
    }
}
