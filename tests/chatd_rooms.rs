//! chatd rooms and real-time messages against the real binary (protocol
//! sections 4.2 and 4.3, errors from section 3), each scenario on one shard
//! and on two, in rooms homed on every shard.
//!
//! "X receives nothing" is proven with a fence (see [`common::fence`]),
//! never with a sleep.

mod common;

use std::io::Write;
use std::net::TcpStream;

use chatd_proto::chatd::{self as cw, Request};
use common::{all_but, fence, rooms_on_every_shard, wait_until, ChatdClient, Ev, Server};

const NOT_MEMBER: u8 = 4;
const NOT_JOINED: u8 = 5;
const TOO_LARGE: u8 = 6;
const BAD_ADDRESS: u8 = 7;
const SLOW_CONSUMER: u8 = 8;

/// Deterministic, non-repeating test payload of `len` bytes.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Encodes one command.
fn encode(req: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    cw::encode_request(req, &mut out);
    out
}

// ---- JOIN / LEAVE / membership ---------------------------------------

fn join_and_leave_are_answered(shards: usize) {
    let server = Server::start(shards, &[]);
    for chat in rooms_on_every_shard(shards, 100) {
        server.add_member(chat, 1);
        let other_room = chat + 1_000_000;
        server.add_member(other_room, 2);
        let mut a = server.chatd(1);

        assert!(!a.join(chat), "one member: no call");
        assert!(!a.join(chat), "a second JOIN is answered the same way");

        // Not a member: of a room with other members, and of a room with none.
        a.send(&Request::Join { chatid: other_room });
        a.expect_error_open(NOT_MEMBER, cw::OP_JOIN, other_room);
        a.send(&Request::Join {
            chatid: 999_999_999,
        });
        a.expect_error_open(NOT_MEMBER, cw::OP_JOIN, 999_999_999);

        // LEAVE is answered, joined or not; after leaving the connection is
        // no longer in the room.
        a.leave(chat);
        a.leave(chat);
        a.leave(other_room);
        a.rtmsg(chat, 0, 0, 1, b"after leave");
        a.expect_error_open(NOT_JOINED, cw::OP_RTMSG, chat);
        assert!(!a.join(chat), "a member can join again after leaving");
        let live = server.room(chat);
        assert_eq!(live["joined_clients"], 1);
    }
}

#[test]
fn join_and_leave_are_answered_on_one_shard() {
    join_and_leave_are_answered(1);
}

#[test]
fn join_and_leave_are_answered_on_two_shards() {
    join_and_leave_are_answered(2);
}

fn losing_membership_leaves_every_connection_of_that_user(shards: usize) {
    let server = Server::start(shards, &[]);
    let rooms = rooms_on_every_shard(shards, 200);
    let (chat, keep) = (rooms[0], rooms[rooms.len() - 1] + 1_000);
    for r in [chat, keep] {
        for u in [1, 2, 3] {
            server.add_member(r, u);
        }
    }
    // cs[0..4]: user 1 (spread over the shards); cs[4]: user 2; cs[5]: user 3.
    let mut cs = server.chatd_n(1, 4);
    cs.push(server.chatd(2));
    cs.push(server.chatd(3));
    for c in cs.iter_mut() {
        assert!(!c.join(chat));
        assert!(!c.join(keep));
    }

    server.remove_member(chat, 1);
    for c in cs[0..4].iter_mut() {
        c.expect(Ev::Leave(chat));
        c.rtmsg(chat, 0, 0, 1, b"no longer a member");
        c.expect_error_open(NOT_JOINED, cw::OP_RTMSG, chat);
        c.send(&Request::Join { chatid: chat });
        c.expect_error_open(NOT_MEMBER, cw::OP_JOIN, chat);
    }
    // Users 2 and 3 got no OP_LEAVE and none of user 1's refused messages.
    fence(&mut cs, chat, 5, &[4], "after removal (3)");
    fence(&mut cs, chat, 4, &[5], "after removal (2)");
    assert_eq!(server.room(chat)["joined_clients"], 2);

    // User 1's connections are still in the other room.
    fence(&mut cs, keep, 0, &all_but(6, 0), "still in the other room");

    // Deleting a room sends OP_LEAVE to everyone joined.
    server.admin_ok("DELETE", &format!("/v1/rooms/{keep}"), None, 204);
    for c in cs.iter_mut() {
        c.expect(Ev::Leave(keep));
        c.rtmsg(keep, 0, 0, 1, b"deleted");
        c.expect_error_open(NOT_JOINED, cw::OP_RTMSG, keep);
    }
    let (status, _) = server.http("GET", &format!("/v1/rooms/{keep}"), None, true);
    assert_eq!(status, 404, "a deleted room has no members");
}

