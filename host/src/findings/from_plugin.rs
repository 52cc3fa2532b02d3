//! A plugin's report (WIT values) into findings, with bounds on what a
//! plugin may return: counts, field lengths, the report's total text, and
//! action fields that cannot be cut.

use super::{Action, Finding, PlannedAction, Severity, Signal};
use crate::capabilities::sqlite_value;
use crate::runtime::bindings::doctor::plugin::types as wit;
use crate::runtime::PluginFailure;
use crate::text::truncate;
use std::collections::HashSet;

pub const MAX_FINDINGS: usize = 1000;
const MAX_ACTIONS_PER_FINDING: usize = 64;
const MAX_EVIDENCE: usize = 64;
const MAX_KEY: usize = 256;
const MAX_TEXT: usize = 4096;
/// All the text of one report together, after the per-field cuts: it is
/// journaled every run, so a report of 1000 findings × 64 evidence values
/// must not write a quarter gigabyte each time.
const MAX_REPORT_BYTES: usize = 4 << 20;
/// Action fields that cannot be cut without changing what the action does.
const MAX_STATEMENT: usize = 64 << 10;
const MAX_NAME: usize = 4096;

pub fn from_report(report: wit::Report) -> Result<Vec<Finding>, PluginFailure> {
    if report.findings.len() > MAX_FINDINGS {
        return Err(PluginFailure::InvalidOutput(format!(
            "{} findings, more than the limit of {MAX_FINDINGS}",
            report.findings.len()
        )));
    }
    let mut seen = HashSet::new();
    let findings: Vec<Finding> = report
        .findings
        .into_iter()
        .map(|f| {
            if f.key.is_empty() || f.key.len() > MAX_KEY {
                return Err(PluginFailure::InvalidOutput(format!(
                    "finding key must be 1..={MAX_KEY} bytes: {:?}",
                    truncate(&f.key, 64)
                )));
            }
            // The host's own findings (an interrupted intent) live there:
            // a plugin cannot stand in for one.
            if f.key.starts_with(HOST_KEY_PREFIX) {
                return Err(PluginFailure::InvalidOutput(format!(
                    "finding key {:?}: keys starting with {HOST_KEY_PREFIX:?} are the host's",
                    truncate(&f.key, 64)
                )));
            }
            if !seen.insert(f.key.clone()) {
                return Err(PluginFailure::InvalidOutput(format!(
                    "finding key {:?} appears twice",
                    f.key
                )));
            }
            finding(f)
        })
        .collect::<Result<_, _>>()?;
    let bytes: usize = findings.iter().map(text_bytes).sum();
    if bytes > MAX_REPORT_BYTES {
        return Err(PluginFailure::InvalidOutput(format!(
            "the report holds {bytes} bytes of text, more than the limit of {MAX_REPORT_BYTES}"
        )));
    }
    Ok(findings)
}

/// Control characters (terminal escapes, carriage returns, NULs) shown as
/// `\u{…}`: a plugin's text must not forge report lines or recolour a
/// terminal. Newlines and tabs stay.
fn printable(text: &str) -> String {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                format!("\\u{{{:x}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn text_bytes(f: &Finding) -> usize {
    let evidence: usize = f.evidence.iter().map(|(k, v)| k.len() + v.len()).sum();
    let actions: usize = f
        .actions
        .iter()
        .map(|a| a.description.len() + a.action.params_json().len())
        .sum();
    f.key.len() + f.subject.len() + f.message.len() + evidence + actions
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
    let actions = f
        .actions
        .into_iter()
        .map(planned_action)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Finding {
        key: f.key,
        severity: match f.severity {
            wit::Severity::Info => Severity::Info,
            wit::Severity::Warning => Severity::Warning,
            wit::Severity::Critical => Severity::Critical,
        },
        subject: printable(&truncate(&f.subject, MAX_TEXT)),
        message: printable(&truncate(&f.message, MAX_TEXT)),
        evidence: f
            .evidence
            .into_iter()
            .map(|e| {
                (
                    printable(&truncate(&e.key, MAX_KEY)),
                    printable(&truncate(&e.value, MAX_TEXT)),
                )
            })
            .collect(),
        actions,
    })
}

fn planned_action(p: wit::PlannedAction) -> Result<PlannedAction, PluginFailure> {
    let action = action(p.action);
    check_action_size(&action)?;
    Ok(PlannedAction {
        action,
        description: printable(&truncate(&p.description, MAX_TEXT)),
        needs_previous: p.needs_previous,
        resumes: None,
    })
}

