//! Compiled components cached on disk, keyed by the plugin's content hash and
//! the engine's compatibility hash. Each entry carries a checksum of itself:
//! a stale, truncated or corrupt entry is a miss and is rewritten, never a
//! failure and never handed to wasmtime unchecked.

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheOutcome {
    /// Loaded from a valid cache entry.
    Hit,
    /// Compiled now (no entry, or an unusable one) and stored.
    Miss,
    /// Compiled now; no cache directory is configured or it is not writable.
    Off,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Off => "off",
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn load_or_compile(
    engine: &Engine,
    dir: Option<&Path>,
    bytes: &[u8],
    sha256: &str,
) -> anyhow::Result<(Component, CacheOutcome)> {
    let Some(dir) = dir else {
        return Ok((compile(engine, bytes)?, CacheOutcome::Off));
    };
    let entry = entry_path(engine, dir, sha256);
    if let Some(component) = read_entry(engine, &entry) {
        return Ok((component, CacheOutcome::Hit));
    }
    let component = compile(engine, bytes)?;
    match write_entry(&component, dir, &entry) {
        Ok(()) => Ok((component, CacheOutcome::Miss)),
        Err(e) => {
            tracing::warn!("component cache {} not written: {e:#}", dir.display());
            Ok((component, CacheOutcome::Off))
        }
    }
}

fn compile(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Component> {
    Component::new(engine, bytes).map_err(super::wasm_err).context("not a valid WebAssembly component")
}

fn entry_path(engine: &Engine, dir: &Path, sha256: &str) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()))
}

/// A valid entry's last 32 bytes are the sha256 of everything before them.
fn read_entry(engine: &Engine, path: &Path) -> Option<Component> {
    let data = std::fs::read(path).ok()?;
    if data.len() < 32 {
        return None;
    }
    let (body, sum) = data.split_at(data.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        tracing::warn!("component cache entry {} is corrupt; recompiling", path.display());
        return None;
    }
    // SAFETY: the bytes are ours: written by `write_entry` from
    // `Component::serialize` of this engine configuration (the file name
    // carries its compatibility hash) and verified by checksum just above.
    unsafe { Component::deserialize(engine, body) }.ok()
}

fn write_entry(component: &Component, dir: &Path, path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut data = component.serialize().map_err(super::wasm_err)?;
    let sum = Sha256::digest(&data);
    data.extend_from_slice(&sum);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &data)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
