//! Health probes against endpoints on this host's loopback interface.
//!
//! Probes only ever reach loopback: a target is resolved first (only IP
//! literals and `localhost` are accepted, so a remote name never even causes a
//! DNS query), every resolved address is checked, and only then is anything
//! connected — to exactly those checked addresses.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::uri::{Scheme, Uri};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::Agent;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
    #[error("not a loopback address: {0}")]
    NotLoopback(String),
}

pub struct HttpResponse {
    pub status: u16,
    /// At most [`BODY_LIMIT`] bytes of the body, decoded as lossy UTF-8.
    pub body: String,
}

/// Bodies are kept for messages and matching, not for transfer: 64 KiB is
/// plenty for a health endpoint and bounds memory against a chatty server.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Whether a TCP connection to `host:port` succeeds within `timeout`.
///
/// `Ok(false)` means the endpoint said no or stayed silent (refused, timed
/// out, unreachable). Errors are for bad input, non-loopback targets, and
/// local failures such as running out of file descriptors.
pub fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<bool, ProbeError> {
    require_timeout(timeout)?;
    let addrs = loopback_addrs(host, port)?;
    // One budget for all addresses: `localhost` may give both ::1 and 127.0.0.1.
    let deadline = Instant::now() + timeout;
    let mut local_failure = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(_) => return Ok(true),
            Err(e) if is_endpoint_refusal(&e) => {}
            Err(e) => local_failure = Some(format!("connect {addr}: {e}")),
        }
    }
    match local_failure {
        Some(message) => Err(ProbeError::Io(message)),
        None => Ok(false),
    }
}

