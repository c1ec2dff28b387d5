//! What the WebSocket and TLS layers add to a connection's read and write
//! paths, sans-IO, as ratios to the plain TCP path in the same run.
//!
//! - `read/tcp/S`: the bytes of one read land in the read buffer (the copy
//!   the kernel makes) and the command decoder gets them: the baseline.
//! - `read/ws/S`: the same commands as WebSocket frames (one masked binary
//!   frame per command, as a browser sends them), in 64 KiB reads, through
//!   `ws::Decoder` (unmask in place, payloads moved over the headers).
//! - `write/tls/S`: one batch of 64 queued frames and their WebSocket
//!   header encrypted by `tls::Session::send` (AES-GCM or ChaCha20, whatever the in-memory
//!   client and server agree; TLS 1.3), against `write/copy/S`, one copy
//!   of the same bytes.
//!
//! S is the command size: 128 bytes (a typical OP_RTMSG) or 64 KiB (the
//! largest under the default `--max-rtmsg-len`). Throughput is in bytes of
//! commands.

use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chatd::tls::Session;
use chatd::ws::encode::Header;
use chatd::ws::Decoder;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rustls::pki_types::ServerName;

/// Bytes per read on both paths.
const READ: usize = 64 * 1024;

/// Commands per batch (read side: per stream; write side: per send).
fn count(size: usize) -> usize {
    (1 << 20) / size
}

/// A client frame: FIN, binary, masked with `key`.
fn frame(payload: &[u8], key: [u8; 4], out: &mut Vec<u8>) {
    out.push(0x82);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
}

fn read_paths(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    for size in [128, 64 * 1024] {
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let n = count(size);
        let tcp: Vec<u8> = payload.repeat(n);
        let mut ws = Vec::new();
        for i in 0..n {
            frame(&payload, (i as u32).to_le_bytes(), &mut ws);
        }
        g.throughput(Throughput::Bytes(tcp.len() as u64));
        g.bench_function(BenchmarkId::new("tcp", size), |b| {
            let mut buf = BytesMut::with_capacity(READ);
            b.iter(|| {
                for chunk in tcp.chunks(READ) {
                    buf.extend_from_slice(chunk);
                    black_box(&buf[..]);
                    buf.clear();
                }
            })
        });
        g.bench_function(BenchmarkId::new("ws", size), |b| {
            let mut buf = BytesMut::with_capacity(READ);
            let mut dec = Decoder::new(size + 25);
            b.iter(|| {
                for chunk in ws.chunks(READ) {
                    let start = buf.len();
                    buf.extend_from_slice(chunk);
                    let inbound = dec.decode(&mut buf, start).expect("valid frames");
                    black_box((inbound, &buf[..]));
                    buf.clear();
                }
            })
        });
    }
    g.finish();
}

/// A server session that finished its handshake with an in-memory client.
fn session() -> (Session, rustls::ClientConnection) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, keyf) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, key.cert.pem()).expect("write");
    std::fs::write(&keyf, key.signing_key.serialize_pem()).expect("write");
    let mut server = Session::new(chatd::tls::load(&cert, &keyf).expect("load")).expect("session");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(key.cert.der().clone()).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("name");
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut plain = BytesMut::new();
    while client.is_handshaking() || server.is_handshaking() {
        let mut up = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut up).expect("client write");
        }
        server.receive(&up, &mut plain).expect("server receive");
        let mut down = BytesMut::new();
        server.pending(&mut down).expect("server pending");
        let mut rest = &down[..];
        while !rest.is_empty() {
            client.read_tls(&mut rest).expect("client read");
            client.process_new_packets().expect("client process");
        }
    }
    (server, client)
}

fn write_paths(c: &mut Criterion) {
    let mut g = c.benchmark_group("write");
    let (mut server, _client) = session();
    for size in [128, 64 * 1024] {
        let frames: Vec<Bytes> = (0..64).map(|i| Bytes::from(vec![i as u8; size])).collect();
        g.throughput(Throughput::Bytes((size * 64) as u64));
        g.bench_function(BenchmarkId::new("copy", size), |b| {
            let mut out = BytesMut::with_capacity(size * 64);
            b.iter(|| {
                for f in &frames {
                    out.extend_from_slice(f);
                }
                black_box(&out[..]);
                out.clear();
            })
        });
        g.bench_function(BenchmarkId::new("tls", size), |b| {
            let mut out = BytesMut::with_capacity(size * 64 + 64 * 1024);
            let head = Header::binary(size * 64);
            b.iter(|| {
                server
                    .send(head.as_bytes(), &frames, &mut out)
                    .expect("send");
                black_box(&out[..]);
                out.clear();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, read_paths, write_paths);
criterion_main!(benches);
