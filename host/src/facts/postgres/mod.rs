//! PostgreSQL for plugins: a read is one parsed read-only statement in a
//! `READ ONLY` transaction whose `statement_timeout`, `lock_timeout` and
//! `idle_in_transaction_session_timeout` are the caller's remaining time,
//! cancelled from the client at the deadline too (a server setting alone
//! trusts the server), with rows and bytes capped as for SQLite. A write is
//! one parsed UPDATE, rolled back when it changes more than `max-rows`, on a
//! table without writing triggers, rules or cascades unless the policy
//! allows the table. Statements are unnamed (one round trip, no prepared
//! statement left behind), so a transaction pooler works.

mod decode;
pub mod guard;
mod tls;

use crate::facts::sqlite::{QueryBounds, Rows, Value, MAX_ROWS};
use crate::policy::{PgTarget, TlsMode};
use std::pin::pin;
use std::time::{Duration, Instant};
use tokio_postgres::types::{Format, IsNull, ToSql, Type};
use tokio_postgres::{CancelToken, Client};

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The guard's or the policy's refusal.
    #[error("{0}")]
    Refused(String),
    /// The statement or its values are wrong (the server said so, or a
    /// column has a type doctor does not carry).
    #[error("{0}")]
    Invalid(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("{0}")]
    Server(String),
    #[error("cancelled at its deadline (a query: the plugin's time; a write: action_wait_max)")]
    Deadline,
    #[error("query returned more than {0} rows")]
    TooManyRows(usize),
    #[error("query returned more than {0} bytes (sql_result_max)")]
    TooManyBytes(u64),
}

/// One connection, used for one plugin run (or one action).
pub struct Session {
    runtime: tokio::runtime::Runtime,
    client: Client,
    cancel: CancelToken,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

/// What an UPDATE did.
pub struct Updated {
    pub changed: u64,
    /// Rolled back: it would have changed more than max-rows.
    pub rolled_back: bool,
}

pub fn connect(target: &PgTarget, deadline: Instant) -> Result<Session, PgError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PgError::Connect(e.to_string()))?;
    let mut config = target.config.clone();
    if let Some(file) = &target.password_file {
        config.password(read_password(file).map_err(PgError::Connect)?);
    }
    config.connect_timeout(target.connect_timeout);
    config.ssl_mode(match target.tls {
        TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
        TlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        TlsMode::Require => tokio_postgres::config::SslMode::Require,
    });
    let wait = remaining(deadline).min(target.connect_timeout);
    let (client, tls) = runtime.block_on(open(target, config, wait))?;
    let cancel = client.cancel_token();
    Ok(Session {
        runtime,
        client,
        cancel,
        tls,
    })
}

async fn open(
    target: &PgTarget,
    config: tokio_postgres::Config,
    wait: Duration,
) -> Result<(Client, Option<tokio_postgres_rustls::MakeRustlsConnect>), PgError> {
    let connecting = async {
        if target.tls == TlsMode::Disable {
            let (client, conn) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| PgError::Connect(server_text(&e)))?;
            tokio::spawn(conn);
            return Ok((client, None));
        }
        let tls = tls::connector(target).map_err(PgError::Connect)?;
        let (client, conn) = config
            .connect(tls.clone())
            .await
            .map_err(|e| PgError::Connect(server_text(&e)))?;
        tokio::spawn(conn);
        Ok((client, Some(tls)))
    };
    tokio::time::timeout(wait, connecting)
        .await
        .unwrap_or_else(|_| {
            Err(PgError::Connect(format!(
                "{} did not answer within {wait:?}",
                target.shown
            )))
        })
}

