//! Sign-in under attack: password guessing slowed per source address and
//! per login, password checks bounded and kept off the database pool, and
//! failed sign-ins counted for the audit log.
//!
//! - **Per address first.** After [`FREE_FAILURES`] failed sign-ins from
//!   one address (an IPv6 client's whole /64), every sign-in from it waits —
//!   one minute, doubling with each further failure, at most [`MAX_WAIT`] —
//!   whatever the login or password.
//! - **Per login, with a cap.** After [`FREE_LOGIN_FAILURES`] failures for
//!   one login from anywhere, that login waits too, at most
//!   [`MAX_LOGIN_WAIT`], except from an address it has signed in from
//!   before: a stranger can slow guessing against an administrator's login
//!   but cannot lock that administrator out of their own workstation.
//! - **Counted before checking.** An attempt is counted as a failure the
//!   moment it is admitted ([`SignIns::admit`], one lock held from check to
//!   count), and cleared when it succeeds; parallel requests cannot each
//!   get a guess past the limit.
//! - **Bounded memory.** At most [`MAX_ENTRIES`] logins and addresses are
//!   remembered; when full, the oldest entry that is not waiting is
//!   forgotten, never one that is: junk logins cannot evict a lockout.
//! - **Checks off the pool.** argon2 runs on the blocking threads with at
//!   most `[admin] sign_in_checks` at once and `sign_in_queue` waiting
//!   (more are answered "busy"), never holding a database connection.
//! - **Aggregated audit.** Failed and refused sign-ins are written to the
//!   audit log once per login and address per `sign_in_audit_secs`, with
//!   counts, so a flood cannot flood the log.
//!
//! Kept in memory by each running server (a restart forgets it); unknown
//! logins are throttled like known ones.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Failures from one address allowed before it is made to wait.
pub const FREE_FAILURES: u32 = 5;
/// Failures for one login (from all addresses) before it is made to wait.
pub const FREE_LOGIN_FAILURES: u32 = 10;
/// The first wait.
pub const FIRST_WAIT: Duration = Duration::from_secs(60);
/// The longest wait of an address.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// The longest wait of a login: short, since anyone can cause it.
pub const MAX_LOGIN_WAIT: Duration = Duration::from_secs(5 * 60);
/// Logins, and addresses, remembered at most.
pub const MAX_ENTRIES: usize = 10_000;
/// Addresses remembered per login as ones it signed in from.
const KNOWN_PER_LOGIN: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    until: Option<Instant>,
}

impl Failures {
    fn waiting(&self, now: Instant) -> Option<Duration> {
        self.until.filter(|u| *u > now).map(|u| u - now)
    }
}

/// Why an attempt is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too many failures from this address; wait this long.
    Address(Duration),
    /// Too many failures for this login; wait this long.
    Login(Duration),
}

/// The address a sign-in is throttled under: the client's IPv4 address, or
/// the /64 of an IPv6 one (a single client commonly holds a whole /64).
fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
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

fn login_key(login: &str) -> String {
    login.trim().to_lowercase()
}

