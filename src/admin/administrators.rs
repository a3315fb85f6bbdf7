//! Administrators, roles and administrator groups. At least one enabled
//! administrator always holds the Security Administrator role, so the
//! console can never lock everyone out of administering it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::extract::{Body, Id};
use super::permission::valid_grant;
use super::ServerState;
use super::{audited, db_failure, rfc3339, ApiError, ChangeError};
use crate::db::ids::{AdministratorGroupId, AdministratorId, RoleId};
use crate::db::models::administrator::{
    Administrator, NewAdministrator, Role, SECURITY_ADMINISTRATOR,
};
use crate::db::models::administrator_group::{effective_roles, AdministratorGroup};
use crate::db::models::session::Session;
use crate::db::{Conn, DbError, DbResult};

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AdministratorView {
    pub id: i64,
    pub login: String,
    pub display_name: String,
    pub disabled: bool,
    pub created_at: String,
    /// Roles given to the administrator directly.
    pub roles: Vec<String>,
    pub role_ids: Vec<i64>,
    /// Administrator groups they belong to.
    pub groups: Vec<String>,
    /// Every role they hold, directly or through a group.
    pub effective_roles: Vec<String>,
}

fn view(conn: &mut Conn, admin: &Administrator) -> DbResult<AdministratorView> {
    let own = Administrator::find_roles(conn, admin.id)?;
    Ok(AdministratorView {
        id: admin.id.0,
        login: admin.login.clone(),
        display_name: admin.display_name.clone(),
        disabled: admin.disabled,
        created_at: rfc3339(admin.created_at),
        role_ids: own.iter().map(|r| r.id.0).collect(),
        roles: own.into_iter().map(|r| r.name).collect(),
        groups: AdministratorGroup::find_by_member(conn, admin.id)?
            .into_iter()
            .map(|g| g.name)
            .collect(),
        effective_roles: effective_roles(conn, admin.id)?
            .into_iter()
            .map(|r| r.name)
            .collect(),
    })
}

fn audit_state(v: &AdministratorView) -> serde_json::Value {
    json!({"login": v.login, "display_name": v.display_name, "disabled": v.disabled, "roles": v.roles})
}

/// Refuses a change that would leave no enabled Security Administrator.
fn keep_a_security_administrator(conn: &mut Conn) -> Result<(), ChangeError> {
    for admin in Administrator::find_all(conn)? {
        if !admin.disabled
            && effective_roles(conn, admin.id)?
                .iter()
                .any(|r| r.name == SECURITY_ADMINISTRATOR)
        {
            return Ok(());
        }
    }
    Err(ChangeError::invalid(
        "this change would leave no enabled Security Administrator; give the role to another administrator first",
    ))
}

fn check_roles(conn: &mut Conn, ids: &[i64]) -> Result<Vec<RoleId>, ChangeError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if Role::find_by_id(conn, RoleId(*id))?.is_none() {
            return Err(ChangeError::invalid(format!("there is no role {id}")));
        }
        out.push(RoleId(*id));
    }
    Ok(out)
}

