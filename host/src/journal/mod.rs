//! The journal: a SQLite file (WAL) of every run, plugin result, finding and
//! action, plus per-plugin state. One run at a time holds its lock; one
//! transaction per plugin result keeps it consistent if a run is killed.

pub mod intents;
mod lock;
pub mod query;
mod schema;
mod status;

pub use intents::{IntentLog, InterruptedAction};
pub use lock::{FixLock, JournalLock};
pub use status::{FindingStatus, Observed};

use crate::findings::Finding;
use crate::plan::ActionResult;
use anyhow::Context as _;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {message}")]
    Unusable { path: String, message: String },
    #[error("{0}")]
    Busy(String),
}

/// WAL pages past which a run's journal, as it closes, checkpoints the WAL
/// and truncates it (see [`Journal::truncate_a_long_wal`]).
pub const WAL_TRUNCATE_PAGES: u64 = 400;

// The statements every run or tick makes. Each is a seek on an index
// (schema v5), never a scan of the history (`the_hot_queries_seek_never_scan`).
const LAST_RUN_SQL: &str = "SELECT MAX(started_at) FROM plugin_runs WHERE plugin = ?1";
const MARK_INTERRUPTED_SQL: &str =
    "UPDATE runs SET status = 'interrupted' WHERE status = 'running' RETURNING id";
// The runs `prune` deletes (`r`; `?1` the cut-off).
const PRUNED_RUN: &str = "r.started_at < ?1 AND r.status != 'running'
     AND r.id NOT IN (SELECT run_id FROM intents WHERE open IN ('resume', 'unknown'))";
// Every plugin run's: `status != 'resolved'` (the same as new or
// persisting) is what lets SQLite use `findings_open` and skip the resolved
// findings, one per chunk ever reset, say.
const OPEN_FINDINGS_OF_PLUGIN_SQL: &str = "SELECT key, severity, subject, message, evidence
     FROM findings WHERE plugin = ?1 AND status != 'resolved'";
// The window's runs first (`runs_by_start`), then their actions: CROSS JOIN
// is SQLite's way to fix that order, which it would otherwise turn round
// to walk every action ever journaled. A flap reset can only narrow it.
const FIX_HISTORY_SQL: &str = "SELECT DISTINCT a.plugin, a.finding_key, r.id, r.started_at
     FROM runs r CROSS JOIN actions a ON a.run_id = r.id
     LEFT JOIN flap_resets f ON f.plugin = a.plugin AND f.key = a.finding_key
     WHERE r.started_at >= ?1 AND a.outcome IN ('applied', 'failed')
       AND r.started_at >= coalesce(f.reset_at, 0)";

pub struct Journal {
    conn: Connection,
    path: PathBuf,
    /// Opened to write: it keeps the WAL short when it closes.
    writes: bool,
}

impl Drop for Journal {
    fn drop(&mut self) {
        if self.writes {
            self.truncate_a_long_wal();
        }
    }
}

/// One plugin's outcome in a run, as the journal records it.
pub struct PluginRecord<'a> {
    pub plugin: &'a str,
    pub version: &'a str,
    pub sha256: &'a str,
    pub started_at_ms: u64,
    pub duration_ms: u64,
    pub error: Option<String>,
    pub cache: &'a str,
    pub log: String,
    /// The findings of the check that produced the plan.
    pub findings: &'a [Finding],
    /// Per finding (same order): what happened to its actions.
    pub actions: &'a [Vec<ActionResult>],
    /// After fix: the findings of the re-check.
    pub recheck: Option<&'a [Finding]>,
    pub state: Option<&'a BTreeMap<String, String>>,
}

