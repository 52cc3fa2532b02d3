//! The incident: a container stack that looks fine until a restart. A volume
//! the container cannot write because `--cap-drop ALL` removed
//! `DAC_OVERRIDE`; a health check calling `curl` in an image without curl; no
//! restart policy; no memory limit; a `:latest` tag; a read-only root with
//! nothing writable mounted; a container exited, unhealthy or restart-looping.
//! Specs and states come from the engine's inspect documents; "binary missing"
//! is proved by asking the engine whether the path exists in the container.
//! The only fix is starting a container that should run: declared
//! (`should_run`), or whose restart policy says so *and* that ran before
//! (existence is not intent; rootless Podman does not restart containers).

use doctor_sdk::inspect::{self, caps_list};
use doctor_sdk::prelude::*;
use serde::Deserialize;
use serde_json::Value;

doctor_sdk::config! {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        /// glob patterns of the container names to check
        names: Vec<String> = r#"["*"]"#,
        /// check stopped and created containers too
        include_stopped: bool = "true",
        /// capabilities a container with bind or named volumes must keep (add CHOWN, SETUID, SETGID as needed)
        volume_caps: Vec<String> = r#"["DAC_OVERRIDE"]"#,
        /// report a missing restart policy or restart=no
        require_restart_policy: bool = "true",
        /// report containers without a memory limit
        require_memory_limit: bool = "true",
        /// report images tagged latest or not tagged at all
        forbid_latest_tag: bool = "true",
        /// paths that must be writable (a tmpfs or volume) when the root file system is read-only
        writable_paths: Vec<String> = r#"["/tmp"]"#,
        /// a restart count above this is a restart loop
        max_restart_count: u64 = "5",
        /// propose starting containers that should be running (declared in should_run, or restart policy always/unless-stopped and it ran before)
        start_stopped: bool = "true",
        /// glob patterns of container names the operator declares must be running, whether or not they ever ran
        should_run: Vec<String> = "[]",
    }
}

struct CapsChecker;

impl Plugin for CapsChecker {
    type Config = Config;

    fn info() -> Info {
        Info::new("container-caps-checker", "Finds container specs that break on the next restart and starts containers that should be running")
            .capability(caps::CONTAINERS)
            .capability(caps::CONTAINERS_WRITE)
            .config::<Config>()
    }

    fn check(config: Config) -> Result<Vec<Finding>, Error> {
        let list = match containers::all(config.include_stopped) {
            Ok(list) => list,
            Err(e) => {
                let why = doctor_sdk::error_text(&e);
                return Ok(vec![Finding::critical(
                    "engine:unavailable",
                    "container engine",
                    format!("the container engine cannot be asked about containers: {why}"),
                )
                .evidence("error", why)]);
            }
        };
        let mut findings = Vec::new();
        for (c, name) in list
            .iter()
            .map(|c| (c, inspect::container_name(c)))
            .filter(|(_, name)| doctor_sdk::glob_match_any(&config.names, name))
        {
            // None: removed between the list and the inspect, nothing to check.
            match inspect::document(&c.id) {
                None => {}
                Some(Ok(doc)) => {
                    let container = Container {
                        id: &c.id,
                        name: &name,
                        doc: &doc,
                    };
                    findings.extend(check_container(&config, &container, &doc));
                }
                Some(Err(why)) => {
                    let message = format!("the engine could not inspect container {name}: {why}");
                    let subject = Subject::new("container", &name);
                    let f = subject.finding(Severity::Warning, "inspect-failed", message);
                    findings.push(f.evidence("error", why));
                }
            }
        }
        Ok(findings)
    }
}

/// One container; each of its findings is keyed `container:NAME:RULE` and
/// names it, its id, its image and its Compose project and service.
struct Container<'a> {
    id: &'a str,
    name: &'a str,
    doc: &'a Value,
}

impl Container<'_> {
    fn finding(&self, severity: Severity, rule: &str, message: String) -> Finding {
        let f = Subject::new("container", self.name).finding(severity, rule, message);
        inspect::identified(f.evidence("container", self.name), self.doc).evidence("id", self.id)
    }
}

