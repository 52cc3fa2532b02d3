//! The fork server: one `doctor` process per run, started on the first
//! plugin call, that prepares the wasmtime engine and linker once and forks
//! a worker per plugin from there. A worker then skips what an `exec` of
//! doctor costs it (the loader's relocations of a large binary, the
//! runtime's start, the engine) and goes straight to its confinement.
//!
//! The server has one thread, so `fork` is safe in it. Each worker is
//! cloned with `CLONE_PARENT`: it is doctor's child, as an exec'd worker is,
//! so doctor reaps it, knows how it died, and its parent-death signal is
//! tied to doctor's spawner thread. The server itself runs no plugin code
//! and holds nothing but its control socket.

use super::calls::Forwarder;
use super::child;
use crate::runtime::Runtime;
use anyhow::Context as _;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The first argument that makes `doctor` the fork server (never parsed
/// as a subcommand).
pub const FORK_SERVER_ARG: &str = "__plugin-forkserver";

/// The room a worker's command line gets in the server's: a worker
/// rewrites it to `doctor __plugin-worker NAME` (plugin names are cut to 64
/// bytes), so that `ps` shows which plugin each worker runs.
const TITLE_ROOM: usize = 80;

/// The longest plugin name a request carries.
const MAX_NAME: usize = 255;

/// How long doctor waits for the server to answer a request, or to exit
/// once its socket is closed: a stopped or wedged server is killed, and
/// the worker is exec'd instead.
const SERVER_PATIENCE: Duration = Duration::from_secs(5);
/// How long doctor waits for a worker cloned by a server that then failed
/// to say so (it sends its own pid first) before giving up on it.
const ORPHAN_PATIENCE: Duration = Duration::from_secs(1);

/// doctor's end of a running fork server.
pub struct ForkServer {
    server: Child,
    control: UnixStream,
}

impl ForkServer {
    /// `doctor __plugin-forkserver PARENT`, started from the calling
    /// thread (the spawner), which its workers' parent-death signal follows.
    pub fn start() -> io::Result<ForkServer> {
        ForkServer::start_at(std::path::Path::new("/proc/self/exe"))
    }

    /// The fork server of the doctor binary at `program` (tests start the
    /// built one from their own process).
    pub fn start_at(program: &std::path::Path) -> io::Result<ForkServer> {
        let (control, theirs) = UnixStream::pair()?;
        let server = Command::new(program)
            .arg0("doctor")
            .arg(FORK_SERVER_ARG)
            .arg(std::process::id().to_string())
            .arg(" ".repeat(TITLE_ROOM))
            .env_clear()
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(ForkServer { server, control })
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.server.id()
    }

    /// A worker for `plugin`, its stdin `socket` and its stderr `stderr`:
    /// the pid of doctor's new child.
    pub fn fork(&mut self, plugin: &str, socket: OwnedFd, stderr: OwnedFd) -> io::Result<i32> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let name = plugin.as_bytes();
        let name = &name[..name.len().min(MAX_NAME)];
        let mut request = vec![name.len() as u8];
        request.extend_from_slice(name);
        let fds = [socket.as_raw_fd(), stderr.as_raw_fd()];
        sendmsg::<()>(
            self.control.as_raw_fd(),
            &[io::IoSlice::new(&request)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )?;
        // The server holds its copies until the fork is done; ours close now.
        drop((socket, stderr));
        let mut answer = [0u8; 4];
        self.control.set_read_timeout(Some(SERVER_PATIENCE))?;
        if let Err(e) = self.control.read_exact(&mut answer) {
            // Stopped, wedged or dead: it serves no one again.
            let _ = self.server.kill();
            return Err(e);
        }
        match i32::from_le_bytes(answer) {
            pid if pid > 0 => Ok(pid),
            errno => Err(io::Error::from_raw_os_error(-errno)),
        }
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        // Its end of the control socket reads EOF, and it exits; one that
        // does not (stopped, wedged) is killed.
        let _ = self.control.shutdown(std::net::Shutdown::Both);
        let by = Instant::now() + SERVER_PATIENCE;
        while matches!(self.server.try_wait(), Ok(None)) && Instant::now() < by {
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// The pid a freshly cloned worker sends first on its socket, read by
/// `by` at the latest: how doctor knows its own child when the server
/// could not tell it.
pub fn pid_from_worker(socket: &UnixStream, by: Instant) -> io::Result<i32> {
    let left = by.saturating_duration_since(Instant::now());
    socket.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
    let mut pid = [0u8; 4];
    (&*socket).read_exact(&mut pid)?;
    socket.set_read_timeout(None)?;
    Ok(i32::from_le_bytes(pid))
}

/// How long to wait for a worker the server may have cloned before it failed.
pub fn orphan_patience() -> Instant {
    Instant::now() + ORPHAN_PATIENCE
}

/// The fork server's whole life.
pub fn main() -> i32 {
    match serve() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("doctor fork server: {e:#}");
            70
        }
    }
}

fn serve() -> anyhow::Result<()> {
    // SAFETY: prctl with a constant C string.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"doctor-forksrv".as_ptr(), 0, 0, 0) };
    let parent: u32 = std::env::args()
        .nth(2)
        .and_then(|pid| pid.parse().ok())
        .context("no parent pid")?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    anyhow::ensure!(
        nix::unistd::getppid().as_raw() as u32 == parent,
        "doctor, its parent, is gone"
    );
    child::close_inherited().context("closing inherited descriptors")?;
    let title = CommandLine::of_this_process()?;
    // SAFETY: doctor made fd 0 our end of the control socket.
    let mut control = unsafe { UnixStream::from_raw_fd(0) };
    let runtime = Runtime::<Forwarder>::without_alarm()?;
    // Doctor execs each worker instead when the server refuses to serve.
    anyhow::ensure!(single_threaded(), "the fork server is not single-threaded");
    while let Some((plugin, fds)) = next_request(&control)? {
        let answer = match fork_worker(&runtime, &title, &plugin, &fds) {
            Ok(pid) => pid,
            Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
        };
        drop(fds);
        control.write_all(&answer.to_le_bytes())?;
    }
    Ok(())
}

/// The next plugin name with its two descriptors (socket, stderr); None
/// once doctor closes the control socket.
fn next_request(control: &UnixStream) -> anyhow::Result<Option<(String, [OwnedFd; 2])>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 1 + MAX_NAME];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        control.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    if msg.bytes == 0 {
        return Ok(None);
    }
    let fds: Vec<RawFd> = msg
        .cmsgs()?
        .flat_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds,
            _ => Vec::new(),
        })
        .collect();
    // SAFETY: the kernel just installed these descriptors for us.
    let owned: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) })
        .collect();
    let bytes = msg.bytes;
    let [socket, stderr]: [OwnedFd; 2] = owned
        .try_into()
        .map_err(|_| anyhow::anyhow!("a request came without its two descriptors"))?;
    let len = usize::from(buf[0]);
    let name = buf
        .get(1..1 + len)
        .filter(|_| bytes == 1 + len)
        .context("a request's name is cut short")?;
    Ok(Some((
        String::from_utf8_lossy(name).into_owned(),
        [socket, stderr],
    )))
}

