//! The 1M-row chunk table both database benchmarks measure: an index on
//! `status`, `orphans` rows `running` for workers that are gone.

use rusqlite::Connection;
use std::path::Path;

pub fn build_chunk_table(path: &Path, rows: i64, orphans: i64) {
    let _ = std::fs::remove_file(path);
    let c = Connection::open(path).expect("open");
    c.execute_batch(&format!(
        "PRAGMA journal_mode = DELETE;
         CREATE TABLE chunks (id INTEGER PRIMARY KEY, status TEXT NOT NULL, assigned_worker TEXT, started_at INTEGER, payload TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO chunks (id, status, assigned_worker, started_at, payload)
           SELECT i,
                  CASE WHEN i % {step} = 0 THEN 'running' WHEN i <= {rows} * 6 / 10 THEN 'complete' ELSE 'pending' END,
                  CASE WHEN i % {step} = 0 THEN '4000000' || (i % 7) END,
                  CASE WHEN i % {step} = 0 THEN 1700000000 + i END,
                  'chunk-' || i
           FROM n;
         CREATE INDEX chunks_by_status ON chunks (status);",
        step = rows / orphans
    ))
    .expect("build table");
}
