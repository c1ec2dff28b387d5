//! Transport tests, in memory: the hooks as the driver calls them, with a
//! real [`OutQueue`] lending the frames, and "sockets" that take as many
//! bytes as a test says. The bytes a client would receive are parsed back
//! (by hand for WebSocket, by a rustls client for TLS) and checked against
//! what was queued: every byte in order, one header per write, a frame cut
//! by a short write finished before anything else, the transport's own
//! bytes where their marker was.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::net::chunk::ChunkPool;
use crate::net::outbuf::{Flush, OutQueue};
use crate::ws::CloseCode;

/// A cap no test reaches.
const BIG: usize = 1 << 30;

/// Every origin allowed, the default message limit.
fn ctx(origins: &OriginPolicy) -> Ctx<'_> {
    Ctx {
        origins,
        max_message_len: 65_536 + 25,
    }
}

const UPGRADE: &[u8] = b"GET /statusd HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A masked client frame.
fn client_frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1, 2, 3, 4];
    let mut f = vec![if fin { 0x80 } else { 0 } | op];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// A WebSocket transport whose upgrade went through; returns it and the
/// 101 answer it wants written.
fn upgraded() -> (Transport, Bytes) {
    let mut t = Transport::new(true, None).unwrap();
    let any = OriginPolicy::Any;
    let mut buf = BytesMut::from(UPGRADE);
    let n = buf.len();
    assert_eq!(t.inbound(&mut buf, n, &ctx(&any)), Inbound::Commands);
    assert!(buf.is_empty());
    assert_eq!(t.take_upgrade(), Some(Service::Statusd));
    assert!(t.wants_write());
    let own = write_all_of(&mut t, &[Bytes::new()]);
    (t, own)
}

/// Queues `frames` on a fresh queue, lends them to `t` and writes all of
/// its socket batches whole; returns the socket bytes.
fn write_all_of(t: &mut Transport, frames: &[Bytes]) -> Bytes {
    let mut q = OutQueue::default();
    let mut pool = ChunkPool::default();
    for f in frames {
        let _ = q.push(&f.clone(), BIG, Flush::Now, &mut pool).unwrap();
    }
    drain(t, &mut q, &mut |sock: &[Bytes]| {
        sock.iter().map(Bytes::len).sum()
    })
}

/// Writes `q` through `t` until it is empty, each write taking as many
/// bytes as `take` says of the socket batch; returns the socket bytes.
fn drain(t: &mut Transport, q: &mut OutQueue, take: &mut dyn FnMut(&[Bytes]) -> usize) -> Bytes {
    let mut wire = BytesMut::new();
    let (mut batch, mut sock) = (Vec::new(), Vec::new());
    let mut pool = ChunkPool::default();
    let mut turns = 0;
    while !q.is_empty() {
        turns += 1;
        assert!(turns < 10_000, "the queue does not drain");
        q.take_batch(&mut batch, 8);
        assert!(t.outbound(&mut batch, &mut sock));
        let n = match t.seal(&sock).unwrap() {
            Some(records) => {
                wire.extend_from_slice(&records);
                sock.iter().map(Bytes::len).sum()
            }
            None => {
                let n = take(&sock).min(sock.iter().map(Bytes::len).sum());
                let mut left = n;
                for b in &sock {
                    let k = left.min(b.len());
                    wire.extend_from_slice(&b[..k]);
                    left -= k;
                }
                n
            }
        };
        let w = t.written(&mut sock, n, &mut batch);
        assert!(sock.is_empty());
        if let Some(rest) = w.rest {
            wire.extend_from_slice(&rest);
        }
        q.written(&mut batch, w.commands, &mut pool);
        assert!(batch.is_empty());
    }
    wire.freeze()
}

/// A server frame parsed from the wire.
#[derive(Debug, PartialEq, Eq)]
struct Frame {
    op: u8,
    payload: Vec<u8>,
}

/// Parses unmasked server frames (all FIN), failing on anything else.
fn server_frames(mut wire: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        assert!(wire.len() >= 2, "a header was cut");
        assert_eq!(wire[0] & 0xF0, 0x80, "FIN, no RSV bits");
        assert_eq!(wire[1] & 0x80, 0, "server frames are not masked");
        let (len, at) = match wire[1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([wire[2], wire[3]])), 4),
            127 => (
                u64::from_be_bytes(wire[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (usize::from(n), 2),
        };
        out.push(Frame {
            op: wire[0] & 0x0F,
            payload: wire[at..at + len].to_vec(),
        });
        wire = &wire[at + len..];
    }
    out
}

