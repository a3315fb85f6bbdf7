//! The connection from this BlackBerry Enterprise Server to the wireless
//! network (in the seed, part of what the Configuration Database holds):
//! the SRP ID and SRP authentication key the BlackBerry Router presents to
//! the relay, the relay host and port, and the number of Client Access
//! Licences (CALs).
//!
//! The SRP authentication key is a secret: it is sealed with the local master
//! key ([`Sealer`]) in `srp_key_sealed`, bound to the SRP ID
//! (`srp_connections/<srp_id>`), and only held in clear in memory, inside an
//! [`SrpKey`] whose `Debug` does not print it.

use diesel::prelude::*;
use serde::Serialize;
use time::PrimitiveDateTime;

use crate::db::ids::SrpConnectionId;
use crate::db::schema::srp_connections;
use crate::db::{now, Conn, DbError, DbResult, Sealer};

/// The port the relay listens on unless the administrator says otherwise.
pub const DEFAULT_RELAY_PORT: i32 = 3101;

/// The SRP authentication key in clear. Its `Debug` hides the value and the
/// memory is overwritten when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SrpKey(String);

impl SrpKey {
    pub fn new(key: impl Into<String>) -> SrpKey {
        SrpKey(key.into())
    }

    /// The key itself, for the handshake with the relay.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SrpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SrpKey(..)")
    }
}

impl Drop for SrpKey {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = srp_connections, check_for_backend(diesel::sqlite::Sqlite))]
struct SrpConnectionRow {
    id: SrpConnectionId,
    srp_id: String,
    srp_key_sealed: Vec<u8>,
    relay_host: String,
    relay_port: i32,
    cal_licences: i32,
    updated_at: PrimitiveDateTime,
}

/// This server's connection to the wireless network, with the SRP key
/// unsealed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SrpConnection {
    pub id: SrpConnectionId,
    pub srp_id: String,
    /// Never serialized: the console shows whether a key is set, not the key.
    #[serde(skip)]
    pub srp_key: SrpKey,
    pub relay_host: String,
    pub relay_port: i32,
    /// Client Access Licences: how many users this server may serve.
    pub cal_licences: i32,
    pub updated_at: PrimitiveDateTime,
}

/// What the administrator enters for the connection.
#[derive(Debug, Clone)]
pub struct SrpSettings {
    pub srp_id: String,
    pub srp_key: SrpKey,
    pub relay_host: String,
    /// [`DEFAULT_RELAY_PORT`] unless the relay listens elsewhere.
    pub relay_port: i32,
    pub cal_licences: i32,
}

impl SrpSettings {
    fn validate(&self) -> DbResult<()> {
        if self.srp_id.trim().is_empty() {
            return Err(DbError::Invalid(
                "the SRP ID is empty; enter the SRP ID from your licence".into(),
            ));
        }
        if self.srp_key.expose().trim().is_empty() {
            return Err(DbError::Invalid(
                "the SRP authentication key is empty; enter the key that came with the SRP ID"
                    .into(),
            ));
        }
        if self.relay_host.trim().is_empty() {
            return Err(DbError::Invalid("the relay host is empty".into()));
        }
        if !(1..=65_535).contains(&self.relay_port) {
            return Err(DbError::Invalid(format!(
                "the relay port {} is not a TCP port (1-65535; the relay normally listens on {DEFAULT_RELAY_PORT})",
                self.relay_port
            )));
        }
        if self.cal_licences < 0 {
            return Err(DbError::Invalid(format!(
                "the number of CALs cannot be negative ({})",
                self.cal_licences
            )));
        }
        Ok(())
    }
}

fn context(srp_id: &str) -> String {
    format!("srp_connections/{srp_id}")
}

