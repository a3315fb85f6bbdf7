//! `bramble user activation-password set|generate`: activation passwords
//! for wireless enterprise activation, with an audit entry for each;
//! `bramble user policy`: the IT policy that applies to a user, rule by rule.

use bramble::clock::Clock;
use bramble::config::Settings;
use bramble::db::models::activation_password::ActivationPasswordInfo;
use bramble::db::models::audit;
use bramble::db::models::user::User;
use bramble::db::Database;
use bramble::policy::activation::{self, ActivationError};
use bramble::policy::resolve::{self, MergeMode, RuleSource, Via};
use clap::Subcommand;

use crate::Failure;

#[derive(Subcommand)]
pub enum UserCommand {
    /// The user's activation password for wireless activation.
    ActivationPassword {
        #[command(subcommand)]
        command: ActivationPasswordCommand,
    },
    /// The IT policy that applies to the user: each rule's value and where
    /// it came from.
    Policy {
        /// The user's e-mail address.
        #[arg(long)]
        email: String,
        /// Merge every assigned policy, taking each rule's most restrictive
        /// value, instead of letting one policy win.
        #[arg(long)]
        merge: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The service books the user's devices receive: the server's list
    /// (`[policy] services`) with the user's own exceptions.
    Services {
        #[arg(long)]
        email: String,
        /// Turn a service on for this user (CMIME, CICAL, SYNC, IPPP,
        /// BrowserConfig, ALP, BBIM).
        #[arg(long, value_name = "SERVICE")]
        enable: Vec<String>,
        /// Turn a service off for this user.
        #[arg(long, value_name = "SERVICE")]
        disable: Vec<String>,
        /// Back to the server's list for this service.
        #[arg(long, value_name = "SERVICE")]
        default: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum ActivationPasswordCommand {
    /// Set a password you choose; it is read from standard input, or
    /// prompted for twice on a terminal.
    Set {
        /// The user's e-mail address.
        #[arg(long)]
        email: String,
        /// Hours until the password expires (default 48, at most 720).
        #[arg(long)]
        hours: Option<u32>,
    },
    /// Generate a password and print it once.
    Generate {
        /// The user's e-mail address.
        #[arg(long)]
        email: String,
        /// Number of characters (default 8).
        #[arg(long)]
        length: Option<usize>,
        /// Hours until the password expires (default 48, at most 720).
        #[arg(long)]
        hours: Option<u32>,
    },
}

/// `2026-11-29 05:36 UTC`: to the minute, as an administrator reads it.
fn when(at: time::PrimitiveDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    at.format(&format).unwrap_or_else(|_| format!("{at} UTC"))
}

fn failure(e: ActivationError) -> Failure {
    Failure::new(e.code(), &e)
}

/// Writes the password and its audit entry in one transaction.
fn store(
    db: &Database,
    action: &'static str,
    make: impl FnOnce(
        &mut bramble::db::Conn,
    ) -> Result<(User, ActivationPasswordInfo, Option<String>), ActivationError>,
) -> Result<(User, ActivationPasswordInfo, Option<String>), Failure> {
    db.run_blocking(|conn| {
        Ok(conn.immediate_transaction(|conn| {
            let (user, info, generated) = make(conn)?;
            audit::append(
                conn,
                "bramble user activation-password",
                action,
                &format!("user/{}", user.id),
                None,
                Some(serde_json::json!({
                    "email": user.email,
                    "expires_at": when(info.expires_at),
                    "generated": generated.is_some(),
                })),
            )?;
            Ok((user, info, generated))
        }))
    })
    .map_err(|e| Failure::new(e.code(), &e))?
    .map_err(failure)
}

fn show_policy(settings: &Settings, email: &str, merge: bool, json: bool) -> Result<(), Failure> {
    let db = Database::open(&settings.database()).map_err(|e| Failure::new(e.code(), &e))?;
    let mode = if merge {
        MergeMode::MostRestrictive
    } else {
        MergeMode::Precedence
    };
    let email = email.trim().to_owned();
    let wanted = email.clone();
    let resolved = db
        .run_blocking(move |conn| match User::find_by_email(conn, &wanted)? {
            Some(user) => resolve::resolve_with(conn, user.id, mode).map(Some),
            None => Ok(None),
        })
        .map_err(|e| Failure::new(e.code(), &e))?
        .ok_or_else(|| {
            Failure::new(
                "USER_NOT_FOUND",
                format!("no user has the e-mail address {email}; add the user first"),
            )
        })?;
    if json {
        let text = serde_json::to_string_pretty(&resolved)
            .map_err(|e| Failure::new("ENCODING_FAILED", e))?;
        println!("{text}");
        return Ok(());
    }
    for (name, rule) in &resolved.rules {
        let from = match &rule.source {
            RuleSource::CatalogDefault => "rule default".to_owned(),
            RuleSource::Policy(source) => match source.via {
                Via::User => format!("policy `{}` (assigned to the user)", source.policy_name),
                Via::Group { group_id, rank } => format!(
                    "policy `{}` (group {group_id}, rank {rank})",
                    source.policy_name
                ),
                Via::Default => format!("policy `{}` (the default)", source.policy_name),
            },
        };
        println!("{name:<24} {:<24} {from}", rule.value.to_string());
    }
    Ok(())
}

pub fn run(settings: &Settings, command: UserCommand) -> Result<(), Failure> {
    let command = match command {
        UserCommand::Policy { email, merge, json } => {
            return show_policy(settings, &email, merge, json)
        }
        UserCommand::Services {
            email,
            enable,
            disable,
            default,
        } => return services(settings, &email, &enable, &disable, &default),
        UserCommand::ActivationPassword { command } => command,
    };
    // Check what can be checked before asking for a password.
    let hours = match &command {
        ActivationPasswordCommand::Set { hours, .. }
        | ActivationPasswordCommand::Generate { hours, .. } => *hours,
    };
    activation::lifetime(hours).map_err(failure)?;
    let clock = Clock::new();
    match command {
        ActivationPasswordCommand::Set { email, hours } => {
            let password = crate::read_password(false)
                .map_err(|e| Failure::new("PASSWORD_UNREADABLE", format!("{e:#}")))?;
            let db =
                Database::open(&settings.database()).map_err(|e| Failure::new(e.code(), &e))?;
            let sealer = db.shared_sealer();
            let (user, info, _) = store(&db, "activation_password.set", |conn| {
                let (user, info) =
                    activation::set(conn, &sealer, &clock, &email, &password, hours)?;
                Ok((user, info, None))
            })?;
            println!(
                "Activation password set for {} ({}); it expires at {}. Status: initializing.",
                user.display_name,
                user.email,
                when(info.expires_at)
            );
            Ok(())
        }
        ActivationPasswordCommand::Generate {
            email,
            length,
            hours,
        } => {
            let db =
                Database::open(&settings.database()).map_err(|e| Failure::new(e.code(), &e))?;
            let sealer = db.shared_sealer();
            let (user, info, password) = store(&db, "activation_password.generate", |conn| {
                let (user, info, password) =
                    activation::generate_for(conn, &sealer, &clock, &email, length, hours)?;
                Ok((user, info, Some(password)))
            })?;
            println!("{}", password.unwrap_or_default());
            eprintln!(
                "Activation password for {} ({}); it expires at {} and is shown only now.",
                user.display_name,
                user.email,
                when(info.expires_at)
            );
            Ok(())
        }
    }
}

fn services(
    settings: &Settings,
    email: &str,
    enable: &[String],
    disable: &[String],
    default: &[String],
) -> Result<(), Failure> {
    use bramble::db::models::user_service::UserServices;
    use bramble::policy::service::{service_enabled, SERVICES};
    for name in enable.iter().chain(disable).chain(default) {
        if !SERVICES.contains(&name.as_str()) {
            return Err(Failure::new(
                "SERVICE_UNKNOWN",
                format!(
                    "`{name}` is not a service book; use any of {}",
                    SERVICES.join(", ")
                ),
            ));
        }
    }
    let db = Database::open(&settings.database()).map_err(|e| Failure::new(e.code(), &e))?;
    let exceptions = db
        .run_blocking(|conn| {
            let Some(user) = User::find_by_email(conn, email.trim())? else {
                return Ok(None);
            };
            conn.immediate_transaction(|conn| {
                for name in enable {
                    UserServices::set(conn, user.id, name, true)?;
                }
                for name in disable {
                    UserServices::set(conn, user.id, name, false)?;
                }
                for name in default {
                    UserServices::clear(conn, user.id, name)?;
                }
                if !(enable.is_empty() && disable.is_empty() && default.is_empty()) {
                    audit::append(
                        conn,
                        "bramble user services",
                        "user.services",
                        &format!("user/{}", user.id),
                        None,
                        Some(serde_json::json!({ "enable": enable, "disable": disable, "default": default })),
                    )?;
                }
                UserServices::find(conn, user.id)
            })
            .map(Some)
        })
        .map_err(|e| Failure::new(e.code(), &e))?
        .ok_or_else(|| Failure::new("USER_NOT_FOUND", format!("no user has the e-mail address {email}")))?;
    for service in SERVICES {
        let on = service_enabled(&settings.policy.services, &exceptions, service);
        let why = match exceptions.get(service) {
            Some(_) => "this user",
            None => "server default",
        };
        println!("{service:<14} {:<4} ({why})", if on { "on" } else { "off" });
    }
    Ok(())
}
