//! The Policy Service's loop: it owns the service's jobs and gives each
//! what concerns it —
//! - a device's transport key established ([`DeliveryEvent::KeyEstablished`])
//!   or an administrator's resend: the activation's remaining steps
//!   (`activation_steps`);
//! - a policy or an assignment changed: IT policy delivery (`delivery`);
//! - confirmations and refusals: the step or IT admin command they answer
//!   (`confirmations`, `commands`);
//! - key change messages: transport key regeneration (`rekey`);
//! - every `SWEEP_EVERY`: unfinished activations, queued IT admin
//!   commands and old transport keys.
//!
//! Policies and service books for different devices go out concurrently
//! (at most `CONCURRENT_SENDS` at a time), so a burst of activations is
//! not served one device after another; IT admin commands and key changes
//! are handled in order by the loop itself.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bramble_proto::{ContentType, Pin};
use tokio::sync::{broadcast, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::activation_steps::{ActivationSteps, Unfinished};
use super::commands::Commands;
use super::confirmations::{Confirmations, Sent, Step};
use super::delivery::PolicyDelivery;
use super::rekey::KeyChanges;
use super::PolicySettings;
use crate::clock::Clock;
use crate::controller::component::{ComponentContext, ComponentError};
use crate::db::ids::UserId;
use crate::dispatcher::{DeliveryEvent, Dispatcher, Resend};

pub use super::service_books::{service_books, service_enabled, SERVICES};

/// How often queued commands, key ages and unfinished activations are
/// looked at.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// IT policies and service books at most this many devices at a time.
const CONCURRENT_SENDS: usize = 32;

/// Sends of policies and service books in flight, and the recording of
/// their confirmations (aborted when the service stops).
struct Sends {
    tasks: JoinSet<()>,
    permits: Arc<Semaphore>,
}

impl Sends {
    /// Runs `work` as a task of its own, at most [`CONCURRENT_SENDS`] at a
    /// time.
    fn spawn(&mut self, work: impl Future<Output = ()> + Send + 'static) {
        let permits = self.permits.clone();
        self.tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            work.await;
        });
    }
}

/// The service's jobs, as the loop hands them work.
struct Jobs {
    confirmations: Confirmations,
    delivery: PolicyDelivery,
    steps: ActivationSteps,
    commands: Commands,
    key_changes: KeyChanges,
    sends: Sends,
    clock: Clock,
}

impl Jobs {
    fn send_policy(&mut self, user: UserId, pin: Pin, books_after: bool) {
        let delivery = self.delivery.clone();
        self.sends
            .spawn(async move { delivery.send(user, pin, books_after).await });
    }

    fn send_books(&mut self, user: UserId, pin: Pin) {
        let steps = self.steps.clone();
        self.sends
            .spawn(async move { steps.send_books(user, pin).await });
    }

    /// Sends again what was not confirmed in time, and picks up activations
    /// left half-way (e.g. by a restart).
    async fn resume_activations(&mut self) -> Result<(), crate::db::DbError> {
        for unfinished in self.steps.find_unfinished(self.clock).await? {
            match unfinished {
                Unfinished::Policy(user, pin) => self.send_policy(user, pin, true),
                Unfinished::Books(user, pin) => self.send_books(user, pin),
            }
        }
        Ok(())
    }

    /// A policy or an assignment changed: every activated device whose
    /// resolved policy is not the one it was last sent gets it.
    async fn push_policies(&mut self) -> Result<(), crate::db::DbError> {
        let mut pushed = 0;
        for (user, pin) in self.delivery.find_outdated().await? {
            self.send_policy(user, pin, true);
            pushed += 1;
        }
        info!(target: "bramble::policy", pushed, "IT policy change pushed to the devices it affects");
        Ok(())
    }
}

