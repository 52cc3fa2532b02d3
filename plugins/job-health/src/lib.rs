//! The incident: a training server's job table (pending, queued, running,
//! failed, cancelled, completed, sometimes paused) drifts from reality:
//! `running` rows with no live process, `pending`/`queued` rows that nothing
//! will ever pick up after a restart.
//!
//! Orphaned jobs are found by process identity — an owner in `owner_format`
//! (pid, `pid:start-time`, `host:pid`, `pid@host`, a regex), a pid and host
//! that SQL expressions take from the row (`json_extract(result, '$.pid')`),
//! or a worker name found only by a declared pattern inside a scope — and,
//! for an owner on another host (or a table that records no worker), by
//! heartbeat age. A row whose worker cannot be identified is said to be so
//! and is never written unless the policy opts into heartbeat-only
//! judgement (`unidentified = "heartbeat"`): the incident behind this rule
//! is a live worker's task marked failed because its name was not in its
//! command line. Stale waiting
//! jobs by the age of their update column. Times are read as declared
//! (`time_unit`) or detected, and an unreadable one is a finding of its own. Each
//! category gets the remedy the policy names: `requeue` (attempts + 1; once
//! the attempts run out it becomes `fail`), `fail` (with a reason), or
//! `report`. Every write is a compare-and-swap on the row as it was seen, so
//! a job that a live worker picked up in the meantime is never clobbered. A
//! job whose process is alive is never touched, and rows in any status the
//! policy does not list as running or waiting (completed, failed, cancelled,
//! paused) are never touched.

use db_common::{
    claim_time, human_ms, ident, integer, opt_column, read_at, regex, row_liveness, shown, time_finding, Identity, Liveness, OnHost, OwnerCheck, Placeholders, RowIdentity, SetValue,
    Stamp, TimeColumn, TimeTrouble, TimeUnit, Update, WorkerKind, WITHHELD,
};
use doctor_sdk::prelude::*;
use doctor_sdk::scope::{ProcessTable, Scope};
use doctor_sdk::time::{iso8601_utc, now_value};
use serde::Deserialize;
use std::collections::BTreeMap;

/// What to do with a running job whose worker cannot be identified.
#[derive(Deserialize, Clone, Copy, PartialEq, Debug)]
#[serde(rename_all = "kebab-case")]
enum Unidentified {
    /// Say "cannot tell whether the worker is alive"; never write.
    Report,
    /// Judge it by its heartbeat alone (heartbeat_timeout).
    Heartbeat,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Debug)]
#[serde(rename_all = "kebab-case")]
enum Remedy {
    Requeue,
    Fail,
    Report,
}

