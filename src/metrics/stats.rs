//! One route's numbers at one moment ([`RouteStats`]) and the judgement drawn from them: does
//! caching pay on this route ([`Verdict`])?

use std::fmt;
use std::time::Duration;

use crate::BypassReason;

/// One route's counters at one moment, from [`Metrics::snapshot`](crate::Metrics::snapshot) or
/// [`ResponseCache::stats`](crate::ResponseCache::stats).
///
/// Every request a layer of the cache handles counts exactly once, under `hits`, `misses` or
/// `bypasses` (a route with its own layer inside the app-wide one is counted by its own layer
/// alone), so [`requests`](Self::requests) is their sum and [`hit_ratio`](Self::hit_ratio) is
/// the share of cacheable requests served from the cache. `stores`, `store_errors`,
/// `invalidated` and `coalesced` count events, not requests.
///
/// ```
/// use std::time::Duration;
/// use tower_response_cache::ResponseCache;
///
/// let cache = ResponseCache::builder().build();
/// // …serve traffic, then:
/// for route in cache.stats() {
///     if route.verdict.does_not_pay() {
///         println!("{}: {} (saved {:?} so far)", route.route, route.verdict, route.time_saved);
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RouteStats {
    /// The route template, or `*`; `values` counts the low-level API (`ResponseCache::get`…).
    pub route: String,
    /// Requests answered from a fresh stored response (`200`, `304` or HEAD).
    pub hits: u64,
    /// Requests that could use the cache and were not answered from it: nothing fresh was
    /// stored (or the client's `no-cache` was honoured) and the handler's response was one the
    /// policy stores, whether storing it then succeeded or not; and the `504`s answering
    /// `only-if-cached` when nothing fresh was stored.
    pub misses: u64,
    /// Responses stored.
    pub stores: u64,
    /// Body bytes of the responses stored.
    pub stored_bytes: u64,
    /// Store operations that failed and were treated as misses (timeouts included).
    pub store_errors: u64,
    /// Of `store_errors`, those that ran out of time: the store's own command timeout, or the
    /// request's lookup budget.
    pub store_timeouts: u64,
    /// Missing requests that waited for a concurrent miss of the same key until it was done,
    /// then looked again (those that gave up waiting are not counted).
    pub coalesced: u64,
    /// Stored responses found invalidated (a tag, path, user or namespace version bumped since
    /// their miss started) and so not served: each is a lookup that then missed, not a request.
    pub invalidated: u64,
    /// Of `invalidated`, those only soft-invalidated since their miss started
    /// ([`invalidate_tag_soft`](crate::ResponseCache::invalidate_tag_soft)…): stale, still in
    /// the store.
    pub soft_invalidated: u64,
    /// Requests answered from a stored response past its freshness, inside its
    /// stale-while-revalidate window or in place of a handler's error (stale-if-error), or
    /// soft-invalidated ([`invalidate_tag_soft`](crate::ResponseCache::invalidate_tag_soft)…).
    pub stale: u64,
    /// Background refreshes of a stale response not started because
    /// [`max_refreshes`](crate::ResponseCacheBuilder::max_refreshes) were already in flight
    /// (the stale response was served all the same).
    pub refreshes_skipped: u64,
    /// Background refreshes of a still-fresh response started early, on a hit near its expiry
    /// ([`early_refresh`](crate::CacheLayer::early_refresh), XFetch); the hit was counted as a
    /// hit.
    pub early_refreshes: u64,
    /// Requests that bypassed the cache, by reason; only non-zero reasons. A request bypasses
    /// when it may not use the cache (its method, credentials, a
    /// [`bypass_when`](crate::CacheLayer::bypass_when) hook) or when the handler's response
    /// may not be stored (`no-store`, `private`, its status, its size…); it is then not also a
    /// miss.
    pub bypasses: Vec<(BypassReason, u64)>,
    /// Mean time the handler took when the cache called it after a lookup (misses, and
    /// responses the policy then refused to store); `None` before the first.
    pub handler_time: Option<Duration>,
    /// Mean time to answer a hit, from the start of the lookup to the response, measured on a
    /// sample of hits (see [the metrics docs](crate::Metrics)); `None` before the first sample.
    pub hit_time: Option<Duration>,
    /// What the hits saved: `hits × (handler_time − hit_time)`, with an unmeasured hit time
    /// taken as zero; zero before the handler was timed.
    pub time_saved: Duration,
    /// Whether caching pays on this route, and if not, why.
    pub verdict: Verdict,
}

impl RouteStats {
    /// Hits over hits plus misses: the share of requests that could be served from the cache
    /// and were; `0.0` before any.
    #[must_use]
    pub fn hit_ratio(&self) -> f64 {
        hit_ratio(self.hits, self.misses)
    }

    /// Every request counted: hits, stale answers, misses and bypasses.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.hits + self.stale + self.misses + self.bypasses.iter().map(|(_, n)| n).sum::<u64>()
    }
}

