//! The journal's schema, versioned with `PRAGMA user_version`. Each migration
//! runs once, in order, inside a transaction.

use anyhow::{bail, Context as _};
use rusqlite::Connection;

/// Migration N takes the schema from version N to N + 1.
const MIGRATIONS: &[&str] = &[
    // v1: runs, plugin runs, findings (current state), observations (per run),
    // actions, plugin key/value state.
    r#"
    CREATE TABLE runs (
        id             INTEGER PRIMARY KEY,
        started_at     INTEGER NOT NULL,
        finished_at    INTEGER,
        mode           TEXT NOT NULL,
        status         TEXT NOT NULL CHECK (status IN ('running', 'complete', 'interrupted')),
        exit_code      INTEGER,
        pid            INTEGER NOT NULL,
        hostname       TEXT NOT NULL,
        doctor_version TEXT NOT NULL,
        policy         TEXT NOT NULL
    );
    CREATE TABLE plugin_runs (
        id          INTEGER PRIMARY KEY,
        run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        plugin      TEXT NOT NULL,
        version     TEXT NOT NULL,
        sha256      TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        outcome     TEXT NOT NULL CHECK (outcome IN ('ok', 'error')),
        error       TEXT,
        cache       TEXT NOT NULL,
        log         TEXT NOT NULL
    );
    CREATE INDEX plugin_runs_by_plugin ON plugin_runs (plugin, started_at);
    CREATE TABLE findings (
        plugin      TEXT NOT NULL,
        key         TEXT NOT NULL,
        severity    TEXT NOT NULL,
        subject     TEXT NOT NULL,
        message     TEXT NOT NULL,
        evidence    TEXT NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('new', 'persisting', 'resolved')),
        first_seen  INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL,
        resolved_at INTEGER,
        last_run_id INTEGER,
        PRIMARY KEY (plugin, key)
    );
    CREATE TABLE observations (
        id            INTEGER PRIMARY KEY,
        run_id        INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        plugin_run_id INTEGER NOT NULL REFERENCES plugin_runs(id) ON DELETE CASCADE,
        plugin        TEXT NOT NULL,
        key           TEXT NOT NULL,
        severity      TEXT NOT NULL,
        subject       TEXT NOT NULL,
        message       TEXT NOT NULL,
        evidence      TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('new', 'persisting', 'resolved', 'fixed'))
    );
    CREATE INDEX observations_by_run ON observations (run_id);
    CREATE TABLE actions (
        id            INTEGER PRIMARY KEY,
        run_id        INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        plugin_run_id INTEGER NOT NULL REFERENCES plugin_runs(id) ON DELETE CASCADE,
        plugin        TEXT NOT NULL,
        finding_key   TEXT NOT NULL,
        seq           INTEGER NOT NULL,
        kind          TEXT NOT NULL,
        params        TEXT NOT NULL,
        description   TEXT NOT NULL,
        outcome       TEXT NOT NULL CHECK (outcome IN ('planned', 'applied', 'failed', 'skipped', 'refused')),
        detail        TEXT NOT NULL,
        before        TEXT,
        after         TEXT,
        duration_ms   INTEGER NOT NULL
    );
    CREATE INDEX actions_by_run ON actions (run_id);
    CREATE TABLE plugin_state (
        plugin     TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (plugin, key)
    );
    "#,
    // v2: operator resets of the flap breaker (`doctor journal reset-flap`).
    r#"
    CREATE TABLE flap_resets (
        plugin   TEXT NOT NULL,
        key      TEXT NOT NULL,
        reset_at INTEGER NOT NULL,
        PRIMARY KEY (plugin, key)
    );
    CREATE INDEX actions_by_finding ON actions (plugin, finding_key, outcome);
    "#,
    // v3: write-ahead action intents (`journal/intents.rs`): committed before
    // an action touches anything, completed with its outcome after.
    r#"
    CREATE TABLE intents (
        id          INTEGER PRIMARY KEY,
        run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        plugin      TEXT NOT NULL,
        finding_key TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        params      TEXT NOT NULL,
        description TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        outcome     TEXT CHECK (outcome IN ('planned', 'applied', 'failed', 'skipped', 'refused', 'interrupted')),
        detail      TEXT,
        finished_at INTEGER
    );
    CREATE INDEX intents_open ON intents (outcome) WHERE outcome IS NULL;
    "#,
    // v4: convergence after a crash. `target`: the identity of a removal's
    // file when intended (`dev:ino`), so a later run tells the same file
    // from one that took its place;
    // `open`: an interrupted intent that is still the operator's matter
    // ('resume': proven not to have taken effect, redone by the next fixing
    // run; 'unknown': may have taken effect, never redone, shown until
    // cleared); `resumes`: the interrupted intent this one carries out.
    r#"
    ALTER TABLE intents ADD COLUMN target TEXT;
    ALTER TABLE intents ADD COLUMN open TEXT CHECK (open IN ('resume', 'unknown'));
    ALTER TABLE intents ADD COLUMN resumes INTEGER REFERENCES intents(id);
    CREATE INDEX intents_open_matters ON intents (open) WHERE open IS NOT NULL;
    "#,
    // v5: what every run and tick asks stays a seek as the journal ages:
    // the runs a dead process left running, the runs of the flap window,
    // the open findings (`journal::tests::the_hot_queries_seek_never_scan`);
    // and every foreign key's child column, so that deleting a run (`doctor
    // journal prune`) finds what it cascades to instead of walking each
    // table once per row it deletes (`tests::every_foreign_key_is_indexed`).
    r#"
    CREATE INDEX runs_running ON runs (status) WHERE status = 'running';
    CREATE INDEX runs_by_start ON runs (started_at);
    CREATE INDEX findings_open ON findings (plugin, key) WHERE status != 'resolved';
    CREATE INDEX plugin_runs_by_run ON plugin_runs (run_id);
    CREATE INDEX observations_by_plugin_run ON observations (plugin_run_id);
    CREATE INDEX actions_by_plugin_run ON actions (plugin_run_id);
    CREATE INDEX intents_by_run ON intents (run_id);
    CREATE INDEX intents_resumed ON intents (resumes) WHERE resumes IS NOT NULL;
    "#,
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        bail!("schema version {current} is newer than this doctor understands ({SCHEMA_VERSION}); upgrade doctor");
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let next = version + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {next}; COMMIT;"
        ))
        .with_context(|| format!("migrating the journal schema to version {next}"))?;
    }
    Ok(())
}

