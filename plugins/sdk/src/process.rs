//! Processes as every plugin names, trusts and stops them. A pid alone
//! names nothing: it is reused, so a process is trusted only with its start
//! time (`ProcessRef`), or when a PID file's claim survives the checks in
//! [`read_pid_file`]. Stops are the host's TERM → grace → KILL
//! ([`Finding::stop`](crate::Finding::stop)), pinned to that identity.

use crate::processes::Process;
use crate::scope::ScopeMatcher;
pub use crate::scope::{command_line, is_live, ProcessTable};
use crate::{files, Error, ProcessRef};
use regex_lite::Regex;

/// `42, 43`: the pids of `procs`, for a message.
pub fn pid_list(procs: &[&Process]) -> String {
    procs
        .iter()
        .map(|p| p.id.pid.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `text` on one line and at most `max` characters (then `…`), for
/// messages; evidence keeps a command line whole.
pub fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max).collect::<String>())
    }
}

impl ProcessTable {
    /// The live process `id` names: same pid *and* start time, so a reused
    /// pid is never taken for the process that was seen.
    pub fn identified(&self, id: &ProcessRef) -> Option<&Process> {
        self.get(id.pid)
            .filter(|p| p.id.start_time == id.start_time)
    }
}

/// A process that started later than this after its PID file was written
/// cannot have written it. The slack absorbs clock rounding and small clock
/// steps; a wrong verdict here only leaves a process running and reported.
pub const PID_FILE_SLACK_MS: u64 = 60_000;

/// What a PID file says, checked against the process table.
#[derive(Debug)]
pub enum PidFile {
    /// No PID file configured, none on disk, or it names the doctor's own
    /// ancestor (which runs, is not an instance, and is not stale).
    Absent,
    Unreadable(String),
    /// Names a pid that is not running (or is a zombie).
    Stale(u32),
    /// A live process that matches the pattern and is not younger than the file.
    Ours(u32),
    /// A live process that is not the target's (the pid was reused), and why.
    Unrelated(Process, String),
}

/// What a PID file says before it is judged against the process table.
#[derive(Debug)]
pub enum PidFileClaim {
    /// No PID file configured, or none on disk.
    Absent,
    Unreadable(String),
    /// The pid it holds, and when the file was written.
    Pid {
        pid: u32,
        modified_unix_ms: u64,
    },
}

