//! The BlackBerry MailStore Service.
//!
//! Seed: the MailStore Service "reads data from the organization's
//! directory and copies the data to the BlackBerry Configuration Database".
//!
//! Layout:
//! - [`settings`]: `[[directories]]` — URL, bind DN, base DN, filters and the
//!   attribute mapping presets (OpenLDAP, Active Directory).
//! - [`ldap`]: reading the directory with `ldap3` — paged searches
//!   (RFC 2696) so a directory larger than the server's size limit is read
//!   whole, and the address lookup devices use.
//! - [`sync`]: one run — read everything first, then write in one
//!   transaction; users linked to their entry by its stable id (entryUUID,
//!   objectGUID), so a rename or move updates the same user; incremental
//!   after the first full run (by `entryCSN`, `uSNChanged` on Active
//!   Directory, or `modifyTimestamp`); users whose entry is
//!   gone or disabled become `removed_in_directory`, never deleted.
//! - [`lookup`]: address lookup for devices (the ALP service book): the
//!   `Lookup` envelopes from devices, answered from every directory at
//!   once (or from Bramble's own users when there is none), at most 20
//!   people, only for users with the ALP service on.
//!
//! [`MailStore`] is the component the Controller runs: it syncs each
//! directory on its interval and beats after each run and between runs,
//! and (with a Dispatcher) answers devices' address lookups alongside.

pub mod ldap;
pub mod lookup;
pub mod settings;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::controller::component::{
    standby, Component, ComponentContext, ComponentError, ComponentId,
};
use crate::db::models::user_service::SERVICES;
use crate::db::DbError;

pub use ldap::{lookup, search_addresses, AddressEntry, AddressesFound, LOOKUP_LIMIT};
pub use lookup::{find_addresses, LookupService};
pub use settings::{DirectoryKind, DirectorySettings};
pub use sync::{sync, SyncReport};

/// Why reading a directory failed. Each message names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot reach directory `{directory}` at {url} ({reason}); check url of directory {directory} and that the server is running")]
    Unreachable {
        directory: String,
        url: String,
        reason: String,
    },
    #[error("TLS with directory `{directory}` at {url} failed ({reason}); check url, starttls and tls_ca_file of directory {directory}")]
    TlsFailed {
        directory: String,
        url: String,
        reason: String,
    },
    #[error("the url `{url}` of directory {directory} is not an LDAP URL ({reason}); check url (ldap://host:389 or ldaps://host:636)")]
    BadUrl {
        directory: String,
        url: String,
        reason: String,
    },
    #[error("directory `{directory}` refused the bind as `{bind_dn}` ({reason}); check bind_dn and bind_password of directory {directory}")]
    BindFailed {
        directory: String,
        bind_dn: String,
        reason: String,
    },
    #[error("directory `{directory}` rejected the filter `{filter}`; check {setting} of directory {directory} (LDAP filter syntax, e.g. (objectClass=inetOrgPerson))")]
    BadFilter {
        directory: String,
        setting: &'static str,
        filter: String,
    },
    #[error(
        "directory `{directory}` has no entry `{base_dn}`; check base_dn of directory {directory}"
    )]
    BadBaseDn { directory: String, base_dn: String },
    #[error("directory `{directory}` stopped returning entries at its size limit although the search was paged; raise the limit for bind_dn of directory {directory} (OpenLDAP: `limits dn.exact=\"…\" size.prtotal=unlimited`; Active Directory: MaxPageSize) or lower page_size; nothing was changed")]
    SizeLimit { directory: String },
    #[error("directory `{directory}` has more than {limit} entries matching {setting} (max_entries of directory {directory}); the read stopped there and nothing was changed. Narrow {setting} or raise max_entries")]
    TooManyEntries {
        directory: String,
        setting: &'static str,
        limit: usize,
    },
    #[error("searching directory `{directory}` failed ({reason}); nothing was changed")]
    SearchFailed { directory: String, reason: String },
    #[error(
        "no directory named `{0}` in the settings; add a [[directories]] entry with name = \"{0}\""
    )]
    Unknown(String),
    #[error("{0}")]
    Db(#[from] DbError),
}

impl DirectoryError {
    /// Stable code for administrators and the console.
    pub fn code(&self) -> &'static str {
        match self {
            DirectoryError::Unreachable { .. } => "DIRECTORY_UNREACHABLE",
            DirectoryError::BadUrl { .. } => "DIRECTORY_BAD_URL",
            DirectoryError::TlsFailed { .. } => "DIRECTORY_TLS_FAILED",
            DirectoryError::BindFailed { .. } => "DIRECTORY_BIND_FAILED",
            DirectoryError::BadFilter { .. } => "DIRECTORY_BAD_FILTER",
            DirectoryError::BadBaseDn { .. } => "DIRECTORY_BAD_BASE_DN",
            DirectoryError::SizeLimit { .. } => "DIRECTORY_SIZE_LIMIT",
            DirectoryError::TooManyEntries { .. } => "DIRECTORY_TOO_MANY_ENTRIES",
            DirectoryError::SearchFailed { .. } => "DIRECTORY_SEARCH_FAILED",
            DirectoryError::Unknown(_) => "DIRECTORY_UNKNOWN",
            DirectoryError::Db(e) => e.code(),
        }
    }
}

