//! A private, throw-away Podman engine for one test.
//!
//! Every piece of state lives under one TempDir: image and container storage
//! (vfs, so no overlay mounts), run state, locks (file locks, not the
//! machine-wide /dev/shm/libpod_lock), network config, events, temp files and
//! the API socket. The machine's own /etc/containers and ~/.config/containers
//! are not read: CONTAINERS_CONF and friends point at files written here.
//! Containers get no network (netns "none"), so no firewall rules are made.
//!
//! The CLI is fine here (this is test setup); product code talks to the API.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long the API service may take to answer its first ping.
const SERVICE_READY: Duration = Duration::from_secs(30);
/// Bound on any one CLI call, so a wedged podman fails the test instead of
/// hanging the whole run.
const CLI_LIMIT: Duration = Duration::from_secs(120);

/// Names the busybox applets linked in /bin of the imported image. No curl, on
/// purpose: tests look for its absence.
const APPLETS: &[&str] = &[
    "sh", "ash", "sleep", "ls", "cat", "echo", "true", "false", "test", "env", "id", "ps", "mkdir",
    "rm", "touch", "grep", "wget", "kill", "hostname", "uname", "head", "tail", "wc",
];

pub struct Podman {
    /// None only during Drop, when the dir must outlive us (mounts remain).
    dir: Option<TempDir>,
    /// The TempDir's path, kept apart so it is usable after `dir` is taken.
    root: PathBuf,
    service: Child,
    socket: PathBuf,
}

impl Podman {
    /// Starts `podman system service` on a socket in a fresh TempDir and waits
    /// until it answers `GET /_ping`.
    pub fn start() -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("podman-")
            .tempdir()
            .expect("create podman tempdir");
        let socket = dir.path().join("api.sock");
        // sun_path holds 108 bytes; a long TMPDIR would make bind() fail obscurely.
        assert!(
            socket.as_os_str().len() < 100,
            "socket path too long for AF_UNIX: {}",
            socket.display()
        );
        write_config(dir.path());

        let log =
            std::fs::File::create(dir.path().join("service.log")).expect("create service.log");
        let log_err = log.try_clone().expect("clone service.log handle");
        let mut command = podman_command(dir.path());
        command
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let service = command
            .spawn()
            .expect("spawn `podman system service` (is podman installed?)");
        let root = dir.path().to_path_buf();
        let mut podman = Podman {
            dir: Some(dir),
            root,
            service,
            socket,
        };
        podman.wait_ready();
        podman
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Imports a rootfs of the static /bin/busybox plus applet links as
    /// `tag`, with CMD ["/bin/sh"].
    pub fn import_busybox(&self, tag: &str) {
        import_busybox_with("podman", &self.root, tag, |args| self.podman(args));
    }

    /// `podman create <args>`; returns the new container's full id.
    pub fn create(&self, args: &[&str]) -> String {
        let mut full = vec!["create"];
        full.extend_from_slice(args);
        created("podman", args, &self.podman(&full))
    }

    /// Any podman command with the isolation flags and environment.
    pub fn podman(&self, args: &[&str]) -> Output {
        run_bounded(podman_command(&self.root).args(args), CLI_LIMIT)
    }

    /// Kills the API service as a crash would: its socket file stays behind
    /// and nothing answers on it. The storage is still removed on drop.
    pub fn kill_service(&mut self) {
        let _ = self.service.kill();
        let _ = self.service.wait();
    }

    /// The service's own log, for failure messages.
    pub fn service_log(&self) -> String {
        std::fs::read_to_string(self.root.join("service.log")).unwrap_or_default()
    }

    /// The TempDir everything lives in; tests may put bind-mount sources here.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + SERVICE_READY;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.service.try_wait() {
                panic!(
                    "podman system service exited ({status}) before answering:\n{}",
                    self.service_log()
                );
            }
            if ping(&self.socket) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "podman system service did not answer GET /_ping on {} within {SERVICE_READY:?}:\n{}",
            self.socket.display(),
            self.service_log()
        );
    }
}

