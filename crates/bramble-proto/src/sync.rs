//! The Synchronization Service's messages, inside `Sync` envelopes.
//!
//! The plaintext of a [`ContentType::Sync`](crate::ContentType::Sync)
//! envelope is one [`Sync`] value as JSON (the envelope compresses it);
//! every message has a fresh RefID. Organizer data travels as typed
//! [`Record`]s (contact, appointment, task, memo) named by a `uid` that is
//! the same on both sides — the vCard or iCalendar UID on the organizer
//! server — so a record renamed or moved on the server is still the same
//! record on the device, never a second copy.
//!
//! Seed, activation steps 13–15: the device asks for the configuration
//! first; the server answers which organizer databases are synchronized,
//! in which direction and who wins a conflict; then the slow sync merges
//! both sides and deletes nothing; it is complete when every enabled
//! database is in sync.
//!
//! | From   | Message            | What it does                                   |
//! |--------|--------------------|------------------------------------------------|
//! | device | `config_request`   | asks for the synchronization configuration     |
//! | server | `config`           | the configuration (also pushed when it changes)|
//! | device | `slow_sync`        | every record of one database, in batches       |
//! | server | `changes`          | records for the device (slow or incremental)   |
//! | server | `slow_sync_done`   | the merge of one database is finished          |
//! | device | `in_sync`          | the device applied every change of that merge  |
//! | device | `device_changes`   | a batch of edits and deletions made on the device |
//! | server | `results`          | one outcome per item of a `device_changes` batch |
//! | device | `backup`           | settings and organizer data to keep            |
//! | server | `backup_stored`    | the backup is in the Configuration Database    |
//! | device | `restore_request`  | asks for the user's latest backup              |
//! | server | `restore`          | that backup (or none)                          |
//! | device | `diagnostics`      | model, OS, battery, signal, memory, applications |
//! | server | `failed`           | a request could not be served, in words        |
//!
//! Revisions: every record the server sends carries `rev`, the server's
//! version of it. The device sends the `rev` it last had with each edit or
//! deletion; a different `rev` on the server means both sides changed the
//! record, and the configured conflict resolution decides. The server is
//! the arbiter: a result may carry the record the device must now hold.

use serde::{Deserialize, Serialize};

/// Records per `changes`, `slow_sync` or `device_changes` message.
pub const DEFAULT_BATCH: usize = 200;

/// One of the device's organizer databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrganizerDatabase {
    /// Address book entries (vCard on the server).
    Contacts,
    /// Appointments (VEVENT).
    Calendar,
    /// Tasks (VTODO).
    Tasks,
    /// Memos (VJOURNAL).
    Memos,
}

impl OrganizerDatabase {
    pub const ALL: [OrganizerDatabase; 4] = [
        OrganizerDatabase::Contacts,
        OrganizerDatabase::Calendar,
        OrganizerDatabase::Tasks,
        OrganizerDatabase::Memos,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrganizerDatabase::Contacts => "contacts",
            OrganizerDatabase::Calendar => "calendar",
            OrganizerDatabase::Tasks => "tasks",
            OrganizerDatabase::Memos => "memos",
        }
    }

    pub fn parse(text: &str) -> Option<OrganizerDatabase> {
        OrganizerDatabase::ALL
            .into_iter()
            .find(|d| d.as_str() == text)
    }
}

impl std::fmt::Display for OrganizerDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which way changes flow (seed: "unidirectional or bidirectional").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncDirection {
    ServerToDevice,
    DeviceToServer,
    Bidirectional,
}

impl SyncDirection {
    pub fn to_device(self) -> bool {
        matches!(
            self,
            SyncDirection::ServerToDevice | SyncDirection::Bidirectional
        )
    }
    pub fn to_server(self) -> bool {
        matches!(
            self,
            SyncDirection::DeviceToServer | SyncDirection::Bidirectional
        )
    }
}

/// Who wins when both sides changed the same record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictResolution {
    ServerWins,
    DeviceWins,
}

