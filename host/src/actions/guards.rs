//! Guards that no policy can switch off: never pid 0 or 1, never a kernel
//! thread, never the doctor itself or one of its ancestors, never a process
//! whose identity (pid + start time) is not the one the plugin saw.

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
    if protected.contains(&pid) {
        return Verdict::Forbidden(format!("pid {pid} is the doctor itself or one of its ancestors"));
    }
    let Some(info) = processes::get(pid) else {
        return Verdict::Gone(format!("pid {pid} is no longer running"));
    };
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
    Verdict::Same(Box::new(info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_and_pid_zero_are_forbidden() {
        assert!(matches!(check_target(1, 0, &[]), Verdict::Forbidden(_)));
        assert!(matches!(check_target(0, 0, &[]), Verdict::Forbidden(_)));
    }

    #[test]
    fn self_and_ancestors_are_forbidden() {
        let me = processes::get(std::process::id()).unwrap();
        let protected = processes::self_and_ancestors();
        assert!(matches!(check_target(me.id.pid, me.id.start_time, &protected), Verdict::Forbidden(_)));
        let parent = processes::get(me.ppid).unwrap();
        assert!(matches!(check_target(parent.id.pid, parent.id.start_time, &protected), Verdict::Forbidden(_)));
    }

    #[test]
    fn a_reused_pid_is_not_the_same_process() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let info = processes::get(child.id()).unwrap();
        assert!(matches!(check_target(info.id.pid, info.id.start_time, &[]), Verdict::Same(_)));
        assert!(matches!(check_target(info.id.pid, info.id.start_time - 1, &[]), Verdict::Gone(_)));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(matches!(check_target(info.id.pid, info.id.start_time, &[]), Verdict::Gone(_)));
    }
}