pub(crate) fn hit_ratio(hits: u64, misses: u64) -> f64 {
    let total = hits + misses;
    if total == 0 {
        0.0
    } else {
        #[allow(clippy::cast_precision_loss)]
        let ratio = hits as f64 / total as f64;
        ratio
    }
}

/// Whether caching pays on a route: [`RouteStats::verdict`].
///
/// A route is judged once it has seen enough cacheable requests (hits plus misses; see
/// [`ResponseCacheBuilder::verdict_min_requests`](crate::ResponseCacheBuilder::verdict_min_requests)).
/// It does not pay when its hit ratio is under the target
/// ([`ResponseCacheBuilder::target_hit_ratio`](crate::ResponseCacheBuilder::target_hit_ratio),
/// 80 % by default), or when its handler takes less than twice as long as a hit: then the
/// lookup costs about what it saves, and every miss pays for it on top. Its `Display` is the
/// reason, in words.
///
/// ```
/// use std::time::Duration;
/// use tower_response_cache::Verdict;
///
/// let fast = Verdict::HandlerAsFastAsHit {
///     handler: Duration::from_micros(3),
///     hit: Duration::from_micros(2),
/// };
/// assert!(fast.does_not_pay());
/// assert_eq!(
///     fast.to_string(),
///     "the handler (3µs) takes less than twice as long as a hit (2µs)"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Verdict {
    /// Too few hits and misses to judge.
    TooEarly {
        /// Hits plus misses so far.
        requests: u64,
        /// How many it takes.
        needed: u64,
    },
    /// Caching pays: the hit ratio reaches the target and a hit is much faster than the handler.
    Pays,
    /// The hit ratio is under the target.
    LowHitRatio {
        /// Hits over hits plus misses.
        hit_ratio: f64,
        /// The target it misses.
        target: f64,
    },
    /// The handler takes less than twice as long as a hit.
    HandlerAsFastAsHit {
        /// Mean handler time.
        handler: Duration,
        /// Mean time to answer a hit.
        hit: Duration,
    },
}

impl Verdict {
    /// Whether the route was judged and caching does not pay there.
    #[must_use]
    pub fn does_not_pay(&self) -> bool {
        matches!(
            self,
            Self::LowHitRatio { .. } | Self::HandlerAsFastAsHit { .. }
        )
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooEarly { requests, needed } => {
                write!(f, "too early to tell: {requests} of {needed} requests")
            }
            Self::Pays => f.write_str("caching pays"),
            Self::LowHitRatio { hit_ratio, target } => write!(
                f,
                "hit ratio {:.1}% is under the {:.1}% target",
                hit_ratio * 100.0,
                target * 100.0
            ),
            Self::HandlerAsFastAsHit { handler, hit } => write!(
                f,
                "the handler ({handler:?}) takes less than twice as long as a hit ({hit:?})"
            ),
        }
    }
}

/// When a route is judged, and by what target.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Judge {
    pub(crate) target_hit_ratio: f64,
    pub(crate) min_requests: u64,
}

impl Default for Judge {
    fn default() -> Self {
        Self {
            target_hit_ratio: 0.8,
            min_requests: 100,
        }
    }
}

impl Judge {
    pub(crate) fn verdict(
        &self,
        hits: u64,
        misses: u64,
        handler: Option<Duration>,
        hit: Option<Duration>,
    ) -> Verdict {
        let requests = hits + misses;
        if requests < self.min_requests.max(1) {
            return Verdict::TooEarly {
                requests,
                needed: self.min_requests.max(1),
            };
        }
        let ratio = hit_ratio(hits, misses);
        if ratio < self.target_hit_ratio {
            return Verdict::LowHitRatio {
                hit_ratio: ratio,
                target: self.target_hit_ratio,
            };
        }
        match (handler, hit) {
            (Some(handler), Some(hit)) if handler <= hit * 2 => {
                Verdict::HandlerAsFastAsHit { handler, hit }
            }
            _ => Verdict::Pays,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_route_is_judged_after_enough_requests_on_ratio_then_on_speed() {
        let judge = Judge {
            target_hit_ratio: 0.8,
            min_requests: 10,
        };
        assert_eq!(
            judge.verdict(9, 0, None, None),
            Verdict::TooEarly {
                requests: 9,
                needed: 10
            }
        );
        assert!(matches!(
            judge.verdict(7, 3, Some(MS * 50), None),
            Verdict::LowHitRatio { target, .. } if target == 0.8
        ));
        assert_eq!(judge.verdict(8, 2, Some(MS * 50), Some(MS)), Verdict::Pays);
        assert_eq!(judge.verdict(8, 2, Some(MS * 50), None), Verdict::Pays);
        assert_eq!(
            judge.verdict(8, 2, Some(MS * 2), Some(MS)),
            Verdict::HandlerAsFastAsHit {
                handler: MS * 2,
                hit: MS
            }
        );
    }
}
