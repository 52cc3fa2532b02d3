//! `doctor fix` killed with SIGKILL at every action and at random moments:
//! the journal stays intact, every change found in the world has its intent
//! in the journal, nothing is applied twice, and the next run reports the
//! interruption and finishes the job. Plus: two journals on one host never
//! fix at the same time.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const TARGETS: usize = 3;

/// Three stale-but-running targets (a sleeper each, with its PID file):
/// six actions in all (stop, then remove the PID file).
struct World {
    s: Scenario,
    sleepers: Vec<Proc>,
}

fn world(tag: u32) -> World {
    build_world(tag, false)
}

/// Targets that ignore TERM, so each stop lasts its 300 ms grace: a kill at
/// a random moment then often lands while an action is under way.
fn stubborn_world(tag: u32) -> World {
    build_world(tag, true)
}

fn build_world(tag: u32, stubborn: bool) -> World {
    let s = Scenario::new();
    let root = s.root().display().to_string();
    let mut sleepers = Vec::new();
    let mut targets = String::new();
    for i in 0..TARGETS {
        // A command line no other test uses, so no other test's target matches.
        let (p, pattern, grace) = if stubborn {
            let tag = format!("crash-{tag}-{i}");
            (Proc::ignoring_term(&tag), format!("{tag}$"), 300)
        } else {
            let seconds = format!("{}", 7000 + tag * 10 + i as u32);
            (
                Proc::spawn(&["sleep", &seconds]),
                format!("^sleep {seconds}$"),
                2000,
            )
        };
        std::fs::write(s.path(&format!("t{i}.pid")), format!("{}\n", p.pid())).unwrap();
        targets.push_str(&format!(
            "\n[[plugins.pid-file-stop.config.targets]]\nname = \"t{i}\"\npid_file = \"{root}/t{i}.pid\"\npattern = \"{pattern}\"\ndesired = \"stopped\"\ngrace_ms = {grace}\n"
        ));
        sleepers.push(p);
    }
    s.policy(&format!(
        "[plugins.pid-file-stop]\ngrants.processes = true\ngrants.files = [\"{root}/*.pid\"]\ngrants.files_remove = [\"{root}/*.pid\"]\ngrants.signal = {{ match = [\"^sleep 7[0-9]+$\", \"crash-[0-9]+-[0-9]+$\"] }}\n{targets}"
    ));
    World { s, sleepers }
}

