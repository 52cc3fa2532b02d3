//! Where SQL differs by database kind, and the only place: placeholders
//! (`?N` or `$N`), null-safe equality (`IS` or `IS NOT DISTINCT FROM`),
//! the catalog (a table's columns and their types, its unique keys, the
//! tables there are), how names compare, how a table is named, and how
//! "now" is written into a column. The dialect is asked of the host once
//! per check ([`Db::open`]) and travels with the table in a [`Db`], so every
//! statement a plugin reads or proposes is rendered by it. The SQLite text
//! is exactly what the plugins wrote before PostgreSQL was supported.
//!
//! PostgreSQL receives its parameters as text typed by the server from
//! context, so a comparison or assignment against a column needs no cast;
//! only a value the server cannot compare as read does (an array or JSON
//! column, which the host returns as JSON text, is compared as `jsonb`).

use crate::{ident, integer, text};
use doctor_sdk::database::{self, DbKind, Rows};
use doctor_sdk::prelude::*;
use doctor_sdk::time::{iso8601_utc, now_value, TimeUnit};

/// The SQL a database label speaks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The label's dialect, as the host tells it.
    pub fn of(db: &str) -> Result<Dialect, Error> {
        Ok(match database::kind(db)? {
            DbKind::Sqlite => Dialect::Sqlite,
            DbKind::Postgres => Dialect::Postgres,
        })
    }

    /// The `n`th parameter's placeholder (from 1).
    pub fn mark(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// `count` placeholders from the `first`th, for an `IN (...)` list.
    pub fn marks(self, first: usize, count: usize) -> String {
        let marks: Vec<String> = (first..first + count).map(|n| self.mark(n)).collect();
        marks.join(", ")
    }

    /// A comparison operator of a compare-and-swap: `IS` (null-safe) or `=`.
    pub fn op(self, op: &'static str) -> &'static str {
        match (self, op) {
            (Dialect::Postgres, "IS") => "IS NOT DISTINCT FROM",
            _ => op,
        }
    }

    /// A configured table name in a statement. On PostgreSQL `schema.table`
    /// names a table in a schema (each part quoted, so mixed case works);
    /// SQLite keeps the whole name one identifier, as it always did.
    pub fn table(self, name: &str) -> String {
        match (self, name.split_once('.')) {
            (Dialect::Postgres, Some((schema, table))) => {
                format!("{}.{}", ident(schema), ident(table))
            }
            _ => ident(name),
        }
    }

    /// Do two column names name the same column? SQLite ignores ASCII
    /// case; PostgreSQL's quoted names (as every statement here quotes
    /// them) are exact.
    pub fn same_name(self, a: &str, b: &str) -> bool {
        match self {
            Dialect::Sqlite => a.eq_ignore_ascii_case(b),
            Dialect::Postgres => a == b,
        }
    }

    /// `(a, b) IN <rows>`: each row's values compared together. SQLite takes
    /// a list of row values only from a subquery, so it lists them as VALUES.
    /// PostgreSQL compares a list of row constructors with every row in
    /// turn (seconds at 10,000 rows) but hashes a VALUES list; a VALUES
    /// column takes its type from its values, so it is used only when
    /// `typed` (each value cast to its column's type, see [`Db::typed`]).
    pub fn rows_in(self, whats: &str, tuples: &[String], typed: bool) -> String {
        match (self, typed) {
            (Dialect::Sqlite, _) | (Dialect::Postgres, true) => {
                format!("({whats}) IN (VALUES {})", tuples.join(", "))
            }
            (Dialect::Postgres, false) => format!("({whats}) IN ({})", tuples.join(", ")),
        }
    }

    fn columns_sql(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SELECT name FROM pragma_table_info(?1)",
            Dialect::Postgres => "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        }
    }

    fn tables_sql(self) -> &'static str {
        match self {
            Dialect::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name"
            }
            // The tables doctor's user may read, named as a policy would
            // name them (schema-qualified outside the current schema).
            Dialect::Postgres => "SELECT CASE WHEN n.nspname = current_schema() THEN c.relname::text ELSE n.nspname || '.' || c.relname END FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' AND has_table_privilege(c.oid, 'SELECT') ORDER BY 1",
        }
    }
}

