//! The audit log as the console shows it: paged, exported (CSV or JSON) and
//! its hash chain verified.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::extract::Params;
use super::ServerState;
use super::{paging, rfc3339, ApiError, Page};
use crate::db::models::audit::{self, AuditEntry};

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AuditView {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub hash: String,
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> Self {
        AuditView {
            id: e.id.0,
            at: rfc3339(e.at),
            actor: e.actor,
            action: e.action,
            target: e.target,
            before: e.before,
            after: e.after,
            hash: e.hash,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    pub page: Option<i64>,
    pub per_page: Option<i64>,
}

/// `GET /api/audit?page=&per_page=`: newest first.
pub async fn list(
    State(state): State<ServerState>,
    Params(query): Params<AuditQuery>,
) -> Result<Json<Page<AuditView>>, ApiError> {
    let (page, per_page, offset) = paging(query.page, query.per_page);
    let (entries, total) = state
        .db
        .run(move |conn| audit::find_page(conn, offset, per_page))
        .await?;
    Ok(Json(Page {
        items: entries.into_iter().map(AuditView::from).collect(),
        total,
        page,
        per_page,
    }))
}

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    #[serde(default)]
    pub format: String,
}

fn csv_field(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

fn state_text(value: &Option<serde_json::Value>) -> String {
    value.as_ref().map(|v| v.to_string()).unwrap_or_default()
}

/// `GET /api/audit/export?format=csv|json`: the whole log, oldest first, as
/// a file to download.
pub async fn export(
    State(state): State<ServerState>,
    Params(query): Params<ExportQuery>,
) -> Result<Response, ApiError> {
    let format = match query.format.as_str() {
        "" | "csv" => "csv",
        "json" => "json",
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_FORMAT",
                format!("the audit log cannot be exported as `{other}`; use csv or json"),
            ))
        }
    };
    let (mut entries, _) = state
        .db
        .run(|conn| audit::find_page(conn, 0, i64::MAX))
        .await?;
    entries.reverse();
    let entries: Vec<AuditView> = entries.into_iter().map(AuditView::from).collect();
    let (content_type, body) = if format == "json" {
        let body = serde_json::to_string_pretty(&entries).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "EXPORT_FAILED",
                format!("the audit log could not be written as JSON: {e}"),
            )
        })?;
        ("application/json", body)
    } else {
        let mut body = String::from("id,at,actor,action,target,before,after,hash\r\n");
        for e in &entries {
            let fields = [
                e.id.to_string(),
                csv_field(&e.at),
                csv_field(&e.actor),
                csv_field(&e.action),
                csv_field(&e.target),
                csv_field(&state_text(&e.before)),
                csv_field(&state_text(&e.after)),
                e.hash.clone(),
            ];
            body.push_str(&fields.join(","));
            body.push_str("\r\n");
        }
        ("text/csv; charset=utf-8", body)
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"bramble-audit-log.{format}\""),
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Verification {
    /// True when every entry links to the one before and matches its hash.
    pub intact: bool,
    pub entries: i64,
    /// The first entry found altered, and how.
    pub tampered_entry: Option<i64>,
    pub message: String,
}

/// `GET /api/audit/verify`: walks the hash chain (and sets or clears the
/// alarm `GET /health` shows).
pub async fn verify(State(state): State<ServerState>) -> Result<Json<Verification>, ApiError> {
    let (outcome, entries) = state.db.check_audit_log().await?;
    Ok(Json(match outcome {
        Ok(()) => Verification {
            intact: true,
            entries,
            tampered_entry: None,
            message: format!("all {entries} entries of the audit log are intact"),
        },
        Err(tamper) => Verification {
            intact: false,
            entries,
            tampered_entry: Some(tamper.id.0),
            message: tamper.to_string(),
        },
    }))
}