impl SrpConnectionRow {
    fn unseal(self, sealer: &Sealer) -> DbResult<SrpConnection> {
        let clear = sealer.unseal(&context(&self.srp_id), &self.srp_key_sealed)?;
        let key = String::from_utf8(clear).map_err(|e| {
            let mut bytes = e.into_bytes();
            bytes.fill(0);
            DbError::Damaged(format!(
                "the stored SRP key for {} is not text",
                self.srp_id
            ))
        })?;
        Ok(SrpConnection {
            id: self.id,
            srp_id: self.srp_id,
            srp_key: SrpKey(key),
            relay_host: self.relay_host,
            relay_port: self.relay_port,
            cal_licences: self.cal_licences,
            updated_at: self.updated_at,
        })
    }
}

impl SrpConnection {
    /// The connection this server uses: the one row, or the most recently
    /// saved if an SRP ID was replaced without deleting the old one.
    pub fn find_current(conn: &mut Conn, sealer: &Sealer) -> DbResult<Option<SrpConnection>> {
        srp_connections::table
            .order((
                srp_connections::updated_at.desc(),
                srp_connections::id.desc(),
            ))
            .select(SrpConnectionRow::as_select())
            .first(conn)
            .optional()?
            .map(|row| row.unseal(sealer))
            .transpose()
    }

    pub fn find_by_srp_id(
        conn: &mut Conn,
        sealer: &Sealer,
        srp_id: &str,
    ) -> DbResult<Option<SrpConnection>> {
        srp_connections::table
            .filter(srp_connections::srp_id.eq(srp_id.trim()))
            .select(SrpConnectionRow::as_select())
            .first(conn)
            .optional()?
            .map(|row| row.unseal(sealer))
            .transpose()
    }

    /// Stores the settings: a new row for a new SRP ID, otherwise the row of
    /// that SRP ID is updated. The key is sealed before it is written.
    pub fn save(
        conn: &mut Conn,
        sealer: &Sealer,
        settings: &SrpSettings,
    ) -> DbResult<SrpConnection> {
        settings.validate()?;
        let srp_id = settings.srp_id.trim();
        let sealed = sealer.seal(&context(srp_id), settings.srp_key.expose().as_bytes())?;
        let at = now();
        let row = diesel::insert_into(srp_connections::table)
            .values((
                srp_connections::srp_id.eq(srp_id),
                srp_connections::srp_key_sealed.eq(&sealed),
                srp_connections::relay_host.eq(settings.relay_host.trim()),
                srp_connections::relay_port.eq(settings.relay_port),
                srp_connections::cal_licences.eq(settings.cal_licences),
                srp_connections::updated_at.eq(at),
            ))
            .on_conflict(srp_connections::srp_id)
            .do_update()
            .set((
                srp_connections::srp_key_sealed.eq(&sealed),
                srp_connections::relay_host.eq(settings.relay_host.trim()),
                srp_connections::relay_port.eq(settings.relay_port),
                srp_connections::cal_licences.eq(settings.cal_licences),
                srp_connections::updated_at.eq(at),
            ))
            .returning(SrpConnectionRow::as_returning())
            .get_result(conn)?;
        Ok(SrpConnection {
            id: row.id,
            srp_id: row.srp_id,
            srp_key: settings.srp_key.clone(),
            relay_host: row.relay_host,
            relay_port: row.relay_port,
            cal_licences: row.cal_licences,
            updated_at: row.updated_at,
        })
    }

