//! The one wasmtime configuration of every engine doctor makes, and of the
//! engine `build.rs` precompiles the built-in plugins with: compiled code
//! loads only into an engine that agrees with the one that compiled it.
//! This file is included by `build.rs` too, so it uses wasmtime alone.

use wasmtime::Config;

/// Doctor's engine settings (plugins' components, deadlines by epoch).
pub fn config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config
}

/// The x86-64 CPU features the built-ins are precompiled for: x86-64-v2
/// (every x86-64 CPU since about 2009), so one binary's built-ins run
/// natively on any such host; on a host without them a worker finds the
/// embedded code unusable and doctor compiles the plugin as for any other.
/// With fewer, floating-point instructions would become calls into the
/// host.
// Only build.rs precompiles; the runtime compiles for the CPU it runs on.
#[allow(dead_code)]
pub const PORTABLE_X86_64: &[&str] = &[
    "has_sse3",
    "has_ssse3",
    "has_sse41",
    "has_sse42",
    "has_popcnt",
    "has_cmpxchg16b",
];
