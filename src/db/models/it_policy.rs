//! IT policies: named sets of rules, one of them the default, assigned to
//! users and to groups with a rank. A rule maps a rule name to a JSON value;
//! [`ItPolicy::set_rule`] refuses names and values the
//! [rule catalog](bramble_proto::catalog) does not accept. Which policy
//! applies to a user is decided by the Policy Service — this module only
//! stores and returns the data.

use std::collections::BTreeMap;

use diesel::prelude::*;
use serde::Serialize;
use time::PrimitiveDateTime;

use crate::db::ids::{GroupId, ItPolicyId, PolicyAssignmentId, UserId};
use crate::db::schema::{group_members, it_policies, it_policy_assignments, it_policy_rules};
use crate::db::{now, Conn, DbError, DbResult};

/// Whom a policy or software configuration is assigned to: one user or one
/// group, never both (the tables' CHECK constraints say the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum AssignmentTarget {
    User(UserId),
    Group(GroupId),
}

impl AssignmentTarget {
    /// From the `user_id` / `group_id` column pair.
    pub(crate) fn from_columns(
        user: Option<UserId>,
        group: Option<GroupId>,
    ) -> DbResult<AssignmentTarget> {
        match (user, group) {
            (Some(user), None) => Ok(AssignmentTarget::User(user)),
            (None, Some(group)) => Ok(AssignmentTarget::Group(group)),
            _ => Err(DbError::Invalid(
                "an assignment must name exactly one user or one group".into(),
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = it_policies, check_for_backend(diesel::sqlite::Sqlite))]
pub struct ItPolicy {
    pub id: ItPolicyId,
    pub name: String,
    pub description: String,
    /// The policy for users with no policy of their own or of their groups.
    pub is_default: bool,
    pub created_at: PrimitiveDateTime,
    /// Changes with the policy's rules too, so the Policy Service can tell
    /// which devices need the policy again.
    pub updated_at: PrimitiveDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = it_policy_assignments, check_for_backend(diesel::sqlite::Sqlite))]
struct AssignmentRow {
    id: PolicyAssignmentId,
    policy_id: ItPolicyId,
    user_id: Option<UserId>,
    group_id: Option<GroupId>,
    rank: i32,
}

/// A policy assigned to a user or a group. `rank` orders the groups of a
/// user (lower first); a user's own assignment has rank 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyAssignment {
    pub id: PolicyAssignmentId,
    pub policy_id: ItPolicyId,
    pub target: AssignmentTarget,
    pub rank: i32,
}

impl TryFrom<AssignmentRow> for PolicyAssignment {
    type Error = DbError;

    fn try_from(row: AssignmentRow) -> DbResult<PolicyAssignment> {
        Ok(PolicyAssignment {
            id: row.id,
            policy_id: row.policy_id,
            target: AssignmentTarget::from_columns(row.user_id, row.group_id)?,
            rank: row.rank,
        })
    }
}

fn assignments(rows: Vec<AssignmentRow>) -> DbResult<Vec<PolicyAssignment>> {
    rows.into_iter().map(PolicyAssignment::try_from).collect()
}

fn touch(conn: &mut Conn, policy: ItPolicyId) -> DbResult<bool> {
    Ok(diesel::update(it_policies::table.find(policy))
        .set(it_policies::updated_at.eq(now()))
        .execute(conn)?
        > 0)
}

impl ItPolicy {
    pub fn create(conn: &mut Conn, name: &str, description: &str) -> DbResult<ItPolicy> {
        if name.trim().is_empty() {
            return Err(DbError::Invalid("an IT policy needs a name".into()));
        }
        let at = now();
        diesel::insert_into(it_policies::table)
            .values((
                it_policies::name.eq(name.trim()),
                it_policies::description.eq(description),
                it_policies::is_default.eq(false),
                it_policies::created_at.eq(at),
                it_policies::updated_at.eq(at),
            ))
            .returning(ItPolicy::as_returning())
            .get_result(conn)
            .map_err(|e| match e {
                diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _,
                ) => DbError::Invalid(format!(
                    "an IT policy named `{}` already exists",
                    name.trim()
                )),
                other => other.into(),
            })
    }

