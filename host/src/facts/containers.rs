//! Container-engine client: the Docker Engine API over a Unix socket.
//!
//! Speaks to Docker (`/var/run/docker.sock`) and to Podman's Docker-compatible
//! API (`podman system service`) alike. Only endpoints and fields both engines
//! implement are used.
//!
//! The public API is blocking; every call reads the whole answer, bounded by
//! the engine's timeout. Reads (GET, HEAD) share one current-thread tokio
//! runtime and one kept-alive HTTP/1.1 connection per `ContainerEngine`, which lives
//! for one run: a plugin's dozens of inspects and stats then cost no runtime
//! or connection setup each. A kept connection the engine closed meanwhile
//! (it restarted, or timed the connection out) fails before any answer and
//! the read is retried once on a fresh connection; reads are idempotent.
//! Mutations (start, stop, restart) keep a connection of their own, so none
//! is ever sent twice. Do not call these methods from inside an async task:
//! `block_on` would panic there; use `spawn_blocking`.
//!
//! Paths carry no `/v1.xx` prefix on purpose: an unversioned path is served at
//! the engine's own current version by both engines, whereas any pinned version
//! is wrong for one of them (Podman 4.3 speaks at most 1.41, and recent Docker
//! releases refuse versions below their minimum, 1.44 as of Docker 29).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

/// Largest answer we read. An inspect document is a few KiB; this only keeps a
/// confused or hostile peer on the socket from making us allocate without end.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Everything but RFC 3986 "unreserved" characters is escaped, both in query
/// values (a path like `/a b?c` must reach the engine intact) and in the
/// container id segment (an id is caller input and must not be able to add path
/// segments or a query of its own).
const ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The socket is missing, refuses connections, or the connection broke.
    #[error("engine socket {path}: {message}")]
    Unreachable { path: String, message: String },
    /// The engine answered with an error status; `message` is its JSON "message".
    #[error("engine answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("no such container: {0}")]
    NotFound(String),
    /// Bad input from the caller, or an answer we cannot make sense of.
    #[error("{0}")]
    Invalid(String),
    #[error("engine request timed out after {0:?}")]
    Timeout(Duration),
}

impl EngineError {
    /// The same error, saying which of several engines it came from.
    pub fn in_engine(self, name: &str) -> EngineError {
        match self {
            EngineError::Unreachable { path, message } => EngineError::Unreachable {
                path: format!("{path} (engine {name})"),
                message,
            },
            EngineError::Api { status, message } => EngineError::Api {
                status,
                message: format!("{message} (engine {name})"),
            },
            EngineError::NotFound(m) => EngineError::NotFound(format!("{m} (engine {name})")),
            EngineError::Invalid(m) => EngineError::Invalid(format!("engine {name}: {m}")),
            EngineError::Timeout(d) => EngineError::Timeout(d),
        }
    }
}

/// One row of `GET /containers/json`.
#[derive(Debug, Clone)]
pub struct ContainerSummary {
    pub id: String,
    /// Names without Docker's leading "/".
    pub names: Vec<String>,
    pub image: String,
    /// Machine-readable state: "created", "running", "exited", "paused", ...
    pub state: String,
    /// Human-readable status, e.g. "Up 3 minutes".
    pub status: String,
}

/// The subset of a `/containers/json` row we use. Missing fields default to
/// empty rather than failing the whole listing: engines differ in what they
/// fill in for containers in odd states.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSummary {
    #[serde(default)]
    id: String,
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    image: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    status: String,
}

impl From<RawSummary> for ContainerSummary {
    fn from(raw: RawSummary) -> Self {
        let names = raw
            .names
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.strip_prefix('/').map(str::to_owned).unwrap_or(n))
            .collect();
        ContainerSummary {
            id: raw.id,
            names,
            image: raw.image,
            state: raw.state,
            status: raw.status,
        }
    }
}

/// A status and the full body of one answer.
struct Reply {
    status: StatusCode,
    body: Bytes,
}

pub struct ContainerEngine {
    socket: PathBuf,
    timeout: Duration,
    /// The runtime and kept-alive connection of reads; None until the first.
    reads: Mutex<Option<Reads>>,
    /// Containers this engine listed or inspected successfully (by the id
    /// or name asked for, and by full id), for `path_exists`.
    seen: Mutex<HashSet<String>>,
}

