//! The incident: a training server's job table (pending, queued, running,
//! failed, cancelled, completed, sometimes paused) drifts from reality:
//! `running` rows with no live process, `pending`/`queued` rows that nothing
//! will ever pick up after a restart.
//!
//! Orphaned jobs are found by process identity (pid, `pid:start-time`, or a
//! worker name in command lines) and, where the process cannot be named, by
//! heartbeat age; stale waiting jobs by the age of their update column. Each
//! category gets the remedy the policy names: `requeue` (attempts + 1; once
//! the attempts run out it becomes `fail`), `fail` (with a reason), or
//! `report`. Every write is a compare-and-swap on the row as it was seen, so
//! a job that a live worker picked up in the meantime is never clobbered. A
//! job whose process is alive is never touched, and rows in any status the
//! policy does not list as running or waiting (completed, failed, cancelled,
//! paused) are never touched.

#[path = "../../sqlite-chunk-reset/src/common.rs"]
mod common;

use common::{ident, integer, liveness, opt_column, regex, require_columns, shown, Liveness, WorkerKind};
use doctor_sdk::prelude::*;
use serde::Deserialize;

#[derive(Deserialize, Clone, Copy, PartialEq, Debug)]
#[serde(rename_all = "kebab-case")]
enum Remedy {
    Requeue,
    Fail,
    Report,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
enum TimeUnit {
    #[serde(rename = "s")]
    Seconds,
    #[serde(rename = "ms")]
    Millis,
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
    worker_match: Option<String>,
    heartbeat_column: Option<String>,
    updated_column: Option<String>,
    time_unit: TimeUnit,
    attempts_column: Option<String>,
    reason_column: Option<String>,
    running_statuses: Vec<String>,
    waiting_statuses: Vec<String>,
    requeue_status: String,
    failed_status: String,
    #[serde(deserialize_with = "common::opt_duration_ms")]
    heartbeat_timeout: Option<u64>,
    #[serde(deserialize_with = "common::opt_duration_ms")]
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
            .config_key("worker_column", Some("\"pid\""), "the column naming the job's process (pid, pid:start-time, or a worker name); \"\" when there is none")
            .config_key("worker_kind", Some("\"pid\""), "\"pid\" or \"name\" (a word searched in command lines)")
            .config_key("worker_match", Some("\"\""), "regex a live worker's command line must match (a reused pid counts as dead)")
            .config_key("heartbeat_column", Some("\"\""), "the heartbeat column of running jobs (unix time or SQLite datetime text); \"\" for none")
            .config_key("updated_column", Some("\"\""), "the column whose age makes a waiting job stale (e.g. updated_at); \"\" for none")
            .config_key("time_unit", Some("\"s\""), "unit of numeric timestamps: \"s\" or \"ms\" (text timestamps are read as UTC)")
            .config_key("attempts_column", Some("\"attempts\""), "attempt counter incremented on requeue; \"\" for none")
            .config_key("reason_column", Some("\"\""), "column that receives the reason when a job is marked failed; \"\" for none")
            .config_key("running_statuses", Some("[\"running\"]"), "statuses of jobs that should have a live process")
            .config_key("waiting_statuses", Some("[\"pending\", \"queued\"]"), "statuses of jobs waiting to be picked up")
            .config_key("requeue_status", Some("\"pending\""), "status a requeued job gets")
            .config_key("failed_status", Some("\"failed\""), "status a failed job gets")
            .config_key("heartbeat_timeout", Some("\"\""), "a running job whose process cannot be named is orphaned when its heartbeat is older than this (e.g. \"5m\")")
            .config_key("stale_after", Some("\"\""), "a waiting job is stale when its updated column is older than this (e.g. \"1h\")")
            .config_key("on_orphaned", Some("\"requeue\""), "remedy for orphaned running jobs: requeue, fail or report")
            .config_key("on_stale", Some("\"report\""), "remedy for stale waiting jobs: requeue, fail or report")
            .config_key("max_attempts", Some("3"), "a job that already has this many attempts is failed instead of requeued")
            .config_key("service_user", Some("\"\""), "the user the server runs as: diagnose whether it can write the database file and directory")
    }

