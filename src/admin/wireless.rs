//! The wireless network connection (SRP): the SRP ID, the SRP
//! authentication key, the relay and the Client Access Licences. The key is
//! never shown, only whether one is set, and never written to the audit log.
//! A change wakes the Router, which opens the SRP link again with the new
//! settings.

use axum::extract::State;
use axum::{Extension, Json};

use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::extract::Body;
use super::ServerState;
use super::{rfc3339, ApiError, ChangeError};
use crate::db::models::audit::append;
use crate::db::models::srp_connection::{SrpConnection, SrpKey, SrpSettings, DEFAULT_RELAY_PORT};
use crate::db::models::user::User;
use crate::db::write_transaction;

/// The SRP link as the Router sees it now.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct LinkView {
    pub connected: bool,
    /// The SRP ID the link was opened with.
    pub srp_id: Option<String>,
    pub relay: Option<String>,
    pub since: Option<String>,
    pub last_error: Option<String>,
}

/// The wireless network connection as the console shows it (never the key).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct WirelessView {
    /// Whether a connection is set at all.
    pub configured: bool,
    pub srp_id: Option<String>,
    /// Whether an SRP authentication key is stored (it is never shown).
    pub key_set: bool,
    pub relay_host: Option<String>,
    pub relay_port: i32,
    /// Client Access Licences: how many users this server may serve.
    pub cal_licences: i32,
    /// Users with an activated device (encryption verified or later).
    pub licences_in_use: i64,
    pub updated_at: Option<String>,
    pub link: LinkView,
}

/// The connection an administrator enters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct WirelessForm {
    pub srp_id: String,
    /// The SRP authentication key. Leave it out to keep the stored key of
    /// this SRP ID.
    #[serde(default)]
    pub srp_key: Option<String>,
    pub relay_host: String,
    /// 3101 unless the relay listens elsewhere.
    #[serde(default = "default_port")]
    pub relay_port: i32,
    #[serde(default)]
    pub cal_licences: i32,
}

fn default_port() -> i32 {
    DEFAULT_RELAY_PORT
}

/// What the audit log keeps of a connection: everything but the key.
fn audit_state(c: &SrpConnection) -> serde_json::Value {
    serde_json::json!({
        "srp_id": c.srp_id,
        "relay_host": c.relay_host,
        "relay_port": c.relay_port,
        "cal_licences": c.cal_licences,
        "key_set": true,
    })
}

fn view(state: &ServerState, current: Option<SrpConnection>, in_use: i64) -> WirelessView {
    let link = state.dispatcher.router().link_status();
    let link = LinkView {
        connected: link.connected,
        srp_id: link.srp_id,
        relay: link.relay,
        since: link.since.and_then(|s| {
            s.format(&time::format_description::well_known::Rfc3339)
                .ok()
        }),
        last_error: link.last_error,
    };
    match current {
        Some(c) => WirelessView {
            configured: true,
            srp_id: Some(c.srp_id.clone()),
            key_set: !c.srp_key.expose().is_empty(),
            relay_host: Some(c.relay_host.clone()),
            relay_port: c.relay_port,
            cal_licences: c.cal_licences,
            licences_in_use: in_use,
            updated_at: Some(rfc3339(c.updated_at)),
            link,
        },
        None => WirelessView {
            configured: false,
            srp_id: None,
            key_set: false,
            relay_host: None,
            relay_port: DEFAULT_RELAY_PORT,
            cal_licences: 0,
            licences_in_use: in_use,
            updated_at: None,
            link,
        },
    }
}

/// `GET /api/wireless`
pub async fn get(State(state): State<ServerState>) -> Result<Json<WirelessView>, ApiError> {
    let (current, in_use) = state
        .db
        .run_sealed(|conn, sealer| {
            Ok((
                SrpConnection::find_current(conn, sealer)?,
                User::count_activated(conn)?,
            ))
        })
        .await?;
    Ok(Json(view(&state, current, in_use)))
}

/// `PUT /api/wireless`: sets the connection (audited without the key) and
/// has the Router open the SRP link again with it.
pub async fn set(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Body(form): Body<WirelessForm>,
) -> Result<Json<WirelessView>, ApiError> {
    let actor = caller.actor();
    let srp_id = form.srp_id.trim().to_owned();
    let new_key = form
        .srp_key
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty());
    let (saved, in_use, relink) = state
        .db
        .write_sealed_as(move |conn, sealer| {
            write_transaction(conn, |conn| {
                let before = SrpConnection::find_current(conn, sealer)?;
                let key = match new_key {
                    Some(key) => SrpKey::new(key),
                    None => match SrpConnection::find_by_srp_id(conn, sealer, &srp_id)? {
                        Some(stored) => stored.srp_key.clone(),
                        None if srp_id.is_empty() => SrpKey::new(""),
                        None => {
                            return Err(ChangeError::invalid(format!(
                                "enter the SRP authentication key that came with SRP ID {srp_id}; \
                                 no key is stored for it"
                            )))
                        }
                    },
                };
                let settings = SrpSettings {
                    srp_id: srp_id.clone(),
                    srp_key: key,
                    relay_host: form.relay_host.trim().to_owned(),
                    relay_port: form.relay_port,
                    cal_licences: form.cal_licences,
                };
                let saved = SrpConnection::save(conn, sealer, &settings)?;
                let relink = before.as_ref().is_none_or(|b| {
                    b.srp_id != saved.srp_id
                        || b.srp_key != saved.srp_key
                        || b.relay_host != saved.relay_host
                        || b.relay_port != saved.relay_port
                });
                let mut after = audit_state(&saved);
                if let Some(b) = &before {
                    after["key_changed"] = serde_json::json!(b.srp_key != saved.srp_key);
                }
                append(
                    conn,
                    &actor,
                    "wireless.set",
                    &format!("srp/{}", saved.srp_id),
                    before.as_ref().map(audit_state),
                    Some(after),
                )?;
                Ok((saved, User::count_activated(conn)?, relink))
            })
        })
        .await
        .map_err(ApiError::from)?;
    if relink {
        state.dispatcher.router().reconnect();
    }
    Ok(Json(view(&state, Some(saved), in_use)))
}
