//! Shared parts of the end-to-end scenarios: a temp dir per scenario, a
//! policy written into it, the real `doctor` binary run against it, and real
//! child processes that are killed when the test ends.
#![allow(dead_code)]

pub mod docker;
pub mod engines;
pub mod podman;
pub mod postgres;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const DOCTOR: &str = env!("CARGO_BIN_EXE_doctor");

/// Compiled components shared by every scenario, so each test does not
/// recompile the same plugin (the cache test uses its own directory).
pub fn shared_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache")
}

pub struct Scenario {
    pub dir: tempfile::TempDir,
}

impl Default for Scenario {
    fn default() -> Self {
        Self::new()
    }
}

impl Scenario {
    pub fn new() -> Scenario {
        Scenario {
            dir: tempfile::Builder::new()
                .prefix("doctor-e2e")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The real path of the temp dir (grants are checked against real paths).
    pub fn root(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).expect("canonical temp dir")
    }

    pub fn policy_path(&self) -> PathBuf {
        self.path("policy.toml")
    }

    pub fn journal_path(&self) -> PathBuf {
        self.path("journal.db")
    }

    /// Write `policy.toml`: a `[doctor]` section pointing at this scenario's
    /// journal, plus `doctor_extra` lines in that section, then `body`.
    pub fn policy_with(&self, doctor_extra: &str, body: &str) -> PathBuf {
        let text = format!(
            "[doctor]\njournal = {:?}\ncache_dir = {:?}\nplugin_dirs = [{:?}]\nlock_wait = \"2s\"\nfix_lock = {:?}\n{doctor_extra}\n\n{body}",
            self.journal_path().display().to_string(),
            shared_cache().display().to_string(),
            self.path("plugins").display().to_string(),
            // Each scenario its own host-wide lock, so parallel tests do not queue.
            self.path("fix.lock").display().to_string(),
        );
        std::fs::create_dir_all(self.path("plugins")).expect("plugins dir");
        std::fs::write(self.policy_path(), text).expect("write policy");
        self.policy_path()
    }

    pub fn policy(&self, body: &str) -> PathBuf {
        self.policy_with("", body)
    }

    /// Run `doctor ARGS --policy <this policy>`.
    pub fn doctor(&self, args: &[&str]) -> Output {
        let policy = self.policy_path();
        let mut cmd = Command::new(DOCTOR);
        cmd.args(args)
            .arg("--policy")
            .arg(&policy)
            .env("DOCTOR_LOG", "warn");
        cmd.output().expect("run doctor")
    }

    /// Run with `--format json`; the exit code and the parsed document.
    pub fn doctor_json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        let out = self.doctor(&all);
        let code = out.status.code().unwrap_or(-1);
        let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "doctor {args:?} did not print JSON ({e}); exit {code}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (code, doc)
    }

    pub fn journal(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.journal_path()).expect("open journal")
    }

    /// pid-file-stop watching one stale PID file `NAME.pid` per name (each
    /// finding keyed `NAME:stale-pid-file`), allowed to remove them.
    pub fn stale_pid_policy(&self, doctor_extra: &str, plugin_extra: &str, names: &[&str]) {
        let root = self.root().display().to_string();
        let mut targets = String::new();
        for name in names {
            std::fs::write(self.path(&format!("{name}.pid")), "999999999\n")
                .expect("write PID file");
            targets.push_str(&format!(
                "\n[[plugins.pid-file-stop.config.targets]]\nname = \"{name}\"\npid_file = \"{root}/{name}.pid\"\npattern = \"^never$\"\n"
            ));
        }
        self.policy_with(
            doctor_extra,
            &format!(
                "[plugins.pid-file-stop]\n{plugin_extra}\ngrants.processes = true\ngrants.files = [\"{root}/*.pid\"]\ngrants.files_remove = [\"{root}/*.pid\"]\n{targets}"
            ),
        );
    }

    /// sqlite-chunk-reset over the SQLite file `db` (named `cluster`),
    /// allowed to write it; `grants` and `config` are more of the plugin's
    /// grant and config lines.
    pub fn chunk_reset_policy(&self, db: &Path, grants: &str, config: &str) {
        self.policy(&format!(
            r#"
[databases.cluster]
path = {db:?}

[plugins.sqlite-chunk-reset]
grants.processes = true
grants.sqlite = ["cluster"]
grants.sqlite_write = ["cluster"]
{grants}

[plugins.sqlite-chunk-reset.config]
db = "cluster"
{config}
"#,
            db = db.display().to_string()
        ));
    }

    /// Copy a test plugin component into this scenario's plugin directory.
    /// A stale PID file, and the pid-file-stop table that reports it: the
    /// bystander that hostile plugins run beside, whose finding must stay.
    pub fn bystander(&self) -> String {
        std::fs::write(self.path("stale.pid"), "999999999\n").expect("write stale.pid");
        let root = self.root().display().to_string();
        format!(
            r#"
[plugins.pid-file-stop]
grants.processes = true
grants.files = ["{root}/stale.pid"]
config = {{ targets = [{{ name = "w", pid_file = "{root}/stale.pid", pattern = "^never-matches$" }}] }}
"#
        )
    }

    pub fn install_plugin(&self, name: &str, wasm: &Path) {
        std::fs::create_dir_all(self.path("plugins")).expect("plugins dir");
        std::fs::copy(wasm, self.path("plugins").join(format!("{name}.wasm")))
            .expect("copy plugin");
    }
}

