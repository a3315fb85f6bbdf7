//! Wireless synchronization of organizer data: the per-database settings
//! (on or off, which way, who wins a conflict), and where each user's
//! databases stand, with the records that could not be synchronized.
//! Devices are told of a changed setting at the Synchronization Service's
//! next round (`[sync] poll_secs`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::extract::{Body, Id, Params};
use super::ServerState;
use super::{paging, rfc3339, ApiError, Page};
use crate::db::models::sync::{
    conflict_from_str, database_from_str, direction_from_str, setting_json, ErrorSide, SyncCounts,
    SyncItemError, SyncSetting, SyncSettingChange, SyncState,
};
use crate::db::models::user::User;
use crate::db::{DbError, DbResult};

/// How one organizer database is synchronized.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SyncSettingView {
    /// contacts, calendar, tasks or memos.
    #[schemars(extend("enum" = ["contacts", "calendar", "tasks", "memos"]))]
    pub database: String,
    pub enabled: bool,
    /// server_to_device, device_to_server or bidirectional.
    #[schemars(extend("enum" = ["server_to_device", "device_to_server", "bidirectional"]))]
    pub direction: String,
    /// server_wins or device_wins.
    #[schemars(extend("enum" = ["server_wins", "device_wins"]))]
    pub conflict: String,
}

impl From<&SyncSetting> for SyncSettingView {
    fn from(s: &SyncSetting) -> Self {
        let json = setting_json(s);
        let text = |key: &str| json[key].as_str().unwrap_or_default().to_owned();
        SyncSettingView {
            database: text("database"),
            enabled: s.enabled,
            direction: text("direction"),
            conflict: text("conflict"),
        }
    }
}

/// How many users' databases stand where.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SyncCountsView {
    /// Users who have synchronized at least once.
    pub users: i64,
    /// Databases (one user's one database each) in sync.
    pub in_sync: i64,
    pub slow_sync: i64,
    pub error: i64,
    /// Records that could not be synchronized.
    pub item_errors: i64,
}

/// One user's database.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DatabaseStateView {
    pub database: String,
    /// slow_sync, in_sync or error.
    pub state: String,
    pub error: Option<String>,
    pub error_at: Option<String>,
    pub last_sync_at: Option<String>,
}

/// A record that could not be synchronized.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ItemErrorView {
    pub database: String,
    /// The server's href, or the record's UID for a device record.
    pub item: String,
    /// server or device.
    pub side: String,
    pub message: String,
    pub at: String,
}

/// Where one user's organizer data stands.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct UserSyncView {
    pub user_id: i64,
    pub display_name: String,
    pub email: String,
    pub databases: Vec<DatabaseStateView>,
    /// The latest records skipped (at most [`ITEM_ERRORS_SHOWN`]).
    pub item_errors: Vec<ItemErrorView>,
}

/// Skipped records shown per user.
pub const ITEM_ERRORS_SHOWN: usize = 5;

/// The Synchronization screen.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SyncOverview {
    /// The organizer server (`[sync] url`); none: wireless synchronization
    /// is off.
    pub organizer_server: Option<String>,
    /// How often the Synchronization Service looks for changes (seconds).
    pub poll_secs: u64,
    pub settings: Vec<SyncSettingView>,
    pub counts: SyncCountsView,
    pub users: Page<UserSyncView>,
}

#[derive(Debug, Deserialize)]
pub struct SyncQuery {
    pub page: Option<i64>,
    pub per_page: Option<i64>,
}

fn user_view(
    conn: &mut crate::db::Conn,
    id: crate::db::ids::UserId,
) -> DbResult<Option<UserSyncView>> {
    let Some(user) = User::find_by_id(conn, id)? else {
        return Ok(None);
    };
    let databases = SyncState::find_by_user(conn, id)?
        .into_iter()
        .map(|s| DatabaseStateView {
            database: s.database.as_str().to_owned(),
            state: s.state.as_str().to_owned(),
            error: s.error,
            error_at: s.error_at.map(rfc3339),
            last_sync_at: s.last_sync_at.map(rfc3339),
        })
        .collect();
    let item_errors = SyncItemError::find_by_user(conn, id)?
        .into_iter()
        .take(ITEM_ERRORS_SHOWN)
        .map(|e| ItemErrorView {
            database: e.database.as_str().to_owned(),
            item: e.item,
            side: match e.side {
                ErrorSide::Server => "server",
                ErrorSide::Device => "device",
            }
            .to_owned(),
            message: e.message,
            at: rfc3339(e.at),
        })
        .collect();
    Ok(Some(UserSyncView {
        user_id: id.0,
        display_name: user.display_name,
        email: user.email,
        databases,
        item_errors,
    }))
}

/// `GET /api/sync?page=&per_page=`
pub async fn overview(
    State(state): State<ServerState>,
    Params(query): Params<SyncQuery>,
) -> Result<Json<SyncOverview>, ApiError> {
    let (page, per_page, offset) = paging(query.page, query.per_page);
    let (settings, counts, users, total) = state
        .db
        .run(move |conn| {
            let settings = SyncSetting::find_all(conn)?;
            let counts = SyncCounts::count(conn)?;
            let (ids, total) = SyncCounts::users_page(conn, offset, per_page)?;
            let mut users = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(view) = user_view(conn, id)? {
                    users.push(view);
                }
            }
            Ok((settings, counts, users, total))
        })
        .await?;
    Ok(Json(SyncOverview {
        organizer_server: state.settings.sync.url.clone(),
        poll_secs: state.settings.sync.poll_secs,
        settings: settings.iter().map(SyncSettingView::from).collect(),
        counts: SyncCountsView {
            users: counts.users,
            in_sync: counts.in_sync,
            slow_sync: counts.slow_sync,
            error: counts.error,
            item_errors: counts.item_errors,
        },
        users: Page {
            items: users,
            total,
            page,
            per_page,
        },
    }))
}

/// A change to one database's setting; what is left out stays.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SyncSettingForm {
    #[serde(default)]
    pub enabled: Option<bool>,
    /// server_to_device, device_to_server or bidirectional.
    #[serde(default)]
    #[schemars(extend("enum" = ["server_to_device", "device_to_server", "bidirectional", null]))]
    pub direction: Option<String>,
    /// server_wins or device_wins.
    #[serde(default)]
    #[schemars(extend("enum" = ["server_wins", "device_wins", null]))]
    pub conflict: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", message)
}

/// `PUT /api/sync/{database}`: audited with the setting before and after.
pub async fn set(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(name): Id<String>,
    Body(form): Body<SyncSettingForm>,
) -> Result<Json<SyncSettingView>, ApiError> {
    let database = database_from_str(name.trim())
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", e.to_string()))?;
    let words = |e: DbError| invalid(e.to_string());
    let change = SyncSettingChange {
        enabled: form.enabled,
        direction: form
            .direction
            .as_deref()
            .map(|d| direction_from_str(d.trim()))
            .transpose()
            .map_err(words)?,
        conflict: form
            .conflict
            .as_deref()
            .map(|c| conflict_from_str(c.trim()))
            .transpose()
            .map_err(words)?,
    };
    if change.enabled.is_none() && change.direction.is_none() && change.conflict.is_none() {
        return Err(invalid(
            "nothing to change: give enabled, direction or conflict",
        ));
    }
    let actor = caller.actor();
    let saved = state
        .db
        .write(move |conn| SyncSetting::change(conn, &actor, database, change))
        .await?;
    Ok(Json(SyncSettingView::from(&saved)))
}
