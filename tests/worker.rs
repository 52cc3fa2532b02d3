//! Plugin code runs in a confined worker process. Seen from outside while a
//! plugin runs: the worker has left root and every capability, cannot gain
//! privileges, is under a seccomp filter, holds no descriptor but its
//! socket, stdio and wasmtime's own; and when it is killed mid-call or runs
//! out of its memory, that plugin fails and the run goes on.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// A run with one hostile plugin beside pid-file-stop, which has a stale
/// PID file to report.
fn scenario(doctor_extra: &str, hostile: &str, table: &str) -> Scenario {
    scenario_in(Scenario::new(), doctor_extra, hostile, table)
}

fn scenario_in(s: Scenario, doctor_extra: &str, hostile: &str, table: &str) -> Scenario {
    let wasm = test_plugins().join(format!("{}.wasm", hostile.replace('-', "_")));
    s.install_plugin(hostile, &wasm);
    let bystander = s.bystander();
    s.policy_with(
        doctor_extra,
        &format!("{bystander}\n[plugins.{hostile}]\n{table}\n"),
    );
    s
}

/// `doctor check --format json`, started and left running.
fn start_check(s: &Scenario) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_doctor"))
        .args(["check", "--format", "json", "--policy"])
        .arg(s.policy_path())
        .env("DOCTOR_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start doctor")
}

fn finish(mut doctor: std::process::Child) -> (i32, serde_json::Value) {
    let mut out = String::new();
    doctor
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let code = doctor.wait().unwrap().code().unwrap_or(-1);
    let doc = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    (code, doc)
}

/// The worker running `plugin` for doctor `parent`, once it is there.
fn worker_of(parent: u32, plugin: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let ours = argv.get(1) == Some(&&b"__plugin-worker"[..])
                && argv.get(2) == Some(&plugin.as_bytes());
            if ours && field(pid, "PPid") == parent.to_string() {
                return pid;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no worker of {plugin} under doctor {parent}");
}

/// A field of `/proc/PID/status`, whitespace collapsed.
fn field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn nobody() -> (String, String) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("a nobody user");
    let parts: Vec<&str> = line.split(':').collect();
    (parts[2].to_string(), parts[3].to_string())
}

fn error_of(doc: &serde_json::Value, plugin: &str) -> String {
    plugin_summary(doc, plugin)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn bystander_reports(doc: &serde_json::Value) {
    assert_eq!(
        plugin_summary(doc, "pid-file-stop")["outcome"],
        "ok",
        "{doc}"
    );
    assert!(
        finding(doc, "pid-file-stop", "w:stale-pid-file").is_some(),
        "{doc}"
    );
}

#[test]
fn plugin_code_runs_as_nobody_with_no_capabilities_no_new_privs_and_a_seccomp_filter() {
    if !nix_is_root() {
        eprintln!("not run: leaving root needs root");
        return;
    }
    let s = scenario(
        "plugin_timeout = \"5s\"\nplugin_memory = \"32MiB\"",
        "hostile-loop",
        "",
    );
    let doctor = start_check(&s);
    let worker = worker_of(doctor.id(), "hostile-loop");
    // The filter is the worker's last step before it runs plugin code.
    let deadline = Instant::now() + Duration::from_secs(4);
    while field(worker, "Seccomp") != "2" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (uid, gid) = nobody();
    let seen = [
        ("Name", field(worker, "Name")),
        ("Uid", field(worker, "Uid")),
        ("Gid", field(worker, "Gid")),
        ("Groups", field(worker, "Groups")),
        ("CapEff", field(worker, "CapEff")),
        ("CapPrm", field(worker, "CapPrm")),
        ("CapBnd", field(worker, "CapBnd")),
        ("NoNewPrivs", field(worker, "NoNewPrivs")),
        ("Seccomp", field(worker, "Seccomp")),
    ];
    // Every thread, not only the first: wasmtime's epoch ticker and
    // tokio's workers run plugin-reachable code too.
    let threads: Vec<(String, String, String)> = std::fs::read_dir(format!("/proc/{worker}/task"))
        .unwrap()
        .flatten()
        .map(|task| {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let get = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default()
            };
            (get("Name"), get("NoNewPrivs"), get("Seccomp"))
        })
        .collect();
    let limits = std::fs::read_to_string(format!("/proc/{worker}/limits")).unwrap();
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{worker}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|target| target.display().to_string())
        .collect();
    let (code, doc) = finish(doctor);

    let want = [
        ("Name", "doctor-worker".to_string()),
        ("Uid", format!("{uid} {uid} {uid} {uid}")),
        ("Gid", format!("{gid} {gid} {gid} {gid}")),
        ("Groups", String::new()),
        ("CapEff", "0000000000000000".into()),
        ("CapPrm", "0000000000000000".into()),
        ("CapBnd", "0000000000000000".into()),
        ("NoNewPrivs", "1".into()),
        // 2: a filter.
        ("Seccomp", "2".into()),
    ];
    for ((name, got), (_, expected)) in seen.iter().zip(want.iter()) {
        assert_eq!(got, expected, "{name} of the worker");
    }
    assert!(threads.len() > 1, "{threads:?}");
    // One tokio thread, not one per CPU of the host (wasmtime-wasi's
    // default): a worker on a 128-CPU host starts what it does here.
    let tokio_threads = threads
        .iter()
        .filter(|(name, _, _)| name.starts_with("tokio"))
        .count();
    assert_eq!(tokio_threads, 1, "{threads:?}");
    for (name, no_new_privs, seccomp) in &threads {
        assert_eq!(
            (no_new_privs.as_str(), seccomp.as_str()),
            ("1", "2"),
            "thread {name}"
        );
    }
    // 4 × 32 MiB + 64 MiB.
    let data = 4 * (32u64 << 20) + (64 << 20);
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max data size") && l.contains(&format!("{data}"))),
        "{limits}"
    );
    // Its socket, stdio, and what wasmtime and tokio made: no file of the host.
    let host_files: Vec<&String> = fds
        .iter()
        .filter(|t| t.starts_with('/') && *t != "/dev/null" && !t.starts_with("/memfd:"))
        .collect();
    assert!(host_files.is_empty(), "the worker holds {host_files:?}");
    assert!(error_of(&doc, "hostile-loop").contains("deadline"), "{doc}");
    bystander_reports(&doc);
    assert_eq!(code, 3, "{doc}");
}

