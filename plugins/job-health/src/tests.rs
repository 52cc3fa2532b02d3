//! The plugin's `check`, run natively against a job table the test
//! supplies (doctor_sdk::testing): the SQL it reads and proposes, in each
//! dialect.

use super::{Config, JobHealth};
use doctor_sdk::config::DeclaredConfig;
use doctor_sdk::sqlite::Rows;
use doctor_sdk::testing::{AskedProcesses, Facts, Outcome};
use doctor_sdk::{Action, Error, SqlValue};
use std::cell::RefCell;
use std::rc::Rc;

fn text(t: &str) -> SqlValue {
    SqlValue::Text(t.into())
}

fn rows(rows: Vec<Vec<SqlValue>>) -> Result<Rows, Error> {
    Ok(Rows {
        columns: Vec::new(),
        rows,
    })
}

/// A job table answering the catalog, the running and waiting jobs, and
/// the counts; every statement read is kept in `seen`.
fn table(
    columns: &'static [(&'static str, &'static str)],
    jobs: Vec<Vec<SqlValue>>,
    seen: Rc<RefCell<Vec<String>>>,
) -> impl FnMut(&str, &[SqlValue]) -> Result<Rows, Error> {
    move |sql, _| {
        seen.borrow_mut().push(sql.to_string());
        let catalog = |with_type: bool| {
            let row = |(n, t): &(&str, &str)| match with_type {
                true => vec![text(n), text(t)],
                false => vec![text(n)],
            };
            rows(columns.iter().map(row).collect())
        };
        match sql {
            s if s.starts_with("SELECT a.attname, format_type") => catalog(true),
            s if s.starts_with("SELECT name FROM pragma_table_info(?1)")
                && s.ends_with("pk > 0") =>
            {
                rows(vec![vec![text("id")]])
            }
            s if s.starts_with("SELECT name FROM pragma_table_info") => catalog(false),
            s if s.starts_with("SELECT a.attname FROM pg_index") => rows(vec![vec![text("id")]]),
            s if s.contains("count(*)") => {
                rows(vec![vec![text("executing"), SqlValue::Integer(2)]])
            }
            s if s.ends_with("LIMIT 0") => rows(Vec::new()),
            _ => rows(jobs.clone()),
        }
    }
}

/// `overrides` over every key's default, as the host fills the config in.
fn config(overrides: serde_json::Value) -> String {
    let mut config = serde_json::Map::new();
    for key in Config::config_keys() {
        let default = key.default.and_then(|d| serde_json::from_str(d).ok());
        config.insert(key.name.into(), default.unwrap_or_default());
    }
    config.extend(overrides.as_object().cloned().unwrap_or_default());
    serde_json::Value::Object(config).to_string()
}

/// The SQL statements and parameters a finding proposes.
fn writes(out: &Outcome) -> Vec<(String, Vec<SqlValue>)> {
    let actions = out.findings().iter().flat_map(|f| &f.actions);
    let exec = actions.filter_map(|a| match &a.action {
        Action::SqlExec(e) => Some((e.statement.clone(), e.params.clone())),
        _ => None,
    });
    exec.collect()
}

const PID: &str = "split_part(attempted_by[array_upper(attempted_by, 1)], ':', 2)";
const HOST: &str = "split_part(attempted_by[array_upper(attempted_by, 1)], ':', 1)";

/// A queue library's table: a status enum, the attempts' owners in a
/// `text[]` (`host:pid`), timestamptz times, an error record in jsonb.
const OBAN: &[(&str, &str)] = &[
    ("id", "bigint"),
    ("state", "oban_job_state"),
    ("attempted_by", "text[]"),
    ("attempt", "integer"),
    ("attempted_at", "timestamp with time zone"),
    ("scheduled_at", "timestamp with time zone"),
    ("discarded_at", "timestamp with time zone"),
    ("errors", "jsonb"),
];

fn oban_config() -> String {
    config(serde_json::json!({
        "db": "jobs", "table": "oban_jobs", "status_column": "state",
        "worker_column": "", "worker_pid_sql": PID, "worker_host_sql": HOST,
        "claimed_column": "attempted_at", "updated_column": "scheduled_at",
        "attempts_column": "attempt", "running_statuses": ["executing"],
        "waiting_statuses": ["available"], "requeue_status": "available",
        "failed_status": "discarded", "max_attempts": 3,
        "fail_set": {
            "discarded_at": { "now": true },
            "errors": { "json": [{ "attempt": "{attempts}", "error": "{reason}" }] }
        }
    }))
}

