//! The incident: a Stop button said "stopped" while the process kept running,
//! because the PID lived only in a browser session. This plugin converges each
//! named target to `stopped`: the process its PID file names (trusted only
//! while its command line matches and it is not younger than the file), and
//! every other process matching the pattern *inside the target's scope*;
//! TERM, grace, KILL; then the PID file removed. A PID file pointing at an
//! unrelated live process is reported and never signalled.
//!
//! Scope: two deployments run the same command lines. Without a `scope`, the
//! pattern only confirms the PID file's process; `scope = { user, unit,
//! cgroup, under }` names where this deployment's other instances live, and
//! `scope = "host"` says that any process on the host is one. A stopped
//! process that comes back (a supervisor respawned it) is reported as
//! persisting, with its supervisor, instead of being stopped again.

use doctor_sdk::prelude::*;
use doctor_sdk::process::{command_line, pid_list, read_target, PidFile, ProcessTable};
use doctor_sdk::{processes::Process, respawn, scope::Scope};
use regex_lite::Regex;
use serde::Deserialize;

doctor_sdk::config! {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        /// list of { name, pid_file, pattern, scope = { user, unit, cgroup, under } | "host" (none: only the PID file's process), desired = "stopped" | "report-only", grace_ms = 5000 }
        targets: Vec<Target>,
    }
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

struct PidFileStop;

impl Plugin for PidFileStop {
    type Config = Config;

    fn info() -> Info {
        Info::new("pid-file-stop", "Stops named targets for real: verified PID file, every instance in scope, TERM, grace, KILL")
            .capability(caps::PROCESSES)
            .capability(caps::FILES)
            .capability(caps::SIGNAL)
            .capability(caps::FILES_REMOVE)
            .config::<Config>()
    }

    fn check(config: Config) -> Result<Vec<Finding>, Error> {
        // Required whatever the targets ask for, as when the whole table was read.
        ProcessTable::require_grant()?;
        let per_target: Vec<Vec<Finding>> = config
            .targets
            .iter()
            .map(check_target)
            .collect::<Result<_, _>>()?;
        Ok(per_target.into_iter().flatten().collect())
    }
}

fn check_target(target: &Target) -> Result<Vec<Finding>, Error> {
    let pattern = Regex::new(&target.pattern)
        .map_err(|e| Error::Invalid(format!("target {}: pattern: {e}", target.name)))?;
    let scope = target
        .scope
        .compile(&format!("target {}: scope", target.name))?;
    let path = target.pid_file.as_deref().unwrap_or_default();
    let (pid_file, ref table) = read_target(target.pid_file.as_deref(), &pattern, &scope)?;
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
    let (name, count, pids, mut findings) = (
        &target.name,
        instances.len(),
        pid_list(&instances),
        Vec::new(),
    );
    let finding = |severity, slug: &str, message: String| {
        Finding::new(format!("{name}:{slug}"), severity, name, message)
    };
    match &pid_file {
        PidFile::Unrelated(other, why) => findings.push(
            finding(Severity::Warning, "pid-reused", format!("PID file points at pid {}, a live process that is not {name} ({why}: {}); it is left alone", other.id.pid, command_line(other)))
                .evidence("pid_file", path).evidence("pid", other.id.pid).evidence("command", command_line(other)),
        ),
        PidFile::Unreadable(why) => findings.push(finding(Severity::Warning, "pid-file-unreadable", why.clone()).evidence("pid_file", path)),
        _ => {}
    }
    if target.desired == Desired::Stopped && !instances.is_empty() {
        if let Some(by) = respawn::respawned_by(name, &instances, table) {
            // Stopped, and back again: stopping it once more would only feed the loop.
            let message = format!("persisting — respawned by {by}: {name} was stopped and is running again (pid {pids}). Stop or reconfigure its supervisor ({by}) first; doctor does not stop it again");
            let mut f = finding(Severity::Critical, "running", message)
                .evidence("respawned_by", &by)
                .evidence("instances", count);
            for p in &instances {
                f = f.evidence(&format!("pid {}", p.id.pid), command_line(p));
            }
            findings.push(f);
        } else {
            respawn::remember_stopping(name, &instances, table);
            let mut f = finding(
                Severity::Critical,
                "running",
                format!(
                    "{name} should be stopped but {count} instance(s) are running (pid {pids})"
                ),
            )
            .evidence("instances", count);
            if let PidFile::Ours(pid) = pid_file {
                f = f.evidence("pid_file_pid", pid);
            }
            for p in &instances {
                let cmd = command_line(p);
                f = f.evidence(&format!("pid {}", p.id.pid), &cmd).stop(
                    p,
                    target.grace_ms,
                    format!("stop pid {} (`{cmd}`)", p.id.pid),
                );
            }
            // Removed only once every instance is stopped.
            if let (Some(_), PidFile::Ours(_) | PidFile::Stale(_) | PidFile::Unreadable(_)) =
                (&target.pid_file, &pid_file)
            {
                f = f.then(Action::remove_file(path), format!("remove PID file {path}"));
            }
            findings.push(f);
        }
    } else if count > 1 {
        findings.push(
            finding(
                Severity::Warning,
                "duplicates",
                format!("{count} instances of {name} are running (pid {pids})"),
            )
            .evidence("instances", count),
        );
    }
    if instances.is_empty() {
        respawn::not_running(name);
        if let PidFile::Stale(pid) = pid_file {
            let f = finding(
                Severity::Warning,
                "stale-pid-file",
                format!("PID file {path} names pid {pid}, which is not running"),
            )
            .evidence("pid_file", path)
            .evidence("pid", pid);
            findings.push(match target.desired {
                Desired::Stopped => f.action(
                    Action::remove_file(path),
                    format!("remove stale PID file {path}"),
                ),
                Desired::ReportOnly => f,
            });
        }
    }
    Ok(findings)
}

register_plugin!(PidFileStop);

#[cfg(test)]
mod tests;