#[test]
fn tcp_passes_bytes_through_untouched_both_ways() {
    let mut t = Transport::tcp();
    assert!(t.is_tcp());
    assert_eq!(std::mem::size_of::<Transport>(), 8);
    let any = OriginPolicy::Any;
    let mut buf = BytesMut::from(&b"\x00\x01\x07\x00\x00\x00\x00\x00\x00\x00"[..]);
    let before = buf.clone();
    assert_eq!(t.inbound(&mut buf, 3, &ctx(&any)), Inbound::Commands);
    assert_eq!(buf, before);
    assert!(!t.wants_write());
    let frames = vec![Bytes::from_static(b"\x00"), Bytes::from_static(b"\x02abc")];
    let mut batch = frames.clone();
    let mut sock = Vec::new();
    assert!(
        !t.outbound(&mut batch, &mut sock),
        "TCP writes its batch as it is"
    );
    assert_eq!(batch, frames);
    assert_eq!(t.seal(&sock).unwrap(), None);
    assert_eq!(t.finish(), Bytes::new());
}

#[test]
fn the_upgrade_answers_101_names_the_service_and_passes_the_frames_after_it() {
    let mut t = Transport::new(true, None).unwrap();
    let any = OriginPolicy::Any;
    // The request in two reads, the second ending with a frame.
    let mut buf = BytesMut::from(&UPGRADE[..20]);
    assert_eq!(t.inbound(&mut buf, 20, &ctx(&any)), Inbound::Wait);
    assert_eq!(&buf[..], &UPGRADE[..20], "the request so far is kept");
    assert!(!t.wants_write() && t.take_upgrade().is_none());
    buf.extend_from_slice(&UPGRADE[20..]);
    buf.extend_from_slice(&client_frame(true, 2, b"\x00\x00"));
    let n = buf.len() - 20;
    assert_eq!(t.inbound(&mut buf, n, &ctx(&any)), Inbound::Commands);
    assert_eq!(&buf[..], b"\x00\x00");
    assert_eq!(t.take_upgrade(), Some(Service::Statusd));
    assert_eq!(t.take_upgrade(), None, "once");
    assert!(t.wants_write());
    let answer = write_all_of(&mut t, &[Bytes::new()]);
    assert!(answer.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(answer.ends_with(b"\r\n\r\n"));
    assert!(!t.wants_write());
}

#[test]
fn a_refused_upgrade_is_answered_and_closes_with_no_close_frame() {
    let mut t = Transport::new(true, None).unwrap();
    let only = OriginPolicy::parse("https://a.example");
    let req = String::from_utf8(UPGRADE.to_vec())
        .unwrap()
        .replace("Host: x\r\n", "Host: x\r\nOrigin: https://evil.example\r\n");
    let mut buf = BytesMut::from(req.as_bytes());
    let n = buf.len();
    assert_eq!(t.inbound(&mut buf, n, &ctx(&only)), Inbound::Close);
    assert!(buf.is_empty());
    assert!(t.wants_write());
    // An OP_ERROR queued meanwhile (a drain) cannot be sent: dropped.
    let answer = write_all_of(&mut t, &[Bytes::new(), Bytes::from_static(b"\x07err")]);
    assert!(
        answer.starts_with(b"HTTP/1.1 403 Forbidden\r\n"),
        "{answer:?}"
    );
    assert_eq!(
        t.finish(),
        Bytes::new(),
        "no Close frame without an upgrade"
    );
}

#[test]
fn one_header_per_write_and_the_shared_frames_go_out_unchanged() {
    let (mut t, _) = upgraded();
    let frames: Vec<Bytes> = (0..5u8).map(|i| Bytes::from(vec![i; 30])).collect();
    let mut batch = frames.clone();
    let mut sock = Vec::new();
    assert!(t.outbound(&mut batch, &mut sock));
    assert!(batch.is_empty());
    assert_eq!(sock.len(), 6, "one header, then the frames");
    assert_eq!(&sock[0][..], &[0x82, 126, 0, 150]);
    for (s, f) in sock[1..].iter().zip(&frames) {
        assert_eq!(s.as_ptr(), f.as_ptr(), "the frame itself, not a copy");
    }
    let w = t.written(&mut sock, 154, &mut batch);
    assert_eq!(
        w,
        Written {
            commands: 150,
            rest: None
        }
    );
    assert_eq!(batch, frames, "the queue gets back exactly what it lent");
}

#[test]
fn a_frame_cut_by_a_short_write_is_finished_first_without_a_new_header() {
    let (mut t, _) = upgraded();
    let mut q = OutQueue::default();
    let mut pool = ChunkPool::default();
    for f in [&b"aaaa"[..], b"bbbb"] {
        let _ = q
            .push(&Bytes::copy_from_slice(f), BIG, Flush::Now, &mut pool)
            .unwrap();
    }
    let (mut batch, mut sock) = (Vec::new(), Vec::new());
    q.take_batch(&mut batch, 8);
    assert!(t.outbound(&mut batch, &mut sock));
    // Header and "aaaa" and one byte of "bbbb".
    let w = t.written(&mut sock, 2 + 5, &mut batch);
    assert_eq!(
        w,
        Written {
            commands: 5,
            rest: None
        }
    );
    q.written(&mut batch, w.commands, &mut pool);
    // More is queued meanwhile: it gets a header of its own, after the
    // rest of the cut frame.
    let _ = q
        .push(&Bytes::from_static(b"cc"), BIG, Flush::Now, &mut pool)
        .unwrap();
    q.take_batch(&mut batch, 8);
    assert!(t.outbound(&mut batch, &mut sock));
    let parts: Vec<&[u8]> = sock.iter().map(|b| &b[..]).collect();
    assert_eq!(parts, [&b"bbb"[..], &[0x82, 2], b"cc"]);
    let w = t.written(&mut sock, 7, &mut batch);
    assert_eq!(
        w,
        Written {
            commands: 5,
            rest: None
        }
    );
}

#[test]
fn a_header_cut_by_a_short_write_is_returned_to_finish_and_its_frames_are_owed() {
    let (mut t, _) = upgraded();
    let frame = Bytes::from(vec![9u8; 200]);
    let (mut batch, mut sock) = (vec![frame.clone()], Vec::new());
    assert!(t.outbound(&mut batch, &mut sock));
    assert_eq!(&sock[0][..], &[0x82, 126, 0, 200]);
    let w = t.written(&mut sock, 1, &mut batch);
    assert_eq!(w.commands, 0);
    assert_eq!(w.rest.as_deref(), Some(&[126, 0, 200][..]));
    // The queue gets the frame back; the next write is its payload alone.
    assert_eq!(batch, std::slice::from_ref(&frame));
    assert!(t.outbound(&mut batch, &mut sock));
    assert_eq!(sock, [frame]);
}

#[test]
fn a_websocket_message_carries_at_most_its_cap_of_commands_or_one_larger_frame() {
    let (mut t, _) = upgraded();
    let third = WS_MESSAGE_MAX / 3 + 1;
    let frames: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i; third])).collect();
    let mut batch = frames.clone();
    let mut sock = Vec::new();
    assert!(t.outbound(&mut batch, &mut sock));
    assert_eq!(
        sock.len(),
        3,
        "a header and two frames: a third is too many"
    );
    assert_eq!(batch.len(), 1, "left for the next write");
    let n = sock.iter().map(Bytes::len).sum();
    let w = t.written(&mut sock, n, &mut batch);
    assert_eq!(w.commands, 2 * third);
    batch.drain(..2);
    let huge = Bytes::from(vec![7u8; WS_MESSAGE_MAX + 1]);
    batch.push(huge.clone());
    assert!(t.outbound(&mut batch, &mut sock));
    let parts: Vec<usize> = sock.iter().map(Bytes::len).collect();
    assert_eq!(parts[1..], [third], "the last of the three alone");
    let n = sock.iter().map(Bytes::len).sum();
    let _ = t.written(&mut sock, n, &mut batch);
    batch.remove(0);
    assert!(t.outbound(&mut batch, &mut sock));
    assert_eq!(sock[1], huge, "a frame over the cap is a message alone");
}

