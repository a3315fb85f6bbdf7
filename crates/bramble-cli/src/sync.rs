//! `bramble sync status|set`: the Synchronization Service's per-database
//! settings, and where each user's organizer data stands.

use bramble::config::Settings;
use bramble::db::models::sync::{
    SyncItemError, SyncSetting, SyncSettingChange, SyncState, SyncStatus,
};
use bramble::db::models::user::User;
use bramble::db::Database;
use bramble_proto::sync::{ConflictResolution, OrganizerDatabase, SyncDirection};
use clap::{Subcommand, ValueEnum};

use crate::Failure;

#[derive(Subcommand)]
pub enum SyncCommand {
    /// The per-database settings, each user's databases (in sync, slow
    /// sync running, or failing and why) and records that could not be
    /// synchronized.
    Status,
    /// Changes how one organizer database is synchronized; devices are
    /// told within `[sync] poll_secs`.
    Set {
        #[arg(long, value_enum)]
        database: DatabaseArg,
        /// Synchronize this database at all.
        #[arg(long)]
        enabled: Option<bool>,
        #[arg(long, value_enum)]
        direction: Option<DirectionArg>,
        /// Who wins when both sides changed a record.
        #[arg(long, value_enum)]
        conflict: Option<ConflictArg>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DatabaseArg {
    Contacts,
    Calendar,
    Tasks,
    Memos,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DirectionArg {
    ServerToDevice,
    DeviceToServer,
    Bidirectional,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ConflictArg {
    ServerWins,
    DeviceWins,
}

fn database(arg: DatabaseArg) -> OrganizerDatabase {
    match arg {
        DatabaseArg::Contacts => OrganizerDatabase::Contacts,
        DatabaseArg::Calendar => OrganizerDatabase::Calendar,
        DatabaseArg::Tasks => OrganizerDatabase::Tasks,
        DatabaseArg::Memos => OrganizerDatabase::Memos,
    }
}

fn describe(s: &SyncSetting) -> String {
    let direction = match s.direction {
        SyncDirection::ServerToDevice => "server to device",
        SyncDirection::DeviceToServer => "device to server",
        SyncDirection::Bidirectional => "both ways",
    };
    let conflict = match s.conflict {
        ConflictResolution::ServerWins => "server wins",
        ConflictResolution::DeviceWins => "device wins",
    };
    if s.enabled {
        format!("{:<9} on, {direction}, {conflict}", s.database.as_str())
    } else {
        format!("{:<9} off", s.database.as_str())
    }
}

pub fn run(settings: &Settings, command: SyncCommand) -> Result<(), Failure> {
    let db = Database::open(&settings.database()).map_err(|e| Failure::new(e.code(), &e))?;
    match command {
        SyncCommand::Status => {
            let (all, users) = db
                .run_blocking(|conn| {
                    let all = SyncSetting::find_all(conn)?;
                    let mut users = Vec::new();
                    for id in SyncState::find_users(conn)? {
                        let email = User::find_by_id(conn, id)?
                            .map(|u| u.email)
                            .unwrap_or_default();
                        users.push((
                            email,
                            SyncState::find_by_user(conn, id)?,
                            SyncItemError::find_by_user(conn, id)?,
                        ));
                    }
                    Ok((all, users))
                })
                .map_err(|e| Failure::new(e.code(), &e))?;
            match &settings.sync.url {
                Some(url) => println!("Organizer server: {url}"),
                None => println!(
                    "No organizer server is configured ([sync] url): wireless synchronization is off."
                ),
            }
            for s in &all {
                println!("  {}", describe(s));
            }
            if users.is_empty() {
                println!("No device has synchronized yet.");
            }
            for (email, states, errors) in users {
                let line: Vec<String> = states
                    .iter()
                    .map(|s| {
                        let state = match s.state {
                            SyncStatus::InSync => "in sync",
                            SyncStatus::SlowSync => "slow sync",
                            SyncStatus::Error => "FAILING",
                        };
                        format!("{} {state}", s.database)
                    })
                    .collect();
                println!("{email}: {}", line.join(", "));
                for s in states.iter().filter(|s| s.state == SyncStatus::Error) {
                    if let Some(error) = &s.error {
                        println!("  {} since {:?}: {error}", s.database, s.error_at);
                    }
                }
                for e in errors {
                    println!(
                        "  {} record {} ({} side) skipped: {}",
                        e.database,
                        e.item,
                        match e.side {
                            bramble::db::models::sync::ErrorSide::Server => "server",
                            bramble::db::models::sync::ErrorSide::Device => "device",
                        },
                        e.message
                    );
                }
            }
            Ok(())
        }
        SyncCommand::Set {
            database: which,
            enabled,
            direction,
            conflict,
        } => {
            let which = database(which);
            let change = SyncSettingChange {
                enabled,
                direction: direction.map(|d| match d {
                    DirectionArg::ServerToDevice => SyncDirection::ServerToDevice,
                    DirectionArg::DeviceToServer => SyncDirection::DeviceToServer,
                    DirectionArg::Bidirectional => SyncDirection::Bidirectional,
                }),
                conflict: conflict.map(|c| match c {
                    ConflictArg::ServerWins => ConflictResolution::ServerWins,
                    ConflictArg::DeviceWins => ConflictResolution::DeviceWins,
                }),
            };
            // The setting and its audit entry are written together.
            let saved = db
                .run_blocking(|conn| SyncSetting::change(conn, "bramble sync set", which, change))
                .map_err(|e| Failure::new(e.code(), &e))?;
            println!("{}", describe(&saved));
            Ok(())
        }
    }
}