impl Session {
    /// One guarded read, bounded by `bounds`; rows as the plugin gets them.
    pub fn query(
        &mut self,
        sql: &str,
        params: &[Value],
        bounds: QueryBounds,
    ) -> Result<Rows, PgError> {
        guard::check_read(sql).map_err(|r| PgError::Refused(r.0))?;
        let deadline = bounds.deadline;
        let begin = format!("BEGIN READ ONLY; {}", timeouts(deadline));
        let client = &self.client;
        let work = async {
            client.batch_execute(&begin).await.map_err(server)?;
            let rows = read_rows(client, sql, params, bounds.max_bytes).await?;
            client.batch_execute("ROLLBACK").await.map_err(server)?;
            Ok(rows)
        };
        self.bounded(deadline, work)
    }

    /// One guarded UPDATE in a transaction: committed when it changed at most
    /// `max_rows` rows, rolled back otherwise. `allowed` are the tables whose
    /// triggers, rules and cascades the policy accepts.
    pub fn update(
        &mut self,
        sql: &str,
        params: &[Value],
        max_rows: u64,
        deadline: Instant,
        allowed: &[String],
    ) -> Result<Updated, PgError> {
        let target = guard::check_update(sql).map_err(|r| PgError::Refused(r.0))?;
        let table = qualified(&target);
        let begin = format!("BEGIN; {}", timeouts(deadline));
        let client = &self.client;
        let work = async {
            client.batch_execute(&begin).await.map_err(server)?;
            if !is_allowed(&target, allowed) {
                if let Some(why) = unseen_writers(client, &table).await? {
                    client.batch_execute("ROLLBACK").await.map_err(server)?;
                    return Err(PgError::Refused(format!(
                        "table {table} {why}: rows they change are not counted against max-rows (allow it with allow_triggers = [\"{}\"])",
                        target.table
                    )));
                }
            }
            let changed = execute(client, sql, params).await?;
            let rolled_back = changed > max_rows;
            // A statement that changed no row has nothing to keep: whatever
            // else it did (a function's side effect) is rolled back too.
            let end = match rolled_back || changed == 0 {
                true => "ROLLBACK",
                false => "COMMIT",
            };
            client.batch_execute(end).await.map_err(server)?;
            Ok(Updated {
                changed,
                rolled_back,
            })
        };
        self.bounded(deadline, work)
    }

