//! Which processes belong to the incident a policy describes (the policy
//! reference, "Scope"). A process is an instance of a target only when the deployment's
//! own data names it (a PID file, a table row: the plugin checks those), or
//! when it lies inside the scope the policy names here. A bare command-line
//! pattern matches nothing: two deployments on one host run the same
//! command lines, and a policy describes one of them.
//!
//! ```toml
//! scope = { user = "trader", unit = "trader-a.service" }  # every given field must hold
//! scope = { under = "/srv/a/run\\.sh" }                   # descendants of that process
//! scope = "host"                                          # explicitly anywhere (validate warns)
//! ```
//!
//! There is no working-directory scope: the process record of the WIT
//! contract carries no cwd, and the scope is decided inside the plugin.

use crate::processes::Process;
use crate::{host, Error};
use regex_lite::Regex;
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;

/// The `scope` config value as written.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Scope {
    /// Not given: only the deployment's own data (PID file, table row) names instances.
    #[default]
    Unscoped,
    /// `scope = "host"`: the operator's explicit choice to match anywhere.
    Host,
    /// Every given field must hold.
    Within(Within),
}

/// A scope table: each field that is given must hold.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Within {
    /// The process's owner: a user name or a uid.
    pub user: Option<UserRef>,
    /// A systemd unit (`trader-a.service`, `batch.slice`): one component of
    /// the process's cgroup path.
    pub unit: Option<String>,
    /// A cgroup path (`*` and `?` allowed): the process's cgroup is it or lies below it.
    pub cgroup: Option<String>,
    /// A regular expression searched in an ancestor's command line: the
    /// process descends from such a process (a launcher, a supervisor).
    pub under: Option<String>,
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum UserRef {
    Uid(u32),
    Name(String),
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scope, D::Error> {
        use serde::de::Error as _;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Null => Ok(Scope::Unscoped),
            serde_json::Value::String(s) if s.is_empty() => Ok(Scope::Unscoped),
            serde_json::Value::String(s) if s == "host" => Ok(Scope::Host),
            serde_json::Value::String(s) => Err(D::Error::custom(format!(
                "scope {s:?}: write \"host\" or a table {{ user, unit, cgroup, under }}"
            ))),
            v @ serde_json::Value::Object(_) => {
                let within: Within = serde_json::from_value(v)
                    .map_err(|e| D::Error::custom(format!("scope: {e}")))?;
                if within == Within::default() {
                    return Err(D::Error::custom(
                        "scope: an empty table names no scope; give user, unit, cgroup or under",
                    ));
                }
                Ok(Scope::Within(within))
            }
            other => Err(D::Error::custom(format!(
                "scope: expected \"host\" or a table, got {other}"
            ))),
        }
    }
}

impl Scope {
    /// Resolve user names and compile patterns; `what` names the config key in errors.
    pub fn compile(&self, what: &str) -> Result<ScopeMatcher, Error> {
        let Scope::Within(w) = self else {
            return Ok(ScopeMatcher {
                scope: self.clone(),
                uid: None,
                under: None,
            });
        };
        let uid = match &w.user {
            None => None,
            Some(UserRef::Uid(uid)) => Some(*uid),
            Some(UserRef::Name(name)) => match host::lookup_user(name) {
                Some(u) => Some(u.uid),
                None => {
                    return Err(Error::Invalid(format!(
                        "{what}.user: no user {name:?} on this host"
                    )))
                }
            },
        };
        let under = w
            .under
            .as_deref()
            .map(|p| {
                Regex::new(p)
                    .map_err(|e| Error::Invalid(format!("{what}.under: bad pattern {p:?}: {e}")))
            })
            .transpose()?;
        Ok(ScopeMatcher {
            scope: self.clone(),
            uid,
            under,
        })
    }
}

/// A compiled scope, ready to test processes.
pub struct ScopeMatcher {
    scope: Scope,
    uid: Option<u32>,
    under: Option<Regex>,
}

impl ScopeMatcher {
    /// True when no scope was given: command-line patterns match nothing.
    pub fn is_unscoped(&self) -> bool {
        self.scope == Scope::Unscoped
    }

    pub fn is_host(&self) -> bool {
        self.scope == Scope::Host
    }

