//! Smartphone users: name, e-mail, mailbox, account and activation status,
//! assigned Messaging Agent (seed: "BlackBerry smartphone user list,
//! including mailbox information").

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use time::PrimitiveDateTime;

use crate::db::ids::{MessagingAgentId, UserId};
use crate::db::models::directory::{dn_key, LOOKUP_BATCH};
use crate::db::schema::users;
use crate::db::{now, Conn, DbResult};

/// Whether the account may use Bramble at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Disabled,
    /// The directory entry disappeared or was disabled; an administrator decides.
    RemovedInDirectory,
}

/// Where the user is in wireless activation (seed: "Initializing" …
/// "Completed"). Each step is also recorded with its time in
/// [`activation_events`](crate::db::models::activation_password::ActivationEvent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationStatus {
    NotActivated,
    /// An activation password is set; the device has not asked yet.
    Initializing,
    /// The device's activation request arrived and is being answered.
    Activating,
    /// Both sides hold the device transport key.
    EncryptionVerified,
    /// The device confirmed the IT policy.
    PolicyApplied,
    /// The device received its service books.
    ServicesReceived,
    /// The first synchronization of organizer data runs.
    Synchronizing,
    Completed,
    Failed,
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            pub fn as_str(&self) -> &'static str {
                match self { $($ty::$variant => $text),* }
            }
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($ty::$variant),)* _ => None }
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use text_enum;

impl ActivationStatus {
    /// The step that follows this one in a successful activation
    /// (Initializing → Activating → Encryption verified → Policy applied →
    /// Services received → Synchronizing → Completed).
    pub fn next(self) -> Option<ActivationStatus> {
        use ActivationStatus::*;
        match self {
            Initializing => Some(Activating),
            Activating => Some(EncryptionVerified),
            EncryptionVerified => Some(PolicyApplied),
            PolicyApplied => Some(ServicesReceived),
            ServicesReceived => Some(Synchronizing),
            Synchronizing => Some(Completed),
            NotActivated | Completed | Failed => None,
        }
    }
}

text_enum!(AccountStatus { Active => "active", Disabled => "disabled", RemovedInDirectory => "removed_in_directory" });
text_enum!(ActivationStatus {
    NotActivated => "not_activated",
    Initializing => "initializing",
    Activating => "activating",
    EncryptionVerified => "encryption_verified",
    PolicyApplied => "policy_applied",
    ServicesReceived => "services_received",
    Synchronizing => "synchronizing",
    Completed => "completed",
    Failed => "failed",
});

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::sqlite::Sqlite))]
struct UserRow {
    id: UserId,
    display_name: String,
    email: String,
    mailbox_login: String,
    account_status: String,
    activation_status: String,
    messaging_agent_id: Option<MessagingAgentId>,
    created_at: PrimitiveDateTime,
    updated_at: PrimitiveDateTime,
    directory_id: Option<i64>,
    directory_guid: Option<String>,
}

/// A smartphone user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    pub id: UserId,
    pub display_name: String,
    pub email: String,
    pub mailbox_login: String,
    pub account_status: AccountStatus,
    pub activation_status: ActivationStatus,
    pub messaging_agent_id: Option<MessagingAgentId>,
    pub created_at: PrimitiveDateTime,
    pub updated_at: PrimitiveDateTime,
    /// The directory this user was copied from (`None`: added by hand).
    pub directory_id: Option<i64>,
    /// The stable id of the directory entry (entryUUID, objectGUID).
    pub directory_guid: Option<String>,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        User {
            id: row.id,
            display_name: row.display_name,
            email: row.email,
            mailbox_login: row.mailbox_login,
            // Unknown text (from a newer version) reads as the safe choice.
            account_status: AccountStatus::parse(&row.account_status)
                .unwrap_or(AccountStatus::Disabled),
            activation_status: ActivationStatus::parse(&row.activation_status)
                .unwrap_or(ActivationStatus::NotActivated),
            messaging_agent_id: row.messaging_agent_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
            directory_id: row.directory_id,
            directory_guid: row.directory_guid,
        }
    }
}

/// Orders of the users list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSort {
    Name,
    Email,
    Created,
}

