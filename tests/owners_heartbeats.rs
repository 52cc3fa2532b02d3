//! How rows name their owners and heartbeats, the way other teams write
//! them: owners as pid, pid:start-time, host:pid, pid@host or a custom form
//! (regex); heartbeats as epoch seconds or milliseconds in INTEGER, REAL or
//! TEXT columns, ISO-8601 with or without zone, SQLite julian days — and
//! NULL or garbage, which are findings of their own, never silence.
//! Real SQLite files, real live and dead processes, the real `doctor`.

mod support;

use rusqlite::Connection;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use support::{finding, findings, Proc, Scenario};

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A pid that certainly runs nothing now: a child we started and reaped.
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

fn start_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}

fn keys_ending(doc: &serde_json::Value, plugin: &str, suffix: &str) -> Vec<String> {
    let mut k: Vec<String> = findings(doc, plugin)
        .iter()
        .filter_map(|f| f["key"].as_str())
        .filter(|k| k.ends_with(suffix))
        .map(str::to_string)
        .collect();
    k.sort();
    k
}

/// sqlite-chunk-reset with a ten-minute heartbeat on `heartbeat_at`.
fn chunk_policy(s: &Scenario, db: &Path, extra: &str) {
    s.chunk_reset_policy(
        db,
        "",
        &format!("heartbeat_column = \"heartbeat_at\"\nheartbeat_timeout = \"10m\"\n{extra}"),
    );
}

/// `rows`: (id, owner, heartbeat as an SQL expression); all `running`.
fn chunks(db: &Path, rows: &[(i64, String, String)]) {
    let c = Connection::open(db).unwrap();
    c.execute_batch("CREATE TABLE chunks (id INTEGER PRIMARY KEY, status TEXT, assigned_worker TEXT, started_at INTEGER, heartbeat_at);").unwrap();
    for (id, owner, hb) in rows {
        c.execute(
            &format!("INSERT INTO chunks VALUES (?1, 'running', ?2, NULL, {hb})"),
            rusqlite::params![id, owner],
        )
        .unwrap();
    }
}

fn running_owners(db: &Path) -> Vec<(i64, String)> {
    let c = Connection::open(db).unwrap();
    let mut stmt = c
        .prepare("SELECT id, assigned_worker FROM chunks WHERE status = 'running' ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn every_owner_form_is_read_and_other_hosts_are_judged_by_heartbeat_only() {
    let s = Scenario::new();
    let db = s.path("cluster.db");
    let live = Proc::spawn(&["sleep", "3701"]);
    let (l, d, h) = (live.pid(), dead_pid(), hostname());
    let (fresh, stale) = (now_s().to_string(), (now_s() - 3600).to_string());
    chunks(
        &db,
        &[
            (1, format!("{d}"), "NULL".into()),     // dead local pid: orphaned
            (2, format!("{l}"), "NULL".into()),     // live local pid: kept
            (3, format!("{h}:{l}"), "NULL".into()), // host:pid on this host, live: kept
            (4, format!("{d}@{h}"), "NULL".into()), // pid@host on this host, dead: orphaned
            (5, format!("{l}:{}", start_ticks(l)), "NULL".into()), // pid:start-time, live: kept
            (6, format!("other-node:{d}"), fresh.clone()), // another host, fresh heartbeat: kept (its pid means nothing here)
            (7, format!("other-node:{l}"), stale), // another host, stale heartbeat: orphaned (a local live pid is no excuse)
            (8, format!("{d}@other-node"), "NULL".into()), // another host, no heartbeat: unreadable, kept
            (9, "worker-7".into(), fresh),                 // not an owner: cannot be checked, kept
        ],
    );
    chunk_policy(&s, &db, "");

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 1, "fixed; warnings remain: {doc:#}");
    // One finding per owner: 1, 4 and 7 are three owners.
    let mut want = [
        format!("worker:{d}:orphaned"),
        format!("worker:{d}@{h}:orphaned"),
        format!("worker:other-node:{l}:orphaned"),
    ];
    want.sort();
    assert_eq!(
        keys_ending(&doc, "sqlite-chunk-reset", ":orphaned"),
        want,
        "{doc:#}"
    );
    let remote = finding(
        &doc,
        "sqlite-chunk-reset",
        &format!("worker:other-node:{l}:orphaned"),
    )
    .unwrap();
    assert_eq!(remote["evidence"]["ids"], "7");
    let message = remote["message"].as_str().unwrap();
    assert!(
        message.contains("host other-node")
            && message.contains("epoch seconds (INTEGER, detected)"),
        "{message}"
    );
    let unreadable = finding(
        &doc,
        "sqlite-chunk-reset",
        "chunk:chunks:8:heartbeat-unreadable",
    )
    .unwrap_or_else(|| panic!("{doc:#}"));
    assert!(
        unreadable["message"]
            .as_str()
            .unwrap()
            .starts_with("heartbeat unreadable: column heartbeat_at holds NULL"),
        "{unreadable:#}"
    );
    assert!(
        finding(&doc, "sqlite-chunk-reset", "chunk:chunks:9:unknown-worker").is_some(),
        "{doc:#}"
    );
    let kept: Vec<i64> = running_owners(&db).into_iter().map(|r| r.0).collect();
    assert_eq!(kept, [2, 3, 5, 6, 8, 9]);
    drop(live);
}

