//! `[policy]` settings: which service books devices receive, how long the
//! Policy Service waits for a device's confirmation, how old a transport
//! key may grow and how long an IT admin command may wait.

use serde::{Deserialize, Serialize};

use crate::db::models::user_service::SERVICES;

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
    /// A signed IT policy or admin command is valid this long after it is
    /// signed; a device does not act on it afterwards (seconds).
    pub signed_lifetime_secs: u64,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            services: SERVICES.iter().map(|s| (*s).to_owned()).collect(),
            confirm_timeout_secs: 300,
            browser_homepage: "about:blank".to_owned(),
            key_lifetime_days: 30,
            command_expiry_hours: 24,
            signed_lifetime_secs: 7 * 24 * 60 * 60,
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
