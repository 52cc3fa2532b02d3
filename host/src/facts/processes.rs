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
/// its descendants. They are never instances of a target (policy reference, "Scope"):
/// the Stop button that runs `doctor fix` may match the very pattern it
/// stops, and a process a plugin cannot see yields no finding at all, rather
/// than a refused action that persists forever.
///
/// At 10,000 processes reading /proc is most of a check's time; the pids
/// are split across the available cores (each read is independent: one
/// directory fd per process), and a small table is read on this thread.
pub fn snapshot() -> std::io::Result<Vec<ProcessInfo>> {
    matching(&|_| true, &|_| true)
}

/// The processes of [`snapshot`] that `cheap` and then `keep` accept, read
/// only as far as needed: every process's stat and owner (for the own-tree
/// rule, and `cheap`), its command line only when `cheap` accepts it (for
/// `keep`), its exe and cgroup only when `keep` does too. Each predicate
/// sees the fields read so far; the rest are empty (`argv`) or `None`.
pub fn matching(
    cheap: &(dyn Fn(&ProcessInfo) -> bool + Sync),
    keep: &(dyn Fn(&ProcessInfo) -> bool + Sync),
) -> std::io::Result<Vec<ProcessInfo>> {
    let clock = Clock::get();
    let pids = pids()?;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_READERS);
    let read = |pid: u32| read_if(pid, clock, cheap, keep);
    let table: Vec<Read> = if workers < 2 || pids.len() < PARALLEL_FROM {
        pids.iter().filter_map(|&pid| read(pid)).collect()
    } else {
        let chunk = pids.len().div_ceil(workers);
        std::thread::scope(|scope| {
            let readers: Vec<_> = pids
                .chunks(chunk)
                .map(|part| {
                    scope
                        .spawn(move || part.iter().filter_map(|&pid| read(pid)).collect::<Vec<_>>())
                })
                .collect();
            // Reads return Option and do not panic on input; a reader that
            // failed anyway loses only its part of the table.
            readers
                .into_iter()
                .filter_map(|r| r.join().ok())
                .flatten()
                .collect()
        })
    };
    let own = own_tree(table.iter().map(Read::link), std::process::id());
    Ok(table
        .into_iter()
        .filter_map(|r| match r {
            Read::Kept(p) if !own.contains(&p.id.pid) => Some(p),
            _ => None,
        })
        .collect())
}

/// One process as [`matching`] read it: whole, or only its link to its parent.
enum Read {
    Kept(ProcessInfo),
    Passed { pid: u32, ppid: u32 },
}

impl Read {
    fn link(&self) -> (u32, u32) {
        match self {
            Read::Kept(p) => (p.id.pid, p.ppid),
            Read::Passed { pid, ppid } => (*pid, *ppid),
        }
    }
}

/// Below this many processes one thread reads them faster than several start.
const PARALLEL_FROM: usize = 512;
/// More readers than this contend on the kernel's pid lookups for no gain.
const MAX_READERS: usize = 4;

