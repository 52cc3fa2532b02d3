//! The incident: a Stop button said "stopped" while the process kept running,
//! because the PID lived only in a browser session. This plugin converges each
//! named target to `stopped`: the PID from its PID file, trusted only while the
//! process's command line still matches; otherwise a command-line search; every
//! matching instance; TERM, grace, KILL; then the PID file removed. A PID file
//! pointing at an unrelated live process is reported and never signalled.

use doctor_sdk::prelude::*;
use doctor_sdk::processes::Process;
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

/// What the PID file says, checked against the process table.
enum PidFile {
    Absent,
    Unreadable(String),
    Stale(u32),
    Ours(u32),
    Unrelated(Process),
}

struct PidFileStop;

impl Plugin for PidFileStop {
    type Config = Config;

    fn info() -> Info {
        Info::new("pid-file-stop", "Stops named targets for real: verified PID file, every instance, TERM, grace, KILL")
            .capability(caps::PROCESSES)
            .capability(caps::FILES)
            .capability(caps::SIGNAL)
            .capability(caps::FILES_REMOVE)
            .config_key(
                "targets",
                None,
                "list of { name, pid_file, pattern, desired = \"stopped\" | \"report-only\", grace_ms = 5000 }",
            )
    }

    fn check(config: Config) -> Result<Vec<Finding>, Error> {
        let table = processes::all()?;
        let mut findings = Vec::new();
        for target in &config.targets {
            findings.extend(check_target(target, &table)?);
        }
        Ok(findings)
    }
}

fn check_target(target: &Target, table: &[Process]) -> Result<Vec<Finding>, Error> {
    let pattern = Regex::new(&target.pattern)
        .map_err(|e| Error::Invalid(format!("target {}: pattern: {e}", target.name)))?;
    let matches = |p: &Process| !p.kernel_thread && p.state != "Z" && pattern.is_match(&p.argv.join(" "));
    let instances: Vec<&Process> = table.iter().filter(|p| matches(p)).collect();
    let pid_file = read_pid_file(target, table, &matches)?;

    let mut findings = Vec::new();
    match &pid_file {
        PidFile::Unrelated(other) => findings.push(
            Finding::warning(
                format!("{}:pid-reused", target.name),
                &target.name,
                format!(
                    "PID file points at pid {}, a live process that is not {} ({}); it is left alone",
                    other.id.pid,
                    target.name,
                    other.argv.join(" ")
                ),
            )
            .evidence("pid_file", target.pid_file.as_deref().unwrap_or_default())
            .evidence("pid", other.id.pid)
            .evidence("command", other.argv.join(" ")),
        ),
        PidFile::Unreadable(why) => findings.push(
            Finding::warning(format!("{}:pid-file-unreadable", target.name), &target.name, why.clone())
                .evidence("pid_file", target.pid_file.as_deref().unwrap_or_default()),
        ),
        _ => {}
    }

    if target.desired == Desired::Stopped && !instances.is_empty() {
        findings.push(stop_finding(target, &instances, &pid_file));
    } else if instances.len() > 1 {
        findings.push(duplicates_finding(target, &instances));
    }
    if let (PidFile::Stale(pid), true) = (&pid_file, instances.is_empty()) {
        findings.push(stale_finding(target, *pid));
    }
    Ok(findings)
}

fn read_pid_file(target: &Target, table: &[Process], matches: &dyn Fn(&Process) -> bool) -> Result<PidFile, Error> {
    let Some(path) = &target.pid_file else { return Ok(PidFile::Absent) };
    if files::stat(path)?.is_none() {
        return Ok(PidFile::Absent);
    }
    let text = files::read(path, 4096)?;
    let Ok(pid) = text.trim().parse::<u32>() else {
        return Ok(PidFile::Unreadable(format!("PID file {path} does not hold a pid: {:?}", text.trim())));
    };
    Ok(match table.iter().find(|p| p.id.pid == pid) {
        None => PidFile::Stale(pid),
        Some(p) if p.state == "Z" => PidFile::Stale(pid),
        Some(p) if matches(p) => PidFile::Ours(pid),
        Some(p) => PidFile::Unrelated(p.clone()),
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
        finding = finding.evidence(&format!("pid {}", p.id.pid), p.argv.join(" ")).action(
            Action::stop_process(p.id, target.grace_ms),
            format!("stop pid {} ({}): TERM, {} ms grace, KILL", p.id.pid, p.name, target.grace_ms),
        );
    }
    match (&target.pid_file, pid_file) {
        (Some(path), PidFile::Ours(_) | PidFile::Stale(_) | PidFile::Unreadable(_)) => {
            finding.then(Action::remove_file(path), format!("remove PID file {path}"))
        }
        _ => finding,
    }
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