    /// Runs `work` until `deadline`; past it, the server is asked to cancel
    /// and the answer is an error (the session is not used again).
    fn bounded<T>(
        &self,
        deadline: Instant,
        work: impl std::future::Future<Output = Result<T, PgError>>,
    ) -> Result<T, PgError> {
        let cancel = &self.cancel;
        let tls = self.tls.clone();
        self.runtime.block_on(async {
            match tokio::time::timeout(remaining(deadline), work).await {
                Ok(result) => result,
                Err(_) => {
                    let ask = async {
                        match tls {
                            Some(tls) => cancel.cancel_query(tls).await,
                            None => cancel.cancel_query(tokio_postgres::NoTls).await,
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(1), ask).await;
                    Err(PgError::Deadline)
                }
            }
        })
    }
}

/// What `policy validate` says about the role doctor connects as, for the
/// tables plugins name: `(table as configured, written too)`.
impl Session {
    pub fn role_warnings(
        &self,
        tables: &[(String, bool)],
        deadline: Instant,
    ) -> Result<Vec<String>, PgError> {
        let client = &self.client;
        let work = async {
            let mut warnings = Vec::new();
            let role = client
                .query_one(
                    "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
                    &[],
                )
                .await
                .map_err(server)?;
            let name: String = role.get(0);
            if role.get::<_, bool>(1) {
                warnings.push(format!("role {name} is a superuser: give doctor a role of its own with only the grants docs/policy-reference.md lists"));
            } else if role.get::<_, bool>(2) {
                warnings.push(format!(
                    "role {name} bypasses row-level security (BYPASSRLS)"
                ));
            }
            for (table, write) in tables {
                warnings.extend(table_warnings(client, &name, table, *write).await?);
            }
            Ok(warnings)
        };
        self.bounded(deadline, work)
    }
}

async fn table_warnings(
    client: &Client,
    role: &str,
    table: &str,
    write: bool,
) -> Result<Vec<String>, PgError> {
    let quoted = table
        .split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".");
    let rows = client
        .query_typed(
            "SELECT to_regclass($1) IS NOT NULL, \
             coalesce(has_any_column_privilege(to_regclass($1), 'SELECT'), false), \
             coalesce(has_any_column_privilege(to_regclass($1), 'UPDATE'), false), \
             coalesce((SELECT pg_get_userbyid(relowner) = current_user FROM pg_class WHERE oid = to_regclass($1)), false)",
            &[(&quoted, Type::TEXT)],
        )
        .await
        .map_err(server)?;
    let Some(row) = rows.first() else {
        return Ok(Vec::new());
    };
    if !row.get::<_, bool>(0) {
        return Ok(vec![format!(
            "table {table} does not exist or role {role} cannot see it (GRANT USAGE ON SCHEMA … TO {role})"
        )]);
    }
    let mut missing = Vec::new();
    if !row.get::<_, bool>(1) {
        missing.push("SELECT");
    }
    if write && !row.get::<_, bool>(2) {
        missing.push("UPDATE");
    }
    let mut warnings = Vec::new();
    if !missing.is_empty() {
        warnings.push(format!(
            "role {role} lacks {} on {table}: GRANT {} ON {quoted} TO {role}",
            missing.join(" and "),
            missing.join(", ")
        ));
    }
    if row.get::<_, bool>(3) {
        warnings.push(format!(
            "role {role} owns {table}: an owner may ALTER or DROP it; give doctor a role that only has the grants it needs"
        ));
    }
    Ok(warnings)
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// The server's own bounds for this transaction, from the caller's time.
fn timeouts(deadline: Instant) -> String {
    let ms = remaining(deadline).as_millis().clamp(1, i32::MAX as u128);
    format!(
        "SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}; \
         SET LOCAL idle_in_transaction_session_timeout = {}",
        ms.saturating_add(1000).min(i32::MAX as u128)
    )
}

async fn read_rows(
    client: &Client,
    sql: &str,
    params: &[Value],
    max_bytes: u64,
) -> Result<Rows, PgError> {
    let typed = params.iter().map(|p| (TextParam(p), Type::UNKNOWN));
    let stream = client.query_typed_raw(sql, typed).await.map_err(server)?;
    let mut stream = pin!(stream);
    let mut columns = None;
    let mut out = Vec::new();
    let mut bytes: u64 = 0;
    use futures_util::TryStreamExt;
    while let Some(row) = stream.try_next().await.map_err(server)? {
        if out.len() == MAX_ROWS {
            return Err(PgError::TooManyRows(MAX_ROWS));
        }
        let names = columns.get_or_insert_with(|| {
            row.columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect::<Vec<_>>()
        });
        let mut values = Vec::with_capacity(names.len());
        for (i, column) in row.columns().iter().enumerate() {
            let raw: decode::Raw = row.try_get(i).map_err(server)?;
            let v = decode::value(column.type_(), raw.0)
                .map_err(|why| PgError::Invalid(format!("column {:?} {why}", column.name())))?;
            bytes = bytes.saturating_add(v.size());
            if bytes > max_bytes {
                return Err(PgError::TooManyBytes(max_bytes));
            }
            values.push(v);
        }
        out.push(values);
    }
    Ok(Rows {
        columns: columns.unwrap_or_default(),
        rows: out,
    })
}

async fn execute(client: &Client, sql: &str, params: &[Value]) -> Result<u64, PgError> {
    let typed = params.iter().map(|p| (TextParam(p), Type::UNKNOWN));
    let stream = client.query_typed_raw(sql, typed).await.map_err(server)?;
    let mut stream = pin!(stream);
    use futures_util::TryStreamExt;
    while stream.try_next().await.map_err(server)?.is_some() {}
    Ok(stream.rows_affected().unwrap_or(0))
}

/// Why rows changed through `table` could escape the count: a user
/// trigger on UPDATE (row or statement), a rewrite rule on UPDATE, or a
/// foreign key that cascades an update into another table.
async fn unseen_writers(client: &Client, table: &str) -> Result<Option<String>, PgError> {
    const UPDATE_TRIGGER: i16 = 16;
    let sql = "SELECT \
        (SELECT string_agg(tgname, ', ') FROM pg_trigger WHERE tgrelid = c.oid AND NOT tgisinternal AND (tgtype & $2::int2) <> 0), \
        (SELECT string_agg(rulename, ', ') FROM pg_rewrite WHERE ev_class = c.oid AND ev_type = '2'), \
        (SELECT string_agg(conname, ', ') FROM pg_constraint WHERE confrelid = c.oid AND contype = 'f' AND confupdtype IN ('c', 'n', 'd')) \
        FROM pg_class c WHERE c.oid = to_regclass($1)";
    let table = table.to_string();
    let params: [(&(dyn ToSql + Sync), Type); 2] =
        [(&table, Type::TEXT), (&UPDATE_TRIGGER, Type::INT2)];
    let rows = client.query_typed(sql, &params).await.map_err(server)?;
    let Some(row) = rows.first() else {
        return Err(PgError::Invalid(format!("table {table} does not exist")));
    };
    let named = |i: usize| row.get::<_, Option<String>>(i);
    Ok(if let Some(t) = named(0) {
        Some(format!("has UPDATE triggers ({t})"))
    } else if let Some(r) = named(1) {
        Some(format!("has UPDATE rules ({r})"))
    } else {
        named(2).map(|f| format!("is referenced by cascading foreign keys ({f})"))
    })
}

fn qualified(target: &guard::UpdateTarget) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    match &target.schema {
        Some(schema) => format!("{}.{}", quote(schema), quote(&target.table)),
        None => quote(&target.table),
    }
}

