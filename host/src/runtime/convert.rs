//! WIT values into the host's model, with bounds on what a plugin may return.

use super::{ConfigKey, PluginFailure, PluginInfo};
use crate::capabilities::{sqlite_value, truncate};
use crate::plan::{Action, Finding, PlannedAction, Severity, Signal};
use crate::runtime::bindings::doctor::plugin::types as wit;
use std::collections::HashSet;

pub const MAX_FINDINGS: usize = 1000;
const MAX_ACTIONS_PER_FINDING: usize = 64;
const MAX_EVIDENCE: usize = 64;
const MAX_KEY: usize = 256;
const MAX_TEXT: usize = 4096;

pub fn plugin_info(info: wit::PluginInfo) -> PluginInfo {
    PluginInfo {
        name: truncate(&info.name, MAX_KEY),
        version: truncate(&info.version, MAX_KEY),
        summary: truncate(&info.summary, MAX_TEXT),
        capabilities: info.capabilities,
        config: info
            .config
            .into_iter()
            .map(|k| ConfigKey { name: k.name, default: k.default, description: k.description })
            .collect(),
    }
}

pub fn report(report: wit::Report) -> Result<Vec<Finding>, PluginFailure> {
    if report.findings.len() > MAX_FINDINGS {
        return Err(PluginFailure::InvalidOutput(format!(
            "{} findings, more than the limit of {MAX_FINDINGS}",
            report.findings.len()
        )));
    }
    let mut seen = HashSet::new();
    report
        .findings
        .into_iter()
        .map(|f| {
            if f.key.is_empty() || f.key.len() > MAX_KEY {
                return Err(PluginFailure::InvalidOutput(format!("finding key must be 1..={MAX_KEY} bytes: {:?}", truncate(&f.key, 64))));
            }
            if !seen.insert(f.key.clone()) {
                return Err(PluginFailure::InvalidOutput(format!("finding key {:?} appears twice", f.key)));
            }
            finding(f)
        })
        .collect()
}

fn finding(f: wit::Finding) -> Result<Finding, PluginFailure> {
    if f.actions.len() > MAX_ACTIONS_PER_FINDING || f.evidence.len() > MAX_EVIDENCE {
        return Err(PluginFailure::InvalidOutput(format!(
            "finding {:?} has {} actions and {} evidence entries (limits {MAX_ACTIONS_PER_FINDING} and {MAX_EVIDENCE})",
            f.key,
            f.actions.len(),
            f.evidence.len()
        )));
    }
    Ok(Finding {
        key: f.key,
        severity: match f.severity {
            wit::Severity::Info => Severity::Info,
            wit::Severity::Warning => Severity::Warning,
            wit::Severity::Critical => Severity::Critical,
        },
        subject: truncate(&f.subject, MAX_TEXT),
        message: truncate(&f.message, MAX_TEXT),
        evidence: f.evidence.into_iter().map(|e| (truncate(&e.key, MAX_KEY), truncate(&e.value, MAX_TEXT))).collect(),
        actions: f.actions.into_iter().map(planned_action).collect(),
    })
}

fn planned_action(p: wit::PlannedAction) -> PlannedAction {
    PlannedAction {
        action: action(p.action),
        description: truncate(&p.description, MAX_TEXT),
        needs_previous: p.needs_previous,
    }
}

fn action(a: wit::Action) -> Action {
    match a {
        wit::Action::StopProcess(s) => {
            Action::StopProcess { pid: s.process.pid, start_time: s.process.start_time, grace_ms: s.grace_ms }
        }
        wit::Action::SignalProcess(s) => Action::SignalProcess {
            pid: s.process.pid,
            start_time: s.process.start_time,
            signal: signal(s.signal),
        },
        wit::Action::SqlExec(s) => Action::SqlExec {
            db: s.db,
            statement: s.statement,
            params: s.params.into_iter().map(sqlite_value).collect(),
            max_rows: s.max_rows,
        },
        wit::Action::RemoveFile(path) => Action::RemoveFile { path },
        wit::Action::ContainerStart(id) => Action::ContainerStart { id },
        wit::Action::ContainerStop(id) => Action::ContainerStop { id },
        wit::Action::ContainerRestart(id) => Action::ContainerRestart { id },
        wit::Action::RunCommand(name) => Action::RunCommand { name },
        wit::Action::WaitPortFree(w) => Action::WaitPortFree { port: w.port, deadline_ms: w.deadline_ms },
    }
}

fn signal(s: wit::Signal) -> Signal {
    match s {
        wit::Signal::Term => Signal::Term,
        wit::Signal::Kill => Signal::Kill,
        wit::Signal::Hup => Signal::Hup,
        wit::Signal::Int => Signal::Int,
        wit::Signal::Quit => Signal::Quit,
        wit::Signal::Usr1 => Signal::Usr1,
        wit::Signal::Usr2 => Signal::Usr2,
    }
}

pub fn error_text(e: &wit::Error) -> String {
    match e {
        wit::Error::Denied(m) => format!("denied: {m}"),
        wit::Error::NotFound(m) => format!("not found: {m}"),
        wit::Error::Invalid(m) => format!("invalid: {m}"),
        wit::Error::Io(m) => format!("io: {m}"),
        wit::Error::Limit(m) => format!("limit: {m}"),
    }
}
