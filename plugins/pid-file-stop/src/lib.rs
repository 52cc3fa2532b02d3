//! The incident: a Stop button said "stopped" while the process kept running,
//! because the PID lived only in a browser session. This plugin converges each
//! named target to `stopped`: the process its PID file names (trusted only
//! while its command line matches and it is not younger than the file), and
//! every other process matching the pattern *inside the target's scope*;
//! TERM, grace, KILL; then the PID file removed. A PID file pointing at an
//! unrelated live process is reported and never signalled.
//!
//! Scope: two deployments run the same command lines. Without a `scope`, the
//! pattern only confirms the PID file's process and finds nothing on its
//! own; `scope = { user, unit, cgroup, under }` names where this
//! deployment's other instances live, and `scope = "host"` says explicitly
//! that any process on the host is one. A stopped process that comes back
//! (a supervisor respawned it) is reported as persisting, with its
//! supervisor, instead of being stopped again.

use doctor_sdk::prelude::*;
use doctor_sdk::processes::Process;
use doctor_sdk::respawn;
use doctor_sdk::scope::{command_line, is_live, ProcessTable, Scope};
use regex_lite::Regex;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    targets: Vec<Target>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    name: String,
    pid_file: Option<String>,
    /// A regular expression searched in the command line (argv joined by spaces).
    pattern: String,
    /// Where instances beyond the PID file's may be found; none: nowhere.
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    desired: Desired,
    #[serde(default = "default_grace_ms")]
    grace_ms: u32,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Desired {
    #[default]
    Stopped,
    ReportOnly,
}

fn default_grace_ms() -> u32 {
    5000
}

/// A process that started later than this after its PID file was written
/// cannot have written it. The slack absorbs clock rounding and small clock
/// steps; a wrong verdict here only leaves a process running and reported.
const PID_FILE_SLACK_MS: u64 = 60_000;

/// What the PID file says, checked against the process table.
enum PidFile {
    Absent,
    Unreadable(String),
    Stale(u32),
    Ours(u32),
    /// A live process that is not the target's: the pid was reused.
    Unrelated(Process, String),
}

struct PidFileStop;

impl Plugin for PidFileStop {
    type Config = Config;

    fn info() -> Info {
        Info::new("pid-file-stop", "Stops named targets for real: verified PID file, every instance in scope, TERM, grace, KILL")
            .capability(caps::PROCESSES)
            .capability(caps::FILES)
            .capability(caps::SIGNAL)
            .capability(caps::FILES_REMOVE)
            .config_key(
                "targets",
                None,
                "list of { name, pid_file, pattern, scope = { user, unit, cgroup, under } | \"host\" (none: only the PID file's process), desired = \"stopped\" | \"report-only\", grace_ms = 5000 }",
            )
    }

    fn check(config: Config) -> Result<Vec<Finding>, Error> {
        let table = ProcessTable::read()?;
        let mut findings = Vec::new();
        for target in &config.targets {
            findings.extend(check_target(target, &table)?);
        }
        Ok(findings)
    }
}

