//! Packets on the wire.
//!
//! ```text
//! offset size  field
//!  0     4     length L of what follows (big-endian), 20 <= L <= 65532
//!  4     1     version (1)
//!  5     1     content type (see ContentType)
//!  6     1     flags (bit 0: priority; others 0)
//!  7     1     reserved, 0
//!  8     4     PIN (big-endian)
//! 12     8     RefID (big-endian)
//! 20     2     fragment index (0-based)
//! 22     2     fragment count (>= 1, index < count)
//! 24     L-20  payload
//! ```
//!
//! A packet is at most 64 KiB including its length field. A message larger
//! than one packet's payload is split into fragments sharing the PIN, RefID
//! and content type ([`split`]) and put back together by a [`Reassembler`]
//! that bounds how much it holds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::{ContentType, Pin, RefId, PROTOCOL_VERSION};

/// Largest packet, length field included.
pub const MAX_PACKET: usize = 64 * 1024;
/// Bytes of the length field.
pub const LENGTH_LEN: usize = 4;
/// Bytes of the header after the length field.
pub const HEADER_LEN: usize = 20;
/// Largest payload of one packet.
pub const MAX_PAYLOAD: usize = MAX_PACKET - LENGTH_LEN - HEADER_LEN;
/// Default bound on a reassembled message.
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Default bound on the bytes all unfinished messages hold together.
pub const DEFAULT_MAX_HELD: usize = 64 * 1024 * 1024;

/// Flag: deliver ahead of normal traffic ("forward with priority").
pub const FLAG_PRIORITY: u8 = 0b0000_0001;
const KNOWN_FLAGS: u8 = FLAG_PRIORITY;

/// One packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub content_type: ContentType,
    pub flags: u8,
    pub pin: Pin,
    pub ref_id: RefId,
    pub fragment_index: u16,
    pub fragment_count: u16,
    pub payload: Vec<u8>,
}

/// Why bytes are not a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("more bytes are needed to complete the packet")]
    Incomplete,
    #[error("packet length {0} is outside 20..=65532")]
    BadLength(usize),
    #[error("unsupported protocol version {0} (this side speaks 1)")]
    UnsupportedVersion(u8),
    #[error("unknown content type {0}")]
    UnknownContentType(u8),
    #[error("unknown flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("reserved byte is {0}, not 0")]
    Reserved(u8),
    #[error("fragment {index} of {count} is not a valid position")]
    BadFragment { index: u16, count: u16 },
    #[error("payload of {0} bytes does not fit in one packet (at most {MAX_PAYLOAD})")]
    PayloadTooLarge(usize),
    #[error("message of {size} bytes is larger than the limit of {limit}")]
    MessageTooLarge { size: usize, limit: usize },
}

impl Frame {
    /// A single-packet message.
    pub fn single(content_type: ContentType, pin: Pin, ref_id: RefId, payload: Vec<u8>) -> Frame {
        Frame {
            content_type,
            flags: 0,
            pin,
            ref_id,
            fragment_index: 0,
            fragment_count: 1,
            payload,
        }
    }

