//! Benchmarks behind `bramble bench …`. Each measures a figure named in an
//! issue and, where one exists, a limit measured in the same run, so the
//! result reads as a ratio rather than a number that depends on the
//! machine. Never used by tests (no timed assertions there).

pub mod activation;
pub mod console;
pub mod directory;
pub mod mail;
pub mod sync;
pub mod transport;

/// The relay's per-address and per-connection limits raised for `devices`
/// devices that all connect from 127.0.0.1: a benchmark measures
/// throughput, not the limits that keep strangers out.
pub fn relay_for_bench(
    mut config: bramble_relay::RelayConfig,
    devices: usize,
    messages: usize,
) -> bramble_relay::RelayConfig {
    let connections = devices + 64;
    config.max_device_connections = config.max_device_connections.max(connections);
    config.max_connections_per_address = config.max_connections_per_address.max(connections);
    config.max_device_entries = config.max_device_entries.max(connections);
    config.store_total = config.store_total.max(messages.saturating_mul(2));
    config.mail_per_address = config
        .mail_per_address
        .max(u32::try_from(devices.saturating_mul(2)).unwrap_or(u32::MAX));
    config.mail_queue = config.mail_queue.max(devices);
    let activation = u32::try_from(devices.saturating_mul(4)).unwrap_or(u32::MAX);
    config.activation_per_address = config.activation_per_address.max(activation);
    config
}

/// Resident memory of this process, in KiB (Linux; 0 elsewhere).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The `q` quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}
