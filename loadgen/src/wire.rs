//! The pub/sub protocols the `fanout` scenario drives: chatd's OP_RTMSG
//! room broadcast, Redis (RESP2 `SUBSCRIBE` / `PUBLISH`) and NATS (`SUB` /
//! `PUB`). Each is a [`PubSub`]: how to open a connection (log in and join,
//! or subscribe), how to publish a payload to a room, how to parse what the
//! server sends into [`Frame`]s and how to answer its pings. The fanout
//! driver is generic over it, so all three run the same connection, I/O
//! and verification code; only the bytes on the wire differ.
//!
//! A room `N` is chat id `N` in chatd and channel / subject `room.N` in
//! Redis and NATS. The payload is the same in all three: the verification
//! stamp (sender, sequence, intended send time) followed by filler.

use std::cell::Cell;
use std::future::Future;
use std::io::Write as _;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::Duration;

use chatd_proto::chatd as cw;
use tokio::sync::Notify;

use crate::client::{self, ClientError, Codec, Reader, WireError, Writer, LOGIN_TIMEOUT};
use crate::transport::Endpoint;

/// Longest protocol line (RESP header, NATS control line) accepted.
const MAX_LINE: usize = 4096;
/// Largest payload accepted from a Redis or NATS server.
const MAX_PAYLOAD: usize = 16 << 20;
/// Idle connections send the protocol's keepalive this often (chatd's idle
/// timeout is 90 s).
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(30);
/// Prefix of Redis channel and NATS subject names.
const ROOM_PREFIX: &[u8] = b"room.";

/// One unit a pub/sub server sends, as the fanout driver sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A published message: its room (`None`: a channel name that is not
    /// `room.<number>`), the sending user where the protocol says (chatd)
    /// and the payload.
    Delivery {
        /// Room id.
        room: Option<u64>,
        /// chatd's sender_userid.
        sender_user: Option<u64>,
        /// Payload, byte for byte as published.
        data: &'a [u8],
    },
    /// Redis's integer reply to PUBLISH (the number of receivers).
    Reply(i64),
    /// NATS `PING`: must be answered with `PONG`.
    Ping,
    /// The confirmation that ends a connection's setup: Redis's subscribe
    /// confirmation or `+PONG`, NATS `PONG`.
    Ready,
    /// Housekeeping to skip: chatd OP_KEEPALIVE, NATS `INFO` and `+OK`.
    Other,
    /// An error reply or a command nobody asked for (its first bytes).
    Unexpected(&'a [u8]),
    /// chatd's OP_ERROR.
    Refused {
        /// Raw error code.
        code: u8,
        /// Opcode it concerned.
        opcode: u8,
    },
}

impl Frame<'_> {
    /// What went wrong, for a [`Frame::Unexpected`] or [`Frame::Refused`].
    pub fn describe(&self) -> String {
        match self {
            Frame::Refused { code, opcode } => ClientError::Refused {
                code: *code,
                opcode: *opcode,
            }
            .to_string(),
            Frame::Unexpected(b) => format!("unexpected {:?}", String::from_utf8_lossy(b)),
            other => format!("{other:?}"),
        }
    }
}

/// Where a connection of a room goes and what it does.
#[derive(Clone, Debug)]
pub struct Open {
    /// The server, over the run's transport.
    pub ep: Endpoint,
    /// Global connection index (source address spreading).
    pub index: usize,
    /// `--source-ips`.
    pub source_ips: u32,
    /// The room.
    pub room: u64,
    /// Whether it subscribes (chatd: every connection joins; the sender
    /// must be a member).
    pub subscribe: bool,
    /// chatd login token.
    pub token: String,
}

/// A pub/sub protocol as the fanout driver uses it.
pub trait PubSub: Copy + 'static {
    /// Connects and sets the connection up (chatd: AUTH, HELLO, JOIN;
    /// Redis: SUBSCRIBE or PING; NATS: CONNECT, SUB, PING), returning once
    /// the server confirmed it.
    fn open(self, o: Open) -> impl Future<Output = Result<(Reader, Writer), ClientError>>;

    /// Parses the first unit of `buf`: `Ok(None)` when it is incomplete.
    fn decode<'a>(self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, ClientError>;

    /// Appends the command that publishes `payload` to `room`.
    fn publish(self, room: u64, payload: &[u8], out: &mut Vec<u8>);

    /// Appends the answer to a [`Frame::Ping`].
    fn pong(self, _out: &mut Vec<u8>) {}

    /// Appends what keeps an idle connection open (chatd: OP_KEEPALIVE).
    fn keepalive(self, _out: &mut Vec<u8>) {}
}

