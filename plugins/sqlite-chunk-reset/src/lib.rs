//! The incident: a coordinator crashed at 2 a.m.; its SQLite table still says
//! chunks are `running` with an assigned worker, nothing is running, the
//! dashboard shows ACTIVE at 0 %, and a restart cannot start because the work
//! looks taken.
//!
//! A `running` chunk is orphaned when its owner is not alive (a local pid,
//! checked by start time and command line), when its owner is on another
//! host and its heartbeat is older than the timeout (a remote pid means
//! nothing here), or when the configured coordinator is absent from the
//! deployment's scope. While the coordinator is alive (or none is
//! configured), a chunk whose owner is alive is never reset. The fix resets
//! each orphaned chunk to pending with a compare-and-swap, **then** stops
//! leftover workers: only the workers this deployment's orphaned rows name,
//! identity-checked and inside the scope — never every process that matches
//! a pattern. It also says why a reset would fail (the file or its directory
//! not writable by the service's user) and reports the table's state as
//! Processing / Pending / Complete / Idle.

use db_common::{ident, opt_column, read_at, regex, require_columns, row_liveness, shown, time_finding, Liveness, NameFinder, OwnerCheck, RowIdentity, TimeColumn, TimeTrouble, WorkerKind};
use doctor_sdk::prelude::*;
use doctor_sdk::processes::Process;
use doctor_sdk::scope::{command_line, ProcessTable, Scope, ScopeMatcher};
use doctor_sdk::time::human_ms;
use regex_lite::Regex;
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
    owner_format: String,
    worker_pid_sql: Option<String>,
    worker_host_sql: Option<String>,
    name_pattern: Option<String>,
    worker_match: Option<String>,
    coordinator_match: Option<String>,
    scope: Scope,
    heartbeat_column: Option<String>,
    #[serde(deserialize_with = "db_common::opt_duration_ms")]
    heartbeat_timeout: Option<u64>,
    time_unit: String,
    #[serde(deserialize_with = "db_common::duration_ms")]
    clock_skew: u64,
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
    /// The values of worker_pid_sql / worker_host_sql the verdict rests on (compare-and-swap too).
    identity: Vec<SqlValue>,
    why: String,
}

/// Is the coordinator there, as far as this deployment's scope shows?
enum Coordinator {
    /// No `coordinator_match`.
    NotConfigured,
    /// A `coordinator_match` but no scope to search it in: treated as not
    /// configured, because another deployment's coordinator would count.
    Unscoped,
    Alive,
    Absent,
}

fn coordinator(pattern: Option<&Regex>, scope: &ScopeMatcher, table: &ProcessTable) -> Coordinator {
    match pattern {
        None => Coordinator::NotConfigured,
        Some(_) if scope.is_unscoped() => Coordinator::Unscoped,
        Some(re) if table.in_scope(re, scope).next().is_some() => Coordinator::Alive,
        Some(_) => Coordinator::Absent,
    }
}

struct ChunkReset;

impl Plugin for ChunkReset {
    type Config = Config;

