//! Write-ahead action records. Before a plugin's plan touches anything, one
//! transaction commits an intent per planned action (what, on which target,
//! with which guard); each action's outcome is committed as soon as it is
//! known. A run killed in between leaves intents without outcome: the next
//! run reports each as interrupted, re-observes its target and records what
//! it found. It never redoes one: actions carry their own guard (the
//! compare-and-swap, the pid + start time, the path), so a repeat by a later
//! plan is a no-op where the first one took effect.

use crate::facts::processes::{self, ProcessId};
use crate::findings::Finding;
use crate::plan::ActionResult;
use rusqlite::{params, Connection};
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
    pub fn intend(
        &self,
        plugin: &str,
        findings: &[Finding],
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
                    "INSERT INTO intents (run_id, plugin, finding_key, seq, kind, params, description, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        self.run_id,
                        plugin,
                        finding.key,
                        seq as i64,
                        planned.action.kind(),
                        planned.action.params_json(),
                        planned.description,
                        now_ms as i64
                    ],
                )?;
                of_finding.push(tx.last_insert_rowid());
            }
            ids.push(of_finding);
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
        Ok(())
    }
}

/// Intents left without outcome by runs that died: re-observe each target,
/// record what was found, and return them for the report.
pub fn recover(conn: &Connection, now_ms: u64) -> anyhow::Result<Vec<InterruptedAction>> {
    let mut stmt = conn.prepare(
        "SELECT i.id, i.run_id, i.plugin, i.finding_key, i.kind, i.params, i.description
         FROM intents i JOIN runs r ON r.id = i.run_id
         WHERE i.outcome IS NULL AND r.status = 'interrupted' ORDER BY i.id",
    )?;
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
        ))
    })?;
    let mut found = Vec::new();
    for row in rows {
        let (id, mut action) = row?;
        action.found = reobserve(&action.found);
        conn.execute(
            "UPDATE intents SET outcome = 'interrupted', detail = ?2, finished_at = ?3 WHERE id = ?1",
            params![id, format!("interrupted — outcome unknown; {}", action.found), now_ms as i64],
        )?;
        found.push(action);
    }
    Ok(found)
}

/// What the action's target looks like now, from its recorded parameters.
fn reobserve(params_json: &str) -> String {
    let Ok(action) = serde_json::from_str::<serde_json::Value>(params_json) else {
        return "its parameters could not be read".into();
    };
    let kind = action["kind"].as_str().unwrap_or_default();
    match kind {
        "stop-process" | "signal-process" => {
            let id = ProcessId {
                pid: action["pid"].as_u64().unwrap_or(0) as u32,
                start_time: action["start_time"].as_u64().unwrap_or(0),
            };
            if processes::is_alive(id) {
                format!("pid {} (start {}) is still running: not applied, or not yet effective", id.pid, id.start_time)
            } else {
                format!("pid {} (start {}) is gone: applied, or it exited by itself", id.pid, id.start_time)
            }
        }
        "remove-file" => {
            let path = action["path"].as_str().unwrap_or_default();
            match std::fs::symlink_metadata(path) {
                Ok(_) => format!("{path} is still there: not applied"),
                Err(_) => format!("{path} is gone: applied"),
            }
        }
        "sql-exec" => "the statement's compare-and-swap guard makes any repeat a no-op where it took effect; the next check shows the rows as they are".into(),
        _ => "not re-observable; the next check shows the state as it is".into(),
    }
}

/// The intents of one plugin's plan, as `plan::apply` writes them ahead.
pub struct PluginIntents<'a> {
    pub log: &'a IntentLog,
    pub plugin: &'a str,
}

impl crate::plan::apply::WriteAhead for PluginIntents<'_> {
    fn intend(&self, findings: &[Finding]) -> anyhow::Result<Vec<Vec<i64>>> {
        self.log
            .intend(self.plugin, findings, crate::clock::now_unix_ms())
    }

    fn finish(&self, intent: i64, result: &ActionResult) -> anyhow::Result<()> {
        self.log.finish(intent, result, crate::clock::now_unix_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::{recover, IntentLog};
    use crate::findings::{Action, Finding, PlannedAction, Severity};
    use crate::journal::Journal;
    use crate::plan::{ActionOutcome, ActionResult};
    use std::path::Path;

    fn removal(path: &Path) -> PlannedAction {
        PlannedAction {
            action: Action::RemoveFile {
                path: path.display().to_string(),
            },
            description: format!("remove {}", path.display()),
            needs_previous: false,
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
            let ids = log.intend("p", std::slice::from_ref(&finding), 2).unwrap();
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
            found[0].found.contains("still there: not applied"),
            "{}",
            found[0].found
        );
        assert!(pending.exists(), "re-observed, not redone");
        assert!(
            recover(journal.connection(), 5).unwrap().is_empty(),
            "reported once"
        );
    }
}
