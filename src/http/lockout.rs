//! Failed authentication attempts, tracked so that guessing costs the guesser and nobody
//! else.
//!
//! - Failures are counted per credential (an access key, a token, a user's password) *and*
//!   source address: five within five minutes lock that credential for that address alone,
//!   for five minutes. Someone who knows an access key id (they travel in clear) cannot lock
//!   its owner out from elsewhere.
//! - Failures are also counted per source address, whatever the credential: past a limit
//!   within five minutes, every further attempt from that address is refused unchecked for
//!   the rest of the window, which also bounds the work a flood of bad signatures costs.
//! - Both tables are caches of fixed capacity whose entries are of a fixed size (a
//!   credential is kept as a digest): each attempt costs a constant time and the memory
//!   stays bounded whatever the number or the length of the keys tried; an entry leaves
//!   five minutes after it was last touched.
//!
//! A refusal looks exactly like any other authentication failure.
//!
//! While no attempt has failed for [`LOCK_FOR`], nothing can be locked and no count can
//! still matter, so the tables are not consulted at all: a success costs one atomic load.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;

/// Failures of one credential from one address after which it is locked there.
pub const LOCK_AFTER_FAILURES: u32 = 5;
/// How long failures are counted together, and how long a lock lasts.
pub const LOCK_FOR: Duration = Duration::from_secs(300);
/// Default number of failures from one address (any credential) within [`LOCK_FOR`] after
/// which the address is refused for the rest of that time.
pub const DEFAULT_ADDRESS_FAILURES: u32 = 100;
/// Entries each table holds at most.
const CAPACITY: u64 = 100_000;

/// Failures counted since `first`, and a lock.
#[derive(Debug)]
struct Window {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            count: 0,
            first: now,
            locked_until: None,
        }
    }

    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }

    /// Counts a failure; locks for [`LOCK_FOR`] once `limit` are counted within it.
    fn fail(&mut self, now: Instant, limit: u32) {
        if now.duration_since(self.first) > LOCK_FOR && !self.locked(now) {
            *self = Self::new(now);
        }
        self.count = self.count.saturating_add(1);
        if self.count >= limit && !self.locked(now) {
            self.locked_until = Some(now + LOCK_FOR);
        }
    }
}

type Shared = Arc<Mutex<Window>>;

fn table<K>() -> Cache<K, Shared>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(CAPACITY)
        .time_to_idle(LOCK_FOR)
        .build()
}

/// What authentication failures and throttling there were, for a periodic summary in the
/// log instead of one line per request.
#[derive(Debug, Default)]
pub struct AbuseCounters {
    pub failed: AtomicU64,
    pub refused_locked: AtomicU64,
    pub throttled: AtomicU64,
}

impl AbuseCounters {
    /// The counts since the last call, which start again from zero.
    pub fn take(&self) -> (u64, u64, u64) {
        (
            self.failed.swap(0, Ordering::Relaxed),
            self.refused_locked.swap(0, Ordering::Relaxed),
            self.throttled.swap(0, Ordering::Relaxed),
        )
    }
}

/// A credential as the tables keep it: a digest of fixed size, whatever the length of what
/// a client sent (a user name of megabytes costs an entry no more than an access key id).
type CredentialKey = [u8; 16];

