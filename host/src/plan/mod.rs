//! What became of the actions findings propose: outcomes, how a plan is
//! applied in order under budgets (`apply`), and when fixing is allowed at
//! all (`gate`: the flap breaker and the rate limit).

pub mod apply;
pub mod gate;

use crate::findings::PlannedAction;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionOutcome {
    /// In the plan; not executed (check, or fix --dry-run).
    Planned,
    Applied,
    Failed,
    /// Not executed, and nothing is wrong with that: the target was already
    /// gone, a compare-and-swap found the row taken, an earlier step failed,
    /// or the action budget ran out.
    Skipped,
    /// A guard or a missing grant forbade it.
    Refused,
}

impl ActionOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionOutcome::Planned => "planned",
            ActionOutcome::Applied => "applied",
            ActionOutcome::Failed => "failed",
            ActionOutcome::Skipped => "skipped",
            ActionOutcome::Refused => "refused",
        }
    }
}

/// What happened to one planned action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionResult {
    pub kind: &'static str,
    pub description: String,
    pub params: String,
    pub outcome: ActionOutcome,
    /// Why it failed, was skipped or refused; or what it did.
    pub detail: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub duration_ms: u64,
}

impl ActionResult {
    pub fn planned(planned: &PlannedAction) -> Self {
        ActionResult {
            kind: planned.action.kind(),
            description: planned.description.clone(),
            params: planned.action.params_json(),
            outcome: ActionOutcome::Planned,
            detail: String::new(),
            before: None,
            after: None,
            duration_ms: 0,
        }
    }
}

/// The result of one primitive.
#[derive(Debug, Clone)]
pub struct Executed {
    pub outcome: ActionOutcome,
    pub detail: String,
    pub before: Option<String>,
    pub after: Option<String>,
    /// The state the action aims at holds afterwards (applied, or nothing to
    /// do: the process to stop or the file to remove was already gone).
    /// Actions that need their predecessors go on only if this is true.
    pub goal_met: bool,
}

impl Executed {
    pub fn new(outcome: ActionOutcome, detail: String) -> Self {
        Executed {
            outcome,
            detail,
            before: None,
            after: None,
            goal_met: outcome == ActionOutcome::Applied,
        }
    }
    /// Skipped because there was nothing left to do.
    pub fn already_done(detail: String) -> Self {
        Executed {
            goal_met: true,
            ..Self::new(ActionOutcome::Skipped, detail)
        }
    }
    pub fn applied(detail: String) -> Self {
        Self::new(ActionOutcome::Applied, detail)
    }
    pub fn failed(detail: String) -> Self {
        Self::new(ActionOutcome::Failed, detail)
    }
    pub fn skipped(detail: String) -> Self {
        Self::new(ActionOutcome::Skipped, detail)
    }
    pub fn refused(detail: String) -> Self {
        Self::new(ActionOutcome::Refused, detail)
    }
    pub fn with(mut self, before: Option<String>, after: Option<String>) -> Self {
        self.before = before;
        self.after = after;
        self
    }
}