#[test]
fn a_slow_consumers_cut_finishes_the_websocket_message_in_progress() {
    let (mut t, _) = upgraded();
    let mut q = OutQueue::default();
    let mut pool = ChunkPool::default();
    let frames: Vec<Bytes> = (0..4u8).map(|i| Bytes::from(vec![i; 100])).collect();
    for f in &frames {
        let _ = q.push(f, BIG, Flush::Now, &mut pool).unwrap();
    }
    // A short write: the header and 150 bytes of the 400 under it.
    let (mut batch, mut sock) = (Vec::new(), Vec::new());
    q.take_batch(&mut batch, 8);
    assert!(t.outbound(&mut batch, &mut sock));
    let mut wire = BytesMut::new();
    let mut left = 4 + 150;
    for b in &sock {
        let k = left.min(b.len());
        wire.extend_from_slice(&b[..k]);
        left -= k;
    }
    let w = t.written(&mut sock, 4 + 150, &mut batch);
    q.written(&mut batch, w.commands, &mut pool);
    assert_eq!(t.owed(), 250);
    // Queued after it, then the close: dropped. The frame cut ends 50
    // bytes on, but the message's header promised 250.
    let _ = q.push(&Bytes::from(vec![9u8; 100]), BIG, Flush::Now, &mut pool);
    let last = Bytes::from_static(b"last frame!");
    let _ = q.cut(&last, t.owed(), |_| Some(100), &mut pool);
    wire.extend_from_slice(&drain(&mut t, &mut q, &mut |sock: &[Bytes]| {
        sock.iter().map(Bytes::len).sum()
    }));
    let got = server_frames(&wire);
    let all: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
    assert_eq!(
        got,
        [
            Frame {
                op: 2,
                payload: all
            },
            Frame {
                op: 2,
                payload: last.to_vec()
            }
        ]
    );
}