impl PidFileClaim {
    /// The pid the file names, if it names one.
    pub fn pid(&self) -> Option<u32> {
        match self {
            PidFileClaim::Pid { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

/// Read the PID file at `path`: the first half of [`read_pid_file`], for a
/// plugin that asks the host for the process it names alone.
pub fn read_pid_file_claim(path: Option<&str>) -> Result<PidFileClaim, Error> {
    let Some(path) = path else {
        return Ok(PidFileClaim::Absent);
    };
    let Some(stat) = files::stat(path)? else {
        return Ok(PidFileClaim::Absent);
    };
    let text = files::read(path, 4096)?;
    let Ok(pid) = text.trim().parse::<u32>() else {
        return Ok(PidFileClaim::Unreadable(format!(
            "PID file {path} does not hold a pid: {:?}",
            text.trim()
        )));
    };
    Ok(PidFileClaim::Pid {
        pid,
        modified_unix_ms: stat.modified_unix_ms,
    })
}

/// Judge the process a PID file's claim names (see [`read_pid_file`]);
/// `table` must hold that process if it runs.
pub fn judge_pid_file(claim: PidFileClaim, table: &ProcessTable, pattern: &Regex) -> PidFile {
    let (pid, modified_unix_ms) = match claim {
        PidFileClaim::Absent => return PidFile::Absent,
        PidFileClaim::Unreadable(why) => return PidFile::Unreadable(why),
        PidFileClaim::Pid {
            pid,
            modified_unix_ms,
        } => (pid, modified_unix_ms),
    };
    match table.get(pid) {
        None if table.is_doctors(pid) => PidFile::Absent,
        None => PidFile::Stale(pid),
        Some(p) if !is_live(p) => PidFile::Stale(pid),
        Some(p) if !pattern.is_match(&command_line(p)) => PidFile::Unrelated(
            p.clone(),
            format!("its command line does not match /{}/", pattern.as_str()),
        ),
        Some(p) if p.started_unix_ms > modified_unix_ms.saturating_add(PID_FILE_SLACK_MS) => {
            PidFile::Unrelated(
                p.clone(),
                "it started after the PID file was written".into(),
            )
        }
        Some(_) => PidFile::Ours(pid),
    }
}

/// [`read_pid_file`] for a target of a PID file, a `pattern` and a `scope`,
/// with the processes it looks at ([`ProcessTable::of_target`]) instead of
/// the whole table.
pub fn read_target(
    path: Option<&str>,
    pattern: &Regex,
    scope: &ScopeMatcher,
) -> Result<(PidFile, ProcessTable), Error> {
    let claim = read_pid_file_claim(path)?;
    let table = ProcessTable::of_target(claim.pid(), pattern.as_str(), scope)?;
    Ok((judge_pid_file(claim, &table, pattern), table))
}

/// Read the PID file at `path` and judge the process it names: trusted
/// only while its command line matches `pattern` and it is not younger
/// than the file.
pub fn read_pid_file(
    path: Option<&str>,
    table: &ProcessTable,
    pattern: &Regex,
) -> Result<PidFile, Error> {
    Ok(judge_pid_file(read_pid_file_claim(path)?, table, pattern))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{answer_with, process, Facts};

    fn proc(pid: u32, state: &str, argv: &str, started_ms: u64) -> Process {
        Process {
            id: ProcessRef { pid, start_time: 7 },
            state: state.into(),
            started_unix_ms: started_ms,
            ..process(pid, argv)
        }
    }

    #[test]
    fn messages_name_pids_and_short_command_lines() {
        let (a, b) = (proc(4, "S", "a", 0), proc(5, "S", "b", 0));
        assert_eq!(pid_list(&[&a, &b]), "4, 5");
        assert_eq!(one_line("a\n  b", 10), "a b");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }

    #[test]
    fn identity_needs_the_start_time_too() {
        let table = ProcessTable::new(vec![proc(4, "S", "a", 0)]);
        assert!(table
            .identified(&ProcessRef {
                pid: 4,
                start_time: 7
            })
            .is_some());
        assert!(table
            .identified(&ProcessRef {
                pid: 4,
                start_time: 8
            })
            .is_none());
    }

    #[test]
    fn a_pid_file_is_trusted_only_for_a_matching_process_not_younger_than_it() {
        let pattern = Regex::new("^web$").unwrap();
        let table = ProcessTable::new(vec![
            proc(10, "S", "web", 0),
            proc(11, "S", "vim", 0),
            proc(12, "Z", "web", 0),
            proc(13, "S", "web", 1_000_000),
        ]);
        let judge = |content: &str| {
            let facts = Facts::new().file("/run/w.pid", content);
            answer_with(facts, || {
                read_pid_file(Some("/run/w.pid"), &table, &pattern).map(|f| format!("{f:?}"))
            })
        };
        assert_eq!(judge("10\n").unwrap(), "Ours(10)");
        assert!(judge("11").unwrap().contains("does not match /^web$/"));
        assert_eq!(judge("12").unwrap(), "Stale(12)", "a zombie is not running");
        assert_eq!(judge("99").unwrap(), "Stale(99)");
        assert!(judge("13")
            .unwrap()
            .contains("started after the PID file was written"));
        assert!(judge("x").unwrap().starts_with("Unreadable"));
        assert_eq!(
            answer_with(Facts::new(), || read_pid_file(None, &table, &pattern)
                .map(|f| format!("{f:?}")))
            .unwrap(),
            "Absent"
        );
    }
}
