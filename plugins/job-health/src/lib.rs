//! The incident: a training server's job table (pending, queued, running,
//! failed, cancelled, completed, sometimes paused) drifts from reality:
//! `running` rows with no live process, `pending`/`queued` rows that nothing
//! will ever pick up after a restart.
//!
//! A running job is judged by its worker's identity and, for an owner on
//! another host (or a table that records no worker), by its heartbeat
//! (db-common's `claims`). A job whose worker cannot be identified is said to
//! be so and never written unless the policy opts into heartbeat-only
//! judgement (`unidentified = "heartbeat"`): the incident behind this rule is
//! a live worker's task marked failed because its name was not in its command
//! line. A waiting job is stale by the age of its update column. Each
//! category gets the remedy the policy names: `requeue` (attempts + 1; once
//! they run out it becomes `fail`), `fail` (with a reason) or `report`, each
//! write a compare-and-swap on the row as it was seen. A dead owner's orphaned
//! jobs are one finding, written by a few set-based compare-and-swaps (rows
//! that need different writes in different ones). A job whose process is
//! alive, and rows in any status not listed as running or waiting, are never touched.

use db_common::{
    human_ms, ident, integer, opt_column, row_liveness, shown, Clock, Db, Heartbeat, Identity,
    IdentityConfig, Liveness, Lookups, OnHost, Orphan, Orphans, OwnerCheck, Placeholders,
    RowEvidence, RowIdentity, RowName, RowWrite, SetValue, StatusCounts, TimeColumn, TimeUnit,
    Update, WITHHELD,
};
use doctor_sdk::prelude::*;
use doctor_sdk::process::pid_list;
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
    struct Config {
        db: String, "database label from [databases]",
        table: String = r#""jobs""#, "the job table",
        id_column: String = r#""id""#, "the job's primary key column",
        status_column: String = r#""status""#, "the status column",
        worker_column: Option<String> = r#""pid""#, "the column naming the job's owner (see owner_format, or a worker name); \"\" when the table records none (then heartbeats alone judge)",
        unidentified: Unidentified = r#""report""#, "a running job whose worker cannot be identified: report (\"cannot tell whether the worker is alive\", no write) or heartbeat (orphaned when its heartbeat is older than heartbeat_timeout)",
        heartbeat_column: Option<String> = r#""""#, "the heartbeat column of running jobs; \"\" for none",
        heartbeat_sql: Option<String> = r#""""#, "instead of heartbeat_column: an SQL expression giving a running job's heartbeat, read, judged and compared like the column, e.g. (SELECT w.last_heartbeat FROM workers w WHERE w.id = worker_id) for a heartbeat kept in a related table; \"\" for none",
        claimed_column: Option<String> = r#""""#, "the claim or lock time of running jobs: a live process that started after it has a reused pid; \"\" for none",
        updated_column: Option<String> = r#""""#, "the column whose age makes a waiting job stale (e.g. updated_at or created_at); \"\" for none",
        attempts_column: Option<String> = r#""attempts""#, "attempt counter incremented on requeue; \"\" for none",
        reason_column: Option<String> = r#""""#, "column that receives the reason when a job is marked failed; \"\" for none",
        running_statuses: Vec<String> = r#"["running"]"#, "statuses of jobs that should have a live process",
        waiting_statuses: Vec<String> = r#"["pending", "queued"]"#, "statuses of jobs waiting to be picked up",
        requeue_status: String = r#""pending""#, "status a requeued job gets",
        failed_status: String = r#""failed""#, "status a failed job gets",
        #[serde(deserialize_with = "db_common::opt_duration_ms")]
        heartbeat_timeout: Option<u64> = r#""""#, "a running job whose process cannot be named here (no worker column, another host) is orphaned when its heartbeat is older than this (e.g. \"5m\")",
        #[serde(deserialize_with = "db_common::opt_duration_ms")]
        stale_after: Option<u64> = r#""""#, "a waiting job is stale when its updated column is older than this (e.g. \"1h\")",
        on_orphaned: Remedy = r#""requeue""#, "remedy for orphaned running jobs: requeue, fail or report",
        on_stale: Remedy = r#""report""#, "remedy for stale waiting jobs: requeue, fail or report",
        max_attempts: i64 = "3", "a job that already has this many attempts is failed instead of requeued",
        requeue_set: BTreeMap<String, serde_json::Value> = "{}", "further columns a requeue sets: constant, { null = true }, { now = true }, { text = \"...{reason}\" }, { json = { ... } }",
        fail_set: BTreeMap<String, serde_json::Value> = "{}", "further columns marking a job failed sets (an error record the application reads), in the same forms",
        service_user: Option<String> = r#""""#, "the user the server runs as: diagnose whether it can write the database file and directory (a SQLite file; not asked of PostgreSQL)",
        ..identity: IdentityConfig,
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
        let id = c.identity.identity(&c.heartbeat_column, &c.heartbeat_sql)?;
        let sets = Sets::parse(&c, &cols)?;
        // Then what only this host and its table can tell.
        let user = opt_column(&c.service_user);
        let wanted = db_common::configured(&[
            ("id_column", Some(&c.id_column)),
            ("status_column", Some(&c.status_column)),
            ("worker_column", cols.worker),
            ("claimed_column", cols.claimed),
            ("updated_column", cols.upd),
            ("attempts_column", cols.att),
            ("reason_column", cols.reason),
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
        let mut findings: Vec<Finding> = weak.into_iter().collect();
        db_common::check_set_columns(
            &db,
            &c.id_column,
            &[("requeue_set", &sets.requeue), ("fail_set", &sets.fail)],
        )?;
        // Does the table record its workers at all? With neither a worker
        // column nor a pid expression it has declared heartbeat-only judgement.
        let records_worker = cols.worker.is_some() || id.pid_sql.is_some();
        let (hostname, clock) = (host::hostname(), Clock::now(id.unit, c.identity.clock_skew));

        let statuses: Vec<SqlValue> = c
            .running_statuses
            .iter()
            .chain(&c.waiting_statuses)
            .map(|s| SqlValue::Text(s.clone()))
            .collect();
        let marks = db.dialect.marks(1, statuses.len());
        let (t, key, status, identity) = (
            db.table_sql(),
            ident(&c.id_column),
            ident(&c.status_column),
            id.select_list(),
        );
        let [w, upd, att, claimed] =
            [cols.worker, cols.upd, cols.att, cols.claimed].map(db_common::ident_or_null);
        let hb = id.heartbeat_select();
        let sql = format!("SELECT {key}, {status}, {w}, {hb}, {upd}, {att}, {claimed}, {identity} FROM {t} WHERE {status} IN ({marks}) ORDER BY {key}");
        let rows = db.query(&sql, &statuses)?;
        findings.extend(db_common::unwritable_finding(
            &c.db,
            user.unwrap_or_default(),
            &problems,
        ));

        let writes = Writes {
            c: &c,
            db: &db,
            cols: &cols,
            id: &id,
            sets: &sets,
            withheld: !problems.is_empty(),
            clock: &clock,
        };
        let finder = id.name_finder(&scope);
        // Only the processes the running jobs' verdicts look at, read after
        // the rows (so a worker that claimed a job since is seen); none
        // for a table that records no worker.
        let owners = db_common::distinct(&rows.rows)
            .filter(|r| c.running_statuses.contains(&shown(&r[1])))
            .map(|r| id.row(&r[2], &r[7], &r[8]));
        let table = Lookups::of_rows(&id, &c.identity, &hostname, finder.as_ref(), owners)
            .read_if(records_worker, false)?;
        let chk = id.owner_check(c.identity.worker_kind, &table, &hostname, finder.as_ref());
        let mut orphans = Vec::new();
        for r in db_common::distinct(&rows.rows) {
            let name = RowName {
                key: format!("job:{}", shown(&r[0])),
                subject: format!("{} job {}", c.table, shown(&r[0])),
                worker: None,
            };
            let job = Job {
                id: &r[0],
                status: shown(&r[1]),
                status_value: &r[1],
                who: id.row(&r[2], &r[7], &r[8]),
                heartbeat: &r[3],
                updated: &r[4],
                attempts: &r[5],
                claimed: &r[6],
                name,
            };
            findings.extend(match c.running_statuses.contains(&job.status) {
                true => check_running(&writes, &job, &chk, records_worker, &mut orphans),
                false => check_waiting(&writes, &job).into_iter().collect(),
            });
        }
        // One finding per dead owner, first: its jobs written by set-based compare-and-swaps.
        let owners = Orphans {
            db: &db,
            noun: "job",
            consequence: "nothing will finish this work",
            max_findings: db_common::OWNER_FINDINGS,
            overflow_key: "jobs:orphaned-overflow".into(),
        };
        findings.splice(0..0, owners.findings(orphans));
        // The host takes at most 1000 findings per report: the oldest ids first,
        // the rest on the next run (the summary says how many waited).
        let mut summary = summary(&c, &db)?;
        if findings.len() > MAX_JOB_FINDINGS {
            summary = summary.evidence(
                "deferred",
                format!(
                    "{} job finding(s) beyond the first {MAX_JOB_FINDINGS} wait for the next run",
                    findings.len() - MAX_JOB_FINDINGS
                ),
            );
            findings.truncate(MAX_JOB_FINDINGS);
        }
        findings.push(summary);
        Ok(findings)
    }
}

/// The configured columns ("" or absent: the table has none).
struct Columns<'a> {
    worker: Option<&'a str>,
    claimed: Option<&'a str>,
    upd: Option<&'a str>,
    att: Option<&'a str>,
    reason: Option<&'a str>,
}

