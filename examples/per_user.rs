//! Caching per user: each caller gets their own cached copy, keyed by who they are. Without
//! `per_user`, requests carrying `Authorization` bypass the cache (one user's page must never
//! reach another).
//!
//! ```text
//! cargo run --example per_user
//! curl -si -H 'Authorization: Bearer alice' http://127.0.0.1:3000/me   # stored for alice
//! curl -si -H 'Authorization: Bearer alice' http://127.0.0.1:3000/me   # hit
//! curl -si -H 'Authorization: Bearer bob'   http://127.0.0.1:3000/me   # bob's own miss
//! ```

use std::time::Duration;

use axum::{extract::Request, http::header, middleware::Next, response::Response, routing::get};
use axum::{Extension, Router};
use tower_response_cache::ResponseCache;

/// Who the caller is, as an authentication layer established it.
#[derive(Clone)]
struct User(String);

#[tokio::main]
async fn main() {
    let cache = ResponseCache::builder().key_prefix("per_user").build();
    let profile = cache
        .ttl(Duration::from_secs(60))
        // The identity comes from the verified user the auth layer put in the extensions, not
        // from the raw header: it is hashed into the key, and `None` means "not per user".
        .per_user(|req: &http::request::Parts| req.extensions.get::<User>().map(|u| u.0.clone()));
    let app = Router::new()
        .route("/me", get(me).layer(profile))
        // Runs before the cache (outer layer), so the cache sees the user it established.
        .layer(axum::middleware::from_fn(authenticate));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .unwrap();
    println!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}

/// A stand-in for real authentication: trusts any bearer token as the user's name.
async fn authenticate(mut req: Request, next: Next) -> Response {
    let user = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|name| User(name.to_owned()));
    if let Some(user) = user {
        req.extensions_mut().insert(user);
    }
    next.run(req).await
}

async fn me(user: Option<Extension<User>>) -> String {
    match user {
        Some(Extension(User(name))) => format!(r#"{{"user": "{name}"}}"#),
        None => r#"{"user": null}"#.to_owned(),
    }
}
