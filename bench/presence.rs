//! Presence, sans-IO, on `chatd::core::presence::Presence<u64>` and
//! `chatd::core::relations::ShardRelations` (what a shard keeps for the
//! users and rooms it is home to), as the server's update path uses them.
//!
//! - `presence_change/room/N`: one user in a room of 100 * N members of
//!   which N are active changes its presence (a user-set OP_SETPRES
//!   alternating 3 and 4, so every call is a change); its active watchers
//!   are gathered from the room, deduplicated and grouped by home shard (4
//!   shards) into fresh vectors, as the server's `publish` builds its
//!   `PresFanout` messages. Throughput is in watchers notified: the cost
//!   follows the active members, not the room's size.
//! - `login_storm/N`: N users with K = 100 contacts each (a symmetric ring:
//!   user u's contacts are u±1..=u±50) all log in, in order, with HELLO 3:
//!   `Presence::connect`, the user marked active, its active contacts
//!   gathered for the change's update, and its login dump built (each
//!   contact whose presence is not 0). Throughput is in logins; the
//!   teardown (every client disconnecting) is not timed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chatd::core::presence::Presence;
use chatd::core::relations::{ShardDelta, ShardRelations};
use chatd::shard::route::user_home;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Contacts per user in the login storm.
const K: u64 = 100;
/// Shards the watchers are grouped over.
const SHARDS: usize = 4;
/// Members per active member in `presence_change`.
const IDLE_PER_ACTIVE: u64 = 100;

/// Room 7 with `IDLE_PER_ACTIVE * n` members (users 1..), every
/// `IDLE_PER_ACTIVE`th of them active (user 1 among them, with a client).
fn room_with_active_members(n: u64) -> (Presence<u64>, ShardRelations) {
    let mut r = ShardRelations::new();
    let members = (1..=IDLE_PER_ACTIVE * n).map(|u| (u, 7)).collect();
    r.apply(
        1,
        &ShardDelta {
            members_added: members,
            ..ShardDelta::default()
        },
    );
    for u in (1..=IDLE_PER_ACTIVE * n).step_by(IDLE_PER_ACTIVE as usize) {
        r.set_active(u, true);
    }
    let mut p = Presence::new();
    p.connect(1, 1, 3);
    (p, r)
}

fn presence_change(c: &mut Criterion) {
    let mut g = c.benchmark_group("presence_change");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for n in [10u64, 100, 1_000, 10_000] {
        g.throughput(Throughput::Elements(n - 1));
        g.bench_with_input(BenchmarkId::new("room", n), &n, |b, &n| {
            let (mut p, r) = room_with_active_members(n);
            let mut v = 3u8;
            let mut watchers = Vec::new();
            b.iter(|| {
                v ^= 7; // 3 <-> 4: always a change
                let change = p.set(1, 1, v);
                assert!(change.changed() && p.queue_update(1));
                watchers.clear();
                r.room_watchers(1, &mut watchers);
                r.active_contacts(1, &mut watchers);
                watchers.sort_unstable();
                watchers.dedup();
                let (values, again) = p.finish_publish(1);
                assert!(!again);
                let mut by_shard: Vec<Vec<u64>> = vec![Vec::new(); SHARDS];
                for &w in &watchers {
                    by_shard[user_home(w, SHARDS)].push(w);
                }
                black_box((values, by_shard))
            });
        });
    }
    g.finish();
}

/// `n` users (1..=n), each with the K nearest users on a ring as contacts.
fn ring_of_contacts(n: u64) -> ShardRelations {
    let mut contacts = Vec::new();
    for u in 1..=n {
        for d in 1..=K / 2 {
            let v = (u - 1 + d) % n + 1;
            contacts.push((u, v));
            contacts.push((v, u));
        }
    }
    contacts.sort_unstable();
    contacts.dedup();
    let mut r = ShardRelations::new();
    r.apply(
        1,
        &ShardDelta {
            contacts_added: contacts,
            ..ShardDelta::default()
        },
    );
    r
}

/// Every user logs in once; returns (notices to watchers, dump entries).
fn storm(
    p: &mut Presence<u64>,
    r: &mut ShardRelations,
    n: u64,
    watchers: &mut Vec<u64>,
    dump: &mut Vec<(u64, u8)>,
) -> (u64, u64) {
    let (mut notices, mut entries) = (0u64, 0u64);
    for u in 1..=n {
        let change = p.connect(u, u, 3);
        r.set_active(u, true);
        if change.changed() && p.queue_update(u) {
            watchers.clear();
            r.room_watchers(u, watchers);
            r.active_contacts(u, watchers);
            let _ = p.finish_publish(u);
            notices += watchers.len() as u64;
        }
        dump.clear();
        for v in r.contacts_of(u) {
            let pv = p.presence(v);
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
            let mut r = ring_of_contacts(n);
            let mut p = Presence::new();
            let mut watchers = Vec::with_capacity(K as usize);
            let mut dump = Vec::with_capacity(K as usize);
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let (notices, entries) = storm(&mut p, &mut r, n, &mut watchers, &mut dump);
                    total += t.elapsed();
                    // User u's active contacts are those that logged in
                    // before it, and so is its dump: n * K / 2 in all.
                    assert_eq!(notices, n * K / 2);
                    assert_eq!(entries, n * K / 2);
                    for u in 1..=n {
                        p.disconnect(u, u);
                        p.queue_update(u);
                        p.finish_publish(u);
                        assert!(p.release_if_quiet(u));
                        r.set_active(u, false);
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
