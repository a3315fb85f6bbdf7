//! A user's activation in the console: the activation password (set by the
//! administrator or generated, with a lifetime) and the steps the
//! activation went through. The password itself is never stored in clear
//! nor written to the audit log; a generated one is shown once, in the
//! answer that created it. Lifetimes, lengths and hashing are the Policy
//! Service's ([`crate::policy::activation`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::extract::{Body, Id};
use super::ServerState;
use super::{audited, db_failure, rfc3339, ApiError, ChangeError};
use crate::clock::Clock;
use crate::db::ids::UserId;
use crate::db::models::activation_password::{
    ActivationEvent, ActivationPassword, MAX_FAILED_ATTEMPTS,
};
use crate::db::models::user::User;
use crate::db::{Conn, DbError, DbResult};
use crate::policy::activation::{self, ActivationError};

/// A user's activation password, without the password.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PasswordView {
    pub created_at: String,
    pub expires_at: String,
    /// True once the lifetime is over: the password no longer opens.
    pub expired: bool,
    pub failed_attempts: i32,
    /// Wrong guesses left before the password stops working.
    pub attempts_left: i32,
}

/// One step of the activation, with its time.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StepView {
    pub status: &'static str,
    pub at: String,
}

/// Where a user's activation stands.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ActivationView {
    pub user_id: i64,
    /// `not_activated`, `initializing`, `activating` … `completed`, `failed`.
    pub status: &'static str,
    /// None when no password is set (never, or already used).
    pub password: Option<PasswordView>,
    /// The steps so far, oldest first.
    pub steps: Vec<StepView>,
}

/// Sets or generates a user's activation password.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PasswordForm {
    /// The password to set; leave out to have one generated.
    #[serde(default)]
    pub password: Option<String>,
    /// Length of a generated password (default 8).
    #[serde(default)]
    pub length: Option<usize>,
    /// Hours the password stays valid (default 48, at most 720).
    #[serde(default)]
    pub lifetime_hours: Option<u32>,
    /// Also e-mail the password to the user, through the Messaging Agent's
    /// SMTP server (`[mail] smtp`).
    #[serde(default)]
    pub email_user: bool,
}

/// Whether the password reached the user's mail server.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EmailOutcome {
    pub to: String,
    pub sent: bool,
    /// What went wrong, in words (the password is set either way).
    pub error: Option<String>,
}

/// The answer to setting a password.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PasswordSet {
    pub activation: ActivationView,
    /// The generated password, shown this once; None when the
    /// administrator chose it.
    pub generated_password: Option<String>,
    /// When `email_user` was asked for.
    pub email: Option<EmailOutcome>,
}

/// The mail that tells a user their activation password.
fn password_mail(
    from: &str,
    user: &User,
    password: &str,
    expires_at: &str,
) -> Result<lettre::Message, String> {
    let text = format!(
        "Hello {name},\n\n\
         to activate your smartphone over the wireless network, choose Enterprise\n\
         Activation on it and enter:\n\n\
         \x20 E-mail address:      {email}\n\
         \x20 Activation password: {password}\n\n\
         The password works until {expires_at} (UTC) and stops working after\n\
         {MAX_FAILED_ATTEMPTS} wrong attempts. If it has expired, ask your administrator\n\
         for a new one.\n",
        name = user.display_name,
        email = user.email,
    );
    lettre::Message::builder()
        .from(from.parse().map_err(|e| {
            format!("the sender `{from}` is not an e-mail address ({e}); check [admin] mail_from")
        })?)
        .to(user
            .email
            .parse()
            .map_err(|e| format!("`{}` is not an e-mail address ({e})", user.email))?)
        .subject("Your smartphone activation password")
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(text)
        .map_err(|e| format!("the message could not be built: {e}"))
}

/// Sends the password to the user through `[mail] smtp`.
async fn email_password(
    state: &ServerState,
    user: &User,
    password: &str,
    expires_at: &str,
) -> Result<(), String> {
    use lettre::AsyncTransport;
    let from = match &state.settings.admin.mail_from {
        Some(from) => from.clone(),
        None => {
            let domain = user
                .email
                .rsplit_once('@')
                .map(|(_, d)| d)
                .unwrap_or("localhost");
            format!("bramble@{domain}")
        }
    };
    let mail = password_mail(&from, user, password, expires_at)?;
    let transport = crate::messaging_agent::outbox::transport(&state.settings.mail)?;
    transport.send(mail).await.map(|_| ()).map_err(|e| {
        format!(
            "the mail server at {} refused or failed: {e}",
            state.settings.mail.smtp.as_deref().unwrap_or("?")
        )
    })
}

