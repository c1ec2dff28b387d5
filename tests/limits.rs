//! Abuse limits (docs/protocol.md, "Extensions: abuse limits"): each is
//! answered with its own OP_ERROR and affects only the offending
//! connection.

mod common;

use chatd_proto::chatd::{self as cw, Request, OP_HELLO, OP_JOIN, OP_RTMSG};
use chatd_proto::statusd as sw;
use common::{ChatdClient, Ev, Server, StatusdClient};

const TOO_MANY_CONNECTIONS: u8 = 11;
const TOO_MANY_ROOMS: u8 = 12;
const NOT_MEMBER: u8 = 4;
const RATE_LIMITED: u8 = 13;

/// Users 1 and 2, members of `chat`, each logged in and joined to it.
fn two_joined(server: &Server, chat: u64) -> (ChatdClient, ChatdClient) {
    server.add_member(chat, 1);
    server.add_member(chat, 2);
    let mut a = server.chatd(1);
    let mut b = server.chatd(2);
    a.join(chat);
    b.join(chat);
    (a, b)
}

/// Logs `user` in on chatd, retrying while the server still answers
/// TOO_MANY_CONNECTIONS: a closed connection frees its place as soon as
/// the server has seen the close, which no event tells the client.
fn login_once_a_place_frees(server: &Server, user: u64) {
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let token = server.token(user);
        let mut c = ChatdClient::connect(server.chatd);
        let mut login = Vec::new();
        chatd_proto::chatd::encode_request(
            &Request::Auth {
                token: token.as_bytes(),
            },
            &mut login,
        );
        chatd_proto::chatd::encode_request(&Request::Hello { version: 1 }, &mut login);
        // A refused connection is closed at once, possibly before this
        // write: its error is still there to read.
        let _ = std::io::Write::write_all(&mut c.stream, &login);
        match c.try_recv() {
            Some(Ev::Hello(_)) => return,
            // Refused: the error, or a reset that swallowed it (the login
            // bytes reached a socket the server had already closed).
            Some(Ev::Error { code, .. }) => assert_eq!(code, TOO_MANY_CONNECTIONS),
            None => {}
            Some(other) => panic!("unexpected {other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the freed place never came back"
        );
    }
}

#[test]
fn a_user_over_its_connection_limit_is_refused_at_hello() {
    let server = Server::start(2, &["--max-connections-per-user", "3"]);
    let mut held: Vec<ChatdClient> = (0..2).map(|_| server.chatd(1)).collect();
    // Both services count together.
    let _s = server.statusd(1, 1);
    let mut extra = ChatdClient::connect(server.chatd);
    extra.send(&Request::Auth {
        token: server.token(1).as_bytes(),
    });
    extra.send(&Request::Hello { version: 1 });
    extra.expect_error_and_close(TOO_MANY_CONNECTIONS, OP_HELLO, 0);
    // Another user is not affected, and closing one frees a place.
    let _other = server.chatd(2);
    held.pop();
    held[0].keepalive_roundtrip();
    login_once_a_place_frees(&server, 1);
}

#[test]
fn the_server_connection_limit_refuses_new_connections_only() {
    let server = Server::start(1, &["--max-connections", "2"]);
    let mut a = server.chatd(1);
    let _b = server.statusd(2, 3);
    let mut c = ChatdClient::connect(server.chatd);
    c.expect_error_and_close(TOO_MANY_CONNECTIONS, 0, 0);
    a.keepalive_roundtrip();
    drop(a);
    login_once_a_place_frees(&server, 3);
}

#[test]
fn joins_beyond_the_room_limit_are_refused_and_the_connection_stays() {
    let server = Server::start(2, &["--max-rooms-per-conn", "2"]);
    for chat in 1..=3 {
        server.add_member(chat, 1);
    }
    let mut a = server.chatd(1);
    a.join(1);
    a.join(2);
    // Joining a room already joined does not count twice.
    a.join(2);
    a.send(&Request::Join { chatid: 3 });
    a.expect(Ev::Error {
        code: TOO_MANY_ROOMS,
        opcode: OP_JOIN,
        id: 3,
    });
    a.send(&Request::Leave { chatid: 1 });
    a.expect(Ev::Leave(1));
    a.join(3);
}

