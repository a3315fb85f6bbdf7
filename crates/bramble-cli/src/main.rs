//! # bramble-cli — the `bramble` command
//!
//! The command line of the Bramble server core, built as the `bramble`
//! executable. It holds only argument parsing and printing: the server is
//! the `bramble` library, the reference device `bramble-device`, the relay
//! `bramble-relay`, and the testbed and benchmarks `bramble-testbed`.
//!
//! `bramble serve` runs the server headless (the console in a browser);
//! `bramble db migrate|check` manage the Configuration Database;
//! `bramble admin create` makes the first Security Administrator;
//! `bramble relay`, `bramble srp`, `bramble device` work the wireless side
//! ([`wireless`]);
//! `bramble bench …` measures, ending with one JSON line of figures
//! ([`bench`]);
//! `bramble testbed up|down` runs real mail servers on loopback ([`testbed`]);
//! `bramble directory sync|lookup` runs the MailStore Service by hand
//! ([`directory`]);
//! `bramble mail status` and `bramble sync status|set` show the Messaging
//! Agent and the Synchronization Service ([`mail`], [`sync`]);
//! `bramble user activation-password set|generate` prepares activation and
//! `bramble user policy` shows the IT policy that applies to a user
//! ([`user`]); `bramble secret set|delete|list` seals the service passwords
//! ([`secret`]). This file holds the commands of the server itself
//! (`serve`, `db`, `admin`) and the [`Failure`] every command ends with.
//!
//! The integration tests (`tests/it` at the top of the repository) are
//! this package's test target, since they run this executable.

mod bench;
mod directory;
mod mail;
mod secret;
mod sync;
mod testbed;
mod user;
mod wireless;

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use bramble::config::Settings;
use bramble::db::models::administrator::{Administrator, NewAdministrator, SECURITY_ADMINISTRATOR};
use bramble::db::models::audit;
use bramble::db::Database;
use bramble::{Server, VERSION};

