//! Keys see the path the client sent, not the one axum hands a nested router after stripping
//! its mount prefix: two mounts of one inner path never share an entry, and every API that names
//! an entry (`key_for`, `invalidate`) agrees with the key the layer derives.

mod common;

use std::time::Duration;

use axum::extract::OriginalUri;
use axum::http::header;
use axum::routing::{get as route_get, MethodRouter};
use axum::Router;
use common::*;
use tower::ServiceBuilder;
use tower_response_cache::{Entry, Store};

const TTL: Duration = Duration::from_secs(60);

/// A GET handler answering `body`, counting its calls. It also gives a lifetime, so the
/// app-wide layer stores it when no route layer does.
fn counted(body: &'static str, calls: &Calls) -> MethodRouter {
    let c = calls.clone();
    route_get(move || {
        c.bump();
        async move { ([(header::CACHE_CONTROL, "max-age=60")], body) }
    })
}

/// Each `(path, body)` asked twice: first a stored miss with the handler's body, then a hit
/// with the same body.
async fn misses_then_hits(app: &Router, expected: &[(&str, &str)]) {
    for (path, body) in expected {
        let r = send(app, get(path)).await;
        assert_eq!((r.text(), r.cache_status()), (*body, MISS), "first {path}");
    }
    for (path, body) in expected {
        let r = send(app, get(path)).await;
        assert_eq!(
            (r.text(), r.cache_status()),
            (*body, hit(60).as_str()),
            "again {path}"
        );
    }
}

#[tokio::test]
async fn two_mounts_of_one_inner_path_keep_their_own_entries() {
    let fx = Fixture::new();
    let (c1, c2) = (Calls::default(), Calls::default());
    let v1 = Router::new().route("/users", counted("v1 users", &c1).layer(fx.cache.ttl(TTL)));
    let v2 = Router::new().route("/users", counted("v2 users", &c2).layer(fx.cache.ttl(TTL)));
    let app = Router::new().nest("/v1", v1).nest("/v2", v2);
    misses_then_hits(
        &app,
        &[("/v1/users", "v1 users"), ("/v2/users", "v2 users")],
    )
    .await;
    assert_eq!((c1.get(), c2.get()), (1, 1));
    assert_eq!(fx.entries(), 2);

    // One layer value on both mounts, as an app that names its cache setting once has it: the
    // per-thread key memo of that layer sees both mounts too.
    let shared = fx.cache.ttl(TTL);
    let v3 = Router::new().route("/users", counted("v3 users", &c1).layer(shared.clone()));
    let v4 = Router::new().route("/users", counted("v4 users", &c2).layer(shared));
    let app = Router::new().nest("/v3", v3).nest("/v4", v4);
    misses_then_hits(
        &app,
        &[("/v3/users", "v3 users"), ("/v4/users", "v4 users")],
    )
    .await;
    assert_eq!((c1.get(), c2.get()), (2, 2));
}

#[tokio::test]
async fn a_mount_and_a_top_level_route_of_one_inner_path_keep_their_own_entries() {
    let fx = Fixture::new();
    let (public, admin) = (Calls::default(), Calls::default());
    let admin_router = Router::new().route(
        "/items",
        counted("admin items", &admin).layer(fx.cache.ttl(TTL)),
    );
    let app = Router::new()
        .route(
            "/items",
            counted("public items", &public).layer(fx.cache.ttl(TTL)),
        )
        .nest("/admin", admin_router);
    // The nested one first, then the other way round: neither may answer for the other.
    misses_then_hits(
        &app,
        &[("/admin/items", "admin items"), ("/items", "public items")],
    )
    .await;
    let fx = Fixture::new();
    let admin_router = Router::new().route(
        "/items",
        counted("admin items", &admin).layer(fx.cache.ttl(TTL)),
    );
    let app = Router::new()
        .route(
            "/items",
            counted("public items", &public).layer(fx.cache.ttl(TTL)),
        )
        .nest("/admin", admin_router);
    misses_then_hits(
        &app,
        &[("/items", "public items"), ("/admin/items", "admin items")],
    )
    .await;
    assert_eq!((public.get(), admin.get()), (2, 2));
}

