//! The newcomer's check: an authenticated chatd and statusd login succeed
//! against the real binary, on one shard and on two.

mod common;

use common::{Ev, Server};

fn logins_succeed(shards: usize) {
    let server = Server::start(shards, &[]);
    server.add_member(7, 1);
    let mut a = server.chatd(1);
    assert_ne!(a.client_id, 0);
    assert!(!a.join(7), "a room with one user is not in a call");
    a.keepalive_roundtrip();
    let s = server.statusd(1, 3);
    assert_eq!(s.own, 3);
    assert!(s.dump.is_empty());
    let live = server.get_json("/v1/users/1");
    assert_eq!(live["presence"], 3);
    assert_eq!(live["statusd_clients"], 1);
    assert_eq!(live["chatd_clients"], 1);
    a.send(&chatd_proto::chatd::Request::Leave { chatid: 7 });
    a.expect(Ev::Leave(7));
}

#[test]
fn chatd_and_statusd_logins_succeed_on_one_shard() {
    logins_succeed(1);
}

#[test]
fn chatd_and_statusd_logins_succeed_on_two_shards() {
    logins_succeed(2);
}