/// How one database is synchronized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseConfig {
    pub database: OrganizerDatabase,
    pub enabled: bool,
    pub direction: SyncDirection,
    pub conflict: ConflictResolution,
}

/// A telephone number and its kind (`work`, `home`, `cell`, `fax`, or empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Phone {
    #[serde(default)]
    pub kind: String,
    pub number: String,
}

/// An address book entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Contact {
    /// The name as shown.
    pub full_name: String,
    #[serde(default)]
    pub family_name: String,
    #[serde(default)]
    pub given_name: String,
    #[serde(default)]
    pub organization: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub emails: Vec<String>,
    #[serde(default)]
    pub phones: Vec<Phone>,
    /// `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birthday: Option<String>,
    #[serde(default)]
    pub note: String,
}

/// An appointment. Times are iCalendar values (`20261127T090000Z`,
/// `20261127T090000` with `tzid`, or `20261127` for a whole day).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Event {
    pub summary: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub description: String,
    pub start: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tzid: Option<String>,
    #[serde(default)]
    pub all_day: bool,
    /// An iCalendar RRULE, as written (`FREQ=WEEKLY;BYDAY=MO`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<String>,
}

/// A task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Task {
    pub summary: String,
    #[serde(default)]
    pub description: String,
    /// An iCalendar date or date-time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    #[serde(default)]
    pub completed: bool,
    /// 1 (highest) … 9 (lowest); none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
}

/// A memo.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Memo {
    pub title: String,
    #[serde(default)]
    pub body: String,
}

/// One organizer record as the device stores it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Contact(Contact),
    Event(Event),
    Task(Task),
    Memo(Memo),
}

impl Record {
    /// The database this record belongs in.
    pub fn database(&self) -> OrganizerDatabase {
        match self {
            Record::Contact(_) => OrganizerDatabase::Contacts,
            Record::Event(_) => OrganizerDatabase::Calendar,
            Record::Task(_) => OrganizerDatabase::Tasks,
            Record::Memo(_) => OrganizerDatabase::Memos,
        }
    }

    /// A short name for logs and error reports.
    pub fn title(&self) -> &str {
        match self {
            Record::Contact(c) => &c.full_name,
            Record::Event(e) => &e.summary,
            Record::Task(t) => &t.summary,
            Record::Memo(m) => &m.title,
        }
    }
}

/// A record with its identity and revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub uid: String,
    /// The server's revision the holder last saw (none for a record the
    /// device created and the server has not seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
    pub record: Record,
}

/// One change to one record.
// Wire values, built and read once; boxing the record would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Create or replace.
    Upsert(Item),
    /// Remove; `rev` as in [`Item::rev`].
    Delete {
        uid: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rev: Option<String>,
    },
    /// From the server only: the device's record is current; its server
    /// revision is now `rev` (after a slow sync found both sides equal, or
    /// wrote the device's record to the server).
    Revision { uid: String, rev: String },
}

impl Change {
    pub fn uid(&self) -> &str {
        match self {
            Change::Upsert(item) => &item.uid,
            Change::Delete { uid, .. } | Change::Revision { uid, .. } => uid,
        }
    }
}

/// Which side's version was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Server,
    Device,
}