    /// The packet's bytes, length field first.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(LENGTH_LEN + HEADER_LEN + self.payload.len());
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Appends the packet's bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        if self.payload.len() > MAX_PAYLOAD {
            return Err(FrameError::PayloadTooLarge(self.payload.len()));
        }
        if self.fragment_count == 0 || self.fragment_index >= self.fragment_count {
            return Err(FrameError::BadFragment {
                index: self.fragment_index,
                count: self.fragment_count,
            });
        }
        let length = (HEADER_LEN + self.payload.len()) as u32;
        out.extend_from_slice(&length.to_be_bytes());
        out.push(PROTOCOL_VERSION);
        out.push(self.content_type as u8);
        out.push(self.flags);
        out.push(0);
        out.extend_from_slice(&self.pin.0.to_be_bytes());
        out.extend_from_slice(&self.ref_id.0.to_be_bytes());
        out.extend_from_slice(&self.fragment_index.to_be_bytes());
        out.extend_from_slice(&self.fragment_count.to_be_bytes());
        out.extend_from_slice(&self.payload);
        Ok(())
    }

    /// The length a packet claims, from its first four bytes; checked
    /// against the limits before anything is allocated.
    pub fn declared_length(prefix: [u8; LENGTH_LEN]) -> Result<usize, FrameError> {
        let length = u32::from_be_bytes(prefix) as usize;
        if !(HEADER_LEN..=MAX_PACKET - LENGTH_LEN).contains(&length) {
            return Err(FrameError::BadLength(length));
        }
        Ok(length)
    }

    /// Decodes one packet from the start of `buf`; returns it and the bytes
    /// used. [`FrameError::Incomplete`] means: read more and try again.
    pub fn decode(buf: &[u8]) -> Result<(Frame, usize), FrameError> {
        let prefix: [u8; LENGTH_LEN] = buf
            .get(..LENGTH_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(FrameError::Incomplete)?;
        let length = Frame::declared_length(prefix)?;
        let body = buf
            .get(LENGTH_LEN..LENGTH_LEN + length)
            .ok_or(FrameError::Incomplete)?;
        let frame = Frame::decode_body(body)?;
        Ok((frame, LENGTH_LEN + length))
    }

    /// Decodes what follows the length field (exactly one packet's bytes).
    pub fn decode_body(body: &[u8]) -> Result<Frame, FrameError> {
        if body.len() < HEADER_LEN || body.len() > MAX_PACKET - LENGTH_LEN {
            return Err(FrameError::BadLength(body.len()));
        }
        let (header, payload) = body.split_at(HEADER_LEN);
        let version = header[0];
        if version != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let content_type =
            ContentType::from_u8(header[1]).ok_or(FrameError::UnknownContentType(header[1]))?;
        let flags = header[2];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FrameError::UnknownFlags(flags));
        }
        if header[3] != 0 {
            return Err(FrameError::Reserved(header[3]));
        }
        let pin = Pin(u32::from_be_bytes([
            header[4], header[5], header[6], header[7],
        ]));
        let mut ref_id = [0u8; 8];
        ref_id.copy_from_slice(&header[8..16]);
        let fragment_index = u16::from_be_bytes([header[16], header[17]]);
        let fragment_count = u16::from_be_bytes([header[18], header[19]]);
        if fragment_count == 0 || fragment_index >= fragment_count {
            return Err(FrameError::BadFragment {
                index: fragment_index,
                count: fragment_count,
            });
        }
        Ok(Frame {
            content_type,
            flags,
            pin,
            ref_id: RefId(u64::from_be_bytes(ref_id)),
            fragment_index,
            fragment_count,
            payload: payload.to_vec(),
        })
    }
}

/// A whole message: one packet, or fragments put back together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub content_type: ContentType,
    pub flags: u8,
    pub pin: Pin,
    pub ref_id: RefId,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn new(content_type: ContentType, pin: Pin, ref_id: RefId, payload: Vec<u8>) -> Message {
        Message {
            content_type,
            flags: 0,
            pin,
            ref_id,
            payload,
        }
    }

    /// The packets that carry this message.
    pub fn into_frames(self) -> Result<Vec<Frame>, FrameError> {
        split(
            self.content_type,
            self.flags,
            self.pin,
            self.ref_id,
            &self.payload,
        )
    }
}

