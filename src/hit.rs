//! A hit: the response (or its 304) made from a fresh entry, with `Age` and this cache's
//! `Cache-Status` member.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::Response;
use http_body::Body;

use crate::conditional::{not_modified, Validators};
use crate::head::hit_headers;
use crate::metrics::RouteCounters;
use crate::policy::RoutePolicy;
use crate::shared::Shared;
use crate::status::{not_modified_response, set_max_age, status_value, CACHE_STATUS};
use crate::{CachedResponse, ResponseBody};

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

fn hit<B: Body>(
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
    let conditional = req_headers.contains_key(header::IF_NONE_MATCH)
        || req_headers.contains_key(header::IF_MODIFIED_SINCE);
    let (age, status) = hit_values(shared, age_ms / 1000, remaining);
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

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// `n` in decimal, without the formatting machinery: this runs on every hit.
fn format_u64(buf: &mut [u8; 20], mut n: u64) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}
