//! The incident: a training server's job table (pending, queued, running,
//! failed, cancelled, completed, sometimes paused) drifts from reality:
//! `running` rows with no live process, `pending`/`queued` rows that nothing
//! will ever pick up after a restart.
//!
//! Orphaned jobs are found by process identity (an owner in `owner_format`:
//! pid, `pid:start-time`, `host:pid`, `pid@host`, a regex; or a worker name
//! in command lines) and, where the process cannot be named here (no worker
//! column, or an owner on another host), by heartbeat age; stale waiting
//! jobs by the age of their update column. Times are read as declared
//! (`time_unit`) or detected, and an unreadable one is a finding of its own. Each
//! category gets the remedy the policy names: `requeue` (attempts + 1; once
//! the attempts run out it becomes `fail`), `fail` (with a reason), or
//! `report`. Every write is a compare-and-swap on the row as it was seen, so
//! a job that a live worker picked up in the meantime is never clobbered. A
//! job whose process is alive is never touched, and rows in any status the
//! policy does not list as running or waiting (completed, failed, cancelled,
//! paused) are never touched.

use db_common::{human_ms, ident, integer, liveness, opt_column, read_time, regex, require_columns, shown, Liveness, OwnerCheck, Stamp, TimeColumn, TimeUnit, WorkerKind};
use doctor_sdk::prelude::*;
use doctor_sdk::scope::ProcessTable;
use doctor_sdk::time::now_value;
use serde::Deserialize;

#[derive(Deserialize, Clone, Copy, PartialEq, Debug)]
#[serde(rename_all = "kebab-case")]
enum Remedy {
    Requeue,
    Fail,
    Report,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    db: String,
    table: String,
    id_column: String,
    status_column: String,
    worker_column: Option<String>,
    worker_kind: WorkerKind,
    owner_format: String,
    worker_match: Option<String>,
    heartbeat_column: Option<String>,
    updated_column: Option<String>,
    time_unit: String,
    attempts_column: Option<String>,
    reason_column: Option<String>,
    running_statuses: Vec<String>,
    waiting_statuses: Vec<String>,
    requeue_status: String,
    failed_status: String,
    #[serde(deserialize_with = "db_common::opt_duration_ms")]
    heartbeat_timeout: Option<u64>,
    #[serde(deserialize_with = "db_common::opt_duration_ms")]
    stale_after: Option<u64>,
    on_orphaned: Remedy,
    on_stale: Remedy,
    max_attempts: i64,
    service_user: Option<String>,
}

struct JobHealth;

const MAX_JOB_FINDINGS: usize = 900;

impl Plugin for JobHealth {
    type Config = Config;

    fn info() -> Info {
        Info::new("job-health", "Finds orphaned and stale jobs by process identity and heartbeat age; requeues or fails them by compare-and-swap")
            .capability(caps::SQLITE)
            .capability(caps::SQLITE_WRITE)
            .capability(caps::PROCESSES)
            .config_key("db", None, "database label from [databases]")
            .config_key("table", Some("\"jobs\""), "the job table")
            .config_key("id_column", Some("\"id\""), "the job's primary key column")
            .config_key("status_column", Some("\"status\""), "the status column")
            .config_key("worker_column", Some("\"pid\""), "the column naming the job's owner (see owner_format, or a worker name); \"\" when there is none")
            .config_key("worker_kind", Some("\"pid\""), "\"pid\" (an owner in owner_format) or \"name\" (a word searched in command lines)")
            .config_key("owner_format", Some("\"auto\""), "how owners are written: auto, pid (pid or pid:start-time), host:pid, pid@host, or a regex with named groups pid (required), host, start; another host's owner is judged by heartbeat only")
            .config_key("worker_match", Some("\"\""), "regex a live worker's command line must match (a reused pid counts as dead)")
            .config_key("heartbeat_column", Some("\"\""), "the heartbeat column of running jobs; \"\" for none")
            .config_key("updated_column", Some("\"\""), "the column whose age makes a waiting job stale (e.g. updated_at); \"\" for none")
            .config_key("time_unit", Some("\"auto\""), "how times are stored: auto (detected per value and stated in the finding), s, ms (epoch, INTEGER/REAL/TEXT), iso8601 (no zone = UTC), julian")
            .config_key("attempts_column", Some("\"attempts\""), "attempt counter incremented on requeue; \"\" for none")
            .config_key("reason_column", Some("\"\""), "column that receives the reason when a job is marked failed; \"\" for none")
            .config_key("running_statuses", Some("[\"running\"]"), "statuses of jobs that should have a live process")
            .config_key("waiting_statuses", Some("[\"pending\", \"queued\"]"), "statuses of jobs waiting to be picked up")
            .config_key("requeue_status", Some("\"pending\""), "status a requeued job gets")
            .config_key("failed_status", Some("\"failed\""), "status a failed job gets")
            .config_key("heartbeat_timeout", Some("\"\""), "a running job whose process cannot be named here (no worker column, another host) is orphaned when its heartbeat is older than this (e.g. \"5m\")")
            .config_key("stale_after", Some("\"\""), "a waiting job is stale when its updated column is older than this (e.g. \"1h\")")
            .config_key("on_orphaned", Some("\"requeue\""), "remedy for orphaned running jobs: requeue, fail or report")
            .config_key("on_stale", Some("\"report\""), "remedy for stale waiting jobs: requeue, fail or report")
            .config_key("max_attempts", Some("3"), "a job that already has this many attempts is failed instead of requeued")
            .config_key("service_user", Some("\"\""), "the user the server runs as: diagnose whether it can write the database file and directory")
    }