/// Splits a message into packets of at most [`MAX_PAYLOAD`] bytes each.
pub fn split(
    content_type: ContentType,
    flags: u8,
    pin: Pin,
    ref_id: RefId,
    payload: &[u8],
) -> Result<Vec<Frame>, FrameError> {
    let count = payload.len().div_ceil(MAX_PAYLOAD).max(1);
    if count > u16::MAX as usize {
        return Err(FrameError::MessageTooLarge {
            size: payload.len(),
            limit: MAX_PAYLOAD * u16::MAX as usize,
        });
    }
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[][..]]
    } else {
        payload.chunks(MAX_PAYLOAD).collect()
    };
    Ok(chunks
        .into_iter()
        .enumerate()
        .map(|(index, chunk)| Frame {
            content_type,
            flags,
            pin,
            ref_id,
            fragment_index: index as u16,
            fragment_count: count as u16,
            payload: chunk.to_vec(),
        })
        .collect())
}

/// Why fragments could not be put together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    #[error("message {ref_id} would be up to {size} bytes, over the limit of {limit}")]
    TooLarge {
        ref_id: RefId,
        size: usize,
        limit: usize,
    },
    #[error("message {ref_id}: fragment count changed from {expected} to {found}")]
    Inconsistent {
        ref_id: RefId,
        expected: u16,
        found: u16,
    },
    #[error("too many messages half-received at once (limit {0}); the oldest was dropped")]
    TooManyPartials(usize),
    #[error("message {ref_id}: fragment {index} of {count} is not a valid position")]
    BadFragment {
        ref_id: RefId,
        index: u16,
        count: u16,
    },
    #[error("half-received messages would hold more than {0} bytes; the oldest were dropped")]
    OverBudget(usize),
}

struct Partial {
    count: u16,
    parts: Vec<Option<Vec<u8>>>,
    received: usize,
    bytes: usize,
    flags: u8,
    started: Instant,
}

/// Puts fragments back together, holding at most `max_partials` unfinished
/// messages of at most `max_message` bytes each.
pub struct Reassembler {
    max_message: usize,
    max_partials: usize,
    /// Bytes all unfinished messages may hold together.
    max_total: usize,
    held: usize,
    partials: HashMap<(Pin, RefId, ContentType), Partial>,
}

impl Reassembler {
    pub fn new(max_message: usize, max_partials: usize) -> Reassembler {
        Reassembler::with_budget(max_message, max_partials, DEFAULT_MAX_HELD)
    }

    /// Also bounds the bytes held by all unfinished messages together; past
    /// it the oldest unfinished messages are dropped.
    pub fn with_budget(max_message: usize, max_partials: usize, max_total: usize) -> Reassembler {
        Reassembler {
            max_message,
            max_partials: max_partials.max(1),
            max_total: max_total.max(MAX_PAYLOAD),
            held: 0,
            partials: HashMap::new(),
        }
    }

    fn drop_oldest(&mut self) -> bool {
        let Some(oldest) = self
            .partials
            .iter()
            .min_by_key(|(_, p)| p.started)
            .map(|(k, _)| *k)
        else {
            return false;
        };
        if let Some(p) = self.partials.remove(&oldest) {
            self.held -= p.bytes;
        }
        true
    }

