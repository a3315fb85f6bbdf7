//! Software configurations in the console: named lists of applications,
//! each required, optional or disallowed, assigned to users and groups
//! ([`assignments`] serves it). Every change is audited.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::assignments::{self, Assignable, Assignee, AssignmentRequest, Stored};
use super::auth::Caller;
use super::extract::{Body, Id};
use super::ServerState;
use super::{audited, db_failure, rfc3339, ApiError};
use crate::db::ids::{SoftwareAssignmentId, SoftwareConfigurationId};
use crate::db::models::it_policy::AssignmentTarget;
use crate::db::models::software::{Disposition, SoftwareAssignment, SoftwareConfiguration};
use crate::db::{Conn, DbError, DbResult};

/// One application of a configuration.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApplicationView {
    pub name: String,
    #[serde(default)]
    pub version: String,
    /// `required`, `optional` or `disallowed`.
    #[schemars(extend("enum" = ["required", "optional", "disallowed"]))]
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
    #[schemars(extend("enum" = ["user", "group"]))]
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
    let assignments = assignments::views::<SoftwareConfiguration>(conn, id.0)?;
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
        before["assigned_to"] = json!(assignments::assigned_to::<SoftwareConfiguration>(conn, id)?);
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

impl AssignmentRequest for SoftwareAssignmentForm {
    fn user_id(&self) -> Option<i64> {
        self.user_id
    }

    fn group_id(&self) -> Option<i64> {
        self.group_id
    }
}

/// Configurations add up: a user or group can have several, and assigning
/// one again keeps the assignment it has.
impl Assignable for SoftwareConfiguration {
    const NOUN: &'static str = "software configuration";
    const A_NOUN: &'static str = "a software configuration";
    const AUDIT: &'static str = "software";
    const ASSIGNED: &'static str = "software.assign";
    const UNASSIGNED: &'static str = "software.unassign";
    const RANKED: bool = false;

    type Request = SoftwareAssignmentForm;
    type View = SoftwareAssignmentView;

    fn name(conn: &mut Conn, id: i64) -> DbResult<String> {
        Ok(find(conn, SoftwareConfigurationId(id))?.name)
    }

    fn assignments(conn: &mut Conn, id: i64) -> DbResult<Vec<Stored>> {
        Ok(
            SoftwareConfiguration::find_assignments(conn, SoftwareConfigurationId(id))?
                .into_iter()
                .map(stored)
                .collect(),
        )
    }

    fn replaced(_conn: &mut Conn, _target: AssignmentTarget) -> DbResult<Option<Stored>> {
        Ok(None)
    }

    fn assign(conn: &mut Conn, id: i64, target: AssignmentTarget, _rank: i32) -> DbResult<Stored> {
        Ok(stored(SoftwareConfiguration::assign(
            conn,
            SoftwareConfigurationId(id),
            target,
        )?))
    }

    fn unassign(conn: &mut Conn, assignment: i64) -> DbResult<bool> {
        SoftwareConfiguration::delete_assignment(conn, SoftwareAssignmentId(assignment))
    }

    fn view(stored: &Stored, assignee: Assignee) -> SoftwareAssignmentView {
        SoftwareAssignmentView {
            id: stored.id,
            target: assignee.kind,
            user_id: assignee.user_id,
            group_id: assignee.group_id,
            name: assignee.name,
        }
    }
}

fn stored(a: SoftwareAssignment) -> Stored {
    Stored {
        id: a.id.0,
        owner: a.configuration_id.0,
        target: a.target,
        rank: 0,
    }
}
