//! Presence rules one by one, the draft's example, then random sequences
//! against a plain reference model.

use super::{Change, Presence, VisibilityChange};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

const AUTO: u8 = 0x80;

fn change(old: u8, new: u8) -> Change {
    Change { old, new }
}

#[test]
fn visible_presence_needs_both_a_presence_and_visibility() {
    let mut p: Presence<u32> = Presence::new();
    let _ = p.visibility(1, 2, 1);
    assert_eq!(p.visible_presence(1, 2), 0, "visible but offline");
    let _ = p.connect(1, 10, 3);
    assert_eq!(p.visible_presence(1, 2), 3);
    assert_eq!(p.visible_presence(1, 4), 0, "online but not visible to 4");
    assert_eq!(p.visible_presence(9, 2), 0, "unknown user");
    let _ = p.visibility(1, 2, -1);
    assert_eq!(p.visible_presence(1, 2), 0, "no longer visible");
}

#[test]
fn first_client_sets_the_presence() {
    let mut p: Presence<u32> = Presence::new();
    assert_eq!(p.presence(1), 0);
    let c = p.connect(1, 10, 3);
    assert_eq!(c, change(0, 3));
    assert!(c.changed());
    assert_eq!(p.clients(1).collect::<Vec<_>>(), vec![10]);
    p.invariants();
}

#[test]
fn the_drafts_example_auto_away_does_not_hide_an_online_device() {
    let mut p: Presence<u32> = Presence::new();
    p.connect(1, 10, 3); // device A: online, set by the user
    p.connect(1, 11, 3 | AUTO); // device B joins, auto online
    let c = p.set(1, 11, 2 | AUTO); // B goes automatically away
    assert_eq!(c, change(3, 3));
    assert!(!c.changed());
    assert_eq!(p.disconnect(1, 10), change(3, 2));
    assert_eq!(p.presence(1), 2);
    p.invariants();
}

#[test]
fn a_lower_user_set_value_lowers_every_device() {
    let mut p: Presence<u32> = Presence::new();
    p.connect(1, 10, 4);
    p.connect(1, 11, 4 | AUTO);
    assert_eq!(p.set(1, 11, 1), change(4, 1), "do-not-disturb everywhere");
    // Had only device 11 taken it, device 10 would still hold 4.
    assert_eq!(p.disconnect(1, 11), change(1, 1));
    p.invariants();
}

#[test]
fn a_user_set_value_on_hello_applies_to_the_other_devices() {
    let mut p: Presence<u32> = Presence::new();
    p.connect(1, 10, 4);
    assert_eq!(p.connect(1, 11, 2), change(4, 2));
}

#[test]
fn an_automatic_value_only_touches_its_sender() {
    let mut p: Presence<u32> = Presence::new();
    p.connect(1, 10, 2);
    p.connect(1, 11, 2 | AUTO);
    assert_eq!(p.set(1, 11, 4 | AUTO), change(2, 4));
    assert_eq!(
        p.set(1, 11, 1 | AUTO),
        change(4, 2),
        "back to device 10's value"
    );
}

#[test]
fn the_last_client_leaving_means_offline_and_frees_the_user() {
    let mut p: Presence<u32> = Presence::new();
    p.connect(1, 10, 3);
    assert_eq!(p.disconnect(1, 10), change(3, 0));
    assert_eq!(p.presence(1), 0);
    assert_eq!(p.user_count(), 0);
    assert_eq!(p.disconnect(1, 10), change(0, 0), "twice is harmless");
}

#[test]
fn visibility_flips_only_on_the_first_and_last_relation() {
    let mut p: Presence<u32> = Presence::new();
    assert_eq!(p.visibility(1, 2, 1), VisibilityChange::BecameVisible);
    assert_eq!(
        p.visibility(1, 2, 1),
        VisibilityChange::None,
        "a second shared room"
    );
    assert!(p.watchers(1).any(|w| w == 2));
    assert!(
        !p.watchers(2).any(|w| w == 1),
        "counts are per direction; the caller adds both"
    );
    assert_eq!(p.visibility(1, 2, -1), VisibilityChange::None);
    assert_eq!(p.visibility(1, 2, 0), VisibilityChange::None);
    assert_eq!(p.visibility(1, 2, -1), VisibilityChange::BecameInvisible);
    assert!(!p.watchers(1).any(|w| w == 2));
    assert_eq!(p.user_count(), 0, "no client and no watcher: freed");
}

#[test]
fn watchers_are_listed_once_each() {
    let mut p: Presence<u32> = Presence::new();
    p.visibility(1, 2, 3);
    p.visibility(1, 3, 1);
    p.visibility(4, 2, 1);
    let mut w: Vec<_> = p.watchers(1).collect();
    w.sort_unstable();
    assert_eq!(w, vec![2, 3]);
    assert_eq!(p.watcher_count(1), 2);
    assert_eq!(p.watcher_count(9), 0);
    p.connect(1, 10, 3);
    p.disconnect(1, 10);
    assert_eq!(p.watcher_count(1), 2, "a watched user outlives its clients");
    p.invariants();
}