/// A table of failures that never forgets an entry still waiting.
#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Failures>,
    free: u32,
    max_wait: Duration,
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    fn new(free: u32, max_wait: Duration) -> Self {
        Table {
            entries: HashMap::new(),
            free,
            max_wait,
        }
    }

    fn waiting(&self, key: &K, now: Instant) -> Option<Duration> {
        self.entries.get(key)?.waiting(now)
    }

    /// Counts a failure; when the table is full and every entry is still
    /// waiting, the failure is not remembered (the other table still
    /// counts it).
    fn fail(&mut self, key: &K, now: Instant) {
        if !self.entries.contains_key(key) && self.entries.len() >= MAX_ENTRIES {
            let oldest_free = self
                .entries
                .iter()
                .filter(|(_, f)| f.waiting(now).is_none())
                .min_by_key(|(_, f)| f.last)
                .map(|(k, _)| k.clone());
            match oldest_free {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => return,
            }
        }
        let entry = self.entries.entry(key.clone()).or_insert(Failures {
            count: 0,
            last: now,
            until: None,
        });
        entry.count += 1;
        entry.last = now;
        if entry.count >= self.free {
            let doublings = (entry.count - self.free).min(10);
            let wait = FIRST_WAIT.saturating_mul(1 << doublings).min(self.max_wait);
            entry.until = Some(now + wait);
        }
    }

    fn clear(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

#[derive(Debug)]
struct Tables {
    addresses: Table<IpAddr>,
    logins: Table<String>,
    /// Addresses each login has signed in from.
    known: HashMap<String, Vec<IpAddr>>,
}

/// Failed sign-ins per address and per login (see the module doc).
#[derive(Debug)]
pub struct SignInThrottle {
    tables: Mutex<Tables>,
}

impl Default for SignInThrottle {
    fn default() -> Self {
        SignInThrottle {
            tables: Mutex::new(Tables {
                addresses: Table::new(FREE_FAILURES, MAX_WAIT),
                logins: Table::new(FREE_LOGIN_FAILURES, MAX_LOGIN_WAIT),
                known: HashMap::new(),
            }),
        }
    }
}

impl SignInThrottle {
    /// Admits an attempt and counts it as failed until [`Self::succeeded`]
    /// says otherwise; or says how long the address or login must wait.
    /// Check and count happen under one lock.
    pub fn admit(&self, login: &str, address: Option<IpAddr>, now: Instant) -> Result<(), Refused> {
        let Ok(mut tables) = self.tables.lock() else {
            return Ok(());
        };
        let login = login_key(login);
        let address = address.map(address_key);
        if let Some(address) = address {
            if let Some(wait) = tables.addresses.waiting(&address, now) {
                return Err(Refused::Address(wait));
            }
        }
        let known = address.is_some_and(|a| {
            tables
                .known
                .get(&login)
                .is_some_and(|known| known.contains(&a))
        });
        if !known {
            if let Some(wait) = tables.logins.waiting(&login, now) {
                return Err(Refused::Login(wait));
            }
        }
        if let Some(address) = address {
            tables.addresses.fail(&address, now);
        }
        if !known {
            tables.logins.fail(&login, now);
        }
        Ok(())
    }

    /// A successful sign-in: clears the failures of its address and login
    /// and remembers the address as one this login signs in from.
    pub fn succeeded(&self, login: &str, address: Option<IpAddr>) {
        let Ok(mut tables) = self.tables.lock() else {
            return;
        };
        let login = login_key(login);
        tables.logins.clear(&login);
        if let Some(address) = address.map(address_key) {
            tables.addresses.clear(&address);
            if !tables.known.contains_key(&login) && tables.known.len() >= MAX_ENTRIES {
                // Known addresses only ever relax the login's wait: losing
                // one costs its owner nothing but the exemption.
                if let Some(any) = tables.known.keys().next().cloned() {
                    tables.known.remove(&any);
                }
            }
            let known = tables.known.entry(login).or_default();
            if !known.contains(&address) {
                if known.len() >= KNOWN_PER_LOGIN {
                    known.remove(0);
                }
                known.push(address);
            }
        }
    }
}

/// One login and address's failed sign-ins since the last audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedSignIns {
    pub login: String,
    /// The client's address, or `unknown`.
    pub address: String,
    /// Passwords checked and found wrong.
    pub checked: u64,
    /// Attempts refused without a check (waiting, or the server busy).
    pub refused: u64,
    pub first: time::OffsetDateTime,
    pub last: time::OffsetDateTime,
}

/// The sign-in gate of one running server: the throttle, the bounded
/// password checker and the failures waiting for the audit log.
#[derive(Debug)]
pub struct SignIns {
    pub throttle: SignInThrottle,
    checks: std::sync::Arc<Semaphore>,
    admitted: std::sync::Arc<Semaphore>,
    checks_run: AtomicU64,
    failures: Mutex<HashMap<(String, String), FailedSignIns>>,
}

