//! What a run tells its reader: the report model and exit status here, one
//! file per format (human, JSON, Nagios, Prometheus), the journal's views,
//! and writing to stdout or `--output`.

/// `print!` that never panics: when stdout is closed (`doctor journal | head -1`)
/// doctor ends quietly with 141, as a process killed by SIGPIPE would. The
/// output is written only after a run is journaled, so nothing is lost.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if write!(stdout, $($arg)*).and_then(|()| stdout.flush()).is_err() {
            std::process::exit(141);
        }
    }};
}

macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => {{ out!($($arg)*); out!("\n"); }};
}

/// `eprintln!` that never panics on a closed stderr.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod human;
pub mod journal_views;
mod json;
mod nagios;
mod prometheus;

pub use human::for_stdout;

use crate::findings::Severity;
use crate::journal::{FindingStatus, Observed};
use crate::plan::ActionOutcome;
use serde::Serialize;
use std::collections::BTreeMap;

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
                    .map(|a| ActionOut {
                        kind: a.kind.to_string(),
                        description: a.description,
                        outcome: a.outcome,
                        detail: a.detail,
                    })
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
        self.findings
            .sort_by(|a, b| (b.severity, &a.plugin, &a.key).cmp(&(a.severity, &b.plugin, &b.key)));
        self.exit_code = self.compute_exit_code();
    }

    /// 2 for anything critical, a failed fix or a finding that outlived its
    /// fix; 3 when a plugin could not run; 1 for warnings; else 0.
    fn compute_exit_code(&self) -> i32 {
        let open = || self.open_findings();
        let failed_fix = self
            .findings
            .iter()
            .flat_map(|f| &f.actions)
            .any(|a| matches!(a.outcome, ActionOutcome::Failed | ActionOutcome::Refused));
        let outlived_fix = open().any(|f| {
            f.actions
                .iter()
                .any(|a| a.outcome != ActionOutcome::Planned)
        });
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

    pub(crate) fn open_findings(&self) -> impl Iterator<Item = &FindingOut> {
        self.findings.iter().filter(|f| f.status.is_open())
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

/// Write `text` to `path` through a temp file and a rename, so a reader
/// (node_exporter, systemd) never sees half a file.
pub fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.as_file().sync_all()?;
    let file = tmp.persist(path).map_err(|e| e.error)?;
    // NamedTempFile creates 0600; outputs are meant to be read by others.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}
