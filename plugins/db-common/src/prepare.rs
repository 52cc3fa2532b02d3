//! What both database plugins do before they judge a row, in the same
//! order: first what the config alone decides (so that `doctor policy
//! validate` says it even where the database is not there yet), then what
//! only this host and its table can tell — whether the service's user can
//! write the database, whose users the scope names, whether every configured
//! column and expression exists.

use crate::{
    name_only, name_pattern, opt_column, probe_expression, sql_expression, write_problems, Db,
    Dialect, NameFinder, OwnerCheck, RowIdentity, WorkerKind, WriteProblem,
};
use doctor_sdk::owner::OwnerFormat;
use doctor_sdk::prelude::*;
use doctor_sdk::scope::{ProcessTable, Scope, ScopeMatcher};
use doctor_sdk::time::TimeUnit;
use regex_lite::Regex;
use serde::Deserialize;

doctor_sdk::config! {
    /// The config keys both database plugins share: how a row names its
    /// worker and how its times are read. Declared once, here; each plugin
    /// takes it whole with `..identity: IdentityConfig` in its `config!`.
    #[derive(Deserialize)]
    pub struct IdentityConfig {
        pub worker_kind: WorkerKind = r#""pid""#, "\"pid\" (an owner in owner_format) or \"name\" (a worker name, found only by name_pattern inside scope)",
        pub owner_format: String = r#""auto""#, "how owners are written: auto, pid (pid or pid:start-time), host:pid, pid@host, or a regex with named groups pid (required), host, start; another host's owner is judged by heartbeat only",
        pub worker_pid_sql: Option<String> = r#""""#, "an SQL expression in the database's own dialect giving the worker's pid from the row, e.g. json_extract(owner_info, '$.pid') on SQLite, owner_info->>'pid' on PostgreSQL; checked by pid, start time and claim time",
        pub worker_host_sql: Option<String> = r#""""#, "an SQL expression giving the worker's host from the row; another host's row is judged by heartbeat only",
        pub name_pattern: Option<String> = r#""""#, "with worker_kind = \"name\": regex searched in command lines inside scope whose named group `name` must equal the row's worker name",
        pub worker_match: Option<String> = r#""""#, "regex a live worker's command line must match (a pid reused by anything else counts as dead)",
        pub scope: Scope = "null", "where this deployment's processes live: { user, unit, cgroup, under } or \"host\"; none: a pattern matches nothing and only the rows' own pids name workers",
        pub time_unit: String = r#""auto""#, "how times are stored: auto (detected per value and stated in the finding), s, ms, us, ns (epoch, INTEGER/REAL/TEXT), iso8601 (no zone = UTC), julian",
        #[serde(deserialize_with = "crate::duration_ms")]
        pub clock_skew: u64 = r#""2m""#, "a time further ahead of this host's clock is a finding (unit wrong?), never used to judge",
    }
}

impl IdentityConfig {
    /// What the config alone decides, checked key by key in this order (a
    /// config error names the first bad key). The plugin's own
    /// `heartbeat_column` and `heartbeat_sql` keys name where a claimed
    /// row's heartbeat is read (see [`Beat::of`]).
    pub fn identity(
        &self,
        heartbeat_column: &Option<String>,
        heartbeat_sql: &Option<String>,
    ) -> Result<Identity, Error> {
        Ok(Identity {
            pid_sql: sql_expression("worker_pid_sql", self.worker_pid_sql.as_deref())?,
            host_sql: sql_expression("worker_host_sql", self.worker_host_sql.as_deref())?,
            heartbeat: Beat::of(heartbeat_column, heartbeat_sql)?,
            worker_match: crate::regex("worker_match", self.worker_match.as_deref())?,
            name_pattern: name_pattern(self.name_pattern.as_deref())?,
            format: crate::owner_format(&self.owner_format)?,
            unit: crate::time_unit(&self.time_unit)?,
        })
    }
}

/// How a table's rows name their workers, parsed from [`IdentityConfig`].
pub struct Identity {
    pub pid_sql: Option<String>,
    pub host_sql: Option<String>,
    /// Where a claimed row's heartbeat is read (None: the table keeps none).
    pub heartbeat: Option<Beat>,
    pub worker_match: Option<Regex>,
    pub name_pattern: Option<Regex>,
    pub format: OwnerFormat,
    pub unit: TimeUnit,
}

/// What the host told about the database and the scope.
pub struct OnHost {
    /// The table in its database: every statement on it is rendered by its dialect.
    pub db: Db,
    /// Why the service's user could not write the SQLite file (empty: it
    /// can, no user is named, or the database is not a file).
    pub problems: Vec<WriteProblem>,
    pub scope: ScopeMatcher,
    /// With `worker_kind = "name"` and no pid expression: the weak-identity finding.
    pub weak: Option<Finding>,
}

/// Where a claimed row's heartbeat is read: a column of the table
/// (`heartbeat_column`), or an SQL expression over the row (`heartbeat_sql`,
/// checked like the identity expressions): a scalar subquery over a related
/// table, say `(SELECT w.last_heartbeat FROM workers w WHERE w.id =
/// worker_id)`. Either is read, judged and compared alike.
#[derive(Clone, Debug, PartialEq)]
pub enum Beat {
    Column(String),
    Sql(String),
}

