//! The BlackBerry Synchronization Service.
//!
//! Seed: the Synchronization Service synchronizes organizer data
//! (contacts, calendar, tasks, memos) against the organization's server,
//! retrieves device diagnostics, and backs up and restores device
//! configuration wirelessly (restored onto a replacement device during its
//! activation).
//!
//! Here the organizer data lives on a CalDAV/CardDAV server, set in
//! `[sync]` ([`SyncSettings`]) and reached with a service account. Pieces:
//! - [`dav`]: the WebDAV client (reqwest, quick-xml): WebDAV sync
//!   (RFC 6578) where offered, CTag and ETags otherwise; conditional writes.
//! - [`convert`]: vCard and iCalendar (the `ical` crate) to and from the
//!   device's records, keeping what the device does not edit.
//! - [`engine`]: slow sync, rounds of server changes, device changelists.
//! - Per-database settings (enabled, direction, conflict resolution) are
//!   in the Configuration Database
//!   ([`SyncSetting`](crate::db::models::sync::SyncSetting)), as are each
//!   user's states, the records each device holds, per-record errors and
//!   backups ([`crate::db::models::sync`]).
//!
//! Messages are [`bramble_proto::sync::Sync`] values in `Sync` envelopes
//! (see that module for the exchange). Each device's messages are handled
//! in order by one worker; one lock per user keeps a slow sync, a round of
//! server changes and a device changelist from interleaving. Every
//! `poll_secs` each database in sync is checked for server changes; a
//! change of the per-database settings is pushed to devices as a new
//! `config`.
//!
//! ## Activation (seed steps 13–15)
//! The device asks for the configuration once it has its service books;
//! a user whose activation is at "Services received" then moves to
//! "Synchronizing". Each enabled database is slow-synced; when the device
//! reports the last one `in_sync`, a user at "Synchronizing" moves to
//! "Completed" ([`activation_password::advance`]); with wireless
//! synchronization off or every database turned off, at the configuration
//! request already. The activation flow needs to call nothing else; [`slow_sync_progress`] tells it (and
//! the console) where a user's slow sync stands.
//!
//! Without a Dispatcher the component runs in standby. Without `[sync] url`
//! it still answers configuration requests (wireless sync off), backups,
//! restores and diagnostics.

pub mod convert;
pub mod dav;
pub mod engine;
pub mod settings;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bramble_proto::sync::{DatabaseConfig, Item, OrganizerDatabase, Sync};
use bramble_proto::{ContentType, Pin};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::controller::component::{
    standby, Component, ComponentContext, ComponentError, ComponentId,
};
use crate::db::ids::UserId;
use crate::db::models::activation_password;
use crate::db::models::device::Device;
use crate::db::models::sync::{DeviceBackup, SyncSetting, SyncState, SyncStatus};
use crate::db::models::user::{ActivationStatus, User};
use crate::db::{Database, DbResult};
use crate::dispatcher::{Dispatcher, Inbound};
use dav::DavClient;
use engine::{EngineError, Owner};
pub use settings::SyncSettings;

/// Users whose server changes are read at once in a round.
const CONCURRENT_ROUNDS: usize = 8;
/// A device's worker ends after this long without messages.
const WORKER_IDLE: Duration = Duration::from_secs(300);

/// What the Synchronization Service's tasks share.
pub(crate) struct Shared {
    pub(crate) settings: SyncSettings,
    pub(crate) db: Database,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) dav: Option<DavClient>,
    pub(crate) clock: Clock,
    /// One lock per user (see the module documentation).
    locks: Mutex<HashMap<UserId, Arc<tokio::sync::Mutex<()>>>>,
    /// Slow sync records arriving in batches, per device and database.
    uploads: Mutex<HashMap<(Pin, OrganizerDatabase), Vec<Item>>>,
}

impl Shared {
    fn user_lock(&self, user: UserId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(user).or_default().clone()
    }

    fn uploads(&self) -> std::sync::MutexGuard<'_, HashMap<(Pin, OrganizerDatabase), Vec<Item>>> {
        self.uploads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The Synchronization Service component.
#[derive(Debug, Clone, Default)]
pub struct SynchronizationService {
    settings: SyncSettings,
}

impl SynchronizationService {
    pub fn new(settings: SyncSettings) -> SynchronizationService {
        SynchronizationService { settings }
    }
}

impl Component for SynchronizationService {
    fn id(&self) -> ComponentId {
        ComponentId::SynchronizationService
    }

