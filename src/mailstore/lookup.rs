//! Address lookup for devices (the ALP service book): the MailStore
//! Service answers `Lookup` envelopes ([`bramble_proto::lookup`]).
//!
//! For each request: the device's user is found by PIN; the user must have
//! the ALP service on ([`service_enabled`]: the services the server
//! enables with the user's own exceptions, the same rule that decides which
//! service books the Policy Service sends); the query must be 2–256 characters. Then
//! every configured directory is searched at once (the directory itself,
//! not the copy in the Configuration Database, so the whole organization is
//! found, not only BlackBerry users); the results are merged, one per
//! e-mail address (the first directory in the settings wins), sorted by
//! name and cut to at most 20, with `truncated` when more matched.
//!
//! A directory that cannot be searched refuses the whole lookup with the
//! directory's own error (which names the directory and the setting to
//! check) rather than answering with a partial list the user would take
//! for complete.
//!
//! Without `[[directories]]` the lookup searches Bramble's own users (name
//! or e-mail containing the query, active accounts only): a server whose
//! users were added by hand still has an address book.
//!
//! Requests are answered concurrently (at most [`CONCURRENT_LOOKUPS`] at
//! once); a request that cannot be read is refused with
//! `LOOKUP_MALFORMED` and id 0. Nothing here panics on what a device sends.

use std::collections::HashSet;
use std::sync::Arc;

use bramble_proto::lookup::{codes, Lookup, LookupRefusal, LookupReply, LookupRequest, Person};
use bramble_proto::{ContentType, Pin};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::ldap::{search_addresses, AddressEntry, AddressesFound};
use super::{DirectoryError, DirectorySettings};
use crate::db::models::device::Device;
use crate::db::models::user::{AccountStatus, User};
use crate::db::models::user_service::{service_enabled, UserServices};
use crate::db::Database;
use crate::dispatcher::{Dispatcher, Inbound, Outgoing};

/// The service book that enables address lookup.
pub const ALP: &str = "ALP";
/// Lookups answered at the same time; more wait their turn.
pub const CONCURRENT_LOOKUPS: usize = 8;
/// Rows of the users table read for a lookup without directories.
const LOCAL_ROWS: i64 = 200;

/// What the lookup handler needs.
#[derive(Clone)]
pub struct LookupService {
    pub directories: Arc<Vec<DirectorySettings>>,
    /// The services the server enables (`[policy] services`); ALP among
    /// them turns lookup on for users without an exception.
    pub services: Arc<Vec<String>>,
    pub db: Database,
}

