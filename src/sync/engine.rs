//! The synchronization itself, one user and one database at a time (the
//! caller holds the user's lock, so a slow sync, a round of server changes
//! and a batch of device changes never interleave):
//! - [`slow_sync`]: merge everything, delete nothing (seed step 14).
//! - [`server_round`]: changes on the organizer server since the last
//!   marker, to the device as a changelist.
//! - [`device_changes`]: a changelist from the device, to the server, one
//!   outcome per record.
//!
//! No loops: every record the device holds is kept with the server's ETag
//! and a digest of the device's version; a server change whose ETag we
//! wrote, or whose digest the device already has, is not sent back.
//! No duplicates: records are named by UID on both sides, so a record
//! moved to another href or renamed is updated, never added twice.

use std::collections::{HashMap, HashSet};

use bramble_proto::sync::{
    Change, ConflictResolution, Item, ItemResult, OrganizerDatabase, Outcome, Record, Side, Sync,
};
use bramble_proto::{ContentType, Pin};
use tracing::{info, warn};

use crate::db::ids::UserId;
use crate::db::models::sync::{
    ErrorSide, SyncItem, SyncItemError, SyncSetting, SyncState, SyncStatus,
};
use crate::db::DbError;
use crate::dispatcher::Outgoing;

use super::convert::{self, Parsed};
use super::dav::{DavError, Kind, Precondition, Resource};
use super::Shared;

/// Why a round or a merge stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Dav(#[from] DavError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot queue the changes for the device: {0}")]
    Dispatch(#[from] crate::dispatcher::DispatchError),
}

/// The user a device belongs to, as the engine needs it.
#[derive(Debug, Clone)]
pub struct Owner {
    pub user: UserId,
    pub login: String,
    pub pin: Pin,
}

/// A server record read for one database.
struct ServerRecord {
    uid: String,
    href: String,
    etag: String,
    record: Record,
}

impl Shared {
    fn collection(&self, database: OrganizerDatabase, login: &str) -> String {
        self.settings.collection(database, login)
    }

    fn today(&self) -> time::Date {
        self.clock.now().date()
    }

    /// Sends messages to the device in order (one queue write).
    pub(crate) async fn send(&self, pin: Pin, messages: Vec<Sync>) -> Result<(), EngineError> {
        if messages.is_empty() {
            return Ok(());
        }
        let outgoing = messages
            .into_iter()
            .map(|m| Outgoing {
                pin,
                content_type: ContentType::Sync,
                plaintext: m.to_bytes(),
                priority: false,
                ref_id: None,
            })
            .collect();
        self.dispatcher.send_all(outgoing).await?;
        Ok(())
    }

    /// Sends messages to the device and runs `record` in the same
    /// transaction as the queue write: the service's record of what the
    /// device holds is written if and only if the messages are queued.
    pub(crate) async fn send_recorded<F>(
        &self,
        pin: Pin,
        messages: Vec<Sync>,
        record: F,
    ) -> Result<(), EngineError>
    where
        F: FnOnce(&mut crate::db::Conn) -> Result<(), DbError> + Send + 'static,
    {
        if messages.is_empty() {
            self.db.write(record).await?;
            return Ok(());
        }
        let outgoing = messages
            .into_iter()
            .map(|m| Outgoing {
                pin,
                content_type: ContentType::Sync,
                plaintext: m.to_bytes(),
                priority: false,
                ref_id: None,
            })
            .collect();
        self.dispatcher
            .send_recorded(outgoing, move |conn, _| record(conn))
            .await?;
        Ok(())
    }

    /// Changes cut into messages of at most `batch_size` records.
    fn batches(&self, database: OrganizerDatabase, changes: Vec<Change>, slow: bool) -> Vec<Sync> {
        let size = self.settings.batch_size.max(1);
        let mut out = Vec::new();
        let mut changes = changes.into_iter().peekable();
        while changes.peek().is_some() {
            out.push(Sync::Changes {
                database,
                changes: changes.by_ref().take(size).collect(),
                slow,
            });
        }
        out
    }