    fn info() -> Info {
        Info::new("sqlite-chunk-reset", "Resets orphaned running chunks to pending (database first), then stops the leftover workers those rows name")
            .capability(caps::SQLITE)
            .capability(caps::SQLITE_WRITE)
            .capability(caps::PROCESSES)
            .capability(caps::SIGNAL)
            .config_key("db", None, "database label from [databases]")
            .config_key("table", Some("\"chunks\""), "the chunk table")
            .config_key("id_column", Some("\"id\""), "the chunk's primary key column")
            .config_key("status_column", Some("\"status\""), "the status column")
            .config_key("worker_column", Some("\"assigned_worker\""), "the column naming the owner of a running chunk")
            .config_key("started_at_column", Some("\"started_at\""), "the claim-time column cleared on reset (a process younger than its claim has a reused pid); \"\" when the table has none")
            .config_key("worker_kind", Some("\"pid\""), "\"pid\" (an owner in owner_format) or \"name\" (a worker name, found only by name_pattern inside scope)")
            .config_key("owner_format", Some("\"auto\""), "how owners are written: auto, pid (pid or pid:start-time), host:pid, pid@host, or a regex with named groups pid (required), host, start")
            .config_key("worker_pid_sql", Some("\"\""), "an SQL expression giving the worker's pid from the row, e.g. json_extract(owner_info, '$.pid'); checked by pid, start time and claim time")
            .config_key("worker_host_sql", Some("\"\""), "an SQL expression giving the worker's host from the row; another host's chunk is judged by heartbeat only")
            .config_key("name_pattern", Some("\"\""), "with worker_kind = \"name\": regex searched in command lines inside scope whose named group `name` must equal the row's worker name")
            .config_key("worker_match", Some("\"\""), "regex a live worker's command line must match (a pid reused by anything else counts as dead)")
            .config_key("coordinator_match", Some("\"\""), "regex of the coordinator's command line, searched inside `scope` only; when none runs there, every running chunk is orphaned")
            .config_key("scope", Some("null"), "where this deployment's processes live: { user, unit, cgroup, under } or \"host\"; none: a pattern matches nothing and only the rows' own pids name workers")
            .config_key("heartbeat_column", Some("\"\""), "heartbeat column: how a chunk owned by another host is judged; \"\" for none")
            .config_key("heartbeat_timeout", Some("\"\""), "a remote owner's chunk is orphaned when its heartbeat is older than this (e.g. \"5m\")")
            .config_key("time_unit", Some("\"auto\""), "how times are stored: auto (detected and stated), s, ms, us, ns, iso8601, julian")
            .config_key("clock_skew", Some("\"2m\""), "a time further ahead of this host's clock is a finding (unit wrong?), never used to judge")
            .config_key("running_status", Some("\"running\""), "status value of a chunk being worked on")
            .config_key("pending_status", Some("\"pending\""), "status value an orphaned chunk is reset to")
            .config_key("complete_statuses", Some("[\"complete\", \"completed\", \"done\"]"), "status values that count as complete for progress")
            .config_key("service_user", Some("\"\""), "the user the coordinator runs as: diagnose whether it can write the database file and directory")
            .config_key("stop_workers", Some("true"), "when the coordinator is absent, stop the workers the orphaned rows name after the reset (needs grants.signal)")
            .config_key("grace_ms", Some("5000"), "time between TERM and KILL when stopping a leftover worker")
            .config_key("max_chunk_findings", Some("200"), "orphaned chunks reported one finding each (by id); beyond this, one overflow finding resets the rest in batches")
    }

