//! The BlackBerry Messaging Agent.
//!
//! Seed: the Messaging Agent connects to the organization's messaging
//! server; it watches every assigned user's mailbox, applies global then
//! individual filters, gives each forwarded message a RefID, keeps
//! statistics, hands messages to the Dispatcher and submits mail sent from
//! smartphones.
//!
//! Here the messaging server is reached over IMAP (IDLE) and SMTP, set in
//! `[mail]` ([`MailSettings`]):
//! - [`watcher`]: one task per watched mailbox (an active user assigned to
//!   one of this server's agents, with an activated device): forward new
//!   mail as CMIME ([`bramble_proto::cmime`]) — the first 2 KB of text and
//!   the attachment list — with a RefID, after [`filters`]; reconcile
//!   read/deleted state towards the device; reconnect after a gap and
//!   re-scan from the last UID handled. A mailbox that cannot be reached
//!   has its error recorded ([`MailboxState`]) and is retried.
//! - [`requests`]: CMIME from devices — mail to send (into the outbox),
//!   "More", attachments, read/deleted changes made on the device.
//! - [`outbox`]: SMTP submission (lettre), Sent copies, retries.
//! - [`mime`]: reading messages with mail-parser.
//! - Statistics: forwarded/filtered/pending when a message is handled,
//!   delivered when the device confirms, expired when the Dispatcher gives
//!   up, sent/failed for mail from devices (per user and global).
//!
//! Without `[mail] imap` the component runs in standby. The users of all
//! this server's agents (`messaging_agents` in the settings, at most 500
//! users each) are watched by this one component; the list is read again
//! every `refresh_users_secs`, assigning new users to agents as it goes.

pub mod activation;
pub mod filters;
pub mod imap;
pub mod mime;
pub mod outbox;
pub mod requests;
pub mod settings;
pub mod watcher;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bramble_proto::ContentType;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{broadcast, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::controller::component::{
    standby, Component, ComponentContext, ComponentError, ComponentId,
};
use crate::db::ids::UserId;
use crate::db::models::mailbox::{MailboxState, WatchState, Watched};
use crate::db::models::message::{Direction, Hop, Message, MessageStatus};
use crate::db::models::server::{MessagingAgent as AgentRow, ServerInstance};
use crate::db::models::statistics::{Counter, Statistics};
use crate::db::{Database, DbError};
use crate::dispatcher::{assignment, DeliveryEvent, Dispatcher};
pub use settings::{MailSettings, Security};

/// Device requests served at once.
const CONCURRENT_REQUESTS: usize = 32;

/// What the Messaging Agent's tasks share.
pub(crate) struct Shared {
    pub(crate) settings: MailSettings,
    pub(crate) db: Database,
    pub(crate) dispatcher: Dispatcher,
    /// Something was put in the outbox.
    pub(crate) outbox_wake: Notify,
    /// Wireless activations in progress.
    pub(crate) exchanges: activation::Exchanges,
}

/// The Messaging Agent component.
#[derive(Debug, Clone)]
pub struct MessagingAgent {
    settings: MailSettings,
    server_name: String,
}

impl MessagingAgent {
    pub fn new(settings: MailSettings, server_name: impl Into<String>) -> MessagingAgent {
        MessagingAgent {
            settings,
            server_name: server_name.into(),
        }
    }
}

impl Component for MessagingAgent {
    fn id(&self) -> ComponentId {
        ComponentId::MessagingAgent
    }

    fn run(&self, ctx: ComponentContext) -> BoxFuture<'static, Result<(), ComponentError>> {
        let this = self.clone();
        async move {
            let Some(dispatcher) = ctx.dispatcher.clone() else {
                return standby(ctx).await;
            };
            if this.settings.imap.is_none() {
                info!(target: "bramble::messaging_agent", "no mail server is configured ([mail] imap); the Messaging Agent waits in standby");
                ctx.heartbeat
                    .set_detail(Some("no mail server configured ([mail] imap)".into()));
                return standby(ctx).await;
            }
            this.serve(ctx, dispatcher).await
        }
        .boxed()
    }
}

