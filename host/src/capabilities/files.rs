//! `files`: stat and read files that match a `grants.files` pattern.
//!
//! The path is resolved once with no symlinks (see `safe_fs`), opened
//! without blocking, and judged by `fstat` of the descriptor that is then
//! read: a FIFO, socket or device inside a granted glob is refused, never
//! waited on, and no read returns more than `file_read_max` bytes.

use super::CapabilityContext;
use crate::runtime::bindings::doctor::plugin::files::{self, FileKind, FileStat};
use crate::runtime::bindings::doctor::plugin::types::Error;
use crate::safe_fs::{self, PathError};
use nix::fcntl::OFlag;
use nix::sys::stat::SFlag;
use std::io::Read;
use std::path::Path;

/// The live answers; the trait impl below records or replays them.
impl CapabilityContext {
    fn files_stat(&mut self, path: String) -> Result<Option<FileStat>, Error> {
        self.grants.file(&path)?;
        let (dir, name) = match safe_fs::open_parent(Path::new(&path)) {
            Ok(found) => found,
            Err(PathError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(path_error(e)),
        };
        match safe_fs::lstat_at(&dir, &name) {
            Ok(stat) => Ok(Some(file_stat(&stat))),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(errno) => Err(Error::Io(format!("{path}: {errno}"))),
        }
    }

    fn files_read(&mut self, path: String, max_bytes: u32) -> Result<String, Error> {
        self.grants.file(&path)?;
        let cap = self.facts.policy.doctor.file_read_max;
        let limit = u64::from(max_bytes).min(cap);
        let fd = safe_fs::open(Path::new(&path), OFlag::O_RDONLY).map_err(path_error)?;
        let stat = safe_fs::stat_fd(&fd).map_err(|errno| Error::Io(format!("{path}: {errno}")))?;
        if safe_fs::kind(&stat) != SFlag::S_IFREG {
            return Err(Error::Invalid(format!(
                "{path} is a {}, not a regular file; only regular files are read",
                safe_fs::kind_name(&stat)
            )));
        }
        let too_big = || {
            Error::Limit(format!(
                "{path} is larger than {limit} bytes (the smaller of max-bytes {max_bytes} and the policy's file_read_max {cap})"
            ))
        };
        if stat.st_size as u64 > limit {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Io(format!("{path}: {e}")))?;
        if bytes.len() as u64 > limit {
            // It grew while we read it.
            return Err(too_big());
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl files::Host for CapabilityContext {
    fn stat(&mut self, path: String) -> wasmtime::Result<Result<Option<FileStat>, Error>> {
        self.answer("files.stat", (&path,), |s| s.files_stat(path.clone()))
    }

    fn read(&mut self, path: String, max_bytes: u32) -> wasmtime::Result<Result<String, Error>> {
        self.answer("files.read", (&path, max_bytes), |s| {
            s.files_read(path.clone(), max_bytes)
        })
    }
}

pub(crate) fn path_error(e: PathError) -> Error {
    match e {
        PathError::NotFound(p) => Error::NotFound(p),
        e @ PathError::Refused { .. } => Error::Denied(e.to_string()),
        e @ PathError::Io { .. } => Error::Io(e.to_string()),
    }
}

pub(crate) fn file_stat(stat: &nix::sys::stat::FileStat) -> FileStat {
    let kind = match safe_fs::kind(stat) {
        SFlag::S_IFLNK => FileKind::Symlink,
        SFlag::S_IFDIR => FileKind::Directory,
        SFlag::S_IFREG => FileKind::File,
        _ => FileKind::Other,
    };
    let modified_unix_ms = (stat.st_mtime.max(0) as u64)
        .saturating_mul(1000)
        .saturating_add((stat.st_mtime_nsec.max(0) as u64) / 1_000_000);
    FileStat {
        kind,
        size: stat.st_size.max(0) as u64,
        uid: stat.st_uid,
        gid: stat.st_gid,
        mode: stat.st_mode & 0o7777,
        modified_unix_ms,
    }
}

#[cfg(test)]
mod tests {
    use crate::capabilities::{denial, test_context};
    use crate::policy::Grants;
    use crate::runtime::bindings::doctor::plugin::files::Host;

    #[test]
    fn reads_only_what_the_grant_names() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let file = dir.join("w.pid");
        std::fs::write(&file, "4242").unwrap();
        let path = file.display().to_string();
        let why = denial(test_context(Grants::default()).read(path.clone(), 64));
        assert!(why.contains("files"), "names the grant: {why}");
        let mut granted = test_context(Grants {
            files: vec![format!("{}/*", dir.display())],
            ..Default::default()
        });
        assert_eq!(granted.read(path, 64).unwrap().expect("granted"), "4242");
        let why = denial(granted.read("/etc/hostname".into(), 64));
        assert!(why.contains("/etc/hostname"), "names the path: {why}");
    }
}
