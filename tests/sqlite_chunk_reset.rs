//! The incident: a coordinator crashed; its SQLite `chunks` table still says
//! work is `running` for workers that are gone. Real SQLite files, real worker
//! processes (python3 writing to the file), the real `doctor` binary.

mod support;

use rusqlite::Connection;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{finding, findings, plugin_summary, Proc, Scenario};

const PLUGIN: &str = "sqlite-chunk-reset";

fn worker_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/workers/db_worker.py")
        .display()
        .to_string()
}

/// A chunk table like the coordinator's: 3 pending, 2 complete (ids 1..=5).
fn chunks_db(path: &Path, wal: bool) {
    let c = Connection::open(path).unwrap();
    if wal {
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
    }
    c.execute_batch(
        "CREATE TABLE chunks (id INTEGER PRIMARY KEY, status TEXT NOT NULL, assigned_worker TEXT, started_at INTEGER, payload TEXT);
         INSERT INTO chunks (id, status, payload) VALUES (1, 'pending', 'a'), (2, 'pending', 'b'), (3, 'pending', 'c'),
                                                         (4, 'complete', 'd'), (5, 'complete', 'e');",
    )
    .unwrap();
}

fn rows(path: &Path) -> Vec<(i64, String, Option<String>, Option<i64>)> {
    let c = Connection::open(path).unwrap();
    let mut stmt = c
        .prepare("SELECT id, status, assigned_worker, started_at FROM chunks ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Workers of this scenario only: tests run in parallel, and a pattern that
/// matched every test's workers would let one scenario stop another's.
fn worker_pattern(s: &Scenario) -> String {
    format!(
        "db_worker\\\\.py .*{}",
        s.root().file_name().unwrap().to_str().unwrap()
    )
}

/// This deployment's scope: the test's own user (its workers run as it).
fn my_scope() -> String {
    format!("scope = {{ user = {} }}", nix::unistd::getuid().as_raw())
}

fn signal_grant(s: &Scenario) -> String {
    format!("grants.signal = {{ match = [\"{}\"] }}", worker_pattern(s))
}

/// The chunk table of `chunks_db`, its workers matched; `extra_config` is
/// more config lines.
fn policy(s: &Scenario, db: &Path, extra_grants: &str, extra_config: &str) {
    let config = format!("table = \"chunks\"\nworker_column = \"assigned_worker\"\nworker_match = \"{}\"\n{extra_config}", worker_pattern(s));
    s.chunk_reset_policy(db, extra_grants, &config);
}

/// A python worker that runs `sql` (with {pid}) against the database, says it
/// is ready, and stays alive.
fn worker(s: &Scenario, db: &Path, name: &str, sql: &[&str], extra: &[&str]) -> Proc {
    let ready = s.path(&format!("{name}.ready"));
    let script = worker_script();
    let db = db.display().to_string();
    let ready_s = ready.display().to_string();
    let mut argv: Vec<&str> = vec!["python3", &script, &db, "--ready", &ready_s];
    for q in sql {
        argv.extend(["--exec", q]);
    }
    argv.extend(extra);
    let p = Proc::spawn(&argv);
    wait_for(&ready, Duration::from_secs(10));
    p
}

fn wait_for(path: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill(mut p: Proc) -> u32 {
    let pid = p.pid();
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    assert!(!p.running());
    pid
}

fn orphan_keys(doc: &serde_json::Value) -> Vec<String> {
    findings(doc, PLUGIN)
        .into_iter()
        .filter(|f| f["key"].as_str().unwrap().ends_with(":orphaned"))
        .map(|f| f["key"].as_str().unwrap().to_string())
        .collect()
}

fn action_outcomes(doc: &serde_json::Value, key: &str) -> Vec<(String, String)> {
    finding(doc, PLUGIN, key).unwrap_or_else(|| panic!("no finding {key} in {doc:#}"))["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_killed_workers_three_chunks_are_reported_reset_and_then_resolved() {
    let s = Scenario::new();
    let db = s.path("cluster.db");
    chunks_db(&db, false);
    let w = worker(&s, &db, "w", &["UPDATE chunks SET status = 'running', assigned_worker = '{pid}', started_at = 1700000000 WHERE id IN (1, 2, 3)"], &[]);
    let dead = kill(w);
    policy(&s, &db, "", "");

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "orphaned work is critical: {doc:#}");
    // One finding for the dead worker, naming its three chunks.
    let key = format!("worker:{dead}:orphaned");
    assert_eq!(orphan_keys(&doc), vec![key.clone()]);
    let f = finding(&doc, PLUGIN, &key).unwrap();
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["status"], "new");
    assert_eq!(f["evidence"]["worker"], dead.to_string());
    assert_eq!(f["evidence"]["count"], "3");
    assert_eq!(f["evidence"]["ids"], "1, 2, 3");
    let message = f["message"].as_str().unwrap();
    assert!(
        message.starts_with("3 chunks (1, 2, 3) are running for worker")
            && message.contains(&format!("pid {dead} is not running")),
        "{f:#}"
    );
    assert_eq!(
        action_outcomes(&doc, &key),
        vec![("sql-exec".into(), "planned".into())],
        "the three resets are one set-based compare-and-swap"
    );
    let state = finding(&doc, PLUGIN, "table:chunks:state").unwrap();
    assert_eq!(state["severity"], "info");
    assert_eq!(state["evidence"]["state"], "Pending");
    assert_eq!(state["evidence"]["orphaned"], "3");
    assert_eq!(state["evidence"]["progress"], "40.0%");
    assert!(
        rows(&db).iter().filter(|r| r.1 == "running").count() == 3,
        "check changed nothing"
    );

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "every orphan fixed: {doc:#}");
    assert_eq!(
        action_outcomes(&doc, &key),
        vec![("sql-exec".into(), "applied".into())]
    );
    assert_eq!(finding(&doc, PLUGIN, &key).unwrap()["status"], "fixed");
    let after = rows(&db);
    for r in &after[..3] {
        assert_eq!(
            (r.1.as_str(), r.2.as_deref(), r.3),
            ("pending", None, None),
            "{after:?}"
        );
    }
    assert_eq!(after[3].1, "complete");
    // The journal has the write with its row counts.
    let journal = s.journal();
    let recorded: Vec<(String, Option<String>, Option<String>)> = journal
        .prepare("SELECT outcome, before, after FROM actions WHERE plugin = ?1 AND kind = 'sql-exec' AND outcome != 'planned' ORDER BY id")
        .unwrap()
        .query_map([PLUGIN], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(recorded.len(), 1);
    for (outcome, before, after) in &recorded {
        assert_eq!(outcome, "applied");
        assert!(before.as_deref().unwrap().contains("3 row"), "{before:?}");
        assert!(after.as_deref().unwrap().contains("3 row"), "{after:?}");
    }

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 0, "{doc:#}");
    assert!(orphan_keys(&doc).is_empty(), "{doc:#}");
    assert_eq!(
        finding(&doc, PLUGIN, "table:chunks:state").unwrap()["evidence"]["state"],
        "Pending"
    );
    let statuses: Vec<String> = journal
        .prepare("SELECT status FROM findings WHERE plugin = ?1 AND key LIKE 'worker:%:orphaned' ORDER BY key")
        .unwrap()
        .query_map([PLUGIN], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(statuses, vec!["resolved"]);
}

#[test]
fn only_the_dead_workers_chunk_is_reset_and_the_live_worker_is_untouched() {
    let s = Scenario::new();
    let db = s.path("cluster.db");
    chunks_db(&db, false);
    let mut live = worker(&s, &db, "live", &["UPDATE chunks SET status = 'running', assigned_worker = '{pid}:{start}', started_at = 1 WHERE id = 1"], &[]);
    let dead = worker(&s, &db, "dead", &["UPDATE chunks SET status = 'running', assigned_worker = '{pid}:{start}', started_at = 2 WHERE id = 2"], &[]);
    let dead_value = rows(&db)[1].2.clone().unwrap();
    kill(dead);
    policy(&s, &db, &signal_grant(&s), "");

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        orphan_keys(&doc),
        vec![format!("worker:{dead_value}:orphaned")]
    );
    let after = rows(&db);
    assert_eq!(
        after[0],
        (
            1,
            "running".into(),
            Some(format!("{}:{}", live.pid(), start_ticks(live.pid()))),
            Some(1)
        )
    );
    assert_eq!(
        after[1],
        (2, "pending".into(), None, None),
        "dead worker {dead_value}"
    );
    assert!(live.running(), "the live worker is never signalled");
    let state = finding(&doc, PLUGIN, "table:chunks:state").unwrap();
    assert_eq!(state["evidence"]["state"], "Processing", "{state:#}");
}

#[test]
fn the_race_a_live_worker_takes_the_row_between_check_and_write_and_keeps_it() {
    let s = Scenario::new();
    let db = s.path("cluster.db");
    chunks_db(&db, true);
    let dead = worker(&s, &db, "dead", &["UPDATE chunks SET status = 'running', assigned_worker = '{pid}', started_at = 5 WHERE id = 1"], &[]);
    let dead_pid = kill(dead);
    policy(&s, &db, "", "");
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2);
    let key = format!("worker:{dead_pid}:orphaned");
    assert_eq!(orphan_keys(&doc), vec![key.clone()]);

    // The new worker claims chunk 1 in a transaction it holds open while the
    // doctor reads (WAL: the doctor sees the orphan), and commits before the
    // doctor's write gets the lock (it waits up to its busy timeout).
    let taker = worker(
        &s,
        &db,
        "taker",
        &["BEGIN IMMEDIATE", "UPDATE chunks SET assigned_worker = '{pid}', started_at = 9 WHERE id = 1 AND status = 'running'"],
        &["--wal", "--hold", "1.2", "--exec-after", "COMMIT"],
    );
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(
        action_outcomes(&doc, &key),
        vec![("sql-exec".into(), "skipped".into())],
        "{doc:#}"
    );
    let action = &finding(&doc, PLUGIN, &key).unwrap()["actions"][0];
    assert!(
        action["detail"]
            .as_str()
            .unwrap()
            .contains("compare-and-swap"),
        "{action:#}"
    );
    assert_eq!(code, 0, "a lost race is not a failure: {doc:#}");
    let after = rows(&db);
    assert_eq!(
        after[0],
        (1, "running".into(), Some(taker.pid().to_string()), Some(9)),
        "the live worker's row is left alone (dead was {dead_pid})"
    );
    let journal = s.journal();
    let outcome: String = journal
        .query_row("SELECT outcome FROM actions WHERE plugin = ?1 AND kind = 'sql-exec' ORDER BY id DESC LIMIT 1", [PLUGIN], |r| r.get(0))
        .unwrap();
    assert_eq!(outcome, "skipped");
}