    /// Adds one packet; returns the message once it is complete. A repeated
    /// fragment is ignored.
    pub fn push(&mut self, frame: Frame) -> Result<Option<Message>, ReassemblyError> {
        // Frames from the decoder are valid; a hand-built one may not be.
        if frame.fragment_count == 0 || frame.fragment_index >= frame.fragment_count {
            return Err(ReassemblyError::BadFragment {
                ref_id: frame.ref_id,
                index: frame.fragment_index,
                count: frame.fragment_count,
            });
        }
        if frame.fragment_count == 1 {
            return Ok(Some(Message {
                content_type: frame.content_type,
                flags: frame.flags,
                pin: frame.pin,
                ref_id: frame.ref_id,
                payload: frame.payload,
            }));
        }
        let key = (frame.pin, frame.ref_id, frame.content_type);
        let worst = frame.fragment_count as usize * MAX_PAYLOAD;
        if worst > self.max_message {
            return Err(ReassemblyError::TooLarge {
                ref_id: frame.ref_id,
                size: worst,
                limit: self.max_message,
            });
        }
        let mut evicted = false;
        if !self.partials.contains_key(&key) && self.partials.len() >= self.max_partials {
            evicted = self.drop_oldest();
        }
        let mut over_budget = false;
        while self.held + frame.payload.len() > self.max_total {
            // Make room by dropping the oldest unfinished messages; a
            // message larger than the whole budget can never complete.
            if !self.drop_oldest() {
                break;
            }
            over_budget = true;
        }
        let partial = self.partials.entry(key).or_insert_with(|| Partial {
            count: frame.fragment_count,
            parts: vec![None; frame.fragment_count as usize],
            received: 0,
            bytes: 0,
            flags: frame.flags,
            started: Instant::now(),
        });
        if partial.count != frame.fragment_count {
            let expected = partial.count;
            let bytes = partial.bytes;
            self.partials.remove(&key);
            self.held -= bytes;
            return Err(ReassemblyError::Inconsistent {
                ref_id: frame.ref_id,
                expected,
                found: frame.fragment_count,
            });
        }
        let slot = &mut partial.parts[frame.fragment_index as usize];
        if slot.is_none() {
            let len = frame.payload.len();
            *slot = Some(frame.payload);
            partial.received += 1;
            partial.bytes += len;
            self.held += len;
        }
        if partial.received < partial.count as usize {
            return if over_budget {
                Err(ReassemblyError::OverBudget(self.max_total))
            } else if evicted {
                Err(ReassemblyError::TooManyPartials(self.max_partials))
            } else {
                Ok(None)
            };
        }
        let Some(done) = self.partials.remove(&key) else {
            return Ok(None);
        };
        self.held -= done.bytes;
        let payload = done.parts.into_iter().flatten().flatten().collect();
        Ok(Some(Message {
            content_type: frame.content_type,
            flags: done.flags,
            pin: frame.pin,
            ref_id: frame.ref_id,
            payload,
        }))
    }

    /// Drops unfinished messages older than `age`; returns how many.
    pub fn expire(&mut self, age: Duration) -> usize {
        let before = self.partials.len();
        self.partials.retain(|_, p| p.started.elapsed() < age);
        self.held = self.partials.values().map(|p| p.bytes).sum();
        before - self.partials.len()
    }

