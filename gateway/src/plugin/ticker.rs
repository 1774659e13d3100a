//! The thread that advances the engine's epoch, the clock of CPU budgets.
//!
//! It ticks only while guests run, or have run within the last second:
//! an idle gateway, or one serving APIs without plugins, does not wake a
//! thousand times a second (under proxy load that thread used 0.3-0.4 us of
//! CPU per request, and preempted the worker). After a second without a
//! guest the thread parks; the next guest wakes it, and a guest only needs
//! ticks once it has run for a full tick anyway.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use wasmtime::Engine;

use crate::sync::lock;

/// How long the ticker goes on after the last guest ran before it parks.
const IDLE_BEFORE_PARKING: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Shared {
    /// Guests running now (instantiating or called).
    running: AtomicUsize,
    /// A guest started since the ticker last looked.
    started: AtomicBool,
    /// The ticker is parked, or about to be: a starting guest must wake it.
    parked: AtomicBool,
    /// The runtime is gone: the thread ends.
    stop: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// Owns the ticker thread; dropping it ends the thread.
#[derive(Debug)]
pub struct Ticker {
    shared: Arc<Shared>,
}

/// Marks a guest as running for as long as it lives.
#[must_use]
pub struct Running<'a>(&'a Shared);

impl Ticker {
    /// Starts a thread advancing `engine`'s epoch every `tick` while guests run.
    pub fn start(engine: &Engine, tick: Duration) -> std::io::Result<Ticker> {
        let shared = Arc::new(Shared::default());
        let state = Arc::clone(&shared);
        let engine = engine.weak();
        let idle_ticks = (IDLE_BEFORE_PARKING.as_nanos() / tick.as_nanos().max(1)) as u32;
        thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
            let mut idle = 0u32;
            while !state.stop.load(Ordering::Relaxed) {
                let Some(engine) = engine.upgrade() else { return };
                engine.increment_epoch();
                drop(engine);
                thread::sleep(tick);
                if state.started.swap(false, Ordering::Relaxed) || state.running.load(Ordering::SeqCst) > 0 {
                    idle = 0;
                } else if idle < idle_ticks {
                    idle += 1;
                } else {
                    state.park();
                    idle = 0;
                }
            }
        })?;
        Ok(Ticker { shared })
    }

    /// Call before a guest runs (instantiation included); keep the value
    /// until it has stopped.
    pub fn running(&self) -> Running<'_> {
        let shared = &*self.shared;
        shared.running.fetch_add(1, Ordering::SeqCst);
        shared.started.store(true, Ordering::Relaxed);
        if shared.parked.load(Ordering::SeqCst) {
            let _lock = lock(&shared.lock);
            shared.wake.notify_one();
        }
        Running(shared)
    }

    /// Whether the thread is parked now (for tests).
    #[cfg(test)]
    fn is_parked(&self) -> bool {
        self.shared.parked.load(Ordering::SeqCst)
    }
}

impl Shared {
    /// Waits until a guest runs or the ticker is stopped.
    ///
    /// `parked` is set before `running` is read, and a starting guest
    /// increments `running` before it reads `parked` (both sequentially
    /// consistent), so either this sees the guest or the guest sees `parked`
    /// and notifies, which it can only do once this waits (it needs the lock).
    fn park(&self) {
        let mut guard = lock(&self.lock);
        self.parked.store(true, Ordering::SeqCst);
        while self.running.load(Ordering::SeqCst) == 0 && !self.stop.load(Ordering::Relaxed) {
            guard = self.wake.wait(guard).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        self.parked.store(false, Ordering::SeqCst);
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _lock = lock(&self.shared.lock);
        self.shared.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Waits up to five seconds for `condition`.
    fn eventually(condition: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if condition() {
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn ticks_while_guests_run_and_parks_when_idle() {
        let engine = Engine::new(wasmtime::Config::new().epoch_interruption(true)).expect("engine");
        let ticker = Ticker::start(&engine, Duration::from_millis(1)).expect("thread");
        assert!(eventually(|| ticker.is_parked()), "never parked while idle");

        // A running guest wakes it, and it keeps ticking while the guest runs.
        let running = ticker.running();
        assert!(eventually(|| !ticker.is_parked()), "a running guest did not wake it");
        thread::sleep(IDLE_BEFORE_PARKING + Duration::from_millis(200));
        assert!(!ticker.is_parked(), "parked while a guest was running");
        drop(running);
        assert!(eventually(|| ticker.is_parked()), "did not park again after the guest");
    }
}
