//! A fleet of twiscope processes on one Redis and one `--db` file: a cold expensive key is
//! computed once fleet-wide (the lease), a lease holder that dies mid-computation delays the
//! others by at most the lease, and an expired entry is served stale at once while a single
//! refresh runs (stale-while-revalidate). Black box, like `twiscope.rs`: real processes, a real
//! redis-server, real clocks — the lease lives in Redis (`PX`), so its expiry is Redis's clock
//! against the processes' own, which only real time exercises. Build the example first when
//! filtering (`cargo build --example twiscope`).

use std::io::Write as _;
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::twiscope::{binary, spawn, start, twiscope, Server, TempDb};

mod common;

/// twiscope's lease on a cold `/trending` key and its bound on waiting for another process's
/// (`LEASE` and `LEASE_WAIT` in examples/twiscope/routes.rs; the start-up line is checked to
/// name the same lease).
const LEASE: Duration = Duration::from_secs(5);
const LEASE_WAIT: Duration = Duration::from_secs(5);

/// Room for a loaded machine (two cores shared with builds) on top of the bounds under test.
const MARGIN: Duration = Duration::from_secs(3);

/// A twiscope on `url` and the shared database `db`, each `/trending` query taking `delay_ms`
/// longer (the testing knob), so requests pile up while one computation runs.
fn process(url: &str, db: &TempDb, delay_ms: u64) -> Server {
    let mut command = twiscope(url);
    command
        .arg("--db")
        .arg(db.path())
        .env("TWISCOPE_QUERY_DELAY_MS", delay_ms.to_string());
    spawn(command, url)
}

/// What one computation of a cold `path` adds to `twiscope_db_queries_total`, measured, not
/// assumed: one request to a twiscope of its own on Redis database 1, a keyspace nothing else
/// in the test uses (its key prefix is fixed, so a fresh prefix is not an option).
fn one_computation(redis: &RedisServer, db: &TempDb, path: &str) -> u64 {
    let url = format!("redis://127.0.0.1:{}/1", redis.port());
    let probe = process(&url, db, 0);
    let before = probe.db_queries();
    let reply = probe.get(path, &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    let cost = probe.db_queries() - before;
    assert!(cost > 0, "a cold {path} runs SQL");
    cost
}

/// Held by the tests that start a fleet: run together, their processes and bursts of requests
/// compete for the CPU enough that Redis commands run past the crate's 200 ms timeout, and a
/// process that cannot reach Redis computes on its own (fail-open), which is not what is
/// measured here.
fn one_fleet_at_a_time() -> MutexGuard<'static, ()> {
    static FLEET: Mutex<()> = Mutex::new(());
    FLEET.lock().unwrap_or_else(PoisonError::into_inner)
}

fn queries(fleet: &[Server]) -> u64 {
    fleet.iter().map(Server::db_queries).sum()
}

#[test]
fn four_processes_compute_a_cold_key_once() {
    let _fleet = one_fleet_at_a_time();
    let Some(redis) = RedisServer::start("twiscope_fleet_cold_key") else {
        return;
    };
    // Long enough that all 40 requests arrive while the first computation runs.
    const DELAY_MS: u64 = 300;
    let db = TempDb::new("fleet");
    let cost = one_computation(&redis, &db, "/trending");
    let url = redis.url();
    let fleet: Vec<Server> = (0..4).map(|_| process(&url, &db, DELAY_MS)).collect();
    // Each process's Redis connection is up and used once before the burst (another key).
    for server in &fleet {
        assert_eq!(server.get("/platforms/twitter/stats", &[]).status, 200);
    }
    let before = queries(&fleet);

    let replies: Vec<_> = std::thread::scope(|s| {
        let pending: Vec<_> = (0..40)
            .map(|i| {
                let server = &fleet[i % fleet.len()];
                s.spawn(move || server.get("/trending", &[]))
            })
            .collect();
        pending
            .into_iter()
            .map(|p| p.join().expect("request thread"))
            .collect()
    });
    for reply in &replies {
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body, replies[0].body, "one answer for all");
    }
    let ran = queries(&fleet) - before;
    // Without the lease each process computes it once (its own misses are coalesced): 4 × cost.
    assert_eq!(
        ran, cost,
        "the fleet ran {ran} queries for a cold /trending; one computation is {cost}"
    );
}

