//! Back-pressure between shards (docs/architecture.md, "Back-pressure
//! between shards"): a client blasting a room whose home shard cannot keep
//! up is paused (its socket is not read) instead of filling that shard's
//! queue without limit, so the server's memory stays flat, nothing it sent
//! is lost, and the other connections, on the blaster's own shard too,
//! keep being served.
//!
//! The home shard is made slow with a debug-build fault
//! (`CHATD_DEBUG_SLOW_ROOM`, src/debug_hooks.rs): it spends a fixed time on
//! each OP_RTMSG to that room, as a shard that cannot keep up would.

// The slow shard is a debug-build fault: release builds have no such hook.
#![cfg(debug_assertions)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{poll, room_homed_on, wait_until, ChatdClient, Ev, Server};

/// The queue budget of each shard (`--max-shard-queue-bytes`, its least).
const BUDGET: usize = 64 * 1024;
/// msgdata bytes of each blasted OP_RTMSG.
const DATA: usize = 8000;
/// OP_RTMSG the blaster sends: 16 MB, 250 times the budget.
const BLAST: usize = 2048;
/// Time the slow room's home shard spends on each of them: about 4 s of
/// its work for the whole blast, far longer than the paced round trips.
const SLOW_MICROS: u64 = 2000;
/// Round trips of the paced connection.
const PACED: usize = 20;

/// The shard that accepted `client`, from the server's debug log line
/// "connected" naming the client's address (`CHATD_LOG` must enable
/// debug for `chatd::shard::driver`).
fn shard_of(server: &Server, client: &ChatdClient) -> usize {
    let local = client
        .stream
        .tcp()
        .and_then(|s| s.local_addr().ok())
        .expect("a connected socket");
    let peer = format!("peer={local} ");
    poll("the server's log line for the connection", || {
        let log = server.log();
        // The newest such line: a port may have been used before.
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains(" connected") && l.contains(&peer))
            .ok_or_else(|| format!("no line with {peer}"))?;
        let at = line.find("shard: ").ok_or("no shard in the line")? + "shard: ".len();
        let digits: String = line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<usize>().map_err(|e| e.to_string())
    })
}

/// A logged-in chatd client of `user` accepted by shard `shard`: clients
/// are opened until the kernel's SO_REUSEPORT spread gives one there (the
/// others are returned too, to be kept open or dropped).
fn chatd_on_shard(server: &Server, user: u64, shard: usize) -> (ChatdClient, Vec<ChatdClient>) {
    let mut others = Vec::new();
    for _ in 0..64 {
        let c = server.chatd(user);
        if shard_of(server, &c) == shard {
            return (c, others);
        }
        others.push(c);
    }
    panic!("64 connections and none on shard {shard}");
}

/// The server's resident memory, from /proc.
fn rss_bytes(server: &Server) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("status");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// A server of `shards` shards with a queue budget of [`BUDGET`], whose
/// room `slow` costs its home shard `micros` per OP_RTMSG, logging the
/// connections' shards ([`shard_of`]); `args` are more flags.
fn start_with_slow_room(shards: usize, slow: u64, micros: u64, args: &[&str]) -> Server {
    let budget = BUDGET.to_string();
    let mut all = vec!["--max-shard-queue-bytes", &budget];
    all.extend_from_slice(args);
    Server::start_with_env(
        shards,
        &all,
        &[
            ("CHATD_DEBUG_SLOW_ROOM", &format!("{slow}:{micros}")),
            ("CHATD_LOG", "info,chatd::shard::driver=debug"),
        ],
    )
}

fn seq_of(data: &[u8]) -> usize {
    u32::from_be_bytes(data[..4].try_into().expect("4 bytes")) as usize
}

