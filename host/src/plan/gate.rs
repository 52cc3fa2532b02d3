//! Anti-flap: a finding that keeps coming back after being fixed — or whose
//! fix keeps failing (a container whose start always fails) — is a sign the
//! fix does not address the cause. After `flap_max_fixes` fixes within
//! `flap_window` it is no longer auto-fixed and is escalated to critical;
//! `fix_min_interval` rate-limits fixes of one finding. The counts come from
//! the journal, so they hold across processes and restarts.

use crate::findings::{Finding, Severity};
use std::collections::HashMap;
use std::time::Duration;

/// When a finding was fixed (or its fix tried and failed) recently: the
/// start times of the runs in which one of its actions was applied or
/// failed, since the look-back start or the operator's last reset.
#[derive(Debug, Clone, Default)]
pub struct FixHistory {
    pub fix_times_ms: Vec<u64>,
}

impl FixHistory {
    pub fn fixes_since(&self, start_ms: u64) -> u32 {
        self.fix_times_ms.iter().filter(|t| **t >= start_ms).count() as u32
    }

    pub fn last_fix_ms(&self) -> Option<u64> {
        self.fix_times_ms.iter().max().copied()
    }
}

/// The gate over one run's fixes. `history` comes from whoever remembers
/// fixes (the journal fills it); `plan` needs nothing else of it.
pub struct FixGate {
    pub history: HashMap<(String, String), FixHistory>,
    pub max_fixes: u32,
    pub window: Duration,
    pub min_interval: Duration,
    pub now_ms: u64,
    /// `doctor fix --override-flap-breaker`: an operator's explicit decision.
    pub override_breaker: bool,
}

impl FixGate {
    fn history(&self, plugin: &str, key: &str) -> Option<&FixHistory> {
        self.history.get(&(plugin.to_string(), key.to_string()))
    }

    /// The number of fixes within the window, when it reaches the limit.
    fn tripped(&self, plugin: &str, key: &str) -> Option<u32> {
        let window_start = self.now_ms.saturating_sub(self.window.as_millis() as u64);
        let fixes = self.history(plugin, key)?.fixes_since(window_start);
        (self.max_fixes > 0 && fixes >= self.max_fixes).then_some(fixes)
    }

    /// Escalate findings whose breaker is open, saying why and how to reset it.
    pub fn escalate(&self, plugin: &str, findings: &mut [Finding]) {
        let window = humantime::format_duration(self.window);
        for f in findings.iter_mut().filter(|f| !f.actions.is_empty()) {
            if let Some(fixes) = self.tripped(plugin, &f.key) {
                f.severity = Severity::Critical;
                f.message = format!(
                    "{} — flapping: fixed or tried {fixes} times in the last {window}; auto-fix is suspended. Find the cause, then `doctor journal reset-flap {plugin} {}` (or `doctor fix --override-flap-breaker` once)",
                    f.message, f.key
                );
                f.evidence.push((
                    "flap_breaker".into(),
                    format!("{fixes} fixes within {window}"),
                ));
            }
        }
    }

    /// May this finding's actions run now?
    pub fn may_fix(&self, plugin: &str, finding: &Finding) -> Result<(), String> {
        if let Some(fixes) = self.tripped(plugin, &finding.key) {
            if !self.override_breaker {
                return Err(format!(
                    "flap breaker open: fixed or tried {fixes} times within {}",
                    humantime::format_duration(self.window)
                ));
            }
        }
        let Some(last) = self
            .history(plugin, &finding.key)
            .and_then(FixHistory::last_fix_ms)
        else {
            return Ok(());
        };
        let since = self.now_ms.saturating_sub(last);
        if since < self.min_interval.as_millis() as u64 {
            return Err(format!(
                "rate limit: fixed {} ago; fix_min_interval is {}",
                humantime::format_duration(Duration::from_millis(since)),
                humantime::format_duration(self.min_interval)
            ));
        }
        Ok(())
    }
}