/// PostgreSQL: the columns that are alone the key of a table (its primary
/// key, or a unique index of exactly that column, neither partial nor on an
/// expression).
const PG_UNIQUE: &str = "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass($1) AND (i.indisprimary OR i.indisunique) AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL";

/// A column of the table, and its type as PostgreSQL's `format_type`
/// writes it (empty on SQLite, whose statements never need it).
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: String,
}

/// A column's value written as "now": SQL, or a parameter.
#[derive(Debug)]
pub enum Now {
    Sql(String),
    Value(SqlValue),
}

/// A policy's table in its database: the label, the dialect, and the
/// table's columns as the catalog told them. Every statement on the table
/// is rendered through it.
pub struct Db {
    pub label: String,
    pub table: String,
    pub dialect: Dialect,
    pub columns: Vec<Column>,
}

impl Db {
    /// The table's columns, read in the label's `dialect` (see
    /// [`Dialect::of`]): a missing table is an error naming the tables there are.
    pub fn open(label: &str, table: &str, dialect: Dialect) -> Result<Db, Error> {
        let mut db = Db::new(label, table, dialect, Vec::new());
        db.columns = db.read_columns()?;
        Ok(db)
    }

    /// A table whose columns are already known (tests, or a caller that read them).
    pub fn new(label: &str, table: &str, dialect: Dialect, columns: Vec<Column>) -> Db {
        Db {
            label: label.to_string(),
            table: table.to_string(),
            dialect,
            columns,
        }
    }

    /// A read-only query, in this database's dialect.
    pub fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Rows, Error> {
        database::query(&self.label, sql, params)
    }

    /// The table's name as statements write it.
    pub fn table_sql(&self) -> String {
        self.dialect.table(&self.table)
    }

    /// The placeholder of the `n`th parameter.
    pub fn mark(&self, n: usize) -> String {
        self.dialect.mark(n)
    }

    fn read_columns(&self) -> Result<Vec<Column>, Error> {
        let d = self.dialect;
        // SQLite's pragma takes the name as written; to_regclass, the quoted form.
        let name = match d {
            Dialect::Sqlite => self.table.clone(),
            Dialect::Postgres => self.table_sql(),
        };
        let rows = self.query(d.columns_sql(), &[SqlValue::Text(name)])?;
        let columns: Vec<Column> = rows
            .rows
            .iter()
            .filter_map(|r| {
                let ty = r.get(1).and_then(text).unwrap_or_default();
                Some(Column {
                    name: text(r.first()?)?,
                    ty,
                })
            })
            .collect();
        if columns.is_empty() {
            return Err(self.no_such_table()?);
        }
        Ok(columns)
    }

    fn no_such_table(&self) -> Result<Error, Error> {
        let tables = self.query(self.dialect.tables_sql(), &[])?;
        let names: Vec<String> = tables
            .rows
            .iter()
            .filter_map(|r| text(r.first()?))
            .collect();
        Ok(Error::Invalid(format!(
            "config: table = {:?}: database {:?} has no such table (tables: {})",
            self.table,
            self.label,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )))
    }