fn check_container(config: &Config, s: &Container, doc: &Value) -> Vec<Finding> {
    let name = s.name;
    let image = &inspect::image_name(doc);
    let host = &doc["HostConfig"];
    let mounts = inspect::volumes(doc);
    let mut out = Vec::new();
    for cap in inspect::volume_caps_missing(doc, &config.volume_caps) {
        let f = s.finding(Severity::Critical, &format!("cap-drop-{}", cap.to_ascii_lowercase().replace('_', "-")), format!("container {name} drops {cap} but mounts {}: it cannot write files it does not own there (add --cap-add {cap})", mounts.join(", "))).evidence("volumes", mounts.join(", "));
        out.push(
            f.evidence("cap_drop", caps_list(&host["CapDrop"]).join(","))
                .evidence("cap_add", caps_list(&host["CapAdd"]).join(",")),
        );
    }
    let low: Vec<String> = inspect::unbindable_ports(doc)
        .iter()
        .map(u16::to_string)
        .collect();
    out.extend((!low.is_empty()).then(|| s.finding(Severity::Critical, "cap-drop-net-bind-service", format!("container {name} drops NET_BIND_SERVICE but binds port {} inside: the bind will fail (add --cap-add NET_BIND_SERVICE)", low.join(", "))).evidence("ports", low.join(", "))));
    out.extend(inspect::missing_health_program(s.id, name, doc).map(|(program, command, looked_in)| s.finding(Severity::Critical, "healthcheck-binary-missing", format!("container {name}'s health check runs {program:?}, which does not exist in the container (looked in {}): it can never pass", looked_in.join(", "))).evidence("healthcheck", command).evidence("program", program)));
    let restart = inspect::restart_policy(doc);
    if config.require_restart_policy && (restart.is_empty() || restart == "no") {
        let shown = if restart.is_empty() { "none" } else { restart };
        out.push(s.finding(Severity::Warning, "restart-policy", format!("container {name} has restart policy {shown:?}: after a crash or a reboot it stays down")).evidence("restart_policy", shown));
    }
    if config.require_memory_limit && inspect::memory_limit(doc).is_none() {
        let message =
            format!("container {name} has no memory limit: one leak can take the whole host down");
        out.push(s.finding(Severity::Warning, "memory-limit", message));
    }
    out.extend(inspect::latest_tag(image).filter(|_| config.forbid_latest_tag).map(|why| s.finding(Severity::Warning, "image-tag-latest", format!("container {name} uses image {image} ({why}): the next pull can change what runs")).evidence("tag", why)));
    let unwritable = inspect::unwritable_paths(doc, &config.writable_paths);
    if !unwritable.is_empty() {
        let paths = unwritable.join(", ");
        let message = format!("container {name} has a read-only root file system and nothing writable mounted at {paths}");
        let f = s.finding(Severity::Critical, "read-only-root", message);
        let writable = inspect::writable_mounts(doc).join(", ");
        out.push(
            f.evidence("unwritable", paths)
                .evidence("writable_mounts", writable),
        );
    }
    out.extend(state_findings(config, s, doc, restart));
    out
}

/// Why a stopped container should be running: the policy declares it, or the engine's intent says so.
fn should_run(config: &Config, name: &str, state: &Value, restart: &str) -> Option<String> {
    if doctor_sdk::glob_match_any(&config.should_run, name) {
        Some("the policy declares it (should_run)".into())
    } else {
        inspect::engine_wants_running(state, restart)
    }
}

fn state_findings(config: &Config, s: &Container, doc: &Value, restart: &str) -> Vec<Finding> {
    let name = s.name;
    let state = &doc["State"];
    let status = state["Status"].as_str().unwrap_or("");
    let exit_code = state["ExitCode"].as_i64().unwrap_or(0);
    let mut out = Vec::new();
    match should_run(config, name, state, restart) {
        Some(why) if matches!(status, "exited" | "created" | "stopped") => {
            let engine_error = inspect::last_error(state);
            let last_error = engine_error.map(|e| format!("; the engine's last error: {e}")).unwrap_or_default();
            let f = s.finding(Severity::Critical, "not-running", format!("container {name} is {status} (exit code {exit_code}) but should be running: {why}{last_error}")).evidence("state", status).evidence("exit_code", exit_code).evidence("restart_policy", restart).evidence("should_run", &why);
            out.push(match engine_error {
                // A start already failed (Docker keeps its error in State.Error; Podman's compatible
                // API does not): starting it again every run would only fail again.
                Some(e) => f.evidence("engine_error", e).evidence("start", "not retried: the engine's last start of this container failed; fix it (or recreate it), then start it"),
                None if config.start_stopped => f.action(Action::ContainerStart(s.id.to_string()), format!("start container {name}")),
                None => f,
            });
        }
        None if status == "created" && matches!(restart, "always" | "unless-stopped") => out.push(s.finding(Severity::Info, "never-started", format!("container {name} was created but never started; it is not expected to run until it is started once or declared in should_run")).evidence("state", status).evidence("restart_policy", restart)),
        _ => {}
    }
    let (health, failing) = inspect::health_status(state);
    if health == "unhealthy" {
        let message = format!("container {name} is unhealthy ({failing} failed checks in a row)");
        let f = s.finding(Severity::Critical, "unhealthy", message);
        out.push(f.evidence("failing_streak", failing));
    }
    let max = config.max_restart_count;
    if let Some(restarts) = inspect::restart_loop(doc, max) {
        let message = format!("container {name} has restarted {restarts} times (more than {max}): it is crash-looping");
        let f = s.finding(Severity::Critical, "restart-loop", message);
        out.push(f.evidence("restart_count", restarts));
    }
    out
}

register_plugin!(CapsChecker);

#[cfg(test)]
mod tests;
