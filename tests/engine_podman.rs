//! The engine client against a real, private Podman (see
//! tests/support/podman.rs) and the same tests against a real, private
//! Docker Engine (tests/support/docker.rs, one daemon for this binary).

mod support;

use std::time::Duration;

use doctor::facts::containers::{ContainerEngine, ContainerSummary, EngineError};
use serde_json::Value;
use support::docker::Docker;
use support::engines::TestEngine;
use support::podman::Podman;

const IMAGE: &str = "localhost/busybox:latest";
const TIMEOUT: Duration = Duration::from_secs(30);

fn engine(podman: &dyn TestEngine) -> ContainerEngine {
    ContainerEngine::new(podman.socket(), TIMEOUT)
}

/// `NAME_on_podman` runs `NAME` on a private Podman, `NAME_on_docker` on
/// this binary's Docker (printing why not where dockerd cannot run).
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod on_podman {
            $(#[test]
            fn $name() {
                super::$name(&super::Podman::start());
            })*
        }
        mod on_docker {
            $(#[test]
            fn $name() {
                if let Some(docker) = super::Docker::or_say_why(stringify!($name)) {
                    super::$name(docker);
                }
            })*
        }
    };
}

on_both_engines!(
    list_and_inspect_show_what_was_created,
    path_exists_without_running_the_container,
    start_stop_restart_or_engine_message,
    unknown_container_is_not_found,
);

/// Only the containers named `names` (other tests may share the engine).
fn own(list: Vec<ContainerSummary>, names: &[&str]) -> Vec<ContainerSummary> {
    list.into_iter()
        .filter(|c| c.names.iter().any(|n| names.contains(&n.as_str())))
        .collect()
}

fn inspect_json(engine: &ContainerEngine, id: &str) -> Value {
    let text = engine.inspect(id).expect("inspect");
    serde_json::from_str(&text).expect("inspect is JSON")
}

fn by_name<'a>(list: &'a [ContainerSummary], name: &str) -> &'a ContainerSummary {
    list.iter()
        .find(|c| c.names.iter().any(|n| n == name))
        .unwrap_or_else(|| panic!("{name} not in {list:#?}"))
}

