//! `remove-file`: only regular files (or symlinks, which are removed, not
//! followed) that match a `files_remove` grant.

use super::{ActionContext, Executed};

pub fn remove(ctx: &ActionContext, path: &str) -> Executed {
    if let Err(denied) = ctx.grants.file_remove(path) {
        return Executed::refused(denied.0);
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Executed::already_done(format!("{path} is already gone"));
        }
        Err(e) => return Executed::failed(format!("{path}: {e}")),
    };
    if meta.is_dir() {
        return Executed::refused(format!("{path} is a directory; only files are removed"));
    }
    // Record what the file said, but never read through a symlink: its
    // target may lie outside the grant.
    let before = if meta.file_type().is_symlink() {
        std::fs::read_link(path).ok().map(|t| format!("symlink to {}", t.display()))
    } else {
        read_small(path)
    };
    match std::fs::remove_file(path) {
        Ok(()) => Executed::applied(format!("removed {path}")).with(before, Some("absent".into())),
        Err(e) => Executed::failed(format!("removing {path}: {e}")).with(before, None),
    }
}

/// The first bytes of a regular file, opened without following symlinks.
fn read_small(path: &str) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(256).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).trim().to_string())
}
