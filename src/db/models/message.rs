//! Message state by RefID: each message the Messaging Agent forwards to a
//! smartphone, or submits for one, gets a RefID (seed: the Messaging Agent
//! "identifies the email message with a unique RefID"); this table follows
//! it through its status and records when it passed each hop (Messaging
//! Agent, Dispatcher, Router, relay, device, SMTP), so administrators can
//! trace a message and the Messaging Agent can resend what is still pending
//! after four hours.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use time::PrimitiveDateTime;

use crate::db::ids::{DeviceId, MessageHopId, MessageId, UserId};
use crate::db::models::user::text_enum;
use crate::db::schema::{message_hops, messages};
use crate::db::{now, Conn, DbError, DbResult};

/// A message's Reference Identifier, as on the wire (stored as 16
/// upper-case hex digits).
pub use bramble_proto::RefId;

/// Reads a RefID stored in the database or typed by a person.
pub fn parse_ref_id(text: &str) -> DbResult<RefId> {
    text.parse()
        .map_err(|e: bramble_proto::RefIdError| DbError::Invalid(e.to_string()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the mailbox to the smartphone.
    ToDevice,
    /// Sent from the smartphone, submitted over SMTP.
    FromDevice,
}

text_enum!(Direction { ToDevice => "to_device", FromDevice => "from_device" });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Waiting for the device (or the mail server) to confirm.
    Pending,
    /// Handed to the Dispatcher.
    Forwarded,
    /// The device confirmed receipt.
    Delivered,
    /// A filter kept it in the mailbox.
    Filtered,
    Failed,
    /// Not delivered in time; given up.
    Expired,
    /// A message from the device, submitted to the mail server.
    Sent,
}

text_enum!(MessageStatus {
    Pending => "pending",
    Forwarded => "forwarded",
    Delivered => "delivered",
    Filtered => "filtered",
    Failed => "failed",
    Expired => "expired",
    Sent => "sent",
});

/// The components a message passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hop {
    MessagingAgent,
    Dispatcher,
    Router,
    Relay,
    Device,
    Smtp,
}

text_enum!(Hop {
    MessagingAgent => "messaging_agent",
    Dispatcher => "dispatcher",
    Router => "router",
    Relay => "relay",
    Device => "device",
    Smtp => "smtp",
});

#[derive(Queryable, Selectable)]
#[diesel(table_name = messages, check_for_backend(diesel::sqlite::Sqlite))]
struct MessageRow {
    id: MessageId,
    ref_id: String,
    user_id: Option<UserId>,
    device_id: Option<DeviceId>,
    direction: String,
    status: String,
    subject: String,
    created_at: PrimitiveDateTime,
    updated_at: PrimitiveDateTime,
}

/// A message followed by its RefID.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub id: MessageId,
    pub ref_id: RefId,
    pub user_id: Option<UserId>,
    pub device_id: Option<DeviceId>,
    pub direction: Direction,
    pub status: MessageStatus,
    pub subject: String,
    pub created_at: PrimitiveDateTime,
    /// When the status last changed (a resend sets it again).
    pub updated_at: PrimitiveDateTime,
}

impl TryFrom<MessageRow> for Message {
    type Error = DbError;

    fn try_from(row: MessageRow) -> DbResult<Message> {
        let unknown = |what: &str, text: &str| {
            DbError::Damaged(format!(
                "message {} has an unknown {what} `{text}`",
                row.ref_id
            ))
        };
        let direction =
            Direction::parse(&row.direction).ok_or_else(|| unknown("direction", &row.direction))?;
        let status =
            MessageStatus::parse(&row.status).ok_or_else(|| unknown("status", &row.status))?;
        Ok(Message {
            id: row.id,
            ref_id: parse_ref_id(&row.ref_id)?,
            user_id: row.user_id,
            device_id: row.device_id,
            direction,
            status,
            subject: row.subject,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// A message not yet recorded.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub ref_id: RefId,
    pub user_id: Option<UserId>,
    pub device_id: Option<DeviceId>,
    pub direction: Direction,
    pub status: MessageStatus,
    pub subject: String,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = message_hops, check_for_backend(diesel::sqlite::Sqlite))]
struct HopRow {
    id: MessageHopId,
    message_id: MessageId,
    hop: String,
    at: PrimitiveDateTime,
    detail: String,
}

/// The time a message passed one component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageHop {
    pub id: MessageHopId,
    pub message_id: MessageId,
    pub hop: Hop,
    pub at: PrimitiveDateTime,
    pub detail: String,
}

impl TryFrom<HopRow> for MessageHop {
    type Error = DbError;

