//! `[[directories]]`: one entry per directory the MailStore Service reads.

use serde::{Deserialize, Serialize};

/// Which kind of directory server, choosing the attribute mapping and the
/// default filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryKind {
    /// OpenLDAP and other RFC servers: inetOrgPerson users, groupOfNames
    /// groups, `entryUUID` as the stable id.
    #[default]
    Openldap,
    /// Microsoft Active Directory: `sAMAccountName`, `userPrincipalName`,
    /// `objectGUID`, disabled by `userAccountControl` bit 2.
    ActiveDirectory,
}

/// One directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DirectorySettings {
    /// A name for this directory, used in the database, logs and messages.
    pub name: String,
    /// `ldap://host:389` (`ldaps://host:636` for TLS).
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    pub starttls: bool,
    /// PEM file of the certificate authority that signed the server's
    /// certificate, for a private CA; unset: the system's authorities.
    pub tls_ca_file: Option<std::path::PathBuf>,
    pub kind: DirectoryKind,
    /// Changes to the kind's attribute mapping (`[directories.attributes]`).
    pub attributes: AttributeOverrides,
    /// DN to bind as; empty binds anonymously.
    pub bind_dn: String,
    pub bind_password: String,
    /// A file holding the bind password instead (its owner's only).
    pub bind_password_file: Option<std::path::PathBuf>,
    /// Where users and groups are searched (the whole subtree).
    pub base_dn: String,
    /// Filter for users; unset: the kind's default.
    pub user_filter: Option<String>,
    /// Filter for groups; unset: the kind's default.
    pub group_filter: Option<String>,
    /// Entries per page of a paged search (RFC 2696); keep it below the
    /// server's size limit.
    pub page_size: i32,
    /// How often the MailStore Service syncs, in seconds.
    pub sync_interval_secs: u64,
    /// How often a scheduled sync is a full one, in seconds. Incremental
    /// syncs read only changed entries; entries removed from the directory
    /// are noticed by full syncs (this one, one at start-up, `--full`).
    pub full_sync_interval_secs: u64,
    /// How long to wait for the server to connect or answer, in seconds.
    pub timeout_secs: u64,
    /// Most entries one search may return (users, or groups): a sync that
    /// would read more stops there and changes nothing, so a filter that
    /// matches far more than meant cannot fill the server's memory.
    pub max_entries: usize,
}

impl Default for DirectorySettings {
    fn default() -> Self {
        Self {
            name: "directory".to_owned(),
            url: "ldap://127.0.0.1:389".to_owned(),
            starttls: false,
            tls_ca_file: None,
            kind: DirectoryKind::Openldap,
            attributes: AttributeOverrides::default(),
            bind_dn: String::new(),
            bind_password: String::new(),
            bind_password_file: None,
            base_dn: String::new(),
            user_filter: None,
            group_filter: None,
            page_size: 500,
            sync_interval_secs: 3600,
            full_sync_interval_secs: 86_400,
            timeout_secs: 30,
            max_entries: 200_000,
        }
    }
}

/// Which attributes hold what: the kind's preset with the
/// `[directories.attributes]` overrides applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeMap {
    /// The stable id of an entry; survives renames and moves.
    pub guid: String,
    /// Whether `guid` holds binary (objectGUID) rather than text.
    pub guid_binary: bool,
    pub login: String,
    /// Tried in order; the first present names the user.
    pub display_name: Vec<String>,
    /// Tried in order; the first present is the user's e-mail.
    pub email: Vec<String>,
    /// Attribute on a user naming its groups (AD), if any.
    pub member_of: Option<String>,
    /// An integer attribute and a bit mask: any bit set = disabled.
    pub disabled: Option<(String, u64)>,
    pub group_name: String,
    pub group_member: String,
    pub user_filter: String,
    pub group_filter: String,
    /// The attribute incremental syncs compare against the newest value
    /// seen: `entryCSN` (OpenLDAP: microseconds, ordered), `uSNChanged`
    /// (Active Directory: a number per domain controller) or
    /// `modifyTimestamp` (any RFC server: whole seconds). Values made only
    /// of digits compare as numbers, others as text.
    pub changed: String,
}

