//! Global message filters in the console: conditions on sender, recipient,
//! subject and importance; the action (forward, forward with priority, do
//! not forward); the order the Messaging Agent tries them in. Every change
//! is audited.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::extract::{Body, Id};
use super::ServerState;
use super::{audited, db_failure, ApiError};
use crate::db::ids::MessageFilterId;
use crate::db::models::message_filter::{
    Condition, FilterAction, Importance, MessageFilter, NewMessageFilter,
};
use crate::db::{Conn, DbError, DbResult};

/// One condition as the console edits it: `field` is `from`, `to`, `cc`,
/// `bcc`, `subject` (with `text`, matched anywhere, case-insensitive) or
/// `importance` (with `importance`: `high`, `normal`, `low`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConditionView {
    #[schemars(extend("enum" = ["from", "to", "cc", "bcc", "subject", "importance"]))]
    pub field: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    #[schemars(extend("enum" = ["high", "normal", "low", null]))]
    pub importance: Option<String>,
}

/// A global filter.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FilterView {
    pub id: i64,
    pub name: String,
    /// Order: the Messaging Agent tries filters from 0 up; the first match
    /// decides.
    pub position: i32,
    pub enabled: bool,
    /// All must match.
    pub conditions: Vec<ConditionView>,
    /// `forward`, `forward_priority` or `do_not_forward`.
    #[schemars(extend("enum" = ["forward", "forward_priority", "do_not_forward"]))]
    pub action: &'static str,
}

/// Creates or changes a global filter.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct FilterForm {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub conditions: Vec<ConditionView>,
    #[schemars(extend("enum" = ["forward", "forward_priority", "do_not_forward"]))]
    pub action: String,
}

fn yes() -> bool {
    true
}

/// The new order of every global filter.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct FilterOrder {
    pub ids: Vec<i64>,
}

fn condition_view(c: &Condition) -> ConditionView {
    let text = |field: &str, text: &str| ConditionView {
        field: field.into(),
        text: Some(text.into()),
        importance: None,
    };
    match c {
        Condition::FromContains { text: t } => text("from", t),
        Condition::ToContains { text: t } => text("to", t),
        Condition::CcContains { text: t } => text("cc", t),
        Condition::BccContains { text: t } => text("bcc", t),
        Condition::SubjectContains { text: t } => text("subject", t),
        Condition::ImportanceIs { importance } => ConditionView {
            field: "importance".into(),
            text: None,
            importance: Some(
                match importance {
                    Importance::High => "high",
                    Importance::Normal => "normal",
                    Importance::Low => "low",
                }
                .into(),
            ),
        },
    }
}

