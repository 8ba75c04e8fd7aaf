//! The HTTP API: the router with its cache layers, and one handler per route. Bodies are
//! deterministic JSON for a given database state (stable order, no timestamps).

use std::borrow::Cow;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use tower_response_cache::{CacheLayer, ResponseCache};

use crate::cli::{Knobs, Store};
use crate::db::{platform_id, Db, DbError, Hashtag, Influencer, PLATFORMS};
use crate::i18n::Lang;
use crate::{metrics, page, record};

const TRENDING_TTL: Duration = Duration::from_secs(15 * 60);
const INFLUENCERS_TTL: Duration = Duration::from_secs(60);
const STATS_TTL: Duration = Duration::from_secs(10 * 60);

/// How long a twiscope on Redis holds the fleet-wide lease on a cold `/trending` or
/// `/influencers` key: far longer than the aggregation takes (tens of milliseconds), so a live
/// holder never loses it, and short enough that a crashed one delays the others by seconds.
const LEASE: Duration = Duration::from_secs(5);

/// How long the others wait for the lease holder's entry before running the query themselves:
/// the lease's own length, so a crashed holder costs them at most that.
const LEASE_WAIT: Duration = Duration::from_secs(5);

/// The tag every cached page, fragment and value of one platform carries, `{platform}` filled
/// from the route's path: a write to the platform invalidates it ([`record::after_write`]).
const PLATFORM_TAG: &str = "platform:{platform}";

/// [`PLATFORM_TAG`] of `platform`.
pub(crate) fn platform_tag(platform: &str) -> String {
    PLATFORM_TAG.replace("{platform}", platform)
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) db: Db,
    pub(crate) cache: Option<ResponseCache>,
    /// The installed recorder, rendered by `GET /metrics`.
    pub(crate) prometheus: PrometheusHandle,
    /// Slept before each `/trending` and `/influencers` query ([`Knobs::query_delay`]).
    pub(crate) query_delay: Duration,
}

/// The cache settings of `/trending` and `/influencers/{platform}`, the routes whose query is
/// expensive: their TTL and, on Redis, the fleet-wide lease and stale-while-revalidate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expensive {
    trending_ttl: Duration,
    influencers_ttl: Duration,
    /// A shared store: several processes would each run the query at once without the lease.
    fleet: bool,
    swr: bool,
}

impl Expensive {
    pub(crate) fn new(store: Store, knobs: &Knobs) -> Self {
        let fleet = store == Store::Redis;
        Self {
            trending_ttl: knobs.trending_ttl.unwrap_or(TRENDING_TTL),
            influencers_ttl: knobs.influencers_ttl.unwrap_or(INFLUENCERS_TTL),
            fleet,
            // On memory, an expired entry is recomputed on demand, as before; this process's
            // concurrent misses are coalesced anyway.
            swr: fleet && knobs.swr,
        }
    }

    /// A per-route layer of `cache` with the TTL `ttl` and, on Redis, the lease and (unless turned off) a grace
    /// window of one more TTL: the copy that was good for `ttl` is still a better answer while
    /// the refresh runs than a wait for the query.
    fn layer(self, cache: &ResponseCache, ttl: Duration) -> CacheLayer {
        let layer = cache.ttl(ttl);
        if !self.fleet {
            return layer;
        }
        let layer = layer.lease(LEASE).lease_wait(LEASE_WAIT);
        if self.swr {
            layer.stale_while_revalidate(ttl)
        } else {
            layer
        }
    }

    /// What the expensive routes do beyond their TTL, for the start-up diagnostics; `None` on
    /// memory, where nothing changes.
    pub(crate) fn describe(self) -> Option<String> {
        self.fleet.then(|| {
            format!(
                "on Redis, /trending and /influencers/{{platform}} take a {LEASE:?} lease to \
                 compute a missing entry once for every twiscope sharing it (the others wait up \
                 to {LEASE_WAIT:?}), {}",
                if self.swr {
                    "and serve an expired entry for up to one more TTL while one refresh runs \
                     (stale-while-revalidate)"
                } else {
                    "without stale-while-revalidate (TWISCOPE_SWR=0)"
                }
            )
        })
    }
}

