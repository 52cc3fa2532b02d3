//! `[databases.NAME]`: a SQLite file (`path`) or a PostgreSQL connection
//! (`url`, a URL or libpq keywords). A PostgreSQL password comes from a
//! file of doctor's own, never from the policy: a policy is read by
//! whoever can read /etc, and is pasted into tickets.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The section as written; [`Database::from_entry`] decides its kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DatabaseEntry {
    path: Option<PathBuf>,
    url: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "super::optional_duration")]
    connect_timeout: Option<Duration>,
    #[serde(default)]
    allow_triggers: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Database {
    Sqlite { path: PathBuf },
    Postgres(Box<PgTarget>),
}

/// How doctor reaches one PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// Host, port, user, database and options; never a password.
    pub config: tokio_postgres::Config,
    pub password_file: Option<PathBuf>,
    pub tls: TlsMode,
    /// A CA bundle to trust instead of the system's (`sslrootcert`).
    pub root_cert: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// Tables with writing row triggers that `sql-exec` may still update.
    pub allow_triggers: Vec<String>,
    /// The connection as an operator reads it (no secrets).
    pub shown: String,
}

/// `sslmode`, as doctor honours it: whenever TLS is used the server's
/// certificate chain and name are verified; there is no unverified TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text (`disable`); the default on a unix socket.
    Disable,
    /// TLS when the server offers it (`prefer`); the default on loopback.
    Prefer,
    /// TLS or no connection (`require`, `verify-ca`, `verify-full`); the
    /// default for any other host.
    Require,
}

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Database {
    /// The kind a section names, or a message for its key.
    pub(super) fn from_entry(entry: DatabaseEntry) -> Result<Database, (&'static str, String)> {
        match (entry.path, entry.url) {
            (Some(_), Some(_)) => Err((
                "url",
                "a database is either a SQLite `path` or a PostgreSQL `url`, not both".into(),
            )),
            (None, None) => Err((
                "path",
                "needs `path` (a SQLite file) or `url` (a PostgreSQL connection)".into(),
            )),
            (Some(path), None) => {
                if entry.password_file.is_some()
                    || entry.connect_timeout.is_some()
                    || !entry.allow_triggers.is_empty()
                {
                    return Err((
                        "path",
                        "password_file, connect_timeout and allow_triggers are for PostgreSQL (`url`), not a SQLite path".into(),
                    ));
                }
                Ok(Database::Sqlite { path })
            }
            (None, Some(url)) => {
                let target = PgTarget::parse(
                    &url,
                    entry.password_file,
                    entry.connect_timeout,
                    entry.allow_triggers,
                )?;
                Ok(Database::Postgres(Box::new(target)))
            }
        }
    }

    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite { path } => Some(path),
            Database::Postgres(_) => None,
        }
    }

    pub fn postgres(&self) -> Option<&PgTarget> {
        match self {
            Database::Postgres(target) => Some(target),
            Database::Sqlite { .. } => None,
        }
    }
}

