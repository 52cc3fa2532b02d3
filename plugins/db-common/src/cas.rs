//! Compare-and-swap writes. A fix changes a row only if it is still exactly
//! as the check saw it (its status, its worker, its times, the identity the
//! verdict rests on), so a row that a live worker took in the meantime is
//! never clobbered: the host runs the statement with `max-rows`, and 0 rows
//! changed is `skipped`. Both database plugins build their UPDATEs here.

use crate::ident;
use doctor_sdk::prelude::*;

/// One UPDATE: its SET list, its WHERE conditions and their numbered parameters.
#[derive(Default)]
pub struct Update {
    sets: Vec<String>,
    conds: Vec<String>,
    params: Vec<SqlValue>,
}

impl Update {
    /// `column = ?N`.
    pub fn set(&mut self, column: &str, value: SqlValue) -> &mut Self {
        self.params.push(value);
        self.sets
            .push(format!("{} = ?{}", ident(column), self.params.len()));
        self
    }

    /// A SET item written in SQL (`"worker" = NULL`, `"attempts" = COALESCE(...) + 1`).
    pub fn set_sql(&mut self, sql: String) -> &mut Self {
        self.sets.push(sql);
        self
    }

    /// Compare-and-swap: `what` (a quoted column or a parenthesised
    /// expression) `IS ?N`, which also matches a NULL as read.
    pub fn unchanged(&mut self, what: String, value: SqlValue) -> &mut Self {
        self.params.push(value);
        self.conds.push(format!("{what} IS ?{}", self.params.len()));
        self
    }

    /// [`unchanged`](Self::unchanged) for each `(what, value)`.
    pub fn unchanged_each(&mut self, pairs: Vec<(String, SqlValue)>) -> &mut Self {
        for (what, value) in pairs {
            self.unchanged(what, value);
        }
        self
    }

    /// `what = ?N`: for a key or a status, which are never NULL.
    pub fn equals(&mut self, what: String, value: SqlValue) -> &mut Self {
        self.params.push(value);
        self.conds.push(format!("{what} = ?{}", self.params.len()));
        self
    }

    /// `what IN (?N, ...)`: a batch of keys.
    pub fn one_of(&mut self, what: String, values: Vec<SqlValue>) -> &mut Self {
        let first = self.params.len() + 1;
        let marks: Vec<String> = (first..first + values.len())
            .map(|i| format!("?{i}"))
            .collect();
        self.params.extend(values);
        self.conds.push(format!("{what} IN ({})", marks.join(", ")));
        self
    }

    /// The statement on `table` and its parameters.
    pub fn build(self, table: &str) -> (String, Vec<SqlValue>) {
        (
            format!(
                "UPDATE {} SET {} WHERE {}",
                ident(table),
                self.sets.join(", "),
                self.conds.join(" AND ")
            ),
            self.params,
        )
    }
}

/// Keys per batched compare-and-swap (`... AND id IN (?, ...)`).
pub const BATCH: usize = 500;
/// The host takes at most 64 actions per finding: batches beyond wait for the next run.
pub const MAX_BATCHES: usize = 64;

/// Rows `(worker, key)` grouped for batched writes: per worker (as read,
/// NULL included), at most [`BATCH`] keys each, in the order first seen, so
/// each batch's `worker IS ?` guard covers every row in it.
pub fn batches<'a>(
    rows: impl Iterator<Item = (&'a SqlValue, &'a SqlValue)>,
) -> Vec<(SqlValue, Vec<SqlValue>)> {
    let mut out: Vec<(SqlValue, Vec<SqlValue>)> = Vec::new();
    let mut open: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for (worker, key) in rows {
        let by = format!("{worker:?}");
        match open.get(&by).copied().filter(|i| out[*i].1.len() < BATCH) {
            Some(i) => out[i].1.push(key.clone()),
            None => {
                open.insert(by, out.len());
                out.push((worker.clone(), vec![key.clone()]));
            }
        }
    }
    out
}

/// `rows` (worker, key) written in batches (see [`batches`]) as actions of
/// `f`: `write` makes each batch's UPDATE and its description, which may
/// change at most that many rows. Batches beyond [`MAX_BATCHES`] are said
/// to wait for the next run.
pub fn batched_writes<'a>(
    mut f: Finding,
    db: &str,
    table: &str,
    rows: impl Iterator<Item = (&'a SqlValue, &'a SqlValue)>,
    write: impl Fn(SqlValue, Vec<SqlValue>) -> (Update, String),
) -> Finding {
    let batches = batches(rows);
    if batches.len() > MAX_BATCHES {
        f = f.evidence(
            "deferred",
            format!(
                "{} batch(es) wait for the next run",
                batches.len() - MAX_BATCHES
            ),
        );
    }
    for (worker, keys) in batches.into_iter().take(MAX_BATCHES) {
        let n = keys.len() as u32;
        let (update, description) = write(worker, keys);
        let (sql, params) = update.build(table);
        f = f.action(Action::sql_exec(db, &sql, params, n), description);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_in_the_order_they_are_bound() {
        let mut u = Update::default();
        u.set("status", SqlValue::Text("pending".into()))
            .set_sql("\"worker\" = NULL".into());
        u.equals(ident("id"), SqlValue::Integer(7))
            .unchanged(ident("worker"), SqlValue::Null)
            .one_of(
                ident("id"),
                vec![SqlValue::Integer(1), SqlValue::Integer(2)],
            );
        let (sql, params) = u.build("chunks");
        assert_eq!(sql, "UPDATE \"chunks\" SET \"status\" = ?1, \"worker\" = NULL WHERE \"id\" = ?2 AND \"worker\" IS ?3 AND \"id\" IN (?4, ?5)");
        assert_eq!(params.len(), 5);
    }

    #[test]
    fn batches_group_by_worker_and_split_at_the_batch_size() {
        let (a, b) = (SqlValue::Text("a".into()), SqlValue::Null);
        let keys: Vec<SqlValue> = (0..BATCH as i64 + 2).map(SqlValue::Integer).collect();
        let rows: Vec<(&SqlValue, &SqlValue)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (if i % 2 == 0 { &a } else { &b }, k))
            .collect();
        let out = batches(rows.into_iter());
        assert_eq!(
            out.iter().map(|(_, ids)| ids.len()).collect::<Vec<_>>(),
            [251, 251]
        );
        let many: Vec<(&SqlValue, &SqlValue)> = keys.iter().map(|k| (&a, k)).collect();
        assert_eq!(
            batches(many.into_iter())
                .iter()
                .map(|(_, ids)| ids.len())
                .collect::<Vec<_>>(),
            [BATCH, 2]
        );
    }

    #[test]
    fn batches_beyond_the_action_limit_wait() {
        let a = SqlValue::Text("a".into());
        let keys: Vec<SqlValue> = (0..(BATCH * (MAX_BATCHES + 1)) as i64)
            .map(SqlValue::Integer)
            .collect();
        let write = |w: SqlValue, ids: Vec<SqlValue>| {
            let mut u = Update::default();
            u.unchanged(ident("w"), w).one_of(ident("id"), ids);
            (u, "reset".to_string())
        };
        let f = batched_writes(
            Finding::critical("k", "s", "m"),
            "main",
            "t",
            keys.iter().map(|k| (&a, k)),
            write,
        );
        assert_eq!(f.action_count(), MAX_BATCHES);
    }
}
