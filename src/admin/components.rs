//! Restarting a server component from the console, through the Controller
//! (which stops it and starts it again as after a missed heartbeat).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

use super::auth::Caller;
use super::extract::Id;
use super::ServerState;
use super::{audited, ApiError};

/// The answer to a restart request.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RestartRequested {
    /// The component's key, e.g. `policy_service`.
    pub id: &'static str,
    /// The seed's name, e.g. "BlackBerry Policy Service".
    pub name: &'static str,
    pub message: String,
}

/// `POST /api/components/{key}/restart`
pub async fn restart(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(key): Id<String>,
) -> Result<(StatusCode, Json<RestartRequested>), ApiError> {
    let known = state
        .status
        .snapshot()
        .into_iter()
        .find(|c| c.id == key)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "COMPONENT_UNKNOWN",
                format!("there is no component `{key}`; the Servers page lists them"),
            )
        })?;
    let target = format!("component/{}", known.id);
    let before = json!({"state": known.state, "restarts": known.restarts});
    audited::<_, ApiError, _>(&state, caller.actor(), move |_| {
        Ok((
            (),
            (
                "component.restart",
                target,
                Some(before),
                Some(json!({"requested": true})),
            ),
        ))
    })
    .await?;
    let reason = format!("restart requested by {}", caller.actor());
    let id = state
        .status
        .request_restart(known.id, reason)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "COMPONENT_UNKNOWN",
                format!("there is no component `{key}`"),
            )
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RestartRequested {
            id: id.key(),
            name: id.display_name(),
            message: format!("the Controller is restarting the {}", id.display_name()),
        }),
    ))
}
