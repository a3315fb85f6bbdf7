//! The BlackBerry Administration Service.
//!
//! An HTTP JSON API served by the core (axum), and the console's web UI
//! (`ui/dist`) at `/`. The desktop window loads the same UI from its bundle
//! and talks to this API over loopback, so the origins of the desktop
//! webview are allowed by CORS. Errors are JSON `{code, message}`.
//!
//! Layout:
//! - [`endpoints`]: the one list of `/api` endpoints, each with the
//!   [`Access`] it requires; the router is built from it.
//! - [`auth`]: sessions (argon2-checked sign-in, a token kept hashed in the
//!   database, sent as an HttpOnly SameSite=Strict cookie or a bearer
//!   header), the guard that answers 401/403, the first-run endpoint.
//! - [`throttle`]: failed sign-ins make an address, then a login, wait;
//!   password checks bounded and off the database pool.
//! - [`setup`]: the first run's one-time setup code.
//! - [`origin`]: the `Host`, `Origin` and desktop launch-secret checks
//!   every request passes first.
//! - [`permission`]: the named permissions and the union a set of roles
//!   grants.
//! - [`users`], [`groups`], [`administrators`]: the resources; every change
//!   is written to the hash-chained audit log in the same transaction
//!   ([`audited`]).
//! - [`policies`]: IT policies — the rule catalog, the rule editor's
//!   checks, assignment to users and groups, a user's resolved policy.
//! - [`activation`]: a user's activation password and steps.
//! - [`software`]: software configurations (applications required,
//!   optional or disallowed) and their assignment.
//! - [`assignments`]: assigning a policy or a configuration to users and
//!   groups, one implementation for both.
//! - [`filters`]: global message filters and their order.
//! - [`directories`]: the configured directories, their sync runs, and a
//!   sync started from the console with its progress.
//! - [`components`]: restarting a component through the Controller.
//! - [`sync`]: wireless synchronization — the per-database settings and
//!   where each user's organizer data stands.
//! - [`wireless`]: the wireless network connection (SRP ID, key, relay,
//!   licences); a change has the Router open its link again.
//! - [`statistics`]: message counters, the server's and the busiest users'.
//! - [`audit`]: the audit log paged, exported (CSV/JSON) and verified.
//! - [`devices`]: what support staff look at — devices by user or PIN,
//!   diagnostics, statistics, and a message's trace by RefID.
//! - [`events`]: live statuses as server-sent events.
//! - [`openapi`]: `GET /api/openapi.json`, generated from the endpoint list.
//! - [`tls`]: HTTPS (given or self-signed certificate) when bound to an
//!   address other than loopback, or when `[admin] tls = true`.
//! - [`connections`]: the one accept loop for plain and TLS connections,
//!   with the header-read and idle time-outs, giving handlers the client's
//!   address.
//! - [`extract`]: request extractors whose failures are `{code, message}`.
//!
//! `GET /health` stays public (monitoring and the start-up scripts use it).
//! The endpoints and their permissions are listed in `docs/operations.md`.

pub mod activation;
pub mod administrators;
pub mod assignments;
pub mod audit;
pub mod auth;
pub mod components;
pub mod connections;
pub mod devices;
pub mod directories;
pub mod endpoints;
pub mod events;
pub mod extract;
pub mod filters;
pub mod groups;
pub mod openapi;
pub mod origin;
pub mod permission;
pub mod policies;
pub mod settings;
pub mod setup;
pub mod software;
pub mod state;
pub mod statistics;
pub mod sync;
pub mod throttle;
pub mod tls;
pub mod users;
pub mod wireless;

pub mod health;

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Extension, Json, Router};
use serde::Serialize;
use time::PrimitiveDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::{ServeDir, ServeFile};

use crate::db::models::audit::append;
use crate::db::write_transaction;
use crate::db::{Conn, DbError};
pub use auth::{Access, Caller};
pub use settings::AdminSettings;
pub use state::{ConsoleSettings, ServerState};

/// Origins of the desktop window's webview (Linux/macOS, Windows).
const DESKTOP_ORIGINS: [&str; 3] = [
    "tauri://localhost",
    "http://tauri.localhost",
    "https://tauri.localhost",
];

/// An error as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        let status = match &e {
            DbError::Query(diesel::result::Error::NotFound) => StatusCode::NOT_FOUND,
            DbError::Invalid(_) => StatusCode::BAD_REQUEST,
            DbError::Pool(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(target: "bramble::admin", code = e.code(), "{e}");
        }
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        ApiError::from(DbError::from(e))
    }
}

/// Why a change made inside a transaction did not happen: the database
/// failed, or the console refused it for a reason of its own (which rolls
/// the transaction back like any failure).
#[derive(Debug)]
pub enum ChangeError {
    Db(DbError),
    Refused(ApiError),
}

impl ChangeError {
    /// Refused as invalid input (400 `INVALID_INPUT`).
    pub fn invalid(message: impl Into<String>) -> ChangeError {
        ChangeError::Refused(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            message,
        ))
    }

    /// Refused with a status and code of the console's.
    pub fn refused(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ChangeError {
        ChangeError::Refused(ApiError::new(status, code, message))
    }

    /// The console's answer: a refusal as it is, a database failure as
    /// `db` words it (e.g. [`db_failure`] with the missing item's name).
    pub fn answer(self, db: impl FnOnce(DbError) -> ApiError) -> ApiError {
        match self {
            ChangeError::Db(e) => db(e),
            ChangeError::Refused(e) => e,
        }
    }
}

