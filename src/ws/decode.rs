//! Inbound WebSocket frames (RFC 6455 section 5), server side: raw client
//! bytes in, the command stream and control events out.
//!
//! [`Decoder::decode`] works in the connection's read buffer. The driver
//! appends what a read returned and names where the new bytes start; the
//! decoder unmasks each data payload and brings it next to the command
//! bytes before it, over the frame headers and control frames that
//! separated them. When it returns, every byte left in the buffer belongs to
//! the command stream (protocol section 8: the payloads of the binary
//! messages, concatenated in order), ready for the chatd/statusd decoder,
//! which cuts an OP_RTMSG out of it with `split_to().freeze()` as it does
//! over TCP: the payload is never copied into another buffer.
//!
//! Moving is cheap: of the two pieces either side of a gap (the command
//! bytes already in front, the new payload after), the shorter one moves.
//! Payloads are unmasked in place; when the command bytes are the ones to
//! move, the buffer's start then advances past the gap. In the usual case (the command
//! decoder emptied the buffer, one frame arrives) nothing moves: the
//! buffer's start simply advances past the header.
//!
//! The decoder keeps what it needs between reads (a header cut by a read,
//! the frame and message in progress, a control payload being collected)
//! in a fixed-size state. It allocates nothing. "Need more bytes" is not an
//! error; an [`Error`] is final and names the close status (RFC 6455
//! section 7.4, protocol section 8) the connection must be closed with.
//!
//! It does not answer anything itself: a Ping or Close comes back in
//! [`Inbound`] and the driver sends the Pong or the Close answer.

use bytes::{Buf, BytesMut};

use super::{opcode, CloseCode, MAX_CONTROL_PAYLOAD};

/// Longest client frame header: 2 bytes, a 64-bit length, a 4-byte mask.
const MAX_HEADER_LEN: usize = 14;

/// Why a client's frames end its connection. Each maps to the close status
/// the server sends ([`Error::close_code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A text message: commands travel in binary messages only (1003).
    #[error("text message (commands travel in binary messages)")]
    Text,
    /// A client frame without a mask (RFC 6455 section 5.1; 1002).
    #[error("client frame not masked")]
    Unmasked,
    /// RSV1-3 set although no extension was negotiated (1002).
    #[error("reserved bits set")]
    ReservedBits,
    /// Opcode 3-7 or 0xB-0xF (1002).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A Close, Ping or Pong without FIN (1002).
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame with a payload over 125 bytes (1002).
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    /// A continuation frame with no fragmented message to continue (1002).
    #[error("continuation frame outside a fragmented message")]
    UnexpectedContinuation,
    /// A new text or binary frame before the fragmented message in
    /// progress got its final frame (1002).
    #[error("new data frame inside a fragmented message")]
    UnfinishedMessage,
    /// A 64-bit payload length with its most significant bit set (1002).
    #[error("64-bit payload length with the top bit set")]
    LengthTopBit,
    /// A Close payload of 1 byte: half a status code (1002).
    #[error("close frame with a 1-byte payload")]
    CloseOneByte,
    /// A Close status a peer may not send ([`CloseCode::is_valid_on_wire`]; 1002).
    #[error("close status {0} may not be sent")]
    InvalidCloseCode(u16),
    /// A Close reason that is not UTF-8 (1007, "inconsistent data", as for
    /// text that is not UTF-8).
    #[error("close reason is not UTF-8")]
    InvalidCloseReason,
    /// A message longer than the longest command the server accepts,
    /// counting every fragment, known from the frame headers (1009).
    #[error("message of at least {len} bytes, over the limit of {max}")]
    TooBig {
        /// The message length the headers declared so far.
        len: u64,
        /// The limit ([`Decoder::new`]).
        max: u32,
    },
}

