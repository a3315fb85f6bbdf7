//! Tauri's build step: embeds `tauri.conf.json`, the capabilities and the
//! permissions of the app's own commands (each must be granted in
//! `capabilities/`; a command missing there is refused to the console).

fn main() {
    let manifest =
        tauri_build::AppManifest::new().commands(&["console_endpoint", "open_log_folder"]);
    let attributes = tauri_build::Attributes::new().app_manifest(manifest);
    if let Err(error) = tauri_build::try_build(attributes) {
        eprintln!("bramble-desktop build failed: {error:#}");
        std::process::exit(1);
    }
}
