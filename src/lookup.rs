//! Reading and writing entries through the store, following `Vary`: a varying resource keeps a
//! record of the headers it varies on under its primary key, and one entry per variant.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName};

use crate::cache::Shared;
use crate::metrics::RouteCounters;
use crate::{CacheKey, CachedResponse, Entry, StoreError};

/// The entry for a request, following a learned or stored `Vary`, and the key it was (or would
/// be) stored under.
pub(crate) async fn lookup(
    shared: &Shared,
    counters: &RouteCounters,
    primary: &CacheKey,
    headers: &HeaderMap,
) -> (Option<Arc<CachedResponse>>, CacheKey) {
    let learned = if counters.varies() {
        shared.vary.get(primary.primary())
    } else {
        None
    };
    let key = match learned {
        Some(names) => primary.with_variant(&names, headers),
        None => primary.clone(),
    };
    match get(shared, counters, &key).await {
        Some(Entry::Response(r)) => (Some(r), key),
        Some(Entry::Vary(names)) => {
            counters.set_varies();
            shared.vary.insert(*primary.primary(), names.clone());
            let variant = primary.with_variant(&names, headers);
            match get(shared, counters, &variant).await {
                Some(Entry::Response(r)) => (Some(r), variant),
                _ => (None, variant),
            }
        }
        None => (None, key),
    }
}

async fn get(shared: &Shared, counters: &RouteCounters, key: &CacheKey) -> Option<Entry> {
    let answer = match shared.store.get_now(key) {
        Some(answer) => answer,
        None => shared.store.get(key).await,
    };
    match answer {
        Ok(found) => found,
        Err(e) => {
            counters.store_error();
            log_store_error(&e);
            None
        }
    }
}

pub(crate) async fn store(
    shared: &Shared,
    counters: &RouteCounters,
    primary: &CacheKey,
    vary: &[HeaderName],
    req_headers: &HeaderMap,
    entry: CachedResponse,
) -> bool {
    let ttl = entry.ttl;
    let entry = Entry::from(entry);
    let result = if vary.is_empty() {
        shared.vary.invalidate(primary.primary());
        shared.store.put(primary, entry, ttl).await
    } else {
        let names: Arc<[HeaderName]> = vary.into();
        counters.set_varies();
        shared.vary.insert(*primary.primary(), names.clone());
        let variant = primary.with_variant(&names, req_headers);
        match shared.store.put(&variant, entry, ttl).await {
            Ok(()) => shared.store.put(primary, Entry::Vary(names), ttl).await,
            Err(e) => Err(e),
        }
    };
    match result {
        Ok(()) => {
            counters.stored();
            true
        }
        Err(e) => {
            counters.store_error();
            log_store_error(&e);
            false
        }
    }
}

/// Logs at most one store error a second, saying how many were not logged.
fn log_store_error(e: &StoreError) {
    static LAST_SECOND: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST_SECOND.load(Ordering::Relaxed);
    if now != last
        && LAST_SECOND
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
        tracing::warn!(error = %e, suppressed, "cache store failed; serving from the handler");
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
    }
}
