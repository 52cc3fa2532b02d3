//! Builds the built-in plugins for wasm32-wasip2 and embeds them, so one
//! `doctor` binary works on a fresh host with no plugin directory.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/runtime/engine_config.rs"]
mod engine_config;

/// Built-in plugins: (name, crate file stem).
const BUILTINS: &[(&str, &str)] = &[
    ("pid-file-stop", "pid_file_stop"),
    ("port-9403-freer", "port_9403_freer"),
    ("container-caps-checker", "container_caps_checker"),
    ("sqlite-chunk-reset", "sqlite_chunk_reset"),
    ("job-health", "job_health"),
];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("host/ lives in the workspace root");
    let plugins = root.join("plugins");
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("src/runtime/engine_config.rs").display()
    );
    for watched in [
        "plugins/sdk",
        "plugins/db-common",
        "plugins/Cargo.toml",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    for (name, _) in BUILTINS {
        println!("cargo:rerun-if-changed={}", plugins.join(name).display());
    }
    // Beside the host's own artifacts, wherever CARGO_TARGET_DIR puts them.
    let target_dir = cargo_target_dir(root).join("plugins");
    build_plugins(&plugins, &target_dir);
    embed(&target_dir.join("wasm32-wasip2").join("release"));
    version_info(root);
    pack_relative_relocations();
}

/// Relative relocations packed (DT_RELR) instead of ~60,000 RELA entries:
/// every start of doctor, and of each plugin's worker (doctor again),
/// applies them before `main`. glibc 2.36 (Debian 12) reads them; the
/// package's libc dependency follows from the binary.
fn pack_relative_relocations() {
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if linux && gnu {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The target directory of this build: the ancestor of OUT_DIR that cargo
/// marked with CACHEDIR.TAG (CARGO_TARGET_DIR may be relative to a working
/// directory the build script does not know). Else `<workspace>/target`.
fn cargo_target_dir(root: &Path) -> PathBuf {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("target"))
}

/// What `doctor --version` names besides the crate version: the git commit
/// ("unknown" outside git), the wasmtime it links (from Cargo.lock) and the
/// WIT packages in wit/ that it loads plugins against.
fn version_info(root: &Path) {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty());
    if commit.is_some() {
        // A new commit must show in --version: watch HEAD and the ref it names.
        for path in [
            git(&["rev-parse", "--git-path", "HEAD"]),
            git(&["symbolic-ref", "-q", "HEAD"])
                .and_then(|r| git(&["rev-parse", "--git-path", &r])),
        ]
        .into_iter()
        .flatten()
        {
            println!("cargo:rerun-if-changed={}", root.join(path).display());
        }
    }
    println!(
        "cargo:rustc-env=DOCTOR_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    println!(
        "cargo:rustc-env=DOCTOR_WASMTIME_VERSION={}",
        locked_version(&lock, "wasmtime").unwrap_or_else(|| "unknown".into())
    );
    let mut packages = Vec::new();
    wit_packages(&root.join("wit"), &mut packages);
    packages.sort();
    packages.dedup();
    println!(
        "cargo:rustc-env=DOCTOR_WIT_PACKAGES={}",
        if packages.is_empty() {
            "unknown".into()
        } else {
            packages.join(", ")
        }
    );
}

/// `version = "…"` of the `[[package]]` named `name` in a Cargo.lock.
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{name}\"") {
            let version = lines
                .next()?
                .trim()
                .strip_prefix("version = \"")?
                .strip_suffix('"')?;
            return Some(version.to_string());
        }
    }
    None
}

/// The `package NS:NAME@VERSION;` line of every .wit file under `dir`.
fn wit_packages(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            wit_packages(&path, out);
        } else if path.extension().is_some_and(|e| e == "wit") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            out.extend(
                text.lines()
                    .filter_map(|l| l.trim().strip_prefix("package "))
                    .map(|p| p.trim_end_matches(';').trim().to_string()),
            );
        }
    }
}

fn build_plugins(plugins: &Path, target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(plugins.join("Cargo.toml"))
    .env("CARGO_TARGET_DIR", target_dir);
    for (name, _) in BUILTINS {
        cmd.args(["-p", name]);
    }
    // The outer build's flags and wrappers (clippy, coverage) are for the host, not wasm.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("running cargo to build the built-in plugins");
    if !status.success() {
        panic!("building the built-in plugins failed; is the target installed? `rustup target add wasm32-wasip2`");
    }
}

/// The built-ins' table: each one's component, its sha256, and its native
/// code precompiled by an engine configured as doctor's
/// (`src/runtime/engine_config.rs`), so no run ever compiles a built-in.
fn embed(wasm_dir: &Path) {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let engine = precompiling_engine();
    let mut table = String::new();
    // Without a precompiling engine (a target wasmtime cannot compile for
    // here), the built-ins are embedded as components only and compiled
    // at run time like plugin files.
    for (name, stem) in BUILTINS {
        let wasm_path = wasm_dir.join(format!("{stem}.wasm"));
        let wasm = std::fs::read(&wasm_path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", wasm_path.display()));
        let native = engine.as_ref().map_or_else(Vec::new, |engine| {
            engine
                .precompile_component(&wasm)
                .unwrap_or_else(|e| panic!("precompiling {}: {e:#}", wasm_path.display()))
        });
        let wasm_copy = out_dir.join(format!("{stem}.wasm"));
        let native_copy = out_dir.join(format!("{stem}.cwasm"));
        write(&wasm_copy, &wasm);
        write(&native_copy, &native);
        table.push_str(&format!(
            "    Builtin {{\n        name: {name:?},\n        wasm: include_bytes!({:?}),\n        sha256: {:?},\n        native: {{\n            static CODE: &PageAligned<[u8]> = &PageAligned(*include_bytes!({:?}));\n            &CODE.0\n        }},\n    }},\n",
            wasm_copy.display().to_string(),
            hex::encode(Sha256::digest(&wasm)),
            native_copy.display().to_string(),
        ));
    }
    std::fs::write(
        out_dir.join("builtin_plugins.rs"),
        format!("pub static BUILTIN: &[Builtin] = &[\n{table}];\n"),
    )
    .expect("writing builtin_plugins.rs");
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Doctor's engine configuration for the target being built, with no CPU
/// feature taken from the build machine: on x86-64, the portable baseline
/// of `engine_config::PORTABLE_X86_64`.
fn precompiling_engine() -> Option<wasmtime::Engine> {
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let mut config = engine_config::config();
    if let Err(e) = config.target(&target) {
        println!("cargo:warning=built-ins not precompiled: wasmtime does not know {target}: {e}");
        return None;
    }
    if target.starts_with("x86_64") {
        for feature in engine_config::PORTABLE_X86_64 {
            // SAFETY: sets a Cranelift ISA flag; wasmtime checks at load
            // that the running CPU has the feature.
            unsafe {
                config.cranelift_flag_enable(feature);
            }
        }
    }
    match wasmtime::Engine::new(&config) {
        Ok(engine) => Some(engine),
        Err(e) => {
            println!("cargo:warning=built-ins not precompiled: no engine for {target}: {e:#}");
            None
        }
    }
}
