//! Smartphone users: the paged, sorted, searched list and the changes an
//! administrator makes, each written to the audit log in the same
//! transaction as the change.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::extract::{Body, Id, Params};
use super::groups::GroupView;
use super::ServerState;
use super::{audited, db_failure, paging, rfc3339, ApiError, ChangeError, Page};
use crate::db::ids::{GroupId, UserId};
use crate::db::models::device::Device;
use crate::db::models::device_key::DeviceKey;
use crate::db::models::group::Group;
use crate::db::models::user::{AccountStatus, NewUser, User, UserSort};
use crate::db::{Conn, DbError, DbResult};
use crate::dispatcher::{DeliveryEvent, Resend};

/// A user as the console shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct UserView {
    pub id: i64,
    pub display_name: String,
    pub email: String,
    pub mailbox_login: String,
    pub account_status: &'static str,
    pub activation_status: &'static str,
    pub created_at: String,
    pub updated_at: String,
    /// Copied from the organization's directory (changes there win).
    pub from_directory: bool,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.0,
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            mailbox_login: u.mailbox_login.clone(),
            account_status: u.account_status.as_str(),
            activation_status: u.activation_status.as_str(),
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
            from_directory: u.directory_id.is_some(),
        }
    }
}

fn json(u: &User) -> serde_json::Value {
    serde_json::to_value(UserView::from(u)).unwrap_or_default()
}

#[derive(Debug, Deserialize)]
pub struct ListUsers {
    #[serde(default)]
    pub search: String,
    pub page: Option<i64>,
    pub per_page: Option<i64>,
    /// `name`, `email` or `created`; a leading `-` sorts descending.
    #[serde(default)]
    pub sort: String,
}

/// `GET /api/users?search=&page=&per_page=&sort=`
pub async fn list(
    State(state): State<ServerState>,
    Params(query): Params<ListUsers>,
) -> Result<Json<Page<UserView>>, ApiError> {
    let (descending, key) = match query.sort.strip_prefix('-') {
        Some(key) => (true, key),
        None => (false, query.sort.as_str()),
    };
    let sort = match key {
        "" | "name" => UserSort::Name,
        "email" => UserSort::Email,
        "created" => UserSort::Created,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_SORT",
                format!("the users list cannot be sorted by `{other}`; use name, email or created (with - for descending)"),
            ))
        }
    };
    let (page, per_page, offset) = paging(query.page, query.per_page);
    let search = query.search;
    let (users, total) = state
        .db
        .run(move |conn| User::find_page(conn, &search, sort, descending, offset, per_page))
        .await?;
    Ok(Json(Page {
        items: users.iter().map(UserView::from).collect(),
        total,
        page,
        per_page,
    }))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct UserForm {
    pub display_name: String,
    pub email: String,
    /// Defaults to the part of the e-mail address before `@`.
    #[serde(default)]
    pub mailbox_login: String,
    /// Only when editing: `active` or `disabled`.
    #[serde(default)]
    #[schemars(extend("enum" = ["active", "disabled", null]))]
    pub account_status: Option<String>,
}

impl UserForm {
    fn checked(mut self) -> Result<UserForm, ApiError> {
        self.display_name = self.display_name.trim().to_owned();
        self.email = self.email.trim().to_owned();
        self.mailbox_login = self.mailbox_login.trim().to_owned();
        if self.display_name.is_empty() {
            return Err(invalid("a user needs a display name"));
        }
        let well_formed = self
            .email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
            && !self.email.contains(char::is_whitespace);
        if !well_formed {
            return Err(invalid(format!(
                "`{}` is not an e-mail address (expected name@example.com)",
                self.email
            )));
        }
        if self.mailbox_login.is_empty() {
            self.mailbox_login = self
                .email
                .split_once('@')
                .map(|(local, _)| local.to_owned())
                .unwrap_or_default();
        }
        Ok(self)
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", message)
}

fn email_taken(email: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "USER_EXISTS",
        format!("a user with the e-mail address {email} already exists"),
    )
}