impl<'a> Columns<'a> {
    fn of(c: &'a Config) -> Self {
        let [worker, claimed, upd, att, reason] = [
            &c.worker_column,
            &c.claimed_column,
            &c.updated_column,
            &c.attempts_column,
            &c.reason_column,
        ]
        .map(opt_column);
        Columns {
            worker,
            claimed,
            upd,
            att,
            reason,
        }
    }
}

/// One job row as the query read it.
struct Job<'a> {
    id: &'a SqlValue,
    status: String,
    status_value: &'a SqlValue,
    /// Its worker column, and the values `worker_pid_sql` and `worker_host_sql` gave.
    who: RowIdentity<'a>,
    heartbeat: &'a SqlValue,
    updated: &'a SqlValue,
    attempts: &'a SqlValue,
    claimed: &'a SqlValue,
    name: RowName,
}

/// A waiting job nothing picked up for longer than `stale_after`.
fn check_waiting(w: &Writes<'_>, job: &Job<'_>) -> Option<Finding> {
    let (c, limit) = (w.c, i64::try_from(w.c.stale_after?).unwrap_or(i64::MAX));
    let stamp = match w.cols.upd.map(|_| w.clock.read(job.updated))? {
        Ok(s) => s,
        Err(trouble) => {
            return Some(job.name.time_finding(
                TimeColumn::Updated,
                w.cols.upd,
                job.updated,
                &trouble,
                "whether the job is stale cannot be told",
            ))
        }
    };
    let age = w.clock.now_ms.saturating_sub(stamp.unix_ms);
    if age <= limit {
        return None;
    }
    let why = format!(
        "it has been {} for {} (stale after {})",
        job.status,
        human_ms(age),
        human_ms(limit)
    );
    let f = Finding::warning(
        format!("{}:stale", job.name.key),
        &job.name.subject,
        format!(
            "job {} is {} but nothing picked it up: {why}",
            shown(job.id),
            job.status
        ),
    );
    let (write, evidence) = w.remedy(job, c.on_stale, &why);
    let f = f
        .evidence("updated_read_as", &stamp.read_as)
        .evidence("worker", job.who.shown())
        .evidence("reason", &why);
    let what = format!("job {}", shown(job.id));
    Some(db_common::one_row(f, w.db, &what, write, evidence))
}

