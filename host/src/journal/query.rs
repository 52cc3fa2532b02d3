//! Reading the journal back for `doctor journal`.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub mode: String,
    pub status: String,
    pub exit_code: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct FindingRow {
    pub plugin: String,
    pub key: String,
    pub severity: String,
    pub subject: String,
    pub message: String,
    pub status: String,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// Which findings to list; empty fields do not filter.
#[derive(Debug, Default)]
pub struct Filter {
    /// Findings last seen (runs started) at or after this time (unix ms).
    pub since_ms: Option<u64>,
    pub plugin: Option<String>,
    pub severity: Option<String>,
    /// new, persisting or resolved; None lists the open ones (new, persisting).
    pub status: Option<String>,
}

pub fn runs(conn: &Connection, limit: u32, since_ms: Option<u64>) -> rusqlite::Result<Vec<RunRow>> {
    let mut stmt = conn.prepare(
        "SELECT id, started_at, finished_at, mode, status, exit_code FROM runs
         WHERE started_at >= ?2 ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![limit, since_ms.unwrap_or(0) as i64], run_row)?;
    rows.collect()
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        started_at: r.get(1)?,
        finished_at: r.get(2)?,
        mode: r.get(3)?,
        status: r.get(4)?,
        exit_code: r.get(5)?,
    })
}

pub(super) const OPEN_FINDINGS_SQL: &str =
    "SELECT plugin, key, severity, subject, message, status, first_seen, last_seen FROM findings
     WHERE status != 'resolved' AND last_seen >= ?1
       AND (?2 IS NULL OR plugin = ?2) AND (?3 IS NULL OR severity = ?3)
     ORDER BY plugin, key";
const FINDINGS_WITH_STATUS_SQL: &str =
    "SELECT plugin, key, severity, subject, message, status, first_seen, last_seen FROM findings
     WHERE status = ?4 AND last_seen >= ?1
       AND (?2 IS NULL OR plugin = ?2) AND (?3 IS NULL OR severity = ?3)
     ORDER BY plugin, key";

pub fn findings(conn: &Connection, filter: &Filter) -> rusqlite::Result<Vec<FindingRow>> {
    // The open ones (every tick's report) are the partial index
    // `findings_open`; resolved findings pile up, open ones do not.
    let since = filter.since_ms.unwrap_or(0) as i64;
    let (sql, params) = match filter.status {
        None => (
            OPEN_FINDINGS_SQL,
            params![since, filter.plugin, filter.severity],
        ),
        Some(_) => (
            FINDINGS_WITH_STATUS_SQL,
            params![since, filter.plugin, filter.severity, filter.status],
        ),
    };
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok(FindingRow {
            plugin: r.get(0)?,
            key: r.get(1)?,
            severity: r.get(2)?,
            subject: r.get(3)?,
            message: r.get(4)?,
            status: r.get(5)?,
            first_seen: r.get(6)?,
            last_seen: r.get(7)?,
        })
    })?;
    rows.collect()
}

#[derive(Debug, Serialize)]
pub struct RunDetail {
    pub run: RunRow,
    pub plugins: Vec<serde_json::Value>,
    pub observations: Vec<serde_json::Value>,
    pub actions: Vec<serde_json::Value>,
}

/// Everything one run recorded; None if there is no such run.
pub fn show_run(conn: &Connection, id: i64) -> rusqlite::Result<Option<RunDetail>> {
    let run = conn
        .query_row(
            "SELECT id, started_at, finished_at, mode, status, exit_code FROM runs WHERE id = ?1",
            [id],
            run_row,
        )
        .optional()?;
    let Some(run) = run else { return Ok(None) };
    let plugins = rows_as_json(
        conn,
        "SELECT plugin, version, sha256, duration_ms, outcome, error, cache, log FROM plugin_runs WHERE run_id = ?1 ORDER BY plugin",
        id,
    )?;
    let observations = rows_as_json(
        conn,
        "SELECT plugin, key, severity, status, subject, message, evidence FROM observations WHERE run_id = ?1 ORDER BY plugin, key",
        id,
    )?;
    let actions = rows_as_json(
        conn,
        "SELECT plugin, finding_key, seq, kind, description, outcome, detail, before, after, duration_ms, params
         FROM actions WHERE run_id = ?1 ORDER BY id",
        id,
    )?;
    Ok(Some(RunDetail {
        run,
        plugins,
        observations,
        actions,
    }))
}

fn rows_as_json(conn: &Connection, sql: &str, id: i64) -> rusqlite::Result<Vec<serde_json::Value>> {
    let mut stmt = conn.prepare(sql)?;
    let names: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let rows = stmt.query_map([id], |r| {
        let mut object = serde_json::Map::new();
        for (i, name) in names.iter().enumerate() {
            let value = match r.get_ref(i)? {
                rusqlite::types::ValueRef::Null => serde_json::Value::Null,
                rusqlite::types::ValueRef::Integer(n) => n.into(),
                rusqlite::types::ValueRef::Real(f) => f.into(),
                rusqlite::types::ValueRef::Text(t) => {
                    String::from_utf8_lossy(t).into_owned().into()
                }
                rusqlite::types::ValueRef::Blob(b) => hex::encode(b).into(),
            };
            object.insert(name.clone(), value);
        }
        Ok(serde_json::Value::Object(object))
    })?;
    rows.collect()
}
