//! Store and forward: packets held for an offline device or a disconnected
//! server, bounded in count and age.
//!
//! The unit is the packet (frame), but a message is kept whole or not at
//! all: when one fragment does not fit, the fragments of that message
//! already stored are removed and its later fragments are dropped too, so a
//! device never receives half a message from the store.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bramble_proto::frame::Frame;
use bramble_proto::{ContentType, Pin, RefId};
use tokio::time::Instant;

/// At most this many messages are remembered as "being dropped".
const MAX_DROPPING: usize = 1024;

/// Whether `frame` is the last packet of its message.
pub(crate) fn is_last(frame: &Frame) -> bool {
    frame.fragment_index.saturating_add(1) == frame.fragment_count
}

type MessageKey = (Pin, RefId, ContentType);

fn key_of(frame: &Frame) -> MessageKey {
    (frame.pin, frame.ref_id, frame.content_type)
}

/// One stored packet.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub frame: Frame,
    pub at: Instant,
    /// For a device's store: the SRP ID of the server that sent it, which
    /// receives the delivery report.
    pub origin: Option<String>,
}

/// What [`Store::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Stored,
    /// Dropped because the store is full (now, or earlier for this message).
    Full,
}

#[derive(Debug, Default)]
pub(crate) struct Store {
    entries: VecDeque<Stored>,
    dropping: HashMap<MessageKey, Instant>,
}

impl Store {
    /// Packets held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.dropping.is_empty()
    }

    /// Adds a packet unless the store holds `cap` packets already.
    pub fn push(&mut self, item: Stored, cap: usize) -> Pushed {
        let key = key_of(&item.frame);
        let last = is_last(&item.frame);
        if self.dropping.contains_key(&key) {
            if last {
                self.dropping.remove(&key);
            }
            return Pushed::Full;
        }
        if self.entries.len() >= cap {
            if item.frame.fragment_index > 0 {
                self.entries.retain(|e| key_of(&e.frame) != key);
            }
            if !last {
                if self.dropping.len() >= MAX_DROPPING {
                    if let Some(oldest) = self
                        .dropping
                        .iter()
                        .min_by_key(|(_, at)| **at)
                        .map(|(k, _)| *k)
                    {
                        self.dropping.remove(&oldest);
                    }
                }
                self.dropping.insert(key, item.at);
            }
            return Pushed::Full;
        }
        self.entries.push_back(item);
        Pushed::Stored
    }

    /// Everything, oldest first, leaving the store empty of packets.
    pub fn take_all(&mut self) -> VecDeque<Stored> {
        std::mem::take(&mut self.entries)
    }

    /// The packets `keep` selects, oldest first, leaving the others in
    /// their order.
    pub fn take_where(&mut self, keep: impl Fn(&Stored) -> bool) -> VecDeque<Stored> {
        if !self.entries.iter().any(&keep) {
            return VecDeque::new();
        }
        let (taken, rest): (VecDeque<Stored>, VecDeque<Stored>) =
            self.take_all().into_iter().partition(|e| keep(e));
        self.entries = rest;
        taken
    }

    /// Puts packets back in front (in their order), after a failed flush.
    pub fn restore_front(&mut self, mut items: VecDeque<Stored>) {
        items.append(&mut self.entries);
        self.entries = items;
    }

    /// Removes and returns packets at least `expiry` old.
    pub fn expire(&mut self, now: Instant, expiry: Duration) -> Vec<Stored> {
        self.dropping
            .retain(|_, at| now.duration_since(*at) < expiry);
        if !self
            .entries
            .iter()
            .any(|e| now.duration_since(e.at) >= expiry)
        {
            return Vec::new();
        }
        let (old, keep): (VecDeque<Stored>, VecDeque<Stored>) = self
            .take_all()
            .into_iter()
            .partition(|e| now.duration_since(e.at) >= expiry);
        self.entries = keep;
        old.into()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn item(ref_id: u64, index: u16, count: u16, at: Instant) -> Stored {
        let mut frame = Frame::single(ContentType::Cmime, Pin(7), RefId(ref_id), vec![index as u8]);
        frame.fragment_index = index;
        frame.fragment_count = count;
        Stored {
            frame,
            at,
            origin: None,
        }
    }

    #[test]
    fn bounded_and_ordered() {
        let now = Instant::now();
        let mut s = Store::default();
        assert_eq!(s.push(item(1, 0, 1, now), 2), Pushed::Stored);
        assert_eq!(s.push(item(2, 0, 1, now), 2), Pushed::Stored);
        assert_eq!(s.push(item(3, 0, 1, now), 2), Pushed::Full);
        let ids: Vec<u64> = s.take_all().iter().map(|e| e.frame.ref_id.0).collect();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn a_message_is_kept_whole_or_not_at_all() {
        let now = Instant::now();
        let mut s = Store::default();
        assert_eq!(s.push(item(1, 0, 1, now), 3), Pushed::Stored);
        assert_eq!(s.push(item(2, 0, 3, now), 3), Pushed::Stored);
        assert_eq!(s.push(item(2, 1, 3, now), 3), Pushed::Stored);
        // The third fragment does not fit: the message goes entirely.
        assert_eq!(s.push(item(2, 2, 3, now), 3), Pushed::Full);
        assert_eq!(s.len(), 1);
        // A message whose first fragment does not fit drops its later ones,
        // even once there is room again.
        assert_eq!(s.push(item(4, 0, 2, now), 1), Pushed::Full);
        assert_eq!(s.push(item(4, 1, 2, now), 5), Pushed::Full);
        assert_eq!(s.push(item(5, 0, 1, now), 5), Pushed::Stored);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn expiry_removes_only_old_entries() {
        let start = Instant::now();
        let mut s = Store::default();
        s.push(item(1, 0, 1, start), 10);
        s.push(item(2, 0, 1, start + Duration::from_secs(5)), 10);
        assert!(s
            .expire(start + Duration::from_secs(9), Duration::from_secs(10))
            .is_empty());
        let old = s.expire(start + Duration::from_secs(10), Duration::from_secs(10));
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].frame.ref_id, RefId(1));
        assert_eq!(s.len(), 1);
        let mut rest = s.take_all();
        let extra = rest.pop_front().unwrap();
        s.push(item(3, 0, 1, start), 10);
        s.restore_front(VecDeque::from(vec![extra]));
        let ids: Vec<u64> = s.take_all().iter().map(|e| e.frame.ref_id.0).collect();
        assert_eq!(ids, vec![2, 3]);
    }
}