/// A user copied from a directory, with the entry's DN last seen and that
/// DN's [`dn_key`] as stored.
#[derive(Debug, Clone)]
pub struct DirectoryLink {
    pub user: User,
    pub dn: Option<String>,
    pub dn_key: Option<String>,
}

impl From<(UserRow, Option<String>, Option<String>)> for DirectoryLink {
    fn from((row, dn, dn_key): (UserRow, Option<String>, Option<String>)) -> Self {
        DirectoryLink {
            user: User::from(row),
            dn,
            dn_key,
        }
    }
}

/// A user not yet saved.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub display_name: String,
    pub email: String,
    pub mailbox_login: String,
}

impl NewUser {
    pub fn save(&self, conn: &mut Conn) -> DbResult<User> {
        let at = now();
        let row = diesel::insert_into(users::table)
            .values((
                users::display_name.eq(&self.display_name),
                users::email.eq(&self.email),
                users::mailbox_login.eq(&self.mailbox_login),
                users::account_status.eq(AccountStatus::Active.as_str()),
                users::activation_status.eq(ActivationStatus::NotActivated.as_str()),
                users::created_at.eq(at),
                users::updated_at.eq(at),
            ))
            .returning(UserRow::as_returning())
            .get_result(conn)?;
        Ok(row.into())
    }
}

impl User {
    pub fn find_by_id(conn: &mut Conn, id: UserId) -> DbResult<Option<User>> {
        Ok(users::table
            .find(id)
            .select(UserRow::as_select())
            .first(conn)
            .optional()?
            .map(User::from))
    }

    /// E-mail addresses compare case-insensitively.
    pub fn find_by_email(conn: &mut Conn, email: &str) -> DbResult<Option<User>> {
        Ok(users::table
            .filter(users::email.eq(email))
            .select(UserRow::as_select())
            .first(conn)
            .optional()?
            .map(User::from))
    }

    /// One page of users whose name or e-mail contains `query`, by name.
    pub fn search(
        conn: &mut Conn,
        query: &str,
        offset: i64,
        limit: i64,
    ) -> DbResult<(Vec<User>, i64)> {
        Self::find_page(conn, query, UserSort::Name, false, offset, limit)
    }