#[test]
fn losing_membership_leaves_every_connection_of_that_user_on_one_shard() {
    losing_membership_leaves_every_connection_of_that_user(1);
}

#[test]
fn losing_membership_leaves_every_connection_of_that_user_on_two_shards() {
    losing_membership_leaves_every_connection_of_that_user(2);
}

// ---- Addressing ------------------------------------------------------

/// Room of three users with two joined devices each (`cs[0..6]`: user 1 =
/// 0,1; user 2 = 2,3; user 3 = 4,5) and one more device of user 2 (`cs[6]`)
/// that is a member's connection but not joined.
fn addressing_room(server: &Server, chat: u64) -> Vec<ChatdClient> {
    for u in [1, 2, 3] {
        server.add_member(chat, u);
    }
    let mut cs = Vec::new();
    for u in [1, 2, 3] {
        cs.extend(server.chatd_n(u, 2));
    }
    for c in cs.iter_mut() {
        assert!(!c.join(chat));
    }
    cs.push(server.chatd(2));
    cs
}

/// `cs[sender]` sends one message; exactly `want` (indexes into the six
/// joined connections) receive it, byte for byte; then a fence from the
/// sender proves every other joined connection got nothing.
#[allow(clippy::too_many_arguments)]
fn deliver_case(
    cs: &mut [ChatdClient],
    chat: u64,
    sender: usize,
    to: (u64, u32),
    msgtype: u8,
    data: &[u8],
    want: &[usize],
    tag: &str,
) {
    let from = (cs[sender].user, cs[sender].client_id);
    cs[sender].rtmsg(chat, to.0, to.1, msgtype, data);
    cs[sender].rtmsg(chat, 0, 0, common::FENCE_TYPE, tag.as_bytes());
    for i in all_but(6, sender) {
        if want.contains(&i) {
            cs[i].expect_rtmsg_from(chat, from, msgtype, data);
        }
        cs[i].expect_rtmsg_from(chat, from, common::FENCE_TYPE, tag.as_bytes());
    }
}

fn every_addressing_row_reaches_exactly_its_recipients(shards: usize) {
    let server = Server::start(shards, &[]);
    for chat in rooms_on_every_shard(shards, 300) {
        let mut cs = addressing_room(&server, chat);
        let id = |cs: &[ChatdClient], i: usize| cs[i].client_id;
        let big = payload(65_536, 7);
        let small = payload(100, 3);

        // 0/0: every joined connection but the sender, its own other
        // device included.
        deliver_case(
            &mut cs,
            chat,
            0,
            (0, 0),
            0,
            &big,
            &[1, 2, 3, 4, 5],
            "0/0 big",
        );
        deliver_case(
            &mut cs,
            chat,
            3,
            (0, 0),
            255,
            &[],
            &[0, 1, 2, 4, 5],
            "0/0 empty",
        );
        // U/0: every joined device of U; of the sender's own user, all but
        // the sender.
        deliver_case(&mut cs, chat, 0, (2, 0), 9, &small, &[2, 3], "U/0");
        deliver_case(&mut cs, chat, 0, (1, 0), 10, &big, &[1], "own U/0");
        deliver_case(&mut cs, chat, 4, (3, 0), 11, &[], &[5], "own U/0 empty");
        // U/C: only that connection, when it is U's and joined.
        let c3 = id(&cs, 3);
        deliver_case(&mut cs, chat, 0, (2, c3), 12, &big, &[3], "U/C");
        let c1 = id(&cs, 1);
        deliver_case(&mut cs, chat, 0, (1, c1), 13, &small, &[1], "own U/C");
        let c0 = id(&cs, 0);
        deliver_case(&mut cs, chat, 0, (1, c0), 14, &small, &[], "U/C = sender");
        // U/C with C of another user, or of U but not joined: nobody.
        let c4 = id(&cs, 4);
        deliver_case(
            &mut cs,
            chat,
            0,
            (2, c4),
            15,
            &small,
            &[],
            "C of another user",
        );
        let c6 = id(&cs, 6);
        deliver_case(&mut cs, chat, 0, (2, c6), 16, &small, &[], "C not joined");
        // A user with no connection in the room: nobody, not an error.
        deliver_case(&mut cs, chat, 0, (77, 0), 17, &small, &[], "absent user");
        // 0/C: BAD_ADDRESS to the sender, which stays open; nobody gets it.
        cs[2].rtmsg(chat, 0, c3, 18, &small);
        cs[2].expect(Ev::Error {
            code: BAD_ADDRESS,
            opcode: cw::OP_RTMSG,
            id: chat,
        });
        fence(&mut cs, chat, 2, &[0, 1, 3, 4, 5], "after BAD_ADDRESS");

        // The senders never got their own messages: a fence from someone
        // else arrives next at each of them (it was sent after they had
        // all been handled by the room's home shard).
        fence(&mut cs, chat, 5, &[0, 2, 3, 4], "senders (5)");
        fence(&mut cs, chat, 0, &[5], "senders (0)");
        // The member's device that never joined got nothing: its JOIN
        // answer is the first thing it receives.
        assert!(!cs[6].join(chat));
    }
}

