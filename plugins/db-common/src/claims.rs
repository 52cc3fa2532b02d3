//! A claimed row: one a worker took (`running`), naming its owner, perhaps
//! with a claim time and a heartbeat. Both database plugins judge it alike:
//! its times are read by one clock and an unusable one is a finding of its
//! own, never silence; its claim time exposes a reused pid; an owner on
//! another host is judged by its heartbeat alone; and only a worker the row
//! names by pid (or the scope vouches for) may be stopped. What an orphaned
//! row then gets (a reset, a requeue, a report) is each plugin's own.

use crate::{claim_time, read_at, shown, time_finding, TimeColumn, TimeTrouble};
use doctor_sdk::prelude::*;
use doctor_sdk::processes::Process;
use doctor_sdk::scope::{ProcessTable, ScopeMatcher};
use doctor_sdk::time::{Stamp, TimeUnit};

/// This run's clock, and how the table's times are read against it.
pub struct Clock {
    pub unit: TimeUnit,
    pub now_ms: i64,
    /// How far ahead of this host's clock a time may be (`clock_skew`).
    pub skew_ms: i64,
}

impl Clock {
    pub fn now(unit: TimeUnit, skew_ms: u64) -> Clock {
        Clock {
            unit,
            now_ms: i64::try_from(host::now_unix_ms()).unwrap_or(i64::MAX),
            skew_ms: i64::try_from(skew_ms).unwrap_or(i64::MAX),
        }
    }

    /// A time a judgement may rely on: readable, and not in the future.
    pub fn read(&self, value: &SqlValue) -> Result<Stamp, TimeTrouble> {
        read_at(value, self.unit, self.now_ms, self.skew_ms)
    }

    /// The row's heartbeat (`column` None: the table keeps none), against `timeout_ms`.
    pub fn heartbeat(
        &self,
        column: Option<&str>,
        value: &SqlValue,
        timeout_ms: Option<u64>,
    ) -> Heartbeat {
        match column.map(|_| self.read(value)) {
            None => Heartbeat::NotKept,
            Some(Err(trouble)) => Heartbeat::Unusable(trouble),
            Some(Ok(stamp)) => {
                let age = self.now_ms.saturating_sub(stamp.unix_ms);
                Heartbeat::Read {
                    stale: timeout_ms.map(|limit| age > i64::try_from(limit).unwrap_or(i64::MAX)),
                    age,
                    stamp,
                }
            }
        }
    }
}

/// A claimed row's heartbeat, as a verdict may use it.
pub enum Heartbeat {
    /// No heartbeat column is configured.
    NotKept,
    /// Unreadable, or ahead of this host's clock: a finding of its own.
    Unusable(TimeTrouble),
    /// Read: its age, and whether that is beyond `heartbeat_timeout` (None: no timeout to judge it by).
    Read {
        stamp: Stamp,
        age: i64,
        stale: Option<bool>,
    },
}

impl Heartbeat {
    pub fn is_stale(&self) -> bool {
        matches!(
            self,
            Heartbeat::Read {
                stale: Some(true),
                ..
            }
        )
    }

    pub fn read_as(&self) -> Option<&str> {
        match self {
            Heartbeat::Read { stamp, .. } => Some(&stamp.read_as),
            _ => None,
        }
    }
}

/// How findings name one row: the key prefix (`chunk:chunks:7`, `job:7`),
/// the subject (`chunks chunk 7`), and the worker, when its time findings
/// carry it as evidence.
pub struct RowName {
    pub key: String,
    pub subject: String,
    pub worker: Option<String>,
}

impl RowName {
    /// A time of this row that cannot be used (unreadable, or in the future).
    pub fn time_finding(
        &self,
        which: TimeColumn,
        column: Option<&str>,
        value: &SqlValue,
        trouble: &TimeTrouble,
        consequence: &str,
    ) -> Finding {
        let f = time_finding(
            &self.key,
            &self.subject,
            which,
            column.unwrap_or_default(),
            value,
            trouble,
            consequence,
        );
        match &self.worker {
            Some(worker) => f.evidence("worker", worker),
            None => f,
        }
    }

    /// The claim time as proof of a reused pid (see [`claim_time`]); one in
    /// the future withdraws that proof and is a finding, pushed to `findings`.
    pub fn claimed_ms(
        &self,
        clock: &Clock,
        column: Option<&str>,
        value: &SqlValue,
        findings: &mut Vec<Finding>,
    ) -> Option<i64> {
        claim_time(&clock.read(value)).unwrap_or_else(|trouble| {
            findings.push(self.time_finding(
                TimeColumn::Claimed,
                column,
                value,
                trouble,
                "a reused pid cannot be told by it",
            ));
            None
        })
    }
}

