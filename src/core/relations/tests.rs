//! The shard's part of the relations: a few cases, then random changes on
//! one to three simulated shards against a plain model of who may see
//! whom (protocol 5.3): the watchers a gather finds, and the flips a
//! change's round 2 finds, must be exactly the model's.

use super::{flips, FlipSets, ShardDelta, ShardRelations};
use crate::shard::route::{room_home, user_home};
use proptest::prelude::*;
use std::collections::BTreeSet;

/// A delta of `(chat, user)` memberships (sorted as deltas are).
fn delta_members(added: &[(u64, u64)], removed: &[(u64, u64)]) -> ShardDelta {
    let sorted = |v: &[(u64, u64)]| {
        let mut v: Vec<(u64, u64)> = v.iter().map(|&(c, u)| (u, c)).collect();
        v.sort_unstable();
        v
    };
    ShardDelta {
        members_added: sorted(added),
        members_removed: sorted(removed),
        ..ShardDelta::default()
    }
}

fn watchers(r: &ShardRelations, user: u64) -> Vec<u64> {
    let mut out = Vec::new();
    r.room_watchers(user, &mut out);
    r.active_contacts(user, &mut out);
    out.sort_unstable();
    out.dedup();
    out
}

#[test]
fn watchers_are_the_active_members_and_contacts() {
    let mut r = ShardRelations::new();
    let touched = r.apply(
        1,
        &delta_members(&[(7, 1), (7, 2), (7, 3), (8, 1), (8, 4)], &[]),
    );
    assert!(touched.is_empty(), "nobody active");
    r.apply(
        2,
        &ShardDelta {
            contacts_added: vec![(1, 5)],
            ..ShardDelta::default()
        },
    );
    assert!(r.is_member(7, 3) && !r.is_member(7, 4));
    assert_eq!(r.rooms_of(1).collect::<Vec<_>>(), [7, 8]);
    assert_eq!(watchers(&r, 1), Vec::<u64>::new());
    for u in [2, 4, 5] {
        r.set_active(u, true);
    }
    assert_eq!(watchers(&r, 1), [2, 4, 5]);
    r.set_active(4, false);
    assert_eq!(watchers(&r, 1), [2, 5]);
    r.invariants();
}

#[test]
fn removing_a_member_of_a_big_room_touches_only_active_users() {
    let mut r = ShardRelations::new();
    let members: Vec<(u64, u64)> = (1..=100_000).map(|u| (7, u)).collect();
    r.apply(1, &delta_members(&members, &[]));
    for u in [10, 20, 30] {
        r.set_active(u, true);
    }
    let touched = r.apply(2, &delta_members(&[], &[(7, 10), (7, 11)]));
    assert_eq!(touched, [10], "11 is not active");
    let mut sets = FlipSets::default();
    r.flip_sets(10, &mut sets);
    sets.before.sort_unstable();
    assert_eq!(sets.before, [20, 30]);
    assert!(sets.after.is_empty() && sets.kept.is_empty());
    assert_eq!(flips([&sets]), [(20, false), (30, false)]);
    r.invariants();
}

#[test]
fn a_second_shared_room_keeps_visibility() {
    let mut r = ShardRelations::new();
    r.apply(1, &delta_members(&[(7, 1), (7, 2), (8, 1), (8, 2)], &[]));
    r.set_active(1, true);
    r.set_active(2, true);
    r.apply(2, &delta_members(&[], &[(7, 1)]));
    let mut sets = FlipSets::default();
    r.flip_sets(1, &mut sets);
    assert_eq!(sets.kept, [2]);
    assert_eq!(flips([&sets]), []);
}

/// The relations as plain sets.
#[derive(Clone, Debug, Default)]
struct Model {
    members: BTreeSet<(u64, u64)>,
    contacts: BTreeSet<(u64, u64)>,
}

impl Model {
    fn sees(&self, a: u64, b: u64) -> bool {
        a != b
            && (self.contacts.contains(&(a.min(b), a.max(b)))
                || self
                    .members
                    .iter()
                    .any(|&(c, u)| u == a && self.members.contains(&(c, b))))
    }
}

