//! The incident: a coordinator crashed at 2 a.m.; its SQLite table still says
//! chunks are `running` with an assigned worker, nothing is running, the
//! dashboard shows ACTIVE at 0 %, and a restart cannot start because the work
//! looks taken.
//!
//! A `running` chunk is orphaned when its owner is not alive, when its owner
//! is on another host and its heartbeat is older than the timeout (both
//! judged by db-common's `claims`), or when the configured coordinator is
//! absent from the deployment's scope. The fix resets each orphaned chunk to
//! pending with a compare-and-swap, **then** stops the leftover workers those
//! rows name (never every process matching a pattern). It also says why a
//! reset would fail and reports the table as Processing / Pending / Complete / Idle.

use db_common::{
    ident, ident_or_null, integer, opt_column, regex, row_liveness, shown, Clock, Heartbeat,
    IdentityConfig, Liveness, OnHost, RowName, StatusCounts, TimeColumn, Update, WorkerKind,
    WITHHELD,
};
use doctor_sdk::prelude::*;
use doctor_sdk::process::{command_line, ProcessTable};
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
        #[serde(deserialize_with = "db_common::opt_duration_ms")]
        heartbeat_timeout: Option<u64> = r#""""#, "a remote owner's chunk is orphaned when its heartbeat is older than this (e.g. \"5m\")",
        running_status: String = r#""running""#, "status value of a chunk being worked on",
        pending_status: String = r#""pending""#, "status value an orphaned chunk is reset to",
        complete_statuses: Vec<String> = r#"["complete", "completed", "done"]"#, "status values that count as complete for progress",
        service_user: Option<String> = r#""""#, "the user the coordinator runs as: diagnose whether it can write the database file and directory",
        stop_workers: bool = "true", "when the coordinator is absent, stop the workers the orphaned rows name after the reset (needs grants.signal)",
        grace_ms: u32 = "5000", "time between TERM and KILL when stopping a leftover worker",
        max_chunk_findings: usize = "200", "orphaned chunks reported one finding each (by id); beyond this, one overflow finding resets the rest in batches",
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
        let id = c.identity.identity()?;
        let coordinator = regex("coordinator_match", c.coordinator_match.as_deref())?;
        let (started_col, hb_col, user) = (
            opt_column(&c.started_at_column),
            opt_column(&c.heartbeat_column),
            opt_column(&c.service_user),
        );
        let wanted = db_common::configured(&[
            ("id_column", Some(&c.id_column)),
            ("status_column", Some(&c.status_column)),
            ("worker_column", Some(&c.worker_column)),
            ("started_at_column", started_col),
            ("heartbeat_column", hb_col),
        ]);
        let OnHost {
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
        let (table, hostname, clock) = (
            ProcessTable::read()?,
            host::hostname(),
            Clock::now(id.unit, c.identity.clock_skew),
        );
        let mut findings: Vec<Finding> = weak.into_iter().collect();
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
        let (t, key, status) = (
            ident(&c.table),
            ident(&c.id_column),
            ident(&c.status_column),
        );
        let sql = format!(
            "SELECT {key}, {}, {}, {}, {} FROM {t} WHERE {status} = ?1 ORDER BY {key}",
            ident(&c.worker_column),
            ident_or_null(started_col),
            ident_or_null(hb_col),
            id.select_list()
        );
        let running = sqlite::query(&c.db, &sql, &[SqlValue::Text(c.running_status.clone())])?;
        findings.extend(db_common::unwritable_finding(
            &c.db,
            user.unwrap_or_default(),
            &problems,
        ));

        let finder = id.name_finder(&scope);
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
            let alive = row_liveness(&id.row(worker, &row[4], &row[5]), &chk, claimed);
            let verdict = match (alive, coordinator_absent) {
                (alive, false) => judge(
                    &c,
                    &shown(chunk),
                    &name,
                    alive,
                    clock.heartbeat(hb_col, heartbeat, c.heartbeat_timeout),
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
                    id: chunk.clone(),
                    worker: worker.clone(),
                    started: started.clone(),
                    identity: id.unchanged(&row[4], &row[5]),
                    why,
                }),
                Ok(extra) => {
                    live_running += 1;
                    findings.extend(extra);
                }
            }
        }
        // One finding per orphaned chunk up to the host's per-report limits; the rest in one overflow finding.
        let (single, rest) = orphans.split_at(orphans.len().min(c.max_chunk_findings));
        findings.extend(
            single
                .iter()
                .map(|o| orphan_finding(&c, o, !problems.is_empty())),
        );
        findings
            .extend((!rest.is_empty()).then(|| overflow_finding(&c, rest, !problems.is_empty())));
        // After every reset: stops come last so that a refused or failed stop never blocks the cleanup.
        findings.extend(leftovers.values().map(|l| leftover_finding(&c, l, &scope)));
        findings.push(state_finding(
            &c,
            orphans.len(),
            live_running,
            coordinator_absent,
        )?);
        Ok(findings)
    }
}

