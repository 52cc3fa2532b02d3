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
