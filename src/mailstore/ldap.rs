//! Reading the directory: connect, bind, paged searches (RFC 2696) and the
//! address lookup devices use. Nothing here writes to the database.

use std::collections::HashSet;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions};
use serde::Serialize;
use tokio::sync::watch;

use super::settings::{AttributeMap, DirectorySettings};
use super::{DirectoryError, Phase, Progress};

/// A user entry as read, mapped to Bramble's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectoryUser {
    pub guid: String,
    pub dn: String,
    pub login: String,
    pub display_name: String,
    pub email: String,
    pub disabled: bool,
    /// Group DNs named on the user (Active Directory `memberOf`).
    pub member_of: Vec<String>,
}

/// A group entry as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectoryGroup {
    pub guid: String,
    pub dn: String,
    pub name: String,
    /// Member DNs.
    pub members: Vec<String>,
}

/// Everything one sync read, before anything is written.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Users to create or update (all of them on a full sync, the changed
    /// ones on an incremental sync).
    pub users: Vec<DirectoryUser>,
    /// Groups to write, each with its whole membership: all of them on a
    /// full sync; on an incremental one those changed or naming a changed
    /// user.
    pub groups: Vec<DirectoryGroup>,
    /// Stable ids of the user entries read; on a complete read, a linked
    /// user whose id is missing was removed from the directory.
    pub present: HashSet<String>,
    /// Every user entry was read (a full sync), so absence means removal.
    pub complete: bool,
    /// Entries that could not be copied, with why.
    pub skipped: Vec<String>,
    /// The newest change seen, as stored ([`Watermark::stored`]).
    pub high_water_mark: Option<String>,
    pub entries_read: u64,
}

/// One result of an address lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressEntry {
    pub display_name: String,
    pub email: String,
    pub login: String,
}

/// At most this many address lookup results (as BES returns to devices).
pub const LOOKUP_LIMIT: usize = 20;

const MODIFY_TIMESTAMP: &str = "modifyTimestamp";

