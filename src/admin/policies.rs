//! IT policies in the console: the rule catalog with its ranges, policies
//! with their rules, their assignment to users and groups with a rank
//! ([`assignments`] serves it), and the policy that applies to one user.
//! Every change is audited.
//!
//! Rule values are checked against the [catalog](crate::policy::catalog)
//! before anything is written, so a value out of range is refused as
//! `{code: POLICY_RULE_OUT_OF_RANGE, message}` naming the rule and its range.

use std::collections::BTreeMap;

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
use crate::db::ids::{GroupId, ItPolicyId, PolicyAssignmentId, UserId};
use crate::db::models::group::Group;
use crate::db::models::it_policy::{AssignmentTarget, ItPolicy, PolicyAssignment};
use crate::db::models::user::User;
use crate::db::{Conn, DbError, DbResult};
use crate::policy::catalog::{self, Kind, RULES};
use crate::policy::resolve::{self, RuleSource, Via};

/// One rule of the catalog as the rule editor shows it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RuleInfo {
    /// Stored name, e.g. `MinimumPasswordLength`.
    pub name: &'static str,
    /// The administrator's name, e.g. "Minimum Password Length".
    pub title: &'static str,
    /// `bool`, `int`, `choice` or `list`.
    pub kind: &'static str,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub unit: Option<&'static str>,
    /// For `choice`: the options from least to most restrictive.
    pub options: Vec<&'static str>,
    /// The value a device uses when no policy sets the rule.
    pub default: Value,
    /// The accepted values in words, e.g. "4–14 characters".
    pub accepts: String,
}

/// `GET /api/policy-rules`: the catalog.
pub async fn rules() -> Json<Vec<RuleInfo>> {
    Json(
        RULES
            .iter()
            .map(|rule| {
                let (kind, min, max, unit, options) = match rule.kind {
                    Kind::Bool { .. } => ("bool", None, None, None, Vec::new()),
                    Kind::Int { min, max, unit, .. } => {
                        ("int", Some(min), Some(max), Some(unit), Vec::new())
                    }
                    Kind::Choice { options, .. } => ("choice", None, None, None, options.to_vec()),
                    Kind::List { .. } => ("list", None, None, None, Vec::new()),
                };
                RuleInfo {
                    name: rule.name,
                    title: rule.title,
                    kind,
                    min,
                    max,
                    unit,
                    options,
                    default: rule.default_value(),
                    accepts: rule.accepts(),
                }
            })
            .collect(),
    )
}

/// A policy without its rules.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PolicyView {
    pub id: i64,
    pub name: String,
    pub description: String,
    /// The policy of users with no policy of their own or of their groups.
    pub is_default: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&ItPolicy> for PolicyView {
    fn from(p: &ItPolicy) -> Self {
        PolicyView {
            id: p.id.0,
            name: p.name.clone(),
            description: p.description.clone(),
            is_default: p.is_default,
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
        }
    }
}

/// A policy in the list.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PolicySummary {
    #[serde(flatten)]
    pub policy: PolicyView,
    /// How many rules it sets.
    pub rules: usize,
    /// How many users and groups it is assigned to.
    pub assignments: usize,
}

/// Whom a policy is assigned to.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AssignmentView {
    pub id: i64,
    pub policy_id: i64,
    /// `user` or `group`.
    #[schemars(extend("enum" = ["user", "group"]))]
    pub target: &'static str,
    pub user_id: Option<i64>,
    pub group_id: Option<i64>,
    /// The user's display name and address, or the group's name.
    pub name: String,
    /// Orders a user's groups (1 first); 0 for a user's own policy.
    pub rank: i32,
}

/// A policy with its rules and assignments.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PolicyDetail {
    #[serde(flatten)]
    pub policy: PolicyView,
    /// Rule name → value; rules not listed take the catalog default.
    pub rules: BTreeMap<String, Value>,
    pub assignments: Vec<AssignmentView>,
}

/// What an administrator sends to create or change a policy.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PolicyForm {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Rule name → value. When given, the policy's rules become exactly
    /// these; when absent they stay as they are.
    #[serde(default)]
    pub rules: Option<BTreeMap<String, Value>>,
    /// `true` makes this the default policy (the previous default becomes
    /// an ordinary one).
    #[serde(default)]
    pub is_default: bool,
}

