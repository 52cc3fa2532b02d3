//! Where each finding stands after a run, compared with the journal's
//! memory of the open ones: new, persisting, fixed, resolved. A pure
//! function of what the run saw and what was open, so every transition is
//! tested without SQLite.

use crate::findings::Finding;
use crate::plan::{ActionOutcome, ActionResult};
use std::collections::BTreeMap;

/// Where a finding stands compared with the journal's memory of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingStatus {
    New,
    Persisting,
    Resolved,
    Fixed,
}

impl FindingStatus {
    /// New and persisting findings are open; resolved and fixed ones are not.
    pub fn is_open(self) -> bool {
        matches!(self, FindingStatus::New | FindingStatus::Persisting)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FindingStatus::New => "new",
            FindingStatus::Persisting => "persisting",
            FindingStatus::Resolved => "resolved",
            FindingStatus::Fixed => "fixed",
        }
    }
}

/// A finding with its status, for the report.
#[derive(Debug, Clone)]
pub struct Observed {
    pub finding: Finding,
    pub status: FindingStatus,
    pub actions: Vec<ActionResult>,
}

/// This run's findings (with what happened to their actions, and the
/// re-check after a fix) against the findings the journal holds open.
pub fn observe(
    open: BTreeMap<String, Finding>,
    findings: &[Finding],
    actions: &[Vec<ActionResult>],
    recheck: Option<&[Finding]>,
) -> Vec<Observed> {
    let final_keys: Option<Vec<&str>> = recheck.map(|r| r.iter().map(|f| f.key.as_str()).collect());
    let mut observed = Vec::new();
    for (i, finding) in findings.iter().enumerate() {
        let actions = actions.get(i).cloned().unwrap_or_default();
        let was_open = open.contains_key(&finding.key);
        let attempted = actions.iter().any(|a| a.outcome != ActionOutcome::Planned);
        let status = match &final_keys {
            Some(keys) if !keys.contains(&finding.key.as_str()) => {
                if attempted {
                    FindingStatus::Fixed
                } else {
                    FindingStatus::Resolved
                }
            }
            // After a fix attempt, a finding is fixed or persisting, never new.
            Some(_) if attempted => FindingStatus::Persisting,
            _ if was_open => FindingStatus::Persisting,
            _ => FindingStatus::New,
        };
        observed.push(Observed {
            finding: finding.clone(),
            status,
            actions,
        });
    }
    // Findings the re-check sees that the first check did not.
    for finding in recheck.unwrap_or_default() {
        if !findings.iter().any(|f| f.key == finding.key) {
            let status = if open.contains_key(&finding.key) {
                FindingStatus::Persisting
            } else {
                FindingStatus::New
            };
            observed.push(Observed {
                finding: finding.clone(),
                status,
                actions: Vec::new(),
            });
        }
    }
    // Open findings nobody reported this time are resolved.
    for (key, finding) in open {
        if !observed.iter().any(|o| o.finding.key == key) {
            observed.push(Observed {
                finding,
                status: FindingStatus::Resolved,
                actions: Vec::new(),
            });
        }
    }
    observed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::{Action, PlannedAction, Severity};

    fn finding(key: &str) -> Finding {
        let action = PlannedAction {
            action: Action::RemoveFile {
                path: format!("/run/{key}"),
            },
            description: String::new(),
            needs_previous: false,
            resumes: None,
        };
        Finding {
            key: key.into(),
            severity: Severity::Warning,
            subject: String::new(),
            message: String::new(),
            evidence: vec![],
            actions: vec![action],
        }
    }

    fn result(outcome: ActionOutcome) -> Vec<ActionResult> {
        let f = finding("x");
        vec![ActionResult {
            outcome,
            ..ActionResult::planned(&f.actions[0])
        }]
    }

    fn open(keys: &[&str]) -> BTreeMap<String, Finding> {
        keys.iter().map(|k| (k.to_string(), finding(k))).collect()
    }

    fn statuses(observed: &[Observed]) -> Vec<(String, FindingStatus)> {
        observed
            .iter()
            .map(|o| (o.finding.key.clone(), o.status))
            .collect()
    }

    #[test]
    fn first_seen_is_new_seen_again_is_persisting_gone_is_resolved() {
        let run1 = observe(
            open(&[]),
            &[finding("a")],
            &[result(ActionOutcome::Planned)],
            None,
        );
        assert_eq!(statuses(&run1), [("a".into(), FindingStatus::New)]);
        let run2 = observe(
            open(&["a"]),
            &[finding("a")],
            &[result(ActionOutcome::Planned)],
            None,
        );
        assert_eq!(statuses(&run2), [("a".into(), FindingStatus::Persisting)]);
        let run3 = observe(open(&["a"]), &[], &[], None);
        assert_eq!(statuses(&run3), [("a".into(), FindingStatus::Resolved)]);
    }

    #[test]
    fn a_fix_that_held_is_fixed_one_that_did_not_is_persisting_never_new() {
        let held = observe(
            open(&[]),
            &[finding("a")],
            &[result(ActionOutcome::Applied)],
            Some(&[]),
        );
        assert_eq!(statuses(&held), [("a".into(), FindingStatus::Fixed)]);
        let back = observe(
            open(&[]),
            &[finding("a")],
            &[result(ActionOutcome::Applied)],
            Some(&[finding("a")]),
        );
        assert_eq!(
            statuses(&back),
            [("a".into(), FindingStatus::Persisting)],
            "attempted and still there"
        );
        let refused = observe(
            open(&[]),
            &[finding("a")],
            &[result(ActionOutcome::Refused)],
            Some(&[finding("a")]),
        );
        assert_eq!(
            statuses(&refused),
            [("a".into(), FindingStatus::Persisting)]
        );
    }

    #[test]
    fn gone_by_the_recheck_without_an_attempt_is_resolved_not_fixed() {
        let gone = observe(
            open(&["a"]),
            &[finding("a")],
            &[result(ActionOutcome::Planned)],
            Some(&[]),
        );
        assert_eq!(statuses(&gone), [("a".into(), FindingStatus::Resolved)]);
    }

    #[test]
    fn the_recheck_may_find_what_the_check_did_not() {
        let appeared = observe(
            open(&["b"]),
            &[finding("a")],
            &[result(ActionOutcome::Applied)],
            Some(&[finding("b"), finding("c")]),
        );
        assert_eq!(
            statuses(&appeared),
            [
                ("a".into(), FindingStatus::Fixed),
                ("b".into(), FindingStatus::Persisting),
                ("c".into(), FindingStatus::New)
            ]
        );
    }

    #[test]
    fn a_flap_escalated_finding_keeps_its_status_and_only_open_ones_are_open() {
        // The flap breaker changes severity and skips actions; the status
        // still follows what the run saw.
        let held_back = observe(
            open(&["a"]),
            &[finding("a")],
            &[result(ActionOutcome::Skipped)],
            Some(&[finding("a")]),
        );
        assert_eq!(
            statuses(&held_back),
            [("a".into(), FindingStatus::Persisting)]
        );
        assert!(FindingStatus::New.is_open() && FindingStatus::Persisting.is_open());
        assert!(!FindingStatus::Fixed.is_open() && !FindingStatus::Resolved.is_open());
    }
}
