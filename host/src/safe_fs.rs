//! Paths resolved once, with no symlink at any component, and acted on
//! through the descriptor that was checked.
//!
//! A grant is a pattern over real paths. Resolving with
//! `RESOLVE_NO_SYMLINKS` means the path as written *is* the real path, so a
//! pattern matched on the written path is matched on what gets touched; and
//! every later step (stat, read, unlink, chown) goes through the directory
//! or file descriptor opened then, so swapping a directory for a symlink in
//! between reaches nothing. No `openat2` (kernels before 5.6) means refusal.

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// openat2 answers EAGAIN when a rename races the walk; try again a few times.
const EAGAIN_RETRIES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{path}: {why}")]
    Refused { path: String, why: String },
    #[error("{path}: {errno}")]
    Io { path: String, errno: Errno },
}

/// A file's identity: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(stat: &FileStat) -> FileId {
        FileId {
            dev: stat.st_dev,
            ino: stat.st_ino,
        }
    }

    /// The identity of the entry `path` names now (a final symlink is not
    /// followed; directories on the way are, as for doctor's own files,
    /// whose paths the operator chose).
    pub fn of_own_file(path: &Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path).ok().map(|m| FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// What kind of file an entry is, as `fstat`/`fstatat` say.
pub fn kind(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

pub fn kind_name(stat: &FileStat) -> &'static str {
    match kind(stat) {
        SFlag::S_IFREG => "regular file",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symlink",
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        _ => "special file",
    }
}

/// An absolute, normal path — no `..`, no `.`, no `//`, no trailing `/`:
/// the only shape a grant can speak about. (`Path::components` would hide
/// `.` and `//`, and a glob's `*` matches them, so `/srv/*/x` must not
/// reach `/srv/./x`.)
pub fn check_shape(path: &Path) -> Result<(), PathError> {
    if !is_normal(&path.to_string_lossy()) {
        return Err(refused(
            path,
            "must be absolute and normal: no `..`, `.`, `//` or trailing `/`",
        ));
    }
    Ok(())
}

/// `/a/b` is normal; `a/b`, `/a/../b`, `/a/./b`, `/a//b`, `/a/` are not.
pub fn is_normal(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    rest.is_empty()
        || rest
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Open the directory that holds `path` (no symlinks on the way) and return
/// it with the last component's name.
pub fn open_parent(path: &Path) -> Result<(OwnedFd, OsString), PathError> {
    check_shape(path)?;
    let name = path
        .file_name()
        .ok_or_else(|| refused(path, "names no file"))?
        .to_os_string();
    let parent = path.parent().unwrap_or(Path::new("/"));
    let dir = resolve(path, parent, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    Ok((dir, name))
}

/// Open `path` itself with `flags`, no symlinks anywhere, the last component
/// included. `O_NONBLOCK` is always added: opening a FIFO must not wait for
/// a writer.
pub fn open(path: &Path, flags: OFlag) -> Result<OwnedFd, PathError> {
    check_shape(path)?;
    // openat2 refuses O_PATH with any flag but O_CLOEXEC/O_DIRECTORY/O_NOFOLLOW.
    let flags = if flags.contains(OFlag::O_PATH) {
        flags
    } else {
        flags | OFlag::O_NONBLOCK
    };
    resolve(path, path, flags)
}

/// `fstatat` of `name` in `dir`, not following a final symlink.
pub fn lstat_at(dir: &OwnedFd, name: &OsStr) -> Result<FileStat, Errno> {
    fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// Open `name` in `dir` without following it.
pub fn open_at(dir: &OwnedFd, name: &OsStr, flags: OFlag) -> Result<OwnedFd, Errno> {
    nix::fcntl::openat(
        dir.as_fd(),
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

pub fn stat_fd(fd: &OwnedFd) -> Result<FileStat, Errno> {
    fstat(fd.as_fd())
}

fn resolve(shown: &Path, target: &Path, flags: OFlag) -> Result<OwnedFd, PathError> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let mut tries = 0;
    loop {
        match openat2(nix::fcntl::AT_FDCWD, target, how) {
            Ok(fd) => return Ok(fd),
            Err(Errno::EAGAIN) if tries < EAGAIN_RETRIES => tries += 1,
            Err(Errno::ENOENT) => return Err(PathError::NotFound(shown.display().to_string())),
            Err(Errno::ELOOP) => {
                let link = first_symlink(target).map(|l| l.display().to_string()).unwrap_or_else(|| target.display().to_string());
                return Err(refused(shown, &format!("{link} is a symlink; doctor follows no symlinks on granted paths (name the real path in the policy)")));
            }
            Err(Errno::ENOSYS) => return Err(refused(shown, "this kernel has no openat2 (Linux 5.6+); doctor will not resolve granted paths without it")),
            Err(errno) => return Err(PathError::Io { path: shown.display().to_string(), errno }),
        }
    }
}

/// For the message: the first component of `path` that is a symlink.
fn first_symlink(path: &Path) -> Option<std::path::PathBuf> {
    let mut walked = std::path::PathBuf::new();
    for part in path.components() {
        walked.push(part);
        if std::fs::symlink_metadata(&walked)
            .ok()?
            .file_type()
            .is_symlink()
        {
            return Some(walked);
        }
    }
    None
}

/// Who besides its owner may write a directory or file doctor relies on
/// (its cache, locks, recordings): the mode bits refused, and whether the
/// sticky bit makes them harmless (no one can then replace another's entry).
#[derive(Debug, Clone, Copy)]
pub struct Writers {
    pub refused_bits: u32,
    pub unless_sticky: bool,
}

impl Writers {
    /// Writable by neither group nor others.
    pub const OWNER_ONLY: Writers = Writers {
        refused_bits: 0o022,
        unless_sticky: false,
    };
    /// Group or others may write only a sticky directory (as `/tmp`).
    pub const OWNER_OR_STICKY: Writers = Writers {
        refused_bits: 0o022,
        unless_sticky: true,
    };
    /// Others may write only a sticky directory; the group may.
    pub const NOT_OTHERS_UNLESS_STICKY: Writers = Writers {
        refused_bits: 0o002,
        unless_sticky: true,
    };
}

/// `meta` (of `path`) belongs to doctor's user or root and no one else
/// `writers` refuses may write it.
pub fn owned_by_doctor(
    path: &Path,
    meta: &std::fs::Metadata,
    writers: Writers,
) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "{} belongs to uid {}, not doctor's uid {me} or root",
            path.display(),
            meta.uid()
        ));
    }
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.mode() & writers.refused_bits != 0 && !(writers.unless_sticky && sticky) {
        let sticky_note = if writers.unless_sticky {
            " and not sticky"
        } else {
            ""
        };
        return Err(format!(
            "{} is writable by others (mode {:o}){sticky_note}",
            path.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// A directory of doctor's own: created 0700 when missing; one that exists
/// must be a real directory (not a symlink) that [`owned_by_doctor`] accepts.
pub fn own_directory(dir: &Path, writers: Writers) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory (a symlink?)", dir.display()));
    }
    owned_by_doctor(dir, &meta, writers)
}

fn refused(path: &Path, why: &str) -> PathError {
    PathError::Refused {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// The name as bytes, for messages and comparisons.
pub fn name_bytes(name: &OsStr) -> &[u8] {
    name.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real_tempdir() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        (dir, real)
    }

    #[test]
    fn a_symlinked_directory_on_the_way_is_refused_and_named() {
        let (_d, root) = real_tempdir();
        std::fs::create_dir(root.join("real")).unwrap();
        std::fs::write(root.join("real/x.pid"), "1").unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("link")).unwrap();
        assert!(open(&root.join("real/x.pid"), OFlag::O_RDONLY).is_ok());
        let err = open(&root.join("link/x.pid"), OFlag::O_RDONLY).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("{} is a symlink", root.join("link").display())),
            "{err}"
        );
        assert!(open_parent(&root.join("link/x.pid")).is_err());
    }

    #[test]
    fn a_symlink_as_last_component_is_refused_by_open_but_seen_by_lstat() {
        let (_d, root) = real_tempdir();
        std::os::unix::fs::symlink("/etc/hostname", root.join("x.pid")).unwrap();
        assert!(matches!(
            open(&root.join("x.pid"), OFlag::O_RDONLY),
            Err(PathError::Refused { .. })
        ));
        let (dir, name) = open_parent(&root.join("x.pid")).unwrap();
        assert_eq!(kind(&lstat_at(&dir, &name).unwrap()), SFlag::S_IFLNK);
    }

    #[test]
    fn opening_a_fifo_does_not_wait_for_a_writer() {
        let (_d, root) = real_tempdir();
        let fifo = root.join("f");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let fd = open(&fifo, OFlag::O_RDONLY).unwrap();
        assert_eq!(kind(&stat_fd(&fd).unwrap()), SFlag::S_IFIFO);
    }

    #[test]
    fn only_normal_absolute_paths_are_accepted() {
        assert!(open(Path::new("run/x"), OFlag::O_RDONLY).is_err());
        assert!(open(Path::new("/run/../etc/shadow"), OFlag::O_RDONLY).is_err());
        for bad in ["/srv/./x", "/srv//x", "/srv/x/", "/srv/x/.", "//srv/x", ""] {
            assert!(!is_normal(bad), "{bad:?}");
        }
        assert!(is_normal("/") && is_normal("/srv/x.lock"));
    }
}
