//! Plugin code runs in a confined worker process, one per loaded plugin:
//! `doctor` started again by itself (`child`), which leaves root, gives up
//! the file system, the network, new privileges and most syscalls
//! (`confine`), and runs wasmtime with the plugin's compiled code. Every
//! import the plugin makes crosses a socket pair to this process (`calls`),
//! where the capabilities check the grants, read the facts and answer. What
//! comes back from the worker is read in bounded frames (`wire`) and then
//! bounded again as in-process results were (`findings`, `convert`).
//!
//! The parent compiles (the cache is its alone) and hands the worker the
//! compiled code by a read-only descriptor. A worker that dies, hangs past
//! its deadline or breaks the protocol fails that plugin's call, nothing
//! else; the plugin's next call starts a new worker.

mod calls;
pub mod child;
mod confine;
pub mod forkserver;
pub mod wire;

use crate::capabilities::CapabilityContext;
use crate::runtime::{CacheOutcome, Compiler, Limits, PluginFailure, PluginInfo, PluginReport};
use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use wire::{FromWorker, Op, Output, Start, Started, ToWorker, MAX_FROM_WORKER};

/// Where a plugin's workers take its compiled code from.
enum Code {
    /// Built into doctor (a built-in's): nothing to hand over.
    Precompiled,
    /// Sealed code in a read-only file: a cache entry or a memory file.
    File(File),
}

/// How long past a call's deadline a worker has to report (its own epoch
/// trap ends the plugin at the deadline) before it is killed.
const REPORT_GRACE: Duration = Duration::from_secs(2);
/// The most of a dead worker's stderr kept for its failure message.
const STDERR_KEPT: usize = 4096;
/// A worker's memory beyond its plugin's own: the runtime, its threads,
/// the compiled code and the frames in flight.
const RUNTIME_BYTES: u64 = 64 << 20;
/// How many times `doctor.plugin_memory` a worker may hold in all: the
/// plugin's memory itself, and the host-side copies of what it passes to
/// imports and returns (lifted by wasmtime before any bound of doctor's
/// applies) and of what the imports answer it.
const MEMORY_FACTOR: u64 = 4;

/// The user plugin code runs as when doctor is root.
const WORKER_USER: &str = "nobody";

/// Compiles plugins and runs each in its own worker.
pub struct Sandbox {
    /// Compiles and caches; never instantiates (that is the workers' job).
    compiler: Compiler,
    run_as: Option<(u32, u32)>,
    spawner: Spawner,
}

/// One plugin, compiled, with the worker that runs it once it has run.
pub struct LoadedPlugin {
    name: String,
    pub sha256: String,
    /// The component's bytes (a built-in's are borrowed from the binary),
    /// kept to compile anew if a worker finds the cached code damaged.
    bytes: Cow<'static, [u8]>,
    /// The compiled code workers load, and where it came from.
    code: Mutex<(Code, CacheOutcome)>,
    worker: Mutex<Option<Worker>>,
    /// Its last worker broke (died, hung or lied): the next is exec'd, so
    /// that it does not share the fork server's memory layout with it.
    broke: std::sync::atomic::AtomicBool,
    imported: OnceLock<Vec<String>>,
    confinement: OnceLock<String>,
}

impl LoadedPlugin {
    fn new(
        name: &str,
        sha256: String,
        bytes: Cow<'static, [u8]>,
        code: (Code, CacheOutcome),
    ) -> Self {
        LoadedPlugin {
            name: crate::text::truncate(name, 64),
            sha256,
            bytes,
            code: Mutex::new(code),
            worker: Mutex::new(None),
            broke: std::sync::atomic::AtomicBool::new(false),
            imported: OnceLock::new(),
            confinement: OnceLock::new(),
        }
    }

    /// Where its compiled code came from (a damaged entry found by the
    /// first worker makes a hit a miss).
    pub fn cache(&self) -> CacheOutcome {
        self.code
            .lock()
            .map(|code| code.1)
            .unwrap_or(CacheOutcome::Off)
    }

    /// How its worker is confined, once one has started.
    pub fn confinement(&self) -> Option<&str> {
        self.confinement.get().map(String::as_str)
    }
}

