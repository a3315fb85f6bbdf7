//! What support staff look at: a user's devices, a device found by PIN with
//! its diagnostics, its user's statistics and recent messages, and the trace
//! of one message by RefID (each hop with its time). Read-only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::extract::{Id, Params};
use super::users::UserView;
use super::ServerState;
use super::{db_failure, rfc3339, ApiError, ChangeError};
use crate::db::ids::{DeviceId, UserId};
use crate::db::models::admin_command::{AdminCommand, CommandKind, CommandTarget};
use crate::db::models::device::{parse_pin, Device};
use crate::db::models::device_key::DeviceKey;
use crate::db::models::it_policy::ItPolicy;
use crate::db::models::mailbox::{MailboxState, WatchState};
use crate::db::models::message::{parse_ref_id, Message};
use crate::db::models::statistics::Statistics;
use crate::db::models::user::User;
use crate::db::{DbError, DbResult};

/// Messages shown on a device's page.
const RECENT_MESSAGES: i64 = 20;
/// Diagnostics reports shown on a device's page.
const RECENT_DIAGNOSTICS: i64 = 5;

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DeviceView {
    pub id: i64,
    pub pin: String,
    pub user_id: Option<i64>,
    pub model: String,
    pub os_version: String,
    pub carrier: String,
    /// It holds a transport key: activated, it can be sent policies and
    /// service books.
    pub activated: bool,
    pub applied_policy_id: Option<i64>,
    /// The IT policy the device last confirmed: its name, or `Default`
    /// when no policy applies to the user (the catalog's default values).
    pub applied_policy_name: Option<String>,
    pub policy_applied_at: Option<String>,
    pub last_contact_at: Option<String>,
    pub created_at: String,
}