/// Statements, paths and names cannot be cut without changing what they
/// do: an oversized one is an invalid report.
fn check_action_size(action: &Action) -> Result<(), PluginFailure> {
    let (what, len, max) = match action {
        Action::SqlExec {
            statement, params, ..
        } => {
            let params: usize = params
                .iter()
                .map(|p| serde_json::to_string(p).map(|t| t.len()).unwrap_or(0))
                .sum();
            (
                "sql-exec statement and parameters",
                statement.len() + params,
                MAX_STATEMENT,
            )
        }
        Action::RemoveFile { path } => ("remove-file path", path.len(), MAX_NAME),
        Action::ContainerStart { id }
        | Action::ContainerStop { id, .. }
        | Action::ContainerRestart { id, .. } => ("container id", id.len(), MAX_KEY),
        Action::RunCommand { name } => ("command name", name.len(), MAX_KEY),
        _ => return Ok(()),
    };
    if len > max {
        return Err(PluginFailure::InvalidOutput(format!(
            "a {what} of {len} bytes, more than the limit of {max}"
        )));
    }
    Ok(())
}

fn action(a: wit::Action) -> Action {
    match a {
        wit::Action::StopProcess(s) => Action::StopProcess {
            pid: s.process.pid,
            start_time: s.process.start_time,
            grace_ms: s.grace_ms,
        },
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
        wit::Action::ContainerStop(s) => Action::ContainerStop {
            id: s.id,
            grace_ms: s.grace_ms,
        },
        wit::Action::ContainerRestart(s) => Action::ContainerRestart {
            id: s.id,
            grace_ms: s.grace_ms,
        },
        wit::Action::RunCommand(name) => Action::RunCommand { name },
        wit::Action::WaitPortFree(w) => Action::WaitPortFree {
            port: w.port,
            deadline_ms: w.deadline_ms,
        },
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

/// The prefix of the finding keys the host makes itself
/// (`doctor:interrupted:N`, see `journal::intents`).
pub const HOST_KEY_PREFIX: &str = "doctor:";

#[cfg(test)]
mod limit_tests {
    use super::*;

    fn wit_finding(key: String, evidence: usize, action: Option<wit::Action>) -> wit::Finding {
        wit::Finding {
            key,
            severity: wit::Severity::Warning,
            subject: String::new(),
            message: "m".repeat(MAX_TEXT),
            evidence: (0..evidence)
                .map(|i| wit::Evidence {
                    key: format!("e{i}"),
                    value: "v".repeat(MAX_TEXT),
                })
                .collect(),
            actions: action
                .into_iter()
                .map(|action| wit::PlannedAction {
                    action,
                    description: String::new(),
                    needs_previous: false,
                })
                .collect(),
        }
    }

    #[test]
    fn a_report_within_every_per_field_limit_is_still_bounded_in_total() {
        // 100 findings × 64 evidence values × 4 KiB: every field legal, 26 MB in all.
        let big = wit::Report {
            findings: (0..100)
                .map(|i| wit_finding(format!("k{i}"), 64, None))
                .collect(),
        };
        let err = from_report(big).expect_err("refused");
        assert!(
            err.to_string()
                .contains("bytes of text, more than the limit"),
            "{err}"
        );
        let fine = wit::Report {
            findings: (0..10)
                .map(|i| wit_finding(format!("k{i}"), 4, None))
                .collect(),
        };
        assert_eq!(from_report(fine).map(|f| f.len()).ok(), Some(10));
    }

    #[test]
    fn a_plugin_cannot_report_a_key_of_the_hosts() {
        let err = from_report(wit::Report {
            findings: vec![wit_finding("doctor:interrupted:7".into(), 0, None)],
        })
        .expect_err("refused");
        assert!(err.to_string().contains("are the host's"), "{err}");
    }

    #[test]
    fn terminal_escapes_in_plugin_text_are_shown_not_obeyed() {
        assert_eq!(printable("ok\x1b[31mred\r"), "ok\\u{1b}[31mred\\u{d}");
        assert_eq!(printable("two\nlines\tand tabs"), "two\nlines\tand tabs");
    }

    #[test]
    fn an_action_field_too_long_to_cut_makes_the_report_invalid() {
        let statement = format!("DELETE FROM t WHERE x = '{}'", "y".repeat(MAX_STATEMENT));
        let exec = wit::Action::SqlExec(wit::SqlExec {
            db: "d".into(),
            statement,
            params: vec![],
            max_rows: 1,
        });
        let err = from_report(wit::Report {
            findings: vec![wit_finding("k".into(), 0, Some(exec))],
        })
        .expect_err("refused");
        assert!(err.to_string().contains("sql-exec statement"), "{err}");
    }
}
