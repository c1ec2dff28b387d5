//! Login phase, transport and common commands (protocol sections 1-3)
//! against the real binary: token rules on both services, login order,
//! HELLO versions, client ids, keepalives, login and idle timeouts, and
//! that a misbehaving connection affects no other.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use chatd_proto::chatd::Request;
use chatd_proto::statusd as sw;
use common::{
    eventually, none_jwt, sign_jwt, unix_now, ChatdClient, Ev, SEv, Server, StatusdClient,
};
use jsonwebtoken::Algorithm;
use serde_json::json;

const OP_KEEPALIVE: u8 = 0x00;
const OP_AUTH: u8 = 0x06;
const OP_ERROR: u8 = 0x07;
const C_OP_JOIN: u8 = 0x01;
const C_OP_HELLO: u8 = 0x03;
const C_OP_IN_CALL: u8 = 0x05;
const S_OP_HELLO: u8 = 0x01;
const S_OP_SETPRES: u8 = 0x02;

const BAD_COMMAND: u8 = 1;
const AUTH_FAILED: u8 = 2;
const NOT_AUTHENTICATED: u8 = 3;
const NOT_MEMBER: u8 = 4;
const BAD_VERSION: u8 = 9;

/// `OP_AUTH` with a raw little-endian `token_len` and the token bytes.
fn raw_auth(token: &[u8]) -> Vec<u8> {
    let mut v = vec![OP_AUTH];
    v.extend_from_slice(&(token.len() as u16).to_le_bytes());
    v.extend_from_slice(token);
    v
}

/// Claims of a token that would be valid for user 42.
fn good_claims() -> serde_json::Value {
    json!({"sub": "42", "exp": unix_now() + 60})
}

/// Every token the server must refuse, by name, as the raw bytes of a whole
/// OP_AUTH command.
fn rejected_auths(secret: &str) -> Vec<(&'static str, Vec<u8>)> {
    let now = unix_now();
    let hs = |claims: serde_json::Value| sign_jwt(secret, Algorithm::HS256, &claims);
    let tok = |s: String| raw_auth(s.as_bytes());
    let mut long = vec![OP_AUTH];
    long.extend_from_slice(&4097u16.to_le_bytes());
    vec![
        (
            "bad signature (other secret)",
            tok(sign_jwt(
                "not-the-server-secret",
                Algorithm::HS256,
                &good_claims(),
            )),
        ),
        (
            "alg HS384 with the right secret",
            tok(sign_jwt(secret, Algorithm::HS384, &good_claims())),
        ),
        (
            "alg HS512 with the right secret",
            tok(sign_jwt(secret, Algorithm::HS512, &good_claims())),
        ),
        ("alg none", tok(none_jwt(&good_claims()))),
        ("missing exp", tok(hs(json!({"sub": "42"})))),
        (
            "expired exp",
            tok(hs(json!({"sub": "42", "exp": now - 10}))),
        ),
        ("missing sub", tok(hs(json!({"exp": now + 60})))),
        ("sub abc", tok(hs(json!({"sub": "abc", "exp": now + 60})))),
        ("sub -1", tok(hs(json!({"sub": "-1", "exp": now + 60})))),
        ("sub 1.5", tok(hs(json!({"sub": "1.5", "exp": now + 60})))),
        ("sub +42", tok(hs(json!({"sub": "+42", "exp": now + 60})))),
        (
            "sub a number, not a string",
            tok(hs(json!({"sub": 42, "exp": now + 60}))),
        ),
        ("sub 0", tok(hs(json!({"sub": "0", "exp": now + 60})))),
        (
            "sub over u64",
            tok(hs(json!({"sub": "18446744073709551616", "exp": now + 60}))),
        ),
        ("token_len 0", vec![OP_AUTH, 0, 0]),
        // Only the length: the server refuses it as soon as it can read it
        // (docs/protocol.md), and sending 4097 more bytes it will not read
        // could turn its close into a reset that hides the OP_ERROR.
        ("token_len 4097", long),
        (
            "non-UTF-8 garbage",
            raw_auth(&[0xff, 0xfe, 0x80, 0x00, 0xc3, 0x28, 0x2e, 0x2e]),
        ),
        ("JWT-shaped garbage", tok("a.b.c".to_string())),
    ]
}

