//! The command line's conventions: every flag documented, a man page and
//! completions that render, `--version`'s fields, global options before or
//! after the command, colour on request only, Nagios lines on usage errors,
//! JSON from every journal command.

mod support;

use std::process::Command;
use support::{Scenario, DOCTOR};

fn doctor(args: &[&str]) -> std::process::Output {
    Command::new(DOCTOR)
        .args(args)
        .env("DOCTOR_LOG", "warn")
        .output()
        .expect("run doctor")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every command path: ["check"], ["journal", "prune"], ...
fn command_paths(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        let mut path = prefix.to_vec();
        path.push(sub.get_name().to_string());
        out.push(path.clone());
        command_paths(sub, &path, out);
    }
}

#[test]
fn every_flag_and_argument_has_help_text() {
    let mut cmd = doctor::cli::command();
    cmd.build();
    let mut missing = Vec::new();
    fn walk(cmd: &clap::Command, name: &str, missing: &mut Vec<String>) {
        if cmd.get_about().is_none() {
            missing.push(format!("{name} (the command)"));
        }
        for arg in cmd
            .get_arguments()
            .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        {
            if arg.get_help().is_none() {
                missing.push(format!("{name} {}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{name} {}", sub.get_name()), missing);
        }
    }
    walk(&cmd, "doctor", &mut missing);
    assert!(missing.is_empty(), "without help text: {missing:?}");
}

#[test]
fn the_man_page_renders_without_warnings_and_covers_every_command() {
    let page = doctor(&["manpage"]);
    assert!(page.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doctor.1");
    std::fs::write(&file, &page.stdout).unwrap();
    let rendered = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww"])
        .arg(&file)
        .env("MANWIDTH", "100")
        .output()
        .expect("groff (Debian: groff-base)");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    assert!(
        rendered.stderr.is_empty(),
        "groff warnings: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    // Plain text: no overstrike bold, so names can be searched.
    let text = Command::new("groff")
        .args(["-man", "-Tascii", "-P-cbou"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut paths = Vec::new();
    command_paths(&doctor::cli::command(), &[], &mut paths);
    assert!(paths.len() >= 15, "{paths:?}");
    for path in paths {
        let name = format!("doctor {}", path.join(" "));
        assert!(text.contains(&name), "the man page lacks {name}");
    }
    for section in [
        "EXIT STATUS",
        "FILES",
        "/etc/doctor/policy.toml",
        "/var/lib/doctor/journal.db",
        "--log-level",
        "--color",
    ] {
        assert!(text.contains(section), "the man page lacks {section}");
    }
}

#[test]
fn completions_are_printed_for_every_shell_and_bash_parses_its_own() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = doctor(&["completions", shell]);
        assert!(
            out.status.success() && out.stdout.len() > 1000,
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout(&out).contains("journal"),
            "{shell} completes the commands"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doctor.bash");
    std::fs::write(&file, doctor(&["completions", "bash"]).stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(!doctor(&["completions", "tcsh"]).status.success());
}

#[test]
fn version_names_the_commit_wasmtime_and_the_wit_packages() {
    let out = doctor(&["--version"]);
    assert!(out.status.success());
    let text = stdout(&out);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name}: in {text}"))
            .to_string()
    };
    assert!(
        text.starts_with(&format!("doctor {}\n", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let commit = field("commit");
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );
    assert!(field("wasmtime").starts_with("48."), "{text}");
    // Every released contract in wit/ is linked, and --version names each.
    for version in ["0.1.0", "0.2.0"] {
        let wit = std::fs::read_to_string(format!(
            "{}/../wit/{version}/plugin.wit",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let package = wit
            .lines()
            .find_map(|l| l.strip_prefix("package "))
            .unwrap()
            .trim_end_matches(';');
        assert!(field("plugin WIT").contains(package), "{text}");
    }
}

#[test]
fn global_options_work_before_and_after_the_command() {
    let s = Scenario::new();
    s.stale_pid_policy("", "", &["g"]);
    let policy = s.policy_path();
    let policy = policy.to_str().unwrap();
    let journal = s.path("other.db");
    let journal = journal.to_str().unwrap();
    let before = doctor(&[
        "--policy",
        policy,
        "--journal",
        journal,
        "--format",
        "json",
        "--log-level",
        "error",
        "--color",
        "never",
        "check",
    ]);
    let after = doctor(&[
        "check",
        "--policy",
        policy,
        "--journal",
        journal,
        "--format",
        "json",
        "--log-level",
        "error",
        "--color",
        "never",
    ]);
    for out in [&before, &after] {
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(doc["findings"][0]["key"], "g:stale-pid-file");
    }
    assert!(
        std::path::Path::new(journal).exists(),
        "--journal was honoured"
    );
    let listed = doctor(&[
        "--journal",
        journal,
        "--format",
        "json",
        "journal",
        "--policy",
        policy,
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(doc["runs"].as_array().unwrap().len(), 2);
    let bad = doctor(&["--format", "prometheus", "journal", "--policy", policy]);
    assert_eq!(bad.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("only check, fix and run"));
}

#[test]
fn colour_only_on_request_and_every_report_ends_with_its_duration() {
    let s = Scenario::new();
    s.stale_pid_policy("", "", &["c"]);
    let run = |color: Option<&str>, no_color: bool| {
        let mut cmd = Command::new(DOCTOR);
        cmd.args(["check", "--policy"]).arg(s.policy_path());
        if let Some(c) = color {
            cmd.args(["--color", c]);
        }
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        stdout(&cmd.output().unwrap())
    };
    let always = run(Some("always"), false);
    assert!(always.contains("\u{1b}["), "{always:?}");
    assert!(always.contains("WARNING"));
    let duration_line = regex::Regex::new(r"^finished in \d+\.\d+ s$").unwrap();
    for plain in [
        run(Some("never"), false),
        run(None, false),
        run(None, true),
        run(Some("auto"), true),
    ] {
        assert!(!plain.contains('\u{1b}'), "{plain:?}");
        let last = plain.lines().last().unwrap();
        assert!(duration_line.is_match(last), "{plain}");
    }
}

#[test]
fn a_nagios_usage_error_prints_one_unknown_line() {
    for args in [
        &["check", "--format", "nagios", "--no-such-flag"][..],
        &["--format=nagios", "check", "--plugin"],
        &[
            "check",
            "--format",
            "nagios",
            "--policy",
            "/nonexistent/policy.toml",
        ],
    ] {
        let out = doctor(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let text = stdout(&out);
        assert_eq!(text.lines().count(), 1, "{args:?}: {text:?}");
        assert!(text.starts_with("DOCTOR UNKNOWN - "), "{args:?}: {text}");
    }
    // Without nagios, a usage error keeps stdout empty.
    let out = doctor(&["check", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
}

#[test]
fn journal_prune_and_reset_flap_answer_in_json() {
    let s = Scenario::new();
    s.stale_pid_policy("", "", &["r"]);
    s.doctor_json(&["check"]);
    let (code, pruned) = s.doctor_json(&["journal", "prune", "--older-than", "30d"]);
    assert_eq!(code, 0);
    assert_eq!(pruned["pruned_runs"], 0);
    assert_eq!(pruned["older_than"], "30d");
    let (code, reset) =
        s.doctor_json(&["journal", "reset-flap", "pid-file-stop", "r:stale-pid-file"]);
    assert_eq!(code, 0);
    assert_eq!(reset["reset_flap"]["key"], "r:stale-pid-file");
}