/// The [`Codec`] of a [`PubSub`], for [`Reader::events`].
pub struct Frames<P>(pub P);

impl<P: PubSub> Codec for Frames<P> {
    type Event<'a> = Frame<'a>;

    fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, ClientError> {
        self.0.decode(buf)
    }
}

/// chatd: OP_RTMSG to `room/0/0`.
#[derive(Clone, Copy, Debug)]
pub struct Chatd;

impl PubSub for Chatd {
    async fn open(self, o: Open) -> Result<(Reader, Writer), ClientError> {
        let c = client::login_chatd(&o.ep, o.index, o.source_ips, &o.token, &[o.room]).await?;
        Ok((c.reader, c.writer))
    }

    fn decode<'a>(self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, ClientError> {
        let Some((ev, used)) = client::ChatdCodec.decode(buf)? else {
            return Ok(None);
        };
        let frame = match ev {
            cw::Event::RtMsg {
                chatid,
                sender_userid,
                data,
                ..
            } => Frame::Delivery {
                room: Some(chatid),
                sender_user: Some(sender_userid),
                data,
            },
            cw::Event::Keepalive => Frame::Other,
            cw::Event::Error { code, opcode, .. } => Frame::Refused { code, opcode },
            _ => Frame::Unexpected(&buf[..used.min(16)]),
        };
        Ok(Some((frame, used)))
    }

    fn publish(self, room: u64, payload: &[u8], out: &mut Vec<u8>) {
        cw::encode_request(
            &cw::Request::RtMsg {
                chatid: room,
                receiver_userid: 0,
                receiver_clientid: 0,
                msgtype: 0,
                data: payload,
            },
            out,
        );
    }

    fn keepalive(self, out: &mut Vec<u8>) {
        cw::encode_request(&cw::Request::Keepalive, out);
    }
}

/// Redis pub/sub over RESP2. A subscribed connection cannot publish, so
/// publishers are connections of their own; each PUBLISH is answered with
/// an integer reply, which the publisher's reader consumes.
#[derive(Clone, Copy, Debug)]
pub struct Redis;

impl PubSub for Redis {
    async fn open(self, o: Open) -> Result<(Reader, Writer), ClientError> {
        peer_open(self, o, |o, out| {
            if o.subscribe {
                resp_command(out, &[b"SUBSCRIBE", room_name(o.room).as_bytes()]);
            } else {
                resp_command(out, &[b"PING"]);
            }
        })
        .await
    }

    fn decode<'a>(self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, ClientError> {
        Ok(resp_frame(buf)?)
    }

    fn publish(self, room: u64, payload: &[u8], out: &mut Vec<u8>) {
        // *3 $7 PUBLISH $n room.N $len payload
        out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
        let mut name = [0u8; 32];
        let n = room_name_into(room, &mut name);
        let _ = write!(out, "${n}\r\n");
        out.extend_from_slice(&name[..n]);
        let _ = write!(out, "\r\n${}\r\n", payload.len());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
    }
}

/// NATS core: `SUB room.N 1` on subscribers, `PUB room.N len` on separate
/// publisher connections (CONNECT with echo off, not verbose).
#[derive(Clone, Copy, Debug)]
pub struct Nats;

/// The CONNECT every NATS connection sends.
const NATS_CONNECT: &[u8] = b"CONNECT {\"echo\":false,\"verbose\":false,\"pedantic\":false,\"name\":\"loadgen\",\"lang\":\"rust\",\"version\":\"0.1.0\",\"protocol\":1}\r\n";

impl PubSub for Nats {
    async fn open(self, o: Open) -> Result<(Reader, Writer), ClientError> {
        peer_open(self, o, |o, out| {
            out.extend_from_slice(NATS_CONNECT);
            if o.subscribe {
                let _ = write!(out, "SUB {} 1\r\n", room_name(o.room));
            }
            // The PONG confirms that CONNECT and SUB were processed.
            out.extend_from_slice(b"PING\r\n");
        })
        .await
    }

    fn decode<'a>(self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, ClientError> {
        Ok(nats_frame(buf)?)
    }

    fn publish(self, room: u64, payload: &[u8], out: &mut Vec<u8>) {
        let mut name = [0u8; 32];
        let n = room_name_into(room, &mut name);
        out.extend_from_slice(b"PUB ");
        out.extend_from_slice(&name[..n]);
        let _ = write!(out, " {}\r\n", payload.len());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
    }

    fn pong(self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"PONG\r\n");
    }
}