impl From<&Device> for DeviceView {
    fn from(d: &Device) -> Self {
        DeviceView {
            id: d.id.0,
            pin: d.pin.to_string(),
            user_id: d.user_id.map(|u| u.0),
            model: d.model.clone(),
            os_version: d.os_version.clone(),
            carrier: d.carrier.clone(),
            activated: false,
            applied_policy_id: d.applied_policy_id.map(|p| p.0),
            applied_policy_name: d.policy_applied_at.map(|_| "Default".to_owned()),
            policy_applied_at: d.policy_applied_at.map(rfc3339),
            last_contact_at: d.last_contact_at.map(rfc3339),
            created_at: rfc3339(d.created_at),
        }
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct MessageView {
    pub ref_id: String,
    pub direction: &'static str,
    pub status: &'static str,
    pub subject: String,
    pub user_id: Option<i64>,
    pub device_id: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Message> for MessageView {
    fn from(m: &Message) -> Self {
        MessageView {
            ref_id: m.ref_id.to_string(),
            direction: m.direction.as_str(),
            status: m.status.as_str(),
            subject: m.subject.clone(),
            user_id: m.user_id.map(|u| u.0),
            device_id: m.device_id.map(|d| d.0),
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
        }
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Diagnostics {
    pub reported_at: String,
    pub report: serde_json::Value,
}

/// Message counters, a user's or the server's.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct StatisticsView {
    pub forwarded: i64,
    pub filtered: i64,
    pub pending: i64,
    pub delivered: i64,
    pub expired: i64,
    pub failed: i64,
    pub sent: i64,
    pub updated_at: Option<String>,
}

impl From<&Statistics> for StatisticsView {
    fn from(s: &Statistics) -> Self {
        StatisticsView {
            forwarded: s.forwarded,
            filtered: s.filtered,
            pending: s.pending,
            delivered: s.delivered,
            expired: s.expired,
            failed: s.failed,
            sent: s.sent,
            updated_at: s.updated_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: DeviceView,
    pub user: Option<UserView>,
    /// The user's message statistics (seed: "individual statistics").
    pub statistics: Option<StatisticsView>,
    /// The latest reports, newest first.
    pub diagnostics: Vec<Diagnostics>,
    /// The user's latest messages, newest first.
    pub recent_messages: Vec<MessageView>,
    /// How many of the user's messages wait for the device.
    pub pending_messages: i64,
    /// Whether the Messaging Agent reaches the user's mailbox, and if not why.
    pub mailbox: Option<MailboxView>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct MailboxView {
    /// `starting`, `watching` or `error`.
    pub state: &'static str,
    pub error: Option<String>,
    pub error_at: Option<String>,
    pub last_uid: u32,
}

impl From<&MailboxState> for MailboxView {
    fn from(m: &MailboxState) -> Self {
        MailboxView {
            state: m.state.as_str(),
            error: (m.state == WatchState::Error)
                .then(|| m.error.clone())
                .flatten(),
            error_at: m.error_at.map(rfc3339),
            last_uid: m.last_uid,
        }
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct HopView {
    pub hop: &'static str,
    pub at: String,
    pub detail: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct MessageTrace {
    #[serde(flatten)]
    pub message: MessageView,
    /// Each component the message passed, in order.
    pub hops: Vec<HopView>,
}

/// Device views with the name of the IT policy each applied.
pub(crate) fn views(conn: &mut crate::db::Conn, devices: &[Device]) -> DbResult<Vec<DeviceView>> {
    devices
        .iter()
        .map(|d| {
            let mut view = DeviceView::from(d);
            view.activated = !DeviceKey::find_all_for_device(conn, d.id)?.is_empty();
            if let Some(policy) = d.applied_policy_id {
                view.applied_policy_name = ItPolicy::find_by_id(conn, policy)?.map(|p| p.name);
            }
            Ok(view)
        })
        .collect()
}

fn not_found() -> DbError {
    DbError::Query(diesel::result::Error::NotFound)
}

/// `GET /api/users/{id}/devices`
pub async fn of_user(
    State(state): State<ServerState>,
    Id(id): Id<i64>,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let devices = state
        .db
        .run(move |conn| {
            User::find_by_id(conn, UserId(id))?.ok_or_else(not_found)?;
            let devices = Device::find_by_user(conn, UserId(id))?;
            views(conn, &devices)
        })
        .await
        .map_err(|e| db_failure(e, &format!("there is no user {id}"), None))?;
    Ok(Json(devices))
}

#[derive(Debug, Deserialize)]
pub struct DeviceQuery {
    #[serde(default)]
    pub pin: String,
}

/// `GET /api/devices?pin=2A3B4C5D`: the device with that PIN (a list of
/// zero or one).
pub async fn find(
    State(state): State<ServerState>,
    Params(query): Params<DeviceQuery>,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let text = query.pin.trim().to_owned();
    if text.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "PIN_REQUIRED",
            "give the device's PIN (8 hexadecimal digits, as the device shows it)",
        ));
    }
    let pin = parse_pin(&text).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_PIN",
            format!("`{text}` is not a PIN: a PIN is 8 hexadecimal digits, such as 2A3B4C5D"),
        )
    })?;
    let found = state
        .db
        .run(move |conn| {
            let found: Vec<Device> = Device::find_by_pin(conn, &pin)?.into_iter().collect();
            views(conn, &found)
        })
        .await?;
    Ok(Json(found))
}

/// `GET /api/devices/{id}`
pub async fn get(
    State(state): State<ServerState>,
    Id(id): Id<i64>,
) -> Result<Json<DeviceDetail>, ApiError> {
    let detail = state
        .db
        .run(move |conn| -> DbResult<DeviceDetail> {
            let device = Device::find_by_id(conn, DeviceId(id))?.ok_or_else(not_found)?;
            let diagnostics = Device::find_diagnostics(conn, device.id, RECENT_DIAGNOSTICS)?
                .into_iter()
                .map(|d| Diagnostics {
                    reported_at: rfc3339(d.reported_at),
                    report: d.report,
                })
                .collect();
            let (user, statistics, recent, pending, mailbox) = match device.user_id {
                Some(user_id) => {
                    let user = User::find_by_id(conn, user_id)?;
                    let counted = Statistics::find_by_user(conn, user_id)?;
                    let statistics = StatisticsView::from(&counted);
                    let (recent, _) = Message::find_by_user(conn, user_id, 0, RECENT_MESSAGES)?;
                    let mailbox = MailboxView::from(&MailboxState::find(conn, user_id)?);
                    (
                        user,
                        Some(statistics),
                        recent,
                        counted.pending.max(0),
                        Some(mailbox),
                    )
                }
                None => (None, None, Vec::new(), 0, None),
            };
            Ok(DeviceDetail {
                device: views(conn, std::slice::from_ref(&device))?
                    .pop()
                    .ok_or_else(not_found)?,
                user: user.as_ref().map(UserView::from),
                statistics,
                diagnostics,
                recent_messages: recent.iter().map(MessageView::from).collect(),
                pending_messages: pending,
                mailbox,
            })
        })
        .await
        .map_err(|e| db_failure(e, &format!("there is no device {id}"), None))?;
    Ok(Json(detail))
}

/// `GET /api/messages/{ref_id}`: the trace of one message.
pub async fn trace(
    State(state): State<ServerState>,
    Id(text): Id<String>,
) -> Result<Json<MessageTrace>, ApiError> {
    let ref_id = parse_ref_id(text.trim()).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REF_ID",
            format!("`{text}` is not a RefID: a RefID is 16 hexadecimal digits"),
        )
    })?;
    let shown = ref_id.to_string();
    let trace = state
        .db
        .run(move |conn| {
            let message = Message::find_by_ref_id(conn, &ref_id)?.ok_or_else(not_found)?;
            let hops = Message::find_hops(conn, message.id)?
                .into_iter()
                .map(|h| HopView {
                    hop: h.hop.as_str(),
                    at: rfc3339(h.at),
                    detail: h.detail,
                })
                .collect();
            Ok(MessageTrace {
                message: MessageView::from(&message),
                hops,
            })
        })
        .await
        .map_err(|e| {
            db_failure(
                e,
                &format!("no message with the RefID {shown} is known to this server"),
                None,
            )
        })?;
    Ok(Json(trace))
}

/// An IT administration command as the console sends it.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CommandForm {
    /// `lock`, `wipe_all`, `wipe_work` or `new_key`.
    #[schemars(extend("enum" = ["lock", "wipe_all", "wipe_work", "new_key"]))]
    pub kind: String,
    /// The device password, for `lock` (at least 4 characters).
    #[serde(default)]
    pub password: Option<String>,
    /// For `wipe_all`: wait this long before sending it.
    #[serde(default)]
    pub delay_secs: Option<u64>,
    /// For the destructive kinds: the device's PIN typed again.
    #[serde(default)]
    pub confirm_pin: Option<String>,
}