/// Connects and binds.
pub async fn connect(s: &DirectorySettings) -> Result<Ldap, DirectoryError> {
    let timeout = Duration::from_secs(s.timeout_secs.max(1));
    let mut conn_settings = LdapConnSettings::new()
        .set_conn_timeout(timeout)
        .set_starttls(s.starttls);
    if let Some(path) = &s.tls_ca_file {
        conn_settings = conn_settings.set_connector(tls_connector(s, path)?);
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(conn_settings, &s.url)
        .await
        .map_err(|e| match e {
            LdapError::UrlParsing { .. } | LdapError::UnknownScheme(_) => DirectoryError::BadUrl {
                directory: s.name.clone(),
                url: s.url.clone(),
                reason: e.to_string(),
            },
            LdapError::NativeTLS { .. } => tls_error(s, &e),
            // A failed handshake surfaces as I/O from inside the TLS layer.
            LdapError::Io { ref source } if is_tls(s, source) => tls_error(s, &e),
            other => unreachable_error(s, &other),
        })?;
    ldap3::drive!(conn);
    let bound = ldap
        .with_timeout(timeout)
        .simple_bind(&s.bind_dn, &s.bind_password)
        .await
        .map_err(|e| unreachable_error(s, &e))?;
    if bound.rc != 0 {
        return Err(DirectoryError::BindFailed {
            directory: s.name.clone(),
            bind_dn: s.bind_dn.clone(),
            reason: describe(&bound),
        });
    }
    Ok(ldap)
}

fn tls_connector(
    s: &DirectorySettings,
    path: &std::path::Path,
) -> Result<native_tls::TlsConnector, DirectoryError> {
    let failed = |reason: String| DirectoryError::TlsFailed {
        directory: s.name.clone(),
        url: s.url.clone(),
        reason,
    };
    let pem = std::fs::read(path)
        .map_err(|e| failed(format!("cannot read tls_ca_file {}: {e}", path.display())))?;
    let ca = native_tls::Certificate::from_pem(&pem).map_err(|e| {
        failed(format!(
            "tls_ca_file {} is not a PEM certificate: {e}",
            path.display()
        ))
    })?;
    native_tls::TlsConnector::builder()
        .add_root_certificate(ca)
        .build()
        .map_err(|e| failed(e.to_string()))
}

fn uses_tls(s: &DirectorySettings) -> bool {
    s.starttls || s.url.to_ascii_lowercase().starts_with("ldaps:")
}

fn is_tls(s: &DirectorySettings, e: &std::io::Error) -> bool {
    uses_tls(s)
        && e.kind() != std::io::ErrorKind::ConnectionRefused
        && e.kind() != std::io::ErrorKind::TimedOut
}

fn tls_error(s: &DirectorySettings, e: &LdapError) -> DirectoryError {
    DirectoryError::TlsFailed {
        directory: s.name.clone(),
        url: s.url.clone(),
        reason: e.to_string(),
    }
}

fn unreachable_error(s: &DirectorySettings, e: &LdapError) -> DirectoryError {
    DirectoryError::Unreachable {
        directory: s.name.clone(),
        url: s.url.clone(),
        reason: e.to_string(),
    }
}

fn describe(result: &ldap3::LdapResult) -> String {
    if result.text.is_empty() {
        format!("result code {}", result.rc)
    } else {
        format!("result code {}: {}", result.rc, result.text)
    }
}

/// Runs a paged subtree search under `base_dn`, handing each entry to
/// `on_entry`; more than `max_entries` is an error (the search is
/// abandoned). `setting` names the filter setting for error messages.
async fn search_paged(
    ldap: &mut Ldap,
    s: &DirectorySettings,
    setting: &'static str,
    filter: &str,
    attrs: Vec<String>,
    mut on_entry: impl FnMut(SearchEntry),
) -> Result<(), DirectoryError> {
    let failed = |e: LdapError| match e {
        LdapError::FilterParsing => DirectoryError::BadFilter {
            directory: s.name.clone(),
            setting,
            filter: filter.to_owned(),
        },
        LdapError::LdapResult { result } => result_error(s, setting, filter, &result),
        other => unreachable_error(s, &other),
    };
    let adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(s.page_size.max(1))),
    ];
    let mut stream = ldap
        .with_timeout(Duration::from_secs(s.timeout_secs.max(1)))
        .streaming_search_with(adapters, &s.base_dn, Scope::Subtree, filter, attrs)
        .await
        .map_err(failed)?;
    let mut count = 0usize;
    while let Some(entry) = stream.next().await.map_err(failed)? {
        count += 1;
        if count > s.max_entries {
            // Ask the server to stop, and stop reading.
            let id = stream.ldap_handle().last_id();
            let _ = stream.ldap_handle().abandon(id).await;
            let _ = stream.finish().await;
            return Err(DirectoryError::TooManyEntries {
                directory: s.name.clone(),
                setting,
                limit: s.max_entries,
            });
        }
        on_entry(SearchEntry::construct(entry));
    }
    let result = stream.finish().await;
    if result.rc != 0 {
        return Err(result_error(s, setting, filter, &result));
    }
    Ok(())
}

fn result_error(
    s: &DirectorySettings,
    setting: &'static str,
    filter: &str,
    result: &ldap3::LdapResult,
) -> DirectoryError {
    match result.rc {
        // filterError
        87 => DirectoryError::BadFilter {
            directory: s.name.clone(),
            setting,
            filter: filter.to_owned(),
        },
        // sizeLimitExceeded
        4 => DirectoryError::SizeLimit {
            directory: s.name.clone(),
        },
        // noSuchObject
        32 => DirectoryError::BadBaseDn {
            directory: s.name.clone(),
            base_dn: s.base_dn.clone(),
        },
        _ => DirectoryError::SearchFailed {
            directory: s.name.clone(),
            reason: describe(result),
        },
    }
}

