//! The incident: a coordinator crashed at 2 a.m.; its SQLite table still says
//! chunks are `running` with an assigned worker, nothing is running, the
//! dashboard shows ACTIVE at 0 %, and a restart cannot start because the work
//! looks taken.
//!
//! A `running` chunk is orphaned when its owner is not alive, when its owner
//! is on another host and its heartbeat is older than the timeout (both
//! judged by db-common's `claims`), or when the configured coordinator is
//! absent from the deployment's scope. Each owner's orphaned chunks are one
//! finding, reset to pending by a few set-based compare-and-swaps (each row
//! still exactly as read), **then** the leftover workers those rows name are
//! stopped (never every process matching a pattern). It also says why a
//! reset would fail and reports the table as Processing / Pending / Complete / Idle.
//! The table may be SQLite's or PostgreSQL's: db-common's dialect renders the SQL.

use db_common::{
    ident, ident_or_null, ids_shown, integer, opt_column, regex, row_liveness, shown, Clock,
    Heartbeat, IdentityConfig, Liveness, Lookups, OnHost, Orphan, Orphans, RowName, StatusCounts,
    TimeColumn, Update, WorkerKind, SHOWN_IDS, WITHHELD,
};
use doctor_sdk::prelude::*;
use doctor_sdk::process::command_line;
use doctor_sdk::processes::Process;
use doctor_sdk::scope::ScopeMatcher;
use doctor_sdk::time::human_ms;
use serde::Deserialize;
use std::collections::BTreeMap;

doctor_sdk::config! {
    #[derive(Deserialize)]
    struct Config {
        db: String, "database label from [databases]",
        table: String = r#""chunks""#, "the chunk table",
        id_column: String = r#""id""#, "the chunk's primary key column",
        status_column: String = r#""status""#, "the status column",
        worker_column: String = r#""assigned_worker""#, "the column naming the owner of a running chunk",
        started_at_column: Option<String> = r#""started_at""#, "the claim-time column cleared on reset (a process younger than its claim has a reused pid); \"\" when the table has none",
        coordinator_match: Option<String> = r#""""#, "regex of the coordinator's command line, searched inside `scope` only; when none runs there, every running chunk is orphaned",
        heartbeat_column: Option<String> = r#""""#, "heartbeat column: how a chunk owned by another host is judged; \"\" for none",
        heartbeat_sql: Option<String> = r#""""#, "instead of heartbeat_column: an SQL expression giving a chunk's heartbeat, read, judged and compared like the column, e.g. (SELECT w.last_heartbeat FROM workers w WHERE w.id = worker_id) for a heartbeat kept in a related table; \"\" for none",
        #[serde(deserialize_with = "db_common::opt_duration_ms")]
        heartbeat_timeout: Option<u64> = r#""""#, "a remote owner's chunk is orphaned when its heartbeat is older than this (e.g. \"5m\")",
        running_status: String = r#""running""#, "status value of a chunk being worked on",
        pending_status: String = r#""pending""#, "status value an orphaned chunk is reset to",
        complete_statuses: Vec<String> = r#"["complete", "completed", "done"]"#, "status values that count as complete for progress",
        service_user: Option<String> = r#""""#, "the user the coordinator runs as: diagnose whether it can write the database file and directory (a SQLite file; not asked of PostgreSQL)",
        stop_workers: bool = "true", "when the coordinator is absent, stop the workers the orphaned rows name after the reset (needs grants.signal)",
        grace_ms: u32 = "5000", "time between TERM and KILL when stopping a leftover worker",
        max_chunk_findings: usize = "20", "dead owners reported one finding each (worker:<owner>:orphaned, the owners with most chunks first), each owner's chunks reset by a few set-based compare-and-swaps; the chunks of owners beyond this share one overflow finding",
        ..identity: IdentityConfig,
    }
}

struct ChunkReset;

impl Plugin for ChunkReset {
    type Config = Config;

    fn info() -> Info {
        Info::new("sqlite-chunk-reset", "Resets orphaned running chunks to pending (database first), then stops the leftover workers those rows name")
            .capabilities(&[caps::SQLITE, caps::SQLITE_WRITE, caps::PROCESSES, caps::SIGNAL])
            .config::<Config>()
    }

