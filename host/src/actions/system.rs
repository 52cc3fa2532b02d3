//! Containers through the engine, named commands, and waiting for a port.

use super::{ActionContext, Executed};
use crate::facts::sockets;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Grace the engine gives a container between TERM and KILL.
const CONTAINER_STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub enum ContainerOp {
    Start,
    Stop,
    Restart,
}

pub fn container(ctx: &ActionContext, id: &str, op: ContainerOp) -> Executed {
    let Some(engine) = &ctx.engine else {
        return Executed::failed("no [container_engine] socket is configured in the policy".into());
    };
    let names = match engine.inspect(id).map(|doc| container_names(&doc)) {
        Ok(names) => names,
        Err(e) => return Executed::failed(format!("inspecting container {id}: {e}")),
    };
    if let Err(denied) = ctx.grants.container_write(&names) {
        return Executed::refused(denied.0);
    }
    let name = names.first().cloned().unwrap_or_else(|| id.to_string());
    let result = match op {
        ContainerOp::Start => engine.start(id),
        ContainerOp::Stop => engine.stop(id, CONTAINER_STOP_GRACE),
        ContainerOp::Restart => engine.restart(id, CONTAINER_STOP_GRACE),
    };
    match result {
        Ok(()) => Executed::applied(format!("{op:?} container {name}: done")),
        Err(e) => Executed::failed(format!("{op:?} container {name}: {e}")),
    }
}

pub(super) fn container_names(inspect_json: &str) -> Vec<String> {
    let doc: serde_json::Value = serde_json::from_str(inspect_json).unwrap_or_default();
    doc.get("Name").and_then(|n| n.as_str()).map(|n| vec![n.trim_start_matches('/').to_string()]).unwrap_or_default()
}

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
    let child = Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).process_group(0).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Executed::failed(format!("starting {program}: {e}")),
    };
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + spec.timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let said = stderr.recv_timeout(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100))).unwrap_or_default();
                let tail = crate::capabilities::truncate(said.trim(), 1024);
                return if status.success() {
                    Executed::applied(format!("{name}: exited 0"))
                } else {
                    Executed::failed(format!("{name}: {status}; stderr: {tail}"))
                };
            }
            Ok(None) if Instant::now() >= deadline => {
                kill_group(child.id());
                let _ = child.wait();
                return Executed::failed(format!("{name}: killed (with its process group) after its timeout of {:?}", spec.timeout));
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
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
}

/// Wait until nothing listens on TCP `port`, then prove it by binding it.
/// Needs the `sockets` grant (it reads the listeners), and never waits
/// longer than the policy's `action_wait_max`, whatever the plugin asks.
pub fn wait_port_free(ctx: &ActionContext, port: u16, asked: Duration) -> Executed {
    if let Err(denied) = ctx.grants.sockets() {
        return Executed::refused(denied.0);
    }
    let deadline = asked.min(ctx.policy.doctor.action_wait_max);
    let until = Instant::now() + deadline;
    loop {
        let holders = tcp_listeners_on(port);
        if holders.is_empty() {
            return match std::net::TcpListener::bind(("0.0.0.0", port)) {
                Ok(_) => Executed::applied(format!("port {port} is free (bound and released it)")),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    Executed::applied(format!("port {port} has no listener (binding it needs privileges)"))
                }
                Err(e) => Executed::failed(format!("port {port} has no listener but cannot be bound: {e}")),
            };
        }
        if Instant::now() >= until {
            return Executed::failed(format!("port {port} still held after {deadline:?} by {}", holders.join(", ")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tcp_listeners_on(port: u16) -> Vec<String> {
    sockets::listeners()
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l.protocol == sockets::Protocol::Tcp && l.port == port)
        .map(|l| {
            let owners: Vec<String> = l.owners.iter().map(|o| o.pid.to_string()).collect();
            format!("{}:{} (pid {})", l.address, l.port, if owners.is_empty() { "?".into() } else { owners.join(",") })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::EffectiveGrants;
    use crate::policy::{Grants, Policy};
    use std::sync::Arc;

    fn context(policy: &str) -> ActionContext {
        let policy = Arc::new(Policy::parse(std::path::Path::new("t.toml"), policy).unwrap());
        let grants = Grants { commands: policy.commands.keys().cloned().collect(), ..Default::default() };
        ActionContext {
            plugin: "p".into(),
            grants: EffectiveGrants::new("p", &["commands".into()], &grants),
            policy,
            protected_pids: vec![],
            protected_files: vec![],
            engine: None,
        }
    }

    #[test]
    fn a_grandchild_holding_stderr_does_not_hold_doctor() {
        let ctx = context("[commands.bg]\nargv = [\"sh\", \"-c\", \"sleep 30 & echo started >&2; exit 0\"]\ntimeout = \"2s\"\n");
        let started = Instant::now();
        let done = run_command(&ctx, "bg");
        assert_eq!(done.outcome, crate::plan::Outcome::Applied, "{}", done.detail);
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[test]
    fn a_command_past_its_timeout_is_killed_with_its_group_and_its_stderr_kept() {
        let ctx = context("[commands.slow]\nargv = [\"sh\", \"-c\", \"echo oops >&2; sleep 30 & sleep 30\"]\ntimeout = \"300ms\"\n[commands.noisy]\nargv = [\"sh\", \"-c\", \"head -c 200000 /dev/zero >&2; exit 3\"]\n");
        let done = run_command(&ctx, "slow");
        assert_eq!(done.outcome, crate::plan::Outcome::Failed);
        assert!(done.detail.contains("killed (with its process group)"), "{}", done.detail);
        let noisy = run_command(&ctx, "noisy");
        assert_eq!(noisy.outcome, crate::plan::Outcome::Failed, "200 KB of stderr did not stall it: {}", noisy.detail);
        assert!(noisy.detail.contains("exit status: 3"), "{}", noisy.detail);
    }
}