impl Sandbox {
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        Ok(Sandbox {
            compiler: Compiler::new(cache_dir)?,
            run_as: worker_identity(),
            spawner: Spawner::start()?,
        })
    }

    /// Compile `bytes` (or find them in the cache); `name` is what `ps`
    /// shows of its worker.
    pub fn load(
        &self,
        name: &str,
        bytes: Cow<'static, [u8]>,
    ) -> Result<LoadedPlugin, PluginFailure> {
        let sha256 = crate::runtime::sha256_hex(&bytes);
        self.load_hashed(name, bytes, sha256)
    }

    /// As [`Sandbox::load`], for bytes whose sha256 the caller has already
    /// computed (and checked against a pin) before anything compiles them.
    pub fn load_hashed(
        &self,
        name: &str,
        bytes: Cow<'static, [u8]>,
        sha256: String,
    ) -> Result<LoadedPlugin, PluginFailure> {
        let (file, outcome) = self.compiler.compiled_file(&bytes, &sha256, true)?;
        Ok(LoadedPlugin::new(
            name,
            sha256,
            bytes,
            (Code::File(file), outcome),
        ))
    }

    /// A built-in whose code was compiled when doctor was built: nothing
    /// is compiled or cached now. Its workers load the code from their own
    /// binary; a worker on a CPU the code does not fit sends doctor back
    /// to compile it as any other plugin.
    pub fn load_precompiled(
        &self,
        name: &str,
        bytes: Cow<'static, [u8]>,
        sha256: String,
    ) -> LoadedPlugin {
        let code = (Code::Precompiled, CacheOutcome::Precompiled);
        LoadedPlugin::new(name, sha256, bytes, code)
    }

    /// The WIT packages the plugin imports (its worker is started if it
    /// has none yet).
    pub fn imported_packages(
        &self,
        plugin: &LoadedPlugin,
        limits: Limits,
    ) -> Result<Vec<String>, PluginFailure> {
        self.with_worker(plugin, limits, |_| Ok(()))?;
        Ok(plugin.imported.get().cloned().unwrap_or_default())
    }

    pub fn describe(
        &self,
        plugin: &LoadedPlugin,
        mut host: CapabilityContext,
        limits: Limits,
    ) -> Result<PluginInfo, PluginFailure> {
        let info = self.call(
            plugin,
            &mut host,
            Op::Describe,
            limits,
            |output| match output {
                Output::Info(info) => Some(info),
                Output::Report(_) => None,
            },
        )?;
        Ok(crate::runtime::bound_info(info))
    }

    /// Run `check`; the host comes back with the plugin's logs and state.
    /// The report is as the worker sent it, not yet bounded: callers go
    /// through `findings::check`, which bounds it into findings.
    pub fn check_unbounded(
        &self,
        plugin: &LoadedPlugin,
        mut host: CapabilityContext,
        config_json: &str,
        limits: Limits,
    ) -> (
        Result<PluginReport, PluginFailure>,
        Option<CapabilityContext>,
    ) {
        let op = Op::Check {
            config_json: config_json.to_string(),
        };
        let report = self.call(plugin, &mut host, op, limits, |output| match output {
            Output::Report(report) => Some(report),
            Output::Info(_) => None,
        });
        (report, Some(host))
    }

    /// One call, whose result must be the kind `expected` takes: a worker
    /// that answers one call with another's result is lying, and is killed.
    fn call<T>(
        &self,
        plugin: &LoadedPlugin,
        host: &mut CapabilityContext,
        op: Op,
        limits: Limits,
        expected: impl FnOnce(Output) -> Option<T>,
    ) -> Result<T, PluginFailure> {
        self.with_worker(plugin, limits, |worker| {
            let deadline = Instant::now() + limits.timeout;
            host.deadline = deadline;
            let output = worker.call(host, op, limits, deadline + REPORT_GRACE)?;
            expected(output).ok_or_else(|| {
                Broken::Worker(PluginFailure::Worker(
                    "broke the protocol: it answered with another call's result".into(),
                ))
            })
        })
    }

    /// Run `f` on the plugin's worker, starting one if needed; a worker
    /// that failed in a way that leaves it unusable is killed and dropped.
    fn with_worker<R>(
        &self,
        plugin: &LoadedPlugin,
        limits: Limits,
        f: impl FnOnce(&mut Worker) -> Result<R, Broken>,
    ) -> Result<R, PluginFailure> {
        let mut slot = plugin
            .worker
            .lock()
            .map_err(|_| PluginFailure::Worker("is poisoned by an earlier panic".into()))?;
        if slot.is_none() {
            let (worker, imported, confinement) = self.start(plugin, limits)?;
            let _ = plugin.imported.set(imported);
            let _ = plugin.confinement.set(confinement);
            *slot = Some(worker);
        }
        let Some(worker) = slot.as_mut() else {
            return Err(PluginFailure::Worker("did not start".into()));
        };
        match f(worker) {
            Ok(r) => Ok(r),
            Err(Broken::Call(failure)) => Err(failure),
            Err(Broken::Worker(failure)) => {
                // Dropped: killed and reaped.
                *slot = None;
                plugin
                    .broke
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Err(failure)
            }
        }
    }

    fn start(
        &self,
        plugin: &LoadedPlugin,
        limits: Limits,
    ) -> Result<(Worker, Vec<String>, String), PluginFailure> {
        let by = Instant::now() + limits.timeout + REPORT_GRACE;
        let mut worker = self.spawn_with_code(plugin, limits, by)?;
        let use_entry = match &worker.1 {
            Started::Corrupt => {
                tracing::warn!(
                    "the compiled code of {} is damaged; compiling it anew",
                    plugin.name
                );
                Some(false)
            }
            Started::Incompatible(why) => {
                tracing::info!(
                    "the precompiled code of {} does not load here ({why}); compiling it",
                    plugin.name
                );
                Some(true)
            }
            _ => None,
        };
        if let Some(use_entry) = use_entry {
            let (file, outcome) =
                self.compiler
                    .compiled_file(&plugin.bytes, &plugin.sha256, use_entry)?;
            if let Ok(mut code) = plugin.code.lock() {
                *code = (Code::File(file), outcome);
            }
            worker = self.spawn_with_code(plugin, limits, by)?;
        }
        match worker {
            (
                worker,
                Started::Ready {
                    imported,
                    confinement,
                },
            ) => Ok((worker, imported, confinement)),
            (_, Started::Incompatible(why)) => Err(PluginFailure::Load(why)),
            _ => Err(PluginFailure::Load("the compiled code is damaged".into())),
        }
    }

    /// A worker that was handed the plugin's code, and what it said.
    fn spawn_with_code(
        &self,
        plugin: &LoadedPlugin,
        limits: Limits,
        by: Instant,
    ) -> Result<(Worker, Started), PluginFailure> {
        let fresh = plugin.broke.load(std::sync::atomic::Ordering::Relaxed);
        let mut worker = self
            .spawner
            .spawn(&plugin.name, fresh)
            .map_err(|e| PluginFailure::Worker(format!("could not be started: {e}")))?;
        let code = plugin
            .code
            .lock()
            .map_err(|_| PluginFailure::Worker("is poisoned by an earlier panic".into()))?;
        let (start, file) = match &code.0 {
            Code::Precompiled => (wire::Code::Precompiled(plugin.name.clone()), None),
            Code::File(file) => (wire::Code::Descriptor, Some(file)),
        };
        let start = Start {
            code: start,
            parent: std::process::id(),
            run_as: self.run_as,
            data_limit: worker_memory(limits.memory_bytes),
        };
        match worker.start(&start, file, by) {
            Ok(started) => Ok((worker, started)),
            Err(Broken::Call(f) | Broken::Worker(f)) => Err(f),
        }
    }
}

