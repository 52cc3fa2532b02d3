//! The operator's policy: parsed strictly, every error naming file, line and key.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

mod database;
mod locate;
mod ranges;
mod scope;

pub use database::{Database, PgTarget, TlsMode};
pub use scope::{ProcessScope, UserRef, Within};

use locate::toml_error;

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {key}{sep}{message}", sep = if key.is_empty() { "" } else { ": " })]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    /// The dotted key the error is about, empty when the file itself is at fault.
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub file: PathBuf,
    pub source: String,
    pub doctor: DoctorSection,
    pub databases: BTreeMap<String, Database>,
    pub commands: BTreeMap<String, CommandSpec>,
    /// Every engine by name; `[container_engine]` (one engine, the old
    /// spelling) is the engine named `default`.
    pub container_engines: BTreeMap<String, EngineSection>,
    pub plugins: BTreeMap<String, PluginPolicy>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    doctor: DoctorSection,
    #[serde(default)]
    databases: BTreeMap<String, database::DatabaseEntry>,
    #[serde(default)]
    commands: BTreeMap<String, CommandSpec>,
    container_engine: Option<EngineSection>,
    #[serde(default)]
    container_engines: BTreeMap<String, EngineSection>,
    #[serde(default)]
    plugins: BTreeMap<Spanned<String>, Spanned<PluginPolicy>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoctorSection {
    pub journal: Option<PathBuf>,
    #[serde(default)]
    pub plugin_dirs: Vec<PathBuf>,
    /// Compiled plugins are cached here; defaults to `/var/cache/doctor` or the XDG cache dir.
    pub cache_dir: Option<PathBuf>,
    /// The host-wide lock every fixing run takes; defaults to `/run/doctor/fix.lock`.
    pub fix_lock: Option<PathBuf>,
    #[serde(default = "default_max_actions")]
    pub max_actions_per_run: u32,
    /// How long a run waits for another run holding the journal lock.
    #[serde(default = "default_lock_wait", deserialize_with = "duration")]
    pub lock_wait: Duration,
    /// Wall-clock deadline of one plugin call (describe or check).
    #[serde(default = "default_plugin_timeout", deserialize_with = "duration")]
    pub plugin_timeout: Duration,
    #[serde(default = "default_plugin_memory", deserialize_with = "byte_size")]
    pub plugin_memory: u64,
    /// Flap breaker: a finding fixed this many times within `flap_window`
    /// is no longer auto-fixed and is escalated to critical.
    #[serde(default = "default_flap_max_fixes")]
    pub flap_max_fixes: u32,
    #[serde(default = "default_flap_window", deserialize_with = "duration")]
    pub flap_window: Duration,
    /// Rate limit: the same finding is fixed at most once per this interval.
    #[serde(default, deserialize_with = "duration")]
    pub fix_min_interval: Duration,
    /// Most bytes one `files.read` returns, whatever `max-bytes` the plugin asks.
    #[serde(default = "default_file_read_max", deserialize_with = "byte_size")]
    pub file_read_max: u64,
    /// Most bytes of values one `sqlite.query` returns.
    #[serde(default = "default_sql_result_max", deserialize_with = "byte_size")]
    pub sql_result_max: u64,
    /// Per plugin: most keys in its key/value state, and the size of each key and value.
    #[serde(default = "default_kv_max_keys")]
    pub kv_max_keys: u32,
    #[serde(default = "default_kv_max_key_bytes", deserialize_with = "byte_size")]
    pub kv_max_key_bytes: u64,
    #[serde(default = "default_kv_max_value_bytes", deserialize_with = "byte_size")]
    pub kv_max_value_bytes: u64,
    /// Longest a `wait-port-free` action may wait, whatever deadline it asks.
    #[serde(default = "default_action_wait_max", deserialize_with = "duration")]
    pub action_wait_max: Duration,
}

impl Default for DoctorSection {
    fn default() -> Self {
        DoctorSection {
            journal: None,
            plugin_dirs: Vec::new(),
            cache_dir: None,
            fix_lock: None,
            max_actions_per_run: default_max_actions(),
            lock_wait: default_lock_wait(),
            plugin_timeout: default_plugin_timeout(),
            plugin_memory: default_plugin_memory(),
            flap_max_fixes: default_flap_max_fixes(),
            flap_window: default_flap_window(),
            fix_min_interval: Duration::ZERO,
            file_read_max: default_file_read_max(),
            sql_result_max: default_sql_result_max(),
            kv_max_keys: default_kv_max_keys(),
            kv_max_key_bytes: default_kv_max_key_bytes(),
            kv_max_value_bytes: default_kv_max_value_bytes(),
            action_wait_max: default_action_wait_max(),
        }
    }
}

