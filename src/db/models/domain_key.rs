//! The domain signing key's row: the public key in clear, the private key
//! sealed with the master key (bound to `domain_keys/1`, so the sealed
//! value opens nowhere else). One row at most; the Policy Service's
//! signing module generates it, and nothing here reads the private key in
//! clear.

use diesel::prelude::*;
use time::PrimitiveDateTime;

use crate::db::schema::domain_keys;
use crate::db::{now, Conn, DbResult};

/// Where the sealed private key belongs (associated data of the seal).
pub const SEAL_CONTEXT: &str = "domain_keys/1";

/// The stored domain key, private half still sealed.
#[derive(Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = domain_keys, check_for_backend(diesel::sqlite::Sqlite))]
pub struct StoredDomainKey {
    /// Raw Ed25519 public key (32 bytes).
    pub public_key: Vec<u8>,
    pub sealed_private_key: Vec<u8>,
    pub created_at: PrimitiveDateTime,
}

impl std::fmt::Debug for StoredDomainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredDomainKey")
            .field("public_key_len", &self.public_key.len())
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl StoredDomainKey {
    pub fn find(conn: &mut Conn) -> DbResult<Option<StoredDomainKey>> {
        Ok(domain_keys::table
            .find(1)
            .select(StoredDomainKey::as_select())
            .first(conn)
            .optional()?)
    }

    /// How many keys are stored (one at most).
    #[cfg(test)]
    pub(crate) fn count(conn: &mut Conn) -> DbResult<i64> {
        Ok(domain_keys::table.count().get_result(conn)?)
    }

    /// Stores the key unless one exists, and returns the one that is stored
    /// (the first writer wins when two processes start together).
    pub fn save_if_absent(
        conn: &mut Conn,
        public_key: &[u8],
        sealed_private_key: &[u8],
    ) -> DbResult<StoredDomainKey> {
        crate::db::write_transaction(conn, |conn| {
            diesel::insert_into(domain_keys::table)
                .values((
                    domain_keys::id.eq(1),
                    domain_keys::public_key.eq(public_key),
                    domain_keys::sealed_private_key.eq(sealed_private_key),
                    domain_keys::created_at.eq(now()),
                ))
                .on_conflict_do_nothing()
                .execute(conn)?;
            Ok(domain_keys::table
                .find(1)
                .select(StoredDomainKey::as_select())
                .first(conn)?)
        })
    }
}