impl Drop for Podman {
    /// Removes containers (which unmounts their storage and shm), stops the
    /// service, and deletes the TempDir only when nothing is mounted under it:
    /// recursive removal through a live mount would delete the mount's source.
    fn drop(&mut self) {
        // A loaded machine can make the first removal fail; one more try.
        if !self
            .podman(&["rm", "--all", "--force", "--time", "0"])
            .status
            .success()
        {
            let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        }
        let _ = self.service.kill();
        let _ = self.service.wait();
        // conmon outlives the service and writes exit files under the dir.
        kill_processes_naming(&self.root);
        let leftovers = mounts_under(&self.root);
        for mount in leftovers.iter().rev() {
            let _ = run_bounded(
                Command::new("umount").arg("-l").arg(mount),
                Duration::from_secs(10),
            );
        }
        if !mounts_under(&self.root).is_empty() {
            // Forgetting the TempDir skips its recursive removal.
            std::mem::forget(self.dir.take());
            eprintln!(
                "podman harness: mounts remain, leaving {} in place",
                self.root.display()
            );
            return;
        }
        // TempDir's own removal gives up silently on a file that appears
        // while it runs, and a late `podman container cleanup` (spawned by
        // conmon) can write the tree again after it: remove, wait a moment,
        // and look again, until it stays gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut gone_twice = 0;
        while gone_twice < 2 && Instant::now() < deadline {
            kill_processes_naming(&self.root);
            let _ = std::fs::remove_dir_all(&self.root);
            std::thread::sleep(Duration::from_millis(100));
            gone_twice = if self.root.exists() {
                0
            } else {
                gone_twice + 1
            };
        }
    }
}

/// Builds a rootfs under `dir` from the static /bin/busybox plus applet
/// links, and returns the path of its tar (numeric owner root), ready for
/// `podman import` or `docker import`: no registry is ever asked.
pub fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    let n = next_id();
    let rootfs = dir.join(format!("rootfs-{n}"));
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).expect("create rootfs/bin");
    // Mount points the runtime expects; it would create them, but an image
    // with them is closer to a real one.
    for sub in ["proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(rootfs.join(sub)).expect("create rootfs dir");
    }
    // fs::copy follows the /bin -> /usr/bin link of merged-/usr systems.
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("copy /bin/busybox (install busybox-static)");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("link busybox applet");
    }
    let tarball = dir.join(format!("rootfs-{n}.tar"));
    let tar = run_bounded(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg("."),
        CLI_LIMIT,
    );
    assert_success("tar rootfs", &tar);
    tarball
}

/// SIGKILL every process whose command line names `dir` (conmon, a stuck
/// podman CLI): nothing of this harness may outlive it.
pub fn kill_processes_naming(dir: &Path) {
    let Some(needle) = dir.to_str() else { return };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if pid != std::process::id() as i32 && String::from_utf8_lossy(&cmdline).contains(needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The flags every podman call carries, plus environment overrides so no
/// machine-wide config or state is read or written.
fn podman_command(dir: &Path) -> Command {
    let mut command = Command::new("podman");
    command
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ])
        .arg("--tmpdir")
        .arg(dir.join("tmp"))
        .env("CONTAINERS_CONF", dir.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"))
        .env("CONTAINERS_REGISTRIES_CONF", dir.join("registries.conf"))
        .env("XDG_RUNTIME_DIR", dir.join("xdg-run"))
        .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
        .env("XDG_DATA_HOME", dir.join("xdg-data"))
        .env("TMPDIR", dir.join("tmp"))
        .stdin(Stdio::null());
    command
}

/// Writes the config files the environment points at.
fn write_config(dir: &Path) {
    for sub in [
        "root",
        "run",
        "tmp",
        "xdg-run",
        "xdg-config",
        "xdg-data",
        "networks",
    ] {
        std::fs::create_dir_all(dir.join(sub)).expect("create podman state dir");
    }
    let path = |sub: &str| dir.join(sub).display().to_string();
    let mut conf = String::from("[containers]\n");
    // No network namespace setup: no netavark, no firewall rules on the host.
    conf.push_str("netns = \"none\"\n");
    conf.push_str(&format!("default_ulimits = [{}]\n", ulimits()));
    conf.push_str("\n[engine]\n");
    conf.push_str("cgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n");
    // File locks under tmpdir instead of the machine-wide /dev/shm segment,
    // which a fresh store would reset ("FreeAllLocks") under other engines.
    conf.push_str("lock_type = \"file\"\n");
    conf.push_str(&format!("tmp_dir = \"{}\"\n", path("tmp")));
    conf.push_str(&format!("image_copy_tmp_dir = \"{}\"\n", path("tmp")));
    if let Some(runtime) = runc() {
        // crun 1.8 (Debian 12) refuses to start anything on a hybrid cgroup
        // v1+v2 host ("cgroups in hybrid mode not supported"); runc copes.
        conf.push_str(&format!(
            "runtime = \"runc\"\n\n[engine.runtimes]\nrunc = [\"{runtime}\"]\n"
        ));
    }
    conf.push_str(&format!(
        "\n[network]\nnetwork_config_dir = \"{}\"\n",
        path("networks")
    ));
    std::fs::write(dir.join("containers.conf"), conf).expect("write containers.conf");

    let storage = format!(
        "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
        path("root"),
        path("run")
    );
    std::fs::write(dir.join("storage.conf"), storage).expect("write storage.conf");
    // No search registries: an unqualified name must never reach the network.
    std::fs::write(
        dir.join("registries.conf"),
        "unqualified-search-registries = []\n",
    )
    .expect("write registries.conf");
}

/// Podman (as root) gives containers nofile and nproc of 1048576, which the
/// runtime cannot set without CAP_SYS_RESOURCE, missing in sandboxes and
/// nested containers ("setrlimit RLIMIT_NOFILE: Operation not permitted").
/// Limits at or below the engine's own hard limits always succeed. Podman
/// lowers its own nproc hard limit to 32768 at startup, hence the caps.
fn ulimits() -> String {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let mut out = Vec::new();
    for (label, name, cap) in [
        ("Max open files", "nofile", 1_048_576u64),
        ("Max processes", "nproc", 32_768),
    ] {
        let hard = limits
            .lines()
            .find(|line| line.starts_with(label))
            .and_then(|line| line[label.len()..].split_whitespace().nth(1))
            .and_then(|hard| hard.parse::<u64>().ok())
            .map(|hard| hard.min(cap));
        if let Some(hard) = hard {
            out.push(format!("\"{name}={hard}:{hard}\""));
        }
    }
    out.join(", ")
}

fn runc() -> Option<String> {
    ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .map(str::to_owned)
}

/// One raw HTTP/1.0 ping; the server closes after answering.
pub fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.") && answer.split_whitespace().nth(1) == Some("200")
}

