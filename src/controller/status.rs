//! What the Controller knows about each component, shared with the
//! Administration Service (`/health`, the console).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use time::OffsetDateTime;

use crate::controller::component::ComponentId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentState {
    Starting,
    Running,
    Restarting,
    Stopped,
    /// Restarted too often in 24 hours; left stopped.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentStatus {
    pub id: &'static str,
    pub name: &'static str,
    pub state: ComponentState,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_heartbeat: Option<OffsetDateTime>,
    pub restarts: u32,
    /// The last thing worth telling an administrator (why it restarted …).
    pub detail: Option<String>,
}

/// Shared, cheaply cloned table of component statuses. The console also
/// asks the Controller through it to restart a component
/// ([`StatusBoard::request_restart`]).
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    inner: Arc<RwLock<BTreeMap<ComponentId, ComponentStatus>>>,
    restarts: Arc<RestartRequests>,
}

/// Restarts asked for by an administrator, with why, until the Controller
/// takes them.
#[derive(Debug, Default)]
struct RestartRequests {
    pending: std::sync::Mutex<Vec<(ComponentId, String)>>,
    wake: tokio::sync::Notify,
}

impl StatusBoard {
    pub fn register(&self, id: ComponentId) {
        if let Ok(mut map) = self.inner.write() {
            map.entry(id).or_insert(ComponentStatus {
                id: id.key(),
                name: id.display_name(),
                state: ComponentState::Stopped,
                last_heartbeat: None,
                restarts: 0,
                detail: None,
            });
        }
    }

    pub fn update(&self, id: ComponentId, f: impl FnOnce(&mut ComponentStatus)) {
        if let Ok(mut map) = self.inner.write() {
            if let Some(status) = map.get_mut(&id) {
                f(status);
            }
        }
    }

    pub fn get(&self, id: ComponentId) -> Option<ComponentStatus> {
        self.inner.read().ok().and_then(|map| map.get(&id).cloned())
    }

    /// Asks the Controller to restart the component with `key` (e.g.
    /// `policy_service`); `reason` goes into its status and log. Returns
    /// the component, or None when no such component is registered.
    pub fn request_restart(&self, key: &str, reason: String) -> Option<ComponentId> {
        let id = self
            .inner
            .read()
            .ok()?
            .keys()
            .copied()
            .find(|id| id.key() == key)?;
        self.restarts.pending.lock().ok()?.push((id, reason));
        self.restarts.wake.notify_one();
        Some(id)
    }

    /// Resolves when a restart was asked for.
    pub(crate) async fn restart_requested(&self) {
        self.restarts.wake.notified().await;
    }

    /// The restarts asked for since the last call.
    pub(crate) fn take_restart_requests(&self) -> Vec<(ComponentId, String)> {
        self.restarts
            .pending
            .lock()
            .map(|mut pending| std::mem::take(&mut *pending))
            .unwrap_or_default()
    }

    /// Every component, in a stable order.
    pub fn snapshot(&self) -> Vec<ComponentStatus> {
        self.inner
            .read()
            .map(|map| map.values().cloned().collect())
            .unwrap_or_default()
    }
}