    fn check(c: Config) -> Result<Vec<Finding>, Error> {
        // What the config alone decides, before the database is opened; then what only this host and its table can tell.
        let id = c.identity.identity(&c.heartbeat_column, &c.heartbeat_sql)?;
        let coordinator = regex("coordinator_match", c.coordinator_match.as_deref())?;
        let (started_col, user) = (
            opt_column(&c.started_at_column),
            opt_column(&c.service_user),
        );
        let wanted = db_common::configured(&[
            ("id_column", Some(&c.id_column)),
            ("status_column", Some(&c.status_column)),
            ("worker_column", Some(&c.worker_column)),
            ("started_at_column", started_col),
        ]);
        let OnHost {
            db,
            problems,
            scope,
            weak,
        } = id.on_host(
            &c.db,
            &c.table,
            user,
            &c.identity.scope,
            c.identity.worker_kind,
            &wanted,
        )?;
        let (hostname, clock) = (host::hostname(), Clock::now(id.unit, c.identity.clock_skew));
        let mut findings: Vec<Finding> = weak.into_iter().collect();
        let (key, status) = (ident(&c.id_column), ident(&c.status_column));
        let sql = format!(
            "SELECT {key}, {}, {}, {}, {} FROM {} WHERE {status} = {} ORDER BY {key}",
            ident(&c.worker_column),
            ident_or_null(started_col),
            id.heartbeat_select(),
            id.select_list(),
            db.table_sql(),
            db.mark(1),
        );
        let running = db.query(&sql, &[SqlValue::Text(c.running_status.clone())])?;
        // Only the processes the verdicts look at: the rows' owners, and the
        // coordinator inside the scope (read after the rows, so a worker
        // that claimed a row since is seen).
        let finder = id.name_finder(&scope);
        let owners = db_common::distinct(&running.rows).map(|r| id.row(&r[1], &r[4], &r[5]));
        let table = Lookups::of_rows(&id, &c.identity, &hostname, finder.as_ref(), owners)
            .searching(coordinator.as_ref().filter(|_| !scope.is_unscoped()))
            .read(true)?;
        // The coordinator is searched inside the scope only: another deployment's would count.
        let coordinator_absent = match &coordinator {
            Some(_) if scope.is_unscoped() => {
                let text = format!("coordinator_match {:?} is not searched: a command-line pattern alone matches nothing, because another deployment's coordinator would count as this one's. Name the scope (scope = {{ user, unit, cgroup, under }}) or, deliberately, scope = \"host\"", c.coordinator_match.as_deref().unwrap_or_default());
                findings.push(Finding::warning(
                    format!("table:{}:coordinator-unscoped", c.table),
                    format!("table {}", c.table),
                    text,
                ));
                false
            }
            Some(re) => table.in_scope(re, &scope).next().is_none(),
            None => false,
        };
        findings.extend(db_common::unwritable_finding(
            &c.db,
            user.unwrap_or_default(),
            &problems,
        ));
        let withheld = (!problems.is_empty()).then(|| ("reset", WITHHELD.to_string()));

        let chk = id.owner_check(c.identity.worker_kind, &table, &hostname, finder.as_ref());
        let (mut live_running, mut leftovers, mut orphans) =
            (0usize, BTreeMap::<u32, Leftover>::new(), Vec::new());
        for row in db_common::distinct(&running.rows) {
            let (chunk, worker, started, heartbeat) = (&row[0], &row[1], &row[2], &row[3]);
            let name = RowName {
                key: format!("chunk:{}:{}", c.table, shown(chunk)),
                subject: format!("{} chunk {}", c.table, shown(chunk)),
                worker: Some(shown(worker)),
            };
            let claimed = name.claimed_ms(&clock, started_col, started, &mut findings);
            let who = id.row(worker, &row[4], &row[5]);
            let alive = row_liveness(&who, &chk, claimed);
            let verdict = match (alive, coordinator_absent) {
                (alive, false) => judge(
                    &c,
                    &shown(chunk),
                    &name,
                    alive,
                    id.heartbeat_name(),
                    clock.heartbeat(id.heartbeat_name(), heartbeat, c.heartbeat_timeout),
                    heartbeat,
                ),
                (Liveness::Alive(procs), true) => {
                    // Named by a pid (worker_pid_sql's, or an owner), not by a name?
                    let by_pid = c.identity.worker_kind == WorkerKind::Pid
                        || id.pid_sql.is_some() && integer(&row[4]).is_some_and(|p| p > 0);
                    for p in procs {
                        let allowed = db_common::may_stop(by_pid, &scope, &table, &p);
                        leftovers
                            .entry(p.id.pid)
                            .or_insert_with(|| Leftover {
                                process: p,
                                chunks: Vec::new(),
                                allowed,
                            })
                            .chunks
                            .push(shown(chunk));
                    }
                    Err("the coordinator is not running; its worker is a leftover".into())
                }
                (Liveness::Dead(why), true) => {
                    Err(format!("the coordinator is not running and {why}"))
                }
                (Liveness::Remote(h), true) => Err(format!(
                    "the coordinator is not running (the worker is on host {h})"
                )),
                (Liveness::Unknown(why), true) => {
                    Err(format!("the coordinator is not running ({why})"))
                }
            };
            match verdict {
                Err(why) => orphans.push(Orphan {
                    owner: who.shown(),
                    id: shown(chunk),
                    status: c.running_status.clone(),
                    why,
                    write: withheld.is_none().then(|| {
                        let beat = (!coordinator_absent).then(|| id.unchanged_beat(&row[3]));
                        let guard = [beat.unwrap_or_default(), id.unchanged(&row[4], &row[5])];
                        let guard = guard.concat();
                        (
                            reset(&c, row, guard),
                            format!(
                                "reset to {} (worker and start time cleared)",
                                c.pending_status
                            ),
                        )
                    }),
                    evidence: withheld.clone().into_iter().collect(),
                }),
                Ok(extra) => {
                    live_running += 1;
                    findings.extend(extra);
                }
            }
        }
        let orphaned = orphans.len();
        // One finding per dead owner, its rows reset by set-based compare-and-swaps; owners beyond max_chunk_findings share one.
        findings.extend(
            Orphans {
                db: &db,
                noun: "chunk",
                consequence: "nothing will finish this work and it blocks a restart",
                max_findings: c.max_chunk_findings,
                overflow_key: format!("chunks:{}:orphaned-overflow", c.table),
            }
            .findings(orphans),
        );
        // After every reset: stops come last so that a refused or failed stop never blocks the cleanup.
        findings.extend(leftovers.values().map(|l| leftover_finding(&c, l, &scope)));
        findings.push(state_finding(
            &c,
            StatusCounts::read(&db, &c.status_column)?,
            orphaned,
            live_running,
            coordinator_absent,
        ));
        Ok(findings)
    }
}