impl Beat {
    /// The policy's heartbeat: one of the two keys, or neither (the table
    /// keeps no heartbeat); both is a config error.
    pub fn of(column: &Option<String>, sql: &Option<String>) -> Result<Option<Beat>, Error> {
        let sql = sql_expression("heartbeat_sql", sql.as_deref())?;
        match (opt_column(column), sql) {
            (Some(column), Some(expr)) => Err(Error::Invalid(format!(
                "config: heartbeat_column = {column:?} and heartbeat_sql = {expr:?}: set one of them (a column of the table, or an SQL expression over the row)"
            ))),
            (Some(column), None) => Ok(Some(Beat::Column(column.to_string()))),
            (None, Some(expr)) => Ok(Some(Beat::Sql(expr))),
            (None, None) => Ok(None),
        }
    }

    /// As a SELECT list and a compare-and-swap write it: `"heartbeat_at"`, or `(expression)`.
    pub fn sql(&self) -> String {
        match self {
            Beat::Column(column) => crate::ident(column),
            Beat::Sql(expr) => format!("({expr})"),
        }
    }

    /// As a message names it: the column, or the expression as written.
    pub fn name(&self) -> &str {
        match self {
            Beat::Column(name) | Beat::Sql(name) => name,
        }
    }
}

impl Identity {
    /// The database must exist (a missing one is the run's error, not the
    /// policy's), the scope's users must exist here, and every configured
    /// column (`(config key, column)`) and expression must be the table's.
    /// Whether the service's user can write is a question for a SQLite file
    /// only: a server's rights are its own.
    pub fn on_host(
        &self,
        db: &str,
        table: &str,
        service_user: Option<&str>,
        scope: &Scope,
        kind: WorkerKind,
        columns: &[(&str, &str)],
    ) -> Result<OnHost, Error> {
        let dialect = Dialect::of(db)?;
        let problems = match dialect {
            Dialect::Sqlite => write_problems(db, service_user)?,
            Dialect::Postgres => Vec::new(),
        };
        // A scope names users, which only the host the policy runs on knows.
        let scope = scope.compile("config: scope")?;
        let weak = match (kind, &self.pid_sql) {
            (WorkerKind::Name, None) => Some(name_only(
                table,
                self.name_pattern.as_ref().map(|p| p.as_str()),
                scope.is_unscoped(),
            )?),
            _ => None,
        };
        let db = Db::open(db, table, dialect)?;
        db.require_columns(columns)?;
        let heartbeat_sql = match &self.heartbeat {
            Some(Beat::Column(column)) => {
                db.require_columns(&[("heartbeat_column", column)])?;
                None
            }
            Some(Beat::Sql(expr)) => Some(expr.clone()),
            None => None,
        };
        for (key, expr) in [
            ("worker_pid_sql", &self.pid_sql),
            ("worker_host_sql", &self.host_sql),
            ("heartbeat_sql", &heartbeat_sql),
        ] {
            if let Some(expr) = expr {
                probe_expression(&db, key, expr)?;
            }
        }
        Ok(OnHost {
            db,
            problems,
            scope,
            weak,
        })
    }

    /// `(pid expression), (host expression)` for a SELECT list (NULL for one not configured).
    pub fn select_list(&self) -> String {
        let expr = |e: &Option<String>| {
            e.as_ref()
                .map(|e| format!("({e})"))
                .unwrap_or_else(|| "NULL".into())
        };
        format!("{}, {}", expr(&self.pid_sql), expr(&self.host_sql))
    }

    /// The heartbeat for a SELECT list: `"column"`, `(expression)`, or NULL
    /// when the table keeps none.
    pub fn heartbeat_select(&self) -> String {
        self.heartbeat
            .as_ref()
            .map(Beat::sql)
            .unwrap_or_else(|| "NULL".into())
    }

    /// The heartbeat as a message names it: its column, or its expression.
    pub fn heartbeat_name(&self) -> Option<&str> {
        self.heartbeat.as_ref().map(Beat::name)
    }

    /// The heartbeat as read, as a compare-and-swap condition (none when
    /// the table keeps none): a row that beat since the check is not written.
    pub fn unchanged_beat(&self, value: &SqlValue) -> Vec<(String, SqlValue)> {
        let beat = self.heartbeat.as_ref();
        beat.map(|b| (b.sql(), value.clone())).into_iter().collect()
    }

    /// A row's worker as the verdict reads it: its worker column and the
    /// values the configured expressions gave.
    pub fn row<'a>(
        &self,
        worker: &'a SqlValue,
        pid: &'a SqlValue,
        host: &'a SqlValue,
    ) -> RowIdentity<'a> {
        RowIdentity {
            worker,
            pid: self.pid_sql.as_ref().map(|_| pid),
            host: self.host_sql.as_ref().map(|_| host),
        }
    }

    /// The identity the verdict rests on, as compare-and-swap conditions
    /// (`(expression)`, the value read): a new worker's pid in the row
    /// means hands off.
    pub fn unchanged(&self, pid: &SqlValue, host: &SqlValue) -> Vec<(String, SqlValue)> {
        let pairs = [(&self.pid_sql, pid), (&self.host_sql, host)];
        pairs
            .into_iter()
            .filter_map(|(e, v)| e.as_ref().map(|e| (format!("({e})"), v.clone())))
            .collect()
    }

    /// How a name is found: `name_pattern` inside the scope.
    pub fn name_finder<'a>(&'a self, scope: &'a ScopeMatcher) -> Option<NameFinder<'a>> {
        self.name_pattern
            .as_ref()
            .map(|pattern| NameFinder { pattern, scope })
    }

    /// What deciding a row's owner needs.
    pub fn owner_check<'a>(
        &'a self,
        kind: WorkerKind,
        table: &'a ProcessTable,
        hostname: &'a str,
        names: Option<&'a NameFinder<'a>>,
    ) -> OwnerCheck<'a> {
        OwnerCheck {
            kind,
            format: &self.format,
            table,
            worker_match: self.worker_match.as_ref(),
            hostname,
            names,
        }
    }
}