/// Assigns a policy to one user or to one group.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AssignmentForm {
    #[serde(default)]
    pub user_id: Option<i64>,
    #[serde(default)]
    pub group_id: Option<i64>,
    /// For a group: its rank (1 is the highest). Defaults to 1.
    #[serde(default)]
    pub rank: Option<i32>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", message)
}

fn missing(id: i64) -> String {
    format!("there is no IT policy {id}; it may have been deleted")
}

fn find(conn: &mut Conn, id: ItPolicyId) -> DbResult<ItPolicy> {
    ItPolicy::find_by_id(conn, id)?.ok_or(DbError::Query(diesel::result::Error::NotFound))
}

/// Checks every rule value against the catalog; the first refusal, in the
/// catalog's order, names the rule and what it accepts.
fn check_rules(rules: &BTreeMap<String, Value>) -> Result<(), ApiError> {
    let mut names: Vec<&String> = rules.keys().collect();
    names.sort_by_key(|name| {
        RULES
            .iter()
            .position(|r| r.name == name.as_str())
            .unwrap_or(usize::MAX)
    });
    for name in names {
        if let Err(e) = catalog::validate(name, &rules[name]) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                e.code(),
                match catalog::find(name) {
                    Some(rule) => format!("{e} (accepted: {})", rule.accepts()),
                    None => e.to_string(),
                },
            ));
        }
    }
    Ok(())
}

fn detail(conn: &mut Conn, id: ItPolicyId) -> DbResult<PolicyDetail> {
    let policy = find(conn, id)?;
    let rules = ItPolicy::rules(conn, id)?;
    Ok(PolicyDetail {
        policy: PolicyView::from(&policy),
        rules,
        assignments: assignments::views::<ItPolicy>(conn, id.0)?,
    })
}

/// What the audit log keeps of a policy: its fields and rules.
fn audit_state(conn: &mut Conn, id: ItPolicyId) -> DbResult<Value> {
    let policy = find(conn, id)?;
    let mut state = serde_json::to_value(PolicyView::from(&policy)).unwrap_or_default();
    state["rules"] = json!(ItPolicy::rules(conn, id)?);
    Ok(state)
}

/// `GET /api/policies`
pub async fn list(State(state): State<ServerState>) -> Result<Json<Vec<PolicySummary>>, ApiError> {
    let policies = state
        .db
        .run(|conn| {
            let mut out = Vec::new();
            for p in ItPolicy::find_all(conn)? {
                out.push(PolicySummary {
                    rules: ItPolicy::rules(conn, p.id)?.len(),
                    assignments: ItPolicy::find_assignments(conn, p.id)?.len(),
                    policy: PolicyView::from(&p),
                });
            }
            Ok(out)
        })
        .await?;
    Ok(Json(policies))
}

/// `GET /api/policies/{id}`
pub async fn get(
    State(state): State<ServerState>,
    Id(id): Id<i64>,
) -> Result<Json<PolicyDetail>, ApiError> {
    let detail = state
        .db
        .run(move |conn| detail(conn, ItPolicyId(id)))
        .await
        .map_err(|e| db_failure(e, &missing(id), None))?;
    Ok(Json(detail))
}

fn write_rules(
    conn: &mut Conn,
    id: ItPolicyId,
    rules: &Option<BTreeMap<String, Value>>,
) -> DbResult<()> {
    let Some(rules) = rules else {
        return Ok(());
    };
    for name in ItPolicy::rules(conn, id)?.keys() {
        if !rules.contains_key(name) {
            ItPolicy::delete_rule(conn, id, name)?;
        }
    }
    for (name, value) in rules {
        ItPolicy::set_rule(conn, id, name, value)?;
    }
    Ok(())
}

/// `POST /api/policies`
pub async fn create(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Body(form): Body<PolicyForm>,
) -> Result<(StatusCode, Json<PolicyDetail>), ApiError> {
    let name = form.name.trim().to_owned();
    if name.is_empty() {
        return Err(invalid("an IT policy needs a name"));
    }
    if let Some(rules) = &form.rules {
        check_rules(rules)?;
    }
    let detail = audited(&state, caller.actor(), move |conn| {
        let policy = ItPolicy::create(conn, &name, form.description.trim())?;
        write_rules(conn, policy.id, &form.rules)?;
        if form.is_default {
            ItPolicy::set_default(conn, policy.id)?;
        }
        let after = audit_state(conn, policy.id)?;
        let entry = (
            "policy.create",
            format!("policy/{}", policy.id),
            None,
            Some(after),
        );
        Ok((detail(conn, policy.id)?, entry))
    })
    .await
    .map_err(|e| db_failure(e, "", None))?;
    // Devices get the policy that applies to them now.
    state
        .dispatcher
        .announce(crate::dispatcher::DeliveryEvent::PolicyChanged);
    Ok((StatusCode::CREATED, Json(detail)))
}

