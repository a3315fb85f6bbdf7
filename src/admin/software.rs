//! Software configurations in the console: named lists of applications,
//! each required, optional or disallowed, assigned to users and groups.
//! Every change is audited.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::auth::Caller;
use super::extract::{Body, Id};
use super::ServerState;
use super::{audited, db_failure, rfc3339, ApiError};
use crate::db::ids::{GroupId, SoftwareAssignmentId, SoftwareConfigurationId, UserId};
use crate::db::models::group::Group;
use crate::db::models::it_policy::AssignmentTarget;
use crate::db::models::software::{Disposition, SoftwareAssignment, SoftwareConfiguration};
use crate::db::models::user::User;
use crate::db::{Conn, DbError, DbResult};

/// One application of a configuration.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApplicationView {
    pub name: String,
    #[serde(default)]
    pub version: String,
    /// `required`, `optional` or `disallowed`.
    pub disposition: String,
}

/// A configuration in the list.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SoftwareSummary {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub created_at: String,
    pub applications: usize,
    pub assignments: usize,
}

/// Whom a configuration is assigned to.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SoftwareAssignmentView {
    pub id: i64,
    /// `user` or `group`.
    pub target: &'static str,
    pub user_id: Option<i64>,
    pub group_id: Option<i64>,
    /// The user's display name and address, or the group's name.
    pub name: String,
}

/// A configuration with its applications and assignments.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SoftwareDetail {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub created_at: String,
    /// By name.
    pub applications: Vec<ApplicationView>,
    pub assignments: Vec<SoftwareAssignmentView>,
}

/// Creates or changes a configuration.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SoftwareForm {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// When given, the applications become exactly these.
    #[serde(default)]
    pub applications: Option<Vec<ApplicationView>>,
}

/// Assigns a configuration to one user or one group.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SoftwareAssignmentForm {
    #[serde(default)]
    pub user_id: Option<i64>,
    #[serde(default)]
    pub group_id: Option<i64>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", message)
}

fn missing(id: i64) -> String {
    format!("there is no software configuration {id}; it may have been deleted")
}

fn find(conn: &mut Conn, id: SoftwareConfigurationId) -> DbResult<SoftwareConfiguration> {
    SoftwareConfiguration::find_by_id(conn, id)?
        .ok_or(DbError::Query(diesel::result::Error::NotFound))
}

/// The applications checked: names given and unique, dispositions known.
fn checked(apps: &[ApplicationView]) -> Result<Vec<(String, String, Disposition)>, ApiError> {
    let mut out: Vec<(String, String, Disposition)> = Vec::new();
    for app in apps {
        let name = app.name.trim().to_owned();
        if name.is_empty() {
            return Err(invalid("every application needs a name"));
        }
        if out.iter().any(|(n, _, _)| n == &name) {
            return Err(invalid(format!("application `{name}` is listed twice")));
        }
        let disposition = Disposition::parse(&app.disposition).ok_or_else(|| {
            invalid(format!(
                "`{}` is not a disposition for application `{name}`; use required, optional or disallowed",
                app.disposition
            ))
        })?;
        out.push((name, app.version.trim().to_owned(), disposition));
    }
    Ok(out)
}

fn assignment_view(conn: &mut Conn, a: &SoftwareAssignment) -> DbResult<SoftwareAssignmentView> {
    Ok(match a.target {
        AssignmentTarget::User(user) => SoftwareAssignmentView {
            id: a.id.0,
            target: "user",
            user_id: Some(user.0),
            group_id: None,
            name: User::find_by_id(conn, user)?
                .map(|u| format!("{} <{}>", u.display_name, u.email))
                .unwrap_or_else(|| format!("user {user}")),
        },
        AssignmentTarget::Group(group) => SoftwareAssignmentView {
            id: a.id.0,
            target: "group",
            user_id: None,
            group_id: Some(group.0),
            name: Group::find_by_id(conn, group)?
                .map(|g| g.name)
                .unwrap_or_else(|| format!("group {group}")),
        },
    })
}

