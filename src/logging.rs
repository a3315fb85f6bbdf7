//! Logs: daily rolling files in the data folder (the newest
//! `keep_files` kept) plus the console. Each component logs under its own
//! target (`bramble::controller`, `bramble::messaging_agent`, …), so
//! `level = "info,bramble::controller=debug"` turns one up.

use std::path::{Path, PathBuf};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer as _};

use serde::{Deserialize, Serialize};

/// Keeps the file writer flushing; drop it last.
#[must_use = "logs stop being written when the guard is dropped"]
pub struct LogGuard {
    _file: WorkerGuard,
    pub directory: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot write log files in {path} ({message}). Choose a writable folder with `[logging] directory` or `data_dir` in the settings file; nothing was started.")]
    Directory { path: PathBuf, message: String },
    #[error("the log level `{level}` is not understood ({message}). Use e.g. `info` or `info,bramble::controller=debug` in `[logging] level`.")]
    Level { level: String, message: String },
}

impl LogError {
    pub fn code(&self) -> &'static str {
        match self {
            LogError::Directory { .. } => "LOG_DIR_UNWRITABLE",
            LogError::Level { .. } => "LOG_LEVEL_INVALID",
        }
    }
}

/// Installs the global subscriber: daily files in `directory` always, the
/// console when `console`.
pub fn init(
    settings: &LoggingSettings,
    directory: &Path,
    console: bool,
) -> Result<LogGuard, LogError> {
    let directory = directory.to_path_buf();
    let dir_error = |message: String| LogError::Directory {
        path: directory.clone(),
        message,
    };
    create_private_dir(&directory).map_err(|e| dir_error(e.to_string()))?;
    let appender = Builder::new()
        .rotation(Rotation::DAILY)
        .filename_prefix("bramble")
        .filename_suffix("log")
        .max_log_files(settings.keep_files.max(1))
        .build(&directory)
        .map_err(|e| dir_error(e.to_string()))?;
    let (file_writer, guard) = tracing_appender::non_blocking(appender);
    let filter = |level: &str| {
        EnvFilter::try_new(level).map_err(|e| LogError::Level {
            level: level.to_owned(),
            message: e.to_string(),
        })
    };
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| settings.level.clone());
    let file_layer = fmt::layer()
        .with_ansi(false)
        .with_writer(file_writer)
        .with_filter(filter(&level)?);
    let console_filter = if console { Some(filter(&level)?) } else { None };
    let console_layer = console_filter.map(|f| {
        fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_filter(f)
    });
    // A second init (tests, the desktop re-opening) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(file_layer)
        .with(console_layer)
        .try_init();
    Ok(LogGuard {
        _file: guard,
        directory,
    })
}

/// Log files and console output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggingSettings {
    /// A tracing filter: `info`, or per component: `info,bramble::controller=debug`.
    pub level: String,
    /// Folder for the daily log files. Unset: `logs` in the data folder.
    pub directory: Option<PathBuf>,
    /// Daily files kept before the oldest is deleted.
    pub keep_files: usize,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            directory: None,
            keep_files: 14,
        }
    }
}

/// Creates `folder` (and any missing parent, such as the data folder when
/// the logs live in it) readable by its owner only: logs name users and
/// devices.
fn create_private_dir(folder: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(folder)
}