#[test]
fn own_bytes_go_where_their_marker_was_and_a_cut_one_is_finished() {
    let (mut t, _) = upgraded();
    let any = OriginPolicy::Any;
    // A Ping arrives after "aa" was queued and before "bb".
    let mut buf = BytesMut::from(&client_frame(true, 9, b"hi")[..]);
    let n = buf.len();
    assert_eq!(t.inbound(&mut buf, n, &ctx(&any)), Inbound::Commands);
    assert!(buf.is_empty() && t.wants_write());
    let mut q = OutQueue::default();
    let mut pool = ChunkPool::default();
    for f in [&b"aa"[..], b"", b"bb"] {
        let _ = q
            .push(&Bytes::copy_from_slice(f), BIG, Flush::Now, &mut pool)
            .unwrap();
    }
    // Every write takes 3 bytes at most: the Pong is cut too.
    let wire = drain(&mut t, &mut q, &mut |_| 3);
    assert_eq!(
        server_frames(&wire),
        [
            Frame {
                op: 2,
                payload: b"aa".to_vec()
            },
            Frame {
                op: 0xA,
                payload: b"hi".to_vec()
            },
            Frame {
                op: 2,
                payload: b"bb".to_vec()
            },
        ]
    );
    assert!(!t.wants_write());
}

#[test]
fn own_bytes_a_write_never_reached_wait_for_the_next_one() {
    let (mut t, _) = upgraded();
    let any = OriginPolicy::Any;
    let mut q = OutQueue::default();
    let mut pool = ChunkPool::default();
    let _ = q
        .push(&Bytes::from_static(b"aaaa"), BIG, Flush::Now, &mut pool)
        .unwrap();
    let (mut batch, mut sock) = (Vec::new(), Vec::new());
    q.take_batch(&mut batch, 8);
    assert!(t.outbound(&mut batch, &mut sock));
    let w = t.written(&mut sock, 3, &mut batch);
    q.written(&mut batch, w.commands, &mut pool);
    // "aaaa" is owed its last 3 bytes; a Ping's Pong and its marker come.
    let mut buf = BytesMut::from(&client_frame(true, 9, b"p")[..]);
    let n = buf.len();
    let _ = t.inbound(&mut buf, n, &ctx(&any));
    let _ = q.push(&Bytes::new(), BIG, Flush::Now, &mut pool).unwrap();
    q.take_batch(&mut batch, 8);
    assert!(t.outbound(&mut batch, &mut sock));
    let parts: Vec<&[u8]> = sock.iter().map(|b| &b[..]).collect();
    assert_eq!(parts, [&b"aaa"[..], &[0x8A, 1, b'p']]);
    // Cut inside the owed bytes: the Pong was not reached and waits.
    let w = t.written(&mut sock, 1, &mut batch);
    assert_eq!(
        w,
        Written {
            commands: 1,
            rest: None
        }
    );
    q.written(&mut batch, w.commands, &mut pool);
    assert!(t.wants_write());
    let wire = drain(&mut t, &mut q, &mut |s| s.iter().map(Bytes::len).sum());
    assert_eq!(&wire[..], b"aa\x8a\x01p");
}

