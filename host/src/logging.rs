//! Where logs go: journald (with priorities) when systemd captures the
//! doctor's stderr, else text on stderr; never both. What a scheduled run
//! logs: one summary line, and each new, fixed or failed finding once.

use crate::findings::Severity;
use crate::plan::ActionOutcome;
use crate::report::RunReport;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// By default only warnings, plus this module's run summaries (INFO): a
/// timer tick must not flood the journal with every action's details.
const DEFAULT_FILTER: &str = "warn,doctor::logging=info";

/// `level`: `--log-level`, which outranks `$DOCTOR_LOG`.
pub fn init(level: Option<&str>) {
    let filter = match level {
        Some(level) => tracing_subscriber::EnvFilter::new(level),
        None => tracing_subscriber::EnvFilter::try_from_env("DOCTOR_LOG")
            .unwrap_or_else(|_| DEFAULT_FILTER.into()),
    };
    if is_journal_stream(libc::STDERR_FILENO) {
        // The field prefix keeps our fields (DOCTOR_PLUGIN, DOCTOR_RUN_ID)
        // apart from journald's own; a socket that does not answer falls
        // back to stderr, which systemd still captures.
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer
                .with_syslog_identifier("doctor".into())
                .with_field_prefix(Some("DOCTOR".into()));
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init();
            return;
        }
    }
    let color = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The span one plugin's turn runs in (its describe, check, fix and
/// re-check), entered on the thread that calls the plugin, where its log
/// lines are emitted. An env-filter's field filter selects spans, not
/// events: this span is what lets `DOCTOR_LOG='warn,plugin[{plugin=NAME}]=debug'`
/// show one plugin's lines. At INFO, so the default filter leaves it off.
pub fn plugin_span(name: &str) -> tracing::Span {
    tracing::info_span!(target: "plugin", "plugin", plugin = name)
}

/// True when systemd connected `fd` to the journal: `$JOURNAL_STREAM` is
/// `DEVICE:INODE` of the stream it set up, and `fd` is that very stream
/// (a child whose output was redirected inherits the variable, not the fd).
pub fn is_journal_stream(fd: libc::c_int) -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat only writes into the zeroed struct we own.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return false;
    }
    stat.st_dev as u64 == dev && stat.st_ino as u64 == ino
}

pub fn stdout_is_journal() -> bool {
    is_journal_stream(libc::STDOUT_FILENO)
}

/// A line for the daemon's own life (started, reloaded), at INFO.
pub fn note(message: &str) {
    tracing::info!("{message}");
}

/// One INFO line per scheduled run, then each finding that changed: new
/// ones at their severity's priority, fixed ones at INFO, failed fixes at ERR.
pub fn run_summary(report: &RunReport) {
    if report.run_id == 0 {
        tracing::debug!("no plugin is due");
        return;
    }
    let new = report
        .findings
        .iter()
        .filter(|f| f.status == crate::journal::FindingStatus::New)
        .count();
    let fixed = report
        .findings
        .iter()
        .filter(|f| f.status == crate::journal::FindingStatus::Fixed)
        .count();
    let failed = report.findings.iter().filter(|f| failed_fix(f)).count();
    let open = report
        .findings
        .iter()
        .filter(|f| f.status.is_open())
        .count();
    let errors = report.plugins.iter().filter(|p| p.error.is_some()).count();
    tracing::info!(
        run_id = report.run_id,
        exit = report.exit_code,
        duration_ms = report.duration_ms,
        "run {}: {} plugin(s), {errors} error(s), {new} new, {fixed} fixed, {failed} failed fix(es), {open} open; exit {} in {}",
        report.run_id,
        report.plugins.len(),
        report.exit_code,
        crate::report::seconds(report.duration_ms)
    );
    for f in &report.findings {
        let what = format!(
            "{} {} {}: {}",
            f.plugin,
            f.key,
            f.severity.as_str(),
            f.message
        );
        if failed_fix(f) {
            let why: Vec<&str> = f
                .actions
                .iter()
                .filter(|a| is_failure(a.outcome))
                .map(|a| a.detail.as_str())
                .collect();
            tracing::error!(run_id = report.run_id, plugin = %f.plugin, key = %f.key, "fix failed: {what} ({})", why.join("; "));
        } else if f.status == crate::journal::FindingStatus::Fixed {
            tracing::info!(run_id = report.run_id, plugin = %f.plugin, key = %f.key, "fixed: {what}");
        } else if f.status == crate::journal::FindingStatus::New {
            match f.severity {
                Severity::Critical => {
                    tracing::error!(run_id = report.run_id, plugin = %f.plugin, key = %f.key, "new: {what}")
                }
                Severity::Warning => {
                    tracing::warn!(run_id = report.run_id, plugin = %f.plugin, key = %f.key, "new: {what}")
                }
                Severity::Info => {
                    tracing::info!(run_id = report.run_id, plugin = %f.plugin, key = %f.key, "new: {what}")
                }
            }
        }
    }
}

fn is_failure(outcome: ActionOutcome) -> bool {
    matches!(outcome, ActionOutcome::Failed | ActionOutcome::Refused)
}

fn failed_fix(f: &crate::report::FindingOut) -> bool {
    f.actions.iter().any(|a| is_failure(a.outcome))
}
