//! Device transport keys (seed: "BlackBerry smartphone encryption keys"):
//! the keys that encrypt traffic between this server and each smartphone.
//! A device has up to three: the `current` key in use, a `pending` key
//! generated and sent but not yet confirmed, and the `previous` key, kept so
//! messages already in flight still open after a key change.
//!
//! Keys are sealed at rest with the local master key, bound to their place
//! (`device_keys/<device_id>/<slot>/<key_id>`), so a sealed key copied to
//! another device or slot does not open. Nothing here hands out key bytes
//! except [`SealedDeviceKey::unseal`], which needs the [`Sealer`].

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use time::PrimitiveDateTime;

use crate::db::ids::DeviceId;
use crate::db::models::user::text_enum;
use crate::db::schema::device_keys;
use crate::db::{now, Conn, DbError, DbResult, Sealer};

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySlot {
    /// In use for every packet.
    Current,
    /// Generated and sent, waiting for the device to confirm it.
    Pending,
    /// The key before the last change.
    Previous,
}

text_enum!(KeySlot {
    Current => "current",
    Pending => "pending",
    Previous => "previous",
});

impl KeySlot {
    fn order(self) -> u8 {
        match self {
            KeySlot::Current => 0,
            KeySlot::Pending => 1,
            KeySlot::Previous => 2,
        }
    }
}

/// Transport key bytes in clear. `Debug` shows the length only and the
/// memory is overwritten when the value is dropped; it is deliberately not
/// `Clone` or `Serialize`.
pub struct KeyMaterial(Vec<u8>);

impl KeyMaterial {
    pub fn new(bytes: Vec<u8>) -> KeyMaterial {
        KeyMaterial(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyMaterial({} bytes)", self.0.len())
    }
}

impl Drop for KeyMaterial {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// A slot's key id and age, without key material; what the console and the
/// protocol code look at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceKeyInfo {
    pub device_id: DeviceId,
    pub slot: KeySlot,
    pub key_id: i64,
    pub created_at: PrimitiveDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = device_keys, check_for_backend(diesel::sqlite::Sqlite))]
struct KeyRow {
    device_id: DeviceId,
    slot: String,
    key_id: i64,
    sealed_key: Vec<u8>,
    created_at: PrimitiveDateTime,
}

/// A stored key, still sealed.
pub struct SealedDeviceKey {
    pub info: DeviceKeyInfo,
    sealed: Vec<u8>,
}

impl std::fmt::Debug for SealedDeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedDeviceKey")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl SealedDeviceKey {
    /// The key in clear. Fails if the master key is not the one that sealed
    /// it or the sealed value was moved from another device, slot or key id.
    pub fn unseal(&self, sealer: &Sealer) -> DbResult<KeyMaterial> {
        let context = context(self.info.device_id, self.info.slot, self.info.key_id);
        Ok(KeyMaterial(sealer.unseal(&context, &self.sealed)?))
    }
}

impl TryFrom<KeyRow> for SealedDeviceKey {
    type Error = DbError;

    fn try_from(row: KeyRow) -> DbResult<SealedDeviceKey> {
        let slot = KeySlot::parse(&row.slot).ok_or_else(|| {
            DbError::Damaged(format!(
                "device {} has a key in an unknown slot `{}`",
                row.device_id, row.slot
            ))
        })?;
        Ok(SealedDeviceKey {
            info: DeviceKeyInfo {
                device_id: row.device_id,
                slot,
                key_id: row.key_id,
                created_at: row.created_at,
            },
            sealed: row.sealed_key,
        })
    }
}

fn context(device: DeviceId, slot: KeySlot, key_id: i64) -> String {
    format!("device_keys/{device}/{}/{key_id}", slot.as_str())
}

