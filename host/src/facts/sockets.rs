//! Listening sockets and the processes that hold them.
//!
//! The sockets come from the kernel's socket diagnostics (netlink
//! `sock_diag`, what `ss` uses), asked for listening TCP and unconnected UDP
//! sockets only: a TCP dump filtered to `LISTEN` walks the listening hash
//! alone, where every read of `/proc/net/tcp` walks the whole connection
//! hash (~3.3 ms per table on a 23 GiB host with a handful of sockets, since
//! that hash is sized by memory, not by use). A table the kernel cannot dump
//! that way (no `*_diag` support, netlink refused) is read from
//! `/proc/net/{tcp,tcp6,udp,udp6}` as before. Both are the network namespace
//! of the calling process. Owners are found by walking `/proc/PID/fd` and
//! matching `socket:[INODE]` link targets (the kernel has no socket → process
//! index; `ss -p` walks the same).
//!
//! This is hand-parsed rather than built on the `procfs` crate: with ~3000
//! processes `procfs` 0.18 took ~120 ms for the owner walk against ~82 ms here
//! (it allocates a `Process` and an `FDInfo` per fd and resolves every
//! `/proc/PID/fd/N` path from the root). The walk opens `/proc/PID` once and
//! works relative to it, which also keeps the start-time read on the same
//! process if its pid is reused mid-walk.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use nix::dir::Dir;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::Mode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A process holding a socket. `start_time` (field 22 of `/proc/PID/stat`,
/// clock ticks after boot) makes the pair stable against pid reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    pub pid: u32,
    pub start_time: u64,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
    pub uid: u32,
    pub inode: u64,
    pub owners: Vec<Owner>,
}

/// Kernel `TCP_LISTEN` as printed in the `st` column.
const TCP_LISTEN: u8 = 0x0A;
/// Kernel `TCP_CLOSE`: what an unconnected (bound) UDP socket reports.
const UDP_UNCONNECTED: u8 = 0x07;

/// The tables to read and the state that counts as listening in each. The
/// IPv6 ones are absent when IPv6 is disabled, which is not an error; a
/// missing IPv4 table means /proc is not usable, which is.
const TABLES: [(&str, Protocol, u8, bool); 4] = [
    ("/proc/net/tcp", Protocol::Tcp, TCP_LISTEN, false),
    ("/proc/net/tcp6", Protocol::Tcp, TCP_LISTEN, true),
    ("/proc/net/udp", Protocol::Udp, UDP_UNCONNECTED, false),
    ("/proc/net/udp6", Protocol::Udp, UDP_UNCONNECTED, true),
];

/// All listening TCP sockets and bound, unconnected UDP sockets of this
/// network namespace, each with every process that holds it.
///
/// Owners are only found in processes whose `/proc/PID/fd` we may read (all
/// of them as root); a listener whose holders are hidden keeps empty `owners`.
pub fn listeners() -> io::Result<Vec<Listener>> {
    let mut found = tables(diag::Socket::open().ok().as_mut())?;
    let wanted: HashSet<u64> = found.iter().map(|l| l.inode).filter(|&i| i != 0).collect();
    let owners = socket_owners(&wanted)?;
    for listener in &mut found {
        if let Some(list) = owners.get(&listener.inode) {
            listener.owners = list.clone();
        }
    }
    Ok(found)
}

/// The listening sockets of the four tables, without owners: each through
/// `diag` when given and the kernel dumps it, else from its `/proc/net` table.
fn tables(mut diag: Option<&mut diag::Socket>) -> io::Result<Vec<Listener>> {
    let mut found = Vec::new();
    for (path, protocol, state, optional) in TABLES {
        let family = if path.ends_with('6') {
            libc::AF_INET6
        } else {
            libc::AF_INET
        };
        if let Some(dumped) = diag
            .as_mut()
            .and_then(|d| d.dump(family, protocol, state).ok())
        {
            found.extend(dumped);
            continue;
        }
        match read_table(path) {
            Ok(text) => found.extend(parse_table(&text, protocol, state)),
            Err(e) if optional && e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{path}: {e}"))),
        }
    }
    Ok(found)
}

