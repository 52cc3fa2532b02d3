//! The report for people: one line a finding with its actions under it,
//! coloured by severity, status and outcome where colour is wanted.

use super::{seconds, RunReport};
use crate::findings::Severity;
use crate::journal::FindingStatus;
use crate::plan::ActionOutcome;
use std::fmt::Write as _;

impl RunReport {
    /// The report for people; `color`: with ANSI styles (the caller strips
    /// them where colour is not wanted). It ends with the run's duration.
    pub fn to_human(&self, color: bool) -> String {
        let paint = |style: anstyle::Style, text: &str| {
            if color {
                format!("{style}{text}{style:#}")
            } else {
                text.to_string()
            }
        };
        let mut out = String::new();
        let open = self.open_findings().count();
        if self.run_id == 0 {
            let _ = writeln!(
                out,
                "doctor {}: no plugin is due; {open} open finding(s) from earlier runs, exit {}",
                self.mode, self.exit_code
            );
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
            let _ = writeln!(
                out,
                "note: run {run} was interrupted before it finished (its journal entries are kept)"
            );
        }
        for a in &self.interrupted_actions {
            let _ = writeln!(
                out,
                "note: run {} {} {} ({}) was interrupted — outcome unknown; now: {}",
                a.run_id, a.plugin, a.kind, a.description, a.found
            );
        }
        for p in self.plugins.iter().filter(|p| p.error.is_some()) {
            let _ = writeln!(
                out,
                "{} {}: {}",
                paint(style::ERROR, "ERROR   "),
                p.name,
                p.error.as_deref().unwrap_or_default()
            );
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
                let detail = if a.detail.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", a.detail)
                };
                let outcome = format!("{} {}", arrow(a.outcome), a.outcome.as_str());
                let _ = writeln!(
                    out,
                    "    {}: {}{}",
                    paint(style::outcome(a.outcome), &outcome),
                    a.description,
                    detail
                );
            }
        }
        let _ = writeln!(
            out,
            "{}",
            paint(
                style::DIM,
                &format!("finished in {}", seconds(self.duration_ms))
            )
        );
        out
    }
}

/// Styled text as the terminal (or `--color`) wants it: kept or stripped.
pub fn for_stdout(text: &str) -> String {
    match anstream::AutoStream::choice(&std::io::stdout()) {
        anstream::ColorChoice::Never => anstream::adapter::strip_str(text).to_string(),
        _ => text.to_string(),
    }
}

fn arrow(outcome: ActionOutcome) -> &'static str {
    match outcome {
        ActionOutcome::Planned => "→",
        ActionOutcome::Applied => "✓",
        ActionOutcome::Failed | ActionOutcome::Refused => "✗",
        ActionOutcome::Skipped => "·",
    }
}

/// The human report's colours: severity, status, outcome.
mod style {
    use super::{ActionOutcome, FindingStatus, Severity};
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
