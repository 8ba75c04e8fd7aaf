//! The service: looks a request up, answers hits (and 304s) without calling the handler, and
//! stores what the policy admits on the way back. Every failure inside the cache is a miss.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http::{HeaderMap, Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::cache::Shared;
use crate::coalesce::{Lead, Turn};
use crate::key::{client_uri, primary_key, KeyInput};
use crate::lookup::{lookup, lookup_now};
use crate::memo;
use crate::metrics::RouteCounters;
use crate::miss::Miss;
use crate::policy::{only_if_cached, RoutePolicy};
use crate::respond::{bypass, fresh_hit, gateway_timeout, handled, with_status};
use crate::route::{route_label, RouteLabel};
use crate::{BypassReason, CacheKey, ResponseBody, ResponseFuture};

/// The middleware made by a [`CacheLayer`](crate::CacheLayer). `Error = S::Error`: the cache
/// adds no failure of its own.
#[derive(Clone)]
pub struct CacheService<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
    pub(crate) policy: Arc<RoutePolicy>,
    /// The counters of the route this service last served. axum makes one service per route, so
    /// this saves a locked map lookup per request; another route still gets its own counters.
    pub(crate) route: Arc<OnceLock<(Box<str>, Arc<RouteCounters>)>>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for CacheService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheService")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S> CacheService<S> {
    /// The wrapped service.
    ///
    /// ```
    /// use tower::Layer;
    /// use tower_response_cache::ResponseCache;
    ///
    /// let cache = ResponseCache::default();
    /// let mut svc = cache.layer().layer(String::from("inner"));
    /// assert_eq!(svc.get_ref(), "inner");
    /// svc.get_mut().push('!');
    /// assert_eq!(svc.into_inner(), "inner!");
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service, dropping the cache around it.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

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

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        // Without hooks (the common case) the request is not even moved.
        let mut hooked = None;
        if !self.policy.bypass_hooks.is_empty() {
            (req, hooked) = self.policy.hooked(req);
        }
        let now = if hooked.is_some() {
            Now::Skipped
        } else {
            self.hit_now(&req)
        };
        let looked = match now {
            Now::Hit(res) => return ResponseFuture::ready(res),
            Now::Miss(looked) => Some(looked),
            Now::Skipped => None,
        };
        // Take the service that was driven to readiness; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(handle(
            inner,
            self.shared.clone(),
            self.policy.clone(),
            self.route.clone(),
            looked,
            hooked,
            req,
        ))
    }
}

/// What [`CacheService::hit_now`] found out.
enum Now<B: Body> {
    Hit(Response<ResponseBody<B>>),
    /// Looked up and not fresh: the full path reuses this instead of looking again.
    Miss(Looked),
    Skipped,
}

/// A lookup already made for a shared (not per-user), admitted, unforced request.
struct Looked {
    counters: Arc<RouteCounters>,
    primary: CacheKey,
    /// The key looked up last (the variant when the resource varies).
    key: CacheKey,
}

impl<S> CacheService<S> {
    /// A fresh hit answered at once, when the store can answer without waiting (the memory
    /// store): no clone of the inner service, no boxed future. Anything else goes down the full
    /// path, which also covers every case skipped here.
    fn hit_now<ReqB, ResB: Body>(&self, req: &Request<ReqB>) -> Now<ResB> {
        let (shared, policy) = (&*self.shared, &*self.policy);
        if !shared.answers_now || policy.identity.is_some() {
            return Now::Skipped;
        }
        let route = route_label(req).map(RouteLabel::as_str);
        if policy.ttl.is_none() && route.is_some_and(|r| is_delegated(shared, r)) {
            return Now::Skipped;
        }
        if policy
            .admit_request(req.method(), req.headers(), None)
            .is_err()
            || policy.client_forces_miss(req.headers())
        {
            return Now::Skipped;
        }
        let counters = route_counters(&self.route, shared, route.unwrap_or("*"));
        let primary = shared_key(&self.shared, &self.policy, req);
        let Some((found, key)) = lookup_now(shared, &counters, &primary, req.headers()) else {
            return Now::Skipped;
        };
        let is_head = req.method() == Method::HEAD;
        match fresh_hit(shared, policy, &counters, found, is_head, req.headers()) {
            Some(res) => Now::Hit(res),
            None => Now::Miss(Looked {
                counters,
                primary,
                key,
            }),
        }
    }
}

/// The primary key of `req` under `policy`: shared, or per user when `identity` is given.
pub(crate) fn request_key<B>(
    shared: &Shared,
    policy: &RoutePolicy,
    req: &Request<B>,
    identity: Option<&str>,
) -> CacheKey {
    let version = shared.version.load(Ordering::Acquire);
    key_at(shared, policy, req, identity, version)
}

/// The primary key of a shared request, from this thread's memo of recent keys when it can.
fn shared_key<B>(shared: &Arc<Shared>, policy: &Arc<RoutePolicy>, req: &Request<B>) -> CacheKey {
    // One reading of the version names both the memo slot and the key derived for it.
    let version = shared.version.load(Ordering::Acquire);
    let uri = client_uri(req);
    memo::shared_key(shared, policy, version, uri, req.headers(), || {
        key_at(shared, policy, req, None, version)
    })
}

