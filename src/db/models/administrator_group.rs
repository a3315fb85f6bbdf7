//! Administrator groups: roles given to a group apply to each member, so an
//! administrator holds the union of their own roles and their groups'
//! ([`effective_roles`]).

use diesel::prelude::*;
use serde::Serialize;
use time::PrimitiveDateTime;

use crate::db::ids::{AdministratorGroupId, AdministratorId, RoleId};
use crate::db::models::administrator::Role;
use crate::db::schema::{
    administrator_group_members, administrator_group_roles, administrator_groups,
    administrator_roles, roles,
};
use crate::db::{now, Conn, DbError, DbResult};

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = administrator_groups, check_for_backend(diesel::sqlite::Sqlite))]
pub struct AdministratorGroup {
    pub id: AdministratorGroupId,
    pub name: String,
    pub description: String,
    pub created_at: PrimitiveDateTime,
}

impl AdministratorGroup {
    pub fn create(conn: &mut Conn, name: &str, description: &str) -> DbResult<AdministratorGroup> {
        if name.trim().is_empty() {
            return Err(DbError::Invalid(
                "an administrator group needs a name".into(),
            ));
        }
        diesel::insert_into(administrator_groups::table)
            .values((
                administrator_groups::name.eq(name.trim()),
                administrator_groups::description.eq(description),
                administrator_groups::created_at.eq(now()),
            ))
            .returning(AdministratorGroup::as_returning())
            .get_result(conn)
            .map_err(|e| match e {
                diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _,
                ) => DbError::Invalid(format!(
                    "an administrator group named `{}` already exists",
                    name.trim()
                )),
                other => other.into(),
            })
    }

    pub fn find_by_id(
        conn: &mut Conn,
        id: AdministratorGroupId,
    ) -> DbResult<Option<AdministratorGroup>> {
        Ok(administrator_groups::table
            .find(id)
            .select(AdministratorGroup::as_select())
            .first(conn)
            .optional()?)
    }

    pub fn find_all(conn: &mut Conn) -> DbResult<Vec<AdministratorGroup>> {
        Ok(administrator_groups::table
            .order(administrator_groups::name.asc())
            .select(AdministratorGroup::as_select())
            .load(conn)?)
    }

    pub fn delete_by_id(conn: &mut Conn, id: AdministratorGroupId) -> DbResult<bool> {
        Ok(diesel::delete(administrator_groups::table.find(id)).execute(conn)? > 0)
    }

    /// Makes the group's members exactly `members`.
    pub fn set_members(
        conn: &mut Conn,
        group: AdministratorGroupId,
        members: &[AdministratorId],
    ) -> DbResult<()> {
        diesel::delete(
            administrator_group_members::table
                .filter(administrator_group_members::group_id.eq(group)),
        )
        .execute(conn)?;
        for member in members {
            diesel::insert_or_ignore_into(administrator_group_members::table)
                .values((
                    administrator_group_members::group_id.eq(group),
                    administrator_group_members::administrator_id.eq(member),
                ))
                .execute(conn)?;
        }
        Ok(())
    }

    /// Makes the group's roles exactly `role_ids`.
    pub fn set_roles(
        conn: &mut Conn,
        group: AdministratorGroupId,
        role_ids: &[RoleId],
    ) -> DbResult<()> {
        diesel::delete(
            administrator_group_roles::table.filter(administrator_group_roles::group_id.eq(group)),
        )
        .execute(conn)?;
        for role in role_ids {
            diesel::insert_or_ignore_into(administrator_group_roles::table)
                .values((
                    administrator_group_roles::group_id.eq(group),
                    administrator_group_roles::role_id.eq(role),
                ))
                .execute(conn)?;
        }
        Ok(())
    }

    pub fn find_member_ids(
        conn: &mut Conn,
        group: AdministratorGroupId,
    ) -> DbResult<Vec<AdministratorId>> {
        Ok(administrator_group_members::table
            .filter(administrator_group_members::group_id.eq(group))
            .order(administrator_group_members::administrator_id.asc())
            .select(administrator_group_members::administrator_id)
            .load(conn)?)
    }

    pub fn find_roles(conn: &mut Conn, group: AdministratorGroupId) -> DbResult<Vec<Role>> {
        Ok(roles::table
            .inner_join(administrator_group_roles::table)
            .filter(administrator_group_roles::group_id.eq(group))
            .order(roles::id.asc())
            .select(Role::as_select())
            .load(conn)?)
    }

    /// The groups `administrator` belongs to.
    pub fn find_by_member(
        conn: &mut Conn,
        administrator: AdministratorId,
    ) -> DbResult<Vec<AdministratorGroup>> {
        Ok(administrator_groups::table
            .inner_join(administrator_group_members::table)
            .filter(administrator_group_members::administrator_id.eq(administrator))
            .order(administrator_groups::name.asc())
            .select(AdministratorGroup::as_select())
            .load(conn)?)
    }
}

/// Every role an administrator holds: their own and their groups', each
/// once, in role order.
pub fn effective_roles(conn: &mut Conn, administrator: AdministratorId) -> DbResult<Vec<Role>> {
    let own = administrator_roles::table
        .filter(administrator_roles::administrator_id.eq(administrator))
        .select(administrator_roles::role_id);
    let through_groups = administrator_group_roles::table
        .inner_join(
            administrator_group_members::table
                .on(administrator_group_members::group_id.eq(administrator_group_roles::group_id)),
        )
        .filter(administrator_group_members::administrator_id.eq(administrator))
        .select(administrator_group_roles::role_id);
    let mut ids: Vec<RoleId> = own.load(conn)?;
    ids.extend(through_groups.load::<RoleId>(conn)?);
    Ok(roles::table
        .filter(roles::id.eq_any(ids))
        .order(roles::id.asc())
        .select(Role::as_select())
        .load(conn)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::administrator::{Administrator, NewAdministrator};
    use crate::db::models::test_db;

    #[test]
    fn group_roles_join_an_administrators_own() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let admin = NewAdministrator {
                login: "helpdesk1".into(),
                display_name: "Helpdesk".into(),
                password: "long enough".into(),
            }
            .save(conn)?;
            let junior = Role::find_by_name(conn, "Junior Helpdesk")?.unwrap();
            let server = Role::find_by_name(conn, "Server Only")?.unwrap();
            Administrator::add_role(conn, admin.id, junior.id)?;
            let names = |conn: &mut Conn| -> DbResult<Vec<String>> {
                Ok(effective_roles(conn, admin.id)?
                    .into_iter()
                    .map(|r| r.name)
                    .collect())
            };
            assert_eq!(names(conn)?, ["Junior Helpdesk"]);

            let ops = AdministratorGroup::create(conn, "Operations", "night shift")?;
            AdministratorGroup::set_roles(conn, ops.id, &[server.id, junior.id])?;
            AdministratorGroup::set_members(conn, ops.id, &[admin.id])?;
            assert_eq!(
                names(conn)?,
                ["Junior Helpdesk", "Server Only"],
                "union, each once"
            );
            assert_eq!(
                AdministratorGroup::find_by_member(conn, admin.id)?[0].name,
                "Operations"
            );
            assert!(AdministratorGroup::create(conn, "operations", "").is_err());

            AdministratorGroup::set_members(conn, ops.id, &[])?;
            assert_eq!(names(conn)?, ["Junior Helpdesk"]);
            assert!(AdministratorGroup::delete_by_id(conn, ops.id)?);
            Ok(())
        })
        .unwrap();
    }
}
