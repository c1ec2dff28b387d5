//! Outbound WebSocket frames, server side (RFC 6455 section 5): server
//! frames are never masked, so a frame is a header followed by the payload
//! as it is.
//!
//! Data goes out as one binary frame per write: the driver takes a batch
//! of queued command frames (shared `Bytes`, whole commands), writes
//! [`Header::binary`] for their total length into a small buffer, and
//! sends `[header, frame1, frame2, ...]` in one vectored write. One header
//! per write, never per command, and the payload is not copied (protocol
//! section 8: every binary message holds one or more whole commands).
//!
//! Control frames are small and built whole: [`close`] and [`pong`].
//! Nothing here does I/O.

use bytes::BufMut;

use super::{opcode, CloseCode, MAX_CONTROL_PAYLOAD};

/// Longest server frame header: 2 bytes and a 64-bit length, no mask.
pub const MAX_HEADER_LEN: usize = 10;

/// A server frame header, held inline (no allocation), for the first
/// slice of a vectored write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl Header {
    /// The header of a final binary frame (a whole message) carrying
    /// `payload_len` bytes: FIN, opcode 2, the 7-, 16- or 64-bit length.
    pub fn binary(payload_len: usize) -> Header {
        Header::new(opcode::BINARY, payload_len)
    }

    fn new(op: u8, payload_len: usize) -> Header {
        let mut bytes = [0; MAX_HEADER_LEN];
        bytes[0] = 0x80 | op;
        let len = if payload_len <= 125 {
            bytes[1] = payload_len as u8;
            2
        } else if let Ok(n) = u16::try_from(payload_len) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&n.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        Header { bytes, len }
    }

    /// The header's bytes (2, 4 or 10).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Writes a Close frame with `code` and `reason` (cut to the 123 bytes a
/// control frame leaves it, at a character boundary). `None` writes a
/// Close with no payload (the answer to a client's Close without status).
pub fn close(code: Option<CloseCode>, reason: &str, dst: &mut impl BufMut) {
    let Some(code) = code else {
        dst.put_slice(Header::new(opcode::CLOSE, 0).as_bytes());
        return;
    };
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    dst.put_slice(Header::new(opcode::CLOSE, 2 + reason.len()).as_bytes());
    dst.put_u16(code.0);
    dst.put_slice(reason);
}

/// Writes a Pong echoing a Ping's payload (at most 125 bytes, which is all
/// a Ping can carry; more is cut).
pub fn pong(payload: &[u8], dst: &mut impl BufMut) {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    dst.put_slice(Header::new(opcode::PONG, payload.len()).as_bytes());
    dst.put_slice(payload);
}
