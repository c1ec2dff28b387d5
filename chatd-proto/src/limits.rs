//! The limits the wire protocol itself sets, each with why it has its
//! value. The server's own limits and defaults (timeouts, queue caps, rates)
//! are in the server's `limits` module, which re-exports these.

/// Highest protocol version this crate speaks (both services): the
/// `OP_HELLO` version a client sends, and the highest a server accepts.
pub const PROTOCOL_VERSION: u16 = 1;

/// `OP_AUTH` `token_len` above this is rejected (protocol section 2).
pub const MAX_TOKEN_LEN: usize = 4096;

/// Largest `msglen` the 24-bit field can carry; the server's
/// `--max-rtmsg-len` may not exceed it.
pub const MSGLEN_FIELD_MAX: u32 = 0x00FF_FFFF;

/// Default largest `OP_RTMSG` payload (protocol section 4.3; the server's
/// `--max-rtmsg-len` default).
pub const DEFAULT_MAX_RTMSG_LEN: u32 = 65_536;
