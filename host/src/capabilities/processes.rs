//! `processes`: the process table, read-only.

use super::scope::ScopeMatcher;
use super::CapabilityContext;
use crate::facts::processes::{self as process_facts, ProcessInfo};
use crate::policy::{ProcessScope, UserRef, Within};
use crate::runtime::bindings::doctor::plugin::processes::{self, Process, ProcessFilter, Scope};
use crate::runtime::bindings::doctor::plugin::types::{Error, ProcessRef};

/// The live answers; the trait impl below records or replays them.
impl CapabilityContext {
    /// Only the processes inside the grant's scope exist for the plugin.
    fn processes_all(&mut self) -> Result<Vec<Process>, Error> {
        let scope = self.grants.processes()?;
        let table = self.facts.processes().map_err(Error::Io)?;
        Ok(scope.filter(&table).into_iter().map(to_wit).collect())
    }

    /// One process: from the run's snapshot when a call has read it, else
    /// read alone (with the snapshot's own-tree rule), and shown only
    /// inside the grant's scope, its `under` judged by the same table.
    fn processes_get(&mut self, pid: u32) -> Result<Option<Process>, Error> {
        let scope = self.grants.processes()?;
        if let Some(table) = self.facts.processes_read() {
            let find = |pid: u32| table.iter().find(|p| p.id.pid == pid).cloned();
            return Ok(find(pid)
                .filter(|p| scope.contains(p, find))
                .as_ref()
                .map(to_wit));
        }
        Ok(process_facts::get_visible(pid)
            .filter(|p| scope.contains(p, process_facts::get_visible))
            .as_ref()
            .map(to_wit))
    }
}

/// The longest pattern or scope field a query may carry: a filter names a
/// deployment, it is not a program.
const MAX_FILTER_TEXT: usize = 4096;

impl CapabilityContext {
    /// The processes inside the grant's scope that match the filter: the
    /// host hands the plugin only these. From the run's snapshot when a call
    /// has read it; else /proc is read only as far as the filter needs: each
    /// process's stat and owner, its command line when its uid may match,
    /// its exe and cgroup when its command line does.
    fn processes_query(&mut self, filter: ProcessFilter) -> Result<Vec<Process>, Error> {
        let granted = self.grants.processes()?;
        let pattern = filter.pattern.as_deref().map(compile_pattern).transpose()?;
        let wanted = match filter.scope {
            None => ScopeMatcher::Host,
            Some(scope) => ScopeMatcher::compile(&ProcessScope::Within(within(scope)?))
                .map_err(|e| Error::Invalid(format!("filter: {e}")))?,
        };
        let matches = |p: &ProcessInfo| {
            pattern
                .as_ref()
                .is_none_or(|re| re.is_match(&p.command_line()))
        };
        let Some(table) = self.facts.processes_read() else {
            let uid_may_match = |p: &ProcessInfo| {
                granted.uid().is_none_or(|uid| uid == p.uid)
                    && wanted.uid().is_none_or(|uid| uid == p.uid)
            };
            let found = process_facts::matching(&uid_may_match, &matches)
                .map_err(|e| Error::Io(format!("reading /proc: {e}")))?;
            // Parents read one by one, as `get` reads them: a hidden process
            // must not be found out even as the ancestor an `under` asks about.
            let parent = process_facts::get_visible;
            let visible = |pid: u32| parent(pid).filter(|p| granted.contains(p, parent));
            return Ok(found
                .iter()
                .filter(|p| granted.contains(p, parent) && wanted.contains(p, visible))
                .map(to_wit)
                .collect());
        };
        // Everything below sees only what the grant shows: a hidden process
        // must not be found out even as the ancestor an `under` asks about.
        let visible: Vec<ProcessInfo> = granted.filter(&table).into_iter().cloned().collect();
        let inside: Vec<&ProcessInfo> = visible.iter().filter(|p| matches(p)).collect();
        if wanted.is_host() {
            return Ok(inside.into_iter().map(to_wit).collect());
        }
        let scoped: std::collections::HashSet<u32> =
            wanted.filter(&visible).iter().map(|p| p.id.pid).collect();
        Ok(inside
            .into_iter()
            .filter(|p| scoped.contains(&p.id.pid))
            .map(to_wit)
            .collect())
    }
}

fn compile_pattern(pattern: &str) -> Result<regex::Regex, Error> {
    if pattern.len() > MAX_FILTER_TEXT {
        return Err(Error::Limit(format!(
            "filter: pattern is {} bytes (at most {MAX_FILTER_TEXT})",
            pattern.len()
        )));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| Error::Invalid(format!("filter: pattern {pattern:?}: {e}")))
}

fn within(scope: Scope) -> Result<Within, Error> {
    let fields = [&scope.user, &scope.unit, &scope.cgroup, &scope.under];
    if fields.iter().all(|f| f.is_none()) {
        return Err(Error::Invalid(
            "filter: an empty scope names no processes; give user, unit, cgroup or under, or no scope".into(),
        ));
    }
    if fields
        .iter()
        .flat_map(|f| f.as_ref())
        .any(|f| f.len() > MAX_FILTER_TEXT)
    {
        return Err(Error::Limit(format!(
            "filter: a scope field is longer than {MAX_FILTER_TEXT} bytes"
        )));
    }
    Ok(Within {
        user: scope.user.map(|u| match u.parse::<u32>() {
            Ok(uid) => UserRef::Uid(uid),
            Err(_) => UserRef::Name(u),
        }),
        unit: scope.unit,
        cgroup: scope.cgroup,
        under: scope.under,
    })
}

