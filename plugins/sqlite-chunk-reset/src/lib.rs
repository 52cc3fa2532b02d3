//! The incident: a coordinator crashed at 2 a.m.; its SQLite table still says
//! chunks are `running` with an assigned worker, nothing is running, the
//! dashboard shows ACTIVE at 0 %, and a restart cannot start because the work
//! looks taken.
//!
//! A `running` chunk is orphaned when its owner is not alive (a local pid,
//! checked by start time and command line), when its owner is on another
//! host and its heartbeat is older than the timeout, or when the configured
//! coordinator is absent from the deployment's scope. The fix resets each
//! orphaned chunk to pending with a compare-and-swap, **then** stops the
//! leftover workers those rows name (identity-checked, inside the scope;
//! never every process matching a pattern). It also says why a reset would
//! fail (database or directory not writable by the service's user) and
//! reports the table as Processing / Pending / Complete / Idle.

use db_common::{claim_time, ident, integer, opt_column, read_at, regex, row_liveness, shown, time_finding, Identity, Liveness, OnHost, TimeColumn, TimeTrouble, Update, WorkerKind, WITHHELD};
use doctor_sdk::prelude::*;
use doctor_sdk::process::{command_line, ProcessTable};
use doctor_sdk::processes::Process;
use doctor_sdk::scope::{Scope, ScopeMatcher};
use doctor_sdk::time::human_ms;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

