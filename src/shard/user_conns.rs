//! Logged-in connections per user and service, server-wide: the count
//! `--max-connections-per-user` limits and `GET /v1/users/{id}` reports.
//! Like client ids: 64 striped maps, so a login or logout takes one
//! uncontended lock on one stripe, never a server-wide one.

use crate::ids::FastMap;
use std::sync::Mutex;

use crate::ids::{Service, UserId};

const STRIPES: usize = 64;

/// Open logged-in connections of a user, by service index.
type Counts = [u32; 2];

/// Counts of open logged-in connections per user.
pub struct UserConns {
    stripes: [Mutex<FastMap<UserId, Counts>>; STRIPES],
}

impl Default for UserConns {
    fn default() -> Self {
        Self {
            stripes: std::array::from_fn(|_| Mutex::new(FastMap::default())),
        }
    }
}

impl UserConns {
    fn stripe(&self, user: UserId) -> std::sync::MutexGuard<'_, FastMap<UserId, Counts>> {
        // Poisoning only means another thread panicked holding it; the
        // counts themselves are consistent.
        self.stripes[(user % STRIPES as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more `service` connection of `user` unless it already
    /// has `max` connections, both services together.
    pub fn try_acquire(&self, user: UserId, service: Service, max: u32) -> bool {
        let mut s = self.stripe(user);
        let n = s.entry(user).or_insert([0; 2]);
        if n[0] + n[1] >= max {
            return false;
        }
        n[service.index()] += 1;
        true
    }

    /// One `service` connection of `user` closed.
    pub fn release(&self, user: UserId, service: Service) {
        let mut s = self.stripe(user);
        if let Some(n) = s.get_mut(&user) {
            n[service.index()] = n[service.index()].saturating_sub(1);
            if *n == [0; 2] {
                s.remove(&user);
            }
        }
    }

    /// Logged-in connections of `user` on `service`.
    pub fn count(&self, user: UserId, service: Service) -> u32 {
        self.stripe(user)
            .get(&user)
            .map_or(0, |n| n[service.index()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_per_user_and_frees_on_release() {
        let u = UserConns::default();
        assert!(u.try_acquire(1, Service::Chatd, 2));
        assert!(u.try_acquire(1, Service::Statusd, 2));
        assert!(!u.try_acquire(1, Service::Chatd, 2));
        assert!(u.try_acquire(2, Service::Chatd, 2));
        assert_eq!(u.count(1, Service::Chatd), 1);
        u.release(1, Service::Chatd);
        assert_eq!(u.count(1, Service::Chatd), 0);
        assert_eq!(u.count(1, Service::Statusd), 1);
        assert!(u.try_acquire(1, Service::Chatd, 2));
    }
}