#[test]
fn coordinator_absent_the_reset_comes_first_and_the_leftover_worker_is_stopped_second() {
    let s = Scenario::new();
    let db = s.path("cluster.db");
    chunks_db(&db, false);
    let dump = s.path("seen-at-term.txt");
    let dump_s = dump.display().to_string();
    let mut w = worker(
        &s,
        &db,
        "w",
        &["UPDATE chunks SET status = 'running', assigned_worker = '{pid}', started_at = 7 WHERE id IN (1, 2)"],
        &["--on-term-dump", "SELECT id, status, assigned_worker FROM chunks WHERE id IN (1, 2) ORDER BY id", "--dump", &dump_s],
    );
    policy(
        &s,
        &db,
        &signal_grant(&s),
        &format!(
            "coordinator_match = \"no-such-coordinator-\\\\d{{6}}\"\ngrace_ms = 3000\n{}",
            my_scope()
        ),
    );

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2);
    assert_eq!(
        orphan_keys(&doc),
        vec![format!("worker:{}:orphaned", w.pid())]
    );
    let leftover = format!("worker:{}:leftover", w.pid());
    assert!(finding(&doc, PLUGIN, &leftover).is_some(), "{doc:#}");
    assert!(w.running());

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        action_outcomes(&doc, &leftover),
        vec![("stop-process".into(), "applied".into())]
    );
    assert!(
        w.reap(Duration::from_secs(5)).is_some(),
        "the leftover worker was stopped"
    );
    // What the worker itself saw when the TERM arrived: the reset had already happened.
    assert_eq!(
        std::fs::read_to_string(&dump).unwrap(),
        "1|pending|\n2|pending|\n"
    );
    assert_eq!(
        &rows(&db)[..2],
        &[
            (1, "pending".into(), None, None),
            (2, "pending".into(), None, None)
        ]
    );
    // And the journal's order of execution says the same.
    let kinds: Vec<String> = s
        .journal()
        .prepare("SELECT kind FROM actions WHERE plugin = ?1 AND outcome = 'applied' ORDER BY id")
        .unwrap()
        .query_map([PLUGIN], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(kinds, vec!["sql-exec", "stop-process"]);
}

