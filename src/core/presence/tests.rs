//! Presence rules one by one, the draft's example, the update state, then
//! random sequences against a plain reference model.

use super::{Change, Presence};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

const AUTO: u8 = 0x80;

fn change(old: u8, new: u8) -> Change {
    Change { old, new }
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
fn the_last_client_leaving_means_offline_and_frees_the_user_once_told() {
    let mut p: Presence<u32> = Presence::new();
    p.connect(1, 10, 3);
    assert!(p.queue_update(1));
    assert_eq!(p.finish_publish(1), (vec![3], false));
    assert_eq!(p.disconnect(1, 10), change(3, 0));
    assert_eq!(p.presence(1), 0);
    assert!(
        !p.release_if_quiet(1),
        "watchers were told 3: not quiet yet"
    );
    assert!(p.may_show_nonzero(1));
    assert!(p.queue_update(1));
    assert!(!p.release_if_quiet(1), "the update of 0 is in flight");
    assert_eq!(p.finish_publish(1), (vec![0], false));
    assert!(!p.may_show_nonzero(1));
    assert!(p.release_if_quiet(1));
    assert_eq!(p.user_count(), 0);
    assert!(!p.is_active(1));
    assert_eq!(p.disconnect(1, 10), change(0, 0), "twice is harmless");
    p.invariants();
}

#[test]
fn a_client_that_never_showed_anything_leaves_at_once() {
    let mut p: Presence<u32> = Presence::new();
    assert_eq!(p.connect(1, 10, 0), change(0, 0));
    assert!(p.is_active(1));
    assert!(!p.may_show_nonzero(1));
    assert_eq!(p.disconnect(1, 10), change(0, 0));
    assert!(p.release_if_quiet(1));
    p.invariants();
}

#[test]
fn changes_during_a_gather_go_with_it_in_order_and_ask_for_one_more() {
    let mut p: Presence<u32> = Presence::new();
    p.connect(1, 10, 3);
    assert!(p.queue_update(1));
    p.set(1, 10, 4);
    assert!(!p.queue_update(1), "one gather at a time");
    p.set(1, 10, 5);
    assert!(!p.queue_update(1));
    p.invariants();
    assert_eq!(
        p.finish_publish(1),
        (vec![3, 4, 5], true),
        "every value, in order"
    );
    p.invariants();
    assert_eq!(p.finish_publish(1), (vec![], false), "nothing new since");
    p.set(1, 10, 6);
    assert!(p.queue_update(1), "idle again");
    p.invariants();
}

/// The rules of section 5.2 written the plain way.
#[derive(Default)]
struct Model {
    clients: HashMap<u64, BTreeMap<u32, u8>>,
    /// Per user: a gather in flight, dirty, the value last sent.
    publish: HashMap<u64, (bool, bool, u8)>,
    /// Per user: the values not sent yet.
    queued: HashMap<u64, Vec<u8>>,
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
    /// The gather of the user's watchers completes.
    Finish(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (1u64..4, 0u32..4, any::<u8>()).prop_map(|(u, c, r)| Op::Connect(u, c, r)),
        3 => (1u64..4, 0u32..4, any::<u8>()).prop_map(|(u, c, r)| Op::Set(u, c, r)),
        1 => (1u64..4, 0u32..4).prop_map(|(u, c)| Op::Disconnect(u, c)),
        2 => (1u64..4).prop_map(Op::Finish),
    ]
}

proptest! {
    #[test]
    fn matches_the_reference_model(ops in prop::collection::vec(op(), 1..150)) {
        let mut p: Presence<u32> = Presence::new();
        let mut m = Model::default();
        for op in ops {
            // What the shard does after each event: publish a change,
            // forget a user with nothing left to tell.
            let mut changed = None;
            match op {
                Op::Connect(u, c, raw) => {
                    // A handle is one connection of one user, connected once.
                    if m.clients.values().any(|cs| cs.contains_key(&c)) { continue; }
                    let old = m.presence(u);
                    m.clients.entry(u).or_default().insert(c, 0);
                    m.apply(u, c, raw);
                    let ch = p.connect(u, c, raw);
                    prop_assert_eq!(ch, change(old, m.presence(u)));
                    changed = Some((u, ch));
                }
                Op::Set(u, c, raw) => {
                    if !m.clients.get(&u).is_some_and(|cs| cs.contains_key(&c)) { continue; }
                    let old = m.presence(u);
                    m.apply(u, c, raw);
                    let ch = p.set(u, c, raw);
                    prop_assert_eq!(ch, change(old, m.presence(u)));
                    changed = Some((u, ch));
                }
                Op::Disconnect(u, c) => {
                    let old = m.presence(u);
                    if let Some(cs) = m.clients.get_mut(&u) { cs.remove(&c); }
                    let ch = p.disconnect(u, c);
                    prop_assert_eq!(ch, change(old, m.presence(u)));
                    changed = Some((u, ch));
                }
                Op::Finish(u) => {
                    let now = m.presence(u);
                    let Some(st) = m.publish.get_mut(&u).filter(|s| s.0) else { continue; };
                    let again = std::mem::take(&mut st.1);
                    st.0 = again;
                    st.2 = now;
                    let queued = m.queued.remove(&u).unwrap_or_default();
                    prop_assert_eq!(p.finish_publish(u), (queued, again));
                }
            }
            if let Some((u, _)) = changed.filter(|(_, ch)| ch.changed()) {
                let now = m.presence(u);
                m.queued.entry(u).or_default().push(now);
                let st = m.publish.entry(u).or_default();
                let start = !st.0;
                if st.0 { st.1 = true } else { st.0 = true }
                prop_assert_eq!(p.queue_update(u), start);
            }
            for u in 1..4u64 {
                let quiet = m.clients.get(&u).is_none_or(|c| c.is_empty())
                    && m.publish.get(&u).is_none_or(|s| !s.0 && s.2 == 0);
                let active = p.is_active(u);
                prop_assert_eq!(p.release_if_quiet(u), quiet && active);
                if quiet {
                    m.publish.remove(&u);
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
                prop_assert_eq!(
                    p.may_show_nonzero(u),
                    m.presence(u) != 0 || m.publish.get(&u).is_some_and(|s| s.0 || s.2 != 0)
                );
            }
            let live = (1..4u64)
                .filter(|&u| {
                    m.clients.get(&u).is_some_and(|c| !c.is_empty()) || m.publish.contains_key(&u)
                })
                .count();
            prop_assert_eq!(p.user_count(), live);
        }
    }
}
