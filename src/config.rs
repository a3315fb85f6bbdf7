//! Settings: one TOML file plus `BRAMBLE_…` environment overrides.
//!
//! Every key has a default suited to a desktop: the data folder lives in the
//! operating system's per-user data location, the console listens on
//! loopback only. An environment variable `BRAMBLE_SECTION__KEY` overrides
//! `[section] key` (`BRAMBLE_DATA_DIR` sets the top-level `data_dir`,
//! `BRAMBLE_ADMIN__LISTEN` sets `[admin] listen`). A key Bramble does not
//! know is not an error — it is reported as a warning naming the key, since
//! it is most often a typo an administrator wants to hear about.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

// Each section's type lives with the component it configures; this module
// only assembles them (and re-exports them for callers that name them here).
pub use crate::admin::AdminSettings;
pub use crate::controller::ControllerSettings;
pub use crate::db::DatabaseSettings;
pub use crate::logging::LoggingSettings;
pub use crate::router::RouterSettings;

/// Name of the environment variable that points at the settings file.
pub const CONFIG_ENV: &str = "BRAMBLE_CONFIG";

/// The IMAP service account's password (`[mail] service_password`).
pub const IMAP_PASSWORD_ENV: &str = "BRAMBLE_IMAP_PASSWORD";
/// The SMTP submission password (`[mail] smtp_password`).
pub const SMTP_PASSWORD_ENV: &str = "BRAMBLE_SMTP_PASSWORD";
/// The organizer server's service account password (`[sync] service_password`).
pub const DAV_PASSWORD_ENV: &str = "BRAMBLE_DAV_PASSWORD";
/// Followed by a directory's name (see [`ldap_password_env`]): its bind
/// password (`[[directories]] bind_password`).
pub const LDAP_PASSWORD_ENV_PREFIX: &str = "BRAMBLE_LDAP_PASSWORD_";

/// The names `bramble secret set` stores a service password under:
/// `imap`, `smtp`, `dav` and `ldap/<directory name>`.
pub const IMAP_SECRET: &str = "imap";
pub const SMTP_SECRET: &str = "smtp";
pub const DAV_SECRET: &str = "dav";
pub const LDAP_SECRET_PREFIX: &str = "ldap/";

/// The environment variable holding the bind password of the directory
/// named `directory`: `BRAMBLE_LDAP_PASSWORD_` and the name in capitals,
/// every character other than a letter or digit made `_` (`corp-ad` →
/// `BRAMBLE_LDAP_PASSWORD_CORP_AD`).
pub fn ldap_password_env(directory: &str) -> String {
    let name: String = directory
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{LDAP_PASSWORD_ENV_PREFIX}{name}")
}

/// Whether `name` is one `bramble secret set` accepts, for these settings.
pub fn is_service_secret_name(name: &str) -> bool {
    matches!(name, IMAP_SECRET | SMTP_SECRET | DAV_SECRET)
        || name
            .strip_prefix(LDAP_SECRET_PREFIX)
            .is_some_and(|d| !d.trim().is_empty())
}
const ENV_PREFIX: &str = "BRAMBLE_";

/// All of Bramble's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where the Configuration Database, the logs and the local master key live.
    pub data_dir: PathBuf,
    /// A name for this server instance, shown in the console.
    pub server_name: String,
    pub admin: AdminSettings,
    pub database: DatabaseSettings,
    pub controller: ControllerSettings,
    pub logging: LoggingSettings,
    pub router: RouterSettings,
    pub dispatcher: crate::dispatcher::DispatcherSettings,
    /// Messaging Agents of this server instance (each serves up to 500 users).
    pub messaging_agents: usize,
    /// The organization's directories the MailStore Service copies users
    /// and groups from (`[[directories]]`, none by default).
    pub directories: Vec<crate::mailstore::DirectorySettings>,
    /// The organization's messaging server, for the Messaging Agent (`[mail]`).
    pub mail: crate::messaging_agent::MailSettings,
    /// The Policy Service: service books, confirmation timeout (`[policy]`).
    pub policy: crate::policy::PolicySettings,
    /// The organization's organizer server, for the Synchronization Service (`[sync]`).
    pub sync: crate::sync::SyncSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            server_name: default_server_name(),
            admin: AdminSettings::default(),
            database: DatabaseSettings::default(),
            controller: ControllerSettings::default(),
            logging: LoggingSettings::default(),
            router: RouterSettings::default(),
            dispatcher: crate::dispatcher::DispatcherSettings::default(),
            messaging_agents: 1,
            directories: Vec::new(),
            mail: crate::messaging_agent::MailSettings::default(),
            policy: crate::policy::PolicySettings::default(),
            sync: crate::sync::SyncSettings::default(),
        }
    }
}

