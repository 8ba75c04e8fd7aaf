//! Writes reach every reader: twiscope processes sharing one `--db` file, the POST that writes,
//! and the HTML page that shows what was written. Black box, like `twiscope.rs`: build the
//! example first when filtering (`cargo build --example twiscope`).

use common::twiscope::{start, start_on, twiscope, Server, TempDb};
use serde_json::Value;

mod common;

/// A stat of `/platforms/{platform}/stats` (the JSON route), by key.
fn stat(server: &Server, platform: &str, key: &str) -> i64 {
    let reply = server.get(&format!("/platforms/{platform}/stats"), &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    let body: Value = serde_json::from_str(&reply.body).expect("JSON");
    body["stats"]
        .as_array()
        .and_then(|stats| stats.iter().find(|s| s["key"] == key))
        .and_then(|s| s["value"].as_i64())
        .unwrap_or_else(|| panic!("no {key} in {}", reply.body))
}

/// The HTML page of `platform`.
fn page(server: &Server, platform: &str) -> String {
    let reply = server.get(&format!("/platforms/{platform}"), &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

#[test]
fn a_shared_db_is_seeded_once_and_each_process_sees_the_others_writes() {
    let db = TempDb::new("shared");
    // `off`: the processes' own caches cannot see each other's writes without a shared
    // store, and this test is about the database alone.
    let private = start("off");
    let seeded = stat(&private, "mastodon", "influencers");

    let first = start_on("off", &db);
    let line = first
        .stderr_line("twiscope: ")
        .expect("a start-up diagnostic");
    assert!(line.starts_with("twiscope: seeded "), "{line}");
    assert!(line.contains(&db.path().display().to_string()), "{line}");
    assert_eq!(stat(&first, "mastodon", "influencers"), seeded);

    let created = first.post_json(
        "/influencers/mastodon",
        r#"{"username":"grace","display_name":"Grace Hopper","engagement":1000000000}"#,
    );
    assert_eq!(created.status, 201, "{created:?}");

    // The second start finds the file seeded and leaves it alone: the row written since is
    // still there, and nothing was seeded twice.
    let second = start_on("off", &db);
    let line = second
        .stderr_line("twiscope: ")
        .expect("a start-up diagnostic");
    assert!(line.contains("already seeded"), "{line}");
    assert_eq!(stat(&second, "mastodon", "influencers"), seeded + 1);
    assert_eq!(
        stat(&second, "twitter", "influencers"),
        stat(&private, "twitter", "influencers")
    );
    assert!(page(&second, "mastodon").contains("Grace Hopper"));

    // And the other way round, at once: one connection per process, WAL, no restart.
    let other = second.post_json(
        "/influencers/mastodon",
        r#"{"username":"alan","display_name":"Alan Turing","engagement":999999999}"#,
    );
    assert_eq!(other.status, 201, "{other:?}");
    let shown = page(&first, "mastodon");
    let (grace, alan) = (shown.find("Grace Hopper"), shown.find("Alan Turing"));
    assert!(grace.is_some() && alan.is_some() && grace < alan, "{shown}");
    assert_eq!(stat(&first, "mastodon", "influencers"), seeded + 2);
}

#[test]
fn two_first_starts_at_once_seed_the_file_once() {
    let db = TempDb::new("race");
    let seeded = stat(&start("off"), "bluesky", "influencers");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| start_on("off", &db));
        let b = s.spawn(|| start_on("off", &db));
        (a.join().expect("first"), b.join().expect("second"))
    });
    let lines: Vec<String> = [&a, &b]
        .iter()
        .map(|s| s.stderr_line("twiscope: ").expect("a start-up diagnostic"))
        .collect();
    let seeders = lines
        .iter()
        .filter(|l| l.starts_with("twiscope: seeded "))
        .count();
    assert_eq!(seeders, 1, "exactly one seeds: {lines:?}");
    for server in [&a, &b] {
        assert_eq!(stat(server, "bluesky", "influencers"), seeded);
    }
}

#[test]
fn post_creates_or_updates_the_influencer_and_returns_the_row() {
    let server = start("off");
    let created = server.post_json(
        "/influencers/bluesky",
        r#"{"username":"Ada_L","display_name":"Ada Lovelace","followers":1815,"engagement":40}"#,
    );
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.header("content-type"), Some("application/json"));
    let row: Value = serde_json::from_str(&created.body).expect("JSON");
    assert_eq!(row["platform"], "bluesky");
    let influencer = &row["influencer"];
    assert!(influencer["id"].as_i64().is_some_and(|id| id > 0), "{row}");
    assert_eq!(influencer["username"], "ada_l", "usernames are lower case");
    assert_eq!(influencer["display_name"], "Ada Lovelace");
    assert_eq!(
        (
            &influencer["followers"],
            &influencer["posts"],
            &influencer["engagement"]
        ),
        (&Value::from(1815), &Value::from(1), &Value::from(40))
    );
    assert_eq!(influencer["created"], true);
    assert_eq!(row["post"]["engagement"], 40);

    // The same username again: a second post, followers updated, the display name kept.
    let again = server.post_json(
        "/influencers/bluesky",
        r#"{"username":"ada_l","followers":2000,"engagement":2}"#,
    );
    assert_eq!(again.status, 201, "{again:?}");
    let row: Value = serde_json::from_str(&again.body).expect("JSON");
    assert_eq!(row["influencer"]["id"], influencer["id"]);
    assert_eq!(row["influencer"]["created"], false);
    assert_eq!(row["influencer"]["display_name"], "Ada Lovelace");
    assert_eq!(row["influencer"]["followers"], 2000);
    assert_eq!(row["influencer"]["posts"], 2);
    assert_eq!(row["influencer"]["engagement"], 42);
}

