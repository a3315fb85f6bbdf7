//! The device's organizer (contacts, calendar, tasks, memos) and its
//! synchronization client, speaking [`bramble_proto::sync`] over a
//! [`Connection`].
//!
//! [`Organizer`] is the store: records by UID per database, each with the
//! server revision it last had and, when the user changed it and the
//! server has not accepted the change yet, the change's sequence number.
//! Deletions wait in their own list until accepted.
//!
//! [`SyncClient`] plays the device's part (seed, activation steps 13–15):
//! ask for the configuration first, then slow-sync every enabled database
//! (send every record, apply what the server sends, answer `in_sync`);
//! afterwards apply the server's changelists as they come and send the
//! user's edits as changelists of their own. The server arbitrates
//! conflicts: a server change to a record with an unaccepted edit is held
//! back until the edit's outcome, which says which version the device now
//! keeps.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bramble_proto::sync::{
    Backup, Change, DatabaseConfig, Diagnostics, Item, ItemResult, OrganizerDatabase, Outcome,
    Record, Side, Sync,
};
use bramble_proto::{ContentType, RefId};

use crate::{Connection, DeviceError};

/// Why a synchronization step did not finish.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncClientError {
    #[error(transparent)]
    Link(#[from] DeviceError),
    #[error("the link closed while waiting for {0}")]
    Closed(&'static str),
    #[error("no {0} from the server within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("the server could not do it ({code}): {message}")]
    Failed { code: String, message: String },
}

/// One record on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub record: Record,
    /// The server's revision the device last had.
    pub rev: Option<String>,
    /// The user's edit not yet accepted by the server (its sequence number).
    pub dirty: Option<u64>,
}

/// A record the server did not take, as the device shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedChange {
    pub database: OrganizerDatabase,
    pub uid: String,
    pub code: String,
    pub message: String,
}

/// The device's organizer databases and what it knows of synchronization.
#[derive(Debug, Default, Clone)]
pub struct Organizer {
    records: HashMap<OrganizerDatabase, BTreeMap<String, StoredRecord>>,
    /// Deletions not yet accepted: UID → (revision, sequence).
    deleted: HashMap<OrganizerDatabase, BTreeMap<String, (Option<String>, u64)>>,
    seq: u64,
    /// The configuration the server sent last.
    pub config: Option<(bool, Vec<DatabaseConfig>)>,
    /// Databases whose slow sync finished.
    pub in_sync: HashSet<OrganizerDatabase>,
    /// Changes the server refused, newest last.
    pub rejected: Vec<RejectedChange>,
    /// The device's own settings (opaque), for backups.
    pub settings: serde_json::Value,
    /// Per database in a slow sync: the sequence number when its records
    /// were sent (edits up to it are merged by the slow sync).
    slow_upload: HashMap<OrganizerDatabase, u64>,
}