impl Settings {
    /// The `[database]` section with its file resolved against the data
    /// folder, as [`Database::open`](crate::db::Database::open) takes it.
    pub fn database(&self) -> DatabaseSettings {
        DatabaseSettings {
            path: Some(self.database_path()),
            ..self.database.clone()
        }
    }

    /// What the Administration Service reads of the settings.
    pub fn console(&self) -> crate::admin::ConsoleSettings {
        crate::admin::ConsoleSettings {
            server_name: self.server_name.clone(),
            data_dir: self.data_dir.clone(),
            admin: self.admin.clone(),
            mail: self.mail.clone(),
            directories: self.directories.clone(),
            sync: self.sync.clone(),
            ui_dir: self.ui_dir(),
        }
    }

    /// The SQLite file of the Configuration Database.
    pub fn database_path(&self) -> PathBuf {
        self.database
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("bramble.db"))
    }

    /// The folder of the daily log files.
    pub fn log_dir(&self) -> PathBuf {
        self.logging
            .directory
            .clone()
            .unwrap_or_else(|| self.data_dir.join("logs"))
    }

    /// The folder the console UI is served from, if one exists.
    pub fn ui_dir(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.admin.ui_dir {
            return Some(dir.clone());
        }
        let beside_exe = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|p| p.join("ui")));
        let source_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/dist");
        beside_exe
            .into_iter()
            .chain(std::iter::once(source_tree))
            .find(|dir| dir.join("index.html").is_file())
    }

    /// Loads settings from `path` (or `$BRAMBLE_CONFIG`, or defaults when
    /// neither is given), then applies the environment's overrides.
    pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from));
        Self::load_from(path.as_deref(), &vars)
    }

    /// [`Settings::load`] with the environment passed in, so tests need not
    /// touch the process environment.
    pub fn load_from(path: Option<&Path>, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Malformed {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        let mut warnings = Vec::new();
        let value = toml::Value::Table(table);
        let settings: Settings = serde_ignored::deserialize(value, |ignored| {
            warnings.push(format!(
                "unknown setting `{ignored}` ignored; check its spelling against docs/operations.md"
            ));
        })
        .map_err(|e: toml::de::Error| ConfigError::Invalid {
            source_name: path
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "the environment".to_owned()),
            message: e.to_string(),
        })?;
        let unknown = settings.policy.unknown_services();
        if !unknown.is_empty() {
            return Err(ConfigError::Invalid {
                source_name: path
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "the environment".to_owned()),
                message: format!(
                    "[policy] services lists {} which is not a service book; use any of {}",
                    unknown.join(", "),
                    crate::policy::service::SERVICES.join(", ")
                ),
            });
        }
        let mut settings = settings;
        settings.resolve_secret_sources(env)?;
        Ok(Loaded { settings, warnings })
    }

    /// Takes each service password from where it is given, highest first:
    /// its environment variable ([`IMAP_PASSWORD_ENV`] and the others), its
    /// `*_file` setting, the setting itself. A password none of them gives
    /// stays empty here, for [`Settings::fill_stored_secrets`].
    /// [`Settings::load`] calls this; call it again after changing the
    /// settings in code.
    pub fn resolve_secret_sources(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
        let var = |name: &str| {
            env.iter()
                .rev()
                .find(|(n, v)| n == name && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        if let Some(v) = var(IMAP_PASSWORD_ENV) {
            self.mail.service_password = v;
        } else if let Some(path) = &self.mail.service_password_file {
            self.mail.service_password = read_secret_file("[mail] service_password_file", path)?;
        }
        if let Some(v) = var(SMTP_PASSWORD_ENV) {
            self.mail.smtp_password = Some(v);
        } else if let Some(path) = &self.mail.smtp_password_file {
            self.mail.smtp_password = Some(read_secret_file("[mail] smtp_password_file", path)?);
        }
        if let Some(v) = var(DAV_PASSWORD_ENV) {
            self.sync.service_password = v;
        } else if let Some(path) = &self.sync.service_password_file {
            self.sync.service_password = read_secret_file("[sync] service_password_file", path)?;
        }
        for directory in &mut self.directories {
            if let Some(v) = var(&ldap_password_env(&directory.name)) {
                directory.bind_password = v;
            } else if let Some(path) = &directory.bind_password_file {
                directory.bind_password = read_secret_file(
                    &format!("[[directories]] bind_password_file of `{}`", directory.name),
                    path,
                )?;
            }
        }
        Ok(())
    }

    /// Fills each service password that is still empty from the
    /// Configuration Database, where `bramble secret set` sealed it: the
    /// IMAP password when an IMAP server is set, the SMTP password when an
    /// SMTP login is, the DAV password when an organizer server is, each
    /// directory's bind password when it binds as a DN.
    pub fn fill_stored_secrets(
        &mut self,
        conn: &mut crate::db::Conn,
        sealer: &crate::db::Sealer,
    ) -> crate::db::DbResult<()> {
        use crate::db::models::service_secret;
        if self.mail.imap.is_some() && self.mail.service_password.is_empty() {
            if let Some(v) = service_secret::get(conn, sealer, IMAP_SECRET)? {
                self.mail.service_password = v;
            }
        }
        if self.mail.smtp_login.is_some() && self.mail.smtp_password.is_none() {
            self.mail.smtp_password = service_secret::get(conn, sealer, SMTP_SECRET)?;
        }
        if self.sync.url.is_some() && self.sync.service_password.is_empty() {
            if let Some(v) = service_secret::get(conn, sealer, DAV_SECRET)? {
                self.sync.service_password = v;
            }
        }
        for directory in &mut self.directories {
            if !directory.bind_dn.is_empty() && directory.bind_password.is_empty() {
                let name = format!("{LDAP_SECRET_PREFIX}{}", directory.name);
                if let Some(v) = service_secret::get(conn, sealer, &name)? {
                    directory.bind_password = v;
                }
            }
        }
        Ok(())
    }
}

/// Reads a password from a file that only its owner may read: the file's
/// text without one trailing line break.
fn read_secret_file(setting: &str, path: &Path) -> Result<String, ConfigError> {
    let unreadable = |reason: String| ConfigError::SecretFile {
        setting: setting.to_owned(),
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::SecretFileExposed {
                setting: setting.to_owned(),
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    let value = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if value.is_empty() {
        return Err(unreadable("the file is empty".into()));
    }
    Ok(value.to_owned())
}

/// Settings plus what was noticed while reading them.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    /// One line per unknown key; log them once logging is up.
    pub warnings: Vec<String>,
}

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the settings file {path}: {source}. Check that the file exists and is readable, or start without --config to use the defaults.")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the settings file {path} is not valid TOML: {message}Fix the line shown above; nothing was started and no data was touched.")]
    Malformed { path: PathBuf, message: String },
    #[error("a setting in {source_name} has the wrong type or value: {message}See docs/operations.md for each setting's type.")]
    Invalid {
        source_name: String,
        message: String,
    },
    #[error("the environment variable {name} cannot be applied: {reason}")]
    Env { name: String, reason: String },
    #[error("cannot read the password file {path} named by {setting}: {reason}. Check the path and that Bramble's account can read it; nothing was started.")]
    SecretFile {
        setting: String,
        path: PathBuf,
        reason: String,
    },
    #[error("the password file {path} named by {setting} may be read by other users (permissions {mode:03o}); Bramble refuses it. Make it readable by its owner only (`chmod 600 {path}`), change the password if others may have read it, and start again.")]
    SecretFileExposed {
        setting: String,
        path: PathBuf,
        mode: u32,
    },
}

