//! `doctor journal` as a user who may only read root's journal (the
//! operator guide, "Reading the journal"): a real other user (`nobody`,
//! through setpriv), a real WAL journal written by a real run.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use support::{Scenario, DOCTOR};

const NOBODY: &str = "65534";

/// `doctor journal --journal J --format json` as uid/gid 65534; None when
/// this machine cannot run it (not root, no setpriv, a private temp dir).
fn as_nobody(journal: &Path) -> Option<Output> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: cannot switch to another user; skipped");
        return None;
    }
    for dir in journal.ancestors().skip(1) {
        let mode = std::fs::metadata(dir).ok()?.permissions().mode();
        if mode & 0o001 == 0 {
            eprintln!("{} is not searchable by others; skipped", dir.display());
            return None;
        }
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"])
        .arg(DOCTOR);
    cmd.args(["journal", "--format", "json", "--journal"])
        .arg(journal)
        .env("HOME", "/nonexistent")
        .env("DOCTOR_LOG", "warn");
    match cmd.output() {
        Ok(out) => Some(out),
        Err(e) => {
            eprintln!("setpriv (util-linux) cannot run: {e}; skipped");
            None
        }
    }
}

fn readable_by_others(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn scenario_with_a_run() -> Scenario {
    let s = Scenario::new();
    s.stale_pid_policy("", "", &["r"]);
    let (code, _) = s.doctor_json(&["check"]);
    assert_eq!(code, 1);
    readable_by_others(s.dir.path(), 0o755);
    readable_by_others(&s.journal_path(), 0o644);
    s
}

/// The names and sizes of the scenario's journal files.
fn journal_files(s: &Scenario) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().map(|m| m.len()).unwrap_or(0),
            )
        })
        .filter(|(name, _)| name.starts_with("journal.db"))
        .collect();
    files.sort();
    files
}

#[test]
fn another_user_lists_roots_journal_when_no_run_has_it_open() {
    let s = scenario_with_a_run();
    // Runs keep the WAL beside the journal; readable to others here.
    for file in ["journal.db-wal", "journal.db-shm"] {
        if s.path(file).exists() {
            readable_by_others(&s.path(file), 0o644);
        }
    }
    let before = journal_files(&s);
    let Some(out) = as_nobody(&s.journal_path()) else {
        return;
    };
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["runs"].as_array().unwrap().len(), 1);
    assert_eq!(doc["findings"][0]["key"], "r:stale-pid-file");
    assert_eq!(journal_files(&s), before, "the reader wrote nothing");
}

#[test]
fn another_user_lists_it_while_a_run_has_it_open_if_the_shm_is_readable() {
    let s = scenario_with_a_run();
    // A writer holding the journal open, as a run in progress does.
    let writer = rusqlite::Connection::open(s.journal_path()).unwrap();
    writer.pragma_update(None, "journal_mode", "WAL").unwrap();
    let _: i64 = writer
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    for file in ["journal.db-wal", "journal.db-shm"] {
        readable_by_others(&s.path(file), 0o644);
    }
    let Some(out) = as_nobody(&s.journal_path()) else {
        return;
    };
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["runs"].as_array().unwrap().len(), 1);

    // The same, with the run's -shm private to its owner: a clear refusal.
    readable_by_others(&s.path("journal.db-shm"), 0o600);
    let out = as_nobody(&s.journal_path()).unwrap();
    assert_eq!(out.status.code(), Some(3));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("read it as the journal's owner"), "{said}");
    drop(writer);
}
