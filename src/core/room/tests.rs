//! Room and call scenarios, then random operation sequences checked against
//! the invariants and against the flag the outputs announced.

use super::{NotJoined, RoomOutput, Rooms};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::ops::{Deref, DerefMut};

type Out = Vec<RoomOutput<u32>>;

const CHAT: u64 = 7;
const TIMEOUT_MS: u64 = 10_000;

/// Rooms, plus the memberships the shard's relation index would hold and
/// ask about (as the shard does: it checks membership before a join and
/// reports lost memberships).
struct Fx {
    rooms: Rooms<u32>,
    members: HashSet<(u64, u64)>,
}

impl Deref for Fx {
    type Target = Rooms<u32>;
    fn deref(&self) -> &Rooms<u32> {
        &self.rooms
    }
}

impl DerefMut for Fx {
    fn deref_mut(&mut self) -> &mut Rooms<u32> {
        &mut self.rooms
    }
}

impl Fx {
    fn new() -> Fx {
        Fx {
            rooms: Rooms::new(TIMEOUT_MS, 0),
            members: HashSet::new(),
        }
    }

    fn add_member(&mut self, chat: u64, user: u64) {
        self.members.insert((chat, user));
    }

    fn is_member(&self, chat: u64, user: u64) -> bool {
        self.members.contains(&(chat, user))
    }

    fn remove_member(&mut self, chat: u64, user: u64, out: &mut Out) {
        self.members.remove(&(chat, user));
        self.rooms.remove_member(chat, user, out);
    }

    fn join(&mut self, chat: u64, conn: u32, user: u64, client: u32, out: &mut Out) {
        let member = self.is_member(chat, user);
        self.rooms.join(chat, conn, user, client, member, out);
    }

    fn delete_room(&mut self, chat: u64, out: &mut Out) {
        self.members.retain(|&(c, _)| c != chat);
        self.rooms.delete_room(chat, out);
    }
}

fn rooms_with(members: &[u64]) -> Fx {
    let mut r = Fx::new();
    for &u in members {
        r.add_member(CHAT, u);
    }
    r
}

/// Joins `conn` (client id = conn) for `user` and checks the answer.
fn join(r: &mut Fx, conn: u32, user: u64) {
    let mut out = Out::new();
    r.join(CHAT, conn, user, conn, &mut out);
    assert!(matches!(out[..], [RoomOutput::Joined { conn: c, chat: CHAT, .. }] if c == conn));
    r.invariants();
}

fn beat(r: &mut Fx, conn: u32, on: bool, now_ms: u64) -> Out {
    let mut out = Out::new();
    r.in_call(CHAT, conn, on, now_ms, &mut out).expect("joined");
    r.invariants();
    out
}

fn flag(on: bool) -> RoomOutput<u32> {
    RoomOutput::FlagChanged {
        chat: CHAT,
        in_call: on,
    }
}

/// `conn` left [`CHAT`].
fn left(conn: u32) -> RoomOutput<u32> {
    RoomOutput::Left { conn, chat: CHAT }
}

/// `conn` may not join [`CHAT`].
fn not_member(conn: u32) -> RoomOutput<u32> {
    RoomOutput::NotMember { conn, chat: CHAT }
}

fn recipients(r: &Fx, sender: u32, user: u64, client: u32) -> Result<Vec<u32>, NotJoined> {
    let mut out = Vec::new();
    r.recipients(CHAT, sender, user, client, &mut out)?;
    out.sort_unstable();
    Ok(out)
}

#[test]
fn a_non_member_cannot_join() {
    let mut r = rooms_with(&[1]);
    let mut out = Out::new();
    r.join(CHAT, 9, 2, 9, &mut out);
    r.join(99, 9, 1, 9, &mut out);
    assert_eq!(
        out,
        vec![not_member(9), RoomOutput::NotMember { conn: 9, chat: 99 }]
    );
    assert_eq!(r.joined(CHAT).count(), 0);
    assert_eq!(r.room_count(), 0, "a failed join creates no room");
}

#[test]
fn joining_twice_answers_twice_without_a_duplicate() {
    let mut r = rooms_with(&[1]);
    join(&mut r, 10, 1);
    join(&mut r, 10, 1);
    assert_eq!(r.joined(CHAT).collect::<Vec<_>>(), vec![10]);
    assert_eq!(r.live(CHAT).joined_clients, 1);
}