#[test]
fn a_dead_lease_holder_delays_the_others_by_at_most_the_lease() {
    let _fleet = one_fleet_at_a_time();
    let Some(redis) = RedisServer::start("twiscope_fleet_dead_holder") else {
        return;
    };
    // A's computation must still be running when it is killed: far longer than finding the
    // lock key takes, and shorter than the lease, as a real aggregation is.
    const DELAY_MS: u64 = 2_000;
    let delay = Duration::from_millis(DELAY_MS);
    let db = TempDb::new("dead-holder");
    let cost = one_computation(&redis, &db, "/trending");
    let url = redis.url();
    let (mut a, b) = (process(&url, &db, DELAY_MS), process(&url, &db, DELAY_MS));
    let announced = a
        .stderr_line("lease")
        .expect("the lease in the start-up lines");
    assert!(
        announced.contains(&format!("{LEASE:?} lease")),
        "{announced}"
    );

    // A cold request to A, never read: A dies holding the lease.
    let mut to_a = TcpStream::connect(&a.addr).expect("connect to a");
    to_a.write_all(
        format!(
            "GET /trending HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            a.addr
        )
        .as_bytes(),
    )
    .expect("send to a");

    // The lease is the entry's key with a lock suffix, next to it in Redis; whatever its exact
    // name, it is the only key with "lock" in it.
    let asked = Instant::now();
    let key = loop {
        let keys = redis.cli(&["--scan", "--pattern", "*lock*"]);
        if let Some(key) = keys.lines().map(str::trim).find(|k| !k.is_empty()) {
            break key.to_owned();
        }
        assert!(
            asked.elapsed() < delay,
            "A took no lease within its computation (keys: {})",
            redis.cli(&["--scan"])
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let pttl: u64 = redis
        .cli(&["PTTL", &key])
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("PTTL {key}: {e}"));
    assert!(
        pttl > 0 && pttl <= LEASE.as_millis() as u64,
        "{key}: {pttl} ms"
    );
    // Read before the kill, so the expiry is if anything later than this.
    let lease_expires = Instant::now() + Duration::from_millis(pttl);
    a.kill();
    drop(to_a);

    let before = b.db_queries();
    let reply = b.get("/trending", &[]);
    let answered = Instant::now();
    assert_eq!(reply.status, 200, "{reply:?}");
    // B ran no query while the dead holder's lease lived: whether it takes the lease over when it
    // expires or gives up waiting (LEASE_WAIT, longer than what was left of the lease), its own
    // computation starts after the expiry. 100 ms for the two clocks and the PTTL round trip.
    assert!(
        answered + Duration::from_millis(100) >= lease_expires + delay,
        "B answered {:?} before the dead lease expired plus one computation",
        (lease_expires + delay).saturating_duration_since(answered)
    );
    // And nobody waits past the bound.
    let bound = LEASE + LEASE_WAIT + delay + MARGIN;
    assert!(
        reply.elapsed <= bound,
        "B took {:?} (bound {bound:?})",
        reply.elapsed
    );
    assert_eq!(b.db_queries() - before, cost, "B computed it once");
    println!(
        "B answered after {:?} (lease {pttl} ms left at the kill, query {delay:?})",
        reply.elapsed
    );
}

#[test]
fn an_expired_entry_is_served_stale_at_once_while_one_process_refreshes_it() {
    let _fleet = one_fleet_at_a_time();
    let Some(redis) = RedisServer::start("twiscope_fleet_stale") else {
        return;
    };
    // A query far slower than a hit, and a TTL short enough to wait out; the stale window is
    // one more TTL, far longer than the few requests below take.
    const DELAY_MS: u64 = 1_000;
    const TTL_MS: u64 = 2_000;
    let delay = Duration::from_millis(DELAY_MS);
    let db = TempDb::new("stale");
    let url = redis.url();
    let process = || {
        let mut command = twiscope(&url);
        command
            .arg("--db")
            .arg(db.path())
            .env("TWISCOPE_QUERY_DELAY_MS", DELAY_MS.to_string())
            .env("TWISCOPE_TRENDING_TTL_MS", TTL_MS.to_string());
        spawn(command, &url)
    };
    let fleet = [process(), process()];
    let before = fleet[0].db_queries();
    let cold = fleet[0].get("/trending", &[]);
    assert_eq!(cold.status, 200, "{cold:?}");
    let stored = Instant::now();
    let cost = fleet[0].db_queries() - before;
    assert!(
        cold.elapsed >= delay,
        "the cold answer waited for the query"
    );
    assert!(fleet[1].get_until_hit("/trending", &[]).is_hit(), "shared");

    std::thread::sleep(Duration::from_millis(TTL_MS + 300).saturating_sub(stored.elapsed()));
    let before = queries(&fleet);
    for server in &fleet {
        let stale = server.get("/trending", &[]);
        assert_eq!(stale.status, 200, "{stale:?}");
        assert_eq!(stale.body, cold.body, "the stale copy");
        assert!(
            stale.cache_status().contains("fwd=stale"),
            "{}",
            stale.cache_status()
        );
        // Not the query's time: the stale copy goes out while the refresh runs.
        assert!(
            stale.elapsed < delay / 2,
            "{:?}: waited for the refresh",
            stale.elapsed
        );
    }
    // The refresh lands (fresh hits again), and it was one computation for the whole fleet.
    let refreshed = Instant::now();
    loop {
        let reply = fleet[1].get("/trending", &[]);
        if reply.is_hit() && !reply.cache_status().contains("stale") {
            break;
        }
        assert!(
            refreshed.elapsed() < delay + MARGIN,
            "never refreshed: {}",
            reply.cache_status()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(queries(&fleet) - before, cost, "one refresh fleet-wide");
}

#[test]
fn the_fleet_settings_are_in_the_help_and_the_start_up_lines() {
    let help = Command::new(binary())
        .arg("--help")
        .output()
        .expect("run twiscope");
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in ["lease", "stale-while-revalidate", "TWISCOPE_QUERY_DELAY_MS"] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    // A malformed knob is a usage error naming its variable.
    for (name, value) in [
        ("TWISCOPE_QUERY_DELAY_MS", "soon"),
        ("TWISCOPE_TRENDING_TTL_MS", "0"),
        ("TWISCOPE_INFLUENCERS_TTL_MS", "1.5"),
        ("TWISCOPE_SWR", "off"),
    ] {
        let out = twiscope("memory")
            .env(name, value)
            .output()
            .expect("run twiscope");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {stderr}");
        assert!(stderr.contains(name), "{stderr}");
    }

    // On memory nothing changes, and nothing is announced.
    let memory = start("memory");
    assert!(memory.stderr_line("lease").is_none());
    let Some(redis) = RedisServer::start("twiscope_fleet_announced") else {
        return;
    };
    let url = redis.url();
    let on_redis = start(&url);
    let line = on_redis.stderr_line("lease").expect("announced on Redis");
    assert!(
        line.contains("stale-while-revalidate") && !line.contains("without"),
        "{line}"
    );
    let mut command = twiscope(&url);
    command.env("TWISCOPE_SWR", "0");
    let without = spawn(command, &url);
    let line = without.stderr_line("lease").expect("announced on Redis");
    assert!(line.contains("without stale-while-revalidate"), "{line}");
}
