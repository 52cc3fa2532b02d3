//! port-9403-freer against real listeners: python3 processes bound to free
//! loopback ports picked at test time (9403 itself may be taken here).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::docker::Docker;
use support::engines::TestEngine;
use support::{finding, plugin_summary, Proc, Scenario};

const PLUGIN: &str = "port-9403-freer";

/// A python3 listener: `tag` is in its command line so grants and
/// expectations can name it; `health` adds an HTTP server answering `status`.
fn listener(port: u16, host: &str, tag: &str) -> Proc {
    let family = if host.contains(':') {
        "socket.AF_INET6"
    } else {
        "socket.AF_INET"
    };
    let script = format!(
        "# {tag}\nimport socket,time\ns=socket.socket({family})\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{host}',{port}))\ns.listen()\nwhile True: time.sleep(1)\n"
    );
    let p = Proc::spawn(&["python3", "-c", &script]);
    wait_listening(port);
    p
}

/// An HTTP server on `port` answering every GET with `status`.
fn http_server(port: u16, status: u16, tag: &str) -> Proc {
    let script = format!(
        "import http.server\nclass H(http.server.BaseHTTPRequestHandler):\n  def do_GET(self):\n    self.send_response({status}); self.end_headers(); self.wfile.write(b'x')\n  def log_message(self,*a): pass\nhttp.server.HTTPServer(('127.0.0.1',{port}),H).serve_forever()\n# {tag}"
    );
    let p = Proc::spawn(&["python3", "-c", &script]);
    wait_listening(port);
    p
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !bindable(port) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing started listening on port {port}");
}

/// Whether the port can be bound right now (on both loopbacks' wildcard).
fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
        && std::net::TcpListener::bind(("::", port))
            .map(|_| true)
            .unwrap_or_else(|e| e.kind() != std::io::ErrorKind::AddrInUse)
}

fn policy(s: &Scenario, ports: &str, signal: &str, extra: &str) {
    s.policy(&format!(
        "[plugins.port-9403-freer]\ngrants.sockets = true\ngrants.processes = true\ngrants.probe = [\"127.0.0.1:*\", \"[::1]:*\"]\ngrants.signal = {{ match = [{signal:?}] }}\nconfig = {{ ports = {ports}, grace_ms = 1000, deadline_ms = 5000{extra} }}\n"
    ));
}

