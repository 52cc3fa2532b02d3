//! `fix --dry-run` shows the plan `fix` will meet: what a grant or guard
//! forbids is `refused` with the same reason `fix` then gives, what needs a
//! refused action is `skipped`, the rest `planned` (and then applied).

mod support;

use support::*;

/// (finding key, action kind, outcome, detail) in report order.
fn plan(doc: &serde_json::Value) -> Vec<(String, String, String, String)> {
    let mut rows = Vec::new();
    for f in findings(doc, "pid-file-stop") {
        for a in f["actions"].as_array().unwrap() {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            rows.push((
                text(&f["key"]),
                text(&a["kind"]),
                text(&a["outcome"]),
                text(&a["detail"]),
            ));
        }
    }
    rows.sort();
    rows
}

#[test]
fn the_dry_run_plan_is_what_fix_does_refusals_included() {
    let s = Scenario::new();
    let mut worker = Proc::spawn(&["sleep", "309"]);
    std::fs::write(s.path("w.pid"), format!("{}\n", worker.pid())).unwrap();
    for stale in ["old.pid", "kept.pid"] {
        std::fs::write(s.path(stale), "999999999\n").unwrap();
    }
    let root = s.root().display().to_string();
    // The signal grant does not cover the worker, and only old*.pid may be removed.
    s.policy(&format!(
        r#"
[plugins.pid-file-stop]
grants.processes = true
grants.files = ["{root}/*.pid"]
grants.files_remove = ["{root}/old*.pid", "{root}/w.pid"]
grants.signal = {{ match = ["^never$"] }}

[[plugins.pid-file-stop.config.targets]]
name = "w"
pid_file = "{root}/w.pid"
pattern = "^sleep 309$"

[[plugins.pid-file-stop.config.targets]]
name = "old"
pid_file = "{root}/old.pid"
pattern = "^never$"

[[plugins.pid-file-stop.config.targets]]
name = "kept"
pid_file = "{root}/kept.pid"
pattern = "^never$"
"#
    ));

    let (dry_code, dry) = s.doctor_json(&["fix", "--dry-run"]);
    let planned = plan(&dry);
    assert!(
        worker.running() && s.path("old.pid").exists() && s.path("kept.pid").exists(),
        "a dry run touches nothing"
    );
    let outcomes: Vec<(&str, &str, &str)> = planned
        .iter()
        .map(|(k, kind, o, _)| (k.as_str(), kind.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("kept:stale-pid-file", "remove-file", "refused"),
            ("old:stale-pid-file", "remove-file", "planned"),
            ("w:running", "remove-file", "skipped"),
            ("w:running", "stop-process", "refused"),
        ],
        "{dry}"
    );
    assert!(
        planned[0].3.contains("files_remove"),
        "the reason names the grant: {}",
        planned[0].3
    );
    assert!(
        planned[3].3.contains("grants.signal"),
        "the reason names the grant: {}",
        planned[3].3
    );
    assert_eq!(
        dry_code, 2,
        "a plan with refusals is critical, as the fix will be"
    );

    let (fix_code, fixed) = s.doctor_json(&["fix"]);
    let done = plan(&fixed);
    assert_eq!(done.len(), planned.len(), "{fixed}");
    for (before, after) in planned.iter().zip(&done) {
        assert_eq!((&before.0, &before.1), (&after.0, &after.1));
        match before.2.as_str() {
            "planned" => assert_eq!(after.2, "applied", "{after:?}"),
            _ => assert_eq!(
                (&before.2, &before.3),
                (&after.2, &after.3),
                "dry run and fix agree, reason included"
            ),
        }
    }
    assert_eq!(fix_code, dry_code);
    assert!(worker.running(), "the refused stop did not happen");
    assert!(!s.path("old.pid").exists() && s.path("kept.pid").exists());
}
