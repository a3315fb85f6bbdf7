//! The Policy Service at work (seed: activation steps 9–12): after a
//! device's transport key is established it sends the user's resolved IT
//! policy, signed with the domain key, through the Dispatcher; waits for the
//! device's confirmation that it applied it; then sends the service books
//! of the services enabled (`[policy] services`); and records each step of
//! the user's activation.
//!
//! Steps are followed by the RefIDs of what was sent and the Dispatcher's
//! delivery events (the device confirms only a policy whose signature
//! checks). Nothing is lost across a restart: each heartbeat round looks for
//! users whose activation stopped at "Encryption verified" or "Policy
//! applied" with nothing on its way (or nothing confirmed within
//! `confirm_timeout_secs`) and sends the step again.
//!
//! Policies and service books for different devices go out concurrently
//! (at most [`CONCURRENT_SENDS`] at a time), so a burst of activations is
//! not served one device after another; IT admin commands and key changes
//! are handled in order by the service's own loop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bramble_proto::policy::{ServiceBook, ServiceBooks, Signed};
use bramble_proto::{ContentType, Pin, RefId};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::controller::component::{ComponentContext, ComponentError};
use bramble_proto::activation::{fresh_key_id, rekey, ActivationMessage, Ephemeral};
use bramble_proto::policy::{Command, CommandDocument};

use crate::clock::Clock;
use crate::db::ids::{AdminCommandId, DeviceId, ItPolicyId, UserId};
use crate::db::models::activation_password::record_status;
use crate::db::models::admin_command::{AdminCommand, CommandKind, CommandTarget, TargetState};
use crate::db::models::device::Device;
use crate::db::models::device_key::DeviceKey;
use crate::db::models::device_key::{KeyMaterial, KeySlot};
use crate::db::models::user::{ActivationStatus, User};
use crate::db::models::user_service::UserServices;
use crate::db::schema::users;
use crate::db::{Database, DbError};
use crate::dispatcher::{DeliveryEvent, Dispatcher, Outgoing, Resend};
use crate::policy::resolve::resolve;
use crate::policy::signing::DomainKey;

/// Every service book the Policy Service knows (seed: "What is a service
/// book?").
pub const SERVICES: [&str; 7] = [
    "CMIME",
    "CICAL",
    "SYNC",
    "IPPP",
    "BrowserConfig",
    "ALP",
    "BBIM",
];

/// `[policy]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicySettings {
    /// The services whose books devices receive (any of [`SERVICES`]).
    pub services: Vec<String>,
    /// An IT policy or the service books not confirmed within this long
    /// are sent again.
    pub confirm_timeout_secs: u64,
    /// The BlackBerry Browser's home page (BrowserConfig book).
    pub browser_homepage: String,
    /// A device's transport key is replaced when it is this old (days; 0:
    /// never by age).
    pub key_lifetime_days: u32,
    /// An IT admin command not acknowledged within this long is expired.
    pub command_expiry_hours: u32,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            services: SERVICES.iter().map(|s| (*s).to_owned()).collect(),
            confirm_timeout_secs: 300,
            browser_homepage: "about:blank".to_owned(),
            key_lifetime_days: 30,
            command_expiry_hours: 24,
        }
    }
}

