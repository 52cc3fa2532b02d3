//! The host side of the plugin imports. Each host function checks its grant
//! in its first line and answers a `denied` value naming the missing grant.

pub mod grants;
// One file per WIT interface, each host function opening with its grant check.
mod containers;
mod contract_v0_1;
mod contract_v0_2;
mod database;
mod files;
mod host;
mod link;
mod probe;
mod processes;
pub mod scope;
mod sockets;
mod sqlite;
// Live, recorded or replayed: the one passage of every import.
mod tape;

pub(crate) use self::sqlite::from_wit as sqlite_value;
pub use grants::{Denied, EffectiveGrants, KNOWN_CAPABILITIES};
pub use link::{all_contracts, CurrentContract, Old};
pub use tape::{RecordedCall, Tape, MAX_RECORDED_BYTES};

use crate::facts::engines::Engines;
use crate::facts::processes::{self as process_facts, ProcessInfo};
use crate::facts::sockets::{self as socket_facts, Listener};
use crate::policy::Policy;
use crate::runtime::bindings::doctor::plugin::types::Error as WitError;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

impl From<Denied> for WitError {
    fn from(d: Denied) -> Self {
        WitError::Denied(d.0)
    }
}

/// Facts shared by every plugin of one run: read once, on first use.
pub struct RunFacts {
    pub policy: Arc<Policy>,
    processes: OnceLock<Result<Arc<Vec<ProcessInfo>>, String>>,
    listeners: OnceLock<Result<Arc<Vec<Listener>>, String>>,
    engines: Arc<Engines>,
}

impl RunFacts {
    pub fn new(policy: Arc<Policy>) -> Arc<Self> {
        let engines = Arc::new(Engines::new(
            policy
                .container_engines
                .iter()
                .map(|(name, e)| (name.as_str(), e.socket.as_path(), e.timeout)),
        ));
        Arc::new(RunFacts {
            policy,
            processes: OnceLock::new(),
            listeners: OnceLock::new(),
            engines,
        })
    }

    pub fn engines(&self) -> &Engines {
        &self.engines
    }

    pub fn engines_handle(&self) -> Arc<Engines> {
        self.engines.clone()
    }

    pub fn listeners(&self) -> Result<Arc<Vec<Listener>>, String> {
        self.listeners
            .get_or_init(|| {
                socket_facts::listeners()
                    .map(Arc::new)
                    .map_err(|e| format!("reading /proc/net: {e}"))
            })
            .clone()
    }

    /// The run's process snapshot if a call has read it already: a
    /// filtered answer is then taken from it instead of reading /proc again.
    pub fn processes_read(&self) -> Option<Arc<Vec<ProcessInfo>>> {
        self.processes.get().and_then(|r| r.as_ref().ok()).cloned()
    }

    pub fn processes(&self) -> Result<Arc<Vec<ProcessInfo>>, String> {
        self.processes
            .get_or_init(|| {
                process_facts::snapshot()
                    .map(Arc::new)
                    .map_err(|e| format!("reading /proc: {e}"))
            })
            .clone()
    }
}

/// A line a plugin logged during its call.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// Per-plugin state behind the imports of one plugin call.
pub struct CapabilityContext {
    pub plugin: String,
    pub grants: EffectiveGrants,
    pub facts: Arc<RunFacts>,
    /// The plugin's key/value state, loaded from the journal before the call
    /// and written back with the plugin's result.
    pub kv: Arc<Mutex<BTreeMap<String, String>>>,
    pub logs: Vec<LogLine>,
    /// When the plugin's current call must end; set by the runtime at the
    /// start of each call. Host calls that wait take the minimum of their
    /// own timeout and what is left of this.
    pub deadline: std::time::Instant,
    /// Live calls, recorded calls, or answers replayed from a recording.
    pub tape: Tape,
    /// PostgreSQL connections opened by this plugin's queries, per label.
    pg_sessions: BTreeMap<String, crate::facts::postgres::Session>,
}

impl CapabilityContext {
    pub fn new(
        plugin: &str,
        grants: EffectiveGrants,
        facts: Arc<RunFacts>,
        kv: Arc<Mutex<BTreeMap<String, String>>>,
    ) -> Self {
        CapabilityContext {
            plugin: plugin.to_string(),
            grants,
            facts,
            kv,
            logs: Vec::new(),
            deadline: std::time::Instant::now(),
            tape: Tape::Live,
            pg_sessions: BTreeMap::new(),
        }
    }

    /// What is left of the plugin's time, capped by `own`.
    pub fn time_left(&self, own: std::time::Duration) -> std::time::Duration {
        self.deadline
            .saturating_duration_since(std::time::Instant::now())
            .min(own)
    }
}

/// Bounds on what a plugin can make the host hold.
pub const MAX_LOG_LINES: usize = 200;
pub const MAX_LOG_LINE_BYTES: usize = 4096;

/// A context for the capabilities' own tests: plugin `p`, requesting every
/// read capability, with exactly `grants` granted.
#[cfg(test)]
pub(crate) fn test_context(grants: crate::policy::Grants) -> CapabilityContext {
    let requested: Vec<String> = [
        "processes",
        "files",
        "sqlite",
        "sockets",
        "probe",
        "containers",
    ]
    .map(String::from)
    .to_vec();
    let policy = Arc::new(
        Policy::parse(std::path::Path::new("t.toml"), "").expect("an empty policy parses"),
    );
    let mut ctx = CapabilityContext::new(
        "p",
        EffectiveGrants::new("p", &requested, &grants),
        RunFacts::new(policy),
        Default::default(),
    );
    ctx.deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    ctx
}

/// The denial a plugin gets, or a panic naming what came instead.
#[cfg(test)]
pub(crate) fn denial<T: std::fmt::Debug>(answer: wasmtime::Result<Result<T, WitError>>) -> String {
    match answer.expect("a denial is a value, never a trap") {
        Err(WitError::Denied(why)) => why,
        other => panic!("expected a denial, got {other:?}"),
    }
}
