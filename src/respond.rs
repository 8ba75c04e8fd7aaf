//! The responses the layer sends: hits (and their 304s), and the `Cache-Status` and `Age`
//! headers every handled response carries.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::Body;

use crate::cache::Shared;
use crate::conditional::{not_modified, NOT_MODIFIED_HEADERS};
use crate::metrics::RouteCounters;
use crate::policy::{directives, RoutePolicy};
use crate::{BypassReason, CachedResponse, ResponseBody};

/// Marks a response a cache layer already handled, so an enclosing app-wide layer of the same
/// cache passes it on untouched: the per-route policy wins.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handled;

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
    entry: &CachedResponse,
    now: u64,
    is_head: bool,
    req_headers: &HeaderMap,
) -> Response<ResponseBody<B>> {
    let age_ms = entry.age_millis(now);
    let ttl_ms = u64::try_from(entry.ttl.as_millis()).unwrap_or(u64::MAX);
    let remaining = ttl_ms.saturating_sub(age_ms) / 1000;
    let mut res = if not_modified(req_headers, &entry.headers) {
        not_modified_response(&entry.headers)
    } else {
        let body = if is_head {
            ResponseBody::empty()
        } else {
            ResponseBody::full(entry.body.clone())
        };
        let mut res = Response::new(body);
        *res.status_mut() = entry.status;
        *res.headers_mut() = entry.headers.clone();
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body.len()));
        res
    };
    res.headers_mut()
        .insert(header::AGE, HeaderValue::from(age_ms / 1000));
    if policy.downstream_max_age {
        set_max_age(res.headers_mut(), remaining);
    }
    with_status(shared, res, &format!("hit; ttl={remaining}"))
}

pub(crate) fn not_modified_response<B: Body>(headers: &HeaderMap) -> Response<ResponseBody<B>> {
    let mut res = Response::new(ResponseBody::empty());
    *res.status_mut() = StatusCode::NOT_MODIFIED;
    for name in NOT_MODIFIED_HEADERS {
        for value in headers.get_all(&name) {
            res.headers_mut().append(name.clone(), value.clone());
        }
    }
    res
}

pub(crate) fn bypass<B>(shared: &Shared, res: Response<B>, reason: BypassReason) -> Response<B> {
    with_status(shared, res, &format!("fwd=bypass; detail={reason}"))
}

/// Adds this cache's member to `Cache-Status` (RFC 9211) and marks the response handled.
pub(crate) fn with_status<B>(shared: &Shared, mut res: Response<B>, params: &str) -> Response<B> {
    if let Ok(v) = HeaderValue::from_str(&format!("{}; {params}", shared.name)) {
        res.headers_mut().append(CACHE_STATUS, v);
    }
    res.extensions_mut().insert(Handled);
    res
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