/// Where a running sync is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Idle,
    Connecting,
    ReadingUsers,
    ReadingGroups,
    Writing,
    Done,
    Failed,
}

/// Progress of a running sync, published on a `watch` channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Progress {
    pub phase: Phase,
    /// Entries read from the directory so far.
    pub entries_read: u64,
}

/// The MailStore Service with its directories: syncs each on its
/// `sync_interval_secs`, beating after each run and at least once per
/// heartbeat interval in between. A failed sync is logged and recorded, not
/// a crash: the directory is retried on the next interval.
#[derive(Debug)]
pub struct MailStore {
    directories: Arc<Vec<DirectorySettings>>,
    progress: watch::Sender<Progress>,
    /// The services the server enables: which users have address lookup
    /// (the ALP service).
    services: Arc<Vec<String>>,
}

impl MailStore {
    pub fn new(directories: Vec<DirectorySettings>) -> MailStore {
        MailStore {
            directories: Arc::new(directories),
            progress: watch::channel(Progress::default()).0,
            services: Arc::new(SERVICES.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    /// The services the server enables (`[policy] services`), which say
    /// who may look addresses up; every service unless told.
    pub fn with_services(mut self, services: Vec<String>) -> MailStore {
        self.services = Arc::new(services);
        self
    }

    /// Progress of the sync running now (or the last one).
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }
}

impl Component for MailStore {
    fn id(&self) -> ComponentId {
        ComponentId::MailStoreService
    }

    fn run(&self, ctx: ComponentContext) -> BoxFuture<'static, Result<(), ComponentError>> {
        let directories = self.directories.clone();
        let progress = self.progress.clone();
        let services = self.services.clone();
        async move {
            // Address lookups are answered by their own task, whether or
            // not there are directories to sync; it ends with the component.
            let lookups = ctx.dispatcher.clone().map(|dispatcher| {
                let inbound = dispatcher.register(bramble_proto::ContentType::Lookup, 256);
                let service = LookupService {
                    directories: directories.clone(),
                    services,
                    db: ctx.db.clone(),
                };
                tokio::spawn(service.serve(dispatcher, inbound, ctx.shutdown.child_token()))
            });
            let result = sync_directories(ctx, directories, progress).await;
            if let Some(task) = lookups {
                task.abort();
            }
            result
        }
        .boxed()
    }
}

/// Syncs each directory on its interval until shutdown (standby without
/// directories).
async fn sync_directories(
    ctx: ComponentContext,
    directories: Arc<Vec<DirectorySettings>>,
    progress: watch::Sender<Progress>,
) -> Result<(), ComponentError> {
    if directories.is_empty() {
        return standby(ctx).await;
    }
    // Alive from the start, even before a long first sync ends.
    ctx.heartbeat.beat();
    let mut due: Vec<Instant> = vec![Instant::now(); directories.len()];
    // A full read at start-up and then every `full_sync_interval_secs`:
    // incremental reads do not see removals.
    let mut full_due: Vec<Instant> = vec![Instant::now(); directories.len()];
    loop {
        for ((settings, due_at), full_at) in directories
            .iter()
            .zip(due.iter_mut())
            .zip(full_due.iter_mut())
        {
            if *due_at > Instant::now() {
                continue;
            }
            let full = *full_at <= Instant::now();
            if full {
                *full_at =
                    Instant::now() + Duration::from_secs(settings.full_sync_interval_secs.max(1));
            }
            // A long run (a large first sync) still beats each
            // interval; shutdown does not wait for it (its write is
            // one transaction, so it lands whole or not at all).
            let run = sync::sync(&ctx.db, settings, full, &progress);
            tokio::pin!(run);
            let mut beat = tokio::time::interval_at(
                Instant::now() + ctx.heartbeat_interval,
                ctx.heartbeat_interval,
            );
            loop {
                tokio::select! {
                    // Errors are logged and recorded by the run itself.
                    _ = &mut run => break,
                    _ = beat.tick() => ctx.heartbeat.beat(),
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                }
            }
            *due_at = Instant::now() + Duration::from_secs(settings.sync_interval_secs.max(1));
            ctx.heartbeat.beat();
        }
        let next = due
            .iter()
            .min()
            .copied()
            .unwrap_or_else(Instant::now)
            .min(Instant::now() + ctx.heartbeat_interval);
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(next) => {}
        }
        ctx.db
            .ping()
            .await
            .map_err(ComponentError::DatabaseUnreachable)?;
        ctx.heartbeat.beat();
    }
}

/// The settings entry named `name`, or the only one when `name` is None.
pub fn find_settings<'a>(
    directories: &'a [DirectorySettings],
    name: Option<&str>,
) -> Result<&'a DirectorySettings, DirectoryError> {
    match name {
        Some(name) => directories
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| DirectoryError::Unknown(name.to_owned())),
        None => directories
            .first()
            .ok_or_else(|| DirectoryError::Unknown("directory".to_owned())),
    }
}