#[test]
fn post_rejects_bad_input_saying_what_is_wrong_and_writes_nothing() {
    let server = start("off");
    let before = stat(&server, "twitter", "influencers");
    let long = "x".repeat(65);
    let cases: [(&str, &str, u16, &str); 10] = [
        ("/influencers/twitter", "{not json", 400, "JSON"),
        (
            "/influencers/twitter",
            r#"{"username":"a"}"#,
            422,
            "engagement",
        ),
        (
            "/influencers/twitter",
            r#"{"username":"a b","engagement":1}"#,
            422,
            "username",
        ),
        (
            "/influencers/twitter",
            r#"{"username":"<script>","engagement":1}"#,
            422,
            "username",
        ),
        (
            "/influencers/twitter",
            r#"{"username":"a","engagement":-1}"#,
            422,
            "engagement",
        ),
        (
            "/influencers/twitter",
            r#"{"username":"a","engagement":"5"}"#,
            422,
            "engagement",
        ),
        (
            "/influencers/twitter",
            r#"{"username":"a","engagement":1,"display_name":" "}"#,
            422,
            "display_name",
        ),
        (
            "/influencers/twitter",
            &format!(r#"{{"username":"a","engagement":1,"display_name":"{long}"}}"#),
            422,
            "display_name",
        ),
        (
            "/influencers/twitter",
            r#"{"username":"a","engagement":1,"followers":-5}"#,
            422,
            "followers",
        ),
        (
            "/influencers/myspace",
            r#"{"username":"a","engagement":1}"#,
            404,
            "unknown platform 'myspace'",
        ),
    ];
    for (path, body, status, needle) in cases {
        let reply = server.post_json(path, body);
        assert_eq!(reply.status, status, "{body}: {reply:?}");
        let error: Value = serde_json::from_str(&reply.body).expect("a JSON error");
        let message = error["error"].as_str().expect("an error message");
        assert!(message.contains(needle), "{body}: {message}");
    }
    let control = server.post_json(
        "/influencers/twitter",
        "{\"username\":\"a\",\"engagement\":1,\"display_name\":\"two\\nlines\"}",
    );
    assert_eq!(control.status, 422, "{control:?}");
    let no_type = server.request(
        "POST",
        "/influencers/twitter",
        &[],
        r#"{"username":"a","engagement":1}"#,
    );
    assert_eq!(no_type.status, 415, "{no_type:?}");
    assert_eq!(
        stat(&server, "twitter", "influencers"),
        before,
        "nothing was written"
    );
}

#[test]
fn the_platform_page_is_html_with_both_panels_and_escapes_what_users_wrote() {
    let server = start("memory");
    let reply = server.get("/platforms/mastodon", &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = &reply.body;
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(
        html.contains("<section class=\"panel\" id=\"stats\">"),
        "{html}"
    );
    assert!(html.contains("<h2>Mastodon statistics</h2>"), "{html}");
    let influencers = stat(&server, "mastodon", "influencers");
    assert!(
        html.contains(&format!("<dt>Influencers</dt><dd>{influencers}</dd>")),
        "the stats panel shows the stats route's data: {html}"
    );
    assert!(
        html.contains("<section class=\"panel\" id=\"top-influencers\">"),
        "{html}"
    );
    assert_eq!(
        html.matches("<li><span class=\"name\">").count(),
        5,
        "{html}"
    );
    // Rendered per request, never served whole from the cache.
    assert!(!server.get("/platforms/mastodon", &[]).is_hit());

    let evil = server.post_json(
        "/influencers/mastodon",
        r#"{"username":"mallory","display_name":"<script>alert(\"x\")</script> & co","engagement":1000000000}"#,
    );
    assert_eq!(evil.status, 201, "{evil:?}");
    let html = page(&server, "mastodon");
    assert!(
        html.contains(
            "<li><span class=\"name\">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co</span> \
             <span class=\"username\">@mallory</span>"
        ),
        "first, escaped: {html}"
    );
    assert!(!html.contains("<script"), "{html}");
    assert_eq!(server.get("/platforms/myspace", &[]).status, 404);
}

#[test]
fn a_file_that_is_not_a_twiscope_database_is_refused_untouched() {
    let garbage = TempDb::new("garbage");
    std::fs::write(garbage.path(), "not a database ".repeat(100)).expect("write");
    let foreign = TempDb::new("foreign");
    let status = std::process::Command::new("sqlite3")
        .arg(foreign.path())
        .arg("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .status();
    let foreign_made = status.is_ok_and(|s| s.success());
    for (db, needle) in [
        (&garbage, "not a database"),
        (&foreign, "not a twiscope database"),
    ] {
        if db.path() == foreign.path() && !foreign_made {
            eprintln!("sqlite3 is not installed: skipping the foreign database");
            continue;
        }
        let before = std::fs::read(db.path()).expect("read");
        let out = twiscope("off")
            .arg("--db")
            .arg(db.path())
            .output()
            .expect("run twiscope");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(out.stdout.is_empty(), "no start-up line");
        assert!(
            stderr.contains("cannot open") && stderr.contains(needle),
            "{stderr}"
        );
        let after = std::fs::read(db.path()).expect("read");
        assert!(after == before, "{needle}: the file was changed");
    }
}