doctor_sdk::config! {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        /// database label from [databases]
        db: String,
        /// the chunk table
        table: String = r#""chunks""#,
        /// the chunk's primary key column
        id_column: String = r#""id""#,
        /// the status column
        status_column: String = r#""status""#,
        /// the column naming the owner of a running chunk
        worker_column: String = r#""assigned_worker""#,
        /// the claim-time column cleared on reset (a process younger than its claim has a reused pid); "" when the table has none
        started_at_column: Option<String> = r#""started_at""#,
        /// "pid" (an owner in owner_format) or "name" (a worker name, found only by name_pattern inside scope)
        worker_kind: WorkerKind = r#""pid""#,
        /// how owners are written: auto, pid (pid or pid:start-time), host:pid, pid@host, or a regex with named groups pid (required), host, start
        owner_format: String = r#""auto""#,
        /// an SQL expression giving the worker's pid from the row, e.g. json_extract(owner_info, '$.pid'); checked by pid, start time and claim time
        worker_pid_sql: Option<String> = r#""""#,
        /// an SQL expression giving the worker's host from the row; another host's chunk is judged by heartbeat only
        worker_host_sql: Option<String> = r#""""#,
        /// with worker_kind = "name": regex searched in command lines inside scope whose named group `name` must equal the row's worker name
        name_pattern: Option<String> = r#""""#,
        /// regex a live worker's command line must match (a pid reused by anything else counts as dead)
        worker_match: Option<String> = r#""""#,
        /// regex of the coordinator's command line, searched inside `scope` only; when none runs there, every running chunk is orphaned
        coordinator_match: Option<String> = r#""""#,
        /// where this deployment's processes live: { user, unit, cgroup, under } or "host"; none: a pattern matches nothing and only the rows' own pids name workers
        scope: Scope = "null",
        /// heartbeat column: how a chunk owned by another host is judged; "" for none
        heartbeat_column: Option<String> = r#""""#,
        #[serde(deserialize_with = "db_common::opt_duration_ms")]
        /// a remote owner's chunk is orphaned when its heartbeat is older than this (e.g. "5m")
        heartbeat_timeout: Option<u64> = r#""""#,
        /// how times are stored: auto (detected and stated), s, ms, us, ns, iso8601, julian
        time_unit: String = r#""auto""#,
        #[serde(deserialize_with = "db_common::duration_ms")]
        /// a time further ahead of this host's clock is a finding (unit wrong?), never used to judge
        clock_skew: u64 = r#""2m""#,
        /// status value of a chunk being worked on
        running_status: String = r#""running""#,
        /// status value an orphaned chunk is reset to
        pending_status: String = r#""pending""#,
        /// status values that count as complete for progress
        complete_statuses: Vec<String> = r#"["complete", "completed", "done"]"#,
        /// the user the coordinator runs as: diagnose whether it can write the database file and directory
        service_user: Option<String> = r#""""#,
        /// when the coordinator is absent, stop the workers the orphaned rows name after the reset (needs grants.signal)
        stop_workers: bool = "true",
        /// time between TERM and KILL when stopping a leftover worker
        grace_ms: u32 = "5000",
        /// orphaned chunks reported one finding each (by id); beyond this, one overflow finding resets the rest in batches
        max_chunk_findings: usize = "200",
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
        // What the config alone decides, before the database is opened.
        let pid_sql = db_common::sql_expression("worker_pid_sql", c.worker_pid_sql.as_deref())?;
        let host_sql = db_common::sql_expression("worker_host_sql", c.worker_host_sql.as_deref())?;
        let (worker_match, coordinator_match) = (regex("worker_match", c.worker_match.as_deref())?, regex("coordinator_match", c.coordinator_match.as_deref())?);
        let name_pattern = db_common::name_pattern(c.name_pattern.as_deref())?;
        let id = Identity { pid_sql, host_sql, worker_match, name_pattern, format: db_common::owner_format(&c.owner_format)?, unit: db_common::time_unit(&c.time_unit)? };
        // Then what only this host and its table can tell.
        let (started_col, hb_col, user) = (opt_column(&c.started_at_column), opt_column(&c.heartbeat_column), opt_column(&c.service_user));
        let mut wanted = vec![("id_column", c.id_column.as_str()), ("status_column", c.status_column.as_str()), ("worker_column", c.worker_column.as_str())];
        wanted.extend(started_col.map(|s| ("started_at_column", s)).into_iter().chain(hb_col.map(|h| ("heartbeat_column", h))));
        let OnHost { problems, scope, weak } = id.on_host(&c.db, &c.table, user, &c.scope, c.worker_kind, &wanted)?;
        let (table, hostname, now_ms) = (ProcessTable::read()?, host::hostname(), host::now_unix_ms() as i64);
        let mut findings: Vec<Finding> = weak.into_iter().collect();
        // The coordinator is searched inside the scope only: another deployment's would count.
        let coordinator_absent = match &coordinator_match {
            Some(_) if scope.is_unscoped() => {
                findings.push(unscoped_coordinator_finding(&c));
                false
            }
            Some(re) => table.in_scope(re, &scope).next().is_none(),
            None => false,
        };
        let (t, key, status, worker) = (ident(&c.table), ident(&c.id_column), ident(&c.status_column), ident(&c.worker_column));
        let col = |c: Option<&str>| c.map(ident).unwrap_or_else(|| "NULL".into());
        let sql = format!("SELECT {key}, {worker}, {}, {}, {} FROM {t} WHERE {status} = ?1 ORDER BY {key}", col(started_col), col(hb_col), id.select_list());
        let running = sqlite::query(&c.db, &sql, &[SqlValue::Text(c.running_status.clone())])?;
        findings.extend(db_common::unwritable_finding(&c.db, user.unwrap_or_default(), &problems));

        let finder = id.name_finder(&scope);
        let chk = id.owner_check(c.worker_kind, &table, &hostname, finder.as_ref());
        let judge = Judge { c: &c, unit: id.unit, now_ms, skew: c.clock_skew as i64, hb_col };
        let (mut live_running, mut seen, mut leftovers, mut orphans) = (0usize, BTreeSet::new(), BTreeMap::<u32, Leftover>::new(), Vec::new());
        for row in &running.rows {
            let (chunk, worker, started, heartbeat) = (&row[0], &row[1], &row[2], &row[3]);
            // A non-unique id column: one finding per id (its reset then trips max-rows).
            if !seen.insert(shown(chunk)) {
                continue;
            }
            let r = Row { c: &c, id: chunk, worker };
            let claimed = claim_time(&read_at(started, id.unit, now_ms, judge.skew)).unwrap_or_else(|trouble| {
                findings.push(r.time_finding(TimeColumn::Claimed, started_col.unwrap_or_default(), started, trouble, "a reused pid cannot be told by it"));
                None
            });
            let alive = row_liveness(&id.row(worker, &row[4], &row[5]), &chk, claimed);
            // Named by a pid (worker_pid_sql's, or an owner), not by a name?
            let by_pid = c.worker_kind == WorkerKind::Pid || id.pid_sql.is_some() && integer(&row[4]).is_some_and(|p| p > 0);
            let verdict = match (&alive, coordinator_absent) {
                (_, false) => judge.row(&r, &alive, heartbeat),
                (Liveness::Alive(procs), true) => {
                    for p in procs {
                        let allowed = stop_allowed(by_pid, &scope, &table, p);
                        leftovers.entry(p.id.pid).or_insert_with(|| Leftover { process: p.clone(), chunks: Vec::new(), allowed }).chunks.push(shown(chunk));
                    }
                    Err("the coordinator is not running; its worker is a leftover".into())
                }
                (Liveness::Dead(why), true) => Err(format!("the coordinator is not running and {why}")),
                (Liveness::Remote(h), true) => Err(format!("the coordinator is not running (the worker is on host {h})")),
                (Liveness::Unknown(why), true) => Err(format!("the coordinator is not running ({why})")),
            };
            match verdict {
                Err(why) => orphans.push(Orphan { id: chunk.clone(), worker: worker.clone(), started: started.clone(), identity: id.unchanged(&row[4], &row[5]), why }),
                Ok(extra) => {
                    live_running += 1;
                    findings.extend(extra);
                }
            }
        }
        // One finding per orphaned chunk up to the host's per-report limits; the rest in one overflow finding.
        let (single, rest) = orphans.split_at(orphans.len().min(c.max_chunk_findings));
        findings.extend(single.iter().map(|o| orphan_finding(&c, o, !problems.is_empty())));
        if !rest.is_empty() {
            findings.push(overflow_finding(&c, rest, !problems.is_empty()));
        }
        // After every reset: stops come last so that a refused or failed stop never blocks the cleanup.
        findings.extend(leftovers.values().map(|l| leftover_finding(&c, l, &scope)));
        findings.push(state_finding(&c, orphans.len(), live_running, coordinator_absent)?);
        Ok(findings)
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

/// A live worker named by an orphaned row of a dead coordinator.
struct Leftover {
    process: Process,
    chunks: Vec<String>,
    /// Named by pid (identity-checked) and inside the scope, if one is given.
    allowed: bool,
}

/// A worker may be stopped only when this deployment's row names it by pid
/// (its identity checked by liveness) and it lies inside the scope when one
/// is named; a worker found by name needs the scope to vouch for it.
fn stop_allowed(by_pid: bool, scope: &ScopeMatcher, table: &ProcessTable, p: &Process) -> bool {
    match by_pid {
        true => scope.is_unscoped() || scope.contains(p, table),
        false => !scope.is_unscoped() && scope.contains(p, table),
    }
}

/// A running chunk, for the findings about it.
struct Row<'a> {
    c: &'a Config,
    id: &'a SqlValue,
    worker: &'a SqlValue,
}

