//! The plugin's `check`, run natively against facts the test supplies
//! (doctor_sdk::testing): no host, no component build.

use super::PidFileStop;
use doctor_sdk::testing::Facts;

const CONFIG: &str =
    r#"{ "targets": [{ "name": "web", "pid_file": "/run/web.pid", "pattern": "^web$" }] }"#;

#[test]
fn a_pid_file_naming_no_process_is_stale_and_its_removal_is_planned() {
    let out = Facts::new()
        .file("/run/web.pid", "424242\n")
        .processes(vec![])
        .run::<PidFileStop>(CONFIG);
    assert_eq!(out.keys(), ["web:stale-pid-file"]);
    let finding = out.finding("web:stale-pid-file").unwrap();
    assert!(finding.message.contains("424242"), "{}", finding.message);
    assert_eq!(finding.actions.len(), 1, "remove the PID file");
}

/// A `doctor check --record` recording (trimmed) as the facts: a
/// recorded run becomes a test.
const RECORDED: &str = r#"{
    "format": 1, "plugin": "pid-file-stop", "version": "0.1.0", "sha256": "",
    "config": "{\"targets\":[{\"name\":\"w\",\"pattern\":\"^x$\",\"pid_file\":\"/run/w.pid\"}]}",
    "state": { "doctor:own-pids": "[1]" },
    "calls": [
        { "call": "processes.all", "args": null, "answer": { "Ok": [] } },
        { "call": "files.stat", "args": ["/run/w.pid"], "answer": { "Ok": { "gid": 0, "kind": "File", "mode": 420, "modified_unix_ms": 1796020170846, "size": 10, "uid": 0 } } },
        { "call": "files.read", "args": ["/run/w.pid", 4096], "answer": { "Ok": "999999999\n" } }
    ]
}"#;

#[test]
fn a_recorded_run_replays_as_a_test() {
    let config = r#"{"targets":[{"name":"w","pattern":"^x$","pid_file":"/run/w.pid"}]}"#;
    let out = Facts::new().recording(RECORDED).run::<PidFileStop>(config);
    assert_eq!(out.keys(), ["w:stale-pid-file"]);
}

#[test]
fn a_denied_grant_comes_back_as_the_plugins_error() {
    let out = Facts::new()
        .deny("files")
        .processes(vec![])
        .run::<PidFileStop>(CONFIG);
    let error = out
        .result
        .as_ref()
        .err()
        .map(doctor_sdk::error_text)
        .unwrap_or_default();
    assert!(error.starts_with("denied:"), "{error}");
}
