//! Read-only SQL against an operator's database. The connection is opened
//! read-only with `query_only`, cannot ATTACH other files, and gives up on a
//! lock after a bounded wait, so a read can never become a write. The
//! database path is resolved with no symlink at any component, and every
//! query is bounded in rows, bytes and time (interrupted at the deadline).

use crate::safe_fs::{self, FileId, PathError};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::{Duration, Instant};

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
    #[error("query returned more than {0} bytes (sql_result_max)")]
    TooManyBytes(u64),
    #[error("a value in the query is larger than sql_result_max allows")]
    ValueTooBig,
    #[error("interrupted at its deadline (a query: the plugin's time; a write: action_wait_max)")]
    Interrupted,
    #[error("{0}")]
    Refused(String),
    /// A writer died mid-transaction: a hot journal to roll back, or a WAL
    /// whose index needs rebuilding, which a read-only connection cannot do.
    #[error("{0}")]
    LeftByCrashedWriter(String),
}

/// How much one query may cost: the caller's deadline and a byte budget.
#[derive(Debug, Clone, Copy)]
pub struct QueryBounds {
    pub deadline: Instant,
    pub max_bytes: u64,
}

/// SQLite VM steps between deadline checks: frequent enough to stop a
/// runaway recursive query within milliseconds, rare enough to cost nothing.
const PROGRESS_STEPS: i32 = 10_000;

/// The database file's identity, resolved with no symlinks; it must be a
/// regular file.
pub fn database_file(path: &Path) -> Result<FileId, SqlError> {
    let fd = safe_fs::open(path, nix::fcntl::OFlag::O_PATH).map_err(|e| match e {
        PathError::NotFound(p) => SqlError::Missing(p),
        other => SqlError::Refused(other.to_string()),
    })?;
    let stat =
        safe_fs::stat_fd(&fd).map_err(|e| SqlError::Io(format!("{}: {e}", path.display())))?;
    if safe_fs::kind(&stat) != nix::sys::stat::SFlag::S_IFREG {
        return Err(SqlError::Refused(format!(
            "{} is a {}, not a database file",
            path.display(),
            safe_fs::kind_name(&stat)
        )));
    }
    Ok(FileId::of(&stat))
}

/// Open `path` with `flags` only if it is the symlink-free regular file it
/// was a moment ago (SQLite opens by name, so the name is checked on both
/// sides of the open).
pub fn open_checked(path: &Path, flags: OpenFlags) -> Result<Connection, SqlError> {
    let before = database_file(path)?;
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NOFOLLOW)
        .map_err(|e| sql_error(e, path))?;
    if database_file(path)? != before {
        return Err(SqlError::Refused(format!(
            "{} was replaced while it was being opened",
            path.display()
        )));
    }
    harden(&conn, path)?;
    Ok(conn)
}

pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

pub fn open_read_only(path: &Path) -> Result<Connection, SqlError> {
    open_query_only(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
}

/// A connection opened with `access` on which SQL may only read.
fn open_query_only(path: &Path, access: OpenFlags) -> Result<Connection, SqlError> {
    let conn = open_checked(path, access | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(|e| sql_error(e, path))?;
    Ok(conn)
}

/// No ATTACH (a plugin must not reach other files) and a bounded lock wait.
pub fn harden(conn: &Connection, path: &Path) -> Result<(), SqlError> {
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED, 0)
        .map_err(|e| sql_error(e, path))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_error(e, path))?;
    Ok(())
}

/// A connection's statements stop at `bounds.deadline` (interrupted) and
/// never build a value larger than `bounds.max_bytes`.
pub fn bound(conn: &Connection, path: &Path, bounds: QueryBounds) -> Result<(), SqlError> {
    let length = i32::try_from(bounds.max_bytes).unwrap_or(i32::MAX).max(1);
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, length)
        .map_err(|e| sql_error(e, path))?;
    let deadline = bounds.deadline;
    conn.progress_handler(PROGRESS_STEPS, Some(move || Instant::now() >= deadline));
    Ok(())
}

