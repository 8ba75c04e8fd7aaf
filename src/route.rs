//! What the cache reads from axum, in one place: the route template (per-route metrics) and the
//! URI the client sent (keys). Without the `axum` feature a request has no route template, and
//! its own URI is the client's: plain tower has no nested routers.

use http::{Request, Uri};

/// A route's template (`/users/{id}`), cheap to clone: axum's `MatchedPath`.
#[cfg(feature = "axum")]
pub(crate) type RouteLabel = axum::extract::MatchedPath;

/// Without axum no request has a route template, so this type has no values.
#[cfg(not(feature = "axum"))]
#[derive(Clone, Debug)]
pub(crate) enum RouteLabel {}

#[cfg(not(feature = "axum"))]
impl RouteLabel {
    pub(crate) fn as_str(&self) -> &str {
        match *self {}
    }
}

/// The template of the route `req` matched, which axum's router records in the request.
pub(crate) fn route_label<B>(req: &Request<B>) -> Option<&RouteLabel> {
    #[cfg(feature = "axum")]
    {
        req.extensions().get::<RouteLabel>()
    }
    #[cfg(not(feature = "axum"))]
    {
        let _ = req;
        None
    }
}

/// The URI as the client sent it.
///
/// A router that nests another (axum's `nest`, `nest_service`) strips its mount prefix from the
/// URI before the inner router's layers see it, so `/v1/users` and `/v2/users` would both read
/// `/users`. axum keeps the URI as it arrived in the `OriginalUri` extension; plain tower has
/// no nesting, and the request URI is the client's. `OriginalUri` is a clone of that same
/// request's URI, so its scheme and authority (present in HTTP/2, absent in HTTP/1's origin
/// form, where the `Host` header names the host) are the request's own.
pub(crate) fn client_uri<B>(req: &Request<B>) -> &Uri {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::OriginalUri(uri)) = req.extensions().get() {
        return uri;
    }
    req.uri()
}
