//! Telling a respawn from a fix. A process that a supervisor (a shell loop,
//! a process manager, a systemd unit with `Restart=`) restarts comes back
//! after it was stopped: a later look sees a process of the same target, so
//! "fixed" would be wrong, and stopping it again and again would only feed
//! the flap breaker. Before proposing a stop, a plugin remembers the
//! processes it would stop (in its key/value state); every later look judges
//! that record:
//!
//! * an instance runs: [`respawned_by`] says whether it replaced the
//!   remembered ones (a new process of the same parent, of a known process
//!   manager, or of the same systemd unit); if not, the plugin plans a new
//!   stop and remembers that one instead;
//! * nothing runs: [`not_running`]. The first such look keeps the record,
//!   because in `fix` it is the stop's own re-check, a second after the
//!   stop, and a manager slower than that has not restarted the process yet;
//!   the next look that finds nothing drops it.
//!
//! So a stop is remembered until a later run has judged it, and a slow
//! respawn is reported from the first run that sees it.

use crate::host;
use crate::processes::Process;
use crate::scope::{command_line, ProcessTable};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "respawn:";

/// Programs whose children are restarted when they exit. A new child of one
/// of them is a respawn even when the stopped process had another parent
/// (the manager itself was restarted, or the process was first started by
/// hand). Matched against the program, or the script an interpreter runs
/// (`python3 /usr/bin/supervisord`); PM2 titles its daemon `PM2 vX: God Daemon`.
const MANAGERS: &[&str] = &[
    "supervisord",
    "runsv",
    "s6-supervise",
    "circusd",
    "monit",
    "PM2",
    "systemd",
];

/// The state kept under `respawn:TARGET`.
#[derive(Serialize, Deserialize)]
struct Record {
    /// When the stop was planned (unix ms).
    at: u64,
    procs: Vec<Stopping>,
    /// A look since `at` found no instance (usually the stop's own re-check).
    #[serde(default)]
    absent_once: bool,
}

/// A process a stop was planned for, with its parent's identity.
#[derive(Serialize, Deserialize)]
struct Stopping {
    pid: u32,
    start: u64,
    ppid: u32,
    parent_start: Option<u64>,
    cgroup: Option<String>,
}

fn key(target: &str) -> String {
    format!("{PREFIX}{target}")
}

fn load(target: &str) -> Option<Record> {
    serde_json::from_str(&host::kv_get(&key(target))?).ok()
}

fn save(target: &str, record: &Record) {
    if let Ok(text) = serde_json::to_string(record) {
        host::kv_set(&key(target), &text);
    }
}

/// Remember the processes a stop is planned for, under `target` (replacing
/// what was remembered before).
pub fn remember_stopping(target: &str, procs: &[&Process], table: &ProcessTable) {
    let procs = procs
        .iter()
        .map(|p| Stopping {
            pid: p.id.pid,
            start: p.id.start_time,
            ppid: p.ppid,
            parent_start: table.get(p.ppid).map(|parent| parent.id.start_time),
            cgroup: p.cgroup.clone(),
        })
        .collect();
    let at = host::now_unix_ms();
    save(
        target,
        &Record {
            at,
            procs,
            absent_once: false,
        },
    );
}

/// No instance of `target` runs. The first such look after a stop was
/// planned keeps the record (see the module's text); the next one drops it.
pub fn not_running(target: &str) {
    match load(target) {
        Some(record) if !record.absent_once => save(
            target,
            &Record {
                absent_once: true,
                ..record
            },
        ),
        // Judged absent before, nothing remembered, or a record this SDK cannot read.
        _ => forget(target),
    }
}

/// Drop what is remembered for `target` now.
pub fn forget(target: &str) {
    host::kv_delete(&key(target));
}

/// Who restarted `target`, when the processes remembered for it are gone and
/// `current` holds one started since the stop was planned, by the same
/// parent (pid and start time), by a known process manager,
/// or (both children of pid 1) in the same systemd unit:
/// `parent pid 812 (sh -c while ...)` or `systemd unit trader.service`. The
/// record is kept, so every later look says so too while the respawned
/// process runs.
pub fn respawned_by(target: &str, current: &[&Process], table: &ProcessTable) -> Option<String> {
    let mut record = load(target)?;
    let by = judge(&record, current, table)?;
    // Seen back: it takes two looks without it again to drop the record (a
    // crash-looping process may be caught between two restarts).
    if record.absent_once {
        record.absent_once = false;
        save(target, &record);
    }
    Some(by)
}

