//! The responses the layer sends: hits (and their 304s), and the `Cache-Status` and `Age`
//! headers every handled response carries.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::Body;

use crate::cache::Shared;
use crate::conditional::{not_modified, Validators, NOT_MODIFIED_HEADERS};
use crate::head::hit_headers;
use crate::metrics::RouteCounters;
use crate::policy::{directives, RoutePolicy};
use crate::{BypassReason, CachedResponse, ResponseBody};

pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

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

/// A 304 carrying the headers of `headers` that RFC 9110 says it must repeat.
pub(crate) fn not_modified_response<'a, B: Body>(
    headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) -> Response<ResponseBody<B>> {
    let mut res = Response::new(ResponseBody::empty());
    *res.status_mut() = StatusCode::NOT_MODIFIED;
    for (name, value) in headers.filter(|(n, _)| NOT_MODIFIED_HEADERS.contains(n)) {
        res.headers_mut().append(name.clone(), value.clone());
    }
    res
}

/// The answer to `Cache-Control: only-if-cached` when nothing fresh is stored for the request
/// (or it may not be served from the cache at all): `504`, the handler not called. Its
/// `Cache-Status` member has no `fwd`, since nothing went forward (RFC 9211 §2.2).
pub(crate) fn gateway_timeout<B: Body>(shared: &Shared) -> Response<ResponseBody<B>> {
    let mut res = Response::new(ResponseBody::empty());
    *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    with_status(shared, res, &["detail=only-if-cached"])
}

pub(crate) fn bypass<B>(shared: &Shared, res: Response<B>, reason: BypassReason) -> Response<B> {
    with_status(shared, res, &["fwd=bypass; detail=", reason.as_str()])
}

/// Adds this cache's member (`name; params…`) to `Cache-Status` (RFC 9211).
///
pub(crate) fn with_status<B>(
    shared: &Shared,
    mut res: Response<B>,
    params: &[&str],
) -> Response<B> {
    if let Some(v) = status_value(shared, params) {
        res.headers_mut().append(CACHE_STATUS, v);
    }
    res
}

/// This cache's `Cache-Status` member: its name, then `params`.
fn status_value(shared: &Shared, params: &[&str]) -> Option<HeaderValue> {
    let len = shared.status_prefix.len() + params.iter().map(|p| p.len()).sum::<usize>();
    let mut value = String::with_capacity(len);
    value.push_str(&shared.status_prefix);
    for p in params {
        value.push_str(p);
    }
    HeaderValue::try_from(value).ok()
}

/// The private mark a layer puts on every response it handled: the cache instance's id. An
/// enclosing layer of the same cache passes such a response on untouched (the per-route policy
/// wins); a response marked by another cache, or carrying our `Cache-Status` name without the
/// mark (proxied from another service using this crate), is treated like any other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Handled(u64);

/// Marks `res` as handled by this cache.
pub(crate) fn mark<B>(shared: &Shared, mut res: Response<B>) -> Response<B> {
    res.extensions_mut().insert(Handled(shared.id));
    res
}

/// Whether a layer of this cache already handled `res`.
pub(crate) fn handled<B>(shared: &Shared, res: &Response<B>) -> bool {
    res.extensions().get::<Handled>() == Some(&Handled(shared.id))
}

/// Sets `max-age` in `Cache-Control`, keeping the other directives.
pub(crate) fn set_max_age(headers: &mut HeaderMap, secs: u64) {
    let mut parts: Vec<String> = directives(headers.get_all(header::CACHE_CONTROL).iter())
        .filter(|(n, _)| !n.eq_ignore_ascii_case("max-age"))
        .map(|(n, v)| v.map_or_else(|| n.to_owned(), |v| format!("{n}={v}")))
        .collect();
    parts.push(format!("max-age={secs}"));
    if let Ok(v) = HeaderValue::from_str(&parts.join(", ")) {
        headers.insert(header::CACHE_CONTROL, v);
    }
}
