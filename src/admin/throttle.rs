//! Slows down password guessing: after [`FREE_FAILURES`] failed sign-ins in
//! a row for one login, that login is refused for a while — one minute,
//! doubling with each further failure, at most [`MAX_WAIT`] — whatever the
//! password. A successful sign-in clears the count. Kept in memory by each
//! running server (a restart forgets it), keyed by the login as typed,
//! lower-cased, so unknown logins are throttled the same way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before the login is made to wait.
pub const FREE_FAILURES: u32 = 5;
/// The first wait.
pub const FIRST_WAIT: Duration = Duration::from_secs(60);
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Logins remembered at most (the oldest are forgotten first).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    until: Option<Instant>,
}

/// Failed sign-ins per login.
#[derive(Debug, Default)]
pub struct SignInThrottle {
    failures: Mutex<HashMap<String, Failures>>,
}

fn key(login: &str) -> String {
    login.trim().to_lowercase()
}

impl SignInThrottle {
    /// How long `login` must still wait, if it must.
    pub fn wait(&self, login: &str, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().ok()?;
        let until = failures.get(&key(login))?.until?;
        (until > now).then(|| until - now)
    }

    /// Records a failed sign-in.
    pub fn failed(&self, login: &str, now: Instant) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        if failures.len() >= MAX_ENTRIES {
            if let Some(oldest) = failures
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(k, _)| k.clone())
            {
                failures.remove(&oldest);
            }
        }
        let entry = failures.entry(key(login)).or_insert(Failures {
            count: 0,
            last: now,
            until: None,
        });
        entry.count += 1;
        entry.last = now;
        if entry.count >= FREE_FAILURES {
            let doublings = (entry.count - FREE_FAILURES).min(10);
            let wait = FIRST_WAIT.saturating_mul(1 << doublings).min(MAX_WAIT);
            entry.until = Some(now + wait);
        }
    }

    /// A successful sign-in clears the login's failures.
    pub fn succeeded(&self, login: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&key(login));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_after_five_failures_doubling_up_to_the_limit() {
        let throttle = SignInThrottle::default();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            throttle.failed("Alice", t0);
            assert_eq!(throttle.wait("alice", t0), None);
        }
        throttle.failed("alice ", t0);
        assert_eq!(throttle.wait("ALICE", t0), Some(FIRST_WAIT));
        assert_eq!(throttle.wait("bob", t0), None, "other logins are free");
        let later = t0 + FIRST_WAIT;
        assert_eq!(throttle.wait("alice", later), None, "the wait ends");
        throttle.failed("alice", later);
        assert_eq!(throttle.wait("alice", later), Some(FIRST_WAIT * 2));
        for _ in 0..20 {
            throttle.failed("alice", later);
        }
        assert_eq!(throttle.wait("alice", later), Some(MAX_WAIT));
        throttle.succeeded("Alice");
        assert_eq!(throttle.wait("alice", later), None);
    }
}