fn view(conn: &mut Conn, clock: &Clock, user: &User) -> DbResult<ActivationView> {
    let now = clock.now_db();
    let password = ActivationPassword::find_by_user(conn, user.id)?.map(|p| PasswordView {
        created_at: rfc3339(p.created_at),
        expires_at: rfc3339(p.expires_at),
        expired: p.expires_at <= now,
        failed_attempts: p.failed_attempts,
        attempts_left: (MAX_FAILED_ATTEMPTS - p.failed_attempts).max(0),
    });
    let steps = ActivationEvent::find_for_user(conn, user.id)?
        .into_iter()
        .map(|e| StepView {
            status: e.status.as_str(),
            at: rfc3339(e.at),
        })
        .collect();
    Ok(ActivationView {
        user_id: user.id.0,
        status: user.activation_status.as_str(),
        password,
        steps,
    })
}

fn find(conn: &mut Conn, id: i64) -> DbResult<User> {
    User::find_by_id(conn, UserId(id))?.ok_or(DbError::Query(diesel::result::Error::NotFound))
}

fn missing(id: i64) -> String {
    format!("there is no user {id}; it may have been deleted")
}

fn refused(e: ActivationError) -> ApiError {
    let status = match e {
        ActivationError::UnknownUser(_) => StatusCode::NOT_FOUND,
        ActivationError::Random(_) | ActivationError::Db(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, e.code(), e.to_string())
}

/// `GET /api/users/{id}/activation`
pub async fn get(
    State(state): State<ServerState>,
    Id(id): Id<i64>,
) -> Result<Json<ActivationView>, ApiError> {
    let clock = Clock::new();
    let view = state
        .db
        .run(move |conn| {
            let user = find(conn, id)?;
            view(conn, &clock, &user)
        })
        .await
        .map_err(|e| db_failure(e, &missing(id), None))?;
    Ok(Json(view))
}

/// `PUT /api/users/{id}/activation-password`: sets the given password or
/// generates one; the user becomes "Initializing".
pub async fn set_password(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
    Body(form): Body<PasswordForm>,
) -> Result<Json<PasswordSet>, ApiError> {
    // Checked before anything is written, so a refusal changes nothing.
    let lifetime = activation::lifetime(form.lifetime_hours).map_err(refused)?;
    let (password, generated) = match form.password.filter(|p| !p.is_empty()) {
        Some(password) => {
            let length = password.chars().count();
            if !(activation::MIN_LENGTH..=activation::MAX_LENGTH).contains(&length) {
                return Err(refused(ActivationError::Length(length)));
            }
            (password, false)
        }
        None => (
            activation::generate(form.length.unwrap_or(activation::DEFAULT_LENGTH))
                .map_err(refused)?,
            true,
        ),
    };
    let hours = form.lifetime_hours;
    let email_user = form.email_user;
    let clock = Clock::new();
    let secret = password.clone();
    let sealer = state.db.shared_sealer();
    let (view, user) = audited(&state, caller.actor(), move |conn| {
        let user = find(conn, id)?;
        let before = view(conn, &clock, &user)?;
        activation::set(conn, &sealer, &clock, &user.email, &secret, hours).map_err(|e| match e {
            ActivationError::Db(e) => ChangeError::Db(e),
            other => ChangeError::Refused(refused(other)),
        })?;
        // Read again: setting the password moved the user to Initializing.
        let user = find(conn, id)?;
        let after = view(conn, &clock, &user)?;
        let email = user.email.clone();
        let record = |v: &ActivationView| {
            json!({"user": email, "status": v.status, "password": v.password.as_ref().map(|p| json!({"expires_at": p.expires_at}))})
        };
        let mut after_record = record(&after);
        after_record["generated"] = json!(generated);
        after_record["lifetime_hours"] = json!(lifetime.whole_hours());
        Ok((
            (after, user),
            (
                "user.activation_password.set",
                format!("user/{id}"),
                Some(record(&before)),
                Some(after_record),
            ),
        ))
    })
    .await
    .map_err(|e: ChangeError| e.answer(|e| db_failure(e, &missing(id), None)))?;
    let email = if email_user {
        let expires_at = view
            .password
            .as_ref()
            .map(|p| p.expires_at.clone())
            .unwrap_or_default();
        let outcome = email_password(&state, &user, &password, &expires_at).await;
        if let Err(why) = &outcome {
            tracing::warn!(target: "bramble::admin", user = %user.email, "the activation password was set but not e-mailed: {why}");
        } else {
            let to = user.email.clone();
            audited::<_, ApiError, _>(&state, caller.actor(), move |_| {
                Ok((
                    (),
                    (
                        "user.activation_password.email",
                        format!("user/{id}"),
                        None,
                        Some(json!({"to": to})),
                    ),
                ))
            })
            .await?;
        }
        Some(EmailOutcome {
            to: user.email.clone(),
            sent: outcome.is_ok(),
            error: outcome.err(),
        })
    } else {
        None
    };
    Ok(Json(PasswordSet {
        activation: view,
        generated_password: generated.then_some(password),
        email,
    }))
}