#[test]
fn every_addressing_row_reaches_exactly_its_recipients_on_one_shard() {
    every_addressing_row_reaches_exactly_its_recipients(1);
}

#[test]
fn every_addressing_row_reaches_exactly_its_recipients_on_two_shards() {
    every_addressing_row_reaches_exactly_its_recipients(2);
}

// ---- Errors ----------------------------------------------------------

fn rtmsg_to_a_room_not_joined_is_refused(shards: usize) {
    let server = Server::start(shards, &[]);
    for chat in rooms_on_every_shard(shards, 400) {
        server.add_member(chat, 1);
        server.add_member(chat, 2);
        let mut cs = vec![server.chatd(1), server.chatd(2)];
        assert!(!cs[1].join(chat));
        // A member that has not joined, and a room it is not a member of.
        cs[0].rtmsg(chat, 0, 0, 1, b"not joined");
        cs[0].expect_error_open(NOT_JOINED, cw::OP_RTMSG, chat);
        cs[0].rtmsg(chat + 1, 2, 0, 1, b"not a member");
        cs[0].expect_error_open(NOT_JOINED, cw::OP_RTMSG, chat + 1);
        // Nothing was delivered: after joining, the sender's fence is the
        // first message the other member sees.
        assert!(!cs[0].join(chat));
        fence(&mut cs, chat, 0, &[1], "joined now");
    }
}

#[test]
fn rtmsg_to_a_room_not_joined_is_refused_on_one_shard() {
    rtmsg_to_a_room_not_joined_is_refused(1);
}

#[test]
fn rtmsg_to_a_room_not_joined_is_refused_on_two_shards() {
    rtmsg_to_a_room_not_joined_is_refused(2);
}

fn rtmsg_over_the_length_limit_closes_without_waiting_for_the_payload(shards: usize) {
    let server = Server::start(shards, &["--max-rtmsg-len", "1000"]);
    for chat in rooms_on_every_shard(shards, 500) {
        server.add_member(chat, 1);
        server.add_member(chat, 2);
        let mut cs = vec![server.chatd(1), server.chatd(2)];
        for c in cs.iter_mut() {
            assert!(!c.join(chat));
        }
        // Exactly the limit is fine.
        let max = payload(1000, 1);
        cs[0].rtmsg(chat, 0, 0, 2, &max);
        let from = (1, cs[0].client_id);
        cs[1].expect_rtmsg_from(chat, from, 2, &max);

        // One more: only the 25-byte header goes out; the server answers
        // without waiting for the 1001 bytes announced.
        let over = encode(&Request::RtMsg {
            chatid: chat,
            receiver_userid: 0,
            receiver_clientid: 0,
            msgtype: 2,
            data: &payload(1001, 2),
        });
        cs[0].send_raw(&over[..cw::RTMSG_HEADER_LEN]);
        cs[0].expect_error_and_close(TOO_LARGE, cw::OP_RTMSG, chat);
        // The other member is unaffected and got nothing of it.
        let mut fresh = server.chatd(1);
        assert!(!fresh.join(chat));
        cs[0] = fresh;
        fence(&mut cs, chat, 0, &[1], "after TOO_LARGE");
    }
}

#[test]
fn rtmsg_over_the_length_limit_closes_without_waiting_for_the_payload_on_one_shard() {
    rtmsg_over_the_length_limit_closes_without_waiting_for_the_payload(1);
}

