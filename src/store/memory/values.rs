//! The memory store's raw values (the low-level API): kept in the same table as the
//! responses, so they share its byte bound, under a slot key derived from the readable key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{cost, Held, MemoryStore, Value};
use crate::store::glob;
use crate::{CacheKey, StoreError, StoreErrorKind};

/// How long a counter that [`Store::incr_value`] created lives: "forever".
const NO_EXPIRY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The slot of the raw value under `key`. The table stays keyed by [`CacheKey`], so the
/// response path pays nothing for values; the slot prints as `key:{hash}`, so `clear()`'s
/// prefix removes values with the responses, as it does on Redis.
pub(super) fn value_slot(key: &str) -> CacheKey {
    CacheKey::from_parts(key, &[b"\0trc:value"])
}

impl MemoryStore {
    pub(super) fn value(&self, key: &str) -> Option<Bytes> {
        match self.table.get(&value_slot(key), Instant::now())? {
            Held::Value(v) => Some(v.bytes),
            Held::Entry(_) => None,
        }
    }

    pub(super) fn remove_matching(&self, pattern: &str) -> u64 {
        self.table
            .remove_where(|_, v| matches!(v, Held::Value(v) if glob::matches(pattern, &v.key)))
    }

    pub(super) fn insert_value(&self, key: &str, bytes: Bytes, deadline: Instant) {
        let key: Arc<str> = Arc::from(key);
        let slot = value_slot(&key);
        self.keep(slot, Held::Value(Box::new(Value { key, bytes })), deadline);
    }

    /// `incr_value`: one atomic read-modify-write of the slot (its shard is locked), keeping
    /// the deadline of a counter that exists.
    pub(super) fn add(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let now = Instant::now();
        self.table.update(value_slot(key), now, |current| {
            let (count, deadline) = match current {
                None => (Some(0), now + NO_EXPIRY),
                Some((Held::Value(v), deadline)) => (parse_counter(&v.bytes), deadline),
                Some((Held::Entry(_), deadline)) => (None, deadline),
            };
            match count.and_then(|n| n.checked_add(delta)) {
                Some(sum) => {
                    let held = Held::Value(Box::new(Value {
                        key: Arc::from(key),
                        bytes: Bytes::from(sum.to_string()),
                    }));
                    let weight = cost(&held) as u64;
                    (Some((held, deadline, weight)), Ok(sum))
                }
                None => (
                    None,
                    Err(StoreError::new(
                        StoreErrorKind::Corrupt,
                        format!("{key}: not an integer counter, or adding {delta} overflows"),
                    )),
                ),
            }
        })
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