impl Row<'_> {
    fn unknown(&self, why: String) -> Finding {
        let (table, id) = (&self.c.table, shown(self.id));
        Finding::warning(format!("chunk:{table}:{id}:unknown-worker"), format!("{table} chunk {id}"), format!("chunk {id} is {} but {why}", self.c.running_status)).evidence("worker", shown(self.worker))
    }

    /// A chunk's time that cannot be used (unreadable, or in the future).
    fn time_finding(&self, which: TimeColumn, col: &str, value: &SqlValue, trouble: &TimeTrouble, consequence: &str) -> Finding {
        let (table, id) = (&self.c.table, shown(self.id));
        time_finding(&format!("chunk:{table}:{id}"), &format!("{table} chunk {id}"), which, col, value, trouble, consequence).evidence("worker", shown(self.worker))
    }
}

/// Judging a row while the coordinator is alive or not configured: Err(why) orphaned, Ok(finding?) running.
struct Judge<'a> {
    c: &'a Config,
    unit: db_common::TimeUnit,
    now_ms: i64,
    skew: i64,
    hb_col: Option<&'a str>,
}

impl Judge<'_> {
    fn row(&self, r: &Row, alive: &Liveness, heartbeat: &SqlValue) -> Result<Option<Finding>, String> {
        let stamp = self.hb_col.map(|col| (col, read_at(heartbeat, self.unit, self.now_ms, self.skew)));
        let unreadable = |col: &str, trouble: &TimeTrouble, consequence: &str| Ok(Some(r.time_finding(TimeColumn::Heartbeat, col, heartbeat, trouble, consequence)));
        match (alive, stamp) {
            (Liveness::Dead(why), _) => Err(why.clone()),
            // A live local owner needs no heartbeat, but an unreadable one is still said.
            (Liveness::Alive(_), Some((col, Err(trouble)))) => unreadable(col, &trouble, "its owner is judged by its pid, which is alive"),
            (Liveness::Alive(_), _) => Ok(None),
            (Liveness::Unknown(why), _) => Ok(Some(r.unknown(format!("its worker cannot be checked: {why}")))),
            // Another host's owner: only its heartbeat can tell, never a local pid.
            (Liveness::Remote(host), None) => {
                Ok(Some(r.unknown(format!("its owner is on host {host}; local pids say nothing about it and no heartbeat_column is configured, so it is left alone"))))
            }
            (Liveness::Remote(host), Some((col, Err(trouble)))) => unreadable(col, &trouble, &format!("the chunk is owned by host {host} and is left alone")),
            (Liveness::Remote(host), Some((col, Ok(stamp)))) => {
                let age = self.now_ms - stamp.unix_ms;
                match self.c.heartbeat_timeout {
                    Some(limit) if age > limit as i64 => Err(format!(
                        "its owner is on host {host} and its last heartbeat is {} old (timeout {}; {col} read as {})",
                        human_ms(age),
                        human_ms(limit as i64),
                        stamp.read_as
                    )),
                    Some(_) => Ok(None),
                    None => Ok(Some(r.unknown(format!("its owner is on host {host} and no heartbeat_timeout is configured to judge its heartbeat ({} old)", human_ms(age))))),
                }
            }
        }
    }
}

