//! The async part of a request `call` could not answer at once, in order: the lookup a store
//! makes us wait for and its hit ([`hit`](crate::hit)), the flight of a missing key
//! ([`coalesce`](crate::coalesce)), the handler, and the miss that answers and fills the entry
//! ([`miss`](crate::miss)). It joins the two paths; neither reaches into the other.

use std::sync::Arc;

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::bypass::passed_on;
use crate::coalesce::{Joined, Lead};
use crate::hit::{fresh_hit, lookup};
use crate::lease::Taken;
use crate::lease_wait::{take_or_wait, try_now, Leased};
use crate::metrics::{HandlerTimer, RouteCounters};
use crate::miss::Miss;
use crate::names;
use crate::policy::RoutePolicy;
use crate::refresh;
use crate::route::RouteLabel;
use crate::shared::Shared;
use crate::stale::{found, guarded, instead_of_error, Found, Guarded};
use crate::status::{gateway_timeout, handled, mark, with_status};
use crate::{names::take_handler_tags, shadow, trace};
use crate::{CacheKey, CachedResponse, ResponseBody};

/// What a plan needs of the inner service: a tower service over the request, that it and its
/// futures can move into a task (a background refresh, a boxed fill).
pub(crate) trait Inner<ReqB, ResB>:
    Service<Request<ReqB>, Response = Response<ResB>, Future: Send + 'static, Error: Send + 'static>
    + Send
    + 'static
{
}

impl<S, ReqB, ResB> Inner<ReqB, ResB> for S
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
}

/// A response body whose frames can move into a task.
pub(crate) trait SendBody: Body<Data: Send, Error: Send> + Send + 'static {}

impl<B> SendBody for B
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
}

/// A request that may be served from or stored in the cache, as `call` found it.
pub(crate) struct Plan {
    pub(crate) shared: Arc<Shared>,
    pub(crate) policy: Arc<RoutePolicy>,
    pub(crate) counters: Arc<RouteCounters>,
    pub(crate) primary: CacheKey,
    /// `Some(key)`: already looked up in `call` (a store that answers at once) and nothing fresh
    /// was found; the key is the one a fill stores under (the variant when the URL varies).
    pub(crate) looked: Option<CacheKey>,
    /// The per-user identity the key was made with.
    pub(crate) identity: Option<String>,
    /// The client asked to skip the stored copy, and the layer honours that.
    pub(crate) forced: bool,
    pub(crate) is_head: bool,
    pub(crate) only_if_cached: bool,
    pub(crate) learn: Option<RouteLabel>,
    /// An enclosing layer of this cache wants the response marked.
    pub(crate) mark: bool,
    /// A stale entry `call` found inside its stale-if-error window (see [`stale`](crate::stale)).
    pub(crate) fallback: Option<Arc<CachedResponse>>,
}

impl Plan {
    /// The async part: the lookup `call` could not make at once, coalescing, the handler and
    /// the fill. Its response is marked as handled by this cache when an enclosing layer asked.
    ///
    /// The lookup is all a hit waits for, so only it lives in this future: everything after
    /// it is boxed when reached (a miss), and a hit through a store that must be waited for
    /// allocates and copies the lookup's state, not the miss path's as well (3.4 KB, not 5.3
    /// KB, behind an axum route). A plan that `call` looked up already, or that skips the
    /// lookup, goes to [`Plan::run_settled`] instead.
    pub(crate) async fn run<S, ReqB, ResB>(
        self,
        inner: S,
        req: Request<ReqB>,
    ) -> Result<Response<ResponseBody<ResB>>, S::Error>
    where
        S: Inner<ReqB, ResB>,
        ReqB: Send + 'static,
        ResB: SendBody,
    {
        let shared = self.shared.clone();
        let (wanted, shadow) = (self.mark, self.policy.shadow);
        let res = self.respond(inner, req).await?;
        Ok(finished(&shared, res, wanted, shadow))
    }

