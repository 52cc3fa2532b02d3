//! What a worker gives up before it runs plugin code, in the order the
//! kernel needs: limits, then root (the capability bounding set, groups,
//! gids, uids), then `no_new_privs` and ptrace (not dumpable), then the
//! file system and network (Landlock, no rules: nothing), all while the
//! worker has one thread; last, once wasmtime's threads run, a seccomp
//! filter on every thread that allows only what the runtime does.

use super::wire::Start;
use nix::sys::resource::{setrlimit, Resource};
use std::fmt;

/// Descriptors a worker may hold: its socket, stdio, and what wasmtime and
/// tokio open before the filter (memory images, epoll, an eventfd).
const MAX_OPEN_FILES: u64 = 64;

/// What a worker gave up, as it reports it to the parent.
#[derive(Debug, Default)]
pub struct Confinement {
    steps: Vec<String>,
}

impl fmt::Display for Confinement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.steps.join(", "))
    }
}

/// Everything but the syscall filter. Must run while the process has one thread.
pub fn process(start: &Start) -> Result<Confinement, String> {
    let mut done = Confinement::default();
    limit(Resource::RLIMIT_DATA, start.data_limit)?;
    limit(Resource::RLIMIT_NOFILE, MAX_OPEN_FILES)?;
    limit(Resource::RLIMIT_CORE, 0)?;
    done.steps
        .push(format!("RLIMIT_DATA {} bytes", start.data_limit));
    if let Some((uid, gid)) = start.run_as {
        leave_root(uid, gid)?;
        done.steps.push(format!("uid {uid} gid {gid}"));
    }
    // After the uid change, which clears it: the worker dies with the
    // doctor thread that started it (the sandbox's spawner, which lives as
    // long as the run), and if doctor died already, it stops here.
    // SAFETY: prctl with integer arguments only.
    check(
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) },
        "PR_SET_PDEATHSIG",
    )?;
    if nix::unistd::getppid().as_raw() as u32 != start.parent {
        return Err("doctor, its parent, is gone".into());
    }
    // SAFETY: prctl with integer arguments only.
    check(
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
        "PR_SET_NO_NEW_PRIVS",
    )?;
    // SAFETY: as above. Not dumpable: no one but root may ptrace the worker
    // or read its memory, even another process of the same uid.
    check(
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) },
        "PR_SET_DUMPABLE",
    )?;
    done.steps.push("no_new_privs".into());
    // Best effort, as the kernel's Landlock is: where it is missing or
    // refused (a container's own filter), the syscall filter below still
    // refuses every open.
    done.steps
        .push(landlock().unwrap_or_else(|why| format!("no landlock ({why})")));
    Ok(done)
}

fn check(rc: i32, what: &str) -> Result<(), String> {
    if rc < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn limit(resource: Resource, value: u64) -> Result<(), String> {
    setrlimit(resource, value, value).map_err(|e| format!("setrlimit {resource:?}: {e}"))
}

/// Drop every capability for good, then become `uid`/`gid` with no
/// supplementary groups. With all uids non-zero and no `KEEPCAPS`, the
/// kernel clears the permitted and effective sets.
fn leave_root(uid: u32, gid: u32) -> Result<(), String> {
    for cap in 0..=last_capability() {
        // SAFETY: prctl with integer arguments only. EINVAL past the last
        // capability the kernel knows is expected.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    let gid = nix::unistd::Gid::from_raw(gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
    let uid = nix::unistd::Uid::from_raw(uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
    // A process that could get root back has not left it.
    if nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_ok() {
        return Err("regained uid 0 after dropping it".into());
    }
    Ok(())
}

fn last_capability() -> libc::c_ulong {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// No file-system access, no TCP bind or connect, no signals or abstract
/// sockets outside the worker: a ruleset that handles everything the
/// kernel's Landlock knows and allows nothing. Best effort: on a kernel
/// without Landlock the worker goes on, and the syscall filter still
/// refuses every `open`.
fn landlock() -> Result<String, String> {
    use landlock::{Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetStatus, Scope, ABI};
    let abi = ABI::V6;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("landlock: {e}"))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "landlock (no file, network or signal access)".into(),
        RulesetStatus::PartiallyEnforced => "landlock (partly: an older kernel)".into(),
        RulesetStatus::NotEnforced => "no landlock (the kernel has none)".into(),
    })
}

/// The syscall filter, on every thread of the worker: what wasmtime, the
/// allocator, tokio's timers and the socket to the parent use. Anything
/// else fails with `EPERM` — no `open`, no `socket`, no `execve`, no
/// `ptrace`, no new processes or threads, signals only to itself, and no
/// `fcntl` or `prctl` but the few the runtime makes.
pub fn syscalls(done: &mut Confinement) -> Result<(), String> {
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule,
    };
    use std::collections::BTreeMap;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&call| (call, Vec::new())).collect();
    let own_pid = u64::from(std::process::id());
    let to_self = |arg| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, own_pid)
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(|e| format!("seccomp rule: {e}"))
    };
    // abort() raises SIGABRT on its own thread: tgkill(own pid, tid, sig).
    rules.insert(libc::SYS_tgkill, vec![to_self(0)?]);
    // A thread's name, and no other prctl (not dumpable stays so).
    rules.insert(
        libc::SYS_prctl,
        arg_in(0, &[libc::PR_SET_NAME, libc::PR_GET_NAME])?,
    );
    // Descriptor flags only: F_SETOWN and F_SETSIG would let the kernel
    // send a chosen signal to a chosen process on the worker's behalf.
    rules.insert(
        libc::SYS_fcntl,
        arg_in(
            1,
            &[
                libc::F_GETFD,
                libc::F_SETFD,
                libc::F_GETFL,
                libc::F_SETFL,
                libc::F_DUPFD_CLOEXEC,
            ],
        )?,
    );
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp: {e:?}"))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| format!("seccomp: {e}"))?;
    let program: BpfProgram = filter.try_into().map_err(|e| format!("seccomp: {e}"))?;
    seccompiler::apply_filter_all_threads(&program).map_err(|e| format!("seccomp: {e}"))?;
    done.steps.push("seccomp filter".into());
    Ok(())
}

/// Rules allowing a call when its argument `arg` is one of `values`.
fn arg_in(arg: u8, values: &[i32]) -> Result<Vec<seccompiler::SeccompRule>, String> {
    use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
    values
        .iter()
        .map(|&value| {
            SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value as u64)
                .and_then(|c| SeccompRule::new(vec![c]))
                .map_err(|e| format!("seccomp rule: {e}"))
        })
        .collect()
}

/// What a worker may call once plugin code can run.
const ALLOWED: &[i64] = &[
    // The socket to the parent, stderr, and the descriptors wasmtime keeps.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_close,
    // Memory: the allocator, wasm memories and their guards, stacks.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_mremap,
    libc::SYS_membarrier,
    // Threads that already run, and their waits.
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_rseq,
    libc::SYS_set_robust_list,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    // Traps are signals: wasmtime's handlers, their stacks, their return.
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    // Who am I, and the way out.
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_exit,
    libc::SYS_exit_group,
];
