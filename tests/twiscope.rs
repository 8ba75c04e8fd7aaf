//! Black-box tests of the twiscope example: start the built binary on a free loopback port and
//! drive it over real HTTP/1.1.
//!
//! `cargo test` builds examples before running tests; with a target filter
//! (`cargo test --test twiscope`) build it first: `cargo build --example twiscope`. The
//! harness is in `common/twiscope.rs`; the shared `--db` file is tested in `twiscope_db.rs`.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::redis_server::{RedisCluster, RedisServer};
use common::twiscope::{binary, start, twiscope};

mod common;

#[test]
fn trending_second_request_is_a_hit_and_runs_no_sql() {
    let server = start("memory");
    let first = server.get("/trending", &[]);
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.cache_status().contains("fwd=uri-miss"), "{first:?}");
    assert!(first.body.starts_with("{\"hashtags\":[{\"rank\":1,"));
    let queries = server.db_queries();

    let second = server.get("/trending", &[]);
    assert!(second.is_hit(), "{second:?}");
    assert_eq!(second.body, first.body);
    assert!(second.header("age").is_some());
    assert_eq!(server.db_queries(), queries, "a hit runs no SQL");

    let metrics = server.get("/metrics", &[]).body;
    assert!(metrics.contains("twiscope_cache_hits_total{route=\"/trending\"} 1"));
    assert!(metrics.contains("twiscope_cache_stores_total{route=\"/trending\"} 1"));
    assert!(metrics.contains("# TYPE twiscope_db_queries_total counter"));
    // Served by metrics-exporter-prometheus: the crate's histograms are there too.
    assert!(
        metrics.contains("# TYPE twiscope_cache_handler_seconds summary"),
        "{metrics}"
    );
    assert!(metrics.contains("twiscope_cache_handler_seconds_count{route=\"/trending\"} 1"));
    assert!(metrics.contains("twiscope_cache_hit_ratio{route=\"/trending\"} 0.500000"));
}

#[test]
fn influencers_key_on_limit_only() {
    let server = start("memory");
    let five = server.get("/influencers/twitter?limit=5", &[]);
    assert_eq!(five.status, 200, "{five:?}");
    assert!(!five.is_hit());
    let ranks = five.body.matches("\"rank\":").count();
    assert_eq!(ranks, 5, "{}", five.body);

    let same = server.get("/influencers/twitter?limit=5&page=2&utm_source=x", &[]);
    assert!(same.is_hit(), "other parameters share the entry: {same:?}");
    assert_eq!(same.body, five.body);

    let six = server.get("/influencers/twitter?limit=6", &[]);
    assert!(!six.is_hit(), "{six:?}");
    assert_ne!(six.body, five.body);

    let default = server.get("/influencers/bluesky", &[]);
    assert_eq!(default.body.matches("\"rank\":").count(), 10);

    for bad in ["0", "101", "abc", ""] {
        let reply = server.get(&format!("/influencers/twitter?limit={bad}"), &[]);
        assert_eq!(reply.status, 400, "limit={bad}: {reply:?}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{reply:?}"
        );
        assert!(reply.body.contains("\"error\""));
    }
    assert_eq!(server.get("/influencers/myspace", &[]).status, 404);
}

#[test]
fn stats_are_localised_and_cached_per_language() {
    let server = start("memory");
    let get = |lang: &str| server.get("/platforms/twitter/stats", &[("Accept-Language", lang)]);
    let es = get("es");
    let fr = get("fr");
    assert_eq!((es.status, fr.status), (200, 200));
    assert!(!es.is_hit() && !fr.is_hit());
    assert_ne!(es.body, fr.body);
    assert!(es.body.contains("Publicaciones"), "{}", es.body);
    assert!(fr.body.contains("Publications"), "{}", fr.body);
    assert_eq!(es.header("content-language"), Some("es"));
    assert_eq!(fr.header("content-language"), Some("fr"));
    assert!(es
        .header("vary")
        .is_some_and(|v| v.eq_ignore_ascii_case("accept-language")));

    let queries = server.db_queries();
    let es_again = get("es");
    let fr_again = get("fr");
    assert!(es_again.is_hit() && fr_again.is_hit());
    assert_eq!(es_again.body, es.body);
    assert_eq!(fr_again.body, fr.body);
    assert_eq!(server.db_queries(), queries);

    let en = server.get("/platforms/twitter/stats", &[]);
    assert!(en.body.contains("\"language\":\"en\""), "{}", en.body);
    let weighted = get("de;q=0.2, fr;q=0.8");
    assert_eq!(weighted.header("content-language"), Some("fr"));
    assert_eq!(weighted.body, fr.body);
    assert_eq!(server.get("/platforms/myspace/stats", &[]).status, 404);
}