fn default_file_read_max() -> u64 {
    1 << 20
}
fn default_sql_result_max() -> u64 {
    16 << 20
}
fn default_kv_max_keys() -> u32 {
    1000
}
fn default_kv_max_key_bytes() -> u64 {
    256
}
fn default_kv_max_value_bytes() -> u64 {
    64 << 10
}
fn default_action_wait_max() -> Duration {
    Duration::from_secs(60)
}

fn default_flap_max_fixes() -> u32 {
    5
}
fn default_flap_window() -> Duration {
    Duration::from_secs(3600)
}
/// Room for the five incidents of `policies/` in one run.
fn default_max_actions() -> u32 {
    100
}
fn default_lock_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_plugin_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_plugin_memory() -> u64 {
    64 << 20
}

/// A command plugins may ask for by name: argv only, never a shell.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    pub argv: Vec<String>,
    #[serde(default = "default_command_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

fn default_command_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// The Docker-compatible API socket (Docker or `podman system service`).
    pub socket: PathBuf,
    #[serde(default = "default_engine_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

fn default_engine_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FixMode {
    /// Scheduled runs apply fixes.
    Auto,
    /// Only `doctor fix` applies fixes.
    #[default]
    Manual,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginPolicy {
    #[serde(default = "default_every", deserialize_with = "duration")]
    pub every: Duration,
    #[serde(default)]
    pub fix: FixMode,
    /// Pin a third-party plugin to the exact bytes the operator reviewed.
    pub sha256: Option<String>,
    #[serde(default)]
    pub grants: Grants,
    /// This plugin's share of the run's action budget, so one plugin cannot
    /// spend all of `max_actions_per_run`.
    #[serde(default = "default_plugin_max_actions")]
    pub max_actions: u32,
    /// The plugin's own settings, checked against the keys its describe() declares.
    pub config: Option<Spanned<toml::Table>>,
}

impl PluginPolicy {
    pub fn config_table(&self) -> toml::Table {
        self.config
            .as_ref()
            .map(|c| c.get_ref().clone())
            .unwrap_or_default()
    }
}

fn default_plugin_max_actions() -> u32 {
    40
}

fn default_every() -> Duration {
    Duration::from_secs(300)
}

/// What the policy grants a plugin. Deny by default: every field empty.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Which processes the plugin sees: `true`/`"host"` all of them, a scope
    /// table those inside it (also their sockets' owners).
    #[serde(default)]
    pub processes: ProcessScope,
    /// Glob patterns of paths the plugin may stat and read.
    #[serde(default)]
    pub files: Vec<String>,
    /// Database labels the plugin may query.
    #[serde(default)]
    pub sqlite: Vec<String>,
    #[serde(default)]
    pub sockets: bool,
    /// Loopback endpoints the plugin may probe, as `host:port` (port may be `*`).
    #[serde(default)]
    pub probe: Vec<String>,
    #[serde(default)]
    pub containers: bool,
    /// The engines (by name) whose containers the plugin may read and act
    /// on; empty: every engine of the policy.
    #[serde(default)]
    pub engines: Vec<String>,
    pub signal: Option<SignalGrant>,
    /// Glob patterns of paths the host may remove for the plugin.
    #[serde(default)]
    pub files_remove: Vec<String>,
    #[serde(default)]
    pub sqlite_write: Vec<String>,
    /// Name patterns (globs) of containers the host may start, stop or restart.
    #[serde(default)]
    pub containers_write: Vec<String>,
    /// Names of `[commands]` the plugin may ask to run.
    #[serde(default)]
    pub commands: Vec<String>,
}

impl Grants {
    /// Does this policy grant `capability` (a `describe()` name) at all?
    pub fn grants(&self, capability: &str) -> bool {
        match capability {
            "processes" => self.processes.granted(),
            "files" => !self.files.is_empty(),
            "sqlite" => !self.sqlite.is_empty(),
            "sockets" => self.sockets,
            "probe" => !self.probe.is_empty(),
            "containers" => self.containers,
            "signal" => self.signal.as_ref().is_some_and(|s| !s.patterns.is_empty()),
            "files_remove" => !self.files_remove.is_empty(),
            "sqlite_write" => !self.sqlite_write.is_empty(),
            "containers_write" => !self.containers_write.is_empty(),
            "commands" => !self.commands.is_empty(),
            _ => false,
        }
    }
}

