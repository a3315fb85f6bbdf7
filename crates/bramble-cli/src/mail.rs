//! `bramble mail status`: the Messaging Agent's state in each mailbox.

use bramble::config::Settings;
use bramble::db::models::mailbox::{MailboxState, OutboxEntry, WatchState};
use bramble::db::models::user::User;
use bramble::db::Database;
use clap::Subcommand;

use crate::Failure;

#[derive(Subcommand)]
pub enum MailCommand {
    /// Each watched mailbox: watching or unreachable (with why), and mail
    /// from devices waiting for the SMTP server.
    Status,
}

pub fn run(settings: &Settings, command: MailCommand) -> Result<(), Failure> {
    let db = Database::open(&settings.database()).map_err(|e| Failure::new(e.code(), &e))?;
    match command {
        MailCommand::Status => {
            let (states, waiting) = db
                .run_blocking(|conn| {
                    let mut states = Vec::new();
                    for state in [
                        WatchState::Error,
                        WatchState::Starting,
                        WatchState::Watching,
                    ] {
                        for s in MailboxState::find_in_state(conn, state)? {
                            let email = User::find_by_id(conn, s.user_id)?
                                .map(|u| u.email)
                                .unwrap_or_default();
                            states.push((email, s));
                        }
                    }
                    Ok((states, OutboxEntry::count(conn)?))
                })
                .map_err(|e| Failure::new(e.code(), &e))?;
            if states.is_empty() {
                println!("No mailbox is watched yet (users need an activated device, and [mail] imap must be set).");
            }
            for (email, s) in &states {
                match (&s.state, &s.error) {
                    (WatchState::Error, Some(error)) => {
                        println!("{email}: UNREACHABLE since {:?}: {error}", s.error_at)
                    }
                    (state, _) => println!("{email}: {state:?} (last UID {})", s.last_uid),
                }
            }
            println!("{waiting} message(s) from devices waiting to be sent.");
            Ok(())
        }
    }
}
