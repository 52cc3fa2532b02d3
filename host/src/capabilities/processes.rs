//! `processes`: the process table, read-only.

use super::CapabilityContext;
use crate::facts::processes::ProcessInfo;
use crate::runtime::bindings::doctor::plugin::processes::{self, Process};
use crate::runtime::bindings::doctor::plugin::types::{Error, ProcessRef};

/// The live answers; the trait impl below records or replays them.
impl CapabilityContext {
    /// Only the processes inside the grant's scope exist for the plugin.
    fn processes_all(&mut self) -> Result<Vec<Process>, Error> {
        let scope = self.grants.processes()?;
        let table = self.facts.processes().map_err(Error::Io)?;
        Ok(scope.filter(&table).into_iter().map(to_wit).collect())
    }

    fn processes_get(&mut self, pid: u32) -> Result<Option<Process>, Error> {
        let scope = self.grants.processes()?;
        let table = self.facts.processes().map_err(Error::Io)?;
        Ok(scope
            .filter(&table)
            .into_iter()
            .find(|p| p.id.pid == pid)
            .map(to_wit))
    }
}

impl processes::Host for CapabilityContext {
    fn all(&mut self) -> wasmtime::Result<Result<Vec<Process>, Error>> {
        self.answer("processes.all", (), |s| s.processes_all())
    }

    fn get(&mut self, pid: u32) -> wasmtime::Result<Result<Option<Process>, Error>> {
        self.answer("processes.get", (pid,), |s| s.processes_get(pid))
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
    use crate::runtime::bindings::doctor::plugin::processes::Host;

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
}
