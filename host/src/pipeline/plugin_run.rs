//! One plugin's turn in a run: its check, then (when the run fixes) its
//! plan applied behind the gate, a settle for respawns and a re-check
//! against fresh facts, or the dry run's preview; what it returns is
//! journaled by the run.

use super::prepare::{context, limits, Prepared};
use crate::actions::ActionContext;
use crate::capabilities::{CapabilityContext, EffectiveGrants, RunFacts};
use crate::clock::now_unix_ms;
use crate::findings::Finding;
use crate::journal::intents::OpenIntent;
use crate::plan::apply::{self, Budget};
use crate::plan::gate::FixGate;
use crate::plan::ActionResult;
use crate::policy::Policy;
use crate::report::PluginSummary;
use crate::worker::Sandbox;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What one plugin's thread sends back to be journalled.
pub(super) struct PluginOutcome {
    pub summary: PluginSummary,
    pub findings: Vec<Finding>,
    pub actions: Vec<Vec<ActionResult>>,
    pub recheck: Option<Vec<Finding>>,
    pub state: Option<BTreeMap<String, String>>,
    pub log: String,
}

/// What every plugin thread of a run shares.
pub(super) struct Shared<'a> {
    /// Present when this run may fix.
    pub intents: Option<&'a crate::journal::IntentLog>,
    pub runtime: &'a Sandbox,
    pub policy: &'a Arc<Policy>,
    pub facts: &'a Arc<RunFacts>,
    pub budget: &'a Budget,
    pub protected: &'a [u32],
    pub protected_files: &'a [PathBuf],
    pub gate: &'a FixGate,
    pub record: Option<&'a std::path::Path>,
    /// Interrupted intents of earlier runs still open: each is a finding of
    /// its plugin, resumed when this run fixes.
    pub open_intents: &'a [OpenIntent],
}

pub(super) fn run_plugin(
    shared: &Shared<'_>,
    p: &Prepared,
    state: BTreeMap<String, String>,
) -> PluginOutcome {
    let Shared {
        intents,
        runtime,
        policy,
        facts,
        budget,
        protected,
        protected_files,
        gate,
        record,
        open_intents,
    } = *shared;
    let _span = crate::logging::plugin_span(&p.entry.name).entered();
    let started = Instant::now();
    let started_ms = now_unix_ms();
    let mut summary = PluginSummary::new(&p.entry.name, started_ms);
    let (loaded, info) = match &p.loaded {
        Ok(ok) => ok,
        Err(failure) => {
            summary.fail(failure.to_string(), started.elapsed());
            return PluginOutcome {
                summary,
                findings: vec![],
                actions: vec![],
                recheck: None,
                state: None,
                log: String::new(),
            };
        }
    };
    summary.loaded(&info.version, &loaded.sha256, loaded.cache().as_str());
    let grants = EffectiveGrants::new(&p.entry.name, &info.capabilities, &p.policy.grants);
    let kv = Arc::new(Mutex::new(with_own_pids(state, protected)));
    let mut caps = context(&p.entry.name, grants.clone(), facts.clone(), kv.clone());
    let mut recording = record.map(|_| {
        let state = kv.lock().map(|m| m.clone()).unwrap_or_default();
        crate::recording::Recording::new(
            &p.entry.name,
            &info.version,
            &loaded.sha256,
            &p.config_json,
            state,
        )
    });
    if recording.is_some() {
        caps.tape = crate::capabilities::Tape::record();
    }
    let (result, mut caps) =
        crate::findings::check(runtime, loaded, caps, &p.config_json, limits(policy));
    if let (Some(dir), Some(rec), Some(c)) = (record, recording.as_mut(), caps.as_mut()) {
        if let crate::capabilities::Tape::Record {
            calls, truncated, ..
        } = std::mem::take(&mut c.tape)
        {
            rec.calls = calls;
            rec.truncated = truncated;
        }
        if let Err(e) = rec.save(dir) {
            tracing::error!("recording of {} not written: {e:#}", p.entry.name);
        }
    }
    let mut log = logs_text(caps.as_ref());
    let mut findings = match result {
        Ok(findings) => findings,
        Err(failure) => {
            summary.fail(failure.to_string(), started.elapsed());
            return PluginOutcome {
                summary,
                findings: vec![],
                actions: vec![],
                recheck: None,
                state: None,
                log,
            };
        }
    };
    let interrupted = take_up_interrupted(&mut findings, open_intents, &p.entry.name);
    findings.extend(interrupted.iter().cloned());
    gate.escalate(&p.entry.name, &mut findings);
    let action_context = || ActionContext {
        plugin: p.entry.name.clone(),
        grants: grants.clone(),
        policy: policy.clone(),
        protected_pids: protected.to_vec(),
        protected_files: protected_files.to_vec(),
        engines: facts.engines_handle(),
    };
    let (actions, recheck) = if let (true, true, Some(intent_log)) = (
        p.apply_fixes,
        findings.iter().any(|f| !f.actions.is_empty()),
        intents,
    ) {
        let ctx = action_context();
        let own = Budget::for_plugin(&p.entry.name, p.policy.max_actions);
        let checked_state = kv.lock().ok().map(|m| without_own_pids(m.clone()));
        let ahead = crate::journal::intents::PluginIntents {
            log: intent_log,
            plugin: &p.entry.name,
            state: checked_state.as_ref(),
        };
        let actions = apply::apply(
            &ctx,
            &findings,
            &[&own, budget],
            |f| gate.may_fix(&p.entry.name, f),
            &ahead,
        );
        // Re-check against a fresh view of the host, after a supervisor had
        // the moment it needs to respawn what was stopped: a respawn is
        // "persisting", never "fixed".
        if stopped_something(&actions) {
            std::thread::sleep(RESPAWN_SETTLE);
        }
        let fresh = RunFacts::new(policy.clone());
        let caps = context(&p.entry.name, grants, fresh, kv.clone());
        let (again, caps) =
            crate::findings::check(runtime, loaded, caps, &p.config_json, limits(policy));
        log.push_str(&logs_text(caps.as_ref()));
        match again {
            Ok(mut f) => {
                f.extend(still_open(&findings, &actions, &interrupted));
                show_state_after_fix(&mut findings, &f);
                (actions, Some(f))
            }
            Err(failure) => {
                summary.fail(format!("re-check after fix: {failure}"), started.elapsed());
                (actions, None)
            }
        }
    } else if p.preview {
        // fix --dry-run: what fix would refuse or hold back, with the reason.
        (
            apply::preview(&action_context(), &findings, |f| {
                gate.may_fix(&p.entry.name, f)
            }),
            None,
        )
    } else {
        (apply::dry_run(&findings), None)
    };
    summary.duration_ms = started.elapsed().as_millis() as u64;
    let state = kv.lock().ok().map(|m| without_own_pids(m.clone()));
    PluginOutcome {
        summary,
        findings,
        actions,
        recheck,
        state,
        log,
    }
}

