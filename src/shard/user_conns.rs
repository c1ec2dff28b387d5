//! Logged-in connections per user and service, server-wide: the count
//! `--max-connections-per-user` limits, and `chatd_clients` of
//! `GET /v1/users/{id}` (statusd clients are counted by presence).
//! Striped like client ids (see [`super::striped`]).

use super::striped::Striped;
use crate::ids::{FastMap, Service, UserId};

/// Open logged-in connections of a user, by service index.
type Counts = [u32; 2];

/// Counts of open logged-in connections per user.
#[derive(Default)]
pub struct UserConns {
    counts: Striped<FastMap<UserId, Counts>>,
}

impl UserConns {
    /// Counts one more `service` connection of `user` unless it already
    /// has `max` connections, both services together.
    pub fn try_acquire(&self, user: UserId, service: Service, max: u32) -> bool {
        let mut s = self.counts.lock(user);
        let n = s.entry(user).or_insert([0; 2]);
        if n[0] + n[1] >= max {
            return false;
        }
        n[service.index()] += 1;
        true
    }

    /// One `service` connection of `user` closed.
    pub fn release(&self, user: UserId, service: Service) {
        let mut s = self.counts.lock(user);
        if let Some(n) = s.get_mut(&user) {
            n[service.index()] = n[service.index()].saturating_sub(1);
            if *n == [0; 2] {
                s.remove(&user);
            }
        }
    }

    /// Logged-in connections of `user` on `service`.
    pub fn count(&self, user: UserId, service: Service) -> u32 {
        self.counts
            .lock(user)
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
