//! A `tracing` span per cached request, at debug level on the target `tower_response_cache`:
//! what the layer decided, why, under which key and how long the store took.
//!
//! | field      | value                                                                    |
//! |------------|--------------------------------------------------------------------------|
//! | `route`    | the route template (`MatchedPath`), or `*`; never the raw URL            |
//! | `decision` | `hit`, `miss`, `bypass`, `shadow-hit`, `only-if-cached`, `delegated`     |
//! | `reason`   | why, when there is one: the bypass reason, or a miss's detail            |
//! | `key`      | the first 8 bytes of the primary key's hash, in hex; never the key itself |
//! | `store_us` | microseconds the lookup in the store took                                |
//!
//! When debug is off for the target, the span is disabled: the checks below are a load of the
//! callsite's cached interest, nothing is formatted, allocated or looked up.

use std::fmt::Write as _;

use http::{Request, Response};
use tracing::field::Empty;
use tracing::{Level, Span};

use crate::route::{route_label, RouteLabel};
use crate::shared::Shared;
use crate::status::CACHE_STATUS;
use crate::CacheKey;

/// The target of the spans and events the cache emits at debug level.
pub(crate) const TARGET: &str = "tower_response_cache";

/// Whether cache spans are wanted: debug is enabled for [`TARGET`].
#[inline]
pub(crate) fn on() -> bool {
    tracing::enabled!(target: TARGET, Level::DEBUG)
}

/// The span of `req`, disabled (and costing nothing) when debug is off.
#[inline]
pub(crate) fn span<B>(req: &Request<B>) -> Span {
    tracing::debug_span!(
        target: TARGET,
        "cache",
        route = route_label(req).map_or("*", RouteLabel::as_str),
        decision = Empty,
        reason = Empty,
        key = Empty,
        store_us = Empty,
    )
}

/// Records the short hash of `key` on the current span.
#[inline]
pub(crate) fn key(key: &CacheKey) {
    if on() {
        Span::current().record("key", short_hex(key).as_str());
    }
}

/// The first 8 bytes of `key`'s primary hash, in hex: enough to tell keys apart in a trace,
/// nothing to recover the URL, the identity or a credential from.
pub(crate) fn short_hex(key: &CacheKey) -> String {
    let mut out = String::with_capacity(16);
    for b in &key.primary()[..8] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// When a lookup began, if it is traced.
#[inline]
pub(crate) fn lookup_start() -> Option<std::time::Instant> {
    on().then(std::time::Instant::now)
}

/// Records the lookup begun at `start` on the current span.
#[inline]
pub(crate) fn looked_up(start: Option<std::time::Instant>) {
    if let Some(start) = start {
        let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        Span::current().record("store_us", us);
    }
}

/// Records a request passed to the inner service: a bypass for `reason`, or (`None`) a route
/// an inner layer of this cache handles.
pub(crate) fn bypassed(span: &Span, reason: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    match reason {
        Some(reason) => span.record("decision", "bypass").record("reason", reason),
        None => span.record("decision", "delegated"),
    };
}

/// Records the decision this cache's `Cache-Status` member of `res` reports.
pub(crate) fn answered<B>(span: &Span, shared: &Shared, res: &Response<B>) {
    if span.is_disabled() {
        return;
    }
    let prefix = shared.status_prefix.as_str();
    let ours = res
        .headers()
        .get_all(CACHE_STATUS)
        .iter()
        .rev()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(prefix));
    let Some(member) = ours else {
        // Handled by an inner layer of this cache, which has its own span.
        span.record("decision", "delegated");
        return;
    };
    let detail = member
        .split("; ")
        .find_map(|p| p.strip_prefix("detail="))
        .map(|d| d.trim_matches('"'));
    let decision = if member == "hit" || member.starts_with("hit;") {
        "hit"
    } else if detail == Some("shadow-hit") {
        "shadow-hit"
    } else if member.starts_with("fwd=bypass") {
        "bypass"
    } else if member.starts_with("fwd=") {
        "miss"
    } else {
        "only-if-cached"
    };
    span.record("decision", decision);
    if let Some(detail) = detail.filter(|_| decision != "shadow-hit") {
        span.record("reason", detail);
    }
}