    /// Does `p` lie inside the scope?
    pub fn contains(&self, p: &Process, table: &ProcessTable) -> bool {
        let w = match &self.scope {
            Scope::Unscoped => return false,
            Scope::Host => return true,
            Scope::Within(w) => w,
        };
        let cgroup = p.cgroup.as_deref().unwrap_or("");
        self.uid.is_none_or(|uid| p.uid == uid)
            && w.unit
                .as_deref()
                .is_none_or(|unit| cgroup.split('/').any(|part| part == unit))
            && w.cgroup.as_deref().is_none_or(|g| cgroup_within(cgroup, g))
            && self
                .under
                .as_ref()
                .is_none_or(|re| table.ancestors(p).any(|a| re.is_match(&command_line(a))))
    }

    /// The scope as an operator reads it in a message.
    pub fn describe(&self) -> String {
        match &self.scope {
            Scope::Unscoped => "no scope".into(),
            Scope::Host => "the whole host (scope = \"host\")".into(),
            Scope::Within(w) => {
                let mut parts = Vec::new();
                if let Some(u) = &w.user {
                    parts.push(match u {
                        UserRef::Uid(uid) => format!("uid {uid}"),
                        UserRef::Name(n) => format!("user {n}"),
                    });
                }
                if let Some(u) = &w.unit {
                    parts.push(format!("unit {u}"));
                }
                if let Some(c) = &w.cgroup {
                    parts.push(format!("cgroup {c}"));
                }
                if let Some(r) = &w.under {
                    parts.push(format!("descendants of /{r}/"));
                }
                parts.join(", ")
            }
        }
    }
}

/// `cgroup` is `pattern` or lies below it (`pattern` may use `*` and `?`).
fn cgroup_within(cgroup: &str, pattern: &str) -> bool {
    let pattern = pattern.trim_end_matches('/');
    if crate::glob_match(pattern, cgroup) {
        return true;
    }
    // Below it: some prefix of the path, cut at a '/', matches.
    cgroup
        .match_indices('/')
        .any(|(i, _)| i > 0 && crate::glob_match(pattern, &cgroup[..i]))
}

/// argv joined by spaces, or `[name]` when the kernel shows no argv.
pub fn command_line(p: &Process) -> String {
    if p.argv.is_empty() {
        format!("[{}]", p.name)
    } else {
        p.argv.join(" ")
    }
}

/// A process that can be an instance of anything: not a zombie, not a kernel thread.
pub fn is_live(p: &Process) -> bool {
    p.state != "Z" && p.state != "X" && !p.kernel_thread
}

/// The process table with lookups by pid and parent chains. The host leaves
/// the doctor itself, its ancestors and descendants out of it.
pub struct ProcessTable {
    procs: Vec<Process>,
    by_pid: HashMap<u32, usize>,
    /// The doctor and its ancestors: running, but never shown and never instances.
    doctors: Vec<u32>,
    /// Pids the host was asked for and does not show ([`ProcessTable::around`]).
    absent: Vec<u32>,
}

/// The host's reserved key/value entry naming the doctor's own pids.
const OWN_PIDS_KEY: &str = "doctor:own-pids";

impl ProcessTable {
    /// The whole table (`processes.all`), with the doctor's own pids.
    pub fn read() -> Result<ProcessTable, Error> {
        Ok(Self::new(crate::processes::all()?).with_doctors(Self::own_pids()))
    }

