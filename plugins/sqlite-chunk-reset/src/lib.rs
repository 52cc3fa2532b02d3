//! The incident: a coordinator crashed at 2 a.m.; its SQLite table still says
//! chunks are `running` with an assigned worker, nothing is running, the
//! dashboard shows ACTIVE at 0 %, and a restart cannot start because the work
//! looks taken.
//!
//! A `running` chunk is orphaned when its worker is not alive (a pid,
//! optionally `pid:start-time`, or a worker name searched in command lines)
//! or when the configured coordinator process is absent. The fix resets each
//! orphaned chunk to pending with a compare-and-swap, **then** stops leftover
//! workers, so a refused or failed kill never blocks the cleanup. It also
//! says why a reset would fail (the file or its directory not writable by the
//! service's user) and reports the table's state as Processing / Pending /
//! Complete / Idle.

mod common;

use common::{ident, liveness, opt_column, regex, require_columns, shown, Liveness, WorkerKind};
use doctor_sdk::prelude::*;
use doctor_sdk::processes::Process;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    db: String,
    table: String,
    id_column: String,
    status_column: String,
    worker_column: String,
    started_at_column: Option<String>,
    worker_kind: WorkerKind,
    worker_match: Option<String>,
    coordinator_match: Option<String>,
    running_status: String,
    pending_status: String,
    complete_statuses: Vec<String>,
    service_user: Option<String>,
    stop_workers: bool,
    grace_ms: u32,
    max_chunk_findings: usize,
}

const WITHHELD: &str = "withheld until the database is writable by the service user (see the unwritable finding)";
/// Ids per batched compare-and-swap in the overflow finding.
const BATCH: usize = 500;
/// The host takes at most 64 actions per finding.
const MAX_BATCHES: usize = 64;

struct Orphan {
    id: SqlValue,
    worker: SqlValue,
    started: SqlValue,
    why: String,
}

struct ChunkReset;

impl Plugin for ChunkReset {
    type Config = Config;

    fn info() -> Info {
        Info::new("sqlite-chunk-reset", "Resets orphaned running chunks to pending (database first), then stops leftover workers")
            .capability(caps::SQLITE)
            .capability(caps::SQLITE_WRITE)
            .capability(caps::PROCESSES)
            .capability(caps::SIGNAL)
            .config_key("db", None, "database label from [databases]")
            .config_key("table", Some("\"chunks\""), "the chunk table")
            .config_key("id_column", Some("\"id\""), "the chunk's primary key column")
            .config_key("status_column", Some("\"status\""), "the status column")
            .config_key("worker_column", Some("\"assigned_worker\""), "the column naming the worker that holds a running chunk")
            .config_key("started_at_column", Some("\"started_at\""), "the start-time column cleared on reset; \"\" when the table has none")
            .config_key("worker_kind", Some("\"pid\""), "\"pid\" (a pid or pid:start-time) or \"name\" (a word searched in command lines)")
            .config_key("worker_match", Some("\"\""), "regex a live worker's command line must match (a pid reused by anything else counts as dead); also finds leftover workers")
            .config_key("coordinator_match", Some("\"\""), "regex of the coordinator's command line; when none runs, every running chunk is orphaned")
            .config_key("running_status", Some("\"running\""), "status value of a chunk being worked on")
            .config_key("pending_status", Some("\"pending\""), "status value an orphaned chunk is reset to")
            .config_key("complete_statuses", Some("[\"complete\", \"completed\", \"done\"]"), "status values that count as complete for progress")
            .config_key("service_user", Some("\"\""), "the user the coordinator runs as: diagnose whether it can write the database file and directory")
            .config_key("stop_workers", Some("true"), "when the coordinator is absent, stop leftover workers after the reset (needs grants.signal)")
            .config_key("grace_ms", Some("5000"), "time between TERM and KILL when stopping a leftover worker")
            .config_key("max_chunk_findings", Some("200"), "orphaned chunks reported one finding each (by id); beyond this, one overflow finding resets the rest in batches")
    }