impl Organizer {
    pub fn new() -> Organizer {
        Organizer::default()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Adds a record the user made; returns its new UID.
    pub fn add(&mut self, record: Record) -> String {
        let uid = format!("bramble-{}", RefId::random());
        self.put_local(uid.clone(), record);
        uid
    }

    /// The user changes (or makes) the record `uid`.
    pub fn edit(&mut self, uid: &str, record: Record) {
        self.put_local(uid.to_owned(), record);
    }

    fn put_local(&mut self, uid: String, record: Record) {
        let seq = self.next_seq();
        let database = record.database();
        let rev = self.get(database, &uid).and_then(|r| r.rev.clone());
        self.records.entry(database).or_default().insert(
            uid,
            StoredRecord {
                record,
                rev,
                dirty: Some(seq),
            },
        );
    }

    /// The user deletes the record `uid`.
    pub fn delete(&mut self, database: OrganizerDatabase, uid: &str) {
        let seq = self.next_seq();
        if let Some(old) = self.records.entry(database).or_default().remove(uid) {
            self.deleted
                .entry(database)
                .or_default()
                .insert(uid.to_owned(), (old.rev, seq));
        }
    }

    pub fn get(&self, database: OrganizerDatabase, uid: &str) -> Option<&StoredRecord> {
        self.records.get(&database)?.get(uid)
    }

    /// Every record of a database, by UID.
    pub fn records(&self, database: OrganizerDatabase) -> Vec<(String, Record)> {
        self.records
            .get(&database)
            .map(|m| {
                m.iter()
                    .map(|(uid, r)| (uid.clone(), r.record.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The UID of the first record with this title (name, summary).
    pub fn find(&self, database: OrganizerDatabase, title: &str) -> Option<String> {
        self.records
            .get(&database)?
            .iter()
            .find(|(_, r)| r.record.title() == title)
            .map(|(uid, _)| uid.clone())
    }

    pub fn len(&self, database: OrganizerDatabase) -> usize {
        self.records.get(&database).map_or(0, BTreeMap::len)
    }

    pub fn is_empty(&self) -> bool {
        self.records.values().all(BTreeMap::is_empty)
    }

    /// The user's changes the server has not accepted yet, with the
    /// sequence number each was made at.
    pub fn pending(&self, database: OrganizerDatabase) -> Vec<(Change, u64)> {
        let mut out: Vec<(Change, u64)> = self
            .records
            .get(&database)
            .into_iter()
            .flatten()
            .filter_map(|(uid, r)| {
                Some((
                    Change::Upsert(Item {
                        uid: uid.clone(),
                        rev: r.rev.clone(),
                        record: r.record.clone(),
                    }),
                    r.dirty?,
                ))
            })
            .collect();
        out.extend(
            self.deleted
                .get(&database)
                .into_iter()
                .flatten()
                .map(|(uid, (rev, seq))| {
                    (
                        Change::Delete {
                            uid: uid.clone(),
                            rev: rev.clone(),
                        },
                        *seq,
                    )
                }),
        );
        out.sort_by_key(|(_, seq)| *seq);
        out
    }

    /// Whether the server said `database` is synchronized.
    pub fn enabled(&self, database: OrganizerDatabase) -> bool {
        self.config
            .as_ref()
            .is_some_and(|(on, dbs)| *on && dbs.iter().any(|d| d.database == database && d.enabled))
    }

    /// A change from the server. A record with an unaccepted edit is left
    /// alone: the edit's outcome settles it.
    pub fn apply(&mut self, database: OrganizerDatabase, change: Change) {
        let records = self.records.entry(database).or_default();
        let pending_delete = self
            .deleted
            .get(&database)
            .is_some_and(|d| d.contains_key(change.uid()));
        let dirty = records.get(change.uid()).is_some_and(|r| r.dirty.is_some()) || pending_delete;
        if dirty {
            return;
        }
        match change {
            Change::Upsert(item) => {
                records.insert(
                    item.uid,
                    StoredRecord {
                        record: item.record,
                        rev: item.rev,
                        dirty: None,
                    },
                );
            }
            Change::Delete { uid, .. } => {
                records.remove(&uid);
            }
            Change::Revision { uid, rev } => {
                if let Some(r) = records.get_mut(&uid) {
                    r.rev = Some(rev);
                }
            }
        }
    }

    /// A change of a slow sync: the server merged the device's records
    /// sent for it, so the change applies over edits made up to then.
    pub fn apply_slow(&mut self, database: OrganizerDatabase, change: Change) {
        let upload = self.slow_upload.get(&database).copied().unwrap_or(0);
        let records = self.records.entry(database).or_default();
        if records
            .get(change.uid())
            .and_then(|r| r.dirty)
            .is_some_and(|seq| seq > upload)
        {
            return;
        }
        match change {
            Change::Upsert(item) => {
                records.insert(
                    item.uid,
                    StoredRecord {
                        record: item.record,
                        rev: item.rev,
                        dirty: None,
                    },
                );
            }
            Change::Revision { uid, rev } => {
                if let Some(r) = records.get_mut(&uid) {
                    r.rev = Some(rev);
                    r.dirty = None;
                }
            }
            // Nothing is deleted during a slow sync.
            Change::Delete { .. } => {}
        }
    }

    /// The slow sync of `database` finished: what was sent for it is merged.
    fn finish_slow(&mut self, database: OrganizerDatabase) {
        let upload = self.slow_upload.remove(&database).unwrap_or(0);
        for r in self.records.entry(database).or_default().values_mut() {
            if r.dirty.is_some_and(|seq| seq <= upload) {
                r.dirty = None;
            }
        }
        // Deleted before the slow sync: the server's copy came back.
        if let Some(d) = self.deleted.get_mut(&database) {
            d.retain(|_, (_, seq)| *seq > upload);
        }
        self.in_sync.insert(database);
    }

    /// The outcome of one change sent at sequence `seq`.
    fn settle(&mut self, database: OrganizerDatabase, seq: u64, result: ItemResult) {
        let uid = result.uid;
        let same_edit = self
            .records
            .get(&database)
            .and_then(|m| m.get(&uid))
            .is_some_and(|r| r.dirty == Some(seq));
        let same_delete = self
            .deleted
            .get(&database)
            .and_then(|m| m.get(&uid))
            .is_some_and(|(_, s)| *s == seq);
        let records = self.records.entry(database).or_default();
        match result.outcome {
            Outcome::Retry { .. } => {}
            Outcome::Applied { rev }
            | Outcome::Conflict {
                kept: Side::Device,
                rev,
                ..
            } => {
                if same_edit {
                    if let Some(r) = records.get_mut(&uid) {
                        r.dirty = None;
                        r.rev = rev;
                    }
                }
                if same_delete {
                    if let Some(d) = self.deleted.get_mut(&database) {
                        d.remove(&uid);
                    }
                }
            }
            Outcome::Conflict {
                kept: Side::Server,
                item,
                ..
            } => {
                if same_edit || same_delete {
                    if let Some(d) = self.deleted.get_mut(&database) {
                        d.remove(&uid);
                    }
                    match item {
                        Some(item) => {
                            records.insert(
                                uid,
                                StoredRecord {
                                    record: item.record,
                                    rev: item.rev,
                                    dirty: None,
                                },
                            );
                        }
                        None => {
                            records.remove(&uid);
                        }
                    }
                }
            }
            Outcome::Rejected { code, message } => {
                if same_edit {
                    if let Some(r) = records.get_mut(&uid) {
                        r.dirty = None;
                    }
                }
                if same_delete {
                    if let Some(d) = self.deleted.get_mut(&database) {
                        d.remove(&uid);
                    }
                }
                self.rejected.push(RejectedChange {
                    database,
                    uid,
                    code,
                    message,
                });
            }
        }
    }

    /// Every record, for a backup.
    pub fn items(&self) -> Vec<Item> {
        self.records
            .values()
            .flat_map(|m| {
                m.iter().map(|(uid, r)| Item {
                    uid: uid.clone(),
                    rev: r.rev.clone(),
                    record: r.record.clone(),
                })
            })
            .collect()
    }

    /// Replaces everything with a backup (a replacement device).
    pub fn restore(&mut self, backup: Backup) {
        self.records.clear();
        self.deleted.clear();
        self.in_sync.clear();
        self.settings = backup.settings;
        for item in backup.items {
            let database = item.record.database();
            self.records.entry(database).or_default().insert(
                item.uid,
                StoredRecord {
                    record: item.record,
                    rev: None,
                    dirty: None,
                },
            );
        }
    }
}

/// How long to wait for the server's answers unless told otherwise.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(60);
/// A configuration request not answered within this time is sent again.
pub const CONFIG_RETRY: Duration = Duration::from_secs(3);

/// The device's synchronization client: an [`Organizer`] and the exchange
/// that keeps it in step with the server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SyncClient {
    organizer: Arc<Mutex<Organizer>>,
    batch: Arc<Mutex<u64>>,
    /// Sequence numbers of the changes in each batch sent, by batch.
    sent: Arc<Mutex<HashMap<u64, Vec<u64>>>>,
    pub patience: Duration,
    pub batch_size: usize,
}

impl Default for SyncClient {
    fn default() -> Self {
        SyncClient::new(Organizer::new())
    }
}

impl SyncClient {
    pub fn new(organizer: Organizer) -> SyncClient {
        SyncClient {
            organizer: Arc::new(Mutex::new(organizer)),
            batch: Arc::new(Mutex::new(0)),
            sent: Arc::new(Mutex::new(HashMap::new())),
            patience: DEFAULT_PATIENCE,
            batch_size: bramble_proto::sync::DEFAULT_BATCH,
        }
    }

    /// The organizer, to read or to edit as the user.
    pub fn organizer(&self) -> MutexGuard<'_, Organizer> {
        self.organizer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn send(&self, conn: &Connection, message: &Sync) -> Result<(), SyncClientError> {
        conn.send(ContentType::Sync, RefId::random(), &message.to_bytes())
            .await?;
        Ok(())
    }

    /// Applies one message from the server; returns what the device answers.
    fn handle(&self, message: &Sync) -> Vec<Sync> {
        let mut org = self.organizer();
        match message {
            Sync::Config {
                wireless_sync,
                databases,
            } => {
                org.config = Some((*wireless_sync, databases.clone()));
                Vec::new()
            }
            Sync::Changes {
                database,
                changes,
                slow,
            } => {
                for change in changes {
                    if *slow {
                        org.apply_slow(*database, change.clone());
                    } else {
                        org.apply(*database, change.clone());
                    }
                }
                Vec::new()
            }
            Sync::SlowSyncDone { database, .. } => {
                org.finish_slow(*database);
                vec![Sync::InSync {
                    database: *database,
                }]
            }
            Sync::Results {
                database,
                batch,
                results,
            } => {
                let seqs = self
                    .sent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(batch)
                    .unwrap_or_default();
                for (i, result) in results.iter().enumerate() {
                    let seq = seqs.get(i).copied().unwrap_or(0);
                    org.settle(*database, seq, result.clone());
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// Takes one message from the link and applies it (non-sync messages
    /// are skipped). `None` when nothing came within `wait`.
    pub async fn receive(
        &self,
        conn: &Connection,
        wait: Duration,
    ) -> Result<Option<Sync>, SyncClientError> {
        loop {
            let received = match tokio::time::timeout(wait, conn.recv()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Err(SyncClientError::Closed("a message")),
                Ok(Some(r)) => r,
            };
            if received.content_type != ContentType::Sync {
                continue;
            }
            let Ok(message) = Sync::from_bytes(&received.plaintext) else {
                continue;
            };
            for reply in self.handle(&message) {
                self.send(conn, &reply).await?;
            }
            return Ok(Some(message));
        }
    }

    /// Receives and applies messages until `wanted` picks one.
    pub async fn until<T>(
        &self,
        conn: &Connection,
        what: &'static str,
        mut wanted: impl FnMut(&Sync) -> Option<T>,
    ) -> Result<T, SyncClientError> {
        let deadline = tokio::time::Instant::now() + self.patience;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.receive(conn, left).await? {
                None => return Err(SyncClientError::Timeout(what, self.patience)),
                Some(m) => {
                    if let Some(t) = wanted(&m) {
                        return Ok(t);
                    }
                }
            }
        }
    }

    /// Seed step 13: asks for the configuration and waits for it.
    pub async fn request_config(
        &self,
        conn: &Connection,
    ) -> Result<Vec<DatabaseConfig>, SyncClientError> {
        // Asked again every few seconds: a request that reached a server
        // still starting its Synchronization Service is not answered.
        let deadline = tokio::time::Instant::now() + self.patience;
        loop {
            self.send(conn, &Sync::ConfigRequest).await?;
            let wait =
                CONFIG_RETRY.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            let asked = tokio::time::Instant::now();
            while asked.elapsed() < wait {
                let left = wait.saturating_sub(asked.elapsed());
                if let Some(Sync::Config { databases, .. }) = self.receive(conn, left).await? {
                    return Ok(databases);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SyncClientError::Timeout("configuration", self.patience));
            }
        }
    }

    /// Seed step 14: slow sync of every enabled database not yet in sync
    /// (all of them after a restore): send every record, apply the
    /// server's, answer `in_sync`. Returns the databases synchronized.
    pub async fn slow_sync(
        &self,
        conn: &Connection,
    ) -> Result<Vec<OrganizerDatabase>, SyncClientError> {
        let databases: Vec<OrganizerDatabase> = {
            let org = self.organizer();
            OrganizerDatabase::ALL
                .into_iter()
                .filter(|d| org.enabled(*d) && !org.in_sync.contains(d))
                .collect()
        };
        for database in &databases {
            let items: Vec<Item> = {
                let mut org = self.organizer();
                let seq = org.seq;
                org.slow_upload.insert(*database, seq);
                org.records
                    .get(database)
                    .into_iter()
                    .flatten()
                    .map(|(uid, r)| Item {
                        uid: uid.clone(),
                        rev: r.rev.clone(),
                        record: r.record.clone(),
                    })
                    .collect()
            };
            let size = self.batch_size.max(1);
            let mut chunks: Vec<Vec<Item>> = items.chunks(size).map(<[Item]>::to_vec).collect();
            if chunks.is_empty() {
                chunks.push(Vec::new());
            }
            let last = chunks.len() - 1;
            for (i, chunk) in chunks.into_iter().enumerate() {
                self.send(
                    conn,
                    &Sync::SlowSync {
                        database: *database,
                        items: chunk,
                        last: i == last,
                    },
                )
                .await?;
            }
        }
        let mut waiting: HashSet<OrganizerDatabase> = databases.iter().copied().collect();
        while !waiting.is_empty() {
            let failed = self
                .until(conn, "end of the slow sync", |m| match m {
                    Sync::SlowSyncDone { database, .. } => {
                        waiting.remove(database);
                        Some(None)
                    }
                    Sync::Failed { code, message } => Some(Some((code.clone(), message.clone()))),
                    _ => None,
                })
                .await?;
            if let Some((code, message)) = failed {
                return Err(SyncClientError::Failed { code, message });
            }
        }
        Ok(databases)
    }

    /// Sends the user's unaccepted changes of `database` as changelists and
    /// applies the outcomes. Returns them in order.
    pub async fn push(
        &self,
        conn: &Connection,
        database: OrganizerDatabase,
    ) -> Result<Vec<ItemResult>, SyncClientError> {
        let pending = self.organizer().pending(database);
        let mut outcomes = Vec::new();
        for chunk in pending.chunks(self.batch_size.max(1)) {
            let batch = {
                let mut b = self.batch.lock().unwrap_or_else(|p| p.into_inner());
                *b += 1;
                *b
            };
            self.sent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(batch, chunk.iter().map(|(_, seq)| *seq).collect());
            self.send(
                conn,
                &Sync::DeviceChanges {
                    database,
                    batch,
                    changes: chunk.iter().map(|(c, _)| c.clone()).collect(),
                },
            )
            .await?;
            let results = self
                .until(conn, "outcome of the changes", |m| match m {
                    Sync::Results {
                        batch: b, results, ..
                    } if *b == batch => Some(results.clone()),
                    _ => None,
                })
                .await?;
            outcomes.extend(results);
        }
        Ok(outcomes)
    }

    /// Wireless backup of the settings and every record.
    pub async fn backup(&self, conn: &Connection) -> Result<u32, SyncClientError> {
        let backup = {
            let org = self.organizer();
            Backup {
                settings: org.settings.clone(),
                items: org.items(),
            }
        };
        self.send(conn, &Sync::Backup(backup)).await?;
        self.until(conn, "confirmation of the backup", |m| match m {
            Sync::BackupStored { items, .. } => Some(*items),
            _ => None,
        })
        .await
    }

    /// Wireless restore (a replacement device during its activation):
    /// the user's latest backup replaces the organizer. Returns whether
    /// there was one.
    pub async fn restore(&self, conn: &Connection) -> Result<bool, SyncClientError> {
        self.send(conn, &Sync::RestoreRequest).await?;
        let backup = self
            .until(conn, "backup to restore", |m| match m {
                Sync::Restore { backup, .. } => Some(backup.clone()),
                _ => None,
            })
            .await?;
        let found = backup.is_some();
        if let Some(b) = backup {
            self.organizer().restore(b);
        }
        Ok(found)
    }

    /// Sends a diagnostics report.
    pub async fn report_diagnostics(
        &self,
        conn: &Connection,
        report: Diagnostics,
    ) -> Result<(), SyncClientError> {
        self.send(conn, &Sync::Diagnostics(report)).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bramble_proto::sync::{Contact, Memo};

    fn contact(name: &str) -> Record {
        Record::Contact(Contact {
            full_name: name.into(),
            ..Contact::default()
        })
    }

    #[test]
    fn edits_wait_for_their_outcome_and_server_changes_wait_for_edits() {
        let mut org = Organizer::new();
        let contacts = OrganizerDatabase::Contacts;
        org.apply(
            contacts,
            Change::Upsert(Item {
                uid: "a".into(),
                rev: Some("1".into()),
                record: contact("Ann"),
            }),
        );
        org.edit("a", contact("Anne"));
        let pending = org.pending(contacts);
        assert_eq!(pending.len(), 1);
        let seq = pending[0].1;
        // The server's change meanwhile is held back.
        org.apply(
            contacts,
            Change::Upsert(Item {
                uid: "a".into(),
                rev: Some("2".into()),
                record: contact("Annie"),
            }),
        );
        assert_eq!(org.get(contacts, "a").unwrap().record, contact("Anne"));
        // The server kept its version.
        org.settle(
            contacts,
            seq,
            ItemResult {
                uid: "a".into(),
                outcome: Outcome::Conflict {
                    kept: Side::Server,
                    item: Some(Item {
                        uid: "a".into(),
                        rev: Some("2".into()),
                        record: contact("Annie"),
                    }),
                    rev: Some("2".into()),
                },
            },
        );
        let a = org.get(contacts, "a").unwrap();
        assert_eq!((a.record.clone(), a.dirty), (contact("Annie"), None));
        assert!(org.pending(contacts).is_empty());

        let memo = org.add(Record::Memo(Memo {
            title: "m".into(),
            body: String::new(),
        }));
        org.delete(OrganizerDatabase::Memos, &memo);
        let pending = org.pending(OrganizerDatabase::Memos);
        assert!(matches!(pending[0].0, Change::Delete { .. }));
        org.settle(
            OrganizerDatabase::Memos,
            pending[0].1,
            ItemResult {
                uid: memo,
                outcome: Outcome::Retry {
                    message: "down".into(),
                },
            },
        );
        assert_eq!(
            org.pending(OrganizerDatabase::Memos).len(),
            1,
            "kept for later"
        );
    }
}