/// Listening sockets through netlink `sock_diag` (`NETLINK_SOCK_DIAG`,
/// `SOCK_DIAG_BY_FAMILY` with `inet_diag_req_v2`): the same rows as the
/// `/proc/net` tables, filtered by state in the kernel.
mod diag {
    use super::{is_unspecified, Listener, Protocol};
    use std::io;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_HDR: usize = 16;
    /// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, sockid (48 bytes).
    const REQ_LEN: usize = 8 + 48;
    /// `struct inet_diag_msg`: family, state, timer, retrans, sockid (48),
    /// expires, rqueue, wqueue, uid, inode.
    const MSG_LEN: usize = 4 + 48 + 20;

    pub struct Socket {
        fd: OwnedFd,
        seq: u32,
        buf: Vec<u8>,
    }

    impl Socket {
        pub fn open() -> io::Result<Socket> {
            // SAFETY: socket(2) with constant arguments; returns a new fd or -1.
            let fd = unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                    libc::NETLINK_SOCK_DIAG,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Socket {
                // SAFETY: a freshly created descriptor owned by nobody else.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
                seq: 0,
                buf: vec![0; 32 * 1024],
            })
        }

        /// Every socket of `family` and `protocol` in `state`. An error (the
        /// kernel lacks this dump, a short or odd reply) means "read /proc".
        pub fn dump(
            &mut self,
            family: i32,
            protocol: Protocol,
            state: u8,
        ) -> io::Result<Vec<Listener>> {
            self.seq = self.seq.wrapping_add(1);
            let proto = match protocol {
                Protocol::Tcp => libc::IPPROTO_TCP,
                Protocol::Udp => libc::IPPROTO_UDP,
            };
            let mut req = [0u8; NLMSG_HDR + REQ_LEN];
            req[0..4].copy_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
            req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
            let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
            req[6..8].copy_from_slice(&flags.to_ne_bytes());
            req[8..12].copy_from_slice(&self.seq.to_ne_bytes());
            req[16] = family as u8;
            req[17] = proto as u8;
            req[20..24].copy_from_slice(&(1u32 << state).to_ne_bytes());
            // SAFETY: send(2) of a buffer we own, on our own socket; the
            // kernel is the default destination of a netlink socket.
            let sent =
                unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
            if sent != req.len() as isize {
                return Err(io::Error::last_os_error());
            }
            let mut found = Vec::new();
            loop {
                // SAFETY: recv(2) into a buffer we own, at most its length.
                let n = unsafe {
                    libc::recv(
                        self.fd.as_raw_fd(),
                        self.buf.as_mut_ptr().cast(),
                        self.buf.len(),
                        0,
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                if n == 0 {
                    return Err(invalid("netlink socket closed mid-dump"));
                }
                if parse_messages(&self.buf[..n as usize], self.seq, protocol, &mut found)? {
                    return Ok(found);
                }
            }
        }
    }

    fn invalid(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, what.to_string())
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// The messages of one datagram, appended to `found`; true at the end of the dump.
    pub(super) fn parse_messages(
        mut data: &[u8],
        seq: u32,
        protocol: Protocol,
        found: &mut Vec<Listener>,
    ) -> io::Result<bool> {
        while data.len() >= NLMSG_HDR {
            let len = u32_at(data, 0) as usize;
            if len < NLMSG_HDR || len > data.len() {
                return Err(invalid("truncated netlink message"));
            }
            let kind = u16::from_ne_bytes([data[4], data[5]]);
            let body = &data[NLMSG_HDR..len];
            if u32_at(data, 8) == seq {
                match i32::from(kind) {
                    libc::NLMSG_DONE => return Ok(true),
                    libc::NLMSG_ERROR => {
                        let errno = if body.len() >= 4 {
                            -(u32_at(body, 0) as i32)
                        } else {
                            libc::EINVAL
                        };
                        return Err(io::Error::from_raw_os_error(errno));
                    }
                    _ if kind == SOCK_DIAG_BY_FAMILY => {
                        if let Some(l) = parse_msg(body, protocol) {
                            found.push(l);
                        }
                    }
                    _ => {}
                }
            }
            // Messages are 4-byte aligned.
            data = &data[len.next_multiple_of(4).min(data.len())..];
        }
        Ok(false)
    }

    /// One `inet_diag_msg`, kept as `parse_row` keeps a `/proc/net` row
    /// (the kernel already filtered by state).
    pub(super) fn parse_msg(b: &[u8], protocol: Protocol) -> Option<Listener> {
        if b.len() < MSG_LEN {
            return None;
        }
        let address = |at: usize| -> Option<IpAddr> {
            match i32::from(b[0]) {
                libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
                    b[at],
                    b[at + 1],
                    b[at + 2],
                    b[at + 3],
                ))),
                libc::AF_INET6 => {
                    let bytes: [u8; 16] = b[at..at + 16].try_into().ok()?;
                    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
                }
                _ => None,
            }
        };
        let port = u16::from_be_bytes([b[4], b[5]]);
        let remote_port = u16::from_be_bytes([b[6], b[7]]);
        let local = address(8)?;
        if protocol == Protocol::Udp && !is_unspecified(address(24)?, remote_port) {
            return None; // a connected UDP socket talks to one peer: not a listener
        }
        Some(Listener {
            protocol,
            address: local,
            port,
            uid: u32_at(b, 64),
            inode: u32_at(b, 68).into(),
            owners: Vec::new(),
        })
    }
}

