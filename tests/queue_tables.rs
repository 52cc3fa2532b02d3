//! Job and task tables as queue libraries write them, with their workers
//! SIGKILLed mid-task the way a host loses them: the worker's pid inside a
//! JSON document, a worker name its command line never shows, locks in
//! nanoseconds, and a failure record the application's own reader parses.
//! Real python workers writing real SQLite files, the real `doctor`.
//!
//! Every worker runs under a launcher whose command line carries this
//! test's temp dir, so a scope `under` that launcher sees this test's
//! workers and no other test's.

mod support;

use rusqlite::Connection;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{finding, findings, Proc, Scenario};

const JOBS: &str = "job-health";
const CHUNKS: &str = "sqlite-chunk-reset";

fn script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/workers/db_worker.py")
        .display()
        .to_string()
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A python worker under this test's launcher (`sh -c '"$@" & wait' <tag>
/// python3 ...`): it runs `sql` (with `{pid}`, `{name}`, `{host}`,
/// `{now_ns}`, ... substituted), says it is ready, and stays alive.
struct Worker {
    launcher: Proc,
    pid: u32,
}

impl Worker {
    fn start(s: &Scenario, tag: &str, db: &Path, sql: &[&str], extra: &[&str]) -> Worker {
        let ready = s.path(&format!("{tag}.ready"));
        let (script, db, ready_s, launcher_tag) = (
            script(),
            db.display().to_string(),
            ready.display().to_string(),
            launcher_tag(s, tag),
        );
        let mut argv: Vec<&str> = vec![
            "sh",
            "-c",
            "\"$@\" & wait",
            &launcher_tag,
            "python3",
            &script,
            &db,
            "--ready",
            &ready_s,
        ];
        for q in sql {
            argv.extend(["--exec", q]);
        }
        argv.extend(extra);
        let launcher = Proc::spawn(&argv);
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&ready)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "worker {tag} never got ready");
            std::thread::sleep(Duration::from_millis(10));
        };
        Worker { launcher, pid }
    }

    /// SIGKILL, the way a host loses a worker; its launcher reaps it.
    fn kill(mut self) -> u32 {
        let pid = self.pid;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            self.launcher.reap(Duration::from_secs(5)).is_some(),
            "the launcher ends with its worker"
        );
        pid
    }

    fn running(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }
}

