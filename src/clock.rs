//! Where the cache reads the time: the wall clock by default, a manual clock in tests.
//!
//! Entries record when they were stored in wall-clock milliseconds so `Age` stays right across
//! processes sharing one Redis; injecting a [`ManualClock`] makes TTL tests deterministic.
//!
//! Two clocks end an entry, and it is served only while both agree:
//! - **Freshness** is the cache's [`Clock`]: an entry is fresh while `now - stored_at < ttl`
//!   (this also gives `Age` and the `ttl=` of `Cache-Status`). Nothing else in the request path
//!   reads the time for freshness.
//! - **Expiry** is the store's own: the memory store keeps a deadline on the monotonic
//!   clock, Redis gets `PX ttl` and expires on the server's clock. The store is given the same
//!   TTL, so with the [`SystemClock`] both end an entry together.
//!
//! Whichever ends it first wins: a [`ManualClock`] moved past the TTL makes an entry stale
//! while the store still holds it (a miss that overwrites it), and no clock can keep an entry
//! the store has dropped. Tests therefore move freshness with a `ManualClock`, and only tests
//! of a store's own expiry sleep, because the memory store's monotonic clock and Redis's cannot be moved. Across
//! processes sharing Redis, `stored_at` is the writer's wall clock: a skew between hosts shifts
//! `Age` and freshness by that skew, while Redis still drops the entry on time.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time, in milliseconds since the Unix epoch.
///
/// ```
/// use tower_response_cache::{Clock, SystemClock};
/// assert!(SystemClock.now_millis() > 1_600_000_000_000);
/// ```
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;
}

/// The operating system's wall clock; the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that only moves when told to. Cloning shares the same time.
///
/// ```
/// use std::time::Duration;
/// use tower_response_cache::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now_millis(), 3_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    millis: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `millis` milliseconds since the epoch.
    #[must_use]
    pub fn new(millis: u64) -> Self {
        Self {
            millis: Arc::new(AtomicU64::new(millis)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.millis.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.millis.load(Ordering::SeqCst)
    }
}
