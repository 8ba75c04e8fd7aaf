//! The memory store's table: shards of a plain hash map behind a mutex, each bounded by bytes
//! and evicting with CLOCK (second chance in insertion order), each entry expiring at its own
//! deadline.
//!
//! It replaced moka here because a hit is one short critical section: lock, find, mark it
//! visited, clone an `Arc`. moka's read path (epoch pin, read log, frequency sketch,
//! housekeeping) cost a memory hit about 8 % of its server CPU on the peer rig, and a miss its
//! insert, timer wheel and table growth (BENCHMARKS.md, "Against the other crates").
//!
//! Invariants, each with a test below:
//! - an entry is answered only before its deadline; past it, the read removes it (`expired`);
//! - a shard's bytes never exceed its share of the bound after an insert returns; an entry
//!   heavier than that share is not kept (`size`);
//! - every removal is counted once, by cause.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::super::evictions::{Cause, Evictions};
use crate::CacheKey;

/// Shards a store gets per this many bytes of bound (at most [`MAX_SHARDS`]): a small store is
/// one shard, so its bound is not split into slices too thin for one large entry.
const BYTES_PER_SHARD: u64 = 16 << 20;
const MAX_SHARDS: u64 = 64;

/// What the map is keyed by: a key's variant hash, else its primary hash ([`CacheKey::id`]).
/// 32 bytes instead of a whole `CacheKey` in every bucket and queue entry: most of what an
/// entry costs the table beyond its value.
type Id = [u8; 32];

/// One slot: what it holds, what it weighs, and whether it was read since the clock hand
/// last passed it.
struct Slot<V> {
    value: V,
    deadline: Instant,
    weight: u32,
    /// Which insertion of this key the slot is: a queue entry with another is stale.
    seq: u32,
    visited: bool,
    /// The whole key, for removal by what it prints as (`clear_prefix`).
    key: Box<CacheKey>,
}

struct Shard<V> {
    map: HashMap<Id, Slot<V>, IdHasher>,
    /// Keys in insertion order, with the insertion they name; the clock hand is the front.
    order: VecDeque<(Id, u32)>,
    bytes: u64,
    seq: u32,
}

/// Hashes an [`Id`] by eight of its bytes, mixed with the table's random seed: the id is
/// already a SHA-256 output, so a full hash over it would buy nothing.
#[derive(Clone)]
struct IdHasher(u64);

impl BuildHasher for IdHasher {
    type Hasher = IdHash;
    fn build_hasher(&self) -> IdHash {
        IdHash(self.0)
    }
}

struct IdHash(u64);

impl std::hash::Hasher for IdHash {
    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length then its bytes: take eight bytes of the latter.
        if let Some(word) = bytes.get(..8).and_then(|b| b.try_into().ok()) {
            self.0 ^= u64::from_le_bytes(word);
        }
    }
    fn write_usize(&mut self, _: usize) {}
    fn finish(&self) -> u64 {
        mix(self.0)
    }
}

/// splitmix64's finaliser: applied to an id's word xor the table's seed, ids aimed at one
/// bucket or shard need the seed.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A byte-bounded, expiring map from [`CacheKey`] to `V`.
pub(super) struct Table<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    /// Keys the bucket and shard hashes, so crafted URLs cannot aim at one.
    seed: u64,
    /// Where every removal is counted, by cause.
    evictions: Arc<Evictions>,
    share: u64,
}

