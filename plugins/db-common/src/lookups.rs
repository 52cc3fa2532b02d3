//! The processes judging a table's rows needs, asked of the host by name
//! (`processes.get`) and by pattern (`processes.query`) instead of as the
//! whole table (`processes.all`): at 10,000 processes the whole table is
//! every /proc entry read by the host and every record copied into the
//! plugin and held there, to judge a few owners.
//!
//! What a verdict looks at, and how it is read:
//! - a row's pid ([`Owner::Pid`]): that process, and its parent chain when
//!   the scope has `under` (the scope vouches for a leftover before it is
//!   stopped, [`crate::may_stop`]);
//! - a name-only worker ([`Owner::Name`], by `name_pattern`) and a
//!   coordinator (by its pattern): the processes whose command line matches,
//!   chosen by the host (`processes.query` with the pattern; the scope is
//!   judged in the plugin as before), each with its parent chain for
//!   `under`. Without a scope a pattern matches nothing, so nothing is
//!   searched;
//! - the doctor's own pids: named by the host in the plugin's state, never read.
//!
//! Rows naming more than [`MAX_LOOKUPS`] distinct pids read the whole table
//! once instead, as does a pattern the host's query refuses.

use crate::{row_owner, Identity, IdentityConfig, NameFinder, Owner, OwnerCheck, RowIdentity};
use doctor_sdk::prelude::*;
use doctor_sdk::processes::ProcessFilter;
use doctor_sdk::scope::{ProcessTable, Scope};
use regex_lite::Regex;
use std::collections::BTreeSet;

/// The most distinct pids asked for one by one: each is a call to the host
/// and a few /proc reads there, so beyond this (a few hundred, against the
/// tens of thousands of reads of a whole table on a busy host) one whole
/// read costs less.
pub const MAX_LOOKUPS: usize = 256;

/// What the rows' verdicts will look at, gathered before any process is read.
pub struct Lookups {
    pids: BTreeSet<u32>,
    patterns: Vec<String>,
    /// Where the deployment's processes live: `under` needs parent chains,
    /// and without a scope no pattern is searched.
    scope: Scope,
}

impl Lookups {
    pub fn new(scope: Scope) -> Lookups {
        Lookups {
            pids: BTreeSet::new(),
            patterns: Vec::new(),
            scope,
        }
    }

    /// What judging the owners of `rows` (see [`crate::judge_owner`]) will
    /// look at, for a table whose owners `id` (parsed from `config`) describes.
    pub fn of_rows<'r>(
        id: &Identity,
        config: &IdentityConfig,
        hostname: &str,
        names: Option<&NameFinder>,
        rows: impl IntoIterator<Item = RowIdentity<'r>>,
    ) -> Lookups {
        let nobody = ProcessTable::new(Vec::new());
        let chk = id.owner_check(config.worker_kind, &nobody, hostname, names);
        let mut wanted = Lookups::new(config.scope.clone());
        for row in rows {
            wanted.owner(&row_owner(&row, &chk), &chk);
        }
        wanted
    }

    /// As [`Lookups::search`], for a pattern there may not be.
    pub fn searching(mut self, pattern: Option<&Regex>) -> Lookups {
        if let Some(pattern) = pattern {
            self.search(pattern);
        }
        self
    }

    /// What judging `owner` (see [`crate::judge_owner`]) will look at.
    pub fn owner(&mut self, owner: &Owner, chk: &OwnerCheck) {
        match owner {
            Owner::Pid { pid, .. } => {
                self.pids.insert(*pid);
            }
            Owner::Name(_) => {
                if let Some(finder) = chk.names {
                    self.search(finder.pattern);
                }
            }
            Owner::Told(_) => {}
        }
    }

    /// The live processes matching `pattern` inside the scope will be looked for.
    pub fn search(&mut self, pattern: &Regex) {
        if !self.patterns.iter().any(|p| p == pattern.as_str()) {
            self.patterns.push(pattern.as_str().to_string());
        }
    }

    /// As [`Lookups::read`] when `wanted`; else an empty table, and no
    /// process grant needed (a table that records no worker).
    pub fn read_if(self, wanted: bool, doctors: bool) -> Result<ProcessTable, Error> {
        match wanted {
            true => self.read(doctors),
            false => Ok(ProcessTable::new(Vec::new())),
        }
    }

    /// The table of what was gathered; the process grant is required
    /// whatever that is, as when the whole table was read. `doctors`: the
    /// table names the doctor's own pids ([`ProcessTable::is_doctors`]),
    /// which are then not asked for.
    pub fn read(self, doctors: bool) -> Result<ProcessTable, Error> {
        ProcessTable::require_grant()?;
        let scope = &self.scope;
        let own = match doctors {
            true => ProcessTable::own_pids(),
            false => Vec::new(),
        };
        let pids: Vec<u32> = self
            .pids
            .into_iter()
            .filter(|pid| !own.contains(pid))
            .collect();
        if pids.len() > MAX_LOOKUPS {
            return whole(own);
        }
        let under = matches!(scope, Scope::Within(w) if w.under.is_some());
        let mut table = ProcessTable::new(Vec::new()).with_doctors(own.clone());
        for pid in pids {
            if under {
                table.add_with_ancestors(pid)?;
            } else if let Some(p) = processes::get(pid)? {
                table.insert(p);
            }
        }
        if *scope == Scope::Unscoped {
            return Ok(table);
        }
        for pattern in self.patterns {
            let filter = ProcessFilter {
                pattern: Some(pattern),
                scope: None,
            };
            let matched = match processes::query(&filter) {
                Ok(matched) => matched,
                // A pattern the plugin reads but the host's query refuses
                // (longer than it takes, say): every process, as before.
                Err(Error::Invalid(_) | Error::Limit(_)) => return whole(own),
                Err(e) => return Err(e),
            };
            let found: Vec<u32> = matched.iter().map(|p| p.id.pid).collect();
            for p in matched {
                table.insert(p);
            }
            if under {
                for pid in found {
                    table.add_with_ancestors(pid)?;
                }
            }
        }
        Ok(table)
    }
}

/// The whole table (`processes.all`), with the doctor's own pids `own`.
fn whole(own: Vec<u32>) -> Result<ProcessTable, Error> {
    Ok(ProcessTable::new(processes::all()?).with_doctors(own))
}
