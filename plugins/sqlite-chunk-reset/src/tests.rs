//! The plugin's `check`, run natively against a chunk table the test
//! supplies (doctor_sdk::testing): the SQL it reads and proposes on
//! PostgreSQL.

use super::{ChunkReset, Config};
use doctor_sdk::config::DeclaredConfig;
use doctor_sdk::sqlite::Rows;
use doctor_sdk::testing::{AskedProcesses, Facts};
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

/// A coordinator's table as a queue library writes it: `locked_by` is
/// `host:pid`, `locked_at` and `heartbeat_at` are timestamptz.
const CHUNKS: &[(&str, &str)] = &[
    ("id", "bigint"),
    ("status", "text"),
    ("locked_by", "text"),
    ("locked_at", "timestamp with time zone"),
    ("heartbeat_at", "timestamp with time zone"),
];

type Seen = Rc<RefCell<Vec<(String, Vec<SqlValue>)>>>;

fn table(
    chunks: Vec<Vec<SqlValue>>,
    seen: Seen,
) -> impl FnMut(&str, &[SqlValue]) -> Result<Rows, Error> {
    move |sql, params| {
        seen.borrow_mut().push((sql.to_string(), params.to_vec()));
        match sql {
            s if s.starts_with("SELECT a.attname, format_type") => {
                rows(CHUNKS.iter().map(|(n, t)| vec![text(n), text(t)]).collect())
            }
            s if s.contains("count(*)") => rows(vec![vec![text("running"), SqlValue::Integer(2)]]),
            _ => rows(chunks.clone()),
        }
    }
}

/// A check of PostgreSQL label `work` holding `chunks`, with no process
/// running; what it found and every query it sent.
fn on_postgres(
    chunks: Vec<Vec<SqlValue>>,
    overrides: serde_json::Value,
) -> (doctor_sdk::testing::Outcome, Seen) {
    let seen: Seen = Rc::default();
    let out = Facts::new()
        .postgres("work")
        .query("work", table(chunks, seen.clone()))
        .processes(vec![])
        .run::<ChunkReset>(&config(overrides));
    (out, seen)
}

#[test]
fn on_postgres_a_dead_owners_chunks_are_reset_by_one_compare_and_swap() {
    let chunk = |id: i64, locked_at: &str| {
        let (owner, beat) = (
            text("test-host:4242"),
            text("2023-11-14T22:10:00.000000+00:00"),
        );
        vec![
            SqlValue::Integer(id),
            owner,
            text(locked_at),
            beat,
            SqlValue::Null,
            SqlValue::Null,
        ]
    };
    let chunks = vec![
        chunk(1, "2023-11-14T22:00:00.123456+00:00"),
        chunk(2, "2023-11-14T22:00:01.000000+00:00"),
    ];
    let (out, seen) = on_postgres(
        chunks,
        serde_json::json!({
            "db": "work", "table": "app.chunks", "worker_column": "locked_by",
            "started_at_column": "locked_at", "heartbeat_column": "heartbeat_at",
            "owner_format": "host:pid"
        }),
    );
    let seen = seen.borrow();
    let (columns, params) = &seen[0];
    assert!(columns.contains("to_regclass($1)"), "{columns}");
    assert!(
        matches!(&params[..], [SqlValue::Text(t)] if t == "\"app\".\"chunks\""),
        "the quoted form: {params:?}"
    );
    let read = "SELECT \"id\", \"locked_by\", \"locked_at\", \"heartbeat_at\", NULL, NULL FROM \"app\".\"chunks\" WHERE \"status\" = $1 ORDER BY \"id\"";
    assert!(seen.iter().any(|(sql, _)| sql == read), "{seen:#?}");
    let f = out
        .finding("worker:test-host:4242:orphaned")
        .expect("the dead owner's finding");
    let [planned] = &f.actions[..] else {
        panic!("one set-based statement: {:#?}", f.actions)
    };
    let Action::SqlExec(reset) = &planned.action else {
        panic!("{planned:?}")
    };
    assert_eq!(
        reset.statement,
        "UPDATE \"app\".\"chunks\" SET \"status\" = $1, \"locked_by\" = NULL, \"locked_at\" = NULL WHERE \"status\" = $2 AND \"locked_by\" IS NOT DISTINCT FROM $3 AND \"heartbeat_at\" IS NOT DISTINCT FROM $4 AND (\"id\", \"locked_at\") IN (VALUES ($5::bigint, $6::timestamp with time zone), ($7::bigint, $8::timestamp with time zone))"
    );
    assert_eq!((reset.params.len(), reset.max_rows), (8, 2));
    assert!(
        matches!(&reset.params[5], SqlValue::Text(t) if t == "2023-11-14T22:00:00.123456+00:00")
    );
}

