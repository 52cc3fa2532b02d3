//! container-caps-checker against real, private container engines: every
//! scenario runs on a Podman of its own (tests/support/podman.rs) and on this
//! test binary's Docker Engine (tests/support/docker.rs), with the same
//! policy, through each engine's Docker-compatible API socket. Incident 003
//! ran on both.
//!
//! The Docker daemon is shared by the tests of this binary, so each scenario
//! names its containers apart from the others' and the policy checks only
//! those (`names`), as an operator on a shared engine would.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;

use serde_json::Value;
use support::docker::Docker;
use support::engines::{CountingProxy, TestEngine};
use support::podman::Podman;
use support::{finding, findings, plugin_summary, Scenario};

const PLUGIN: &str = "container-caps-checker";
const PINNED: &str = "localhost/busybox:1.36";
const LATEST: &str = "localhost/busybox:latest";

tests_on_both_engines!(
    each_misconfiguration_is_reported_and_a_good_container_is_not,
    created_never_started_containers_are_not_expected_to_run_and_are_never_started,
    created_unless_stopped_container_is_started_and_the_outcome_recorded,
    engine_answering_with_an_error_is_one_clear_finding,
);

/// The policy of every scenario, on either engine: the engine's socket, the
/// plugin checking only the containers `names` (and allowed to start web-*),
/// `config` more entries of its config table, `extra_plugins` more sections.
fn policy(s: &Scenario, socket: &Path, names: &[&str], config: &str, extra_plugins: &str) {
    s.policy_with(
        "plugin_timeout = \"60s\"",
        &format!(
            "[container_engine]\nsocket = {:?}\ntimeout = \"60s\"\n\n[plugins.container-caps-checker]\ngrants.containers = true\ngrants.containers_write = [\"web-*\"]\nconfig = {{ names = {names:?}{config} }}\n\n{extra_plugins}",
            socket.display().to_string()
        ),
    );
}

/// A restart policy and a memory limit: what every container of the
/// misconfiguration scenario has unless it is the thing under test.
const WELL_CONFIGURED: [&str; 4] = ["--restart", "on-failure", "--memory", "64m"];

fn well_configured_and<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    WELL_CONFIGURED.iter().chain(extra).copied().collect()
}

/// `create --name NAME ARGS... IMAGE COMMAND...`; the container's id.
fn create(
    engine: &dyn TestEngine,
    name: &str,
    args: &[&str],
    image: &str,
    command: &[&str],
) -> String {
    let mut all = vec!["--name", name];
    all.extend_from_slice(args);
    all.push(image);
    all.extend_from_slice(command);
    engine.create(&all)
}

const SLEEP: &[&str] = &["sleep", "300"];

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

