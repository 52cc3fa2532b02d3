//! Guards that no policy can switch off: never pid 0 or 1, never a kernel
//! thread, never the doctor itself or one of its ancestors, never a thread
//! (a signal to a thread id reaches its whole process), never a process
//! whose identity (pid + start time) is not the one the plugin saw, never a
//! container engine's helper process (it is stopped through its engine).

use crate::facts::processes::{self, ProcessInfo};

#[derive(Debug)]
pub enum Verdict {
    /// The very process the plugin named; it may be signalled (grant permitting).
    Same(Box<ProcessInfo>),
    /// Gone, or the pid now belongs to another process: nothing to do.
    Gone(String),
    /// Forbidden whatever the policy says.
    Forbidden(String),
}

/// Decide whether the process `(pid, start_time)` may be signalled at all.
pub fn check_target(pid: u32, start_time: u64, protected: &[u32]) -> Verdict {
    if pid <= 1 {
        return Verdict::Forbidden(format!("pid {pid} is never signalled"));
    }
    // Any id is judged as the process it belongs to: /proc/TID answers for
    // a thread, and kill(TID) would signal the thread's whole group.
    let leader = thread_group_leader(pid);
    if protected.contains(&pid) || leader.is_some_and(|l| protected.contains(&l)) {
        return Verdict::Forbidden(format!(
            "pid {pid} is the doctor itself or one of its ancestors (or one of their threads)"
        ));
    }
    match leader {
        None => return Verdict::Gone(format!("pid {pid} is no longer running")),
        Some(leader) if leader != pid => {
            return Verdict::Forbidden(format!(
                "pid {pid} is a thread of process {leader}, not a process; threads are never signalled (name the process)"
            ));
        }
        Some(_) => {}
    }
    let Some(info) = processes::get(pid) else {
        return Verdict::Gone(format!("pid {pid} is no longer running"));
    };
    if descends_from(info.ppid, std::process::id()) {
        return Verdict::Forbidden(format!(
            "pid {pid} ({}) is a descendant of the doctor (a command it runs)",
            info.command_line()
        ));
    }
    if info.kernel_thread {
        return Verdict::Forbidden(format!("pid {pid} ({}) is a kernel thread", info.name));
    }
    if info.id.start_time != start_time {
        return Verdict::Gone(format!(
            "pid {pid} now belongs to another process ({}, started at tick {} not {start_time}); not signalled",
            info.command_line(),
            info.id.start_time
        ));
    }
    if info.state == 'Z' {
        return Verdict::Gone(format!("pid {pid} has already exited (zombie)"));
    }
    if let Some(helper) = engine_helper(&info) {
        return Verdict::Forbidden(format!(
            "pid {pid} ({}) is a container engine's helper process ({helper}); \
             engine helpers are never signalled: stop its container through its engine \
             (container-stop)",
            info.command_line()
        ));
    }
    Verdict::Same(Box::new(info))
}

/// The executables of container engines' helper processes, by file name,
/// with what each is. Signalling one breaks a live container behind its
/// engine's back (its monitor, its ports or its network go, the engine's
/// state goes stale); the container is stopped through the engine instead.
const ENGINE_HELPERS: &[(&str, &str)] = &[
    ("conmon", "Podman's container monitor"),
    ("rootlessport", "rootless Podman's port forwarder"),
    ("docker-proxy", "Docker's port forwarder"),
    (
        "rootlesskit-docker-proxy",
        "rootless Docker's port forwarder",
    ),
    ("slirp4netns", "a rootless container network"),
    ("pasta", "a rootless container network"),
    ("pasta.avx2", "a rootless container network"),
];

/// Every `containerd-shim*` (containerd-shim, containerd-shim-runc-v2,
/// containerd-shim-runsc-v1, ...) is the shim of containerd's containers.
const SHIM_PREFIX: &str = "containerd-shim";

/// The kernel keeps the first 15 bytes of a command name (`comm`).
const COMM_LEN: usize = 15;

/// What a container engine's helper process this is, if it is one.
///
/// Judged by the file name of the executable the process runs
/// (/proc/PID/exe, " (deleted)" after a package upgrade ignored), never by
/// its command line: an argument cannot make a process a helper, and a
/// helper cannot hide behind its arguments. Only when the executable cannot
/// be read (doctor not root, another user's process) does the command name
/// (`comm`, cut at 15 bytes by the kernel) stand in for it. A process that
/// merely has a helper's name (a copy of `sleep` called `conmon`) is
/// refused too: the safe side, and its owner can stop it.
pub fn engine_helper(info: &ProcessInfo) -> Option<&'static str> {
    match info.exe.as_deref() {
        Some(exe) => {
            let exe = exe.strip_suffix(" (deleted)").unwrap_or(exe);
            let name = exe.rsplit('/').next().unwrap_or(exe);
            helper_named(name, |helper| helper == name)
        }
        None => helper_named(&info.name, |helper| {
            helper.get(..COMM_LEN).unwrap_or(helper) == info.name
        }),
    }
}

fn helper_named(name: &str, is: impl Fn(&str) -> bool) -> Option<&'static str> {
    if name.starts_with(SHIM_PREFIX) {
        return Some("containerd's container shim");
    }
    ENGINE_HELPERS
        .iter()
        .find(|(helper, _)| is(helper))
        .map(|(_, what)| *what)
}

/// Does the parent chain starting at `ppid` reach `ancestor`? Bounded, in
/// case the table changes under the walk.
fn descends_from(mut ppid: u32, ancestor: u32) -> bool {
    for _ in 0..4096 {
        if ppid == ancestor {
            return true;
        }
        if ppid <= 1 {
            return false;
        }
        match processes::get(ppid) {
            Some(parent) => ppid = parent.ppid,
            None => return false,
        }
    }
    false
}

