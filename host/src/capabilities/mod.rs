//! The host side of the plugin imports. Each host function checks its grant
//! in its first line and answers a `denied` value naming the missing grant.

pub mod grants;
mod host_api;
mod files;
mod process_table;
mod sqlite_api;
mod net_api;

pub use grants::{Denied, EffectiveGrants, KNOWN_CAPABILITIES};
pub(crate) use sqlite_api::from_wit as sqlite_value;

use crate::facts::containers::Engine;
use crate::facts::processes::{self, ProcessInfo};
use crate::facts::sockets::{self, Listener};
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
    engine: Option<Arc<Engine>>,
}

impl RunFacts {
    pub fn new(policy: Arc<Policy>) -> Arc<Self> {
        let engine = policy.container_engine.as_ref().map(|c| Arc::new(Engine::new(c.socket.clone(), c.timeout)));
        Arc::new(RunFacts { policy, processes: OnceLock::new(), listeners: OnceLock::new(), engine })
    }

    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_deref()
    }

    pub fn engine_handle(&self) -> Option<Arc<Engine>> {
        self.engine.clone()
    }

    pub fn listeners(&self) -> Result<Arc<Vec<Listener>>, String> {
        self.listeners
            .get_or_init(|| sockets::listeners().map(Arc::new).map_err(|e| format!("reading /proc/net: {e}")))
            .clone()
    }

    pub fn processes(&self) -> Result<Arc<Vec<ProcessInfo>>, String> {
        self.processes
            .get_or_init(|| processes::snapshot().map(Arc::new).map_err(|e| format!("reading /proc: {e}")))
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
}

impl CapabilityContext {
    pub fn new(plugin: &str, grants: EffectiveGrants, facts: Arc<RunFacts>, kv: Arc<Mutex<BTreeMap<String, String>>>) -> Self {
        CapabilityContext { plugin: plugin.to_string(), grants, facts, kv, logs: Vec::new(), deadline: std::time::Instant::now() }
    }

    /// What is left of the plugin's time, capped by `own`.
    pub fn time_left(&self, own: std::time::Duration) -> std::time::Duration {
        self.deadline.saturating_duration_since(std::time::Instant::now()).min(own)
    }
}

/// Bounds on what a plugin can make the host hold.
pub const MAX_LOG_LINES: usize = 200;
pub const MAX_LOG_LINE_BYTES: usize = 4096;

pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
