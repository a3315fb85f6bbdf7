//! Lockout after repeated failed connections or flapping.
//!
//! Failed SRP authentications are counted per source address and SRP ID,
//! not per SRP ID alone: SRP IDs travel in clear in devices' hellos, so a
//! stranger who fails on purpose must lock out only their own address,
//! never the genuine server connecting from another. Flapping (too many
//! *authenticated* links) needs the key, so it is counted per SRP ID.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// 0: never lock out.
    pub limit: u32,
    pub window: Duration,
    pub duration: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct Lockout {
    failures: VecDeque<Instant>,
    opens: VecDeque<Instant>,
    until: Option<Instant>,
}

fn prune(events: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while events
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        events.pop_front();
    }
}

impl Lockout {
    /// When the current lockout ends, if one is in force.
    pub fn locked_until(&mut self, now: Instant) -> Option<Instant> {
        match self.until {
            Some(until) if until > now => Some(until),
            Some(_) => {
                self.until = None;
                None
            }
            None => None,
        }
    }

    /// Nothing to remember any more: no lockout in force and no event
    /// within `window` (the entry may be forgotten).
    pub fn is_idle(&mut self, now: Instant, window: Duration) -> bool {
        prune(&mut self.failures, now, window);
        prune(&mut self.opens, now, window);
        self.locked_until(now).is_none() && self.failures.is_empty() && self.opens.is_empty()
    }

    fn lock(&mut self, now: Instant, policy: Policy) {
        self.until = Some(now + policy.duration);
        self.failures.clear();
        self.opens.clear();
    }

    /// Records a failed connection; true when it starts a lockout.
    pub fn failure(&mut self, now: Instant, policy: Policy) -> bool {
        if policy.limit == 0 {
            return false;
        }
        prune(&mut self.failures, now, policy.window);
        self.failures.push_back(now);
        if self.failures.len() >= policy.limit as usize {
            self.lock(now, policy);
            return true;
        }
        false
    }

    /// Records an authenticated connection; true when it is one too many
    /// within the window (flapping) and starts a lockout.
    pub fn opened(&mut self, now: Instant, policy: Policy) -> bool {
        if policy.limit == 0 {
            return false;
        }
        prune(&mut self.opens, now, policy.window);
        self.opens.push_back(now);
        if self.opens.len() > policy.limit as usize {
            self.lock(now, policy);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        limit: 3,
        window: Duration::from_secs(60),
        duration: Duration::from_secs(300),
    };

    #[test]
    fn failures_within_the_window_lock_out_for_the_duration() {
        let t = Instant::now();
        let mut l = Lockout::default();
        assert!(!l.failure(t, POLICY));
        assert!(!l.failure(t + Duration::from_secs(10), POLICY));
        assert_eq!(l.locked_until(t + Duration::from_secs(10)), None);
        assert!(l.failure(t + Duration::from_secs(20), POLICY));
        let until = t + Duration::from_secs(320);
        assert_eq!(l.locked_until(t + Duration::from_secs(21)), Some(until));
        assert_eq!(l.locked_until(until), None);
    }

    #[test]
    fn failures_spread_out_do_not() {
        let t = Instant::now();
        let mut l = Lockout::default();
        for i in 0..10u64 {
            assert!(!l.failure(t + Duration::from_secs(31 * i), POLICY));
        }
    }

    #[test]
    fn flapping_locks_out_on_one_open_too_many() {
        let t = Instant::now();
        let mut l = Lockout::default();
        for i in 0..3u64 {
            assert!(!l.opened(t + Duration::from_secs(i), POLICY));
        }
        assert!(l.opened(t + Duration::from_secs(4), POLICY));
        assert!(l.locked_until(t + Duration::from_secs(5)).is_some());
        let off = Policy { limit: 0, ..POLICY };
        let mut l = Lockout::default();
        for _ in 0..10 {
            assert!(!l.opened(t, off));
            assert!(!l.failure(t, off));
        }
    }
}