/// `GET /api/administrators`
pub async fn list(
    State(state): State<ServerState>,
) -> Result<Json<Vec<AdministratorView>>, ApiError> {
    let all = state
        .db
        .run(|conn| {
            let admins = Administrator::find_all(conn)?;
            admins.iter().map(|a| view(conn, a)).collect()
        })
        .await?;
    Ok(Json(all))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct NewAdministratorForm {
    pub login: String,
    #[serde(default)]
    pub display_name: String,
    pub password: String,
    #[serde(default)]
    pub role_ids: Vec<i64>,
}

/// `POST /api/administrators`
pub async fn create(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Body(form): Body<NewAdministratorForm>,
) -> Result<(StatusCode, Json<AdministratorView>), ApiError> {
    let created = audited(&state, caller.actor(), move |conn| {
        let roles = check_roles(conn, &form.role_ids)?;
        let login = form.login.trim().to_owned();
        let admin = NewAdministrator {
            display_name: if form.display_name.trim().is_empty() {
                login.clone()
            } else {
                form.display_name.trim().to_owned()
            },
            login,
            password: form.password.clone(),
        }
        .save(conn)?;
        Administrator::set_roles(conn, admin.id, &roles)?;
        let v = view(conn, &admin)?;
        let entry = (
            "administrator.create",
            format!("administrator/{}", admin.id),
            None,
            Some(audit_state(&v)),
        );
        Ok((v, entry))
    })
    .await
    .map_err(|e: ChangeError| e.answer(|e| db_failure(e, "", None)))?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AdministratorEdit {
    pub display_name: Option<String>,
    pub disabled: Option<bool>,
    pub role_ids: Option<Vec<i64>>,
}

/// `PUT /api/administrators/{id}`: display name, disabled, own roles.
pub async fn update(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
    Body(form): Body<AdministratorEdit>,
) -> Result<Json<AdministratorView>, ApiError> {
    let updated = audited(&state, caller.actor(), move |conn| {
        let mut admin = Administrator::find_by_id(conn, AdministratorId(id))?
            .ok_or(DbError::Query(diesel::result::Error::NotFound))?;
        let before = view(conn, &admin)?;
        if let Some(name) = &form.display_name {
            admin.display_name = name.trim().to_owned();
        }
        if let Some(disabled) = form.disabled {
            admin.disabled = disabled;
        }
        admin.save(conn)?;
        if let Some(ids) = &form.role_ids {
            let roles = check_roles(conn, ids)?;
            Administrator::set_roles(conn, admin.id, &roles)?;
        }
        keep_a_security_administrator(conn)?;
        if admin.disabled {
            Session::delete_by_administrator(conn, admin.id)?;
        }
        let after = view(conn, &admin)?;
        let entry = (
            "administrator.update",
            format!("administrator/{id}"),
            Some(audit_state(&before)),
            Some(audit_state(&after)),
        );
        Ok((after, entry))
    })
    .await
    .map_err(|e: ChangeError| {
        e.answer(|e| db_failure(e, &format!("there is no administrator {id}"), None))
    })?;
    Ok(Json(updated))
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct RoleView {
    pub id: i64,
    pub name: String,
    pub builtin: bool,
    /// Grants: permission names, `area.*` or `*`.
    pub permissions: Vec<String>,
}

impl From<&Role> for RoleView {
    fn from(r: &Role) -> Self {
        RoleView {
            id: r.id.0,
            name: r.name.clone(),
            builtin: r.builtin,
            permissions: r.permission_list(),
        }
    }
}

/// `GET /api/roles`
pub async fn roles(State(state): State<ServerState>) -> Result<Json<Vec<RoleView>>, ApiError> {
    let roles = state.db.run(Role::find_all).await?;
    Ok(Json(roles.iter().map(RoleView::from).collect()))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RoleForm {
    pub name: String,
    pub permissions: Vec<String>,
}

/// `POST /api/roles`: a custom role.
pub async fn create_role(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Body(form): Body<RoleForm>,
) -> Result<(StatusCode, Json<RoleView>), ApiError> {
    let name = form.name.trim().to_owned();
    if name.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            "a role needs a name",
        ));
    }
    if let Some(bad) = form.permissions.iter().find(|g| !valid_grant(g)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "UNKNOWN_PERMISSION",
            format!("`{bad}` is not a permission; GET /api/permissions lists them"),
        ));
    }
    let taken = ApiError::new(
        StatusCode::CONFLICT,
        "ROLE_EXISTS",
        format!("a role named `{name}` already exists"),
    );
    let role = audited(&state, caller.actor(), move |conn| {
        let grants: Vec<&str> = form.permissions.iter().map(String::as_str).collect();
        let role = Role::create(conn, &name, &grants)?;
        let entry = (
            "role.create",
            format!("role/{}", role.id),
            None,
            Some(json!({"name": role.name, "permissions": role.permission_list()})),
        );
        Ok((role, entry))
    })
    .await
    .map_err(|e: ChangeError| e.answer(|e| db_failure(e, "", Some(taken))))?;
    Ok((StatusCode::CREATED, Json(RoleView::from(&role))))
}

