//! Starting and stopping the whole server core.
//!
//! [`Server::start`] opens the Configuration Database, binds the
//! Administration Service, and runs the named tasks (`controller`,
//! `administration`); the [`ServerHandle`] it returns owns them and the
//! shutdown signal. [`ServerHandle::shutdown`] stops every task, waits for
//! each and reports the ones that failed.

use std::net::SocketAddr;
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::admin::setup::{SetupCode, SetupCodeError};
use crate::admin::throttle::SignIns;
pub use crate::admin::ServerState;
use crate::clock::Clock;
use crate::config::Settings;
use crate::controller::component::Component;
use crate::controller::{Controller, StatusBoard};
use crate::db::models::administrator::Administrator;
use crate::db::{Database, DbError};
use crate::dispatcher::keys::KeyCache;
use crate::dispatcher::{assignment, Dispatcher};
use crate::router::RouterHandle;

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("{addr} is already in use by another program (is Bramble already running?). Stop that program, or choose another address with `[admin] listen` in the settings file or BRAMBLE_ADMIN__LISTEN; nothing was started.")]
    PortInUse { addr: SocketAddr },
    #[error(transparent)]
    Tls(#[from] crate::admin::tls::TlsError),
    #[error(transparent)]
    SetupCode(#[from] SetupCodeError),
    #[error("cannot listen on {addr}: {source}. Choose another address with `[admin] listen` in the settings file or BRAMBLE_ADMIN__LISTEN.")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl StartError {
    pub fn code(&self) -> &'static str {
        match self {
            StartError::Database(e) => e.code(),
            StartError::PortInUse { .. } => "PORT_IN_USE",
            StartError::Bind { .. } => "BIND_FAILED",
            StartError::Tls(_) => "ADMIN_TLS_FAILED",
            StartError::SetupCode(e) => e.code(),
        }
    }
}

/// One or more tasks ended badly.
#[derive(Debug, thiserror::Error)]
#[error("{}", .failed.iter().map(|(task, why)| format!("{task}: {why}")).collect::<Vec<_>>().join("; "))]
pub struct ShutdownError {
    /// (task name, what went wrong)
    pub failed: Vec<(String, String)>,
}

/// The sockets a server listens on; bound by the caller so tests can use
/// `127.0.0.1:0` and run many servers side by side.
#[derive(Debug)]
pub struct Listeners {
    /// The Administration Service (console and API).
    pub admin: TcpListener,
    /// The Router's LAN path for directly connected devices, if enabled.
    pub lan: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses the settings name.
    pub async fn bind(settings: &Settings) -> Result<Listeners, StartError> {
        let admin = bind(settings.admin.listen).await?;
        let lan = match settings.router.lan_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Listeners { admin, lan })
    }
}

/// The running server core.
pub struct ServerHandle {
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
    shutdown: CancellationToken,
    admin_addr: SocketAddr,
    lan_addr: Option<SocketAddr>,
    state: ServerState,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("admin_addr", &self.admin_addr)
            .finish()
    }
}

