//! The incident: a Stop button said "stopped" while the process kept running.
//! pid-file-stop against real processes and real PID files.

mod support;

use std::time::Duration;
use support::*;

/// A policy with one target; `pattern` is matched against the command line
/// and also limits what may be signalled. No scope: only the PID file's process.
fn policy(s: &Scenario, name: &str, pid_file: &str, pattern: &str, grace_ms: u32, desired: &str) {
    scoped_policy(s, name, pid_file, pattern, grace_ms, desired, "")
}

/// The test's own user: these scenarios' processes run as it.
fn my_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// `scope` is a TOML value (`{ user = 0 }`, `"host"`), or "" for none.
fn scoped_policy(
    s: &Scenario,
    name: &str,
    pid_file: &str,
    pattern: &str,
    grace_ms: u32,
    desired: &str,
    scope: &str,
) {
    let scope = if scope.is_empty() {
        String::new()
    } else {
        format!("scope = {scope}")
    };
    let root = s.root().display().to_string();
    s.policy(&format!(
        r#"
[plugins.pid-file-stop]
grants.processes = true
grants.files = ["{root}/*.pid"]
grants.files_remove = ["{root}/*.pid"]
grants.signal = {{ match = [{pattern:?}] }}

[[plugins.pid-file-stop.config.targets]]
name = "{name}"
pid_file = "{root}/{pid_file}"
pattern = {pattern:?}
desired = "{desired}"
grace_ms = {grace_ms}
{scope}
"#
    ));
}

fn actions(doc: &serde_json::Value, key: &str) -> Vec<(String, String)> {
    finding(doc, "pid-file-stop", key)
        .map(|f| {
            f["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        a["kind"].as_str().unwrap().to_string(),
                        a["outcome"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_running_process_with_its_pid_file_is_stopped_and_the_file_removed() {
    let s = Scenario::new();
    let mut worker = Proc::spawn(&["sleep", "301"]);
    std::fs::write(s.path("worker.pid"), format!("{}\n", worker.pid())).unwrap();
    policy(&s, "worker", "worker.pid", "^sleep 301$", 2000, "stopped");

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(
        code, 2,
        "a target that should be stopped but runs is critical: {doc}"
    );
    assert_eq!(
        actions(&doc, "worker:running"),
        [
            ("stop-process".into(), "planned".into()),
            ("remove-file".into(), "planned".into())
        ]
    );
    assert!(worker.running(), "check changes nothing");
    assert!(s.path("worker.pid").exists(), "check changes nothing");

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        finding(&doc, "pid-file-stop", "worker:running").unwrap()["status"],
        "fixed"
    );
    assert_eq!(
        actions(&doc, "worker:running"),
        [
            ("stop-process".into(), "applied".into()),
            ("remove-file".into(), "applied".into())
        ]
    );
    assert!(
        worker.reap(Duration::from_secs(5)).is_some(),
        "the worker is gone"
    );
    assert!(!s.path("worker.pid").exists(), "the PID file is removed");

    let recorded: Vec<(String, String)> = s
        .journal()
        .prepare("SELECT kind, outcome FROM actions ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .filter(|(_, o): &(String, String)| o != "planned")
        .collect();
    assert_eq!(
        recorded,
        [
            ("stop-process".into(), "applied".into()),
            ("remove-file".into(), "applied".into())
        ]
    );
}

#[test]
fn a_process_that_ignores_term_is_killed_after_the_grace_period() {
    let s = Scenario::new();
    let mut stubborn = Proc::ignoring_term("stubborn-worker");
    std::fs::write(s.path("stubborn.pid"), stubborn.pid().to_string()).unwrap();
    policy(
        &s,
        "stubborn",
        "stubborn.pid",
        "stubborn-worker",
        500,
        "stopped",
    );

    let started = std::time::Instant::now();
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc}");
    let detail = finding(&doc, "pid-file-stop", "stubborn:running").unwrap()["actions"][0]
        ["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("killed"),
        "TERM was ignored, so KILL: {detail}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the grace period was honoured"
    );
    let status = stubborn.reap(Duration::from_secs(5)).expect("killed");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "ended by SIGKILL");
}

#[test]
fn a_stale_pid_file_is_reported_by_check_and_removed_by_fix() {
    let s = Scenario::new();
    // A pid that is certainly not running: a child we started and reaped.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(s.path("old.pid"), pid.to_string()).unwrap();
    policy(&s, "old", "old.pid", "^never-running-xyz$", 1000, "stopped");

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 1, "{doc}");
    let f = finding(&doc, "pid-file-stop", "old:stale-pid-file").expect("stale PID file reported");
    assert_eq!(f["status"], "new");
    assert!(s.path("old.pid").exists());

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        finding(&doc, "pid-file-stop", "old:stale-pid-file").unwrap()["status"],
        "fixed"
    );
    assert!(!s.path("old.pid").exists());
}

#[test]
fn a_pid_file_naming_a_live_unrelated_process_is_reported_and_that_process_survives() {
    let s = Scenario::new();
    // The PID file points at a live process that is not the target: a reused pid.
    let mut bystander = Proc::spawn(&["sleep", "302"]);
    std::fs::write(s.path("trainer.pid"), bystander.pid().to_string()).unwrap();
    // Even a signal grant that would match the bystander must not get it signalled.
    let root = s.root().display().to_string();
    s.policy(&format!(
        r#"
[plugins.pid-file-stop]
grants.processes = true
grants.files = ["{root}/*.pid"]
grants.files_remove = ["{root}/*.pid"]
grants.signal = {{ match = [".*"] }}
config = {{ targets = [{{ name = "trainer", pid_file = "{root}/trainer.pid", pattern = "train\\.py" }}] }}
"#
    ));

    let (code, doc) = s.doctor_json(&["check"]);
    let f = finding(&doc, "pid-file-stop", "trainer:pid-reused").expect("reused pid reported");
    assert!(f["message"]
        .as_str()
        .unwrap()
        .contains(&bystander.pid().to_string()));
    assert_eq!(code, 1, "{doc}");

    let (_, doc) = s.doctor_json(&["fix"]);
    assert!(
        finding(&doc, "pid-file-stop", "trainer:running").is_none(),
        "no instance of the target runs"
    );
    assert!(bystander.running(), "the unrelated process survives fix");
    assert!(
        s.path("trainer.pid").exists(),
        "the PID file is left for the operator"
    );
}

#[test]
fn every_matching_instance_is_stopped() {
    let s = Scenario::new();
    let mut a = Proc::spawn(&["sleep", "303"]);
    let mut b = Proc::spawn(&["sleep", "303"]);
    scoped_policy(
        &s,
        "dupes",
        "dupes.pid",
        "^sleep 303$",
        2000,
        "stopped",
        &format!("{{ user = {} }}", my_uid()),
    );

    let (_, doc) = s.doctor_json(&["check"]);
    let f = finding(&doc, "pid-file-stop", "dupes:running").unwrap();
    assert_eq!(f["evidence"]["instances"], "2");
    assert!(a.running() && b.running());

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc}");
    assert!(
        a.reap(Duration::from_secs(5)).is_some() && b.reap(Duration::from_secs(5)).is_some(),
        "both stopped"
    );
}