#[test]
fn rtmsg_over_the_length_limit_closes_without_waiting_for_the_payload_on_two_shards() {
    rtmsg_over_the_length_limit_closes_without_waiting_for_the_payload(2);
}

// ---- Order and framing -----------------------------------------------

/// Section 3: nothing follows a closing error, and nothing owed before
/// it is lost. OP_JOINs (answered by the rooms' home shards, one of them
/// refused) and an unknown opcode in one write: every JOIN is answered,
/// then comes the error, then the close. (The error used to go out at
/// once and the close drop the answers still on their way: only the
/// error arrived.)
fn a_closing_error_comes_after_the_answers_before_it(shards: usize) {
    const BAD_COMMAND: u8 = 1;
    const NOT_A_ROOM_OF_HIS: u64 = 999_999;
    let server = Server::start(shards, &[]);
    let rooms = rooms_on_every_shard(shards, 3200);
    for &chat in &rooms {
        server.add_member(chat, 1);
    }
    let mut c = server.chatd(1);
    let mut bytes = Vec::new();
    for &chat in &rooms {
        bytes.extend(encode(&Request::Join { chatid: chat }));
    }
    bytes.extend(encode(&Request::Join {
        chatid: NOT_A_ROOM_OF_HIS,
    }));
    bytes.push(0x99);
    c.send_raw(&bytes);
    let mut got = Vec::new();
    while let Some(ev) = c.try_recv() {
        got.push(ev);
    }
    let (last, answers) = got.split_last().expect("some output before the close");
    assert_eq!(
        *last,
        Ev::Error {
            code: BAD_COMMAND,
            opcode: 0x99,
            id: 0
        },
        "{got:?}"
    );
    // Each room's answers in order; rooms homed apart in any order.
    let mut want = vec![Ev::Error {
        code: NOT_MEMBER,
        opcode: cw::OP_JOIN,
        id: NOT_A_ROOM_OF_HIS,
    }];
    for &chat in &rooms {
        let at = answers.iter().position(|e| *e == Ev::Join(chat));
        let at = at.unwrap_or_else(|| panic!("no OP_JOIN {chat}: {got:?}"));
        assert_eq!(
            answers.get(at + 1),
            Some(&Ev::InCall(chat, false)),
            "{got:?}"
        );
        want.extend([Ev::Join(chat), Ev::InCall(chat, false)]);
    }
    assert_eq!(answers.len(), want.len(), "{got:?}");
    for w in &want {
        assert!(answers.contains(w), "{w:?} missing: {got:?}");
    }
}

#[test]
fn a_closing_error_comes_after_the_answers_before_it_on_one_shard() {
    a_closing_error_comes_after_the_answers_before_it(1);
}

#[test]
fn a_closing_error_comes_after_the_answers_before_it_on_two_shards() {
    a_closing_error_comes_after_the_answers_before_it(2);
}

fn messages_from_one_sender_arrive_in_order_everywhere(shards: usize) {
    const N: u32 = 500;
    let server = Server::start(shards, &[]);
    for chat in rooms_on_every_shard(shards, 600) {
        for u in [1, 2, 3] {
            server.add_member(chat, u);
        }
        let mut sender = server.chatd(1);
        assert!(!sender.join(chat));
        let mut receivers = server.chatd_n(1, 2);
        receivers.extend(server.chatd_n(2, 3));
        receivers.extend(server.chatd_n(3, 3));
        for r in receivers.iter_mut() {
            assert!(!r.join(chat));
        }
        let cmds: Vec<Vec<u8>> = (0..N)
            .map(|i| {
                let mut data = i.to_le_bytes().to_vec();
                data.extend(payload((i % 200) as usize, i as u8));
                encode(&Request::RtMsg {
                    chatid: chat,
                    receiver_userid: 0,
                    receiver_clientid: 0,
                    msgtype: (i % 256) as u8,
                    data: &data,
                })
            })
            .collect();
        // Half in one write, the rest one command per write.
        let half = cmds.len() / 2;
        sender.send_raw(&cmds[..half].concat());
        for c in &cmds[half..] {
            sender.send_raw(c);
        }
        for r in receivers.iter_mut() {
            for i in 0..N {
                let mut data = i.to_le_bytes().to_vec();
                data.extend(payload((i % 200) as usize, i as u8));
                r.expect_rtmsg_from(chat, (1, sender.client_id), (i % 256) as u8, &data);
            }
        }
    }
}