/// A reserved key of every plugin's key/value state, set by the host for the
/// length of a call and never stored: the pids of the doctor and its
/// ancestors, which the process table leaves out. With it a plugin can tell
/// "not running" from "not shown": a PID file or a table row naming the
/// Stop button that runs `doctor fix` is not stale (the WIT contract has no
/// field for it, and its process record must not lie).
pub const OWN_PIDS_KEY: &str = "doctor:own-pids";

fn with_own_pids(mut state: BTreeMap<String, String>, own: &[u32]) -> BTreeMap<String, String> {
    state.insert(
        OWN_PIDS_KEY.to_string(),
        serde_json::to_string(own).unwrap_or_else(|_| "[]".into()),
    );
    state
}

fn without_own_pids(mut state: BTreeMap<String, String>) -> BTreeMap<String, String> {
    state.remove(OWN_PIDS_KEY);
    state
}

/// How long a re-check waits after a stop: a supervisor (a shell loop,
/// systemd's default `RestartSec=100ms`) restarts its child within it.
const RESPAWN_SETTLE: std::time::Duration = std::time::Duration::from_millis(1000);

fn stopped_something(actions: &[Vec<ActionResult>]) -> bool {
    actions.iter().flatten().any(|a| {
        a.outcome == crate::plan::ActionOutcome::Applied
            && matches!(a.kind, "stop-process" | "signal-process" | "container-stop")
    })
}

/// The plugin's open interrupted intents: one the plugin planned again
/// itself (the same action, guard and all) is carried out by that planned
/// action, which closes it when applied; each other becomes a finding of its
/// own, returned.
fn take_up_interrupted(
    findings: &mut [Finding],
    open_intents: &[OpenIntent],
    plugin: &str,
) -> Vec<Finding> {
    let mut own = Vec::new();
    for intent in open_intents.iter().filter(|i| i.plugin == plugin) {
        // One that may have taken effect stays the operator's, always shown.
        let resumable = intent.open == crate::journal::intents::Open::Resume;
        let planned_again = findings
            .iter_mut()
            .flat_map(|f| f.actions.iter_mut())
            .filter(|_| resumable)
            .find(|a| a.resumes.is_none() && a.action.params_json() == intent.params);
        match planned_again {
            Some(action) => action.resumes = Some(intent.id),
            None => own.push(intent.finding()),
        }
    }
    own
}

/// The interrupted intents this fix left open: those it could not resume
/// (refused, failed, held back by a budget) and those never redone.
fn still_open(
    findings: &[Finding],
    actions: &[Vec<ActionResult>],
    interrupted: &[Finding],
) -> Vec<Finding> {
    findings
        .iter()
        .zip(actions)
        .filter(|(f, results)| {
            interrupted.iter().any(|i| i.key == f.key)
                && (results.is_empty()
                    || results
                        .iter()
                        .any(|r| r.outcome != crate::plan::ActionOutcome::Applied))
        })
        .map(|(f, _)| f.clone())
        .collect()
}

/// A finding without actions describes a state (a table's counts, a
/// summary), and after a fix the operator wants the state the fix left, not
/// the one it started from: take its text and evidence from the re-check.
fn show_state_after_fix(findings: &mut [Finding], recheck: &[Finding]) {
    for f in findings.iter_mut().filter(|f| f.actions.is_empty()) {
        if let Some(after) = recheck
            .iter()
            .find(|r| r.key == f.key && r.actions.is_empty())
        {
            f.message = after.message.clone();
            f.evidence = after.evidence.clone();
        }
    }
}

fn logs_text(caps: Option<&CapabilityContext>) -> String {
    caps.map(|c| {
        c.logs
            .iter()
            .map(|l| format!("{}: {}\n", l.level, l.message))
            .collect()
    })
    .unwrap_or_default()
}