fn key_at<B>(
    shared: &Shared,
    policy: &RoutePolicy,
    req: &Request<B>,
    identity: Option<&str>,
    version: u64,
) -> CacheKey {
    primary_key(&KeyInput {
        prefix: &shared.prefix,
        version,
        uri: client_uri(req),
        headers: req.headers(),
        query: &policy.query,
        vary_headers: &policy.vary_headers,
        identity,
    })
}

/// The counters of `label`, remembered by the service for its next request.
fn route_counters(
    memo: &OnceLock<(Box<str>, Arc<RouteCounters>)>,
    shared: &Shared,
    label: &str,
) -> Arc<RouteCounters> {
    match memo.get() {
        Some((known, counters)) if **known == *label => counters.clone(),
        _ => {
            let counters = shared.metrics.route(label);
            let _ = memo.set((label.into(), counters.clone()));
            counters
        }
    }
}

async fn handle<S, ReqB, ResB>(
    mut inner: S,
    shared: Arc<Shared>,
    policy: Arc<RoutePolicy>,
    route_memo: Arc<OnceLock<(Box<str>, Arc<RouteCounters>)>>,
    looked: Option<Looked>,
    hooked: Option<&'static str>,
    req: Request<ReqB>,
) -> Result<Response<ResponseBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
{
    // A clone is an `Arc` increment; it outlives `req`, which the inner service takes.
    let matched = route_label(&req).cloned();
    let route = matched.as_ref().map(RouteLabel::as_str);
    let app_wide = policy.ttl.is_none();
    // The fast path in `call` looked this request up only after finding the route not
    // delegated, the request admitted and the client not forcing a miss: none is asked again.
    let checked = looked.is_some();
    // A route layer handles the methods it wraps, GET and HEAD; other methods on the same
    // route may be bare and still get their `Cache-Status` here.
    let cacheable_method = req.method() == Method::GET || req.method() == Method::HEAD;
    if !checked && app_wide && cacheable_method && route.is_some_and(|r| is_delegated(&shared, r)) {
        return Ok(inner.call(req).await?.map(ResponseBody::inner));
    }
    let counters = match &looked {
        Some(looked) => looked.counters.clone(),
        None => route_counters(&route_memo, &shared, route.unwrap_or("*")),
    };
    // Learn only from GET/HEAD: a route layer wrapping just another method says nothing about
    // whether GETs on the route are handled inside.
    let delegate_label = if app_wide && cacheable_method {
        matched.as_ref()
    } else {
        None
    };

    let (req, identity) = match &policy.identity {
        Some(identify) => {
            let (parts, body) = req.into_parts();
            let id = identify(&parts);
            (Request::from_parts(parts, body), id)
        }
        None => (req, None),
    };
    let admitted = if hooked.is_some() {
        Err(BypassReason::Custom)
    } else if checked {
        Ok(None)
    } else {
        policy.admit_request(req.method(), req.headers(), identity)
    };
    let only_if_cached = only_if_cached(req.headers());
    let identity = match admitted {
        Ok(identity) => identity,
        Err(reason) if only_if_cached => {
            // Nothing that bypasses the cache can be answered from it.
            counters.bypass(reason);
            return Ok(gateway_timeout(&shared));
        }
        Err(reason) => {
            let res = match passed_on(&shared, delegate_label, inner.call(req).await?) {
                Ok(handled) => return Ok(handled),
                Err(res) => res,
            };
            counters.bypass(reason);
            let detail = hooked.unwrap_or(reason.as_str());
            let res = res.map(ResponseBody::inner);
            return Ok(with_status(&shared, res, &["fwd=bypass; detail=", detail]));
        }
    };

    let is_head = req.method() == Method::HEAD;
    let (primary, looked_key) = match looked {
        Some(looked) => (looked.primary, Some(looked.key)),
        None => {
            let key = match identity.as_deref() {
                Some(id) => request_key(&shared, &policy, &req, Some(id)),
                None => shared_key(&shared, &policy, &req),
            };
            (key, None)
        }
    };

    let forced = !checked && policy.client_forces_miss(req.headers());
    let mut lead = None;
    let mut store_failed = false;
    if !forced {
        // One time budget for all of this request's reads from the store.
        let deadline = shared
            .lookup_timeout
            .and_then(|t| tokio::time::Instant::now().checked_add(t));
        let (found, key) = match looked_key {
            // The fast path in `call` looked already and found nothing fresh.
            Some(key) => (None, key),
            None => {
                let looked = lookup(&shared, &counters, &primary, req.headers(), deadline).await;
                store_failed = looked.failed;
                (looked.found, looked.key)
            }
        };
        if let Some(res) = fresh_hit(&shared, &policy, &counters, found, is_head, req.headers()) {
            return Ok(res);
        }
        if only_if_cached {
            counters.miss();
            return Ok(gateway_timeout(&shared));
        }
        // A store that just failed will not be filled by a leader either: nobody waits on it.
        if !is_head && !store_failed && !shared.coalesce_wait.is_zero() {
            let flight = Flight {
                shared: &shared,
                policy: &policy,
                counters: &counters,
                primary: &primary,
                headers: req.headers(),
                deadline,
            };
            match flight.join(&key).await {
                Ok(led) => lead = led,
                Err(hit) => return Ok(hit),
            }
        }
    }

    if forced && only_if_cached {
        // The client wants no stored copy, and no response from elsewhere either.
        counters.miss();
        return Ok(gateway_timeout(&shared));
    }
    let req_headers = req.headers().clone();
    let res = match passed_on(&shared, delegate_label, inner.call(req).await?) {
        Ok(handled) => {
            // A layer inside answered (and stored, if it could): waiters look it up.
            if let Some(lead) = lead {
                lead.finish();
            }
            return Ok(handled);
        }
        Err(res) => res,
    };
    let fwd = if forced { "request" } else { "uri-miss" };
    if is_head {
        // A HEAD response has no body to keep; only a GET fills the entry HEAD reads. It counts
        // as the GET would: a bypass when the policy refuses to store it, else a miss.
        let (parts, body) = res.into_parts();
        let refused = policy.admit_response(&parts, identity.is_some()).err();
        let res = Response::from_parts(parts, ResponseBody::inner(body));
        return Ok(match refused {
            Some(reason) => {
                counters.bypass(reason);
                bypass(&shared, res, reason)
            }
            None => {
                counters.miss();
                with_status(&shared, res, &["fwd=", fwd])
            }
        });
    }
    // `Miss::respond` counts the outcome: a miss, or a bypass when the response is refused.
    let miss = Miss {
        shared: shared.clone(),
        policy: &policy,
        counters,
        primary,
        per_user: identity.is_some(),
        req_headers,
        fwd,
        lead,
        store_failed,
    };
    // Boxed: the miss path's state is large, and would otherwise be carried (and copied into
    // the boxed `ResponseFuture`) by every request, hits included.
    Ok(Box::pin(miss.respond(res)).await)
}

