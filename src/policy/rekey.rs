//! Transport key regeneration (seed: the Policy Service "handles encryption
//! key regeneration requests"). A device's key is replaced when the device
//! asks, when an administrator sends the "new key" IT admin command
//! ([`super::commands`]), or when it is older than `key_lifetime_days`.
//!
//! The exchange runs under the current key: the server sends `rekey` with
//! an ephemeral X25519 key, the device answers with its own and a key
//! confirmation, the server stores the new key as pending and promotes it
//! (the previous one still opens messages in flight), and tells the device
//! `rekey done` under the new key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bramble_proto::activation::{fresh_key_id, rekey, ActivationMessage, Ephemeral};
use bramble_proto::{ContentType, Pin};
use tracing::{info, warn};

use super::PolicySettings;
use crate::clock::Clock;
use crate::db::ids::{AdminCommandId, DeviceId};
use crate::db::models::admin_command::{AdminCommand, TargetState};
use crate::db::models::device::Device;
use crate::db::models::device_key::{DeviceKey, KeyMaterial, KeySlot};
use crate::db::{Database, DbError};
use crate::dispatcher::{DispatchError, Dispatcher, Outgoing};

/// Why a device's answer to a key change could not be taken; the device
/// keeps its current key and the change is started again later.
#[derive(Debug, thiserror::Error)]
enum KeyChangeError {
    #[error("the device answered for key {answered}, not {expected}")]
    WrongKey { answered: u32, expected: u32 },
    #[error("the device has no current key")]
    NoCurrentKey,
    #[error("the key exchange failed: {0}")]
    Exchange(String),
    #[error("device {0} was removed during the key change")]
    DeviceGone(Pin),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
}

impl From<diesel::result::Error> for KeyChangeError {
    fn from(e: diesel::result::Error) -> Self {
        KeyChangeError::Db(e.into())
    }
}

/// A key change not answered within this long is started again later.
const REKEY_TTL: Duration = Duration::from_secs(300);

/// A key change waiting for the device's reply.
struct Rekeying {
    ephemeral: Ephemeral,
    server_key: String,
    key_id: u32,
    started: Instant,
    /// The admin command that asked for it, if any.
    target: Option<(AdminCommandId, DeviceId)>,
}

/// The key changes under way, by device.
pub(super) struct KeyChanges {
    settings: Arc<PolicySettings>,
    db: Database,
    dispatcher: Dispatcher,
    clock: Clock,
    under_way: HashMap<Pin, Rekeying>,
}

impl KeyChanges {
    pub(super) fn new(
        settings: Arc<PolicySettings>,
        db: Database,
        dispatcher: Dispatcher,
        clock: Clock,
    ) -> KeyChanges {
        KeyChanges {
            settings,
            db,
            dispatcher,
            clock,
            under_way: HashMap::new(),
        }
    }

    fn is_under_way(&self, pin: Pin) -> bool {
        self.under_way
            .get(&pin)
            .is_some_and(|r| r.started.elapsed() < REKEY_TTL)
    }

    /// Starts a key change with the device: `rekey` under the current key.
    pub(super) async fn start(
        &mut self,
        pin: Pin,
        target: Option<(AdminCommandId, DeviceId)>,
    ) -> Result<(), String> {
        if self.is_under_way(pin) {
            return Err("a key change is already under way for this device".to_owned());
        }
        let ephemeral = Ephemeral::generate().map_err(|e| e.to_string())?;
        let server_key = ephemeral.public_hex().map_err(|e| e.to_string())?;
        let key_id = fresh_key_id().map_err(|e| e.to_string())?;
        let message = ActivationMessage::Rekey {
            server_key: server_key.clone(),
            key_id,
        };
        self.dispatcher
            .send(Outgoing {
                pin,
                content_type: ContentType::KeyChange,
                plaintext: message.to_bytes(),
                priority: true,
                ref_id: None,
            })
            .await
            .map_err(|e| e.to_string())?;
        info!(target: "bramble::policy", %pin, key_id, "transport key change started");
        self.under_way.insert(
            pin,
            Rekeying {
                ephemeral,
                server_key,
                key_id,
                started: Instant::now(),
                target,
            },
        );
        Ok(())
    }

