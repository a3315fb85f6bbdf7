//! `bramble directory …`: the MailStore Service by hand — sync a directory
//! now (progress on standard error, the run's figures on standard output)
//! or look addresses up in it.

use clap::Subcommand;

use bramble::config::Settings;
use bramble::db::models::directory::{Directory, SyncRun};
use bramble::db::Database;
use bramble::mailstore::{self, Phase, Progress};

use crate::Failure;

#[derive(Subcommand)]
pub enum DirectoryCommand {
    /// Copy users and groups from the directory into the Configuration
    /// Database now (incremental after the first run).
    Sync {
        /// The `[[directories]]` entry; default: the first.
        #[arg(long)]
        name: Option<String>,
        /// Read every entry, not only those changed since the last run.
        #[arg(long)]
        full: bool,
    },
    /// The last sync runs of a directory, newest first.
    Runs {
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 10)]
        limit: i64,
    },
    /// Address lookup as devices do it: names or e-mails containing QUERY
    /// (at most 20).
    Lookup {
        query: String,
        #[arg(long)]
        name: Option<String>,
    },
}

fn failure(e: &mailstore::DirectoryError) -> Failure {
    Failure::new(e.code(), e)
}

pub fn run(settings: &Settings, command: DirectoryCommand) -> Result<(), Failure> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::new("RUNTIME_FAILED", e))?;
    match command {
        DirectoryCommand::Sync { name, full } => {
            let directory = mailstore::find_settings(&settings.directories, name.as_deref())
                .map_err(|e| failure(&e))?
                .clone();
            let db =
                Database::open(&settings.database()).map_err(|e| Failure::new(e.code(), &e))?;
            let report = runtime.block_on(async move {
                let (tx, mut rx) = tokio::sync::watch::channel(Progress::default());
                let printer = tokio::spawn(async move {
                    let mut shown = Progress::default();
                    while rx.changed().await.is_ok() {
                        let now = *rx.borrow_and_update();
                        if now.phase != shown.phase || now.entries_read >= shown.entries_read + 1000
                        {
                            eprintln!(
                                "directory: {}, {} entries read",
                                phase_text(now.phase),
                                now.entries_read
                            );
                            shown = now;
                        }
                    }
                });
                let result = mailstore::sync(&db, &directory, full, &tx).await;
                drop(tx);
                let _ = printer.await;
                result
            });
            let report = report.map_err(|e| failure(&e))?;
            let run = &report.run;
            println!(
                "Directory {}: {} sync succeeded (run {}): read {}, created {}, updated {}, removed {}, errors {}.",
                report.directory,
                run.kind,
                run.id,
                run.entries_read,
                run.created,
                run.updated,
                run.removed,
                run.errors
            );
            for line in &report.skipped {
                println!("  skipped {line}");
            }
            Ok(())
        }
        DirectoryCommand::Runs { name, limit } => {
            let directory = mailstore::find_settings(&settings.directories, name.as_deref())
                .map_err(|e| failure(&e))?
                .name
                .clone();
            let db =
                Database::open(&settings.database()).map_err(|e| Failure::new(e.code(), &e))?;
            let runs = db
                .run_blocking(|conn| match Directory::find_by_name(conn, &directory)? {
                    Some(d) => SyncRun::find_recent(conn, d.id, limit),
                    None => Ok(Vec::new()),
                })
                .map_err(|e| Failure::new(e.code(), &e))?;
            if runs.is_empty() {
                println!("Directory {directory} has not been synced yet.");
            }
            for run in &runs {
                println!(
                    "run {} {} {} started {} finished {}: read {}, created {}, updated {}, removed {}, errors {}{}",
                    run.id,
                    run.kind,
                    run.outcome,
                    run.started_at,
                    run.finished_at
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".to_owned()),
                    run.entries_read,
                    run.created,
                    run.updated,
                    run.removed,
                    run.errors,
                    if run.message.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", run.message)
                    }
                );
            }
            Ok(())
        }
        DirectoryCommand::Lookup { query, name } => {
            let directory = mailstore::find_settings(&settings.directories, name.as_deref())
                .map_err(|e| failure(&e))?
                .clone();
            let found = runtime
                .block_on(mailstore::lookup(&directory, &query))
                .map_err(|e| failure(&e))?;
            for entry in &found {
                println!("{} <{}> ({})", entry.display_name, entry.email, entry.login);
            }
            eprintln!("{} found", found.len());
            Ok(())
        }
    }
}

fn phase_text(phase: Phase) -> &'static str {
    match phase {
        Phase::Idle => "waiting",
        Phase::Connecting => "connecting",
        Phase::ReadingUsers => "reading users",
        Phase::ReadingGroups => "reading groups",
        Phase::Writing => "writing to the Configuration Database",
        Phase::Done => "done",
        Phase::Failed => "failed",
    }
}
