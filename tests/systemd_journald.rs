//! Under systemd: logs to journald with priorities and SYSLOG_IDENTIFIER,
//! one summary line per scheduled run plus each changed finding once, no
//! report repeated on stdout; units name the identifier; `systemd install`
//! as another user than root fails clearly and `--user` units work.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Scenario, DOCTOR};

const SOCKET: &str = "/run/systemd/journal/socket";

/// A stand-in for journald's socket, removed (with the directories this
/// test created) when dropped. None where a real journald runs (its
/// entries are not ours to read) or where /run cannot be written.
struct FakeJournald {
    socket: UnixDatagram,
    created: Vec<std::path::PathBuf>,
}

impl FakeJournald {
    fn bind() -> Option<FakeJournald> {
        if Path::new(SOCKET).exists() {
            eprintln!("a journald listens on {SOCKET}; the fake one is not bound");
            return None;
        }
        let mut created = Vec::new();
        for dir in ["/run/systemd", "/run/systemd/journal"] {
            if !Path::new(dir).exists() {
                std::fs::create_dir(dir).ok()?;
                created.push(dir.into());
            }
        }
        let socket = UnixDatagram::bind(SOCKET).ok()?;
        created.push(SOCKET.into());
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        Some(FakeJournald { socket, created })
    }

    /// Every entry received so far, as its fields.
    fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = self.socket.recv(&mut buf) {
            out.push(parse(&buf[..n]));
        }
        out
    }
}

type Entry = std::collections::BTreeMap<String, String>;

/// journald's native protocol: `KEY=value\n`, or `KEY\n` + u64 LE length + bytes + `\n`.
fn parse(mut data: &[u8]) -> Entry {
    let mut fields = Entry::new();
    while let Some(end) = data.iter().position(|b| *b == b'\n') {
        let line = &data[..end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into(),
                String::from_utf8_lossy(&line[eq + 1..]).into(),
            );
            data = &data[end + 1..];
        } else {
            let rest = &data[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            fields.insert(
                String::from_utf8_lossy(line).into(),
                String::from_utf8_lossy(&rest[8..8 + len]).into(),
            );
            data = &rest[8 + len + 1..];
        }
    }
    fields
}

impl Drop for FakeJournald {
    fn drop(&mut self) {
        for path in self.created.iter().rev() {
            let _ = if path.is_dir() {
                std::fs::remove_dir(path)
            } else {
                std::fs::remove_file(path)
            };
        }
    }
}

#[test]
fn a_scheduled_run_under_systemd_logs_one_summary_and_each_new_finding_to_journald() {
    let s = Scenario::new();
    s.stale_pid_policy("", "", &["a", "b"]);
    let Some(journald) = FakeJournald::bind() else {
        return;
    };
    // stdout and stderr are the stream systemd set up: JOURNAL_STREAM names it.
    let stream = std::fs::File::create(s.path("stream")).unwrap();
    let meta = stream.metadata().unwrap();
    let status = Command::new(DOCTOR)
        .args(["run", "--policy"])
        .arg(s.policy_path())
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("DOCTOR_LOG")
        .stdout(Stdio::from(stream.try_clone().unwrap()))
        .stderr(Stdio::from(stream))
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    // The layer proves the socket with an empty datagram first.
    let entries: Vec<Entry> = journald
        .entries()
        .into_iter()
        .filter(|e| !e.is_empty())
        .collect();
    drop(journald);
    let stream_text = std::fs::read_to_string(s.path("stream")).unwrap();
    assert!(
        stream_text.is_empty(),
        "nothing on stdout or stderr: {stream_text}"
    );
    let field = |e: &Entry, k: &str| e.get(k).cloned().unwrap_or_default();
    assert!(
        entries
            .iter()
            .all(|e| field(e, "SYSLOG_IDENTIFIER") == "doctor"),
        "{entries:?}"
    );
    let summaries: Vec<&Entry> = entries
        .iter()
        .filter(|e| field(e, "MESSAGE").starts_with("run 1: 1 plugin(s)"))
        .collect();
    assert_eq!(summaries.len(), 1, "{entries:?}");
    let summary = summaries[0];
    assert_eq!(
        (field(summary, "PRIORITY"), field(summary, "DOCTOR_RUN_ID")),
        ("5".into(), "1".into()),
        "{summary:?}"
    );
    assert!(field(summary, "MESSAGE").contains("2 new"), "{summary:?}");
    let news: Vec<&Entry> = entries
        .iter()
        .filter(|e| field(e, "MESSAGE").starts_with("new: pid-file-stop"))
        .collect();
    assert_eq!(news.len(), 2, "each new finding once: {entries:?}");
    assert!(
        news.iter()
            .all(|e| field(e, "PRIORITY") == "4" && field(e, "DOCTOR_PLUGIN") == "pid-file-stop"),
        "{news:?}"
    );
    assert_eq!(
        entries.len(),
        3,
        "nothing else at the default level: {entries:?}"
    );
}

#[test]
fn the_units_name_the_syslog_identifier() {
    let s = Scenario::new();
    s.stale_pid_policy("", "", &["u"]);
    for args in [&["systemd", "print"][..], &["systemd", "print", "--user"]] {
        let out = s.doctor(args);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("\nSyslogIdentifier=doctor\n"),
            "{args:?}: {text}"
        );
    }
}

/// `doctor ARGS` as uid/gid 65534 with its own HOME; None if impossible here.
fn as_nobody(s: &Scenario, home: &Path, args: &[&str]) -> Option<std::process::Output> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root; skipped");
        return None;
    }
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
    ])
    .arg(DOCTOR)
    .args(args)
    .arg("--policy")
    .arg(s.policy_path());
    cmd.env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env("DOCTOR_LOG", "warn");
    cmd.output().ok()
}

#[test]
fn systemd_install_as_another_user_than_root_fails_clearly_and_user_units_work() {
    let s = Scenario::new();
    s.stale_pid_policy("", "", &["n"]);
    let home = s.path("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    for path in [s.dir.path(), &s.policy_path()] {
        std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode(if path.is_dir() { 0o755 } else { 0o644 }),
        )
        .unwrap();
    }
    let Some(out) = as_nobody(&s, &home, &["systemd", "install"]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(3));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("needs root") && said.contains("--user"),
        "{said}"
    );
    assert!(
        !Path::new("/etc/systemd/system/doctor.service").exists() || said.contains("needs root")
    );

    let out = as_nobody(&s, &home, &["systemd", "install", "--user"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = home.join(".config/systemd/user");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("systemctl --user daemon-reload"), "{said}");
    let service = std::fs::read_to_string(dir.join("doctor.service")).unwrap();
    assert!(
        service.contains(&format!(
            "ExecStart={DOCTOR} run --policy {}",
            s.policy_path().display()
        )),
        "{service}"
    );
    assert!(
        !service.contains("ProtectSystem"),
        "a user manager cannot set that up: {service}"
    );
    assert!(std::fs::read_to_string(dir.join("doctor.timer"))
        .unwrap()
        .contains("WantedBy=timers.target"));

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed; unit syntax not verified");
        return;
    }
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.join("doctor.service"))
        .arg(dir.join("doctor.timer"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("doctor.")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify: {said}");
}