/// Moves the key in `from` to `to`, sealing it again for its new place.
fn move_slot(
    conn: &mut Conn,
    sealer: &Sealer,
    device: DeviceId,
    from: KeySlot,
    to: KeySlot,
) -> DbResult<()> {
    if let Some(sealed) = DeviceKey::find_slot(conn, device, from)? {
        let key = sealed.unseal(sealer)?;
        let resealed = sealer.seal(&context(device, to, sealed.info.key_id), key.as_bytes())?;
        diesel::update(
            device_keys::table
                .filter(device_keys::device_id.eq(device))
                .filter(device_keys::slot.eq(from.as_str())),
        )
        .set((
            device_keys::slot.eq(to.as_str()),
            device_keys::sealed_key.eq(resealed),
        ))
        .execute(conn)?;
    }
    Ok(())
}

/// The transport keys of devices.
#[derive(Debug)]
pub struct DeviceKey;

impl DeviceKey {
    /// Seals a transport key and stores it as the device's current key
    /// (what activation, or a reference device given its key directly,
    /// ends with).
    pub fn save_current(
        conn: &mut Conn,
        sealer: &Sealer,
        device: DeviceId,
        key: &bramble_proto::envelope::TransportKey,
    ) -> DbResult<()> {
        DeviceKey::save_slot(
            conn,
            sealer,
            device,
            KeySlot::Current,
            i64::from(key.id),
            &KeyMaterial::new(key.secret().to_vec()),
        )?;
        Ok(())
    }

    /// Seals `key` and stores it in the device's `slot`, replacing what was
    /// there.
    pub fn save_slot(
        conn: &mut Conn,
        sealer: &Sealer,
        device: DeviceId,
        slot: KeySlot,
        key_id: i64,
        key: &KeyMaterial,
    ) -> DbResult<DeviceKeyInfo> {
        if key.as_bytes().is_empty() {
            return Err(DbError::Invalid("a transport key cannot be empty".into()));
        }
        let sealed = sealer.seal(&context(device, slot, key_id), key.as_bytes())?;
        let created_at = now();
        diesel::insert_into(device_keys::table)
            .values((
                device_keys::device_id.eq(device),
                device_keys::slot.eq(slot.as_str()),
                device_keys::key_id.eq(key_id),
                device_keys::sealed_key.eq(&sealed),
                device_keys::created_at.eq(created_at),
            ))
            .on_conflict((device_keys::device_id, device_keys::slot))
            .do_update()
            .set((
                device_keys::key_id.eq(key_id),
                device_keys::sealed_key.eq(&sealed),
                device_keys::created_at.eq(created_at),
            ))
            .execute(conn)?;
        Ok(DeviceKeyInfo {
            device_id: device,
            slot,
            key_id,
            created_at,
        })
    }

    /// The sealed key in a slot, if any.
    pub fn find_slot(
        conn: &mut Conn,
        device: DeviceId,
        slot: KeySlot,
    ) -> DbResult<Option<SealedDeviceKey>> {
        device_keys::table
            .filter(device_keys::device_id.eq(device))
            .filter(device_keys::slot.eq(slot.as_str()))
            .select(KeyRow::as_select())
            .first(conn)
            .optional()?
            .map(SealedDeviceKey::try_from)
            .transpose()
    }

    /// Every stored key, still sealed, with its device's PIN as stored
    /// (8 hex digits), ordered by device.
    pub fn all_sealed_with_pins(conn: &mut Conn) -> DbResult<Vec<(String, SealedDeviceKey)>> {
        use crate::db::schema::devices;
        device_keys::table
            .inner_join(devices::table)
            .order(device_keys::device_id)
            .select((devices::pin, KeyRow::as_select()))
            .load::<(String, KeyRow)>(conn)?
            .into_iter()
            .map(|(pin, row)| Ok((pin, SealedDeviceKey::try_from(row)?)))
            .collect()
    }

