//! Write-ahead action records. Before a plugin's plan touches anything, one
//! transaction commits an intent per planned action (what, on which target,
//! with which guard) and the key/value state the plugin returned with that
//! plan; each action's outcome is committed as soon as it is known. A run
//! killed in between leaves intents without outcome: the next run reports
//! each as interrupted and re-observes its target. It never redoes one
//! blindly: a stop proven not to have taken effect on a process proven the
//! same (its pid + start time still runs), after every earlier action of its
//! finding was applied, stays open and is resumed by the next fixing run
//! under the current grants and guards; one that may have taken effect (a
//! signal, a command) stays open as a finding until an operator clears it.

use crate::facts::processes::{self, ProcessId};
use crate::findings::{Action, Finding, PlannedAction, Severity};
use crate::plan::ActionResult;
use rusqlite::{params, Connection};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

/// The intent log of one run, shared by its plugin threads. It has its own
/// connection so plugin threads do not wait for the journal's main one.
pub struct IntentLog {
    conn: Mutex<Connection>,
    run_id: i64,
}

/// An intent found without outcome by a later run, and what that run saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InterruptedAction {
    pub run_id: i64,
    pub plugin: String,
    pub finding_key: String,
    pub kind: String,
    pub description: String,
    /// What the target looks like now.
    pub found: String,
}

impl IntentLog {
    pub fn open(path: &Path, run_id: i64) -> anyhow::Result<IntentLog> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(IntentLog {
            conn: Mutex::new(conn),
            run_id,
        })
    }

    /// Commit one intent per planned action of `findings`, in one
    /// transaction; returns their ids, per finding, in plan order.
    /// `state`: the plugin's key/value state as its check left it, committed
    /// with the intents, so a once-guard the plugin keeps there cannot be lost
    /// to a kill between the plan's actions and the end of the run.
    pub fn intend(
        &self,
        plugin: &str,
        findings: &[Finding],
        state: Option<&BTreeMap<String, String>>,
        now_ms: u64,
    ) -> anyhow::Result<Vec<Vec<i64>>> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("intent log poisoned"))?;
        let tx = conn.transaction()?;
        let mut ids = Vec::with_capacity(findings.len());
        for finding in findings {
            let mut of_finding = Vec::with_capacity(finding.actions.len());
            for (seq, planned) in finding.actions.iter().enumerate() {
                tx.execute(
                    "INSERT INTO intents (run_id, plugin, finding_key, seq, kind, params, description, created_at, target, resumes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        self.run_id,
                        plugin,
                        finding.key,
                        seq as i64,
                        planned.action.kind(),
                        planned.action.params_json(),
                        planned.description,
                        now_ms as i64,
                        target_identity(&planned.action),
                        planned.resumes,
                    ],
                )?;
                of_finding.push(tx.last_insert_rowid());
            }
            ids.push(of_finding);
        }
        if let Some(state) = state {
            super::save_state(&tx, plugin, state, now_ms)?;
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Commit the outcome of one intent.
    pub fn finish(&self, intent: i64, result: &ActionResult, now_ms: u64) -> anyhow::Result<()> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("intent log poisoned"))?;
        conn.execute(
            "UPDATE intents SET outcome = ?2, detail = ?3, finished_at = ?4 WHERE id = ?1",
            params![
                intent,
                result.outcome.as_str(),
                result.detail,
                now_ms as i64
            ],
        )?;
        // A resume that took effect closes the intent it carried out.
        if result.outcome == crate::plan::ActionOutcome::Applied {
            conn.execute(
                "UPDATE intents SET open = NULL, detail = detail || '; resumed by intent ' || ?1 || ': applied'
                 WHERE id = (SELECT resumes FROM intents WHERE id = ?1) AND open IS NOT NULL",
                params![intent],
            )?;
        }
        Ok(())
    }
}

/// What identifies a removal's file beyond its path, so that a later run
/// can tell "the same file is still there" from "another file took its
/// place". None for other actions: a process's pid + start time and a
/// statement's compare-and-swap are in their parameters.
fn target_identity(action: &Action) -> Option<String> {
    match action {
        Action::RemoveFile { path } => file_identity(path),
        _ => None,
    }
}

/// `dev:ino` of what is at `path` now, not following a symlink.
fn file_identity(path: &str) -> Option<String> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| format!("{}:{}", m.dev(), m.ino()))
}

/// Every writing run's: the intents without an outcome (`intents_open`).
pub(super) const INTERRUPTED_INTENTS_SQL: &str =
    "SELECT i.id, i.run_id, i.plugin, i.finding_key, i.kind, i.params, i.description, i.target, i.seq
     FROM intents i JOIN runs r ON r.id = i.run_id
     WHERE i.outcome IS NULL AND r.status = 'interrupted' ORDER BY i.id";