    fn check(c: Config) -> Result<Vec<Finding>, Error> {
        let user = opt_column(&c.service_user);
        let problems = db_common::write_problems(&c.db, user)?;
        let worker_col = opt_column(&c.worker_column);
        let hb_col = opt_column(&c.heartbeat_column);
        let upd_col = opt_column(&c.updated_column);
        let att_col = opt_column(&c.attempts_column);
        let reason_col = opt_column(&c.reason_column);
        let mut wanted = vec![("id_column", c.id_column.as_str()), ("status_column", c.status_column.as_str())];
        for (key, col) in [("worker_column", worker_col), ("heartbeat_column", hb_col), ("updated_column", upd_col), ("attempts_column", att_col), ("reason_column", reason_col)] {
            if let Some(col) = col {
                wanted.push((key, col));
            }
        }
        require_columns(&c.db, &c.table, &wanted)?;
        let worker_match = regex("worker_match", c.worker_match.as_deref())?;
        let format = db_common::owner_format(&c.owner_format)?;
        let unit = db_common::time_unit(&c.time_unit)?;
        let table = ProcessTable::new(if worker_col.is_some() { processes::all()? } else { Vec::new() });
        let hostname = host::hostname();
        let now_ms = host::now_unix_ms() as i64;

        let col = |c: Option<&str>| c.map(ident).unwrap_or_else(|| "NULL".into());
        let statuses: Vec<&String> = c.running_statuses.iter().chain(&c.waiting_statuses).collect();
        let marks: Vec<String> = (1..=statuses.len()).map(|i| format!("?{i}")).collect();
        let (t, id, status) = (ident(&c.table), ident(&c.id_column), ident(&c.status_column));
        let rows = sqlite::query(
            &c.db,
            &format!(
                "SELECT {id}, {status}, {w}, {hb}, {upd}, {att} FROM {t} WHERE {status} IN ({marks}) ORDER BY {id}",
                w = col(worker_col),
                hb = col(hb_col),
                upd = col(upd_col),
                att = col(att_col),
                marks = marks.join(", ")
            ),
            &statuses.iter().map(|s| SqlValue::Text((*s).clone())).collect::<Vec<_>>(),
        )?;

        let mut findings = Vec::new();
        if let Some(f) = db_common::unwritable_finding(&c.db, user.unwrap_or_default(), &problems) {
            findings.push(f);
        }
        let writes = Writes { c: &c, worker_col, hb_col, upd_col, att_col, reason_col, withheld: !problems.is_empty(), now_ms, unit };
        let chk = OwnerCheck { kind: c.worker_kind, format: &format, table: &table, worker_match: worker_match.as_ref(), hostname: &hostname };
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
                heartbeat_at: hb_col.map(|_| read_time(&r[3], unit)),
                updated: &r[4],
                updated_at: upd_col.map(|_| read_time(&r[4], unit)),
                attempts: &r[5],
            };
            if c.running_statuses.contains(&job.status) {
                findings.extend(check_running(&writes, &job, &chk));
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

struct Job<'a> {
    id: &'a SqlValue,
    status: String,
    status_value: &'a SqlValue,
    worker: &'a SqlValue,
    heartbeat: &'a SqlValue,
    /// None when no heartbeat column is configured.
    heartbeat_at: Option<Result<Stamp, String>>,
    updated: &'a SqlValue,
    updated_at: Option<Result<Stamp, String>>,
    attempts: &'a SqlValue,
}

impl Job<'_> {
    fn key(&self) -> String {
        format!("job:{}", shown(self.id))
    }