/// Reads OP_ERROR `code opcode id` from a chatd client, then the close.
fn chatd_error_close(c: &mut ChatdClient, code: u8, opcode: u8, what: &str) {
    chatd_error_close_id(c, code, opcode, 0, what);
}

/// Expects exactly OP_ERROR `code` for `opcode` with `id`, then the close.
fn chatd_error_close_id(c: &mut ChatdClient, code: u8, opcode: u8, id: u64, what: &str) {
    match c.try_recv() {
        Some(Ev::Error {
            code: got,
            opcode: op,
            id: got_id,
        }) if got == code && op == opcode && got_id == id => {}
        other => panic!("{what}: expected OP_ERROR {code} op {opcode:#x} id {id}, got {other:?}"),
    }
    if let Some(ev) = c.try_recv() {
        panic!("{what}: expected close after the error, got {ev:?}");
    }
}

/// The same for a statusd client.
fn statusd_error_close(c: &mut StatusdClient, code: u8, opcode: u8, what: &str) {
    match c.try_recv() {
        Some(SEv::Error {
            code: got,
            opcode: op,
            id: 0,
        }) if got == code && op == opcode => {}
        other => panic!("{what}: expected OP_ERROR {code} op {opcode:#x} id 0, got {other:?}"),
    }
    if let Some(ev) = c.try_recv() {
        panic!("{what}: expected close after the error, got {ev:?}");
    }
}

/// Logs a chatd client in with `token` given as raw bytes; returns its id.
fn chatd_login_raw(server: &Server, token: &str) -> u32 {
    let mut c = ChatdClient::connect(server.chatd);
    c.login(token);
    c.client_id
}

/// Logs a statusd client in; returns it after its login dump.
fn statusd_login(server: &Server, token: &str, presence: u8) -> StatusdClient {
    let mut s = StatusdClient::connect(server.statusd);
    s.send(&sw::Request::Auth {
        token: token.as_bytes(),
    });
    s.send(&sw::Request::Hello {
        version: 1,
        presence,
    });
    s.read_dump();
    s
}

// ---------------------------------------------------------------- tokens

fn bad_tokens_are_refused(shards: usize) {
    let server = Server::start(shards, &[]);
    let secret = server.jwt_secret();
    for (what, bytes) in rejected_auths(&secret) {
        let mut c = ChatdClient::connect(server.chatd);
        c.send_raw(&bytes);
        chatd_error_close(&mut c, AUTH_FAILED, OP_AUTH, &format!("chatd: {what}"));

        let mut s = StatusdClient::connect(server.statusd);
        s.send_raw(&bytes);
        statusd_error_close(&mut s, AUTH_FAILED, OP_AUTH, &format!("statusd: {what}"));
    }
    // None of them logged anybody in, and the server still serves.
    let user = server.get_json("/v1/users/42");
    assert_eq!(user["chatd_clients"], 0);
    assert_eq!(user["statusd_clients"], 0);
    assert_ne!(chatd_login_raw(&server, &server.token(42)), 0);
}

#[test]
fn bad_tokens_are_refused_on_one_shard() {
    bad_tokens_are_refused(1);
}

#[test]
fn bad_tokens_are_refused_on_two_shards() {
    bad_tokens_are_refused(2);
}

fn hand_signed_token_logs_in(shards: usize) {
    let server = Server::start(shards, &[]);
    let token = sign_jwt(&server.jwt_secret(), Algorithm::HS256, &good_claims());
    // The length written by hand, little-endian, proves the byte order.
    let mut c = ChatdClient::connect(server.chatd);
    c.send_raw(&raw_auth(token.as_bytes()));
    c.send(&Request::Hello { version: 1 });
    let id = match c.recv() {
        Ev::Hello(id) => id,
        other => panic!("expected OP_HELLO, got {other:?}"),
    };
    assert_ne!(id, 0);
    let s = statusd_login(&server, &token, 3);
    assert_eq!(s.own, 3);
    // The server took user 42 from `sub`.
    eventually(&server, "/v1/users/42", |u| {
        u["chatd_clients"] == 1 && u["statusd_clients"] == 1 && u["presence"] == 3
    });
    c.keepalive_roundtrip();
}

