//! A private PostgreSQL server (Debian's `postgresql`) shared by the tests
//! of one test binary, started on first use and stopped when it exits.
//!
//! `initdb` and `postgres` run as the `postgres` user (they refuse root) in
//! a temporary directory: unix socket only (`listen_addresses = ''`), fsync
//! off. Each test gets a database of its own ([`Postgres::database`]);
//! tables are created by the superuser and granted to the `doctor` role,
//! a plain login role as an operator would make it. The role `doctor_pw`
//! must give a password (scram-sha-256), for the password-file tests.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const PSQL: &str = "/usr/bin/psql";
/// The password of the `doctor_pw` role.
pub const PASSWORD: &str = "s3cret-for-tests";
const READY: Duration = Duration::from_secs(60);

pub struct Postgres {
    root: PathBuf,
    /// The socket directory (`host=` in a connection string).
    pub socket_dir: PathBuf,
    /// The server's port: its socket's name, and TCP on 127.0.0.1 with TLS.
    pub port: u16,
    /// The CA that signed the server's certificate (for `localhost` and
    /// 127.0.0.1), when openssl could make one; None: no TLS here.
    pub tls_ca: Option<PathBuf>,
    pid: u32,
}

/// One test's database on the shared server.
pub struct Db {
    pub name: String,
    pub socket_dir: PathBuf,
    pub port: u16,
}

