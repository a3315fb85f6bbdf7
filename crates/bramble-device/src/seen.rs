//! The RefIDs a device has already shown its user, so a message delivered
//! twice on the wire (its confirmation was lost, the server sent it again)
//! is shown once.
//!
//! A ring of the last `window` RefIDs in arrival order; the oldest is
//! forgotten when a new one arrives at a full window. Memory grows with
//! what was received, not with the window: nothing is allocated until the
//! first message, small sets are searched linearly (8 bytes per RefID), and
//! a hash index is only built once the ring holds more than
//! [`INDEX_FROM`] RefIDs.

use std::collections::{HashSet, VecDeque};

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
}
