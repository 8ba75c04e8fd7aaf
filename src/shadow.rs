//! Shadow mode ([`CacheLayer::shadow`](crate::CacheLayer::shadow), set in `shadow_layer`): a layer that looks up, counts and stores exactly as it would live, but answers
//! every request from the handler. It lets a team read a route's hit ratio (and catch a wrong
//! key) on real traffic before the cache serves anything.
//!
//! Every response of a shadowed layer carries its `Cache-Status` member (RFC 9211) with a
//! `shadow` detail, so a would-be answer is never mistaken for a real one:
//!
//! | what the layer would have done | member                                       |
//! |--------------------------------|----------------------------------------------|
//! | answered a fresh hit           | `<name>; fwd=bypass; detail=shadow-hit`      |
//! | missed and stored              | `<name>; fwd=uri-miss; stored; detail=shadow` |
//! | missed with a detail `d`       | `<name>; fwd=uri-miss; detail=shadow-d`      |
//!
//! A would-be hit is `fwd=bypass`: the layer was configured not to answer from the cache, and
//! went forward. The other members are the live ones with `shadow` added to (or prefixed to)
//! their `detail`. Requests the layer bypasses anyway (a `POST`, credentials) are reported as
//! live: they never touch the store.

use http::header::HeaderValue;
use http::Response;

use crate::shared::Shared;
use crate::status::CACHE_STATUS;

/// The `Cache-Status` value of a would-be hit, before [`mark`] adds `shadow-`.
pub(crate) const WOULD_HIT: &str = "fwd=bypass; detail=hit";

/// Marks this cache's `Cache-Status` member of `res` as shadowed: `detail=x` becomes
/// `detail=shadow-x`, a member without a detail gets `detail=shadow`.
pub(crate) fn mark<B>(shared: &Shared, mut res: Response<B>) -> Response<B> {
    let prefix = shared.status_prefix.as_bytes();
    let values: Vec<HeaderValue> = res
        .headers()
        .get_all(CACHE_STATUS)
        .iter()
        .cloned()
        .collect();
    let Some(ours) = values
        .iter()
        .rposition(|v| v.as_bytes().starts_with(prefix))
    else {
        return res;
    };
    let Ok(member) = values[ours].to_str() else {
        return res;
    };
    let marked = match member.find("; detail=") {
        Some(at) => {
            let (head, tail) = member.split_at(at + "; detail=".len());
            format!("{head}shadow-{tail}")
        }
        None => format!("{member}; detail=shadow"),
    };
    let Ok(marked) = HeaderValue::try_from(marked) else {
        return res;
    };
    let headers = res.headers_mut();
    headers.remove(CACHE_STATUS);
    for (i, v) in values.into_iter().enumerate() {
        headers.append(CACHE_STATUS, if i == ours { marked.clone() } else { v });
    }
    res
}