static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl Postgres {
    pub fn shared() -> Result<&'static Postgres, String> {
        SHARED
            .get_or_init(Postgres::start)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The server, or None after printing why it does not run here.
    pub fn or_say_why(test: &str) -> Option<&'static Postgres> {
        match Postgres::shared() {
            Ok(pg) => Some(pg),
            Err(why) => {
                println!("{test}: not run on PostgreSQL: {why}");
                None
            }
        }
    }

    /// A fresh database of this test's own, owned by the superuser.
    pub fn database(&self) -> Db {
        let n = NEXT_DB.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        self.admin().psql(&format!("CREATE DATABASE {name}"));
        let db = Db {
            name,
            socket_dir: self.socket_dir.clone(),
            port: self.port,
        };
        db.psql("GRANT USAGE ON SCHEMA public TO doctor, doctor_pw");
        db
    }

    fn admin(&self) -> Db {
        Db {
            name: "postgres".into(),
            socket_dir: self.socket_dir.clone(),
            port: self.port,
        }
    }

    fn start() -> Result<Postgres, String> {
        let bin = server_bin()?;
        let (uid, gid) = postgres_user()?;
        let dir = tempfile::Builder::new()
            .prefix("pg-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let root = dir.keep();
        let data = root.join("data");
        let socket_dir = root.join("sock");
        for d in [&data, &socket_dir] {
            std::fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
            std::os::unix::fs::chown(d, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        let initdb = Command::new(bin.join("initdb"))
            .args(["-D", &data.display().to_string()])
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .args(["--no-instructions"])
            .uid(uid)
            .gid(gid)
            .current_dir(&root)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr)
            ));
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all doctor_pw scram-sha-256\nlocal all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .map_err(|e| e.to_string())?;
        let tls_ca = make_certificates(&data, uid, gid);
        let port = free_port();
        let pid = spawn_server(
            &bin,
            &data,
            &socket_dir,
            &root,
            uid,
            gid,
            port,
            tls_ca.is_some(),
        )?;
        let pg = Postgres {
            root,
            socket_dir,
            port,
            tls_ca,
            pid,
        };
        // SAFETY: registering a plain extern "C" fn with no arguments.
        unsafe { libc::atexit(stop_shared) };
        pg.wait_ready()?;
        pg.admin().psql(&format!(
            "CREATE ROLE doctor LOGIN; CREATE ROLE doctor_pw LOGIN PASSWORD '{PASSWORD}'"
        ));
        Ok(pg)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY;
        loop {
            let ok = Command::new(PSQL)
                .args(["-X", "-q", "-h"])
                .arg(&self.socket_dir)
                .args(["-p", &self.port.to_string()])
                .args(["-U", "postgres", "-d", "postgres", "-c", "SELECT 1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
                return Err(format!(
                    "the server did not answer within {READY:?}:\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGQUIT,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{}", self.pid)).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Db {
    /// Runs `sql` as the superuser; panics with psql's message on failure.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(PSQL)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", &self.name, "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// libpq keywords for `role` (the policy's `url`).
    pub fn keywords(&self, role: &str) -> String {
        format!(
            "host={} port={} user={role} dbname={}",
            self.socket_dir.display(),
            self.port,
            self.name
        )
    }

    /// The argv of a shell that runs `sql` as the superuser through psql
    /// (a worker's claim), touches `ready`, then becomes a process named
    /// `name` that sleeps: the worker a row can name by `$$`.
    pub fn worker_argv(&self, sql: &str, ready: &Path, name: &str) -> Vec<String> {
        let script = format!(
            "{PSQL} -X -q -v ON_ERROR_STOP=1 -h '{}' -p {} -U postgres -d {} -c \"{}\" && touch '{}' && exec -a {name} sleep 600",
            self.socket_dir.display(),
            self.port,
            self.name,
            sql.replace('"', "\\\""),
            ready.display()
        );
        vec!["bash".into(), "-c".into(), script]
    }
}

fn server_bin() -> Result<PathBuf, String> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| {
            "/usr/lib/postgresql is missing (Debian's postgresql; .ci/test installs it)".to_string()
        })?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .ok_or_else(|| "no server under /usr/lib/postgresql/*/bin".into())
}

fn postgres_user() -> Result<(u32, u32), String> {
    let user = nix::unistd::User::from_name("postgres")
        .map_err(|e| e.to_string())?
        .ok_or("no postgres user (Debian's postgresql package creates it)")?;
    Ok((user.uid.as_raw(), user.gid.as_raw()))
}

/// A CA and a server certificate it signed (for localhost and 127.0.0.1),
/// the server's key owned by the postgres user; the CA's path, or None when
/// openssl is not here (then the server has no TLS).
fn make_certificates(data: &Path, uid: u32, gid: u32) -> Option<PathBuf> {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::write(
        data.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .ok()?;
    let made = run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=doctor test CA",
        "-days",
        "2",
    ]) && run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    if !made {
        return None;
    }
    use std::os::unix::fs::PermissionsExt;
    for f in ["server.key", "server.crt"] {
        std::os::unix::fs::chown(data.join(f), Some(uid), Some(gid)).ok()?;
    }
    std::fs::set_permissions(
        data.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .ok()?;
    Some(data.join("ca.crt"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(15432)
}

#[allow(clippy::too_many_arguments)]
fn spawn_server(
    bin: &Path,
    data: &Path,
    socket_dir: &Path,
    root: &Path,
    uid: u32,
    gid: u32,
    port: u16,
    tls: bool,
) -> Result<u32, String> {
    let log = std::fs::File::create(root.join("server.log")).map_err(|e| e.to_string())?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let mut command = Command::new(bin.join("postgres"));
    // TCP only on loopback and only with TLS (pg_hba has no plain host line).
    let listen = if tls {
        "listen_addresses=127.0.0.1"
    } else {
        "listen_addresses="
    };
    command.args(["-c", listen]);
    if tls {
        command.args(["-c", "ssl=on", "-c", "ssl_cert_file=server.crt"]);
        command.args(["-c", "ssl_key_file=server.key"]);
    }
    command
        .arg("-D")
        .arg(data)
        .arg("-k")
        .arg(socket_dir)
        .args(["-c", &format!("port={port}"), "-c", "fsync=off"])
        .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
        .args(["-c", "max_connections=200", "-c", "shared_buffers=64MB"])
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // SAFETY: prctl in the forked child before exec; no allocation.
    unsafe {
        command.pre_exec(|| {
            // Should this binary die without its exit handler, the server
            // gets SIGQUIT when its keeper thread goes.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || match command.spawn() {
        Ok(mut child) => {
            let _ = tx.send(Ok(child.id()));
            let _ = child.wait();
        }
        Err(e) => {
            let _ = tx.send(Err(format!("cannot spawn postgres: {e}")));
        }
    });
    rx.recv().map_err(|e| e.to_string())?
}

extern "C" fn stop_shared() {
    let _ = std::panic::catch_unwind(|| {
        if let Some(Ok(pg)) = SHARED.get() {
            pg.stop();
        }
    });
}

/// PgBouncer in transaction mode in front of the shared server, as
/// Supabase's transaction pooler is: each transaction may get another
/// server connection, and a named prepared statement does not survive.
pub struct Pooler {
    dir: tempfile::TempDir,
    child: std::process::Child,
    pub port: u16,
}

impl Pooler {
    /// Started as the postgres user (PgBouncer refuses root), or None after
    /// printing why not.
    pub fn start(pg: &Postgres, test: &str) -> Option<Pooler> {
        let bin = Path::new("/usr/sbin/pgbouncer");
        if !bin.exists() {
            println!(
                "{test}: not run: {} is missing (Debian's pgbouncer)",
                bin.display()
            );
            return None;
        }
        let (uid, gid) = postgres_user().ok()?;
        let dir = tempfile::Builder::new()
            .prefix("pgbouncer-")
            .tempdir()
            .ok()?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).ok()?;
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).ok()?;
        let port = free_port();
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(dir.path().join("users.txt"), "\"doctor\" \"\"\n").ok()?;
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host={} port={}\n\n[pgbouncer]\nlisten_addr =\nlisten_port = {port}\nunix_socket_dir = {}\nauth_type = trust\nauth_file = {}\npool_mode = transaction\nignore_startup_parameters = extra_float_digits\nlogfile = {}\n",
                pg.socket_dir.display(),
                pg.port,
                dir.path().display(),
                dir.path().join("users.txt").display(),
                dir.path().join("pgbouncer.log").display(),
            ),
        )
        .ok()?;
        let child = Command::new(bin)
            .arg(&ini)
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let pooler = Pooler { dir, child, port };
        let socket = pooler.dir.path().join(format!(".s.PGSQL.{port}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(pooler.dir.path().join("pgbouncer.log"))
                    .unwrap_or_default();
                println!("{test}: not run: pgbouncer did not start:\n{log}");
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(pooler)
    }

    /// libpq keywords for `role` on `db` through the pooler.
    pub fn keywords(&self, db: &Db, role: &str) -> String {
        format!(
            "host={} port={} user={role} dbname={}",
            self.dir.path().display(),
            self.port,
            db.name
        )
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