/// The coordinator-absent incident with a leftover worker that ignores TERM
/// and holds chunks 1 and 2; the policy stops it with a 300 ms grace.
fn stubborn_leftover(s: &Scenario, db: &Path) -> Proc {
    chunks_db(db, false);
    let w = worker(
        s,
        db,
        "w",
        &["UPDATE chunks SET status = 'running', assigned_worker = '{pid}', started_at = 7 WHERE id IN (1, 2)"],
        &["--ignore-term"],
    );
    policy(
        s,
        db,
        &signal_grant(s),
        &format!(
            "coordinator_match = \"no-such-coordinator-\\\\d{{6}}\"\ngrace_ms = 300\n{}",
            my_scope()
        ),
    );
    w
}

/// `doctor fix` that SIGKILLs itself after its Nth action took effect
/// (`DOCTOR_TEST_KILL_AFTER_ACTIONS`), or None to run it whole.
fn fix_killed_after(s: &Scenario, actions: Option<u32>) -> std::process::Child {
    let mut cmd = std::process::Command::new(support::DOCTOR);
    cmd.args(["fix", "--format", "json", "--policy"])
        .arg(s.policy_path())
        .env("DOCTOR_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(n) = actions {
        cmd.env("DOCTOR_TEST_KILL_AFTER_ACTIONS", n.to_string());
    }
    cmd.spawn().unwrap()
}

