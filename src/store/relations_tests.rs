//! Tests of the relation model: effects of each change, and a property test
//! that replays random changes against a model recomputed from scratch.

use super::*;
use proptest::prelude::*;
use std::collections::HashSet;

use RelationEffect::{MemberAdded, MemberRemoved, Visibility};

fn vis(user: UserId, watcher: UserId, delta: i32) -> RelationEffect {
    Visibility {
        user,
        watcher,
        delta,
    }
}

/// The effects as a set, for comparisons that ignore order.
fn set(effects: Vec<RelationEffect>) -> HashSet<RelationEffect> {
    let n = effects.len();
    let s: HashSet<_> = effects.into_iter().collect();
    assert_eq!(s.len(), n, "no effect is emitted twice");
    s
}

#[test]
fn adding_a_member_makes_it_visible_to_each_other_member_both_ways() {
    let mut r = Relations::new();
    assert_eq!(r.add_member(7, 1), vec![MemberAdded { chat: 7, user: 1 }]);
    let got = set(r.add_member(7, 2));
    let want = set(vec![
        MemberAdded { chat: 7, user: 2 },
        vis(1, 2, 1),
        vis(2, 1, 1),
    ]);
    assert_eq!(got, want);
    assert_eq!(
        r.members(7).unwrap().iter().copied().collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        r.rooms_of(2).unwrap().iter().copied().collect::<Vec<_>>(),
        [7]
    );
    assert_eq!(r.relation_count(1, 2), 1);
}

#[test]
fn adding_an_existing_member_has_no_effect() {
    let mut r = Relations::new();
    r.add_member(7, 1);
    r.add_member(7, 2);
    assert!(r.add_member(7, 2).is_empty());
}

#[test]
fn effects_put_membership_before_visibility() {
    let mut r = Relations::new();
    r.add_member(7, 1);
    let got = r.add_member(7, 2);
    assert_eq!(got[0], MemberAdded { chat: 7, user: 2 });
}

#[test]
fn removing_a_member_counts_down_and_empty_room_disappears() {
    let mut r = Relations::new();
    r.add_member(7, 1);
    r.add_member(7, 2);
    let got = set(r.remove_member(7, 2));
    let want = set(vec![
        MemberRemoved { chat: 7, user: 2 },
        vis(1, 2, -1),
        vis(2, 1, -1),
    ]);
    assert_eq!(got, want);
    assert!(r.remove_member(7, 2).is_empty());
    assert!(r.rooms_of(2).is_none());
    assert_eq!(
        r.remove_member(7, 1),
        vec![MemberRemoved { chat: 7, user: 1 }]
    );
    assert!(r.members(7).is_none());
    assert!(r.remove_member(9, 1).is_empty());
}

#[test]
fn a_second_shared_relation_still_emits_its_count_change() {
    let mut r = Relations::new();
    r.add_contact(1, 2);
    r.add_member(7, 1);
    // The pair goes from 1 to 2 relations: shards count, so it is sent.
    let got = set(r.add_member(7, 2));
    assert!(got.contains(&vis(1, 2, 1)));
    assert_eq!(r.relation_count(2, 1), 2);
    assert_eq!(r.remove_contact(2, 1).len(), 2);
    assert_eq!(r.relation_count(2, 1), 1);
}

#[test]
fn set_members_emits_only_the_net_difference() {
    let mut r = Relations::new();
    r.set_members(7, &[1, 2, 3]);
    // 1 stays, 2 and 3 go, 4 and 5 come (5 twice in the request).
    let got = set(r.set_members(7, &[5, 1, 4, 5]));
    let want = set(vec![
        MemberAdded { chat: 7, user: 4 },
        MemberAdded { chat: 7, user: 5 },
        MemberRemoved { chat: 7, user: 2 },
        MemberRemoved { chat: 7, user: 3 },
        vis(1, 2, -1),
        vis(2, 1, -1),
        vis(1, 3, -1),
        vis(3, 1, -1),
        vis(2, 3, -1),
        vis(3, 2, -1),
        vis(1, 4, 1),
        vis(4, 1, 1),
        vis(1, 5, 1),
        vis(5, 1, 1),
        vis(4, 5, 1),
        vis(5, 4, 1),
    ]);
    assert_eq!(got, want);
    assert!(r.set_members(7, &[1, 4, 5]).is_empty());
    assert_eq!(r.members(7).unwrap().len(), 3);
}