/// Runs the Policy Service until `ctx.shutdown`.
pub(crate) async fn run(
    settings: PolicySettings,
    server_name: String,
    ctx: ComponentContext,
    dispatcher: Dispatcher,
) -> Result<(), ComponentError> {
    let settings = Arc::new(settings);
    let db = ctx.db.clone();
    let clock = Clock::new();
    let confirmations = Confirmations::default();
    let mut jobs = Jobs {
        delivery: PolicyDelivery::new(
            db.clone(),
            dispatcher.clone(),
            confirmations.clone(),
            clock,
            settings.signed_lifetime_secs,
        ),
        steps: ActivationSteps::new(
            settings.clone(),
            server_name.into(),
            db.clone(),
            dispatcher.clone(),
            confirmations.clone(),
        ),
        commands: Commands::new(
            settings.clone(),
            db.clone(),
            dispatcher.clone(),
            confirmations.clone(),
            clock,
        ),
        key_changes: KeyChanges::new(settings, db, dispatcher.clone(), clock),
        sends: Sends {
            tasks: JoinSet::new(),
            permits: Arc::new(Semaphore::new(CONCURRENT_SENDS)),
        },
        confirmations,
        clock,
    };
    let mut events = dispatcher.subscribe();
    let mut key_change_messages = dispatcher.register(ContentType::KeyChange, 256);
    let mut beat = tokio::time::interval(ctx.heartbeat_interval);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            Some(_) = jobs.sends.tasks.join_next(), if !jobs.sends.tasks.is_empty() => {}
            _ = beat.tick() => {
                ctx.db.ping().await.map_err(ComponentError::DatabaseUnreachable)?;
                ctx.heartbeat.beat();
            }
            _ = sweep.tick() => {
                if let Err(e) = jobs.resume_activations().await {
                    warn!(target: "bramble::policy", "cannot look for unfinished activations: {e}");
                }
                if let Err(e) = jobs.commands.sweep(&mut jobs.key_changes).await {
                    warn!(target: "bramble::policy", "cannot look for IT admin commands: {e}");
                }
                if let Err(e) = jobs.key_changes.sweep_key_ages().await {
                    warn!(target: "bramble::policy", "cannot look for old transport keys: {e}");
                }
            }
            message = key_change_messages.recv() => {
                let Some(message) = message else { return Ok(()) };
                jobs.key_changes.received(message.pin, &message.plaintext).await;
            }
            event = events.recv() => match event {
                Ok(DeliveryEvent::KeyEstablished { pin, user }) => jobs.send_policy(user, pin, true),
                Ok(DeliveryEvent::PolicyChanged) => {
                    if let Err(e) = jobs.push_policies().await {
                        warn!(target: "bramble::policy", "cannot push the changed IT policies: {e}");
                    }
                }
                Ok(DeliveryEvent::ResendRequested { pin, user, what }) => match what {
                    // Only the policy: the service books follow an
                    // activation's policy, not an administrator's resend.
                    Resend::Policy => jobs.send_policy(user, pin, false),
                    Resend::ServiceBooks => jobs.send_books(user, pin),
                },
                Ok(DeliveryEvent::Confirmed { ref_id, .. }) => {
                    match jobs.confirmations.take(ref_id) {
                        Some(Sent { pin, step: Step::Command(command, device, kind), .. }) => {
                            jobs.commands.acknowledged(command, device, kind, pin).await;
                        }
                        Some(sent) => {
                            let steps = jobs.steps.clone();
                            jobs.sends.spawn(async move { steps.confirmed(sent).await });
                        }
                        None => {}
                    }
                }
                Ok(DeliveryEvent::Refused { ref_id, code, message, .. }) => {
                    match jobs.confirmations.take(ref_id) {
                        // The device applied this command before (its
                        // confirmation was lost): it is done, not failed.
                        Some(Sent { pin, step: Step::Command(command, device, kind), .. })
                            if code == bramble_proto::policy::codes::SIGNED_REPLAYED =>
                        {
                            jobs.commands.acknowledged(command, device, kind, pin).await;
                        }
                        Some(Sent { pin, step: Step::Command(command, device, _), .. }) => {
                            jobs.commands.refused(command, device, pin, message).await;
                        }
                        Some(sent) => {
                            // Not sent again: the device would refuse it
                            // again; the next change or resend tries anew.
                            warn!(target: "bramble::policy", pin = %sent.pin, user = %sent.user, "the device refused the {}: {message}", sent.step.name());
                        }
                        None => {}
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(target: "bramble::policy", missed = n, "delivery events were missed; unfinished activations are picked up by the next sweep");
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }
}
