//! Orphaned rows by the owner that left them. A dead worker's rows are one
//! incident: one finding per owner (its rows' ids in evidence), fixed by a
//! few set-based compare-and-swaps ([`merge`]) instead of one statement per
//! row, so an incident of thousands of rows fits in one run's action
//! budget. Owners beyond the plugin's limit share one overflow finding.

use crate::cas::{merge, Update, MAX_BATCHES};
use crate::Db;
use doctor_sdk::prelude::*;
use std::collections::BTreeMap;

/// A row's own compare-and-swap and what it does (`reset to pending`); None
/// when nothing is written (a `report` remedy, a withheld write).
pub type RowWrite = Option<(Update, String)>;
/// Evidence `(key, value)` a row gives its finding.
pub type RowEvidence = Vec<(&'static str, String)>;

/// One orphaned row as a plugin judged it.
pub struct Orphan {
    /// Its owner as findings name it (`4242`, `w1@host-7 (pid 4551, host host-7)`).
    pub owner: String,
    /// Its key, as shown.
    pub id: String,
    /// Its status, as read.
    pub status: String,
    /// Why it is orphaned.
    pub why: String,
    /// Its own compare-and-swap and what it does.
    pub write: RowWrite,
    /// Evidence its finding carries: one value when every row of the
    /// finding agrees, else each value with its count.
    pub evidence: RowEvidence,
}

/// Dead owners with a finding of their own (a plugin may make it configurable).
pub const OWNER_FINDINGS: usize = 20;
/// Ids shown in a finding's evidence and in an action's description.
pub const SHOWN_IDS: usize = 50;
/// The length of an owner in a finding key (the host takes keys of 256 bytes).
const OWNER_IN_KEY: usize = 160;
/// What the set-based statements of one report may weigh together: the
/// host takes 4 MiB of text per report; rows beyond wait for the next run.
const WRITE_ROOM: usize = 2 << 20;

/// `ids` as a message shows them: the first `cap` (each cut to 64 bytes), then "… and N more".
pub fn ids_shown(ids: &[String], cap: usize) -> String {
    listed(ids, cap, 64)
}

fn listed(items: &[String], cap: usize, cut: usize) -> String {
    let shown: Vec<String> = items
        .iter()
        .take(cap)
        .map(|item| crate::text_cut(item, cut))
        .collect();
    match items.len().saturating_sub(cap) {
        0 => shown.join(", "),
        more => format!("{} … and {more} more", shown.join(", ")),
    }
}

/// How a plugin's findings speak of its orphaned rows.
pub struct Orphans<'a> {
    /// The table in its database, whose dialect renders the writes.
    pub db: &'a Db,
    /// What one row is (`chunk`, `job`).
    pub noun: &'a str,
    /// What the message says after the reason (`nothing will finish them`).
    pub consequence: &'a str,
    /// Owners with a finding of their own, the largest first.
    pub max_findings: usize,
    /// The key of the finding that holds the owners beyond `max_findings`.
    pub overflow_key: String,
}

