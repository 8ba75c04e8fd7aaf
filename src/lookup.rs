//! Reading entries through the store, following `Vary`: a varying resource keeps a record of
//! the headers it varies on under its primary key, and one entry per variant (written by
//! [`write`](crate::write)).

use std::sync::Arc;

use http::header::{HeaderMap, HeaderName};

use crate::log::log_store_error;
use crate::metrics::RouteCounters;
use crate::shared::Shared;
use crate::{CacheKey, CachedResponse, Entry, StoreError, StoreErrorKind};

/// Like [`lookup`], for a store that answers without waiting ([`Store::get_now`]); `None` when
/// it cannot.
///
/// [`Store::get_now`]: crate::Store::get_now
pub(crate) fn lookup_now(
    shared: &Shared,
    counters: &RouteCounters,
    primary: &CacheKey,
    headers: &HeaderMap,
) -> Option<(Option<Arc<CachedResponse>>, CacheKey)> {
    let key = learned_key(shared, counters, primary, headers);
    let found = match shared.store.get_now(&key)? {
        Ok(Some(Entry::Vary(names))) => {
            let variant = learn_vary(shared, counters, primary, headers, names);
            let found = answered(counters, shared.store.get_now(&variant)?);
            return Some((found.and_then(response), variant));
        }
        answer => answered(counters, answer),
    };
    Some((found.and_then(response), key))
}

/// What a lookup found.
pub(crate) struct Lookup {
    pub(crate) found: Option<Arc<CachedResponse>>,
    /// The key it was (or would be) stored under.
    pub(crate) key: CacheKey,
    /// The store failed or ran out of time: no entry will be found or written this time.
    pub(crate) failed: bool,
}

/// The entry for a request, following a learned or stored `Vary`, and the key it was (or would
/// be) stored under. Past `deadline` (the request's time budget in the store, across both
/// reads of a varying resource) it gives up: a miss, counted as a store error.
pub(crate) async fn lookup(
    shared: &Shared,
    counters: &RouteCounters,
    primary: &CacheKey,
    headers: &HeaderMap,
    deadline: Option<tokio::time::Instant>,
) -> Lookup {
    let key = learned_key(shared, counters, primary, headers);
    let Some(deadline) = deadline else {
        return read(shared, counters, primary, headers, key).await;
    };
    let read = read(shared, counters, primary, headers, key.clone());
    match tokio::time::timeout_at(deadline, read).await {
        Ok(found) => found,
        Err(_) => {
            counters.store_timeout();
            log_store_error(&StoreError::new(
                StoreErrorKind::Unavailable,
                "lookup ran out of its time budget",
            ));
            Lookup {
                found: None,
                key,
                failed: true,
            }
        }
    }
}

async fn read(
    shared: &Shared,
    counters: &RouteCounters,
    primary: &CacheKey,
    headers: &HeaderMap,
    key: CacheKey,
) -> Lookup {
    let (found, key) = match get(shared, counters, &key).await {
        Ok(Some(Entry::Vary(names))) => {
            let variant = learn_vary(shared, counters, primary, headers, names);
            (get(shared, counters, &variant).await, variant)
        }
        found => (found, key),
    };
    Lookup {
        failed: found.is_err(),
        found: found.ok().flatten().and_then(response),
        key,
    }
}

/// The key to look up first: the variant when the route's `Vary` is already known here.
fn learned_key(
    shared: &Shared,
    counters: &RouteCounters,
    primary: &CacheKey,
    headers: &HeaderMap,
) -> CacheKey {
    let learned = if counters.varies() {
        shared.vary.get(primary.primary())
    } else {
        None
    };
    match learned {
        Some(names) => primary.with_variant(&names, headers),
        None => primary.clone(),
    }
}

/// Remembers a `Vary` record found in the store; the key of this request's variant.
fn learn_vary(
    shared: &Shared,
    counters: &RouteCounters,
    primary: &CacheKey,
    headers: &HeaderMap,
    names: Arc<[HeaderName]>,
) -> CacheKey {
    counters.set_varies();
    let variant = primary.with_variant(&names, headers);
    shared.vary.insert(*primary.primary(), names);
    variant
}

fn response(entry: Entry) -> Option<Arc<CachedResponse>> {
    match entry {
        Entry::Response(r) => Some(r),
        Entry::Vary(_) => None,
    }
}

/// The entry under `key`; `Err` when the store failed (counted and logged).
async fn get(
    shared: &Shared,
    counters: &RouteCounters,
    key: &CacheKey,
) -> Result<Option<Entry>, ()> {
    let answer = match shared.store.get_now(key) {
        Some(answer) => answer,
        None => shared.store.get(key).await,
    };
    answer.map_err(|e| {
        counters.store_error_of(&e);
        log_store_error(&e);
    })
}

/// The entry in a store's answer; an error is counted, logged and becomes a miss.
fn answered(counters: &RouteCounters, answer: Result<Option<Entry>, StoreError>) -> Option<Entry> {
    match answer {
        Ok(found) => found,
        Err(e) => {
            counters.store_error_of(&e);
            log_store_error(&e);
            None
        }
    }
}
