//! The schema and the deterministic seed data: a fixed-seed PRNG draws influencers, posts and
//! hashtags with skewed (Zipf-like) popularity, so the same scale always gives the same rows.

use rusqlite::{params, Connection, TransactionBehavior};

use crate::db::{DbError, SeedStats, PLATFORMS};

const SCHEMA: &str = "
CREATE TABLE platforms (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE influencers (
    id           INTEGER PRIMARY KEY,
    platform_id  INTEGER NOT NULL REFERENCES platforms (id),
    username     TEXT NOT NULL,
    display_name TEXT NOT NULL,
    followers    INTEGER NOT NULL,
    UNIQUE (platform_id, username)
);
CREATE TABLE posts (
    id            INTEGER PRIMARY KEY,
    influencer_id INTEGER NOT NULL REFERENCES influencers (id),
    engagement    INTEGER NOT NULL
);
CREATE TABLE tags (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE post_tags (
    post_id INTEGER NOT NULL REFERENCES posts (id),
    tag_id  INTEGER NOT NULL REFERENCES tags (id),
    PRIMARY KEY (post_id, tag_id)
) WITHOUT ROWID;
";

/// Created after the bulk insert (faster than maintaining them row by row). They serve the
/// lookups (a platform's influencers, an influencer's posts); the aggregations still have to
/// read every matching row.
const INDEXES: &str = "
CREATE INDEX posts_by_influencer ON posts (influencer_id, engagement);
ANALYZE;
";

const TOPICS: [&str; 48] = [
    "rust",
    "ai",
    "climate",
    "football",
    "music",
    "travel",
    "food",
    "gaming",
    "art",
    "science",
    "startups",
    "fitness",
    "fashion",
    "photography",
    "books",
    "movies",
    "crypto",
    "design",
    "space",
    "health",
    "coffee",
    "cycling",
    "linux",
    "privacy",
    "opensource",
    "cats",
    "dogs",
    "gardening",
    "chess",
    "history",
    "jazz",
    "anime",
    "running",
    "vegan",
    "elections",
    "tennis",
    "skiing",
    "physics",
    "poetry",
    "podcasts",
    "webdev",
    "databases",
    "security",
    "robotics",
    "architecture",
    "economics",
    "education",
    "ocean",
];
const FORMS: [&str; 3] = ["", "news", "life"];

const ADJECTIVES: [&str; 24] = [
    "quiet", "brave", "lucky", "swift", "sunny", "clever", "wild", "calm", "bold", "merry",
    "noble", "witty", "gentle", "rapid", "cosmic", "urban", "rustic", "silver", "golden",
    "crimson", "electric", "frosty", "misty", "proud",
];
const NOUNS: [&str; 24] = [
    "falcon", "otter", "fox", "panda", "heron", "lynx", "badger", "raven", "tiger", "koala",
    "whale", "wolf", "sparrow", "gecko", "bison", "moose", "owl", "dolphin", "beetle", "crane",
    "yak", "lemur", "marmot", "puffin",
];

/// The tables a twiscope database has.
const TABLES: [&str; 5] = ["platforms", "influencers", "posts", "tags", "post_tags"];

/// Creates the schema and the seed data if the database has no tables yet; `None` if it was
/// already seeded. Check and seed are one `IMMEDIATE` transaction: of several processes opening
/// one new file at once, the first to take the write lock seeds and commits, and the others,
/// waiting on the lock, then see tables and leave them alone.
pub(crate) fn seed_if_empty(
    conn: &mut Connection,
    scale: f64,
) -> Result<Option<SeedStats>, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if is_seeded(&tx)? {
        return Ok(None);
    }
    let stats = seed(&tx, scale)?;
    tx.commit()?;
    Ok(Some(stats))
}

/// Whether the database has twiscope's tables (`false`: no tables at all); an error if it has
/// tables but not those, so that a file given by mistake is refused, not written to.
pub(crate) fn is_seeded(conn: &Connection) -> Result<bool, DbError> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if tables.is_empty() {
        return Ok(false);
    }
    match TABLES.iter().find(|t| !tables.iter().any(|n| n == *t)) {
        Some(missing) => Err(DbError::new(format!(
            "not a twiscope database: it has tables but no '{missing}' table"
        ))),
        None => Ok(true),
    }
}