#[test]
fn close_frames_say_why_the_connection_ends() {
    let code_of = |wire: &Bytes| {
        let f = server_frames(wire);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].op, 8);
        u16::from_be_bytes([f[0].payload[0], f[0].payload[1]])
    };
    let (mut t, _) = upgraded();
    t.close_with(CloseWhy::ShuttingDown);
    t.close_with(CloseWhy::Error);
    assert_eq!(code_of(&t.finish()), 1000, "the first reason stands");
    assert_eq!(t.finish(), Bytes::new(), "once");

    let (mut t, _) = upgraded();
    t.close_with(CloseWhy::Error);
    assert_eq!(code_of(&t.finish()), 1008);

    let (mut t, _) = upgraded();
    assert_eq!(code_of(&t.finish()), 1000, "a timeout: normal closure");

    // A framing error: its status and why.
    let (mut t, _) = upgraded();
    let any = OriginPolicy::Any;
    let mut buf = BytesMut::from(&client_frame(true, 1, b"text")[..]);
    let n = buf.len();
    assert_eq!(t.inbound(&mut buf, n, &ctx(&any)), Inbound::Close);
    t.close_with(CloseWhy::Error);
    let f = server_frames(&t.finish());
    assert_eq!(
        &f[0].payload[..2],
        &CloseCode::UNSUPPORTED_DATA.0.to_be_bytes()
    );
    assert!(String::from_utf8_lossy(&f[0].payload[2..]).contains("text message"));

    // The client's Close: commands before it are handled, its status echoed.
    let (mut t, _) = upgraded();
    let mut buf = BytesMut::from(&client_frame(true, 2, b"\x00")[..]);
    buf.extend_from_slice(&client_frame(true, 8, &3001u16.to_be_bytes()));
    buf.extend_from_slice(&client_frame(true, 2, b"\x00"));
    let n = buf.len();
    assert_eq!(
        t.inbound(&mut buf, n, &ctx(&any)),
        Inbound::CommandsThenClose
    );
    assert_eq!(&buf[..], b"\x00", "the command before the Close only");
    assert_eq!(code_of(&t.finish()), 3001);
}

proptest! {
    /// Whatever the frames, markers and write sizes, the client reads
    /// binary messages holding whole commands, every command byte in
    /// order, and each Pong no later than where its marker was (earlier
    /// when an earlier marker carried it: control frames may come between
    /// any two messages).
    #[test]
    fn any_mix_of_frames_pongs_and_short_writes_reads_back_in_order(
        items in prop::collection::vec(prop_oneof![
            3 => prop::collection::vec(any::<u8>(), 1..300).prop_map(Some),
            1 => Just(None),
        ], 1..40),
        takes in prop::collection::vec(1usize..400, 1..50),
    ) {
        let (mut t, _) = upgraded();
        let any = OriginPolicy::Any;
        let mut q = OutQueue::default();
    let mut pool = ChunkPool::default();
        // The commands, and for each Pong how many commands precede its
        // marker.
        let (mut cmds, mut pongs) = (Vec::new(), Vec::new());
        for (i, item) in items.iter().enumerate() {
            match item {
                Some(cmd) => {
                    let _ = q.push(&Bytes::from(cmd.clone()), BIG, Flush::Now, &mut pool).unwrap();
                    cmds.push(cmd.clone());
                }
                None => {
                    let tag = [i as u8];
                    let mut buf = BytesMut::from(&client_frame(true, 9, &tag)[..]);
                    let n = buf.len();
                    let _ = t.inbound(&mut buf, n, &ctx(&any));
                    prop_assert!(t.wants_write());
                    let _ = q.push(&Bytes::new(), BIG, Flush::Now, &mut pool).unwrap();
                    pongs.push((tag.to_vec(), cmds.len()));
                }
            }
        }
        let mut k = 0;
        let wire = drain(&mut t, &mut q, &mut |_| {
            k += 1;
            takes[k % takes.len()]
        });
        prop_assert!(!t.wants_write());
        prop_assert_eq!(q.queued_bytes(), 0);
        // Split each message's payload back into the commands it must be
        // made of, in order: a message holds whole commands.
        let (mut got, mut got_pongs) = (0, Vec::new());
        for f in server_frames(&wire) {
            if f.op == 0xA {
                got_pongs.push((f.payload, got));
                continue;
            }
            prop_assert_eq!(f.op, 2);
            let mut p = &f.payload[..];
            while !p.is_empty() {
                prop_assert!(got < cmds.len(), "more bytes than queued");
                let next = &cmds[got];
                prop_assert!(p.starts_with(next), "a message does not hold whole commands");
                p = &p[next.len()..];
                got += 1;
            }
        }
        prop_assert_eq!(got, cmds.len());
        prop_assert_eq!(got_pongs.len(), pongs.len());
        for ((tag, at), (want_tag, marker_at)) in got_pongs.iter().zip(&pongs) {
            prop_assert_eq!(tag, want_tag);
            prop_assert!(at <= marker_at, "a Pong went out after its marker");
        }
    }
}

