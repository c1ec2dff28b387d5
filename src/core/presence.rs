//! Presence of the users homed on one shard (protocol section 5): each
//! connected statusd client's value, the user's combined presence, and the
//! state of the updates that tell its watchers about it.
//!
//! Who may see a user is not kept here: it is computed from the relations
//! when needed ([`crate::core::relations`]). An update goes out in two
//! steps: the home gathers the active watchers, then sends them every
//! value the user took since the last update, in order
//! ([`Presence::queue_update`], [`Presence::finish_publish`]). At most one
//! gather per user is in flight, so two updates of one user never
//! overtake each other; a change during a gather is sent with it and marks
//! the user dirty, so that another gather follows and watchers it did not
//! reach get the value as it is then (see `shard::statusd::publish`).
//!
//! A user is *active* (kept here) from its first client until it has none
//! and its last update is out ([`Presence::release_if_quiet`]); its home
//! tells every shard when that starts and ends.
//!
//! In a cluster (docs/cluster.md), each other node's value for a user
//! (the maximum of that node's clients) is held next to the local
//! clients' values and counts in the maximum the same way
//! ([`Presence::set_remote`]); a user with such a value is active here
//! too, so this node's watchers hear about it.
//!
//! Sans-IO: methods return what changed ([`Change`]) and the caller decides
//! whom to send `OP_PRES` to, using [`Presence::clients`].
//!
//! Invariants (checked by [`Presence::invariants`] in tests):
//! - a user's presence is the maximum of its clients' values, 0 with none;
//! - stored values are 7-bit (the MSB is only an input flag);
//! - a stored user has a client, a gather in flight, or watchers that were
//!   last told a value other than 0; `dirty` only while gathering.

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

#[derive(Debug)]
struct UserState<H> {
    /// Connected statusd clients and their 7-bit values; a handful per user,
    /// so a vector beats a map.
    clients: Vec<(H, u8)>,
    /// Cluster mode: other nodes' values (non-zero, one per node).
    remote: Vec<(u16, u8)>,
    /// Cached maximum of `clients`' and `remote`'s values (0 with none).
    presence: u8,
    /// A gather of this user's watchers is in flight.
    publishing: bool,
    /// The presence changed since that gather started.
    dirty: bool,
    /// The values taken since the last update was sent, in order.
    queue: Vec<u8>,
    /// The value the last finished update left watchers with.
    announced: u8,
}

impl<H> UserState<H> {
    fn new() -> Self {
        UserState {
            clients: Vec::new(),
            remote: Vec::new(),
            presence: 0,
            publishing: false,
            dirty: false,
            queue: Vec::new(),
            announced: 0,
        }
    }

    /// Nothing left to tell anyone: no client, no update in flight, and
    /// the last update sent 0.
    fn is_quiet(&self) -> bool {
        self.clients.is_empty() && self.remote.is_empty() && !self.publishing && self.announced == 0
    }

    fn recompute(&mut self) {
        let local = self.local();
        let remote = self.remote.iter().map(|&(_, v)| v).max().unwrap_or(0);
        self.presence = local.max(remote);
    }

    /// The maximum of this node's clients' values.
    fn local(&self) -> u8 {
        self.clients.iter().map(|&(_, v)| v).max().unwrap_or(0)
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
    /// none is left. The user stays until [`Presence::release_if_quiet`].
    pub fn disconnect(&mut self, user: UserId, conn: H) -> Change {
        let Some(state) = self.users.get_mut(&user) else {
            return Change { old: 0, new: 0 };
        };
        let old = state.presence;
        if let Some(pos) = state.clients.iter().position(|&(c, _)| c == conn) {
            state.clients.swap_remove(pos);
            state.recompute();
        }
        Change {
            old,
            new: state.presence,
        }
    }

    /// This node's part of `user`'s presence: the maximum of its clients
    /// here (what this node tells the others, cluster mode).
    pub fn local_presence(&self, user: UserId) -> u8 {
        self.users.get(&user).map_or(0, UserState::local)
    }

    /// Cluster mode: node `node`'s value for `user` is now `value` (0: it
    /// has no client of `user`); with `user_set`, the value was set by the
    /// user there (5.2): every client here and every other node's value
    /// takes it too. The user is added if new (the caller tells the
    /// shards it is active).
    pub fn set_remote(&mut self, user: UserId, node: u16, value: u8, user_set: bool) -> Change {
        let value = value & VALUE_MASK;
        if value == 0 && !user_set && !self.users.contains_key(&user) {
            return Change { old: 0, new: 0 };
        }
        let state = self.users.entry(user).or_insert_with(UserState::new);
        let old = state.presence;
        if user_set {
            for (_, v) in &mut state.clients {
                *v = value;
            }
            for (_, v) in &mut state.remote {
                *v = value;
            }
        }
        state.remote.retain(|&(n, _)| n != node);
        if value != 0 {
            state.remote.push((node, value));
        }
        state.remote.retain(|&(_, v)| v != 0);
        state.recompute();
        Change {
            old,
            new: state.presence,
        }
    }

    /// Cluster mode: node `node` is gone; its values are dropped. Returns
    /// the users whose presence that changed, with the change.
    pub fn drop_node(&mut self, node: u16) -> Vec<(UserId, Change)> {
        let mut out = Vec::new();
        for (&user, state) in &mut self.users {
            if state.remote.iter().any(|&(n, _)| n == node) {
                let old = state.presence;
                state.remote.retain(|&(n, _)| n != node);
                state.recompute();
                out.push((
                    user,
                    Change {
                        old,
                        new: state.presence,
                    },
                ));
            }
        }
        out
    }

    /// Users with clients on this node and their local values (what this
    /// node republishes to the others, cluster mode).
    pub fn local_values(&self) -> impl Iterator<Item = (UserId, u8)> + '_ {
        self.users
            .iter()
            .filter(|(_, s)| !s.clients.is_empty())
            .map(|(&u, s)| (u, s.local()))
    }

