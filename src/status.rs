//! What every response a layer handled carries, hit, miss or bypass: this cache's
//! `Cache-Status` member (RFC 9211) and the private mark that tells an enclosing layer of the
//! same cache that it was handled; and the small responses both the hit and the miss path make.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body;

use crate::conditional::NOT_MODIFIED_HEADERS;
use crate::policy::directives;
use crate::shared::Shared;
use crate::{BypassReason, ResponseBody};

pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

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
pub(crate) fn status_value(shared: &Shared, params: &[&str]) -> Option<HeaderValue> {
    let len = shared.status_prefix.len() + params.iter().map(|p| p.len()).sum::<usize>();
    let mut value = String::with_capacity(len);
    value.push_str(&shared.status_prefix);
    for p in params {
        value.push_str(p);
    }
    HeaderValue::try_from(value).ok()
}

/// The private mark a layer puts on the responses it handled: the cache instance's id. An
/// enclosing layer of the same cache passes such a response on untouched (the per-route policy
/// wins); a response marked by another cache, or carrying our `Cache-Status` name without the
/// mark (proxied from another service using this crate), is treated like any other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Handled(u64);

/// The request extension by which a layer that calls its inner service asks the layers of the
/// same cache inside to mark their responses ([`Handled`]). Marking costs an allocation
/// (a response's first extension), about 4 % of a hit's cost: a layer with no layer of its
/// cache around it (the common per-route case) skips it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outer(u64);

/// Whether a layer of this cache encloses the one handling `req`.
pub(crate) fn wants_mark<B>(shared: &Shared, req: &Request<B>) -> bool {
    req.extensions().get::<Outer>() == Some(&Outer(shared.id))
}

/// Tells the layers of this cache inside that `req` passes through one of ours.
pub(crate) fn ask_mark<B>(shared: &Shared, req: &mut Request<B>) {
    req.extensions_mut().insert(Outer(shared.id));
}

/// Marks `res` as handled by this cache when an enclosing layer of it asked (`wanted`).
pub(crate) fn mark<B>(shared: &Shared, mut res: Response<B>, wanted: bool) -> Response<B> {
    if wanted {
        res.extensions_mut().insert(Handled(shared.id));
    }
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