/// How far a directory has been read: the newest value of the change
/// attribute (`entryCSN`, `uSNChanged`, `modifyTimestamp`) seen, kept per
/// directory as `attribute=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    pub attribute: String,
    pub value: String,
}

impl Watermark {
    /// The stored mark, if it was taken with `attribute`; a mark of another
    /// attribute (the mapping or the kind changed) is no mark, so the next
    /// sync is full. A bare value is a `modifyTimestamp` (marks stored
    /// before they named their attribute).
    pub fn for_attribute(stored: &str, attribute: &str) -> Option<Watermark> {
        let (attr, value) = stored.split_once('=').unwrap_or((MODIFY_TIMESTAMP, stored));
        (attr.eq_ignore_ascii_case(attribute) && !value.is_empty()).then(|| Watermark {
            attribute: attribute.to_owned(),
            value: value.to_owned(),
        })
    }

    /// What `directories.high_water_mark` holds.
    pub fn stored(&self) -> String {
        format!("{}={}", self.attribute, self.value)
    }

    /// The filter for entries changed since the mark. A number (uSNChanged)
    /// starts after it: the entry that had it was read already. Times and
    /// CSNs start at it, as others may share it.
    pub fn filter(&self) -> String {
        let value = match numeric(&self.value) {
            Some(n) => n.checked_add(1).unwrap_or(n).to_string(),
            None => self.value.clone(),
        };
        format!("({}>={})", self.attribute, ldap3::ldap_escape(&value))
    }
}

fn numeric(value: &str) -> Option<u128> {
    value
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| value.parse().ok())
        .flatten()
}

/// Whether `value` is newer than `than`: as numbers when both are, else as
/// text (generalized times and CSNs of one server sort as text).
fn newer(value: &str, than: &str) -> bool {
    match (numeric(value), numeric(than)) {
        (Some(a), Some(b)) => a > b,
        _ => value > than,
    }
}

/// Changed users named in a group filter at most; more read every group.
const MEMBER_CLAUSES: usize = 100;

/// The user filter of a read: every user, or those changed since `since`.
pub fn user_search_filter(s: &DirectorySettings, since: Option<&Watermark>) -> String {
    match since {
        Some(mark) => format!("(&{}{})", s.user_filter(), mark.filter()),
        None => s.user_filter(),
    }
}

/// The group filter of a read: every group on a full read; on an
/// incremental one the groups changed since `since` and those naming a
/// changed user (`changed_users`, their DNs) as a member, so a new or moved
/// user joins groups that listed it already. Past [`MEMBER_CLAUSES`]
/// changed users, every group.
pub fn group_search_filter(
    s: &DirectorySettings,
    since: Option<&Watermark>,
    changed_users: &[&str],
) -> String {
    let groups = s.group_filter();
    let Some(mark) = since else {
        return groups;
    };
    if changed_users.len() > MEMBER_CLAUSES {
        return groups;
    }
    let member = &s.attributes().group_member;
    let named: String = changed_users
        .iter()
        .map(|dn| format!("({member}={})", ldap3::ldap_escape(*dn)))
        .collect();
    format!("(&{groups}(|{}{named}))", mark.filter())
}