    /// Whether `user` is active (see the module doc).
    pub fn is_active(&self, user: UserId) -> bool {
        self.users.contains_key(&user)
    }

    /// Forgets `user` if nothing is left to tell anyone about it; true when
    /// it was forgotten (it stops being active).
    pub fn release_if_quiet(&mut self, user: UserId) -> bool {
        if self.users.get(&user).is_some_and(UserState::is_quiet) {
            self.users.remove(&user);
            true
        } else {
            false
        }
    }

    /// `user`'s presence changed: its new value is queued for its
    /// watchers. True when the caller must start a gather of them now;
    /// false when one is in flight (the user is marked dirty, and
    /// [`Presence::finish_publish`] asks for another).
    pub fn queue_update(&mut self, user: UserId) -> bool {
        let Some(state) = self.users.get_mut(&user) else {
            debug_assert!(false, "update of inactive user {user}");
            return false;
        };
        state.queue.push(state.presence);
        if state.publishing {
            state.dirty = true;
            false
        } else {
            state.publishing = true;
            true
        }
    }

    /// The gather of `user`'s watchers is complete: returns the values to
    /// send them, in order (every change since the last update; the last
    /// one is the current presence; none when nothing changed since), and
    /// whether another gather must follow (a change came after this one
    /// started).
    pub fn finish_publish(&mut self, user: UserId) -> (Vec<u8>, bool) {
        let Some(state) = self.users.get_mut(&user) else {
            debug_assert!(false, "publish of unknown user {user}");
            return (Vec::new(), false);
        };
        debug_assert!(state.publishing, "no publish of {user} in flight");
        state.announced = state.presence;
        let again = std::mem::take(&mut state.dirty);
        state.publishing = again;
        (std::mem::take(&mut state.queue), again)
    }

    /// Whether a watcher that stops seeing `user` may be showing a value
    /// other than 0 for it, and so must be sent `OP_PRES user 0`.
    pub fn may_show_nonzero(&self, user: UserId) -> bool {
        self.users
            .get(&user)
            .is_some_and(|s| s.presence != 0 || s.publishing || s.announced != 0)
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

    /// Users held (active): shows that idle users are freed.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Checks every invariant of the module doc. O(everything); for tests.
    pub fn invariants(&self) {
        for (user, s) in &self.users {
            assert!(!s.is_quiet(), "user {user} leaked");
            assert!(!s.dirty || s.publishing, "dirty without a gather");
            assert!(
                s.queue.is_empty() || s.publishing,
                "queued without a gather"
            );
            if let Some(&last) = s.queue.last() {
                assert_eq!(last, s.presence, "the last queued value is the presence");
            }
            let max = s
                .clients
                .iter()
                .map(|&(_, v)| v)
                .chain(s.remote.iter().map(|&(_, v)| v))
                .max()
                .unwrap_or(0);
            assert_eq!(s.presence, max, "presence of {user}");
            assert!(
                s.clients.iter().all(|&(_, v)| v & AUTOMATIC == 0),
                "stored MSB"
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
        // Cluster mode: the user's clients on every node take it (each
        // node applies the same set when it hears of it).
        for (_, v) in &mut state.remote {
            *v = value;
        }
        state.remote.retain(|&(_, v)| v != 0);
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
