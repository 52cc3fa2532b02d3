//! A private, throw-away *rootless* Podman engine for one test, run as the
//! unprivileged `nobody` user (no user is added to the machine).
//!
//! Like [`Podman`](super::podman::Podman), every piece of state lives under
//! one TempDir, here owned by that user (mode 0700): image and container
//! storage (vfs), run state, file locks, temp files, and an XDG_RUNTIME_DIR
//! of its own holding the API socket at `xdg-run/podman/podman.sock`, the
//! layout of a real user's `/run/user/UID/podman/podman.sock`. No real
//! user's runtime dir, and none of the machine's container config, is read
//! or written: the environment is cleared and rebuilt, and CONTAINERS_CONF
//! and friends point at files written here.
//!
//! Every podman process (the CLI of the setup, the API service) is started
//! through `setpriv --reuid UID --regid GID --clear-groups` (util-linux).
//! Rootless Podman needs a user namespace. With no `/etc/subuid` range for
//! the user, Podman maps only the user's own uid as the container's root
//! (no `newuidmap` needed); the busybox image is imported from a tar whose
//! files all belong to root, so that one uid is enough, and
//! `ignore_chown_errors` covers what it would not. Where the machine or a
//! sandbox refuses (not root, no such user, user namespaces disabled by
//! `kernel.unprivileged_userns_clone` or `user.max_user_namespaces`, a
//! seccomp or AppArmor refusal, Podman unable to set up its namespace),
//! [`RootlessPodman::or_say_why`] prints `not run: WHY` and the test returns.
//!
//! The CLI is fine here (this is test setup); product code talks to the API.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::engines::TestEngine;
use crate::support::podman::{
    assert_success, created, import_busybox_with, mounts_under, ping, run_bounded,
};

/// The unprivileged user the engine runs as.
pub const USER: &str = "nobody";
/// Rootless setup (the pause process, the user namespace) is slower than root.
const SERVICE_READY: Duration = Duration::from_secs(60);
const CLI_LIMIT: Duration = Duration::from_secs(120);
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct RootlessPodman {
    /// None only during Drop, when the dir must outlive us (mounts remain).
    dir: Option<TempDir>,
    root: PathBuf,
    /// None until the service is spawned.
    service: Option<Child>,
    socket: PathBuf,
    uid: u32,
    gid: u32,
}

/// A process of this engine: its command line or environment names the
/// engine's dir (the API service, conmon, the rootless pause process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineProcess {
    pub pid: i32,
    /// Real, effective, saved and filesystem uid (`/proc/PID/status`).
    pub uids: Vec<u32>,
    pub cmdline: String,
}

impl RootlessPodman {
    /// The engine, or None after printing `TEST: not run: WHY`.
    pub fn or_say_why(test: &str) -> Option<RootlessPodman> {
        match RootlessPodman::start() {
            Ok(engine) => Some(engine),
            Err(why) => {
                println!("{test}: not run: {why}");
                None
            }
        }
    }

