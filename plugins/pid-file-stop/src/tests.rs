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
        { "call": "processes.get", "args": [0], "answer": { "Ok": null } },
        { "call": "files.stat", "args": ["/run/w.pid"], "answer": { "Ok": { "gid": 0, "kind": "File", "mode": 420, "modified_unix_ms": 1796020170846, "size": 10, "uid": 0 } } },
        { "call": "files.read", "args": ["/run/w.pid", 4096], "answer": { "Ok": "999999999\n" } },
        { "call": "processes.get", "args": [999999999], "answer": { "Ok": null } }
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

/// A process manager restarts the target a second and a half after it
/// exits, later than the fix's re-check: check, fix (stop, re-check finds
/// nothing), then the next runs report the respawn, naming the manager, and
/// plan no stop. Each look starts from the state the one before left.
#[test]
fn a_respawn_slower_than_the_re_check_is_reported_by_the_next_run() {
    use doctor_sdk::processes::Process;
    use doctor_sdk::testing::{process, Outcome};
    use doctor_sdk::ProcessRef;
    use std::collections::BTreeMap;

    let manager = process(50, "sh -c restart-loop manager");
    let old = Process {
        ppid: 50,
        started_unix_ms: 1_000,
        ..process(60, "web")
    };
    let new = Process {
        id: ProcessRef {
            pid: 61,
            start_time: 2,
        },
        ppid: 50,
        started_unix_ms: 12_000,
        ..process(61, "web")
    };
    let look = |kv: &BTreeMap<String, String>, now: u64, running: Option<&Process>| -> Outcome {
        let mut facts = Facts::new().now(now);
        let mut table = vec![manager.clone()];
        if let Some(p) = running {
            facts = facts.file("/run/web.pid", &format!("{}\n", p.id.pid));
            table.push(p.clone());
        }
        for (k, v) in kv {
            facts = facts.kv(k, v);
        }
        facts.processes(table).run::<PidFileStop>(CONFIG)
    };
    let message = |out: &Outcome| out.finding("web:running").unwrap().message.clone();

    let check = look(&BTreeMap::new(), 10_000, Some(&old));
    let fix = look(&check.kv, 11_000, Some(&old));
    assert!(
        message(&fix).starts_with("web should be stopped"),
        "{}",
        message(&fix)
    );
    assert_eq!(fix.finding("web:running").unwrap().actions.len(), 2);
    let recheck = look(&fix.kv, 11_500, None);
    assert!(recheck.keys().is_empty(), "{:?}", recheck.keys());
    let mut kv = recheck.kv.clone();
    for now in [14_000, 15_000, 16_000] {
        let out = look(&kv, now, Some(&new));
        assert!(
            message(&out).starts_with(
                "persisting — respawned by parent pid 50 (sh -c restart-loop manager)"
            ),
            "{}",
            message(&out)
        );
        assert!(out.finding("web:running").unwrap().actions.is_empty());
        kv = out.kv;
    }
    // Without a respawn, the look after the re-check drops the record.
    let later = look(&recheck.kv, 14_000, None);
    assert!(
        !later.kv.keys().any(|k| k.starts_with("respawn:")),
        "{:?}",
        later.kv
    );
}