impl Orphans<'_> {
    /// One critical finding per owner, `worker:<owner>:orphaned`, owners
    /// with most rows first, and one overflow finding for the rest; each
    /// with the set-based compare-and-swaps of its rows.
    pub fn findings(&self, rows: Vec<Orphan>) -> Vec<Finding> {
        let mut owners: Vec<(String, Vec<Orphan>)> = Vec::new();
        let mut index = BTreeMap::<String, usize>::new();
        // By the name the key gives the owner, so that keys stay unique: rows
        // that name no worker (NULL: a table that records none, or a claim
        // without one) are `none`; a cut name may join two owners in one
        // finding, whose rows still compare their own worker.
        for row in rows {
            let owner = match crate::text_cut(&row.owner, OWNER_IN_KEY) {
                null if null == "NULL" => "none".to_string(),
                owner => owner,
            };
            match index.get(&owner) {
                Some(&i) => owners[i].1.push(row),
                None => {
                    index.insert(owner.clone(), owners.len());
                    owners.push((owner, vec![row]));
                }
            }
        }
        // Stable: owners of equal size keep the order of their first row.
        owners.sort_by_key(|(_, rows)| std::cmp::Reverse(rows.len()));
        let beyond: Vec<(String, Vec<Orphan>)> = owners
            .drain(owners.len().min(self.max_findings)..)
            .collect();
        let workers: Vec<String> = beyond.iter().map(|(owner, _)| owner.clone()).collect();
        let rest: Vec<Orphan> = beyond.into_iter().flat_map(|(_, rows)| rows).collect();
        let (mut room, mut out) = (WRITE_ROOM, Vec::new());
        for (name, rows) in owners {
            let whose = match rows[0].owner.as_str() {
                "NULL" => "with no worker recorded".to_string(),
                owner => format!("for worker {owner}"),
            };
            let f = Finding::critical(
                format!("worker:{name}:orphaned"),
                format!("worker {name}"),
                self.message(&rows, &whose),
            );
            let f = f.evidence("worker", &rows[0].owner);
            out.push(self.writes(f, rows, &mut room));
        }
        if !rest.is_empty() {
            let whose = format!("for {} other worker(s)", workers.len());
            let f = Finding::critical(
                self.overflow_key.clone(),
                format!("table {}", self.db.table),
                self.message(&rest, &whose),
            );
            let f = f.evidence("workers", ids_shown(&workers, SHOWN_IDS));
            out.push(self.writes(f, rest, &mut room));
        }
        out
    }

    /// "3 chunks (1, 2, 3) are running for worker 4242 but pid 4242 is not running; ..."
    fn message(&self, rows: &[Orphan], whose: &str) -> String {
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let (first, noun) = (&rows[0], self.noun);
        let what = match rows.len() {
            1 => format!("{noun} {} is", first.id),
            n => format!("{n} {noun}s ({}) are", ids_shown(&ids, 10)),
        };
        let whys = distinct(rows.iter().map(|r| r.why.as_str()));
        let others = match whys.len() {
            1 => String::new(),
            n => format!(" (and {} other reason(s): see evidence reasons)", n - 1),
        };
        format!(
            "{what} {} {whose} but {}{others}; {}",
            first.status, first.why, self.consequence
        )
    }

    /// The finding's evidence and its rows' writes, merged; what does not fit
    /// (the host's actions per finding, the report's room) waits for the next run.
    fn writes(&self, mut f: Finding, mut rows: Vec<Orphan>, room: &mut usize) -> Finding {
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        f = f
            .evidence("count", rows.len())
            .evidence("ids", ids_shown(&ids, SHOWN_IDS))
            .evidence("reason", &rows[0].why);
        let whys = distinct(rows.iter().map(|r| r.why.as_str()));
        if whys.len() > 1 {
            let whys: Vec<String> = whys.iter().map(|(w, n)| format!("{n}× {w}")).collect();
            f = f.evidence("reasons", listed(&whys, 10, 400));
        }
        let mut keys: Vec<&str> = Vec::new();
        for (key, _) in rows.iter().flat_map(|r| &r.evidence) {
            if !keys.contains(key) {
                keys.push(key);
            }
        }
        for key in keys {
            let values = distinct(
                rows.iter()
                    .flat_map(|r| &r.evidence)
                    .filter(|(k, _)| *k == key)
                    .map(|(_, v)| v.as_str()),
            );
            let shown: Vec<String> = match values.len() {
                1 => vec![values[0].0.to_string()],
                _ => values.iter().map(|(v, n)| format!("{v} ({n})")).collect(),
            };
            f = f.evidence(key, listed(&shown, 10, 400));
        }
        // The writes move out of their rows: thousands of them are the bulk of the plugin's memory.
        let (mut writes, mut of) = (Vec::new(), Vec::new());
        for (i, row) in rows.iter_mut().enumerate() {
            if let Some((update, does)) = row.write.take() {
                writes.push(update);
                of.push((i, does));
            }
        }
        let (mut waiting, mut deferred) = (0, 0);
        for (n, m) in merge(writes, self.db).into_iter().enumerate() {
            let weight = m.weight();
            if n >= MAX_BATCHES || weight > *room {
                (waiting, deferred) = (waiting + 1, deferred + m.rows.len());
                continue;
            }
            *room -= weight;
            let members: Vec<&Orphan> = m.rows.iter().map(|&i| &rows[of[i].0]).collect();
            let ids: Vec<String> = members.iter().map(|r| r.id.clone()).collect();
            let (what, each) = match ids.len() {
                1 => (format!("{} {}", self.noun, ids[0]), "only"),
                n => (
                    format!("{n} {}s ({})", self.noun, ids_shown(&ids, 10)),
                    "each only",
                ),
            };
            let whose = match distinct(members.iter().map(|r| r.owner.as_str())).len() {
                1 if members[0].owner == "NULL" => "with no worker recorded".to_string(),
                1 => format!("of worker {}", members[0].owner),
                n => format!("of {n} workers"),
            };
            let description = format!(
                "{what} {whose}: {}, {each} if still as the check saw it",
                of[m.rows[0]].1
            );
            let action =
                Action::sql_exec(&self.db.label, &m.statement, m.params, m.rows.len() as u32);
            f = f.action(action, description);
        }
        if waiting > 0 {
            f = f.evidence(
                "deferred",
                format!("{waiting} statement(s) for {deferred} row(s) wait for the next run"),
            );
        }
        f
    }
}

