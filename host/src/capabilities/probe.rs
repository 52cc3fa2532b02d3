//! `probe`: TCP connect and HTTP GET to granted loopback endpoints, each
//! wait bounded by the probe's timeout, 30 s and the plugin's time left.
//! Grant: `probe`.

use super::CapabilityContext;
use crate::facts::probe as probe_facts;
use crate::runtime::bindings::doctor::plugin::probe::{self, HttpResponse};
use crate::runtime::bindings::doctor::plugin::types::Error;
use std::time::Duration;

/// Probes never wait longer than this, whatever the plugin asks.
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

impl CapabilityContext {
    fn probe_tcp_connect(
        &mut self,
        host: String,
        port: u16,
        timeout_ms: u32,
    ) -> Result<bool, Error> {
        self.grants.probe(&host, port)?;
        probe_facts::tcp_connect(&host, port, self.time_left(probe_timeout(timeout_ms)))
            .map_err(probe_error)
    }

    fn probe_http_get(&mut self, url: String, timeout_ms: u32) -> Result<HttpResponse, Error> {
        let (host, port) = url_endpoint(&url)
            .ok_or_else(|| Error::Invalid(format!("not an http:// URL: {url}")))?;
        self.grants.probe(&host, port)?;
        let response = probe_facts::http_get(&url, self.time_left(probe_timeout(timeout_ms)))
            .map_err(probe_error)?;
        Ok(HttpResponse {
            status: response.status,
            body: response.body,
        })
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
        let port = after
            .strip_prefix(':')
            .map(|p| p.parse().ok())
            .unwrap_or(Some(80))?;
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), 80)),
    }
}

/// Each answer recorded, or replayed from a recording.
impl probe::Host for CapabilityContext {
    fn tcp_connect(
        &mut self,
        host: String,
        port: u16,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<bool, Error>> {
        self.answer("probe.tcp-connect", (&host, port, timeout_ms), |s| {
            s.probe_tcp_connect(host.clone(), port, timeout_ms)
        })
    }

    fn http_get(
        &mut self,
        url: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<HttpResponse, Error>> {
        self.answer("probe.http-get", (&url, timeout_ms), |s| {
            s.probe_http_get(url.clone(), timeout_ms)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::url_endpoint;

    #[test]
    fn endpoints_come_out_of_urls() {
        assert_eq!(
            url_endpoint("http://127.0.0.1:9403/health"),
            Some(("127.0.0.1".into(), 9403))
        );
        assert_eq!(
            url_endpoint("http://localhost/"),
            Some(("localhost".into(), 80))
        );
        assert_eq!(
            url_endpoint("http://[::1]:8080/x"),
            Some(("::1".into(), 8080))
        );
        assert_eq!(url_endpoint("https://x/"), None);
    }
}
