//! The relay's settings, with the defaults of the BlackBerry Infrastructure
//! and a TOML form for `bramble relay --config FILE` (see the crate doc).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::RelayError;

/// Default port enterprise servers connect to (seed: "port 3101 on the firewall").
pub const DEFAULT_SERVER_PORT: u16 = 3101;
/// Default port devices connect to.
pub const DEFAULT_DEVICE_PORT: u16 = 3102;
/// Default bound on packets stored for one offline device (and for one
/// disconnected server).
pub const DEFAULT_STORE_PER_DEVICE: usize = 1000;
/// Default bound on packets stored for all devices and servers together.
pub const DEFAULT_STORE_TOTAL: usize = 200_000;
/// Default age after which a stored packet is dropped.
pub const DEFAULT_STORE_EXPIRY: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Default number of failed (or, plus one, accepted) connections for one
/// SRP ID within [`DEFAULT_LOCKOUT_WINDOW`] that locks it out.
pub const DEFAULT_LOCKOUT_FAILURES: u32 = 5;
/// Default window in which failures and connections are counted.
pub const DEFAULT_LOCKOUT_WINDOW: Duration = Duration::from_secs(60);
/// Default length of a lockout.
pub const DEFAULT_LOCKOUT_DURATION: Duration = Duration::from_secs(5 * 60);
/// Default time allowed for each step of a link's set-up.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on connections open at once on the server port.
pub const DEFAULT_MAX_SERVER_CONNECTIONS: usize = 256;
/// Default bound on connections open at once on the device port.
pub const DEFAULT_MAX_DEVICE_CONNECTIONS: usize = 10_000;
/// Default bound on connections open at once from one source address, on
/// each port.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// Default silence after which the relay pings a device, and closes its
/// connection if the silence lasts as long again.
pub const DEFAULT_DEVICE_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Default bound on the relay's table of device PINs (connected devices,
/// PINs with stored packets, PINs whose server the relay remembers).
pub const DEFAULT_MAX_DEVICE_ENTRIES: usize = 100_000;

/// An enterprise server allowed to connect: its SRP ID and SRP
/// authentication key (shared with the server's Settings → Wireless network).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SrpAccount {
    pub srp_id: String,
    /// The key's bytes. In TOML it is text (`key = "…"`), used as its UTF-8
    /// bytes, the way an SRP authentication key is typed.
    #[serde(with = "key_text")]
    pub key: Vec<u8>,
}

impl SrpAccount {
    pub fn new(srp_id: impl Into<String>, key: impl Into<Vec<u8>>) -> SrpAccount {
        SrpAccount {
            srp_id: srp_id.into(),
            key: key.into(),
        }
    }
}

impl fmt::Debug for SrpAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrpAccount")
            .field("srp_id", &self.srp_id)
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .finish()
    }
}

/// The relay's TLS certificate and key on the server port.
///
/// Both paths set: load them (PEM; the certificate file may hold a chain,
/// leaf first). Neither set: generate a self-signed certificate at start
/// (servers must then pin it: [`crate::RelayHandle::certificate_pem`]).
/// With `generate_if_missing`, a self-signed pair is generated and written
/// to the two paths when the files do not exist yet, so the certificate a
/// server pinned survives restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsIdentity {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub generate_if_missing: bool,
}

impl TlsIdentity {
    /// A fresh self-signed certificate at every start.
    pub fn self_signed() -> TlsIdentity {
        TlsIdentity::default()
    }

    /// Certificate and key from PEM files.
    pub fn files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsIdentity {
        TlsIdentity {
            cert: Some(cert.into()),
            key: Some(key.into()),
            generate_if_missing: false,
        }
    }
}

