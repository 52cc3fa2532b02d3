//! One policy, two engines: a private Podman and the binary's private
//! Docker named side by side (`[container_engines.NAME]`). Both are
//! watched; a name taken in both is qualified by its engine; a plugin's
//! `grants.engines` keeps it to its engines; a port held by a container is
//! freed through the engine that runs it; a Compose project is a grant.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::docker::Docker;
use support::engines::TestEngine;
use support::podman::Podman;
use support::*;

const CAPS: &str = "container-caps-checker";
const IMAGE: &str = "localhost/busybox:1.36";

fn engines_section(podman: &Podman, docker: &Docker) -> String {
    format!(
        "[container_engines.podman]\nsocket = {:?}\ntimeout = \"60s\"\n\n[container_engines.docker]\nsocket = {:?}\ntimeout = \"60s\"\n",
        podman.socket().display().to_string(),
        docker.socket().display().to_string()
    )
}

/// Both engines, or None after saying why Docker does not run here.
fn both(test: &str) -> Option<(Podman, &'static Docker)> {
    let docker = Docker::or_say_why(test)?;
    let podman = Podman::start();
    for e in [&podman as &dyn TestEngine, docker] {
        e.import_busybox(IMAGE);
    }
    Some((podman, docker))
}

/// A container whose only fault is `--restart no`.
fn no_restart(engine: &dyn TestEngine, name: &str, labels: &[&str]) -> String {
    let mut args = vec!["--name", name, "--restart", "no", "--memory", "64m"];
    args.extend_from_slice(labels);
    args.extend([IMAGE, "sleep", "300"]);
    engine.create(&args)
}

fn caps_keys(doc: &Value) -> Vec<String> {
    let mut keys: Vec<String> = findings(doc, CAPS)
        .iter()
        .filter(|f| f["status"] != "resolved")
        .filter_map(|f| f["key"].as_str())
        .filter(|k| k.ends_with(":no-restart-policy") || k.contains("restart"))
        .map(String::from)
        .collect();
    keys.sort();
    keys
}

fn tag() -> String {
    format!("{}", std::process::id())
}

#[test]
fn two_engines_are_both_watched_and_a_name_taken_in_both_is_qualified() {
    let Some((podman, docker)) = both("two engines watched") else {
        return;
    };
    let t = tag();
    no_restart(&podman, &format!("only-podman-{t}"), &[]);
    no_restart(docker, &format!("only-docker-{t}"), &[]);
    no_restart(&podman, &format!("twin-{t}"), &[]);
    no_restart(docker, &format!("twin-{t}"), &[]);
    let s = Scenario::new();
    s.policy_with(
        "plugin_timeout = \"60s\"",
        &format!(
            "{}\n[plugins.container-caps-checker]\ngrants.containers = true\n",
            engines_section(&podman, docker)
        ),
    );
    let (_, doc) = s.doctor_json(&["check"]);
    assert_eq!(plugin_summary(&doc, CAPS)["outcome"], "ok", "{doc:#}");
    let keys = caps_keys(&doc);
    for name in [
        format!("only-podman-{t}"),
        format!("only-docker-{t}"),
        format!("podman/twin-{t}"),
        format!("docker/twin-{t}"),
    ] {
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("container:{name}:"))),
            "{name} is reported: {keys:?}"
        );
    }
    assert!(
        !keys
            .iter()
            .any(|k| k.starts_with(&format!("container:twin-{t}:"))),
        "a shared name is never shown unqualified: {keys:?}"
    );

    // A plugin granted one engine sees only that engine's containers.
    s.policy_with(
        "plugin_timeout = \"60s\"",
        &format!(
            "{}\n[plugins.container-caps-checker]\ngrants.containers = true\ngrants.engines = [\"podman\"]\n",
            engines_section(&podman, docker)
        ),
    );
    let (_, doc) = s.doctor_json(&["check"]);
    let keys = caps_keys(&doc);
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("container:only-podman-{t}:"))),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.contains("docker")),
        "no Docker container reaches a Podman-only plugin: {keys:?}"
    );
}