/// Reads users and groups: all of them (`since` = None) or only those
/// changed since a mark (then removals are not seen: that takes a full
/// read, which the MailStore Service schedules).
pub async fn read(
    s: &DirectorySettings,
    since: Option<&Watermark>,
    progress: &watch::Sender<Progress>,
) -> Result<Snapshot, DirectoryError> {
    progress.send_modify(|p| p.phase = Phase::Connecting);
    let started = std::time::Instant::now();
    let mut ldap = connect(s).await?;
    let map = &s.attributes();
    let mut snap = Snapshot::default();
    tracing::debug!(target: "bramble::mailstore", directory = %s.name,
        ms = started.elapsed().as_millis() as u64, "connected and bound");

    progress.send_modify(|p| p.phase = Phase::ReadingUsers);
    let mut users = Vec::new();
    let mut skipped = Vec::new();
    let mut present = HashSet::new();
    let mut high = since.map(|m| m.value.clone());
    let mut changed_dns = Vec::new();
    search_paged(
        &mut ldap,
        s,
        "user_filter",
        &user_search_filter(s, since),
        user_attributes(map),
        |entry| {
            progress.send_modify(|p| p.entries_read += 1);
            note_change(&mut high, &map.changed, &entry);
            if let Some(guid) = guid_of(map, &entry) {
                present.insert(guid);
            }
            if since.is_some() {
                changed_dns.push(entry.dn.clone());
            }
            match map_user(map, &entry) {
                Ok(user) => users.push(user),
                Err(why) => skipped.push(format!("{}: {why}", entry.dn)),
            }
        },
    )
    .await?;
    tracing::debug!(target: "bramble::mailstore", directory = %s.name, users = users.len(),
        ms = started.elapsed().as_millis() as u64, "users read");
    progress.send_modify(|p| p.phase = Phase::ReadingGroups);
    let mut groups = Vec::new();
    let changed: Vec<&str> = changed_dns.iter().map(String::as_str).collect();
    search_paged(
        &mut ldap,
        s,
        "group_filter",
        &group_search_filter(s, since, &changed),
        vec![
            map.guid.to_owned(),
            map.group_name.to_owned(),
            map.group_member.to_owned(),
            map.changed.to_owned(),
        ],
        |entry| {
            progress.send_modify(|p| p.entries_read += 1);
            note_change(&mut high, &map.changed, &entry);
            match guid_of(map, &entry) {
                Some(guid) => groups.push(DirectoryGroup {
                    guid,
                    name: first(&entry, &[map.group_name.as_str()])
                        .unwrap_or_else(|| entry.dn.clone()),
                    members: all(&entry, &map.group_member),
                    dn: entry.dn,
                }),
                None => skipped.push(format!("{}: no {}", entry.dn, map.guid)),
            }
        },
    )
    .await?;
    tracing::debug!(target: "bramble::mailstore", directory = %s.name, groups = groups.len(),
        ms = started.elapsed().as_millis() as u64, "groups read");
    let _ = ldap.unbind().await;

    if since.is_none() && high.is_none() && !users.is_empty() {
        tracing::warn!(target: "bramble::mailstore", directory = %s.name,
            "the entries carry no {}, so every sync of directory {} reads everything; set `changed` in [directories.attributes] (e.g. \"modifyTimestamp\")",
            map.changed, s.name);
    }
    snap.entries_read = progress.borrow().entries_read;
    snap.users = users;
    snap.groups = groups;
    snap.present = present;
    snap.complete = since.is_none();
    snap.skipped = skipped;
    snap.high_water_mark = high.map(|value| {
        Watermark {
            attribute: map.changed.clone(),
            value,
        }
        .stored()
    });
    Ok(snap)
}

fn user_attributes(map: &AttributeMap) -> Vec<String> {
    let mut attrs = vec![
        map.guid.to_owned(),
        map.login.to_owned(),
        map.changed.to_owned(),
    ];
    attrs.extend(map.display_name.iter().cloned());
    attrs.extend(map.email.iter().cloned());
    attrs.extend(map.member_of.clone());
    attrs.extend(map.disabled.as_ref().map(|(a, _)| a.clone()));
    attrs
}

fn note_change(high: &mut Option<String>, attribute: &str, entry: &SearchEntry) {
    if let Some(value) = first(entry, &[attribute]) {
        if high.as_deref().is_none_or(|h| newer(&value, h)) {
            *high = Some(value);
        }
    }
}

/// The first value of the first attribute present (names compare
/// case-insensitively, as LDAP attribute names do).
fn first<S: AsRef<str>>(entry: &SearchEntry, names: &[S]) -> Option<String> {
    names.iter().find_map(|name| {
        entry
            .attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_ref()))
            .and_then(|(_, v)| v.first())
            .filter(|v| !v.is_empty())
            .cloned()
    })
}

