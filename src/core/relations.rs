//! The part of the relation graph one shard holds, and the active users it
//! has been told about: everything presence fan-out, login dumps and
//! relation changes read on this shard (docs/architecture.md, "Presence").
//!
//! - Rooms homed here: each membership as `(user, room)` in a [`PairSet`]
//!   (so a user's rooms here are one range), and per room the members who
//!   are active.
//! - Users homed here: each contact as `(user, contact)`; the other
//!   direction is kept on the contact's home.
//! - Every active user of the server, as last told. A user is *active*
//!   from its first statusd client until it has none and its last
//!   presence update has gone out; its home tells every shard when that
//!   starts and ends.
//! - The epoch: the number of the last relation change applied here, and
//!   that change's part that concerns active users, which the flip
//!   computation of the change reads ([`ShardRelations::flip_sets`]).
//!
//! Memory is 16 bytes per membership (once, on the room's home) and 32 per
//! contact (one direction on each user's home) when built in bulk, plus
//! O(active memberships); nothing grows with the square of a room.
//!
//! Sans-IO: the shard feeds it changes and asks it who to notify.
//!
//! Invariants (checked by [`ShardRelations::invariants`] in tests): the
//! active members of a room are exactly its members that are active, and
//! no room is listed with none.

use crate::core::pairset::{Pair, PairSet};
use crate::ids::{ChatId, FastMap, FastSet, UserId};

/// One shard's part of a relation change: the net difference, never a
/// pair added and removed, never one already as asked. Every list is
/// sorted ascending.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardDelta {
    /// `(user, room)` for rooms homed on the shard.
    pub members_added: Vec<Pair>,
    /// `(user, room)` for rooms homed on the shard.
    pub members_removed: Vec<Pair>,
    /// `(user, contact)` for users homed on the shard. Each contact pair
    /// appears once in each direction, on each user's home.
    pub contacts_added: Vec<Pair>,
    /// `(user, contact)`, as `contacts_added`.
    pub contacts_removed: Vec<Pair>,
}

impl ShardDelta {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.members_added.is_empty()
            && self.members_removed.is_empty()
            && self.contacts_added.is_empty()
            && self.contacts_removed.is_empty()
    }

    /// Sorts every list ascending, as the type promises.
    pub fn sort(&mut self) {
        self.members_added.sort_unstable();
        self.members_removed.sort_unstable();
        self.contacts_added.sort_unstable();
        self.contacts_removed.sort_unstable();
    }
}

/// One user's view of a relation change on one shard, to be merged over
/// all shards ([`flips`]). Users may repeat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlipSets {
    /// Active users visible through relations the change left alone.
    pub kept: Vec<UserId>,
    /// Active users visible through the changed relations before it.
    pub before: Vec<UserId>,
    /// Active users visible through the changed relations after it.
    pub after: Vec<UserId>,
}

/// Active members a change added to and removed from one room.
#[derive(Debug, Default)]
struct RoomRound {
    added: Vec<UserId>,
    removed: Vec<UserId>,
}

/// The last change's part that concerns active users.
#[derive(Debug, Default)]
struct Round {
    /// `(user, room, added)` of active users, sorted.
    members: Vec<(UserId, ChatId, bool)>,
    /// Rooms with active members added or removed (lists sorted).
    rooms: FastMap<ChatId, RoomRound>,
    /// `(user, contact, added)` of active users homed here, sorted.
    contacts: Vec<(UserId, UserId, bool)>,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct ShardRelations {
    /// `(user, room)`: memberships of rooms homed here.
    memberships: PairSet,
    /// `(user, contact)`: contacts of users homed here.
    contacts: PairSet,
    /// Active users, server-wide, as told.
    active: FastSet<UserId>,
    /// Room homed here -> its active members (rooms with none absent).
    active_members: FastMap<ChatId, FastSet<UserId>>,
    /// Number of the last change applied.
    epoch: u64,
    /// Its part for active users.
    round: Round,
}

impl ShardRelations {
    /// No relations, nobody active, epoch 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The relations loaded at start-up (nobody is active yet).
    pub fn install(&mut self, memberships: PairSet, contacts: PairSet) {
        debug_assert!(
            self.active.is_empty(),
            "relations installed while users are active"
        );
        self.memberships = memberships;
        self.contacts = contacts;
    }