pub fn query(
    path: &Path,
    sql: &str,
    params: &[Value],
    bounds: QueryBounds,
) -> Result<Rows, SqlError> {
    match query_on(&open_read_only(path)?, path, sql, params, bounds) {
        // What any SQLite client does on opening such a file: roll the
        // half-written transaction back (or rebuild the WAL's index), which
        // needs a connection that may write. Committed rows are not changed,
        // and `query_only` still refuses every statement that would.
        Err(SqlError::LeftByCrashedWriter(_)) => {
            query_on(&open_recovering(path)?, path, sql, params, bounds)
        }
        done => done,
    }
}

/// A read-write connection (never creating the file) that runs queries
/// only: SQLite's crash recovery may write, SQL may not.
fn open_recovering(path: &Path) -> Result<Connection, SqlError> {
    open_query_only(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
}

fn query_on(
    conn: &Connection,
    path: &Path,
    sql: &str,
    params: &[Value],
    bounds: QueryBounds,
) -> Result<Rows, SqlError> {
    // One value can be no larger than the whole answer may be.
    bound(conn, path, bounds)?;
    let mut stmt = conn.prepare(sql).map_err(|e| sql_error(e, path))?;
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params.iter().map(to_sql)))
        .map_err(|e| sql_error(e, path))?;
    let mut out = Vec::new();
    let mut bytes: u64 = 0;
    while let Some(row) = rows.next().map_err(|e| sql_error(e, path))? {
        if out.len() == MAX_ROWS {
            return Err(SqlError::TooManyRows(MAX_ROWS));
        }
        let values: Vec<Value> = (0..columns.len())
            .map(|i| row.get_ref(i).map(from_ref))
            .collect::<Result<_, _>>()
            .map_err(|e| sql_error(e, path))?;
        bytes = bytes.saturating_add(values.iter().map(Value::size).sum::<u64>());
        if bytes > bounds.max_bytes {
            return Err(SqlError::TooManyBytes(bounds.max_bytes));
        }
        out.push(values);
    }
    Ok(Rows { columns, rows: out })
}