/// A finding about one row (not an owner's; `what` names the row): its
/// evidence, and its own compare-and-swap, `max-rows` 1.
pub fn one_row(
    mut f: Finding,
    db: &Db,
    what: &str,
    write: RowWrite,
    evidence: RowEvidence,
) -> Finding {
    for (key, value) in evidence {
        f = f.evidence(key, value);
    }
    match write {
        Some((update, does)) => {
            let (statement, params) = update.build(db);
            let description = format!("{what}: {does}, only if still as the check saw it");
            f.action(
                Action::sql_exec(&db.label, &statement, params, 1),
                description,
            )
        }
        None => f,
    }
}

/// Each value once, in the order first seen, with how often it occurs.
fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> Vec<(&'a str, usize)> {
    let (mut out, mut index): (Vec<(&str, usize)>, BTreeMap<&str, usize>) =
        (Vec::new(), BTreeMap::new());
    for v in values {
        match index.get(v) {
            Some(&i) => out[i].1 += 1,
            None => {
                index.insert(v, out.len());
                out.push((v, 1));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ident;

    fn chunks() -> Db {
        Db::new("main", "chunks", crate::Dialect::Sqlite, Vec::new())
    }

    fn orphan(owner: &str, id: i64, write: bool) -> Orphan {
        let mut u = Update::default();
        u.set("status", SqlValue::Text("pending".into()))
            .key(ident("id"), SqlValue::Integer(id))
            .unchanged(ident("worker"), SqlValue::Text(owner.into()))
            .unchanged(ident("started"), SqlValue::Integer(1_700_000_000 + id));
        Orphan {
            owner: owner.into(),
            id: id.to_string(),
            status: "running".into(),
            why: format!("pid {owner} is not running"),
            write: write.then(|| (u, "reset to pending".into())),
            evidence: vec![("remedy", if id % 2 == 0 { "a" } else { "b" }.into())],
        }
    }

    fn orphans(db: &Db, max_findings: usize) -> Orphans<'_> {
        Orphans {
            db,
            noun: "chunk",
            consequence: "nothing will finish this work",
            max_findings,
            overflow_key: "chunks:chunks:orphaned-overflow".into(),
        }
    }

    #[test]
    fn one_finding_per_owner_the_largest_first_and_the_rest_in_the_overflow() {
        let rows: Vec<Orphan> = [("7", 1), ("9", 2), ("9", 3), ("8", 4), ("NULL", 5)]
            .into_iter()
            .map(|(owner, id)| orphan(owner, id, true))
            .collect();
        let f = orphans(&chunks(), 3).findings(rows);
        let keys: Vec<&str> = f.iter().map(|f| f.key()).collect();
        assert_eq!(
            keys,
            [
                "worker:9:orphaned",
                "worker:7:orphaned",
                "worker:8:orphaned",
                "chunks:chunks:orphaned-overflow"
            ]
        );
        assert_eq!(
            f[0].message(),
            "2 chunks (2, 3) are running for worker 9 but pid 9 is not running; nothing will finish this work"
        );
        assert_eq!(f[0].action_count(), 1, "one set-based statement");
        assert!(f[3]
            .message()
            .starts_with("chunk 5 is running for 1 other worker(s)"));
        let none = orphans(&chunks(), 5)
            .findings(vec![orphan("NULL", 5, false), orphan("none", 6, false)]);
        assert_eq!(none.len(), 1, "one key, never two findings of one key");
        assert_eq!(none[0].key(), "worker:none:orphaned");
        assert!(none[0].message().contains("with no worker recorded"));
        assert_eq!(none[0].action_count(), 0, "no write proposed, none planned");
    }

    #[test]
    fn statements_beyond_the_hosts_bounds_wait_for_the_next_run() {
        // Keys of 200 bytes: some 280 rows fill a statement, 60,000 rows
        // would take over 200, more than a finding may carry (64) and more
        // than one report may weigh.
        let rows: Vec<Orphan> = (0..60_000)
            .map(|i| {
                let mut u = Update::default();
                u.set("status", SqlValue::Text("pending".into()))
                    .key(ident("id"), SqlValue::Text(format!("{i:0>200}")));
                Orphan {
                    write: Some((u, "reset".into())),
                    ..orphan("7", i, false)
                }
            })
            .collect();
        let f = orphans(&chunks(), 1).findings(rows);
        assert_eq!(f.len(), 1);
        let n = f[0].action_count();
        assert!(n > 1 && n <= MAX_BATCHES && n * 300 < 60_000, "{n}");
    }

    #[test]
    fn ids_are_shown_up_to_a_cap() {
        let ids: Vec<String> = (1..=60).map(|i| i.to_string()).collect();
        assert_eq!(ids_shown(&ids[..3], 50), "1, 2, 3");
        assert!(ids_shown(&ids, 50).ends_with("49, 50 … and 10 more"));
    }
}
