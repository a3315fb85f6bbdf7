//! Administrators of the console, roles and their assignment. Passwords are
//! argon2 hashes; the built-in roles are the BES ones (seeded by the first
//! migration) and custom roles may be added.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use diesel::prelude::*;
use serde::Serialize;
use time::PrimitiveDateTime;

use crate::db::ids::{AdministratorId, RoleId};
use crate::db::schema::{administrator_roles, administrators, roles};
use crate::db::{now, Conn, DbError, DbResult};

/// The role with every permission.
pub const SECURITY_ADMINISTRATOR: &str = "Security Administrator";
/// Shortest password accepted for an administrator.
pub const MIN_PASSWORD_LEN: usize = 8;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = administrators, check_for_backend(diesel::sqlite::Sqlite))]
pub struct Administrator {
    pub id: AdministratorId,
    pub login: String,
    pub display_name: String,
    #[serde(skip)]
    pub password_hash: String,
    pub disabled: bool,
    pub created_at: PrimitiveDateTime,
}

/// An administrator not yet saved; the password is hashed on save.
#[derive(Debug, Clone)]
pub struct NewAdministrator {
    pub login: String,
    pub display_name: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = roles, check_for_backend(diesel::sqlite::Sqlite))]
pub struct Role {
    pub id: RoleId,
    pub name: String,
    pub builtin: bool,
    /// JSON array of permission names (`users.read`, `devices.*`, `*`).
    pub permissions: String,
}

impl Role {
    pub fn find_by_name(conn: &mut Conn, name: &str) -> DbResult<Option<Role>> {
        Ok(roles::table
            .filter(roles::name.eq(name))
            .select(Role::as_select())
            .first(conn)
            .optional()?)
    }

    pub fn find_by_id(conn: &mut Conn, id: RoleId) -> DbResult<Option<Role>> {
        Ok(roles::table
            .find(id)
            .select(Role::as_select())
            .first(conn)
            .optional()?)
    }

    pub fn find_all(conn: &mut Conn) -> DbResult<Vec<Role>> {
        Ok(roles::table
            .order(roles::id.asc())
            .select(Role::as_select())
            .load(conn)?)
    }

    /// Adds a custom role.
    pub fn create(conn: &mut Conn, name: &str, permissions: &[&str]) -> DbResult<Role> {
        let permissions = serde_json::to_string(permissions).map_err(|e| DbError::Encoding {
            what: "encode the permissions",
            message: e.to_string(),
        })?;
        Ok(diesel::insert_into(roles::table)
            .values((
                roles::name.eq(name),
                roles::builtin.eq(false),
                roles::permissions.eq(permissions),
            ))
            .returning(Role::as_returning())
            .get_result(conn)?)
    }

    /// Built-in roles cannot be deleted.
    pub fn delete_by_id(conn: &mut Conn, id: RoleId) -> DbResult<bool> {
        Ok(
            diesel::delete(roles::table.find(id).filter(roles::builtin.eq(false))).execute(conn)?
                > 0,
        )
    }

    pub fn permission_list(&self) -> Vec<String> {
        serde_json::from_str(&self.permissions).unwrap_or_default()
    }
}

impl NewAdministrator {
    pub fn save(&self, conn: &mut Conn) -> DbResult<Administrator> {
        if self.login.trim().is_empty() {
            return Err(DbError::Invalid(
                "an administrator needs a login name".into(),
            ));
        }
        if self.password.chars().count() < MIN_PASSWORD_LEN {
            return Err(DbError::Invalid(format!(
                "the password must be at least {MIN_PASSWORD_LEN} characters long"
            )));
        }
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(self.password.as_bytes(), &salt)
            .map_err(|e| DbError::Encoding {
                what: "hash the password",
                message: e.to_string(),
            })?
            .to_string();
        diesel::insert_into(administrators::table)
            .values((
                administrators::login.eq(self.login.trim()),
                administrators::display_name.eq(&self.display_name),
                administrators::password_hash.eq(hash),
                administrators::disabled.eq(false),
                administrators::created_at.eq(now()),
            ))
            .returning(Administrator::as_returning())
            .get_result(conn)
            .map_err(|e| match e {
                diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _,
                ) => DbError::Invalid(format!(
                    "an administrator with the login `{}` already exists",
                    self.login.trim()
                )),
                other => other.into(),
            })
    }
}

impl Administrator {
    /// Creates an administrator holding the Security Administrator role, in
    /// one transaction.
    pub fn create_security_administrator(
        conn: &mut Conn,
        new: &NewAdministrator,
    ) -> DbResult<Administrator> {
        crate::db::write_transaction(conn, |conn| {
            let admin = new.save(conn)?;
            let role = Role::find_by_name(conn, SECURITY_ADMINISTRATOR)?.ok_or_else(|| {
                DbError::Damaged("the Security Administrator role is missing".into())
            })?;
            Administrator::add_role(conn, admin.id, role.id)?;
            Ok(admin)
        })
    }

    pub fn find_by_id(conn: &mut Conn, id: AdministratorId) -> DbResult<Option<Administrator>> {
        Ok(administrators::table
            .find(id)
            .select(Administrator::as_select())
            .first(conn)
            .optional()?)
    }

    pub fn find_by_login(conn: &mut Conn, login: &str) -> DbResult<Option<Administrator>> {
        Ok(administrators::table
            .filter(administrators::login.eq(login))
            .select(Administrator::as_select())
            .first(conn)
            .optional()?)
    }

