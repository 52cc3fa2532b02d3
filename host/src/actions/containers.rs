//! `container-start|stop|restart`: through the engine, only containers whose
//! name matches a `containers_write` grant.

use super::{ActionContext, Executed};
use std::time::Duration;

/// What to do; a stop or restart carries the plugin's grace in ms (None:
/// the engine's default, as for every plugin built before 0.3.0).
#[derive(Debug, Clone, Copy)]
pub enum ContainerOp {
    Start,
    Stop(Option<u32>),
    Restart(Option<u32>),
}

impl ContainerOp {
    fn verb(self) -> &'static str {
        match self {
            ContainerOp::Start => "start",
            ContainerOp::Stop(_) => "stop",
            ContainerOp::Restart(_) => "restart",
        }
    }
}

pub fn container(ctx: &ActionContext, id: &str, op: ContainerOp) -> Executed {
    let Some(engine) = &ctx.engine else {
        return Executed::failed("no [container_engine] socket is configured in the policy".into());
    };
    let names = match engine.inspect(id).map(|doc| container_names(&doc)) {
        Ok(names) => names,
        Err(e) => return Executed::failed(format!("inspecting container {id}: {e}")),
    };
    if let Err(denied) = ctx.grants.container_write(&names) {
        return Executed::refused(denied.0);
    }
    let name = names.first().cloned().unwrap_or_else(|| id.to_string());
    let (result, grace) = match op {
        ContainerOp::Start => (engine.start(id), String::new()),
        ContainerOp::Stop(ms) => {
            let grace = capped_grace(ctx, ms);
            (engine.stop(id, grace), shown_grace(grace))
        }
        ContainerOp::Restart(ms) => {
            let grace = capped_grace(ctx, ms);
            (engine.restart(id, grace), shown_grace(grace))
        }
    };
    let verb = op.verb();
    match result {
        Ok(()) => Executed::applied(format!("{verb} container {name}: done{grace}")),
        Err(e) => Executed::failed(format!("{verb} container {name}{grace}: {e}")),
    }
}

/// The plugin's grace, never longer than `action_wait_max`.
fn capped_grace(ctx: &ActionContext, ms: Option<u32>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(u64::from(ms)).min(ctx.policy.doctor.action_wait_max))
}

/// Which grace applied, for the report: the engine takes whole seconds.
fn shown_grace(grace: Option<Duration>) -> String {
    match grace {
        Some(g) => format!(" (grace {} s)", g.as_millis().div_ceil(1000)),
        None => " (the engine's default grace)".into(),
    }
}

pub(super) fn container_names(inspect_json: &str) -> Vec<String> {
    let doc: serde_json::Value = serde_json::from_str(inspect_json).unwrap_or_default();
    doc.get("Name")
        .and_then(|n| n.as_str())
        .map(|n| vec![n.trim_start_matches('/').to_string()])
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{container, ContainerOp};
    use crate::actions::test_context;
    use crate::plan::ActionOutcome;
    use crate::policy::Grants;

    /// With an engine, the grant is checked against the container's names
    /// (tests/container_caps.rs and tests/engine_podman.rs run a real one).
    #[test]
    fn without_an_engine_nothing_is_started() {
        let done = container(
            &test_context(Grants {
                containers_write: vec!["*".into()],
                ..Default::default()
            }),
            "web",
            ContainerOp::Start,
        );
        assert_eq!(done.outcome, ActionOutcome::Failed);
        assert!(
            done.detail.contains("[container_engine]"),
            "{}",
            done.detail
        );
    }
}
