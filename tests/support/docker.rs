//! A private Docker Engine (Debian's `docker.io`) shared by the tests of one
//! test binary, started on first use and stopped when the binary exits.
//!
//! Everything lives under one TempDir: the data root (vfs storage, no
//! overlay mounts), the exec root (with the containerd dockerd manages
//! itself), the pid file, the daemon's config and the API socket. No bridge,
//! no iptables or ip6tables rules: containers run with `--network none` or
//! `--network host`. Images are imported from the busybox rootfs tar that
//! the Podman harness builds (no registry).
//!
//! Tests share the daemon, so each names its containers uniquely and looks
//! only at its own. When dockerd cannot run here, [`Docker::shared`] says
//! why and the test prints it instead of passing silently.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::podman::{
    assert_success, busybox_rootfs_tar, created, kill_processes_naming, mounts_under, ping,
    run_bounded,
};

const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's CLI; another `docker` earlier on PATH is not the one under test.
const DOCKER_CLI: &str = "/usr/bin/docker";
/// The image every test may use, imported when the daemon starts.
pub const IMAGE: &str = "localhost/busybox:latest";
/// How long the daemon may take to answer its first ping.
const DAEMON_READY: Duration = Duration::from_secs(60);
const CLI_LIMIT: Duration = Duration::from_secs(120);

pub struct Docker {
    root: PathBuf,
    socket: PathBuf,
    pid: u32,
}

static SHARED: OnceLock<Result<Docker, String>> = OnceLock::new();

impl Docker {
    /// This test binary's daemon, started on first use; Err says why no
    /// daemon runs here (not installed, or the error it stopped with).
    pub fn shared() -> Result<&'static Docker, String> {
        SHARED
            .get_or_init(|| {
                let docker = Docker::start()?;
                // SAFETY: registering a plain extern "C" fn with no arguments.
                unsafe { libc::atexit(stop_shared) };
                Ok(docker)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A daemon of the caller's own, for a test that stops it ([`Docker::stop`]):
    /// nothing stops it at exit. Err says why no daemon runs here.
    pub fn private() -> Result<Docker, String> {
        Docker::start()
    }

    /// The daemon, or None after printing why it does not run here.
    pub fn or_say_why(test: &str) -> Option<&'static Docker> {
        match Docker::shared() {
            Ok(docker) => Some(docker),
            Err(why) => {
                println!("{test}: not run on Docker: {why}");
                None
            }
        }
    }

    fn start() -> Result<Docker, String> {
        for binary in [DOCKERD, DOCKER_CLI] {
            if !Path::new(binary).exists() {
                return Err(format!(
                    "{binary} is missing (Debian's docker.io; .ci/docker-setup.sh installs it)"
                ));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("dockerd-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        // Removed by `stop` at exit (after unmounting), not by TempDir.
        let root = dir.keep();
        let socket = root.join("api.sock");
        assert!(
            socket.as_os_str().len() < 100,
            "socket path too long for AF_UNIX: {}",
            socket.display()
        );
        // An explicit, empty config: /etc/docker/daemon.json is not read.
        std::fs::write(root.join("daemon.json"), "{}\n").map_err(|e| e.to_string())?;
        let log = std::fs::File::create(root.join("dockerd.log")).map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(DOCKERD);
        command
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .arg("--config-file")
            .arg(root.join("daemon.json"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--storage-driver=vfs",
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: prctl in the forked child before exec; no allocation.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            command.pre_exec(|| {
                // Should this binary die without running its exit handler
                // (SIGKILL), the daemon gets TERM when its keeper thread goes.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        // The keeper thread spawns the daemon and lives as long as it does
        // (PDEATHSIG follows the spawning thread, not the process).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || match command.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(child.id()));
                let status = child.wait();
                let _ = tx.send(Err(format!("dockerd exited ({status:?})")));
            }
            Err(e) => {
                let _ = tx.send(Err(format!("cannot spawn {DOCKERD}: {e}")));
            }
        });
        let pid = rx.recv().map_err(|e| e.to_string())?.inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&root);
        })?;
        let docker = Docker { root, socket, pid };
        let deadline = Instant::now() + DAEMON_READY;
        while !ping(&docker.socket) {
            if let Ok(Err(exited)) = rx.try_recv() {
                let why = format!("{exited}:\n{}", docker.log_tail());
                docker.stop();
                return Err(why);
            }
            if Instant::now() > deadline {
                let why = format!(
                    "dockerd did not answer GET /_ping within {DAEMON_READY:?}:\n{}",
                    docker.log_tail()
                );
                docker.stop();
                return Err(why);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let tarball = busybox_rootfs_tar(&docker.root);
        let imported = docker.docker(&[
            "import",
            "--change",
            r#"CMD ["/bin/sh"]"#,
            tarball.to_str().expect("UTF-8 tempdir"),
            IMAGE,
        ]);
        if !imported.status.success() {
            let why = format!(
                "docker import failed: {}",
                String::from_utf8_lossy(&imported.stderr)
            );
            docker.stop();
            return Err(why);
        }
        Ok(docker)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// `tag` names the imported busybox image too.
    pub fn import_busybox(&self, tag: &str) {
        if tag != IMAGE {
            let out = self.docker(&["tag", IMAGE, tag]);
            assert_success(&format!("docker tag {IMAGE} {tag}"), &out);
        }
    }

    /// `docker create <args>` (with `--network none` unless the args name a
    /// network: there is no bridge); returns the new container's full id.
    pub fn create(&self, args: &[&str]) -> String {
        let mut full = vec!["create"];
        if !args.iter().any(|a| a.starts_with("--network")) {
            full.extend(["--network", "none"]);
        }
        full.extend_from_slice(args);
        created("docker", args, &self.docker(&full))
    }

    /// Any docker CLI command against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        run_bounded(
            Command::new(DOCKER_CLI)
                .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
                .env("DOCKER_CONFIG", self.root.join("cli"))
                .stdin(Stdio::null())
                .args(args),
            CLI_LIMIT,
        )
    }

    pub fn service_log(&self) -> String {
        std::fs::read_to_string(self.root.join("dockerd.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.service_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Removes every container, stops the daemon (and the containerd it
    /// manages), kills what is left of it, unmounts and removes the dir.
    pub fn stop(&self) {
        let ids = self.docker(&["ps", "-aq"]);
        let ids = String::from_utf8_lossy(&ids.stdout).to_string();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut rm = vec!["rm", "--force"];
            rm.extend(ids);
            let _ = self.docker(&rm);
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Path::new(&format!("/proc/{}", self.pid)).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Shims of containers that would not go name the exec root.
        kill_processes_naming(&self.root);
        for mount in mounts_under(&self.root).iter().rev() {
            let _ = run_bounded(
                Command::new("umount").arg("-l").arg(mount),
                Duration::from_secs(10),
            );
        }
        if mounts_under(&self.root).is_empty() {
            let _ = std::fs::remove_dir_all(&self.root);
        } else {
            eprintln!(
                "docker harness: mounts remain, leaving {} in place",
                self.root.display()
            );
        }
    }
}

/// The exit handler: the shared daemon goes with the test binary.
extern "C" fn stop_shared() {
    let _ = std::panic::catch_unwind(|| {
        if let Some(Ok(docker)) = SHARED.get() {
            docker.stop();
        }
    });
}