impl Error {
    /// The status of the Close frame the server answers this error with.
    pub fn close_code(self) -> CloseCode {
        match self {
            Error::Text => CloseCode::UNSUPPORTED_DATA,
            Error::InvalidCloseReason => CloseCode::INVALID_PAYLOAD,
            Error::TooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
            Error::Unmasked
            | Error::ReservedBits
            | Error::ReservedOpcode(_)
            | Error::FragmentedControl
            | Error::ControlTooLong
            | Error::UnexpectedContinuation
            | Error::UnfinishedMessage
            | Error::LengthTopBit
            | Error::CloseOneByte
            | Error::InvalidCloseCode(_) => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// A control frame's payload (at most 125 bytes), unmasked, held inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ControlPayload {
    len: u8,
    bytes: [u8; MAX_CONTROL_PAYLOAD],
}

impl ControlPayload {
    const EMPTY: ControlPayload = ControlPayload {
        len: 0,
        bytes: [0; MAX_CONTROL_PAYLOAD],
    };

    /// The payload bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for ControlPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ControlPayload")
            .field(&self.as_slice())
            .finish()
    }
}

/// A client's Close frame, checked: a status the RFC allows, a UTF-8 reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Close {
    /// The status, if the frame had a payload.
    pub code: Option<CloseCode>,
    /// The whole payload (status and reason).
    payload: ControlPayload,
}

impl Close {
    /// The reason text (empty when none was given).
    pub fn reason(&self) -> &str {
        let reason = self.payload.as_slice().get(2..).unwrap_or_default();
        // Checked when the frame was decoded, so this never falls back.
        std::str::from_utf8(reason).unwrap_or_default()
    }
}

/// What one [`Decoder::decode`] call found besides command bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inbound {
    /// The last Ping of this batch: answer it with a Pong carrying this
    /// payload. Only the last one is kept, as RFC 6455 section 5.5.3
    /// allows, so a flood of Pings costs one Pong per read.
    pub ping: Option<ControlPayload>,
    /// The client closed: answer with a Close, then close the TCP
    /// connection. Bytes after the Close frame were dropped, and later
    /// calls drop whatever they are given. A Ping of the same batch needs
    /// no answer.
    pub close: Option<Close>,
}

/// Where the decoder is in the client's byte stream.
#[derive(Debug)]
enum State {
    /// Between frames: collecting a header in `Decoder::head`.
    Header,
    /// Inside a data frame's payload: `left` bytes to go, masked with `key`
    /// from key byte `phase` on.
    Data { left: u64, key: [u8; 4], phase: u8 },
    /// Collecting a control frame's payload. Boxed: a control frame is
    /// rare, and its up to 125 bytes would otherwise be in every idle
    /// connection's decoder.
    Control(Box<ControlFrame>),
    /// The client sent Close; nothing more is read.
    Closed,
    /// The stream broke the rules; every later call returns this again.
    Failed(Error),
}

/// A control frame whose payload is being collected, `len` bytes in all.
#[derive(Debug)]
struct ControlFrame {
    op: u8,
    key: [u8; 4],
    len: u8,
    got: ControlPayload,
}

/// The inbound side of one WebSocket connection: 64 bytes, plus a
/// control frame's while one is being collected.
#[derive(Debug)]
pub struct Decoder {
    /// Longest message accepted, in bytes (protocol section 8: the longest
    /// command, `--max-rtmsg-len` + 25).
    max_message_len: u64,
    state: State,
    /// A frame header being collected (it may arrive in pieces).
    head: [u8; MAX_HEADER_LEN],
    head_len: u8,
    /// Inside a fragmented data message: the bytes its frames declared so
    /// far (the 1009 check counts every fragment). `None` between messages.
    message_len: Option<u64>,
}

impl Decoder {
    /// A decoder for a connection that just completed its handshake.
    /// `max_message_len`: the longest message accepted (the driver passes
    /// `--max-rtmsg-len` + `RTMSG_HEADER_LEN`).
    pub fn new(max_message_len: usize) -> Decoder {
        // The limit is reported in a u32 (TooBig): longest commands are
        // at most 16 MiB + 25 bytes.
        let max_message_len = max_message_len.min(u32::MAX as usize);
        Decoder {
            max_message_len: max_message_len as u64,
            state: State::Header,
            head: [0; MAX_HEADER_LEN],
            head_len: 0,
            message_len: None,
        }
    }

