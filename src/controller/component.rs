//! What every component supervised by the Controller looks like.
//!
//! A component is a long-running task: [`Component::run`] is called with a
//! [`ComponentContext`] and returns only when asked to stop (its shutdown
//! token is cancelled) or when it fails. While it runs it calls
//! [`Heartbeat::beat`] at least once per heartbeat interval; the Controller
//! restarts a component whose heartbeats stop (it hangs) or whose task ends
//! with an error or a panic (it crashes).

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::controller::{ComponentState, StatusBoard};
use crate::db::{Database, DbError};

/// Stable identifier of a component, as used in logs, `/health` and the UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentId {
    MessagingAgent,
    PolicyService,
    SynchronizationService,
    MailStoreService,
    /// Used by tests and by later components not listed here yet.
    Custom(&'static str),
}

impl ComponentId {
    /// The id used on the wire (`messaging_agent`, …).
    pub fn key(&self) -> &'static str {
        match self {
            ComponentId::MessagingAgent => "messaging_agent",
            ComponentId::PolicyService => "policy_service",
            ComponentId::SynchronizationService => "synchronization_service",
            ComponentId::MailStoreService => "mailstore_service",
            ComponentId::Custom(key) => key,
        }
    }

    /// The seed's name for the component, for people.
    pub fn display_name(&self) -> &'static str {
        match self {
            ComponentId::MessagingAgent => "Messaging Agent",
            ComponentId::PolicyService => "Policy Service",
            ComponentId::SynchronizationService => "Synchronization Service",
            ComponentId::MailStoreService => "MailStore Service",
            ComponentId::Custom(key) => key,
        }
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
    }
}

/// Why a component's run ended badly; the Controller logs it with its code
/// and restarts the component.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The Configuration Database stopped answering.
    #[error("the Configuration Database does not answer: {0}")]
    DatabaseUnreachable(#[source] DbError),
    /// A failure of the component's own that it cannot recover from by
    /// itself, with a stable code and words for an administrator.
    #[error("{message}")]
    Failed { code: &'static str, message: String },
}

impl ComponentError {
    /// A failure of the component's own.
    pub fn failed(code: &'static str, message: impl Into<String>) -> ComponentError {
        ComponentError::Failed {
            code,
            message: message.into(),
        }
    }

    /// Stable code for logs and the console.
    pub fn code(&self) -> &'static str {
        match self {
            ComponentError::DatabaseUnreachable(_) => "DB_UNREACHABLE",
            ComponentError::Failed { code, .. } => code,
        }
    }
}

/// A component the Controller starts and watches.
pub trait Component: Send + Sync + 'static {
    fn id(&self) -> ComponentId;

    /// Runs until `ctx.shutdown` is cancelled (then returns `Ok`) or until it
    /// fails. Called again after every restart, with a fresh context.
    fn run(&self, ctx: ComponentContext) -> BoxFuture<'static, Result<(), ComponentError>>;
}

/// What a component gets each time it is started.
#[derive(Clone)]
pub struct ComponentContext {
    pub db: Database,
    pub heartbeat: Heartbeat,
    /// How often the Controller expects a heartbeat.
    pub heartbeat_interval: std::time::Duration,
    pub shutdown: CancellationToken,
    /// The Dispatcher, for components that exchange data with devices
    /// (None where a caller runs a component without one, e.g. in tests).
    pub dispatcher: Option<crate::dispatcher::Dispatcher>,
}

/// The sending side of a component's heartbeat.
#[derive(Clone)]
pub struct Heartbeat {
    id: ComponentId,
    tx: Arc<watch::Sender<Option<Instant>>>,
    board: StatusBoard,
}

impl Heartbeat {
    /// A heartbeat channel for `id`; the receiver goes to the Controller,
    /// and each beat shows at once on the status board.
    pub fn channel(
        id: ComponentId,
        board: StatusBoard,
    ) -> (Heartbeat, watch::Receiver<Option<Instant>>) {
        let (tx, rx) = watch::channel(None);
        (
            Heartbeat {
                id,
                tx: Arc::new(tx),
                board,
            },
            rx,
        )
    }

    /// "I am alive and doing my work." Recorded in the Controller's log.
    pub fn beat(&self) {
        self.tx.send_replace(Some(Instant::now()));
        tracing::info!(target: "bramble::controller", component = %self.id, "heartbeat");
        self.board.update(self.id, |s| {
            s.state = ComponentState::Running;
            s.last_heartbeat = Some(time::OffsetDateTime::now_utc());
        });
    }
}

impl Heartbeat {
    /// A line about the component's work for `/health` and the console
    /// (e.g. "3 of 120 mailboxes unreachable"); None clears it.
    pub fn set_detail(&self, detail: Option<String>) {
        self.board.update(self.id, |s| s.detail = detail);
    }
}

/// The loop most components start from: beat, do one round of work, wait
/// for the next interval or for shutdown. `round` failing ends the run with
/// that error, which the Controller treats as a crash.
pub async fn run_rounds<F, Fut>(ctx: ComponentContext, mut round: F) -> Result<(), ComponentError>
where
    F: FnMut(ComponentContext) -> Fut + Send,
    Fut: std::future::Future<Output = Result<(), ComponentError>> + Send,
{
    let mut ticker = tokio::time::interval(ctx.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {
                round(ctx.clone()).await?;
                ctx.heartbeat.beat();
            }
        }
    }
}

/// The round every component does before its own work exists or between
/// its own rounds: confirm the Configuration Database answers. A component
/// whose database is gone stops beating, and the Controller notices.
pub async fn standby(ctx: ComponentContext) -> Result<(), ComponentError> {
    run_rounds(ctx, |ctx| async move {
        ctx.db
            .ping()
            .await
            .map_err(ComponentError::DatabaseUnreachable)
    })
    .await
}
