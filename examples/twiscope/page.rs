//! `GET /platforms/{platform}`: an HTML page assembled per request from two panels. Each panel
//! is built by its own function so that each can be cached on its own: the stats panel as an
//! HTML fragment, the top-5 panel's data as a value (the guide's levels 2 and 3).

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::db::{DbError, Influencer, PlatformStats, PLATFORMS};
use crate::i18n::Lang;
use crate::routes::{
    capitalised, known_platform, platform_index, platform_tag, ApiError, AppState,
};

/// How long the stats panel is cached as a fragment (the guide's level 2).
pub(crate) const STATS_PANEL_TTL: Duration = Duration::from_secs(10 * 60);
/// How long the top-5 list is cached as a value (the guide's level 3).
pub(crate) const TOP_INFLUENCERS_TTL: Duration = Duration::from_secs(60);
/// How many influencers the page lists.
const TOP_N: u32 = 5;

/// `GET /platforms/{platform}`: the page. Never stored whole (`Cache-Control: no-cache`): it
/// is rendered per request from its panels.
pub(crate) async fn platform_page(
    State(s): State<AppState>,
    Path(platform): Path<String>,
) -> Result<Response, ApiError> {
    let platform = PLATFORMS[platform_index(known_platform(&platform)?)];
    let stats = stats_panel(&s, platform).await;
    let top = render_top_panel(&top_influencers_data(&s, platform).await);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        render_page(platform, &stats, &top),
    )
        .into_response())
}

/// The stats panel of `platform`, as an HTML fragment (one query set, then rendering), cached
/// as the fragment `platform_stats` varying on the platform, tagged `platform:{platform}` so a
/// write invalidates it. A database error renders an "unavailable" panel (logged) that is not
/// cached: the next request tries again.
pub(crate) async fn stats_panel(state: &AppState, platform: &'static str) -> String {
    let id = known_id(platform);
    let db = state.db.clone();
    let render = || async move {
        let stats = db.run(move |sql| sql.platform_stats(id)).await?;
        Ok::<_, DbError>(render_stats_panel(platform, &stats))
    };
    let panel = match &state.cache {
        Some(cache) => {
            let tag = platform_tag(platform);
            cache
                .try_fragment_tagged(
                    "platform_stats",
                    &[platform],
                    STATS_PANEL_TTL,
                    &[&tag],
                    render,
                )
                .await
        }
        None => render().await,
    };
    panel.unwrap_or_else(|e| {
        eprintln!("twiscope: stats panel of {platform}: {e}");
        unavailable_panel("stats", "Statistics")
    })
}

/// The top `TOP_N` influencers of `platform` by engagement: the data of the top panel, cached
/// as the value `top_influencers:{platform}` (the guide's `get_top_influencers`), tagged
/// `platform:{platform}`. A database error is an empty list (logged), not cached.
pub(crate) async fn top_influencers_data(
    state: &AppState,
    platform: &'static str,
) -> Vec<Influencer> {
    let id = known_id(platform);
    let query = || state.db.top_influencers(id, TOP_N);
    let rows = match &state.cache {
        Some(cache) => {
            let (key, tag) = (
                format!("top_influencers:{platform}"),
                platform_tag(platform),
            );
            cache
                .try_get_or_insert_with_tags(&key, TOP_INFLUENCERS_TTL, &[&tag], query)
                .await
        }
        None => query().await,
    };
    rows.unwrap_or_else(|e| {
        eprintln!("twiscope: top influencers of {platform}: {e}");
        Vec::new()
    })
}

/// The id of a platform name taken from `PLATFORMS`.
fn known_id(platform: &str) -> i64 {
    crate::db::platform_id(platform).unwrap_or(0)
}

/// The stats panel: totals and the top hashtags, labelled in English (the page has one
/// language, so the fragment varies on the platform alone).
pub(crate) fn render_stats_panel(platform: &str, stats: &PlatformStats) -> String {
    let labels = Lang::En.labels();
    let per_post = stats.engagement_per_post_centi();
    let mut html = String::with_capacity(1024);
    let _ = write!(
        html,
        "<section class=\"panel\" id=\"stats\">\n<h2>{}</h2>\n<dl>\n",
        escape(&(labels.title)(&capitalised(platform)))
    );
    for (label, value) in [
        (labels.influencers, stats.influencers.to_string()),
        (labels.followers, stats.followers.to_string()),
        (labels.posts, stats.posts.to_string()),
        (labels.engagement, stats.engagement.to_string()),
        (
            labels.engagement_per_post,
            format!("{}.{:02}", per_post / 100, per_post % 100),
        ),
    ] {
        let _ = writeln!(
            html,
            "<dt>{}</dt><dd>{}</dd>",
            escape(label),
            escape(&value)
        );
    }
    let _ = write!(
        html,
        "</dl>\n<h3>{}</h3>\n<ol>\n",
        escape(labels.top_hashtags)
    );
    for tag in &stats.top_hashtags {
        let _ = writeln!(
            html,
            "<li>{} <span class=\"count\">{}</span></li>",
            escape(&tag.tag),
            tag.mentions
        );
    }
    html.push_str("</ol>\n</section>\n");
    html
}

/// The top influencers panel.
pub(crate) fn render_top_panel(rows: &[Influencer]) -> String {
    let mut html = String::with_capacity(1024);
    let _ = write!(
        html,
        "<section class=\"panel\" id=\"top-influencers\">\n<h2>Top {TOP_N} influencers</h2>\n<ol>\n"
    );
    for row in rows {
        let _ = writeln!(
            html,
            "<li><span class=\"name\">{}</span> <span class=\"username\">@{}</span>: \
             engagement {}, followers {}, posts {}</li>",
            escape(&row.display_name),
            escape(&row.username),
            row.engagement,
            row.followers,
            row.posts
        );
    }
    html.push_str("</ol>\n</section>\n");
    html
}

fn unavailable_panel(id: &str, title: &str) -> String {
    format!(
        "<section class=\"panel\" id=\"{}\">\n<h2>{}</h2>\n<p>Unavailable right now.</p>\n</section>\n",
        escape(id),
        escape(title)
    )
}

/// The page around its panels (already HTML).
fn render_page(platform: &str, stats_panel: &str, top_panel: &str) -> String {
    let name = escape(&capitalised(platform));
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{name} · twiscope</title>\n</head>\n<body>\n<h1>{name}</h1>\n\
         {stats_panel}{top_panel}</body>\n</html>\n"
    )
}

/// `text` with the five characters that mean something in HTML (text or attribute) escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        let panel = render_top_panel(&[Influencer {
            id: 1,
            username: "a".into(),
            display_name: "<b>".into(),
            followers: 2,
            posts: 3,
            engagement: 4,
        }]);
        assert!(
            panel.contains("&lt;b&gt;") && !panel.contains("<b>"),
            "{panel}"
        );
    }
}
