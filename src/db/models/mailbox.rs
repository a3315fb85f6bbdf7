//! The Messaging Agent's records about mailboxes:
//! - [`MailboxState`]: per user, how far the agent has read the mailbox
//!   (IMAP UIDVALIDITY and the last UID handled), whether it can reach it
//!   (with the last error, in words, for the console), and the user's
//!   setting for keeping a copy of mail sent from the device.
//! - [`MailItem`]: where a forwarded message lives in the mailbox, for
//!   "More", attachments, replies and read/deleted reconciliation.
//! - [`OutboxEntry`]: mail written on a device, kept until the mail server
//!   has accepted it (so an SMTP server that is down loses nothing).

use bramble_proto::{Pin, RefId};
use diesel::prelude::*;
use serde::Serialize;
use time::PrimitiveDateTime;

use crate::db::ids::{DeviceId, MessageId, MessagingAgentId, UserId};
use crate::db::models::device::parse_pin;
use crate::db::models::message::parse_ref_id;
use crate::db::models::user::text_enum;
use crate::db::models::user::AccountStatus;
use crate::db::schema::{
    activation_passwords, device_keys, devices, mail_items, mail_outbox, mailbox_states, messages,
    users,
};
use crate::db::{now, Conn, DbResult};

/// Whether the Messaging Agent reaches a user's mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchState {
    Starting,
    Watching,
    Error,
}

text_enum!(WatchState { Starting => "starting", Watching => "watching", Error => "error" });

#[derive(Queryable, Selectable)]
#[diesel(table_name = mailbox_states, check_for_backend(diesel::sqlite::Sqlite))]
struct StateRow {
    user_id: UserId,
    uid_validity: Option<i64>,
    last_uid: i64,
    state: String,
    error: Option<String>,
    error_at: Option<PrimitiveDateTime>,
    save_sent: bool,
    updated_at: PrimitiveDateTime,
}

/// The agent's state in one user's mailbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MailboxState {
    pub user_id: UserId,
    /// None until the mailbox was first opened.
    pub uid_validity: Option<u32>,
    /// Every message up to this UID has been handled (forwarded or filtered).
    pub last_uid: u32,
    pub state: WatchState,
    /// The last error, in words an administrator understands.
    pub error: Option<String>,
    pub error_at: Option<PrimitiveDateTime>,
    /// Keep a copy of mail sent from the device in the Sent folder.
    pub save_sent: bool,
    pub updated_at: PrimitiveDateTime,
}

impl From<StateRow> for MailboxState {
    fn from(row: StateRow) -> Self {
        MailboxState {
            user_id: row.user_id,
            uid_validity: row.uid_validity.map(|v| v as u32),
            last_uid: row.last_uid as u32,
            state: WatchState::parse(&row.state).unwrap_or(WatchState::Error),
            error: row.error,
            error_at: row.error_at,
            save_sent: row.save_sent,
            updated_at: row.updated_at,
        }
    }
}

impl MailboxState {
    /// The user's row, or the defaults (nothing read yet, save sent on).
    pub fn find(conn: &mut Conn, user: UserId) -> DbResult<MailboxState> {
        Ok(mailbox_states::table
            .find(user)
            .select(StateRow::as_select())
            .first(conn)
            .optional()?
            .map_or_else(
                || MailboxState {
                    user_id: user,
                    uid_validity: None,
                    last_uid: 0,
                    state: WatchState::Starting,
                    error: None,
                    error_at: None,
                    save_sent: true,
                    updated_at: now(),
                },
                MailboxState::from,
            ))
    }

    /// Every user's row with the given state.
    pub fn find_in_state(conn: &mut Conn, state: WatchState) -> DbResult<Vec<MailboxState>> {
        Ok(mailbox_states::table
            .filter(mailbox_states::state.eq(state.as_str()))
            .order(mailbox_states::user_id.asc())
            .select(StateRow::as_select())
            .load(conn)?
            .into_iter()
            .map(MailboxState::from)
            .collect())
    }

    fn ensure(conn: &mut Conn, user: UserId) -> DbResult<()> {
        diesel::insert_into(mailbox_states::table)
            .values((
                mailbox_states::user_id.eq(user),
                mailbox_states::updated_at.eq(now()),
            ))
            .on_conflict_do_nothing()
            .execute(conn)?;
        Ok(())
    }