impl<V: Clone> Table<V> {
    pub(super) fn new(max_bytes: u64, evictions: Arc<Evictions>) -> Self {
        let n = (max_bytes / BYTES_PER_SHARD).clamp(1, MAX_SHARDS);
        let n = if n.is_power_of_two() {
            n
        } else {
            n.next_power_of_two() / 2
        };
        let seed = RandomState::new().hash_one(0x5eed_u64);
        let shards = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::with_hasher(IdHasher(seed)),
                    order: VecDeque::new(),
                    bytes: 0,
                    seq: 0,
                })
            })
            .collect();
        Self {
            shards,
            seed,
            evictions,
            share: max_bytes / n,
        }
    }

    fn shard(&self, id: &Id) -> MutexGuard<'_, Shard<V>> {
        let i = if self.shards.len() == 1 {
            0
        } else {
            let word = u64::from_le_bytes(id[8..16].try_into().unwrap_or_default());
            // The bucket hash mixes bytes 0..8; the shard takes other bytes, so a shard's map
            // still spreads over all its buckets.
            (mix(word ^ self.seed.rotate_left(32)) as usize) & (self.shards.len() - 1)
        };
        lock(&self.shards[i])
    }

    /// The value under `key` if it is there and alive at `now`; marks it read.
    pub(super) fn get(&self, key: &CacheKey, now: Instant) -> Option<V> {
        let id = key.id();
        let mut shard = self.shard(&id);
        match shard.map.get_mut(&id) {
            None => return None,
            Some(slot) if slot.deadline > now => {
                slot.visited = true;
                return Some(slot.value.clone());
            }
            Some(_) => {}
        }
        shard.take(&id);
        self.evictions.evicted(Cause::Expired);
        None
    }

    /// Stores `value` under `key` until `deadline`, weighing `weight`, then evicts down to the
    /// shard's share of the bound.
    pub(super) fn insert(&self, key: CacheKey, value: V, deadline: Instant, weight: u64) {
        let id = key.id();
        let mut shard = self.shard(&id);
        if weight > self.share {
            // Never fits: kept, it would evict the whole shard and then itself.
            if shard.take(&id).is_some() {
                self.evictions.evicted(Cause::Replaced);
            }
            self.evictions.evicted(Cause::Size);
            return;
        }
        shard.put(id, key, value, deadline, weight, &self.evictions);
        shard.evict(self.share, &self.evictions);
    }

    /// Removes `key`; whether it was there (alive or not).
    pub(super) fn remove(&self, key: &CacheKey) -> Option<V> {
        let id = key.id();
        let taken = self.shard(&id).take(&id)?;
        self.evictions.evicted(Cause::Explicit);
        Some(taken.value)
    }

    /// Runs `f` on the value under `key` (alive at `now`) with the shard locked: what it
    /// returns replaces it (`Some`) or leaves it as it is (`None`). One atomic read-modify-write.
    pub(super) fn update<T>(
        &self,
        key: CacheKey,
        now: Instant,
        f: impl FnOnce(Option<(&V, Instant)>) -> (Option<(V, Instant, u64)>, T),
    ) -> T {
        let id = key.id();
        let mut shard = self.shard(&id);
        let current = shard
            .map
            .get(&id)
            .filter(|s| s.deadline > now)
            .map(|s| (&s.value, s.deadline));
        let (replace, out) = f(current);
        if let Some((value, deadline, weight)) = replace {
            if weight <= self.share {
                shard.put(id, key, value, deadline, weight, &self.evictions);
                shard.evict(self.share, &self.evictions);
            }
        }
        out
    }

    /// Removes every entry `doomed` picks; how many.
    pub(super) fn remove_where(&self, mut doomed: impl FnMut(&CacheKey, &V) -> bool) -> u64 {
        let doomed = |s: &Slot<V>| doomed(&s.key, &s.value);
        self.sweep(doomed, Cause::Explicit).0
    }

    /// Drops what expired by `now`, then counts: (entries, bytes).
    pub(super) fn sizes(&self, now: Instant) -> (u64, u64) {
        let (_, entries, bytes) = self.sweep(|s| s.deadline <= now, Cause::Expired);
        (entries, bytes)
    }

    /// Removes, shard by shard, every slot `doomed` picks (counted as `cause`): how many, and
    /// the entries and bytes left.
    fn sweep(&self, mut doomed: impl FnMut(&Slot<V>) -> bool, cause: Cause) -> (u64, u64, u64) {
        let (mut removed, mut entries, mut bytes) = (0, 0, 0);
        for shard in &*self.shards {
            let mut shard = lock(shard);
            let victims: Vec<Id> = shard
                .map
                .iter()
                .filter(|(_, s)| doomed(s))
                .map(|(id, _)| *id)
                .collect();
            for id in &victims {
                shard.take(id);
                self.evictions.evicted(cause);
            }
            removed += victims.len() as u64;
            entries += shard.map.len() as u64;
            bytes += shard.bytes;
        }
        (removed, entries, bytes)
    }
}

impl<V> Shard<V> {
    fn put(
        &mut self,
        id: Id,
        key: CacheKey,
        value: V,
        deadline: Instant,
        weight: u64,
        ev: &Evictions,
    ) {
        // `insert` refuses anything heavier than the shard's share, which fits in a u32 weight
        // unless the bound is over 4 GiB a shard: then the weight is clamped.
        let weight = u32::try_from(weight).unwrap_or(u32::MAX);
        if let Some(slot) = self.map.get_mut(&id) {
            // Replaced in place: it keeps its place in the queue.
            self.bytes = self.bytes - u64::from(slot.weight) + u64::from(weight);
            slot.value = value;
            slot.deadline = deadline;
            slot.weight = weight;
            ev.evicted(Cause::Replaced);
            return;
        }
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.order.push_back((id, seq));
        self.map.insert(
            id,
            Slot {
                value,
                deadline,
                weight,
                seq,
                visited: false,
                key: Box::new(key),
            },
        );
        self.bytes += u64::from(weight);
        self.compact();
    }