    fn run(&self, ctx: ComponentContext) -> BoxFuture<'static, Result<(), ComponentError>> {
        let settings = self.settings.clone();
        async move {
            let Some(dispatcher) = ctx.dispatcher.clone() else {
                return standby(ctx).await;
            };
            serve(settings, ctx, dispatcher).await
        }
        .boxed()
    }
}

async fn serve(
    settings: SyncSettings,
    ctx: ComponentContext,
    dispatcher: Dispatcher,
) -> Result<(), ComponentError> {
    // Registered first: devices' messages are taken from now on.
    let mut inbound = dispatcher.register(ContentType::Sync, 1024);
    let dav = match &settings.url {
        Some(url) => Some(
            DavClient::new(
                url,
                &settings.service_login,
                &settings.service_password,
                Duration::from_secs(settings.request_timeout_secs.max(1)),
            )
            .map_err(|e| ComponentError::failed(e.code(), e.to_string()))?
            .with_connections(settings.max_connections)
            .with_max_response_bytes(settings.max_response_bytes),
        ),
        None => {
            info!(target: "bramble::sync", "no organizer server is configured ([sync] url); wireless synchronization is off, backup, restore and diagnostics work");
            None
        }
    };
    let shared = Arc::new(Shared {
        settings: settings.clone(),
        db: ctx.db.clone(),
        dispatcher: dispatcher.clone(),
        dav,
        clock: Clock::new(),
        locks: Mutex::new(HashMap::new()),
        uploads: Mutex::new(HashMap::new()),
    });
    let mut workers: HashMap<Pin, mpsc::UnboundedSender<Inbound>> = HashMap::new();
    let mut beat = tokio::time::interval(ctx.heartbeat_interval);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(Duration::from_secs(settings.poll_secs.max(1)));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let round_running = Arc::new(AtomicBool::new(false));
    let mut last_config: Option<Vec<SyncSetting>> = None;
    info!(target: "bramble::sync", url = ?settings.url, "Synchronization Service started");
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = beat.tick() => {
                ctx.db.ping().await.map_err(ComponentError::DatabaseUnreachable)?;
                ctx.heartbeat.set_detail(Some(summary(&shared).await));
                ctx.heartbeat.beat();
            }
            _ = poll.tick() => {
                if shared.dav.is_none() {
                    continue;
                }
                // A change of the settings goes to every device that syncs.
                match ctx.db.run(SyncSetting::find_all).await {
                    Ok(now) => {
                        if last_config.as_ref().is_some_and(|before| *before != now) {
                            info!(target: "bramble::sync", "the synchronization settings changed; devices are told");
                            tokio::spawn(push_config(shared.clone(), now.clone()));
                        }
                        last_config = Some(now);
                    }
                    Err(e) => warn!(target: "bramble::sync", "cannot read the synchronization settings: {e}"),
                }
                if !round_running.swap(true, Ordering::AcqRel) {
                    let shared = shared.clone();
                    let flag = round_running.clone();
                    tokio::spawn(async move {
                        server_rounds(&shared).await;
                        flag.store(false, Ordering::Release);
                    });
                }
            }
            message = inbound.recv() => {
                let Some(message) = message else { break };
                let pin = message.pin;
                let message = match workers.get(&pin) {
                    Some(tx) => match tx.send(message) {
                        Ok(()) => continue,
                        Err(mpsc::error::SendError(m)) => m,
                    },
                    None => message,
                };
                let (tx, rx) = mpsc::unbounded_channel();
                let _ = tx.send(message);
                workers.insert(pin, tx);
                workers.retain(|_, tx| !tx.is_closed());
                tokio::spawn(device_worker(shared.clone(), pin, rx, ctx.shutdown.child_token()));
            }
        }
    }
    Ok(())
}

/// Handles one device's messages in order; ends when idle.
async fn device_worker(
    shared: Arc<Shared>,
    pin: Pin,
    mut rx: mpsc::UnboundedReceiver<Inbound>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return,
            m = tokio::time::timeout(WORKER_IDLE, rx.recv()) => m,
        };
        match message {
            Ok(Some(m)) => handle(&shared, m).await,
            Ok(None) => return,
            Err(_) => {
                // Idle: stop taking messages, finish those already queued.
                rx.close();
                while let Ok(m) = rx.try_recv() {
                    handle(&shared, m).await;
                }
                debug!(target: "bramble::sync", %pin, "device worker idle; ended");
                return;
            }
        }
    }
}