/// Two jobs of one dead worker (pid 4242 on this host): the first has
/// attempts left, the second has none.
fn oban_jobs() -> Vec<Vec<SqlValue>> {
    let job = |id: i64, attempt: i64| {
        vec![
            SqlValue::Integer(id),
            text("executing"),
            SqlValue::Null,
            SqlValue::Null,
            text("2023-11-14T21:00:00.000000+00:00"),
            SqlValue::Integer(attempt),
            text("2023-11-14T22:00:00.123456+00:00"),
            text("4242"),
            text("test-host"),
        ]
    };
    vec![job(1, 1), job(2, 3)]
}

#[test]
fn on_postgres_jobs_are_read_and_written_in_its_dialect() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let out = Facts::new()
        .postgres("jobs")
        .query("jobs", table(OBAN, oban_jobs(), seen.clone()))
        .processes(vec![])
        .run::<JobHealth>(&oban_config());
    let select = format!("SELECT \"id\", \"state\", NULL, NULL, \"scheduled_at\", \"attempt\", \"attempted_at\", ({PID}), ({HOST}) FROM \"oban_jobs\" WHERE \"state\" IN ($1, $2) ORDER BY \"id\"");
    assert!(
        seen.borrow().contains(&select),
        "{:#?} {:?}",
        seen.borrow(),
        out.result
    );
    assert!(seen.borrow().contains(
        &"SELECT \"state\", count(*) FROM \"oban_jobs\" GROUP BY \"state\" ORDER BY \"state\""
            .into()
    ));
    let guard = format!("\"scheduled_at\" IS NOT DISTINCT FROM $N AND \"attempt\" IS NOT DISTINCT FROM $N AND \"attempted_at\" IS NOT DISTINCT FROM $N AND ({PID}) IS NOT DISTINCT FROM $N AND ({HOST}) IS NOT DISTINCT FROM $N");
    let numbered = |from: usize| {
        let mut g = guard.clone();
        for n in from..from + 5 {
            g = g.replacen("$N", &format!("${n}"), 1);
        }
        g
    };
    let writes = writes(&out);
    assert_eq!(writes.len(), 2, "{writes:#?}");
    let (requeue, params) = &writes[0];
    assert_eq!(
        requeue,
        &format!("UPDATE \"oban_jobs\" SET \"state\" = $1, \"attempt\" = COALESCE(\"attempt\", 0) + 1, \"scheduled_at\" = now() WHERE \"id\" = $2 AND \"state\" IS NOT DISTINCT FROM $3 AND {}", numbered(4))
    );
    assert_eq!(params.len(), 8);
    assert!(
        matches!(&params[5], SqlValue::Text(t) if t == "2023-11-14T22:00:00.123456+00:00"),
        "the claim time as read, to the microsecond"
    );
    let (fail, params) = &writes[1];
    assert_eq!(
        fail,
        &format!("UPDATE \"oban_jobs\" SET \"state\" = $1, \"discarded_at\" = now(), \"errors\" = $2 WHERE \"id\" = $3 AND \"state\" IS NOT DISTINCT FROM $4 AND {}", numbered(5))
    );
    let SqlValue::Text(errors) = &params[1] else {
        panic!("{params:?}")
    };
    let errors: serde_json::Value = serde_json::from_str(errors).expect("JSON text");
    assert_eq!(errors[0]["attempt"], "3");
    assert!(errors[0]["error"]
        .as_str()
        .unwrap_or_default()
        .contains("pid 4242 is not running"));
    assert!(
        seen.borrow().iter().all(|s| !s.contains('?')),
        "no SQLite placeholder reaches PostgreSQL"
    );
}

