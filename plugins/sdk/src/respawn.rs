//! Telling a respawn from a fix. A process that a supervisor (a shell loop,
//! a process manager, a systemd unit with `Restart=`) restarts comes back
//! right after it was stopped: the re-check sees a process of the same
//! target, so "fixed" would be wrong, and stopping it again and again would
//! only feed the flap breaker. Before proposing a stop, a plugin remembers
//! the processes it would stop (in its key/value state); the next look asks
//! whether they were replaced by new processes of the same parent or unit.

use crate::host;
use crate::processes::Process;
use crate::scope::{command_line, ProcessTable};

const PREFIX: &str = "respawn:";

/// Remember the processes a stop is planned for, under `target`.
pub fn remember_stopping(target: &str, procs: &[&Process]) {
    let record = serde_json::json!({
        "at": host::now_unix_ms(),
        "procs": procs.iter().map(|p| serde_json::json!([p.id.pid, p.id.start_time, p.ppid, p.cgroup])).collect::<Vec<_>>(),
    });
    host::kv_set(&format!("{PREFIX}{target}"), &record.to_string());
}

/// Nothing of `target` runs any more: forget it.
pub fn forget(target: &str) {
    host::kv_delete(&format!("{PREFIX}{target}"));
}

/// Who restarted `target`, when the processes remembered for it are gone and
/// `current` holds a newer one with the same parent (or, for children of
/// pid 1, the same systemd unit): `parent pid 812 (sh -c while ...)` or
/// `systemd unit trader.service`.
pub fn respawned_by(target: &str, current: &[&Process], table: &ProcessTable) -> Option<String> {
    let text = host::kv_get(&format!("{PREFIX}{target}"))?;
    let record: serde_json::Value = serde_json::from_str(&text).ok()?;
    let at = record["at"].as_u64()?;
    let remembered: Vec<(u32, u64, u32, Option<String>)> =
        serde_json::from_value(record["procs"].clone()).ok()?;
    judge(at, &remembered, current, table)
}

fn judge(
    at: u64,
    remembered: &[(u32, u64, u32, Option<String>)],
    current: &[&Process],
    table: &ProcessTable,
) -> Option<String> {
    let still_there = |pid: u32, start: u64| {
        current
            .iter()
            .any(|p| p.id.pid == pid && p.id.start_time == start)
    };
    let gone: Vec<&(u32, u64, u32, Option<String>)> = remembered
        .iter()
        .filter(|r| !still_there(r.0, r.1))
        .collect();
    if gone.is_empty() {
        return None;
    }
    // Started after the stop was planned (a second of slack for the clock's rounding).
    let new = current.iter().filter(|p| {
        !remembered
            .iter()
            .any(|r| r.0 == p.id.pid && r.1 == p.id.start_time)
            && p.started_unix_ms + 1000 >= at
    });
    for p in new {
        for (_, _, ppid, cgroup) in &gone {
            if p.ppid == *ppid && *ppid > 1 {
                return Some(match table.get(*ppid) {
                    Some(parent) => format!("parent pid {ppid} ({})", command_line(parent)),
                    None => format!("parent pid {ppid}"),
                });
            }
            if p.ppid <= 1 && *ppid <= 1 {
                if let (Some(unit), Some(old)) = (
                    p.cgroup.as_deref().and_then(unit_of),
                    cgroup.as_deref().and_then(unit_of),
                ) {
                    if unit == old {
                        return Some(format!("systemd unit {unit}"));
                    }
                }
            }
        }
    }
    None
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
            name: "x".into(),
            exe: None,
            argv: argv.split(' ').map(str::to_string).collect(),
            cgroup: Some(cgroup.into()),
            started_unix_ms: started_ms,
            kernel_thread: false,
        }
    }

    #[test]
    fn a_new_child_of_the_same_parent_is_a_respawn() {
        let table = ProcessTable::new(vec![
            proc(50, 1, 1, "sh -c while :; do sleep 9; done", "/", 0),
            proc(61, 9, 50, "sleep 9", "/", 10_000),
        ]);
        let current: Vec<&Process> = vec![table.get(61).unwrap()];
        let remembered = [(60, 8, 50, Some("/".to_string()))];
        assert_eq!(
            judge(9_500, &remembered, &current, &table).as_deref(),
            Some("parent pid 50 (sh -c while :; do sleep 9; done)")
        );
        // The remembered process still runs: not a respawn.
        let same = [(61, 9, 50, Some("/".to_string()))];
        assert_eq!(judge(9_500, &same, &current, &table), None);
        // An older process of the same parent was there before the stop was planned.
        assert_eq!(judge(20_000, &remembered, &current, &table), None);
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
        let remembered = [(69, 2, 1, Some("/system.slice/app.service".to_string()))];
        assert_eq!(
            judge(4_500, &remembered, &current, &table).as_deref(),
            Some("systemd unit app.service")
        );
    }
}
