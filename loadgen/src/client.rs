//! Client connections and their I/O: connecting (optionally from a spread
//! of loopback source addresses), logging in to chatd and statusd, a read
//! buffer that decodes commands in place, and a write buffer that coalesces
//! everything pending on a connection into one write. The transport under
//! them (TCP, TLS, WebSocket) is [`crate::transport`]'s.
//!
//! Buffers are allocated once per connection and reused: the hot path
//! neither allocates nor copies beyond the socket calls (over WebSocket,
//! one copy of what a write sends, into its frame; over TLS, rustls's).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use chatd_proto::chatd as cw;
use chatd_proto::statusd as sw;
use chatd_proto::{DecodeError, ErrorCode, Limits};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::transport::{client_header, Deframer, Endpoint, Rd, Wr};

/// What a busy connection's read buffer grows to (from 4 KiB, doubling
/// while reads fill it). One read syscall per 4 KiB cost loadgen about as
/// much as decoding the ~25 deliveries in it at saturation; idle
/// connections (tens of thousands in `connections`) stay at 4 KiB.
const READ_BUF_BUSY: usize = 64 * 1024;

thread_local! {
    /// Run by every [`Reader`] of this thread between two reads, with the
    /// read's clock: the pacer registers its due-send check here
    /// ([`set_between_reads`]), so this module does not depend on it.
    static BETWEEN_READS: std::cell::Cell<Option<fn(u64)>> = const { std::cell::Cell::new(None) };
}

/// Registers `hook` to run between two reads of every [`Reader`] on this
/// thread (the pacer's due-send check).
pub fn set_between_reads(hook: fn(u64)) {
    BETWEEN_READS.with(|h| h.set(Some(hook)));
}

/// Most bytes of the command stream loadgen puts in one WebSocket frame.
/// A server closes a message longer than its longest command with 1009
/// (protocol section 8), and commands may span messages, so a write is cut
/// into frames no longer than the shortest such limit: chatd's is at least
/// 4,099 bytes (an OP_AUTH with the longest token).
const WS_FRAME_MAX: usize = 4096;

/// Longest wait for a login (connect, AUTH, HELLO, joins, dump).
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Decoder limits: accept anything the field can carry.
pub const LIMITS: Limits = Limits {
    max_rtmsg_len: chatd_proto::limits::MSGLEN_FIELD_MAX,
};

/// Why a connection failed.
#[derive(Debug)]
pub enum ClientError {
    /// connect(2) (or the socket setup before it) failed.
    Connect(std::io::Error),
    /// A read or write failed.
    Io(std::io::Error),
    /// The server closed the connection.
    Closed,
    /// The server sent bytes that do not decode.
    Decode(DecodeError),
    /// The server answered with OP_ERROR.
    Refused {
        /// Raw code.
        code: u8,
        /// Opcode it concerned.
        opcode: u8,
    },
    /// A login step took longer than [`LOGIN_TIMEOUT`].
    Timeout,
    /// A Redis or NATS server sent bytes that do not parse.
    Wire(WireError),
    /// A Redis or NATS server refused a setup command (`-ERR ...`).
    PeerRefused(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connect: {e}"),
            ClientError::Io(e) => write!(f, "i/o: {e}"),
            ClientError::Closed => f.write_str("closed by the server"),
            ClientError::Decode(e) => write!(f, "undecodable command from the server: {e}"),
            ClientError::Refused { code, opcode } => {
                let name = ErrorCode::from_u8(*code).map_or("?", |c| c.name());
                write!(f, "OP_ERROR {name} ({code}) for opcode {opcode:#04x}")
            }
            ClientError::Timeout => f.write_str("login timed out"),
            ClientError::Wire(e) => write!(f, "unparsable reply from the server: {e}"),
            ClientError::PeerRefused(s) => write!(f, "the server refused the setup: {s}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Why bytes from a Redis or NATS server do not parse (`crate::wire`
/// speaks those protocols; the error lives here, next to the
/// [`ClientError`] that carries it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// A RESP value of a type or shape loadgen never asks for.
    Resp(&'static str),
    /// A NATS control line loadgen does not know.
    Nats(&'static str),
    /// A line or payload above the limits.
    TooLarge,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Resp(s) => write!(f, "RESP: {s}"),
            WireError::Nats(s) => write!(f, "NATS: {s}"),
            WireError::TooLarge => f.write_str("line or payload too large"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<WireError> for ClientError {
    fn from(e: WireError) -> Self {
        ClientError::Wire(e)
    }
}

/// The source address of connection `index` when spreading over `n`
/// loopback addresses: 127.0.0.1 + index % n.
pub fn source_ip(index: usize, n: u32) -> Ipv4Addr {
    let off = (index as u64 % u64::from(n.max(1))) as u32;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 1)).wrapping_add(off))
}

/// Connects connection number `index` to `addr`, bound to a spread source
/// address when `source_ips` > 0. Sets TCP_NODELAY.
pub async fn connect(
    addr: SocketAddr,
    index: usize,
    source_ips: u32,
) -> Result<TcpStream, ClientError> {
    let stream = if source_ips == 0 {
        TcpStream::connect(addr)
            .await
            .map_err(ClientError::Connect)?
    } else {
        let sock = TcpSocket::new_v4().map_err(ClientError::Connect)?;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a pointer to a live
        // c_int and its size. Without this option bind() picks the port
        // before connect() and a source address runs out after ~28k ports.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(SocketAddr::V4(SocketAddrV4::new(
            source_ip(index, source_ips),
            0,
        )))
        .map_err(ClientError::Connect)?;
        sock.connect(addr).await.map_err(ClientError::Connect)?
    };
    stream.set_nodelay(true).map_err(ClientError::Connect)?;
    Ok(stream)
}

