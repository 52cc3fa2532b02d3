//! `cargo bench -p doctor --bench incidents`: issue 25's targets table
//! (issue 13's, with its rows measured the way a user meets them).
//!
//! Builds the fixtures (the five incidents, with a private Podman engine when
//! `podman` is installed; a 10,000-process host of spawned `sleep` children;
//! a 1,000,000-row chunk table), then times, side by side in one run:
//! the real `doctor` (release), the *floor* (this same binary re-executed in
//! floor mode: the bare reads of the same facts in Rust, no plugins, no
//! journal) and the peers present on the machine (`ps`, `ss`, `sqlite3`, the
//! operator's shell procedure, `monit` where installed). Each command is a
//! fresh process; wall time, CPU (user + system, from `wait4`) and peak RSS
//! are taken per run. The commands of one row run in interleaved rounds
//! (each once per round, the order rotating) and the medians of
//! `INCIDENTS_BENCH_ITERS` (default 5) rounds are printed (more for the cheap
//! rows, 3 for the slow ones). `DOCTOR_BENCH_BIN` measures another doctor.
//!
//! Sections can be skipped for a quick look: `INCIDENTS_BENCH_SKIP=10k,1m,podman`.

#[allow(dead_code, unused_imports)]
#[path = "../../tests/support/podman.rs"]
#[allow(clippy::duplicated_attributes)]
mod podman;

#[path = "common/chunks.rs"]
mod chunks;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// The doctor measured: this build's, or `DOCTOR_BENCH_BIN` (another build,
/// e.g. the branch point's, measured by this same bench for a before/after).
fn doctor_bin() -> PathBuf {
    std::env::var_os("DOCTOR_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_doctor")))
}
/// Set in the environment of a re-executed copy of this binary: do the floor's reads and exit.
const FLOOR_ENV: &str = "DOCTOR_BENCH_FLOOR";
/// Set (to a directory) for the copy re-executed inside a private pid
/// namespace: run the 10k-process section there and print its rows.
const PIDNS_ENV: &str = "DOCTOR_BENCH_PIDNS";
/// Given to that copy: the engine's (proxy) socket, for the five incidents at 10k.
const PIDNS_ENGINE_ENV: &str = "DOCTOR_BENCH_PIDNS_ENGINE";
/// Another doctor binary measured in the same interleaved rounds as this
/// build on the five incidents (before/after a change in one sitting).
const BASELINE_ENV: &str = "DOCTOR_BENCH_BASELINE";
const SLEEPERS: usize = 10_000;
const ROWS: i64 = 1_000_000;
const ORPHANS: i64 = 10_000;
const IMAGE: &str = "localhost/doctor-bench:latest";

fn main() {
    if let Ok(spec) = std::env::var(FLOOR_ENV) {
        floor::run(&spec);
        return;
    }
    if let Ok(root) = std::env::var(PIDNS_ENV) {
        inside_pid_namespace(Path::new(&root));
        return;
    }
    let iterations = env_usize("INCIDENTS_BENCH_ITERS", 5);
    let skip = std::env::var("INCIDENTS_BENCH_SKIP").unwrap_or_default();
    let dir = tempfile::Builder::new()
        .prefix("doctor-bench")
        .tempdir()
        .expect("temp dir");
    let mut table = Table::default();
    // Measured from a copy written in one go, as a package install writes
    // it: the linker's output sits in the page cache in small pieces and
    // costs each start ~40 more page faults (~0.3 ms) than the same bytes
    // installed. The copy is what every doctor command below runs, here and
    // in the re-executed pid-namespace section.
    let built = doctor_bin();
    let installed = dir.path().join("doctor");
    std::fs::copy(&built, &installed).expect("copy doctor");
    std::env::set_var("DOCTOR_BENCH_BIN", &installed);

    let (fixture, _listener) = Incidents::build(dir.path());
    let engine = if skip.contains("podman") || !have("podman") {
        println!(
            "podman: {}; the container part is skipped",
            if have("podman") {
                "skipped by INCIDENTS_BENCH_SKIP"
            } else {
                "not installed"
            }
        );
        None
    } else {
        Some(Engine::start(dir.path()))
    };
    incidents_rows(&mut table, &fixture, engine.as_ref(), iterations);
    // Cheap rows get more rounds: their medians move most with the machine's load.
    tick_rows(&mut table, &fixture, engine.as_ref(), iterations * 8);
    cold_rows(&mut table, &fixture, engine.as_ref(), iterations.min(3));
    if !skip.contains("10k") {
        ten_thousand_section(
            &mut table,
            &fixture,
            engine.as_ref().map(|e| e.proxy.as_path()),
            dir.path(),
            iterations.min(3),
        );
    }
    if !skip.contains("1m") {
        million_rows(&mut table, dir.path(), 3);
    }
    binary_rows(&mut table, dir.path(), &built);
    drop(engine);
    table.print(iterations);
}

// ---------------------------------------------------------------- measuring

/// One finished command: wall time, CPU (user + system) and peak RSS.
#[derive(Clone, Copy, Debug)]
struct Sample {
    wall: Duration,
    cpu: Duration,
    rss_kib: u64,
}

/// Runs `command` to completion with stdout discarded; `wait4` gives its own
/// CPU time and peak RSS (not those of any other child of the bench).
fn measure(command: &mut Command, ok: &[i32]) -> Sample {
    command.stdout(Stdio::null()).stdin(Stdio::null());
    let started = Instant::now();
    // Reaped by the wait4 below (which also gives its rusage), not by Child::wait.
    #[allow(clippy::zombie_processes)]
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let mut status = 0;
    // SAFETY: plain syscall on our own child; `usage` is a valid out-pointer.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(waited, child.id() as i32, "wait4 {command:?}");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    assert!(
        ok.contains(&code),
        "{command:?} exited {code}, expected one of {ok:?}"
    );
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Sample {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        rss_kib: usage.ru_maxrss as u64,
    }
}

/// One command of an interleaved measurement: the exit codes it may give,
/// what to do before each run (fixture reset, outside the timing), and how
/// to make the command.
struct Contender<'a> {
    ok: &'a [i32],
    before: Box<dyn FnMut() + 'a>,
    make: Box<dyn FnMut() -> Command + 'a>,
}

impl<'a> Contender<'a> {
    fn new(ok: &'a [i32], make: impl FnMut() -> Command + 'a) -> Contender<'a> {
        Contender {
            ok,
            before: Box::new(|| {}),
            make: Box::new(make),
        }
    }

    fn before(mut self, before: impl FnMut() + 'a) -> Contender<'a> {
        self.before = Box::new(before);
        self
    }
}

/// `n` rounds, each running every contender once, after one unmeasured
/// warm-up round; the order within a round rotates, so the machine's load,
/// which drifts over a run, falls on all of them alike. Medians per contender.
fn interleaved(n: usize, contenders: &mut [Contender]) -> Vec<Stats> {
    let k = contenders.len();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::with_capacity(n); k];
    for round in 0..=n {
        for i in 0..k {
            let c = &mut contenders[(round + i) % k];
            (c.before)();
            let sample = measure(&mut (c.make)(), c.ok);
            if round > 0 {
                samples[(round + i) % k].push(sample);
            }
        }
    }
    samples.into_iter().map(Stats::new).collect()
}

