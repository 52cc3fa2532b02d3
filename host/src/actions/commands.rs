//! `run-command`: a command the policy defines by name, argv only, never a
//! shell, bounded in time and in what it may make doctor hold.

use super::{ActionContext, Executed};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Most of a command's stderr kept for the journal.
const STDERR_KEPT: usize = 16 * 1024;

/// A command defined by name in the policy: argv only, no shell, bounded
/// time. It runs in a process group of its own, which is killed whole at the
/// timeout; its stderr is drained as it comes (a full pipe must not stall
/// it) and kept up to 16 KiB; a grandchild that keeps stderr open does not
/// hold doctor past the timeout.
pub fn run_command(ctx: &ActionContext, name: &str) -> Executed {
    use std::os::unix::process::CommandExt;
    if let Err(denied) = ctx.grants.command(name) {
        return Executed::refused(denied.0);
    }
    let Some(spec) = ctx.policy.commands.get(name) else {
        return Executed::failed(format!("command {name:?} is not defined under [commands]"));
    };
    let Some((program, args)) = spec.argv.split_first() else {
        return Executed::failed(format!("command {name:?} has an empty argv"));
    };
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Executed::failed(format!("starting {program}: {e}")),
    };
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + spec.timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let said = stderr
                    .recv_timeout(
                        deadline
                            .saturating_duration_since(Instant::now())
                            .max(Duration::from_millis(100)),
                    )
                    .unwrap_or_default();
                let tail = crate::text::truncate(said.trim(), 1024);
                return if status.success() {
                    Executed::applied(format!("{name}: exited 0"))
                } else {
                    Executed::failed(format!("{name}: {status}; stderr: {tail}"))
                };
            }
            Ok(None) if Instant::now() >= deadline => {
                kill_group(child.id());
                let _ = child.wait();
                return Executed::failed(format!(
                    "{name}: killed (with its process group) after its timeout of {:?}",
                    spec.timeout
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Executed::failed(format!("{name}: {e}")),
        }
    }
}

/// Read a pipe to its end on a thread of its own; the first 16 KiB come
/// back when it closes.
fn drain(pipe: Option<std::process::ChildStderr>) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = STDERR_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            let _ = tx.send(String::from_utf8_lossy(&kept).into_owned());
        });
    }
    rx
}

fn kill_group(pid: u32) {
    // The child leads its own group (process_group(0)): signal all of it.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::EffectiveGrants;
    use crate::policy::{Grants, Policy};
    use std::sync::Arc;

    fn context(policy: &str) -> ActionContext {
        let policy = Arc::new(Policy::parse(std::path::Path::new("t.toml"), policy).unwrap());
        let grants = Grants {
            commands: policy.commands.keys().cloned().collect(),
            ..Default::default()
        };
        ActionContext {
            plugin: "p".into(),
            grants: EffectiveGrants::new("p", &["commands".into()], &grants),
            policy,
            protected_pids: vec![],
            protected_files: vec![],
            engines: std::sync::Arc::new(crate::facts::engines::Engines::new([])),
        }
    }

    #[test]
    fn a_grandchild_holding_stderr_does_not_hold_doctor() {
        let ctx = context("[commands.bg]\nargv = [\"sh\", \"-c\", \"sleep 30 & echo started >&2; exit 0\"]\ntimeout = \"2s\"\n");
        let started = Instant::now();
        let done = run_command(&ctx, "bg");
        assert_eq!(
            done.outcome,
            crate::plan::ActionOutcome::Applied,
            "{}",
            done.detail
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_command_past_its_timeout_is_killed_with_its_group_and_its_stderr_kept() {
        let ctx = context("[commands.slow]\nargv = [\"sh\", \"-c\", \"echo oops >&2; sleep 30 & sleep 30\"]\ntimeout = \"300ms\"\n[commands.noisy]\nargv = [\"sh\", \"-c\", \"head -c 200000 /dev/zero >&2; exit 3\"]\n");
        let done = run_command(&ctx, "slow");
        assert_eq!(done.outcome, crate::plan::ActionOutcome::Failed);
        assert!(
            done.detail.contains("killed (with its process group)"),
            "{}",
            done.detail
        );
        let noisy = run_command(&ctx, "noisy");
        assert_eq!(
            noisy.outcome,
            crate::plan::ActionOutcome::Failed,
            "200 KB of stderr did not stall it: {}",
            noisy.detail
        );
        assert!(noisy.detail.contains("exit status: 3"), "{}", noisy.detail);
    }
}
