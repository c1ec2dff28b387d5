//! PairSet against `BTreeSet<(u64, u64)>`: single operations, batches
//! and range reads, with ids at both ends of the range (0, 1 and
//! `u64::MAX` next to ordinary ones).

use super::{Pair, PairSet, CHUNK};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn seconds_of(set: &BTreeSet<Pair>, a: u64) -> Vec<u64> {
    set.range((a, 0)..=(a, u64::MAX)).map(|&(_, b)| b).collect()
}

#[test]
fn the_largest_id_is_an_ordinary_key() {
    let mut s = PairSet::new();
    assert!(s.insert((5, u64::MAX)));
    assert!(s.insert((u64::MAX, 5)));
    assert!(s.insert((u64::MAX, u64::MAX)));
    assert!(!s.insert((5, u64::MAX)));
    assert_eq!(s.seconds(5).collect::<Vec<_>>(), [u64::MAX]);
    assert_eq!(s.seconds(u64::MAX).collect::<Vec<_>>(), [5, u64::MAX]);
    assert!(s.remove((5, u64::MAX)));
    assert_eq!(s.seconds(5).count(), 0);
    s.invariants();
}

#[test]
fn a_bulk_built_set_costs_sixteen_bytes_a_pair() {
    let n = 100 * CHUNK as u64;
    let s = PairSet::from_unsorted((0..n).map(|i| (i / 3, i)).collect());
    assert_eq!(s.len() as u64, n);
    let per_pair = s.heap_bytes() as f64 / n as f64;
    assert!(per_pair < 16.5, "{per_pair} bytes a pair");
    s.invariants();
}

#[test]
fn pairs_pushed_in_order_fill_chunks_without_a_copy() {
    // The last chunk is allocated whole: 100 chunks and a bit.
    let n = 100 * CHUNK as u64 + 7;
    let mut s = PairSet::new();
    for i in 0..n {
        assert!(s.push_sorted((i / 5, i)));
    }
    let per_pair = s.heap_bytes() as f64 / n as f64;
    assert!(per_pair < 16.5, "{per_pair} bytes a pair");
    assert!(!s.push_sorted((0, 0)), "already there");
    assert!(s.push_sorted((0, u64::MAX)), "out of order: inserted");
    assert_eq!(s.len() as u64, n + 1);
    s.invariants();
}

#[test]
fn a_batch_into_a_large_set_keeps_chunks_packed() {
    let mut s = PairSet::from_unsorted((0..50_000u64).map(|i| (7, i * 2)).collect());
    let add: Vec<Pair> = (0..50_000u64).map(|i| (7, i * 2 + 1)).collect();
    s.apply_sorted(&add, &[]);
    assert_eq!(s.len(), 100_000);
    assert!(s.heap_bytes() < 100_000 * 17, "{}", s.heap_bytes());
    let remove: Vec<Pair> = (0..100_000u64).map(|i| (7, i)).collect();
    s.apply_sorted(&[], &remove);
    assert!(s.is_empty());
    s.invariants();
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Pair),
    Remove(Pair),
    Batch(Vec<Pair>, Vec<Pair>),
}

/// Ids bunched near 0 and near `u64::MAX`, so that collisions, range
/// ends and the largest id all come up.
fn id() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..6, (0u64..6).prop_map(|d| u64::MAX - d), 0u64..3000]
}

fn pair() -> impl Strategy<Value = Pair> {
    (id(), id())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => pair().prop_map(Op::Insert),
        2 => pair().prop_map(Op::Remove),
        1 => (
            prop::collection::vec(pair(), 0..2500),
            prop::collection::vec(pair(), 0..300)
        )
            .prop_map(|(a, r)| Op::Batch(a, r)),
    ]
}

proptest! {
    // Batches past a chunk's size make each case big: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn matches_a_btreeset(ops in prop::collection::vec(op(), 1..30)) {
        let mut s = PairSet::new();
        let mut want = BTreeSet::new();
        for op in ops {
            match op {
                Op::Insert(k) => prop_assert_eq!(s.insert(k), want.insert(k)),
                Op::Remove(k) => prop_assert_eq!(s.remove(k), want.remove(&k)),
                Op::Batch(add, remove) => {
                    let remove: BTreeSet<Pair> = remove.into_iter().collect();
                    let add: BTreeSet<Pair> =
                        add.into_iter().filter(|k| !remove.contains(k)).collect();
                    let add: Vec<Pair> = add.into_iter().collect();
                    let remove: Vec<Pair> = remove.into_iter().collect();
                    s.apply_sorted(&add, &remove);
                    for k in &remove {
                        want.remove(k);
                    }
                    want.extend(add);
                }
            }
            s.invariants();
            prop_assert_eq!(s.len(), want.len());
        }
        prop_assert!(s.iter().eq(want.iter().copied()));
        for a in [0, 1, 2, 5, 2999, u64::MAX - 1, u64::MAX] {
            prop_assert_eq!(s.seconds(a).collect::<Vec<_>>(), seconds_of(&want, a));
            for b in [0, 1, u64::MAX] {
                prop_assert_eq!(s.contains((a, b)), want.contains(&(a, b)));
            }
        }
    }
}
