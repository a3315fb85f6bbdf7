//! # Bramble server core
//!
//! Bramble re-implements the BlackBerry Enterprise Server 5.0 architecture.
//! This crate is the server core: every seed component is one module, named
//! as the specification names it, and [`Server::start`] runs them all in one
//! process (the desktop window and `bramble serve` both call it).
//!
//! Layout:
//! - [`config`]: the settings file (TOML) with `BRAMBLE_…` overrides.
//! - [`logging`]: daily rolling log files plus the console, one target per
//!   component.
//! - [`db`]: the BlackBerry Configuration Database (diesel + r2d2, SQLite).
//! - [`controller`]: the BlackBerry Controller — starts components, records
//!   their heartbeats, restarts those that hang or crash.
//! - [`admin`]: the BlackBerry Administration Service — the console's HTTP
//!   JSON API and the web UI it serves.
//! - [`router`]: the BlackBerry Router — the outbound SRP link to the relay
//!   and the LAN path for devices connected directly.
//! - [`dispatcher`]: the BlackBerry Dispatcher — compress + encrypt to
//!   devices, decrypt + decompress from them, the outbound queue with
//!   delivery confirmation and resend, users assigned to Messaging Agents.
//! - [`clock`]: wall time that tests drive with a paused tokio clock.
//! - [`messaging_agent`], [`policy`], [`sync`], [`mailstore`]: the components
//!   the Controller starts (seed: "The BlackBerry Controller is also
//!   responsible for starting…"). The MailStore Service copies users and
//!   groups from LDAP directories; the Synchronization Service keeps
//!   devices' organizer data in step with a CalDAV/CardDAV server and
//!   takes backups and diagnostics.
//! - [`server`]: [`Server::start`] and the [`ServerHandle`] that owns the
//!   named tasks and the shutdown signal.
//!
//! The modules are layered in floors — `db` at the bottom, then the
//! Router, the Dispatcher, the Controller, the services side by side, the
//! console, and `config` and `server` on top — and a module imports only
//! floors below its own; `docs/architecture.md` lists them and the unit
//! test in `floors.rs` holds the code to that list.
//!
//! Nothing here exists only for tests or measurements: the `bramble`
//! command is `crates/bramble-cli`, and the testbed of real mail, directory
//! and organizer servers, direct key provisioning for reference devices and
//! the benchmarks are `crates/bramble-testbed`.

pub mod admin;
pub mod clock;
pub mod config;
pub mod controller;
pub mod db;
pub mod dispatcher;
#[cfg(test)]
mod floors;
pub mod logging;
pub mod mailstore;
pub mod messaging_agent;
pub mod policy;
pub mod router;
pub mod server;
pub mod sync;

pub use config::Settings;
pub use server::{Server, ServerHandle};

/// The version of this build, shown by `bramble --version` and `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