#[derive(Clone, Copy, Debug)]
struct Stats {
    wall: Duration,
    cpu: Duration,
    rss_kib: u64,
}

impl Stats {
    fn new(samples: Vec<Sample>) -> Stats {
        let med = |mut v: Vec<Duration>| {
            v.sort_unstable();
            v[v.len() / 2]
        };
        Stats {
            wall: med(samples.iter().map(|s| s.wall).collect()),
            cpu: med(samples.iter().map(|s| s.cpu).collect()),
            rss_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        }
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// The printed table: one row per target, plus the raw medians underneath.
#[derive(Default)]
struct Table {
    rows: Vec<[String; 4]>,
    raw: Vec<(String, Stats)>,
    /// How fixtures were made, printed above the table.
    notes: Vec<String>,
}

impl Table {
    fn says(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Rows, medians and notes as tab-separated lines, for `absorb` in the parent.
    fn emit(&self) {
        for [a, b, c, d] in &self.rows {
            println!("ROW\t{a}\t{b}\t{c}\t{d}");
        }
        for (what, s) in &self.raw {
            println!(
                "RAW\t{what}\t{}\t{}\t{}",
                s.wall.as_nanos(),
                s.cpu.as_nanos(),
                s.rss_kib
            );
        }
        for note in &self.notes {
            println!("NOTE\t{note}");
        }
    }

    fn absorb(&mut self, text: &str) {
        let nanos = |s: &str| Duration::from_nanos(s.parse().unwrap_or(0));
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["ROW", a, b, c, d] => {
                    self.rows
                        .push([a.to_string(), b.to_string(), c.to_string(), d.to_string()])
                }
                ["RAW", what, wall, cpu, rss] => self.raw.push((
                    what.to_string(),
                    Stats {
                        wall: nanos(wall),
                        cpu: nanos(cpu),
                        rss_kib: rss.parse().unwrap_or(0),
                    },
                )),
                ["NOTE", note] => self.notes.push(note.to_string()),
                _ => println!("{line}"),
            }
        }
    }

    fn row(&mut self, work: &str, measured: String, target: &str, met: bool) {
        self.rows.push([
            work.into(),
            measured,
            target.into(),
            if met {
                "met".into()
            } else {
                "**not met**".into()
            },
        ]);
    }

    fn note(&mut self, work: &str, measured: String, target: &str) {
        self.rows
            .push([work.into(), measured, target.into(), "n/a".into()]);
    }

    fn raw(&mut self, what: &str, s: Stats) -> Stats {
        eprintln!(
            "  {what}: wall {} cpu {} rss {} KiB",
            ms(s.wall),
            ms(s.cpu),
            s.rss_kib
        );
        self.raw.push((what.into(), s));
        s
    }

    fn print(&self, iterations: usize) {
        println!();
        for note in &self.notes {
            println!("{note}");
        }
        println!(
            "\n## Targets (medians of {iterations} interleaved rounds; {} for the no-engine rows, {} for the nothing-due tick, 3 for the cold cache, 10k processes and 1M rows)\n",
            iterations * 2,
            iterations * 8
        );
        println!("| work | measured | target | |");
        println!("|---|---|---|---|");
        // In the order of issue 25's table, whatever order the sections ran in.
        let mut rows: Vec<&[String; 4]> = self.rows.iter().collect();
        rows.sort_by_key(|[work, ..]| {
            ROW_ORDER
                .iter()
                .position(|p| work.starts_with(p))
                .unwrap_or(ROW_ORDER.len())
        });
        for [a, b, c, d] in rows {
            println!("| {a} | {b} | {c} | {d} |");
        }
        println!("\n## Medians\n");
        println!("| command | wall | CPU | peak RSS |");
        println!("|---|---|---|---|");
        for (what, s) in &self.raw {
            println!(
                "| {what} | {} | {} | {:.1} MiB |",
                ms(s.wall),
                ms(s.cpu),
                s.rss_kib as f64 / 1024.0
            );
        }
    }
}

/// The order of issue 25's table (row names start with these).
const ROW_ORDER: &[&str] = &[
    "five incidents, `check`, wall",
    "five incidents, `check`, CPU",
    "engine requests",
    "four incidents without an engine",
    "PID files + ports",
    "`doctor run` with nothing due",
    "first run after install",
    "fsyncs per `check`",
    "1M-row chunk table",
    "1M rows, 10,000 orphaned",
    "pid-file-stop at 10k",
    "port at 10k",
    "peak RSS",
    "stripped binary",
];

// ---------------------------------------------------------------- fixtures

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}

/// A pid that is not running now (a child that has been reaped).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait true");
    pid
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Kills its child on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The five incidents of `tests/record_replay.rs::five_incidents`: a stale
/// PID file, an orphaned chunk, an orphaned job, a port held by a stray
/// listener, and (with Podman) a container stack with the checker's findings.
struct Incidents {
    dir: PathBuf,
    pid_file: PathBuf,
    db: PathBuf,
    port: u16,
    dead: u32,
}

