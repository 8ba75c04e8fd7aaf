//! The memory store's raw values (the low-level API): kept in the same moka map as the
//! responses, so they share its byte bound, under a slot key derived from the readable key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Held, MemoryStore, Stored};
use crate::store::glob;
use crate::{CacheKey, StoreError, StoreErrorKind};

/// How long a counter that [`Store::incr_value`] created lives: "forever" for moka.
const NO_EXPIRY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The slot of the raw value under `key`. The moka map stays keyed by [`CacheKey`], so the
/// response path pays nothing for values; the slot prints as `key:{hash}`, so `clear()`'s
/// prefix removes values with the responses, as it does on Redis.
pub(super) fn value_slot(key: &str) -> CacheKey {
    CacheKey::from_parts(key, &[b"\0trc:value"])
}

impl MemoryStore {
    pub(super) fn value(&self, key: &str) -> Option<Bytes> {
        match self.cache.get(&value_slot(key))?.held {
            Held::Value { bytes, .. } => Some(bytes),
            Held::Entry(_) => None,
        }
    }

    pub(super) fn remove_matching(&self, pattern: &str) -> u64 {
        let victims: Vec<Arc<CacheKey>> = self
            .cache
            .iter()
            .filter(
                |(_, v)| matches!(&v.held, Held::Value { key, .. } if glob::matches(pattern, key)),
            )
            .map(|(k, _)| k)
            .collect();
        let removed = victims
            .iter()
            .filter(|k| self.cache.remove(k.as_ref()).is_some())
            .count();
        removed as u64
    }

    pub(super) fn insert_value(&self, key: &str, bytes: Bytes, deadline: Instant) {
        let key: Arc<str> = Arc::from(key);
        let slot = value_slot(&key);
        let held = Held::Value { key, bytes };
        self.cache.insert(slot, Stored { held, deadline });
    }

    /// `incr_value`: one atomic read-modify-write of the slot (moka's `and_compute_with`
    /// locks the key), keeping the deadline of a counter that exists.
    pub(super) fn add(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        use moka::ops::compute::Op;
        let mut outcome = Err(StoreError::new(StoreErrorKind::Backend, "not computed"));
        self.cache
            .entry(value_slot(key))
            .and_compute_with(|current| {
                let (count, deadline) = match current.map(moka::Entry::into_value) {
                    None => (Some(0), Instant::now() + NO_EXPIRY),
                    Some(Stored {
                        held: Held::Value { bytes, .. },
                        deadline,
                    }) => (parse_counter(&bytes), deadline),
                    Some(Stored { deadline, .. }) => (None, deadline),
                };
                match count.and_then(|n| n.checked_add(delta)) {
                    Some(sum) => {
                        outcome = Ok(sum);
                        let bytes = Bytes::from(sum.to_string());
                        let held = Held::Value {
                            key: Arc::from(key),
                            bytes,
                        };
                        Op::Put(Stored { held, deadline })
                    }
                    None => {
                        outcome = Err(StoreError::new(
                            StoreErrorKind::Corrupt,
                            format!("{key}: not an integer counter, or adding {delta} overflows"),
                        ));
                        Op::Nop
                    }
                }
            });
        outcome
    }
}

/// A counter's value: decimal ASCII digits with an optional `-`, as Redis keeps integers
/// (no `+`, no spaces: what `INCRBY` refuses, this refuses too).
fn parse_counter(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}
