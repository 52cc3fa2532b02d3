//! `doctor demo`: the incidents built for real, found, fixed and re-checked
//! clean (except what it says it skipped), its processes stopped by TERM but
//! for the one that ignores it, and nothing left behind: no process it
//! started, no file in the temp dir it was given.

mod support;

use std::process::Command;
use support::DOCTOR;

fn demo(tmp: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(DOCTOR)
        .arg("demo")
        .args(args)
        .env("TMPDIR", tmp)
        .env("DOCTOR_LOG", "warn")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains('\u{1b}'), "no colour into a pipe");
    (
        out.status.code().unwrap_or(-1),
        format!("{text}\nstderr: {}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// The pids the demo says it started (`pid N` in its `built:` lines, except dead ones).
fn started_pids(text: &str) -> Vec<u32> {
    let pid = regex::Regex::new(r"(?:names pid|\(pid|held by pid) (\d+)").unwrap();
    text.lines()
        .filter(|l| l.starts_with("  built: "))
        .flat_map(|l| {
            pid.captures_iter(l)
                .map(|c| c[1].parse().unwrap())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Running (not a zombie) with a command line that is the demo's.
fn demo_process_runs(pid: u32) -> bool {
    let cmdline =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
            .replace('\0', " ");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("X");
    state != "Z" && (cmdline.starts_with("sleep 86400.") || cmdline.contains("demo-listen"))
}

/// The step's section of the demo's output.
fn section<'a>(text: &'a str, step: &str) -> &'a str {
    let start = text
        .find(step)
        .unwrap_or_else(|| panic!("no step {step}: {text}"));
    let rest = &text[start..];
    let end = rest[3..].find("\n== ").map(|i| i + 3).unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn the_demo_finds_fixes_rechecks_clean_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, text) = demo(tmp.path(), &[]);
    assert_eq!(code, 0, "{text}");

    let found = section(&text, "== 1. doctor check");
    for key in [
        // One finding per dead worker: the chunk worker's three chunks, each job's worker.
        ":orphaned [new]: 3 chunks (1, 2, 3) are running for worker",
        ":orphaned [new]: job 1 is running for worker",
        ":orphaned [new]: job 2 is running for worker",
        "job:3:stale",
        "web:running",
        "nightly-report:stale-pid-file",
        ":unexpected-owner",
    ] {
        assert!(found.contains(key), "check finds {key}: {found}");
    }
    assert!(
        section(&text, "== 2. doctor fix --dry-run").contains("→ planned"),
        "{text}"
    );
    let fixed = section(&text, "== 3. doctor fix");
    assert!(
        !fixed.contains("✗"),
        "nothing failed or was refused: {fixed}"
    );
    assert_eq!(fixed.matches("[fixed]").count(), 7, "{fixed}");
    let after = section(&text, "== 4. doctor check");
    assert!(
        after.contains("exit 0") && !after.contains("CRITICAL") && !after.contains("WARNING"),
        "clean after the fix: {after}"
    );
    let story = section(&text, "== 5. doctor journal");
    assert!(
        story.contains("run #3 fix") && story.contains("7 fixed"),
        "{story}"
    );
    assert!(
        text.contains("skipped: container-caps-checker — "),
        "it says what it skipped and why: {text}"
    );
    assert!(text.contains("all clean"), "{text}");

    let pids = started_pids(&text);
    assert_eq!(
        pids.len(),
        3,
        "two web instances and the port holder: {pids:?}: {text}"
    );
    // The web instances stop at TERM; only the port holder, which ignores
    // TERM itself, shows the KILL path.
    for web in &pids[..2] {
        assert!(
            fixed.contains(&format!("pid {web} exited after TERM")),
            "{web}: {fixed}"
        );
    }
    assert!(
        fixed.contains(&format!("pid {} ignored TERM for 2s; killed", pids[2])),
        "{fixed}"
    );
    assert_eq!(fixed.matches("ignored TERM").count(), 1, "{fixed}");
    assert!(
        pids.iter().all(|p| !demo_process_runs(*p)),
        "a demo process is still running: {pids:?}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "the demo left {left:?}");
}

#[test]
fn with_keep_the_dir_stays_to_explore_and_the_processes_still_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, text) = demo(tmp.path(), &["--keep"]);
    assert_eq!(code, 0, "{text}");
    let kept = regex::Regex::new(r"kept (\S+) \(its processes are stopped\)").unwrap();
    let dir =
        std::path::PathBuf::from(&kept.captures(&text).unwrap_or_else(|| panic!("{text}"))[1]);
    assert!(
        dir.starts_with(std::fs::canonicalize(tmp.path()).unwrap()),
        "{}",
        dir.display()
    );
    assert!(started_pids(&text).iter().all(|p| !demo_process_runs(*p)));
    let out = Command::new(DOCTOR)
        .args(["journal", "--format", "json", "--policy"])
        .arg(dir.join("policy.toml"))
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        doc["runs"].as_array().unwrap().len(),
        4,
        "check, dry run, fix, re-check"
    );
}