fn check_running(
    w: &Writes<'_>,
    job: &Job<'_>,
    chk: &OwnerCheck<'_>,
    records_worker: bool,
    orphans: &mut Vec<Orphan>,
) -> Vec<Finding> {
    let (c, mut out) = (w.c, Vec::new());
    // The heartbeat as read, or its own finding when it cannot be used.
    let hb = w.id.heartbeat_name();
    let beat = w.clock.heartbeat(hb, job.heartbeat, c.heartbeat_timeout);
    if let Heartbeat::Unusable(trouble) = &beat {
        out.push(job.name.time_finding(
            TimeColumn::Heartbeat,
            hb,
            job.heartbeat,
            trouble,
            "the job cannot be judged by its heartbeat",
        ));
    }
    let claimed_ms = job
        .name
        .claimed_ms(w.clock, w.cols.claimed, job.claimed, &mut out);
    let hb_text = || match &beat {
        Heartbeat::Read { stamp, age, .. } => format!(
            "its last heartbeat is {} old (timeout {}; read as {})",
            human_ms(*age),
            human_ms(c.heartbeat_timeout.unwrap_or(0) as i64),
            stamp.read_as
        ),
        _ => String::new(),
    };
    // A host expression alone still tells another host's job from this host's.
    let alive = match records_worker || job.who.host.is_some() {
        true => row_liveness(&job.who, chk, claimed_ms),
        false => Liveness::Unknown("the table records no worker".into()),
    };
    // A table that records no worker (worker_column = "") has declared heartbeat-only judgement.
    let by_heartbeat = c.unidentified == Unidentified::Heartbeat || !records_worker;
    let (id, status, worker) = (shown(job.id), &job.status, job.who.shown());
    let unknown_worker = |message: String| {
        Finding::warning(
            format!("{}:unknown-worker", job.name.key),
            &job.name.subject,
            message,
        )
        .evidence("worker", &worker)
    };
    let why = match alive {
        Liveness::Alive(procs) => {
            // The very process is alive: never touched, at most reported.
            if let Heartbeat::Read {
                age,
                stale: Some(true),
                ..
            } = beat
            {
                let message = format!("job {id} is {status} and its process (pid {}) is alive, but its last heartbeat is {} old; it is left alone", pid_list(&procs.iter().collect::<Vec<_>>()), human_ms(age));
                out.push(
                    Finding::warning(format!("{}:hung", job.name.key), &job.name.subject, message)
                        .evidence("worker", shown(job.who.worker))
                        .evidence("heartbeat", shown(job.heartbeat)),
                );
            }
            return out;
        }
        Liveness::Dead(why) => why,
        Liveness::Remote(host) if beat.is_stale() => {
            format!("its owner is on host {host} and {}", hb_text())
        }
        // Another host's job with nothing to judge it by: said, never guessed.
        Liveness::Remote(host) if hb.is_none() || c.heartbeat_timeout.is_none() => {
            out.push(unknown_worker(format!("job {id} is {status} for worker {worker} on host {host}; local pids say nothing about it, and without heartbeat_column (or heartbeat_sql) and heartbeat_timeout it cannot be judged, so it is left alone")));
            return out;
        }
        Liveness::Unknown(why) if by_heartbeat && beat.is_stale() => {
            format!("{why} and {}", hb_text())
        }
        // No identity, and no opt-in to judge by heartbeat: a live worker's
        // task may look exactly like this, so it is said and never written.
        Liveness::Unknown(why) if !by_heartbeat => {
            out.push(unknown_worker(format!("job {id} is {status} but doctor cannot tell whether the worker is alive: {why}; no write is proposed (unidentified = \"heartbeat\" would judge such jobs by heartbeat_timeout)")));
            return out;
        }
        Liveness::Remote(_) | Liveness::Unknown(_) => return out,
    };
    let (write, mut evidence) = w.remedy(job, c.on_orphaned, &why);
    evidence.extend(beat.read_as().map(|r| ("heartbeat_read_as", r.to_string())));
    orphans.push(Orphan {
        owner: worker,
        id,
        status: status.clone(),
        why,
        write,
        evidence,
    });
    out
}