/// Joins pipelined in one write count as they are sent: with a limit of
/// 10, exactly 10 of 50 succeed, whatever the room homes answer when.
fn pipelined_joins_cannot_exceed_the_room_limit(shards: usize) {
    const LIMIT: usize = 10;
    const ROOMS: u64 = 50;
    let server = Server::start(shards, &["--max-rooms-per-conn", &LIMIT.to_string()]);
    for chat in 1..=ROOMS {
        server.add_member(chat, 1);
    }
    let mut a = server.chatd(1);
    let mut burst = Vec::new();
    for chat in 1..=ROOMS {
        chatd_proto::chatd::encode_request(&Request::Join { chatid: chat }, &mut burst);
    }
    a.send_raw(&burst);
    let (mut joined, mut refused, mut flags) = (Vec::new(), Vec::new(), 0);
    // Every join is answered: OP_JOIN then OP_IN_CALL, or the error.
    while joined.len() + refused.len() < ROOMS as usize || flags < joined.len() {
        match a.recv() {
            Ev::Join(chat) => joined.push(chat),
            Ev::InCall(_, false) => flags += 1,
            Ev::Error {
                code: TOO_MANY_ROOMS,
                opcode: OP_JOIN,
                id,
            } => refused.push(id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(joined.len(), LIMIT, "joined {joined:?}");
    let live: u64 = (1..=ROOMS)
        .map(|chat| server.room(chat)["joined_clients"].as_u64().expect("count"))
        .sum();
    assert_eq!(live, LIMIT as u64, "connections joined at the room homes");
    // Leaving one frees a place; a join refused as NOT_MEMBER (room 99 is
    // not user 1's) does not keep it.
    a.leave(joined[0]);
    a.send(&Request::Join { chatid: 99 });
    a.expect(Ev::Error {
        code: NOT_MEMBER,
        opcode: OP_JOIN,
        id: 99,
    });
    a.join(refused[0]);
    a.send(&Request::Join { chatid: refused[1] });
    a.expect(Ev::Error {
        code: TOO_MANY_ROOMS,
        opcode: OP_JOIN,
        id: refused[1],
    });
}

#[test]
fn pipelined_joins_cannot_exceed_the_room_limit_on_one_shard() {
    pipelined_joins_cannot_exceed_the_room_limit(1);
}

#[test]
fn pipelined_joins_cannot_exceed_the_room_limit_on_three_shards() {
    pipelined_joins_cannot_exceed_the_room_limit(3);
}

#[test]
fn rtmsg_over_the_rate_is_dropped_with_rate_limited_and_others_are_unaffected() {
    let server = Server::start(1, &["--rtmsg-rate", "1"]);
    server.add_member(9, 1);
    server.add_member(9, 2);
    let mut reader = server.chatd(2);
    assert!(!reader.join(9));
    let mut flooder = server.chatd(1);
    // OP_JOIN, then a burst of 2 s worth (2) that passes at once, and a
    // third within the same instant, refused. One write, so that the
    // server reads them within a few microseconds however loaded the
    // machine. The error comes after the join's answer: it is sent through
    // the room's home, which answers the join (the statusd tests of the
    // same path, where one read is sure to hold them all, fail without).
    let mut burst = Vec::new();
    cw::encode_request(&Request::Join { chatid: 9 }, &mut burst);
    for i in 0..3u8 {
        let req = Request::RtMsg {
            chatid: 9,
            receiver_userid: 0,
            receiver_clientid: 0,
            msgtype: 1,
            data: &[i],
        };
        cw::encode_request(&req, &mut burst);
    }
    flooder.send_raw(&burst);
    flooder.expect(Ev::Join(9));
    flooder.expect(Ev::InCall(9, false));
    flooder.expect(Ev::Error {
        code: RATE_LIMITED,
        opcode: OP_RTMSG,
        id: 9,
    });
    for i in 0..2u8 {
        match reader.recv() {
            Ev::RtMsg { data, .. } => assert_eq!(data, vec![i]),
            other => panic!("expected message {i}, got {other:?}"),
        }
    }
    // The flooder stays connected, and the reader's own messages flow.
    flooder.keepalive_roundtrip();
    reader.rtmsg(9, 0, 0, 1, b"hi");
    assert!(matches!(flooder.recv(), Ev::RtMsg { .. }));
}

#[test]
fn setpres_over_the_rate_is_refused_and_the_connection_stays() {
    let server = Server::start(1, &["--setpres-rate", "2"]);
    let mut s: StatusdClient = server.statusd(1, 1);
    // Burst of 2 s worth (4), then three more at the same instant (one
    // write: a token comes back every 500 ms). The errors come after the
    // four answers, one each: they are sent through the user's home (in
    // one message), which answers them.
    let mut burst = Vec::new();
    for v in 1..=7u8 {
        sw::encode_request(&sw::Request::SetPres { presence: v }, &mut burst);
    }
    s.send_raw(&burst);
    for v in 1..=4u8 {
        s.expect_pres(0, v);
    }
    for _ in 5..=7 {
        assert_eq!(
            s.recv(),
            sw::Event::Error {
                code: RATE_LIMITED,
                opcode: sw::OP_SETPRES,
                id: 0
            }
        );
    }
    s.send(&sw::Request::Keepalive);
    assert_eq!(s.recv(), sw::Event::Keepalive);
}

#[test]
fn a_message_larger_than_the_output_cap_still_reaches_a_reader_that_keeps_up() {
    let server = Server::start(
        2,
        &["--max-rtmsg-len", "300000", "--max-outbuf-bytes", "65536"],
    );
    let (mut a, mut b) = two_joined(&server, 4);
    let big: Vec<u8> = (0..250_000u32).map(|i| i as u8).collect();
    a.rtmsg(4, 0, 0, 9, &big);
    a.rtmsg(4, 0, 0, 9, b"after");
    match b.recv() {
        Ev::RtMsg {
            data, msgtype: 9, ..
        } => assert!(data == big, "payload differs"),
        other => panic!("expected the big message, got {other:?}"),
    }
    match b.recv() {
        Ev::RtMsg { data, .. } => assert_eq!(data, b"after"),
        other => panic!("expected the next message, got {other:?}"),
    }
}

/// The server's resident memory, in bytes.
fn server_rss(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .expect("the server's /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// Bytes the server has written to chatd clients (`chatd_bytes_out_total`).
fn chatd_bytes_out(server: &Server) -> u64 {
    let (_, body) = server.http("GET", "/metrics", None, false);
    body.lines()
        .find_map(|l| l.strip_prefix("chatd_bytes_out_total{service=\"chatd\"} "))
        .and_then(|v| v.trim().parse().ok())
        .expect("chatd_bytes_out_total")
}

/// A reader that stopped reading holds what `--max-outbuf-bytes` allows,
/// not what the frames queued to it were cut from: tiny messages to it,
/// interleaved with 60 KB messages to a room where nobody listens, come
/// out of the sender's large read buffers, and queued as references they
/// once kept a read buffer alive each (2.6 GB under a 1 MiB cap). Small
/// frames are copied into the reader's own output chunk.
fn a_stalled_reader_pins_no_more_than_its_cap(shards: usize) {
    const FILL: usize = 400;
    const ROUNDS: usize = 2000;
    const LARGE: usize = 60_000;
    /// Far above the cap and the read buffers in use, far below what the
    /// tiny frames would pin as references (a read buffer of up to 256 KiB
    /// for every few rounds: over 100 MiB).
    const RSS_GROWTH_MAX: u64 = 48 << 20;
    let server = Server::start(shards, &["--max-outbuf-bytes", "1048576"]);
    let (stalled_room, empty_room) = (21, 22);
    server.add_member(stalled_room, 1);
    server.add_member(stalled_room, 2);
    server.add_member(empty_room, 1);
    let mut sender = server.chatd(1);
    // A small receive buffer, and no reads from here on.
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    sock.connect(&server.chatd.addr().into()).expect("connect");
    let mut stalled = ChatdClient::from_stream(server.chatd, std::net::TcpStream::from(sock));
    stalled.login(&server.token(2));
    assert!(!sender.join(stalled_room));
    assert!(!sender.join(empty_room));
    assert!(!stalled.join(stalled_room));
    // First fill the kernel's buffers towards the stalled reader, until
    // the server's writes to it stop: from then on what it is sent waits
    // in the server.
    let fill = vec![1u8; FILL];
    let (mut filled, mut still) = (0, 0);
    while still < 2 {
        let before = chatd_bytes_out(&server);
        for _ in 0..64 {
            sender.rtmsg(stalled_room, 0, 0, 1, &fill);
            filled += 1;
        }
        sender.keepalive_roundtrip();
        // Nothing but the keepalive answer written, twice in a row (once
        // could be a writer that has not run yet).
        if chatd_bytes_out(&server) - before <= 64 {
            still += 1;
        } else {
            still = 0;
        }
        assert!(filled < 100_000, "the stalled reader's socket never filled");
    }
    let before = server_rss(&server);
    let large = vec![7u8; LARGE];
    for i in 0..ROUNDS {
        sender.rtmsg(stalled_room, 0, 0, 2, &[i as u8]);
        sender.rtmsg(empty_room, 0, 0, 1, &large);
    }
    // Everything sent before it has been handled by the sender's shard.
    sender.keepalive_roundtrip();
    // On two shards a room's home may be the other shard: the large
    // frames wait in its channel, each holding the sender's read buffer,
    // until that shard gets to them, which on a busy box can be tens of
    // MiB for a moment. That passes; what the stalled reader pins stays,
    // so the bound must hold once the server has settled.
    common::poll("the server's growth to stay under the bound", || {
        let grown = server_rss(&server).saturating_sub(before);
        if grown < RSS_GROWTH_MAX {
            Ok(())
        } else {
            Err(format!("the server grew by {} MiB", grown >> 20))
        }
    });
    // Within its cap, the stalled reader was not closed: it gets every
    // message in order once it reads.
    for i in 0..filled {
        match stalled.recv() {
            Ev::RtMsg {
                msgtype: 1, data, ..
            } => assert!(data == fill, "fill {i}"),
            other => panic!("expected fill message {i}, got {other:?}"),
        }
    }
    for i in 0..ROUNDS {
        match stalled.recv() {
            Ev::RtMsg {
                msgtype: 2, data, ..
            } => assert_eq!(data, [i as u8], "message {i}"),
            other => panic!("expected message {i}, got {other:?}"),
        }
    }
}

#[test]
fn a_stalled_reader_pins_no_more_than_its_cap_on_one_shard() {
    a_stalled_reader_pins_no_more_than_its_cap(1);
}

#[test]
fn a_stalled_reader_pins_no_more_than_its_cap_on_two_shards() {
    a_stalled_reader_pins_no_more_than_its_cap(2);
}
