//! SIGTERM drains: every connection gets OP_ERROR SHUTTING_DOWN and is
//! closed, the process exits 0, and every admin write that was
//! acknowledged before or during the drain is there after a restart.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{http, Ev, Server};

const SHUTTING_DOWN: u8 = 10;

fn sigterm_tells_every_client_and_exits_cleanly(shards: usize) {
    let mut server = Server::start(shards, &[]);
    server.add_member(5, 1);
    let mut chat_clients: Vec<_> = (0..4).map(|_| server.chatd(1)).collect();
    for c in &mut chat_clients {
        c.join(5);
    }
    let mut status = server.statusd(1, 3);
    assert_eq!(
        server.terminate(),
        Some(0),
        "exit status after SIGTERM\n{}",
        server.log()
    );
    for c in &mut chat_clients {
        c.expect(Ev::Error {
            code: SHUTTING_DOWN,
            opcode: 0,
            id: 0,
        });
        c.expect_closed();
    }
    assert_eq!(
        status.recv(),
        chatd_proto::statusd::Event::Error {
            code: SHUTTING_DOWN,
            opcode: 0,
            id: 0
        }
    );
    status.expect_closed();
}

#[test]
fn sigterm_tells_every_client_and_exits_cleanly_on_one_shard() {
    sigterm_tells_every_client_and_exits_cleanly(1);
}

#[test]
fn sigterm_tells_every_client_and_exits_cleanly_on_two_shards() {
    sigterm_tells_every_client_and_exits_cleanly(2);
}

#[test]
fn every_acknowledged_admin_write_survives_sigterm_during_a_burst() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let mut server = Server::start_in(&dir, 2, &[]).expect("start");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(AtomicBool::new(false));
    let (addr, token) = (server.admin, server.admin_token.clone());
    let writer = {
        let (acked, started) = (acked.clone(), started.clone());
        std::thread::spawn(move || {
            for i in 1..=100_000u64 {
                // A refused connection or a torn response ends the burst:
                // the server is gone.
                let res = std::panic::catch_unwind(|| {
                    http(
                        addr,
                        "PUT",
                        &format!("/v1/rooms/{i}/members/{}", i + 1),
                        None,
                        Some(&token),
                    )
                });
                match res {
                    Ok((204, _)) => acked.lock().unwrap().push(i),
                    _ => return,
                }
                if i == 20 {
                    started.store(true, Ordering::SeqCst);
                }
            }
        })
    };
    // Wait for the burst to be under way (an event: 20 acknowledged writes).
    while !started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    assert_eq!(server.terminate(), Some(0));
    writer.join().expect("writer thread");
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 20);
    drop(server);
    let server = Server::start_in(&dir, 1, &[]).expect("restart");
    for i in acked {
        let room = server.get_json(&format!("/v1/rooms/{i}"));
        assert_eq!(
            room["members"],
            serde_json::json!([(i + 1).to_string()]),
            "room {i}"
        );
    }
}

#[test]
fn sigterm_right_after_the_listening_lines_is_a_clean_stop() {
    // Signal handlers are in place before the lines are printed, so a
    // supervisor that signals as soon as it reads them gets exit 0.
    for _ in 0..5 {
        let mut server = Server::start(2, &[]);
        assert_eq!(server.terminate(), Some(0), "{}", server.log());
    }
}
