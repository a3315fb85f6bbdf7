//! Packets on their way to devices (the Dispatcher's outbound queue).
//!
//! Each row is one message, already compressed and encrypted for its
//! device, kept until the device confirms delivery. The state follows what
//! the Router and the relay report, and decides what is sent again:
//! - after the SRP link comes back: `queued` and `stored_at_relay` (the
//!   relay's store may have been lost with the relay);
//! - after a device's LAN connection drops: its `sent_lan` rows;
//! - after the resend timeout (seed: four hours): everything unconfirmed.

use bramble_proto::{ContentType, Pin, RefId};
use diesel::prelude::*;
use time::PrimitiveDateTime;

use crate::db::ids::OutboundId;
use crate::db::models::user::text_enum;
use crate::db::schema::outbound_queue;
use crate::db::{Conn, DbError, DbResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundState {
    /// Not yet handed to the relay or a LAN connection.
    Queued,
    /// Written to the SRP link; no report from the relay yet.
    AtRelay,
    /// The relay holds it for an offline device.
    StoredAtRelay,
    /// The relay handed it to the device's connection.
    DeliveredToDevice,
    /// Written to the device's direct (LAN) connection.
    SentLan,
}

text_enum!(OutboundState {
    Queued => "queued",
    AtRelay => "at_relay",
    StoredAtRelay => "stored_at_relay",
    DeliveredToDevice => "delivered_to_device",
    SentLan => "sent_lan",
});

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbound_queue, check_for_backend(diesel::sqlite::Sqlite))]
struct Row {
    id: OutboundId,
    ref_id: String,
    pin: String,
    content_type: i32,
    priority: bool,
    envelope: Vec<u8>,
    state: String,
    attempts: i32,
    created_at: PrimitiveDateTime,
    last_sent_at: Option<PrimitiveDateTime>,
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundPacket {
    pub id: OutboundId,
    pub ref_id: RefId,
    pub pin: Pin,
    pub content_type: ContentType,
    pub priority: bool,
    pub envelope: Vec<u8>,
    pub state: OutboundState,
    pub attempts: i32,
    pub created_at: PrimitiveDateTime,
    pub last_sent_at: Option<PrimitiveDateTime>,
}

impl TryFrom<Row> for OutboundPacket {
    type Error = DbError;
    fn try_from(row: Row) -> DbResult<Self> {
        let bad = |what: &str| {
            DbError::Damaged(format!("outbound queue row {} has a bad {what}", row.id))
        };
        Ok(OutboundPacket {
            id: row.id,
            ref_id: row.ref_id.parse().map_err(|_| bad("RefID"))?,
            pin: row.pin.parse().map_err(|_| bad("PIN"))?,
            content_type: u8::try_from(row.content_type)
                .ok()
                .and_then(ContentType::from_u8)
                .ok_or_else(|| bad("content type"))?,
            priority: row.priority,
            envelope: row.envelope,
            state: OutboundState::parse(&row.state).ok_or_else(|| bad("state"))?,
            attempts: row.attempts,
            created_at: row.created_at,
            last_sent_at: row.last_sent_at,
        })
    }
}

fn convert(rows: Vec<Row>) -> DbResult<Vec<OutboundPacket>> {
    rows.into_iter().map(OutboundPacket::try_from).collect()
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewOutbound {
    pub ref_id: RefId,
    pub pin: Pin,
    pub content_type: ContentType,
    pub priority: bool,
    pub envelope: Vec<u8>,
}

impl NewOutbound {
    /// Queues several messages in one transaction (one disk write for many
    /// messages), returning their row ids in order.
    pub fn save_all(
        conn: &mut Conn,
        batch: &[NewOutbound],
        at: PrimitiveDateTime,
    ) -> DbResult<Vec<OutboundId>> {
        crate::db::write_transaction(conn, |conn| {
            batch
                .iter()
                .map(|m| {
                    diesel::insert_into(outbound_queue::table)
                        .values((
                            outbound_queue::ref_id.eq(m.ref_id.to_string()),
                            outbound_queue::pin.eq(m.pin.to_string()),
                            outbound_queue::content_type.eq(m.content_type as i32),
                            outbound_queue::priority.eq(m.priority),
                            outbound_queue::envelope.eq(&m.envelope),
                            outbound_queue::state.eq(OutboundState::Queued.as_str()),
                            outbound_queue::created_at.eq(at),
                        ))
                        .returning(outbound_queue::id)
                        .get_result(conn)
                        .map_err(DbError::from)
                })
                .collect()
        })
    }
}

impl OutboundPacket {
    pub fn find_by_ref_id(conn: &mut Conn, ref_id: RefId) -> DbResult<Option<OutboundPacket>> {
        outbound_queue::table
            .filter(outbound_queue::ref_id.eq(ref_id.to_string()))
            .select(Row::as_select())
            .first(conn)
            .optional()?
            .map(OutboundPacket::try_from)
            .transpose()
    }

    /// Records that the messages were written to a link.
    pub fn mark_sent(
        conn: &mut Conn,
        ref_ids: &[RefId],
        state: OutboundState,
        at: PrimitiveDateTime,
    ) -> DbResult<()> {
        let ids: Vec<String> = ref_ids.iter().map(|r| r.to_string()).collect();
        for chunk in ids.chunks(500) {
            diesel::update(outbound_queue::table.filter(outbound_queue::ref_id.eq_any(chunk)))
                .set((
                    outbound_queue::state.eq(state.as_str()),
                    outbound_queue::attempts.eq(outbound_queue::attempts + 1),
                    outbound_queue::last_sent_at.eq(at),
                ))
                .execute(conn)?;
        }
        Ok(())
    }

    /// Records what the relay reported; only for a message still queued
    /// for that PIN. Returns whether a row changed.
    pub fn set_state(
        conn: &mut Conn,
        pin: Pin,
        ref_id: RefId,
        state: OutboundState,
    ) -> DbResult<bool> {
        Ok(diesel::update(
            outbound_queue::table
                .filter(outbound_queue::ref_id.eq(ref_id.to_string()))
                .filter(outbound_queue::pin.eq(pin.to_string())),
        )
        .set(outbound_queue::state.eq(state.as_str()))
        .execute(conn)?
            > 0)
    }

    /// The device confirmed delivery: the message leaves the queue. Only
    /// the device the message was for can confirm it.
    pub fn delete_confirmed(
        conn: &mut Conn,
        pin: Pin,
        ref_id: RefId,
    ) -> DbResult<Option<OutboundPacket>> {
        let rows = diesel::delete(
            outbound_queue::table
                .filter(outbound_queue::ref_id.eq(ref_id.to_string()))
                .filter(outbound_queue::pin.eq(pin.to_string())),
        )
        .returning(Row::as_returning())
        .get_results(conn)?;
        Ok(convert(rows)?.into_iter().next())
    }

    /// Messages in the given states, oldest first, after row `after`.
    pub fn find_in_states(
        conn: &mut Conn,
        states: &[OutboundState],
        after: OutboundId,
        limit: i64,
    ) -> DbResult<Vec<OutboundPacket>> {
        let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        convert(
            outbound_queue::table
                .filter(outbound_queue::state.eq_any(states))
                .filter(outbound_queue::id.gt(after))
                .order(outbound_queue::id.asc())
                .limit(limit)
                .select(Row::as_select())
                .load(conn)?,
        )
    }

    /// One device's messages in the given states, oldest first.
    pub fn find_by_pin(
        conn: &mut Conn,
        pin: Pin,
        states: &[OutboundState],
    ) -> DbResult<Vec<OutboundPacket>> {
        let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        convert(
            outbound_queue::table
                .filter(outbound_queue::pin.eq(pin.to_string()))
                .filter(outbound_queue::state.eq_any(states))
                .order(outbound_queue::id.asc())
                .select(Row::as_select())
                .load(conn)?,
        )
    }

    /// Sent messages still unconfirmed since `cutoff` (the resend timeout).
    pub fn find_due_for_resend(
        conn: &mut Conn,
        cutoff: PrimitiveDateTime,
        limit: i64,
    ) -> DbResult<Vec<OutboundPacket>> {
        convert(
            outbound_queue::table
                .filter(outbound_queue::state.ne(OutboundState::Queued.as_str()))
                .filter(outbound_queue::last_sent_at.le(cutoff))
                .order(outbound_queue::id.asc())
                .limit(limit)
                .select(Row::as_select())
                .load(conn)?,
        )
    }

    /// Removes messages created before `cutoff`; returns them (they expired).
    pub fn delete_created_before(
        conn: &mut Conn,
        cutoff: PrimitiveDateTime,
    ) -> DbResult<Vec<OutboundPacket>> {
        convert(
            diesel::delete(outbound_queue::table.filter(outbound_queue::created_at.lt(cutoff)))
                .returning(Row::as_returning())
                .get_results(conn)?,
        )
    }

    pub fn count(conn: &mut Conn) -> DbResult<i64> {
        Ok(outbound_queue::table.count().get_result(conn)?)
    }

    /// Unconfirmed messages for one device (the console's "pending messages").
    pub fn count_by_pin(conn: &mut Conn, pin: Pin) -> DbResult<i64> {
        Ok(outbound_queue::table
            .filter(outbound_queue::pin.eq(pin.to_string()))
            .count()
            .get_result(conn)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;
    use crate::db::now;

    fn new(ref_id: u64, pin: u32) -> NewOutbound {
        NewOutbound {
            ref_id: RefId(ref_id),
            pin: Pin(pin),
            content_type: ContentType::Cmime,
            priority: false,
            envelope: vec![ref_id as u8; 10],
        }
    }

    #[test]
    fn queue_lifecycle() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let t0 = now();
            let ids = NewOutbound::save_all(conn, &[new(1, 7), new(2, 7), new(3, 8)], t0)?;
            assert_eq!(ids.len(), 3);
            assert!(
                NewOutbound::save_all(conn, &[new(1, 7)], t0).is_err(),
                "RefIDs are unique"
            );
            let queued =
                OutboundPacket::find_in_states(conn, &[OutboundState::Queued], OutboundId(0), 10)?;
            assert_eq!(queued.len(), 3);
            assert_eq!(queued[0].envelope, vec![1u8; 10]);

            OutboundPacket::mark_sent(conn, &[RefId(1), RefId(2)], OutboundState::AtRelay, t0)?;
            assert!(OutboundPacket::set_state(
                conn,
                Pin(7),
                RefId(2),
                OutboundState::StoredAtRelay
            )?);
            assert!(
                !OutboundPacket::set_state(conn, Pin(8), RefId(2), OutboundState::Queued)?,
                "wrong PIN"
            );
            let one = OutboundPacket::find_by_ref_id(conn, RefId(1))?.unwrap();
            assert_eq!((one.state, one.attempts), (OutboundState::AtRelay, 1));
            assert_eq!(
                OutboundPacket::find_by_pin(conn, Pin(7), &[OutboundState::StoredAtRelay])?.len(),
                1
            );

            let later = t0 + time::Duration::hours(5);
            let due =
                OutboundPacket::find_due_for_resend(conn, later - time::Duration::hours(4), 10)?;
            assert_eq!(due.len(), 2, "sent ones, not the queued one");
            assert!(OutboundPacket::find_due_for_resend(
                conn,
                t0 - time::Duration::seconds(1),
                10
            )?
            .is_empty());

            assert!(
                OutboundPacket::delete_confirmed(conn, Pin(8), RefId(1))?.is_none(),
                "another device cannot confirm"
            );
            assert_eq!(
                OutboundPacket::delete_confirmed(conn, Pin(7), RefId(1))?
                    .unwrap()
                    .ref_id,
                RefId(1)
            );
            assert_eq!(OutboundPacket::count(conn)?, 2);
            assert_eq!(OutboundPacket::count_by_pin(conn, Pin(7))?, 1);
            let expired =
                OutboundPacket::delete_created_before(conn, t0 + time::Duration::seconds(1))?;
            assert_eq!(expired.len(), 2);
            Ok(())
        })
        .unwrap();
    }
}
