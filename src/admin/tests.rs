//! Admin API tests over real sockets: the router served by [`serve`] on
//! 127.0.0.1:0, a minimal HTTP/1.1 client, and fake shards that record the
//! net changes they are given.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

use serde_json::{json, Value};

use super::control::{BoxFuture, Pushes, RoomLive, ShardControl, ShardGone, UserLive};
use super::*;
use crate::auth::Authenticator;
use crate::ids::{ChatId, UserId};
use crate::store::db::FlakyBackend;
use crate::store::{NetChange, Store};

const TOKEN: &str = "admin-secret-token";
const JWT_SECRET: &[u8] = b"jwt secret";
const NOW: u64 = 1_700_000_000;

fn fixed_now() -> u64 {
    NOW
}

/// Shards that record applied changes, keep the memberships (to answer
/// which rooms a user is in) and report canned live state.
#[derive(Default)]
struct FakeShards {
    applied: Mutex<Vec<NetChange>>,
    calls: Mutex<usize>,
    /// `(user, chat)`.
    members: Mutex<BTreeSet<(u64, u64)>>,
    /// Shard 1 is gone: it applies nothing and answers nothing.
    gone: AtomicBool,
}

impl ShardControl for FakeShards {
    fn apply(&self, change: Arc<NetChange>) -> BoxFuture<Result<Pushes, ShardGone>> {
        *self.calls.lock().unwrap() += 1;
        if self.gone.load(Ordering::SeqCst) {
            return Box::pin(async { Err(ShardGone(1)) });
        }
        let mut members = self.members.lock().unwrap();
        for &(c, u) in &change.members_added {
            members.insert((u, c));
        }
        for &(c, u) in &change.members_removed {
            members.remove(&(u, c));
        }
        self.applied.lock().unwrap().push((*change).clone());
        Box::pin(async { Ok(Pushes(Box::pin(async {}))) })
    }
    fn user_rooms(&self, user: UserId) -> BoxFuture<Result<Vec<ChatId>, ShardGone>> {
        if self.gone.load(Ordering::SeqCst) {
            return Box::pin(async { Err(ShardGone(1)) });
        }
        let rooms = self
            .members
            .lock()
            .unwrap()
            .range((user, 0)..=(user, u64::MAX))
            .map(|&(_, c)| c)
            .collect();
        Box::pin(async { Ok(rooms) })
    }
    fn room_live(&self, _chat: ChatId) -> BoxFuture<Result<RoomLive, ShardGone>> {
        let gone = self.gone.load(Ordering::SeqCst);
        Box::pin(async move {
            if gone {
                return Err(ShardGone(1));
            }
            Ok(RoomLive {
                joined_clients: 3,
                in_call: true,
                call_users: vec![1, 2],
            })
        })
    }
    fn user_live(&self, _user: UserId) -> BoxFuture<Result<UserLive, ShardGone>> {
        let gone = self.gone.load(Ordering::SeqCst);
        Box::pin(async move {
            if gone {
                return Err(ShardGone(1));
            }
            Ok(UserLive {
                presence: 3,
                statusd_clients: 2,
                chatd_clients: 1,
            })
        })
    }
    fn metrics_text(&self) -> String {
        "chatd_test_metric 1\n".to_owned()
    }
}

impl FakeShards {
    fn take(&self) -> Vec<NetChange> {
        std::mem::take(&mut self.applied.lock().unwrap())
    }
}

fn members(added: &[(u64, u64)], removed: &[(u64, u64)]) -> NetChange {
    NetChange {
        members_added: added.to_vec(),
        members_removed: removed.to_vec(),
        ..NetChange::default()
    }
}

fn contacts(added: &[(u64, u64)], removed: &[(u64, u64)]) -> NetChange {
    NetChange {
        contacts_added: added.to_vec(),
        contacts_removed: removed.to_vec(),
        ..NetChange::default()
    }
}