    fn check(c: Config) -> Result<Vec<Finding>, Error> {
        // What the config alone decides, before the database is opened.
        let pid_sql = db_common::sql_expression("worker_pid_sql", c.worker_pid_sql.as_deref())?;
        let host_sql = db_common::sql_expression("worker_host_sql", c.worker_host_sql.as_deref())?;
        let worker_match = regex("worker_match", c.worker_match.as_deref())?;
        let coordinator_match = regex("coordinator_match", c.coordinator_match.as_deref())?;
        let name_pattern = db_common::name_pattern(c.name_pattern.as_deref())?;
        let format = db_common::owner_format(&c.owner_format)?;
        let unit = db_common::time_unit(&c.time_unit)?;

        // Then what only this host and its table can tell (a missing
        // database is the run's error, not the policy's: validate passes it).
        let user = opt_column(&c.service_user);
        let problems = db_common::write_problems(&c.db, user)?;
        // A scope names users, which only the host the policy runs on knows.
        let scope = c.scope.compile("config: scope")?;
        let weak = match (c.worker_kind, &pid_sql) {
            (WorkerKind::Name, None) => Some(db_common::name_only(&c.table, name_pattern.as_ref().map(|p| p.as_str()), scope.is_unscoped())?),
            _ => None,
        };
        let finder = name_pattern.as_ref().map(|pattern| NameFinder { pattern, scope: &scope });
        let started_col = opt_column(&c.started_at_column);
        let hb_col = opt_column(&c.heartbeat_column);
        let mut wanted = vec![("id_column", c.id_column.as_str()), ("status_column", c.status_column.as_str()), ("worker_column", c.worker_column.as_str())];
        if let Some(s) = started_col {
            wanted.push(("started_at_column", s));
        }
        if let Some(h) = hb_col {
            wanted.push(("heartbeat_column", h));
        }
        require_columns(&c.db, &c.table, &wanted)?;
        for (key, expr) in [("worker_pid_sql", &pid_sql), ("worker_host_sql", &host_sql)] {
            if let Some(expr) = expr {
                db_common::probe_expression(&c.db, &c.table, key, expr)?;
            }
        }
        let table = ProcessTable::read()?;
        let hostname = host::hostname();
        let now_ms = host::now_unix_ms() as i64;

        let mut findings: Vec<Finding> = weak.into_iter().collect();
        let coordinator = coordinator(coordinator_match.as_ref(), &scope, &table);
        if let Coordinator::Unscoped = coordinator {
            findings.push(unscoped_coordinator_finding(&c));
        }
        let coordinator_absent = matches!(coordinator, Coordinator::Absent);

        let t = ident(&c.table);
        let (id, status, worker) = (ident(&c.id_column), ident(&c.status_column), ident(&c.worker_column));
        let started_sel = started_col.map(ident).unwrap_or_else(|| "NULL".into());
        let hb_sel = hb_col.map(ident).unwrap_or_else(|| "NULL".into());
        let expr = |e: &Option<String>| e.as_ref().map(|e| format!("({e})")).unwrap_or_else(|| "NULL".into());
        let (pid_sel, host_sel) = (expr(&pid_sql), expr(&host_sql));
        let running = sqlite::query(
            &c.db,
            &format!("SELECT {id}, {worker}, {started_sel}, {hb_sel}, {pid_sel}, {host_sel} FROM {t} WHERE {status} = ?1 ORDER BY {id}"),
            &[SqlValue::Text(c.running_status.clone())],
        )?;

        if let Some(f) = db_common::unwritable_finding(&c.db, user.unwrap_or_default(), &problems) {
            findings.push(f);
        }
        let withheld = !problems.is_empty();
        let set_started = started_col.map(|s| format!(", {} = NULL", ident(s))).unwrap_or_default();
        // The identity the verdict rests on is part of the compare-and-swap: a
        // new worker's pid in the row means hands off.
        let identity_exprs: Vec<&String> = [&pid_sql, &host_sql].into_iter().flatten().collect();
        let identity_cas: String = identity_exprs.iter().enumerate().map(|(i, e)| format!(" AND ({e}) IS ?{}", i + 5)).collect();
        let reset_sql = format!(
            "UPDATE {t} SET {status} = ?1, {worker} = NULL{set_started} WHERE {id} = ?2 AND {status} = ?3 AND {worker} IS ?4{identity_cas}"
        );

        let chk = OwnerCheck {
            kind: c.worker_kind,
            format: &format,
            table: &table,
            worker_match: worker_match.as_ref(),
            hostname: &hostname,
            names: finder.as_ref(),
        };
        let skew = c.clock_skew as i64;
        let judge = Judge { c: &c, unit, now_ms, skew, hb_col };
        let mut live_running = 0usize;
        let mut leftovers: BTreeMap<u32, Leftover> = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut orphans: Vec<Orphan> = Vec::new();
        for row in &running.rows {
            let (chunk_id, worker_value, started, heartbeat) = (&row[0], &row[1], &row[2], &row[3]);
            // A non-unique id column: one finding per id (its reset then trips max-rows).
            if !seen.insert(shown(chunk_id)) {
                continue;
            }
            // A claim time proves a pid reused only when its zone is certain;
            // one in the future proves nothing and is said.
            let claimed = match read_at(started, unit, now_ms, skew) {
                Ok(s) => s.zoned.then_some(s.unix_ms),
                // An unreadable claim time (none, or a counter rather than a
                // time) only withdraws a proof of pid reuse: not a finding.
                Err(TimeTrouble::Unreadable(_)) => None,
                Err(trouble) => {
                    findings.push(chunk_time_finding(&c, chunk_id, worker_value, TimeColumn::Claimed, started_col.unwrap_or_default(), started, &trouble, "a reused pid cannot be told by it"));
                    None
                }
            };
            let identity = RowIdentity { worker: worker_value, pid: pid_sql.as_ref().map(|_| &row[4]), host: host_sql.as_ref().map(|_| &row[5]) };
            let alive = row_liveness(&identity, &chk, claimed);
            // Named by a pid (worker_pid_sql's, or an owner), not by a name?
            let by_pid = c.worker_kind == WorkerKind::Pid || pid_sql.is_some() && db_common::integer(&row[4]).is_some_and(|p| p > 0);
            let verdict = if coordinator_absent {
                if let Liveness::Alive(procs) = &alive {
                    for p in procs {
                        let l = leftovers.entry(p.id.pid).or_insert_with(|| Leftover {
                            process: p.clone(),
                            chunks: Vec::new(),
                            allowed: stop_allowed(by_pid, &scope, &table, p),
                        });
                        l.chunks.push(shown(chunk_id));
                    }
                }
                Verdict::Orphaned(coordinator_reason(&alive))
            } else {
                judge.row(&alive, heartbeat)
            };
            match verdict {
                Verdict::Orphaned(why) => {
                    let identity = [pid_sql.as_ref().map(|_| row[4].clone()), host_sql.as_ref().map(|_| row[5].clone())].into_iter().flatten().collect();
                    orphans.push(Orphan { id: chunk_id.clone(), worker: worker_value.clone(), started: started.clone(), identity, why })
                }
                Verdict::Live(extra) => {
                    live_running += 1;
                    if let Some(f) = extra {
                        findings.push(f(&c, chunk_id, worker_value));
                    }
                }
            }
        }
        let orphaned = orphans.len();

        // One finding per orphaned chunk, up to the host's per-report limits;
        // the rest go into one overflow finding with batched compare-and-swaps.
        let (single, rest) = orphans.split_at(orphans.len().min(c.max_chunk_findings));
        for o in single {
            findings.push(orphan_finding(&c, o, withheld, &reset_sql));
        }
        if !rest.is_empty() {
            findings.push(overflow_finding(&c, rest, withheld, &set_started));
        }
        // After every reset: stops come last so that a refused or failed stop never blocks the cleanup.
        for l in leftovers.values() {
            findings.push(leftover_finding(&c, l, &scope));
        }
        findings.push(state_finding(&c, orphaned, live_running, coordinator_absent)?);
        Ok(findings)
    }
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

fn coordinator_reason(alive: &Liveness) -> String {
    match alive {
        Liveness::Alive(_) => "the coordinator is not running; its worker is a leftover".into(),
        Liveness::Dead(why) => format!("the coordinator is not running and {why}"),
        Liveness::Remote(h) => format!("the coordinator is not running (the worker is on host {h})"),
        Liveness::Unknown(why) => format!("the coordinator is not running ({why})"),
    }
}

type Extra = Box<dyn Fn(&Config, &SqlValue, &SqlValue) -> Finding>;

enum Verdict {
    Orphaned(String),
    /// Counted as running; maybe with a finding of its own (unknown worker, unreadable heartbeat).
    Live(Option<Extra>),
}

/// Judging a row while the coordinator is alive or not configured.
struct Judge<'a> {
    c: &'a Config,
    unit: db_common::TimeUnit,
    now_ms: i64,
    skew: i64,
    hb_col: Option<&'a str>,
}

