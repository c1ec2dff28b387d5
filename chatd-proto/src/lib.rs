//! The chatd wire protocol (sections 1-5 of `docs/protocol.md`), sans-IO:
//! the codec of both services (**chatd**: rooms, real-time messages, the
//! in-call flag; **statusd**: presence), the [`ids`] and the wire
//! [`limits`]. The server, the client library (`chatd-client`), the load
//! generator and the fuzz targets all speak the protocol through this
//! crate, so each layout is written once.
//!
//! It owns the byte layouts and nothing else: decoders are plain functions
//! over the bytes received so far, encoders write into a [`bytes::BufMut`].
//! No sockets, no clock, no allocation, no state between calls, and no
//! dependency beyond `bytes` and `thiserror` (and, with the `testing`
//! feature, `proptest` for the `testing` module's fuzzing strategies).
//!
//! Every decoder returns one of three things:
//! - `Ok(Some((command, used)))`: a complete command that took the first
//!   `used` bytes (always at least 1); the caller drops them and calls again;
//! - `Ok(None)`: the bytes so far are a valid prefix; read more. This is
//!   the normal state of a stream reader, not an error;
//! - `Err(DecodeError)`: the bytes can never become a valid command. Each
//!   error carries what the server needs for its `OP_ERROR`
//!   ([`DecodeError::error_code`], [`DecodeError::opcode`],
//!   [`DecodeError::chatid`]) and is reported as soon as the offending field
//!   is present, never after waiting for bytes that follow it.
//!
//! [`chatd`] and [`statusd`] hold each service's command set; what both
//! share (`OP_KEEPALIVE`, `OP_AUTH`, `OP_ERROR`, error codes) lives here,
//! and the bounds-checked reader in the private `wire` module, so each
//! layout is parsed in one place.
//!
//! ```
//! use chatd_proto::chatd::{decode_request, encode_request, Request};
//! use chatd_proto::Limits;
//!
//! let mut buf = Vec::new();
//! encode_request(&Request::Join { chatid: 7 }, &mut buf);
//! // A prefix needs more bytes; the whole command decodes.
//! assert_eq!(decode_request(&buf[..4], &Limits::default()), Ok(None));
//! let (req, used) = decode_request(&buf, &Limits::default()).unwrap().unwrap();
//! assert_eq!((req, used), (Request::Join { chatid: 7 }, buf.len()));
//! ```

#![deny(missing_docs)]

pub mod chatd;
pub mod ids;
pub mod limits;
pub mod statusd;
mod wire;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use bytes::BufMut;

use crate::limits::{DEFAULT_MAX_RTMSG_LEN, MAX_TOKEN_LEN};
use crate::wire::{need, Reader};

/// `OP_KEEPALIVE`, both services, both directions; no body.
pub const OP_KEEPALIVE: u8 = 0x00;
/// `OP_AUTH`, both services, C->S: `token_len(2) token`.
pub const OP_AUTH: u8 = 0x06;
/// `OP_ERROR`, both services, S->C: `code(1) opcode(1) id(8)`.
pub const OP_ERROR: u8 = 0x07;

/// Bytes of an `OP_ERROR` command, opcode included.
pub const ERROR_LEN: usize = 11;
/// Bytes of an `OP_KEEPALIVE` command: the opcode alone.
pub const KEEPALIVE_LEN: usize = 1;