    /// Every administrator, by login.
    pub fn find_all(conn: &mut Conn) -> DbResult<Vec<Administrator>> {
        Ok(administrators::table
            .order(administrators::login.asc())
            .select(Administrator::as_select())
            .load(conn)?)
    }

    /// Makes the administrator's own roles exactly `role_ids`.
    pub fn set_roles(conn: &mut Conn, admin: AdministratorId, role_ids: &[RoleId]) -> DbResult<()> {
        diesel::delete(
            administrator_roles::table.filter(administrator_roles::administrator_id.eq(admin)),
        )
        .execute(conn)?;
        for role in role_ids {
            Self::add_role(conn, admin, *role)?;
        }
        Ok(())
    }

    pub fn count(conn: &mut Conn) -> DbResult<i64> {
        Ok(administrators::table.count().get_result(conn)?)
    }

    /// Whether `password` is this administrator's (and the account is enabled).
    pub fn verify_password(&self, password: &str) -> bool {
        !self.disabled
            && PasswordHash::new(&self.password_hash)
                .map(|hash| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &hash)
                        .is_ok()
                })
                .unwrap_or(false)
    }

    pub fn save(&self, conn: &mut Conn) -> DbResult<()> {
        diesel::update(administrators::table.find(self.id))
            .set((
                administrators::display_name.eq(&self.display_name),
                administrators::disabled.eq(self.disabled),
            ))
            .execute(conn)?;
        Ok(())
    }

    pub fn delete_by_id(conn: &mut Conn, id: AdministratorId) -> DbResult<bool> {
        Ok(diesel::delete(administrators::table.find(id)).execute(conn)? > 0)
    }

    pub fn add_role(conn: &mut Conn, admin: AdministratorId, role: RoleId) -> DbResult<()> {
        diesel::insert_or_ignore_into(administrator_roles::table)
            .values((
                administrator_roles::administrator_id.eq(admin),
                administrator_roles::role_id.eq(role),
            ))
            .execute(conn)?;
        Ok(())
    }

    pub fn delete_role(conn: &mut Conn, admin: AdministratorId, role: RoleId) -> DbResult<bool> {
        Ok(diesel::delete(
            administrator_roles::table
                .filter(administrator_roles::administrator_id.eq(admin))
                .filter(administrator_roles::role_id.eq(role)),
        )
        .execute(conn)?
            > 0)
    }

    pub fn find_roles(conn: &mut Conn, admin: AdministratorId) -> DbResult<Vec<Role>> {
        Ok(roles::table
            .inner_join(administrator_roles::table)
            .filter(administrator_roles::administrator_id.eq(admin))
            .order(roles::id.asc())
            .select(Role::as_select())
            .load(conn)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;

    #[test]
    fn builtin_roles_are_seeded() {
        let (_dir, db) = test_db();
        let names: Vec<String> = db
            .run_blocking(Role::find_all)
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(
            names,
            [
                "Security Administrator",
                "Enterprise Administrator",
                "Senior Helpdesk",
                "Junior Helpdesk",
                "Server Only",
                "User Only"
            ]
        );
    }

    #[test]
    fn security_administrator_with_hashed_password() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let new = NewAdministrator {
                login: "root-admin".into(),
                display_name: "First Admin".into(),
                password: "correct horse".into(),
            };
            let admin = Administrator::create_security_administrator(conn, &new)?;
            assert!(!admin.password_hash.contains("correct horse"));
            assert!(admin.password_hash.starts_with("$argon2"));
            let found = Administrator::find_by_login(conn, "ROOT-ADMIN")?.unwrap();
            assert!(found.verify_password("correct horse"));
            assert!(!found.verify_password("wrong horse"));
            let roles = Administrator::find_roles(conn, admin.id)?;
            assert_eq!(roles.len(), 1);
            assert_eq!(roles[0].name, SECURITY_ADMINISTRATOR);
            assert_eq!(roles[0].permission_list(), ["*"]);

            let again = Administrator::create_security_administrator(conn, &new);
            assert!(again.unwrap_err().to_string().contains("already exists"));
            let short = NewAdministrator {
                password: "short".into(),
                login: "x".into(),
                ..new.clone()
            };
            assert!(short.save(conn).is_err());

            let custom = Role::create(conn, "Auditor", &["audit.read"])?;
            Administrator::add_role(conn, admin.id, custom.id)?;
            assert_eq!(Administrator::find_roles(conn, admin.id)?.len(), 2);
            assert!(Administrator::delete_role(conn, admin.id, custom.id)?);
            assert!(Role::delete_by_id(conn, custom.id)?);
            let builtin = Role::find_by_name(conn, SECURITY_ADMINISTRATOR)?.unwrap();
            assert!(
                !Role::delete_by_id(conn, builtin.id)?,
                "built-in roles stay"
            );

            let mut disabled = found.clone();
            disabled.disabled = true;
            disabled.save(conn)?;
            assert!(!Administrator::find_by_id(conn, admin.id)?
                .unwrap()
                .verify_password("correct horse"));
            assert_eq!(Administrator::count(conn)?, 1);
            assert!(Administrator::delete_by_id(conn, admin.id)?);
            Ok(())
        })
        .unwrap();
    }
}
