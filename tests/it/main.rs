//! Integration tests: one binary (see STYLE.md), one module per concern.
//! They start the real server core on free loopback ports and run the real
//! `bramble` executable against temporary data folders.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod activation;
mod admin;
mod attacker;
mod cli;
mod console;
mod directory;
mod fixture;
mod lookup;
mod mail;
mod openapi;
mod server;
mod sync;
mod testbed;
mod wireless;
