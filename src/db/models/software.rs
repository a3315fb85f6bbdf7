//! Software configurations: named lists of BlackBerry Java Applications,
//! each required, optional or disallowed, assigned to users and groups.
//! The Policy Service pushes required applications and removes disallowed
//! ones; this module stores the lists and who they are for.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use time::PrimitiveDateTime;

use crate::db::ids::{
    GroupId, SoftwareApplicationId, SoftwareAssignmentId, SoftwareConfigurationId, UserId,
};
use crate::db::models::it_policy::AssignmentTarget;
use crate::db::models::user::text_enum;
use crate::db::schema::{
    group_members, software_applications, software_assignments, software_configurations,
};
use crate::db::{now, Conn, DbError, DbResult};

/// What the device must do with an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Installed wirelessly; the user cannot remove it.
    Required,
    /// The user may install it and remove it.
    Optional,
    /// Removed from the device and not allowed back.
    Disallowed,
}

text_enum!(Disposition {
    Required => "required",
    Optional => "optional",
    Disallowed => "disallowed",
});

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = software_configurations, check_for_backend(diesel::sqlite::Sqlite))]
pub struct SoftwareConfiguration {
    pub id: SoftwareConfigurationId,
    pub name: String,
    pub description: String,
    pub created_at: PrimitiveDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = software_applications, check_for_backend(diesel::sqlite::Sqlite))]
struct ApplicationRow {
    id: SoftwareApplicationId,
    configuration_id: SoftwareConfigurationId,
    name: String,
    version: String,
    disposition: String,
}

/// One application of a software configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SoftwareApplication {
    pub id: SoftwareApplicationId,
    pub configuration_id: SoftwareConfigurationId,
    pub name: String,
    pub version: String,
    pub disposition: Disposition,
}

impl TryFrom<ApplicationRow> for SoftwareApplication {
    type Error = DbError;

    fn try_from(row: ApplicationRow) -> DbResult<SoftwareApplication> {
        let disposition = Disposition::parse(&row.disposition).ok_or_else(|| {
            DbError::Damaged(format!(
                "application `{}` has an unknown disposition `{}`",
                row.name, row.disposition
            ))
        })?;
        Ok(SoftwareApplication {
            id: row.id,
            configuration_id: row.configuration_id,
            name: row.name,
            version: row.version,
            disposition,
        })
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = software_assignments, check_for_backend(diesel::sqlite::Sqlite))]
struct AssignmentRow {
    id: SoftwareAssignmentId,
    configuration_id: SoftwareConfigurationId,
    user_id: Option<UserId>,
    group_id: Option<GroupId>,
}

/// A software configuration assigned to a user or a group. A user may have
/// several, directly and through groups.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SoftwareAssignment {
    pub id: SoftwareAssignmentId,
    pub configuration_id: SoftwareConfigurationId,
    pub target: AssignmentTarget,
}

impl TryFrom<AssignmentRow> for SoftwareAssignment {
    type Error = DbError;

    fn try_from(row: AssignmentRow) -> DbResult<SoftwareAssignment> {
        Ok(SoftwareAssignment {
            id: row.id,
            configuration_id: row.configuration_id,
            target: AssignmentTarget::from_columns(row.user_id, row.group_id)?,
        })
    }
}

fn assignments(rows: Vec<AssignmentRow>) -> DbResult<Vec<SoftwareAssignment>> {
    rows.into_iter().map(SoftwareAssignment::try_from).collect()
}

impl SoftwareConfiguration {
    pub fn create(
        conn: &mut Conn,
        name: &str,
        description: &str,
    ) -> DbResult<SoftwareConfiguration> {
        if name.trim().is_empty() {
            return Err(DbError::Invalid(
                "a software configuration needs a name".into(),
            ));
        }
        Ok(diesel::insert_into(software_configurations::table)
            .values((
                software_configurations::name.eq(name.trim()),
                software_configurations::description.eq(description),
                software_configurations::created_at.eq(now()),
            ))
            .returning(SoftwareConfiguration::as_returning())
            .get_result(conn)?)
    }

    pub fn find_by_id(
        conn: &mut Conn,
        id: SoftwareConfigurationId,
    ) -> DbResult<Option<SoftwareConfiguration>> {
        Ok(software_configurations::table
            .find(id)
            .select(SoftwareConfiguration::as_select())
            .first(conn)
            .optional()?)
    }

    pub fn find_by_name(conn: &mut Conn, name: &str) -> DbResult<Option<SoftwareConfiguration>> {
        Ok(software_configurations::table
            .filter(software_configurations::name.eq(name))
            .select(SoftwareConfiguration::as_select())
            .first(conn)
            .optional()?)
    }

    /// Every configuration, by name.
    pub fn find_all(conn: &mut Conn) -> DbResult<Vec<SoftwareConfiguration>> {
        Ok(software_configurations::table
            .order((
                software_configurations::name.asc(),
                software_configurations::id.asc(),
            ))
            .select(SoftwareConfiguration::as_select())
            .load(conn)?)
    }