/// Per-directory changes to the kind's attribute mapping; unset keeps the
/// preset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttributeOverrides {
    pub guid: Option<String>,
    pub guid_binary: Option<bool>,
    pub login: Option<String>,
    pub display_name: Option<Vec<String>>,
    pub email: Option<Vec<String>>,
    pub member_of: Option<String>,
    pub group_name: Option<String>,
    pub group_member: Option<String>,
    pub changed: Option<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

impl AttributeMap {
    /// OpenLDAP: inetOrgPerson and groupOfNames.
    pub fn openldap() -> AttributeMap {
        AttributeMap {
            guid: "entryUUID".into(),
            guid_binary: false,
            login: "uid".into(),
            display_name: strings(&["displayName", "cn"]),
            email: strings(&["mail"]),
            member_of: None,
            disabled: None,
            group_name: "cn".into(),
            group_member: "member".into(),
            user_filter: "(objectClass=inetOrgPerson)".into(),
            group_filter: "(objectClass=groupOfNames)".into(),
            changed: "entryCSN".into(),
        }
    }

    /// Active Directory.
    pub fn active_directory() -> AttributeMap {
        AttributeMap {
            guid: "objectGUID".into(),
            guid_binary: true,
            login: "sAMAccountName".into(),
            display_name: strings(&["displayName", "cn"]),
            email: strings(&["mail", "userPrincipalName"]),
            member_of: Some("memberOf".into()),
            disabled: Some(("userAccountControl".into(), 2)),
            group_name: "cn".into(),
            group_member: "member".into(),
            user_filter: "(&(objectCategory=person)(objectClass=user))".into(),
            group_filter: "(objectClass=group)".into(),
            changed: "uSNChanged".into(),
        }
    }

    fn with(mut self, o: &AttributeOverrides) -> AttributeMap {
        if let Some(v) = &o.guid {
            self.guid = v.clone();
        }
        if let Some(v) = o.guid_binary {
            self.guid_binary = v;
        }
        if let Some(v) = &o.login {
            self.login = v.clone();
        }
        if let Some(v) = &o.display_name {
            self.display_name = v.clone();
        }
        if let Some(v) = &o.email {
            self.email = v.clone();
        }
        if let Some(v) = &o.member_of {
            self.member_of = Some(v.clone()).filter(|v| !v.is_empty());
        }
        if let Some(v) = &o.group_name {
            self.group_name = v.clone();
        }
        if let Some(v) = &o.group_member {
            self.group_member = v.clone();
        }
        if let Some(v) = o.changed.as_ref().filter(|v| !v.trim().is_empty()) {
            self.changed = v.trim().to_owned();
        }
        self
    }
}

impl DirectorySettings {
    pub fn attributes(&self) -> AttributeMap {
        let preset = match self.kind {
            DirectoryKind::Openldap => AttributeMap::openldap(),
            DirectoryKind::ActiveDirectory => AttributeMap::active_directory(),
        };
        preset.with(&self.attributes)
    }

    pub fn user_filter(&self) -> String {
        parenthesized(
            self.user_filter
                .as_deref()
                .unwrap_or(&self.attributes().user_filter),
        )
    }

    pub fn group_filter(&self) -> String {
        parenthesized(
            self.group_filter
                .as_deref()
                .unwrap_or(&self.attributes().group_filter),
        )
    }
}

/// `objectClass=person` → `(objectClass=person)`, as administrators often
/// write filters without the outer parentheses.
fn parenthesized(filter: &str) -> String {
    let filter = filter.trim();
    if filter.starts_with('(') {
        filter.to_owned()
    } else {
        format!("({filter})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_overrides() {
        let mut s = DirectorySettings::default();
        assert_eq!(s.attributes(), AttributeMap::openldap());
        assert_eq!(s.user_filter(), "(objectClass=inetOrgPerson)");
        s.kind = DirectoryKind::ActiveDirectory;
        s.attributes.email = Some(vec!["proxyAddresses".into()]);
        s.attributes.member_of = Some(String::new());
        let map = s.attributes();
        assert_eq!(map.email, ["proxyAddresses"]);
        assert_eq!(map.member_of, None, "an empty override turns memberOf off");
        assert_eq!(map.guid, "objectGUID");
        assert!(map.guid_binary);
        s.user_filter = Some("objectClass=user".into());
        assert_eq!(s.user_filter(), "(objectClass=user)");
    }
}
