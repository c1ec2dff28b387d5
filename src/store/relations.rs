//! The in-memory relation model: room members and contacts, indexed both
//! ways, and the live effects ([`RelationEffect`]) of each change.
//!
//! Owns the visibility arithmetic of protocol section 5.3: the number of
//! relations between two distinct users is 1 if they are contacts plus the
//! number of rooms they share, and B is visible to A while it is above 0.
//! Each mutation returns the net change of that count for every pair it
//! touched, in both directions, so a shard can keep per-pair counters
//! without ever reading this model. It does no I/O: the admin API writes
//! the store first and only then mutates this model.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::ids::{ChatId, UserId};
use crate::store::effect::RelationEffect;

/// Room membership and contacts, indexed for the admin API and for
/// computing effects in time proportional to the rooms touched.
///
/// Invariants: `rooms` and `user_rooms` are the same relation seen from each
/// side; `contacts` is symmetric and never holds `a -> a`; no set in any map
/// is empty (an entry is removed with its last element).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relations {
    /// Room -> its members, ascending (the admin API lists them so).
    rooms: HashMap<ChatId, BTreeSet<UserId>>,
    /// User -> the rooms it is a member of.
    user_rooms: HashMap<UserId, BTreeSet<ChatId>>,
    /// User -> its contacts (stored in both directions).
    contacts: HashMap<UserId, BTreeSet<UserId>>,
}

/// Net visibility deltas of one change, per unordered pair `(low, high)`.
/// Ordered so that the emitted effects are deterministic.
#[derive(Default)]
struct PairDeltas(BTreeMap<(UserId, UserId), i32>);

impl PairDeltas {
    fn add(&mut self, a: UserId, b: UserId, delta: i32) {
        debug_assert_ne!(a, b, "a user is never its own watcher");
        let key = if a < b { (a, b) } else { (b, a) };
        *self.0.entry(key).or_insert(0) += delta;
    }

    /// Appends a `Visibility` effect per direction for every pair whose net
    /// delta is not zero.
    fn emit(self, out: &mut Vec<RelationEffect>) {
        for ((a, b), delta) in self.0 {
            if delta != 0 {
                out.push(RelationEffect::Visibility {
                    user: a,
                    watcher: b,
                    delta,
                });
                out.push(RelationEffect::Visibility {
                    user: b,
                    watcher: a,
                    delta,
                });
            }
        }
    }
}

impl Relations {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// The members of `chat`, ascending; `None` when it has none.
    pub fn members(&self, chat: ChatId) -> Option<&BTreeSet<UserId>> {
        self.rooms.get(&chat)
    }

    /// The rooms `user` is a member of; `None` when none.
    pub fn rooms_of(&self, user: UserId) -> Option<&BTreeSet<ChatId>> {
        self.user_rooms.get(&user)
    }

    /// The contacts of `user`; `None` when none.
    pub fn contacts_of(&self, user: UserId) -> Option<&BTreeSet<UserId>> {
        self.contacts.get(&user)
    }

    /// The number of relations between `a` and `b` (contact: 1, each shared
    /// room: 1); 0 for `a == b`. `b` may see `a` while this is above 0.
    pub fn relation_count(&self, a: UserId, b: UserId) -> u32 {
        if a == b {
            return 0;
        }
        let contact = self.contacts.get(&a).is_some_and(|c| c.contains(&b));
        let shared = match (self.user_rooms.get(&a), self.user_rooms.get(&b)) {
            (Some(ra), Some(rb)) => ra.intersection(rb).count(),
            _ => 0,
        };
        u32::from(contact) + shared as u32
    }

    /// Makes `user` a member of `chat`. Idempotent: no effects when it
    /// already is. Costs O(members of `chat`).
    pub fn add_member(&mut self, chat: ChatId, user: UserId) -> Vec<RelationEffect> {
        let members = self.rooms.entry(chat).or_default();
        if !members.insert(user) {
            return Vec::new();
        }
        let mut deltas = PairDeltas::default();
        for &m in members.iter().filter(|&&m| m != user) {
            deltas.add(user, m, 1);
        }
        self.user_rooms.entry(user).or_default().insert(chat);
        let mut out = vec![RelationEffect::MemberAdded { chat, user }];
        deltas.emit(&mut out);
        out
    }

    /// Removes `user` from `chat`. Idempotent: no effects when it is not a
    /// member. Costs O(members of `chat`).
    pub fn remove_member(&mut self, chat: ChatId, user: UserId) -> Vec<RelationEffect> {
        let Some(members) = self.rooms.get_mut(&chat) else {
            return Vec::new();
        };
        if !members.remove(&user) {
            return Vec::new();
        }
        let mut deltas = PairDeltas::default();
        for &m in members.iter() {
            deltas.add(user, m, -1);
        }
        if members.is_empty() {
            self.rooms.remove(&chat);
        }
        remove_from(&mut self.user_rooms, user, chat);
        let mut out = vec![RelationEffect::MemberRemoved { chat, user }];
        deltas.emit(&mut out);
        out
    }