fn judge(record: &Record, current: &[&Process], table: &ProcessTable) -> Option<String> {
    let is = |s: &Stopping, p: &Process| s.pid == p.id.pid && s.start == p.id.start_time;
    let gone: Vec<&Stopping> = record
        .procs
        .iter()
        .filter(|s| !current.iter().any(|p| is(s, p)))
        .collect();
    if gone.is_empty() {
        return None;
    }
    // Started after the stop was planned (a second of slack for the clock's rounding).
    let new = current.iter().filter(|p| {
        !record.procs.iter().any(|s| is(s, p)) && p.started_unix_ms + 1000 >= record.at
    });
    for p in new {
        let parent = table.get(p.ppid);
        // The parent of a stopped process, unless its pid now names another
        // process (a start time that was known and differs).
        let same_parent = gone.iter().any(|s| {
            s.ppid == p.ppid
                && match (s.parent_start, parent) {
                    (Some(then), Some(now)) => then == now.id.start_time,
                    _ => true,
                }
        });
        if p.ppid > 1 && (same_parent || parent.is_some_and(is_manager)) {
            return Some(match parent {
                Some(parent) => format!("parent pid {} ({})", p.ppid, command_line(parent)),
                None => format!("parent pid {}", p.ppid),
            });
        }
        // Children of pid 1: systemd restarted them when the unit is the same.
        let unit = p.cgroup.as_deref().and_then(unit_of);
        let same_unit =
            |s: &&Stopping| s.ppid <= 1 && s.cgroup.as_deref().and_then(unit_of) == unit;
        if let (true, Some(unit)) = (p.ppid <= 1 && gone.iter().any(same_unit), unit) {
            return Some(format!("systemd unit {unit}"));
        }
    }
    None
}

/// Is `p` one of the [`MANAGERS`]: its program, or the script its
/// interpreter runs?
fn is_manager(p: &Process) -> bool {
    let line = command_line(p);
    let mut words = line
        .split_whitespace()
        .map(|w| w.rsplit('/').next().unwrap_or(w));
    let program = words.next().unwrap_or_default();
    let interpreted = ["python", "node", "perl", "ruby"]
        .iter()
        .any(|i| program.starts_with(i));
    let script = words.next().filter(|_| interpreted).unwrap_or_default();
    MANAGERS
        .iter()
        .any(|m| *m == program || *m == script || *m == p.name)
}

