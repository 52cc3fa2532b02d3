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

use doctor_sdk::inspect::{self, cap_missing, caps_list, normalise_cap};
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
            .filter(|(_, name)| config.names.iter().any(|g| doctor_sdk::glob_match(g, name)))
        {
            let doc = match containers::inspect(&c.id) {
                // Removed between the list and the inspect: nothing to check.
                Err(Error::NotFound(_)) => continue,
                other => other
                    .map_err(|e| doctor_sdk::error_text(&e))
                    .and_then(|text| {
                        serde_json::from_str::<Value>(&text)
                            .map_err(|e| format!("inspect document is not JSON: {e}"))
                    }),
            };
            match doc {
                Ok(doc) => findings.extend(check_container(
                    &config,
                    &Subject {
                        id: &c.id,
                        name: &name,
                        image: inspect::image_name(&doc),
                    },
                    &doc,
                )),
                Err(why) => findings.push(
                    Finding::warning(
                        format!("container:{name}:inspect-failed"),
                        format!("container {name}"),
                        format!("the engine could not inspect container {name}: {why}"),
                    )
                    .evidence("error", why),
                ),
            }
        }
        Ok(findings)
    }
}

/// One container; each of its findings is keyed `container:NAME:RULE` and names it, its id and its image.
struct Subject<'a> {
    id: &'a str,
    name: &'a str,
    image: String,
}

impl Subject<'_> {
    fn finding(&self, severity: Severity, rule: &str, message: String) -> Finding {
        Finding::new(
            format!("container:{}:{rule}", self.name),
            severity,
            format!("container {}", self.name),
            message,
        )
        .evidence("container", self.name)
        .evidence("id", self.id)
        .evidence("image", &self.image)
    }
}

fn check_container(config: &Config, s: &Subject, doc: &Value) -> Vec<Finding> {
    let (name, image, host, mounts, mut out) = (
        s.name,
        &s.image,
        &doc["HostConfig"],
        inspect::volumes(doc),
        Vec::new(),
    );
    for cap in config
        .volume_caps
        .iter()
        .map(|c| normalise_cap(c))
        .filter(|cap| !mounts.is_empty() && cap_missing(doc, cap))
    {
        let f = s.finding(Severity::Critical, &format!("cap-drop-{}", cap.to_ascii_lowercase().replace('_', "-")), format!("container {name} drops {cap} but mounts {}: it cannot write files it does not own there (add --cap-add {cap})", mounts.join(", "))).evidence("volumes", mounts.join(", "));
        out.push(
            f.evidence("cap_drop", caps_list(&host["CapDrop"]).join(","))
                .evidence("cap_add", caps_list(&host["CapAdd"]).join(",")),
        );
    }
    let low: Vec<String> = inspect::privileged_ports(doc)
        .iter()
        .map(u16::to_string)
        .collect();
    out.extend((!low.is_empty() && cap_missing(doc, "NET_BIND_SERVICE")).then(|| s.finding(Severity::Critical, "cap-drop-net-bind-service", format!("container {name} drops NET_BIND_SERVICE but binds port {} inside: the bind will fail (add --cap-add NET_BIND_SERVICE)", low.join(", "))).evidence("ports", low.join(", "))));
    out.extend(inspect::missing_health_program(s.id, name, doc).map(|(program, command, looked_in)| s.finding(Severity::Critical, "healthcheck-binary-missing", format!("container {name}'s health check runs {program:?}, which does not exist in the container (looked in {}): it can never pass", looked_in.join(", "))).evidence("healthcheck", command).evidence("program", program)));
    let restart = host["RestartPolicy"]["Name"].as_str().unwrap_or("");
    if config.require_restart_policy && (restart.is_empty() || restart == "no") {
        let shown = if restart.is_empty() { "none" } else { restart };
        out.push(s.finding(Severity::Warning, "restart-policy", format!("container {name} has restart policy {shown:?}: after a crash or a reboot it stays down")).evidence("restart_policy", shown));
    }
    out.extend(
        (config.require_memory_limit && host["Memory"].as_u64().unwrap_or(0) == 0).then(|| {
            s.finding(
                Severity::Warning,
                "memory-limit",
                format!(
                    "container {name} has no memory limit: one leak can take the whole host down"
                ),
            )
        }),
    );
    out.extend(inspect::latest_tag(image).filter(|_| config.forbid_latest_tag).map(|why| s.finding(Severity::Warning, "image-tag-latest", format!("container {name} uses image {image} ({why}): the next pull can change what runs")).evidence("tag", why)));
    let writable = inspect::writable_mounts(doc);
    let unwritable: Vec<String> = config
        .writable_paths
        .iter()
        .filter(|p| !inspect::under_mount(&writable, p))
        .cloned()
        .collect();
    out.extend((host["ReadonlyRootfs"].as_bool() == Some(true) && !unwritable.is_empty()).then(|| s.finding(Severity::Critical, "read-only-root", format!("container {name} has a read-only root file system and nothing writable mounted at {}", unwritable.join(", "))).evidence("unwritable", unwritable.join(", ")).evidence("writable_mounts", writable.join(", "))));
    out.extend(state_findings(config, s, doc, restart));
    out
}

/// Why a stopped container should be running: the policy declares it, or the engine's intent says so.
fn should_run(config: &Config, name: &str, state: &Value, restart: &str) -> Option<String> {
    match config
        .should_run
        .iter()
        .any(|g| doctor_sdk::glob_match(g, name))
    {
        true => Some("the policy declares it (should_run)".into()),
        false => inspect::engine_wants_running(state, restart),
    }
}

fn state_findings(config: &Config, s: &Subject, doc: &Value, restart: &str) -> Vec<Finding> {
    let (state, name, mut out) = (&doc["State"], s.name, Vec::new());
    let (status, exit_code) = (
        state["Status"].as_str().unwrap_or(""),
        state["ExitCode"].as_i64().unwrap_or(0),
    );
    match should_run(config, name, state, restart) {
        Some(why) if matches!(status, "exited" | "created" | "stopped") => {
            let engine_error = state["Error"].as_str().filter(|e| !e.is_empty());
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
    out.extend((health == "unhealthy").then(|| {
        s.finding(
            Severity::Critical,
            "unhealthy",
            format!("container {name} is unhealthy ({failing} failed checks in a row)"),
        )
        .evidence("failing_streak", failing)
    }));
    let restarts = doc["RestartCount"].as_u64().unwrap_or(0);
    out.extend((restarts > config.max_restart_count || state["Restarting"].as_bool() == Some(true) && restarts > 0).then(|| s.finding(Severity::Critical, "restart-loop", format!("container {name} has restarted {restarts} times (more than {}): it is crash-looping", config.max_restart_count)).evidence("restart_count", restarts)));
    out
}

register_plugin!(CapsChecker);

#[cfg(test)]
mod tests;
