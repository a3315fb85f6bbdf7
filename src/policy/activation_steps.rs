//! The end of a wireless activation (seed: activation steps 9–12): once
//! the device's transport key is established, the signed IT policy
//! ([`super::delivery`]); on the device's confirmation "Policy applied" and
//! the service books ([`super::service_books`]); on their confirmation
//! "Services received". Each step is recorded with its time.
//!
//! Nothing is lost across a restart: [`ActivationSteps::find_unfinished`]
//! finds users whose activation stopped at "Encryption verified" or
//! "Policy applied" longer than `confirm_timeout_secs` ago with nothing on
//! its way, and the step is sent again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bramble_proto::{ContentType, Pin};
use tracing::{info, warn};

use super::confirmations::{send_awaited, Confirmations, Sent, Step};
use super::service_books::service_books;
use super::PolicySettings;
use crate::clock::Clock;
use crate::db::ids::UserId;
use crate::db::models::activation_password::record_status;
use crate::db::models::device::Device;
use crate::db::models::device_key::DeviceKey;
use crate::db::models::user::{ActivationStatus, User};
use crate::db::models::user_service::UserServices;
use crate::db::{Database, DbError};
use crate::dispatcher::Dispatcher;

/// An activation waiting at a step, and what it waits for.
pub(super) enum Unfinished {
    /// "Encryption verified": the IT policy.
    Policy(UserId, Pin),
    /// "Policy applied": the service books.
    Books(UserId, Pin),
}

/// Sends each step of an activation's end and records its confirmation.
/// Cloned into concurrent tasks, so a burst of activations does not wait
/// on one device at a time: their queue writes meet in the Dispatcher's
/// shared commits.
#[derive(Clone)]
pub(super) struct ActivationSteps {
    settings: Arc<PolicySettings>,
    server_name: Arc<str>,
    db: Database,
    dispatcher: Dispatcher,
    confirmations: Confirmations,
}

impl ActivationSteps {
    pub(super) fn new(
        settings: Arc<PolicySettings>,
        server_name: Arc<str>,
        db: Database,
        dispatcher: Dispatcher,
        confirmations: Confirmations,
    ) -> ActivationSteps {
        ActivationSteps {
            settings,
            server_name,
            db,
            dispatcher,
            confirmations,
        }
    }

    /// Sends the service books of the services enabled for the user.
    pub(super) async fn send_books(&self, user: UserId, pin: Pin) {
        let found =
            self.db
                .run(move |conn| {
                    Ok(User::find_by_id(conn, user)?
                        .map(|u| (u.email, UserServices::find(conn, user))))
                })
                .await;
        let (email, exceptions) = match found {
            Ok(Some((email, Ok(exceptions)))) => (email, exceptions),
            Ok(None) => return,
            Ok(Some((_, Err(e)))) | Err(e) => {
                warn!(target: "bramble::policy", %user, "cannot read the user for service books: {e}");
                return;
            }
        };
        let books = service_books(&self.settings, &self.server_name, &email, &exceptions);
        send_awaited(
            &self.dispatcher,
            &self.confirmations,
            user,
            pin,
            Step::Books,
            ContentType::ServiceBook,
            books.to_bytes(),
        )
        .await
    }

    /// The device confirmed a policy or the service books: records the
    /// policy it applied and the activation's step forward, then sends the
    /// service books if they follow.
    pub(super) async fn confirmed(&self, sent: Sent) {
        let (user, pin) = (sent.user, sent.pin);
        let (status, applied) = match sent.step {
            Step::Policy { policy, .. } => (ActivationStatus::PolicyApplied, Some(policy)),
            Step::Books => (ActivationStatus::ServicesReceived, None),
            // IT admin commands' acknowledgements are not activation steps.
            Step::Command(..) => return,
        };
        let recorded = self
            .db
            .write(move |conn| {
                crate::db::write_transaction(conn, |conn| {
                    let current = User::find_by_id(conn, user)?.map(|u| u.activation_status);
                    // Whichever policy it was, a named one or the catalog's
                    // defaults: the device applied the one it was sent.
                    if let (Some(policy), Some(device)) =
                        (applied, Device::find_by_pin(conn, &pin)?)
                    {
                        Device::record_policy_applied(conn, device.id, policy, crate::db::now())?;
                    }
                    // Only a step forward in an activation is recorded; a
                    // policy update after activation changes no status.
                    if current.and_then(ActivationStatus::next) == Some(status) {
                        record_status(conn, user, status, crate::db::now())?;
                    }
                    Ok(())
                })
            })
            .await;
        if let Err(e) = recorded {
            warn!(target: "bramble::policy", %pin, %user, "cannot record the {} step: {e}", sent.step.name());
        }
        info!(target: "bramble::policy", %pin, %user, "{} confirmed by the device", sent.step.name());
        if matches!(
            sent.step,
            Step::Policy {
                books_after: true,
                ..
            }
        ) {
            self.send_books(user, pin).await;
        }
    }

    /// Forgets what was not confirmed within `confirm_timeout_secs` and
    /// returns the activations left half-way (e.g. by a restart) with
    /// nothing on its way, each with the step to send again.
    pub(super) async fn find_unfinished(&self, clock: Clock) -> Result<Vec<Unfinished>, DbError> {
        let timeout = Duration::from_secs(self.settings.confirm_timeout_secs.max(1));
        let waiting: HashSet<UserId> = self.confirmations.forget_late(timeout);
        // Only activations that have waited at that step longer than the
        // timeout: newer ones are still on their way through the events.
        let stuck_since = clock.now_db()
            - time::Duration::seconds(i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX));
        let unfinished = self
            .db
            .run(move |conn| {
                let stalled = User::find_by_activation_status_before(
                    conn,
                    &[
                        ActivationStatus::EncryptionVerified,
                        ActivationStatus::PolicyApplied,
                    ],
                    stuck_since,
                    500,
                )?;
                let mut out = Vec::new();
                for (user, status) in stalled.into_iter().map(|u| (u.id, u.activation_status)) {
                    let keyed = Device::find_by_user(conn, user)?.into_iter().find(|d| {
                        DeviceKey::find_all_for_device(conn, d.id).is_ok_and(|k| !k.is_empty())
                    });
                    if let Some(device) = keyed {
                        out.push((user, device.pin, status));
                    }
                }
                Ok(out)
            })
            .await?;
        Ok(unfinished
            .into_iter()
            .filter(|(user, _, _)| !waiting.contains(user))
            .map(|(user, pin, status)| {
                if status == ActivationStatus::EncryptionVerified {
                    Unfinished::Policy(user, pin)
                } else {
                    Unfinished::Books(user, pin)
                }
            })
            .collect())
    }
}