fn list_and_inspect_show_what_was_created(podman: &dyn TestEngine) {
    podman.import_busybox(IMAGE);
    let data = tempfile::tempdir().expect("data dir");
    let volume = format!("{}:/data", data.path().display());
    let hardened = podman.create(&[
        "--name",
        "hardened",
        "--cap-drop",
        "ALL",
        "-v",
        &volume,
        IMAGE,
        "sleep",
        "300",
    ]);
    let health = podman.create(&[
        "--name",
        "health",
        "--health-cmd",
        "curl -f http://localhost/",
        IMAGE,
    ]);
    let norestart = podman.create(&["--name", "norestart", "--restart", "no", IMAGE]);
    let limited = podman.create(&["--name", "limited", "--memory", "64m", IMAGE]);
    let always = podman.create(&["--name", "always", "--restart", "unless-stopped", IMAGE]);

    let engine = engine(podman);
    let names = ["hardened", "health", "norestart", "limited", "always"];
    let list = own(engine.list(true).expect("list all"), &names);
    for name in names {
        let row = by_name(&list, name);
        assert_eq!(row.image, IMAGE, "{name}");
        assert_eq!(row.state, "created", "{name}");
    }
    assert_eq!(by_name(&list, "hardened").id, hardened);
    // Never-started containers are "stopped" for the purposes of all=false.
    assert!(own(engine.list(false).expect("list running"), &names).is_empty());

    let doc = inspect_json(&engine, &hardened);
    println!(
        "{}: inspect hardened:\n{}",
        podman.name(),
        serde_json::to_string_pretty(&doc).expect("pretty")
    );
    let cap_drop = doc["HostConfig"]["CapDrop"]
        .as_array()
        .expect("CapDrop array");
    assert!(!cap_drop.is_empty(), "CapDrop: {cap_drop:?}");
    assert!(
        doc["HostConfig"]["Binds"].to_string().contains(":/data"),
        "Binds: {}",
        doc["HostConfig"]["Binds"]
    );

    let doc = inspect_json(&engine, &health);
    assert_eq!(
        doc["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "curl -f http://localhost/"])
    );

    assert_eq!(
        inspect_json(&engine, &norestart)["HostConfig"]["RestartPolicy"]["Name"],
        "no"
    );
    assert_eq!(
        inspect_json(&engine, &always)["HostConfig"]["RestartPolicy"]["Name"],
        "unless-stopped"
    );
    assert_eq!(
        inspect_json(&engine, &limited)["HostConfig"]["Memory"],
        64 * 1024 * 1024
    );

    // Names work where ids do.
    assert_eq!(inspect_json(&engine, "limited")["Id"], limited.as_str());
    for name in ["health", "norestart", "limited", "always"] {
        println!("{name}: {}", summary(&inspect_json(&engine, name)));
    }
    println!("hardened: {}", summary(&inspect_json(&engine, "hardened")));
}

fn summary(doc: &Value) -> Value {
    serde_json::json!({
        "Name": doc["Name"], "Config.Image": doc["Config"]["Image"], "ImageName": doc["ImageName"],
        "Config.Healthcheck": doc["Config"]["Healthcheck"],
        "HostConfig.CapDrop": doc["HostConfig"]["CapDrop"], "HostConfig.CapAdd": doc["HostConfig"]["CapAdd"],
        "HostConfig.RestartPolicy": doc["HostConfig"]["RestartPolicy"], "HostConfig.Memory": doc["HostConfig"]["Memory"],
        "HostConfig.Binds": doc["HostConfig"]["Binds"], "Mounts": doc["Mounts"], "State.Status": doc["State"]["Status"],
    })
}

fn path_exists_without_running_the_container(podman: &dyn TestEngine) {
    podman.import_busybox(IMAGE);
    let id = podman.create(&["--name", "probe", IMAGE]);
    let engine = engine(podman);
    assert!(engine
        .path_exists(&id, "/bin/busybox")
        .expect("stat busybox"));
    assert!(engine
        .path_exists("probe", "/bin/sh")
        .expect("stat symlink"));
    assert!(engine.path_exists(&id, "/bin").expect("stat dir"));
    assert!(!engine.path_exists(&id, "/usr/bin/curl").expect("stat curl"));
    assert!(!engine
        .path_exists(&id, "/no such dir/a&b?c=d")
        .expect("stat odd path"));
    assert!(matches!(
        engine.path_exists("no-such-container", "/bin/sh"),
        Err(EngineError::NotFound(_))
    ));
    assert_eq!(
        engine.inspect(&id).map(|t| t.contains("\"created\"")).ok(),
        Some(true),
        "still never started"
    );
}

fn start_stop_restart_or_engine_message(podman: &dyn TestEngine) {
    podman.import_busybox(IMAGE);
    let id = podman.create(&[
        "--name", "sleeper", "--memory", "64m", IMAGE, "sleep", "300",
    ]);
    let engine = engine(podman);
    match engine.start(&id) {
        Ok(()) => {
            println!("{}: start: ok", podman.name());
            assert_eq!(inspect_json(&engine, &id)["State"]["Status"], "running");
            assert_eq!(
                own(engine.list(false).expect("list running"), &["sleeper"]).len(),
                1
            );
            engine
                .start(&id)
                .expect("second start is 304, still success");
            assert!(engine
                .path_exists(&id, "/bin/busybox")
                .expect("stat while running"));
            engine
                .restart(&id, Some(Duration::from_secs(1)))
                .expect("restart");
            assert_eq!(inspect_json(&engine, &id)["State"]["Status"], "running");
            engine
                .stop(&id, Some(Duration::from_millis(500)))
                .expect("stop");
            assert_eq!(inspect_json(&engine, &id)["State"]["Status"], "exited");
            engine
                .stop(&id, Some(Duration::from_secs(1)))
                .expect("second stop is 304, still success");
        }
        Err(EngineError::Api { status, message }) => {
            println!(
                "{}: start: engine refused with {status}: {message}",
                podman.name()
            );
            assert!(!message.is_empty());
        }
        Err(other) => panic!(
            "start: unexpected {other:?}\nservice log:\n{}",
            podman.service_log()
        ),
    }
}

fn unknown_container_is_not_found(podman: &dyn TestEngine) {
    let engine = engine(podman);
    for result in [
        engine.inspect("deadbeef").map(drop),
        engine.start("deadbeef"),
        engine.stop("deadbeef", Some(Duration::from_secs(1))),
        engine.restart("deadbeef", Some(Duration::from_secs(1))),
        // An id that tries to smuggle in a path of its own stays one segment.
        engine.inspect("../../_ping?x=").map(drop),
    ] {
        assert!(
            matches!(result, Err(EngineError::NotFound(_))),
            "{result:?}"
        );
    }
    let list = engine.list(true).expect("a list");
    assert!(podman.shared() || list.is_empty(), "{list:?}");
}

#[test]
fn missing_socket_is_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = ContainerEngine::new(dir.path().join("absent.sock"), TIMEOUT);
    match engine.list(true) {
        Err(EngineError::Unreachable { path, message }) => {
            assert!(path.ends_with("absent.sock"), "{path}");
            println!("unreachable: {message}");
        }
        other => panic!("{other:?}"),
    }
    // A socket file nobody listens on: connection refused.
    let socket = dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(matches!(
        ContainerEngine::new(&socket, TIMEOUT).inspect("x"),
        Err(EngineError::Unreachable { .. })
    ));
}

#[test]
fn silent_engine_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    // Accept and hold connections without ever answering.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let limit = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let result = ContainerEngine::new(&socket, limit).list(true);
    assert!(
        matches!(result, Err(EngineError::Timeout(d)) if d == limit),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // stop's bound is the timeout plus the grace period it asks the engine for.
    let result = ContainerEngine::new(&socket, limit).stop("x", Some(Duration::from_millis(200)));
    assert!(
        matches!(result, Err(EngineError::Timeout(d)) if d == limit + Duration::from_secs(1)),
        "{result:?}"
    );
}

#[test]
fn harness_drop_removes_running_containers_and_state() {
    let podman = Podman::start();
    podman.import_busybox(IMAGE);
    let id = podman.create(&["--name", "left-running", IMAGE, "sleep", "300"]);
    let started = podman.podman(&["start", &id]).status.success();
    let dir = podman.dir().to_path_buf();
    drop(podman);
    assert!(
        !dir.exists(),
        "{} left behind (container started: {started})",
        dir.display()
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(dir.to_str().expect("utf-8")),
        "mounts left under {}",
        dir.display()
    );
}
