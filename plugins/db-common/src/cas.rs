//! Compare-and-swap writes. A fix changes a row only if it is still exactly
//! as the check saw it (its status, its worker, its times, the identity the
//! verdict rests on), so a row that a live worker took in the meantime is
//! never clobbered: the host runs the statement with `max-rows`, and 0 rows
//! changed is `skipped`. Both database plugins build one [`Update`] per row
//! here; [`merge`] then writes many of them as a few set-based statements
//! that change exactly the rows the per-row statements would.

use crate::{ident, Db, Dialect};
use doctor_sdk::prelude::*;
use std::collections::BTreeMap;

/// One row's UPDATE: its SET list, its key, and the conditions on the row's
/// before-state (each `what = ?` or `what IS ?` with the value as read),
/// rendered in the table's dialect when built (`$N`, `IS NOT DISTINCT FROM`
/// on PostgreSQL).
#[derive(Default, Clone)]
pub struct Update {
    sets: Vec<(String, Option<SqlValue>)>,
    key: Option<(String, SqlValue)>,
    conds: Vec<(String, &'static str, SqlValue)>,
}

impl Update {
    /// `column = ?N`.
    pub fn set(&mut self, column: &str, value: SqlValue) -> &mut Self {
        self.sets.push((ident(column), Some(value)));
        self
    }

    /// A SET item written in SQL (`"worker" = NULL`, `"attempts" = COALESCE(...) + 1`).
    pub fn set_sql(&mut self, sql: String) -> &mut Self {
        self.sets.push((sql, None));
        self
    }

    /// The row's key (`what = ?N`), never NULL: what set-based writes list.
    pub fn key(&mut self, what: String, value: SqlValue) -> &mut Self {
        self.key = Some((what, value));
        self
    }

    /// Compare-and-swap: `what` (a quoted column or a parenthesised
    /// expression) `IS ?N` (PostgreSQL: `IS NOT DISTINCT FROM $N`), which
    /// also matches a NULL as read.
    pub fn unchanged(&mut self, what: String, value: SqlValue) -> &mut Self {
        self.conds.push((what, "IS", value));
        self
    }

    /// [`unchanged`](Self::unchanged) for each `(what, value)`.
    pub fn unchanged_each(&mut self, pairs: Vec<(String, SqlValue)>) -> &mut Self {
        for (what, value) in pairs {
            self.unchanged(what, value);
        }
        self
    }

    /// [`unchanged`](Self::unchanged) for each configured column (None: the table has none).
    pub fn unchanged_columns<const N: usize>(
        &mut self,
        columns: [(Option<&str>, &SqlValue); N],
    ) -> &mut Self {
        for (column, value) in columns {
            if let Some(column) = column {
                self.unchanged(ident(column), value.clone());
            }
        }
        self
    }

    /// `what = ?N`: for a status, which is never NULL.
    pub fn equals(&mut self, what: String, value: SqlValue) -> &mut Self {
        self.conds.push((what, "=", value));
        self
    }

    /// The statement on `db`'s table for this one row, and its parameters.
    pub fn build(self, db: &Db) -> (String, Vec<SqlValue>) {
        let mut params = Vec::new();
        let sets = self.set_list(db, &mut params);
        let conds: Vec<String> = self
            .key
            .iter()
            .map(|(what, v)| (what, "=", v))
            .chain(self.conds.iter().map(|(what, op, v)| (what, *op, v)))
            .map(|(what, op, v)| db.compare(what, op, bind(db, &mut params, v)))
            .collect();
        (update(db, &sets, &conds), params)
    }

    fn set_list(&self, db: &Db, params: &mut Vec<SqlValue>) -> String {
        let items: Vec<String> = self
            .sets
            .iter()
            .map(|(what, v)| match v {
                Some(v) => format!("{what} = {}", bind(db, params, v)),
                None => what.clone(),
            })
            .collect();
        items.join(", ")
    }