/// The whole API. With a cache, the expensive routes get their own per-route layer and the
/// router the app-wide one; without, no cache layer at all (the uncached origin).
pub(crate) fn app(
    db: Db,
    cache: Option<ResponseCache>,
    prometheus: PrometheusHandle,
    expensive: Expensive,
    query_delay: Duration,
) -> Router {
    let per_route = |make: &dyn Fn(&ResponseCache) -> CacheLayer| cache.as_ref().map(make);
    let router = Router::new()
        .route(
            "/trending",
            cached(
                get(trending),
                per_route(&|c| expensive.layer(c, expensive.trending_ttl)),
            ),
        )
        .route(
            "/influencers/{platform}",
            // The key ignores every query parameter but `limit`: `?limit=5&page=2` is `?limit=5`.
            cached(
                get(top_influencers),
                per_route(&|c| {
                    expensive
                        .layer(c, expensive.influencers_ttl)
                        .vary_query(["limit"])
                        .tags([PLATFORM_TAG])
                }),
            )
            // Added after the layer, so the write does not pass through it.
            .post(record::record_engagement),
        )
        // Rendered per request (not page-cached): its panels are cached one by one.
        .route("/platforms/{platform}", get(page::platform_page))
        .route(
            "/platforms/{platform}/stats",
            // No `vary_headers` needed: the cache learns `Vary: Accept-Language` from the
            // response and keeps one entry per language.
            cached(
                get(platform_stats),
                per_route(&|c| c.ttl(STATS_TTL).tags([PLATFORM_TAG])),
            ),
        )
        // Per user: `Authorization`, or the `X-Api-Key` declared with `bypass_when`, makes the
        // app-wide layer pass it by, and the handler marks it `private` as well.
        .route("/me", get(me))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .with_state(AppState {
            db,
            cache: cache.clone(),
            prometheus,
            query_delay,
        });
    match cache {
        Some(cache) => router.layer(cache.layer()),
        None => router,
    }
}

fn cached(route: MethodRouter<AppState>, layer: Option<CacheLayer>) -> MethodRouter<AppState> {
    match layer {
        Some(layer) => route.layer(layer),
        None => route,
    }
}

impl AppState {
    /// Waits the testing knob's query delay, if any. Outside the database lock, so a slow
    /// aggregation delays its own request only, as a slow query on a real database server would.
    async fn simulated_cost(&self) {
        if !self.query_delay.is_zero() {
            tokio::time::sleep(self.query_delay).await;
        }
    }
}

/// An error as JSON: `{"error": "…"}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: Cow<'static, str>,
    www_authenticate: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            message: message.into(),
            www_authenticate: None,
        }
    }

    fn unauthorized(message: &'static str, challenge: &'static str) -> Self {
        Self {
            www_authenticate: Some(challenge),
            ..Self::new(StatusCode::UNAUTHORIZED, message)
        }
    }

    fn unknown_platform(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!(
                "unknown platform '{name}' (known: {})",
                PLATFORMS.join(", ")
            ),
        )
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        eprintln!("twiscope: {e}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
        }
        let mut res = (
            self.status,
            Json(Body {
                error: &self.message,
            }),
        )
            .into_response();
        if let Some(challenge) = self.www_authenticate {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        res
    }
}

/// The id of the platform `name`, or a 404 naming the known ones.
pub(crate) fn known_platform(name: &str) -> Result<i64, ApiError> {
    platform_id(name).ok_or_else(|| ApiError::unknown_platform(name))
}

#[derive(Serialize)]
struct Trending {
    hashtags: Vec<Ranked<Hashtag>>,
}

#[derive(Serialize)]
struct Ranked<T> {
    rank: usize,
    #[serde(flatten)]
    item: T,
}

fn ranked<T>(items: Vec<T>) -> Vec<Ranked<T>> {
    (1..)
        .zip(items)
        .map(|(rank, item)| Ranked { rank, item })
        .collect()
}

/// `GET /trending`: the 20 most mentioned hashtags.
async fn trending(State(s): State<AppState>) -> Result<Json<Trending>, ApiError> {
    s.simulated_cost().await;
    let hashtags = s.db.run(|sql| sql.trending()).await?;
    Ok(Json(Trending {
        hashtags: ranked(hashtags),
    }))
}

#[derive(Deserialize)]
struct TopParams {
    limit: Option<String>,
}

#[derive(Serialize)]
struct Top {
    platform: &'static str,
    limit: u32,
    influencers: Vec<Ranked<Influencer>>,
}