    /// Reads every server record of the database: by sync-collection, or by
    /// listing ETags and fetching them where the server has no WebDAV sync.
    /// Unreadable records are recorded as errors and left out.
    async fn read_all(
        &self,
        owner: &Owner,
        database: OrganizerDatabase,
        path: &str,
    ) -> Result<(Vec<ServerRecord>, Option<String>, Option<String>, u32), EngineError> {
        let dav = self.dav()?;
        let kind = Kind::of(database);
        let webdav_sync = if self.settings.webdav_sync {
            Some(dav.sync_collection(path, None, kind).await)
        } else {
            None
        };
        let (resources, token, ctag) = match webdav_sync {
            Some(Ok(report)) => (report.changed, Some(report.token), None),
            // A sync report too large to read whole: listed, then fetched
            // in parts.
            Some(Err(
                DavError::Refused { .. } | DavError::BadAnswer { .. } | DavError::TooLarge { .. },
            ))
            | None => {
                let markers = dav.markers(path).await?;
                let listed = dav.list(path).await?;
                let hrefs: Vec<String> = listed.into_iter().map(|(h, _)| h).collect();
                let mut resources = Vec::new();
                for chunk in hrefs.chunks(500) {
                    resources.extend(dav.multiget(path, chunk, kind).await?);
                }
                (resources, None, markers.ctag)
            }
            Some(Err(e)) => return Err(e.into()),
        };
        let (records, skipped) = self.parse_resources(owner, database, resources).await?;
        Ok((records, token, ctag, skipped))
    }

    async fn parse_resources(
        &self,
        owner: &Owner,
        database: OrganizerDatabase,
        resources: Vec<Resource>,
    ) -> Result<(Vec<ServerRecord>, u32), EngineError> {
        let mut records = Vec::with_capacity(resources.len());
        let mut errors = Vec::new();
        let mut cleared = Vec::new();
        for r in resources {
            let Some(data) = r.data.as_deref() else {
                continue;
            };
            match convert::parse(database, data, &convert::uid_from_href(&r.href)) {
                Ok(Parsed::Record { uid, record }) => {
                    cleared.push(r.href.clone());
                    records.push(ServerRecord {
                        uid,
                        href: r.href,
                        etag: r.etag,
                        record,
                    });
                }
                Ok(Parsed::NotOurs) => {}
                Err(e) => {
                    warn!(target: "bramble::sync", user = %owner.user, %database, href = %r.href, "a record on the organizer server is skipped: {e}");
                    errors.push((r.href, e.0));
                }
            }
        }
        let skipped = errors.len() as u32;
        let user = owner.user;
        let with_errors: HashSet<String> = self
            .db
            .run(move |conn| SyncItemError::find_items(conn, user, database))
            .await?
            .into_iter()
            .collect();
        cleared.retain(|href| with_errors.contains(href));
        if !errors.is_empty() || !cleared.is_empty() {
            self.db
                .write(move |conn| {
                    for (href, message) in &errors {
                        SyncItemError::record(
                            conn,
                            user,
                            database,
                            href,
                            ErrorSide::Server,
                            message,
                        )?;
                    }
                    for href in &cleared {
                        SyncItemError::clear(conn, user, database, href)?;
                    }
                    Ok(())
                })
                .await?;
        }
        Ok((records, skipped))
    }

    pub(crate) fn dav(&self) -> Result<&super::dav::DavClient, EngineError> {
        self.dav.as_ref().ok_or_else(|| {
            EngineError::Dav(DavError::Unreachable {
                url: "(none)".into(),
                message: "no organizer server is configured ([sync] url)".into(),
            })
        })
    }
}