impl Judge<'_> {
    fn row(&self, alive: &Liveness, heartbeat: &SqlValue) -> Verdict {
        match alive {
            Liveness::Dead(why) => Verdict::Orphaned(why.clone()),
            Liveness::Alive(_) => self.heartbeat_readable(heartbeat, "its owner is judged by its pid, which is alive"),
            Liveness::Unknown(why) => Verdict::Live(Some(unknown(format!("its worker cannot be checked: {why}")))),
            Liveness::Remote(h) => self.remote(h, heartbeat),
        }
    }

    /// A live local owner needs no heartbeat, but an unreadable one is still said.
    fn heartbeat_readable(&self, heartbeat: &SqlValue, consequence: &str) -> Verdict {
        let Some(col) = self.hb_col else { return Verdict::Live(None) };
        match read_at(heartbeat, self.unit, self.now_ms, self.skew) {
            Ok(_) => Verdict::Live(None),
            Err(trouble) => Verdict::Live(Some(unreadable(col, heartbeat, trouble, consequence.to_string()))),
        }
    }

    /// Another host's owner: only its heartbeat can tell, never a local pid.
    fn remote(&self, host: &str, heartbeat: &SqlValue) -> Verdict {
        let Some(col) = self.hb_col else {
            return Verdict::Live(Some(unknown(format!(
                "its owner is on host {host}; local pids say nothing about it and no heartbeat_column is configured, so it is left alone"
            ))));
        };
        let stamp = match read_at(heartbeat, self.unit, self.now_ms, self.skew) {
            Ok(s) => s,
            Err(trouble) => return Verdict::Live(Some(unreadable(col, heartbeat, trouble, format!("the chunk is owned by host {host} and is left alone")))),
        };
        let age = self.now_ms - stamp.unix_ms;
        match self.c.heartbeat_timeout {
            Some(limit) if age > limit as i64 => Verdict::Orphaned(format!(
                "its owner is on host {host} and its last heartbeat is {} old (timeout {}; {col} read as {})",
                human_ms(age),
                human_ms(limit as i64),
                stamp.read_as
            )),
            Some(_) => Verdict::Live(None),
            None => Verdict::Live(Some(unknown(format!(
                "its owner is on host {host} and no heartbeat_timeout is configured to judge its heartbeat ({} old)",
                human_ms(age)
            )))),
        }
    }
}

