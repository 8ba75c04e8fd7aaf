//! The twiscope example as a black box: start the built binary on a free loopback port, drive
//! it over real HTTP/1.1, read what it says on stderr, and give it a throwaway `--db` file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::raw_http::{self, Reply};

/// A running twiscope; killed on drop.
pub struct Server {
    child: Child,
    pub addr: String,
    /// Everything it wrote to stderr so far (also echoed to the test's stderr).
    stderr: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example binary next to this test binary.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let bin = dir
        .join("examples")
        .join(format!("twiscope{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --example twiscope` (plain `cargo test` builds it)",
        bin.display()
    );
    bin
}

/// twiscope with `--cache cache` on a free port and a small data set, its environment cleared of
/// the variables that would override the flags.
pub fn twiscope(cache: &str) -> Command {
    let mut command = Command::new(binary());
    command
        .args(["--listen", "127.0.0.1:0", "--cache", cache])
        // A twentieth of the data: the same queries, seeded in a fraction of a second.
        .env("TWISCOPE_SCALE", "0.05")
        .env_remove("CACHE_URL")
        .env_remove("TWISCOPE_LISTEN")
        .env_remove("TWISCOPE_DB");
    command
}

/// Starts twiscope with `--cache cache` on a small data set and an in-memory database, and
/// waits for its start-up line.
pub fn start(cache: &str) -> Server {
    spawn(twiscope(cache), cache)
}

/// The same on the shared database file `db`.
pub fn start_on(cache: &str, db: &TempDb) -> Server {
    let mut command = twiscope(cache);
    command.arg("--db").arg(db.path());
    spawn(command, cache)
}

/// Starts `command` (from [`twiscope`], given `--cache cache`), and waits for its start-up line.
pub fn spawn(mut command: Command, cache: &str) -> Server {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start twiscope");
    let stderr = Arc::new(Mutex::new(String::new()));
    let pipe = child.stderr.take().expect("stderr");
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            eprintln!("{line}");
            let mut text = sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            text.push_str(&line);
            text.push('\n');
        }
    });
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the start-up line");
    let mut server = Server {
        addr: String::new(),
        child,
        stderr,
    };
    assert!(
        !line.is_empty(),
        "twiscope exited before its start-up line (its stderr is above)"
    );
    let rest = line
        .strip_prefix("twiscope listening on http://")
        .unwrap_or_else(|| {
            panic!(
                "unexpected start-up line {line:?} (is {} stale? `cargo build --example twiscope`)",
                binary().display()
            )
        });
    let (addr, store) = rest.trim_end().split_once(' ').expect("address and store");
    assert_eq!(store, format!("(cache: {cache})"));
    server.addr = addr.to_owned();
    server
}

impl Server {
    /// Kills the process (SIGKILL: no graceful shutdown, no lease released) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        raw_http::send_blocking(&self.addr, method, path, headers, body)
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request("GET", path, headers, "")
    }

    /// POSTs the JSON `body` to `path`.
    pub fn post_json(&self, path: &str, body: &str) -> Reply {
        self.request("POST", path, &[("Content-Type", "application/json")], body)
    }

    /// GETs `path` until it is a hit (at most 5 s): a miss's write to Redis follows its response,
    /// so the entry lands a moment after the client has the miss.
    pub fn get_until_hit(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let reply = self.get(path, headers);
            if reply.is_hit() || Instant::now() > deadline {
                return reply;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn db_queries(&self) -> u64 {
        let metrics = self.get("/metrics", &[]);
        assert_eq!(metrics.status, 200);
        metrics
            .body
            .lines()
            .find_map(|l| l.strip_prefix("twiscope_db_queries_total "))
            .expect("twiscope_db_queries_total in /metrics")
            .parse()
            .expect("a number")
    }

    /// The first stderr line containing `needle`, waiting up to 5 s for it: the start-up
    /// diagnostics are written before the start-up line, but read by another thread.
    pub fn stderr_line(&self, needle: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self
                .stderr
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return Some(line.to_owned());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A path for a database file that does not exist yet, in the temp dir; the file and its WAL
/// companions are removed on drop.
pub struct TempDb {
    path: PathBuf,
}

impl TempDb {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "twiscope-{name}-{}-{nanos}-{}.db",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let db = Self { path };
        db.remove();
        db
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove();
    }
}
