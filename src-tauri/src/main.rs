//! `bramble-desktop`: the Bramble Administration Service console in a window.
//! See the library crate for what it does.

// No console window next to the app on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    std::process::exit(bramble_desktop::run());
}
