//! IT administration commands (seed: the Policy Service sends IT admin
//! commands over the wireless network): lock with a new password, wipe
//! everything (optionally after a delay), wipe the work data, and a new
//! transport key ([`super::rekey`]).
//!
//! An administrator queues a command for one or more devices
//! ([`AdminCommand`]); the Policy Service sends each queued target signed
//! with the domain key (a delayed wipe when its time has come) and marks it
//! sent. The device's acknowledgement marks it acknowledged (a wiped device
//! no longer belongs to its user and must be activated again); a refusal
//! (not signed by the device's domain) marks it failed in the device's
//! words; a command not acknowledged within `command_expiry_hours` is
//! expired.

use std::sync::Arc;
use std::time::Instant;

use bramble_proto::policy::{Command, CommandDocument, KIND_ADMIN_COMMAND};
use bramble_proto::{ContentType, Pin};
use tracing::{info, warn};

use super::confirmations::{Confirmations, Sent, Step};
use super::delivery::{binding, signed_by_domain};
use super::rekey::KeyChanges;
use super::PolicySettings;
use crate::clock::Clock;
use crate::db::ids::{AdminCommandId, DeviceId, UserId};
use crate::db::models::activation_password::record_status;
use crate::db::models::admin_command::{AdminCommand, CommandKind, CommandTarget, TargetState};
use crate::db::models::device::Device;
use crate::db::models::device_key::DeviceKey;
use crate::db::models::user::ActivationStatus;
use crate::db::{Database, DbError};
use crate::dispatcher::{Dispatcher, Outgoing};

/// Sends IT admin commands and records what became of them.
pub(super) struct Commands {
    settings: Arc<PolicySettings>,
    db: Database,
    dispatcher: Dispatcher,
    confirmations: Confirmations,
    clock: Clock,
}

impl Commands {
    pub(super) fn new(
        settings: Arc<PolicySettings>,
        db: Database,
        dispatcher: Dispatcher,
        confirmations: Confirmations,
        clock: Clock,
    ) -> Commands {
        Commands {
            settings,
            db,
            dispatcher,
            confirmations,
            clock,
        }
    }

    /// Sends queued IT admin commands (a delayed wipe when its time has
    /// come) and expires those not acknowledged in time. A new key is
    /// asked for through `key_changes`.
    pub(super) async fn sweep(&mut self, key_changes: &mut KeyChanges) -> Result<(), DbError> {
        let now = self.clock.now_db();
        let expiry = time::Duration::hours(i64::from(self.settings.command_expiry_hours.max(1)));
        let queued = self
            .db
            .write(move |conn| {
                let sent = AdminCommand::targets_in_state(conn, TargetState::Sent, 500)?;
                for t in sent.iter().filter(|t| t.updated_at + expiry <= now) {
                    AdminCommand::set_state(
                        conn,
                        t.command_id,
                        t.device_id,
                        TargetState::Expired,
                        None,
                        "the device did not acknowledge the command in time",
                        now,
                    )?;
                }
                AdminCommand::targets_in_state(conn, TargetState::Queued, 200)
            })
            .await?;
        for target in queued {
            let delay = target.parameters["delay_secs"].as_u64().unwrap_or(0);
            if target.kind == CommandKind::WipeAll
                && target.updated_at + time::Duration::seconds(delay as i64) > now
            {
                continue;
            }
            self.send(target, key_changes).await;
        }
        Ok(())
    }