/// A running chunk while the coordinator runs (or none is configured): Err(why) orphaned, Ok(finding?) running.
fn judge(
    c: &Config,
    chunk: &str,
    name: &RowName,
    alive: Liveness,
    hb_col: Option<&str>,
    beat: Heartbeat,
    value: &SqlValue,
) -> Result<Option<Finding>, String> {
    let running = &c.running_status;
    let unknown = |why: String| {
        let f = Finding::warning(
            format!("{}:unknown-worker", name.key),
            &name.subject,
            format!("chunk {chunk} is {running} but {why}"),
        );
        Ok(Some(f.evidence(
            "worker",
            name.worker.as_deref().unwrap_or_default(),
        )))
    };
    let unusable = |trouble, consequence: &str| {
        Ok(Some(name.time_finding(
            TimeColumn::Heartbeat,
            hb_col,
            value,
            trouble,
            consequence,
        )))
    };
    match (alive, beat) {
        (Liveness::Dead(why), _) => Err(why),
        // A live local owner needs no heartbeat, but an unusable one is still said.
        (Liveness::Alive(_), Heartbeat::Unusable(trouble)) => unusable(&trouble, "its owner is judged by its pid, which is alive"),
        (Liveness::Alive(_), _) => Ok(None),
        (Liveness::Unknown(why), _) => unknown(format!("its worker cannot be checked: {why}")),
        // Another host's owner: only its heartbeat can tell, never a local pid.
        (Liveness::Remote(host), Heartbeat::NotKept) => unknown(format!("its owner is on host {host}; local pids say nothing about it and neither heartbeat_column nor heartbeat_sql is configured, so it is left alone")),
        (Liveness::Remote(host), Heartbeat::Unusable(trouble)) => unusable(&trouble, &format!("the chunk is owned by host {host} and is left alone")),
        (Liveness::Remote(host), Heartbeat::Read { stamp, age, stale: Some(true) }) => Err(format!(
            "its owner is on host {host} and its last heartbeat is {} old (timeout {}; {} read as {})",
            human_ms(age),
            human_ms(c.heartbeat_timeout.unwrap_or_default() as i64),
            hb_col.unwrap_or_default(),
            stamp.read_as
        )),
        (Liveness::Remote(_), Heartbeat::Read { stale: Some(false), .. }) => Ok(None),
        (Liveness::Remote(host), Heartbeat::Read { age, .. }) => unknown(format!("its owner is on host {host} and no heartbeat_timeout is configured to judge its heartbeat ({} old)", human_ms(age))),
    }
}