impl Journal {
    /// Open (creating and migrating as needed). The caller holds the lock.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let unusable = |message: String| JournalError::Unusable {
            path: path.display().to_string(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| unusable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(|e| unusable(e.to_string()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| unusable(e.to_string()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| unusable(e.to_string()))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| unusable(e.to_string()))?;
        // Closing the last connection would checkpoint the WAL into the
        // database and delete it: two fsyncs, plus one of the directory when
        // the next run recreates it, on every run. Leaving the WAL in place
        // makes a check's commits cost no fsync at all (NORMAL syncs only at
        // checkpoints); SQLite still checkpoints on its own (below), and the
        // intent log (FULL) keeps fixes durable.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .map_err(|e| unusable(e.to_string()))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(|e| unusable(e.to_string()))?;
        schema::migrate(&conn).map_err(|e| unusable(format!("{e:#}")))?;
        Ok(Journal {
            conn,
            path: path.to_path_buf(),
            writes: true,
        })
    }

    /// Every process that opens the journal first rebuilds the WAL's index
    /// by reading all of the WAL (about 1 µs a page). SQLite's own
    /// checkpoint (every 1000 pages, after a commit) never shortens it
    /// here: a run commits once, a checkpoint after the last commit only
    /// copies pages, and the WAL starts over only at a later write of the
    /// same process, which never comes; the next process reads it all
    /// again, and it grows by every run's pages for ever. So a run that
    /// leaves more than [`WAL_TRUNCATE_PAGES`] checkpoints and truncates
    /// it as it closes: about 3 fsyncs once every few dozen runs, and a
    /// rebuild of at most ~1.6 MiB for each process that opens it. A reader
    /// in the WAL (`doctor journal`) makes it wait for a later run.
    fn truncate_a_long_wal(&self) {
        let wal_bytes = std::fs::metadata(sibling(&self.path, "-wal")).map_or(0, |m| m.len());
        let page_bytes: u64 = self
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap_or(4096);
        // Each WAL frame is a page and a 24-byte header.
        if wal_bytes / (page_bytes + 24) <= WAL_TRUNCATE_PAGES {
            return;
        }
        let _ = self.conn.busy_timeout(std::time::Duration::ZERO);
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::debug!("the journal's WAL stays as it is for now: {e}");
        }
    }

    /// Open for reading only (`doctor journal`): no migration, no WAL
    /// switch, so a user who may only read the file can still list it.
    /// SQLite reads a WAL database through its -shm file and creates it if
    /// missing, which such a user cannot; when no -wal file exists no run has
    /// the journal open, so it is read as immutable instead.
    pub fn open_read_only(path: &Path) -> Result<Journal, JournalError> {
        let (conn, version) = read_only_versioned(path)?;
        Journal::read_only_checked(path, conn, version)
    }

    fn read_only_checked(
        path: &Path,
        conn: Connection,
        version: i64,
    ) -> Result<Journal, JournalError> {
        if version == 0 || version > schema::SCHEMA_VERSION {
            return Err(JournalError::Unusable {
                path: path.display().to_string(),
                message: format!(
                    "schema version {version} is not one this doctor reads (1..={})",
                    schema::SCHEMA_VERSION
                ),
            });
        }
        Ok(Journal {
            conn,
            path: path.to_path_buf(),
            writes: false,
        })
    }

    /// The journal as a scheduled tick reads it before it knows whether
    /// anything is due, without the lock, as `open_read_only` does; None
    /// when there is no journal yet (no file, or one that a first run
    /// killed before its schema left empty). One connection serves the
    /// whole tick: the first connection of a process to a WAL journal
    /// rebuilds the WAL's index by reading all of the WAL, and a second one
    /// would pay that again.
    pub fn open_for_tick(path: &Path) -> Result<Option<Journal>, JournalError> {
        if !path.exists() {
            return Ok(None);
        }
        match read_only_versioned(path)? {
            (_, 0) => Ok(None),
            (conn, version) => Journal::read_only_checked(path, conn, version).map(Some),
        }
    }

