//! Server instances of the BlackBerry Domain and their Messaging Agents.
//! A BlackBerry Enterprise Server instance runs one or more Messaging
//! Agents; each agent serves up to `max_users` users (the seed's
//! configuration settings for BlackBerry Enterprise Server components).
//! Deleting a server removes its agents; their users stay, unassigned.

use diesel::prelude::*;
use serde::Serialize;
use time::PrimitiveDateTime;

use crate::db::ids::{MessagingAgentId, ServerId};
use crate::db::schema::{messaging_agents, servers, users};
use crate::db::{now, Conn, DbError, DbResult};

/// How many users a Messaging Agent serves unless configured otherwise.
pub const DEFAULT_MAX_USERS: i32 = 500;

/// A BlackBerry Enterprise Server instance of the domain.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = servers, check_for_backend(diesel::sqlite::Sqlite))]
pub struct ServerInstance {
    pub id: ServerId,
    pub name: String,
    pub created_at: PrimitiveDateTime,
}

/// A Messaging Agent of a server instance.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = messaging_agents, check_for_backend(diesel::sqlite::Sqlite))]
pub struct MessagingAgent {
    pub id: MessagingAgentId,
    pub server_id: ServerId,
    pub name: String,
    pub max_users: i32,
}

fn check_name(what: &str, name: &str) -> DbResult<()> {
    if name.trim().is_empty() {
        return Err(DbError::Invalid(format!("a {what} needs a name")));
    }
    Ok(())
}

fn check_max_users(max_users: i32) -> DbResult<()> {
    if max_users < 1 {
        return Err(DbError::Invalid(format!(
            "a Messaging Agent must serve at least one user (got {max_users})"
        )));
    }
    Ok(())
}

impl ServerInstance {
    pub fn create(conn: &mut Conn, name: &str) -> DbResult<ServerInstance> {
        check_name("server instance", name)?;
        Ok(diesel::insert_into(servers::table)
            .values((servers::name.eq(name.trim()), servers::created_at.eq(now())))
            .returning(ServerInstance::as_returning())
            .get_result(conn)?)
    }

    pub fn find_by_id(conn: &mut Conn, id: ServerId) -> DbResult<Option<ServerInstance>> {
        Ok(servers::table
            .find(id)
            .select(ServerInstance::as_select())
            .first(conn)
            .optional()?)
    }

    pub fn find_by_name(conn: &mut Conn, name: &str) -> DbResult<Option<ServerInstance>> {
        Ok(servers::table
            .filter(servers::name.eq(name))
            .select(ServerInstance::as_select())
            .first(conn)
            .optional()?)
    }

    /// Every server instance, by name.
    pub fn find_all(conn: &mut Conn) -> DbResult<Vec<ServerInstance>> {
        Ok(servers::table
            .order((servers::name.asc(), servers::id.asc()))
            .select(ServerInstance::as_select())
            .load(conn)?)
    }

    pub fn save(&self, conn: &mut Conn) -> DbResult<()> {
        check_name("server instance", &self.name)?;
        diesel::update(servers::table.find(self.id))
            .set(servers::name.eq(self.name.trim()))
            .execute(conn)?;
        Ok(())
    }

    /// Deletes the server and its Messaging Agents; the agents' users are
    /// kept without an agent until they are moved.
    pub fn delete_by_id(conn: &mut Conn, id: ServerId) -> DbResult<bool> {
        Ok(diesel::delete(servers::table.find(id)).execute(conn)? > 0)
    }
}

impl MessagingAgent {
    /// Adds an agent serving up to [`DEFAULT_MAX_USERS`] users.
    pub fn create(conn: &mut Conn, server: ServerId, name: &str) -> DbResult<MessagingAgent> {
        check_name("Messaging Agent", name)?;
        Ok(diesel::insert_into(messaging_agents::table)
            .values((
                messaging_agents::server_id.eq(server),
                messaging_agents::name.eq(name.trim()),
            ))
            .returning(MessagingAgent::as_returning())
            .get_result(conn)?)
    }

    pub fn find_by_id(conn: &mut Conn, id: MessagingAgentId) -> DbResult<Option<MessagingAgent>> {
        Ok(messaging_agents::table
            .find(id)
            .select(MessagingAgent::as_select())
            .first(conn)
            .optional()?)
    }