// ---- TLS ----

/// A self-signed certificate for localhost: the server configuration and
/// a client trusting it.
fn tls_pair() -> (Arc<ServerConfig>, rustls::ClientConnection) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let server = crate::tls::load(&c, &k).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    (server, client)
}

/// Hands what the client wants to send to the transport as one read,
/// then what the transport writes (through a marker when it wants) back
/// to the client; returns what `inbound` said and the client's plaintext.
fn exchange(
    t: &mut Transport,
    c: &mut rustls::ClientConnection,
    buf: &mut BytesMut,
    frames: &[Bytes],
) -> (Inbound, Vec<u8>) {
    let any = OriginPolicy::Any;
    let before = buf.len();
    while c.wants_write() {
        c.write_tls(&mut bytes::BufMut::writer(&mut *buf)).unwrap();
    }
    let n = buf.len() - before;
    let inbound = t.inbound(buf, n, &ctx(&any));
    let mut out = frames.to_vec();
    if t.wants_write() {
        out.insert(0, Bytes::new());
    }
    let wire = if out.is_empty() {
        Bytes::new()
    } else {
        write_all_of(t, &out)
    };
    let mut rest = &wire[..];
    let mut plain = Vec::new();
    while !rest.is_empty() {
        c.read_tls(&mut rest).unwrap();
        c.process_new_packets().unwrap();
        let _ = std::io::Read::read_to_end(&mut c.reader(), &mut plain);
    }
    (inbound, plain)
}

#[test]
fn tls_handshakes_then_carries_commands_both_ways_and_closes_with_close_notify() {
    let (config, mut c) = tls_pair();
    let mut t = Transport::new(false, Some(config)).unwrap();
    let mut buf = BytesMut::new();
    // ClientHello, then the client's Finished with a command after it.
    assert_eq!(exchange(&mut t, &mut c, &mut buf, &[]).0, Inbound::Commands);
    assert!(buf.is_empty());
    std::io::Write::write_all(&mut c.writer(), b"\x00\x00").unwrap();
    assert_eq!(exchange(&mut t, &mut c, &mut buf, &[]).0, Inbound::Commands);
    assert!(!c.is_handshaking());
    assert_eq!(&buf[..], b"\x00\x00", "decrypted in the read buffer");
    buf.clear();
    let frames: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i; 100_000])).collect();
    let (_, plain) = exchange(&mut t, &mut c, &mut buf, &frames);
    assert_eq!(plain, frames.concat());
    // close_notify last.
    let mut rest = &t.finish()[..];
    c.read_tls(&mut rest).unwrap();
    assert!(c.process_new_packets().unwrap().peer_has_closed());
}

#[test]
fn a_read_that_finishes_a_cut_record_and_brings_more_loses_nothing() {
    // A client's large write, read in two pieces: the second finishes a
    // record the first cut and carries whole records after it, so the
    // plaintext outgrows the ciphertext taken by that read (the rare path
    // of `receive_in_place`). rustls refuses more ciphertext while it
    // holds over 16 KiB of plaintext: what it decrypted must be taken out
    // first, or the connection fails ("received plaintext buffer full").
    let any = OriginPolicy::Any;
    // One full record, then small ones (a client's many small writes):
    // one read of rustls's (4 KiB) finishes the first and decrypts some of
    // the small ones too, over 16 KiB of plaintext at once.
    let big: Vec<u8> = (0..16 * 1024u32).map(|i| (i % 251) as u8).collect();
    let small: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 100]).collect();
    let sent = [&big[..], &small.concat()].concat();
    for cut in (1_000..16_400).step_by(700) {
        let (config, mut c) = tls_pair();
        let mut t = Transport::new(false, Some(config)).unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(exchange(&mut t, &mut c, &mut buf, &[]).0, Inbound::Commands);
        assert_eq!(exchange(&mut t, &mut c, &mut buf, &[]).0, Inbound::Commands);
        assert!(!c.is_handshaking());
        let mut wire = Vec::new();
        for part in std::iter::once(&big).chain(&small) {
            std::io::Write::write_all(&mut c.writer(), part).unwrap();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
        }
        let mut got = Vec::new();
        for piece in [&wire[..cut], &wire[cut..]] {
            buf.extend_from_slice(piece);
            let inbound = t.inbound(&mut buf, piece.len(), &ctx(&any));
            assert_eq!(inbound, Inbound::Commands, "cut at {cut}");
            got.extend_from_slice(&buf);
            buf.clear();
        }
        assert!(
            got == sent,
            "cut at {cut}: the plaintext, whole and in order"
        );
    }
}