fn actions(f: &Value) -> Vec<(String, String)> {
    f["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn journal_actions(s: &Scenario) -> Vec<(String, String, String, String)> {
    let db = s.journal();
    let mut stmt = db
        .prepare("SELECT kind, outcome, detail, params FROM actions WHERE plugin = 'port-9403-freer' ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn unexpected_listener_is_named_stopped_and_the_port_bound() {
    let s = Scenario::new();
    let port = support::free_port();
    let mut stray = listener(port, "127.0.0.1", "stray-uvicorn-a1");
    policy(&s, &format!("[{port}]"), "stray-uvicorn-a1", "");

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    let key = format!("port:{port}:unexpected-owner");
    let f = finding(&doc, PLUGIN, &key).unwrap_or_else(|| panic!("no {key} in {doc:#}"));
    assert_eq!(f["severity"], "critical");
    let message = f["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("pid {}", stray.pid())),
        "{message}"
    );
    assert!(
        message.contains("stray-uvicorn-a1"),
        "command line named: {message}"
    );
    assert_eq!(
        actions(f),
        vec![
            ("stop-process".into(), "planned".into()),
            ("wait-port-free".into(), "planned".into())
        ]
    );
    assert!(stray.running(), "check never acts");

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc:#}");
    let f = finding(&doc, PLUGIN, &key).unwrap();
    assert_eq!(
        actions(f),
        vec![
            ("stop-process".into(), "applied".into()),
            ("wait-port-free".into(), "applied".into())
        ]
    );
    assert_eq!(f["status"], "fixed", "{f:#}");
    assert!(
        stray.reap(Duration::from_secs(5)).is_some(),
        "the stray exited"
    );
    assert!(bindable(port), "port {port} can be bound after fix");

    let journal = journal_actions(&s);
    let stop = journal
        .iter()
        .find(|a| a.0 == "stop-process" && a.1 == "applied")
        .expect("stop journalled");
    assert!(
        stop.3.contains(&stray.pid().to_string()),
        "params name the pid: {stop:?}"
    );
    let wait = journal
        .iter()
        .find(|a| a.0 == "wait-port-free" && a.1 == "applied")
        .expect("verification journalled");
    assert!(
        wait.2.contains("bound"),
        "verification by binding: {wait:?}"
    );
    assert!(wait.3.contains(&port.to_string()), "{wait:?}");
}

#[test]
fn expected_healthy_owner_is_untouched() {
    let s = Scenario::new();
    let port = support::free_port();
    let mut server = http_server(port, 200, "good-service-b2");
    policy(
        &s,
        &format!("[{{ port = {port}, expect = {{ command = \"good-service-b2\" }}, health = \"http://127.0.0.1:{port}/health\" }}]"),
        "good-service-b2",
        ", stale_if_unhealthy = true",
    );
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc:#}");
    assert!(support::findings(&doc, PLUGIN).is_empty(), "{doc:#}");
    assert_eq!(plugin_summary(&doc, PLUGIN)["outcome"], "ok");
    assert!(server.running(), "the expected healthy owner still runs");
    assert!(journal_actions(&s).is_empty());
}

#[test]
fn unhealthy_expected_owner_is_stopped_only_when_stale_if_unhealthy() {
    let s = Scenario::new();
    let port = support::free_port();
    let mut server = http_server(port, 503, "sick-service-c3");
    let ports = format!("[{{ port = {port}, expect = {{ command = \"sick-service-c3\" }}, health = \"http://127.0.0.1:{port}/health\" }}]");
    let key = format!("port:{port}:stale-owner");

    policy(&s, &ports, "sick-service-c3", "");
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 1, "a warning only: {doc:#}");
    let f = finding(&doc, PLUGIN, &key).unwrap_or_else(|| panic!("no {key} in {doc:#}"));
    assert_eq!(f["severity"], "warning");
    assert!(f["message"].as_str().unwrap().contains("503"), "{f:#}");
    assert!(actions(f).is_empty(), "no plan without stale_if_unhealthy");
    assert!(server.running(), "left alone");

    policy(&s, &ports, "sick-service-c3", ", stale_if_unhealthy = true");
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc:#}");
    let f = finding(&doc, PLUGIN, &key).unwrap();
    assert_eq!(f["severity"], "critical");
    assert_eq!(
        actions(f),
        vec![
            ("stop-process".into(), "applied".into()),
            ("wait-port-free".into(), "applied".into())
        ]
    );
    assert!(
        server.reap(Duration::from_secs(5)).is_some(),
        "the stale owner was stopped"
    );
    assert!(bindable(port));
}

#[test]
fn term_ignoring_owner_is_killed_after_grace() {
    let s = Scenario::new();
    let port = support::free_port();
    let script = format!(
        "import signal,socket,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ns=socket.socket()\ns.bind(('127.0.0.1',{port}))\ns.listen()\nwhile True: time.sleep(1)\n# stubborn-d4"
    );
    let mut stubborn = Proc::spawn(&["python3", "-c", &script]);
    wait_listening(port);
    policy(&s, &format!("[{port}]"), "stubborn-d4", "");

    let started = Instant::now();
    let (code, doc) = s.doctor_json(&["fix"]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{doc:#}");
    let f = finding(&doc, PLUGIN, &format!("port:{port}:unexpected-owner")).unwrap();
    assert_eq!(
        actions(f),
        vec![
            ("stop-process".into(), "applied".into()),
            ("wait-port-free".into(), "applied".into())
        ]
    );
    let stop = &f["actions"][0];
    assert!(
        stop["detail"].as_str().unwrap().contains("killed"),
        "KILL after grace: {stop:#}"
    );
    assert!(
        took >= Duration::from_millis(1000),
        "the grace period was given: {took:?}"
    );
    let status = stubborn.reap(Duration::from_secs(5)).expect("exited");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "died of SIGKILL");
    assert!(bindable(port));
}

#[test]
fn ipv6_listener_is_found_and_freed() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipping: no IPv6 loopback here");
        return;
    }
    let s = Scenario::new();
    let port = support::free_port();
    let mut v6 = listener(port, "::1", "v6-stray-e5");
    policy(&s, &format!("[{port}]"), "v6-stray-e5", "");

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    let f = finding(&doc, PLUGIN, &format!("port:{port}:unexpected-owner"))
        .unwrap_or_else(|| panic!("{doc:#}"));
    let message = f["message"].as_str().unwrap();
    assert!(message.contains(&format!("[::1]:{port}")), "{message}");
    assert!(message.contains(&format!("pid {}", v6.pid())), "{message}");

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc:#}");
    assert!(v6.reap(Duration::from_secs(5)).is_some());
    assert!(
        std::net::TcpListener::bind(("::1", port)).is_ok(),
        "[::1]:{port} bindable"
    );
}

