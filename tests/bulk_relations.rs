//! Bulk relation changes and large rooms (protocol 6.1, 6.2) against the
//! real binary: `PUT /v1/users/{a}/contacts` and `POST /v1/batch`
//! (validated whole, atomic, their net effect pushed once), a room of
//! 100,000 members in one PUT, the largest user id, and the body limit.
//!
//! "Nothing else was sent" is proven as in tests/presence.rs: everything
//! about one user reaches a watcher in order, so after the change under
//! test (and a later admin write, which waits until the change's pushes
//! are out), a presence change of that user must be the very next thing
//! the watcher gets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{SEv, Server, StatusdClient};
use serde_json::{json, Value};

const A: u64 = 1;
const B: u64 = 4;
const C: u64 = 8;

/// A presence no test uses otherwise.
const FENCE: u8 = 127;

fn batch(s: &Server, ops: Value) -> (u16, Value) {
    let (status, body) = s.http(
        "POST",
        "/v1/batch",
        Some(&json!({ "ops": ops }).to_string()),
        true,
    );
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Waits until the pushes of every earlier admin change are out: a write
/// is applied only after the previous change's pushes.
fn barrier(s: &Server) {
    s.add_member(999_999, 999_999);
    s.remove_member(999_999, 999_999);
}

/// `user` (already at presence `back`) briefly shows [`FENCE`] through a
/// second client: each watcher must get `OP_PRES user FENCE` next, then
/// `OP_PRES user back`, and the user's own client `own` the same as
/// `OP_PRES 0`.
fn fence(
    s: &Server,
    user: u64,
    back: u8,
    own: &mut StatusdClient,
    watchers: &mut [&mut StatusdClient],
) {
    barrier(s);
    let t = s.statusd(user, 0x80 | FENCE);
    own.expect_pres(0, FENCE);
    for w in watchers.iter_mut() {
        w.expect_pres(user, FENCE);
    }
    drop(t);
    own.expect_pres(0, back);
    for w in watchers.iter_mut() {
        w.expect_pres(user, back);
    }
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_str().expect("string").parse().expect("id"))
        .collect()
}

fn batch_net_effect(shards: usize) {
    let s = Server::start(shards, &[]);
    let mut a = s.statusd(A, 1);
    let mut b = s.statusd(B, 3);
    assert!(a.dump.is_empty() && b.dump.is_empty());

    // Added and removed in one batch: no push at all (proven below: the
    // next thing about B that A gets is the one push of the batch that
    // makes B visible).
    let (status, body) = batch(
        &s,
        json!([
            {"op": "put_room", "chatid": "7", "members": [A.to_string(), B.to_string()]},
            {"op": "delete_member", "chatid": "7", "userid": B.to_string()},
        ]),
    );
    assert_eq!((status, &body), (200, &json!({"applied": 2})));

    // Visible through four ops at once: one OP_PRES each way.
    let (status, _) = batch(
        &s,
        json!([
            {"op": "put_member", "chatid": "8", "userid": A.to_string()},
            {"op": "put_member", "chatid": "8", "userid": B.to_string()},
            {"op": "put_contact", "a": A.to_string(), "b": B.to_string()},
            {"op": "put_contacts", "userid": B.to_string(), "contacts": [A.to_string()]},
        ]),
    );
    assert_eq!(status, 200);
    a.expect_pres(B, 3);
    b.expect_pres(A, 1);
    fence(&s, B, 3, &mut b, &mut [&mut a]);
    fence(&s, A, 1, &mut a, &mut [&mut b]);

    // Invisible again through every one of them at once: one OP_PRES 0.
    let (status, _) = batch(
        &s,
        json!([
            {"op": "delete_room", "chatid": "8"},
            {"op": "put_contacts", "userid": A.to_string(), "contacts": []},
        ]),
    );
    assert_eq!(status, 200);
    a.expect_pres(B, 0);
    b.expect_pres(A, 0);
}