/// Everything the relay needs. `Default` gives the documented defaults with
/// no SRP accounts (so no server can connect until one is added).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Where enterprise servers connect (TLS). Default `0.0.0.0:3101`.
    pub server_listen: SocketAddr,
    /// Where devices connect (plain TCP). Default `0.0.0.0:3102`.
    pub device_listen: SocketAddr,
    /// The servers that may connect.
    pub srp_accounts: Vec<SrpAccount>,
    pub tls: TlsIdentity,
    /// Packets stored per offline device, and per disconnected server.
    pub store_per_device: usize,
    /// Packets stored for all offline devices and disconnected servers
    /// together; beyond it new packets are dropped (`store_full`).
    pub store_total: usize,
    /// Age after which a stored packet is dropped (reported `expired`).
    #[serde(with = "duration_text")]
    pub store_expiry: Duration,
    /// Failed connections for one SRP ID within `lockout_window` that lock
    /// it out; more than this many accepted connections in the window
    /// (flapping) lock it out too. 0 turns lockout off.
    pub lockout_failures: u32,
    #[serde(with = "duration_text")]
    pub lockout_window: Duration,
    #[serde(with = "duration_text")]
    pub lockout_duration: Duration,
    /// Time allowed for each step of a link's set-up (TLS, each SRP
    /// message, the basic information packet, a device's hello).
    #[serde(with = "duration_text")]
    pub handshake_timeout: Duration,
    /// Connections open at once on the server port; more are closed at
    /// once. Separate from the device port's budget, so devices (or
    /// strangers on the device port) cannot crowd the servers out.
    pub max_server_connections: usize,
    /// Connections open at once on the device port; more are refused.
    pub max_device_connections: usize,
    /// Connections open at once from one source address, on each port;
    /// more are refused.
    pub max_connections_per_address: usize,
    /// After this much silence on a device's connection the relay pings
    /// the device (devices answer `ping` with `pong`); if the silence lasts
    /// as long again, the connection is closed. Also bounds the time a
    /// device may take to send a whole packet.
    #[serde(with = "duration_text")]
    pub device_idle_timeout: Duration,
    /// PINs the relay keeps track of at once. A device that says hello
    /// when the table is full is refused, unless entries of disconnected
    /// devices with nothing stored can be forgotten to make room.
    pub max_device_entries: usize,
    /// The SMTP server (host:port, plain or STARTTLS-less submission on a
    /// trusted network) through which the relay forwards devices' activation
    /// requests (seed step 5). Unset: such requests are refused.
    pub smtp: Option<String>,
    /// The sender address of forwarded activation requests.
    pub mail_from: String,
    /// Activation requests e-mailed per source address within
    /// `mail_window`; more are refused (`MAIL_NOT_SENT`).
    pub mail_per_address: u32,
    #[serde(with = "duration_text")]
    pub mail_window: Duration,
    /// Activation requests e-mailed for one device connection.
    pub mail_per_connection: u32,
    /// Activation requests being sent at once; more wait their turn.
    pub mail_concurrency: usize,
    /// Activation requests accepted and not answered yet (being sent or
    /// waiting their turn); beyond it a request is refused (the device may
    /// try again), not queued.
    pub mail_queue: usize,
    /// Activation packets a device connection that has not proved a key
    /// (an activation-only link) may send; more are dropped
    /// (`ACTIVATION_LIMIT`).
    pub activation_per_connection: u32,
    /// Activation packets from activation-only links per source address
    /// within `activation_window`.
    pub activation_per_address: u32,
    #[serde(with = "duration_text")]
    pub activation_window: Duration,
}

/// Default number of activation requests e-mailed per source address
/// within [`DEFAULT_MAIL_WINDOW`].
pub const DEFAULT_MAIL_PER_ADDRESS: u32 = 10;
/// Default window in which activation requests are counted per address.
pub const DEFAULT_MAIL_WINDOW: Duration = Duration::from_secs(60 * 60);
/// Default number of activation requests e-mailed for one device connection.
pub const DEFAULT_MAIL_PER_CONNECTION: u32 = 3;
/// Default number of activation requests being sent at once.
pub const DEFAULT_MAIL_CONCURRENCY: usize = 8;
/// Default number of activation requests accepted and not answered yet.
pub const DEFAULT_MAIL_QUEUE: usize = 256;

/// Default activation packets per activation-only connection.
pub const DEFAULT_ACTIVATION_PER_CONNECTION: u32 = 16;
/// Default activation packets from activation-only links per address
/// within [`DEFAULT_ACTIVATION_WINDOW`].
pub const DEFAULT_ACTIVATION_PER_ADDRESS: u32 = 120;
/// Default window in which activation packets are counted per address.
pub const DEFAULT_ACTIVATION_WINDOW: Duration = Duration::from_secs(60 * 60);