impl MessagingAgent {
    async fn serve(
        self,
        ctx: ComponentContext,
        dispatcher: Dispatcher,
    ) -> Result<(), ComponentError> {
        let shared = Arc::new(Shared {
            settings: self.settings.clone(),
            db: ctx.db.clone(),
            dispatcher: dispatcher.clone(),
            outbox_wake: Notify::new(),
            exchanges: activation::Exchanges::default(),
        });
        let stop = ctx.shutdown.child_token();
        let _stop_guard = stop.clone().drop_guard();
        let mut requests = dispatcher.register_with_repeats(ContentType::Cmime, 1024);
        let mut events = dispatcher.subscribe();
        tokio::spawn(outbox::run(shared.clone(), stop.clone()));
        let exchanges = dispatcher.register(ContentType::Activation, 256);
        tokio::spawn(activation::run(shared.clone(), exchanges, stop.clone()));
        let limit = Arc::new(Semaphore::new(CONCURRENT_REQUESTS));
        let mut watchers: HashMap<UserId, (Watched, CancellationToken)> = HashMap::new();
        let mut beat = tokio::time::interval(ctx.heartbeat_interval);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh =
            tokio::time::interval(Duration::from_secs(self.settings.refresh_users_secs.max(1)));
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(target: "bramble::messaging_agent", imap = ?self.settings.imap, smtp = ?self.settings.smtp, "Messaging Agent started");
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = beat.tick() => {
                    ctx.db.ping().await.map_err(ComponentError::DatabaseUnreachable)?;
                    ctx.heartbeat.set_detail(Some(self.summary(&ctx.db, watchers.len()).await));
                    ctx.heartbeat.beat();
                }
                _ = refresh.tick() => {
                    match self.watch_list(&ctx.db).await {
                        Ok(list) => {
                            let before = watchers.len();
                            update_watchers(&shared, &mut watchers, list, &stop);
                            if watchers.len() != before {
                                ctx.heartbeat.set_detail(Some(self.summary(&ctx.db, watchers.len()).await));
                            }
                        }
                        Err(e) => warn!(target: "bramble::messaging_agent", "cannot read the users to watch: {e}"),
                    }
                }
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    let Ok(permit) = limit.clone().acquire_owned().await else { break };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        requests::handle(shared, request).await;
                        drop(permit);
                    });
                }
                event = events.recv() => {
                    match event {
                        Ok(event) => {
                            let mut batch = vec![event];
                            while batch.len() < 512 {
                                match events.try_recv() {
                                    Ok(e) => batch.push(e),
                                    Err(_) => break,
                                }
                            }
                            if batch.iter().any(|e| matches!(e, DeliveryEvent::KeyEstablished { .. })) {
                                // A device was just activated: watch its
                                // mailbox for it now, not at the next refresh.
                                refresh.reset_immediately();
                            }
                            if let Err(e) = record_deliveries(&ctx.db, batch).await {
                                warn!(target: "bramble::messaging_agent", "cannot update statistics: {e}");
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            warn!(target: "bramble::messaging_agent", missed = n, "delivery events were missed; statistics may lag behind");
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            }
        }
        for (_, (_, token)) in watchers.drain() {
            token.cancel();
        }
        Ok(())
    }

    /// The mailboxes to watch now (assigning new users to agents first).
    async fn watch_list(&self, db: &Database) -> Result<Vec<Watched>, DbError> {
        let server = self.server_name.clone();
        db.run(move |conn| {
            let Some(instance) = ServerInstance::find_by_name(conn, &server)? else {
                return Ok(Vec::new());
            };
            let agents = AgentRow::find_by_server(conn, instance.id)?;
            assignment::assign_unassigned(conn, &agents)?;
            let ids: Vec<_> = agents.iter().map(|a| a.id).collect();
            Watched::find_by_agents(conn, &ids)
        })
        .await
    }

    async fn summary(&self, db: &Database, watched: usize) -> String {
        let errors = db
            .run(|conn| MailboxState::find_in_state(conn, WatchState::Error))
            .await
            .map(|e| e.len())
            .unwrap_or(0);
        if errors == 0 {
            format!("watching {watched} mailboxes")
        } else {
            format!(
                "watching {watched} mailboxes; {errors} unreachable (see `bramble mail status`)"
            )
        }
    }
}

/// Starts watchers for new mailboxes, stops those no longer listed (or
/// whose device changed, to restart with the new one).
fn update_watchers(
    shared: &Arc<Shared>,
    watchers: &mut HashMap<UserId, (Watched, CancellationToken)>,
    list: Vec<Watched>,
    stop: &CancellationToken,
) {
    let wanted: HashMap<UserId, Watched> = list.into_iter().map(|w| (w.user_id, w)).collect();
    watchers.retain(|user, (current, token)| match wanted.get(user) {
        Some(w) if w == current => true,
        _ => {
            token.cancel();
            false
        }
    });
    let mut started = 0;
    for (user, w) in wanted {
        if watchers.contains_key(&user) {
            continue;
        }
        let token = stop.child_token();
        tokio::spawn(watcher::watch(shared.clone(), w.clone(), token.clone()));
        watchers.insert(user, (w, token));
        started += 1;
    }
    if started > 0 {
        info!(target: "bramble::messaging_agent", started, watching = watchers.len(), "mailboxes watched");
    }
}

/// Statistics and message status from the Dispatcher's delivery events.
async fn record_deliveries(db: &Database, events: Vec<DeliveryEvent>) -> Result<(), DbError> {
    let relevant: Vec<(bramble_proto::RefId, bool)> = events
        .into_iter()
        .filter_map(|e| match e {
            DeliveryEvent::Confirmed { ref_id, .. } => Some((ref_id, true)),
            DeliveryEvent::Expired { ref_id, .. } => Some((ref_id, false)),
            _ => None,
        })
        .collect();
    if relevant.is_empty() {
        return Ok(());
    }
    db.write(move |conn| {
        crate::db::write_transaction(conn, |conn| {
            for (ref_id, delivered) in relevant {
                let Some(message) = Message::find_by_ref_id(conn, &ref_id)? else {
                    continue;
                };
                if message.direction != Direction::ToDevice
                    || message.status != MessageStatus::Forwarded
                {
                    continue;
                }
                let (status, counter, hop) = if delivered {
                    (
                        MessageStatus::Delivered,
                        Counter::Delivered,
                        "delivery confirmed",
                    )
                } else {
                    (MessageStatus::Expired, Counter::Expired, "expired")
                };
                Message::set_status(conn, message.id, status)?;
                Message::record_hop(conn, message.id, Hop::Device, hop)?;
                Statistics::increment(conn, message.user_id, counter, 1)?;
                Statistics::increment(conn, message.user_id, Counter::Pending, -1)?;
            }
            Ok(())
        })
    })
    .await
}