/// PONGs a connection owes: its reader notes PINGs, whichever task owns
/// the writer pays them with its next write.
#[derive(Default)]
pub struct Pongs {
    owed: Cell<u32>,
    notify: Notify,
}

impl Pongs {
    /// The reader saw a PING.
    pub fn owe(&self) {
        self.owed.set(self.owed.get() + 1);
        self.notify.notify_one();
    }

    /// Appends the PONGs owed.
    pub fn pay<P: PubSub>(&self, wire: P, out: &mut Vec<u8>) {
        for _ in 0..self.owed.replace(0) {
            wire.pong(out);
        }
    }

    /// Resolves when a PING comes in.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

/// Owns the writer of a connection that does not (or no longer) send:
/// answers PINGs and sends the protocol's keepalive every
/// [`KEEPALIVE_EVERY`]. Never returns; dropping the writer would half-close
/// the connection while the run still drains.
pub async fn idle<P: PubSub>(wire: P, mut wr: Writer, pongs: Rc<Pongs>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(KEEPALIVE_EVERY) => wire.keepalive(&mut wr.out),
            _ = pongs.wait() => {}
        }
        pongs.pay(wire, &mut wr.out);
        if wr.flush().await.is_err() {
            break;
        }
    }
    std::future::pending::<()>().await;
}

/// Connects, writes the setup commands `hello` appends and waits for the
/// server's [`Frame::Ready`].
async fn peer_open<P: PubSub>(
    wire: P,
    o: Open,
    hello: impl FnOnce(&Open, &mut Vec<u8>),
) -> Result<(Reader, Writer), ClientError> {
    tokio::time::timeout(LOGIN_TIMEOUT, async {
        let (mut reader, mut writer) = client::open(&o.ep, o.index, o.source_ips).await?;
        hello(&o, &mut writer.out);
        writer.flush().await?;
        let mut refused = None;
        reader
            .events(&Frames(wire), |f| match f {
                Frame::Ready => ControlFlow::Break(()),
                Frame::Unexpected(_) | Frame::Refused { .. } => {
                    refused = Some(f.describe());
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            })
            .await?;
        match refused {
            Some(s) => Err(ClientError::PeerRefused(s)),
            None => Ok((reader, writer)),
        }
    })
    .await
    .map_err(|_| ClientError::Timeout)?
}

/// `room.N`.
pub fn room_name(room: u64) -> String {
    format!("room.{room}")
}

/// Writes `room.N` into `buf`; returns its length.
fn room_name_into(room: u64, buf: &mut [u8; 32]) -> usize {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = room;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let p = ROOM_PREFIX.len();
    buf[..p].copy_from_slice(ROOM_PREFIX);
    let d = &digits[i..];
    buf[p..p + d.len()].copy_from_slice(d);
    p + d.len()
}

/// The room of a channel name `room.N`.
fn parse_room(name: &[u8]) -> Option<u64> {
    parse_u64(name.strip_prefix(ROOM_PREFIX)?)
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    let mut v = 0u64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
    }
    Some(v)
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    match b.split_first() {
        Some((b'-', rest)) => parse_u64(rest).map(|v| -(v as i64)),
        _ => parse_u64(b).map(|v| v as i64),
    }
}

/// Index of the `\r` of the first CRLF at or after `from`; `Ok(None)`
/// when none yet.
fn crlf(buf: &[u8], from: usize) -> Result<Option<usize>, WireError> {
    let hay = buf.get(from..).unwrap_or_default();
    // memchr, not a byte loop: this search was 40% of decoding a NATS MSG.
    match memchr::memchr(b'\n', hay) {
        Some(i) if i > 0 && hay[i - 1] == b'\r' => Ok(Some(from + i - 1)),
        Some(_) => Err(WireError::Resp("bare LF")),
        None if hay.len() > MAX_LINE => Err(WireError::TooLarge),
        None => Ok(None),
    }
}

/// Encodes a RESP command (an array of bulk strings).
fn resp_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// One RESP2 value that is not an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int(i64),
    Bulk(Option<&'a [u8]>),
}