#[test]
fn declared_owner_formats_including_a_regex() {
    let s = Scenario::new();
    let db = s.path("cluster.db");
    let live = Proc::spawn(&["sleep", "3702"]);
    let (l, d, h) = (live.pid(), dead_pid(), hostname());
    chunks(
        &db,
        &[
            (1, format!("w-{h}-{d}"), "NULL".into()), // this host, dead: orphaned
            (2, format!("w-{h}-{l}"), "NULL".into()), // this host, live: kept
            (3, format!("w-elsewhere-{l}"), format!("{}", now_s() - 7200)), // another host, stale: orphaned
            (4, format!("{d}"), "NULL".into()), // not in the declared form: kept, reported
        ],
    );
    chunk_policy(
        &s,
        &db,
        "owner_format = \"^w-(?P<host>.+)-(?P<pid>\\\\d+)$\"",
    );
    let (_, doc) = s.doctor_json(&["fix"]);
    let mut want = [
        format!("worker:w-{h}-{d}:orphaned"),
        format!("worker:w-elsewhere-{l}:orphaned"),
    ];
    want.sort();
    assert_eq!(
        keys_ending(&doc, "sqlite-chunk-reset", ":orphaned"),
        want,
        "{doc:#}"
    );
    let unknown = finding(&doc, "sqlite-chunk-reset", "chunk:chunks:4:unknown-worker")
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert!(
        unknown["message"]
            .as_str()
            .unwrap()
            .contains("does not match owner_format"),
        "{unknown:#}"
    );
    let kept: Vec<i64> = running_owners(&db).into_iter().map(|r| r.0).collect();
    assert_eq!(kept, [2, 4]);

    // pid@host declared: a bare pid is not that form.
    let s = Scenario::new();
    let db = s.path("cluster.db");
    chunks(
        &db,
        &[
            (1, format!("{d}@{h}"), "NULL".into()),
            (2, format!("{d}"), "NULL".into()),
        ],
    );
    chunk_policy(&s, &db, "owner_format = \"pid@host\"");
    let (_, doc) = s.doctor_json(&["check"]);
    assert_eq!(
        keys_ending(&doc, "sqlite-chunk-reset", ":orphaned"),
        [format!("worker:{d}@{h}:orphaned")],
        "{doc:#}"
    );
    assert!(
        finding(&doc, "sqlite-chunk-reset", "chunk:chunks:2:unknown-worker").is_some(),
        "{doc:#}"
    );
    drop(live);
}

