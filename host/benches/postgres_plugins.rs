//! `cargo bench -p doctor --bench postgres_plugins`: sqlite-chunk-reset on a
//! 1,000,000-row chunk table in PostgreSQL (a private server, as the tests
//! start it; index on status) with 10,000 orphaned `running` rows of seven
//! dead workers. Times the real `doctor check` and `doctor fix` (one finding
//! per dead worker, set-based compare-and-swaps, the journal, the re-check)
//! interleaved with `psql` doing the same reads (the running rows and the
//! status counts) and one set-based UPDATE. Iterations: `PG_BENCH_ITERS`
//! (default 5); medians and ratios printed with the issue's targets.

#[path = "../../tests/support/postgres.rs"]
mod postgres;

use postgres::{Db, Postgres, PSQL};
#[path = "common/runs.rs"]
mod runs;
use runs::{run_doctor, timed};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROWS: i64 = 1_000_000;
const ORPHANS: i64 = 10_000;
const DOCTOR: &str = env!("CARGO_BIN_EXE_doctor");
/// What the plugin reads, as an operator would type it into psql.
const READS: &str =
    "SELECT id, assigned_worker, started_at FROM chunks WHERE status = 'running' ORDER BY id; \
                     SELECT status, count(*) FROM chunks GROUP BY status;";
const SET_BASED: &str = "UPDATE chunks SET status = 'pending', assigned_worker = NULL, started_at = NULL WHERE status = 'running'";

fn main() {
    let iterations: usize = std::env::var("PG_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let pg = match Postgres::shared() {
        Ok(pg) => pg,
        Err(why) => {
            println!("no PostgreSQL here: {why}");
            return;
        }
    };
    let db = pg.database();
    let started = Instant::now();
    build(&db);
    println!(
        "built {ROWS} rows ({ORPHANS} orphaned running) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let dir = tempfile::Builder::new()
        .prefix("doctor-bench-pg")
        .tempdir()
        .expect("temp dir");
    let policy = write_policy(dir.path(), &db);
    // Warm the compiled-component cache, as any host after its first run.
    run_doctor(DOCTOR, &policy, "check", 2);

    let (mut check, mut fix, mut reads, mut update) = (vec![], vec![], vec![], vec![]);
    for _ in 0..iterations {
        reset(&db, dir.path());
        check.push(timed(|| run_doctor(DOCTOR, &policy, "check", 2)));
        reads.push(timed(|| psql(&db, READS)));
        fix.push(timed(|| run_doctor(DOCTOR, &policy, "fix", 0)));
        verify_fixed(&db);
        reset(&db, dir.path());
        update.push(timed(|| psql(&db, SET_BASED)));
        verify_fixed(&db);
    }
    let (check, reads, fix, update) = (median(check), median(reads), median(fix), median(update));
    println!("\n{iterations} interleaved round(s), median wall time:");
    println!("| work | doctor | psql | ratio | target |");
    println!("|---|---|---|---|---|");
    row(
        "1M rows in PostgreSQL: `check` vs the same reads in `psql`",
        check,
        reads,
        "≤ 1.2×",
    );
    row(
        "1M rows, 10,000 orphaned: `fix` vs one set-based UPDATE in `psql`",
        fix,
        update,
        "≤ 1.3×",
    );
}

fn row(what: &str, doctor: Duration, floor: Duration, target: &str) {
    println!(
        "| {what} | {} | {} | {:.2}× | {target} |",
        shown(doctor),
        shown(floor),
        doctor.as_secs_f64() / floor.as_secs_f64()
    );
}

fn build(db: &Db) {
    let step = ROWS / ORPHANS;
    db.psql(&format!(
        "CREATE TABLE chunks (id bigint PRIMARY KEY, status text NOT NULL, assigned_worker text,
             started_at bigint, payload text);
         INSERT INTO chunks
           SELECT i,
                  CASE WHEN i % {step} = 0 THEN 'running' WHEN i <= {ROWS} * 6 / 10 THEN 'complete' ELSE 'pending' END,
                  CASE WHEN i % {step} = 0 THEN '4000000' || (i % 7) END,
                  CASE WHEN i % {step} = 0 THEN 1700000000 + i END,
                  'chunk-' || i
           FROM generate_series(1, {ROWS}) i;
         CREATE INDEX chunks_by_status ON chunks (status);
         GRANT SELECT, UPDATE ON chunks TO doctor;"
    ));
    // psql -c runs its statements as one transaction; VACUUM may not.
    db.psql("VACUUM ANALYZE chunks");
}

/// The orphans back to `running` and an empty journal.
fn reset(db: &Db, dir: &Path) {
    let step = ROWS / ORPHANS;
    db.psql(&format!(
        "UPDATE chunks SET status = 'running', assigned_worker = '4000000' || (id % 7), started_at = 1700000000 + id
         WHERE id % {step} = 0"
    ));
    db.psql("VACUUM ANALYZE chunks");
    for f in ["journal.db", "journal.db-wal", "journal.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
}

fn write_policy(dir: &Path, db: &Db) -> PathBuf {
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"[doctor]
journal = {journal:?}
cache_dir = {cache:?}

[databases.bench]
url = "{url}"

[plugins.sqlite-chunk-reset]
grants.processes = true
grants.sqlite = ["bench"]
grants.sqlite_write = ["bench"]
config = {{ db = "bench", table = "chunks", worker_column = "assigned_worker" }}
"#,
            journal = dir.join("journal.db").display().to_string(),
            cache = dir.join("cache").display().to_string(),
            url = db.keywords("doctor"),
        ),
    )
    .expect("policy");
    policy
}

/// `sql` through psql as the doctor role, output discarded.
fn psql(db: &Db, sql: &str) {
    let st = Command::new(PSQL)
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(&db.socket_dir)
        .args(["-p", &db.port.to_string()])
        .args(["-U", "doctor", "-d", &db.name, "-c", sql])
        .stdout(Stdio::null())
        .status()
        .expect("run psql");
    assert!(st.success());
}

fn verify_fixed(db: &Db) {
    assert_eq!(
        db.psql("SELECT count(*) FROM chunks WHERE status = 'running'"),
        "0",
        "every orphan reset"
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn shown(d: Duration) -> String {
    if d.as_secs_f64() >= 1.0 {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    }
}
