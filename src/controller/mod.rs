//! The BlackBerry Controller.
//!
//! Seed: "The BlackBerry Controller monitors the BlackBerry Enterprise
//! Server components and restarts them if they stop responding. Each
//! component reports a heartbeat every ten minutes. […] If two heartbeats
//! are missed, by default, the BlackBerry Controller restarts the
//! component." It also starts the Messaging Agent, Policy Service,
//! Synchronization Service and MailStore Service.
//!
//! Here the Controller waits until the Configuration Database answers,
//! starts every component as its own task, records each heartbeat in its
//! log (target `bramble::controller`), and restarts a component when
//! - it misses `missed_heartbeats_before_restart` heartbeats (it hangs; 0
//!   turns this off), or
//! - its task ends with an error or a panic, or returns while the server is
//!   not shutting down (it crashes).
//!
//! An administrator may also restart a component from the console
//! ([`StatusBoard::request_restart`]); it is stopped and started again
//! the same way.
//!
//! No component is restarted more than `max_restarts_per_day` times in 24
//! hours; past that it is marked failed and left stopped until the window
//! allows another restart. Every decision is logged with its reason and is
//! visible in the component's status (`/health`, the console).
//!
//! Time comes from `tokio::time`, so tests drive it with a paused clock.

pub mod component;
pub mod settings;
mod status;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{AbortHandle, Id as TaskId, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::controller::component::{Component, ComponentContext, ComponentError, Heartbeat};
use crate::db::Database;
pub use settings::ControllerSettings;
pub use status::{ComponentState, ComponentStatus, StatusBoard};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Pause before a restarted component runs again, so a component that
/// fails at once does not spin.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// How long a component has to stop after shutdown is requested.
const STOP_GRACE: Duration = Duration::from_secs(10);

struct Supervised {
    component: Arc<dyn Component>,
    task: Option<(TaskId, AbortHandle)>,
    token: CancellationToken,
    heartbeats: watch::Receiver<Option<Instant>>,
    last_beat: Instant,
    /// Restart times within the last 24 hours.
    restarts: VecDeque<Instant>,
    gave_up: bool,
}

/// Starts and watches the components.
pub struct Controller {
    settings: ControllerSettings,
    db: Database,
    components: Vec<Arc<dyn Component>>,
    status: StatusBoard,
    dispatcher: Option<crate::dispatcher::Dispatcher>,
}

impl Controller {
    pub fn new(
        settings: ControllerSettings,
        db: Database,
        components: Vec<Arc<dyn Component>>,
        status: StatusBoard,
    ) -> Controller {
        for component in &components {
            status.register(component.id());
        }
        Controller {
            settings,
            db,
            components,
            status,
            dispatcher: None,
        }
    }

    /// Components reach the Dispatcher through their context.
    pub fn with_dispatcher(mut self, dispatcher: crate::dispatcher::Dispatcher) -> Controller {
        self.dispatcher = Some(dispatcher);
        self
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(self.settings.heartbeat_interval_secs.max(1))
    }

    /// Runs until `shutdown` is cancelled, then stops every component.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ComponentError> {
        if !self.wait_for_database(&shutdown).await {
            return Ok(());
        }
        let mut tasks: JoinSet<Result<(), ComponentError>> = JoinSet::new();
        let mut supervised: Vec<Supervised> = Vec::new();
        for component in &self.components {
            let (heartbeat, heartbeats) = Heartbeat::channel(component.id(), self.status.clone());
            let mut entry = Supervised {
                component: component.clone(),
                task: None,
                token: shutdown.child_token(),
                heartbeats,
                last_beat: Instant::now(),
                restarts: VecDeque::new(),
                gave_up: false,
            };
            self.spawn(&mut tasks, &mut entry, heartbeat, &shutdown, Duration::ZERO);
            info!(target: "bramble::controller", component = %component.id(), "started");
            supervised.push(entry);
        }

