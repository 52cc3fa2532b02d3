//! Issue 23 (incident 003): root Podman and a user's rootless Podman side by
//! side, both named in one policy. The rootless engine runs as the
//! unprivileged `nobody` user with its own storage, runroot,
//! XDG_RUNTIME_DIR and socket in a temp dir (`support/rootless_podman.rs`);
//! in the policy it is `alice`, as in the policy reference. Where the
//! machine does not allow user namespaces to that user, each test prints
//! `not run: WHY` and returns.

#[path = "support/rootless_podman.rs"]
mod rootless_podman;
mod support;

use rootless_podman::RootlessPodman;
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;
use support::engines::TestEngine;
use support::podman::{ping, Podman};
use support::*;

const CAPS: &str = "container-caps-checker";
const IMAGE: &str = "localhost/busybox:1.36";
/// Only alice's engine has it: a finding `image-tag-latest` is hers.
const LATEST: &str = "localhost/busybox:latest";

fn engine_section(name: &str, engine: &dyn TestEngine) -> String {
    format!(
        "[container_engines.{name}]\nsocket = {:?}\ntimeout = \"60s\"\n",
        engine.socket().display().to_string()
    )
}

fn caps_policy(engines: &str, grants: &str) -> String {
    format!("{engines}\n[plugins.container-caps-checker]\ngrants.containers = true\n{grants}")
}

/// The checker's unresolved finding keys.
fn caps_keys(doc: &Value) -> BTreeSet<String> {
    findings(doc, CAPS)
        .iter()
        .filter(|f| f["status"] != "resolved")
        .filter_map(|f| f["key"].as_str())
        .map(String::from)
        .collect()
}

fn has(keys: &BTreeSet<String>, key: &str) -> bool {
    keys.contains(key)
}

fn tag() -> String {
    format!("{}", std::process::id())
}

#[test]
fn root_and_rootless_podman_are_both_watched_and_a_grant_keeps_to_one() {
    let test = "root and rootless podman";
    let Some(alice) = RootlessPodman::or_say_why(test) else {
        return;
    };
    let root = Podman::start();
    root.import_busybox(IMAGE);
    alice.import_busybox(IMAGE);
    assert_success_cli(&alice, &["tag", IMAGE, LATEST]);
    let t = tag();
    let (twin, only_root, only_alice) = (
        format!("twin-{t}"),
        format!("only-root-{t}"),
        format!("only-alice-{t}"),
    );
    // Each has one fault, `--restart no`; alice's twin also runs `:latest`.
    for (engine, name, image) in [
        (&root as &dyn TestEngine, &twin, IMAGE),
        (&root, &only_root, IMAGE),
        (&alice, &twin, LATEST),
        (&alice, &only_alice, IMAGE),
    ] {
        engine.create(&[
            "--name",
            name,
            "--restart",
            "no",
            "--memory",
            "64m",
            image,
            "sleep",
            "300",
        ]);
    }
    let engines = format!(
        "{}\n{}",
        engine_section("root", &root),
        engine_section("alice", &alice)
    );

    let s = Scenario::new();
    s.policy_with("plugin_timeout = \"60s\"", &caps_policy(&engines, ""));
    let (_, doc) = s.doctor_json(&["check"]);
    assert_eq!(plugin_summary(&doc, CAPS)["outcome"], "ok", "{doc:#}");
    let keys = caps_keys(&doc);
    for key in [
        format!("container:root/{twin}:restart-policy"),
        format!("container:alice/{twin}:restart-policy"),
        format!("container:alice/{twin}:image-tag-latest"),
        format!("container:{only_root}:restart-policy"),
        format!("container:{only_alice}:restart-policy"),
    ] {
        assert!(has(&keys, &key), "{key} is reported: {keys:?}");
    }
    assert!(
        !has(&keys, &format!("container:root/{twin}:image-tag-latest")),
        "each engine's twin keeps its own findings: {keys:?}"
    );
    assert!(
        !keys
            .iter()
            .any(|k| k.starts_with(&format!("container:{twin}:"))),
        "a name taken in both engines is never shown unqualified: {keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.starts_with("engine:")),
        "both engines answered: {keys:?}"
    );

    // Granted alice's engine only: her containers, and no name is shared
    // any more, so her twin is plain `twin-PID` (the `:latest` one).
    s.policy_with(
        "plugin_timeout = \"60s\"",
        &caps_policy(&engines, "grants.engines = [\"alice\"]\n"),
    );
    let (_, doc) = s.doctor_json(&["check"]);
    assert_eq!(plugin_summary(&doc, CAPS)["outcome"], "ok", "{doc:#}");
    let keys = caps_keys(&doc);
    for key in [
        format!("container:{twin}:restart-policy"),
        format!("container:{twin}:image-tag-latest"),
        format!("container:{only_alice}:restart-policy"),
    ] {
        assert!(has(&keys, &key), "{key} is reported: {keys:?}");
    }
    assert!(
        !keys
            .iter()
            .any(|k| k.contains(&only_root) || k.contains("root/") || k.contains("alice/")),
        "no root container reaches an alice-only plugin: {keys:?}"
    );
}

