//! # bramble-device — the reference smartphone
//!
//! A library that behaves like a BlackBerry smartphone on Bramble's wire,
//! for tests, benchmarks and the `bramble device` command. It plays the
//! device's part of the seed's email flows: steps 4–7 of a message *to*
//! the smartphone (receive the encrypted message, confirm delivery,
//! decrypt and decompress, show it) and steps 2–5 of a message *from* it
//! (compress and encrypt under the device's key, send it towards the
//! Router; take an error back if the server cannot decrypt it).
//!
//! ## Pieces
//! - [`Device`]: one smartphone — its [`DeviceConfig`] (PIN, model, SRP ID,
//!   limits), its [`KeyStore`] (current, pending and previous transport
//!   keys) and the RefIDs it has already shown its user. It makes links.
//! - [`Path`]: where a link goes — the relay's device port over the
//!   "wireless network" ([`DEFAULT_RELAY_PORT`], plain TCP), or directly to
//!   the Router's LAN listener.
//! - [`Connection`]: a link that is up.
//!
//! ## The link
//! `device_hello {pin, srp_id, model, os_version}` → on the relay
//! `device_challenge {nonce}` → `device_proof {key_id, proof}` under the
//! current key's relay key (or `activation_only` without a key), on the
//! LAN `lan_challenge {nonce}` → `lan_proof {key_id, proof}` → `welcome`,
//! or `refused {reason}` at any point; all within a timeout. Each proof is
//! answered only on its own path: a LAN proof given on the relay path
//! could be replayed to the Router by whoever asked for it.
//! [`Connection::prove_key`] makes an activation-only relay link a full
//! one once activation has given the device its key.
//!
//! Then one tokio task per link reads packets with
//! [`bramble_proto::io::read_frame`] (no read buffer is kept between
//! packets), reassembles fragments (bounded), and for each complete
//! message:
//! - **encrypted** (every type but `Control` and `Error`): opens the
//!   envelope with the key its header names. If it opens, a delivery
//!   confirmation goes back with the same RefID — itself an envelope
//!   (sealed with the current key, empty plaintext), so the server knows it
//!   is genuine — and the message is queued for [`Connection::recv`] unless
//!   its RefID was shown before. Duplicates are confirmed again (the first
//!   confirmation may have been lost) but not shown: exactly once for the
//!   user, at least once on the wire. An envelope that does not open is
//!   counted, logged and never confirmed; the link stays up.
//! - **delivery confirmation** from the server: checked and counted.
//! - **error**: queued for [`Connection::next_error`].
//! - **control**: `ping` is answered with `pong`; `refused` ends the link.
//!
//! A packet with a sound length but an unknown content type, flags or
//! fragment position is skipped and counted; one that breaks the framing
//! (bad length, cut short, another protocol version) ends the link, and
//! [`Connection::closed`] says why. Nothing panics.
//!
//! [`Connection::send`] seals with the current key, splits into packets and
//! writes them through the same writer the task uses for confirmations (a
//! mutex around the socket's write half), so a link is one task, one
//! socket and a few hundred bytes of state.
//!
//! ## Memory
//! Sized for 10 000 devices in one process: no per-link read or write
//! buffer is kept between packets; the inbox (at most [`INBOX_LEN`]
//! messages, then back-pressure) and the error queue are released when
//! emptied; the set of shown RefIDs is per device and grows with what was
//! received (8 bytes per RefID, plus a hash index once it holds more than
//! 64), up to [`DeviceConfig::dedupe_window`]. Large envelopes are opened
//! and sealed on the blocking pool.
//!
//! ## Keys
//! [`Device::activate`] ([`activation`]) establishes the transport key by
//! wireless enterprise activation over the relay. Tests and benchmarks that
//! are not about activation may still provision keys directly: a
//! [`KeyStore`] with the same keys the server side holds (the test path;
//! `bramble_testbed::provision` stores them on the server side), or a
//! key-store file ([`KeyStore::load`], format in [`keys`]).

pub mod activation;
pub mod connection;
pub mod device;
pub mod error;
pub mod keys;
pub mod organizer;
pub mod seen;

pub use connection::{Connection, DeviceStats, Plain, Received, ERROR_QUEUE_LEN, INBOX_LEN};
pub use device::{Administered, Device, DeviceConfig, Path, DEFAULT_RELAY_PORT, LINK_REF_ID};
pub use error::DeviceError;
pub use keys::{DeviceFile, KeyFileError, KeyStore, KEY_FILE_FORMAT};
pub use seen::SignedHistory;