    /// The device's slots and key ids (current, pending, previous), without
    /// key material.
    pub fn find_all_for_device(conn: &mut Conn, device: DeviceId) -> DbResult<Vec<DeviceKeyInfo>> {
        let rows: Vec<(String, i64, PrimitiveDateTime)> = device_keys::table
            .filter(device_keys::device_id.eq(device))
            .select((
                device_keys::slot,
                device_keys::key_id,
                device_keys::created_at,
            ))
            .load(conn)?;
        let mut infos = rows
            .into_iter()
            .map(|(slot, key_id, created_at)| {
                let slot = KeySlot::parse(&slot).ok_or_else(|| {
                    DbError::Damaged(format!(
                        "device {device} has a key in an unknown slot `{slot}`"
                    ))
                })?;
                Ok(DeviceKeyInfo {
                    device_id: device,
                    slot,
                    key_id,
                    created_at,
                })
            })
            .collect::<DbResult<Vec<_>>>()?;
        infos.sort_by_key(|info| info.slot.order());
        Ok(infos)
    }

    /// The device confirmed its pending key: in one transaction the current
    /// key becomes the previous one (the old previous key is dropped) and the
    /// pending key becomes current. Keys are sealed again for their new slot.
    /// Returns false, changing nothing, if there is no pending key.
    pub fn promote_pending(conn: &mut Conn, sealer: &Sealer, device: DeviceId) -> DbResult<bool> {
        crate::db::write_transaction(conn, |conn| {
            if DeviceKey::find_slot(conn, device, KeySlot::Pending)?.is_none() {
                return Ok(false);
            }
            diesel::delete(
                device_keys::table
                    .filter(device_keys::device_id.eq(device))
                    .filter(device_keys::slot.eq(KeySlot::Previous.as_str())),
            )
            .execute(conn)?;
            move_slot(conn, sealer, device, KeySlot::Current, KeySlot::Previous)?;
            move_slot(conn, sealer, device, KeySlot::Pending, KeySlot::Current)?;
            Ok(true)
        })
    }

    /// Devices whose current key was made before `cutoff` (for key
    /// regeneration by age), at most `limit`, oldest first.
    pub fn current_older_than(
        conn: &mut Conn,
        cutoff: PrimitiveDateTime,
        limit: i64,
    ) -> DbResult<Vec<bramble_proto::Pin>> {
        let pins: Vec<String> = device_keys::table
            .inner_join(crate::db::schema::devices::table)
            .filter(device_keys::slot.eq(KeySlot::Current.as_str()))
            .filter(device_keys::created_at.lt(cutoff))
            .order(device_keys::created_at.asc())
            .limit(limit)
            .select(crate::db::schema::devices::pin)
            .load(conn)?;
        pins.iter()
            .map(|p| crate::db::models::device::parse_pin(p))
            .collect()
    }

    pub fn delete_slot(conn: &mut Conn, device: DeviceId, slot: KeySlot) -> DbResult<bool> {
        Ok(diesel::delete(
            device_keys::table
                .filter(device_keys::device_id.eq(device))
                .filter(device_keys::slot.eq(slot.as_str())),
        )
        .execute(conn)?
            > 0)
    }

