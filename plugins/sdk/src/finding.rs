//! Builders for what a plugin returns: its description and its findings.

use crate::bindings::doctor::plugin::types as wit;
use crate::processes::Process;
use crate::{Action, Evidence, ProcessRef, Severity, Signal, SqlValue};

/// What `describe()` returns: name, summary, requested capabilities, config keys.
pub struct Info {
    name: String,
    version: String,
    summary: String,
    capabilities: Vec<String>,
    config: Vec<wit::ConfigKey>,
}

impl Info {
    pub fn new(name: &str, summary: &str) -> Self {
        Info {
            name: name.to_string(),
            // Empty: the plugin crate's own version (see `with_default_version`).
            version: String::new(),
            summary: summary.to_string(),
            capabilities: Vec::new(),
            config: Vec::new(),
        }
    }

    /// Override the version `describe()` reports (default: the plugin
    /// crate's `CARGO_PKG_VERSION`).
    pub fn version(mut self, version: &str) -> Self {
        self.version = version.to_string();
        self
    }

    pub(crate) fn with_default_version(mut self, crate_version: &str) -> Self {
        if self.version.is_empty() {
            self.version = crate_version.to_string();
        }
        self
    }

    pub fn capability(mut self, name: &str) -> Self {
        self.capabilities.push(name.to_string());
        self
    }

    /// Several capabilities at once, in this order.
    pub fn capabilities(self, names: &[&str]) -> Self {
        names.iter().fold(self, |info, name| info.capability(name))
    }

    /// Declare a config key; `default` is JSON text, `None` when required.
    pub fn config_key(mut self, name: &str, default: Option<&str>, description: &str) -> Self {
        self.config.push(wit::ConfigKey {
            name: name.to_string(),
            default: default.unwrap_or_default().to_string(),
            description: description.to_string(),
        });
        self
    }

    /// Declare every key of a [`config!`](crate::config!) struct, in field order.
    pub fn config<C: crate::config::DeclaredConfig>(mut self) -> Self {
        for key in C::config_keys() {
            self = self.config_key(key.name, key.default, &key.description);
        }
        self
    }

    pub(crate) fn into_wit(self) -> wit::PluginInfo {
        wit::PluginInfo {
            name: self.name,
            version: self.version,
            summary: self.summary,
            capabilities: self.capabilities,
            config: self.config,
        }
    }
}

/// One thing the plugin found, with the ordered actions that would fix it.
pub struct Finding {
    inner: wit::Finding,
}

impl Finding {
    /// `key` must be stable across runs and unique within the plugin.
    pub fn new(
        key: impl Into<String>,
        severity: Severity,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            inner: wit::Finding {
                key: key.into(),
                severity,
                subject: subject.into(),
                message: message.into(),
                evidence: Vec::new(),
                actions: Vec::new(),
            },
        }
    }

    pub fn info(
        key: impl Into<String>,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(key, Severity::Info, subject, message)
    }

    pub fn warning(
        key: impl Into<String>,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(key, Severity::Warning, subject, message)
    }

    pub fn critical(
        key: impl Into<String>,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(key, Severity::Critical, subject, message)
    }

    pub fn evidence(mut self, key: &str, value: impl ToString) -> Self {
        self.inner.evidence.push(Evidence {
            key: key.to_string(),
            value: value.to_string(),
        });
        self
    }

    /// Append an action that runs whatever happened to the one before it.
    pub fn action(self, action: Action, description: impl Into<String>) -> Self {
        self.push_action(action, description.into(), false)
    }

    /// Append an action that runs only if every earlier action of this finding succeeded.
    pub fn then(self, action: Action, description: impl Into<String>) -> Self {
        self.push_action(action, description.into(), true)
    }

    /// Append the host's TERM → `grace_ms` → KILL of `process` (pinned to
    /// its pid and start time), described as `label: TERM, N ms grace, KILL`.
    /// Every plugin that stops a process says it the same way.
    pub fn stop(self, process: &Process, grace_ms: u32, label: impl std::fmt::Display) -> Self {
        self.action(
            Action::stop_process(process.id, grace_ms),
            format!("{label}: TERM, {grace_ms} ms grace, KILL"),
        )
    }

    fn push_action(mut self, action: Action, description: String, needs_previous: bool) -> Self {
        self.inner.actions.push(wit::PlannedAction {
            action,
            description,
            needs_previous,
        });
        self
    }

    pub fn key(&self) -> &str {
        &self.inner.key
    }

    pub fn severity(&self) -> Severity {
        self.inner.severity
    }

    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// How many actions the finding proposes (for a plugin's native tests).
    pub fn action_count(&self) -> usize {
        self.inner.actions.len()
    }

    pub(crate) fn into_wit(self) -> wit::Finding {
        self.inner
    }
}

/// What findings are about: one named thing (`port 9403`, `container web`,
/// `table jobs`). Its findings are keyed `KIND:NAME:RULE`
/// (`port:9403:stale-owner`), which stays the same across runs and is unique
/// within the plugin, and name it as their subject (`port 9403`).
pub struct Subject {
    kind: &'static str,
    name: String,
}

impl Subject {
    pub fn new(kind: &'static str, name: impl std::fmt::Display) -> Subject {
        Subject {
            kind,
            name: name.to_string(),
        }
    }

    /// A finding about this subject under `rule`.
    pub fn finding(&self, severity: Severity, rule: &str, message: impl Into<String>) -> Finding {
        Finding::new(
            format!("{}:{}:{rule}", self.kind, self.name),
            severity,
            format!("{} {}", self.kind, self.name),
            message,
        )
    }
}

/// Constructors that read like the plan they make.
impl Action {
    pub fn stop_process(process: ProcessRef, grace_ms: u32) -> Action {
        Action::StopProcess(wit::StopProcess { process, grace_ms })
    }

    pub fn signal_process(process: ProcessRef, signal: Signal) -> Action {
        Action::SignalProcess(wit::SignalProcess { process, signal })
    }

    pub fn sql_exec(db: &str, statement: &str, params: Vec<SqlValue>, max_rows: u32) -> Action {
        Action::SqlExec(wit::SqlExec {
            db: db.to_string(),
            statement: statement.to_string(),
            params,
            max_rows,
        })
    }

    pub fn remove_file(path: &str) -> Action {
        Action::RemoveFile(path.to_string())
    }

    pub fn wait_port_free(port: u16, deadline_ms: u32) -> Action {
        Action::WaitPortFree(wit::WaitPortFree { port, deadline_ms })
    }

    pub fn run_command(name: &str) -> Action {
        Action::RunCommand(name.to_string())
    }

    /// Stop a container through its engine, which waits `grace_ms` (whole
    /// seconds, rounded up) between its stop signal and KILL; None: the
    /// engine's default.
    pub fn container_stop(id: &str, grace_ms: Option<u32>) -> Action {
        Action::ContainerStop(wit::ContainerStop {
            id: id.to_string(),
            grace_ms,
        })
    }

    pub fn container_restart(id: &str, grace_ms: Option<u32>) -> Action {
        Action::ContainerRestart(wit::ContainerStop {
            id: id.to_string(),
            grace_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_keys_its_findings_kind_name_rule() {
        let f = Subject::new("port", 9403)
            .finding(Severity::Warning, "stale-owner", "m")
            .into_wit();
        assert_eq!(
            (f.key.as_str(), f.subject.as_str(), f.severity),
            ("port:9403:stale-owner", "port 9403", Severity::Warning)
        );
    }
}
