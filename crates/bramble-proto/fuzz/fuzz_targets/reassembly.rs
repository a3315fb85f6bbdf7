//! Fragments, as decoded from the wire, pushed into a Reassembler with small
//! limits: it never panics, never holds more than its limits allow, and
//! behaves exactly like the model below (the rules of docs/protocol.md):
//! fragments of one message share PIN, RefID and content type; a repeated
//! fragment is ignored (the first copy wins); a message completes once
//! every index arrived, its payload the fragments in index order and its
//! flags those of the first fragment; a fragment count that changes drops
//! the message; a message whose count could exceed the size limit is
//! refused; at most `max_partials` messages are half-received, the oldest
//! being dropped for a new one.
//!
//! Input: one byte of limits, then operations of 2 bytes plus a payload
//! (see `next_op`).
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bramble_proto::frame::{
    Frame, Message, Reassembler, ReassemblyError, FLAG_PRIORITY, MAX_PAYLOAD,
};
use bramble_proto::{ContentType, Pin, RefId};
use libfuzzer_sys::fuzz_target;

type Key = (Pin, RefId, ContentType);

struct Partial {
    count: u16,
    parts: Vec<Option<Vec<u8>>>,
    flags: u8,
    started: u64,
}

struct Model {
    max_message: usize,
    max_partials: usize,
    partials: HashMap<Key, Partial>,
    clock: u64,
}

impl Model {
    fn push(&mut self, f: &Frame) -> Result<Option<Message>, ReassemblyError> {
        self.clock += 1;
        if f.fragment_count == 1 {
            return Ok(Some(Message {
                content_type: f.content_type,
                flags: f.flags,
                pin: f.pin,
                ref_id: f.ref_id,
                payload: f.payload.clone(),
            }));
        }
        let key = (f.pin, f.ref_id, f.content_type);
        let worst = f.fragment_count as usize * MAX_PAYLOAD;
        if worst > self.max_message {
            return Err(ReassemblyError::TooLarge {
                ref_id: f.ref_id,
                size: worst,
                limit: self.max_message,
            });
        }
        let mut evicted = false;
        if !self.partials.contains_key(&key) && self.partials.len() >= self.max_partials {
            let oldest = self
                .partials
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.partials.remove(&oldest);
                evicted = true;
            }
        }
        let now = self.clock;
        let p = self.partials.entry(key).or_insert_with(|| Partial {
            count: f.fragment_count,
            parts: vec![None; f.fragment_count as usize],
            flags: f.flags,
            started: now,
        });
        if p.count != f.fragment_count {
            let expected = p.count;
            self.partials.remove(&key);
            return Err(ReassemblyError::Inconsistent {
                ref_id: f.ref_id,
                expected,
                found: f.fragment_count,
            });
        }
        let slot = &mut p.parts[f.fragment_index as usize];
        if slot.is_none() {
            *slot = Some(f.payload.clone());
        }
        if p.parts.iter().any(Option::is_none) {
            return if evicted {
                Err(ReassemblyError::TooManyPartials(self.max_partials))
            } else {
                Ok(None)
            };
        }
        let done = self.partials.remove(&key).expect("present");
        Ok(Some(Message {
            content_type: f.content_type,
            flags: done.flags,
            pin: f.pin,
            ref_id: f.ref_id,
            payload: done.parts.into_iter().flatten().flatten().collect(),
        }))
    }

    fn held(&self) -> usize {
        self.partials
            .values()
            .flat_map(|p| p.parts.iter().flatten())
            .map(Vec::len)
            .sum()
    }
}

enum Op {
    Push(Frame),
    ExpireAll,
}

/// op byte: bits 0-1 RefID, bit 2 PIN, bit 3 content type, bits 4-7 ==
/// 0xF means "expire all"; shape byte: bits 0-2 count - 1, bits 3-5 index
/// (mod count), bit 6 priority; then payload length (0..=15, from the op
/// byte's high bits) and as many payload bytes.
fn next_op(data: &mut &[u8]) -> Option<Op> {
    let (&op, rest) = data.split_first()?;
    *data = rest;
    if op >> 4 == 0xF {
        return Some(Op::ExpireAll);
    }
    let (&shape, rest) = data.split_first()?;
    *data = rest;
    let count = u16::from(shape & 7) + 1;
    let index = u16::from((shape >> 3) & 7) % count;
    let len = usize::from(op >> 4).min(data.len());
    let (payload, rest) = data.split_at(len);
    *data = rest;
    let frame = Frame {
        content_type: if op & 8 == 0 {
            ContentType::Cmime
        } else {
            ContentType::Sync
        },
        flags: if shape & 0x40 != 0 { FLAG_PRIORITY } else { 0 },
        pin: Pin(0x2A3B_4C5D + u32::from((op >> 2) & 1)),
        ref_id: RefId(u64::from(op & 3)),
        fragment_index: index,
        fragment_count: count,
        payload: payload.to_vec(),
    };
    Some(Op::Push(frame))
}

/// Waits for the monotonic clock to move, so every partial message starts
/// at a distinct instant and "the oldest" is never a tie.
fn tick() {
    let t = Instant::now();
    while Instant::now() == t {}
}

fuzz_target!(|data: &[u8]| {
    let Some((&limits, mut data)) = data.split_first() else {
        return;
    };
    let max_message = MAX_PAYLOAD * usize::from(1 + (limits & 7));
    let max_partials = usize::from(1 + ((limits >> 3) & 3));
    let mut real = Reassembler::new(max_message, max_partials);
    let mut model = Model {
        max_message,
        max_partials,
        partials: HashMap::new(),
        clock: 0,
    };
    while let Some(op) = next_op(&mut data) {
        match op {
            Op::ExpireAll => {
                assert_eq!(real.expire(Duration::ZERO), model.partials.len());
                model.partials.clear();
            }
            Op::Push(frame) => {
                // Through the wire: what the reassembler sees was decoded.
                let bytes = frame.encode().expect("small frames encode");
                let (decoded, used) = Frame::decode(&bytes).expect("decodes");
                assert_eq!(used, bytes.len());
                assert_eq!(decoded, frame);
                // Only a new partial message takes the time; only then
                // must it differ from the others'.
                let key = (decoded.pin, decoded.ref_id, decoded.content_type);
                if decoded.fragment_count > 1 && !model.partials.contains_key(&key) {
                    tick();
                }
                let expected = model.push(&decoded);
                let got = real.push(decoded);
                assert_eq!(got, expected);
                if let Ok(Some(m)) = &got {
                    assert!(m.payload.len() <= max_message.max(MAX_PAYLOAD));
                }
            }
        }
        assert_eq!(real.pending(), model.partials.len());
        assert!(real.pending() <= max_partials);
        assert!(model.held() <= max_partials * max_message);
    }
});