doctor_sdk::config! {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        /// database label from [databases]
        db: String,
        /// the job table
        table: String = r#""jobs""#,
        /// the job's primary key column
        id_column: String = r#""id""#,
        /// the status column
        status_column: String = r#""status""#,
        /// the column naming the job's owner (see owner_format, or a worker name); "" when the table records none (then heartbeats alone judge)
        worker_column: Option<String> = r#""pid""#,
        /// "pid" (an owner in owner_format) or "name" (a worker name, found only by name_pattern inside scope)
        worker_kind: WorkerKind = r#""pid""#,
        /// how owners are written: auto, pid (pid or pid:start-time), host:pid, pid@host, or a regex with named groups pid (required), host, start; another host's owner is judged by heartbeat only
        owner_format: String = r#""auto""#,
        /// an SQL expression giving the worker's pid from the row, e.g. json_extract(result, '$.pid'); checked by pid, start time and claim time
        worker_pid_sql: Option<String> = r#""""#,
        /// an SQL expression giving the worker's host from the row; another host's job is judged by heartbeat only
        worker_host_sql: Option<String> = r#""""#,
        /// with worker_kind = "name": regex searched in command lines inside scope whose named group `name` must equal the row's worker name
        name_pattern: Option<String> = r#""""#,
        /// where name_pattern looks: { user, unit, cgroup, under } or "host"
        scope: Scope = "null",
        /// regex a live worker's command line must match (a reused pid counts as dead)
        worker_match: Option<String> = r#""""#,
        /// a running job whose worker cannot be identified: report ("cannot tell whether the worker is alive", no write) or heartbeat (orphaned when its heartbeat is older than heartbeat_timeout)
        unidentified: Unidentified = r#""report""#,
        /// the heartbeat column of running jobs; "" for none
        heartbeat_column: Option<String> = r#""""#,
        /// the claim or lock time of running jobs: a live process that started after it has a reused pid; "" for none
        claimed_column: Option<String> = r#""""#,
        /// the column whose age makes a waiting job stale (e.g. updated_at or created_at); "" for none
        updated_column: Option<String> = r#""""#,
        /// how times are stored: auto (detected per value and stated in the finding), s, ms, us, ns (epoch, INTEGER/REAL/TEXT), iso8601 (no zone = UTC), julian
        time_unit: String = r#""auto""#,
        #[serde(deserialize_with = "db_common::duration_ms")]
        /// a time further ahead of this host's clock is a finding (unit wrong?), never used to judge
        clock_skew: u64 = r#""2m""#,
        /// attempt counter incremented on requeue; "" for none
        attempts_column: Option<String> = r#""attempts""#,
        /// column that receives the reason when a job is marked failed; "" for none
        reason_column: Option<String> = r#""""#,
        /// statuses of jobs that should have a live process
        running_statuses: Vec<String> = r#"["running"]"#,
        /// statuses of jobs waiting to be picked up
        waiting_statuses: Vec<String> = r#"["pending", "queued"]"#,
        /// status a requeued job gets
        requeue_status: String = r#""pending""#,
        /// status a failed job gets
        failed_status: String = r#""failed""#,
        #[serde(deserialize_with = "db_common::opt_duration_ms")]
        /// a running job whose process cannot be named here (no worker column, another host) is orphaned when its heartbeat is older than this (e.g. "5m")
        heartbeat_timeout: Option<u64> = r#""""#,
        #[serde(deserialize_with = "db_common::opt_duration_ms")]
        /// a waiting job is stale when its updated column is older than this (e.g. "1h")
        stale_after: Option<u64> = r#""""#,
        /// remedy for orphaned running jobs: requeue, fail or report
        on_orphaned: Remedy = r#""requeue""#,
        /// remedy for stale waiting jobs: requeue, fail or report
        on_stale: Remedy = r#""report""#,
        /// a job that already has this many attempts is failed instead of requeued
        max_attempts: i64 = "3",
        /// further columns a requeue sets: constant, { null = true }, { now = true }, { text = "...{reason}" }, { json = { ... } }
        requeue_set: BTreeMap<String, serde_json::Value> = "{}",
        /// further columns marking a job failed sets (an error record the application reads), in the same forms
        fail_set: BTreeMap<String, serde_json::Value> = "{}",
        /// the user the server runs as: diagnose whether it can write the database file and directory
        service_user: Option<String> = r#""""#,
    }
}

struct JobHealth;

const MAX_JOB_FINDINGS: usize = 900;

impl Plugin for JobHealth {
    type Config = Config;

    fn info() -> Info {
        Info::new("job-health", "Finds orphaned and stale jobs by process identity and heartbeat age; requeues or fails them by compare-and-swap")
            .capabilities(&[caps::SQLITE, caps::SQLITE_WRITE, caps::PROCESSES])
            .config::<Config>()
    }

