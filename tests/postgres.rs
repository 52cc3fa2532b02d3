//! Job tables in PostgreSQL: a real server (tests/support/postgres.rs),
//! real worker processes claiming rows through psql, the real `doctor`
//! binary. First the refusals a hostile plugin meets (tests/hostile/
//! hostile-attacks aimed at a PostgreSQL label), then incident 002 end to
//! end in the table shapes queue libraries write.

mod support;

use std::time::{Duration, Instant};
use support::postgres::{Db, Postgres};
use support::*;

/// hostile-attacks aimed at database `jobs` = `db` (as role `doctor`).
fn attack(db: &Db, grants: &str, config: &str) -> Scenario {
    let s = Scenario::new();
    s.install_plugin(
        "hostile-attacks",
        &test_plugins().join("hostile_attacks.wasm"),
    );
    s.policy(&format!(
        r#"
[databases.jobs]
url = "{url}"

[plugins.hostile-attacks]
{grants}
config = {{ db = "jobs", {config} }}
"#,
        url = db.keywords("doctor")
    ));
    s
}

/// The attack's read answer, as the plugin saw it.
fn query_answer(db: &Db, sql: &str) -> String {
    let s = attack(
        db,
        r#"grants.sqlite = ["jobs"]"#,
        &format!("attack = \"query\", sql = {sql:?}"),
    );
    let (_, doc) = s.doctor_json(&["check"]);
    finding(&doc, "hostile-attacks", "query")
        .map(|f| f["message"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("no answer for {sql}: {doc}"))
}

/// Policy: database `jobs` = `db` as role `doctor`, and job-health granted
/// to read and write it, with `config` (TOML lines) after `db = "jobs"`.
fn job_health_policy(s: &Scenario, db: &Db, config: &str) {
    s.policy(&format!(
        r#"
[databases.jobs]
url = "{url}"

[plugins.job-health]
grants.processes = true
grants.sqlite = ["jobs"]
grants.sqlite_write = ["jobs"]

[plugins.job-health.config]
db = "jobs"
{config}"#,
        url = db.keywords("doctor")
    ));
}

fn jobs_table(db: &Db) {
    db.psql(
        "CREATE TYPE job_state AS ENUM ('pending', 'queued', 'running', 'failed', 'cancelled', 'completed');
         CREATE TABLE jobs (id bigint PRIMARY KEY, status job_state NOT NULL, worker text, started_at timestamptz);
         INSERT INTO jobs SELECT g, 'completed', NULL, now() FROM generate_series(1, 10) g;
         GRANT SELECT, UPDATE ON jobs TO doctor;",
    );
}

#[test]
fn a_plain_read_answers_rows_with_postgres_types() {
    let Some(pg) = Postgres::or_say_why("postgres read") else {
        return;
    };
    let db = pg.database();
    jobs_table(&db);
    assert_eq!(
        query_answer(
            &db,
            "SELECT id, status, started_at FROM jobs WHERE status = 'completed'"
        ),
        "ROWS 10"
    );
}

#[test]
fn statements_that_could_widen_a_read_are_refused_before_they_reach_the_server() {
    let Some(pg) = Postgres::or_say_why("postgres refusals") else {
        return;
    };
    let db = pg.database();
    jobs_table(&db);
    let cases = [
        ("SELECT 1; SELECT 2", "one"),
        ("SET statement_timeout = 0", "SET"),
        ("COMMIT; UPDATE jobs SET status = 'failed'", ""),
        (
            "WITH x AS (UPDATE jobs SET status = 'failed' RETURNING 1) SELECT * FROM x",
            "",
        ),
        ("SELECT pg_sleep(1e9)", "pg_sleep"),
        ("SELECT pg_read_file('/etc/shadow')", "pg_read_file"),
        (
            "SELECT set_config('statement_timeout', '0', false)",
            "set_config",
        ),
        // PostgreSQL reads alias.f on a function in FROM as the call f(alias).
        (
            "SELECT g.pg_sleep FROM generate_series(5, 5) g",
            "g.pg_sleep",
        ),
        (
            "SELECT u.current_setting FROM unnest(ARRAY['server_version']) u",
            "u.current_setting",
        ),
    ];
    for (sql, named) in cases {
        let answer = query_answer(&db, sql);
        assert!(
            answer.contains("denied") && answer.contains(named),
            "{sql}: {answer}"
        );
    }
    // Nothing the refused statements asked for happened.
    assert_eq!(
        db.psql("SELECT count(*) FROM jobs WHERE status = 'completed'"),
        "10"
    );
}

#[test]
fn a_huge_result_is_cut_at_sql_result_max_and_the_run_goes_on() {
    let Some(pg) = Postgres::or_say_why("postgres huge result") else {
        return;
    };
    let db = pg.database();
    jobs_table(&db);
    // About 1 GB if it were all sent: a thousand bytes a row, a million rows.
    let started = Instant::now();
    let answer = query_answer(
        &db,
        "SELECT lpad('x', 1000, 'y') FROM generate_series(1, 1000000)",
    );
    assert!(
        answer.contains("limit") && answer.contains("sql_result_max"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "bounded, not streamed to the end"
    );
}

#[test]
fn a_write_through_a_trigger_is_refused_and_max_rows_rolls_back() {
    let Some(pg) = Postgres::or_say_why("postgres triggers") else {
        return;
    };
    let db = pg.database();
    jobs_table(&db);
    db.psql(
        "CREATE TABLE audit (n int);
         GRANT INSERT ON audit TO doctor;
         CREATE FUNCTION fan_out() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO audit SELECT generate_series(1, 1000); RETURN NEW; END $$;
         CREATE TABLE watched (id int PRIMARY KEY, status text);
         INSERT INTO watched VALUES (1, 'running');
         GRANT SELECT, UPDATE ON watched TO doctor;
         CREATE TRIGGER fan AFTER UPDATE ON watched FOR EACH ROW EXECUTE FUNCTION fan_out();",
    );
    let grants = r#"grants.sqlite = ["jobs"]
grants.sqlite_write = ["jobs"]"#;
    // One row changed, a thousand written by the trigger: refused.
    let s = attack(
        &db,
        grants,
        "attack = \"sql-exec\", max_rows = 1, sql = \"UPDATE watched SET status = 'pending' WHERE id = 1\"",
    );
    let out = s.doctor(&["fix"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("refused") && text.contains("trigger"),
        "{text}"
    );
    assert_eq!(db.psql("SELECT count(*) FROM audit"), "0");
    assert_eq!(db.psql("SELECT status FROM watched"), "running");
    // Ten rows against max-rows 1: rolled back, nothing changed.
    let s = attack(
        &db,
        grants,
        "attack = \"sql-exec\", max_rows = 1, sql = \"UPDATE jobs SET status = 'failed'\"",
    );
    let out = s.doctor(&["fix"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rolled back"), "{text}");
    assert_eq!(
        db.psql("SELECT count(*) FROM jobs WHERE status = 'completed'"),
        "10"
    );
}

// ------------------------------------------------- incident 002, end to end

fn hostname() -> String {
    nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A worker that claims its job through psql (`sql`, where `$$` is its own
/// pid) and then runs as `pg_worker` until killed.
fn worker(s: &Scenario, db: &Db, name: &str, sql: &str) -> Proc {
    let ready = s.path(&format!("{name}.ready"));
    let argv = db.worker_argv(sql, &ready, "pg_worker");
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let p = Proc::spawn(&argv);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "worker {name} never claimed");
        std::thread::sleep(Duration::from_millis(10));
    }
    p
}

fn kill(mut p: Proc) {
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}

/// `doctor fix`, which must apply at least one of `plugin`'s actions.
fn fix_applies(s: &Scenario, plugin: &str) {
    let (_, fixed) = s.doctor_json(&["fix"]);
    assert!(
        outcomes(&fixed, plugin).iter().any(|o| o == "applied"),
        "{fixed}"
    );
}

fn outcomes(doc: &serde_json::Value, plugin: &str) -> Vec<String> {
    findings(doc, plugin)
        .iter()
        .flat_map(|f| f["actions"].as_array().cloned().unwrap_or_default())
        .map(|a| a["outcome"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Oban's shape: a status enum, the attempts' owners in `attempted_by
/// text[]` (host:pid, the last one current), timestamptz times and a jsonb
/// error record the application reads back.
#[test]
fn orphaned_jobs_in_an_enum_and_text_array_table_are_requeued_or_failed_and_live_ones_kept() {
    let Some(pg) = Postgres::or_say_why("incident 002 on postgres") else {
        return;
    };
    let db = pg.database();
    db.psql(
        "CREATE TYPE job_state AS ENUM ('available', 'executing', 'completed', 'discarded');
         CREATE TABLE oban_jobs (id bigint PRIMARY KEY, state job_state NOT NULL DEFAULT 'available',
             attempt integer NOT NULL DEFAULT 0, attempted_by text[], attempted_at timestamptz,
             scheduled_at timestamptz NOT NULL DEFAULT now(), discarded_at timestamptz, errors jsonb);
         INSERT INTO oban_jobs (id, attempt) VALUES (1, 0), (2, 0), (3, 2);
         INSERT INTO oban_jobs (id, state) VALUES (4, 'completed');
         GRANT SELECT, UPDATE ON oban_jobs TO doctor;",
    );
    let s = Scenario::new();
    let claim = |id: u32| {
        format!(
            "UPDATE oban_jobs SET state = 'executing', attempt = attempt + 1, attempted_at = now(), \
             attempted_by = ARRAY['{}:' || $$] WHERE id = {id}",
            hostname()
        )
    };
    let live = worker(&s, &db, "live", &claim(1));
    kill(worker(&s, &db, "dead-a", &claim(2)));
    kill(worker(&s, &db, "dead-b", &claim(3)));
    job_health_policy(
        &s,
        &db,
        r#"
table = "oban_jobs"
status_column = "state"
worker_column = ""
worker_pid_sql = "split_part(attempted_by[array_upper(attempted_by, 1)], ':', 2)"
worker_host_sql = "split_part(attempted_by[array_upper(attempted_by, 1)], ':', 1)"
worker_match = "^pg_worker"
claimed_column = "attempted_at"
updated_column = "scheduled_at"
attempts_column = "attempt"
running_statuses = ["executing"]
waiting_statuses = ["available"]
requeue_status = "available"
failed_status = "discarded"
max_attempts = 3

[plugins.job-health.config.fail_set]
discarded_at = { now = true }
errors = { json = { error = "{reason}", attempt = "{attempts}" } }
"#,
    );
    let before = db.psql("SELECT id, state, attempt FROM oban_jobs ORDER BY id");

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "orphaned jobs are critical: {doc}");
    assert!(!findings(&doc, "job-health").is_empty(), "{doc}");
    let (_, dry) = s.doctor_json(&["fix", "--dry-run"]);
    assert!(
        outcomes(&dry, "job-health").iter().all(|o| o == "planned"),
        "{dry}"
    );
    assert_eq!(
        db.psql("SELECT id, state, attempt FROM oban_jobs ORDER BY id"),
        before
    );

    fix_applies(&s, "job-health");
    // The live worker's job is untouched; job 2 requeued with its attempt
    // counted; job 3 (attempts run out) discarded with a record the
    // application can read; the completed job never looked at.
    assert_eq!(
        db.psql("SELECT id, state, attempt, discarded_at IS NOT NULL, errors->>'error' <> '' FROM oban_jobs ORDER BY id"),
        "1|executing|1|f|\n2|available|2|f|\n3|discarded|3|t|t\n4|completed|0|f|"
    );
    let (code, after) = s.doctor_json(&["check"]);
    assert_eq!(code, 0, "resolved once fixed: {after}");
    // The journal tells the story: the writes applied, each with its row count.
    let applied: i64 = s
        .journal()
        .query_row(
            "SELECT count(*) FROM actions WHERE plugin = 'job-health' AND outcome = 'applied'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(applied >= 1);
    drop(live);
}

/// A `locked_by = 'host:pid'` text with `locked_at`: the chunk table of
/// incident 001's coordinator, in PostgreSQL.
#[test]
fn chunks_locked_by_a_dead_host_pid_are_reset_and_a_live_lock_kept() {
    let Some(pg) = Postgres::or_say_why("chunk reset on postgres") else {
        return;
    };
    let db = pg.database();
    db.psql(
        "CREATE SCHEMA app;
         CREATE TABLE app.chunks (id bigint PRIMARY KEY, status text NOT NULL DEFAULT 'pending',
             locked_by text, locked_at timestamptz, heartbeat_at timestamptz);
         INSERT INTO app.chunks (id) SELECT generate_series(1, 4);
         GRANT USAGE ON SCHEMA app TO doctor;
         GRANT SELECT, UPDATE ON app.chunks TO doctor;",
    );
    let s = Scenario::new();
    let claim = |ids: &str| {
        format!(
            "UPDATE app.chunks SET status = 'running', locked_by = '{}:' || $$, locked_at = now() WHERE id IN ({ids})",
            hostname()
        )
    };
    let live = worker(&s, &db, "live", &claim("1"));
    kill(worker(&s, &db, "dead", &claim("2, 3")));
    s.policy(&format!(
        r#"
[databases.work]
url = "{url}"

[plugins.sqlite-chunk-reset]
grants.processes = true
grants.sqlite = ["work"]
grants.sqlite_write = ["work"]

[plugins.sqlite-chunk-reset.config]
db = "work"
table = "app.chunks"
worker_column = "locked_by"
owner_format = "host:pid"
started_at_column = "locked_at"
worker_match = "^pg_worker"
"#,
        url = db.keywords("doctor")
    ));
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc}");
    // A recording of the run replays to the same findings with no server.
    let recording = s.path("recording");
    s.doctor(&["check", "--record", recording.to_str().unwrap()]);
    let recorded = std::fs::read_to_string(recording.join("sqlite-chunk-reset.json")).unwrap();
    assert!(recorded.contains("database.query"), "the calls are kept");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doctor"))
        .args(["plugins", "replay", "sqlite-chunk-reset"])
        .arg(&recording)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let replayed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = |doc: &serde_json::Value| -> Vec<String> {
        findings(doc, "sqlite-chunk-reset")
            .iter()
            .map(|f| f["key"].to_string())
            .collect()
    };
    assert_eq!(keys(&replayed), keys(&doc), "{replayed}");
    fix_applies(&s, "sqlite-chunk-reset");
    assert_eq!(
        db.psql("SELECT id, status, locked_by IS NULL FROM app.chunks ORDER BY id"),
        "1|running|f\n2|pending|t\n3|pending|t\n4|pending|t"
    );
    let (code, after) = s.doctor_json(&["check"]);
    assert_eq!(code, 0, "{after}");
    drop(live);
}

/// Claimed executions joined to a workers table (pid, hostname, last
/// heartbeat): the identity is a scalar subquery the policy writes, read
/// like any query.
#[test]
fn a_worker_identity_in_a_joined_processes_table_is_followed_by_subquery() {
    let Some(pg) = Postgres::or_say_why("joined workers on postgres") else {
        return;
    };
    let db = pg.database();
    db.psql(
        "CREATE TABLE workers (id int PRIMARY KEY, pid int, hostname text, last_heartbeat timestamp);
         CREATE TABLE executions (id bigint PRIMARY KEY, status text NOT NULL DEFAULT 'queued',
             worker_id int REFERENCES workers (id), claimed_at timestamp, attempts int NOT NULL DEFAULT 0,
             error text);
         INSERT INTO executions (id) VALUES (1), (2);
         GRANT SELECT ON workers TO doctor;
         GRANT SELECT, UPDATE ON executions TO doctor;",
    );
    let s = Scenario::new();
    let claim = |worker: u32, job: u32| {
        format!(
            "INSERT INTO workers VALUES ({worker}, $$, '{}', now() AT TIME ZONE 'UTC'); \
             UPDATE executions SET status = 'running', worker_id = {worker}, claimed_at = now() AT TIME ZONE 'UTC' WHERE id = {job}",
            hostname()
        )
    };
    let live = worker(&s, &db, "live", &claim(10, 1));
    kill(worker(&s, &db, "dead", &claim(20, 2)));
    job_health_policy(
        &s,
        &db,
        r#"
table = "executions"
worker_column = ""
worker_pid_sql = "(SELECT w.pid FROM workers w WHERE w.id = worker_id)"
worker_host_sql = "(SELECT w.hostname FROM workers w WHERE w.id = worker_id)"
worker_match = "^pg_worker"
claimed_column = "claimed_at"
attempts_column = "attempts"
reason_column = "error"
"#,
    );
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc}");
    s.doctor_json(&["fix"]);
    assert_eq!(
        db.psql("SELECT id, status, attempts, worker_id FROM executions ORDER BY id"),
        "1|running|0|10\n2|pending|1|20"
    );
    let (code, after) = s.doctor_json(&["check"]);
    assert_eq!(code, 0, "{after}");
    drop(live);
}

// ------------------------------------------------- the connection and the role

fn validate(s: &Scenario) -> (i32, String) {
    let out = s.doctor(&["policy", "validate"]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn chunk_policy(s: &Scenario, url: &str, extra: &str) {
    s.policy(&format!(
        r#"
[databases.work]
url = "{url}"
{extra}

[plugins.sqlite-chunk-reset]
grants.processes = true
grants.sqlite = ["work"]
grants.sqlite_write = ["work"]
config = {{ db = "work", table = "chunks", worker_column = "worker" }}
"#
    ));
}

fn chunks_table(db: &Db) {
    db.psql(
        "CREATE TABLE chunks (id bigint PRIMARY KEY, status text NOT NULL, worker text, started_at timestamptz);
         GRANT SELECT ON chunks TO doctor, doctor_pw;",
    );
}

#[test]
fn validate_names_a_superuser_role_and_the_grants_a_role_lacks() {
    let Some(pg) = Postgres::or_say_why("validate roles") else {
        return;
    };
    let db = pg.database();
    chunks_table(&db);
    let s = Scenario::new();
    chunk_policy(&s, &db.keywords("postgres"), "");
    let (code, said) = validate(&s);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("superuser") && said.contains("databases.work.url"),
        "{said}"
    );
    // doctor may read but not update: the missing grant, spelled out.
    chunk_policy(&s, &db.keywords("doctor"), "");
    let (code, said) = validate(&s);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("lacks UPDATE on chunks")
            && said.contains("GRANT UPDATE ON \"chunks\" TO doctor"),
        "{said}"
    );
    assert!(!said.contains("superuser"), "{said}");
}

#[test]
fn a_password_inline_is_a_policy_error_and_a_password_file_must_be_private() {
    let Some(pg) = Postgres::or_say_why("password file") else {
        return;
    };
    let db = pg.database();
    chunks_table(&db);
    let s = Scenario::new();
    let url = format!(
        "postgresql://doctor_pw:{}@localhost/{}",
        support::postgres::PASSWORD,
        db.name
    );
    chunk_policy(&s, &url, "");
    let out = s.doctor(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("databases.work.url")
            && err.contains("password_file")
            && !err.contains(support::postgres::PASSWORD),
        "names the key, never echoes the password: {err}"
    );
    // A password file others can read is refused; mode 0600 connects.
    let file = s.path("work.pgpass");
    std::fs::write(&file, format!("{}\n", support::postgres::PASSWORD)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let extra = format!("password_file = {:?}", file.display().to_string());
    chunk_policy(&s, &db.keywords("doctor_pw"), &extra);
    let (_, doc) = s.doctor_json(&["check"]);
    let error = plugin_summary(&doc, "sqlite-chunk-reset")["error"].to_string();
    assert!(error.contains("chmod 600"), "{doc}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 0, "scram-sha-256 with the file's password: {doc}");
    assert_eq!(plugin_summary(&doc, "sqlite-chunk-reset")["outcome"], "ok");
}

// ------------------------------------------------- older contracts, two hosts, crashes

#[test]
fn a_plugin_of_contract_0_2_gets_a_clear_invalid_for_a_postgres_label() {
    let Some(pg) = Postgres::or_say_why("contract 0.2 on postgres") else {
        return;
    };
    let db = pg.database();
    let s = Scenario::new();
    s.install_plugin("contract-v0-2", &test_plugins().join("contract_v0_2.wasm"));
    let sqlite_file = s.path("jobs.db");
    rusqlite::Connection::open(&sqlite_file).unwrap();
    let policy = |label: &str| {
        format!(
            r#"
[databases.pg]
url = "{url}"

[databases.lite]
path = {sqlite:?}

[plugins.contract-v0-2]
grants.sqlite = ["pg", "lite"]
config = {{ path = "", db = "{label}" }}
"#,
            url = db.keywords("doctor"),
            sqlite = sqlite_file.display().to_string()
        )
    };
    s.policy(&policy("lite"));
    let (_, doc) = s.doctor_json(&["check"]);
    let queried = finding(&doc, "contract-v0-2", "queried").expect("SQLite still serves 0.2");
    assert_eq!(queried["message"], "0.2.0 CONTRACT QUERIED 1 ROWS");
    s.policy(&policy("pg"));
    let (_, doc) = s.doctor_json(&["check"]);
    let error = plugin_summary(&doc, "contract-v0-2")["error"].to_string();
    assert!(
        error.contains("invalid") && error.contains("PostgreSQL") && error.contains("0.3.0"),
        "{doc}"
    );
}

/// Two doctors on two hosts (UTS namespaces, each its own hostname) and one
/// server: each judges its own host's rows by process identity and the
/// other's by heartbeat only; fixing the same rows at once, the
/// compare-and-swap lets one win, and nothing is written twice.
#[test]
fn two_hosts_share_a_table_each_judges_its_own_rows_and_no_row_is_fixed_twice() {
    let Some(pg) = Postgres::or_say_why("two hosts") else {
        return;
    };
    let db = pg.database();
    // host-b's live worker (this machine's process, under host-b's name).
    let mut live = Proc::spawn(&["sleep", "600"]);
    std::thread::sleep(Duration::from_millis(100));
    db.psql(&format!(
        "CREATE TABLE jobs (id bigint PRIMARY KEY, status text NOT NULL, worker text,
             claimed_at timestamptz, heartbeat_at timestamptz, attempts int NOT NULL DEFAULT 0);
         -- host-a's job with a fresh heartbeat but a dead pid; host-b's job
         -- with a stale heartbeat; host-b's live job with a fresh one.
         INSERT INTO jobs VALUES
           (1, 'running', 'host-a:999999', now(), now(), 1),
           (2, 'running', 'host-b:999998', now() - interval '1 hour', now() - interval '1 hour', 1),
           (3, 'running', 'host-b:{}', now(), now(), 1);
         GRANT SELECT, UPDATE ON jobs TO doctor;",
        live.pid()
    ));
    let hosts: Vec<(Scenario, &str)> = ["host-a", "host-b"]
        .into_iter()
        .map(|h| (Scenario::new(), h))
        .collect();
    for (s, _) in &hosts {
        // Each scenario has its own fix lock: two hosts, not one.
        job_health_policy(
            s,
            &db,
            r#"worker_column = "worker"
owner_format = "host:pid"
claimed_column = "claimed_at"
heartbeat_column = "heartbeat_at"
heartbeat_timeout = "5m"
attempts_column = "attempts"
"#,
        );
    }
    // Both fix at the same moment, each under its own hostname.
    let runs: Vec<_> = hosts
        .iter()
        .map(|(s, host)| {
            std::process::Command::new("unshare")
                .args(["--uts", "sh", "-c", "hostname \"$0\" && exec \"$@\""])
                .arg(host)
                .arg(env!("CARGO_BIN_EXE_doctor"))
                .args(["fix", "--format", "json", "--policy"])
                .arg(s.policy_path())
                .arg("--journal")
                .arg(s.journal_path())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let docs: Vec<serde_json::Value> = runs
        .into_iter()
        .map(|r| serde_json::from_slice(&r.wait_with_output().unwrap().stdout).unwrap())
        .collect();
    // Job 1 (dead pid on host-a) and job 2 (stale heartbeat) requeued once
    // each; job 3 (host-b's, fresh heartbeat) left alone by both.
    assert_eq!(
        db.psql("SELECT id, status, attempts FROM jobs ORDER BY id"),
        "1|pending|2\n2|pending|2\n3|running|1",
        "{docs:?}"
    );
    let applied: usize = docs
        .iter()
        .map(|d| {
            outcomes(d, "job-health")
                .iter()
                .filter(|o| *o == "applied")
                .count()
        })
        .sum();
    let lost: usize = docs
        .iter()
        .map(|d| {
            outcomes(d, "job-health")
                .iter()
                .filter(|o| *o == "skipped")
                .count()
        })
        .sum();
    assert!(applied >= 2, "{docs:?}");
    assert!(
        applied + lost >= 2,
        "every orphan was written by one host, or lost its race: {docs:?}"
    );
    // host-a judged host-b's rows by heartbeat alone, never by a local pid.
    for f in findings(&docs[0], "job-health") {
        if f["subject"].as_str().unwrap_or_default().contains("host-b") {
            let message = f["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("on host host-b") && message.contains("heartbeat"),
                "{message}"
            );
        }
    }
    assert!(live.running(), "host-b's live worker was never signalled");
}

/// `doctor fix` killed right after its first write to PostgreSQL: the
/// journal holds that write's intent, the next run finishes the rest, and no
/// job is requeued twice.
#[test]
fn killed_mid_fix_on_postgres_nothing_is_applied_twice_and_every_change_is_journaled() {
    let Some(pg) = Postgres::or_say_why("crash on postgres") else {
        return;
    };
    let db = pg.database();
    db.psql(
        "CREATE TABLE jobs (id bigint PRIMARY KEY, status text NOT NULL, worker text,
             claimed_at timestamptz, attempts int NOT NULL DEFAULT 0);
         INSERT INTO jobs (id, status) VALUES (1, 'queued'), (2, 'queued');
         GRANT SELECT, UPDATE ON jobs TO doctor;",
    );
    let s = Scenario::new();
    let claim = |id: u32| {
        format!("UPDATE jobs SET status = 'running', worker = $$, claimed_at = now(), attempts = attempts + 1 WHERE id = {id}")
    };
    kill(worker(&s, &db, "dead-1", &claim(1)));
    kill(worker(&s, &db, "dead-2", &claim(2)));
    job_health_policy(
        &s,
        &db,
        r#"worker_column = "worker"
claimed_column = "claimed_at"
attempts_column = "attempts"
worker_match = "^pg_worker"
"#,
    );
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_doctor"))
        .args(["fix", "--policy"])
        .arg(s.policy_path())
        .arg("--journal")
        .arg(s.journal_path())
        .env("DOCTOR_TEST_KILL_AFTER_ACTIONS", "1")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let after_kill = db.psql("SELECT id, status, attempts FROM jobs ORDER BY id");
    assert_eq!(
        after_kill, "1|pending|2\n2|running|1",
        "one write went through"
    );
    let intents: i64 = s
        .journal()
        .query_row(
            "SELECT count(*) FROM intents WHERE kind = 'sql-exec'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(intents >= 1, "the write that went through has its intent");
    // The next runs finish the job and never requeue job 1 again.
    s.doctor_json(&["fix"]);
    let (_, doc) = s.doctor_json(&["fix"]);
    assert_eq!(
        db.psql("SELECT id, status, attempts FROM jobs ORDER BY id"),
        "1|pending|2\n2|pending|2",
        "{doc}"
    );
}

/// TLS to a TCP server: verified against the policy's `sslrootcert`; with
/// the system's CA store (which does not know the test CA) the connection
/// is refused, never made unverified.
#[test]
fn tls_is_verified_against_sslrootcert_and_an_unknown_ca_is_refused() {
    let Some(pg) = Postgres::or_say_why("tls") else {
        return;
    };
    let Some(ca) = &pg.tls_ca else {
        println!("tls: not run: openssl could not make a test CA here");
        return;
    };
    let db = pg.database();
    chunks_table(&db);
    let s = Scenario::new();
    let url = |extra: &str| {
        format!(
            "postgresql://doctor@localhost:{}/{}?sslmode=verify-full{extra}",
            pg.port, db.name
        )
    };
    chunk_policy(&s, &url(&format!("&sslrootcert={}", ca.display())), "");
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 0, "verified with the test CA: {doc}");
    assert_eq!(plugin_summary(&doc, "sqlite-chunk-reset")["outcome"], "ok");
    chunk_policy(&s, &url(""), "");
    let (_, doc) = s.doctor_json(&["check"]);
    let error = plugin_summary(&doc, "sqlite-chunk-reset")["error"].to_string();
    assert!(
        error.contains("cannot connect") && (error.contains("certificate") || error.contains("CA")),
        "an unknown CA is refused: {doc}"
    );
}

/// Issue 22: the heartbeat lives in the workers table the executions are
/// joined to (`heartbeat_sql`, a scalar subquery the policy writes). Two
/// executions run for workers on another host: the one whose worker beat an
/// hour ago is orphaned by its heartbeat and requeued, the one whose worker
/// beat seconds ago is left alone.
#[test]
fn a_heartbeat_in_a_joined_workers_table_judges_another_hosts_executions() {
    let Some(pg) = Postgres::or_say_why("heartbeat in a joined workers table") else {
        return;
    };
    let db = pg.database();
    db.psql(
        "CREATE TABLE workers (id int PRIMARY KEY, pid int, hostname text, last_heartbeat timestamptz);
         CREATE TABLE executions (id bigint PRIMARY KEY, status text NOT NULL, worker_id int REFERENCES workers (id),
             claimed_at timestamptz, attempts int NOT NULL DEFAULT 0);
         INSERT INTO workers VALUES (1, 4242, 'elsewhere', now() - interval '10 seconds'),
                                    (2, 4343, 'elsewhere', now() - interval '1 hour');
         INSERT INTO executions VALUES (1, 'running', 1, now() - interval '2 hours', 0),
                                       (2, 'running', 2, now() - interval '2 hours', 0);
         GRANT SELECT ON workers TO doctor;
         GRANT SELECT, UPDATE ON executions TO doctor;",
    );
    let s = Scenario::new();
    job_health_policy(
        &s,
        &db,
        r#"
table = "executions"
worker_column = ""
worker_pid_sql = "(SELECT w.pid FROM workers w WHERE w.id = worker_id)"
worker_host_sql = "(SELECT w.hostname FROM workers w WHERE w.id = worker_id)"
heartbeat_sql = "(SELECT w.last_heartbeat FROM workers w WHERE w.id = worker_id)"
heartbeat_timeout = "5m"
claimed_column = "claimed_at"
attempts_column = "attempts"
"#,
    );
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "the stale execution is orphaned: {doc}");
    let stale = finding(
        &doc,
        "job-health",
        "worker:pid 4343, host elsewhere:orphaned",
    )
    .unwrap_or_else(|| panic!("{doc}"));
    let message = stale["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("its owner is on host elsewhere and its last heartbeat is 1h"),
        "judged by its heartbeat, on another host: {message}"
    );
    assert_eq!(stale["evidence"]["ids"], "2", "{stale}");
    assert!(
        findings(&doc, "job-health").iter().all(|f| !f["key"]
            .as_str()
            .unwrap_or_default()
            .contains("4242")
            && !f["key"].as_str().unwrap_or_default().starts_with("job:1:")),
        "the fresh execution is left alone: {doc}"
    );

    fix_applies(&s, "job-health");
    assert_eq!(
        db.psql("SELECT id, status, attempts, worker_id FROM executions ORDER BY id"),
        "1|running|0|1\n2|pending|1|2"
    );
    let (code, after) = s.doctor_json(&["check"]);
    assert_eq!(code, 0, "resolved once fixed: {after}");
}

/// Through a transaction pooler (PgBouncer in transaction mode, as
/// Supabase's is): every statement is unnamed, so a check and a fix work
/// there as on a direct connection.
#[test]
fn a_check_and_a_fix_work_through_a_transaction_pooler() {
    let Some(pg) = Postgres::or_say_why("transaction pooler") else {
        return;
    };
    let Some(pooler) = support::postgres::Pooler::start(pg, "transaction pooler") else {
        return;
    };
    let db = pg.database();
    db.psql(
        "CREATE TABLE chunks (id bigint PRIMARY KEY, status text NOT NULL, worker text, started_at timestamptz);
         INSERT INTO chunks VALUES (1, 'running', '999999999', now()), (2, 'running', '999999998', now()), (3, 'pending', NULL, NULL);
         GRANT SELECT, UPDATE ON chunks TO doctor;",
    );
    let s = Scenario::new();
    chunk_policy(&s, &pooler.keywords(&db, "doctor"), "");
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc}");
    assert_eq!(plugin_summary(&doc, "sqlite-chunk-reset")["outcome"], "ok");
    fix_applies(&s, "sqlite-chunk-reset");
    assert_eq!(
        db.psql("SELECT id, status, worker IS NULL FROM chunks ORDER BY id"),
        "1|pending|t\n2|pending|t\n3|pending|t"
    );
}

/// A read the guard allows but that would run for hours ends at the
/// plugin's deadline: doctor cancels it on the server, the run finishes,
/// and no query of doctor's is left running.
#[test]
fn a_slow_read_is_cancelled_on_the_server_at_the_plugins_deadline() {
    let Some(pg) = Postgres::or_say_why("slow read") else {
        return;
    };
    let db = pg.database();
    jobs_table(&db);
    let s = Scenario::new();
    s.install_plugin(
        "hostile-attacks",
        &test_plugins().join("hostile_attacks.wasm"),
    );
    s.policy_with(
        "plugin_timeout = \"2s\"",
        &format!(
            "[databases.jobs]\nurl = \"{}\"\n\n[plugins.hostile-attacks]\ngrants.sqlite = [\"jobs\"]\nconfig = {{ db = \"jobs\", attack = \"query\", sql = \"SELECT count(*) FROM generate_series(1, 10000000000)\" }}\n",
            db.keywords("doctor")
        ),
    );
    let started = Instant::now();
    let (_, doc) = s.doctor_json(&["check"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "bounded: {took:?} {doc}");
    let said = finding(&doc, "hostile-attacks", "query")
        .map(|f| f["message"].to_string())
        .unwrap_or_else(|| plugin_summary(&doc, "hostile-attacks")["error"].to_string());
    assert!(
        said.contains("deadline"),
        "the plugin's time ran out: {said}"
    );
    // The server is not still counting for a doctor that gave up.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let running = db.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'doctor' AND state = 'active'",
        );
        if running == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "doctor's query still runs on the server"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
