//! `wait-port-free`: wait until nothing listens on a port, then prove it.

use super::{ActionContext, Executed};
use crate::facts::sockets;
use std::time::{Duration, Instant};

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
