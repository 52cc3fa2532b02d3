//! The sandbox: wasmtime's component model with WASI p2 linked to an empty
//! context (no preopens, no environment, no sockets). Every plugin call gets a
//! fresh store with a memory cap and a wall-clock deadline, so a plugin that
//! loops, allocates without bound, panics or traps fails alone.

mod alarm;
pub mod bindings;
mod cache;
mod clock;
mod convert;
mod engine_config;
mod in_place;
pub mod limits;

pub use cache::{sealed, sha256_hex, CacheOutcome};
pub use convert::bound_info;

use anyhow::Context as _;
use limits::{InstanceBudget, Tripped};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// A panic message is worth keeping; a flood on stderr is not.
const STDERR_CAPACITY: usize = 16 * 1024;

/// What `describe()` says about a plugin, in the host's terms.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub summary: String,
    pub capabilities: Vec<String>,
    pub config: Vec<ConfigKey>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ConfigKey {
    pub name: String,
    /// JSON text, empty when the key is required.
    pub default: String,
    pub description: String,
}

/// The limits of one plugin call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: u64,
    pub timeout: Duration,
}

/// Why a plugin call produced no result. Recorded, never fatal to the run.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum PluginFailure {
    #[error("did not finish within its deadline of {0:?}")]
    Timeout(Duration),
    #[error("exceeded its memory limit: {0} (plugin_memory counts every memory and table of the plugin together)")]
    Memory(Tripped),
    /// More bytes crossed from the plugin to the host in one call than
    /// the plugin's memory limit (wasmtime's hostcall fuel, set to it).
    #[error("exceeded its memory limit: it passed more than {0} bytes to the host in one call (plugin_memory bounds what one call copies too)")]
    Copied(u64),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned an error: {0}")]
    Returned(String),
    #[error("returned an invalid report: {0}")]
    InvalidOutput(String),
    #[error("could not be loaded: {0}")]
    Load(String),
    /// The confined process that runs the plugin's code failed the call:
    /// it ran out of its memory, was killed, or broke the protocol.
    #[error("its worker process {0}")]
    Worker(String),
}

/// What the sandbox needs from whoever answers a plugin's imports (the
/// capabilities): the sandbox links it and gives it each call's deadline,
/// and knows nothing else about it.
pub trait PluginHost: Send + Sized + 'static {
    /// Add the imports of every linked contract, each routed to the host
    /// through [`PluginState::host`].
    fn link(linker: &mut Linker<PluginState<Self>>) -> wasmtime::Result<()>;
    /// Host calls bound their own waits by this instant.
    fn set_deadline(&mut self, deadline: Instant);
}

/// The contract a plugin's report comes in.
pub type PluginReport = bindings::doctor::plugin::types::Report;

pub struct Runtime<H: PluginHost> {
    engine: Engine,
    linker: Linker<PluginState<H>>,
    /// Advances the engine's epoch when a call's deadline passes; its
    /// thread ends with the runtime. Started by [`Runtime::start_alarm`]
    /// (a fork server's runtime has none: threads do not survive `fork`).
    alarm: std::sync::OnceLock<alarm::EpochAlarm>,
    /// The engine can run a built-in's code where it lies in the binary.
    runs_in_place: bool,
}

/// A compiled plugin ready to instantiate.
#[derive(Clone)]
pub struct LoadedComponent {
    pub component: Component,
    /// The WIT contract it was built against.
    pub contract: bindings::Contract,
}

pub struct PluginState<H> {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: InstanceBudget,
    host: H,
    clock: clock::PluginClock,
    /// When this call's time is up: WASI sleeps end by then.
    deadline: Instant,
}

impl<H> PluginState<H> {
    /// The host answering this store's imports (for [`PluginHost::link`]).
    pub fn host(&mut self) -> &mut H {
        &mut self.host
    }
}

