//! chatd in-call status against the real binary (protocol section 4.4),
//! each scenario on one shard and on two, in rooms homed on every shard.
//!
//! "No broadcast" is proven with a fence (see [`common::fence`]): a later
//! OP_RTMSG from a room member, or a later flag change, must be the next
//! thing each connection sees.

mod common;

use std::time::{Duration, Instant};

use chatd_proto::chatd::{self as cw, Request};
use common::{all_but, fence, rooms_on_every_shard, ChatdClient, Ev, Server};

const BAD_COMMAND: u8 = 1;
const NOT_JOINED: u8 = 5;

/// Each of `cs[who]` gets `OP_IN_CALL chat flag` next.
fn expect_flag(cs: &mut [ChatdClient], who: &[usize], chat: u64, flag: bool) {
    for &i in who {
        cs[i].expect(Ev::InCall(chat, flag));
    }
}

/// No connection in `cs` got anything since the last fence: a fence from
/// `a` reaches everyone else, then one from `b` reaches everyone else
/// (including `a`, which cannot see its own fence).
fn quiet(cs: &mut [ChatdClient], chat: u64, a: usize, b: usize, tag: &str) {
    let n = cs.len();
    fence(cs, chat, a, &all_but(n, a), &format!("{tag} (a)"));
    fence(cs, chat, b, &all_but(n, b), &format!("{tag} (b)"));
}

fn in_call_needs_a_joined_room_and_a_valid_status(shards: usize) {
    let server = Server::start(shards, &[]);
    for chat in rooms_on_every_shard(shards, 100) {
        server.add_member(chat, 1);
        let mut a = server.chatd(1);
        // Member but not joined, and not a member at all.
        a.in_call(chat, true);
        a.expect_error_open(NOT_JOINED, cw::OP_IN_CALL, chat);
        a.in_call(chat + 1, false);
        a.expect_error_open(NOT_JOINED, cw::OP_IN_CALL, chat + 1);
        // Joined, status 2: BAD_COMMAND, closed.
        assert!(!a.join(chat));
        let mut raw = Vec::new();
        cw::encode_request(
            &Request::InCall {
                chatid: chat,
                in_call: true,
            },
            &mut raw,
        );
        *raw.last_mut().expect("status byte") = 2;
        a.send_raw(&raw);
        a.expect_error_and_close(BAD_COMMAND, cw::OP_IN_CALL, chat);
    }
}

#[test]
fn in_call_needs_a_joined_room_and_a_valid_status_on_one_shard() {
    in_call_needs_a_joined_room_and_a_valid_status(1);
}

#[test]
fn in_call_needs_a_joined_room_and_a_valid_status_on_two_shards() {
    in_call_needs_a_joined_room_and_a_valid_status(2);
}

/// The call room: users 1, 2, 3 with two devices each (`cs[0..6]`: user 1
/// = 0,1; user 2 = 2,3; user 3 = 4,5) and an observer of user 4 (`cs[6]`)
/// that never takes part in the call.
fn call_room(server: &Server, chat: u64) -> Vec<ChatdClient> {
    for u in [1, 2, 3, 4] {
        server.add_member(chat, u);
    }
    let mut cs = Vec::new();
    for u in [1, 2, 3] {
        cs.extend(server.chatd_n(u, 2));
    }
    cs.push(server.chatd(4));
    for c in cs.iter_mut() {
        assert!(!c.join(chat));
    }
    cs
}

