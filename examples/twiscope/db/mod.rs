//! The SQLite database: schema, deterministic seed data, and every query the handlers run,
//! each one counted for `twiscope_db_queries_total`.

mod open;
mod write;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Params, Row};
use serde::{Deserialize, Serialize};

pub(crate) use write::NewProfile;

/// The platforms, in id order (`platforms.id` is the index plus one).
pub(crate) const PLATFORMS: [&str; 3] = ["twitter", "mastodon", "bluesky"];

/// The id of a platform by name, without asking the database: the set is fixed.
pub(crate) fn platform_id(name: &str) -> Option<i64> {
    PLATFORMS
        .iter()
        .position(|p| *p == name)
        .and_then(|i| i64::try_from(i + 1).ok())
}

fn platform_name(id: i64) -> &'static str {
    usize::try_from(id - 1)
        .ok()
        .and_then(|i| PLATFORMS.get(i))
        .copied()
        .unwrap_or("unknown")
}

/// How long a request's statement waits for another process's write to a shared file.
const QUERY_WAIT: Duration = Duration::from_secs(5);

/// A handle to the database; cheap to clone.
///
/// One connection behind a std `Mutex`, used only from `spawn_blocking` threads: rusqlite's
/// `Connection` is `Send` but not `Sync`, an in-memory database lives and dies with its one
/// connection, and the lock is never held across an `.await`. Queries queue on it, which is
/// the point of the example: the cache keeps requests away from this queue. With `--db`, each
/// process has its own connection to the shared file; WAL mode lets one process write while
/// the others read.
#[derive(Clone)]
pub(crate) struct Db {
    shared: Arc<Shared>,
}

struct Shared {
    conn: Mutex<Connection>,
    queries: AtomicU64,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("queries", &self.queries())
            .finish_non_exhaustive()
    }
}

/// What opening the database found.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Opened {
    /// It was empty (always, in memory) and now holds the seed data.
    Seeded(SeedStats),
    /// A shared file another start had seeded; left as it is.
    Existing { influencers: i64, posts: i64 },
}

/// What the seed produced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeedStats {
    pub(crate) influencers: u64,
    pub(crate) posts: u64,
    pub(crate) post_tags: u64,
}

/// A failed query, or a worker thread that died running it.
#[derive(Debug)]
pub(crate) struct DbError {
    message: String,
    /// SQLite said `SQLITE_BUSY`: another connection holds a lock.
    busy: bool,
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "database: {}", self.message)
    }
}

impl DbError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            busy: false,
        }
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        Self {
            busy: e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy),
            message: e.to_string(),
        }
    }
}

impl Db {
    /// The shared SQLite file at `path` (created if missing), or a private in-memory database
    /// for `None`; seeded with `scale` of the full data set (1.0: 10 000 influencers, 200 000
    /// posts) if empty. The same scale always yields the same rows.
    ///
    /// Safe when several processes open one new file at once: the emptiness check and the
    /// seed run in one `IMMEDIATE` transaction, so exactly one of them seeds and the others
    /// wait for its lock (up to [`OPEN_WAIT`]), then find the file seeded.
    pub(crate) fn open(path: Option<&Path>, scale: f64) -> Result<(Self, Opened), DbError> {
        let (conn, seeded) = open::connect(path, scale)?;
        let opened = match seeded {
            Some(stats) => Opened::Seeded(stats),
            None => {
                let (influencers, posts) = conn.query_row(
                    "SELECT (SELECT COUNT(*) FROM influencers), (SELECT COUNT(*) FROM posts)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                Opened::Existing { influencers, posts }
            }
        };
        conn.busy_timeout(QUERY_WAIT)?;
        let db = Self {
            shared: Arc::new(Shared {
                conn: Mutex::new(conn),
                queries: AtomicU64::new(0),
            }),
        };
        Ok((db, opened))
    }

    /// SQL statements run by request handlers since start (seeding excluded).
    pub(crate) fn queries(&self) -> u64 {
        self.shared.queries.load(Ordering::Relaxed)
    }

    /// The `limit` influencers of `platform` with the most summed engagement (the guide's
    /// `get_top_influencers`): one query, on a blocking thread.
    pub(crate) async fn top_influencers(
        &self,
        platform: i64,
        limit: u32,
    ) -> Result<Vec<Influencer>, DbError> {
        self.run(move |sql| sql.top_influencers(platform, limit))
            .await
    }

    /// Runs `f` on a blocking thread with the connection.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Sql<'_>) -> Result<T, DbError> + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let conn = shared.conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&Sql {
                conn: &conn,
                queries: &shared.queries,
            })
        })
        .await
        .map_err(|e| DbError::new(format!("query worker failed: {e}")))?
    }
}

/// The connection as the handlers see it: every statement goes through here and is counted.
pub(crate) struct Sql<'a> {
    conn: &'a Connection,
    queries: &'a AtomicU64,
}

