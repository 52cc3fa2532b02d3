//! Attacks on the host's own calls by a hostile plugin (tests/hostile/
//! hostile-attacks, aimed by its config), run beside a well-behaved plugin.
//! Each test checks what an operator would: doctor finished with its
//! documented exit code, the attack was refused or bounded with a plain
//! reason in the journal, the other plugin still reported, and nothing
//! outside the grants changed.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

/// A scenario with hostile-attacks installed, aimed by `config` with
/// `grants`, beside pid-file-stop reporting one stale PID file.
fn attack(doctor_extra: &str, grants: &str, config: &str) -> Scenario {
    let s = Scenario::new();
    s.install_plugin(
        "hostile-attacks",
        &test_plugins().join("hostile_attacks.wasm"),
    );
    aim(&s, doctor_extra, grants, config);
    s
}

fn aim(s: &Scenario, doctor_extra: &str, grants: &str, config: &str) {
    let bystander = s.bystander();
    s.policy_with(
        doctor_extra,
        &format!("{bystander}\n[plugins.hostile-attacks]\n{grants}\nconfig = {{ {config} }}\n"),
    );
}

/// The well-behaved plugin's finding survived whatever the attack did.
fn bystander_intact(doc: &serde_json::Value) {
    assert!(
        finding(doc, "pid-file-stop", "w:stale-pid-file").is_some(),
        "pid-file-stop still reports: {doc}"
    );
    assert_eq!(plugin_summary(doc, "pid-file-stop")["outcome"], "ok");
}