/// Intents left without outcome by runs that died: re-observe each target,
/// record what was found and whether it stays open, and return them for the
/// report.
pub fn recover(conn: &Connection, now_ms: u64) -> anyhow::Result<Vec<InterruptedAction>> {
    let mut stmt = conn.prepare(INTERRUPTED_INTENTS_SQL)?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            InterruptedAction {
                run_id: r.get(1)?,
                plugin: r.get(2)?,
                finding_key: r.get(3)?,
                kind: r.get(4)?,
                description: r.get(6)?,
                found: r.get(5)?,
            },
            r.get::<_, Option<String>>(7)?,
            r.get::<_, i64>(8)?,
        ))
    })?;
    let mut found = Vec::new();
    for row in rows {
        let (id, mut action, target, seq) = row?;
        let mut seen = reobserve(&action.found, target.as_deref());
        // A later action of a plan runs only after the earlier ones of its
        // finding (`needs-previous`, "database first"): it is resumed only
        // when every earlier one is known applied.
        if seen.open == Some(Open::Resume) && !earlier_applied(conn, &action, seq)? {
            seen.open = None;
            seen.text.push_str("; not resumed: an earlier action of its finding is not known applied, so the plugin's next check plans again");
        }
        action.found = seen.text;
        conn.execute(
            "UPDATE intents SET outcome = 'interrupted', detail = ?2, finished_at = ?3, open = ?4 WHERE id = ?1",
            params![
                id,
                format!("interrupted — outcome unknown; {}", action.found),
                now_ms as i64,
                seen.open.map(Open::as_str)
            ],
        )?;
        found.push(action);
    }
    Ok(found)
}

/// Every earlier intent of the same finding in the same run was applied.
fn earlier_applied(
    conn: &Connection,
    action: &InterruptedAction,
    seq: i64,
) -> anyhow::Result<bool> {
    let unapplied: i64 = conn.query_row(
        "SELECT count(*) FROM intents WHERE run_id = ?1 AND plugin = ?2 AND finding_key = ?3
           AND seq < ?4 AND coalesce(outcome, '') != 'applied'",
        params![action.run_id, action.plugin, action.finding_key, seq],
        |r| r.get(0),
    )?;
    Ok(unapplied == 0)
}

/// Whether an interrupted intent is still the operator's matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Proven not to have taken effect, on a target proven the same.
    Resume,
    /// May have taken effect; never redone.
    Unknown,
}

impl Open {
    fn as_str(self) -> &'static str {
        match self {
            Open::Resume => "resume",
            Open::Unknown => "unknown",
        }
    }

    fn parse(text: &str) -> Option<Open> {
        match text {
            "resume" => Some(Open::Resume),
            "unknown" => Some(Open::Unknown),
            _ => None,
        }
    }
}

/// What a re-observation found: the text the report shows and whether the
/// intent stays open.
struct Seen {
    text: String,
    open: Option<Open>,
}

/// What the action's target looks like now, from its recorded parameters
/// and (for a removal) the file's identity when it was intended.
fn reobserve(params_json: &str, target: Option<&str>) -> Seen {
    let closed = |text: String| Seen { text, open: None };
    let Ok(action) = serde_json::from_str::<serde_json::Value>(params_json) else {
        return closed("its parameters could not be read".into());
    };
    let kind = action["kind"].as_str().unwrap_or_default();
    match kind {
        "stop-process" | "signal-process" => {
            let id = ProcessId {
                pid: action["pid"].as_u64().unwrap_or(0) as u32,
                start_time: action["start_time"].as_u64().unwrap_or(0),
            };
            match (processes::is_alive(id), kind) {
                (false, _) => closed(format!(
                    "pid {} (start {}) is gone: applied, or it exited by itself",
                    id.pid, id.start_time
                )),
                (true, "stop-process") => Seen {
                    text: format!(
                        "pid {} (start {}) is still running: the stop did not take effect; the next fixing run resumes it",
                        id.pid, id.start_time
                    ),
                    open: Some(Open::Resume),
                },
                (true, _) => Seen {
                    text: format!(
                        "pid {} (start {}) is still running, and whether the signal was delivered cannot be told: never redone; clear it with `doctor journal clear-intent` once checked",
                        id.pid, id.start_time
                    ),
                    open: Some(Open::Unknown),
                },
            }
        }
        "remove-file" => {
            let path = action["path"].as_str().unwrap_or_default();
            match (file_identity(path), target) {
                (None, _) => closed(format!("{path} is gone: applied")),
                // Not resumed: a removal is checked against its path when it
                // runs, and the file there then could be another; the
                // plugin's next check proposes it again where still wanted.
                (Some(now), Some(then)) if now == then => closed(format!(
                    "{path} is still there (the same file): not applied; the plugin's next check proposes it again where it is still wanted"
                )),
                (Some(_), Some(_)) => closed(format!("{path} is another file now: the one intended is gone")),
                (Some(_), None) => closed(format!("{path} is still there: not applied")),
            }
        }
        "sql-exec" => closed("the statement's compare-and-swap guard makes any repeat a no-op where it took effect; the next check shows the rows as they are".into()),
        "run-command" => Seen {
            text: "whether the command ran cannot be told: never redone; clear it with `doctor journal clear-intent` once checked".into(),
            open: Some(Open::Unknown),
        },
        _ => closed("not re-observable; the next check shows the state as it is".into()),
    }
}

