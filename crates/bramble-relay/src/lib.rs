//! # bramble-relay — the BlackBerry Infrastructure and wireless network
//!
//! In BES 5.0 the enterprise server never accepts connections from the
//! Internet: its BlackBerry Router connects *out* through port 3101 to the
//! BlackBerry Infrastructure, authenticates with its SRP ID and SRP
//! authentication key, and the Infrastructure forwards packets to the
//! wireless network, which reaches the device by its PIN. Devices' replies
//! travel the same way back. This crate is that middle: one process that
//! plays both the Infrastructure and the wireless network.
//!
//! ```text
//!  enterprise server ──TLS :3101──▶ relay ◀──TCP :3102── device
//!  (Router, SRP ID + key)           routes by PIN          (DeviceHello{pin})
//! ```
//!
//! The relay sees only packet headers (content type, PIN, RefID,
//! fragments): payloads between server and device are end-to-end encrypted
//! envelopes ([`bramble_proto::envelope`]) it cannot read. It relays
//! packets as packets, in order per link, without reassembling them.
//!
//! ## Links
//! - **Server port** (default 3101): TLS (openssl), then the SRP handshake
//!   of [`bramble_proto::control`], then the server's basic information
//!   packet (`server_info`). Each step must come within
//!   `handshake_timeout` (10 s). A second accepted link for an SRP ID
//!   replaces the first. Failed authentications (wrong key, a server that
//!   gives up after the challenge because the relay's proof did not match
//!   its key, no basic information packet) are counted per source address
//!   and SRP ID: `lockout_failures` of them within `lockout_window` lock
//!   that SRP ID out *for that address* for `lockout_duration`. SRP IDs
//!   travel in clear in device hellos, so a stranger failing on purpose
//!   locks out only their own address, never the genuine server connecting
//!   from another. Flapping (more than `lockout_failures` *authenticated*
//!   links in `lockout_window`, which needs the key) locks the SRP ID out
//!   from everywhere. A locked-out server gets
//!   `srp_rejected {reason: "locked out until …"}`.
//!   [`client`] is the server's side of this, shared with the Bramble
//!   Router.
//! - **Device port** (default 3102): plain TCP; the device sends
//!   `device_hello {pin, …}`, the relay answers `device_challenge {nonce}`
//!   and the device proves it holds a transport key with `device_proof
//!   {key_id, proof}` under that key's relay key, which the device's server
//!   registered with `device_keys` over its SRP link (the relay keeps them
//!   in memory; a server registers them all again on each new link). A
//!   device that proved its key gets `welcome`, then whatever was stored
//!   for it; it replaces any earlier connection for its PIN, and its
//!   traffic goes to the server that registered its keys — never where a
//!   hello says. A proof the relay cannot check is refused; when no key is
//!   registered for the PIN yet, the relay waits a few seconds for one
//!   first (a server that has just linked is registering). A device with
//!   no key answers `activation_only`: its link gets stored and new
//!   *activation* packets only, may send only activation packets
//!   (`activation_per_connection`, and `activation_per_address` per
//!   `activation_window`; others are dropped with `NOT_AUTHENTICATED` or
//!   `ACTIVATION_LIMIT`) and `send_mail`, and replaces only an earlier
//!   activation-only link — never a device that proved its key. Once
//!   activated, the device sends `device_proof` on the same link, which
//!   becomes a full one.
//!
//! - **Activation mail**: a device without an enterprise server may send
//!   `send_mail {to, …}`; the relay e-mails its activation request through
//!   the configured `smtp` server ([`mail`]) and answers `mail_sent`, or an
//!   error packet `MAIL_NOT_SENT` saying why. The relay mails nothing but
//!   activation requests: the attachment must read as an `etp.dat`
//!   ([`bramble_proto::activation::EtpRequest`], at most 8 KiB) for the
//!   device's own PIN, and `to` must be the e-mail address inside it; the
//!   subject and attachment name are the relay's own. At most
//!   `mail_per_address` requests per source address within `mail_window`,
//!   `mail_per_connection` per connection, `mail_concurrency` being sent at
//!   once, and `mail_queue` accepted and not answered yet (beyond that a
//!   request is refused, not queued: every request in flight is a task).
//!   A connection with ten refused requests is closed.
//!
//! Either link answers `ping` with `pong`. A malformed packet closes only
//! the connection it came on (logged with the peer's address).
//!
//! ## Bounds
//! Per-address bounds (connections, SRP lockout, activation mail) count an
//! IPv4 address, or the /64 network of an IPv6 address (one IPv6 host
//! usually holds a whole /64).
//! - **Connections**: each port has its own budget (`max_server_connections`,
//!   `max_device_connections`), so a crowd on the device port cannot crowd
//!   enterprise servers out; and at most `max_connections_per_address`
//!   from one source address on each port. A connection over a bound is
//!   closed at once (on the device port after a `refused {reason}` packet)
//!   and logged once per address per minute with the address and the
//!   bound. When accepting fails (e.g. the process is out of open files)
//!   the relay pauses accepts on that port, longer each time up to 2 s,
//!   instead of spinning. At start, if the two budgets and 64 spare files
//!   exceed the process's open-file limit, the device port's budget is cut
//!   to what fits (warned), so the device port can never use up the files
//!   the server port needs.
//! - **Silence**: a device has `handshake_timeout` to send its hello. After
//!   `device_idle_timeout` without a whole packet from a device, the relay
//!   pings it (devices answer `ping` with `pong`); silent as long again, the
//!   connection is closed.
//! - **PIN table**: an entry lives while its device is connected, while
//!   packets are stored for it, and for `store_expiry` after a server last
//!   sent to it (so replies find their server). A device's hello is
//!   forgotten when it disconnects. At most `max_device_entries` PINs: when
//!   full, disconnected PINs with nothing stored are forgotten (oldest
//!   first); if none can be, a new device's hello is refused and a server's
//!   packet for a new PIN is answered `store_full`.
//!
//! ## Routing
//! - **Server → device**, by the PIN in the header. Device connected:
//!   forwarded, and the server gets `transport {delivered_to_device}`.
//!   Otherwise the packet is stored (whether or not a device ever said
//!   hello for that PIN: a PIN the relay has not seen may belong to a
//!   device that has yet to connect) and the server gets
//!   `stored_for_offline_device`; `delivered_to_device` follows when the
//!   device connects and the store is handed over, or `expired` after
//!   `store_expiry`. A full store drops the new packet: `store_full`.
//!   Reports carry the message's PIN and RefID and are sent once per
//!   message, on its last fragment. `unknown_pin` is never reported to a
//!   server; the relay counts device traffic without a home server under
//!   that name instead ([`RelayStats::unknown_pin`]).
//! - **Device → server**: to the device's home server — the SRP ID in its
//!   hello, else the last server that sent to its PIN. The header's PIN
//!   must be the device's own; other packets are dropped and logged. A
//!   disconnected home server's packets are stored (same bounds) and
//!   handed over when its link comes back; a full store answers the device
//!   with an error packet `STORE_FULL`. No home server, or one not
//!   registered here: an error packet `NO_SERVER` (content type `error`,
//!   the message's RefID).
//! - Reports owed to a disconnected server are stored for it like packets.
//! - Stores are per device PIN and per SRP ID, bounded by
//!   `store_per_device` packets each, `store_total` packets all together,
//!   and `store_expiry`, and keep a message
//!   whole or not at all: when one of its packets does not fit, the ones
//!   already stored go too, so the relay never hands over half a message.
//! - The relay does not reassemble: packets are relayed as packets, in
//!   order per link, priority flag untouched.
//!
//! ## Configuration (`bramble relay --config relay.toml`)
//! Every key is optional; these are the defaults:
//!
//! ```toml
//! server_listen = "0.0.0.0:3101"   # enterprise servers (TLS)
//! device_listen = "0.0.0.0:3102"   # devices
//! store_per_device = 1000          # packets held per offline device (and per disconnected server)
//! store_total = 200000            # packets stored for all devices and servers together
//! store_expiry = "7d"              # durations: "250ms", "60s", "5m", "1h", "7d" or a number of seconds
//! lockout_failures = 5             # failed links per SRP ID and source address within lockout_window (0: never lock out)
//! lockout_window = "60s"
//! lockout_duration = "5m"
//! handshake_timeout = "10s"        # each step of a link's set-up (TLS, SRP, a device's hello)
//! max_server_connections = 256     # open at once on the server port (its own budget)
//! max_device_connections = 10000   # open at once on the device port
//! max_connections_per_address = 64 # open at once from one source address, on each port
//! device_idle_timeout = "5m"       # silence before the relay pings a device; as long again and it is closed
//! max_device_entries = 100000      # PINs tracked at once (connected, stored for, or with a known server)
//! # smtp = "127.0.0.1:25"          # where activation requests are e-mailed (unset: refused)
//! mail_from = "activation@relay.bramble.invalid"
//! mail_per_address = 10            # activation requests e-mailed per source address within mail_window
//! mail_window = "1h"
//! mail_per_connection = 3          # activation requests e-mailed per device connection
//! mail_concurrency = 8             # requests being sent at once (more wait their turn)
//! mail_queue = 256                 # requests accepted and not answered yet (more are refused)
//!
//! [tls]                            # neither path: a fresh self-signed certificate at each start
//! # cert = "/etc/bramble/relay-cert.pem"
//! # key = "/etc/bramble/relay-key.pem"
//! # generate_if_missing = true     # write a self-signed pair there on first start
//!
//! # One table per enterprise server allowed to connect:
//! # [[srp_accounts]]
//! # srp_id = "S12345678"
//! # key = "the SRP authentication key, as typed"
//! ```
//!
//! [`RelayConfig::load`] reads such a file; [`run`] runs a relay until a
//! shutdown future completes. Logs go to `tracing` under the target
//! `bramble::relay`.