struct Reads {
    runtime: tokio::runtime::Runtime,
    kept: Option<SendRequest<Empty<Bytes>>>,
}

impl ContainerEngine {
    /// No I/O happens here; an absent socket shows up as `Unreachable` on the
    /// first call, so a host without an engine can still build an `ContainerEngine`.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> ContainerEngine {
        ContainerEngine {
            socket: socket.into(),
            timeout,
            reads: Mutex::new(None),
            seen: Mutex::new(HashSet::new()),
        }
    }

    pub fn list(&self, include_stopped: bool) -> Result<Vec<ContainerSummary>, EngineError> {
        let uri = format!("/containers/json?all={include_stopped}");
        let reply = self.request(Method::GET, &uri, self.timeout)?;
        let body = expect_success(reply, None)?;
        let rows: Vec<RawSummary> = serde_json::from_slice(&body).map_err(|e| {
            EngineError::Invalid(format!("container list is not the expected JSON: {e}"))
        })?;
        self.saw(
            rows.iter()
                .map(|r| r.id.clone())
                .filter(|id| !id.is_empty()),
        );
        Ok(rows.into_iter().map(ContainerSummary::from).collect())
    }

    /// The inspect document as the engine sent it. Callers parse it: Docker and
    /// Podman differ in details (e.g. Podman's CapDrop spells out every
    /// capability), so no typed view here would fit both without loss.
    pub fn inspect(&self, id: &str) -> Result<String, EngineError> {
        let uri = format!("/containers/{}/json", segment(id)?);
        let reply = self.request(Method::GET, &uri, self.timeout)?;
        let body = expect_success(reply, Some(id))?;
        self.saw([id.to_owned()]);
        String::from_utf8(body.to_vec())
            .map_err(|_| EngineError::Invalid(format!("inspect of {id} is not UTF-8")))
    }

    fn saw(&self, ids: impl IntoIterator<Item = String>) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(ids);
    }

    fn has_seen(&self, id: &str) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(id)
    }

    /// Whether `path` exists in the container's filesystem, without running it.
    ///
    /// `HEAD /containers/{id}/archive?path=` only stats the path (the answer is
    /// in the X-Docker-Container-Path-Stat header, no tar is sent). Podman 4.3.1
    /// answers it for a created, never-started container too: it mounts the
    /// container's storage for the stat (checked: 200 for /bin/busybox, 404 for
    /// /usr/bin/curl on a `podman create`d container). A symlink that resolves
    /// counts as existing (checked: /bin/sh -> busybox); dangling links are
    /// engine-defined and untested.
    ///
    /// Both engines answer 404 both for a missing path and for a missing
    /// container, and HEAD carries no body to tell them apart; so a 404 is
    /// followed by an inspect, which turns an unknown container into NotFound.
    /// That inspect is skipped for a container this engine (one per run)
    /// already listed or inspected: a health check's binary is looked up in
    /// every PATH directory, and one inspect per 404 doubled the requests.
    /// A container removed since then reads as "path missing", as it would
    /// have had it been removed right after the inspect.
    pub fn path_exists(&self, id: &str, path: &str) -> Result<bool, EngineError> {
        // A relative path would resolve against the container's WorkingDir,
        // which is never what a fact about "path P in container C" means.
        if !path.starts_with('/') {
            return Err(EngineError::Invalid(format!(
                "container path must be absolute: {path:?}"
            )));
        }
        let uri = format!(
            "/containers/{}/archive?path={}",
            segment(id)?,
            query_value(path)
        );
        let reply = self.request(Method::HEAD, &uri, self.timeout)?;
        match reply.status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND if self.has_seen(id) => Ok(false),
            StatusCode::NOT_FOUND => {
                // Errors (NotFound above all) from the inspect are the answer.
                self.inspect(id)?;
                Ok(false)
            }
            _ => Err(api_error(reply)),
        }
    }

    /// 304 ("already started") counts as success: the goal state holds.
    pub fn start(&self, id: &str) -> Result<(), EngineError> {
        let uri = format!("/containers/{}/start", segment(id)?);
        let reply = self.request(Method::POST, &uri, self.timeout)?;
        expect_success(reply, Some(id)).map(drop)
    }

    /// 304 ("already stopped") counts as success. `grace`: the engine's `t`
    /// (whole seconds, rounded up); none: the engine's default.
    pub fn stop(&self, id: &str, grace: Option<Duration>) -> Result<(), EngineError> {
        let uri = format!("/containers/{}/stop{}", segment(id)?, grace_query(grace));
        let reply = self.request(Method::POST, &uri, self.timeout_with_grace(grace))?;
        expect_success(reply, Some(id)).map(drop)
    }

    pub fn restart(&self, id: &str, grace: Option<Duration>) -> Result<(), EngineError> {
        let uri = format!("/containers/{}/restart{}", segment(id)?, grace_query(grace));
        let reply = self.request(Method::POST, &uri, self.timeout_with_grace(grace))?;
        expect_success(reply, Some(id)).map(drop)
    }

    /// The engine holds a stop/restart answer until the container has exited,
    /// which may take the whole grace period before it kills; the bound has to
    /// cover that wait or a slow but healthy stop would read as a timeout.
    fn timeout_with_grace(&self, grace: Option<Duration>) -> Duration {
        let grace = grace.unwrap_or(ENGINE_DEFAULT_GRACE);
        self.timeout
            .saturating_add(Duration::from_secs(grace_secs(grace)))
    }

    /// One request, bounded by `limit` from connect to the last body byte.
    fn request(&self, method: Method, uri: &str, limit: Duration) -> Result<Reply, EngineError> {
        if method == Method::GET || method == Method::HEAD {
            return self.read(method, uri, limit);
        }
        let runtime = io_runtime()?;
        runtime.block_on(async {
            match tokio::time::timeout(limit, self.exchange(method, uri)).await {
                Ok(result) => result,
                Err(_elapsed) => Err(EngineError::Timeout(limit)),
            }
        })
    }

    /// A GET or HEAD on the kept connection, else on a fresh one (kept for
    /// the next read). Reads are serialised by the lock: one connection.
    fn read(&self, method: Method, uri: &str, limit: Duration) -> Result<Reply, EngineError> {
        let mut guard = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            *guard = Some(Reads {
                runtime: io_runtime()?,
                kept: None,
            });
        }
        let Some(Reads { runtime, kept }) = guard.as_mut() else {
            return Err(EngineError::Invalid(
                "no I/O runtime for engine reads".into(),
            ));
        };
        runtime.block_on(async {
            let attempt = async {
                if let Some(mut sender) = kept.take() {
                    // Not ready or failed: the engine closed it; nothing was answered.
                    if sender.ready().await.is_ok() {
                        if let Ok(reply) = self.send(&mut sender, method.clone(), uri).await {
                            *kept = Some(sender);
                            return Ok(reply);
                        }
                    }
                }
                let mut sender = self.connect().await?;
                let reply = self.send(&mut sender, method, uri).await?;
                *kept = Some(sender);
                Ok(reply)
            };
            match tokio::time::timeout(limit, attempt).await {
                Ok(result) => result,
                Err(_elapsed) => Err(EngineError::Timeout(limit)),
            }
        })
    }

    async fn exchange(&self, method: Method, uri: &str) -> Result<Reply, EngineError> {
        let mut sender = self.connect().await?;
        self.send(&mut sender, method, uri).await
    }

    /// A new HTTP/1.1 connection; its I/O task runs on the calling runtime.
    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, EngineError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.unreachable(format!("cannot connect: {e}")))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(format!("HTTP handshake failed: {e}")))?;
        // The connection future does the actual I/O; it ends when `sender` is
        // dropped, the engine closes the connection, or with the runtime.
        tokio::spawn(connection);
        Ok(sender)
    }

    /// One request and its whole answer on `sender`.
    async fn send(
        &self,
        sender: &mut SendRequest<Empty<Bytes>>,
        method: Method,
        uri: &str,
    ) -> Result<Reply, EngineError> {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            // HTTP/1.1 requires a Host; over a Unix socket any name will do.
            .header(hyper::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .map_err(|e| EngineError::Invalid(format!("cannot build request for {uri}: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(format!("request {uri} failed: {e}")))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| self.unreachable(format!("reading answer to {uri} failed: {e}")))?
            .to_bytes();
        Ok(Reply { status, body })
    }

    fn unreachable(&self, message: String) -> EngineError {
        EngineError::Unreachable {
            path: self.socket.display().to_string(),
            message,
        }
    }
}

/// A current-thread runtime with I/O and timers, for blocking callers.
fn io_runtime() -> Result<tokio::runtime::Runtime, EngineError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| EngineError::Invalid(format!("cannot start I/O runtime: {e}")))
}

/// 2xx and 304 ("nothing to do") give the body; 404 on a container endpoint
/// (`container` is Some) means the container is unknown; anything else is Api.
fn expect_success(reply: Reply, container: Option<&str>) -> Result<Bytes, EngineError> {
    if reply.status.is_success() || reply.status == StatusCode::NOT_MODIFIED {
        return Ok(reply.body);
    }
    match container {
        Some(id) if reply.status == StatusCode::NOT_FOUND => {
            Err(EngineError::NotFound(id.to_owned()))
        }
        _ => Err(api_error(reply)),
    }
}

/// Both engines put the reason in a JSON `{"message": ...}`; fall back to the
/// raw body, then to the status text, so the error never reads empty.
fn api_error(reply: Reply) -> EngineError {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: String,
    }
    let message = match serde_json::from_slice::<ErrorBody>(&reply.body) {
        Ok(parsed) => parsed.message,
        Err(_) if !reply.body.is_empty() => String::from_utf8_lossy(&reply.body).trim().to_owned(),
        Err(_) => reply
            .status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_owned(),
    };
    EngineError::Api {
        status: reply.status.as_u16(),
        message,
    }
}