    /// What rows must share to be written by one statement: the same SET
    /// list and values, the same conditions, NULL in the same ones.
    /// (Written piece by piece: it is made for every row of a large incident.)
    fn shape(&self) -> String {
        let mut shape = String::new();
        for (what, value) in &self.sets {
            shape.push_str(what);
            shape.push('\u{1}');
            if let Some(value) = value {
                push_value(&mut shape, value);
            }
            shape.push('\u{2}');
        }
        for (what, op) in self.key.iter().map(|k| (&k.0, "key")) {
            shape.push_str(what);
            shape.push_str(op);
        }
        for (what, op, value) in &self.conds {
            shape.push('\u{2}');
            shape.push_str(what);
            shape.push_str(op);
            shape.push(if matches!(value, SqlValue::Null) {
                'N'
            } else {
                'V'
            });
        }
        shape
    }
}

/// A value into a shape, tagged with its type (text with its length, so no two values read alike).
fn push_value(shape: &mut String, value: &SqlValue) {
    use std::fmt::Write;
    let _ = match value {
        SqlValue::Null => write!(shape, "N"),
        SqlValue::Integer(i) => write!(shape, "I{i}"),
        SqlValue::Real(f) => write!(shape, "R{}", f.to_bits()),
        SqlValue::Text(t) => write!(shape, "T{}:{t}", t.len()),
        SqlValue::Blob(b) => write!(shape, "B{b:?}"),
    };
}

/// Two values as the null-safe comparison (`IS`, `IS NOT DISTINCT FROM`)
/// would compare what the check read: same type, same value.
fn same(a: &SqlValue, b: &SqlValue) -> bool {
    match (a, b) {
        (SqlValue::Null, SqlValue::Null) => true,
        (SqlValue::Integer(x), SqlValue::Integer(y)) => x == y,
        (SqlValue::Real(x), SqlValue::Real(y)) => x.to_bits() == y.to_bits(),
        (SqlValue::Text(x), SqlValue::Text(y)) => x == y,
        (SqlValue::Blob(x), SqlValue::Blob(y)) => x == y,
        _ => false,
    }
}

fn bind(db: &Db, params: &mut Vec<SqlValue>, value: &SqlValue) -> String {
    params.push(value.clone());
    db.mark(params.len())
}

fn update(db: &Db, sets: &str, conds: &[String]) -> String {
    format!(
        "UPDATE {} SET {sets} WHERE {}",
        db.table_sql(),
        conds.join(" AND ")
    )
}

/// The most a set-based statement and its parameters may weigh, under the
/// host's 64 KiB bound on one `sql-exec` (the estimate is from above).
pub const MAX_STATEMENT: usize = 62 << 10;
/// The host takes at most 64 actions per finding: statements beyond wait for the next run.
pub const MAX_BATCHES: usize = 64;

/// Rows written by one statement: which of the input rows (their indices),
/// the statement and its parameters.
pub struct Merged {
    pub rows: Vec<usize>,
    pub statement: String,
    pub params: Vec<SqlValue>,
}

impl Merged {
    /// The statement's text and parameters as the host counts them, from above.
    pub fn weight(&self) -> usize {
        self.statement.len() + self.params.iter().map(json_len).sum::<usize>()
    }
}

/// Per-row compare-and-swaps written as few set-based ones. Rows of one
/// shape (see `shape`) share a statement: a condition whose value is the
/// same in each is said once (`"worker" IS ?`), the keys are listed
/// (`"id" IN (...)`, for the index), and the conditions whose values differ
/// are compared per row (`("id", "started_at") IN (VALUES (?, ?), ...)`, on
/// PostgreSQL `IN (($1, $2), ...)`):
/// a row changes only if its key and its own before-state match together,
/// exactly as its own statement would have changed it. Rows without a key,
/// and groups of one, keep the one-row statement. Each statement stays
/// under [`MAX_STATEMENT`]; groups keep the order in which they first appear.
pub fn merge(rows: Vec<Update>, db: &Db) -> Vec<Merged> {
    let (mut groups, mut index) = (Vec::<Vec<usize>>::new(), BTreeMap::<String, usize>::new());
    for (i, u) in rows.iter().enumerate() {
        let shape = match u.key {
            Some(_) => u.shape(),
            None => format!("row {i}"),
        };
        match index.get(&shape) {
            Some(&g) => groups[g].push(i),
            None => {
                index.insert(shape, groups.len());
                groups.push(vec![i]);
            }
        }
    }
    let mut out = Vec::new();
    for members in groups {
        let first = &rows[members[0]];
        let varying: Vec<bool> = (0..first.conds.len())
            .map(|c| {
                !members
                    .iter()
                    .all(|i| same(&rows[*i].conds[c].2, &first.conds[c].2))
            })
            .collect();
        for part in parts(&rows, &members, &varying, db) {
            out.push(match part.len() {
                1 => {
                    let (statement, params) = rows[part[0]].clone().build(db);
                    Merged {
                        rows: part,
                        statement,
                        params,
                    }
                }
                _ => set_statement(&rows, part, &varying, db),
            });
        }
    }
    out
}

/// `members` cut into statements of at most [`MAX_STATEMENT`] bytes (text
/// and parameters as the host counts them), estimated from above: the
/// fixed text from the first row's one-row statement, then each row's marks
/// (`?N, ` in the key list, `(?N, ?M), ` when values are compared, with a
/// cast where the dialect compares one) and values.
fn parts(rows: &[Update], members: &[usize], varying: &[bool], db: &Db) -> Vec<Vec<usize>> {
    let first = &rows[members[0]];
    let (statement, params) = first.clone().build(db);
    let (fixed, shared) = (
        statement.len()
            + params.iter().map(json_len).sum::<usize>()
            + first.conds.iter().map(|c| c.0.len() + 2).sum::<usize>()
            + 64,
        params.len(),
    );
    // What the marks' casts add: each compared value's, and the key's again
    // in the key list (as `set_statement` writes them).
    let typed = compared(first, varying).all(|(what, _)| db.can_type(what));
    let cast = |what: &str| match typed {
        true => db.typed(what, String::new()).len(),
        false => db.rhs(what, String::new()).len(),
    };
    let casts: usize = compared(first, varying).map(|(what, _)| cast(what)).sum();
    let key_cast = compared(first, varying)
        .next()
        .map_or(0, |(what, _)| cast(what));
    let mark = |n: usize| 3 + digits(n as u64);
    let differing = varying.iter().filter(|v| **v).count();
    let (mut out, mut size, mut next) = (Vec::<Vec<usize>>::new(), usize::MAX, 0);
    for &i in members {
        let u = &rows[i];
        let values: Vec<&SqlValue> = compared(u, varying).map(|(_, v)| v).collect();
        let marks = |from: usize| match differing {
            0 => mark(from) + key_cast,
            _ => {
                mark(from)
                    + key_cast
                    + 4
                    + casts
                    + (from..from + values.len()).map(mark).sum::<usize>()
            }
        };
        let cost = |from| marks(from) + values.iter().map(|v| json_len(v)).sum::<usize>();
        if size.saturating_add(cost(next)) > MAX_STATEMENT {
            out.push(Vec::new());
            (size, next) = (fixed, shared + 1);
        }
        size += cost(next);
        next += values.len();
        out.last_mut().expect("a part is open").push(i);
    }
    out
}

/// A row's key, then its values of the conditions that differ from row to row.
fn compared<'a>(
    u: &'a Update,
    varying: &'a [bool],
) -> impl Iterator<Item = (&'a String, &'a SqlValue)> {
    let key = u.key.as_ref().expect("merged rows have keys");
    let conds = u.conds.iter().zip(varying).filter(|(_, v)| **v);
    std::iter::once((&key.0, &key.1)).chain(conds.map(|((what, _, v), _)| (what, v)))
}