#[tokio::test]
async fn nest_service_mounts_keep_their_own_entries() {
    let fx = Fixture::new();
    let (ca, cb) = (Calls::default(), Calls::default());
    let service = |body: &'static str, calls: &Calls| {
        let c = calls.clone();
        ServiceBuilder::new()
            .layer(fx.cache.ttl(TTL))
            .service(tower::service_fn(
                move |_req: http::Request<axum::body::Body>| {
                    c.bump();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(body.to_owned()))
                    }
                },
            ))
    };
    let app = Router::new()
        .nest_service("/a", service("service a", &ca))
        .nest_service("/b", service("service b", &cb));
    misses_then_hits(&app, &[("/a/doc", "service a"), ("/b/doc", "service b")]).await;
    assert_eq!((ca.get(), cb.get()), (1, 1));
}

#[tokio::test]
async fn merged_routers_with_mounts_keep_their_own_entries() {
    let fx = Fixture::new();
    let calls = [Calls::default(), Calls::default(), Calls::default()];
    let mount = |prefix: &str, body: &'static str, calls: &Calls| {
        let inner = Router::new().route("/users", counted(body, calls).layer(fx.cache.ttl(TTL)));
        Router::new().nest(prefix, inner)
    };
    let top = Router::new().route(
        "/users",
        counted("top users", &calls[2]).layer(fx.cache.ttl(TTL)),
    );
    let app = Router::new()
        .merge(mount("/v1", "v1 users", &calls[0]))
        .merge(mount("/v2", "v2 users", &calls[1]))
        .merge(top);
    misses_then_hits(
        &app,
        &[
            ("/v1/users", "v1 users"),
            ("/v2/users", "v2 users"),
            ("/users", "top users"),
        ],
    )
    .await;
    assert_eq!(calls.iter().map(Calls::get).sum::<usize>(), 3);
}

#[tokio::test]
async fn a_layer_around_a_nested_router_and_one_inside_it_keep_their_own_entries() {
    let fx = Fixture::new();
    let (outer, inner) = (Calls::default(), Calls::default());
    // `/x`: the layer wraps the whole nested router; `/y`: a route layer inside it.
    let x = Router::new()
        .route("/users", counted("x users", &outer))
        .layer(fx.cache.ttl(TTL));
    let y = Router::new().route(
        "/users",
        counted("y users", &inner).layer(fx.cache.ttl(TTL)),
    );
    let app = Router::new().nest("/x", x).nest("/y", y);
    misses_then_hits(&app, &[("/x/users", "x users"), ("/y/users", "y users")]).await;
    assert_eq!((outer.get(), inner.get()), (1, 1));
}

#[tokio::test]
async fn route_layers_in_two_mounts_keep_their_own_entries() {
    let fx = Fixture::new();
    let (c1, c2) = (Calls::default(), Calls::default());
    let mount = |body: &'static str, calls: &Calls| {
        Router::new()
            .route("/users", counted(body, calls))
            .route_layer(fx.cache.ttl(TTL))
    };
    let app = Router::new()
        .nest("/v1", mount("v1 users", &c1))
        .nest("/v2", mount("v2 users", &c2));
    misses_then_hits(
        &app,
        &[("/v1/users", "v1 users"), ("/v2/users", "v2 users")],
    )
    .await;
    assert_eq!((c1.get(), c2.get()), (1, 1));
}

