//! The incident: a training server's job table says jobs are `running`,
//! `pending` or `queued` that nothing will ever run. Real SQLite files, real
//! processes (python3 workers writing their pid into the file), the real
//! `doctor` binary.

mod support;

use rusqlite::Connection;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{finding, findings, plugin_summary, Proc, Scenario};

const PLUGIN: &str = "job-health";

fn worker_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/workers/db_worker.py")
        .display()
        .to_string()
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A python worker that runs `sql` against the database and stays alive.
fn worker(s: &Scenario, db: &Path, name: &str, sql: &[&str], extra: &[&str]) -> Proc {
    let ready = s.path(&format!("{name}.ready"));
    let (script, db, ready_s) = (
        worker_script(),
        db.display().to_string(),
        ready.display().to_string(),
    );
    let mut argv: Vec<&str> = vec!["python3", &script, &db, "--ready", &ready_s];
    for q in sql {
        argv.extend(["--exec", q]);
    }
    argv.extend(extra);
    let p = Proc::spawn(&argv);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "worker {name} never got ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    p
}

fn kill(mut p: Proc) -> u32 {
    let pid = p.pid();
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    pid
}

fn jobs_db(path: &Path) {
    Connection::open(path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT NOT NULL, pid TEXT, heartbeat_at INTEGER,
                                updated_at INTEGER, attempts INTEGER NOT NULL DEFAULT 0, error TEXT);",
        )
        .unwrap();
}

type Row = (i64, String, Option<String>, i64, Option<String>);