/// How SQLite would run `sql` (its parameters all 0): one line per step,
/// `SEARCH … USING INDEX …` or `SCAN …`.
#[cfg(test)]
pub(super) fn query_plan(conn: &Connection, sql: &str) -> Vec<String> {
    let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let zeros = vec![0; plan.parameter_count()];
    plan.query_map(rusqlite::params_from_iter(zeros), |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deleting a row looks up the rows that refer to it, for each foreign
    /// key: without an index on the child column that is a walk of the
    /// child table per deleted row, and pruning a year of runs never ends.
    #[test]
    fn every_foreign_key_is_indexed() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut checked = 0;
        for table in &tables {
            let children: Vec<String> = conn
                .prepare("SELECT \"from\" FROM pragma_foreign_key_list(?1)")
                .unwrap()
                .query_map([table], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for column in children {
                let lookup = format!("SELECT 1 FROM {table} WHERE {column} = ?1");
                let plan = query_plan(&conn, &lookup);
                assert!(
                    plan.iter().all(|step| step.starts_with("SEARCH")),
                    "{table}.{column} has no index: {lookup} is {plan:?}"
                );
                checked += 1;
            }
        }
        // runs ← plugin_runs, observations (2), actions (2), intents (2).
        assert_eq!(checked, 7, "the foreign keys of {tables:?}");
    }
}