#[test]
#[cfg(not(debug_assertions))]
fn counts_saturate_at_zero_in_release() {
    let mut p: Presence<u32> = Presence::new();
    assert_eq!(p.visibility(1, 2, -1), VisibilityChange::None);
    assert_eq!(p.visibility(1, 2, 1), VisibilityChange::BecameVisible);
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "below zero")]
fn a_negative_count_is_a_bug() {
    let mut p: Presence<u32> = Presence::new();
    p.visibility(1, 2, -1);
}

/// The rules of section 5.2 written the plain way.
#[derive(Default)]
struct Model {
    clients: HashMap<u64, BTreeMap<u32, u8>>,
    relations: HashMap<(u64, u64), i64>,
}

impl Model {
    fn presence(&self, user: u64) -> u8 {
        self.clients
            .get(&user)
            .and_then(|c| c.values().max().copied())
            .unwrap_or(0)
    }

    fn apply(&mut self, user: u64, conn: u32, raw: u8) {
        let clients = self.clients.entry(user).or_default();
        if raw & AUTO == 0 {
            clients.values_mut().for_each(|v| *v = raw);
        } else {
            clients.insert(conn, raw & 0x7F);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Connect(u64, u32, u8),
    Set(u64, u32, u8),
    Disconnect(u64, u32),
    Relate(u64, u64, i32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (1u64..4, 0u32..4, any::<u8>()).prop_map(|(u, c, r)| Op::Connect(u, c, r)),
        3 => (1u64..4, 0u32..4, any::<u8>()).prop_map(|(u, c, r)| Op::Set(u, c, r)),
        1 => (1u64..4, 0u32..4).prop_map(|(u, c)| Op::Disconnect(u, c)),
        2 => (1u64..4, 1u64..4, -2i32..3).prop_map(|(u, w, d)| Op::Relate(u, w, d)),
    ]
}

proptest! {
    #[test]
    fn matches_the_reference_model(ops in prop::collection::vec(op(), 1..150)) {
        let mut p: Presence<u32> = Presence::new();
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Connect(u, c, raw) => {
                    // A handle is one connection of one user, connected once.
                    if m.clients.values().any(|cs| cs.contains_key(&c)) { continue; }
                    let old = m.presence(u);
                    m.clients.entry(u).or_default().insert(c, 0);
                    m.apply(u, c, raw);
                    prop_assert_eq!(p.connect(u, c, raw), change(old, m.presence(u)));
                }
                Op::Set(u, c, raw) => {
                    if !m.clients.get(&u).is_some_and(|cs| cs.contains_key(&c)) { continue; }
                    let old = m.presence(u);
                    m.apply(u, c, raw);
                    prop_assert_eq!(p.set(u, c, raw), change(old, m.presence(u)));
                }
                Op::Disconnect(u, c) => {
                    let old = m.presence(u);
                    if let Some(cs) = m.clients.get_mut(&u) { cs.remove(&c); }
                    prop_assert_eq!(p.disconnect(u, c), change(old, m.presence(u)));
                }
                Op::Relate(u, w, d) => {
                    let n = m.relations.entry((u, w)).or_default();
                    // Never drive a count below zero: that is a caller bug.
                    let d = d.max(-(*n as i32));
                    let before = *n > 0;
                    *n += i64::from(d);
                    let expected = match (before, *n > 0) {
                        (false, true) => VisibilityChange::BecameVisible,
                        (true, false) => VisibilityChange::BecameInvisible,
                        _ => VisibilityChange::None,
                    };
                    prop_assert_eq!(p.visibility(u, w, d), expected);
                }
            }
            p.invariants();
            for u in 1..4 {
                prop_assert_eq!(p.presence(u), m.presence(u));
                let mut clients: Vec<u32> = p.clients(u).collect();
                clients.sort_unstable();
                let expected: Vec<u32> =
                    m.clients.get(&u).map(|cs| cs.keys().copied().collect()).unwrap_or_default();
                prop_assert_eq!(clients, expected);
                let mut watchers: Vec<u64> = p.watchers(u).collect();
                watchers.sort_unstable();
                let expected: Vec<u64> =
                    (1..4).filter(|&w| m.relations.get(&(u, w)).is_some_and(|&n| n > 0)).collect();
                prop_assert_eq!(watchers, expected);
            }
            let live = (1..4u64)
                .filter(|&u| {
                    m.clients.get(&u).is_some_and(|c| !c.is_empty())
                        || (1..4).any(|w| m.relations.get(&(u, w)).is_some_and(|&n| n > 0))
                })
                .count();
            prop_assert_eq!(p.user_count(), live);
        }
    }
}