/// The innermost `.service` component of a cgroup path.
pub fn unit_of(cgroup: &str) -> Option<&str> {
    cgroup
        .split('/')
        .rev()
        .find(|part| part.ends_with(".service"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{answer_with, Facts};
    use crate::ProcessRef;

    fn proc(pid: u32, start: u64, ppid: u32, argv: &str, cgroup: &str, started_ms: u64) -> Process {
        Process {
            id: ProcessRef {
                pid,
                start_time: start,
            },
            ppid,
            uid: 0,
            state: "S".into(),
            name: argv.split(' ').next().unwrap_or_default().into(),
            exe: None,
            argv: argv.split(' ').map(str::to_string).collect(),
            cgroup: Some(cgroup.into()),
            started_unix_ms: started_ms,
            kernel_thread: false,
        }
    }

    fn stopping(
        pid: u32,
        start: u64,
        ppid: u32,
        parent_start: Option<u64>,
        cgroup: &str,
    ) -> Stopping {
        Stopping {
            pid,
            start,
            ppid,
            parent_start,
            cgroup: Some(cgroup.into()),
        }
    }

    fn record(at: u64, procs: Vec<Stopping>) -> Record {
        Record {
            at,
            procs,
            absent_once: false,
        }
    }

    #[test]
    fn a_new_child_of_the_same_parent_is_a_respawn() {
        let table = ProcessTable::new(vec![
            proc(50, 1, 1, "sh -c while :; do sleep 9; done", "/", 0),
            proc(61, 9, 50, "sleep 9", "/", 10_000),
        ]);
        let current: Vec<&Process> = vec![table.get(61).unwrap()];
        let stopped = || vec![stopping(60, 8, 50, Some(1), "/")];
        assert_eq!(
            judge(&record(9_500, stopped()), &current, &table).as_deref(),
            Some("parent pid 50 (sh -c while :; do sleep 9; done)")
        );
        // The remembered process still runs: not a respawn.
        let same = record(9_500, vec![stopping(61, 9, 50, Some(1), "/")]);
        assert_eq!(judge(&same, &current, &table), None);
        // An older process of the same parent was there before the stop was planned.
        assert_eq!(judge(&record(20_000, stopped()), &current, &table), None);
        // Pid 50 is another process now than the parent of the stopped one.
        let reused = record(9_500, vec![stopping(60, 8, 50, Some(7), "/")]);
        assert_eq!(judge(&reused, &current, &table), None);
    }

    #[test]
    fn a_new_child_of_a_process_manager_is_a_respawn_whoever_started_the_old_one() {
        let table = ProcessTable::new(vec![
            proc(40, 1, 1, "/usr/bin/python3 /usr/bin/supervisord -n", "/", 0),
            proc(41, 2, 1, "bash -l", "/", 0),
            proc(62, 9, 40, "app --serve", "/", 10_000),
            proc(63, 9, 41, "app --serve", "/", 10_000),
        ]);
        // Stopped: a process started by hand from a shell that is gone.
        let stopped = || record(9_500, vec![stopping(60, 8, 30, Some(1), "/")]);
        let by_manager: Vec<&Process> = vec![table.get(62).unwrap()];
        assert_eq!(
            judge(&stopped(), &by_manager, &table).as_deref(),
            Some("parent pid 40 (/usr/bin/python3 /usr/bin/supervisord -n)")
        );
        // A new child of some other shell is a new instance, not a respawn.
        let by_hand: Vec<&Process> = vec![table.get(63).unwrap()];
        assert_eq!(judge(&stopped(), &by_hand, &table), None);
        let pm2 = proc(70, 1, 1, "PM2 v5.3.0: God Daemon (/root/.pm2)", "/", 0);
        assert!(is_manager(&pm2) && !is_manager(table.get(41).unwrap()));
        assert!(!is_manager(&proc(71, 1, 1, "vim supervisord", "/", 0)));
    }

    #[test]
    fn systemd_restarts_are_named_by_unit() {
        let table = ProcessTable::new(vec![proc(
            70,
            3,
            1,
            "app",
            "/system.slice/app.service",
            5_000,
        )]);
        let current: Vec<&Process> = vec![table.get(70).unwrap()];
        let stopped = record(
            4_500,
            vec![stopping(69, 2, 1, None, "/system.slice/app.service")],
        );
        assert_eq!(
            judge(&stopped, &current, &table).as_deref(),
            Some("systemd unit app.service")
        );
        let other = record(
            4_500,
            vec![stopping(69, 2, 1, None, "/system.slice/b.service")],
        );
        assert_eq!(judge(&other, &current, &table), None);
    }

    /// The record outlives the stop's own re-check: check, fix (stop, then
    /// a re-check that finds nothing), and the respawn a later run sees.
    #[test]
    fn a_stop_is_remembered_until_a_later_look_judges_it() {
        let parent = proc(50, 1, 1, "sh -c loop", "/", 0);
        let old = proc(60, 8, 50, "sleep 9", "/", 1_000);
        let new = proc(61, 9, 50, "sleep 9", "/", 12_000);
        let table = ProcessTable::new(vec![parent.clone(), old.clone()]);
        let facts = Facts::new().now(10_000);
        let kv = answer_with(facts, || {
            remember_stopping("t", &[&old], &table);
            not_running("t"); // the fix's re-check, before the respawn
            let after = ProcessTable::new(vec![parent.clone(), new.clone()]);
            let by = respawned_by("t", &[after.get(61).unwrap()], &after);
            assert_eq!(by.as_deref(), Some("parent pid 50 (sh -c loop)"));
            // ... and again on the run after that.
            let by = respawned_by("t", &[after.get(61).unwrap()], &after);
            assert_eq!(by.as_deref(), Some("parent pid 50 (sh -c loop)"));
            // Supervisor and process gone: two looks without them drop it.
            not_running("t");
            assert!(host::kv_get("respawn:t").is_some());
            not_running("t");
            host::kv_get("respawn:t")
        });
        assert_eq!(kv, None);
    }
}