/// (params, outcome, resumes) of every stop-process intent.
fn stop_intents(s: &Scenario) -> Vec<(String, Option<String>, Option<i64>)> {
    s.journal()
        .prepare(
            "SELECT params, outcome, resumes FROM intents WHERE kind = 'stop-process' ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn killed_between_the_reset_and_the_stop_the_next_fix_stops_the_leftover_worker() {
    let s = Scenario::new();
    let db = s.path("cluster.db");
    let mut w = stubborn_leftover(&s, &db);
    // Killed right after the reset (one set-based write for the owner's two
    // chunks) took effect: the stop never began.
    let status = fix_killed_after(&s, Some(1)).wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert_eq!(
        &rows(&db)[..2],
        &[
            (1, "pending".into(), None, None),
            (2, "pending".into(), None, None)
        ]
    );
    assert!(w.running());

    // No row names the worker any more; the journal's open intent does.
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    let interrupted: Vec<_> = findings(&doc, PLUGIN)
        .into_iter()
        .filter(|f| {
            f["key"]
                .as_str()
                .unwrap()
                .starts_with("doctor:interrupted:")
        })
        .collect();
    assert_eq!(interrupted.len(), 1, "{doc:#}");
    let key = interrupted[0]["key"].as_str().unwrap().to_string();
    assert_eq!(interrupted[0]["severity"], "critical");
    assert!(
        interrupted[0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {}", w.pid())),
        "{doc:#}"
    );
    assert_eq!(
        action_outcomes(&doc, &key),
        vec![("stop-process".into(), "planned".into())]
    );
    assert!(w.running(), "check changes nothing");

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        action_outcomes(&doc, &key),
        vec![("stop-process".into(), "applied".into())]
    );
    let action = &finding(&doc, PLUGIN, &key).unwrap()["actions"][0];
    assert!(
        action["description"]
            .as_str()
            .unwrap()
            .starts_with("resume: "),
        "{action}"
    );
    assert!(w.reap(Duration::from_secs(5)).is_some(), "stopped at last");
    // The new intent names the one it carried out, which is closed.
    let stops = stop_intents(&s);
    assert_eq!(stops.len(), 2, "{stops:?}");
    assert_eq!(stops[0].1.as_deref(), Some("interrupted"));
    assert_eq!(stops[1].1.as_deref(), Some("applied"));
    assert!(stops[1].2.is_some(), "{stops:?}");
    let open: i64 = s
        .journal()
        .query_row(
            "SELECT count(*) FROM intents WHERE open IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(open, 0);
    // Closed: nothing left for the operator to clear.
    let out = s.doctor(&["journal", "clear-intent", "1"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an open interrupted intent"),
        "{out:?}"
    );

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 0, "{doc:#}");
    assert!(finding(&doc, PLUGIN, &key).is_none(), "{doc:#}");
}

#[test]
fn killed_at_random_moments_of_a_fix_the_next_fix_converges() {
    // Spread over a fix's life: loading, the check, the two resets, the stop's grace.
    let delays = [
        40u64, 100, 150, 200, 250, 300, 350, 400, 450, 500, 550, 600, 700, 800, 900, 1000,
    ];
    let (mut rounds_mid_fix, mut doubled) = (0, 0);
    for delay in delays {
        let s = Scenario::new();
        let db = s.path("cluster.db");
        let mut w = stubborn_leftover(&s, &db);
        let mut child = fix_killed_after(&s, None);
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let killed = !child.wait().unwrap().success();
        w.reap(Duration::from_millis(100));
        // A kill can come before the journal has its tables.
        let journaled = s.journal_path().exists()
            && s.journal()
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'intents'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or(0)
                == 1;
        if killed && journaled {
            rounds_mid_fix += stop_intents(&s)
                .iter()
                .filter(|(_, o, _)| o.is_none())
                .count();
        }
        let (code, doc) = s.doctor_json(&["fix"]);
        let when = format!("killed after {delay} ms");
        assert_eq!(code, 0, "{when}: the next fix converges: {doc:#}");
        assert!(
            w.reap(Duration::from_secs(5)).is_some(),
            "{when}: the leftover worker is stopped"
        );
        assert!(
            rows(&db)
                .iter()
                .all(|(_, status, _, _)| status != "running"),
            "{when}: no running chunk left: {:?}",
            rows(&db)
        );
        let applied = stop_intents(&s)
            .iter()
            .filter(|(_, o, _)| o.as_deref() == Some("applied"))
            .count();
        doubled += applied.saturating_sub(1);
        assert!(
            applied <= 1,
            "{when}: stopped twice: {:?}",
            stop_intents(&s)
        );
    }
    eprintln!(
        "chunk-reset kills: {} rounds, {rounds_mid_fix} stops interrupted, {doubled} doubled",
        delays.len()
    );
}

#[test]
fn coordinator_absent_with_signal_denied_the_reset_still_happens_and_the_stop_is_refused() {
    let s = Scenario::new();
    let db = s.path("cluster.db");
    chunks_db(&db, false);
    let mut w = worker(&s, &db, "w", &["UPDATE chunks SET status = 'running', assigned_worker = '{pid}', started_at = 7 WHERE id = 3"], &[]);
    policy(
        &s,
        &db,
        "",
        &format!(
            "coordinator_match = \"no-such-coordinator-\\\\d{{6}}\"\n{}",
            my_scope()
        ),
    );

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 2, "a refused stop is a failed fix: {doc:#}");
    assert_eq!(
        action_outcomes(&doc, &format!("worker:{}:orphaned", w.pid())),
        vec![("sql-exec".into(), "applied".into())]
    );
    let leftover = format!("worker:{}:leftover", w.pid());
    assert_eq!(
        action_outcomes(&doc, &leftover),
        vec![("stop-process".into(), "refused".into())]
    );
    let detail = finding(&doc, PLUGIN, &leftover).unwrap()["actions"][0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("signal"),
        "the refusal names the grant: {detail}"
    );
    assert_eq!(rows(&db)[2], (3, "pending".into(), None, None));
    assert!(w.running(), "nothing was signalled");
}

/// A file owned by someone else: chown to an unused uid.
const OTHER_UID: u32 = 23456;

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn unwritable_setup(file_mode: u32, dir_mode: u32) -> (Scenario, PathBuf, PathBuf, Vec<u8>) {
    let s = Scenario::new();
    let dir = s.path("srv");
    std::fs::create_dir(&dir).unwrap();
    let db = dir.join("cluster.db");
    chunks_db(&db, false);
    let w = worker(
        &s,
        &db,
        "w",
        &["UPDATE chunks SET status = 'running', assigned_worker = '{pid}' WHERE id = 1"],
        &[],
    );
    kill(w);
    chown(&db, OTHER_UID);
    chown(&dir, OTHER_UID);
    chmod(&db, file_mode);
    chmod(&dir, dir_mode);
    policy(&s, &db, "", "service_user = \"nobody\"");
    let bytes = std::fs::read(&db).unwrap();
    (s, db, dir, bytes)
}

#[test]
fn a_read_only_database_file_is_diagnosed_with_owner_mode_and_fix_and_nothing_is_written() {
    let (s, db, dir, bytes) = unwritable_setup(0o444, 0o777);
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 2, "{doc:#}");
    let f = finding(&doc, PLUGIN, "db:cluster:unwritable").unwrap_or_else(|| panic!("{doc:#}"));
    assert_eq!(f["severity"], "critical");
    let msg = f["message"].as_str().unwrap();
    assert!(msg.contains("user nobody cannot write its file"), "{msg}");
    assert!(
        msg.contains(&format!("owner uid {OTHER_UID}")) && msg.contains("mode 0444"),
        "{msg}"
    );
    assert!(
        !msg.contains("its directory"),
        "the directory is fine: {msg}"
    );
    let fix = format!("chown nobody {p} && chmod u+w {p}", p = db.display());
    assert_eq!(f["evidence"]["fix"], fix);
    assert!(
        f["actions"].as_array().unwrap().is_empty(),
        "permissions are never changed by the doctor"
    );
    let keys = orphan_keys(&doc);
    assert_eq!(keys.len(), 1, "{doc:#}");
    let orphan = finding(&doc, PLUGIN, &keys[0]).unwrap();
    assert!(
        orphan["actions"].as_array().unwrap().is_empty(),
        "the reset is withheld: {orphan:#}"
    );
    assert!(
        orphan["evidence"]["reset"]
            .as_str()
            .unwrap()
            .starts_with("withheld"),
        "{orphan:#}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), bytes, "nothing written");
    assert_eq!(
        std::fs::metadata(&db).unwrap().permissions().mode() & 0o7777,
        0o444
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "no journal file left behind"
    );
}

#[test]
fn a_database_directory_the_user_cannot_write_is_diagnosed_and_nothing_is_written() {
    let (s, db, dir, bytes) = unwritable_setup(0o666, 0o555);
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 2, "{doc:#}");
    let f = finding(&doc, PLUGIN, "db:cluster:unwritable").unwrap_or_else(|| panic!("{doc:#}"));
    let msg = f["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("its directory {}", dir.display())),
        "{msg}"
    );
    assert!(
        msg.contains("mode 0555") && msg.contains(&format!("owner uid {OTHER_UID}")),
        "{msg}"
    );
    assert!(
        msg.contains("journal"),
        "says why the directory matters: {msg}"
    );
    assert_eq!(
        f["evidence"]["fix"],
        format!("chown nobody {p} && chmod u+wx {p}", p = dir.display())
    );
    assert_eq!(std::fs::read(&db).unwrap(), bytes, "nothing written");
    assert_eq!(rows(&db)[0].1, "running");
}

