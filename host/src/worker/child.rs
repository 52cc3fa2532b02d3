//! The worker: `doctor` started by itself to run one plugin's code. It takes
//! the compiled code from a descriptor its parent opened, leaves root and
//! everything else it does not need (see `confine`), then makes the calls
//! the parent asks for, each in a fresh store under the call's limits, with
//! every import forwarded to the parent.

use super::calls::Forwarder;
use super::confine;
use super::wire::{
    self, FromWorker, Op, Output, Start, Started, ToWorker, MAX_FROM_WORKER, MAX_TO_WORKER,
};
use crate::runtime::{Limits, LoadedComponent, PluginFailure, Runtime};
use anyhow::Context as _;
use std::io::ErrorKind;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// The first argument that makes `doctor` a worker. Not a subcommand: it
/// is no one's to type, and it never reaches the command-line parser.
pub const WORKER_ARG: &str = "__plugin-worker";

/// The largest compiled component a worker reads.
const MAX_CODE_BYTES: u64 = 512 << 20;

/// The worker's whole life; its exit code is only for the parent's log.
pub fn main() -> i32 {
    finish(run(None))
}

/// A worker forked by the fork server, with the runtime it prepared (and
/// its descriptors already in place: the socket on 0, stderr on 2).
pub fn main_forked(prepared: &Runtime<Forwarder>) -> i32 {
    finish(run(Some(prepared)))
}

fn finish(done: anyhow::Result<()>) -> i32 {
    match done {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("doctor plugin worker: {e:#}");
            70
        }
    }
}

fn run(prepared: Option<&Runtime<Forwarder>>) -> anyhow::Result<()> {
    // `ps -e` and `pgrep` see a worker, not `exe` (it runs /proc/self/exe).
    // SAFETY: prctl with a constant C string.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"doctor-worker".as_ptr(), 0, 0, 0) };
    // Nothing doctor's own parent left open reaches plugin code.
    close_inherited().context("closing inherited descriptors")?;
    // SAFETY: the parent made fd 0 our end of a socket pair; nothing else
    // in this process owns it.
    let socket = unsafe { UnixStream::from_raw_fd(0) };
    let (start, code) = receive_start(&socket).context("receiving the start frame")?;
    let mut confinement = match confine::process(&start) {
        Ok(c) => c,
        Err(why) => return refuse(&socket, PluginFailure::Worker(why)),
    };
    let own;
    let runtime = match prepared {
        Some(runtime) => runtime,
        None => {
            own = Runtime::<Forwarder>::without_alarm()?;
            &own
        }
    };
    runtime.start_alarm();
    let loaded = match load(runtime, &start.code, code)? {
        Ok(loaded) => loaded,
        Err(answer) => {
            wire::send(&socket, &answer)?;
            return Ok(());
        }
    };
    // wasmtime makes each memory's copy-on-write image (a memfd) on first
    // instantiation; make them now, before the filter refuses memfd_create.
    loaded
        .component
        .initialize_copy_on_write_image()
        .map_err(crate::runtime::wasm_err)?;
    // One tokio thread drives a plugin's WASI timers, where wasmtime-wasi's
    // own runtime would start one per CPU of the host in every worker.
    // Entered, it is the runtime wasmtime-wasi's `in_tokio` finds; started
    // now, so that the filter below finds every thread there is; never
    // dropped, as wasmtime-wasi's is not, so that no shutdown runs under
    // the filter.
    let timers: &'static tokio::runtime::Runtime = Box::leak(Box::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the worker's tokio thread")?,
    ));
    let _timers = timers.enter();
    wasmtime_wasi::runtime::in_tokio(async {});
    if let Err(why) = confine::syscalls(&mut confinement) {
        return refuse(&socket, PluginFailure::Worker(why));
    }
    let ready = Started::Ready {
        imported: runtime.imported_packages(&loaded.component),
        confinement: confinement.to_string(),
    };
    wire::send(&socket, &ready)?;
    serve(runtime, &loaded, Arc::new(socket))
}

/// The plugin's component, or what to answer the parent instead.
fn load(
    runtime: &Runtime<Forwarder>,
    from: &wire::Code,
    fd: Option<OwnedFd>,
) -> anyhow::Result<Result<LoadedComponent, Started>> {
    match from {
        wire::Code::Precompiled(name) => {
            let native = crate::catalog::precompiled(name)
                .with_context(|| format!("no built-in is named {name}"))?;
            Ok(runtime
                .load_precompiled(native)
                .map_err(Started::Incompatible))
        }
        wire::Code::Descriptor => {
            let code = map_code(fd.context("no descriptor came with the start frame")?)?;
            let data = code.bytes();
            if !crate::runtime::sealed(data) {
                return Ok(Err(Started::Corrupt));
            }
            Ok(runtime.load_sealed(data).map_err(Started::Failed))
        }
    }
}

