//! The incident: a container stack that looks fine until a restart. A volume
//! the container cannot write because `--cap-drop ALL` removed
//! `DAC_OVERRIDE`; a health check calling `curl` in an image without curl; no
//! restart policy; no memory limit; a `:latest` tag; a read-only root with
//! nothing writable mounted; a container that is exited, unhealthy or
//! restart-looping.
//!
//! Specs and states come from the engine's inspect documents (Docker, or
//! Podman's Docker-compatible API). "Binary missing" is proved by asking the
//! engine whether the path exists in the container, which works without
//! running it. The only fix is starting a container that should be running:
//! one the policy declares (`should_run`), or one whose engine intent says so
//! — restart policy `always` / `unless-stopped` (or `on-failure` after a
//! failure) *and* it ran before. A container that was only created and never
//! started is not expected to run: existence is not intent (rootless Podman
//! does not restart containers itself, so this is the doctor's job).

use doctor_sdk::prelude::*;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    names: Vec<String>,
    include_stopped: bool,
    volume_caps: Vec<String>,
    require_restart_policy: bool,
    require_memory_limit: bool,
    forbid_latest_tag: bool,
    writable_paths: Vec<String>,
    max_restart_count: u64,
    start_stopped: bool,
    should_run: Vec<String>,
}

struct CapsChecker;

impl Plugin for CapsChecker {
    type Config = Config;