/// Sender of activation requests unless configured.
pub const DEFAULT_MAIL_FROM: &str = "activation@relay.bramble.invalid";

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            server_listen: SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::UNSPECIFIED,
                DEFAULT_SERVER_PORT,
            )),
            device_listen: SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::UNSPECIFIED,
                DEFAULT_DEVICE_PORT,
            )),
            srp_accounts: Vec::new(),
            tls: TlsIdentity::default(),
            store_per_device: DEFAULT_STORE_PER_DEVICE,
            store_total: DEFAULT_STORE_TOTAL,
            store_expiry: DEFAULT_STORE_EXPIRY,
            lockout_failures: DEFAULT_LOCKOUT_FAILURES,
            lockout_window: DEFAULT_LOCKOUT_WINDOW,
            lockout_duration: DEFAULT_LOCKOUT_DURATION,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_server_connections: DEFAULT_MAX_SERVER_CONNECTIONS,
            max_device_connections: DEFAULT_MAX_DEVICE_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            device_idle_timeout: DEFAULT_DEVICE_IDLE_TIMEOUT,
            max_device_entries: DEFAULT_MAX_DEVICE_ENTRIES,
            smtp: None,
            mail_from: DEFAULT_MAIL_FROM.to_owned(),
            mail_per_address: DEFAULT_MAIL_PER_ADDRESS,
            mail_window: DEFAULT_MAIL_WINDOW,
            mail_per_connection: DEFAULT_MAIL_PER_CONNECTION,
            mail_concurrency: DEFAULT_MAIL_CONCURRENCY,
            mail_queue: DEFAULT_MAIL_QUEUE,
            activation_per_connection: DEFAULT_ACTIVATION_PER_CONNECTION,
            activation_per_address: DEFAULT_ACTIVATION_PER_ADDRESS,
            activation_window: DEFAULT_ACTIVATION_WINDOW,
        }
    }
}

impl RelayConfig {
    /// Parses and checks TOML text.
    pub fn from_toml_str(text: &str) -> Result<RelayConfig, RelayError> {
        let config: RelayConfig =
            toml::from_str(text).map_err(|e| RelayError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and checks a TOML file.
    pub fn load(path: &Path) -> Result<RelayConfig, RelayError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RelayError::Config(format!("cannot read {}: {e}", path.display())))?;
        RelayConfig::from_toml_str(&text).map_err(|e| match e {
            RelayError::Config(detail) => {
                RelayError::Config(format!("{}: {detail}", path.display()))
            }
            other => other,
        })
    }

    /// The settings as TOML (keys are written as text).
    pub fn to_toml_string(&self) -> Result<String, RelayError> {
        toml::to_string_pretty(self).map_err(|e| RelayError::Config(e.to_string()))
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), RelayError> {
        let mut seen = std::collections::HashSet::new();
        for account in &self.srp_accounts {
            if account.srp_id.trim().is_empty() {
                return Err(RelayError::Config(
                    "an SRP account has an empty srp_id".into(),
                ));
            }
            if account.key.is_empty() {
                return Err(RelayError::Config(format!(
                    "SRP account {} has an empty key",
                    account.srp_id
                )));
            }
            if !seen.insert(account.srp_id.as_str()) {
                return Err(RelayError::Config(format!(
                    "SRP ID {} is listed twice in srp_accounts",
                    account.srp_id
                )));
            }
        }
        if self.store_per_device == 0 {
            return Err(RelayError::Config(
                "store_per_device must be at least 1".into(),
            ));
        }
        if self.store_expiry.is_zero() {
            return Err(RelayError::Config(
                "store_expiry must be longer than 0".into(),
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(RelayError::Config(
                "handshake_timeout must be longer than 0".into(),
            ));
        }
        for (name, value) in [
            ("max_server_connections", self.max_server_connections),
            ("max_device_connections", self.max_device_connections),
            (
                "max_connections_per_address",
                self.max_connections_per_address,
            ),
            ("max_device_entries", self.max_device_entries),
            ("store_total", self.store_total),
            ("mail_concurrency", self.mail_concurrency),
            ("mail_queue", self.mail_queue),
        ] {
            if value == 0 {
                return Err(RelayError::Config(format!("{name} must be at least 1")));
            }
        }
        if self.activation_window.is_zero() {
            return Err(RelayError::Config(
                "activation_window must be longer than 0".into(),
            ));
        }
        if self.mail_window.is_zero() {
            return Err(RelayError::Config(
                "mail_window must be longer than 0".into(),
            ));
        }
        if self.device_idle_timeout.is_zero() {
            return Err(RelayError::Config(
                "device_idle_timeout must be longer than 0".into(),
            ));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(RelayError::Config(
                "tls: set both cert and key, or neither for a self-signed certificate".into(),
            ));
        }
        if self.tls.generate_if_missing && self.tls.cert.is_none() {
            return Err(RelayError::Config(
                "tls: generate_if_missing needs cert and key paths to write to".into(),
            ));
        }
        Ok(())
    }
}

/// A key as text in TOML.
mod key_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(key: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(key))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}

/// Durations as text: a whole number followed by `ms`, `s`, `m`, `h` or
/// `d` (`"7d"`, `"5m"`, `"250ms"`), or a bare integer of seconds.
pub mod duration_text {
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// Parses `"7d"`, `"5m"`, `"60s"`, `"250ms"`, `"1h"` or `"60"` (seconds).
    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let n: u64 = number.parse().map_err(|_| {
            format!("`{text}` is not a duration such as \"7d\", \"5m\", \"60s\" or \"250ms\"")
        })?;
        let secs = |mult: u64| {
            n.checked_mul(mult)
                .map(Duration::from_secs)
                .ok_or_else(|| format!("`{text}` is too long a duration"))
        };
        match unit.trim() {
            "ms" => Ok(Duration::from_millis(n)),
            "" | "s" => secs(1),
            "m" => secs(60),
            "h" => secs(3600),
            "d" => secs(86_400),
            other => Err(format!(
                "`{text}`: unknown unit `{other}` (use ms, s, m, h or d)"
            )),
        }
    }