    fn check(c: Config) -> Result<Vec<Finding>, Error> {
        // What the config alone decides, before the database is opened (so
        // that `policy validate` says it even where the file is not yet there).
        let cols = Columns::of(&c);
        let pid_sql = db_common::sql_expression("worker_pid_sql", c.worker_pid_sql.as_deref())?;
        let host_sql = db_common::sql_expression("worker_host_sql", c.worker_host_sql.as_deref())?;
        let sets = Sets::parse(&c, &cols)?;
        let (worker_match, format, unit) = (regex("worker_match", c.worker_match.as_deref())?, db_common::owner_format(&c.owner_format)?, db_common::time_unit(&c.time_unit)?);
        let id = Identity { pid_sql, host_sql, worker_match, name_pattern: db_common::name_pattern(c.name_pattern.as_deref())?, format, unit };

        // Then what only this host and its table can tell.
        let user = opt_column(&c.service_user);
        let mut wanted = vec![("id_column", c.id_column.as_str()), ("status_column", c.status_column.as_str())];
        for (key, col) in [
            ("worker_column", cols.worker),
            ("heartbeat_column", cols.hb),
            ("claimed_column", cols.claimed),
            ("updated_column", cols.upd),
            ("attempts_column", cols.att),
            ("reason_column", cols.reason),
        ] {
            if let Some(col) = col {
                wanted.push((key, col));
            }
        }
        let OnHost { problems, scope, weak } = id.on_host(&c.db, &c.table, user, &c.scope, c.worker_kind, &wanted)?;
        let mut findings: Vec<Finding> = weak.into_iter().collect();
        sets.check_table(&c)?;
        let finder = id.name_finder(&scope);
        // Does the table record its workers at all? With neither a worker
        // column nor a pid expression it has declared heartbeat-only judgement.
        let records_worker = cols.worker.is_some() || id.pid_sql.is_some();
        let table = ProcessTable::new(if records_worker { processes::all()? } else { Vec::new() });
        let hostname = host::hostname();
        let now_ms = host::now_unix_ms() as i64;

        let col = |c: Option<&str>| c.map(ident).unwrap_or_else(|| "NULL".into());
        let statuses: Vec<&String> = c.running_statuses.iter().chain(&c.waiting_statuses).collect();
        let marks: Vec<String> = (1..=statuses.len()).map(|i| format!("?{i}")).collect();
        let (t, key, status) = (ident(&c.table), ident(&c.id_column), ident(&c.status_column));
        let rows = sqlite::query(
            &c.db,
            &format!(
                "SELECT {key}, {status}, {w}, {hb}, {upd}, {att}, {claimed}, {identity} FROM {t} WHERE {status} IN ({marks}) ORDER BY {key}",
                w = col(cols.worker),
                hb = col(cols.hb),
                upd = col(cols.upd),
                att = col(cols.att),
                claimed = col(cols.claimed),
                identity = id.select_list(),
                marks = marks.join(", ")
            ),
            &statuses.iter().map(|s| SqlValue::Text((*s).clone())).collect::<Vec<_>>(),
        )?;

        if let Some(f) = db_common::unwritable_finding(&c.db, user.unwrap_or_default(), &problems) {
            findings.push(f);
        }
        let writes = Writes { c: &c, cols: &cols, id: &id, sets: &sets, withheld: !problems.is_empty(), now_ms, unit: id.unit };
        let chk = id.owner_check(c.worker_kind, &table, &hostname, finder.as_ref());
        let skew = c.clock_skew as i64;
        let time = |col: Option<&str>, v: &SqlValue| col.map(|_| read_at(v, id.unit, now_ms, skew));
        let mut seen = std::collections::BTreeSet::new();
        for r in &rows.rows {
            if !seen.insert(shown(&r[0])) {
                continue;
            }
            let job = Job {
                id: &r[0],
                status: shown(&r[1]),
                status_value: &r[1],
                worker: &r[2],
                heartbeat: &r[3],
                heartbeat_at: time(cols.hb, &r[3]),
                updated: &r[4],
                updated_at: time(cols.upd, &r[4]),
                attempts: &r[5],
                claimed: &r[6],
                claimed_at: time(cols.claimed, &r[6]),
                pid: id.pid_sql.as_ref().map(|_| &r[7]),
                host: id.host_sql.as_ref().map(|_| &r[8]),
            };
            if c.running_statuses.contains(&job.status) {
                findings.extend(check_running(&writes, &job, &chk, records_worker));
            } else {
                findings.extend(check_waiting(&writes, &job));
            }
        }
        // The host takes at most 1000 findings per report: the oldest ids first,
        // the rest on the next run (the summary says how many waited).
        let mut summary = summary(&c)?;
        if findings.len() > MAX_JOB_FINDINGS {
            summary = summary.evidence("deferred", format!("{} job finding(s) beyond the first {MAX_JOB_FINDINGS} wait for the next run", findings.len() - MAX_JOB_FINDINGS));
            findings.truncate(MAX_JOB_FINDINGS);
        }
        findings.push(summary);
        Ok(findings)
    }
}

/// The configured columns ("" or absent: the table has none).
struct Columns<'a> {
    worker: Option<&'a str>,
    hb: Option<&'a str>,
    claimed: Option<&'a str>,
    upd: Option<&'a str>,
    att: Option<&'a str>,
    reason: Option<&'a str>,
}