/// `PUT /api/policies/{id}`: name, description, rules, default.
pub async fn update(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
    Body(form): Body<PolicyForm>,
) -> Result<Json<PolicyDetail>, ApiError> {
    if form.name.trim().is_empty() {
        return Err(invalid("an IT policy needs a name"));
    }
    if let Some(rules) = &form.rules {
        check_rules(rules)?;
    }
    let detail = audited(&state, caller.actor(), move |conn| {
        let id = ItPolicyId(id);
        let before = audit_state(conn, id)?;
        let mut policy = find(conn, id)?;
        policy.name = form.name.trim().to_owned();
        policy.description = form.description.trim().to_owned();
        policy.save(conn)?;
        write_rules(conn, id, &form.rules)?;
        if form.is_default && !policy.is_default {
            ItPolicy::set_default(conn, id)?;
        }
        let after = audit_state(conn, id)?;
        let entry = (
            "policy.update",
            format!("policy/{id}"),
            Some(before),
            Some(after),
        );
        Ok((detail(conn, id)?, entry))
    })
    .await
    .map_err(|e| {
        let taken = ApiError::new(
            StatusCode::CONFLICT,
            "POLICY_EXISTS",
            "another IT policy already has this name; choose another",
        );
        db_failure(e, &missing(id), Some(taken))
    })?;
    // Devices get the policy that applies to them now.
    state
        .dispatcher
        .announce(crate::dispatcher::DeliveryEvent::PolicyChanged);
    Ok(Json(detail))
}

/// `DELETE /api/policies/{id}`: its rules and assignments go with it.
pub async fn delete(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
) -> Result<StatusCode, ApiError> {
    audited(&state, caller.actor(), move |conn| {
        let policy = ItPolicyId(id);
        let mut before = audit_state(conn, policy)?;
        before["assigned_to"] = json!(assignments::assigned_to::<ItPolicy>(conn, id)?);
        ItPolicy::delete_by_id(conn, policy)?;
        Ok((
            (),
            ("policy.delete", format!("policy/{id}"), Some(before), None),
        ))
    })
    .await
    .map_err(|e| db_failure(e, &missing(id), None))?;
    // Devices get the policy that applies to them now.
    state
        .dispatcher
        .announce(crate::dispatcher::DeliveryEvent::PolicyChanged);
    Ok(StatusCode::NO_CONTENT)
}

impl AssignmentRequest for AssignmentForm {
    fn user_id(&self) -> Option<i64> {
        self.user_id
    }

    fn group_id(&self) -> Option<i64> {
        self.group_id
    }

    fn rank(&self) -> Option<i32> {
        self.rank
    }
}

fn stored(a: PolicyAssignment) -> Stored {
    Stored {
        id: a.id.0,
        owner: a.policy_id.0,
        target: a.target,
        rank: a.rank,
    }
}

/// A user has one IT policy of their own and a group one with a rank: a
/// new assignment replaces the previous one.
impl Assignable for ItPolicy {
    const NOUN: &'static str = "IT policy";
    const A_NOUN: &'static str = "an IT policy";
    const AUDIT: &'static str = "policy";
    const ASSIGNED: &'static str = "policy.assign";
    const UNASSIGNED: &'static str = "policy.unassign";
    const RANKED: bool = true;

    type Request = AssignmentForm;
    type View = AssignmentView;

    fn name(conn: &mut Conn, id: i64) -> DbResult<String> {
        Ok(find(conn, ItPolicyId(id))?.name)
    }

    fn assignments(conn: &mut Conn, id: i64) -> DbResult<Vec<Stored>> {
        Ok(ItPolicy::find_assignments(conn, ItPolicyId(id))?
            .into_iter()
            .map(stored)
            .collect())
    }

    fn replaced(conn: &mut Conn, target: AssignmentTarget) -> DbResult<Option<Stored>> {
        let previous = match target {
            AssignmentTarget::User(user) => ItPolicy::find_assignments_for_user(conn, user)?
                .into_iter()
                .find(|a| a.target == target),
            AssignmentTarget::Group(group) => previous_group_assignment(conn, group)?,
        };
        Ok(previous.map(stored))
    }

