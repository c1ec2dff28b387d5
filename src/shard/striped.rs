//! State shared by all shards but touched only at login and logout (ids
//! in use, connections per user): 64 independently locked stripes chosen
//! by key, so such a change takes one uncontended lock, never a
//! server-wide one.

use std::sync::{Mutex, MutexGuard};

/// Stripes: enough that two shards rarely meet on one.
const STRIPES: usize = 64;

/// `T`, 64 times, each behind its own lock.
pub struct Striped<T> {
    stripes: [Mutex<T>; STRIPES],
}

impl<T: Default> Default for Striped<T> {
    fn default() -> Self {
        Self {
            stripes: std::array::from_fn(|_| Mutex::new(T::default())),
        }
    }
}

impl<T> Striped<T> {
    /// Locks the stripe that `key` belongs to.
    pub fn lock(&self, key: u64) -> MutexGuard<'_, T> {
        // A poisoned stripe only means another thread panicked while
        // holding it; the data it guards is still consistent.
        self.stripes[(key % STRIPES as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}
