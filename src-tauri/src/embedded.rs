//! The server core running inside the desktop process, as managed state.
//!
//! [`EmbeddedServer`] records how starting went — the console's address or
//! the error — in a watch channel, so `console_endpoint` can wait for a
//! start still under way instead of failing, and keeps the
//! [`ServerHandle`] for the shutdown at exit.

use std::fmt::Display;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bramble::logging::LogGuard;
use bramble::{ServerHandle, Settings};
use serde::Serialize;
use tokio::sync::watch;
use tracing::{error, info};

/// Set, it keeps the Administration Service where the settings put it;
/// unset, the desktop listens on an ephemeral loopback port.
pub const LISTEN_ENV: &str = "BRAMBLE_ADMIN__LISTEN";

/// How long the exit waits for a start still under way.
const START_WAIT: Duration = Duration::from_secs(30);
/// How long the exit waits for the server to stop.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// What `console_endpoint` answers: where the Administration Service is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsoleEndpoint {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base_url: String,
    /// The secret of this launch, sent by the window with every request
    /// (`X-Bramble-Launch`): other local users cannot use the console.
    pub launch_secret: Option<String>,
    /// The first run's setup code while no administrator exists; the
    /// window fills it in on the first-run page.
    pub setup_code: Option<String>,
}

/// An error as the console shows it: a stable code and a message for an
/// administrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShellError {
    pub code: String,
    pub message: String,
}

impl ShellError {
    pub fn new(code: impl Into<String>, message: impl Display) -> ShellError {
        ShellError {
            code: code.into(),
            message: message.to_string(),
        }
    }
}

impl Display for ShellError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ShellError {}

type Outcome = Result<ConsoleEndpoint, ShellError>;

/// The desktop's settings: those loaded, with the Administration Service on
/// `127.0.0.1:0` (an ephemeral loopback port, so a second Bramble or
/// another program on the default port does not stop the window) unless
/// `BRAMBLE_ADMIN__LISTEN` was set.
///
/// Each launch binds the console to a new secret that only the window
/// learns (`console_endpoint`); should no secret be made (no randomness
/// from the system), the console is not bound and the log says so.
pub fn desktop_settings(mut settings: Settings, listen_from_env: bool) -> Settings {
    if !listen_from_env {
        settings.admin.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    }
    match bramble::admin::origin::new_launch_secret() {
        Ok(secret) => settings.admin.launch_secret = Some(secret),
        Err(e) => {
            error!(target: "bramble::desktop", "no launch secret could be made ({e}); the console is open to other local users")
        }
    }
    settings
}

/// Managed state: the in-process server and how its start went.
pub struct EmbeddedServer {
    outcome: watch::Sender<Option<Outcome>>,
    handle: tokio::sync::Mutex<Option<ServerHandle>>,
    log_dir: Mutex<Option<PathBuf>>,
    log_guard: Mutex<Option<LogGuard>>,
}

impl Default for EmbeddedServer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for EmbeddedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedServer")
            .field("outcome", &*self.outcome.borrow())
            .finish_non_exhaustive()
    }
}

impl EmbeddedServer {
    /// Not started yet: `endpoint` waits.
    pub fn new() -> EmbeddedServer {
        EmbeddedServer {
            outcome: watch::Sender::new(None),
            handle: tokio::sync::Mutex::new(None),
            log_dir: Mutex::new(None),
            log_guard: Mutex::new(None),
        }
    }

    /// Starts the server core and records the outcome.
    pub async fn start(&self, settings: Settings) {
        match bramble::Server::start(settings).await {
            Ok(handle) => {
                let base_url = handle.admin_url();
                info!(target: "bramble::desktop", %base_url, "the console's server is running");
                let endpoint = ConsoleEndpoint {
                    base_url,
                    launch_secret: handle.state().settings.admin.launch_secret.clone(),
                    setup_code: handle.state().setup.code(),
                };
                *self.handle.lock().await = Some(handle);
                self.outcome.send_replace(Some(Ok(endpoint)));
            }
            Err(e) => {
                error!(target: "bramble::desktop", code = e.code(), "the server did not start: {e}");
                self.failed(ShellError::new(e.code(), &e));
            }
        }
    }

    /// Records that the server will not run (settings, logs or start failed).
    pub fn failed(&self, error: ShellError) {
        self.outcome.send_replace(Some(Err(error)));
    }

