//! User groups and their membership; every change is audited.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::extract::{Body, Id};
use super::users::UserView;
use super::ServerState;
use super::{audited, db_failure, rfc3339, ApiError, ChangeError};
use crate::db::ids::{GroupId, UserId};
use crate::db::models::group::Group;
use crate::db::models::user::User;
use crate::db::{Conn, DbError, DbResult};

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct GroupView {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub created_at: String,
}

impl From<&Group> for GroupView {
    fn from(g: &Group) -> Self {
        GroupView {
            id: g.id.0,
            name: g.name.clone(),
            description: g.description.clone(),
            created_at: rfc3339(g.created_at),
        }
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct GroupSummary {
    #[serde(flatten)]
    pub group: GroupView,
    pub members: usize,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct GroupDetail {
    #[serde(flatten)]
    pub group: GroupView,
    pub members: Vec<UserView>,
}

fn find(conn: &mut Conn, id: GroupId) -> DbResult<Group> {
    Group::find_by_id(conn, id)?.ok_or(DbError::Query(diesel::result::Error::NotFound))
}

fn missing(id: i64) -> String {
    format!("there is no group {id}; it may have been deleted")
}

/// `GET /api/groups`
pub async fn list(State(state): State<ServerState>) -> Result<Json<Vec<GroupSummary>>, ApiError> {
    let groups = state
        .db
        .run(|conn| {
            let groups = Group::find_all(conn)?;
            let mut out = Vec::with_capacity(groups.len());
            for g in &groups {
                out.push(GroupSummary {
                    group: GroupView::from(g),
                    members: Group::find_member_ids(conn, g.id)?.len(),
                });
            }
            Ok(out)
        })
        .await?;
    Ok(Json(groups))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct GroupForm {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// `POST /api/groups`
pub async fn create(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Body(form): Body<GroupForm>,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    let name = form.name.trim().to_owned();
    if name.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            "a group needs a name",
        ));
    }
    let taken = ApiError::new(
        StatusCode::CONFLICT,
        "GROUP_EXISTS",
        format!("a group named `{name}` already exists"),
    );
    let group = audited(&state, caller.actor(), move |conn| {
        let group = Group::create(conn, &name, form.description.trim())?;
        let after = serde_json::to_value(GroupView::from(&group)).unwrap_or_default();
        let entry = (
            "group.create",
            format!("group/{}", group.id),
            None,
            Some(after),
        );
        Ok((group, entry))
    })
    .await
    .map_err(|e| db_failure(e, "", Some(taken)))?;
    Ok((StatusCode::CREATED, Json(GroupView::from(&group))))
}

/// `GET /api/groups/{id}`: the group with its members.
pub async fn get(
    State(state): State<ServerState>,
    Id(id): Id<i64>,
) -> Result<Json<GroupDetail>, ApiError> {
    let detail = state
        .db
        .run(move |conn| {
            let group = find(conn, GroupId(id))?;
            let mut members = Vec::new();
            for user in Group::find_member_ids(conn, group.id)? {
                if let Some(user) = User::find_by_id(conn, user)? {
                    members.push(UserView::from(&user));
                }
            }
            Ok(GroupDetail {
                group: GroupView::from(&group),
                members,
            })
        })
        .await
        .map_err(|e| db_failure(e, &missing(id), None))?;
    Ok(Json(detail))
}

/// `DELETE /api/groups/{id}`
pub async fn delete(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
) -> Result<StatusCode, ApiError> {
    audited(&state, caller.actor(), move |conn| {
        let group = find(conn, GroupId(id))?;
        let members = Group::find_member_ids(conn, group.id)?;
        Group::delete_by_id(conn, group.id)?;
        let mut before = serde_json::to_value(GroupView::from(&group)).unwrap_or_default();
        before["member_ids"] = json!(members);
        Ok((
            (),
            ("group.delete", format!("group/{id}"), Some(before), None),
        ))
    })
    .await
    .map_err(|e| db_failure(e, &missing(id), None))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn membership(
    state: ServerState,
    caller: Caller,
    group: i64,
    user: i64,
    add: bool,
) -> Result<StatusCode, ApiError> {
    audited(&state, caller.actor(), move |conn| {
        let g = find(conn, GroupId(group))?;
        let u = User::find_by_id(conn, UserId(user))?
            .ok_or_else(|| ChangeError::invalid(format!("there is no user {user}")))?;
        let was = Group::find_member_ids(conn, g.id)?.contains(&u.id);
        if add {
            Group::add_member(conn, g.id, u.id)?;
        } else {
            Group::delete_member(conn, g.id, u.id)?;
        }
        let state =
            |member: bool| Some(json!({"group": g.name, "user": u.email, "member": member}));
        let action = if add {
            "group.member.add"
        } else {
            "group.member.remove"
        };
        Ok((
            (),
            (action, format!("group/{group}"), state(was), state(add)),
        ))
    })
    .await
    .map_err(|e: ChangeError| e.answer(|e| db_failure(e, &missing(group), None)))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/groups/{id}/members/{user_id}`
pub async fn add_member(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id((group, user)): Id<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    membership(state, caller, group, user, true).await
}

/// `DELETE /api/groups/{id}/members/{user_id}`
pub async fn remove_member(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id((group, user)): Id<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    membership(state, caller, group, user, false).await
}