pub mod client;
pub mod config;
mod limits;
mod lockout;
pub mod mail;
mod relay;
mod store;
pub mod tls;

pub use config::{RelayConfig, SrpAccount, TlsIdentity};
pub use relay::{
    run, Relay, RelayHandle, RelayStats, ACTIVATION_LIMIT, NOT_AUTHENTICATED, NO_SERVER, STORE_FULL,
};

use std::net::SocketAddr;

/// The `tracing` target of everything the relay logs.
pub const TARGET: &str = "bramble::relay";

/// The reasons the relay gives in `srp_rejected`, which
/// [`client::connect_srp`] turns into typed errors. Each reason starts with
/// one of these.
pub mod reject {
    /// The server's proof does not match: the keys differ.
    pub const BAD_KEY: &str = "the SRP authentication key does not match";
    /// No such SRP ID is registered with the relay.
    pub const UNKNOWN_SRP_ID: &str = "unknown SRP ID";
    /// The SRP ID is locked out; a time follows.
    pub const LOCKED_OUT: &str = "locked out until";
}

/// Why the relay cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("relay configuration: {0}")]
    Config(String),
    #[error("relay TLS certificate: {0}")]
    Tls(String),
    #[error("cannot listen for {what} on {addr}: {source}; is another relay running there?")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("relay I/O: {0}")]
    Io(#[from] std::io::Error),
}
