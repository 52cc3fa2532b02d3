//! `database` (0.3.0): read-only queries against a database label of any
//! kind the host supports, and the label's kind for the plugin's dialect.
//! Grant: `sqlite` (the labels it lists). Every label is a SQLite file
//! today; a query goes exactly where `sqlite.query` goes, bounds and all.

use super::CapabilityContext;
use crate::runtime::bindings::doctor::plugin::database::{DbKind, Host};
use crate::runtime::bindings::doctor::plugin::sqlite::Rows;
use crate::runtime::bindings::doctor::plugin::types::{Error, SqlValue};

impl CapabilityContext {
    fn database_kind(&mut self, label: String) -> Result<DbKind, Error> {
        self.grants.sqlite(&label)?;
        self.facts
            .policy
            .database_path(&label)
            .map(|_| DbKind::Sqlite)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "database label {label:?} is not defined in the policy"
                ))
            })
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
            s.sqlite_query(label.clone(), sql.clone(), params.clone())
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
