//! One run at a time per journal: an exclusive `flock` on `<journal>.lock`,
//! waited for a bounded time. The holder writes its pid there for the message
//! a waiting run prints. A lock counts only while the file locked is still
//! the one at the path (same inode): a lock file removed or replaced under a
//! holder is not a free lock.

use super::JournalError;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct JournalLock {
    _lock: Flock<File>,
}

impl JournalLock {
    pub fn acquire(journal: &Path, wait: Duration) -> Result<JournalLock, JournalError> {
        let path = lock_path(journal);
        let unusable = |message: String| JournalError::Unusable { path: path.display().to_string(), message };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| unusable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let deadline = Instant::now() + wait;
        loop {
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| unusable(e.to_string()))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) if !still_at(&lock, &path) => {
                    // Someone replaced the file between our open and our
                    // lock: this lock guards nothing. Try the new file.
                    drop(lock);
                }
                Ok(mut lock) => {
                    let _ = lock.set_len(0);
                    let _ = lock.rewind();
                    let _ = write!(lock, "{}", std::process::id());
                    return Ok(JournalLock { _lock: lock });
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(JournalError::Busy(format!(
                        "another doctor run{} holds the journal lock {}; gave up after waiting {:?} (lock_wait)",
                        holder(&path).map(|p| format!(" (pid {p})")).unwrap_or_default(),
                        path.display(),
                        wait
                    )));
                }
                Err((_, e)) => return Err(unusable(format!("locking: {e}"))),
            }
        }
    }
}

pub(super) fn lock_path(journal: &Path) -> PathBuf {
    let mut name = journal.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    journal.with_file_name(name)
}

/// The locked file is the one the path names now.
fn still_at(lock: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (lock.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(locked), Ok(named)) => locked.dev() == named.dev() && locked.ino() == named.ino(),
        _ => false,
    }
}

fn holder(path: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
