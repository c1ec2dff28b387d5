//! Per-shard arena for the small frames the server itself builds (OP_JOIN,
//! OP_IN_CALL, OP_PRES, OP_ERROR ...): frames are carved out of one large
//! buffer, so building a frame costs no heap allocation of its own; a new
//! chunk is allocated only when the current one is used up (and the old one
//! is freed when its last frame has been written).

use bytes::{Bytes, BytesMut};

/// Size of one arena chunk.
const CHUNK_BYTES: usize = 64 * 1024;

/// A shard's frame arena. Not `Send`: each shard has its own.
pub struct FrameArena {
    chunk: BytesMut,
}

impl Default for FrameArena {
    fn default() -> Self {
        Self {
            chunk: BytesMut::with_capacity(CHUNK_BYTES),
        }
    }
}

impl FrameArena {
    /// Builds one frame of at most `max_len` bytes with `encode`.
    pub fn frame(&mut self, max_len: usize, encode: impl FnOnce(&mut BytesMut)) -> Bytes {
        if self.chunk.capacity() - self.chunk.len() < max_len {
            self.chunk = BytesMut::with_capacity(CHUNK_BYTES.max(max_len));
        }
        encode(&mut self.chunk);
        self.chunk.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn frames_are_independent_and_exact() {
        let mut arena = FrameArena::default();
        let a = arena.frame(4, |b| b.put_slice(b"abcd"));
        let b = arena.frame(2, |b| b.put_slice(b"ef"));
        assert_eq!(&a[..], b"abcd");
        assert_eq!(&b[..], b"ef");
    }

    #[test]
    fn a_frame_larger_than_what_is_left_gets_a_new_chunk() {
        let mut arena = FrameArena::default();
        let big = arena.frame(CHUNK_BYTES - 1, |b| b.put_bytes(1, CHUNK_BYTES - 1));
        let next = arena.frame(10, |b| b.put_slice(b"0123456789"));
        assert_eq!(big.len(), CHUNK_BYTES - 1);
        assert_eq!(&next[..], b"0123456789");
    }
}