fn credential_key(credential: &str) -> CredentialKey {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(credential.as_bytes());
    let mut key = [0; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Failed attempts per (credential, address) and per address.
pub struct FailureTracker {
    credentials: Cache<(CredentialKey, IpAddr), Shared>,
    addresses: Cache<IpAddr, Shared>,
    address_limit: u32,
    pub counters: AbuseCounters,
    /// When the tracker was made: the origin of `last_failure`.
    epoch: Instant,
    /// Nanoseconds from `epoch` to just after the latest failure; 0 before the first.
    last_failure: AtomicU64,
}

impl FailureTracker {
    /// A tracker refusing an address after `address_limit` failures (0: never).
    pub fn new(address_limit: u32) -> Self {
        Self {
            credentials: table(),
            addresses: table(),
            address_limit,
            counters: AbuseCounters::default(),
            epoch: Instant::now(),
            last_failure: AtomicU64::new(0),
        }
    }

    /// True when a failure was counted within the last [`LOCK_FOR`]: only then can a lock
    /// hold or a count matter.
    fn recently_failed(&self, now: Instant) -> bool {
        let last = self.last_failure.load(Ordering::Acquire);
        last != 0
            && now.duration_since(self.epoch).as_nanos() <= u128::from(last) + LOCK_FOR.as_nanos()
    }

    /// True when attempts with `credential` from `addr` are refused for now: the pair is
    /// locked, or the address failed too often. Counted as a refusal when true.
    pub fn locked(&self, credential: &str, addr: IpAddr) -> bool {
        let now = Instant::now();
        if !self.recently_failed(now) {
            return false;
        }
        let is_locked = |entry: Option<Shared>| {
            entry.is_some_and(|w| w.lock().unwrap_or_else(|e| e.into_inner()).locked(now))
        };
        let refused = (self.address_limit > 0 && is_locked(self.addresses.get(&addr)))
            || is_locked(self.credentials.get(&(credential_key(credential), addr)));
        if refused {
            self.counters.refused_locked.fetch_add(1, Ordering::Relaxed);
        }
        refused
    }

    /// Counts a failed attempt with `credential` from `addr`.
    pub fn failed(&self, credential: &str, addr: IpAddr) {
        let now = Instant::now();
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        // Recorded before the tables, so that a check racing this failure sees it; at least
        // 1, so that it never reads as "never".
        let since = u64::try_from(now.duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        self.last_failure.fetch_max(since.max(1), Ordering::AcqRel);
        let pair = self
            .credentials
            .get_with((credential_key(credential), addr), || {
                Arc::new(Mutex::new(Window::new(now)))
            });
        pair.lock()
            .unwrap_or_else(|e| e.into_inner())
            .fail(now, LOCK_AFTER_FAILURES);
        if self.address_limit > 0 {
            let address = self
                .addresses
                .get_with(addr, || Arc::new(Mutex::new(Window::new(now))));
            address
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .fail(now, self.address_limit);
        }
    }

    /// Forgets every failure and lock (an emulator's reset).
    pub fn clear(&self) {
        self.last_failure.store(0, Ordering::Release);
        self.credentials.invalidate_all();
        self.addresses.invalidate_all();
    }

    /// Forgets the failures of `credential` from `addr` after a success there.
    pub fn succeeded(&self, credential: &str, addr: IpAddr) {
        if self.recently_failed(Instant::now()) {
            self.credentials
                .invalidate(&(credential_key(credential), addr));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn five_failures_lock_a_credential_at_that_address_only() {
        let tracker = FailureTracker::new(1000);
        for _ in 0..LOCK_AFTER_FAILURES - 1 {
            tracker.failed("AK", ip(1));
        }
        assert!(!tracker.locked("AK", ip(1)));
        tracker.failed("AK", ip(1));
        assert!(tracker.locked("AK", ip(1)));
        assert!(
            !tracker.locked("AK", ip(2)),
            "the owner elsewhere is not locked out"
        );
        assert!(!tracker.locked("OTHER", ip(1)));
        tracker.succeeded("AK", ip(2));
        assert!(
            tracker.locked("AK", ip(1)),
            "a success elsewhere does not unlock"
        );
    }

    #[test]
    fn long_credentials_are_told_apart_and_locked() {
        let tracker = FailureTracker::new(1000);
        let long = "u".repeat(1 << 20);
        let (one, two) = (format!("{long}1"), format!("{long}2"));
        for _ in 0..LOCK_AFTER_FAILURES {
            tracker.failed(&one, ip(1));
        }
        assert!(tracker.locked(&one, ip(1)));
        assert!(!tracker.locked(&two, ip(1)), "another name, the same start");
    }

    #[test]
    fn an_address_failing_too_often_is_refused_for_every_credential() {
        let tracker = FailureTracker::new(10);
        for n in 0..10 {
            tracker.failed(&format!("AK{n}"), ip(1));
        }
        assert!(tracker.locked("GOOD", ip(1)));
        assert!(!tracker.locked("GOOD", ip(2)));
        let unlimited = FailureTracker::new(0);
        for n in 0..50 {
            unlimited.failed(&format!("AK{n}"), ip(1));
        }
        assert!(!unlimited.locked("GOOD", ip(1)));
    }

    #[test]
    fn without_recent_failures_the_tables_are_not_consulted() {
        let tracker = FailureTracker::new(1000);
        assert!(!tracker.recently_failed(Instant::now()));
        assert!(!tracker.locked("AK", ip(1)));
        for _ in 0..LOCK_AFTER_FAILURES {
            tracker.failed("AK", ip(1));
        }
        assert!(tracker.recently_failed(Instant::now()));
        assert!(tracker.locked("AK", ip(1)));
        // A failure 1 ns after the tracker was made counts for `LOCK_FOR` after it, no longer.
        tracker.last_failure.store(1, Ordering::Release);
        assert!(tracker.recently_failed(tracker.epoch + LOCK_FOR));
        assert!(!tracker.recently_failed(tracker.epoch + LOCK_FOR + Duration::from_nanos(2)));
    }

    #[test]
    fn windows_start_again_after_the_lock_period() {
        let start = Instant::now();
        let mut window = Window::new(start);
        for _ in 0..4 {
            window.fail(start, 5);
        }
        let later = start + LOCK_FOR + Duration::from_secs(1);
        window.fail(later, 5);
        assert_eq!(window.count, 1, "old failures no longer count");
        assert!(!window.locked(later));
        for _ in 0..4 {
            window.fail(later, 5);
        }
        assert!(window.locked(later));
        assert!(!window.locked(later + LOCK_FOR + Duration::from_secs(1)));
    }

    #[test]
    fn many_distinct_keys_keep_the_tables_bounded() {
        let tracker = FailureTracker::new(0);
        for n in 0..(CAPACITY + 5_000) {
            tracker.failed(&format!("AK{n}"), ip(1));
        }
        tracker.credentials.run_pending_tasks();
        assert!(tracker.credentials.entry_count() <= CAPACITY);
    }
}
