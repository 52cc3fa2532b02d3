//! `doctor check --record DIR`, then `doctor plugins replay PLUGIN DIR`:
//! every built-in plugin, replayed against what it saw, reports exactly what
//! it reported (byte for byte), with no host to read; a call the recording
//! does not hold is an error naming it.

mod support;

use rusqlite::Connection;
use std::process::Command;
use support::*;

const BUILT_INS: &[&str] = &[
    "pid-file-stop",
    "sqlite-chunk-reset",
    "job-health",
    "port-9403-freer",
    "container-caps-checker",
];

/// A pid that no process has any more.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// The five incidents in small: a stale PID file, chunks and jobs owned by a
/// dead worker, a port held by an unexpected listener, and a container
/// engine that does not answer.
fn five_incidents(s: &Scenario) -> Proc {
    let root = s.root().display().to_string();
    std::fs::write(s.path("stale.pid"), "999999999\n").unwrap();
    let dead = dead_pid();
    let db = s.path("work.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch(&format!(
            "CREATE TABLE chunks (id INTEGER PRIMARY KEY, status TEXT NOT NULL, assigned_worker TEXT, started_at INTEGER);
             INSERT INTO chunks VALUES (1, 'running', '{dead}', NULL), (2, 'pending', NULL, NULL), (3, 'complete', NULL, NULL);
             CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT NOT NULL, pid TEXT, heartbeat_at INTEGER, updated_at INTEGER, attempts INTEGER NOT NULL DEFAULT 0, error TEXT);
             INSERT INTO jobs VALUES (1, 'running', '{dead}', NULL, NULL, 0, NULL), (2, 'completed', NULL, NULL, NULL, 1, NULL);"
        ))
        .unwrap();
    let port = free_port();
    let listener = Proc::spawn(&[
        "python3",
        "-c",
        &format!("import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',{port}))\ns.listen()\ntime.sleep(120) # record-replay"),
    ]);
    // Wait until it listens, so the recording sees it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    s.policy(&format!(
        r#"
[databases.work]
path = "{root}/work.db"

[container_engine]
socket = "{root}/no-engine.sock"
timeout = "1s"

[plugins.pid-file-stop]
grants.processes = true
grants.files = ["{root}/*.pid"]
config = {{ targets = [{{ name = "w", pid_file = "{root}/stale.pid", pattern = "^never$" }}] }}

[plugins.sqlite-chunk-reset]
grants.processes = true
grants.sqlite = ["work"]
config = {{ db = "work", table = "chunks", worker_match = "never" }}

[plugins.job-health]
grants.processes = true
grants.sqlite = ["work"]
config = {{ db = "work", reason_column = "error", worker_match = "never" }}

[plugins.port-9403-freer]
grants.processes = true
grants.sockets = true
config = {{ ports = [{port}] }}

[plugins.container-caps-checker]
grants.containers = true
"#
    ));
    listener
}

#[test]
fn every_built_in_plugin_replays_to_the_same_report_byte_for_byte() {
    let s = Scenario::new();
    let _listener = five_incidents(&s);
    let recording = s.path("recording");
    let (_, checked) = s.doctor_json(&["check", "--record", recording.to_str().unwrap()]);
    for plugin in BUILT_INS {
        let mine: Vec<_> = findings(&checked, plugin);
        assert!(
            !mine.is_empty(),
            "{plugin} found something to replay: {checked}"
        );
        assert!(
            recording.join(format!("{plugin}.json")).exists(),
            "{plugin} was recorded"
        );
        let out = Command::new(DOCTOR)
            .args(["plugins", "replay", plugin])
            .arg(&recording)
            .args(["--format", "json"])
            .output()
            .unwrap();
        let replayed: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{plugin}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(
            plugin_summary(&replayed, plugin)["outcome"],
            "ok",
            "{plugin}: {replayed}"
        );
        let again: Vec<_> = findings(&replayed, plugin);
        assert_eq!(
            serde_json::to_string(&mine).unwrap(),
            serde_json::to_string(&again).unwrap(),
            "{plugin}: the replay reports what the check reported"
        );
    }
}

#[test]
fn a_call_the_recording_does_not_hold_is_an_error_naming_it() {
    let s = Scenario::new();
    let _listener = five_incidents(&s);
    let recording = s.path("recording");
    s.doctor(&["check", "--record", recording.to_str().unwrap()]);
    // The same plugin, asked about another PID file than it was recorded with.
    let file = recording.join("pid-file-stop.json");
    let mut rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    rec["config"] = serde_json::Value::String(
        rec["config"]
            .as_str()
            .unwrap()
            .replace("stale.pid", "other.pid"),
    );
    std::fs::write(&file, rec.to_string()).unwrap();
    let out = Command::new(DOCTOR)
        .args(["plugins", "replay", "pid-file-stop"])
        .arg(&recording)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let replayed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = plugin_summary(&replayed, "pid-file-stop")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("replay: the plugin called files.stat")
            && error.contains("other.pid")
            && error.contains("does not hold"),
        "{error}"
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "a plugin that could not run is UNKNOWN"
    );
}