/// The owner of a device, or why there is none.
async fn owner(db: &Database, pin: Pin) -> DbResult<Option<(Owner, Device, User)>> {
    db.run(move |conn| {
        let Some((device, user)) = Device::find_with_owner(conn, &pin)? else {
            return Ok(None);
        };
        Ok(Some((
            Owner {
                user: user.id,
                login: user.mailbox_login.clone(),
                pin,
            },
            device,
            user,
        )))
    })
    .await
}

async fn handle(shared: &Shared, inbound: Inbound) {
    let pin = inbound.pin;
    let message = match Sync::from_bytes(&inbound.plaintext) {
        Ok(m) => m,
        Err(e) => {
            warn!(target: "bramble::sync", %pin, ref_id = %inbound.ref_id, "{e}");
            let _ = shared
                .send(
                    pin,
                    vec![Sync::Failed {
                        code: "SYNC_UNREADABLE".into(),
                        message: e.to_string(),
                    }],
                )
                .await;
            return;
        }
    };
    let found = match owner(&shared.db, pin).await {
        Ok(found) => found,
        Err(e) => {
            warn!(target: "bramble::sync", %pin, "cannot look up the device: {e}");
            return;
        }
    };
    let Some((owner, device, user)) = found else {
        warn!(target: "bramble::sync", %pin, "a synchronization message from a device that belongs to no user was ignored");
        let _ = shared
            .send(
                pin,
                vec![Sync::Failed {
                    code: "SYNC_NO_USER".into(),
                    message: format!(
                        "device {pin} belongs to no user; an administrator must assign it first"
                    ),
                }],
            )
            .await;
        return;
    };
    if let Err(e) = dispatch(shared, &owner, &device, &user, message).await {
        warn!(target: "bramble::sync", user = %owner.user, %pin, "{e}");
    }
}

