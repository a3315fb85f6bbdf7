//! Who may talk to the console at all, checked before anything else.
//!
//! - **`Host`.** A browser names the host it thinks it is talking to. The
//!   console answers to IP addresses, `localhost`, its instance's
//!   `server_name` and the names in `[admin] server_names`; any other name
//!   means a page reached it through a name that is not the console's (DNS
//!   rebinding against a loopback console) and is refused with 421. A
//!   request without `Host` (HTTP/1.0 clients, in-process calls) passes.
//! - **`Origin`.** Where a request carries one (browsers do for scripts'
//!   requests), it must be the console's own origin (same host and port
//!   as `Host`), a name it answers to, or the desktop window's; otherwise
//!   403. Clients that send no `Origin` (scripts, scrapers, push
//!   initiators) are not refused for that.
//! - **The desktop's launch secret.** When the desktop shell set
//!   `[admin] launch_secret` for this launch, every request but `/health`
//!   must carry it in `X-Bramble-Launch`; the window gets it from the shell,
//!   other local users do not.
//!
//! [`PeerAddress`] gives handlers the client's address (the TCP peer; a
//! proxy in front of the console makes every client the proxy).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ServerState, DESKTOP_ORIGINS};

/// The header the desktop window sends its launch secret in.
pub const LAUNCH_HEADER: HeaderName = HeaderName::from_static("x-bramble-launch");

/// A new launch secret (256 random bits, hex) for a desktop launch.
pub fn new_launch_secret() -> Result<String, openssl::error::ErrorStack> {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The client's address, when the request came over a socket.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddress(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddress {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddress(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

/// The host part of a `Host` header or an origin's authority, lower-cased,
/// without port or IPv6 brackets.
fn host_name(authority: &str) -> String {
    let authority = authority.trim();
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether the console answers to `host` (see the module doc).
fn answers_to(state: &ServerState, host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
        || host == "localhost"
        || host.eq_ignore_ascii_case(&state.settings.server_name)
        || state
            .settings
            .admin
            .server_names
            .iter()
            .any(|n| host_name(n) == host)
}

fn refused(status: StatusCode, code: &'static str, message: String) -> Response {
    tracing::warn!(target: "bramble::admin", code, "request refused: {message}");
    ApiError::new(status, code, message).into_response()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The middleware (see the module doc).
pub async fn check(State(state): State<ServerState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = header_str(headers, &header::HOST).map(str::to_owned);
    if let Some(host) = &host {
        let name = host_name(host);
        if !answers_to(&state, &name) {
            return refused(
                StatusCode::MISDIRECTED_REQUEST,
                "HOST_NOT_ALLOWED",
                format!(
                    "this console does not answer to the name \"{}\"; if it is one of this server's names, add it to `[admin] server_names`",
                    name.chars().take(100).collect::<String>()
                ),
            );
        }
    }
    if let Some(origin) = header_str(headers, &header::ORIGIN) {
        let own = DESKTOP_ORIGINS.contains(&origin)
            || origin
                .split_once("://")
                .is_some_and(|(_, authority)| match &host {
                    Some(host) => {
                        authority.eq_ignore_ascii_case(host)
                            || state
                                .settings
                                .admin
                                .server_names
                                .iter()
                                .any(|n| host_name(n) == host_name(authority))
                    }
                    None => answers_to(&state, &host_name(authority)),
                });
        if !own {
            return refused(
                StatusCode::FORBIDDEN,
                "ORIGIN_NOT_ALLOWED",
                format!(
                    "a page from {} may not use this console",
                    origin.chars().take(100).collect::<String>()
                ),
            );
        }
    }
    if let Some(secret) = &state.settings.admin.launch_secret {
        let given = header_str(headers, &LAUNCH_HEADER).unwrap_or_default();
        let matches =
            given.len() == secret.len() && openssl::memcmp::eq(given.as_bytes(), secret.as_bytes());
        // Preflight requests cannot carry it; CORS answers them.
        let exempt =
            request.uri().path() == "/health" || request.method() == axum::http::Method::OPTIONS;
        if !matches && !exempt {
            return refused(
                StatusCode::FORBIDDEN,
                "LAUNCH_SECRET_REQUIRED",
                "this console belongs to a Bramble desktop window and answers only to it".into(),
            );
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn host_names_lose_port_brackets_case_and_trailing_dot() {
        assert_eq!(host_name("127.0.0.1:3180"), "127.0.0.1");
        assert_eq!(host_name("[::1]:3180"), "::1");
        assert_eq!(host_name("BesAdmin.Example.com."), "besadmin.example.com");
        assert_eq!(host_name("localhost"), "localhost");
        assert_eq!(host_name("evil.example:80"), "evil.example");
    }
}
