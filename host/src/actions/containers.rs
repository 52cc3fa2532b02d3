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
    if ctx.engines.is_empty() {
        return Executed::failed(NO_ENGINE.into());
    }
    let located = ctx.engines.locate(id, |e| ctx.grants.engine(e));
    let (engine_name, engine, id) = match located {
        Ok(found) => found,
        Err(e) => return Executed::failed(format!("container {id}: {e}")),
    };
    let names = match engine.inspect(id) {
        Ok(doc) => grant_names(engine_name, &doc),
        Err(e) => {
            let e = ctx.engines.named_error(engine_name, e);
            return Executed::failed(format!("inspecting container {id}: {e}"));
        }
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
    let at = engine_suffix(ctx, engine_name);
    match result {
        Ok(()) => Executed::applied(format!("{verb} container {name}{at}: done{grace}")),
        Err(e) => Executed::failed(format!("{verb} container {name}{at}{grace}: {e}")),
    }
}

pub(super) const NO_ENGINE: &str =
    "no container engine is configured in the policy ([container_engine] or [container_engines.NAME])";

/// " on engine NAME" when the policy has several, for the report.
fn engine_suffix(ctx: &ActionContext, engine: &str) -> String {
    match ctx.engines.names().count() {
        0 | 1 => String::new(),
        _ => format!(" on engine {engine}"),
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

/// What a `containers_write` pattern may match for a container: its name,
/// its name qualified by its engine (`docker/web`), and its Compose project
/// and service from the labels Compose writes (`compose:shop`,
/// `compose:shop/api`). The plain name comes first (the report names it).
pub(super) fn grant_names(engine: &str, inspect_json: &str) -> Vec<String> {
    let doc: serde_json::Value = serde_json::from_str(inspect_json).unwrap_or_default();
    let mut names = Vec::new();
    if let Some(name) = doc.get("Name").and_then(|n| n.as_str()) {
        let name = name.trim_start_matches('/');
        names.push(name.to_string());
        names.push(format!("{engine}/{name}"));
    }
    let label = |key: &str| {
        doc.pointer("/Config/Labels")
            .and_then(|l| l.get(key))
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
    };
    if let Some(project) = label("com.docker.compose.project") {
        names.push(format!("compose:{project}"));
        if let Some(service) = label("com.docker.compose.service") {
            names.push(format!("compose:{project}/{service}"));
        }
    }
    names
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

    #[test]
    fn a_container_is_granted_by_name_engine_name_or_compose_project() {
        let doc = r#"{"Name": "/shop-api-1", "Config": {"Labels": {
            "com.docker.compose.project": "shop", "com.docker.compose.service": "api"}}}"#;
        assert_eq!(
            super::grant_names("docker", doc),
            [
                "shop-api-1",
                "docker/shop-api-1",
                "compose:shop",
                "compose:shop/api"
            ]
        );
        let grants = |pattern: &str| {
            test_context(Grants {
                containers_write: vec![pattern.into()],
                ..Default::default()
            })
            .grants
            .container_write(&super::grant_names("docker", doc))
            .is_ok()
        };
        assert!(grants("shop-*"));
        assert!(grants("docker/*"));
        assert!(grants("compose:shop/api"));
        assert!(grants("compose:shop"));
        assert!(!grants("podman/*"), "another engine's name");
        assert!(!grants("compose:shop/db"), "another service");
        assert!(!grants("compose:web/*"), "another project");
        assert!(!grants("*/api"), "names and Compose identities are apart");
        assert!(grants("*/shop-api-1"), "the name on any engine");
    }
}
