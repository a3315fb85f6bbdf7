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
        Ok(Loaded { settings, warnings })
    }
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
}

impl ConfigError {
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "SETTINGS_UNREADABLE",
            ConfigError::Malformed { .. } => "SETTINGS_MALFORMED",
            ConfigError::Invalid { .. } => "SETTINGS_INVALID",
            ConfigError::Env { .. } => "SETTINGS_ENV_INVALID",
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
        if name == CONFIG_ENV || rest.is_empty() {
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
