//! Relation changes: the operations of the admin API (one per request, or
//! up to [`crate::limits::MAX_BATCH_OPS`] in one batch, protocol 6.1), what
//! they do to each key as a whole ([`Plan`]), and the net difference that
//! the store wrote ([`NetChange`]), which is what the live shards apply.
//!
//! A batch is applied as if its operations ran in order, but only its net
//! effect is written and pushed: a member added then removed in one batch
//! is no change at all. Ids are compared as plain integers (no `id + 1`
//! anywhere), so `u64::MAX` is an ordinary id.

use crate::ids::{ChatId, FastMap, UserId};

/// One relation operation, validated (ids non-zero, no user its own
/// contact).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `user` becomes a member of `chat`.
    PutMember { chat: ChatId, user: UserId },
    /// `user` stops being a member of `chat`.
    DeleteMember { chat: ChatId, user: UserId },
    /// `chat`'s members become exactly `members` (duplicates allowed).
    PutRoom { chat: ChatId, members: Vec<UserId> },
    /// `chat` has no members any more.
    DeleteRoom { chat: ChatId },
    /// `a` and `b` become contacts of each other.
    PutContact { a: UserId, b: UserId },
    /// `a` and `b` stop being contacts.
    DeleteContact { a: UserId, b: UserId },
    /// `user`'s contacts become exactly `contacts` (both directions).
    PutContacts { user: UserId, contacts: Vec<UserId> },
}

/// The net difference a change made, as the store wrote it: every list
/// sorted, no pair in both lists of a kind, nothing already as asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetChange {
    /// `(chat, user)` memberships that now exist and did not.
    pub members_added: Vec<(ChatId, UserId)>,
    /// `(chat, user)` memberships that existed and no longer do.
    pub members_removed: Vec<(ChatId, UserId)>,
    /// Contact pairs `(low, high)` that now exist and did not.
    pub contacts_added: Vec<(UserId, UserId)>,
    /// Contact pairs `(low, high)` that existed and no longer do.
    pub contacts_removed: Vec<(UserId, UserId)>,
}

impl NetChange {
    /// Whether it changed nothing.
    pub fn is_empty(&self) -> bool {
        self.members_added.is_empty()
            && self.members_removed.is_empty()
            && self.contacts_added.is_empty()
            && self.contacts_removed.is_empty()
    }
}

/// What a list of operations does, key by key, once all have run: the
/// final state of every key an operation names, and the rooms and users
/// whose other relations are dropped (by `PutRoom`, `DeleteRoom`,
/// `PutContacts`). Built in O(n log n) for n named keys, with no access to
/// the store; [`crate::store::Store::apply`] then reads and writes only
/// these keys and the reset ranges.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// `(chat, user, exists)` for every membership named, sorted, once.
    pub members: Vec<(ChatId, UserId, bool)>,
    /// Rooms whose members not in `members` are all removed, sorted.
    pub reset_rooms: Vec<ChatId>,
    /// `(low, high, exists)` for every contact pair named, sorted, once.
    pub contacts: Vec<(UserId, UserId, bool)>,
    /// Users whose contacts not in `contacts` are all removed, sorted.
    pub reset_users: Vec<UserId>,
}