#[test]
fn me_answers_each_user_and_is_never_cached() {
    let server = start("memory");
    let one = [("Authorization", "Bearer token-1")];
    let two = [("Authorization", "Bearer token-2")];
    for _ in 0..2 {
        let a = server.get("/me", &one);
        let b = server.get("/me", &two);
        assert_eq!((a.status, b.status), (200, 200), "{a:?} {b:?}");
        assert!(a.body.starts_with("{\"id\":1,"), "{}", a.body);
        assert!(b.body.starts_with("{\"id\":2,"), "{}", b.body);
        assert!(!a.is_hit() && !b.is_hit());
        assert_eq!(a.header("cache-control"), Some("private"));
    }

    let anonymous = server.get("/me", &[]);
    assert_eq!(anonymous.status, 401);
    assert!(anonymous
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer")));
    let again = server.get("/me", &[]);
    assert_eq!(again.status, 401);
    assert!(!again.is_hit());
    for bad in ["Bearer token-0", "Bearer nope", "Basic dG9rZW4tMQ=="] {
        let reply = server.get("/me", &[("Authorization", bad)]);
        assert_eq!(reply.status, 401, "{bad}: {reply:?}");
    }
}

#[test]
fn post_records_engagement() {
    let server = start("memory");
    let post = |user: &str, engagement: u32| {
        server.request(
            "POST",
            "/influencers/mastodon",
            &[("Content-Type", "application/json")],
            &format!("{{\"username\":\"{user}\",\"engagement\":{engagement}}}"),
        )
    };
    let created = post("ada_lovelace", 7);
    assert_eq!(created.status, 201, "{created:?}");
    assert!(
        created.body.contains("\"created\":true"),
        "{}",
        created.body
    );
    let again = post("ada_lovelace", 5);
    assert_eq!(again.status, 201);
    assert!(again.body.contains("\"created\":false"), "{}", again.body);

    // The new influencer can sign in with their id.
    let id = created
        .body
        .split("\"influencer\":{\"id\":")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .expect("influencer id");
    let me = server.get("/me", &[("Authorization", &format!("Bearer token-{id}"))]);
    assert_eq!(me.status, 200);
    assert!(me.body.contains("\"posts\":2,"), "{}", me.body);
    assert!(me.body.contains("\"engagement\":12}"), "{}", me.body);

    let bad = server.request(
        "POST",
        "/influencers/mastodon",
        &[("Content-Type", "application/json")],
        "{\"username\":\"\",\"engagement\":1}",
    );
    assert_eq!(bad.status, 422, "{bad:?}");
    assert_eq!(post("x", 1).status, 201);
    let unknown = server.request(
        "POST",
        "/influencers/myspace",
        &[("Content-Type", "application/json")],
        "{\"username\":\"x\",\"engagement\":1}",
    );
    assert_eq!(unknown.status, 404);
}

#[test]
fn without_cache_every_request_runs_sql() {
    let server = start("off");
    let first = server.get("/trending", &[]);
    let before = server.db_queries();
    let second = server.get("/trending", &[]);
    assert_eq!(second.body, first.body, "bodies are deterministic");
    assert!(second.header("cache-status").is_none());
    assert!(server.db_queries() > before);
    let metrics = server.get("/metrics", &[]).body;
    assert!(!metrics.contains("twiscope_cache_"), "{metrics}");
    assert!(metrics.contains("# TYPE twiscope_db_queries_total counter"));
}

#[test]
fn bodies_are_the_same_run_to_run() {
    let (a, b) = (start("memory"), start("off"));
    for path in [
        "/trending",
        "/influencers/bluesky?limit=7",
        "/platforms/mastodon/stats",
    ] {
        assert_eq!(a.get(path, &[]).body, b.get(path, &[]).body, "{path}");
    }
}

#[test]
fn bad_command_lines_exit_2_naming_the_flag() {
    for (args, needle) in [
        (&["--bogus"][..], "--bogus"),
        (&["--listen"][..], "--listen"),
        (&["--db"][..], "--db"),
        (&["--listen", "not-an-address"][..], "--listen"),
        (&["--cache", "memcached://x"][..], "--cache"),
        // Not the forms `memory` and `off`, however close.
        (&["--cache", "memory://x"][..], "--cache 'memory://x'"),
        (&["--cache", "off://"][..], "--cache 'off://'"),
    ] {
        let out = Command::new(binary())
            .args(args)
            .env_remove("CACHE_URL")
            .env_remove("TWISCOPE_LISTEN")
            .output()
            .expect("run twiscope");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    let help = Command::new(binary())
        .arg("--help")
        .output()
        .expect("run twiscope");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--cache URL"), "{help}");
    assert!(
        help.contains("--db PATH") && help.contains("TWISCOPE_DB"),
        "{help}"
    );
}

#[test]
fn an_unreachable_redis_is_a_warning_on_stderr() {
    // A port nothing listens on: Redis is "down".
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        probe.local_addr().expect("port").port()
    };
    let mut child = twiscope(&format!("redis://127.0.0.1:{port}/0"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start twiscope");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the start-up line");
    // It starts anyway (fail-open), and says so where an operator looks.
    assert!(line.starts_with("twiscope listening on"), "{line:?}");
    let _ = child.kill();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let _ = child.wait();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains("Redis is not reachable")),
        "{stderr}"
    );
}

