//! The plugin's own rules; how inspect documents are read is tested in
//! doctor_sdk::inspect.

use super::*;
use serde_json::json;

fn config(should_run: &[&str]) -> Config {
    Config {
        names: vec!["*".into()],
        include_stopped: true,
        volume_caps: vec![],
        require_restart_policy: true,
        require_memory_limit: true,
        forbid_latest_tag: true,
        writable_paths: vec![],
        max_restart_count: 5,
        start_stopped: true,
        should_run: should_run.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn should_run_needs_a_declaration_or_a_container_that_ran_before() {
    let never = json!({"Status": "created", "StartedAt": "0001-01-01T00:00:00Z", "ExitCode": 0});
    let ran = json!({"Status": "exited", "StartedAt": "2026-11-30T05:00:00Z", "ExitCode": 137});
    let by_user = json!({"Status": "exited", "StartedAt": "2026-11-30T05:00:00Z", "ExitCode": 0, "StoppedByUser": true});
    assert!(
        should_run(&config(&[]), "web", &never, "always").is_none(),
        "existence is not intent"
    );
    assert!(should_run(&config(&["web*"]), "web", &never, "no")
        .unwrap()
        .contains("should_run"));
    assert!(should_run(&config(&[]), "web", &ran, "unless-stopped")
        .unwrap()
        .contains("ran before"));
    assert!(should_run(&config(&[]), "web", &ran, "on-failure").is_some());
    assert!(should_run(&config(&[]), "web", &ran, "no").is_none());
    assert!(
        should_run(&config(&[]), "web", &by_user, "always").is_none(),
        "stopped by its operator"
    );
}

#[test]
fn a_start_the_engine_says_failed_is_not_proposed_again() {
    let doc = json!({"State": {"Status": "exited", "StartedAt": "0001-01-01T00:00:00Z", "ExitCode": 127, "Error": "exec: \"/bin/x\": no such file"}});
    let s = Container {
        id: "abc",
        name: "web",
        doc: &doc,
    };
    let out = state_findings(&config(&["web"]), &s, &doc, "always");
    let f = out
        .iter()
        .find(|f| f.key() == "container:web:not-running")
        .unwrap();
    assert_eq!(f.action_count(), 0);
    assert!(f.message().contains("/bin/x"), "{}", f.message());
}
