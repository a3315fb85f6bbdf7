//! `[mail]`: how the Messaging Agent reaches the organization's messaging
//! server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Transport security towards the IMAP or SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Plain TCP (loopback test servers only).
    None,
    /// Plain TCP upgraded with STARTTLS.
    Starttls,
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Tls,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MailSettings {
    /// IMAP server as `host:port`; the Messaging Agent waits in standby
    /// while it is not set.
    pub imap: Option<String>,
    pub imap_security: Security,
    /// SMTP submission server as `host:port`.
    pub smtp: Option<String>,
    pub smtp_security: Security,
    /// SMTP AUTH for submission, if the server wants it.
    pub smtp_login: Option<String>,
    pub smtp_password: Option<String>,
    /// A file holding the SMTP password instead (its owner's only; see
    /// `crate::config` for where else a password may come from).
    pub smtp_password_file: Option<PathBuf>,
    /// A private CA's certificate (PEM) to trust for IMAP and SMTP TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// The service account that reaches every mailbox (a Dovecot master
    /// user: the login is `<mailbox><master_separator><service_login>`).
    pub service_login: String,
    pub service_password: String,
    /// A file holding the service account's (IMAP) password instead.
    pub service_password_file: Option<PathBuf>,
    pub master_separator: String,
    /// Mailbox logins with their own passwords, used instead of the service
    /// account for those users.
    pub user_passwords: BTreeMap<String, String>,
    pub inbox: String,
    /// Where copies of mail sent from devices are filed.
    pub sent_folder: String,
    /// Re-issue IDLE after this long (servers drop IDLE after 30 minutes).
    pub idle_secs: u64,
    /// Wait before reconnecting to a mailbox: doubles from min to max.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// How often the list of users to watch is read again.
    pub refresh_users_secs: u64,
    /// How long connecting to the IMAP server and logging in may take.
    pub connect_timeout_secs: u64,
    /// How long one IMAP command may take (a batch of `fetch_batch_bytes`
    /// included); a command that takes longer drops the connection, which
    /// is retried.
    pub command_timeout_secs: u64,
    /// Largest part of a message fetched; a longer one is forwarded cut.
    pub max_fetch_bytes: u32,
    /// Most bytes of message content one IMAP fetch asks for: a backlog is
    /// fetched in batches of this size (each in its own command, with its
    /// own time limit), and a message longer than this is forwarded cut
    /// too ([`MailSettings::per_message_bytes`]).
    pub fetch_batch_bytes: u32,
    /// Largest attachment sent to a device on request.
    pub max_attachment_bytes: usize,
    /// Wait before submitting again mail the SMTP server did not take.
    pub smtp_retry_secs: u64,
    /// Messages per mailbox whose read/deleted state is reconciled.
    pub reconcile_window: i64,
}

impl Default for MailSettings {
    fn default() -> Self {
        MailSettings {
            imap: None,
            imap_security: Security::Tls,
            smtp: None,
            smtp_security: Security::Starttls,
            smtp_login: None,
            smtp_password: None,
            smtp_password_file: None,
            tls_ca_file: None,
            service_login: "bramble".to_owned(),
            service_password: String::new(),
            service_password_file: None,
            master_separator: "*".to_owned(),
            user_passwords: BTreeMap::new(),
            inbox: "INBOX".to_owned(),
            sent_folder: "Sent".to_owned(),
            idle_secs: 25 * 60,
            reconnect_min_ms: 1_000,
            reconnect_max_ms: 300_000,
            refresh_users_secs: 30,
            connect_timeout_secs: 30,
            command_timeout_secs: 120,
            max_fetch_bytes: 64 * 1024 * 1024,
            fetch_batch_bytes: 64 * 1024 * 1024,
            max_attachment_bytes: 4 * 1024 * 1024,
            smtp_retry_secs: 30,
            reconcile_window: 500,
        }
    }
}

impl MailSettings {
    /// `fetch_batch_bytes`, at least 1 KiB.
    pub fn batch_bytes(&self) -> u32 {
        self.fetch_batch_bytes.max(1024)
    }

    /// Most bytes of one message fetched: the smaller of `max_fetch_bytes`
    /// and [`MailSettings::batch_bytes`].
    pub fn per_message_bytes(&self) -> u32 {
        self.max_fetch_bytes.max(1).min(self.batch_bytes())
    }

    /// The login and password that open `mailbox_login`'s mailbox.
    pub fn credentials(&self, mailbox_login: &str) -> (String, String) {
        match self.user_passwords.get(mailbox_login) {
            Some(password) => (mailbox_login.to_owned(), password.clone()),
            None => (
                format!(
                    "{mailbox_login}{}{}",
                    self.master_separator, self.service_login
                ),
                self.service_password.clone(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_unless_the_user_has_a_password() {
        let mut s = MailSettings {
            service_password: "sp".into(),
            ..MailSettings::default()
        };
        s.user_passwords.insert("carol".into(), "cp".into());
        assert_eq!(
            s.credentials("alice"),
            ("alice*bramble".into(), "sp".into())
        );
        assert_eq!(s.credentials("carol"), ("carol".into(), "cp".into()));
    }
}