    fn take(&mut self, id: &Id) -> Option<Slot<V>> {
        let slot = self.map.remove(id)?;
        self.bytes -= u64::from(slot.weight);
        self.compact();
        Some(slot)
    }

    /// CLOCK: from the front, a slot read since the hand last passed goes round again
    /// (unmarked), any other is evicted — an expired one as expired — until the shard fits.
    fn evict(&mut self, share: u64, ev: &Evictions) {
        let now = Instant::now();
        while self.bytes > share {
            let Some((id, seq)) = self.order.pop_front() else {
                return;
            };
            let Some(slot) = self.map.get_mut(&id).filter(|s| s.seq == seq) else {
                continue; // stale: removed or re-inserted since
            };
            if slot.visited && slot.deadline > now {
                slot.visited = false;
                self.order.push_back((id, seq));
                continue;
            }
            let expired = slot.deadline <= now;
            if let Some(slot) = self.map.remove(&id) {
                self.bytes -= u64::from(slot.weight);
            }
            ev.evicted(if expired { Cause::Expired } else { Cause::Size });
        }
    }

    /// Drops stale queue entries once they outnumber the live ones, so the queue stays within
    /// twice the map (plus a little).
    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(id, seq)| map.get(id).is_some_and(|s| s.seq == *seq));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside a critical section leaves the shard consistent (each step is whole).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(i: u32) -> CacheKey {
        CacheKey::from_parts("t", &[&i.to_be_bytes()])
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// A table bounded by `bytes`, with its own eviction counters.
    fn table<V: Clone>(bytes: u64) -> Table<V> {
        Table::new(bytes, Arc::new(Evictions::new("t")))
    }

    #[test]
    fn an_entry_is_answered_until_its_deadline_and_never_after() {
        let t = table(1 << 20);
        let now = Instant::now();
        t.insert(key(1), "v", now + Duration::from_secs(1), 10);
        assert_eq!(t.get(&key(1), now), Some("v"));
        assert_eq!(t.get(&key(1), now + Duration::from_secs(1)), None);
        // The expired read removed it: gone for every later reader too.
        assert_eq!(t.get(&key(1), now), None);
        assert_eq!(t.sizes(now), (0, 0));
    }

    #[test]
    fn the_bytes_stay_within_the_bound_and_read_entries_outlive_unread_ones() {
        let t = table(1000);
        let now = Instant::now();
        for i in 0..10 {
            t.insert(key(i), i, later(), 100);
        }
        // Key 0 is read, so the hand passes it over once.
        assert_eq!(t.get(&key(0), now), Some(0));
        for i in 10..15 {
            t.insert(key(i), i, later(), 100);
            assert!(t.sizes(now).1 <= 1000);
        }
        assert_eq!(
            t.get(&key(0), now),
            Some(0),
            "a read entry was evicted first"
        );
        assert_eq!(t.get(&key(1), now), None);
        assert_eq!(t.sizes(now), (10, 1000));
    }

    #[test]
    fn an_entry_heavier_than_the_bound_is_not_kept_and_replaces_nothing_stale() {
        let t = table(1000);
        let now = Instant::now();
        t.insert(key(1), "small", later(), 10);
        t.insert(key(2), "kept", later(), 10);
        t.insert(key(1), "huge", later(), 5000);
        // The old value under the key is not answered in place of the one refused.
        assert_eq!(t.get(&key(1), now), None);
        assert_eq!(t.get(&key(2), now), Some("kept"));
    }

    #[test]
    fn removed_and_reinserted_keys_leave_the_queue_bounded() {
        let t = table(1 << 20);
        for round in 0..10_000u32 {
            t.insert(key(round % 3), round, later(), 10);
            t.remove(&key(round % 3));
        }
        let shard = lock(&t.shards[0]);
        assert!(
            shard.order.len() <= 64 + 2 * shard.map.len(),
            "{}",
            shard.order.len()
        );
    }

    #[test]
    fn an_update_is_one_read_modify_write_that_ignores_expired_values() {
        let t = table(1 << 20);
        let now = Instant::now();
        t.insert(key(1), 5, now + Duration::from_secs(1), 8);
        let seen = t.update(key(1), now, |cur| {
            let v = cur.map_or(0, |(v, _)| *v);
            (Some((v + 1, later(), 8)), v)
        });
        assert_eq!((seen, t.get(&key(1), now)), (5, Some(6)));
        let seen = t.update(key(2), now + Duration::from_secs(2), |cur| {
            (None, cur.map(|(v, _)| *v))
        });
        assert_eq!(seen, None);
    }
}
