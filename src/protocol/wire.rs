//! Byte-level helpers shared by both services' codecs: a bounds-checked
//! little-endian reader and the layouts the two services have in common
//! (`OP_AUTH`, `OP_ERROR`). Pure functions over slices; no I/O.
//!
//! Every read returns `None` when the bytes are not there yet, so a decoder
//! never indexes out of bounds and "need more" falls out of `?`-like flow
//! through [`need!`].

use bytes::BufMut;

use super::{DecodeError, OP_AUTH, OP_ERROR};
use crate::limits::MAX_TOKEN_LEN;

/// Unwraps a read, or returns `Ok(None)` ("need more bytes") from the
/// enclosing decoder. Incomplete input is the normal case, not an error.
macro_rules! need {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}
pub(super) use need;

/// A cursor over the bytes received so far. Reads past the end yield
/// `None` and leave the cursor where it was.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far: the `used` of a complete command.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    pub(super) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        // `bytes(N)` returns exactly N bytes, so the conversion cannot fail;
        // `.ok()` keeps even that impossible case panic-free.
        self.bytes(N)?.try_into().ok()
    }

    /// Skips `N` reserved bytes (their value is ignored, but they must be
    /// present for the command to be complete).
    pub(super) fn skip<const N: usize>(&mut self) -> Option<()> {
        self.array::<N>().map(|_| ())
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    /// The 24-bit little-endian `msglen`.
    pub(super) fn u24(&mut self) -> Option<u32> {
        self.array::<3>()
            .map(|[a, b, c]| u32::from_le_bytes([a, b, c, 0]))
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

/// Writes a 24-bit little-endian length.
///
/// # Panics
/// If `len` does not fit in 24 bits: the caller built a frame the protocol
/// cannot express, a bug rather than an input error. Decoded frames never
/// do (the decoder's limit is at most [`crate::limits::MSGLEN_FIELD_MAX`]).
pub(super) fn put_u24_le(buf: &mut impl BufMut, len: usize) {
    assert!(
        len <= crate::limits::MSGLEN_FIELD_MAX as usize,
        "msglen {len} does not fit in 24 bits"
    );
    // Checked by the assert above.
    let b = (len as u32).to_le_bytes();
    buf.put_slice(&b[..3]);
}

/// Body of `OP_AUTH` (after the opcode): `token_len(2) token`. Shared by
/// both services. A bad `token_len` is reported as soon as its two bytes
/// are present, without waiting for a token that may never be valid.
pub(super) fn decode_auth_body<'a>(r: &mut Reader<'a>) -> Result<Option<&'a [u8]>, DecodeError> {
    let len = need!(r.u16());
    if len == 0 || usize::from(len) > MAX_TOKEN_LEN {
        return Err(DecodeError::BadTokenLen { len });
    }
    Ok(r.bytes(usize::from(len)))
}

/// Bytes `OP_AUTH` with this token takes on the wire.
pub(super) fn auth_len(token: &[u8]) -> usize {
    1 + 2 + token.len()
}

/// Writes `OP_AUTH`.
///
/// # Panics
/// If the token is longer than `u16::MAX` (no server accepts more than
/// [`MAX_TOKEN_LEN`]; a client encoding that much has a bug).
pub(super) fn encode_auth(token: &[u8], buf: &mut impl BufMut) {
    let len = u16::try_from(token.len()).expect("token longer than u16::MAX");
    buf.put_u8(OP_AUTH);
    buf.put_u16_le(len);
    buf.put_slice(token);
}

/// Body of `OP_ERROR` (after the opcode): `code(1) opcode(1) id(8)`, with the
/// code kept raw so a client can report codes it does not know.
pub(super) fn decode_error_body(r: &mut Reader<'_>) -> Option<(u8, u8, u64)> {
    Some((r.u8()?, r.u8()?, r.u64()?))
}

/// Writes `OP_ERROR` with a raw code byte (the typed entry point is
/// [`super::encode_error`]).
pub(super) fn encode_error_raw(code: u8, opcode: u8, id: u64, buf: &mut impl BufMut) {
    buf.put_u8(OP_ERROR);
    buf.put_u8(code);
    buf.put_u8(opcode);
    buf.put_u64_le(id);
}
