//! `sql-exec`: one data-changing statement, in a transaction that is rolled
//! back if it would change more rows than the plugin declared — counted
//! with `total_changes()`, so rows that triggers and foreign-key cascades
//! change count too. Rows that REPLACE conflict resolution deletes are not
//! counted by SQLite at all, so statements that can resolve a conflict by
//! REPLACE (the verb, `OR REPLACE`, or a table declaring `ON CONFLICT
//! REPLACE`) are refused. A statement that changes no row is a compare-and-swap
//! that lost its race: skipped. The database is opened with no symlink on
//! its path and is never doctor's own journal.

use super::{ActionContext, Executed};
use crate::facts::postgres::{self, PgError};
use crate::facts::sqlite::{self, Value};
use crate::policy::{Database, PgTarget};
use crate::safe_fs::{self, FileId};
use rusqlite::{OpenFlags, TransactionBehavior};

/// Only statements that change rows; no DDL, PRAGMA or ATTACH.
pub(super) const ALLOWED_VERBS: &[&str] = &["UPDATE", "DELETE", "INSERT"];

/// A write is bounded like a read: in time (interrupted, and rolled back,
/// at `action_wait_max`) and in the size of any value it builds
/// (`sql_result_max`), so a runaway statement cannot hold the
/// application's database locked or fill its disk.
pub fn bounds(ctx: &ActionContext) -> sqlite::QueryBounds {
    sqlite::QueryBounds {
        deadline: std::time::Instant::now() + ctx.policy.doctor.action_wait_max,
        max_bytes: ctx.policy.doctor.sql_result_max,
    }
}

pub fn exec(
    ctx: &ActionContext,
    label: &str,
    statement: &str,
    params: &[Value],
    max_rows: u32,
    bounds: sqlite::QueryBounds,
) -> Executed {
    if let Err(denied) = ctx.grants.sqlite_write(label) {
        return Executed::refused(denied.0);
    }
    let path = match ctx.policy.database(label) {
        None => {
            return Executed::failed(format!(
                "database label {label:?} is not defined in the policy"
            ))
        }
        Some(Database::Postgres(target)) => {
            return postgres_update(label, target, statement, params, max_rows, bounds)
        }
        Some(Database::Sqlite { path }) => path,
    };
    let verb = statement
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    if !ALLOWED_VERBS.contains(&verb.as_str()) {
        return Executed::refused(format!(
            "sql-exec runs only {} statements, not {verb}",
            ALLOWED_VERBS.join("/")
        ));
    }
    if or_replace(statement) {
        return Executed::refused(
            "sql-exec does not run OR REPLACE: rows it deletes are not counted against max-rows"
                .into(),
        );
    }
    match sqlite::database_file(path) {
        Ok(id)
            if ctx
                .protected_files
                .iter()
                .any(|p| FileId::of_own_file(p) == Some(id)) =>
        {
            return Executed::refused(format!(
                "guard: database {label:?} is doctor's own journal; never a target"
            ));
        }
        Ok(_) => {}
        Err(sqlite::SqlError::Refused(why)) => {
            return Executed::refused(format!("database {label:?}: {why}"))
        }
        Err(e) => return Executed::failed(format!("database {label:?}: {e}")),
    }
    match run(path, statement, params, max_rows, bounds) {
        Ok(executed) => executed,
        Err(e) => Executed::failed(format!("database {label:?}: {e}")),
    }
}