fn find(conn: &mut Conn, id: UserId) -> DbResult<User> {
    User::find_by_id(conn, id)?.ok_or(DbError::Query(diesel::result::Error::NotFound))
}

/// `POST /api/users`
pub async fn create(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Body(form): Body<UserForm>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let form = form.checked()?;
    let email = form.email.clone();
    let user = audited(&state, caller.actor(), move |conn| {
        let user = NewUser {
            display_name: form.display_name.clone(),
            email: form.email.clone(),
            mailbox_login: form.mailbox_login.clone(),
        }
        .save(conn)?;
        let entry = (
            "user.create",
            format!("user/{}", user.id),
            None,
            Some(json(&user)),
        );
        Ok((user, entry))
    })
    .await
    .map_err(|e| db_failure(e, "", Some(email_taken(&email))))?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

/// `GET /api/users/{id}`
pub async fn get(
    State(state): State<ServerState>,
    Id(id): Id<i64>,
) -> Result<Json<UserView>, ApiError> {
    let user = state
        .db
        .run(move |conn| find(conn, UserId(id)))
        .await
        .map_err(|e| db_failure(e, &missing(id), None))?;
    Ok(Json(UserView::from(&user)))
}

/// `PUT /api/users/{id}`
pub async fn update(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
    Body(form): Body<UserForm>,
) -> Result<Json<UserView>, ApiError> {
    let form = form.checked()?;
    let status = match form.account_status.as_deref() {
        None => None,
        Some(text) => match AccountStatus::parse(text) {
            Some(s @ (AccountStatus::Active | AccountStatus::Disabled)) => Some(s),
            _ => {
                return Err(invalid(format!(
                "`{text}` is not an account status an administrator can set; use active or disabled"
            )))
            }
        },
    };
    let email = form.email.clone();
    let user = audited(&state, caller.actor(), move |conn| {
        let mut user = find(conn, UserId(id))?;
        let before = json(&user);
        user.display_name = form.display_name.clone();
        user.email = form.email.clone();
        user.mailbox_login = form.mailbox_login.clone();
        if let Some(status) = status {
            user.account_status = status;
        }
        user.save(conn)?;
        let entry = (
            "user.update",
            format!("user/{}", user.id),
            Some(before),
            Some(json(&user)),
        );
        Ok((user, entry))
    })
    .await
    .map_err(|e| db_failure(e, &missing(id), Some(email_taken(&email))))?;
    Ok(Json(UserView::from(&user)))
}

fn missing(id: i64) -> String {
    format!("there is no user {id}; it may have been deleted")
}

/// `DELETE /api/users/{id}`
pub async fn delete(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
) -> Result<StatusCode, ApiError> {
    audited(&state, caller.actor(), move |conn| {
        let user = find(conn, UserId(id))?;
        let groups: Vec<String> = Group::find_by_member(conn, user.id)?
            .into_iter()
            .map(|g| g.name)
            .collect();
        User::delete_by_id(conn, user.id)?;
        let mut before = json(&user);
        before["groups"] = serde_json::json!(groups);
        Ok((
            (),
            ("user.delete", format!("user/{id}"), Some(before), None),
        ))
    })
    .await
    .map_err(|e| db_failure(e, &missing(id), None))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/users/{id}/groups`
pub async fn groups(
    State(state): State<ServerState>,
    Id(id): Id<i64>,
) -> Result<Json<Vec<GroupView>>, ApiError> {
    let groups = state
        .db
        .run(move |conn| {
            find(conn, UserId(id))?;
            Group::find_by_member(conn, UserId(id))
        })
        .await
        .map_err(|e| db_failure(e, &missing(id), None))?;
    Ok(Json(groups.iter().map(GroupView::from).collect()))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct UserGroups {
    pub group_ids: Vec<i64>,
}

/// `PUT /api/users/{id}/groups`: makes the user's groups exactly these.
pub async fn set_groups(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
    Body(form): Body<UserGroups>,
) -> Result<Json<Vec<GroupView>>, ApiError> {
    let groups = audited(&state, caller.actor(), move |conn| {
        let user = find(conn, UserId(id))?;
        let before: Vec<Group> = Group::find_by_member(conn, user.id)?;
        let wanted: Vec<GroupId> = form.group_ids.iter().map(|g| GroupId(*g)).collect();
        for group in &wanted {
            if Group::find_by_id(conn, *group)?.is_none() {
                return Err(ChangeError::invalid(format!("there is no group {group}")));
            }
        }
        for group in &before {
            if !wanted.contains(&group.id) {
                Group::delete_member(conn, group.id, user.id)?;
            }
        }
        for group in &wanted {
            Group::add_member(conn, *group, user.id)?;
        }
        let after = Group::find_by_member(conn, user.id)?;
        let names =
            |gs: &[Group]| serde_json::json!(gs.iter().map(|g| g.name.clone()).collect::<Vec<_>>());
        let entry = (
            "user.groups",
            format!("user/{id}"),
            Some(serde_json::json!({"groups": names(&before)})),
            Some(serde_json::json!({"groups": names(&after)})),
        );
        Ok((after, entry))
    })
    .await
    .map_err(|e: ChangeError| e.answer(|e| db_failure(e, &missing(id), None)))?;
    Ok(Json(groups.iter().map(GroupView::from).collect()))
}

/// What to send again to a user's device.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ResendForm {
    /// `policy` (the user's IT policy) or `service_books`.
    #[schemars(extend("enum" = ["policy", "service_books"]))]
    pub what: String,
}

/// What was asked of the Policy Service.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ResendView {
    /// `policy` or `service_books`.
    pub what: &'static str,
    pub device_id: i64,
    /// The PIN of the device it goes to.
    pub pin: String,
}

/// The user's activated device (the newest holding a transport key).
fn activated_device(conn: &mut Conn, user: UserId) -> DbResult<Option<Device>> {
    let mut found = None;
    for device in Device::find_by_user(conn, user)? {
        if !DeviceKey::find_all_for_device(conn, device.id)?.is_empty() {
            found = Some(device);
        }
    }
    Ok(found)
}

/// `POST /api/users/{id}/resend`: has the Policy Service send the user's
/// resolved, signed IT policy, or the service books, to the user's
/// activated device now.
pub async fn resend(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
    Body(form): Body<ResendForm>,
) -> Result<(StatusCode, Json<ResendView>), ApiError> {
    let what = Resend::parse(form.what.trim()).ok_or_else(|| {
        invalid(format!(
            "`{}` cannot be sent again; use policy or service_books",
            form.what
        ))
    })?;
    let (user, device) = audited(&state, caller.actor(), move |conn| {
        let user = find(conn, UserId(id))?;
        let device = activated_device(conn, user.id)?.ok_or_else(|| {
            ChangeError::refused(
                StatusCode::CONFLICT,
                "NO_DEVICE",
                format!(
                    "{} has no activated device to send it to; activate a device first",
                    user.display_name
                ),
            )
        })?;
        let entry = (
            "user.resend",
            format!("user/{id}"),
            None,
            Some(serde_json::json!({
                "what": what.as_str(),
                "device": device.id.0,
                "pin": device.pin.to_string(),
            })),
        );
        Ok(((user.id, device), entry))
    })
    .await
    .map_err(|e: ChangeError| e.answer(|e| db_failure(e, &missing(id), None)))?;
    state.dispatcher.announce(DeliveryEvent::ResendRequested {
        pin: device.pin,
        user,
        what,
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(ResendView {
            what: what.as_str(),
            device_id: device.id.0,
            pin: device.pin.to_string(),
        }),
    ))
}