/// Seed step 14: merges the device's records (`device_items`, everything
/// it holds in `database`) with the server's. Nothing is deleted on either
/// side; a record both sides hold differently is settled by the
/// database's conflict resolution. Ends with `slow_sync_done`; the
/// database is in sync when the device answers `in_sync`.
pub(crate) async fn slow_sync(
    shared: &Shared,
    owner: &Owner,
    database: OrganizerDatabase,
    device_items: Vec<Item>,
) -> Result<(), EngineError> {
    let user = owner.user;
    let setting = shared
        .db
        .run(move |conn| SyncSetting::find(conn, database))
        .await?;
    shared
        .db
        .write(move |conn| {
            SyncState::start_slow_sync(conn, user, database)?;
            SyncItem::delete_by_database(conn, user, database)?;
            Ok(())
        })
        .await?;
    let path = shared.collection(database, &owner.login);
    let (server, token, ctag, skipped) = match shared.read_all(owner, database, &path).await {
        Ok(read) => read,
        Err(e) => {
            let text = e.to_string();
            shared
                .db
                .write(move |conn| SyncState::set_error(conn, user, database, &text))
                .await?;
            return Err(e);
        }
    };
    let today = shared.today();
    let to_device = setting.direction.to_device();
    let to_server = setting.direction.to_server();
    let kind = Kind::of(database);
    let dav = shared.dav()?;
    let mut device: HashMap<String, Item> = device_items
        .into_iter()
        .filter(|i| i.record.database() == database)
        .map(|i| (i.uid.clone(), i))
        .collect();
    let mut changes = Vec::new();
    let mut keep = Vec::new();
    let mut sent = 0u32;
    for s in server {
        if !convert::in_window(
            &s.record,
            today,
            shared.settings.calendar_past_days,
            shared.settings.calendar_future_days,
        ) {
            // Outside the window: not sent, and a copy the device has is
            // not the device's to add.
            device.remove(&s.uid);
            continue;
        }
        let server_digest = convert::digest(&s.record);
        match device.remove(&s.uid) {
            Some(d) if convert::digest(&d.record) == server_digest => {
                changes.push(Change::Revision {
                    uid: s.uid.clone(),
                    rev: s.etag.clone(),
                });
                keep.push(item_row(&s.uid, &s.href, &s.etag, server_digest));
            }
            Some(d) => {
                let device_wins = setting.conflict == ConflictResolution::DeviceWins && to_server;
                if device_wins || !to_device {
                    if to_server {
                        // The server's object as it is, with the device's fields.
                        let existing = dav.get(&s.href).await.ok().flatten();
                        let text = convert::render(
                            &s.uid,
                            &d.record,
                            existing.as_ref().map(|(t, _)| t.as_str()),
                        );
                        match dav
                            .put(&s.href, text, kind, Precondition::IfMatch(&s.etag))
                            .await
                        {
                            Ok(etag) => {
                                changes.push(Change::Revision {
                                    uid: s.uid.clone(),
                                    rev: etag.clone(),
                                });
                                keep.push(item_row(
                                    &s.uid,
                                    &s.href,
                                    &etag,
                                    convert::digest(&d.record),
                                ));
                            }
                            Err(e) => {
                                record_device_error(shared, user, database, &s.uid, &e).await?;
                                keep.push(item_row(&s.uid, &s.href, &s.etag, server_digest));
                            }
                        }
                    } else {
                        keep.push(item_row(
                            &s.uid,
                            &s.href,
                            &s.etag,
                            convert::digest(&d.record),
                        ));
                    }
                } else {
                    changes.push(Change::Upsert(Item {
                        uid: s.uid.clone(),
                        rev: Some(s.etag.clone()),
                        record: s.record,
                    }));
                    sent += 1;
                    keep.push(item_row(&s.uid, &s.href, &s.etag, server_digest));
                }
            }
            None if to_device => {
                keep.push(item_row(&s.uid, &s.href, &s.etag, server_digest));
                changes.push(Change::Upsert(Item {
                    uid: s.uid,
                    rev: Some(s.etag),
                    record: s.record,
                }));
                sent += 1;
            }
            None => {}
        }
    }
    // Records only the device has: to the server (nothing is deleted).
    if to_server {
        let mut only_device: Vec<Item> = device.into_values().collect();
        only_device.sort_by(|a, b| a.uid.cmp(&b.uid));
        for d in only_device {
            let href = convert::href_for(&path, &d.uid, kind.extension());
            let text = convert::render(&d.uid, &d.record, None);
            match dav.put(&href, text, kind, Precondition::IfNoneMatch).await {
                Ok(etag) => {
                    changes.push(Change::Revision {
                        uid: d.uid.clone(),
                        rev: etag.clone(),
                    });
                    keep.push(item_row(&d.uid, &href, &etag, convert::digest(&d.record)));
                }
                Err(e) if e.is_unreachable() => {
                    let text = e.to_string();
                    shared
                        .db
                        .write(move |conn| SyncState::set_error(conn, user, database, &text))
                        .await?;
                    return Err(e.into());
                }
                Err(e) => record_device_error(shared, user, database, &d.uid, &e).await?,
            }
        }
    }
    let stored = keep.len();
    let mut messages = shared.batches(database, changes, true);
    messages.push(Sync::SlowSyncDone {
        database,
        sent,
        skipped,
    });
    // What the device holds is recorded if and only if the changes are queued.
    shared
        .send_recorded(owner.pin, messages, move |conn| {
            SyncItem::save_all(conn, user, database, &keep)?;
            SyncState::set_marker(conn, user, database, token.as_deref(), ctag.as_deref())
        })
        .await?;
    info!(target: "bramble::sync", user = %user, pin = %owner.pin, %database, records = stored, sent, skipped, "slow sync merged");
    Ok(())
}