impl Plan {
    /// The plan of `ops`, run in order.
    pub fn new(ops: &[Op]) -> Plan {
        // (key, op index, value): the last entry per key decides, unless a
        // reset of its room or user came after it. A reset and the members
        // it sets share an index, the reset first.
        let mut members: Vec<(ChatId, UserId, usize, bool)> = Vec::new();
        let mut contacts: Vec<(UserId, UserId, usize, bool)> = Vec::new();
        let mut room_reset: FastMap<ChatId, usize> = FastMap::default();
        let mut user_reset: FastMap<UserId, usize> = FastMap::default();
        let pair = |a: UserId, b: UserId| if a < b { (a, b) } else { (b, a) };
        for (i, op) in ops.iter().enumerate() {
            match op {
                &Op::PutMember { chat, user } => members.push((chat, user, i, true)),
                &Op::DeleteMember { chat, user } => members.push((chat, user, i, false)),
                Op::PutRoom {
                    chat,
                    members: list,
                } => {
                    room_reset.insert(*chat, i);
                    members.extend(list.iter().map(|&u| (*chat, u, i, true)));
                }
                &Op::DeleteRoom { chat } => {
                    room_reset.insert(chat, i);
                }
                &Op::PutContact { a, b } => {
                    let (lo, hi) = pair(a, b);
                    contacts.push((lo, hi, i, true));
                }
                &Op::DeleteContact { a, b } => {
                    let (lo, hi) = pair(a, b);
                    contacts.push((lo, hi, i, false));
                }
                Op::PutContacts {
                    user,
                    contacts: list,
                } => {
                    user_reset.insert(*user, i);
                    contacts.extend(list.iter().map(|&c| {
                        let (lo, hi) = pair(*user, c);
                        (lo, hi, i, true)
                    }));
                }
            }
        }
        members.sort_unstable();
        contacts.sort_unstable();
        let reset_after =
            |map: &FastMap<u64, usize>, k: u64, i: usize| map.get(&k).is_some_and(|&r| r > i);
        let members = last_per_key(members)
            .into_iter()
            .map(|(c, u, i, v)| (c, u, v && !reset_after(&room_reset, c, i)))
            .collect();
        let contacts = last_per_key(contacts)
            .into_iter()
            .map(|(a, b, i, v)| {
                let reset = reset_after(&user_reset, a, i) || reset_after(&user_reset, b, i);
                (a, b, v && !reset)
            })
            .collect();
        let mut reset_rooms: Vec<ChatId> = room_reset.into_keys().collect();
        reset_rooms.sort_unstable();
        let mut reset_users: Vec<UserId> = user_reset.into_keys().collect();
        reset_users.sort_unstable();
        Plan {
            members,
            reset_rooms,
            contacts,
            reset_users,
        }
    }

    /// Whether `(chat, user)` is named (and so decided by `members`).
    pub fn names_member(&self, chat: ChatId, user: UserId) -> bool {
        self.members
            .binary_search_by(|&(c, u, _)| (c, u).cmp(&(chat, user)))
            .is_ok()
    }

    /// Whether the pair `(low, high)` is named (decided by `contacts`).
    pub fn names_contact(&self, low: UserId, high: UserId) -> bool {
        self.contacts
            .binary_search_by(|&(a, b, _)| (a, b).cmp(&(low, high)))
            .is_ok()
    }
}

/// The last entry of each key of a list sorted by (key, index), in key
/// order.
fn last_per_key(mut sorted: Vec<(u64, u64, usize, bool)>) -> Vec<(u64, u64, usize, bool)> {
    // `dedup` keeps the first of each run: reversed, that is the last op.
    sorted.reverse();
    sorted.dedup_by_key(|e| (e.0, e.1));
    sorted.reverse();
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_operation_on_a_key_decides_unless_a_reset_follows() {
        let plan = Plan::new(&[
            Op::PutMember { chat: 7, user: 1 },
            Op::DeleteMember { chat: 7, user: 1 },
            Op::PutMember { chat: 7, user: 1 },
            Op::PutMember { chat: 7, user: 2 },
            Op::PutRoom {
                chat: 7,
                members: vec![3],
            },
            Op::PutMember { chat: 7, user: 2 },
            Op::PutContacts {
                user: 9,
                contacts: vec![4, 5],
            },
            Op::DeleteContact { a: 5, b: 9 },
            Op::PutContact { a: 6, b: 9 },
            Op::PutContacts {
                user: 6,
                contacts: vec![],
            },
        ]);
        assert_eq!(
            plan,
            Plan {
                // 1 was put back, but the room was reset after it; 2 was
                // put again after the reset; 3 came with the reset.
                members: vec![(7, 1, false), (7, 2, true), (7, 3, true)],
                reset_rooms: vec![7],
                // (6, 9) was put, then 6's contacts were reset.
                contacts: vec![(4, 9, true), (5, 9, false), (6, 9, false)],
                reset_users: vec![6, 9],
            }
        );
        assert!(plan.names_member(7, 3) && !plan.names_member(7, 4));
        assert!(plan.names_contact(4, 9) && !plan.names_contact(9, 4));
    }
}