    pub fn delete_by_id(conn: &mut Conn, id: SrpConnectionId) -> DbResult<bool> {
        Ok(diesel::delete(srp_connections::table.find(id)).execute(conn)? > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;

    const KEY: &str = "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ12";

    fn settings() -> SrpSettings {
        SrpSettings {
            srp_id: "S80012345".into(),
            srp_key: SrpKey::new(KEY),
            relay_host: "relay.example.net".into(),
            relay_port: DEFAULT_RELAY_PORT,
            cal_licences: 20,
        }
    }

    #[test]
    fn key_is_sealed_at_rest_and_round_trips() {
        let (_dir, db) = test_db();
        let sealer = db.sealer();
        db.run_blocking(|conn| {
            assert!(SrpConnection::find_current(conn, sealer)?.is_none());
            let saved = SrpConnection::save(conn, sealer, &settings())?;
            assert_eq!(saved.srp_key.expose(), KEY);

            let raw: Vec<u8> = srp_connections::table
                .select(srp_connections::srp_key_sealed)
                .first(conn)?;
            assert!(
                !raw.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
                "the key is not stored in clear"
            );
            assert!(!raw.windows(4).any(|w| w == b"ABCD"));

            let current = SrpConnection::find_current(conn, sealer)?.unwrap();
            assert_eq!(current, saved);
            assert_eq!(current.srp_key.expose(), KEY);
            assert_eq!(current.relay_port, 3101);
            assert!(
                !format!("{current:?}").contains("ABCD"),
                "Debug does not print the key"
            );
            assert!(!serde_json::to_string(&current).unwrap().contains("ABCD"));

            // Another master key cannot open it.
            let other = Sealer::from_key([9u8; 32]);
            assert!(matches!(
                SrpConnection::find_current(conn, &other),
                Err(DbError::Seal(_))
            ));
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn save_updates_by_srp_id_and_validates() {
        let (_dir, db) = test_db();
        let sealer = db.sealer();
        db.run_blocking(|conn| {
            let first = SrpConnection::save(conn, sealer, &settings())?;
            let changed = SrpSettings {
                srp_key: SrpKey::new("NEW-KEY"),
                relay_port: 3200,
                cal_licences: 50,
                ..settings()
            };
            let second = SrpConnection::save(conn, sealer, &changed)?;
            assert_eq!(second.id, first.id, "same SRP ID, same row");
            let found = SrpConnection::find_by_srp_id(conn, sealer, "S80012345")?.unwrap();
            assert_eq!(found.srp_key.expose(), "NEW-KEY");
            assert_eq!((found.relay_port, found.cal_licences), (3200, 50));
            assert_eq!(srp_connections::table.count().get_result::<i64>(conn)?, 1);

            // A new SRP ID is a new row and becomes the current one.
            let replaced = SrpConnection::save(
                conn,
                sealer,
                &SrpSettings {
                    srp_id: "S80099999".into(),
                    ..settings()
                },
            )?;
            assert_ne!(replaced.id, first.id);
            assert_eq!(
                SrpConnection::find_current(conn, sealer)?.unwrap().srp_id,
                "S80099999"
            );

            for bad in [
                SrpSettings {
                    srp_id: " ".into(),
                    ..settings()
                },
                SrpSettings {
                    srp_key: SrpKey::new(""),
                    ..settings()
                },
                SrpSettings {
                    relay_port: 0,
                    ..settings()
                },
                SrpSettings {
                    relay_port: 70_000,
                    ..settings()
                },
                SrpSettings {
                    cal_licences: -1,
                    ..settings()
                },
            ] {
                assert!(matches!(
                    SrpConnection::save(conn, sealer, &bad),
                    Err(DbError::Invalid(_))
                ));
            }

            assert!(SrpConnection::delete_by_id(conn, first.id)?);
            assert!(!SrpConnection::delete_by_id(conn, first.id)?);
            assert!(SrpConnection::find_by_srp_id(conn, sealer, "S80012345")?.is_none());
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn sealed_key_is_bound_to_its_srp_id() {
        let (_dir, db) = test_db();
        let sealer = db.sealer();
        db.run_blocking(|conn| {
            let a = SrpConnection::save(conn, sealer, &settings())?;
            let b = SrpConnection::save(
                conn,
                sealer,
                &SrpSettings {
                    srp_id: "S80000002".into(),
                    ..settings()
                },
            )?;
            let sealed_a: Vec<u8> = srp_connections::table
                .find(a.id)
                .select(srp_connections::srp_key_sealed)
                .first(conn)?;
            diesel::update(srp_connections::table.find(b.id))
                .set(srp_connections::srp_key_sealed.eq(sealed_a))
                .execute(conn)?;
            assert!(SrpConnection::find_by_srp_id(conn, sealer, "S80000002").is_err());
            Ok(())
        })
        .unwrap();
    }
}
