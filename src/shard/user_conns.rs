//! Connections per user, server-wide, for `--max-connections-per-user`.
//! Like client ids: 64 striped maps, so a login or logout takes one
//! uncontended lock on one stripe, never a server-wide one.

use crate::ids::FastMap;
use std::sync::Mutex;

use crate::ids::UserId;

const STRIPES: usize = 64;

/// Counts of open logged-in connections per user.
pub struct UserConns {
    stripes: [Mutex<FastMap<UserId, u32>>; STRIPES],
}

impl Default for UserConns {
    fn default() -> Self {
        Self {
            stripes: std::array::from_fn(|_| Mutex::new(FastMap::default())),
        }
    }
}

impl UserConns {
    fn stripe(&self, user: UserId) -> std::sync::MutexGuard<'_, FastMap<UserId, u32>> {
        // Poisoning only means another thread panicked holding it; the
        // counts themselves are consistent.
        self.stripes[(user % STRIPES as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more connection of `user` unless it already has `max`.
    pub fn try_acquire(&self, user: UserId, max: u32) -> bool {
        let mut s = self.stripe(user);
        let n = s.entry(user).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// One connection of `user` closed.
    pub fn release(&self, user: UserId) {
        let mut s = self.stripe(user);
        if let Some(n) = s.get_mut(&user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.remove(&user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_per_user_and_frees_on_release() {
        let u = UserConns::default();
        assert!(u.try_acquire(1, 2));
        assert!(u.try_acquire(1, 2));
        assert!(!u.try_acquire(1, 2));
        assert!(u.try_acquire(2, 2));
        u.release(1);
        assert!(u.try_acquire(1, 2));
    }
}
