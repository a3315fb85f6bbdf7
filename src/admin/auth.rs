//! Who is calling: sessions, the guard every endpoint passes, and the
//! endpoints that open and close sessions and create the first
//! administrator.
//!
//! A session token arrives either as the `bramble_session` cookie
//! (HttpOnly, SameSite=Strict; what a browser uses) or as
//! `Authorization: Bearer …` (the desktop window, whose pages come from
//! another origin). [`guard`] answers 401 when there is no valid session
//! and 403 when the session's roles lack the endpoint's permission.

use std::sync::OnceLock;
use std::time::Instant;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::extract::Body;
use super::origin::PeerAddress;
use super::permission::{Grants, Permission};
use super::throttle::{Busy, Refused};
use super::ConsoleSettings;
use super::ServerState;
use super::{rfc3339, ApiError};
use crate::db::models::administrator::{Administrator, NewAdministrator, Role};
use crate::db::models::administrator_group::effective_roles;
use crate::db::models::audit;
use crate::db::models::session::{Lookup, Session, SessionLifetime};
use crate::db::write_transaction;

/// Name of the session cookie.
pub const COOKIE: &str = "bramble_session";

/// What an endpoint requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (signing in, the first-run page).
    Public,
    /// Any signed-in administrator.
    Session,
    /// A signed-in administrator whose roles grant this permission.
    Permission(Permission),
}

/// The signed-in administrator, put into the request by [`guard`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub administrator: Administrator,
    pub roles: Vec<Role>,
    pub grants: Grants,
    pub token: String,
}

impl Caller {
    /// How the audit log names this administrator.
    pub fn actor(&self) -> String {
        self.administrator.login.clone()
    }
}

pub fn lifetime(settings: &ConsoleSettings) -> SessionLifetime {
    SessionLifetime {
        idle: time::Duration::minutes(i64::from(settings.admin.session_idle_minutes.max(1))),
        absolute: time::Duration::hours(i64::from(settings.admin.session_max_hours.max(1))),
    }
}

/// The token a request carries: the bearer header first, then the cookie.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = value.strip_prefix("Bearer ") {
            let token = token.trim();
            if !token.is_empty() {
                return Some(token.to_owned());
            }
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

fn session_required() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "SESSION_REQUIRED",
        "sign in to the console first",
    )
}

/// Checks the caller against the endpoint's [`Access`] and hands the
/// [`Caller`] to the handler.
pub async fn guard(
    State((state, access)): State<(ServerState, Access)>,
    mut request: Request,
    next: Next,
) -> Response {
    if access == Access::Public {
        return next.run(request).await;
    }
    let Some(token) = session_token(request.headers()) else {
        return session_required().into_response();
    };
    let caller = match find_caller(&state, token).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    if let Access::Permission(permission) = access {
        if !caller.grants.allows(permission) {
            let roles: Vec<&str> = caller.roles.iter().map(|r| r.name.as_str()).collect();
            let held = if roles.is_empty() {
                "you hold no role".to_owned()
            } else {
                format!("your roles ({}) do not", roles.join(", "))
            };
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                format!(
                    "{held} allow you to {} (permission `{}`); ask a Security Administrator for a role that does",
                    permission.describe(),
                    permission.as_str()
                ),
            )
            .into_response();
        }
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

async fn find_caller(state: &ServerState, token: String) -> Result<Caller, ApiError> {
    let lifetime = lifetime(&state.settings);
    state
        .db
        .run(move |conn| {
            let session = match Session::find_by_token(conn, &token, lifetime)? {
                Lookup::Valid(session) => session,
                Lookup::Expired => {
                    return Ok(Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "SESSION_EXPIRED",
                        "your session has expired; sign in again",
                    )))
                }
                Lookup::Unknown => {
                    return Ok(Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "SESSION_UNKNOWN",
                        "this session is not known (it ended or the server's database was replaced); sign in again",
                    )))
                }
            };
            let Some(administrator) = Administrator::find_by_id(conn, session.administrator_id)?
            else {
                return Ok(Err(session_required()));
            };
            if administrator.disabled {
                Session::delete_by_administrator(conn, administrator.id)?;
                return Ok(Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "ACCOUNT_DISABLED",
                    "this administrator account has been disabled",
                )));
            }
            let roles = effective_roles(conn, administrator.id)?;
            Ok(Ok(Caller {
                grants: Grants::of_roles(&roles),
                administrator,
                roles,
                token,
            }))
        })
        .await?
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SignIn {
    pub login: String,
    pub password: String,
    /// Also return the token in the body (the desktop window sends it as a
    /// bearer token; a browser keeps only the HttpOnly cookie).
    #[serde(default)]
    pub bearer: bool,
}