    pub fn find_by_id(conn: &mut Conn, id: ItPolicyId) -> DbResult<Option<ItPolicy>> {
        Ok(it_policies::table
            .find(id)
            .select(ItPolicy::as_select())
            .first(conn)
            .optional()?)
    }

    pub fn find_by_name(conn: &mut Conn, name: &str) -> DbResult<Option<ItPolicy>> {
        Ok(it_policies::table
            .filter(it_policies::name.eq(name))
            .select(ItPolicy::as_select())
            .first(conn)
            .optional()?)
    }

    /// Every policy, by name.
    pub fn find_all(conn: &mut Conn) -> DbResult<Vec<ItPolicy>> {
        Ok(it_policies::table
            .order((it_policies::name.asc(), it_policies::id.asc()))
            .select(ItPolicy::as_select())
            .load(conn)?)
    }

    pub fn find_default(conn: &mut Conn) -> DbResult<Option<ItPolicy>> {
        Ok(it_policies::table
            .filter(it_policies::is_default.eq(true))
            .select(ItPolicy::as_select())
            .first(conn)
            .optional()?)
    }

    /// Makes `id` the default policy and the previous default an ordinary
    /// one, in one transaction (the database allows one default at most).
    /// Returns false if there is no such policy; nothing changes then.
    pub fn set_default(conn: &mut Conn, id: ItPolicyId) -> DbResult<bool> {
        crate::db::write_transaction(conn, |conn| {
            if ItPolicy::find_by_id(conn, id)?.is_none() {
                return Ok(false);
            }
            let at = now();
            diesel::update(
                it_policies::table
                    .filter(it_policies::is_default.eq(true))
                    .filter(it_policies::id.ne(id)),
            )
            .set((
                it_policies::is_default.eq(false),
                it_policies::updated_at.eq(at),
            ))
            .execute(conn)?;
            diesel::update(it_policies::table.find(id))
                .set((
                    it_policies::is_default.eq(true),
                    it_policies::updated_at.eq(at),
                ))
                .execute(conn)?;
            Ok(true)
        })
    }

