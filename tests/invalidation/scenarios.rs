//! Invalidation scenarios every store must pass, through a real axum Router: the memory store
//! (tests/invalidation.rs) and Redis, single node and cluster (tests/invalidation_redis.rs).
//! Each request is followed by `flush`, so a Redis write has landed before the next one.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::sync::{Notify, Semaphore};
use tower_response_cache::{CacheTags, ResponseCache};

use crate::common::{get_with, send, Calls, Seen};

/// An app whose routes cover every way an entry gets its names, and a gate for the slow one.
#[derive(Clone)]
pub struct Site {
    pub cache: ResponseCache,
    pub app: Router,
    pub calls: Calls,
    /// The slow routes wait for a permit here, after telling whoever waits on `entered`.
    pub gate: Arc<Semaphore>,
    pub entered: Arc<Notify>,
}

/// Every response stored for a minute; the body says which call made it.
fn counted(calls: &Calls, label: &'static str) -> axum::routing::MethodRouter {
    let calls = calls.clone();
    get(move |headers: HeaderMap| {
        let n = calls.bump();
        let lang = headers
            .get(header::ACCEPT_LANGUAGE)
            .map(|v| v.to_str().unwrap().to_owned());
        async move {
            let mut res = format!("{label} n{n}").into_response();
            if let Some(lang) = lang {
                res.headers_mut()
                    .insert(header::VARY, "accept-language".parse().unwrap());
                res.headers_mut()
                    .insert(header::CONTENT_LANGUAGE, lang.parse().unwrap());
            }
            res
        }
    })
}

impl Site {
    pub fn new(cache: ResponseCache) -> Self {
        let calls = Calls::default();
        let gate = Arc::new(Semaphore::new(0));
        let entered = Arc::new(Notify::new());
        let ttl = Duration::from_secs(60);
        let platform = || cache.ttl(ttl).tags(["platform:{platform}"]);
        let tagged_calls = calls.clone();
        let (slow_calls, slow_gate, slow_entered) = (calls.clone(), gate.clone(), entered.clone());
        let slow = move |tag_it: bool| {
            let (calls, gate, entered) =
                (slow_calls.clone(), slow_gate.clone(), slow_entered.clone());
            get(move || {
                let n = calls.bump();
                let (gate, entered) = (gate.clone(), entered.clone());
                async move {
                    entered.notify_waiters();
                    gate.acquire().await.unwrap().forget();
                    let mut res = format!("slow n{n}").into_response();
                    if tag_it {
                        res.headers_mut()
                            .insert("cache-tag", "slow-tag".parse().unwrap());
                    }
                    res
                }
            })
        };
        let app = Router::new()
            .route(
                "/influencers/{platform}",
                counted(&calls, "influencers").layer(platform().tags(["influencers"])),
            )
            .route(
                "/platforms/{platform}/stats",
                counted(&calls, "stats").layer(platform()),
            )
            .route(
                "/me/{platform}",
                counted(&calls, "me").layer(platform().per_user(|p: &http::request::Parts| {
                    p.headers
                        .get("x-user")
                        .map(|v| v.to_str().unwrap().to_owned())
                })),
            )
            .route(
                "/files/{*rest}",
                counted(&calls, "file").layer(cache.ttl(ttl).tags(["file:{rest}"])),
            )
            .route(
                "/versioned/{platform}",
                counted(&calls, "versioned").layer(cache.ttl(ttl).version_from("platform")),
            )
            .route(
                "/tagged/{id}",
                get(move |Path(id): Path<String>| {
                    let n = tagged_calls.bump();
                    async move {
                        (
                            CacheTags::new([format!("item:{id}")]),
                            [("cache-tag", format!("extra:{id}, shared"))],
                            format!("tagged {id} n{n}"),
                        )
                    }
                })
                .layer(cache.ttl(ttl)),
            )
            .route("/slow/{platform}", slow(false).layer(platform()))
            .route("/slow-tagged", slow(true).layer(cache.ttl(ttl)))
            .route("/other", counted(&calls, "other").layer(cache.ttl(ttl)));
        Self {
            cache,
            app,
            calls,
            gate,
            entered,
        }
    }