/// Reads a whole table.
///
/// Every `read()` of a tcp table walks the kernel's whole connection hash
/// (~1.7 ms measured on a 24 GiB host, however few sockets there are), so
/// the buffer is pre-sized: `fs::read_to_string` would start with a small
/// probe read, which costs one more walk.
fn read_table(path: &str) -> io::Result<String> {
    let mut text = String::with_capacity(64 * 1024);
    File::open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// Parses one `/proc/net/{tcp,udp}[6]` table, keeping rows in `state`.
/// Malformed rows are skipped: the format is the kernel's, and one odd line
/// must not hide the rest.
fn parse_table(text: &str, protocol: Protocol, state: u8) -> Vec<Listener> {
    text.lines()
        .skip(1) // column header
        .filter_map(|line| parse_row(line, protocol, state))
        .collect()
}

/// One row: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`.
fn parse_row(line: &str, protocol: Protocol, state: u8) -> Option<Listener> {
    let mut fields = line.split_ascii_whitespace();
    let _slot = fields.next()?;
    let local = fields.next()?;
    let remote = fields.next()?;
    // Check the state first: busy hosts have many more connections than
    // listeners, and this skips them before any address parsing.
    if u8::from_str_radix(fields.next()?, 16).ok()? != state {
        return None;
    }
    let (address, port) = parse_endpoint(local)?;
    if protocol == Protocol::Udp && !is_unspecified_endpoint(remote)? {
        return None; // a connected UDP socket talks to one peer: not a listener
    }
    let mut rest = fields.skip(3); // tx:rx, tr:when, retrnsmt
    let uid = rest.next()?.parse().ok()?;
    let inode = rest.nth(1)?.parse().ok()?; // skip timeout
    Some(Listener {
        protocol,
        address,
        port,
        uid,
        inode,
        owners: Vec::new(),
    })
}

fn is_unspecified_endpoint(field: &str) -> Option<bool> {
    let (address, port) = parse_endpoint(field)?;
    Some(is_unspecified(address, port))
}

fn is_unspecified(address: IpAddr, port: u16) -> bool {
    address.is_unspecified() && port == 0
}

/// `ADDR:PORT` with ADDR in the kernel's hex form and PORT as 4 hex digits
/// (already in host order).
fn parse_endpoint(field: &str) -> Option<(IpAddr, u16)> {
    let (address, port) = field.split_once(':')?;
    Some((
        parse_hex_address(address)?,
        u16::from_str_radix(port, 16).ok()?,
    ))
}

/// The kernel prints an address as 32-bit words with `%08X`, each word being
/// the network-order bytes read as a host-endian integer. Converting each word
/// back with `to_ne_bytes` restores the bytes in network order on any host.
fn parse_hex_address(hex: &str) -> Option<IpAddr> {
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(hex_word(hex)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&hex_word(hex.get(i * 8..i * 8 + 8)?)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

fn hex_word(hex: &str) -> Option<[u8; 4]> {
    u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes)
}

/// Maps each wanted socket inode to every process holding it.
///
/// Every process is visited, not only until each inode has one owner: a forked
/// server's children share its listening socket, and all of them are owners.
/// Processes that exit mid-walk or deny access are skipped silently.
fn socket_owners(wanted: &HashSet<u64>) -> io::Result<HashMap<u64, Vec<Owner>>> {
    let mut owners: HashMap<u64, Vec<Owner>> = HashMap::new();
    if wanted.is_empty() {
        return Ok(owners);
    }
    let mut proc_dir = Dir::open(
        "/proc",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let proc_fd = proc_dir.as_fd().try_clone_to_owned()?;
    let pids: Vec<Vec<u8>> = proc_dir
        .iter()
        .flatten()
        .map(|entry| entry.file_name().to_bytes().to_vec())
        .filter(|name| parse_pid(name).is_some())
        .collect();
    // At 10,000 processes this walk is most of a port check; the processes
    // are independent, so they are split across the cores, and the parts
    // are joined in /proc order (the same owners, in the same order).
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WALKERS);
    let held: Vec<(u64, Owner)> = if workers < 2 || pids.len() < PARALLEL_FROM {
        held_sockets(proc_fd.as_fd(), &pids, wanted)
    } else {
        let chunk = pids.len().div_ceil(workers);
        let proc_fd = proc_fd.as_fd();
        std::thread::scope(|scope| {
            let walkers: Vec<_> = pids
                .chunks(chunk)
                .map(|part| scope.spawn(move || held_sockets(proc_fd, part, wanted)))
                .collect();
            // The walk returns values for every error; a part whose thread
            // failed anyway is skipped like a process that denied access.
            walkers
                .into_iter()
                .filter_map(|w| w.join().ok())
                .flatten()
                .collect()
        })
    };
    for (inode, owner) in held {
        let list = owners.entry(inode).or_default();
        if !list.contains(&owner) {
            list.push(owner);
        }
    }
    Ok(owners)
}

/// Below this many processes one thread walks them faster than several start.
const PARALLEL_FROM: usize = 512;
/// More walkers than this contend on the kernel's pid lookups for no gain.
const MAX_WALKERS: usize = 4;

/// Every (wanted inode, holder) in the processes named by `pids`.
fn held_sockets(
    proc_fd: BorrowedFd<'_>,
    pids: &[Vec<u8>],
    wanted: &HashSet<u64>,
) -> Vec<(u64, Owner)> {
    let mut found = Vec::new();
    for name in pids {
        let Some(pid) = parse_pid(name) else { continue };
        let Ok(held) = process_sockets(proc_fd, name, wanted) else {
            continue;
        };
        if held.is_empty() {
            continue;
        }
        // The start time is read after the fds, through the same /proc/PID
        // directory: if the pid was reused meanwhile the read fails and the
        // process is skipped rather than misattributed.
        let Ok(start_time) = held.start_time() else {
            continue;
        };
        let owner = Owner { pid, start_time };
        found.extend(held.inodes.iter().map(|&inode| (inode, owner)));
    }
    found
}

fn parse_pid(name: &[u8]) -> Option<u32> {
    if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// The wanted sockets one process holds, plus its open `/proc/PID` directory
/// so that later reads refer to the same process.
struct HeldSockets {
    pid_dir: std::os::fd::OwnedFd,
    inodes: Vec<u64>,
}

impl HeldSockets {
    fn is_empty(&self) -> bool {
        self.inodes.is_empty()
    }

    fn start_time(&self) -> io::Result<u64> {
        let fd = openat(
            &self.pid_dir,
            "stat",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let mut text = String::new();
        File::from(fd).read_to_string(&mut text)?;
        parse_start_time(&text)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stat"))
    }
}

/// Lists the wanted sockets in `/proc/PID/fd`, reading everything relative to
/// one open `/proc/PID` directory so that all reads concern the same process.
fn process_sockets(
    proc_fd: BorrowedFd<'_>,
    pid: &[u8],
    wanted: &HashSet<u64>,
) -> io::Result<HeldSockets> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let pid_dir = openat(proc_fd, OsStr::from_bytes(pid), flags, Mode::empty())?;
    let mut fd_dir = Dir::openat(&pid_dir, "fd", flags, Mode::empty())?;
    let fd_dir_fd = fd_dir.as_fd().try_clone_to_owned()?;
    let mut inodes = Vec::new();
    for entry in fd_dir.iter() {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        if name.to_bytes().first() == Some(&b'.') {
            continue;
        }
        // An fd closed since getdents gives ENOENT: just not a socket now.
        let Ok(target) = readlinkat(&fd_dir_fd, name) else {
            continue;
        };
        if let Some(inode) = socket_inode(target.as_bytes()) {
            if wanted.contains(&inode) && !inodes.contains(&inode) {
                inodes.push(inode);
            }
        }
    }
    Ok(HeldSockets { pid_dir, inodes })
}

/// `socket:[12345]` → 12345.
fn socket_inode(target: &[u8]) -> Option<u64> {
    let digits = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Field 22 (`starttime`) of `/proc/PID/stat`. The command name (field 2) is
/// in parentheses and may itself contain spaces or `)`, so counting starts
/// after the last `)`, where field 3 begins.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm
        .split_ascii_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::{TcpListener, UdpSocket};
    use std::process::{Child, Command, Stdio};

    fn own_owner() -> Owner {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        Owner {
            pid: std::process::id(),
            start_time: parse_start_time(&stat).unwrap(),
        }
    }

    fn find(all: &[Listener], protocol: Protocol, address: IpAddr, port: u16) -> &Listener {
        let hits: Vec<_> = all
            .iter()
            .filter(|l| l.protocol == protocol && l.address == address && l.port == port)
            .collect();
        assert_eq!(hits.len(), 1, "{protocol:?} {address}:{port} in {all:#?}");
        hits[0]
    }

    fn assert_owned_by_me(listener: &Listener) {
        let me = own_owner();
        assert!(listener.owners.contains(&me), "{me:?} not in {listener:?}");
        assert_eq!(listener.uid, my_uid());
        assert_ne!(listener.inode, 0);
    }

    /// Our effective uid, read from /proc so the test needs no unsafe libc call.
    fn my_uid() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    #[test]
    fn finds_own_tcp_v4_listener() {
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let all = listeners().unwrap();
        assert_owned_by_me(find(&all, Protocol::Tcp, addr.ip(), addr.port()));
    }

    #[test]
    fn finds_own_tcp_v6_listener() {
        let Ok(socket) = TcpListener::bind("[::1]:0") else {
            eprintln!("skipping: no IPv6 loopback on this host");
            return;
        };
        let addr = socket.local_addr().unwrap();
        let all = listeners().unwrap();
        let found = find(&all, Protocol::Tcp, "::1".parse().unwrap(), addr.port());
        assert_owned_by_me(found);
    }

    #[test]
    fn finds_own_udp_listener_but_not_connected_udp() {
        let bound = UdpSocket::bind("127.0.0.1:0").unwrap();
        let connected = UdpSocket::bind("127.0.0.1:0").unwrap();
        connected.connect(bound.local_addr().unwrap()).unwrap();
        let addr = bound.local_addr().unwrap();
        let all = listeners().unwrap();
        assert_owned_by_me(find(&all, Protocol::Udp, addr.ip(), addr.port()));
        let port = connected.local_addr().unwrap().port();
        assert!(
            !all.iter()
                .any(|l| l.port == port && l.protocol == Protocol::Udp),
            "connected UDP listed"
        );
    }

    #[test]
    fn connected_tcp_is_not_a_listener() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let port = client.local_addr().unwrap().port();
        let all = listeners().unwrap();
        assert!(!all.iter().any(|l| l.port == port), "client end listed");
    }

    /// Kills the child on drop so a failing assertion does not leak it.
    struct KillOnDrop(Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn finds_listener_of_child_process() {
        let script = "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); \
                      print(s.getsockname()[1], flush=True); time.sleep(30)";
        let mut child = KillOnDrop(
            Command::new("python3")
                .args(["-c", script])
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3"),
        );
        let mut line = String::new();
        BufReader::new(child.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().unwrap();
        let pid = child.0.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let expected = Owner {
            pid,
            start_time: parse_start_time(&stat).unwrap(),
        };

        let all = listeners().unwrap();
        let found = find(&all, Protocol::Tcp, "127.0.0.1".parse().unwrap(), port);
        assert_eq!(found.owners, vec![expected]);
    }

    /// A forked server: parent and child share one listening socket, and
    /// both must be reported (an early stop at the first owner would miss one).
    #[test]
    fn reports_every_process_sharing_a_socket() {
        let script =
            "import os,socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); \
                      pid=os.fork(); \
                      print(s.getsockname()[1], pid, flush=True) if pid else None; time.sleep(30)";
        let mut parent = KillOnDrop(
            Command::new("python3")
                .args(["-c", script])
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3"),
        );
        let mut line = String::new();
        BufReader::new(parent.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut words = line.split_whitespace();
        let port: u16 = words.next().unwrap().parse().unwrap();
        let child_pid: u32 = words.next().unwrap().parse().unwrap();
        // Killing the parent leaves the forked child running: kill it too.
        struct KillPid(u32);
        impl Drop for KillPid {
            fn drop(&mut self) {
                let pid = nix::unistd::Pid::from_raw(self.0 as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        let _child = KillPid(child_pid);

        let all = listeners().unwrap();
        let found = find(&all, Protocol::Tcp, "127.0.0.1".parse().unwrap(), port);
        let mut pids: Vec<u32> = found.owners.iter().map(|o| o.pid).collect();
        pids.sort_unstable();
        let mut expected = vec![parent.0.id(), child_pid];
        expected.sort_unstable();
        assert_eq!(pids, expected);
    }

    #[test]
    fn parses_little_endian_rows() {
        // Lines as printed by an x86-64 kernel (/proc/net/tcp and tcp6).
        let v4 = "  0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0";
        let v6 =
            "  1: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A \
                  00000000:00000000 00:00000000 00000000     0        0 77 1 0";
        let listener = parse_row(v4, Protocol::Tcp, TCP_LISTEN).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(listener.address, IpAddr::from([127, 0, 0, 1]));
            let listener6 = parse_row(v6, Protocol::Tcp, TCP_LISTEN).unwrap();
            assert_eq!(listener6.address, "::1".parse::<IpAddr>().unwrap());
            assert_eq!(
                (listener6.port, listener6.uid, listener6.inode),
                (22, 0, 77)
            );
        }
        assert_eq!(
            (listener.port, listener.uid, listener.inode),
            (8080, 1000, 4242)
        );
    }

    #[test]
    fn skips_other_states_and_connected_udp() {
        let established = "  0: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000 0 1 1";
        assert!(parse_row(established, Protocol::Tcp, TCP_LISTEN).is_none());
        let udp_connected = "  0: 0100007F:1F90 0100007F:D431 07 00000000:00000000 00:00000000 00000000  1000 0 1 1";
        assert!(parse_row(udp_connected, Protocol::Udp, UDP_UNCONNECTED).is_none());
        assert!(parse_row("garbage", Protocol::Tcp, TCP_LISTEN).is_none());
    }

    /// The netlink dump and the `/proc/net` tables agree on every field of
    /// this test's sockets (TCP v4 and v6 listeners, a bound UDP socket), and
    /// neither lists a connected UDP socket or a TCP client.
    #[test]
    fn sock_diag_agrees_with_proc_net() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp6 = TcpListener::bind("[::1]:0").ok();
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        let connected = UdpSocket::bind("127.0.0.1:0").unwrap();
        connected.connect(tcp.local_addr().unwrap()).unwrap();
        let client = std::net::TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        let ports: Vec<u16> = [
            tcp.local_addr().unwrap().port(),
            udp.local_addr().unwrap().port(),
            connected.local_addr().unwrap().port(),
            client.local_addr().unwrap().port(),
        ]
        .into_iter()
        .chain(tcp6.iter().map(|l| l.local_addr().unwrap().port()))
        .collect();
        let mine = |all: Vec<Listener>| {
            let mut rows: Vec<_> = all
                .into_iter()
                .filter(|l| ports.contains(&l.port))
                .map(|l| {
                    (
                        l.protocol == Protocol::Tcp,
                        l.address,
                        l.port,
                        l.uid,
                        l.inode,
                    )
                })
                .collect();
            rows.sort();
            rows
        };
        let mut socket = diag::Socket::open().expect("NETLINK_SOCK_DIAG");
        for (path, protocol, state, _) in TABLES {
            let family = if path.ends_with('6') {
                libc::AF_INET6
            } else {
                libc::AF_INET
            };
            socket.dump(family, protocol, state).expect(path);
        }
        let from_diag = mine(tables(Some(&mut socket)).unwrap());
        let from_proc = mine(tables(None).unwrap());
        assert_eq!(from_diag, from_proc);
        assert_eq!(
            from_diag.len(),
            2 + usize::from(tcp6.is_some()),
            "{from_diag:?}"
        );
    }

    #[test]
    fn parses_inet_diag_messages() {
        // struct inet_diag_msg of a TCP listener on 127.0.0.1:8080, uid 1000, inode 4242.
        let mut msg = [0u8; 72];
        msg[0] = libc::AF_INET as u8;
        msg[1] = TCP_LISTEN;
        msg[4..6].copy_from_slice(&8080u16.to_be_bytes());
        msg[8..12].copy_from_slice(&[127, 0, 0, 1]);
        msg[64..68].copy_from_slice(&1000u32.to_ne_bytes());
        msg[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        let l = diag::parse_msg(&msg, Protocol::Tcp).unwrap();
        assert_eq!(
            (l.address, l.port, l.uid, l.inode),
            (IpAddr::from([127, 0, 0, 1]), 8080, 1000, 4242)
        );
        // A UDP socket with a peer is not a listener; a short message is skipped.
        msg[6..8].copy_from_slice(&53u16.to_be_bytes());
        msg[24..28].copy_from_slice(&[10, 0, 0, 1]);
        assert!(diag::parse_msg(&msg, Protocol::Udp).is_none());
        assert!(diag::parse_msg(&msg[..40], Protocol::Tcp).is_none());

        // Framing: the message, then NLMSG_DONE, each with a 16-byte header.
        let frame = |kind: u16, seq: u32, body: &[u8]| {
            let mut m = Vec::new();
            m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(&[0, 0]);
            m.extend_from_slice(&seq.to_ne_bytes());
            m.extend_from_slice(&[0; 4]);
            m.extend_from_slice(body);
            m
        };
        msg[6..8].fill(0);
        msg[24..28].fill(0);
        let mut data = frame(20, 7, &msg);
        data.extend(frame(libc::NLMSG_DONE as u16, 7, &[0; 4]));
        let mut found = Vec::new();
        assert!(diag::parse_messages(&data, 7, Protocol::Udp, &mut found).unwrap());
        assert_eq!(found.len(), 1);
        // An error reply is the kernel's errno; a truncated message is an error.
        let err = frame(libc::NLMSG_ERROR as u16, 8, &(-libc::ENOENT).to_ne_bytes());
        let e = diag::parse_messages(&err, 8, Protocol::Tcp, &mut found).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert!(diag::parse_messages(&data[..30], 7, Protocol::Tcp, &mut found).is_err());
    }

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 1 2 3";
        assert_eq!(parse_start_time(stat), Some(987654));
    }

    #[test]
    fn socket_links_parse() {
        assert_eq!(socket_inode(b"socket:[123]"), Some(123));
        assert_eq!(socket_inode(b"pipe:[123]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
    }
}
