//! The container tests' engines behind one interface, so each test body runs
//! on a private Podman and on the binary's private Docker alike.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::path::Path;
use std::process::Output;

use super::docker::Docker;
use super::podman::Podman;

/// For each `NAME(engine: &dyn TestEngine)`, a module `NAME` with two
/// tests: `NAME::on_podman` (a private Podman) and `NAME::on_docker` (this
/// test binary's Docker; where dockerd cannot run here it prints why and
/// passes). `cargo test on_docker` selects one engine, `cargo test NAME` one
/// scenario on both.
#[macro_export]
macro_rules! tests_on_both_engines {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[test]
            fn on_podman() {
                super::$name(&$crate::support::podman::Podman::start());
            }
            #[test]
            fn on_docker() {
                let test = concat!(stringify!($name), "::on_docker");
                if let Some(docker) = $crate::support::docker::Docker::or_say_why(test) {
                    super::$name(docker);
                }
            }
        })*
    };
}

pub trait TestEngine {
    /// "podman" or "docker", for messages.
    fn name(&self) -> &'static str;
    /// The Docker-compatible API's Unix socket.
    fn socket(&self) -> &Path;
    /// Makes `tag` name the busybox image.
    fn import_busybox(&self, tag: &str);
    /// `create <args>`, returning the full id.
    fn create(&self, args: &[&str]) -> String;
    /// The engine's own CLI.
    fn cli(&self, args: &[&str]) -> Output;
    fn service_log(&self) -> String;
    /// True when other tests' containers may be on the engine too.
    fn shared(&self) -> bool;
    /// `inspect --format FORMAT ID`, trimmed.
    fn inspect_format(&self, id: &str, format: &str) -> String {
        let out = self.cli(&["inspect", "--format", format, id]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl TestEngine for Podman {
    fn name(&self) -> &'static str {
        "podman"
    }
    fn socket(&self) -> &Path {
        Podman::socket(self)
    }
    fn import_busybox(&self, tag: &str) {
        Podman::import_busybox(self, tag)
    }
    fn create(&self, args: &[&str]) -> String {
        Podman::create(self, args)
    }
    fn cli(&self, args: &[&str]) -> Output {
        self.podman(args)
    }
    fn service_log(&self) -> String {
        Podman::service_log(self)
    }
    fn shared(&self) -> bool {
        false
    }
}

impl TestEngine for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }
    fn socket(&self) -> &Path {
        Docker::socket(self)
    }
    fn import_busybox(&self, tag: &str) {
        Docker::import_busybox(self, tag)
    }
    fn create(&self, args: &[&str]) -> String {
        Docker::create(self, args)
    }
    fn cli(&self, args: &[&str]) -> Output {
        self.docker(args)
    }
    fn service_log(&self) -> String {
        Docker::service_log(self)
    }
    fn shared(&self) -> bool {
        true
    }
}

/// A Unix socket in front of an engine's that forwards every connection
/// and keeps the request lines passing through (`GET /containers/json?all=true`,
/// without the ` HTTP/1.1`), so a test can count what doctor asked the engine.
pub struct CountingProxy {
    socket: std::path::PathBuf,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl CountingProxy {
    /// Listens at `socket`, forwarding to `upstream`; lives as long as the test.
    pub fn start(socket: &Path, upstream: &Path) -> CountingProxy {
        use std::io::{Read, Write};
        use std::os::unix::net::{UnixListener, UnixStream};
        let listener = UnixListener::bind(socket).expect("bind the counting proxy");
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (kept, upstream) = (requests.clone(), upstream.to_path_buf());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = UnixStream::connect(&upstream) else {
                    continue;
                };
                let (mut to_client, mut from_server) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (mut from_client, mut to_server) = (client, server);
                let kept = kept.clone();
                std::thread::spawn(move || {
                    // Requests carry no body: every line ending in the
                    // protocol is a request line, however the reads split it.
                    let (mut buf, mut pending) = ([0u8; 65536], Vec::new());
                    while let Ok(n @ 1..) = from_client.read(&mut buf) {
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
                            let line = String::from_utf8_lossy(&pending[..end]).to_string();
                            pending.drain(..end + 2);
                            if let Some(request) = line.strip_suffix(" HTTP/1.1") {
                                kept.lock().unwrap().push(request.to_string());
                            }
                        }
                        if to_server.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to_server.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_server, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        CountingProxy {
            socket: socket.to_path_buf(),
            requests,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The request lines seen so far, oldest first, and forgets them.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}
