//! The service: looks a request up, answers hits (and 304s) without calling the handler, and
//! stores what the policy admits on the way back. Every failure inside the cache is a miss.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use crate::body::{collect, Collected, PartialReason};
use crate::cache::Shared;
use crate::coalesce::Turn;
use crate::conditional::{not_modified, strong_etag, NOT_MODIFIED_HEADERS};
use crate::key::{primary_key, KeyInput};
use crate::metrics::RouteCounters;
use crate::policy::{directives, strip_unstorable, RoutePolicy};
use crate::{
    BypassReason, CacheKey, CachedResponse, Entry, ResponseBody, ResponseFuture, StoreError,
};

/// The middleware made by a [`CacheLayer`](crate::CacheLayer). `Error = S::Error`: the cache
/// adds no failure of its own.
#[derive(Clone)]
pub struct CacheService<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
    pub(crate) policy: Arc<RoutePolicy>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for CacheService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheService")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Marks a response a cache layer already handled, so an enclosing app-wide layer of the same
/// cache passes it on untouched: the per-route policy wins.
#[derive(Debug, Clone, Copy)]
struct Handled;

const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

impl<S, ReqB, ResB> Service<Request<ReqB>> for CacheService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
    ResB::Error: Send,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // Take the service that was driven to readiness; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(handle(inner, self.shared.clone(), self.policy.clone(), req))
    }
}

async fn handle<S, ReqB, ResB>(
    mut inner: S,
    shared: Arc<Shared>,
    policy: Arc<RoutePolicy>,
    req: Request<ReqB>,
) -> Result<Response<ResponseBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
{
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let app_wide = policy.ttl.is_none();
    if app_wide && route.is_some_and(|r| is_delegated(&shared, r)) {
        return Ok(inner.call(req).await?.map(ResponseBody::inner));
    }
    let counters = shared.metrics.route(route.unwrap_or("*"));
    let delegate_label = route.filter(|_| app_wide).map(str::to_owned);

    let (req, identity) = match &policy.identity {
        Some(identify) => {
            let (parts, body) = req.into_parts();
            let id = identify(&parts);
            (Request::from_parts(parts, body), id)
        }
        None => (req, None),
    };
    let identity = match policy.admit_request(req.method(), req.headers(), identity) {
        Ok(identity) => identity,
        Err(reason) => {
            let res = match passed_on(&shared, delegate_label, inner.call(req).await?) {
                Ok(handled) => return Ok(handled),
                Err(res) => res,
            };
            counters.bypass(reason);
            return Ok(bypass(&shared, res.map(ResponseBody::inner), reason));
        }
    };

    let is_head = req.method() == Method::HEAD;
    let primary = primary_key(&KeyInput {
        prefix: &shared.prefix,
        version: shared.version.load(Ordering::Acquire),
        uri: req.uri(),
        headers: req.headers(),
        query: &policy.query,
        vary_headers: &policy.vary_headers,
        identity: identity.as_deref(),
    });

    let forced = policy.client_forces_miss(req.headers());
    let mut lead = None;
    if !forced {
        let (found, key) = lookup(&shared, &counters, &primary, req.headers()).await;
        if let Some(res) = fresh_hit(&shared, &policy, &counters, found, is_head, req.headers()) {
            return Ok(res);
        }
        if !is_head && !shared.coalesce_wait.is_zero() {
            let layer = Arc::as_ptr(&policy) as usize;
            match shared.flights.join(layer, &key) {
                Turn::Lead(l) => lead = Some(l),
                Turn::Wait(filled) => {
                    // Whatever happens to the leader, wait no longer than configured.
                    let _ = tokio::time::timeout(shared.coalesce_wait, filled).await;
                    let (found, _) = lookup(&shared, &counters, &primary, req.headers()).await;
                    let res = fresh_hit(&shared, &policy, &counters, found, is_head, req.headers());
                    if let Some(res) = res {
                        return Ok(res);
                    }
                }
                Turn::Alone => {}
            }
        }
    }

    let req_headers = req.headers().clone();
    let res = match passed_on(&shared, delegate_label, inner.call(req).await?) {
        Ok(handled) => return Ok(handled),
        Err(res) => res,
    };
    counters.miss();
    let fwd = if forced { "request" } else { "uri-miss" };
    if is_head {
        // A HEAD response has no body to keep; only a GET fills the entry HEAD reads.
        let res = res.map(ResponseBody::inner);
        return Ok(with_status(&shared, res, &format!("fwd={fwd}")));
    }
    let miss = Miss {
        shared: &shared,
        policy: &policy,
        counters: &counters,
        primary: &primary,
        per_user: identity.is_some(),
        req_headers: &req_headers,
        fwd,
    };
    let (res, stored) = miss.respond(res).await;
    if let (Some(lead), false) = (&lead, stored) {
        lead.uncacheable();
    }
    Ok(res)
}

/// The answer when `found` is fresh.
fn fresh_hit<B: Body>(
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

/// Everything needed to answer a GET the handler just served.
struct Miss<'a> {
    shared: &'a Shared,
    policy: &'a RoutePolicy,
    counters: &'a RouteCounters,
    primary: &'a CacheKey,
    per_user: bool,
    req_headers: &'a HeaderMap,
    fwd: &'static str,
}

