//! A write invalidates what twiscope cached of its platform — the JSON routes (level 1), the
//! page's stats fragment (level 2) and its top-5 value (level 3) — and nothing else; on the
//! memory store, and across two processes sharing one Redis and one `--db` file. Black box,
//! like `twiscope.rs`: build the example first when filtering (`cargo build --example twiscope`).

use std::time::{Duration, Instant};

use common::raw_http::Reply;
use common::redis_server::RedisServer;
use common::twiscope::{spawn, start, twiscope, Server, TempDb};
use serde_json::Value;

mod common;

/// The usernames `GET /influencers/{platform}?limit={limit}` lists, in rank order.
fn usernames(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, 200, "{reply:?}");
    let body: Value = serde_json::from_str(&reply.body).expect("JSON");
    body["influencers"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| i["username"].as_str().expect("a username").to_owned())
        .collect()
}

/// The `influencers` stat of a `/platforms/{platform}/stats` reply.
fn influencers(reply: &Reply) -> i64 {
    assert_eq!(reply.status, 200, "{reply:?}");
    let body: Value = serde_json::from_str(&reply.body).expect("JSON");
    body["stats"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["key"] == "influencers"))
        .and_then(|s| s["value"].as_i64())
        .unwrap_or_else(|| panic!("no influencers in {}", reply.body))
}

/// The HTML page of `platform`.
fn page(server: &Server, platform: &str) -> String {
    let reply = server.get(&format!("/platforms/{platform}"), &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

/// Records a post of `engagement` by the new influencer `username`.
fn post(server: &Server, platform: &str, username: &str, engagement: u64) {
    let body = format!(
        r#"{{"username":"{username}","display_name":"Display {username}","engagement":{engagement}}}"#
    );
    let reply = server.post_json(&format!("/influencers/{platform}"), &body);
    assert_eq!(reply.status, 201, "{reply:?}");
}

#[test]
fn a_post_invalidates_its_platform_on_every_level_and_nothing_else() {
    let server = start("memory");
    let top3 = "/influencers/mastodon?limit=3";
    let (stats, other) = ("/platforms/mastodon/stats", "/influencers/twitter?limit=3");
    for path in [top3, stats, other] {
        assert!(!server.get(path, &[]).is_hit(), "{path}: first a miss");
    }
    let before = usernames(&server.get(top3, &[]));
    let count = influencers(&server.get(stats, &[]));
    assert!(server.get(other, &[]).is_hit());
    // The page's panels are cached: the second rendering runs no SQL.
    let shown = page(&server, "mastodon");
    let queries = server.db_queries();
    assert_eq!(page(&server, "mastodon"), shown);
    assert_eq!(
        server.db_queries(),
        queries,
        "both panels came from the cache"
    );

    // A new influencer who ranks first.
    post(&server, "mastodon", "grace", 1_000_000_000);
    let after = server.get(top3, &[]);
    assert!(!after.is_hit(), "invalidated: {after:?}");
    let ranked = usernames(&after);
    assert_eq!(ranked[0], "grace");
    assert_eq!(ranked[1..], before[..2]);
    let stats_now = server.get(stats, &[]);
    assert!(!stats_now.is_hit());
    assert_eq!(influencers(&stats_now), count + 1);
    assert!(
        server.get(other, &[]).is_hit(),
        "another platform still hits"
    );
    let html = page(&server, "mastodon");
    assert!(html.contains("Display grace"), "the top 5 value: {html}");
    assert!(
        html.contains(&format!("<dt>Influencers</dt><dd>{}</dd>", count + 1)),
        "the stats fragment: {html}"
    );

    // One who does not rank: the list is recomputed, and is what it was.
    post(&server, "mastodon", "quiet", 0);
    let after = server.get(top3, &[]);
    assert!(!after.is_hit());
    assert_eq!(usernames(&after), ranked);
    assert!(server.get(top3, &[]).is_hit(), "cached again");
}

/// GETs `path` from `server` until `done` holds of the reply (at most 5 s); how long it took.
fn until(server: &Server, path: &str, done: impl Fn(&Reply) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let reply = server.get(path, &[]);
        if done(&reply) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{path}: never: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_post_to_one_process_is_seen_by_another_on_the_same_redis_and_db() {
    let Some(redis) = RedisServer::start("twiscope_post_across_processes") else {
        return;
    };
    const POLL_MS: u64 = 50;
    let (url, db) = (redis.url(), TempDb::new("invalidation"));
    let process = || {
        let mut command = twiscope(&url);
        command
            .arg("--db")
            .arg(db.path())
            .env("CACHE_INVALIDATION_POLL_MS", POLL_MS.to_string());
        spawn(command, &url)
    };
    let (a, b) = (process(), process());
    let (top5, stats) = ("/influencers/bluesky?limit=5", "/platforms/bluesky/stats");
    let other = "/influencers/twitter?limit=5";
    for path in [top5, stats, other] {
        assert!(!a.get(path, &[]).is_hit(), "{path}");
        assert!(
            b.get_until_hit(path, &[]).is_hit(),
            "{path}: shared through Redis"
        );
    }
    let count = influencers(&b.get(stats, &[]));
    let shown = page(&b, "bluesky");
    let queries = b.db_queries();
    assert_eq!(page(&b, "bluesky"), shown);
    assert_eq!(b.db_queries(), queries, "b's panels are cached");

    post(&a, "bluesky", "ada", 1_000_000_000);
    let took = until(&b, top5, |r| !r.is_hit() && usernames(r)[0] == "ada");
    println!("b saw a's POST after {took:?} (poll {POLL_MS} ms)");
    // The bound is the poll interval plus a round trip; the margin is for a loaded machine.
    assert!(took < Duration::from_millis(POLL_MS * 20), "took {took:?}");
    assert_eq!(influencers(&b.get(stats, &[])), count + 1);
    assert!(b.get(other, &[]).is_hit(), "another platform still hits");
    let html = page(&b, "bluesky");
    assert!(html.contains("Display ada"), "{html}");
    assert!(
        html.contains(&format!("<dt>Influencers</dt><dd>{}</dd>", count + 1)),
        "{html}"
    );
}
