//! The scope a plugin's grant carries, decided by the host: which processes
//! exist for the plugin (`grants.processes`) and which it may have signalled
//! (`grants.signal.scope`, else the processes scope). A process outside is
//! left out of every answer and refused as a target, naming the scope.

use crate::facts::processes::ProcessInfo;
use crate::policy::{ProcessScope, UserRef, Within};
use std::collections::HashMap;

/// Ancestors looked at for `under`, at most: deeper trees are not real.
const MAX_ANCESTORS: usize = 64;

/// A grant's scope, compiled for one call.
#[derive(Debug)]
pub enum ScopeMatcher {
    /// The whole host.
    Host,
    Within(Compiled),
}

#[derive(Debug)]
pub struct Compiled {
    uid: Option<u32>,
    unit: Option<String>,
    cgroup: Option<glob::Pattern>,
    under: Option<regex::Regex>,
    /// The scope as the policy wrote it, for denials.
    shown: String,
}

impl ScopeMatcher {
    /// `None` (not granted) is the caller's denial; here it is the host.
    pub fn compile(scope: &ProcessScope) -> Result<ScopeMatcher, String> {
        match scope {
            ProcessScope::None | ProcessScope::Host => Ok(ScopeMatcher::Host),
            ProcessScope::Within(w) => Ok(ScopeMatcher::Within(Compiled::new(w)?)),
        }
    }

    pub fn is_host(&self) -> bool {
        matches!(self, ScopeMatcher::Host)
    }

    /// The uid every process inside must have, if the scope names one: the
    /// one field a process can be judged by before its command line is read.
    pub fn uid(&self) -> Option<u32> {
        match self {
            ScopeMatcher::Host => None,
            ScopeMatcher::Within(c) => c.uid,
        }
    }

    /// Is `p` inside, with `parent(pid)` giving the process records above it?
    pub fn contains(&self, p: &ProcessInfo, parent: impl Fn(u32) -> Option<ProcessInfo>) -> bool {
        match self {
            ScopeMatcher::Host => true,
            ScopeMatcher::Within(c) => c.contains(p, parent),
        }
    }

    /// The processes of `table` inside this scope, `under` judged by the table itself.
    pub fn filter<'a>(&self, table: &'a [ProcessInfo]) -> Vec<&'a ProcessInfo> {
        if self.is_host() {
            return table.iter().collect();
        }
        let by_pid: HashMap<u32, &ProcessInfo> = table.iter().map(|p| (p.id.pid, p)).collect();
        let parent = |pid: u32| by_pid.get(&pid).map(|p| (*p).clone());
        table.iter().filter(|p| self.contains(p, parent)).collect()
    }

    /// How a denial names it.
    pub fn shown(&self) -> &str {
        match self {
            ScopeMatcher::Host => "the whole host",
            ScopeMatcher::Within(c) => &c.shown,
        }
    }
}

impl Compiled {
    fn new(w: &Within) -> Result<Compiled, String> {
        let uid = match &w.user {
            None => None,
            Some(UserRef::Uid(uid)) => Some(*uid),
            Some(UserRef::Name(name)) => Some(
                nix::unistd::User::from_name(name)
                    .ok()
                    .flatten()
                    .ok_or_else(|| format!("scope user {name:?} does not exist on this host"))?
                    .uid
                    .as_raw(),
            ),
        };
        let cgroup = w
            .cgroup
            .as_deref()
            .map(glob::Pattern::new)
            .transpose()
            .map_err(|e| format!("scope cgroup: {e}"))?;
        let under = w
            .under
            .as_deref()
            .map(|p| regex::RegexBuilder::new(p).size_limit(1 << 20).build())
            .transpose()
            .map_err(|e| format!("scope under: {e}"))?;
        Ok(Compiled {
            uid,
            unit: w.unit.clone(),
            cgroup,
            under,
            shown: shown(w),
        })
    }

    fn contains(&self, p: &ProcessInfo, parent: impl Fn(u32) -> Option<ProcessInfo>) -> bool {
        if self.uid.is_some_and(|uid| uid != p.uid) {
            return false;
        }
        let cgroup = p.cgroup.as_deref().unwrap_or_default();
        if let Some(unit) = &self.unit {
            if !cgroup.split('/').any(|part| part == unit) {
                return false;
            }
        }
        if let Some(pattern) = &self.cgroup {
            if !cgroup_within(pattern, cgroup) {
                return false;
            }
        }
        match &self.under {
            None => true,
            Some(re) => descends_from(p, re, parent),
        }
    }
}

