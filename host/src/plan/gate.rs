//! Anti-flap: a finding that keeps coming back after being fixed is a sign
//! the fix does not address the cause. After `flap_max_fixes` fixes within
//! `flap_window` it is no longer auto-fixed and is escalated to critical;
//! `fix_min_interval` rate-limits fixes of one finding. The counts come from
//! the journal, so they hold across processes and restarts.

use super::{Finding, Severity};
use crate::journal::FixHistory;
use std::collections::HashMap;
use std::time::Duration;

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
    fn history(&self, plugin: &str, key: &str) -> FixHistory {
        self.history.get(&(plugin.to_string(), key.to_string())).copied().unwrap_or_default()
    }

    fn tripped(&self, plugin: &str, key: &str) -> Option<FixHistory> {
        let h = self.history(plugin, key);
        (self.max_fixes > 0 && h.fixes >= self.max_fixes).then_some(h)
    }

    /// Escalate findings whose breaker is open, saying why and how to reset it.
    pub fn escalate(&self, plugin: &str, findings: &mut [Finding]) {
        for f in findings.iter_mut().filter(|f| !f.actions.is_empty()) {
            if let Some(h) = self.tripped(plugin, &f.key) {
                f.severity = Severity::Critical;
                f.message = format!(
                    "{} — flapping: fixed {} times in the last {}; auto-fix is suspended. Find the cause, then `doctor journal reset-flap {plugin} {}` (or `doctor fix --override-flap-breaker` once)",
                    f.message,
                    h.fixes,
                    humantime::format_duration(self.window),
                    f.key
                );
                f.evidence.push(("flap_breaker".into(), format!("{} fixes within {}", h.fixes, humantime::format_duration(self.window))));
            }
        }
    }

    /// May this finding's actions run now?
    pub fn may_fix(&self, plugin: &str, finding: &Finding) -> Result<(), String> {
        if let Some(h) = self.tripped(plugin, &finding.key) {
            if !self.override_breaker {
                return Err(format!("flap breaker open: fixed {} times within {}", h.fixes, humantime::format_duration(self.window)));
            }
        }
        let h = self.history(plugin, &finding.key);
        let since = self.now_ms.saturating_sub(h.last_fix_ms);
        if h.fixes > 0 && since < self.min_interval.as_millis() as u64 {
            return Err(format!(
                "rate limit: fixed {} ago; fix_min_interval is {}",
                humantime::format_duration(Duration::from_millis(since)),
                humantime::format_duration(self.min_interval)
            ));
        }
        Ok(())
    }
}
