//! The engine's epoch as an alarm clock: one thread per runtime sleeps until
//! the running call's deadline and then advances the epoch once, which traps
//! the plugin at its next epoch check. A ticker that woke every few
//! milliseconds cost CPU for the whole life of every worker, most of it
//! spent waiting for doctor's answers; this one wakes when a deadline passes.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;
use wasmtime::Engine;

pub struct EpochAlarm {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The deadline of the call running now, until it ends or fires.
    armed: Option<Instant>,
    stopped: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is two plain fields: a panic elsewhere leaves it usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state());
        self.changed.notify_all();
    }
}

/// While it lives, the alarm is set for one call's deadline.
pub struct Armed<'a> {
    alarm: &'a EpochAlarm,
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.alarm.shared.set(|state| state.armed = None);
    }
}

impl EpochAlarm {
    pub fn start(engine: &Engine) -> EpochAlarm {
        let shared = Arc::new(Shared::default());
        let (engine, ringing) = (engine.clone(), shared.clone());
        std::thread::Builder::new()
            .name("doctor-epoch".into())
            .spawn(move || ring(&engine, &ringing))
            .ok();
        EpochAlarm { shared }
    }

    /// Until the guard drops, the epoch advances once `deadline` passes; a
    /// store whose epoch deadline is one tick away then traps.
    pub fn arm(&self, deadline: Instant) -> Armed<'_> {
        self.shared.set(|state| state.armed = Some(deadline));
        Armed { alarm: self }
    }
}

impl Drop for EpochAlarm {
    fn drop(&mut self) {
        self.shared.set(|state| state.stopped = true);
    }
}

fn ring(engine: &Engine, shared: &Shared) {
    let mut state = shared.state();
    while !state.stopped {
        let now = Instant::now();
        state = match state.armed {
            None => shared
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            Some(deadline) if now >= deadline => {
                engine.increment_epoch();
                state.armed = None;
                state
            }
            Some(deadline) => {
                shared
                    .changed
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::EpochAlarm;
    use std::time::{Duration, Instant};
    use wasmtime::{Engine, Instance, Module, Store, Trap};

    /// A core module exporting `spin` (loops for ever) and `nop`.
    const SPIN_AND_NOP: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
        0x03, 0x03, 0x02, 0x00, 0x00, // two functions of that type
        0x07, 0x0e, 0x02, 0x04, b's', b'p', b'i', b'n', 0x00, 0x00, 0x03, b'n', b'o', b'p', 0x00,
        0x01, // exports
        0x0a, 0x0c, 0x02, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, 0x02, 0x00,
        0x0b, // loop { br 0 }; nothing
    ];

    fn store(engine: &Engine, module: &Module) -> (Store<()>, Instance) {
        let mut store = Store::new(engine, ());
        store.set_epoch_deadline(1);
        store.epoch_deadline_trap();
        let instance = Instance::new(&mut store, module, &[]).unwrap();
        (store, instance)
    }

    #[test]
    fn a_spinning_call_ends_at_its_deadline_and_a_disarmed_alarm_never_rings() {
        let engine = Engine::new(&super::super::engine_config::config()).unwrap();
        let module = Module::new(&engine, SPIN_AND_NOP).unwrap();
        let alarm = EpochAlarm::start(&engine);
        for _ in 0..3 {
            let (mut store, instance) = store(&engine, &module);
            let spin = instance
                .get_typed_func::<(), ()>(&mut store, "spin")
                .unwrap();
            let started = Instant::now();
            let armed = alarm.arm(started + Duration::from_millis(100));
            let error = spin.call(&mut store, ()).unwrap_err();
            drop(armed);
            assert_eq!(error.downcast_ref::<Trap>(), Some(&Trap::Interrupt));
            assert!(
                started.elapsed() >= Duration::from_millis(100),
                "not before"
            );
        }
        // A call that ends before its deadline disarms the alarm: that
        // deadline passing later, while the next store waits to run, does
        // not spend the next store's one-tick deadline.
        let (mut store, instance) = store(&engine, &module);
        drop(alarm.arm(Instant::now() + Duration::from_millis(20)));
        std::thread::sleep(Duration::from_millis(80));
        let nop = instance
            .get_typed_func::<(), ()>(&mut store, "nop")
            .unwrap();
        let _armed = alarm.arm(Instant::now() + Duration::from_secs(60));
        nop.call(&mut store, ()).expect("no stale alarm");
    }
}
