//! Message filters: rules the Messaging Agent applies to each new message
//! to decide whether to forward it to the smartphone, forward it with high
//! priority, or keep it in the mailbox only. Global filters (no user) apply
//! first, then the user's own (seed: the Messaging Agent applies global
//! then individual filters); within each, by position.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::db::ids::{MessageFilterId, UserId};
use crate::db::models::user::text_enum;
use crate::db::schema::message_filters;
use crate::db::{Conn, DbError, DbResult};

/// A message's importance, as the mail header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Importance {
    High,
    Normal,
    Low,
}

/// One condition of a filter; a filter matches when all its conditions do.
/// Stored as JSON, e.g. `{"type":"subject_contains","text":"invoice"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Condition {
    FromContains { text: String },
    ToContains { text: String },
    CcContains { text: String },
    BccContains { text: String },
    SubjectContains { text: String },
    ImportanceIs { importance: Importance },
}

/// What happens to a message a filter matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    Forward,
    /// Forward and mark as a priority message on the device.
    ForwardPriority,
    /// Leave it in the mailbox only.
    DoNotForward,
}

text_enum!(FilterAction {
    Forward => "forward",
    ForwardPriority => "forward_priority",
    DoNotForward => "do_not_forward",
});

#[derive(Queryable, Selectable)]
#[diesel(table_name = message_filters, check_for_backend(diesel::sqlite::Sqlite))]
struct FilterRow {
    id: MessageFilterId,
    user_id: Option<UserId>,
    name: String,
    position: i32,
    enabled: bool,
    conditions: String,
    action: String,
}

/// A global filter (`user_id` None) or one of a user's own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageFilter {
    pub id: MessageFilterId,
    pub user_id: Option<UserId>,
    pub name: String,
    /// Order within the global filters or within the user's own.
    pub position: i32,
    pub enabled: bool,
    pub conditions: Vec<Condition>,
    pub action: FilterAction,
}

impl TryFrom<FilterRow> for MessageFilter {
    type Error = DbError;

    fn try_from(row: FilterRow) -> DbResult<MessageFilter> {
        let conditions = serde_json::from_str(&row.conditions).map_err(|e| {
            DbError::Damaged(format!(
                "the conditions of message filter `{}` cannot be read: {e}",
                row.name
            ))
        })?;
        let action = FilterAction::parse(&row.action).ok_or_else(|| {
            DbError::Damaged(format!(
                "message filter `{}` has an unknown action `{}`",
                row.name, row.action
            ))
        })?;
        Ok(MessageFilter {
            id: row.id,
            user_id: row.user_id,
            name: row.name,
            position: row.position,
            enabled: row.enabled,
            conditions,
            action,
        })
    }
}

/// A filter not yet saved; it goes after the existing filters of its scope.
#[derive(Debug, Clone)]
pub struct NewMessageFilter {
    pub user_id: Option<UserId>,
    pub name: String,
    pub enabled: bool,
    pub conditions: Vec<Condition>,
    pub action: FilterAction,
}

fn conditions_json(conditions: &[Condition]) -> DbResult<String> {
    serde_json::to_string(conditions).map_err(|e| DbError::Encoding {
        what: "store the conditions",
        message: e.to_string(),
    })
}

fn check_name(name: &str) -> DbResult<()> {
    if name.trim().is_empty() {
        return Err(DbError::Invalid("a message filter needs a name".into()));
    }
    Ok(())
}

fn load(rows: Vec<FilterRow>) -> DbResult<Vec<MessageFilter>> {
    rows.into_iter().map(MessageFilter::try_from).collect()
}

/// The filters of one scope: the global ones for None, else a user's own.
fn scope(user: Option<UserId>) -> message_filters::BoxedQuery<'static, diesel::sqlite::Sqlite> {
    match user {
        Some(user) => message_filters::table
            .filter(message_filters::user_id.eq(user))
            .into_boxed(),
        None => message_filters::table
            .filter(message_filters::user_id.is_null())
            .into_boxed(),
    }
}

