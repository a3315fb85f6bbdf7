//! `GET /health`: each component's state and last heartbeat.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use time::OffsetDateTime;

use super::ServerState;
use crate::controller::{ComponentState, ComponentStatus};
use crate::router::LinkStatus;

#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok` when every component runs and the audit chain was last found
    /// intact, `degraded` otherwise.
    pub status: &'static str,
    pub version: &'static str,
    pub server: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub components: Vec<ComponentStatus>,
    /// The Router's SRP link to the relay and the devices on the LAN path.
    pub wireless: Wireless,
    /// Where the last check of the audit chain (at start-up, every
    /// `[database] audit_verify_hours`, or on request) found it broken;
    /// absent while it is intact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_alarm: Option<crate::db::models::audit::AuditTamper>,
}

#[derive(Debug, Serialize)]
pub struct Wireless {
    #[serde(flatten)]
    pub link: LinkStatus,
    pub lan_devices: Vec<String>,
}

pub async fn health(State(state): State<ServerState>) -> Json<Health> {
    Json(snapshot(&state))
}

/// The health report as of now (also sent live by `/api/events`).
pub fn snapshot(state: &ServerState) -> Health {
    let components = state.status.snapshot();
    let all_running = components
        .iter()
        .all(|c| c.state == ComponentState::Running);
    let audit_alarm = state.db.audit_alarm();
    Health {
        status: if all_running && audit_alarm.is_none() {
            "ok"
        } else {
            "degraded"
        },
        audit_alarm,
        version: crate::VERSION,
        server: state.settings.server_name.clone(),
        started_at: state.started_at,
        components,
        wireless: Wireless {
            link: state.dispatcher.router().link_status(),
            lan_devices: state
                .dispatcher
                .router()
                .lan_devices()
                .into_iter()
                .map(|pin| pin.to_string())
                .collect(),
        },
    }
}
