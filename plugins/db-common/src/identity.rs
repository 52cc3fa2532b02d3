//! Who a row's worker is, when the row says it in other ways than one owner
//! column: a pid or host inside a JSON document or a substring of another
//! column (an SQL expression the database evaluates inside the read-only
//! query, in its own dialect: the plugin splices it in unwrapped),
//! or only a worker name that the worker's command line never shows (a
//! name-only identity, found by a declared pattern inside the scope).
//!
//! The rule the incident taught: a row is judged dead only by evidence
//! about *its* worker. A pid is checked by start time (and claim time); a
//! name only by the declared pattern; anything else is "cannot tell", and
//! no write follows from it.

use crate::{integer, text, Db, Liveness, Owner, OwnerCheck};
use doctor_sdk::prelude::*;
use doctor_sdk::scope::{command_line, ScopeMatcher};
use regex_lite::Regex;

/// Words that begin statements, never part of a value expression. Checked
/// as whole words outside quotes. (`replace` is a function as well as a
/// statement, so it is allowed.) `select … from` is allowed inside
/// parentheses only: a scalar subquery over a related table (a workers
/// table with pid and hostname), which the host runs read-only like any
/// query; at the top level it would be a second statement.
const STATEMENT_WORDS: &[&str] = &[
    "select",
    "insert",
    "update",
    "delete",
    "with",
    "pragma",
    "attach",
    "detach",
    "create",
    "drop",
    "alter",
    "vacuum",
    "begin",
    "commit",
    "rollback",
    "end",
    "analyze",
    "reindex",
    "savepoint",
    "release",
    "explain",
    "values",
    "from",
];

/// Words of a scalar subquery, allowed inside parentheses.
const SUBQUERY_WORDS: &[&str] = &["select", "from"];

/// Functions that reach beyond the table, refused even where the host's
/// connection would not allow them (defence in depth: the expression also
/// runs inside the write's compare-and-swap).
const REFUSED_FUNCTIONS: &[&str] = &["load_extension", "fts3_tokenizer", "readfile", "writefile"];

/// A policy's SQL expression for a per-row value (`json_extract(result,
/// '$.pid')`): one expression, never a statement. It is spliced into the
/// plugin's own read-only SELECT and into the compare-and-swap of a fix, so
/// it must not be able to end the one and start another: no `;`, no
/// comments, balanced parentheses and quotes, no top-level comma, no
/// statement keyword. `key` names the config key in the error.
pub fn sql_expression(key: &str, expr: Option<&str>) -> Result<Option<String>, Error> {
    let Some(expr) = expr.map(str::trim).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    let bad = |why: &str| {
        Error::Invalid(format!(
            "config: {key} = {expr:?} is not a single SQL expression: {why}"
        ))
    };
    let chars: Vec<char> = expr.chars().collect();
    let (mut depth, mut i) = (0i32, 0usize);
    let mut word = String::new();
    let check_word = |word: &mut String, depth: i32| -> Result<(), Error> {
        let w = word.to_ascii_lowercase();
        word.clear();
        if depth > 0 && SUBQUERY_WORDS.contains(&w.as_str()) {
            return Ok(());
        }
        if STATEMENT_WORDS.contains(&w.as_str()) {
            return Err(bad(&format!("`{w}` begins a statement or a query")));
        }
        if REFUSED_FUNCTIONS.contains(&w.as_str()) {
            return Err(bad(&format!("`{w}` reaches outside the database")));
        }
        Ok(())
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            i += 1;
            continue;
        }
        check_word(&mut word, depth)?;
        match c {
            '\'' | '"' | '`' | '[' => {
                let close = if c == '[' { ']' } else { c };
                let start = i;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(bad(&format!(
                                "the quote opened at character {} is never closed",
                                start + 1
                            )))
                        }
                        // A doubled quote is an escaped quote inside the string.
                        Some(&q)
                            if q == close && close != ']' && chars.get(i + 1) == Some(&close) =>
                        {
                            i += 2
                        }
                        Some(&q) if q == close => break,
                        Some(_) => i += 1,
                    }
                }
            }
            ';' => return Err(bad("`;` ends a statement")),
            '-' if chars.get(i + 1) == Some(&'-') => return Err(bad("`--` starts a comment")),
            '/' if chars.get(i + 1) == Some(&'*') => return Err(bad("`/*` starts a comment")),
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(bad("a `)` closes more than was opened"));
                }
            }
            ',' if depth == 0 => {
                return Err(bad("a top-level `,` makes it more than one expression"))
            }
            _ => {}
        }
        i += 1;
    }
    check_word(&mut word, depth)?;
    if depth != 0 {
        return Err(bad("unbalanced parentheses"));
    }
    Ok(Some(expr.to_string()))
}