impl<'a> Columns<'a> {
    fn of(c: &'a Config) -> Self {
        Columns {
            worker: opt_column(&c.worker_column),
            hb: opt_column(&c.heartbeat_column),
            claimed: opt_column(&c.claimed_column),
            upd: opt_column(&c.updated_column),
            att: opt_column(&c.attempts_column),
            reason: opt_column(&c.reason_column),
        }
    }
}

struct Job<'a> {
    id: &'a SqlValue,
    status: String,
    status_value: &'a SqlValue,
    worker: &'a SqlValue,
    heartbeat: &'a SqlValue,
    /// None when no heartbeat column is configured.
    heartbeat_at: Option<Result<Stamp, TimeTrouble>>,
    updated: &'a SqlValue,
    updated_at: Option<Result<Stamp, TimeTrouble>>,
    attempts: &'a SqlValue,
    claimed: &'a SqlValue,
    claimed_at: Option<Result<Stamp, TimeTrouble>>,
    /// `worker_pid_sql`'s and `worker_host_sql`'s values, when configured.
    pid: Option<&'a SqlValue>,
    host: Option<&'a SqlValue>,
}

impl Job<'_> {
    fn key(&self) -> String {
        format!("job:{}", shown(self.id))
    }

    fn subject(&self, c: &Config) -> String {
        format!("{} job {}", c.table, shown(self.id))
    }

    /// A time of this job that cannot be used (unreadable, or in the future).
    fn time_finding(&self, c: &Config, which: TimeColumn, column: Option<&str>, value: &SqlValue, trouble: &TimeTrouble, consequence: &str) -> Finding {
        time_finding(&self.key(), &self.subject(c), which, column.unwrap_or_default(), value, trouble, consequence)
    }

    /// The row's own time unit: how its times were read (for a write of "now").
    fn unit(&self) -> Option<TimeUnit> {
        [&self.heartbeat_at, &self.claimed_at, &self.updated_at].into_iter().find_map(|t| match t {
            Some(Ok(s)) => Some(s.unit),
            _ => None,
        })
    }

    /// The worker as a message names it: the column, and the pid and host the expressions found.
    fn worker_text(&self) -> String {
        let mut parts = vec![shown(self.worker)];
        if let Some(pid) = self.pid {
            parts.push(format!("pid {}", shown(pid)));
        }
        if let Some(host) = self.host {
            parts.push(format!("host {}", shown(host)));
        }
        match parts.len() {
            1 => parts.remove(0),
            _ => format!("{} ({})", parts[0], parts[1..].join(", ")),
        }
    }
}

/// A waiting job nothing picked up for longer than `stale_after`.
fn check_waiting(w: &Writes<'_>, job: &Job<'_>) -> Option<Finding> {
    let c = w.c;
    let limit = c.stale_after?;
    let stamp = match job.updated_at.as_ref()? {
        Ok(s) => s,
        Err(trouble) => return Some(job.time_finding(c, TimeColumn::Updated, w.cols.upd, job.updated, trouble, "whether the job is stale cannot be told")),
    };
    let age = w.now_ms - stamp.unix_ms;
    if age <= limit as i64 {
        return None;
    }
    let why = format!("it has been {} for {} (stale after {})", job.status, human_ms(age), human_ms(limit as i64));
    let f = Finding::warning(
        format!("job:{}:stale", shown(job.id)),
        job.subject(c),
        format!("job {} is {} but nothing picked it up: {why}", shown(job.id), job.status),
    )
    .evidence("updated_read_as", &stamp.read_as);
    Some(w.remedy(f, job, c.on_stale, &why))
}