/// `OP_ERROR` codes (protocol section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorCode {
    /// Unknown opcode or malformed field.
    BadCommand = 1,
    /// The token was rejected.
    AuthFailed = 2,
    /// A command other than `OP_AUTH` then `OP_HELLO` during login.
    NotAuthenticated = 3,
    /// The user is not a member of that room.
    NotMember = 4,
    /// This connection has not joined that room.
    NotJoined = 5,
    /// `msglen` above the server's limit.
    TooLarge = 6,
    /// `receiver_userid` 0 with a non-zero `receiver_clientid`.
    BadAddress = 7,
    /// The connection's output queue went over the server's limit.
    SlowConsumer = 8,
    /// Unsupported protocol version in `OP_HELLO`.
    BadVersion = 9,
    /// The server is draining.
    ShuttingDown = 10,
    /// chatd extension: the server's or the user's connection limit is
    /// reached (`--max-connections`, `--max-connections-per-user`).
    TooManyConnections = 11,
    /// chatd extension: this connection has joined `--max-rooms-per-conn`
    /// rooms; the OP_JOIN is refused, the connection stays open.
    TooManyRooms = 12,
    /// chatd extension: the connection sends OP_RTMSG or OP_SETPRES faster
    /// than its rate limit; that command is dropped, the connection stays
    /// open.
    RateLimited = 13,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::BadCommand,
        ErrorCode::AuthFailed,
        ErrorCode::NotAuthenticated,
        ErrorCode::NotMember,
        ErrorCode::NotJoined,
        ErrorCode::TooLarge,
        ErrorCode::BadAddress,
        ErrorCode::SlowConsumer,
        ErrorCode::BadVersion,
        ErrorCode::ShuttingDown,
        ErrorCode::TooManyConnections,
        ErrorCode::TooManyRooms,
        ErrorCode::RateLimited,
    ];

    /// Whether the server closes the connection after sending this code.
    /// The room-scoped refusals and the rate limit leave it open: they
    /// refuse one command, not the connection speaking the protocol wrongly.
    pub fn closes_connection(self) -> bool {
        !matches!(
            self,
            ErrorCode::NotMember
                | ErrorCode::NotJoined
                | ErrorCode::BadAddress
                | ErrorCode::TooManyRooms
                | ErrorCode::RateLimited
        )
    }

    /// The name the contract uses (`"BAD_COMMAND"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadCommand => "BAD_COMMAND",
            ErrorCode::AuthFailed => "AUTH_FAILED",
            ErrorCode::NotAuthenticated => "NOT_AUTHENTICATED",
            ErrorCode::NotMember => "NOT_MEMBER",
            ErrorCode::NotJoined => "NOT_JOINED",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::BadAddress => "BAD_ADDRESS",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::BadVersion => "BAD_VERSION",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::TooManyConnections => "TOO_MANY_CONNECTIONS",
            ErrorCode::TooManyRooms => "TOO_MANY_ROOMS",
            ErrorCode::RateLimited => "RATE_LIMITED",
        }
    }

    /// The code for a wire byte; `None` for codes this version does not
    /// define (clients keep the raw byte in that case).
    pub fn from_u8(v: u8) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| *c as u8 == v)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why some bytes can never become a valid command. Each variant maps to
/// the `OP_ERROR` the server sends before closing the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No command of this service has this opcode (`BAD_COMMAND`).
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// A field holds a value its layout does not allow, e.g. an `OP_IN_CALL`
    /// status other than 0 or 1 (`BAD_COMMAND`).
    #[error("bad {field} in opcode {opcode:#04x} (chatid {chatid})")]
    BadField {
        /// Opcode of the malformed command.
        opcode: u8,
        /// The command's `chatid` (0 when it has none).
        chatid: u64,
        /// Name of the offending field, as in the protocol tables.
        field: &'static str,
    },
    /// `OP_AUTH` `token_len` of 0 or above
    /// [`MAX_TOKEN_LEN`] (`AUTH_FAILED`).
    #[error("token_len {len} out of range")]
    BadTokenLen {
        /// The `token_len` received.
        len: u16,
    },
    /// A length field above its limit: `OP_RTMSG` `msglen` above
    /// [`Limits::max_rtmsg_len`] (`TOO_LARGE`).
    #[error("length {len} above limit {max} in opcode {opcode:#04x} (chatid {chatid})")]
    TooLarge {
        /// Opcode of the command (`OP_RTMSG`).
        opcode: u8,
        /// The message's room.
        chatid: u64,
        /// The `msglen` received.
        len: u32,
        /// The limit it broke.
        max: u32,
    },
}