fn item_row(uid: &str, href: &str, etag: &str, digest: String) -> SyncItem {
    SyncItem {
        uid: uid.to_owned(),
        href: href.to_owned(),
        etag: etag.to_owned(),
        digest,
    }
}

async fn record_device_error(
    shared: &Shared,
    user: UserId,
    database: OrganizerDatabase,
    uid: &str,
    error: &DavError,
) -> Result<(), EngineError> {
    warn!(target: "bramble::sync", %user, %database, uid, "a record from the device was not written: {error}");
    let uid = uid.to_owned();
    let message = error.to_string();
    shared
        .db
        .write(move |conn| {
            SyncItemError::record(conn, user, database, &uid, ErrorSide::Device, &message)
        })
        .await?;
    Ok(())
}

/// One incremental round of server changes for a database in sync: what
/// changed since the last marker goes to the device as a changelist.
/// Returns how many changes were sent.
pub(crate) async fn server_round(
    shared: &Shared,
    owner: &Owner,
    database: OrganizerDatabase,
) -> Result<usize, EngineError> {
    let user = owner.user;
    let (setting, state) = shared
        .db
        .run(move |conn| {
            Ok((
                SyncSetting::find(conn, database)?,
                SyncState::find(conn, user, database)?,
            ))
        })
        .await?;
    let Some(state) = state else { return Ok(0) };
    if !setting.enabled {
        return Ok(0);
    }
    let outcome = read_changes(shared, owner, database, &state).await;
    let ((changed, removed, token, ctag), stored) = match outcome {
        Ok(Some(read)) => read,
        Ok(None) => {
            // Nothing changed; a database that was failing is back.
            if state.state != SyncStatus::InSync {
                shared
                    .db
                    .write(move |conn| SyncState::set_in_sync(conn, user, database))
                    .await?;
            }
            return Ok(0);
        }
        Err(e) => {
            let text = e.to_string();
            if state.error.as_deref() != Some(text.as_str()) {
                warn!(target: "bramble::sync", %user, %database, code = e_code(&e), "{text}");
            }
            shared
                .db
                .write(move |conn| SyncState::set_error(conn, user, database, &text))
                .await?;
            return Err(e);
        }
    };
    let (records, _) = shared.parse_resources(owner, database, changed).await?;
    let today = shared.today();
    let to_device = setting.direction.to_device();
    let mut by_uid: HashMap<String, SyncItem> =
        stored.into_iter().map(|s| (s.uid.clone(), s)).collect();
    let mut changes = Vec::new();
    let mut save = Vec::new();
    let mut seen_uids = HashSet::new();
    for s in records {
        seen_uids.insert(s.uid.clone());
        let digest = convert::digest(&s.record);
        let known = by_uid.get(&s.uid);
        if known.is_some_and(|k| k.digest == digest) {
            // Our own write, or a change to what the device does not keep.
            save.push(item_row(&s.uid, &s.href, &s.etag, digest));
            continue;
        }
        if !convert::in_window(
            &s.record,
            today,
            shared.settings.calendar_past_days,
            shared.settings.calendar_future_days,
        ) && known.is_none()
        {
            continue;
        }
        if to_device {
            save.push(item_row(&s.uid, &s.href, &s.etag, digest));
            changes.push(Change::Upsert(Item {
                uid: s.uid,
                rev: Some(s.etag),
                record: s.record,
            }));
        } else if let Some(k) = known {
            save.push(item_row(&s.uid, &s.href, &s.etag, k.digest.clone()));
        }
    }
    // Removed hrefs; a UID seen again at another href was moved, not removed.
    for s in &save {
        by_uid.insert(s.uid.clone(), s.clone());
    }
    let mut gone = Vec::new();
    for href in removed {
        let Some(item) = by_uid.values().find(|i| i.href == href).cloned() else {
            continue;
        };
        if seen_uids.contains(&item.uid) {
            continue;
        }
        by_uid.remove(&item.uid);
        gone.push(item.uid.clone());
        if to_device {
            changes.push(Change::Delete {
                uid: item.uid,
                rev: Some(item.etag),
            });
        }
    }
    let sent = changes.len();
    let messages = shared.batches(database, changes, false);
    shared
        .send_recorded(owner.pin, messages, move |conn| {
            SyncItem::save_all(conn, user, database, &save)?;
            SyncItem::delete_by_uids(conn, user, database, &gone)?;
            SyncState::set_marker(conn, user, database, token.as_deref(), ctag.as_deref())?;
            SyncState::set_in_sync(conn, user, database)
        })
        .await?;
    if sent > 0 {
        info!(target: "bramble::sync", %user, pin = %owner.pin, %database, changes = sent, "server changes sent to the device");
    }
    Ok(sent)
}

