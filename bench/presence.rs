//! Presence, sans-IO, on `chatd::core::presence::Presence<u64>` (what a
//! shard keeps for the users it is home to).
//!
//! - `presence_change/iterate/N`: one user with N watchers changes its
//!   presence (a user-set OP_SETPRES alternating 3 and 4, so every call is
//!   a change) and the watchers are iterated once, as `publish` does.
//! - `presence_change/by_shard/N`: the same, but the watchers are grouped
//!   by home shard (4 shards) into fresh vectors, as the server's `publish`
//!   builds its `PresFanout` messages.
//!   Throughput is in watchers notified.
//! - `login_storm/N`: N users with K = 100 contacts each (a symmetric ring:
//!   user u's contacts are u±1..=u±50) all log in, in order, with HELLO 3:
//!   `Presence::connect`, then the watchers iterated for the change
//!   broadcast and again to build the login dump (each watcher that may be
//!   seen and is not offline goes into the dump list). Throughput is in
//!   logins; the teardown (every client disconnecting) is not timed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chatd::core::presence::Presence;
use chatd::shard::route::user_home;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Contacts per user in the login storm.
const K: u64 = 100;
/// Shards the `by_shard` variant groups watchers over.
const SHARDS: usize = 4;

/// User 1 with one client (conn 1, presence 3) and `n` watchers.
fn one_user_with_watchers(n: u64) -> Presence<u64> {
    let mut p = Presence::new();
    p.connect(1, 1, 3);
    for w in 2..n + 2 {
        p.visibility(1, w, 1);
    }
    p
}

fn presence_change(c: &mut Criterion) {
    let mut g = c.benchmark_group("presence_change");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for n in [10u64, 100, 1_000, 10_000] {
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::new("iterate", n), &n, |b, &n| {
            let mut p = one_user_with_watchers(n);
            let mut v = 3u8;
            b.iter(|| {
                v ^= 7; // 3 <-> 4: always a change
                let change = p.set(1, 1, v);
                assert!(change.changed());
                let mut sum = 0u64;
                for w in p.watchers(1) {
                    sum = sum.wrapping_add(w);
                }
                black_box(sum)
            });
        });
        g.bench_with_input(BenchmarkId::new("by_shard", n), &n, |b, &n| {
            let mut p = one_user_with_watchers(n);
            let mut v = 3u8;
            b.iter(|| {
                v ^= 7;
                let change = p.set(1, 1, v);
                assert!(change.changed());
                let mut by_shard: Vec<Vec<u64>> = vec![Vec::new(); SHARDS];
                for w in p.watchers(1) {
                    by_shard[user_home(w, SHARDS)].push(w);
                }
                black_box(by_shard)
            });
        });
    }
    g.finish();
}

/// `n` users (1..=n), each with the K nearest users on a ring as contacts.
fn ring_of_contacts(n: u64) -> Presence<u64> {
    let mut p = Presence::new();
    for u in 1..=n {
        for d in 1..=K / 2 {
            let v = (u - 1 + d) % n + 1;
            p.visibility(u, v, 1);
            p.visibility(v, u, 1);
        }
    }
    p
}

/// Every user logs in once; returns (notices to watchers, dump entries).
fn storm(p: &mut Presence<u64>, n: u64, dump: &mut Vec<(u64, u8)>) -> (u64, u64) {
    let (mut notices, mut entries) = (0u64, 0u64);
    for u in 1..=n {
        let change = p.connect(u, u, 3);
        if change.changed() {
            notices += p.watchers(u).count() as u64;
        }
        dump.clear();
        for v in p.watchers(u) {
            let pv = p.visible_presence(v, u);
            if pv != 0 {
                dump.push((v, pv));
            }
        }
        entries += dump.len() as u64;
        black_box(&dump);
    }
    (notices, entries)
}

fn login_storm(c: &mut Criterion) {
    let mut g = c.benchmark_group("login_storm");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(5));
    for n in [1_000u64, 10_000] {
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let mut p = ring_of_contacts(n);
            let mut dump = Vec::with_capacity(K as usize);
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let (notices, entries) = storm(&mut p, n, &mut dump);
                    total += t.elapsed();
                    // Every user has K watchers; user u's dump holds the
                    // contacts that logged in before it (K/2 each, the first
                    // K/2 users fewer because of the ring's wrap-around).
                    assert_eq!(notices, n * K);
                    black_box(entries);
                    for u in 1..=n {
                        p.disconnect(u, u);
                    }
                }
                total
            });
        });
    }
    g.finish();
}

criterion_group!(benches, presence_change, login_storm);
criterion_main!(benches);
