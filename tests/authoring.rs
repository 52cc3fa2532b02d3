//! A plugin author's loop, for real: `doctor plugins new` writes a project,
//! it builds and its own tests pass, and `doctor check` with the policy
//! snippet it wrote finds what its example checks — in Rust and in Python
//! (componentize-py). The shipped Python plugin (plugins/python/stale-lock)
//! is built, unit-tested in plain Python, and finds and fixes a stale lock.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Build artifacts go where the rest of the build's go.
fn target_dir(sub: &str) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let base = if base.is_absolute() {
        base
    } else {
        repo().join(base)
    };
    base.join(sub)
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd
}

fn componentize_py() -> Command {
    let found = Command::new("componentize-py")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "componentize-py is needed for the Python plugin tests: pip install componentize-py==0.25.1 (the test script installs it)");
    Command::new("componentize-py")
}

/// The scaffold's policy snippet, aimed at this scenario's lock file.
fn install_snippet(s: &Scenario, project: &Path, name: &str, lock: &Path) {
    let snippet = std::fs::read_to_string(project.join("policy.toml")).unwrap();
    let body = snippet
        .split_once(&format!("[plugins.{name}]"))
        .map(|(_, rest)| format!("[plugins.{name}]{rest}"))
        .expect("the snippet configures the plugin")
        .replace("/run/app.lock", lock.to_str().unwrap());
    s.policy(&body);
}

#[test]
fn a_scaffolded_rust_plugin_builds_passes_its_tests_and_finds_what_it_checks() {
    let s = Scenario::new();
    let project = s.path("stale-locks");
    run(
        Command::new(DOCTOR)
            .args(["plugins", "new", "stale-locks", "--dir"])
            .arg(&project),
        "doctor plugins new",
    );
    let tested = run(
        cargo()
            .arg("test")
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", target_dir("plugins-host")),
        "cargo test in the scaffold",
    );
    assert!(tested.contains("2 passed"), "{tested}");
    run(
        cargo()
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", target_dir("plugins")),
        "cargo build of the scaffold",
    );
    s.install_plugin(
        "stale-locks",
        &target_dir("plugins").join("wasm32-wasip2/release/stale_locks.wasm"),
    );
    let lock = s.root().join("app.lock");
    std::fs::write(&lock, "999999999\n").unwrap();
    install_snippet(&s, &project, "stale-locks", &lock);

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 1, "{doc}");
    let f = finding(&doc, "stale-locks", "stale-lock")
        .expect("the scaffold's example finds the stale lock");
    assert!(f["message"].as_str().unwrap().contains("999999999"), "{f}");
    let (_, doc) = s.doctor_json(&["fix"]);
    assert_eq!(
        finding(&doc, "stale-locks", "stale-lock").unwrap()["status"],
        "fixed",
        "{doc}"
    );
    assert!(!lock.exists());
}

#[test]
fn the_python_plugin_is_built_unit_tested_and_finds_and_fixes_a_stale_lock() {
    let plugin = repo().join("plugins/python/stale-lock");
    let tested = run(
        Command::new("python3")
            .args(["-m", "unittest", "-v"])
            .current_dir(&plugin)
            .env("PYTHONPATH", repo().join("plugins/python")),
        "the Python plugin's own tests",
    );
    assert!(tested.contains("OK"), "{tested}");

    let s = Scenario::new();
    let wasm = s.path("stale-lock.wasm");
    run(
        componentize_py()
            .arg("-d")
            .arg(repo().join("wit/0.2.0"))
            .args(["-w", "plugin", "componentize", "-p"])
            .arg(repo().join("plugins/python"))
            .arg("-p")
            .arg(&plugin)
            .args(["app", "-o"])
            .arg(&wasm),
        "componentize-py",
    );
    s.install_plugin("stale-lock", &wasm);
    let root = s.root().display().to_string();
    std::fs::write(s.path("a.lock"), "999999999\n").unwrap();
    let live = Proc::spawn(&["sleep", "300"]);
    std::fs::write(s.path("b.lock"), format!("{}\n", live.pid())).unwrap();
    s.policy_with(
        "plugin_timeout = \"60s\"",
        &format!(
            "[plugins.stale-lock]\ngrants.processes = true\ngrants.files = [\"{root}/*.lock\"]\ngrants.files_remove = [\"{root}/*.lock\"]\nconfig = {{ lock_files = [\"{root}/a.lock\", \"{root}/b.lock\", \"{root}/c.lock\"] }}\n"
        ),
    );
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 1, "{doc}");
    let keys: Vec<&str> = findings(&doc, "stale-lock")
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    // a.lock names no process; b.lock a live one; c.lock does not exist.
    assert_eq!(keys, [format!("stale-lock:{root}/a.lock")], "{doc}");
    let (_, doc) = s.doctor_json(&["fix", "--plugin", "stale-lock"]);
    assert_eq!(
        finding(&doc, "stale-lock", &format!("stale-lock:{root}/a.lock")).unwrap()["status"],
        "fixed",
        "{doc}"
    );
    assert!(!s.path("a.lock").exists());

    // A Python exception that is not a doctor error crosses as `invalid`, never a trap.
    s.policy_with("plugin_timeout = \"60s\"", &format!("[plugins.stale-lock]\ngrants.files = [\"{root}/*.lock\"]\nconfig = {{ lock_files = 7 }}\n"));
    let (code, doc) = s.doctor_json(&["check"]);
    let error = plugin_summary(&doc, "stale-lock")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("invalid: TypeError"), "{error}");
    assert_eq!(code, 3, "{doc}");
}

#[test]
fn a_scaffolded_python_plugin_passes_its_tests_and_builds() {
    let s = Scenario::new();
    let project = s.path("lock-watch");
    run(
        Command::new(DOCTOR)
            .args(["plugins", "new", "lock-watch", "--lang", "python", "--dir"])
            .arg(&project),
        "doctor plugins new --lang python",
    );
    let tested = run(
        Command::new("python3")
            .args(["-m", "unittest"])
            .current_dir(&project),
        "the scaffold's Python tests",
    );
    assert!(tested.contains("OK"), "{tested}");
    run(
        Command::new("sh")
            .arg(project.join("build.sh"))
            .env("PATH", std::env::var("PATH").unwrap_or_default()),
        "build.sh",
    );
    assert!(componentize_py().arg("--version").output().is_ok());
    s.install_plugin("lock-watch", &project.join("lock-watch.wasm"));
    let lock = s.root().join("app.lock");
    std::fs::write(&lock, "999999999\n").unwrap();
    let snippet = std::fs::read_to_string(project.join("policy.toml"))
        .unwrap()
        .replace("/run/app.lock", lock.to_str().unwrap());
    let body = snippet
        .split_once("[plugins.lock-watch]")
        .map(|(_, rest)| format!("[plugins.lock-watch]{rest}"))
        .unwrap();
    s.policy_with("plugin_timeout = \"60s\"", &body);
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 1, "{doc}");
    assert!(
        finding(
            &doc,
            "lock-watch",
            &format!("lock-watch:{}", lock.display())
        )
        .is_some(),
        "{doc}"
    );
}