#[test]
fn hand_signed_token_logs_in_on_one_shard() {
    hand_signed_token_logs_in(1);
}

#[test]
fn hand_signed_token_logs_in_on_two_shards() {
    hand_signed_token_logs_in(2);
}

/// token_len 4096 is the largest allowed: a valid token of exactly that
/// length logs in.
#[test]
fn a_token_of_4096_bytes_is_accepted() {
    let server = Server::start(1, &[]);
    let secret = server.jwt_secret();
    let exp = unix_now() + 60;
    let token = (0..4096)
        .map(|n| {
            let claims = json!({"sub": "42", "exp": exp, "pad": "x".repeat(n)});
            sign_jwt(&secret, Algorithm::HS256, &claims)
        })
        .find(|t| t.len() == 4096)
        .expect("some padding gives a 4096-byte token");
    let mut c = ChatdClient::connect(server.chatd);
    c.login(&token);
    assert_ne!(c.client_id, 0);
    let s = statusd_login(&server, &token, 2);
    assert_eq!(s.own, 2);
}

// ----------------------------------------------------------- login order

fn login_order_is_enforced(shards: usize) {
    let server = Server::start(shards, &[]);
    let token = server.token(5);

    // chatd, first command not OP_AUTH; `id` is the room it concerned.
    let firsts: [(&str, Request<'_>, u8, u64); 3] = [
        ("JOIN", Request::Join { chatid: 7 }, C_OP_JOIN, 7),
        ("KEEPALIVE", Request::Keepalive, OP_KEEPALIVE, 0),
        ("HELLO", Request::Hello { version: 1 }, C_OP_HELLO, 0),
    ];
    for (what, req, op, id) in firsts {
        let mut c = ChatdClient::connect(server.chatd);
        c.send(&req);
        let what = format!("chatd {what} first");
        chatd_error_close_id(&mut c, NOT_AUTHENTICATED, op, id, &what);
    }
    // chatd, second command not OP_HELLO.
    let seconds: [(&str, Request<'_>, u8, u64); 3] = [
        ("JOIN", Request::Join { chatid: 7 }, C_OP_JOIN, 7),
        ("KEEPALIVE", Request::Keepalive, OP_KEEPALIVE, 0),
        (
            "AUTH",
            Request::Auth {
                token: token.as_bytes(),
            },
            OP_AUTH,
            0,
        ),
    ];
    for (what, req, op, id) in seconds {
        let mut c = ChatdClient::connect(server.chatd);
        c.send(&Request::Auth {
            token: token.as_bytes(),
        });
        c.send(&req);
        let what = format!("chatd {what} second");
        chatd_error_close_id(&mut c, NOT_AUTHENTICATED, op, id, &what);
    }

    // statusd, first command not OP_AUTH.
    let firsts: [(&str, sw::Request<'_>, u8); 3] = [
        (
            "SETPRES",
            sw::Request::SetPres { presence: 3 },
            S_OP_SETPRES,
        ),
        ("KEEPALIVE", sw::Request::Keepalive, OP_KEEPALIVE),
        (
            "HELLO",
            sw::Request::Hello {
                version: 1,
                presence: 3,
            },
            S_OP_HELLO,
        ),
    ];
    for (what, req, op) in firsts {
        let mut s = StatusdClient::connect(server.statusd);
        s.send(&req);
        statusd_error_close(
            &mut s,
            NOT_AUTHENTICATED,
            op,
            &format!("statusd {what} first"),
        );
    }
    // statusd, second command not OP_HELLO.
    let seconds: [(&str, sw::Request<'_>, u8); 3] = [
        (
            "SETPRES",
            sw::Request::SetPres { presence: 3 },
            S_OP_SETPRES,
        ),
        ("KEEPALIVE", sw::Request::Keepalive, OP_KEEPALIVE),
        (
            "AUTH",
            sw::Request::Auth {
                token: token.as_bytes(),
            },
            OP_AUTH,
        ),
    ];
    for (what, req, op) in seconds {
        let mut s = StatusdClient::connect(server.statusd);
        s.send(&sw::Request::Auth {
            token: token.as_bytes(),
        });
        s.send(&req);
        statusd_error_close(
            &mut s,
            NOT_AUTHENTICATED,
            op,
            &format!("statusd {what} second"),
        );
    }

    // Nobody got logged in along the way.
    let user = server.get_json("/v1/users/5");
    assert_eq!(user["chatd_clients"], 0);
    assert_eq!(user["statusd_clients"], 0);
}

#[test]
fn login_order_is_enforced_on_one_shard() {
    login_order_is_enforced(1);
}

#[test]
fn login_order_is_enforced_on_two_shards() {
    login_order_is_enforced(2);
}

/// docs/protocol.md: chatd answers an unknown opcode BAD_COMMAND (the
/// contract allows that or NOT_AUTHENTICATED), before or after AUTH, on both
/// services; a chatd-only opcode is unknown on statusd.
#[test]
fn unknown_opcode_during_login_is_bad_command() {
    let server = Server::start(1, &[]);
    let token = server.token(5);

    let mut c = ChatdClient::connect(server.chatd);
    c.send_raw(&[0x7f]);
    chatd_error_close(&mut c, BAD_COMMAND, 0x7f, "chatd 0x7f first");

    let mut c = ChatdClient::connect(server.chatd);
    c.send(&Request::Auth {
        token: token.as_bytes(),
    });
    c.send_raw(&[0x7f]);
    chatd_error_close(&mut c, BAD_COMMAND, 0x7f, "chatd 0x7f second");

    for op in [0x7f, 0x04, 0x05] {
        let mut s = StatusdClient::connect(server.statusd);
        s.send_raw(&[op]);
        statusd_error_close(&mut s, BAD_COMMAND, op, &format!("statusd {op:#x} first"));
    }
    let mut s = StatusdClient::connect(server.statusd);
    s.send(&sw::Request::Auth {
        token: token.as_bytes(),
    });
    s.send_raw(&[0x7f]);
    statusd_error_close(&mut s, BAD_COMMAND, 0x7f, "statusd 0x7f second");
}

/// A logged-in connection that logs in again gets BAD_COMMAND and is
/// closed, whether its OP_AUTH is well formed or has a bad `token_len`,
/// and an OP_HELLO likewise (docs/protocol.md, "A second login").
#[test]
fn a_second_login_is_bad_command() {
    let server = Server::start(1, &[]);
    let token = server.token(5);
    let second_auths = [
        ("valid token", raw_auth(token.as_bytes())),
        ("token_len 0", raw_auth(b"")),
        // The header alone: it is refused before any token byte, and bytes
        // left unread at the close could turn it into a reset.
        ("token_len 5000", {
            let mut v = vec![OP_AUTH];
            v.extend_from_slice(&5000u16.to_le_bytes());
            v
        }),
    ];
    for (what, bytes) in &second_auths {
        let mut c = ChatdClient::connect(server.chatd);
        c.login(&token);
        c.send_raw(bytes);
        chatd_error_close(&mut c, BAD_COMMAND, OP_AUTH, &format!("chatd AUTH {what}"));
        let mut s = statusd_login(&server, &token, 3);
        s.send_raw(bytes);
        statusd_error_close(
            &mut s,
            BAD_COMMAND,
            OP_AUTH,
            &format!("statusd AUTH {what}"),
        );
    }
    let mut c = ChatdClient::connect(server.chatd);
    c.login(&token);
    c.send(&Request::Hello { version: 1 });
    chatd_error_close(&mut c, BAD_COMMAND, 0x03, "chatd HELLO");
    let mut s = statusd_login(&server, &token, 3);
    s.send(&sw::Request::Hello {
        version: 1,
        presence: 3,
    });
    statusd_error_close(&mut s, BAD_COMMAND, 0x01, "statusd HELLO");
}

// -------------------------------------------------------------- versions

fn hello_versions_are_checked(shards: usize) {
    let server = Server::start(shards, &[]);
    let token = server.token(5);
    for version in [0u16, 2, u16::MAX] {
        let mut c = ChatdClient::connect(server.chatd);
        c.send(&Request::Auth {
            token: token.as_bytes(),
        });
        c.send(&Request::Hello { version });
        chatd_error_close(
            &mut c,
            BAD_VERSION,
            C_OP_HELLO,
            &format!("chatd version {version}"),
        );

        let mut s = StatusdClient::connect(server.statusd);
        s.send(&sw::Request::Auth {
            token: token.as_bytes(),
        });
        s.send(&sw::Request::Hello {
            version,
            presence: 3,
        });
        statusd_error_close(
            &mut s,
            BAD_VERSION,
            S_OP_HELLO,
            &format!("statusd version {version}"),
        );
    }
    let user = server.get_json("/v1/users/5");
    assert_eq!(user["chatd_clients"], 0);
    assert_eq!(user["statusd_clients"], 0);
    assert_eq!(user["presence"], 0);
    // Version 1 with non-zero reserved bytes is accepted (reserved is ignored).
    let mut c = ChatdClient::connect(server.chatd);
    c.send(&Request::Auth {
        token: token.as_bytes(),
    });
    c.send_raw(&[C_OP_HELLO, 1, 0, 0xab, 0xcd]);
    assert!(matches!(c.recv(), Ev::Hello(id) if id != 0));
}

#[test]
fn hello_versions_are_checked_on_one_shard() {
    hello_versions_are_checked(1);
}

#[test]
fn hello_versions_are_checked_on_two_shards() {
    hello_versions_are_checked(2);
}

// ------------------------------------------------------------ transport

/// Section 1: commands split byte by byte, and several in one write, are
/// both read right; integers are little-endian on the wire.
#[test]
fn commands_may_be_split_or_coalesced_and_are_little_endian() {
    let server = Server::start(1, &["--first-client-id", "16909060"]); // 0x01020304
    let token = server.token(5);
    let mut login = raw_auth(token.as_bytes());
    login.extend_from_slice(&[C_OP_HELLO, 1, 0, 0, 0]);

    // Byte by byte: the HELLO reply, read raw: opcode then 0x01020304 LE.
    let mut c = ChatdClient::connect(server.chatd);
    for b in &login {
        c.send_raw(std::slice::from_ref(b));
    }
    let mut reply = [0u8; 5];
    c.stream.read_exact(&mut reply).expect("hello reply");
    assert_eq!(reply, [C_OP_HELLO, 0x04, 0x03, 0x02, 0x01]);

    // Login, three keepalives and a malformed OP_IN_CALL in one write: all
    // answered in order; the error's id is the chatid, little-endian.
    let mut c = ChatdClient::connect(server.chatd);
    let mut bytes = login.clone();
    bytes.extend_from_slice(&[OP_KEEPALIVE, OP_KEEPALIVE, OP_KEEPALIVE]);
    bytes.push(C_OP_IN_CALL);
    bytes.extend_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
    bytes.push(7);
    c.send_raw(&bytes);
    let mut want = vec![C_OP_HELLO, 0x05, 0x03, 0x02, 0x01, 0, 0, 0];
    want.extend_from_slice(&[OP_ERROR, BAD_COMMAND, C_OP_IN_CALL]);
    want.extend_from_slice(&[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
    let mut got = Vec::new();
    c.stream
        .set_read_timeout(Some(common::WAIT))
        .expect("timeout");
    c.stream.read_to_end(&mut got).expect("read to close");
    assert_eq!(got, want);

    // statusd, coalesced: login, keepalive.
    let mut s = StatusdClient::connect(server.statusd);
    let mut bytes = raw_auth(token.as_bytes());
    bytes.extend_from_slice(&[S_OP_HELLO, 1, 0, 3, 0, OP_KEEPALIVE]);
    s.send_raw(&bytes);
    // The dump comes from the user's home shard, the keepalive answer from
    // the connection's: either may come first.
    let mut got = vec![s.recv(), s.recv()];
    got.sort_by_key(|e| e.opcode());
    assert_eq!(
        got,
        vec![
            SEv::Keepalive,
            SEv::Pres {
                userid: 0,
                presence: 3
            }
        ]
    );
}

// ------------------------------------------------------------ client ids

#[test]
fn client_ids_are_distinct_and_non_zero_across_two_shards() {
    let server = Server::start(2, &[]);
    let tokens: Vec<String> = (1..=5).map(|u| server.token(u)).collect();
    let clients: Vec<ChatdClient> = std::thread::scope(|s| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|t| {
                let addr = server.chatd;
                s.spawn(move || {
                    (0..10)
                        .map(|_| {
                            let mut c = ChatdClient::connect(addr);
                            c.login(t);
                            c
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("login thread"))
            .collect()
    });
    let mut ids: Vec<u32> = clients.iter().map(|c| c.client_id).collect();
    ids.sort_unstable();
    // One counter for the whole server starting at 1: exactly 1..=50.
    assert_eq!(ids, (1..=50).collect::<Vec<u32>>());
    for u in 1..=5 {
        eventually(&server, &format!("/v1/users/{u}"), |v| {
            v["chatd_clients"] == 10
        });
    }
}

fn client_ids_wrap_around_skipping_zero(shards: usize) {
    let server = Server::start(shards, &["--first-client-id", "4294967294"]);
    let token = server.token(1);
    let mut held = Vec::new();
    for want in [4294967294u32, 4294967295, 1, 2] {
        let mut c = ChatdClient::connect(server.chatd);
        c.login(&token);
        assert_eq!(c.client_id, want);
        held.push(c);
    }
    for c in &mut held {
        c.keepalive_roundtrip();
    }
}

#[test]
fn client_ids_wrap_around_skipping_zero_on_one_shard() {
    client_ids_wrap_around_skipping_zero(1);
}

#[test]
fn client_ids_wrap_around_skipping_zero_on_two_shards() {
    client_ids_wrap_around_skipping_zero(2);
}

/// A counter that starts at 0 never hands 0 out.
#[test]
fn client_id_zero_is_never_assigned() {
    let server = Server::start(1, &["--first-client-id", "0"]);
    let mut c = server.chatd(1);
    assert_eq!(c.client_id, 1);
    c.keepalive_roundtrip();
}

// ------------------------------------------------------------ keepalive

fn keepalive_is_answered(shards: usize) {
    let server = Server::start(shards, &[]);
    let mut c = server.chatd(1);
    c.keepalive_roundtrip();
    c.send_raw(&[OP_KEEPALIVE, OP_KEEPALIVE]);
    c.expect(Ev::Keepalive);
    c.expect(Ev::Keepalive);
    let mut s = server.statusd(1, 3);
    s.send(&sw::Request::Keepalive);
    assert_eq!(s.recv(), SEv::Keepalive);
    s.send_raw(&[OP_KEEPALIVE, OP_KEEPALIVE]);
    assert_eq!(s.recv(), SEv::Keepalive);
    assert_eq!(s.recv(), SEv::Keepalive);
}

#[test]
fn keepalive_is_answered_on_one_shard() {
    keepalive_is_answered(1);
}

#[test]
fn keepalive_is_answered_on_two_shards() {
    keepalive_is_answered(2);
}

// -------------------------------------------------------------- timeouts

fn login_timeout_closes_unfinished_logins(shards: usize) {
    // Long enough for the ready clients' handshakes and logins (TLS and
    // WebSocket, a debug build, a loaded machine) to finish in time.
    const LOGIN_MS: u64 = 1000;
    let server = Server::start(shards, &["--login-timeout-ms", &LOGIN_MS.to_string()]);
    let token = server.token(1);
    // Logged in first: its login deadline passes before the others'.
    let mut ready = ChatdClient::connect(server.chatd);
    ready.login(&token);
    let mut ready_s = statusd_login(&server, &token, 3);

    let start = Instant::now();
    let mut silent = ChatdClient::connect(server.chatd);
    let mut auth_only = ChatdClient::connect(server.chatd);
    auth_only.send(&Request::Auth {
        token: token.as_bytes(),
    });
    let mut silent_s = StatusdClient::connect(server.statusd);
    let mut auth_only_s = StatusdClient::connect(server.statusd);
    auth_only_s.send(&sw::Request::Auth {
        token: token.as_bytes(),
    });

    // Closed with no error command (the harness fails on any command).
    silent.expect_closed();
    auth_only.expect_closed();
    silent_s.expect_closed();
    auth_only_s.expect_closed();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(LOGIN_MS - 50),
        "closed after {waited:?}, before the login timeout"
    );

    // The logged-in connections outlived the deadline.
    ready.keepalive_roundtrip();
    ready_s.send(&sw::Request::Keepalive);
    assert_eq!(ready_s.recv(), SEv::Keepalive);
}

#[test]
fn login_timeout_closes_unfinished_logins_on_one_shard() {
    login_timeout_closes_unfinished_logins(1);
}

#[test]
fn login_timeout_closes_unfinished_logins_on_two_shards() {
    login_timeout_closes_unfinished_logins(2);
}

/// Bytes trickling in do not extend the login deadline: an OP_AUTH sent a
/// byte every 10 ms would take 40 s to arrive whole, and the connection is
/// closed while it is still trickling (the read that sees the close is
/// bounded by the harness's wait, not by an upper bound on wall time).
#[test]
fn trickled_login_bytes_do_not_extend_the_login_timeout() {
    let server = Server::start(1, &["--login-timeout-ms", "300"]);
    // A token of the largest length the contract allows; its bytes are
    // never checked, as the server closes before it has them all.
    let bytes = raw_auth(&[b'x'; chatd_proto::limits::MAX_TOKEN_LEN]);
    let mut c = ChatdClient::connect(server.chatd);
    let deadline = Instant::now() + common::WAIT;
    let mut sent = 0;
    while sent < bytes.len() && !c.closed_within(Duration::from_millis(10)) {
        assert!(Instant::now() < deadline, "still open after {sent} bytes");
        // Pacing is the behaviour under test. A write after the close may
        // fail; the next check sees the close.
        if c.stream.write_all(&bytes[sent..=sent]).is_ok() {
            sent += 1;
        }
    }
    assert!(
        sent < bytes.len(),
        "the whole OP_AUTH trickled in: the login timeout never closed it"
    );
}

/// Section 3: the idle timeout applies to every connection, so one that
/// sends nothing is closed at the idle timeout even when the login timeout
/// is longer (here ten minutes: a close within the harness's wait can only
/// be the idle one).
#[test]
fn idle_timeout_applies_before_login_too() {
    let server = Server::start(
        1,
        &["--idle-timeout-ms", "300", "--login-timeout-ms", "600000"],
    );
    let mut c = ChatdClient::connect(server.chatd);
    let mut s = StatusdClient::connect(server.statusd);
    c.expect_closed();
    s.expect_closed();
}

fn idle_timeout_closes_silent_connections(shards: usize) {
    let server = Server::start(shards, &["--idle-timeout-ms", "2000"]);
    let token = server.token(1);
    let mut silent = ChatdClient::connect(server.chatd);
    silent.login(&token);
    let mut silent_s = statusd_login(&server, &token, 3);
    let mut busy = ChatdClient::connect(server.chatd);
    busy.login(&token);
    let mut busy_s = statusd_login(&server, &token, 3);

    // The busy ones send a keepalive about every 100 ms (20 times within
    // the idle timeout) until the silent ones, which logged in first, are
    // closed; without an error command (the harness fails on any command).
    let deadline = Instant::now() + common::WAIT;
    let (mut closed, mut closed_s) = (false, false);
    while !(closed && closed_s) {
        assert!(
            Instant::now() < deadline,
            "the silent connections stayed open"
        );
        busy.keepalive_roundtrip();
        busy_s.send(&sw::Request::Keepalive);
        assert_eq!(busy_s.recv(), SEv::Keepalive);
        closed = closed || silent.closed_within(Duration::from_millis(50));
        closed_s = closed_s || silent_s.closed_within(Duration::from_millis(50));
    }
    // The busy ones are still open.
    busy.keepalive_roundtrip();
    busy_s.send(&sw::Request::Keepalive);
    assert_eq!(busy_s.recv(), SEv::Keepalive);
    eventually(&server, "/v1/users/1", |u| {
        u["chatd_clients"] == 1 && u["statusd_clients"] == 1
    });
}

#[test]
fn idle_timeout_closes_silent_connections_on_one_shard() {
    idle_timeout_closes_silent_connections(1);
}

#[test]
fn idle_timeout_closes_silent_connections_on_two_shards() {
    idle_timeout_closes_silent_connections(2);
}

/// The idle timeout counts what the server received, not what it sent: a
/// connection that only receives messages is still closed.
#[test]
fn idle_timeout_ignores_traffic_to_the_client() {
    // The talker sends every 100 ms: 20 times within the idle timeout.
    let server = Server::start(1, &["--idle-timeout-ms", "2000"]);
    server.add_member(7, 1);
    server.add_member(7, 2);
    let mut listener = server.chatd(1);
    listener.join(7);
    let mut talker = server.chatd(2);
    talker.join(7);
    let deadline = Instant::now() + common::WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "a connection that only receives was not closed as idle"
        );
        std::thread::sleep(Duration::from_millis(100));
        talker.rtmsg(7, 1, 0, 1, b"ping");
        talker.keepalive_roundtrip();
        match listener.try_recv() {
            Some(Ev::RtMsg { data, .. }) => assert_eq!(data, b"ping"),
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    talker.keepalive_roundtrip();
}

// ------------------------------------------------------------- isolation

fn bad_input_affects_only_its_connection(shards: usize) {
    let server = Server::start(shards, &[]);
    server.add_member(7, 1);
    let mut bad = server.chatd(1);
    let mut good = server.chatd(1);
    let mut pres = server.statusd(1, 3);
    assert!(!bad.join(7));
    assert!(!good.join(7));

    // OP_IN_CALL with status 7: BAD_COMMAND naming the room, then closed.
    let mut raw = vec![C_OP_IN_CALL];
    raw.extend_from_slice(&7u64.to_le_bytes());
    raw.push(7);
    bad.send_raw(&raw);
    bad.expect_error_and_close(BAD_COMMAND, C_OP_IN_CALL, 7);

    // The same user's other connection works, and got nothing from it.
    good.keepalive_roundtrip();
    assert!(!good.join(7));
    good.send(&Request::InCall {
        chatid: 7,
        in_call: true,
    });
    good.keepalive_roundtrip();
    pres.send(&sw::Request::Keepalive);
    assert_eq!(pres.recv(), SEv::Keepalive);
    // A room not joined is still refused politely on the good one.
    good.send(&Request::Join { chatid: 8 });
    good.expect(Ev::Error {
        code: NOT_MEMBER,
        opcode: C_OP_JOIN,
        id: 8,
    });
    good.keepalive_roundtrip();

    // Garbage on a statusd connection does not touch the others either.
    let mut bad_s = server.statusd(1, 3);
    bad_s.send_raw(&[0x7f, 1, 2, 3]);
    statusd_error_close(&mut bad_s, BAD_COMMAND, 0x7f, "statusd garbage");
    pres.send(&sw::Request::Keepalive);
    assert_eq!(pres.recv(), SEv::Keepalive);
    good.keepalive_roundtrip();

    // The closed connections' bookkeeping reaches the home shards on its
    // own schedule: no event says when, so poll (bounded).
    eventually(&server, "/v1/rooms/7", |r| r["joined_clients"] == 1);
    eventually(&server, "/v1/users/1", |u| {
        u["chatd_clients"] == 1 && u["statusd_clients"] == 1 && u["presence"] == 3
    });
}

#[test]
fn bad_input_affects_only_its_connection_on_one_shard() {
    bad_input_affects_only_its_connection(1);
}

#[test]
fn bad_input_affects_only_its_connection_on_two_shards() {
    bad_input_affects_only_its_connection(2);
}