#[test]
fn report_only_targets_report_duplicates_and_touch_nothing() {
    let s = Scenario::new();
    let mut a = Proc::spawn(&["sleep", "304"]);
    let mut b = Proc::spawn(&["sleep", "304"]);
    scoped_policy(
        &s,
        "dupes",
        "dupes.pid",
        "^sleep 304$",
        2000,
        "report-only",
        "\"host\"",
    );

    let (code, doc) = s.doctor_json(&["fix"]);
    let f = finding(&doc, "pid-file-stop", "dupes:duplicates").expect("duplicates reported");
    assert!(f["actions"].as_array().unwrap().is_empty());
    assert_eq!(code, 1);
    assert!(a.running() && b.running());
}

#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let s = Scenario::new();
    let mut worker = Proc::spawn(&["sleep", "305"]);
    std::fs::write(s.path("w.pid"), worker.pid().to_string()).unwrap();
    policy(&s, "w", "w.pid", "^sleep 305$", 1000, "stopped");

    let out = s.doctor(&["fix", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("stop pid {}", worker.pid())),
        "{text}"
    );
    assert!(text.contains("planned"), "{text}");
    assert!(worker.running());
    assert!(s.path("w.pid").exists());
}

#[test]
fn without_a_signal_grant_the_stop_is_refused_and_the_run_is_critical() {
    let s = Scenario::new();
    let mut worker = Proc::spawn(&["sleep", "306"]);
    let root = s.root().display().to_string();
    let uid = my_uid();
    s.policy(&format!(
        r#"
[plugins.pid-file-stop]
grants.processes = true
grants.files = ["{root}/*.pid"]
config = {{ targets = [{{ name = "w", pattern = "^sleep 306$", scope = {{ user = {uid} }} }}] }}
"#
    ));
    let (code, doc) = s.doctor_json(&["fix"]);
    let action = &finding(&doc, "pid-file-stop", "w:running").unwrap()["actions"][0];
    assert_eq!(action["outcome"], "refused");
    assert!(
        action["detail"].as_str().unwrap().contains("grants.signal"),
        "{action}"
    );
    assert_eq!(code, 2);
    assert!(worker.running());
}

