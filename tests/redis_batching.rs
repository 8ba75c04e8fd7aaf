//! The Redis store sends the commands of requests that arrive together in one write: on a
//! runtime like a server's (a multi-threaded one, whose workers run the task a task wakes right
//! after it), lookups and stores made at once reach Redis in a handful of reads, not one each,
//! and every request still gets its own answer.

mod common;

use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tower_response_cache::{CacheKey, CachedResponse, Entry, RedisStore, Store};

use common::redis_server::RedisServer;

const REQUESTS: u8 = 32;
const TTL: Duration = Duration::from_secs(60);

fn key(i: u8) -> CacheKey {
    CacheKey::from_parts("batched", &[&[i]])
}

fn entry(i: u8) -> Entry {
    let body = Bytes::from(format!("entry {i}"));
    CachedResponse::new(StatusCode::OK, &http::HeaderMap::new(), body, 0, TTL).into()
}

/// How many reads the server has made from its clients' sockets (`INFO stats`).
fn reads(server: &RedisServer) -> u64 {
    let stats = server.cli(&["info", "stats"]);
    stats
        .lines()
        .find_map(|l| l.trim().strip_prefix("total_reads_processed:"))
        .expect("total_reads_processed in INFO stats")
        .parse()
        .unwrap()
}

/// Runs `REQUESTS` calls of `each` at once, each in its own task as a server runs requests,
/// all spawned from one task of the runtime; their results in order.
async fn at_once<T, F>(store: &RedisStore, each: impl Fn(RedisStore, u8) -> F) -> Vec<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = (0..REQUESTS).map(|i| each(store.clone(), i)).collect();
    tokio::spawn(async move {
        let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn commands_made_at_once_reach_redis_together_and_each_gets_its_answer() {
    let Some(server) = RedisServer::start("batched_commands") else {
        return;
    };
    let store = RedisStore::builder(&server.url())
        .pool_size(1)
        .require_connection(true)
        .connect()
        .await
        .unwrap();

    let before = reads(&server);
    let stored = at_once(
        &store,
        |s, i| async move { s.put(&key(i), entry(i), TTL).await },
    )
    .await;
    assert!(stored.iter().all(Result::is_ok), "{stored:?}");
    let put_reads = reads(&server) - before;

    let before = reads(&server);
    let found = at_once(&store, |s, i| async move { s.get(&key(i)).await }).await;
    let get_reads = reads(&server) - before;
    for (i, found) in (0..REQUESTS).zip(found) {
        let Ok(Some(Entry::Response(r))) = found else {
            panic!("lookup {i}: {found:?}")
        };
        assert_eq!(r.body(), &Bytes::from(format!("entry {i}")), "lookup {i}");
    }
    assert_eq!(server.calls("set"), u64::from(REQUESTS));
    assert_eq!(server.calls("get"), u64::from(REQUESTS));
    // Each count includes the `INFO` that reads it. Sent one by one, the commands take about
    // one read each (checked: the SETs took 8 and 20 reads in two runs without the batching).
    assert!(put_reads <= 4, "{REQUESTS} SETs took {put_reads} reads");
    assert!(get_reads <= 4, "{REQUESTS} GETs took {get_reads} reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_lone_lookup_is_sent_at_once() {
    let Some(server) = RedisServer::start("batched_alone") else {
        return;
    };
    let store = common::connect_redis(&server.url()).await;
    store.put(&key(1), entry(1), TTL).await.unwrap();
    // Nothing else is waiting for Redis: the command leaves from this task, unbatched. A
    // batched one would have spawned the batch's sender by its first poll.
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = tasks();
    let k = key(1);
    let mut get = store.get(&k);
    let first = std::future::poll_fn(|cx| Poll::Ready(get.as_mut().poll(cx))).await;
    assert!(first.is_pending(), "Redis cannot have answered yet");
    assert_eq!(tasks(), before, "no sender task for a lone command");
    let found = tokio::time::timeout(Duration::from_secs(5), get).await;
    assert!(
        matches!(found, Ok(Ok(Some(Entry::Response(_))))),
        "{found:?}"
    );
    assert_eq!(server.calls("get"), 1);
}