    /// Writes the name and description back (the default flag changes only
    /// through [`ItPolicy::set_default`]).
    pub fn save(&mut self, conn: &mut Conn) -> DbResult<()> {
        if self.name.trim().is_empty() {
            return Err(DbError::Invalid("an IT policy needs a name".into()));
        }
        self.updated_at = now();
        diesel::update(it_policies::table.find(self.id))
            .set((
                it_policies::name.eq(self.name.trim()),
                it_policies::description.eq(&self.description),
                it_policies::updated_at.eq(self.updated_at),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// Deletes the policy with its rules and assignments; devices that had
    /// it applied keep no applied policy.
    pub fn delete_by_id(conn: &mut Conn, id: ItPolicyId) -> DbResult<bool> {
        Ok(diesel::delete(it_policies::table.find(id)).execute(conn)? > 0)
    }

    /// Sets one rule's value, replacing the previous value. Unknown rules
    /// and values out of the rule's range are refused with the rule's name
    /// and range; nothing is written then.
    pub fn set_rule(
        conn: &mut Conn,
        policy: ItPolicyId,
        rule: &str,
        value: &serde_json::Value,
    ) -> DbResult<()> {
        if rule.trim().is_empty() {
            return Err(DbError::Invalid("an IT policy rule needs a name".into()));
        }
        bramble_proto::catalog::validate(rule.trim(), value)
            .map_err(|e| DbError::Invalid(e.to_string()))?;
        let text = value.to_string();
        crate::db::write_transaction(conn, |conn| {
            diesel::insert_into(it_policy_rules::table)
                .values((
                    it_policy_rules::policy_id.eq(policy),
                    it_policy_rules::rule.eq(rule.trim()),
                    it_policy_rules::value.eq(&text),
                ))
                .on_conflict((it_policy_rules::policy_id, it_policy_rules::rule))
                .do_update()
                .set(it_policy_rules::value.eq(&text))
                .execute(conn)?;
            touch(conn, policy)?;
            Ok(())
        })
    }

    /// Removes a rule, so the device falls back to the rule's default.
    pub fn delete_rule(conn: &mut Conn, policy: ItPolicyId, rule: &str) -> DbResult<bool> {
        crate::db::write_transaction(conn, |conn| {
            let deleted = diesel::delete(
                it_policy_rules::table
                    .filter(it_policy_rules::policy_id.eq(policy))
                    .filter(it_policy_rules::rule.eq(rule)),
            )
            .execute(conn)?
                > 0;
            if deleted {
                touch(conn, policy)?;
            }
            Ok(deleted)
        })
    }

    /// The policy's rules, by rule name.
    pub fn rules(
        conn: &mut Conn,
        policy: ItPolicyId,
    ) -> DbResult<BTreeMap<String, serde_json::Value>> {
        let rows: Vec<(String, String)> = it_policy_rules::table
            .filter(it_policy_rules::policy_id.eq(policy))
            .select((it_policy_rules::rule, it_policy_rules::value))
            .load(conn)?;
        rows.into_iter()
            .map(|(rule, text)| {
                let value = serde_json::from_str(&text).map_err(|e| {
                    DbError::Damaged(format!(
                        "the stored value of IT policy rule `{rule}` is not JSON: {e}"
                    ))
                })?;
                Ok((rule, value))
            })
            .collect()
    }

    /// Assigns the policy to a user, replacing the user's previous policy.
    pub fn assign_to_user(
        conn: &mut Conn,
        policy: ItPolicyId,
        user: UserId,
    ) -> DbResult<PolicyAssignment> {
        diesel::insert_into(it_policy_assignments::table)
            .values((
                it_policy_assignments::policy_id.eq(policy),
                it_policy_assignments::user_id.eq(user),
                it_policy_assignments::rank.eq(0),
            ))
            .on_conflict(it_policy_assignments::user_id)
            .do_update()
            .set((
                it_policy_assignments::policy_id.eq(policy),
                it_policy_assignments::rank.eq(0),
            ))
            .returning(AssignmentRow::as_returning())
            .get_result(conn)?
            .try_into()
    }

    /// Assigns the policy to a group with a rank (lower ranks first),
    /// replacing the group's previous policy.
    pub fn assign_to_group(
        conn: &mut Conn,
        policy: ItPolicyId,
        group: GroupId,
        rank: i32,
    ) -> DbResult<PolicyAssignment> {
        diesel::insert_into(it_policy_assignments::table)
            .values((
                it_policy_assignments::policy_id.eq(policy),
                it_policy_assignments::group_id.eq(group),
                it_policy_assignments::rank.eq(rank),
            ))
            .on_conflict(it_policy_assignments::group_id)
            .do_update()
            .set((
                it_policy_assignments::policy_id.eq(policy),
                it_policy_assignments::rank.eq(rank),
            ))
            .returning(AssignmentRow::as_returning())
            .get_result(conn)?
            .try_into()
    }

    pub fn delete_assignment(conn: &mut Conn, id: PolicyAssignmentId) -> DbResult<bool> {
        Ok(diesel::delete(it_policy_assignments::table.find(id)).execute(conn)? > 0)
    }

    /// Everyone this policy is assigned to: users first, then groups by rank.
    pub fn find_assignments(
        conn: &mut Conn,
        policy: ItPolicyId,
    ) -> DbResult<Vec<PolicyAssignment>> {
        assignments(
            it_policy_assignments::table
                .filter(it_policy_assignments::policy_id.eq(policy))
                .order((
                    it_policy_assignments::user_id.is_null().asc(),
                    it_policy_assignments::rank.asc(),
                    it_policy_assignments::id.asc(),
                ))
                .select(AssignmentRow::as_select())
                .load(conn)?,
        )
    }

    /// The assignments that concern a user: the user's own first, then
    /// those of the groups the user is in, by rank. Which one wins is the
    /// Policy Service's decision.
    pub fn find_assignments_for_user(
        conn: &mut Conn,
        user: UserId,
    ) -> DbResult<Vec<PolicyAssignment>> {
        let groups = group_members::table
            .filter(group_members::user_id.eq(user))
            .select(group_members::group_id.nullable());
        assignments(
            it_policy_assignments::table
                .filter(
                    it_policy_assignments::user_id
                        .eq(user)
                        .or(it_policy_assignments::group_id.eq_any(groups)),
                )
                .order((
                    it_policy_assignments::user_id.is_null().asc(),
                    it_policy_assignments::rank.asc(),
                    it_policy_assignments::id.asc(),
                ))
                .select(AssignmentRow::as_select())
                .load(conn)?,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::group::Group;
    use crate::db::models::test_db;
    use crate::db::models::user::{NewUser, User};
    use serde_json::json;

    fn user(conn: &mut Conn, name: &str) -> User {
        NewUser {
            display_name: name.into(),
            email: format!("{name}@example.com"),
            mailbox_login: name.into(),
        }
        .save(conn)
        .unwrap()
    }

    #[test]
    fn policies_rules_and_default() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let standard = ItPolicy::create(conn, "Standard", "everyone")?;
            let strict = ItPolicy::create(conn, "Strict", "executives")?;
            assert!(ItPolicy::create(conn, "Standard", "")
                .unwrap_err()
                .to_string()
                .contains("already exists"));
            assert!(ItPolicy::find_default(conn)?.is_none());

            assert!(ItPolicy::set_default(conn, standard.id)?);
            assert_eq!(ItPolicy::find_default(conn)?.unwrap().id, standard.id);
            assert!(ItPolicy::set_default(conn, strict.id)?);
            assert_eq!(ItPolicy::find_default(conn)?.unwrap().id, strict.id);
            assert!(
                !ItPolicy::find_by_id(conn, standard.id)?.unwrap().is_default,
                "one default at most"
            );
            assert!(!ItPolicy::set_default(conn, ItPolicyId(9_999))?);
            assert_eq!(
                ItPolicy::find_default(conn)?.unwrap().id,
                strict.id,
                "unchanged"
            );
            // The partial unique index refuses a second default written directly.
            let second = diesel::update(it_policies::table.find(standard.id))
                .set(it_policies::is_default.eq(true))
                .execute(conn);
            assert!(second.is_err());

            ItPolicy::set_rule(conn, strict.id, "PasswordRequired", &json!(true))?;
            ItPolicy::set_rule(conn, strict.id, "MinimumPasswordLength", &json!(4))?;
            ItPolicy::set_rule(conn, strict.id, "MinimumPasswordLength", &json!(8))?;
            ItPolicy::set_rule(conn, strict.id, "DisallowedApplications", &json!(["games"]))?;
            let refused = ItPolicy::set_rule(conn, strict.id, "MinimumPasswordLength", &json!(20))
                .unwrap_err();
            assert_eq!(
                refused.to_string(),
                "Minimum Password Length must be between 4 and 14; got 20"
            );
            assert!(ItPolicy::set_rule(conn, strict.id, "NoSuchRule", &json!(1)).is_err());
            let rules = ItPolicy::rules(conn, strict.id)?;
            assert_eq!(rules.len(), 3);
            assert_eq!(rules["MinimumPasswordLength"], json!(8));
            assert_eq!(
                rules["MinimumPasswordLength"],
                json!(8),
                "the refused value changed nothing"
            );
            assert_eq!(rules["DisallowedApplications"], json!(["games"]));
            assert!(ItPolicy::rules(conn, standard.id)?.is_empty());
            assert!(ItPolicy::delete_rule(conn, strict.id, "PasswordRequired")?);
            assert!(!ItPolicy::delete_rule(conn, strict.id, "PasswordRequired")?);
            assert!(
                ItPolicy::set_rule(conn, ItPolicyId(9_999), "DisableCamera", &json!(true)).is_err(),
                "unknown policy"
            );

            let mut renamed = ItPolicy::find_by_name(conn, "Strict")?.unwrap();
            assert!(renamed.updated_at >= strict.updated_at);
            renamed.name = "Executives".into();
            renamed.save(conn)?;
            let names: Vec<_> = ItPolicy::find_all(conn)?
                .into_iter()
                .map(|p| p.name)
                .collect();
            assert_eq!(names, ["Executives", "Standard"]);

            assert!(ItPolicy::delete_by_id(conn, strict.id)?);
            assert!(ItPolicy::find_default(conn)?.is_none());
            let left: i64 = it_policy_rules::table.count().get_result(conn)?;
            assert_eq!(left, 0, "rules go with the policy");
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn assignments_replace_and_collect_groups() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let standard = ItPolicy::create(conn, "Standard", "")?;
            let strict = ItPolicy::create(conn, "Strict", "")?;
            let alice = user(conn, "alice");
            let bob = user(conn, "bob");
            let sales = Group::create(conn, "Sales", "")?;
            let execs = Group::create(conn, "Executives", "")?;
            let other = Group::create(conn, "Other", "")?;
            Group::add_member(conn, sales.id, alice.id)?;
            Group::add_member(conn, execs.id, alice.id)?;
            Group::add_member(conn, other.id, bob.id)?;

            let first = ItPolicy::assign_to_user(conn, standard.id, alice.id)?;
            let replaced = ItPolicy::assign_to_user(conn, strict.id, alice.id)?;
            assert_eq!(replaced.id, first.id, "one policy per user");
            assert_eq!(replaced.policy_id, strict.id);
            ItPolicy::assign_to_group(conn, standard.id, sales.id, 5)?;
            ItPolicy::assign_to_group(conn, standard.id, execs.id, 9)?;
            let execs_assignment = ItPolicy::assign_to_group(conn, strict.id, execs.id, 1)?;
            assert_eq!(execs_assignment.rank, 1);
            ItPolicy::assign_to_group(conn, strict.id, other.id, 0)?;

            let for_alice = ItPolicy::find_assignments_for_user(conn, alice.id)?;
            let seen: Vec<_> = for_alice
                .iter()
                .map(|a| (a.target, a.policy_id, a.rank))
                .collect();
            assert_eq!(
                seen,
                [
                    (AssignmentTarget::User(alice.id), strict.id, 0),
                    (AssignmentTarget::Group(execs.id), strict.id, 1),
                    (AssignmentTarget::Group(sales.id), standard.id, 5),
                ]
            );
            let for_bob = ItPolicy::find_assignments_for_user(conn, bob.id)?;
            assert_eq!(for_bob.len(), 1);
            assert_eq!(for_bob[0].target, AssignmentTarget::Group(other.id));
            assert_eq!(ItPolicy::find_assignments(conn, strict.id)?.len(), 3);

            assert!(ItPolicy::delete_assignment(conn, replaced.id)?);
            assert_eq!(
                ItPolicy::find_assignments_for_user(conn, alice.id)?.len(),
                2
            );
            Group::delete_by_id(conn, execs.id)?;
            assert_eq!(
                ItPolicy::find_assignments_for_user(conn, alice.id)?.len(),
                1,
                "group assignment cascades"
            );
            User::delete_by_id(conn, bob.id)?;
            assert_eq!(ItPolicy::find_assignments(conn, strict.id)?.len(), 1);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn an_assignment_names_exactly_one_user_or_group() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let policy = ItPolicy::create(conn, "Standard", "")?;
            let alice = user(conn, "alice");
            let sales = Group::create(conn, "Sales", "")?;
            let both = diesel::insert_into(it_policy_assignments::table)
                .values((
                    it_policy_assignments::policy_id.eq(policy.id),
                    it_policy_assignments::user_id.eq(alice.id),
                    it_policy_assignments::group_id.eq(sales.id),
                ))
                .execute(conn);
            assert!(both.is_err(), "both user and group is refused");
            let neither = diesel::insert_into(it_policy_assignments::table)
                .values(it_policy_assignments::policy_id.eq(policy.id))
                .execute(conn);
            assert!(neither.is_err(), "neither user nor group is refused");
            assert!(ItPolicy::find_assignments(conn, policy.id)?.is_empty());
            assert!(
                ItPolicy::assign_to_user(conn, policy.id, UserId(9_999)).is_err(),
                "unknown user"
            );
            Ok(())
        })
        .unwrap();
    }
}
