//! The organization's directories in the console: what is configured
//! (`[[directories]]`, without the bind password), the recent sync runs,
//! and a sync started on demand ("Sync now", "Full sync") whose progress
//! the console follows while it runs.
//!
//! A sync started here runs the MailStore Service's own
//! [`sync`](crate::mailstore::sync) as a task of the Administration
//! Service; one at a time per directory. Its progress, and how it ended
//! (an error in words, with its code), are kept in [`DirectorySyncs`] for
//! the console to poll; the run itself is recorded in the database like
//! every scheduled one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::auth::Caller;
use super::extract::{Body, Id};
use super::ServerState;
use super::{audited, rfc3339, ApiError};
use crate::db::models::directory::{Directory, SyncRun};
use crate::mailstore::{self, DirectoryKind, DirectorySettings, Phase, Progress};

/// How many recent runs a directory shows.
const RECENT_RUNS: i64 = 10;

/// Syncs started from the console, by directory name.
#[derive(Debug, Default)]
pub struct DirectorySyncs {
    syncs: Mutex<HashMap<String, ConsoleSync>>,
}

#[derive(Debug, Clone)]
struct ConsoleSync {
    full: bool,
    started_at: OffsetDateTime,
    started_by: String,
    progress: watch::Receiver<Progress>,
    running: bool,
    error: Option<ApiError>,
}

impl DirectorySyncs {
    fn get(&self, name: &str) -> Option<ConsoleSync> {
        self.syncs
            .lock()
            .map(|syncs| syncs.get(name).cloned())
            .unwrap_or(None)
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut ConsoleSync)) {
        if let Ok(mut syncs) = self.syncs.lock() {
            if let Some(sync) = syncs.get_mut(name) {
                f(sync);
            }
        }
    }

    /// Records a new sync unless one is running; false if one is.
    fn begin(&self, name: &str, sync: ConsoleSync) -> bool {
        let Ok(mut syncs) = self.syncs.lock() else {
            return false;
        };
        if syncs.get(name).is_some_and(|s| s.running) {
            return false;
        }
        syncs.insert(name.to_owned(), sync);
        true
    }
}

/// A failure as the console shows it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ErrorView {
    pub code: String,
    pub message: String,
}

/// The sync started from the console, if any: where it is or how it ended.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SyncState {
    pub running: bool,
    pub full: bool,
    pub started_at: String,
    pub started_by: String,
    /// `idle`, `connecting`, `reading_users`, `reading_groups`, `writing`,
    /// `done` or `failed`.
    pub phase: String,
    /// Entries read from the directory so far.
    pub entries_read: u64,
    /// Rough share done, 0–100, from the phase (a directory does not say
    /// in advance how many entries it holds).
    pub percent: u8,
    /// Why it failed, in words.
    pub error: Option<ErrorView>,
}

/// One recorded sync run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RunView {
    pub id: i64,
    /// `full` or `incremental`.
    pub kind: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `running`, `succeeded` or `failed`.
    pub outcome: String,
    pub entries_read: i64,
    pub created: i64,
    pub updated: i64,
    pub removed: i64,
    pub errors: i64,
    /// Why it failed, or the entries it skipped.
    pub message: String,
}

/// A configured directory.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DirectoryView {
    pub name: String,
    /// `openldap` or `active_directory`.
    pub kind: &'static str,
    pub url: String,
    pub starttls: bool,
    pub base_dn: String,
    pub bind_dn: String,
    pub sync_interval_secs: u64,
    pub full_sync_interval_secs: u64,
    /// The sync started from the console, if any.
    pub sync: Option<SyncState>,
    /// The newest runs first, scheduled or started here.
    pub runs: Vec<RunView>,
}

/// Starts a sync.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SyncForm {
    /// Read every entry (noticing removals) instead of only changed ones.
    #[serde(default)]
    pub full: bool,
}

fn percent(progress: &Progress) -> u8 {
    match progress.phase {
        Phase::Idle => 0,
        Phase::Connecting => 5,
        Phase::ReadingUsers => 10 + (progress.entries_read.min(600) / 10) as u8,
        Phase::ReadingGroups => 75,
        Phase::Writing => 90,
        Phase::Done | Phase::Failed => 100,
    }
}

