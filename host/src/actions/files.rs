//! `remove-file`: a regular file (or a symlink, removed, never followed)
//! that matches a `files_remove` grant.
//!
//! The directory holding it is opened once with no symlinks on the way, the
//! entry is judged by `fstatat` in that directory, and `unlinkat` removes it
//! from that same directory: swapping a parent for a symlink after the check
//! reaches nothing. Doctor's own journal, its WAL/SHM and its lock file are
//! never removed, however a glob matches them (compared by device and inode).

use super::{ActionContext, Executed};
use crate::safe_fs::{self, FileId, PathError};
use nix::fcntl::OFlag;
use nix::sys::stat::SFlag;
use nix::unistd::UnlinkatFlags;
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

pub fn remove(ctx: &ActionContext, path: &str) -> Executed {
    if let Err(denied) = ctx.grants.file_remove(path) {
        return Executed::refused(denied.0);
    }
    let (dir, name) = match safe_fs::open_parent(Path::new(path)) {
        Ok(found) => found,
        Err(PathError::NotFound(_)) => {
            return Executed::already_done(format!("{path} is already gone"))
        }
        Err(e @ PathError::Refused { .. }) => return Executed::refused(e.to_string()),
        Err(e) => return Executed::failed(e.to_string()),
    };
    let stat = match safe_fs::lstat_at(&dir, &name) {
        Ok(stat) => stat,
        Err(nix::errno::Errno::ENOENT) => {
            return Executed::already_done(format!("{path} is already gone"))
        }
        Err(errno) => return Executed::failed(format!("{path}: {errno}")),
    };
    let kind = safe_fs::kind(&stat);
    if kind != SFlag::S_IFREG && kind != SFlag::S_IFLNK {
        return Executed::refused(format!(
            "{path} is a {}; only regular files (and symlinks) are removed",
            safe_fs::kind_name(&stat)
        ));
    }
    if is_protected(ctx, FileId::of(&stat)) {
        return Executed::refused(format!(
            "guard: {path} is doctor's own journal, its WAL/SHM or its lock file; never a target"
        ));
    }
    let before = describe_before(&dir, &name, kind, FileId::of(&stat));
    match nix::unistd::unlinkat(&dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) => Executed::applied(format!("removed {path}")).with(before, Some("absent".into())),
        Err(nix::errno::Errno::ENOENT) => Executed::already_done(format!("{path} is already gone")),
        Err(errno) => Executed::failed(format!("removing {path}: {errno}")).with(before, None),
    }
}

pub(super) fn is_protected(ctx: &ActionContext, target: FileId) -> bool {
    ctx.protected_files
        .iter()
        .any(|p| FileId::of_own_file(p) == Some(target))
}

/// What the file said (its first bytes) or where the symlink pointed, read
/// through the directory that was checked and never through the link.
fn describe_before(dir: &OwnedFd, name: &OsStr, kind: SFlag, judged: FileId) -> Option<String> {
    if kind == SFlag::S_IFLNK {
        let target = nix::fcntl::readlinkat(dir, name).ok()?;
        return Some(format!("symlink to {}", Path::new(&target).display()));
    }
    let fd = safe_fs::open_at(dir, name, OFlag::O_RDONLY).ok()?;
    // Only the file that was judged: a swap in between is not read.
    if FileId::of(&safe_fs::stat_fd(&fd).ok()?) != judged {
        return None;
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(256)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::remove;
    use crate::actions::test_context;
    use crate::plan::ActionOutcome;
    use crate::policy::Grants;

    fn granted(dir: &std::path::Path) -> crate::actions::ActionContext {
        test_context(Grants {
            files_remove: vec![format!("{}/*", dir.display())],
            ..Default::default()
        })
    }

    #[test]
    fn removes_a_granted_file_and_says_what_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let file = dir.join("w.pid");
        std::fs::write(&file, "4242\n").unwrap();
        let done = remove(&granted(&dir), &file.display().to_string());
        assert_eq!(
            (done.outcome, done.before.as_deref()),
            (ActionOutcome::Applied, Some("4242")),
            "{}",
            done.detail
        );
        assert!(!file.exists());
        let again = remove(&granted(&dir), &file.display().to_string());
        assert!(
            again.outcome == ActionOutcome::Skipped && again.goal_met,
            "gone already is the goal met: {}",
            again.detail
        );
    }

    #[test]
    fn refuses_outside_the_grant_a_directory_and_doctors_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        let denied = remove(&granted(&dir), &outside.path().display().to_string());
        assert_eq!(denied.outcome, ActionOutcome::Refused);
        assert!(
            denied.detail.contains("files_remove"),
            "names the grant: {}",
            denied.detail
        );
        assert!(outside.path().exists());

        std::fs::create_dir(dir.join("sub")).unwrap();
        let not_a_file = remove(&granted(&dir), &dir.join("sub").display().to_string());
        assert_eq!(
            not_a_file.outcome,
            ActionOutcome::Refused,
            "{}",
            not_a_file.detail
        );
        assert!(dir.join("sub").is_dir());

        let journal = dir.join("journal.db");
        std::fs::write(&journal, "").unwrap();
        let mut ctx = granted(&dir);
        ctx.protected_files = vec![journal.clone()];
        let own = remove(&ctx, &journal.display().to_string());
        assert!(
            own.outcome == ActionOutcome::Refused && own.detail.contains("guard"),
            "{}",
            own.detail
        );
        assert!(journal.exists());
    }

    #[test]
    fn a_symlink_is_removed_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let target = tempfile::NamedTempFile::new().unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(target.path(), &link).unwrap();
        let done = remove(&granted(&dir), &link.display().to_string());
        assert_eq!(done.outcome, ActionOutcome::Applied, "{}", done.detail);
        assert!(
            done.before
                .as_deref()
                .is_some_and(|b| b.starts_with("symlink to ")),
            "{:?}",
            done.before
        );
        assert!(!link.exists() && target.path().exists());
    }
}
