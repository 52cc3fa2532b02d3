//! `sqlite`: read-only queries against databases named by policy labels.

use super::files::file_stat;
use super::CapabilityContext;
use crate::facts::sqlite::{self as db, QueryBounds, SqlError, Value};
use crate::runtime::bindings::doctor::plugin::sqlite::{DbFile, Host, Rows};
use crate::runtime::bindings::doctor::plugin::types::{Error, SqlValue};
use std::path::PathBuf;

/// The live answers; the trait impl below records or replays them.
impl CapabilityContext {
    pub(super) fn sqlite_query(
        &mut self,
        label: String,
        sql: String,
        params: Vec<SqlValue>,
    ) -> Result<Rows, Error> {
        self.grants.sqlite(&label)?;
        let path = self.database(&label)?;
        let params: Vec<Value> = params.into_iter().map(from_wit).collect();
        let bounds = QueryBounds {
            deadline: self.deadline,
            max_bytes: self.facts.policy.doctor.sql_result_max,
        };
        let rows = db::query(&path, &sql, &params, bounds).map_err(|e| sql_error(&label, e))?;
        Ok(rows_to_wit(rows))
    }

    fn sqlite_file_info(&mut self, label: String) -> Result<DbFile, Error> {
        self.grants.sqlite(&label)?;
        let path = self.database(&label)?;
        // Ownership of what the label names, following nothing: a symlink
        // is reported as what it is, not as the file it points at.
        let stat_of = |p: &std::path::Path| {
            let (dir, name) = crate::safe_fs::open_parent(p).ok()?;
            crate::safe_fs::lstat_at(&dir, &name)
                .ok()
                .map(|s| file_stat(&s))
        };
        let file = stat_of(&path);
        let directory = path
            .parent()
            .filter(|d| d.parent().is_some())
            .and_then(stat_of);
        Ok(DbFile { file, directory })
    }

    fn sqlite_location(&mut self, label: String) -> Result<String, Error> {
        self.grants.sqlite(&label)?;
        Ok(self.database(&label)?.display().to_string())
    }
}

impl Host for CapabilityContext {
    fn query(
        &mut self,
        label: String,
        sql: String,
        params: Vec<SqlValue>,
    ) -> wasmtime::Result<Result<Rows, Error>> {
        self.answer("sqlite.query", (&label, &sql, &params), |s| {
            s.sqlite_query(label.clone(), sql.clone(), params.clone())
        })
    }

    fn file_info(&mut self, label: String) -> wasmtime::Result<Result<DbFile, Error>> {
        self.answer("sqlite.file-info", (&label,), |s| {
            s.sqlite_file_info(label.clone())
        })
    }

    fn location(&mut self, label: String) -> wasmtime::Result<Result<String, Error>> {
        self.answer("sqlite.location", (&label,), |s| {
            s.sqlite_location(label.clone())
        })
    }
}

impl CapabilityContext {
    /// The SQLite file of `label`; a PostgreSQL label is not one (the
    /// `sqlite` interface, and the contracts before 0.3.0, serve SQLite only).
    fn database(&self, label: &str) -> Result<PathBuf, Error> {
        match self.defined(label)?.sqlite_path() {
            Some(path) => Ok(path.to_path_buf()),
            None => Err(Error::Invalid(format!(
                "database {label:?} is PostgreSQL: the sqlite interface serves SQLite files only; query it through the database interface (contract 0.3.0)"
            ))),
        }
    }
}

pub(super) fn rows_to_wit(rows: db::Rows) -> Rows {
    Rows {
        columns: rows.columns,
        rows: rows
            .rows
            .into_iter()
            .map(|r| r.into_iter().map(to_wit).collect())
            .collect(),
    }
}

fn sql_error(label: &str, e: SqlError) -> Error {
    let text = format!("database {label:?}: {e}");
    match e {
        SqlError::Missing(_) => Error::NotFound(text),
        SqlError::Invalid(_) => Error::Invalid(text),
        SqlError::Locked(_) | SqlError::Io(_) | SqlError::LeftByCrashedWriter(_) => Error::Io(text),
        SqlError::TooManyRows(_)
        | SqlError::TooManyBytes(_)
        | SqlError::ValueTooBig
        | SqlError::Interrupted => Error::Limit(text),
        SqlError::Refused(_) => Error::Denied(text),
    }
}

pub(crate) fn from_wit(v: SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => Value::Integer(i),
        SqlValue::Real(f) => Value::Real(f),
        SqlValue::Text(t) => Value::Text(t),
        SqlValue::Blob(b) => Value::Blob(b),
    }
}

fn to_wit(v: Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Integer(i) => SqlValue::Integer(i),
        Value::Real(f) => SqlValue::Real(f),
        Value::Text(t) => SqlValue::Text(t),
        Value::Blob(b) => SqlValue::Blob(b),
    }
}

#[cfg(test)]
mod tests {
    use crate::capabilities::{denial, test_context};
    use crate::policy::Grants;
    use crate::runtime::bindings::doctor::plugin::sqlite::Host;

    /// Granted reads against real databases: tests/sqlite_chunk_reset.rs,
    /// tests/queue_tables.rs and tests/hostile_attacks.rs.
    #[test]
    fn a_label_not_granted_is_denied_by_name() {
        let why = denial(
            test_context(Grants {
                sqlite: vec!["jobs".into()],
                ..Default::default()
            })
            .query("payroll".into(), "SELECT 1".into(), vec![]),
        );
        assert!(
            why.contains("sqlite") && why.contains("payroll"),
            "names the grant and the label: {why}"
        );
    }
}
