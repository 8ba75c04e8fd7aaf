//! The Redis store's circuit breaker as the gauge `{ns}_cache_breaker_state` (0 closed,
//! 1 half-open, 2 open), against a real redis-server that is frozen and thawed: registered once,
//! at connect, and set at every transition.

mod common;

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower_response_cache::{BreakerState, RedisStore};

use common::redis_server::RedisServer;

const GAUGE: &str = "app_cache_breaker_state";
const COOLDOWN: Duration = Duration::from_millis(300);

/// Every value recorded under `GAUGE`: one per registration (there must be exactly one).
/// `DebuggingRecorder` resets a gauge to 0 as it reads it, so each transition is read once, and
/// the closing one right after the half-open probe set 1.
fn gauges(snapshotter: &Snapshotter) -> Vec<f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == GAUGE)
        .map(|(key, _, _, value)| {
            assert_eq!(key.key().labels().count(), 0, "no labels");
            match value {
                DebugValue::Gauge(v) => v.into_inner(),
                other => panic!("{GAUGE} is not a gauge: {other:?}"),
            }
        })
        .collect()
}

fn state(snapshotter: &Snapshotter) -> f64 {
    match gauges(snapshotter).as_slice() {
        [v] => *v,
        more => panic!("{GAUGE} registered {} times: {more:?}", more.len()),
    }
}

// A current-thread runtime: the store, fred's tasks and the test run on the thread whose local
// recorder the gauge is registered with.
#[tokio::test]
async fn the_breaker_state_gauge_follows_every_transition() {
    let Some(server) = RedisServer::start("breaker_state_gauge") else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let store = RedisStore::builder(&server.url())
        .command_timeout(Duration::from_millis(100))
        .breaker(2, COOLDOWN)
        .metrics_namespace("app")
        .require_connection(true)
        .connect()
        .await
        .expect("connect");
    assert_eq!(state(&snapshotter), 0.0, "closed, registered at connect");
    store.ping().await.expect("Redis answers");

    server.freeze();
    assert!(store.ping().await.is_err());
    assert_eq!(state(&snapshotter), 0.0, "one failure of two");
    assert!(store.ping().await.is_err());
    assert_eq!(store.stats().breaker, BreakerState::Open);
    assert_eq!(state(&snapshotter), 2.0, "open");
    assert!(store.ping().await.is_err(), "fails fast");

    // After the cool-down one call probes; while it waits on the frozen Redis, half-open.
    tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await;
    let probe = tokio::spawn({
        let store = store.clone();
        async move { store.ping().await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(store.stats().breaker, BreakerState::HalfOpen);
    assert_eq!(
        state(&snapshotter),
        1.0,
        "half-open while the probe is in flight"
    );
    assert!(probe.await.expect("probe task").is_err());
    assert_eq!(state(&snapshotter), 2.0, "the failed probe reopens it");

    server.thaw();
    tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await;
    // The probe sets half-open (1) as it is admitted, then closed as Redis answers.
    store.ping().await.expect("the probe reaches Redis");
    assert_eq!(store.stats().breaker, BreakerState::Closed);
    assert_eq!(state(&snapshotter), 0.0, "closed again");
}
