//! container-caps-checker against a real, private Podman engine (see
//! tests/support/podman.rs): containers created with the specs under test,
//! the engine reached through its Docker-compatible API socket.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;

use serde_json::Value;
use support::podman::Podman;
use support::{finding, findings, plugin_summary, Scenario};

const PLUGIN: &str = "container-caps-checker";
const PINNED: &str = "localhost/busybox:1.36";
const LATEST: &str = "localhost/busybox:latest";

fn policy(s: &Scenario, socket: &Path, extra_plugins: &str) {
    s.policy_with(
        "plugin_timeout = \"60s\"",
        &format!(
            "[container_engine]\nsocket = {:?}\ntimeout = \"60s\"\n\n[plugins.container-caps-checker]\ngrants.containers = true\ngrants.containers_write = [\"web-*\"]\n\n{extra_plugins}",
            socket.display().to_string()
        ),
    );
}

fn keys_for(doc: &Value, name: &str) -> BTreeSet<String> {
    let prefix = format!("container:{name}:");
    findings(doc, PLUGIN)
        .into_iter()
        .filter_map(|f| f["key"].as_str())
        .filter(|k| k.starts_with(&prefix))
        .map(|k| k[prefix.len()..].to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn each_misconfiguration_is_reported_and_a_good_container_is_not() {
    let podman = Podman::start();
    podman.import_busybox(PINNED);
    podman.import_busybox(LATEST);
    let data = podman.dir().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let volume = format!("{}:/data", data.display());
    // Every container is well configured but for the one thing under test.
    let ok = ["--restart", "on-failure", "--memory", "64m"];
    let create = |name: &str, args: &[&str], image: &str| {
        let mut all = vec!["--name", name];
        all.extend_from_slice(args);
        all.push(image);
        all.extend_from_slice(&["sleep", "300"]);
        podman.create(&all)
    };
    let with_ok =
        |extra: &[&str]| -> Vec<String> { ok.iter().chain(extra).map(|s| s.to_string()).collect() };
    let args = with_ok(&["--cap-drop", "ALL", "-v", &volume]);
    create(
        "capdrop",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        PINNED,
    );
    let args = with_ok(&["--health-cmd", "curl -f http://localhost/"]);
    create(
        "nocurl",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        PINNED,
    );
    create("norestart", &["--restart", "no", "--memory", "64m"], PINNED);
    create("nomemory", &["--restart", "on-failure"], PINNED);
    let args = with_ok(&[]);
    create(
        "latest",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        LATEST,
    );
    // Dropped everything but kept what its volume needs; a health check whose
    // program exists (busybox wget); restart policy, memory limit, pinned tag.
    let args = with_ok(&[
        "--cap-drop",
        "ALL",
        "--cap-add",
        "DAC_OVERRIDE",
        "-v",
        &volume,
        "--health-cmd",
        "wget -q -O- http://localhost/",
    ]);
    create(
        "good",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        PINNED,
    );

    let s = Scenario::new();
    policy(&s, podman.socket(), "");
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(plugin_summary(&doc, PLUGIN)["outcome"], "ok", "{doc:#}");
    assert_eq!(code, 2, "{doc:#}");

    assert_eq!(
        keys_for(&doc, "capdrop"),
        set(&["cap-drop-dac-override"]),
        "{doc:#}"
    );
    assert_eq!(
        keys_for(&doc, "nocurl"),
        set(&["healthcheck-binary-missing"]),
        "{doc:#}"
    );
    assert_eq!(
        keys_for(&doc, "norestart"),
        set(&["restart-policy"]),
        "{doc:#}"
    );
    assert_eq!(
        keys_for(&doc, "nomemory"),
        set(&["memory-limit"]),
        "{doc:#}"
    );
    assert_eq!(
        keys_for(&doc, "latest"),
        set(&["image-tag-latest"]),
        "{doc:#}"
    );
    assert_eq!(
        keys_for(&doc, "good"),
        set(&[]),
        "a well-configured container has no finding: {doc:#}"
    );

    let cap = finding(&doc, PLUGIN, "container:capdrop:cap-drop-dac-override").unwrap();
    assert_eq!(cap["severity"], "critical");
    assert!(
        cap["message"].as_str().unwrap().contains("/data"),
        "{cap:#}"
    );
    let curl = finding(&doc, PLUGIN, "container:nocurl:healthcheck-binary-missing").unwrap();
    assert!(
        curl["message"].as_str().unwrap().contains("curl"),
        "{curl:#}"
    );
    let restart = finding(&doc, PLUGIN, "container:norestart:restart-policy").unwrap();
    assert_eq!(restart["severity"], "warning");

    // Stable keys: a second run sees the same findings as persisting.
    let (_, again) = s.doctor_json(&["check"]);
    let f = finding(&again, PLUGIN, "container:capdrop:cap-drop-dac-override").unwrap();
    assert_eq!(f["status"], "persisting");
}

#[test]
fn created_never_started_containers_are_not_expected_to_run_and_are_never_started() {
    let podman = Podman::start();
    podman.import_busybox(PINNED);
    let id = podman.create(&[
        "--name",
        "web-idle",
        "--restart",
        "always",
        "--memory",
        "64m",
        PINNED,
        "sleep",
        "300",
    ]);
    let s = Scenario::new();
    policy(&s, podman.socket(), "");
    for run in ["check", "fix", "fix"] {
        let (code, doc) = s.doctor_json(&[run]);
        assert_eq!(code, 0, "{run}: existence is not intent: {doc:#}");
        assert_eq!(
            keys_for(&doc, "web-idle"),
            set(&["never-started"]),
            "{run}: {doc:#}"
        );
        let f = finding(&doc, PLUGIN, "container:web-idle:never-started").unwrap();
        assert_eq!(f["severity"], "info");
        assert!(f["actions"].as_array().unwrap().is_empty(), "{f:#}");
    }
    let state = podman.podman(&["inspect", "--format", "{{.State.Status}}", &id]);
    assert_eq!(
        String::from_utf8_lossy(&state.stdout).trim(),
        "created",
        "never started by the doctor"
    );
    let starts: i64 = s
        .journal()
        .query_row(
            "SELECT count(*) FROM actions WHERE kind = 'container-start'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(starts, 0);
}

/// Declared in the policy (`should_run`): started even though it never ran.
#[test]
fn created_unless_stopped_container_is_started_and_the_outcome_recorded() {
    let podman = Podman::start();
    podman.import_busybox(PINNED);
    let id = podman.create(&[
        "--name",
        "web-1",
        "--restart",
        "unless-stopped",
        "--memory",
        "64m",
        PINNED,
        "sleep",
        "300",
    ]);
    // Outside the containers_write grant: the host refuses to start it.
    podman.create(&[
        "--name",
        "db-1",
        "--restart",
        "always",
        "--memory",
        "64m",
        PINNED,
        "sleep",
        "300",
    ]);
    // Its program does not exist in the image: every start fails, wherever this runs.
    podman.create(&[
        "--name",
        "web-2",
        "--restart",
        "unless-stopped",
        "--memory",
        "64m",
        PINNED,
        "/bin/no-such-program",
    ]);

    let s = Scenario::new();
    policy(&s, podman.socket(), "");
    let text = std::fs::read_to_string(s.policy_path()).unwrap();
    std::fs::write(s.policy_path(), text.replace("grants.containers_write = [\"web-*\"]\n", "grants.containers_write = [\"web-*\"]\nconfig = { should_run = [\"web-*\", \"db-*\"] }\n")).unwrap();
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    let f =
        finding(&doc, PLUGIN, "container:web-1:not-running").unwrap_or_else(|| panic!("{doc:#}"));
    assert!(
        f["message"].as_str().unwrap().contains("should_run"),
        "says why it should run: {f:#}"
    );
    assert_eq!(f["severity"], "critical");
    assert!(f["message"].as_str().unwrap().contains("created"), "{f:#}");
    assert_eq!(f["actions"][0]["kind"], "container-start");
    assert_eq!(f["actions"][0]["outcome"], "planned");

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 2, "db-1 stays refused: {doc:#}");
    let refused = finding(&doc, PLUGIN, "container:db-1:not-running").unwrap();
    assert_eq!(refused["actions"][0]["outcome"], "refused", "{refused:#}");
    assert!(
        refused["actions"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("containers_write"),
        "{refused:#}"
    );

    let f = finding(&doc, PLUGIN, "container:web-1:not-running").unwrap();
    let start = &f["actions"][0];
    let state = podman.podman(&["inspect", "--format", "{{.State.Status}}", &id]);
    let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
    let db = s.journal();
    let (outcome, detail): (String, String) = db
        .query_row(
            "SELECT outcome, detail FROM actions WHERE plugin = ?1 AND finding_key = 'container:web-1:not-running' AND kind = 'container-start' ORDER BY id DESC LIMIT 1",
            [PLUGIN],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("the start is journalled");
    eprintln!("container-start of web-1: {outcome}: {detail} (state now {state})");
    assert_eq!(start["outcome"].as_str().unwrap(), outcome);
    match outcome.as_str() {
        "applied" => {
            // Honest success: the engine really runs it, and the re-check agrees.
            assert_eq!(state, "running", "{doc:#}");
            assert_eq!(f["status"], "fixed", "{f:#}");
        }
        "failed" => {
            // Honest failure: the engine's own message, and the finding persists.
            assert_ne!(state, "running");
            assert!(detail.contains("engine answered"), "{detail}");
            assert_eq!(f["status"], "persisting", "{f:#}");
        }
        other => panic!("unexpected outcome {other}: {f:#}"),
    }

    let broken = finding(&doc, PLUGIN, "container:web-2:not-running").unwrap();
    let start = &broken["actions"][0];
    assert_eq!(start["outcome"], "failed", "{broken:#}");
    let detail = start["detail"].as_str().unwrap();
    eprintln!("web-2 start: {detail}");
    assert!(
        detail.contains("engine answered") && detail.contains("no-such-program"),
        "the engine's message: {detail}"
    );
    assert_eq!(broken["status"], "persisting", "{broken:#}");
}

/// An engine that answers every request with HTTP 500 and a JSON message.
fn failing_engine(socket: &Path) {
    let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind fake engine");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = r#"{"cause":"x","message":"database is locked","response":500}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

fn other_plugin(port: u16) -> String {
    format!(
        "[plugins.port-9403-freer]\ngrants.sockets = true\ngrants.processes = true\nconfig = {{ ports = [{port}] }}\n"
    )
}

fn assert_one_clear_engine_finding(doc: &Value, mention: &str) {
    let ours = findings(doc, PLUGIN);
    assert_eq!(ours.len(), 1, "exactly one finding: {doc:#}");
    let f = ours[0];
    assert_eq!(f["key"], "engine:unavailable");
    assert_eq!(f["severity"], "critical");
    assert!(f["message"].as_str().unwrap().contains(mention), "{f:#}");
    assert_eq!(plugin_summary(doc, PLUGIN)["outcome"], "ok");
}

#[test]
fn missing_engine_socket_is_one_clear_finding_and_other_plugins_run() {
    let s = Scenario::new();
    let socket = s.path("no-engine.sock");
    let port = support::free_port();
    let stray = support::Proc::spawn(&[
        "python3",
        "-c",
        &format!("import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',{port}))\ns.listen()\nwhile True: time.sleep(1)"),
    ]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    policy(&s, &socket, &other_plugin(port));
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    assert_one_clear_engine_finding(&doc, "no-engine.sock");
    // The other plugin is unaffected: it ran and found its stray.
    assert_eq!(
        plugin_summary(&doc, "port-9403-freer")["outcome"],
        "ok",
        "{doc:#}"
    );
    let f = finding(
        &doc,
        "port-9403-freer",
        &format!("port:{port}:unexpected-owner"),
    )
    .unwrap_or_else(|| panic!("{doc:#}"));
    assert!(f["message"]
        .as_str()
        .unwrap()
        .contains(&format!("pid {}", stray.pid())));
}

#[test]
fn engine_answering_with_an_error_is_one_clear_finding() {
    let s = Scenario::new();
    let socket = s.path("bad-engine.sock");
    failing_engine(&socket);
    let port = support::free_port();
    policy(&s, &socket, &other_plugin(port));
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    assert_one_clear_engine_finding(&doc, "database is locked");
    assert_eq!(
        plugin_summary(&doc, "port-9403-freer")["outcome"],
        "ok",
        "{doc:#}"
    );
    assert!(findings(&doc, "port-9403-freer").is_empty(), "{doc:#}");
}