impl processes::Host for CapabilityContext {
    fn all(&mut self) -> wasmtime::Result<Result<Vec<Process>, Error>> {
        self.answer("processes.all", (), |s| s.processes_all())
    }

    fn get(&mut self, pid: u32) -> wasmtime::Result<Result<Option<Process>, Error>> {
        self.answer("processes.get", (pid,), |s| s.processes_get(pid))
    }

    fn query(&mut self, filter: ProcessFilter) -> wasmtime::Result<Result<Vec<Process>, Error>> {
        self.answer("processes.query", (&filter,), |s| {
            s.processes_query(filter.clone())
        })
    }
}

fn to_wit(p: &ProcessInfo) -> Process {
    Process {
        id: ProcessRef {
            pid: p.id.pid,
            start_time: p.id.start_time,
        },
        ppid: p.ppid,
        uid: p.uid,
        state: p.state.to_string(),
        name: p.name.clone(),
        exe: p.exe.clone(),
        argv: p.argv.clone(),
        cgroup: p.cgroup.clone(),
        started_unix_ms: p.started_unix_ms,
        kernel_thread: p.kernel_thread,
    }
}

#[cfg(test)]
mod tests {
    use crate::capabilities::{denial, test_context};
    use crate::policy::Grants;
    use crate::runtime::bindings::doctor::plugin::processes::{Host, ProcessFilter, Scope};

    #[test]
    fn denied_without_the_grant_and_the_doctor_is_never_listed() {
        let why = denial(test_context(Grants::default()).all());
        assert!(why.contains("processes"), "names the grant: {why}");
        let mut granted = test_context(Grants {
            processes: crate::policy::ProcessScope::Host,
            ..Default::default()
        });
        let table = granted.all().unwrap().expect("granted");
        assert!(!table.is_empty());
        assert!(
            table.iter().all(|p| p.id.pid != std::process::id()),
            "doctor is not in the table plugins see"
        );
        assert_eq!(
            granted
                .get(std::process::id())
                .unwrap()
                .expect("granted")
                .map(|p| p.id.pid),
            None
        );
    }

    /// Any error value's text (a bad filter is `invalid` or `limit`).
    fn refusal<T: std::fmt::Debug>(
        answer: wasmtime::Result<Result<T, crate::runtime::bindings::doctor::plugin::types::Error>>,
    ) -> String {
        format!("{:?}", answer.unwrap().unwrap_err())
    }

    fn filter(pattern: Option<&str>, scope: Option<Scope>) -> ProcessFilter {
        ProcessFilter {
            pattern: pattern.map(String::from),
            scope,
        }
    }

    #[test]
    fn a_query_answers_only_the_matching_processes_inside_the_grant() {
        // Not the test's descendant (its shell exits at once): doctor's own
        // descendants are never in the table.
        let seconds = 3_000_000 + std::process::id();
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("sleep {seconds} >/dev/null 2>&1 & echo $!")])
            .output()
            .unwrap();
        let pattern = format!("^sleep {seconds}$");
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let me = nix::unistd::getuid().as_raw().to_string();
        let mut ctx = test_context(Grants {
            processes: crate::policy::ProcessScope::Host,
            ..Default::default()
        });
        let found = ctx.query(filter(Some(&pattern), None)).unwrap().unwrap();
        assert_eq!(found.iter().map(|p| p.id.pid).collect::<Vec<_>>(), [pid]);
        let scoped = Scope {
            user: Some(me),
            unit: None,
            cgroup: None,
            under: None,
        };
        let found = ctx
            .query(filter(Some(&pattern), Some(scoped)))
            .unwrap()
            .unwrap();
        assert_eq!(found.len(), 1);
        let other_user = Scope {
            user: Some("4000000".into()),
            unit: None,
            cgroup: None,
            under: None,
        };
        assert!(ctx
            .query(filter(Some(&pattern), Some(other_user)))
            .unwrap()
            .unwrap()
            .is_empty());
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    #[test]
    fn a_bad_filter_is_invalid_and_an_ungranted_query_denied() {
        let mut ctx = test_context(Grants {
            processes: crate::policy::ProcessScope::Host,
            ..Default::default()
        });
        let why = refusal(ctx.query(filter(Some("("), None)));
        assert!(why.contains("pattern"), "{why}");
        let empty = Scope {
            user: None,
            unit: None,
            cgroup: None,
            under: None,
        };
        let why = refusal(ctx.query(filter(None, Some(empty))));
        assert!(why.contains("empty scope"), "{why}");
        let why = refusal(ctx.query(filter(Some(&"a".repeat(5000)), None)));
        assert!(why.contains("at most"), "{why}");
        let why = denial(test_context(Grants::default()).query(filter(None, None)));
        assert!(why.contains("grants.processes"), "{why}");
    }
}
