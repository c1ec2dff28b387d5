//! Byte-level helpers shared by both services' codecs: a bounds-checked
//! little-endian reader and the 24-bit length writer. Pure functions over
//! slices; no I/O. (The layouts both services share, `OP_AUTH` and
//! `OP_ERROR`, are in the crate root.)
//!
//! Every read returns `None` when the bytes are not there yet, so a decoder
//! never indexes out of bounds and "need more" falls out of `?`-like flow
//! through [`need!`].

use bytes::BufMut;

use crate::limits::MSGLEN_FIELD_MAX;

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
pub(crate) use need;

/// A cursor over the bytes received so far. Reads past the end yield
/// `None` and leave the cursor where it was.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far: the `used` of a complete command.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
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
    pub(crate) fn skip<const N: usize>(&mut self) -> Option<()> {
        self.array::<N>().map(|_| ())
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    /// The 24-bit little-endian `msglen`.
    pub(crate) fn u24(&mut self) -> Option<u32> {
        self.array::<3>()
            .map(|[a, b, c]| u32::from_le_bytes([a, b, c, 0]))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

/// Writes a 24-bit little-endian length.
///
/// # Panics
/// If `len` does not fit in 24 bits: the caller built a frame the protocol
/// cannot express, a bug rather than an input error. Decoded frames never
/// do (the decoder's limit is at most [`MSGLEN_FIELD_MAX`]).
pub(crate) fn put_u24_le(buf: &mut impl BufMut, len: usize) {
    assert!(
        len <= MSGLEN_FIELD_MAX as usize,
        "msglen {len} does not fit in 24 bits"
    );
    // Checked by the assert above.
    let b = (len as u32).to_le_bytes();
    buf.put_slice(&b[..3]);
}