/// `GET /influencers/{platform}?limit=N`: the top `N` (default 10, at most 100) by summed
/// engagement.
async fn top_influencers(
    State(s): State<AppState>,
    Path(platform): Path<String>,
    params: Result<Query<TopParams>, QueryRejection>,
) -> Result<Json<Top>, ApiError> {
    let id = known_platform(&platform)?;
    let bad_limit = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "limit must be an integer from 1 to 100",
        )
    };
    let limit = match params.map_err(|_| bad_limit())?.0.limit {
        None => 10,
        Some(limit) => limit
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(bad_limit)?,
    };
    s.simulated_cost().await;
    let influencers = s.db.run(move |sql| sql.top_influencers(id, limit)).await?;
    Ok(Json(Top {
        platform: PLATFORMS[platform_index(id)],
        limit,
        influencers: ranked(influencers),
    }))
}

/// The index in `PLATFORMS` of the platform with `id`.
pub(crate) fn platform_index(id: i64) -> usize {
    usize::try_from(id - 1).unwrap_or(0)
}

#[derive(Serialize)]
struct Stats {
    platform: &'static str,
    language: &'static str,
    title: String,
    stats: Vec<Stat>,
    top_hashtags: Labelled<Vec<Ranked<Hashtag>>>,
}

#[derive(Serialize)]
struct Stat {
    key: &'static str,
    label: &'static str,
    value: serde_json::Value,
}

#[derive(Serialize)]
struct Labelled<T> {
    label: &'static str,
    value: T,
}

/// `GET /platforms/{platform}/stats`: totals with labels in the caller's language.
async fn platform_stats(
    State(s): State<AppState>,
    Path(platform): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = known_platform(&platform)?;
    let lang = Lang::negotiate(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    );
    let stats = s.db.run(move |sql| sql.platform_stats(id)).await?;
    let name = PLATFORMS[platform_index(id)];
    let labels = lang.labels();
    let per_post = stats.engagement_per_post_centi();
    let per_post = serde_json::Number::from_f64(per_post as f64 / 100.0)
        .map_or(serde_json::Value::Null, serde_json::Value::Number);
    let body = Stats {
        platform: name,
        language: lang.tag(),
        title: (labels.title)(&capitalised(name)),
        stats: vec![
            stat("influencers", labels.influencers, stats.influencers.into()),
            stat("followers", labels.followers, stats.followers.into()),
            stat("posts", labels.posts, stats.posts.into()),
            stat("engagement", labels.engagement, stats.engagement.into()),
            stat("engagement_per_post", labels.engagement_per_post, per_post),
        ],
        top_hashtags: Labelled {
            label: labels.top_hashtags,
            value: ranked(stats.top_hashtags),
        },
    };
    Ok((
        [
            (header::VARY, HeaderValue::from_static("accept-language")),
            (
                header::CONTENT_LANGUAGE,
                HeaderValue::from_static(lang.tag()),
            ),
        ],
        Json(body),
    )
        .into_response())
}

fn stat(key: &'static str, label: &'static str, value: serde_json::Value) -> Stat {
    Stat { key, label, value }
}

/// `name` with its first letter in upper case.
pub(crate) fn capitalised(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().map_or_else(String::new, |c| {
        c.to_ascii_uppercase().to_string() + chars.as_str()
    })
}

/// `GET /me`: the caller's own profile, from `Authorization: Bearer token-<id>` or
/// `X-Api-Key: key-<id>`. The cache sees `Authorization` by itself; the API key is declared to
/// it with `bypass_when` (see `open_cache`).
async fn me(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    const CHALLENGE: &str = "Bearer realm=\"twiscope\"";
    const INVALID: &str = "Bearer realm=\"twiscope\", error=\"invalid_token\"";
    let invalid = || ApiError::unauthorized("invalid token", INVALID);
    let id = if let Some(auth) = headers.get(header::AUTHORIZATION) {
        auth.to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .and_then(|(_, token)| user_id(token.trim(), "token-"))
    } else if let Some(key) = headers.get("x-api-key") {
        key.to_str()
            .ok()
            .and_then(|key| user_id(key.trim(), "key-"))
    } else {
        return Err(ApiError::unauthorized(
            "send Authorization: Bearer token-<user id> or X-Api-Key: key-<user id>",
            CHALLENGE,
        ));
    };
    let id = id.ok_or_else(invalid)?;
    let profile =
        s.db.run(move |sql| sql.profile(id))
            .await?
            .ok_or_else(invalid)?;
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("private"))],
        Json(profile),
    )
        .into_response())
}

/// The user id in a credential `<prefix><digits>`.
fn user_id(credential: &str, prefix: &str) -> Option<i64> {
    credential
        .strip_prefix(prefix)
        .filter(|id| id.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|id| id.parse().ok())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}