/// Close every descriptor from 3 up: `close_range`, or one by one on a
/// kernel without it (before 5.9).
pub(super) fn close_inherited() -> std::io::Result<()> {
    // SAFETY: close_range with integer arguments only.
    if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } == 0 {
        return Ok(());
    }
    let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= 3)
        .collect();
    for fd in open {
        // SAFETY: closing a descriptor number; nothing in this process
        // uses any of them past this point.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

fn refuse(socket: &UnixStream, failure: PluginFailure) -> anyhow::Result<()> {
    wire::send(socket, &Started::Failed(failure))?;
    Ok(())
}

/// Calls until the parent closes the socket.
fn serve(
    runtime: &Runtime<Forwarder>,
    loaded: &LoadedComponent,
    socket: Arc<UnixStream>,
) -> anyhow::Result<()> {
    loop {
        let message = match wire::recv::<ToWorker>(&*socket, MAX_TO_WORKER) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e).context("reading a call"),
        };
        let ToWorker::Call {
            op,
            memory_bytes,
            timeout,
        } = message
        else {
            anyhow::bail!("an answer came with no host call waiting for it");
        };
        let limits = Limits {
            memory_bytes,
            timeout,
        };
        let host = Forwarder::new(socket.clone());
        let done = match op {
            Op::Describe => runtime.describe(loaded, host, limits).map(Output::Info),
            Op::Check { config_json } => runtime
                .check_unbounded(loaded, host, &config_json, limits)
                .0
                .map(Output::Report),
        };
        wire::send_frame(&*socket, &fitting(done)?).context("sending a result")?;
    }
}

/// The result, or why it cannot be sent: a report larger than the parent
/// takes is the plugin's failure, named as such, not a broken protocol.
fn fitting(done: Result<Output, PluginFailure>) -> anyhow::Result<Vec<u8>> {
    let body = wire::encode(&FromWorker::Done(done))?;
    if body.len() <= MAX_FROM_WORKER {
        return Ok(body);
    }
    let failure = PluginFailure::InvalidOutput(format!(
        "a report of {} bytes, more than the {MAX_FROM_WORKER} a report may take",
        body.len()
    ));
    Ok(wire::encode(&FromWorker::Done(Err(failure)))?)
}

/// The start frame and the descriptor that came with it, if one did.
fn receive_start(socket: &UnixStream) -> anyhow::Result<(Start, Option<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 4096];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let (len, fd) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let fd = msg.cmsgs()?.find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        });
        (msg.bytes, fd)
    };
    // SAFETY: the kernel just installed this descriptor for us.
    let fd = fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    let body = buf
        .get(4..len)
        .context("the start frame is shorter than its length")?;
    Ok((wire::decode(body)?, fd))
}

/// The compiled code, mapped read-only from the descriptor: wasmtime
/// copies what it keeps, so the worker need not copy it first.
struct Code {
    at: std::ptr::NonNull<std::ffi::c_void>,
    len: usize,
}

impl Code {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `at` maps `len` readable bytes until `drop` unmaps them.
        unsafe { std::slice::from_raw_parts(self.at.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for Code {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map_code`, unmapped once.
        let _ = unsafe { nix::sys::mman::munmap(self.at, self.len) };
    }
}

fn map_code(fd: OwnedFd) -> anyhow::Result<Code> {
    use nix::sys::mman::{mmap, MapFlags, ProtFlags};
    let len = nix::sys::stat::fstat(&fd)?.st_size.max(0) as u64;
    anyhow::ensure!(
        len <= MAX_CODE_BYTES,
        "compiled code of {len} bytes is too large"
    );
    let size = std::num::NonZeroUsize::new(len as usize).context("the compiled code is empty")?;
    // SAFETY: a fresh private read-only mapping of a file only doctor
    // writes (and does not while workers run); unmapped by `Code`.
    let at = unsafe {
        mmap(
            None,
            size,
            ProtFlags::PROT_READ,
            MapFlags::MAP_PRIVATE,
            &fd,
            0,
        )
    }
    .context("mapping the compiled code")?;
    Ok(Code {
        at,
        len: size.get(),
    })
}