/// Clone a worker as doctor's child; in the worker, this never returns.
fn fork_worker(
    runtime: &Runtime<Forwarder>,
    title: &CommandLine,
    plugin: &str,
    [socket, stderr]: &[OwnedFd; 2],
) -> io::Result<i32> {
    // SAFETY: a raw clone without a new stack, as fork(2) is; this process
    // has one thread (checked in `serve`, and nothing here starts one), so
    // the child's copy of every lock is free.
    // With CLONE_PARENT the child's parent is ours (doctor's spawner
    // thread), and it signals its exit with our exit signal (SIGCHLD).
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::CLONE_PARENT, 0, 0, 0, 0) };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // Never back into the server's loop, not even by a panic.
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                become_worker(runtime, title, plugin, socket, stderr)
            }))
            .unwrap_or(101);
            // SAFETY: _exit ends this process only; nothing is left to flush
            // (stderr is unbuffered, results went out on the socket).
            unsafe { libc::_exit(code) }
        }
        pid => Ok(pid as i32),
    }
}

/// One thread: a fork copies only the calling one, and a lock another
/// held would stay held in the child for ever.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1)
}

fn become_worker(
    runtime: &Runtime<Forwarder>,
    title: &CommandLine,
    plugin: &str,
    socket: &OwnedFd,
    stderr: &OwnedFd,
) -> i32 {
    // SAFETY: dup2 onto the standard descriptors; the originals close with
    // everything else in the worker's own close_range.
    let placed =
        unsafe { libc::dup2(socket.as_raw_fd(), 0) == 0 && libc::dup2(stderr.as_raw_fd(), 2) == 2 };
    if !placed {
        return 71;
    }
    // Our pid first, so that doctor knows its child even if the server
    // fails before it answers.
    let pid = std::process::id().to_le_bytes();
    // SAFETY: fd 0 is the worker's socket, placed above.
    if unsafe { libc::write(0, pid.as_ptr().cast(), pid.len()) } != pid.len() as isize {
        return 71;
    }
    title.set(&["doctor", child::WORKER_ARG, plugin]);
    child::main_forked(runtime)
}

/// This process's command line, as `/proc/PID/cmdline` reads it: the
/// bytes between the kernel's `arg_start` and `arg_end`, which a process
/// may overwrite in place (as PostgreSQL's `ps` display does).
pub struct CommandLine {
    start: usize,
    len: usize,
}

impl CommandLine {
    fn of_this_process() -> anyhow::Result<CommandLine> {
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        // Fields after the command name's closing parenthesis start at the
        // third (state); arg_start and arg_end are the 48th and 49th.
        let after = stat.rsplit_once(')').context("no comm in stat")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |n: usize| -> anyhow::Result<usize> {
            Ok(fields.get(n - 3).context("stat is too short")?.parse()?)
        };
        let (start, end) = (field(48)?, field(49)?);
        anyhow::ensure!(start > 0 && end > start, "no command line");
        Ok(CommandLine {
            start,
            len: end - start,
        })
    }

    /// `argv`, NUL-separated and NUL-padded, cut to the room there is.
    fn set(&self, argv: &[&str]) {
        let mut bytes = argv.join("\0").into_bytes();
        bytes.resize(self.len, 0);
        if let Some(last) = bytes.last_mut() {
            *last = 0;
        }
        // SAFETY: [start, start + len) is this process's argument area on
        // its initial stack, mapped writable for its whole life; std reads
        // it only when asked for the arguments, which a worker never is.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.start as *mut u8, self.len) };
    }
}

/// The read end of a new pipe for a worker's stderr, and its write end.
pub fn stderr_pipe() -> io::Result<(File, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((File::from(read), write))
}