    /// The error the stream broke the rules with, once it did.
    pub fn error(&self) -> Option<Error> {
        match self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Decodes the raw bytes `buf[start..]` (what the last read appended).
    /// `buf[..start]` must be command bytes left by earlier calls (the part
    /// of a command not yet complete); on return, all of `buf` is command
    /// bytes: the old ones followed by the payloads just decoded, in order.
    /// The buffer's start may have advanced (see the module doc).
    ///
    /// On error, `buf` holds the command bytes decoded before the offending
    /// frame and the driver closes with [`Error::close_code`].
    pub fn decode(&mut self, buf: &mut BytesMut, start: usize) -> Result<Inbound, Error> {
        debug_assert!(start <= buf.len());
        let mut out = Inbound::default();
        match self.state {
            State::Closed => {
                buf.truncate(start);
                return Ok(out);
            }
            State::Failed(e) => {
                buf.truncate(start);
                return Err(e);
            }
            _ => {}
        }
        // buf = [command bytes ..w | gap w..r | raw r..]
        let mut w = start;
        let mut r = start;
        let res = loop {
            if r == buf.len() {
                break Ok(());
            }
            match &mut self.state {
                State::Header => match self.header(&buf[r..], &mut out) {
                    Ok(used) => r += used,
                    Err(e) => break Err(e),
                },
                &mut State::Data { left, key, phase } => {
                    let n = left.min((buf.len() - r) as u64) as usize;
                    (w, r) = unmask_into_place(buf, w, r, n, key, usize::from(phase));
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Header
                    } else {
                        State::Data {
                            left,
                            key,
                            phase: ((usize::from(phase) + n) % 4) as u8,
                        }
                    };
                }
                State::Control(c) => {
                    let have = usize::from(c.got.len);
                    let n = (usize::from(c.len) - have).min(buf.len() - r);
                    c.got.bytes[have..have + n].copy_from_slice(&buf[r..r + n]);
                    c.got.len += n as u8;
                    r += n;
                    if c.got.len == c.len {
                        let (op, key, len, mut got) = (c.op, c.key, c.len, c.got);
                        unmask(&mut got.bytes[..usize::from(len)], key, 0);
                        self.state = State::Header;
                        if let Err(e) = self.control(op, got, &mut out) {
                            break Err(e);
                        }
                    }
                }
                State::Closed | State::Failed(_) => break Ok(()),
            }
            if matches!(self.state, State::Closed) {
                break Ok(());
            }
        };
        buf.truncate(w);
        match res {
            Ok(()) => Ok(out),
            Err(e) => {
                self.state = State::Failed(e);
                Err(e)
            }
        }
    }

    /// Takes header bytes from `input` (not empty); once the header is
    /// whole, checks it and starts the frame. Returns the bytes taken.
    /// Each rule is checked as soon as the byte it needs is in.
    fn header(&mut self, input: &[u8], out: &mut Inbound) -> Result<usize, Error> {
        // The usual case: the whole header is in this read.
        if self.head_len == 0 && input.len() >= 2 {
            let len = header_len(input[1]);
            if input.len() >= len {
                self.check_first_byte(input[0])?;
                check_second_byte(input[0], input[1])?;
                self.start_frame(&input[..len], out)?;
                return Ok(len);
            }
        }
        let mut used = 0;
        loop {
            let have = usize::from(self.head_len);
            let need = match have {
                0 => 1,
                1 => 2,
                _ => header_len(self.head[1]),
            };
            let n = (need - have).min(input.len() - used);
            self.head[have..have + n].copy_from_slice(&input[used..used + n]);
            self.head_len += n as u8;
            used += n;
            if usize::from(self.head_len) < need {
                return Ok(used);
            }
            match need {
                1 => self.check_first_byte(self.head[0])?,
                2 => check_second_byte(self.head[0], self.head[1])?,
                _ => {
                    self.head_len = 0;
                    let head = self.head;
                    self.start_frame(&head[..need], out)?;
                    return Ok(used);
                }
            }
        }
    }

    /// The rules the first header byte decides: flags and opcode.
    fn check_first_byte(&self, b0: u8) -> Result<(), Error> {
        if b0 & 0x70 != 0 {
            return Err(Error::ReservedBits);
        }
        let fin = b0 & 0x80 != 0;
        let in_message = self.message_len.is_some();
        match b0 & 0x0F {
            opcode::CONTINUATION if !in_message => Err(Error::UnexpectedContinuation),
            opcode::TEXT | opcode::BINARY if in_message => Err(Error::UnfinishedMessage),
            opcode::TEXT => Err(Error::Text),
            opcode::CONTINUATION | opcode::BINARY => Ok(()),
            opcode::CLOSE | opcode::PING | opcode::PONG if !fin => Err(Error::FragmentedControl),
            opcode::CLOSE | opcode::PING | opcode::PONG => Ok(()),
            op => Err(Error::ReservedOpcode(op)),
        }
    }

