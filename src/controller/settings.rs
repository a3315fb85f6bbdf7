//! `[controller]` settings: heartbeats and restarts.

use serde::{Deserialize, Serialize};

/// The BlackBerry Controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ControllerSettings {
    /// Every component reports a heartbeat this often (seed: ten minutes).
    pub heartbeat_interval_secs: u64,
    /// Restart a component after this many missed heartbeats; 0 = never.
    pub missed_heartbeats_before_restart: u32,
    /// At most this many restarts of one component in 24 hours.
    pub max_restarts_per_day: u32,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval_secs: 600,
            missed_heartbeats_before_restart: 2,
            max_restarts_per_day: 10,
        }
    }
}