async fn dispatch(
    shared: &Shared,
    owner: &Owner,
    device: &Device,
    user: &User,
    message: Sync,
) -> Result<(), EngineError> {
    let pin = owner.pin;
    let user_id = owner.user;
    match message {
        Sync::ConfigRequest => {
            let config = config_message(shared).await?;
            let nothing_to_sync = match &config {
                Sync::Config {
                    wireless_sync,
                    databases,
                } => !wireless_sync || databases.iter().all(|d| !d.enabled),
                _ => false,
            };
            let mut status = user.activation_status;
            // A device asks only once it holds the service books; its
            // confirmation of them may still be on its way to the Policy
            // Service.
            if status == ActivationStatus::PolicyApplied {
                advance(shared, user_id, ActivationStatus::ServicesReceived).await;
                status = ActivationStatus::ServicesReceived;
            }
            if status == ActivationStatus::ServicesReceived {
                advance(shared, user_id, ActivationStatus::Synchronizing).await;
                status = ActivationStatus::Synchronizing;
            }
            // With nothing to synchronize the slow sync is done at once.
            if nothing_to_sync && status == ActivationStatus::Synchronizing {
                advance(shared, user_id, ActivationStatus::Completed).await;
            }
            shared.send(pin, vec![config]).await
        }
        Sync::SlowSync {
            database,
            items,
            last,
        } => {
            let items = {
                let mut uploads = shared.uploads();
                let pending = uploads.entry((pin, database)).or_default();
                pending.extend(items);
                if !last {
                    return Ok(());
                }
                uploads.remove(&(pin, database)).unwrap_or_default()
            };
            let setting = shared
                .db
                .run(move |conn| SyncSetting::find(conn, database))
                .await?;
            if !setting.enabled || shared.dav.is_none() {
                return shared
                    .send(
                        pin,
                        vec![Sync::Failed {
                            code: "SYNC_DATABASE_OFF".into(),
                            message: format!("the {database} database is not synchronized"),
                        }],
                    )
                    .await;
            }
            let lock = shared.user_lock(user_id);
            let _turn = lock.lock().await;
            if let Err(e) = engine::slow_sync(shared, owner, database, items).await {
                let failed = Sync::Failed {
                    code: "SYNC_SLOW_SYNC_FAILED".into(),
                    message: format!("the slow sync of the {database} database stopped: {e}; it starts again when the device asks"),
                };
                shared.send(pin, vec![failed]).await?;
                return Err(e);
            }
            Ok(())
        }
        Sync::InSync { database } => {
            shared
                .db
                .write(move |conn| SyncState::set_in_sync(conn, user_id, database))
                .await?;
            info!(target: "bramble::sync", user = %user_id, %pin, %database, "in sync");
            let progress = slow_sync_progress(&shared.db, user_id).await?;
            if progress.complete {
                let status = shared
                    .db
                    .run(move |conn| User::find_by_id(conn, user_id))
                    .await?
                    .map(|u| u.activation_status);
                if status == Some(ActivationStatus::Synchronizing) {
                    advance(shared, user_id, ActivationStatus::Completed).await;
                }
            }
            Ok(())
        }
        Sync::DeviceChanges {
            database,
            batch,
            changes,
        } => {
            let lock = shared.user_lock(user_id);
            let results = {
                let _turn = lock.lock().await;
                engine::device_changes(shared, owner, database, changes).await?
            };
            shared
                .send(
                    pin,
                    vec![Sync::Results {
                        database,
                        batch,
                        results,
                    }],
                )
                .await
        }
        Sync::Backup(backup) => {
            let taken_at = shared.clock.now_db();
            let count = backup.items.len();
            let row = DeviceBackup {
                user_id,
                pin,
                taken_at,
                settings: backup.settings,
                items: serde_json::to_value(&backup.items).unwrap_or_default(),
                item_count: i32::try_from(count).unwrap_or(i32::MAX),
            };
            shared.db.write(move |conn| row.save(conn)).await?;
            info!(target: "bramble::sync", user = %user_id, %pin, records = count, "wireless backup stored");
            shared
                .send(
                    pin,
                    vec![Sync::BackupStored {
                        taken_at: rfc3339(taken_at),
                        items: u32::try_from(count).unwrap_or(u32::MAX),
                    }],
                )
                .await
        }
        Sync::RestoreRequest => {
            let latest = shared
                .db
                .run(move |conn| DeviceBackup::find_latest(conn, user_id))
                .await?;
            let reply = match latest {
                Some(b) => {
                    let items: Vec<Item> = serde_json::from_value(b.items).unwrap_or_default();
                    info!(target: "bramble::sync", user = %user_id, %pin, from = %b.pin, records = items.len(), "wireless restore sent");
                    Sync::Restore {
                        backup: Some(bramble_proto::sync::Backup {
                            settings: b.settings,
                            items,
                        }),
                        taken_at: Some(rfc3339(b.taken_at)),
                    }
                }
                None => Sync::Restore {
                    backup: None,
                    taken_at: None,
                },
            };
            shared.send(pin, vec![reply]).await
        }
        Sync::Diagnostics(report) => {
            let device_id = device.id;
            let json = serde_json::to_value(&report).unwrap_or_default();
            shared
                .db
                .write(move |conn| Device::add_diagnostics(conn, device_id, &json))
                .await?;
            info!(target: "bramble::sync", %pin, "diagnostics report stored");
            Ok(())
        }
        other => {
            debug!(target: "bramble::sync", %pin, message = ?other, "a server message from a device was ignored");
            Ok(())
        }
    }
}

