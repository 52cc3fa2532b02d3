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
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Executed::applied(
                    format!("port {port} has no listener (binding it needs privileges)"),
                ),
                Err(e) => Executed::failed(format!(
                    "port {port} has no listener but cannot be bound: {e}"
                )),
            };
        }
        if Instant::now() >= until {
            return Executed::failed(format!(
                "port {port} still held after {deadline:?} by {}",
                holders.join(", ")
            ));
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
            format!(
                "{}:{} (pid {})",
                l.address,
                l.port,
                if owners.is_empty() {
                    "?".into()
                } else {
                    owners.join(",")
                }
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::wait_port_free;
    use crate::actions::test_context;
    use crate::plan::ActionOutcome;
    use crate::policy::Grants;
    use std::time::Duration;

    #[test]
    fn needs_the_sockets_grant() {
        let done = wait_port_free(
            &test_context(Grants::default()),
            1,
            Duration::from_millis(10),
        );
        assert_eq!(done.outcome, ActionOutcome::Refused);
        assert!(
            done.detail.contains("sockets"),
            "names the grant: {}",
            done.detail
        );
    }

    #[test]
    fn fails_naming_the_holder_until_the_port_is_free() {
        let ctx = test_context(Grants {
            sockets: true,
            ..Default::default()
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = wait_port_free(&ctx, port, Duration::from_millis(200));
        assert_eq!(held.outcome, ActionOutcome::Failed);
        assert!(
            held.detail.contains(&format!("pid {}", std::process::id())),
            "names the holder: {}",
            held.detail
        );
        drop(listener);
        let free = wait_port_free(&ctx, port, Duration::from_secs(5));
        assert_eq!(free.outcome, ActionOutcome::Applied, "{}", free.detail);
    }
}