/// What became of one change the device sent.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Written on the server; the record's revision is now `rev` (none
    /// after a deletion).
    Applied {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rev: Option<String>,
    },
    /// Both sides had changed the record; `kept` won. When the server's
    /// version won, `item` is what the device must hold now (none: the
    /// record is deleted).
    Conflict {
        kept: Side,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<Item>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rev: Option<String>,
    },
    /// Refused for good (the server does not accept this record, or the
    /// database does not take changes from devices); `message` says why.
    Rejected { code: String, message: String },
    /// Not done now (the organizer server cannot be reached); send again later.
    Retry { message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemResult {
    pub uid: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// A wireless backup: the device's settings (opaque to the server) and its
/// organizer records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Backup {
    #[serde(default)]
    pub settings: serde_json::Value,
    #[serde(default)]
    pub items: Vec<Item>,
}

/// A diagnostics report (seed: "retrieval of BlackBerry smartphone
/// diagnostics information").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Diagnostics {
    pub model: String,
    pub os_version: String,
    /// Percent.
    pub battery_percent: u8,
    /// dBm.
    pub signal_dbm: i16,
    pub free_memory_bytes: u64,
    #[serde(default)]
    pub applications: Vec<Application>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Application {
    pub name: String,
    pub version: String,
}

/// One Synchronization Service message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Sync {
    ConfigRequest,
    Config {
        /// Whether wireless synchronization is turned on at all.
        wireless_sync: bool,
        databases: Vec<DatabaseConfig>,
    },
    /// A batch of every record the device holds in `database`; `last` on
    /// the final batch starts the merge.
    SlowSync {
        database: OrganizerDatabase,
        items: Vec<Item>,
        last: bool,
    },
    Changes {
        database: OrganizerDatabase,
        changes: Vec<Change>,
        /// Part of a slow sync (nothing is deleted then).
        slow: bool,
    },
    SlowSyncDone {
        database: OrganizerDatabase,
        /// Records the server sent in this slow sync.
        sent: u32,
        /// Records of the server that could not be read and were skipped.
        skipped: u32,
    },
    InSync {
        database: OrganizerDatabase,
    },
    DeviceChanges {
        database: OrganizerDatabase,
        /// Chosen by the device; repeated in the `results`.
        batch: u64,
        changes: Vec<Change>,
    },
    Results {
        database: OrganizerDatabase,
        batch: u64,
        results: Vec<ItemResult>,
    },
    Backup(Backup),
    BackupStored {
        /// RFC 3339.
        taken_at: String,
        items: u32,
    },
    RestoreRequest,
    Restore {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backup: Option<Backup>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        taken_at: Option<String>,
    },
    Diagnostics(Diagnostics),
    Failed {
        code: String,
        message: String,
    },
}

/// Why bytes are not a [`Sync`] message.
#[derive(Debug, thiserror::Error)]
#[error("not a synchronization message: {0}")]
pub struct SyncDecodeError(#[from] serde_json::Error);

impl Sync {
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing these plain data types cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Sync, SyncDecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let contact = Record::Contact(Contact {
            full_name: "Ada Lovelace".into(),
            emails: vec!["ada@example.com".into()],
            phones: vec![Phone {
                kind: "cell".into(),
                number: "+44 1".into(),
            }],
            ..Contact::default()
        });
        let messages = [
            Sync::ConfigRequest,
            Sync::DeviceChanges {
                database: OrganizerDatabase::Contacts,
                batch: 7,
                changes: vec![
                    Change::Upsert(Item {
                        uid: "a".into(),
                        rev: Some("\"1\"".into()),
                        record: contact.clone(),
                    }),
                    Change::Delete {
                        uid: "b".into(),
                        rev: None,
                    },
                ],
            },
            Sync::Results {
                database: OrganizerDatabase::Contacts,
                batch: 7,
                results: vec![ItemResult {
                    uid: "a".into(),
                    outcome: Outcome::Rejected {
                        code: "SYNC_ITEM_REJECTED".into(),
                        message: "no".into(),
                    },
                }],
            },
        ];
        for m in messages {
            assert_eq!(Sync::from_bytes(&m.to_bytes()).unwrap(), m);
        }
        let text = String::from_utf8(Sync::ConfigRequest.to_bytes()).unwrap();
        assert_eq!(text, r#"{"type":"config_request"}"#);
        assert_eq!(contact.database(), OrganizerDatabase::Contacts);
        assert!(Sync::from_bytes(b"{\"type\":\"nope\"}").is_err());
    }

    #[test]
    fn database_names() {
        for d in OrganizerDatabase::ALL {
            assert_eq!(OrganizerDatabase::parse(d.as_str()), Some(d));
        }
        assert!(SyncDirection::Bidirectional.to_device());
        assert!(!SyncDirection::DeviceToServer.to_device());
        assert!(!SyncDirection::ServerToDevice.to_server());
    }
}