#[test]
fn leaving_a_room_not_joined_is_answered_left() {
    let mut r = rooms_with(&[1]);
    let mut out = Out::new();
    r.leave(CHAT, 10, &mut out);
    r.leave(12345, 10, &mut out);
    assert_eq!(
        out,
        vec![
            left(10),
            RoomOutput::Left {
                conn: 10,
                chat: 12345
            }
        ]
    );
    r.invariants();
}

#[test]
fn two_devices_of_one_user_are_not_a_call() {
    let mut r = rooms_with(&[1, 2]);
    join(&mut r, 10, 1);
    join(&mut r, 11, 1);
    join(&mut r, 20, 2);
    assert_eq!(beat(&mut r, 10, true, 0), vec![]);
    assert_eq!(beat(&mut r, 11, true, 0), vec![]);
    assert!(!r.live(CHAT).in_call);
    assert_eq!(beat(&mut r, 20, true, 0), vec![flag(true)]);
    assert_eq!(r.rooms_in_call(), 1);
    // A device of a user still in the call leaving changes nothing.
    assert_eq!(beat(&mut r, 10, false, 1), vec![]);
    assert_eq!(r.live(CHAT).call_users, vec![1, 2]);
    assert_eq!(beat(&mut r, 11, false, 1), vec![flag(false)]);
    assert_eq!(r.rooms_in_call(), 0);
}

#[test]
fn a_join_reports_the_current_flag() {
    let mut r = rooms_with(&[1, 2, 3]);
    join(&mut r, 10, 1);
    join(&mut r, 20, 2);
    beat(&mut r, 10, true, 0);
    beat(&mut r, 20, true, 0);
    let mut out = Out::new();
    r.join(CHAT, 30, 3, 30, &mut out);
    assert_eq!(
        out,
        vec![RoomOutput::Joined {
            conn: 30,
            chat: CHAT,
            in_call: true
        }]
    );
}

#[test]
fn heartbeats_keep_a_participant_and_silence_drops_it_in_time() {
    let mut r = rooms_with(&[1, 2]);
    join(&mut r, 10, 1);
    join(&mut r, 20, 2);
    beat(&mut r, 10, true, 0);
    assert_eq!(beat(&mut r, 20, true, 0), vec![flag(true)]);
    // User 1 beats every 3 s for a minute, user 2 stops after 4 s.
    let mut now = 0;
    let mut dropped_at = None;
    let mut out = Out::new();
    while now <= 60_000 {
        if now % 3_000 == 0 {
            let before = (r.timers.len(), r.next_deadline());
            assert_eq!(beat(&mut r, 10, true, now), vec![]);
            assert_eq!(
                (r.timers.len(), r.next_deadline()),
                before,
                "a beat touches no timer"
            );
        }
        if now == 4_000 {
            beat(&mut r, 20, true, now);
        }
        r.poll_timeouts(now, &mut out);
        r.invariants();
        if !out.is_empty() {
            assert_eq!(out, vec![flag(false)]);
            assert!(dropped_at.is_none());
            dropped_at = Some(now);
            out.clear();
        }
        now += 100;
    }
    let dropped_at = dropped_at.expect("user 2 timed out");
    assert!((4_000 + TIMEOUT_MS..=4_000 + TIMEOUT_MS + 1_000).contains(&dropped_at));
    assert_eq!(r.live(CHAT).call_users, vec![1]);
}

#[test]
fn a_lone_participant_times_out_exactly_once() {
    let mut r = rooms_with(&[1]);
    join(&mut r, 10, 1);
    beat(&mut r, 10, true, 500);
    let mut out = Out::new();
    // Stamped 500 (some time in [500, 501)): surely silent for the whole
    // timeout only from 10_501.
    r.poll_timeouts(10_500, &mut out);
    assert_eq!(r.live(CHAT).call_users, vec![1]);
    r.poll_timeouts(10_501, &mut out);
    assert_eq!(r.live(CHAT).call_users, Vec::<u64>::new());
    assert_eq!(out, vec![], "the flag was 0 and stays 0");
    assert_eq!(r.next_deadline(), None);
    r.invariants();
}

#[test]
fn losing_membership_kicks_every_device_of_that_user() {
    let mut r = rooms_with(&[1, 2]);
    join(&mut r, 10, 1);
    join(&mut r, 11, 1);
    join(&mut r, 20, 2);
    beat(&mut r, 10, true, 0);
    beat(&mut r, 20, true, 0);
    let mut out = Out::new();
    r.remove_member(CHAT, 1, &mut out);
    r.invariants();
    out.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(out, vec![flag(false), left(10), left(11)]);
    assert!(!r.is_member(CHAT, 1));
    assert_eq!(r.joined(CHAT).collect::<Vec<_>>(), vec![20]);
    let mut out = Out::new();
    r.join(CHAT, 10, 1, 10, &mut out);
    assert_eq!(out, vec![not_member(10)]);
}