    fn try_from(row: HopRow) -> DbResult<MessageHop> {
        let hop = Hop::parse(&row.hop).ok_or_else(|| {
            DbError::Damaged(format!(
                "message hop {} has an unknown component `{}`",
                row.id, row.hop
            ))
        })?;
        Ok(MessageHop {
            id: row.id,
            message_id: row.message_id,
            hop,
            at: row.at,
            detail: row.detail,
        })
    }
}

fn load(rows: Vec<MessageRow>) -> DbResult<Vec<Message>> {
    rows.into_iter().map(Message::try_from).collect()
}

impl Message {
    pub fn create(conn: &mut Conn, new: &NewMessage) -> DbResult<Message> {
        let at = now();
        diesel::insert_into(messages::table)
            .values((
                messages::ref_id.eq(new.ref_id.to_string()),
                messages::user_id.eq(new.user_id),
                messages::device_id.eq(new.device_id),
                messages::direction.eq(new.direction.as_str()),
                messages::status.eq(new.status.as_str()),
                messages::subject.eq(&new.subject),
                messages::created_at.eq(at),
                messages::updated_at.eq(at),
            ))
            .returning(MessageRow::as_returning())
            .get_result(conn)
            .map_err(|e| match e {
                diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _,
                ) => DbError::Invalid(format!(
                    "a message with the RefID {} already exists",
                    new.ref_id
                )),
                other => other.into(),
            })?
            .try_into()
    }

    pub fn find_by_id(conn: &mut Conn, id: MessageId) -> DbResult<Option<Message>> {
        messages::table
            .find(id)
            .select(MessageRow::as_select())
            .first(conn)
            .optional()?
            .map(Message::try_from)
            .transpose()
    }

    pub fn find_by_ref_id(conn: &mut Conn, ref_id: &RefId) -> DbResult<Option<Message>> {
        messages::table
            .filter(messages::ref_id.eq(ref_id.to_string()))
            .select(MessageRow::as_select())
            .first(conn)
            .optional()?
            .map(Message::try_from)
            .transpose()
    }

    /// One page of a user's messages, newest first, with the total count.
    pub fn find_by_user(
        conn: &mut Conn,
        user: UserId,
        offset: i64,
        limit: i64,
    ) -> DbResult<(Vec<Message>, i64)> {
        let total = messages::table
            .filter(messages::user_id.eq(user))
            .count()
            .get_result(conn)?;
        let rows = messages::table
            .filter(messages::user_id.eq(user))
            .order((messages::created_at.desc(), messages::id.desc()))
            .offset(offset)
            .limit(limit)
            .select(MessageRow::as_select())
            .load(conn)?;
        Ok((load(rows)?, total))
    }

    /// Messages still pending whose status has not changed since before
    /// `cutoff`, oldest first: the ones to send again.
    pub fn find_pending_older_than(
        conn: &mut Conn,
        cutoff: PrimitiveDateTime,
    ) -> DbResult<Vec<Message>> {
        load(
            messages::table
                .filter(messages::status.eq(MessageStatus::Pending.as_str()))
                .filter(messages::updated_at.lt(cutoff))
                .order((messages::updated_at.asc(), messages::id.asc()))
                .select(MessageRow::as_select())
                .load(conn)?,
        )
    }

    /// Sets the status; `updated_at` becomes now, also when the status stays
    /// the same (a resend restarts the wait).
    pub fn set_status(conn: &mut Conn, id: MessageId, status: MessageStatus) -> DbResult<bool> {
        Ok(diesel::update(messages::table.find(id))
            .set((
                messages::status.eq(status.as_str()),
                messages::updated_at.eq(now()),
            ))
            .execute(conn)?
            > 0)
    }

    /// Records that the message passed `hop` now.
    pub fn record_hop(
        conn: &mut Conn,
        message: MessageId,
        hop: Hop,
        detail: &str,
    ) -> DbResult<MessageHop> {
        diesel::insert_into(message_hops::table)
            .values((
                message_hops::message_id.eq(message),
                message_hops::hop.eq(hop.as_str()),
                message_hops::at.eq(now()),
                message_hops::detail.eq(detail),
            ))
            .returning(HopRow::as_returning())
            .get_result(conn)?
            .try_into()
    }

    /// The hops of a message, in the order they happened.
    pub fn find_hops(conn: &mut Conn, message: MessageId) -> DbResult<Vec<MessageHop>> {
        message_hops::table
            .filter(message_hops::message_id.eq(message))
            .order((message_hops::at.asc(), message_hops::id.asc()))
            .select(HopRow::as_select())
            .load(conn)?
            .into_iter()
            .map(MessageHop::try_from)
            .collect()
    }