/// The rows as read, each key once: a non-unique id column gives one
/// verdict (and one finding) per id, whose write then trips `max-rows`.
pub fn distinct(rows: &[Vec<SqlValue>]) -> impl Iterator<Item = &Vec<SqlValue>> {
    let mut seen = std::collections::BTreeSet::new();
    rows.iter()
        .filter(move |row| row.first().is_some_and(|key| seen.insert(shown(key))))
}

/// May a live worker that an orphaned row names be stopped? Only when the
/// row names it by pid (its identity checked by liveness) and it lies inside
/// the scope when one is named; a worker found by name needs the scope to
/// vouch for it. Never every process matching a pattern.
pub fn may_stop(by_pid: bool, scope: &ScopeMatcher, table: &ProcessTable, p: &Process) -> bool {
    match by_pid {
        true => scope.is_unscoped() || scope.contains(p, table),
        false => !scope.is_unscoped() && scope.contains(p, table),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn clock() -> Clock {
        Clock {
            unit: TimeUnit::Auto,
            now_ms: NOW,
            skew_ms: 120_000,
        }
    }

    #[test]
    fn a_heartbeat_is_judged_only_when_kept_readable_and_timed() {
        let at = |secs_ago: i64| SqlValue::Integer(NOW / 1000 - secs_ago);
        assert!(matches!(
            clock().heartbeat(None, &at(10), Some(1000)),
            Heartbeat::NotKept
        ));
        assert!(matches!(
            clock().heartbeat(Some("hb"), &SqlValue::Null, Some(1000)),
            Heartbeat::Unusable(TimeTrouble::Unreadable(_))
        ));
        assert!(matches!(
            clock().heartbeat(Some("hb"), &at(-3600), Some(1000)),
            Heartbeat::Unusable(TimeTrouble::Future(..))
        ));
        assert!(clock()
            .heartbeat(Some("hb"), &at(10), Some(1000))
            .is_stale());
        assert!(!clock()
            .heartbeat(Some("hb"), &at(10), Some(60_000))
            .is_stale());
        let untimed = clock().heartbeat(Some("hb"), &at(10), None);
        assert!(
            matches!(
                untimed,
                Heartbeat::Read {
                    age: 10_000,
                    stale: None,
                    ..
                }
            ) && !untimed.is_stale()
                && untimed.read_as().is_some()
        );
    }

    #[test]
    fn a_claim_time_ahead_of_the_clock_is_a_finding_and_no_proof() {
        let name = RowName {
            key: "job:7".into(),
            subject: "jobs job 7".into(),
            worker: Some("42".into()),
        };
        let mut findings = Vec::new();
        assert_eq!(
            name.claimed_ms(
                &clock(),
                Some("claimed_at"),
                &SqlValue::Integer(1_700_000_000),
                &mut findings
            ),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            name.claimed_ms(&clock(), None, &SqlValue::Null, &mut findings),
            None
        );
        assert!(
            findings.is_empty(),
            "an unreadable claim time only withdraws the proof"
        );
        assert_eq!(
            name.claimed_ms(
                &clock(),
                Some("claimed_at"),
                &SqlValue::Integer(1_900_000_000),
                &mut findings
            ),
            None
        );
        assert_eq!(
            findings.iter().map(|f| f.key()).collect::<Vec<_>>(),
            ["job:7:claimed-future"]
        );
    }

    #[test]
    fn each_key_is_judged_once() {
        let row = |k: i64| vec![SqlValue::Integer(k), SqlValue::Null];
        let rows = [row(1), row(2), row(1), row(3)];
        assert_eq!(
            distinct(&rows).map(|r| shown(&r[0])).collect::<Vec<_>>(),
            ["1", "2", "3"]
        );
    }

    #[test]
    fn only_a_worker_named_by_pid_or_vouched_for_by_the_scope_may_be_stopped() {
        let table = ProcessTable::new(vec![doctor_sdk::testing::process(10, "python3 worker.py")]);
        let p = &table.all()[0];
        let unscoped = doctor_sdk::scope::Scope::Unscoped.compile("scope").unwrap();
        let host: doctor_sdk::scope::Scope = serde_json::from_str("\"host\"").unwrap();
        let host = host.compile("scope").unwrap();
        assert!(may_stop(true, &unscoped, &table, p));
        assert!(
            !may_stop(false, &unscoped, &table, p),
            "a name alone, unscoped, vouches for nothing"
        );
        assert!(may_stop(false, &host, &table, p));
    }
}
