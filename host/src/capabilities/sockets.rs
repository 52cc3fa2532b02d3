//! `sockets`: the listening TCP/UDP sockets and the processes that own them
//! (one shared snapshot per run). Grant: `sockets`.

use super::CapabilityContext;
use crate::facts::sockets as socket_facts;
use crate::runtime::bindings::doctor::plugin::sockets::{self, Listener, Protocol};
use crate::runtime::bindings::doctor::plugin::types::{Error, ProcessRef};

impl CapabilityContext {
    fn sockets_listeners(&mut self) -> Result<Vec<Listener>, Error> {
        self.grants.sockets()?;
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
                owners: l.owners.iter().map(|o| ProcessRef { pid: o.pid, start_time: o.start_time }).collect(),
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