/// The memory limit of a worker whose plugin may use `plugin_memory`.
fn worker_memory(plugin_memory: u64) -> u64 {
    plugin_memory
        .saturating_mul(MEMORY_FACTOR)
        .saturating_add(RUNTIME_BYTES)
}

/// Root's workers run as `nobody`; anyone else's as themselves.
fn worker_identity() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name(WORKER_USER).ok().flatten();
    Some(
        user.map(|u| (u.uid.as_raw(), u.gid.as_raw()))
            .unwrap_or((65534, 65534)),
    )
}

/// Why a call through a worker did not produce a result.
enum Broken {
    /// The call failed; the worker is fine for the next one.
    Call(PluginFailure),
    /// The worker is dead, hung or lying: kill it, start another next time.
    Worker(PluginFailure),
}

struct Worker {
    child: Process,
    socket: UnixStream,
}

/// A worker process: doctor's child, whether exec'd or forked by the fork
/// server, so doctor alone reaps it (its pid stays its own until then).
struct Process {
    pid: i32,
    stderr: Option<File>,
    status: Option<ExitStatus>,
}

impl Process {
    /// `pid`, if it is a child of doctor's not yet reaped.
    fn of_own_child(pid: i32) -> Option<Process> {
        let mut raw = 0;
        // SAFETY: a non-blocking waitpid; it fails (ECHILD) for a pid that is
        // not our child, and reaps one that already exited.
        let reaped = unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG) };
        let status = match reaped {
            0 => None,
            r if r == pid => Some(ExitStatus::from_raw(raw)),
            _ => return None,
        };
        (pid > 0).then_some(Process {
            pid,
            stderr: None,
            status,
        })
    }

    fn kill_and_reap(&mut self) {
        let _ = self.kill();
        let _ = self.wait();
    }

    fn kill(&mut self) -> io::Result<()> {
        if self.status.is_none() {
            // SAFETY: kill with integer arguments; the pid is our unreaped child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        Ok(())
    }

    fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let mut raw = 0;
        // SAFETY: waitpid on our own child, into a local.
        while unsafe { libc::waitpid(self.pid, &mut raw, 0) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let status = ExitStatus::from_raw(raw);
        self.status = Some(status);
        Ok(status)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// doctor itself, as the worker of `plugin`.
fn worker_command(plugin: &str) -> Command {
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0("doctor")
        .arg(child::WORKER_ARG)
        .arg(plugin)
        .env_clear();
    command
}

impl Worker {
    /// `command` with its stdin our socket pair's other end.
    fn spawn_command(mut command: Command) -> io::Result<Worker> {
        let (socket, theirs) = UnixStream::pair()?;
        let mut child = command
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().map(|e| File::from(OwnedFd::from(e)));
        let child = Process {
            pid: child.id() as i32,
            stderr,
            status: None,
        };
        Ok(Worker { child, socket })
    }

    /// A worker forked by `server`, with our socket pair's other end. The
    /// worker sends its pid first: the one the server named, or, when the
    /// server failed after the clone, the only word of a child to reap.
    fn fork(server: &mut forkserver::ForkServer, plugin: &str) -> io::Result<Worker> {
        let (socket, theirs) = UnixStream::pair()?;
        let (stderr, stderr_theirs) = forkserver::stderr_pipe()?;
        let pid = match server.fork(plugin, OwnedFd::from(theirs), stderr_theirs) {
            Ok(pid) => pid,
            Err(e) => {
                let said = forkserver::pid_from_worker(&socket, forkserver::orphan_patience());
                if let Some(mut orphan) = said.ok().and_then(Process::of_own_child) {
                    orphan.kill_and_reap();
                }
                return Err(e);
            }
        };
        let mut child = Process {
            pid,
            stderr: Some(stderr),
            status: None,
        };
        match forkserver::pid_from_worker(&socket, Instant::now() + REPORT_GRACE) {
            Ok(said) if said == pid => Ok(Worker { child, socket }),
            _ => {
                child.kill_and_reap();
                Err(io::Error::other("the forked worker did not start"))
            }
        }
    }

    /// Hand over the code; the worker is ready, or found it damaged.
    fn start(
        &mut self,
        start: &Start,
        code: Option<&File>,
        by: Instant,
    ) -> Result<Started, Broken> {
        send_start(&self.socket, start, code)
            .map_err(|e| Broken::Worker(self.lost(format!("took no start frame: {e}"))))?;
        match self.recv::<Started>(by)? {
            Started::Failed(failure) => Err(Broken::Worker(failure)),
            started => Ok(started),
        }
    }

    /// One plugin call: answer its host calls until it is done.
    fn call(
        &mut self,
        host: &mut CapabilityContext,
        op: Op,
        limits: Limits,
        by: Instant,
    ) -> Result<Output, Broken> {
        let call = ToWorker::Call {
            op,
            memory_bytes: limits.memory_bytes,
            timeout: limits.timeout,
        };
        self.send(&call, by)?;
        loop {
            match self.recv::<FromWorker>(by)? {
                FromWorker::Host { call, args } => {
                    let answer = host.serve(&call, &args);
                    self.send(&ToWorker::Answer(answer), by)?;
                }
                FromWorker::Done(Ok(output)) => return Ok(output),
                FromWorker::Done(Err(failure)) => return Err(Broken::Call(failure)),
            }
        }
    }

    /// One frame to the worker, by `by` at the latest: a worker that stops
    /// reading must not hold doctor in a blocked write.
    fn send(&mut self, message: &ToWorker, by: Instant) -> Result<(), Broken> {
        let left = by
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let _ = self.socket.set_write_timeout(Some(left));
        match wire::send(&self.socket, message) {
            Ok(()) => Ok(()),
            Err(e) if timed_out(&e) => Err(too_late("did not read its answers")),
            Err(_) => Err(Broken::Worker(self.lost("ended during the call".into()))),
        }
    }

    /// The next frame, by `by` at the latest.
    fn recv<T: serde::de::DeserializeOwned>(&mut self, by: Instant) -> Result<T, Broken> {
        let reader = UntilDeadline {
            socket: &self.socket,
            by,
        };
        match wire::recv(reader, MAX_FROM_WORKER) {
            Ok(message) => Ok(message),
            Err(e) if timed_out(&e) => Err(too_late("did not answer")),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                Err(Broken::Worker(self.lost("ended during the call".into())))
            }
            Err(e) => Err(Broken::Worker(PluginFailure::Worker(format!(
                "broke the protocol: {e}"
            )))),
        }
    }

    /// The failure of a worker that is gone, in its own words when it left
    /// any (a panic, the allocator's "memory allocation failed").
    fn lost(&mut self, what: String) -> PluginFailure {
        self.kill_child();
        let status = self.child.wait().ok();
        let said = self.stderr();
        let how = match status {
            Some(s) if s.signal().is_some() => {
                let signal = s.signal().unwrap_or_default();
                let name = nix::sys::signal::Signal::try_from(signal)
                    .map(|s| s.as_str())
                    .unwrap_or("?");
                format!("killed by signal {signal} ({name})")
            }
            Some(s) => format!("exited with {s}"),
            None => "gone".to_string(),
        };
        let memory = said.contains("memory allocation of");
        let mut message = format!("{what}: {how}");
        if memory {
            message.push_str(" after running out of memory (a worker may hold 4 × doctor.plugin_memory + 64 MiB)");
        }
        if !said.is_empty() {
            let said = crate::text::truncate(said.trim(), 1024);
            message.push_str(&format!("; stderr: {}", crate::text::one_line(&said)));
        }
        PluginFailure::Worker(message)
    }

    /// What the reaped worker left in its stderr pipe, without waiting: a
    /// worker may have passed the pipe's write end to doctor's own socket
    /// queue, where it would keep a blocking read open for ever.
    fn stderr(&mut self) -> String {
        let mut kept = Vec::new();
        if let Some(stderr) = self.child.stderr.as_mut() {
            let _ = nix::fcntl::fcntl(
                &*stderr,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
            let _ = stderr.take(STDERR_KEPT as u64).read_to_end(&mut kept);
        }
        String::from_utf8_lossy(&kept).into_owned()
    }

    fn kill_child(&mut self) {
        let _ = self.child.kill();
    }

    fn kill(&mut self) {
        self.kill_child();
        let _ = self.child.wait();
    }
}

/// The one thread that starts workers. A worker's parent-death signal is
/// tied to the thread that forked it, not to doctor's process; plugins are
/// loaded on short-lived threads, so workers are started here, on a thread
/// that lives as long as the sandbox: through the fork server it starts
/// on the first request, or by `exec` where that server cannot run.
struct Spawner {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A plugin's name, whether its worker must be exec'd, and where to answer.
type Request = (String, bool, mpsc::Sender<io::Result<Worker>>);

/// How the spawner thread makes workers.
enum Launch {
    /// Forked by the fork server, started on first use; `exec` if it fails.
    ForkServer(Option<forkserver::ForkServer>),
    /// `exec` of this command (tests put a liar in doctor's place).
    #[cfg(test)]
    Command(fn(&str) -> Command),
}

impl Launch {
    fn worker(&mut self, plugin: &str, exec: bool) -> io::Result<Worker> {
        match self {
            #[cfg(test)]
            Launch::Command(command) => Worker::spawn_command(command(plugin)),
            Launch::ForkServer(_) if exec => Worker::spawn_command(worker_command(plugin)),
            Launch::ForkServer(server) => match Launch::forked(server, plugin) {
                Ok(worker) => Ok(worker),
                Err(e) => {
                    tracing::debug!("the fork server failed ({e}); starting the worker by exec");
                    // A new server for the next worker.
                    server.take();
                    Worker::spawn_command(worker_command(plugin))
                }
            },
        }
    }

    fn forked(server: &mut Option<forkserver::ForkServer>, plugin: &str) -> io::Result<Worker> {
        if server.is_none() {
            *server = Some(forkserver::ForkServer::start()?);
        }
        match server.as_mut() {
            Some(server) => Worker::fork(server, plugin),
            None => Err(io::Error::other("no fork server")),
        }
    }
}

impl Spawner {
    fn start() -> io::Result<Spawner> {
        Spawner::launching(Launch::ForkServer(None))
    }

    /// Workers made by `command` (tests put a liar in doctor's place).
    #[cfg(test)]
    fn start_with(command: fn(&str) -> Command) -> io::Result<Spawner> {
        Spawner::launching(Launch::Command(command))
    }

    fn launching(mut launch: Launch) -> io::Result<Spawner> {
        let (requests, incoming) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("doctor-spawner".into())
            .spawn(move || {
                for (plugin, exec, reply) in incoming {
                    let _ = reply.send(launch.worker(&plugin, exec));
                }
            })?;
        Ok(Spawner {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// A worker for `plugin`; `exec`: started by exec, not forked.
    fn spawn(&self, plugin: &str, exec: bool) -> io::Result<Worker> {
        let (reply, answer) = mpsc::channel();
        let gone = || io::Error::other("the spawner thread is gone");
        self.requests
            .as_ref()
            .ok_or_else(gone)?
            .send((plugin.to_string(), exec, reply))
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A worker that missed its deadline, `what` it failed to do.
fn too_late(what: &str) -> Broken {
    Broken::Worker(PluginFailure::Worker(format!(
        "{what} by its deadline and was killed"
    )))
}

/// Reads that end at `by`, however the worker paces its bytes.
struct UntilDeadline<'a> {
    socket: &'a UnixStream,
    by: Instant,
}

impl Read for UntilDeadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.by.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.socket.set_read_timeout(Some(left))?;
        (&*self.socket).read(buf)
    }
}

/// The start frame, with the code's descriptor beside it.
/// The start frame, with the code's descriptor when there is one.
fn send_start(socket: &UnixStream, start: &Start, code: Option<&File>) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let body = wire::encode(start)?;
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    let fds: Vec<_> = code.iter().map(|file| file.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<()>(
        socket.as_raw_fd(),
        &[io::IoSlice::new(&frame)],
        if fds.is_empty() { &[] } else { &rights },
        MsgFlags::empty(),
        None,
    )?;
    if sent != frame.len() {
        return Err(io::Error::other("the start frame was cut short"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! A worker that lies, played by a Python script on the other end of
    //! the socket: doctor must come back by the call's deadline whatever
    //! the worker does.
    use super::*;
    use crate::capabilities::test_context;
    use crate::policy::Grants;

    /// A `FromWorker::Host` frame for `host.now-unix-ms`, in postcard.
    const NOW_FRAME: &str = "frame = bytes([0, 16]) + b'host.now-unix-ms' + bytes([0])\n\
                             frame = len(frame).to_bytes(4, 'little') + frame\n";

    fn liar(script: &str) -> Worker {
        let mut python = Command::new("python3");
        python.args([
            "-c",
            &format!("import os, socket, sys, time\n{NOW_FRAME}{script}"),
        ]);
        Worker::spawn_command(python).expect("python3 runs")
    }

    fn call(worker: &mut Worker, within: Duration) -> (Result<Output, Broken>, Duration) {
        let mut host = test_context(Grants::default());
        let limits = Limits {
            memory_bytes: 1 << 20,
            timeout: within,
        };
        let started = Instant::now();
        let by = started + within;
        let outcome = worker.call(&mut host, Op::Describe, limits, by);
        (outcome, started.elapsed())
    }

    fn failure(outcome: Result<Output, Broken>) -> String {
        match outcome {
            Err(Broken::Worker(f) | Broken::Call(f)) => f.to_string(),
            Ok(_) => panic!("the liar's call succeeded"),
        }
    }

    /// A worker that finds a built-in's precompiled code unusable, as on
    /// a CPU without a feature it was compiled for, and then tells what
    /// code it was handed next.
    fn incompatible_then_tell(_plugin: &str) -> Command {
        let mut python = Command::new("python3");
        python.args([
            "-c",
            "import os, socket, struct\n\
             s = socket.socket(fileno=0)\n\
             data, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(4))\n\
             def frame(b): return struct.pack('<I', len(b)) + b\n\
             def text(t): return bytes([len(t)]) + t.encode()\n\
             if data[4] == 1:\n\
             \x20   s.sendall(frame(bytes([3]) + text('this CPU lacks has_avx9000')))\n\
             else:\n\
             \x20   fd = struct.unpack('i', anc[0][2][:4])[0]\n\
             \x20   told = 'handed %d bytes of code' % os.fstat(fd).st_size\n\
             \x20   s.sendall(frame(bytes([1, 6]) + text(told)))\n",
        ]);
        python
    }

    #[test]
    fn precompiled_code_that_does_not_fit_this_cpu_is_compiled_like_a_plugin_file() {
        let sandbox = Sandbox {
            compiler: Compiler::new(None).unwrap(),
            run_as: None,
            spawner: Spawner::start_with(incompatible_then_tell).unwrap(),
        };
        let (catalog, _) = crate::catalog::Catalog::discover(&[]);
        let entry = catalog.get("pid-file-stop").unwrap();
        let bytes = entry.bytes().unwrap();
        let sha256 = entry.sha256(&bytes);
        let plugin = sandbox.load_precompiled(&entry.name, bytes, sha256);
        assert_eq!(plugin.cache(), CacheOutcome::Precompiled);
        let limits = Limits {
            memory_bytes: 1 << 20,
            timeout: Duration::from_secs(20),
        };
        let answer = sandbox.describe(&plugin, test_context(Grants::default()), limits);
        // The second worker was handed code doctor compiled just now.
        let Err(PluginFailure::Load(told)) = answer else {
            panic!("{answer:?}")
        };
        let size: u64 = told
            .strip_prefix("handed ")
            .and_then(|t| t.strip_suffix(" bytes of code"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{told}"));
        assert!(size > 100_000, "{told}");
        assert_eq!(plugin.cache(), CacheOutcome::Off, "compiled, no cache here");
    }

    #[test]
    fn a_worker_that_asks_and_never_reads_the_answers_is_killed_at_the_deadline() {
        // Host calls by the thousand, then silence: doctor's answers fill
        // the socket, and its write must not block for ever.
        let mut worker = liar(
            "s = socket.socket(fileno=0)\n\
             s.sendall(frame * 200000)\n\
             time.sleep(60)\n",
        );
        let (outcome, took) = call(&mut worker, Duration::from_secs(2));
        assert!(took < Duration::from_secs(20), "{took:?}");
        let why = failure(outcome);
        assert!(
            why.contains("did not read its answers by its deadline")
                || why.contains("did not answer by its deadline"),
            "{why}"
        );
    }

    #[test]
    fn a_worker_that_hides_its_stderr_in_doctors_socket_does_not_hold_doctor() {
        // The worker slips the write end of its stderr pipe into doctor's
        // socket queue: while that message is unread, the pipe stays open
        // in doctor itself, and reading the dead worker's last words must
        // not wait for its end.
        let mut worker = liar(
            "s = socket.socket(fileno=0)\n\
             sys.stderr.write('last words\\n'); sys.stderr.flush()\n\
             socket.send_fds(s, [b'x'], [2])\n\
             time.sleep(60)\n",
        );
        let mut queued = [0u8; 1];
        let deadline = Instant::now() + Duration::from_secs(10);
        let peek = |buf: &mut [u8]| {
            nix::sys::socket::recv(
                worker.socket.as_raw_fd(),
                buf,
                nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            )
            .unwrap_or(0)
        };
        while peek(&mut queued) == 0 {
            assert!(Instant::now() < deadline, "the liar never wrote");
            std::thread::sleep(Duration::from_millis(10));
        }
        let started = Instant::now();
        let why = worker.lost("ended during the call".into()).to_string();
        assert!(started.elapsed() < Duration::from_secs(5), "{why}");
        assert!(why.contains("last words"), "{why}");
    }
}
