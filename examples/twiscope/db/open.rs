//! Opening the database: a private one in memory, or the file a fleet shares, created and
//! seeded by whichever process comes first.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{DbError, SeedStats};

/// How long opening a shared file waits for other processes: a first start seeds for a second
/// or two (longer on a slow disk) while the others wait for it.
const OPEN_WAIT: Duration = Duration::from_secs(120);

/// A connection to the database at `path` (`None`: a new in-memory one), seeded with `scale`
/// of the data set if it was empty; the stats of that seed, or `None` if it had been seeded.
pub(super) fn connect(
    path: Option<&Path>,
    scale: f64,
) -> Result<(Connection, Option<SeedStats>), DbError> {
    let Some(path) = path else {
        let mut conn = Connection::open_in_memory()?;
        let seeded = crate::seed::seed_if_empty(&mut conn, scale)?;
        return Ok((conn, seeded));
    };
    // SQLite returns SQLITE_BUSY without waiting where waiting could deadlock, which happens
    // while several processes switch one new file to WAL mode at once: start over (a failed
    // seed has rolled back) until the deadline.
    let deadline = Instant::now() + OPEN_WAIT;
    loop {
        let attempt = open_shared(path).and_then(|mut conn| {
            let seeded = crate::seed::seed_if_empty(&mut conn, scale)?;
            Ok((conn, seeded))
        });
        match attempt {
            Err(e) if e.busy && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            done => return done,
        }
    }
}

/// A connection to the shared file at `path`, in WAL mode.
fn open_shared(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open(path)
        .map_err(|e| DbError::new(format!("cannot open {}: {e}", path.display())))?;
    // Set before anything that locks: another process may be switching the new file to WAL
    // or seeding it.
    conn.busy_timeout(OPEN_WAIT)?;
    // Refuse a file that is not ours before changing its journal mode, which writes to it.
    crate::seed::is_seeded(&conn)?;
    // WAL: readers in every process go on while one process writes, and see each commit at
    // their next statement. The mode is stored in the file, so later opens find it set.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(DbError::new(format!(
            "{}: cannot use WAL mode (journal_mode is '{mode}')",
            path.display()
        )));
    }
    // Durable at each checkpoint rather than each commit: what WAL makes safe, and fast.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}