/// An interrupted intent still open after this run's re-observation.
#[derive(Debug, Clone)]
pub struct OpenIntent {
    pub id: i64,
    pub run_id: i64,
    pub plugin: String,
    pub kind: String,
    pub description: String,
    pub params: String,
    pub open: Open,
    /// What the target looks like now.
    pub found: String,
}

/// Every writing run's. `open` is NULL or one of these two (its CHECK);
/// named, they are what lets SQLite seek `intents_open_matters` instead of
/// walking every intent ever journaled, which it does for `IS NOT NULL`.
pub(super) const OPEN_INTENTS_SQL: &str =
    "SELECT id, run_id, plugin, kind, params, description, target, open
     FROM intents WHERE open IN ('resume', 'unknown') ORDER BY id";

/// The open interrupted intents, each re-observed now: one whose target is
/// gone (or was replaced) is closed and not returned.
pub fn open_intents(conn: &Connection, now_ms: u64) -> anyhow::Result<Vec<OpenIntent>> {
    let mut stmt = conn.prepare(OPEN_INTENTS_SQL)?;
    let rows: Vec<(OpenIntent, Option<String>)> = stmt
        .query_map([], |r| {
            Ok((
                OpenIntent {
                    id: r.get(0)?,
                    run_id: r.get(1)?,
                    plugin: r.get(2)?,
                    kind: r.get(3)?,
                    params: r.get(4)?,
                    description: r.get(5)?,
                    open: Open::parse(&r.get::<_, String>(7)?).unwrap_or(Open::Unknown),
                    found: String::new(),
                },
                r.get(6)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut open = Vec::new();
    for (mut intent, target) in rows {
        let seen = reobserve(&intent.params, target.as_deref());
        if seen.open.is_none() {
            conn.execute(
                "UPDATE intents SET open = NULL, detail = detail || '; closed at ' || ?2 || ': ' || ?3 WHERE id = ?1",
                params![intent.id, now_ms as i64, seen.text],
            )?;
            continue;
        }
        intent.found = seen.text;
        open.push(intent);
    }
    Ok(open)
}

/// `doctor journal clear-intent ID`: the operator has checked an open
/// interrupted intent; it is no longer shown or resumed.
pub fn clear(conn: &Connection, id: i64, now_ms: u64) -> anyhow::Result<bool> {
    let changed = conn.execute(
        "UPDATE intents SET open = NULL, detail = detail || '; cleared by the operator at ' || ?2 WHERE id = ?1 AND open IS NOT NULL",
        params![id, now_ms as i64],
    )?;
    Ok(changed == 1)
}

impl OpenIntent {
    /// The finding this open intent is, in its plugin's report: critical,
    /// keyed by the intent, with the intended action again when it is
    /// resumable (carried out under the current grants, guards and budgets
    /// like any planned action, and journaled as a new intent that names
    /// this one).
    pub fn finding(&self) -> Finding {
        let resumable = self.open == Open::Resume;
        let message = if resumable {
            format!(
                "run {}'s {} ({}) was interrupted and did not take effect: {}",
                self.run_id, self.kind, self.description, self.found
            )
        } else {
            format!(
                "run {}'s {} ({}) was interrupted and may have taken effect: {}",
                self.run_id, self.kind, self.description, self.found
            )
        };
        let actions = match (resumable, resumed_action(&self.params)) {
            (true, Some(action)) => vec![PlannedAction {
                action,
                description: format!("resume: {}", self.description),
                needs_previous: false,
                resumes: Some(self.id),
            }],
            _ => Vec::new(),
        };
        Finding {
            key: format!(
                "{}interrupted:{}",
                crate::findings::HOST_KEY_PREFIX,
                self.id
            ),
            severity: Severity::Critical,
            subject: format!("intent {}", self.id),
            message,
            evidence: vec![
                ("intent".into(), self.id.to_string()),
                ("run".into(), self.run_id.to_string()),
                ("kind".into(), self.kind.clone()),
            ],
            actions,
        }
    }
}

/// The action of a resumable intent, rebuilt from its recorded parameters.
fn resumed_action(params_json: &str) -> Option<Action> {
    let p: serde_json::Value = serde_json::from_str(params_json).ok()?;
    match p["kind"].as_str()? {
        "stop-process" => Some(Action::StopProcess {
            pid: u32::try_from(p["pid"].as_u64()?).ok()?,
            start_time: p["start_time"].as_u64()?,
            grace_ms: u32::try_from(p["grace_ms"].as_u64()?).ok()?,
        }),
        _ => None,
    }
}

/// The intents of one plugin's plan, as `plan::apply` writes them ahead.
pub struct PluginIntents<'a> {
    pub log: &'a IntentLog,
    pub plugin: &'a str,
    /// The plugin's state as its check left it, committed with the intents.
    pub state: Option<&'a BTreeMap<String, String>>,
}

impl crate::plan::apply::WriteAhead for PluginIntents<'_> {
    fn intend(&self, findings: &[Finding]) -> anyhow::Result<Vec<Vec<i64>>> {
        self.log.intend(
            self.plugin,
            findings,
            self.state,
            crate::clock::now_unix_ms(),
        )
    }

    fn finish(&self, intent: i64, result: &ActionResult) -> anyhow::Result<()> {
        self.log.finish(intent, result, crate::clock::now_unix_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::{clear, open_intents, recover, IntentLog, Open};
    use crate::facts::processes;
    use crate::findings::{Action, Finding, PlannedAction, Severity};
    use crate::journal::Journal;
    use crate::plan::{ActionOutcome, ActionResult};
    use std::collections::BTreeMap;
    use std::path::Path;

    fn removal(path: &Path) -> PlannedAction {
        PlannedAction {
            action: Action::RemoveFile {
                path: path.display().to_string(),
            },
            description: format!("remove {}", path.display()),
            needs_previous: false,
            resumes: None,
        }
    }

    /// A run dies after its intents, with one outcome written: the next run
    /// reports the other as interrupted with what it sees now, once.
    #[test]
    fn an_intent_without_outcome_is_reported_interrupted_once_and_never_redone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let (done, pending) = (dir.path().join("done"), dir.path().join("pending"));
        std::fs::write(&pending, "").unwrap();
        let finding = Finding {
            key: "k".into(),
            severity: Severity::Warning,
            subject: String::new(),
            message: String::new(),
            evidence: vec![],
            actions: vec![removal(&done), removal(&pending)],
        };
        {
            let journal = Journal::open(&path).unwrap();
            let run = journal.begin_run("fix", Path::new("p.toml"), 1).unwrap();
            let log = IntentLog::open(&path, run).unwrap();
            let ids = log
                .intend("p", std::slice::from_ref(&finding), None, 2)
                .unwrap();
            let applied = ActionResult {
                outcome: ActionOutcome::Applied,
                ..ActionResult::planned(&finding.actions[0])
            };
            log.finish(ids[0][0], &applied, 3).unwrap();
            // Killed here: no outcome for the second, no finish_run.
        }
        let journal = Journal::open(&path).unwrap();
        assert_eq!(journal.mark_interrupted().unwrap().len(), 1);
        let found = recover(journal.connection(), 4).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].description,
            format!("remove {}", pending.display())
        );
        assert!(
            found[0]
                .found
                .contains("still there (the same file): not applied"),
            "{}",
            found[0].found
        );
        assert!(pending.exists(), "re-observed, not redone");
        assert!(
            recover(journal.connection(), 5).unwrap().is_empty(),
            "reported once"
        );
    }

    fn finding(actions: Vec<PlannedAction>) -> Finding {
        Finding {
            key: "k".into(),
            severity: Severity::Warning,
            subject: String::new(),
            message: String::new(),
            evidence: vec![],
            actions,
        }
    }

    fn planned(action: Action) -> PlannedAction {
        PlannedAction {
            description: format!("{} of the test", action.kind()),
            action,
            needs_previous: false,
            resumes: None,
        }
    }

    /// Intents committed, then the run is killed before any outcome.
    fn killed_after_intending(path: &Path, f: &Finding, state: Option<&BTreeMap<String, String>>) {
        let journal = Journal::open(path).unwrap();
        let run = journal.begin_run("fix", Path::new("p.toml"), 1).unwrap();
        let log = IntentLog::open(path, run).unwrap();
        log.intend("p", std::slice::from_ref(f), state, 2).unwrap();
    }

    fn sleeper() -> (std::process::Child, processes::ProcessId) {
        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start_time = processes::start_time(pid).unwrap();
        (child, processes::ProcessId { pid, start_time })
    }

    #[test]
    fn the_state_returned_with_a_plan_is_committed_with_its_intents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let state = BTreeMap::from([("token:7".to_string(), "sent".to_string())]);
        let f = finding(vec![removal(&dir.path().join("x"))]);
        killed_after_intending(&path, &f, Some(&state));
        let journal = Journal::open(&path).unwrap();
        assert_eq!(journal.load_state("p").unwrap(), state);
    }

    #[test]
    fn an_interrupted_stop_of_a_live_process_is_resumed_and_closed_once_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let (mut child, id) = sleeper();
        let stop = Action::StopProcess {
            pid: id.pid,
            start_time: id.start_time,
            grace_ms: 100,
        };
        killed_after_intending(&path, &finding(vec![planned(stop)]), None);
        let journal = Journal::open(&path).unwrap();
        journal.mark_interrupted().unwrap();
        let found = recover(journal.connection(), 3).unwrap();
        assert!(found[0].found.contains("resumes it"), "{found:?}");
        let open = open_intents(journal.connection(), 4).unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].open, Open::Resume);
        let f = open[0].finding();
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.actions.len(), 1, "the stop, planned again");
        assert_eq!(f.actions[0].resumes, Some(open[0].id));
        assert!(
            matches!(f.actions[0].action, Action::StopProcess { pid, start_time, .. } if pid == id.pid && start_time == id.start_time)
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            open_intents(journal.connection(), 5).unwrap().is_empty(),
            "a gone target closes the intent"
        );
    }

    #[test]
    fn an_interrupted_signal_is_never_redone_and_stays_open_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let (mut child, id) = sleeper();
        let hup = Action::SignalProcess {
            pid: id.pid,
            start_time: id.start_time,
            signal: crate::findings::Signal::Hup,
        };
        killed_after_intending(&path, &finding(vec![planned(hup)]), None);
        let journal = Journal::open(&path).unwrap();
        journal.mark_interrupted().unwrap();
        recover(journal.connection(), 3).unwrap();
        let open = open_intents(journal.connection(), 4).unwrap();
        assert_eq!(open[0].open, Open::Unknown);
        assert!(
            open[0].finding().actions.is_empty(),
            "may have taken effect: no action"
        );
        assert!(clear(journal.connection(), open[0].id, 5).unwrap());
        assert!(open_intents(journal.connection(), 6).unwrap().is_empty());
        assert!(!clear(journal.connection(), open[0].id, 7).unwrap(), "once");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_removal_is_never_resumed_and_a_replaced_file_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let (same, replaced) = (dir.path().join("same"), dir.path().join("replaced"));
        std::fs::write(&same, "").unwrap();
        std::fs::write(&replaced, "").unwrap();
        killed_after_intending(
            &path,
            &finding(vec![removal(&same), removal(&replaced)]),
            None,
        );
        // Another file takes the name between the kill and the next run
        // (made while the first exists, so its inode differs).
        std::fs::write(dir.path().join("other"), "").unwrap();
        std::fs::rename(dir.path().join("other"), &replaced).unwrap();
        let journal = Journal::open(&path).unwrap();
        journal.mark_interrupted().unwrap();
        let found = recover(journal.connection(), 3).unwrap();
        assert!(found[0].found.contains("the same file"), "{found:?}");
        assert!(found[1].found.contains("another file"), "{found:?}");
        assert!(open_intents(journal.connection(), 4).unwrap().is_empty());
        assert!(same.exists() && replaced.exists(), "nothing removed");
    }

    #[test]
    fn a_later_stop_of_a_finding_is_not_resumed_unless_the_earlier_actions_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let (mut child, id) = sleeper();
        let stop = Action::StopProcess {
            pid: id.pid,
            start_time: id.start_time,
            grace_ms: 100,
        };
        let first = dir.path().join("first");
        std::fs::write(&first, "").unwrap();
        // The finding's first action never finished: its stop is not resumed.
        killed_after_intending(&path, &finding(vec![removal(&first), planned(stop)]), None);
        let journal = Journal::open(&path).unwrap();
        journal.mark_interrupted().unwrap();
        let found = recover(journal.connection(), 3).unwrap();
        assert!(found[1].found.contains("not resumed"), "{found:?}");
        assert!(open_intents(journal.connection(), 4).unwrap().is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