/// Entry point of the server core.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// The components the Controller starts (seed: Messaging Agent, Policy
    /// Service, Synchronization Service, MailStore Service).
    pub fn default_components(settings: &Settings) -> Vec<Arc<dyn Component>> {
        vec![
            Arc::new(crate::messaging_agent::MessagingAgent::new(
                settings.mail.clone(),
                settings.server_name.clone(),
            )),
            Arc::new(crate::policy::PolicyService::new(
                settings.policy.clone(),
                settings.server_name.clone(),
            )),
            Arc::new(crate::sync::SynchronizationService::new(
                settings.sync.clone(),
            )),
            Arc::new(
                crate::mailstore::MailStore::new(settings.directories.clone())
                    .with_services(settings.policy.services.clone()),
            ),
        ]
    }

    /// Binds the Administration Service on `settings.admin.listen` and
    /// starts everything. Service passwords the settings leave empty are
    /// read from the Configuration Database ([`Settings::fill_stored_secrets`]).
    pub async fn start(settings: Settings) -> Result<ServerHandle, StartError> {
        let listeners = Listeners::bind(&settings).await?;
        let settings = Self::with_stored_secrets(settings).await?;
        let components = Self::default_components(&settings);
        Self::start_with(settings, listeners, components).await
    }

    /// `settings` with the service passwords they leave empty filled from
    /// the Configuration Database (opened, and closed again, for it).
    pub async fn with_stored_secrets(mut settings: Settings) -> Result<Settings, StartError> {
        let settings = tokio::task::spawn_blocking(move || -> Result<Settings, DbError> {
            let db = Database::open(&settings.database())?;
            db.run_blocking(|conn| settings.fill_stored_secrets(conn, db.sealer()))?;
            Ok(settings)
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))??;
        Ok(settings)
    }

    /// Starts with a listener the caller bound (tests bind `127.0.0.1:0`)
    /// and the given components.
    pub async fn start_with(
        settings: Settings,
        listeners: Listeners,
        components: Vec<Arc<dyn Component>>,
    ) -> Result<ServerHandle, StartError> {
        let admin_addr = listeners
            .admin
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: settings.admin.listen,
                source,
            })?;
        let lan_addr = listeners.lan.as_ref().and_then(|l| l.local_addr().ok());
        let tls = crate::admin::tls::acceptor(&settings.console())?;
        let db_settings = settings.clone();
        let (db, first_run) = tokio::task::spawn_blocking(move || -> Result<(Database, bool), DbError> {
            let db = Database::open(&db_settings.database())?;
            // The domain signing key exists from the server's first start. A
            // key file that does not match (restored without it) must not
            // keep the server from starting: signing then fails, loudly.
            if let Err(e) = db.run_blocking(|conn| {
                crate::policy::signing::DomainKey::load_or_create(conn, db.sealer()).map(|_| ())
            }) {
                tracing::error!(target: "bramble::db", code = e.code(), "the domain signing key cannot be read: {e}; IT policies cannot be signed until the database's own key file is restored");
            }
            db.run_blocking(|conn| {
                let agents = assignment::ensure_agents(
                    conn,
                    &db_settings.server_name,
                    db_settings.messaging_agents,
                )?;
                assignment::assign_unassigned(conn, &agents)
            })?;
            let administrators = db.run_blocking(Administrator::count)?;
            Ok((db, administrators == 0))
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))??;
        let status = StatusBoard::default();
        let router = RouterHandle::new();
        let dispatcher = Dispatcher::new(
            db.clone(),
            KeyCache::new(db.clone()),
            router.clone(),
            settings.dispatcher.clone(),
            Clock::new(),
        );
        let setup = SetupCode::prepare(&settings.data_dir, first_run)?;
        if setup.code().is_some() {
            warn!(target: "bramble::server", file = %setup.path().display(), "no administrator exists yet: the console asks for the setup code, which `bramble serve` prints and the file holds");
        }
        let state = ServerState {
            settings: Arc::new(settings.console()),
            db: db.clone(),
            status: status.clone(),
            started_at: OffsetDateTime::now_utc(),
            dispatcher: dispatcher.clone(),
            sign_ins: Arc::new(SignIns::new(
                settings.admin.sign_in_checks,
                settings.admin.sign_in_queue,
            )),
            setup: Arc::new(setup),
        };
        let shutdown = CancellationToken::new();
        let (events_tx, events_rx) = tokio::sync::mpsc::channel(4096);

        let mut tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)> = Vec::new();
        tasks.push((
            "dispatcher",
            tokio::spawn(dispatcher.clone().run(events_rx, shutdown.clone())),
        ));
        tasks.push((
            "router",
            tokio::spawn(crate::router::link::run(
                settings.router.clone(),
                settings.server_name.clone(),
                db.clone(),
                router.clone(),
                events_tx.clone(),
                shutdown.clone(),
            )),
        ));
        if let Some(lan) = listeners.lan {
            tasks.push((
                "router-lan",
                tokio::spawn(crate::router::lan::serve(
                    lan,
                    crate::router::lan::LanLimits::of(&settings.router),
                    router,
                    Arc::new(dispatcher.keys().clone()),
                    events_tx,
                    shutdown.clone(),
                )),
            ));
        }
        tasks.push((
            "audit",
            tokio::spawn(watch_audit_log(
                db.clone(),
                settings.database.audit_verify_hours,
                shutdown.clone(),
            )),
        ));
        let controller = Controller::new(settings.controller.clone(), db, components, status)
            .with_dispatcher(dispatcher.clone());
        let stop = shutdown.clone();
        tasks.push((
            "controller",
            tokio::spawn(async move { Ok(controller.run(stop).await?) }),
        ));
        tasks.push((
            "administration",
            tokio::spawn(crate::admin::serve(
                listeners.admin,
                state.clone(),
                tls,
                shutdown.clone(),
            )),
        ));
        info!(target: "bramble::server", version = crate::VERSION, admin = %admin_addr, lan = ?lan_addr, "Bramble started");
        Ok(ServerHandle {
            tasks,
            shutdown,
            admin_addr,
            lan_addr,
            state,
        })
    }
}