    /// A whole header `h` (checked byte by byte already): check its length
    /// and enter the frame.
    fn start_frame(&mut self, h: &[u8], out: &mut Inbound) -> Result<(), Error> {
        let (len, at) = match h[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => (
                u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
                10,
            ),
            n => (u64::from(n), 2),
        };
        if len >> 63 != 0 {
            return Err(Error::LengthTopBit);
        }
        let key = [h[at], h[at + 1], h[at + 2], h[at + 3]];
        let fin = h[0] & 0x80 != 0;
        let op = h[0] & 0x0F;
        match op {
            opcode::CONTINUATION | opcode::BINARY => {
                let before = if op == opcode::CONTINUATION {
                    self.message_len.unwrap_or(0)
                } else {
                    0
                };
                let total = before.saturating_add(len);
                if total > self.max_message_len {
                    return Err(Error::TooBig {
                        len: total,
                        max: u32::try_from(self.max_message_len).unwrap_or(u32::MAX),
                    });
                }
                self.message_len = if fin { None } else { Some(total) };
                if len > 0 {
                    self.state = State::Data {
                        left: len,
                        key,
                        phase: 0,
                    };
                }
            }
            _ if len == 0 => self.control(op, ControlPayload::EMPTY, out)?,
            _ => {
                self.state = State::Control(Box::new(ControlFrame {
                    op,
                    key,
                    // Checked against MAX_CONTROL_PAYLOAD already.
                    len: len as u8,
                    got: ControlPayload::EMPTY,
                }))
            }
        }
        Ok(())
    }

    /// A whole control frame arrived (its payload unmasked).
    fn control(&mut self, op: u8, payload: ControlPayload, out: &mut Inbound) -> Result<(), Error> {
        match op {
            opcode::PING => out.ping = Some(payload),
            opcode::CLOSE => {
                out.close = Some(check_close(payload)?);
                self.state = State::Closed;
            }
            // Pong: nothing to do (every frame is activity, which the
            // driver stamps on every read).
            _ => {}
        }
        Ok(())
    }
}

/// Checks a Close payload: empty, or a status the RFC allows and a UTF-8
/// reason.
fn check_close(payload: ControlPayload) -> Result<Close, Error> {
    let p = payload.as_slice();
    let code = match p {
        [] => None,
        [_] => return Err(Error::CloseOneByte),
        [a, b, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*a, *b]));
            if !code.is_valid_on_wire() {
                return Err(Error::InvalidCloseCode(code.0));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(Error::InvalidCloseReason);
            }
            Some(code)
        }
    };
    Ok(Close { code, payload })
}

/// The rules the second header byte decides: mask, control length.
fn check_second_byte(b0: u8, b1: u8) -> Result<(), Error> {
    if b1 & 0x80 == 0 {
        return Err(Error::Unmasked);
    }
    if b0 & 0x08 != 0 && usize::from(b1 & 0x7F) > MAX_CONTROL_PAYLOAD {
        return Err(Error::ControlTooLong);
    }
    Ok(())
}

/// Length of a client frame header whose second byte is `b1` (masked; an
/// unmasked one was refused before this is asked).
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + 4
}

/// XORs `data` with the masking key, starting at key byte `phase`
/// (RFC 6455 section 5.3). Eight bytes at a time.
pub(crate) fn unmask(data: &mut [u8], key: [u8; 4], phase: usize) {
    let k = [0, 1, 2, 3].map(|i| key[(phase + i) % 4]);
    let k8 = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut a = [0; 8];
        a.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(a) ^ k8).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so at key byte 0 of `k`.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i % 4];
    }
}

/// `buf` is `[command bytes ..w | gap w..r | masked payload r..r+n | ...]`:
/// unmasks the payload in place and makes it follow the command bytes;
/// returns the new `(w, r)`, both just past it. Of the two pieces either
/// side of the gap the shorter moves: the payload down (`memmove`), or
/// the command bytes up, after which the buffer's start advances past the
/// gap. (Unmasking while moving, in one pass, measured no clear gain over
/// these two vectorized passes in `bench/transport.rs`.)
pub(crate) fn unmask_into_place(
    buf: &mut BytesMut,
    w: usize,
    r: usize,
    n: usize,
    key: [u8; 4],
    phase: usize,
) -> (usize, usize) {
    unmask(&mut buf[r..r + n], key, phase);
    if w == r {
        (w + n, r + n)
    } else if w <= n {
        buf.copy_within(..w, r - w);
        buf.advance(r - w);
        (w + n, w + n)
    } else {
        buf.copy_within(r..r + n, w);
        (w + n, r + n)
    }
}
