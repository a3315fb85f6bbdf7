//! Device transport keys as the Dispatcher and the Router use them: read
//! from the Configuration Database (where they are sealed at rest), kept in
//! memory per PIN, and dropped from memory whenever they change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bramble_proto::control::{hex, relay_key, DeviceRelayKeys, RelayKeyEntry};
use bramble_proto::envelope::TransportKey;
use bramble_proto::Pin;

use crate::db::models::device::Device;
use crate::db::models::device_key::{DeviceKey, KeySlot};
use crate::db::{Conn, Database, DbError, DbResult, Sealer};

/// A device's keys by role; messages name the key they use by id.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    pub current: Option<TransportKey>,
    pub pending: Option<TransportKey>,
    pub previous: Option<TransportKey>,
}

impl KeyRing {
    pub fn current(&self) -> Option<&TransportKey> {
        self.current.as_ref()
    }

    /// The key with this id, whichever role it has now.
    pub fn by_id(&self, id: u32) -> Option<&TransportKey> {
        [&self.current, &self.pending, &self.previous]
            .into_iter()
            .flatten()
            .find(|k| k.id == id)
    }
}

/// Cached key rings, one per PIN; cheap to clone.
#[derive(Clone)]
pub struct KeyCache {
    db: Database,
    rings: Arc<Mutex<HashMap<Pin, Option<Arc<KeyRing>>>>>,
}

impl KeyCache {
    pub fn new(db: Database) -> KeyCache {
        KeyCache {
            db,
            rings: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The device's keys; `None` for a PIN with no device or no keys.
    pub async fn ring(&self, pin: Pin) -> DbResult<Option<Arc<KeyRing>>> {
        if let Some(cached) = self.rings.lock().ok().and_then(|r| r.get(&pin).cloned()) {
            return Ok(cached);
        }
        let ring = self
            .db
            .run_sealed(move |conn, sealer| load(conn, sealer, pin))
            .await?
            .map(Arc::new);
        if let Ok(mut rings) = self.rings.lock() {
            rings.insert(pin, ring.clone());
        }
        Ok(ring)
    }

    /// One key of a device by id.
    pub async fn key(&self, pin: Pin, key_id: u32) -> Option<TransportKey> {
        self.ring(pin)
            .await
            .ok()
            .flatten()
            .and_then(|r| r.by_id(key_id).cloned())
    }

    /// What the relay needs to check that `pin` holds its keys: the relay
    /// key of each (none: the device has no keys, and the relay forgets it).
    pub async fn relay_keys(&self, pin: Pin) -> DbResult<DeviceRelayKeys> {
        let ring = self.ring(pin).await?;
        let keys = ring
            .map(|ring| {
                [&ring.current, &ring.pending, &ring.previous]
                    .into_iter()
                    .flatten()
                    .filter_map(relay_entry)
                    .collect()
            })
            .unwrap_or_default();
        Ok(DeviceRelayKeys { pin, keys })
    }

    /// The relay keys of every device that has keys, read in one pass.
    pub async fn all_relay_keys(&self) -> DbResult<Vec<DeviceRelayKeys>> {
        self.db
            .run_sealed(|conn, sealer| {
                let mut out: Vec<DeviceRelayKeys> = Vec::new();
                for (pin_text, sealed) in DeviceKey::all_sealed_with_pins(conn)? {
                    let Ok(pin) = pin_text.parse::<Pin>() else {
                        continue;
                    };
                    let id = u32::try_from(sealed.info.key_id).map_err(|_| {
                        DbError::Damaged(format!("device {pin} has a key id out of range"))
                    })?;
                    let material = sealed.unseal(sealer)?;
                    let Some(key) = TransportKey::from_slice(id, material.as_bytes()) else {
                        continue;
                    };
                    let Some(entry) = relay_entry(&key) else {
                        continue;
                    };
                    match out.last_mut() {
                        Some(last) if last.pin == pin => last.keys.push(entry),
                        _ => out.push(DeviceRelayKeys {
                            pin,
                            keys: vec![entry],
                        }),
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Forget what is cached for `pin` (its keys changed).
    pub fn invalidate(&self, pin: Pin) {
        if let Ok(mut rings) = self.rings.lock() {
            rings.remove(&pin);
        }
    }
}

fn relay_entry(key: &TransportKey) -> Option<RelayKeyEntry> {
    relay_key(key.secret()).map(|k| RelayKeyEntry {
        key_id: key.id,
        key: hex(&k),
    })
}

fn load(conn: &mut Conn, sealer: &Sealer, pin: Pin) -> DbResult<Option<KeyRing>> {
    let Some(device) = Device::find_by_pin(conn, &pin)? else {
        return Ok(None);
    };
    let mut ring = KeyRing::default();
    for slot in [KeySlot::Current, KeySlot::Pending, KeySlot::Previous] {
        let Some(sealed) = DeviceKey::find_slot(conn, device.id, slot)? else {
            continue;
        };
        let id = u32::try_from(sealed.info.key_id)
            .map_err(|_| DbError::Damaged(format!("device {pin} has a key id out of range")))?;
        let material = sealed.unseal(sealer)?;
        let key = TransportKey::from_slice(id, material.as_bytes()).ok_or_else(|| {
            DbError::Damaged(format!(
                "device {pin} has a transport key of the wrong length"
            ))
        })?;
        match slot {
            KeySlot::Current => ring.current = Some(key),
            KeySlot::Pending => ring.pending = Some(key),
            KeySlot::Previous => ring.previous = Some(key),
        }
    }
    if ring.current.is_none() && ring.pending.is_none() && ring.previous.is_none() {
        return Ok(None);
    }
    Ok(Some(ring))
}

impl crate::router::lan::DeviceKeys for KeyCache {
    fn key(&self, pin: Pin, key_id: u32) -> futures::future::BoxFuture<'_, Option<TransportKey>> {
        Box::pin(KeyCache::key(self, pin, key_id))
    }
}