/// The thread-group id (`Tgid:` of /proc/ID/status): the process an id
/// belongs to. None when there is no such task.
pub fn thread_group_leader(id: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{id}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(exe: Option<&str>, comm: &str) -> ProcessInfo {
        let mut info = processes::get(std::process::id()).unwrap();
        info.exe = exe.map(str::to_string);
        info.name = comm.to_string();
        info
    }

    #[test]
    fn engine_helpers_are_known_by_their_executable() {
        for exe in [
            "/usr/bin/conmon",
            "/usr/lib/podman/rootlessport",
            "/usr/sbin/docker-proxy",
            "/usr/bin/containerd-shim-runc-v2",
            "/usr/bin/containerd-shim",
            "/usr/bin/slirp4netns",
            "/usr/bin/pasta.avx2",
            "/usr/bin/conmon (deleted)",
        ] {
            assert!(
                engine_helper(&named(Some(exe), "x")).is_some(),
                "{exe} is a helper"
            );
        }
        // The executable decides: neither the command name nor the
        // arguments make a process a helper when its executable is readable.
        let mut faker = named(Some("/usr/bin/python3"), "conmon");
        faker.argv = vec!["conmon".into(), "--cid".into()];
        assert!(engine_helper(&faker).is_none());
        assert!(engine_helper(&named(Some("/usr/bin/conmonitor"), "x")).is_none());
        // Without a readable executable, the command name, cut at 15 bytes.
        assert!(engine_helper(&named(None, "containerd-shim")).is_some());
        assert!(engine_helper(&named(None, "rootlesskit-doc")).is_some());
        assert!(engine_helper(&named(None, "conmon")).is_some());
        assert!(engine_helper(&named(None, "sleep")).is_none());
    }

    #[test]
    fn a_process_running_a_helpers_executable_is_never_a_target() {
        let dir = tempfile::tempdir().unwrap();
        let conmon = dir.path().join("conmon");
        std::fs::copy("/bin/sleep", &conmon).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "'{}' 30 >/dev/null 2>&1 & echo $!",
                conmon.display()
            ))
            .output()
            .unwrap();
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        // Judged once it runs the copy and its shell parent has gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while processes::get(pid).is_some_and(|p| {
            p.ppid == std::process::id() || !p.exe.is_some_and(|e| e.ends_with("/conmon"))
        }) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let start = processes::start_time(pid).unwrap();
        let verdict = check_target(pid, start, &[]);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        assert!(
            matches!(&verdict, Verdict::Forbidden(why) if why.contains("helper") && why.contains("through its engine")),
            "{verdict:?}"
        );
    }

    #[test]
    fn init_and_pid_zero_are_forbidden() {
        assert!(matches!(check_target(1, 0, &[]), Verdict::Forbidden(_)));
        assert!(matches!(check_target(0, 0, &[]), Verdict::Forbidden(_)));
    }

    #[test]
    fn self_and_ancestors_are_forbidden() {
        let me = processes::get(std::process::id()).unwrap();
        let protected = processes::self_and_ancestors();
        assert!(matches!(
            check_target(me.id.pid, me.id.start_time, &protected),
            Verdict::Forbidden(_)
        ));
        let parent = processes::get(me.ppid).unwrap();
        assert!(matches!(
            check_target(parent.id.pid, parent.id.start_time, &protected),
            Verdict::Forbidden(_)
        ));
    }

    /// A sleeper that is not this process's descendant (its shell parent
    /// exits at once), as the processes doctor acts on are not doctor's.
    fn orphan_sleeper() -> u32 {
        let out = std::process::Command::new("sh")
            .args(["-c", "sleep 30 >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while processes::get(pid).is_some_and(|p| p.ppid == std::process::id())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        pid
    }

    #[test]
    fn a_reused_pid_is_not_the_same_process() {
        let pid = orphan_sleeper();
        let info = processes::get(pid).unwrap();
        assert!(matches!(
            check_target(info.id.pid, info.id.start_time, &[]),
            Verdict::Same(_)
        ));
        assert!(matches!(
            check_target(info.id.pid, info.id.start_time - 1, &[]),
            Verdict::Gone(_)
        ));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while processes::is_alive(info.id) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(matches!(
            check_target(info.id.pid, info.id.start_time, &[]),
            Verdict::Gone(_)
        ));
    }

    #[test]
    fn the_doctors_own_descendants_are_never_targets() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let info = processes::get(child.id()).unwrap();
        let verdict = check_target(info.id.pid, info.id.start_time, &[]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(matches!(verdict, Verdict::Forbidden(why) if why.contains("descendant")));
    }

    #[test]
    fn a_thread_id_is_judged_as_its_process_and_never_signalled() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
            let _ = stop_rx.recv();
        });
        let tid = rx.recv().unwrap();
        let me = std::process::id();
        assert_eq!(thread_group_leader(tid), Some(me));
        let start = processes::start_time(tid).unwrap();
        // Protected through its leader, even though the tid itself is not listed.
        assert!(
            matches!(check_target(tid, start, &[me]), Verdict::Forbidden(why) if why.contains("ancestors"))
        );
        // Not protected: still never a target, and the reason names the process.
        assert!(
            matches!(check_target(tid, start, &[]), Verdict::Forbidden(why) if why.contains(&format!("thread of process {me}")))
        );
        stop_tx.send(()).unwrap();
        worker.join().unwrap();
    }
}
