//! User groups and their membership. IT policies and software
//! configurations are assigned to groups as well as to users.

use diesel::prelude::*;
use serde::Serialize;
use time::PrimitiveDateTime;

use crate::db::ids::{GroupId, UserId};
use crate::db::schema::{group_members, groups};
use crate::db::{now, Conn, DbResult};

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = groups, check_for_backend(diesel::sqlite::Sqlite))]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    pub description: String,
    pub created_at: PrimitiveDateTime,
}

impl Group {
    pub fn create(conn: &mut Conn, name: &str, description: &str) -> DbResult<Group> {
        Ok(diesel::insert_into(groups::table)
            .values((
                groups::name.eq(name),
                groups::description.eq(description),
                groups::created_at.eq(now()),
            ))
            .returning(Group::as_returning())
            .get_result(conn)?)
    }

    pub fn find_by_id(conn: &mut Conn, id: GroupId) -> DbResult<Option<Group>> {
        Ok(groups::table
            .find(id)
            .select(Group::as_select())
            .first(conn)
            .optional()?)
    }

    pub fn find_by_name(conn: &mut Conn, name: &str) -> DbResult<Option<Group>> {
        Ok(groups::table
            .filter(groups::name.eq(name))
            .select(Group::as_select())
            .first(conn)
            .optional()?)
    }

    pub fn find_all(conn: &mut Conn) -> DbResult<Vec<Group>> {
        Ok(groups::table
            .order(groups::name.asc())
            .select(Group::as_select())
            .load(conn)?)
    }

    /// The groups `user` belongs to.
    pub fn find_by_member(conn: &mut Conn, user: UserId) -> DbResult<Vec<Group>> {
        Ok(groups::table
            .inner_join(group_members::table)
            .filter(group_members::user_id.eq(user))
            .order(groups::name.asc())
            .select(Group::as_select())
            .load(conn)?)
    }

    pub fn save(&self, conn: &mut Conn) -> DbResult<()> {
        diesel::update(groups::table.find(self.id))
            .set((
                groups::name.eq(&self.name),
                groups::description.eq(&self.description),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// The group copied from entry `guid` of directory `directory`.
    pub fn find_by_directory_guid(
        conn: &mut Conn,
        directory: i64,
        guid: &str,
    ) -> DbResult<Option<Group>> {
        Ok(groups::table
            .filter(groups::directory_id.eq(directory))
            .filter(groups::directory_guid.eq(guid))
            .select(Group::as_select())
            .first(conn)
            .optional()?)
    }

    /// Every group linked to `directory` with its entry's stable id.
    pub fn find_directory_links(conn: &mut Conn, directory: i64) -> DbResult<Vec<(Group, String)>> {
        let rows: Vec<(Group, Option<String>)> = groups::table
            .filter(groups::directory_id.eq(directory))
            .order(groups::id.asc())
            .select((Group::as_select(), groups::directory_guid))
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|(g, guid)| (g, guid.unwrap_or_default()))
            .collect())
    }

    /// Every group linked to `directory` with its entry's last DN.
    pub fn find_directory_dns(conn: &mut Conn, directory: i64) -> DbResult<Vec<(GroupId, String)>> {
        let rows: Vec<(GroupId, Option<String>)> = groups::table
            .filter(groups::directory_id.eq(directory))
            .select((groups::id, groups::directory_dn))
            .load(conn)?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, dn)| dn.map(|dn| (id, dn)))
            .collect())
    }

    /// Links the group to a directory entry: its membership then follows
    /// the directory.
    pub fn set_directory_link(
        conn: &mut Conn,
        id: GroupId,
        directory: i64,
        guid: &str,
        dn: &str,
    ) -> DbResult<()> {
        diesel::update(groups::table.find(id))
            .set((
                groups::directory_id.eq(Some(directory)),
                groups::directory_guid.eq(Some(guid)),
                groups::directory_dn.eq(Some(dn)),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// Makes the membership exactly `members`; returns whether it changed.
    pub fn set_members(conn: &mut Conn, group: GroupId, members: &[UserId]) -> DbResult<bool> {
        let current = Self::find_member_ids(conn, group)?;
        let wanted: std::collections::BTreeSet<UserId> = members.iter().copied().collect();
        let have: std::collections::BTreeSet<UserId> = current.into_iter().collect();
        if wanted == have {
            return Ok(false);
        }
        for gone in have.difference(&wanted) {
            Self::delete_member(conn, group, *gone)?;
        }
        for new in wanted.difference(&have) {
            Self::add_member(conn, group, *new)?;
        }
        Ok(true)
    }

    pub fn delete_by_id(conn: &mut Conn, id: GroupId) -> DbResult<bool> {
        Ok(diesel::delete(groups::table.find(id)).execute(conn)? > 0)
    }

    /// Adds `user` to the group; adding twice is not an error.
    pub fn add_member(conn: &mut Conn, group: GroupId, user: UserId) -> DbResult<()> {
        diesel::insert_or_ignore_into(group_members::table)
            .values((
                group_members::group_id.eq(group),
                group_members::user_id.eq(user),
            ))
            .execute(conn)?;
        Ok(())
    }

    pub fn delete_member(conn: &mut Conn, group: GroupId, user: UserId) -> DbResult<bool> {
        Ok(diesel::delete(
            group_members::table
                .filter(group_members::group_id.eq(group))
                .filter(group_members::user_id.eq(user)),
        )
        .execute(conn)?
            > 0)
    }

    pub fn has_member(conn: &mut Conn, group: GroupId, user: UserId) -> DbResult<bool> {
        Ok(diesel::select(diesel::dsl::exists(
            group_members::table
                .filter(group_members::group_id.eq(group))
                .filter(group_members::user_id.eq(user)),
        ))
        .get_result(conn)?)
    }

    pub fn find_member_ids(conn: &mut Conn, group: GroupId) -> DbResult<Vec<UserId>> {
        Ok(group_members::table
            .filter(group_members::group_id.eq(group))
            .order(group_members::user_id.asc())
            .select(group_members::user_id)
            .load(conn)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;
    use crate::db::models::user::{NewUser, User};

    #[test]
    fn groups_and_membership() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let sales = Group::create(conn, "Sales", "field staff")?;
            let ops = Group::create(conn, "Operations", "")?;
            let user = NewUser {
                display_name: "Carol".into(),
                email: "carol@example.com".into(),
                mailbox_login: "carol".into(),
            }
            .save(conn)?;
            Group::add_member(conn, sales.id, user.id)?;
            Group::add_member(conn, sales.id, user.id)?;
            Group::add_member(conn, ops.id, user.id)?;
            let names: Vec<_> = Group::find_by_member(conn, user.id)?
                .into_iter()
                .map(|g| g.name)
                .collect();
            assert_eq!(names, ["Operations", "Sales"]);
            assert_eq!(Group::find_member_ids(conn, sales.id)?, vec![user.id]);

            let mut renamed = Group::find_by_name(conn, "sales")?.unwrap();
            renamed.name = "Sales EMEA".into();
            renamed.save(conn)?;
            assert_eq!(
                Group::find_by_id(conn, sales.id)?.unwrap().name,
                "Sales EMEA"
            );

            assert!(Group::delete_member(conn, ops.id, user.id)?);
            // Deleting a user removes their memberships (foreign keys are on).
            User::delete_by_id(conn, user.id)?;
            assert!(Group::find_member_ids(conn, sales.id)?.is_empty());
            assert!(Group::delete_by_id(conn, sales.id)?);
            assert_eq!(Group::find_all(conn)?.len(), 1);
            Ok(())
        })
        .unwrap();
    }
}