    /// When each of `plugins` last ran (unix ms), whatever its outcome;
    /// absent if it never ran. One index seek per plugin: a tick reads the
    /// same few rows in a year-old journal as in a new one.
    pub fn last_runs<'a>(
        &self,
        plugins: impl IntoIterator<Item = &'a str>,
    ) -> anyhow::Result<HashMap<String, u64>> {
        let mut stmt = self.conn.prepare_cached(LAST_RUN_SQL)?;
        let mut last = HashMap::new();
        for plugin in plugins {
            let at: Option<i64> = stmt.query_row([plugin], |r| r.get(0))?;
            if let Some(at) = at {
                last.insert(plugin.to_string(), at as u64);
            }
        }
        Ok(last)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Runs left `running` by a process that died: only possible when we hold
    /// the lock and they do not. Marked interrupted and returned.
    pub fn mark_interrupted(&self) -> anyhow::Result<Vec<i64>> {
        let mut stmt = self.conn.prepare(MARK_INTERRUPTED_SQL)?;
        let ids = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        Ok(ids)
    }

    /// A run that changes nothing in the world (check, dry run, a tick with
    /// no fix) writes its whole record in one transaction: one commit per
    /// run. A kill before the commit leaves the journal as it was, which is
    /// right, since nothing was done.
    pub fn begin_batch(&self) -> anyhow::Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    pub fn commit_batch(&self) -> anyhow::Result<()> {
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    pub fn begin_run(&self, mode: &str, policy: &Path, started_at_ms: u64) -> anyhow::Result<i64> {
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.conn.execute(
            "INSERT INTO runs (started_at, mode, status, pid, hostname, doctor_version, policy) VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6)",
            params![started_at_ms as i64, mode, std::process::id(), host, env!("CARGO_PKG_VERSION"), policy.display().to_string()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(
        &self,
        run_id: i64,
        exit_code: i32,
        finished_at_ms: u64,
    ) -> anyhow::Result<()> {
        self.conn.execute(
            "UPDATE runs SET status = 'complete', exit_code = ?2, finished_at = ?3 WHERE id = ?1",
            params![run_id, exit_code, finished_at_ms as i64],
        )?;
        Ok(())
    }

    pub fn load_state(&self, plugin: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, value FROM plugin_state WHERE plugin = ?1")?;
        let rows = stmt.query_map([plugin], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Record one plugin's result in one transaction; return its findings
    /// with their statuses (including findings resolved since the last run).
    pub fn record(&mut self, run_id: i64, rec: &PluginRecord<'_>) -> anyhow::Result<Vec<Observed>> {
        // A savepoint: its own transaction, or part of a run-wide batch.
        let tx = self.conn.savepoint()?;
        let plugin_run_id = insert_plugin_run(&tx, run_id, rec)?;
        let observed = if rec.error.is_some() && rec.findings.is_empty() {
            // A plugin that failed to check says nothing about its findings:
            // they stay as they were.
            Vec::new()
        } else {
            let open = open_findings(&tx, rec.plugin)?;
            let observed = status::observe(open, rec.findings, rec.actions, rec.recheck);
            for o in &observed {
                write_observation(&tx, run_id, plugin_run_id, rec, o)?;
            }
            observed
        };
        if let (None, Some(state)) = (&rec.error, rec.state) {
            save_state(&tx, rec.plugin, state, rec.started_at_ms)?;
        }
        tx.commit().context("committing the plugin result")?;
        Ok(observed)
    }
}

pub use crate::plan::gate::FixHistory;

impl Journal {
    pub fn fix_history(
        &self,
        since_ms: u64,
    ) -> anyhow::Result<HashMap<(String, String), FixHistory>> {
        let mut stmt = self.conn.prepare(FIX_HISTORY_SQL)?;
        let rows = stmt.query_map([since_ms as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(3)? as u64,
            ))
        })?;
        let mut history: HashMap<(String, String), FixHistory> = HashMap::new();
        for row in rows {
            let (plugin, key, at) = row?;
            history
                .entry((plugin, key))
                .or_default()
                .fix_times_ms
                .push(at);
        }
        Ok(history)
    }

    /// Close the flap breaker of one finding: earlier fixes stop counting.
    /// Returns false when the journal has never seen that finding.
    pub fn reset_flap(&self, plugin: &str, key: &str, now_ms: u64) -> anyhow::Result<bool> {
        let known: bool = self.conn.query_row(
            "SELECT count(*) > 0 FROM findings WHERE plugin = ?1 AND key = ?2",
            params![plugin, key],
            |r| r.get(0),
        )?;
        if known {
            self.conn.execute(
                "INSERT INTO flap_resets (plugin, key, reset_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (plugin, key) DO UPDATE SET reset_at = excluded.reset_at",
                params![plugin, key, now_ms as i64],
            )?;
        }
        Ok(known)
    }

    /// Delete runs (with their plugin runs, observations, actions and
    /// intents) that started before `before_ms`, and findings resolved
    /// before it. A run still `running`, or holding an interrupted intent
    /// that is still open (the operator's matter, as an open finding is),
    /// is kept; a kept intent that resumed a pruned one no longer names it.
    pub fn prune(&mut self, before_ms: u64) -> anyhow::Result<(usize, usize)> {
        let tx = self.conn.transaction()?;
        tx.execute(
            &format!(
                "UPDATE intents SET resumes = NULL WHERE resumes IN
                 (SELECT i.id FROM runs r CROSS JOIN intents i ON i.run_id = r.id WHERE {PRUNED_RUN})"
            ),
            [before_ms as i64],
        )?;
        let runs = tx.execute(
            &format!("DELETE FROM runs AS r WHERE {PRUNED_RUN}"),
            [before_ms as i64],
        )?;
        let findings = tx.execute(
            "DELETE FROM findings WHERE status = 'resolved' AND resolved_at < ?1",
            [before_ms as i64],
        )?;
        tx.commit()?;
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok((runs, findings))
    }
}

/// The files that make up the journal at `path`: the database, its WAL and
/// SHM, and the lock file. No action may ever touch them.
pub fn own_files(path: &Path) -> Vec<PathBuf> {
    // Compared by identity through no-symlink resolution: spell it absolute.
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let with_suffix = |suffix: &str| {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    vec![
        path.clone(),
        with_suffix("-wal"),
        with_suffix("-shm"),
        with_suffix("-journal"),
        lock::lock_path(&path),
    ]
}

fn insert_plugin_run(
    tx: &rusqlite::Connection,
    run_id: i64,
    rec: &PluginRecord<'_>,
) -> anyhow::Result<i64> {
    tx.execute(
        "INSERT INTO plugin_runs (run_id, plugin, version, sha256, started_at, duration_ms, outcome, error, cache, log)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            run_id,
            rec.plugin,
            rec.version,
            rec.sha256,
            rec.started_at_ms as i64,
            rec.duration_ms as i64,
            if rec.error.is_some() { "error" } else { "ok" },
            rec.error,
            rec.cache,
            rec.log,
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

fn open_findings(
    tx: &rusqlite::Connection,
    plugin: &str,
) -> anyhow::Result<BTreeMap<String, Finding>> {
    let mut stmt = tx.prepare(OPEN_FINDINGS_OF_PLUGIN_SQL)?;
    let rows = stmt.query_map([plugin], |r| {
        let evidence: String = r.get(4)?;
        Ok(Finding {
            key: r.get(0)?,
            severity: crate::findings::Severity::parse(&r.get::<_, String>(1)?)
                .unwrap_or(crate::findings::Severity::Info),
            subject: r.get(2)?,
            message: r.get(3)?,
            evidence: serde_json::from_str(&evidence).unwrap_or_default(),
            actions: Vec::new(),
        })
    })?;
    let mut open = BTreeMap::new();
    for f in rows {
        let f = f?;
        open.insert(f.key.clone(), f);
    }
    Ok(open)
}

fn write_observation(
    tx: &rusqlite::Connection,
    run_id: i64,
    plugin_run_id: i64,
    rec: &PluginRecord<'_>,
    o: &Observed,
) -> anyhow::Result<()> {
    let f = &o.finding;
    let evidence = serde_json::to_string(&f.evidence)?;
    let now = rec.started_at_ms as i64;
    tx.execute(
        "INSERT INTO observations (run_id, plugin_run_id, plugin, key, severity, subject, message, evidence, status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![run_id, plugin_run_id, rec.plugin, f.key, f.severity.as_str(), f.subject, f.message, evidence, o.status.as_str()],
    )?;
    let open = o.status.is_open();
    let row_status = if open { o.status.as_str() } else { "resolved" };
    let existing: Option<String> = tx
        .query_row(
            "SELECT status FROM findings WHERE plugin = ?1 AND key = ?2",
            params![rec.plugin, f.key],
            |r| r.get(0),
        )
        .optional()?;
    match existing {
        Some(_) if !open => {
            tx.execute(
                "UPDATE findings SET status = 'resolved', resolved_at = ?3, last_run_id = ?4 WHERE plugin = ?1 AND key = ?2",
                params![rec.plugin, f.key, now, run_id],
            )?;
        }
        Some(prev) => {
            // A finding that comes back after being resolved starts a new life.
            let restart = prev == "resolved";
            tx.execute(
                "UPDATE findings SET severity = ?3, subject = ?4, message = ?5, evidence = ?6, status = ?7, last_seen = ?8,
                   first_seen = CASE WHEN ?9 THEN ?8 ELSE first_seen END, resolved_at = NULL, last_run_id = ?10
                 WHERE plugin = ?1 AND key = ?2",
                params![rec.plugin, f.key, f.severity.as_str(), f.subject, f.message, evidence, row_status, now, restart, run_id],
            )?;
        }
        None if open => {
            tx.execute(
                "INSERT INTO findings (plugin, key, severity, subject, message, evidence, status, first_seen, last_seen, last_run_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
                params![rec.plugin, f.key, f.severity.as_str(), f.subject, f.message, evidence, row_status, now, run_id],
            )?;
        }
        None => {
            // Seen and fixed within this one run: remembered as resolved.
            tx.execute(
                "INSERT INTO findings (plugin, key, severity, subject, message, evidence, status, first_seen, last_seen, resolved_at, last_run_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'resolved', ?7, ?7, ?7, ?8)",
                params![rec.plugin, f.key, f.severity.as_str(), f.subject, f.message, evidence, now, run_id],
            )?;
        }
    }
    for (seq, a) in o.actions.iter().enumerate() {
        tx.execute(
            "INSERT INTO actions (run_id, plugin_run_id, plugin, finding_key, seq, kind, params, description, outcome, detail, before, after, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                run_id, plugin_run_id, rec.plugin, f.key, seq as i64, a.kind, a.params, a.description,
                a.outcome.as_str(), a.detail, a.before, a.after, a.duration_ms as i64
            ],
        )?;
    }
    Ok(())
}

fn save_state(
    tx: &rusqlite::Connection,
    plugin: &str,
    state: &BTreeMap<String, String>,
    now: u64,
) -> anyhow::Result<()> {
    tx.execute("DELETE FROM plugin_state WHERE plugin = ?1", [plugin])?;
    for (k, v) in state {
        tx.execute(
            "INSERT INTO plugin_state (plugin, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)",
            params![plugin, k, v, now as i64],
        )?;
    }
    Ok(())
}

/// `PATH-wal`, `PATH-shm`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A read-only connection (see `Journal::open_read_only`) and the schema
/// version it read.
fn read_only_versioned(path: &Path) -> Result<(Connection, i64), JournalError> {
    let unusable = |message: String| JournalError::Unusable {
        path: path.display().to_string(),
        message,
    };
    let conn = match read_only_connection(path, false) {
        Ok(conn) => conn,
        Err(_) if !sibling(path, "-wal").exists() => read_only_connection(path, true).map_err(|e| unusable(e.to_string()))?,
        Err(e) => {
            return Err(unusable(format!(
                "{e} (a run has it open, and this user cannot write its -shm file beside it: read it as the journal's owner, or once no run is active)"
            )))
        }
    };
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| unusable(e.to_string()))?;
    Ok((conn, version))
}

/// A read-only connection that has read the schema version (SQLite opens
/// lazily: a WAL it cannot use fails at the first read, not at open).
fn read_only_connection(path: &Path, immutable: bool) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags;
    let conn = if immutable {
        let uri = format!("file:{}?immutable=1", uri_path(path));
        Connection::open_with_flags(
            uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )?
    } else {
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?
    };
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?;
    Ok(conn)
}

/// A path in a SQLite URI: `%`, `?`, `#` and non-ASCII bytes escaped.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for byte in path.as_os_str().as_encoded_bytes() {
        match byte {
            b'%' | b'?' | b'#' | 0x80.. => out.push_str(&format!("%{byte:02X}")),
            _ => out.push(char::from(*byte)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_reads_no_journal_as_no_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        assert!(Journal::open_for_tick(&path).unwrap().is_none());
        // What a first run killed between its lock and its schema leaves.
        std::fs::write(&path, b"").unwrap();
        assert!(Journal::open_for_tick(&path).unwrap().is_none());
    }

    /// What a tick or a run asks of the journal, as SQLite plans it on a
    /// journal with a history, as doctor leaves it (no statistics) and once
    /// someone has run `ANALYZE` on it: a seek on the index named here,
    /// never a walk of every run, plugin run, action, finding or intent
    /// ever recorded.
    #[test]
    fn the_hot_queries_seek_never_scan() {
        let (_dir, journal) = journal_holding(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
                 INSERT INTO runs (started_at, finished_at, mode, status, pid, hostname, doctor_version, policy)
                 SELECT i * 1000, i * 1000 + 5, 'run', 'complete', 1, 'h', '0', 'p.toml' FROM n;
                 INSERT INTO plugin_runs (run_id, plugin, version, sha256, started_at, duration_ms, outcome, cache, log)
                 SELECT id, 'p' || (id % 5), '1', '', started_at, 1, 'ok', 'hit', '' FROM runs;
                 INSERT INTO actions (run_id, plugin_run_id, plugin, finding_key, seq, kind, params, description, outcome, detail, duration_ms)
                 SELECT run_id, id, plugin, 'k' || (id % 7), 0, 'signal', '{}', 'd', 'applied', '', 1 FROM plugin_runs;
                 INSERT INTO findings (plugin, key, severity, subject, message, evidence, status, first_seen, last_seen, resolved_at)
                 SELECT 'p0', 'k' || id, 'warning', 's', 'm', '{}', 'resolved', started_at, started_at, started_at FROM runs;
                 INSERT INTO intents (run_id, plugin, finding_key, seq, kind, params, description, created_at, outcome)
                 SELECT run_id, plugin, finding_key, 0, kind, params, description, 1, outcome FROM actions;",
        );
        for statistics in ["none", "ANALYZE"] {
            if statistics == "ANALYZE" {
                journal.conn.execute_batch("ANALYZE").unwrap();
            }
            for (sql, index) in [
                (LAST_RUN_SQL, "plugin_runs_by_plugin"),
                (MARK_INTERRUPTED_SQL, "runs_running"),
                (FIX_HISTORY_SQL, "runs_by_start"),
                (OPEN_FINDINGS_OF_PLUGIN_SQL, "findings_open"),
                (query::OPEN_FINDINGS_SQL, "findings_open"),
                (intents::OPEN_INTENTS_SQL, "intents_open_matters"),
                (intents::INTERRUPTED_INTENTS_SQL, "intents_open"),
            ] {
                let steps = schema::query_plan(&journal.conn, sql);
                // `findings_open` holds the open findings only: all of it
                // is the answer.
                let walks_history = |step: &String| {
                    step.starts_with("SCAN") && !step.ends_with("USING INDEX findings_open")
                };
                assert!(
                    !steps.iter().any(walks_history),
                    "statistics {statistics}: {sql}\nis planned with a scan: {steps:#?}"
                );
                // A seek on the primary key's prefix walks too: the
                // plugin's resolved findings with its open ones.
                assert!(
                    steps
                        .iter()
                        .any(|step| step.split_whitespace().any(|word| word == index)),
                    "statistics {statistics}: {sql}\ndoes not use {index}: {steps:#?}"
                );
            }
        }
    }

    /// A new journal holding what `sql` inserts (and its directory, which
    /// must outlive it).
    fn journal_holding(sql: &str) -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("journal.db")).unwrap();
        journal.conn.execute_batch(sql).unwrap();
        (dir, journal)
    }

    /// A later run that resumed an interrupted intent refers to it
    /// (`intents.resumes`); pruning the old run keeps the later one whole.
    #[test]
    fn prune_keeps_a_later_run_that_resumed_a_pruned_runs_intent() {
        let (_dir, mut journal) = journal_holding(
                "INSERT INTO runs (id, started_at, mode, status, pid, hostname, doctor_version, policy)
                 VALUES (1, 1000, 'fix', 'interrupted', 1, 'h', '0', 'p.toml'),
                        (2, 9000, 'fix', 'complete', 1, 'h', '0', 'p.toml');
                 INSERT INTO intents (id, run_id, plugin, finding_key, seq, kind, params, description, created_at, outcome, open)
                 VALUES (1, 1, 'p', 'k', 0, 'signal', '{}', 'stop', 1000, 'interrupted', NULL);
                 INSERT INTO intents (id, run_id, plugin, finding_key, seq, kind, params, description, created_at, outcome, resumes)
                 VALUES (2, 2, 'p', 'k', 0, 'signal', '{}', 'stop', 9000, 'applied', 1);",
        );
        let (runs, _) = journal.prune(5000).unwrap();
        assert_eq!(runs, 1);
        let kept: (i64, Option<i64>) = journal
            .conn
            .query_row("SELECT id, resumes FROM intents", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        // The intent it resumed is gone with its run; what it did is kept.
        assert_eq!(kept, (2, None));
    }

    /// An interrupted intent still open is the operator's matter, as an
    /// open finding is: its run outlives any prune until it is cleared.
    #[test]
    fn prune_keeps_a_run_whose_interrupted_intent_is_still_open() {
        let (_dir, mut journal) = journal_holding(
                "INSERT INTO runs (id, started_at, mode, status, pid, hostname, doctor_version, policy)
                 VALUES (1, 1000, 'fix', 'interrupted', 1, 'h', '0', 'p.toml'),
                        (2, 2000, 'fix', 'interrupted', 1, 'h', '0', 'p.toml');
                 INSERT INTO intents (id, run_id, plugin, finding_key, seq, kind, params, description, created_at, outcome, open)
                 VALUES (1, 1, 'p', 'k', 0, 'remove-file', '{}', 'remove', 1000, 'interrupted', 'unknown'),
                        (2, 2, 'p', 'k', 0, 'remove-file', '{}', 'remove', 2000, 'interrupted', NULL);",
        );
        let (runs, _) = journal.prune(5000).unwrap();
        assert_eq!(runs, 1, "only the run whose intent was closed");
        let left: Vec<i64> = journal
            .conn
            .prepare("SELECT id FROM runs")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(left, vec![1]);
        let open: String = journal
            .conn
            .query_row("SELECT open FROM intents WHERE id = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(open, "unknown");
    }

    #[test]
    fn a_tick_reads_last_runs_and_findings_on_one_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let journal = Journal::open(&path).unwrap();
        let run = journal
            .begin_run("check", Path::new("p.toml"), 1_000)
            .unwrap();
        for (plugin, at) in [("a", 1_000), ("a", 3_000), ("b", 2_000)] {
            insert_plugin_run(
                &journal.conn,
                run,
                &PluginRecord {
                    plugin,
                    version: "1",
                    sha256: "",
                    started_at_ms: at,
                    duration_ms: 1,
                    error: None,
                    cache: "hit",
                    log: String::new(),
                    findings: &[],
                    actions: &[],
                    recheck: None,
                    state: None,
                },
            )
            .unwrap();
        }
        let tick = Journal::open_for_tick(&path).unwrap().unwrap();
        let last = tick.last_runs(["a", "b", "never-ran"]).unwrap();
        assert_eq!(last.get("a"), Some(&3_000));
        assert_eq!(last.get("b"), Some(&2_000));
        assert_eq!(last.len(), 2);
        let open = query::findings(tick.connection(), &Default::default()).unwrap();
        assert!(open.is_empty());
    }

    #[test]
    fn the_wal_stays_short_over_many_runs_each_its_own_process() {
        // Each run opens the journal, commits once and closes it, as a
        // process does; the WAL must not grow by every run for ever.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let wal = sibling(&path, "-wal");
        let frames = || std::fs::metadata(&wal).map_or(0, |m| m.len()) / (4096 + 24);
        let (mut most, mut truncated) = (0, false);
        for run in 0..120 {
            let journal = Journal::open(&path).unwrap();
            journal.begin_batch().unwrap();
            let id = journal
                .begin_run("check", Path::new("p.toml"), run)
                .unwrap();
            // About 25 pages a run, as a busy check writes.
            let big = "x".repeat(100_000);
            journal.finish_run(id, 0, run + 1).unwrap();
            journal
                .connection()
                .execute(
                    "UPDATE runs SET policy = ?1 WHERE id = ?2",
                    params![big, id],
                )
                .unwrap();
            journal.commit_batch().unwrap();
            drop(journal);
            truncated |= run > 0 && frames() == 0;
            most = most.max(frames());
        }
        // 400 pages and the one run that crossed them; 120 runs are ~3000.
        assert!(
            most <= WAL_TRUNCATE_PAGES + 60,
            "the WAL reached {most} pages"
        );
        assert!(truncated, "the WAL was never truncated");
        let journal = Journal::open_read_only(&path).unwrap();
        let runs: i64 = journal
            .connection()
            .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(runs, 120, "every run is still there");
    }
}