/// The policy's further columns for each remedy. Each value must be a known
/// form, and no column one the remedy writes itself (then, on the host,
/// `db_common::check_set_columns`).
struct Sets {
    requeue: Vec<(String, SetValue)>,
    fail: Vec<(String, SetValue)>,
}

impl Sets {
    fn parse(c: &Config, cols: &Columns) -> Result<Sets, Error> {
        let (id, status) = (c.id_column.as_str(), c.status_column.as_str());
        let requeue_own: Vec<&str> = [Some(id), Some(status), cols.worker, cols.att, cols.upd]
            .into_iter()
            .flatten()
            .collect();
        let fail_own: Vec<&str> = [Some(id), Some(status), cols.reason]
            .into_iter()
            .flatten()
            .collect();
        Ok(Sets {
            requeue: db_common::parse_sets("requeue_set", &c.requeue_set, &requeue_own)?,
            fail: db_common::parse_sets("fail_set", &c.fail_set, &fail_own)?,
        })
    }
}

/// Builds the compare-and-swap writes for one job.
struct Writes<'a> {
    c: &'a Config,
    db: &'a Db,
    cols: &'a Columns<'a>,
    id: &'a Identity,
    sets: &'a Sets,
    withheld: bool,
    clock: &'a Clock,
}

impl Writes<'_> {
    /// The job's write for `remedy` (a requeue whose attempts ran out is a
    /// fail; none for `report` or while writes are withheld), and what its
    /// finding says of it.
    fn remedy(&self, job: &Job<'_>, remedy: Remedy, why: &str) -> (RowWrite, RowEvidence) {
        let c = self.c;
        let attempts = integer(job.attempts).unwrap_or(0);
        let exhausted = self.cols.att.is_some() && attempts >= c.max_attempts;
        let remedy = if remedy == Remedy::Requeue && exhausted {
            Remedy::Fail
        } else {
            remedy
        };
        let mut evidence = vec![
            ("status", job.status.clone()),
            ("remedy", format!("{remedy:?}").to_lowercase()),
        ];
        evidence.extend(self.cols.att.map(|_| ("attempts", attempts.to_string())));
        if remedy == Remedy::Report || self.withheld {
            evidence.extend(self.withheld.then(|| ("write", WITHHELD.to_string())));
            return (None, evidence);
        }
        let reason = match exhausted {
            true => format!(
                "doctor: {why}; gave up after {attempts} attempt(s) (max_attempts {})",
                c.max_attempts
            ),
            false => format!("doctor: {why}"),
        };
        let (mut st, does, extra) = match remedy {
            Remedy::Requeue => (
                self.requeue(job),
                format!("requeue as {}", c.requeue_status),
                &self.sets.requeue,
            ),
            _ => {
                let mut st = Update::default();
                st.set(&c.status_column, SqlValue::Text(c.failed_status.clone()));
                if let Some(r) = self.cols.reason {
                    st.set(r, SqlValue::Text(reason.clone()));
                }
                evidence.push(("failure_reason", reason.clone()));
                (
                    st,
                    format!("mark {}: {reason}", c.failed_status),
                    &self.sets.fail,
                )
            }
        };
        // The application's own columns, in the same statement.
        let facts = self.placeholders(job, remedy, &reason);
        for (column, value) in extra {
            st.set_to(self.db, column, value, &facts, &|unit| {
                self.now_in(unit, job)
            });
        }
        // Compare-and-swap on the row exactly as this check saw it, and on the
        // identity the verdict rests on: a new worker's pid in the JSON means hands off.
        st.key(ident(&c.id_column), job.id.clone())
            .unchanged(ident(&c.status_column), job.status_value.clone());
        let cols = self.cols;
        st.unchanged_columns([(cols.worker, job.who.worker)])
            .unchanged_each(self.id.unchanged_beat(job.heartbeat))
            .unchanged_columns([
                (cols.upd, job.updated),
                (cols.att, job.attempts),
                (cols.claimed, job.claimed),
            ])
            .unchanged_each(self.id.unchanged(
                job.who.pid.unwrap_or(&SqlValue::Null),
                job.who.host.unwrap_or(&SqlValue::Null),
            ));
        (Some((st, does)), evidence)
    }

    /// SET status = requeue_status, the worker cleared, attempts + 1, the update time now.
    fn requeue(&self, job: &Job<'_>) -> Update {
        let (c, mut st) = (self.c, Update::default());
        st.set(&c.status_column, SqlValue::Text(c.requeue_status.clone()));
        if let Some(w) = self.cols.worker {
            st.set_sql(format!("{} = NULL", ident(w)));
        }
        if let Some(a) = self.cols.att {
            st.set_sql(format!("{a} = COALESCE({a}, 0) + 1", a = ident(a)));
        }
        if let Some(u) = self.cols.upd {
            // "Now" in the unit the column already uses (as read, else as declared).
            let unit = self
                .clock
                .read(job.updated)
                .map(|s| s.unit)
                .unwrap_or(self.clock.unit);
            st.set_now(self.db, u, unit, self.clock.now_ms);
        }
        st
    }

    /// "Now" in `unit`, or in the table's unit: as declared, else as this row's times were read, else seconds.
    fn now_in(&self, unit: Option<TimeUnit>, job: &Job<'_>) -> SqlValue {
        let cols = self.cols;
        let read = [
            (self.id.heartbeat_name(), job.heartbeat),
            (cols.claimed, job.claimed),
            (cols.upd, job.updated),
        ]
        .into_iter()
        .find_map(|(col, v)| col.and_then(|_| self.clock.read(v).ok()).map(|s| s.unit));
        let unit = unit
            .or(Some(self.clock.unit).filter(|u| *u != TimeUnit::Auto))
            .or(read)
            .unwrap_or(TimeUnit::Seconds);
        now_value(unit, self.clock.now_ms)
            .unwrap_or_else(|| SqlValue::Text(iso8601_utc(self.clock.now_ms)))
    }

    /// What `{reason}`, `{pid}`, ... stand for in a `text` or `json` value.
    fn placeholders(&self, job: &Job<'_>, remedy: Remedy, reason: &str) -> Placeholders {
        let shown_opt = |v: Option<&SqlValue>| v.map(shown).unwrap_or_default();
        let (attempts, remedy, now) = (
            integer(job.attempts).unwrap_or(0).to_string(),
            format!("{remedy:?}").to_lowercase(),
            iso8601_utc(self.clock.now_ms),
        );
        let facts = [
            ("reason", reason.to_string()),
            ("id", shown(job.id)),
            ("worker", shown(job.who.worker)),
            ("pid", shown_opt(job.who.pid)),
            ("host", shown_opt(job.who.host)),
        ];
        facts
            .into_iter()
            .chain([
                ("status", job.status.clone()),
                ("attempts", attempts),
                ("remedy", remedy),
                ("now", now),
            ])
            .collect()
    }
}

fn summary(c: &Config, db: &Db) -> Result<Finding, Error> {
    let counts = StatusCounts::read(db, &c.status_column)?;
    let text: Vec<String> = counts
        .by_status
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    let message = format!(
        "{}: {} job(s){}{}",
        c.table,
        counts.total,
        if text.is_empty() { "" } else { ": " },
        text.join(", ")
    );
    Ok(counts.evidence(
        Finding::info(
            format!("table:{}:summary", c.table),
            format!("table {}", c.table),
            message,
        )
        .evidence("total", counts.total),
    ))
}

register_plugin!(JobHealth);

#[cfg(test)]
mod tests;