/// Which processes the host may signal for a plugin: the command line must
/// match one pattern and, when `uids` is given, the owner must be one of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalGrant {
    #[serde(rename = "match")]
    pub patterns: Vec<String>,
    #[serde(default)]
    pub uids: Vec<u32>,
    /// Where the signalled process must lie; none: the scope of
    /// `grants.processes` (the whole host only if that is the whole host).
    #[serde(default)]
    pub scope: ProcessScope,
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); write e.g. \"30s\", \"5m\", \"1h\""))
}

fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    parse_byte_size(&text).map_err(serde::de::Error::custom)
}

fn parse_byte_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text:?}; write e.g. \"64MiB\""))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size unit in {text:?}; use B, KiB, MiB or GiB"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("size {text:?} is too large (at most {} bytes)", u64::MAX))
}

/// `[container_engines.NAME]`, with the one-engine `[container_engine]` as
/// `default`; an engine's name is how grants and qualified container names
/// (`NAME/container`) refer to it, so it is a plain word.
fn engines(
    path: &Path,
    source: &str,
    single: Option<EngineSection>,
    mut named: BTreeMap<String, EngineSection>,
) -> Result<BTreeMap<String, EngineSection>, PolicyError> {
    let error = |key: String, message: String| PolicyError {
        file: path.display().to_string(),
        line: locate::line_of(source, &key),
        key,
        message,
    };
    if let Some(bad) = named.keys().find(|n| {
        n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }) {
        return Err(error(
            format!("container_engines.{bad}"),
            "an engine's name is letters, digits, - and _ (it qualifies container names as NAME/container)".into(),
        ));
    }
    if let Some(single) = single {
        if named.contains_key("default") {
            return Err(error(
                "container_engine".into(),
                "[container_engine] is the engine named default, and [container_engines.default] names it again".into(),
            ));
        }
        named.insert("default".into(), single);
    }
    Ok(named)
}

