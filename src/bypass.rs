//! Requests the cache leaves to the inner service: bypasses (a method, credentials, a hook),
//! and routes an inner layer of the same cache handles (delegation).

use std::sync::Arc;

use crate::route::RouteLabel;
use http::Response;
use http_body::Body;

use crate::metrics::RouteCounters;
use crate::names::take_handler_tags;
use crate::shared::Shared;
use crate::status::{handled, mark, with_status};
use crate::unsafe_methods::{Invalidation, Write};
use crate::{BypassReason, ResponseBody};

/// How a bypassed response is finished once the inner service answers.
pub(crate) struct Bypassed {
    pub(crate) shared: Arc<Shared>,
    pub(crate) counters: Arc<RouteCounters>,
    pub(crate) reason: BypassReason,
    /// The hook's reason, or `reason`'s name.
    pub(crate) detail: &'static str,
    /// The route to remember as handled inside, when an app-wide layer sees its GET answered
    /// by an inner layer of this cache.
    pub(crate) learn: Option<RouteLabel>,
    /// An enclosing layer of this cache wants the response marked.
    pub(crate) mark: bool,
    /// An unsafe method's request, when a success of it invalidates (RFC 9111 §4.4).
    pub(crate) write: Option<Write>,
}

impl Bypassed {
    /// The response as it leaves, and the invalidation to run before it does: a write's
    /// success, unless a layer of this cache inside handled it (and invalidated already).
    pub(crate) fn finish<B: Body>(
        self,
        mut res: Response<B>,
    ) -> (Response<ResponseBody<B>>, Option<Invalidation>) {
        // The handler's tags are for this cache only, even on a response it does not store.
        take_handler_tags(&mut res);
        match passed_on(&self.shared, self.learn.as_ref(), res) {
            Ok(handled) => (handled, None),
            Err(res) => {
                self.counters.bypass(self.reason);
                let invalidation = self.write.and_then(|w| w.after(&self.shared, &res));
                let res = res.map(ResponseBody::inner);
                let res = with_status(&self.shared, res, &["fwd=bypass; detail=", self.detail]);
                (mark(&self.shared, res, self.mark), invalidation)
            }
        }
    }
}

/// `Ok` with the inner response untouched when a layer of this cache inside already handled
/// it; the app-wide layer then remembers the route (`learn`) and stops looking it up. `Err`
/// gives it back.
pub(crate) fn passed_on<B: Body>(
    shared: &Shared,
    learn: Option<&RouteLabel>,
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

pub(crate) fn is_delegated(shared: &Shared, route: &str) -> bool {
    let set = shared.delegated.read().unwrap_or_else(|e| e.into_inner());
    !set.is_empty() && set.contains(route)
}