fn put_contacts_shows_and_hides(shards: usize) {
    let s = Server::start(shards, &[]);
    let _b = s.statusd(B, 3);
    let mut c = s.statusd(C, 2);
    let mut a = s.statusd(A, 1);
    let path = format!("/v1/users/{A}/contacts");
    s.admin_ok(
        "PUT",
        &path,
        Some(&format!(r#"{{"contacts":["{B}","{C}"]}}"#)),
        204,
    );
    let mut got = vec![pres(&mut a), pres(&mut a)];
    got.sort_unstable();
    assert_eq!(got, [(B, 3), (C, 2)]);
    c.expect_pres(A, 1);
    s.admin_ok(
        "PUT",
        &path,
        Some(&format!(r#"{{"contacts":["{C}"]}}"#)),
        204,
    );
    a.expect_pres(B, 0);
    let user = s.get_json(&format!("/v1/users/{C}"));
    assert_eq!(ids(&user["contacts"]), [A]);
    assert_eq!(
        ids(&s.get_json(&format!("/v1/users/{B}"))["contacts"]),
        Vec::<u64>::new()
    );
    fence(&s, C, 2, &mut c, &mut [&mut a]);
}

fn pres(c: &mut StatusdClient) -> (u64, u8) {
    match c.recv() {
        SEv::Pres { userid, presence } => (userid, presence),
        other => panic!("expected OP_PRES, got {other:?}"),
    }
}

#[test]
fn a_bad_op_refuses_the_whole_batch_and_names_it() {
    let s = Server::start(2, &[]);
    s.admin_ok("PUT", "/v1/rooms/7", Some(r#"{"members":["1","2"]}"#), 204);
    let before = (s.get_json("/v1/rooms/7"), s.get_json("/v1/users/1"));
    for (k, bad) in [
        json!({"op": "put_member", "chatid": "8", "userid": "0"}),
        json!({"op": "put_contact", "a": "3", "b": "3"}),
        json!({"op": "put_room", "chatid": "x", "members": []}),
        json!({"op": "put_member", "chatid": "8"}),
        json!({"op": "explode"}),
        json!("put_member"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut ops = vec![
            json!({"op": "delete_room", "chatid": "7"}),
            json!({"op": "put_contact", "a": "1", "b": "5"}),
        ];
        ops.push(bad.clone());
        let (status, body) = batch(&s, Value::Array(ops));
        assert_eq!(status, 400, "{k}: {bad}");
        assert_eq!(body["index"], json!(2), "{k}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    let (status, body) = batch(&s, json!({"op": "put_member"}));
    assert_eq!(status, 400);
    assert!(body.get("index").is_none(), "{body}");
    assert_eq!(
        (s.get_json("/v1/rooms/7"), s.get_json("/v1/users/1")),
        before
    );
}

#[test]
fn a_body_over_the_limit_is_413_and_changes_nothing() {
    // Plain HTTP whatever transport the suite runs over: the request is
    // written on one thread while the answer is read on another (the
    // server answers before it has read all 64 MiB), which a TLS stream
    // cannot be split for; the limit is the API's, not the transport's.
    let s = Server::start_over(common::TestTransport::Tcp, 1, &[]);
    let op = r#"{"op":"put_member","chatid":"7","userid":"1"},"#;
    let limit = 64 << 20;
    let mut body = String::with_capacity(limit + 2 * op.len());
    body.push_str(r#"{"ops":["#);
    while body.len() <= limit {
        body.push_str(op);
    }
    body.push_str(r#"{"op":"put_member","chatid":"7","userid":"1"}]}"#);
    let mut stream = TcpStream::connect(s.admin).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        s.admin_token,
        body.len()
    );
    let mut writer = stream.try_clone().expect("clone");
    let send = std::thread::spawn(move || {
        // The server may answer and close before it read everything.
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(body.as_bytes());
    });
    let mut resp = Vec::new();
    let _ = stream.read_to_end(&mut resp);
    let _ = send.join();
    let resp = String::from_utf8_lossy(&resp);
    assert!(
        resp.starts_with("HTTP/1.1 413"),
        "{}",
        &resp[..resp.len().min(200)]
    );
    let (status, _) = s.http("GET", "/v1/rooms/7", None, true);
    assert_eq!(status, 404);
}

/// Protocol 6.2: a room of 100,000 members in one PUT. (A debug build,
/// so only that it completes and reads back; the time and memory it
/// takes are measured by `loadgen bigroom`, bench/README.md.)
#[test]
fn a_room_of_100000_members_is_put_in_one_request() {
    let s = Server::start(2, &[]);
    let members: Vec<String> = (1..=100_000u64).map(|u| u.to_string()).collect();
    let body = json!({ "members": members }).to_string();
    let mut first = s.statusd(1, 3);
    let last = s.statusd(100_000, 2);
    s.admin_ok("PUT", "/v1/rooms/7", Some(&body), 204);
    first.expect_pres(100_000, 2);
    let room = s.get_json("/v1/rooms/7");
    let got = ids(&room["members"]);
    assert_eq!(got.len(), 100_000);
    assert_eq!((got[0], got[99_999]), (1, 100_000));
    assert_eq!(ids(&s.get_json("/v1/users/50000")["rooms"]), [7]);
    drop(last);
    first.expect_pres(100_000, 0);
}

/// Issue 15, item 7: the largest user id is a valid id. A contact with it
/// used to be counted twice at start-up (a release build; a debug build
/// panicked), so that deleting it left the pair visible.
#[test]
fn a_contact_with_the_largest_id_survives_a_restart_and_can_be_deleted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let max = u64::MAX;
    {
        let s = Server::start_in(&dir, 2, &[]).expect("server");
        s.add_contact(5, max);
    }
    let s = Server::start_in(&dir, 2, &[]).expect("server restarts");
    let mut top = s.statusd(max, 3);
    assert_eq!(top.dump, []);
    let five = s.statusd(5, 2);
    assert_eq!(five.dump, [(max, 3)]);
    top.expect_pres(5, 2);
    s.remove_contact(max, 5);
    top.expect_pres(5, 0);
    drop(five);
    let five = s.statusd(5, 2);
    assert_eq!(five.dump, [], "user 5 still sees {max}");
    assert_eq!(
        ids(&s.get_json("/v1/users/5")["contacts"]),
        Vec::<u64>::new()
    );
}

common::on_one_and_three_shards!(batch_net_effect, put_contacts_shows_and_hides);