#[test]
fn every_heartbeat_type_is_read_and_null_or_garbage_is_a_finding() {
    let s = Scenario::new();
    let db = s.path("training.db");
    let (now, old) = (now_s(), now_s() - 7200);
    let c = Connection::open(&db).unwrap();
    // No declared type on heartbeat_at: SQLite keeps whatever type is written.
    c.execute_batch("CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT, heartbeat_at, attempts INTEGER NOT NULL DEFAULT 0);").unwrap();
    let rows: Vec<(i64, String)> = vec![
        (1, format!("{old}")),          // INTEGER seconds, stale
        (2, format!("{now}")),          // INTEGER seconds, fresh
        (3, format!("{old}.25")),       // REAL seconds, stale
        (4, format!("'{old}'")),        // TEXT seconds, stale
        (5, format!("{}", old * 1000)), // INTEGER milliseconds, stale
        (
            6,
            "strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-2 hours')".into(),
        ), // ISO-8601 with zone, stale
        (7, "datetime('now', '-2 hours')".into()), // ISO-8601 without zone (UTC), stale
        (8, "julianday('now', '-2 hours')".into()), // julian day, stale
        (9, "NULL".into()),             // unreadable
        (10, "'garbage'".into()),       // unreadable
        (11, "strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now')".into()), // ISO-8601 with zone, fresh
    ];
    for (id, hb) in &rows {
        c.execute(
            &format!("INSERT INTO jobs (id, status, heartbeat_at) VALUES ({id}, 'running', {hb})"),
            [],
        )
        .unwrap();
    }
    // Stale, out of attempts: requeue becomes fail, and the evidence says so.
    c.execute(&format!("INSERT INTO jobs (id, status, heartbeat_at, attempts) VALUES (12, 'running', {old}, 3)"), []).unwrap();
    drop(c);
    s.policy(&format!(
        r#"
[databases.training]
path = {db:?}

[plugins.job-health]
grants.sqlite = ["training"]
grants.sqlite_write = ["training"]
config = {{ db = "training", worker_column = "", heartbeat_column = "heartbeat_at", heartbeat_timeout = "10m", on_orphaned = "requeue", max_attempts = 3 }}
"#,
        db = db.display().to_string()
    ));

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    // The table records no worker: every orphaned job is one finding.
    assert_eq!(
        keys_ending(&doc, "job-health", ":orphaned"),
        ["worker:none:orphaned"],
        "{doc:#}"
    );
    let orphaned = finding(&doc, "job-health", "worker:none:orphaned").unwrap();
    assert_eq!(orphaned["evidence"]["ids"], "1, 3, 4, 5, 6, 7, 8, 12");
    // How each row's heartbeat was read (with how many rows were read so).
    let read_as = orphaned["evidence"]["heartbeat_read_as"].as_str().unwrap();
    for (how, n) in [
        ("epoch seconds (INTEGER, detected)", 2),
        ("epoch seconds (REAL, detected)", 1),
        ("epoch seconds (TEXT, detected)", 1),
        ("epoch milliseconds (INTEGER, detected)", 1),
        ("ISO-8601 with zone (TEXT, detected)", 1),
        ("ISO-8601 without zone, read as UTC (TEXT, detected)", 1),
        ("SQLite julian day (REAL, detected)", 1),
    ] {
        assert!(
            read_as.contains(&format!("{how} ({n})")),
            "{how}: {read_as}"
        );
    }
    let reasons = orphaned["evidence"]["reasons"].as_str().unwrap();
    assert!(
        reasons.contains("2h0m old (timeout 10m0s; read as ISO-8601 without zone")
            || reasons.contains("1h59m old (timeout 10m0s; read as ISO-8601 without zone"),
        "the age is right: {reasons}"
    );

    assert_eq!(
        keys_ending(&doc, "job-health", ":heartbeat-unreadable"),
        ["job:10:heartbeat-unreadable", "job:9:heartbeat-unreadable"]
    );
    let null = finding(&doc, "job-health", "job:9:heartbeat-unreadable").unwrap();
    assert!(
        null["message"]
            .as_str()
            .unwrap()
            .starts_with("heartbeat unreadable: column heartbeat_at holds NULL"),
        "{null:#}"
    );
    let garbage = finding(&doc, "job-health", "job:10:heartbeat-unreadable").unwrap();
    assert!(
        garbage["message"].as_str().unwrap().contains("\"garbage\""),
        "{garbage:#}"
    );

    // Out of attempts: the evidence names the remedy applied, and job 12's
    // fail is a write of its own, apart from the requeues.
    assert_eq!(
        orphaned["evidence"]["remedy"], "requeue (7), fail (1)",
        "{orphaned:#}"
    );
    let described: Vec<&str> = orphaned["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["description"].as_str().unwrap())
        .collect();
    assert_eq!(described.len(), 2, "{described:?}");
    assert!(
        described[0].starts_with(
            "7 jobs (1, 3, 4, 5, 6, 7, 8) with no worker recorded: requeue as pending"
        ) && described[1].starts_with("job 12 with no worker recorded: mark failed: doctor: "),
        "{described:?}"
    );
}