    fn assign(conn: &mut Conn, id: i64, target: AssignmentTarget, rank: i32) -> DbResult<Stored> {
        let policy = ItPolicyId(id);
        Ok(stored(match target {
            AssignmentTarget::User(user) => ItPolicy::assign_to_user(conn, policy, user)?,
            AssignmentTarget::Group(group) => ItPolicy::assign_to_group(conn, policy, group, rank)?,
        }))
    }

    fn unassign(conn: &mut Conn, assignment: i64) -> DbResult<bool> {
        ItPolicy::delete_assignment(conn, PolicyAssignmentId(assignment))
    }

    fn view(stored: &Stored, assignee: Assignee) -> AssignmentView {
        AssignmentView {
            id: stored.id,
            policy_id: stored.owner,
            target: assignee.kind,
            user_id: assignee.user_id,
            group_id: assignee.group_id,
            name: assignee.name,
            rank: stored.rank,
        }
    }

    /// Devices get the policy that applies to them now.
    fn changed(state: &ServerState) {
        state
            .dispatcher
            .announce(crate::dispatcher::DeliveryEvent::PolicyChanged);
    }
}

/// The assignment of a group, whichever policy it names.
fn previous_group_assignment(
    conn: &mut Conn,
    group: GroupId,
) -> DbResult<Option<PolicyAssignment>> {
    for policy in ItPolicy::find_all(conn)? {
        if let Some(a) = ItPolicy::find_assignments(conn, policy.id)?
            .into_iter()
            .find(|a| a.target == AssignmentTarget::Group(group))
        {
            return Ok(Some(a));
        }
    }
    Ok(None)
}

/// A policy that took part in a user's resolution.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ResolvedSource {
    pub policy_id: i64,
    pub policy_name: String,
    /// `user`, `group` or `default`.
    pub via: &'static str,
    pub group_id: Option<i64>,
    pub group_name: Option<String>,
    pub rank: Option<i32>,
}

/// One rule of a user's resolved policy.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ResolvedRuleView {
    pub name: &'static str,
    pub title: &'static str,
    pub value: Value,
    /// The policy that set it; None when no policy does (the catalog
    /// default applies).
    pub policy_name: Option<String>,
}

/// The IT policy that applies to one user, rule by rule.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ResolvedView {
    pub user_id: i64,
    /// `precedence`: the user's policy, else the highest-ranked group's,
    /// else the default.
    pub mode: &'static str,
    /// The policies considered, the winner first.
    pub policies: Vec<ResolvedSource>,
    /// Every catalog rule, in the catalog's order.
    pub rules: Vec<ResolvedRuleView>,
}

/// `GET /api/users/{id}/policy`
pub async fn resolved(
    State(state): State<ServerState>,
    Id(id): Id<i64>,
) -> Result<Json<ResolvedView>, ApiError> {
    let view = state
        .db
        .run(move |conn| {
            let user = User::find_by_id(conn, UserId(id))?
                .ok_or(DbError::Query(diesel::result::Error::NotFound))?;
            let resolved = resolve::resolve(conn, user.id)?;
            let mut policies = Vec::new();
            for source in &resolved.policies {
                let (via, group_id, rank) = match source.via {
                    Via::User => ("user", None, None),
                    Via::Group { group_id, rank } => ("group", Some(group_id), Some(rank)),
                    Via::Default => ("default", None, None),
                };
                let group_name = match group_id {
                    Some(g) => Group::find_by_id(conn, g)?.map(|g| g.name),
                    None => None,
                };
                policies.push(ResolvedSource {
                    policy_id: source.policy_id.0,
                    policy_name: source.policy_name.clone(),
                    via,
                    group_id: group_id.map(|g| g.0),
                    group_name,
                    rank,
                });
            }
            let rules = RULES
                .iter()
                .map(|rule| {
                    let resolved = resolved.rules.get(rule.name);
                    ResolvedRuleView {
                        name: rule.name,
                        title: rule.title,
                        value: resolved
                            .map(|r| r.value.clone())
                            .unwrap_or_else(|| rule.default_value()),
                        policy_name: resolved.and_then(|r| match &r.source {
                            RuleSource::Policy(p) => Some(p.policy_name.clone()),
                            RuleSource::CatalogDefault => None,
                        }),
                    }
                })
                .collect();
            Ok(ResolvedView {
                user_id: id,
                mode: "precedence",
                policies,
                rules,
            })
        })
        .await
        .map_err(|e| db_failure(e, &format!("there is no user {id}"), None))?;
    Ok(Json(view))
}