    /// The console's endpoint, once the start has finished either way.
    pub async fn endpoint(&self) -> Outcome {
        let mut outcome = self.outcome.subscribe();
        let settled = outcome.wait_for(Option::is_some).await;
        match settled.as_deref() {
            Ok(Some(outcome)) => outcome.clone(),
            _ => Err(ShellError::new(
                "DESKTOP_NOT_STARTED",
                "the desktop app stopped before the server started; restart Bramble",
            )),
        }
    }

    /// Stops the server (waiting first for a start under way) and waits for
    /// it, so the Configuration Database closes cleanly. Does nothing when
    /// no server runs.
    pub async fn shutdown(&self) {
        if tokio::time::timeout(START_WAIT, self.endpoint())
            .await
            .is_err()
        {
            error!(target: "bramble::desktop", "the server was still starting at exit");
        }
        let Some(handle) = self.handle.lock().await.take() else {
            return;
        };
        match tokio::time::timeout(STOP_WAIT, handle.shutdown()).await {
            Ok(Ok(())) => info!(target: "bramble::desktop", "the server stopped"),
            Ok(Err(e)) => error!(target: "bramble::desktop", "the server stopped with errors: {e}"),
            Err(_) => error!(
                target: "bramble::desktop",
                "the server did not stop within {} s; closing anyway",
                STOP_WAIT.as_secs()
            ),
        }
    }

    /// Remembers where the log files are, for `open_log_folder`.
    pub fn set_log_dir(&self, dir: PathBuf) {
        if let Ok(mut slot) = self.log_dir.lock() {
            *slot = Some(dir);
        }
    }

    /// The folder of the log files, once the settings were read.
    pub fn log_dir(&self) -> Option<PathBuf> {
        self.log_dir.lock().ok().and_then(|dir| dir.clone())
    }

    /// Keeps the log writer alive until [`Self::release_log_guard`].
    pub fn keep_log_guard(&self, guard: LogGuard) {
        if let Ok(mut slot) = self.log_guard.lock() {
            *slot = Some(guard);
        }
    }

    /// Flushes and closes the log files (at exit, after `shutdown`).
    pub fn release_log_guard(&self) {
        let guard = self.log_guard.lock().ok().and_then(|mut slot| slot.take());
        drop(guard);
    }

    /// Opens the log folder with the system's file manager.
    pub async fn open_log_folder(&self) -> Result<(), ShellError> {
        let Some(dir) = self.log_dir() else {
            return Err(ShellError::new(
                "LOG_FOLDER_UNKNOWN",
                "the settings could not be read, so there is no log folder yet; fix the settings and restart Bramble",
            ));
        };
        if !dir.is_dir() {
            return Err(ShellError::new(
                "LOG_FOLDER_MISSING",
                format!(
                    "the log folder {} does not exist; check `[logging] directory` and `data_dir` in the settings file",
                    dir.display()
                ),
            ));
        }
        let shown = dir.display().to_string();
        let opened = tokio::task::spawn_blocking(move || open::that(&dir)).await;
        match opened {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ShellError::new(
                "LOG_FOLDER_OPEN_FAILED",
                format!("cannot open the log folder {shown} with the file manager ({e}); open it by hand"),
            )),
            Err(e) => Err(ShellError::new(
                "LOG_FOLDER_OPEN_FAILED",
                format!("cannot open the log folder {shown} ({e}); open it by hand"),
            )),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// Default settings with a temporary data folder and the given
    /// Administration Service listener; every other listener on a free
    /// port (through the environment names, so this keeps working as
    /// settings are added).
    pub(crate) fn settings_in(data_dir: &std::path::Path, listen: SocketAddr) -> Settings {
        let env = [
            ("BRAMBLE_DATA_DIR", data_dir.display().to_string()),
            ("BRAMBLE_ADMIN__LISTEN", listen.to_string()),
            ("BRAMBLE_ROUTER__LAN_LISTEN", "127.0.0.1:0".to_owned()),
        ]
        .map(|(name, value)| (name.to_owned(), value));
        Settings::load_from(None, &env)
            .expect("test settings")
            .settings
    }

    fn ephemeral() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }

    #[test]
    fn the_desktop_listens_on_an_ephemeral_loopback_port_unless_the_environment_says() {
        let mut loaded = Settings::default();
        loaded.admin.listen = SocketAddr::from(([0, 0, 0, 0], 3180));
        assert_eq!(
            desktop_settings(loaded.clone(), false).admin.listen,
            ephemeral()
        );
        assert_eq!(
            desktop_settings(loaded, true).admin.listen,
            SocketAddr::from(([0, 0, 0, 0], 3180))
        );
    }

