//! What a run tells its reader: human text, or one JSON document; and the
//! exit status as Nagios/Icinga read it.

use crate::journal::{Observed, FindingStatus};
use crate::plan::{ActionOutcome, Severity};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub const EXIT_OK: i32 = 0;
pub const EXIT_WARNING: i32 = 1;
pub const EXIT_CRITICAL: i32 = 2;
pub const EXIT_UNKNOWN: i32 = 3;

#[derive(Debug, Clone, Serialize)]
pub struct PluginSummary {
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// `ok` or `error`.
    pub outcome: String,
    pub error: Option<String>,
    pub duration_ms: u64,
    /// Compiled-component cache: `hit`, `miss`, `off` or `untrusted`.
    pub cache: String,
    #[serde(skip)]
    pub started_at_ms: u64,
}

impl PluginSummary {
    pub fn new(name: &str, started_at_ms: u64) -> Self {
        PluginSummary {
            name: name.to_string(),
            version: String::new(),
            sha256: String::new(),
            outcome: "ok".into(),
            error: None,
            duration_ms: 0,
            cache: "off".into(),
            started_at_ms,
        }
    }

    pub fn loaded(&mut self, version: &str, sha256: &str, cache: &str) {
        self.version = version.to_string();
        self.sha256 = sha256.to_string();
        self.cache = cache.to_string();
    }