impl From<&MessageFilter> for FilterView {
    fn from(f: &MessageFilter) -> Self {
        FilterView {
            id: f.id.0,
            name: f.name.clone(),
            position: f.position,
            enabled: f.enabled,
            conditions: f.conditions.iter().map(condition_view).collect(),
            action: f.action.as_str(),
        }
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_FILTER", message)
}

/// The form checked and in the model's terms.
fn checked(form: FilterForm) -> Result<(String, bool, Vec<Condition>, FilterAction), ApiError> {
    let name = form.name.trim().to_owned();
    if name.is_empty() {
        return Err(invalid("a message filter needs a name"));
    }
    let action = FilterAction::parse(&form.action).ok_or_else(|| {
        invalid(format!(
            "`{}` is not a filter action; use forward, forward_priority or do_not_forward",
            form.action
        ))
    })?;
    if form.conditions.is_empty() {
        return Err(invalid(
            "a message filter needs at least one condition (from, to, cc, bcc, subject or importance)",
        ));
    }
    let mut conditions = Vec::new();
    for c in form.conditions {
        let text = || -> Result<String, ApiError> {
            let text = c.text.as_deref().unwrap_or("").trim().to_owned();
            if text.is_empty() {
                return Err(invalid(format!(
                    "the `{}` condition needs the text to look for",
                    c.field
                )));
            }
            Ok(text)
        };
        conditions.push(match c.field.as_str() {
            "from" => Condition::FromContains { text: text()? },
            "to" => Condition::ToContains { text: text()? },
            "cc" => Condition::CcContains { text: text()? },
            "bcc" => Condition::BccContains { text: text()? },
            "subject" => Condition::SubjectContains { text: text()? },
            "importance" => Condition::ImportanceIs {
                importance: match c.importance.as_deref() {
                    Some("high") => Importance::High,
                    Some("normal") => Importance::Normal,
                    Some("low") => Importance::Low,
                    other => {
                        return Err(invalid(format!(
                            "the importance condition needs high, normal or low; got {}",
                            other.unwrap_or("nothing")
                        )))
                    }
                },
            },
            other => {
                return Err(invalid(format!(
                    "`{other}` is not a condition; use from, to, cc, bcc, subject or importance"
                )))
            }
        });
    }
    Ok((name, form.enabled, conditions, action))
}

fn missing(id: i64) -> String {
    format!("there is no global message filter {id}; it may have been deleted")
}

fn find_global(conn: &mut Conn, id: i64) -> DbResult<MessageFilter> {
    MessageFilter::find_by_id(conn, MessageFilterId(id))?
        .filter(|f| f.user_id.is_none())
        .ok_or(DbError::Query(diesel::result::Error::NotFound))
}

fn state_of(f: &MessageFilter) -> serde_json::Value {
    serde_json::to_value(FilterView::from(f)).unwrap_or_default()
}

/// `GET /api/filters`: the global filters in order.
pub async fn list(State(state): State<ServerState>) -> Result<Json<Vec<FilterView>>, ApiError> {
    let filters = state.db.run(MessageFilter::find_global).await?;
    Ok(Json(filters.iter().map(FilterView::from).collect()))
}

/// `POST /api/filters`: a new global filter, after the others.
pub async fn create(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Body(form): Body<FilterForm>,
) -> Result<(StatusCode, Json<FilterView>), ApiError> {
    let (name, enabled, conditions, action) = checked(form)?;
    let filter = audited(&state, caller.actor(), move |conn| {
        let filter = NewMessageFilter {
            user_id: None,
            name,
            enabled,
            conditions,
            action,
        }
        .save(conn)?;
        let entry = (
            "filter.create",
            format!("filter/{}", filter.id.0),
            None,
            Some(state_of(&filter)),
        );
        Ok((filter, entry))
    })
    .await
    .map_err(|e| db_failure(e, "", None))?;
    Ok((StatusCode::CREATED, Json(FilterView::from(&filter))))
}

/// `PUT /api/filters/{id}`
pub async fn update(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
    Body(form): Body<FilterForm>,
) -> Result<Json<FilterView>, ApiError> {
    let (name, enabled, conditions, action) = checked(form)?;
    let filter = audited(&state, caller.actor(), move |conn| {
        let mut filter = find_global(conn, id)?;
        let before = state_of(&filter);
        filter.name = name;
        filter.enabled = enabled;
        filter.conditions = conditions;
        filter.action = action;
        filter.save(conn)?;
        let entry = (
            "filter.update",
            format!("filter/{id}"),
            Some(before),
            Some(state_of(&filter)),
        );
        Ok((filter, entry))
    })
    .await
    .map_err(|e| db_failure(e, &missing(id), None))?;
    Ok(Json(FilterView::from(&filter)))
}

/// `DELETE /api/filters/{id}`
pub async fn delete(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id<i64>,
) -> Result<StatusCode, ApiError> {
    audited(&state, caller.actor(), move |conn| {
        let filter = find_global(conn, id)?;
        MessageFilter::delete_by_id(conn, filter.id)?;
        Ok((
            (),
            (
                "filter.delete",
                format!("filter/{id}"),
                Some(state_of(&filter)),
                None,
            ),
        ))
    })
    .await
    .map_err(|e| db_failure(e, &missing(id), None))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/filters/order`: every global filter, in the new order.
pub async fn reorder(
    State(state): State<ServerState>,
    Extension(caller): Extension<Caller>,
    Body(order): Body<FilterOrder>,
) -> Result<Json<Vec<FilterView>>, ApiError> {
    let filters = audited(&state, caller.actor(), move |conn| {
        let names =
            |fs: &[MessageFilter]| json!(fs.iter().map(|f| f.name.clone()).collect::<Vec<_>>());
        let before = MessageFilter::find_global(conn)?;
        let ids: Vec<MessageFilterId> = order.ids.iter().map(|i| MessageFilterId(*i)).collect();
        MessageFilter::reorder(conn, None, &ids)?;
        let after = MessageFilter::find_global(conn)?;
        let entry = (
            "filter.reorder",
            "filters/global".to_owned(),
            Some(json!({"order": names(&before)})),
            Some(json!({"order": names(&after)})),
        );
        Ok((after, entry))
    })
    .await
    .map_err(|e| db_failure(e, "", None))?;
    Ok(Json(filters.iter().map(FilterView::from).collect()))
}