impl ConfigError {
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "SETTINGS_UNREADABLE",
            ConfigError::Malformed { .. } => "SETTINGS_MALFORMED",
            ConfigError::Invalid { .. } => "SETTINGS_INVALID",
            ConfigError::Env { .. } => "SETTINGS_ENV_INVALID",
            ConfigError::SecretFile { .. } => "SETTINGS_SECRET_FILE_UNREADABLE",
            ConfigError::SecretFileExposed { .. } => "SETTINGS_SECRET_FILE_EXPOSED",
        }
    }
}

/// `BRAMBLE_ADMIN__LISTEN=127.0.0.1:9000` → `[admin] listen = "127.0.0.1:9000"`.
/// Values that parse as TOML scalars (numbers, booleans) keep their type.
fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if name == CONFIG_ENV || rest.is_empty() || is_password_env(name) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let value = scalar(raw);
        let (last, parents) = match path.split_last() {
            Some(split) => split,
            None => continue,
        };
        let mut cursor = &mut *table;
        for key in parents {
            let entry = cursor
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cursor = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::Env {
                        name: name.clone(),
                        reason: format!("`{key}` is a single value, not a section"),
                    })
                }
            };
        }
        cursor.insert(last.clone(), value);
    }
    Ok(())
}

/// The variables that carry a service password, which are not settings
/// keys (see [`Settings::resolve_secret_sources`]).
fn is_password_env(name: &str) -> bool {
    matches!(
        name,
        IMAP_PASSWORD_ENV | SMTP_PASSWORD_ENV | DAV_PASSWORD_ENV
    ) || name.starts_with(LDAP_PASSWORD_ENV_PREFIX)
}