impl From<DbError> for ChangeError {
    fn from(e: DbError) -> Self {
        ChangeError::Db(e)
    }
}

impl From<diesel::result::Error> for ChangeError {
    fn from(e: diesel::result::Error) -> Self {
        ChangeError::Db(DbError::from(e))
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        e.answer(ApiError::from)
    }
}

/// A database failure in words: a missing row becomes 404 with `missing`,
/// a uniqueness violation becomes `conflict` (when given), the rest as
/// [`From<DbError>`].
pub fn db_failure(e: DbError, missing: &str, conflict: Option<ApiError>) -> ApiError {
    match (&e, conflict) {
        (DbError::Query(diesel::result::Error::NotFound), _) if !missing.is_empty() => {
            ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", missing)
        }
        (
            DbError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )),
            Some(conflict),
        ) => conflict,
        _ => ApiError::from(e),
    }
}

/// What a change writes to the audit log: action, target, before, after.
pub type AuditRecord = (
    &'static str,
    String,
    Option<serde_json::Value>,
    Option<serde_json::Value>,
);

/// Runs a change and appends its audit record in one write transaction:
/// both happen or neither does. The change fails in the database's terms
/// or, where it refuses for a reason of the console's, in an [`ApiError`].
pub async fn audited<T, E, F>(state: &ServerState, actor: String, change: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<DbError> + From<diesel::result::Error> + Send + 'static,
    F: FnOnce(&mut Conn) -> Result<(T, AuditRecord), E> + Send + 'static,
{
    state
        .db
        .run_as(move |conn| {
            write_transaction(conn, |conn| {
                let (value, (action, target, before, after)) = change(conn)?;
                append(conn, &actor, action, &target, before, after)?;
                Ok(value)
            })
        })
        .await
}

/// One page of a long list.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(rename = "{T}Page")]
pub struct Page<T> {
    pub items: Vec<T>,
    /// How many items match in all.
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
}

/// Largest page the API hands out.
pub const MAX_PER_PAGE: i64 = 200;

/// `(page, per_page, offset)` from optional query values (pages count from 1).
pub fn paging(page: Option<i64>, per_page: Option<i64>) -> (i64, i64, i64) {
    let per_page = per_page.unwrap_or(50).clamp(1, MAX_PER_PAGE);
    let page = page.unwrap_or(1).max(1);
    (page, per_page, (page - 1).saturating_mul(per_page))
}

/// A stored UTC time as RFC 3339 (`2026-11-27T10:00:00Z`).
pub fn rfc3339(at: PrimitiveDateTime) -> String {
    at.assume_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The Administration Service's routes.
pub fn router(state: ServerState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(
            DESKTOP_ORIGINS
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        ))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            origin::LAUNCH_HEADER,
        ]);
    let mut api = Router::new().route("/health", get(health::health));
    for endpoint in endpoints::all() {
        let guard = middleware::from_fn_with_state((state.clone(), endpoint.access), auth::guard);
        api = api.route(endpoint.path, endpoint.route.route_layer(guard));
    }
    let api = api
        .nest("/api", Router::new().fallback(api_not_found))
        .layer(Extension(std::sync::Arc::new(
            directories::DirectorySyncs::default(),
        )))
        .with_state(state.clone());
    let ui = match state.settings.ui_dir.clone() {
        Some(dir) => Router::new()
            .fallback_service(ServeDir::new(&dir).fallback(ServeFile::new(dir.join("index.html")))),
        None => Router::new().fallback(get(console_not_built)),
    };
    api.merge(ui)
        .layer(middleware::from_fn_with_state(state, origin::check))
        .layer(cors)
}

/// Serves until `shutdown` is cancelled; over TLS when given an acceptor
/// (see [`tls`]), within the limits of [`connections`].
pub async fn serve(
    listener: TcpListener,
    state: ServerState,
    tls: Option<openssl::ssl::SslAcceptor>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let limits = connections::Limits::of(&state.settings.admin);
    let app = router(state.clone()).layer(Extension(events::Shutdown(shutdown.clone())));
    // Stops with the server, or when serving ends for another reason.
    let audit_stop = shutdown.child_token();
    let audit = tokio::spawn(auth::audit_failed_sign_ins(state, audit_stop.clone()));
    let served = connections::serve(listener, app, tls, limits, shutdown).await;
    audit_stop.cancel();
    let _ = audit.await;
    served
}

async fn api_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such API endpoint")
}

async fn console_not_built() -> impl IntoResponse {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(
            "<!doctype html><title>Bramble</title><h1>Bramble Administration Service</h1>\
             <p>The server is running, but the console's web files were not found. Build them with \
             <code>npm ci &amp;&amp; npm run ui:build</code>, or set <code>[admin] ui_dir</code> to the \
             folder holding <code>index.html</code>. <a href=\"/health\">Component health</a> is available.</p>",
        ),
    )
}