impl<H: Send + 'static> WasiView for PluginState<H> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl<H: PluginHost> Runtime<H> {
    pub fn new() -> anyhow::Result<Self> {
        let runtime = Self::without_alarm()?;
        runtime.start_alarm();
        Ok(runtime)
    }

    /// The engine and linker, with no thread started yet: what a fork
    /// server prepares once for every worker it forks.
    pub fn without_alarm() -> anyhow::Result<Self> {
        let mut config = engine_config::config();
        let code_memory = in_place::code_memory();
        let runs_in_place = code_memory.is_some();
        config.with_custom_code_memory(code_memory);
        let engine = Engine::new(&config)
            .map_err(wasm_err)
            .context("creating the wasmtime engine")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(wasm_err)
            .context("linking WASI")?;
        clock::bound_sleeps(&mut linker)
            .map_err(wasm_err)
            .context("bounding WASI sleeps")?;
        H::link(&mut linker)
            .map_err(wasm_err)
            .context("linking the doctor imports")?;
        Ok(Runtime {
            engine,
            linker,
            alarm: std::sync::OnceLock::new(),
            runs_in_place,
        })
    }

    /// Start the alarm's thread (once), while the process may still make
    /// threads: a worker does so before its syscall filter.
    pub fn start_alarm(&self) {
        self.alarm();
    }

    fn alarm(&self) -> &alarm::EpochAlarm {
        self.alarm
            .get_or_init(|| alarm::EpochAlarm::start(&self.engine))
    }

    fn loaded(&self, component: Component) -> Result<LoadedComponent, PluginFailure> {
        let imported = self.imported_packages(&component);
        let contract = bindings::Contract::of(&imported).ok_or_else(|| {
            let known: Vec<&str> = bindings::Contract::ALL
                .iter()
                .map(|c| c.package())
                .collect();
            PluginFailure::Load(format!(
                "built against {}, which this doctor does not link (it links {})",
                imported.join(", "),
                known.join(", ")
            ))
        })?;
        Ok(LoadedComponent {
            component,
            contract,
        })
    }

    /// In a worker: the component whose sealed bytes its parent handed it.
    pub fn load_sealed(&self, data: &[u8]) -> Result<LoadedComponent, PluginFailure> {
        let body = cache::unseal(data)
            .ok_or_else(|| PluginFailure::Load("the compiled code is corrupt".into()))?;
        // SAFETY: the parent compiled these bytes with this engine
        // configuration (the same binary) or verified them as its own cache
        // entry, and passed them by a read-only descriptor only it can write.
        let component = unsafe { Component::deserialize(&self.engine, body) }
            .map_err(|e| PluginFailure::Load(format!("{e:#}")))?;
        self.loaded(component)
    }

    /// In a worker: a built-in's code, precompiled into this binary. An
    /// error says why this engine cannot load it (a CPU feature missing).
    /// The first load of each built-in in a process runs the code where it
    /// lies in the binary (see `in_place`); wasmtime registers code by its
    /// address, so any later one gets a copy.
    pub fn load_precompiled(&self, native: &'static [u8]) -> Result<LoadedComponent, String> {
        let component = match self.first_load_in_place(native) {
            // SAFETY: doctor's own build compiled these bytes with this
            // engine configuration (`engine_config`); they are part of the
            // running binary, read-only, for as long as the process lives;
            // wasmtime checks the target and CPU features.
            true => unsafe {
                Component::deserialize_raw(&self.engine, std::ptr::NonNull::from(native))
            },
            // SAFETY: as above, copied first.
            false => unsafe { Component::deserialize(&self.engine, native) },
        }
        .map_err(|e| format!("{e:#}"))?;
        self.loaded(component).map_err(|e| e.to_string())
    }

    /// Whether `native` may run in place: the engine can, the bytes are
    /// page-aligned, and this process has not loaded them yet.
    fn first_load_in_place(&self, native: &'static [u8]) -> bool {
        static LOADED: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
        let at = native.as_ptr() as usize;
        if !self.runs_in_place || !at.is_multiple_of(in_place::PAGE) {
            return false;
        }
        let Ok(mut loaded) = LOADED.lock() else {
            return false;
        };
        if loaded.contains(&at) {
            return false;
        }
        loaded.push(at);
        true
    }

    /// The WIT packages (with version) whose interfaces the component
    /// imports: the contract it was built against.
    pub fn imported_packages(&self, component: &Component) -> Vec<String> {
        let mut packages: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .filter_map(|(name, _)| {
                let (package, rest) = name.split_once('/')?;
                let version = rest.split_once('@').map(|(_, v)| v);
                Some(match version {
                    Some(v) => format!("{package}@{v}"),
                    None => package.to_string(),
                })
            })
            .filter(|p| p.starts_with("doctor:"))
            .collect();
        packages.sort();
        packages.dedup();
        packages
    }

    pub fn describe(
        &self,
        loaded: &LoadedComponent,
        host: H,
        limits: Limits,
    ) -> Result<PluginInfo, PluginFailure> {
        let (result, _) = self.call(
            &loaded.component,
            host,
            limits,
            |store, component, linker| match loaded.contract {
                bindings::Contract::V0_3 => {
                    bindings::current::Plugin::instantiate(&mut *store, component, linker)?
                        .call_describe(&mut *store)
                }
                bindings::Contract::V0_2 => bindings::convert(
                    bindings::v0_2::Plugin::instantiate(&mut *store, component, linker)?
                        .call_describe(&mut *store)?,
                ),
                bindings::Contract::V0_1 => bindings::convert(
                    bindings::v0_1::Plugin::instantiate(&mut *store, component, linker)?
                        .call_describe(&mut *store)?,
                ),
            },
        )?;
        Ok(convert::plugin_info(result?))
    }

    /// Run `check`; the host comes back with the plugin's logs and state.
    /// The report is as the plugin returned it, not yet bounded: callers go
    /// through `findings::check`, which bounds it into findings.
    pub fn check_unbounded(
        &self,
        loaded: &LoadedComponent,
        host: H,
        config_json: &str,
        limits: Limits,
    ) -> (Result<PluginReport, PluginFailure>, Option<H>) {
        let called = self.call(
            &loaded.component,
            host,
            limits,
            |store, component, linker| match loaded.contract {
                bindings::Contract::V0_3 => {
                    bindings::current::Plugin::instantiate(&mut *store, component, linker)?
                        .call_check(&mut *store, config_json)
                }
                bindings::Contract::V0_2 => old_check(
                    bindings::v0_2::Plugin::instantiate(&mut *store, component, linker)?
                        .call_check(&mut *store, config_json)?,
                ),
                bindings::Contract::V0_1 => old_check(
                    bindings::v0_1::Plugin::instantiate(&mut *store, component, linker)?
                        .call_check(&mut *store, config_json)?,
                ),
            },
        );
        match called {
            Ok((Ok(Ok(report)), host)) => (Ok(report), Some(host)),
            Ok((Ok(Err(error)), host)) => (
                Err(PluginFailure::Returned(convert::error_text(&error))),
                Some(host),
            ),
            Ok((Err(failure), host)) => (Err(failure), Some(host)),
            Err(failure) => (Err(failure), None),
        }
    }

    /// Instantiate in a fresh store and make one call under the limits.
    #[allow(clippy::type_complexity)]
    fn call<R>(
        &self,
        component: &Component,
        host: H,
        limits: Limits,
        f: impl FnOnce(
            &mut Store<PluginState<H>>,
            &Component,
            &Linker<PluginState<H>>,
        ) -> wasmtime::Result<R>,
    ) -> Result<(Result<R, PluginFailure>, H), PluginFailure> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let plugin_clock = clock::PluginClock::new();
        let wasi = WasiCtxBuilder::new()
            .monotonic_clock(plugin_clock)
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let deadline = Instant::now() + limits.timeout;
        let mut host = host;
        host.set_deadline(deadline);
        let state = PluginState {
            wasi,
            table: ResourceTable::new(),
            limits: InstanceBudget::new(limits.memory_bytes),
            host,
            clock: plugin_clock,
            deadline,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // What wasmtime copies out of the plugin in one call (the strings
        // and lists of an import's arguments, or of the report) is bounded
        // by the plugin's memory limit, not by wasmtime's default 128 MiB:
        // aliased strings could otherwise make the host hold many times
        // what the plugin holds.
        store.set_hostcall_fuel(usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX));
        // One advance of the epoch, at the deadline, ends the call.
        store.set_epoch_deadline(1);
        store.epoch_deadline_trap();

        let armed = self.alarm().arm(deadline);
        let outcome = f(&mut store, component, &self.linker);
        drop(armed);
        let state = store.into_data();
        let outcome = outcome.map_err(|e| failure_of(e, limits, state.limits.tripped, &stderr));
        Ok((outcome, state.host))
    }
}