/// A running chunk while the coordinator runs (or none is configured): Err(why) orphaned, Ok(finding?) running.
fn judge(
    c: &Config,
    chunk: &str,
    name: &RowName,
    alive: Liveness,
    beat: Heartbeat,
    value: &SqlValue,
) -> Result<Option<Finding>, String> {
    let (hb_col, running) = (opt_column(&c.heartbeat_column), &c.running_status);
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
        (Liveness::Remote(host), Heartbeat::NotKept) => unknown(format!("its owner is on host {host}; local pids say nothing about it and no heartbeat_column is configured, so it is left alone")),
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

struct Orphan {
    id: SqlValue,
    worker: SqlValue,
    started: SqlValue,
    /// The pid/host expressions the verdict rests on and their values (compare-and-swap too).
    identity: Vec<(String, SqlValue)>,
    why: String,
}

/// A live worker named by an orphaned row of a dead coordinator; `allowed`: see `db_common::may_stop`.
struct Leftover {
    process: Process,
    chunks: Vec<String>,
    allowed: bool,
}

/// SET status = pending, the worker and the claim time cleared.
fn reset(c: &Config) -> Update {
    let mut u = Update::default();
    u.set(&c.status_column, SqlValue::Text(c.pending_status.clone()))
        .set_sql(format!("{} = NULL", ident(&c.worker_column)));
    if let Some(started) = opt_column(&c.started_at_column) {
        u.set_sql(format!("{} = NULL", ident(started)));
    }
    u
}

fn orphan_finding(c: &Config, o: &Orphan, withheld: bool) -> Finding {
    let (id, worker, running) = (shown(&o.id), shown(&o.worker), &c.running_status);
    let message = format!("chunk {id} is {running} for worker {worker} but {}; nothing will finish it and it blocks a restart", o.why);
    let f = Finding::critical(
        format!("chunk:{}:{id}:orphaned", c.table),
        format!("{} chunk {id}", c.table),
        message,
    );
    let f = f
        .evidence("id", &id)
        .evidence("worker", &worker)
        .evidence("started_at", shown(&o.started))
        .evidence("reason", &o.why);
    if withheld {
        return f.evidence("reset", WITHHELD);
    }
    let mut u = reset(c);
    u.equals(ident(&c.id_column), o.id.clone())
        .equals(ident(&c.status_column), SqlValue::Text(running.clone()))
        .unchanged(ident(&c.worker_column), o.worker.clone());
    u.unchanged_each(o.identity.clone());
    let (sql, params) = u.build(&c.table);
    f.action(Action::sql_exec(&c.db, &sql, params, 1), format!("reset chunk {id} to {} (worker and start time cleared) if it is still {running} for worker {worker}", c.pending_status))
}

/// Orphans beyond `max_chunk_findings`: one finding, batched compare-and-swaps per worker
/// (`... WHERE status = 'running' AND worker IS ? AND id IN (...)`), each row still changed only if still running for that worker.
fn overflow_finding(c: &Config, rest: &[Orphan], withheld: bool) -> Finding {
    let first: Vec<String> = rest.iter().take(20).map(|o| shown(&o.id)).collect();
    let more = if rest.len() > first.len() {
        ", ..."
    } else {
        ""
    };
    let message = format!(
        "{} more {} chunks are orphaned (ids {}{more})",
        rest.len(),
        c.running_status,
        first.join(", ")
    );
    let f = Finding::critical(
        format!("chunks:{}:orphaned-overflow", c.table),
        format!("table {}", c.table),
        message,
    )
    .evidence("count", rest.len());
    if withheld {
        return f.evidence("reset", WITHHELD);
    }
    db_common::batched_writes(
        f,
        &c.db,
        &c.table,
        rest.iter().map(|o| (&o.worker, &o.id)),
        |worker, ids| {
            let (n, shown_worker, mut u) = (ids.len(), shown(&worker), reset(c));
            u.equals(
                ident(&c.status_column),
                SqlValue::Text(c.running_status.clone()),
            )
            .unchanged(ident(&c.worker_column), worker)
            .one_of(ident(&c.id_column), ids);
            (
                u,
                format!(
                    "reset {n} chunk(s) of worker {shown_worker} to {} if still {} for it",
                    c.pending_status, c.running_status
                ),
            )
        },
    )
}

fn leftover_finding(c: &Config, l: &Leftover, scope: &ScopeMatcher) -> Finding {
    let (p, chunks, cmd) = (&l.process, l.chunks.join(", "), command_line(&l.process));
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
    orphaned: usize,
    live_running: usize,
    coordinator_absent: bool,
) -> Result<Finding, Error> {
    let counts = StatusCounts::read(&c.db, &c.table, &c.status_column)?;
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
    Ok(counts.evidence(f))
}

register_plugin!(ChunkReset);