#[test]
fn an_engine_a_grant_names_must_be_defined() {
    let s = Scenario::new();
    s.policy(
        "[container_engines.podman]\nsocket = \"/run/podman/podman.sock\"\n\n[plugins.container-caps-checker]\ngrants.containers = true\ngrants.engines = [\"dokcer\"]\n",
    );
    let out = s.doctor(&["policy", "validate"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("grants.engines") && err.contains("dokcer") && err.contains("podman"),
        "{err}"
    );
}

#[test]
fn a_compose_project_is_a_write_grant_and_another_project_is_refused() {
    let Some((podman, docker)) = both("compose grant") else {
        return;
    };
    let t = tag();
    let name = format!("shop-api-{t}");
    let labels = [
        "--label",
        "com.docker.compose.project=shop",
        "--label",
        "com.docker.compose.service=api",
    ];
    // Created, never started, declared in should_run: the checker starts it.
    docker.create(&[
        "--name",
        &name,
        "--restart",
        "unless-stopped",
        "--memory",
        "64m",
        labels[0],
        labels[1],
        labels[2],
        labels[3],
        IMAGE,
        "sleep",
        "300",
    ]);
    let s = Scenario::new();
    let policy = |grant: &str| {
        format!(
            "{}\n[plugins.container-caps-checker]\ngrants.containers = true\ngrants.containers_write = [\"{grant}\"]\nconfig = {{ should_run = [\"shop-api-*\"] }}\n",
            engines_section(&podman, docker)
        )
    };
    let start_outcome = |doc: &Value| -> Vec<(String, String)> {
        findings(doc, CAPS)
            .iter()
            .filter(|f| f["key"].as_str().unwrap_or_default().contains(&name))
            .flat_map(|f| f["actions"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["kind"] == "container-start")
            .map(|a| {
                (
                    a["outcome"].as_str().unwrap_or_default().to_string(),
                    a["detail"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    s.policy_with("plugin_timeout = \"60s\"", &policy("compose:billing/*"));
    let (_, doc) = s.doctor_json(&["fix"]);
    let outcome = start_outcome(&doc);
    assert!(
        !outcome.is_empty()
            && outcome
                .iter()
                .all(|(o, d)| o == "refused" && d.contains("containers_write")),
        "another project's grant does not reach it: {outcome:?}"
    );
    s.policy_with("plugin_timeout = \"60s\"", &policy("compose:shop/api"));
    let (_, doc) = s.doctor_json(&["fix"]);
    let outcome = start_outcome(&doc);
    // A start may fail in a sandbox; what matters is that the grant let it through
    // to the engine that holds the container.
    assert!(
        !outcome.is_empty()
            && outcome
                .iter()
                .all(|(o, d)| o != "refused" && d.contains("on engine docker")),
        "{outcome:?}"
    );
}

#[test]
fn a_port_held_by_a_docker_container_is_freed_through_docker_beside_podman() {
    let Some((podman, docker)) = both("port across engines") else {
        return;
    };
    let port = free_port();
    let name = format!("web-old-{}", tag());
    let Some(id) = httpd_listener(docker, "port across engines", &name, &[], port) else {
        return;
    };
    let s = Scenario::new();
    // Podman comes first: the container is found where it is, not where it is first looked for.
    s.policy(&format!(
        "{}\n[plugins.port-9403-freer]\ngrants.sockets = true\ngrants.processes = true\ngrants.containers = true\ngrants.containers_write = [\"web-*\"]\nconfig = {{ ports = [{{ port = {port}, expect = {{ container = \"web-new\" }} }}], grace_ms = 1000, deadline_ms = 20000 }}\n",
        engines_section(&podman, docker)
    ));
    let (code, doc) = s.doctor_json(&["fix"]);
    let stop: Vec<String> = findings(&doc, "port-9403-freer")
        .iter()
        .flat_map(|f| f["actions"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["kind"] == "container-stop")
        .map(|a| format!("{} {}", a["outcome"], a["detail"]))
        .collect();
    assert!(
        stop.len() == 1 && stop[0].contains("applied") && stop[0].contains("on engine docker"),
        "{stop:?} {doc:#}"
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(docker.inspect_format(&id, "{{.State.Status}}"), "exited");
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

/// A host-network busybox httpd on Docker listening on `port`, in a
/// container named `name` with `labels`; None after saying why containers
/// cannot start here.
fn httpd_listener(
    docker: &Docker,
    test: &str,
    name: &str,
    labels: &[String],
    port: u16,
) -> Option<String> {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--name", name, "--network", "host"];
    for label in labels {
        args.extend(["--label", label.as_str()]);
    }
    args.extend([IMAGE, "/bin/busybox", "httpd", "-f", "-p", listen.as_str()]);
    let id = docker.create(&args);
    let started = docker.cli(&["start", &id]);
    if !started.status.success() {
        println!(
            "{test}: not run: containers cannot start here: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        return None;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "httpd never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(id)
}

/// The labels Compose writes for `project`'s `service`.
fn compose_labels(project: &str, service: &str) -> Vec<String> {
    vec![
        format!("com.docker.compose.project={project}"),
        format!("com.docker.compose.service={service}"),
    ]
}

#[test]
fn a_port_owner_is_expected_by_compose_service_and_another_project_is_stopped() {
    let Some((podman, docker)) = both("compose expectation") else {
        return;
    };
    let t = tag();
    let (ours, theirs) = (free_port(), free_port());
    let Some(expected) = httpd_listener(
        docker,
        "compose expectation",
        &format!("orch-api-{t}"),
        &compose_labels("orch", "api"),
        ours,
    ) else {
        return;
    };
    let Some(stray) = httpd_listener(
        docker,
        "compose expectation",
        &format!("billing-api-{t}"),
        &compose_labels("billing", "api"),
        theirs,
    ) else {
        return;
    };
    let s = Scenario::new();
    s.policy(&format!(
        "{}\n[plugins.port-9403-freer]\ngrants.sockets = true\ngrants.processes = true\ngrants.containers = true\ngrants.containers_write = [\"compose:billing/*\"]\nconfig = {{ ports = [{{ port = {ours}, expect = {{ compose = \"orch/api\" }} }}, {{ port = {theirs}, expect = {{ compose = \"orch/api\" }} }}], grace_ms = 1000, deadline_ms = 20000 }}\n",
        engines_section(&podman, docker)
    ));
    let (_, doc) = s.doctor_json(&["check"]);
    let keys: Vec<String> = findings(&doc, "port-9403-freer")
        .iter()
        .map(|f| f["key"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        !keys.iter().any(|k| k.starts_with(&format!("port:{ours}:"))),
        "the expected Compose service keeps its port: {keys:?}"
    );
    let f = finding(
        &doc,
        "port-9403-freer",
        &format!("port:{theirs}:unexpected-container"),
    )
    .unwrap_or_else(|| panic!("{doc:#}"));
    let message = f["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Compose billing/api") && message.contains("Compose service orch/api"),
        "names the holder's and the expected Compose service: {message}"
    );
    let (_, doc) = s.doctor_json(&["fix"]);
    let f = finding(
        &doc,
        "port-9403-freer",
        &format!("port:{theirs}:unexpected-container"),
    )
    .unwrap();
    assert_eq!(f["actions"][0]["outcome"], "applied", "{f:#}");
    assert_eq!(docker.inspect_format(&stray, "{{.State.Status}}"), "exited");
    assert_eq!(
        docker.inspect_format(&expected, "{{.State.Status}}"),
        "running"
    );
}
