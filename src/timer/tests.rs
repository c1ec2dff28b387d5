//! Timer wheel tests: scenarios first, then a model check against a
//! `BTreeMap` of deadlines.

use super::{TimerKey, TimerWheel};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn poll(w: &mut TimerWheel<u32>, now_ms: u64) -> Vec<u32> {
    let mut out = Vec::new();
    w.poll_expired(now_ms, &mut out);
    w.invariants();
    out.sort_unstable();
    out
}

#[test]
fn fires_at_its_deadline_and_not_before() {
    let mut w = TimerWheel::new(100, 16, 1_000);
    w.insert(1_250, 1);
    w.insert(1_300, 2);
    w.insert(1_100, 3);
    assert_eq!(poll(&mut w, 1_099), Vec::<u32>::new());
    assert_eq!(poll(&mut w, 1_100), vec![3]);
    assert_eq!(poll(&mut w, 1_249), Vec::<u32>::new());
    assert_eq!(poll(&mut w, 1_250), vec![1]);
    assert_eq!(poll(&mut w, 1_299), Vec::<u32>::new());
    assert_eq!(poll(&mut w, 5_000), vec![2]);
    assert!(w.is_empty());
    assert_eq!(w.next_deadline(), None);
}

#[test]
fn deadline_in_the_past_fires_at_next_poll() {
    let mut w = TimerWheel::new(100, 16, 1_000);
    assert_eq!(poll(&mut w, 2_000), Vec::<u32>::new());
    w.insert(500, 7);
    w.insert(2_000, 8);
    assert!(w.next_deadline().is_some_and(|d| d <= 2_000));
    assert_eq!(poll(&mut w, 2_000), vec![7, 8]);
}

#[test]
fn cancel_returns_the_value_once() {
    let mut w = TimerWheel::new(100, 16, 0);
    let a = w.insert(300, 1);
    let b = w.insert(300, 2);
    assert_eq!(w.len(), 2);
    assert_eq!(w.cancel(a), Some(1));
    assert_eq!(w.cancel(a), None);
    w.invariants();
    assert_eq!(poll(&mut w, 1_000), vec![2]);
    assert_eq!(w.cancel(b), None, "a fired timer's key is stale");
}

#[test]
fn stale_key_does_not_touch_the_entry_reusing_its_slot() {
    let mut w = TimerWheel::new(100, 16, 0);
    let old = w.insert(300, 1);
    assert_eq!(w.cancel(old), Some(1));
    let new = w.insert(400, 2);
    assert_ne!(old, new);
    assert_eq!(w.cancel(old), None);
    assert_eq!(w.len(), 1);
    assert_eq!(w.cancel(new), Some(2));
}

#[test]
fn forged_key_out_of_range_is_stale() {
    let mut w: TimerWheel<u32> = TimerWheel::new(100, 16, 0);
    let mut other = TimerWheel::new(100, 16, 0);
    for i in 0..10 {
        other.insert(10, i);
    }
    let k: TimerKey = other.insert(10, 99);
    assert_eq!(w.cancel(k), None);
}

#[test]
fn deadlines_beyond_one_revolution_wait_their_round() {
    // 8 slots of 100 ms: one revolution is 800 ms.
    let mut w = TimerWheel::new(100, 8, 0);
    w.insert(150, 1);
    w.insert(950, 2); // same slot, next revolution
    w.insert(2_550, 3); // same slot, three revolutions later
    let mut fired = Vec::new();
    let mut now = 0;
    while now <= 3_000 {
        for v in poll(&mut w, now) {
            fired.push((v, now));
        }
        now += 50;
    }
    assert_eq!(fired, vec![(1, 150), (2, 950), (3, 2_550)]);
}

#[test]
fn large_jump_fires_everything_due_exactly_once() {
    let mut w = TimerWheel::new(100, 8, 0);
    for i in 0..100u32 {
        w.insert(u64::from(i) * 137, i);
    }
    // Many revolutions past every deadline: each fires once.
    let all = poll(&mut w, 1_000_000);
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    assert_eq!(poll(&mut w, 2_000_000), Vec::<u32>::new());
}

