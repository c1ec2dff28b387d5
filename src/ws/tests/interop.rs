//! An independent implementation checks ours: tungstenite, in the client
//! role, over an in-memory pipe (no socket). It builds the upgrade request
//! and checks our `Sec-WebSocket-Accept`; it masks and fragments the
//! frames our decoder reads; it parses the frames our encoder writes.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::frame::coding::{CloseCode as TCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame};
use tungstenite::{Message, WebSocket};

use crate::ids::Service;
use crate::ws::encode::{close, pong, Header};
use crate::ws::handshake::{self, OriginPolicy, Parsed};
use crate::ws::{CloseCode, Decoder, Error};

/// Both directions of a connection, in memory. The client reads what the
/// server put in `to_client` (WouldBlock when empty) and writes into
/// `to_server`.
#[derive(Default)]
struct Pipe {
    to_server: Vec<u8>,
    to_client: VecDeque<u8>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.to_client.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.to_client.read(buf)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.to_server.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A tungstenite client connected to `path` through our handshake.
fn connect(path: &str) -> WebSocket<Pipe> {
    let url = format!("ws://localhost:7402{path}");
    let mut mid = match tungstenite::client(url.as_str(), Pipe::default()) {
        Err(HandshakeError::Interrupted(mid)) => mid,
        Ok(_) => panic!("handshake finished without an answer"),
        Err(HandshakeError::Failure(e)) => panic!("client failed: {e}"),
    };
    let pipe = mid.get_mut().get_mut();
    let sent = std::mem::take(&mut pipe.to_server);
    let Parsed::Upgrade { request, used } = handshake::parse(&sent, &OriginPolicy::Any) else {
        panic!(
            "tungstenite's request refused: {}",
            String::from_utf8_lossy(&sent)
        );
    };
    assert_eq!(used, sent.len());
    assert_eq!(request.service, Service::Chatd);
    let mut answer = Vec::new();
    handshake::accept(&request, &mut answer);
    pipe.to_client.extend(answer);
    match mid.handshake() {
        // tungstenite checks Sec-WebSocket-Accept against its key.
        Ok((ws, response)) => {
            assert_eq!(response.status(), 101);
            ws
        }
        Err(e) => panic!("client refused our answer: {e}"),
    }
}

/// Decodes everything the client wrote so far, in reads of `chunk` bytes.
fn server_reads(
    ws: &mut WebSocket<Pipe>,
    dec: &mut Decoder,
    chunk: usize,
) -> (Vec<u8>, Vec<Vec<u8>>, Result<(), Error>) {
    let wire = std::mem::take(&mut ws.get_mut().to_server);
    let (mut stream, mut pings) = (Vec::new(), Vec::new());
    let mut buf = BytesMut::new();
    for piece in wire.chunks(chunk.max(1)) {
        let start = buf.len();
        buf.extend_from_slice(piece);
        let res = dec.decode(&mut buf, start);
        stream.extend_from_slice(&buf.split());
        match res {
            Ok(inbound) => pings.extend(inbound.ping.map(|p| p.as_slice().to_vec())),
            Err(e) => return (stream, pings, Err(e)),
        }
    }
    (stream, pings, Ok(()))
}

/// Sends two messages, then one fragmented around a Ping; returns the
/// command stream they carry.
fn send_sample(ws: &mut WebSocket<Pipe>) -> Vec<u8> {
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let frag =
        |data: &'static [u8], op, fin| Message::Frame(Frame::message(data, OpCode::Data(op), fin));
    ws.send(Message::Binary(Bytes::from_static(b"\x00\x00")))
        .unwrap();
    ws.send(Message::Binary(Bytes::from(big.clone()))).unwrap();
    ws.write(frag(b"frag", Data::Binary, false)).unwrap();
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .unwrap();
    ws.write(frag(b"ment", Data::Continue, false)).unwrap();
    ws.write(frag(b"ed", Data::Continue, true)).unwrap();
    ws.flush().unwrap();
    let mut want = b"\x00\x00".to_vec();
    want.extend_from_slice(&big);
    want.extend_from_slice(b"fragmented");
    want
}

#[test]
fn tungstenite_messages_and_fragments_decode_to_the_command_stream() {
    let mut ws = connect("/chatd?token=ignored");
    for chunk in [1, 7, 1000, 1 << 20] {
        let want = send_sample(&mut ws);
        let mut dec = Decoder::new(100_000);
        let (stream, pings, res) = server_reads(&mut ws, &mut dec, chunk);
        assert_eq!(res, Ok(()), "reads of {chunk}");
        assert_eq!(stream, want, "reads of {chunk}");
        assert_eq!(pings, vec![b"are you there".to_vec()]);
    }
}

#[test]
fn tungstenite_text_and_oversized_messages_get_1003_and_1009() {
    let mut ws = connect("/chatd");
    ws.send(Message::Text("hello".into())).unwrap();
    let (_, _, res) = server_reads(&mut ws, &mut Decoder::new(100), 64);
    assert_eq!(res.map_err(Error::close_code), Err(CloseCode(1003)));

    ws.send(Message::Binary(Bytes::from(vec![0; 101]))).unwrap();
    let (stream, _, res) = server_reads(&mut ws, &mut Decoder::new(100), 64);
    assert_eq!(res.map_err(Error::close_code), Err(CloseCode(1009)));
    assert!(stream.is_empty());
}

#[test]
fn a_tungstenite_close_is_reported_with_its_status_and_reason() {
    let mut ws = connect("/chatd");
    ws.close(Some(CloseFrame {
        code: TCode::Away,
        reason: "tab closed".into(),
    }))
    .unwrap();
    ws.flush().unwrap();
    let wire = std::mem::take(&mut ws.get_mut().to_server);
    let mut buf = BytesMut::from(&wire[..]);
    let inbound = Decoder::new(100).decode(&mut buf, 0).unwrap();
    let c = inbound.close.expect("close reported");
    assert_eq!((c.code, c.reason()), (Some(CloseCode(1001)), "tab closed"));
}

#[test]
fn tungstenite_reads_our_binary_pong_and_close_frames() {
    let mut ws = connect("/chatd");
    // One write of three queued commands under one header, as the driver
    // sends them: [header, frame1, frame2, frame3].
    let frames = [
        Bytes::from_static(b"\x00"),
        Bytes::from(vec![0x07; 300]),
        Bytes::from(vec![0x05; 70_000]),
    ];
    let len: usize = frames.iter().map(Bytes::len).sum();
    let mut out = Header::binary(len).as_bytes().to_vec();
    for f in &frames {
        out.extend_from_slice(f);
    }
    pong(b"are you there", &mut out);
    close(
        Some(CloseCode::POLICY_VIOLATION),
        "NOT_AUTHENTICATED",
        &mut out,
    );
    ws.get_mut().to_client.extend(out);

    let want: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
    assert_eq!(ws.read().unwrap(), Message::Binary(Bytes::from(want)));
    assert_eq!(
        ws.read().unwrap(),
        Message::Pong(Bytes::from_static(b"are you there"))
    );
    match ws.read().unwrap() {
        Message::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 1008);
            assert_eq!(f.reason.as_str(), "NOT_AUTHENTICATED");
        }
        other => panic!("expected Close, got {other:?}"),
    }
    // tungstenite answers our Close with its own: a Close we decode.
    ws.flush().unwrap();
    let wire = std::mem::take(&mut ws.get_mut().to_server);
    let mut buf = BytesMut::from(&wire[..]);
    let inbound = Decoder::new(100).decode(&mut buf, 0).unwrap();
    assert_eq!(inbound.close.and_then(|c| c.code), Some(CloseCode(1008)));
}