    /// Like [`Plan::run`] for a plan with no lookup left to make: `call` looked already (a
    /// store that answers at once) or the client forced a miss. The miss path's state is
    /// this future's own: it is boxed once, by `call`.
    pub(crate) async fn run_settled<S, ReqB, ResB>(
        mut self,
        inner: S,
        req: Request<ReqB>,
    ) -> Result<Response<ResponseBody<ResB>>, S::Error>
    where
        S: Inner<ReqB, ResB>,
        ReqB: Send + 'static,
        ResB: SendBody,
    {
        let shared = self.shared.clone();
        let (wanted, shadow) = (self.mark, self.policy.shadow);
        // `None` when forced: `call` looks up nothing for a forced miss.
        let key = self.looked.take();
        let fallback = self.fallback.take();
        let deadline = read_budget(&shared);
        let res = self
            .settle(inner, req, key, (false, deadline), fallback)
            .await?;
        Ok(finished(&shared, res, wanted, shadow))
    }

    /// Whether `call` left no lookup to make.
    pub(crate) fn settled(&self) -> bool {
        self.forced || self.looked.is_some()
    }

    /// The lookup, and the answer when it found something to answer with; otherwise the rest,
    /// boxed (see [`Plan::run`]).
    async fn respond<S, ReqB, ResB>(
        self,
        inner: S,
        req: Request<ReqB>,
    ) -> Result<Response<ResponseBody<ResB>>, S::Error>
    where
        S: Inner<ReqB, ResB>,
        ReqB: Send + 'static,
        ResB: SendBody,
    {
        let (shared, policy, counters) = (
            self.shared.clone(),
            self.policy.clone(),
            self.counters.clone(),
        );
        let deadline = read_budget(&shared);
        let (timer, traced) = (counters.timer(), trace::lookup_start());
        let looked = lookup(&shared, &counters, &self.primary, req.headers(), deadline).await;
        counters.looked_up(timer);
        trace::looked_up(traced);
        let store_failed = looked.failed;
        let headers = req.headers();
        // A soft-invalidated entry comes apart from `found`, which only holds a valid one (the
        // other readers of a lookup must never take it as fresh).
        let (entry, soft) = match looked.soft {
            Some(entry) => (Some(entry), true),
            None => (looked.found, false),
        };
        let is_head = self.is_head;
        let fallback = match found(&shared, &policy, &counters, entry, soft, is_head, headers) {
            Found::Fresh(res) => {
                counters.hit_took(timer);
                if !policy.shadow {
                    return Ok(res);
                }
                // Counted as the hit it would have been; the handler still answers.
                return Box::pin(would_hit(&shared, inner, req)).await;
            }
            Found::Early(res) => {
                counters.hit_took(timer);
                self.revalidate(inner, req, &looked.key, true, true);
                return Ok(res);
            }
            Found::Revalidate(res) => {
                self.revalidate(inner, req, &looked.key, true, false);
                return Ok(res);
            }
            Found::Miss(stale) => stale,
        };
        if self.only_if_cached {
            counters.miss();
            return Ok(gateway_timeout(&shared));
        }
        let (key, budget) = (Some(looked.key), (store_failed, deadline));
        Box::pin(self.settle(inner, req, key, budget, fallback)).await
    }

