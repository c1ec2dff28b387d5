//! The WebSocket transport (protocol section 8, RFC 6455), server side,
//! sans-IO: bytes in, bytes and events out.
//!
//! It owns the HTTP upgrade and the framing, and nothing above them:
//! - [`handshake`]: parses the client's upgrade request into a
//!   [`handshake::Request`] (which service, the `Sec-WebSocket-Accept` to
//!   answer with, the origin) or a [`handshake::Reject`] (the HTTP status
//!   and why), and writes the 101 answer or the error answer;
//! - [`decode`]: turns the client's raw frames into the command stream the
//!   chatd/statusd decoders read, in the same buffer (payloads unmasked in
//!   place and moved over the frame headers), plus the control events the
//!   connection must act on (Ping, Close), or an [`Error`] carrying the
//!   close status the connection must be closed with;
//! - [`encode`]: the server's frames: one binary frame header per write
//!   (the payload is the connection's queued command frames, shared and
//!   never copied), Close and Pong.
//!
//! It must not do I/O, read a clock, know what a command means, or decide
//! when a connection closes: the connection driver does that with what
//! these return. `docs/websocket-tls.md` says how the driver uses them.

pub mod decode;
pub mod encode;
pub mod handshake;

#[cfg(test)]
mod tests;

pub use decode::{Close, ControlPayload, Decoder, Error, Inbound};

/// A WebSocket close status code (RFC 6455 section 7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure. The server's status after OP_ERROR
    /// SHUTTING_DOWN (protocol section 8) and its answer to a client's
    /// Close without a status.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1002: the peer broke the framing rules.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint does not accept (a text message).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1007: data not consistent with its type (a Close reason that is not
    /// UTF-8).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a policy violation. The server's status after every other
    /// connection-closing OP_ERROR (protocol section 8).
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);

    /// Whether a peer may send this code in a Close frame: the codes RFC
    /// 6455 section 7.4.1 defines for use on the wire (1000-1003,
    /// 1007-1011), the ones IANA registered since (1012-1014: service
    /// restart, try again later, bad gateway), and the ranges left to
    /// libraries and applications (3000-4999). 1004-1006 and 1015 are
    /// reserved or must never be sent; everything else below 3000 is
    /// unassigned.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// The WebSocket opcodes (RFC 6455 section 5.2).
pub(crate) mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Longest control frame payload (RFC 6455 section 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