/// Rows of one shape as one statement (see [`merge`]).
fn set_statement(rows: &[Update], part: Vec<usize>, varying: &[bool], db: &Db) -> Merged {
    let first = &rows[part[0]];
    let mut params = Vec::new();
    let sets = first.set_list(db, &mut params);
    let mut conds: Vec<String> = first
        .conds
        .iter()
        .zip(varying)
        .filter(|(_, v)| !**v)
        .map(|((what, op, v), _)| db.compare(what, op, bind(db, &mut params, v)))
        .collect();
    let typed = compared(first, varying).all(|(what, _)| db.can_type(what));
    let (mut keys, mut tuples) = (Vec::new(), Vec::new());
    for &i in &part {
        let marks: Vec<String> = compared(&rows[i], varying)
            .map(|(what, v)| match typed {
                true => db.typed(what, bind(db, &mut params, v)),
                false => db.rhs(what, bind(db, &mut params, v)),
            })
            .collect();
        keys.push(marks[0].clone());
        tuples.push(format!("({})", marks.join(", ")));
    }
    let whats: Vec<String> = compared(first, varying)
        .map(|(what, _)| db.lhs(what))
        .collect();
    let hashed = typed && db.dialect == Dialect::Postgres;
    match (hashed, whats.len() > 1) {
        // PostgreSQL filters a key list row by row; the typed VALUES list
        // (keys and all) is hashed, so it alone says which rows.
        (true, true) => conds.push(db.dialect.rows_in(&whats.join(", "), &tuples, true)),
        (true, false) => conds.push(db.dialect.rows_in(&whats[0], &tuples, true)),
        (false, _) => {
            conds.push(format!("{} IN ({})", whats[0], keys.join(", ")));
            if whats.len() > 1 {
                conds.push(db.dialect.rows_in(&whats.join(", "), &tuples, typed));
            }
        }
    }
    Merged {
        rows: part,
        statement: update(db, &sets, &conds),
        params,
    }
}