#[test]
fn set_members_to_empty_and_delete_room_remove_everything() {
    let mut r = Relations::new();
    r.set_members(7, &[1, 2]);
    assert_eq!(r.set_members(7, &[]).len(), 4);
    assert!(r.members(7).is_none());
    assert!(r.rooms_of(1).is_none());
    r.set_members(7, &[1, 2, 3]);
    assert_eq!(r.delete_room(7).len(), 3 + 6);
    assert!(r.delete_room(7).is_empty());
    assert_eq!(r, Relations::new());
}

#[test]
fn contacts_are_symmetric_and_idempotent() {
    let mut r = Relations::new();
    assert_eq!(
        set(r.add_contact(1, 2)),
        set(vec![vis(1, 2, 1), vis(2, 1, 1)])
    );
    assert!(r.add_contact(2, 1).is_empty());
    assert!(r.contacts_of(2).unwrap().contains(&1));
    assert!(r.add_contact(3, 3).is_empty());
    assert!(r.contacts_of(3).is_none());
    assert_eq!(
        set(r.remove_contact(2, 1)),
        set(vec![vis(1, 2, -1), vis(2, 1, -1)])
    );
    assert!(r.remove_contact(1, 2).is_empty());
    assert_eq!(r, Relations::new());
}

#[test]
fn initial_effects_count_every_relation_of_a_pair() {
    let mut r = Relations::new();
    r.set_members(7, &[1, 2]);
    r.set_members(8, &[1, 2, 3]);
    r.add_contact(1, 2);
    r.add_contact(3, 4);
    let got = set(r.initial_effects());
    let want = set(vec![
        MemberAdded { chat: 7, user: 1 },
        MemberAdded { chat: 7, user: 2 },
        MemberAdded { chat: 8, user: 1 },
        MemberAdded { chat: 8, user: 2 },
        MemberAdded { chat: 8, user: 3 },
        vis(1, 2, 3),
        vis(2, 1, 3),
        vis(1, 3, 1),
        vis(3, 1, 1),
        vis(2, 3, 1),
        vis(3, 2, 1),
        vis(3, 4, 1),
        vis(4, 3, 1),
    ]);
    assert_eq!(got, want);
}

/// One random relation change.
#[derive(Clone, Debug)]
enum Op {
    Add(ChatId, UserId),
    Remove(ChatId, UserId),
    Set(ChatId, Vec<UserId>),
    Delete(ChatId),
    Contact(UserId, UserId),
    Uncontact(UserId, UserId),
}

fn op() -> impl Strategy<Value = Op> {
    // Few ids, so that changes collide often.
    let chat = 1..4u64;
    let user = || 1..7u64;
    prop_oneof![
        (chat.clone(), user()).prop_map(|(c, u)| Op::Add(c, u)),
        (chat.clone(), user()).prop_map(|(c, u)| Op::Remove(c, u)),
        (chat.clone(), proptest::collection::vec(user(), 0..7)).prop_map(|(c, m)| Op::Set(c, m)),
        chat.prop_map(Op::Delete),
        (user(), user()).prop_map(|(a, b)| Op::Contact(a, b)),
        (user(), user()).prop_map(|(a, b)| Op::Uncontact(a, b)),
    ]
}

/// The naive truth: plain sets, no indexes, no effects.
#[derive(Default)]
struct Naive {
    members: BTreeSet<(ChatId, UserId)>,
    contacts: BTreeSet<(UserId, UserId)>,
}