impl Incidents {
    fn build(root: &Path) -> (Incidents, Reaped) {
        let dir = root.join("incidents");
        std::fs::create_dir_all(&dir).expect("incidents dir");
        let pid_file = dir.join("stale.pid");
        std::fs::write(&pid_file, "999999999\n").expect("pid file");
        let dead = dead_pid();
        let db = dir.join("work.db");
        Connection::open(&db)
            .and_then(|c| {
                c.execute_batch(&format!(
                    "CREATE TABLE chunks (id INTEGER PRIMARY KEY, status TEXT NOT NULL, assigned_worker TEXT, started_at INTEGER);
                     INSERT INTO chunks VALUES (1, 'running', '{dead}', NULL), (2, 'pending', NULL, NULL), (3, 'complete', NULL, NULL);
                     CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT NOT NULL, pid TEXT, heartbeat_at INTEGER, updated_at INTEGER, attempts INTEGER NOT NULL DEFAULT 0, error TEXT);
                     INSERT INTO jobs VALUES (1, 'running', '{dead}', NULL, NULL, 0, NULL), (2, 'completed', NULL, NULL, NULL, 1, NULL);"
                ))
            })
            .expect("incident tables");
        let port = free_port();
        let listener = Command::new("python3")
            .args(["-c", &format!("import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',{port}))\ns.listen()\ntime.sleep(3600)")])
            .spawn()
            .expect("python3 listener");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the listener never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        (
            Incidents {
                dir,
                pid_file,
                db,
                port,
                dead,
            },
            Reaped(listener),
        )
    }

    /// A policy with the named parts: "pid", "chunks", "jobs", "port", "containers".
    fn policy(
        &self,
        name: &str,
        parts: &[&str],
        engine: Option<&Path>,
        cache: &Path,
        every: Option<&str>,
    ) -> PathBuf {
        let root = self.dir.display();
        let every = every
            .map(|e| format!("every = \"{e}\"\n"))
            .unwrap_or_default();
        let mut p = format!(
            "[doctor]\njournal = \"{root}/{name}.journal.db\"\ncache_dir = \"{}\"\n\n[databases.work]\npath = \"{}\"\n\n",
            cache.display(),
            self.db.display()
        );
        let socket = engine
            .map(|s| s.display().to_string())
            .unwrap_or_else(|| format!("{root}/no-engine.sock"));
        p.push_str(&format!(
            "[container_engine]\nsocket = \"{socket}\"\ntimeout = \"10s\"\n\n"
        ));
        for part in parts {
            p.push_str(&match *part {
                "pid" => format!(
                    "[plugins.pid-file-stop]\n{every}grants.processes = true\ngrants.files = [\"{root}/*.pid\"]\n\
                     config = {{ targets = [{{ name = \"w\", pid_file = \"{}\", pattern = \"^never$\" }}] }}\n\n",
                    self.pid_file.display()
                ),
                "chunks" => format!(
                    "[plugins.sqlite-chunk-reset]\n{every}grants.processes = true\ngrants.sqlite = [\"work\"]\n\
                     config = {{ db = \"work\", table = \"chunks\", worker_match = \"never\" }}\n\n"
                ),
                "jobs" => format!(
                    "[plugins.job-health]\n{every}grants.processes = true\ngrants.sqlite = [\"work\"]\n\
                     config = {{ db = \"work\", reason_column = \"error\", worker_match = \"never\" }}\n\n"
                ),
                "port" => format!(
                    "[plugins.port-9403-freer]\n{every}grants.processes = true\ngrants.sockets = true\nconfig = {{ ports = [{}] }}\n\n",
                    self.port
                ),
                "containers" => format!(
                    "[plugins.container-caps-checker]\n{every}grants.containers = true\n\
                     config = {{ names = [\"web-*\"], include_stopped = true }}\n\n"
                ),
                other => panic!("unknown part {other}"),
            });
        }
        let path = self.dir.join(format!("{name}.toml"));
        std::fs::write(&path, p).expect("policy");
        path
    }

    /// The floor's spec for these incidents (the engine's part when given).
    fn floor_spec(&self, engine: Option<&Path>) -> String {
        let mut s = format!(
            "pid={};db={};dead={};port={}",
            self.pid_file.display(),
            self.db.display(),
            self.dead,
            self.port
        );
        if let Some(sock) = engine {
            s.push_str(&format!(";engine={}", sock.display()));
        }
        s
    }

    fn reset_journal(&self, name: &str) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(self.dir.join(format!("{name}.journal.db{suffix}")));
        }
    }
}

fn doctor(mode: &str, policy: &Path) -> Command {
    doctor_from(&doctor_bin(), mode, policy)
}

fn doctor_from(bin: &Path, mode: &str, policy: &Path) -> Command {
    let mut c = Command::new(bin);
    c.args([mode, "--policy"])
        .arg(policy)
        .args(["--format", "json"])
        .env("DOCTOR_LOG", "error");
    c
}

fn floor(spec: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("own exe"));
    c.env(FLOOR_ENV, spec);
    c
}

/// A private Podman (tests/support/podman.rs) with a small stack behind a
/// counting proxy, so the requests doctor and the floor make can be counted.
struct Engine {
    _podman: podman::Podman,
    proxy: PathBuf,
    requests: Arc<AtomicUsize>,
}

impl Engine {
    fn start(root: &Path) -> Engine {
        let started = Instant::now();
        let podman = podman::Podman::start();
        podman.import_busybox(IMAGE);
        podman.create(&[
            "--name",
            "web-capdrop",
            "--cap-drop",
            "ALL",
            "-v",
            &format!("{}:/data", root.display()),
            IMAGE,
        ]);
        podman.create(&[
            "--name",
            "web-nocurl",
            "--health-cmd",
            "curl -f http://localhost/",
            "--restart",
            "no",
            IMAGE,
        ]);
        podman.create(&[
            "--name",
            "web-ok",
            "--memory",
            "64m",
            "--restart",
            "unless-stopped",
            "--health-cmd",
            "wget -q -O- http://localhost/",
            IMAGE,
        ]);
        let proxy = root.join("proxy.sock");
        let requests = Arc::new(AtomicUsize::new(0));
        spawn_proxy(&proxy, podman.socket().to_path_buf(), requests.clone());
        println!(
            "podman: private engine with 3 containers ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Engine {
            _podman: podman,
            proxy,
            requests,
        }
    }
}

/// Forwards each connection to `upstream`, counting request lines ("... HTTP/1.1\r\n").
fn spawn_proxy(at: &Path, upstream: PathBuf, count: Arc<AtomicUsize>) {
    let listener = UnixListener::bind(at).expect("bind proxy");
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = UnixStream::connect(&upstream) else {
                continue;
            };
            let (c2, s2) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            let counter = count.clone();
            std::thread::spawn(move || pump(client, server, Some(counter)));
            std::thread::spawn(move || pump(s2, c2, None));
        }
    });
}