#[test]
fn large_jump_keeps_entries_not_yet_due() {
    let mut w = TimerWheel::new(100, 8, 0);
    w.insert(10_000, 1);
    w.insert(10_050, 2);
    w.insert(50_000, 3);
    assert_eq!(poll(&mut w, 10_020), vec![1]);
    assert_eq!(poll(&mut w, 10_049), Vec::<u32>::new());
    assert_eq!(poll(&mut w, 10_050), vec![2]);
    assert_eq!(poll(&mut w, 49_999), Vec::<u32>::new());
    assert_eq!(poll(&mut w, 50_000), vec![3]);
}

#[test]
fn next_deadline_is_never_after_the_earliest_deadline() {
    let mut w = TimerWheel::new(100, 8, 0);
    assert_eq!(w.next_deadline(), None);
    w.insert(5_250, 1);
    let d = w.next_deadline().expect("non-empty");
    assert!(d <= 5_250);
    // Polling at each reported time makes progress and reaches the deadline.
    let mut now = 0;
    let mut steps = 0;
    loop {
        let next = w.next_deadline().expect("not fired yet");
        assert!(next > now || steps == 0, "next_deadline did not advance");
        now = next.max(now);
        steps += 1;
        if !poll(&mut w, now).is_empty() {
            break;
        }
    }
    assert_eq!(now, 5_250);
    assert!(
        steps <= 10,
        "one stop per revolution plus a couple: {steps}"
    );
}

#[test]
fn next_deadline_of_a_partial_tick_is_exact() {
    let mut w = TimerWheel::new(100, 8, 0);
    w.insert(130, 1);
    w.insert(170, 2);
    assert_eq!(poll(&mut w, 120), Vec::<u32>::new());
    assert_eq!(w.next_deadline(), Some(130));
    assert_eq!(poll(&mut w, 130), vec![1]);
    assert_eq!(w.next_deadline(), Some(170));
}

#[test]
fn slots_are_reused_without_growing() {
    let mut w = TimerWheel::new(100, 8, 0);
    for round in 0..1_000u64 {
        let k = w.insert(round * 10 + 5, 1);
        if round % 2 == 0 {
            assert_eq!(w.cancel(k), Some(1));
        } else {
            assert_eq!(poll(&mut w, round * 10 + 5), vec![1]);
        }
    }
    assert!(w.slab_len() <= 1);
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u64),
    Cancel(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..5_000).prop_map(Op::Insert),
        2 => any::<usize>().prop_map(Op::Cancel),
        3 => prop_oneof![0u64..150, 0u64..3_000, 0u64..50_000].prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// At every poll the wheel fires exactly the live entries whose deadline
    /// is <= now, like a sorted map would.
    #[test]
    fn matches_a_sorted_map(
        tick_ms in 1u64..200,
        slots in 1usize..70,
        start in 0u64..10_000,
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let mut w = TimerWheel::new(tick_ms, slots, start);
        let mut model: BTreeMap<(u64, u32), TimerKey> = BTreeMap::new();
        let mut keys: Vec<(TimerKey, u64, u32)> = Vec::new();
        let mut now = start;
        let mut next_id = 0u32;
        for op in ops {
            match op {
                Op::Insert(offset) => {
                    // Some deadlines in the past, most in the future.
                    let deadline = (now + offset).saturating_sub(500);
                    let k = w.insert(deadline, next_id);
                    model.insert((deadline, next_id), k);
                    keys.push((k, deadline, next_id));
                    next_id += 1;
                }
                Op::Cancel(i) => {
                    if keys.is_empty() { continue; }
                    let (k, deadline, id) = keys[i % keys.len()];
                    let expected = model.remove(&(deadline, id)).map(|_| id);
                    prop_assert_eq!(w.cancel(k), expected);
                }
                Op::Advance(by) => {
                    if let Some(d) = w.next_deadline() {
                        let earliest = model.keys().next().map(|&(d, _)| d);
                        prop_assert!(earliest.is_some_and(|e| d <= e));
                    } else {
                        prop_assert!(model.is_empty());
                    }
                    now += by;
                    let mut out = Vec::new();
                    w.poll_expired(now, &mut out);
                    out.sort_unstable();
                    let due: Vec<(u64, u32)> =
                        model.range(..=(now, u32::MAX)).map(|(&k, _)| k).collect();
                    let mut expected: Vec<u32> = due.iter().map(|&(_, id)| id).collect();
                    expected.sort_unstable();
                    for k in due { model.remove(&k); }
                    prop_assert_eq!(out, expected);
                }
            }
            w.invariants();
            prop_assert_eq!(w.len(), model.len());
        }
    }
}