impl Naive {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Add(c, u) => {
                self.members.insert((*c, *u));
            }
            Op::Remove(c, u) => {
                self.members.remove(&(*c, *u));
            }
            Op::Set(c, m) => {
                self.members.retain(|(chat, _)| chat != c);
                self.members.extend(m.iter().map(|u| (*c, *u)));
            }
            Op::Delete(c) => self.members.retain(|(chat, _)| chat != c),
            Op::Contact(a, b) if a != b => {
                self.contacts.insert(((*a).min(*b), (*a).max(*b)));
            }
            Op::Uncontact(a, b) => {
                self.contacts.remove(&((*a).min(*b), (*a).max(*b)));
            }
            Op::Contact(..) => {}
        }
    }

    fn count(&self, a: UserId, b: UserId) -> i64 {
        let contact = self.contacts.contains(&(a.min(b), a.max(b)));
        let shared = (1..4)
            .filter(|c| self.members.contains(&(*c, a)) && self.members.contains(&(*c, b)))
            .count();
        i64::from(contact) + shared as i64
    }
}

/// Live state rebuilt from effects only, as the shards see it.
#[derive(Default)]
struct Replay {
    members: BTreeSet<(ChatId, UserId)>,
    visibility: HashMap<(UserId, UserId), i64>,
}

impl Replay {
    fn apply(&mut self, effects: &[RelationEffect]) -> Result<(), TestCaseError> {
        for e in effects {
            match *e {
                MemberAdded { chat, user } => {
                    prop_assert!(self.members.insert((chat, user)), "added twice: {e:?}");
                }
                MemberRemoved { chat, user } => {
                    prop_assert!(self.members.remove(&(chat, user)), "removed absent: {e:?}");
                }
                Visibility {
                    user,
                    watcher,
                    delta,
                } => {
                    prop_assert_ne!(user, watcher);
                    prop_assert_ne!(delta, 0);
                    prop_assert!(
                        effects.contains(&vis(watcher, user, delta)),
                        "mirror missing for {:?}",
                        e
                    );
                    *self.visibility.entry((user, watcher)).or_insert(0) += i64::from(delta);
                }
            }
        }
        Ok(())
    }

    fn check(&self, naive: &Naive) -> Result<(), TestCaseError> {
        prop_assert_eq!(&self.members, &naive.members);
        for a in 1..7 {
            for b in 1..7 {
                let got = self.visibility.get(&(a, b)).copied().unwrap_or(0);
                let want = if a == b { 0 } else { naive.count(a, b) };
                prop_assert_eq!(got, want, "pair ({}, {})", a, b);
            }
        }
        Ok(())
    }
}

proptest! {
    #[test]
    fn emitted_effects_replay_to_the_true_relations(ops in proptest::collection::vec(op(), 0..60)) {
        let mut model = Relations::new();
        let mut naive = Naive::default();
        let mut replay = Replay::default();
        for op in &ops {
            let effects = match op {
                Op::Add(c, u) => model.add_member(*c, *u),
                Op::Remove(c, u) => model.remove_member(*c, *u),
                Op::Set(c, m) => model.set_members(*c, m),
                Op::Delete(c) => model.delete_room(*c),
                Op::Contact(a, b) => model.add_contact(*a, *b),
                Op::Uncontact(a, b) => model.remove_contact(*a, *b),
            };
            naive.apply(op);
            replay.apply(&effects)?;
            replay.check(&naive)?;
        }
        // Start-up effects on empty shards reach the same state.
        let mut fresh = Replay::default();
        fresh.apply(&model.initial_effects())?;
        fresh.check(&naive)?;
        for a in 1..7 {
            for b in 1..7 {
                let want = if a == b { 0 } else { naive.count(a, b) };
                prop_assert_eq!(i64::from(model.relation_count(a, b)), want);
            }
        }
    }
}
