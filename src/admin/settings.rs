//! `[admin]` settings: where the console listens, its sessions and HTTPS.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The Administration Service (console API and web UI).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AdminSettings {
    /// Address the console API listens on. Loopback by default.
    pub listen: SocketAddr,
    /// Folder holding the built console (`ui/dist`). Unset: the folder next
    /// to the executable (`ui/`), then the source tree's `ui/dist`.
    pub ui_dir: Option<PathBuf>,
    /// A console session unused for this many minutes has expired.
    pub session_idle_minutes: u32,
    /// No console session lasts longer than this many hours after sign-in.
    pub session_max_hours: u32,
    /// Serve the console over HTTPS. Unset: only when `listen` is not a
    /// loopback address.
    pub tls: Option<bool>,
    /// PEM certificate (chain) for HTTPS. Unset: a self-signed one made on
    /// first start in the data folder (`tls/admin-cert.pem`).
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key of `tls_certificate`.
    pub tls_key: Option<PathBuf>,
    /// Sender of the mail the console sends to users (their activation
    /// password), through the Messaging Agent's `[mail] smtp` server.
    /// Unset: `bramble@` the user's mail domain.
    pub mail_from: Option<String>,
    /// Names (besides IP addresses and `localhost`) this console answers
    /// to in the `Host` header, e.g. `besadmin.example.com`; requests for
    /// any other name are refused, so that a web page cannot reach the
    /// console by DNS rebinding. The instance's `server_name` is always
    /// one of them.
    pub server_names: Vec<String>,
    /// Passwords checked at once at sign-in (argon2 uses about 19 MiB and
    /// one core for tens of milliseconds each).
    pub sign_in_checks: u32,
    /// Sign-ins waiting for a check beyond `sign_in_checks`; more are
    /// answered "busy, try again".
    pub sign_in_queue: u32,
    /// Failed sign-ins are written to the audit log once per login and
    /// address per this many seconds, with their count.
    pub sign_in_audit_secs: u64,
    /// A secret every request must carry in the `X-Bramble-Launch` header.
    /// Set by the desktop shell for each launch (never read from the
    /// settings file), so that other local users cannot use the console
    /// the desktop serves on loopback.
    #[serde(skip)]
    pub launch_secret: Option<String>,
    /// A request's headers must arrive whole within this many seconds
    /// (on a new connection, or one kept open after an answer); otherwise
    /// the connection is closed.
    pub header_read_timeout_secs: u64,
    /// A connection on which nothing is sent or received for this many
    /// seconds is closed (longer than the event stream's 15-second
    /// keep-alive).
    pub idle_timeout_secs: u64,
}

impl AdminSettings {
    /// Whether the Administration Service serves HTTPS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.unwrap_or(!self.listen.ip().is_loopback())
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3180)),
            ui_dir: None,
            session_idle_minutes: 30,
            session_max_hours: 12,
            tls: None,
            tls_certificate: None,
            tls_key: None,
            mail_from: None,
            server_names: Vec::new(),
            sign_in_checks: 2,
            sign_in_queue: 64,
            sign_in_audit_secs: 60,
            launch_secret: None,
            header_read_timeout_secs: 30,
            idle_timeout_secs: 120,
        }
    }
}
