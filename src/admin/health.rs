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
    /// Whether the Configuration Database answered a query just now (only
    /// in `GET /health`; the live events leave it out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseHealth>,
    /// Where the last check of the audit chain (at start-up, every
    /// `[database] audit_verify_hours`, or on request) found it broken;
    /// absent while it is intact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_alarm: Option<crate::db::models::audit::AuditTamper>,
}

#[derive(Debug, Serialize)]
pub struct DatabaseHealth {
    /// `ok`, or `unreachable`.
    pub status: &'static str,
    /// Why it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How long `/health` waits for the database's answer.
const DATABASE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Serialize)]
pub struct Wireless {
    #[serde(flatten)]
    pub link: LinkStatus,
    pub lan_devices: Vec<String>,
}

pub async fn health(State(state): State<ServerState>) -> Json<Health> {
    let mut health = snapshot(&state);
    let answered = tokio::time::timeout(
        DATABASE_PATIENCE,
        state.db.run(|conn| {
            use diesel::RunQueryDsl;
            diesel::sql_query("SELECT 1").execute(conn)?;
            Ok(())
        }),
    )
    .await;
    let error = match answered {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!(
            "no answer within {} seconds",
            DATABASE_PATIENCE.as_secs()
        )),
    };
    if error.is_some() {
        health.status = "degraded";
    }
    health.database = Some(DatabaseHealth {
        status: if error.is_some() { "unreachable" } else { "ok" },
        error,
    });
    Json(health)
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
        database: None,
    }
}
