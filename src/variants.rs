//! How many `Vary` variants of each URL this process has stored, so that one URL cannot fill
//! the store with variants (a client sending random `Accept-Language` values makes one each).
//!
//! Counts are per process and best effort: with Redis, each process keeps at most the cap, and
//! a variant evicted by the store still counts until its TTL ends. The table is bounded; a URL
//! whose count is dropped to make room starts again from zero.

use std::sync::{Arc, Mutex};

/// The variants of one URL kept, by their hash's first eight bytes, and when each expires.
type Kept = Arc<Mutex<Vec<(u64, u64)>>>;

/// The largest total weight of the table: about 16 bytes a unit, so at most ~16 MiB.
const CAPACITY: u64 = 1 << 20;
/// Weight units of a URL's record besides its variants (the table's own bookkeeping).
const RECORD_WEIGHT: u32 = 8;

pub(crate) struct Variants {
    kept: moka::sync::Cache<[u8; 32], Kept>,
}

impl Variants {
    pub(crate) fn new() -> Self {
        let kept = moka::sync::Cache::builder()
            .max_capacity(CAPACITY)
            .weigher(|_, kept: &Kept| {
                let len = kept.lock().map_or(0, |k| k.len());
                RECORD_WEIGHT.saturating_add(u32::try_from(len).unwrap_or(u32::MAX))
            })
            .build();
        Self { kept }
    }

    /// Whether `variant` of `primary` may be stored until `expires` (milliseconds), keeping at
    /// most `max` unexpired variants per URL; an admitted variant counts from now on.
    pub(crate) fn admit(
        &self,
        primary: &[u8; 32],
        variant: &[u8; 32],
        now: u64,
        expires: u64,
        max: usize,
    ) -> bool {
        let id = u64::from_le_bytes(variant[..8].try_into().unwrap_or_default());
        let record = self.kept.get_with(*primary, Kept::default);
        let grew = {
            // A std lock: held to edit one small list, never across an await.
            let mut kept = record.lock().unwrap_or_else(|e| e.into_inner());
            kept.retain(|&(_, until)| until > now);
            if let Some(known) = kept.iter_mut().find(|(v, _)| *v == id) {
                known.1 = known.1.max(expires);
                return true;
            }
            if kept.len() >= max {
                return false;
            }
            kept.push((id, expires));
            true
        };
        if grew {
            // Weighed again: moka weighs a value when it is inserted.
            self.kept.insert(*primary, record);
        }
        true
    }

    /// Forgets the variants of `primary` (its entries were removed).
    pub(crate) fn forget(&self, primary: &[u8; 32]) {
        self.kept.invalidate(primary);
    }

    /// Forgets every count (the entries were cleared, or the namespace moved on).
    pub(crate) fn forget_all(&self) {
        self.kept.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn at_most_max_unexpired_variants_per_url() {
        let variants = Variants::new();
        let url = v(0);
        assert!(variants.admit(&url, &v(1), 0, 100, 2));
        assert!(variants.admit(&url, &v(2), 0, 50, 2));
        assert!(!variants.admit(&url, &v(3), 10, 100, 2), "full");
        assert!(
            variants.admit(&url, &v(1), 10, 200, 2),
            "a kept variant is stored again"
        );
        assert!(
            variants.admit(&v(9), &v(3), 10, 100, 2),
            "another URL counts apart"
        );
        assert!(
            variants.admit(&url, &v(3), 50, 100, 2),
            "v(2) expired at 50"
        );
        assert!(!variants.admit(&url, &v(2), 60, 100, 2));
        variants.forget(&url);
        assert!(variants.admit(&url, &v(2), 60, 100, 2));
        assert!(
            !variants.admit(&url, &v(4), 60, 100, 0),
            "a cap of 0 keeps none new"
        );
    }
}