    /// After the lookup found nothing to answer with: the flight of `key` (`None`: the
    /// client forced a miss, nothing to wait for), then the handler and the fill.
    async fn settle<S, ReqB, ResB>(
        self,
        inner: S,
        req: Request<ReqB>,
        key: Option<CacheKey>,
        (store_failed, deadline): (bool, Option<tokio::time::Instant>),
        fallback: Option<Arc<CachedResponse>>,
    ) -> Result<Response<ResponseBody<ResB>>, S::Error>
    where
        S: Inner<ReqB, ResB>,
        ReqB: Send + 'static,
        ResB: SendBody,
    {
        let (shared, policy, counters) = (
            self.shared.clone(),
            self.policy.clone(),
            self.counters.clone(),
        );
        let mut lead = None;
        // A store that just failed will not be filled by a leader either: nobody waits on it.
        // A shadowed layer calls the handler for every request: nobody waits on another.
        let coalesce = !self.is_head && !store_failed && !policy.shadow;
        if let Some(key) = key.filter(|_| coalesce && !shared.coalesce_wait.is_zero()) {
            let layer = Arc::as_ptr(&policy) as usize;
            let turn = shared.flights.take_turn(layer, &key, shared.coalesce_wait);
            let waiting = tokio::time::Instant::now();
            match turn.await {
                Joined::Lead(mut led) => {
                    // This process's leader: with a lease, one process of the fleet.
                    if let Some(settings) = policy.lease.on() {
                        let headers = req.headers();
                        let leased = take_or_wait(
                            &shared,
                            &policy,
                            &counters,
                            settings,
                            &self.primary,
                            &key,
                            headers,
                        );
                        match leased.await {
                            Leased::Lead(guard) => led.hold(guard),
                            Leased::Hit(res) => {
                                // Waiters here look it up too.
                                led.finish();
                                return Ok(res);
                            }
                            Leased::Through => {}
                        }
                    }
                    lead = Some(led);
                }
                Joined::Alone => {}
                Joined::Landed => {
                    // Another request filled it meanwhile: its entry is a hit, if fresh.
                    counters.coalesced();
                    // The budget is for reading the store, not for waiting on the leader: a
                    // handler slower than the budget would otherwise leave none.
                    let deadline = deadline.and_then(|d| d.checked_add(waiting.elapsed()));
                    let headers = req.headers();
                    let looked = lookup(&shared, &counters, &self.primary, headers, deadline);
                    let found = looked.await.found;
                    let hit = fresh_hit(&shared, &policy, &counters, found, false, headers);
                    if let Some(res) = hit {
                        return Ok(res);
                    }
                }
            }
        }
        self.fill(inner, req, lead, store_failed, fallback, false)
            .await
    }

    /// Refreshes, in the background, the stale entry under `key` that `req` was just answered
    /// with: `req` itself goes to `inner` (driven to readiness first unless `ready`) and its
    /// response through the usual admission and store; it is never served. A HEAD stores
    /// nothing, so it refreshes nothing. `early`: the entry is still fresh (XFetch), and a
    /// refresh started is counted as early.
    pub(crate) fn revalidate<S, ReqB, ResB>(
        self,
        mut inner: S,
        req: Request<ReqB>,
        key: &CacheKey,
        ready: bool,
        early: bool,
    ) where
        S: Inner<ReqB, ResB>,
        ReqB: Send + 'static,
        ResB: SendBody,
    {
        if self.is_head {
            return;
        }
        let Some(ticket) = refresh::start(&self.shared, &self.policy, &self.counters, key) else {
            return;
        };
        let key = key.clone();
        refresh::run(ticket, move |mut lead| async move {
            // With a lease, only the process holding it refreshes; the others go on serving the
            // stale entry until its refresh lands. A store that fails is no reason to skip one.
            let (shared, policy, counters) = (&self.shared, &self.policy, &self.counters);
            match try_now(shared, policy, counters, &key).await {
                Some(Taken::Held) => return lead.finish(),
                Some(Taken::Granted(guard)) => lead.hold(guard),
                Some(Taken::Failed) | None => {}
            }
            // Looked for after the lease: a holder releases it only once its write is in. An
            // early refresh replaces an entry that is still fresh: nothing to look for.
            if !early && refresh::landed(shared, &key).await {
                return lead.finish();
            }
            if early {
                counters.early_refresh();
            }
            // tower's contract: a clone must be driven to readiness before it is called.
            if !ready
                && std::future::poll_fn(|cx| inner.poll_ready(cx))
                    .await
                    .is_err()
            {
                return;
            }
            let filled = Box::pin(self.fill(inner, req, Some(lead), false, None, true)).await;
            if let Ok(res) = filled {
                refresh::drain(res.into_body()).await;
            }
        });
    }