/// A live worker named by an orphaned row of a dead coordinator; `allowed`: see `db_common::may_stop`.
struct Leftover {
    process: Process,
    chunks: Vec<String>,
    allowed: bool,
}

/// Reset one chunk to pending (worker and claim time cleared) if it is still
/// running for its worker exactly as read: the claim time, and `guard`: the
/// heartbeat (not while the coordinator is absent: a leftover worker may
/// still beat) and the identity the verdict rests on.
fn reset(c: &Config, row: &[SqlValue], guard: Vec<(String, SqlValue)>) -> Update {
    let (mut u, started) = (Update::default(), opt_column(&c.started_at_column));
    u.set(&c.status_column, SqlValue::Text(c.pending_status.clone()))
        .set_sql(format!("{} = NULL", ident(&c.worker_column)));
    if let Some(started) = started {
        u.set_sql(format!("{} = NULL", ident(started)));
    }
    u.key(ident(&c.id_column), row[0].clone())
        .equals(
            ident(&c.status_column),
            SqlValue::Text(c.running_status.clone()),
        )
        .unchanged(ident(&c.worker_column), row[1].clone());
    u.unchanged_columns([(started, &row[2])])
        .unchanged_each(guard);
    u
}

fn leftover_finding(c: &Config, l: &Leftover, scope: &ScopeMatcher) -> Finding {
    let (p, chunks, cmd) = (
        &l.process,
        ids_shown(&l.chunks, SHOWN_IDS),
        command_line(&l.process),
    );
    let message = format!(
        "worker pid {} (`{cmd}`) still holds chunk(s) {chunks} but its coordinator is not running",
        p.id.pid
    );
    let f = Finding::warning(
        format!("worker:{}:leftover", p.id.pid),
        format!("worker pid {}", p.id.pid),
        message,
    );
    let f = f
        .evidence("pid", p.id.pid)
        .evidence("start_time", p.id.start_time)
        .evidence("command", &cmd)
        .evidence("chunks", chunks);
    match (c.stop_workers, l.allowed) {
        (false, _) => f,
        (true, false) => f.evidence(
            "stop",
            format!(
                "not proposed: the process lies outside this deployment's scope ({})",
                scope.describe()
            ),
        ),
        (true, true) => f.stop(
            p,
            c.grace_ms,
            format!("stop leftover worker pid {} (`{cmd}`)", p.id.pid),
        ),
    }
}

/// The table as a dashboard should show it: Processing / Pending / Complete / Idle.
fn state_finding(
    c: &Config,
    counts: StatusCounts,
    orphaned: usize,
    live_running: usize,
    coordinator_absent: bool,
) -> Finding {
    let (total, complete, pending) = (
        counts.total,
        c.complete_statuses
            .iter()
            .map(|s| counts.of(s))
            .sum::<i64>(),
        counts.of(&c.pending_status),
    );
    let state = if live_running > 0 {
        "Processing"
    } else if pending > 0 || orphaned > 0 {
        "Pending"
    } else if total > 0 && complete == total {
        "Complete"
    } else {
        "Idle"
    };
    let progress = if total > 0 {
        complete as f64 * 100.0 / total as f64
    } else {
        0.0
    };
    let mut message = format!("{}: {state} — {live_running} running, {pending} pending, {complete} of {total} complete ({progress:.1}%)", c.table);
    if orphaned > 0 {
        message.push_str(&format!(
            "; {orphaned} {} chunk(s) are orphaned and count as pending",
            c.running_status
        ));
    }
    if coordinator_absent {
        message.push_str("; the coordinator is not running");
    }
    let f = Finding::info(
        format!("table:{}:state", c.table),
        format!("table {}", c.table),
        message,
    )
    .evidence("state", state)
    .evidence("total", total)
    .evidence("running", live_running);
    let f = f
        .evidence("orphaned", orphaned)
        .evidence("pending", pending)
        .evidence("complete", complete)
        .evidence("progress", format!("{progress:.1}%"));
    counts.evidence(f)
}

register_plugin!(ChunkReset);

#[cfg(test)]
mod tests;