/// Who is signed in and what they may do.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Whoami {
    pub id: i64,
    pub login: String,
    pub display_name: String,
    pub roles: Vec<String>,
    #[schemars(with = "Vec<String>")]
    pub permissions: Vec<Permission>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Whoami {
    fn of(administrator: &Administrator, roles: &[Role]) -> Whoami {
        Whoami {
            id: administrator.id.0,
            login: administrator.login.clone(),
            display_name: administrator.display_name.clone(),
            roles: roles.iter().map(|r| r.name.clone()).collect(),
            permissions: Grants::of_roles(roles).list(),
            expires_at: None,
            token: None,
        }
    }
}

/// A hash to check passwords of unknown logins against, so that an unknown
/// login takes as long to refuse as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"no administrator has this password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// The session cookie; `Secure` when the console is served over HTTPS.
fn session_cookie(
    settings: &ConsoleSettings,
    token: &str,
    max_age_secs: i64,
) -> Option<HeaderValue> {
    let secure = if settings.admin.tls_enabled() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    .ok()
}

fn signed_in(
    settings: &ConsoleSettings,
    whoami: Whoami,
    token: &str,
    max_age_secs: i64,
) -> Response {
    let mut response = (StatusCode::OK, Json(whoami)).into_response();
    if let Some(cookie) = session_cookie(settings, token, max_age_secs) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `POST /api/session`: sign in. The attempt is throttled and counted
/// first, the password checked off the database pool, and only then is a
/// session made (see [`super::throttle`]).
pub async fn sign_in(
    State(state): State<ServerState>,
    PeerAddress(address): PeerAddress,
    Body(form): Body<SignIn>,
) -> Result<Response, ApiError> {
    let gate = state.sign_ins.clone();
    if let Err(refused) = gate.throttle.admit(&form.login, address, Instant::now()) {
        gate.record_failure(&form.login, address, false);
        let (wait, whose) = match refused {
            Refused::Address(wait) => (wait, "from this address"),
            Refused::Login(wait) => (wait, "for this login"),
        };
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_SIGN_IN_ATTEMPTS",
            format!(
                "too many failed sign-ins {whose}; try again in {} seconds",
                wait.as_secs().max(1)
            ),
        ));
    }
    let login = form.login.trim().to_owned();
    let found = {
        let login = login.clone();
        state
            .db
            .run(move |conn| Administrator::find_by_login(conn, &login))
            .await?
    };
    let checked = {
        let found = found.clone();
        let password = form.password.clone();
        gate.check(move || match &found {
            Some(admin) => admin.verify_password(&password),
            None => {
                // An unknown login takes as long to refuse as a wrong password.
                if let Ok(hash) = PasswordHash::new(decoy_hash()) {
                    let _ = Argon2::default().verify_password(password.as_bytes(), &hash);
                }
                false
            }
        })
        .await
    };
    let ok = match checked {
        Ok(ok) => ok,
        Err(Busy) => {
            gate.record_failure(&form.login, address, false);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SIGN_IN_BUSY",
                "the server is checking too many sign-ins at once; try again in a moment",
            ));
        }
    };
    let admin = match found {
        Some(admin) if ok => admin,
        _ => {
            gate.record_failure(&form.login, address, true);
            tracing::warn!(target: "bramble::admin", login = %login, address = ?address, "failed sign-in");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "SIGN_IN_FAILED",
                "the login name or password is wrong, or the account is disabled",
            ));
        }
    };
    gate.throttle.succeeded(&form.login, address);
    let lifetime = lifetime(&state.settings);
    let bearer = form.bearer;
    let (whoami, token) = state
        .db
        .run(move |conn| {
            Session::delete_expired(conn)?;
            let (token, session) = Session::create(conn, admin.id, lifetime)?;
            let roles = effective_roles(conn, admin.id)?;
            let mut whoami = Whoami::of(&admin, &roles);
            whoami.expires_at = Some(rfc3339(session.expires_at));
            if bearer {
                whoami.token = Some(token.clone());
            }
            Ok((whoami, token))
        })
        .await?;
    Ok(signed_in(
        &state.settings,
        whoami,
        &token,
        lifetime.absolute.whole_seconds(),
    ))
}

/// Writes the failed sign-ins counted by [`super::throttle::SignIns`] to the audit log, one
/// entry per login and address every `[admin] sign_in_audit_secs`, until
/// `stop`; then writes what is left.
pub async fn audit_failed_sign_ins(state: ServerState, stop: CancellationToken) {
    let every = std::time::Duration::from_secs(state.settings.admin.sign_in_audit_secs.max(1));
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            _ = stop.cancelled() => true,
        };
        let failures = state.sign_ins.take_failures();
        if !failures.is_empty() {
            let written = state
                .db
                .write(move |conn| {
                    write_transaction(conn, |conn| {
                        for f in &failures {
                            audit::append(
                                conn,
                                "(not signed in)",
                                "session.sign_in_failed",
                                &format!("login/{}", f.login),
                                None,
                                Some(json!({
                                    "login": f.login,
                                    "address": f.address,
                                    "wrong_passwords": f.checked,
                                    "refused_unchecked": f.refused,
                                    "first_at": rfc3339_offset(f.first),
                                    "last_at": rfc3339_offset(f.last),
                                })),
                            )?;
                        }
                        Ok(())
                    })
                })
                .await;
            if let Err(e) = written {
                tracing::warn!(target: "bramble::admin", "failed sign-ins could not be written to the audit log: {e}");
            }
        }
        if stopping {
            return;
        }
    }
}

