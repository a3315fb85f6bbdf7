//! `[database]` settings: the SQLite file and its connection pool.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The Configuration Database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// SQLite file. Unset: `bramble.db` in the data folder.
    pub path: Option<PathBuf>,
    /// Connections kept open in the pool.
    pub pool_size: u32,
    /// How long a writer waits for a lock before giving up, in milliseconds.
    pub busy_timeout_ms: u32,
    /// How often the running server verifies the audit chain, in hours
    /// (it also does when it starts); 0: only at start-up.
    pub audit_verify_hours: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            path: None,
            pool_size: 8,
            busy_timeout_ms: 5_000,
            audit_verify_hours: 24,
        }
    }
}