fn rows(path: &Path) -> Vec<Row> {
    let c = Connection::open(path).unwrap();
    let mut stmt = c
        .prepare("SELECT id, status, pid, attempts, error FROM jobs ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn policy(s: &Scenario, db: &Path, config: &str) {
    s.policy(&format!(
        r#"
[databases.training]
path = {db:?}

[plugins.job-health]
grants.processes = true
grants.sqlite = ["training"]
grants.sqlite_write = ["training"]
config = {{ db = "training", reason_column = "error", worker_match = "db_worker\\.py", {config} }}
"#,
        db = db.display().to_string()
    ));
}

fn keys(doc: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = findings(doc, PLUGIN)
        .iter()
        .map(|f| f["key"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

#[test]
fn a_job_table_with_every_status_is_repaired_per_policy_and_nothing_else_is_touched() {
    let s = Scenario::new();
    let db = s.path("training.db");
    jobs_db(&db);
    let (now, old) = (now_s(), now_s() - 7200);
    Connection::open(&db)
        .unwrap()
        .execute_batch(&format!(
            "INSERT INTO jobs (id, status, heartbeat_at, updated_at, attempts) VALUES
               (1, 'running',   {now}, {now}, 0),   -- its worker dies: requeue, attempts 1
               (2, 'running',   {now}, {now}, 3),   -- its worker dies at max attempts: failed
               (3, 'queued',    NULL,  {old}, 1),   -- stale queued: requeue (policy)
               (4, 'running',   {now}, {now}, 0),   -- live worker: untouched
               (5, 'completed', {old}, {old}, 1),
               (6, 'failed',    {old}, {old}, 3),
               (7, 'cancelled', {old}, {old}, 0),
               (8, 'paused',    {old}, {old}, 0),   -- paused with a dead pid: untouched
               (9, 'pending',   NULL,  {now}, 0),   -- fresh pending: untouched
               (10, 'running',  {old}, {old}, 0);   -- live worker, stale heartbeat: reported, untouched"
        ))
        .unwrap();
    let dead = worker(
        &s,
        &db,
        "dead",
        &["UPDATE jobs SET pid = '{pid}' WHERE id IN (1, 2, 5, 6, 7, 8)"],
        &[],
    );
    let dead_pid = kill(dead);
    let mut live = worker(
        &s,
        &db,
        "live",
        &["UPDATE jobs SET pid = '{pid}:{start}' WHERE id IN (4, 10)"],
        &[],
    );
    policy(&s, &db, "heartbeat_column = \"heartbeat_at\", updated_column = \"updated_at\", on_orphaned = \"requeue\", on_stale = \"requeue\", stale_after = \"1h\", heartbeat_timeout = \"10m\", max_attempts = 3");
    let before = rows(&db);

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    let dead_key = format!("worker:{dead_pid}:orphaned");
    assert_eq!(
        keys(&doc),
        vec![
            "job:10:hung".to_string(),
            "job:3:stale".into(),
            "table:jobs:summary".into(),
            dead_key.clone()
        ],
        "{doc:#}"
    );
    // One finding for the dead worker's two jobs; each gets its own remedy:
    // job 1 a requeue, job 2 (at max attempts) a fail, two set-based writes.
    let orphaned = finding(&doc, PLUGIN, &dead_key).unwrap();
    assert_eq!(orphaned["severity"], "critical");
    assert!(orphaned["message"]
        .as_str()
        .unwrap()
        .contains(&format!("pid {dead_pid} is not running")));
    assert_eq!(orphaned["evidence"]["ids"], "1, 2");
    assert_eq!(orphaned["evidence"]["remedy"], "requeue (1), fail (1)");
    let described: Vec<&str> = orphaned["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["description"].as_str().unwrap())
        .collect();
    assert_eq!(described.len(), 2, "{described:?}");
    assert!(
        described[0].starts_with(&format!("job 1 of worker {dead_pid}: requeue as pending"))
            && described[1].starts_with(&format!("job 2 of worker {dead_pid}: mark failed: doctor: pid {dead_pid} is not running; gave up after 3 attempt(s)")),
        "{described:?}"
    );
    assert_eq!(
        finding(&doc, PLUGIN, "job:3:stale").unwrap()["severity"],
        "warning"
    );
    assert!(finding(&doc, PLUGIN, "job:10:hung").unwrap()["actions"]
        .as_array()
        .unwrap()
        .is_empty());
    let summary = finding(&doc, PLUGIN, "table:jobs:summary").unwrap();
    assert_eq!(summary["severity"], "info");
    assert_eq!(summary["evidence"]["total"], "10");
    assert_eq!(rows(&db), before, "check changes nothing");

    let (code, doc) = s.doctor_json(&["fix"]);
    let outcome = |key: &str, i: usize| {
        finding(&doc, PLUGIN, key).unwrap()["actions"][i]["outcome"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(outcome(&dead_key, 0), "applied");
    assert_eq!(outcome(&dead_key, 1), "applied");
    assert_eq!(outcome("job:3:stale", 0), "applied");
    assert_eq!(finding(&doc, PLUGIN, &dead_key).unwrap()["status"], "fixed");
    // job 10 stays (alive, stale heartbeat) as an open warning.
    assert_eq!(code, 1, "{doc:#}");

    let after = rows(&db);
    assert_eq!(
        after[0],
        (1, "pending".into(), None, 1, None),
        "requeued with attempts + 1"
    );
    assert_eq!(after[1].1, "failed");
    assert_eq!(after[1].3, 3, "a failed job's attempts are not bumped");
    let reason = after[1].4.clone().unwrap();
    assert!(
        reason.contains(&format!("pid {dead_pid} is not running")) && reason.contains("3 attempt"),
        "{reason}"
    );
    assert_eq!(
        (after[2].1.as_str(), after[2].3),
        ("pending", 2),
        "stale queued requeued"
    );
    let updated: i64 = Connection::open(&db)
        .unwrap()
        .query_row("SELECT updated_at FROM jobs WHERE id = 3", [], |r| r.get(0))
        .unwrap();
    assert!(updated >= now, "a requeued job is fresh again");
    for i in [3usize, 4, 5, 6, 7, 8, 9] {
        assert_eq!(after[i], before[i], "row {} untouched", i + 1);
    }
    assert!(live.running(), "the live worker is never signalled");
}

#[test]
fn the_race_a_job_picked_up_by_a_live_worker_is_not_clobbered() {
    let s = Scenario::new();
    let db = s.path("training.db");
    jobs_db(&db);
    Connection::open(&db).unwrap().execute_batch("PRAGMA journal_mode=WAL; INSERT INTO jobs (id, status, attempts) VALUES (1, 'running', 0);").unwrap();
    let dead = worker(
        &s,
        &db,
        "dead",
        &["UPDATE jobs SET pid = '{pid}' WHERE id = 1"],
        &[],
    );
    let dead_pid = kill(dead);
    policy(&s, &db, "on_orphaned = \"requeue\"");
    let (code, _) = s.doctor_json(&["check"]);
    assert_eq!(code, 2);
    let taker = worker(
        &s,
        &db,
        "taker",
        &[
            "BEGIN IMMEDIATE",
            "UPDATE jobs SET pid = '{pid}' WHERE id = 1",
        ],
        &["--wal", "--hold", "1.2", "--exec-after", "COMMIT"],
    );
    let (code, doc) = s.doctor_json(&["fix"]);
    let f = finding(&doc, PLUGIN, &format!("worker:{dead_pid}:orphaned"))
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert_eq!(f["actions"][0]["outcome"], "skipped", "{f:#}");
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        rows(&db)[0],
        (1, "running".into(), Some(taker.pid().to_string()), 0, None)
    );
}

#[test]
fn a_missing_database_is_a_clear_error_and_is_not_created() {
    let s = Scenario::new();
    let db = s.path("gone/training.db");
    policy(&s, &db, "on_orphaned = \"report\"");
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 3, "{doc:#}");
    let error = plugin_summary(&doc, PLUGIN)["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("does not exist") && error.contains(&db.display().to_string()),
        "{error}"
    );
    assert!(!db.exists());
}

#[test]
fn a_locked_database_is_a_clear_error_and_nothing_changes() {
    let s = Scenario::new();
    let db = s.path("training.db");
    jobs_db(&db);
    Connection::open(&db)
        .unwrap()
        .execute_batch("INSERT INTO jobs (id, status, pid) VALUES (1, 'running', '999999999');")
        .unwrap();
    policy(&s, &db, "on_orphaned = \"requeue\"");
    let before = rows(&db);
    // Another process holds an exclusive lock (rollback journal: readers are shut out too).
    let locker = worker(
        &s,
        &db,
        "locker",
        &[
            "BEGIN EXCLUSIVE",
            "UPDATE jobs SET error = 'locked by {pid}' WHERE id = 1",
        ],
        &[],
    );
    let started = Instant::now();
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 3, "{doc:#}");
    let error = plugin_summary(&doc, PLUGIN)["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("locked"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(20), "bounded wait");
    kill(locker);
    assert_eq!(
        rows(&db),
        before,
        "nothing changed (the locker's transaction was never committed either)"
    );
}

#[test]
fn a_wrong_column_name_is_a_clear_error_and_nothing_changes() {
    let s = Scenario::new();
    let db = s.path("training.db");
    jobs_db(&db);
    Connection::open(&db)
        .unwrap()
        .execute_batch("INSERT INTO jobs (id, status, pid) VALUES (1, 'running', '999999999');")
        .unwrap();
    policy(&s, &db, "attempts_column = \"retries\"");
    let before = std::fs::read(&db).unwrap();
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 3, "{doc:#}");
    let error = plugin_summary(&doc, PLUGIN)["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("attempts_column")
            && error.contains("\"retries\"")
            && error.contains("heartbeat_at"),
        "{error}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

/// id, status, pid, attempts, error, heartbeat.
type JobRow = (
    i64,
    String,
    Option<String>,
    i64,
    Option<String>,
    Option<i64>,
);

/// Issue 21, item 4, for jobs: 100,000 jobs; five real workers each claim
/// 2,000 waiting jobs (scattered ids; three write one claim and heartbeat
/// time for the batch, two a time per job) and are SIGKILLed; a live worker
/// holds 100. Every tenth job has used up its attempts. One `doctor fix`
/// with the default action budget writes all 10,000 in one run: one
/// finding per dead worker, its jobs requeued (attempts + 1) or, at
/// max_attempts, failed with the reason, in set-based compare-and-swaps
/// (the two remedies in different statements); the live worker's jobs are
/// untouched and the next check finds nothing orphaned.
#[test]
fn ten_thousand_jobs_of_five_dead_workers_are_requeued_or_failed_in_one_run_within_the_default_budget(
) {
    let s = Scenario::new();
    let db = s.path("training.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT NOT NULL, pid TEXT, heartbeat_at INTEGER, claimed_at INTEGER,
                                updated_at INTEGER, attempts INTEGER NOT NULL DEFAULT 0, error TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
             INSERT INTO jobs (id, status, updated_at, attempts)
               SELECT i, CASE WHEN i <= 85000 THEN 'completed' ELSE 'pending' END, 1700000000,
                      CASE WHEN i % 10 = 0 THEN 3 ELSE i % 3 END FROM n;
             CREATE INDEX jobs_by_status ON jobs (status);",
        )
        .unwrap();
    let claim = |n: i64, at: &str| {
        format!("UPDATE jobs SET status = 'running', pid = '{{pid}}', claimed_at = {at}, heartbeat_at = {at}, updated_at = {at} WHERE id IN (SELECT id FROM jobs WHERE status = 'pending' ORDER BY random() LIMIT {n})")
    };
    let mut dead = Vec::new();
    for i in 0..5 {
        let at = if i < 3 {
            "{now_s}"
        } else {
            "{now_s} - id % 600"
        };
        let w = worker(
            &s,
            &db,
            &format!("dead{i}"),
            &[&claim(2000, at)],
            &["--wal"],
        );
        dead.push(kill(w));
    }
    let mut live = worker(&s, &db, "live", &[&claim(100, "{now_s}")], &["--wal"]);
    let all = |db: &Path| -> Vec<JobRow> {
        let c = Connection::open(db).unwrap();
        let mut st = c
            .prepare("SELECT id, status, pid, attempts, error, heartbeat_at FROM jobs WHERE pid IS NOT NULL OR status != 'completed' ORDER BY id")
            .unwrap();
        st.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let before = all(&db);
    let live_pid = live.pid().to_string();
    let of_dead: Vec<_> = before
        .iter()
        .filter(|r| r.1 == "running" && r.2.as_deref() != Some(live_pid.as_str()))
        .cloned()
        .collect();
    assert_eq!(of_dead.len(), 10_000);
    policy(&s, &db, "heartbeat_column = \"heartbeat_at\", claimed_column = \"claimed_at\", updated_column = \"updated_at\", on_orphaned = \"requeue\", max_attempts = 3");

    let started = Instant::now();
    let (code, doc) = s.doctor_json(&["fix"]);
    let took = started.elapsed();
    let text = doc.to_string();
    assert_eq!(code, 0, "{}", &text[..text.len().min(4000)]);
    let mut orphaned: Vec<String> = keys(&doc)
        .into_iter()
        .filter(|k| k.ends_with(":orphaned"))
        .collect();
    orphaned.sort();
    let mut want: Vec<String> = dead
        .iter()
        .map(|p| format!("worker:{p}:orphaned"))
        .collect();
    want.sort();
    assert_eq!(orphaned, want, "one finding per dead worker");
    let mut actions = 0;
    for key in &orphaned {
        let f = finding(&doc, PLUGIN, key).unwrap();
        assert_eq!(f["evidence"]["count"], "2000");
        assert_eq!(f["status"], "fixed");
        let remedies = f["evidence"]["remedy"].as_str().unwrap();
        assert!(
            remedies.contains("requeue (") && remedies.contains("fail ("),
            "{remedies}"
        );
        let done: Vec<(&str, &str)> = f["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["outcome"].as_str().unwrap(),
                    a["description"].as_str().unwrap(),
                )
            })
            .collect();
        assert!(done.iter().all(|(o, _)| *o == "applied"), "{done:?}");
        assert!(
            done.iter().any(|(_, d)| d.contains(": requeue as pending"))
                && done
                    .iter()
                    .any(|(_, d)| d.contains(": mark failed: doctor: pid ")),
            "a requeue and a fail, apart: {done:?}"
        );
        assert!(done.len() <= 4, "{done:?}");
        actions += done.len();
    }
    // Each job as it should be: requeued with attempts + 1, or failed with
    // the reason at max_attempts; the live worker's jobs exactly as before.
    let after = all(&db);
    let now: std::collections::BTreeMap<i64, _> = after.into_iter().map(|r| (r.0, r)).collect();
    for was in &before {
        let is = &now[&was.0];
        if was.2.as_deref() == Some(live_pid.as_str()) {
            assert_eq!(is, was, "the live worker's job is untouched");
        } else if was.1 == "running" && was.3 >= 3 {
            assert_eq!((is.1.as_str(), is.3), ("failed", was.3), "{is:?}");
            assert!(
                is.4.as_deref()
                    .unwrap()
                    .contains("gave up after 3 attempt(s)"),
                "{is:?}"
            );
        } else if was.1 == "running" {
            assert_eq!(
                (is.1.as_str(), is.2.as_deref(), is.3),
                ("pending", None, was.3 + 1),
                "{is:?}"
            );
        } else {
            assert_eq!(is, was, "a waiting job is untouched");
        }
    }
    let journal = s.journal();
    let changed: Vec<String> = journal
        .prepare("SELECT after FROM actions WHERE plugin = ?1 AND kind = 'sql-exec' AND outcome = 'applied'")
        .unwrap()
        .query_map([PLUGIN], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(changed.len(), actions);
    let total: i64 = changed
        .iter()
        .map(|a| a.split(' ').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 10_000, "{changed:?}");
    eprintln!(
        "job-health: 10000 orphaned jobs of 5 dead workers (100000 rows, 100 live): {actions} sql-exec actions, one run, {:.2} s",
        took.as_secs_f64()
    );

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 0, "{doc:#}");
    assert!(
        !keys(&doc).iter().any(|k| k.ends_with(":orphaned")),
        "{doc:#}"
    );
    assert!(live.running());
}