#[test]
fn wss_runs_the_upgrade_and_frames_inside_tls() {
    let (config, mut c) = tls_pair();
    let mut t = Transport::new(true, Some(config)).unwrap();
    let mut buf = BytesMut::new();
    let _ = exchange(&mut t, &mut c, &mut buf, &[]);
    let mut req = UPGRADE.to_vec();
    req.extend_from_slice(&client_frame(true, 2, b"\x00"));
    std::io::Write::write_all(&mut c.writer(), &req).unwrap();
    let (inbound, plain) = exchange(&mut t, &mut c, &mut buf, &[]);
    assert_eq!(inbound, Inbound::Commands);
    assert_eq!(&buf[..], b"\x00");
    assert_eq!(t.take_upgrade(), Some(Service::Statusd));
    assert!(plain.starts_with(b"HTTP/1.1 101 "));
    let (_, plain) = exchange(
        &mut t,
        &mut c,
        &mut BytesMut::new(),
        &[Bytes::from_static(b"\x00")],
    );
    assert_eq!(plain, b"\x82\x01\x00");
    t.close_with(CloseWhy::ShuttingDown);
    let mut rest = &t.finish()[..];
    c.read_tls(&mut rest).unwrap();
    let state = c.process_new_packets().unwrap();
    assert!(state.peer_has_closed());
    let mut last = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c.reader(), &mut last);
    assert_eq!(last, [0x88, 2, 0x03, 0xE8], "Close 1000, then close_notify");
}

#[test]
fn plaintext_http_on_the_wss_port_is_told_in_plaintext_and_closed() {
    let (config, _) = tls_pair();
    let mut t = Transport::new(true, Some(config)).unwrap();
    let any = OriginPolicy::Any;
    let mut buf = BytesMut::from(UPGRADE);
    let n = buf.len();
    assert_eq!(t.inbound(&mut buf, n, &ctx(&any)), Inbound::Close);
    assert!(t.wants_write());
    let wire = write_all_of(&mut t, &[Bytes::new()]);
    let text = String::from_utf8(wire.to_vec()).unwrap();
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(&format!("Content-Length: {}", body.len())));
    assert_eq!(t.finish(), Bytes::new());
}

#[test]
fn a_chatd_client_in_plaintext_on_a_tls_port_is_closed() {
    let (config, _) = tls_pair();
    let mut t = Transport::new(false, Some(config)).unwrap();
    let any = OriginPolicy::Any;
    let mut buf = BytesMut::from(&b"\x06\x03\x00abc\x03\x01\x00\x00\x00"[..]);
    let n = buf.len();
    assert_eq!(t.inbound(&mut buf, n, &ctx(&any)), Inbound::Close);
    assert!(buf.is_empty());
    assert_eq!(
        t.finish(),
        Bytes::new(),
        "no close_notify for a failed session"
    );
}

/// Every idle WebSocket connection holds its layers: they are kept to one
/// 128-byte allocation (a mimalloc size class; bench/README.md measures
/// the RSS per connection), and a connection's `Transport` to a pointer.
/// A change that grows them must be a deliberate one.
#[test]
fn a_websocket_connection_holds_128_bytes_of_transport_state() {
    assert_eq!(std::mem::size_of::<Transport>(), 8);
    assert!(
        std::mem::size_of::<Layers>() <= 128,
        "the layers grew to {} bytes",
        std::mem::size_of::<Layers>()
    );
    assert!(std::mem::size_of::<crate::ws::Decoder>() <= 64);
}
