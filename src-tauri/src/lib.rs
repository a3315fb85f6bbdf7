//! # Bramble desktop
//!
//! The desktop administration app. It is deliberately thin: it
//!
//! 1. starts the Bramble server core **in this process** (the same
//!    [`bramble::Server::start`] that `bramble serve` runs), with the
//!    Administration Service on an ephemeral loopback port unless
//!    `BRAMBLE_ADMIN__LISTEN` says otherwise;
//! 2. opens one window showing the Administration Service console (the
//!    `ui/dist` build, embedded in the binary), which talks to that server
//!    over HTTP on `127.0.0.1` exactly as a browser would;
//! 3. offers only the commands a web page cannot do for itself:
//!    `console_endpoint` (where the in-process server listens, this
//!    launch's secret that the server requires of every request, and the
//!    first run's setup code) and `open_log_folder` (show the log files in
//!    the file manager).
//!
//! Everything an administrator manages goes through the Administration
//! Service's HTTP API, never through window commands. When the window
//! closes (or the process gets SIGINT/SIGTERM) the server is shut down and
//! waited for, so the Configuration Database closes cleanly.

pub mod embedded;

use tauri::{Manager, RunEvent, State};
use tracing::{error, info, warn};

pub use embedded::{desktop_settings, ConsoleEndpoint, EmbeddedServer, ShellError, LISTEN_ENV};

/// Where the console's API is: the in-process Administration Service. Waits
/// while the server is still starting; a server that could not start is
/// reported as its `{code, message}`.
#[tauri::command]
async fn console_endpoint(
    server: State<'_, EmbeddedServer>,
) -> Result<ConsoleEndpoint, ShellError> {
    server.endpoint().await
}

/// Opens the folder of the log files in the system's file manager.
#[tauri::command]
async fn open_log_folder(server: State<'_, EmbeddedServer>) -> Result<(), ShellError> {
    server.open_log_folder().await
}

/// Adds Bramble's state and commands to a Tauri builder (the real one in
/// [`run`], the mock runtime's in tests).
pub fn with_bramble<R: tauri::Runtime>(builder: tauri::Builder<R>) -> tauri::Builder<R> {
    builder
        .manage(EmbeddedServer::new())
        .invoke_handler(tauri::generate_handler![console_endpoint, open_log_folder])
}

/// Runs the desktop app until its window closes; returns the exit code.
pub fn run() -> i32 {
    let app = with_bramble(tauri::Builder::default())
        .setup(|app| {
            begin(app.handle());
            Ok(())
        })
        .build(tauri::generate_context!());
    let app = match app {
        Ok(app) => app,
        Err(e) => {
            eprintln!("Bramble could not open its window: {e}");
            return 1;
        }
    };
    app.run_return(|app, event| {
        if let RunEvent::Exit = event {
            let server = app.state::<EmbeddedServer>();
            tauri::async_runtime::block_on(server.shutdown());
            // Last: the final log lines are flushed when the guard goes.
            server.release_log_guard();
        }
    })
}

/// Reads the settings, starts logging, and starts the server core on
/// Tauri's async runtime. Failures are recorded for `console_endpoint`
/// (the window still opens and shows them).
fn begin(app: &tauri::AppHandle) {
    close_on_signal(app.clone());
    let server = app.state::<EmbeddedServer>();
    let loaded = match bramble::Settings::load(None) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("Bramble did not start: {e}");
            server.failed(ShellError::new(e.code(), &e));
            return;
        }
    };
    let listen_from_env = std::env::var_os(LISTEN_ENV).is_some();
    let settings = desktop_settings(loaded.settings, listen_from_env);
    server.set_log_dir(settings.log_dir());
    match bramble::logging::init(&settings.logging, &settings.log_dir(), true) {
        Ok(guard) => server.keep_log_guard(guard),
        Err(e) => {
            eprintln!("Bramble did not start: {e}");
            server.failed(ShellError::new(e.code(), &e));
            return;
        }
    }
    for warning in &loaded.warnings {
        warn!(target: "bramble::desktop", "{warning}");
    }
    info!(target: "bramble::desktop", data_dir = %settings.data_dir.display(), "starting the server core");

    let starter = app.clone();
    tauri::async_runtime::spawn(async move {
        starter.state::<EmbeddedServer>().start(settings).await;
    });
}