/// The numeric entries of /proc, in directory order.
fn pids() -> std::io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        if let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// `me`, its ancestors (read from /proc) and its descendants among the
/// `(pid, ppid)` links of a table.
fn own_tree(links: impl Iterator<Item = (u32, u32)>, me: u32) -> std::collections::HashSet<u32> {
    let links: Vec<(u32, u32)> = links.collect();
    let mut own: std::collections::HashSet<u32> = self_and_ancestors_of(me).into_iter().collect();
    // Descendants: every process whose parent chain reaches `me`. A fixed
    // point over the table, bounded by its size (pids form a forest).
    let mut descendants: std::collections::HashSet<u32> = [me].into_iter().collect();
    loop {
        let before = descendants.len();
        for &(pid, ppid) in &links {
            if descendants.contains(&ppid) {
                descendants.insert(pid);
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
    read(pid, Clock::get())
}

/// One process by pid as plugins see it (the rules of [`snapshot`]): None
/// when there is none, or when it is the doctor, one of its ancestors or
/// one of its descendants (its parent chain, read from /proc, reaches the
/// doctor). Reads that process and the stat of each process above it.
pub fn get_visible(pid: u32) -> Option<ProcessInfo> {
    let me = std::process::id();
    let p = get(pid)?;
    if self_and_ancestors_of(me).contains(&pid) {
        return None;
    }
    let mut next = p.ppid;
    // Bounded by the pids above it: a chain does not loop, but a pid
    // reused while walking must not make it.
    let mut seen = vec![pid];
    while next != 0 && !seen.contains(&next) {
        if next == me {
            return None;
        }
        seen.push(next);
        let Some(stat) = stat_of(next) else { break };
        next = stat.ppid;
    }
    Some(p)
}

/// `/proc/PID/stat` alone.
fn stat_of(pid: u32) -> Option<Stat> {
    Stat::parse(&std::fs::read(format!("/proc/{pid}/stat")).ok()?)
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

#[derive(Clone, Copy)]
struct Clock {
    boot_unix_ms: u64,
    ticks_per_second: u64,
}

impl Clock {
    /// Boot time and clock ticks do not change while doctor runs: read once.
    fn get() -> &'static Clock {
        static CLOCK: std::sync::OnceLock<Clock> = std::sync::OnceLock::new();
        CLOCK.get_or_init(|| Clock {
            boot_unix_ms: procfs::boot_time_secs().unwrap_or(0) * 1000,
            ticks_per_second: procfs::ticks_per_second().max(1),
        })
    }
}

/// One process through one directory fd: every later read goes through it,
/// so a pid reused between two reads makes them fail (ESRCH) instead of
/// mixing two processes. None when the process is gone or unreadable.
fn read(pid: u32, clock: &Clock) -> Option<ProcessInfo> {
    match read_if(pid, clock, &|_| true, &|_| true)? {
        Read::Kept(p) => Some(p),
        Read::Passed { .. } => None,
    }
}

/// [`read`], stopping after the stat and owner when `cheap` refuses the
/// process, and after the command line when `keep` does.
fn read_if(
    pid: u32,
    clock: &Clock,
    cheap: &dyn Fn(&ProcessInfo) -> bool,
    keep: &dyn Fn(&ProcessInfo) -> bool,
) -> Option<Read> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let dir = open(
        format!("/proc/{pid}").as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let stat = Stat::parse(&read_at(&dir, "stat")?)?;
    let uid = nix::sys::stat::fstat(&dir).ok()?.st_uid;
    let mut info = ProcessInfo {
        id: ProcessId {
            pid: stat.pid,
            start_time: stat.start_time,
        },
        ppid: stat.ppid,
        uid,
        state: stat.state,
        name: stat.comm,
        exe: None,
        argv: Vec::new(),
        cgroup: None,
        started_unix_ms: clock.boot_unix_ms + stat.start_time * 1000 / clock.ticks_per_second,
        kernel_thread: stat.flags & PF_KTHREAD != 0,
    };
    let passed = |info: ProcessInfo| {
        Some(Read::Passed {
            pid: info.id.pid,
            ppid: info.ppid,
        })
    };
    if !cheap(&info) {
        return passed(info);
    }
    info.argv = read_at(&dir, "cmdline")
        .map(|b| argv(&b))
        .unwrap_or_default();
    if !keep(&info) {
        return passed(info);
    }
    info.exe = nix::fcntl::readlinkat(&dir, "exe")
        .ok()
        .map(|p| Path::new(&p).display().to_string());
    info.cgroup = read_at(&dir, "cgroup").and_then(|b| cgroup(&b));
    Some(Read::Kept(info))
}

fn read_at(dir: &std::os::fd::OwnedFd, name: &str) -> Option<Vec<u8>> {
    use nix::fcntl::{openat, OFlag};
    use std::io::Read as _;
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let mut bytes = Vec::with_capacity(512);
    std::fs::File::from(fd).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// The fields of /proc/PID/stat that doctor uses.
struct Stat {
    pid: u32,
    comm: String,
    state: char,
    ppid: u32,
    flags: u32,
    start_time: u64,
}

impl Stat {
    /// `pid (comm) state ppid pgrp session tty tpgid flags ... starttime(22)`;
    /// comm may hold spaces and parentheses, so it ends at the *last* ')'.
    fn parse(bytes: &[u8]) -> Option<Stat> {
        let text = std::str::from_utf8(bytes).ok()?;
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let pid = text.get(..open)?.trim().parse().ok()?;
        let comm = text.get(open + 1..close)?.to_string();
        let rest: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
        Some(Stat {
            pid,
            comm,
            state: rest.first()?.chars().next()?,
            ppid: rest.get(1)?.parse().ok()?,
            flags: rest.get(6)?.parse().ok()?,
            start_time: rest.get(19)?.parse().ok()?,
        })
    }
}

/// NUL-separated arguments, empty ones dropped; an argv that is not UTF-8
/// reads as none (as with the procfs crate before).
fn argv(bytes: &[u8]) -> Vec<String> {
    match std::str::from_utf8(bytes) {
        Ok(text) => text
            .split('\0')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The first line's path (after `hierarchy-ID:controllers:`).
fn cgroup(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.lines()
        .next()
        .map(|l| l.splitn(3, ':').nth(2).unwrap_or(l).to_string())
}

/// The pids of this process and all its ancestors up to init.
pub fn self_and_ancestors() -> Vec<u32> {
    self_and_ancestors_of(std::process::id())
}

fn self_and_ancestors_of(me: u32) -> Vec<u32> {
    let mut pids = vec![me];
    let mut current = me;
    while let Some(stat) = stat_of(current) {
        if stat.ppid == 0 || pids.contains(&stat.ppid) {
            break;
        }
        pids.push(stat.ppid);
        current = stat.ppid;
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_real_child_with_its_argv() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        // Right after fork the child still carries our argv until it execs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let info = loop {
            let info = get(child.id()).expect("child is visible");
            if info.argv.first().map(String::as_str) == Some("sleep")
                || std::time::Instant::now() > deadline
            {
                break info;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(info.argv, vec!["sleep", "30"]);
        assert!(is_alive(info.id));
        assert!(!is_alive(ProcessId {
            start_time: info.id.start_time + 1,
            ..info.id
        }));
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
        let mut child = std::process::Command::new("sleep")
            .arg("31")
            .spawn()
            .unwrap();
        let table = snapshot().unwrap();
        let pids: Vec<u32> = table.iter().map(|p| p.id.pid).collect();
        for own in self_and_ancestors().into_iter().chain([child.id()]) {
            assert!(
                !pids.contains(&own),
                "pid {own} of the doctor's own tree is visible"
            );
        }
        assert!(!pids.is_empty() || table.is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn one_process_read_alone_follows_the_snapshots_own_tree_rule() {
        let mut child = std::process::Command::new("sleep")
            .arg("32")
            .spawn()
            .unwrap();
        for own in self_and_ancestors().into_iter().chain([child.id()]) {
            assert!(get_visible(own).is_none(), "pid {own} is the doctor's");
        }
        // Not our descendant: its shell exits at once.
        let out = std::process::Command::new("sh")
            .args(["-c", "sleep 33 >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        let other: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let seen = get_visible(other).expect("a process outside the doctor's tree");
        assert_eq!(seen.argv, ["sleep", "33"]);
        // A filtered read keeps what the snapshot keeps, read whole.
        let kept = matching(&|p| p.id.pid == other, &|p| p.argv == ["sleep", "33"]).unwrap();
        assert_eq!(kept.len(), 1);
        assert!(kept[0].exe.is_some() && kept[0].cgroup.is_some());
        let own = child.id();
        assert!(matching(&|p| p.id.pid == own, &|_| true)
            .unwrap()
            .is_empty());
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(other as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn stat_comm_may_hold_spaces_and_parentheses() {
        let line = b"4242 (a) (b c) S 7 4242 4242 0 -1 4194560 1 0 0 0 2 3 0 0 20 0 1 0 987654 1000 100 18446744073709551615\n";
        let stat = Stat::parse(line).expect("parses");
        assert_eq!(
            (stat.pid, stat.comm.as_str(), stat.state, stat.ppid),
            (4242, "a) (b c", 'S', 7)
        );
        assert_eq!((stat.flags, stat.start_time), (4194560, 987654));
        assert!(Stat::parse(b"4242 (cut").is_none());
        assert_eq!(argv(b"sleep\0\x0030\0"), vec!["sleep", "30"]);
        assert!(argv(b"\xff\0").is_empty());
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
