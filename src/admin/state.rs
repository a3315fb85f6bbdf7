//! What the console's handlers share: the Configuration Database, the
//! Controller's status board, the Dispatcher, and the part of the settings
//! the Administration Service reads. The server builds it at start
//! ([`crate::server`]); the console never reads the settings file itself.

use std::path::PathBuf;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::controller::StatusBoard;
use crate::db::Database;
use crate::dispatcher::Dispatcher;
use crate::mailstore::DirectorySettings;
use crate::messaging_agent::MailSettings;
use crate::sync::SyncSettings;

use super::setup::SetupCode;
use super::throttle::SignIns;
use super::AdminSettings;

/// Shared by the console's handlers of one running server.
#[derive(Clone)]
pub struct ServerState {
    pub settings: Arc<ConsoleSettings>,
    pub db: Database,
    pub status: StatusBoard,
    pub started_at: OffsetDateTime,
    pub dispatcher: Dispatcher,
    /// Sign-in throttling, bounded password checks, failures to audit.
    pub sign_ins: Arc<SignIns>,
    /// The first run's setup code, while no administrator exists.
    pub setup: Arc<SetupCode>,
}

/// The settings the Administration Service reads, taken from the server's
/// settings when it starts.
#[derive(Debug, Clone, Default)]
pub struct ConsoleSettings {
    /// This server instance's name, shown in the console.
    pub server_name: String,
    /// The data folder (a generated HTTPS certificate lives in `tls/`).
    pub data_dir: PathBuf,
    /// `[admin]`: where the console listens, sessions, HTTPS, mail sender.
    pub admin: AdminSettings,
    /// `[mail]`: the SMTP server activation passwords are mailed through.
    pub mail: MailSettings,
    /// `[[directories]]`: shown and synchronized on the Directories page.
    pub directories: Vec<DirectorySettings>,
    /// `[sync]`: the organizer server shown on the Synchronization page.
    pub sync: SyncSettings,
    /// The folder the built console is served from, if one was found.
    pub ui_dir: Option<PathBuf>,
}