/// Runs a command with output captured to files (pipes could fill and
/// deadlock a polling wait), killing it after `limit`.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    let n = next_id();
    let base = std::env::temp_dir();
    let out_path = base.join(format!("podman-harness-{}-{n}.out", std::process::id()));
    let err_path = base.join(format!("podman-harness-{}-{n}.err", std::process::id()));
    let (Ok(out_file), Ok(err_file)) = (
        std::fs::File::create(&out_path),
        std::fs::File::create(&err_path),
    ) else {
        return failed_output(format!("cannot create capture files in {}", base.display()));
    };
    let mut child = match command.stdout(out_file).stderr(err_file).spawn() {
        Ok(child) => child,
        Err(e) => return failed_output(format!("cannot spawn {command:?}: {e}")),
    };
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                break child.wait().unwrap_or_else(|_| exit_status(1));
            }
        }
    };
    let stdout = std::fs::read(&out_path).unwrap_or_default();
    let mut stderr = std::fs::read(&err_path).unwrap_or_default();
    if Instant::now() >= deadline {
        stderr.extend_from_slice(format!("\n[harness: killed after {limit:?}]").as_bytes());
    }
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    Output {
        status,
        stdout,
        stderr,
    }
}

fn failed_output(message: String) -> Output {
    Output {
        status: exit_status(1),
        stdout: Vec::new(),
        stderr: message.into_bytes(),
    }
}

fn exit_status(code: i32) -> std::process::ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    std::process::ExitStatus::from_raw(code << 8)
}

/// Imports the busybox rootfs under `root` as `tag` through `podman` (root's
/// engine or a user's), with CMD ["/bin/sh"].
pub fn import_busybox_with(
    cli: &str,
    root: &Path,
    tag: &str,
    podman: impl FnOnce(&[&str]) -> Output,
) {
    let tarball = busybox_rootfs_tar(root);
    let tarball = tarball.to_str().expect("tempdir path is UTF-8");
    let out = podman(&["import", "--change", r#"CMD ["/bin/sh"]"#, tarball, tag]);
    assert_success(&format!("{cli} import {tag}"), &out);
}

/// The full id `CLI create ARGS` printed: progress lines may precede it, the
/// id is always the last line.
pub fn created(cli: &str, args: &[&str], out: &Output) -> String {
    assert_success(&format!("{cli} create {}", args.join(" ")), out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout.lines().last().unwrap_or("").trim().to_owned();
    assert!(
        id.len() == 64,
        "{cli} create printed no container id: {stdout:?}"
    );
    id
}

pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mount points at or below `dir`, from /proc/self/mountinfo (field 5).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|mount| mount.starts_with(dir))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_mountinfo(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn next_id() -> usize {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}