    /// Everything up to `last_uid` in the mailbox with `uid_validity` is handled.
    pub fn set_position(
        conn: &mut Conn,
        user: UserId,
        uid_validity: u32,
        last_uid: u32,
    ) -> DbResult<()> {
        Self::ensure(conn, user)?;
        diesel::update(mailbox_states::table.find(user))
            .set((
                mailbox_states::uid_validity.eq(Some(uid_validity as i64)),
                mailbox_states::last_uid.eq(last_uid as i64),
                mailbox_states::updated_at.eq(now()),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// The mailbox is reachable and watched; any earlier error is cleared.
    pub fn set_watching(conn: &mut Conn, user: UserId) -> DbResult<()> {
        Self::ensure(conn, user)?;
        diesel::update(mailbox_states::table.find(user))
            .set((
                mailbox_states::state.eq(WatchState::Watching.as_str()),
                mailbox_states::error.eq(None::<String>),
                mailbox_states::updated_at.eq(now()),
            ))
            .execute(conn)?;
        Ok(())
    }

    /// The mailbox cannot be reached; `error` says why.
    pub fn set_error(conn: &mut Conn, user: UserId, error: &str) -> DbResult<()> {
        Self::ensure(conn, user)?;
        let at = now();
        diesel::update(mailbox_states::table.find(user))
            .set((
                mailbox_states::state.eq(WatchState::Error.as_str()),
                mailbox_states::error.eq(Some(error)),
                mailbox_states::error_at.eq(Some(at)),
                mailbox_states::updated_at.eq(at),
            ))
            .execute(conn)?;
        Ok(())
    }

    pub fn set_save_sent(conn: &mut Conn, user: UserId, save_sent: bool) -> DbResult<()> {
        Self::ensure(conn, user)?;
        diesel::update(mailbox_states::table.find(user))
            .set((
                mailbox_states::save_sent.eq(save_sent),
                mailbox_states::updated_at.eq(now()),
            ))
            .execute(conn)?;
        Ok(())
    }
}

/// Where a forwarded message lives in its mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = mail_items, check_for_backend(diesel::sqlite::Sqlite))]
pub struct MailItem {
    pub message_id: MessageId,
    pub user_id: UserId,
    pub uid_validity: i64,
    pub uid: i64,
    /// The `Message-ID` header, for `In-Reply-To` in replies.
    pub message_id_header: String,
    pub seen: bool,
    pub deleted: bool,
}

impl MailItem {
    pub fn create(conn: &mut Conn, item: &MailItem) -> DbResult<()> {
        diesel::insert_into(mail_items::table)
            .values(item)
            .execute(conn)?;
        Ok(())
    }

    /// The item of the message with `ref_id`, and the message's id.
    pub fn find_by_ref_id(conn: &mut Conn, ref_id: RefId) -> DbResult<Option<MailItem>> {
        Ok(mail_items::table
            .inner_join(messages::table)
            .filter(messages::ref_id.eq(ref_id.to_string()))
            .select(MailItem::as_select())
            .first(conn)
            .optional()?)
    }

    /// Whether the message at `uid` was already handled.
    pub fn exists(conn: &mut Conn, user: UserId, uid_validity: u32, uid: u32) -> DbResult<bool> {
        Ok(mail_items::table
            .filter(mail_items::user_id.eq(user))
            .filter(mail_items::uid_validity.eq(uid_validity as i64))
            .filter(mail_items::uid.eq(uid as i64))
            .count()
            .get_result::<i64>(conn)?
            > 0)
    }

    /// The user's items not deleted, newest first, at most `limit`, with
    /// their RefIDs: what reconciliation compares with the mailbox.
    pub fn find_tracked(
        conn: &mut Conn,
        user: UserId,
        uid_validity: u32,
        limit: i64,
    ) -> DbResult<Vec<(MailItem, RefId)>> {
        let rows: Vec<(MailItem, String)> = mail_items::table
            .inner_join(messages::table)
            .filter(mail_items::user_id.eq(user))
            .filter(mail_items::uid_validity.eq(uid_validity as i64))
            .filter(mail_items::deleted.eq(false))
            .order(mail_items::uid.desc())
            .limit(limit)
            .select((MailItem::as_select(), messages::ref_id))
            .load(conn)?;
        rows.into_iter()
            .map(|(item, ref_id)| Ok((item, parse_ref_id(&ref_id)?)))
            .collect()
    }

    pub fn set_seen(conn: &mut Conn, message: MessageId, seen: bool) -> DbResult<()> {
        diesel::update(mail_items::table.find(message))
            .set(mail_items::seen.eq(seen))
            .execute(conn)?;
        Ok(())
    }

    pub fn set_deleted(conn: &mut Conn, message: MessageId) -> DbResult<()> {
        diesel::update(mail_items::table.find(message))
            .set(mail_items::deleted.eq(true))
            .execute(conn)?;
        Ok(())
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = mail_outbox, check_for_backend(diesel::sqlite::Sqlite))]
struct OutboxRow {
    id: i64,
    ref_id: String,
    user_id: UserId,
    pin: String,
    compose: String,
    attempts: i32,
    next_attempt_at: PrimitiveDateTime,
    last_error: Option<String>,
    created_at: PrimitiveDateTime,
}

/// Mail written on a device, not yet accepted by the mail server.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub id: i64,
    pub ref_id: RefId,
    pub user_id: UserId,
    pub pin: Pin,
    /// The device's `Compose`, as JSON.
    pub compose: String,
    pub attempts: i32,
    pub next_attempt_at: PrimitiveDateTime,
    pub last_error: Option<String>,
    pub created_at: PrimitiveDateTime,
}

impl TryFrom<OutboxRow> for OutboxEntry {
    type Error = crate::db::DbError;
    fn try_from(row: OutboxRow) -> DbResult<OutboxEntry> {
        Ok(OutboxEntry {
            id: row.id,
            ref_id: parse_ref_id(&row.ref_id)?,
            user_id: row.user_id,
            pin: parse_pin(&row.pin)?,
            compose: row.compose,
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at,
            last_error: row.last_error,
            created_at: row.created_at,
        })
    }
}

impl OutboxEntry {
    /// Stores a message from a device; false if one with this RefID is
    /// already stored (the device sent it twice).
    pub fn insert(
        conn: &mut Conn,
        ref_id: RefId,
        user: UserId,
        pin: Pin,
        compose: &str,
    ) -> DbResult<bool> {
        let at = now();
        Ok(diesel::insert_into(mail_outbox::table)
            .values((
                mail_outbox::ref_id.eq(ref_id.to_string()),
                mail_outbox::user_id.eq(user),
                mail_outbox::pin.eq(pin.to_string()),
                mail_outbox::compose.eq(compose),
                mail_outbox::next_attempt_at.eq(at),
                mail_outbox::created_at.eq(at),
            ))
            .on_conflict_do_nothing()
            .execute(conn)?
            > 0)
    }

    /// Entries due at `at`, oldest first.
    pub fn find_due(
        conn: &mut Conn,
        at: PrimitiveDateTime,
        limit: i64,
    ) -> DbResult<Vec<OutboxEntry>> {
        mail_outbox::table
            .filter(mail_outbox::next_attempt_at.le(at))
            .order((mail_outbox::next_attempt_at.asc(), mail_outbox::id.asc()))
            .limit(limit)
            .select(OutboxRow::as_select())
            .load(conn)?
            .into_iter()
            .map(OutboxEntry::try_from)
            .collect()
    }

    pub fn count(conn: &mut Conn) -> DbResult<i64> {
        Ok(mail_outbox::table.count().get_result(conn)?)
    }

    /// Tries again at `next`; records why it failed.
    pub fn defer(conn: &mut Conn, id: i64, next: PrimitiveDateTime, error: &str) -> DbResult<()> {
        diesel::update(mail_outbox::table.find(id))
            .set((
                mail_outbox::attempts.eq(mail_outbox::attempts + 1),
                mail_outbox::next_attempt_at.eq(next),
                mail_outbox::last_error.eq(Some(error)),
            ))
            .execute(conn)?;
        Ok(())
    }

    pub fn delete(conn: &mut Conn, id: i64) -> DbResult<bool> {
        Ok(diesel::delete(mail_outbox::table.find(id)).execute(conn)? > 0)
    }
}

/// A mailbox the Messaging Agent watches: an active user assigned to one
/// of its agents, with a device that has a transport key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub user_id: UserId,
    pub display_name: String,
    pub email: String,
    pub mailbox_login: String,
    /// The user's activated device; `None` while the user has an activation
    /// password and no activated device yet: the mailbox is then watched
    /// only for the device's activation request.
    pub device: Option<(DeviceId, Pin)>,
}

impl Watched {
    /// The mailboxes of `agents`' users: those with an activated device
    /// (one device per user: the first), and those waiting for their
    /// device's activation request.
    pub fn find_by_agents(conn: &mut Conn, agents: &[MessagingAgentId]) -> DbResult<Vec<Watched>> {
        let rows: Vec<(UserId, String, String, String, DeviceId, String)> = devices::table
            .inner_join(users::table)
            .filter(users::messaging_agent_id.eq_any(agents.iter().map(|a| Some(*a))))
            .filter(users::account_status.eq(AccountStatus::Active.as_str()))
            .filter(diesel::dsl::exists(
                device_keys::table.filter(device_keys::device_id.eq(devices::id)),
            ))
            .order((users::id.asc(), devices::id.asc()))
            .select((
                users::id,
                users::display_name,
                users::email,
                users::mailbox_login,
                devices::id,
                devices::pin,
            ))
            .load(conn)?;
        let mut out: Vec<Watched> = Vec::with_capacity(rows.len());
        for (user_id, display_name, email, mailbox_login, device_id, pin) in rows {
            if out.last().is_some_and(|w| w.user_id == user_id) {
                continue;
            }
            out.push(Watched {
                user_id,
                display_name,
                email,
                mailbox_login,
                device: Some((device_id, parse_pin(&pin)?)),
            });
        }
        let waiting: Vec<(UserId, String, String, String)> = users::table
            .inner_join(activation_passwords::table)
            .filter(users::messaging_agent_id.eq_any(agents.iter().map(|a| Some(*a))))
            .filter(users::account_status.eq(AccountStatus::Active.as_str()))
            .order(users::id.asc())
            .select((
                users::id,
                users::display_name,
                users::email,
                users::mailbox_login,
            ))
            .load(conn)?;
        let keyed: std::collections::HashSet<UserId> = out.iter().map(|w| w.user_id).collect();
        out.extend(
            waiting
                .into_iter()
                .filter(|(id, ..)| !keyed.contains(id))
                .map(|(user_id, display_name, email, mailbox_login)| Watched {
                    user_id,
                    display_name,
                    email,
                    mailbox_login,
                    device: None,
                }),
        );
        out.sort_by_key(|w| w.user_id);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::message::{Direction, Message, MessageStatus, NewMessage};
    use crate::db::models::test_db;
    use crate::db::models::user::NewUser;

    #[test]
    fn state_items_and_outbox_round_trip() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let user = NewUser {
                display_name: "U".into(),
                email: "u@example.com".into(),
                mailbox_login: "u".into(),
            }
            .save(conn)?;
            let s = MailboxState::find(conn, user.id)?;
            assert_eq!((s.uid_validity, s.last_uid, s.save_sent), (None, 0, true));
            MailboxState::set_position(conn, user.id, 7, 42)?;
            MailboxState::set_error(conn, user.id, "refused")?;
            let s = MailboxState::find(conn, user.id)?;
            assert_eq!((s.uid_validity, s.last_uid), (Some(7), 42));
            assert_eq!(s.state, WatchState::Error);
            assert_eq!(
                MailboxState::find_in_state(conn, WatchState::Error)?.len(),
                1
            );
            MailboxState::set_watching(conn, user.id)?;
            assert_eq!(MailboxState::find(conn, user.id)?.error, None);

            let ref_id = RefId(99);
            let m = Message::create(
                conn,
                &NewMessage {
                    ref_id,
                    user_id: Some(user.id),
                    device_id: None,
                    direction: Direction::ToDevice,
                    status: MessageStatus::Forwarded,
                    subject: "s".into(),
                },
            )?;
            let item = MailItem {
                message_id: m.id,
                user_id: user.id,
                uid_validity: 7,
                uid: 42,
                message_id_header: "<a@b>".into(),
                seen: false,
                deleted: false,
            };
            MailItem::create(conn, &item)?;
            assert!(MailItem::exists(conn, user.id, 7, 42)?);
            assert!(!MailItem::exists(conn, user.id, 8, 42)?);
            assert_eq!(MailItem::find_by_ref_id(conn, ref_id)?, Some(item.clone()));
            MailItem::set_deleted(conn, m.id)?;
            assert!(MailItem::find_tracked(conn, user.id, 7, 10)?.is_empty());

            assert!(OutboxEntry::insert(conn, RefId(5), user.id, Pin(1), "{}")?);
            assert!(!OutboxEntry::insert(conn, RefId(5), user.id, Pin(1), "{}")?);
            let due = OutboxEntry::find_due(conn, now(), 10)?;
            assert_eq!(due.len(), 1);
            OutboxEntry::defer(conn, due[0].id, now() + time::Duration::hours(1), "down")?;
            assert!(OutboxEntry::find_due(conn, now(), 10)?.is_empty());
            assert!(OutboxEntry::delete(conn, due[0].id)?);
            Ok(())
        })
        .unwrap();
    }
}