/// Parses a non-array value at `pos`; `Ok(None)` when incomplete.
fn resp_value(buf: &[u8], pos: usize) -> Result<Option<(Val<'_>, usize)>, WireError> {
    let Some(&t) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(eol) = crlf(buf, pos + 1)? else {
        return Ok(None);
    };
    let line = &buf[pos + 1..eol];
    let next = eol + 2;
    match t {
        b'+' => Ok(Some((Val::Simple(line), next))),
        b'-' => Ok(Some((Val::Error(line), next))),
        b':' => {
            let v = parse_i64(line).ok_or(WireError::Resp("bad integer"))?;
            Ok(Some((Val::Int(v), next)))
        }
        b'$' => {
            let n = parse_i64(line).ok_or(WireError::Resp("bad bulk length"))?;
            if n < 0 {
                return Ok(Some((Val::Bulk(None), next)));
            }
            let n = n as usize;
            if n > MAX_PAYLOAD {
                return Err(WireError::TooLarge);
            }
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            if &buf[next + n..next + n + 2] != b"\r\n" {
                return Err(WireError::Resp("bulk string without CRLF"));
            }
            Ok(Some((Val::Bulk(Some(&buf[next..next + n])), next + n + 2)))
        }
        b'*' => Err(WireError::Resp("nested array")),
        _ => Err(WireError::Resp("unknown type byte")),
    }
}

/// Parses one RESP2 reply or push into a [`Frame`].
fn resp_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, WireError> {
    let Some(&t) = buf.first() else {
        return Ok(None);
    };
    if t != b'*' {
        let Some((v, used)) = resp_value(buf, 0)? else {
            return Ok(None);
        };
        let frame = match v {
            Val::Int(n) => Frame::Reply(n),
            Val::Simple(b"PONG") => Frame::Ready,
            Val::Simple(_) => Frame::Other,
            Val::Error(e) => Frame::Unexpected(e),
            Val::Bulk(_) => Frame::Unexpected(&buf[..used.min(32)]),
        };
        return Ok(Some((frame, used)));
    }
    let Some(eol) = crlf(buf, 1)? else {
        return Ok(None);
    };
    let n = parse_i64(&buf[1..eol]).ok_or(WireError::Resp("bad array length"))?;
    if !(0..=16).contains(&n) {
        return Err(WireError::Resp("array of unexpected length"));
    }
    let mut pos = eol + 2;
    let mut vals = [Val::Bulk(None); 3];
    for i in 0..n as usize {
        let Some((v, next)) = resp_value(buf, pos)? else {
            return Ok(None);
        };
        if let Some(slot) = vals.get_mut(i) {
            *slot = v;
        }
        pos = next;
    }
    let frame = match (n, vals) {
        (3, [Val::Bulk(Some(b"message")), Val::Bulk(Some(ch)), Val::Bulk(Some(data))]) => {
            Frame::Delivery {
                room: parse_room(ch),
                sender_user: None,
                data,
            }
        }
        (3, [Val::Bulk(Some(b"subscribe")), _, _]) => Frame::Ready,
        _ => Frame::Unexpected(&buf[..pos.min(32)]),
    };
    Ok(Some((frame, pos)))
}