#[test]
fn a_heartbeat_in_a_related_table_judges_another_hosts_chunk() {
    const BEAT: &str =
        "(SELECT w.last_heartbeat FROM workers w WHERE w.hostname || ':' || w.pid = locked_by)";
    // The test's clock is 2023-11-14T22:13:20Z: chunk 1's worker beat 20 s ago, chunk 2's an hour ago.
    let chunk = |id: i64, beat: &str| {
        vec![
            SqlValue::Integer(id),
            text(&format!("elsewhere:{}", 4000 + id)),
            text("2023-11-14T21:00:00.000000+00:00"),
            text(beat),
            SqlValue::Null,
            SqlValue::Null,
        ]
    };
    let chunks = vec![
        chunk(1, "2023-11-14T22:13:00.000000+00:00"),
        chunk(2, "2023-11-14T21:13:20.000000+00:00"),
    ];
    let (out, seen) = on_postgres(
        chunks,
        serde_json::json!({
            "db": "work", "table": "app.chunks", "worker_column": "locked_by",
            "started_at_column": "locked_at", "heartbeat_sql": BEAT,
            "heartbeat_timeout": "5m", "owner_format": "host:pid"
        }),
    );
    let seen = seen.borrow();
    let read = format!("SELECT \"id\", \"locked_by\", \"locked_at\", ({BEAT}), NULL, NULL FROM \"app\".\"chunks\" WHERE \"status\" = $1 ORDER BY \"id\"");
    assert!(seen.iter().any(|(sql, _)| *sql == read), "{seen:#?}");
    assert!(out.finding("worker:elsewhere:4001:orphaned").is_none());
    let f = out
        .finding("worker:elsewhere:4002:orphaned")
        .unwrap_or_else(|| panic!("{:?}", out.keys()));
    assert!(
        f.message.contains(&format!(
            "its owner is on host elsewhere and its last heartbeat is 1h0m old (timeout 5m0s; {BEAT} read as ISO-8601"
        )),
        "{}",
        f.message
    );
    let [planned] = &f.actions[..] else {
        panic!("{:#?}", f.actions)
    };
    let Action::SqlExec(reset) = &planned.action else {
        panic!("{planned:?}")
    };
    assert_eq!(
        reset.statement,
        format!("UPDATE \"app\".\"chunks\" SET \"status\" = $1, \"locked_by\" = NULL, \"locked_at\" = NULL WHERE \"id\" = $2 AND \"status\" = $3 AND \"locked_by\" IS NOT DISTINCT FROM $4 AND \"locked_at\" IS NOT DISTINCT FROM $5 AND ({BEAT}) IS NOT DISTINCT FROM $6")
    );
    assert!(
        matches!(&reset.params[5], SqlValue::Text(t) if t == "2023-11-14T21:13:20.000000+00:00")
    );
}

/// A supervisor (50) running the coordinator (100) and a worker (200);
/// another worker (201) outside it; a pid reused by an editor (301); and
/// processes no row names, which the plugin must not read.
fn deployment(coordinator: bool) -> Vec<doctor_sdk::processes::Process> {
    use doctor_sdk::processes::Process;
    use doctor_sdk::testing::process;
    let mut table = vec![
        process(50, "sh /srv/a/supervise.sh"),
        Process {
            ppid: 50,
            ..process(200, "python3 worker.py")
        },
        process(201, "python3 worker.py"),
        process(301, "vim notes"),
    ];
    if coordinator {
        table.push(Process {
            ppid: 50,
            ..process(100, "python3 coordinator.py")
        });
    }
    table.extend((1000..1100).map(|pid| process(pid, "sleep 600")));
    table
}