/// One engine configuration for every engine doctor makes: code compiled
/// by one (doctor's) loads in another (a worker's) only if they agree.
fn new_engine() -> anyhow::Result<Engine> {
    Engine::new(&engine_config::config())
        .map_err(wasm_err)
        .context("creating the wasmtime engine")
}

/// Compiles plugins for workers, and caches what it compiled; links and
/// instantiates nothing.
pub struct Compiler {
    engine: Engine,
    cache_dir: Option<PathBuf>,
}

impl Compiler {
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        Ok(Compiler {
            engine: new_engine()?,
            cache_dir,
        })
    }

    /// Compiled code for a worker process (from the cache when it holds a
    /// trusted entry and `use_entry`): a read-only descriptor the worker
    /// loads with [`Runtime::load_sealed`].
    pub fn compiled_file(
        &self,
        bytes: &[u8],
        sha256: &str,
        use_entry: bool,
    ) -> Result<(std::fs::File, CacheOutcome), PluginFailure> {
        cache::compiled_file(
            &self.engine,
            self.cache_dir.as_deref(),
            bytes,
            sha256,
            use_entry,
        )
        .map_err(|e| PluginFailure::Load(format!("{e:#}")))
    }
}

/// wasmtime 48 has its own error type; the host speaks anyhow.
pub(crate) fn wasm_err(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

fn failure_of(
    e: wasmtime::Error,
    limits: Limits,
    tripped: Option<Tripped>,
    stderr: &MemoryOutputPipe,
) -> PluginFailure {
    if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
        return PluginFailure::Timeout(limits.timeout);
    }
    if let Some(tripped) = tripped {
        return PluginFailure::Memory(tripped);
    }
    if format!("{e:#}").contains("fuel allocated for hostcalls has been exhausted") {
        return PluginFailure::Copied(limits.memory_bytes);
    }
    let said = String::from_utf8_lossy(&stderr.contents())
        .trim()
        .to_string();
    // The first line of a trap's error is a backtrace header; the trap kind is what says why.
    let first_line = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        // A host call's own error (a replay miss, say): its message, not the
        // backtrace wasmtime wraps around it.
        None => e
            .root_cause()
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    if said.is_empty() {
        PluginFailure::Trap(first_line)
    } else {
        PluginFailure::Trap(format!(
            "{first_line}; stderr: {}",
            crate::text::one_line(&crate::text::truncate(&said, 2048))
        ))
    }
}

