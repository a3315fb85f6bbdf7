//! The RefIDs a device has already shown its user, so a message delivered
//! twice on the wire (its confirmation was lost, the server sent it again)
//! is shown once; and [`SignedHistory`], what the device remembers of the
//! signed documents it acted on, kept in its key file across restarts.
//!
//! A ring of the last `window` RefIDs in arrival order; the oldest is
//! forgotten when a new one arrives at a full window. Memory grows with
//! what was received, not with the window: nothing is allocated until the
//! first message, small sets are searched linearly (8 bytes per RefID), and
//! a hash index is only built once the ring holds more than
//! [`INDEX_FROM`] RefIDs.

use std::collections::{HashSet, VecDeque};

use serde::{Deserialize, Serialize};

/// Ring length from which a hash index is kept beside the ring.
pub const INDEX_FROM: usize = 64;

#[derive(Debug, Default)]
pub struct SeenRefs {
    window: usize,
    order: VecDeque<u64>,
    index: Option<HashSet<u64>>,
}

impl SeenRefs {
    /// Remembers at most `window` RefIDs (0 remembers none: every message
    /// is new).
    pub fn new(window: usize) -> SeenRefs {
        SeenRefs {
            window,
            order: VecDeque::new(),
            index: None,
        }
    }

    pub fn contains(&self, id: u64) -> bool {
        match &self.index {
            Some(index) => index.contains(&id),
            None => self.order.contains(&id),
        }
    }

    /// Records `id`; `false` if it was already remembered.
    pub fn insert(&mut self, id: u64) -> bool {
        if self.window == 0 {
            return true;
        }
        if self.contains(id) {
            return false;
        }
        if self.order.len() >= self.window {
            if let Some(old) = self.order.pop_front() {
                if let Some(index) = &mut self.index {
                    index.remove(&old);
                }
            }
        }
        self.order.push_back(id);
        match &mut self.index {
            Some(index) => {
                index.insert(id);
            }
            None if self.order.len() > INDEX_FROM => {
                self.index = Some(self.order.iter().copied().collect());
            }
            None => {}
        }
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Most applied commands a device remembers; beyond it the one that
/// expires first is forgotten.
pub const MAX_APPLIED_COMMANDS: usize = 1000;

/// The signed documents a device acted on, so that none is acted on twice,
/// also after a restart (saved in the key file, see [`crate::keys`]).
///
/// Small by design (a benchmark runs thousands of devices in one
/// process): empty until the first policy, then one number per applied
/// command still within its validity, at most [`MAX_APPLIED_COMMANDS`].
/// A command past its expiry need not be remembered: the device refuses
/// it as expired anyway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHistory {
    /// When the last IT policy the device applied was issued (Unix
    /// seconds); an older one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_issued_at: Option<u64>,
    /// Applied commands: (command id, expires at, Unix seconds), in the
    /// order applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<(u64, u64)>,
}

impl SignedHistory {
    /// Whether command `id` was applied.
    pub fn applied(&self, id: u64) -> bool {
        self.commands.iter().any(|(c, _)| *c == id)
    }

    /// Records command `id` as applied; forgets commands expired at `now`
    /// and, beyond [`MAX_APPLIED_COMMANDS`], those expiring first.
    pub fn record_command(&mut self, id: u64, expires_at: u64, now: u64) {
        self.commands.retain(|(_, expires)| *expires >= now);
        if !self.applied(id) {
            self.commands.push((id, expires_at));
        }
        while self.commands.len() > MAX_APPLIED_COMMANDS {
            let first = self
                .commands
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, expires))| *expires)
                .map(|(i, _)| i)
                .unwrap_or(0);
            self.commands.remove(first);
        }
    }

    /// The issue time of the applied policy, when `issued_at` is older.
    pub fn outdated(&self, issued_at: u64) -> Option<u64> {
        self.policy_issued_at.filter(|applied| issued_at < *applied)
    }

    /// Records an applied policy issued at `issued_at`.
    pub fn record_policy(&mut self, issued_at: u64) {
        self.policy_issued_at = Some(
            self.policy_issued_at
                .map_or(issued_at, |t| t.max(issued_at)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_bounded_window() {
        let mut seen = SeenRefs::new(3);
        assert!(seen.insert(1) && seen.insert(2) && seen.insert(3));
        assert!(!seen.insert(2));
        assert!(seen.insert(4), "new");
        assert_eq!(seen.len(), 3);
        assert!(!seen.contains(1), "the oldest was forgotten");
        assert!(seen.insert(1), "so it counts as new again");
        assert!(!seen.contains(2));
    }

    #[test]
    fn large_windows_use_the_index_and_stay_consistent() {
        let mut seen = SeenRefs::new(1000);
        for id in 0..5000u64 {
            assert!(seen.insert(id * 7919));
            assert!(!seen.insert(id * 7919));
        }
        assert_eq!(seen.len(), 1000);
        assert!(seen.index.as_ref().is_some_and(|i| i.len() == 1000));
        assert!(seen.contains(4999 * 7919) && seen.contains(4000 * 7919));
        assert!(!seen.contains(3999 * 7919));
    }

    #[test]
    fn zero_window_remembers_nothing() {
        let mut seen = SeenRefs::new(0);
        assert!(seen.insert(5) && seen.insert(5));
        assert!(seen.is_empty());
    }

    #[test]
    fn nothing_allocated_until_used() {
        let seen = SeenRefs::new(10_000);
        assert_eq!(seen.order.capacity(), 0);
        assert!(seen.index.is_none());
    }

    #[test]
    fn signed_history_remembers_commands_until_they_expire() {
        let mut h = SignedHistory::default();
        h.record_command(7, 100, 10);
        assert!(h.applied(7) && !h.applied(8));
        h.record_command(8, 200, 50);
        h.record_command(7, 100, 50);
        assert_eq!(h.commands.len(), 2, "recorded once");
        h.record_command(9, 300, 150);
        assert!(!h.applied(7), "expired at 100, forgotten at 150");
        assert!(h.applied(8) && h.applied(9));
    }

    #[test]
    fn signed_history_is_bounded() {
        let mut h = SignedHistory::default();
        for id in 0..(MAX_APPLIED_COMMANDS as u64 + 10) {
            h.record_command(id, 1_000 + id, 0);
        }
        assert_eq!(h.commands.len(), MAX_APPLIED_COMMANDS);
        assert!(!h.applied(0), "the first to expire went first");
        assert!(h.applied(MAX_APPLIED_COMMANDS as u64 + 9));
    }

    #[test]
    fn signed_history_refuses_older_policies_only() {
        let mut h = SignedHistory::default();
        assert_eq!(h.outdated(5), None);
        h.record_policy(100);
        assert_eq!(h.outdated(99), Some(100));
        assert_eq!(h.outdated(100), None, "the same policy again is not older");
        h.record_policy(50);
        assert_eq!(h.policy_issued_at, Some(100), "never goes back");
    }
}
