//! Assignment to users and groups, one implementation for what is assigned:
//! an IT policy (a user has one, a group has one with a rank) and a
//! software configuration (any number per user or group). Both are served
//! at `/api/{what}/{id}/assignments` with the same checks, messages and
//! audit entries (`policy.assign`, `software.unassign`, …).
//!
//! What differs between the two is said once, by implementing
//! [`Assignable`] beside the rest of their handlers
//! ([`policies`](super::policies), [`software`](super::software)).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::extract::{Body, Id};
use super::ServerState;
use super::{audited, db_failure, ApiError, ChangeError};
use crate::db::ids::{GroupId, UserId};
use crate::db::models::group::Group;
use crate::db::models::it_policy::AssignmentTarget;
use crate::db::models::user::User;
use crate::db::{Conn, DbResult};

/// One stored assignment, whichever table holds it.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    pub id: i64,
    /// The id of what is assigned (the policy, the configuration).
    pub owner: i64,
    pub target: AssignmentTarget,
    /// 0 where there is no rank.
    pub rank: i32,
}

/// Whom an assignment names, in the console's words.
#[derive(Debug, Clone)]
pub struct Assignee {
    /// `user` or `group`.
    pub kind: &'static str,
    pub user_id: Option<i64>,
    pub group_id: Option<i64>,
    /// The user's display name and address, or the group's name.
    pub name: String,
}

/// The request that assigns: one user or one group, and perhaps a rank.
pub trait AssignmentRequest: DeserializeOwned + Send + 'static {
    fn user_id(&self) -> Option<i64>;
    fn group_id(&self) -> Option<i64>;
    /// For a group, where ranks apply.
    fn rank(&self) -> Option<i32> {
        None
    }
}

/// What can be assigned to users and groups.
pub trait Assignable: Send + 'static {
    /// In messages: `IT policy`, `software configuration`.
    const NOUN: &'static str;
    /// The same with its article: `an IT policy`.
    const A_NOUN: &'static str;
    /// Names the audit targets (`policy/3`) and, in an audit record, what
    /// was assigned.
    const AUDIT: &'static str;
    /// The audit actions: `policy.assign`, `policy.unassign`.
    const ASSIGNED: &'static str;
    const UNASSIGNED: &'static str;
    /// Whether a group's assignment carries a rank (1 to 1000).
    const RANKED: bool;

    type Request: AssignmentRequest;
    type View: Serialize + Send + 'static;

    /// The name of the assigned thing; `NotFound` when there is none.
    fn name(conn: &mut Conn, id: i64) -> DbResult<String>;
    /// Its assignments, in the order the console lists them.
    fn assignments(conn: &mut Conn, id: i64) -> DbResult<Vec<Stored>>;
    /// The assignment a new one to `target` replaces, of whatever it
    /// assigned; `None` where assignments add up.
    fn replaced(conn: &mut Conn, target: AssignmentTarget) -> DbResult<Option<Stored>>;
    fn assign(conn: &mut Conn, id: i64, target: AssignmentTarget, rank: i32) -> DbResult<Stored>;
    fn unassign(conn: &mut Conn, assignment: i64) -> DbResult<bool>;
    fn view(stored: &Stored, assignee: Assignee) -> Self::View;
    /// Tells whoever acts on assignments that they changed.
    fn changed(_state: &ServerState) {}
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", message)
}

fn missing<A: Assignable>(id: i64) -> String {
    format!("there is no {} {id}; it may have been deleted", A::NOUN)
}

fn assignee(conn: &mut Conn, target: AssignmentTarget) -> DbResult<Assignee> {
    Ok(match target {
        AssignmentTarget::User(user) => Assignee {
            kind: "user",
            user_id: Some(user.0),
            group_id: None,
            name: User::find_by_id(conn, user)?
                .map(|u| format!("{} <{}>", u.display_name, u.email))
                .unwrap_or_else(|| format!("user {user}")),
        },
        AssignmentTarget::Group(group) => Assignee {
            kind: "group",
            user_id: None,
            group_id: Some(group.0),
            name: Group::find_by_id(conn, group)?
                .map(|g| g.name)
                .unwrap_or_else(|| format!("group {group}")),
        },
    })
}

/// One assignment as the console shows it.
pub fn view<A: Assignable>(conn: &mut Conn, stored: &Stored) -> DbResult<A::View> {
    let assignee = assignee(conn, stored.target)?;
    Ok(A::view(stored, assignee))
}