/// The PostgreSQL form: the guard and the trigger check are the session's
/// (facts/postgres); here only the outcome as the plan reads it.
fn postgres_update(
    label: &str,
    target: &PgTarget,
    statement: &str,
    params: &[Value],
    max_rows: u32,
    bounds: sqlite::QueryBounds,
) -> Executed {
    let failed = |e: PgError| match e {
        PgError::Refused(why) => Executed::refused(format!("database {label:?}: {why}")),
        other => Executed::failed(format!("database {label:?}: {other}")),
    };
    let mut session = match postgres::connect(target, bounds.deadline) {
        Ok(session) => session,
        Err(e) => return failed(e),
    };
    let outcome = session.update(
        statement,
        params,
        u64::from(max_rows),
        bounds.deadline,
        &target.allow_triggers,
    );
    let updated = match outcome {
        Ok(updated) => updated,
        Err(e) => return failed(e),
    };
    let changed = updated.changed;
    let before = Some(format!("{changed} row(s) matched"));
    if updated.rolled_back {
        return Executed::failed(format!(
            "would change {changed} rows, more than max-rows {max_rows}; rolled back, nothing changed"
        ))
        .with(before, Some("0 rows changed (rolled back)".into()));
    }
    if changed == 0 {
        return Executed::skipped(
            "no row matched any more (compare-and-swap: someone else changed it first)".into(),
        )
        .with(before, Some("0 rows changed".into()));
    }
    Executed::applied(format!("changed {changed} row(s)"))
        .with(before, Some(format!("{changed} row(s) changed")))
}

fn run(
    path: &std::path::Path,
    statement: &str,
    params: &[Value],
    max_rows: u32,
    bounds: sqlite::QueryBounds,
) -> Result<Executed, sqlite::SqlError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = sqlite::open_checked(path, flags)?;
    sqlite::bound(&conn, path, bounds)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sqlite::sql_error(e, path))?;
    if let Some(table) = replacing_table(&tx).map_err(|e| sqlite::sql_error(e, path))? {
        return Ok(Executed::refused(format!(
            "table {table} declares ON CONFLICT REPLACE: rows it deletes are not counted by SQLite, so max-rows cannot be enforced"
        )));
    }
    let before_total = tx.total_changes();
    tx.execute(
        statement,
        rusqlite::params_from_iter(params.iter().map(sqlite::to_sql)),
    )
    .map_err(|e| sqlite::sql_error(e, path))?;
    let changed =
        usize::try_from(tx.total_changes().saturating_sub(before_total)).unwrap_or(usize::MAX);
    let before = Some(format!("{changed} row(s) matched"));
    if changed > max_rows as usize {
        tx.rollback().map_err(|e| sqlite::sql_error(e, path))?;
        return Ok(Executed::failed(format!(
            "would change {changed} rows, more than max-rows {max_rows}; rolled back, nothing changed"
        ))
        .with(before, Some("0 rows changed (rolled back)".into())));
    }
    if changed == 0 {
        tx.rollback().map_err(|e| sqlite::sql_error(e, path))?;
        return Ok(Executed::skipped(
            "no row matched any more (compare-and-swap: someone else changed it first)".into(),
        )
        .with(before, Some("0 rows changed".into())));
    }
    tx.commit().map_err(|e| sqlite::sql_error(e, path))?;
    drop(conn);
    match_sidecar_owners(path);
    Ok(Executed::applied(format!("changed {changed} row(s)"))
        .with(before, Some(format!("{changed} row(s) changed"))))
}

/// `INSERT OR REPLACE` / `UPDATE OR REPLACE` as SQL sees it: words outside
/// string literals, quoted identifiers and comments (which separate words,
/// as whitespace does).
pub(super) fn or_replace(statement: &str) -> bool {
    let words = sql_words(statement);
    words.windows(2).any(|w| w[0] == "OR" && w[1] == "REPLACE")
}

