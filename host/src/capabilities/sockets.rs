//! `sockets`: the listening TCP/UDP sockets and the processes that own them
//! (one shared snapshot per run). Grant: `sockets`.

use super::CapabilityContext;
use crate::facts::sockets as socket_facts;
use crate::runtime::bindings::doctor::plugin::sockets::{self, Listener, Protocol};
use crate::runtime::bindings::doctor::plugin::types::{Error, ProcessRef};

impl CapabilityContext {
    fn sockets_listeners(&mut self) -> Result<Vec<Listener>, Error> {
        self.grants.sockets()?;
        let scope = self.grants.socket_owners()?;
        let visible: Option<std::collections::HashSet<u32>> = if scope.is_host() {
            None
        } else {
            let table = self.facts.processes().map_err(Error::Io)?;
            Some(scope.filter(&table).iter().map(|p| p.id.pid).collect())
        };
        let found = self.facts.listeners().map_err(Error::Io)?;
        Ok(found
            .iter()
            .map(|l| Listener {
                protocol: match l.protocol {
                    socket_facts::Protocol::Tcp => Protocol::Tcp,
                    socket_facts::Protocol::Udp => Protocol::Udp,
                },
                address: l.address.to_string(),
                port: l.port,
                uid: l.uid,
                inode: l.inode,
                owners: l
                    .owners
                    .iter()
                    .filter(|o| visible.as_ref().is_none_or(|v| v.contains(&o.pid)))
                    .map(|o| ProcessRef {
                        pid: o.pid,
                        start_time: o.start_time,
                    })
                    .collect(),
            })
            .collect())
    }
}

/// Each answer recorded, or replayed from a recording.
impl sockets::Host for CapabilityContext {
    fn listeners(&mut self) -> wasmtime::Result<Result<Vec<Listener>, Error>> {
        self.answer("sockets.listeners", (), |s| s.sockets_listeners())
    }
}

#[cfg(test)]
mod tests {
    use crate::capabilities::{denial, test_context};
    use crate::policy::Grants;
    use crate::runtime::bindings::doctor::plugin::sockets::Host;

    #[test]
    fn lists_listeners_only_with_the_grant() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let why = denial(test_context(Grants::default()).listeners());
        assert!(why.contains("sockets"), "names the grant: {why}");
        let listeners = test_context(Grants {
            sockets: true,
            ..Default::default()
        })
        .listeners()
        .unwrap()
        .expect("granted");
        assert!(
            listeners.iter().any(|l| l.port == port),
            "our listener on {port} is seen"
        );
    }
}