fn is_allowed(target: &guard::UpdateTarget, allowed: &[String]) -> bool {
    let full = match &target.schema {
        Some(schema) => format!("{schema}.{}", target.table),
        None => target.table.clone(),
    };
    allowed.iter().any(|a| *a == target.table || *a == full)
}

/// The password file must be doctor's own and readable by nobody else.
fn read_password(file: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let shown = file.display();
    let fd = crate::safe_fs::open(file, nix::fcntl::OFlag::O_RDONLY)
        .map_err(|e| format!("password_file {shown}: {e}"))?;
    let stat = crate::safe_fs::stat_fd(&fd).map_err(|e| format!("password_file {shown}: {e}"))?;
    if stat.st_uid != nix::unistd::geteuid().as_raw() || stat.st_mode & 0o077 != 0 {
        return Err(format!(
            "password_file {shown} must be owned by doctor's user and not readable by others (chown {} {shown}; chmod 600 {shown})",
            nix::unistd::geteuid()
        ));
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|e| format!("password_file {shown}: {e}"))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

fn server(e: tokio_postgres::Error) -> PgError {
    let text = server_text(&e);
    match e.code() {
        Some(code) if code.code().starts_with("42") || code.code().starts_with("22") => {
            PgError::Invalid(text)
        }
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => PgError::Deadline,
        _ => PgError::Server(text),
    }
}

/// The server's message with its detail, or the client's with its causes
/// (a TLS failure says why: "invalid peer certificate: UnknownIssuer").
fn server_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        };
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// A plugin's parameter, sent as text for the server to type from context
/// (as libpq does with unspecified types): `$1` compared with an enum, a
/// timestamptz or a jsonb column takes that column's type.
#[derive(Debug)]
struct TextParam<'a>(&'a Value);

impl ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let text = match self.0 {
            Value::Null => return Ok(IsNull::Yes),
            Value::Integer(i) => i.to_string(),
            Value::Real(f) if f.is_nan() => "NaN".into(),
            Value::Real(f) if f.is_infinite() => {
                if *f > 0.0 { "Infinity" } else { "-Infinity" }.into()
            }
            Value::Real(f) => f.to_string(),
            Value::Text(t) => t.clone(),
            Value::Blob(b) => format!("\\x{}", hex::encode(b)),
        };
        out.extend_from_slice(text.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}
