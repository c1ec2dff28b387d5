//! Clusters (protocol section 10): a real nats-server with JetStream and
//! several chatd nodes on loopback; clients spread over the nodes see one
//! server.

mod common;

use common::cluster::{await_route, Cluster, NODE_TIMEOUT_MS};
use common::{wait_until, Ev, SEv};
use std::time::{Duration, Instant};

/// Members of `chat` from `node`'s admin API, ascending.
fn members(node: &common::Server, chat: u64) -> Vec<u64> {
    let (status, body) = node.http("GET", &format!("/v1/rooms/{chat}"), None, true);
    if status == 404 {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let mut m: Vec<u64> = v["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    m.sort_unstable();
    m
}

/// `PUT /v1/rooms/{chat}` with `members`, answered by `node`.
fn put_room(node: &common::Server, chat: u64, members: &[u64]) {
    let members: Vec<String> = members.iter().map(u64::to_string).collect();
    let body = serde_json::json!({ "members": members }).to_string();
    node.admin_ok("PUT", &format!("/v1/rooms/{chat}"), Some(&body), 204);
}

/// Waits until every node of `c` shows `want` as `chat`'s members.
fn await_members(c: &Cluster, chat: u64, want: &[u64]) {
    for n in &c.nodes {
        wait_until(&format!("room {chat}'s members on every node"), || {
            members(n, chat) == want
        });
    }
}

#[test]
fn relations_written_on_any_node_apply_on_every_node() {
    let c = Cluster::start(3, 2);
    // A write answered by node 1 is applied there already.
    c.at(0).add_member(100, 1);
    assert_eq!(members(c.at(0), 100), vec![1]);
    // And on the others within a second (normally milliseconds).
    await_members(&c, 100, &[1]);
    // A client of another node can join the room.
    let mut b = c.at(1).chatd(1);
    assert!(!b.join(100));

    // The batch endpoint, on node 3.
    c.at(2).admin_ok(
        "POST",
        "/v1/batch",
        Some(r#"{"ops":[{"op":"put_room","chatid":"101","members":["1","2","3"]},{"op":"delete_member","chatid":"100","userid":"1"}]}"#),
        200,
    );
    for n in &c.nodes {
        wait_until("batch on every node", || {
            members(n, 101) == vec![1, 2, 3] && members(n, 100).is_empty()
        });
    }
    // The removal made node 2's client leave the room.
    b.expect(Ev::Leave(100));

    // Client ids are unique over the cluster: each node's carry its slot.
    let ids: Vec<u32> = c.nodes.iter().map(|n| n.chatd(2).client_id).collect();
    let mut slots: Vec<u32> = ids.iter().map(|id| id >> 24).collect();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(slots.len(), 3, "client ids {ids:?}");

    // A node started later loads the relations before it accepts: its
    // first client can join at once.
    let late = c.node("n4", &[]);
    let mut d = late.chatd(3);
    assert!(!d.join(101));
}

#[test]
fn rtmsg_reaches_every_node_in_all_three_addressings_in_order() {
    let c = Cluster::start(3, 2);
    put_room(c.at(0), 200, &[1, 2, 3]);
    await_members(&c, 200, &[1, 2, 3]);
    let mut a = c.at(0).chatd(1);
    let mut b = c.at(1).chatd(2);
    let mut b2 = c.at(1).chatd(2);
    let mut d = c.at(2).chatd(3);
    for cl in [&mut a, &mut b, &mut b2, &mut d] {
        cl.join(200);
    }
    await_route(&mut a, &mut b, 200);
    await_route(&mut a, &mut b2, 200);
    await_route(&mut a, &mut d, 200);
    await_route(&mut d, &mut a, 200);
    await_route(&mut b, &mut d, 200);

    // Room-wide, in order, to everyone but the sender, over the nodes.
    let from_a = (1, a.client_id);
    for i in 0..50u32 {
        a.rtmsg(200, 0, 0, 1, &i.to_be_bytes());
    }
    for r in [&mut b, &mut b2, &mut d] {
        for i in 0..50u32 {
            r.expect_rtmsg_from(200, from_a, 1, &i.to_be_bytes());
        }
    }
    // To a user: both of user 2's clients on node 2, nobody else.
    d.rtmsg(200, 2, 0, 2, b"to user 2");
    d.rtmsg(200, 0, 0, 3, b"end");
    let from_d = (3, d.client_id);
    for r in [&mut b, &mut b2] {
        r.expect_rtmsg_from(200, from_d, 2, b"to user 2");
        r.expect_rtmsg_from(200, from_d, 3, b"end");
    }
    a.expect_rtmsg_from(200, from_d, 3, b"end");
    // To one client: only b2.
    a.rtmsg(200, 2, b2.client_id, 4, b"to b2");
    a.rtmsg(200, 0, 0, 3, b"end");
    b2.expect_rtmsg_from(200, from_a, 4, b"to b2");
    b2.expect_rtmsg_from(200, from_a, 3, b"end");
    b.expect_rtmsg_from(200, from_a, 3, b"end");
    d.expect_rtmsg_from(200, from_a, 3, b"end");
}

#[test]
fn in_call_flag_counts_distinct_users_over_every_node() {
    let c = Cluster::start(3, 2);
    put_room(c.at(0), 300, &[1, 2, 3]);
    await_members(&c, 300, &[1, 2, 3]);
    let mut a = c.at(0).chatd(1);
    let mut a3 = c.at(2).chatd(1);
    let mut b = c.at(1).chatd(2);
    for cl in [&mut a, &mut a3, &mut b] {
        assert!(!cl.join(300));
    }
    await_route(&mut a, &mut b, 300);
    await_route(&mut b, &mut a, 300);
    await_route(&mut a, &mut a3, 300);
    await_route(&mut b, &mut a3, 300);
    // User 1 in the call on two nodes: one user, no flag.
    a.in_call(300, true);
    a3.in_call(300, true);
    // User 2 on a third node makes two: everyone on every node sees it.
    b.in_call(300, true);
    for cl in [&mut a, &mut a3, &mut b] {
        cl.expect(Ev::InCall(300, true));
    }
    // A client joining later, on another node, gets the flag with its join.
    let mut d = c.at(2).chatd(3);
    assert!(d.join(300));
    // The admin API of any node reports the room over every node (even
    // one with no client in it). Polled: a node that does not answer the
    // query within its timeout (a loaded machine) is left out of one
    // answer (docs/cluster.md), and the next one counts it again.
    for n in &c.nodes {
        common::eventually(n, "/v1/rooms/300", |v| {
            (&v["joined_clients"], &v["in_call"], &v["call_users"])
                == (
                    &serde_json::json!(4),
                    &serde_json::json!(true),
                    &serde_json::json!(["1", "2"]),
                )
        });
    }
    // User 2 leaves the call: one user left, the flag drops everywhere.
    b.in_call(300, false);
    for cl in [&mut a, &mut a3, &mut b, &mut d] {
        cl.expect(Ev::InCall(300, false));
    }
}

/// A statusd client and its view (protocol 5.4: the last value it was
/// sent per user, 0 if none; its own presence under 0).
struct Watcher {
    c: common::StatusdClient,
    view: std::collections::HashMap<u64, u8>,
}

impl Watcher {
    /// A statusd client of `user` logged in on `node` with `raw`; its
    /// view starts from its login dump.
    fn login(node: &common::Server, user: u64, raw: u8) -> Watcher {
        let c = node.statusd(user, raw);
        let mut view: std::collections::HashMap<u64, u8> = c.dump.iter().copied().collect();
        view.insert(0, c.own);
        Watcher { c, view }
    }

    /// Waits until its view shows `user` at `presence` (updates about
    /// anyone arrive in any order across nodes; only the view counts).
    fn await_view(&mut self, user: u64, presence: u8) {
        let deadline = Instant::now() + common::WAIT;
        while self.view.get(&user).copied().unwrap_or(0) != presence {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.c.recv_within(left) {
                Some(SEv::Pres { userid, presence }) => {
                    self.view.insert(userid, presence);
                }
                Some(other) => panic!("user {}: unexpected {other:?}", self.c.user),
                None => panic!(
                    "user {}: view {:?}, never saw user {user} at {presence}",
                    self.c.user, self.view
                ),
            }
        }
    }
}

#[test]
fn presence_combines_clients_on_every_node_and_reaches_watchers_everywhere() {
    let c = Cluster::start(3, 2);
    c.at(0).add_contact(1, 2);
    c.at(0).add_contact(1, 3);
    wait_until("contacts on every node", || {
        c.nodes
            .iter()
            .all(|n| n.http("GET", "/v1/users/3", None, true).1.contains("\"1\""))
    });
    // User 2 watches from node 2; user 1 comes online on node 1.
    let mut w2 = Watcher::login(c.at(1), 2, 1);
    let mut u1 = Watcher::login(c.at(0), 1, 3);
    w2.await_view(1, 3);
    // User 3 watches from node 3: once it sees 3, node 3 knows node 1's
    // value (nodes learn each other's values asynchronously).
    let mut w3 = Watcher::login(c.at(2), 3, 1);
    w3.await_view(1, 3);
    // A second client of user 1, on node 3, automatically at 4: the
    // combined presence is the maximum over both nodes.
    let mut u1b = Watcher::login(c.at(2), 1, 0x80 | 4);
    u1b.await_view(0, 4);
    w2.await_view(1, 4);
    w3.await_view(1, 4);
    u1.await_view(0, 4);
    // The admin API of any node: the combined presence, every client
    // (cluster-wide live fields may lag by up to a second, section 10).
    wait_until("combined presence on every node's API", || {
        c.nodes.iter().all(|n| n.user_presence(1) == (4, 2))
    });
    // Set by the user on node 1 (MSB 0): every client on every node takes
    // it, so the maximum is exactly that value.
    u1.c.setpres(2);
    u1.await_view(0, 2);
    w2.await_view(1, 2);
    w3.await_view(1, 2);
    u1b.await_view(0, 2);
    // A login dump on node 3 carries the combined value (an update that
    // repeats it may follow while the dump is read: views only count).
    let w3b = c.at(2).statusd(3, 1);
    assert!(
        !w3b.dump.is_empty() && w3b.dump.iter().all(|&e| e == (1, 2)),
        "dump {:?}",
        w3b.dump
    );
    // Node 3's client goes: node 1's still holds 2, nothing changes; the
    // last one goes: 0 everywhere.
    drop(u1b);
    drop(u1);
    w2.await_view(1, 0);
    wait_until("user 1 offline on node 3's API", || {
        c.at(2).user_presence(1) == (0, 0)
    });
}

#[test]
fn a_killed_node_is_withdrawn_within_the_node_timeout_and_a_drained_one_at_once() {
    let mut c = Cluster::start(3, 1);
    put_room(c.at(0), 500, &[1, 2, 3]);
    c.at(0).add_contact(1, 2);
    c.at(0).add_contact(3, 2);
    await_members(&c, 500, &[1, 2, 3]);
    // User 2 on node 1 watches user 1 (on node 3) and user 3 (on node 2),
    // and shares a call with each.
    let mut w = Watcher::login(c.at(0), 2, 1);
    let mut a = c.at(0).chatd(2);
    let _p1 = c.at(2).statusd(1, 3);
    let _p3 = c.at(1).statusd(3, 4);
    w.await_view(1, 3);
    w.await_view(3, 4);
    let mut b = c.at(2).chatd(1);
    let mut d = c.at(1).chatd(3);
    for cl in [&mut a, &mut b, &mut d] {
        cl.join(500);
    }
    await_route(&mut b, &mut a, 500);
    await_route(&mut d, &mut a, 500);
    await_route(&mut a, &mut b, 500);
    await_route(&mut a, &mut d, 500);
    a.in_call(500, true);
    b.in_call(500, true);
    a.expect(Ev::InCall(500, true));

    // kill -9 of node 3: its client leaves the call and its user goes
    // offline within --node-timeout-ms + 1 s.
    let killed = Instant::now();
    c.nodes[2].kill();
    a.expect(Ev::InCall(500, false));
    w.await_view(1, 0);
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_millis(NODE_TIMEOUT_MS + 1000),
        "node loss noticed after {took:?}"
    );

    // A drained node (SIGTERM) withdraws its clients at once, well
    // within the node timeout.
    d.in_call(500, true);
    a.expect(Ev::InCall(500, true));
    let drained = Instant::now();
    // SAFETY: kill(2) with the pid of a child this test started.
    unsafe {
        libc::kill(c.nodes[1].pid() as i32, libc::SIGTERM);
    }
    a.expect(Ev::InCall(500, false));
    w.await_view(3, 0);
    let took = drained.elapsed();
    assert!(
        took < Duration::from_millis(NODE_TIMEOUT_MS),
        "drained node withdrawn after {took:?}"
    );
    assert_eq!(c.nodes[1].terminate(), Some(0));
}

#[test]
fn during_a_nats_outage_writes_answer_503_and_views_converge_after() {
    let mut c = Cluster::start(2, 1);
    c.at(0).add_contact(1, 2);
    wait_until("contact on node 2", || {
        c.at(1)
            .http("GET", "/v1/users/2", None, true)
            .1
            .contains("\"1\"")
    });
    let mut w = Watcher::login(c.at(1), 2, 1);
    let mut u = Watcher::login(c.at(0), 1, 3);
    w.await_view(1, 3);

    c.nats.stop();
    // Writes answer 503 and change nothing (once the node noticed).
    wait_until("a write answers 503", || {
        c.at(0).http("PUT", "/v1/rooms/600/members/1", None, true).0 == 503
    });
    // Each node keeps serving its own clients (and may have dropped the
    // other node meanwhile: user 2 then shows 0 here).
    u.c.setpres(4);
    u.await_view(0, 4);

    c.nats.restart();
    // Converged: node 2's watcher sees user 1's value from the outage.
    w.await_view(1, 4);
    wait_until("writes work again", || {
        c.at(1).http("PUT", "/v1/rooms/601/members/1", None, true).0 == 204
    });
    assert!(
        members(c.at(0), 600).is_empty(),
        "a 503 write changed nothing"
    );
    wait_until("the write after on both nodes", || {
        members(c.at(0), 601) == vec![1] && members(c.at(1), 601) == vec![1]
    });
}

#[test]
fn a_room_whose_clients_are_all_on_one_node_costs_no_cluster_traffic() {
    let c = Cluster::start(2, 2);
    put_room(c.at(0), 700, &[1, 2]);
    put_room(c.at(0), 701, &[1, 2]);
    wait_until("rooms on node 2", || members(c.at(1), 701) == vec![1, 2]);
    // Room 700: both clients on node 1.
    let mut a = c.at(0).chatd(1);
    let mut b = c.at(0).chatd(2);
    a.join(700);
    b.join(700);
    for i in 0..20u32 {
        a.rtmsg(700, 0, 0, 1, &i.to_be_bytes());
    }
    for i in 0..20u32 {
        b.expect_rtmsg_from(700, (1, a.client_id), 1, &i.to_be_bytes());
    }
    assert_eq!(c.at(0).metric("chatd_cluster_rtmsg_out_total"), 0.0);
    // Room 701 with a client on node 2 too: messages go out, once each.
    let mut d = c.at(1).chatd(2);
    a.join(701);
    d.join(701);
    await_route(&mut a, &mut d, 701);
    let before = c.at(0).metric("chatd_cluster_rtmsg_out_total");
    assert!(before >= 1.0);
    for i in 0..20u32 {
        a.rtmsg(701, 0, 0, 1, &i.to_be_bytes());
    }
    for i in 0..20u32 {
        d.expect_rtmsg_from(701, (1, a.client_id), 1, &i.to_be_bytes());
    }
    assert_eq!(
        c.at(0).metric("chatd_cluster_rtmsg_out_total"),
        before + 20.0
    );
    // Room 700 still costs nothing: node 2 has no client in it.
    a.rtmsg(700, 0, 0, 1, b"local");
    b.expect_rtmsg_from(700, (1, a.client_id), 1, b"local");
    assert_eq!(
        c.at(0).metric("chatd_cluster_rtmsg_out_total"),
        before + 20.0
    );
}

#[test]
fn a_node_restarted_with_its_id_takes_its_slot_back_and_replaces_its_old_self() {
    let mut c = Cluster::start(2, 1);
    c.at(0).add_contact(1, 2);
    c.at(0).add_member(800, 1);
    wait_until("relations on node 2", || members(c.at(1), 800) == vec![1]);
    let slot = c.at(0).chatd(1).client_id >> 24;
    let mut w = Watcher::login(c.at(1), 2, 1);
    let _u = Watcher::login(c.at(0), 1, 3);
    w.await_view(1, 3);

    // kill -9, then the same --node-id again, on a fresh data dir: the
    // relations come from JetStream, the slot is its own again, and the
    // others drop what its old self told them (at its hello, or at the
    // node timeout if the restart took longer).
    c.nodes[0].kill();
    c.nodes[0] = c.node("n1", &[]);
    let mut a = c.at(0).chatd(1);
    assert_eq!(a.client_id >> 24, slot, "client id {:#x}", a.client_id);
    assert!(!a.join(800));
    w.await_view(1, 0);
    let _u = Watcher::login(c.at(0), 1, 4);
    w.await_view(1, 4);
}

#[test]
fn nodes_given_no_secrets_agree_on_the_jwt_secret_and_the_admin_token() {
    let c = Cluster::start(0, 1);
    let a = c.node_without_secrets("s1");
    let b = c.node_without_secrets("s2");
    // Each node's data directory holds the cluster's values (the first
    // node's proposal), so the admin token read there works everywhere.
    assert_eq!(a.admin_token, b.admin_token);
    assert_eq!(a.jwt_secret(), b.jwt_secret());
    b.add_member(300, 7);
    wait_until("member on the other node", || members(&a, 300) == vec![7]);
    // A token minted on one node logs in on the other.
    let token = a.token(7);
    let mut client = common::ChatdClient::connect(b.chatd);
    client.login(&token);
    client.user = 7;
    assert!(!client.join(300));
}
