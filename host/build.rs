//! Builds the built-in plugins for wasm32-wasip2 and embeds them, so one
//! `doctor` binary works on a fresh host with no plugin directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Built-in plugins: (name, crate file stem).
const BUILTINS: &[(&str, &str)] = &[
    ("pid-file-stop", "pid_file_stop"),
    ("port-9403-freer", "port_9403_freer"),
    ("container-caps-checker", "container_caps_checker"),
    ("sqlite-chunk-reset", "sqlite_chunk_reset"),
    ("job-health", "job_health"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ lives in the workspace root");
    let plugins = root.join("plugins");
    for watched in ["plugins/sdk", "plugins/db-common", "plugins/Cargo.toml", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    for (name, _) in BUILTINS {
        println!("cargo:rerun-if-changed={}", plugins.join(name).display());
    }
    let target_dir = root.join("target").join("plugins");
    build_plugins(&plugins, &target_dir);
    embed(&target_dir.join("wasm32-wasip2").join("release"));
}

fn build_plugins(plugins: &Path, target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(plugins.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir);
    for (name, _) in BUILTINS {
        cmd.args(["-p", name]);
    }
    // The outer build's flags and wrappers (clippy, coverage) are for the host, not wasm.
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_BUILD_TARGET"] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo to build the built-in plugins");
    if !status.success() {
        panic!("building the built-in plugins failed; is the target installed? `rustup target add wasm32-wasip2`");
    }
}

fn embed(wasm_dir: &Path) {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut table = String::from("/// Built-in plugins: (name, component bytes).\npub const BUILTIN: &[(&str, &[u8])] = &[\n");
    for (name, stem) in BUILTINS {
        let wasm = wasm_dir.join(format!("{stem}.wasm"));
        let copy = out_dir.join(format!("{stem}.wasm"));
        std::fs::copy(&wasm, &copy).unwrap_or_else(|e| panic!("copying {}: {e}", wasm.display()));
        table.push_str(&format!("    ({name:?}, include_bytes!({:?})),\n", copy.display().to_string()));
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("builtin_plugins.rs"), table).expect("writing builtin_plugins.rs");
}