fn detail(conn: &mut Conn, id: SoftwareConfigurationId) -> DbResult<SoftwareDetail> {
    let config = find(conn, id)?;
    let applications = SoftwareConfiguration::find_applications(conn, id)?
        .into_iter()
        .map(|a| ApplicationView {
            name: a.name,
            version: a.version,
            disposition: a.disposition.as_str().to_owned(),
        })
        .collect();
    let mut assignments = Vec::new();
    for a in SoftwareConfiguration::find_assignments(conn, id)? {
        assignments.push(assignment_view(conn, &a)?);
    }
    Ok(SoftwareDetail {
        id: config.id.0,
        name: config.name,
        description: config.description,
        created_at: rfc3339(config.created_at),
        applications,
        assignments,
    })
}

fn audit_state(conn: &mut Conn, id: SoftwareConfigurationId) -> DbResult<Value> {
    let d = detail(conn, id)?;
    Ok(json!({"name": d.name, "description": d.description, "applications": d.applications}))
}

fn write_applications(
    conn: &mut Conn,
    id: SoftwareConfigurationId,
    apps: &Option<Vec<(String, String, Disposition)>>,
) -> DbResult<()> {
    let Some(apps) = apps else {
        return Ok(());
    };
    for existing in SoftwareConfiguration::find_applications(conn, id)? {
        if !apps.iter().any(|(name, _, _)| name == &existing.name) {
            SoftwareConfiguration::delete_application(conn, existing.id)?;
        }
    }
    for (name, version, disposition) in apps {
        SoftwareConfiguration::set_application(conn, id, name, version, *disposition)?;
    }
    Ok(())
}

/// `GET /api/software`
pub async fn list(
    State(state): State<ServerState>,
) -> Result<Json<Vec<SoftwareSummary>>, ApiError> {
    let list = state
        .db
        .run(|conn| {
            let mut out = Vec::new();
            for c in SoftwareConfiguration::find_all(conn)? {
                out.push(SoftwareSummary {
                    applications: SoftwareConfiguration::find_applications(conn, c.id)?.len(),
                    assignments: SoftwareConfiguration::find_assignments(conn, c.id)?.len(),
                    id: c.id.0,
                    name: c.name,
                    description: c.description,
                    created_at: rfc3339(c.created_at),
                });
            }
            Ok(out)
        })
        .await?;
    Ok(Json(list))
}

/// `GET /api/software/{id}`
pub async fn get(
    State(state): State<ServerState>,
    Id(id): Id<i64>,
) -> Result<Json<SoftwareDetail>, ApiError> {
    let d = state
        .db
        .run(move |conn| detail(conn, SoftwareConfigurationId(id)))
        .await
        .map_err(|e| db_failure(e, &missing(id), None))?;
    Ok(Json(d))
}

fn taken(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "SOFTWARE_CONFIGURATION_EXISTS",
        format!("a software configuration named `{name}` already exists"),
    )
}

/// `POST /api/software`
pub async fn create(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Body(form): Body<SoftwareForm>,
) -> Result<(StatusCode, Json<SoftwareDetail>), ApiError> {
    let name = form.name.trim().to_owned();
    if name.is_empty() {
        return Err(invalid("a software configuration needs a name"));
    }
    let apps = form.applications.as_deref().map(checked).transpose()?;
    let conflict = taken(&name);
    let d = audited(&state, caller.actor(), move |conn| {
        let config = SoftwareConfiguration::create(conn, &name, form.description.trim())?;
        write_applications(conn, config.id, &apps)?;
        let after = audit_state(conn, config.id)?;
        Ok((
            detail(conn, config.id)?,
            (
                "software.create",
                format!("software/{}", config.id.0),
                None,
                Some(after),
            ),
        ))
    })
    .await
    .map_err(|e| db_failure(e, "", Some(conflict)))?;
    Ok((StatusCode::CREATED, Json(d)))
}

