//! The report as one Nagios/Icinga status line with performance data.

use super::{RunReport, EXIT_CRITICAL, EXIT_OK, EXIT_WARNING};
use crate::findings::Severity;

impl RunReport {
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
        let worst = self
            .open_findings()
            .find(|f| f.severity != Severity::Info)
            .map(|f| format!("; {}: {}", f.plugin, f.message))
            .unwrap_or_default();
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