#[test]
fn listener_owned_by_a_child_of_its_starter() {
    let s = Scenario::new();
    let port = support::free_port();
    // The shell forks python (no exec: more commands follow) and waits; the
    // socket belongs to the child, not to the process that started it.
    let script = format!(
        "python3 -c 'import socket,time,os\ns=socket.socket()\ns.bind((\"127.0.0.1\",{port}))\ns.listen()\nprint(os.getpid(), flush=True)\nwhile True: time.sleep(1)\n# child-owner-f6'; echo done"
    );
    let mut starter = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("sh");
    let mut line = String::new();
    BufReader::new(starter.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let child_pid: u32 = line.trim().parse().expect("child pid");
    assert_ne!(child_pid, starter.id());
    struct Reap(std::process::Child, u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = nix_kill(self.1);
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut starter = Reap(starter, child_pid);
    wait_listening(port);
    policy(&s, &format!("[{port}]"), "child-owner-f6", "");

    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    let f = finding(&doc, PLUGIN, &format!("port:{port}:unexpected-owner")).unwrap();
    let message = f["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("pid {child_pid}")),
        "the child is named: {message}"
    );
    assert!(
        !message.contains(&format!("pid {} ", starter.0.id())),
        "not the starter: {message}"
    );
    let evidence = f.to_string();
    let _ = evidence;

    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc:#}");
    // The child was stopped; the shell then prints "done" and exits.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && starter.0.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        starter.0.try_wait().unwrap().is_some(),
        "the starter finished once its child was stopped"
    );
    assert!(bindable(port));
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map(drop)
}

#[test]
fn expected_owner_with_an_unexpected_neighbour_keeps_the_port() {
    // The expected owner holds 127.0.0.1, a stray holds [::1] on the same port:
    // only the stray is stopped, and no wait for a free port is planned.
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipping: no IPv6 loopback here");
        return;
    }
    let s = Scenario::new();
    let port = support::free_port();
    let mut good = listener(port, "127.0.0.1", "keeper-g7");
    let script = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET6)\ns.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\ns.bind(('::1',{port}))\ns.listen()\nwhile True: time.sleep(1)\n# intruder-g7"
    );
    let mut bad = Proc::spawn(&["python3", "-c", &script]);
    // Listening on [::1] before the check, however loaded the machine is.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("::1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stray never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    policy(
        &s,
        &format!("[{{ port = {port}, expect = {{ command = \"keeper-g7\" }} }}]"),
        "-g7",
        "",
    );
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 0, "{doc:#}");
    let f = finding(&doc, PLUGIN, &format!("port:{port}:unexpected-owner"))
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert_eq!(actions(f), vec![("stop-process".into(), "applied".into())]);
    assert!(bad.reap(Duration::from_secs(5)).is_some());
    assert!(good.running(), "the expected owner is never touched");
}