#[test]
fn messages_from_one_sender_arrive_in_order_everywhere_on_one_shard() {
    messages_from_one_sender_arrive_in_order_everywhere(1);
}

#[test]
fn messages_from_one_sender_arrive_in_order_everywhere_on_two_shards() {
    messages_from_one_sender_arrive_in_order_everywhere(2);
}

fn commands_split_bytewise_or_coalesced_are_handled(shards: usize) {
    let server = Server::start(shards, &[]);
    for chat in rooms_on_every_shard(shards, 700) {
        server.add_member(chat, 1);
        server.add_member(chat, 2);
        let mut rx = server.chatd(2);
        assert!(!rx.join(chat));

        // Login, JOIN and two messages, one byte per write.
        let mut bytes = encode(&Request::Auth {
            token: server.token(1).as_bytes(),
        });
        bytes.extend(encode(&Request::Hello { version: 1 }));
        bytes.extend(encode(&Request::Join { chatid: chat }));
        let msgs: [&[u8]; 2] = [b"split one", b""];
        for m in msgs {
            bytes.extend(encode(&Request::RtMsg {
                chatid: chat,
                receiver_userid: 2,
                receiver_clientid: 0,
                msgtype: 5,
                data: m,
            }));
        }
        let mut split = ChatdClient::connect(server.chatd);
        for b in &bytes {
            split
                .stream
                .write_all(std::slice::from_ref(b))
                .expect("write");
        }
        let Ev::Hello(id) = split.recv() else {
            panic!("expected OP_HELLO")
        };
        split.expect(Ev::Join(chat));
        split.expect(Ev::InCall(chat, false));
        for m in msgs {
            rx.expect_rtmsg_from(chat, (1, id), 5, m);
        }

        // Login, JOIN and twenty messages in one write.
        let mut bytes = encode(&Request::Auth {
            token: server.token(1).as_bytes(),
        });
        bytes.extend(encode(&Request::Hello { version: 1 }));
        bytes.extend(encode(&Request::Join { chatid: chat }));
        for i in 0..20u8 {
            bytes.extend(encode(&Request::RtMsg {
                chatid: chat,
                receiver_userid: 0,
                receiver_clientid: 0,
                msgtype: i,
                data: &payload(i as usize * 10, i),
            }));
        }
        let mut burst = ChatdClient::connect(server.chatd);
        burst.send_raw(&bytes);
        let Ev::Hello(id) = burst.recv() else {
            panic!("expected OP_HELLO")
        };
        burst.expect(Ev::Join(chat));
        burst.expect(Ev::InCall(chat, false));
        for i in 0..20u8 {
            let data = payload(i as usize * 10, i);
            rx.expect_rtmsg_from(chat, (1, id), i, &data);
            split.expect_rtmsg_from(chat, (1, id), i, &data);
        }
    }
}

#[test]
fn commands_split_bytewise_or_coalesced_are_handled_on_one_shard() {
    commands_split_bytewise_or_coalesced_are_handled(1);
}

#[test]
fn commands_split_bytewise_or_coalesced_are_handled_on_two_shards() {
    commands_split_bytewise_or_coalesced_are_handled(2);
}

// ---- Slow consumer ---------------------------------------------------

/// A logged-in client whose socket has a tiny receive buffer, so that the
/// server's queue to it fills soon once it stops reading.
fn tiny_window_client(server: &Server, user: u64) -> ChatdClient {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    sock.connect(&server.chatd.addr().into()).expect("connect");
    let mut c = ChatdClient::from_stream(server.chatd, TcpStream::from(sock));
    c.login(&server.token(user));
    c.user = user;
    c
}