    fn check(c: Config) -> Result<Vec<Finding>, Error> {
        let user = opt_column(&c.service_user);
        let problems = common::write_problems(&c.db, user)?;
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
        let table = if worker_col.is_some() { processes::all()? } else { Vec::new() };
        let now_ms = host::now_unix_ms() as i64;

        let col = |c: Option<&str>| c.map(ident).unwrap_or_else(|| "NULL".into());
        let scale = if c.time_unit == TimeUnit::Seconds { 1000 } else { 1 };
        let as_ms = |c: Option<&str>| match c {
            Some(c) => {
                let c = ident(c);
                format!(
                    "CASE WHEN typeof({c}) = 'text' THEN CAST(strftime('%s', {c}) AS INTEGER) * 1000 \
                     WHEN typeof({c}) IN ('integer', 'real') THEN CAST({c} * {scale} AS INTEGER) END"
                )
            }
            None => "NULL".into(),
        };
        let statuses: Vec<&String> = c.running_statuses.iter().chain(&c.waiting_statuses).collect();
        let marks: Vec<String> = (1..=statuses.len()).map(|i| format!("?{i}")).collect();
        let (t, id, status) = (ident(&c.table), ident(&c.id_column), ident(&c.status_column));
        let rows = sqlite::query(
            &c.db,
            &format!(
                "SELECT {id}, {status}, {w}, {hb}, {hb_ms}, {upd}, {upd_ms}, {att} FROM {t} WHERE {status} IN ({marks}) ORDER BY {id}",
                w = col(worker_col),
                hb = col(hb_col),
                hb_ms = as_ms(hb_col),
                upd = col(upd_col),
                upd_ms = as_ms(upd_col),
                att = col(att_col),
                marks = marks.join(", ")
            ),
            &statuses.iter().map(|s| SqlValue::Text((*s).clone())).collect::<Vec<_>>(),
        )?;

        let mut findings = Vec::new();
        if let Some(f) = common::unwritable_finding(&c.db, user.unwrap_or_default(), &problems) {
            findings.push(f);
        }
        let writes = Writes { c: &c, worker_col, hb_col, upd_col, att_col, reason_col, withheld: !problems.is_empty(), now_ms };
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
                heartbeat_ms: integer(&r[4]),
                updated: &r[5],
                updated_ms: integer(&r[6]),
                attempts: &r[7],
            };
            if c.running_statuses.contains(&job.status) {
                findings.extend(check_running(&writes, &job, &table, worker_match.as_ref()));
            } else if let (Some(limit), Some(at)) = (c.stale_after, job.updated_ms) {
                let age = now_ms - at;
                if age > limit as i64 {
                    let why = format!("it has been {} for {} (stale after {})", job.status, human_ms(age), human_ms(limit as i64));
                    let f = Finding::warning(
                        format!("job:{}:stale", shown(job.id)),
                        format!("{} job {}", c.table, shown(job.id)),
                        format!("job {} is {} but nothing picked it up: {why}", shown(job.id), job.status),
                    );
                    findings.push(writes.remedy(f, &job, c.on_stale, &why));
                }
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
    heartbeat_ms: Option<i64>,
    updated: &'a SqlValue,
    updated_ms: Option<i64>,
    attempts: &'a SqlValue,
}

fn check_running(w: &Writes<'_>, job: &Job<'_>, table: &[doctor_sdk::processes::Process], worker_match: Option<&regex_lite::Regex>) -> Option<Finding> {
    let c = w.c;
    let hb_age = job.heartbeat_ms.map(|hb| w.now_ms - hb);
    let hb_stale = matches!((c.heartbeat_timeout, hb_age), (Some(limit), Some(age)) if age > limit as i64);
    let alive = match w.worker_col {
        Some(_) => liveness(job.worker, c.worker_kind, table, worker_match),
        None => Liveness::Unknown("the table records no process".into()),
    };
    let subject = format!("{} job {}", c.table, shown(job.id));
    let why = match alive {
        Liveness::Alive(procs) => {
            // The very process is alive: never touched, at most reported.
            if !hb_stale {
                return None;
            }
            let pids: Vec<String> = procs.iter().map(|p| p.id.pid.to_string()).collect();
            return Some(
                Finding::warning(
                    format!("job:{}:hung", shown(job.id)),
                    subject,
                    format!(
                        "job {} is {} and its process (pid {}) is alive, but its last heartbeat is {} old; it is left alone",
                        shown(job.id),
                        job.status,
                        pids.join(", "),
                        human_ms(hb_age.unwrap_or(0))
                    ),
                )
                .evidence("worker", shown(job.worker))
                .evidence("heartbeat", shown(job.heartbeat)),
            );
        }
        Liveness::Dead(why) => why,
        Liveness::Unknown(why) if hb_stale => {
            format!("{why} and its last heartbeat is {} old (timeout {})", human_ms(hb_age.unwrap_or(0)), human_ms(c.heartbeat_timeout.unwrap_or(0) as i64))
        }
        Liveness::Unknown(_) => return None,
    };
    let f = Finding::critical(
        format!("job:{}:orphaned", shown(job.id)),
        subject,
        format!("job {} is {} for worker {} but {why}; nothing will finish it", shown(job.id), job.status, shown(job.worker)),
    )
    .evidence("heartbeat", shown(job.heartbeat));
    Some(w.remedy(f, job, c.on_orphaned, &why))
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
}

impl Writes<'_> {
    fn remedy(&self, f: Finding, job: &Job<'_>, remedy: Remedy, why: &str) -> Finding {
        let c = self.c;
        let attempts = integer(job.attempts).unwrap_or(0);
        let mut f = f
            .evidence("id", shown(job.id))
            .evidence("status", &job.status)
            .evidence("worker", shown(job.worker))
            .evidence("reason", why)
            .evidence("remedy", format!("{remedy:?}").to_lowercase());
        if self.att_col.is_some() {
            f = f.evidence("attempts", attempts);
        }
        let exhausted = self.att_col.is_some() && attempts >= c.max_attempts;
        let remedy = if remedy == Remedy::Requeue && exhausted { Remedy::Fail } else { remedy };
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
                    let now = if c.time_unit == TimeUnit::Seconds { self.now_ms / 1000 } else { self.now_ms };
                    set(
                        format!("{u} = CASE WHEN typeof({u}) = 'text' THEN strftime('%Y-%m-%d %H:%M:%S', 'now') ELSE ? END", u = ident(u)),
                        Some(SqlValue::Integer(now)),
                        &mut params,
                    );
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

fn human_ms(ms: i64) -> String {
    let s = ms / 1000;
    if s >= 86_400 {
        format!("{}d{}h", s / 86_400, s % 86_400 / 3600)
    } else if s >= 3600 {
        format!("{}h{}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{}.{:01}s", s, (ms % 1000) / 100)
    }
}

register_plugin!(JobHealth);