    /// A key change message from a device (sealed with its current key).
    pub(super) async fn received(&mut self, pin: Pin, plaintext: &[u8]) {
        match ActivationMessage::from_bytes(plaintext) {
            Ok(ActivationMessage::RekeyRequest) => {
                info!(target: "bramble::policy", %pin, "the device asks for a new transport key");
                if let Err(e) = self.start(pin, None).await {
                    warn!(target: "bramble::policy", %pin, "cannot start the key change: {e}");
                }
            }
            Ok(ActivationMessage::RekeyReply {
                device_key,
                key_id,
                confirm,
            }) => {
                let Some(r) = self.under_way.remove(&pin) else {
                    warn!(target: "bramble::policy", %pin, "a key change reply for no key change under way; ignored");
                    return;
                };
                if let Err(e) = self.finish(pin, r, &device_key, key_id, &confirm).await {
                    warn!(target: "bramble::policy", %pin, "the key change failed: {e}");
                }
            }
            Ok(other) => {
                warn!(target: "bramble::policy", %pin, "key change message {other:?} is not for the server; ignored")
            }
            Err(e) => warn!(target: "bramble::policy", %pin, "unreadable key change message: {e}"),
        }
    }

    async fn finish(
        &mut self,
        pin: Pin,
        r: Rekeying,
        device_key: &str,
        key_id: u32,
        confirm: &str,
    ) -> Result<(), KeyChangeError> {
        if key_id != r.key_id {
            return Err(KeyChangeError::WrongKey {
                answered: key_id,
                expected: r.key_id,
            });
        }
        let current = self
            .dispatcher
            .keys()
            .ring(pin)
            .await?
            .and_then(|ring| ring.current().cloned())
            .ok_or(KeyChangeError::NoCurrentKey)?;
        let keys = rekey(
            &current,
            &r.ephemeral,
            device_key,
            &r.server_key,
            device_key,
            key_id,
        )
        .map_err(|e| KeyChangeError::Exchange(e.to_string()))?;
        keys.check_device(confirm)
            .map_err(|e| KeyChangeError::Exchange(e.to_string()))?;
        let new_key = keys.transport.clone();
        let now = self.clock.now_db();
        let target = r.target;
        self.db
            .write_sealed_as(move |conn, sealer| {
                crate::db::write_transaction(conn, |conn| {
                    let device =
                        Device::find_by_pin(conn, &pin)?.ok_or(KeyChangeError::DeviceGone(pin))?;
                    DeviceKey::save_slot(
                        conn,
                        sealer,
                        device.id,
                        KeySlot::Pending,
                        i64::from(new_key.id),
                        &KeyMaterial::new(new_key.secret().to_vec()),
                    )?;
                    DeviceKey::promote_pending(conn, sealer, device.id)?;
                    if let Some((command, device)) = target {
                        AdminCommand::set_state(
                            conn,
                            command,
                            device,
                            TargetState::Acknowledged,
                            None,
                            "",
                            now,
                        )?;
                    }
                    Ok::<(), KeyChangeError>(())
                })
            })
            .await?;
        self.dispatcher.keys_changed(pin).await;
        // Sealed with the new key, which the device holds as pending.
        self.dispatcher
            .send(Outgoing {
                pin,
                content_type: ContentType::KeyChange,
                plaintext: ActivationMessage::RekeyDone { key_id }.to_bytes(),
                priority: true,
                ref_id: None,
            })
            .await?;
        info!(target: "bramble::policy", %pin, key_id, "new transport key in use; the previous one still opens messages in flight");
        Ok(())
    }

    /// Starts a key change for devices whose current key is older than
    /// `key_lifetime_days`.
    pub(super) async fn sweep_key_ages(&mut self) -> Result<(), DbError> {
        if self.settings.key_lifetime_days == 0 {
            return Ok(());
        }
        let cutoff =
            self.clock.now_db() - time::Duration::days(i64::from(self.settings.key_lifetime_days));
        let due = self
            .db
            .run(move |conn| DeviceKey::current_older_than(conn, cutoff, 100))
            .await?;
        for pin in due {
            if self.is_under_way(pin) {
                continue;
            }
            info!(target: "bramble::policy", %pin, "the transport key is older than {} days; replacing it", self.settings.key_lifetime_days);
            if let Err(e) = self.start(pin, None).await {
                warn!(target: "bramble::policy", %pin, "cannot start the key change: {e}");
            }
        }
        Ok(())
    }
}