/// Parses one NATS server operation into a [`Frame`].
fn nats_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, WireError> {
    let eol = match crlf(buf, 0) {
        Ok(Some(e)) => e,
        Ok(None) => return Ok(None),
        Err(WireError::Resp(_)) => return Err(WireError::Nats("bare LF")),
        Err(e) => return Err(e),
    };
    let line = &buf[..eol];
    let next = eol + 2;
    if let Some(rest) = line.strip_prefix(b"MSG ") {
        // MSG <subject> <sid> [reply-to] <#bytes>, one space apart.
        let first = memchr::memchr(b' ', rest).ok_or(WireError::Nats("MSG without subject"))?;
        let last = memchr::memrchr(b' ', rest).unwrap_or(first);
        let subject = &rest[..first];
        let middle = rest.get(first + 1..last).unwrap_or_default();
        let fields =
            2 + usize::from(!middle.is_empty()) + memchr::memchr_iter(b' ', middle).count();
        if subject.is_empty()
            || middle.is_empty()
            || middle.ends_with(b" ")
            || !(3..=4).contains(&fields)
        {
            return Err(WireError::Nats("MSG with a wrong field count"));
        }
        let len =
            parse_u64(&rest[last + 1..]).ok_or(WireError::Nats("MSG with a bad length"))? as usize;
        if len > MAX_PAYLOAD {
            return Err(WireError::TooLarge);
        }
        if buf.len() < next + len + 2 {
            return Ok(None);
        }
        if &buf[next + len..next + len + 2] != b"\r\n" {
            return Err(WireError::Nats("MSG payload without CRLF"));
        }
        let frame = Frame::Delivery {
            room: parse_room(subject),
            sender_user: None,
            data: &buf[next..next + len],
        };
        return Ok(Some((frame, next + len + 2)));
    }
    let frame = match line {
        b"PING" => Frame::Ping,
        b"PONG" => Frame::Ready,
        b"+OK" => Frame::Other,
        l if l.starts_with(b"INFO ") => Frame::Other,
        l if l.starts_with(b"-ERR") => Frame::Unexpected(l),
        _ => return Err(WireError::Nats("unknown operation")),
    };
    Ok(Some((frame, next)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        let mut b = [0u8; 32];
        let n = room_name_into(0, &mut b);
        assert_eq!(&b[..n], b"room.0");
        let n = room_name_into(u64::MAX, &mut b);
        assert_eq!(&b[..n], room_name(u64::MAX).as_bytes());
        assert_eq!(parse_room(b"room.1234"), Some(1234));
        assert_eq!(parse_room(b"room."), None);
        assert_eq!(parse_room(b"rooms.1"), None);
    }

    #[test]
    fn redis_publish_encoding() {
        let mut out = Vec::new();
        Redis.publish(7, b"hello", &mut out);
        assert_eq!(
            out,
            b"*3\r\n$7\r\nPUBLISH\r\n$6\r\nroom.7\r\n$5\r\nhello\r\n".to_vec()
        );
        let mut out = Vec::new();
        resp_command(&mut out, &[b"SUBSCRIBE", b"room.12"]);
        assert_eq!(out, b"*2\r\n$9\r\nSUBSCRIBE\r\n$7\r\nroom.12\r\n".to_vec());
    }

    #[test]
    fn redis_frames() {
        let msg = b"*3\r\n$7\r\nmessage\r\n$6\r\nroom.7\r\n$5\r\nhe\r\no\r\n:3\r\n";
        // Every proper prefix is incomplete.
        for i in 0..msg.len() - 4 {
            assert_eq!(resp_frame(&msg[..i]), Ok(None), "prefix {i}");
        }
        let (f, used) = resp_frame(msg).unwrap().unwrap();
        assert_eq!(
            f,
            Frame::Delivery {
                room: Some(7),
                sender_user: None,
                data: b"he\r\no"
            }
        );
        assert_eq!(resp_frame(&msg[used..]), Ok(Some((Frame::Reply(3), 4))));
        let sub = b"*3\r\n$9\r\nsubscribe\r\n$6\r\nroom.7\r\n:1\r\n";
        assert_eq!(resp_frame(sub), Ok(Some((Frame::Ready, sub.len()))));
        assert_eq!(resp_frame(b"+PONG\r\n"), Ok(Some((Frame::Ready, 7))));
        assert_eq!(
            resp_frame(b"-ERR no\r\n"),
            Ok(Some((Frame::Unexpected(b"ERR no"), 9)))
        );
        assert!(resp_frame(b"?x\r\n").is_err());
        assert!(resp_frame(b"*1\r\n*1\r\n").is_err());
    }

    #[test]
    fn nats_frames() {
        let mut out = Vec::new();
        Nats.publish(5, b"abc", &mut out);
        assert_eq!(out, b"PUB room.5 3\r\nabc\r\n".to_vec());
        let msg = b"MSG room.5 1 3\r\na\r\n\r\nPING\r\n";
        for i in 0..19 {
            assert_eq!(nats_frame(&msg[..i]), Ok(None), "prefix {i}");
        }
        let (f, used) = nats_frame(msg).unwrap().unwrap();
        assert_eq!(
            f,
            Frame::Delivery {
                room: Some(5),
                sender_user: None,
                data: b"a\r\n"
            }
        );
        assert_eq!(nats_frame(&msg[used..]), Ok(Some((Frame::Ping, 6))));
        let reply = b"MSG room.5 9 _INBOX.x 2\r\nhi\r\n";
        assert!(matches!(
            nats_frame(reply),
            Ok(Some((Frame::Delivery { room: Some(5), .. }, 29)))
        ));
        assert_eq!(nats_frame(b"PONG\r\n"), Ok(Some((Frame::Ready, 6))));
        assert_eq!(
            nats_frame(b"INFO {\"server_id\":\"x\"}\r\n").map(|o| o.map(|x| x.0)),
            Ok(Some(Frame::Other))
        );
        assert!(matches!(
            nats_frame(b"-ERR 'Unknown'\r\n"),
            Ok(Some((Frame::Unexpected(_), 16)))
        ));
        assert!(nats_frame(b"WHAT\r\n").is_err());
        assert!(nats_frame(b"MSG a\r\n").is_err());
        assert!(nats_frame(b"MSG a 1\r\n").is_err(), "no length");
        assert!(nats_frame(b"MSG a 1 r x 2\r\n").is_err(), "five fields");
        assert!(nats_frame(b"MSG a 1 x\r\n").is_err(), "bad length");
    }
}