/// The cgroup is the pattern's or lies below it: the pattern matches the
/// path or one of its ancestors (`*` never crosses a `/`).
fn cgroup_within(pattern: &glob::Pattern, cgroup: &str) -> bool {
    let options = glob::MatchOptions {
        require_literal_separator: true,
        ..Default::default()
    };
    let mut path = cgroup;
    loop {
        if pattern.matches_with(path, options) {
            return true;
        }
        match path.rfind('/') {
            Some(0) | None => return false,
            Some(at) => path = &path[..at],
        }
    }
}

fn descends_from(
    p: &ProcessInfo,
    re: &regex::Regex,
    parent: impl Fn(u32) -> Option<ProcessInfo>,
) -> bool {
    let mut ppid = p.ppid;
    for _ in 0..MAX_ANCESTORS {
        if ppid == 0 {
            return false;
        }
        let Some(ancestor) = parent(ppid) else {
            return false;
        };
        if re.is_match(&ancestor.command_line()) {
            return true;
        }
        ppid = ancestor.ppid;
    }
    false
}

fn shown(w: &Within) -> String {
    let mut parts = Vec::new();
    match &w.user {
        Some(UserRef::Uid(uid)) => parts.push(format!("user = {uid}")),
        Some(UserRef::Name(name)) => parts.push(format!("user = {name:?}")),
        None => {}
    }
    for (key, value) in [
        ("unit", &w.unit),
        ("cgroup", &w.cgroup),
        ("under", &w.under),
    ] {
        if let Some(v) = value {
            parts.push(format!("{key} = {v:?}"));
        }
    }
    format!("{{ {} }}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::processes::ProcessId;

    fn process(pid: u32, ppid: u32, uid: u32, argv: &str, cgroup: &str) -> ProcessInfo {
        ProcessInfo {
            id: ProcessId { pid, start_time: 1 },
            ppid,
            uid,
            state: 'S',
            name: argv.split(' ').next().unwrap_or_default().into(),
            exe: None,
            argv: argv.split(' ').map(String::from).collect(),
            cgroup: Some(cgroup.into()),
            started_unix_ms: 0,
            kernel_thread: false,
        }
    }

    fn scope(text: &str) -> ScopeMatcher {
        #[derive(serde::Deserialize)]
        struct T {
            s: ProcessScope,
        }
        ScopeMatcher::compile(&toml::from_str::<T>(text).unwrap().s).unwrap()
    }

    /// Two deployments with identical command lines: only the launcher and
    /// the cgroup tell them apart.
    fn two_deployments() -> Vec<ProcessInfo> {
        vec![
            process(10, 1, 0, "sh /srv/a/run.sh", "/system.slice/a.service"),
            process(11, 10, 1001, "python3 worker.py", "/system.slice/a.service"),
            process(20, 1, 0, "sh /srv/b/run.sh", "/system.slice/b.service"),
            process(21, 20, 1001, "python3 worker.py", "/system.slice/b.service"),
        ]
    }

    fn pids(m: &ScopeMatcher, table: &[ProcessInfo]) -> Vec<u32> {
        m.filter(table).iter().map(|p| p.id.pid).collect()
    }

    #[test]
    fn each_field_narrows_to_one_deployment() {
        let t = two_deployments();
        assert_eq!(pids(&scope("s = { under = \"/srv/a/\" }"), &t), [11]);
        assert_eq!(pids(&scope("s = { unit = \"b.service\" }"), &t), [20, 21]);
        assert_eq!(
            pids(&scope("s = { cgroup = \"/system.slice/a.*\" }"), &t),
            [10, 11]
        );
        assert_eq!(
            pids(&scope("s = { user = 1001, unit = \"a.service\" }"), &t),
            [11]
        );
        assert_eq!(pids(&scope("s = true"), &t).len(), 4);
    }

    #[test]
    fn a_cgroup_pattern_reaches_below_but_a_star_never_crosses_a_slash() {
        let p = glob::Pattern::new("/system.slice/*").unwrap();
        assert!(cgroup_within(&p, "/system.slice/a.service/sub"));
        assert!(!cgroup_within(&p, "/user.slice/a.service"));
        let unit_only = glob::Pattern::new("/*.service").unwrap();
        assert!(!cgroup_within(&unit_only, "/system.slice/a.service"));
    }

    #[test]
    fn an_unknown_user_is_an_error_naming_it() {
        #[derive(serde::Deserialize)]
        struct T {
            s: ProcessScope,
        }
        let s = toml::from_str::<T>("s = { user = \"no-such-user-doctor\" }").unwrap();
        let e = ScopeMatcher::compile(&s.s).unwrap_err();
        assert!(e.contains("no-such-user-doctor"), "{e}");
    }
}
