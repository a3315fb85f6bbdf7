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