    /// Bytes held by unfinished messages.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    pub fn pending(&self) -> usize {
        self.partials.len()
    }
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::new(DEFAULT_MAX_MESSAGE, 1024)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample(payload: Vec<u8>) -> Frame {
        Frame::single(ContentType::Cmime, Pin(0x2A3B4C5D), RefId(42), payload)
    }

    #[test]
    fn round_trip() {
        let frame = sample(b"hello".to_vec());
        let bytes = frame.encode().unwrap();
        assert_eq!(bytes.len(), LENGTH_LEN + HEADER_LEN + 5);
        let (decoded, used) = Frame::decode(&bytes).unwrap();
        assert_eq!(decoded, frame);
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn truncated_is_incomplete_at_every_length() {
        let bytes = sample(vec![7; 100]).encode().unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(
                Frame::decode(&bytes[..cut]).unwrap_err(),
                FrameError::Incomplete,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn oversized_and_malformed_are_refused() {
        assert_eq!(
            Frame::decode(&[0xFF, 0xFF, 0xFF, 0xFF]).unwrap_err(),
            FrameError::BadLength(0xFFFF_FFFF)
        );
        assert_eq!(
            Frame::decode(&[0, 0, 0, 3]).unwrap_err(),
            FrameError::BadLength(3)
        );
        assert!(matches!(
            sample(vec![0; MAX_PAYLOAD + 1]).encode(),
            Err(FrameError::PayloadTooLarge(_))
        ));
        let max = sample(vec![0; MAX_PAYLOAD]).encode().unwrap();
        assert_eq!(max.len(), MAX_PACKET);
        assert!(Frame::decode(&max).is_ok());

        let good = sample(vec![1]).encode().unwrap();
        let mut bad = good.clone();
        bad[4] = 2;
        assert_eq!(
            Frame::decode(&bad).unwrap_err(),
            FrameError::UnsupportedVersion(2)
        );
        let mut bad = good.clone();
        bad[5] = 99;
        assert_eq!(
            Frame::decode(&bad).unwrap_err(),
            FrameError::UnknownContentType(99)
        );
        let mut bad = good.clone();
        bad[6] = 0x80;
        assert_eq!(
            Frame::decode(&bad).unwrap_err(),
            FrameError::UnknownFlags(0x80)
        );
        let mut bad = good.clone();
        bad[7] = 1;
        assert_eq!(Frame::decode(&bad).unwrap_err(), FrameError::Reserved(1));
        let mut bad = good;
        bad[22..24].copy_from_slice(&0u16.to_be_bytes());
        assert!(matches!(
            Frame::decode(&bad),
            Err(FrameError::BadFragment { .. })
        ));
    }

    #[test]
    fn split_and_reassemble_out_of_order_with_duplicates() {
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut frames = split(
            ContentType::Cmime,
            FLAG_PRIORITY,
            Pin(1),
            RefId(9),
            &payload,
        )
        .unwrap();
        assert_eq!(frames.len(), 4);
        assert!(frames.iter().all(|f| f.payload.len() <= MAX_PAYLOAD));
        frames.reverse();
        let dup = frames[1].clone();
        frames.insert(2, dup);
        let mut r = Reassembler::default();
        let mut done = None;
        for f in frames {
            if let Some(m) = r.push(f).unwrap() {
                assert!(done.is_none(), "completes once");
                done = Some(m);
            }
        }
        let m = done.unwrap();
        assert_eq!(m.payload, payload);
        assert_eq!(m.flags, FLAG_PRIORITY);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn reassembly_is_bounded() {
        let mut r = Reassembler::new(MAX_PAYLOAD * 2, 2);
        let mut f = sample(vec![0; 10]);
        f.fragment_count = 3;
        assert!(matches!(
            r.push(f).unwrap_err(),
            ReassemblyError::TooLarge { .. }
        ));
        for id in 0..2 {
            let mut f = sample(vec![0; 10]);
            f.ref_id = RefId(id);
            f.fragment_count = 2;
            assert_eq!(r.push(f).unwrap(), None);
        }
        let mut f = sample(vec![0; 10]);
        f.ref_id = RefId(7);
        f.fragment_count = 2;
        assert_eq!(r.push(f).unwrap_err(), ReassemblyError::TooManyPartials(2));
        assert_eq!(r.pending(), 2);
        assert_eq!(r.expire(Duration::ZERO), 2);
    }

    #[test]
    fn total_bytes_are_bounded_and_invalid_frames_refused() {
        let mut r = Reassembler::with_budget(DEFAULT_MAX_MESSAGE, 1024, 3 * MAX_PAYLOAD);
        for id in 0..5u64 {
            let mut f = sample(vec![0; MAX_PAYLOAD]);
            f.ref_id = RefId(id);
            f.fragment_count = 2;
            let _ = r.push(f);
            assert!(r.held_bytes() <= 3 * MAX_PAYLOAD, "{}", r.held_bytes());
        }
        assert!(r.pending() <= 3);
        let mut bad = sample(vec![1]);
        bad.fragment_count = 2;
        bad.fragment_index = 2;
        assert!(matches!(
            r.push(bad).unwrap_err(),
            ReassemblyError::BadFragment { .. }
        ));
        let mut zero = sample(vec![1]);
        zero.fragment_count = 0;
        assert!(r.push(zero).is_err());
    }

    #[test]
    fn empty_message_is_one_packet() {
        let frames = split(ContentType::DeliveryConfirmation, 0, Pin(1), RefId(2), &[]).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].fragment_count, 1);
    }
}
