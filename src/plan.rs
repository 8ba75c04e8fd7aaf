//! The async part of a request `call` could not answer at once, in order: the lookup a store
//! makes us wait for and its hit ([`hit`](crate::hit)), the flight of a missing key
//! ([`coalesce`](crate::coalesce)), the handler, and the miss that answers and fills the entry
//! ([`miss`](crate::miss)). It joins the two paths; neither reaches into the other.

use std::sync::Arc;

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::bypass::passed_on;
use crate::coalesce::Joined;
use crate::hit::{fresh_hit, lookup};
use crate::lease_wait::{take_or_wait, Leased};
use crate::metrics::{HandlerTimer, RouteCounters};
use crate::miss::Miss;
use crate::names;
use crate::policy::RoutePolicy;
use crate::route::RouteLabel;
use crate::shared::Shared;
use crate::status::{gateway_timeout, handled, mark, with_status};
use crate::{names::take_handler_tags, shadow, trace};
use crate::{CacheKey, ResponseBody};

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
}

impl Plan {
    /// The async part: the lookup `call` could not make at once, coalescing, the handler and
    /// the fill. Its response is marked as handled by this cache when an enclosing layer asked.
    pub(crate) async fn run<S, ReqB, ResB>(
        self,
        inner: S,
        req: Request<ReqB>,
    ) -> Result<Response<ResponseBody<ResB>>, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        ResB: Body,
    {
        let shared = self.shared.clone();
        let (wanted, shadow) = (self.mark, self.policy.shadow);
        let mut res = self.respond(inner, req).await?;
        // A response an inner layer of this cache handled carries that layer's own member.
        if shadow && !handled(&shared, &res) {
            res = shadow::mark(&shared, res);
        }
        if trace::on() {
            // Run inside this request's span (`call` instruments it).
            trace::answered(&tracing::Span::current(), &shared, &res);
        }
        Ok(mark(&shared, res, wanted))
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
            mark: _,
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
                    let (timer, traced) = (counters.timer(), trace::lookup_start());
                    let looked =
                        lookup(&shared, &counters, &primary, req.headers(), deadline).await;
                    counters.looked_up(timer);
                    trace::looked_up(traced);
                    store_failed = looked.failed;
                    if let Some(res) = fresh_hit(
                        &shared,
                        &policy,
                        &counters,
                        looked.found,
                        is_head,
                        req.headers(),
                    ) {
                        counters.hit_took(timer);
                        if !policy.shadow {
                            return Ok(res);
                        }
                        // Counted as the hit it would have been; the handler still answers.
                        return would_hit(&shared, inner, req).await;
                    }
                    if only_if_cached {
                        counters.miss();
                        return Ok(gateway_timeout(&shared));
                    }
                    looked.key
                }
            };
            // A store that just failed will not be filled by a leader either: nobody waits on it.
            // A shadowed layer calls the handler for every request: nobody waits on another.
            let coalesce = !is_head && !store_failed && !policy.shadow;
            if coalesce && !shared.coalesce_wait.is_zero() {
                let layer = Arc::as_ptr(&policy) as usize;
                let turn = shared.flights.take_turn(layer, &key, shared.coalesce_wait);
                let waiting = tokio::time::Instant::now();
                match turn.await {
                    Joined::Lead(mut led) => {
                        // This process's leader: with a lease, one process of the fleet.
                        if let Some(settings) = policy.lease.on() {
                            let headers = req.headers();
                            let leased = take_or_wait(
                                &shared, &policy, &counters, settings, &primary, &key, headers,
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
                        // The budget is for reading the store, not for waiting on the leader:
                        // a handler slower than the budget would otherwise leave none.
                        let deadline = deadline.and_then(|d| d.checked_add(waiting.elapsed()));
                        let headers = req.headers();
                        let looked = lookup(&shared, &counters, &primary, headers, deadline);
                        let found = looked.await.found;
                        let hit = fresh_hit(&shared, &policy, &counters, found, false, headers);
                        if let Some(res) = hit {
                            return Ok(res);
                        }
                    }
                }
            }
        }

        // Begun before the handler runs: an invalidation while it runs wins (see `generations`).
        let stamp = (!is_head).then(|| {
            let names = names::of_request(&shared, &policy, &req, identity.as_deref());
            shared.gens.begin(names)
        });
        let req_headers = req.headers().clone();
        let called = HandlerTimer::start();
        let mut res = inner.call(req).await?;
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
        counters.handler_took(called);
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
        };
        if is_head {
            return Ok(miss.head(res));
        }
        // Boxed: the miss path's state is large, and would otherwise be carried by every
        // request that waits on the store, hits included.
        Ok(Box::pin(miss.respond(res)).await)
    }
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
