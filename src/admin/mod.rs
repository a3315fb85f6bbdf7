//! The BlackBerry Administration Service.
//!
//! An HTTP JSON API served by the core (axum), and the console's web UI
//! (`ui/dist`) at `/`. The desktop window loads the same UI from its bundle
//! and talks to this API over loopback, so the origins of the desktop
//! webview are allowed by CORS. Errors are JSON `{code, message}`.
//!
//! Endpoints today: `GET /health`. The console's management API grows here
//! (`/api/...`) with the issues that add users, roles and policies.

mod health;

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::{ServeDir, ServeFile};

use crate::server::ServerState;

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

/// The Administration Service's routes.
pub fn router(state: ServerState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(
            DESKTOP_ORIGINS
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        ))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
    let api = Router::new()
        .route("/health", get(health::health))
        .nest("/api", Router::new().fallback(api_not_found))
        .with_state(state.clone());
    let ui = match state.settings.ui_dir() {
        Some(dir) => Router::new()
            .fallback_service(ServeDir::new(&dir).fallback(ServeFile::new(dir.join("index.html")))),
        None => Router::new().fallback(get(console_not_built)),
    };
    api.merge(ui).layer(cors)
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: ServerState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| anyhow::anyhow!("the Administration Service stopped: {e}"))
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
