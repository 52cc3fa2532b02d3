//! The guarded primitives that carry out what plugins propose. Each primitive
//! checks its grant (and the guards) before touching anything.

// One file per primitive, each with its guard.
mod commands;
mod containers;
mod files;
pub mod guards;
mod ports;
pub mod preview;
mod process;
mod sql;

use crate::capabilities::EffectiveGrants;
use crate::facts::containers::ContainerEngine;
use crate::plan::{Action, ActionOutcome};
use crate::policy::Policy;
use std::sync::Arc;
use std::time::Duration;

/// What the primitives need to know about the run and the plugin.
pub struct ActionContext {
    pub plugin: String,
    pub grants: EffectiveGrants,
    pub policy: Arc<Policy>,
    /// The doctor and its ancestors: never signalled.
    pub protected_pids: Vec<u32>,
    /// Doctor's own journal, its WAL/SHM and lock file: never a target.
    pub protected_files: Vec<std::path::PathBuf>,
    pub engine: Option<Arc<ContainerEngine>>,
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
    fn new(outcome: ActionOutcome, detail: String) -> Self {
        Executed { outcome, detail, before: None, after: None, goal_met: outcome == ActionOutcome::Applied }
    }
    /// Skipped because there was nothing left to do.
    pub fn already_done(detail: String) -> Self {
        Executed { goal_met: true, ..Self::new(ActionOutcome::Skipped, detail) }
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

pub fn execute(ctx: &ActionContext, action: &Action) -> Executed {
    match action {
        Action::StopProcess { pid, start_time, grace_ms } => {
            // A TERM-ignoring target must not hold the run (and its locks) for
            // as long as the plugin asks: the grace is capped like every wait.
            let grace = Duration::from_millis(u64::from(*grace_ms)).min(ctx.policy.doctor.action_wait_max);
            process::stop(ctx, *pid, *start_time, grace)
        }
        Action::SignalProcess { pid, start_time, signal } => process::signal(ctx, *pid, *start_time, *signal),
        Action::RemoveFile { path } => files::remove(ctx, path),
        Action::SqlExec { db, statement, params, max_rows } => sql::exec(ctx, db, statement, params, *max_rows, sql::bounds(ctx)),
        Action::ContainerStart { id } => containers::container(ctx, id, containers::ContainerOp::Start),
        Action::ContainerStop { id } => containers::container(ctx, id, containers::ContainerOp::Stop),
        Action::ContainerRestart { id } => containers::container(ctx, id, containers::ContainerOp::Restart),
        Action::RunCommand { name } => commands::run_command(ctx, name),
        Action::WaitPortFree { port, deadline_ms } => ports::wait_port_free(ctx, *port, Duration::from_millis(u64::from(*deadline_ms))),
    }
}
