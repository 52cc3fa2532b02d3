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
            return Executed::skipped(format!("{path} is already gone"));
        }
        Err(e) => return Executed::failed(format!("{path}: {e}")),
    };
    if meta.is_dir() {
        return Executed::refused(format!("{path} is a directory; only files are removed"));
    }
    let before = std::fs::read_to_string(path).ok().map(|t| crate::capabilities::truncate(t.trim(), 256));
    match std::fs::remove_file(path) {
        Ok(()) => Executed::applied(format!("removed {path}")).with(before, Some("absent".into())),
        Err(e) => Executed::failed(format!("removing {path}: {e}")).with(before, None),
    }
}
