//! The write path: recording a post, creating or updating its influencer. The one query
//! that changes what the cached pages show.

use rusqlite::{params, Transaction, TransactionBehavior};

use super::{DbError, Influencer, Sql};

impl Sql<'_> {
    /// Records one post's engagement for `username` on a platform, creating the influencer on
    /// first sight; `profile` sets their display name and follower count where given (a new
    /// influencer defaults to their username and 0). One `IMMEDIATE` transaction: it takes the
    /// write lock before reading, so a concurrent writer in another process makes it wait
    /// rather than fail.
    pub(crate) fn record_engagement(
        &self,
        platform: i64,
        username: &str,
        profile: &NewProfile,
        engagement: i64,
    ) -> Result<Recorded, DbError> {
        // `new_unchecked` takes `&Connection`; the mutex already makes us the only user.
        let tx = Transaction::new_unchecked(self.conn, TransactionBehavior::Immediate)?;
        let existing = self.row(
            "SELECT id FROM influencers WHERE platform_id = ?1 AND username = ?2",
            params![platform, username],
            |r| r.get(0),
        )?;
        let (influencer_id, created_influencer) = match existing {
            Some(id) => {
                if profile.display_name.is_some() || profile.followers.is_some() {
                    self.insert(
                        "UPDATE influencers SET display_name = COALESCE(?2, display_name),
                                                followers = COALESCE(?3, followers)
                          WHERE id = ?1",
                        params![id, profile.display_name, profile.followers],
                    )?;
                }
                (id, false)
            }
            None => {
                let id = self.insert(
                    "INSERT INTO influencers (platform_id, username, display_name, followers)
                     VALUES (?1, ?2, COALESCE(?3, ?2), COALESCE(?4, 0))",
                    params![platform, username, profile.display_name, profile.followers],
                )?;
                (id, true)
            }
        };
        let post_id = self.insert(
            "INSERT INTO posts (influencer_id, engagement) VALUES (?1, ?2)",
            params![influencer_id, engagement],
        )?;
        let influencer = self
            .influencer(influencer_id)?
            .ok_or_else(|| DbError::new(format!("influencer {influencer_id} vanished")))?;
        tx.commit()?;
        Ok(Recorded {
            influencer,
            created_influencer,
            post_id,
        })
    }

    /// One influencer with their totals.
    fn influencer(&self, id: i64) -> Result<Option<Influencer>, DbError> {
        self.row(
            "SELECT i.id, i.username, i.display_name, i.followers,
                    COUNT(p.id), COALESCE(SUM(p.engagement), 0)
               FROM influencers i LEFT JOIN posts p ON p.influencer_id = i.id
              WHERE i.id = ?1
              GROUP BY i.id",
            [id],
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
}

/// What a write may set on an influencer besides their posts; `None` leaves it as it is.
#[derive(Debug, Default)]
pub(crate) struct NewProfile {
    pub(crate) display_name: Option<String>,
    pub(crate) followers: Option<i64>,
}

/// The outcome of recording engagement: the influencer as they now are.
#[derive(Debug)]
pub(crate) struct Recorded {
    pub(crate) influencer: Influencer,
    pub(crate) created_influencer: bool,
    pub(crate) post_id: i64,
}
