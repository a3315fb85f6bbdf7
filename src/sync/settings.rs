//! `[sync]`: where the organization's organizer data lives (a CalDAV and
//! CardDAV server) and how often it is checked for changes.

use bramble_proto::sync::OrganizerDatabase;
use serde::{Deserialize, Serialize};

/// The Synchronization Service's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SyncSettings {
    /// Base URL of the CalDAV/CardDAV server (`https://dav.example.com`).
    /// Unset: wireless synchronization is off (backup, restore and
    /// diagnostics still work).
    pub url: Option<String>,
    /// The service account that may read and write every user's
    /// collections (as the Messaging Agent's service account reaches every
    /// mailbox).
    pub service_login: String,
    pub service_password: String,
    /// A file holding the service account's password instead (its
    /// owner's only).
    pub service_password_file: Option<std::path::PathBuf>,
    /// Each database's collection; `{login}` is the user's mailbox login.
    /// Several databases may share one calendar collection: each takes its
    /// own component (VEVENT, VTODO, VJOURNAL).
    pub contacts_path: String,
    pub calendar_path: String,
    pub tasks_path: String,
    pub memos_path: String,
    /// How often the server side is checked for changes.
    pub poll_secs: u64,
    /// Use WebDAV sync (RFC 6578) where the server offers it; false: compare
    /// the collection's CTag and its members' ETags (for a server whose
    /// sync tokens are unreliable).
    pub webdav_sync: bool,
    /// Appointments that ended more than this many days ago are not sent
    /// to devices (seed: 31 days back).
    pub calendar_past_days: u32,
    /// Appointments starting more than this many days ahead are not sent;
    /// unset: no limit.
    pub calendar_future_days: Option<u32>,
    /// Records per message to or from a device.
    pub batch_size: usize,
    /// Limit on one request to the organizer server.
    pub request_timeout_secs: u64,
    /// Requests open to the organizer server at the same time; more wait
    /// their turn (a burst of activations' slow syncs, for instance).
    pub max_connections: usize,
    /// The longest answer read from the organizer server; a longer one is
    /// cut off there and that synchronization fails with a message saying
    /// so (a collection listed whole must fit).
    pub max_response_bytes: u64,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            url: None,
            service_login: String::new(),
            service_password: String::new(),
            service_password_file: None,
            contacts_path: "/{login}/contacts/".to_owned(),
            calendar_path: "/{login}/calendar/".to_owned(),
            tasks_path: "/{login}/tasks/".to_owned(),
            memos_path: "/{login}/memos/".to_owned(),
            poll_secs: 60,
            webdav_sync: true,
            calendar_past_days: 31,
            calendar_future_days: None,
            batch_size: bramble_proto::sync::DEFAULT_BATCH,
            request_timeout_secs: 30,
            max_connections: super::dav::DEFAULT_CONNECTIONS,
            max_response_bytes: super::dav::DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

impl SyncSettings {
    /// The collection path of `database` for the user with `login`.
    pub fn collection(&self, database: OrganizerDatabase, login: &str) -> String {
        let template = match database {
            OrganizerDatabase::Contacts => &self.contacts_path,
            OrganizerDatabase::Calendar => &self.calendar_path,
            OrganizerDatabase::Tasks => &self.tasks_path,
            OrganizerDatabase::Memos => &self.memos_path,
        };
        let mut path = template.replace("{login}", &encode_segment(login));
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        if !path.ends_with('/') {
            path.push('/');
        }
        path
    }
}

/// Percent-encodes what may not appear in one path segment.
pub(crate) fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collections_per_user() {
        let s = SyncSettings::default();
        assert_eq!(
            s.collection(OrganizerDatabase::Contacts, "user1"),
            "/user1/contacts/"
        );
        assert_eq!(
            s.collection(OrganizerDatabase::Memos, "a b/c"),
            "/a%20b%2Fc/memos/"
        );
        let s = SyncSettings {
            calendar_path: "dav/{login}/cal".into(),
            ..SyncSettings::default()
        };
        assert_eq!(
            s.collection(OrganizerDatabase::Calendar, "u"),
            "/dav/u/cal/"
        );
    }
}
