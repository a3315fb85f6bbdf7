//! The Dispatcher's replay window: which messages from devices the server
//! has acted on, by (PIN, transport key id, content type, RefID).
//!
//! Every message a device sends is sealed under one of the device's
//! transport keys, and the server opens only messages under keys it still
//! holds. So a message needs to be remembered only while the key it came
//! under is held: rows of keys the device no longer has (replaced by two
//! key changes, reactivation, a wipe, the device removed) are deleted by
//! [`ReplayWindow::prune`], and a replay older than that does not open at
//! all. See `docs/protocol.md`, "Delivery semantics".

use bramble_proto::{ContentType, Pin, RefId};
use diesel::prelude::*;
use time::PrimitiveDateTime;

use crate::db::schema::device_replay_window;
use crate::db::{Conn, DbResult};

/// One message from a device, as the window records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub pin: Pin,
    pub key_id: u32,
    pub content_type: ContentType,
    pub ref_id: RefId,
}

pub struct ReplayWindow;

impl ReplayWindow {
    /// Records `arrival`; `true` when it is new, `false` when it was
    /// recorded before (a replay, or the device sending it again).
    pub fn record(conn: &mut Conn, arrival: &Arrival, at: PrimitiveDateTime) -> DbResult<bool> {
        let inserted = diesel::insert_or_ignore_into(device_replay_window::table)
            .values((
                device_replay_window::pin.eq(arrival.pin.to_string()),
                device_replay_window::key_id.eq(i64::from(arrival.key_id)),
                device_replay_window::content_type.eq(arrival.content_type as i32),
                device_replay_window::ref_id.eq(arrival.ref_id.to_string()),
                device_replay_window::received_at.eq(at),
            ))
            .execute(conn)?;
        Ok(inserted > 0)
    }

    /// Deletes the rows of keys that no device holds any more; returns how
    /// many.
    pub fn prune(conn: &mut Conn) -> DbResult<usize> {
        Ok(diesel::sql_query(
            "DELETE FROM device_replay_window WHERE NOT EXISTS (\
               SELECT 1 FROM device_keys k JOIN devices d ON d.id = k.device_id \
               WHERE d.pin = device_replay_window.pin \
                 AND k.key_id = device_replay_window.key_id)",
        )
        .execute(conn)?)
    }

    /// How many messages of `pin` are remembered.
    pub fn count_for(conn: &mut Conn, pin: Pin) -> DbResult<i64> {
        Ok(device_replay_window::table
            .filter(device_replay_window::pin.eq(pin.to_string()))
            .count()
            .get_result(conn)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::device::Device;
    use crate::db::models::device_key::{DeviceKey, KeyMaterial, KeySlot};
    use crate::db::models::test_db;
    use crate::db::now;
    use bramble_proto::envelope::TransportKey;

    fn arrival(pin: Pin, key_id: u32, ref_id: u64) -> Arrival {
        Arrival {
            pin,
            key_id,
            content_type: ContentType::Cmime,
            ref_id: RefId(ref_id),
        }
    }

    #[test]
    fn a_message_is_new_once_per_key_and_type() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let a = arrival(Pin(1), 7, 42);
            assert!(ReplayWindow::record(conn, &a, now())?);
            assert!(!ReplayWindow::record(conn, &a, now())?, "played again");
            let other_type = Arrival {
                content_type: ContentType::Sync,
                ..a
            };
            assert!(ReplayWindow::record(conn, &other_type, now())?);
            assert!(ReplayWindow::record(conn, &arrival(Pin(1), 8, 42), now())?);
            assert!(ReplayWindow::record(conn, &arrival(Pin(2), 7, 42), now())?);
            assert_eq!(ReplayWindow::count_for(conn, Pin(1))?, 3);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn rows_go_with_the_key_they_came_under() {
        let (_dir, db) = test_db();
        let sealer = db.sealer();
        db.run_blocking(|conn| {
            let pin = Pin(0x2000_0001);
            let device = Device::find_or_create(conn, pin)?;
            DeviceKey::save_current(conn, sealer, device.id, &TransportKey::new(1, [1; 32]))?;
            ReplayWindow::record(conn, &arrival(pin, 1, 10), now())?;
            // A stranger PIN with no device: nothing to keep.
            ReplayWindow::record(conn, &arrival(Pin(9), 1, 10), now())?;
            assert_eq!(ReplayWindow::prune(conn)?, 1);
            assert_eq!(ReplayWindow::count_for(conn, pin)?, 1, "key 1 is held");

            // A key change: key 2 pending, then current; key 1 previous.
            DeviceKey::save_slot(
                conn,
                sealer,
                device.id,
                KeySlot::Pending,
                2,
                &KeyMaterial::new(vec![2; 32]),
            )?;
            DeviceKey::promote_pending(conn, sealer, device.id)?;
            ReplayWindow::record(conn, &arrival(pin, 2, 11), now())?;
            assert_eq!(
                ReplayWindow::prune(conn)?,
                0,
                "key 1 is still held as previous"
            );
            // The next change drops key 1, and its rows with it.
            DeviceKey::save_slot(
                conn,
                sealer,
                device.id,
                KeySlot::Pending,
                3,
                &KeyMaterial::new(vec![3; 32]),
            )?;
            DeviceKey::promote_pending(conn, sealer, device.id)?;
            assert_eq!(ReplayWindow::prune(conn)?, 1);
            assert!(
                ReplayWindow::record(conn, &arrival(pin, 2, 11), now()).map(|new| !new)?,
                "key 2's rows stay"
            );
            // Reactivation or removal: no key left, no row left.
            DeviceKey::delete_for_device(conn, device.id)?;
            ReplayWindow::prune(conn)?;
            assert_eq!(ReplayWindow::count_for(conn, pin)?, 0);
            Ok(())
        })
        .unwrap();
    }
}
