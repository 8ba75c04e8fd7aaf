//! The server behind `benches/http_load.sh`: one bare handler and the same handler cached, so a
//! load generator can compare them in one run, plus a miss-heavy route and its uncached origin.
//!
//! ```text
//! cargo run --release -p trc-benches --bin bench_server -- --listen 127.0.0.1:0
//! ```
//!
//! Routes (every body is 2048 bytes of JSON, `content-type: application/json`):
//!
//! | route | what |
//! |---|---|
//! | `GET /bare` | fixed bytes, no cache layer |
//! | `GET /cached` | the same handler behind `cache.ttl(1 h)`: a hit after the first request |
//! | `GET /miss?n=N` | a body built per request (it names `N`) behind `cache.ttl(1 h)`: each distinct query is a miss that stores |
//! | `GET /origin?n=N` | the same per-request handler with no cache layer |
//! | `POST /app/post` | the fixed-bytes handler behind the app-wide `cache.layer()`: every request is a bypass (method) |
//! | `GET /stats` | JSON: the memory store's `entry_count` and `weighted_size`, the body bytes it holds, and per-route handler calls with the time between the first and last call |
//!
//! The start-up line names the bound address, so `--listen 127.0.0.1:0` works for scripts.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde::Deserialize;
use tower_response_cache::{MemoryStore, ResponseCache};

/// Every body has exactly this length, so the body bytes cached are `entry_count × BODY_LEN`.
const BODY_LEN: usize = 2048;

/// A JSON array padded with spaces to exactly [`BODY_LEN`] bytes; `n` makes it unique.
fn json_body(n: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(BODY_LEN);
    out.extend_from_slice(b"{\"n\":");
    out.extend_from_slice(
        n.map_or_else(|| "null".to_owned(), |n| n.to_string())
            .as_bytes(),
    );
    out.extend_from_slice(b",\"items\":[");
    let mut i = 0;
    while out.len() < BODY_LEN - 64 {
        if i > 0 {
            out.push(b',');
        }
        let item = format!("{{\"id\":{i},\"name\":\"user{i:05}\",\"score\":{}}}", i * 7);
        out.extend_from_slice(item.as_bytes());
        i += 1;
    }
    out.extend_from_slice(b"]}");
    out.resize(BODY_LEN, b' ');
    out
}

fn json(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Handler calls on one route and when the first and the last happened.
#[derive(Debug, Default)]
struct Calls {
    count: AtomicU64,
    window: Mutex<Option<(Instant, Instant)>>,
}

impl Calls {
    fn record(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        // A std lock, held for two stores and never across an await.
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        *w = Some(w.map_or((now, now), |(first, _)| (first, now)));
    }

    fn json(&self) -> String {
        let count = self.count.load(Ordering::Relaxed);
        let w = *self.window.lock().unwrap_or_else(|e| e.into_inner());
        let secs = w.map_or(0.0, |(first, last)| (last - first).as_secs_f64());
        format!("{{\"calls\":{count},\"first_to_last_secs\":{secs:.6}}}")
    }
}

#[derive(Debug, Clone)]
struct AppState {
    store: MemoryStore,
    miss: Arc<Calls>,
    origin: Arc<Calls>,
}

#[derive(Debug, Deserialize)]
struct N {
    n: Option<u64>,
}

fn per_request(calls: &Calls, n: Option<u64>) -> Response {
    calls.record();
    json(Bytes::from(json_body(n)))
}

async fn stats(State(s): State<AppState>) -> Response {
    let entries = s.store.entry_count();
    let body = format!(
        "{{\"entry_count\":{entries},\"weighted_size\":{},\"body_bytes_cached\":{},\
         \"miss\":{},\"origin\":{}}}\n",
        s.store.weighted_size(),
        entries * BODY_LEN as u64,
        s.miss.json(),
        s.origin.json(),
    );
    json(Bytes::from(body))
}

fn app(store_bytes: u64) -> Router {
    let store = MemoryStore::new(store_bytes);
    let cache = ResponseCache::builder()
        .key_prefix("bench")
        .store(store.clone())
        .build();
    let ttl = Duration::from_secs(3600);
    let fixed = Bytes::from(json_body(None));
    let bare = move || std::future::ready(json(fixed.clone()));
    let state = AppState {
        store,
        miss: Arc::default(),
        origin: Arc::default(),
    };
    Router::new()
        .route("/bare", get(bare.clone()))
        .route("/cached", get(bare.clone()).layer(cache.ttl(ttl)))
        .route(
            "/miss",
            get(|State(s): State<AppState>, Query(q): Query<N>| async move {
                per_request(&s.miss, q.n)
            })
            .layer(cache.ttl(ttl)),
        )
        .route(
            "/origin",
            get(|State(s): State<AppState>, Query(q): Query<N>| async move {
                per_request(&s.origin, q.n)
            }),
        )
        .nest(
            "/app",
            Router::new()
                .route("/post", post(bare))
                .layer(cache.layer()),
        )
        .route("/stats", get(stats))
        .with_state(state)
}

const USAGE: &str = "\
Usage: bench_server [--listen ADDR] [--store-mib N] [--recorder]

  --listen ADDR    where to listen (default 127.0.0.1:3001; port 0 picks a free port)
  --store-mib N    the memory store's capacity in MiB (default 1024: 100k entries fit)
  --recorder       install a `metrics` recorder (metrics-util's DebuggingRecorder) first,
                   so the cache's counters and histograms are recorded, not dropped
";

fn main() -> std::process::ExitCode {
    let mut listen = "127.0.0.1:3001".to_owned();
    let mut store_mib: u64 = 1024;
    let mut recorder = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return std::process::ExitCode::SUCCESS;
            }
            "--recorder" => {
                recorder = true;
                continue;
            }
            "--listen" | "--store-mib" => args.next(),
            _ => None,
        };
        match (arg.as_str(), value) {
            ("--listen", Some(v)) => listen = v,
            ("--store-mib", Some(v)) if v.parse::<u64>().is_ok() => {
                store_mib = v.parse().unwrap_or(store_mib);
            }
            _ => {
                eprint!("bench_server: bad argument '{arg}'\n{USAGE}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    // Before the first request: the cache binds its metric handles when it first sees a route.
    if recorder {
        if let Err(e) = metrics_util::debugging::DebuggingRecorder::new().install() {
            eprintln!("bench_server: cannot install the metrics recorder: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench_server: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bench_server: cannot listen on {listen}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let Ok(addr) = listener.local_addr() else {
            eprintln!("bench_server: cannot read the bound address");
            return std::process::ExitCode::FAILURE;
        };
        let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        // The one start-up line; benches/http_load.sh parses the address out of it.
        println!(
            "bench_server listening on http://{addr} (cpus: {workers}, store: {store_mib} MiB)"
        );
        let _ = std::io::stdout().flush();
        if let Err(e) = axum::serve(listener, app(store_mib * 1024 * 1024)).await {
            eprintln!("bench_server: server error: {e}");
            return std::process::ExitCode::FAILURE;
        }
        std::process::ExitCode::SUCCESS
    })
}