/// Each shard's part of the change from `before` to `after`, split as
/// the server splits it.
fn split(before: &Model, after: &Model, shards: usize) -> Vec<ShardDelta> {
    let mut parts = vec![ShardDelta::default(); shards];
    for &(c, u) in after.members.difference(&before.members) {
        parts[room_home(c, shards)].members_added.push((u, c));
    }
    for &(c, u) in before.members.difference(&after.members) {
        parts[room_home(c, shards)].members_removed.push((u, c));
    }
    for &(a, b) in after.contacts.difference(&before.contacts) {
        parts[user_home(a, shards)].contacts_added.push((a, b));
        parts[user_home(b, shards)].contacts_added.push((b, a));
    }
    for &(a, b) in before.contacts.difference(&after.contacts) {
        parts[user_home(a, shards)].contacts_removed.push((a, b));
        parts[user_home(b, shards)].contacts_removed.push((b, a));
    }
    for p in &mut parts {
        p.sort();
    }
    parts
}

#[derive(Clone, Debug)]
enum Step {
    Member(u64, u64, bool),
    Contact(u64, u64, bool),
    Active(u64, bool),
    /// Several relation steps applied as one change.
    Batch(Vec<Step>),
}

const MAX_ID: u64 = u64::MAX;

/// Few users and rooms, so that relations overlap; the largest id is one
/// of them.
fn id() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..6, Just(MAX_ID)]
}

fn relation_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (id(), id(), any::<bool>()).prop_map(|(c, u, on)| Step::Member(c, u, on)),
        (id(), id(), any::<bool>())
            .prop_filter("own contact", |(a, b, _)| a != b)
            .prop_map(|(a, b, on)| Step::Contact(a.min(b), a.max(b), on)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => relation_step(),
        2 => (id(), any::<bool>()).prop_map(|(u, on)| Step::Active(u, on)),
        1 => prop::collection::vec(relation_step(), 1..6).prop_map(Step::Batch),
    ]
}

fn run_relation(model: &mut Model, step: &Step) {
    match *step {
        Step::Member(c, u, true) => {
            model.members.insert((c, u));
        }
        Step::Member(c, u, false) => {
            model.members.remove(&(c, u));
        }
        Step::Contact(a, b, true) => {
            model.contacts.insert((a, b));
        }
        Step::Contact(a, b, false) => {
            model.contacts.remove(&(a, b));
        }
        Step::Batch(ref steps) => steps.iter().for_each(|s| run_relation(model, s)),
        Step::Active(..) => {}
    }
}

fn users() -> impl Iterator<Item = u64> {
    (1..6).chain([MAX_ID])
}

proptest! {
    #[test]
    fn gathers_and_flips_match_the_model(
        shards in 1usize..4,
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let mut sh: Vec<ShardRelations> = (0..shards).map(|_| ShardRelations::new()).collect();
        let mut model = Model::default();
        let mut active: BTreeSet<u64> = BTreeSet::new();
        let mut epoch = 0;
        for step in steps {
            if let Step::Active(u, on) = step {
                for s in &mut sh {
                    s.set_active(u, on);
                }
                if on { active.insert(u); } else { active.remove(&u); }
            } else {
                let before = model.clone();
                run_relation(&mut model, &step);
                epoch += 1;
                let mut touched = Vec::new();
                for (s, part) in sh.iter_mut().zip(split(&before, &model, shards)) {
                    touched.extend(s.apply(epoch, &part));
                }
                touched.sort_unstable();
                touched.dedup();
                // Round 2, for every touched user at its home.
                let mut found: BTreeSet<(u64, u64, bool)> = BTreeSet::new();
                for &w in &touched {
                    prop_assert!(active.contains(&w), "inactive user {w} touched");
                    let mut sets = FlipSets::default();
                    for s in &sh {
                        s.flip_sets(w, &mut sets);
                    }
                    sh[user_home(w, shards)].contact_flip_sets(w, &mut sets);
                    for (x, visible) in flips([&sets]) {
                        found.insert((w.min(x), w.max(x), visible));
                    }
                }
                // The model's flips among active users.
                let mut want = BTreeSet::new();
                for &a in &active {
                    for &b in active.iter().filter(|&&b| b > a) {
                        let (was, is) = (before.sees(a, b), model.sees(a, b));
                        if was != is {
                            want.insert((a, b, is));
                        }
                    }
                }
                prop_assert_eq!(found, want, "flips of {:?}", step);
            }
            for s in &sh {
                s.invariants();
            }
            // A gather of every user finds exactly its active watchers.
            for u in users() {
                let mut got = Vec::new();
                for s in &sh {
                    s.room_watchers(u, &mut got);
                }
                sh[user_home(u, shards)].active_contacts(u, &mut got);
                got.sort_unstable();
                got.dedup();
                let want: Vec<u64> = active.iter().copied().filter(|&w| model.sees(u, w)).collect();
                prop_assert_eq!(got, want, "watchers of {}", u);
            }
        }
    }
}
