//! The service: looks a request up, answers hits (and 304s) without calling the handler, and
//! stores what the policy admits on the way back. Every failure inside the cache is a miss.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use http::{HeaderMap, Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::cache::Shared;
use crate::coalesce::{Lead, Turn};
use crate::key::{primary_key, KeyInput, RequestParts};
use crate::lookup::{lookup, lookup_now};
use crate::memo;
use crate::metrics::RouteCounters;
use crate::miss::Miss;
use crate::policy::{only_if_cached, Mode, RoutePolicy};
use crate::respond::{bypass, fresh_hit, gateway_timeout, handled, mark, with_status};
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
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        match self.decide(req) {
            Decision::Ready(res) => ResponseFuture::ready(res),
            // The service driven to readiness takes the request: no clone, no box.
            Decision::Bypass(req, finish) => ResponseFuture::bypass(self.inner.call(req), finish),
            Decision::Fill(req, plan) => {
                // Take the service that was driven to readiness; leave a fresh clone in its place.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::fill(plan.run(inner, req))
            }
        }
    }
}

/// What `call` decided for a request, once: nothing below asks again.
enum Decision<ReqB, ResB: Body> {
    /// Answered without the handler: a fresh hit (or its 304), or a `504` for `only-if-cached`.
    Ready(Response<ResponseBody<ResB>>),
    /// Straight to the inner service; `Some` adds the bypass's `Cache-Status` and counts it,
    /// `None` passes on a route an inner layer of this cache handles.
    Bypass(Request<ReqB>, Option<Bypassed>),
    /// A lookup to wait for, then the handler and the store.
    Fill(Request<ReqB>, Plan),
}

/// How a bypassed response is finished once the inner service answers.
pub(crate) struct Bypassed {
    shared: Arc<Shared>,
    counters: Arc<RouteCounters>,
    reason: BypassReason,
    /// The hook's reason, or `reason`'s name.
    detail: &'static str,
    /// The route to remember as handled inside, when an app-wide layer sees its GET answered
    /// by an inner layer of this cache.
    learn: Option<MatchedPath>,
}

impl Bypassed {
    pub(crate) fn finish<B: Body>(self, res: Response<B>) -> Response<ResponseBody<B>> {
        match passed_on(&self.shared, self.learn.as_ref(), res) {
            Ok(handled) => handled,
            Err(res) => {
                self.counters.bypass(self.reason);
                let res = res.map(ResponseBody::inner);
                let res = with_status(&self.shared, res, &["fwd=bypass; detail=", self.detail]);
                mark(&self.shared, res)
            }
        }
    }
}

/// A request that may be served from or stored in the cache, as `call` found it.
struct Plan {
    shared: Arc<Shared>,
    policy: Arc<RoutePolicy>,
    counters: Arc<RouteCounters>,
    primary: CacheKey,
    /// `Some(key)`: already looked up in `call` (a store that answers at once) and nothing fresh
    /// was found; the key is the one a fill stores under (the variant when the URL varies).
    looked: Option<CacheKey>,
    /// The per-user identity the key was made with.
    identity: Option<String>,
    /// The client asked to skip the stored copy, and the layer honours that.
    forced: bool,
    is_head: bool,
    only_if_cached: bool,
    learn: Option<MatchedPath>,
}

/// The route label axum matched, if any: the only place the pipeline reads `MatchedPath`.
fn matched_path<B>(req: &Request<B>) -> Option<&MatchedPath> {
    req.extensions().get::<MatchedPath>()
}