impl DecodeError {
    /// The `OP_ERROR` code the server answers with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DecodeError::UnknownOpcode(_) | DecodeError::BadField { .. } => ErrorCode::BadCommand,
            DecodeError::BadTokenLen { .. } => ErrorCode::AuthFailed,
            DecodeError::TooLarge { .. } => ErrorCode::TooLarge,
        }
    }

    /// The `opcode` field of that `OP_ERROR`: the command that caused it.
    pub fn opcode(&self) -> u8 {
        match self {
            DecodeError::UnknownOpcode(op) => *op,
            DecodeError::BadField { opcode, .. } | DecodeError::TooLarge { opcode, .. } => *opcode,
            DecodeError::BadTokenLen { .. } => OP_AUTH,
        }
    }

    /// The `id` field of that `OP_ERROR`: the room concerned, 0 when none.
    pub fn chatid(&self) -> u64 {
        match self {
            DecodeError::BadField { chatid, .. } | DecodeError::TooLarge { chatid, .. } => *chatid,
            DecodeError::UnknownOpcode(_) | DecodeError::BadTokenLen { .. } => 0,
        }
    }

    /// Writes the `OP_ERROR` this error is answered with.
    pub fn encode(&self, buf: &mut impl BufMut) {
        encode_error(self.error_code(), self.opcode(), self.chatid(), buf);
    }
}

/// The configurable decoder limits (set from the command line).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest `OP_RTMSG` `msglen` accepted (the server's
    /// `--max-rtmsg-len`). Values above
    /// [`MSGLEN_FIELD_MAX`](crate::limits::MSGLEN_FIELD_MAX) act as that,
    /// since the field cannot carry more.
    pub max_rtmsg_len: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rtmsg_len: DEFAULT_MAX_RTMSG_LEN,
        }
    }
}

impl Limits {
    /// Limits that accept anything the fields can carry: what a client
    /// decoding the server's commands uses.
    pub const ANY: Limits = Limits {
        max_rtmsg_len: crate::limits::MSGLEN_FIELD_MAX,
    };
}

/// Writes `OP_ERROR` (same layout on both services): `code(1) opcode(1)
/// id(8)`, [`ERROR_LEN`] bytes.
pub fn encode_error(code: ErrorCode, opcode: u8, id: u64, buf: &mut impl BufMut) {
    encode_error_raw(code as u8, opcode, id, buf);
}

/// Body of `OP_AUTH` (after the opcode): `token_len(2) token`. Shared by
/// both services. A bad `token_len` is reported as soon as its two bytes
/// are present, without waiting for a token that may never be valid.
fn decode_auth_body<'a>(r: &mut Reader<'a>) -> Result<Option<&'a [u8]>, DecodeError> {
    let len = need!(r.u16());
    if len == 0 || usize::from(len) > MAX_TOKEN_LEN {
        return Err(DecodeError::BadTokenLen { len });
    }
    Ok(r.bytes(usize::from(len)))
}

/// Bytes `OP_AUTH` with this token takes on the wire.
fn auth_len(token: &[u8]) -> usize {
    1 + 2 + token.len()
}

/// Writes `OP_AUTH`.
///
/// # Panics
/// If the token is longer than `u16::MAX` (no server accepts more than
/// [`MAX_TOKEN_LEN`]; a client encoding that much has a bug).
fn encode_auth(token: &[u8], buf: &mut impl BufMut) {
    let len = u16::try_from(token.len()).expect("token longer than u16::MAX");
    buf.put_u8(OP_AUTH);
    buf.put_u16_le(len);
    buf.put_slice(token);
}

/// Body of `OP_ERROR` (after the opcode): `code(1) opcode(1) id(8)`, with the
/// code kept raw so a client can report codes it does not know.
fn decode_error_body(r: &mut Reader<'_>) -> Option<(u8, u8, u64)> {
    Some((r.u8()?, r.u8()?, r.u64()?))
}

/// Writes `OP_ERROR` with a raw code byte (the typed entry point is
/// [`encode_error`]).
fn encode_error_raw(code: u8, opcode: u8, id: u64, buf: &mut impl BufMut) {
    buf.put_u8(OP_ERROR);
    buf.put_u8(code);
    buf.put_u8(opcode);
    buf.put_u64_le(id);
}
