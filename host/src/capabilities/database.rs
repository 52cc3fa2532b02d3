//! `database` (0.3.0): read-only queries against a database label of any
//! kind the policy names (a SQLite file or a PostgreSQL connection), and
//! the label's kind for the plugin's dialect. Grant: `sqlite` (the labels
//! it lists, whatever their kind).

use super::CapabilityContext;
use crate::facts::postgres::{self, PgError};
use crate::facts::sqlite::QueryBounds;
use crate::policy::Database;
use crate::runtime::bindings::doctor::plugin::database::{DbKind, Host};
use crate::runtime::bindings::doctor::plugin::sqlite::Rows;
use crate::runtime::bindings::doctor::plugin::types::{Error, SqlValue};

impl CapabilityContext {
    fn database_kind(&mut self, label: String) -> Result<DbKind, Error> {
        self.grants.sqlite(&label)?;
        Ok(match self.defined(&label)? {
            Database::Sqlite { .. } => DbKind::Sqlite,
            Database::Postgres(_) => DbKind::Postgres,
        })
    }

    fn database_query(
        &mut self,
        label: String,
        sql: String,
        params: Vec<SqlValue>,
    ) -> Result<Rows, Error> {
        self.grants.sqlite(&label)?;
        let Database::Postgres(target) = self.defined(&label)?.clone() else {
            return self.sqlite_query(label, sql, params);
        };
        let bounds = QueryBounds {
            deadline: self.deadline,
            max_bytes: self.facts.policy.doctor.sql_result_max,
        };
        let params: Vec<_> = params.into_iter().map(super::sqlite::from_wit).collect();
        if !self.pg_sessions.contains_key(&label) {
            let session =
                postgres::connect(&target, self.deadline).map_err(|e| pg_error(&label, e))?;
            self.pg_sessions.insert(label.clone(), session);
        }
        let session = self
            .pg_sessions
            .get_mut(&label)
            .ok_or_else(|| Error::Io(format!("database {label:?}: the connection was lost")))?;
        match session.query(&sql, &params, bounds) {
            Ok(rows) => Ok(super::sqlite::rows_to_wit(rows)),
            Err(e) => {
                // After a cancel or a server error the session's state is
                // unknown: the next query connects again.
                if !matches!(e, PgError::Refused(_)) {
                    self.pg_sessions.remove(&label);
                }
                Err(pg_error(&label, e))
            }
        }
    }

    /// The policy's database for `label`, or not-found naming it.
    pub(super) fn defined(&self, label: &str) -> Result<&Database, Error> {
        self.facts.policy.database(label).ok_or_else(|| {
            Error::NotFound(format!(
                "database label {label:?} is not defined in the policy"
            ))
        })
    }
}

pub(super) fn pg_error(label: &str, e: PgError) -> Error {
    let text = format!("database {label:?}: {e}");
    match e {
        PgError::Refused(_) => Error::Denied(text),
        PgError::Invalid(_) => Error::Invalid(text),
        PgError::Connect(_) | PgError::Server(_) => Error::Io(text),
        PgError::Deadline | PgError::TooManyRows(_) | PgError::TooManyBytes(_) => {
            Error::Limit(text)
        }
    }
}

impl Host for CapabilityContext {
    fn kind(&mut self, label: String) -> wasmtime::Result<Result<DbKind, Error>> {
        self.answer("database.kind", (&label,), |s| {
            s.database_kind(label.clone())
        })
    }

    fn query(
        &mut self,
        label: String,
        sql: String,
        params: Vec<SqlValue>,
    ) -> wasmtime::Result<Result<Rows, Error>> {
        self.answer("database.query", (&label, &sql, &params), |s| {
            s.database_query(label.clone(), sql.clone(), params.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::capabilities::{denial, test_context};
    use crate::policy::Grants;
    use crate::runtime::bindings::doctor::plugin::database::Host;

    #[test]
    fn a_label_not_granted_is_denied_by_name_for_kind_and_query() {
        let mut ctx = test_context(Grants {
            sqlite: vec!["jobs".into()],
            ..Default::default()
        });
        let why = denial(ctx.kind("payroll".into()));
        assert!(why.contains("sqlite") && why.contains("payroll"), "{why}");
        let why = denial(ctx.query("payroll".into(), "SELECT 1".into(), vec![]));
        assert!(why.contains("payroll"), "{why}");
    }
}
