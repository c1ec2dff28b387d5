//! Presence of the users homed on one shard (protocol section 5): each
//! connected statusd client's value, the user's combined presence, and who
//! may see the user (a count of relations per watcher: contact or shared
//! room, section 5.3).
//!
//! Sans-IO: methods return what changed ([`Change`], [`VisibilityChange`])
//! and the caller decides whom to send `OP_PRES` to, using [`Presence::clients`]
//! and [`Presence::watchers`]. Relation counts come from the server's
//! relation model; this module only keeps them.
//!
//! Invariants (checked by [`Presence::invariants`] in tests):
//! - a user's presence is the maximum of its clients' values, 0 with none;
//! - stored values are 7-bit (the MSB is only an input flag);
//! - every stored relation count is above zero;
//! - a user with no client and no watcher is not stored.

use crate::ids::FastMap;
use crate::ids::UserId;
use std::fmt::Debug;
use std::hash::Hash;

// Input MSB: set automatically (idle timer) rather than by the user.
use chatd_proto::statusd::AUTO_FLAG as AUTOMATIC;
/// The presence proper: the low 7 bits.
const VALUE_MASK: u8 = 0x7F;

/// A user's combined presence before and after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub old: u8,
    pub new: u8,
}

impl Change {
    /// Whether watchers (and the user's other clients) must be told.
    pub fn changed(&self) -> bool {
        self.old != self.new
    }
}

/// Whether a relation change flipped "watcher may see user".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisibilityChange {
    /// Still visible, or still invisible.
    None,
    /// Send the user's presence to the watcher's clients if not 0.
    BecameVisible,
    /// Send `OP_PRES user 0` to the watcher's clients if the presence is not 0.
    BecameInvisible,
}

#[derive(Debug)]
struct UserState<H> {
    /// Connected statusd clients and their 7-bit values; a handful per user,
    /// so a vector beats a map.
    clients: Vec<(H, u8)>,
    /// Cached maximum of `clients`' values (0 with none).
    presence: u8,
    /// Watcher -> number of relations that let it see this user (> 0).
    watchers: FastMap<UserId, u32>,
}

impl<H> UserState<H> {
    fn new() -> Self {
        UserState {
            clients: Vec::new(),
            presence: 0,
            watchers: FastMap::default(),
        }
    }

    fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.watchers.is_empty()
    }

    fn recompute(&mut self) {
        self.presence = self.clients.iter().map(|&(_, v)| v).max().unwrap_or(0);
    }
}

/// The presence state of one shard. See the module doc.
#[derive(Debug)]
pub struct Presence<H> {
    users: FastMap<UserId, UserState<H>>,
}

impl<H: Copy + Eq + Hash + Debug> Default for Presence<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Copy + Eq + Hash + Debug> Presence<H> {
    /// No users.
    pub fn new() -> Self {
        Presence {
            users: FastMap::default(),
        }
    }

    /// `OP_HELLO` of a statusd client: the client is added, then its raw
    /// value applied as an `OP_SETPRES` would be. Returns the change of the
    /// user's combined presence.
    pub fn connect(&mut self, user: UserId, conn: H, raw: u8) -> Change {
        let state = self.users.entry(user).or_insert_with(UserState::new);
        if state.clients.iter().all(|&(c, _)| c != conn) {
            state.clients.push((conn, 0));
        } else {
            debug_assert!(false, "client {conn:?} connected twice");
        }
        apply(state, conn, raw)
    }

    /// `OP_SETPRES` from `conn`. A connection that is not a client of `user`
    /// changes nothing (a caller bug, asserted in debug builds).
    pub fn set(&mut self, user: UserId, conn: H, raw: u8) -> Change {
        match self.users.get_mut(&user) {
            Some(state) if state.clients.iter().any(|&(c, _)| c == conn) => apply(state, conn, raw),
            state => {
                debug_assert!(false, "OP_SETPRES from unknown client {conn:?}");
                let p = state.map_or(0, |s| s.presence);
                Change { old: p, new: p }
            }
        }
    }

    /// The client is gone: presence becomes the maximum of the rest, 0 if
    /// none is left.
    pub fn disconnect(&mut self, user: UserId, conn: H) -> Change {
        let Some(state) = self.users.get_mut(&user) else {
            return Change { old: 0, new: 0 };
        };
        let old = state.presence;
        if let Some(pos) = state.clients.iter().position(|&(c, _)| c == conn) {
            state.clients.swap_remove(pos);
            state.recompute();
        }
        let new = state.presence;
        if state.is_empty() {
            self.users.remove(&user);
        }
        Change { old, new }
    }