/// Let the database judge what the syntax check cannot (unknown columns or
/// functions): evaluate the expression against the table, reading no row.
pub fn probe_expression(db: &Db, key: &str, expr: &str) -> Result<(), Error> {
    db.query(
        &format!("SELECT ({expr}) FROM {} LIMIT 0", db.table_sql()),
        &[],
    )
    .map(|_| ())
    .map_err(|e| {
        Error::Invalid(format!(
            "config: {key} = {expr:?}: the database cannot evaluate it on table {}: {}",
            db.table,
            doctor_sdk::error_text(&e)
        ))
    })
}

/// A name-only identity: how to find a worker that only its name names.
/// `pattern` is searched in the command lines of live processes inside
/// `scope`, and its `name` group must equal the row's name exactly.
pub struct NameFinder<'a> {
    pub pattern: &'a Regex,
    pub scope: &'a ScopeMatcher,
}

/// The policy's `name_pattern`: a regex with a named group `name`.
pub fn name_pattern(pattern: Option<&str>) -> Result<Option<Regex>, Error> {
    let Some(p) = pattern.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let re = Regex::new(p)
        .map_err(|e| Error::Invalid(format!("config: name_pattern = {p:?} is not a regex: {e}")))?;
    if !re.capture_names().any(|n| n == Some("name")) {
        return Err(Error::Invalid(format!(
            "config: name_pattern = {p:?} has no named group `name` (write (?P<name>...)): the group's text must equal the row's worker name"
        )));
    }
    Ok(Some(re))
}

/// The values a row gives about its worker, as the query read them.
pub struct RowIdentity<'a> {
    /// The worker column (owner, or name).
    pub worker: &'a SqlValue,
    /// `worker_pid_sql`'s value, when configured.
    pub pid: Option<&'a SqlValue>,
    /// `worker_host_sql`'s value, when configured.
    pub host: Option<&'a SqlValue>,
}

impl RowIdentity<'_> {
    /// The worker as a message names it: the column, then the pid and host
    /// the expressions found (`w1@host-7 (pid 4551, host host-7)`); with
    /// no worker column, what the expressions found alone (`pid 4551, host
    /// host-7`).
    pub fn shown(&self) -> String {
        let found: Vec<String> = [("pid", self.pid), ("host", self.host)]
            .into_iter()
            .filter_map(|(what, v)| Some(format!("{what} {}", crate::shown(v?))))
            .collect();
        match (found.is_empty(), self.worker) {
            (true, _) => crate::shown(self.worker),
            (false, SqlValue::Null) => found.join(", "),
            (false, _) => format!("{} ({})", crate::shown(self.worker), found.join(", ")),
        }
    }
}

/// Is the row's worker alive? A pid from `worker_pid_sql` comes first (a
/// pid is the strongest evidence), then the worker column as `worker_kind`
/// reads it. `claimed_ms` is the row's claim time when readable with a
/// certain zone: a process younger than its claim has a reused pid.
pub fn row_liveness(row: &RowIdentity, chk: &OwnerCheck, claimed_ms: Option<i64>) -> Liveness {
    crate::judge_owner(row_owner(row, chk), chk, claimed_ms)
}

/// Whom the row names as its worker, before any process is looked at (see
/// [`row_liveness`], which judges it).
pub fn row_owner(row: &RowIdentity, chk: &OwnerCheck) -> Owner {
    let host = match row.host {
        None => None,
        Some(v) => match text(v).map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) {
            Some(h) => Some(h),
            None => return Owner::Told(Liveness::Unknown("worker_host_sql gives no host for this row, so whether the worker is on this host cannot be told".into())),
        },
    };
    if let Some(h) = &host {
        if !doctor_sdk::owner::same_host(h, chk.hostname) {
            return Owner::Told(Liveness::Remote(h.clone()));
        }
    }
    if let Some(v) = row.pid {
        return match integer(v).filter(|p| *p > 0 && *p <= u32::MAX as i64) {
            Some(pid) => Owner::Pid {
                pid: pid as u32,
                start_time: None,
            },
            // A JSON document without a pid (a task not yet started, a
            // library that writes it later): the name may still tell.
            None if chk.names.is_some() => crate::value_owner(row.worker, chk),
            None => Owner::Told(Liveness::Unknown(format!(
                "worker_pid_sql gives {} for this row, not a pid",
                crate::shown(v)
            ))),
        };
    }
    crate::value_owner(row.worker, chk)
}