/// Connects connection number `index` to `ep` (see [`connect`]), runs its
/// transport's handshakes and returns its buffered read and write sides.
pub async fn open(
    ep: &Endpoint,
    index: usize,
    source_ips: u32,
) -> Result<(Reader, Writer), ClientError> {
    let tcp = connect(ep.addr, index, source_ips).await?;
    let (rd, wr, ws) = ep.open(tcp).await.map_err(ClientError::Connect)?;
    let framed = ws.is_some();
    Ok((Reader::new(rd, ws), Writer::new(wr, framed)))
}

/// The read side of a connection: a buffer of received bytes not yet
/// decoded, which grows only when one command does not fit.
pub struct Reader {
    rd: Rd,
    /// Over WebSocket: strips the server's frames from what is read.
    ws: Option<Deframer>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// When the last read returned ([`crate::measure::now_ns`]).
    read_ns: u64,
    /// The last read filled all the space it was given.
    filled: bool,
}

impl Reader {
    fn new(rd: Rd, ws: Option<Deframer>) -> Reader {
        Reader {
            rd,
            ws,
            buf: vec![0; 4096],
            start: 0,
            end: 0,
            read_ns: 0,
            filled: false,
        }
    }

    /// The received bytes not consumed yet.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops the first `n` bytes of [`Self::data`].
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes; `Ok(false)` when the peer closed.
    pub async fn fill(&mut self) -> Result<bool, ClientError> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let n = self.buf.len() * 2;
                self.buf.resize(n, 0);
            }
        } else if self.filled && self.buf.len() < READ_BUF_BUSY {
            // The last read took all it was offered: more is waiting.
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
        let space = self.buf.len() - self.end;
        let n = self
            .rd
            .read(&mut self.buf[self.end..])
            .await
            .map_err(ClientError::Io)?;
        self.filled = n == space;
        self.read_ns = crate::measure::now_ns();
        match &mut self.ws {
            None => self.end += n,
            Some(ws) => {
                let closed_before = ws.closed();
                self.end = ws.deframe(&mut self.buf, self.end, self.end + n);
                if closed_before || ws.closed() && self.start == self.end {
                    return Ok(false);
                }
            }
        }
        Ok(n > 0)
    }

    /// Decodes events with `codec` and hands each to `f` until `f` breaks
    /// (then `Ok`) or the connection fails. The one receive loop every
    /// protocol shares.
    pub async fn events<C: Codec>(
        &mut self,
        codec: &C,
        mut f: impl FnMut(C::Event<'_>) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        self.timed_events(codec, |ev, _| f(ev)).await
    }

    /// [`Reader::events`], with each event's arrival time: when the read
    /// that completed it returned. Latency measurement without a clock
    /// reading per event (which cost loadgen about 9% of its time
    /// receiving at saturation).
    pub async fn timed_events<C: Codec>(
        &mut self,
        codec: &C,
        mut f: impl FnMut(C::Event<'_>, u64) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        loop {
            loop {
                let at = self.read_ns;
                let Some((ev, used)) = codec.decode(self.data())? else {
                    break;
                };
                let flow = f(ev, at);
                self.consume(used);
                if flow.is_break() {
                    return Ok(());
                }
            }
            if !self.fill().await? {
                return Err(ClientError::Closed);
            }
            // Sends that fell due while this thread was busy leave now,
            // not after every other ready reader had its turn.
            BETWEEN_READS.with(|hook| {
                if let Some(hook) = hook.get() {
                    hook(self.read_ns);
                }
            });
        }
    }

    /// Decodes chatd events and hands each to `f` until `f` breaks (then
    /// `Ok`) or the connection fails.
    pub async fn chatd_events(
        &mut self,
        f: impl FnMut(cw::Event<'_>) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        self.events(&ChatdCodec, f).await
    }

    /// Decodes statusd events and hands each to `f` until `f` breaks (then
    /// `Ok`) or the connection fails.
    pub async fn statusd_events(
        &mut self,
        f: impl FnMut(sw::Event) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        self.events(&StatusdCodec, f).await
    }
}

/// A decoder of one protocol's server-to-client byte stream.
pub trait Codec {
    /// One decoded unit, possibly borrowing from the read buffer.
    type Event<'a>;

    /// Decodes the first unit of `buf`: `Ok(None)` when it is incomplete,
    /// else the unit and how many bytes it took.
    fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Self::Event<'a>, usize)>, ClientError>;
}

/// chatd's server-to-client commands.
pub struct ChatdCodec;

impl Codec for ChatdCodec {
    type Event<'a> = cw::Event<'a>;

    fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(cw::Event<'a>, usize)>, ClientError> {
        cw::decode_event(buf, &LIMITS).map_err(ClientError::Decode)
    }
}

/// statusd's server-to-client commands.
pub struct StatusdCodec;

impl Codec for StatusdCodec {
    type Event<'a> = sw::Event;

    fn decode(&self, buf: &[u8]) -> Result<Option<(sw::Event, usize)>, ClientError> {
        sw::decode_event(buf).map_err(ClientError::Decode)
    }
}

/// The write side of a connection: commands are encoded into `out` and
/// sent together by [`Writer::flush`].
pub struct Writer {
    wr: Wr,
    /// Pending bytes.
    pub out: Vec<u8>,
    /// Over WebSocket: `out` is sent as one frame per write, built here.
    framed: bool,
    /// The frame being written (WebSocket), from `at`.
    frame: Vec<u8>,
    at: usize,
}

impl Writer {
    fn new(wr: Wr, framed: bool) -> Writer {
        Writer {
            wr,
            out: Vec::with_capacity(1024),
            framed,
            frame: Vec::new(),
            at: 0,
        }
    }

    /// Over WebSocket: once the frame before is written, turns what `out`
    /// holds (up to [`WS_FRAME_MAX`] bytes of it) into the next frame.
    fn stage(&mut self) {
        if self.framed && self.at == self.frame.len() && !self.out.is_empty() {
            self.frame.clear();
            self.at = 0;
            let n = self.out.len().min(WS_FRAME_MAX);
            client_header(n, &mut self.frame);
            self.frame.extend_from_slice(&self.out[..n]);
            self.out.drain(..n);
        }
    }

    /// What the next write sends.
    fn pending(&self) -> &[u8] {
        if self.framed {
            &self.frame[self.at..]
        } else {
            &self.out
        }
    }

    /// Writes everything pending in one go.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        loop {
            self.stage();
            if self.pending().is_empty() {
                break;
            }
            let pending = match self.framed {
                true => &self.frame[self.at..],
                false => &self.out[..],
            };
            let n = self.wr.write(pending).await.map_err(ClientError::Io)?;
            if n == 0 {
                return Err(ClientError::Io(std::io::ErrorKind::WriteZero.into()));
            }
            self.consume(n);
        }
        // TLS: the records rustls holds.
        self.wr.flush().await.map_err(ClientError::Io)
    }

    /// Writes what the socket takes now, without waiting: `Ok(true)` when
    /// nothing is left pending. (The pacer writes from whichever task is
    /// running when a send is due.) Over TLS nothing is written here (a
    /// flush of rustls's records needs the task's waker): `Ok(false)`, and
    /// the caller's [`Writer::poll_flush`] writes.
    pub fn try_flush(&mut self) -> Result<bool, ClientError> {
        loop {
            self.stage();
            if self.pending().is_empty() {
                return Ok(true);
            }
            match self.wr.try_write(self.pending()) {
                None => return Ok(false),
                Some(Ok(0)) => return Err(ClientError::Io(std::io::ErrorKind::WriteZero.into())),
                Some(Ok(n)) => self.consume(n),
                Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Some(Err(e)) => return Err(ClientError::Io(e)),
            }
        }
    }

    /// Writes everything pending, registering for writability when the
    /// socket is full.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        loop {
            self.stage();
            if self.pending().is_empty() {
                break;
            }
            let (wr, pending) = match self.framed {
                true => (&mut self.wr, &self.frame[self.at..]),
                false => (&mut self.wr, &self.out[..]),
            };
            match Pin::new(wr).poll_write(cx, pending) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(ClientError::Io(std::io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => self.consume(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ClientError::Io(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut self.wr)
            .poll_flush(cx)
            .map_err(ClientError::Io)
    }

    /// Drops the first `n` pending bytes (written).
    fn consume(&mut self, n: usize) {
        if self.framed {
            self.at = (self.at + n).min(self.frame.len());
        } else if n >= self.out.len() {
            self.out.clear();
        } else {
            self.out.drain(..n);
        }
    }
}

/// A logged-in chatd connection.
pub struct Chatd {
    /// Incoming side.
    pub reader: Reader,
    /// Outgoing side.
    pub writer: Writer,
    /// The id the server gave it.
    pub client_id: u32,
}

/// Connects to chatd, logs in with `token` and joins `rooms` (waiting for
/// each OP_JOIN and OP_IN_CALL answer).
pub async fn login_chatd(
    ep: &Endpoint,
    index: usize,
    source_ips: u32,
    token: &str,
    rooms: &[u64],
) -> Result<Chatd, ClientError> {
    tokio::time::timeout(LOGIN_TIMEOUT, async {
        let (mut reader, mut writer) = open(ep, index, source_ips).await?;
        cw::encode_request(
            &cw::Request::Auth {
                token: token.as_bytes(),
            },
            &mut writer.out,
        );
        cw::encode_request(&cw::Request::Hello { version: 1 }, &mut writer.out);
        for &chatid in rooms {
            cw::encode_join(chatid, &mut writer.out);
        }
        writer.flush().await?;
        let mut client_id = 0;
        let mut flags_left = rooms.len();
        let mut refused = None;
        reader
            .chatd_events(|ev| {
                match ev {
                    cw::Event::Hello { client_id: id } => client_id = id,
                    cw::Event::InCall { .. } => flags_left = flags_left.saturating_sub(1),
                    cw::Event::Error { code, opcode, .. } => {
                        refused = Some(ClientError::Refused { code, opcode });
                        return ControlFlow::Break(());
                    }
                    _ => {}
                }
                if client_id != 0 && flags_left == 0 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .await?;
        if let Some(e) = refused {
            return Err(e);
        }
        Ok(Chatd {
            reader,
            writer,
            client_id,
        })
    })
    .await
    .map_err(|_| ClientError::Timeout)?
}

/// A logged-in statusd connection.
pub struct Statusd {
    /// Incoming side.
    pub reader: Reader,
    /// Outgoing side.
    pub writer: Writer,
    /// Own presence from the end of the login dump.
    pub own: u8,
}

/// Connects to statusd and logs in with `token` and OP_HELLO `presence`;
/// hands every login-dump entry to `on_dump` and returns after the dump's
/// final `OP_PRES 0 own`.
pub async fn login_statusd(
    ep: &Endpoint,
    index: usize,
    source_ips: u32,
    token: &str,
    presence: u8,
    mut on_dump: impl FnMut(u64, u8),
) -> Result<Statusd, ClientError> {
    tokio::time::timeout(LOGIN_TIMEOUT, async {
        let (mut reader, mut writer) = open(ep, index, source_ips).await?;
        sw::encode_request(
            &sw::Request::Auth {
                token: token.as_bytes(),
            },
            &mut writer.out,
        );
        sw::encode_request(
            &sw::Request::Hello {
                version: 1,
                presence,
            },
            &mut writer.out,
        );
        writer.flush().await?;
        let mut own = None;
        let mut refused = None;
        reader
            .statusd_events(|ev| match ev {
                sw::Event::Pres {
                    userid: 0,
                    presence,
                } => {
                    own = Some(presence);
                    ControlFlow::Break(())
                }
                sw::Event::Pres { userid, presence } => {
                    on_dump(userid, presence);
                    ControlFlow::Continue(())
                }
                sw::Event::Error { code, opcode, .. } => {
                    refused = Some(ClientError::Refused { code, opcode });
                    ControlFlow::Break(())
                }
                sw::Event::Keepalive => ControlFlow::Continue(()),
            })
            .await?;
        if let Some(e) = refused {
            return Err(e);
        }
        Ok(Statusd {
            reader,
            writer,
            own: own.unwrap_or(0),
        })
    })
    .await
    .map_err(|_| ClientError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ips_spread() {
        assert_eq!(source_ip(0, 4), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_ip(5, 4), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_ip(300, 1000), Ipv4Addr::new(127, 0, 1, 45));
    }
}
