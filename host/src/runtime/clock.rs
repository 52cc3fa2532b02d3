//! Sleeps end at the plugin's deadline. The epoch deadline only interrupts
//! wasm code; a plugin that asks WASI to sleep (`monotonic-clock.subscribe-*`
//! then `poll`) waits in host code, where no epoch reaches it — a sleep of
//! `u64::MAX` nanoseconds would hang doctor forever. So the two functions
//! that make clock pollables are replaced: every wait ends by the plugin's
//! deadline, the guest resumes, and the epoch deadline traps it. No other
//! pollable can block: the WASI context has no sockets, no files, and
//! stdin is empty.

use super::PluginState;
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::{subscribe, DynPollable, Pollable};

/// The interface wasmtime-wasi links (its `wit/deps/clocks.wit`).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";
/// Slack past the deadline, so the epoch (10 ms ticks) has passed when the guest resumes.
const SLACK: Duration = Duration::from_millis(20);

/// The plugin's monotonic clock: nanoseconds since its store was made, so
/// `subscribe-instant` can turn an instant back into a wait.
#[derive(Clone, Copy)]
pub struct PluginClock {
    origin: Instant,
}

impl PluginClock {
    pub fn new() -> Self {
        PluginClock {
            origin: Instant::now(),
        }
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl wasmtime_wasi::HostMonotonicClock for PluginClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.now_nanos()
    }
}

/// A wait that ends at a fixed instant.
struct Sleep(tokio::time::Instant);

#[wasmtime_wasi::async_trait]
impl Pollable for Sleep {
    async fn ready(&mut self) {
        tokio::time::sleep_until(self.0).await;
    }
}

/// Replace `subscribe-duration` and `subscribe-instant` of the WASI clock.
pub fn bound_sleeps<H: Send + 'static>(
    linker: &mut Linker<PluginState<H>>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-duration", |mut store, (nanos,): (u64,)| {
        let pollable = sleep(store.data_mut(), Duration::from_nanos(nanos))?;
        Ok((pollable,))
    })?;
    clock.func_wrap("subscribe-instant", |mut store, (when,): (u64,)| {
        let state = store.data_mut();
        let wait = Duration::from_nanos(when.saturating_sub(state.clock.now_nanos()));
        let pollable = sleep(state, wait)?;
        Ok((pollable,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

fn sleep<H>(
    state: &mut PluginState<H>,
    asked: Duration,
) -> wasmtime::Result<Resource<DynPollable>> {
    let left = state.deadline.saturating_duration_since(Instant::now()) + SLACK;
    let until = tokio::time::Instant::now() + asked.min(left);
    let sleep = state.table.push(Sleep(until))?;
    subscribe(&mut state.table, sleep)
}