fn the_flag_follows_distinct_users_in_the_call(shards: usize) {
    // Long timeout: only explicit changes end participation here.
    let server = Server::start(shards, &["--call-timeout-ms", "60000"]);
    for chat in rooms_on_every_shard(shards, 200) {
        let mut cs = call_room(&server, chat);
        let everyone: Vec<usize> = (0..7).collect();

        // One user, then both its devices: not a call.
        cs[0].in_call(chat, true);
        cs[0].in_call(chat, true);
        cs[1].in_call(chat, true);
        quiet(&mut cs, chat, 0, 6, "one user");
        quiet(&mut cs, chat, 1, 6, "one user, two devices");

        // A second user: the flag goes to 1 for every joined connection.
        cs[2].in_call(chat, true);
        expect_flag(&mut cs, &everyone, chat, true);
        // A third user and repeated beats: no broadcast.
        cs[4].in_call(chat, true);
        cs[2].in_call(chat, true);
        quiet(&mut cs, chat, 4, 6, "third user");
        quiet(&mut cs, chat, 2, 6, "beat again");
        // A JOIN is answered with the current flag.
        let mut late = server.chatd(4);
        assert!(late.join(chat), "JOIN during a call answers flag 1");
        cs.push(late);
        let everyone: Vec<usize> = (0..8).collect();

        // Users leave with status 0: the flag drops when one user is left.
        cs[4].in_call(chat, false);
        cs[4].in_call(chat, false);
        quiet(&mut cs, chat, 4, 7, "third user left");
        cs[0].in_call(chat, false);
        quiet(&mut cs, chat, 0, 7, "user 1 still in the call on device 1");
        cs[2].in_call(chat, false);
        expect_flag(&mut cs, &everyone, chat, false);
        let mut again = server.chatd(4);
        assert!(!again.join(chat), "JOIN after the call answers flag 0");

        // Leaving the room drops the participant.
        cs[2].in_call(chat, true);
        expect_flag(&mut cs, &everyone, chat, true);
        cs[1].leave(chat);
        expect_flag(&mut cs, &all_but(8, 1), chat, false);
        assert!(!cs[1].join(chat));

        // Losing membership drops the participant.
        cs[1].in_call(chat, true);
        expect_flag(&mut cs, &everyone, chat, true);
        server.remove_member(chat, 2);
        cs[2].expect(Ev::Leave(chat));
        cs[3].expect(Ev::Leave(chat));
        let left: Vec<usize> = everyone
            .iter()
            .copied()
            .filter(|&i| i != 2 && i != 3)
            .collect();
        expect_flag(&mut cs, &left, chat, false);
        server.add_member(chat, 2);
        assert!(!cs[2].join(chat));
        assert!(!cs[3].join(chat));

        // Closing the connection drops the participant.
        cs[5].in_call(chat, true);
        expect_flag(&mut cs, &everyone, chat, true);
        drop(cs.remove(5));
        let rest: Vec<usize> = (0..7).collect();
        expect_flag(&mut cs, &rest, chat, false);
        // Nothing else came.
        quiet(&mut cs, chat, 0, 6, "after the disconnect");
    }
}

#[test]
fn the_flag_follows_distinct_users_in_the_call_on_one_shard() {
    the_flag_follows_distinct_users_in_the_call(1);
}

#[test]
fn the_flag_follows_distinct_users_in_the_call_on_two_shards() {
    the_flag_follows_distinct_users_in_the_call(2);
}

const TIMEOUT_MS: u64 = 1000;

fn a_silent_participant_times_out_within_the_call_timeout(shards: usize) {
    let timeout = TIMEOUT_MS.to_string();
    let server = Server::start(shards, &["--call-timeout-ms", &timeout]);
    for chat in rooms_on_every_shard(shards, 300) {
        for u in [1, 2, 3] {
            server.add_member(chat, u);
        }
        let mut cs = vec![server.chatd(1), server.chatd(2), server.chatd(3)];
        for c in cs.iter_mut() {
            assert!(!c.join(chat));
        }
        let started = Instant::now();
        cs[0].in_call(chat, true);
        cs[1].in_call(chat, true);
        expect_flag(&mut cs, &[0, 1, 2], chat, true);
        // Nobody beats again: the drop comes, and not early. (That it comes
        // within the timeout plus one timer tick is the room state
        // machine's, proven on virtual time in src/core/room/tests.rs; a
        // wall-clock upper bound here would measure the machine's load.)
        cs[2].expect(Ev::InCall(chat, false));
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(TIMEOUT_MS),
            "dropped early: {elapsed:?}"
        );
        expect_flag(&mut cs, &[0, 1], chat, false);
        assert_eq!(server.room(chat)["in_call"], false);
    }
}