    /// The agents of one server instance, by name.
    pub fn find_by_server(conn: &mut Conn, server: ServerId) -> DbResult<Vec<MessagingAgent>> {
        Ok(messaging_agents::table
            .filter(messaging_agents::server_id.eq(server))
            .order((messaging_agents::name.asc(), messaging_agents::id.asc()))
            .select(MessagingAgent::as_select())
            .load(conn)?)
    }

    /// How many users the agent serves now, to compare with `max_users`.
    pub fn count_users(conn: &mut Conn, agent: MessagingAgentId) -> DbResult<i64> {
        Ok(users::table
            .filter(users::messaging_agent_id.eq(agent))
            .count()
            .get_result(conn)?)
    }

    /// Writes the name and `max_users` back.
    pub fn save(&self, conn: &mut Conn) -> DbResult<()> {
        check_name("Messaging Agent", &self.name)?;
        check_max_users(self.max_users)?;
        diesel::update(messaging_agents::table.find(self.id))
            .set((
                messaging_agents::name.eq(self.name.trim()),
                messaging_agents::max_users.eq(self.max_users),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// Deletes the agent; its users are kept without an agent.
    pub fn delete_by_id(conn: &mut Conn, id: MessagingAgentId) -> DbResult<bool> {
        Ok(diesel::delete(messaging_agents::table.find(id)).execute(conn)? > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;
    use crate::db::models::user::{NewUser, User};

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
    fn servers_and_agents() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let b = ServerInstance::create(conn, "BES-B")?;
            let a = ServerInstance::create(conn, "BES-A")?;
            let names: Vec<_> = ServerInstance::find_all(conn)?
                .into_iter()
                .map(|s| s.name)
                .collect();
            assert_eq!(names, ["BES-A", "BES-B"]);
            assert!(
                ServerInstance::create(conn, "BES-A").is_err(),
                "names are unique"
            );
            assert!(matches!(
                ServerInstance::create(conn, " "),
                Err(DbError::Invalid(_))
            ));
            assert_eq!(
                ServerInstance::find_by_name(conn, "BES-B")?.unwrap().id,
                b.id
            );

            let agent2 = MessagingAgent::create(conn, a.id, "MA2")?;
            let agent1 = MessagingAgent::create(conn, a.id, "MA1")?;
            assert_eq!(agent1.max_users, DEFAULT_MAX_USERS);
            assert!(
                MessagingAgent::create(conn, a.id, "MA1").is_err(),
                "unique per server"
            );
            MessagingAgent::create(conn, b.id, "MA1")?;
            let on_a: Vec<_> = MessagingAgent::find_by_server(conn, a.id)?
                .into_iter()
                .map(|m| m.id)
                .collect();
            assert_eq!(on_a, [agent1.id, agent2.id]);

            let mut edited = agent1.clone();
            edited.max_users = 2_000;
            edited.save(conn)?;
            assert_eq!(
                MessagingAgent::find_by_id(conn, agent1.id)?
                    .unwrap()
                    .max_users,
                2_000
            );
            edited.max_users = 0;
            assert!(matches!(edited.save(conn), Err(DbError::Invalid(_))));

            let mut renamed = b.clone();
            renamed.name = "BES-Z".into();
            renamed.save(conn)?;
            assert_eq!(
                ServerInstance::find_by_id(conn, b.id)?.unwrap().name,
                "BES-Z"
            );
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn deleting_a_server_removes_agents_and_unassigns_users() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let server = ServerInstance::create(conn, "BES01")?;
            let agent = MessagingAgent::create(conn, server.id, "MA1")?;
            let mut alice = user(conn, "alice");
            let mut bob = user(conn, "bob");
            user(conn, "carol");
            alice.messaging_agent_id = Some(agent.id);
            alice.save(conn)?;
            bob.messaging_agent_id = Some(agent.id);
            bob.save(conn)?;
            assert_eq!(MessagingAgent::count_users(conn, agent.id)?, 2);

            assert!(ServerInstance::delete_by_id(conn, server.id)?);
            assert!(
                MessagingAgent::find_by_id(conn, agent.id)?.is_none(),
                "agents go with the server"
            );
            let alice = User::find_by_id(conn, alice.id)?.unwrap();
            assert_eq!(
                alice.messaging_agent_id, None,
                "users stay, without an agent"
            );
            assert_eq!(MessagingAgent::count_users(conn, agent.id)?, 0);
            assert!(!ServerInstance::delete_by_id(conn, server.id)?);
            Ok(())
        })
        .unwrap();
    }
}
