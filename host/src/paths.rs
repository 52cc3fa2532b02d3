//! Default locations: system paths for root, XDG directories for others.

use std::path::PathBuf;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn default_policy() -> PathBuf {
    if is_root() {
        return PathBuf::from("/etc/doctor/policy.toml");
    }
    directories::ProjectDirs::from("", "", "doctor")
        .map(|d| d.config_dir().join("policy.toml"))
        .unwrap_or_else(|| PathBuf::from("/etc/doctor/policy.toml"))
}

pub fn default_journal() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/doctor/journal.db");
    }
    directories::ProjectDirs::from("", "", "doctor")
        .and_then(|d| d.state_dir().map(|s| s.join("journal.db")))
        .unwrap_or_else(|| PathBuf::from("/var/lib/doctor/journal.db"))
}

/// Compiled components are code: never beside a journal that may live in a
/// shared directory, always somewhere only the doctor's user can write.
pub fn default_cache() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/cache/doctor");
    }
    directories::ProjectDirs::from("", "", "doctor")
        .map(|d| d.cache_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("/var/cache/doctor"))
}

/// One per host: every doctor that fixes takes it, whatever its journal.
pub fn default_fix_lock() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/doctor/fix.lock");
    }
    directories::BaseDirs::new()
        .and_then(|d| d.runtime_dir().map(|r| r.join("doctor").join("fix.lock")))
        .unwrap_or_else(|| {
            std::env::temp_dir()
                .join(format!("doctor-{}", nix::unistd::geteuid()))
                .join("fix.lock")
        })
}

/// `systemctl --user` units: the XDG config dir's `systemd/user`.
pub fn user_unit_dir() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|d| d.config_dir().join("systemd").join("user"))
}
