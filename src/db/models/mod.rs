//! One file per table or aggregate of the Configuration Database. Every
//! table is reachable through typed functions named `find_by_*`, `save`
//! and `delete_*`, each taking a `&mut Conn` so callers choose the thread
//! (see [`crate::db::Database::run`]) and can group calls in a transaction.

pub mod activation_exchange;
pub mod activation_password;
pub mod admin_command;
pub mod administrator;
pub mod administrator_group;
pub mod audit;
pub mod device;
pub mod device_key;
pub mod directory;
pub mod domain_key;
pub mod group;
pub mod it_policy;
pub mod mailbox;
pub mod message;
pub mod message_filter;
pub mod outbound;
pub mod replay;
pub mod server;
pub mod service_book;
pub mod service_secret;
pub mod session;
pub mod software;
pub mod srp_connection;
pub mod statistics;
pub mod sync;
pub mod user;
pub mod user_service;

#[cfg(test)]
pub(crate) fn test_db() -> (tempfile::TempDir, crate::db::Database) {
    #![allow(clippy::unwrap_used)]
    let dir = tempfile::tempdir().unwrap();
    let db = crate::db::Database::open_path(&dir.path().join("bramble.db"), 2, 5_000).unwrap();
    (dir, db)
}