/// An old contract's `check` answer in the current types.
fn old_check<R: serde::Serialize, E: serde::Serialize>(
    answer: Result<R, E>,
) -> wasmtime::Result<Result<PluginReport, bindings::current::doctor::plugin::types::Error>> {
    match answer {
        Ok(report) => bindings::convert_report(report).map(Ok),
        Err(error) => bindings::convert(error).map(Err),
    }
}

#[cfg(test)]
mod tests {
    use super::{PluginHost, PluginState, Runtime};
    use std::time::Instant;
    use wasmtime::component::Linker;

    /// A host with no imports: the ticker does not depend on what is linked.
    struct NoImports;
    impl PluginHost for NoImports {
        fn link(_: &mut Linker<PluginState<Self>>) -> wasmtime::Result<()> {
            Ok(())
        }
        fn set_deadline(&mut self, _: Instant) {}
    }

    fn epoch_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim() == "doctor-epoch")
            .count()
    }

    #[test]
    fn every_built_in_loads_from_its_precompiled_code_on_this_machine() {
        let runtime = Runtime::<NoImports>::new().unwrap();
        let (catalog, _) = crate::catalog::Catalog::discover(&[]);
        assert!(catalog.entries.len() >= 5);
        for entry in &catalog.entries {
            assert!(entry.is_precompiled(), "{}", entry.name);
            let native = crate::catalog::precompiled(&entry.name).unwrap();
            let loaded = runtime
                .load_precompiled(native)
                .unwrap_or_else(|why| panic!("{}: {why}", entry.name));
            assert_eq!(loaded.contract, super::bindings::Contract::V0_3);
            // The hash made at build time is the hash of the embedded bytes.
            let bytes = entry.bytes().unwrap();
            assert_eq!(entry.sha256(&bytes), super::sha256_hex(&bytes));
        }
    }

    #[test]
    fn a_dropped_runtime_stops_its_epoch_ticker() {
        let before = epoch_threads();
        let settle = |want: &dyn Fn(usize) -> bool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while !want(epoch_threads()) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            epoch_threads()
        };
        for _ in 0..3 {
            let runtime = Runtime::<NoImports>::new().unwrap();
            // A new thread names itself, so give it a moment.
            assert!(settle(&|n| n > before) > before, "the ticker runs");
            drop(runtime);
        }
        assert_eq!(
            settle(&|n| n == before),
            before,
            "every ticker ended with its runtime"
        );
    }
}