#[test]
fn on_sqlite_the_same_remedies_keep_their_sqlite_text() {
    const JOBS: &[(&str, &str)] = &[
        ("id", ""),
        ("status", ""),
        ("pid", ""),
        ("attempts", ""),
        ("updated_at", ""),
        ("finished_at", ""),
    ];
    let job = vec![
        SqlValue::Integer(7),
        text("running"),
        text("4242"),
        SqlValue::Null,
        text("2023-11-14 21:00:00"),
        SqlValue::Integer(1),
        SqlValue::Null,
        SqlValue::Null,
        SqlValue::Null,
    ];
    let seen = Rc::new(RefCell::new(Vec::new()));
    let config = config(serde_json::json!({
        "db": "jobs", "updated_column": "updated_at",
        "requeue_set": { "finished_at": { "now": true } }
    }));
    let out = sqlite_file(Facts::new())
        .query("jobs", table(JOBS, vec![job], seen.clone()))
        .processes(vec![])
        .run::<JobHealth>(&config);
    assert!(seen
        .borrow()
        .contains(&"SELECT name FROM pragma_table_info(?1)".to_string()));
    assert!(seen.borrow().contains(&"SELECT \"id\", \"status\", \"pid\", NULL, \"updated_at\", \"attempts\", NULL, NULL, NULL FROM \"jobs\" WHERE \"status\" IN (?1, ?2, ?3) ORDER BY \"id\"".to_string()), "{:#?}", seen.borrow());
    let writes = writes(&out);
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!(writes[0].0, "UPDATE \"jobs\" SET \"status\" = ?1, \"pid\" = NULL, \"attempts\" = COALESCE(\"attempts\", 0) + 1, \"updated_at\" = strftime('%Y-%m-%d %H:%M:%S', 'now'), \"finished_at\" = ?2 WHERE \"id\" = ?3 AND \"status\" IS ?4 AND \"pid\" IS ?5 AND \"updated_at\" IS ?6 AND \"attempts\" IS ?7");
    assert!(matches!(&writes[0].1[1], SqlValue::Text(t) if t == "2023-11-14 22:13:20"));
}

/// A SQLite file that exists, for the writability diagnosis.
fn sqlite_file(facts: Facts) -> Facts {
    use doctor_sdk::files::{FileKind, FileStat};
    let stat = |kind| FileStat {
        kind,
        size: 0,
        uid: 0,
        gid: 0,
        mode: 0o755,
        modified_unix_ms: 0,
    };
    facts
        .on("sqlite.file_info", move |_| {
            Some(Ok::<_, Error>(doctor_sdk::sqlite::DbFile {
                file: Some(stat(FileKind::File)),
                directory: Some(stat(FileKind::Directory)),
            }))
        })
        .on("sqlite.location", |_| {
            Some(Ok::<_, Error>("/srv/jobs.db".to_string()))
        })
}

const W_PID: &str = "(SELECT w.pid FROM workers w WHERE w.id = worker_id)";
const W_HOST: &str = "(SELECT w.hostname FROM workers w WHERE w.id = worker_id)";
const W_BEAT: &str = "(SELECT w.last_heartbeat FROM workers w WHERE w.id = worker_id)";

/// Executions joined by `worker_id` to a workers table that keeps each
/// worker's pid, host and last heartbeat.
const EXECUTIONS: &[(&str, &str)] = &[
    ("id", "bigint"),
    ("status", "text"),
    ("worker_id", "integer"),
    ("claimed_at", "timestamp with time zone"),
    ("attempts", "integer"),
];

fn workers_config(extra: serde_json::Value) -> String {
    let mut overrides = serde_json::json!({
        "db": "jobs", "table": "executions", "worker_column": "",
        "worker_pid_sql": W_PID, "worker_host_sql": W_HOST, "heartbeat_sql": W_BEAT,
        "heartbeat_timeout": "5m", "claimed_column": "claimed_at"
    });
    let more = extra.as_object().cloned().unwrap_or_default();
    overrides.as_object_mut().expect("an object").extend(more);
    config(overrides)
}

/// Two running executions of workers on host `elsewhere` (the test's host
/// is `test-host`, its clock 2023-11-14T22:13:20Z): job 1's worker beat 20
/// seconds ago, job 2's an hour ago. As the SELECT reads them: id, status,
/// worker (none), heartbeat, updated (none), attempts, claimed, pid, host.
fn remote_executions() -> Vec<Vec<SqlValue>> {
    let job = |id: i64, beat: &str| {
        vec![
            SqlValue::Integer(id),
            text("running"),
            SqlValue::Null,
            text(beat),
            SqlValue::Null,
            SqlValue::Integer(0),
            text("2023-11-14T21:00:00.000000+00:00"),
            SqlValue::Integer(4000 + id),
            text("elsewhere"),
        ]
    };
    vec![
        job(1, "2023-11-14T22:13:00.000000+00:00"),
        job(2, "2023-11-14T21:13:20.000000+00:00"),
    ]
}