/// The outcome and detail of the last `container-start` of `key` in the journal.
fn journalled_start(s: &Scenario, key: &str) -> (String, String) {
    s.journal()
        .query_row(
            "SELECT outcome, detail FROM actions WHERE plugin = ?1 AND finding_key = ?2 AND kind = 'container-start' ORDER BY id DESC LIMIT 1",
            [PLUGIN, key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap_or_else(|e| panic!("the start of {key} is journalled: {e}"))
}

fn each_misconfiguration_is_reported_and_a_good_container_is_not(engine: &dyn TestEngine) {
    engine.import_busybox(PINNED);
    engine.import_busybox(LATEST);
    let s = Scenario::new();
    let data = s.root().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let volume = format!("{}:/data", data.display());
    // Every container is well configured but for the one thing under test.
    let capdrop = well_configured_and(&["--cap-drop", "ALL", "-v", &volume]);
    create(engine, "capdrop", &capdrop, PINNED, SLEEP);
    let nocurl = well_configured_and(&["--health-cmd", "curl -f http://localhost/"]);
    create(engine, "nocurl", &nocurl, PINNED, SLEEP);
    let norestart = ["--restart", "no", "--memory", "64m"];
    create(engine, "norestart", &norestart, PINNED, SLEEP);
    create(
        engine,
        "nomemory",
        &["--restart", "on-failure"],
        PINNED,
        SLEEP,
    );
    create(engine, "latest", &WELL_CONFIGURED, LATEST, SLEEP);
    // Dropped everything but kept what its volume needs; a health check whose
    // program exists (busybox wget); restart policy, memory limit, pinned tag.
    let good = well_configured_and(&[
        "--cap-drop",
        "ALL",
        "--cap-add",
        "DAC_OVERRIDE",
        "-v",
        &volume,
        "--health-cmd",
        "wget -q -O- http://localhost/",
    ]);
    create(engine, "good", &good, PINNED, SLEEP);

    let names = [
        "capdrop",
        "nocurl",
        "norestart",
        "nomemory",
        "latest",
        "good",
    ];
    // The engine's socket behind a proxy that keeps what doctor asked.
    let proxy = CountingProxy::start(&s.root().join("engine.sock"), engine.socket());
    policy(&s, proxy.socket(), &names, "", "");
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(plugin_summary(&doc, PLUGIN)["outcome"], "ok", "{doc:#}");
    assert_eq!(code, 2, "{doc:#}");
    let asked = proxy.take();
    assert_each_asked_once(&asked, names.len());

    // The same findings on both engines, though their inspect documents
    // differ: Docker shows `CapDrop: ["ALL"]`, Podman expands ALL into its
    // default capabilities; the image name is Podman's `ImageName`, Docker's
    // `Config.Image`.
    let expected = [
        ("capdrop", "cap-drop-dac-override"),
        ("nocurl", "healthcheck-binary-missing"),
        ("norestart", "restart-policy"),
        ("nomemory", "memory-limit"),
        ("latest", "image-tag-latest"),
    ];
    for (name, rule) in expected {
        assert_eq!(keys_for(&doc, name), set(&[rule]), "{name}: {doc:#}");
    }
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
    assert_eq!(curl["severity"], "critical");
    assert!(
        curl["message"].as_str().unwrap().contains("curl"),
        "{curl:#}"
    );
    let restart = finding(&doc, PLUGIN, "container:norestart:restart-policy").unwrap();
    assert_eq!(restart["severity"], "warning");
    assert!(
        restart["message"].as_str().unwrap().contains("\"no\""),
        "both engines report `no` as set: {restart:#}"
    );

    // Stable keys: a second run sees the same findings as persisting.
    let (_, again) = s.doctor_json(&["check"]);
    let f = finding(&again, PLUGIN, "container:capdrop:cap-drop-dac-override").unwrap();
    assert_eq!(f["status"], "persisting");
    // Asking the same again: nothing of the first run's answers is kept.
    let (mut first, mut second) = (asked, proxy.take());
    first.sort();
    second.sort();
    assert_eq!(first, second);
}

/// One check's requests to the engine: one list, one inspect of each of the
/// `checked` containers, and one stat (`HEAD .../archive`) of each path a
/// health check's program was looked for at; none of them twice. That is
/// what the bare reads of the same facts take (issue 25).
fn assert_each_asked_once(asked: &[String], checked: usize) {
    let unique: BTreeSet<&String> = asked.iter().collect();
    assert_eq!(unique.len(), asked.len(), "a request repeated: {asked:#?}");
    let lists = asked
        .iter()
        .filter(|r| r.starts_with("GET /containers/json"))
        .count();
    assert_eq!(lists, 1, "{asked:#?}");
    let inspects = asked
        .iter()
        .filter(|r| r.starts_with("GET /containers/") && r.ends_with("/json"))
        .count();
    assert_eq!(
        inspects, checked,
        "each container inspected once: {asked:#?}"
    );
    let stats = asked
        .iter()
        .filter(|r| r.starts_with("HEAD /containers/") && r.contains("/archive?path="))
        .count();
    assert!(
        stats > 0,
        "the health checks' programs are looked up: {asked:#?}"
    );
    assert_eq!(lists + inspects + stats, asked.len(), "{asked:#?}");
}

fn created_never_started_containers_are_not_expected_to_run_and_are_never_started(
    engine: &dyn TestEngine,
) {
    engine.import_busybox(PINNED);
    let args = ["--restart", "always", "--memory", "64m"];
    let id = create(engine, "web-idle", &args, PINNED, SLEEP);
    let s = Scenario::new();
    policy(&s, engine.socket(), &["web-idle"], "", "");
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
    assert_eq!(
        engine.inspect_format(&id, "{{.State.Status}}"),
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
fn created_unless_stopped_container_is_started_and_the_outcome_recorded(engine: &dyn TestEngine) {
    engine.import_busybox(PINNED);
    let unless_stopped = ["--restart", "unless-stopped", "--memory", "64m"];
    let id = create(engine, "web-1", &unless_stopped, PINNED, SLEEP);
    // Outside the containers_write grant: the host refuses to start it.
    create(
        engine,
        "db-1",
        &["--restart", "always", "--memory", "64m"],
        PINNED,
        SLEEP,
    );
    // Its program does not exist in the image: every start fails, wherever this runs.
    let web2 = create(
        engine,
        "web-2",
        &unless_stopped,
        PINNED,
        &["/bin/no-such-program"],
    );

    let s = Scenario::new();
    let should_run = r#", should_run = ["web-*", "db-*"]"#;
    policy(
        &s,
        engine.socket(),
        &["web-1", "web-2", "db-1"],
        should_run,
        "",
    );
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

    // Whether a container can start depends on the sandbox, not on the
    // plugin: either outcome is fine if it is the truth, on either engine.
    let f = finding(&doc, PLUGIN, "container:web-1:not-running").unwrap();
    let start = &f["actions"][0];
    let state = engine.inspect_format(&id, "{{.State.Status}}");
    let (outcome, detail) = journalled_start(&s, "container:web-1:not-running");
    println!(
        "{}: container-start of web-1: {outcome}: {detail} (state now {state})",
        engine.name()
    );
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
    println!("{}: web-2 start: {detail}", engine.name());
    assert!(
        detail.contains("engine answered") && detail.contains("no-such-program"),
        "the engine's message: {detail}"
    );
    assert_eq!(broken["status"], "persisting", "{broken:#}");
    let state = engine.inspect_format(&web2, "{{.State.Status}} (exit {{.State.ExitCode}})");
    println!("{}: web-2 after the failed start: {state}", engine.name());
    assert!(!state.starts_with("running"), "{state}");

    // The next check differs by engine. Docker keeps the failed start's
    // error in the container's `State.Error`: the finding quotes it and
    // proposes no start that would only fail again. Podman's compatible API
    // keeps no such error, so the start is proposed again at each run.
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    let broken = finding(&doc, PLUGIN, "container:web-2:not-running").unwrap();
    let message = broken["message"].as_str().unwrap();
    let actions = broken["actions"].as_array().unwrap();
    if engine.name() == "docker" {
        assert!(
            message.contains("the engine's last error") && message.contains("no-such-program"),
            "{broken:#}"
        );
        assert!(actions.is_empty(), "not retried: {broken:#}");
    } else {
        assert!(!message.contains("the engine's last error"), "{broken:#}");
        assert_eq!(actions.len(), 1, "{broken:#}");
        assert_eq!(actions[0]["kind"], "container-start", "{broken:#}");
        assert_eq!(actions[0]["outcome"], "planned", "{broken:#}");
    }
}

/// One HTTP/1.0 GET on a Unix socket: the status and the body.
fn http_get(socket: &Path, path: &str) -> (u16, String) {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    (status.unwrap_or(0), body.to_string())
}

/// An engine that answers every request with HTTP 500 and `body`.
fn failing_engine(socket: &Path, body: String) {
    let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind fake engine");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
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

fn assert_one_clear_engine_finding(doc: &Value, mentions: &[&str]) {
    let ours = findings(doc, PLUGIN);
    assert_eq!(ours.len(), 1, "exactly one finding: {doc:#}");
    let f = ours[0];
    assert_eq!(f["key"], "engine:unavailable");
    assert_eq!(f["severity"], "critical");
    let message = f["message"].as_str().unwrap();
    for mention in mentions {
        assert!(message.contains(mention), "names {mention:?}: {f:#}");
    }
    assert_eq!(plugin_summary(doc, PLUGIN)["outcome"], "ok");
}

/// The engine went away (`socket` is where it answered): one finding from
/// this plugin that names the socket and `why`; the other plugin of the run
/// is unaffected and finds its stray listener.
fn stopped_engine_is_one_clear_finding_and_other_plugins_run(socket: &Path, why: &str) {
    assert!(!support::podman::ping(socket), "the engine is stopped");
    let s = Scenario::new();
    let port = support::free_port();
    let stray = support::Proc::spawn(&[
        "python3",
        "-c",
        &format!("import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',{port}))\ns.listen()\nwhile True: time.sleep(1)"),
    ]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    policy(&s, socket, &["web-*"], "", &other_plugin(port));
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    assert_one_clear_engine_finding(&doc, &[&socket.display().to_string(), why]);
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

/// How each engine goes away: a Podman API service that dies (a crash, an
/// OOM kill) leaves its socket file with nobody listening; a Docker daemon
/// stopped takes its socket with it. (Docker's test stops a daemon of its
/// own, not the one the other tests share.)
mod stopped_engine_is_one_clear_finding_and_other_plugins_run {
    use super::*;

    #[test]
    fn on_podman() {
        let mut podman = Podman::start();
        podman.kill_service();
        assert!(podman.socket().exists(), "a dead service leaves its socket");
        super::stopped_engine_is_one_clear_finding_and_other_plugins_run(
            podman.socket(),
            "Connection refused",
        );
    }

    #[test]
    fn on_docker() {
        let docker = match Docker::private() {
            Ok(docker) => docker,
            Err(why) => {
                println!("stopped_engine_is_one_clear_finding_and_other_plugins_run::on_docker: not run on Docker: {why}");
                return;
            }
        };
        let socket = docker.socket().to_path_buf();
        docker.stop();
        assert!(!socket.exists(), "a stopped daemon takes its socket");
        super::stopped_engine_is_one_clear_finding_and_other_plugins_run(
            &socket,
            "No such file or directory",
        );
    }
}

/// An engine that answers with an error, in that engine's own dialect: the
/// fake repeats the shape of a real error answer of the engine (Podman's
/// `{"cause", "message", "response"}`, Docker's `{"message"}`) with status 500.
fn engine_answering_with_an_error_is_one_clear_finding(engine: &dyn TestEngine) {
    let (status, body) = http_get(engine.socket(), "/containers/no-such-container/json");
    assert_eq!(status, 404, "{body}");
    let mut error: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    println!("{}: an error answer: {body}", engine.name());
    let fields: BTreeSet<String> = error.as_object().unwrap().keys().cloned().collect();
    let dialect = match engine.name() {
        "podman" => set(&["cause", "message", "response"]),
        _ => set(&["message"]),
    };
    assert_eq!(fields, dialect, "{body}");
    error["message"] = "database is locked".into();
    if error.get("cause").is_some() {
        error["cause"] = "x".into();
        error["response"] = 500.into();
    }

    let s = Scenario::new();
    let socket = s.path("bad-engine.sock");
    failing_engine(&socket, error.to_string());
    let port = support::free_port();
    policy(&s, &socket, &["web-*"], "", &other_plugin(port));
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    assert_one_clear_engine_finding(&doc, &["engine answered 500: database is locked"]);
    assert_eq!(
        plugin_summary(&doc, "port-9403-freer")["outcome"],
        "ok",
        "{doc:#}"
    );
    assert!(findings(&doc, "port-9403-freer").is_empty(), "{doc:#}");
}