fn rfc3339(at: time::PrimitiveDateTime) -> String {
    at.assume_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

async fn advance(shared: &Shared, user: UserId, to: ActivationStatus) {
    let clock = shared.clock;
    let result = shared
        .db
        .write(move |conn| Ok(activation_password::advance(conn, user, to, clock.now_db())))
        .await;
    match result {
        Ok(Ok(())) => {
            info!(target: "bramble::sync", %user, status = to.as_str(), "activation moved on")
        }
        Ok(Err(e)) => {
            warn!(target: "bramble::sync", %user, "cannot record the activation step: {e}")
        }
        Err(e) => warn!(target: "bramble::sync", %user, "cannot record the activation step: {e}"),
    }
}

async fn config_message(shared: &Shared) -> Result<Sync, EngineError> {
    let settings = shared.db.run(SyncSetting::find_all).await?;
    Ok(config_from(shared.dav.is_some(), settings))
}

fn config_from(wireless_sync: bool, settings: Vec<SyncSetting>) -> Sync {
    Sync::Config {
        wireless_sync,
        databases: settings
            .into_iter()
            .map(|s| {
                let mut c = DatabaseConfig::from(s);
                c.enabled &= wireless_sync;
                c
            })
            .collect(),
    }
}

/// Sends the new configuration to every device of a user who syncs.
async fn push_config(shared: Arc<Shared>, settings: Vec<SyncSetting>) {
    let config = config_from(shared.dav.is_some(), settings);
    let pins = shared.db.run(SyncState::find_syncing_pins).await;
    match pins {
        Ok(pins) => {
            for pin in pins {
                if let Err(e) = shared.send(pin, vec![config.clone()]).await {
                    debug!(target: "bramble::sync", %pin, "the new configuration cannot be sent: {e}");
                }
            }
        }
        Err(e) => warn!(target: "bramble::sync", "cannot list the devices to tell: {e}"),
    }
}

/// One round: server changes of every database in sync, a few users at once.
async fn server_rounds(shared: &Arc<Shared>) {
    let states = match shared.db.run(SyncState::find_synchronized).await {
        Ok(states) => states,
        Err(e) => {
            warn!(target: "bramble::sync", "cannot list the databases to check: {e}");
            return;
        }
    };
    let mut by_user: HashMap<UserId, Vec<OrganizerDatabase>> = HashMap::new();
    for s in states {
        by_user.entry(s.user_id).or_default().push(s.database);
    }
    futures::stream::iter(by_user)
        .for_each_concurrent(CONCURRENT_ROUNDS, |(user, databases)| {
            let shared = shared.clone();
            async move {
                let owner = match shared
                    .db
                    .run(move |conn| {
                        let Some(u) = User::find_by_id(conn, user)? else {
                            return Ok(None);
                        };
                        let device = Device::find_by_user(conn, user)?.into_iter().last();
                        Ok(device.map(|d| Owner {
                            user,
                            login: u.mailbox_login,
                            pin: d.pin,
                        }))
                    })
                    .await
                {
                    Ok(Some(owner)) => owner,
                    Ok(None) => return,
                    Err(e) => {
                        warn!(target: "bramble::sync", %user, "cannot read the user: {e}");
                        return;
                    }
                };
                let lock = shared.user_lock(user);
                let _turn = lock.lock().await;
                for database in databases {
                    if let Err(e) = engine::server_round(&shared, &owner, database).await {
                        debug!(target: "bramble::sync", %user, %database, "round failed: {e}");
                    }
                }
            }
        })
        .await;
}

async fn summary(shared: &Shared) -> String {
    if shared.dav.is_none() {
        return "no organizer server configured ([sync] url)".into();
    }
    let states = shared
        .db
        .run(SyncState::find_all_states)
        .await
        .unwrap_or_default();
    let users: std::collections::HashSet<UserId> = states.iter().map(|(u, _)| *u).collect();
    let failing: std::collections::HashSet<UserId> = states
        .iter()
        .filter(|(_, s)| s == SyncStatus::Error.as_str())
        .map(|(u, _)| *u)
        .collect();
    if failing.is_empty() {
        format!("synchronizing {} users", users.len())
    } else {
        format!(
            "synchronizing {} users; {} with errors (see the user's synchronization status)",
            users.len(),
            failing.len()
        )
    }
}

/// Where a user's slow sync stands, per enabled database.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowSyncProgress {
    pub user_id: UserId,
    /// Each enabled database and its state (none: not started).
    pub databases: Vec<(OrganizerDatabase, Option<SyncStatus>)>,
    /// Every enabled database is in sync (seed step 15).
    pub complete: bool,
}

/// The activation flow's and the console's view of a user's slow sync:
/// complete when every enabled database has been in sync at least once.
pub async fn slow_sync_progress(db: &Database, user: UserId) -> DbResult<SlowSyncProgress> {
    db.run(move |conn| {
        let settings = SyncSetting::find_all(conn)?;
        let states = SyncState::find_by_user(conn, user)?;
        let databases: Vec<_> = settings
            .iter()
            .filter(|s| s.enabled)
            .map(|s| {
                let state = states.iter().find(|st| st.database == s.database);
                (
                    s.database,
                    state.map(|st| match (st.state, st.last_sync_at) {
                        // Failing since it was in sync: the slow sync is done.
                        (SyncStatus::Error, Some(_)) => SyncStatus::InSync,
                        (state, _) => state,
                    }),
                )
            })
            .collect();
        let complete = databases
            .iter()
            .all(|(_, s)| *s == Some(SyncStatus::InSync));
        Ok(SlowSyncProgress {
            user_id: user,
            databases,
            complete,
        })
    })
    .await
}
