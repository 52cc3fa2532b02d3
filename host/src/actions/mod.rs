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
use crate::facts::engines::Engines;
use crate::findings::Action;
use crate::plan::apply::Executor;
use crate::plan::Executed;
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
    /// The policy's container engines (the plugin's grant says which it may use).
    pub engines: Arc<Engines>,
}

impl Executor for ActionContext {
    fn plugin(&self) -> &str {
        &self.plugin
    }

    fn execute(&self, action: &Action) -> Executed {
        execute(self, action)
    }

    fn refusal(&self, action: &Action) -> Option<String> {
        preview::refusal(self, action)
    }
}

fn execute(ctx: &ActionContext, action: &Action) -> Executed {
    match action {
        Action::StopProcess {
            pid,
            start_time,
            grace_ms,
        } => {
            // A TERM-ignoring target must not hold the run (and its locks) for
            // as long as the plugin asks: the grace is capped like every wait.
            let grace =
                Duration::from_millis(u64::from(*grace_ms)).min(ctx.policy.doctor.action_wait_max);
            process::stop(ctx, *pid, *start_time, grace)
        }
        Action::SignalProcess {
            pid,
            start_time,
            signal,
        } => process::signal(ctx, *pid, *start_time, *signal),
        Action::RemoveFile { path } => files::remove(ctx, path),
        Action::SqlExec {
            db,
            statement,
            params,
            max_rows,
        } => sql::exec(ctx, db, statement, params, *max_rows, sql::bounds(ctx)),
        Action::ContainerStart { id } => {
            containers::container(ctx, id, containers::ContainerOp::Start)
        }
        Action::ContainerStop { id, grace_ms } => {
            containers::container(ctx, id, containers::ContainerOp::Stop(*grace_ms))
        }
        Action::ContainerRestart { id, grace_ms } => {
            containers::container(ctx, id, containers::ContainerOp::Restart(*grace_ms))
        }
        Action::RunCommand { name } => commands::run_command(ctx, name),
        Action::WaitPortFree { port, deadline_ms } => {
            ports::wait_port_free(ctx, *port, Duration::from_millis(u64::from(*deadline_ms)))
        }
    }
}

/// A context for the primitives' own tests: plugin `p`, requesting every
/// mutation capability, with exactly `grants` granted.
#[cfg(test)]
pub(crate) fn test_context(grants: crate::policy::Grants) -> ActionContext {
    let requested: Vec<String> = [
        "signal",
        "files_remove",
        "sockets",
        "containers_write",
        "sqlite_write",
        "commands",
    ]
    .map(String::from)
    .to_vec();
    ActionContext {
        plugin: "p".into(),
        grants: EffectiveGrants::new("p", &requested, &grants),
        policy: Arc::new(
            Policy::parse(std::path::Path::new("t.toml"), "").expect("an empty policy parses"),
        ),
        protected_pids: vec![std::process::id()],
        protected_files: vec![],
        engines: Arc::new(Engines::new([])),
    }
}