impl PolicySettings {
    /// Unknown service names, for a clear start-up error.
    pub fn unknown_services(&self) -> Vec<String> {
        self.services
            .iter()
            .filter(|s| !SERVICES.contains(&s.as_str()))
            .cloned()
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The IT policy: the named policy it came from (`None`: no policy is
    /// assigned and there is no default one, so the catalog's defaults),
    /// and whether the service books follow once it is confirmed.
    Policy {
        policy: Option<ItPolicyId>,
        books_after: bool,
    },
    Books,
    Command(AdminCommandId, DeviceId, CommandKind),
}

/// A key change waiting for the device's reply.
struct Rekeying {
    ephemeral: Ephemeral,
    server_key: String,
    key_id: u32,
    started: Instant,
    /// The admin command that asked for it, if any.
    target: Option<(AdminCommandId, DeviceId)>,
}

/// How often queued commands, key ages and unfinished activations are
/// looked at.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// A key change not answered within this long is started again later.
const REKEY_TTL: Duration = Duration::from_secs(300);

struct Sent {
    user: UserId,
    pin: Pin,
    step: Step,
    at: Instant,
}

/// IT policies and service books at most this many devices at a time.
const CONCURRENT_SENDS: usize = 32;

/// The service's running state. IT admin commands and key changes are
/// handled one at a time; IT policies and service books go out through the
/// [`Courier`], many devices at once.
pub(crate) struct Desk {
    /// Shared with the courier.
    settings: Arc<PolicySettings>,
    db: Database,
    dispatcher: Dispatcher,
    courier: Courier,
    /// The courier's errands in flight (aborted when the service stops).
    errands: JoinSet<()>,
    permits: Arc<Semaphore>,
    rekeying: HashMap<Pin, Rekeying>,
    clock: Clock,
}

/// Sends IT policies and service books and records their confirmations.
/// Each errand is a task of its own, so a burst of activations does not
/// wait on one device at a time: their queue writes meet in the
/// Dispatcher's shared commits.
#[derive(Clone)]
struct Courier {
    settings: Arc<PolicySettings>,
    server_name: Arc<str>,
    db: Database,
    dispatcher: Dispatcher,
    /// What was sent and is awaiting the device's confirmation, by RefID.
    /// An entry is made before the message is queued, so a confirmation
    /// can never arrive before it.
    sent: Arc<Mutex<HashMap<RefId, Sent>>>,
    /// SHA-256 of the last policy document sent to each device.
    last_policy: Arc<Mutex<HashMap<Pin, [u8; 32]>>>,
}

impl Desk {
    pub(crate) fn new(
        settings: PolicySettings,
        server_name: String,
        db: Database,
        dispatcher: Dispatcher,
    ) -> Desk {
        let settings = Arc::new(settings);
        Desk {
            courier: Courier {
                settings: settings.clone(),
                server_name: server_name.into(),
                db: db.clone(),
                dispatcher: dispatcher.clone(),
                sent: Arc::default(),
                last_policy: Arc::default(),
            },
            settings,
            db,
            dispatcher,
            errands: JoinSet::new(),
            permits: Arc::new(Semaphore::new(CONCURRENT_SENDS)),
            rekeying: HashMap::new(),
            clock: Clock::new(),
        }
    }

    pub(crate) async fn serve(mut self, ctx: ComponentContext) -> Result<(), ComponentError> {
        let mut events = self.dispatcher.subscribe();
        let mut key_changes = self.dispatcher.register(ContentType::KeyChange, 256);
        let mut beat = tokio::time::interval(ctx.heartbeat_interval);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                Some(_) = self.errands.join_next(), if !self.errands.is_empty() => {}
                _ = beat.tick() => {
                    ctx.db.ping().await.map_err(ComponentError::DatabaseUnreachable)?;
                    ctx.heartbeat.beat();
                }
                _ = sweep.tick() => {
                    if let Err(e) = self.sweep().await {
                        warn!(target: "bramble::policy", "cannot look for unfinished activations: {e}");
                    }
                    if let Err(e) = self.sweep_commands().await {
                        warn!(target: "bramble::policy", "cannot look for IT admin commands: {e}");
                    }
                    if let Err(e) = self.sweep_key_ages().await {
                        warn!(target: "bramble::policy", "cannot look for old transport keys: {e}");
                    }
                }
                change = key_changes.recv() => {
                    let Some(change) = change else { return Ok(()) };
                    self.key_change(change.pin, &change.plaintext).await;
                }
                event = events.recv() => match event {
                    Ok(DeliveryEvent::KeyEstablished { pin, user }) => self.send_policy(user, pin, true),
                    Ok(DeliveryEvent::PolicyChanged) => {
                        if let Err(e) = self.push_policies().await {
                            warn!(target: "bramble::policy", "cannot push the changed IT policies: {e}");
                        }
                    }
                    Ok(DeliveryEvent::ResendRequested { pin, user, what }) => match what {
                        // Only the policy: the service books follow an
                        // activation's policy, not an administrator's resend.
                        Resend::Policy => self.send_policy(user, pin, false),
                        Resend::ServiceBooks => self.send_books(user, pin),
                    },
                    Ok(DeliveryEvent::Confirmed { ref_id, .. }) => {
                        match self.courier.take(ref_id) {
                            Some(Sent { pin, step: Step::Command(command, device, kind), .. }) => {
                                self.command_acknowledged(command, device, kind, pin).await;
                            }
                            Some(sent) => {
                                let courier = self.courier.clone();
                                self.errand(async move { courier.confirmed(sent).await });
                            }
                            None => {}
                        }
                    }
                    Ok(DeliveryEvent::Refused { ref_id, message, .. }) => {
                        match self.courier.take(ref_id) {
                            Some(Sent { pin, step: Step::Command(command, device, _), .. }) => {
                                self.command_refused(command, device, pin, message).await;
                            }
                            Some(sent) => {
                                // Not sent again: the device would refuse it
                                // again; the next change or resend tries anew.
                                warn!(target: "bramble::policy", pin = %sent.pin, user = %sent.user, "the device refused the {}: {message}", step_name(sent.step));
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

    /// Runs `work` as one of the courier's errands, at most
    /// [`CONCURRENT_SENDS`] at a time.
    fn errand(&mut self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let permits = self.permits.clone();
        self.errands.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            work.await;
        });
    }

    fn send_policy(&mut self, user: UserId, pin: Pin, books_after: bool) {
        let courier = self.courier.clone();
        self.errand(async move { courier.send_policy(user, pin, books_after).await });
    }

    fn send_books(&mut self, user: UserId, pin: Pin) {
        let courier = self.courier.clone();
        self.errand(async move { courier.send_books(user, pin).await });
    }

    /// Sends again what was not confirmed in time, and picks up activations
    /// left half-way (e.g. by a restart).
    async fn sweep(&mut self) -> Result<(), DbError> {
        let timeout = Duration::from_secs(self.settings.confirm_timeout_secs.max(1));
        let waiting = self.courier.forget_late(timeout);
        // Only activations that have waited at that step longer than the
        // timeout: newer ones are still on their way through the events.
        let stuck_since = self.clock.now_db()
            - time::Duration::seconds(i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX));
        let unfinished = self
            .db
            .run(move |conn| {
                let rows: Vec<(UserId, String)> = users::table
                    .filter(users::activation_status.eq_any([
                        ActivationStatus::EncryptionVerified.as_str(),
                        ActivationStatus::PolicyApplied.as_str(),
                    ]))
                    .filter(users::updated_at.lt(stuck_since))
                    .select((users::id, users::activation_status))
                    .limit(500)
                    .load(conn)?;
                let mut out = Vec::new();
                for (user, status) in rows {
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
        for (user, pin, status) in unfinished {
            if waiting.contains(&user) {
                continue;
            }
            if status == ActivationStatus::EncryptionVerified.as_str() {
                self.send_policy(user, pin, true);
            } else {
                self.send_books(user, pin);
            }
        }
        Ok(())
    }
}

impl Courier {
    /// The entry for `ref_id`, if it is awaited.
    fn take(&self, ref_id: RefId) -> Option<Sent> {
        self.sent.lock().ok()?.remove(&ref_id)
    }

    /// Forgets the policies and service books not confirmed within
    /// `timeout` (so the sweep sends them again) and returns the users
    /// still awaiting a confirmation in time.
    fn forget_late(&self, timeout: Duration) -> HashSet<UserId> {
        let Ok(mut sent) = self.sent.lock() else {
            return HashSet::new();
        };
        sent.retain(|_, s| {
            let late = !matches!(s.step, Step::Command(..)) && s.at.elapsed() >= timeout;
            if late {
                warn!(target: "bramble::policy", pin = %s.pin, user = %s.user, "the {} was not confirmed within {}s; sending it again", step_name(s.step), timeout.as_secs());
            }
            !late
        });
        sent.values().map(|s| s.user).collect()
    }

    /// Sends the user's resolved IT policy, signed; the service books
    /// follow its confirmation when `books_after`.
    async fn send_policy(&self, user: UserId, pin: Pin, books_after: bool) {
        let signed = self
            .db
            .write_sealed(move |conn, sealer| {
                let resolved = resolve(conn, user)?;
                let policy = resolved.policies.first().map(|p| p.policy_id);
                let bytes = resolved.canonical_bytes()?;
                let digest = policy_digest(&resolved, &bytes);
                let document = String::from_utf8(bytes)
                    .map_err(|_| DbError::Invalid("the IT policy is not UTF-8".into()))?;
                Ok((
                    policy,
                    digest,
                    signed_by_domain(conn, sealer, "it_policy", document)?,
                ))
            })
            .await;
        match signed {
            Ok((policy, digest, signed)) => {
                if let Ok(mut last) = self.last_policy.lock() {
                    last.insert(pin, digest);
                }
                self.send(
                    user,
                    pin,
                    Step::Policy {
                        policy,
                        books_after,
                    },
                    ContentType::ItPolicy,
                    signed.to_bytes(),
                )
                .await
            }
            Err(e) => {
                warn!(target: "bramble::policy", %pin, %user, "cannot prepare the IT policy: {e}")
            }
        }
    }

    async fn send_books(&self, user: UserId, pin: Pin) {
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
        self.send(
            user,
            pin,
            Step::Books,
            ContentType::ServiceBook,
            books.to_bytes(),
        )
        .await
    }

    async fn send(
        &self,
        user: UserId,
        pin: Pin,
        step: Step,
        content_type: ContentType,
        plaintext: Vec<u8>,
    ) {
        let ref_id = RefId::random();
        let awaited = Sent {
            user,
            pin,
            step,
            at: Instant::now(),
        };
        if let Ok(mut sent) = self.sent.lock() {
            sent.insert(ref_id, awaited);
        }
        let queued = self
            .dispatcher
            .send(Outgoing {
                pin,
                content_type,
                plaintext,
                priority: true,
                ref_id: Some(ref_id),
            })
            .await;
        match queued {
            Ok(_) => {
                info!(target: "bramble::policy", %pin, %user, %ref_id, "{} sent", step_name(step));
            }
            Err(e) => {
                self.take(ref_id);
                warn!(target: "bramble::policy", %pin, %user, "cannot send the {}: {e}", step_name(step))
            }
        }
    }

    async fn confirmed(&self, sent: Sent) {
        let (user, pin) = (sent.user, sent.pin);
        let (status, applied) = match sent.step {
            Step::Policy { policy, .. } => (ActivationStatus::PolicyApplied, Some(policy)),
            Step::Books => (ActivationStatus::ServicesReceived, None),
            // The Desk itself handles commands' acknowledgements.
            Step::Command(..) => return,
        };
        let recorded = self
            .db
            .write(move |conn| {
                conn.transaction(|conn| {
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
            warn!(target: "bramble::policy", %pin, %user, "cannot record the {} step: {e}", step_name(sent.step));
        }
        info!(target: "bramble::policy", %pin, %user, "{} confirmed by the device", step_name(sent.step));
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
}

impl Desk {
    /// A policy or an assignment changed: every activated device whose
    /// resolved policy is not the one it was last sent gets it (signed,
    /// confirmed like the first).
    async fn push_policies(&mut self) -> Result<(), DbError> {
        let devices = self
            .db
            .run(|conn| {
                let rows: Vec<(UserId, String)> = users::table
                    .filter(users::activation_status.eq_any([
                        ActivationStatus::PolicyApplied.as_str(),
                        ActivationStatus::ServicesReceived.as_str(),
                        ActivationStatus::Synchronizing.as_str(),
                        ActivationStatus::Completed.as_str(),
                    ]))
                    .select((users::id, users::activation_status))
                    .load(conn)?;
                let mut out = Vec::new();
                for (user, _) in rows {
                    let resolved = resolve(conn, user)?;
                    let digest = policy_digest(&resolved, &resolved.canonical_bytes()?);
                    for device in Device::find_by_user(conn, user)? {
                        if !DeviceKey::find_all_for_device(conn, device.id)?.is_empty() {
                            out.push((user, device.pin, digest));
                        }
                    }
                }
                Ok(out)
            })
            .await?;
        let mut pushed = 0;
        for (user, pin, digest) in devices {
            let last = self
                .courier
                .last_policy
                .lock()
                .ok()
                .and_then(|last| last.get(&pin).copied());
            if last != Some(digest) {
                self.send_policy(user, pin, true);
                pushed += 1;
            }
        }
        info!(target: "bramble::policy", pushed, "IT policy change pushed to the devices it affects");
        Ok(())
    }

    /// Sends queued IT admin commands (a delayed wipe when its time has
    /// come) and expires those not acknowledged in time.
    async fn sweep_commands(&mut self) -> Result<(), DbError> {
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
            self.send_command(target).await;
        }
        Ok(())
    }

    async fn send_command(&mut self, target: CommandTarget) {
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
            self.start_rekey(pin, Some((command, device)))
                .await
                .map(|()| None)
        } else {
            let body = match target.kind {
                CommandKind::Lock => Command::Lock {
                    password: target.parameters["password"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                },
                CommandKind::WipeAll => Command::WipeAll {
                    delay_secs: target.parameters["delay_secs"].as_u64().unwrap_or(0),
                },
                _ => Command::WipeWork,
            };
            let document = CommandDocument {
                id: command.0,
                command: body,
            };
            let signed = self
                .db
                .write_sealed(move |conn, sealer| {
                    let text = serde_json::to_string(&document)
                        .map_err(|e| DbError::Invalid(e.to_string()))?;
                    signed_by_domain(conn, sealer, "admin_command", text)
                })
                .await;
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
                Err(e) => Err(e.to_string()),
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
            if let Ok(mut sent) = self.courier.sent.lock() {
                sent.insert(
                    ref_id,
                    Sent {
                        user,
                        pin,
                        step: Step::Command(command, device, target.kind),
                        at: Instant::now(),
                    },
                );
            }
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

    async fn command_acknowledged(
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
                conn.transaction(|conn| {
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
            self.dispatcher.keys().invalidate(pin);
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
    async fn command_refused(
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

    /// Starts a key change with the device: `rekey` under the current key.
    async fn start_rekey(
        &mut self,
        pin: Pin,
        target: Option<(AdminCommandId, DeviceId)>,
    ) -> Result<(), String> {
        if self
            .rekeying
            .get(&pin)
            .is_some_and(|r| r.started.elapsed() < REKEY_TTL)
        {
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
        self.rekeying.insert(
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
    async fn key_change(&mut self, pin: Pin, plaintext: &[u8]) {
        match ActivationMessage::from_bytes(plaintext) {
            Ok(ActivationMessage::RekeyRequest) => {
                info!(target: "bramble::policy", %pin, "the device asks for a new transport key");
                if let Err(e) = self.start_rekey(pin, None).await {
                    warn!(target: "bramble::policy", %pin, "cannot start the key change: {e}");
                }
            }
            Ok(ActivationMessage::RekeyReply {
                device_key,
                key_id,
                confirm,
            }) => {
                let Some(r) = self.rekeying.remove(&pin) else {
                    warn!(target: "bramble::policy", %pin, "a key change reply for no key change under way; ignored");
                    return;
                };
                if let Err(e) = self
                    .finish_rekey(pin, r, &device_key, key_id, &confirm)
                    .await
                {
                    warn!(target: "bramble::policy", %pin, "the key change failed: {e}");
                }
            }
            Ok(other) => {
                warn!(target: "bramble::policy", %pin, "key change message {other:?} is not for the server; ignored")
            }
            Err(e) => warn!(target: "bramble::policy", %pin, "unreadable key change message: {e}"),
        }
    }

    async fn finish_rekey(
        &mut self,
        pin: Pin,
        r: Rekeying,
        device_key: &str,
        key_id: u32,
        confirm: &str,
    ) -> Result<(), String> {
        if key_id != r.key_id {
            return Err(format!(
                "the device answered for key {key_id}, not {}",
                r.key_id
            ));
        }
        let current = self
            .dispatcher
            .keys()
            .ring(pin)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|ring| ring.current().cloned())
            .ok_or("the device has no current key")?;
        let keys = rekey(
            &current,
            &r.ephemeral,
            device_key,
            &r.server_key,
            device_key,
            key_id,
        )
        .map_err(|e| e.to_string())?;
        keys.check_device(confirm).map_err(|e| e.to_string())?;
        let new_key = keys.transport.clone();
        let now = self.clock.now_db();
        let target = r.target;
        self.db
            .write_sealed(move |conn, sealer| {
                conn.transaction(|conn| {
                    let device = Device::find_by_pin(conn, &pin)?
                        .ok_or_else(|| DbError::Invalid(format!("there is no device {pin}")))?;
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
                    Ok(())
                })
            })
            .await
            .map_err(|e| e.to_string())?;
        self.dispatcher.keys().invalidate(pin);
        // Sealed with the new key, which the device holds as pending.
        self.dispatcher
            .send(Outgoing {
                pin,
                content_type: ContentType::KeyChange,
                plaintext: ActivationMessage::RekeyDone { key_id }.to_bytes(),
                priority: true,
                ref_id: None,
            })
            .await
            .map_err(|e| e.to_string())?;
        info!(target: "bramble::policy", %pin, key_id, "new transport key in use; the previous one still opens messages in flight");
        Ok(())
    }

    /// Starts a key change for devices whose current key is older than
    /// `key_lifetime_days`.
    async fn sweep_key_ages(&mut self) -> Result<(), DbError> {
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
            if self
                .rekeying
                .get(&pin)
                .is_some_and(|r| r.started.elapsed() < REKEY_TTL)
            {
                continue;
            }
            info!(target: "bramble::policy", %pin, "the transport key is older than {} days; replacing it", self.settings.key_lifetime_days);
            if let Err(e) = self.start_rekey(pin, None).await {
                warn!(target: "bramble::policy", %pin, "cannot start the key change: {e}");
            }
        }
        Ok(())
    }
}

/// `document` signed with the domain key, as a device receives it.
fn signed_by_domain(
    conn: &mut crate::db::Conn,
    sealer: &crate::db::Sealer,
    kind: &str,
    document: String,
) -> Result<Signed, DbError> {
    let key = DomainKey::load_or_create(conn, sealer)?;
    let signature = key.sign(document.as_bytes())?;
    Ok(Signed::new(kind, document, &signature, key.public_key()))
}

/// What tells one policy sent to a device from another: the named policy
/// it came from (a device records which one it applied) and its document.
fn policy_digest(resolved: &crate::policy::resolve::ResolvedPolicy, document: &[u8]) -> [u8; 32] {
    let mut hasher = openssl::sha::Sha256::new();
    let id = resolved.policies.first().map_or(0, |p| p.policy_id.0);
    hasher.update(&id.to_be_bytes());
    hasher.update(document);
    hasher.finish()
}

fn step_name(step: Step) -> &'static str {
    match step {
        Step::Policy { .. } => "IT policy",
        Step::Books => "service books",
        Step::Command(..) => "IT admin command",
    }
}

/// Whether `service` is on for a user: the user's own exception if there
/// is one, else the server's list.
pub fn service_enabled(
    settings: &PolicySettings,
    exceptions: &BTreeMap<String, bool>,
    service: &str,
) -> bool {
    exceptions
        .get(service)
        .copied()
        .unwrap_or_else(|| settings.services.iter().any(|s| s == service))
}

/// The service books for `email`: one per service enabled for the user.
pub fn service_books(
    settings: &PolicySettings,
    server: &str,
    email: &str,
    exceptions: &BTreeMap<String, bool>,
) -> ServiceBooks {
    let book = |cid: &str, name: &str, settings: &[(&str, &str)]| ServiceBook {
        cid: cid.to_owned(),
        name: name.to_owned(),
        uid: server.to_owned(),
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    };
    let books = SERVICES
        .iter()
        .filter(|cid| service_enabled(settings, exceptions, cid))
        .filter_map(|cid| {
            Some(match *cid {
                "CMIME" => book(
                    "CMIME",
                    "Desktop email",
                    &[("email", email), ("send_through", "enterprise server")],
                ),
                "CICAL" => book("CICAL", "Desktop calendar", &[("email", email)]),
                "SYNC" => book(
                    "SYNC",
                    "Desktop synchronization",
                    &[
                        ("databases", "contacts,calendar,tasks,memos"),
                        ("backup", "on"),
                    ],
                ),
                "IPPP" => book(
                    "IPPP",
                    "Enterprise browsing",
                    &[("proxy", "MDS Connection Service")],
                ),
                "BrowserConfig" => book(
                    "BrowserConfig",
                    "Enterprise browser",
                    &[
                        ("homepage", &settings.browser_homepage),
                        ("transport", "IPPP"),
                    ],
                ),
                "ALP" => book("ALP", "Address lookup", &[("max_results", "20")]),
                "BBIM" => book("BBIM", "Enterprise messenger", &[("email", email)]),
                _ => return None,
            })
        })
        .collect();
    ServiceBooks {
        email: email.to_owned(),
        books,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_book_per_enabled_service_only() {
        let mut settings = PolicySettings::default();
        let none = BTreeMap::new();
        let all = service_books(&settings, "S1", "a@example.org", &none);
        let cids: Vec<&str> = all.books.iter().map(|b| b.cid.as_str()).collect();
        assert_eq!(cids, SERVICES);
        settings.services = vec!["CMIME".into(), "ALP".into()];
        let some = service_books(&settings, "S1", "a@example.org", &none);
        let cids: Vec<&str> = some.books.iter().map(|b| b.cid.as_str()).collect();
        assert_eq!(cids, ["CMIME", "ALP"]);
        assert_eq!(some.books[0].settings["email"], "a@example.org");
        assert_eq!(
            some.enabled_message(),
            "Services Received. Your email address, a@example.org is now enabled."
        );
        // A user's own exceptions win over the server's list.
        let exceptions = BTreeMap::from([("CMIME".to_owned(), false), ("BBIM".to_owned(), true)]);
        let own = service_books(&settings, "S1", "a@example.org", &exceptions);
        let cids: Vec<&str> = own.books.iter().map(|b| b.cid.as_str()).collect();
        assert_eq!(cids, ["ALP", "BBIM"]);
        settings.services.push("FAX".into());
        assert_eq!(settings.unknown_services(), ["FAX"]);
    }
}