#[test]
fn two_processes_on_one_redis_share_entries() {
    let Some(redis) = RedisServer::start("two_processes_on_one_redis_share_entries") else {
        return;
    };
    let url = redis.url();
    let first = start(&url);
    let second = start(&url);
    let miss = first.get("/influencers/bluesky?limit=7", &[]);
    assert!(
        miss.cache_status().contains("fwd=uri-miss; stored"),
        "{miss:?}"
    );
    // The write follows the response: wait until the entry is in Redis, so the second
    // process's one GET below must be a hit that runs no SQL.
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.cli(&["DBSIZE"]).trim() == "0" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let queries = second.db_queries();
    let hit = second.get("/influencers/bluesky?limit=7", &[]);
    assert!(
        hit.is_hit(),
        "the second process reads the first's entry: {hit:?}"
    );
    assert_eq!(hit.body, miss.body);
    assert_eq!(second.db_queries(), queries, "a shared hit runs no SQL");
    // The entry is in Redis under the printable prefix.
    let keys = redis.cli(&["--scan", "--pattern", "twiscope:*"]);
    assert!(keys.lines().count() >= 1, "{keys}");
}

#[test]
fn twiscope_runs_on_a_redis_cluster() {
    let Some(cluster) = RedisCluster::start("twiscope_runs_on_a_redis_cluster") else {
        return;
    };
    let server = start(&cluster.url());
    let stats = [("accept-language", "fr")];
    let miss = server.get("/platforms/mastodon/stats", &stats);
    assert!(miss.cache_status().contains("stored"), "{miss:?}");
    let hit = server.get_until_hit("/platforms/mastodon/stats", &stats);
    assert!(hit.is_hit(), "{hit:?}");
    assert_eq!(hit.body, miss.body);
}

#[test]
fn metrics_counts_its_own_requests_as_bypasses_not_misses() {
    let server = start("memory");
    for _ in 0..2 {
        let reply = server.get("/metrics", &[]);
        assert_eq!(reply.status, 200);
        assert!(
            reply
                .cache_status()
                .ends_with("fwd=bypass; detail=no-store"),
            "{reply:?}"
        );
    }
    let text = server.get("/metrics", &[]).body;
    assert!(
        text.contains("twiscope_cache_misses_total{route=\"/metrics\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("twiscope_cache_bypasses_total{route=\"/metrics\",reason=\"no-store\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("twiscope_cache_hit_ratio{route=\"/metrics\"} 0.000000"),
        "{text}"
    );
}

#[test]
fn me_by_api_key_answers_as_the_bearer_token_and_is_never_cached() {
    let server = start("memory");
    let bearer = server.get("/me", &[("Authorization", "Bearer token-1")]);
    assert_eq!(bearer.status, 200, "{bearer:?}");
    for _ in 0..2 {
        let one = server.get("/me", &[("X-Api-Key", "key-1")]);
        let two = server.get("/me", &[("X-Api-Key", "key-2")]);
        assert_eq!((one.status, two.status), (200, 200), "{one:?} {two:?}");
        assert_eq!(one.body, bearer.body);
        assert!(two.body.starts_with("{\"id\":2,"), "{}", two.body);
        for reply in [&one, &two] {
            assert_eq!(
                reply.cache_status(),
                "twiscope; fwd=bypass; detail=api-key",
                "{reply:?}"
            );
        }
    }
    for bad in ["key-0", "token-1", "key-x"] {
        let reply = server.get("/me", &[("X-Api-Key", bad)]);
        assert_eq!(reply.status, 401, "{bad}: {reply:?}");
    }
    let anonymous = server.get("/me", &[]);
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.body.contains("X-Api-Key"), "{}", anonymous.body);
    let metrics = server.get("/metrics", &[]).body;
    assert!(
        metrics.contains("twiscope_cache_bypasses_total{route=\"/me\",reason=\"custom\"} 7"),
        "{metrics}"
    );
}