#[test]
fn a_heartbeat_in_a_related_table_judges_a_remote_job_like_a_heartbeat_column() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let out = Facts::new()
        .postgres("jobs")
        .query("jobs", table(EXECUTIONS, remote_executions(), seen.clone()))
        .processes(vec![])
        .run::<JobHealth>(&workers_config(serde_json::json!({})));
    let seen = seen.borrow();
    let probe = format!("SELECT ({W_BEAT}) FROM \"executions\" LIMIT 0");
    assert!(seen.contains(&probe), "the expression is probed: {seen:#?}");
    let select = format!("SELECT \"id\", \"status\", NULL, ({W_BEAT}), NULL, \"attempts\", \"claimed_at\", ({W_PID}), ({W_HOST}) FROM \"executions\" WHERE \"status\" IN ($1, $2, $3) ORDER BY \"id\"");
    assert!(seen.contains(&select), "{seen:#?}");
    // The stale one is orphaned, judged by its heartbeat on another host; the fresh one is not.
    let f = out
        .finding("worker:pid 4002, host elsewhere:orphaned")
        .unwrap_or_else(|| panic!("{:#?}", out.keys()));
    assert!(
        f.message.contains(
            "its owner is on host elsewhere and its last heartbeat is 1h0m old (timeout 5m0s; read as ISO-8601"
        ),
        "{}",
        f.message
    );
    let evidence = |k: &str| {
        f.evidence
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.clone())
    };
    assert!(
        evidence("heartbeat_read_as").is_some_and(|r| r.contains("ISO-8601")),
        "{f:#?}"
    );
    assert!(
        out.keys()
            .iter()
            .all(|k| !k.contains("4001") && !k.starts_with("job:1:")),
        "the fresh job is left alone: {:?}",
        out.keys()
    );
    let writes = writes(&out);
    assert_eq!(writes.len(), 1, "{writes:#?}");
    let (requeue, params) = &writes[0];
    assert_eq!(
        requeue,
        &format!("UPDATE \"executions\" SET \"status\" = $1, \"attempts\" = COALESCE(\"attempts\", 0) + 1 WHERE \"id\" = $2 AND \"status\" IS NOT DISTINCT FROM $3 AND ({W_BEAT}) IS NOT DISTINCT FROM $4 AND \"attempts\" IS NOT DISTINCT FROM $5 AND \"claimed_at\" IS NOT DISTINCT FROM $6 AND ({W_PID}) IS NOT DISTINCT FROM $7 AND ({W_HOST}) IS NOT DISTINCT FROM $8")
    );
    assert!(
        matches!(&params[3], SqlValue::Text(t) if t == "2023-11-14T21:13:20.000000+00:00"),
        "the heartbeat as read: {params:?}"
    );
}

#[test]
fn on_sqlite_a_heartbeat_expression_is_read_and_compared_in_its_text() {
    const JOBS: &[(&str, &str)] = &[
        ("id", ""),
        ("status", ""),
        ("worker_id", ""),
        ("attempts", ""),
    ];
    let beat = "(SELECT last_beat FROM workers WHERE workers.id = worker_id)";
    let job = vec![
        SqlValue::Integer(7),
        text("running"),
        SqlValue::Null,
        SqlValue::Integer(1_700_000_000 - 3600),
        SqlValue::Null,
        SqlValue::Integer(0),
        SqlValue::Null,
        SqlValue::Null,
        SqlValue::Null,
    ];
    let seen = Rc::new(RefCell::new(Vec::new()));
    let config = config(serde_json::json!({
        "db": "jobs", "worker_column": "", "heartbeat_sql": beat, "heartbeat_timeout": "5m"
    }));
    let out = sqlite_file(Facts::new())
        .query("jobs", table(JOBS, vec![job], seen.clone()))
        .processes(vec![])
        .run::<JobHealth>(&config);
    let select = format!("SELECT \"id\", \"status\", NULL, ({beat}), NULL, \"attempts\", NULL, NULL, NULL FROM \"jobs\" WHERE \"status\" IN (?1, ?2, ?3) ORDER BY \"id\"");
    assert!(seen.borrow().contains(&select), "{:#?}", seen.borrow());
    let writes = writes(&out);
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!(writes[0].0, format!("UPDATE \"jobs\" SET \"status\" = ?1, \"attempts\" = COALESCE(\"attempts\", 0) + 1 WHERE \"id\" = ?2 AND \"status\" IS ?3 AND ({beat}) IS ?4 AND \"attempts\" IS ?5"));
    assert!(matches!(writes[0].1[3], SqlValue::Integer(t) if t == 1_700_000_000 - 3600));
}