fn phase_name(phase: Phase) -> String {
    serde_json::to_value(phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn sync_state(sync: &ConsoleSync) -> SyncState {
    let mut progress = *sync.progress.borrow();
    if !sync.running && sync.error.is_some() {
        progress.phase = Phase::Failed;
    }
    SyncState {
        running: sync.running,
        full: sync.full,
        started_at: rfc3339(time::PrimitiveDateTime::new(
            sync.started_at.date(),
            sync.started_at.time(),
        )),
        started_by: sync.started_by.clone(),
        phase: phase_name(progress.phase),
        entries_read: progress.entries_read,
        percent: percent(&progress),
        error: sync.error.as_ref().map(|e| ErrorView {
            code: e.code.to_owned(),
            message: e.message.clone(),
        }),
    }
}

fn kind(settings: &DirectorySettings) -> &'static str {
    match settings.kind {
        DirectoryKind::Openldap => "openldap",
        DirectoryKind::ActiveDirectory => "active_directory",
    }
}

async fn view(
    state: &ServerState,
    syncs: &DirectorySyncs,
    settings: &DirectorySettings,
) -> Result<DirectoryView, ApiError> {
    // The console's sync first: once it says "not running", its run's
    // record is final, so the runs read next agree with it.
    let sync = syncs.get(&settings.name).as_ref().map(sync_state);
    let name = settings.name.clone();
    let runs = state
        .db
        .run(move |conn| match Directory::find_by_name(conn, &name)? {
            Some(directory) => SyncRun::find_recent(conn, directory.id, RECENT_RUNS),
            None => Ok(Vec::new()),
        })
        .await?;
    Ok(DirectoryView {
        name: settings.name.clone(),
        kind: kind(settings),
        url: settings.url.clone(),
        starttls: settings.starttls,
        base_dn: settings.base_dn.clone(),
        bind_dn: settings.bind_dn.clone(),
        sync_interval_secs: settings.sync_interval_secs,
        full_sync_interval_secs: settings.full_sync_interval_secs,
        sync,
        runs: runs
            .into_iter()
            .map(|r| RunView {
                id: r.id,
                kind: r.kind,
                started_at: rfc3339(r.started_at),
                finished_at: r.finished_at.map(rfc3339),
                outcome: r.outcome,
                entries_read: r.entries_read,
                created: r.created,
                updated: r.updated,
                removed: r.removed,
                errors: r.errors,
                message: r.message,
            })
            .collect(),
    })
}

fn settings_of<'a>(state: &'a ServerState, name: &str) -> Result<&'a DirectorySettings, ApiError> {
    mailstore::find_settings(&state.settings.directories, Some(name))
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.code(), e.to_string()))
}

/// `GET /api/directories`
pub async fn list(
    State(state): State<ServerState>,
    Extension(syncs): Extension<Arc<DirectorySyncs>>,
) -> Result<Json<Vec<DirectoryView>>, ApiError> {
    let mut out = Vec::new();
    for settings in &state.settings.directories {
        out.push(view(&state, &syncs, settings).await?);
    }
    Ok(Json(out))
}

/// `GET /api/directories/{name}`: polled by the console while a sync runs.
pub async fn get(
    State(state): State<ServerState>,
    Extension(syncs): Extension<Arc<DirectorySyncs>>,
    Id(name): Id<String>,
) -> Result<Json<DirectoryView>, ApiError> {
    let settings = settings_of(&state, &name)?;
    Ok(Json(view(&state, &syncs, settings).await?))
}

/// `POST /api/directories/{name}/sync`: starts a sync and answers at once
/// (202); `GET /api/directories/{name}` shows its progress.
pub async fn start_sync(
    State(state): State<ServerState>,
    Extension(syncs): Extension<Arc<DirectorySyncs>>,
    Extension(caller): Extension<Caller>,
    Id(name): Id<String>,
    Body(form): Body<SyncForm>,
) -> Result<(StatusCode, Json<DirectoryView>), ApiError> {
    let settings = settings_of(&state, &name)?.clone();
    let (progress, watching) = watch::channel(Progress::default());
    let started = syncs.begin(
        &name,
        ConsoleSync {
            full: form.full,
            started_at: OffsetDateTime::now_utc(),
            started_by: caller.actor(),
            progress: watching,
            running: true,
            error: None,
        },
    );
    if !started {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "DIRECTORY_SYNC_RUNNING",
            format!("a sync of directory {name} is already running; wait for it to finish"),
        ));
    }
    let full = form.full;
    let target = format!("directory/{name}");
    let recorded = audited::<_, crate::db::DbError, _>(&state, caller.actor(), move |_| {
        Ok((
            (),
            ("directory.sync", target, None, Some(json!({"full": full}))),
        ))
    })
    .await;
    if let Err(e) = recorded {
        syncs.update(&name, |s| s.running = false);
        return Err(e.into());
    }
    let db = state.db.clone();
    let task_syncs = syncs.clone();
    tokio::spawn(async move {
        let outcome = mailstore::sync(&db, &settings, full, &progress).await;
        task_syncs.update(&settings.name, |s| {
            s.running = false;
            if let Err(e) = outcome {
                progress.send_modify(|p| p.phase = Phase::Failed);
                s.error = Some(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    e.code(),
                    e.to_string(),
                ));
            }
        });
    });
    let settings = settings_of(&state, &name)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(view(&state, &syncs, settings).await?),
    ))
}
