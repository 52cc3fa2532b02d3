//! `doctor demo [--keep]`: the incidents the built-in plugins exist for
//! (docs/plugins/), built for real in a private temp dir, then check →
//! plan → fix → re-check → the journal's story. Everything it starts is its own (pid + start time recorded at
//! spawn) and stopped at the end; the temp dir goes too unless `--keep`.
//!
//! The doctor never sees its own descendants as instances (a guard no
//! policy can switch off), so the demo's processes are started through a
//! shell that exits at once: they are the shell's orphans, not ours.
//!
//! They stop at TERM, as most processes do, except the stale port holder,
//! which ignores TERM as a hung instance does: the fix shows both paths.

use crate::journal::{query, Journal};
use crate::pipeline::{self, Mode, RunOptions};
use crate::report::{RunReport, EXIT_CRITICAL, EXIT_OK};
use anyhow::Context as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the demo may leave open at the end: findings it says it cannot fix.
const UNFIXABLE_PLUGINS: &[&str] = &["container-caps-checker"];

/// `outln!` that survives a closed stdout (`doctor demo | head`): the demo
/// goes on, so that it still stops its processes and removes its files, and
/// exits 141 only after that.
macro_rules! say {
    ($($arg:tt)*) => { say(&format!($($arg)*)) };
}

static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

fn say(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if !STDOUT_GONE.load(Ordering::Relaxed)
        && writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .is_err()
    {
        STDOUT_GONE.store(true, Ordering::Relaxed);
    }
}

/// What must be undone however the demo ends: its processes, its temp dir.
struct Cleanup {
    procs: Mutex<Processes>,
    dir: Mutex<Option<tempfile::TempDir>>,
    keep: bool,
}

impl Cleanup {
    /// Stop the processes, then remove (or keep) the dir; once.
    fn run(&self) {
        let stopped = self
            .procs
            .lock()
            .map(|mut p| p.stop_all())
            .unwrap_or_default();
        if stopped > 0 {
            say!("stopped {stopped} demo process(es) still running");
        }
        let Some(dir) = self.dir.lock().ok().and_then(|mut d| d.take()) else {
            return;
        };
        if self.keep {
            let path = dir.keep();
            say!(
                "\nkept {} (its processes are stopped); explore it with:",
                path.display()
            );
            say!("  doctor journal --policy {}/policy.toml", path.display());
            say!("  doctor check --policy {}/policy.toml", path.display());
        } else {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                errln!("doctor: removing {}: {e}", path.display());
            }
        }
    }
}

pub fn run(keep: bool) -> anyhow::Result<i32> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("doctor-demo-")
        .tempdir()
        .context("creating the demo's temp dir")?;
    let root = std::fs::canonicalize(dir.path()).context("resolving the demo's temp dir")?;
    let cleanup = Arc::new(Cleanup {
        procs: Mutex::new(Processes::default()),
        dir: Mutex::new(Some(dir)),
        keep,
    });
    clean_up_on_signals(cleanup.clone())?;
    let result = demo(&root, &cleanup.procs);
    // Whatever happened, what the demo started is stopped.
    cleanup.run();
    let code = result?;
    say!(
        "demo finished in {}",
        crate::report::seconds(started.elapsed().as_millis() as u64)
    );
    if STDOUT_GONE.load(Ordering::Relaxed) {
        std::process::exit(141);
    }
    Ok(code)
}

/// Ctrl-C, TERM or HUP: clean up, then exit as killed by it. The signals are
/// blocked in every thread (set before any other starts) and taken by one;
/// the demo's processes start with them unblocked (`Processes::start`).
/// (They ignore Ctrl-C: a shell's background jobs do.)
fn clean_up_on_signals(cleanup: Arc<Cleanup>) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let signals = SigSet::from_iter([Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP]);
    signals
        .thread_block()
        .context("blocking signals for the demo's cleanup")?;
    std::thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            cleanup.run();
            std::process::exit(128 + signal as i32);
        }
    });
    Ok(())
}

