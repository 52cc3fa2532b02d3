//! `cargo bench -p doctor --bench sqlite_plugins`: the database plugins on a
//! 1,000,000-row chunk table (index on status) with 10,000 orphaned `running`
//! rows of seven dead workers. Times the real `doctor check` and `doctor fix`
//! (sqlite-chunk-reset: one finding per dead worker, its rows reset by
//! set-based compare-and-swaps, within the default action budget; the
//! journal; the re-check)
//! side by side with the sqlite3 command line doing the bare SELECT and
//! UPDATE. Iterations: `SQLITE_BENCH_ITERS` (default 3); median reported.

#[path = "common/chunks.rs"]
mod chunks;
#[path = "common/runs.rs"]
mod runs;
use runs::{run_doctor, timed};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROWS: i64 = 1_000_000;
const ORPHANS: i64 = 10_000;
const DOCTOR: &str = env!("CARGO_BIN_EXE_doctor");

fn main() {
    let iterations: usize = std::env::var("SQLITE_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let dir = tempfile::Builder::new()
        .prefix("doctor-bench-sqlite")
        .tempdir()
        .expect("temp dir");
    let base = dir.path().join("base.db");
    let work = dir.path().join("work.db");
    let started = Instant::now();
    build(&base);
    println!(
        "built {ROWS} rows ({ORPHANS} orphaned running) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let policy = write_policy(dir.path(), &work);

    // Warm the compiled-component cache, as any host after its first run.
    reset(&base, &work, dir.path());
    run_doctor(DOCTOR, &policy, "check", 2);

    let mut check = Vec::new();
    let mut fix = Vec::new();
    let mut cli_select = Vec::new();
    let mut cli_update = Vec::new();
    let mut cli_cas = Vec::new();
    let cas_script = dir.path().join("cas.sql");
    std::fs::write(&cas_script, cas_sql()).expect("cas script");
    for _ in 0..iterations {
        reset(&base, &work, dir.path());
        check.push(timed(|| run_doctor(DOCTOR, &policy, "check", 2)));
        reset(&base, &work, dir.path());
        fix.push(timed(|| run_doctor(DOCTOR, &policy, "fix", 0)));
        verify_fixed(&work);

        reset(&base, &work, dir.path());
        cli_select.push(timed(|| {
            sqlite3(
                &work,
                "SELECT id, assigned_worker, started_at FROM chunks WHERE status = 'running';",
            )
        }));
        cli_update.push(timed(|| {
            sqlite3(&work, "UPDATE chunks SET status = 'pending', assigned_worker = NULL, started_at = NULL WHERE status = 'running';")
        }));
        verify_fixed(&work);
        reset(&base, &work, dir.path());
        cli_cas.push(timed(|| sqlite3_file(&work, &cas_script)));
        verify_fixed(&work);
    }
    println!("\n{iterations} iteration(s), median wall time:");
    println!("| what | time |");
    println!("|---|---|");
    println!(
        "| `doctor check` (sqlite-chunk-reset: one finding per dead worker, 7, state) | {} |",
        median(check)
    );
    println!(
        "| `sqlite3` bare `SELECT ... WHERE status = 'running'` | {} |",
        median(cli_select)
    );
    println!("| `doctor fix` (set-based compare-and-swap resets, one per dead worker, default budget; journal, re-check) | {} |", median(fix));
    println!(
        "| `sqlite3` one bare `UPDATE ... WHERE status = 'running'` | {} |",
        median(cli_update)
    );
    println!(
        "| `sqlite3` 10,000 single-row compare-and-swap UPDATEs, one transaction each | {} |",
        median(cli_cas)
    );
}

fn build(path: &Path) {
    chunks::build_chunk_table(path, ROWS, ORPHANS);
}

/// One UPDATE per orphan, each its own transaction: what the doctor's writes amount to.
fn cas_sql() -> String {
    let step = ROWS / ORPHANS;
    let mut s = String::new();
    for i in (step..=ROWS).step_by(step as usize) {
        s.push_str(&format!(
            "UPDATE chunks SET status = 'pending', assigned_worker = NULL, started_at = NULL WHERE id = {i} AND status = 'running' AND assigned_worker IS '4000000{}';\n",
            i % 7
        ));
    }
    s
}

fn write_policy(dir: &Path, db: &Path) -> PathBuf {
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"[doctor]
journal = {journal:?}
cache_dir = {cache:?}

[databases.bench]
path = {db:?}

[plugins.sqlite-chunk-reset]
grants.processes = true
grants.sqlite = ["bench"]
grants.sqlite_write = ["bench"]
config = {{ db = "bench", table = "chunks", worker_column = "assigned_worker" }}
"#,
            journal = dir.join("journal.db").display().to_string(),
            cache = dir.join("cache").display().to_string(),
            db = db.display().to_string(),
        ),
    )
    .expect("policy");
    policy
}

/// A fresh copy of the table and an empty journal.
fn reset(base: &Path, work: &Path, dir: &Path) {
    std::fs::copy(base, work).expect("copy db");
    for f in ["journal.db", "journal.db-wal", "journal.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
}

fn sqlite3(db: &Path, sql: &str) {
    let st = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .stdout(Stdio::null())
        .status()
        .expect("run sqlite3 (apt-get install sqlite3)");
    assert!(st.success());
}

fn sqlite3_file(db: &Path, script: &Path) {
    let st = Command::new("sqlite3")
        .arg(db)
        .stdin(std::fs::File::open(script).expect("script"))
        .stdout(Stdio::null())
        .status()
        .expect("run sqlite3");
    assert!(st.success());
}

fn verify_fixed(db: &Path) {
    let c = Connection::open(db).expect("open");
    let running: i64 = c
        .query_row(
            "SELECT count(*) FROM chunks WHERE status = 'running'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    let cleared: i64 = c
        .query_row("SELECT count(*) FROM chunks WHERE status = 'pending' AND assigned_worker IS NULL AND started_at IS NULL", [], |r| r.get(0))
        .expect("count");
    assert_eq!(running, 0, "every orphan reset");
    assert_eq!(
        cleared,
        ROWS - ROWS * 6 / 10 - (ROWS - ROWS * 6 / 10) / (ROWS / ORPHANS) + ORPHANS
    );
}

fn median(mut v: Vec<Duration>) -> String {
    v.sort_unstable();
    let d = v[v.len() / 2];
    if d.as_secs_f64() >= 1.0 {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    }
}