#[test]
fn heartbeat_sql_is_one_expression_and_never_with_heartbeat_column() {
    let error = |extra: serde_json::Value| {
        let out = Facts::new()
            .postgres("jobs")
            .query("jobs", table(EXECUTIONS, Vec::new(), Rc::default()))
            .processes(vec![])
            .run::<JobHealth>(&workers_config(extra));
        match out.result {
            Err(e) => doctor_sdk::error_text(&e),
            Ok(f) => panic!("no config error: {f:#?}"),
        }
    };
    let both = error(serde_json::json!({ "heartbeat_column": "claimed_at" }));
    assert!(
        both.starts_with("invalid: config: heartbeat_column = \"claimed_at\" and heartbeat_sql = ")
            && both.contains("set one of them"),
        "{both}"
    );
    for statement in [
        "SELECT last_heartbeat FROM workers",
        "(SELECT 1); DELETE FROM workers",
        "(DELETE FROM workers RETURNING last_heartbeat)",
    ] {
        let e = error(serde_json::json!({ "heartbeat_sql": statement }));
        assert!(
            e.starts_with(&format!(
                "invalid: config: heartbeat_sql = {statement:?} is not a single SQL expression"
            )),
            "{statement}: {e}"
        );
    }
}

const PLAIN: &[(&str, &str)] = &[
    ("id", "bigint"),
    ("status", "text"),
    ("pid", "text"),
    ("attempts", "integer"),
];

/// A job as the default config reads it: id, status, worker, heartbeat,
/// updated, attempts, claimed, pid and host expressions.
fn plain_job(id: i64, status: &str, worker: &str) -> Vec<SqlValue> {
    let mut job = vec![SqlValue::Integer(id), text(status), text(worker)];
    job.extend([SqlValue::Null, SqlValue::Null, SqlValue::Integer(0)]);
    job.extend([SqlValue::Null, SqlValue::Null, SqlValue::Null]);
    job
}

/// Workers 200 (alive) and 300 (an editor now), and processes no running
/// job names, which the plugin must not read.
fn host_processes() -> Vec<doctor_sdk::processes::Process> {
    use doctor_sdk::processes::Process;
    use doctor_sdk::testing::process;
    let mut table = vec![
        process(200, "python3 worker.py --hostname w1"),
        Process {
            cgroup: Some("/system.slice/jobs.service".into()),
            ..process(201, "python3 worker.py --hostname w2")
        },
        process(300, "vim notes"),
    ];
    table.extend((1000..1100).map(|pid| process(pid, "sleep 600")));
    table
}

#[test]
fn only_the_running_jobs_workers_are_asked_for_never_the_whole_table() {
    let jobs = vec![
        plain_job(1, "running", "200"),
        plain_job(2, "running", "4242"),
        plain_job(3, "running", "200"),
        plain_job(4, "running", "300"),
        plain_job(5, "pending", "1000"),
    ];
    let asked = AskedProcesses::default();
    let facts = Facts::new()
        .postgres("jobs")
        .query("jobs", table(PLAIN, jobs, Rc::default()));
    let out = facts
        .processes_asked(host_processes(), &asked)
        .run::<JobHealth>(&config(
            serde_json::json!({ "db": "jobs", "worker_match": "worker\\.py" }),
        ));
    assert_eq!(
        out.keys(),
        [
            "worker:4242:orphaned",
            "worker:300:orphaned",
            "table:jobs:summary"
        ]
    );
    // The grant's probe (pid 0), then each running job's distinct worker.
    assert_eq!(*asked.borrow(), ["get 0", "get 200", "get 300", "get 4242"]);
}

#[test]
fn a_name_only_worker_is_searched_by_its_pattern_by_the_host() {
    let jobs = vec![
        plain_job(1, "running", "w1"),
        plain_job(2, "running", "w2"),
        plain_job(3, "running", "w3"),
    ];
    let asked = AskedProcesses::default();
    let facts = Facts::new()
        .postgres("jobs")
        .query("jobs", table(PLAIN, jobs, Rc::default()));
    let out = facts
        .processes_asked(host_processes(), &asked)
        .run::<JobHealth>(&config(serde_json::json!({
            "db": "jobs", "worker_kind": "name",
            "name_pattern": "--hostname (?P<name>\\S+)",
            "scope": { "unit": "jobs.service" }
        })));
    // w1 runs outside the scope, w3 nowhere: both dead; w2 is alive.
    assert_eq!(
        out.keys(),
        [
            "worker:w1:orphaned",
            "worker:w3:orphaned",
            "config:weak-identity",
            "table:jobs:summary"
        ]
    );
    assert_eq!(
        *asked.borrow(),
        ["get 0", "query --hostname (?P<name>\\S+)"]
    );
}
