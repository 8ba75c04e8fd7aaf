//! `POST /influencers/{platform}`: the one write, and where it tells the cache which cached
//! pages, fragments and values it made stale.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::db::{Influencer, NewProfile, PLATFORMS};
use crate::routes::{known_platform, platform_index, platform_tag, ApiError, AppState};

/// The body: `username` and `engagement` are required; `display_name` and `followers` set the
/// influencer's profile (a new one defaults to their username and 0 followers).
#[derive(Deserialize)]
pub(crate) struct NewEngagement {
    username: String,
    engagement: i64,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    followers: Option<i64>,
}

#[derive(Serialize)]
struct Recorded {
    platform: &'static str,
    influencer: RecordedInfluencer,
    post: RecordedPost,
}

/// The influencer as they are after the write, and whether it created them.
#[derive(Serialize)]
struct RecordedInfluencer {
    #[serde(flatten)]
    row: Influencer,
    created: bool,
}

#[derive(Serialize)]
struct RecordedPost {
    id: i64,
    engagement: i64,
}

const MAX_DISPLAY_NAME: usize = 64;
const MAX_FOLLOWERS: i64 = 10_000_000_000;

/// `POST /influencers/{platform}`: records one post's engagement, creating the influencer if
/// new; 201 with the influencer's row. A body that is not JSON is a 400 (415 without
/// `Content-Type: application/json`); JSON with a missing field or a value out of range is a
/// 422 naming the field.
pub(crate) async fn record_engagement(
    State(s): State<AppState>,
    Path(platform): Path<String>,
    body: Result<Json<NewEngagement>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = known_platform(&platform)?;
    let Json(new) = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let invalid = |message| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message);
    let username = new.username.trim().to_ascii_lowercase();
    if username.is_empty()
        || username.len() > 32
        || !username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        return Err(invalid(
            "username must be 1 to 32 characters: letters, digits, '_' or '.'",
        ));
    }
    if !(0..=1_000_000_000).contains(&new.engagement) {
        return Err(invalid(
            "engagement must be an integer from 0 to 1000000000",
        ));
    }
    // Any text (the page escapes it), but one line of it.
    let display_name = new.display_name.map(|d| d.trim().to_owned());
    if display_name.as_deref().is_some_and(|d| {
        d.is_empty() || d.chars().count() > MAX_DISPLAY_NAME || d.chars().any(char::is_control)
    }) {
        return Err(invalid(
            "display_name must be 1 to 64 characters, without control characters",
        ));
    }
    if new
        .followers
        .is_some_and(|f| !(0..=MAX_FOLLOWERS).contains(&f))
    {
        return Err(invalid(
            "followers must be an integer from 0 to 10000000000",
        ));
    }
    let profile = NewProfile {
        display_name,
        followers: new.followers,
    };
    let engagement = new.engagement;
    let recorded =
        s.db.run(move |sql| sql.record_engagement(id, &username, &profile, engagement))
            .await?;
    let platform = PLATFORMS[platform_index(id)];
    after_write(&s, platform).await;
    let body = Recorded {
        platform,
        influencer: RecordedInfluencer {
            row: recorded.influencer,
            created: recorded.created_influencer,
        },
        post: RecordedPost {
            id: recorded.post_id,
            engagement,
        },
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Called after every committed write to `platform`, before the response: tells the cache
/// what is now stale. Every cached page, fragment and value of the platform carries its tag
/// (`platform:{platform}`), so one invalidation reaches them all, in every twiscope sharing the
/// store. A store error is logged, not returned: the write has committed, and the entries
/// expire by their TTL.
pub(crate) async fn after_write(state: &AppState, platform: &'static str) {
    let Some(cache) = &state.cache else { return };
    if let Err(e) = cache.invalidate_tag(&platform_tag(platform)).await {
        eprintln!("twiscope: cannot invalidate the cached pages of {platform}: {e}");
    }
}