impl PgTarget {
    fn parse(
        url: &str,
        password_file: Option<PathBuf>,
        connect_timeout: Option<Duration>,
        allow_triggers: Vec<String>,
    ) -> Result<PgTarget, (&'static str, String)> {
        let bad = |why: String| ("url", why);
        let (rest, ssl) = take_ssl_options(url).map_err(bad)?;
        let config = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| bad(format!("not a PostgreSQL URL or libpq keyword string: {e}")))?;
        if config.get_password().is_some() {
            return Err(bad(
                "a password inline is refused (policies are widely readable): put it in a file of doctor's own, mode 0600, and name it with password_file".into(),
            ));
        }
        if config.get_hosts().is_empty() {
            return Err(bad(
                "names no host: give host= (a unix socket directory such as /run/postgresql, or a server)".into(),
            ));
        }
        if config.get_dbname().is_none() || config.get_user().is_none() {
            return Err(bad(
                "must name the database and the user (dbname= and user=, or postgresql://USER@HOST/DBNAME)".into(),
            ));
        }
        let tls = match ssl.mode.as_deref() {
            None => default_tls(&config),
            Some("disable") => TlsMode::Disable,
            Some("allow" | "prefer") => TlsMode::Prefer,
            Some("require" | "verify-ca" | "verify-full") => TlsMode::Require,
            Some(other) => {
                return Err(bad(format!(
                    "sslmode={other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )))
            }
        };
        Ok(PgTarget {
            shown: shown(&config),
            config,
            password_file,
            tls,
            root_cert: ssl.root_cert.map(PathBuf::from),
            connect_timeout: connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            allow_triggers,
        })
    }

    /// Does the connection leave this machine? (Then plain text is a risk.)
    pub fn is_remote(&self) -> bool {
        self.config.get_hosts().iter().any(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => !is_loopback(name),
            tokio_postgres::config::Host::Unix(_) => false,
        })
    }
}

fn default_tls(config: &tokio_postgres::Config) -> TlsMode {
    let hosts = config.get_hosts();
    let unix =
        |h: &tokio_postgres::config::Host| matches!(h, tokio_postgres::config::Host::Unix(_));
    let loopback = |h: &tokio_postgres::config::Host| match h {
        tokio_postgres::config::Host::Tcp(name) => is_loopback(name),
        tokio_postgres::config::Host::Unix(_) => false,
    };
    if hosts.iter().all(unix) {
        TlsMode::Disable
    } else if hosts.iter().all(|h| unix(h) || loopback(h)) {
        TlsMode::Prefer
    } else {
        TlsMode::Require
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn shown(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(dir) => dir.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "postgresql {}@{}/{}",
        config.get_user().unwrap_or_default(),
        host,
        config.get_dbname().unwrap_or_default()
    )
}

#[derive(Debug, Default)]
struct SslOptions {
    mode: Option<String>,
    root_cert: Option<String>,
}

/// `sslmode` and `sslrootcert` are doctor's to honour (the client library
/// knows neither verify-full nor a CA file): taken out of the URL's query
/// or the keyword string, the rest left as written.
fn take_ssl_options(url: &str) -> Result<(String, SslOptions), String> {
    let mut ssl = SslOptions::default();
    let mut keep = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => ssl.mode = Some(value.to_string()),
            "sslrootcert" => ssl.root_cert = Some(value.to_string()),
            "sslcert" | "sslkey" | "sslpassword" => {
                return Err(format!(
                    "{key} (a client certificate) is not supported; use password_file"
                ))
            }
            _ => return Ok(true),
        }
        Ok(false)
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
                    if keep(key, &value)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            if keep(key.trim(), value.trim_matches('\''))? {
                kept.push(word);
            }
        }
        kept.join(" ")
    };
    Ok((rest, ssl))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Result<PgTarget, String> {
        PgTarget::parse(url, None, None, vec![]).map_err(|(_, why)| why)
    }

    #[test]
    fn a_url_and_keywords_name_the_same_database() {
        let a = target("postgresql://doctor@db.internal:5433/app").unwrap();
        let b = target("host=db.internal port=5433 user=doctor dbname=app").unwrap();
        assert_eq!(a.shown, "postgresql doctor@db.internal/app");
        assert_eq!(a.shown, b.shown);
        assert_eq!(a.config.get_ports(), b.config.get_ports());
    }

    #[test]
    fn an_inline_password_is_refused_in_either_spelling() {
        for url in [
            "postgresql://doctor:secret@db/app",
            "host=db user=doctor password=secret dbname=app",
        ] {
            let why = target(url).unwrap_err();
            assert!(why.contains("password_file"), "{url}: {why}");
        }
    }

    #[test]
    fn tls_defaults_to_the_kind_of_host_and_sslmode_overrides() {
        let mode = |url: &str| target(url).unwrap().tls;
        assert_eq!(
            mode("host=/run/postgresql user=d dbname=a"),
            TlsMode::Disable
        );
        assert_eq!(mode("host=127.0.0.1 user=d dbname=a"), TlsMode::Prefer);
        assert_eq!(mode("postgresql://d@db.internal/a"), TlsMode::Require);
        assert_eq!(
            mode("postgresql://d@db.internal/a?sslmode=disable"),
            TlsMode::Disable
        );
        assert_eq!(
            mode("host=localhost user=d dbname=a sslmode=verify-full"),
            TlsMode::Require
        );
        let t = target("postgresql://d@db/a?sslmode=verify-full&sslrootcert=/etc/doctor/ca.pem")
            .unwrap();
        assert_eq!(t.root_cert, Some(PathBuf::from("/etc/doctor/ca.pem")));
        assert!(t.is_remote());
        let why = target("postgresql://d@db/a?sslmode=sometimes").unwrap_err();
        assert!(why.contains("sometimes"), "{why}");
    }

    #[test]
    fn a_connection_must_name_host_user_and_database() {
        assert!(target("user=d dbname=a").unwrap_err().contains("host"));
        assert!(target("host=/run/postgresql dbname=a")
            .unwrap_err()
            .contains("user"));
    }
}
