//! One run at a time per journal: an exclusive `flock` on `<journal>.lock`,
//! waited for a bounded time. The holder writes its pid there for the message
//! a waiting run prints. A lock counts only while the file locked is still
//! the one at the path (same inode). And the holder also `flock`s the journal
//! database file itself (SQLite's own locks are `fcntl` locks, which `flock`
//! does not touch): a lock file removed or replaced under a holder lets the
//! next run past the first lock, never past the second.

use super::JournalError;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct JournalLock {
    _lock: Flock<File>,
    _journal: Flock<File>,
}

impl JournalLock {
    pub fn acquire(journal: &Path, wait: Duration) -> Result<JournalLock, JournalError> {
        let started = Instant::now();
        let lock = exclusive(&lock_path(journal), wait, "the journal lock")?;
        let left = wait.saturating_sub(started.elapsed());
        let held = flock_file(
            journal,
            left,
            "the journal (its lock file was removed or replaced while it ran)",
        )?;
        Ok(JournalLock {
            _lock: lock,
            _journal: held,
        })
    }
}

/// An exclusive `flock` on the file at `path` (created empty if missing),
/// without writing to it.
fn flock_file(path: &Path, wait: Duration, what: &str) -> Result<Flock<File>, JournalError> {
    let unusable = |message: String| JournalError::Unusable {
        path: path.display().to_string(),
        message,
    };
    let deadline = Instant::now() + wait;
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| unusable(e.to_string()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(JournalError::Busy(format!("another doctor run holds {what} {}; gave up after waiting {wait:?} (lock_wait)", path.display())));
            }
            Err((_, e)) => return Err(unusable(format!("locking: {e}"))),
        }
    }
}

/// The host-wide lock that a run takes before it may fix anything, so two
/// doctors with different journals (two policies, a test run, a restored
/// copy) never act on the host at the same time.
pub struct FixLock {
    _lock: Flock<File>,
}

impl FixLock {
    pub fn acquire(path: &Path, wait: Duration) -> Result<FixLock, JournalError> {
        let lock = exclusive(path, wait, "the host-wide fix lock")?;
        Ok(FixLock { _lock: lock })
    }
}

/// An exclusive `flock` on `path`, waited for up to `wait`. The holder
/// writes its pid and start time there for the message a waiter prints.
fn exclusive(path: &Path, wait: Duration, what: &str) -> Result<Flock<File>, JournalError> {
    let unusable = |message: String| JournalError::Unusable {
        path: path.display().to_string(),
        message,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Doctor's own: a shared `/tmp` fallback must not let another user
        // pre-create it and hold doctor's lock forever.
        crate::safe_fs::own_directory(dir, crate::safe_fs::Writers::NOT_OTHERS_UNLESS_STICKY)
            .map_err(unusable)?;
    }
    let deadline = Instant::now() + wait;
    loop {
        // Never through a symlink someone planted at the lock's name.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(path)
            .map_err(|e| unusable(e.to_string()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) if !still_at(&lock, path) => {
                // Someone replaced the file between our open and our
                // lock: this lock guards nothing. Try the new file, but
                // not forever and not in a busy loop.
                drop(lock);
                if Instant::now() >= deadline {
                    return Err(unusable("the lock file keeps being replaced".into()));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(mut lock) => {
                let _ = lock.set_len(0);
                let _ = lock.rewind();
                let _ = write!(
                    lock,
                    "{} {}",
                    std::process::id(),
                    crate::clock::now_unix_ms()
                );
                return Ok(lock);
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(JournalError::Busy(format!(
                    "another doctor run{} holds {what} {}; gave up after waiting {:?} (lock_wait)",
                    holder(path).map(|h| format!(" ({h})")).unwrap_or_default(),
                    path.display(),
                    wait
                )));
            }
            Err((_, e)) => return Err(unusable(format!("locking: {e}"))),
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

/// "pid N: COMMAND LINE, since TIME", from what the holder wrote.
fn holder(path: &Path) -> Option<String> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    let mut parts = text.split_whitespace();
    let pid: u32 = parts.next()?.parse().ok()?;
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .split('\0')
                .filter(|a| !a.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let since = parts
        .next()
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(crate::clock::rfc3339_seconds);
    let mut said = format!("pid {pid}");
    if !command.is_empty() {
        said.push_str(&format!(": {command}"));
    }
    if let Some(since) = since {
        said.push_str(&format!(", since {since}"));
    }
    Some(said)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_lock_file_does_not_let_a_second_run_in() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal.db");
        let first = JournalLock::acquire(&journal, Duration::from_millis(100)).unwrap();
        // Someone removes the lock file and puts a new one there.
        let lock = lock_path(&journal);
        std::fs::remove_file(&lock).unwrap();
        std::fs::write(&lock, "").unwrap();
        let second = JournalLock::acquire(&journal, Duration::from_millis(300));
        assert!(
            matches!(&second, Err(JournalError::Busy(why)) if why.contains("replaced")),
            "{:?}",
            second.err()
        );
        drop(first);
        assert!(
            JournalLock::acquire(&journal, Duration::from_millis(300)).is_ok(),
            "free once the holder is gone"
        );
    }

    #[test]
    fn a_second_run_waits_then_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal.db");
        let _first = JournalLock::acquire(&journal, Duration::from_millis(100)).unwrap();
        let second = JournalLock::acquire(&journal, Duration::from_millis(200));
        assert!(
            matches!(&second, Err(JournalError::Busy(why)) if why.contains(&format!("pid {}", std::process::id()))),
            "{:?}",
            second.err()
        );
    }
}
