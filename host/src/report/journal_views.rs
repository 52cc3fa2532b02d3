//! What `doctor journal` and `doctor journal show` print: the journal's
//! runs and findings, and one run in detail, for people or as JSON.

use crate::journal::query::{FindingRow, RunDetail, RunRow};
use std::fmt::Write as _;
use std::path::Path;

/// Recent runs, then the findings the filter kept.
pub fn journal_json(runs: &[RunRow], findings: &[FindingRow]) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&serde_json::json!({ "runs": runs, "findings": findings }))
}

pub fn journal_human(path: &Path, runs: &[RunRow], findings: &[FindingRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "runs ({}):", path.display());
    for r in runs {
        let code = r
            .exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "  #{:<5} {} {:<8} {:<12} exit {code}",
            r.id,
            when(r.started_at),
            r.mode,
            r.status
        );
    }
    let _ = writeln!(out, "findings:");
    for f in findings {
        let _ = writeln!(
            out,
            "  {:<8} {:<11} {} {}: {}",
            f.severity.to_uppercase(),
            f.status,
            f.plugin,
            f.key,
            f.message
        );
    }
    out
}

/// One run: its plugins, what each found, and what was done about it.
pub fn run_json(detail: &RunDetail) -> serde_json::Result<String> {
    serde_json::to_string_pretty(detail)
}

pub fn run_human(detail: &RunDetail) -> String {
    let mut out = String::new();
    let r = &detail.run;
    let code = r
        .exit_code
        .map(|c| c.to_string())
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "run #{} {} {} {} exit {code}",
        r.id,
        when(r.started_at),
        r.mode,
        r.status
    );
    for p in &detail.plugins {
        let error = p["error"]
            .as_str()
            .map(|e| format!(" — {e}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  plugin {} {} {} ms{error}",
            p["plugin"].as_str().unwrap_or(""),
            p["outcome"].as_str().unwrap_or(""),
            p["duration_ms"]
        );
    }
    for o in &detail.observations {
        let _ = writeln!(
            out,
            "  {:<8} {:<10} {} {}: {}",
            o["severity"].as_str().unwrap_or("").to_uppercase(),
            o["status"].as_str().unwrap_or(""),
            o["plugin"].as_str().unwrap_or(""),
            o["key"].as_str().unwrap_or(""),
            o["message"].as_str().unwrap_or("")
        );
        for a in detail
            .actions
            .iter()
            .filter(|a| a["plugin"] == o["plugin"] && a["finding_key"] == o["key"])
        {
            let _ = writeln!(
                out,
                "      {} {}: {} {}",
                a["kind"].as_str().unwrap_or(""),
                a["outcome"].as_str().unwrap_or(""),
                a["description"].as_str().unwrap_or(""),
                a["detail"].as_str().unwrap_or("")
            );
        }
    }
    out
}

/// Journal times (unix ms, stored as INTEGER) as UTC text.
fn when(unix_ms: i64) -> String {
    crate::clock::rfc3339_seconds(unix_ms.max(0) as u64)
}
