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

/// A command defined by name in the policy: argv only, no shell, bounded time.
pub fn run_command(ctx: &ActionContext, name: &str) -> Executed {
    if let Err(denied) = ctx.grants.command(name) {
        return Executed::refused(denied.0);
    }
    let Some(spec) = ctx.policy.commands.get(name) else {
        return Executed::failed(format!("command {name:?} is not defined under [commands]"));
    };
    let Some((program, args)) = spec.argv.split_first() else {
        return Executed::failed(format!("command {name:?} has an empty argv"));
    };
    let child = Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Executed::failed(format!("starting {program}: {e}")),
    };
    let deadline = Instant::now() + spec.timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                let tail = crate::capabilities::truncate(stderr.trim(), 1024);
                return if status.success() {
                    Executed::applied(format!("{name}: exited 0"))
                } else {
                    Executed::failed(format!("{name}: {status}; stderr: {tail}"))
                };
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Executed::failed(format!("{name}: killed after its timeout of {:?}", spec.timeout));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Executed::failed(format!("{name}: {e}")),
        }
    }
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