/// A container id or name as one escaped path segment.
///
/// Docker and Podman name containers `[a-zA-Z0-9][a-zA-Z0-9_.-]*` (ids are
/// hex), so anything else names no container and is not sent: escaped or
/// not, a `..` or `/` in a path is not the engine's to interpret (Docker
/// 20.10 answers `../../_ping` with a 301 to the cleaned path; Podman with 404).
fn segment(id: &str) -> Result<String, EngineError> {
    if id.is_empty() {
        return Err(EngineError::Invalid("empty container id".to_owned()));
    }
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(EngineError::NotFound(id.to_owned()));
    }
    Ok(utf8_percent_encode(id, ESCAPE).to_string())
}

fn query_value(value: &str) -> String {
    utf8_percent_encode(value, ESCAPE).to_string()
}

/// The API takes whole seconds; round up so a sub-second grace is not zero,
/// which would mean "kill at once".
/// Docker's and Podman's stop timeout when none is given (a container's own
/// `StopTimeout` may be longer; the engine's timeout bound covers the rest).
pub const ENGINE_DEFAULT_GRACE: Duration = Duration::from_secs(10);

fn grace_query(grace: Option<Duration>) -> String {
    grace
        .map(|g| format!("?t={}", grace_secs(g)))
        .unwrap_or_default()
}