fn e_code(e: &EngineError) -> &'static str {
    match e {
        EngineError::Dav(d) => d.code(),
        EngineError::Db(d) => d.code(),
        EngineError::Dispatch(_) => "SYNC_DISPATCH_FAILED",
    }
}

type ChangeSet = (Vec<Resource>, Vec<String>, Option<String>, Option<String>);

/// What changed on the server since the state's marker (`None`: nothing),
/// with the records the device holds (read only when something changed).
async fn read_changes(
    shared: &Shared,
    owner: &Owner,
    database: OrganizerDatabase,
    state: &SyncState,
) -> Result<Option<(ChangeSet, Vec<SyncItem>)>, EngineError> {
    let user = owner.user;
    let load = || async move {
        shared
            .db
            .run(move |conn| SyncItem::find_by_user(conn, user, database))
            .await
    };
    let dav = shared.dav()?;
    let path = shared.collection(database, &owner.login);
    let kind = Kind::of(database);
    let webdav_sync = shared.settings.webdav_sync;
    if let Some(token) = state.sync_token.as_ref().filter(|_| webdav_sync) {
        match dav.sync_collection(&path, Some(token), kind).await {
            Ok(report) => {
                if report.changed.is_empty() && report.removed.is_empty() {
                    if report.token != *token {
                        let nothing = (Vec::new(), Vec::new(), Some(report.token), None);
                        return Ok(Some((nothing, Vec::new())));
                    }
                    return Ok(None);
                }
                let stored = load().await?;
                // Skip fetching nothing: the data came with the report.
                let known: HashSet<(&str, &str)> = stored
                    .iter()
                    .map(|s| (s.href.as_str(), s.etag.as_str()))
                    .collect();
                let changed = report
                    .changed
                    .into_iter()
                    .filter(|r| !known.contains(&(r.href.as_str(), r.etag.as_str())))
                    .collect();
                return Ok(Some((
                    (changed, report.removed, Some(report.token), None),
                    stored,
                )));
            }
            Err(DavError::TokenExpired { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let markers = dav.markers(&path).await?;
    if (state.sync_token.is_none() || !webdav_sync)
        && markers.ctag.is_some()
        && markers.ctag == state.ctag
    {
        return Ok(None);
    }
    // Compare every ETag with the ones kept.
    let stored = load().await?;
    let listed = dav.list(&path).await?;
    let known: HashMap<&str, &str> = stored
        .iter()
        .map(|s| (s.href.as_str(), s.etag.as_str()))
        .collect();
    let listed_hrefs: HashSet<&str> = listed.iter().map(|(h, _)| h.as_str()).collect();
    let to_fetch: Vec<String> = listed
        .iter()
        .filter(|(h, e)| known.get(h.as_str()) != Some(&e.as_str()))
        .map(|(h, _)| h.clone())
        .collect();
    let removed: Vec<String> = stored
        .iter()
        .filter(|s| !listed_hrefs.contains(s.href.as_str()))
        .map(|s| s.href.clone())
        .collect();
    let mut changed = Vec::new();
    for chunk in to_fetch.chunks(500) {
        changed.extend(dav.multiget(&path, chunk, kind).await?);
    }
    let token = markers.sync_token.filter(|_| webdav_sync);
    Ok(Some(((changed, removed, token, markers.ctag), stored)))
}

/// A changelist from the device: each change written to the server (or
/// refused, or settled as a conflict) on its own, so one bad record does
/// not hold up the others. Returns one outcome per change, in order.
pub(crate) async fn device_changes(
    shared: &Shared,
    owner: &Owner,
    database: OrganizerDatabase,
    changes: Vec<Change>,
) -> Result<Vec<ItemResult>, EngineError> {
    let setting = shared
        .db
        .run(move |conn| SyncSetting::find(conn, database))
        .await?;
    let refuse = |code: &str, message: String| -> Vec<ItemResult> {
        changes
            .iter()
            .map(|c| ItemResult {
                uid: c.uid().to_owned(),
                outcome: Outcome::Rejected {
                    code: code.to_owned(),
                    message: message.clone(),
                },
            })
            .collect()
    };
    if !setting.enabled {
        return Ok(refuse(
            "SYNC_DATABASE_OFF",
            format!("the {database} database is not synchronized (turned off by the administrator); the change stays on the device"),
        ));
    }
    if !setting.direction.to_server() {
        return Ok(refuse(
            "SYNC_SERVER_TO_DEVICE_ONLY",
            format!("the {database} database is synchronized from the server to devices only; the change stays on the device"),
        ));
    }
    if shared.dav.is_none() {
        return Ok(refuse(
            "SYNC_NOT_CONFIGURED",
            "no organizer server is configured ([sync] url)".into(),
        ));
    }
    let mut results = Vec::with_capacity(changes.len());
    for change in changes {
        let uid = change.uid().to_owned();
        let outcome = match apply_one(shared, owner, database, setting.conflict, change).await {
            Ok(outcome) => outcome,
            Err(EngineError::Dav(e)) if e.is_unreachable() => Outcome::Retry {
                message: e.to_string(),
            },
            Err(EngineError::Dav(e)) => {
                record_device_error(shared, owner.user, database, &uid, &e).await?;
                Outcome::Rejected {
                    code: e.code().to_owned(),
                    message: e.to_string(),
                }
            }
            Err(other) => return Err(other),
        };
        results.push(ItemResult { uid, outcome });
    }
    Ok(results)
}

async fn apply_one(
    shared: &Shared,
    owner: &Owner,
    database: OrganizerDatabase,
    conflict: ConflictResolution,
    change: Change,
) -> Result<Outcome, EngineError> {
    let dav = shared.dav()?;
    let user = owner.user;
    let kind = Kind::of(database);
    let path = shared.collection(database, &owner.login);
    let uid = change.uid().to_owned();
    let stored = {
        let uid = uid.clone();
        shared
            .db
            .run(move |conn| SyncItem::find(conn, user, database, &uid))
            .await?
    };
    let save = |row: SyncItem| async move {
        shared
            .db
            .write(move |conn| {
                SyncItemError::clear(conn, user, database, &row.uid)?;
                SyncItem::save_all(conn, user, database, &[row])
            })
            .await
    };
    let forget = |uid: String| async move {
        shared
            .db
            .write(move |conn| SyncItem::delete_by_uids(conn, user, database, &[uid]))
            .await
    };
    match change {
        Change::Revision { .. } => Ok(Outcome::Rejected {
            code: "SYNC_NOT_A_DEVICE_CHANGE".into(),
            message: "a revision notice is for devices, not from them".into(),
        }),
        Change::Upsert(item) => {
            if item.record.database() != database {
                return Ok(Outcome::Rejected {
                    code: "SYNC_WRONG_DATABASE".into(),
                    message: format!(
                        "a {} record cannot go in the {database} database",
                        item.record.database()
                    ),
                });
            }
            let digest = convert::digest(&item.record);
            let Some(s) = stored else {
                if item.rev.is_some() && conflict == ConflictResolution::ServerWins {
                    // The device edited a record the server has deleted since.
                    info!(target: "bramble::sync", %user, %database, uid, "conflict: the server had deleted the record; it is deleted on the device");
                    return Ok(Outcome::Conflict {
                        kept: Side::Server,
                        item: None,
                        rev: None,
                    });
                }
                // New on the device (or deleted on the server, and the
                // device's version wins).
                let href = convert::href_for(&path, &uid, kind.extension());
                let text = convert::render(&uid, &item.record, None);
                match dav.put(&href, text, kind, Precondition::IfNoneMatch).await {
                    Ok(etag) => {
                        save(item_row(&uid, &href, &etag, digest)).await?;
                        return Ok(Outcome::Applied { rev: Some(etag) });
                    }
                    Err(DavError::Changed { .. }) => {
                        // Already there (sent before, its result lost): settle below.
                        let current = dav.get(&href).await?;
                        return settle(
                            shared, owner, database, conflict, &uid, &href, item, current,
                        )
                        .await;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            let current = dav.get(&s.href).await?;
            let unchanged = current.as_ref().is_some_and(|(_, etag)| *etag == s.etag)
                && item.rev.as_ref().is_none_or(|rev| *rev == s.etag);
            if let (true, Some((text, etag))) = (unchanged, &current) {
                let rendered = convert::render(&uid, &item.record, Some(text));
                match dav
                    .put(&s.href, rendered, kind, Precondition::IfMatch(etag))
                    .await
                {
                    Ok(new_etag) => {
                        save(item_row(&uid, &s.href, &new_etag, digest)).await?;
                        return Ok(Outcome::Applied {
                            rev: Some(new_etag),
                        });
                    }
                    Err(DavError::Changed { .. }) => {
                        let current = dav.get(&s.href).await?;
                        return settle(
                            shared, owner, database, conflict, &uid, &s.href, item, current,
                        )
                        .await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            settle(
                shared, owner, database, conflict, &uid, &s.href, item, current,
            )
            .await
        }
        Change::Delete { rev, .. } => {
            let Some(s) = stored else {
                return Ok(Outcome::Applied { rev: None });
            };
            let base_ok = rev.as_ref().is_none_or(|r| *r == s.etag);
            if base_ok {
                match dav.delete(&s.href, Some(&s.etag)).await {
                    Ok(()) => {
                        forget(uid).await?;
                        return Ok(Outcome::Applied { rev: None });
                    }
                    Err(DavError::Changed { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            // Changed on the server since the device last had it.
            match dav.get(&s.href).await? {
                None => {
                    forget(uid).await?;
                    Ok(Outcome::Applied { rev: None })
                }
                Some((text, etag)) => match conflict {
                    ConflictResolution::DeviceWins => {
                        dav.delete(&s.href, None).await?;
                        forget(uid).await?;
                        Ok(Outcome::Conflict {
                            kept: Side::Device,
                            item: None,
                            rev: None,
                        })
                    }
                    ConflictResolution::ServerWins => {
                        server_version(shared, owner, database, &uid, &s.href, &text, &etag).await
                    }
                },
            }
        }
    }
}

/// Both sides changed the record (`current` is the server's version now,
/// none if the server deleted it): the conflict resolution decides.
#[allow(clippy::too_many_arguments)]
async fn settle(
    shared: &Shared,
    owner: &Owner,
    database: OrganizerDatabase,
    conflict: ConflictResolution,
    uid: &str,
    href: &str,
    item: Item,
    current: Option<(String, String)>,
) -> Result<Outcome, EngineError> {
    let dav = shared.dav()?;
    let kind = Kind::of(database);
    let user = owner.user;
    let digest = convert::digest(&item.record);
    match (conflict, current) {
        (ConflictResolution::DeviceWins, current) => {
            let text =
                convert::render(uid, &item.record, current.as_ref().map(|(t, _)| t.as_str()));
            let precondition = match &current {
                Some((_, etag)) => Precondition::IfMatch(etag),
                None => Precondition::IfNoneMatch,
            };
            let etag = dav.put(href, text, kind, precondition).await?;
            let row = item_row(uid, href, &etag, digest);
            shared
                .db
                .write(move |conn| SyncItem::save_all(conn, user, database, &[row]))
                .await?;
            info!(target: "bramble::sync", %user, %database, uid, "conflict: the device's version was kept");
            Ok(Outcome::Conflict {
                kept: Side::Device,
                item: None,
                rev: Some(etag),
            })
        }
        (ConflictResolution::ServerWins, None) => {
            let uid_owned = uid.to_owned();
            shared
                .db
                .write(move |conn| SyncItem::delete_by_uids(conn, user, database, &[uid_owned]))
                .await?;
            info!(target: "bramble::sync", %user, %database, uid, "conflict: the server had deleted the record; it is deleted on the device");
            Ok(Outcome::Conflict {
                kept: Side::Server,
                item: None,
                rev: None,
            })
        }
        (ConflictResolution::ServerWins, Some((text, etag))) => {
            server_version(shared, owner, database, uid, href, &text, &etag).await
        }
    }
}

/// The server's version wins: the device is given it with the outcome.
async fn server_version(
    shared: &Shared,
    owner: &Owner,
    database: OrganizerDatabase,
    uid: &str,
    href: &str,
    text: &str,
    etag: &str,
) -> Result<Outcome, EngineError> {
    let user = owner.user;
    match convert::parse(database, text, uid) {
        Ok(Parsed::Record { record, .. }) => {
            let row = item_row(uid, href, etag, convert::digest(&record));
            shared
                .db
                .write(move |conn| SyncItem::save_all(conn, user, database, &[row]))
                .await?;
            info!(target: "bramble::sync", %user, %database, uid, "conflict: the server's version was kept");
            Ok(Outcome::Conflict {
                kept: Side::Server,
                item: Some(Item {
                    uid: uid.to_owned(),
                    rev: Some(etag.to_owned()),
                    record,
                }),
                rev: Some(etag.to_owned()),
            })
        }
        Ok(Parsed::NotOurs) | Err(_) => Ok(Outcome::Rejected {
            code: "SYNC_SERVER_RECORD_UNREADABLE".into(),
            message: "the server's version of this record cannot be read; it was kept and the device's change was not written".into(),
        }),
    }
}