fn unknown(why: String) -> Extra {
    Box::new(move |c: &Config, id: &SqlValue, worker: &SqlValue| {
        Finding::warning(
            format!("chunk:{}:{}:unknown-worker", c.table, shown(id)),
            format!("{} chunk {}", c.table, shown(id)),
            format!("chunk {} is {} but {why}", shown(id), c.running_status),
        )
        .evidence("worker", shown(worker))
    })
}

fn unreadable(col: &str, value: &SqlValue, trouble: TimeTrouble, consequence: String) -> Extra {
    let (col, value) = (col.to_string(), value.clone());
    Box::new(move |c: &Config, id: &SqlValue, worker: &SqlValue| {
        chunk_time_finding(c, id, worker, TimeColumn::Heartbeat, &col, &value, &trouble, &consequence)
    })
}

/// A chunk's time that cannot be used (unreadable, or in the future).
#[allow(clippy::too_many_arguments)]
fn chunk_time_finding(c: &Config, id: &SqlValue, worker: &SqlValue, which: TimeColumn, col: &str, value: &SqlValue, trouble: &TimeTrouble, consequence: &str) -> Finding {
    time_finding(&format!("chunk:{}:{}", c.table, shown(id)), &format!("{} chunk {}", c.table, shown(id)), which, col, value, trouble, consequence)
        .evidence("worker", shown(worker))
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

fn orphan_finding(c: &Config, o: &Orphan, withheld: bool, reset_sql: &str) -> Finding {
    let f = Finding::critical(
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
        return f.evidence("reset", WITHHELD);
    }
    f.action(
        Action::sql_exec(
            &c.db,
            reset_sql,
            [SqlValue::Text(c.pending_status.clone()), o.id.clone(), SqlValue::Text(c.running_status.clone()), o.worker.clone()].into_iter().chain(o.identity.iter().cloned()).collect(),
            1,
        ),
        format!(
            "reset chunk {} to {} (worker and start time cleared) if it is still {} for worker {}",
            shown(&o.id),
            c.pending_status,
            c.running_status,
            shown(&o.worker)
        ),
    )
}

fn leftover_finding(c: &Config, l: &Leftover, scope: &ScopeMatcher) -> Finding {
    let p = &l.process;
    let cmd = command_line(p);
    let f = Finding::warning(
        format!("worker:{}:leftover", p.id.pid),
        format!("worker pid {}", p.id.pid),
        format!("worker pid {} (`{cmd}`) still holds chunk(s) {} but its coordinator is not running", p.id.pid, l.chunks.join(", ")),
    )
    .evidence("pid", p.id.pid)
    .evidence("start_time", p.id.start_time)
    .evidence("command", &cmd)
    .evidence("chunks", l.chunks.join(", "));
    if !c.stop_workers {
        return f;
    }
    if !l.allowed {
        return f.evidence(
            "stop",
            format!("not proposed: the process lies outside this deployment's scope ({})", scope.describe()),
        );
    }
    f.action(
        Action::stop_process(p.id, c.grace_ms),
        format!("stop leftover worker pid {} (`{cmd}`): TERM, {} ms grace, KILL", p.id.pid, c.grace_ms),
    )
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
        by_status.push((shown(&row[0]), db_common::integer(&row[1]).unwrap_or(0)));
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