fn grace_secs(grace: Duration) -> u64 {
    grace.as_secs() + u64::from(grace.subsec_nanos() > 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn names_lose_leading_slash() {
        let raw: RawSummary = serde_json::from_str(
            r#"{"Id":"abc","Names":["/web","db"],"Image":"x","State":"running","Status":"Up"}"#,
        )
        .expect("valid row");
        let summary = ContainerSummary::from(raw);
        assert_eq!(summary.names, vec!["web", "db"]);
    }

    #[test]
    fn null_names_are_empty() {
        let raw: RawSummary =
            serde_json::from_str(r#"{"Id":"abc","Names":null}"#).expect("valid row");
        assert!(ContainerSummary::from(raw).names.is_empty());
    }

    #[test]
    fn ids_and_paths_are_escaped() {
        assert_eq!(segment("web-old.1_x").expect("a name"), "web-old.1_x");
        for not_a_name in ["a/b?c", "../../_ping", ".hidden", "-x", "a b", "ü"] {
            assert!(
                matches!(segment(not_a_name), Err(EngineError::NotFound(_))),
                "{not_a_name}"
            );
        }
        assert_eq!(query_value("/a b/ü&x=1"), "%2Fa%20b%2F%C3%BC%26x%3D1");
        assert!(matches!(segment(""), Err(EngineError::Invalid(_))));
    }

    #[test]
    fn grace_rounds_up() {
        assert_eq!(grace_secs(Duration::from_millis(0)), 0);
        assert_eq!(grace_secs(Duration::from_millis(1)), 1);
        assert_eq!(grace_secs(Duration::from_secs(10)), 10);
    }

    #[test]
    fn api_error_takes_message() {
        let reply = Reply {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: Bytes::from_static(br#"{"cause":"x","message":"crun: boom","response":500}"#),
        };
        match api_error(reply) {
            EngineError::Api { status, message } => {
                assert_eq!((status, message.as_str()), (500, "crun: boom"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A fake engine: answers each request on a connection, closing the
    /// connection after `per_connection` answers; returns the request lines.
    /// It lists one container, `c1` named `web`, and any inspect finds one.
    pub(crate) fn fake_engine(
        socket: &std::path::Path,
        per_connection: usize,
    ) -> std::sync::mpsc::Receiver<(usize, String)> {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().flatten().enumerate() {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut out = stream;
                for _ in 0..per_connection {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let mut header = String::new();
                    while reader.read_line(&mut header).unwrap_or(0) > 2 {
                        header.clear();
                    }
                    let _ = tx.send((n, line.trim().to_owned()));
                    let (status, body) = if line.starts_with("HEAD") {
                        ("404 Not Found", "")
                    } else if line.contains("/containers/json") {
                        ("200 OK", r#"[{"Id":"c1","Names":["/web"]}]"#)
                    } else {
                        ("200 OK", "{}")
                    };
                    let _ = write!(
                        out,
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                }
            }
        });
        rx
    }

    #[test]
    fn reads_share_one_connection_and_a_closed_one_is_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("engine.sock");
        let requests = fake_engine(&socket, 2);
        let engine = ContainerEngine::new(&socket, Duration::from_secs(5));
        assert_eq!(engine.list(true).expect("list").len(), 1);
        engine.inspect("c1").expect("inspect");
        // The engine closed the first connection after two answers.
        engine.inspect("c1").expect("inspect on a fresh connection");
        let seen: Vec<(usize, String)> = requests.try_iter().collect();
        let connections: Vec<usize> = seen.iter().map(|(n, _)| *n).collect();
        assert_eq!(connections, vec![0, 0, 1], "{seen:?}");
    }

    #[test]
    fn a_missing_path_in_a_listed_container_needs_no_inspect() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("engine.sock");
        let requests = fake_engine(&socket, 100);
        let engine = ContainerEngine::new(&socket, Duration::from_secs(5));
        // Not seen yet: the 404 is followed by an inspect.
        assert!(!engine.path_exists("c1", "/usr/bin/curl").expect("stat"));
        engine.list(true).expect("list");
        assert!(!engine.path_exists("c1", "/bin/curl").expect("stat"));
        let lines: Vec<String> = requests.try_iter().map(|(_, line)| line).collect();
        let kinds: Vec<&str> = lines
            .iter()
            .map(|l| l.split('?').next().unwrap_or(""))
            .collect();
        assert_eq!(
            kinds,
            [
                "HEAD /containers/c1/archive",
                "GET /containers/c1/json HTTP/1.1",
                "GET /containers/json",
                "HEAD /containers/c1/archive"
            ],
            "{lines:?}"
        );
    }

    #[test]
    fn missing_socket_is_unreachable() {
        let engine = ContainerEngine::new("/nonexistent/doctor-test.sock", Duration::from_secs(1));
        assert!(matches!(
            engine.list(true),
            Err(EngineError::Unreachable { .. })
        ));
    }

    #[test]
    fn relative_path_is_invalid() {
        let engine = ContainerEngine::new("/nonexistent/doctor-test.sock", Duration::from_secs(1));
        assert!(matches!(
            engine.path_exists("c", "bin/sh"),
            Err(EngineError::Invalid(_))
        ));
    }
}