fn fix_command(s: &Scenario) -> Command {
    let mut cmd = Command::new(DOCTOR);
    cmd.args(["fix", "--format", "json", "--policy"])
        .arg(s.policy_path())
        .env("DOCTOR_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// (kind, params, outcome) of every intent in the journal.
fn intents(s: &Scenario) -> Vec<(String, String, Option<String>)> {
    let conn = s.journal();
    // Killed before the schema was made: no intents, and nothing was done.
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'intents'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if !has_table {
        return Vec::new();
    }
    let mut stmt = conn
        .prepare("SELECT kind, params, outcome FROM intents ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// After a kill: the journal is intact and every change in the world has its intent.
fn check_after_kill(w: &mut World, when: &str) {
    let ok: String =
        w.s.journal()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
    assert_eq!(ok, "ok", "{when}");
    let recorded = intents(&w.s);
    for (i, sleeper) in w.sleepers.iter_mut().enumerate() {
        let pid = sleeper.pid();
        if !sleeper.running() {
            let stop = format!("\"pid\":{pid},");
            assert!(
                recorded
                    .iter()
                    .any(|(k, p, _)| k == "stop-process" && p.contains(&stop)),
                "{when}: t{i} (pid {pid}) stopped without an intent: {recorded:?}"
            );
        }
        if !w.s.path(&format!("t{i}.pid")).exists() {
            let path = format!("t{i}.pid\"");
            assert!(
                recorded
                    .iter()
                    .any(|(k, p, _)| k == "remove-file" && p.contains(&path)),
                "{when}: t{i}.pid removed without an intent: {recorded:?}"
            );
        }
    }
}

/// The next run reports the interruption, finishes the job, applies nothing twice.
fn check_recovery(w: &mut World, when: &str, expect_interrupted_action: bool) {
    let (code, doc) = w.s.doctor_json(&["fix"]);
    assert!(
        !doc["interrupted_runs"].as_array().unwrap().is_empty(),
        "{when}: the killed run is reported: {doc}"
    );
    if expect_interrupted_action {
        let found = doc["interrupted_actions"].as_array().unwrap();
        assert!(
            !found.is_empty(),
            "{when}: the action without outcome is reported: {doc}"
        );
        assert!(
            found
                .iter()
                .all(|a| !a["found"].as_str().unwrap().is_empty()),
            "{when}: each was re-observed: {doc}"
        );
    }
    assert_eq!(code, 0, "{when}: the second run finishes the job: {doc}");
    for (i, sleeper) in w.sleepers.iter_mut().enumerate() {
        assert!(!sleeper.running(), "{when}: t{i} stopped in the end");
        assert!(
            !w.s.path(&format!("t{i}.pid")).exists(),
            "{when}: t{i}.pid removed in the end"
        );
    }
    // Nothing applied twice: each target's stop and removal applied at most once.
    let recorded = intents(&w.s);
    for (i, sleeper) in w.sleepers.iter().enumerate() {
        let stop = format!("\"pid\":{},", sleeper.pid());
        let stops = recorded
            .iter()
            .filter(|(k, p, o)| {
                k == "stop-process" && p.contains(&stop) && o.as_deref() == Some("applied")
            })
            .count();
        let path = format!("t{i}.pid\"");
        let removals = recorded
            .iter()
            .filter(|(k, p, o)| {
                k == "remove-file" && p.contains(&path) && o.as_deref() == Some("applied")
            })
            .count();
        assert!(
            stops <= 1 && removals <= 1,
            "{when}: t{i} applied twice: {recorded:?}"
        );
    }
    assert!(
        recorded.iter().all(|(_, _, o)| o.is_some()),
        "{when}: every intent has an outcome now: {recorded:?}"
    );
}

#[test]
fn killed_after_each_action_the_journal_is_never_behind_the_world() {
    for n in 1..=(2 * TARGETS) {
        let mut w = world(n as u32);
        let status = fix_command(&w.s)
            .env("DOCTOR_TEST_KILL_AFTER_ACTIONS", n.to_string())
            .status()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "killed after action {n}"
        );
        for sleeper in &mut w.sleepers {
            sleeper.reap(Duration::from_millis(200));
        }
        let when = format!("killed after action {n}");
        check_after_kill(&mut w, &when);
        // Actions 1..n-1 have their outcomes; the one in flight (n) and the
        // ones not yet begun have only their intents.
        let open: Vec<_> = intents(&w.s)
            .into_iter()
            .filter(|(_, _, o)| o.is_none())
            .collect();
        assert_eq!(open.len(), 2 * TARGETS - (n - 1), "{when}: {open:?}");
        check_recovery(&mut w, &when, true);
    }
}

#[test]
fn killed_at_random_moments_the_journal_is_never_behind_the_world() {
    // Deterministic "random" delays spread over a fix's life (load, check, actions).
    // Tags stay below 100 so every command line matches the signal grant.
    let delays = [
        40u64, 120, 200, 280, 360, 450, 540, 630, 720, 810, 900, 1000, 1100, 1200,
    ];
    let mut killed_mid_fix = 0;
    for (round, delay) in delays.iter().enumerate() {
        let mut w = stubborn_world(50 + round as u32);
        let mut child = fix_command(&w.s).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(*delay));
        let _ = child.kill();
        let status = child.wait().unwrap();
        for sleeper in &mut w.sleepers {
            sleeper.reap(Duration::from_millis(200));
        }
        if status.success() || !w.s.journal_path().exists() {
            continue; // finished before the kill, or killed before the journal existed
        }
        let when = format!("killed after {delay} ms");
        check_after_kill(&mut w, &when);
        if intents(&w.s).iter().any(|(_, _, o)| o.is_none()) {
            killed_mid_fix += 1;
        }
        let (_, doc) = w.s.doctor_json(&["fix"]);
        for (i, sleeper) in w.sleepers.iter_mut().enumerate() {
            assert!(!sleeper.running(), "{when}: t{i} stopped in the end: {doc}");
        }
    }
    eprintln!(
        "random kills: {killed_mid_fix} of {} landed between an intent and its outcome",
        delays.len()
    );
    assert!(
        killed_mid_fix > 0,
        "the delays never caught a fix under way; the test proves nothing"
    );
}

#[test]
fn two_journals_on_one_host_never_fix_at_the_same_time() {
    let w = world(90);
    // A second policy for the same host: another journal, the same fix lock.
    let other = w.s.path("other.toml");
    let text = std::fs::read_to_string(w.s.policy_path())
        .unwrap()
        .replace("journal.db", "other-journal.db");
    std::fs::write(&other, text).unwrap();
    // The first holds the host-wide lock through a slow stop (a TERM-ignoring target).
    let stubborn = Proc::ignoring_term("two-journals");
    std::fs::write(w.s.path("t0.pid"), format!("{}\n", stubborn.pid())).unwrap();
    let policy = std::fs::read_to_string(w.s.policy_path())
        .unwrap()
        .replace("^sleep 7900$", "two-journals")
        .replace("grace_ms = 2000", "grace_ms = 6000")
        .replace(
            "\"crash-[0-9]+-[0-9]+$\"]",
            "\"crash-[0-9]+-[0-9]+$\", \"two-journals\"]",
        );
    assert!(
        policy.contains("\"two-journals\"]"),
        "the signal grant covers the stubborn target"
    );
    std::fs::write(w.s.policy_path(), &policy).unwrap();
    std::fs::write(&other, policy.replace("journal.db", "other-journal.db")).unwrap();

    let mut first = fix_command(&w.s).spawn().unwrap();
    let lock = w.s.path("fix.lock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&lock)
        .map(|t| t.is_empty())
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "the first fix never took the host-wide lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = Command::new(DOCTOR)
        .args(["fix", "--policy"])
        .arg(&other)
        .env("DOCTOR_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(
        second.status.code(),
        Some(3),
        "{stderr}\n{}",
        String::from_utf8_lossy(&second.stdout)
    );
    assert!(
        stderr.contains("host-wide fix lock") && stderr.contains(&format!("pid {}", first.id())),
        "names the holder: {stderr}"
    );
    assert!(first.wait().unwrap().code().is_some());
}
