//! Stopping and signalling processes by identity.
//!
//! The pidfd is opened first and the identity verified after: once the pidfd
//! is open it names that one process forever, so a pid reused between the
//! check and the signal can never receive it. No pidfd, no signal: a plain
//! `kill()` could reach a reused pid, or a whole thread group.

use super::guards::{check_target, Verdict};
use super::{ActionContext, Executed};
use crate::facts::processes;
use crate::findings::Signal;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// After KILL, how long to wait for the kernel to reap.
const KILL_WAIT: Duration = Duration::from_secs(5);

pub fn stop(ctx: &ActionContext, pid: u32, start_time: u64, grace: Duration) -> Executed {
    let handle = match Handle::acquire(ctx, pid, start_time) {
        Ok(h) => h,
        // The process to stop is gone already: what the stop wanted holds.
        Err(done) if done.outcome == crate::plan::ActionOutcome::Skipped => {
            return Executed::already_done(done.detail)
        }
        Err(done) => return done,
    };
    let before = Some(format!("running: pid {pid} {}", handle.command));
    if let Err(e) = handle.send(Signal::Term) {
        return Executed::failed(format!("TERM to pid {pid}: {e}")).with(before, None);
    }
    if handle.wait_exit(grace) {
        return Executed::applied(format!("pid {pid} exited after TERM"))
            .with(before, Some("stopped".into()));
    }
    if let Err(e) = handle.send(Signal::Kill) {
        return Executed::failed(format!("KILL to pid {pid} after {grace:?} grace: {e}"))
            .with(before, None);
    }
    if handle.wait_exit(KILL_WAIT) {
        Executed::applied(format!("pid {pid} ignored TERM for {grace:?}; killed"))
            .with(before, Some("killed".into()))
    } else {
        Executed::failed(format!("pid {pid} still running {KILL_WAIT:?} after KILL"))
            .with(before, Some("running".into()))
    }
}

pub fn signal(ctx: &ActionContext, pid: u32, start_time: u64, signal: Signal) -> Executed {
    let handle = match Handle::acquire(ctx, pid, start_time) {
        Ok(h) => h,
        Err(done) => return done,
    };
    match handle.send(signal) {
        Ok(()) => Executed::applied(format!("sent {signal:?} to pid {pid}")),
        Err(e) => Executed::failed(format!("{signal:?} to pid {pid}: {e}")),
    }
}

/// A verified, pinned process.
struct Handle {
    pidfd: OwnedFd,
    command: String,
}

impl Handle {
    /// Guards, then grant, then pin and re-verify identity.
    fn acquire(ctx: &ActionContext, pid: u32, start_time: u64) -> Result<Handle, Executed> {
        let info = match check_target(pid, start_time, &ctx.protected_pids) {
            Verdict::Same(info) => info,
            Verdict::Gone(why) => return Err(Executed::skipped(why)),
            Verdict::Forbidden(why) => return Err(Executed::refused(format!("guard: {why}"))),
        };
        ctx.grants
            .signal(&info)
            .map_err(|d| Executed::refused(d.0))?;
        let pidfd = pidfd_open(pid).map_err(|e| {
            Executed::refused(format!(
                "guard: no pidfd for pid {pid} ({e}); without one doctor does not signal"
            ))
        })?;
        // Re-verify after pinning: the pidfd now holds whatever process has this pid.
        if processes::start_time(pid) != Some(start_time) {
            return Err(Executed::skipped(format!(
                "pid {pid} exited or was reused just before the signal; not signalled"
            )));
        }
        Ok(Handle {
            pidfd,
            command: info.command_line(),
        })
    }

    fn send(&self, signal: Signal) -> std::io::Result<()> {
        let signo = signal.to_nix() as i32;
        // SAFETY: pidfd_send_signal with a pidfd we own, a signal number and no siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signo,
                std::ptr::null::<()>(),
                0,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        // ESRCH: it exited between our check and the signal; that is success for a stop.
        if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(())
        } else {
            Err(e)
        }
    }

    /// True once the process has exited (a zombie counts: it runs no more).
    fn wait_exit(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut pfd = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // SAFETY: one valid pollfd on a descriptor we own.
            let rc =
                unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
            if rc > 0 {
                return true;
            }
            // rc < 0 is EINTR (or worse): poll again with the time left.
            if rc == 0 || Instant::now() >= deadline {
                return false;
            }
        }
    }
}

/// A pidfd for a thread-group leader (the kernel refuses one for a thread id).
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open(pid, 0) returns a new fd we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        // SAFETY: fd is a freshly opened descriptor owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

#[cfg(test)]
mod tests {
    use super::stop;
    use crate::actions::test_context;
    use crate::facts::processes;
    use crate::plan::ActionOutcome;
    use crate::policy::{Grants, SignalGrant};
    use std::time::Duration;

    fn may_signal(pattern: &str) -> Grants {
        Grants {
            signal: Some(SignalGrant {
                patterns: vec![pattern.into()],
                uids: vec![],
                scope: Default::default(),
            }),
            ..Default::default()
        }
    }

    /// A `sleep` that is not the test's descendant (its shell parent exits
    /// at once): doctor never signals its own descendants.
    fn orphan_sleeper() -> (u32, u64) {
        let out = std::process::Command::new("sh")
            .args(["-c", "sleep 307 >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let start = processes::start_time(pid).expect("a live process has a start time");
        (pid, start)
    }

    fn still_running(pid: u32, start: u64) -> bool {
        processes::start_time(pid) == Some(start)
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    }

    #[test]
    fn stops_a_granted_process_by_identity() {
        let (pid, start) = orphan_sleeper();
        let done = stop(
            &test_context(may_signal("^sleep 307$")),
            pid,
            start,
            Duration::from_secs(5),
        );
        assert_eq!(done.outcome, ActionOutcome::Applied, "{}", done.detail);
        assert!(!still_running(pid, start), "it exited");
    }

    #[test]
    fn a_process_outside_the_grant_or_not_the_one_named_keeps_running() {
        let (pid, start) = orphan_sleeper();
        let denied = stop(
            &test_context(may_signal("^other$")),
            pid,
            start,
            Duration::from_secs(1),
        );
        assert_eq!(denied.outcome, ActionOutcome::Refused);
        assert!(
            denied.detail.contains("signal"),
            "names the grant: {}",
            denied.detail
        );
        // The same pid with another start time is another process: never signalled.
        let reused = stop(
            &test_context(may_signal("^sleep 307$")),
            pid,
            start + 1,
            Duration::from_secs(1),
        );
        assert_ne!(reused.outcome, ActionOutcome::Applied, "{}", reused.detail);
        assert!(still_running(pid, start), "still running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    #[test]
    fn never_the_doctor_itself() {
        let me = std::process::id();
        let start = processes::start_time(me).unwrap();
        let done = stop(
            &test_context(may_signal(".")),
            me,
            start,
            Duration::from_secs(1),
        );
        assert!(
            done.outcome == ActionOutcome::Refused && done.detail.contains("guard"),
            "{}",
            done.detail
        );
    }
}
