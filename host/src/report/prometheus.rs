//! The report as node_exporter textfile-collector metrics.

use super::RunReport;
use crate::findings::Severity;
use crate::plan::ActionOutcome;
use std::fmt::Write as _;

impl RunReport {
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
        let names: std::collections::BTreeSet<&str> = self
            .plugins
            .iter()
            .map(|p| p.name.as_str())
            .chain(self.findings.iter().map(|f| f.plugin.as_str()))
            .collect();
        let mut findings = Vec::new();
        for name in &names {
            for severity in [Severity::Info, Severity::Warning, Severity::Critical] {
                let n = self
                    .open_findings()
                    .filter(|f| f.plugin == *name && f.severity == severity)
                    .count();
                findings.push((
                    labels(&[("plugin", name), ("severity", severity.as_str())]),
                    n.to_string(),
                ));
            }
        }
        family(
            "doctor_findings",
            "gauge",
            "Open findings by plugin and severity after the last run.",
            findings,
        );
        family(
            "doctor_plugin_duration_seconds",
            "gauge",
            "Wall-clock time of each plugin in the last run.",
            self.plugins
                .iter()
                .map(|p| {
                    (
                        labels(&[("plugin", &p.name)]),
                        format!("{:.3}", p.duration_ms as f64 / 1000.0),
                    )
                })
                .collect(),
        );
        family(
            "doctor_plugin_up",
            "gauge",
            "1 if the plugin ran without error in the last run, else 0.",
            self.plugins
                .iter()
                .map(|p| {
                    (
                        labels(&[("plugin", &p.name)]),
                        u8::from(p.error.is_none()).to_string(),
                    )
                })
                .collect(),
        );
        let mut actions = Vec::new();
        for p in &self.plugins {
            for outcome in [
                ActionOutcome::Planned,
                ActionOutcome::Applied,
                ActionOutcome::Failed,
                ActionOutcome::Skipped,
                ActionOutcome::Refused,
            ] {
                let n = self
                    .findings
                    .iter()
                    .filter(|f| f.plugin == p.name)
                    .flat_map(|f| &f.actions)
                    .filter(|a| a.outcome == outcome)
                    .count();
                actions.push((
                    labels(&[("plugin", &p.name), ("outcome", outcome.as_str())]),
                    n.to_string(),
                ));
            }
        }
        family(
            "doctor_actions",
            "gauge",
            "Actions of the last run by plugin and outcome.",
            actions,
        );
        family(
            "doctor_exit_code",
            "gauge",
            "Exit status of the last run (0 ok, 1 warning, 2 critical, 3 unknown).",
            vec![(String::new(), self.exit_code.to_string())],
        );
        family(
            "doctor_last_run_timestamp_seconds",
            "gauge",
            "Unix time at which the last run finished.",
            vec![(String::new(), format!("{:.3}", now_unix_ms as f64 / 1000.0))],
        );
        out
    }
}

/// `{a="x",b="y"}` with Prometheus label escaping.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}