    async fn send(&mut self, target: CommandTarget, key_changes: &mut KeyChanges) {
        let (command, device) = (target.command_id, target.device_id);
        let Ok(pin) = crate::db::models::device::parse_pin(&target.pin) else {
            return;
        };
        let user = self
            .db
            .run(move |conn| Device::find_by_id(conn, device))
            .await
            .ok()
            .flatten()
            .and_then(|d| d.user_id)
            .unwrap_or(UserId(0));
        let outcome = if target.kind == CommandKind::NewKey {
            key_changes
                .start(pin, Some((command, device)))
                .await
                .map(|()| None)
        } else {
            let password = if target.kind == CommandKind::Lock {
                self.db
                    .run_sealed(move |conn, sealer| {
                        AdminCommand::lock_password(conn, sealer, command)
                    })
                    .await
            } else {
                Ok(None)
            };
            let body = match (target.kind, password) {
                (CommandKind::Lock, Ok(Some(password))) => Ok(Command::Lock { password }),
                (CommandKind::Lock, Ok(None)) => {
                    Err("the lock password is no longer stored; queue the command again".to_owned())
                }
                (CommandKind::Lock, Err(e)) => {
                    Err(format!("the lock password cannot be read: {e}"))
                }
                (CommandKind::WipeAll, _) => Ok(Command::WipeAll {
                    delay_secs: target.parameters["delay_secs"].as_u64().unwrap_or(0),
                }),
                _ => Ok(Command::WipeWork),
            };
            let signed = match body {
                Ok(body) => {
                    let document = CommandDocument {
                        id: command.0,
                        command: body,
                    };
                    let binding = binding(
                        &self.clock,
                        self.settings.signed_lifetime_secs,
                        KIND_ADMIN_COMMAND,
                        pin,
                        u64::try_from(command.0).unwrap_or(0),
                    );
                    self.db
                        .write_sealed(move |conn, sealer| {
                            let text = serde_json::to_string(&document).map_err(|e| {
                                DbError::Encoding {
                                    what: "encode the IT administration command",
                                    message: e.to_string(),
                                }
                            })?;
                            signed_by_domain(conn, sealer, binding, text)
                        })
                        .await
                        .map_err(|e| e.to_string())
                }
                Err(why) => Err(why),
            };
            match signed {
                Ok(signed) => self
                    .dispatcher
                    .send(Outgoing {
                        pin,
                        content_type: ContentType::AdminCommand,
                        plaintext: signed.to_bytes(),
                        priority: true,
                        ref_id: None,
                    })
                    .await
                    .map(Some)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            }
        };
        let now = self.clock.now_db();
        let (state, ref_id, detail) = match &outcome {
            Ok(ref_id) => (
                TargetState::Sent,
                ref_id.map(|r| r.to_string()),
                String::new(),
            ),
            Err(e) => (TargetState::Failed, None, e.clone()),
        };
        if let Ok(Some(ref_id)) = outcome {
            self.confirmations.expect(
                ref_id,
                Sent {
                    user,
                    pin,
                    step: Step::Command(command, device, target.kind),
                    at: Instant::now(),
                },
            );
        }
        info!(target: "bramble::policy", %pin, command = %command, kind = target.kind.as_str(), state = state.as_str(), "IT admin command {}", if detail.is_empty() { "sent" } else { &detail });
        let _ = self
            .db
            .write(move |conn| {
                AdminCommand::set_state(
                    conn,
                    command,
                    device,
                    state,
                    ref_id.as_deref(),
                    &detail,
                    now,
                )
            })
            .await;
    }

    /// The device acknowledged an IT admin command.
    pub(super) async fn acknowledged(
        &mut self,
        command: AdminCommandId,
        device: DeviceId,
        kind: CommandKind,
        pin: Pin,
    ) {
        let now = self.clock.now_db();
        let result = self
            .db
            .write(move |conn| {
                crate::db::write_transaction(conn, |conn| {
                    AdminCommand::set_state(
                        conn,
                        command,
                        device,
                        TargetState::Acknowledged,
                        None,
                        "",
                        now,
                    )?;
                    if kind == CommandKind::WipeAll {
                        // The device is wiped: it no longer belongs to its
                        // user and must be activated again.
                        if let Some(mut d) = Device::find_by_id(conn, device)? {
                            let user = d.user_id.take();
                            d.save(conn)?;
                            DeviceKey::delete_for_device(conn, device)?;
                            if let Some(user) = user {
                                record_status(conn, user, ActivationStatus::NotActivated, now)?;
                            }
                        }
                    }
                    Ok(())
                })
            })
            .await;
        if kind == CommandKind::WipeAll {
            self.dispatcher.keys_changed(pin).await;
        }
        match result {
            Ok(()) => {
                info!(target: "bramble::policy", %pin, %command, kind = kind.as_str(), "IT admin command acknowledged by the device")
            }
            Err(e) => {
                warn!(target: "bramble::policy", %pin, %command, "cannot record the acknowledgement: {e}")
            }
        }
    }

    /// The device refused an IT admin command (it was not signed by its
    /// domain): the command failed there, in the device's words.
    pub(super) async fn refused(
        &mut self,
        command: AdminCommandId,
        device: DeviceId,
        pin: Pin,
        message: String,
    ) {
        warn!(target: "bramble::policy", %pin, %command, "the device refused the IT admin command: {message}");
        let now = self.clock.now_db();
        let recorded = self
            .db
            .write(move |conn| {
                AdminCommand::set_state(
                    conn,
                    command,
                    device,
                    TargetState::Failed,
                    None,
                    &message,
                    now,
                )
            })
            .await;
        if let Err(e) = recorded {
            warn!(target: "bramble::policy", %pin, %command, "cannot record the refusal: {e}");
        }
    }
}
