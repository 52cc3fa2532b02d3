//! Executing a plugin's plan: findings in order, each finding's actions in
//! order. A failed action is recorded and the rest still run, unless an
//! action says it needs its predecessors; the run-wide budget caps the total.

use super::{ActionOutcome, ActionResult, Executed};
use crate::findings::{Action, Finding};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// An action budget: the run-wide one shared by every plugin of the run, or
/// one plugin's own share of it (`max_actions` under `[plugins.NAME]`), so a
/// plugin with a bad night cannot leave nothing for the others.
pub struct Budget {
    remaining: AtomicU32,
    limit: u32,
    /// "per run (max_actions_per_run)" or "for plugin X (plugins.X.max_actions)".
    what: String,
}

impl Budget {
    pub fn new(limit: u32) -> Self {
        Budget {
            remaining: AtomicU32::new(limit),
            limit,
            what: "per run (max_actions_per_run)".into(),
        }
    }

    pub fn for_plugin(plugin: &str, limit: u32) -> Self {
        Budget {
            remaining: AtomicU32::new(limit),
            limit,
            what: format!("for plugin {plugin} (plugins.{plugin}.max_actions)"),
        }
    }

    fn take(&self) -> bool {
        self.remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn spent(&self) -> String {
        format!("action budget of {} {} is spent", self.limit, self.what)
    }
}

/// The plugin's own budget first, then the run's.
fn take_budget(budgets: &[&Budget]) -> Result<(), String> {
    for b in budgets {
        if !b.take() {
            return Err(b.spent());
        }
    }
    Ok(())
}

/// Where a plan's intents and outcomes are written before and after each
/// action (the journal implements it; `plan` needs nothing else of it).
pub trait WriteAhead {
    /// Record every action of `findings` as intended, durably, before any
    /// runs; ids per finding in plan order.
    fn intend(&self, findings: &[Finding]) -> anyhow::Result<Vec<Vec<i64>>>;
    fn finish(&self, intent: i64, result: &ActionResult) -> anyhow::Result<()>;
}

/// What carries out one action: the guarded primitives (`actions`)
/// implement it; `plan` needs nothing else of them.
pub trait Executor {
    /// The plugin whose plan this is, for the log.
    fn plugin(&self) -> &str;
    /// Carry out one action behind its grant and guards.
    fn execute(&self, action: &Action) -> Executed;
    /// Why a grant or guard would refuse `action`, without doing anything.
    fn refusal(&self, action: &Action) -> Option<String>;
}

/// The plan without executing it: every action `planned`.
pub fn dry_run(findings: &[Finding]) -> Vec<Vec<ActionResult>> {
    findings
        .iter()
        .map(|f| f.actions.iter().map(ActionResult::planned).collect())
        .collect()
}

/// `fix --dry-run`: the plan as `fix` would meet it, without executing it.
/// What the flap breaker or rate limit holds back is `skipped`, what a grant
/// or guard forbids is `refused` (both with the reason), an action that
/// needs a refused one is `skipped`; the rest stays `planned`.
pub fn preview(
    ctx: &impl Executor,
    findings: &[Finding],
    may_fix: impl Fn(&Finding) -> Result<(), String>,
) -> Vec<Vec<ActionResult>> {
    findings
        .iter()
        .map(|finding| {
            let blocked = if finding.actions.is_empty() {
                Ok(())
            } else {
                may_fix(finding)
            };
            let mut refused_before = false;
            finding
                .actions
                .iter()
                .map(|planned| {
                    let mut result = ActionResult::planned(planned);
                    if let Err(why) = &blocked {
                        (result.outcome, result.detail) = (ActionOutcome::Skipped, why.clone());
                    } else if planned.needs_previous && refused_before {
                        (result.outcome, result.detail) = (
                            ActionOutcome::Skipped,
                            "an earlier action of this finding did not succeed".into(),
                        );
                        refused_before = true;
                    } else if let Some(why) = ctx.refusal(&planned.action) {
                        (result.outcome, result.detail) = (ActionOutcome::Refused, why);
                        refused_before = true;
                    }
                    result
                })
                .collect()
        })
        .collect()
}

/// Execute the plan; one result list per finding, in the findings' order.
/// `budgets` are taken in order (the plugin's own, then the run's).
/// Nothing runs unless its intent was committed first.
pub fn apply(
    ctx: &impl Executor,
    findings: &[Finding],
    budgets: &[&Budget],
    may_fix: impl Fn(&Finding) -> Result<(), String>,
    ahead: &dyn WriteAhead,
) -> Vec<Vec<ActionResult>> {
    let intents = match ahead.intend(findings) {
        Ok(ids) => ids,
        Err(e) => {
            let why = format!("not run: the journal could not record the intent first ({e:#})");
            return findings
                .iter()
                .map(|f| {
                    f.actions
                        .iter()
                        .map(|p| ActionResult {
                            outcome: ActionOutcome::Skipped,
                            detail: why.clone(),
                            ..ActionResult::planned(p)
                        })
                        .collect()
                })
                .collect();
        }
    };
    findings
        .iter()
        .zip(intents)
        .map(|(f, ids)| apply_finding(ctx, f, budgets, &may_fix, ahead, &ids))
        .collect()
}

fn apply_finding(
    ctx: &impl Executor,
    finding: &Finding,
    budgets: &[&Budget],
    may_fix: &impl Fn(&Finding) -> Result<(), String>,
    ahead: &dyn WriteAhead,
    intents: &[i64],
) -> Vec<ActionResult> {
    let blocked = if finding.actions.is_empty() {
        Ok(())
    } else {
        may_fix(finding)
    };
    let mut all_succeeded = true;
    finding
        .actions
        .iter()
        .zip(intents)
        .map(|(planned, intent)| {
            let mut result = ActionResult::planned(planned);
            let started = Instant::now();
            let executed = if let Err(why) = &blocked {
                Executed::skipped(why.clone())
            } else if planned.needs_previous && !all_succeeded {
                Executed::skipped("an earlier action of this finding did not succeed".into())
            } else if let Err(spent) = take_budget(budgets) {
                Executed::skipped(spent)
            } else {
                ctx.execute(&planned.action)
            };
            all_succeeded &= executed.goal_met;
            result.outcome = executed.outcome;
            result.detail = executed.detail;
            result.before = executed.before;
            result.after = executed.after;
            result.duration_ms = started.elapsed().as_millis() as u64;
            test_failpoint_after_action();
            if let Err(e) = ahead.finish(*intent, &result) {
                tracing::error!(plugin = %ctx.plugin(), "the outcome of intent {intent} was not journaled: {e:#}");
            }
            tracing::info!(plugin = %ctx.plugin(), finding = %finding.key, kind = result.kind, outcome = result.outcome.as_str(), "{}", result.detail);
            result
        })
        .collect()
}

/// `DOCTOR_TEST_KILL_AFTER_ACTIONS=N`: the crash tests' failpoint. The
/// process SIGKILLs itself right after its Nth action took effect and before
/// that action's outcome is journaled: the worst moment to die.
fn test_failpoint_after_action() {
    use std::sync::atomic::AtomicU64;
    static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    static DONE: AtomicU64 = AtomicU64::new(0);
    let Some(limit) = *LIMIT.get_or_init(|| {
        std::env::var("DOCTOR_TEST_KILL_AFTER_ACTIONS")
            .ok()?
            .parse()
            .ok()
    }) else {
        return;
    };
    if DONE.fetch_add(1, Ordering::SeqCst) + 1 >= limit {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::{test_context, ActionContext};
    use crate::findings::{Action, PlannedAction, Severity};
    use crate::plan::ActionOutcome;
    use crate::policy::{Grants, SignalGrant};

    fn context(dir: &std::path::Path) -> ActionContext {
        test_context(Grants {
            files_remove: vec![format!("{}/*", dir.display())],
            signal: Some(SignalGrant {
                patterns: vec!["^true$".into()],
                uids: vec![],
                scope: Default::default(),
            }),
            ..Default::default()
        })
    }

    /// Write-ahead that keeps intents in memory and checks the order.
    #[derive(Default)]
    struct Recorded(std::sync::Mutex<Vec<(i64, Option<ActionOutcome>)>>);

    impl WriteAhead for Recorded {
        fn intend(&self, findings: &[Finding]) -> anyhow::Result<Vec<Vec<i64>>> {
            let mut log = self.0.lock().unwrap();
            Ok(findings
                .iter()
                .map(|f| {
                    f.actions
                        .iter()
                        .map(|_| {
                            let id = log.len() as i64;
                            log.push((id, None));
                            id
                        })
                        .collect()
                })
                .collect())
        }
        fn finish(&self, intent: i64, result: &ActionResult) -> anyhow::Result<()> {
            self.0.lock().unwrap()[intent as usize].1 = Some(result.outcome);
            Ok(())
        }
    }

    struct Unwritable;
    impl WriteAhead for Unwritable {
        fn intend(&self, _: &[Finding]) -> anyhow::Result<Vec<Vec<i64>>> {
            anyhow::bail!("disk full")
        }
        fn finish(&self, _: i64, _: &ActionResult) -> anyhow::Result<()> {
            anyhow::bail!("disk full")
        }
    }

    #[test]
    fn nothing_runs_when_its_intent_cannot_be_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let file = dir.join("a");
        std::fs::write(&file, "").unwrap();
        let f = finding(vec![(
            Action::RemoveFile {
                path: file.display().to_string(),
            },
            false,
        )]);
        let results = apply(
            &context(&dir),
            &[f],
            &[&Budget::new(10)],
            |_| Ok(()),
            &Unwritable,
        );
        assert_eq!(results[0][0].outcome, ActionOutcome::Skipped);
        assert!(
            results[0][0].detail.contains("could not record the intent"),
            "{}",
            results[0][0].detail
        );
        assert!(file.exists());
    }

    #[test]
    fn every_action_has_its_intent_and_then_its_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, "").unwrap();
        let f = finding(vec![
            (
                Action::RemoveFile {
                    path: a.display().to_string(),
                },
                false,
            ),
            (
                Action::RemoveFile {
                    path: b.display().to_string(),
                },
                false,
            ),
        ]);
        let ahead = Recorded::default();
        apply(
            &context(&dir),
            &[f],
            &[&Budget::new(10)],
            |_| Ok(()),
            &ahead,
        );
        let log = ahead.0.lock().unwrap().clone();
        assert_eq!(
            log,
            vec![
                (0, Some(ActionOutcome::Applied)),
                (1, Some(ActionOutcome::Skipped))
            ]
        );
    }

    fn finding(actions: Vec<(Action, bool)>) -> Finding {
        Finding {
            key: "k".into(),
            severity: Severity::Warning,
            subject: String::new(),
            message: String::new(),
            evidence: vec![],
            actions: actions
                .into_iter()
                .map(|(action, needs_previous)| PlannedAction {
                    action,
                    description: String::new(),
                    needs_previous,
                    resumes: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_stop_whose_process_is_already_gone_does_not_block_what_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let file = dir.join("w.pid");
        std::fs::write(&file, "1").unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let f = finding(vec![
            (
                Action::StopProcess {
                    pid,
                    start_time: 1,
                    grace_ms: 100,
                },
                false,
            ),
            (
                Action::RemoveFile {
                    path: file.display().to_string(),
                },
                true,
            ),
        ]);
        let results = apply(
            &context(&dir),
            &[f],
            &[&Budget::new(10)],
            |_| Ok(()),
            &Recorded::default(),
        );
        assert_eq!(
            results[0][0].outcome,
            ActionOutcome::Skipped,
            "{:?}",
            results[0][0]
        );
        assert_eq!(
            results[0][1].outcome,
            ActionOutcome::Applied,
            "{:?}",
            results[0][1]
        );
        assert!(!file.exists());
    }

    #[test]
    fn a_refused_action_blocks_what_needs_it_but_not_what_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, "").unwrap();
        std::fs::write(&b, "").unwrap();
        let f = finding(vec![
            (
                Action::RemoveFile {
                    path: "/etc/hostname".into(),
                },
                false,
            ),
            (
                Action::RemoveFile {
                    path: a.display().to_string(),
                },
                true,
            ),
            (
                Action::RemoveFile {
                    path: b.display().to_string(),
                },
                false,
            ),
        ]);
        let results = apply(
            &context(&dir),
            &[f],
            &[&Budget::new(10)],
            |_| Ok(()),
            &Recorded::default(),
        );
        let outcomes: Vec<ActionOutcome> = results[0].iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            [
                ActionOutcome::Refused,
                ActionOutcome::Skipped,
                ActionOutcome::Applied
            ]
        );
        assert!(a.exists() && !b.exists());
        assert!(std::path::Path::new("/etc/hostname").exists());
    }

    #[test]
    fn a_plugins_own_budget_runs_out_before_the_runs() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let files: Vec<_> = (0..3).map(|i| dir.join(format!("f{i}"))).collect();
        for f in &files {
            std::fs::write(f, "").unwrap();
        }
        let f = finding(
            files
                .iter()
                .map(|f| {
                    (
                        Action::RemoveFile {
                            path: f.display().to_string(),
                        },
                        false,
                    )
                })
                .collect(),
        );
        let (run, own) = (Budget::new(10), Budget::for_plugin("p", 2));
        let results = apply(
            &context(&dir),
            &[f],
            &[&own, &run],
            |_| Ok(()),
            &Recorded::default(),
        );
        let outcomes: Vec<ActionOutcome> = results[0].iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            [
                ActionOutcome::Applied,
                ActionOutcome::Applied,
                ActionOutcome::Skipped
            ]
        );
        assert!(
            results[0][2].detail.contains("plugins.p.max_actions"),
            "{}",
            results[0][2].detail
        );
        assert!(
            run.take(),
            "the run budget keeps what the plugin could not spend"
        );
    }

    /// An executor that touches nothing: `plan` is testable without the
    /// primitives, the journal or the host.
    struct Scripted(Vec<ActionOutcome>, std::sync::Mutex<usize>);
    impl Executor for Scripted {
        fn plugin(&self) -> &str {
            "scripted"
        }
        fn execute(&self, _: &Action) -> Executed {
            let mut next = self.1.lock().unwrap();
            *next += 1;
            Executed::new(self.0[*next - 1], format!("step {next}"))
        }
        fn refusal(&self, _: &Action) -> Option<String> {
            None
        }
    }

    #[test]
    fn a_failed_action_skips_only_the_ones_that_need_it() {
        let wait = || Action::WaitPortFree {
            port: 1,
            deadline_ms: 1,
        };
        let f = finding(vec![(wait(), false), (wait(), true), (wait(), false)]);
        let ctx = Scripted(
            vec![ActionOutcome::Failed, ActionOutcome::Applied],
            Default::default(),
        );
        let results = apply(
            &ctx,
            &[f],
            &[&Budget::new(10)],
            |_| Ok(()),
            &Recorded::default(),
        );
        let outcomes: Vec<ActionOutcome> = results[0].iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            [
                ActionOutcome::Failed,
                ActionOutcome::Skipped,
                ActionOutcome::Applied
            ]
        );
        assert_eq!(
            results[0][2].detail, "step 2",
            "the skipped one never reached the executor"
        );
    }

    #[test]
    fn a_held_back_finding_runs_nothing() {
        let f = finding(vec![(
            Action::WaitPortFree {
                port: 1,
                deadline_ms: 1,
            },
            false,
        )]);
        let ctx = Scripted(vec![], Default::default());
        let results = apply(
            &ctx,
            &[f],
            &[&Budget::new(10)],
            |_| Err("flap breaker open".into()),
            &Recorded::default(),
        );
        assert_eq!(
            (results[0][0].outcome, results[0][0].detail.as_str()),
            (ActionOutcome::Skipped, "flap breaker open")
        );
    }
}