#[test]
fn a_silent_participant_times_out_within_the_call_timeout_on_one_shard() {
    a_silent_participant_times_out_within_the_call_timeout(1);
}

#[test]
fn a_silent_participant_times_out_within_the_call_timeout_on_two_shards() {
    a_silent_participant_times_out_within_the_call_timeout(2);
}

fn heartbeats_keep_the_call(shards: usize) {
    // Beats every 75 ms against a 1.5 s timeout: a test thread held off
    // the CPU for over a second would still not miss one.
    const TIMEOUT_MS: u64 = 1500;
    let timeout = TIMEOUT_MS.to_string();
    let server = Server::start(shards, &["--call-timeout-ms", &timeout]);
    let chat = rooms_on_every_shard(shards, 400)[shards - 1];
    for u in [1, 2, 3] {
        server.add_member(chat, u);
    }
    let mut cs = vec![server.chatd(1), server.chatd(2), server.chatd(3)];
    for c in cs.iter_mut() {
        assert!(!c.join(chat));
    }
    cs[0].in_call(chat, true);
    cs[1].in_call(chat, true);
    expect_flag(&mut cs, &[0, 1, 2], chat, true);
    // Beat for twice the timeout.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2 * TIMEOUT_MS) {
        std::thread::sleep(Duration::from_millis(75)); // the heartbeat period
        cs[0].in_call(chat, true);
        cs[1].in_call(chat, true);
    }
    // The flag never dropped: a fence is the next thing everyone sees.
    quiet(&mut cs, chat, 0, 2, "still in the call");
    let live = server.room(chat);
    assert_eq!(live["in_call"], true);
    assert_eq!(live["call_users"], serde_json::json!(["1", "2"]));
    // Once the beats stop, the call ends.
    expect_flag(&mut cs, &[0, 1, 2], chat, false);
}

#[test]
fn heartbeats_keep_the_call_on_one_shard() {
    heartbeats_keep_the_call(1);
}

#[test]
fn heartbeats_keep_the_call_on_two_shards() {
    heartbeats_keep_the_call(2);
}

fn room_state_shows_the_call(shards: usize) {
    let server = Server::start(shards, &["--call-timeout-ms", "60000"]);
    for chat in rooms_on_every_shard(shards, 500) {
        // 9 < 10 as numbers, not as strings.
        for u in [10, 9, 100] {
            server.add_member(chat, u);
        }
        let mut cs = vec![server.chatd(10), server.chatd(9), server.chatd(10)];
        cs.push(server.chatd(100));
        for c in cs.iter_mut() {
            assert!(!c.join(chat));
        }
        cs[0].in_call(chat, true);
        cs[2].in_call(chat, true);
        quiet(&mut cs, chat, 0, 3, "one user");
        let live = server.room(chat);
        assert_eq!(live["in_call"], false);
        assert_eq!(live["call_users"], serde_json::json!(["10"]));

        cs[1].in_call(chat, true);
        expect_flag(&mut cs, &[0, 1, 2, 3], chat, true);
        let live = server.room(chat);
        assert_eq!(live["in_call"], true);
        assert_eq!(live["call_users"], serde_json::json!(["9", "10"]));
        assert_eq!(live["joined_clients"], 4);

        cs[0].in_call(chat, false);
        quiet(&mut cs, chat, 0, 3, "other device still in");
        assert_eq!(
            server.room(chat)["call_users"],
            serde_json::json!(["9", "10"])
        );
        cs[2].in_call(chat, false);
        expect_flag(&mut cs, &[0, 1, 2, 3], chat, false);
        let live = server.room(chat);
        assert_eq!(live["in_call"], false);
        assert_eq!(live["call_users"], serde_json::json!(["9"]));
    }
}

#[test]
fn room_state_shows_the_call_on_one_shard() {
    room_state_shows_the_call(1);
}

#[test]
fn room_state_shows_the_call_on_two_shards() {
    room_state_shows_the_call(2);
}
