//! Service book records sent to each device: they tell the smartphone which
//! services this server offers (e-mail through CMIME, organizer sync through
//! SYNC, the browser through IPPP and BrowserConfig, …). The Policy Service
//! sends them over the wireless network; a record whose content changes is
//! marked unsent so it goes out again.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use time::PrimitiveDateTime;

use crate::db::ids::{DeviceId, ServiceBookId};
use crate::db::models::user::text_enum;
use crate::db::schema::service_books;
use crate::db::{Conn, DbError, DbResult};

/// The service books of the seed, stored under their BlackBerry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceBookKind {
    /// Application Loader: wireless application pushes.
    #[serde(rename = "ALP")]
    Alp,
    /// BlackBerry Messenger.
    #[serde(rename = "BBIM")]
    Bbim,
    /// Browser configuration for the BlackBerry Browser.
    #[serde(rename = "BrowserConfig")]
    BrowserConfig,
    /// Calendar synchronization.
    #[serde(rename = "CICAL")]
    Cical,
    /// E-mail (Compressed MIME).
    #[serde(rename = "CMIME")]
    Cmime,
    /// IP Proxy Protocol: the browser and applications through this server.
    #[serde(rename = "IPPP")]
    Ippp,
    /// Wireless synchronization of organizer data and backup.
    #[serde(rename = "SYNC")]
    Sync,
}

text_enum!(ServiceBookKind {
    Alp => "ALP",
    Bbim => "BBIM",
    BrowserConfig => "BrowserConfig",
    Cical => "CICAL",
    Cmime => "CMIME",
    Ippp => "IPPP",
    Sync => "SYNC",
});

#[derive(Queryable, Selectable)]
#[diesel(table_name = service_books, check_for_backend(diesel::sqlite::Sqlite))]
struct ServiceBookRow {
    id: ServiceBookId,
    device_id: DeviceId,
    kind: String,
    uid: String,
    content: String,
    sent_at: Option<PrimitiveDateTime>,
}

/// One service book record of a device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceBook {
    pub id: ServiceBookId,
    pub device_id: DeviceId,
    pub kind: ServiceBookKind,
    /// Identifies the record within its kind (e.g. the CMIME UID).
    pub uid: String,
    pub content: serde_json::Value,
    /// None until sent, and again after the content changed.
    pub sent_at: Option<PrimitiveDateTime>,
}

impl TryFrom<ServiceBookRow> for ServiceBook {
    type Error = DbError;

    fn try_from(row: ServiceBookRow) -> DbResult<ServiceBook> {
        let kind = ServiceBookKind::parse(&row.kind).ok_or_else(|| {
            DbError::Damaged(format!(
                "service book {} of device {} has an unknown kind `{}`",
                row.id, row.device_id, row.kind
            ))
        })?;
        let content = serde_json::from_str(&row.content).map_err(|e| {
            DbError::Damaged(format!(
                "service book {} of device {} is not JSON: {e}",
                row.id, row.device_id
            ))
        })?;
        Ok(ServiceBook {
            id: row.id,
            device_id: row.device_id,
            kind,
            uid: row.uid,
            content,
            sent_at: row.sent_at,
        })
    }
}

impl ServiceBook {
    /// Stores the record for (device, kind, uid). New or changed content is
    /// marked unsent; the same content keeps its `sent_at`.
    pub fn upsert(
        conn: &mut Conn,
        device: DeviceId,
        kind: ServiceBookKind,
        uid: &str,
        content: &serde_json::Value,
    ) -> DbResult<ServiceBook> {
        if uid.trim().is_empty() {
            return Err(DbError::Invalid("a service book record needs a UID".into()));
        }
        let text = content.to_string();
        crate::db::write_transaction(conn, |conn| {
            let existing = service_books::table
                .filter(service_books::device_id.eq(device))
                .filter(service_books::kind.eq(kind.as_str()))
                .filter(service_books::uid.eq(uid))
                .select(ServiceBookRow::as_select())
                .first(conn)
                .optional()?;
            let row = match existing {
                Some(row) if row.content == text => row,
                Some(row) => diesel::update(service_books::table.find(row.id))
                    .set((
                        service_books::content.eq(&text),
                        service_books::sent_at.eq(None::<PrimitiveDateTime>),
                    ))
                    .returning(ServiceBookRow::as_returning())
                    .get_result(conn)?,
                None => diesel::insert_into(service_books::table)
                    .values((
                        service_books::device_id.eq(device),
                        service_books::kind.eq(kind.as_str()),
                        service_books::uid.eq(uid),
                        service_books::content.eq(&text),
                    ))
                    .returning(ServiceBookRow::as_returning())
                    .get_result(conn)?,
            };
            row.try_into()
        })
    }

    pub fn find_by_id(conn: &mut Conn, id: ServiceBookId) -> DbResult<Option<ServiceBook>> {
        service_books::table
            .find(id)
            .select(ServiceBookRow::as_select())
            .first(conn)
            .optional()?
            .map(ServiceBook::try_from)
            .transpose()
    }