    #[tokio::test]
    async fn a_started_server_yields_its_url() {
        let dir = tempfile::tempdir().unwrap();
        let server = EmbeddedServer::new();
        server
            .start(desktop_settings(settings_in(dir.path(), ephemeral()), true))
            .await;

        let endpoint = server.endpoint().await.expect("the server started");
        assert!(
            endpoint.base_url.starts_with("http://127.0.0.1:"),
            "{endpoint:?}"
        );
        assert!(!endpoint.base_url.ends_with(":0"), "{endpoint:?}");
        let secret = endpoint.launch_secret.clone().expect("a launch secret");
        assert_eq!(secret.len(), 64);
        let code = endpoint
            .setup_code
            .clone()
            .expect("an empty database's setup code");
        let written = std::fs::read_to_string(dir.path().join("setup-code")).unwrap();
        assert_eq!(written.trim(), code);

        // It really serves: /health answers on that address to anyone; the
        // API only to the window, which knows the launch secret.
        let addr = endpoint.base_url.trim_start_matches("http://").to_owned();
        let get = |path: &str, secret: Option<&str>| {
            let addr = addr.clone();
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{}Connection: close\r\n\r\n",
                secret.map_or_else(String::new, |s| format!("X-Bramble-Launch: {s}\r\n"))
            );
            async move {
                let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
                tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
                    .await
                    .unwrap();
                let mut reply = String::new();
                tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut reply)
                    .await
                    .unwrap();
                reply
            }
        };
        let reply = get("/health", None).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        let reply = get("/api/setup", None).await;
        assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
        assert!(reply.contains("LAUNCH_SECRET_REQUIRED"), "{reply}");
        let reply = get("/api/setup", Some("0".repeat(64).as_str())).await;
        assert!(reply.starts_with("HTTP/1.1 403"), "a wrong secret: {reply}");
        let reply = get("/api/setup", Some(&secret)).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

        server.shutdown().await;
        assert!(
            server.handle.lock().await.is_none(),
            "shutdown takes the handle"
        );
        assert!(
            tokio::net::TcpStream::connect(&addr).await.is_err(),
            "nothing listens after shutdown"
        );
    }

    #[tokio::test]
    async fn a_failed_start_yields_its_code_and_message() {
        let dir = tempfile::tempdir().unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let server = EmbeddedServer::new();
        server.start(settings_in(dir.path(), addr)).await;

        let error = server.endpoint().await.expect_err("the port is taken");
        assert_eq!(error.code, "PORT_IN_USE");
        assert!(error.message.contains(&addr.to_string()), "{error:?}");
        // Asking again gives the same answer; shutting down has nothing to stop.
        assert_eq!(server.endpoint().await, Err(error));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn the_endpoint_waits_for_a_start_under_way() {
        let server = std::sync::Arc::new(EmbeddedServer::new());
        let asking = tokio::spawn({
            let server = server.clone();
            async move { server.endpoint().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!asking.is_finished(), "no answer before the start finished");

        server.failed(ShellError::new("SETTINGS_MALFORMED", "bad settings"));
        let answer = tokio::time::timeout(Duration::from_secs(5), asking)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            answer,
            Err(ShellError::new("SETTINGS_MALFORMED", "bad settings"))
        );
    }

    #[tokio::test]
    async fn the_log_folder_is_reported_when_it_cannot_be_opened() {
        let server = EmbeddedServer::new();
        let unknown = server.open_log_folder().await.unwrap_err();
        assert_eq!(unknown.code, "LOG_FOLDER_UNKNOWN");

        let dir = tempfile::tempdir().unwrap();
        server.set_log_dir(dir.path().join("not-there"));
        let missing = server.open_log_folder().await.unwrap_err();
        assert_eq!(missing.code, "LOG_FOLDER_MISSING");
        assert!(missing.message.contains("not-there"), "{missing:?}");
    }

    #[test]
    fn errors_serialize_as_code_and_message() {
        let json = serde_json::to_value(ShellError::new("PORT_IN_USE", "in use")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"code": "PORT_IN_USE", "message": "in use"})
        );
        let json = serde_json::to_value(ConsoleEndpoint {
            base_url: "http://127.0.0.1:1".into(),
            launch_secret: Some("ab".into()),
            setup_code: None,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"base_url": "http://127.0.0.1:1", "launch_secret": "ab", "setup_code": null})
        );
    }
}