    /// One page of users whose name or e-mail contains `query` (any case;
    /// `%` and `_` are literal), in the given order, with the number of
    /// matching users. An empty query matches everyone. Three characters or
    /// more are looked up in the trigram index `users_search`; shorter ones
    /// (which a trigram index cannot hold) with LIKE.
    pub fn find_page(
        conn: &mut Conn,
        query: &str,
        sort: UserSort,
        descending: bool,
        offset: i64,
        limit: i64,
    ) -> DbResult<(Vec<User>, i64)> {
        let pattern = format!(
            "%{}%",
            query
                .trim()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let term = query.trim();
        let searching = !term.is_empty();
        let indexed = term.chars().count() >= 3;
        // An FTS5 phrase: the term as one string, quotes doubled.
        let phrase = format!("\"{}\"", term.replace('"', "\"\""));
        let matching = || {
            let mut q = users::table.into_boxed();
            if indexed {
                q = q.filter(
                    diesel::dsl::sql::<diesel::sql_types::Bool>(
                        "users.id IN (SELECT rowid FROM users_search WHERE users_search MATCH ",
                    )
                    .bind::<diesel::sql_types::Text, _>(phrase.clone())
                    .sql(")"),
                );
            } else if searching {
                q = q.filter(
                    users::display_name
                        .like(pattern.clone())
                        .escape('\\')
                        .or(users::email.like(pattern.clone()).escape('\\')),
                );
            }
            q
        };
        let total = matching().count().get_result(conn)?;
        let q = matching();
        let q = match (sort, descending) {
            (UserSort::Name, false) => q.order((users::display_name.asc(), users::id.asc())),
            (UserSort::Name, true) => q.order((users::display_name.desc(), users::id.desc())),
            (UserSort::Email, false) => q.order(users::email.asc()),
            (UserSort::Email, true) => q.order(users::email.desc()),
            (UserSort::Created, false) => q.order((users::created_at.asc(), users::id.asc())),
            (UserSort::Created, true) => q.order((users::created_at.desc(), users::id.desc())),
        };
        let rows = q
            .offset(offset)
            .limit(limit)
            .select(UserRow::as_select())
            .load(conn)?;
        Ok((rows.into_iter().map(User::from).collect(), total))
    }

    /// The users a Messaging Agent serves.
    pub fn find_by_messaging_agent(
        conn: &mut Conn,
        agent: MessagingAgentId,
    ) -> DbResult<Vec<User>> {
        Ok(users::table
            .filter(users::messaging_agent_id.eq(agent))
            .order(users::id.asc())
            .select(UserRow::as_select())
            .load(conn)?
            .into_iter()
            .map(User::from)
            .collect())
    }

    /// Users not yet served by any Messaging Agent, oldest first.
    pub fn find_unassigned(conn: &mut Conn, limit: i64) -> DbResult<Vec<User>> {
        Ok(users::table
            .filter(users::messaging_agent_id.is_null())
            .order(users::id.asc())
            .limit(limit)
            .select(UserRow::as_select())
            .load(conn)?
            .into_iter()
            .map(User::from)
            .collect())
    }

    /// The users whose activation is at one of `statuses`.
    pub fn find_by_activation_status(
        conn: &mut Conn,
        statuses: &[ActivationStatus],
    ) -> DbResult<Vec<User>> {
        Ok(users::table
            .filter(users::activation_status.eq_any(statuses.iter().map(|s| s.as_str())))
            .select(UserRow::as_select())
            .load(conn)?
            .into_iter()
            .map(User::from)
            .collect())
    }

    /// At most `limit` users whose activation is at one of `statuses` and
    /// who have not changed since `before` (the Policy Service looks for
    /// activations stopped half-way this way).
    pub fn find_by_activation_status_before(
        conn: &mut Conn,
        statuses: &[ActivationStatus],
        before: PrimitiveDateTime,
        limit: i64,
    ) -> DbResult<Vec<User>> {
        Ok(users::table
            .filter(users::activation_status.eq_any(statuses.iter().map(|s| s.as_str())))
            .filter(users::updated_at.lt(before))
            .limit(limit)
            .select(UserRow::as_select())
            .load(conn)?
            .into_iter()
            .map(User::from)
            .collect())
    }

    /// Moves users to a Messaging Agent (or none).
    pub fn set_messaging_agent(
        conn: &mut Conn,
        ids: &[UserId],
        agent: Option<MessagingAgentId>,
    ) -> DbResult<usize> {
        Ok(diesel::update(users::table.filter(users::id.eq_any(ids)))
            .set((
                users::messaging_agent_id.eq(agent),
                users::updated_at.eq(now()),
            ))
            .execute(conn)?)
    }

    /// Writes every field back; `updated_at` becomes now.
    pub fn save(&mut self, conn: &mut Conn) -> DbResult<()> {
        self.updated_at = now();
        diesel::update(users::table.find(self.id))
            .set((
                users::display_name.eq(&self.display_name),
                users::email.eq(&self.email),
                users::mailbox_login.eq(&self.mailbox_login),
                users::account_status.eq(self.account_status.as_str()),
                users::activation_status.eq(self.activation_status.as_str()),
                users::messaging_agent_id.eq(self.messaging_agent_id),
                users::updated_at.eq(self.updated_at),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// The user copied from entry `guid` of directory `directory`.
    pub fn find_by_directory_guid(
        conn: &mut Conn,
        directory: i64,
        guid: &str,
    ) -> DbResult<Option<User>> {
        Ok(users::table
            .filter(users::directory_id.eq(directory))
            .filter(users::directory_guid.eq(guid))
            .select(UserRow::as_select())
            .first(conn)
            .optional()?
            .map(User::from))
    }

    /// Every user linked to `directory`, with the DN last seen.
    pub fn find_directory_links(conn: &mut Conn, directory: i64) -> DbResult<Vec<DirectoryLink>> {
        let rows: Vec<(UserRow, Option<String>, Option<String>)> = users::table
            .filter(users::directory_id.eq(directory))
            .order(users::id.asc())
            .select((
                UserRow::as_select(),
                users::directory_dn,
                users::directory_dn_key,
            ))
            .load(conn)?;
        Ok(rows.into_iter().map(DirectoryLink::from).collect())
    }

    /// The users linked to entries `guids` of `directory`, with the DN last
    /// seen: what an incremental sync needs, without loading every link.
    pub fn find_by_directory_guids(
        conn: &mut Conn,
        directory: i64,
        guids: &[&str],
    ) -> DbResult<Vec<DirectoryLink>> {
        let mut found = Vec::with_capacity(guids.len());
        for batch in guids.chunks(LOOKUP_BATCH) {
            let rows: Vec<(UserRow, Option<String>, Option<String>)> = users::table
                .filter(users::directory_id.eq(directory))
                .filter(users::directory_guid.eq_any(batch))
                .select((
                    UserRow::as_select(),
                    users::directory_dn,
                    users::directory_dn_key,
                ))
                .load(conn)?;
            found.extend(rows.into_iter().map(DirectoryLink::from));
        }
        Ok(found)
    }

    /// The users of `directory` whose entry's DN has one of `keys` (see
    /// [`dn_key`]), as `(key, id)`: how group members named by DN are found.
    pub fn find_ids_by_directory_dn_keys(
        conn: &mut Conn,
        directory: i64,
        keys: &[&str],
    ) -> DbResult<Vec<(String, UserId)>> {
        let mut found = Vec::with_capacity(keys.len());
        for batch in keys.chunks(LOOKUP_BATCH) {
            let rows: Vec<(Option<String>, UserId)> = users::table
                .filter(users::directory_id.eq(directory))
                .filter(users::directory_dn_key.eq_any(batch))
                .select((users::directory_dn_key, users::id))
                .load(conn)?;
            found.extend(rows.into_iter().filter_map(|(k, id)| k.map(|k| (k, id))));
        }
        Ok(found)
    }

    /// Links the user to a directory entry (or unlinks with `None`).
    pub fn set_directory_link(
        conn: &mut Conn,
        id: UserId,
        link: Option<(i64, &str, &str)>,
    ) -> DbResult<()> {
        let (directory, guid, dn) = match link {
            Some((d, g, n)) => (Some(d), Some(g), Some(n)),
            None => (None, None, None),
        };
        diesel::update(users::table.find(id))
            .set((
                users::directory_id.eq(directory),
                users::directory_guid.eq(guid),
                users::directory_dn.eq(dn),
                users::directory_dn_key.eq(dn.map(dn_key)),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// Users holding a client access licence: those whose device's key
    /// was established (activation past "Encryption verified").
    pub fn count_activated(conn: &mut Conn) -> DbResult<i64> {
        Ok(users::table
            .filter(users::activation_status.eq_any([
                ActivationStatus::EncryptionVerified.as_str(),
                ActivationStatus::PolicyApplied.as_str(),
                ActivationStatus::ServicesReceived.as_str(),
                ActivationStatus::Synchronizing.as_str(),
                ActivationStatus::Completed.as_str(),
            ]))
            .count()
            .get_result(conn)?)
    }

    /// Deletes the user; their group memberships, filters and statistics go
    /// with them, their devices are kept without an owner.
    pub fn delete_by_id(conn: &mut Conn, id: UserId) -> DbResult<bool> {
        Ok(diesel::delete(users::table.find(id)).execute(conn)? > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;

    #[test]
    fn found_by_activation_status_and_age() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let mut alice = NewUser {
                display_name: "Alice".into(),
                email: "alice@example.com".into(),
                mailbox_login: "alice".into(),
            }
            .save(conn)?;
            NewUser {
                display_name: "Bob".into(),
                email: "bob@example.com".into(),
                mailbox_login: "bob".into(),
            }
            .save(conn)?;
            alice.activation_status = ActivationStatus::PolicyApplied;
            alice.save(conn)?;
            let at = |conn: &mut Conn, statuses: &[ActivationStatus]| {
                User::find_by_activation_status(conn, statuses)
                    .unwrap()
                    .into_iter()
                    .map(|u| u.display_name)
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                at(
                    conn,
                    &[
                        ActivationStatus::EncryptionVerified,
                        ActivationStatus::PolicyApplied
                    ]
                ),
                ["Alice"]
            );
            assert_eq!(at(conn, &[ActivationStatus::NotActivated]), ["Bob"]);
            assert!(at(conn, &[]).is_empty());
            let later = alice.updated_at + time::Duration::seconds(1);
            let stalled = User::find_by_activation_status_before(
                conn,
                &[ActivationStatus::PolicyApplied],
                later,
                10,
            )?;
            assert_eq!(stalled.len(), 1);
            assert!(User::find_by_activation_status_before(
                conn,
                &[ActivationStatus::PolicyApplied],
                alice.updated_at,
                10,
            )?
            .is_empty());
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn create_find_search_update_delete() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let alice = NewUser {
                display_name: "Alice Example".into(),
                email: "alice@example.com".into(),
                mailbox_login: "alice".into(),
            }
            .save(conn)?;
            NewUser {
                display_name: "Bob Example".into(),
                email: "bob@example.com".into(),
                mailbox_login: "bob".into(),
            }
            .save(conn)?;
            assert_eq!(alice.activation_status, ActivationStatus::NotActivated);

            let found = User::find_by_email(conn, "ALICE@example.com")?.unwrap();
            assert_eq!(found.id, alice.id);

            let (page, total) = User::search(conn, "example", 0, 1)?;
            assert_eq!(total, 2);
            assert_eq!(page.len(), 1);
            assert_eq!(page[0].display_name, "Alice Example");
            let (page, _) = User::search(conn, "example", 1, 1)?;
            assert_eq!(page[0].display_name, "Bob Example");
            assert_eq!(User::search(conn, "%", 0, 10)?.1, 0, "% is a literal");

            let mut edited = found.clone();
            edited.activation_status = ActivationStatus::Initializing;
            edited.display_name = "Alice E.".into();
            edited.save(conn)?;
            let reread = User::find_by_id(conn, alice.id)?.unwrap();
            assert_eq!(reread.activation_status, ActivationStatus::Initializing);
            assert_eq!(reread.display_name, "Alice E.");

            let dup = NewUser {
                display_name: "Again".into(),
                email: "alice@EXAMPLE.com".into(),
                mailbox_login: "a".into(),
            }
            .save(conn);
            assert!(dup.is_err(), "e-mail is unique, case-insensitively");

            assert!(User::delete_by_id(conn, alice.id)?);
            assert!(User::find_by_id(conn, alice.id)?.is_none());
            assert!(!User::delete_by_id(conn, alice.id)?);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn the_search_index_follows_every_change() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let found = |conn: &mut Conn, term: &str| -> DbResult<Vec<String>> {
                Ok(User::find_page(conn, term, UserSort::Name, false, 0, 10)?
                    .0
                    .into_iter()
                    .map(|u| u.display_name)
                    .collect())
            };
            let mut erin = NewUser {
                display_name: "Erin Ödegaard".into(),
                email: "erin.o@example.com".into(),
                mailbox_login: "erin".into(),
            }
            .save(conn)?;
            NewUser {
                display_name: "Frank \"Quote\" 50%_off".into(),
                email: "frank@example.org".into(),
                mailbox_login: "frank".into(),
            }
            .save(conn)?;
            assert_eq!(
                found(conn, "RIN ÖDE")?,
                ["Erin Ödegaard"],
                "indexed, any case"
            );
            assert_eq!(found(conn, "in.o@exa")?, ["Erin Ödegaard"], "e-mail too");
            assert_eq!(found(conn, "\"Quote\"")?, ["Frank \"Quote\" 50%_off"]);
            assert_eq!(
                found(conn, "50%_")?,
                ["Frank \"Quote\" 50%_off"],
                "% and _ literal"
            );
            assert_eq!(found(conn, "0%x")?, Vec::<String>::new());
            assert_eq!(found(conn, "Er")?, ["Erin Ödegaard"], "short terms by LIKE");

            erin.display_name = "Erin Berg".into();
            erin.save(conn)?;
            assert!(found(conn, "degaard")?.is_empty(), "the old name is gone");
            assert_eq!(found(conn, "n Ber")?, ["Erin Berg"]);
            User::delete_by_id(conn, erin.id)?;
            assert!(found(conn, "Erin")?.is_empty());
            assert_eq!(
                User::find_page(conn, "", UserSort::Name, false, 0, 10)?.1,
                1
            );
            Ok(())
        })
        .unwrap();
    }
}