#[tokio::test]
async fn the_app_wide_layer_over_every_kind_of_mount_keeps_their_entries_apart() {
    let fx = Fixture::new();
    let calls: Vec<Calls> = (0..8).map(|_| Calls::default()).collect();
    let cache = &fx.cache;
    let svc = |body: &'static str, calls: &Calls| {
        let c = calls.clone();
        tower::service_fn(move |_req: http::Request<axum::body::Body>| {
            c.bump();
            async move {
                let mut res = http::Response::new(body.to_owned());
                res.headers_mut()
                    .insert(header::CACHE_CONTROL, "max-age=60".parse().unwrap());
                Ok::<_, std::convert::Infallible>(res)
            }
        })
    };
    let app = Router::new()
        // Only the app-wide layer: two mounts and a top-level route of one inner path.
        .route("/users", counted("top users", &calls[0]))
        .nest(
            "/p",
            Router::new().route("/users", counted("p users", &calls[1])),
        )
        .nest(
            "/q",
            Router::new().route("/users", counted("q users", &calls[2])),
        )
        // A route layer inside a mount, and a layer around a whole mount.
        .nest(
            "/r",
            Router::new().route(
                "/users",
                counted("r users", &calls[3]).layer(cache.ttl(TTL)),
            ),
        )
        .nest(
            "/s",
            Router::new()
                .route("/users", counted("s users", &calls[4]))
                .layer(cache.ttl(TTL)),
        )
        .nest(
            "/t",
            Router::new()
                .route("/users", counted("t users", &calls[5]))
                .route_layer(cache.ttl(TTL)),
        )
        .nest_service("/u", svc("u users", &calls[6]))
        .merge(Router::new().nest(
            "/w",
            Router::new().route("/users", counted("w users", &calls[7])),
        ))
        .layer(cache.layer());
    let expected = [
        ("/users", "top users"),
        ("/p/users", "p users"),
        ("/q/users", "q users"),
        ("/r/users", "r users"),
        ("/s/users", "s users"),
        ("/t/users", "t users"),
        ("/u/users", "u users"),
        ("/w/users", "w users"),
    ];
    misses_then_hits(&app, &expected).await;
    assert!(calls.iter().all(|c| c.get() == 1));
    assert_eq!(fx.entries(), expected.len() as u64);
}

#[tokio::test]
async fn key_for_and_invalidate_name_the_nested_entry() {
    let fx = Fixture::new();
    let (c1, c2) = (Calls::default(), Calls::default());
    let layer = fx.cache.ttl(TTL);
    let v1 = Router::new().route("/users", counted("v1 users", &c1).layer(layer.clone()));
    let v2 = Router::new().route("/users", counted("v2 users", &c2).layer(layer.clone()));
    let app = Router::new().nest("/v1", v1).nest("/v2", v2);
    misses_then_hits(
        &app,
        &[("/v1/users", "v1 users"), ("/v2/users", "v2 users")],
    )
    .await;

    // As the client sent it, and as axum hands it to a handler inside the mount.
    let plain = get("/v2/users");
    let mut nested = get("/users");
    nested
        .extensions_mut()
        .insert(OriginalUri("/v2/users".parse().unwrap()));
    let key = layer.key_for(&plain);
    assert_eq!(layer.key_for(&nested), key);
    match fx.store.get(&key).await.unwrap() {
        Some(Entry::Response(r)) => assert_eq!(&r.body()[..], b"v2 users"),
        other => panic!("the layer stored nothing under key_for: {other:?}"),
    }
    assert_ne!(layer.key_for(&get("/v1/users")), key);
    assert!(
        fx.store
            .get(&layer.key_for(&get("/users")))
            .await
            .unwrap()
            .is_none(),
        "nothing is stored under the stripped path"
    );

    assert_eq!(fx.cache.invalidate(&key).await.unwrap(), 1);
    let r = send(&app, get("/v2/users")).await;
    assert_eq!((r.text(), r.cache_status()), ("v2 users", MISS));
    assert_eq!(c2.get(), 2, "the handler runs again after invalidate");
    let r = send(&app, get("/v1/users")).await;
    assert_eq!((r.text(), r.cache_status()), ("v1 users", hit(60).as_str()));
    assert_eq!(c1.get(), 1);
}