#[derive(Parser)]
#[command(name = "bramble", version = VERSION, about = "Bramble: an open BlackBerry Enterprise Server 5.0 architecture")]
struct Cli {
    /// Settings file (TOML). Also: BRAMBLE_CONFIG.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data folder (database, logs). Overrides `data_dir`.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server without a window; the console is served to browsers.
    Serve {
        /// Address of the Administration Service (console and API).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// The Configuration Database.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Administrator accounts of the console.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Run a relay: the BlackBerry Infrastructure and wireless network that
    /// servers connect out to and devices reach.
    Relay(wireless::RelayArgs),
    /// This server's connection to the wireless network (SRP ID, key, relay).
    Srp {
        #[command(subcommand)]
        command: wireless::SrpCommand,
    },
    /// The reference device.
    Device {
        #[command(subcommand)]
        command: wireless::DeviceCommand,
    },
    /// Benchmarks; each ends with one JSON line of its figures.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Real Dovecot and Postfix on loopback from one folder, for tests,
    /// benchmarks and pilots.
    Testbed {
        #[command(subcommand)]
        command: testbed::TestbedCommand,
    },
    /// The organization's directory (MailStore Service): sync now, look up.
    Directory {
        #[command(subcommand)]
        command: directory::DirectoryCommand,
    },
    /// The Messaging Agent's mailboxes: which are watched, which are not and why.
    Mail {
        #[command(subcommand)]
        command: mail::MailCommand,
    },
    /// Organizer data (Synchronization Service): per-database settings,
    /// each user's state, records that could not be synchronized.
    Sync {
        #[command(subcommand)]
        command: sync::SyncCommand,
    },
    /// Passwords of the accounts Bramble signs in with (IMAP, SMTP, LDAP,
    /// DAV), sealed in the database.
    Secret {
        #[command(subcommand)]
        command: secret::SecretCommand,
    },
    /// Smartphone users: activation passwords, the IT policy that applies.
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Create the database or apply pending schema updates.
    Migrate,
    /// Report on the database without changing it.
    Check,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an administrator with the Security Administrator role.
    Create {
        /// Login name.
        #[arg(long)]
        login: String,
        /// Display name (defaults to the login).
        #[arg(long)]
        name: Option<String>,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// An error with a stable code, printed for an administrator.
pub struct Failure {
    code: &'static str,
    message: String,
}

impl Failure {
    pub fn new(code: &'static str, message: impl std::fmt::Display) -> Failure {
        Failure {
            code,
            message: message.to_string(),
        }
    }
}

impl<E: std::fmt::Display> From<(&'static str, E)> for Failure {
    fn from((code, e): (&'static str, E)) -> Self {
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error[{}]: {}", failure.code, failure.message);
            ExitCode::FAILURE
        }
    }
}

fn load_settings(cli: &Cli) -> Result<Settings, Failure> {
    let loaded =
        Settings::load(cli.config.as_deref()).map_err(|e| Failure::from((e.code(), &e)))?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let mut settings = loaded.settings;
    if let Some(dir) = &cli.data_dir {
        settings.data_dir = dir.clone();
    }
    Ok(settings)
}

fn run(cli: Cli) -> Result<(), Failure> {
    let settings = load_settings(&cli)?;
    match cli.command {
        Command::Serve { listen } => serve(settings, listen),
        Command::Relay(args) => wireless::relay(args),
        Command::Srp { command } => wireless::srp(&settings, command),
        Command::Device { command } => wireless::device(&settings, command),
        Command::Bench { command } => bench::run(command),
        Command::Testbed { command } => testbed::run(command),
        Command::Directory { command } => directory::run(&with_stored_secrets(settings)?, command),
        Command::Mail { command } => mail::run(&settings, command),
        Command::Sync { command } => sync::run(&settings, command),
        Command::User { command } => user::run(&settings, command),
        Command::Secret { command } => secret::run(&settings, command),
        Command::Db {
            command: DbCommand::Migrate,
        } => {
            let db =
                Database::open(&settings.database()).map_err(|e| Failure::from((e.code(), &e)))?;
            let health = Database::check(db.path(), settings.database().busy_timeout_ms)
                .map_err(|e| Failure::from((e.code(), &e)))?;
            println!(
                "Configuration Database {} is up to date ({} schema versions applied).",
                health.path.display(),
                health.applied.len()
            );
            Ok(())
        }
        Command::Db {
            command: DbCommand::Check,
        } => {
            let health = Database::check(
                &settings.database_path(),
                settings.database().busy_timeout_ms,
            )
            .map_err(|e| Failure::from((e.code(), &e)))?;
            if !health.exists {
                println!(
                    "No Configuration Database at {} yet; `bramble db migrate` or `bramble serve` creates it.",
                    health.path.display()
                );
            } else if health.pending.is_empty() {
                println!(
                    "Configuration Database {} is healthy and up to date ({} schema versions applied).",
                    health.path.display(),
                    health.applied.len()
                );
            } else {
                println!(
                    "Configuration Database {} is healthy; {} schema updates are pending ({}); `bramble db migrate` applies them.",
                    health.path.display(),
                    health.pending.len(),
                    health.pending.join(", ")
                );
            }
            Ok(())
        }
        Command::Admin {
            command:
                AdminCommand::Create {
                    login,
                    name,
                    password_stdin,
                },
        } => {
            let password = read_password(password_stdin)
                .map_err(|e| Failure::from(("PASSWORD_UNREADABLE", format!("{e:#}"))))?;
            let db =
                Database::open(&settings.database()).map_err(|e| Failure::from((e.code(), &e)))?;
            let new = NewAdministrator {
                login: login.clone(),
                display_name: name.unwrap_or_else(|| login.clone()),
                password,
            };
            // The account and its audit entry are written together.
            let admin = db
                .run_blocking(|conn| {
                    conn.immediate_transaction(|conn| {
                        let admin = Administrator::create_security_administrator(conn, &new)?;
                        audit::append(
                            conn,
                            "bramble admin create",
                            "administrator.create",
                            &format!("administrator/{}", admin.id),
                            None,
                            Some(serde_json::json!({
                                "login": admin.login,
                                "display_name": admin.display_name,
                                "roles": [SECURITY_ADMINISTRATOR],
                            })),
                        )?;
                        Ok(admin)
                    })
                })
                .map_err(|e| Failure::from((e.code(), &e)))?;
            println!(
                "Created Security Administrator `{}` (id {}).",
                admin.login, admin.id
            );
            Ok(())
        }
    }
}

/// `settings` with the service passwords they leave empty read from the
/// Configuration Database (`bramble secret set`), as the server does when
/// it starts.
fn with_stored_secrets(mut settings: Settings) -> Result<Settings, Failure> {
    let db = Database::open(&settings.database()).map_err(|e| Failure::from((e.code(), &e)))?;
    db.run_blocking(|conn| settings.fill_stored_secrets(conn, db.sealer()))
        .map_err(|e| Failure::from((e.code(), &e)))?;
    Ok(settings)
}

pub(crate) fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin || !std::io::stdin().is_terminal() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the password from standard input")?;
        text.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        let first = rpassword::prompt_password("Password: ").context("reading the password")?;
        let again =
            rpassword::prompt_password("Password again: ").context("reading the password")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        first
    };
    Ok(password)
}

fn serve(mut settings: Settings, listen: Option<SocketAddr>) -> Result<(), Failure> {
    if let Some(addr) = listen {
        settings.admin.listen = addr;
    }
    let _logs = bramble::logging::init(&settings.logging, &settings.log_dir(), true)
        .map_err(|e| Failure::from((e.code(), &e)))?;
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| Failure::from(("RUNTIME_FAILED", e)))?;
    runtime.block_on(async move {
        let mut handle = Server::start(settings).await.map_err(|e| {
            tracing::error!(target: "bramble::server", code = e.code(), "{e}");
            Failure::from((e.code(), &e))
        })?;
        let stop = shutdown_signal();
        // Whoever started the server may stop reading its output: a closed
        // pipe must not take the server down.
        let mut out = std::io::stdout();
        let _ = writeln!(out, "Bramble {VERSION} is running; console at {}", handle.admin_url());
        if let Some(code) = handle.state().setup.code() {
            let _ = writeln!(
                out,
                "No administrator exists yet. To create the first one, open the console and enter the setup code {code} (also in {}).",
                handle.state().setup.path().display()
            );
        }
        let _ = out.flush();
        let ended = tokio::select! {
            _ = stop => None,
            name = handle.any_task_ended() => Some(name),
        };
        if let Some(name) = ended {
            tracing::error!(target: "bramble::server", "the {name} task stopped unexpectedly; shutting down");
        }
        handle.shutdown().await.map_err(|e| Failure::from(("SHUTDOWN_FAILED", e)))?;
        match ended {
            Some(name) => Err(Failure::from(("TASK_FAILED", format!("the {name} task stopped unexpectedly; see the log")))),
            None => Ok(()),
        }
    })
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C elsewhere). The handlers are in
/// place as soon as this is called, not when the future is first polled,
/// so a signal that comes while the caller is still busy is not lost.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