/// Each `[databases.NAME]` as its kind; a bad one names its key and line.
fn databases(
    path: &Path,
    source: &str,
    entries: BTreeMap<String, database::DatabaseEntry>,
) -> Result<BTreeMap<String, Database>, PolicyError> {
    entries
        .into_iter()
        .map(|(name, entry)| match Database::from_entry(entry) {
            Ok(db) => Ok((name, db)),
            Err((key, message)) => {
                let key = format!("databases.{name}.{key}");
                Err(PolicyError {
                    file: path.display().to_string(),
                    line: locate::line_of(source, &key),
                    key,
                    message,
                })
            }
        })
        .collect()
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let source = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: path.display().to_string(),
            line: 0,
            key: String::new(),
            message: format!("cannot read policy: {e}"),
        })?;
        Self::parse(path, &source)
    }

    pub fn parse(path: &Path, source: &str) -> Result<Policy, PolicyError> {
        let parsed: PolicyFile =
            toml::from_str(source).map_err(|e| toml_error(path, source, &e))?;
        let databases = databases(path, source, parsed.databases)?;
        let container_engines = engines(
            path,
            source,
            parsed.container_engine,
            parsed.container_engines,
        )?;
        let mut plugins = BTreeMap::new();
        for (name, plugin) in parsed.plugins {
            plugins.insert(name.into_inner(), plugin.into_inner());
        }
        let policy = Policy {
            file: path.to_path_buf(),
            source: source.to_string(),
            doctor: parsed.doctor,
            databases,
            commands: parsed.commands,
            container_engines,
            plugins,
        };
        policy.check_references()?;
        policy.check_ranges()?;
        Ok(policy)
    }

    /// Every number in the policy within the range doctor can act on: one
    /// validator, run by `policy validate` and before every run alike, so a
    /// value that would overflow a deadline or a size never reaches the code
    /// that uses it.
    fn check_ranges(&self) -> Result<(), PolicyError> {
        use self::ranges::*;
        let d = &self.doctor;
        let checks = [
            duration("doctor.lock_wait", d.lock_wait, ZERO, HOUR),
            duration("doctor.plugin_timeout", d.plugin_timeout, MS, HOUR),
            size("doctor.plugin_memory", d.plugin_memory, MIB, 4 * GIB),
            count(
                "doctor.max_actions_per_run",
                d.max_actions_per_run,
                0,
                100_000,
            ),
            count("doctor.flap_max_fixes", d.flap_max_fixes, 0, 100_000),
            duration("doctor.flap_window", d.flap_window, ZERO, YEAR),
            duration("doctor.fix_min_interval", d.fix_min_interval, ZERO, YEAR),
            size("doctor.file_read_max", d.file_read_max, 1, GIB),
            size("doctor.sql_result_max", d.sql_result_max, 1, GIB),
            count("doctor.kv_max_keys", d.kv_max_keys, 0, 1_000_000),
            size("doctor.kv_max_key_bytes", d.kv_max_key_bytes, 1, 64 * KIB),
            size(
                "doctor.kv_max_value_bytes",
                d.kv_max_value_bytes,
                0,
                64 * MIB,
            ),
            duration("doctor.action_wait_max", d.action_wait_max, ZERO, HOUR),
        ];
        let engine = self.container_engines.iter().map(|(name, e)| {
            let key = match name.as_str() {
                "default" => "container_engine.timeout".to_string(),
                _ => format!("container_engines.{name}.timeout"),
            };
            duration(&key, e.timeout, MS, HOUR)
        });
        let commands = self
            .commands
            .iter()
            .map(|(name, c)| duration(&format!("commands.{name}.timeout"), c.timeout, MS, DAY));
        let plugins = self.plugins.iter().flat_map(|(name, p)| {
            [
                duration(&format!("plugins.{name}.every"), p.every, ZERO, YEAR),
                count(
                    &format!("plugins.{name}.max_actions"),
                    p.max_actions,
                    0,
                    100_000,
                ),
            ]
        });
        for outcome in checks
            .into_iter()
            .chain(engine)
            .chain(commands)
            .chain(plugins)
        {
            outcome.map_err(|(key, message)| self.error_at_key(&key, message))?;
        }
        Ok(())
    }

    /// Grants must name databases and commands that the policy defines, and
    /// patterns must compile.
    fn check_references(&self) -> Result<(), PolicyError> {
        for (name, plugin) in &self.plugins {
            let g = &plugin.grants;
            for (grant, labels) in [
                ("grants.sqlite", &g.sqlite),
                ("grants.sqlite_write", &g.sqlite_write),
            ] {
                if let Some(label) = labels.iter().find(|l| !self.databases.contains_key(*l)) {
                    return Err(self.error_at_plugin(
                        name,
                        grant,
                        format!("database {label:?} is not defined under [databases]"),
                    ));
                }
            }
            for command in &g.commands {
                if !self.commands.contains_key(command) {
                    return Err(self.error_at_plugin(
                        name,
                        "grants.commands",
                        format!("command {command:?} is not defined under [commands]"),
                    ));
                }
            }
            if let Some(problem) = g.processes.problem() {
                return Err(self.error_at_plugin(name, "grants.processes", problem));
            }
            if let Some(signal) = &g.signal {
                if let Some(problem) = signal.scope.problem() {
                    return Err(self.error_at_plugin(name, "grants.signal.scope", problem));
                }
                for pattern in &signal.patterns {
                    regex::Regex::new(pattern).map_err(|e| {
                        self.error_at_plugin(
                            name,
                            "grants.signal.match",
                            format!("bad pattern {pattern:?}: {e}"),
                        )
                    })?;
                }
            }
            for endpoint in &g.probe {
                check_probe_grant(endpoint)
                    .map_err(|m| self.error_at_plugin(name, "grants.probe", m))?;
            }
            if g.containers && self.container_engines.is_empty() {
                return Err(self.error_at_plugin(
                    name,
                    "grants.containers",
                    "needs a container engine: [container_engine] or [container_engines.NAME] with its socket".into(),
                ));
            }
            if let Some(engine) = g
                .engines
                .iter()
                .find(|e| !self.container_engines.contains_key(*e))
            {
                return Err(self.error_at_plugin(
                    name,
                    "grants.engines",
                    format!(
                        "engine {engine:?} is not defined (engines: {})",
                        self.container_engines
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            for pattern in g
                .files
                .iter()
                .chain(&g.files_remove)
                .chain(&g.containers_write)
            {
                glob::Pattern::new(pattern).map_err(|e| {
                    self.error_at_plugin(
                        name,
                        "grants",
                        format!("bad glob pattern {pattern:?}: {e}"),
                    )
                })?;
            }
        }
        for (name, command) in &self.commands {
            if command.argv.is_empty() {
                return Err(self.error_at_key(
                    &format!("commands.{name}.argv"),
                    "argv must name a program".into(),
                ));
            }
        }
        Ok(())
    }

    /// An error about `plugins.NAME.KEY`, at the line where that plugin's table starts.
    pub fn error_at_plugin(&self, plugin: &str, key: &str, message: String) -> PolicyError {
        self.error_at_key(&format!("plugins.{plugin}.{key}"), message)
    }

    /// An error about a dotted key, at the first line that mentions its last parts.
    pub fn error_at_key(&self, key: &str, message: String) -> PolicyError {
        PolicyError {
            file: self.file.display().to_string(),
            line: self.line_of(key),
            key: key.to_string(),
            message,
        }
    }

    fn line_of(&self, key: &str) -> usize {
        locate::line_of(&self.source, key)
    }

    /// The SQLite file a label names; None for an unknown or PostgreSQL label.
    pub fn database_path(&self, label: &str) -> Option<&Path> {
        self.databases.get(label)?.sqlite_path()
    }

    pub fn database(&self, label: &str) -> Option<&Database> {
        self.databases.get(label)
    }
}

/// `HOST:PORT` with a loopback HOST (IP literal or localhost) and a port or `*`.
fn check_probe_grant(endpoint: &str) -> Result<(), String> {
    let bad = || {
        format!("{endpoint:?} is not HOST:PORT with a loopback host (127.0.0.1, [::1], localhost) and a port or *")
    };
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    if !loopback || (port != "*" && port.parse::<u16>().is_err()) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("policy.toml"), text)
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = parse("[doctor]\nmax_actions_per_run = 3\nfrobnicate = true\n").unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        assert_eq!(err.key, "doctor.frobnicate");
        assert!(err.message.contains("unknown field"), "{err}");
    }

    #[test]
    fn bad_duration_names_line_and_key() {
        let err = parse("[plugins.pid-file-stop]\nevery = \"soon\"\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        assert_eq!(err.key, "plugins.pid-file-stop.every");
        assert!(err.message.contains("invalid duration"), "{err}");
    }

    #[test]
    fn grant_of_undefined_database_is_an_error() {
        let err = parse("[plugins.x]\ngrants.sqlite = [\"jobs\"]\n").unwrap_err();
        assert_eq!(err.key, "plugins.x.grants.sqlite");
        assert!(err.message.contains("\"jobs\""), "{err}");
    }

    #[test]
    fn probe_grants_must_be_loopback_endpoints() {
        assert!(parse(
            "[plugins.x]\ngrants.probe = [\"127.0.0.1:9403\", \"[::1]:*\", \"localhost:80\"]\n"
        )
        .is_ok());
        let err = parse("[plugins.x]\ngrants.probe = [\"10.0.0.1:80\"]\n").unwrap_err();
        assert_eq!(err.key, "plugins.x.grants.probe");
        assert!(parse("[plugins.x]\ngrants.probe = [\"garbage\"]\n").is_err());
    }

    #[test]
    fn defaults_apply() {
        let p = parse("[plugins.x]\n").unwrap();
        assert_eq!(p.doctor.max_actions_per_run, 100);
        assert_eq!(p.plugins["x"].max_actions, 40);
        assert_eq!(p.plugins["x"].every, Duration::from_secs(300));
        assert_eq!(p.plugins["x"].fix, FixMode::Manual);
        assert!(!p.plugins["x"].grants.processes.granted());
    }

    #[test]
    fn numbers_out_of_range_name_key_line_and_allowed_range() {
        let err = parse("[doctor]\nlock_wait = \"1000000000000000000s\"\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_str()),
            (2, "doctor.lock_wait"),
            "{err}"
        );
        assert!(err.message.contains("allowed: 0s to 1h"), "{err}");
        let err = parse("[doctor]\nplugin_memory = \"99999999999999GiB\"\n").unwrap_err();
        assert_eq!(err.key, "doctor.plugin_memory", "{err}");
        assert!(err.message.contains("too large"), "{err}");
        let err = parse("[doctor]\nplugin_memory = \"8GiB\"\n").unwrap_err();
        assert!(
            err.message.contains("allowed: 1048576 to 4294967296 bytes"),
            "{err}"
        );
        let err =
            parse("[commands.x]\nargv = [\"true\"]\ntimeout = \"9999999999999s\"\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_str()),
            (3, "commands.x.timeout"),
            "{err}"
        );
        let err = parse("[plugins.x]\nevery = \"500y\"\n").unwrap_err();
        assert_eq!(err.key, "plugins.x.every", "{err}");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_byte_size("64MiB"), Ok(64 << 20));
        assert!(parse_byte_size("lots").is_err());
    }
}