fn demo(root: &Path, procs: &Mutex<Processes>) -> anyhow::Result<i32> {
    say!(
        "doctor demo: the incidents doctor exists for, built in {}\n",
        root.display()
    );
    let sections = vec![
        chunk_table(root)?,
        job_table(root)?,
        pid_files(root, procs)?,
        port_holder(root, procs)?,
    ];
    let skipped = container_skipped();
    let policy = root.join("policy.toml");
    std::fs::write(&policy, policy_text(root, &sections))
        .with_context(|| format!("writing {}", policy.display()))?;
    for s in &sections {
        say!("  built: {}", s.story);
    }
    say!("  skipped: container-caps-checker — {skipped}");

    step("1. doctor check: what is wrong (changes nothing)");
    show(&execute(&policy, Mode::Check)?);
    step("2. doctor fix --dry-run: the plan, as fix will meet it (changes nothing)");
    show(&execute(&policy, Mode::Fix { dry_run: true })?);
    step("3. doctor fix: apply the plan, then re-check each plugin");
    show(&execute(&policy, Mode::Fix { dry_run: false })?);
    step("4. doctor check: the host after the fix");
    let after = execute(&policy, Mode::Check)?;
    show(&after);
    step("5. doctor journal: the story the journal tells");
    story(&root.join("journal.db"))?;

    let left: Vec<String> = after
        .findings
        .iter()
        .filter(|f| {
            f.status.is_open()
                && f.severity != crate::findings::Severity::Info
                && !UNFIXABLE_PLUGINS.contains(&f.plugin.as_str())
        })
        .map(|f| format!("{} {}", f.plugin, f.key))
        .collect();
    if left.is_empty() {
        say!("\nall clean: every incident was found, fixed and re-checked.");
        Ok(EXIT_OK)
    } else {
        say!("\nstill open after the fix: {}", left.join(", "));
        Ok(EXIT_CRITICAL)
    }
}

fn step(title: &str) {
    say!("\n== {title}");
}

fn execute(policy: &Path, mode: Mode) -> anyhow::Result<RunReport> {
    let opts = RunOptions {
        policy: policy.to_path_buf(),
        journal: None,
        plugins: Vec::new(),
        mode,
        override_flap_breaker: false,
        record: None,
    };
    pipeline::execute(&opts).map_err(|e| anyhow::anyhow!("{e}"))
}

fn show(report: &RunReport) {
    say!(
        "{}",
        crate::report::for_stdout(&report.to_human(true)).trim_end()
    );
}