impl Value {
    /// What holding this value costs the host: its bytes plus the value's
    /// own size (a NULL is not free: millions of them are gigabytes once
    /// copied for the plugin).
    pub(crate) fn size(&self) -> u64 {
        let own = std::mem::size_of::<Value>() as u64;
        own + match self {
            Value::Null | Value::Integer(_) | Value::Real(_) => 0,
            Value::Text(t) => t.len() as u64,
            Value::Blob(b) => b.len() as u64,
        }
    }
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
pub fn sql_error(e: rusqlite::Error, path: &Path) -> SqlError {
    use rusqlite::ErrorCode;
    let shown = path.display();
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => SqlError::Locked(BUSY_TIMEOUT),
            ErrorCode::OperationInterrupted => SqlError::Interrupted,
            ErrorCode::TooBig => SqlError::ValueTooBig,
            ErrorCode::NotADatabase => {
                SqlError::Invalid(format!("{shown} is not a SQLite database"))
            }
            ErrorCode::CannotOpen => SqlError::Io(format!("cannot open {shown}: {e}")),
            ErrorCode::ReadOnly
                if matches!(
                    f.extended_code,
                    rusqlite::ffi::SQLITE_READONLY_ROLLBACK
                        | rusqlite::ffi::SQLITE_READONLY_RECOVERY
                ) =>
            {
                SqlError::LeftByCrashedWriter(format!(
                    "{shown} was left mid-transaction by a writer that died: {e}"
                ))
            }
            ErrorCode::ReadOnly => SqlError::Io(format!("{shown} is read-only: {e}")),
            _ => SqlError::Invalid(format!("{shown}: {e}")),
        },
        _ => SqlError::Invalid(format!("{shown}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> QueryBounds {
        QueryBounds {
            deadline: Instant::now() + Duration::from_secs(5),
            max_bytes: 1 << 20,
        }
    }

    fn query(path: &Path, sql: &str, params: &[Value]) -> Result<Rows, SqlError> {
        super::query(path, sql, params, bounds())
    }

    #[test]
    fn a_transaction_left_by_a_writer_that_died_is_rolled_back_not_a_read_only_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('committed');")
            .unwrap();
        drop(conn);
        // A writer killed mid-transaction, with pages already spilled to
        // the file: it leaves a hot journal behind.
        let crashed = std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import os, signal, sqlite3, sys\n\
                 d = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
                 d.execute('PRAGMA cache_size = 1'); d.execute('BEGIN IMMEDIATE')\n\
                 d.execute(\"UPDATE t SET x = 'half-written'\")\n\
                 d.execute(\"INSERT INTO t SELECT hex(randomblob(3000)) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) SELECT i FROM n)\")\n\
                 os.kill(os.getpid(), signal.SIGKILL)\n",
            )
            .arg(&path)
            .status()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&crashed),
            Some(9)
        );
        let journal = dir.path().join("jobs.db-journal");
        assert!(journal.exists(), "the writer left no journal");

        let rows = query(&path, "SELECT x FROM t", &[]).unwrap();
        assert_eq!(rows.rows, vec![vec![Value::Text("committed".into())]]);
        assert!(
            !journal.exists(),
            "the half-written transaction was rolled back"
        );
        // The rows as committed, and nothing a query writes: still refused.
        let write = query(&path, "UPDATE t SET x = 'by a query'", &[]);
        assert!(write.is_err(), "{:?}", write.map(|r| r.rows));
    }

    fn db() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = std::fs::canonicalize(dir.path()).unwrap().join("t.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE t(id INTEGER, name TEXT); INSERT INTO t VALUES (1, 'a'), (2, NULL);",
        )
        .unwrap();
        (dir, path)
    }

    #[test]
    fn reads_typed_rows() {
        let (_d, path) = db();
        let rows = query(
            &path,
            "SELECT id, name FROM t WHERE id >= ? ORDER BY id",
            &[Value::Integer(1)],
        )
        .unwrap();
        assert_eq!(rows.columns, vec!["id", "name"]);
        assert_eq!(
            rows.rows[0],
            vec![Value::Integer(1), Value::Text("a".into())]
        );
        assert_eq!(rows.rows[1][1], Value::Null);
    }

    #[test]
    fn writes_attach_and_missing_files_fail_cleanly() {
        let (_d, path) = db();
        assert!(query(&path, "DELETE FROM t", &[]).is_err());
        assert!(query(&path, "ATTACH DATABASE '/tmp/x.db' AS x", &[]).is_err());
        let rows = query(&path, "SELECT count(*) FROM t", &[]).unwrap();
        assert_eq!(
            rows.rows[0][0],
            Value::Integer(2),
            "the delete did not happen"
        );
        assert!(matches!(
            query(Path::new("/nonexistent/x.db"), "SELECT 1", &[]),
            Err(SqlError::Missing(_))
        ));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::fs::canonicalize(dir.path()).unwrap().join("notes.txt");
        std::fs::write(
            &path,
            "this is not sqlite, just some text that is long enough to have a header",
        )
        .unwrap();
        let err = query(&path, "SELECT 1 FROM sqlite_master", &[])
            .err()
            .unwrap();
        assert!(err.to_string().contains("not a SQLite database"), "{err}");
    }

    #[test]
    fn a_runaway_query_is_interrupted_at_the_deadline() {
        let (_d, path) = db();
        let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";
        let bounds = QueryBounds {
            deadline: Instant::now() + Duration::from_millis(200),
            max_bytes: 1 << 20,
        };
        assert!(matches!(
            super::query(&path, endless, &[], bounds),
            Err(SqlError::Interrupted)
        ));
    }

    #[test]
    fn results_are_capped_in_bytes_and_no_value_may_exceed_the_cap() {
        let (_d, path) = db();
        let small = QueryBounds {
            deadline: Instant::now() + Duration::from_secs(5),
            max_bytes: 1000,
        };
        let many = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 100) SELECT hex(randomblob(50)) FROM n";
        assert!(matches!(
            super::query(&path, many, &[], small),
            Err(SqlError::TooManyBytes(1000))
        ));
        assert!(matches!(
            super::query(&path, "SELECT randomblob(100000000)", &[], small),
            Err(SqlError::ValueTooBig)
        ));
    }

    #[test]
    fn a_database_behind_a_symlink_is_refused() {
        let (d, path) = db();
        let link = std::fs::canonicalize(d.path()).unwrap().join("link.db");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = query(&link, "SELECT 1", &[]).err().unwrap();
        assert!(matches!(err, SqlError::Refused(_)), "{err}");
        assert!(err.to_string().contains("symlink"), "{err}");
    }
}
