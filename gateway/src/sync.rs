//! The one poison-tolerant lock: every mutex in the gateway guards data that
//! stays valid whatever panicked while holding it (counters, maps of ready
//! values, marks of time), so a panic in one request never turns every later
//! lock into a second panic.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, ignoring poisoning.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