/// The bare words of a statement, upper-cased, in order.
fn sql_words(statement: &str) -> Vec<String> {
    let chars: Vec<char> = statement.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut i = 0;
    let end_word = |word: &mut String, words: &mut Vec<String>| {
        if !word.is_empty() {
            words.push(std::mem::take(word).to_ascii_uppercase());
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let skip_to = |from: usize, close: &str| -> usize {
            let rest: String = chars[from..].iter().collect();
            rest.find(close)
                .map(|at| from + rest[..at].chars().count() + close.chars().count())
                .unwrap_or(chars.len())
        };
        i = match (c, next) {
            ('-', Some('-')) => skip_to(i + 2, "\n"),
            ('/', Some('*')) => skip_to(i + 2, "*/"),
            ('\'', _) => skip_to(i + 1, "'"),
            ('"', _) => skip_to(i + 1, "\""),
            ('`', _) => skip_to(i + 1, "`"),
            ('[', _) => skip_to(i + 1, "]"),
            (c, _) if c.is_ascii_alphanumeric() || c == '_' => {
                word.push(c);
                i + 1
            }
            _ => i + 1,
        };
        if !(c.is_ascii_alphanumeric() || c == '_') {
            end_word(&mut word, &mut words);
        }
    }
    end_word(&mut word, &mut words);
    words
}

/// A table whose schema resolves conflicts by REPLACE, if any.
fn replacing_table(conn: &rusqlite::Connection) -> rusqlite::Result<Option<String>> {
    let mut stmt = conn
        .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL")?;
    let tables = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for table in tables {
        let (name, sql) = table?;
        let words: Vec<String> = sql
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .filter(|w| !w.is_empty())
            .map(|w| w.to_ascii_uppercase())
            .collect();
        if words
            .windows(2)
            .any(|w| w[0] == "CONFLICT" && w[1] == "REPLACE")
        {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// The doctor usually runs as root: a write may create `-wal`, `-shm` or
/// `-journal` files owned by root that the service's own user can then not
/// open. Give them the database file's owner — through the descriptor that
/// was checked, and only for a regular file with one link (a hard link
/// planted there would hand another file to that owner).
fn match_sidecar_owners(path: &std::path::Path) {
    let Ok((dir, db_name)) = safe_fs::open_parent(path) else {
        return;
    };
    let Ok(db) = safe_fs::lstat_at(&dir, &db_name) else {
        return;
    };
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = db_name.clone();
        name.push(suffix);
        let Ok(fd) = safe_fs::open_at(&dir, &name, nix::fcntl::OFlag::O_RDONLY) else {
            continue;
        };
        let Ok(stat) = safe_fs::stat_fd(&fd) else {
            continue;
        };
        if stat.st_uid == db.st_uid && stat.st_gid == db.st_gid {
            continue;
        }
        let shown = format!("{}{suffix}", path.display());
        if safe_fs::kind(&stat) != nix::sys::stat::SFlag::S_IFREG || stat.st_nlink != 1 {
            tracing::warn!(
                "{shown} is not a regular file with one link; its owner is left as it is"
            );
            continue;
        }
        let owner = (
            Some(nix::unistd::Uid::from_raw(db.st_uid)),
            Some(nix::unistd::Gid::from_raw(db.st_gid)),
        );
        if let Err(e) = nix::unistd::fchown(&fd, owner.0, owner.1) {
            tracing::warn!(
                "could not give {shown} the owner of {}: {e}",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{match_sidecar_owners, run};
    use crate::facts::sqlite::Value;

    /// Rows changed by triggers, cascades and REPLACE count against max-rows.
    #[test]
    fn indirect_changes_count_against_max_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = std::fs::canonicalize(dir.path()).unwrap().join("t.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT UNIQUE);
             INSERT INTO t VALUES (1, 'a', 'x'), (2, 'b', 'y');
             CREATE TABLE log(n);
             CREATE TRIGGER fan AFTER UPDATE ON t BEGIN INSERT INTO log SELECT 1 FROM t; INSERT INTO log SELECT 2 FROM t; END;",
        )
        .unwrap();
        let count = |table: &str| {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
        };
        let by_trigger = run(
            &db,
            "UPDATE t SET u = 'c' WHERE id = 1",
            &[],
            1,
            test_bounds(),
        )
        .unwrap();
        assert_eq!(
            by_trigger.outcome,
            crate::plan::ActionOutcome::Failed,
            "{}",
            by_trigger.detail
        );
        assert_eq!(count("log"), 0, "rolled back");
        assert_eq!(
            run(&db, "DELETE FROM log", &[], 1, test_bounds())
                .unwrap()
                .outcome,
            crate::plan::ActionOutcome::Skipped
        );
        // A schema that replaces on conflict makes a plain INSERT delete rows uncounted.
        conn.execute_batch(
            "CREATE TABLE r(id INTEGER PRIMARY KEY, u TEXT UNIQUE ON CONFLICT REPLACE)",
        )
        .unwrap();
        let by_schema = run(
            &db,
            "INSERT INTO t VALUES (?1, 'z', 'z')",
            &[Value::Integer(9)],
            1,
            test_bounds(),
        )
        .unwrap();
        assert_eq!(
            by_schema.outcome,
            crate::plan::ActionOutcome::Refused,
            "{}",
            by_schema.detail
        );
        assert!(by_schema.detail.contains("table r"), "{}", by_schema.detail);
    }

    fn test_bounds() -> crate::facts::sqlite::QueryBounds {
        crate::facts::sqlite::QueryBounds {
            deadline: std::time::Instant::now() + std::time::Duration::from_secs(5),
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_runaway_or_oversized_write_is_stopped_and_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = std::fs::canonicalize(dir.path()).unwrap().join("t.db");
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch(
                "CREATE TABLE t(id INTEGER PRIMARY KEY, v); INSERT INTO t VALUES (1, 'a');",
            )
            .unwrap();
        let endless = "DELETE FROM t WHERE id IN (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c)";
        let short = crate::facts::sqlite::QueryBounds {
            deadline: std::time::Instant::now() + std::time::Duration::from_millis(300),
            max_bytes: 1 << 20,
        };
        let err = run(&db, endless, &[], 1, short).expect_err("interrupted");
        assert!(err.to_string().contains("interrupted"), "{err}");
        let big = run(
            &db,
            "INSERT INTO t VALUES (2, zeroblob(100000000))",
            &[],
            1,
            test_bounds(),
        )
        .expect_err("too big");
        assert!(err_is_too_big(&big), "{big}");
        let rows: i64 = rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1, "nothing changed");
    }

    fn err_is_too_big(e: &crate::facts::sqlite::SqlError) -> bool {
        matches!(e, crate::facts::sqlite::SqlError::ValueTooBig)
    }

    #[test]
    fn or_replace_is_spotted_outside_string_literals() {
        assert!(super::or_replace("INSERT OR REPLACE INTO t VALUES (1)"));
        assert!(super::or_replace("update  or\nreplace t set x = 1"));
        assert!(!super::or_replace(
            "UPDATE t SET x = replace(x, 'a', 'b') WHERE y = 'or replace'"
        ));
        // A comment or quoted name cannot hide it (nor fake one).
        assert!(super::or_replace(
            "INSERT /*'*/ OR REPLACE INTO t VALUES (9, 'x') --'"
        ));
        assert!(super::or_replace("INSERT OR/**/REPLACE INTO t VALUES (1)"));
        assert!(!super::or_replace(
            "UPDATE \"or replace\" SET x = 1 -- or replace"
        ));
    }
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sidecars_take_the_database_owner() {
        if !nix::unistd::geteuid().is_root() {
            return; // only root can create files for another owner
        }
        let dir = tempfile::tempdir().unwrap();
        let db = std::fs::canonicalize(dir.path()).unwrap().join("jobs.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        std::os::unix::fs::chown(&db, Some(65534), Some(65534)).unwrap();
        let wal = db.with_file_name("jobs.db-wal");
        assert_eq!(
            std::fs::metadata(&wal).unwrap().uid(),
            0,
            "root's write made a root-owned WAL"
        );
        match_sidecar_owners(&db);
        assert_eq!(std::fs::metadata(&wal).unwrap().uid(), 65534);
        assert_eq!(
            std::fs::metadata(db.with_file_name("jobs.db-shm"))
                .unwrap()
                .uid(),
            65534
        );
        drop(conn);
    }

    #[test]
    fn a_hard_linked_sidecar_keeps_its_owner() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let db = root.join("jobs.db");
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t(x);")
            .unwrap();
        std::os::unix::fs::chown(&db, Some(65534), Some(65534)).unwrap();
        // A root-owned file elsewhere, linked in as the (unused) WAL name.
        let victim = root.join("victim");
        std::fs::write(&victim, "root's").unwrap();
        std::fs::hard_link(&victim, root.join("jobs.db-wal")).unwrap();
        match_sidecar_owners(&db);
        assert_eq!(
            std::fs::metadata(&victim).unwrap().uid(),
            0,
            "the linked file was not chowned"
        );
    }
}