/// A container (host network, so its socket is in our namespace) holds the
/// port: it is mapped to the container through its owner's cgroup, named by
/// the engine, and stopped through the engine — not by signalling its process
/// — with the plugin's `grace_ms` (2 s) as the engine's stop timeout: busybox
/// httpd as the container's pid 1 ignores TERM, so the engine kills it after
/// the grace, and the stop takes the grace plus the engine's own overhead
/// (not the engines' default 10 s). On Podman and on Docker.
fn container_holding_the_port_is_stopped_through_the_engine(engine: &dyn TestEngine) {
    engine.import_busybox("localhost/busybox:1.36");
    let port = support::free_port();
    let id = engine.create(&[
        "--name",
        "web-old",
        "--network",
        "host",
        "localhost/busybox:1.36",
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        &format!("127.0.0.1:{port}"),
    ]);
    let started = engine.cli(&["start", &id]);
    if !started.status.success() {
        println!(
            "{}: not run: containers cannot start here: {}",
            engine.name(),
            String::from_utf8_lossy(&started.stderr)
        );
        return;
    }
    wait_listening(port);
    let s = Scenario::new();
    s.policy(&format!(
        "[container_engine]\nsocket = {:?}\ntimeout = \"30s\"\n\n[plugins.port-9403-freer]\ngrants.sockets = true\ngrants.processes = true\ngrants.containers = true\ngrants.containers_write = [\"web-*\"]\nconfig = {{ ports = [{{ port = {port}, expect = {{ container = \"web-new\" }} }}], grace_ms = 2000, deadline_ms = 20000 }}\n",
        engine.socket().display().to_string()
    ));
    let (code, doc) = s.doctor_json(&["check"]);
    assert_eq!(code, 2, "{doc:#}");
    let key = format!("port:{port}:unexpected-container");
    let f = finding(&doc, PLUGIN, &key).unwrap_or_else(|| panic!("no {key} in {doc:#}"));
    let message = f["message"].as_str().unwrap();
    assert!(
        message.contains("container web-old") && message.contains("cgroup"),
        "{message}"
    );
    assert_eq!(
        actions(f),
        vec![
            ("container-stop".into(), "planned".into()),
            ("wait-port-free".into(), "planned".into())
        ]
    );

    let fix_started = Instant::now();
    let (code, doc) = s.doctor_json(&["fix"]);
    let fix_took = fix_started.elapsed();
    let f = finding(&doc, PLUGIN, &key).unwrap();
    assert_eq!(
        actions(f),
        vec![
            ("container-stop".into(), "applied".into()),
            ("wait-port-free".into(), "applied".into())
        ],
        "{f:#}"
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(engine.inspect_format(&id, "{{.State.Status}}"), "exited");
    assert!(bindable(port));
    let (stop_ms, detail): (i64, String) = s
        .journal()
        .query_row(
            "SELECT duration_ms, detail FROM actions WHERE plugin = ?1 AND kind = 'container-stop'",
            [PLUGIN],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    println!(
        "{}: container-stop with grace_ms = 2000 took {stop_ms} ms ({detail}); the whole fix {} ms",
        engine.name(),
        fix_took.as_millis()
    );
    assert!(
        (1900..8000).contains(&stop_ms),
        "the 2 s grace reached the engine (its default is 10 s): {stop_ms} ms"
    );
}

#[test]
fn container_holding_the_port_is_stopped_through_the_podman_engine() {
    container_holding_the_port_is_stopped_through_the_engine(&support::podman::Podman::start());
}

#[test]
fn container_holding_the_port_is_stopped_through_the_docker_engine() {
    if let Some(docker) =
        Docker::or_say_why("container_holding_the_port_is_stopped_through_the_docker_engine")
    {
        container_holding_the_port_is_stopped_through_the_engine(docker);
    }
}
