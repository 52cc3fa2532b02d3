//! The process table, read from /proc. A process is named by (pid, start time).

use std::path::Path;

/// Kernel threads carry PF_KTHREAD in /proc/PID/stat's flags.
const PF_KTHREAD: u32 = 0x0020_0000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessId {
    pub pid: u32,
    /// Clock ticks after boot (field 22 of /proc/PID/stat).
    pub start_time: u64,
}

#[derive(Debug, Clone)]
pub struct ProcessInfo {
    pub id: ProcessId,
    pub ppid: u32,
    pub uid: u32,
    pub state: char,
    pub name: String,
    pub exe: Option<String>,
    pub argv: Vec<String>,
    pub cgroup: Option<String>,
    pub started_unix_ms: u64,
    pub kernel_thread: bool,
}

impl ProcessInfo {
    pub fn command_line(&self) -> String {
        if self.argv.is_empty() {
            format!("[{}]", self.name)
        } else {
            self.argv.join(" ")
        }
    }
}

/// Every process visible now, as plugins see it: processes that exit while
/// being read are skipped, and so are the doctor itself, its ancestors and
/// its descendants. They are never instances of a target (DESIGN §4 Scope):
/// the Stop button that runs `doctor fix` may match the very pattern it
/// stops, and a process a plugin cannot see yields no finding at all, rather
/// than a refused action that persists forever.
pub fn snapshot() -> std::io::Result<Vec<ProcessInfo>> {
    let clock = Clock::read();
    let all = procfs::process::all_processes().map_err(to_io)?;
    let table: Vec<ProcessInfo> = all.filter_map(|p| p.ok()).filter_map(|p| describe(&p, &clock)).collect();
    let own = own_tree(&table, std::process::id());
    Ok(table.into_iter().filter(|p| !own.contains(&p.id.pid)).collect())
}

/// `me`, its ancestors (read from /proc) and its descendants in `table`.
fn own_tree(table: &[ProcessInfo], me: u32) -> std::collections::HashSet<u32> {
    let mut own: std::collections::HashSet<u32> = self_and_ancestors_of(me).into_iter().collect();
    // Descendants: every process whose parent chain reaches `me`. A fixed
    // point over the table, bounded by its size (pids form a forest).
    let mut descendants: std::collections::HashSet<u32> = [me].into_iter().collect();
    loop {
        let before = descendants.len();
        for p in table {
            if descendants.contains(&p.ppid) {
                descendants.insert(p.id.pid);
            }
        }
        if descendants.len() == before {
            break;
        }
    }
    own.extend(descendants);
    own
}

/// One process by pid, or None if there is none.
pub fn get(pid: u32) -> Option<ProcessInfo> {
    let process = procfs::process::Process::new(pid as i32).ok()?;
    describe(&process, &Clock::read())
}

/// The start time of `pid` now, read straight from /proc (None when gone).
pub fn start_time(pid: u32) -> Option<u64> {
    let process = procfs::process::Process::new(pid as i32).ok()?;
    process.stat().ok().map(|s| s.starttime)
}

/// True when `id` names a live (non-zombie) process: same pid, same start time.
pub fn is_alive(id: ProcessId) -> bool {
    match procfs::process::Process::new(id.pid as i32).and_then(|p| p.stat()) {
        Ok(stat) => stat.starttime == id.start_time && stat.state != 'Z' && stat.state != 'X',
        Err(_) => false,
    }
}

struct Clock {
    boot_unix_ms: u64,
    ticks_per_second: u64,
}

impl Clock {
    fn read() -> Clock {
        Clock {
            boot_unix_ms: procfs::boot_time_secs().unwrap_or(0) * 1000,
            ticks_per_second: procfs::ticks_per_second().max(1),
        }
    }
}

fn describe(process: &procfs::process::Process, clock: &Clock) -> Option<ProcessInfo> {
    let stat = process.stat().ok()?;
    let uid = process.uid().ok()?;
    let argv = process.cmdline().unwrap_or_default();
    Some(ProcessInfo {
        id: ProcessId { pid: stat.pid as u32, start_time: stat.starttime },
        ppid: stat.ppid as u32,
        uid,
        state: stat.state,
        name: stat.comm.clone(),
        exe: process.exe().ok().map(|p| p.display().to_string()),
        argv,
        cgroup: read_cgroup(&Path::new("/proc").join(stat.pid.to_string()).join("cgroup")),
        started_unix_ms: clock.boot_unix_ms + stat.starttime * 1000 / clock.ticks_per_second,
        kernel_thread: stat.flags & PF_KTHREAD != 0,
    })
}

fn read_cgroup(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().next().map(|l| l.splitn(3, ':').nth(2).unwrap_or(l).to_string())
}

fn to_io(e: procfs::ProcError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// The pids of this process and all its ancestors up to init.
pub fn self_and_ancestors() -> Vec<u32> {
    self_and_ancestors_of(std::process::id())
}

fn self_and_ancestors_of(me: u32) -> Vec<u32> {
    let mut pids = vec![me];
    let mut current = me;
    while let Some(info) = get(current) {
        if info.ppid == 0 || pids.contains(&info.ppid) {
            break;
        }
        pids.push(info.ppid);
        current = info.ppid;
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_real_child_with_its_argv() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        // Right after fork the child still carries our argv until it execs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let info = loop {
            let info = get(child.id()).expect("child is visible");
            if info.argv.first().map(String::as_str) == Some("sleep") || std::time::Instant::now() > deadline {
                break info;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(info.argv, vec!["sleep", "30"]);
        assert!(is_alive(info.id));
        assert!(!is_alive(ProcessId { start_time: info.id.start_time + 1, ..info.id }));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!is_alive(info.id));
    }

    #[test]
    fn ancestors_include_self_and_parent() {
        let chain = self_and_ancestors();
        assert_eq!(chain[0], std::process::id());
        assert!(chain.len() >= 2);
    }

    #[test]
    fn the_doctor_its_ancestors_and_descendants_are_not_in_the_snapshot() {
        let mut child = std::process::Command::new("sleep").arg("31").spawn().unwrap();
        let table = snapshot().unwrap();
        let pids: Vec<u32> = table.iter().map(|p| p.id.pid).collect();
        for own in self_and_ancestors().into_iter().chain([child.id()]) {
            assert!(!pids.contains(&own), "pid {own} of the doctor's own tree is visible");
        }
        assert!(!pids.is_empty() || table.is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn kernel_threads_are_flagged() {
        // kthreadd is pid 2 on Linux hosts with a visible kernel thread tree.
        if let Some(kthreadd) = get(2).filter(|p| p.name == "kthreadd") {
            assert!(kthreadd.kernel_thread);
        }
        let me = get(std::process::id()).unwrap();
        assert!(!me.kernel_thread);
    }
}
