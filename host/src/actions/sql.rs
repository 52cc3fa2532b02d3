//! `sql-exec`: one data-changing statement, in a transaction that is rolled
//! back if it would change more rows than the plugin declared. A statement
//! that changes no row is a compare-and-swap that lost its race: skipped.

use super::{ActionContext, Executed};
use crate::facts::sqlite::{self, Value};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

/// Only statements that change rows; no DDL, PRAGMA or ATTACH.
const ALLOWED_VERBS: &[&str] = &["UPDATE", "DELETE", "INSERT", "REPLACE"];

pub fn exec(ctx: &ActionContext, label: &str, statement: &str, params: &[Value], max_rows: u32) -> Executed {
    if let Err(denied) = ctx.grants.sqlite_write(label) {
        return Executed::refused(denied.0);
    }
    let Some(path) = ctx.policy.database_path(label) else {
        return Executed::failed(format!("database label {label:?} is not defined in the policy"));
    };
    let verb = statement.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
    if !ALLOWED_VERBS.contains(&verb.as_str()) {
        return Executed::refused(format!("sql-exec runs only {} statements, not {verb}", ALLOWED_VERBS.join("/")));
    }
    match run(path, statement, params, max_rows) {
        Ok(executed) => executed,
        Err(e) => Executed::failed(format!("database {label:?}: {e}")),
    }
}

fn run(path: &std::path::Path, statement: &str, params: &[Value], max_rows: u32) -> Result<Executed, sqlite::SqlError> {
    if !path.exists() {
        return Err(sqlite::SqlError::Missing(path.display().to_string()));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(|e| sqlite::classify(e, path))?;
    sqlite::harden(&conn, path)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| sqlite::classify(e, path))?;
    let changed = tx
        .execute(statement, rusqlite::params_from_iter(params.iter().map(sqlite::to_sql)))
        .map_err(|e| sqlite::classify(e, path))?;
    let before = Some(format!("{changed} row(s) matched"));
    if changed > max_rows as usize {
        tx.rollback().map_err(|e| sqlite::classify(e, path))?;
        return Ok(Executed::failed(format!(
            "would change {changed} rows, more than max-rows {max_rows}; rolled back, nothing changed"
        ))
        .with(before, Some("0 rows changed (rolled back)".into())));
    }
    if changed == 0 {
        tx.rollback().map_err(|e| sqlite::classify(e, path))?;
        return Ok(Executed::skipped("no row matched any more (compare-and-swap: someone else changed it first)".into())
            .with(before, Some("0 rows changed".into())));
    }
    tx.commit().map_err(|e| sqlite::classify(e, path))?;
    Ok(Executed::applied(format!("changed {changed} row(s)")).with(before, Some(format!("{changed} row(s) changed"))))
}