impl NewMessageFilter {
    pub fn save(&self, conn: &mut Conn) -> DbResult<MessageFilter> {
        check_name(&self.name)?;
        let conditions = conditions_json(&self.conditions)?;
        crate::db::write_transaction(conn, |conn| {
            let last: Option<i32> = scope(self.user_id)
                .select(diesel::dsl::max(message_filters::position))
                .first(conn)?;
            let row = diesel::insert_into(message_filters::table)
                .values((
                    message_filters::user_id.eq(self.user_id),
                    message_filters::name.eq(self.name.trim()),
                    message_filters::position.eq(last.map_or(0, |p| p + 1)),
                    message_filters::enabled.eq(self.enabled),
                    message_filters::conditions.eq(&conditions),
                    message_filters::action.eq(self.action.as_str()),
                ))
                .returning(FilterRow::as_returning())
                .get_result(conn)?;
            row.try_into()
        })
    }
}

impl MessageFilter {
    pub fn find_by_id(conn: &mut Conn, id: MessageFilterId) -> DbResult<Option<MessageFilter>> {
        message_filters::table
            .find(id)
            .select(FilterRow::as_select())
            .first(conn)
            .optional()?
            .map(MessageFilter::try_from)
            .transpose()
    }

    /// The global filters, in order, enabled or not.
    pub fn find_global(conn: &mut Conn) -> DbResult<Vec<MessageFilter>> {
        load(
            scope(None)
                .order((message_filters::position.asc(), message_filters::id.asc()))
                .select(FilterRow::as_select())
                .load(conn)?,
        )
    }

    /// A user's own filters, in order, enabled or not.
    pub fn find_by_user(conn: &mut Conn, user: UserId) -> DbResult<Vec<MessageFilter>> {
        load(
            scope(Some(user))
                .order((message_filters::position.asc(), message_filters::id.asc()))
                .select(FilterRow::as_select())
                .load(conn)?,
        )
    }

    /// The enabled filters that apply to the user's messages, in the order
    /// the Messaging Agent evaluates them: global first, then the user's.
    pub fn find_applicable(conn: &mut Conn, user: UserId) -> DbResult<Vec<MessageFilter>> {
        load(
            message_filters::table
                .filter(message_filters::enabled.eq(true))
                .filter(
                    message_filters::user_id
                        .is_null()
                        .or(message_filters::user_id.eq(user)),
                )
                .order((
                    message_filters::user_id.is_not_null().asc(),
                    message_filters::position.asc(),
                    message_filters::id.asc(),
                ))
                .select(FilterRow::as_select())
                .load(conn)?,
        )
    }

    /// Writes name, position, enabled, conditions and action back.
    pub fn save(&self, conn: &mut Conn) -> DbResult<()> {
        check_name(&self.name)?;
        diesel::update(message_filters::table.find(self.id))
            .set((
                message_filters::name.eq(self.name.trim()),
                message_filters::position.eq(self.position),
                message_filters::enabled.eq(self.enabled),
                message_filters::conditions.eq(conditions_json(&self.conditions)?),
                message_filters::action.eq(self.action.as_str()),
            ))
            .execute(conn)?;
        Ok(())
    }

    pub fn delete_by_id(conn: &mut Conn, id: MessageFilterId) -> DbResult<bool> {
        Ok(diesel::delete(message_filters::table.find(id)).execute(conn)? > 0)
    }