    /// Number of the last relation change applied here.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether `user` is a member of `chat` (a room homed here).
    pub fn is_member(&self, chat: ChatId, user: UserId) -> bool {
        self.memberships.contains((user, chat))
    }

    /// The rooms homed here that `user` is a member of, ascending.
    pub fn rooms_of(&self, user: UserId) -> impl Iterator<Item = ChatId> + '_ {
        self.memberships.seconds(user)
    }

    /// The contacts of `user` (homed here), ascending.
    pub fn contacts_of(&self, user: UserId) -> impl Iterator<Item = UserId> + '_ {
        self.contacts.seconds(user)
    }

    /// Memberships held (rooms homed here).
    pub fn membership_count(&self) -> usize {
        self.memberships.len()
    }

    /// Contact directions held (users homed here).
    pub fn contact_count(&self) -> usize {
        self.contacts.len()
    }

    /// Heap bytes of the two relation indexes.
    pub fn heap_bytes(&self) -> usize {
        self.memberships.heap_bytes() + self.contacts.heap_bytes()
    }

    /// `user` became active (`true`) or stopped being active. Costs
    /// O(its rooms homed here).
    pub fn set_active(&mut self, user: UserId, active: bool) {
        let changed = if active {
            self.active.insert(user)
        } else {
            self.active.remove(&user)
        };
        if !changed {
            return;
        }
        for chat in self.memberships.seconds(user) {
            if active {
                self.active_members.entry(chat).or_default().insert(user);
            } else {
                remove_active_member(&mut self.active_members, chat, user);
            }
        }
    }

    /// Applies change number `epoch`. Returns the active users whose
    /// relations it changed here (sorted, each once): their homes compute
    /// what the change shows or hides ([`ShardRelations::flip_sets`]).
    pub fn apply(&mut self, epoch: u64, delta: &ShardDelta) -> Vec<UserId> {
        debug_assert!(epoch > self.epoch, "change {epoch} after {}", self.epoch);
        self.epoch = epoch;
        self.round = Round::default();
        let mut touched = Vec::new();
        self.memberships
            .apply_sorted(&delta.members_added, &delta.members_removed);
        for (list, added) in [
            (&delta.members_added, true),
            (&delta.members_removed, false),
        ] {
            for &(user, chat) in list.iter().filter(|(u, _)| self.active.contains(u)) {
                let room = self.round.rooms.entry(chat).or_default();
                if added {
                    self.active_members.entry(chat).or_default().insert(user);
                    room.added.push(user);
                } else {
                    remove_active_member(&mut self.active_members, chat, user);
                    room.removed.push(user);
                }
                self.round.members.push((user, chat, added));
                touched.push(user);
            }
        }
        self.contacts
            .apply_sorted(&delta.contacts_added, &delta.contacts_removed);
        for (list, added) in [
            (&delta.contacts_added, true),
            (&delta.contacts_removed, false),
        ] {
            for &(user, other) in list.iter().filter(|(u, _)| self.active.contains(u)) {
                self.round.contacts.push((user, other, added));
                touched.push(user);
            }
        }
        self.round.members.sort_unstable();
        self.round.contacts.sort_unstable();
        for room in self.round.rooms.values_mut() {
            room.added.sort_unstable();
            room.removed.sort_unstable();
        }
        touched.sort_unstable();
        touched.dedup();
        touched
    }

    /// Pushes the active members of `user`'s rooms homed here, other than
    /// `user`, to `out` (a member of several such rooms repeats). Costs
    /// O(those rooms + their active members).
    pub fn room_watchers(&self, user: UserId, out: &mut Vec<UserId>) {
        for chat in self.memberships.seconds(user) {
            if let Some(m) = self.active_members.get(&chat) {
                out.extend(m.iter().copied().filter(|&u| u != user));
            }
        }
    }

    /// Pushes the active contacts of `user` (homed here) to `out`. Costs
    /// O(its contacts).
    pub fn active_contacts(&self, user: UserId, out: &mut Vec<UserId>) {
        out.extend(
            self.contacts
                .seconds(user)
                .filter(|c| self.active.contains(c)),
        );
    }

    /// `user`'s view of the last change through the rooms homed here: the
    /// active members of each of its rooms, in `kept` when neither the
    /// room's active members nor `user`'s membership changed, else in
    /// `before` and `after` as they were and are. `user` itself is left
    /// out.
    pub fn flip_sets(&self, user: UserId, out: &mut FlipSets) {
        let start = self.round.members.partition_point(|&(u, _, _)| u < user);
        let changes: &[(UserId, ChatId, bool)] = &self.round.members[start..];
        let changes = &changes[..changes.partition_point(|&(u, _, _)| u == user)];
        let others = |chat: ChatId| {
            self.active_members
                .get(&chat)
                .into_iter()
                .flatten()
                .copied()
                .filter(move |&u| u != user)
        };
        for chat in self.memberships.seconds(user) {
            if changes.binary_search(&(user, chat, true)).is_ok() {
                out.after.extend(others(chat));
            } else if let Some(room) = self.round.rooms.get(&chat) {
                self.before_view(chat, room, user, &mut out.before);
                out.after.extend(others(chat));
            } else {
                out.kept.extend(others(chat));
            }
        }
        for &(_, chat, _) in changes.iter().filter(|&&(_, _, added)| !added) {
            if let Some(room) = self.round.rooms.get(&chat) {
                self.before_view(chat, room, user, &mut out.before);
            }
        }
    }

    /// The active members of `chat` before the last change, other than
    /// `user`: those now, less the active ones it added, plus the active
    /// ones it removed.
    fn before_view(&self, chat: ChatId, room: &RoomRound, user: UserId, out: &mut Vec<UserId>) {
        if let Some(m) = self.active_members.get(&chat) {
            out.extend(
                m.iter()
                    .copied()
                    .filter(|u| *u != user && room.added.binary_search(u).is_err()),
            );
        }
        out.extend(room.removed.iter().copied().filter(|&u| u != user));
    }

    /// `user`'s (homed here) view of the last change through its
    /// contacts, as [`ShardRelations::flip_sets`] does for rooms.
    pub fn contact_flip_sets(&self, user: UserId, out: &mut FlipSets) {
        let start = self.round.contacts.partition_point(|&(u, _, _)| u < user);
        let changes: &[(UserId, UserId, bool)] = &self.round.contacts[start..];
        let changes = &changes[..changes.partition_point(|&(u, _, _)| u == user)];
        for c in self
            .contacts
            .seconds(user)
            .filter(|c| self.active.contains(c))
        {
            if changes.binary_search(&(user, c, true)).is_ok() {
                out.after.push(c);
            } else {
                out.kept.push(c);
            }
        }
        for &(_, c, added) in changes {
            if !added && self.active.contains(&c) {
                out.before.push(c);
            }
        }
    }

    /// Checks every invariant of the module doc. O(everything); for tests.
    pub fn invariants(&self) {
        self.memberships.invariants();
        self.contacts.invariants();
        let mut want: FastMap<ChatId, FastSet<UserId>> = FastMap::default();
        for (user, chat) in self.memberships.iter() {
            if self.active.contains(&user) {
                want.entry(chat).or_default().insert(user);
            }
        }
        assert_eq!(self.active_members, want, "active members");
    }
}