impl<S> CacheService<S> {
    /// Decides what happens to `req`: every check is made here, once.
    fn decide<ReqB, ResB: Body>(&self, mut req: Request<ReqB>) -> Decision<ReqB, ResB> {
        let (shared, policy) = (&self.shared, &self.policy);
        // Without hooks (the common case) the request is not even moved.
        let mut hooked = None;
        if !policy.bypass_hooks.is_empty() {
            (req, hooked) = policy.hooked(req);
        }
        let app_wide = matches!(policy.mode, Mode::AppWide { .. });
        // A route layer handles the methods it wraps, GET and HEAD; other methods on the same
        // route may be bare and still get their `Cache-Status` here.
        let cacheable_method = req.method() == Method::GET || req.method() == Method::HEAD;
        let route = matched_path(&req).map(MatchedPath::as_str);
        if app_wide && cacheable_method && route.is_some_and(|r| is_delegated(shared, r)) {
            return Decision::Bypass(req, None);
        }
        let counters = route_counters(&self.route, shared, route.unwrap_or("*"));
        // Learn only from GET/HEAD: a route layer wrapping just another method says nothing
        // about whether GETs on the route are handled inside.
        let learn = |req: &Request<ReqB>| {
            (app_wide && cacheable_method)
                .then(|| matched_path(req).cloned())
                .flatten()
        };

        let (req, identity) = match &policy.identity {
            Some(identify) if hooked.is_none() => {
                let (parts, body) = req.into_parts();
                let id = identify(&parts);
                (Request::from_parts(parts, body), id)
            }
            _ => (req, None),
        };
        let admitted = match hooked {
            Some(_) => Err(BypassReason::Custom),
            None => policy.admit_request(req.method(), req.headers(), identity),
        };
        let only_if_cached = only_if_cached(req.headers());
        let identity = match admitted {
            Ok(identity) => identity,
            Err(reason) if only_if_cached => {
                // Nothing that bypasses the cache can be answered from it.
                counters.bypass(reason);
                return Decision::Ready(mark(shared, gateway_timeout(shared)));
            }
            Err(reason) => {
                let finish = Bypassed {
                    shared: shared.clone(),
                    counters,
                    reason,
                    detail: hooked.unwrap_or(reason.as_str()),
                    learn: learn(&req),
                };
                return Decision::Bypass(req, Some(finish));
            }
        };

        let forced = policy.client_forces_miss(req.headers());
        if forced && only_if_cached {
            // The client wants no stored copy, and no response from elsewhere either.
            counters.miss();
            return Decision::Ready(mark(shared, gateway_timeout(shared)));
        }
        let primary = match identity.as_deref() {
            Some(id) => request_key(shared, policy, &req, Some(id)),
            None => shared_key(shared, policy, &req),
        };
        let is_head = req.method() == Method::HEAD;
        let mut looked = None;
        // A store that answers without waiting (the memory store) is asked here: a fresh hit
        // is answered at once, with no clone of the inner service and no boxed future.
        if !forced && shared.answers_now {
            if let Some((found, key)) = lookup_now(shared, &counters, &primary, req.headers()) {
                if let Some(res) =
                    fresh_hit(shared, policy, &counters, found, is_head, req.headers())
                {
                    return Decision::Ready(mark(shared, res));
                }
                if only_if_cached {
                    counters.miss();
                    return Decision::Ready(mark(shared, gateway_timeout(shared)));
                }
                looked = Some(key);
            }
        }
        let learn = learn(&req);
        Decision::Fill(
            req,
            Plan {
                shared: shared.clone(),
                policy: policy.clone(),
                counters,
                primary,
                looked,
                identity,
                forced,
                is_head,
                only_if_cached,
                learn,
            },
        )
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
    memo::shared_key(shared, policy, version, RequestParts::of(req), || {
        key_at(shared, policy, req, None, version)
    })
}

/// The primary key of `req` in namespace `version`.
pub(crate) fn key_at<B>(
    shared: &Shared,
    policy: &RoutePolicy,
    req: &Request<B>,
    identity: Option<&str>,
    version: u64,
) -> CacheKey {
    primary_key(&KeyInput {
        prefix: &shared.prefix,
        version,
        request: RequestParts::of(req),
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

impl Plan {
    /// The async part: the lookup `call` could not make at once, coalescing, the handler and
    /// the fill. Every response it gives is marked as handled by this cache.
    async fn run<S, ReqB, ResB>(
        self,
        inner: S,
        req: Request<ReqB>,
    ) -> Result<Response<ResponseBody<ResB>>, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        ResB: Body,
    {
        let shared = self.shared.clone();
        Ok(mark(&shared, self.respond(inner, req).await?))
    }

    async fn respond<S, ReqB, ResB>(
        self,
        mut inner: S,
        req: Request<ReqB>,
    ) -> Result<Response<ResponseBody<ResB>>, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        ResB: Body,
    {
        let Plan {
            shared,
            policy,
            counters,
            primary,
            looked,
            identity,
            forced,
            is_head,
            only_if_cached,
            learn,
        } = self;
        let mut lead = None;
        let mut store_failed = false;
        if !forced {
            // One time budget for all of this request's reads from the store.
            let deadline = shared
                .lookup_timeout
                .and_then(|t| tokio::time::Instant::now().checked_add(t));
            let key = match looked {
                // `call` looked already and found nothing fresh.
                Some(key) => key,
                None => {
                    let looked =
                        lookup(&shared, &counters, &primary, req.headers(), deadline).await;
                    store_failed = looked.failed;
                    if let Some(res) = fresh_hit(
                        &shared,
                        &policy,
                        &counters,
                        looked.found,
                        is_head,
                        req.headers(),
                    ) {
                        return Ok(res);
                    }
                    if only_if_cached {
                        counters.miss();
                        return Ok(gateway_timeout(&shared));
                    }
                    looked.key
                }
            };
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

        let req_headers = req.headers().clone();
        let res = match passed_on(&shared, learn.as_ref(), inner.call(req).await?) {
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
            // A HEAD response has no body to keep; only a GET fills the entry HEAD reads. It
            // counts as the GET would: a bypass when the policy refuses to store it, else a miss.
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
        // Boxed: the miss path's state is large, and would otherwise be carried by every
        // request that waits on the store, hits included.
        Ok(Box::pin(miss.respond(res)).await)
    }
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

/// `Ok` with the inner response untouched when a layer of this cache inside already handled
/// it; the app-wide layer then remembers the route (`learn`) and stops looking it up. `Err`
/// gives it back.
fn passed_on<B: Body>(
    shared: &Shared,
    learn: Option<&MatchedPath>,
    res: Response<B>,
) -> Result<Response<ResponseBody<B>>, Response<B>> {
    if !handled(shared, &res) {
        return Err(res);
    }
    if let Some(label) = learn {
        let mut set = shared.delegated.write().unwrap_or_else(|e| e.into_inner());
        set.insert(Arc::from(label.as_str()));
    }
    Ok(res.map(ResponseBody::inner))
}

fn is_delegated(shared: &Shared, route: &str) -> bool {
    let set = shared.delegated.read().unwrap_or_else(|e| e.into_inner());
    !set.is_empty() && set.contains(route)
}
