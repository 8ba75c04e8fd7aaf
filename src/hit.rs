//! The hit path, top to bottom: the entry for a request read through the store (following
//! `Vary`: a varying resource keeps a record of the headers it varies on under its primary key,
//! and one entry per variant, written by [`write`](crate::write)), then the response made from a
//! fresh one, or its 304, with `Age` and this cache's `Cache-Status` member.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Response;
use http_body::Body;

use crate::conditional::{not_modified, Validators};
use crate::head::hit_headers;
use crate::headers::{format_u64, itoa_buf};
use crate::log::log_store_error;
use crate::metrics::RouteCounters;
use crate::policy::RoutePolicy;
use crate::shared::Shared;
use crate::status::{not_modified_response, set_max_age, status_value, CACHE_STATUS};
use crate::store::Validity;
use crate::{CacheKey, CachedResponse, Entry, ResponseBody, StoreError, StoreErrorKind};

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
    let (found, key) = match shared.store.get_now(&key)? {
        Ok(Some(Entry::Vary(names))) => {
            let variant = learn_vary(shared, counters, primary, headers, names);
            (answered(counters, shared.store.get_now(&variant)?), variant)
        }
        answer => (answered(counters, answer), key),
    };
    let found = match found.and_then(response) {
        // The store answers at once: after a failed check the next lookup asks again.
        Some(r) => match shared.gens.check_now(&r.stamp)? {
            // A soft-invalidated entry is for `lookup` to hand on (as `Lookup::soft`).
            Ok(Validity::Soft) => return None,
            holds => still_valid(counters, r, holds)
                .ok()
                .and_then(Checked::fresh),
        },
        None => None,
    };
    Some((found, key))
}

/// What a lookup found.
pub(crate) struct Lookup {
    pub(crate) found: Option<Arc<CachedResponse>>,
    /// The key it was (or would be) stored under.
    pub(crate) key: CacheKey,
    /// The store failed or ran out of time: no entry will be found or written this time.
    pub(crate) failed: bool,
    /// The entry found soft-invalidated (not in `found`): the copy to serve stale while one
    /// refresh runs (see `Plan::respond`).
    pub(crate) soft: Option<Arc<CachedResponse>>,
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
                soft: None,
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
    let failed = found.is_err();
    let Some(r) = found.ok().flatten().and_then(response) else {
        return Lookup {
            failed,
            found: None,
            key,
            soft: None,
        };
    };
    let holds = shared.gens.check(&r.stamp).await;
    match still_valid(counters, r, holds) {
        Ok(Checked::Fresh(r)) => Lookup {
            failed,
            found: Some(r),
            key,
            soft: None,
        },
        Ok(Checked::Soft(r)) => Lookup {
            failed,
            found: None,
            key,
            soft: Some(r),
        },
        Ok(Checked::Gone) => Lookup {
            failed,
            found: None,
            key,
            soft: None,
        },
        Err(()) => Lookup {
            failed: true,
            found: None,
            key,
            soft: None,
        },
    }
}

/// A stored response checked against the invalidation counters.
pub(crate) enum Checked {
    /// Nothing it carries was invalidated since it was stored.
    Fresh(Arc<CachedResponse>),
    /// Only soft-invalidated since: stale, kept in the store.
    Soft(Arc<CachedResponse>),
    /// Invalidated.
    Gone,
}

impl Checked {
    fn fresh(self) -> Option<Arc<CachedResponse>> {
        match self {
            Self::Fresh(r) => Some(r),
            Self::Soft(_) | Self::Gone => None,
        }
    }
}