fn pump(mut from: UnixStream, mut to: UnixStream, count: Option<Arc<AtomicUsize>>) {
    let mut buf = [0u8; 65536];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(c) = &count {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if std::env::var_os("INCIDENTS_BENCH_TRACE").is_some() {
                        for line in text
                            .lines()
                            .filter(|l| l.ends_with(" HTTP/1.1") || l.ends_with(" HTTP/1.0"))
                        {
                            eprintln!("    engine request: {line}");
                        }
                    }
                    c.fetch_add(
                        text.matches(" HTTP/1.1\r\n").count()
                            + text.matches(" HTTP/1.0\r\n").count(),
                        Ordering::Relaxed,
                    );
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

// ---------------------------------------------------------------- sections

fn incidents_rows(t: &mut Table, f: &Incidents, engine: Option<&Engine>, n: usize) {
    let cache = f.dir.join("cache");
    let four = ["pid", "chunks", "jobs", "port"];
    let socket = engine.map(|e| e.proxy.clone());
    let floor_spec = |with_engine: bool| f.floor_spec(socket.as_deref().filter(|_| with_engine));

    // No engine: the four host-side incidents.
    let policy = f.policy("four", &four, None, &cache, None);
    let stats = interleaved(
        n * 2,
        &mut [
            Contender::new(&[2], || doctor("check", &policy)).before(|| f.reset_journal("four")),
            Contender::new(&[0], || floor(&floor_spec(false))),
        ],
    );
    let d = t.raw("doctor check, 4 incidents (no engine)", stats[0]);
    let fl = t.raw("floor, 4 incidents (no engine)", stats[1]);
    t.row(
        "four incidents without an engine, check, wall vs floor",
        format!(
            "{} vs {} = {:.2}× (CPU {:.2}×)",
            ms(d.wall),
            ms(fl.wall),
            ratio(d.wall, fl.wall),
            ratio(d.cpu, fl.cpu)
        ),
        "≤ 1.3×",
        ratio(d.wall, fl.wall) <= 1.3,
    );

    if let Some(e) = engine {
        let policy = f.policy(
            "five",
            &[&four[..], &["containers"]].concat(),
            socket.as_deref(),
            &cache,
            None,
        );
        let script = shell_procedure(f, socket.as_deref());
        let baseline = std::env::var_os(BASELINE_ENV).map(PathBuf::from);
        let mut contenders = vec![
            Contender::new(&[2], || doctor("check", &policy)).before(|| f.reset_journal("five")),
            Contender::new(&[0], || floor(&floor_spec(true))),
            Contender::new(&[0], || {
                let mut c = Command::new("bash");
                c.arg(&script);
                c
            }),
        ];
        if let Some(base) = &baseline {
            contenders.push(
                Contender::new(&[2], || doctor_from(base, "check", &policy))
                    .before(|| f.reset_journal("five")),
            );
        }
        let stats = interleaved(n, &mut contenders);
        let d = t.raw("doctor check, 5 incidents", stats[0]);
        let fl = t.raw("floor, 5 incidents", stats[1]);
        let sh = t.raw("operator's shell procedure, 5 incidents", stats[2]);
        if let Some(base) = stats.get(3) {
            let b = t.raw("baseline doctor check, 5 incidents", *base);
            t.row(
                "five incidents, `check`, wall vs the baseline build (`DOCTOR_BENCH_BASELINE`)",
                format!(
                    "{:+.1} % ({} vs {}; CPU {} vs {})",
                    (ratio(d.wall, b.wall) - 1.0) * 100.0,
                    ms(d.wall),
                    ms(b.wall),
                    ms(d.cpu),
                    ms(b.cpu)
                ),
                "≤ +5 % (issue 24: plugin code in workers)",
                ratio(d.wall, b.wall) <= 1.05,
            );
        }
        t.row(
            "five incidents, `check`, wall vs floor",
            format!(
                "{:.2}× ({} vs {}; the operator's shell procedure {})",
                ratio(d.wall, fl.wall),
                ms(d.wall),
                ms(fl.wall),
                ms(sh.wall)
            ),
            "≤ 1.05× (keep)",
            ratio(d.wall, fl.wall) <= 1.05,
        );
        t.row(
            "five incidents, `check`, CPU vs floor",
            format!(
                "{:.2}× ({} vs {}; the shell procedure {})",
                ratio(d.cpu, fl.cpu),
                ms(d.cpu),
                ms(fl.cpu),
                ms(sh.cpu)
            ),
            "≤ 1.5×",
            ratio(d.cpu, fl.cpu) <= 1.5,
        );
        e.requests.store(0, Ordering::Relaxed);
        f.reset_journal("five");
        measure(&mut doctor("check", &policy), &[2]);
        let by_doctor = e.requests.swap(0, Ordering::Relaxed);
        measure(&mut floor(&floor_spec(true)), &[0]);
        let by_floor = e.requests.swap(0, Ordering::Relaxed);
        t.row(
            "engine requests for the five incidents",
            format!("{by_doctor} (floor {by_floor})"),
            "the floor's, concurrently, keep-alive",
            by_doctor <= by_floor,
        );
    } else {
        t.note(
            "five incidents, `check`, wall vs floor",
            "skipped: no podman".into(),
            "≤ 1.05× (keep)",
        );
        t.note(
            "five incidents, `check`, CPU vs floor",
            "skipped: no podman".into(),
            "≤ 1.5×",
        );
    }

    let policy = f.policy("pidport", &["pid", "port"], None, &cache, None);
    let check =
        || Contender::new(&[2], || doctor("check", &policy)).before(|| f.reset_journal("pidport"));
    if have("monit") {
        let rc = monit_rc(f);
        let stats = interleaved(
            n,
            &mut [
                check(),
                Contender::new(&[0, 1, 3], || {
                    let mut c = Command::new("monit");
                    c.arg("-c").arg(&rc).arg("validate");
                    c
                }),
            ],
        );
        let d = t.raw("doctor check, PID file + port", stats[0]);
        let m = t.raw("monit validate, PID file + port", stats[1]);
        t.row(
            "PID files + ports vs `monit validate`",
            format!(
                "{:.2}× ({} vs {})",
                ratio(d.wall, m.wall),
                ms(d.wall),
                ms(m.wall)
            ),
            "≤ 1.0×",
            ratio(d.wall, m.wall) <= 1.0,
        );
    } else {
        let d = t.raw(
            "doctor check, PID file + port",
            interleaved(n, &mut [check()])[0],
        );
        t.note(
            "PID files + ports vs `monit validate`",
            format!("monit not installed; doctor {}", ms(d.wall)),
            "≤ 1.0×",
        );
    }
}

/// The operator's procedure before doctor: sqlite3, kill -0, ss, pgrep, curl + jq.
fn shell_procedure(f: &Incidents, engine: Option<&Path>) -> PathBuf {
    let mut s = format!(
        "set -u\npid=$(cat {pid}); kill -0 \"$pid\" 2>/dev/null || echo stale\npgrep -f '^never$' >/dev/null || true\n\
         for w in $(sqlite3 {db} \"SELECT assigned_worker FROM chunks WHERE status = 'running'\"); do kill -0 \"$w\" 2>/dev/null || echo orphan; done\n\
         for w in $(sqlite3 {db} \"SELECT pid FROM jobs WHERE status IN ('running','pending','queued')\"); do kill -0 \"$w\" 2>/dev/null || echo orphan; done\n\
         ss -ltnpH \"sport = :{port}\" >/dev/null\n",
        pid = f.pid_file.display(),
        db = f.db.display(),
        port = f.port
    );
    if let Some(sock) = engine {
        s.push_str(&format!(
            "for id in $(curl -s --unix-socket {sock} 'http://d/containers/json?all=true' | jq -r '.[].Id'); do\n\
             curl -s --unix-socket {sock} \"http://d/containers/$id/json\" | jq -r '.HostConfig.CapDrop, .Config.Healthcheck.Test, .HostConfig.RestartPolicy.Name' >/dev/null\n\
             curl -s -o /dev/null -I --unix-socket {sock} \"http://d/containers/$id/archive?path=/usr/bin/curl\"\ndone\n",
            sock = sock.display()
        ));
    }
    let path = f.dir.join("procedure.sh");
    std::fs::write(&path, s).expect("procedure script");
    path
}

/// The same PID file and port for monit: its id and state files in the
/// bench's directory (not the user's home or /var/lib/monit).
fn monit_rc(f: &Incidents) -> PathBuf {
    let rc = f.dir.join("monitrc");
    std::fs::write(
        &rc,
        format!(
            "set daemon 60\nset idfile {dir}/monit.id\nset statefile {dir}/monit.state\n\
             check process w with pidfile {pid}\ncheck host local with address 127.0.0.1\n  if failed port {port} type tcp then alert\n",
            dir = f.dir.display(),
            pid = f.pid_file.display(),
            port = f.port
        ),
    )
    .expect("monitrc");
    std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod monitrc");
    rc
}

/// The five-incident policy (four without an engine) with `every = "1h"`
/// on each plugin, its journal warmed by one check: first the fsyncs of ten
/// more checks, then `doctor run` against that journal, where every plugin
/// ran within the hour, so nothing is due.
fn tick_rows(t: &mut Table, f: &Incidents, engine: Option<&Engine>, n: usize) {
    let cache = f.dir.join("cache");
    let socket = engine.map(|e| e.proxy.clone());
    let parts: &[&str] = if engine.is_some() {
        &["pid", "chunks", "jobs", "port", "containers"]
    } else {
        &["pid", "chunks", "jobs", "port"]
    };
    let incidents = if engine.is_some() {
        "five incidents"
    } else {
        "four incidents (no podman)"
    };
    let policy = f.policy("tick", parts, socket.as_deref(), &cache, Some("1h"));
    f.reset_journal("tick");
    measure(&mut doctor("check", &policy), &[2]);
    fsync_rows(t, &policy, incidents);

    // The tick must find nothing due, or it measures a check.
    let out = doctor("run", &policy)
        .output()
        .expect("doctor run, nothing due");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("doctor run --format json");
    assert!(
        report["run_id"] == 0 && report["plugins"].as_array().is_some_and(|p| p.is_empty()),
        "doctor run found something due: {report}"
    );
    let stats = interleaved(
        n,
        &mut [
            Contender::new(&[0, 1, 2], || doctor("run", &policy)),
            Contender::new(&[0], || Command::new("true")),
        ],
    );
    let d = t.raw(&format!("doctor run, nothing due ({incidents})"), stats[0]);
    let e = t.raw("true (started the same way)", stats[1]);
    let above = d.wall.saturating_sub(e.wall);
    t.row(
        &format!("`doctor run` with nothing due ({incidents} policy) vs `true`"),
        format!(
            "+{} ({} vs {}; CPU {} vs {})",
            ms(above),
            ms(d.wall),
            ms(e.wall),
            ms(d.cpu),
            ms(e.cpu)
        ),
        "≤ +2 ms",
        above <= Duration::from_millis(2),
    );
    aged_tick_row(t, f, &policy, parts, incidents, n);
}

/// The same tick once the journal holds a year of a 5-minute timer's
/// history, which nothing prunes unless the operator does: it must still
/// read a few rows, not every plugin run ever journaled.
fn aged_tick_row(
    t: &mut Table,
    f: &Incidents,
    policy: &Path,
    parts: &[&str],
    incidents: &str,
    n: usize,
) {
    let plugin_runs = age_journal(&f.dir.join("tick.journal.db"), parts);
    let stats = interleaved(
        n,
        &mut [
            Contender::new(&[0, 1, 2], || doctor("run", policy)),
            Contender::new(&[0], || Command::new("true")),
        ],
    );
    let d = t.raw(
        &format!("doctor run, nothing due, a year-old journal ({incidents})"),
        stats[0],
    );
    let e = t.raw("true (started the same way)", stats[1]);
    t.row(
        &format!("`doctor run` with nothing due, journal of a year ({plugin_runs} plugin runs) vs `true`"),
        format!("+{} ({} vs {})", ms(d.wall.saturating_sub(e.wall)), ms(d.wall), ms(e.wall)),
        "≤ +2 ms",
        d.wall.saturating_sub(e.wall) <= Duration::from_millis(2),
    );
    prune_row(t, f, policy);
}

/// `doctor journal prune` of that year, the operator's remedy for a large
/// journal, each round on a fresh copy of it.
fn prune_row(t: &mut Table, f: &Incidents, policy: &Path) {
    let (aged, copy) = (
        f.dir.join("tick.journal.db"),
        f.dir.join("prune.journal.db"),
    );
    let fresh_copy = || {
        for suffix in ["", "-wal"] {
            let from = PathBuf::from(format!("{}{suffix}", aged.display()));
            let to = PathBuf::from(format!("{}{suffix}", copy.display()));
            let _ = std::fs::remove_file(&to);
            if from.exists() {
                std::fs::copy(&from, &to).expect("copying the year-old journal");
            }
        }
        let _ = std::fs::remove_file(PathBuf::from(format!("{}-shm", copy.display())));
    };
    let stats = interleaved(
        3,
        &mut [Contender::new(&[0], || {
            let mut c = Command::new(doctor_bin());
            c.args(["journal", "prune", "--older-than", "30d", "--journal"])
                .arg(&copy)
                .arg("--policy")
                .arg(policy);
            c
        })
        .before(fresh_copy)],
    );
    let p = t.raw(
        "doctor journal prune --older-than 30d, a year-old journal",
        stats[0],
    );
    t.note(
        "`doctor journal prune --older-than 30d` of that journal (~105,000 runs)",
        format!("{} (CPU {})", ms(p.wall), ms(p.cpu)),
        "none set",
    );
}

/// Appends a year of runs every 5 minutes, each with one plugin run per
/// part, all before the journal's real runs (so nothing becomes due).
/// Returns how many plugin runs the journal holds.
fn age_journal(journal: &Path, parts: &[&str]) -> i64 {
    let names: Vec<String> = parts
        .iter()
        .map(|part| format!("SELECT '{}' AS name", plugin_of(part)))
        .collect();
    let c = Connection::open(journal).expect("the tick's journal");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64;
    let year_ago = now_ms - 366 * 24 * 3_600_000;
    c.execute_batch(&format!(
        "BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 105119)
         INSERT INTO runs (started_at, finished_at, mode, status, exit_code, pid, hostname, doctor_version, policy)
         SELECT {year_ago} + i * 300000, {year_ago} + i * 300000 + 40, 'run', 'complete', 0, 1, 'bench', '0', 'policy.toml' FROM n;
         INSERT INTO plugin_runs (run_id, plugin, version, sha256, started_at, duration_ms, outcome, cache, log)
         SELECT r.id, p.name, '0', '', r.started_at, 3, 'ok', 'precompiled', '' FROM runs r, ({}) p
         WHERE r.hostname = 'bench';
         COMMIT;",
        names.join(" UNION ALL ")
    ))
    .expect("a year of history");
    c.query_row("SELECT COUNT(*) FROM plugin_runs", [], |r| r.get(0))
        .expect("counting plugin runs")
}

fn plugin_of(part: &str) -> &'static str {
    match part {
        "pid" => "pid-file-stop",
        "chunks" => "sqlite-chunk-reset",
        "jobs" => "job-health",
        "port" => "port-9403-freer",
        "containers" => "container-caps-checker",
        other => panic!("unknown part {other}"),
    }
}

/// First run after install against warm: the five-incident policy (four
/// without an engine); each cold round gets a fresh, empty `cache_dir` of
/// its own (a new path, so nothing of an earlier round can be reused).
fn cold_rows(t: &mut Table, f: &Incidents, engine: Option<&Engine>, n: usize) {
    let socket = engine.map(|e| e.proxy.clone());
    let (parts, incidents): (&[&str], &str) = if engine.is_some() {
        (
            &["pid", "chunks", "jobs", "port", "containers"],
            "5 incidents",
        )
    } else {
        (
            &["pid", "chunks", "jobs", "port"],
            "4 incidents (no engine)",
        )
    };
    let round = std::cell::Cell::new(0usize);
    let cold_policy = f.dir.join("cold.toml");
    // A second policy on a cache of its own that stays warm, so the two
    // can take turns.
    let warm_cache = f.dir.join("warm-cache");
    let warm_policy = f.policy("warm", parts, socket.as_deref(), &warm_cache, None);
    let stats = interleaved(
        n,
        &mut [
            Contender::new(&[2], || doctor("check", &cold_policy)).before(|| {
                f.reset_journal("cold");
                round.set(round.get() + 1);
                let cache = f.dir.join(format!("cold-cache-{}", round.get()));
                assert!(!cache.exists(), "{} exists", cache.display());
                f.policy("cold", parts, socket.as_deref(), &cache, None);
            }),
            Contender::new(&[2], || doctor("check", &warm_policy))
                .before(|| f.reset_journal("warm")),
        ],
    );
    let cold = t.raw(
        &format!("doctor check, {incidents}, fresh empty cache_dir"),
        stats[0],
    );
    let warm = t.raw(&format!("doctor check, {incidents}, warm cache"), stats[1]);
    t.row(
        &format!("first run after install (empty compiled cache) vs warm, {incidents}"),
        format!(
            "{:.2}× ({} vs {}; CPU {} vs {})",
            ratio(cold.wall, warm.wall),
            ms(cold.wall),
            ms(warm.wall),
            ms(cold.cpu),
            ms(warm.cpu)
        ),
        "≤ 1.2×",
        ratio(cold.wall, warm.wall) <= 1.2,
    );
}

/// fsync-family calls of ten `doctor check`s (strace -f, each its own
/// process) on a journal that already exists, their mean, and which files
/// they synced.
fn fsync_rows(t: &mut Table, policy: &Path, incidents: &str) {
    let work = format!("fsyncs per `check` (mean of 10 warm checks, {incidents})");
    if !have("strace") {
        t.note(&work, "strace not installed".into(), "≤ 1");
        return;
    }
    let out = policy.with_extension("strace");
    let mut total = 0usize;
    let mut by_file: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..10 {
        let mut c = Command::new("strace");
        c.args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "trace=fsync,fdatasync,sync_file_range,syncfs,sync,msync",
            "-o",
        ])
        .arg(&out)
        .arg(doctor_bin())
        .args(["check", "--policy"])
        .arg(policy)
        .env("DOCTOR_LOG", "error");
        measure(&mut c, &[2]);
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| l.contains("sync") && !l.contains("resumed>"))
        {
            total += 1;
            // `fdatasync(7</path/journal.db-wal>) = 0`: the file, without its directory.
            let file = line
                .split_once('<')
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(path, _)| path.rsplit('/').next().unwrap_or(path).to_string())
                .unwrap_or_else(|| "?".into());
            *by_file.entry(file).or_default() += 1;
        }
    }
    let mean = total as f64 / 10.0;
    let files = if by_file.is_empty() {
        String::new()
    } else {
        format!(
            " ({})",
            by_file
                .iter()
                .map(|(f, n)| format!("{f}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    t.row(&work, format!("{mean:.1}{files}"), "≤ 1", mean <= 1.0);
}

/// As root, the 10k section runs in a private pid namespace (`unshare --pid
/// --fork --mount-proc`): the sleepers, the listener, doctor, the floor and
/// the peers see only each other, and the kernel reaps them all when the
/// section ends. Otherwise (or if unshare fails) in the machine's namespace.
fn ten_thousand_section(
    t: &mut Table,
    f: &Incidents,
    engine: Option<&Path>,
    root: &Path,
    n: usize,
) {
    if unsafe { libc::geteuid() } == 0 && have("unshare") {
        let inner = root.join("pidns");
        std::fs::create_dir_all(&inner).expect("pidns dir");
        let out = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(std::env::current_exe().expect("own exe"))
            .env(PIDNS_ENV, &inner)
            .env(PIDNS_ENGINE_ENV, engine.unwrap_or(Path::new("")))
            .env("INCIDENTS_BENCH_ITERS", n.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output();
        match out {
            Ok(out) if out.status.success() => {
                t.absorb(&String::from_utf8_lossy(&out.stdout));
                return;
            }
            Ok(out) => println!(
                "10k: unshare exited {}; falling back to plain children",
                out.status
            ),
            Err(e) => println!("10k: unshare failed ({e}); falling back to plain children"),
        }
    }
    ten_thousand_rows(
        t,
        f,
        engine,
        n,
        "as plain children of the bench (the machine's pid namespace)",
    );
}

/// The re-executed copy, as pid 1 of its namespace: fixtures, the section, rows on stdout.
fn inside_pid_namespace(root: &Path) {
    let n = env_usize("INCIDENTS_BENCH_ITERS", 3);
    let (f, _listener) = Incidents::build(root);
    let mut t = Table::default();
    // The engine is the parent's (its proxy socket is a path, reachable from here).
    let engine = std::env::var_os(PIDNS_ENGINE_ENV)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    ten_thousand_rows(
        &mut t,
        &f,
        engine.as_deref(),
        n,
        "in a private pid namespace (unshare --pid --fork --mount-proc)",
    );
    t.emit();
}

fn ten_thousand_rows(t: &mut Table, f: &Incidents, engine: Option<&Path>, n: usize, how: &str) {
    let started = Instant::now();
    let mut sleepers = Vec::with_capacity(SLEEPERS);
    for _ in 0..SLEEPERS {
        let mut c = Command::new("sleep");
        c.arg("3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Their own process group: a Ctrl-C of the bench does not race their reaping.
        c.process_group(0);
        sleepers.push(Reaped(c.spawn().expect("spawn sleeper (pid_max?)")));
    }
    let procs = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(0);
    eprintln!(
        "10k: {SLEEPERS} sleepers {how} in {:.1} s; {procs} processes visible",
        started.elapsed().as_secs_f64()
    );
    t.says(format!(
        "10k: {SLEEPERS} sleepers {how}; {procs} processes visible"
    ));
    let cache = f.dir.join("cache");

    let policy = f.policy("pid10k", &["pid"], None, &cache, None);
    let stats = interleaved(
        n,
        &mut [
            Contender::new(&[1, 2], || doctor("check", &policy))
                .before(|| f.reset_journal("pid10k")),
            Contender::new(&[0], || {
                floor(&format!("pid={};scan=1", f.pid_file.display()))
            }),
            Contender::new(&[0], || {
                let mut c = Command::new("ps");
                c.arg("-e");
                c
            }),
        ],
    );
    let d = t.raw("doctor check pid-file-stop, 10k processes", stats[0]);
    let fl = t.raw("floor pid file + /proc scan, 10k processes", stats[1]);
    let ps = t.raw("ps -e, 10k processes", stats[2]);
    t.row(
        "pid-file-stop at 10k processes vs floor",
        format!(
            "{:.2}× ({} vs {}; CPU {:.2}×; `ps -e` {})",
            ratio(d.wall, fl.wall),
            ms(d.wall),
            ms(fl.wall),
            ratio(d.cpu, fl.cpu),
            ms(ps.wall)
        ),
        "≤ 1.2×",
        ratio(d.wall, fl.wall) <= 1.2,
    );

    let policy = f.policy("port10k", &["port"], None, &cache, None);
    let stats = interleaved(
        n,
        &mut [
            Contender::new(&[1, 2], || doctor("check", &policy))
                .before(|| f.reset_journal("port10k")),
            Contender::new(&[0], || {
                let mut c = Command::new("ss");
                c.arg("-ltnp");
                c
            }),
            Contender::new(&[0], || floor(&format!("port={}", f.port))),
        ],
    );
    let dp = t.raw("doctor check port-9403-freer, 10k processes", stats[0]);
    let ss = t.raw("ss -ltnp, 10k processes", stats[1]);
    t.raw("floor port owner, 10k processes", stats[2]);
    t.row(
        "port at 10k processes vs `ss -ltnp`",
        format!(
            "{:.2}× ({} vs {}; CPU {:.2}×)",
            ratio(dp.wall, ss.wall),
            ms(dp.wall),
            ms(ss.wall),
            ratio(dp.cpu, ss.cpu)
        ),
        "≤ 1.0×",
        ratio(dp.wall, ss.wall) <= 1.0,
    );

    // Peak RSS: the five-incident check (four without an engine) among the 10k.
    let (parts, incidents): (&[&str], &str) = if engine.is_some() {
        (
            &["pid", "chunks", "jobs", "port", "containers"],
            "5 incidents",
        )
    } else {
        (
            &["pid", "chunks", "jobs", "port"],
            "4 incidents (no engine)",
        )
    };
    let policy = f.policy("all10k", parts, engine, &cache, None);
    let spec = f.floor_spec(engine);
    let stats = interleaved(
        n,
        &mut [
            Contender::new(&[2], || doctor("check", &policy)).before(|| f.reset_journal("all10k")),
            Contender::new(&[0], || floor(&spec)),
        ],
    );
    let da = t.raw(
        &format!("doctor check, {incidents}, 10k processes"),
        stats[0],
    );
    let fa = t.raw(&format!("floor, {incidents}, 10k processes"), stats[1]);
    t.row(
        &format!("peak RSS, {incidents} at 10,000 processes"),
        format!(
            "{:.1} MiB (floor {:.1} MiB; pid-file-stop alone {:.1}, port-9403-freer alone {:.1}; wall {} vs floor {})",
            da.rss_kib as f64 / 1024.0,
            fa.rss_kib as f64 / 1024.0,
            d.rss_kib as f64 / 1024.0,
            dp.rss_kib as f64 / 1024.0,
            ms(da.wall),
            ms(fa.wall)
        ),
        "≤ 15 MiB",
        da.rss_kib <= 15 * 1024,
    );
    drop(sleepers);
}

fn million_rows(t: &mut Table, root: &Path, n: usize) {
    let dir = root.join("million");
    std::fs::create_dir_all(&dir).expect("million dir");
    let base = dir.join("base.db");
    let work = dir.join("work.db");
    let started = Instant::now();
    build_million(&base);
    println!(
        "1m: {ROWS} rows ({ORPHANS} orphaned running) built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[doctor]\njournal = \"{d}/journal.db\"\ncache_dir = \"{d}/cache\"\nmax_actions_per_run = 20000\nplugin_timeout = \"300s\"\nplugin_memory = \"512MiB\"\n\n\
             [databases.bench]\npath = \"{w}\"\n\n[plugins.sqlite-chunk-reset]\ngrants.processes = true\ngrants.sqlite = [\"bench\"]\ngrants.sqlite_write = [\"bench\"]\n\
             config = {{ db = \"bench\", table = \"chunks\", worker_column = \"assigned_worker\" }}\n",
            d = dir.display(),
            w = work.display()
        ),
    )
    .expect("policy");
    let reset = || {
        std::fs::copy(&base, &work).expect("copy db");
        for f in ["journal.db", "journal.db-wal", "journal.db-shm"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
    };
    let sqlite3 = |sql: &str| {
        let mut c = Command::new("sqlite3");
        c.arg(&work).arg(sql);
        c
    };
    let stats = interleaved(
        n,
        &mut [
            Contender::new(&[2], || doctor("check", &policy)).before(reset),
            Contender::new(&[0], || sqlite3("SELECT id, assigned_worker, started_at FROM chunks WHERE status = 'running'; SELECT status, count(*) FROM chunks GROUP BY status;")).before(reset),
            Contender::new(&[0, 1, 2], || doctor("fix", &policy)).before(reset),
            Contender::new(&[0], || sqlite3("UPDATE chunks SET status = 'pending', assigned_worker = NULL, started_at = NULL WHERE status = 'running';")).before(reset),
        ],
    );
    let check = t.raw("doctor check, 1M rows", stats[0]);
    let select = t.raw("sqlite3 same queries, 1M rows", stats[1]);
    let fix = t.raw("doctor fix, 1M rows", stats[2]);
    let update = t.raw("sqlite3 one set-based UPDATE, 1M rows", stats[3]);
    let (rc, rf) = (ratio(check.wall, select.wall), ratio(fix.wall, update.wall));
    t.row(
        "1M-row chunk table: check vs the same queries in `sqlite3`",
        format!(
            "{rc:.2}× ({} vs {}; CPU {} vs {})",
            ms(check.wall),
            ms(select.wall),
            ms(check.cpu),
            ms(select.cpu)
        ),
        "≤ 1.1×",
        rc <= 1.1,
    );
    t.row(
        "1M rows, 10,000 orphaned: fix vs one set-based UPDATE (budget raised)",
        format!(
            "{rf:.2}× ({} vs {}; CPU {} vs {})",
            ms(fix.wall),
            ms(update.wall),
            ms(fix.cpu),
            ms(update.cpu)
        ),
        "≤ 1.3×",
        rf <= 1.3,
    );
}

fn build_million(path: &Path) {
    chunks::build_chunk_table(path, ROWS, ORPHANS);
}

fn binary_rows(t: &mut Table, root: &Path, doctor_path: &Path) {
    let size =
        |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / (1024.0 * 1024.0);
    let stripped = root.join("doctor-stripped");
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(doctor_path)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let s = size(&stripped);
        t.row(
            "stripped binary",
            format!("{s:.1} MiB (unstripped {:.1} MiB)", size(doctor_path)),
            "≤ 18 MiB",
            s <= 18.0,
        );
    } else {
        t.note(
            "stripped binary",
            format!(
                "strip not installed; unstripped {:.1} MiB",
                size(doctor_path)
            ),
            "≤ 18 MiB",
        );
    }
    // The opt-in `dist` profile (fat LTO), when it has been built beside this one.
    let dist = doctor_path
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("dist").join("doctor"));
    let dist_stripped = root.join("doctor-dist-stripped");
    if let Some(dist) = dist.filter(|d| d.exists()) {
        if Command::new("strip")
            .arg("-o")
            .arg(&dist_stripped)
            .arg(&dist)
            .status()
            .is_ok_and(|s| s.success())
        {
            let s = size(&dist_stripped);
            t.row(
                "stripped binary, `--profile dist` (as last built)",
                format!("{s:.1} MiB"),
                "≤ 18 MiB",
                s <= 18.0,
            );
        }
    }
}

// ---------------------------------------------------------------- the floor

/// The bare reads of the same facts, no plugins, no journal, no policy. The
/// spec is `key=value;...`: `pid=FILE` (read it, then /proc/PID/stat),
/// `scan=1` (every /proc/PID/stat and cmdline, for a pattern), `db=FILE` and
/// `dead=PID` (the running chunks and jobs, and kill -0 of their workers),
/// `port=N` (the TCP listeners from netlink `sock_diag`, as `ss` asks; /proc/net/tcp{,6}
/// where refused; then /proc/*/fd for the owner),
/// `engine=SOCKET` (list, inspect each, HEAD each health-check binary).
mod floor {
    use super::*;

    pub fn run(spec: &str) {
        let args: BTreeMap<&str, &str> = spec
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let mut sink = 0usize;
        if let Some(file) = args.get("pid") {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            if let Ok(pid) = text.trim().parse::<u32>() {
                sink += std::fs::read(format!("/proc/{pid}/stat"))
                    .map(|b| b.len())
                    .unwrap_or(0);
            }
            if args.contains_key("scan") || args.contains_key("db") {
                sink += scan_processes();
            }
        }
        if let Some(db) = args.get("db") {
            sink += databases(db);
        }
        if let Some(port) = args.get("port").and_then(|p| p.parse::<u16>().ok()) {
            sink += port_owner(port);
        }
        if let Some(sock) = args.get("engine") {
            sink += engine(Path::new(sock));
        }
        std::hint::black_box(sink);
    }

    /// Every process's stat and cmdline: what a pattern or scope match needs.
    fn scan_processes() -> usize {
        let mut n = 0;
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0;
        };
        let mut buf = Vec::with_capacity(4096);
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            for file in ["stat", "cmdline"] {
                buf.clear();
                if let Ok(mut f) = std::fs::File::open(format!("/proc/{pid}/{file}")) {
                    n += f.read_to_end(&mut buf).unwrap_or(0);
                }
            }
        }
        n
    }

    fn databases(db: &str) -> usize {
        let Ok(c) = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        else {
            return 0;
        };
        let mut workers: Vec<String> = Vec::new();
        for sql in [
            "SELECT assigned_worker FROM chunks WHERE status = 'running'",
            "SELECT pid FROM jobs WHERE status IN ('running', 'pending', 'queued')",
        ] {
            if let Ok(mut st) = c.prepare(sql) {
                if let Ok(rows) = st.query_map([], |r| r.get::<_, Option<String>>(0)) {
                    workers.extend(rows.flatten().flatten());
                }
            }
        }
        workers
            .iter()
            .filter_map(|w| w.parse::<i32>().ok())
            .filter(|pid| unsafe { libc::kill(*pid, 0) } == 0)
            .count()
            + workers.len()
    }

    /// The listening socket's inode (from netlink `sock_diag`, as `ss`
    /// asks; /proc/net where the kernel refuses), then the process holding it.
    fn port_owner(port: u16) -> usize {
        let mut inodes: Vec<String> = Vec::new();
        for family in [libc::AF_INET, libc::AF_INET6] {
            match listening_inodes(family, port) {
                Some(found) => inodes.extend(found.iter().map(|i| format!("socket:[{i}]"))),
                None => inodes.extend(proc_net_inodes(family, port)),
            }
        }
        owners_of(&inodes)
    }

    /// `SOCK_DIAG_BY_FAMILY` for TCP sockets in LISTEN on `port`: their inodes.
    fn listening_inodes(family: i32, port: u16) -> Option<Vec<u32>> {
        // SAFETY: plain syscalls on a socket this function owns and closes.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return None;
        }
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let mut req = [0u8; 72];
        req[0..4].copy_from_slice(&72u32.to_ne_bytes());
        req[4..6].copy_from_slice(&20u16.to_ne_bytes());
        req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
        req[16] = family as u8;
        req[17] = libc::IPPROTO_TCP as u8;
        req[20..24].copy_from_slice(&(1u32 << 10).to_ne_bytes());
        let sent = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if sent != 72 {
            return None;
        }
        let mut buf = vec![0u8; 32 * 1024];
        let mut found = Vec::new();
        loop {
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                return None;
            }
            let mut data = &buf[..n as usize];
            while data.len() >= 16 {
                let len = u32::from_ne_bytes(data[0..4].try_into().ok()?) as usize;
                let kind = u16::from_ne_bytes([data[4], data[5]]);
                if len < 16 || len > data.len() || i32::from(kind) == libc::NLMSG_ERROR {
                    return None;
                }
                if i32::from(kind) == libc::NLMSG_DONE {
                    return Some(found);
                }
                let msg = &data[16..len];
                if msg.len() >= 72 && u16::from_be_bytes([msg[4], msg[5]]) == port {
                    found.push(u32::from_ne_bytes(msg[68..72].try_into().ok()?));
                }
                data = &data[len.next_multiple_of(4).min(data.len())..];
            }
        }
    }

    fn proc_net_inodes(family: i32, port: u16) -> Vec<String> {
        let mut inodes = Vec::new();
        let table = if family == libc::AF_INET {
            "/proc/net/tcp"
        } else {
            "/proc/net/tcp6"
        };
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if f.get(3) == Some(&"0A") && local_port == Some(port) {
                inodes.extend(f.get(9).map(|i| format!("socket:[{i}]")));
            }
        }
        inodes
    }

    /// Every /proc/PID/fd, for the processes holding one of `inodes`.
    fn owners_of(inodes: &[String]) -> usize {
        let mut owners = 0;
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0;
        };
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                if let Ok(target) = std::fs::read_link(fd.path()) {
                    if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                        owners += std::fs::read(format!("/proc/{pid}/stat"))
                            .map(|b| b.len())
                            .unwrap_or(0);
                    }
                }
            }
        }
        owners
    }

    /// One HTTP/1.1 exchange per request, serially, over a fresh connection.
    fn http(sock: &Path, method: &str, uri: &str) -> (u16, String) {
        let Ok(mut s) = UnixStream::connect(sock) else {
            return (0, String::new());
        };
        let _ = write!(
            s,
            "{method} {uri} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"
        );
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    fn engine(sock: &Path) -> usize {
        let (_, list) = http(sock, "GET", "/containers/json?all=true");
        let list: serde_json::Value =
            serde_json::from_str(dechunk(&list).as_str()).unwrap_or_default();
        let mut n = 0;
        for c in list.as_array().into_iter().flatten() {
            let Some(id) = c["Id"].as_str() else { continue };
            let (_, spec) = http(sock, "GET", &format!("/containers/{id}/json"));
            let spec: serde_json::Value =
                serde_json::from_str(dechunk(&spec).as_str()).unwrap_or_default();
            n += 1;
            // The health check's binary, when it names one by absolute path or by a bare word.
            let test = spec["Config"]["Healthcheck"]["Test"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if let Some(cmd) = test
                .get(1)
                .and_then(|v| v.as_str())
                .and_then(|s| s.split_whitespace().next())
            {
                // The same search as the plugin: the default PATH, in order.
                for dir in [
                    "/usr/local/sbin/",
                    "/usr/local/bin/",
                    "/usr/sbin/",
                    "/usr/bin/",
                    "/sbin/",
                    "/bin/",
                ] {
                    let path = if cmd.starts_with('/') {
                        cmd.to_string()
                    } else {
                        format!("{dir}{cmd}")
                    };
                    let (status, _) = http(
                        sock,
                        "HEAD",
                        &format!("/containers/{id}/archive?path={path}"),
                    );
                    n += usize::from(status == 200);
                    if status == 200 || cmd.starts_with('/') {
                        break;
                    }
                }
            }
        }
        n
    }

    /// Undo `Transfer-Encoding: chunked` when the engine used it.
    fn dechunk(body: &str) -> String {
        if body.trim_start().starts_with(['[', '{']) {
            return body.to_string();
        }
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let Ok(len) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if len == 0 || tail.len() < len {
                break;
            }
            out.push_str(&tail[..len]);
            rest = tail[len..].trim_start_matches("\r\n");
        }
        out
    }
}