fn scalar(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(b) = raw.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    toml::Value::String(raw.to_owned())
}

fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("org", "Bramble", "Bramble")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("bramble-data"))
}

fn default_server_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bramble".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_suit_a_desktop() {
        let loaded = Settings::load_from(None, &[]).unwrap();
        assert!(loaded.settings.admin.listen.ip().is_loopback());
        assert_eq!(loaded.settings.controller.heartbeat_interval_secs, 600);
        assert_eq!(
            loaded.settings.controller.missed_heartbeats_before_restart,
            2
        );
        assert_eq!(loaded.settings.controller.max_restarts_per_day, 10);
        assert_eq!(loaded.settings.logging.keep_files, 14);
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bramble.toml");
        std::fs::write(
            &file,
            "data_dir = \"/srv/bramble\"\n[admin]\nlisten = \"127.0.0.1:4000\"\n[controller]\nmax_restarts_per_day = 3\n",
        )
        .unwrap();
        let loaded = Settings::load_from(
            Some(&file),
            &env(&[
                ("BRAMBLE_ADMIN__LISTEN", "127.0.0.1:4001"),
                ("BRAMBLE_CONTROLLER__MISSED_HEARTBEATS_BEFORE_RESTART", "0"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        let s = loaded.settings;
        assert_eq!(s.data_dir, PathBuf::from("/srv/bramble"));
        assert_eq!(s.admin.listen.port(), 4001);
        assert_eq!(s.controller.missed_heartbeats_before_restart, 0);
        assert_eq!(s.controller.max_restarts_per_day, 3);
        assert_eq!(s.database_path(), PathBuf::from("/srv/bramble/bramble.db"));
    }

    fn private_file(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }

    #[test]
    fn service_passwords_from_files_the_environment_or_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        let imap = dir.path().join("imap.pw");
        let smtp = dir.path().join("smtp.pw");
        let ldap = dir.path().join("ldap.pw");
        private_file(&imap, "imap-from-file\n");
        private_file(&smtp, "smtp-from-file\r\n");
        private_file(&ldap, "ldap-from-file");
        let file = dir.path().join("bramble.toml");
        std::fs::write(
            &file,
            format!(
                "[mail]\nservice_password_file = {imap:?}\nsmtp_password_file = {smtp:?}\n[sync]\nservice_password = \"dav-inline\"\n[[directories]]\nname = \"corp-ad\"\nbind_password_file = {ldap:?}\n[[directories]]\nname = \"other\"\nbind_password = \"other-inline\"\n"
            ),
        )
        .unwrap();
        let loaded = Settings::load_from(Some(&file), &[]).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let s = loaded.settings;
        assert_eq!(s.mail.service_password, "imap-from-file");
        assert_eq!(s.mail.smtp_password.as_deref(), Some("smtp-from-file"));
        assert_eq!(s.sync.service_password, "dav-inline");
        assert_eq!(s.directories[0].bind_password, "ldap-from-file");
        assert_eq!(s.directories[1].bind_password, "other-inline");

        // The environment comes first, and its variables are not settings keys.
        assert_eq!(
            ldap_password_env("corp-ad"),
            "BRAMBLE_LDAP_PASSWORD_CORP_AD"
        );
        let loaded = Settings::load_from(
            Some(&file),
            &env(&[
                ("BRAMBLE_IMAP_PASSWORD", "imap-env"),
                ("BRAMBLE_SMTP_PASSWORD", "smtp-env"),
                ("BRAMBLE_DAV_PASSWORD", "dav-env"),
                ("BRAMBLE_LDAP_PASSWORD_CORP_AD", "ldap-env"),
            ]),
        )
        .unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let s = loaded.settings;
        assert_eq!(s.mail.service_password, "imap-env");
        assert_eq!(s.mail.smtp_password.as_deref(), Some("smtp-env"));
        assert_eq!(s.sync.service_password, "dav-env");
        assert_eq!(s.directories[0].bind_password, "ldap-env");
        assert_eq!(s.directories[1].bind_password, "other-inline");
    }

    #[test]
    fn a_password_file_others_may_read_or_that_is_missing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("imap.pw");
        let file = dir.path().join("bramble.toml");
        std::fs::write(&file, format!("[mail]\nservice_password_file = {pw:?}\n")).unwrap();
        let e = Settings::load_from(Some(&file), &[]).unwrap_err();
        assert_eq!(e.code(), "SETTINGS_SECRET_FILE_UNREADABLE", "{e}");
        assert!(
            e.to_string().contains("[mail] service_password_file"),
            "{e}"
        );
        private_file(&pw, "");
        let e = Settings::load_from(Some(&file), &[]).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            private_file(&pw, "secret\n");
            for mode in [0o644, 0o640, 0o604] {
                std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(mode)).unwrap();
                let e = Settings::load_from(Some(&file), &[]).unwrap_err();
                assert_eq!(e.code(), "SETTINGS_SECRET_FILE_EXPOSED", "{e}");
                let words = e.to_string();
                assert!(words.contains(&pw.display().to_string()), "{words}");
                assert!(words.contains("chmod 600"), "{words}");
                assert!(!words.contains("secret\n"), "{words}");
            }
        }
    }

    #[test]
    fn passwords_the_settings_leave_empty_come_from_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::Database::open_path(&dir.path().join("bramble.db"), 1, 5_000).unwrap();
        let sealer = db.shared_sealer();
        db.run_blocking(|conn| {
            use crate::db::models::service_secret;
            service_secret::set(conn, &sealer, IMAP_SECRET, "imap-stored")?;
            service_secret::set(conn, &sealer, DAV_SECRET, "dav-stored")?;
            service_secret::set(conn, &sealer, "ldap/corp", "ldap-stored")?;
            let mut s = Settings::default();
            s.mail.imap = Some("127.0.0.1:143".into());
            s.sync.url = Some("http://127.0.0.1:5232".into());
            s.sync.service_password = "dav-given".into();
            s.directories = vec![crate::mailstore::DirectorySettings {
                name: "corp".into(),
                bind_dn: "cn=bramble".into(),
                ..Default::default()
            }];
            s.fill_stored_secrets(conn, &sealer)?;
            assert_eq!(s.mail.service_password, "imap-stored");
            assert_eq!(s.sync.service_password, "dav-given", "the settings win");
            assert_eq!(s.directories[0].bind_password, "ldap-stored");
            assert_eq!(s.mail.smtp_password, None, "no SMTP login, none read");
            Ok(())
        })
        .unwrap();
        assert!(is_service_secret_name("imap") && is_service_secret_name("ldap/corp"));
        assert!(!is_service_secret_name("ldap/") && !is_service_secret_name("pop3"));
    }

    #[test]
    fn unknown_key_is_a_warning_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bramble.toml");
        std::fs::write(&file, "[controller]\nheartbeat_intervl_secs = 5\n").unwrap();
        let loaded = Settings::load_from(Some(&file), &[]).unwrap();
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("controller.heartbeat_intervl_secs"));
    }

    #[test]
    fn malformed_file_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broken.toml");
        std::fs::write(&file, "[admin\nlisten = 1\n").unwrap();
        let err = Settings::load_from(Some(&file), &[]).unwrap_err();
        assert_eq!(err.code(), "SETTINGS_MALFORMED");
        let text = err.to_string();
        assert!(text.contains("broken.toml"), "{text}");
        assert!(text.contains("line 1"), "{text}");
    }

    #[test]
    fn directories_section() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bramble.toml");
        std::fs::write(
            &file,
            "[[directories]]\nname = \"corp\"\nurl = \"ldap://127.0.0.1:3389\"\nbase_dn = \"dc=example,dc=com\"\nkind = \"active_directory\"\n[directories.attributes]\nlogin = \"uid\"\n",
        )
        .unwrap();
        let loaded = Settings::load_from(Some(&file), &[]).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let d = &loaded.settings.directories[0];
        assert_eq!(d.name, "corp");
        assert_eq!(d.kind, crate::mailstore::DirectoryKind::ActiveDirectory);
        assert_eq!(d.page_size, 500);
        assert_eq!(d.sync_interval_secs, 3600);
        assert_eq!(d.attributes().login, "uid");
        assert_eq!(d.attributes().guid, "objectGUID");
        assert!(Settings::load_from(None, &[])
            .unwrap()
            .settings
            .directories
            .is_empty());
    }

    #[test]
    fn wrong_type_is_explained() {
        let err = Settings::load_from(None, &env(&[("BRAMBLE_ADMIN__LISTEN", "not-an-address")]))
            .unwrap_err();
        assert_eq!(err.code(), "SETTINGS_INVALID");
        assert!(err.to_string().contains("listen"), "{err}");
    }
}