/// SIGINT/SIGTERM close the app the normal way, so the server still shuts
/// down cleanly (a terminal's Ctrl+C, a session manager, a test driver).
#[cfg(unix)]
fn close_on_signal(app: tauri::AppHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    tauri::async_runtime::spawn(async move {
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(e), _) | (_, Err(e)) => {
                error!(target: "bramble::desktop", "cannot watch for SIGTERM/SIGINT: {e}");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!(target: "bramble::desktop", "signal received; closing");
        app.exit(0);
    });
}

#[cfg(not(unix))]
fn close_on_signal(_app: tauri::AppHandle) {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use tauri::ipc::{CallbackFn, InvokeBody};
    use tauri::test::{get_ipc_response, mock_builder, MockRuntime, INVOKE_KEY};
    use tauri::webview::InvokeRequest;
    use tauri::{App, Manager, WebviewWindow};

    use super::*;

    /// The app with its real configuration and capabilities on the mock
    /// runtime (no display), and its `main` window.
    fn mock_app() -> (App<MockRuntime>, WebviewWindow<MockRuntime>) {
        let app = with_bramble(mock_builder())
            .build(tauri::generate_context!())
            .expect("the app builds");
        let window = match app.get_webview_window("main") {
            Some(window) => window,
            None => tauri::WebviewWindowBuilder::new(&app, "main", Default::default())
                .build()
                .expect("the main window opens"),
        };
        (app, window)
    }

    fn invoke(
        window: &WebviewWindow<MockRuntime>,
        cmd: &str,
    ) -> Result<serde_json::Value, serde_json::Value> {
        let request = InvokeRequest {
            cmd: cmd.into(),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            url: "tauri://localhost".parse().unwrap(),
            body: InvokeBody::default(),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        };
        get_ipc_response(window, request)
            .map(|body| body.deserialize::<serde_json::Value>().unwrap())
    }

    #[test]
    fn the_console_gets_the_address_of_the_started_server() {
        let (app, window) = mock_app();
        let dir = tempfile::tempdir().unwrap();
        let settings = desktop_settings(
            embedded::tests::settings_in(dir.path(), "127.0.0.1:3180".parse().unwrap()),
            false,
        );
        let server = app.state::<EmbeddedServer>();
        tauri::async_runtime::block_on(server.start(settings));

        let reply = invoke(&window, "console_endpoint").expect("granted and answered");
        let base_url = reply["base_url"].as_str().unwrap();
        assert!(base_url.starts_with("http://127.0.0.1:"), "{reply}");
        assert_eq!(
            reply["launch_secret"].as_str().map(str::len),
            Some(64),
            "the window learns the launch secret: {reply}"
        );
        assert!(reply["setup_code"].is_string(), "{reply}");

        tauri::async_runtime::block_on(server.shutdown());
    }

    #[test]
    fn the_console_gets_the_code_and_message_of_a_failed_start() {
        let (app, window) = mock_app();
        app.state::<EmbeddedServer>().failed(ShellError::new(
            "LOG_DIR_UNWRITABLE",
            "cannot write log files",
        ));

        let reply = invoke(&window, "console_endpoint").expect_err("the start failed");
        assert_eq!(
            reply,
            serde_json::json!({"code": "LOG_DIR_UNWRITABLE", "message": "cannot write log files"})
        );
    }

    #[test]
    fn unknown_commands_are_refused_and_open_log_folder_is_granted() {
        let (_app, window) = mock_app();
        let refused = invoke(&window, "not_a_command").expect_err("unknown commands are refused");
        assert!(refused.to_string().contains("not_a_command"), "{refused}");
        let reply = invoke(&window, "open_log_folder").expect_err("no log folder in this test");
        assert_eq!(reply["code"], "LOG_FOLDER_UNKNOWN");
    }
}