impl Miss<'_> {
    /// Stores the response if the policy admits it; returns what to send and whether it was
    /// storable (a store failure still counts as storable).
    async fn respond<B: Body>(&self, res: Response<B>) -> (Response<ResponseBody<B>>, bool) {
        let (mut parts, body) = res.into_parts();
        let refused = self
            .policy
            .admit_response(&parts, self.per_user)
            .and_then(|plan| {
                // Known to be too large before reading a byte: pass it through untouched.
                if body.size_hint().lower() > self.policy.max_body_size as u64 {
                    Err(BypassReason::TooLarge)
                } else {
                    Ok(plan)
                }
            });
        let plan = match refused {
            Ok(plan) => plan,
            Err(reason) => {
                let res = Response::from_parts(parts, ResponseBody::inner(body));
                return (self.bypass(res, reason), false);
            }
        };
        let bytes = match collect(body, self.policy.max_body_size).await {
            Collected::Complete(bytes) => bytes,
            Collected::Partial(body, why) => {
                let res = Response::from_parts(parts, body);
                let reason = match why {
                    PartialReason::TooLarge => BypassReason::TooLarge,
                    PartialReason::Trailers => BypassReason::Stream,
                    PartialReason::Error => {
                        let fwd = format!("fwd={}", self.fwd);
                        return (with_status(self.shared, res, &fwd), false);
                    }
                };
                return (self.bypass(res, reason), false);
            }
        };

        if !parts.headers.contains_key(header::ETAG) {
            parts.headers.insert(header::ETAG, strong_etag(&bytes));
        }
        let mut stored_headers = parts.headers.clone();
        strip_unstorable(&mut stored_headers);
        let entry = CachedResponse {
            status: parts.status,
            headers: stored_headers,
            body: bytes.clone(),
            stored_at_millis: self.shared.clock.now_millis(),
            ttl: plan.ttl,
        };
        let stored = store(
            self.shared,
            self.counters,
            self.primary,
            &plan.vary,
            self.req_headers,
            entry,
        )
        .await;

        if self.policy.downstream_max_age {
            set_max_age(&mut parts.headers, plan.ttl.as_secs());
        }
        let detail = if stored {
            "; stored"
        } else {
            "; detail=store-error"
        };
        let res = if not_modified(self.req_headers, &parts.headers) {
            not_modified_response(&parts.headers)
        } else {
            Response::from_parts(parts, ResponseBody::full(bytes))
        };
        let status = format!("fwd={}{detail}", self.fwd);
        (with_status(self.shared, res, &status), true)
    }

    fn bypass<B>(&self, res: Response<B>, reason: BypassReason) -> Response<B> {
        self.counters.bypass(reason);
        bypass(self.shared, res, reason)
    }
}

/// `Ok` with the inner response untouched when a cache layer inside already handled it; the
/// app-wide layer then remembers the route and stops looking it up. `Err` gives it back.
fn passed_on<B: Body>(
    shared: &Shared,
    delegate_label: Option<String>,
    res: Response<B>,
) -> Result<Response<ResponseBody<B>>, Response<B>> {
    if res.extensions().get::<Handled>().is_none() {
        return Err(res);
    }
    if let Some(label) = delegate_label {
        let mut set = shared.delegated.write().unwrap_or_else(|e| e.into_inner());
        set.insert(Arc::from(label));
    }
    Ok(res.map(ResponseBody::inner))
}

fn is_delegated(shared: &Shared, route: &str) -> bool {
    let set = shared.delegated.read().unwrap_or_else(|e| e.into_inner());
    !set.is_empty() && set.contains(route)
}

/// The entry for a request, following a learned or stored `Vary`, and the key it was (or would
/// be) stored under.
async fn lookup(
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
    match shared.store.get(key).await {
        Ok(found) => found,
        Err(e) => {
            counters.store_error();
            log_store_error(&e);
            None
        }
    }
}

async fn store(
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

fn not_modified_response<B: Body>(headers: &HeaderMap) -> Response<ResponseBody<B>> {
    let mut res = Response::new(ResponseBody::empty());
    *res.status_mut() = StatusCode::NOT_MODIFIED;
    for name in NOT_MODIFIED_HEADERS {
        for value in headers.get_all(&name) {
            res.headers_mut().append(name.clone(), value.clone());
        }
    }
    res
}

fn bypass<B>(shared: &Shared, res: Response<B>, reason: BypassReason) -> Response<B> {
    with_status(shared, res, &format!("fwd=bypass; detail={reason}"))
}

/// Adds this cache's member to `Cache-Status` (RFC 9211) and marks the response handled.
fn with_status<B>(shared: &Shared, mut res: Response<B>, params: &str) -> Response<B> {
    if let Ok(v) = HeaderValue::from_str(&format!("{}; {params}", shared.name)) {
        res.headers_mut().append(CACHE_STATUS, v);
    }
    res.extensions_mut().insert(Handled);
    res
}

/// Sets `max-age` in `Cache-Control`, keeping the other directives.
fn set_max_age(headers: &mut HeaderMap, secs: u64) {
    let mut parts: Vec<String> = directives(headers.get_all(header::CACHE_CONTROL).iter())
        .filter(|(n, _)| !n.eq_ignore_ascii_case("max-age"))
        .map(|(n, v)| v.map_or_else(|| n.to_owned(), |v| format!("{n}={v}")))
        .collect();
    parts.push(format!("max-age={secs}"));
    if let Ok(v) = HeaderValue::from_str(&parts.join(", ")) {
        headers.insert(header::CACHE_CONTROL, v);
    }
}