    /// Forgets every key of the device (it must be activated again);
    /// returns how many were deleted.
    pub fn delete_for_device(conn: &mut Conn, device: DeviceId) -> DbResult<usize> {
        Ok(
            diesel::delete(device_keys::table.filter(device_keys::device_id.eq(device)))
                .execute(conn)?,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::device::{Device, NewDevice};
    use crate::db::models::test_db;

    #[tokio::test(start_paused = true)]
    async fn a_key_is_due_for_regeneration_once_it_outlives_its_lifetime() {
        let (_dir, db) = test_db();
        let clock = crate::clock::Clock::new();
        let sealer = db.shared_sealer();
        db.run_blocking(|conn| {
            let id = device(conn, "2A3B4C5D");
            DeviceKey::save_slot(
                conn,
                &sealer,
                id,
                KeySlot::Current,
                1,
                &KeyMaterial::new(vec![7; 32]),
            )?;
            Ok(())
        })
        .unwrap();
        let lifetime = time::Duration::days(30);
        let due = |db: &crate::db::Database, clock: crate::clock::Clock| {
            db.run_blocking(|conn| {
                DeviceKey::current_older_than(conn, clock.now_db() - lifetime, 10)
            })
            .unwrap()
        };
        assert!(due(&db, clock).is_empty());
        tokio::time::advance(std::time::Duration::from_secs(29 * 24 * 3600)).await;
        assert!(due(&db, clock).is_empty(), "29 days old: not yet");
        tokio::time::advance(std::time::Duration::from_secs(2 * 24 * 3600)).await;
        assert_eq!(
            due(&db, clock),
            [crate::db::models::device::parse_pin("2A3B4C5D").unwrap()],
            "31 days old: replaced"
        );
    }

    fn device(conn: &mut Conn, pin: &str) -> DeviceId {
        Device::create(
            conn,
            &NewDevice {
                pin: crate::db::models::device::parse_pin(pin).unwrap(),
                user_id: None,
                model: String::new(),
                os_version: String::new(),
                carrier: String::new(),
            },
        )
        .unwrap()
        .id
    }

    fn key(fill: u8) -> KeyMaterial {
        KeyMaterial::new(vec![fill; 32])
    }

    #[test]
    fn keys_are_sealed_at_rest() {
        let (_dir, db) = test_db();
        let sealer = db.sealer();
        db.run_blocking(|conn| {
            let dev = device(conn, "2A3B4C5D");
            let info = DeviceKey::save_slot(conn, sealer, dev, KeySlot::Current, 7, &key(0xA5))?;
            assert_eq!((info.slot, info.key_id), (KeySlot::Current, 7));

            let raw: Vec<u8> = device_keys::table
                .select(device_keys::sealed_key)
                .first(conn)?;
            assert!(
                !raw.windows(8).any(|w| w == [0xA5; 8]),
                "the key is not stored in clear"
            );

            let sealed = DeviceKey::find_slot(conn, dev, KeySlot::Current)?.unwrap();
            assert!(
                !format!("{sealed:?}").contains('['),
                "Debug shows no sealed bytes"
            );
            let clear = sealed.unseal(sealer)?;
            assert_eq!(clear.as_bytes(), [0xA5; 32]);
            assert_eq!(format!("{clear:?}"), "KeyMaterial(32 bytes)");
            assert!(DeviceKey::find_slot(conn, dev, KeySlot::Pending)?.is_none());
            assert!(matches!(
                DeviceKey::save_slot(
                    conn,
                    sealer,
                    dev,
                    KeySlot::Pending,
                    8,
                    &KeyMaterial::new(Vec::new())
                ),
                Err(DbError::Invalid(_))
            ));
            let other = Sealer::from_key([3u8; 32]);
            assert!(
                sealed.unseal(&other).is_err(),
                "another master key cannot open it"
            );
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_sealed_key_moved_to_another_row_does_not_open() {
        let (_dir, db) = test_db();
        let sealer = db.sealer();
        db.run_blocking(|conn| {
            let a = device(conn, "2A3B4C5D");
            let b = device(conn, "10000001");
            DeviceKey::save_slot(conn, sealer, a, KeySlot::Current, 1, &key(1))?;
            DeviceKey::save_slot(conn, sealer, b, KeySlot::Current, 1, &key(2))?;
            DeviceKey::save_slot(conn, sealer, a, KeySlot::Pending, 1, &key(3))?;
            let sealed_a: Vec<u8> = device_keys::table
                .filter(device_keys::device_id.eq(a))
                .filter(device_keys::slot.eq("current"))
                .select(device_keys::sealed_key)
                .first(conn)?;
            // Same slot and key id, another device.
            diesel::update(device_keys::table.filter(device_keys::device_id.eq(b)))
                .set(device_keys::sealed_key.eq(&sealed_a))
                .execute(conn)?;
            let moved = DeviceKey::find_slot(conn, b, KeySlot::Current)?.unwrap();
            assert!(matches!(moved.unseal(sealer), Err(DbError::Seal(_))));
            // Same device and key id, another slot.
            diesel::update(
                device_keys::table
                    .filter(device_keys::device_id.eq(a))
                    .filter(device_keys::slot.eq("pending")),
            )
            .set(device_keys::sealed_key.eq(&sealed_a))
            .execute(conn)?;
            let moved = DeviceKey::find_slot(conn, a, KeySlot::Pending)?.unwrap();
            assert!(moved.unseal(sealer).is_err());
            // The original still opens.
            let original = DeviceKey::find_slot(conn, a, KeySlot::Current)?.unwrap();
            assert_eq!(original.unseal(sealer)?.as_bytes(), [1; 32]);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn promote_pending_rotates_slots() {
        let (_dir, db) = test_db();
        let sealer = db.sealer();
        db.run_blocking(|conn| {
            let dev = device(conn, "2A3B4C5D");
            assert!(
                !DeviceKey::promote_pending(conn, sealer, dev)?,
                "nothing pending"
            );

            DeviceKey::save_slot(conn, sealer, dev, KeySlot::Current, 1, &key(1))?;
            DeviceKey::save_slot(conn, sealer, dev, KeySlot::Pending, 2, &key(2))?;
            assert!(DeviceKey::promote_pending(conn, sealer, dev)?);
            let slots: Vec<_> = DeviceKey::find_all_for_device(conn, dev)?
                .into_iter()
                .map(|i| (i.slot, i.key_id))
                .collect();
            assert_eq!(slots, [(KeySlot::Current, 2), (KeySlot::Previous, 1)]);
            let current = DeviceKey::find_slot(conn, dev, KeySlot::Current)?.unwrap();
            assert_eq!(current.unseal(sealer)?.as_bytes(), [2; 32]);
            let previous = DeviceKey::find_slot(conn, dev, KeySlot::Previous)?.unwrap();
            assert_eq!(previous.unseal(sealer)?.as_bytes(), [1; 32]);

            DeviceKey::save_slot(conn, sealer, dev, KeySlot::Pending, 3, &key(3))?;
            assert!(DeviceKey::promote_pending(conn, sealer, dev)?);
            let slots: Vec<_> = DeviceKey::find_all_for_device(conn, dev)?
                .into_iter()
                .map(|i| (i.slot, i.key_id))
                .collect();
            assert_eq!(
                slots,
                [(KeySlot::Current, 3), (KeySlot::Previous, 2)],
                "key 1 is dropped"
            );

            // A failure halfway (wrong master key) leaves every slot as it was.
            DeviceKey::save_slot(conn, sealer, dev, KeySlot::Pending, 4, &key(4))?;
            let wrong = Sealer::from_key([5u8; 32]);
            assert!(DeviceKey::promote_pending(conn, &wrong, dev).is_err());
            assert_eq!(DeviceKey::find_all_for_device(conn, dev)?.len(), 3);
            assert_eq!(
                DeviceKey::find_slot(conn, dev, KeySlot::Current)?
                    .unwrap()
                    .info
                    .key_id,
                3
            );

            assert!(DeviceKey::delete_slot(conn, dev, KeySlot::Pending)?);
            assert_eq!(DeviceKey::delete_for_device(conn, dev)?, 2);
            assert!(DeviceKey::find_all_for_device(conn, dev)?.is_empty());

            // Keys go with their device.
            DeviceKey::save_slot(conn, sealer, dev, KeySlot::Current, 9, &key(9))?;
            Device::delete_by_id(conn, dev)?;
            assert_eq!(device_keys::table.count().get_result::<i64>(conn)?, 0);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn the_slot_check_constraint_holds() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let dev = device(conn, "2A3B4C5D");
            let bad = diesel::insert_into(device_keys::table)
                .values((
                    device_keys::device_id.eq(dev),
                    device_keys::slot.eq("spare"),
                    device_keys::key_id.eq(1),
                    device_keys::sealed_key.eq(vec![1u8, 2, 3]),
                    device_keys::created_at.eq(now()),
                ))
                .execute(conn);
            assert!(bad.is_err());
            Ok(())
        })
        .unwrap();
    }
}