fn rfc3339_offset(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `GET /api/session`: who is signed in, with their roles and permissions.
pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<Whoami> {
    Json(Whoami::of(&caller.administrator, &caller.roles))
}

/// `DELETE /api/session`: sign out.
pub async fn sign_out(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let token = caller.token.clone();
    state
        .db
        .run(move |conn| Session::delete_by_token(conn, &token))
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(cookie) = session_cookie(&state.settings, "", 0) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SetupState {
    /// True while no administrator exists: the console shows the first-run
    /// page.
    pub needs_first_administrator: bool,
}

/// `GET /api/setup`.
pub async fn setup_state(State(state): State<ServerState>) -> Result<Json<SetupState>, ApiError> {
    let count = state.db.run(Administrator::count).await?;
    Ok(Json(SetupState {
        needs_first_administrator: count == 0,
    }))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct FirstAdministrator {
    /// The one-time code `bramble serve` printed at start (also in the data
    /// folder's `setup-code` file; the desktop window fills it in).
    #[serde(default)]
    pub setup_code: String,
    pub login: String,
    #[serde(default)]
    pub display_name: String,
    pub password: String,
    #[serde(default)]
    pub bearer: bool,
}

/// `POST /api/setup`: creates the first Security Administrator and signs
/// them in; refused once any administrator exists.
pub async fn create_first_administrator(
    State(state): State<ServerState>,
    PeerAddress(address): PeerAddress,
    Body(form): Body<FirstAdministrator>,
) -> Result<Response, ApiError> {
    if state.setup.code().is_none() {
        return Err(first_administrator_exists());
    }
    // Guessing the code is throttled like guessing a password.
    let gate = state.sign_ins.clone();
    if let Err(Refused::Address(wait) | Refused::Login(wait)) =
        gate.throttle.admit("(setup code)", address, Instant::now())
    {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_SIGN_IN_ATTEMPTS",
            format!(
                "too many wrong setup codes from this address; try again in {} seconds",
                wait.as_secs().max(1)
            ),
        ));
    }
    if !state.setup.matches(&form.setup_code) {
        gate.record_failure("(setup code)", address, true);
        let problem = if form.setup_code.trim().is_empty() {
            "the setup code is required"
        } else {
            "the setup code is wrong"
        };
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "SETUP_CODE_WRONG",
            format!(
                "{problem}: `bramble serve` printed it when it started, and it is in {}",
                state.setup.path().display()
            ),
        ));
    }
    gate.throttle.succeeded("(setup code)", address);
    let lifetime = lifetime(&state.settings);
    let outcome = state
        .db
        .run(move |conn| {
            write_transaction(conn, |conn| {
                if Administrator::count(conn)? > 0 {
                    return Ok(None);
                }
                let new = NewAdministrator {
                    login: form.login.trim().to_owned(),
                    display_name: if form.display_name.trim().is_empty() {
                        form.login.trim().to_owned()
                    } else {
                        form.display_name.trim().to_owned()
                    },
                    password: form.password.clone(),
                };
                let admin = Administrator::create_security_administrator(conn, &new)?;
                let roles = effective_roles(conn, admin.id)?;
                audit::append(
                    conn,
                    &admin.login,
                    "administrator.create",
                    &format!("administrator/{}", admin.id),
                    None,
                    Some(json!({
                        "login": admin.login,
                        "display_name": admin.display_name,
                        "roles": roles.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
                        "first_run": true,
                    })),
                )?;
                let (token, session) = Session::create(conn, admin.id, lifetime)?;
                let mut whoami = Whoami::of(&admin, &roles);
                whoami.expires_at = Some(rfc3339(session.expires_at));
                if form.bearer {
                    whoami.token = Some(token.clone());
                }
                Ok(Some((whoami, token)))
            })
        })
        .await?;
    state.setup.spent();
    match outcome {
        Some((whoami, token)) => Ok(signed_in(
            &state.settings,
            whoami,
            &token,
            lifetime.absolute.whole_seconds(),
        )),
        None => Err(first_administrator_exists()),
    }
}

fn first_administrator_exists() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "FIRST_ADMINISTRATOR_EXISTS",
        "the first administrator has already been created; sign in instead",
    )
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PermissionInfo {
    #[schemars(with = "String")]
    pub name: Permission,
    pub description: &'static str,
}

/// `GET /api/permissions`: every permission, for the role editor.
pub async fn permissions() -> Json<Vec<PermissionInfo>> {
    Json(
        Permission::ALL
            .iter()
            .map(|p| PermissionInfo {
                name: *p,
                description: p.describe(),
            })
            .collect(),
    )
}
