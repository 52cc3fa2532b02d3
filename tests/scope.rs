//! A fix touches only its own incident (policy reference, "Scope"). Two deployments
//! of each incident run on one host with identical command lines (each
//! started by its own launcher, `DIR/run.sh`, from its own directory); the
//! policy describes deployment A. A is found and fixed; B's processes (pid +
//! start time), rows (byte-identical database file) and files are untouched.
//! And the doctor itself and its ancestors are never instances, and a
//! respawned process is reported as persisting, not fixed.

mod support;

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{finding, findings, Proc, Scenario};

/// A process as the tests identify it: pid and start time (clock ticks).
type Identity = (u32, u64);

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

fn alive(id: Identity) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", id.0)) else {
        return false;
    };
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("X");
    start_ticks(id.0) == Some(id.1) && state != "Z" && state != "X"
}

fn wait_gone(id: Identity, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !alive(id) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !alive(id)
}

/// One deployment: a directory with its launcher script. Every process it
/// starts is a child of `sh DIR/run.sh ARGV...`, run in DIR, so the same
/// relative command line works for both deployments.
struct Deployment {
    dir: PathBuf,
    launchers: Vec<Proc>,
}

impl Deployment {
    fn new(s: &Scenario, name: &str) -> Deployment {
        let dir = s.root().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("run.sh"),
            "cd \"$(dirname \"$0\")\" || exit 1\n\"$@\" &\nwait\n",
        )
        .unwrap();
        Deployment {
            dir,
            launchers: Vec::new(),
        }
    }

    fn launcher(&self) -> String {
        self.dir.join("run.sh").display().to_string()
    }

    /// The scope that names this deployment: descendants of its launcher.
    fn scope(&self) -> String {
        format!(
            "{{ under = {:?} }}",
            format!("^sh {}( |$)", regex::escape(&self.launcher()))
        )
    }

    /// Start `argv` under the launcher; its identity once it has exec'd.
    fn start(&mut self, argv: &[&str]) -> Identity {
        self.start_as(argv, argv)
    }

    /// Start `argv` (e.g. `env X=1 prog ...`), which execs into `becomes`.
    fn start_as(&mut self, argv: &[&str], becomes: &[&str]) -> Identity {
        let launcher = self.launcher();
        let mut full = vec!["sh", launcher.as_str()];
        full.extend(argv);
        let p = Proc::spawn(&full);
        let child = child_of(p.pid(), becomes);
        self.launchers.push(p);
        child
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Is `cmdline` (NUL-separated) `argv`? The program may have been resolved
/// by a shim (`python3` → a versioned interpreter such as `…/bin/python3.11`).
fn cmdline_is(cmdline: &[u8], argv: &[&str]) -> bool {
    let parts: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let parts = parts.strip_suffix(&[String::new()]).unwrap_or(&parts);
    let program = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    parts.len() == argv.len()
        && parts
            .first()
            .is_some_and(|p| program(p).starts_with(&program(argv[0])))
        && parts[1..].iter().zip(&argv[1..]).all(|(a, b)| a == b)
}

/// The child of `ppid` whose command line is `argv`, once it has exec'd.
fn child_of(ppid: u32, argv: &[&str]) -> Identity {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let parent: Option<u32> = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().nth(1))
                .and_then(|p| p.parse().ok());
            if parent == Some(ppid)
                && cmdline_is(
                    &std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
                    argv,
                )
            {
                if let Some(start) = start_ticks(pid) {
                    return (pid, start);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no child {argv:?} of pid {ppid}");
}

fn keys(doc: &serde_json::Value, plugin: &str) -> Vec<String> {
    let mut k: Vec<String> = findings(doc, plugin)
        .iter()
        .map(|f| f["key"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

fn outcomes(f: &serde_json::Value) -> Vec<String> {
    f["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap().to_string())
        .collect()
}

/// Every pid any action of the report targets.
fn targeted_pids(doc: &serde_json::Value) -> Vec<u32> {
    let mut out = Vec::new();
    for f in doc["findings"].as_array().unwrap() {
        for a in f["actions"].as_array().unwrap() {
            let d = a["description"].as_str().unwrap_or("");
            if let Some(rest) = d
                .strip_prefix("stop pid ")
                .or_else(|| d.strip_prefix("stop leftover worker pid "))
            {
                out.extend(
                    rest.split_whitespace()
                        .next()
                        .and_then(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

const STUBBORN: &str = "trap '' TERM; while :; do sleep 0.1; done";

#[test]
fn pid_file_stop_stops_only_its_own_deployment() {
    let s = Scenario::new();
    let (mut a, mut b) = (Deployment::new(&s, "a"), Deployment::new(&s, "b"));
    let mut ids = Vec::new();
    for d in [&mut a, &mut b] {
        let main = d.start(&["sleep", "3601"]);
        std::fs::write(d.path("app.pid"), format!("{}\n", main.0)).unwrap();
        let second = d.start(&["sleep", "3601"]);
        let stubborn = d.start(&["sh", "-c", STUBBORN, "app-worker"]);
        ids.push([main, second, stubborn]);
    }
    let (a_ids, b_ids) = (ids[0], ids[1]);
    let b_pid_file = std::fs::read(b.path("app.pid")).unwrap();
    let root = s.root().display().to_string();
    let pattern = "^sleep 3601$|app-worker$";
    s.policy(&format!(
        r#"
[plugins.pid-file-stop]
grants.processes = true
grants.files = ["{root}/a/*.pid"]
grants.files_remove = ["{root}/a/*.pid"]
grants.signal = {{ match = [{pattern:?}] }}

[[plugins.pid-file-stop.config.targets]]
name = "app"
pid_file = "{root}/a/app.pid"
pattern = {pattern:?}
scope = {scope}
grace_ms = 500
"#,
        scope = a.scope()
    ));

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    let f = finding(&doc, "pid-file-stop", "app:running").unwrap_or_else(|| panic!("{doc:#}"));
    assert_eq!(f["evidence"]["instances"], "3", "A's three, not B's: {f:#}");
    let mut targeted = targeted_pids(&doc);
    targeted.sort();
    let mut want: Vec<u32> = a_ids.iter().map(|i| i.0).collect();
    want.sort();
    assert_eq!(targeted, want, "{doc:#}");

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        finding(&doc, "pid-file-stop", "app:running").unwrap()["status"],
        "fixed"
    );
    for id in a_ids {
        assert!(
            wait_gone(id, Duration::from_secs(5)),
            "A's {id:?} was stopped"
        );
    }
    assert!(!a.path("app.pid").exists(), "A's PID file is removed");

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 0, "{doc:#}");
    assert!(keys(&doc, "pid-file-stop").is_empty(), "{doc:#}");

    for id in b_ids {
        assert!(alive(id), "B's {id:?} is untouched");
    }
    assert_eq!(
        std::fs::read(b.path("app.pid")).unwrap(),
        b_pid_file,
        "B's PID file is untouched"
    );
}

fn worker_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/workers/db_worker.py")
        .display()
        .to_string()
}

fn chunks_db(path: &Path) {
    Connection::open(path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE chunks (id INTEGER PRIMARY KEY, status TEXT NOT NULL, assigned_worker TEXT, started_at INTEGER);
             INSERT INTO chunks (id, status) VALUES (1, 'pending'), (2, 'pending'), (3, 'pending'), (4, 'complete');",
        )
        .unwrap();
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A worker of deployment `d` claiming `ids` with its pid; identical command
/// lines in both deployments (relative paths, run in the deployment's dir).
fn db_worker(d: &mut Deployment, script: &str, name: &str, ids: &str) -> Identity {
    let ready = format!("{name}.ready");
    let sql = format!(
        "UPDATE chunks SET status = 'running', assigned_worker = '{{pid}}' WHERE id IN ({ids})"
    );
    let id = d.start(&[
        "python3",
        script,
        "cluster.db",
        "--ready",
        &ready,
        "--exec",
        &sql,
    ]);
    wait_for(&d.path(&ready));
    id
}

#[test]
fn sqlite_chunk_reset_touches_only_its_own_deployments_rows_and_workers() {
    let s = Scenario::new();
    let script = worker_script();
    let (mut a, mut b) = (Deployment::new(&s, "a"), Deployment::new(&s, "b"));
    let coordinator = [
        "python3",
        "-c",
        "import time; time.sleep(3600)",
        "cluster_coordinator",
    ];
    let mut live = Vec::new();
    for d in [&mut a, &mut b] {
        chunks_db(&d.path("cluster.db"));
        live.push(db_worker(d, &script, "w1", "1, 2"));
        let dead = db_worker(d, &script, "w2", "3");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(dead.0 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        assert!(wait_gone(dead, Duration::from_secs(5)));
    }
    // B's coordinator runs; A's crashed. Same command line either way.
    let b_coordinator = b.start(&coordinator);
    let (a_worker, b_worker) = (live[0], live[1]);
    let b_db = std::fs::read(b.path("cluster.db")).unwrap();
    let root = s.root().display().to_string();
    s.policy(&format!(
        r#"
[databases.cluster]
path = "{root}/a/cluster.db"

[plugins.sqlite-chunk-reset]
grants.processes = true
grants.sqlite = ["cluster"]
grants.sqlite_write = ["cluster"]
grants.signal = {{ match = ["db_worker\\.py"] }}

[plugins.sqlite-chunk-reset.config]
db = "cluster"
worker_match = "db_worker\\.py"
coordinator_match = "cluster_coordinator"
scope = {scope}
grace_ms = 2000
"#,
        scope = a.scope()
    ));

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    let k = keys(&doc, "sqlite-chunk-reset");
    // A's three running chunks are orphaned: one finding per owner, the
    // live leftover's two and the dead worker's one.
    let owners: Vec<(String, String)> = findings(&doc, "sqlite-chunk-reset")
        .into_iter()
        .filter(|f| f["key"].as_str().unwrap().ends_with(":orphaned"))
        .map(|f| {
            (
                f["key"].as_str().unwrap().to_string(),
                f["evidence"]["ids"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(owners.len(), 2, "{k:?}");
    assert!(
        owners.contains(&(format!("worker:{}:orphaned", a_worker.0), "1, 2".into()))
            && owners.iter().any(|(_, ids)| ids == "3"),
        "{owners:?}"
    );
    let leftover = format!("worker:{}:leftover", a_worker.0);
    assert!(k.contains(&leftover), "A's worker is a leftover: {k:?}");
    assert_eq!(
        targeted_pids(&doc),
        vec![a_worker.0],
        "only A's worker, named by A's rows: {doc:#}"
    );

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        outcomes(finding(&doc, "sqlite-chunk-reset", &leftover).unwrap()),
        ["applied"]
    );
    assert!(wait_gone(a_worker, Duration::from_secs(5)));
    let running: i64 = Connection::open(a.path("cluster.db"))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM chunks WHERE status = 'running'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(running, 0, "A's rows are reset");
    let state = finding(&doc, "sqlite-chunk-reset", "table:chunks:state").unwrap();
    assert_eq!(
        state["evidence"]["pending"], "3",
        "the report shows the table after the fix: {state:#}"
    );

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 0, "{doc:#}");
    assert!(
        !keys(&doc, "sqlite-chunk-reset")
            .iter()
            .any(|k| k.ends_with(":orphaned") || k.ends_with(":leftover")),
        "{doc:#}"
    );

    assert!(
        alive(b_worker) && alive(b_coordinator),
        "B's worker and coordinator are untouched"
    );
    assert_eq!(
        std::fs::read(b.path("cluster.db")).unwrap(),
        b_db,
        "B's database is byte-identical"
    );
}

/// A listener whose command line does not name its port (it comes from the environment).
fn env_listener(d: &mut Deployment, port: u16) -> Identity {
    let script = "import os,socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',int(os.environ['APP_PORT'])))\ns.listen()\nwhile True: time.sleep(1)\n";
    let env = format!("APP_PORT={port}");
    let id = d.start_as(
        &["env", &env, "python3", "-c", script],
        &["python3", "-c", script],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    // A connect, not a bind: a probe that binds the port would, for that
    // moment, make the listener's own bind fail.
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    id
}

#[test]
fn port_freer_frees_only_its_own_deployments_port() {
    let s = Scenario::new();
    let (mut a, mut b) = (Deployment::new(&s, "a"), Deployment::new(&s, "b"));
    let (port_a, port_b) = (support::free_port(), support::free_port());
    let a_listener = env_listener(&mut a, port_a);
    let b_listener = env_listener(&mut b, port_b);
    s.policy(&format!(
        "[plugins.port-9403-freer]\ngrants.sockets = true\ngrants.processes = true\ngrants.signal = {{ match = [\"python3\"] }}\nconfig = {{ ports = [{port_a}], grace_ms = 1000, deadline_ms = 5000 }}\n"
    ));
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    assert_eq!(targeted_pids(&doc), vec![a_listener.0], "{doc:#}");
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc:#}");
    assert!(wait_gone(a_listener, Duration::from_secs(5)));
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 0, "{doc:#}");
    assert!(alive(b_listener), "B's listener on {port_b} is untouched");
}

#[test]
fn the_doctor_and_its_ancestors_are_never_instances() {
    // The incident's Stop button: a process of the app, whose command line
    // matches the target's pattern, runs `doctor fix` for a host-wide target.
    let s = Scenario::new();
    let marker = format!("app-main-{}", std::process::id());
    let root = s.root().display().to_string();
    s.policy(&format!(
        r#"
[plugins.pid-file-stop]
grants.processes = true
grants.files = ["{root}/*.pid"]
grants.files_remove = ["{root}/*.pid"]
grants.signal = {{ match = [{marker:?}] }}
config = {{ targets = [{{ name = "app", pid_file = "{root}/app.pid", pattern = {marker:?}, scope = "host", grace_ms = 500 }}] }}
"#
    ));
    // Another instance of the app, not related to the doctor: it is stopped.
    let mut other = Proc::spawn(&["sh", "-c", "while :; do sleep 1; done", &marker]);
    let run = |args: &str, out: &str| -> (i32, serde_json::Value, u32) {
        // The button is the app: its PID file names it (not a stale file).
        let script = format!(
            "echo $$ > {root}/app.pid; {doctor} {args} --policy {root}/policy.toml --format json > {root}/{out}.json 2> {root}/{out}.err; echo $? > {root}/{out}.code",
            doctor = support::DOCTOR
        );
        // The button: `sh -c SCRIPT app-main-N`, the doctor's parent.
        let mut button = std::process::Command::new("sh")
            .args(["-c", &script, &marker])
            .spawn()
            .unwrap();
        let pid = button.id();
        button.wait().unwrap();
        let code: i32 = std::fs::read_to_string(format!("{root}/{out}.code"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let doc = serde_json::from_slice(&std::fs::read(format!("{root}/{out}.json")).unwrap())
            .unwrap_or_else(|e| {
                panic!(
                    "{e}: {}",
                    std::fs::read_to_string(format!("{root}/{out}.err")).unwrap_or_default()
                )
            });
        (code, doc, pid)
    };

    let (code, doc, button) = run("fix", "fix");
    let f = finding(&doc, "pid-file-stop", "app:running").unwrap_or_else(|| panic!("{doc:#}"));
    assert_eq!(
        f["evidence"]["instances"], "1",
        "the button (the doctor's parent) is not an instance: {f:#}"
    );
    assert_eq!(targeted_pids(&doc), vec![other.pid()], "{doc:#}");
    assert!(!targeted_pids(&doc).contains(&button));
    assert_eq!(
        code, 0,
        "fixed, nothing refused, nothing persisting: {doc:#}"
    );
    assert!(
        other.reap(Duration::from_secs(5)).is_some(),
        "the other instance was stopped"
    );

    assert!(
        s.path("app.pid").exists(),
        "the button's PID file is not removed"
    );

    // Run again from the button: no finding at all, exit 0.
    let (code, doc, button) = run("check", "check");
    assert!(
        keys(&doc, "pid-file-stop").is_empty(),
        "not running, not stale: {doc:#}"
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        std::fs::read_to_string(s.path("app.pid")).unwrap().trim(),
        button.to_string()
    );
    let reserved: i64 = s
        .journal()
        .query_row(
            "SELECT count(*) FROM plugin_state WHERE key = 'doctor:own-pids'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        reserved, 0,
        "the host's reserved state entry is never stored"
    );
}

#[test]
fn a_respawned_process_is_persisting_with_its_supervisor_not_fixed() {
    let s = Scenario::new();
    let mut d = Deployment::new(&s, "a");
    let supervisor = d.start(&["sh", "-c", "while :; do sleep 3604; done", "respawner"]);
    let first = child_of(supervisor.0, &["sleep", "3604"]);
    s.policy(&format!(
        r#"
[plugins.pid-file-stop]
grants.processes = true
grants.signal = {{ match = ["^sleep 3604$"] }}
config = {{ targets = [{{ name = "sleeper", pattern = "^sleep 3604$", scope = {scope}, grace_ms = 500 }}] }}
"#,
        scope = d.scope()
    ));

    let (code, doc) = s.doctor_json(&["fix"]);
    let f = finding(&doc, "pid-file-stop", "sleeper:running").unwrap_or_else(|| panic!("{doc:#}"));
    assert_eq!(outcomes(f), ["applied"], "{f:#}");
    assert!(wait_gone(first, Duration::from_secs(5)));
    assert_eq!(
        f["status"], "persisting",
        "the supervisor brought it back: {f:#}"
    );
    assert_eq!(code, 2, "{doc:#}");

    let (code, doc) = s.doctor_json(&["check"]);
    let f = finding(&doc, "pid-file-stop", "sleeper:running").unwrap_or_else(|| panic!("{doc:#}"));
    let message = f["message"].as_str().unwrap();
    assert!(
        message.starts_with("persisting — respawned by parent pid"),
        "{message}"
    );
    assert!(
        message.contains(&supervisor.0.to_string()) && message.contains("respawner"),
        "names the supervisor: {message}"
    );
    assert!(
        f["actions"].as_array().unwrap().is_empty(),
        "not stopped again and again: {f:#}"
    );
    assert_eq!(f["status"], "persisting");
    assert_eq!(code, 2);
}

#[test]
fn policy_validate_warns_about_a_host_wide_scope() {
    let s = Scenario::new();
    s.policy(
        "[plugins.pid-file-stop]\ngrants.processes = true\n\n[[plugins.pid-file-stop.config.targets]]\nname = \"a\"\npattern = \"^sleep 1$\"\nscope = \"host\"\n\n[[plugins.pid-file-stop.config.targets]]\nname = \"b\"\npattern = \"^sleep 2$\"\nscope = { user = 0 }\n",
    );
    let out = s.doctor(&["policy", "validate"]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning")
            && stderr.contains("plugins.pid-file-stop.config.targets[0].scope"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("targets[1]"),
        "a named scope is fine: {stderr}"
    );
    assert!(
        stderr.contains("plugins.pid-file-stop.grants.processes = true"),
        "a host-wide process grant is warned about: {stderr}"
    );
}

#[test]
fn policy_validate_warns_about_host_wide_grants_and_refuses_an_empty_scope() {
    let s = Scenario::new();
    let target = "[[plugins.pid-file-stop.config.targets]]\nname = \"a\"\npid_file = \"/run/a.pid\"\npattern = \"^a$\"\n";
    s.policy(&format!(
        "[plugins.pid-file-stop]\ngrants.processes = {{ user = 0 }}\ngrants.signal = {{ match = [\"^a$\"] }}\n{target}"
    ));
    let out = s.doctor(&["policy", "validate"]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("grants.processes") && !stderr.contains("grants.signal"),
        "scoped grants: {stderr}"
    );

    s.policy(&format!(
        "[plugins.pid-file-stop]\ngrants.processes = true\ngrants.signal = {{ match = [\"^a$\"] }}\n{target}"
    ));
    let stderr = String::from_utf8_lossy(&s.doctor(&["policy", "validate"]).stderr).to_string();
    assert!(
        stderr.contains("grants.processes = true") && stderr.contains("grants.signal:"),
        "{stderr}"
    );

    s.policy(&format!(
        "[plugins.pid-file-stop]\ngrants.processes = {{}}\n{target}"
    ));
    let out = s.doctor(&["policy", "validate"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(s.policy_path()).unwrap();
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("grants.processes"))
        .unwrap();
    assert!(
        stderr.contains(&format!(
            "policy.toml:{line}: plugins.pid-file-stop.grants.processes: an empty scope table"
        )),
        "file, line and key: {stderr}"
    );
}

#[test]
fn job_health_touches_only_its_own_deployments_rows() {
    let s = Scenario::new();
    let script = worker_script();
    let (mut a, mut b) = (Deployment::new(&s, "a"), Deployment::new(&s, "b"));
    let mut live = Vec::new();
    for d in [&mut a, &mut b] {
        Connection::open(d.path("jobs.db"))
            .unwrap()
            .execute_batch("CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT, pid TEXT, attempts INTEGER NOT NULL DEFAULT 0); INSERT INTO jobs (id, status) VALUES (1, 'running'), (2, 'running');")
            .unwrap();
        for (name, id) in [("w1", 1), ("w2", 2)] {
            let ready = format!("{name}.ready");
            let sql = format!("UPDATE jobs SET pid = '{{pid}}' WHERE id = {id}");
            let w = d.start(&[
                "python3", &script, "jobs.db", "--ready", &ready, "--exec", &sql,
            ]);
            wait_for(&d.path(&ready));
            live.push(w);
        }
    }
    // Each deployment's job 2 loses its worker; the command lines are the same.
    for dead in [live[1], live[3]] {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(dead.0 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        assert!(wait_gone(dead, Duration::from_secs(5)));
    }
    let b_db = std::fs::read(b.path("jobs.db")).unwrap();
    let root = s.root().display().to_string();
    s.policy(&format!(
        "[databases.jobs]\npath = \"{root}/a/jobs.db\"\n\n[plugins.job-health]\ngrants.processes = true\ngrants.sqlite = [\"jobs\"]\ngrants.sqlite_write = [\"jobs\"]\nconfig = {{ db = \"jobs\", worker_match = \"db_worker\\\\.py\" }}\n"
    ));
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    assert_eq!(
        keys(&doc, "job-health"),
        [
            "table:jobs:summary".to_string(),
            format!("worker:{}:orphaned", live[1].0)
        ],
        "{doc:#}"
    );
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc:#}");
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 0, "{doc:#}");
    let status: String = Connection::open(a.path("jobs.db"))
        .unwrap()
        .query_row("SELECT status FROM jobs WHERE id = 2", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "pending", "A's orphan is requeued");
    assert!(
        alive(live[0]) && alive(live[2]),
        "both live workers are untouched"
    );
    assert_eq!(
        std::fs::read(b.path("jobs.db")).unwrap(),
        b_db,
        "B's database is byte-identical"
    );
}

/// The harness itself: a launcher's or a respawner's children must not
/// outlive the test (adopted by init, they would pile up run after run).
#[test]
fn a_harness_process_takes_what_it_started_with_it() {
    let launcher = Proc::spawn(&["sh", "-c", "sleep 3612 & wait"]);
    let child = child_of(launcher.pid(), &["sleep", "3612"]);
    drop(launcher);
    assert!(
        wait_gone(child, Duration::from_secs(5)),
        "pid {} outlived its launcher",
        child.0
    );
}