/// A served API; stopped and joined on drop.
struct Server {
    addr: SocketAddr,
    shards: Arc<FakeShards>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    fn start(store: Store) -> Server {
        let shards = Arc::new(FakeShards::default());
        // What the server's start-up installs on the shards.
        let loaded = store.load(1, |_| 0, |_| 0).unwrap();
        *shards.members.lock().unwrap() = loaded.memberships[0].iter().collect();
        let config = AdminConfig {
            token: TOKEN.to_owned(),
            now: fixed_now,
        };
        let auth = Authenticator::new(JWT_SECRET);
        let admin = Arc::new(Admin::new(config, store, auth, shards.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            serve(listener, admin, None, async move {
                let _ = stopped.await;
            })
        });
        Server {
            addr,
            shards,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn in_dir(dir: &std::path::Path) -> Server {
        Server::start(Store::open(dir).unwrap())
    }

    /// Sends one request with the admin token.
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        self.raw(method, path, Some(&format!("Bearer {TOKEN}")), body)
    }

    /// Sends one request with `authorization` as given.
    fn raw(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Option<&str>,
    ) -> Resp {
        let mut s = TcpStream::connect(self.addr).unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        if let Some(a) = authorization {
            req += &format!("Authorization: {a}\r\n");
        }
        let body = body.unwrap_or("");
        req += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        let status = head[9..12].parse().unwrap();
        let content_type = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type: ")
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        Resp {
            status,
            content_type,
            body: body.to_owned(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

struct Resp {
    status: u16,
    content_type: String,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        assert!(
            self.content_type.starts_with("application/json"),
            "{}",
            self.content_type
        );
        serde_json::from_str(&self.body).unwrap()
    }

    /// Asserts an error status with a JSON `{"error": "..."}` body.
    fn assert_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        self.json()["error"].as_str().unwrap().to_owned()
    }
}

#[test]
fn v1_requests_without_the_right_token_are_401() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::in_dir(tmp.path());
    for auth in [
        None,
        Some(format!("Bearer {TOKEN}x")),
        Some("Bearer admin-secret-toke".to_owned()),
        Some(format!("Basic {TOKEN}")),
        Some(format!("bearer {}", TOKEN.to_uppercase())),
        Some(TOKEN.to_owned()),
        Some("Bearer ".to_owned()),
    ] {
        for (method, path) in [
            ("PUT", "/v1/rooms/7/members/1"),
            ("GET", "/v1/rooms/7"),
            ("GET", "/v1/users/1"),
            ("POST", "/v1/tokens"),
        ] {
            let r = srv.raw(method, path, auth.as_deref(), None);
            r.assert_error(401);
        }
    }
    assert_eq!(*srv.shards.calls.lock().unwrap(), 0);
    assert_eq!(srv.call("GET", "/v1/rooms/7", None).status, 404);
}

#[test]
fn metrics_and_healthz_need_no_token() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::in_dir(tmp.path());
    let r = srv.raw("GET", "/metrics", None, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "text/plain; version=0.0.4");
    assert_eq!(r.body, "chatd_test_metric 1\n");
    assert_eq!(srv.raw("GET", "/healthz", None, None).status, 200);
}

#[test]
fn unknown_path_is_404_and_wrong_method_is_405() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::in_dir(tmp.path());
    srv.call("GET", "/v2/rooms/7", None).assert_error(404);
    srv.call("GET", "/v1/rooms/7/members", None)
        .assert_error(404);
    srv.call("POST", "/v1/rooms/7", None).assert_error(405);
    srv.call("GET", "/v1/rooms/7/members/1", None)
        .assert_error(405);
    srv.raw("POST", "/metrics", None, None).assert_error(405);
}

#[test]
fn member_put_and_delete_are_idempotent_and_reach_the_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::in_dir(tmp.path());
    assert_eq!(srv.call("PUT", "/v1/rooms/7/members/1", None).status, 204);
    assert_eq!(srv.call("PUT", "/v1/rooms/7/members/2", None).status, 204);
    let got = srv.shards.take();
    assert_eq!(got, [members(&[(7, 1)], &[]), members(&[(7, 2)], &[])]);
    // Again: 204, nothing to apply.
    assert_eq!(srv.call("PUT", "/v1/rooms/7/members/2", None).status, 204);
    assert!(srv.shards.take().is_empty());

    let r = srv.call("GET", "/v1/rooms/7", None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"chatid":"7","members":["1","2"],"joined_clients":3,"in_call":true,"call_users":["1","2"]})
    );

    assert_eq!(
        srv.call("DELETE", "/v1/rooms/7/members/2", None).status,
        204
    );
    assert_eq!(
        srv.call("DELETE", "/v1/rooms/7/members/2", None).status,
        204
    );
    let got = srv.shards.take();
    assert_eq!(
        got,
        [members(&[], &[(7, 2)])],
        "the second DELETE changes nothing"
    );
}