    /// The user's combined presence (0: offline or unknown).
    pub fn presence(&self, user: UserId) -> u8 {
        self.users.get(&user).map_or(0, |s| s.presence)
    }

    /// The user's connected statusd clients.
    pub fn clients(&self, user: UserId) -> impl Iterator<Item = H> + '_ {
        self.users
            .get(&user)
            .into_iter()
            .flat_map(|s| s.clients.iter().map(|&(c, _)| c))
    }

    /// Adds `delta` to the number of relations that let `watcher` see
    /// `user`, and says whether visibility flipped. The count never goes
    /// below zero (asserted in debug builds, saturated otherwise).
    pub fn visibility(&mut self, user: UserId, watcher: UserId, delta: i32) -> VisibilityChange {
        if delta == 0 {
            return VisibilityChange::None;
        }
        let state = self.users.entry(user).or_insert_with(UserState::new);
        let old = state.watchers.get(&watcher).copied().unwrap_or(0);
        let sum = i64::from(old) + i64::from(delta);
        debug_assert!(sum >= 0, "relation count of ({user}, {watcher}) below zero");
        let new = u32::try_from(sum.max(0)).unwrap_or(u32::MAX);
        if new == 0 {
            state.watchers.remove(&watcher);
        } else {
            state.watchers.insert(watcher, new);
        }
        if state.is_empty() {
            self.users.remove(&user);
        }
        match (old > 0, new > 0) {
            (false, true) => VisibilityChange::BecameVisible,
            (true, false) => VisibilityChange::BecameInvisible,
            _ => VisibilityChange::None,
        }
    }

    /// `user`'s presence as `watcher` may see it: 0 when offline or not
    /// visible to `watcher`. One lookup of `user`, and the watcher check
    /// only when there is something to show (login dumps ask this of
    /// every user a watcher may see, half of them offline in a storm).
    pub fn visible_presence(&self, user: UserId, watcher: UserId) -> u8 {
        match self.users.get(&user) {
            Some(s) if s.presence != 0 && s.watchers.contains_key(&watcher) => s.presence,
            _ => 0,
        }
    }

    /// Every user who may see `user`, each once.
    pub fn watchers(&self, user: UserId) -> impl Iterator<Item = UserId> + '_ {
        self.users
            .get(&user)
            .into_iter()
            .flat_map(|s| s.watchers.keys().copied())
    }

    /// How many users may see `user`.
    pub fn watcher_count(&self, user: UserId) -> usize {
        self.users.get(&user).map_or(0, |s| s.watchers.len())
    }

    /// Users held (with a client or a watcher): shows that idle users are
    /// freed.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Checks every invariant of the module doc. O(everything); for tests.
    pub fn invariants(&self) {
        for (user, s) in &self.users {
            assert!(!s.is_empty(), "user {user} leaked");
            let max = s.clients.iter().map(|&(_, v)| v).max().unwrap_or(0);
            assert_eq!(s.presence, max, "presence of {user}");
            assert!(
                s.clients.iter().all(|&(_, v)| v & AUTOMATIC == 0),
                "stored MSB"
            );
            assert!(
                s.watchers.values().all(|&n| n > 0),
                "zero relation count kept"
            );
            for (i, &(c, _)) in s.clients.iter().enumerate() {
                assert!(
                    s.clients[..i].iter().all(|&(d, _)| d != c),
                    "duplicate client"
                );
            }
        }
    }
}

/// Applies a raw value from `conn` (section 5.2): user-set values go to
/// every client of the user, automatic ones to the sender only.
fn apply<H: Copy + Eq>(state: &mut UserState<H>, conn: H, raw: u8) -> Change {
    let old = state.presence;
    let value = raw & VALUE_MASK;
    if raw & AUTOMATIC == 0 {
        for (_, v) in &mut state.clients {
            *v = value;
        }
    } else if let Some((_, v)) = state.clients.iter_mut().find(|(c, _)| *c == conn) {
        *v = value;
    }
    state.recompute();
    Change {
        old,
        new: state.presence,
    }
}

#[cfg(test)]
mod tests;