    /// The response to `uri` with `headers`, once any store write it caused has landed.
    pub async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> Seen {
        let seen = send(&self.app, get_with(uri, headers)).await;
        self.cache.flush().await;
        seen
    }

    /// The response to `uri` with `headers`, without waiting for writes: for a request that
    /// writes nothing (a hit, a stale answer) while a background refresh may be storing. A
    /// `flush` then would hold every write permit and turn the refresh's write away as busy.
    pub async fn peek(&self, uri: &str, headers: &[(&str, &str)]) -> Seen {
        send(&self.app, get_with(uri, headers)).await
    }

    /// `hit` or `miss` (stored or not), by the response's `Cache-Status`.
    pub async fn outcome(&self, uri: &str, headers: &[(&str, &str)]) -> &'static str {
        outcome(&self.get(uri, headers).await)
    }

    /// Asserts each request's outcome, and that the handler ran once per miss.
    pub async fn expect(&self, requests: &[Req], want: &'static str) {
        let before = self.calls.get();
        for (uri, headers) in requests {
            assert_eq!(self.outcome(uri, headers).await, want, "{uri} {headers:?}");
        }
        let misses = if want == "miss" { requests.len() } else { 0 };
        assert_eq!(self.calls.get() - before, misses, "handler calls");
    }
}

pub type Req = (&'static str, &'static [(&'static str, &'static str)]);

/// `hit`, `miss` or `stale` (soft-invalidated, answered while a refresh replaces it), by the
/// response's `Cache-Status`.
pub fn outcome(seen: &Seen) -> &'static str {
    let status = seen.cache_status();
    if status.contains("; hit") {
        "hit"
    } else if status.contains("fwd=uri-miss") {
        "miss"
    } else if status == SOFT_STALE {
        "stale"
    } else {
        panic!("neither hit, miss nor soft stale: {status}")
    }
}

/// A soft-invalidated entry still inside its TTL, answered stale: it counts as past freshness.
pub const SOFT_STALE: &str = "tower-response-cache; ttl=0; fwd=stale; detail=invalidated";

/// How long a refresh may take to land before a test fails: far past any healthy run.
pub const LANDS: Duration = Duration::from_secs(10);