/// The children of `parent` whose comm is `name`.
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| field(*pid, "PPid") == parent.to_string() && field(*pid, "Name") == name)
        .collect()
}

#[test]
fn workers_are_forked_by_one_fork_server_that_holds_nothing_and_built_ins_run_in_place() {
    let s = scenario("plugin_timeout = \"3s\"", "hostile-loop", "");
    let doctor = start_check(&s);
    let parent = doctor.id();
    let worker = worker_of(parent, "hostile-loop");
    let builtin = worker_of(parent, "pid-file-stop");
    let servers = children_named(parent, "doctor-forksrv");
    // A built-in's code runs where it lies in doctor's binary: besides the
    // binary's own text, pages of its read-only data are executable.
    let maps = std::fs::read_to_string(format!("/proc/{builtin}/maps")).unwrap_or_default();
    let executable_from_binary = maps
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("r-xp"))
        .filter(|l| l.ends_with(env!("CARGO_BIN_EXE_doctor")))
        .count();
    // A forked process starts with its parent's auxiliary vector (the
    // kernel copies it at fork); an exec'd one gets its own, whose
    // pointers move with every exec's randomised stack.
    let auxv = |pid: u32| std::fs::read(format!("/proc/{pid}/auxv")).unwrap_or_default();
    let (worker_auxv, server_auxv) = (auxv(worker), servers.first().map(|s| auxv(*s)));
    let server_fds: Vec<String> = servers
        .first()
        .map(|server| {
            std::fs::read_dir(format!("/proc/{server}/fd"))
                .unwrap()
                .flatten()
                .map(|fd| fd.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let (code, doc) = finish(doctor);

    assert_eq!(
        servers.len(),
        1,
        "one fork server under doctor: {servers:?}"
    );
    assert!(executable_from_binary >= 2, "{maps}");
    assert!(!worker_auxv.is_empty());
    assert_eq!(
        Some(worker_auxv),
        server_auxv,
        "the worker was forked by the server, not exec'd"
    );
    let mut fds = server_fds;
    fds.sort();
    assert_eq!(
        fds,
        ["0", "1", "2"],
        "the server holds its control socket and stdio only"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{}", servers[0])).exists(),
        "the fork server outlived the run"
    );
    assert!(error_of(&doc, "hostile-loop").contains("deadline"), "{doc}");
    bystander_reports(&doc);
    assert_eq!(code, 3, "{doc}");
}

#[test]
fn a_stopped_fork_server_is_killed_instead_of_holding_doctor() {
    use doctor::worker::forkserver::{stderr_pipe, ForkServer};
    use std::os::fd::OwnedFd;
    let stop = |server: &ForkServer| {
        let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    };
    let doctor = std::path::Path::new(env!("CARGO_BIN_EXE_doctor"));

    // Asked for a worker, a stopped server never answers.
    let mut server = ForkServer::start_at(doctor).unwrap();
    let pid = server.pid();
    stop(&server);
    let (_ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let (_stderr, stderr_theirs) = stderr_pipe().unwrap();
    let asked = Instant::now();
    let refused = server.fork("pid-file-stop", OwnedFd::from(theirs), stderr_theirs);
    assert!(refused.is_err(), "a stopped server forked a worker");
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "{:?}",
        asked.elapsed()
    );
    drop(server);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

    // Closed while stopped, it is killed rather than waited for.
    let server = ForkServer::start_at(doctor).unwrap();
    let pid = server.pid();
    stop(&server);
    let closing = Instant::now();
    drop(server);
    assert!(
        closing.elapsed() < Duration::from_secs(20),
        "{:?}",
        closing.elapsed()
    );
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn a_worker_killed_mid_call_fails_only_its_plugin() {
    let s = scenario("plugin_timeout = \"20s\"", "hostile-loop", "");
    let started = Instant::now();
    let doctor = start_check(&s);
    let worker = worker_of(doctor.id(), "hostile-loop");
    // Let it be inside check(), looping.
    std::thread::sleep(Duration::from_millis(300));
    Command::new("kill")
        .args(["-KILL", &worker.to_string()])
        .status()
        .unwrap();
    let (code, doc) = finish(doctor);
    // A hang bound, not a speed goal: the loop alone would take 20 s.
    assert!(started.elapsed() < Duration::from_secs(15), "{doc}");
    let error = error_of(&doc, "hostile-loop");
    assert!(
        error.contains("worker process") && error.contains("SIGKILL"),
        "{error}"
    );
    bystander_reports(&doc);
    assert_eq!(code, 3, "{doc}");
}

#[test]
fn aliased_strings_past_the_plugins_memory_end_its_run_with_a_limit_error() {
    // 4096 strings aliasing one 1 MiB buffer: 4 GiB of copies from a
    // plugin that holds 1 MiB, against a plugin_memory of 32 MiB.
    let s = scenario(
        "plugin_memory = \"32MiB\"",
        "hostile-attacks",
        r#"grants.sqlite = []
config = { attack = "aliased-strings", db = "none", count = 4096, size = 1048576 }"#,
    );
    let (code, doc) = s.doctor_json(&["check"]);
    let error = error_of(&doc, "hostile-attacks");
    assert!(
        error.contains("exceeded its memory limit")
            && error.contains(&format!("more than {} bytes", 32 << 20)),
        "{error}"
    );
    assert!(findings(&doc, "hostile-attacks").is_empty(), "{doc}");
    bystander_reports(&doc);
    assert_eq!(code, 3, "{doc}");
}

#[test]
fn an_answer_larger_than_the_worker_may_hold_ends_that_plugins_run_not_doctors() {
    // A 100 MB value the policy lets a query return (sql_result_max), to a
    // plugin whose worker may hold 4 × 4 MiB + 64 MiB.
    let s = Scenario::new();
    let db = s.path("app.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t(x);")
        .unwrap();
    let s = scenario_in(
        s,
        "plugin_memory = \"4MiB\"\nsql_result_max = \"200MiB\"",
        "hostile-attacks",
        &format!(
            r#"grants.sqlite = ["app"]
config = {{ attack = "query", db = "app", sql = "SELECT randomblob(100000000)" }}

[databases.app]
path = "{}"
"#,
            db.display()
        ),
    );
    let (code, doc) = s.doctor_json(&["check"]);
    let error = error_of(&doc, "hostile-attacks");
    assert!(
        error.contains("its worker process ended during the call")
            && error.contains("running out of memory")
            && error.contains("memory allocation of"),
        "{error}"
    );
    bystander_reports(&doc);
    assert_eq!(code, 3, "{doc}");
}

#[test]
fn plugins_run_in_workers_when_doctor_is_not_root_too() {
    if !nix_is_root() {
        eprintln!("not run: needs root to become another user");
        return;
    }
    // Plugins are loaded on short-lived threads and checked later: a
    // worker must outlive the thread that loaded it.
    let s = Scenario::new();
    s.policy(&s.bystander());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(s.root(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let (uid, gid) = nobody();
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            env!("CARGO_BIN_EXE_doctor"),
            "check",
            "--format",
            "json",
            "--policy",
        ])
        .arg(s.policy_path())
        .env("DOCTOR_LOG", "warn")
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    bystander_reports(&doc);
    assert_eq!(out.status.code(), Some(1), "{doc}");
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}