fn check_target(target: &Target, table: &ProcessTable) -> Result<Vec<Finding>, Error> {
    let pattern = Regex::new(&target.pattern)
        .map_err(|e| Error::Invalid(format!("target {}: pattern: {e}", target.name)))?;
    let scope = target.scope.compile(&format!("target {}: scope", target.name))?;
    let pid_file = read_pid_file(target, table, &pattern)?;
    // The PID file's process, then every other match inside the scope.
    let mut instances: Vec<&Process> = Vec::new();
    if let PidFile::Ours(pid) = &pid_file {
        instances.extend(table.get(*pid));
    }
    for p in table.in_scope(&pattern, &scope) {
        if !instances.iter().any(|i| i.id.pid == p.id.pid) {
            instances.push(p);
        }
    }

    let mut findings = Vec::new();
    match &pid_file {
        PidFile::Unrelated(other, why) => findings.push(
            Finding::warning(
                format!("{}:pid-reused", target.name),
                &target.name,
                format!(
                    "PID file points at pid {}, a live process that is not {} ({}: {}); it is left alone",
                    other.id.pid,
                    target.name,
                    why,
                    command_line(other)
                ),
            )
            .evidence("pid_file", target.pid_file.as_deref().unwrap_or_default())
            .evidence("pid", other.id.pid)
            .evidence("command", command_line(other)),
        ),
        PidFile::Unreadable(why) => findings.push(
            Finding::warning(format!("{}:pid-file-unreadable", target.name), &target.name, why.clone())
                .evidence("pid_file", target.pid_file.as_deref().unwrap_or_default()),
        ),
        _ => {}
    }

    if target.desired == Desired::Stopped && !instances.is_empty() {
        match respawn::respawned_by(&target.name, &instances, table) {
            Some(by) => findings.push(respawned_finding(target, &instances, &by)),
            None => {
                respawn::remember_stopping(&target.name, &instances);
                findings.push(stop_finding(target, &instances, &pid_file));
            }
        }
    } else if instances.len() > 1 {
        findings.push(duplicates_finding(target, &instances));
    }
    if instances.is_empty() {
        respawn::forget(&target.name);
    }
    if let (PidFile::Stale(pid), true) = (&pid_file, instances.is_empty()) {
        findings.push(stale_finding(target, *pid));
    }
    Ok(findings)
}

fn read_pid_file(target: &Target, table: &ProcessTable, pattern: &Regex) -> Result<PidFile, Error> {
    let Some(path) = &target.pid_file else { return Ok(PidFile::Absent) };
    let Some(stat) = files::stat(path)? else {
        return Ok(PidFile::Absent);
    };
    let text = files::read(path, 4096)?;
    let Ok(pid) = text.trim().parse::<u32>() else {
        return Ok(PidFile::Unreadable(format!("PID file {path} does not hold a pid: {:?}", text.trim())));
    };
    Ok(match table.get(pid) {
        // The doctor's own ancestor (the Stop button running `doctor fix`): it
        // runs, it is not an instance, and its PID file is not stale.
        None if table.is_doctors(pid) => PidFile::Absent,
        None => PidFile::Stale(pid),
        Some(p) if !is_live(p) => PidFile::Stale(pid),
        Some(p) if !pattern.is_match(&command_line(p)) => {
            PidFile::Unrelated(p.clone(), format!("its command line does not match /{}/", target.pattern))
        }
        // Younger than the file that names it: it cannot have written it.
        Some(p) if p.started_unix_ms > stat.modified_unix_ms + PID_FILE_SLACK_MS => {
            PidFile::Unrelated(p.clone(), "it started after the PID file was written".into())
        }
        Some(_) => PidFile::Ours(pid),
    })
}

fn stop_finding(target: &Target, instances: &[&Process], pid_file: &PidFile) -> Finding {
    let pids: Vec<String> = instances.iter().map(|p| p.id.pid.to_string()).collect();
    let mut finding = Finding::critical(
        format!("{}:running", target.name),
        &target.name,
        format!(
            "{} should be stopped but {} instance(s) are running (pid {})",
            target.name,
            instances.len(),
            pids.join(", ")
        ),
    )
    .evidence("instances", instances.len());
    if let PidFile::Ours(pid) = pid_file {
        finding = finding.evidence("pid_file_pid", pid);
    }
    for p in instances {
        let cmd = command_line(p);
        finding = finding.evidence(&format!("pid {}", p.id.pid), &cmd).action(
            Action::stop_process(p.id, target.grace_ms),
            format!("stop pid {} (`{cmd}`): TERM, {} ms grace, KILL", p.id.pid, target.grace_ms),
        );
    }
    match (&target.pid_file, pid_file) {
        (Some(path), PidFile::Ours(_) | PidFile::Stale(_) | PidFile::Unreadable(_)) => {
            finding.then(Action::remove_file(path), format!("remove PID file {path}"))
        }
        _ => finding,
    }
}

