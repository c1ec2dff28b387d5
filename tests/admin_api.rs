//! The admin API and the command line (protocol sections 6 and 7) against
//! the real binary: authorization, every endpoint's JSON shape, 400s that
//! change nothing, tokens, persistence across a restart, a corrupt data
//! dir, live effects of relation changes, metrics, and the CHATD_* env.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use chatd_proto::chatd::Request;
use chatd_proto::statusd as sw;
use common::{
    eventually, http, sign_jwt, unix_now, wait_until, ChatdClient, Ev, SEv, Server, StatusdClient,
    WAIT,
};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

/// A JSON list of decimal-string ids, sorted numerically (the contract
/// does not fix the order).
fn ids(v: &Value) -> Vec<u64> {
    let mut out: Vec<u64> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| {
            x.as_str()
                .unwrap_or_else(|| panic!("id not a string: {x}"))
                .parse()
                .expect("decimal id")
        })
        .collect();
    out.sort_unstable();
    out
}

/// Every `/v1` endpoint: (method, path, body).
fn v1_endpoints() -> Vec<(&'static str, &'static str, Option<&'static str>)> {
    vec![
        ("PUT", "/v1/rooms/7/members/1", None),
        ("DELETE", "/v1/rooms/7/members/1", None),
        ("PUT", "/v1/rooms/7", Some(r#"{"members":["1","2"]}"#)),
        ("GET", "/v1/rooms/7", None),
        ("DELETE", "/v1/rooms/7", None),
        ("PUT", "/v1/users/1/contacts/2", None),
        ("DELETE", "/v1/users/1/contacts/2", None),
        ("GET", "/v1/users/1", None),
        (
            "POST",
            "/v1/tokens",
            Some(r#"{"userid":"1","ttl_secs":60}"#),
        ),
    ]
}

#[test]
fn v1_needs_the_admin_token() {
    let server = Server::start(1, &[]);
    for (method, path, body) in v1_endpoints() {
        for token in [
            None,
            Some("wrong-token"),
            Some(""),
            Some(&server.admin_token[1..]),
        ] {
            let (status, text) = http(server.admin, method, path, body, token);
            assert_eq!(status, 401, "{method} {path} with {token:?}: {text}");
        }
        // A right token in the wrong scheme is refused too.
        let mut s = common::wire::admin_socket(server.admin);
        use std::io::{Read, Write};
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            server.admin_token
        );
        s.write_all(req.as_bytes()).expect("write");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        assert!(resp.starts_with("HTTP/1.1 401"), "{method} {path}: {resp}");
    }
    // Nothing the refused requests asked for happened.
    server.admin_ok("GET", "/v1/rooms/7", None, 404);
    let user = server.get_json("/v1/users/1");
    assert_eq!(user["contacts"], json!([]));
    assert_eq!(user["rooms"], json!([]));
}

#[test]
fn healthz_and_metrics_need_no_token_and_metrics_count_logins() {
    let server = Server::start(2, &[]);
    let (status, _) = server.http("GET", "/healthz", None, false);
    assert_eq!(status, 200);
    let metric = |name: &str| -> i64 {
        let (status, text) = server.http("GET", "/metrics", None, false);
        assert_eq!(status, 200);
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} line in:\n{text}"))
            .trim()
            .parse()
            .expect("number")
    };
    let logins = r#"chatd_logins_total{service="chatd"}"#;
    let s_logins = r#"chatd_logins_total{service="statusd"}"#;
    let conns = r#"chatd_connections{service="chatd"}"#;
    let writes = r#"chatd_socket_writes_total{service="chatd"}"#;
    assert_eq!(metric(logins), 0);
    assert_eq!(metric(conns), 0);
    assert_eq!(metric(writes), 0);
    let mut c = server.chatd(1);
    assert_eq!(metric(logins), 1);
    assert_eq!(metric(conns), 1);
    // The OP_HELLO reply was one write (counted once it completed, which
    // may be just after the client read it).
    wait_until("the login's write to be counted", || metric(writes) >= 1);
    let before = metric(writes);
    c.keepalive_roundtrip();
    wait_until("the keepalive's write to be counted", || {
        metric(writes) > before
    });
    let _s = server.statusd(1, 3);
    assert_eq!(metric(s_logins), 1);
    assert_eq!(metric(logins), 1);
    // A refused login is not counted.
    let mut bad = ChatdClient::connect(server.chatd);
    bad.send(&Request::Auth { token: b"x.y.z" });
    bad.expect_error_and_close(2, 0x06, 0);
    c.keepalive_roundtrip();
    assert_eq!(metric(logins), 1);
}

#[test]
fn endpoints_answer_with_the_documented_shapes() {
    let server = Server::start(2, &[]);
    // An unknown user: zeros and empty lists.
    assert_eq!(
        server.get_json("/v1/users/99"),
        json!({"userid":"99","presence":0,"statusd_clients":0,"chatd_clients":0,
               "contacts":[],"rooms":[]})
    );
    // A room without members is 404 (with a JSON body).
    let (status, body) = server.http("GET", "/v1/rooms/7", None, true);
    assert_eq!(status, 404);
    serde_json::from_str::<Value>(&body).expect("404 body is JSON");

    // Members, idempotently.
    server.admin_ok("PUT", "/v1/rooms/7/members/1", None, 204);
    server.admin_ok("PUT", "/v1/rooms/7/members/1", None, 204);
    server.admin_ok("PUT", "/v1/rooms/7/members/3", None, 204);
    assert_eq!(
        server.get_json("/v1/rooms/7"),
        json!({"chatid":"7","members":["1","3"],"joined_clients":0,"in_call":false,
               "call_users":[]})
    );
    server.admin_ok("DELETE", "/v1/rooms/7/members/3", None, 204);
    server.admin_ok("DELETE", "/v1/rooms/7/members/3", None, 204);
    assert_eq!(ids(&server.get_json("/v1/rooms/7")["members"]), [1]);

    // PUT room replaces the member list.
    server.admin_ok("PUT", "/v1/rooms/7", Some(r#"{"members":["2","5"]}"#), 204);
    assert_eq!(ids(&server.get_json("/v1/rooms/7")["members"]), [2, 5]);
    assert_eq!(server.get_json("/v1/users/1")["rooms"], json!([]));
    assert_eq!(server.get_json("/v1/users/5")["rooms"], json!(["7"]));
    // An empty list empties the room.
    server.admin_ok("PUT", "/v1/rooms/7", Some(r#"{"members":[]}"#), 204);
    server.admin_ok("GET", "/v1/rooms/7", None, 404);

    // DELETE room: 204 with members and without.
    server.admin_ok("PUT", "/v1/rooms/8", Some(r#"{"members":["1","2"]}"#), 204);
    server.admin_ok("DELETE", "/v1/rooms/8", None, 204);
    server.admin_ok("GET", "/v1/rooms/8", None, 404);
    server.admin_ok("DELETE", "/v1/rooms/8", None, 204);
    server.admin_ok("DELETE", "/v1/rooms/12345", None, 204);

    // Contacts are symmetric.
    server.admin_ok("PUT", "/v1/users/1/contacts/2", None, 204);
    server.admin_ok("PUT", "/v1/users/1/contacts/2", None, 204);
    assert_eq!(server.get_json("/v1/users/1")["contacts"], json!(["2"]));
    assert_eq!(server.get_json("/v1/users/2")["contacts"], json!(["1"]));
    server.admin_ok("PUT", "/v1/users/3/contacts/1", None, 204);
    assert_eq!(ids(&server.get_json("/v1/users/1")["contacts"]), [2, 3]);
    // Removing from the other side removes both directions.
    server.admin_ok("DELETE", "/v1/users/2/contacts/1", None, 204);
    server.admin_ok("DELETE", "/v1/users/2/contacts/1", None, 204);
    assert_eq!(server.get_json("/v1/users/1")["contacts"], json!(["3"]));
    assert_eq!(server.get_json("/v1/users/2")["contacts"], json!([]));

    // Live fields of a user.
    server.admin_ok("PUT", "/v1/rooms/9/members/1", None, 204);
    let _c = server.chatd(1);
    let _s1 = server.statusd(1, 3);
    let _s2 = server.statusd(1, 0x82);
    let user = eventually(&server, "/v1/users/1", |u| {
        u["chatd_clients"] == 1 && u["statusd_clients"] == 2
    });
    assert_eq!(
        user,
        json!({"userid":"1","presence":3,"statusd_clients":2,"chatd_clients":1,
               "contacts":["3"],"rooms":["9"]})
    );
}

/// GET room's live fields: joined connections, the call flag and its users.
fn room_live_fields(shards: usize) {
    let server = Server::start(shards, &[]);
    server.admin_ok("PUT", "/v1/rooms/7", Some(r#"{"members":["1","2"]}"#), 204);
    let mut a1 = server.chatd(1);
    let mut a2 = server.chatd(1);
    let mut b = server.chatd(2);
    for c in [&mut a1, &mut a2, &mut b] {
        assert!(!c.join(7));
    }
    let room = server.get_json("/v1/rooms/7");
    assert_eq!(room["joined_clients"], 3);
    assert_eq!(room["in_call"], false);
    assert_eq!(room["call_users"], json!([]));

    a1.send(&Request::InCall {
        chatid: 7,
        in_call: true,
    });
    b.send(&Request::InCall {
        chatid: 7,
        in_call: true,
    });
    for c in [&mut a1, &mut a2, &mut b] {
        c.expect(Ev::InCall(7, true));
    }
    let room = server.get_json("/v1/rooms/7");
    assert_eq!(room["in_call"], true);
    assert_eq!(ids(&room["call_users"]), [1, 2]);

    a2.send(&Request::Leave { chatid: 7 });
    a2.expect(Ev::Leave(7));
    let room = server.get_json("/v1/rooms/7");
    assert_eq!(room["joined_clients"], 2);
    assert_eq!(room["chatid"], "7");
    assert_eq!(ids(&room["members"]), [1, 2]);
}

#[test]
fn room_live_fields_on_one_shard() {
    room_live_fields(1);
}

#[test]
fn room_live_fields_on_two_shards() {
    room_live_fields(2);
}

#[test]
fn bad_requests_are_400_with_json_and_change_nothing() {
    let server = Server::start(2, &[]);
    server.admin_ok("PUT", "/v1/rooms/7", Some(r#"{"members":["1","2"]}"#), 204);
    server.admin_ok("PUT", "/v1/users/1/contacts/2", None, 204);
    let room_before = server.get_json("/v1/rooms/7");
    let users_before: Vec<Value> = (1..=3)
        .map(|u| server.get_json(&format!("/v1/users/{u}")))
        .collect();

    let over = "18446744073709551616";
    let bad: Vec<(&str, String, Option<&str>)> = vec![
        // Non-numeric, zero, over-u64 and signed ids in every path position.
        ("PUT", "/v1/rooms/abc/members/3".into(), None),
        ("PUT", "/v1/rooms/7/members/abc".into(), None),
        ("PUT", "/v1/rooms/0/members/3".into(), None),
        ("PUT", "/v1/rooms/7/members/0".into(), None),
        ("PUT", format!("/v1/rooms/{over}/members/3"), None),
        ("PUT", format!("/v1/rooms/7/members/{over}"), None),
        ("PUT", "/v1/rooms/7/members/-3".into(), None),
        ("DELETE", "/v1/rooms/7/members/x".into(), None),
        ("DELETE", "/v1/rooms/7/members/0".into(), None),
        ("DELETE", "/v1/rooms/x/members/1".into(), None),
        ("GET", "/v1/rooms/abc".into(), None),
        ("GET", "/v1/rooms/0".into(), None),
        ("GET", format!("/v1/rooms/{over}"), None),
        ("DELETE", "/v1/rooms/0".into(), None),
        ("DELETE", "/v1/rooms/1.5".into(), None),
        ("GET", "/v1/users/abc".into(), None),
        ("GET", "/v1/users/0".into(), None),
        ("GET", format!("/v1/users/{over}"), None),
        ("PUT", "/v1/users/1/contacts/abc".into(), None),
        ("PUT", "/v1/users/0/contacts/3".into(), None),
        ("PUT", format!("/v1/users/1/contacts/{over}"), None),
        ("DELETE", "/v1/users/1/contacts/0".into(), None),
        // Contact with self.
        ("PUT", "/v1/users/1/contacts/1".into(), None),
        ("DELETE", "/v1/users/2/contacts/2".into(), None),
        // PUT room bodies.
        ("PUT", "/v1/rooms/7".into(), Some("not json")),
        ("PUT", "/v1/rooms/7".into(), Some(r#"{"members":["3""#)),
        ("PUT", "/v1/rooms/7".into(), Some("")),
        ("PUT", "/v1/rooms/7".into(), Some(r#"{"members":[3,4]}"#)),
        ("PUT", "/v1/rooms/7".into(), Some(r#"{"members":"3"}"#)),
        (
            "PUT",
            "/v1/rooms/7".into(),
            Some(r#"{"members":["3","x"]}"#),
        ),
        (
            "PUT",
            "/v1/rooms/7".into(),
            Some(r#"{"members":["3","0"]}"#),
        ),
        (
            "PUT",
            "/v1/rooms/7".into(),
            Some(r#"{"members":["3","18446744073709551616"]}"#),
        ),
        ("PUT", "/v1/rooms/7".into(), Some(r#"{}"#)),
        ("PUT", "/v1/rooms/0".into(), Some(r#"{"members":["3"]}"#)),
        ("PUT", "/v1/rooms/x".into(), Some(r#"{"members":["3"]}"#)),
        // Token bodies.
        ("POST", "/v1/tokens".into(), Some("not json")),
        (
            "POST",
            "/v1/tokens".into(),
            Some(r#"{"userid":"0","ttl_secs":60}"#),
        ),
        (
            "POST",
            "/v1/tokens".into(),
            Some(r#"{"userid":"x","ttl_secs":60}"#),
        ),
        (
            "POST",
            "/v1/tokens".into(),
            Some(r#"{"userid":1,"ttl_secs":60}"#),
        ),
        (
            "POST",
            "/v1/tokens".into(),
            Some(r#"{"userid":"1","ttl_secs":0}"#),
        ),
        ("POST", "/v1/tokens".into(), Some(r#"{"ttl_secs":60}"#)),
    ];
    for (method, path, body) in &bad {
        let (status, text) = server.http(method, path, *body, true);
        assert_eq!(status, 400, "{method} {path} {body:?}: {text}");
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: body {text:?} not JSON: {e}"));
        assert!(v.is_object(), "{method} {path}: {text}");
    }
    assert_eq!(server.get_json("/v1/rooms/7"), room_before);
    for (u, before) in (1..=3).zip(&users_before) {
        assert_eq!(&server.get_json(&format!("/v1/users/{u}")), before);
    }
}

#[test]
fn issued_tokens_log_in_on_both_services() {
    let server = Server::start(2, &[]);
    let body = server.admin_ok(
        "POST",
        "/v1/tokens",
        Some(r#"{"userid":"5","ttl_secs":60}"#),
        200,
    );
    let v: Value = serde_json::from_str(&body).expect("json");
    let obj = v.as_object().expect("object");
    assert_eq!(obj.len(), 1, "{body}");
    let token = obj["token"].as_str().expect("token string");
    let mut c = ChatdClient::connect(server.chatd);
    c.login(token);
    assert_ne!(c.client_id, 0);
    let mut s = StatusdClient::connect(server.statusd);
    s.send(&sw::Request::Auth {
        token: token.as_bytes(),
    });
    s.send(&sw::Request::Hello {
        version: 1,
        presence: 4,
    });
    s.read_dump();
    assert_eq!(s.own, 4);
    // The token is for user 5.
    eventually(&server, "/v1/users/5", |u| {
        u["chatd_clients"] == 1 && u["statusd_clients"] == 1 && u["presence"] == 4
    });
}

/// Relations survive SIGTERM and a restart on the same data dir, and so do
/// the generated secrets (a token from before still logs in).
#[test]
fn relations_and_secrets_survive_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let mut server = Server::start_in(&dir, 2, &[]).expect("start");
    server.admin_ok("PUT", "/v1/rooms/7/members/1", None, 204);
    server.admin_ok("PUT", "/v1/rooms/7/members/2", None, 204);
    server.admin_ok("PUT", "/v1/rooms/8", Some(r#"{"members":["4","5"]}"#), 204);
    server.admin_ok("PUT", "/v1/rooms/9/members/6", None, 204);
    server.admin_ok("DELETE", "/v1/rooms/9", None, 204);
    server.admin_ok("DELETE", "/v1/rooms/7/members/2", None, 204);
    server.admin_ok("PUT", "/v1/users/1/contacts/3", None, 204);
    server.admin_ok("PUT", "/v1/users/1/contacts/4", None, 204);
    server.admin_ok("DELETE", "/v1/users/4/contacts/1", None, 204);
    let token1 = server.token(1);
    let token2 = server.token(2);
    let admin_token = server.admin_token.clone();
    assert_eq!(server.terminate(), Some(0));

    let server = Server::start_in(&dir, 2, &[]).expect("restart");
    assert_eq!(server.admin_token, admin_token);
    assert_eq!(ids(&server.get_json("/v1/rooms/7")["members"]), [1]);
    assert_eq!(ids(&server.get_json("/v1/rooms/8")["members"]), [4, 5]);
    server.admin_ok("GET", "/v1/rooms/9", None, 404);
    assert_eq!(server.get_json("/v1/users/1")["contacts"], json!(["3"]));
    assert_eq!(server.get_json("/v1/users/3")["contacts"], json!(["1"]));
    assert_eq!(server.get_json("/v1/users/4")["contacts"], json!([]));
    assert_eq!(server.get_json("/v1/users/1")["rooms"], json!(["7"]));

    // The loaded relations are live: 1 may join 7, 2 may not.
    let mut a = ChatdClient::connect(server.chatd);
    a.login(&token1);
    assert!(!a.join(7));
    let mut b = ChatdClient::connect(server.chatd);
    b.login(&token2);
    b.send(&Request::Join { chatid: 7 });
    b.expect(Ev::Error {
        code: 4,
        opcode: 0x01,
        id: 7,
    });
    b.keepalive_roundtrip();
}

/// Waits for a child to exit, bounded; returns (success, stderr).
fn wait_exit(child: Child) -> (bool, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(out) => {
            let out = out.expect("wait");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            panic!("chatd did not exit within {WAIT:?}");
        }
    }
}

#[test]
fn corrupt_data_dir_fails_start_with_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("relations.redb"),
        b"this is not a redb database, just garbage bytes \x00\x01\x02\xff".repeat(64),
    )
    .expect("write garbage");
    let child = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["--chatd-listen", "127.0.0.1:0"])
        .args(["--statusd-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--ws-listen", "127.0.0.1:0"])
        .args(["--shards", "1", "--no-pin"])
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("CHATD_JWT_SECRET")
        .env_remove("CHATD_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chatd");
    let (ok, stderr) = wait_exit(child);
    assert!(!ok, "chatd started on a corrupt data dir; stderr: {stderr}");
    assert!(
        stderr.contains(dir.to_str().expect("utf-8 path")) && stderr.contains("data dir"),
        "stderr does not name the data dir: {stderr}"
    );
}

/// Relation changes reach live connections at once (section 6 with 4.2).
fn relation_changes_apply_to_live_connections(shards: usize) {
    let server = Server::start(shards, &[]);
    let mut a = server.chatd(1);
    // Not a member yet: NOT_MEMBER, and the connection stays open.
    a.send(&Request::Join { chatid: 9 });
    a.expect(Ev::Error {
        code: 4,
        opcode: 0x01,
        id: 9,
    });
    a.keepalive_roundtrip();
    server.admin_ok("PUT", "/v1/rooms/9/members/1", None, 204);
    assert!(!a.join(9));
    // Losing membership sends OP_LEAVE to the joined connection.
    server.admin_ok("DELETE", "/v1/rooms/9/members/1", None, 204);
    a.expect(Ev::Leave(9));
    a.send(&Request::Join { chatid: 9 });
    a.expect(Ev::Error {
        code: 4,
        opcode: 0x01,
        id: 9,
    });
    // PUT room without the user: OP_LEAVE too.
    server.admin_ok("PUT", "/v1/rooms/9", Some(r#"{"members":["1","2"]}"#), 204);
    assert!(!a.join(9));
    server.admin_ok("PUT", "/v1/rooms/9", Some(r#"{"members":["2"]}"#), 204);
    a.expect(Ev::Leave(9));
    // DELETE room: OP_LEAVE to every joined connection.
    server.admin_ok("PUT", "/v1/rooms/9", Some(r#"{"members":["1","2"]}"#), 204);
    assert!(!a.join(9));
    let mut b = server.chatd(2);
    assert!(!b.join(9));
    server.admin_ok("DELETE", "/v1/rooms/9", None, 204);
    a.expect(Ev::Leave(9));
    b.expect(Ev::Leave(9));
    a.keepalive_roundtrip();
    b.keepalive_roundtrip();
    server.admin_ok("GET", "/v1/rooms/9", None, 404);
}

#[test]
fn relation_changes_apply_to_live_connections_on_one_shard() {
    relation_changes_apply_to_live_connections(1);
}

#[test]
fn relation_changes_apply_to_live_connections_on_two_shards() {
    relation_changes_apply_to_live_connections(2);
}

/// A server spawned directly (for env-var tests the harness cannot do).
struct Direct {
    child: Child,
    chatd: common::Endpoint,
    statusd: common::Endpoint,
    admin: SocketAddr,
}

impl Direct {
    fn spawn(cmd: &mut Command) -> Direct {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chatd");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut addr = |name: &str| -> SocketAddr {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("chatd exited before printing {name}"))
                .expect("read line");
            line.strip_prefix(&format!("{name} listening on "))
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .parse()
                .expect("address")
        };
        let (chatd, statusd, admin, ws) =
            (addr("chatd"), addr("statusd"), addr("admin"), addr("ws"));
        std::thread::spawn(move || for _ in lines {});
        let endpoint = |service, tcp| common::Endpoint {
            service,
            tcp,
            ws,
            transport: common::transport(),
        };
        Direct {
            child,
            chatd: endpoint(common::Svc::Chatd, chatd),
            statusd: endpoint(common::Svc::Statusd, statusd),
            admin,
        }
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Many hosts give processes a soft open-file limit of 1024: the server
/// raises its own to the hard limit at start, so `--max-connections`'
/// default follows the administrator's real ceiling.
#[test]
fn soft_open_file_limit_is_raised_to_the_hard_limit() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = common::chatd_command(&tmp.path().join("data"), 1);
    // SAFETY: runs in the child between fork and exec; getrlimit and
    // setrlimit are async-signal-safe and touch only this stack's struct.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_cur = 64.min(lim.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Direct::spawn(&mut cmd);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id()))
        .expect("read /proc/<pid>/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let f: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (f[3], f[4]);
    assert!(
        hard == "unlimited" || hard.parse::<u64>().expect("hard") > 64,
        "{line}"
    );
    assert_eq!(soft, hard, "{line}");
}

/// The status of `GET /v1/users/1` sent with `Authorization: <value>`.
fn status_with_authorization(admin: SocketAddr, value: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = common::wire::admin_socket(admin);
    let req = format!(
        "GET /v1/users/1 HTTP/1.1\r\nHost: x\r\nAuthorization: {value}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("write");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status")
}

/// The Bearer scheme name is case-insensitive (RFC 7235) and may be
/// followed by more than one space; the token itself must match exactly.
#[test]
fn bearer_scheme_is_case_insensitive() {
    let server = Server::start(1, &[]);
    let t = &server.admin_token;
    for value in [
        format!("Bearer {t}"),
        format!("bearer {t}"),
        format!("BEARER {t}"),
        format!("Bearer   {t}"),
    ] {
        assert_eq!(
            status_with_authorization(server.admin, &value),
            200,
            "{value}"
        );
    }
    for value in [
        format!("bearer {}", t.to_uppercase()),
        format!("Bearer{t}"),
        format!("Basic {t}"),
        "Bearer ".to_string(),
        "bearer".to_string(),
    ] {
        assert_eq!(
            status_with_authorization(server.admin, &value),
            401,
            "{value}"
        );
    }
}

/// A blank `--jwt-secret` / `--admin-token` (an empty `CHATD_*` variable
/// left by a template, say) is not a secret: the server generates its
/// files as if none was given, so nobody can sign tokens with an empty
/// key and the admin API is usable.
#[test]
fn blank_secrets_count_as_not_given() {
    let server = Server::start(1, &["--jwt-secret=", "--admin-token= "]);
    let secret = std::fs::read_to_string(server.data_dir.join("jwt.secret")).expect("jwt.secret");
    assert!(secret.trim().len() >= 32, "generated secret: {secret:?}");
    // Server::start read the generated admin token; it works.
    let (status, body) = http(
        server.admin,
        "GET",
        "/v1/users/1",
        None,
        Some(&server.admin_token),
    );
    assert_eq!(status, 200, "{body}");
    // A token signed with the empty key is refused.
    let forged = sign_jwt(
        "",
        Algorithm::HS256,
        &json!({"sub": "42", "exp": unix_now() + 60}),
    );
    let mut bad = ChatdClient::connect(server.chatd);
    bad.send(&Request::Auth {
        token: forged.as_bytes(),
    });
    bad.expect_error_and_close(2, 0x06, 0);
    // One signed with the generated secret logs in.
    let mut c = ChatdClient::connect(server.chatd);
    c.login(&server.token(42));
}

/// The TLS pair as environment variables, when the suite runs over TLS.
fn tls_env() -> Vec<(&'static str, std::path::PathBuf)> {
    if !common::transport().tls() {
        return Vec::new();
    }
    let tls = common::test_tls();
    vec![
        ("CHATD_TLS_CERT", tls.cert.clone()),
        ("CHATD_TLS_KEY", tls.key.clone()),
    ]
}

/// Every flag reads its CHATD_* variable: the whole configuration given by
/// env, the secret and admin token used, and no secret file written.
#[test]
fn flags_read_chatd_env_vars() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let secret = "env-jwt-secret-for-the-test";
    let admin_token = "env-admin-token-for-the-test";
    let server = Direct::spawn(
        Command::new(env!("CARGO_BIN_EXE_chatd"))
            .arg("--no-pin")
            .env("CHATD_CHATD_LISTEN", "127.0.0.1:0")
            .env("CHATD_STATUSD_LISTEN", "127.0.0.1:0")
            .env("CHATD_ADMIN_LISTEN", "127.0.0.1:0")
            .env("CHATD_WS_LISTEN", "127.0.0.1:0")
            .env("CHATD_DATA_DIR", &dir)
            .env("CHATD_SHARDS", "2")
            .env("CHATD_IO_BACKEND", common::backend())
            .env("CHATD_JWT_SECRET", secret)
            .env("CHATD_ADMIN_TOKEN", admin_token)
            .env("CHATD_FIRST_CLIENT_ID", "4242")
            .envs(tls_env()),
    );
    // The admin token from the env is the one that works.
    let (status, body) = http(server.admin, "GET", "/v1/users/1", None, Some(admin_token));
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(server.admin, "GET", "/v1/users/1", None, Some("other"));
    assert_eq!(status, 401);

    // A token signed by hand with the env secret logs in on both services.
    let token = sign_jwt(
        secret,
        Algorithm::HS256,
        &json!({"sub": "42", "exp": unix_now() + 60}),
    );
    let mut c = ChatdClient::connect(server.chatd);
    c.login(&token);
    assert_eq!(c.client_id, 4242, "CHATD_FIRST_CLIENT_ID not read");
    let mut s = StatusdClient::connect(server.statusd);
    s.send(&sw::Request::Auth {
        token: token.as_bytes(),
    });
    s.send(&sw::Request::Hello {
        version: 1,
        presence: 3,
    });
    s.read_dump();
    assert_eq!(s.own, 3);
    s.send(&sw::Request::Keepalive);
    assert_eq!(s.recv(), SEv::Keepalive);
    // One signed with another secret does not.
    let other = sign_jwt(
        "some-other-secret",
        Algorithm::HS256,
        &json!({"sub": "42", "exp": unix_now() + 60}),
    );
    let mut bad = ChatdClient::connect(server.chatd);
    bad.send(&Request::Auth {
        token: other.as_bytes(),
    });
    bad.expect_error_and_close(2, 0x06, 0);
    // Tokens the API issues are signed with it too.
    let (status, body) = http(
        server.admin,
        "POST",
        "/v1/tokens",
        Some(r#"{"userid":"7","ttl_secs":60}"#),
        Some(admin_token),
    );
    assert_eq!(status, 200, "{body}");
    let issued: Value = serde_json::from_str(&body).expect("json");
    let mut c7 = ChatdClient::connect(server.chatd);
    c7.login(issued["token"].as_str().expect("token"));

    assert!(
        dir.join("relations.redb").exists(),
        "CHATD_DATA_DIR not used"
    );
    assert!(!dir.join("jwt.secret").exists(), "jwt.secret written");
    assert!(!dir.join("admin.token").exists(), "admin.token written");
}

/// The flag form of the secret works too, and writes no jwt.secret.
#[test]
fn jwt_secret_flag_is_used() {
    let server = Server::start(1, &["--jwt-secret", "flag-secret"]);
    let token = sign_jwt(
        "flag-secret",
        Algorithm::HS256,
        &json!({"sub": "3", "exp": unix_now() + 60}),
    );
    let mut c = ChatdClient::connect(server.chatd);
    c.login(&token);
    assert!(!server.data_dir.join("jwt.secret").exists());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn generated_secrets_are_owner_only() {
    let server = Server::start(1, &[]);
    for name in ["jwt.secret", "admin.token"] {
        let path = server.data_dir.join(name);
        assert_eq!(mode(&path), 0o600, "{name}");
        assert!(
            std::fs::read_to_string(&path).expect(name).trim().len() >= 16,
            "{name} is too short to be a secret"
        );
    }
    assert_ne!(server.jwt_secret(), server.admin_token);
    // The generated secret is the one tokens are checked with.
    let token = sign_jwt(
        &server.jwt_secret(),
        Algorithm::HS256,
        &json!({"sub": "3", "exp": unix_now() + 60}),
    );
    let mut c = ChatdClient::connect(server.chatd);
    c.login(&token);
}

/// "Every /v1 request" includes ones that match no endpoint: without the
/// token they are 401 too; with it, 404 or 405.
#[test]
fn unmatched_v1_requests_need_the_token_too() {
    let server = Server::start(1, &[]);
    for (method, path, want) in [
        ("GET", "/v1/nothing", 404),
        ("GET", "/v1", 404),
        ("GET", "/v1/rooms/7/", 404),
        ("GET", "/v1/rooms/7/members/1", 405),
        ("POST", "/v1/rooms/7", 405),
        ("GET", "/v1/tokens", 405),
    ] {
        let (status, body) = http(server.admin, method, path, None, None);
        assert_eq!(status, 401, "{method} {path} without token: {body}");
        let (status, body) = http(server.admin, method, path, None, Some("wrong"));
        assert_eq!(status, 401, "{method} {path} wrong token: {body}");
        let (status, body) = server.http(method, path, None, true);
        assert_eq!(status, want, "{method} {path} with token: {body}");
    }
    let (status, _) = server.http("GET", "/nothing", None, false);
    assert_eq!(status, 404);
}