    /// The doctor's own pids, as the host names them in the plugin's state
    /// (see [`ProcessTable::is_doctors`]).
    pub fn own_pids() -> Vec<u32> {
        host::kv_get(OWN_PIDS_KEY)
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Fails as reading the whole table does when the plugin may not see
    /// processes (`denied`, naming `grants.processes`): for a plugin whose
    /// grant is required even when a run asks for no process.
    pub fn require_grant() -> Result<(), Error> {
        // No process has pid 0: the host checks the grant and answers none.
        crate::processes::get(0).map(|_| ())
    }

    /// A table of only the processes `pids` name and their ancestors,
    /// asked for one by one (`processes.get`): what a plugin that follows a
    /// few processes up their parent chains needs, without the host reading
    /// and sending every process. Lookups of any other pid find nothing.
    pub fn around(pids: impl IntoIterator<Item = u32>) -> Result<ProcessTable, Error> {
        let mut table = ProcessTable::new(Vec::new());
        for pid in pids {
            table.add_with_ancestors(pid)?;
        }
        Ok(table)
    }

    /// The processes a target of a PID file, a command-line `pattern` and a
    /// `scope` looks at, asked for by name instead of the whole table (with
    /// the doctor's own pids): the PID file's process `pid_file` and, when a
    /// scope is given, every process whose command line matches the pattern
    /// (`processes.query`; the scope is judged by [`ProcessTable::in_scope`]
    /// as before), each with its parent chain (the scope's `under`, a
    /// respawn's parent). Without a scope the pattern only confirms the PID
    /// file's process, so no other process is read.
    pub fn of_target(
        pid_file: Option<u32>,
        pattern: &str,
        scope: &ScopeMatcher,
    ) -> Result<ProcessTable, Error> {
        let mut table = ProcessTable::around(pid_file)?.with_doctors(Self::own_pids());
        if scope.is_unscoped() {
            return Ok(table);
        }
        let filter = crate::processes::ProcessFilter {
            pattern: Some(pattern.to_string()),
            scope: None,
        };
        let matched = match crate::processes::query(&filter) {
            Ok(matched) => matched,
            // A pattern the plugin reads but the host's query refuses (longer
            // than it takes, say): every process, as before.
            Err(Error::Invalid(_) | Error::Limit(_)) => crate::processes::all()?,
            Err(e) => return Err(e),
        };
        let pids: Vec<u32> = matched.iter().map(|p| p.id.pid).collect();
        for p in matched {
            table.insert(p);
        }
        for pid in pids {
            table.add_with_ancestors(pid)?;
        }
        Ok(table)
    }

    /// Add `p` (a process the plugin was given, e.g. by `processes.query`)
    /// unless the table holds its pid already.
    pub fn insert(&mut self, p: Process) {
        if !self.by_pid.contains_key(&p.id.pid) {
            self.by_pid.insert(p.id.pid, self.procs.len());
            self.procs.push(p);
        }
    }

    /// Add the process `pid` names and its ancestors, as far as
    /// [`ProcessTable::ancestors`] follows them, asking the host
    /// (`processes.get`) for each one the table does not hold yet.
    pub fn add_with_ancestors(&mut self, pid: u32) -> Result<(), Error> {
        let mut next = pid;
        // One step more than `ancestors` takes: the process itself.
        for _ in 0..=128 {
            if next == 0 || self.absent.contains(&next) {
                return Ok(());
            }
            if !self.by_pid.contains_key(&next) {
                match crate::processes::get(next)? {
                    Some(p) => self.insert(p),
                    None => {
                        self.absent.push(next);
                        return Ok(());
                    }
                }
            }
            let p = &self.procs[self.by_pid[&next]];
            if p.ppid == p.id.pid {
                return Ok(());
            }
            next = p.ppid;
        }
        Ok(())
    }

    pub fn new(procs: Vec<Process>) -> ProcessTable {
        let by_pid = procs
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.pid, i))
            .collect();
        ProcessTable {
            procs,
            by_pid,
            doctors: Vec::new(),
            absent: Vec::new(),
        }
    }

    pub fn with_doctors(mut self, pids: Vec<u32>) -> ProcessTable {
        self.doctors = pids;
        self
    }

    /// Is `pid` the doctor or one of its ancestors? Such a pid runs, but it
    /// is not in the table: a PID file or row naming it is not stale, and it
    /// is never an instance of anything.
    pub fn is_doctors(&self, pid: u32) -> bool {
        self.doctors.contains(&pid)
    }

    pub fn all(&self) -> &[Process] {
        &self.procs
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.by_pid.get(&pid).map(|i| &self.procs[*i])
    }

    /// Live processes only.
    pub fn live(&self) -> impl Iterator<Item = &Process> {
        self.procs.iter().filter(|p| is_live(p))
    }

    /// Parent, grandparent, ... as far as the table shows them (bounded).
    pub fn ancestors<'a>(&'a self, p: &Process) -> impl Iterator<Item = &'a Process> + 'a {
        let mut next = p.ppid;
        let mut steps = 0;
        std::iter::from_fn(move || {
            if next == 0 || steps >= 128 {
                return None;
            }
            steps += 1;
            let parent = self.get(next)?;
            next = if parent.ppid == parent.id.pid {
                0
            } else {
                parent.ppid
            };
            Some(parent)
        })
    }

    /// Live processes whose command line matches `pattern` and that lie inside `scope`.
    pub fn in_scope<'a>(
        &'a self,
        pattern: &'a Regex,
        scope: &'a ScopeMatcher,
    ) -> impl Iterator<Item = &'a Process> + 'a {
        self.live()
            .filter(move |p| pattern.is_match(&command_line(p)) && scope.contains(p, self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProcessRef;

    fn proc(pid: u32, ppid: u32, uid: u32, argv: &str, cgroup: &str) -> Process {
        Process {
            id: ProcessRef {
                pid,
                start_time: 100 + pid as u64,
            },
            ppid,
            uid,
            state: "S".into(),
            name: argv
                .split(' ')
                .next()
                .unwrap_or("")
                .chars()
                .take(15)
                .collect(),
            exe: None,
            argv: argv.split(' ').map(str::to_string).collect(),
            cgroup: Some(cgroup.into()),
            started_unix_ms: 0,
            kernel_thread: false,
        }
    }

    fn table() -> ProcessTable {
        ProcessTable::new(vec![
            proc(
                10,
                1,
                0,
                "sh /srv/a/run.sh",
                "/system.slice/trader-a.service",
            ),
            proc(
                11,
                10,
                1001,
                "python3 worker.py",
                "/system.slice/trader-a.service",
            ),
            proc(
                20,
                1,
                0,
                "sh /srv/b/run.sh",
                "/system.slice/trader-b.service",
            ),
            proc(
                21,
                20,
                1001,
                "python3 worker.py",
                "/system.slice/trader-b.service/sub",
            ),
        ])
    }

    fn scope(json: &str) -> ScopeMatcher {
        let s: Scope = serde_json::from_str(json).unwrap();
        s.compile("scope").unwrap()
    }

    fn matched(json: &str) -> Vec<u32> {
        let t = table();
        let s = scope(json);
        let re = Regex::new("worker\\.py").unwrap();
        t.in_scope(&re, &s).map(|p| p.id.pid).collect()
    }

    #[test]
    fn no_scope_matches_nothing_and_host_matches_everything() {
        assert_eq!(matched("null"), Vec::<u32>::new());
        assert_eq!(matched("\"host\""), vec![11, 21]);
    }

    #[test]
    fn each_field_narrows_to_one_deployment() {
        assert_eq!(matched(r#"{"under": "/srv/a/run\\.sh"}"#), vec![11]);
        assert_eq!(matched(r#"{"unit": "trader-b.service"}"#), vec![21]);
        assert_eq!(
            matched(r#"{"cgroup": "/system.slice/trader-b.service"}"#),
            vec![21]
        );
        assert_eq!(
            matched(r#"{"cgroup": "/system.slice/trader-a*"}"#),
            vec![11]
        );
        assert_eq!(
            matched(r#"{"user": 1001, "unit": "trader-a.service"}"#),
            vec![11]
        );
        assert_eq!(matched(r#"{"user": 0}"#), Vec::<u32>::new());
    }

    #[test]
    fn a_table_around_some_pids_holds_them_and_their_ancestors_only() {
        let facts = crate::testing::Facts::new().processes(table().procs);
        let around = crate::testing::answer_with(facts, || {
            let mut t = ProcessTable::around([11, 99]).unwrap();
            t.insert(proc(21, 20, 1001, "python3 worker.py", "/x"));
            t.add_with_ancestors(21).unwrap();
            t
        });
        let mut pids: Vec<u32> = around.all().iter().map(|p| p.id.pid).collect();
        pids.sort_unstable();
        assert_eq!(pids, [10, 11, 20, 21], "99 runs nowhere; 1 is not shown");
        let chain: Vec<u32> = around
            .ancestors(around.get(11).unwrap())
            .map(|p| p.id.pid)
            .collect();
        assert_eq!(chain, [10]);
    }

    #[test]
    fn bad_scopes_are_config_errors() {
        assert!(serde_json::from_str::<Scope>("\"everywhere\"").is_err());
        assert!(serde_json::from_str::<Scope>("{}").is_err());
        assert!(serde_json::from_str::<Scope>(r#"{"cwd": "/srv"}"#).is_err());
    }
}