/// Each run, what it found and what its actions did, from the journal.
fn story(journal: &Path) -> anyhow::Result<()> {
    let journal = Journal::open_read_only(journal)?;
    let mut runs = query::runs(journal.connection(), 20, None)?;
    runs.sort_by_key(|r| r.id);
    for run in runs {
        let Some(detail) = query::show_run(journal.connection(), run.id)? else {
            continue;
        };
        let count = |items: &[serde_json::Value], field: &str| {
            let mut counts = std::collections::BTreeMap::<String, usize>::new();
            for item in items {
                *counts
                    .entry(item[field].as_str().unwrap_or("?").to_string())
                    .or_default() += 1;
            }
            counts
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let actions = if detail.actions.is_empty() {
            "no actions".to_string()
        } else {
            format!("actions: {}", count(&detail.actions, "outcome"))
        };
        say!(
            "  run #{} {:<8} exit {}  findings: {}; {actions}",
            run.id,
            run.mode,
            run.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            count(&detail.observations, "status"),
        );
    }
    Ok(())
}

/// One incident: its story line and its part of the policy.
struct Section {
    story: String,
    policy: String,
}

fn policy_text(root: &Path, sections: &[Section]) -> String {
    let mut text = format!(
        "# Written by `doctor demo`: every path is inside this directory.\n[doctor]\njournal = {:?}\ncache_dir = {:?}\nfix_lock = {:?}\nlock_wait = \"10s\"\n",
        root.join("journal.db").display().to_string(),
        root.join("cache").display().to_string(),
        root.join("fix.lock").display().to_string(),
    );
    for s in sections {
        text.push('\n');
        text.push_str(&s.policy);
    }
    text
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// A pid that was just used and is free now: a worker that died.
fn dead_pid() -> anyhow::Result<u32> {
    let mut child = Command::new("true")
        .spawn()
        .context("running `true` for a dead worker's pid")?;
    let pid = child.id();
    child.wait()?;
    Ok(pid)
}

/// sqlite-chunk-reset: a coordinator crashed; 3 chunks say `running` on a
/// worker that is dead.
fn chunk_table(root: &Path) -> anyhow::Result<Section> {
    // The demo's processes run as this user: the grant reaches no further.
    let uid = nix::unistd::geteuid().as_raw();
    let db = root.join("chunks.db");
    let worker = dead_pid()?;
    let conn =
        rusqlite::Connection::open(&db).with_context(|| format!("creating {}", db.display()))?;
    conn.execute_batch(&format!(
        "CREATE TABLE chunks (id INTEGER PRIMARY KEY, status TEXT NOT NULL, assigned_worker TEXT, started_at INTEGER);
         INSERT INTO chunks VALUES (1, 'running', '{worker}', {t}), (2, 'running', '{worker}', {t}), (3, 'running', '{worker}', {t}),
                                   (4, 'pending', NULL, NULL), (5, 'complete', NULL, NULL);",
        t = now_s() - 600
    ))?;
    Ok(Section {
        story: format!("chunks.db: 3 chunks `running` on worker pid {worker}, which is dead (sqlite-chunk-reset)"),
        policy: format!(
            "[databases.chunks]\npath = {:?}\n\n[plugins.sqlite-chunk-reset]\ngrants.processes = {{ user = {uid} }}\ngrants.sqlite = [\"chunks\"]\ngrants.sqlite_write = [\"chunks\"]\nconfig = {{ db = \"chunks\", table = \"chunks\", worker_column = \"assigned_worker\", worker_match = \"doctor-demo-worker\" }}\n",
            db.display().to_string()
        ),
    })
}

/// job-health: a training server restarted; jobs still `running` for dead
/// processes (one has used up its attempts), one `pending` job nobody picks up.
fn job_table(root: &Path) -> anyhow::Result<Section> {
    // The demo's processes run as this user: the grant reaches no further.
    let uid = nix::unistd::geteuid().as_raw();
    let db = root.join("jobs.db");
    let (a, b) = (dead_pid()?, dead_pid()?);
    let conn =
        rusqlite::Connection::open(&db).with_context(|| format!("creating {}", db.display()))?;
    let now = now_s();
    conn.execute_batch(&format!(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT NOT NULL, pid INTEGER, updated_at INTEGER, attempts INTEGER NOT NULL DEFAULT 0, error TEXT);
         INSERT INTO jobs VALUES (1, 'running', {a}, {now}, 0, NULL), (2, 'running', {b}, {now}, 3, NULL),
                                 (3, 'pending', NULL, {old}, 0, NULL), (4, 'completed', NULL, {now}, 1, NULL);",
        old = now - 3 * 3600
    ))?;
    Ok(Section {
        story: format!("jobs.db: jobs 1 and 2 `running` for dead pids {a} and {b} (job 2 out of attempts), job 3 `pending` for 3 h (job-health)"),
        policy: format!(
            "[databases.jobs]\npath = {:?}\n\n[plugins.job-health]\ngrants.processes = {{ user = {uid} }}\ngrants.sqlite = [\"jobs\"]\ngrants.sqlite_write = [\"jobs\"]\nconfig = {{ db = \"jobs\", table = \"jobs\", worker_column = \"pid\", updated_column = \"updated_at\", reason_column = \"error\", stale_after = \"2h\", on_stale = \"requeue\", on_orphaned = \"requeue\", max_attempts = 3 }}\n",
            db.display().to_string()
        ),
    })
}

/// pid-file-stop: a Stop button said "stopped", yet two instances of `web`
/// run; and a PID file of a nightly job that died.
fn pid_files(root: &Path, procs: &Mutex<Processes>) -> anyhow::Result<Section> {
    // A command line no other process on this host has.
    let tag = format!("86400.{}", std::process::id());
    let first = start(procs, &["sleep", &tag], root)?;
    let second = start(procs, &["sleep", &tag], root)?;
    std::fs::write(root.join("web.pid"), format!("{first}\n"))?;
    let dead = dead_pid()?;
    std::fs::write(root.join("nightly-report.pid"), format!("{dead}\n"))?;
    let uid = nix::unistd::geteuid().as_raw();
    let pattern = format!("^sleep {}$", regex::escape(&tag));
    let dir = root.display().to_string();
    Ok(Section {
        story: format!("web.pid names pid {first}, and a second instance (pid {second}) runs too; nightly-report.pid names dead pid {dead} (pid-file-stop)"),
        policy: format!(
            r#"[plugins.pid-file-stop]
grants.processes = {{ user = {uid} }}
grants.files = ["{dir}/*.pid"]
grants.files_remove = ["{dir}/*.pid"]
grants.signal = {{ match = [{pattern:?}], uids = [{uid}] }}

[[plugins.pid-file-stop.config.targets]]
name = "web"
pid_file = "{dir}/web.pid"
pattern = {pattern:?}
scope = {{ user = {uid} }}
desired = "stopped"
grace_ms = 2000

[[plugins.pid-file-stop.config.targets]]
name = "nightly-report"
pid_file = "{dir}/nightly-report.pid"
pattern = "^doctor-demo-nightly-report$"
"#
        ),
    })
}

/// port-9403-freer: last deploy's instance still listens on the service's
/// port (a free loopback port stands in for 9403, which may be in use here).
fn port_holder(root: &Path, procs: &Mutex<Processes>) -> anyhow::Result<Section> {
    // The demo's processes run as this user: the grant reaches no further.
    let uid = nix::unistd::geteuid().as_raw();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free loopback port")?
        .port();
    let doctor = std::env::current_exe().context("locating the doctor binary")?;
    let doctor = doctor.display().to_string();
    let pid = start(procs, &[&doctor, "demo-listen", &port.to_string()], root)?;
    wait_listening(port)?;
    Ok(Section {
        story: format!("port {port}: held by pid {pid}, a stale instance that ignores TERM, where `demo-api --release current` should listen (port-9403-freer)"),
        policy: format!(
            "[plugins.port-9403-freer]\ngrants.sockets = true\ngrants.processes = {{ user = {uid} }}\ngrants.signal = {{ match = [\"demo-listen {port}$\"] }}\nconfig = {{ ports = [{{ port = {port}, expect = {{ command = \"demo-api --release current\" }} }}], grace_ms = 2000, deadline_ms = 5000 }}\n"
        ),
    })
}

fn wait_listening(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the demo's listener never listened on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The container incident needs an engine with an image to create from; the
/// demo does not pull images or start an engine, so it says why it skips.
fn container_skipped() -> String {
    let sockets = ["/run/podman/podman.sock", "/var/run/docker.sock"];
    match sockets.iter().find(|s| std::os::unix::net::UnixStream::connect(s).is_ok()) {
        None => format!("no container engine answers on {} (the demo starts none)", sockets.join(" or ")),
        Some(socket) => format!(
            "an engine answers on {socket}, but the demo creates no containers on a real engine (it would need an image and would touch the engine's state); see docs/plugins/container-caps-checker.md"
        ),
    }
}

/// `doctor demo-listen PORT`: the stale instance that holds the port. Hung,
/// as stale instances can be: it ignores TERM (from before it listens, so
/// before the demo builds on it), and the fix has to KILL it.
pub fn listen(port: u16) -> anyhow::Result<i32> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_IGN installs no handler code that could run.
    unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) }.context("ignoring TERM")?;
    let _listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn start(procs: &Mutex<Processes>, argv: &[&str], dir: &Path) -> anyhow::Result<u32> {
    procs
        .lock()
        .map_err(|_| anyhow::anyhow!("the demo's process list is poisoned"))?
        .start(argv, dir)
}