fn unscoped_coordinator_finding(c: &Config) -> Finding {
    Finding::warning(
        format!("table:{}:coordinator-unscoped", c.table),
        format!("table {}", c.table),
        format!(
            "coordinator_match {:?} is not searched: a command-line pattern alone matches nothing, because another deployment's coordinator would count as this one's. Name the scope (scope = {{ user, unit, cgroup, under }}) or, deliberately, scope = \"host\"",
            c.coordinator_match.as_deref().unwrap_or_default()
        ),
    )
}

/// SET status = pending, the worker and the claim time cleared.
fn reset(c: &Config) -> Update {
    let mut u = Update::default();
    u.set(&c.status_column, SqlValue::Text(c.pending_status.clone())).set_sql(format!("{} = NULL", ident(&c.worker_column)));
    if let Some(started) = opt_column(&c.started_at_column) {
        u.set_sql(format!("{} = NULL", ident(started)));
    }
    u
}

fn orphan_finding(c: &Config, o: &Orphan, withheld: bool) -> Finding {
    let (id, worker, running) = (shown(&o.id), shown(&o.worker), &c.running_status);
    let message = format!("chunk {id} is {running} for worker {worker} but {}; nothing will finish it and it blocks a restart", o.why);
    let f = Finding::critical(format!("chunk:{}:{id}:orphaned", c.table), format!("{} chunk {id}", c.table), message)
        .evidence("id", &id)
        .evidence("worker", &worker)
        .evidence("started_at", shown(&o.started))
        .evidence("reason", &o.why);
    if withheld {
        return f.evidence("reset", WITHHELD);
    }
    let mut u = reset(c);
    u.equals(ident(&c.id_column), o.id.clone()).equals(ident(&c.status_column), SqlValue::Text(running.clone())).unchanged(ident(&c.worker_column), o.worker.clone());
    for (expr, value) in &o.identity {
        u.unchanged(expr.clone(), value.clone());
    }
    let (sql, params) = u.build(&c.table);
    f.action(Action::sql_exec(&c.db, &sql, params, 1), format!("reset chunk {id} to {} (worker and start time cleared) if it is still {running} for worker {worker}", c.pending_status))
}