fn all(entry: &SearchEntry, name: &str) -> Vec<String> {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// The entry's stable id as text: entryUUID as is (lower case), a binary
/// objectGUID in its usual GUID spelling.
pub fn guid_of(map: &AttributeMap, entry: &SearchEntry) -> Option<String> {
    if map.guid_binary {
        let raw = entry
            .bin_attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&map.guid))
            .and_then(|(_, v)| v.first().cloned())
            // A GUID whose bytes happen to be UTF-8 arrives as text.
            .or_else(|| first(entry, &[map.guid.as_str()]).map(String::into_bytes))?;
        format_guid(&raw)
    } else {
        first(entry, &[map.guid.as_str()]).map(|g| g.to_ascii_lowercase())
    }
}

/// Active Directory's objectGUID: 16 bytes, the first three fields little
/// endian: `{33221100-5544-7766-8899-aabbccddeeff}` without braces.
pub fn format_guid(raw: &[u8]) -> Option<String> {
    let b: &[u8; 16] = raw.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// Maps a user entry; `Err` says why it cannot be copied.
pub fn map_user(map: &AttributeMap, entry: &SearchEntry) -> Result<DirectoryUser, String> {
    let guid = guid_of(map, entry).ok_or_else(|| format!("no {}", map.guid))?;
    let email = first(entry, &map.email)
        .ok_or_else(|| format!("no e-mail address ({})", map.email.join(", ")))?;
    let login = first(entry, &[map.login.as_str()])
        .unwrap_or_else(|| email.split('@').next().unwrap_or(email.as_str()).to_owned());
    let display_name = first(entry, &map.display_name).unwrap_or_else(|| login.clone());
    let disabled = map.disabled.as_ref().is_some_and(|(attr, mask)| {
        first(entry, &[attr.as_str()])
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|flags| flags & *mask != 0)
    });
    let member_of = map
        .member_of
        .as_deref()
        .map(|a| all(entry, a))
        .unwrap_or_default();
    Ok(DirectoryUser {
        guid,
        dn: entry.dn.clone(),
        login,
        display_name,
        email,
        disabled,
        member_of,
    })
}

/// Address lookup for devices: users whose name, e-mail or login contains
/// `query`, asked of the directory itself; at most [`LOOKUP_LIMIT`].
pub async fn lookup(
    s: &DirectorySettings,
    query: &str,
) -> Result<Vec<AddressEntry>, DirectoryError> {
    Ok(search_addresses(s, query, LOOKUP_LIMIT).await?.entries)
}

/// What an address search found in one directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddressesFound {
    /// By display name, at most the limit asked for.
    pub entries: Vec<AddressEntry>,
    /// More entries matched than were kept.
    pub truncated: bool,
}