/// The demo's processes, each named by pid and start time.
#[derive(Default)]
struct Processes {
    started: Vec<(u32, u64, String)>,
}

impl Processes {
    /// Start `argv` as an orphan (see the module comment) with `dir` as its
    /// working directory, and wait until it runs `argv[0]`.
    fn start(&mut self, argv: &[&str], dir: &Path) -> anyhow::Result<u32> {
        let quoted: Vec<String> = argv
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let script = format!("{} </dev/null >/dev/null 2>&1 & echo $!", quoted.join(" "));
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(&script)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        // The demo blocks INT/TERM/HUP for its cleanup (`clean_up_on_signals`)
        // and a child inherits the mask: a process of the demo's would sit
        // out every TERM and show each stop as a KILL.
        // SAFETY: between fork and exec only pthread_sigmask runs, which is
        // async-signal-safe and allocates nothing.
        unsafe {
            sh.pre_exec(|| {
                nix::sys::signal::SigSet::empty()
                    .thread_set_mask()
                    .map_err(std::io::Error::from)
            });
        }
        let out = sh.output().context("running sh")?;
        let pid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .with_context(|| format!("starting {}", argv.join(" ")))?;
        let want = PathBuf::from(argv[0]);
        let want = want
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            if String::from_utf8_lossy(first).ends_with(&want) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} (pid {pid}) never started",
                argv.join(" ")
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let start = crate::facts::processes::start_time(pid)
            .with_context(|| format!("reading the start time of pid {pid}"))?;
        self.started.push((pid, start, argv.join(" ")));
        Ok(pid)
    }

    /// KILL every demo process that still runs as itself (same pid and start
    /// time: a reused pid is someone else's); how many there were.
    fn stop_all(&mut self) -> usize {
        let mut stopped = 0;
        for (pid, start, _) in self.started.drain(..) {
            if !alive(pid, start) {
                continue;
            }
            if nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
            {
                stopped += 1;
                let deadline = Instant::now() + Duration::from_secs(5);
                while alive(pid, start) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        stopped
    }
}

/// The process `(pid, start)` runs (a zombie has ended; its reaper is init).
fn alive(pid: u32, start: u64) -> bool {
    crate::facts::processes::get(pid).is_some_and(|p| p.id.start_time == start && p.state != 'Z')
}