#[test]
fn a_write_that_would_change_more_rows_than_max_rows_is_rolled_back() {
    // A table whose configured id column is not unique: the per-chunk reset
    // would change two rows, more than its max-rows of 1.
    let s = Scenario::new();
    let db = s.path("cluster.db");
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE chunks (rowid_ INTEGER PRIMARY KEY, batch INTEGER, status TEXT, assigned_worker TEXT, started_at INTEGER);
         INSERT INTO chunks (batch, status) VALUES (1, 'pending'), (1, 'pending'), (2, 'pending');",
    )
    .unwrap();
    drop(c);
    let w = worker(
        &s,
        &db,
        "w",
        &["UPDATE chunks SET status = 'running', assigned_worker = '{pid}' WHERE batch = 1"],
        &[],
    );
    kill(w);
    policy(&s, &db, "", "id_column = \"batch\"");
    let before = std::fs::read(&db).unwrap();

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 2, "{doc:#}");
    let f = finding(&doc, PLUGIN, &orphan_keys(&doc)[0]).unwrap();
    assert_eq!(f["evidence"]["ids"], "1", "one key, judged once");
    assert_eq!(f["actions"][0]["outcome"], "failed");
    let detail = f["actions"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("max-rows 1") && detail.contains("rolled back"),
        "{detail}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before, "nothing changed");
    let after: String = s
        .journal()
        .query_row(
            "SELECT after FROM actions WHERE plugin = ?1 AND outcome = 'failed'",
            [PLUGIN],
            |r| r.get(0),
        )
        .unwrap();
    assert!(after.contains("0 rows changed"), "{after}");
}

