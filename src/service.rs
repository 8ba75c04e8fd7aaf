//! The service: `call` decides once what happens to a request (a bypass, a hit answered now,
//! or a [`Plan`] for the async part in [`plan`](crate::plan)); every failure inside the cache
//! is a miss.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use http_body::Body;
use tower_service::Service;
use tracing::Instrument;

use crate::bypass::{is_delegated, Bypassed};
use crate::hit::lookup_now;
use crate::key::{primary_key, KeyInput, RequestParts};
use crate::metrics::RouteCounters;
use crate::plan::Plan;
use crate::policy::{only_if_cached, Mode, RoutePolicy};
use crate::route::{route_label, RouteLabel};
use crate::shared::Shared;
use crate::stale::{found, Found};
use crate::status::{ask_mark, gateway_timeout, mark, wants_mark};
use crate::trace;
use crate::unsafe_methods::{is_unsafe, Write};
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
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // Disabled, at the cost of a load, unless debug is on for the crate (see `trace`).
        let span = trace::span(&req);
        let entered = span.enter();
        match self.decide(req) {
            Decision::Ready(res) => {
                trace::answered(&span, &self.shared, &res);
                ResponseFuture::ready(res)
            }
            // The service driven to readiness takes the request: no clone, no box.
            Decision::Bypass(req, finish) => {
                trace::bypassed(&span, finish.as_ref().map(|f| f.detail));
                ResponseFuture::bypass(self.inner.call(req), finish)
            }
            Decision::Revalidate(res, req, plan, early) => {
                trace::answered(&span, &self.shared, &res);
                if let Some(key) = plan.looked.clone() {
                    // A clone, driven to readiness in the refresh's own task.
                    plan.revalidate(self.inner.clone(), req, &key, false, early);
                }
                ResponseFuture::ready(res)
            }
            Decision::Fill(req, plan) => {
                // Take the service that was driven to readiness; leave a fresh clone in its place.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                drop(entered);
                if plan.settled() {
                    ResponseFuture::fill(plan.run_settled(inner, req).instrument(span))
                } else {
                    ResponseFuture::fill(plan.run(inner, req).instrument(span))
                }
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
    /// A stale entry answered now (inside its stale-while-revalidate window); the request
    /// goes on to refresh it in the background, if it may (see [`refresh`](crate::refresh)).
    /// `true`: a fresh hit refreshed early (XFetch), not a stale answer.
    Revalidate(Response<ResponseBody<ResB>>, Request<ReqB>, Plan, bool),
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
        let wanted = wants_mark(shared, &req);
        // A route layer handles the methods it wraps, GET and HEAD; other methods on the same
        // route may be bare and still get their `Cache-Status` here.
        let cacheable_method = req.method() == Method::GET || req.method() == Method::HEAD;
        let route = route_label(&req).map(RouteLabel::as_str);
        if app_wide && cacheable_method && route.is_some_and(|r| is_delegated(shared, r)) {
            return Decision::Bypass(req, None);
        }
        let counters = route_counters(&self.route, shared, route.unwrap_or("*"));
        // Learn only from GET/HEAD: a route layer wrapping just another method says nothing
        // about whether GETs on the route are handled inside.
        let learn = |req: &Request<ReqB>| {
            (app_wide && cacheable_method)
                .then(|| route_label(req).cloned())
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
        // A shadowed layer never answers in the handler's place, a `504` included.
        let only_if_cached = only_if_cached(req.headers()) && !policy.shadow;
        let identity = match admitted {
            Ok(identity) => identity,
            Err(reason) if only_if_cached => {
                // Nothing that bypasses the cache can be answered from it.
                counters.bypass(reason);
                return Decision::Ready(mark(shared, gateway_timeout(shared), wanted));
            }
            Err(reason) => {
                let finish = Bypassed {
                    shared: shared.clone(),
                    counters,
                    reason,
                    detail: hooked.unwrap_or(reason.as_str()),
                    learn: learn(&req),
                    mark: wanted,
                    write: (policy.invalidate_on_unsafe && is_unsafe(req.method()))
                        .then(|| Write::of(&req)),
                };
                let mut req = req;
                ask_mark(shared, &mut req);
                return Decision::Bypass(req, Some(finish));
            }
        };

        let forced = policy.client_forces_miss(req.headers());
        if forced && only_if_cached {
            // The client wants no stored copy, and no response from elsewhere either.
            counters.miss();
            return Decision::Ready(mark(shared, gateway_timeout(shared), wanted));
        }
        let primary = request_key(shared, policy, &req, identity.as_deref());
        trace::key(&primary);
        let is_head = req.method() == Method::HEAD;
        let mut looked = None;
        let (mut fallback, mut stale, mut early) = (None, None, false);
        // A store that answers without waiting (the memory store) is asked here: a fresh hit
        // is answered at once, with no clone of the inner service and no boxed future.
        if !forced && shared.answers_now && !policy.shadow {
            let (timer, traced) = (counters.timer(), trace::lookup_start());
            if let Some((entry, key)) = lookup_now(shared, &counters, &primary, req.headers()) {
                counters.looked_up(timer);
                trace::looked_up(traced);
                match found(
                    shared,
                    policy,
                    &counters,
                    entry,
                    false,
                    is_head,
                    req.headers(),
                ) {
                    Found::Fresh(res) => {
                        counters.hit_took(timer);
                        return Decision::Ready(mark(shared, res, wanted));
                    }
                    Found::Early(res) => {
                        counters.hit_took(timer);
                        (stale, early) = (Some(mark(shared, res, wanted)), true);
                    }
                    Found::Revalidate(res) => stale = Some(mark(shared, res, wanted)),
                    Found::Miss(entry) => fallback = entry,
                }
                if only_if_cached && stale.is_none() {
                    counters.miss();
                    return Decision::Ready(mark(shared, gateway_timeout(shared), wanted));
                }
                looked = Some(key);
            }
        }
        let learn = learn(&req);
        let mut req = req;
        ask_mark(shared, &mut req);
        let plan = Plan {
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
            mark: wanted,
            fallback,
        };
        match stale {
            Some(res) => Decision::Revalidate(res, req, plan, early),
            None => Decision::Fill(req, plan),
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
    key_at(shared, policy, req, identity, shared.version)
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
