//! Hostile plugins, built by the test suite, run in one run beside a
//! well-behaved one: each is contained and recorded, and the well-behaved
//! plugin's findings are still reported.

mod support;

use support::*;

const HOSTILE: &[&str] = &[
    "hostile-loop",
    "hostile-alloc",
    "hostile-shadow",
    "hostile-ungranted",
    "hostile-panic",
    "hostile-huge",
];

fn scenario_with_hostiles() -> Scenario {
    let s = Scenario::new();
    let wasm = test_plugins();
    for name in HOSTILE {
        s.install_plugin(name, &wasm.join(format!("{}.wasm", name.replace('-', "_"))));
    }
    // A stale PID file gives the well-behaved plugin something to report.
    std::fs::write(s.path("stale.pid"), "999999999\n").unwrap();
    let root = s.root().display().to_string();
    let mut body = format!(
        r#"
[plugins.pid-file-stop]
grants.processes = true
grants.files = ["{root}/*.pid"]
config = {{ targets = [{{ name = "w", pid_file = "{root}/stale.pid", pattern = "^never-matches$" }}] }}
"#
    );
    for name in HOSTILE {
        body.push_str(&format!("\n[plugins.{name}]\n"));
    }
    s.policy_with("plugin_timeout = \"2s\"\nplugin_memory = \"32MiB\"", &body);
    s
}

#[test]
fn every_hostile_plugin_is_contained_and_the_others_still_report() {
    let s = scenario_with_hostiles();
    let started = std::time::Instant::now();
    let (code, doc) = s.doctor_json(&["check"]);
    let elapsed = started.elapsed();

    // The well-behaved plugin's finding is there.
    let stale =
        finding(&doc, "pid-file-stop", "w:stale-pid-file").expect("pid-file-stop still reports");
    assert_eq!(stale["severity"], "warning");
    assert_eq!(plugin_summary(&doc, "pid-file-stop")["outcome"], "ok");

    let error = |name: &str| {
        plugin_summary(&doc, name)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        error("hostile-loop").contains("deadline"),
        "loop: {}",
        error("hostile-loop")
    );
    assert!(
        error("hostile-alloc").contains("memory limit"),
        "alloc: {}",
        error("hostile-alloc")
    );
    assert!(
        error("hostile-panic").contains("panics on purpose"),
        "panic: {}",
        error("hostile-panic")
    );
    assert!(
        error("hostile-huge").contains("more than the limit"),
        "huge: {}",
        error("hostile-huge")
    );
    for name in [
        "hostile-loop",
        "hostile-alloc",
        "hostile-panic",
        "hostile-huge",
    ] {
        assert_eq!(plugin_summary(&doc, name)["outcome"], "error", "{name}");
    }
    // The deadline is 2 s: the loop did not hold the run hostage.
    assert!(
        elapsed < std::time::Duration::from_secs(30),
        "run took {elapsed:?}"
    );

    // WASI has no preopens: reading /etc/shadow fails even though we are root.
    let shadow =
        finding(&doc, "hostile-shadow", "shadow").expect("shadow plugin reports its attempt");
    let said = shadow["message"].as_str().unwrap();
    assert!(said.starts_with("refused"), "read /etc/shadow: {said}");

    // Capability calls without a grant come back as `denied` values naming the grant.
    let processes = finding(&doc, "hostile-ungranted", "processes").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        processes.contains("Denied") && processes.contains("grants.processes"),
        "{processes}"
    );
    let files = finding(&doc, "hostile-ungranted", "files").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        files.contains("Denied") && files.contains("did not request capability `files`"),
        "{files}"
    );

    // A plugin that could not run makes the run UNKNOWN (3), not OK.
    assert_eq!(code, 3, "{doc}");

    // The journal records each failure with its reason.
    let conn = s.journal();
    for name in [
        "hostile-loop",
        "hostile-alloc",
        "hostile-panic",
        "hostile-huge",
    ] {
        let (outcome, err): (String, String) = conn
            .query_row(
                "SELECT outcome, error FROM plugin_runs WHERE plugin = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(outcome, "error", "{name}");
        assert!(!err.is_empty(), "{name}");
    }
    let ok: String = conn
        .query_row(
            "SELECT outcome FROM plugin_runs WHERE plugin = 'pid-file-stop'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn a_granted_capability_is_not_denied() {
    let s = Scenario::new();
    let wasm = test_plugins();
    s.install_plugin("hostile-ungranted", &wasm.join("hostile_ungranted.wasm"));
    s.policy("[plugins.hostile-ungranted]\ngrants.processes = true\n");
    let (_, doc) = s.doctor_json(&["check"]);
    let listed = finding(&doc, "hostile-ungranted", "processes").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        listed.starts_with("LISTED "),
        "with the grant, processes.all() answers: {listed}"
    );
}
