//! What an operator meets: a process that fails loudly (a panicking shard
//! ends it with a non-zero status), one that refuses to share its client
//! ports with another server, command-line values that are refused or
//! reported, and a start-up that says what it did.

mod common;

use chatd_proto::chatd::Request;
use common::{room_homed_on, Server, WAIT};

/// A panic on a shard ends the process with status 101 and a log line
/// naming the shard's thread, instead of leaving the rooms and users homed
/// there unanswered in a process that looks healthy.
fn a_panicking_shard_takes_the_process_down(shards: usize) {
    let home = shards - 1;
    let room = room_homed_on(home, shards, 100);
    let mut server = Server::start_with_env(
        shards,
        &[],
        &[("CHATD_DEBUG_PANIC_ROOM", &room.to_string())],
    );
    server.add_member(room, 1);
    server.add_member(room + 1, 1);
    let mut a = server.chatd(1);
    a.join(room + 1);
    // The trigger (debug builds only): OP_JOIN of this room panics its
    // home shard.
    a.send(&Request::Join { chatid: room });
    let Some(status) = server.wait_exit(WAIT) else {
        panic!(
            "the process still runs after shard {home} panicked\n{}",
            server.log()
        );
    };
    assert_eq!(status.code(), Some(101), "exit status\n{}", server.log());
    let log = server.log();
    assert!(
        log.contains(&format!("shard-{home} panicked at "))
            && log.contains("CHATD_DEBUG_PANIC_ROOM"),
        "no log line naming the shard and the panic:\n{log}"
    );
    // The clients are cut off, so they reconnect to the restarted server.
    a.expect_closed();
}

#[test]
fn a_panicking_shard_takes_the_process_down_on_one_shard() {
    a_panicking_shard_takes_the_process_down(1);
}

#[test]
fn a_panicking_shard_takes_the_process_down_on_two_shards() {
    a_panicking_shard_takes_the_process_down(2);
}

/// A second server with its own data dir and admin port, but the first
/// one's chatd or statusd port, must not start: SO_REUSEPORT would let the
/// kernel split clients between two servers with different secrets and
/// databases. The first one keeps serving.
fn a_second_server_on_the_same_client_ports_fails_to_start(shards: usize) {
    let first = Server::start(shards, &[]);
    let any = common::ANY_PORT[0];
    for (what, listen) in [
        ("chatd", [first.chatd, any, any]),
        ("statusd", [any, first.statusd, any]),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let second = common::run_to_exit(common::command_on(&tmp.path().join("d"), shards, listen));
        assert!(
            !second.status.success(),
            "a second server on the {what} port started"
        );
        let port = listen[0].port().max(listen[1].port());
        let want = format!(
            "port {port} is already served by another chatd process (pid {})",
            first.pid()
        );
        assert!(
            second.stderr.contains(&want),
            "second server on the {what} port: no clear message:\n{}",
            second.stderr
        );
        assert!(!second.stdout.contains("listening"), "{}", second.stdout);
    }
    // The first one still serves both services.
    let mut c = first.chatd(1);
    c.keepalive_roundtrip();
    let s = first.statusd(1, 3);
    assert_eq!(s.own, 3);
}

#[test]
fn a_second_server_on_the_same_client_ports_fails_to_start_on_one_shard() {
    a_second_server_on_the_same_client_ports_fails_to_start(1);
}

#[test]
fn a_second_server_on_the_same_client_ports_fails_to_start_on_two_shards() {
    a_second_server_on_the_same_client_ports_fails_to_start(2);
}
