//! Further columns a remedy sets so that the application can still read
//! the row it leaves behind: a failure record its client parses, a finish
//! time, a cleared traceback. Written by the policy as a table of column →
//! value, spliced into the remedy's one compare-and-swap statement.
//!
//! ```toml
//! [plugins.job-health.config.fail_set]
//! finished_at = { now = true }          # now, in the table's time unit (or { now = "ns" }); on PostgreSQL a date or time column gets the server's now()
//! traceback   = { null = true }
//! retries     = 0                       # a constant (string, integer, float, boolean)
//! error_text  = { text = "WorkerLost: {reason}" }
//! result      = { json = { exc_type = "WorkerLost", exc_message = "{reason}" } }
//! ```
//!
//! `{reason}`, `{id}`, `{worker}`, `{pid}`, `{host}`, `{status}`,
//! `{attempts}`, `{remedy}` and `{now}` (ISO-8601, UTC) are replaced in
//! `text` and in every string of a `json` document; `{{` and `}}` are
//! literal braces.

use crate::{ident, Db, Now, Update};
use doctor_sdk::prelude::*;
use doctor_sdk::time::TimeUnit;
use std::collections::BTreeMap;

/// One column's new value.
#[derive(Debug, Clone)]
pub enum SetValue {
    Const(SqlValue),
    Null,
    /// Now, in this unit; None: the table's unit.
    Now(Option<TimeUnit>),
    /// A text template with placeholders.
    Text(String),
    /// A JSON document whose strings are templates; written as TEXT.
    Json(serde_json::Value),
}

pub const PLACEHOLDERS: &[&str] = &[
    "reason", "id", "worker", "pid", "host", "status", "attempts", "remedy", "now",
];

/// The finding's facts a template may use.
pub type Placeholders = BTreeMap<&'static str, String>;

/// Parse `key`'s table (`fail_set`): each column's value, with errors that
/// name the column. `reserved` are the columns the remedy writes itself.
pub fn parse_sets(
    key: &str,
    table: &BTreeMap<String, serde_json::Value>,
    reserved: &[&str],
) -> Result<Vec<(String, SetValue)>, Error> {
    let mut out = Vec::new();
    for (column, v) in table {
        let bad = |why: String| Error::Invalid(format!("config: {key}.{column}: {why}"));
        if let Some(r) = reserved.iter().find(|r| r.eq_ignore_ascii_case(column)) {
            return Err(bad(format!("column {r:?} is written by the remedy itself (or is the compare-and-swap's key); set it through its own config key")));
        }
        let value = match v {
            serde_json::Value::String(s) => SetValue::Const(SqlValue::Text(s.clone())),
            serde_json::Value::Bool(b) => SetValue::Const(SqlValue::Integer(*b as i64)),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => SetValue::Const(SqlValue::Integer(i)),
                None => SetValue::Const(SqlValue::Real(n.as_f64().unwrap_or(0.0))),
            },
            serde_json::Value::Object(o) if o.len() == 1 => {
                let (form, arg) = o.iter().next().ok_or_else(|| bad("an empty table".into()))?;
                match (form.as_str(), arg) {
                    ("null", serde_json::Value::Bool(true)) => SetValue::Null,
                    ("now", serde_json::Value::Bool(true)) => SetValue::Now(None),
                    ("now", serde_json::Value::String(u)) => SetValue::Now(Some(TimeUnit::parse(u).map_err(bad)?).filter(|u| *u != TimeUnit::Auto)),
                    ("text", serde_json::Value::String(t)) => {
                        check_template(t).map_err(bad)?;
                        SetValue::Text(t.clone())
                    }
                    ("json", doc) => {
                        check_json(doc).map_err(bad)?;
                        SetValue::Json(doc.clone())
                    }
                    _ => return Err(bad(format!("{{ {form} = {arg} }} is not a value form"))),
                }
            }
            other => {
                return Err(bad(format!(
                    "{other} is not a value: write a constant, {{ null = true }}, {{ now = true }}, {{ text = \"...\" }} or {{ json = {{ ... }} }}"
                )))
            }
        };
        out.push((column.clone(), value));
    }
    Ok(out)
}

/// Then, on the host: the columns each set (`(config key, its columns)`)
/// names must be the table's, and the compare-and-swap that carries a set
/// must change one row, so `id_column` must be the table's key. Errors are
/// `config:` errors, so that `policy validate` places them at the policy's line.
pub fn check_set_columns(
    db: &Db,
    id_column: &str,
    sets: &[(&str, &[(String, SetValue)])],
) -> Result<(), Error> {
    let table = &db.table;
    for (key, list) in sets {
        for (column, _) in list.iter() {
            if db.column(column).is_none() {
                return Err(Error::Invalid(format!("config: {key}.{column}: table {table:?} has no column {column:?} (columns: {})", db.column_names())));
            }
        }
        if !list.is_empty() && !db.is_unique(id_column)? {
            return Err(Error::Invalid(format!(
                "config: {key}: its compare-and-swap must change one row, but id_column = {id_column:?} is neither the primary key nor UNIQUE in table {table:?}"
            )));
        }
    }
    Ok(())
}