    /// The shortest exact text for a duration.
    pub fn format(d: Duration) -> String {
        if d.subsec_nanos() != 0 || d.is_zero() {
            return format!("{}ms", d.as_millis());
        }
        let s = d.as_secs();
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
            if s.is_multiple_of(size) {
                return format!("{}{unit}", s / size);
            }
        }
        format!("{s}s")
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a duration such as \"7d\", \"5m\", \"60s\", \"250ms\" or a number of seconds",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_secs)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let c = RelayConfig::from_toml_str("").unwrap();
        assert_eq!(c, RelayConfig::default());
        assert_eq!(c.server_listen.port(), 3101);
        assert_eq!(c.device_listen.port(), 3102);
        assert_eq!(c.store_per_device, 1000);
        assert_eq!(c.store_expiry, Duration::from_secs(7 * 86_400));
        assert_eq!(c.lockout_failures, 5);
        assert_eq!(c.lockout_window, Duration::from_secs(60));
        assert_eq!(c.lockout_duration, Duration::from_secs(300));
        assert_eq!(c.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.max_server_connections, 256);
        assert_eq!(c.max_device_connections, 10_000);
        assert_eq!(c.max_connections_per_address, 64);
        assert_eq!(c.device_idle_timeout, Duration::from_secs(300));
        assert_eq!(c.max_device_entries, 100_000);
        assert_eq!(c.store_total, 200_000);
        assert_eq!(c.mail_per_address, 10);
        assert_eq!(c.mail_window, Duration::from_secs(3600));
        assert_eq!(c.mail_per_connection, 3);
        assert_eq!(c.mail_concurrency, 8);
        assert_eq!(c.mail_queue, 256);
    }

    #[test]
    fn full_file_round_trips() {
        let text = r#"
            server_listen = "127.0.0.1:4101"
            device_listen = "127.0.0.1:4102"
            store_per_device = 50
            store_expiry = "2d"
            lockout_failures = 3
            lockout_window = 30
            lockout_duration = "90s"
            handshake_timeout = "500ms"

            [tls]
            cert = "/etc/bramble/relay-cert.pem"
            key = "/etc/bramble/relay-key.pem"

            [[srp_accounts]]
            srp_id = "S10000001"
            key = "abcd-efgh-ijkl"
        "#;
        let c = RelayConfig::from_toml_str(text).unwrap();
        assert_eq!(c.store_expiry, Duration::from_secs(2 * 86_400));
        assert_eq!(c.lockout_window, Duration::from_secs(30));
        assert_eq!(c.lockout_duration, Duration::from_secs(90));
        assert_eq!(c.handshake_timeout, Duration::from_millis(500));
        assert_eq!(
            c.srp_accounts,
            vec![SrpAccount::new("S10000001", "abcd-efgh-ijkl")]
        );
        assert!(!format!("{c:?}").contains("abcd"), "keys are not logged");
        let again = RelayConfig::from_toml_str(&c.to_toml_string().unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn bad_files_are_explained() {
        for (text, needle) in [
            ("store_expiry = \"7 weeks\"", "unknown unit"),
            ("stor_per_device = 3", "unknown field"),
            ("store_per_device = 0", "at least 1"),
            ("[tls]\ncert = \"a.pem\"", "both cert and key"),
            (
                "[[srp_accounts]]\nsrp_id = \"S1\"\nkey = \"k\"\n[[srp_accounts]]\nsrp_id = \"S1\"\nkey = \"j\"",
                "listed twice",
            ),
        ] {
            let err = RelayConfig::from_toml_str(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err}");
        }
    }

    #[test]
    fn duration_text_forms() {
        assert_eq!(
            duration_text::parse("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            duration_text::parse("5m").unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(duration_text::parse("12").unwrap(), Duration::from_secs(12));
        assert!(duration_text::parse("m").is_err());
        assert!(duration_text::parse("99999999999999999999d").is_err());
        assert_eq!(duration_text::format(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(duration_text::format(Duration::from_secs(90)), "90s");
        assert_eq!(duration_text::format(Duration::from_millis(1500)), "1500ms");
    }
}