/// The findings of a JSON report for one plugin.
pub fn findings<'a>(doc: &'a serde_json::Value, plugin: &str) -> Vec<&'a serde_json::Value> {
    doc["findings"]
        .as_array()
        .map(|a| a.iter().filter(|f| f["plugin"] == plugin).collect())
        .unwrap_or_default()
}

pub fn finding<'a>(
    doc: &'a serde_json::Value,
    plugin: &str,
    key: &str,
) -> Option<&'a serde_json::Value> {
    findings(doc, plugin).into_iter().find(|f| f["key"] == key)
}

pub fn plugin_summary<'a>(doc: &'a serde_json::Value, plugin: &str) -> &'a serde_json::Value {
    doc["plugins"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == plugin))
        .unwrap_or(&serde_json::Value::Null)
}

/// A child process, in a process group of its own, killed with everything
/// it started (and reaped) when dropped: a launcher's or a respawner's
/// children must not outlive the test, adopted by init.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    /// Spawn `argv` and wait until it has exec'd (its /proc cmdline is ours no more).
    pub fn spawn(argv: &[&str]) -> Proc {
        use std::os::unix::process::CommandExt as _;
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
        let proc = Proc { child };
        proc.wait_for_cmdline(argv[0]);
        proc
    }

    /// A shell process that ignores SIGTERM, then sleeps.
    pub fn ignoring_term(tag: &str) -> Proc {
        Self::spawn(&[
            "sh",
            "-c",
            &format!("trap '' TERM; while :; do sleep 0.1; done # {tag}"),
        ])
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_for_cmdline(&self, program: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let cmdline =
                std::fs::read(format!("/proc/{}/cmdline", self.pid())).unwrap_or_default();
            let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            if first.ends_with(program.as_bytes()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("{program} (pid {}) never exec'd", self.pid());
    }

    /// True while the process runs (not exited, not a zombie).
    pub fn running(&mut self) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return false;
        }
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("X");
        state != "Z" && state != "X" && !stat.is_empty()
    }

    /// Reap the child if it has exited; its exit status if so.
    pub fn reap(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Build the hostile plugins in tests/hostile (once per test binary run;
/// cargo's own lock serialises concurrent builds) and return the wasm dir.
pub fn test_plugins() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("workspace root")
                .to_path_buf();
            // Beside the host's artifacts: CARGO_TARGET_TMPDIR is <target dir>/tmp.
            let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .expect("target dir")
                .join("plugins");
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "build",
                    "--release",
                    "--target",
                    "wasm32-wasip2",
                    "--manifest-path",
                ])
                .arg(root.join("tests/hostile/Cargo.toml"))
                .env("CARGO_TARGET_DIR", &target)
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .status()
                .expect("run cargo for the test plugins");
            assert!(status.success(), "building tests/hostile failed");
            target.join("wasm32-wasip2").join("release")
        })
        .clone()
}
