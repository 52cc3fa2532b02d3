//! `fix --dry-run`: what each primitive would refuse, decided by the same
//! grants and guards and without touching anything. Only refusals are
//! predicted; whether an allowed action then succeeds is the world's answer
//! and only `fix` gets it. Checks that need the target opened for writing
//! (a table declaring ON CONFLICT REPLACE) are left to `fix`.

use super::guards::{check_target, Verdict};
use super::ActionContext;
use crate::facts::sqlite;
use crate::findings::Action;
use crate::safe_fs::{self, FileId, PathError};
use nix::sys::stat::SFlag;
use std::path::Path;

/// Why `fix` would refuse this action, if it would.
pub fn refusal(ctx: &ActionContext, action: &Action) -> Option<String> {
    match action {
        Action::StopProcess {
            pid, start_time, ..
        }
        | Action::SignalProcess {
            pid, start_time, ..
        } => process(ctx, *pid, *start_time),
        Action::RemoveFile { path } => file(ctx, path),
        Action::SqlExec { db, statement, .. } => sql(ctx, db, statement),
        Action::ContainerStart { id }
        | Action::ContainerStop { id, .. }
        | Action::ContainerRestart { id, .. } => container(ctx, id),
        Action::RunCommand { name } => ctx.grants.command(name).err().map(|d| d.0),
        Action::WaitPortFree { .. } => ctx.grants.sockets().err().map(|d| d.0),
    }
}

/// The guards first, then the signal grant, as `process::Handle::acquire`.
fn process(ctx: &ActionContext, pid: u32, start_time: u64) -> Option<String> {
    match check_target(pid, start_time, &ctx.protected_pids) {
        Verdict::Forbidden(why) => Some(format!("guard: {why}")),
        Verdict::Gone(_) => None,
        Verdict::Same(info) => ctx.grants.signal(&info).err().map(|d| d.0),
    }
}

/// The order of `files::remove`: grant, path shape, kind, own files.
fn file(ctx: &ActionContext, path: &str) -> Option<String> {
    if let Err(denied) = ctx.grants.file_remove(path) {
        return Some(denied.0);
    }
    let (dir, name) = match safe_fs::open_parent(Path::new(path)) {
        Ok(found) => found,
        Err(e @ PathError::Refused { .. }) => return Some(e.to_string()),
        Err(_) => return None,
    };
    let stat = safe_fs::lstat_at(&dir, &name).ok()?;
    let kind = safe_fs::kind(&stat);
    if kind != SFlag::S_IFREG && kind != SFlag::S_IFLNK {
        return Some(format!(
            "{path} is a {}; only regular files (and symlinks) are removed",
            safe_fs::kind_name(&stat)
        ));
    }
    if super::files::is_protected(ctx, FileId::of(&stat)) {
        return Some(format!(
            "guard: {path} is doctor's own journal, its WAL/SHM or its lock file; never a target"
        ));
    }
    None
}

/// The order of `sql::exec`: grant, verb, OR REPLACE, own journal, file.
fn sql(ctx: &ActionContext, label: &str, statement: &str) -> Option<String> {
    if let Err(denied) = ctx.grants.sqlite_write(label) {
        return Some(denied.0);
    }
    if ctx.policy.database(label)?.postgres().is_some() {
        // The statement's own guard; triggers are known only when connected.
        return crate::facts::postgres::guard::check_update(statement)
            .err()
            .map(|refused| format!("database {label:?}: {}", refused.0));
    }
    let path = ctx.policy.database_path(label)?;
    let verb = statement
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    if !super::sql::ALLOWED_VERBS.contains(&verb.as_str()) {
        return Some(format!(
            "sql-exec runs only {} statements, not {verb}",
            super::sql::ALLOWED_VERBS.join("/")
        ));
    }
    if super::sql::or_replace(statement) {
        return Some(
            "sql-exec does not run OR REPLACE: rows it deletes are not counted against max-rows"
                .into(),
        );
    }
    match sqlite::database_file(path) {
        Ok(id)
            if ctx
                .protected_files
                .iter()
                .any(|p| FileId::of_own_file(p) == Some(id)) =>
        {
            Some(format!(
                "guard: database {label:?} is doctor's own journal; never a target"
            ))
        }
        Err(sqlite::SqlError::Refused(why)) => Some(format!("database {label:?}: {why}")),
        _ => None,
    }
}

/// The write grant names containers: ask the engine that holds it for its
/// names, as `containers::container` does (an engine that does not answer
/// is `fix`'s failure).
fn container(ctx: &ActionContext, id: &str) -> Option<String> {
    let (engine_name, engine, id) = ctx.engines.locate(id, |e| ctx.grants.engine(e)).ok()?;
    let names = super::containers::grant_names(engine_name, &engine.inspect(id).ok()?);
    ctx.grants.container_write(&names).err().map(|d| d.0)
}