/// `PUT /api/software/{id}`
pub async fn update(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
    Body(form): Body<SoftwareForm>,
) -> Result<Json<SoftwareDetail>, ApiError> {
    let name = form.name.trim().to_owned();
    if name.is_empty() {
        return Err(invalid("a software configuration needs a name"));
    }
    let apps = form.applications.as_deref().map(checked).transpose()?;
    let conflict = taken(&name);
    let d = audited(&state, caller.actor(), move |conn| {
        let id = SoftwareConfigurationId(id);
        let before = audit_state(conn, id)?;
        let mut config = find(conn, id)?;
        config.name = name;
        config.description = form.description.trim().to_owned();
        config.save(conn)?;
        write_applications(conn, id, &apps)?;
        let after = audit_state(conn, id)?;
        Ok((
            detail(conn, id)?,
            (
                "software.update",
                format!("software/{}", id.0),
                Some(before),
                Some(after),
            ),
        ))
    })
    .await
    .map_err(|e| db_failure(e, &missing(id), Some(conflict)))?;
    Ok(Json(d))
}

/// `DELETE /api/software/{id}`: its applications and assignments go with it.
pub async fn delete(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
) -> Result<StatusCode, ApiError> {
    audited(&state, caller.actor(), move |conn| {
        let config = SoftwareConfigurationId(id);
        let mut before = audit_state(conn, config)?;
        let mut assigned = Vec::new();
        for a in SoftwareConfiguration::find_assignments(conn, config)? {
            assigned.push(assignment_view(conn, &a)?.name);
        }
        before["assigned_to"] = json!(assigned);
        SoftwareConfiguration::delete_by_id(conn, config)?;
        Ok((
            (),
            (
                "software.delete",
                format!("software/{id}"),
                Some(before),
                None,
            ),
        ))
    })
    .await
    .map_err(|e| db_failure(e, &missing(id), None))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/software/{id}/assignments`
pub async fn assign(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
    Body(form): Body<SoftwareAssignmentForm>,
) -> Result<(StatusCode, Json<SoftwareAssignmentView>), ApiError> {
    let target = match (form.user_id, form.group_id) {
        (Some(user), None) => AssignmentTarget::User(UserId(user)),
        (None, Some(group)) => AssignmentTarget::Group(GroupId(group)),
        _ => {
            return Err(invalid(
                "assign a software configuration to one user (user_id) or one group (group_id)",
            ))
        }
    };
    let view = audited(&state, caller.actor(), move |conn| {
        let config = find(conn, SoftwareConfigurationId(id))?;
        match target {
            AssignmentTarget::User(user) => {
                User::find_by_id(conn, user)?
                    .ok_or_else(|| DbError::Invalid(format!("there is no user {user}")))?;
            }
            AssignmentTarget::Group(group) => {
                Group::find_by_id(conn, group)?
                    .ok_or_else(|| DbError::Invalid(format!("there is no group {group}")))?;
            }
        }
        let assignment = SoftwareConfiguration::assign(conn, config.id, target)?;
        let view = assignment_view(conn, &assignment)?;
        let mut after = serde_json::to_value(&view).unwrap_or_default();
        after["software"] = json!(config.name);
        Ok((
            view,
            (
                "software.assign",
                format!("software/{id}"),
                None,
                Some(after),
            ),
        ))
    })
    .await
    .map_err(|e| db_failure(e, &missing(id), None))?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `DELETE /api/software/{id}/assignments/{assignment_id}`
pub async fn unassign(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id((id, assignment)): Id<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    audited(&state, caller.actor(), move |conn| {
        let config = find(conn, SoftwareConfigurationId(id))?;
        let found = SoftwareConfiguration::find_assignments(conn, config.id)?
            .into_iter()
            .find(|a| a.id == SoftwareAssignmentId(assignment))
            .ok_or_else(|| {
                DbError::Invalid(format!(
                    "software configuration {} has no assignment {assignment}",
                    config.name
                ))
            })?;
        let mut before = serde_json::to_value(assignment_view(conn, &found)?).unwrap_or_default();
        before["software"] = json!(config.name);
        SoftwareConfiguration::delete_assignment(conn, found.id)?;
        Ok((
            (),
            (
                "software.unassign",
                format!("software/{id}"),
                Some(before),
                None,
            ),
        ))
    })
    .await
    .map_err(|e| db_failure(e, &missing(id), None))?;
    Ok(StatusCode::NO_CONTENT)
}
