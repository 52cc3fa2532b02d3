//! `container-start|stop|restart`: through the engine, only containers whose
//! name matches a `containers_write` grant.

use super::{ActionContext, Executed};
use std::time::Duration;

/// Grace the engine gives a container between TERM and KILL.
const CONTAINER_STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub enum ContainerOp {
    Start,
    Stop,
    Restart,
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
    let result = match op {
        ContainerOp::Start => engine.start(id),
        ContainerOp::Stop => engine.stop(id, CONTAINER_STOP_GRACE),
        ContainerOp::Restart => engine.restart(id, CONTAINER_STOP_GRACE),
    };
    match result {
        Ok(()) => Executed::applied(format!("{op:?} container {name}: done")),
        Err(e) => Executed::failed(format!("{op:?} container {name}: {e}")),
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