#[test]
fn without_a_scope_a_pattern_alone_matches_nothing() {
    let s = Scenario::new();
    let mut stray = Proc::spawn(&["sleep", "307"]);
    policy(&s, "stray", "stray.pid", "^sleep 307$", 1000, "stopped");
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(
        code, 0,
        "no PID file and no scope: nothing is an instance: {doc}"
    );
    assert!(
        finding(&doc, "pid-file-stop", "stray:running").is_none(),
        "{doc}"
    );
    assert!(stray.running());
}

#[test]
fn a_process_started_after_its_pid_file_was_written_is_not_the_target() {
    let s = Scenario::new();
    // The file was written (by a process long gone) before this one started: a reused pid.
    std::fs::write(s.path("late.pid"), "").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    let file = std::fs::File::options()
        .write(true)
        .open(s.path("late.pid"))
        .unwrap();
    let mut late = Proc::spawn(&["sleep", "308"]);
    std::fs::write(s.path("late.pid"), late.pid().to_string()).unwrap();
    file.set_modified(old).unwrap();
    policy(&s, "late", "late.pid", "^sleep 308$", 1000, "stopped");
    let (_, doc) = s.doctor_json(&["fix"]);
    let f = finding(&doc, "pid-file-stop", "late:pid-reused").unwrap_or_else(|| panic!("{doc}"));
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("started after the PID file was written"),
        "{f}"
    );
    assert!(
        late.running(),
        "a process younger than its PID file is not the one that wrote it"
    );
}

/// The pid `path` names once it is a running `sleep` other than `not`
/// (the manager writes the file right after its fork, before the exec).
fn sleeper_in(path: &std::path::Path, not: Option<u32>) -> u32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        if let Some(pid) = pid.filter(|p| Some(*p) != not) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.starts_with(b"sleep\0") {
                return pid;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never named a new sleeper",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 21, item 3: a process manager that restarts its child a second
/// and a half after it exits, later than the fix's one-second re-check. The
/// operator's check, fix, check, fix, check: the stop is fixed once, and
/// from the first run that sees the new child on, it is `persisting —
/// respawned by parent pid N (COMMAND)`, never stopped again; the manager,
/// which is not the target, is never touched.
#[test]
fn a_manager_restarting_its_child_after_a_second_and_a_half_is_named_from_the_next_run() {
    let s = Scenario::new();
    let pid_file = s.path("child.pid");
    let script = format!(
        "while :; do sleep 3607 & echo $! > '{}'; wait $!; sleep 1.5; done",
        pid_file.display()
    );
    let mut manager = Proc::spawn(&["sh", "-c", &script, "respawner"]);
    let first = sleeper_in(&pid_file, None);
    policy(&s, "child", "child.pid", "^sleep 3607$", 1000, "stopped");
    let running = |doc: &serde_json::Value| {
        finding(doc, "pid-file-stop", "child:running")
            .unwrap_or_else(|| panic!("{doc:#}"))
            .clone()
    };

    let (code, doc) = s.doctor_json(&["check"]);
    let f = running(&doc);
    assert_eq!((code, f["status"].as_str()), (2, Some("new")), "{f:#}");

    let (code, doc) = s.doctor_json(&["fix"]);
    let f = running(&doc);
    assert_eq!(
        actions(&doc, "child:running"),
        [
            ("stop-process".into(), "applied".into()),
            ("remove-file".into(), "applied".into())
        ]
    );
    // The re-check came a second after the stop, before the restart.
    assert_eq!((code, f["status"].as_str()), (0, Some("fixed")), "{f:#}");

    let second = sleeper_in(&pid_file, Some(first));
    let expected = format!(
        "persisting — respawned by parent pid {} (sh -c {script} respawner)",
        manager.pid()
    );
    // Fixed in between, the finding is new to the journal once more.
    for (run, command, status) in [
        (3, "check", "new"),
        (4, "fix", "persisting"),
        (5, "check", "persisting"),
    ] {
        let (code, doc) = s.doctor_json(&[command]);
        let f = running(&doc);
        assert_eq!(f["status"], status, "run {run} ({command}): {f:#}");
        let message = f["message"].as_str().unwrap();
        assert!(
            message.starts_with(&expected),
            "run {run} ({command}): {message}"
        );
        assert!(
            f["actions"].as_array().unwrap().is_empty(),
            "not stopped again: {f:#}"
        );
        assert_eq!(code, 2, "{doc:#}");
        assert_eq!(
            sleeper_in(&pid_file, None),
            second,
            "the respawned child is left running"
        );
    }
    assert!(manager.running(), "the manager is not the target");
}
