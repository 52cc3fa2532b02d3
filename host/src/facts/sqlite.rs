//! Read-only SQL against an operator's database. The connection is opened
//! read-only with `query_only`, cannot ATTACH other files, and gives up on a
//! lock after a bounded wait, so a read can never become a write.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// Most rows one query may return to a plugin.
pub const MAX_ROWS: usize = 200_000;
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("database file {0} does not exist")]
    Missing(String),
    #[error("{0}")]
    Invalid(String),
    #[error("database is locked by another connection (waited {0:?})")]
    Locked(Duration),
    #[error("{0}")]
    Io(String),
    #[error("query returned more than {0} rows")]
    TooManyRows(usize),
}

pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

pub fn open_read_only(path: &Path) -> Result<Connection, SqlError> {
    if !path.exists() {
        return Err(SqlError::Missing(path.display().to_string()));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(e, path))?;
    harden(&conn, path)?;
    conn.pragma_update(None, "query_only", true).map_err(|e| classify(e, path))?;
    Ok(conn)
}

/// No ATTACH (a plugin must not reach other files) and a bounded lock wait.
pub fn harden(conn: &Connection, path: &Path) -> Result<(), SqlError> {
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED, 0).map_err(|e| classify(e, path))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| classify(e, path))?;
    Ok(())
}

pub fn query(path: &Path, sql: &str, params: &[Value]) -> Result<Rows, SqlError> {
    let conn = open_read_only(path)?;
    let mut stmt = conn.prepare(sql).map_err(|e| classify(e, path))?;
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(to_sql))).map_err(|e| classify(e, path))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| classify(e, path))? {
        if out.len() == MAX_ROWS {
            return Err(SqlError::TooManyRows(MAX_ROWS));
        }
        let values = (0..columns.len()).map(|i| row.get_ref(i).map(from_ref)).collect::<Result<_, _>>();
        out.push(values.map_err(|e| classify(e, path))?);
    }
    Ok(Rows { columns, rows: out })
}

pub fn to_sql(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Integer(i) => rusqlite::types::Value::Integer(*i),
        Value::Real(f) => rusqlite::types::Value::Real(*f),
        Value::Text(t) => rusqlite::types::Value::Text(t.clone()),
        Value::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
    }
}

fn from_ref(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// Turn SQLite's error codes into reasons an operator can act on.
pub fn classify(e: rusqlite::Error, path: &Path) -> SqlError {
    use rusqlite::ErrorCode;
    let shown = path.display();
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => SqlError::Locked(BUSY_TIMEOUT),
            ErrorCode::NotADatabase => SqlError::Invalid(format!("{shown} is not a SQLite database")),
            ErrorCode::CannotOpen => SqlError::Io(format!("cannot open {shown}: {e}")),
            ErrorCode::ReadOnly => SqlError::Io(format!("{shown} is read-only: {e}")),
            _ => SqlError::Invalid(format!("{shown}: {e}")),
        },
        _ => SqlError::Invalid(format!("{shown}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE t(id INTEGER, name TEXT); INSERT INTO t VALUES (1, 'a'), (2, NULL);").unwrap();
        (dir, path)
    }

    #[test]
    fn reads_typed_rows() {
        let (_d, path) = db();
        let rows = query(&path, "SELECT id, name FROM t WHERE id >= ? ORDER BY id", &[Value::Integer(1)]).unwrap();
        assert_eq!(rows.columns, vec!["id", "name"]);
        assert_eq!(rows.rows[0], vec![Value::Integer(1), Value::Text("a".into())]);
        assert_eq!(rows.rows[1][1], Value::Null);
    }

    #[test]
    fn writes_attach_and_missing_files_fail_cleanly() {
        let (_d, path) = db();
        assert!(query(&path, "DELETE FROM t", &[]).is_err());
        assert!(query(&path, "ATTACH DATABASE '/tmp/x.db' AS x", &[]).is_err());
        let rows = query(&path, "SELECT count(*) FROM t", &[]).unwrap();
        assert_eq!(rows.rows[0][0], Value::Integer(2), "the delete did not happen");
        assert!(matches!(query(Path::new("/nonexistent/x.db"), "SELECT 1", &[]), Err(SqlError::Missing(_))));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "this is not sqlite, just some text that is long enough to have a header").unwrap();
        let err = query(&path, "SELECT 1 FROM sqlite_master", &[]).err().unwrap();
        assert!(err.to_string().contains("not a SQLite database"), "{err}");
    }
}