/// Polls `done` (a real poll: a refresh runs on its own task, on Redis behind a real round
/// trip) until it holds; fails the test past a bound no healthy run comes near.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let start = std::time::Instant::now();
    while !done().await {
        assert!(start.elapsed() < LANDS, "never: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Every query, host, `Vary` variant and user of twitter's routes.
pub const TWITTER: &[Req] = &[
    ("/influencers/twitter?limit=5", &[]),
    ("/influencers/twitter?limit=10", &[]),
    ("/influencers/twitter?limit=5", &[("host", "a.example")]),
    ("/influencers/twitter?limit=5", &[("host", "b.example")]),
    ("/influencers/twitter", &[("accept-language", "en")]),
    ("/influencers/twitter", &[("accept-language", "es")]),
    ("/platforms/twitter/stats", &[]),
    ("/me/twitter", &[("x-user", "alice")]),
    ("/me/twitter", &[("x-user", "bob")]),
];

/// The same for instagram, and a route without tags.
pub const OTHERS: &[Req] = &[
    ("/influencers/instagram?limit=5", &[]),
    ("/influencers/instagram", &[("accept-language", "en")]),
    ("/platforms/instagram/stats", &[]),
    ("/me/instagram", &[("x-user", "alice")]),
    ("/other", &[]),
];

async fn fill(site: &Site, sets: &[&[Req]]) {
    for set in sets {
        site.expect(set, "miss").await;
    }
    for set in sets {
        site.expect(set, "hit").await;
    }
}

/// A route tag, filled from the path, drops every variant of that platform and nothing else.
pub async fn tag_from_path_params(site: &Site) {
    fill(site, &[TWITTER, OTHERS]).await;
    site.cache.invalidate_tag("platform:twitter").await.unwrap();
    site.expect(TWITTER, "miss").await;
    site.expect(OTHERS, "hit").await;
    site.expect(TWITTER, "hit").await;
    let stats = site.cache.metrics().snapshot();
    let invalidated: u64 = stats.iter().map(|s| s.invalidated).sum();
    assert_eq!(invalidated, TWITTER.len() as u64, "{stats:?}");
}

/// A static route tag, and `{*rest}` taking the rest of the path.
pub async fn static_and_wildcard_tags(site: &Site) {
    let files: &[Req] = &[("/files/a/b.txt", &[]), ("/files/a/b.txt?v=2", &[])];
    let other_file: &[Req] = &[("/files/a/c.txt", &[])];
    fill(site, &[TWITTER, OTHERS, files, other_file]).await;
    site.cache.invalidate_tag("file:a/b.txt").await.unwrap();
    site.expect(files, "miss").await;
    site.expect(other_file, "hit").await;
    site.cache.invalidate_tag("influencers").await.unwrap();
    site.expect(&TWITTER[..6], "miss").await;
    site.expect(&OTHERS[..2], "miss").await;
    site.expect(&TWITTER[6..], "hit").await;
    site.expect(&OTHERS[2..], "hit").await;
}

/// `/a/b` is that path whatever its query, host, variant or user; `/a/*` everything under it.
pub async fn paths_exact_and_prefix(site: &Site) {
    fill(site, &[TWITTER, OTHERS]).await;
    site.cache
        .invalidate_path("/influencers/twitter")
        .await
        .unwrap();
    site.expect(&TWITTER[..6], "miss").await;
    site.expect(&TWITTER[6..], "hit").await;
    site.expect(OTHERS, "hit").await;
    site.cache.invalidate_path("/influencers/*").await.unwrap();
    site.expect(&TWITTER[..6], "miss").await;
    site.expect(&OTHERS[..2], "miss").await;
    site.expect(&TWITTER[6..], "hit").await;
    site.expect(&OTHERS[2..], "hit").await;
    site.cache.invalidate_path("/*").await.unwrap();
    site.expect(TWITTER, "miss").await;
    site.expect(OTHERS, "miss").await;
}

/// One user's entries on every route go; another user's and shared ones stay.
pub async fn one_user(site: &Site) {
    fill(site, &[TWITTER, OTHERS]).await;
    site.cache.invalidate_user("alice").await.unwrap();
    site.expect(&[TWITTER[7], OTHERS[3]], "miss").await;
    site.expect(&[TWITTER[8]], "hit").await;
    site.expect(&TWITTER[..7], "hit").await;
}

/// Tags a handler adds (extension and header) are honoured and never sent to the client, on a
/// miss, a hit or a bypass.
pub async fn handler_tags(site: &Site) {
    let one: &[Req] = &[("/tagged/1", &[])];
    let two: &[Req] = &[("/tagged/2", &[])];
    for _ in 0..2 {
        let seen = site.get("/tagged/1", &[]).await;
        assert_eq!(seen.header("cache-tag"), None, "{seen:?}");
    }
    let bypass = site
        .get("/tagged/1", &[("authorization", "Bearer x")])
        .await;
    assert!(bypass.cache_status().contains("fwd=bypass"), "{bypass:?}");
    assert_eq!(bypass.header("cache-tag"), None);
    fill(site, &[two]).await;
    site.expect(one, "hit").await;
    for tag in ["item:1", "extra:1"] {
        site.cache.invalidate_tag(tag).await.unwrap();
        site.expect(one, "miss").await;
        site.expect(two, "hit").await;
        site.expect(one, "hit").await;
    }
    site.cache.invalidate_tag("shared").await.unwrap();
    site.expect(one, "miss").await;
    site.expect(two, "miss").await;
}

/// Named versions are tag generations: `version_from` routes follow them; `bump_version`
/// drops everything.
pub async fn versions(site: &Site) {
    let twitter: &[Req] = &[("/versioned/twitter", &[]), ("/versioned/twitter?x=1", &[])];
    let instagram: &[Req] = &[("/versioned/instagram", &[])];
    fill(site, &[twitter, instagram, OTHERS]).await;
    assert_eq!(
        site.cache.named_version("platform:twitter").await.unwrap(),
        0
    );
    assert_eq!(
        site.cache.incr_version("platform:twitter").await.unwrap(),
        1
    );
    assert_eq!(
        site.cache.named_version("platform:twitter").await.unwrap(),
        1
    );
    site.expect(twitter, "miss").await;
    site.expect(instagram, "hit").await;
    let before = site.cache.namespace_version().await.unwrap();
    assert_eq!(site.cache.bump_version().await.unwrap(), before + 1);
    site.expect(twitter, "miss").await;
    site.expect(instagram, "miss").await;
    site.expect(OTHERS, "miss").await;
    site.expect(OTHERS, "hit").await;
}

/// A response made before an invalidation is never served after it, even when it is stored
/// after it: here the handler is still running when the tag is invalidated. A handler-tagged
/// response whose miss saw anything invalidated is not stored at all.
pub async fn invalidation_during_a_slow_miss_wins(site: &Site) {
    for (uri, invalidate) in [
        ("/slow/twitter", "platform:twitter"),
        ("/slow-tagged", "unrelated"),
    ] {
        let entered = site.entered.notified();
        tokio::pin!(entered);
        entered.as_mut().enable();
        let first = tokio::spawn({
            let site = site.clone();
            async move { site.get(uri, &[]).await }
        });
        entered.await;
        site.cache.invalidate_tag(invalidate).await.unwrap();
        site.gate.add_permits(1);
        let first = first.await.unwrap();
        assert_eq!(outcome(&first), "miss", "{first:?}");
        let calls = site.calls.get();
        site.gate.add_permits(1);
        let second = site.get(uri, &[]).await;
        assert_eq!(outcome(&second), "miss", "{uri}: {second:?}");
        assert_eq!(site.calls.get(), calls + 1);
        assert_ne!(second.text(), first.text());
        let third = site.get(uri, &[]).await;
        assert_eq!(outcome(&third), "hit", "{uri}: {third:?}");
        assert_eq!(third.text(), second.text());
    }
}

/// Responses found invalidated so far, and of those the soft-invalidated ones.
pub fn invalidated(site: &Site) -> (u64, u64) {
    let stats = site.cache.metrics().snapshot();
    let all = stats.iter().map(|s| s.invalidated).sum();
    let soft = stats.iter().map(|s| s.soft_invalidated).sum();
    (all, soft)
}

/// Responses answered stale so far.
pub fn stale(site: &Site) -> u64 {
    site.cache
        .metrics()
        .snapshot()
        .iter()
        .map(|s| s.stale)
        .sum()
}

/// The bodies `requests` are answered with now, each a hit.
pub async fn bodies(site: &Site, requests: &[Req]) -> Vec<String> {
    let mut bodies = Vec::new();
    for (uri, headers) in requests {
        let seen = site.get(uri, headers).await;
        assert_eq!(outcome(&seen), "hit", "{uri} {headers:?}");
        bodies.push(seen.text().to_owned());
    }
    bodies
}

/// Asserts that `requests` miss, each found hard-invalidated (not soft, not answered stale).
async fn expect_hard(site: &Site, requests: &[Req]) {
    let ((all, softs), stales) = (invalidated(site), stale(site));
    site.expect(requests, "miss").await;
    let n = requests.len() as u64;
    assert_eq!(invalidated(site), (all + n, softs), "hard");
    assert_eq!(stale(site), stales, "answered stale");
}

/// Asserts that `requests`, soft-invalidated, are each answered stale with the body `old` had
/// (counted as stale, invalidated and soft-invalidated) and start one background refresh
/// each; once those have landed, each is a hit with the refresh's new body, and the handler
/// ran exactly once per request.
pub async fn expect_soft(site: &Site, requests: &[Req], old: &[String]) {
    let ((all, softs), stales, calls) = (invalidated(site), stale(site), site.calls.get());
    for ((uri, headers), old) in requests.iter().zip(old) {
        let seen = site.peek(uri, headers).await;
        assert_eq!(outcome(&seen), "stale", "{uri} {headers:?}: {seen:?}");
        assert_eq!(seen.text(), old, "{uri} {headers:?}");
    }
    let n = requests.len() as u64;
    assert_eq!(invalidated(site), (all + n, softs + n), "soft");
    assert_eq!(stale(site), stales + n, "answered stale");
    let want = calls + requests.len();
    eventually("one refresh per key", || async { site.calls.get() >= want }).await;
    for ((uri, headers), old) in requests.iter().zip(old) {
        let seen = until_refreshed(site, (uri, headers)).await;
        assert_eq!(outcome(&seen), "hit", "{uri} {headers:?}: {seen:?}");
        assert_ne!(seen.text(), old, "{uri} {headers:?}: the refresh's body");
    }
    assert_eq!(site.calls.get(), want, "handler calls: one refresh per key");
}

/// Sends `req` until it is no longer answered stale (until its refresh has stored, a request
/// is answered stale again, and counted); that answer.
pub async fn until_refreshed(site: &Site, (uri, headers): (&str, &[(&str, &str)])) -> Seen {
    let start = std::time::Instant::now();
    let mut seen = site.peek(uri, headers).await;
    while outcome(&seen) == "stale" {
        assert!(
            start.elapsed() < LANDS,
            "{uri} {headers:?}: its refresh never landed"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
        seen = site.peek(uri, headers).await;
    }
    seen
}

/// Soft invalidation by tag and path: each entry is answered stale, counted as soft, while one
/// refresh replaces it; soft twice stays soft; a hard invalidation before or after a soft one
/// wins (a miss, the handler in the foreground), and so does a hard one of another name the
/// entry carries. Entries not named stay hits.
pub async fn soft_purges(site: &Site) {
    fill(site, &[TWITTER, OTHERS]).await;
    let old = bodies(site, TWITTER).await;
    site.cache
        .invalidate_tag_soft("platform:twitter")
        .await
        .unwrap();
    expect_soft(site, TWITTER, &old).await;
    site.expect(OTHERS, "hit").await;
    site.expect(TWITTER, "hit").await;

    let old = bodies(site, TWITTER).await;
    site.cache
        .invalidate_tag_soft("platform:twitter")
        .await
        .unwrap();
    site.cache
        .invalidate_tags_soft(["platform:twitter", "unrelated"])
        .await
        .unwrap();
    expect_soft(site, TWITTER, &old).await;

    site.cache
        .invalidate_tag_soft("platform:twitter")
        .await
        .unwrap();
    site.cache.invalidate_tag("platform:twitter").await.unwrap();
    expect_hard(site, TWITTER).await;

    site.cache.invalidate_tag("platform:twitter").await.unwrap();
    site.cache
        .invalidate_tag_soft("platform:twitter")
        .await
        .unwrap();
    expect_hard(site, TWITTER).await;

    let old = bodies(site, &TWITTER[..6]).await;
    site.cache
        .invalidate_path_soft("/influencers/twitter")
        .await
        .unwrap();
    expect_soft(site, &TWITTER[..6], &old).await;
    site.expect(&TWITTER[6..], "hit").await;
    site.expect(OTHERS, "hit").await;

    let old = bodies(site, &OTHERS[..2]).await;
    site.cache
        .invalidate_path_soft("/influencers/*")
        .await
        .unwrap();
    site.cache.invalidate_tag("platform:twitter").await.unwrap();
    expect_hard(site, &TWITTER[..6]).await;
    expect_soft(site, &OTHERS[..2], &old).await;
    expect_hard(site, &TWITTER[6..]).await;
    site.expect(&OTHERS[2..], "hit").await;
}

/// Every scenario, each on a fresh cache from `make`.
pub async fn all<F: Fn() -> ResponseCache>(make: F) {
    tag_from_path_params(&Site::new(make())).await;
    static_and_wildcard_tags(&Site::new(make())).await;
    paths_exact_and_prefix(&Site::new(make())).await;
    one_user(&Site::new(make())).await;
    handler_tags(&Site::new(make())).await;
    versions(&Site::new(make())).await;
    invalidation_during_a_slow_miss_wins(&Site::new(make())).await;
    soft_purges(&Site::new(make())).await;
}