#[test]
fn a_wrong_column_name_is_a_clear_error_and_nothing_changes() {
    let s = Scenario::new();
    let db = s.path("cluster.db");
    chunks_db(&db, false);
    let w = worker(
        &s,
        &db,
        "w",
        &["UPDATE chunks SET status = 'running', assigned_worker = '{pid}' WHERE id = 1"],
        &[],
    );
    kill(w);
    policy(&s, &db, "", "status_column = \"state\"");
    let before = std::fs::read(&db).unwrap();
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 3, "the doctor could not do its job: {doc:#}");
    let error = plugin_summary(&doc, PLUGIN)["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("status_column")
            && error.contains("\"state\"")
            && error.contains("assigned_worker"),
        "{error}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before);
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

#[test]
fn owners_beyond_max_chunk_findings_share_one_overflow_finding() {
    let s = Scenario::new();
    let db = s.path("cluster.db");
    chunks_db(&db, false);
    let big = worker(&s, &db, "big", &["UPDATE chunks SET status = 'running', assigned_worker = '{pid}', started_at = 3 WHERE id IN (1, 2, 3)"], &[]);
    let small = worker(&s, &db, "small", &["UPDATE chunks SET status = 'running', assigned_worker = '{pid}', started_at = 4 WHERE id IN (4, 5)"], &[]);
    let (big, small) = (kill(big), kill(small));
    policy(&s, &db, "", "max_chunk_findings = 1");
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2);
    assert_eq!(
        orphan_keys(&doc),
        vec![format!("worker:{big}:orphaned")],
        "the owner with most chunks has its own finding"
    );
    let overflow = finding(&doc, PLUGIN, "chunks:chunks:orphaned-overflow")
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert_eq!(overflow["evidence"]["count"], "2");
    assert_eq!(overflow["evidence"]["ids"], "4, 5");
    assert_eq!(overflow["evidence"]["workers"], small.to_string());
    assert_eq!(
        overflow["actions"].as_array().unwrap().len(),
        1,
        "one set-based compare-and-swap for the other worker's chunks"
    );

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc:#}");
    for key in [
        format!("worker:{big}:orphaned"),
        "chunks:chunks:orphaned-overflow".into(),
    ] {
        assert_eq!(
            action_outcomes(&doc, &key),
            vec![("sql-exec".into(), "applied".into())]
        );
    }
    assert!(
        rows(&db)
            .iter()
            .all(|r| r.1 == "pending" && r.2.is_none() && r.3.is_none()),
        "{:?}",
        rows(&db)
    );
}