    /// Replaces the member list of `chat` with `members` (duplicates are
    /// ignored). Only the difference has effects: members kept on both
    /// lists cost nothing, and no pair gets +1 then -1.
    pub fn set_members(&mut self, chat: ChatId, members: &[UserId]) -> Vec<RelationEffect> {
        let new: BTreeSet<UserId> = members.iter().copied().collect();
        let old = self.rooms.remove(&chat).unwrap_or_default();
        let added: Vec<UserId> = new.difference(&old).copied().collect();
        let removed: Vec<UserId> = old.difference(&new).copied().collect();

        let mut out = Vec::with_capacity(added.len() + removed.len());
        let mut deltas = PairDeltas::default();
        // A pair's count through this room goes from [both in old] to
        // [both in new]. Only pairs with at least one changed user can
        // differ; a pair of two changed users is visited from both sides,
        // so it is counted from its lower id only.
        let changed = |u: &UserId| old.contains(u) != new.contains(u);
        for &x in added.iter().chain(&removed) {
            for &y in old.union(&new) {
                if y == x || (changed(&y) && y < x) {
                    continue;
                }
                let now = new.contains(&x) && new.contains(&y);
                let before = old.contains(&x) && old.contains(&y);
                deltas.add(x, y, i32::from(now) - i32::from(before));
            }
        }
        for &user in &added {
            self.user_rooms.entry(user).or_default().insert(chat);
            out.push(RelationEffect::MemberAdded { chat, user });
        }
        for &user in &removed {
            remove_from(&mut self.user_rooms, user, chat);
            out.push(RelationEffect::MemberRemoved { chat, user });
        }
        if !new.is_empty() {
            self.rooms.insert(chat, new);
        }
        deltas.emit(&mut out);
        out
    }

    /// Removes every member of `chat`. No effects when it has none.
    pub fn delete_room(&mut self, chat: ChatId) -> Vec<RelationEffect> {
        self.set_members(chat, &[])
    }

    /// Makes `a` and `b` contacts of each other. Idempotent. `a == b` is
    /// refused earlier (admin: 400) and is a no-op here.
    pub fn add_contact(&mut self, a: UserId, b: UserId) -> Vec<RelationEffect> {
        if a == b || !self.contacts.entry(a).or_default().insert(b) {
            return Vec::new();
        }
        self.contacts.entry(b).or_default().insert(a);
        let mut out = Vec::with_capacity(2);
        let mut deltas = PairDeltas::default();
        deltas.add(a, b, 1);
        deltas.emit(&mut out);
        out
    }

    /// Ends the contact between `a` and `b`. Idempotent.
    pub fn remove_contact(&mut self, a: UserId, b: UserId) -> Vec<RelationEffect> {
        if a == b || !remove_from(&mut self.contacts, a, b) {
            return Vec::new();
        }
        remove_from(&mut self.contacts, b, a);
        let mut out = Vec::with_capacity(2);
        let mut deltas = PairDeltas::default();
        deltas.add(a, b, -1);
        deltas.emit(&mut out);
        out
    }

    /// Every effect needed to bring empty shards to the current state at
    /// start-up: `MemberAdded` for every membership, then `Visibility +k`
    /// in both directions for every pair with `k > 0` relations.
    pub fn initial_effects(&self) -> Vec<RelationEffect> {
        let mut out = Vec::new();
        let mut deltas = PairDeltas::default();
        let mut chats: Vec<&ChatId> = self.rooms.keys().collect();
        chats.sort_unstable();
        for chat in chats {
            let members = &self.rooms[chat];
            for (i, &u) in members.iter().enumerate() {
                out.push(RelationEffect::MemberAdded {
                    chat: *chat,
                    user: u,
                });
                for &v in members.iter().skip(i + 1) {
                    deltas.add(u, v, 1);
                }
            }
        }
        for (&a, contacts) in &self.contacts {
            // Each contact is stored both ways; count it once.
            for &b in contacts.range(a + 1..) {
                deltas.add(a, b, 1);
            }
        }
        deltas.emit(&mut out);
        out
    }

    /// Inserts a stored membership without computing effects (loading).
    pub(super) fn load_member(&mut self, chat: ChatId, user: UserId) {
        self.rooms.entry(chat).or_default().insert(user);
        self.user_rooms.entry(user).or_default().insert(chat);
    }

    /// Inserts one direction of a stored contact without computing effects
    /// (loading). `a == b` rows are skipped so the invariant holds even
    /// for a store written by something else.
    pub(super) fn load_contact(&mut self, a: UserId, b: UserId) {
        if a != b {
            self.contacts.entry(a).or_default().insert(b);
            self.contacts.entry(b).or_default().insert(a);
        }
    }
}

/// Removes `value` from `map[key]`, dropping the entry when it empties.
/// Returns whether it was there.
fn remove_from(map: &mut HashMap<u64, BTreeSet<u64>>, key: u64, value: u64) -> bool {
    let Some(set) = map.get_mut(&key) else {
        return false;
    };
    let was = set.remove(&value);
    if set.is_empty() {
        map.remove(&key);
    }
    was
}

#[cfg(test)]
#[path = "relations_tests.rs"]
mod tests;