/// Creates the schema and fills it with `scale` of the full data set, in the caller's
/// transaction.
fn seed(tx: &Connection, scale: f64) -> Result<SeedStats, DbError> {
    let n_influencers = scaled(10_000.0, scale, 30);
    let n_posts = scaled(200_000.0, scale, 300);
    let mut rng = Rng(0x7715_C0DE_2024_0001);

    tx.execute_batch(SCHEMA)?;
    let mut post_tags = 0;
    {
        let mut stmt = tx.prepare("INSERT INTO platforms (id, name) VALUES (?1, ?2)")?;
        for (id, name) in (1_i64..).zip(PLATFORMS) {
            stmt.execute(params![id, name])?;
        }

        // Tag ids are popularity ranks; the names are shuffled so that the ranking is not
        // alphabetical.
        let mut tags: Vec<String> = TOPICS
            .iter()
            .flat_map(|t| FORMS.iter().map(move |f| format!("#{t}{f}")))
            .collect();
        rng.shuffle(&mut tags);
        let mut stmt = tx.prepare("INSERT INTO tags (id, name) VALUES (?1, ?2)")?;
        for (id, name) in (1_i64..).zip(&tags) {
            stmt.execute(params![id, name])?;
        }
        let tag_popularity = Zipf::new(tags.len(), 1.0);

        let mut followers = Vec::with_capacity(n_influencers);
        let mut stmt = tx.prepare(
            "INSERT INTO influencers (id, platform_id, username, display_name, followers)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for id in 1..=n_influencers {
            // twitter 50 %, bluesky 30 %, mastodon 20 %.
            let platform: i64 = match rng.below(10) {
                0..=4 => 1,
                5..=6 => 2,
                _ => 3,
            };
            let adjective = ADJECTIVES[rng.below(ADJECTIVES.len())];
            let noun = NOUNS[rng.below(NOUNS.len())];
            let username = format!("{adjective}_{noun}{id}");
            let display_name = format!("{} {}", capitalise(adjective), capitalise(noun));
            // Log-uniform from 50 to about 1.6 million.
            #[allow(clippy::cast_possible_truncation)]
            let count = (50.0 * 10_f64.powf(rng.unit() * 4.5)) as i64;
            followers.push(count);
            stmt.execute(params![id, platform, username, display_name, count])?;
        }

        // A few influencers write most posts: activity ranks map to shuffled ids.
        let mut by_activity: Vec<usize> = (0..n_influencers).collect();
        rng.shuffle(&mut by_activity);
        let activity = Zipf::new(n_influencers, 0.8);
        let mut post =
            tx.prepare("INSERT INTO posts (id, influencer_id, engagement) VALUES (?1, ?2, ?3)")?;
        let mut tag = tx.prepare("INSERT INTO post_tags (post_id, tag_id) VALUES (?1, ?2)")?;
        let mut chosen = Vec::with_capacity(3);
        for id in 1..=n_posts {
            let author = by_activity[activity.sample(&mut rng)];
            let reach = followers[author] as f64;
            let u = rng.unit();
            #[allow(clippy::cast_possible_truncation)]
            let engagement = (reach * (0.001 + 0.02 * u * u)) as i64 + rng.below(20) as i64;
            post.execute(params![id, author + 1, engagement])?;

            chosen.clear();
            for _ in 0..rng.below(4) {
                let t = tag_popularity.sample(&mut rng) + 1;
                if !chosen.contains(&t) {
                    chosen.push(t);
                    tag.execute(params![id, t])?;
                }
            }
            post_tags += chosen.len() as u64;
        }
    }
    tx.execute_batch(INDEXES)?;
    Ok(SeedStats {
        influencers: n_influencers as u64,
        posts: n_posts as u64,
        post_tags,
    })
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]
fn scaled(full: f64, scale: f64, at_least: usize) -> usize {
    ((full * scale).round() as usize).max(at_least)
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_ascii_uppercase().to_string() + chars.as_str()
    })
}

/// SplitMix64: tiny, fast, and the same sequence on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    #[allow(clippy::cast_precision_loss)]
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1_u64 << 53) as f64
    }

    /// Uniform in `0..n` (the modulo bias is irrelevant here).
    #[allow(clippy::cast_possible_truncation)]
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Draws ranks `0..n` with probability proportional to `1 / (rank + 1)^s`.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    #[allow(clippy::cast_precision_loss)]
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|k| {
                total += 1.0 / (k as f64).powf(s);
                total
            })
            .collect();
        Self { cumulative }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.unit() * total;
        self.cumulative
            .partition_point(|c| *c <= x)
            .min(self.cumulative.len() - 1)
    }
}