    fn subject(&self, c: &Config) -> String {
        format!("{} job {}", c.table, shown(self.id))
    }
}

/// A waiting job nothing picked up for longer than `stale_after`.
fn check_waiting(w: &Writes<'_>, job: &Job<'_>) -> Option<Finding> {
    let c = w.c;
    let limit = c.stale_after?;
    let stamp = match job.updated_at.as_ref()? {
        Ok(s) => s,
        Err(why) => {
            return Some(db_common::unreadable_time_finding(
                &job.key(),
                &job.subject(c),
                TimeColumn::Updated,
                w.upd_col.unwrap_or_default(),
                job.updated,
                why,
                "whether the job is stale cannot be told",
            ))
        }
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

fn check_running(w: &Writes<'_>, job: &Job<'_>, chk: &OwnerCheck<'_>) -> Vec<Finding> {
    let c = w.c;
    let mut out = Vec::new();
    // The heartbeat as read, or its own finding when it cannot be read.
    let beat = match &job.heartbeat_at {
        Some(Ok(stamp)) => Some(stamp),
        Some(Err(why)) => {
            out.push(db_common::unreadable_time_finding(
                &job.key(),
                &job.subject(c),
                TimeColumn::Heartbeat,
                w.hb_col.unwrap_or_default(),
                job.heartbeat,
                why,
                "the job cannot be judged by its heartbeat",
            ));
            None
        }
        None => None,
    };
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
    // A job table records no claim time to check a pid's age against.
    let alive = match w.worker_col {
        Some(_) => liveness(job.worker, chk, None),
        None => Liveness::Unknown("the table records no process".into()),
    };
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
        Liveness::Remote(host) if w.hb_col.is_none() || c.heartbeat_timeout.is_none() => {
            out.push(
                Finding::warning(
                    format!("job:{}:unknown-worker", shown(job.id)),
                    job.subject(c),
                    format!(
                        "job {} is {} for worker {} on host {host}; local pids say nothing about it, and without heartbeat_column and heartbeat_timeout it cannot be judged, so it is left alone",
                        shown(job.id),
                        job.status,
                        shown(job.worker)
                    ),
                )
                .evidence("worker", shown(job.worker)),
            );
            return out;
        }
        Liveness::Unknown(why) if hb_stale => format!("{why} and {}", hb_text()),
        Liveness::Remote(_) | Liveness::Unknown(_) => return out,
    };
    let mut f = Finding::critical(
        format!("job:{}:orphaned", shown(job.id)),
        job.subject(c),
        format!("job {} is {} for worker {} but {why}; nothing will finish it", shown(job.id), job.status, shown(job.worker)),
    )
    .evidence("heartbeat", shown(job.heartbeat));
    if let Some(stamp) = beat {
        f = f.evidence("heartbeat_read_as", &stamp.read_as);
    }
    out.push(w.remedy(f, job, c.on_orphaned, &why));
    out
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

/// Builds the compare-and-swap writes for one job.
struct Writes<'a> {
    c: &'a Config,
    worker_col: Option<&'a str>,
    hb_col: Option<&'a str>,
    upd_col: Option<&'a str>,
    att_col: Option<&'a str>,
    reason_col: Option<&'a str>,
    withheld: bool,
    now_ms: i64,
    unit: TimeUnit,
}

impl Writes<'_> {
    fn remedy(&self, f: Finding, job: &Job<'_>, remedy: Remedy, why: &str) -> Finding {
        let c = self.c;
        let attempts = integer(job.attempts).unwrap_or(0);
        let exhausted = self.att_col.is_some() && attempts >= c.max_attempts;
        // The remedy that will be applied: a requeue whose attempts ran out is a fail.
        let remedy = if remedy == Remedy::Requeue && exhausted { Remedy::Fail } else { remedy };
        let mut f = f
            .evidence("id", shown(job.id))
            .evidence("status", &job.status)
            .evidence("worker", shown(job.worker))
            .evidence("reason", why)
            .evidence("remedy", format!("{remedy:?}").to_lowercase());
        if self.att_col.is_some() {
            f = f.evidence("attempts", attempts);
        }
        if remedy == Remedy::Report {
            return f;
        }
        if self.withheld {
            return f.evidence("write", "withheld until the database is writable by the service user (see the unwritable finding)");
        }
        let (mut sets, mut params): (Vec<String>, Vec<SqlValue>) = (Vec::new(), Vec::new());
        let mut set = |sql: String, v: Option<SqlValue>, params: &mut Vec<SqlValue>| {
            match v {
                Some(v) => {
                    params.push(v);
                    sets.push(sql.replace("?", &format!("?{}", params.len())));
                }
                None => sets.push(sql),
            };
        };
        let description;
        match remedy {
            Remedy::Requeue => {
                set(format!("{} = ?", ident(&c.status_column)), Some(SqlValue::Text(c.requeue_status.clone())), &mut params);
                if let Some(w) = self.worker_col {
                    set(format!("{} = NULL", ident(w)), None, &mut params);
                }
                if let Some(a) = self.att_col {
                    set(format!("{a} = COALESCE({a}, 0) + 1", a = ident(a)), None, &mut params);
                }
                if let Some(u) = self.upd_col {
                    // "Now" in the unit the column already uses (as read, else as declared).
                    let unit = match &job.updated_at {
                        Some(Ok(stamp)) => stamp.unit,
                        _ => self.unit,
                    };
                    match now_value(unit, self.now_ms) {
                        Some(v) => set(format!("{} = ?", ident(u)), Some(v), &mut params),
                        None => set(format!("{} = strftime('%Y-%m-%d %H:%M:%S', 'now')", ident(u)), None, &mut params),
                    }
                }
                description = match self.att_col {
                    Some(_) => format!("requeue job {} as {} (attempt {} of {})", shown(job.id), c.requeue_status, attempts + 1, c.max_attempts),
                    None => format!("requeue job {} as {}", shown(job.id), c.requeue_status),
                };
            }
            _ => {
                let reason = if exhausted {
                    format!("doctor: {why}; gave up after {attempts} attempt(s) (max_attempts {})", c.max_attempts)
                } else {
                    format!("doctor: {why}")
                };
                set(format!("{} = ?", ident(&c.status_column)), Some(SqlValue::Text(c.failed_status.clone())), &mut params);
                if let Some(r) = self.reason_col {
                    set(format!("{} = ?", ident(r)), Some(SqlValue::Text(reason.clone())), &mut params);
                }
                f = f.evidence("failure_reason", &reason);
                description = format!("mark job {} {}: {reason}", shown(job.id), c.failed_status);
            }
        }
        // Compare-and-swap on the row exactly as this check saw it.
        let mut conds = Vec::new();
        let mut cas = |column: &str, v: &SqlValue, params: &mut Vec<SqlValue>| {
            params.push(v.clone());
            conds.push(format!("{} IS ?{}", ident(column), params.len()));
        };
        cas(&c.id_column, job.id, &mut params);
        cas(&c.status_column, job.status_value, &mut params);
        for (column, value) in [(self.worker_col, job.worker), (self.hb_col, job.heartbeat), (self.upd_col, job.updated), (self.att_col, job.attempts)] {
            if let Some(column) = column {
                cas(column, value, &mut params);
            }
        }
        let sql = format!("UPDATE {} SET {} WHERE {}", ident(&c.table), sets.join(", "), conds.join(" AND "));
        f.action(Action::sql_exec(&c.db, &sql, params, 1), description)
    }
}

fn summary(c: &Config) -> Result<Finding, Error> {
    let counts = sqlite::query(
        &c.db,
        &format!("SELECT {s}, count(*) FROM {t} GROUP BY {s} ORDER BY {s}", s = ident(&c.status_column), t = ident(&c.table)),
        &[],
    )?;
    let parts: Vec<(String, i64)> = counts.rows.iter().map(|r| (shown(&r[0]), integer(&r[1]).unwrap_or(0))).collect();
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
