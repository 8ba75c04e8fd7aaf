//! What a [`RedisStore`] counts — hits, misses, errors, timeouts, corrupt values, calls the
//! breaker refused — and the snapshot of those counters it hands out.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{BreakerState, RedisStore};

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) timeouts: AtomicU64,
    pub(super) corrupt: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) breaker_opened: AtomicU64,
}

/// A [`RedisStore`]'s counters at one moment; from [`RedisStore::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Lookups that found a decodable entry.
    pub hits: u64,
    /// Lookups that found nothing (including corrupt values).
    pub misses: u64,
    /// Calls that reached for Redis and failed (timeouts included).
    pub errors: u64,
    /// Of those, calls that ran out of the command timeout.
    pub timeouts: u64,
    /// Values under our keys that did not decode (treated as misses).
    pub corrupt: u64,
    /// Calls failed fast by the open breaker without touching Redis.
    pub rejected: u64,
    /// How many times the breaker has opened.
    pub breaker_opened: u64,
    /// The breaker's state now.
    pub breaker: BreakerState,
    /// Whether every connection is up now.
    pub connected: bool,
}

impl RedisStore {
    /// The counters and the breaker's state.
    #[must_use]
    pub fn stats(&self) -> RedisStats {
        let c = &self.shared.counters;
        RedisStats {
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            errors: c.errors.load(Relaxed),
            timeouts: c.timeouts.load(Relaxed),
            corrupt: c.corrupt.load(Relaxed),
            rejected: c.rejected.load(Relaxed),
            breaker_opened: c.breaker_opened.load(Relaxed),
            breaker: self.shared.breaker.state(),
            connected: self.is_connected(),
        }
    }
}