/// Every assignment of one policy or configuration, as the console shows
/// them.
pub fn views<A: Assignable>(conn: &mut Conn, id: i64) -> DbResult<Vec<A::View>> {
    let mut out = Vec::new();
    for stored in A::assignments(conn, id)? {
        out.push(view::<A>(conn, &stored)?);
    }
    Ok(out)
}

/// Whom it is assigned to, by name: what the audit log keeps of the
/// assignments of a deleted policy or configuration.
pub fn assigned_to<A: Assignable>(conn: &mut Conn, id: i64) -> DbResult<Vec<String>> {
    let mut out = Vec::new();
    for stored in A::assignments(conn, id)? {
        out.push(assignee(conn, stored.target)?.name);
    }
    Ok(out)
}

/// An assignment as the audit log keeps it: its view and what it assigns.
fn audit_record<A: Assignable>(conn: &mut Conn, stored: &Stored, what: &str) -> DbResult<Value> {
    let mut record = serde_json::to_value(view::<A>(conn, stored)?).unwrap_or_default();
    record[A::AUDIT] = json!(what);
    Ok(record)
}

/// `POST /api/{policies,software}/{id}/assignments`: to one user or one
/// group (with a rank where ranks apply), replacing what the assignment
/// replaces.
pub async fn assign<A: Assignable>(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
    Body(form): Body<A::Request>,
) -> Result<(StatusCode, Json<A::View>), ApiError> {
    let target = match (form.user_id(), form.group_id()) {
        (Some(user), None) => AssignmentTarget::User(UserId(user)),
        (None, Some(group)) => AssignmentTarget::Group(GroupId(group)),
        _ => {
            return Err(invalid(format!(
                "assign {} to one user (user_id) or one group (group_id)",
                A::A_NOUN
            )))
        }
    };
    let rank = if A::RANKED {
        form.rank().unwrap_or(1)
    } else {
        0
    };
    if A::RANKED && matches!(target, AssignmentTarget::Group(_)) && !(1..=1000).contains(&rank) {
        return Err(invalid(format!(
            "a group's rank must be between 1 (the highest) and 1000; got {rank}"
        )));
    }
    let view = audited(&state, caller.actor(), move |conn| {
        let name = A::name(conn, id)?;
        match target {
            AssignmentTarget::User(user) => {
                User::find_by_id(conn, user)?
                    .ok_or_else(|| ChangeError::invalid(format!("there is no user {user}")))?;
            }
            AssignmentTarget::Group(group) => {
                Group::find_by_id(conn, group)?
                    .ok_or_else(|| ChangeError::invalid(format!("there is no group {group}")))?;
            }
        }
        let before = match A::replaced(conn, target)? {
            Some(previous) => {
                let was = A::name(conn, previous.owner)?;
                Some(audit_record::<A>(conn, &previous, &was)?)
            }
            None => None,
        };
        let stored = A::assign(conn, id, target, rank)?;
        let view = view::<A>(conn, &stored)?;
        let after = audit_record::<A>(conn, &stored, &name)?;
        Ok((
            view,
            (
                A::ASSIGNED,
                format!("{}/{id}", A::AUDIT),
                before,
                Some(after),
            ),
        ))
    })
    .await
    .map_err(|e: ChangeError| e.answer(|e| db_failure(e, &missing::<A>(id), None)))?;
    A::changed(&state);
    Ok((StatusCode::CREATED, Json(view)))
}

/// `DELETE /api/{policies,software}/{id}/assignments/{assignment_id}`
pub async fn unassign<A: Assignable>(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id((id, assignment)): Id<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    audited(&state, caller.actor(), move |conn| {
        let name = A::name(conn, id)?;
        let found = A::assignments(conn, id)?
            .into_iter()
            .find(|a| a.id == assignment)
            .ok_or_else(|| {
                ChangeError::invalid(format!("{} {name} has no assignment {assignment}", A::NOUN))
            })?;
        let before = audit_record::<A>(conn, &found, &name)?;
        A::unassign(conn, found.id)?;
        Ok((
            (),
            (
                A::UNASSIGNED,
                format!("{}/{id}", A::AUDIT),
                Some(before),
                None,
            ),
        ))
    })
    .await
    .map_err(|e: ChangeError| e.answer(|e| db_failure(e, &missing::<A>(id), None)))?;
    A::changed(&state);
    Ok(StatusCode::NO_CONTENT)
}