/// A value's length as JSON, from above: what the host counts of a parameter.
fn json_len(v: &SqlValue) -> usize {
    match v {
        SqlValue::Null => 4,
        SqlValue::Integer(i) => usize::from(*i < 0) + digits(i.unsigned_abs()),
        SqlValue::Real(_) => 26,
        // `"` and `\\` escaped in two bytes, other control characters in up to six.
        SqlValue::Text(t) => {
            let escaped = |c: char| match c {
                '"' | '\\' => 2,
                c if c < ' ' => 6,
                c => c.len_utf8(),
            };
            2 + t.chars().map(escaped).sum::<usize>()
        }
        SqlValue::Blob(b) => 2 + 4 * b.len(),
    }
}

/// Decimal digits of `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dialect;
    use rusqlite::Connection;

    fn sqlite(table: &str) -> Db {
        Db::new("main", table, Dialect::Sqlite, Vec::new())
    }

    fn int(i: i64) -> SqlValue {
        SqlValue::Integer(i)
    }

    fn text(t: &str) -> SqlValue {
        SqlValue::Text(t.into())
    }

    #[test]
    fn parameters_are_numbered_in_the_order_they_are_bound() {
        let mut u = Update::default();
        u.set("status", text("pending"))
            .set_sql("\"worker\" = NULL".into());
        u.key(ident("id"), int(7))
            .equals(ident("status"), text("running"))
            .unchanged(ident("worker"), SqlValue::Null);
        let (sql, params) = u.build(&sqlite("chunks"));
        assert_eq!(sql, "UPDATE \"chunks\" SET \"status\" = ?1, \"worker\" = NULL WHERE \"id\" = ?2 AND \"status\" = ?3 AND \"worker\" IS ?4");
        assert_eq!(params.len(), 4);
    }

    /// A reset as the chunk plugin writes it, of the row `(id, worker, started)` as seen.
    fn reset(id: i64, worker: &SqlValue, started: &SqlValue) -> Update {
        let mut u = Update::default();
        u.set("status", text("pending"))
            .set_sql("\"worker\" = NULL".into())
            .key(ident("id"), int(id))
            .equals(ident("status"), text("running"))
            .unchanged(ident("worker"), worker.clone())
            .unchanged(ident("started"), started.clone());
        u
    }

    fn sql(v: &SqlValue) -> rusqlite::types::Value {
        use rusqlite::types::Value;
        match v {
            SqlValue::Null => Value::Null,
            SqlValue::Integer(i) => Value::Integer(*i),
            SqlValue::Real(f) => Value::Real(*f),
            SqlValue::Text(t) => Value::Text(t.clone()),
            SqlValue::Blob(b) => Value::Blob(b.clone()),
        }
    }

    fn run(c: &Connection, statement: &str, params: &[SqlValue]) -> usize {
        c.execute(
            statement,
            rusqlite::params_from_iter(params.iter().map(sql)),
        )
        .unwrap_or_else(|e| panic!("{e}: {statement}"))
    }

    fn table(c: &Connection) -> Vec<String> {
        let mut st = c
            .prepare("SELECT id, status, worker, started FROM t ORDER BY id")
            .unwrap();
        st.query_map([], |r| {
            Ok(format!(
                "{:?}",
                (
                    r.get::<_, rusqlite::types::Value>(0)?,
                    r.get::<_, rusqlite::types::Value>(1)?,
                    r.get::<_, rusqlite::types::Value>(2)?,
                    r.get::<_, rusqlite::types::Value>(3)?,
                )
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    /// Rows as the check saw them: owners of both types, NULL and set claim
    /// times; then, before the write, live workers take some rows (a new
    /// owner, a reused owner with a new claim time, a claim time cleared, a
    /// finished chunk). Per-row statements and merged ones leave the same table.
    #[test]
    fn merged_writes_change_exactly_the_rows_their_per_row_writes_would() {
        let owners = [text("4242"), int(4242), text("node-b:7"), SqlValue::Null];
        let seen: Vec<(i64, SqlValue, SqlValue)> = (1..=400)
            .map(|id| {
                let started = match id % 5 {
                    0 => SqlValue::Null,
                    1 => text(&format!("2026-01-01 00:00:{:02}", id % 60)),
                    _ => int(1_700_000_000 + id),
                };
                (id, owners[id as usize % owners.len()].clone(), started)
            })
            .collect();
        let setup = |c: &Connection| {
            c.execute_batch(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, status TEXT, worker, started)",
            )
            .unwrap();
            for (id, worker, started) in &seen {
                run(
                    c,
                    "INSERT INTO t VALUES (?1, 'running', ?2, ?3)",
                    &[int(*id), worker.clone(), started.clone()],
                );
            }
            c.execute_batch(
                "UPDATE t SET worker = 'live-1' WHERE id % 37 = 0;
                 UPDATE t SET started = 1800000000 WHERE id % 41 = 0;
                 UPDATE t SET started = NULL WHERE id % 43 = 0;
                 UPDATE t SET status = 'complete' WHERE id % 47 = 0;
                 INSERT INTO t VALUES (1000, 'running', '4242', 5);",
            )
            .unwrap();
        };
        let writes: Vec<Update> = seen.iter().map(|(id, w, s)| reset(*id, w, s)).collect();
        let (one_by_one, together) = (
            Connection::open_in_memory().unwrap(),
            Connection::open_in_memory().unwrap(),
        );
        setup(&one_by_one);
        setup(&together);
        let mut changed = 0;
        for u in writes.clone() {
            let (statement, params) = u.build(&sqlite("t"));
            changed += run(&one_by_one, &statement, &params);
        }
        let merged = merge(writes, &sqlite("t"));
        assert!(
            merged.len() <= 16,
            "4 owners × 3 shapes of claim time, not 400 statements: {}",
            merged.len()
        );
        let mut changed_together = 0;
        for m in &merged {
            assert!(m.weight() <= MAX_STATEMENT);
            let n = run(&together, &m.statement, &m.params);
            assert!(n <= m.rows.len(), "max-rows holds: {}", m.statement);
            changed_together += n;
        }
        assert_eq!(changed_together, changed);
        assert!(changed > 300 && changed < 400, "{changed}");
        assert_eq!(table(&together), table(&one_by_one));
    }

    #[test]
    fn one_owners_rows_are_one_statement_until_the_size_bound_splits_them() {
        let worker = text("4242");
        let rows = |n: i64| -> Vec<Update> {
            (1..=n)
                .map(|id| reset(id, &worker, &int(1_700_000_000 + id)))
                .collect()
        };
        let merged = merge(rows(1000), &sqlite("chunks"));
        assert_eq!(merged.len(), 1);
        let m = &merged[0];
        assert_eq!(m.rows.len(), 1000);
        assert!(
            m.statement.starts_with("UPDATE \"chunks\" SET \"status\" = ?1, \"worker\" = NULL WHERE \"status\" = ?2 AND \"worker\" IS ?3 AND \"id\" IN (?4, ?6, "),
            "{}",
            &m.statement[..200]
        );
        assert!(m
            .statement
            .contains(") AND (\"id\", \"started\") IN (VALUES (?4, ?5), (?6, ?7), "));
        let big = merge(rows(20_000), &sqlite("chunks"));
        assert!(big.len() > 1 && big.len() <= 20, "{}", big.len());
        assert!(big.iter().all(|m| m.weight() <= MAX_STATEMENT));
        assert_eq!(big.iter().map(|m| m.rows.len()).sum::<usize>(), 20_000);
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE chunks (id INTEGER PRIMARY KEY, status TEXT, worker, started)",
        )
        .unwrap();
        c.execute_batch("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) INSERT INTO chunks SELECT i, 'running', '4242', 1700000000 + i FROM n")
            .unwrap();
        let changed: usize = big.iter().map(|m| run(&c, &m.statement, &m.params)).sum();
        assert_eq!(changed, 20_000);
    }

    #[test]
    fn on_postgres_the_casts_count_against_the_size_bound() {
        let worker = text("4242");
        let col = |name: &str, ty: &str| crate::dialect::Column {
            name: name.into(),
            ty: ty.into(),
        };
        let db = Db::new(
            "main",
            "chunks",
            Dialect::Postgres,
            vec![
                col("id", "bigint"),
                col("status", "text"),
                col("worker", "text"),
                col("started", "timestamp with time zone"),
            ],
        );
        let rows: Vec<Update> = (1..=10_000)
            .map(|id| {
                reset(
                    id,
                    &worker,
                    &text(&format!("2026-12-06T14:50:00.{id:06}+00:00")),
                )
            })
            .collect();
        let merged = merge(rows, &db);
        assert!(merged.len() > 1, "{}", merged.len());
        assert!(merged.iter().all(|m| m.weight() <= MAX_STATEMENT));
        let statement = &merged[0].statement;
        assert!(
            statement.contains("::timestamp with time zone), ($"),
            "{}",
            &statement[..400]
        );
        assert_eq!(merged.iter().map(|m| m.rows.len()).sum::<usize>(), 10_000);
    }

    #[test]
    fn a_row_alone_keeps_its_one_row_statement() {
        let merged = merge(vec![reset(9, &text("1"), &SqlValue::Null)], &sqlite("t"));
        assert_eq!(merged[0].statement, "UPDATE \"t\" SET \"status\" = ?1, \"worker\" = NULL WHERE \"id\" = ?2 AND \"status\" = ?3 AND \"worker\" IS ?4 AND \"started\" IS ?5");
        assert_eq!(merged[0].rows, [0]);
    }
}
