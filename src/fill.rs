//! The async part of a request `call` could not answer at once: the lookup a store makes us
//! wait for, joining the flight of a missing key, the handler, and the miss that fills the
//! entry ([`Miss`]).

use std::sync::Arc;

use crate::route::RouteLabel;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::bypass::passed_on;
use crate::coalesce::{Lead, Turn};
use crate::hit::fresh_hit;
use crate::lookup::lookup;
use crate::metrics::{HandlerTimer, RouteCounters};
use crate::miss::Miss;
use crate::policy::RoutePolicy;
use crate::shared::Shared;
use crate::status::{bypass, gateway_timeout, mark, with_status};
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
        let wanted = self.mark;
        Ok(mark(&shared, self.respond(inner, req).await?, wanted))
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
                    let timer = counters.timer();
                    let looked =
                        lookup(&shared, &counters, &primary, req.headers(), deadline).await;
                    counters.looked_up(timer);
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
        let called = HandlerTimer::start();
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
        counters.handler_took(called);
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
                Turn::Wait(wait) => {
                    self.counters.coalesced();
                    wait
                }
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