    pub fn save(&self, conn: &mut Conn) -> DbResult<()> {
        if self.name.trim().is_empty() {
            return Err(DbError::Invalid(
                "a software configuration needs a name".into(),
            ));
        }
        diesel::update(software_configurations::table.find(self.id))
            .set((
                software_configurations::name.eq(self.name.trim()),
                software_configurations::description.eq(&self.description),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// Deletes the configuration with its applications and assignments.
    pub fn delete_by_id(conn: &mut Conn, id: SoftwareConfigurationId) -> DbResult<bool> {
        Ok(diesel::delete(software_configurations::table.find(id)).execute(conn)? > 0)
    }

    /// Adds an application, or updates the version and disposition of the
    /// application of that name already in the configuration.
    pub fn set_application(
        conn: &mut Conn,
        configuration: SoftwareConfigurationId,
        name: &str,
        version: &str,
        disposition: Disposition,
    ) -> DbResult<SoftwareApplication> {
        if name.trim().is_empty() {
            return Err(DbError::Invalid("an application needs a name".into()));
        }
        diesel::insert_into(software_applications::table)
            .values((
                software_applications::configuration_id.eq(configuration),
                software_applications::name.eq(name.trim()),
                software_applications::version.eq(version.trim()),
                software_applications::disposition.eq(disposition.as_str()),
            ))
            .on_conflict((
                software_applications::configuration_id,
                software_applications::name,
            ))
            .do_update()
            .set((
                software_applications::version.eq(version.trim()),
                software_applications::disposition.eq(disposition.as_str()),
            ))
            .returning(ApplicationRow::as_returning())
            .get_result(conn)?
            .try_into()
    }

    /// The configuration's applications, by name.
    pub fn find_applications(
        conn: &mut Conn,
        configuration: SoftwareConfigurationId,
    ) -> DbResult<Vec<SoftwareApplication>> {
        software_applications::table
            .filter(software_applications::configuration_id.eq(configuration))
            .order((
                software_applications::name.asc(),
                software_applications::id.asc(),
            ))
            .select(ApplicationRow::as_select())
            .load(conn)?
            .into_iter()
            .map(SoftwareApplication::try_from)
            .collect()
    }

    pub fn delete_application(conn: &mut Conn, id: SoftwareApplicationId) -> DbResult<bool> {
        Ok(diesel::delete(software_applications::table.find(id)).execute(conn)? > 0)
    }

    /// Assigns the configuration to a user or group; assigning it again
    /// returns the existing assignment.
    pub fn assign(
        conn: &mut Conn,
        configuration: SoftwareConfigurationId,
        target: AssignmentTarget,
    ) -> DbResult<SoftwareAssignment> {
        let (user, group) = match target {
            AssignmentTarget::User(user) => (Some(user), None),
            AssignmentTarget::Group(group) => (None, Some(group)),
        };
        crate::db::write_transaction(conn, |conn| {
            let existing = software_assignments::table
                .filter(software_assignments::configuration_id.eq(configuration))
                .filter(software_assignments::user_id.is(user))
                .filter(software_assignments::group_id.is(group))
                .select(AssignmentRow::as_select())
                .first(conn)
                .optional()?;
            let row = match existing {
                Some(row) => row,
                None => diesel::insert_into(software_assignments::table)
                    .values((
                        software_assignments::configuration_id.eq(configuration),
                        software_assignments::user_id.eq(user),
                        software_assignments::group_id.eq(group),
                    ))
                    .returning(AssignmentRow::as_returning())
                    .get_result(conn)?,
            };
            row.try_into()
        })
    }

    pub fn assign_to_user(
        conn: &mut Conn,
        configuration: SoftwareConfigurationId,
        user: UserId,
    ) -> DbResult<SoftwareAssignment> {
        SoftwareConfiguration::assign(conn, configuration, AssignmentTarget::User(user))
    }

    pub fn assign_to_group(
        conn: &mut Conn,
        configuration: SoftwareConfigurationId,
        group: GroupId,
    ) -> DbResult<SoftwareAssignment> {
        SoftwareConfiguration::assign(conn, configuration, AssignmentTarget::Group(group))
    }

    pub fn delete_assignment(conn: &mut Conn, id: SoftwareAssignmentId) -> DbResult<bool> {
        Ok(diesel::delete(software_assignments::table.find(id)).execute(conn)? > 0)
    }

    /// Everyone the configuration is assigned to: users first, then groups.
    pub fn find_assignments(
        conn: &mut Conn,
        configuration: SoftwareConfigurationId,
    ) -> DbResult<Vec<SoftwareAssignment>> {
        assignments(
            software_assignments::table
                .filter(software_assignments::configuration_id.eq(configuration))
                .order((
                    software_assignments::user_id.is_null().asc(),
                    software_assignments::id.asc(),
                ))
                .select(AssignmentRow::as_select())
                .load(conn)?,
        )
    }

    /// The assignments that concern a user: the user's own first, then
    /// those of the user's groups. Combining them is the Policy Service's
    /// work.
    pub fn find_assignments_for_user(
        conn: &mut Conn,
        user: UserId,
    ) -> DbResult<Vec<SoftwareAssignment>> {
        let groups = group_members::table
            .filter(group_members::user_id.eq(user))
            .select(group_members::group_id.nullable());
        assignments(
            software_assignments::table
                .filter(
                    software_assignments::user_id
                        .eq(user)
                        .or(software_assignments::group_id.eq_any(groups)),
                )
                .order((
                    software_assignments::user_id.is_null().asc(),
                    software_assignments::id.asc(),
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
    use crate::db::models::user::NewUser;

    #[test]
    fn configurations_and_applications() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let standard = SoftwareConfiguration::create(conn, "Standard", "all staff")?;
            assert!(
                SoftwareConfiguration::create(conn, "Standard", "").is_err(),
                "names are unique"
            );
            SoftwareConfiguration::set_application(
                conn,
                standard.id,
                "Maps",
                "1.0",
                Disposition::Optional,
            )?;
            let im = SoftwareConfiguration::set_application(
                conn,
                standard.id,
                "BBIM",
                "4.6",
                Disposition::Required,
            )?;
            let games = SoftwareConfiguration::set_application(
                conn,
                standard.id,
                "Games",
                "2.0",
                Disposition::Optional,
            )?;
            let updated = SoftwareConfiguration::set_application(
                conn,
                standard.id,
                "Games",
                "2.1",
                Disposition::Disallowed,
            )?;
            assert_eq!(updated.id, games.id, "one entry per application name");
            let apps: Vec<_> = SoftwareConfiguration::find_applications(conn, standard.id)?
                .into_iter()
                .map(|a| (a.name, a.version, a.disposition))
                .collect();
            assert_eq!(
                apps,
                [
                    ("BBIM".to_string(), "4.6".to_string(), Disposition::Required),
                    (
                        "Games".to_string(),
                        "2.1".to_string(),
                        Disposition::Disallowed
                    ),
                    ("Maps".to_string(), "1.0".to_string(), Disposition::Optional),
                ]
            );

            // The CHECK constraint refuses a disposition the enum does not know.
            let bad = diesel::insert_into(software_applications::table)
                .values((
                    software_applications::configuration_id.eq(standard.id),
                    software_applications::name.eq("Other"),
                    software_applications::version.eq("1"),
                    software_applications::disposition.eq("maybe"),
                ))
                .execute(conn);
            assert!(bad.is_err());

            assert!(SoftwareConfiguration::delete_application(conn, im.id)?);
            assert_eq!(
                SoftwareConfiguration::find_applications(conn, standard.id)?.len(),
                2
            );
            let mut renamed = SoftwareConfiguration::find_by_name(conn, "Standard")?.unwrap();
            renamed.name = "Base".into();
            renamed.save(conn)?;
            assert_eq!(
                SoftwareConfiguration::find_by_id(conn, standard.id)?
                    .unwrap()
                    .name,
                "Base"
            );
            assert!(SoftwareConfiguration::delete_by_id(conn, standard.id)?);
            let left: i64 = software_applications::table.count().get_result(conn)?;
            assert_eq!(left, 0, "applications go with the configuration");
            assert!(SoftwareConfiguration::find_all(conn)?.is_empty());
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn assignments_to_users_and_groups() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let base = SoftwareConfiguration::create(conn, "Base", "")?;
            let sales_apps = SoftwareConfiguration::create(conn, "Sales apps", "")?;
            let alice = NewUser {
                display_name: "Alice".into(),
                email: "alice@example.com".into(),
                mailbox_login: "alice".into(),
            }
            .save(conn)?;
            let sales = Group::create(conn, "Sales", "")?;
            Group::add_member(conn, sales.id, alice.id)?;

            let own = SoftwareConfiguration::assign_to_user(conn, base.id, alice.id)?;
            let again = SoftwareConfiguration::assign_to_user(conn, base.id, alice.id)?;
            assert_eq!(own.id, again.id, "assigning twice keeps one assignment");
            SoftwareConfiguration::assign_to_group(conn, sales_apps.id, sales.id)?;
            SoftwareConfiguration::assign_to_group(conn, base.id, sales.id)?;

            let targets: Vec<_> = SoftwareConfiguration::find_assignments_for_user(conn, alice.id)?
                .into_iter()
                .map(|a| (a.configuration_id, a.target))
                .collect();
            assert_eq!(
                targets,
                [
                    (base.id, AssignmentTarget::User(alice.id)),
                    (sales_apps.id, AssignmentTarget::Group(sales.id)),
                    (base.id, AssignmentTarget::Group(sales.id)),
                ]
            );
            assert_eq!(
                SoftwareConfiguration::find_assignments(conn, base.id)?.len(),
                2
            );

            let both = diesel::insert_into(software_assignments::table)
                .values((
                    software_assignments::configuration_id.eq(base.id),
                    software_assignments::user_id.eq(alice.id),
                    software_assignments::group_id.eq(sales.id),
                ))
                .execute(conn);
            assert!(both.is_err(), "exactly one of user and group");

            assert!(SoftwareConfiguration::delete_assignment(conn, own.id)?);
            Group::delete_by_id(conn, sales.id)?;
            assert!(SoftwareConfiguration::find_assignments_for_user(conn, alice.id)?.is_empty());
            Ok(())
        })
        .unwrap();
    }
}