        let mut check =
            tokio::time::interval((self.interval() / 4).max(Duration::from_millis(250)));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(ended) = tasks.join_next_with_id() => {
                    let (id, outcome) = match ended {
                        Ok((id, result)) => (id, match result {
                            Ok(()) => "stopped on its own".to_owned(),
                            Err(e) => format!("failed ({}): {e}", e.code()),
                        }),
                        Err(join) if join.is_panic() => (join.id(), format!("crashed: {}", panic_message(join))),
                        Err(join) => (join.id(), "was cancelled".to_owned()),
                    };
                    let Some(entry) = supervised.iter_mut().find(|s| s.task.as_ref().map(|t| t.0) == Some(id)) else {
                        continue; // a task we already replaced
                    };
                    entry.task = None;
                    error!(target: "bramble::controller", component = %entry.component.id(), "component {outcome}; restarting it");
                    self.restart(&mut tasks, entry, &shutdown, outcome);
                }
                _ = check.tick() => {
                    for entry in supervised.iter_mut() {
                        self.check(&mut tasks, entry, &shutdown);
                    }
                }
                _ = self.status.restart_requested() => {
                    for (id, reason) in self.status.take_restart_requests() {
                        let Some(entry) = supervised.iter_mut().find(|s| s.component.id() == id) else {
                            continue;
                        };
                        info!(target: "bramble::controller", component = %id, "{reason}; restarting it");
                        if let Some((_, handle)) = entry.task.take() {
                            entry.token.cancel();
                            handle.abort();
                        }
                        entry.gave_up = false;
                        self.restart(&mut tasks, entry, &shutdown, reason);
                    }
                }
            }
        }
        self.stop_all(&mut tasks, &mut supervised).await;
        Ok(())
    }

    /// The seed: the Controller starts the components once the database
    /// they depend on is reachable. Returns false if shut down first.
    async fn wait_for_database(&self, shutdown: &CancellationToken) -> bool {
        let mut delay = Duration::from_secs(1);
        loop {
            match self.db.ping().await {
                Ok(()) => return true,
                Err(e) => {
                    warn!(target: "bramble::controller", "the Configuration Database is not reachable ({e}); starting components when it is, next try in {}s", delay.as_secs());
                    for component in &self.components {
                        self.status.update(component.id(), |s| {
                            s.detail = Some(format!("waiting for the Configuration Database: {e}"));
                        });
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    fn spawn(
        &self,
        tasks: &mut JoinSet<Result<(), ComponentError>>,
        entry: &mut Supervised,
        heartbeat: Heartbeat,
        shutdown: &CancellationToken,
        delay: Duration,
    ) {
        entry.token = shutdown.child_token();
        let ctx = ComponentContext {
            db: self.db.clone(),
            heartbeat,
            heartbeat_interval: self.interval(),
            shutdown: entry.token.clone(),
            dispatcher: self.dispatcher.clone(),
        };
        let component = entry.component.clone();
        let token = entry.token.clone();
        let handle = tasks.spawn(async move {
            if !delay.is_zero() {
                tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            component.run(ctx).await
        });
        entry.task = Some((handle.id(), handle));
        entry.last_beat = Instant::now() + delay;
        self.status.update(entry.component.id(), |s| {
            s.state = if delay.is_zero() {
                ComponentState::Starting
            } else {
                ComponentState::Restarting
            };
        });
    }

    /// Records new heartbeats; restarts a component that missed too many;
    /// brings back a failed one once the 24-hour window allows it.
    fn check(
        &self,
        tasks: &mut JoinSet<Result<(), ComponentError>>,
        entry: &mut Supervised,
        shutdown: &CancellationToken,
    ) {
        let id = entry.component.id();
        if entry.heartbeats.has_changed().unwrap_or(false) {
            if let Some(at) = *entry.heartbeats.borrow_and_update() {
                entry.last_beat = at;
            }
        }
        if entry.gave_up {
            prune(&mut entry.restarts);
            if (entry.restarts.len() as u32) < self.settings.max_restarts_per_day {
                entry.gave_up = false;
                info!(target: "bramble::controller", component = %id, "restart allowed again after 24 hours");
                self.restart(
                    tasks,
                    entry,
                    shutdown,
                    "restart allowed again after the 24-hour limit".to_owned(),
                );
            }
            return;
        }
        let limit = self.settings.missed_heartbeats_before_restart;
        if limit == 0 || entry.task.is_none() {
            return;
        }
        let silent = Instant::now().saturating_duration_since(entry.last_beat);
        if silent >= self.interval() * limit {
            let reason = format!(
                "missed {limit} heartbeats (none for {}s, one expected every {}s)",
                silent.as_secs(),
                self.interval().as_secs()
            );
            warn!(target: "bramble::controller", component = %id, "{reason}; restarting it");
            if let Some((_, handle)) = entry.task.take() {
                entry.token.cancel();
                handle.abort();
            }
            self.restart(tasks, entry, shutdown, reason);
        }
    }

    fn restart(
        &self,
        tasks: &mut JoinSet<Result<(), ComponentError>>,
        entry: &mut Supervised,
        shutdown: &CancellationToken,
        reason: String,
    ) {
        let id = entry.component.id();
        if shutdown.is_cancelled() {
            return;
        }
        prune(&mut entry.restarts);
        if entry.restarts.len() as u32 >= self.settings.max_restarts_per_day {
            entry.gave_up = true;
            let detail = format!(
                "{reason}; not restarted: already restarted {} times in 24 hours (max_restarts_per_day)",
                entry.restarts.len()
            );
            error!(target: "bramble::controller", component = %id, "{detail}");
            self.status.update(id, |s| {
                s.state = ComponentState::Failed;
                s.detail = Some(detail);
            });
            return;
        }
        entry.restarts.push_back(Instant::now());
        let (heartbeat, heartbeats) = Heartbeat::channel(id, self.status.clone());
        entry.heartbeats = heartbeats;
        self.status.update(id, |s| {
            s.restarts += 1;
            s.detail = Some(format!("{reason}; restarted"));
        });
        info!(target: "bramble::controller", component = %id, restarts_today = entry.restarts.len(), "restarting");
        self.spawn(tasks, entry, heartbeat, shutdown, RESTART_DELAY);
    }

    async fn stop_all(
        &self,
        tasks: &mut JoinSet<Result<(), ComponentError>>,
        supervised: &mut [Supervised],
    ) {
        for entry in supervised.iter() {
            entry.token.cancel();
        }
        let drained = tokio::time::timeout(STOP_GRACE, async {
            while let Some(ended) = tasks.join_next_with_id().await {
                if let Err(join) = &ended {
                    if join.is_panic() {
                        warn!(target: "bramble::controller", "a component panicked while stopping");
                    }
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!(target: "bramble::controller", "components still running after {}s; stopping them forcibly", STOP_GRACE.as_secs());
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        for entry in supervised.iter() {
            info!(target: "bramble::controller", component = %entry.component.id(), "stopped");
            self.status
                .update(entry.component.id(), |s| s.state = ComponentState::Stopped);
        }
    }
}

fn prune(restarts: &mut VecDeque<Instant>) {
    let now = Instant::now();
    while restarts
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= DAY)
    {
        restarts.pop_front();
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    match join.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned()),
        Err(_) => "panic".to_owned(),
    }
}

#[cfg(test)]
mod tests;