/// Stopped, and back again: stopping it once more would only feed the loop.
fn respawned_finding(target: &Target, instances: &[&Process], by: &str) -> Finding {
    let pids: Vec<String> = instances.iter().map(|p| p.id.pid.to_string()).collect();
    let mut f = Finding::critical(
        format!("{}:running", target.name),
        &target.name,
        format!(
            "persisting — respawned by {by}: {} was stopped and is running again (pid {}). Stop or reconfigure its supervisor ({by}) first; doctor does not stop it again",
            target.name,
            pids.join(", ")
        ),
    )
    .evidence("respawned_by", by)
    .evidence("instances", instances.len());
    for p in instances {
        f = f.evidence(&format!("pid {}", p.id.pid), command_line(p));
    }
    f
}

fn duplicates_finding(target: &Target, instances: &[&Process]) -> Finding {
    let pids: Vec<String> = instances.iter().map(|p| p.id.pid.to_string()).collect();
    Finding::warning(
        format!("{}:duplicates", target.name),
        &target.name,
        format!("{} instances of {} are running (pid {})", instances.len(), target.name, pids.join(", ")),
    )
    .evidence("instances", instances.len())
}

fn stale_finding(target: &Target, pid: u32) -> Finding {
    let path = target.pid_file.as_deref().unwrap_or_default();
    let finding = Finding::warning(
        format!("{}:stale-pid-file", target.name),
        &target.name,
        format!("PID file {path} names pid {pid}, which is not running"),
    )
    .evidence("pid_file", path)
    .evidence("pid", pid);
    if target.desired == Desired::Stopped {
        finding.action(Action::remove_file(path), format!("remove stale PID file {path}"))
    } else {
        finding
    }
}

register_plugin!(PidFileStop);

/// The plugin's `check`, run natively against facts the test supplies
/// (doctor_sdk::testing): no host, no component build.
#[cfg(test)]
mod tests {
    use super::PidFileStop;
    use doctor_sdk::testing::Facts;

    const CONFIG: &str = r#"{ "targets": [{ "name": "web", "pid_file": "/run/web.pid", "pattern": "^web$" }] }"#;

    #[test]
    fn a_pid_file_naming_no_process_is_stale_and_its_removal_is_planned() {
        let out = Facts::new().file("/run/web.pid", "424242\n").processes(vec![]).run::<PidFileStop>(CONFIG);
        assert_eq!(out.keys(), ["web:stale-pid-file"]);
        let finding = out.finding("web:stale-pid-file").unwrap();
        assert!(finding.message.contains("424242"), "{}", finding.message);
        assert_eq!(finding.actions.len(), 1, "remove the PID file");
    }

    /// A `doctor check --record` recording (trimmed) as the facts: a
    /// recorded run becomes a test.
    const RECORDED: &str = r#"{
        "format": 1, "plugin": "pid-file-stop", "version": "0.1.0", "sha256": "",
        "config": "{\"targets\":[{\"name\":\"w\",\"pattern\":\"^x$\",\"pid_file\":\"/run/w.pid\"}]}",
        "state": { "doctor:own-pids": "[1]" },
        "calls": [
            { "call": "processes.all", "args": null, "answer": { "Ok": [] } },
            { "call": "files.stat", "args": ["/run/w.pid"], "answer": { "Ok": { "gid": 0, "kind": "File", "mode": 420, "modified_unix_ms": 1796020170846, "size": 10, "uid": 0 } } },
            { "call": "files.read", "args": ["/run/w.pid", 4096], "answer": { "Ok": "999999999\n" } }
        ]
    }"#;

    #[test]
    fn a_recorded_run_replays_as_a_test() {
        let config = r#"{"targets":[{"name":"w","pattern":"^x$","pid_file":"/run/w.pid"}]}"#;
        let out = Facts::new().recording(RECORDED).run::<PidFileStop>(config);
        assert_eq!(out.keys(), ["w:stale-pid-file"]);
    }

    #[test]
    fn a_denied_grant_comes_back_as_the_plugins_error() {
        let out = Facts::new().deny("files").processes(vec![]).run::<PidFileStop>(CONFIG);
        let error = out.result.as_ref().err().map(doctor_sdk::error_text).unwrap_or_default();
        assert!(error.starts_with("denied:"), "{error}");
    }
}