#[test]
fn a_sender_to_a_busy_shard_is_paused_and_memory_stays_flat_while_others_keep_going() {
    let shards = 2;
    // The slow room is homed on shard 1, the blaster and the paced pair
    // sit on shard 0 (so the blaster's messages cross shards), and the
    // paced room is homed on shard 0: pausing the blaster must not stall
    // its shard.
    let slow = room_homed_on(1, shards, 100);
    let paced = room_homed_on(0, shards, 200);
    let server = start_with_slow_room(shards, slow, SLOW_MICROS, &[]);
    server.add_member(slow, 1);
    server.add_member(slow, 2);
    server.add_member(paced, 3);
    server.add_member(paced, 4);

    let (mut blaster, _spare) = chatd_on_shard(&server, 1, 0);
    let (mut p, _spare_p) = chatd_on_shard(&server, 3, 0);
    let (mut q, _spare_q) = chatd_on_shard(&server, 4, 0);
    // The receiver on the slow shard too: the shard the blaster and the
    // paced pair share then gets no fan-out from the slow room, and its
    // queue's peak is its own.
    let (mut r, _spare_r) = chatd_on_shard(&server, 2, 1);
    blaster.join(slow);
    r.join(slow);
    p.join(paced);
    q.join(paced);
    let blaster_id = (1, blaster.client_id);
    let p_id = (3, p.client_id);

    // The receiver in the slow room counts what it gets, in order.
    let received = Arc::new(AtomicUsize::new(0));
    let receiver = {
        let received = received.clone();
        std::thread::spawn(move || {
            for want in 0..BLAST {
                match r.recv() {
                    Ev::RtMsg {
                        chat, user, data, ..
                    } if chat == slow && user == blaster_id.0 => {
                        assert_eq!(seq_of(&data), want, "a message lost or reordered");
                        assert_eq!(data.len(), DATA);
                    }
                    other => panic!("the slow room's receiver got {other:?}"),
                }
                received.store(want + 1, SeqCst);
            }
        })
    };

    // A server that never resumes the blaster fails the test instead of
    // hanging it.
    blaster
        .stream
        .tcp()
        .expect("a socket")
        .set_write_timeout(Some(common::WAIT * 3))
        .expect("write timeout");
    let rss_before = rss_bytes(&server);
    let blast = std::thread::spawn(move || {
        let mut data = vec![0x5A; DATA];
        for seq in 0..BLAST {
            data[..4].copy_from_slice(&(seq as u32).to_be_bytes());
            blaster.rtmsg(slow, 0, 0, 1, &data);
        }
        // And ends its transport at once: what it sent before, still
        // unread by the server, must be handled all the same.
        blaster.stream.finish().expect("end the blaster's stream");
        blaster
    });

    // The blaster's reads pause once the slow shard's queue is full.
    wait_until("the blaster's reads to pause", || {
        server.metric("chatd_read_pauses_total") >= 1.0
    });

    // Meanwhile a paced connection on the blaster's shard keeps getting
    // its round trips through, long before the slow shard has worked off
    // the blast.
    let mut worst = Duration::ZERO;
    for i in 0..PACED {
        let sent = Instant::now();
        p.rtmsg(paced, 0, 0, 2, &(i as u32).to_be_bytes());
        q.expect_rtmsg_from(paced, p_id, 2, &(i as u32).to_be_bytes());
        worst = worst.max(sent.elapsed());
    }
    let got = received.load(SeqCst);
    assert!(
        got < BLAST,
        "the paced round trips waited for the whole blast to be handled \
         ({got} of {BLAST} delivered, worst round trip {worst:?})"
    );
    eprintln!(
        "paced round trips: worst {worst:?}, while {got} of {BLAST} blasted messages were delivered"
    );

    // What the server held meanwhile: a queue bounded by the budget (plus
    // the one message a check lets through), not the blast; and its
    // resident memory barely moved while 16 MB were sent its way.
    let peak = server.metric("chatd_shard_queue_bytes_peak") as usize;
    assert!(
        peak <= BUDGET + 2 * (DATA + 64),
        "a shard's queue held {peak} bytes, over the budget of {BUDGET}"
    );
    let grown = rss_bytes(&server).saturating_sub(rss_before);
    assert!(
        grown < BLAST * DATA / 4,
        "the server's memory grew by {grown} bytes during a blast of {} bytes",
        BLAST * DATA
    );

    // Nothing is lost: every blasted message arrives, in order, once the
    // slow shard gets to it (those sent before the blaster ended its
    // stream included), the blaster is closed after them, and the queues
    // empty.
    receiver.join().expect("the receiver got every message");
    let mut blaster = blast.join().expect("the blaster wrote everything");
    blaster.expect_closed();
    wait_until("the queues between shards to empty", || {
        server.metric("chatd_shard_queue_bytes") == 0.0
    });
}

/// A client that keeps within `--rtmsg-rate` is not RATE_LIMITED for a
/// pause the server caused: what it sent while it was not read comes in
/// at once when it resumes, and the pause is credited to its bucket.
#[test]
fn a_sender_within_its_rate_limit_gets_no_rate_limited_after_a_pause() {
    const RATE: u32 = 5;
    const PACED: u32 = 22;
    let shards = 2;
    // The blaster fills the slow room's home shard (1 s per message there)
    // with 9 messages: the queue stays full for about 5 s, far longer than
    // the 2 s of the rate a burst holds.
    let slow = room_homed_on(1, shards, 100);
    let other = room_homed_on(1, shards, 300);
    let rate = RATE.to_string();
    let server = start_with_slow_room(shards, slow, 1_000_000, &["--rtmsg-rate", &rate]);
    server.add_member(slow, 1);
    server.add_member(other, 3);
    server.add_member(other, 4);
    let (mut blaster, _spare) = chatd_on_shard(&server, 1, 0);
    let (mut paced, _spare_p) = chatd_on_shard(&server, 3, 0);
    let mut receiver = server.chatd(4);
    blaster.join(slow);
    paced.join(other);
    receiver.join(other);
    let from = (3, paced.client_id);

    for seq in 0..9u32 {
        let mut data = vec![0x5A; DATA];
        data[..4].copy_from_slice(&seq.to_be_bytes());
        blaster.rtmsg(slow, 0, 0, 1, &data);
    }
    // A fence behind the blast: the blaster's 9 messages are all queued.
    blaster.keepalive_roundtrip();

    // The paced client sends at 80% of the rate to another room of that
    // shard: it is paused at its first message, and what it sends
    // meanwhile (about 4 s of it, twice what a burst holds) waits unread.
    let interval = Duration::from_millis(1000 * 5 / (4 * RATE as u64));
    let start = Instant::now();
    for i in 0..PACED {
        let due = start + interval * i;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        paced.rtmsg(other, 0, 0, 2, &i.to_be_bytes());
    }
    assert!(
        server.metric("chatd_read_pauses_total") >= 1.0,
        "the paced client was never paused: the test shows nothing"
    );
    // Every message arrives, in order, and the client gets no error: its
    // next answer is its keepalive's.
    for i in 0..PACED {
        receiver.expect_rtmsg_from(other, from, 2, &i.to_be_bytes());
    }
    paced.keepalive_roundtrip();
}