    /// Deletes the message and its hops.
    pub fn delete_by_id(conn: &mut Conn, id: MessageId) -> DbResult<bool> {
        Ok(diesel::delete(messages::table.find(id)).execute(conn)? > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;
    use crate::db::models::user::{NewUser, User};

    fn new_message(ref_id: &str, user: Option<UserId>) -> NewMessage {
        NewMessage {
            ref_id: parse_ref_id(ref_id).unwrap(),
            user_id: user,
            device_id: None,
            direction: Direction::ToDevice,
            status: MessageStatus::Pending,
            subject: format!("subject {ref_id}"),
        }
    }

    #[test]
    fn ref_ids_are_checked() {
        assert_eq!(
            parse_ref_id("abc123").unwrap().to_string(),
            "0000000000ABC123"
        );
        for bad in ["", "has space", "12345678901234567", "xyz"] {
            assert!(
                matches!(parse_ref_id(bad), Err(DbError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn messages_status_hops_and_paging() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let alice = NewUser {
                display_name: "Alice".into(),
                email: "alice@example.com".into(),
                mailbox_login: "alice".into(),
            }
            .save(conn)?;
            let first = Message::create(conn, &new_message("A1", Some(alice.id)))?;
            let second = Message::create(conn, &new_message("A2", Some(alice.id)))?;
            let third = Message::create(conn, &new_message("A3", Some(alice.id)))?;
            Message::create(conn, &new_message("A4", None))?;
            let dup = Message::create(conn, &new_message("A1", None)).unwrap_err();
            assert!(
                dup.to_string().contains("already exists"),
                "RefIDs are unique: {dup}"
            );

            let found = Message::find_by_ref_id(conn, &parse_ref_id("A2")?)?.unwrap();
            assert_eq!(found, second);

            let (page, total) = Message::find_by_user(conn, alice.id, 0, 2)?;
            assert_eq!(total, 3);
            assert_eq!(
                page.iter().map(|m| m.id).collect::<Vec<_>>(),
                [third.id, second.id],
                "newest first"
            );
            let (page, _) = Message::find_by_user(conn, alice.id, 2, 2)?;
            assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), [first.id]);

            Message::record_hop(conn, first.id, Hop::MessagingAgent, "new mail")?;
            Message::record_hop(conn, first.id, Hop::Dispatcher, "")?;
            Message::record_hop(conn, first.id, Hop::Relay, "to relay.example.net")?;
            let hops: Vec<_> = Message::find_hops(conn, first.id)?
                .into_iter()
                .map(|h| h.hop)
                .collect();
            assert_eq!(hops, [Hop::MessagingAgent, Hop::Dispatcher, Hop::Relay]);
            assert!(
                Message::record_hop(conn, MessageId(9_999), Hop::Device, "").is_err(),
                "unknown message"
            );

            // The resend scan: pending and unchanged since before the cutoff.
            let cutoff = now();
            let late = Message::create(conn, &new_message("A5", Some(alice.id)))?;
            assert!(Message::set_status(
                conn,
                second.id,
                MessageStatus::Delivered
            )?);
            let pending: Vec<_> = Message::find_pending_older_than(conn, cutoff)?
                .into_iter()
                .map(|m| m.ref_id.to_string())
                .collect();
            assert_eq!(
                pending,
                ["00000000000000A1", "00000000000000A3", "00000000000000A4"]
            );
            assert!(
                Message::set_status(conn, first.id, MessageStatus::Pending)?,
                "a resend restarts the wait"
            );
            let pending: Vec<_> = Message::find_pending_older_than(conn, cutoff)?
                .into_iter()
                .map(|m| m.id)
                .collect();
            assert!(!pending.contains(&first.id) && !pending.contains(&late.id));
            assert_eq!(
                Message::find_by_id(conn, second.id)?.unwrap().status,
                MessageStatus::Delivered
            );

            // The direction column's CHECK refuses unknown values.
            let bad = diesel::update(messages::table.find(first.id))
                .set(messages::direction.eq("sideways"))
                .execute(conn);
            assert!(bad.is_err());

            User::delete_by_id(conn, alice.id)?;
            assert_eq!(
                Message::find_by_id(conn, first.id)?.unwrap().user_id,
                None,
                "kept without a user"
            );
            assert!(Message::delete_by_id(conn, first.id)?);
            assert_eq!(
                message_hops::table.count().get_result::<i64>(conn)?,
                0,
                "hops go with the message"
            );
            Ok(())
        })
        .unwrap();
    }
}