#[test]
fn a_closed_connection_leaves_silently() {
    let mut r = rooms_with(&[1, 2]);
    r.add_member(8, 1);
    join(&mut r, 10, 1);
    join(&mut r, 20, 2);
    let mut out = Out::new();
    r.join(8, 10, 1, 10, &mut out);
    beat(&mut r, 10, true, 0);
    beat(&mut r, 20, true, 0);
    let mut out = Out::new();
    r.disconnect(10, &[CHAT, 8], &mut out);
    assert_eq!(out, vec![flag(false)]);
    assert_eq!(r.joined(8).count(), 0);
    assert_eq!(r.joined(CHAT).collect::<Vec<_>>(), vec![20]);
    r.invariants();
}

#[test]
fn deleting_a_room_sends_left_to_everyone_and_frees_it() {
    let mut r = rooms_with(&[1, 2]);
    join(&mut r, 10, 1);
    join(&mut r, 20, 2);
    beat(&mut r, 10, true, 0);
    beat(&mut r, 20, true, 0);
    let mut out = Out::new();
    r.delete_room(CHAT, &mut out);
    out.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(out, vec![flag(false), left(10), left(20)]);
    assert_eq!(r.room_count(), 0);
    assert_eq!(r.rooms_in_call(), 0);
    assert_eq!(r.next_deadline(), None);
    r.invariants();
}

#[test]
fn rooms_without_members_or_connections_are_freed() {
    let mut r = rooms_with(&[1, 2]);
    join(&mut r, 10, 1);
    let mut out = Out::new();
    r.remove_member(CHAT, 2, &mut out);
    assert_eq!(r.room_count(), 1);
    r.remove_member(CHAT, 1, &mut out);
    assert_eq!(out, vec![left(10)]);
    assert_eq!(r.room_count(), 0);
    r.invariants();
}

#[test]
fn rtmsg_addressing_follows_the_table() {
    let mut r = rooms_with(&[1, 2, 3]);
    join(&mut r, 10, 1);
    join(&mut r, 11, 1);
    join(&mut r, 20, 2);
    join(&mut r, 21, 2);
    // Everybody but the sender, its own other device included.
    assert_eq!(recipients(&r, 10, 0, 0), Ok(vec![11, 20, 21]));
    // Every device of user 2; of user 1 (the sender's user): not the sender.
    assert_eq!(recipients(&r, 10, 2, 0), Ok(vec![20, 21]));
    assert_eq!(recipients(&r, 10, 1, 0), Ok(vec![11]));
    // One client, only if it belongs to that user.
    assert_eq!(recipients(&r, 10, 2, 21), Ok(vec![21]));
    assert_eq!(recipients(&r, 10, 1, 21), Ok(vec![]));
    assert_eq!(recipients(&r, 10, 1, 10), Ok(vec![]), "never to the sender");
    // Absent recipients are not an error.
    assert_eq!(recipients(&r, 10, 3, 0), Ok(vec![]));
    assert_eq!(recipients(&r, 10, 99, 0), Ok(vec![]));
}

#[test]
fn the_sender_must_have_joined() {
    let mut r = rooms_with(&[1]);
    assert_eq!(recipients(&r, 10, 0, 0), Err(NotJoined));
    assert_eq!(
        r.in_call(CHAT, 10, true, 0, &mut Out::new()),
        Err(NotJoined)
    );
    assert_eq!(r.in_call(99, 10, true, 0, &mut Out::new()), Err(NotJoined));
    join(&mut r, 10, 1);
    let mut out = Out::new();
    r.leave(CHAT, 10, &mut out);
    assert_eq!(recipients(&r, 10, 0, 0), Err(NotJoined));
}

#[test]
fn leaving_the_room_leaves_the_call() {
    let mut r = rooms_with(&[1, 2]);
    join(&mut r, 10, 1);
    join(&mut r, 20, 2);
    beat(&mut r, 10, true, 0);
    beat(&mut r, 20, true, 0);
    let mut out = Out::new();
    r.leave(CHAT, 20, &mut out);
    assert_eq!(out, vec![left(20), flag(false)]);
    assert_eq!(r.timers.len(), 1);
    r.invariants();
}

