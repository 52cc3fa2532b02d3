//! Every released WIT contract stays loadable: plugins built against
//! `doctor:plugin@0.1.0` and `@0.2.0` (tests/hostile/contract-v0-1 and -2,
//! raw wit-bindgen, no SDK) run beside the built-ins, which speak the
//! current contract (0.3.0).

mod support;

use std::process::Command;
use support::*;

#[test]
fn a_plugin_built_against_0_1_0_still_loads_reads_and_reports() {
    let s = Scenario::new();
    s.install_plugin("contract-v0-1", &test_plugins().join("contract_v0_1.wasm"));
    let root = s.root().display().to_string();
    std::fs::write(s.path("note.txt"), "hello from the old contract\n").unwrap();
    std::fs::write(s.path("stale.pid"), "999999999\n").unwrap();
    s.policy(&format!(
        r#"
[plugins.contract-v0-1]
grants.processes = true
grants.files = ["{root}/note.txt"]
config = {{ path = "{root}/note.txt" }}

[plugins.pid-file-stop]
grants.processes = true
grants.files = ["{root}/*.pid"]
config = {{ targets = [{{ name = "w", pid_file = "{root}/stale.pid", pattern = "^never$" }}] }}
"#
    ));
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 1, "{doc}");
    let seen = finding(&doc, "contract-v0-1", "seen").expect("the old plugin reports");
    let message = seen["message"].as_str().unwrap();
    assert!(
        message.starts_with("OLD CONTRACT SAW ")
            && message.ends_with("READ \"hello from the old contract\""),
        "{message}"
    );
    assert!(
        finding(&doc, "pid-file-stop", "w:stale-pid-file").is_some(),
        "the current contract's plugin beside it: {doc}"
    );

    // Its grants hold as for any plugin: a file outside them is denied.
    let text = std::fs::read_to_string(s.policy_path()).unwrap().replace(
        &format!("path = \"{root}/note.txt\""),
        "path = \"/etc/hostname\"",
    );
    std::fs::write(s.policy_path(), text).unwrap();
    let (_, doc) = s.doctor_json(&["check"]);
    let error = plugin_summary(&doc, "contract-v0-1")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("denied") && error.contains("grants.files"),
        "{error}"
    );
}

#[test]
fn a_plugin_built_against_0_2_0_loads_and_its_container_stop_keeps_the_engines_grace() {
    let s = Scenario::new();
    s.install_plugin("contract-v0-2", &test_plugins().join("contract_v0_2.wasm"));
    let root = s.root().display().to_string();
    std::fs::write(s.path("note.txt"), "hello from 0.2.0\n").unwrap();
    s.policy(&format!(
        r#"
[plugins.contract-v0-2]
grants.processes = true
grants.files = ["{root}/note.txt"]
config = {{ path = "{root}/note.txt" }}
"#
    ));
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 1, "{doc}");
    let seen = finding(&doc, "contract-v0-2", "seen").expect("the 0.2.0 plugin reports");
    assert!(
        seen["message"]
            .as_str()
            .unwrap()
            .ends_with("READ \"hello from 0.2.0\""),
        "{seen}"
    );
    let action = &seen["actions"][0];
    assert_eq!(action["kind"], "container-stop", "{seen}");
    assert_eq!(action["outcome"], "planned", "{seen}");
    // The journal keeps the action as the host will run it: no grace of its own.
    let params: String = s
        .journal()
        .query_row(
            "SELECT params FROM actions WHERE plugin = 'contract-v0-2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        params.contains("\"id\":\"web\"") && params.contains("\"grace_ms\":null"),
        "{params}"
    );
}

#[test]
fn inspect_names_the_contract_each_plugin_was_built_against() {
    let v0_1 = test_plugins().join("contract_v0_1.wasm");
    let v0_2 = test_plugins().join("contract_v0_2.wasm");
    for (plugin, contract) in [
        (v0_1.to_str().unwrap(), "doctor:plugin@0.1.0"),
        (v0_2.to_str().unwrap(), "doctor:plugin@0.2.0"),
        ("pid-file-stop", "doctor:plugin@0.3.0"),
    ] {
        let out = Command::new(DOCTOR)
            .args(["plugins", "inspect", plugin, "--format", "json"])
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{plugin}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(doc["wit"], serde_json::json!([contract]), "{plugin}: {doc}");
        assert_eq!(doc["sha256"].as_str().map(str::len), Some(64), "{doc}");
        // Its describe() ran in a confined worker, which says how.
        let worker = doc["worker"].as_str().unwrap_or_default();
        for step in ["RLIMIT_DATA", "no_new_privs", "seccomp filter"] {
            assert!(worker.contains(step), "{plugin}: {worker}");
        }
    }
}