/// One set-based reset, one row of it taken meanwhile: by a process that
/// reused the dead worker's pid (same owner value) and claimed the chunk
/// anew. The claim time is part of each row's compare-and-swap: the other
/// rows are reset, that one is left to its new owner.
#[test]
fn a_row_reclaimed_under_the_same_owner_between_check_and_write_is_left_out_of_the_set() {
    let s = Scenario::new();
    let db = s.path("cluster.db");
    chunks_db(&db, true);
    let dead = worker(
        &s,
        &db,
        "dead",
        &["UPDATE chunks SET status = 'running', assigned_worker = '{pid}', started_at = 5"],
        &[],
    );
    let dead_pid = kill(dead);
    policy(&s, &db, "", "");
    let key = format!("worker:{dead_pid}:orphaned");
    let taker = worker(
        &s,
        &db,
        "taker",
        &[
            "BEGIN IMMEDIATE",
            &format!(
                "UPDATE chunks SET started_at = 9 WHERE id = 3 AND assigned_worker = '{dead_pid}'"
            ),
        ],
        &["--wal", "--hold", "1.2", "--exec-after", "COMMIT"],
    );
    let (code, doc) = s.doctor_json(&["fix"]);
    // The re-check still sees chunk 3 running for a pid that is not running
    // (this test's stand-in for the reusing process is another pid): persisting.
    assert_eq!(code, 2, "{doc:#}");
    let f = finding(&doc, PLUGIN, &key).unwrap();
    assert_eq!(f["status"], "persisting", "{f:#}");
    let action = &f["actions"][0];
    assert_eq!(action["outcome"], "applied", "{action:#}");
    assert!(
        action["detail"]
            .as_str()
            .unwrap()
            .contains("changed 4 row(s)"),
        "{action:#}"
    );
    let after = rows(&db);
    assert_eq!(
        after[2],
        (3, "running".into(), Some(dead_pid.to_string()), Some(9)),
        "the re-claimed chunk keeps its new claim"
    );
    assert!(
        after
            .iter()
            .filter(|r| r.0 != 3)
            .all(|r| r.1 == "pending" && r.2.is_none()),
        "{after:?}"
    );
    drop(taker);
}

/// A chunk table of `rows`: 60 % complete, the rest pending.
fn big_chunks_db(path: &Path, rows: i64) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE chunks (id INTEGER PRIMARY KEY, status TEXT NOT NULL, assigned_worker TEXT, started_at INTEGER, payload TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO chunks SELECT i, CASE WHEN i <= {rows} * 6 / 10 THEN 'complete' ELSE 'pending' END, NULL, NULL, 'chunk-' || i FROM n;
         CREATE INDEX chunks_by_status ON chunks (status);"
    ))
    .unwrap();
}

