//! Bounds on connections: per port and per source address.
//!
//! Each port has its own [`Gate`], so the device port (open to anyone)
//! cannot use up the budget of the server port. A connection holds a
//! [`Permit`] for as long as it is open. Refusals are logged at most once
//! per address per [`REFUSAL_LOG_INTERVAL`], so a flood does not flood the
//! log too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// At most one log line per refused address within this interval.
pub(crate) const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Most addresses whose last logged refusal is remembered.
const MAX_LOGGED: usize = 4096;

/// The "source address" the per-address bounds count: an IPv4 address
/// (also when it comes IPv4-mapped), or the /64 network of an IPv6 address,
/// since one IPv6 host usually holds a whole /64.
pub(crate) fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The port has as many connections as it may.
    PortFull(usize),
    /// The address has as many connections on this port as it may.
    AddressFull(usize),
}

impl Refusal {
    /// In words, for the log and the peer.
    pub fn reason(self) -> String {
        match self {
            Refusal::PortFull(max) => {
                format!("the relay has {max} connections open on this port, as many as it accepts")
            }
            Refusal::AddressFull(max) => format!(
                "{max} connections from this address are open already, as many as the relay accepts from one address"
            ),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Most connections open at once since start.
    peak: usize,
    per_addr: HashMap<IpAddr, usize>,
    logged: HashMap<IpAddr, Instant>,
}

/// The connection budget of one port.
#[derive(Debug)]
pub(crate) struct Gate {
    max_total: usize,
    max_per_addr: usize,
    counts: Mutex<Counts>,
}

/// One admitted connection; gives its place back when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Gate {
    pub fn new(max_total: usize, max_per_addr: usize) -> Arc<Gate> {
        Arc::new(Gate {
            max_total,
            max_per_addr,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a connection from `ip`, or why not and whether this
    /// refusal should be logged (the first for `ip` in the interval).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Permit, (Refusal, bool)> {
        let ip = source(ip);
        let mut counts = self.lock();
        let from_ip = counts.per_addr.get(&ip).copied().unwrap_or(0);
        let refusal = if counts.total >= self.max_total {
            Refusal::PortFull(self.max_total)
        } else if from_ip >= self.max_per_addr {
            Refusal::AddressFull(self.max_per_addr)
        } else {
            counts.total += 1;
            counts.peak = counts.peak.max(counts.total);
            counts.per_addr.insert(ip, from_ip + 1);
            return Ok(Permit {
                gate: self.clone(),
                ip,
            });
        };
        let due = match counts.logged.get(&ip) {
            Some(at) => now.duration_since(*at) >= REFUSAL_LOG_INTERVAL,
            None => {
                if counts.logged.len() >= MAX_LOGGED {
                    counts
                        .logged
                        .retain(|_, at| now.duration_since(*at) < REFUSAL_LOG_INTERVAL);
                }
                counts.logged.len() < MAX_LOGGED
            }
        };
        if due {
            counts.logged.insert(ip, now);
        }
        Err((refusal, due))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Most connections open at once since start.
    pub fn peak(&self) -> usize {
        self.lock().peak
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.gate.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_addr.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_addr.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn per_address_and_per_port_bounds() {
        let now = Instant::now();
        let gate = Gate::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let a1 = gate.admit(a, now).unwrap();
        let _a2 = gate.admit(a, now).unwrap();
        // The third from a is refused and logged; the fourth is not logged.
        assert_eq!(
            gate.admit(a, now).unwrap_err(),
            (Refusal::AddressFull(2), true)
        );
        assert_eq!(
            gate.admit(a, now).unwrap_err(),
            (Refusal::AddressFull(2), false)
        );
        let _b1 = gate.admit(b, now).unwrap();
        assert_eq!(
            gate.admit(c, now).unwrap_err(),
            (Refusal::PortFull(3), true)
        );
        assert_eq!(gate.open(), 3);
        drop(a1);
        assert_eq!(gate.open(), 2);
        let _c1 = gate.admit(c, now).unwrap();
        // Logged again once the interval has passed.
        let later = now + REFUSAL_LOG_INTERVAL;
        assert_eq!(
            gate.admit(a, later).unwrap_err(),
            (Refusal::PortFull(3), true)
        );
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64() {
        let now = Instant::now();
        let gate = Gate::new(10, 1);
        let _one = gate.admit("2001:db8:1:2::1".parse().unwrap(), now).unwrap();
        assert!(gate
            .admit("2001:db8:1:2:ffff::9".parse().unwrap(), now)
            .is_err());
        let _other = gate.admit("2001:db8:1:3::1".parse().unwrap(), now).unwrap();
        let _v4 = gate.admit("192.0.2.1".parse().unwrap(), now).unwrap();
        assert!(gate
            .admit("::ffff:192.0.2.1".parse().unwrap(), now)
            .is_err());
    }
}