fn check_running(w: &Writes<'_>, job: &Job<'_>, chk: &OwnerCheck<'_>, records_worker: bool) -> Vec<Finding> {
    let c = w.c;
    let mut out = Vec::new();
    // The heartbeat as read, or its own finding when it cannot be used.
    let beat = match &job.heartbeat_at {
        Some(Err(trouble)) => {
            out.push(job.time_finding(c, TimeColumn::Heartbeat, w.cols.hb, job.heartbeat, trouble, "the job cannot be judged by its heartbeat"));
            None
        }
        beat => beat.as_ref().and_then(|b| b.as_ref().ok()),
    };
    let claimed_ms = job.claimed_at.as_ref().map(claim_time).and_then(|claimed| {
        claimed.unwrap_or_else(|trouble| {
            out.push(job.time_finding(c, TimeColumn::Claimed, w.cols.claimed, job.claimed, trouble, "a reused pid cannot be told by it"));
            None
        })
    });
    let hb_age = beat.map(|s| w.now_ms - s.unix_ms);
    let hb_stale = matches!((c.heartbeat_timeout, hb_age), (Some(limit), Some(age)) if age > limit as i64);
    let hb_text = || {
        format!(
            "its last heartbeat is {} old (timeout {}; read as {})",
            human_ms(hb_age.unwrap_or(0)),
            human_ms(c.heartbeat_timeout.unwrap_or(0) as i64),
            beat.map(|s| s.read_as.as_str()).unwrap_or("")
        )
    };
    // A host expression alone still tells another host's job from this host's.
    let alive = match records_worker || job.host.is_some() {
        true => row_liveness(&RowIdentity { worker: job.worker, pid: job.pid, host: job.host }, chk, claimed_ms),
        false => Liveness::Unknown("the table records no worker".into()),
    };
    // A table that records no worker (worker_column = "") has declared heartbeat-only judgement.
    let by_heartbeat = c.unidentified == Unidentified::Heartbeat || !records_worker;
    let why = match alive {
        Liveness::Alive(procs) => {
            // The very process is alive: never touched, at most reported.
            if hb_stale {
                out.push(hung_finding(job, c, &procs, hb_age.unwrap_or(0)));
            }
            return out;
        }
        Liveness::Dead(why) => why,
        Liveness::Remote(host) if hb_stale => format!("its owner is on host {host} and {}", hb_text()),
        // Another host's job with nothing to judge it by: said, never guessed.
        Liveness::Remote(host) if w.cols.hb.is_none() || c.heartbeat_timeout.is_none() => {
            out.push(unknown_worker(
                job,
                c,
                format!(
                    "job {} is {} for worker {} on host {host}; local pids say nothing about it, and without heartbeat_column and heartbeat_timeout it cannot be judged, so it is left alone",
                    shown(job.id),
                    job.status,
                    job.worker_text()
                ),
            ));
            return out;
        }
        Liveness::Unknown(why) if by_heartbeat && hb_stale => format!("{why} and {}", hb_text()),
        // No identity, and no opt-in to judge by heartbeat: a live worker's
        // task may look exactly like this, so it is said and never written.
        Liveness::Unknown(why) if !by_heartbeat => {
            out.push(unknown_worker(
                job,
                c,
                format!(
                    "job {} is {} but doctor cannot tell whether the worker is alive: {why}; no write is proposed (unidentified = \"heartbeat\" would judge such jobs by heartbeat_timeout)",
                    shown(job.id),
                    job.status
                ),
            ));
            return out;
        }
        Liveness::Remote(_) | Liveness::Unknown(_) => return out,
    };
    let mut f = Finding::critical(
        format!("job:{}:orphaned", shown(job.id)),
        job.subject(c),
        format!("job {} is {} for worker {} but {why}; nothing will finish it", shown(job.id), job.status, job.worker_text()),
    )
    .evidence("heartbeat", shown(job.heartbeat));
    if let Some(stamp) = beat {
        f = f.evidence("heartbeat_read_as", &stamp.read_as);
    }
    out.push(w.remedy(f, job, c.on_orphaned, &why));
    out
}

fn unknown_worker(job: &Job<'_>, c: &Config, message: String) -> Finding {
    Finding::warning(format!("job:{}:unknown-worker", shown(job.id)), job.subject(c), message).evidence("worker", job.worker_text())
}

fn hung_finding(job: &Job<'_>, c: &Config, procs: &[doctor_sdk::processes::Process], age: i64) -> Finding {
    let pids: Vec<String> = procs.iter().map(|p| p.id.pid.to_string()).collect();
    Finding::warning(
        format!("job:{}:hung", shown(job.id)),
        job.subject(c),
        format!(
            "job {} is {} and its process (pid {}) is alive, but its last heartbeat is {} old; it is left alone",
            shown(job.id),
            job.status,
            pids.join(", "),
            human_ms(age)
        ),
    )
    .evidence("worker", shown(job.worker))
    .evidence("heartbeat", shown(job.heartbeat))
}