    pub fn fail(&mut self, error: String, elapsed: std::time::Duration) {
        tracing::warn!(plugin = %self.name, "plugin failed: {error}");
        self.outcome = "error".into();
        self.error = Some(error);
        self.duration_ms = elapsed.as_millis() as u64;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionOut {
    pub kind: String,
    pub description: String,
    pub outcome: ActionOutcome,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FindingOut {
    pub plugin: String,
    pub key: String,
    pub severity: Severity,
    pub subject: String,
    pub message: String,
    pub status: FindingStatus,
    pub evidence: BTreeMap<String, String>,
    pub actions: Vec<ActionOut>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: i64,
    pub mode: String,
    pub exit_code: i32,
    pub duration_ms: u64,
    pub plugins: Vec<PluginSummary>,
    pub findings: Vec<FindingOut>,
    /// Earlier runs found unfinished (killed mid-way) and marked interrupted.
    pub interrupted_runs: Vec<i64>,
    /// Actions of those runs that had begun (intent journaled) without an
    /// outcome: each re-observed by this run, never redone.
    pub interrupted_actions: Vec<crate::journal::InterruptedAction>,
}

impl RunReport {
    pub fn new(run_id: i64, mode: &str, interrupted_runs: Vec<i64>) -> Self {
        RunReport {
            run_id,
            mode: mode.to_string(),
            exit_code: EXIT_OK,
            duration_ms: 0,
            plugins: Vec::new(),
            findings: Vec::new(),
            interrupted_runs,
            interrupted_actions: Vec::new(),
        }
    }

    pub fn add(&mut self, summary: PluginSummary, observed: Vec<Observed>) {
        for o in observed {
            self.findings.push(FindingOut {
                plugin: summary.name.clone(),
                key: o.finding.key,
                severity: o.finding.severity,
                subject: o.finding.subject,
                message: o.finding.message,
                status: o.status,
                evidence: o.finding.evidence.into_iter().collect(),
                actions: o
                    .actions
                    .into_iter()
                    .map(|a| ActionOut { kind: a.kind.to_string(), description: a.description, outcome: a.outcome, detail: a.detail })
                    .collect(),
            });
        }
        self.plugins.push(summary);
    }

    /// Open findings remembered by the journal, when no plugin ran now.
    pub fn add_remembered(&mut self, rows: Vec<crate::journal::query::FindingRow>) {
        for row in rows {
            self.findings.push(FindingOut {
                plugin: row.plugin,
                key: row.key,
                severity: Severity::parse(&row.severity).unwrap_or(Severity::Info),
                subject: row.subject,
                message: row.message,
                status: FindingStatus::Persisting,
                evidence: BTreeMap::new(),
                actions: Vec::new(),
            });
        }
    }

    /// Sort for stable output and settle the exit code.
    pub fn finish(&mut self, duration_ms: u64) {
        self.duration_ms = duration_ms;
        self.plugins.sort_by(|a, b| a.name.cmp(&b.name));
        self.findings.sort_by(|a, b| (b.severity, &a.plugin, &a.key).cmp(&(a.severity, &b.plugin, &b.key)));
        self.exit_code = self.compute_exit_code();
    }

    /// 2 for anything critical, a failed fix or a finding that outlived its
    /// fix; 3 when a plugin could not run; 1 for warnings; else 0.
    fn compute_exit_code(&self) -> i32 {
        let open = || self.open_findings();
        let failed_fix = self.findings.iter().flat_map(|f| &f.actions).any(|a| matches!(a.outcome, ActionOutcome::Failed | ActionOutcome::Refused));
        let outlived_fix = open().any(|f| f.actions.iter().any(|a| a.outcome != ActionOutcome::Planned));
        if failed_fix || outlived_fix || open().any(|f| f.severity == Severity::Critical) {
            EXIT_CRITICAL
        } else if self.plugins.iter().any(|p| p.error.is_some()) {
            EXIT_UNKNOWN
        } else if open().any(|f| f.severity == Severity::Warning) {
            EXIT_WARNING
        } else {
            EXIT_OK
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The report for people; `color`: with ANSI styles (the caller strips
    /// them where colour is not wanted). It ends with the run's duration.
    pub fn to_human(&self, color: bool) -> String {
        let paint = |style: anstyle::Style, text: &str| if color { format!("{style}{text}{style:#}") } else { text.to_string() };
        let mut out = String::new();
        let open = self.open_findings().count();
        if self.run_id == 0 {
            let _ = writeln!(out, "doctor {}: no plugin is due; {open} open finding(s) from earlier runs, exit {}", self.mode, self.exit_code);
        } else {
            let _ = writeln!(
                out,
                "doctor {} (run {}): {} plugin(s), {} open finding(s), exit {}",
                self.mode,
                self.run_id,
                self.plugins.len(),
                open,
                self.exit_code
            );
        }
        for run in &self.interrupted_runs {
            let _ = writeln!(out, "note: run {run} was interrupted before it finished (its journal entries are kept)");
        }
        for a in &self.interrupted_actions {
            let _ = writeln!(
                out,
                "note: run {} {} {} ({}) was interrupted — outcome unknown; now: {}",
                a.run_id, a.plugin, a.kind, a.description, a.found
            );
        }
        for p in self.plugins.iter().filter(|p| p.error.is_some()) {
            let _ = writeln!(out, "{} {}: {}", paint(style::ERROR, "ERROR   "), p.name, p.error.as_deref().unwrap_or_default());
        }
        for f in &self.findings {
            let severity = format!("{:<8}", f.severity.as_str().to_uppercase());
            let _ = writeln!(
                out,
                "{} {} {} [{}]: {}",
                paint(style::severity(f.severity), &severity),
                f.plugin,
                f.key,
                paint(style::status(f.status), f.status.as_str()),
                f.message
            );
            for a in &f.actions {
                let detail = if a.detail.is_empty() { String::new() } else { format!(" — {}", a.detail) };
                let outcome = format!("{} {}", arrow(a.outcome), a.outcome.as_str());
                let _ = writeln!(out, "    {}: {}{}", paint(style::outcome(a.outcome), &outcome), a.description, detail);
            }
        }
        let _ = writeln!(out, "{}", paint(style::DIM, &format!("finished in {}", seconds(self.duration_ms))));
        out
    }
}

/// `0.42 s`, `12.3 s`.
pub fn seconds(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.2} s", ms as f64 / 1000.0)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// The human report's colours: severity, status, outcome.
mod style {
    use super::{ActionOutcome, Severity, FindingStatus};
    use anstyle::{AnsiColor, Style};

    pub const ERROR: Style = AnsiColor::Red.on_default().bold();
    pub const DIM: Style = Style::new().dimmed();

    pub fn severity(s: Severity) -> Style {
        match s {
            Severity::Critical => AnsiColor::Red.on_default().bold(),
            Severity::Warning => AnsiColor::Yellow.on_default().bold(),
            Severity::Info => AnsiColor::Cyan.on_default(),
        }
    }

    pub fn status(s: FindingStatus) -> Style {
        match s {
            FindingStatus::New => Style::new().bold(),
            FindingStatus::Fixed | FindingStatus::Resolved => AnsiColor::Green.on_default(),
            FindingStatus::Persisting => Style::new(),
        }
    }

    pub fn outcome(o: ActionOutcome) -> Style {
        match o {
            ActionOutcome::Applied => AnsiColor::Green.on_default(),
            ActionOutcome::Failed | ActionOutcome::Refused => AnsiColor::Red.on_default(),
            ActionOutcome::Planned => AnsiColor::Blue.on_default(),
            ActionOutcome::Skipped => Style::new().dimmed(),
        }
    }
}

impl RunReport {
    fn open_findings(&self) -> impl Iterator<Item = &FindingOut> {
        self.findings.iter().filter(|f| f.status.is_open())
    }

    /// node_exporter textfile-collector format.
    pub fn to_prometheus(&self, now_unix_ms: u64) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        // Every plugin with a result or an open finding, whether or not it ran now.
        let names: std::collections::BTreeSet<&str> =
            self.plugins.iter().map(|p| p.name.as_str()).chain(self.findings.iter().map(|f| f.plugin.as_str())).collect();
        let mut findings = Vec::new();
        for name in &names {
            for severity in [Severity::Info, Severity::Warning, Severity::Critical] {
                let n = self.open_findings().filter(|f| f.plugin == *name && f.severity == severity).count();
                findings.push((labels(&[("plugin", name), ("severity", severity.as_str())]), n.to_string()));
            }
        }
        family("doctor_findings", "gauge", "Open findings by plugin and severity after the last run.", findings);
        family(
            "doctor_plugin_duration_seconds",
            "gauge",
            "Wall-clock time of each plugin in the last run.",
            self.plugins.iter().map(|p| (labels(&[("plugin", &p.name)]), format!("{:.3}", p.duration_ms as f64 / 1000.0))).collect(),
        );
        family(
            "doctor_plugin_up",
            "gauge",
            "1 if the plugin ran without error in the last run, else 0.",
            self.plugins.iter().map(|p| (labels(&[("plugin", &p.name)]), u8::from(p.error.is_none()).to_string())).collect(),
        );
        let mut actions = Vec::new();
        for p in &self.plugins {
            for outcome in [ActionOutcome::Planned, ActionOutcome::Applied, ActionOutcome::Failed, ActionOutcome::Skipped, ActionOutcome::Refused] {
                let n = self.findings.iter().filter(|f| f.plugin == p.name).flat_map(|f| &f.actions).filter(|a| a.outcome == outcome).count();
                actions.push((labels(&[("plugin", &p.name), ("outcome", outcome.as_str())]), n.to_string()));
            }
        }
        family("doctor_actions", "gauge", "Actions of the last run by plugin and outcome.", actions);
        family("doctor_exit_code", "gauge", "Exit status of the last run (0 ok, 1 warning, 2 critical, 3 unknown).", vec![(String::new(), self.exit_code.to_string())]);
        family(
            "doctor_last_run_timestamp_seconds",
            "gauge",
            "Unix time at which the last run finished.",
            vec![(String::new(), format!("{:.3}", now_unix_ms as f64 / 1000.0))],
        );
        out
    }

    /// One Nagios/Icinga status line with performance data.
    pub fn to_nagios(&self) -> String {
        let state = match self.exit_code {
            EXIT_OK => "OK",
            EXIT_WARNING => "WARNING",
            EXIT_CRITICAL => "CRITICAL",
            _ => "UNKNOWN",
        };
        let count = |s: Severity| self.open_findings().filter(|f| f.severity == s).count();
        let errors = self.plugins.iter().filter(|p| p.error.is_some()).count();
        let worst = self.open_findings().find(|f| f.severity != Severity::Info).map(|f| format!("; {}: {}", f.plugin, f.message)).unwrap_or_default();
        format!(
            "DOCTOR {state} - {} critical, {} warning, {errors} plugin error(s){worst} | critical={};;;0 warning={};;;0 info={};;;0 plugin_errors={errors};;;0 duration={:.3}s",
            count(Severity::Critical),
            count(Severity::Warning),
            count(Severity::Critical),
            count(Severity::Warning),
            count(Severity::Info),
            self.duration_ms as f64 / 1000.0
        )
    }
}

/// `{a="x",b="y"}` with Prometheus label escaping.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn arrow(outcome: ActionOutcome) -> &'static str {
    match outcome {
        ActionOutcome::Planned => "→",
        ActionOutcome::Applied => "✓",
        ActionOutcome::Failed | ActionOutcome::Refused => "✗",
        ActionOutcome::Skipped => "·",
    }
}

/// Write `text` to `path` through a temp file and a rename, so a reader
/// (node_exporter, systemd) never sees half a file.
pub fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.as_file().sync_all()?;
    let file = tmp.persist(path).map_err(|e| e.error)?;
    // NamedTempFile creates 0600; outputs are meant to be read by others.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}