    fn check(c: Config) -> Result<Vec<Finding>, Error> {
        let user = opt_column(&c.service_user);
        let problems = common::write_problems(&c.db, user)?;
        let started_col = opt_column(&c.started_at_column);
        let mut wanted = vec![("id_column", c.id_column.as_str()), ("status_column", c.status_column.as_str()), ("worker_column", c.worker_column.as_str())];
        if let Some(s) = started_col {
            wanted.push(("started_at_column", s));
        }
        require_columns(&c.db, &c.table, &wanted)?;
        let worker_match = regex("worker_match", c.worker_match.as_deref())?;
        let coordinator_match = regex("coordinator_match", c.coordinator_match.as_deref())?;
        let table = processes::all()?;

        let coordinator_absent = coordinator_match.as_ref().is_some_and(|r| {
            !table.iter().any(|p| p.state != "Z" && !p.kernel_thread && r.is_match(&p.argv.join(" ")))
        });

        let t = ident(&c.table);
        let (id, status, worker) = (ident(&c.id_column), ident(&c.status_column), ident(&c.worker_column));
        let started_sel = started_col.map(ident).unwrap_or_else(|| "NULL".into());
        let running = sqlite::query(
            &c.db,
            &format!("SELECT {id}, {worker}, {started_sel} FROM {t} WHERE {status} = ?1 ORDER BY {id}"),
            &[SqlValue::Text(c.running_status.clone())],
        )?;

        let mut findings = Vec::new();
        if let Some(f) = common::unwritable_finding(&c.db, user.unwrap_or_default(), &problems) {
            findings.push(f);
        }
        let withheld = !problems.is_empty();
        let set_started = started_col.map(|s| format!(", {} = NULL", ident(s))).unwrap_or_default();
        let reset_sql = format!(
            "UPDATE {t} SET {status} = ?1, {worker} = NULL{set_started} WHERE {id} = ?2 AND {status} = ?3 AND {worker} IS ?4"
        );

        let mut orphaned = 0usize;
        let mut live_running = 0usize;
        let mut leftovers: BTreeMap<u32, Process> = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut orphans: Vec<Orphan> = Vec::new();
        for row in &running.rows {
            let (chunk_id, worker_value, started) = (&row[0], &row[1], &row[2]);
            // A non-unique id column: one finding per id (its reset then trips max-rows).
            if !seen.insert(shown(chunk_id)) {
                continue;
            }
            let alive = liveness(worker_value, c.worker_kind, &table, worker_match.as_ref());
            let why = match (&alive, coordinator_absent) {
                (Liveness::Dead(why), _) => why.clone(),
                (Liveness::Alive(procs), true) => {
                    for p in procs {
                        leftovers.insert(p.id.pid, p.clone());
                    }
                    "the coordinator is not running; its worker is a leftover".to_string()
                }
                (Liveness::Unknown(why), true) => format!("the coordinator is not running ({why})"),
                (Liveness::Alive(_), false) => {
                    live_running += 1;
                    continue;
                }
                (Liveness::Unknown(why), false) => {
                    live_running += 1;
                    findings.push(
                        Finding::warning(
                            format!("chunk:{}:{}:unknown-worker", c.table, shown(chunk_id)),
                            format!("{} chunk {}", c.table, shown(chunk_id)),
                            format!("chunk {} is {} but its worker cannot be checked: {why}", shown(chunk_id), c.running_status),
                        )
                        .evidence("worker", shown(worker_value)),
                    );
                    continue;
                }
            };
            orphaned += 1;
            orphans.push(Orphan { id: chunk_id.clone(), worker: worker_value.clone(), started: started.clone(), why });
        }

        // One finding per orphaned chunk, up to the host's per-report limits;
        // the rest go into one overflow finding with batched compare-and-swaps.
        let (single, rest) = orphans.split_at(orphans.len().min(c.max_chunk_findings));
        for o in single {
            let mut f = Finding::critical(
                format!("chunk:{}:{}:orphaned", c.table, shown(&o.id)),
                format!("{} chunk {}", c.table, shown(&o.id)),
                format!(
                    "chunk {} is {} for worker {} but {}; nothing will finish it and it blocks a restart",
                    shown(&o.id),
                    c.running_status,
                    shown(&o.worker),
                    o.why
                ),
            )
            .evidence("id", shown(&o.id))
            .evidence("worker", shown(&o.worker))
            .evidence("started_at", shown(&o.started))
            .evidence("reason", &o.why);
            if withheld {
                f = f.evidence("reset", WITHHELD);
            } else {
                f = f.action(
                    Action::sql_exec(
                        &c.db,
                        &reset_sql,
                        vec![SqlValue::Text(c.pending_status.clone()), o.id.clone(), SqlValue::Text(c.running_status.clone()), o.worker.clone()],
                        1,
                    ),
                    format!(
                        "reset chunk {} to {} (worker and start time cleared) if it is still {} for worker {}",
                        shown(&o.id),
                        c.pending_status,
                        c.running_status,
                        shown(&o.worker)
                    ),
                );
            }
            findings.push(f);
        }
        if !rest.is_empty() {
            findings.push(overflow_finding(&c, rest, withheld, &set_started));
        }

        // A dead coordinator's workers are leftovers whether or not they hold a chunk.
        if coordinator_absent {
            if let Some(r) = &worker_match {
                for p in table.iter().filter(|p| p.state != "Z" && !p.kernel_thread && r.is_match(&p.argv.join(" "))) {
                    leftovers.entry(p.id.pid).or_insert_with(|| p.clone());
                }
            }
        }
        // After every reset: stops come last so that a refused or failed stop never blocks the cleanup.
        for p in leftovers.values() {
            let mut f = Finding::warning(
                format!("worker:{}:leftover", p.id.pid),
                format!("worker pid {}", p.id.pid),
                format!("worker pid {} (`{}`) is still running but its coordinator is not", p.id.pid, p.argv.join(" ")),
            )
            .evidence("pid", p.id.pid)
            .evidence("start_time", p.id.start_time)
            .evidence("command", p.argv.join(" "));
            if c.stop_workers {
                f = f.action(
                    Action::stop_process(p.id, c.grace_ms),
                    format!("stop leftover worker pid {} ({}): TERM, {} ms grace, KILL", p.id.pid, p.name, c.grace_ms),
                );
            }
            findings.push(f);
        }

        findings.push(state_finding(&c, orphaned, live_running, coordinator_absent)?);
        Ok(findings)
    }
}