#[derive(Debug, Clone)]
enum Op {
    Add(u64, u64),
    Remove(u64, u64),
    Join(u64, u32),
    Leave(u64, u32),
    Disconnect(u32),
    InCall(u64, u32, bool),
    Advance(u64),
    Delete(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let chat = 1u64..4;
    let user = 1u64..4;
    let conn = 0u32..8;
    prop_oneof![
        3 => (chat.clone(), user).prop_map(|(c, u)| Op::Add(c, u)),
        1 => (chat.clone(), 1u64..4).prop_map(|(c, u)| Op::Remove(c, u)),
        4 => (chat.clone(), conn.clone()).prop_map(|(c, k)| Op::Join(c, k)),
        1 => (chat.clone(), conn.clone()).prop_map(|(c, k)| Op::Leave(c, k)),
        1 => conn.clone().prop_map(Op::Disconnect),
        5 => (chat.clone(), conn, any::<bool>()).prop_map(|(c, k, b)| Op::InCall(c, k, b)),
        3 => (0u64..6_000).prop_map(Op::Advance),
        1 => chat.prop_map(Op::Delete),
    ]
}

proptest! {
    /// Whatever happens, the invariants hold and the flag a client last
    /// heard (from `Joined` or `FlagChanged`) is the room's flag.
    #[test]
    fn random_operations_keep_invariants_and_announced_flags(
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut r = Fx::new();
        // Connection k belongs to user k % 3 + 1 and has client id k + 1.
        let user_of = |k: u32| u64::from(k % 3) + 1;
        let mut heard: HashMap<(u64, u32), bool> = HashMap::new();
        let mut now = 0;
        let mut out = Out::new();
        for op in ops {
            out.clear();
            match op {
                Op::Add(c, u) => r.add_member(c, u),
                Op::Remove(c, u) => r.remove_member(c, u, &mut out),
                Op::Join(c, k) => r.join(c, k, user_of(k), k + 1, &mut out),
                Op::Leave(c, k) => r.leave(c, k, &mut out),
                Op::Disconnect(k) => {
                    let hint: Vec<u64> = (1..4).filter(|&c| r.joined(c).any(|j| j == k)).collect();
                    r.disconnect(k, &hint, &mut out);
                    heard.retain(|&(_, conn), _| conn != k);
                }
                Op::InCall(c, k, b) => {
                    let joined = r.joined(c).any(|j| j == k);
                    prop_assert_eq!(r.in_call(c, k, b, now, &mut out).is_ok(), joined);
                }
                Op::Advance(by) => {
                    now += by;
                    r.poll_timeouts(now, &mut out);
                }
                Op::Delete(c) => r.delete_room(c, &mut out),
            }
            for o in &out {
                match *o {
                    RoomOutput::Joined { conn, chat, in_call } => { heard.insert((chat, conn), in_call); }
                    RoomOutput::Left { conn, chat } => { heard.remove(&(chat, conn)); }
                    RoomOutput::FlagChanged { chat, in_call } => {
                        for conn in r.joined(chat) {
                            heard.insert((chat, conn), in_call);
                        }
                    }
                    RoomOutput::NotMember { .. } => {}
                }
            }
            r.invariants();
            for c in 1..4 {
                let live = r.live(c);
                prop_assert_eq!(live.joined_clients as usize, r.joined(c).count());
                for conn in r.joined(c) {
                    prop_assert_eq!(heard.get(&(c, conn)).copied(), Some(live.in_call));
                }
            }
        }
    }
}

#[test]
fn remote_nodes_lists_each_interested_node_once_until_it_leaves() {
    let mut r = Fx::new();
    let mut out = Vec::new();
    // Single-node mode keeps nothing.
    assert!(!r.set_remote_interest(7, 2, true, &mut out));
    assert!(r.remote_nodes(7).is_empty());
    r.enable_cluster();
    assert!(r.remote_nodes(7).is_empty());
    assert!(r.set_remote_interest(7, 2, true, &mut out));
    assert!(
        !r.set_remote_interest(7, 2, true, &mut out),
        "not news twice"
    );
    assert!(r.set_remote_interest(7, 5, true, &mut out));
    assert_eq!(r.remote_nodes(7), &[2, 5]);
    assert!(r.remote_nodes(8).is_empty(), "another room");
    r.set_remote_interest(7, 2, false, &mut out);
    assert_eq!(r.remote_nodes(7), &[5]);
    r.set_remote_interest(7, 5, false, &mut out);
    assert!(r.remote_nodes(7).is_empty());
}