    /// The column's name as the table spells it, if the table has it.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns
            .iter()
            .find(|c| self.dialect.same_name(&c.name, name))
    }

    /// The table's column names, for an error that lists them.
    pub fn column_names(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        names.join(", ")
    }

    /// Every configured column must exist: `(config key, column name)`.
    pub fn require_columns(&self, wanted: &[(&str, &str)]) -> Result<(), Error> {
        for (key, column) in wanted {
            if self.column(column).is_none() {
                return Err(Error::Invalid(format!(
                    "config: {key} = {column:?}: table {:?} in database {:?} has no such column (columns: {})",
                    self.table,
                    self.label,
                    self.column_names()
                )));
            }
        }
        Ok(())
    }

    /// Is `column` alone the table's key (its primary key, or a UNIQUE index of
    /// that one column)? Only then is `WHERE column IS ?` a single-row
    /// compare-and-swap whatever the data holds.
    pub fn is_unique(&self, column: &str) -> Result<bool, Error> {
        let d = self.dialect;
        if d == Dialect::Postgres {
            let keys = self.query(PG_UNIQUE, &[SqlValue::Text(self.table_sql())])?;
            let named = |r: &Vec<SqlValue>| r.first().and_then(text);
            return Ok(keys.rows.iter().filter_map(named).any(|n| n == column));
        }
        let t = SqlValue::Text(self.table.clone());
        let pk = self.query(
            "SELECT name FROM pragma_table_info(?1) WHERE pk > 0",
            std::slice::from_ref(&t),
        )?;
        if pk.rows.len() == 1
            && pk.rows[0]
                .first()
                .and_then(text)
                .is_some_and(|n| d.same_name(&n, column))
        {
            return Ok(true);
        }
        let unique = self.query(
            "SELECT i.name FROM pragma_index_list(?1) AS i WHERE i.\"unique\" = 1 AND (SELECT count(*) FROM pragma_index_info(i.name)) = 1 \
             AND (SELECT name FROM pragma_index_info(i.name)) = ?2 COLLATE NOCASE",
            &[t, SqlValue::Text(column.into())],
        )?;
        Ok(!unique.rows.is_empty())
    }

    /// The type of the column a compare-and-swap names (`"col"`), on PostgreSQL.
    fn type_of(&self, what: &str) -> Option<&str> {
        let pg = self.dialect == Dialect::Postgres;
        let found = self.columns.iter().find(|c| pg && ident(&c.name) == what);
        found.map(|c| c.ty.as_str())
    }

    /// An array or JSON column comes back as JSON text, which the server
    /// cannot compare with the column as it stands: both sides as `jsonb`.
    fn as_jsonb(&self, what: &str) -> bool {
        self.type_of(what)
            .is_some_and(|t| t.ends_with("[]") || t == "json" || t == "jsonb")
    }

    /// The left side of a comparison on `what` (a quoted column or an expression).
    pub fn lhs(&self, what: &str) -> String {
        match self.as_jsonb(what) {
            true => format!("to_jsonb({what})"),
            false => what.to_string(),
        }
    }

    /// The placeholder a value compared with `what` takes.
    pub fn rhs(&self, what: &str, mark: String) -> String {
        match self.as_jsonb(what) {
            true => format!("{mark}::jsonb"),
            false => mark,
        }
    }

    /// Can a value compared with `what` be cast to its type? (On SQLite
    /// nothing is cast; on PostgreSQL `what` must be a column of known type.)
    pub fn can_type(&self, what: &str) -> bool {
        self.dialect == Dialect::Sqlite || self.type_of(what).is_some()
    }

    /// The placeholder for `what`, cast to its column's type on PostgreSQL
    /// (`$5::bigint`), for a VALUES list whose columns have no other type.
    pub fn typed(&self, what: &str, mark: String) -> String {
        match self.type_of(what) {
            Some(ty) if !self.as_jsonb(what) => format!("{mark}::{ty}"),
            _ => self.rhs(what, mark),
        }
    }

    /// `what op mark` in this dialect (`"worker" IS NOT DISTINCT FROM $4`).
    pub fn compare(&self, what: &str, op: &'static str, mark: String) -> String {
        let (lhs, op) = (self.lhs(what), self.dialect.op(op));
        format!("{lhs} {op} {}", self.rhs(what, mark))
    }

    /// "Now" written into `column` as the application reads it back: a
    /// PostgreSQL date or time column gets the server's `now()` in its own
    /// type (a `timestamp without time zone` holds UTC, as the queue
    /// libraries write it); any other column the number or text of `unit`,
    /// SQLite's ISO-8601 text as SQLite's own `strftime` writes it.
    pub fn now(&self, column: &str, unit: TimeUnit, now_ms: i64) -> Now {
        if let Some(sql) = self.now_sql(column) {
            return Now::Sql(sql.into());
        }
        // SQLite's ISO-8601 text is SQLite's own clock, as it always was.
        match (now_value(unit, now_ms), self.dialect) {
            (Some(v), _) => Now::Value(v),
            (None, Dialect::Sqlite) => Now::Sql("strftime('%Y-%m-%d %H:%M:%S', 'now')".into()),
            (None, Dialect::Postgres) => Now::Value(SqlValue::Text(iso8601_utc(now_ms))),
        }
    }

    /// PostgreSQL's SQL for now in a date or time column (None: not one).
    pub fn now_sql(&self, column: &str) -> Option<&'static str> {
        let pg = self.dialect == Dialect::Postgres;
        let ty = self.column(column).filter(|_| pg)?.ty.as_str();
        if ty.starts_with("timestamp") && ty.ends_with("without time zone") {
            Some("(now() AT TIME ZONE 'UTC')")
        } else if ty.starts_with("timestamp") || ty == "date" {
            Some("now()")
        } else {
            None
        }
    }

    /// How many rows the table holds in each status, in the status column's order.
    pub fn count_by(&self, status_column: &str) -> Result<Vec<(String, i64)>, Error> {
        let (s, t) = (ident(status_column), self.table_sql());
        let counts = self.query(
            &format!("SELECT {s}, count(*) FROM {t} GROUP BY {s} ORDER BY {s}"),
            &[],
        )?;
        // A row the host returns short (an edited recording) is skipped, never a trap.
        Ok(counts
            .rows
            .iter()
            .filter_map(|r| Some((crate::shown(r.first()?), integer(r.get(1)?).unwrap_or(0))))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg() -> Db {
        let col = |name: &str, ty: &str| Column {
            name: name.into(),
            ty: ty.into(),
        };
        Db::new(
            "jobs",
            "app.Jobs",
            Dialect::Postgres,
            vec![
                col("id", "bigint"),
                col("attempted_by", "text[]"),
                col("result", "jsonb"),
                col("finished_at", "timestamp(6) without time zone"),
                col("heartbeat_at", "timestamp with time zone"),
                col("run_on", "date"),
                col("beat", "bigint"),
                col("note", "text"),
            ],
        )
    }

    #[test]
    fn placeholders_equality_and_tables_differ_by_dialect() {
        let (s, p) = (Dialect::Sqlite, Dialect::Postgres);
        assert_eq!(
            (s.marks(1, 3), p.marks(2, 2)),
            ("?1, ?2, ?3".into(), "$2, $3".into())
        );
        assert_eq!(
            (s.op("IS"), p.op("IS"), p.op("=")),
            ("IS", "IS NOT DISTINCT FROM", "=")
        );
        assert_eq!(s.table("main.jobs"), "\"main.jobs\"");
        assert_eq!(p.table("app.Jobs"), "\"app\".\"Jobs\"");
        assert!(s.same_name("Status", "status") && !p.same_name("Status", "status"));
    }

    #[test]
    fn arrays_and_json_are_compared_as_jsonb_on_postgres() {
        let db = pg();
        assert_eq!(
            db.compare("\"attempted_by\"", "IS", "$3".into()),
            "to_jsonb(\"attempted_by\") IS NOT DISTINCT FROM $3::jsonb"
        );
        assert_eq!(
            db.compare("\"heartbeat_at\"", "IS", "$4".into()),
            "\"heartbeat_at\" IS NOT DISTINCT FROM $4"
        );
        assert_eq!(db.compare("(pid)", "=", "$5".into()), "(pid) = $5");
        let sqlite = Db::new("jobs", "jobs", Dialect::Sqlite, db.columns.clone());
        assert_eq!(
            sqlite.compare("\"attempted_by\"", "IS", "?3".into()),
            "\"attempted_by\" IS ?3"
        );
    }

    #[test]
    fn now_is_written_in_the_columns_own_type() {
        let (db, ms) = (pg(), 1_700_000_000_000);
        let now = |db: &Db, column, unit| format!("{:?}", db.now(column, unit, ms));
        let sql = |s: &str| format!("{:?}", Now::Sql(s.into()));
        assert_eq!(
            now(&db, "finished_at", TimeUnit::Iso8601),
            sql("(now() AT TIME ZONE 'UTC')")
        );
        assert_eq!(now(&db, "heartbeat_at", TimeUnit::Seconds), sql("now()"));
        assert_eq!(now(&db, "run_on", TimeUnit::Auto), sql("now()"));
        assert_eq!(
            now(&db, "beat", TimeUnit::Millis),
            format!("{:?}", Now::Value(SqlValue::Integer(ms)))
        );
        assert_eq!(
            now(&db, "note", TimeUnit::Iso8601),
            format!(
                "{:?}",
                Now::Value(SqlValue::Text("2023-11-14 22:13:20".into()))
            )
        );
        let sqlite = Db::new("jobs", "jobs", Dialect::Sqlite, Vec::new());
        assert_eq!(
            now(&sqlite, "note", TimeUnit::Iso8601),
            sql("strftime('%Y-%m-%d %H:%M:%S', 'now')")
        );
    }
}
