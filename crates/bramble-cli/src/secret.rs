//! `bramble secret set|delete|list`: the passwords of the accounts Bramble
//! signs in with (IMAP, SMTP, each directory, the organizer server),
//! sealed in the Configuration Database. The server uses a stored password
//! only when neither the environment nor the settings file gives one
//! (`docs/operations.md`, "Service passwords"). Each change is audited;
//! the value never is.

use bramble::config::{self, Settings};
use bramble::db::models::{audit, service_secret};
use bramble::db::Database;
use clap::Subcommand;

use crate::Failure;

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Seal a password in the database: `imap`, `smtp`, `dav` or
    /// `ldap/<directory name>`. The value is read from standard input, or
    /// prompted for twice on a terminal.
    Set {
        /// `imap`, `smtp`, `dav` or `ldap/<directory name>`.
        name: String,
    },
    /// Remove a stored password.
    Delete { name: String },
    /// The names that have a stored password (never the values).
    List,
}

fn check_name(name: &str) -> Result<(), Failure> {
    if config::is_service_secret_name(name) {
        Ok(())
    } else {
        Err(Failure::new(
            "SECRET_NAME_UNKNOWN",
            format!("`{name}` is not a service password Bramble uses; name one of imap, smtp, dav or ldap/<directory name>"),
        ))
    }
}

pub fn run(settings: &Settings, command: SecretCommand) -> Result<(), Failure> {
    let open = || Database::open(&settings.database()).map_err(|e| Failure::from((e.code(), &e)));
    match command {
        SecretCommand::Set { name } => {
            check_name(&name)?;
            let value = crate::read_password(false)
                .map_err(|e| Failure::from(("PASSWORD_UNREADABLE", format!("{e:#}"))))?;
            let db = open()?;
            let sealer = db.shared_sealer();
            db.run_blocking(|conn| {
                conn.immediate_transaction(|conn| {
                    service_secret::set(conn, &sealer, &name, &value)?;
                    audit::append(
                        conn,
                        "bramble secret set",
                        "service_secret.set",
                        &format!("service_secret/{name}"),
                        None,
                        None,
                    )?;
                    Ok(())
                })
            })
            .map_err(|e| Failure::from((e.code(), &e)))?;
            println!("Stored the `{name}` password, sealed; the server uses it from its next start when neither the environment nor the settings file gives one.");
            Ok(())
        }
        SecretCommand::Delete { name } => {
            check_name(&name)?;
            let db = open()?;
            let removed = db
                .run_blocking(|conn| {
                    conn.immediate_transaction(|conn| {
                        let removed = service_secret::delete(conn, &name)?;
                        if removed {
                            audit::append(
                                conn,
                                "bramble secret delete",
                                "service_secret.delete",
                                &format!("service_secret/{name}"),
                                None,
                                None,
                            )?;
                        }
                        Ok(removed)
                    })
                })
                .map_err(|e| Failure::from((e.code(), &e)))?;
            if removed {
                println!("Removed the stored `{name}` password.");
            } else {
                println!("No `{name}` password was stored.");
            }
            Ok(())
        }
        SecretCommand::List => {
            let db = open()?;
            let names = db
                .run_blocking(service_secret::names)
                .map_err(|e| Failure::from((e.code(), &e)))?;
            for name in names {
                println!("{name}");
            }
            Ok(())
        }
    }
}