/// Issue 21, item 4: a large incident within the default budget. 100,000
/// chunks; five real workers each claim 2,000 of them (scattered ids;
/// three in one batch, two chunk by chunk) and are SIGKILLed; a live worker
/// holds 100. One `doctor fix` with the default action budget (40 per
/// plugin) resets all 10,000 in one run, one finding per dead worker, one
/// set-based compare-and-swap each (two where the claim times differ per
/// chunk, which each row's guard lists: the statement size bound splits
/// it); the live worker's chunks are untouched.
#[test]
fn ten_thousand_chunks_of_five_dead_workers_are_reset_in_one_run_within_the_default_budget() {
    let s = Scenario::new();
    let db = s.path("cluster.db");
    big_chunks_db(&db, 100_000);
    // A batch claimed at once (one claim time), or chunk by chunk (a claim time each).
    let claim = |n: i64, at: &str| {
        format!("UPDATE chunks SET status = 'running', assigned_worker = '{{pid}}', started_at = {at} WHERE id IN (SELECT id FROM chunks WHERE status = 'pending' ORDER BY random() LIMIT {n})")
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
    let live_rows = |db: &Path| -> Vec<(i64, String, Option<String>, Option<i64>)> {
        rows(db)
            .into_iter()
            .filter(|r| r.2.as_deref() == Some(&live.pid().to_string()))
            .collect()
    };
    let live_before = live_rows(&db);
    assert_eq!(live_before.len(), 100);
    policy(&s, &db, "", "");

    let started = Instant::now();
    let (code, doc) = s.doctor_json(&["fix"]);
    let took = started.elapsed();
    assert_eq!(
        code,
        0,
        "{}",
        &doc.to_string()[..4000.min(doc.to_string().len())]
    );
    let mut keys = orphan_keys(&doc);
    keys.sort();
    let mut want: Vec<String> = dead
        .iter()
        .map(|p| format!("worker:{p}:orphaned"))
        .collect();
    want.sort();
    assert_eq!(keys, want, "one finding per dead worker");
    let mut actions = 0;
    for key in &keys {
        let f = finding(&doc, PLUGIN, key).unwrap();
        assert_eq!(f["evidence"]["count"], "2000");
        assert!(
            f["evidence"]["ids"]
                .as_str()
                .unwrap()
                .ends_with("… and 1950 more"),
            "{:#}",
            f["evidence"]
        );
        assert_eq!(f["status"], "fixed");
        let outcomes = action_outcomes(&doc, key);
        assert!(!outcomes.is_empty() && outcomes.len() <= 2, "{outcomes:?}");
        assert!(outcomes
            .iter()
            .all(|(k, o)| k == "sql-exec" && o == "applied"));
        actions += outcomes.len();
    }
    let c = Connection::open(&db).unwrap();
    let running: i64 = c
        .query_row(
            "SELECT count(*) FROM chunks WHERE status = 'running'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(running, 100, "only the live worker's chunks are running");
    assert_eq!(
        live_rows(&db),
        live_before,
        "the live worker's chunks are untouched"
    );
    let reset: i64 = c
        .query_row("SELECT count(*) FROM chunks WHERE status = 'pending' AND assigned_worker IS NULL AND started_at IS NULL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(reset, 40_000 - 100);
    // The journal: as many applied writes as the report shows, 10,000 rows changed in all.
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
        "sqlite-chunk-reset: 10000 orphaned chunks of 5 dead workers (100000 rows, 100 live): {actions} sql-exec actions, one run, {:.2} s",
        took.as_secs_f64()
    );

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 0, "{doc:#}");
    assert!(orphan_keys(&doc).is_empty());
    assert_eq!(
        finding(&doc, PLUGIN, "table:chunks:state").unwrap()["evidence"]["state"],
        "Processing"
    );
    assert!(live.running());
}

#[test]
fn a_coordinator_pattern_without_a_scope_is_not_searched_and_a_live_workers_chunk_stays() {
    let s = Scenario::new();
    let db = s.path("cluster.db");
    chunks_db(&db, false);
    let mut live = worker(&s, &db, "live", &["UPDATE chunks SET status = 'running', assigned_worker = '{pid}', started_at = 1 WHERE id = 1"], &[]);
    policy(
        &s,
        &db,
        &signal_grant(&s),
        "coordinator_match = \"no-such-coordinator-\\\\d{6}\"",
    );
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 1, "a warning, nothing critical: {doc:#}");
    let f = finding(&doc, PLUGIN, "table:chunks:coordinator-unscoped")
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert!(f["message"].as_str().unwrap().contains("scope"), "{f:#}");
    assert!(orphan_keys(&doc).is_empty(), "{doc:#}");
    assert_eq!(rows(&db)[0].1, "running");
    assert!(live.running());
}