#[test]
fn room_put_replaces_deduplicated_members_and_delete_empties_it() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::in_dir(tmp.path());
    let put = |body: &str| srv.call("PUT", "/v1/rooms/7", Some(body)).status;
    assert_eq!(put(r#"{"members":["3","1","2"]}"#), 204);
    srv.shards.take();
    assert_eq!(put(r#"{"members":["1","4","4"]}"#), 204);
    let got = srv.shards.take();
    // 2, 3 leave; 4 comes; 1 stays and is no change.
    assert_eq!(got, [members(&[(7, 4)], &[(7, 2), (7, 3)])]);
    let r = srv.call("GET", "/v1/rooms/7", None).json();
    assert_eq!(r["members"], json!(["1", "4"]));

    assert_eq!(srv.call("DELETE", "/v1/rooms/7", None).status, 204);
    srv.call("GET", "/v1/rooms/7", None).assert_error(404);
    assert_eq!(srv.call("DELETE", "/v1/rooms/7", None).status, 204);
    assert_eq!(srv.call("DELETE", "/v1/rooms/99", None).status, 204);
}

#[test]
fn contacts_and_user_view() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::in_dir(tmp.path());
    let r = srv.call("GET", "/v1/users/1", None);
    assert_eq!(
        r.json(),
        json!({"userid":"1","presence":3,"statusd_clients":2,"chatd_clients":1,"contacts":[],"rooms":[]})
    );
    assert_eq!(srv.call("PUT", "/v1/users/1/contacts/2", None).status, 204);
    assert_eq!(srv.shards.take(), [contacts(&[(1, 2)], &[])]);
    assert_eq!(srv.call("PUT", "/v1/users/2/contacts/1", None).status, 204);
    assert!(srv.shards.take().is_empty());
    assert_eq!(srv.call("PUT", "/v1/rooms/7/members/1", None).status, 204);
    srv.shards.take();
    let r = srv.call("GET", "/v1/users/1", None).json();
    assert_eq!(r["contacts"], json!(["2"]));
    assert_eq!(r["rooms"], json!(["7"]));
    assert_eq!(
        srv.call("DELETE", "/v1/users/2/contacts/1", None).status,
        204
    );
    assert_eq!(srv.shards.take(), [contacts(&[], &[(1, 2)])]);
    assert_eq!(
        srv.call("DELETE", "/v1/users/2/contacts/1", None).status,
        204
    );
    assert_eq!(
        srv.call("GET", "/v1/users/2", None).json()["contacts"],
        json!([])
    );
}

#[test]
fn tokens_are_issued_for_the_user_with_the_ttl() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::in_dir(tmp.path());
    let r = srv.call(
        "POST",
        "/v1/tokens",
        Some(r#"{"userid":"42","ttl_secs":3600}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let auth = Authenticator::new(JWT_SECRET);
    assert_eq!(auth.verify(token.as_bytes(), NOW + 3599), Ok(42));
    assert!(auth.verify(token.as_bytes(), NOW + 3600).is_err());
    // Without a ttl: an hour.
    let r = srv.call("POST", "/v1/tokens", Some(r#"{"userid":"43"}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(auth.verify(token.as_bytes(), NOW + 3599), Ok(43));
    assert!(auth.verify(token.as_bytes(), NOW + 3600).is_err());
}

#[test]
fn bad_input_is_400_with_a_json_error_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::in_dir(tmp.path());
    assert_eq!(
        srv.call("PUT", "/v1/rooms/7", Some(r#"{"members":["1","2"]}"#))
            .status,
        204
    );
    assert_eq!(srv.call("PUT", "/v1/users/1/contacts/3", None).status, 204);
    srv.shards.take();
    let calls_before = *srv.shards.calls.lock().unwrap();

    let over = "18446744073709551616";
    let mut cases: Vec<(&str, String, Option<String>)> = Vec::new();
    for bad in ["0", "x", "+1", "-1", "%201", "1.0", over, "0x7"] {
        cases.push(("PUT", format!("/v1/rooms/{bad}/members/1"), None));
        cases.push(("PUT", format!("/v1/rooms/7/members/{bad}"), None));
        cases.push(("DELETE", format!("/v1/rooms/7/members/{bad}"), None));
        cases.push(("DELETE", format!("/v1/rooms/{bad}"), None));
        cases.push(("GET", format!("/v1/rooms/{bad}"), None));
        cases.push(("GET", format!("/v1/users/{bad}"), None));
        cases.push(("PUT", format!("/v1/users/{bad}/contacts/2"), None));
        cases.push(("DELETE", format!("/v1/users/1/contacts/{bad}"), None));
        let body = format!(r#"{{"members":["1","{bad}"]}}"#);
        cases.push(("PUT", "/v1/rooms/7".into(), Some(body)));
        let body = format!(r#"{{"userid":"{bad}","ttl_secs":60}}"#);
        cases.push(("POST", "/v1/tokens".into(), Some(body)));
    }
    cases.push(("PUT", "/v1/users/4/contacts/4".into(), None));
    cases.push(("DELETE", "/v1/users/1/contacts/1".into(), None));
    for body in [
        "",
        "{",
        "null",
        "[]",
        "{}",
        r#"{"members":"1"}"#,
        r#"{"members":[1,2]}"#,
        r#"{"members":["1",null]}"#,
        r#"{"members":[""]}"#,
        r#"{"members":["1"],"extra":true}"#,
    ] {
        cases.push(("PUT", "/v1/rooms/7".into(), Some(body.into())));
    }
    for body in [
        "",
        "{}",
        r#"{"ttl_secs":60}"#,
        r#"{"userid":"","ttl_secs":60}"#,
        r#"{"userid":1,"ttl_secs":60}"#,
        r#"{"userid":"1","ttl_secs":0}"#,
        r#"{"userid":"1","ttl_secs":-1}"#,
        r#"{"userid":"1","ttl_secs":"60"}"#,
        r#"{"userid":"1","ttl_secs":1.5}"#,
        r#"{"userid":"1","ttl_secs":31536001}"#,
    ] {
        cases.push(("POST", "/v1/tokens".into(), Some(body.into())));
    }
    for (method, path, body) in &cases {
        let r = srv.call(method, path, body.as_deref());
        assert_eq!(r.status, 400, "{method} {path} {body:?}: {}", r.body);
        assert!(!r.assert_error(400).is_empty());
    }
    let msg = srv
        .call("PUT", "/v1/rooms/7/members/x", None)
        .assert_error(400);
    assert_eq!(msg, "bad userid: 'x'");

    assert_eq!(*srv.shards.calls.lock().unwrap(), calls_before);
    let r = srv.call("GET", "/v1/rooms/7", None).json();
    assert_eq!(r["members"], json!(["1", "2"]));
    drop(srv);
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(store.members(7).unwrap(), [1, 2]);
    assert_eq!(store.contacts(1).unwrap(), [3]);
    assert_eq!(store.contacts(3).unwrap(), [1]);
}

#[test]
fn member_list_over_the_limit_is_400() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::in_dir(tmp.path());
    let ids: Vec<String> = (1..=crate::limits::MAX_IDS_PER_LIST as u64 + 1)
        .map(|i| i.to_string())
        .collect();
    let body = json!({ "members": ids }).to_string();
    srv.call("PUT", "/v1/rooms/7", Some(&body))
        .assert_error(400);
    srv.call("GET", "/v1/rooms/7", None).assert_error(404);
}

#[test]
fn relations_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let srv = Server::in_dir(tmp.path());
        srv.call("PUT", "/v1/rooms/7", Some(r#"{"members":["1","2"]}"#));
        srv.call("PUT", "/v1/rooms/8/members/3", None);
        srv.call("PUT", "/v1/users/1/contacts/5", None);
    }
    let srv = Server::in_dir(tmp.path());
    assert_eq!(
        srv.call("GET", "/v1/rooms/7", None).json()["members"],
        json!(["1", "2"])
    );
    let u = srv.call("GET", "/v1/users/1", None).json();
    assert_eq!(u["contacts"], json!(["5"]));
    assert_eq!(u["rooms"], json!(["7"]));
    assert_eq!(
        srv.call("GET", "/v1/users/3", None).json()["rooms"],
        json!(["8"])
    );
}

#[test]
fn failed_store_write_is_500_and_leaves_model_and_shards_alone() {
    let backend = FlakyBackend::default();
    let fail: Arc<AtomicBool> = backend.fail.clone();
    let srv = Server::start(Store::with_backend(backend).unwrap());
    assert_eq!(srv.call("PUT", "/v1/rooms/7/members/1", None).status, 204);
    srv.shards.take();
    let calls = *srv.shards.calls.lock().unwrap();
    fail.store(true, Ordering::SeqCst);
    srv.call("PUT", "/v1/rooms/7/members/2", None)
        .assert_error(500);
    srv.call("PUT", "/v1/users/1/contacts/2", None)
        .assert_error(500);
    assert_eq!(*srv.shards.calls.lock().unwrap(), calls);
    let r = srv.call("GET", "/v1/rooms/7", None).json();
    assert_eq!(r["members"], json!(["1"]));
    assert_eq!(
        srv.call("GET", "/v1/users/1", None).json()["contacts"],
        json!([])
    );
}

#[test]
fn a_change_a_shard_did_not_apply_is_500_never_success() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::in_dir(tmp.path());
    assert_eq!(srv.call("PUT", "/v1/rooms/7/members/1", None).status, 204);
    srv.shards.gone.store(true, Ordering::SeqCst);
    let writes = [
        ("PUT", "/v1/rooms/7/members/2", None),
        ("DELETE", "/v1/rooms/7/members/1", None),
        ("PUT", "/v1/rooms/8", Some(r#"{"members":["1"]}"#)),
        ("DELETE", "/v1/rooms/7", None),
        ("PUT", "/v1/users/1/contacts/2", None),
        ("PUT", "/v1/users/3/contacts", Some(r#"{"contacts":["4"]}"#)),
        ("DELETE", "/v1/users/1/contacts/2", None),
        (
            "POST",
            "/v1/batch",
            Some(r#"{"ops":[{"op":"put_member","chatid":"9","userid":"1"}]}"#),
        ),
    ];
    for (method, path, body) in writes {
        let error = srv.call(method, path, body).assert_error(500);
        assert!(
            error.contains("shard 1 is gone"),
            "{method} {path}: {error}"
        );
    }
    // Reads of live state the shards did not give are not answered either
    // (room 8 has a stored member).
    srv.call("GET", "/v1/rooms/8", None).assert_error(500);
    srv.call("GET", "/v1/users/1", None).assert_error(500);
}

#[test]
fn put_contacts_makes_the_list_exact_in_both_directions() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::in_dir(tmp.path());
    let put =
        |user: u64, body: &str| srv.call("PUT", &format!("/v1/users/{user}/contacts"), Some(body));
    assert_eq!(put(1, r#"{"contacts":["2","3","3"]}"#).status, 204);
    assert_eq!(srv.shards.take(), [contacts(&[(1, 2), (1, 3)], &[])]);
    assert_eq!(put(1, r#"{"contacts":["3","4"]}"#).status, 204);
    assert_eq!(srv.shards.take(), [contacts(&[(1, 4)], &[(1, 2)])]);
    assert_eq!(
        srv.call("GET", "/v1/users/4", None).json()["contacts"],
        json!(["1"])
    );
    assert_eq!(put(1, r#"{"contacts":[]}"#).status, 204);
    assert_eq!(srv.shards.take(), [contacts(&[], &[(1, 3), (1, 4)])]);
    for bad in [
        r#"{"contacts":["1"]}"#,
        r#"{"contacts":["0"]}"#,
        "{}",
        r#"{"contacts":"2"}"#,
    ] {
        put(1, bad).assert_error(400);
    }
    assert!(srv.shards.take().is_empty());
}

#[test]
fn a_batch_is_validated_whole_and_applied_as_one_net_change() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::in_dir(tmp.path());
    let batch = |body: &str| srv.call("POST", "/v1/batch", Some(body));
    let r = batch(
        r#"{"ops":[
            {"op":"put_room","chatid":"7","members":["1","2"]},
            {"op":"put_member","chatid":"7","userid":"3"},
            {"op":"delete_member","chatid":"7","userid":"3"},
            {"op":"put_contact","a":"1","b":"2"},
            {"op":"put_contacts","userid":"5","contacts":["1"]}
        ]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"applied": 5}));
    assert_eq!(
        srv.shards.take(),
        [NetChange {
            members_added: vec![(7, 1), (7, 2)],
            contacts_added: vec![(1, 2), (1, 5)],
            ..NetChange::default()
        }]
    );
    // A bad op at index 2: 400 naming it, and nothing of the batch done.
    let r = batch(
        r#"{"ops":[
            {"op":"delete_room","chatid":"7"},
            {"op":"put_member","chatid":"8","userid":"1"},
            {"op":"put_member","chatid":"8","userid":"0"}
        ]}"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"error": "bad userid: '0'", "index": 2}));
    assert!(srv.shards.take().is_empty());
    assert_eq!(
        srv.call("GET", "/v1/rooms/7", None).json()["members"],
        json!(["1", "2"])
    );
    srv.call("GET", "/v1/rooms/8", None).assert_error(404);
    // A batch that changes nothing reaches no shard.
    let r = batch(r#"{"ops":[{"op":"put_member","chatid":"7","userid":"1"}]}"#);
    assert_eq!(r.status, 200);
    assert!(srv.shards.take().is_empty());
    batch(r#"{"ops":[]"#).assert_error(400);
}