/// One device's copy of a command and where it stands.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CommandView {
    pub command_id: i64,
    pub kind: String,
    /// queued, sent, acknowledged, failed or expired.
    pub state: String,
    pub detail: String,
    pub updated_at: String,
}

impl From<&CommandTarget> for CommandView {
    fn from(t: &CommandTarget) -> Self {
        CommandView {
            command_id: t.command_id.0,
            kind: t.kind.as_str().to_owned(),
            state: t.state.as_str().to_owned(),
            detail: t.detail.clone(),
            updated_at: rfc3339(t.updated_at),
        }
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// `POST /api/devices/{id}/commands`: queues an IT administration command;
/// the Policy Service sends it and tracks the device's acknowledgement.
pub async fn command(
    State(state): State<ServerState>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    Id(id): Id<i64>,
    super::extract::Body(form): super::extract::Body<CommandForm>,
) -> Result<(StatusCode, Json<CommandView>), ApiError> {
    let kind = CommandKind::parse(&form.kind).ok_or_else(|| {
        bad(
            "COMMAND_UNKNOWN",
            format!(
                "`{}` is not a command; use lock, wipe_all, wipe_work or new_key",
                form.kind
            ),
        )
    })?;
    let parameters = match kind {
        CommandKind::Lock => {
            let password = form.password.unwrap_or_default();
            if password.chars().count() < 4 {
                return Err(bad(
                    "DEVICE_PASSWORD_SHORT",
                    "the device password needs at least 4 characters",
                ));
            }
            serde_json::json!({ "password": password })
        }
        CommandKind::WipeAll => serde_json::json!({ "delay_secs": form.delay_secs.unwrap_or(0) }),
        CommandKind::WipeWork | CommandKind::NewKey => serde_json::json!({}),
    };
    let confirm = form.confirm_pin.unwrap_or_default();
    let now = crate::clock::Clock::new().now_db();
    let sealer = state.db.shared_sealer();
    let view = super::audited(&state, caller.actor(), move |conn| {
        let device = Device::find_by_id(conn, DeviceId(id))?
            .ok_or(DbError::Query(diesel::result::Error::NotFound))?;
        let destructive = matches!(kind, CommandKind::WipeAll | CommandKind::WipeWork);
        if destructive && !confirm.trim().eq_ignore_ascii_case(&device.pin.to_string()) {
            return Err(ChangeError::refused(
                StatusCode::BAD_REQUEST,
                "CONFIRMATION_NEEDED",
                format!(
                    "this deletes data on device {}; type its PIN to confirm",
                    device.pin
                ),
            ));
        }
        let command = AdminCommand::create(
            conn,
            &sealer,
            kind,
            &parameters,
            "console",
            &[device.id],
            now,
        )?;
        let target = AdminCommand::targets_of(conn, command.id)?
            .into_iter()
            .next()
            .ok_or(DbError::Query(diesel::result::Error::NotFound))?;
        let mut logged = parameters.clone();
        if logged.get("password").is_some() {
            logged["password"] = serde_json::json!("(set)");
        }
        Ok((
            CommandView::from(&target),
            (
                "device.command",
                format!("device/{}", device.id.0),
                None,
                Some(serde_json::json!({ "pin": device.pin.to_string(), "command": command.id.0, "kind": kind.as_str(), "parameters": logged })),
            ),
        ))
    })
    .await
    .map_err(|e: ChangeError| {
        e.answer(|e| db_failure(e, &format!("there is no device {id}"), None))
    })?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// `GET /api/devices/{id}/commands`: the latest commands and their states.
pub async fn commands(
    State(state): State<ServerState>,
    Id(id): Id<i64>,
) -> Result<Json<Vec<CommandView>>, ApiError> {
    let targets = state
        .db
        .run(move |conn| AdminCommand::targets_for_device(conn, DeviceId(id), 50))
        .await
        .map_err(|e| db_failure(e, &format!("there is no device {id}"), None))?;
    Ok(Json(targets.iter().map(CommandView::from).collect()))
}
