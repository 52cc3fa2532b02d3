//! `processes` and `files`: read-only facts about the host.

use super::CapabilityContext;
use crate::facts::processes::ProcessInfo;
use crate::runtime::bindings::doctor::plugin::files::{self, FileKind, FileStat};
use crate::runtime::bindings::doctor::plugin::processes::{self, Process};
use crate::runtime::bindings::doctor::plugin::types::{Error, ProcessRef};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::UNIX_EPOCH;

impl processes::Host for CapabilityContext {
    fn all(&mut self) -> Result<Vec<Process>, Error> {
        self.grants.processes()?;
        let table = self.facts.processes().map_err(Error::Io)?;
        Ok(table.iter().map(to_wit).collect())
    }

    fn get(&mut self, pid: u32) -> Result<Option<Process>, Error> {
        self.grants.processes()?;
        let table = self.facts.processes().map_err(Error::Io)?;
        Ok(table.iter().find(|p| p.id.pid == pid).map(to_wit))
    }
}

fn to_wit(p: &ProcessInfo) -> Process {
    Process {
        id: ProcessRef { pid: p.id.pid, start_time: p.id.start_time },
        ppid: p.ppid,
        uid: p.uid,
        state: p.state.to_string(),
        name: p.name.clone(),
        exe: p.exe.clone(),
        argv: p.argv.clone(),
        cgroup: p.cgroup.clone(),
        started_unix_ms: p.started_unix_ms,
        kernel_thread: p.kernel_thread,
    }
}

impl files::Host for CapabilityContext {
    fn stat(&mut self, path: String) -> Result<Option<FileStat>, Error> {
        self.grants.file(&path)?;
        match std::fs::symlink_metadata(&path) {
            Ok(meta) => Ok(Some(file_stat(&meta))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io(format!("{path}: {e}"))),
        }
    }

    fn read(&mut self, path: String, max_bytes: u32) -> Result<String, Error> {
        self.grants.file(&path)?;
        let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(path.clone()),
            _ => Error::Io(format!("{path}: {e}")),
        })?;
        // Check what was actually opened: a symlink swapped in after the
        // first check must not lead outside the grant.
        let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|e| Error::Io(format!("{path}: {e}")))?;
        self.grants.file(&opened.to_string_lossy())?;
        let mut bytes = Vec::new();
        file.take(u64::from(max_bytes) + 1).read_to_end(&mut bytes).map_err(|e| Error::Io(format!("{path}: {e}")))?;
        if bytes.len() > max_bytes as usize {
            return Err(Error::Limit(format!("{path} is larger than {max_bytes} bytes")));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

pub(crate) fn file_stat(meta: &std::fs::Metadata) -> FileStat {
    let kind = if meta.file_type().is_symlink() {
        FileKind::Symlink
    } else if meta.is_dir() {
        FileKind::Directory
    } else if meta.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    let modified_unix_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    FileStat { kind, size: meta.len(), uid: meta.uid(), gid: meta.gid(), mode: meta.mode() & 0o7777, modified_unix_ms }
}