    /// Puts the filters of one scope (global for None, else the user's) in
    /// the order given. `ordered` must list every filter of the scope once.
    pub fn reorder(
        conn: &mut Conn,
        user: Option<UserId>,
        ordered: &[MessageFilterId],
    ) -> DbResult<()> {
        crate::db::write_transaction(conn, |conn| {
            let mut existing: Vec<MessageFilterId> =
                scope(user).select(message_filters::id).load(conn)?;
            let mut wanted = ordered.to_vec();
            existing.sort_unstable();
            wanted.sort_unstable();
            if existing != wanted {
                return Err(DbError::Invalid(
                    "the new order must list each of the filters being reordered exactly once"
                        .into(),
                ));
            }
            for (position, id) in ordered.iter().enumerate() {
                let position = i32::try_from(position)
                    .map_err(|_| DbError::Invalid("too many message filters to reorder".into()))?;
                diesel::update(message_filters::table.find(*id))
                    .set(message_filters::position.eq(position))
                    .execute(conn)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;
    use crate::db::models::user::{NewUser, User};

    fn filter(user: Option<UserId>, name: &str, action: FilterAction) -> NewMessageFilter {
        NewMessageFilter {
            user_id: user,
            name: name.into(),
            enabled: true,
            conditions: vec![Condition::SubjectContains { text: name.into() }],
            action,
        }
    }

    fn names(filters: &[MessageFilter]) -> Vec<&str> {
        filters.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn conditions_are_typed_json() {
        let conditions = vec![
            Condition::FromContains {
                text: "ceo@".into(),
            },
            Condition::ImportanceIs {
                importance: Importance::High,
            },
        ];
        let text = serde_json::to_string(&conditions).unwrap();
        assert_eq!(
            text,
            r#"[{"type":"from_contains","text":"ceo@"},{"type":"importance_is","importance":"high"}]"#
        );
        assert_eq!(
            serde_json::from_str::<Vec<Condition>>(&text).unwrap(),
            conditions
        );
    }

    #[test]
    fn global_filters_apply_first() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let alice = NewUser {
                display_name: "Alice".into(),
                email: "alice@example.com".into(),
                mailbox_login: "alice".into(),
            }
            .save(conn)?;
            let bob = NewUser {
                display_name: "Bob".into(),
                email: "bob@example.com".into(),
                mailbox_login: "bob".into(),
            }
            .save(conn)?;
            let own1 =
                filter(Some(alice.id), "alice-1", FilterAction::ForwardPriority).save(conn)?;
            let g1 = filter(None, "global-1", FilterAction::DoNotForward).save(conn)?;
            let own2 = filter(Some(alice.id), "alice-2", FilterAction::Forward).save(conn)?;
            let g2 = filter(None, "global-2", FilterAction::Forward).save(conn)?;
            filter(Some(bob.id), "bob-1", FilterAction::Forward).save(conn)?;
            let mut off = filter(None, "global-off", FilterAction::Forward);
            off.enabled = false;
            off.save(conn)?;
            assert_eq!((own1.position, own2.position), (0, 1));
            assert_eq!((g1.position, g2.position), (0, 1));

            let applicable = MessageFilter::find_applicable(conn, alice.id)?;
            assert_eq!(
                names(&applicable),
                ["global-1", "global-2", "alice-1", "alice-2"]
            );
            assert_eq!(applicable[0].action, FilterAction::DoNotForward);
            assert_eq!(
                names(&MessageFilter::find_global(conn)?),
                ["global-1", "global-2", "global-off"]
            );
            assert_eq!(
                names(&MessageFilter::find_by_user(conn, bob.id)?),
                ["bob-1"]
            );

            MessageFilter::reorder(conn, Some(alice.id), &[own2.id, own1.id])?;
            assert_eq!(
                names(&MessageFilter::find_by_user(conn, alice.id)?),
                ["alice-2", "alice-1"]
            );
            assert_eq!(
                names(&MessageFilter::find_applicable(conn, alice.id)?),
                ["global-1", "global-2", "alice-2", "alice-1"]
            );
            let partial = MessageFilter::reorder(conn, None, &[g2.id, g1.id]);
            assert!(
                matches!(partial, Err(DbError::Invalid(_))),
                "every global filter must be listed"
            );
            let foreign = MessageFilter::reorder(conn, Some(alice.id), &[own2.id, g1.id]);
            assert!(foreign.is_err(), "another scope's filter is refused");
            assert_eq!(
                names(&MessageFilter::find_global(conn)?),
                ["global-1", "global-2", "global-off"]
            );

            let mut edited = MessageFilter::find_by_id(conn, g1.id)?.unwrap();
            edited.enabled = false;
            edited.conditions = vec![Condition::BccContains {
                text: "list@".into(),
            }];
            edited.save(conn)?;
            let reread = MessageFilter::find_by_id(conn, g1.id)?.unwrap();
            assert_eq!(reread.conditions, edited.conditions);
            assert_eq!(
                names(&MessageFilter::find_applicable(conn, alice.id)?),
                ["global-2", "alice-2", "alice-1"]
            );

            // The action column's CHECK refuses what the enum does not know.
            let bad = diesel::update(message_filters::table.find(g2.id))
                .set(message_filters::action.eq("bounce"))
                .execute(conn);
            assert!(bad.is_err());

            User::delete_by_id(conn, alice.id)?;
            assert_eq!(
                names(&MessageFilter::find_applicable(conn, alice.id)?),
                ["global-2"],
                "own filters go with the user"
            );
            assert!(MessageFilter::delete_by_id(conn, g2.id)?);
            Ok(())
        })
        .unwrap();
    }
}