/// Removes `user` from `chat`'s active members, dropping an emptied room.
fn remove_active_member(map: &mut FastMap<ChatId, FastSet<UserId>>, chat: ChatId, user: UserId) {
    if let Some(m) = map.get_mut(&chat) {
        m.remove(&user);
        if m.is_empty() {
            map.remove(&chat);
        }
    }
}

/// What a change shows and hides to one user, from its [`FlipSets`] of
/// every shard (its contacts' included): each user visible before or after
/// through a changed relation and not through a kept one, with `true`
/// when it became visible and `false` when it became invisible. Sorted,
/// each once; O(the sets' sizes).
pub fn flips<'a>(parts: impl IntoIterator<Item = &'a FlipSets> + Clone) -> Vec<(UserId, bool)> {
    let kept: FastSet<UserId> = parts
        .clone()
        .into_iter()
        .flat_map(|p| p.kept.iter().copied())
        .collect();
    // Bit 1: visible before; bit 2: visible after.
    let mut seen: FastMap<UserId, u8> = FastMap::default();
    for p in parts {
        for &u in &p.before {
            *seen.entry(u).or_default() |= 1;
        }
        for &u in &p.after {
            *seen.entry(u).or_default() |= 2;
        }
    }
    let mut out: Vec<(UserId, bool)> = seen
        .into_iter()
        .filter(|(u, bits)| (*bits == 1 || *bits == 2) && !kept.contains(u))
        .map(|(u, bits)| (u, bits == 2))
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests;