/// [`lookup`] with its own limit, saying whether more entries matched: the
/// directory is asked for one entry more than `limit` (and its size limit
/// being reached counts as more).
pub async fn search_addresses(
    s: &DirectorySettings,
    query: &str,
    limit: usize,
) -> Result<AddressesFound, DirectoryError> {
    let map = &s.attributes();
    let mut ldap = connect(s).await?;
    let needle = ldap3::ldap_escape(query.trim());
    let mut any = String::new();
    for attr in map
        .display_name
        .iter()
        .chain(map.email.iter())
        .chain(std::iter::once(&map.login))
    {
        any.push_str(&format!("({attr}=*{needle}*)"));
    }
    let filter = format!("(&{}(|{any}))", s.user_filter());
    let asked = i32::try_from(limit.saturating_add(1)).unwrap_or(i32::MAX);
    let result = ldap
        .with_search_options(SearchOptions::new().sizelimit(asked))
        .with_timeout(Duration::from_secs(s.timeout_secs.max(1)))
        .search(&s.base_dn, Scope::Subtree, &filter, user_attributes(map))
        .await
        .map_err(|e| match e {
            LdapError::FilterParsing => DirectoryError::BadFilter {
                directory: s.name.clone(),
                setting: "user_filter",
                filter: filter.clone(),
            },
            other => unreachable_error(s, &other),
        })?;
    let ldap3::SearchResult(entries, status) = result;
    // 4 = sizeLimitExceeded: more matched than the entries returned.
    if status.rc != 0 && status.rc != 4 {
        return Err(result_error(s, "user_filter", &filter, &status));
    }
    let _ = ldap.unbind().await;
    let mut found: Vec<AddressEntry> = entries
        .into_iter()
        .map(SearchEntry::construct)
        .filter_map(|e| map_user(map, &e).ok())
        .filter(|u| !u.disabled)
        .map(|u| AddressEntry {
            display_name: u.display_name,
            email: u.email,
            login: u.login,
        })
        .collect();
    found.sort_by(|a, b| a.display_name.cmp(&b.display_name));
    let truncated = status.rc == 4 || found.len() > limit;
    found.truncate(limit);
    Ok(AddressesFound {
        entries: found,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use super::*;
    use crate::mailstore::settings::AttributeMap;

    fn entry(dn: &str, attrs: &[(&str, &[&str])], bin: &[(&str, Vec<u8>)]) -> SearchEntry {
        SearchEntry {
            dn: dn.to_owned(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            bin_attrs: bin
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.clone()]))
                .collect::<HashMap<_, _>>(),
        }
    }

    #[test]
    fn openldap_mapping() {
        let e = entry(
            "uid=alice,ou=people,dc=example,dc=com",
            &[
                ("entryUUID", &["0F1E2D3C-0000-1111-2222-333344445555"]),
                ("uid", &["alice"]),
                ("cn", &["Alice Example"]),
                ("mail", &["alice@example.com"]),
            ],
            &[],
        );
        let u = map_user(&AttributeMap::openldap(), &e).unwrap();
        assert_eq!(u.guid, "0f1e2d3c-0000-1111-2222-333344445555");
        assert_eq!(u.login, "alice");
        assert_eq!(u.display_name, "Alice Example");
        assert_eq!(u.email, "alice@example.com");
        assert!(!u.disabled);
        let no_mail = entry("uid=x,dc=example,dc=com", &[("entryUUID", &["1"])], &[]);
        assert!(map_user(&AttributeMap::openldap(), &no_mail)
            .unwrap_err()
            .contains("e-mail"));
    }

    #[test]
    fn active_directory_mapping() {
        let guid: Vec<u8> = (0u8..16).collect();
        let e = entry(
            "CN=Bob Example,OU=Staff,DC=corp,DC=example",
            &[
                ("sAMAccountName", &["bob"]),
                ("displayName", &["Bob Example"]),
                ("userPrincipalName", &["bob@corp.example"]),
                ("userAccountControl", &["514"]),
                ("memberOf", &["CN=Sales,OU=Groups,DC=corp,DC=example"]),
            ],
            &[("objectGUID", guid)],
        );
        let u = map_user(&AttributeMap::active_directory(), &e).unwrap();
        assert_eq!(u.guid, "03020100-0504-0706-0809-0a0b0c0d0e0f");
        assert_eq!(u.login, "bob");
        assert_eq!(
            u.email, "bob@corp.example",
            "userPrincipalName when no mail"
        );
        assert!(u.disabled, "514 = 512 | ACCOUNTDISABLE (2)");
        assert_eq!(u.member_of.len(), 1);
        let mut enabled = e.clone();
        enabled
            .attrs
            .insert("userAccountControl".into(), vec!["512".into()]);
        enabled
            .attrs
            .insert("mail".into(), vec!["b.example@corp.example".into()]);
        let u = map_user(&AttributeMap::active_directory(), &enabled).unwrap();
        assert!(!u.disabled);
        assert_eq!(u.email, "b.example@corp.example", "mail wins over the UPN");
        assert!(format_guid(&[1, 2, 3]).is_none());
    }

    #[test]
    fn active_directory_reads_changes_by_usn() {
        let s = DirectorySettings {
            kind: crate::mailstore::DirectoryKind::ActiveDirectory,
            ..DirectorySettings::default()
        };
        let map = s.attributes();
        assert_eq!(map.changed, "uSNChanged");
        let mark = Watermark::for_attribute("uSNChanged=12345", &map.changed).unwrap();
        assert_eq!(mark.value, "12345");
        assert_eq!(
            user_search_filter(&s, Some(&mark)),
            "(&(&(objectCategory=person)(objectClass=user))(uSNChanged>=12346))",
            "the entry with the mark itself was read already"
        );
        assert_eq!(
            user_search_filter(&s, None),
            "(&(objectCategory=person)(objectClass=user))"
        );
        // Groups: changed ones, and those naming a changed user (DN escaped).
        assert_eq!(
            group_search_filter(&s, Some(&mark), &["CN=Smith\\, John,OU=Staff,DC=corp,DC=example"]),
            "(&(objectClass=group)(|(uSNChanged>=12346)(member=CN=Smith\\5c, John,OU=Staff,DC=corp,DC=example)))"
        );
        assert_eq!(group_search_filter(&s, None, &[]), "(objectClass=group)");
        let many: Vec<String> = (0..=MEMBER_CLAUSES)
            .map(|i| format!("CN=u{i},DC=corp"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            group_search_filter(&s, Some(&mark), &many),
            "(objectClass=group)",
            "too many changed users: every group"
        );

        // A mark of another attribute (the kind changed, or a mark kept
        // from before marks named their attribute): no mark, a full sync.
        assert!(Watermark::for_attribute(
            "entryCSN=20261127040838.841778Z#000000#000#000000",
            "uSNChanged"
        )
        .is_none());
        assert!(Watermark::for_attribute("20261127040838Z", "uSNChanged").is_none());
        assert_eq!(
            Watermark::for_attribute("20261127040838Z", "modifyTimestamp")
                .unwrap()
                .filter(),
            "(modifyTimestamp>=20261127040838Z)"
        );
        assert_eq!(mark.stored(), "uSNChanged=12345");
    }

    #[test]
    fn openldap_reads_changes_by_csn() {
        let s = DirectorySettings::default();
        let csn = "20261127040838.841778Z#000000#000#000000";
        let mark =
            Watermark::for_attribute(&format!("entryCSN={csn}"), &s.attributes().changed).unwrap();
        assert_eq!(
            user_search_filter(&s, Some(&mark)),
            format!("(&(objectClass=inetOrgPerson)(entryCSN>={csn}))")
        );
        let mut other = s.clone();
        other.attributes.changed = Some("modifyTimestamp".into());
        assert_eq!(other.attributes().changed, "modifyTimestamp");
    }

    #[test]
    fn the_newest_change_wins() {
        // Numbers as numbers: 999 < 1000 although "999" > "1000" as text.
        let mut high = Some("999".to_owned());
        let e = entry("cn=x", &[("uSNChanged", &["1000"])], &[]);
        note_change(&mut high, "uSNChanged", &e);
        assert_eq!(high.as_deref(), Some("1000"));
        let older = entry("cn=y", &[("uSNChanged", &["998"])], &[]);
        note_change(&mut high, "usnchanged", &older);
        assert_eq!(high.as_deref(), Some("1000"));
        // CSNs as text.
        let mut high = Some("20261127040838.841778Z#000000#000#000000".to_owned());
        let e = entry(
            "cn=x",
            &[("entryCSN", &["20261127040839.000001Z#000000#000#000000"])],
            &[],
        );
        note_change(&mut high, "entryCSN", &e);
        assert_eq!(
            high.as_deref(),
            Some("20261127040839.000001Z#000000#000#000000")
        );
    }
}