    fn info() -> Info {
        Info::new(
            "container-caps-checker",
            "Finds container specs that break on the next restart and starts containers that should be running",
        )
        .capability(caps::CONTAINERS)
        .capability(caps::CONTAINERS_WRITE)
        .config_key("names", Some(r#"["*"]"#), "glob patterns of the container names to check")
        .config_key("include_stopped", Some("true"), "check stopped and created containers too")
        .config_key(
            "volume_caps",
            Some(r#"["DAC_OVERRIDE"]"#),
            "capabilities a container with bind or named volumes must keep (add CHOWN, SETUID, SETGID as needed)",
        )
        .config_key("require_restart_policy", Some("true"), "report a missing restart policy or restart=no")
        .config_key("require_memory_limit", Some("true"), "report containers without a memory limit")
        .config_key("forbid_latest_tag", Some("true"), "report images tagged latest or not tagged at all")
        .config_key(
            "writable_paths",
            Some(r#"["/tmp"]"#),
            "paths that must be writable (a tmpfs or volume) when the root file system is read-only",
        )
        .config_key("max_restart_count", Some("5"), "a restart count above this is a restart loop")
        .config_key(
            "start_stopped",
            Some("true"),
            "propose starting containers that should be running (declared in should_run, or restart policy always/unless-stopped and it ran before)",
        )
        .config_key(
            "should_run",
            Some("[]"),
            "glob patterns of container names the operator declares must be running, whether or not they ever ran",
        )
    }

    fn check(config: Config) -> Result<Vec<Finding>, Error> {
        let list = match containers::all(config.include_stopped) {
            Ok(list) => list,
            Err(e) => return Ok(vec![engine_finding(&e)]),
        };
        let mut findings = Vec::new();
        for c in list {
            let name = c.names.first().cloned().unwrap_or_else(|| c.id.chars().take(12).collect());
            if !config.names.iter().any(|g| doctor_sdk::glob_match(g, &name)) {
                continue;
            }
            let doc = match containers::inspect(&c.id) {
                Ok(text) => match serde_json::from_str::<Value>(&text) {
                    Ok(doc) => doc,
                    Err(e) => {
                        findings.push(inspect_failed(&name, &format!("inspect document is not JSON: {e}")));
                        continue;
                    }
                },
                // Removed between the list and the inspect: nothing to check.
                Err(Error::NotFound(_)) => continue,
                Err(e) => {
                    findings.push(inspect_failed(&name, &doctor_sdk::error_text(&e)));
                    continue;
                }
            };
            findings.extend(check_container(&config, &c.id, &name, &doc));
        }
        Ok(findings)
    }
}

fn engine_finding(e: &Error) -> Finding {
    let why = doctor_sdk::error_text(e);
    Finding::critical(
        "engine:unavailable",
        "container engine",
        format!("the container engine cannot be asked about containers: {why}"),
    )
    .evidence("error", why)
}

fn inspect_failed(name: &str, why: &str) -> Finding {
    Finding::warning(
        format!("container:{name}:inspect-failed"),
        format!("container {name}"),
        format!("the engine could not inspect container {name}: {why}"),
    )
    .evidence("error", why)
}

struct Subject<'a> {
    id: &'a str,
    name: &'a str,
    image: String,
}

impl Subject<'_> {
    fn finding(&self, severity: Severity, rule: &str, message: String) -> Finding {
        Finding::new(format!("container:{}:{rule}", self.name), severity, format!("container {}", self.name), message)
            .evidence("container", self.name)
            .evidence("id", self.id)
            .evidence("image", &self.image)
    }
}

fn check_container(config: &Config, id: &str, name: &str, doc: &Value) -> Vec<Finding> {
    let image = image_name(doc);
    let s = Subject { id, name, image: image.clone() };
    let mut out = Vec::new();
    out.extend(capability_findings(config, &s, doc));
    out.extend(healthcheck_finding(&s, doc));
    let restart = doc["HostConfig"]["RestartPolicy"]["Name"].as_str().unwrap_or("");
    if config.require_restart_policy && (restart.is_empty() || restart == "no") {
        let shown = if restart.is_empty() { "none" } else { restart };
        out.push(
            s.finding(
                Severity::Warning,
                "restart-policy",
                format!("container {name} has restart policy {shown:?}: after a crash or a reboot it stays down"),
            )
            .evidence("restart_policy", shown),
        );
    }
    if config.require_memory_limit && doc["HostConfig"]["Memory"].as_u64().unwrap_or(0) == 0 {
        out.push(s.finding(
            Severity::Warning,
            "memory-limit",
            format!("container {name} has no memory limit: one leak can take the whole host down"),
        ));
    }
    if config.forbid_latest_tag {
        if let Some(why) = latest_tag(&image) {
            out.push(
                s.finding(
                    Severity::Warning,
                    "image-tag-latest",
                    format!("container {name} uses image {image} ({why}): the next pull can change what runs"),
                )
                .evidence("tag", why),
            );
        }
    }
    out.extend(read_only_finding(config, &s, doc));
    out.extend(state_findings(config, &s, doc, restart));
    out
}

/// `ImageName` (Podman) or `Config.Image` (both): the name the container was
/// created from, not the resolved image id.
fn image_name(doc: &Value) -> String {
    doc["ImageName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| doc["Config"]["Image"].as_str())
        .unwrap_or("")
        .to_string()
}

/// Why the tag is a moving target, or None for a pinned reference.
fn latest_tag(image: &str) -> Option<String> {
    if image.is_empty() || image.contains('@') {
        return None; // by digest: pinned
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => Some("no tag, which means latest".into()),
        Some((_, "latest")) => Some("tag latest".into()),
        Some(_) => None,
    }
}

fn normalise_cap(cap: &str) -> String {
    let upper = cap.trim().to_ascii_uppercase();
    upper.strip_prefix("CAP_").map(str::to_string).unwrap_or(upper)
}

fn caps_list(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|c| c.as_str()).map(normalise_cap).collect()
}

/// Is `cap` missing from the container? Docker shows `CapDrop: ["ALL"]`;
/// Podman expands ALL into the list of its default capabilities, and shows
/// the effective set in `EffectiveCaps` once known.
fn cap_missing(doc: &Value, cap: &str) -> bool {
    let host = &doc["HostConfig"];
    let dropped = caps_list(&host["CapDrop"]);
    let added = caps_list(&host["CapAdd"]);
    if added.iter().any(|c| c == cap || c == "ALL") {
        return false;
    }
    if dropped.iter().any(|c| c == cap || c == "ALL") {
        return true;
    }
    let effective = caps_list(&doc["EffectiveCaps"]);
    !effective.is_empty() && !effective.iter().any(|c| c == cap)
}

fn volumes(doc: &Value) -> Vec<String> {
    let mut out: Vec<String> = doc["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| matches!(m["Type"].as_str(), Some("bind") | Some("volume")))
        .filter_map(|m| m["Destination"].as_str().map(str::to_string))
        .collect();
    for bind in doc["HostConfig"]["Binds"].as_array().into_iter().flatten().filter_map(|b| b.as_str()) {
        if let Some(dest) = bind.split(':').nth(1) {
            if !out.iter().any(|d| d == dest) {
                out.push(dest.to_string());
            }
        }
    }
    out
}

/// Container ports below 1024 the container binds inside.
fn privileged_ports(doc: &Value) -> Vec<u16> {
    let mut out = Vec::new();
    for map in [&doc["Config"]["ExposedPorts"], &doc["HostConfig"]["PortBindings"], &doc["NetworkSettings"]["Ports"]] {
        for key in map.as_object().into_iter().flat_map(|m| m.keys()) {
            if let Some(port) = key.split('/').next().and_then(|p| p.parse::<u16>().ok()) {
                if port < 1024 && !out.contains(&port) {
                    out.push(port);
                }
            }
        }
    }
    out
}

fn capability_findings(config: &Config, s: &Subject, doc: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    let dropped = caps_list(&doc["HostConfig"]["CapDrop"]);
    let added = caps_list(&doc["HostConfig"]["CapAdd"]);
    let mounts = volumes(doc);
    if !mounts.is_empty() {
        for cap in config.volume_caps.iter().map(|c| normalise_cap(c)) {
            if cap_missing(doc, &cap) {
                out.push(
                    s.finding(
                        Severity::Critical,
                        &format!("cap-drop-{}", cap.to_ascii_lowercase().replace('_', "-")),
                        format!(
                            "container {} drops {cap} but mounts {}: it cannot write files it does not own there (add --cap-add {cap})",
                            s.name,
                            mounts.join(", ")
                        ),
                    )
                    .evidence("volumes", mounts.join(", "))
                    .evidence("cap_drop", dropped.join(","))
                    .evidence("cap_add", added.join(",")),
                );
            }
        }
    }
    let low = privileged_ports(doc);
    if !low.is_empty() && cap_missing(doc, "NET_BIND_SERVICE") {
        let ports: Vec<String> = low.iter().map(u16::to_string).collect();
        out.push(
            s.finding(
                Severity::Critical,
                "cap-drop-net-bind-service",
                format!(
                    "container {} drops NET_BIND_SERVICE but binds port {} inside: the bind will fail (add --cap-add NET_BIND_SERVICE)",
                    s.name,
                    ports.join(", ")
                ),
            )
            .evidence("ports", ports.join(", ")),
        );
    }
    out
}

/// Shell words that are not programs to look for.
const SHELL_BUILTINS: &[&str] = &["exit", "true", "false", "test", "[", "echo", "cd", "exec", "!", "set", "command", ":"];

/// The program a health check runs: the first word of its CMD or CMD-SHELL test.
fn health_program(doc: &Value) -> Option<(String, String)> {
    let test: Vec<&str> = doc["Config"]["Healthcheck"]["Test"].as_array()?.iter().filter_map(|v| v.as_str()).collect();
    let (kind, rest) = test.split_first()?;
    let command = rest.join(" ");
    let first = match *kind {
        "CMD" => rest.first()?.to_string(),
        "CMD-SHELL" => {
            let words = shell_words(rest.first()?);
            let first = words.into_iter().find(|w| !(w.contains('=') && !w.starts_with('/')))?;
            if SHELL_BUILTINS.contains(&first.as_str()) {
                return None;
            }
            first
        }
        _ => return None, // NONE, or inherited from the image
    };
    Some((first, command))
}

fn shell_words(line: &str) -> Vec<String> {
    line.split_whitespace().map(|w| w.trim_matches(|c| c == '\'' || c == '"').to_string()).filter(|w| !w.is_empty()).collect()
}

fn search_path(doc: &Value) -> Vec<String> {
    let from_env = doc["Config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str())
        .find_map(|e| e.strip_prefix("PATH="))
        .map(str::to_string);
    from_env
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into())
        .split(':')
        .filter(|d| d.starts_with('/'))
        .map(str::to_string)
        .collect()
}

fn healthcheck_finding(s: &Subject, doc: &Value) -> Option<Finding> {
    let (program, command) = health_program(doc)?;
    let candidates: Vec<String> = if program.starts_with('/') {
        vec![program.clone()]
    } else if program.contains('/') {
        return None; // relative to the working directory: not decidable here
    } else {
        search_path(doc).into_iter().map(|d| format!("{}/{program}", d.trim_end_matches('/'))).collect()
    };
    for path in &candidates {
        match containers::path_exists(s.id, path) {
            Ok(true) => return None,
            Ok(false) => {}
            Err(e) => {
                doctor_sdk::log(host::LogLevel::Warn, format!("container {}: cannot check {path}: {}", s.name, doctor_sdk::error_text(&e)));
                return None; // unproven: say nothing rather than guess
            }
        }
    }
    Some(
        s.finding(
            Severity::Critical,
            "healthcheck-binary-missing",
            format!(
                "container {}'s health check runs {program:?}, which does not exist in the container (looked in {}): it can never pass",
                s.name,
                candidates.join(", ")
            ),
        )
        .evidence("healthcheck", command)
        .evidence("program", program),
    )
}

fn read_only_finding(config: &Config, s: &Subject, doc: &Value) -> Option<Finding> {
    if doc["HostConfig"]["ReadonlyRootfs"].as_bool() != Some(true) {
        return None;
    }
    let mut writable: Vec<String> = doc["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["RW"].as_bool().unwrap_or(true))
        .filter_map(|m| m["Destination"].as_str().map(str::to_string))
        .collect();
    writable.extend(doc["HostConfig"]["Tmpfs"].as_object().into_iter().flat_map(|m| m.keys().cloned()));
    let covered = |path: &str| {
        writable.iter().any(|d| {
            let d = d.trim_end_matches('/');
            d.is_empty() || path == d || path.starts_with(&format!("{d}/"))
        })
    };
    let missing: Vec<&String> = config.writable_paths.iter().filter(|p| !covered(p)).collect();
    if missing.is_empty() {
        return None;
    }
    let missing: Vec<String> = missing.into_iter().cloned().collect();
    Some(
        s.finding(
            Severity::Critical,
            "read-only-root",
            format!(
                "container {} has a read-only root file system and nothing writable mounted at {}",
                s.name,
                missing.join(", ")
            ),
        )
        .evidence("unwritable", missing.join(", "))
        .evidence("writable_mounts", writable.join(", ")),
    )
}

/// Why a stopped container should be running, or None when nothing says so.
/// Existence is not intent: a created, never-started container is expected
/// to run only when the policy declares it.
fn should_run(config: &Config, name: &str, state: &Value, restart: &str) -> Option<String> {
    if config.should_run.iter().any(|g| doctor_sdk::glob_match(g, name)) {
        return Some("the policy declares it (should_run)".into());
    }
    let started_at = state["StartedAt"].as_str().unwrap_or("");
    // The engines write the zero time (0001-01-01...) for "never started".
    let ran_before = !started_at.is_empty() && !started_at.starts_with("0001-01-01");
    if !ran_before || state["StoppedByUser"].as_bool() == Some(true) {
        return None;
    }
    let exit_code = state["ExitCode"].as_i64().unwrap_or(0);
    match restart {
        "always" | "unless-stopped" => Some(format!("its restart policy {restart:?} says it should run and it ran before (started {started_at})")),
        "on-failure" if exit_code != 0 => Some(format!("its restart policy \"on-failure\" says it should run again after exit code {exit_code}")),
        _ => None,
    }
}

fn state_findings(config: &Config, s: &Subject, doc: &Value, restart: &str) -> Vec<Finding> {
    let state = &doc["State"];
    let status = state["Status"].as_str().unwrap_or("");
    let exit_code = state["ExitCode"].as_i64().unwrap_or(0);
    let mut out = Vec::new();
    let stopped = matches!(status, "exited" | "created" | "stopped");
    match should_run(config, s.name, state, restart) {
        Some(why) if stopped => {
            let engine_error = state["Error"].as_str().filter(|e| !e.is_empty());
            let finding = s
                .finding(
                    Severity::Critical,
                    "not-running",
                    format!(
                        "container {} is {status} (exit code {exit_code}) but should be running: {why}{}",
                        s.name,
                        engine_error.map(|e| format!("; the engine's last error: {e}")).unwrap_or_default()
                    ),
                )
                .evidence("state", status)
                .evidence("exit_code", exit_code)
                .evidence("restart_policy", restart)
                .evidence("should_run", &why);
            if let Some(e) = engine_error {
                // A start already failed (Docker keeps its error in State.Error;
                // Podman's compatible API does not): starting it again every
                // run would only fail again. Said with the engine's words.
                out.push(
                    finding
                        .evidence("engine_error", e)
                        .evidence("start", "not retried: the engine's last start of this container failed; fix it (or recreate it), then start it"),
                );
                return finish_state_findings(out, s, doc, config);
            }
            out.push(if config.start_stopped {
                finding.action(Action::ContainerStart(s.id.to_string()), format!("start container {}", s.name))
            } else {
                finding
            });
        }
        None if status == "created" && matches!(restart, "always" | "unless-stopped") => out.push(
            s.finding(
                Severity::Info,
                "never-started",
                format!(
                    "container {} was created but never started; it is not expected to run until it is started once or declared in should_run",
                    s.name
                ),
            )
            .evidence("state", status)
            .evidence("restart_policy", restart),
        ),
        _ => {}
    }
    finish_state_findings(out, s, doc, config)
}

/// Health and restart-loop findings, after the running-state ones.
fn finish_state_findings(mut out: Vec<Finding>, s: &Subject, doc: &Value, config: &Config) -> Vec<Finding> {
    let state = &doc["State"];
    let health = state["Health"]["Status"]
        .as_str()
        .filter(|h| !h.is_empty())
        .or_else(|| state["Healthcheck"]["Status"].as_str())
        .unwrap_or("");
    if health == "unhealthy" {
        let failing = state["Health"]["FailingStreak"].as_u64().or_else(|| state["Healthcheck"]["FailingStreak"].as_u64()).unwrap_or(0);
        out.push(
            s.finding(Severity::Critical, "unhealthy", format!("container {} is unhealthy ({failing} failed checks in a row)", s.name))
                .evidence("failing_streak", failing),
        );
    }
    let restarts = doc["RestartCount"].as_u64().unwrap_or(0);
    if restarts > config.max_restart_count || state["Restarting"].as_bool() == Some(true) && restarts > 0 {
        out.push(
            s.finding(
                Severity::Critical,
                "restart-loop",
                format!("container {} has restarted {restarts} times (more than {}): it is crash-looping", s.name, config.max_restart_count),
            )
            .evidence("restart_count", restarts),
        );
    }
    out
}

register_plugin!(CapsChecker);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tags() {
        assert!(latest_tag("localhost/busybox:latest").is_some());
        assert!(latest_tag("busybox").is_some());
        assert!(latest_tag("localhost:5000/busybox").is_some());
        assert!(latest_tag("localhost:5000/busybox:1.36").is_none());
        assert!(latest_tag("busybox@sha256:abc").is_none());
    }

    #[test]
    fn podman_expanded_cap_drop_counts_as_drop_all() {
        let podman = json!({"HostConfig": {"CapDrop": ["CAP_CHOWN", "CAP_DAC_OVERRIDE"], "CapAdd": []}});
        assert!(cap_missing(&podman, "DAC_OVERRIDE"));
        let docker = json!({"HostConfig": {"CapDrop": ["ALL"], "CapAdd": ["DAC_OVERRIDE"]}});
        assert!(!cap_missing(&docker, "DAC_OVERRIDE"));
        assert!(cap_missing(&docker, "CHOWN"));
        let plain = json!({"HostConfig": {"CapDrop": ["CAP_NET_RAW"], "CapAdd": null}});
        assert!(!cap_missing(&plain, "DAC_OVERRIDE"));
    }

    fn config(should_run: &[&str]) -> Config {
        Config {
            names: vec!["*".into()],
            include_stopped: true,
            volume_caps: vec![],
            require_restart_policy: true,
            require_memory_limit: true,
            forbid_latest_tag: true,
            writable_paths: vec![],
            max_restart_count: 5,
            start_stopped: true,
            should_run: should_run.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn should_run_needs_a_declaration_or_a_container_that_ran_before() {
        let never = json!({"Status": "created", "StartedAt": "0001-01-01T00:00:00Z", "ExitCode": 0});
        let ran = json!({"Status": "exited", "StartedAt": "2026-11-30T05:00:00Z", "ExitCode": 137});
        let by_user = json!({"Status": "exited", "StartedAt": "2026-11-30T05:00:00Z", "ExitCode": 0, "StoppedByUser": true});
        assert!(should_run(&config(&[]), "web", &never, "always").is_none(), "existence is not intent");
        assert!(should_run(&config(&["web*"]), "web", &never, "no").unwrap().contains("should_run"));
        assert!(should_run(&config(&[]), "web", &ran, "unless-stopped").unwrap().contains("ran before"));
        assert!(should_run(&config(&[]), "web", &ran, "on-failure").is_some());
        assert!(should_run(&config(&[]), "web", &ran, "no").is_none());
        assert!(should_run(&config(&[]), "web", &by_user, "always").is_none(), "stopped by its operator");
    }

    #[test]
    fn a_start_the_engine_says_failed_is_not_proposed_again() {
        let doc = json!({"State": {"Status": "exited", "StartedAt": "0001-01-01T00:00:00Z", "ExitCode": 127, "Error": "exec: \"/bin/x\": no such file"}});
        let s = Subject { id: "abc", name: "web", image: String::new() };
        let out = state_findings(&config(&["web"]), &s, &doc, "always");
        let f = out.iter().find(|f| f.key() == "container:web:not-running").unwrap();
        assert_eq!(f.action_count(), 0);
        assert!(f.message().contains("/bin/x"), "{}", f.message());
    }

    #[test]
    fn health_programs() {
        let shell = json!({"Config": {"Healthcheck": {"Test": ["CMD-SHELL", "curl -f http://localhost/"]}}});
        assert_eq!(health_program(&shell).map(|p| p.0), Some("curl".into()));
        let cmd = json!({"Config": {"Healthcheck": {"Test": ["CMD", "/bin/wget", "-q"]}}});
        assert_eq!(health_program(&cmd).map(|p| p.0), Some("/bin/wget".into()));
        let none = json!({"Config": {"Healthcheck": {"Test": ["NONE"]}}});
        assert!(health_program(&none).is_none());
    }
}
