//! `bramble bench …`: progress on standard error, then one JSON line of
//! figures on standard output.

use clap::Subcommand;

use crate::Failure;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Relay, server and N devices on loopback; M messages pushed.
    Transport {
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        /// Message size in bytes.
        #[arg(long, default_value_t = 2048)]
        size: usize,
    },
    /// A local slapd with N users: a full sync into an empty database, then
    /// an incremental sync after 10 changes.
    Directory {
        #[arg(long, default_value_t = 100_000)]
        entries: usize,
    },
    /// A mail testbed with U users and devices: messages delivered over
    /// LMTP at R per second for S seconds, timed to the device.
    Mail {
        #[arg(long, default_value_t = 2000)]
        users: usize,
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
    },
    /// N users in a temporary database; times pages of the console's users
    /// list with a search term over HTTP.
    Console {
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        /// Requests timed.
        #[arg(long, default_value_t = 300)]
        requests: usize,
        #[arg(long, default_value_t = 50)]
        per_page: usize,
    },
    /// A testbed, a relay and a server; N devices activate at once over
    /// the relay and e-mail, timed from request to the last step.
    Activation {
        #[arg(long, default_value_t = 200)]
        devices: usize,
    },
    /// A CalDAV/CardDAV server (Radicale) with N contacts and one device:
    /// the slow sync, then one changelist of 100 edits from the device.
    Sync {
        #[arg(long, default_value_t = 10_000)]
        contacts: usize,
    },
    /// The device side of `bench transport`, started by it in a child process.
    #[command(hide = true)]
    TransportDevices {
        #[arg(long)]
        relay: std::net::SocketAddr,
        #[arg(long)]
        srp_id: String,
        #[arg(long)]
        keys: std::path::PathBuf,
    },
}

pub fn run(command: BenchCommand) -> Result<(), Failure> {
    // Benchmarks log nothing unless asked (RUST_LOG=bramble=info, …), so
    // logging does not weigh on the figures.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::new("RUNTIME_FAILED", e))?;
    match command {
        BenchCommand::Transport {
            devices,
            messages,
            size,
        } => {
            let options = bramble_testbed::bench::transport::TransportOptions {
                devices,
                messages,
                size,
            };
            print_figures(
                runtime.block_on(bramble_testbed::bench::transport::run(options, |line| {
                    eprintln!("bench: {line}")
                })),
            )
        }
        BenchCommand::Directory { entries } => print_figures(runtime.block_on(
            bramble_testbed::bench::directory::run(entries, |line| eprintln!("bench: {line}")),
        )),
        BenchCommand::Mail {
            users,
            rate,
            seconds,
        } => {
            let options = bramble_testbed::bench::mail::MailOptions {
                users,
                rate,
                seconds,
            };
            print_figures(runtime.block_on(bramble_testbed::bench::mail::run(options)))
        }
        BenchCommand::Console {
            users,
            requests,
            per_page,
        } => {
            let options = bramble_testbed::bench::console::ConsoleOptions {
                users,
                requests,
                per_page,
            };
            print_figures(
                runtime.block_on(bramble_testbed::bench::console::run(options, |line| {
                    eprintln!("bench: {line}")
                })),
            )
        }
        BenchCommand::Activation { devices } => print_figures(runtime.block_on(
            bramble_testbed::bench::activation::run(devices, |line| eprintln!("bench: {line}")),
        )),
        BenchCommand::Sync { contacts } => print_figures(runtime.block_on(
            bramble_testbed::bench::sync::run(contacts, |line| eprintln!("bench: {line}")),
        )),
        BenchCommand::TransportDevices {
            relay,
            srp_id,
            keys,
        } => runtime
            .block_on(bramble_testbed::bench::transport::devices(
                relay, &srp_id, &keys,
            ))
            .map_err(|e| Failure::new("BENCH_FAILED", format!("{e:#}"))),
    }
}

/// A benchmark's figures as its one JSON line on standard output.
fn print_figures<T: serde::Serialize>(figures: anyhow::Result<T>) -> Result<(), Failure> {
    let figures = figures.map_err(|e| Failure::new("BENCH_FAILED", format!("{e:#}")))?;
    let line = serde_json::to_string(&figures).map_err(|e| Failure::new("BENCH_FAILED", e))?;
    println!("{line}");
    Ok(())
}
