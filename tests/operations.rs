//! Running it for real: the schedule, auto-fix, the flap breaker and rate
//! limit across separate processes, the action budget, a run killed with -9,
//! Prometheus and Nagios output, systemd units, journal operations, the daemon,
//! the log filter that selects one plugin.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn count(s: &Scenario, sql: &str) -> i64 {
    s.journal().query_row(sql, [], |r| r.get(0)).unwrap()
}

fn doctor_env(s: &Scenario, args: &[&str], env: &[(&str, &str)]) -> (i32, serde_json::Value) {
    let out = Command::new(DOCTOR)
        .args(args)
        .args(["--format", "json", "--policy"])
        .arg(s.policy_path())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), doc)
}

#[test]
fn run_runs_a_plugin_only_when_it_is_due_across_restarts() {
    let s = Scenario::new();
    s.stale_pid_policy("", "every = \"1h\"", &["a"]);
    let (code, first) = s.doctor_json(&["run"]);
    assert_eq!(first["plugins"].as_array().unwrap().len(), 1, "{first}");
    assert_eq!(code, 1);
    // A new process, a minute later in spirit: not due, nothing runs, but the
    // open finding is still reported and still sets the exit status.
    let (code, second) = s.doctor_json(&["run"]);
    assert!(second["plugins"].as_array().unwrap().is_empty(), "{second}");
    assert_eq!(code, 1, "monitoring still sees the open warning");
    assert_eq!(
        finding(&second, "pid-file-stop", "a:stale-pid-file").unwrap()["status"],
        "persisting"
    );
    assert_eq!(count(&s, "SELECT count(*) FROM plugin_runs"), 1);
    // Two hours later (test-only clock override) it is due again.
    let (_, third) = doctor_env(&s, &["run"], &[("DOCTOR_TEST_CLOCK_SKEW", "2h")]);
    assert_eq!(third["plugins"].as_array().unwrap().len(), 1, "{third}");
    assert_eq!(count(&s, "SELECT count(*) FROM plugin_runs"), 2);
}