impl LookupService {
    /// Answers the requests arriving on `inbound` until `stop`.
    pub async fn serve(
        self,
        dispatcher: Dispatcher,
        mut inbound: mpsc::Receiver<Inbound>,
        stop: CancellationToken,
    ) {
        let permits = Arc::new(Semaphore::new(CONCURRENT_LOOKUPS));
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                m = inbound.recv() => m,
            };
            let Some(message) = message else { return };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let service = self.clone();
            let dispatcher = dispatcher.clone();
            tokio::spawn(async move {
                let pin = message.pin;
                let reply = service.answer(pin, &message.plaintext).await;
                let sent = dispatcher
                    .send(Outgoing {
                        pin,
                        content_type: ContentType::Lookup,
                        plaintext: reply.to_bytes(),
                        priority: false,
                        ref_id: None,
                    })
                    .await;
                if let Err(e) = sent {
                    warn!(target: "bramble::mailstore", %pin, "cannot queue the address lookup answer: {e}");
                }
                drop(permit);
            });
        }
    }

    /// The answer to one message from device `pin`.
    pub async fn answer(&self, pin: Pin, plaintext: &[u8]) -> Lookup {
        let request = match Lookup::from_bytes(plaintext) {
            Ok(Lookup::Request(r)) => r,
            Ok(other) => {
                return refuse(
                    other.id(),
                    codes::MALFORMED,
                    "only lookup requests are accepted from a device".to_owned(),
                )
            }
            Err(e) => {
                warn!(target: "bramble::mailstore", %pin, "unreadable address lookup: {e}");
                return refuse(
                    0,
                    codes::MALFORMED,
                    format!("the lookup request could not be read ({e})"),
                );
            }
        };
        match self.lookup(pin, &request).await {
            Ok(found) => {
                debug!(target: "bramble::mailstore", %pin, found = found.entries.len(), truncated = found.truncated, "address lookup answered");
                Lookup::Results(LookupReply {
                    id: request.id,
                    results: found
                        .entries
                        .into_iter()
                        .map(|e| Person {
                            name: e.display_name,
                            email: e.email,
                            login: e.login,
                        })
                        .collect(),
                    truncated: found.truncated,
                })
            }
            Err((code, message)) => refuse(request.id, code, message),
        }
    }

    async fn lookup(
        &self,
        pin: Pin,
        request: &LookupRequest,
    ) -> Result<AddressesFound, (&'static str, String)> {
        let owner = self
            .db
            .run(move |conn| {
                let Some((_, user)) = Device::find_with_owner(conn, &pin)? else {
                    return Ok(None);
                };
                let exceptions = UserServices::find(conn, user.id)?;
                Ok(Some((user, exceptions)))
            })
            .await
            .map_err(|e| {
                warn!(target: "bramble::mailstore", %pin, "cannot look up the device for an address lookup: {e}");
                (
                    codes::SERVER_ERROR,
                    "the enterprise server cannot read its database; try again later".to_owned(),
                )
            })?;
        let Some((user, exceptions)) = owner else {
            return Err((
                codes::NO_USER,
                format!("device {pin} belongs to no user; an administrator must assign it first"),
            ));
        };
        if !service_enabled(&self.services, &exceptions, ALP) {
            return Err((
                codes::DISABLED,
                format!(
                    "address lookup is turned off for {}; an administrator can turn it on (bramble user services --enable ALP)",
                    user.email
                ),
            ));
        }
        request.check()?;
        find_addresses(&self.db, &self.directories, &request.query, request.limit())
            .await
            .map_err(|e| {
                warn!(target: "bramble::mailstore", %pin, user = %user.id, code = e.code(), "address lookup failed: {e}");
                (
                    codes::DIRECTORY_FAILED,
                    format!("the directory could not be searched: {e}"),
                )
            })
    }
}

fn refuse(id: u64, code: &str, message: String) -> Lookup {
    Lookup::Refused(LookupRefusal {
        id,
        code: code.to_owned(),
        message,
    })
}

/// People whose name, e-mail address or login contains `query`, from every
/// directory (merged by e-mail address, sorted by name, at most `limit`),
/// or from Bramble's own users when there are no directories.
pub async fn find_addresses(
    db: &Database,
    directories: &[DirectorySettings],
    query: &str,
    limit: usize,
) -> Result<AddressesFound, DirectoryError> {
    if directories.is_empty() {
        return local_addresses(db, query, limit).await;
    }
    let searches = directories
        .iter()
        .map(|d| search_addresses(d, query, limit));
    let mut merged = AddressesFound::default();
    let mut seen = HashSet::new();
    for found in futures::future::join_all(searches).await {
        let found = found?;
        merged.truncated |= found.truncated;
        for entry in found.entries {
            if seen.insert(entry.email.to_lowercase()) {
                merged.entries.push(entry);
            }
        }
    }
    merged
        .entries
        .sort_by(|a, b| a.display_name.cmp(&b.display_name));
    if merged.entries.len() > limit {
        merged.truncated = true;
        merged.entries.truncate(limit);
    }
    Ok(merged)
}

async fn local_addresses(
    db: &Database,
    query: &str,
    limit: usize,
) -> Result<AddressesFound, DirectoryError> {
    let query = query.to_owned();
    let (users, total) = db
        .run(move |conn| User::search(conn, &query, 0, LOCAL_ROWS))
        .await?;
    let mut entries: Vec<AddressEntry> = users
        .into_iter()
        .filter(|u| u.account_status == AccountStatus::Active)
        .map(|u| AddressEntry {
            display_name: u.display_name,
            email: u.email,
            login: u.mailbox_login,
        })
        .collect();
    let truncated = entries.len() > limit || total > LOCAL_ROWS;
    entries.truncate(limit);
    Ok(AddressesFound { entries, truncated })
}