/// `r` checked: fresh if nothing it is named by was invalidated since it was stored (see
/// `generations`), soft if only soft invalidations happened since, gone if a hard one did;
/// `Err` when the check itself failed (counted and logged). Anything but fresh is counted as
/// invalidated (soft or not); a soft one is then answered stale by the caller.
fn still_valid(
    counters: &RouteCounters,
    r: Arc<CachedResponse>,
    holds: Result<Validity, StoreError>,
) -> Result<Checked, ()> {
    match holds {
        Ok(Validity::Valid) => Ok(Checked::Fresh(r)),
        Ok(Validity::Soft) => {
            counters.soft_invalidated();
            Ok(Checked::Soft(r))
        }
        Ok(Validity::Invalid) => {
            counters.invalidated();
            Ok(Checked::Gone)
        }
        Err(e) => {
            counters.store_error_of(&e);
            log_store_error(&e);
            Err(())
        }
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
    shared.varied.store(true, Ordering::Release);
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

/// The answer when `found` is fresh.
pub(crate) fn fresh_hit<B: Body>(
    shared: &Shared,
    policy: &RoutePolicy,
    counters: &RouteCounters,
    found: Option<Arc<CachedResponse>>,
    is_head: bool,
    req_headers: &HeaderMap,
) -> Option<Response<ResponseBody<B>>> {
    let found = found?;
    let now = shared.clock.now_millis();
    if !found.is_fresh(now) {
        return None;
    }
    counters.hit();
    Some(hit(shared, policy, &found, now, is_head, req_headers))
}

pub(crate) fn hit<B: Body>(
    shared: &Shared,
    policy: &RoutePolicy,
    entry: &Arc<CachedResponse>,
    now: u64,
    is_head: bool,
    req_headers: &HeaderMap,
) -> Response<ResponseBody<B>> {
    let age_ms = entry.age_millis(now);
    let ttl_ms = u64::try_from(entry.ttl.as_millis()).unwrap_or(u64::MAX);
    let remaining = ttl_ms.saturating_sub(age_ms) / 1000;
    let (age, status) = hit_values(shared, age_ms / 1000, remaining);
    answer(
        policy,
        entry,
        is_head,
        req_headers,
        (age, status),
        remaining,
    )
}

/// The response made from `entry` with these `Age` and `Cache-Status` values, or its 304;
/// `remaining` seconds of freshness for a downstream `max-age`.
pub(crate) fn answer<B: Body>(
    policy: &RoutePolicy,
    entry: &Arc<CachedResponse>,
    is_head: bool,
    req_headers: &HeaderMap,
    (age, status): (HeaderValue, Option<HeaderValue>),
    remaining: u64,
) -> Response<ResponseBody<B>> {
    let conditional = req_headers.contains_key(header::IF_NONE_MATCH)
        || req_headers.contains_key(header::IF_MODIFIED_SINCE);
    let mut res = if conditional
        && not_modified(
            req_headers,
            &Validators::of(|n| entry.headers.get(n), entry.stored_at_millis),
        ) {
        let mut res = not_modified_response(entry.headers.iter());
        let headers = res.headers_mut();
        headers.insert(header::AGE, age);
        if let Some(status) = status {
            headers.append(CACHE_STATUS, status);
        }
        res
    } else {
        let body = if is_head {
            ResponseBody::empty()
        } else {
            ResponseBody::full(entry.body.clone())
        };
        let mut res = Response::new(body);
        *res.status_mut() = entry.status;
        *res.headers_mut() = hit_headers(entry, age, status);
        res
    };
    if policy.downstream_max_age {
        set_max_age(res.headers_mut(), remaining);
    }
    res
}

/// The `Age` and `Cache-Status` values of the hit answered last on this thread.
struct HitValues {
    age_secs: u64,
    remaining: u64,
    age: HeaderValue,
    status: Option<HeaderValue>,
}

thread_local! {
    // Under load one entry answers thousands of hits a second with the same two values: reusing
    // them (a reference-count increment each) spares formatting and allocating both per hit.
    static LAST_HIT: std::cell::RefCell<Option<HitValues>> = const { std::cell::RefCell::new(None) };
}

fn hit_values(
    shared: &Shared,
    age_secs: u64,
    remaining: u64,
) -> (HeaderValue, Option<HeaderValue>) {
    let ours = shared.status_prefix.as_bytes();
    let reused = LAST_HIT.with_borrow(|last| {
        let last = last.as_ref()?;
        let same_cache = last.status.as_ref()?.as_bytes().starts_with(ours);
        (same_cache && last.age_secs == age_secs && last.remaining == remaining)
            .then(|| (last.age.clone(), last.status.clone()))
    });
    if let Some(values) = reused {
        return values;
    }
    let age = HeaderValue::from(age_secs);
    let mut buf = itoa_buf();
    let status = status_value(shared, &["hit; ttl=", format_u64(&mut buf, remaining)]);
    LAST_HIT.set(Some(HitValues {
        age_secs,
        remaining,
        age: age.clone(),
        status: status.clone(),
    }));
    (age, status)
}