impl SetValue {
    /// The value to bind, or None for SQL NULL. `now` is `table_unit`'s
    /// rendering of the current time (as a column in that unit holds it).
    pub fn bind(
        &self,
        facts: &Placeholders,
        now: &dyn Fn(Option<TimeUnit>) -> SqlValue,
    ) -> SqlValue {
        match self {
            SetValue::Const(v) => v.clone(),
            SetValue::Null => SqlValue::Null,
            SetValue::Now(unit) => now(*unit),
            SetValue::Text(t) => SqlValue::Text(fill(t, facts)),
            SetValue::Json(doc) => SqlValue::Text(fill_json(doc, facts).to_string()),
        }
    }
}

impl Update {
    /// `column = value` for a policy's further column: `now` in a
    /// PostgreSQL date or time column is the server's (see [`Db::now`]), any
    /// other value a parameter (JSON as text, which the server reads as the
    /// column's `json` or `jsonb` by itself).
    pub fn set_to(
        &mut self,
        db: &Db,
        column: &str,
        value: &SetValue,
        facts: &Placeholders,
        now: &dyn Fn(Option<TimeUnit>) -> SqlValue,
    ) -> &mut Self {
        match (value, db.now_sql(column)) {
            (SetValue::Now(_), Some(sql)) => self.set_sql(format!("{} = {sql}", ident(column))),
            _ => self.set(column, value.bind(facts, now)),
        }
    }

    /// `column = now`, as the column already holds times (`unit`, as read
    /// or declared): see [`Db::now`].
    pub fn set_now(&mut self, db: &Db, column: &str, unit: TimeUnit, now_ms: i64) -> &mut Self {
        match db.now(column, unit, now_ms) {
            Now::Sql(sql) => self.set_sql(format!("{} = {sql}", ident(column))),
            Now::Value(v) => self.set(column, v),
        }
    }
}

fn check_json(doc: &serde_json::Value) -> Result<(), String> {
    match doc {
        serde_json::Value::String(s) => check_template(s),
        serde_json::Value::Array(items) => items.iter().try_for_each(check_json),
        serde_json::Value::Object(o) => o.values().try_for_each(check_json),
        _ => Ok(()),
    }
}

/// Every `{name}` must be a known placeholder.
fn check_template(t: &str) -> Result<(), String> {
    let mut rest = t.replace("{{", "").replace("}}", "");
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!(
                "{t:?}: a `{{` is never closed (write `{{{{` for a brace)"
            ));
        };
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "{t:?}: unknown placeholder {{{name}}} (known: {})",
                PLACEHOLDERS.join(", ")
            ));
        }
        rest = after[close + 1..].to_string();
    }
    Ok(())
}

pub fn fill(t: &str, facts: &Placeholders) -> String {
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if let Some((name, after)) = tail.strip_prefix('{').and_then(|t| t.split_once('}')) {
            out.push_str(facts.get(name).map(String::as_str).unwrap_or(""));
            rest = after;
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn fill_json(doc: &serde_json::Value, facts: &Placeholders) -> serde_json::Value {
    match doc {
        serde_json::Value::String(s) => serde_json::Value::String(fill(s, facts)),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(|v| fill_json(v, facts)).collect())
        }
        serde_json::Value::Object(o) => serde_json::Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), fill_json(v, facts)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(json: &str) -> Result<Vec<(String, SetValue)>, Error> {
        let t: BTreeMap<String, serde_json::Value> = serde_json::from_str(json).unwrap();
        parse_sets("fail_set", &t, &["status"])
    }

    #[test]
    fn every_value_form_binds() {
        let s = sets(r#"{"a": "x", "b": 3, "c": {"null": true}, "d": {"now": "ns"}, "e": {"text": "lost: {reason} {{ok}}"}, "f": {"json": {"exc_type": "WorkerLost", "exc_message": "{reason}", "n": 1}}}"#).unwrap();
        let facts: Placeholders = [("reason", "pid 7 is not running".to_string())]
            .into_iter()
            .collect();
        let now = |u: Option<TimeUnit>| SqlValue::Text(format!("{u:?}"));
        let bound: Vec<String> = s
            .iter()
            .map(|(_, v)| format!("{:?}", v.bind(&facts, &now)))
            .collect();
        assert_eq!(bound[0], "SqlValue::Text(\"x\")");
        assert_eq!(bound[1], "SqlValue::Integer(3)");
        assert_eq!(bound[2], "SqlValue::Null");
        assert_eq!(bound[3], "SqlValue::Text(\"Some(Nanos)\")");
        assert_eq!(
            bound[4],
            "SqlValue::Text(\"lost: pid 7 is not running {ok}\")"
        );
        let SqlValue::Text(doc) = s[5].1.bind(&facts, &now) else {
            panic!()
        };
        let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(doc["exc_message"], "pid 7 is not running");
        assert_eq!(doc["n"], 1);
    }

    #[test]
    fn bad_values_name_their_column() {
        for (json, says) in [
            (r#"{"status": "x"}"#, "status"),
            (r#"{"e": {"text": "{nope}"}}"#, "unknown placeholder"),
            (r#"{"e": [1]}"#, "not a value"),
            (r#"{"e": {"now": "fortnights"}}"#, "fortnights"),
            (r#"{"e": {"null": true, "now": true}}"#, "not a value"),
        ] {
            let e = doctor_sdk::error_text(&sets(json).expect_err(json));
            assert!(
                e.starts_with("invalid: config: fail_set.") && e.contains(says),
                "{json}: {e}"
            );
        }
    }
}