    /// The device's records, by kind and UID.
    pub fn find_by_device(conn: &mut Conn, device: DeviceId) -> DbResult<Vec<ServiceBook>> {
        service_books::table
            .filter(service_books::device_id.eq(device))
            .order((service_books::kind.asc(), service_books::uid.asc()))
            .select(ServiceBookRow::as_select())
            .load(conn)?
            .into_iter()
            .map(ServiceBook::try_from)
            .collect()
    }

    /// The device's records still to be sent.
    pub fn find_unsent(conn: &mut Conn, device: DeviceId) -> DbResult<Vec<ServiceBook>> {
        service_books::table
            .filter(service_books::device_id.eq(device))
            .filter(service_books::sent_at.is_null())
            .order((service_books::kind.asc(), service_books::uid.asc()))
            .select(ServiceBookRow::as_select())
            .load(conn)?
            .into_iter()
            .map(ServiceBook::try_from)
            .collect()
    }

    /// Records that the device received the record at `at`.
    pub fn mark_sent(conn: &mut Conn, id: ServiceBookId, at: PrimitiveDateTime) -> DbResult<bool> {
        Ok(diesel::update(service_books::table.find(id))
            .set(service_books::sent_at.eq(at))
            .execute(conn)?
            > 0)
    }

    pub fn delete_by_id(conn: &mut Conn, id: ServiceBookId) -> DbResult<bool> {
        Ok(diesel::delete(service_books::table.find(id)).execute(conn)? > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::device::{Device, NewDevice};
    use crate::db::models::test_db;
    use crate::db::now;
    use serde_json::json;

    #[test]
    fn kinds_use_the_blackberry_names() {
        for (kind, text) in [
            (ServiceBookKind::Alp, "ALP"),
            (ServiceBookKind::Bbim, "BBIM"),
            (ServiceBookKind::BrowserConfig, "BrowserConfig"),
            (ServiceBookKind::Cical, "CICAL"),
            (ServiceBookKind::Cmime, "CMIME"),
            (ServiceBookKind::Ippp, "IPPP"),
            (ServiceBookKind::Sync, "SYNC"),
        ] {
            assert_eq!(kind.as_str(), text);
            assert_eq!(ServiceBookKind::parse(text), Some(kind));
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{text}\""));
        }
        assert_eq!(ServiceBookKind::parse("cmime"), None);
    }

    #[test]
    fn upsert_send_and_resend_on_change() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let device = Device::create(
                conn,
                &NewDevice {
                    pin: crate::db::models::device::parse_pin("2A3B4C5D")?,
                    user_id: None,
                    model: String::new(),
                    os_version: String::new(),
                    carrier: String::new(),
                },
            )?;
            let cmime = ServiceBook::upsert(
                conn,
                device.id,
                ServiceBookKind::Cmime,
                "S80012345",
                &json!({"email": "alice@example.com"}),
            )?;
            ServiceBook::upsert(
                conn,
                device.id,
                ServiceBookKind::Sync,
                "S80012345",
                &json!({}),
            )?;
            ServiceBook::upsert(
                conn,
                device.id,
                ServiceBookKind::Alp,
                "S80012345",
                &json!({}),
            )?;
            assert_eq!(ServiceBook::find_unsent(conn, device.id)?.len(), 3);
            let kinds: Vec<_> = ServiceBook::find_by_device(conn, device.id)?
                .into_iter()
                .map(|b| b.kind)
                .collect();
            assert_eq!(
                kinds,
                [
                    ServiceBookKind::Alp,
                    ServiceBookKind::Cmime,
                    ServiceBookKind::Sync
                ]
            );

            let at = now();
            assert!(ServiceBook::mark_sent(conn, cmime.id, at)?);
            let same = ServiceBook::upsert(
                conn,
                device.id,
                ServiceBookKind::Cmime,
                "S80012345",
                &json!({"email": "alice@example.com"}),
            )?;
            assert_eq!(
                (same.id, same.sent_at),
                (cmime.id, Some(at)),
                "same content stays sent"
            );
            let changed = ServiceBook::upsert(
                conn,
                device.id,
                ServiceBookKind::Cmime,
                "S80012345",
                &json!({"email": "alice@example.org"}),
            )?;
            assert_eq!(changed.id, cmime.id, "one record per device, kind and UID");
            assert_eq!(changed.sent_at, None, "changed content goes out again");
            assert_eq!(
                ServiceBook::find_by_id(conn, cmime.id)?.unwrap().content["email"],
                "alice@example.org"
            );

            // The UNIQUE constraint holds for direct writes too.
            let dup = diesel::insert_into(service_books::table)
                .values((
                    service_books::device_id.eq(device.id),
                    service_books::kind.eq("CMIME"),
                    service_books::uid.eq("S80012345"),
                    service_books::content.eq("{}"),
                ))
                .execute(conn);
            assert!(dup.is_err());

            assert!(ServiceBook::delete_by_id(conn, changed.id)?);
            assert_eq!(ServiceBook::find_by_device(conn, device.id)?.len(), 2);
            Device::delete_by_id(conn, device.id)?;
            assert_eq!(
                service_books::table.count().get_result::<i64>(conn)?,
                0,
                "records go with the device"
            );
            Ok(())
        })
        .unwrap();
    }
}
