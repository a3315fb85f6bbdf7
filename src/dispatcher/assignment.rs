//! Assigning users to Messaging Agents (seed: the Dispatcher "assigns
//! BlackBerry smartphone users to the BlackBerry Messaging Agent").
//!
//! Each unassigned user goes to the least-loaded agent with room (an agent
//! serves at most `max_users`, 500 by default), so agents stay balanced.
//! When an agent stops, its users are spread over the others the same way;
//! users who fit nowhere stay unassigned (and are logged) until room
//! appears.

use std::collections::HashMap;

use tracing::warn;

use crate::db::ids::{MessagingAgentId, UserId};
use crate::db::models::server::{MessagingAgent, ServerInstance};
use crate::db::models::user::User;
use crate::db::{Conn, DbResult};

/// Makes sure the server instance exists with `count` Messaging Agents
/// (named `MA1`, `MA2`, …); returns its agents.
pub fn ensure_agents(
    conn: &mut Conn,
    server_name: &str,
    count: usize,
) -> DbResult<Vec<MessagingAgent>> {
    let server = match ServerInstance::find_by_name(conn, server_name)? {
        Some(server) => server,
        None => ServerInstance::create(conn, server_name)?,
    };
    let mut agents = MessagingAgent::find_by_server(conn, server.id)?;
    for n in 1..=count.max(1) {
        let name = format!("MA{n}");
        if !agents.iter().any(|a| a.name == name) {
            agents.push(MessagingAgent::create(conn, server.id, &name)?);
        }
    }
    Ok(agents)
}

/// Assigns every unassigned user to an agent among `agents`; returns how
/// many were assigned.
pub fn assign_unassigned(conn: &mut Conn, agents: &[MessagingAgent]) -> DbResult<usize> {
    let mut load: HashMap<MessagingAgentId, i64> = HashMap::new();
    for agent in agents {
        load.insert(agent.id, MessagingAgent::count_users(conn, agent.id)?);
    }
    let mut assigned = 0;
    loop {
        let batch = User::find_unassigned(conn, 1000)?;
        if batch.is_empty() {
            break;
        }
        let mut moves: HashMap<MessagingAgentId, Vec<UserId>> = HashMap::new();
        let mut placed_any = false;
        for user in &batch {
            let Some(agent) = agents
                .iter()
                .filter(|a| load.get(&a.id).copied().unwrap_or(0) < i64::from(a.max_users))
                .min_by_key(|a| (load.get(&a.id).copied().unwrap_or(0), a.id))
            else {
                break;
            };
            *load.entry(agent.id).or_default() += 1;
            moves.entry(agent.id).or_default().push(user.id);
            placed_any = true;
        }
        for (agent, users) in moves {
            assigned += User::set_messaging_agent(conn, &users, Some(agent))?;
        }
        if !placed_any {
            warn!(target: "bramble::dispatcher", waiting = batch.len(), "every Messaging Agent is full; users wait unassigned until one has room");
            break;
        }
    }
    Ok(assigned)
}

/// An agent stopped: its users go to the remaining agents.
pub fn reassign_from(
    conn: &mut Conn,
    stopped: MessagingAgentId,
    remaining: &[MessagingAgent],
) -> DbResult<usize> {
    let orphans: Vec<UserId> = User::find_by_messaging_agent(conn, stopped)?
        .into_iter()
        .map(|u| u.id)
        .collect();
    User::set_messaging_agent(conn, &orphans, None)?;
    let others: Vec<MessagingAgent> = remaining
        .iter()
        .filter(|a| a.id != stopped)
        .cloned()
        .collect();
    assign_unassigned(conn, &others)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;
    use crate::db::models::user::NewUser;

    fn users(conn: &mut Conn, from: usize, n: usize) {
        for i in from..from + n {
            NewUser {
                display_name: format!("User {i}"),
                email: format!("user{i}@example.com"),
                mailbox_login: format!("user{i}"),
            }
            .save(conn)
            .unwrap();
        }
    }

    #[test]
    fn balanced_capped_and_reassigned() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let mut agents = ensure_agents(conn, "bes01", 3)?;
            assert_eq!(agents.len(), 3);
            assert_eq!(ensure_agents(conn, "bes01", 3)?.len(), 3, "idempotent");
            for a in agents.iter_mut() {
                a.max_users = 4;
                a.save(conn)?;
            }
            users(conn, 0, 10);
            assert_eq!(assign_unassigned(conn, &agents)?, 10);
            let loads: Vec<i64> = agents
                .iter()
                .map(|a| MessagingAgent::count_users(conn, a.id).unwrap())
                .collect();
            assert_eq!(loads.iter().sum::<i64>(), 10);
            assert!(
                loads.iter().all(|l| (3..=4).contains(l)),
                "balanced: {loads:?}"
            );

            users(conn, 10, 5);
            // Room for 2 more (3 × 4 = 12); 3 wait.
            assert_eq!(assign_unassigned(conn, &agents)?, 2);
            assert_eq!(User::find_unassigned(conn, 100)?.len(), 3);

            // Make room, then stop agent 0: its users move, capacity permitting.
            for a in agents.iter_mut() {
                a.max_users = 500;
                a.save(conn)?;
            }
            assign_unassigned(conn, &agents)?;
            let stopped = agents[0].id;
            let moved = reassign_from(conn, stopped, &agents)?;
            assert!(moved >= 5);
            assert_eq!(MessagingAgent::count_users(conn, stopped)?, 0);
            assert!(User::find_unassigned(conn, 100)?.is_empty());
            Ok(())
        })
        .unwrap();
    }
}
