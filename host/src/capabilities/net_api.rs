//! `sockets`, `probe` and `containers`: what listens, what answers, what the
//! container engine says.

use super::CapabilityContext;
use crate::facts::containers::{EngineError};
use crate::facts::{probe as probe_facts, sockets as socket_facts};
use crate::runtime::bindings::doctor::plugin::containers::{self, Container};
use crate::runtime::bindings::doctor::plugin::probe::{self, HttpResponse};
use crate::runtime::bindings::doctor::plugin::sockets::{self, Listener, Protocol};
use crate::runtime::bindings::doctor::plugin::types::{Error, ProcessRef};
use std::time::Duration;

/// Probes never wait longer than this, whatever the plugin asks.
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

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

impl CapabilityContext {
    fn probe_tcp_connect(&mut self, host: String, port: u16, timeout_ms: u32) -> Result<bool, Error> {
        self.grants.probe(&host, port)?;
        probe_facts::tcp_connect(&host, port, self.time_left(probe_timeout(timeout_ms))).map_err(probe_error)
    }

    fn probe_http_get(&mut self, url: String, timeout_ms: u32) -> Result<HttpResponse, Error> {
        let (host, port) = url_endpoint(&url).ok_or_else(|| Error::Invalid(format!("not an http:// URL: {url}")))?;
        self.grants.probe(&host, port)?;
        let response = probe_facts::http_get(&url, self.time_left(probe_timeout(timeout_ms))).map_err(probe_error)?;
        Ok(HttpResponse { status: response.status, body: response.body })
    }
}

fn probe_timeout(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms)).min(MAX_PROBE_TIMEOUT)
}

fn probe_error(e: probe_facts::ProbeError) -> Error {
    match e {
        probe_facts::ProbeError::Invalid(m) => Error::Invalid(m),
        probe_facts::ProbeError::Io(m) => Error::Io(m),
        e @ probe_facts::ProbeError::NotLoopback(_) => Error::Denied(e.to_string()),
    }
}

/// `http://HOST[:PORT]/...` → (HOST, PORT), for the grant check.
pub(crate) fn url_endpoint(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').map(|p| p.parse().ok()).unwrap_or(Some(80))?;
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), 80)),
    }
}

impl CapabilityContext {
    fn containers_all(&mut self, include_stopped: bool) -> Result<Vec<Container>, Error> {
        self.grants.containers()?;
        let engine = self.facts.engine().ok_or_else(no_engine)?;
        let list = engine.list(include_stopped).map_err(engine_error)?;
        Ok(list
            .into_iter()
            .map(|c| Container { id: c.id, names: c.names, image: c.image, state: c.state, status: c.status })
            .collect())
    }

    fn containers_inspect(&mut self, id: String) -> Result<String, Error> {
        self.grants.containers()?;
        let engine = self.facts.engine().ok_or_else(no_engine)?;
        engine.inspect(&id).map_err(engine_error)
    }

    fn containers_path_exists(&mut self, id: String, path: String) -> Result<bool, Error> {
        self.grants.containers()?;
        let engine = self.facts.engine().ok_or_else(no_engine)?;
        engine.path_exists(&id, &path).map_err(engine_error)
    }
}

/// The imports: each answer recorded, or replayed from a recording.
impl sockets::Host for CapabilityContext {
    fn listeners(&mut self) -> wasmtime::Result<Result<Vec<Listener>, Error>> {
        self.answer("sockets.listeners", (), |s| s.sockets_listeners())
    }
}

impl probe::Host for CapabilityContext {
    fn tcp_connect(&mut self, host: String, port: u16, timeout_ms: u32) -> wasmtime::Result<Result<bool, Error>> {
        self.answer("probe.tcp-connect", (&host, port, timeout_ms), |s| s.probe_tcp_connect(host.clone(), port, timeout_ms))
    }

    fn http_get(&mut self, url: String, timeout_ms: u32) -> wasmtime::Result<Result<HttpResponse, Error>> {
        self.answer("probe.http-get", (&url, timeout_ms), |s| s.probe_http_get(url.clone(), timeout_ms))
    }
}

impl containers::Host for CapabilityContext {
    fn all(&mut self, include_stopped: bool) -> wasmtime::Result<Result<Vec<Container>, Error>> {
        self.answer("containers.all", (include_stopped,), |s| s.containers_all(include_stopped))
    }

    fn inspect(&mut self, id: String) -> wasmtime::Result<Result<String, Error>> {
        self.answer("containers.inspect", (&id,), |s| s.containers_inspect(id.clone()))
    }

    fn path_exists(&mut self, id: String, path: String) -> wasmtime::Result<Result<bool, Error>> {
        self.answer("containers.path-exists", (&id, &path), |s| s.containers_path_exists(id.clone(), path.clone()))
    }
}

fn no_engine() -> Error {
    Error::NotFound("no [container_engine] socket is configured in the policy".into())
}

pub(crate) fn engine_error(e: EngineError) -> Error {
    let text = e.to_string();
    match e {
        EngineError::NotFound(_) => Error::NotFound(text),
        EngineError::Invalid(_) => Error::Invalid(text),
        EngineError::Timeout(_) => Error::Limit(text),
        EngineError::Unreachable { .. } | EngineError::Api { .. } => Error::Io(text),
    }
}

#[cfg(test)]
mod tests {
    use super::url_endpoint;

    #[test]
    fn endpoints_come_out_of_urls() {
        assert_eq!(url_endpoint("http://127.0.0.1:9403/health"), Some(("127.0.0.1".into(), 9403)));
        assert_eq!(url_endpoint("http://localhost/"), Some(("localhost".into(), 80)));
        assert_eq!(url_endpoint("http://[::1]:8080/x"), Some(("::1".into(), 8080)));
        assert_eq!(url_endpoint("https://x/"), None);
    }
}
