//! Reading a container engine's inspect document (`containers::inspect`):
//! Docker's, or Podman's Docker-compatible one, which spell some things
//! differently (Podman expands `--cap-drop ALL` into a list, keeps the image
//! name in `ImageName`, the health state in `State.Healthcheck`). Every
//! plugin that looks at containers reads them through these, so the engines'
//! differences are handled once.

use crate::containers::{self, Container};
use crate::Error;
use serde_json::Value;

/// A container's inspect document (`containers::inspect`): None when the
/// container is gone (removed between a list and the inspect: nothing to
/// check), else the document or why there is none (the engine's error, or
/// an answer that is not JSON).
pub fn document(id: &str) -> Option<Result<Value, String>> {
    match containers::inspect(id) {
        Err(Error::NotFound(_)) => None,
        Err(e) => Some(Err(crate::error_text(&e))),
        Ok(text) => Some(
            serde_json::from_str(&text).map_err(|e| format!("inspect document is not JSON: {e}")),
        ),
    }
}

/// A container's short id: the first 12 characters, as the engines show it.
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// A container's name: its first name, else its short id.
pub fn container_name(c: &Container) -> String {
    c.names.first().cloned().unwrap_or_else(|| short_id(&c.id))
}

/// A 64-hex-digit container id in a cgroup path: `/docker/<id>`,
/// `/system.slice/docker-<id>.scope`, `/libpod_parent/libpod-<id>`,
/// `.../libpod-<id>.scope/container`.
pub fn container_id_in_cgroup(cgroup: &str) -> Option<String> {
    cgroup
        .split(['/', '-', '.', ':'])
        .find(|part| part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
}

/// `ImageName` (Podman) or `Config.Image` (both): the name the container was
/// created from, not the resolved image id.
/// The Compose project and service a container belongs to, from the labels
/// Compose writes: `shop/api` (`shop` when no service is labelled).
pub fn compose(doc: &Value) -> Option<String> {
    let labels = &doc["Config"]["Labels"];
    let label = |key: &str| labels[key].as_str().filter(|v| !v.is_empty());
    let project = label("com.docker.compose.project")?;
    Some(match label("com.docker.compose.service") {
        Some(service) => format!("{project}/{service}"),
        None => project.to_string(),
    })
}

/// A finding about a container, with what an operator looks it up by:
/// its image and, for a Compose container, its project and service.
pub fn identified(f: crate::Finding, doc: &Value) -> crate::Finding {
    let f = f.evidence("image", image_name(doc));
    match compose(doc) {
        Some(compose) => f.evidence("compose", compose),
        None => f,
    }
}

pub fn image_name(doc: &Value) -> String {
    doc["ImageName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| doc["Config"]["Image"].as_str())
        .unwrap_or("")
        .to_string()
}

/// Why an image reference's tag is a moving target, or None when it is pinned.
pub fn latest_tag(image: &str) -> Option<String> {
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

/// `cap_net_raw` → `NET_RAW`: the engines and operators spell capabilities both ways.
pub fn normalise_cap(cap: &str) -> String {
    let upper = cap.trim().to_ascii_uppercase();
    upper
        .strip_prefix("CAP_")
        .map(str::to_string)
        .unwrap_or(upper)
}

/// A capability list (`HostConfig.CapDrop`, `CapAdd`, `EffectiveCaps`), normalised.
pub fn caps_list(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str())
        .map(normalise_cap)
        .collect()
}

/// Is `cap` missing from the container? Docker shows `CapDrop: ["ALL"]`;
/// Podman expands ALL into the list of its default capabilities, and shows
/// the effective set in `EffectiveCaps` once known.
pub fn cap_missing(doc: &Value, cap: &str) -> bool {
    let host = &doc["HostConfig"];
    if caps_list(&host["CapAdd"])
        .iter()
        .any(|c| c == cap || c == "ALL")
    {
        return false;
    }
    if caps_list(&host["CapDrop"])
        .iter()
        .any(|c| c == cap || c == "ALL")
    {
        return true;
    }
    let effective = caps_list(&doc["EffectiveCaps"]);
    !effective.is_empty() && !effective.iter().any(|c| c == cap)
}

/// Which of `caps` (spelled either way, see [`normalise_cap`]) the
/// container lacks although it mounts volumes: without them it cannot write
/// files it does not own there. Empty when it mounts no volume.
pub fn volume_caps_missing(doc: &Value, caps: &[String]) -> Vec<String> {
    if volumes(doc).is_empty() {
        return Vec::new();
    }
    caps.iter()
        .map(|c| normalise_cap(c))
        .filter(|cap| cap_missing(doc, cap))
        .collect()
}

/// The ports below 1024 the container binds inside although it lacks
/// `NET_BIND_SERVICE`: each of those binds will fail.
pub fn unbindable_ports(doc: &Value) -> Vec<u16> {
    let ports = privileged_ports(doc);
    if ports.is_empty() || !cap_missing(doc, "NET_BIND_SERVICE") {
        return Vec::new();
    }
    ports
}

/// The container's memory limit in bytes; None without one (the engines
/// write 0).
pub fn memory_limit(doc: &Value) -> Option<u64> {
    doc["HostConfig"]["Memory"]
        .as_u64()
        .filter(|&bytes| bytes > 0)
}

/// The name of the container's restart policy; `""` without one.
pub fn restart_policy(doc: &Value) -> &str {
    doc["HostConfig"]["RestartPolicy"]["Name"]
        .as_str()
        .unwrap_or("")
}

/// Which of `paths` the container cannot write: its root file system is
/// read-only and no writable mount (see [`writable_mounts`]) holds them.
/// Empty when the root file system is writable.
pub fn unwritable_paths(doc: &Value, paths: &[String]) -> Vec<String> {
    if doc["HostConfig"]["ReadonlyRootfs"].as_bool() != Some(true) {
        return Vec::new();
    }
    let writable = writable_mounts(doc);
    paths
        .iter()
        .filter(|p| !under_mount(&writable, p))
        .cloned()
        .collect()
}

/// Where bind and named volumes are mounted inside the container.
pub fn volumes(doc: &Value) -> Vec<String> {
    let mounts = doc["Mounts"].as_array().into_iter().flatten();
    let mut out: Vec<String> = mounts
        .filter(|m| matches!(m["Type"].as_str(), Some("bind") | Some("volume")))
        .filter_map(|m| m["Destination"].as_str().map(str::to_string))
        .collect();
    for bind in doc["HostConfig"]["Binds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b.as_str())
    {
        if let Some(dest) = bind.split(':').nth(1) {
            if !out.iter().any(|d| d == dest) {
                out.push(dest.to_string());
            }
        }
    }
    out
}

/// Where something writable is mounted: read-write mounts and tmpfs.
pub fn writable_mounts(doc: &Value) -> Vec<String> {
    let mounts = doc["Mounts"].as_array().into_iter().flatten();
    let mut out: Vec<String> = mounts
        .filter(|m| m["RW"].as_bool().unwrap_or(true))
        .filter_map(|m| m["Destination"].as_str().map(str::to_string))
        .collect();
    out.extend(
        doc["HostConfig"]["Tmpfs"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys().cloned()),
    );
    out
}

/// Is `path` one of `mounts` or below one?
pub fn under_mount(mounts: &[String], path: &str) -> bool {
    mounts.iter().any(|d| {
        let d = d.trim_end_matches('/');
        d.is_empty() || path == d || path.starts_with(&format!("{d}/"))
    })
}

/// Container ports below 1024 the container binds inside.
pub fn privileged_ports(doc: &Value) -> Vec<u16> {
    let mut out = Vec::new();
    for map in [
        &doc["Config"]["ExposedPorts"],
        &doc["HostConfig"]["PortBindings"],
        &doc["NetworkSettings"]["Ports"],
    ] {
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

/// Host TCP ports a container publishes, from NetworkSettings.Ports or HostConfig.PortBindings.
pub fn published_ports(doc: &Value) -> Vec<u16> {
    let mut out = Vec::new();
    for map in [
        &doc["NetworkSettings"]["Ports"],
        &doc["HostConfig"]["PortBindings"],
    ] {
        for (inner, bindings) in map.as_object().into_iter().flatten() {
            if !inner.ends_with("/tcp") && inner.contains('/') {
                continue;
            }
            for b in bindings.as_array().into_iter().flatten() {
                if let Some(port) = b["HostPort"].as_str().and_then(|p| p.parse::<u16>().ok()) {
                    if !out.contains(&port) {
                        out.push(port);
                    }
                }
            }
        }
    }
    out
}

/// Shell words that are not programs to look for.
const SHELL_BUILTINS: &[&str] = &[
    "exit", "true", "false", "test", "[", "echo", "cd", "exec", "!", "set", "command", ":",
];

/// The program a health check runs and its whole command: the first word of
/// its CMD or CMD-SHELL test (None for NONE, an inherited test, a builtin).
pub fn health_program(doc: &Value) -> Option<(String, String)> {
    let test: Vec<&str> = doc["Config"]["Healthcheck"]["Test"]
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let (kind, rest) = test.split_first()?;
    let command = rest.join(" ");
    let first = match *kind {
        "CMD" => rest.first()?.to_string(),
        "CMD-SHELL" => {
            let words = rest
                .first()?
                .split_whitespace()
                .map(|w| w.trim_matches(|c| c == '\'' || c == '"'))
                .filter(|w| !w.is_empty());
            // Skip `VAR=value` assignments; a path with `=` is still a program.
            let first = words
                .into_iter()
                .find(|w| !w.contains('=') || w.starts_with('/'))?
                .to_string();
            if SHELL_BUILTINS.contains(&first.as_str()) {
                return None;
            }
            first
        }
        _ => return None,
    };
    Some((first, command))
}

/// Where the container would find `program`: itself when absolute, each
/// directory of the container's `PATH` otherwise; None when relative to the
/// working directory (not decidable from outside).
pub fn program_candidates(doc: &Value, program: &str) -> Option<Vec<String>> {
    if program.starts_with('/') {
        return Some(vec![program.to_string()]);
    }
    if program.contains('/') {
        return None;
    }
    let env = doc["Config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str());
    let path = env
        .into_iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    Some(
        path.split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| format!("{}/{program}", d.trim_end_matches('/')))
            .collect(),
    )
}

/// The health check's program when it provably does not exist in container
/// `id`: `(program, health check command, paths looked in)`. The engine is
/// asked whether each candidate path exists, which works without running
/// the container. None when it exists, is not decidable, or the engine
/// cannot tell (logged): unproven, say nothing rather than guess.
pub fn missing_health_program(
    id: &str,
    name: &str,
    doc: &Value,
) -> Option<(String, String, Vec<String>)> {
    let (program, command) = health_program(doc)?;
    let candidates = program_candidates(doc, &program)?;
    for path in &candidates {
        match crate::containers::path_exists(id, path) {
            Ok(true) => return None,
            Ok(false) => {}
            Err(e) => {
                crate::log(
                    crate::host::LogLevel::Warn,
                    format!(
                        "container {name}: cannot check {path}: {}",
                        crate::error_text(&e)
                    ),
                );
                return None;
            }
        }
    }
    Some((program, command, candidates))
}

/// Why the engine's own intent says a stopped container should run: restart
/// policy `always` / `unless-stopped`, or `on-failure` after a failure, *and*
/// it ran before and its operator did not stop it. Existence is not intent:
/// a created, never-started container is expected to run only when declared.
pub fn engine_wants_running(state: &Value, restart: &str) -> Option<String> {
    if !ran_before(state) || state["StoppedByUser"].as_bool() == Some(true) {
        return None;
    }
    let (started_at, exit_code) = (
        state["StartedAt"].as_str().unwrap_or(""),
        state["ExitCode"].as_i64().unwrap_or(0),
    );
    match restart {
        "always" | "unless-stopped" => Some(format!("its restart policy {restart:?} says it should run and it ran before (started {started_at})")),
        "on-failure" if exit_code != 0 => Some(format!("its restart policy \"on-failure\" says it should run again after exit code {exit_code}")),
        _ => None,
    }
}

/// Did the container ever start? The engines write the zero time
/// (`0001-01-01...`) into `State.StartedAt` for "never started".
pub fn ran_before(state: &Value) -> bool {
    let started_at = state["StartedAt"].as_str().unwrap_or("");
    !started_at.is_empty() && !started_at.starts_with("0001-01-01")
}

/// The engine's error from the container's last start, if that failed:
/// Docker keeps it in `State.Error`; Podman's compatible API does not.
pub fn last_error(state: &Value) -> Option<&str> {
    state["Error"].as_str().filter(|e| !e.is_empty())
}

/// How many times a crash-looping container has restarted: more than
/// `max`, or at least once and restarting right now. None when it is not
/// looping.
pub fn restart_loop(doc: &Value, max: u64) -> Option<u64> {
    let restarts = doc["RestartCount"].as_u64().unwrap_or(0);
    let restarting = doc["State"]["Restarting"].as_bool() == Some(true);
    (restarts > max || restarting && restarts > 0).then_some(restarts)
}

/// The health check's status and failing streak: `State.Health` (Docker)
/// or `State.Healthcheck` (Podman); `""` without a health check.
pub fn health_status(state: &Value) -> (&str, u64) {
    let status = state["Health"]["Status"]
        .as_str()
        .filter(|h| !h.is_empty())
        .or_else(|| state["Healthcheck"]["Status"].as_str())
        .unwrap_or("");
    let failing = state["Health"]["FailingStreak"]
        .as_u64()
        .or_else(|| state["Healthcheck"]["FailingStreak"].as_u64())
        .unwrap_or(0);
    (status, failing)
}

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
        let podman =
            json!({"HostConfig": {"CapDrop": ["CAP_CHOWN", "CAP_DAC_OVERRIDE"], "CapAdd": []}});
        assert!(cap_missing(&podman, "DAC_OVERRIDE"));
        let docker = json!({"HostConfig": {"CapDrop": ["ALL"], "CapAdd": ["DAC_OVERRIDE"]}});
        assert!(!cap_missing(&docker, "DAC_OVERRIDE"));
        assert!(cap_missing(&docker, "CHOWN"));
        let plain = json!({"HostConfig": {"CapDrop": ["CAP_NET_RAW"], "CapAdd": null}});
        assert!(!cap_missing(&plain, "DAC_OVERRIDE"));
    }

    #[test]
    fn health_programs() {
        let shell = json!({"Config": {"Healthcheck": {"Test": ["CMD-SHELL", "curl -f http://localhost/"]}}});
        assert_eq!(health_program(&shell).map(|p| p.0), Some("curl".into()));
        let cmd = json!({"Config": {"Healthcheck": {"Test": ["CMD", "/bin/wget", "-q"]}}});
        assert_eq!(health_program(&cmd).map(|p| p.0), Some("/bin/wget".into()));
        let none = json!({"Config": {"Healthcheck": {"Test": ["NONE"]}}});
        assert!(health_program(&none).is_none());
        let env = json!({"Config": {"Env": ["PATH=/bin:/opt/x/"]}});
        assert_eq!(
            program_candidates(&env, "curl").unwrap(),
            ["/bin/curl", "/opt/x/curl"]
        );
        assert!(program_candidates(&env, "./x").is_none());
    }

    #[test]
    fn a_missing_health_program_is_proved_by_the_engine() {
        use crate::testing::{answer_with, Facts};
        let doc = json!({"Config": {"Env": ["PATH=/bin:/usr/bin"], "Healthcheck": {"Test": ["CMD-SHELL", "curl -f http://localhost/"]}}});
        let facts = |exists: &'static str| {
            Facts::new().on("containers.path_exists", move |args| {
                Some(Ok::<_, crate::Error>(args[1] == exists))
            })
        };
        let missing = answer_with(facts("/nowhere"), || {
            missing_health_program("abc", "web", &doc)
        })
        .unwrap();
        assert_eq!((missing.0.as_str(), missing.2.len()), ("curl", 2));
        assert!(
            answer_with(facts("/usr/bin/curl"), || missing_health_program(
                "abc", "web", &doc
            ))
            .is_none()
        );
    }

    #[test]
    fn the_engine_wants_running_only_what_ran_before() {
        let never =
            json!({"Status": "created", "StartedAt": "0001-01-01T00:00:00Z", "ExitCode": 0});
        let ran = json!({"Status": "exited", "StartedAt": "2026-11-30T05:00:00Z", "ExitCode": 137});
        let by_user = json!({"Status": "exited", "StartedAt": "2026-11-30T05:00:00Z", "ExitCode": 0, "StoppedByUser": true});
        assert!(
            engine_wants_running(&never, "always").is_none(),
            "existence is not intent"
        );
        assert!(engine_wants_running(&ran, "unless-stopped")
            .unwrap()
            .contains("ran before"));
        assert!(engine_wants_running(&ran, "on-failure").is_some());
        assert!(engine_wants_running(&ran, "no").is_none());
        assert!(
            engine_wants_running(&by_user, "always").is_none(),
            "stopped by its operator"
        );
    }

    #[test]
    fn container_ids_come_out_of_cgroups() {
        let id = "a".repeat(64);
        assert_eq!(
            container_id_in_cgroup(&format!("/libpod_parent/libpod-{id}")),
            Some(id.clone())
        );
        assert_eq!(
            container_id_in_cgroup(&format!("/system.slice/docker-{id}.scope")),
            Some(id.clone())
        );
        assert_eq!(
            container_id_in_cgroup(&format!("/docker/{id}")),
            Some(id.clone())
        );
        assert_eq!(
            container_id_in_cgroup("/user.slice/user-1000.slice/session-2.scope"),
            None
        );
    }

    #[test]
    fn what_a_spec_lacks() {
        let doc = json!({"HostConfig": {"CapDrop": ["ALL"], "CapAdd": ["cap_chown"], "Memory": 0, "ReadonlyRootfs": true, "Tmpfs": {"/run": ""}},
                         "Config": {"ExposedPorts": {"80/tcp": {}, "8080/tcp": {}}},
                         "Mounts": [{"Type": "bind", "Destination": "/data", "RW": false}]});
        let caps = ["dac_override".to_string(), "CAP_CHOWN".to_string()];
        assert_eq!(volume_caps_missing(&doc, &caps), ["DAC_OVERRIDE"]);
        assert!(
            volume_caps_missing(&json!({"HostConfig": {"CapDrop": ["ALL"]}}), &caps).is_empty()
        );
        assert_eq!(unbindable_ports(&doc), [80]);
        let mut can_bind = doc.clone();
        can_bind["HostConfig"]["CapAdd"] = json!(["NET_BIND_SERVICE"]);
        assert!(unbindable_ports(&can_bind).is_empty());
        assert_eq!(memory_limit(&doc), None);
        assert_eq!(
            memory_limit(&json!({"HostConfig": {"Memory": 67108864}})),
            Some(67108864)
        );
        let paths = [
            "/tmp".to_string(),
            "/run/x".to_string(),
            "/data".to_string(),
        ];
        assert_eq!(unwritable_paths(&doc, &paths), ["/tmp", "/data"]);
        assert!(unwritable_paths(&json!({}), &paths).is_empty());
        assert_eq!(restart_policy(&doc), "");
        assert_eq!(
            restart_policy(&json!({"HostConfig": {"RestartPolicy": {"Name": "always"}}})),
            "always"
        );
    }

    #[test]
    fn states_the_engines_report() {
        assert_eq!(last_error(&json!({"Error": ""})), None);
        assert_eq!(
            last_error(&json!({"Error": "exec failed"})),
            Some("exec failed")
        );
        assert_eq!(restart_loop(&json!({"RestartCount": 6}), 5), Some(6));
        assert_eq!(restart_loop(&json!({"RestartCount": 5}), 5), None);
        assert_eq!(
            restart_loop(
                &json!({"RestartCount": 1, "State": {"Restarting": true}}),
                5
            ),
            Some(1)
        );
        assert_eq!(
            restart_loop(
                &json!({"RestartCount": 0, "State": {"Restarting": true}}),
                5
            ),
            None
        );
    }

    #[test]
    fn a_document_the_engine_lost_is_none_and_a_bad_one_says_why() {
        use crate::testing::{answer_with, Facts};
        let facts = Facts::new().on("containers.inspect", |args| {
            Some(match args[0].as_str() {
                Some("gone") => Err(Error::NotFound("gone".into())),
                Some("bad") => Ok("not json".to_string()),
                Some("locked") => Err(Error::Io("database is locked".into())),
                _ => Ok(r#"{"Id": "ok"}"#.to_string()),
            })
        });
        let docs = answer_with(facts, || {
            ["gone", "bad", "locked", "ok"]
                .map(|id| document(id).map(|d| d.map(|d| d["Id"].clone())))
        });
        assert!(docs[0].is_none());
        assert!(docs[1]
            .as_ref()
            .unwrap()
            .as_ref()
            .unwrap_err()
            .starts_with("inspect document is not JSON: "));
        assert_eq!(docs[2], Some(Err("i/o: database is locked".into())));
        assert_eq!(docs[3], Some(Ok(json!("ok"))));
    }

    #[test]
    fn ports_and_mounts() {
        let doc = json!({"Config": {"ExposedPorts": {"80/tcp": {}}}, "NetworkSettings": {"Ports": {"80/tcp": [{"HostPort": "8080"}], "53/udp": [{"HostPort": "53"}]}},
                         "Mounts": [{"Type": "bind", "Destination": "/data", "RW": false}, {"Type": "volume", "Destination": "/tmp"}]});
        assert_eq!(privileged_ports(&doc), [80, 53]);
        assert_eq!(published_ports(&doc), [8080]);
        assert_eq!(volumes(&doc), ["/data", "/tmp"]);
        assert_eq!(writable_mounts(&doc), ["/tmp"]);
        assert!(
            under_mount(&writable_mounts(&doc), "/tmp/x")
                && !under_mount(&writable_mounts(&doc), "/tmpx")
        );
    }
}