/// A missing GET about to join the flight of its key.
struct Flight<'a> {
    shared: &'a Shared,
    policy: &'a Arc<RoutePolicy>,
    counters: &'a RouteCounters,
    primary: &'a CacheKey,
    headers: &'a HeaderMap,
    deadline: Option<tokio::time::Instant>,
}

impl Flight<'_> {
    /// `Ok(Some(lead))`: call the handler and fill the entry; `Ok(None)`: call it alone;
    /// `Err(hit)`: another request filled it meanwhile.
    async fn join<B: Body>(
        &self,
        key: &CacheKey,
    ) -> Result<Option<Lead>, Response<ResponseBody<B>>> {
        let shared = self.shared;
        let layer = Arc::as_ptr(self.policy) as usize;
        // Whatever happens to the leaders, wait no longer than configured, in all.
        let until = tokio::time::Instant::now().checked_add(shared.coalesce_wait);
        loop {
            let wait = match shared.flights.join(layer, key) {
                Turn::Lead(lead) => return Ok(Some(lead)),
                Turn::Alone => return Ok(None),
                Turn::Wait(wait) => wait,
            };
            let landed = match until {
                Some(until) => tokio::time::timeout_at(until, wait.landed()).await,
                None => Ok(wait.landed().await),
            };
            match landed {
                // The leader went away unfinished (its client hung up): join again, and the
                // first waiter back leads while the others keep waiting.
                Ok(false) => {}
                Ok(true) => {
                    let looked = lookup(
                        shared,
                        self.counters,
                        self.primary,
                        self.headers,
                        self.deadline,
                    );
                    let found = looked.await.found;
                    let hit = fresh_hit(
                        shared,
                        self.policy,
                        self.counters,
                        found,
                        false,
                        self.headers,
                    );
                    return hit.map_or(Ok(None), Err);
                }
                Err(_) => return Ok(None),
            }
        }
    }
}

/// `Ok` with the inner response untouched when a cache layer inside already handled it; the
/// app-wide layer then remembers the route and stops looking it up. `Err` gives it back.
fn passed_on<B: Body>(
    shared: &Shared,
    delegate_label: Option<&RouteLabel>,
    res: Response<B>,
) -> Result<Response<ResponseBody<B>>, Response<B>> {
    if !handled(shared, &res) {
        return Err(res);
    }
    if let Some(label) = delegate_label {
        let mut set = shared.delegated.write().unwrap_or_else(|e| e.into_inner());
        set.insert(Arc::from(label.as_str()));
    }
    Ok(res.map(ResponseBody::inner))
}

fn is_delegated(shared: &Shared, route: &str) -> bool {
    let set = shared.delegated.read().unwrap_or_else(|e| e.into_inner());
    !set.is_empty() && set.contains(route)
}