/// Running chunks owned by `owners` (`host:pid`), one each.
fn owned(owners: &[&str]) -> Vec<Vec<SqlValue>> {
    let chunk = |(id, owner): (usize, &&str)| {
        vec![
            SqlValue::Integer(id as i64 + 1),
            text(owner),
            SqlValue::Null,
            SqlValue::Null,
            SqlValue::Null,
            SqlValue::Null,
        ]
    };
    owners.iter().enumerate().map(chunk).collect()
}

fn scoped_check(
    owners: &[&str],
    coordinator: bool,
    asked: &AskedProcesses,
) -> doctor_sdk::testing::Outcome {
    let facts = Facts::new()
        .postgres("work")
        .query("work", table(owned(owners), Rc::default()));
    facts
        .processes_asked(deployment(coordinator), asked)
        .run::<ChunkReset>(&config(serde_json::json!({
            "db": "work", "worker_column": "locked_by", "started_at_column": "",
            "owner_format": "host:pid", "worker_match": "worker\\.py",
            "coordinator_match": "coordinator\\.py", "scope": { "under": "supervise\\.sh" }
        })))
}

#[test]
fn only_the_rows_owners_and_the_coordinator_are_asked_for_never_the_whole_table() {
    let asked = AskedProcesses::default();
    let out = scoped_check(
        &[
            "test-host:200",
            "test-host:4242",
            "test-host:301",
            "test-host:200",
        ],
        true,
        &asked,
    );
    assert_eq!(
        out.keys(),
        [
            "worker:test-host:4242:orphaned",
            "worker:test-host:301:orphaned",
            "table:chunks:state"
        ]
    );
    let dead = out.finding("worker:test-host:301:orphaned").unwrap();
    assert!(dead.message.contains("not a worker"), "{}", dead.message);
    // The grant's probe (pid 0), each distinct owner with its parents (the
    // scope's `under`), then the coordinator by its pattern, whose parent
    // the table holds by then.
    assert_eq!(
        *asked.borrow(),
        [
            "get 0",
            "get 200",
            "get 50",
            "get 1",
            "get 301",
            "get 4242",
            "query coordinator\\.py"
        ]
    );
}

#[test]
fn without_the_coordinator_a_leftover_is_stopped_only_inside_the_scope() {
    let asked = AskedProcesses::default();
    let out = scoped_check(&["test-host:200", "test-host:201"], false, &asked);
    let inside = out.finding("worker:200:leftover").expect("worker 200");
    assert_eq!(inside.actions.len(), 1, "its parent chain puts it in scope");
    let outside = out.finding("worker:201:leftover").expect("worker 201");
    assert!(outside.actions.is_empty(), "{:?}", outside.evidence);
    assert!(!asked.borrow().iter().any(|a| a.starts_with("get 10")));
}

#[test]
fn rows_naming_hundreds_of_pids_read_the_whole_table_once() {
    let owners: Vec<String> = (0..=db_common::MAX_LOOKUPS)
        .map(|i| format!("test-host:{}", 5000 + i))
        .collect();
    let owners: Vec<&str> = owners.iter().map(String::as_str).collect();
    let (gets, wholes) = (Rc::new(RefCell::new(0)), Rc::new(RefCell::new(0)));
    let (g, w) = (gets.clone(), wholes.clone());
    let out = Facts::new()
        .postgres("work")
        .query("work", table(owned(&owners), Rc::default()))
        .processes(deployment(true))
        .on("processes.get", move |_| {
            *g.borrow_mut() += 1;
            None::<()>
        })
        .on("processes.all", move |_| {
            *w.borrow_mut() += 1;
            None::<()>
        })
        .run::<ChunkReset>(&config(serde_json::json!({
            "db": "work", "worker_column": "locked_by", "started_at_column": "",
            "owner_format": "host:pid", "max_chunk_findings": 1000
        })));
    assert_eq!(
        out.keys().len(),
        db_common::MAX_LOOKUPS + 2,
        "every owner dead, and the state"
    );
    assert_eq!(
        (*gets.borrow(), *wholes.borrow()),
        (1, 1),
        "the grant's probe, one whole read"
    );
}