/// What the attack's finding says (read attacks report the host's answer).
fn said(doc: &serde_json::Value, attack: &str) -> String {
    finding(doc, "hostile-attacks", attack)
        .map(|f| f["message"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// The outcome and detail of each action of the attack's finding, from the journal.
fn journaled_actions(s: &Scenario, attack: &str) -> Vec<(String, String)> {
    let conn = s.journal();
    let mut stmt = conn
        .prepare("SELECT outcome, detail FROM actions WHERE plugin = 'hostile-attacks' AND finding_key = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([attack], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn plugin_error(s: &Scenario, plugin: &str) -> String {
    s.journal()
        .query_row("SELECT coalesce(error, '') FROM plugin_runs WHERE plugin = ?1 ORDER BY id DESC LIMIT 1", [plugin], |r| r.get(0))
        .unwrap()
}

fn task_start_time(pid: u32, tid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap();
    stat.rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------- signals

#[test]
fn a_thread_of_doctors_multithreaded_parent_is_never_signalled() {
    // This test process is doctor's parent and has threads; aim at one of them.
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        tid_tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
        let _ = stop_rx.recv();
    });
    let tid = tid_rx.recv().unwrap();
    let start = task_start_time(std::process::id(), tid);
    let s = attack(
        "",
        "grants.processes = true\ngrants.signal = { match = [\".*\"] }",
        &format!("attack = \"stop\", pid = {tid}, start_time = {start}"),
    );
    let (code, doc) = s.doctor_json(&["fix"]);
    // Still here: the whole thread group (this test) was not killed.
    assert_eq!(code, 2, "a refused fix is critical: {doc}");
    let actions = journaled_actions(&s, "stop");
    assert_eq!(actions[0].0, "refused", "{actions:?}");
    assert!(
        actions[0].1.contains("ancestors"),
        "the refusal says why: {actions:?}"
    );
    bystander_intact(&doc);
    stop_tx.send(()).unwrap();
    worker.join().unwrap();
}

#[test]
fn a_thread_of_an_unrelated_process_is_refused_and_its_process_lives() {
    let mut victim = Proc::spawn(&["python3", "-c", "import threading,time\nt=threading.Thread(target=time.sleep,args=(60,));t.start();time.sleep(60)"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let tid = loop {
        let tasks: Vec<u32> = std::fs::read_dir(format!("/proc/{}/task", victim.pid()))
            .unwrap()
            .filter_map(|t| t.ok()?.file_name().to_str()?.parse().ok())
            .filter(|t| *t != victim.pid())
            .collect();
        if let Some(t) = tasks.first() {
            break *t;
        }
        assert!(Instant::now() < deadline, "python never started its thread");
        std::thread::sleep(Duration::from_millis(20));
    };
    let start = task_start_time(victim.pid(), tid);
    let s = attack(
        "",
        "grants.processes = true\ngrants.signal = { match = [\"python3\"] }",
        &format!("attack = \"stop\", pid = {tid}, start_time = {start}"),
    );
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 2, "{doc}");
    let actions = journaled_actions(&s, "stop");
    assert_eq!(actions[0].0, "refused", "{actions:?}");
    assert!(
        actions[0]
            .1
            .contains(&format!("thread of process {}", victim.pid())),
        "{actions:?}"
    );
    assert!(victim.running(), "the thread's process was not signalled");
    bystander_intact(&doc);
}

// ------------------------------------------------------------------ files

/// Aims `attack` ("stop" or "signal") at `pid` with every signal grant
/// there is, and returns the journaled actions after `doctor fix`.
fn aim_at_helper(attack_kind: &str, pid: u32) -> (Vec<(String, String)>, serde_json::Value) {
    let start = task_start_time(pid, pid);
    let s = attack(
        "",
        "grants.processes = true\ngrants.signal = { match = [\".*\"] }",
        &format!("attack = \"{attack_kind}\", pid = {pid}, start_time = {start}, grace_ms = 100"),
    );
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 2, "a refused fix is critical: {doc}");
    bystander_intact(&doc);
    (journaled_actions(&s, attack_kind), doc)
}

fn refused_by_the_helper_guard(actions: &[(String, String)]) {
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0].0, "refused", "{actions:?}");
    assert!(
        actions[0].1.starts_with("guard:")
            && actions[0].1.contains("helper process")
            && actions[0].1.contains("through its engine"),
        "the refusal names the guard and the way: {actions:?}"
    );
}

/// A process whose executable is called `conmon` (a copy of sleep) is an
/// engine helper to doctor, whatever its grants: refused, and it lives. A
/// user's own binary so named is refused too (the safe side).
#[test]
fn a_process_running_a_helpers_executable_is_never_stopped_or_signalled() {
    let dir = tempfile::tempdir().unwrap();
    for helper in ["conmon", "containerd-shim-runc-v2", "docker-proxy"] {
        let exe = dir.path().join(helper);
        std::fs::copy("/bin/sleep", &exe).unwrap();
        let mut victim = Proc::spawn(&[exe.to_str().unwrap(), "300"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{}/exe", victim.pid())).ok() != Some(exe.clone()) {
            assert!(Instant::now() < deadline, "{helper} never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        for attack_kind in ["stop", "signal"] {
            let (actions, _) = aim_at_helper(attack_kind, victim.pid());
            refused_by_the_helper_guard(&actions);
            assert!(actions[0].1.contains(helper), "{actions:?}");
            assert!(victim.running(), "{helper} lives after {attack_kind}");
        }
    }
}

/// The real thing: the conmon of a running Podman container.
#[test]
fn a_live_containers_conmon_is_never_stopped() {
    let podman = support::podman::Podman::start();
    podman.import_busybox("localhost/busybox:latest");
    let id = podman.create(&[
        "--name",
        "monitored",
        "localhost/busybox:latest",
        "sleep",
        "300",
    ]);
    let started = podman.podman(&["start", &id]);
    if !started.status.success() {
        println!(
            "not run: the container cannot start here, so it has no conmon: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        return;
    }
    let inspect = |format: &str| {
        let out = podman.podman(&["inspect", "--format", format, &id]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let conmon: u32 = inspect("{{.State.ConmonPid}}").parse().unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{conmon}/exe")).unwrap(),
        Path::new("/usr/bin/conmon")
    );
    let conmon_start = task_start_time(conmon, conmon);
    for attack_kind in ["stop", "signal"] {
        let (actions, _) = aim_at_helper(attack_kind, conmon);
        refused_by_the_helper_guard(&actions);
        assert!(actions[0].1.contains("conmon"), "{actions:?}");
    }
    assert_eq!(
        task_start_time(conmon, conmon),
        conmon_start,
        "conmon lives"
    );
    assert_eq!(inspect("{{.State.Status}}"), "running");
    println!("conmon pid {conmon} of container {id} refused twice, still running");
}

#[test]
fn a_fifo_that_blocks_the_host_cannot_buy_time_to_swap_a_parent_for_a_symlink() {
    let s = Scenario::new();
    s.install_plugin(
        "hostile-attacks",
        &test_plugins().join("hostile_attacks.wasm"),
    );
    let root = s.root();
    std::fs::create_dir_all(root.join("run/a")).unwrap();
    std::fs::create_dir_all(root.join("outside")).unwrap();
    nix::unistd::mkfifo(
        &root.join("run/a/x.pid"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::fs::write(root.join("outside/x.pid"), "outside the grant\n").unwrap();
    aim(
        &s,
        "",
        &format!("grants.files_remove = [\"{}/run/*/x.pid\"]", root.display()),
        &format!(
            "attack = \"remove\", paths = [\"{}/run/a/x.pid\"]",
            root.display()
        ),
    );
    // While doctor runs: swap run/a for a symlink to outside/, then open the
    // FIFO for writing (through its new name) to release a blocked reader.
    let swapper = {
        let root = root.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(800));
            std::fs::rename(root.join("run/a"), root.join("run/a-moved")).unwrap();
            std::os::unix::fs::symlink(root.join("outside"), root.join("run/a")).unwrap();
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags_nonblock()
                .open(root.join("run/a-moved/x.pid"));
        })
    };
    let (code, doc) = s.doctor_json(&["fix"]);
    swapper.join().unwrap();
    assert!(
        root.join("outside/x.pid").exists(),
        "the file outside the grant is still there"
    );
    let actions = journaled_actions(&s, "remove");
    assert_eq!(actions[0].0, "refused", "{actions:?}");
    assert!(actions[0].1.contains("FIFO"), "{actions:?}");
    assert_eq!(code, 2, "{doc}");
    bystander_intact(&doc);
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}
impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

#[test]
fn a_symlinked_directory_inside_a_removal_grant_is_not_followed() {
    let s = Scenario::new();
    s.install_plugin(
        "hostile-attacks",
        &test_plugins().join("hostile_attacks.wasm"),
    );
    let root = s.root();
    std::fs::create_dir_all(root.join("run")).unwrap();
    std::fs::create_dir_all(root.join("outside")).unwrap();
    std::fs::write(root.join("outside/x.pid"), "1\n").unwrap();
    std::os::unix::fs::symlink(root.join("outside"), root.join("run/b")).unwrap();
    aim(
        &s,
        "",
        &format!("grants.files_remove = [\"{}/run/*/x.pid\"]", root.display()),
        &format!(
            "attack = \"remove\", paths = [\"{}/run/b/x.pid\"]",
            root.display()
        ),
    );
    let (code, doc) = s.doctor_json(&["fix"]);
    assert!(root.join("outside/x.pid").exists());
    let actions = journaled_actions(&s, "remove");
    assert_eq!(actions[0].0, "refused", "{actions:?}");
    assert!(actions[0].1.contains("is a symlink"), "{actions:?}");
    assert_eq!(code, 2, "{doc}");
}

#[test]
fn doctors_own_journal_and_lock_are_never_removed_even_through_a_hard_link() {
    let s = Scenario::new();
    s.install_plugin(
        "hostile-attacks",
        &test_plugins().join("hostile_attacks.wasm"),
    );
    let root = s.root();
    // A first run creates the journal; then plant a hard link to it.
    aim(&s, "", "", "attack = \"read\"");
    s.doctor(&["check"]);
    std::fs::create_dir_all(root.join("granted")).unwrap();
    std::fs::hard_link(root.join("journal.db"), root.join("granted/copy.db")).unwrap();
    let targets: Vec<String> = [
        "journal.db",
        "journal.db-wal",
        "journal.db-shm",
        "journal.db.lock",
        "granted/copy.db",
    ]
    .iter()
    .map(|n| format!("\"{}/{n}\"", root.display()))
    .collect();
    aim(
        &s,
        "",
        &format!(
            "grants.files_remove = [\"{0}/*\", \"{0}/granted/*\"]",
            root.display()
        ),
        &format!("attack = \"remove\", paths = [{}]", targets.join(", ")),
    );
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 2, "{doc}");
    let actions = journaled_actions(&s, "remove");
    // The journal and lock exist during the run: each removal refused by the guard.
    for (i, name) in ["journal.db", "journal.db.lock", "granted/copy.db"]
        .iter()
        .enumerate()
    {
        let seq = if i == 0 {
            0
        } else if i == 1 {
            3
        } else {
            4
        };
        assert_eq!(actions[seq].0, "refused", "{name}: {actions:?}");
        assert!(
            actions[seq].1.contains("doctor's own journal"),
            "{name}: {actions:?}"
        );
    }
    assert!(
        root.join("journal.db").exists()
            && root.join("journal.db.lock").exists()
            && root.join("granted/copy.db").exists()
    );
    let ok: String = s
        .journal()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn fifos_and_devices_inside_a_read_grant_are_refused_not_waited_on() {
    let s = attack("", "", "attack = \"read\"");
    let root = s.root();
    nix::unistd::mkfifo(
        &root.join("f.fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    for (path, kind) in [
        (root.join("f.fifo").display().to_string(), "FIFO"),
        ("/dev/zero".to_string(), "character device"),
    ] {
        aim(
            &s,
            "",
            &format!("grants.files = [\"{path}\"]"),
            &format!("attack = \"read\", path = \"{path}\""),
        );
        let (code, doc) = s.doctor_json(&["check"]);
        let answer = said(&doc, "read");
        assert!(
            answer.starts_with("invalid:")
                && answer.contains(&format!("is a {kind}, not a regular file")),
            "{path}: {answer}"
        );
        assert_eq!(
            code, 1,
            "the attack's finding is a warning, nothing hung: {doc}"
        );
        bystander_intact(&doc);
    }
}

#[test]
fn reads_are_capped_by_the_policy_whatever_max_bytes_asks() {
    let s = attack("", "", "attack = \"read\"");
    let big = s.path("big.log");
    std::fs::write(&big, vec![b'x'; 2 << 20]).unwrap();
    let path = s.root().join("big.log").display().to_string();
    let grants = format!("grants.files = [\"{path}\"]");
    let config = format!("attack = \"read\", path = \"{path}\", max_bytes = 4294967295");
    aim(&s, "", &grants, &config);
    let (_, doc) = s.doctor_json(&["check"]);
    let answer = said(&doc, "read");
    assert!(
        answer.starts_with("limit:") && answer.contains("file_read_max 1048576"),
        "{answer}"
    );
    aim(&s, "file_read_max = \"4MiB\"", &grants, &config);
    let (_, doc) = s.doctor_json(&["check"]);
    assert_eq!(said(&doc, "read"), format!("READ {} BYTES", 2 << 20));
}

// -------------------------------------------------------------- databases

fn database(s: &Scenario, name: &str, sql: &str) -> std::path::PathBuf {
    let path = s.root().join(name);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
    path
}

#[test]
fn a_database_label_behind_a_symlink_is_neither_read_nor_written() {
    let s = Scenario::new();
    s.install_plugin(
        "hostile-attacks",
        &test_plugins().join("hostile_attacks.wasm"),
    );
    let secret = database(
        &s,
        "secret.db",
        "CREATE TABLE s(v); INSERT INTO s VALUES ('root only');",
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = s.root().join("app.db");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let write = |attack: &str, sql: &str| {
        db_policy(
            &s,
            "",
            &link,
            &format!("attack = \"{attack}\", db = \"app\", sql = \"{sql}\""),
        );
        s.doctor_json(&["fix"])
    };
    let (_, doc) = write("query", "SELECT v FROM s");
    let answer = said(&doc, "query");
    assert!(
        answer.starts_with("denied:") && answer.contains("is a symlink"),
        "{answer}"
    );
    let (code, doc) = write("sql-exec", "DELETE FROM s");
    assert_eq!(code, 2, "{doc}");
    let actions = journaled_actions(&s, "sql-exec");
    assert_eq!(actions[0].0, "refused", "{actions:?}");
    let rows: i64 = rusqlite::Connection::open(&secret)
        .unwrap()
        .query_row("SELECT count(*) FROM s", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1, "nothing deleted through the link");
    bystander_intact(&doc);
}

fn db_policy(s: &Scenario, doctor_extra: &str, path: &Path, config: &str) {
    aim(
        s,
        doctor_extra,
        "grants.sqlite = [\"app\"]\ngrants.sqlite_write = [\"app\"]",
        config,
    );
    let text = std::fs::read_to_string(s.policy_path()).unwrap();
    std::fs::write(
        s.policy_path(),
        format!("{text}\n[databases.app]\npath = \"{}\"\n", path.display()),
    )
    .unwrap();
}

#[test]
fn max_rows_counts_the_rows_a_trigger_changes() {
    let s = Scenario::new();
    s.install_plugin(
        "hostile-attacks",
        &test_plugins().join("hostile_attacks.wasm"),
    );
    let path = database(
        &s,
        "app.db",
        "CREATE TABLE jobs(id INTEGER PRIMARY KEY, status TEXT); INSERT INTO jobs VALUES (1, 'running');
         CREATE TABLE audit(n); WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k LIMIT 50) INSERT INTO audit SELECT i FROM k;
         CREATE TRIGGER wipe AFTER UPDATE ON jobs BEGIN DELETE FROM audit; END;",
    );
    db_policy(&s, "", &path, "attack = \"sql-exec\", db = \"app\", sql = \"UPDATE jobs SET status = 'pending' WHERE id = 1\", max_rows = 1");
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 2, "{doc}");
    let actions = journaled_actions(&s, "sql-exec");
    assert_eq!(actions[0].0, "failed", "{actions:?}");
    assert!(
        actions[0]
            .1
            .contains("would change 51 rows, more than max-rows 1"),
        "{actions:?}"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let audit: i64 = conn
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    let status: String = conn
        .query_row("SELECT status FROM jobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        (audit, status.as_str()),
        (50, "running"),
        "rolled back whole"
    );
}

#[test]
fn queries_are_bounded_in_bytes_and_interrupted_at_the_deadline() {
    let s = Scenario::new();
    s.install_plugin(
        "hostile-attacks",
        &test_plugins().join("hostile_attacks.wasm"),
    );
    let path = database(&s, "app.db", "CREATE TABLE t(x);");
    db_policy(
        &s,
        "",
        &path,
        "attack = \"query\", db = \"app\", sql = \"SELECT randomblob(1000000000)\"",
    );
    let (_, doc) = s.doctor_json(&["check"]);
    assert!(
        said(&doc, "query").starts_with("limit:") && said(&doc, "query").contains("sql_result_max"),
        "{}",
        said(&doc, "query")
    );
    bystander_intact(&doc);

    let endless =
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";
    db_policy(
        &s,
        "plugin_timeout = \"1s\"",
        &path,
        &format!("attack = \"query\", db = \"app\", sql = \"{endless}\""),
    );
    let started = Instant::now();
    let (code, doc) = s.doctor_json(&["check"]);
    // Not a speed goal: a hang bound. Without the interrupt this never returns.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // The query stops at the deadline; the plugin then has no time left either.
    let error = plugin_error(&s, "hostile-attacks");
    let answer = said(&doc, "query");
    assert!(
        answer.contains("interrupted at its deadline") || error.contains("deadline"),
        "{answer} / {error}"
    );
    assert!(code == 1 || code == 3, "{doc}");
    bystander_intact(&doc);
}

// ------------------------------------------------------------ other bounds

#[test]
fn key_value_state_is_capped_in_key_size_value_size_and_count() {
    let s = attack("", "", "attack = \"kv-flood\", count = 200, size = 300");
    let (_, doc) = s.doctor_json(&["check"]);
    assert_eq!(
        said(&doc, "kv-flood"),
        "KEPT 0 OF 200",
        "keys over kv_max_key_bytes are refused"
    );
    aim(
        &s,
        "kv_max_keys = 50",
        "",
        "attack = \"kv-flood\", count = 200, size = 100",
    );
    let (_, doc) = s.doctor_json(&["check"]);
    assert_eq!(said(&doc, "kv-flood"), "KEPT 50 OF 200");
    let stored: i64 = s
        .journal()
        .query_row(
            "SELECT count(*) FROM plugin_state WHERE plugin = 'hostile-attacks'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 50);
    let log = s
        .journal()
        .query_row(
            "SELECT log FROM plugin_runs WHERE plugin = 'hostile-attacks' ORDER BY id DESC",
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap();
    assert!(log.contains("kv_max_keys 50"), "refusals are logged: {log}");
}

#[test]
fn waiting_for_a_port_needs_the_sockets_grant_and_is_capped() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let config = format!("attack = \"wait-port\", port = {port}, deadline_ms = 4294967295");
    let s = attack("", "", &config);
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 2, "{doc}");
    let actions = journaled_actions(&s, "wait-port");
    assert_eq!(actions[0].0, "refused");
    assert!(actions[0].1.contains("grants.sockets"), "{actions:?}");

    aim(
        &s,
        "action_wait_max = \"1s\"",
        "grants.sockets = true",
        &config,
    );
    let started = Instant::now();
    let (code, _) = s.doctor_json(&["fix"]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the wait ended: {:?}",
        started.elapsed()
    );
    assert_eq!(code, 2);
    let actions = journaled_actions(&s, "wait-port");
    assert_eq!(actions.last().unwrap().0, "failed", "{actions:?}");
    assert!(
        actions.last().unwrap().1.contains("still held after 1s"),
        "{actions:?}"
    );
}

#[test]
fn a_probe_never_outlives_the_plugins_deadline() {
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let s = attack(
        "plugin_timeout = \"1s\"",
        &format!("grants.probe = [\"127.0.0.1:{port}\"]"),
        &format!("attack = \"probe\", port = {port}, timeout_ms = 30000"),
    );
    let started = Instant::now();
    let (_, doc) = s.doctor_json(&["check"]);
    let took = started.elapsed();
    drop(silent);
    // The probe asked for 30 s; it got what was left of the plugin's 1 s.
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let answer = said(&doc, "probe");
    let error = plugin_error(&s, "hostile-attacks");
    assert!(
        answer.starts_with("i/o:") || error.contains("deadline"),
        "{answer} / {error}"
    );
    bystander_intact(&doc);
}

#[test]
fn plugins_that_loop_in_describe_cost_one_deadline_together() {
    let s = Scenario::new();
    let wasm = test_plugins().join("hostile_describe_loop.wasm");
    let names = ["loop-a", "loop-b", "loop-c", "loop-d"];
    let mut body = String::new();
    for name in names {
        s.install_plugin(name, &wasm);
        body.push_str(&format!("[plugins.{name}]\n"));
    }
    s.policy_with("plugin_timeout = \"2s\"", &body);
    let started = Instant::now();
    let (code, doc) = s.doctor_json(&["check"]);
    let took = started.elapsed();
    assert_eq!(code, 3, "{doc}");
    for name in names {
        assert!(
            plugin_summary(&doc, name)["error"]
                .as_str()
                .unwrap_or_default()
                .contains("deadline"),
            "{name}: {doc}"
        );
    }
    // One after another they would take 4 x 2 s.
    assert!(took < Duration::from_secs(7), "took {took:?}");
}

#[test]
fn a_wrong_sha256_pin_is_refused_before_anything_compiles() {
    let s = Scenario::new();
    // Not even a component: compiling it would fail with another message.
    std::fs::create_dir_all(s.path("plugins")).unwrap();
    std::fs::write(s.path("plugins/pinned.wasm"), b"\0asm not really").unwrap();
    s.policy(&format!(
        "[plugins.pinned]\nsha256 = \"{}\"\n",
        "0".repeat(64)
    ));
    let out = s.doctor(&["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("the policy pins 000") && stderr.contains("plugins.pinned.sha256"),
        "{stderr}"
    );
    assert!(!stderr.contains("valid WebAssembly"), "{stderr}");
}

#[test]
fn a_cache_directory_others_can_write_is_never_loaded() {
    let s = Scenario::new();
    let cache = s.root().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let root = s.root().display().to_string();
    std::fs::write(s.path("stale.pid"), "999999999\n").unwrap();
    std::fs::write(s.path("note.txt"), "a note\n").unwrap();
    // A plugin file: the cache holds compiled plugin files (built-ins come
    // precompiled with doctor and never touch it).
    s.install_plugin("contract-v0-1", &test_plugins().join("contract_v0_1.wasm"));
    std::fs::write(
        s.policy_path(),
        format!(
            "[doctor]\njournal = \"{root}/journal.db\"\ncache_dir = \"{root}/cache\"\nplugin_dirs = [\"{root}/plugins\"]\n\n[plugins.pid-file-stop]\ngrants.processes = true\ngrants.files = [\"{root}/stale.pid\"]\nconfig = {{ targets = [{{ name = \"w\", pid_file = \"{root}/stale.pid\", pattern = \"^x$\" }}] }}\n\n[plugins.contract-v0-1]\ngrants.processes = true\ngrants.files = [\"{root}/note.txt\"]\nconfig = {{ path = \"{root}/note.txt\" }}\n"
        ),
    )
    .unwrap();
    let (_, doc) = s.doctor_json(&["check"]);
    assert_eq!(
        plugin_summary(&doc, "contract-v0-1")["cache"],
        "untrusted",
        "{doc}"
    );
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        0,
        "nothing written there either"
    );
    bystander_intact(&doc);
    // Once only doctor's user can write it, it is used.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (_, doc) = s.doctor_json(&["check"]);
    assert_eq!(plugin_summary(&doc, "contract-v0-1")["cache"], "miss");
    let (_, doc) = s.doctor_json(&["check"]);
    assert_eq!(plugin_summary(&doc, "contract-v0-1")["cache"], "hit");
}

// ----------------------------------------------------------------- memory

/// A core module with two linear memories of 600 pages (37.5 MiB) each:
/// each one fits a 64 MiB limit, together they do not.
const TWO_MEMORIES: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // \0asm, version 1
    0x05, 0x07, 0x02, 0x00, 0xd8, 0x04, 0x00, 0xd8, 0x04, // memory section: 2 x min 600 pages
];

/// A core module with one funcref table of 10,000,000 elements (80 MB).
const BIG_TABLE: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // \0asm, version 1
    0x04, 0x07, 0x01, 0x70, 0x00, 0x80, 0xad, 0xe2,
    0x04, // table section: funcref, min 10,000,000
];

#[test]
fn memories_and_tables_of_one_instance_share_the_plugin_memory_budget() {
    use doctor::runtime::limits::InstanceBudget;
    let engine = wasmtime::Engine::default();
    let limit: u64 = 64 << 20;
    for (what, bytes) in [("two memories", TWO_MEMORIES), ("a big table", BIG_TABLE)] {
        let module = wasmtime::Module::new(&engine, bytes).unwrap();
        // wasmtime's own per-memory limit lets each of these through…
        let mut store = wasmtime::Store::new(
            &engine,
            wasmtime::StoreLimitsBuilder::new()
                .memory_size(limit as usize)
                .build(),
        );
        store.limiter(|l| l);
        assert!(
            wasmtime::Instance::new(&mut store, &module, &[]).is_ok(),
            "{what} fit a per-memory limit"
        );
        // …doctor's budget counts the instance as a whole.
        let mut store = wasmtime::Store::new(&engine, InstanceBudget::new(limit));
        store.limiter(|b| b);
        assert!(
            wasmtime::Instance::new(&mut store, &module, &[]).is_err(),
            "{what} exceed the plugin's budget"
        );
        let tripped = store
            .data()
            .tripped
            .clone()
            .expect("the budget says what it refused");
        assert!(tripped.wanted > limit, "{what}: {tripped}");
    }
}

// ------------------------------------------------------------------ time

#[test]
fn a_plugins_stderr_cannot_forge_report_lines_or_colours() {
    let s = attack("", "", "attack = \"forge-stderr\"");
    let out = s.doctor(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout
            .lines()
            .any(|l| l.starts_with("doctor check (run 99)") || l.starts_with("OK FORGED")),
        "{stdout}"
    );
    assert!(
        !stdout.contains('\x1b') && !stdout.contains('\r'),
        "{stdout:?}"
    );
    // Still there to read, escaped, in the plugin's error.
    assert!(
        stdout.contains("\\nOK FORGED") || stdout.contains("\\u{1b}[32mOK FORGED"),
        "{stdout}"
    );
}

#[test]
fn a_plugin_that_sleeps_forever_ends_at_its_deadline() {
    let s = attack("plugin_timeout = \"1s\"", "", "attack = \"sleep\"");
    let started = Instant::now();
    let (code, doc) = s.doctor_json(&["check"]);
    // A hang bound, not a speed goal: without the clamp this never returns.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let error = plugin_summary(&doc, "hostile-attacks")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("deadline"), "{error}");
    assert_eq!(
        code, 3,
        "a plugin that could not finish is UNKNOWN, above the warning: {doc}"
    );
    bystander_intact(&doc);
}

#[test]
fn a_stop_never_waits_longer_than_action_wait_max_whatever_grace_it_asks() {
    let mut stubborn = Proc::ignoring_term("grace-attack");
    let start = task_start_time(stubborn.pid(), stubborn.pid());
    let s = attack(
        "action_wait_max = \"1s\"",
        "grants.processes = true\ngrants.signal = { match = [\"grace-attack\"] }",
        &format!(
            "attack = \"stop\", pid = {}, start_time = {start}, grace_ms = 4294967295",
            stubborn.pid()
        ),
    );
    let started = Instant::now();
    let (_, doc) = s.doctor_json(&["fix"]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a hang bound: {:?}",
        started.elapsed()
    );
    let actions = journaled_actions(&s, "stop");
    assert_eq!(actions[0].0, "applied", "{actions:?}");
    assert!(
        actions[0].1.contains("killed"),
        "TERM ignored for the capped grace, then KILL: {actions:?}"
    );
    assert!(stubborn.reap(Duration::from_secs(5)).is_some(), "stopped");
    bystander_intact(&doc);
}

#[test]
fn dot_and_double_slash_cannot_step_out_of_a_glob() {
    let s = Scenario::new();
    s.install_plugin(
        "hostile-attacks",
        &test_plugins().join("hostile_attacks.wasm"),
    );
    let root = s.root();
    std::fs::write(root.join("victim"), "outside the */victim grant\n").unwrap();
    aim(
        &s,
        "",
        &format!("grants.files_remove = [\"{0}/*/victim\"]", root.display()),
        &format!(
            "attack = \"remove\", paths = [\"{0}/./victim\", \"{0}//victim\"]",
            root.display()
        ),
    );
    let (_, doc) = s.doctor_json(&["fix"]);
    let actions = journaled_actions(&s, "remove");
    assert!(
        actions
            .iter()
            .all(|(outcome, detail)| outcome == "refused" && detail.contains("normal")),
        "{actions:?}"
    );
    assert!(root.join("victim").exists());
    bystander_intact(&doc);
}

#[test]
fn a_recording_goes_only_into_a_directory_of_doctors_own() {
    let s = attack("", "", "attack = \"read\"");
    let shared = s.root().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = s.doctor(&["check", "--record", shared.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("writable by others"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&shared).unwrap().count(),
        0,
        "nothing written there"
    );
    let own = s.root().join("own");
    let out = s.doctor(&["check", "--record", own.to_str().unwrap()]);
    assert_ne!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(own.join("pid-file-stop.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "what plugins saw is not for everyone to read");
}

// ---------------------------------------------------------------- scope

/// Two deployments on one host running the identical `sleep 3631`, each
/// under its own launcher (`sh -c … deploy-X-TAG`): (launcher, sleep pid,
/// sleep start time) for each.
fn two_deployments(s: &Scenario) -> Vec<(Proc, u32, u64)> {
    let tag = s.root().file_name().unwrap().to_string_lossy().to_string();
    ["a", "b"]
        .iter()
        .map(|d| {
            let name = format!("deploy-{d}-{tag}");
            let launcher = Proc::spawn(&["sh", "-c", "sleep 3631 & wait", &name]);
            let pid = child_pid(launcher.pid());
            (launcher, pid, task_start_time(pid, pid))
        })
        .collect()
}

fn child_pid(parent: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            let pid: u32 = pid.parse().unwrap();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline == b"sleep\x003631\x00" {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the launcher never started sleep"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn under(s: &Scenario, d: &str) -> String {
    let tag = s.root().file_name().unwrap().to_string_lossy().to_string();
    format!("{{ under = \"deploy-{d}-{tag}$\" }}")
}

fn alive(pid: u32, start: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        fields[0] != "Z" && fields[19].parse::<u64>().ok() == Some(start)
    })
}

#[test]
fn a_signal_grant_scoped_to_one_deployment_cannot_stop_the_others_identical_process() {
    let s = Scenario::new();
    s.install_plugin(
        "hostile-attacks",
        &test_plugins().join("hostile_attacks.wasm"),
    );
    let d = two_deployments(&s);
    let (b_pid, b_start) = (d[1].1, d[1].2);
    let grants = format!(
        "grants.processes = {}\ngrants.signal = {{ match = [\"^sleep 3631$\"] }}",
        under(&s, "a")
    );
    aim(
        &s,
        "",
        &grants,
        &format!("attack = \"stop\", pid = {b_pid}, start_time = {b_start}"),
    );
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 2, "a refused fix is critical: {doc}");
    let actions = journaled_actions(&s, "stop");
    assert_eq!(actions[0].0, "refused", "{actions:?}");
    assert!(
        actions[0].1.contains("outside the scope") && actions[0].1.contains("deploy-a-"),
        "the refusal names the scope: {actions:?}"
    );
    assert!(alive(b_pid, b_start), "deployment B's sleep lives");
    bystander_intact(&doc);

    // The same grant reaches A's own process (the control).
    let (a_pid, a_start) = (d[0].1, d[0].2);
    aim(
        &s,
        "",
        &grants,
        &format!("attack = \"stop\", pid = {a_pid}, start_time = {a_start}, grace_ms = 100"),
    );
    let (_, doc) = s.doctor_json(&["fix"]);
    let actions = journaled_actions(&s, "stop");
    assert_eq!(actions.last().unwrap().0, "applied", "{actions:?} {doc}");
    assert!(!alive(a_pid, a_start));
}

#[test]
fn a_signal_scope_holds_even_when_the_plugin_sees_the_whole_host() {
    let s = Scenario::new();
    s.install_plugin(
        "hostile-attacks",
        &test_plugins().join("hostile_attacks.wasm"),
    );
    let d = two_deployments(&s);
    let (b_pid, b_start) = (d[1].1, d[1].2);
    aim(
        &s,
        "",
        &format!(
            "grants.processes = true\ngrants.signal = {{ match = [\"^sleep 3631$\"], scope = {} }}",
            under(&s, "a")
        ),
        &format!("attack = \"stop\", pid = {b_pid}, start_time = {b_start}"),
    );
    let (code, doc) = s.doctor_json(&["fix"]);
    assert_eq!(code, 2, "{doc}");
    let actions = journaled_actions(&s, "stop");
    assert_eq!(actions[0].0, "refused", "{actions:?}");
    assert!(
        actions[0].1.contains("grants.signal") && actions[0].1.contains("outside the scope"),
        "{actions:?}"
    );
    assert!(alive(b_pid, b_start));
}

#[test]
fn a_process_outside_the_granted_scope_does_not_exist_for_the_plugin() {
    let s = Scenario::new();
    s.install_plugin(
        "hostile-attacks",
        &test_plugins().join("hostile_attacks.wasm"),
    );
    let d = two_deployments(&s);
    let (a_pid, b_pid) = (d[0].1, d[1].1);
    let look = format!("attack = \"processes\", text = \"3631\", pid = {b_pid}");
    aim(
        &s,
        "",
        &format!("grants.processes = {}", under(&s, "a")),
        &look,
    );
    let (_, doc) = s.doctor_json(&["check"]);
    assert_eq!(
        said(&doc, "processes"),
        format!("SEEN [{a_pid}] GET None"),
        "only A's sleep, and B's is not there even by pid: {doc}"
    );
    bystander_intact(&doc);

    // The whole host, for contrast: both (other tests' sleeps never run 3631).
    aim(&s, "", "grants.processes = true", &look);
    let (_, doc) = s.doctor_json(&["check"]);
    let seen = said(&doc, "processes");
    assert!(
        seen.contains(&a_pid.to_string()) && seen.contains(&format!("GET Some({b_pid})")),
        "{seen}"
    );
}