/// Orphans beyond `max_chunk_findings`: one finding, batched compare-and-swaps
/// per worker (`... WHERE status = 'running' AND worker IS ? AND id IN (...)`),
/// so every row still changes only if it is still running for that worker.
fn overflow_finding(c: &Config, rest: &[Orphan], withheld: bool, set_started: &str) -> Finding {
    let first: Vec<String> = rest.iter().take(20).map(|o| shown(&o.id)).collect();
    let mut f = Finding::critical(
        format!("chunks:{}:orphaned-overflow", c.table),
        format!("table {}", c.table),
        format!(
            "{} more {} chunks are orphaned (ids {}{})",
            rest.len(),
            c.running_status,
            first.join(", "),
            if rest.len() > first.len() { ", ..." } else { "" }
        ),
    )
    .evidence("count", rest.len());
    if withheld {
        return f.evidence("reset", WITHHELD);
    }
    let mut by_worker: Vec<(SqlValue, Vec<SqlValue>)> = Vec::new();
    let mut open: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for o in rest {
        let key = format!("{:?}", o.worker);
        match open.get(&key).copied().filter(|i| by_worker[*i].1.len() < BATCH) {
            Some(i) => by_worker[i].1.push(o.id.clone()),
            None => {
                open.insert(key, by_worker.len());
                by_worker.push((o.worker.clone(), vec![o.id.clone()]));
            }
        }
    }
    if by_worker.len() > MAX_BATCHES {
        f = f.evidence("deferred", format!("{} batch(es) wait for the next run", by_worker.len() - MAX_BATCHES));
    }
    let (t, id, status, worker) = (ident(&c.table), ident(&c.id_column), ident(&c.status_column), ident(&c.worker_column));
    for (w, ids) in by_worker.into_iter().take(MAX_BATCHES) {
        let marks: Vec<String> = (4..4 + ids.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "UPDATE {t} SET {status} = ?1, {worker} = NULL{set_started} WHERE {status} = ?2 AND {worker} IS ?3 AND {id} IN ({})",
            marks.join(", ")
        );
        let n = ids.len();
        let shown_worker = shown(&w);
        let mut params = vec![SqlValue::Text(c.pending_status.clone()), SqlValue::Text(c.running_status.clone()), w];
        params.extend(ids);
        f = f.action(
            Action::sql_exec(&c.db, &sql, params, n as u32),
            format!("reset {n} chunk(s) of worker {shown_worker} to {} if still {} for it", c.pending_status, c.running_status),
        );
    }
    f
}

/// The table as a dashboard should show it: Processing / Pending / Complete / Idle.
fn state_finding(c: &Config, orphaned: usize, live_running: usize, coordinator_absent: bool) -> Result<Finding, Error> {
    let counts = sqlite::query(
        &c.db,
        &format!("SELECT {s}, count(*) FROM {t} GROUP BY {s} ORDER BY {s}", s = ident(&c.status_column), t = ident(&c.table)),
        &[],
    )?;
    let mut by_status: Vec<(String, i64)> = Vec::new();
    for row in &counts.rows {
        by_status.push((shown(&row[0]), common::integer(&row[1]).unwrap_or(0)));
    }
    let count = |s: &str| by_status.iter().filter(|(k, _)| k == s).map(|(_, n)| *n).sum::<i64>();
    let total: i64 = by_status.iter().map(|(_, n)| n).sum();
    let complete: i64 = c.complete_statuses.iter().map(|s| count(s)).sum();
    let pending = count(&c.pending_status);
    let state = if live_running > 0 {
        "Processing"
    } else if pending > 0 || orphaned > 0 {
        "Pending"
    } else if total > 0 && complete == total {
        "Complete"
    } else {
        "Idle"
    };
    let progress = if total > 0 { complete as f64 * 100.0 / total as f64 } else { 0.0 };
    let mut message = format!(
        "{}: {state} — {live_running} running, {pending} pending, {complete} of {total} complete ({progress:.1}%)",
        c.table
    );
    if orphaned > 0 {
        message.push_str(&format!("; {orphaned} {} chunk(s) are orphaned and count as pending", c.running_status));
    }
    if coordinator_absent {
        message.push_str("; the coordinator is not running");
    }
    let mut f = Finding::info(format!("table:{}:state", c.table), format!("table {}", c.table), message)
        .evidence("state", state)
        .evidence("total", total)
        .evidence("running", live_running)
        .evidence("orphaned", orphaned)
        .evidence("pending", pending)
        .evidence("complete", complete)
        .evidence("progress", format!("{progress:.1}%"));
    for (status, n) in &by_status {
        f = f.evidence(&format!("status {status}"), n);
    }
    Ok(f)
}

register_plugin!(ChunkReset);