/// GETs an `http://` URL on loopback; `timeout` bounds the whole request,
/// body included. Any status (including 4xx/5xx) is a response; redirects
/// are returned, not followed, since they could point off the host.
pub fn http_get(url: &str, timeout: Duration) -> Result<HttpResponse, ProbeError> {
    require_timeout(timeout)?;
    let uri: Uri = url
        .parse()
        .map_err(|e| ProbeError::Invalid(format!("{url}: {e}")))?;
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Err(ProbeError::Invalid(format!(
            "{url}: only http:// URLs can be probed"
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| ProbeError::Invalid(format!("{url}: no host")))?;
    let addrs = loopback_addrs(host, uri.port_u16().unwrap_or(80))?;

    let mut response = pinned_agent(addrs, timeout)
        .get(uri)
        .call()
        .map_err(request_error)?;
    let status = response.status().as_u16();
    let mut bytes = Vec::new();
    response
        .body_mut()
        .as_reader()
        .take(BODY_LIMIT as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| ProbeError::Io(format!("{url}: reading body: {e}")))?;
    Ok(HttpResponse {
        status,
        body: decode_body(bytes),
    })
}

fn require_timeout(timeout: Duration) -> Result<(), ProbeError> {
    if timeout.is_zero() {
        return Err(ProbeError::Invalid(
            "timeout must be greater than zero".into(),
        ));
    }
    Ok(())
}

/// Resolves `host` to loopback socket addresses, or refuses.
///
/// Only IP literals (IPv6 with or without brackets) and `localhost` are
/// resolved; any other name is refused unresolved, because resolving it
/// would already send a DNS query off the host.
fn loopback_addrs(host: &str, port: u16) -> Result<Vec<SocketAddr>, ProbeError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.is_empty() {
        return Err(ProbeError::Invalid("empty host".into()));
    }
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return match is_loopback(ip) {
            true => Ok(vec![SocketAddr::new(ip, port)]),
            false => Err(ProbeError::NotLoopback(host.to_string())),
        };
    }
    if !is_localhost_name(bare) {
        return Err(ProbeError::NotLoopback(host.to_string()));
    }
    let addrs: Vec<SocketAddr> = (bare, port)
        .to_socket_addrs()
        .map_err(|e| ProbeError::Io(format!("resolving {host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(ProbeError::Io(format!("{host} resolved to no address")));
    }
    // A tampered hosts file could point localhost elsewhere: check them all.
    if let Some(outside) = addrs.iter().find(|a| !is_loopback(a.ip())) {
        return Err(ProbeError::NotLoopback(format!(
            "{host} resolves to {}",
            outside.ip()
        )));
    }
    Ok(addrs)
}

/// IPv4-mapped IPv6 (`::ffff:127.0.0.1`) reaches IPv4 loopback, so it counts.
fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

fn is_localhost_name(name: &str) -> bool {
    name.strip_suffix('.')
        .unwrap_or(name)
        .eq_ignore_ascii_case("localhost")
}

/// Connect errors that are the endpoint's answer ("nothing here"), as opposed
/// to a failure on our side.
fn is_endpoint_refusal(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | TimedOut
            | ConnectionReset
            | AddrNotAvailable
            | NetworkUnreachable
            | HostUnreachable
    )
}

/// An agent that can only connect to `addrs` (already checked loopback):
/// ureq's own resolver is replaced so it cannot resolve the name a second
/// time and get a different answer. Proxies from the environment are off
/// (a proxy would take the request off the host) and redirects are not
/// followed for the same reason.
fn pinned_agent(addrs: Vec<SocketAddr>, timeout: Duration) -> Agent {
    let config = Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .build();
    Agent::with_parts(config, DefaultConnector::new(), PinnedResolver(addrs))
}

#[derive(Debug)]
struct PinnedResolver(Vec<SocketAddr>);

impl Resolver for PinnedResolver {
    fn resolve(
        &self,
        _: &Uri,
        _: &Config,
        _: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut out = self.empty();
        for addr in &self.0 {
            // ureq keeps at most a fixed number of addresses; extra ones of
            // an already-checked list can be dropped safely.
            if out.try_push(*addr).is_err() {
                break;
            }
        }
        match out.len() {
            0 => Err(ureq::Error::HostNotFound),
            _ => Ok(out),
        }
    }
}

fn request_error(e: ureq::Error) -> ProbeError {
    match e {
        ureq::Error::BadUri(message) => ProbeError::Invalid(message),
        ureq::Error::Http(e) => ProbeError::Invalid(e.to_string()),
        other => ProbeError::Io(other.to_string()),
    }
}

/// Lossy UTF-8, minus a multi-byte character cut in half by the size limit
/// (that would otherwise show up as a spurious replacement character).
fn decode_body(mut bytes: Vec<u8>) -> String {
    if bytes.len() == BODY_LIMIT {
        bytes.truncate(complete_prefix_len(&bytes));
    }
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Length of `bytes` without a trailing, incomplete UTF-8 sequence.
fn complete_prefix_len(bytes: &[u8]) -> usize {
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    let tail_start = bytes.len().saturating_sub(4);
    let Some(lead) = (tail_start..bytes.len())
        .rev()
        .find(|&i| !is_continuation(bytes[i]))
    else {
        return bytes.len();
    };
    let needed = match bytes[lead] {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    };
    if bytes.len() - lead < needed {
        lead
    } else {
        bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::thread;

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// Serves `responses.len()` connections on 127.0.0.1, one canned raw
    /// response each (after reading the request head), then stops.
    fn serve(responses: Vec<Vec<u8>>) -> (u16, thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = thread::spawn(move || {
            let mut request_lines = Vec::new();
            for response in responses {
                let (mut stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                request_lines.push(line.trim_end().to_string());
                while line != "\r\n" && !line.is_empty() {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                }
                stream.write_all(&response).unwrap();
            }
            request_lines
        });
        (port, handle)
    }

    fn response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
        let head = format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        [head.as_bytes(), body].concat()
    }

    #[test]
    fn tcp_connect_finds_a_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(tcp_connect("127.0.0.1", port, TIMEOUT).unwrap());
        // localhost may resolve to ::1 first; the v4 listener must still be found.
        assert!(tcp_connect("localhost", port, TIMEOUT).unwrap());
    }

    #[test]
    fn tcp_connect_takes_bracketed_ipv6() {
        let Ok(listener) = TcpListener::bind("[::1]:0") else {
            eprintln!("skipping: no IPv6 loopback on this host");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        assert!(tcp_connect("[::1]", port, TIMEOUT).unwrap());
        assert!(tcp_connect("::1", port, TIMEOUT).unwrap());
    }

    #[test]
    fn tcp_connect_to_a_freed_port_is_false() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(!tcp_connect("127.0.0.1", port, TIMEOUT).unwrap());
    }

    #[test]
    fn remote_targets_are_refused_without_connecting() {
        let started = Instant::now();
        for host in [
            "10.1.2.3",
            "example.com",
            "192.168.1.1",
            "[2001:db8::1]",
            "localhost.example.com",
        ] {
            let result = tcp_connect(host, 80, TIMEOUT);
            assert!(
                matches!(result, Err(ProbeError::NotLoopback(_))),
                "{host}: {result:?}"
            );
        }
        for url in [
            "http://10.1.2.3/",
            "http://example.com/",
            "http://[2001:db8::1]:8080/x",
        ] {
            let result = http_get(url, TIMEOUT).map(|r| r.status);
            assert!(
                matches!(result, Err(ProbeError::NotLoopback(_))),
                "{url}: {result:?}"
            );
        }
        // A connect or DNS attempt would take far longer than this.
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn bad_input_is_invalid() {
        for url in [
            "https://127.0.0.1/",
            "ftp://127.0.0.1/",
            "127.0.0.1:80",
            "http://",
            "not a url",
        ] {
            let result = http_get(url, TIMEOUT).map(|r| r.status);
            assert!(
                matches!(result, Err(ProbeError::Invalid(_))),
                "{url}: {result:?}"
            );
        }
        assert!(matches!(
            tcp_connect("", 80, TIMEOUT),
            Err(ProbeError::Invalid(_))
        ));
        assert!(matches!(
            tcp_connect("127.0.0.1", 80, Duration::ZERO),
            Err(ProbeError::Invalid(_))
        ));
    }

    #[test]
    fn http_get_returns_success_and_error_statuses() {
        let (port, server) = serve(vec![
            response("200 OK", "", b"all good"),
            response("503 Service Unavailable", "", b"down"),
        ]);
        let ok = http_get(&format!("http://127.0.0.1:{port}/health"), TIMEOUT).unwrap();
        assert_eq!((ok.status, ok.body.as_str()), (200, "all good"));
        let down = http_get(&format!("http://localhost:{port}/ready?x=1"), TIMEOUT).unwrap();
        assert_eq!((down.status, down.body.as_str()), (503, "down"));
        let requests = server.join().unwrap();
        assert_eq!(
            requests,
            ["GET /health HTTP/1.1", "GET /ready?x=1 HTTP/1.1"]
        );
    }

    #[test]
    fn redirects_are_returned_not_followed() {
        let (port, server) = serve(vec![response(
            "302 Found",
            "Location: http://10.1.2.3/\r\n",
            b"",
        )]);
        let got = http_get(&format!("http://127.0.0.1:{port}/"), TIMEOUT).unwrap();
        assert_eq!(got.status, 302);
        server.join().unwrap();
    }

    #[test]
    fn body_is_truncated_on_a_character_boundary() {
        // "a" then 2-byte characters: the 64 KiB cut falls inside one of them.
        let body = [b"a".as_slice(), "é".repeat(BODY_LIMIT).as_bytes()].concat();
        let (port, server) = serve(vec![response("200 OK", "", &body)]);
        let got = http_get(&format!("http://127.0.0.1:{port}/"), TIMEOUT).unwrap();
        assert_eq!(got.body.len(), BODY_LIMIT - 1);
        assert!(!got.body.contains('\u{FFFD}'));
        assert!(got.body.starts_with("aé"));
        // The server may see the connection dropped mid-write; that's fine.
        let _ = server.join();
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let (port, server) = serve(vec![response("200 OK", "", b"ok \xFF!")]);
        let got = http_get(&format!("http://127.0.0.1:{port}/"), TIMEOUT).unwrap();
        assert_eq!(got.body, "ok \u{FFFD}!");
        server.join().unwrap();
    }

    #[test]
    fn silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accept and read, never answering, until the client gives up.
        let holder = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        });
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let result = http_get(&format!("http://127.0.0.1:{port}/"), timeout).map(|r| r.status);
        let took = started.elapsed();
        assert!(matches!(result, Err(ProbeError::Io(_))), "{result:?}");
        assert!(
            took >= timeout && took < timeout + Duration::from_secs(1),
            "took {took:?}"
        );
        holder.join().unwrap();
    }

    #[test]
    fn loopback_forms() {
        assert!(is_loopback("127.9.8.7".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!is_loopback("0.0.0.0".parse().unwrap()));
        assert!(is_localhost_name("LocalHost."));
        assert!(!is_localhost_name("localhost.localdomain"));
    }

    #[test]
    fn incomplete_tail_is_detected() {
        assert_eq!(complete_prefix_len("aé".as_bytes()), 3);
        assert_eq!(complete_prefix_len(&"aé".as_bytes()[..2]), 1);
        assert_eq!(complete_prefix_len(&"a€".as_bytes()[..3]), 1);
        assert_eq!(complete_prefix_len(b"abc"), 3);
    }
}