    /// The handler, then the miss that answers and fills the entry. With a `fallback`, the
    /// stale entry answers instead when the handler fails (`stale-if-error`). A `refresh`
    /// counts no outcome: its request was counted when it was answered stale.
    async fn fill<S, ReqB, ResB>(
        self,
        mut inner: S,
        req: Request<ReqB>,
        lead: Option<Lead>,
        store_failed: bool,
        fallback: Option<Arc<CachedResponse>>,
        refresh: bool,
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
            identity,
            forced,
            is_head,
            learn,
            ..
        } = self;
        // Begun before the handler runs: an invalidation while it runs wins (see `generations`).
        let stamp = (!is_head).then(|| {
            let names = names::of_request(&shared, &policy, &req, identity.as_deref());
            shared.gens.begin(names)
        });
        let req_headers = req.headers().clone();
        let called = HandlerTimer::start();
        let mut res = match fallback {
            None => inner.call(req).await?,
            Some(stale) => match guarded(inner.call(req), policy.origin_timeout).await {
                Guarded::Ok(res) => res,
                failed => {
                    let instead = instead_of_error(
                        &shared,
                        &policy,
                        &counters,
                        &stale,
                        is_head,
                        &req_headers,
                    );
                    if let Some(res) = instead {
                        // Nothing was stored; waiters look again and go on by themselves.
                        if let Some(lead) = lead {
                            lead.finish();
                        }
                        return Ok(res);
                    }
                    // The window ended while the handler ran: its failure goes out as it is.
                    match failed {
                        Guarded::Ok(res) | Guarded::ServerError(res) => res,
                        Guarded::Err(e) => return Err(e),
                        Guarded::Panicked(panic) => std::panic::resume_unwind(panic),
                        Guarded::TimedOut => {
                            counters.miss();
                            return Ok(gateway_timeout(&shared));
                        }
                    }
                }
            },
        };
        let late = names::take_handler_tags(&mut res);
        let res = match passed_on(&shared, learn.as_ref(), res) {
            Ok(handled) => {
                // A layer inside answered (and stored, if it could): waiters look it up.
                if let Some(lead) = lead {
                    lead.finish();
                }
                return Ok(handled);
            }
            Err(res) => res,
        };
        let took = counters.handler_took(called);
        // The miss counts the outcome: a miss, or a bypass when the response is refused.
        let miss = Miss {
            shared,
            policy: &policy,
            counters,
            primary,
            per_user: identity.is_some(),
            req_headers,
            fwd: if forced { "request" } else { "uri-miss" },
            lead,
            store_failed,
            stamp,
            late,
            compute_millis: u32::try_from(took.as_millis()).unwrap_or(u32::MAX),
            refresh,
        };
        if is_head {
            return Ok(miss.head(res));
        }
        // Boxed: the miss path's state is large, and would otherwise be carried by every
        // request that waits on the store, hits included.
        Ok(Box::pin(miss.respond(res)).await)
    }
}

/// When this request's reads from the store must be done: one time budget for all of them.
fn read_budget(shared: &Shared) -> Option<tokio::time::Instant> {
    (shared.lookup_timeout).and_then(|t| tokio::time::Instant::now().checked_add(t))
}

/// `res` as it leaves the async part: marked as handled by this cache when an enclosing layer
/// asked (`wanted`), and by a shadowed layer unless an inner layer of this cache handled it.
fn finished<B: Body>(
    shared: &Shared,
    mut res: Response<ResponseBody<B>>,
    wanted: bool,
    shadow: bool,
) -> Response<ResponseBody<B>> {
    // A response an inner layer of this cache handled carries that layer's own member.
    if shadow && !handled(shared, &res) {
        res = shadow::mark(shared, res);
    }
    if trace::on() {
        // Run inside this request's span (`call` instruments it).
        trace::answered(&tracing::Span::current(), shared, &res);
    }
    mark(shared, res, wanted)
}

/// A shadowed layer's would-be hit: the handler answers, its response passed on as it is (the
/// fresh entry stays as stored; an inner layer of this cache that handled it keeps its member).
async fn would_hit<S, ReqB, ResB>(
    shared: &Shared,
    mut inner: S,
    req: Request<ReqB>,
) -> Result<Response<ResponseBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
{
    let mut res = inner.call(req).await?;
    take_handler_tags(&mut res);
    Ok(match passed_on(shared, None, res) {
        Ok(handled) => handled,
        Err(res) => with_status(shared, res.map(ResponseBody::inner), &[shadow::WOULD_HIT]),
    })
}