/// `DELETE /api/roles/{id}`: custom roles only.
pub async fn delete_role(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
) -> Result<StatusCode, ApiError> {
    audited(&state, caller.actor(), move |conn| {
        let role = Role::find_by_id(conn, RoleId(id))?
            .ok_or(DbError::Query(diesel::result::Error::NotFound))?;
        if role.builtin {
            return Err(ChangeError::invalid(format!(
                "`{}` is a built-in role and cannot be deleted",
                role.name
            )));
        }
        Role::delete_by_id(conn, role.id)?;
        let before = json!({"name": role.name, "permissions": role.permission_list()});
        Ok((
            (),
            ("role.delete", format!("role/{id}"), Some(before), None),
        ))
    })
    .await
    .map_err(|e: ChangeError| {
        e.answer(|e| db_failure(e, &format!("there is no role {id}"), None))
    })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct AdministratorGroupView {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub roles: Vec<String>,
    pub role_ids: Vec<i64>,
    pub administrator_ids: Vec<i64>,
}

fn group_view(conn: &mut Conn, g: &AdministratorGroup) -> DbResult<AdministratorGroupView> {
    let roles = AdministratorGroup::find_roles(conn, g.id)?;
    Ok(AdministratorGroupView {
        id: g.id.0,
        name: g.name.clone(),
        description: g.description.clone(),
        role_ids: roles.iter().map(|r| r.id.0).collect(),
        roles: roles.into_iter().map(|r| r.name).collect(),
        administrator_ids: AdministratorGroup::find_member_ids(conn, g.id)?
            .into_iter()
            .map(|a| a.0)
            .collect(),
    })
}

/// `GET /api/administrator-groups`
pub async fn groups(
    State(state): State<ServerState>,
) -> Result<Json<Vec<AdministratorGroupView>>, ApiError> {
    let all = state
        .db
        .run(|conn| {
            let groups = AdministratorGroup::find_all(conn)?;
            groups.iter().map(|g| group_view(conn, g)).collect()
        })
        .await?;
    Ok(Json(all))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AdministratorGroupForm {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub role_ids: Vec<i64>,
    #[serde(default)]
    pub administrator_ids: Vec<i64>,
}

/// `POST /api/administrator-groups`
pub async fn create_group(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Body(form): Body<AdministratorGroupForm>,
) -> Result<(StatusCode, Json<AdministratorGroupView>), ApiError> {
    let created = audited(&state, caller.actor(), move |conn| {
        let roles = check_roles(conn, &form.role_ids)?;
        let mut members = Vec::new();
        for id in &form.administrator_ids {
            if Administrator::find_by_id(conn, AdministratorId(*id))?.is_none() {
                return Err(ChangeError::invalid(format!(
                    "there is no administrator {id}"
                )));
            }
            members.push(AdministratorId(*id));
        }
        let group = AdministratorGroup::create(conn, &form.name, form.description.trim())?;
        AdministratorGroup::set_roles(conn, group.id, &roles)?;
        AdministratorGroup::set_members(conn, group.id, &members)?;
        let v = group_view(conn, &group)?;
        let after = serde_json::to_value(&v).unwrap_or_default();
        Ok((
            v,
            (
                "administrator_group.create",
                format!("administrator_group/{}", group.id),
                None,
                Some(after),
            ),
        ))
    })
    .await
    .map_err(|e: ChangeError| e.answer(|e| db_failure(e, "", None)))?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `DELETE /api/administrator-groups/{id}`
pub async fn delete_group(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
) -> Result<StatusCode, ApiError> {
    audited(&state, caller.actor(), move |conn| {
        let group = AdministratorGroup::find_by_id(conn, AdministratorGroupId(id))?
            .ok_or(DbError::Query(diesel::result::Error::NotFound))?;
        let before = serde_json::to_value(group_view(conn, &group)?).unwrap_or_default();
        AdministratorGroup::delete_by_id(conn, group.id)?;
        keep_a_security_administrator(conn)?;
        Ok((
            (),
            (
                "administrator_group.delete",
                format!("administrator_group/{id}"),
                Some(before),
                None,
            ),
        ))
    })
    .await
    .map_err(|e: ChangeError| {
        e.answer(|e| db_failure(e, &format!("there is no administrator group {id}"), None))
    })?;
    Ok(StatusCode::NO_CONTENT)
}