fn a_slow_consumer_is_closed_and_nobody_else_suffers(shards: usize) {
    const MSG: usize = 16 * 1024;
    const WINDOW: u32 = 3;
    const MAX_BYTES: usize = 256 << 20;
    let server = Server::start(shards, &["--max-outbuf-bytes", "65536"]);
    let chat = rooms_on_every_shard(shards, 800)[shards - 1];
    for u in [1, 2, 3] {
        server.add_member(chat, u);
    }
    let mut sender = server.chatd(1);
    let mut healthy = server.chatd(2);
    let mut slow = tiny_window_client(&server, 3);
    for c in [&mut sender, &mut healthy, &mut slow] {
        assert!(!c.join(chat));
    }
    let from = (1, sender.client_id);
    let data = |i: u32| {
        let mut d = payload(MSG, i as u8);
        d[..4].copy_from_slice(&i.to_le_bytes());
        d
    };

    // Flood in windows the healthy receiver drains before the next, until
    // the server has closed the slow one.
    let (mut sent, mut healthy_got) = (0u32, 0u32);
    let mut drain = |healthy: &mut ChatdClient, upto: u32| {
        while healthy_got < upto {
            healthy.expect_rtmsg_from(chat, from, 1, &data(healthy_got));
            healthy_got += 1;
        }
    };
    while server.metric("chatd_slow_consumer_closes_total") < 1.0 {
        assert!(
            (sent as usize) * MSG < MAX_BYTES,
            "the slow consumer was never closed"
        );
        for _ in 0..8 {
            for _ in 0..WINDOW {
                sender.rtmsg(chat, 0, 0, 1, &data(sent));
                sent += 1;
            }
            drain(&mut healthy, sent);
        }
    }

    // The slow one's stream ends: an in-order prefix of the messages,
    // possibly OP_ERROR SLOW_CONSUMER, then the close.
    let mut got = 0u32;
    loop {
        match slow.try_recv() {
            None => break,
            Some(Ev::RtMsg {
                chat: c,
                user,
                client,
                msgtype: 1,
                data: d,
            }) => {
                assert_eq!((c, user, client), (chat, from.0, from.1));
                assert!(d == data(got), "slow consumer: message {got} out of order");
                got += 1;
            }
            Some(Ev::Error {
                code: SLOW_CONSUMER,
                opcode: 0,
                id: 0,
            }) => {
                slow.expect_closed();
                break;
            }
            Some(other) => panic!("slow consumer got {other:?}"),
        }
    }
    assert!(got < sent, "the slow consumer cannot have had everything");

    // The healthy receiver still gets every message, in order.
    for _ in 0..WINDOW {
        sender.rtmsg(chat, 0, 0, 1, &data(sent));
        sent += 1;
    }
    drain(&mut healthy, sent);

    // The server still serves new logins.
    let mut late = server.chatd(3);
    assert!(!late.join(chat));
    let mut cs = [sender, healthy, late];
    fence(&mut cs, chat, 0, &[1, 2], "after the slow consumer");
    assert!(server.metric("chatd_slow_consumer_closes_total") >= 1.0);
    assert_eq!(server.room(chat)["joined_clients"], 3);
}

#[test]
fn a_slow_consumer_is_closed_and_nobody_else_suffers_on_one_shard() {
    a_slow_consumer_is_closed_and_nobody_else_suffers(1);
}

#[test]
fn a_slow_consumer_is_closed_and_nobody_else_suffers_on_two_shards() {
    a_slow_consumer_is_closed_and_nobody_else_suffers(2);
}

// ---- Admin view ------------------------------------------------------

fn room_state_counts_joined_clients(shards: usize) {
    let server = Server::start(shards, &[]);
    for chat in rooms_on_every_shard(shards, 900) {
        server.add_member(chat, 2);
        server.add_member(chat, 1);
        let live = server.room(chat);
        assert_eq!(live["chatid"], chat.to_string());
        assert_eq!(live["members"], serde_json::json!(["1", "2"]));
        assert_eq!(live["joined_clients"], 0);
        assert_eq!(live["in_call"], false);
        assert_eq!(live["call_users"], serde_json::json!([]));

        let mut cs = server.chatd_n(1, 3);
        cs.push(server.chatd(2));
        for c in cs.iter_mut() {
            assert!(!c.join(chat));
        }
        assert!(!cs[0].join(chat), "joining twice counts once");
        assert_eq!(server.room(chat)["joined_clients"], 4);
        cs[1].leave(chat);
        assert_eq!(server.room(chat)["joined_clients"], 3);
        server.remove_member(chat, 2);
        cs[3].expect(Ev::Leave(chat));
        assert_eq!(server.room(chat)["joined_clients"], 2);
        // A closed connection leaves too; nothing announces it, so poll.
        drop(cs.remove(0));
        wait_until("joined_clients 1", || {
            server.room(chat)["joined_clients"] == 1
        });
    }
}

#[test]
fn room_state_counts_joined_clients_on_one_shard() {
    room_state_counts_joined_clients(1);
}

#[test]
fn room_state_counts_joined_clients_on_two_shards() {
    room_state_counts_joined_clients(2);
}
