//! Compiled components cached on disk, keyed by the plugin's content hash and
//! the engine's compatibility hash, and handed to workers by descriptor.
//! Each entry carries a checksum of itself, which the worker checks as it
//! reads the entry: a stale, truncated or corrupt entry is a miss and is
//! rewritten, never a failure and never handed to wasmtime unchecked.
//!
//! A cache entry is native code that a worker runs, and the checksum only
//! proves it was not damaged, not who wrote it. So an entry is used only
//! when it and every directory from it up to the cache root belong to
//! doctor's user (or root) and nobody else may write them; otherwise the
//! plugin is compiled in memory and nothing is written.

use crate::safe_fs::{self, Writers};
use anyhow::Context as _;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheOutcome {
    /// A built-in, compiled when doctor was built: nothing compiled or
    /// cached at run time.
    Precompiled,
    /// Loaded from a valid cache entry.
    Hit,
    /// Compiled now (no entry, or an unusable one) and stored.
    Miss,
    /// Compiled now; no cache directory is configured or it is not writable.
    Off,
    /// Compiled now; the cache directory could be written by someone other
    /// than doctor's user, so it is neither read nor written.
    Untrusted,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Precompiled => "precompiled",
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Off => "off",
            CacheOutcome::Untrusted => "untrusted",
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn compile(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Component> {
    Component::new(engine, bytes)
        .map_err(super::wasm_err)
        .context("not a valid WebAssembly component")
}

fn entry_path(engine: &Engine, dir: &Path, sha256: &str) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()))
}

/// Create the cache root if needed (mode 0700) and check that only doctor's
/// user (or root) can write it.
fn prepare_dir(dir: &Path) -> Result<(), String> {
    safe_fs::own_directory(dir, Writers::OWNER_ONLY)
}

/// Not a symlink, owned by doctor's uid or root, and writable by neither
/// group nor others.
fn trusted(path: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Err(format!("{} is a symlink", path.display()));
    }
    safe_fs::owned_by_doctor(path, &meta, Writers::OWNER_ONLY)
}

/// The entry's descriptor, unread, if it and every directory up to `root`
/// are trusted.
fn trusted_entry(root: &Path, path: &Path) -> Option<std::fs::File> {
    if !trusted_tree(root, path) {
        return None;
    }
    open_checked(path)
}

/// The entry and every directory from it up to `root` belong to doctor's
/// user or root and nobody else may write them; nor may anyone swap the
/// root itself.
fn trusted_tree(root: &Path, path: &Path) -> bool {
    let mut step = Some(path);
    while let Some(p) = step {
        if let Err(why) = trusted(p) {
            if p.exists() {
                tracing::warn!(
                    "component cache entry {} is not loaded: {why}; recompiling",
                    path.display()
                );
            }
            return false;
        }
        step = if p == root { None } else { p.parent() };
    }
    // Above the root: no one else may swap the root itself.
    if let Some(why) = root.parent().and_then(|above| ancestors_fixed(above).err()) {
        tracing::warn!(
            "component cache {} is not used: {why}; recompiling",
            root.display()
        );
        return false;
    }
    true
}

/// Whether `data` is a body followed by its own sha256.
pub fn sealed(data: &[u8]) -> bool {
    if data.len() < 32 {
        return false;
    }
    let (body, sum) = data.split_at(data.len() - 32);
    Sha256::digest(body).as_slice() == sum
}

/// The serialized component followed by its sha256: a cache entry's bytes,
/// and what a worker reads from the descriptor it is given.
fn seal(component: &Component) -> anyhow::Result<Vec<u8>> {
    let mut data = component.serialize().map_err(super::wasm_err)?;
    let sum = Sha256::digest(&data);
    data.extend_from_slice(&sum);
    Ok(data)
}

/// The body of sealed bytes whose seal holds.
pub fn unseal(data: &[u8]) -> Option<&[u8]> {
    sealed(data).then(|| &data[..data.len() - 32])
}

/// Compiled code for a worker: the descriptor of a trusted cache entry,
/// or of a memory file holding what was compiled now. Either way the bytes
/// are sealed ([`seal`]), the descriptor read-only, and nothing but the
/// parent ever writes the cache. The worker, which reads the bytes anyway,
/// checks the seal; a broken one brings the parent back here with
/// `use_entry` false, which compiles and rewrites the entry.
pub fn compiled_file(
    engine: &Engine,
    dir: Option<&Path>,
    bytes: &[u8],
    sha256: &str,
    use_entry: bool,
) -> anyhow::Result<(std::fs::File, CacheOutcome)> {
    let Some(dir) = dir else {
        return Ok((
            memory_file(&seal(&compile(engine, bytes)?)?)?,
            CacheOutcome::Off,
        ));
    };
    if let Err(why) = prepare_dir(dir) {
        tracing::warn!(
            "component cache {} is not used: {why}; compiling in memory",
            dir.display()
        );
        let sealed = seal(&compile(engine, bytes)?)?;
        return Ok((memory_file(&sealed)?, CacheOutcome::Untrusted));
    }
    let entry = entry_path(engine, dir, sha256);
    if use_entry {
        if let Some(file) = trusted_entry(dir, &entry) {
            return Ok((file, CacheOutcome::Hit));
        }
    }
    let sealed = seal(&compile(engine, bytes)?)?;
    let outcome = match write_sealed(&sealed, dir, &entry) {
        Ok(()) => CacheOutcome::Miss,
        Err(e) => {
            tracing::warn!("component cache {} not written: {e:#}", dir.display());
            CacheOutcome::Off
        }
    };
    Ok((memory_file(&sealed)?, outcome))
}

/// An anonymous, unlinked file holding `data`, for a worker to read.
fn memory_file(data: &[u8]) -> anyhow::Result<std::fs::File> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: a constant C string; the result is checked before use.
    let fd = unsafe { libc::memfd_create(c"doctor-plugin".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create");
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(data)
        .context("writing compiled code to a memory file")?;
    Ok(file)
}

/// Every directory from `dir` up to `/` is root's or doctor's user's, and
/// writable by others only with the sticky bit (as `/tmp` is), so nobody
/// else can rename the cache root away and put theirs in its place.
fn ancestors_fixed(dir: &Path) -> Result<(), String> {
    for p in dir.ancestors() {
        let meta = std::fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        safe_fs::owned_by_doctor(p, &meta, Writers::OWNER_OR_STICKY)?;
    }
    Ok(())
}

/// The entry, opened without following a symlink and judged by its
/// descriptor: a regular file with one link, doctor's own (or root's),
/// writable by nobody else.
fn open_checked(path: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_file()
        || meta.nlink() != 1
        || (meta.uid() != me && meta.uid() != 0)
        || meta.mode() & 0o022 != 0
    {
        tracing::warn!(
            "component cache entry {} is not a private regular file; recompiling",
            path.display()
        );
        return None;
    }
    Some(file)
}

fn write_sealed(data: &[u8], dir: &Path, path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(data)?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}