/// Why a password could not be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl SignIns {
    /// At most `concurrent` checks at once and `queue` more waiting.
    pub fn new(concurrent: u32, queue: u32) -> SignIns {
        let concurrent = concurrent.max(1) as usize;
        SignIns {
            throttle: SignInThrottle::default(),
            checks: std::sync::Arc::new(Semaphore::new(concurrent)),
            admitted: std::sync::Arc::new(Semaphore::new(concurrent + queue as usize)),
            checks_run: AtomicU64::new(0),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `check` (an argon2 verification) on a blocking thread once a
    /// checking slot is free; [`Busy`] at once when too many wait already.
    pub async fn check<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let _admitted: OwnedSemaphorePermit = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy)?;
        let _slot = self
            .checks
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Busy)?;
        self.checks_run.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(check).await.map_err(|_| Busy)
    }

    /// Password checks run since start (failed or not).
    pub fn checks_run(&self) -> u64 {
        self.checks_run.load(Ordering::Relaxed)
    }

    /// Counts a failed (`checked`) or refused sign-in for the audit log.
    pub fn record_failure(&self, login: &str, address: Option<IpAddr>, checked: bool) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        let now = time::OffsetDateTime::now_utc();
        let address = address.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        // A login never seen is kept as typed, cut short; past the bound,
        // the address's other logins share one line.
        let mut login: String = login_key(login).chars().take(64).collect();
        if !failures.contains_key(&(login.clone(), address.clone()))
            && failures.len() >= MAX_ENTRIES
        {
            login = "(other logins)".to_owned();
        }
        let entry = failures
            .entry((login.clone(), address.clone()))
            .or_insert(FailedSignIns {
                login,
                address,
                checked: 0,
                refused: 0,
                first: now,
                last: now,
            });
        if checked {
            entry.checked += 1;
        } else {
            entry.refused += 1;
        }
        entry.last = now;
    }

    /// The failures counted since the last call, one per login and address.
    pub fn take_failures(&self) -> Vec<FailedSignIns> {
        let Ok(mut failures) = self.failures.lock() else {
            return Vec::new();
        };
        let mut taken: Vec<FailedSignIns> = std::mem::take(&mut *failures).into_values().collect();
        taken.sort_by_key(|f| f.first);
        taken
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_address_waits_after_five_failures_doubling_up_to_the_limit() {
        let throttle = SignInThrottle::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..FREE_FAILURES {
            assert_eq!(throttle.admit(&format!("login{i}"), a, t0), Ok(()));
        }
        assert_eq!(
            throttle.admit("another", a, t0),
            Err(Refused::Address(FIRST_WAIT))
        );
        assert_eq!(throttle.admit("alice", ip("192.0.2.2"), t0), Ok(()));
        let later = t0 + FIRST_WAIT;
        assert_eq!(throttle.admit("x", a, later), Ok(()), "the wait ends");
        assert_eq!(
            throttle.admit("x", a, later),
            Err(Refused::Address(FIRST_WAIT * 2))
        );
        let mut t = later;
        for _ in 0..20 {
            t += MAX_WAIT;
            let _ = throttle.admit("x", a, t);
        }
        assert_eq!(throttle.admit("x", a, t), Err(Refused::Address(MAX_WAIT)));
        throttle.succeeded("x", a);
        assert_eq!(throttle.admit("x", a, t), Ok(()));
    }

    #[test]
    fn a_login_waits_at_most_the_short_cap_and_never_at_an_address_it_signed_in_from() {
        let throttle = SignInThrottle::default();
        let t0 = Instant::now();
        let home = ip("192.0.2.10");
        assert_eq!(throttle.admit("Alice", home, t0), Ok(()));
        throttle.succeeded("alice", home);
        // Strangers from many addresses guess at alice's password.
        let mut t = t0;
        for i in 0..200u32 {
            t += Duration::from_secs(1);
            let stranger = ip(&format!("198.51.100.{}", i % 250));
            let _ = throttle.admit("alice ", stranger, t);
        }
        assert!(matches!(
            throttle.admit("ALICE", ip("203.0.113.1"), t),
            Err(Refused::Login(wait)) if wait <= MAX_LOGIN_WAIT
        ));
        assert_eq!(
            throttle.admit("alice", home, t),
            Ok(()),
            "alice's own address is not locked out by strangers"
        );
    }

    #[test]
    fn parallel_attempts_are_counted_before_they_are_checked() {
        let throttle = std::sync::Arc::new(SignInThrottle::default());
        let t0 = Instant::now();
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..200)
                .map(|_| {
                    let throttle = throttle.clone();
                    s.spawn(move || throttle.admit("alice", ip("192.0.2.7"), t0).is_ok())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(admitted, FREE_FAILURES as usize);
    }

    #[test]
    fn junk_logins_do_not_evict_a_waiting_login() {
        let throttle = SignInThrottle::default();
        let t0 = Instant::now();
        for _ in 0..FREE_LOGIN_FAILURES {
            let _ = throttle.admit("alice", None, t0);
        }
        assert!(matches!(
            throttle.admit("alice", None, t0),
            Err(Refused::Login(_))
        ));
        for i in 0..MAX_ENTRIES + 500 {
            let _ = throttle.admit(&format!("junk{i}"), None, t0);
        }
        assert!(
            matches!(throttle.admit("alice", None, t0), Err(Refused::Login(_))),
            "the lockout survives ten thousand junk logins"
        );
    }

    #[test]
    fn an_ipv6_client_is_throttled_by_its_slash_64() {
        let throttle = SignInThrottle::default();
        let t0 = Instant::now();
        for i in 0..FREE_FAILURES {
            let a = ip(&format!("2001:db8:1:2::{:x}", i + 1));
            assert_eq!(throttle.admit(&format!("l{i}"), a, t0), Ok(()));
        }
        assert!(matches!(
            throttle.admit("l", ip("2001:db8:1:2:ffff::1"), t0),
            Err(Refused::Address(_))
        ));
        assert_eq!(throttle.admit("l", ip("2001:db8:1:3::1"), t0), Ok(()));
    }

    #[test]
    fn failures_are_aggregated_per_login_and_address() {
        let gate = SignIns::new(2, 8);
        for _ in 0..3 {
            gate.record_failure("Alice", ip("192.0.2.1"), true);
        }
        for _ in 0..40 {
            gate.record_failure("alice", ip("192.0.2.1"), false);
        }
        gate.record_failure("bob", None, true);
        let taken = gate.take_failures();
        assert_eq!(taken.len(), 2);
        let alice = taken.iter().find(|f| f.login == "alice").unwrap();
        assert_eq!((alice.checked, alice.refused), (3, 40));
        assert_eq!(alice.address, "192.0.2.1");
        assert!(gate.take_failures().is_empty(), "taken once");
    }
}