/// The policy's further columns for each remedy, checked against the table.
struct Sets {
    requeue: Vec<(String, SetValue)>,
    fail: Vec<(String, SetValue)>,
}

impl Sets {
    /// Each value must be a known form, and no column one the remedy writes
    /// itself. Then (`check_table`) the columns must exist and the
    /// compare-and-swap that carries them must be single-row: the id column
    /// is the table's key. Errors are `config:` errors, so that `policy
    /// validate` places them at the policy's line.
    fn parse(c: &Config, cols: &Columns) -> Result<Sets, Error> {
        let mut requeue_own = vec![c.id_column.as_str(), c.status_column.as_str()];
        requeue_own.extend([cols.worker, cols.att, cols.upd].into_iter().flatten());
        let mut fail_own = vec![c.id_column.as_str(), c.status_column.as_str()];
        fail_own.extend(cols.reason);
        Ok(Sets {
            requeue: db_common::parse_sets("requeue_set", &c.requeue_set, &requeue_own)?,
            fail: db_common::parse_sets("fail_set", &c.fail_set, &fail_own)?,
        })
    }

    fn check_table(&self, c: &Config) -> Result<(), Error> {
        let columns = db_common::table_columns(&c.db, &c.table)?;
        for (key, list) in [("requeue_set", &self.requeue), ("fail_set", &self.fail)] {
            for (column, _) in list {
                if !columns.iter().any(|have| have.eq_ignore_ascii_case(column)) {
                    return Err(Error::Invalid(format!(
                        "config: {key}.{column}: table {:?} has no column {column:?} (columns: {})",
                        c.table,
                        columns.join(", ")
                    )));
                }
            }
            if !list.is_empty() && !db_common::is_unique(&c.db, &c.table, &c.id_column)? {
                return Err(Error::Invalid(format!(
                    "config: {key}: its compare-and-swap must change one row, but id_column = {:?} is neither the primary key nor UNIQUE in table {:?}",
                    c.id_column, c.table
                )));
            }
        }
        Ok(())
    }
}

/// Builds the compare-and-swap writes for one job.
struct Writes<'a> {
    c: &'a Config,
    cols: &'a Columns<'a>,
    id: &'a Identity,
    sets: &'a Sets,
    withheld: bool,
    now_ms: i64,
    unit: TimeUnit,
}

