//! Reading the journal back for `doctor journal`.

use rusqlite::{params, Connection};
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

pub fn runs(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<RunRow>> {
    let mut stmt = conn.prepare(
        "SELECT id, started_at, finished_at, mode, status, exit_code FROM runs ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(RunRow {
            id: r.get(0)?,
            started_at: r.get(1)?,
            finished_at: r.get(2)?,
            mode: r.get(3)?,
            status: r.get(4)?,
            exit_code: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// Findings as the journal remembers them; `all` includes resolved ones.
pub fn findings(conn: &Connection, all: bool) -> rusqlite::Result<Vec<FindingRow>> {
    let mut stmt = conn.prepare(
        "SELECT plugin, key, severity, subject, message, status, first_seen, last_seen FROM findings
         WHERE ?1 OR status != 'resolved' ORDER BY plugin, key",
    )?;
    let rows = stmt.query_map(params![all], |r| {
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