impl Sql<'_> {
    fn count(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    fn row<T>(
        &self,
        sql: &str,
        params: impl Params,
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, DbError> {
        self.count();
        let mut stmt = self.conn.prepare_cached(sql)?;
        Ok(stmt.query_row(params, map).optional()?)
    }

    fn rows<T>(
        &self,
        sql: &str,
        params: impl Params,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, DbError> {
        self.count();
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, map)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn insert(&self, sql: &str, params: impl Params) -> Result<i64, DbError> {
        self.count();
        self.conn.prepare_cached(sql)?.execute(params)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The 20 most mentioned hashtags across all platforms.
    pub(crate) fn trending(&self) -> Result<Vec<Hashtag>, DbError> {
        self.rows(
            "SELECT t.name, COUNT(*) AS mentions
               FROM post_tags pt JOIN tags t ON t.id = pt.tag_id
              GROUP BY pt.tag_id
              ORDER BY mentions DESC, t.name ASC
              LIMIT 20",
            [],
            |r| {
                Ok(Hashtag {
                    tag: r.get(0)?,
                    mentions: r.get(1)?,
                })
            },
        )
    }

    /// The `limit` influencers of a platform with the most summed engagement.
    pub(crate) fn top_influencers(
        &self,
        platform: i64,
        limit: u32,
    ) -> Result<Vec<Influencer>, DbError> {
        self.rows(
            "SELECT i.id, i.username, i.display_name, i.followers,
                    COUNT(p.id) AS posts, COALESCE(SUM(p.engagement), 0) AS engagement
               FROM influencers i LEFT JOIN posts p ON p.influencer_id = i.id
              WHERE i.platform_id = ?1
              GROUP BY i.id
              ORDER BY engagement DESC, i.id ASC
              LIMIT ?2",
            params![platform, limit],
            |r| {
                Ok(Influencer {
                    id: r.get(0)?,
                    username: r.get(1)?,
                    display_name: r.get(2)?,
                    followers: r.get(3)?,
                    posts: r.get(4)?,
                    engagement: r.get(5)?,
                })
            },
        )
    }

    /// A platform's totals and its five most used hashtags.
    pub(crate) fn platform_stats(&self, platform: i64) -> Result<PlatformStats, DbError> {
        let (influencers, followers) = self
            .row(
                "SELECT COUNT(*), COALESCE(SUM(followers), 0)
                   FROM influencers WHERE platform_id = ?1",
                [platform],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .unwrap_or((0, 0));
        let (posts, engagement) = self
            .row(
                "SELECT COUNT(*), COALESCE(SUM(p.engagement), 0)
                   FROM posts p JOIN influencers i ON i.id = p.influencer_id
                  WHERE i.platform_id = ?1",
                [platform],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .unwrap_or((0, 0));
        let top_hashtags = self.rows(
            "SELECT t.name, COUNT(*) AS mentions
               FROM influencers i
               JOIN posts p ON p.influencer_id = i.id
               JOIN post_tags pt ON pt.post_id = p.id
               JOIN tags t ON t.id = pt.tag_id
              WHERE i.platform_id = ?1
              GROUP BY pt.tag_id
              ORDER BY mentions DESC, t.name ASC
              LIMIT 5",
            [platform],
            |r| {
                Ok(Hashtag {
                    tag: r.get(0)?,
                    mentions: r.get(1)?,
                })
            },
        )?;
        Ok(PlatformStats {
            influencers,
            followers,
            posts,
            engagement,
            top_hashtags,
        })
    }

    /// One influencer's profile and totals, if the id exists.
    pub(crate) fn profile(&self, id: i64) -> Result<Option<Profile>, DbError> {
        self.row(
            "SELECT i.id, i.platform_id, i.username, i.display_name, i.followers,
                    COUNT(p.id), COALESCE(SUM(p.engagement), 0)
               FROM influencers i LEFT JOIN posts p ON p.influencer_id = i.id
              WHERE i.id = ?1
              GROUP BY i.id",
            [id],
            |r| {
                Ok(Profile {
                    id: r.get(0)?,
                    platform: platform_name(r.get(1)?),
                    username: r.get(2)?,
                    display_name: r.get(3)?,
                    followers: r.get(4)?,
                    posts: r.get(5)?,
                    engagement: r.get(6)?,
                })
            },
        )
    }
}

/// A hashtag and how many posts mention it.
#[derive(Debug, Serialize)]
pub(crate) struct Hashtag {
    pub(crate) tag: String,
    pub(crate) mentions: i64,
}

/// An influencer with their totals. `Deserialize` and `Clone` so that a list of them can be
/// kept in the cache as a value (the page's top-5 panel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Influencer {
    pub(crate) id: i64,
    pub(crate) username: String,
    pub(crate) display_name: String,
    pub(crate) followers: i64,
    pub(crate) posts: i64,
    pub(crate) engagement: i64,
}

/// A platform's totals.
#[derive(Debug)]
pub(crate) struct PlatformStats {
    pub(crate) influencers: i64,
    pub(crate) followers: i64,
    pub(crate) posts: i64,
    pub(crate) engagement: i64,
    pub(crate) top_hashtags: Vec<Hashtag>,
}

impl PlatformStats {
    /// Engagement per post in hundredths, rounded: computed in integers so that the text
    /// never depends on float formatting.
    pub(crate) fn engagement_per_post_centi(&self) -> i64 {
        if self.posts == 0 {
            0
        } else {
            (self.engagement * 100 + self.posts / 2) / self.posts
        }
    }
}

/// What `/me` shows.
#[derive(Debug, Serialize)]
pub(crate) struct Profile {
    pub(crate) id: i64,
    pub(crate) platform: &'static str,
    pub(crate) username: String,
    pub(crate) display_name: String,
    pub(crate) followers: i64,
    pub(crate) posts: i64,
    pub(crate) engagement: i64,
}