/// A name-only identity: the live processes in scope whose `name` capture
/// equals `name`. Not finding one is evidence of death only because the
/// policy declared how the worker shows its name.
pub fn find_by_name(name: &str, finder: &NameFinder, chk: &OwnerCheck) -> Liveness {
    let found: Vec<_> = chk
        .table
        .live()
        .filter(|p| {
            let cmd = command_line(p);
            finder
                .pattern
                .captures_iter(&cmd)
                .any(|c| c.name("name").is_some_and(|m| m.as_str() == name))
                && finder.scope.contains(p, chk.table)
                && chk.worker_match.is_none_or(|r| r.is_match(&cmd))
        })
        .cloned()
        .collect();
    if found.is_empty() {
        Liveness::Dead(format!(
            "no process in scope ({}) shows the name {name:?} by name_pattern /{}/",
            finder.scope.describe(),
            finder.pattern.as_str()
        ))
    } else {
        Liveness::Alive(found)
    }
}

/// A worker named only by a name: allowed with a declared way of finding
/// it (name_pattern, inside a scope), and said to be weaker than a pid —
/// a finding keyed `config:` that `doctor policy validate` prints as a
/// warning. Without the declared way it is a config error: the incident's
/// live worker was marked failed because its name was searched where it
/// never appears.
pub fn name_only(
    table: &str,
    name_pattern: Option<&str>,
    unscoped: bool,
) -> Result<Finding, Error> {
    if name_pattern.is_none() {
        return Err(Error::Invalid(
            "config: worker_kind = \"name\" needs name_pattern (a regex whose group `name` must equal the row's worker name, searched inside scope) or worker_pid_sql: a name missing from command lines proves nothing".into(),
        ));
    }
    if unscoped {
        return Err(Error::Invalid(
            "config: worker_kind = \"name\" with name_pattern needs a scope ({ user, unit, cgroup, under } or \"host\"): another deployment's worker may show the same name".into(),
        ));
    }
    Ok(Finding::info(
        "config:weak-identity",
        format!("table {table}"),
        format!(
            "worker_kind = \"name\": workers are identified by name only (name_pattern {:?}), which is weaker than a pid: a process in the scope that shows the name counts as the worker, and a worker whose name_pattern stops matching counts as dead. If the row records a pid anywhere, name it with worker_pid_sql",
            name_pattern.unwrap_or_default()
        ),
    )
    .evidence("config_key", "worker_kind"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(e: &str) -> bool {
        sql_expression("k", Some(e)).is_ok()
    }

    #[test]
    fn expressions_are_accepted_statements_are_not() {
        assert!(ok("json_extract(result, '$.pid')"));
        assert!(ok("CAST(substr(owner, instr(owner, '@') + 1) AS INTEGER)"));
        assert!(ok("replace(owner, 'w-', '')"));
        assert!(
            ok("json_extract(\"meta data\", '$.a;b -- c')"),
            "inside quotes anything goes"
        );
        assert!(ok("'it''s'"));
        assert!(
            ok("(SELECT w.pid FROM workers w WHERE w.id = worker_id)"),
            "a scalar subquery over a related table"
        );
        assert!(sql_expression("k", Some("  ")).unwrap().is_none());
        for bad in [
            "1; DROP TABLE jobs",
            "pid -- comment",
            "pid /* c */",
            "SELECT pid FROM other",
            "(DELETE FROM jobs)",
            "(WITH x AS (SELECT 1) SELECT 1)",
            "pid, host",
            "pid)",
            "(pid",
            "'open",
            "pid) FROM jobs; DELETE FROM jobs WHERE (1",
            "load_extension('/tmp/x.so')",
        ] {
            let e = sql_expression("worker_pid_sql", Some(bad)).expect_err(bad);
            assert!(
                doctor_sdk::error_text(&e).starts_with("invalid: config: worker_pid_sql = "),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn a_worker_is_shown_with_what_the_expressions_found() {
        let (w, pid, host) = (
            SqlValue::Text("w1@h7".into()),
            SqlValue::Integer(4551),
            SqlValue::Null,
        );
        assert_eq!(
            RowIdentity {
                worker: &w,
                pid: None,
                host: None
            }
            .shown(),
            "w1@h7"
        );
        assert_eq!(
            RowIdentity {
                worker: &w,
                pid: Some(&pid),
                host: Some(&host)
            }
            .shown(),
            "w1@h7 (pid 4551, host NULL)"
        );
        assert_eq!(
            RowIdentity {
                worker: &SqlValue::Null,
                pid: Some(&pid),
                host: Some(&SqlValue::Text("h7".into()))
            }
            .shown(),
            "pid 4551, host h7",
            "no worker column: what the expressions found"
        );
    }

    #[test]
    fn a_name_pattern_needs_its_name_group() {
        assert!(name_pattern(Some("--hostname (\\S+)")).is_err());
        assert!(name_pattern(Some("--hostname (?P<name>\\S+)"))
            .unwrap()
            .is_some());
        assert!(name_pattern(Some("")).unwrap().is_none());
    }
}
