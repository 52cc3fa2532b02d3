//! Executing a plugin's plan: findings in order, each finding's actions in
//! order. A failed action is recorded and the rest still run, unless an
//! action says it needs its predecessors; the run-wide budget caps the total.

use super::{ActionResult, Finding, Outcome};
use crate::actions::{self, ActionContext, Executed};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// The run-wide action budget, shared by every plugin of the run.
pub struct Budget {
    remaining: AtomicU32,
    limit: u32,
}

impl Budget {
    pub fn new(limit: u32) -> Self {
        Budget { remaining: AtomicU32::new(limit), limit }
    }

    fn take(&self) -> bool {
        self.remaining.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

/// The plan without executing it: every action `planned`.
pub fn dry_run(findings: &[Finding]) -> Vec<Vec<ActionResult>> {
    findings.iter().map(|f| f.actions.iter().map(ActionResult::planned).collect()).collect()
}

/// Execute the plan; one result list per finding, in the findings' order.
pub fn apply(ctx: &ActionContext, findings: &[Finding], budget: &Budget, may_fix: impl Fn(&Finding) -> Result<(), String>) -> Vec<Vec<ActionResult>> {
    findings.iter().map(|f| apply_finding(ctx, f, budget, &may_fix)).collect()
}

fn apply_finding(
    ctx: &ActionContext,
    finding: &Finding,
    budget: &Budget,
    may_fix: &impl Fn(&Finding) -> Result<(), String>,
) -> Vec<ActionResult> {
    let blocked = if finding.actions.is_empty() { Ok(()) } else { may_fix(finding) };
    let mut all_succeeded = true;
    finding
        .actions
        .iter()
        .map(|planned| {
            let mut result = ActionResult::planned(planned);
            let started = Instant::now();
            let executed = if let Err(why) = &blocked {
                Executed::skipped(why.clone())
            } else if planned.needs_previous && !all_succeeded {
                Executed::skipped("an earlier action of this finding did not succeed".into())
            } else if !budget.take() {
                Executed::skipped(format!("action budget of {} per run is spent (max_actions_per_run)", budget.limit))
            } else {
                actions::execute(ctx, &planned.action)
            };
            all_succeeded &= executed.outcome == Outcome::Applied;
            result.outcome = executed.outcome;
            result.detail = executed.detail;
            result.before = executed.before;
            result.after = executed.after;
            result.duration_ms = started.elapsed().as_millis() as u64;
            tracing::info!(plugin = %ctx.plugin, finding = %finding.key, kind = result.kind, outcome = result.outcome.as_str(), "{}", result.detail);
            result
        })
        .collect()
}
