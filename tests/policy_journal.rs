//! Bad policies stop everything before anything is written; the journal
//! serialises runs and remembers findings across them; the compiled-component
//! cache is used and survives corruption.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// Run `doctor check` on `policy_text`; return (exit code, stderr).
fn check_bad(policy_text: &str) -> (Scenario, i32, String) {
    let s = Scenario::new();
    std::fs::write(
        s.policy_path(),
        policy_text.replace("JOURNAL", &s.journal_path().display().to_string()),
    )
    .unwrap();
    let out = s.doctor(&["check"]);
    let code = out.status.code().unwrap_or(-1);
    (s, code, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_policies_exit_3_name_file_line_and_key_and_write_no_journal() {
    let cases: &[(&str, &str, &str)] = &[
        ("[doctor]\njournal = \"JOURNAL\"\n\n[plugins.pid-file-stop\n", ":4:", "malformed"),
        ("[doctor]\njournal = \"JOURNAL\"\nmax_actions = 5\n", ":3: doctor.max_actions:", "unknown field"),
        ("[doctor]\njournal = \"JOURNAL\"\n\n[plugins.no-such-plugin]\nevery = \"1m\"\n", ":4: plugins.no-such-plugin:", "no plugin named"),
        ("[doctor]\njournal = \"JOURNAL\"\n\n[plugins.pid-file-stop]\nevery = \"every tuesday\"\n", ":5: plugins.pid-file-stop.every:", "invalid duration"),
        (
            "[doctor]\njournal = \"JOURNAL\"\n\n[plugins.pid-file-stop]\ngrants.processes = true\nconfig = { targets = [], colour = \"red\" }\n",
            "plugins.pid-file-stop.config.colour",
            "unknown config key",
        ),
    ];
    for (text, location, reason) in cases {
        let (s, code, stderr) = check_bad(text);
        assert_eq!(code, 3, "{text}\n{stderr}");
        assert!(stderr.contains("policy.toml"), "names the file: {stderr}");
        assert!(
            stderr.contains(location),
            "names line/key {location:?}: {stderr}"
        );
        if *reason != "malformed" {
            assert!(stderr.contains(reason), "says why ({reason}): {stderr}");
        }
        assert!(
            !s.journal_path().exists(),
            "the journal is not written for {text}"
        );
    }
}

#[test]
fn policy_validate_accepts_the_shipped_examples() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    for entry in std::fs::read_dir(root.join("policies")).unwrap() {
        let path = entry.unwrap().path();
        let out = Command::new(DOCTOR)
            .args(["policy", "validate", "--policy"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_finding_goes_new_then_persisting_then_resolved() {
    let s = Scenario::new();
    s.stale_pid_policy("", "", &["w"]);
    let status = |doc: &serde_json::Value| {
        finding(doc, "pid-file-stop", "w:stale-pid-file")
            .map(|f| f["status"].as_str().unwrap().to_string())
    };

    let (_, first) = s.doctor_json(&["check"]);
    assert_eq!(status(&first).as_deref(), Some("new"));
    let (_, second) = s.doctor_json(&["check"]);
    assert_eq!(status(&second).as_deref(), Some("persisting"));
    std::fs::remove_file(s.path("w.pid")).unwrap();
    let (code, third) = s.doctor_json(&["check"]);
    assert_eq!(status(&third).as_deref(), Some("resolved"));
    assert_eq!(code, 0, "a resolved finding is not a problem");

    let (row_status, first_seen, last_seen): (String, i64, i64) = s
        .journal()
        .query_row(
            "SELECT status, first_seen, last_seen FROM findings WHERE key = 'w:stale-pid-file'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(row_status, "resolved");
    assert!(
        first_seen < last_seen,
        "first seen on run 1, last seen on run 2"
    );
}

#[test]
fn a_second_concurrent_run_waits_then_fails_clearly() {
    let s = Scenario::new();
    s.install_plugin("hostile-loop", &test_plugins().join("hostile_loop.wasm"));
    // The first run is held up by a plugin that loops until its 6 s deadline.
    // The shared header sets lock_wait = "2s" for the second run.
    s.policy_with("plugin_timeout = \"6s\"", "[plugins.hostile-loop]\n");
    let mut first = Command::new(DOCTOR)
        .args(["check", "--policy"])
        .arg(s.policy_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = s.path("journal.db.lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    // The holder writes "PID START_MS" there.
    while std::fs::read_to_string(&lock)
        .unwrap_or_default()
        .split_whitespace()
        .next()
        != Some(first.id().to_string().as_str())
    {
        assert!(
            Instant::now() < deadline,
            "the first run never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let started = Instant::now();
    let out = s.doctor(&["check"]);
    let waited = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    // The live holder is named: pid, command line, since when.
    assert!(
        stderr.contains(&format!("another doctor run (pid {}: ", first.id())),
        "{stderr}"
    );
    assert!(
        stderr.contains("doctor check --policy")
            && stderr.contains(", since 20")
            && stderr.contains(") holds the journal lock"),
        "{stderr}"
    );
    assert!(
        waited >= Duration::from_secs(2),
        "it waited for lock_wait first ({waited:?})"
    );

    assert_eq!(
        first.wait().unwrap().code(),
        Some(3),
        "the first run finishes (its plugin timed out)"
    );
    let runs: i64 = s
        .journal()
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(runs, 1, "only the run that held the lock is journalled");
}

#[test]
fn the_second_run_loads_from_the_cache_and_a_corrupt_entry_is_a_miss() {
    let s = Scenario::new();
    s.stale_pid_policy("", "", &["w"]);
    // A plugin file beside the built-in: the built-ins come precompiled
    // with doctor, a file is compiled on first use and cached.
    s.install_plugin("contract-v0-1", &test_plugins().join("contract_v0_1.wasm"));
    let root = s.root().display().to_string();
    std::fs::write(s.path("note.txt"), "a note\n").unwrap();
    // A cache of this scenario's own, so the first run must compile.
    let text = std::fs::read_to_string(s.policy_path()).unwrap();
    let own_cache = s.path("cache");
    let text = text.replace(
        &shared_cache().display().to_string(),
        &own_cache.display().to_string(),
    ) + &format!(
        "\n[plugins.contract-v0-1]\ngrants.processes = true\ngrants.files = [\"{root}/note.txt\"]\nconfig = {{ path = \"{root}/note.txt\" }}\n"
    );
    std::fs::write(s.policy_path(), text).unwrap();

    let cache = |doc: &serde_json::Value, plugin: &str| {
        plugin_summary(doc, plugin)["cache"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (_, first) = s.doctor_json(&["check"]);
    assert_eq!(cache(&first, "contract-v0-1"), "miss", "{first}");
    assert_eq!(cache(&first, "pid-file-stop"), "precompiled");
    let entries = || std::fs::read_dir(&own_cache).unwrap().count();
    assert_eq!(entries(), 1, "the plugin file's entry, none for a built-in");
    let (_, second) = s.doctor_json(&["check"]);
    assert_eq!(cache(&second, "contract-v0-1"), "hit");
    assert_eq!(cache(&second, "pid-file-stop"), "precompiled");

    // Corrupt every entry in place: same size, flipped bytes in the middle.
    for entry in std::fs::read_dir(&own_cache).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 64] {
            *b ^= 0xff;
        }
        std::fs::write(&path, bytes).unwrap();
    }
    let (code, third) = s.doctor_json(&["check"]);
    assert_eq!(
        cache(&third, "contract-v0-1"),
        "miss",
        "a corrupt entry is recompiled"
    );
    assert_eq!(code, 1);
    assert!(
        finding(&third, "contract-v0-1", "seen").is_some(),
        "and the run is correct: {third}"
    );
    assert!(finding(&third, "pid-file-stop", "w:stale-pid-file").is_some());
    let (_, fourth) = s.doctor_json(&["check"]);
    assert_eq!(
        cache(&fourth, "contract-v0-1"),
        "hit",
        "the entry was rewritten"
    );

    let recorded = |plugin: &str| -> Vec<String> {
        s.journal()
            .prepare("SELECT cache FROM plugin_runs WHERE plugin = ?1 ORDER BY id")
            .unwrap()
            .query_map([plugin], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(recorded("contract-v0-1"), ["miss", "hit", "miss", "hit"]);
    assert_eq!(recorded("pid-file-stop"), ["precompiled"; 4]);
}

#[test]
fn unknown_plugin_on_the_command_line_is_a_usage_error() {
    let s = Scenario::new();
    s.stale_pid_policy("", "", &["w"]);
    let out = s.doctor(&["check", "--plugin", "nope"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--plugin nope"));
    assert!(!s.journal_path().exists());
}