impl Writes<'_> {
    /// "Now" in `unit`, or in the table's unit: as declared, else as this row's times were read, else seconds.
    fn now_in(&self, unit: Option<TimeUnit>, job: &Job<'_>) -> SqlValue {
        let unit = unit.or(Some(self.unit).filter(|u| *u != TimeUnit::Auto)).or(job.unit()).unwrap_or(TimeUnit::Seconds);
        now_value(unit, self.now_ms).unwrap_or_else(|| SqlValue::Text(iso8601_utc(self.now_ms)))
    }

    fn remedy(&self, f: Finding, job: &Job<'_>, remedy: Remedy, why: &str) -> Finding {
        let c = self.c;
        let attempts = integer(job.attempts).unwrap_or(0);
        let exhausted = self.cols.att.is_some() && attempts >= c.max_attempts;
        // The remedy that will be applied: a requeue whose attempts ran out is a fail.
        let remedy = if remedy == Remedy::Requeue && exhausted { Remedy::Fail } else { remedy };
        let mut f = f
            .evidence("id", shown(job.id))
            .evidence("status", &job.status)
            .evidence("worker", job.worker_text())
            .evidence("reason", why)
            .evidence("remedy", format!("{remedy:?}").to_lowercase());
        if self.cols.att.is_some() {
            f = f.evidence("attempts", attempts);
        }
        if remedy == Remedy::Report {
            return f;
        }
        if self.withheld {
            return f.evidence("write", WITHHELD);
        }
        let mut st = Update::default();
        let description;
        let reason = match exhausted {
            true => format!("doctor: {why}; gave up after {attempts} attempt(s) (max_attempts {})", c.max_attempts),
            false => format!("doctor: {why}"),
        };
        let extra = match remedy {
            Remedy::Requeue => {
                st.set(&c.status_column, SqlValue::Text(c.requeue_status.clone()));
                if let Some(w) = self.cols.worker {
                    st.set_sql(format!("{} = NULL", ident(w)));
                }
                if let Some(a) = self.cols.att {
                    st.set_sql(format!("{a} = COALESCE({a}, 0) + 1", a = ident(a)));
                }
                if let Some(u) = self.cols.upd {
                    // "Now" in the unit the column already uses (as read, else as declared).
                    let unit = match &job.updated_at {
                        Some(Ok(stamp)) => stamp.unit,
                        _ => self.unit,
                    };
                    match now_value(unit, self.now_ms) {
                        Some(v) => st.set(u, v),
                        None => st.set_sql(format!("{} = strftime('%Y-%m-%d %H:%M:%S', 'now')", ident(u))),
                    };
                }
                description = match self.cols.att {
                    Some(_) => format!("requeue job {} as {} (attempt {} of {})", shown(job.id), c.requeue_status, attempts + 1, c.max_attempts),
                    None => format!("requeue job {} as {}", shown(job.id), c.requeue_status),
                };
                &self.sets.requeue
            }
            _ => {
                st.set(&c.status_column, SqlValue::Text(c.failed_status.clone()));
                if let Some(r) = self.cols.reason {
                    st.set(r, SqlValue::Text(reason.clone()));
                }
                f = f.evidence("failure_reason", &reason);
                description = format!("mark job {} {}: {reason}", shown(job.id), c.failed_status);
                &self.sets.fail
            }
        };
        // The application's own columns, in the same statement.
        let facts = self.placeholders(job, remedy, &reason);
        for (column, value) in extra {
            st.set(column, value.bind(&facts, &|unit| self.now_in(unit, job)));
        }
        // Compare-and-swap on the row exactly as this check saw it.
        st.unchanged(ident(&c.id_column), job.id.clone());
        st.unchanged(ident(&c.status_column), job.status_value.clone());
        let cols = self.cols;
        for (column, value) in [(cols.worker, job.worker), (cols.hb, job.heartbeat), (cols.upd, job.updated), (cols.att, job.attempts), (cols.claimed, job.claimed)] {
            if let Some(column) = column {
                st.unchanged(ident(column), value.clone());
            }
        }
        // The identity the verdict rests on, too: a new worker's pid in the JSON means hands off.
        for (expr, value) in self.id.unchanged(job.pid.unwrap_or(&SqlValue::Null), job.host.unwrap_or(&SqlValue::Null)) {
            st.unchanged(expr, value);
        }
        let (sql, params) = st.build(&c.table);
        f.action(Action::sql_exec(&c.db, &sql, params, 1), description)
    }

    /// What `{reason}`, `{pid}`, ... stand for in a `text` or `json` value.
    fn placeholders(&self, job: &Job<'_>, remedy: Remedy, reason: &str) -> Placeholders {
        let shown_opt = |v: Option<&SqlValue>| v.map(shown).unwrap_or_default();
        [
            ("reason", reason.to_string()),
            ("id", shown(job.id)),
            ("worker", shown(job.worker)),
            ("pid", shown_opt(job.pid)),
            ("host", shown_opt(job.host)),
            ("status", job.status.clone()),
            ("attempts", integer(job.attempts).unwrap_or(0).to_string()),
            ("remedy", format!("{remedy:?}").to_lowercase()),
            ("now", iso8601_utc(self.now_ms)),
        ]
        .into_iter()
        .collect()
    }
}

fn summary(c: &Config) -> Result<Finding, Error> {
    let parts = db_common::status_counts(&c.db, &c.table, &c.status_column)?;
    let total: i64 = parts.iter().map(|(_, n)| n).sum();
    let text: Vec<String> = parts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let mut f = Finding::info(
        format!("table:{}:summary", c.table),
        format!("table {}", c.table),
        format!("{}: {total} job(s){}{}", c.table, if text.is_empty() { "" } else { ": " }, text.join(", ")),
    )
    .evidence("total", total);
    for (s, n) in &parts {
        f = f.evidence(&format!("status {s}"), n);
    }
    Ok(f)
}

register_plugin!(JobHealth);
