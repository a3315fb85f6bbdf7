//! `GET /api/events`: live statuses as server-sent events.
//!
//! One `status` event whenever something the console shows changed: the
//! health report (components, wireless link) and the newest audit log
//! entry's id (so lists refresh after another administrator's change).
//! Checked once a second; the first event comes at once. Streams end when
//! the server shuts down.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::health;
use super::ServerState;
use crate::db::models::audit;

/// Cancelled when the Administration Service stops; open streams end then.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(pub CancellationToken);

#[derive(Serialize)]
struct Status {
    health: health::Health,
    /// Id of the newest audit log entry (0: none).
    audit_head: i64,
}

pub async fn stream(
    State(state): State<ServerState>,
    shutdown: Option<Extension<Shutdown>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let token = shutdown.map(|Extension(s)| s.0).unwrap_or_default();
    let ticks = tokio::time::interval(Duration::from_secs(1));
    let events = futures::stream::unfold(
        (state, ticks, String::new()),
        |(state, mut ticks, last)| async move {
            loop {
                ticks.tick().await;
                let audit_head = state
                    .db
                    .run(|conn| audit::find_page(conn, 0, 1))
                    .await
                    .ok()
                    .and_then(|(page, _)| page.first().map(|e| e.id.0))
                    .unwrap_or(0);
                let status = Status {
                    health: health::snapshot(&state),
                    audit_head,
                };
                let Ok(text) = serde_json::to_string(&status) else {
                    continue;
                };
                if text != last {
                    let event = Event::default().event("status").data(text.clone());
                    return Some((Ok(event), (state, ticks, text)));
                }
            }
        },
    );
    Sse::new(events.take_until(token.cancelled_owned())).keep_alive(KeepAlive::default())
}