/// Verifies the audit chain when the server starts and then every `hours`
/// (0: at start-up only), until shutdown. A broken chain is logged and
/// shown in `GET /health` ([`Database::check_audit_log`]); it does not stop
/// the server.
async fn watch_audit_log(
    db: Database,
    hours: u64,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        if let Err(e) = db.check_audit_log().await {
            error!(target: "bramble::audit", code = e.code(), "cannot verify the audit log: {e}");
        }
        if hours == 0 {
            shutdown.cancelled().await;
            return Ok(());
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(std::time::Duration::from_secs(hours.saturating_mul(3600))) => {}
        }
    }
}

impl ServerHandle {
    /// Where the Administration Service listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where the Router's LAN path listens, if enabled.
    pub fn lan_addr(&self) -> Option<SocketAddr> {
        self.lan_addr
    }

    /// The Dispatcher: send to devices, subscribe to delivery events.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.state.dispatcher
    }

    /// `http://127.0.0.1:PORT` (`https://` when the console is served
    /// over TLS), for the console.
    pub fn admin_url(&self) -> String {
        let scheme = if self.state.settings.admin.tls_enabled() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.admin_addr)
    }

    /// Shared state: settings, database, component statuses.
    pub fn state(&self) -> &ServerState {
        &self.state
    }

    /// A token cancelled when the server shuts down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Resolves when any task ends on its own (which only happens on failure).
    pub async fn any_task_ended(&mut self) -> &'static str {
        let waits = self.tasks.iter_mut().map(|(name, handle)| {
            Box::pin(async move {
                let _ = (&mut *handle).await;
                *name
            })
        });
        futures::future::select_all(waits).await.0
    }

    /// Stops every task and waits for each; reports those that failed.
    pub async fn shutdown(self) -> Result<(), ShutdownError> {
        info!(target: "bramble::server", "shutting down");
        self.shutdown.cancel();
        let mut failed = Vec::new();
        for (name, handle) in self.tasks {
            let outcome = match handle.await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => format!("{e:#}"),
                Err(join) if join.is_panic() => "panicked".to_owned(),
                Err(_) => "was cancelled".to_owned(),
            };
            error!(target: "bramble::server", task = name, "{outcome}");
            failed.push((name.to_owned(), outcome));
        }
        if failed.is_empty() {
            info!(target: "bramble::server", "stopped");
            Ok(())
        } else {
            Err(ShutdownError { failed })
        }
    }
}

/// Binds `addr`, turning "address in use" into words.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            StartError::PortInUse { addr }
        } else {
            StartError::Bind { addr, source }
        }
    })
}
