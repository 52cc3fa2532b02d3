//! What plugins report, in the host's own terms (independent of the WIT
//! version a plugin was built against): findings and the actions they
//! propose. `from_plugin` turns a plugin's report into these, bounded, and
//! `check` is the one way to call a plugin's check so that it is.

mod from_plugin;

pub use from_plugin::HOST_KEY_PREFIX;

use crate::capabilities::CapabilityContext;
use crate::facts::sqlite::Value;
use crate::runtime::{Limits, PluginFailure};
use crate::worker::{LoadedPlugin, Sandbox};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        match text {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub key: String,
    pub severity: Severity,
    pub subject: String,
    pub message: String,
    pub evidence: Vec<(String, String)>,
    pub actions: Vec<PlannedAction>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedAction {
    pub action: Action,
    pub description: String,
    /// Run only if every earlier action of the same finding succeeded.
    pub needs_previous: bool,
    /// The interrupted intent this action carries out (a resume); never
    /// set from a plugin's report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumes: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Term,
    Kill,
    Hup,
    Int,
    Quit,
    Usr1,
    Usr2,
}

impl Signal {
    pub fn to_nix(self) -> nix::sys::signal::Signal {
        use nix::sys::signal::Signal as S;
        match self {
            Signal::Term => S::SIGTERM,
            Signal::Kill => S::SIGKILL,
            Signal::Hup => S::SIGHUP,
            Signal::Int => S::SIGINT,
            Signal::Quit => S::SIGQUIT,
            Signal::Usr1 => S::SIGUSR1,
            Signal::Usr2 => S::SIGUSR2,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    StopProcess {
        pid: u32,
        start_time: u64,
        grace_ms: u32,
    },
    SignalProcess {
        pid: u32,
        start_time: u64,
        signal: Signal,
    },
    SqlExec {
        db: String,
        statement: String,
        params: Vec<Value>,
        max_rows: u32,
    },
    RemoveFile {
        path: String,
    },
    ContainerStart {
        id: String,
    },
    ContainerStop {
        id: String,
        /// The engine's stop timeout; None: the engine's default.
        grace_ms: Option<u32>,
    },
    ContainerRestart {
        id: String,
        grace_ms: Option<u32>,
    },
    RunCommand {
        name: String,
    },
    WaitPortFree {
        port: u16,
        deadline_ms: u32,
    },
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::StopProcess { .. } => "stop-process",
            Action::SignalProcess { .. } => "signal-process",
            Action::SqlExec { .. } => "sql-exec",
            Action::RemoveFile { .. } => "remove-file",
            Action::ContainerStart { .. } => "container-start",
            Action::ContainerStop { .. } => "container-stop",
            Action::ContainerRestart { .. } => "container-restart",
            Action::RunCommand { .. } => "run-command",
            Action::WaitPortFree { .. } => "wait-port-free",
        }
    }

    /// The action's parameters as JSON, for the journal.
    pub fn params_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A plugin's `check`, its report bounded into findings: the one way the
/// run, the re-check, `policy validate` and `plugins replay` call a plugin.
/// The host comes back with the plugin's logs and state.
pub fn check(
    runtime: &Sandbox,
    loaded: &LoadedPlugin,
    host: CapabilityContext,
    config_json: &str,
    limits: Limits,
) -> (
    Result<Vec<Finding>, PluginFailure>,
    Option<CapabilityContext>,
) {
    let (report, host) = runtime.check_unbounded(loaded, host, config_json, limits);
    (report.and_then(from_plugin::from_report), host)
}