#[test]
fn doctor_as_root_uses_the_rootless_engine_through_its_socket_only() {
    let test = "rootless socket only";
    let Some(alice) = RootlessPodman::or_say_why(test) else {
        return;
    };
    alice.import_busybox(IMAGE);
    let name = format!("probe-{}", tag());
    let id = alice.create(&[
        "--name",
        &name,
        "--restart",
        "no",
        "--memory",
        "64m",
        IMAGE,
        "sleep",
        "300",
    ]);
    let before = alice.processes();
    let uid = alice.uid();
    assert!(
        before.iter().any(|p| p.pid == alice.service_pid()),
        "the service is among the engine's processes: {before:?}"
    );
    assert!(
        before.iter().all(|p| p.uids.iter().all(|u| *u == uid)),
        "the engine runs as uid {uid} only: {before:?}"
    );
    assert_eq!(
        alice.state_not_owned_by_user(),
        Vec::<std::path::PathBuf>::new(),
        "the engine's state is the user's before doctor runs"
    );

    // Any podman (or way to become another user) doctor might run records
    // itself and fails.
    let s = Scenario::new();
    let fake_bin = s.path("fake-bin");
    let ran = s.path("ran");
    std::fs::create_dir(&fake_bin).expect("fake-bin");
    for tool in [
        "podman", "docker", "setpriv", "su", "runuser", "sudo", "nsenter", "unshare", "conmon",
        "runc", "crun",
    ] {
        let script = fake_bin.join(tool);
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> {:?}\nexit 1\n",
                ran.display().to_string()
            ),
        )
        .expect("write fake tool");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("chmod fake tool");
    }
    s.policy_with(
        "plugin_timeout = \"60s\"",
        &caps_policy(&engine_section("alice", &alice), ""),
    );
    let path = format!(
        "{}:{}",
        fake_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(DOCTOR)
        .args(["check", "--format", "json", "--policy"])
        .arg(s.policy_path())
        .env("DOCTOR_LOG", "warn")
        .env("PATH", path)
        .output()
        .expect("run doctor");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor check did not print JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(plugin_summary(&doc, CAPS)["outcome"], "ok", "{doc:#}");
    let keys = caps_keys(&doc);
    assert!(
        has(&keys, &format!("container:{name}:restart-policy")),
        "doctor read the rootless engine: {keys:?}"
    );

    assert!(
        !ran.exists(),
        "doctor ran no podman CLI and became no user: {}",
        std::fs::read_to_string(&ran).unwrap_or_default()
    );
    let after = alice.processes();
    assert!(
        after.iter().all(|p| p.uids.iter().all(|u| *u == uid)),
        "the engine's processes are still uid {uid}'s only: {after:?}"
    );
    let pids = |list: &[rootless_podman::EngineProcess]| -> BTreeSet<i32> {
        list.iter().map(|p| p.pid).collect()
    };
    assert_eq!(
        pids(&after),
        pids(&before),
        "doctor neither started nor ended an engine process: before {before:?}, after {after:?}"
    );
    assert_eq!(
        alice.state_not_owned_by_user(),
        Vec::<std::path::PathBuf>::new(),
        "no root process wrote the rootless engine's state"
    );
    assert!(ping(alice.socket()), "the same service still answers");
    assert_eq!(
        alice.inspect_format(&id, "{{.State.Status}}"),
        "created",
        "a check changes nothing"
    );
}

fn assert_success_cli(engine: &dyn TestEngine, args: &[&str]) {
    let out = engine.cli(args);
    support::podman::assert_success(&format!("{} {}", engine.name(), args.join(" ")), &out);
}