#[test]
fn a_tick_reports_the_open_findings_of_plugins_that_were_not_due() {
    let s = Scenario::new();
    s.install_plugin(
        "hostile-shadow",
        &test_plugins().join("hostile_shadow.wasm"),
    );
    std::fs::write(s.path("a.pid"), "999999999\n").unwrap();
    let root = s.root().display().to_string();
    s.policy(&format!(
        "[plugins.pid-file-stop]\nevery = \"1h\"\ngrants.processes = true\ngrants.files = [\"{root}/*.pid\"]\nconfig = {{ targets = [{{ name = \"a\", pid_file = \"{root}/a.pid\", pattern = \"^never$\" }}] }}\n\n[plugins.hostile-shadow]\nevery = \"1s\"\n"
    ));
    s.doctor_json(&["run"]);
    // Later: only hostile-shadow is due; pid-file-stop's warning is still open.
    let (code, doc) = doctor_env(&s, &["run"], &[("DOCTOR_TEST_CLOCK_SKEW", "5s")]);
    let ran: Vec<&str> = doc["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(ran, ["hostile-shadow"]);
    assert_eq!(
        finding(&doc, "pid-file-stop", "a:stale-pid-file").unwrap()["status"],
        "persisting",
        "{doc}"
    );
    assert_eq!(code, 1);

    // Nothing due at all: the Prometheus file still carries every open finding.
    let prom = s.path("doctor.prom");
    let out = s.doctor(&[
        "run",
        "--format",
        "prometheus",
        "--output",
        prom.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains("doctor_findings{plugin=\"pid-file-stop\",severity=\"warning\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("doctor_findings{plugin=\"hostile-shadow\",severity=\"warning\"} 1"),
        "{text}"
    );
}

#[test]
fn run_applies_fixes_only_where_the_policy_says_auto() {
    let manual = Scenario::new();
    manual.stale_pid_policy("", "fix = \"manual\"", &["a"]);
    manual.doctor_json(&["run"]);
    assert!(
        manual.path("a.pid").exists(),
        "manual: the scheduled run only reports"
    );

    let auto = Scenario::new();
    auto.stale_pid_policy("", "fix = \"auto\"", &["a"]);
    let (code, doc) = auto.doctor_json(&["run"]);
    assert!(
        !auto.path("a.pid").exists(),
        "auto: the scheduled run fixes"
    );
    assert_eq!(
        finding(&doc, "pid-file-stop", "a:stale-pid-file").unwrap()["status"],
        "fixed"
    );
    assert_eq!(code, 0);
}

#[test]
fn the_flap_breaker_counts_across_processes_escalates_and_yields_only_to_the_flag() {
    let s = Scenario::new();
    s.stale_pid_policy("flap_max_fixes = 3\nflap_window = \"1h\"", "", &["flappy"]);
    for round in 1..=3 {
        std::fs::write(s.path("flappy.pid"), "999999999\n").unwrap();
        let (code, doc) = s.doctor_json(&["fix"]);
        assert_eq!(code, 0, "round {round}: {doc}");
        assert!(!s.path("flappy.pid").exists(), "round {round}: fixed");
    }
    // The fault comes back a fourth time: reported critical, not touched.
    std::fs::write(s.path("flappy.pid"), "999999999\n").unwrap();
    let (code, doc) = s.doctor_json(&["fix"]);
    let f = finding(&doc, "pid-file-stop", "flappy:stale-pid-file").unwrap();
    assert_eq!(f["severity"], "critical", "{f}");
    let message = f["message"].as_str().unwrap();
    assert!(
        message.contains("fixed or tried 3 times") && message.contains("reset-flap"),
        "says why and how to reset: {message}"
    );
    assert_eq!(f["actions"][0]["outcome"], "skipped");
    assert!(s.path("flappy.pid").exists(), "the breaker stopped the fix");
    assert_eq!(code, 2);

    // The explicit flag overrides it.
    let (_, doc) = s.doctor_json(&["fix", "--override-flap-breaker"]);
    assert_eq!(
        finding(&doc, "pid-file-stop", "flappy:stale-pid-file").unwrap()["actions"][0]["outcome"],
        "applied"
    );
    assert!(!s.path("flappy.pid").exists());

    // A reset closes the breaker for later runs.
    std::fs::write(s.path("flappy.pid"), "999999999\n").unwrap();
    let out = s.doctor(&[
        "journal",
        "reset-flap",
        "pid-file-stop",
        "flappy:stale-pid-file",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0);
    assert!(
        !s.path("flappy.pid").exists(),
        "fixed again after the reset"
    );
}

#[test]
fn the_rate_limit_holds_a_second_fix_back() {
    let s = Scenario::new();
    s.stale_pid_policy("fix_min_interval = \"1h\"", "", &["r"]);
    s.doctor_json(&["fix"]);
    std::fs::write(s.path("r.pid"), "999999999\n").unwrap();
    let (_, doc) = s.doctor_json(&["fix"]);
    let action = &finding(&doc, "pid-file-stop", "r:stale-pid-file").unwrap()["actions"][0];
    assert_eq!(action["outcome"], "skipped");
    assert!(
        action["detail"].as_str().unwrap().contains("rate limit"),
        "{action}"
    );
    assert!(s.path("r.pid").exists());
}

#[test]
fn the_action_budget_stops_a_run_and_records_the_rest_as_skipped() {
    let s = Scenario::new();
    s.stale_pid_policy("max_actions_per_run = 2", "", &["a", "b", "c"]);
    let (code, doc) = s.doctor_json(&["fix"]);
    let outcomes: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            finding(&doc, "pid-file-stop", &format!("{n}:stale-pid-file")).unwrap()["actions"][0]
                ["outcome"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| *o == "applied").count(),
        2,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "skipped").count(),
        1,
        "{outcomes:?}"
    );
    let remaining = ["a", "b", "c"]
        .iter()
        .filter(|n| s.path(&format!("{n}.pid")).exists())
        .count();
    assert_eq!(remaining, 1, "exactly the skipped one is left");
    assert_eq!(
        count(
            &s,
            "SELECT count(*) FROM actions WHERE outcome = 'skipped' AND detail LIKE '%budget%'"
        ),
        1
    );
    // First seen in this run and not fixed by it: persisting, not new.
    let statuses: Vec<&str> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            finding(&doc, "pid-file-stop", &format!("{n}:stale-pid-file")).unwrap()["status"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "fixed").count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "persisting").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(code, 2, "a finding that outlived its fix run is critical");
}

#[test]
fn a_fix_killed_mid_way_leaves_a_consistent_journal_and_the_next_run_says_so() {
    let s = Scenario::new();
    let stubborn = Proc::ignoring_term("kill9-target");
    let root = s.root().display().to_string();
    s.policy(&format!(
        r#"
[plugins.pid-file-stop]
grants.processes = true
grants.files = ["{root}/*.pid"]
grants.signal = {{ match = ["kill9-target"] }}
config = {{ targets = [{{ name = "t", pattern = "kill9-target", scope = {{ user = {uid} }}, grace_ms = 20000 }}] }}
"#,
        uid = nix::unistd::getuid().as_raw()
    ));
    let mut fix = Command::new(DOCTOR)
        .args(["fix", "--policy"])
        .arg(s.policy_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the run is recorded as running (it is now in its 20 s grace).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running = s.journal_path().exists()
            && rusqlite::Connection::open(s.journal_path())
                .and_then(|c| {
                    c.query_row(
                        "SELECT count(*) FROM runs WHERE status = 'running'",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .unwrap_or(0)
                == 1;
        if running {
            break;
        }
        assert!(Instant::now() < deadline, "the fix never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(fix.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    fix.wait().unwrap();

    let integrity: String = s
        .journal()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let killed_run: i64 = s
        .journal()
        .query_row("SELECT id FROM runs WHERE status = 'running'", [], |r| {
            r.get(0)
        })
        .unwrap();

    drop(stubborn);
    let (_, doc) = s.doctor_json(&["check"]);
    assert_eq!(
        doc["interrupted_runs"],
        serde_json::json!([killed_run]),
        "{doc}"
    );
    let status: String = s
        .journal()
        .query_row("SELECT status FROM runs WHERE id = ?1", [killed_run], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(status, "interrupted");
    let human = String::from_utf8_lossy(&s.doctor(&["journal"]).stdout).to_string();
    assert!(human.contains("interrupted"), "{human}");
}

#[test]
fn prometheus_output_is_well_formed_and_written_atomically() {
    let s = Scenario::new();
    s.stale_pid_policy("", "", &["p"]);
    let prom = s.path("doctor.prom");
    let out = s.doctor(&[
        "check",
        "--format",
        "prometheus",
        "--output",
        prom.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "the report went to the file");
    let text = std::fs::read_to_string(&prom).unwrap();
    let sample = regex::Regex::new(r#"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? -?[0-9.eE+-]+$"#).unwrap();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split_whitespace().next().unwrap().to_string());
        } else if !line.starts_with("# HELP ") {
            assert!(sample.is_match(line), "malformed metric line: {line:?}");
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(typed.contains(name), "{name} has no TYPE line before it");
        }
    }
    assert!(
        text.contains("doctor_findings{plugin=\"pid-file-stop\",severity=\"warning\"} 1"),
        "{text}"
    );
    assert!(text.contains("doctor_last_run_timestamp_seconds"));
    assert!(text.contains("doctor_plugin_up{plugin=\"pid-file-stop\"} 1"));
    let leftovers: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temp file left behind");
}

#[test]
fn nagios_output_is_one_status_line_with_perfdata() {
    let s = Scenario::new();
    s.stale_pid_policy("", "", &["n"]);
    let out = s.doctor(&["check", "--format", "nagios"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("DOCTOR WARNING - 0 critical, 1 warning"),
        "{text}"
    );
    assert!(text.contains("| critical=0;;;0 warning=1;;;0"), "{text}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn journal_show_filters_and_prune() {
    let s = Scenario::new();
    s.stale_pid_policy("", "", &["j"]);
    s.doctor_json(&["check"]);
    s.doctor_json(&["fix"]);

    let show = s.doctor(&["journal", "show", "2", "--format", "json"]);
    let detail: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(detail["run"]["mode"], "fix");
    assert_eq!(detail["actions"][0]["kind"], "remove-file");
    assert_eq!(detail["actions"][0]["outcome"], "applied");

    let list = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["journal", "--format", "json"];
        all.extend(args);
        serde_json::from_slice(&s.doctor(&all).stdout).unwrap()
    };
    assert_eq!(
        list(&["--status", "resolved"])["findings"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        list(&[])["findings"].as_array().unwrap().len(),
        0,
        "nothing open"
    );
    assert_eq!(
        list(&["--status", "resolved", "--plugin", "other"])["findings"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        list(&["--status", "resolved", "--severity", "critical"])["findings"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        list(&["--since", "1h"])["runs"].as_array().unwrap().len(),
        2
    );
    assert!(!s.doctor(&["journal", "show", "99"]).status.success());

    // Pruning "older than 1h" an hour from now removes both runs.
    let out = Command::new(DOCTOR)
        .args(["journal", "prune", "--older-than", "1h", "--policy"])
        .arg(s.policy_path())
        .env("DOCTOR_TEST_CLOCK_SKEW", "2h")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(&s, "SELECT count(*) FROM runs"), 0);
    assert_eq!(
        count(&s, "SELECT count(*) FROM actions"),
        0,
        "actions go with their runs"
    );
    assert_eq!(
        count(&s, "SELECT count(*) FROM findings"),
        0,
        "resolved findings go too"
    );
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let s = Scenario::new();
    s.stale_pid_policy("", "every = \"2m\"", &["u"]);
    let units = s.path("units");
    let prom = s.path("textfile/doctor.prom");
    let out = s.doctor(&[
        "systemd",
        "install",
        "--dir",
        units.to_str().unwrap(),
        "--prometheus",
        prom.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let service = std::fs::read_to_string(units.join("doctor.service")).unwrap();
    let timer = std::fs::read_to_string(units.join("doctor.timer")).unwrap();
    assert!(
        service.contains(&format!(
            "ExecStart={DOCTOR} run --policy {}",
            s.policy_path().display()
        )),
        "{service}"
    );
    assert!(
        service.contains(&format!("--format prometheus --output {}", prom.display())),
        "{service}"
    );
    assert!(
        service.contains(&format!("-{}", s.path("textfile").display())),
        "the textfile dir is writable: {service}"
    );
    assert!(service.contains("ProtectSystem=strict"));
    assert!(
        service.contains(&format!("-{}", s.root().display()))
            || service.contains(&format!("-{}", s.dir.path().display())),
        "the journal dir is writable: {service}"
    );
    assert!(
        timer.contains("OnUnitActiveSec=120s") && timer.contains("RandomizedDelaySec="),
        "{timer}"
    );

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed; unit syntax not verified");
        return;
    }
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(units.join("doctor.service"))
        .arg(units.join("doctor.timer"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr).to_string();
    // Without a running systemd (containers, CI) verify still parses the
    // units; only complaints about our own files count.
    let ours: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("doctor.service") || l.contains("doctor.timer"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify: {said}");
}

#[test]
fn the_daemon_reloads_on_sighup_keeps_a_good_policy_and_stops_cleanly_on_sigterm() {
    let s = Scenario::new();
    s.install_plugin("hostile-loop", &test_plugins().join("hostile_loop.wasm"));
    // Its panic message goes to WASI stderr: validating it on SIGHUP must
    // not happen on the daemon's async thread (that once killed the daemon).
    s.install_plugin("hostile-panic", &test_plugins().join("hostile_panic.wasm"));
    let write_policy = |target: &str| {
        let root = s.root().display().to_string();
        std::fs::write(s.path(&format!("{target}.pid")), "999999999\n").unwrap();
        s.policy_with(
            "plugin_timeout = \"1s\"",
            &format!(
                "[plugins.pid-file-stop]\nevery = \"1s\"\ngrants.processes = true\ngrants.files = [\"{root}/*.pid\"]\nconfig = {{ targets = [{{ name = \"{target}\", pid_file = \"{root}/{target}.pid\", pattern = \"^never$\" }}] }}\n\n[plugins.hostile-loop]\nevery = \"1s\"\n\n[plugins.hostile-panic]\nevery = \"1s\"\n"
            ),
        );
    };
    write_policy("first");
    let log = s.path("daemon.log");
    let mut daemon = Command::new(DOCTOR)
        .args(["daemon", "--policy"])
        .arg(s.policy_path())
        .env("DOCTOR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(daemon.id() as i32);
    let wait_for = |what: &dyn Fn() -> bool, why: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !what() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {why}; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let seen = |key: &str| {
        s.journal_path().exists()
            && rusqlite::Connection::open(s.journal_path())
                .and_then(|c| {
                    c.query_row(
                        "SELECT count(*) FROM observations WHERE key = ?1",
                        [key],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .unwrap_or(0)
                > 0
    };
    wait_for(&|| seen("first:stale-pid-file"), "the first scheduled run");

    // An invalid policy: kept out, and said so.
    std::fs::write(s.policy_path(), "[doctor]\nthis is not toml\n").unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(
        &|| {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("keeping the previous one")
        },
        "the refusal",
    );
    assert!(daemon.try_wait().unwrap().is_none(), "still running");

    // A valid policy: taken.
    write_policy("second");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(
        &|| seen("second:stale-pid-file"),
        "a run under the reloaded policy",
    );

    // SIGTERM, most likely during a run (the looping plugin takes 1 s of each).
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        count(&s, "SELECT count(*) FROM runs WHERE status != 'complete'"),
        0,
        "no run left half-done"
    );
    let integrity: String = s
        .journal()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

#[test]
fn a_fix_that_keeps_failing_enters_the_flap_breaker_instead_of_being_retried_every_run() {
    let s = Scenario::new();
    s.install_plugin(
        "hostile-attacks",
        &test_plugins().join("hostile_attacks.wasm"),
    );
    // A write to a database that is not there fails every time.
    let missing = s.root().join("gone.db");
    s.policy_with(
        "flap_max_fixes = 2\nflap_window = \"1h\"",
        &format!(
            "[databases.app]\npath = {missing:?}\n\n[plugins.hostile-attacks]\ngrants.sqlite_write = [\"app\"]\nconfig = {{ attack = \"sql-exec\", db = \"app\", sql = \"DELETE FROM t\" }}\n",
            missing = missing.display().to_string()
        ),
    );
    for round in 0..2 {
        let (code, doc) = s.doctor_json(&["fix"]);
        assert_eq!(code, 2, "round {round}: {doc}");
        let action = &finding(&doc, "hostile-attacks", "sql-exec").unwrap()["actions"][0];
        assert_eq!(action["outcome"], "failed", "round {round}: {doc}");
    }
    let (_, doc) = s.doctor_json(&["fix"]);
    let f = finding(&doc, "hostile-attacks", "sql-exec").unwrap();
    assert_eq!(f["severity"], "critical", "escalated: {doc}");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("fixed or tried 2 times"),
        "{doc}"
    );
    assert_eq!(
        f["actions"][0]["outcome"], "skipped",
        "not tried a third time: {doc}"
    );
}

/// The plugin author guide's filter, exactly as it shows it: on top of
/// `warn`, one plugin's debug lines and not another's. Two plugins that log
/// at debug: hostile-attacks' `log` (a line at debug, info and warn) and
/// port-9403-freer, which says at debug that containers are not available
/// (no `containers` grant) when it looks at a port's holder.
#[test]
fn doctor_log_selects_one_plugins_debug_lines_as_the_author_guide_shows() {
    let s = Scenario::new();
    s.install_plugin(
        "hostile-attacks",
        &test_plugins().join("hostile_attacks.wasm"),
    );
    let port = free_port();
    let _holder = Proc::spawn(&[DOCTOR, "demo-listen", &port.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.policy(&format!(
        "[plugins.hostile-attacks]\nconfig = {{ attack = \"log\", text = \"of hostile-attacks\" }}\n\n[plugins.port-9403-freer]\ngrants.sockets = true\ngrants.processes = true\nconfig = {{ ports = [{{ port = {port}, expect = {{ command = \"never-this\" }} }}] }}\n"
    ));
    let stderr = |filter: &str| {
        let out = Command::new(DOCTOR)
            .args(["check", "--policy"])
            .arg(s.policy_path())
            .env("DOCTOR_LOG", filter)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let (attacks_debug, freer_debug) =
        ("DEBUG LINE of hostile-attacks", "containers not available");

    // Both plugins do log at debug, and the plain `warn` shows neither.
    let all = stderr("warn,plugin=debug");
    assert!(
        all.contains(attacks_debug) && all.contains(freer_debug),
        "{all}"
    );
    let warn = stderr("warn");
    assert!(
        warn.contains("WARN LINE of hostile-attacks")
            && !warn.contains(attacks_debug)
            && !warn.contains(freer_debug),
        "{warn}"
    );

    let one = stderr("warn,plugin[{plugin=hostile-attacks}]=debug");
    assert!(
        one.contains(attacks_debug) && one.contains("INFO LINE of hostile-attacks"),
        "{one}"
    );
    assert!(!one.contains(freer_debug), "{one}");

    let other = stderr("warn,plugin[{plugin=port-9403-freer}]=debug");
    assert!(other.contains(freer_debug), "{other}");
    assert!(
        !other.contains(attacks_debug) && !other.contains("INFO LINE of hostile-attacks"),
        "{other}"
    );
    assert!(
        other.contains("WARN LINE of hostile-attacks"),
        "warn still shows for every plugin: {other}"
    );
}
