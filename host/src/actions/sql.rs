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
    drop(conn);
    match_sidecar_owners(path);
    Ok(Executed::applied(format!("changed {changed} row(s)")).with(before, Some(format!("{changed} row(s) changed"))))
}

/// The doctor usually runs as root: a write may create `-wal`, `-shm` or
/// `-journal` files owned by root that the service's own user can then not
/// open. Give them the database file's owner.
fn match_sidecar_owners(path: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(db) = std::fs::metadata(path) else { return };
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        let sidecar = std::path::PathBuf::from(name);
        if let Ok(meta) = std::fs::symlink_metadata(&sidecar) {
            if meta.is_file() && (meta.uid() != db.uid() || meta.gid() != db.gid()) {
                if let Err(e) = std::os::unix::fs::lchown(&sidecar, Some(db.uid()), Some(db.gid())) {
                    tracing::warn!("could not give {} the owner of {}: {e}", sidecar.display(), path.display());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::match_sidecar_owners;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sidecars_take_the_database_owner() {
        if !nix::unistd::geteuid().is_root() {
            return; // only root can create files for another owner
        }
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jobs.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
        std::os::unix::fs::chown(&db, Some(65534), Some(65534)).unwrap();
        let wal = dir.path().join("jobs.db-wal");
        assert_eq!(std::fs::metadata(&wal).unwrap().uid(), 0, "root's write made a root-owned WAL");
        match_sidecar_owners(&db);
        assert_eq!(std::fs::metadata(&wal).unwrap().uid(), 65534);
        assert_eq!(std::fs::metadata(dir.path().join("jobs.db-shm")).unwrap().uid(), 65534);
        drop(conn);
    }
}