    /// Starts `podman system service` as [`USER`] on a socket in a fresh
    /// TempDir and waits until it answers `GET /_ping`; Err says why rootless
    /// Podman cannot run here. Once the checks pass, a failure is a panic.
    pub fn start() -> Result<RootlessPodman, String> {
        let (uid, gid) = preflight()?;
        let dir = tempfile::Builder::new()
            .prefix("rootless-podman-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let root = dir.path().to_path_buf();
        let socket = root.join("xdg-run").join("podman").join("podman.sock");
        assert!(
            socket.as_os_str().len() < 100,
            "socket path too long for AF_UNIX: {}",
            socket.display()
        );
        write_config(&root);
        chown_tree(&root, uid, gid);

        let mut engine = RootlessPodman {
            dir: Some(dir),
            root,
            service: None,
            socket,
            uid,
            gid,
        };

        let reach = run_bounded(
            user_command(uid, gid, &engine.root, "test")
                .arg("-w")
                .arg(&engine.root),
            CLI_LIMIT,
        );
        if !reach.status.success() {
            return Err(format!(
                "{USER} cannot write {}: a parent directory is not searchable by others (set TMPDIR)",
                engine.root.display()
            ));
        }
        // The first podman call sets up the user namespace and its pause
        // process; a refusal here is the machine's, not the test's.
        let unshare = engine.podman(&["unshare", "true"]);
        if !unshare.status.success() {
            return Err(format!(
                "rootless podman cannot set up its user namespace as {USER}: {}",
                last_error_line(&unshare)
            ));
        }
        let rootless = engine.podman(&["info", "--format", "{{.Host.Security.Rootless}}"]);
        assert_success("podman info", &rootless);
        assert_eq!(
            String::from_utf8_lossy(&rootless.stdout).trim(),
            "true",
            "the engine runs rootless"
        );

        let log =
            std::fs::File::create(engine.root.join("service.log")).expect("create service.log");
        let log_err = log.try_clone().expect("clone service.log handle");
        let mut command = engine.podman_command();
        command
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", engine.socket.display()))
            .stdout(log)
            .stderr(log_err);
        engine.service = Some(
            command
                .spawn()
                .expect("spawn rootless `podman system service`"),
        );
        engine.wait_ready();
        Ok(engine)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The API service's pid (setpriv execs podman in place).
    pub fn service_pid(&self) -> i32 {
        self.service.as_ref().map_or(0, |s| s.id() as i32)
    }

    /// The TempDir everything lives in.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Imports the busybox rootfs (files of root only) as `tag`.
    pub fn import_busybox(&self, tag: &str) {
        import_busybox_with("rootless podman", &self.root, tag, |args| self.podman(args));
    }

    /// `podman create <args>` as the user; returns the new container's full id.
    pub fn create(&self, args: &[&str]) -> String {
        let mut full = vec!["create"];
        full.extend_from_slice(args);
        created("rootless podman", args, &self.podman(&full))
    }

    /// Any podman command, as the user, with the isolation flags and environment.
    pub fn podman(&self, args: &[&str]) -> Output {
        run_bounded(self.podman_command().args(args), CLI_LIMIT)
    }

    pub fn service_log(&self) -> String {
        std::fs::read_to_string(self.root.join("service.log")).unwrap_or_default()
    }

    /// This engine's processes, found by the dir in their command line or
    /// environment (the pause process `catatonit -P` names it only there).
    pub fn processes(&self) -> Vec<EngineProcess> {
        processes_naming(&self.root)
    }

    /// Files and dirs of the engine's state owned by anyone but the user
    /// (the harness's own busybox rootfs and tar, made by root, left out).
    pub fn state_not_owned_by_user(&self) -> Vec<PathBuf> {
        use std::os::unix::fs::MetadataExt as _;
        let mut found = Vec::new();
        let mut todo: Vec<PathBuf> = STATE_DIRS.iter().map(|d| self.root.join(d)).collect();
        while let Some(path) = todo.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.uid() != self.uid {
                found.push(path.clone());
            }
            if meta.is_dir() {
                if let Ok(entries) = std::fs::read_dir(&path) {
                    todo.extend(entries.flatten().map(|e| e.path()));
                }
            }
        }
        found
    }

    fn podman_command(&self) -> Command {
        let dir = &self.root;
        let mut command = user_command(self.uid, self.gid, dir, "podman");
        command
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--storage-opt",
                "vfs.ignore_chown_errors=true",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .arg("--tmpdir")
            .arg(dir.join("tmp"))
            .env("CONTAINERS_CONF", dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", dir.join("registries.conf"));
        command
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + SERVICE_READY;
        while Instant::now() < deadline {
            let service = self.service.as_mut().expect("service spawned");
            if let Ok(Some(status)) = service.try_wait() {
                panic!(
                    "rootless podman system service exited ({status}) before answering:\n{}",
                    self.service_log()
                );
            }
            if ping(&self.socket) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "rootless podman system service did not answer GET /_ping on {} within {SERVICE_READY:?}:\n{}",
            self.socket.display(),
            self.service_log()
        );
    }
}

impl Drop for RootlessPodman {
    /// Removes the containers as the user, stops the service, kills what is
    /// left of the engine (conmon, the pause process), then deletes the dir.
    fn drop(&mut self) {
        if !self
            .podman(&["rm", "--all", "--force", "--time", "0"])
            .status
            .success()
        {
            let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        }
        if let Some(service) = self.service.as_mut() {
            let _ = service.kill();
            let _ = service.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = processes_naming(&self.root);
            if left.is_empty() || Instant::now() >= deadline {
                break;
            }
            for p in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Rootless mounts live in the user's own mount namespace and vfs
        // makes none; should one show here, keep the dir rather than delete
        // through it.
        if !mounts_under(&self.root).is_empty() {
            std::mem::forget(self.dir.take());
            eprintln!(
                "rootless podman harness: mounts remain, leaving {} in place",
                self.root.display()
            );
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut gone_twice = 0;
        while gone_twice < 2 && Instant::now() < deadline {
            for p in processes_naming(&self.root) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
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

impl TestEngine for RootlessPodman {
    fn name(&self) -> &'static str {
        "rootless podman"
    }
    fn socket(&self) -> &Path {
        RootlessPodman::socket(self)
    }
    fn import_busybox(&self, tag: &str) {
        RootlessPodman::import_busybox(self, tag)
    }
    fn create(&self, args: &[&str]) -> String {
        RootlessPodman::create(self, args)
    }
    fn cli(&self, args: &[&str]) -> Output {
        self.podman(args)
    }
    fn service_log(&self) -> String {
        RootlessPodman::service_log(self)
    }
    fn shared(&self) -> bool {
        false
    }
}

/// The engine's state, all of it written by the user's processes.
const STATE_DIRS: &[&str] = &[
    "root",
    "run",
    "tmp",
    "xdg-run",
    "xdg-config",
    "xdg-data",
    "home",
    "networks",
];

/// Why rootless Podman cannot run here, checked before anything is made;
/// else the user's uid and gid.
fn preflight() -> Result<(u32, u32), String> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return Err(format!(
            "the tests run as uid {euid}, not root: cannot become {USER}"
        ));
    }
    for (tool, package) in [
        ("podman", "podman"),
        ("setpriv", "util-linux"),
        ("unshare", "util-linux"),
    ] {
        if !in_path(tool) {
            return Err(format!("{tool} is not installed ({package})"));
        }
    }
    let user = nix::unistd::User::from_name(USER)
        .map_err(|e| format!("cannot look up user {USER}: {e}"))?
        .ok_or_else(|| format!("there is no user {USER}"))?;
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    if uid == 0 {
        return Err(format!("{USER} is uid 0 here"));
    }
    for (file, setting) in [
        (
            "/proc/sys/kernel/unprivileged_userns_clone",
            "kernel.unprivileged_userns_clone",
        ),
        (
            "/proc/sys/user/max_user_namespaces",
            "user.max_user_namespaces",
        ),
    ] {
        if std::fs::read_to_string(file).is_ok_and(|v| v.trim() == "0") {
            return Err(format!(
                "{setting} = 0: unprivileged users may not create user namespaces here"
            ));
        }
    }
    // The kernel's own answer, whatever forbids it (seccomp in a container
    // sandbox, AppArmor's apparmor_restrict_unprivileged_userns, ...).
    let probe = run_bounded(
        user_command(uid, gid, Path::new("/"), "unshare").args([
            "--user",
            "--map-root-user",
            "true",
        ]),
        CLI_LIMIT,
    );
    if !probe.status.success() {
        let apparmor =
            std::fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
                .is_ok_and(|v| v.trim() == "1");
        return Err(format!(
            "{USER} cannot create a user namespace (unshare --user: {}){}",
            last_error_line(&probe),
            if apparmor {
                "; kernel.apparmor_restrict_unprivileged_userns = 1"
            } else {
                ""
            }
        ));
    }
    Ok((uid, gid))
}

/// `setpriv` to the user, with a cleared environment rebuilt to point
/// inside `dir` only: never a real user's /run/user/UID or home.
fn user_command(uid: u32, gid: u32, dir: &Path, program: &str) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
        .args(["--clear-groups", "--", program])
        .env_clear()
        .env("PATH", PATH)
        .env("USER", USER)
        .env("LOGNAME", USER)
        .env("HOME", dir.join("home"))
        .env("XDG_RUNTIME_DIR", dir.join("xdg-run"))
        .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
        .env("XDG_DATA_HOME", dir.join("xdg-data"))
        .env("TMPDIR", dir.join("tmp"))
        .current_dir(if dir.join("home").is_dir() {
            dir.join("home")
        } else {
            PathBuf::from("/")
        })
        .stdin(Stdio::null());
    command
}

fn write_config(dir: &Path) {
    for sub in STATE_DIRS {
        std::fs::create_dir_all(dir.join(sub)).expect("create podman state dir");
    }
    std::fs::create_dir_all(dir.join("xdg-run").join("podman")).expect("create socket dir");
    // Podman insists that XDG_RUNTIME_DIR is private, as /run/user/UID is.
    for private in [dir.to_path_buf(), dir.join("xdg-run")] {
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))
            .expect("chmod 0700");
    }
    let path = |sub: &str| dir.join(sub).display().to_string();
    let mut conf = String::from("[containers]\n");
    // No network namespace setup: no slirp4netns or pasta, no firewall rules.
    conf.push_str("netns = \"none\"\n");
    conf.push_str("\n[engine]\n");
    conf.push_str("cgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n");
    conf.push_str("lock_type = \"file\"\n");
    conf.push_str(&format!("tmp_dir = \"{}\"\n", path("tmp")));
    conf.push_str(&format!("image_copy_tmp_dir = \"{}\"\n", path("tmp")));
    if let Some(runtime) = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    {
        // As the root harness: crun 1.8 refuses hybrid cgroup hosts.
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
        "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n\n[storage.options.vfs]\nignore_chown_errors = \"true\"\n",
        path("root"),
        path("run")
    );
    std::fs::write(dir.join("storage.conf"), storage).expect("write storage.conf");
    std::fs::write(
        dir.join("registries.conf"),
        "unqualified-search-registries = []\n",
    )
    .expect("write registries.conf");
}

/// Everything under `dir` (and `dir`) to the user.
fn chown_tree(dir: &Path, uid: u32, gid: u32) {
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        if path.is_dir() && !path.is_symlink() {
            let entries = std::fs::read_dir(&path).expect("read state dir");
            todo.extend(entries.flatten().map(|e| e.path()));
        }
    }
}

fn processes_naming(dir: &Path) -> Vec<EngineProcess> {
    let Some(needle) = dir.to_str() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(needle)
            && !String::from_utf8_lossy(&environ).contains(needle)
        {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uids = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|u| u.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        found.push(EngineProcess {
            pid,
            uids,
            cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
        });
    }
    found
}

fn in_path(tool: &str) -> bool {
    PATH.split(':').any(|d| Path::new(d).join(tool).is_file())
}

/// The last line of stderr that says something (podman's own error comes
/// after its warnings about subuid ranges and shared mounts).
fn last_error_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .to_string()
}