impl Drop for Worker {
    /// Kill the worker only while it is still the launcher's child (never a reused pid).
    fn drop(&mut self) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let ppid: Option<u32> = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok());
        if ppid == Some(self.launcher.pid()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The launcher's `$0`: unique to this scenario (its temp dir) and this launcher.
fn launcher_tag(s: &Scenario, tag: &str) -> String {
    format!("launcher:{}:{tag}", s.root().display())
}

/// A scope naming every launcher of this scenario (and no other test's).
fn scope(s: &Scenario) -> String {
    format!(
        "{{ under = {:?} }}",
        format!(
            "^sh -c .* launcher:{}:",
            regex::escape(&s.root().display().to_string())
        )
    )
}

fn keys(doc: &serde_json::Value, plugin: &str) -> Vec<String> {
    let mut k: Vec<String> = findings(doc, plugin)
        .iter()
        .map(|f| f["key"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

fn message(doc: &serde_json::Value, plugin: &str, key: &str) -> String {
    finding(doc, plugin, key).unwrap_or_else(|| panic!("no {key}: {doc:#}"))["message"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The one finding of a dead (or otherwise gone) owner: `worker:<owner>:orphaned`.
fn orphaned_key(doc: &serde_json::Value, plugin: &str) -> String {
    let owners: Vec<String> = keys(doc, plugin)
        .into_iter()
        .filter(|k| k.starts_with("worker:") && k.ends_with(":orphaned"))
        .collect();
    assert_eq!(owners.len(), 1, "{doc:#}");
    owners[0].clone()
}

/// Every action outcome of a finding.
fn outcomes(doc: &serde_json::Value, plugin: &str, key: &str) -> Vec<String> {
    finding(doc, plugin, key).unwrap_or_else(|| panic!("no {key}: {doc:#}"))["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap().to_string())
        .collect()
}

fn actions(doc: &serde_json::Value, plugin: &str, key: &str) -> usize {
    finding(doc, plugin, key).unwrap_or_else(|| panic!("no {key}: {doc:#}"))["actions"]
        .as_array()
        .map_or(0, Vec::len)
}

fn job_policy(s: &Scenario, db: &Path, config: &str) {
    s.policy(&format!(
        r#"
[databases.queue]
path = {db:?}

[plugins.job-health]
grants.processes = true
grants.sqlite = ["queue"]
grants.sqlite_write = ["queue"]

[plugins.job-health.config]
db = "queue"
{config}
"#,
        db = db.display().to_string()
    ));
}

/// A task table as a queue library keeps it: a worker name (`node-…@host`,
/// derived at start-up), the pid only inside a JSON `result`, a lock time
/// in nanoseconds, a failure record the client reads back.
fn task_table(db: &Path) {
    Connection::open(db)
        .unwrap()
        .execute_batch(
            "CREATE TABLE tasks (task_id TEXT PRIMARY KEY, state TEXT NOT NULL, worker TEXT, result TEXT,
                                 locked_ns INTEGER, retries INTEGER NOT NULL DEFAULT 0, traceback TEXT, done_ns INTEGER);
             INSERT INTO tasks (task_id, state) VALUES ('t-live', 'STARTED'), ('t-dead', 'STARTED'), ('t-blind', 'STARTED'), ('t-ok', 'SUCCESS');",
        )
        .unwrap();
}

const TASK_CONFIG: &str = r#"
table = "tasks"
id_column = "task_id"
status_column = "state"
worker_column = "worker"
worker_kind = "name"
worker_pid_sql = "json_extract(result, '$.pid')"
worker_host_sql = "json_extract(result, '$.hostname')"
claimed_column = "locked_ns"
attempts_column = "retries"
running_statuses = ["STARTED"]
waiting_statuses = ["PENDING"]
failed_status = "FAILURE"
on_orphaned = "fail"

[plugins.job-health.config.fail_set]
result = { json = { exc_type = "WorkerLost", exc_message = "{reason}", exc_module = "doctor" } }
traceback = { null = true }
done_ns = { now = true }
"#;

/// The application's side: its client reads a failed task's result as an
/// error record and raises if it cannot.
fn client_reads_failure(db: &Path, task: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sqlite3, sys\n\
             row = sqlite3.connect(sys.argv[1]).execute('SELECT state, result FROM tasks WHERE task_id = ?', (sys.argv[2],)).fetchone()\n\
             assert row[0] == 'FAILURE', row\n\
             exc = json.loads(row[1])\n\
             print(exc['exc_type'] + ': ' + exc['exc_message'])",
        ])
        .arg(db)
        .arg(task)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the client cannot read it back: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn task(db: &Path, id: &str) -> (String, Option<String>, Option<String>, Option<i64>) {
    Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT state, result, traceback, done_ns FROM tasks WHERE task_id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
}

const CLAIM: &str = "UPDATE tasks SET worker = '{name}', result = json_object('pid', {pid}, 'hostname', '{host}'), locked_ns = {now_ns}, traceback = 'partial' WHERE task_id = ";

#[test]
fn pid_inside_json_name_not_in_the_command_line_live_untouched_dead_failed_with_a_record_the_client_reads(
) {
    let s = Scenario::new();
    let db = s.path("queue.db");
    task_table(&db);
    let live = Worker::start(&s, "live", &db, &[&format!("{CLAIM}'t-live'")], &[]);
    let dead = Worker::start(&s, "dead", &db, &[&format!("{CLAIM}'t-dead'")], &[]);
    // A claimed task whose worker has not written its pid yet: no identity.
    Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE tasks SET worker = 'node-ffff@' || ?1 WHERE task_id = 't-blind'",
            [hostname()],
        )
        .unwrap();
    let live_name: String = Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT worker FROM tasks WHERE task_id = 't-live'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", live.pid)).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(&live_name),
        "the worker's name is not in its command line"
    );
    let dead_pid = dead.kill();
    job_policy(&s, &db, TASK_CONFIG);

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    let dead_key = orphaned_key(&doc, JOBS);
    assert_eq!(
        keys(&doc, JOBS),
        [
            "job:t-blind:unknown-worker",
            "table:tasks:summary",
            &dead_key
        ],
        "{doc:#}"
    );
    assert!(
        dead_key.starts_with("worker:node-")
            && dead_key.contains(&format!("(pid {dead_pid}, host {})", hostname())),
        "the owner as the row names it: {dead_key}"
    );
    assert_eq!(
        finding(&doc, JOBS, &dead_key).unwrap()["evidence"]["ids"],
        "t-dead"
    );
    let dead_msg = message(&doc, JOBS, &dead_key);
    assert!(
        dead_msg.contains(&format!("pid {dead_pid} is not running")),
        "found by the pid in the JSON: {dead_msg}"
    );
    let blind = message(&doc, JOBS, "job:t-blind:unknown-worker");
    assert!(
        blind.contains("cannot tell whether the worker is alive")
            && blind.contains("no write is proposed"),
        "{blind}"
    );
    assert_eq!(actions(&doc, JOBS, "job:t-blind:unknown-worker"), 0);

    let before_live = task(&db, "t-live");
    let before_blind = task(&db, "t-blind");
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(outcomes(&doc, JOBS, &dead_key), ["applied"], "{doc:#}");
    assert_eq!(code, 1, "the blind row stays a warning: {doc:#}");

    // The application's client reads the failure back.
    let read = client_reads_failure(&db, "t-dead");
    assert!(
        read.starts_with("WorkerLost: doctor: pid ") && read.contains("is not running"),
        "{read}"
    );
    let (_, _, traceback, done_ns) = task(&db, "t-dead");
    assert_eq!(
        traceback, None,
        "the traceback was cleared in the same statement"
    );
    let done_ns = done_ns.expect("done_ns set");
    assert!(
        done_ns > 1_000_000_000_000_000_000,
        "now, in the table's unit (nanoseconds, as its lock was read): {done_ns}"
    );

    assert_eq!(
        task(&db, "t-live"),
        before_live,
        "a live worker's task is never touched"
    );
    assert_eq!(
        task(&db, "t-blind"),
        before_blind,
        "a row without identity is never written"
    );
    assert!(live.running());
}

#[test]
fn a_pid_that_started_after_the_rows_nanosecond_claim_is_a_reused_pid() {
    let s = Scenario::new();
    let db = s.path("queue.db");
    task_table(&db);
    // The row was claimed an hour ago (in nanoseconds) by a worker long gone;
    // the pid in its JSON now belongs to a process that started just now.
    let claim = "UPDATE tasks SET worker = '{name}', result = json_object('pid', {pid}, 'hostname', '{host}'), locked_ns = {now_ns} - 3600000000000 WHERE task_id = 't-dead'";
    let newcomer = Worker::start(&s, "newcomer", &db, &[claim], &[]);
    job_policy(
        &s,
        &db,
        &TASK_CONFIG.replace("on_orphaned = \"fail\"", "on_orphaned = \"report\""),
    );
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    let m = message(&doc, JOBS, &orphaned_key(&doc, JOBS));
    assert!(
        m.contains(&format!("pid {}", newcomer.pid))
            && m.contains("started after the row was claimed"),
        "{m}"
    );
    assert!(newcomer.running());
}

#[test]
fn the_incidents_damage_a_name_searched_in_command_lines_is_refused_at_validate() {
    let s = Scenario::new();
    let db = s.path("queue.db");
    task_table(&db);
    let live = Worker::start(&s, "live", &db, &[&format!("{CLAIM}'t-live'")], &[]);
    // The old way: the name alone, searched where it never appears.
    job_policy(&s, &db, "table = \"tasks\"\nid_column = \"task_id\"\nstatus_column = \"state\"\nworker_column = \"worker\"\nworker_kind = \"name\"\nattempts_column = \"\"\nrunning_statuses = [\"STARTED\"]\non_orphaned = \"fail\"\n");
    let out = s.doctor(&["policy", "validate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("policy.toml:")
            && stderr.contains("worker_kind = \"name\" needs name_pattern"),
        "{stderr}"
    );
    let before = task(&db, "t-live");
    let (code, _) = s.doctor_json(&["fix"]);
    assert_eq!(code, 3);
    // A declared pattern still needs a scope: another deployment's worker may show the name.
    job_policy(&s, &db, "table = \"tasks\"\nid_column = \"task_id\"\nstatus_column = \"state\"\nworker_column = \"worker\"\nworker_kind = \"name\"\nname_pattern = \"--hostname (?P<name>\\\\S+)\"\nattempts_column = \"\"\nrunning_statuses = [\"STARTED\"]\n");
    let out = s.doctor(&["policy", "validate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("with name_pattern needs a scope"),
        "{stderr}"
    );
    let (code, _) = s.doctor_json(&["fix"]);
    assert_eq!(code, 3);
    assert_eq!(task(&db, "t-live"), before);
    assert!(live.running());
}

#[test]
fn a_name_only_identity_is_found_by_its_declared_pattern_inside_the_scope_and_validate_says_it_is_weaker(
) {
    let s = Scenario::new();
    let db = s.path("queue.db");
    task_table(&db);
    let host = hostname();
    let (w1, w2) = (format!("w1@{host}"), format!("w2@{host}"));
    let claim = "UPDATE tasks SET worker = '{name}' WHERE task_id = ";
    let live = Worker::start(
        &s,
        "w1",
        &db,
        &[&format!("{claim}'t-live'")],
        &["--hostname", &w1],
    );
    let dead = Worker::start(
        &s,
        "w2",
        &db,
        &[&format!("{claim}'t-dead'")],
        &["--hostname", &w2],
    );
    dead.kill();
    // Another deployment's worker shows the dead one's name, outside this scope.
    let other = Scenario::new();
    let impostor = Worker::start(
        &other,
        "w2",
        &other.path("none.db"),
        &[],
        &["--hostname", &w2],
    );
    job_policy(
        &s,
        &db,
        &format!(
            "table = \"tasks\"\nid_column = \"task_id\"\nstatus_column = \"state\"\nworker_column = \"worker\"\nworker_kind = \"name\"\nname_pattern = \"--hostname (?P<name>\\\\S+)\"\nscope = {}\nattempts_column = \"\"\nrunning_statuses = [\"STARTED\"]\nfailed_status = \"FAILURE\"\non_orphaned = \"fail\"\n",
            scope(&s)
        ),
    );
    let out = s.doctor(&["policy", "validate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("doctor: warning:")
            && stderr.contains("plugins.job-health.config.worker_kind")
            && stderr.contains("weaker than a pid"),
        "{stderr}"
    );

    let (_, doc) = s.doctor_json(&["fix"]);
    let dead_key = format!("worker:{w2}:orphaned");
    assert_eq!(
        keys(&doc, JOBS),
        [
            "config:weak-identity",
            "job:t-blind:unknown-worker",
            "table:tasks:summary",
            &dead_key
        ],
        "{doc:#}"
    );
    assert!(
        message(&doc, JOBS, &dead_key).contains("no process in scope"),
        "{doc:#}"
    );
    assert_eq!(task(&db, "t-dead").0, "FAILURE");
    assert_eq!(
        task(&db, "t-live").0,
        "STARTED",
        "the live worker's task is untouched"
    );
    assert!(live.running() && impostor.running());
}

/// Heartbeats in every unit a queue library writes, by a real worker.
fn beats_table(s: &Scenario, db: &Path) -> Worker {
    Connection::open(db).unwrap().execute_batch("CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT, pid TEXT, beat, attempts INTEGER NOT NULL DEFAULT 0, updated);").unwrap();
    let two_hours_ns = 7_200_000_000_000i64;
    let rows = [
        format!("INSERT INTO jobs (id, status, beat) VALUES (1, 'running', {{now_ns}} - {two_hours_ns})"),
        format!("INSERT INTO jobs (id, status, beat) VALUES (2, 'running', {{now_us}} - {})", two_hours_ns / 1000),
        "INSERT INTO jobs (id, status, beat) VALUES (3, 'running', strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now', '-2 hours'))".to_string(),
        "INSERT INTO jobs (id, status, beat) VALUES (4, 'running', datetime('now', '-2 hours'))".to_string(),
        "INSERT INTO jobs (id, status, beat) VALUES (5, 'running', julianday('now', '-2 hours'))".to_string(),
        "INSERT INTO jobs (id, status, beat) VALUES (6, 'running', {now_ns})".to_string(),
        "INSERT INTO jobs (id, status, beat) VALUES (7, 'running', {now_us})".to_string(),
        // A heartbeat an hour ahead of the clock: no real heartbeat is.
        "INSERT INTO jobs (id, status, beat) VALUES (8, 'running', {now_s} + 3600)".to_string(),
        // A waiting job queued two hours ago, in microseconds.
        format!("INSERT INTO jobs (id, status, updated) VALUES (9, 'queued', {{now_us}} - {})", two_hours_ns / 1000),
    ];
    let sql: Vec<&str> = rows.iter().map(String::as_str).collect();
    Worker::start(s, "writer", db, &sql, &["--exit"])
}

#[test]
fn nanosecond_microsecond_iso_and_julian_times_are_read_and_a_future_one_is_a_finding() {
    let s = Scenario::new();
    let db = s.path("queue.db");
    let _writer = beats_table(&s, &db);
    // The table records no worker: heartbeat-only judgement, declared by worker_column = "".
    let base = "worker_column = \"\"\nheartbeat_column = \"beat\"\nheartbeat_timeout = \"10m\"\nupdated_column = \"updated\"\nstale_after = \"1h\"\non_orphaned = \"requeue\"\non_stale = \"requeue\"\n[plugins.job-health.config.requeue_set]\nbeat = { now = true }\n";
    job_policy(&s, &db, base);
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    // The table records no worker: its orphaned jobs are one finding.
    assert_eq!(
        keys(&doc, JOBS),
        [
            "job:8:heartbeat-future",
            "job:9:stale",
            "table:jobs:summary",
            "worker:none:orphaned"
        ],
        "{doc:#}"
    );
    let orphaned = finding(&doc, JOBS, "worker:none:orphaned").unwrap();
    assert_eq!(orphaned["evidence"]["ids"], "1, 2, 3, 4, 5");
    // How each row's heartbeat was read, with how many rows were read so.
    assert_eq!(
        orphaned["evidence"]["heartbeat_read_as"],
        "epoch nanoseconds (INTEGER, detected) (1), epoch microseconds (INTEGER, detected) (1), ISO-8601 with zone (TEXT, detected) (1), ISO-8601 without zone, read as UTC (TEXT, detected) (1), SQLite julian day (REAL, detected) (1)"
    );
    let age = message(&doc, JOBS, "worker:none:orphaned");
    assert!(
        age.contains("2h0m old") || age.contains("1h59m old"),
        "{age}"
    );
    let future = message(&doc, JOBS, "job:8:heartbeat-future");
    assert!(
        future.starts_with("timestamp in the future: unit wrong?"),
        "{future}"
    );
    assert_eq!(actions(&doc, JOBS, "job:8:heartbeat-future"), 0);
    assert_eq!(
        finding(&doc, JOBS, "job:9:stale").unwrap()["evidence"]["updated_read_as"],
        "epoch microseconds (INTEGER, detected)"
    );

    // A requeue writes "now" in the unit each row was read in: rows whose
    // writes differ are written by statements of their own.
    let (_, doc) = s.doctor_json(&["fix"]);
    let applied = outcomes(&doc, JOBS, "worker:none:orphaned");
    assert!(
        applied.len() > 1 && applied.iter().all(|o| o == "applied"),
        "{doc:#}"
    );
    let c = Connection::open(&db).unwrap();
    let beat = |id: i64| {
        c.query_row(
            "SELECT beat, typeof(beat) FROM jobs WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, rusqlite::types::Value>(0)?,
                    r.get::<_, String>(1)?,
                ))
            },
        )
        .unwrap()
    };
    let (b1, _) = beat(1);
    assert!(
        matches!(b1, rusqlite::types::Value::Integer(n) if n > 1_000_000_000_000_000_000),
        "nanoseconds: {b1:?}"
    );
    let (b2, _) = beat(2);
    assert!(
        matches!(b2, rusqlite::types::Value::Integer(n) if (1_000_000_000_000_000..1_000_000_000_000_000_000).contains(&n)),
        "microseconds: {b2:?}"
    );
    assert_eq!(beat(3).1, "text");
    assert_eq!(beat(5).1, "real");
    let updated: i64 = c
        .query_row("SELECT updated FROM jobs WHERE id = 9", [], |r| r.get(0))
        .unwrap();
    assert!(
        (1_000_000_000_000_000..1_000_000_000_000_000_000).contains(&updated),
        "the stale job's update time, fresh, in microseconds: {updated}"
    );
    let status8: String = c
        .query_row("SELECT status FROM jobs WHERE id = 8", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status8, "running", "a future heartbeat judges nothing");
}

#[test]
fn a_declared_unit_that_is_wrong_shows_as_the_future_and_nothing_is_written() {
    let s = Scenario::new();
    let db = s.path("queue.db");
    let _writer = beats_table(&s, &db);
    job_policy(&s, &db, "worker_column = \"\"\nheartbeat_column = \"beat\"\nheartbeat_timeout = \"10m\"\ntime_unit = \"ms\"\non_orphaned = \"report\"\n");
    let before = std::fs::read(&db).unwrap();
    let (_, doc) = s.doctor_json(&["fix"]);
    // Nanoseconds and microseconds read as milliseconds lie far ahead.
    for id in [1, 2, 6, 7] {
        let m = message(&doc, JOBS, &format!("job:{id}:heartbeat-future"));
        assert!(
            m.starts_with("timestamp in the future: unit wrong?")
                && m.contains("epoch milliseconds (INTEGER)"),
            "{m}"
        );
    }
    // Rows 5 (a julian day) and 8 (seconds) read as milliseconds are old;
    // none of the rows whose heartbeat lies in the future is orphaned.
    assert_eq!(
        finding(&doc, JOBS, "worker:none:orphaned").unwrap()["evidence"]["ids"],
        "5, 8",
        "a future heartbeat judges nothing: {doc:#}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before, "nothing written");

    // Declared right, nanoseconds are read as such.
    job_policy(&s, &db, "worker_column = \"\"\nheartbeat_column = \"beat\"\nheartbeat_timeout = \"10m\"\ntime_unit = \"ns\"\non_orphaned = \"report\"\n");
    let (_, doc) = s.doctor_json(&["check"]);
    let orphaned = finding(&doc, JOBS, "worker:none:orphaned").unwrap();
    assert!(
        orphaned["evidence"]["ids"]
            .as_str()
            .unwrap()
            .starts_with("1, "),
        "{orphaned:#}"
    );
    assert!(
        orphaned["evidence"]["heartbeat_read_as"]
            .as_str()
            .unwrap()
            .starts_with("epoch nanoseconds (INTEGER)"),
        "{doc:#}"
    );
}

#[test]
fn a_row_without_identity_is_written_only_when_the_policy_opts_into_heartbeat_judgement() {
    let s = Scenario::new();
    let db = s.path("queue.db");
    Connection::open(&db).unwrap().execute_batch("CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT, pid TEXT, beat INTEGER, attempts INTEGER NOT NULL DEFAULT 0);").unwrap();
    // Claimed by a worker that wrote no pid (NULL) and one that wrote a name where a pid belongs.
    let _w = Worker::start(&s, "w", &db, &["INSERT INTO jobs (id, status, pid, beat) VALUES (1, 'running', NULL, {now_s} - 7200), (2, 'running', 'worker-7', {now_s} - 7200)"], &["--exit"]);
    let config =
        "heartbeat_column = \"beat\"\nheartbeat_timeout = \"10m\"\non_orphaned = \"requeue\"\n";
    job_policy(&s, &db, config);
    let before = std::fs::read(&db).unwrap();
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 1, "{doc:#}");
    for id in [1, 2] {
        let key = format!("job:{id}:unknown-worker");
        assert!(
            message(&doc, JOBS, &key).contains("cannot tell whether the worker is alive"),
            "{doc:#}"
        );
        assert_eq!(actions(&doc, JOBS, &key), 0);
    }
    assert_eq!(std::fs::read(&db).unwrap(), before, "no write");

    job_policy(&s, &db, &format!("{config}unidentified = \"heartbeat\"\n"));
    let (_, doc) = s.doctor_json(&["fix"]);
    // Job 1 names no worker, job 2 names `worker-7`: two owners.
    for (key, id) in [
        ("worker:none:orphaned", "1"),
        ("worker:worker-7:orphaned", "2"),
    ] {
        let f = finding(&doc, JOBS, key).unwrap_or_else(|| panic!("{doc:#}"));
        assert_eq!(f["evidence"]["ids"], id);
        assert_eq!(outcomes(&doc, JOBS, key), ["applied"], "{doc:#}");
    }
}

#[test]
fn validate_rejects_statements_posing_as_expressions_and_writes_it_cannot_make() {
    let s = Scenario::new();
    let db = s.path("queue.db");
    task_table(&db);
    Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE loose (id TEXT, state TEXT, worker TEXT, err TEXT);")
        .unwrap();
    let cases: [(&str, &str, &str); 5] = [
        (
            "worker_pid_sql = \"json_extract(result, '$.pid')); DELETE FROM tasks WHERE (1\"",
            "worker_pid_sql",
            "is not a single SQL expression",
        ),
        (
            "worker_pid_sql = \"json_extract(nope, '$.pid')\"",
            "worker_pid_sql",
            "no such column",
        ),
        (
            "[plugins.job-health.config.fail_set]\nexc_info = \"x\"",
            "fail_set",
            "has no column \"exc_info\"",
        ),
        (
            "[plugins.job-health.config.fail_set]\nstate = \"x\"",
            "fail_set",
            "written by the remedy itself",
        ),
        (
            "[plugins.job-health.config.requeue_set]\nresult = { json = { msg = \"{nope}\" } }",
            "requeue_set",
            "unknown placeholder {nope}",
        ),
    ];
    let base = "table = \"tasks\"\nid_column = \"task_id\"\nstatus_column = \"state\"\nworker_column = \"worker\"\nattempts_column = \"retries\"\n";
    for (extra, key, says) in cases {
        job_policy(&s, &db, &format!("{base}{extra}\n"));
        let out = s.doctor(&["policy", "validate"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{extra}: {stderr}");
        assert!(
            stderr.contains("policy.toml:") && stderr.contains(key) && stderr.contains(says),
            "{extra}: {stderr}"
        );
    }
    // A compare-and-swap on a column that is not the key could change many rows.
    job_policy(&s, &db, "table = \"loose\"\nworker_column = \"worker\"\nstatus_column = \"state\"\nattempts_column = \"\"\n[plugins.job-health.config.fail_set]\nerr = \"lost\"\n");
    let out = s.doctor(&["policy", "validate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("neither the primary key nor UNIQUE"),
        "{stderr}"
    );
}

fn chunk_rows(db: &Path) -> Vec<(i64, String, Option<String>)> {
    let c = Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT id, status, assigned_worker FROM chunks ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn chunk_reset_reads_the_same_shapes_pid_in_json_name_not_in_the_command_line_nanosecond_claims() {
    let s = Scenario::new();
    let db = s.path("cluster.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TABLE chunks (id INTEGER PRIMARY KEY, status TEXT, assigned_worker TEXT, owner_info TEXT, claimed_ns INTEGER, beat_us INTEGER);
             INSERT INTO chunks (id, status) VALUES (1, 'running'), (2, 'running'), (3, 'running'), (4, 'running'), (5, 'running');",
        )
        .unwrap();
    let claim = "UPDATE chunks SET assigned_worker = '{name}', owner_info = json_object('pid', {pid}, 'hostname', '{host}'), claimed_ns = {now_ns}, beat_us = {now_us} WHERE id = ";
    let live = Worker::start(&s, "live", &db, &[&format!("{claim}1")], &[]);
    let dead = Worker::start(&s, "dead", &db, &[&format!("{claim}2")], &[]);
    let dead_pid = dead.kill();
    let c = Connection::open(&db).unwrap();
    // 3: a name and no pid at all; 4: another host's worker, its microsecond heartbeat two hours old;
    // 5: a claim time an hour in the future (unit wrong?) on a live worker's row.
    c.execute(
        "UPDATE chunks SET assigned_worker = 'node-ffff@' || ?1 WHERE id = 3",
        [hostname()],
    )
    .unwrap();
    c.execute_batch(
        "UPDATE chunks SET assigned_worker = 'node-1@elsewhere', owner_info = json_object('pid', 1, 'hostname', 'elsewhere'),
                           beat_us = CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER) - 7200000000 WHERE id = 4;",
    )
    .unwrap();
    c.execute(
        "UPDATE chunks SET assigned_worker = (SELECT assigned_worker FROM chunks WHERE id = 1), owner_info = (SELECT owner_info FROM chunks WHERE id = 1),
                           beat_us = (SELECT beat_us FROM chunks WHERE id = 1),
                           claimed_ns = CAST((julianday('now') - 2440587.5) * 86400 AS INTEGER) * 1000000000 + 3600000000000 WHERE id = 5",
        [],
    )
    .unwrap();
    drop(c);
    s.chunk_reset_policy(
        &db,
        "",
        "worker_kind = \"name\"\nworker_pid_sql = \"json_extract(owner_info, '$.pid')\"\nworker_host_sql = \"json_extract(owner_info, '$.hostname')\"\nstarted_at_column = \"claimed_ns\"\nheartbeat_column = \"beat_us\"\nheartbeat_timeout = \"10m\"\n",
    );
    let (_, doc) = s.doctor_json(&["check"]);
    let dead_key = keys(&doc, CHUNKS)
        .into_iter()
        .find(|k| k.contains(&format!("(pid {dead_pid}, ")))
        .unwrap_or_else(|| panic!("{doc:#}"));
    let remote_key = "worker:node-1@elsewhere (pid 1, host elsewhere):orphaned";
    let mut want = [
        "chunk:chunks:3:unknown-worker",
        "chunk:chunks:5:claimed-future",
        "table:chunks:state",
        remote_key,
        &dead_key,
    ];
    want.sort();
    assert_eq!(keys(&doc, CHUNKS), want, "{doc:#}");
    assert!(
        message(&doc, CHUNKS, &dead_key).contains(&format!("pid {dead_pid} is not running")),
        "{doc:#}"
    );
    assert!(
        message(&doc, CHUNKS, remote_key).contains("epoch microseconds (INTEGER, detected)"),
        "{doc:#}"
    );
    assert!(
        message(&doc, CHUNKS, "chunk:chunks:5:claimed-future")
            .starts_with("timestamp in the future: unit wrong?"),
        "{doc:#}"
    );

    let (_, doc) = s.doctor_json(&["fix"]);
    assert_eq!(outcomes(&doc, CHUNKS, &dead_key), ["applied"], "{doc:#}");
    // The remote row's reset also compared its heartbeat as read.
    let statement =
        finding(&doc, CHUNKS, remote_key).unwrap()["actions"][0]["description"].to_string();
    assert_eq!(
        outcomes(&doc, CHUNKS, remote_key),
        ["applied"],
        "{statement}"
    );
    let rows = chunk_rows(&db);
    assert_eq!(rows[1], (2, "pending".into(), None));
    assert_eq!(rows[3], (4, "pending".into(), None));
    for i in [0usize, 2, 4] {
        assert_eq!(rows[i].1, "running", "chunk {} untouched: {rows:?}", i + 1);
    }
    assert!(live.running());
}