fn leftover_finding(c: &Config, l: &Leftover, scope: &ScopeMatcher) -> Finding {
    let (p, chunks) = (&l.process, l.chunks.join(", "));
    let cmd = command_line(p);
    let message = format!("worker pid {} (`{cmd}`) still holds chunk(s) {chunks} but its coordinator is not running", p.id.pid);
    let f = Finding::warning(format!("worker:{}:leftover", p.id.pid), format!("worker pid {}", p.id.pid), message)
        .evidence("pid", p.id.pid)
        .evidence("start_time", p.id.start_time)
        .evidence("command", &cmd)
        .evidence("chunks", chunks);
    match (c.stop_workers, l.allowed) {
        (false, _) => f,
        (true, false) => f.evidence("stop", format!("not proposed: the process lies outside this deployment's scope ({})", scope.describe())),
        (true, true) => f.stop(p, c.grace_ms, format!("stop leftover worker pid {} (`{cmd}`)", p.id.pid)),
    }
}

/// Orphans beyond `max_chunk_findings`: one finding, batched compare-and-swaps
/// per worker (`... WHERE status = 'running' AND worker IS ? AND id IN (...)`),
/// so every row still changes only if it is still running for that worker.
fn overflow_finding(c: &Config, rest: &[Orphan], withheld: bool) -> Finding {
    let first: Vec<String> = rest.iter().take(20).map(|o| shown(&o.id)).collect();
    let more = if rest.len() > first.len() { ", ..." } else { "" };
    let message = format!("{} more {} chunks are orphaned (ids {}{more})", rest.len(), c.running_status, first.join(", "));
    let mut f = Finding::critical(format!("chunks:{}:orphaned-overflow", c.table), format!("table {}", c.table), message).evidence("count", rest.len());
    if withheld {
        return f.evidence("reset", WITHHELD);
    }
    let batches = db_common::batches(rest.iter().map(|o| (&o.worker, &o.id)));
    if batches.len() > db_common::MAX_BATCHES {
        f = f.evidence("deferred", format!("{} batch(es) wait for the next run", batches.len() - db_common::MAX_BATCHES));
    }
    for (worker, ids) in batches.into_iter().take(db_common::MAX_BATCHES) {
        let (n, shown_worker) = (ids.len(), shown(&worker));
        let mut u = reset(c);
        u.equals(ident(&c.status_column), SqlValue::Text(c.running_status.clone())).unchanged(ident(&c.worker_column), worker).one_of(ident(&c.id_column), ids);
        let (sql, params) = u.build(&c.table);
        f = f.action(Action::sql_exec(&c.db, &sql, params, n as u32), format!("reset {n} chunk(s) of worker {shown_worker} to {} if still {} for it", c.pending_status, c.running_status));
    }
    f
}

/// The table as a dashboard should show it: Processing / Pending / Complete / Idle.
fn state_finding(c: &Config, orphaned: usize, live_running: usize, coordinator_absent: bool) -> Result<Finding, Error> {
    let by_status = db_common::status_counts(&c.db, &c.table, &c.status_column)?;
    let count = |s: &str| by_status.iter().filter(|(k, _)| k == s).map(|(_, n)| *n).sum::<i64>();
    let total: i64 = by_status.iter().map(|(_, n)| n).sum();
    let (complete, pending) = (c.complete_statuses.iter().map(|s| count(s)).sum::<i64>(), count(&c.pending_status));
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
    let mut message = format!("{}: {state} — {live_running} running, {pending} pending, {complete} of {total} complete ({progress:.1}%)", c.table);
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
